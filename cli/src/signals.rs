//! SIGINT, SIGTERM and SIGHUP during `idemdb run`: noted, and forwarded to COMMAND while it
//! runs, so idemdb itself outlives COMMAND and can leave the key in the right state.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

#[derive(Default)]
struct State {
    /// The pid of COMMAND while it runs; 0 otherwise.
    child: AtomicI32,
    /// The last signal received; 0 for none.
    received: AtomicI32,
    /// The last signal forwarded to COMMAND; 0 for none.
    forwarded: AtomicI32,
}

impl State {
    fn forward(&self, signal: i32) {
        let pid = self.child.load(Ordering::SeqCst);
        let target = rustix::process::Pid::from_raw(pid);
        let signal_value = rustix::process::Signal::from_named_raw(signal);
        if let (Some(target), Some(value)) = (target, signal_value)
            && rustix::process::kill_process(target, value).is_ok()
        {
            self.forwarded.store(signal, Ordering::SeqCst);
        }
    }
}

/// Catches the terminating signals for as long as it lives.
pub struct Interrupts {
    state: Arc<State>,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Interrupts {
    /// Starts catching SIGINT, SIGTERM and SIGHUP: from now on they no longer end idemdb.
    pub fn install() -> std::io::Result<Interrupts> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("idemdb-signals".to_owned())
            .spawn(move || {
                for signal in signals.forever() {
                    shared.received.store(signal, Ordering::SeqCst);
                    shared.forward(signal);
                }
            })?;
        Ok(Interrupts {
            state,
            handle,
            thread: Some(thread),
        })
    }

    /// Forwards signals to `pid` from now on. A signal that arrived just before is
    /// forwarded at once, so none falls between starting COMMAND and watching it.
    pub fn watch_child(&self, pid: u32) {
        let pid = i32::try_from(pid).unwrap_or(0);
        self.state.child.store(pid, Ordering::SeqCst);
        let pending = self.state.received.load(Ordering::SeqCst);
        if pending != 0 && self.state.forwarded.load(Ordering::SeqCst) == 0 {
            self.state.forward(pending);
        }
    }

    /// Stops forwarding (COMMAND has exited).
    pub fn unwatch_child(&self) {
        self.state.child.store(0, Ordering::SeqCst);
    }

    /// The last signal received, if any.
    pub fn received(&self) -> Option<i32> {
        Some(self.state.received.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }

    /// The last signal forwarded to COMMAND, if any.
    pub fn forwarded(&self) -> Option<i32> {
        Some(self.state.forwarded.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            // The thread only loops over signals; it ends when the handle closes.
            let _ = thread.join();
        }
    }
}

/// A signal's name for messages, e.g. `SIGTERM`.
pub fn name(signal: i32) -> String {
    match signal {
        SIGINT => "SIGINT".to_owned(),
        SIGTERM => "SIGTERM".to_owned(),
        SIGHUP => "SIGHUP".to_owned(),
        signal_hook::consts::SIGKILL => "SIGKILL".to_owned(),
        other => format!("signal {other}"),
    }
}
