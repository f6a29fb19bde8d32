//! The response `idemdb run` stores for a key: COMMAND's exit status and its (possibly cut)
//! stdout and stderr, in a small versioned binary format.
//!
//! ```text
//! "IDMR"            4 bytes  magic
//! version           1 byte   1
//! status kind       1 byte   0 = exited with a code, 1 = killed by a signal
//! status value      4 bytes  the code or the signal number (i32, little endian)
//! stdout total      8 bytes  bytes COMMAND wrote to stdout (u64, little endian)
//! stdout length     8 bytes  bytes recorded (≤ total; less when the output was cut)
//! stdout            …
//! stderr total      8 bytes
//! stderr length     8 bytes
//! stderr            …
//! ```

use std::fmt;

const MAGIC: &[u8; 4] = b"IDMR";
const VERSION: u8 = 1;

/// The encoding's size without the output bytes.
pub const OVERHEAD: usize = 4 + 1 + 1 + 4 + 2 * (8 + 8);

/// How COMMAND ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl Status {
    /// From the operating system's status.
    pub fn of(status: std::process::ExitStatus) -> Status {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Status::Exited(code),
            (None, Some(signal)) => Status::Signaled(signal),
            // Neither: stopped or continued, which `wait` does not report. Call it a failure.
            (None, None) => Status::Exited(1),
        }
    }

    /// The exit code idemdb passes on: the code itself, or 128+N for signal N (as shells do).
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Exited(code) => u8::try_from(code.rem_euclid(256)).unwrap_or(1),
            Status::Signaled(signal) => u8::try_from(128 + signal.clamp(1, 127)).unwrap_or(255),
        }
    }

    /// Whether COMMAND succeeded.
    pub fn success(self) -> bool {
        self == Status::Exited(0)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Exited(code) => write!(f, "exit status {code}"),
            Status::Signaled(signal) => {
                write!(f, "killed by {}", crate::signals::name(*signal))
            }
        }
    }
}

/// One output stream as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The bytes recorded.
    pub bytes: Vec<u8>,
    /// How many bytes COMMAND wrote in all.
    pub total: u64,
}

impl Output {
    /// Whether less was recorded than COMMAND wrote.
    pub fn truncated(&self) -> bool {
        self.total > self.bytes.len() as u64
    }
}

/// What `idemdb run` records for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// How COMMAND ended.
    pub status: Status,
    /// Its stdout.
    pub stdout: Output,
    /// Its stderr.
    pub stderr: Output,
}

impl RunResult {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(OVERHEAD + self.stdout.bytes.len() + self.stderr.bytes.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let (kind, value) = match self.status {
            Status::Exited(code) => (0u8, code),
            Status::Signaled(signal) => (1u8, signal),
        };
        out.push(kind);
        out.extend_from_slice(&value.to_le_bytes());
        for stream in [&self.stdout, &self.stderr] {
            out.extend_from_slice(&stream.total.to_le_bytes());
            out.extend_from_slice(&(stream.bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&stream.bytes);
        }
        out
    }

    /// Reads the stored form; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<RunResult, String> {
        let mut r = Reader { rest: bytes };
        if r.take(4)? != MAGIC {
            return Err("it does not start with the `idemdb run` magic".to_owned());
        }
        let version = r.take(1)?[0];
        if version != VERSION {
            return Err(format!("unknown format version {version}"));
        }
        let kind = r.take(1)?[0];
        let value = i32::from_le_bytes(r.array()?);
        let status = match kind {
            0 => Status::Exited(value),
            1 => Status::Signaled(value),
            other => return Err(format!("unknown status kind {other}")),
        };
        let stdout = r.output()?;
        let stderr = r.output()?;
        if !r.rest.is_empty() {
            return Err(format!("{} bytes of trailing data", r.rest.len()));
        }
        Ok(RunResult {
            status,
            stdout,
            stderr,
        })
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("it is truncated".to_owned());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| "it is truncated".to_owned())
    }

    fn output(&mut self) -> Result<Output, String> {
        let total = u64::from_le_bytes(self.array()?);
        let len = u64::from_le_bytes(self.array()?);
        if len > total {
            return Err("an output records more bytes than were written".to_owned());
        }
        let len = usize::try_from(len).map_err(|_| "an output length is too large".to_owned())?;
        let bytes = self.take(len)?.to_vec();
        Ok(Output { bytes, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunResult {
        RunResult {
            status: Status::Exited(3),
            stdout: Output {
                bytes: b"out\xff\x00".to_vec(),
                total: 5,
            },
            stderr: Output {
                bytes: b"err".to_vec(),
                total: 1000,
            },
        }
    }

    #[test]
    fn results_round_trip() {
        let result = sample();
        let bytes = result.encode();
        assert_eq!(bytes.len(), OVERHEAD + 8);
        assert_eq!(RunResult::decode(&bytes), Ok(result.clone()));
        assert!(!result.stdout.truncated());
        assert!(result.stderr.truncated());
        let signaled = RunResult {
            status: Status::Signaled(9),
            ..result
        };
        assert_eq!(RunResult::decode(&signaled.encode()), Ok(signaled));
    }

    #[test]
    fn every_damaged_form_is_an_error() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(RunResult::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(RunResult::decode(&longer).is_err());
        let mut version = bytes;
        version[4] = 9;
        assert!(RunResult::decode(&version).is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(Status::Exited(0).exit_code(), 0);
        assert_eq!(Status::Exited(42).exit_code(), 42);
        assert_eq!(Status::Signaled(9).exit_code(), 137);
        assert_eq!(Status::Signaled(15).exit_code(), 143);
    }
}
