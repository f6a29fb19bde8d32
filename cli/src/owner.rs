//! Who holds a claim: the owner tag `idemdb run` stores with it, and whether that process
//! still runs.
//!
//! The tag is text: `idemdb-run/1 host=web-1 pid=4242 start=81234 boot=3f2a…`, where
//! `start` is the process's start time in clock ticks after boot (field 22 of
//! `/proc/<pid>/stat`) and `boot` the kernel's boot id. Together with the pid they name one
//! process exactly: a pid reused by another process has another start time, and a reboot
//! changes the boot id.

use std::fmt;

const PREFIX: &str = "idemdb-run/1";

/// The process that holds (or held) a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The process's start time in clock ticks after boot, where known.
    pub start: Option<u64>,
    /// The kernel boot id, where known.
    pub boot: Option<String>,
}

/// Whether an owner process still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// It runs.
    Alive,
    /// It is gone, for the reason given.
    Dead(String),
    /// It cannot be told from here (another host, an unknown tag, no /proc).
    Unknown,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            host: hostname(),
            pid,
            start: proc_stat(pid).map(|s| s.start),
            boot: boot_id(),
        }
    }

    /// The tag stored with a claim.
    pub fn encode(&self) -> Vec<u8> {
        let mut tag = format!("{PREFIX} host={} pid={}", self.host, self.pid);
        if let Some(start) = self.start {
            tag.push_str(&format!(" start={start}"));
        }
        if let Some(boot) = &self.boot {
            tag.push_str(&format!(" boot={boot}"));
        }
        tag.into_bytes()
    }

    /// Reads a tag written by [`encode`](Self::encode); `None` for anything else.
    pub fn parse(tag: &[u8]) -> Option<Owner> {
        let text = std::str::from_utf8(tag).ok()?;
        let mut words = text.split(' ');
        if words.next()? != PREFIX {
            return None;
        }
        let (mut host, mut pid, mut start, mut boot) = (None, None, None, None);
        for word in words {
            let (name, value) = word.split_once('=')?;
            match name {
                "host" => host = Some(value.to_owned()),
                "pid" => pid = Some(value.parse().ok()?),
                "start" => start = Some(value.parse().ok()?),
                "boot" => boot = Some(value.to_owned()),
                // Fields a later version adds are ignored.
                _ => {}
            }
        }
        Some(Owner {
            host: host?,
            pid: pid?,
            start,
            boot,
        })
    }

    /// Whether the owner process still runs, as far as this host can tell.
    pub fn liveness(&self) -> Liveness {
        if self.host != hostname() {
            return Liveness::Unknown;
        }
        if let (Some(theirs), Some(ours)) = (&self.boot, boot_id())
            && *theirs != ours
        {
            return Liveness::Dead("the host has rebooted since".to_owned());
        }
        match proc_stat(self.pid) {
            Some(stat) if stat.zombie => Liveness::Dead(format!("pid {} has exited", self.pid)),
            Some(stat) => match self.start {
                Some(start) if start != stat.start => {
                    Liveness::Dead(format!("pid {} now belongs to another process", self.pid))
                }
                _ => Liveness::Alive,
            },
            // /proc works here (this process can read its own entry), so the pid is gone.
            None if proc_stat(std::process::id()).is_some() => {
                Liveness::Dead(format!("pid {} no longer runs", self.pid))
            }
            None => signal_probe(self.pid),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)
    }
}

/// A claim's owner tag for people: the owner, or the raw tag, or that there is none.
pub fn describe(tag: Option<&[u8]>) -> String {
    match tag {
        None => "owner unknown".to_owned(),
        Some(tag) => match Owner::parse(tag) {
            Some(owner) => owner.to_string(),
            None => format!("owner {:?}", String::from_utf8_lossy(tag)),
        },
    }
}

/// The liveness of a claim's owner tag.
pub fn liveness(tag: Option<&[u8]>) -> Liveness {
    tag.and_then(Owner::parse)
        .map_or(Liveness::Unknown, |owner| owner.liveness())
}

fn hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy();
    // The tag is space-separated; host names never hold spaces, but be sure.
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '=' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_owned())
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    /// Exited but not yet reaped by its parent.
    zombie: bool,
    /// Start time in clock ticks after boot (field 22).
    start: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses a `/proc/<pid>/stat` line. The second field (the command name, in parentheses)
/// may hold spaces and parentheses itself, so fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (the state), so field 22 is fields[19].
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some(ProcStat {
        zombie: *state == "Z" || *state == "X",
        start,
    })
}

/// Without /proc: a pid that cannot be signalled because it does not exist is gone; any
/// other answer leaves it open (the pid may have been reused).
fn signal_probe(raw: u32) -> Liveness {
    let Some(pid) = i32::try_from(raw)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Liveness::Unknown;
    };
    match rustix::process::test_kill_process(pid) {
        Err(rustix::io::Errno::SRCH) => Liveness::Dead(format!("pid {raw} no longer runs")),
        _ => Liveness::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let owner = Owner {
            host: "web-1".to_owned(),
            pid: 4242,
            start: Some(81_234),
            boot: Some("3f2a".to_owned()),
        };
        assert_eq!(Owner::parse(&owner.encode()), Some(owner));
        assert_eq!(Owner::parse(b"something else"), None);
        assert_eq!(Owner::parse(b"idemdb-run/1 host=a"), None);
    }

    #[test]
    fn stat_lines_with_awkward_names() {
        let line =
            "123 (a) b (c)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                zombie: false,
                start: 98_765
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = Owner::current();
        assert_eq!(me.liveness(), Liveness::Alive);
        if let Some(start) = me.start {
            let impostor = Owner {
                start: Some(start + 1),
                ..me.clone()
            };
            assert!(matches!(impostor.liveness(), Liveness::Dead(_)));
        }
        let elsewhere = Owner {
            host: format!("{}-elsewhere", me.host),
            ..me
        };
        assert_eq!(elsewhere.liveness(), Liveness::Unknown);
    }
}
