//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use idemdb::testing::{Backend, MemoryBackend, StorageRole};
use idemdb::{Begin, Claim, Fingerprint, ManualClock, Store, StoreBuilder, Timestamp};
use parking_lot::{Condvar, Mutex};

/// A fixed starting instant, far from the epoch.
pub const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// A store file in a fresh temporary directory, on a manual clock, with the background
/// sweeper off so expiry tests control every sweep.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub clock: ManualClock,
    pub store: Store,
}

pub fn builder(clock: &ManualClock) -> StoreBuilder {
    Store::builder().clock(clock.clone()).sweep_interval(None)
}

impl TestStore {
    pub fn new() -> TestStore {
        Self::with(|b| b)
    }

    pub fn with(configure: impl Fn(StoreBuilder) -> StoreBuilder) -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("test.idemdb");
        let clock = ManualClock::new(T0);
        let store = configure(builder(&clock)).open(&path).expect("open store");
        TestStore {
            dir,
            path,
            clock,
            store,
        }
    }

    /// Closes and reopens the store file with the same settings and clock.
    pub fn reopen(&mut self, configure: impl Fn(StoreBuilder) -> StoreBuilder) {
        self.store.close().expect("close");
        self.store = configure(builder(&self.clock))
            .open(&self.path)
            .expect("reopen store");
    }
}

pub fn fp(text: &str) -> Fingerprint {
    Fingerprint::of(text.as_bytes())
}

/// The claim of an Execute, or a panic naming what came instead.
pub fn execute(begin: Begin) -> Claim {
    match begin {
        Begin::Execute(claim) => claim,
        other => panic!("expected Execute, got {other:?}"),
    }
}

/// The stored response of a Replay, or a panic naming what came instead.
pub fn replay(begin: Begin) -> Vec<u8> {
    match begin {
        Begin::Replay(r) => r.response,
        other => panic!("expected Replay, got {other:?}"),
    }
}

/// An in-memory redb backend whose `sync_data` can be held closed, to stall commits.
#[derive(Debug)]
pub struct GatedBackend {
    inner: MemoryBackend,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
pub struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    pub syncs_waiting: Mutex<u32>,
}

impl Gate {
    pub fn close(&self) {
        *self.closed.lock() = true;
    }

    pub fn open(&self) {
        *self.closed.lock() = false;
        self.opened.notify_all();
    }

    /// Waits until a sync is blocked at the gate.
    pub fn wait_for_blocked_sync(&self) {
        for _ in 0..10_000 {
            if *self.syncs_waiting.lock() > 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no sync reached the gate");
    }
}

impl Backend for GatedBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let mut closed = self.gate.closed.lock();
        if *closed {
            *self.gate.syncs_waiting.lock() += 1;
            while *closed {
                self.gate.opened.wait(&mut closed);
            }
            *self.gate.syncs_waiting.lock() -= 1;
        }
        drop(closed);
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }
}

/// Storage for both roles of a store on custom backends.
pub struct Memories {
    pub database: MemoryBackend,
    pub journal: MemoryBackend,
}

impl Memories {
    pub fn new() -> Memories {
        Memories {
            database: MemoryBackend::new(),
            journal: MemoryBackend::new(),
        }
    }

    pub fn of(&self, role: StorageRole) -> MemoryBackend {
        match role {
            StorageRole::Database => self.database.clone(),
            StorageRole::Journal => self.journal.clone(),
        }
    }
}

/// A store over [`GatedBackend`]s, with the gate to stall its commits (journal syncs).
pub fn gated_store(clock: &ManualClock) -> (Store, Arc<Gate>) {
    gated(builder(clock))
}

/// A store with the given settings over [`GatedBackend`]s, with the gate to stall its
/// commits.
pub fn gated(builder: StoreBuilder) -> (Store, Arc<Gate>) {
    let memories = Memories::new();
    let gate = Arc::new(Gate::default());
    let g = Arc::clone(&gate);
    let store = builder
        .open_with_backend("gated", move |role| {
            Ok(GatedBackend {
                inner: memories.of(role),
                gate: Arc::clone(&g),
            })
        })
        .expect("open gated store");
    (store, gate)
}

/// Which fault a [`FailingBackend`] injects.
pub const FAULT_NONE: u8 = 0;
/// Out of space, as a real file system is: the file cannot grow (no `set_len` upwards, no
/// write past its end), while writes inside it and syncs still work.
pub const FAULT_NO_SPACE: u8 = 1;
/// A broken device: every write, resize and sync fails with EIO.
pub const FAULT_EIO: u8 = 2;

/// An in-memory redb backend that injects the fault its switch names.
#[derive(Debug)]
pub struct FailingBackend {
    inner: MemoryBackend,
    fault: Arc<std::sync::atomic::AtomicU8>,
}

impl FailingBackend {
    fn fault(&self) -> u8 {
        self.fault.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn check(&self, growing: bool) -> std::io::Result<()> {
        match self.fault() {
            FAULT_EIO => Err(std::io::Error::from_raw_os_error(5)),
            FAULT_NO_SPACE if growing => Err(std::io::Error::from_raw_os_error(28)),
            _ => Ok(()),
        }
    }
}

impl Backend for FailingBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check(len > self.inner.len()?)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check(false)?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check(offset + data.len() as u64 > self.inner.len()?)?;
        self.inner.write(offset, data)
    }
}

/// A store over [`FailingBackend`]s (database and journal), with their fault switch.
pub fn failing_store(
    configure: impl Fn(StoreBuilder) -> StoreBuilder,
    clock: &ManualClock,
) -> (Store, Arc<std::sync::atomic::AtomicU8>) {
    let memories = Memories::new();
    let fault = Arc::new(std::sync::atomic::AtomicU8::new(FAULT_NONE));
    let f = Arc::clone(&fault);
    let store = configure(builder(clock))
        .open_with_backend("failing", move |role| {
            Ok(FailingBackend {
                inner: memories.of(role),
                fault: Arc::clone(&f),
            })
        })
        .expect("open failing store");
    (store, fault)
}

/// The seed of a randomized test: `IDEMDB_SEED` replays one; otherwise a fresh one, which
/// the test prints (with how to replay it) when it fails.
pub fn seed() -> u64 {
    std::env::var("IDEMDB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9e37_79b9_7f4a_7c15)
        })
}

/// A count from the environment (the soak command raises them), or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
