//! Running COMMAND: its stdout and stderr pass through live and are recorded, together up
//! to a byte budget.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::response::{Output, Status};
use crate::signals::Interrupts;

/// How long to keep reading COMMAND's output after it exited. A background process it
/// started may hold the pipes open for much longer; its later output passes through
/// only while this runs, and is not recorded.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// What running COMMAND gave.
#[derive(Debug)]
pub struct Ran {
    /// How it ended.
    pub status: Status,
    /// Its stdout as recorded.
    pub stdout: Output,
    /// Its stderr as recorded.
    pub stderr: Output,
    /// Whether a process it left behind still held its output open when recording ended.
    pub output_left_open: bool,
}

/// The same after an interrupted COMMAND (whose result is not recorded).
const DRAIN_AFTER_INTERRUPT: Duration = Duration::from_millis(500);

/// Which of idemdb's own streams a pipe is copied to.
#[derive(Debug, Clone, Copy)]
enum Target {
    Stdout,
    Stderr,
}

/// One stream's recording, shared with the thread that copies it.
#[derive(Default)]
struct Recording {
    output: Output,
}

/// Runs `command` (program and arguments) with idemdb's stdin, environment and working
/// directory, copying its output through and recording up to `budget` bytes of it. The
/// error is the failure to start it (nothing ran).
pub fn run(command: &[OsString], budget: usize, interrupts: &Interrupts) -> std::io::Result<Ran> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    interrupts.watch_child(child.id());

    let budget = Arc::new(Mutex::new(budget));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let stdout = start_copy(&mut child, Target::Stdout, &budget, done_tx.clone());
    let stderr = start_copy(&mut child, Target::Stderr, &budget, done_tx);

    let waited = child.wait();
    interrupts.unwatch_child();
    let status = match waited {
        Ok(status) => Status::of(status),
        // `wait` fails only if the child was already reaped, which nothing here does.
        Err(_) => Status::Exited(1),
    };

    // Both copies end at end-of-file, normally right after COMMAND exits. An interrupted
    // COMMAND's output is not recorded, so its leftovers are not waited for long.
    let drain = if interrupts.forwarded().is_some() {
        DRAIN_AFTER_INTERRUPT
    } else {
        DRAIN_AFTER_EXIT
    };
    let deadline = std::time::Instant::now() + drain;
    let copies = [&stdout, &stderr].iter().filter(|c| c.is_some()).count();
    let mut finished = 0;
    while finished < copies {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => finished += 1,
            Err(_) => break,
        }
    }
    let take = |recording: &Option<Arc<Mutex<Recording>>>| {
        recording
            .as_ref()
            .map(|r| std::mem::take(&mut r.lock().unwrap_or_else(PoisonError::into_inner).output))
            .unwrap_or_default()
    };
    Ok(Ran {
        status,
        stdout: take(&stdout),
        stderr: take(&stderr),
        output_left_open: finished < copies,
    })
}

fn start_copy(
    child: &mut Child,
    target: Target,
    budget: &Arc<Mutex<usize>>,
    done: mpsc::Sender<()>,
) -> Option<Arc<Mutex<Recording>>> {
    let pipe: Box<dyn Read + Send> = match target {
        Target::Stdout => Box::new(child.stdout.take()?),
        Target::Stderr => Box::new(child.stderr.take()?),
    };
    let recording = Arc::new(Mutex::new(Recording::default()));
    let shared = Arc::clone(&recording);
    let budget = Arc::clone(budget);
    let name = match target {
        Target::Stdout => "idemdb-stdout",
        Target::Stderr => "idemdb-stderr",
    };
    let spawned = thread::Builder::new().name(name.to_owned()).spawn(move || {
        copy(pipe, target, &shared, &budget);
        let _ = done.send(());
    });
    // Without a thread nothing reads the pipe; COMMAND would block once it fills. Dropping
    // the closure closed the pipe, so COMMAND gets EPIPE instead: visible, never a hang.
    spawned.ok().map(|_| recording)
}

fn copy(
    mut pipe: Box<dyn Read + Send>,
    target: Target,
    recording: &Mutex<Recording>,
    budget: &Mutex<usize>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    // Once writing through fails (our reader went away), keep recording and draining, so
    // COMMAND is not disturbed.
    let mut pass_through = true;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let chunk = &buf[..n];
        if pass_through {
            let written = match target {
                Target::Stdout => write_all_flush(&mut std::io::stdout().lock(), chunk),
                Target::Stderr => write_all_flush(&mut std::io::stderr().lock(), chunk),
            };
            pass_through = written.is_ok();
        }
        let keep = {
            let mut left = budget.lock().unwrap_or_else(PoisonError::into_inner);
            let keep = n.min(*left);
            *left -= keep;
            keep
        };
        let mut recording = recording.lock().unwrap_or_else(PoisonError::into_inner);
        recording.output.total += n as u64;
        recording.output.bytes.extend_from_slice(&chunk[..keep]);
    }
}

fn write_all_flush(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes)?;
    out.flush()
}
