//! A simulated disk for a store's two files, below redb and the journal, that injects I/O
//! errors, crashes, torn writes, stalled syncs and a full disk.
//!
//! Each file is kept twice: the *live* bytes that reads see (the page cache) and the
//! *durable* bytes (what the last successful `sync_data` made permanent). A power cut
//! ([`SimStorage::power_cut`]) throws the live bytes away and restarts from the durable ones,
//! optionally keeping, dropping or garbling each sector written since the last sync, as a real
//! disk may.
//!
//! ```
//! use idemdb::testing::{CrashMode, SimStorage};
//! use idemdb::{Fingerprint, Store};
//!
//! let disk = SimStorage::new();
//! let store = disk.open(Store::builder().sweep_interval(None)).unwrap();
//! let claim = store.begin("s", "k", Fingerprint::of(b"r")).unwrap().into_claim().unwrap();
//! claim.complete(b"done").unwrap();
//! drop(store);
//! disk.power_cut(CrashMode::Torn { seed: 7 });
//! let store = disk.open(Store::builder().sweep_interval(None)).unwrap();
//! assert!(store.get("s", "k").unwrap().is_some());
//! ```

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::config::StoreBuilder;
use crate::error::Result;
use crate::storage::{Backend, StorageRole};
use crate::store::Store;

/// The unit a disk writes atomically: a write is torn only at these boundaries.
pub const SECTOR: u64 = 512;

/// How long a stalled sync waits at most before failing, so a forgotten
/// [`SimStorage::release_syncs`] fails a test instead of hanging it.
const STALL_LIMIT: Duration = Duration::from_secs(60);

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// Whether an injected I/O error happens once or keeps happening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Only the chosen operation fails; the next one works (a transient error).
    Once,
    /// The chosen operation and every mutating one after it fail, until
    /// [`SimStorage::heal`] (a broken device).
    Forever,
}

/// What survives a power cut of the bytes written since the last successful sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing: the files are exactly as of their last successful sync.
    Durable,
    /// Each unsynced sector is kept or lost, and an unsynced change of length is kept or
    /// lost, as the seed decides: a disk that reorders writes and tears them at sector
    /// boundaries. A store must recover every acknowledged operation from this.
    Torn {
        /// Chooses the fate of each sector; the same seed gives the same image.
        seed: u64,
    },
    /// As [`Torn`](Self::Torn), and some unsynced sectors come back as garbage (a disk
    /// without power-safe overwrite, caught mid-sector). A store must recover every
    /// acknowledged operation or refuse to open with a typed error — never open empty.
    Garbled {
        /// Chooses the fate of each sector; the same seed gives the same image.
        seed: u64,
    },
}

/// One file: live and durable bytes, and which sectors differ.
#[derive(Debug, Default, Clone)]
struct File {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Sectors written since the last sync (they may differ from the durable bytes).
    dirty: BTreeSet<u64>,
}

impl File {
    fn sync(&mut self) {
        let len = self.live.len();
        self.durable.resize(len, 0);
        for sector in std::mem::take(&mut self.dirty) {
            let start = (sector * SECTOR) as usize;
            if start >= len {
                continue;
            }
            let end = (start + SECTOR as usize).min(len);
            self.durable[start..end].copy_from_slice(&self.live[start..end]);
        }
    }

    fn crash(&mut self, mode: CrashMode) {
        let mut image = self.durable.clone();
        let (seed, garble) = match mode {
            CrashMode::Durable => (None, false),
            CrashMode::Torn { seed } => (Some(seed), false),
            CrashMode::Garbled { seed } => (Some(seed), true),
        };
        if let Some(seed) = seed {
            let mut rng = SplitMix(seed ^ (self.live.len() as u64).rotate_left(17));
            // An unsynced growth may or may not have reached the metadata.
            if self.live.len() > image.len() && rng.next().is_multiple_of(2) {
                image.resize(self.live.len(), 0);
            }
            for &sector in &self.dirty {
                let start = (sector * SECTOR) as usize;
                if start >= image.len() {
                    continue;
                }
                let end = (start + SECTOR as usize).min(image.len());
                match rng.next() % if garble { 3 } else { 2 } {
                    // The new bytes made it.
                    0 if end <= self.live.len() => {
                        image[start..end].copy_from_slice(&self.live[start..end])
                    }
                    // A half-written sector: neither the old nor the new bytes.
                    2 => {
                        for b in &mut image[start..end] {
                            *b = rng.next() as u8;
                        }
                    }
                    // The old bytes stayed.
                    _ => {}
                }
            }
        }
        self.live = image.clone();
        self.durable = image;
        self.dirty.clear();
    }
}

/// The fault plan and the counters, shared by both files.
#[derive(Debug, Default)]
struct Plan {
    /// Mutating operations (write, set_len, sync) seen so far.
    mutations: u64,
    /// Successful syncs so far.
    syncs: u64,
    /// Syncs attempted so far (numbered as they are admitted, so two at once can't both
    /// slip past an armed crash).
    sync_calls: u64,
    /// Fail the mutating operation with this number (1-based, counted from the start).
    fail_at: Option<(u64, Persistence)>,
    /// A `Forever` failure has started.
    failing: bool,
    /// The sync with this number loses power instead: nothing more becomes durable.
    crash_at_sync: Option<u64>,
    /// Power is off: every operation fails until [`SimStorage::power_cut`].
    dead: bool,
    /// Most bytes one file may grow to (a full disk).
    capacity: Option<u64>,
    /// Syncs wait while this is set.
    stalled: bool,
    /// Syncs waiting at the stall.
    syncs_waiting: u32,
    /// A failed sync forgets the writes it failed to make durable (see
    /// [`SimStorage::drop_writes_on_failed_sync`]).
    failed_sync_drops: bool,
}

#[derive(Debug)]
struct Inner {
    files: Mutex<[File; 2]>,
    plan: Mutex<Plan>,
    stall: Condvar,
    /// Bumped by every power cut: backends of an earlier generation are disconnected, as a
    /// crashed process's open files are.
    generation: AtomicU64,
}

/// The simulated storage of one store: its database and its journal file, and the faults to
/// inject into them. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct SimStorage {
    inner: Arc<Inner>,
}

impl Default for SimStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl SimStorage {
    /// Two empty files and no faults.
    pub fn new() -> SimStorage {
        SimStorage {
            inner: Arc::new(Inner {
                files: Mutex::new([File::default(), File::default()]),
                plan: Mutex::new(Plan::default()),
                stall: Condvar::new(),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Opens a store on this storage with the given settings.
    pub fn open(&self, builder: StoreBuilder) -> Result<Store> {
        let disk = self.clone();
        builder.open_with_backend("simulated disk", move |role| Ok(disk.backend(role)))
    }

    /// A backend over the file for `role`, valid until the next power cut.
    pub fn backend(&self, role: StorageRole) -> FaultyBackend {
        FaultyBackend {
            disk: self.clone(),
            file: role_index(role),
            generation: self.inner.generation.load(Ordering::SeqCst),
        }
    }

    /// Makes mutating operation number `n` from now (1 = the next one) fail with EIO, once
    /// or from then on.
    pub fn fail_after(&self, n: u64, persistence: Persistence) {
        let mut plan = self.inner.plan.lock();
        plan.fail_at = Some((plan.mutations + n.max(1), persistence));
    }

    /// Makes sync number `k` from now (1 = the next one) a power loss: that sync fails and
    /// so does every operation after it, until [`power_cut`](Self::power_cut) restarts the
    /// disk from what was durable.
    pub fn crash_at_sync(&self, k: u64) {
        let mut plan = self.inner.plan.lock();
        plan.crash_at_sync = Some(plan.sync_calls + k.max(1));
    }

    /// Limits how large each file may grow; growing past it fails with ENOSPC. `None`
    /// gives the space back.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.inner.plan.lock().capacity = bytes;
    }

    /// Makes a failed sync forget the writes it failed to make durable, as Linux does after
    /// a failed fsync (the pages are marked clean: reads still see the new bytes, but no
    /// later sync writes them, and a power cut loses them). Off by default: a failed sync
    /// leaves its writes pending for the next one.
    pub fn drop_writes_on_failed_sync(&self, drop: bool) {
        self.inner.plan.lock().failed_sync_drops = drop;
    }

    /// Holds every sync until [`release_syncs`](Self::release_syncs).
    pub fn stall_syncs(&self) {
        self.inner.plan.lock().stalled = true;
    }

    /// Lets held syncs go on.
    pub fn release_syncs(&self) {
        self.inner.plan.lock().stalled = false;
        self.inner.stall.notify_all();
    }

    /// Waits (up to a minute) until a sync is held by [`stall_syncs`](Self::stall_syncs);
    /// returns whether one is.
    pub fn wait_for_stalled_sync(&self) -> bool {
        let deadline = std::time::Instant::now() + STALL_LIMIT;
        while std::time::Instant::now() < deadline {
            if self.inner.plan.lock().syncs_waiting > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Ends injected I/O errors (a `Forever` failure or a pending one); power loss and
    /// capacity stay as they are.
    pub fn heal(&self) {
        let mut plan = self.inner.plan.lock();
        plan.fail_at = None;
        plan.failing = false;
    }

    /// Cuts the power: every backend handed out so far is disconnected, and each file
    /// restarts from its durable bytes, plus what `mode` keeps of the unsynced ones. Clears
    /// every fault; capacity stays.
    pub fn power_cut(&self, mode: CrashMode) {
        {
            // Under the files lock, so no write of a disconnected backend that was admitted
            // before the cut can land in the new image (writers re-check the generation
            // under this lock).
            let mut files = self.inner.files.lock();
            self.inner.generation.fetch_add(1, Ordering::SeqCst);
            for (i, file) in files.iter_mut().enumerate() {
                let salt = |seed: u64| seed.wrapping_add(i as u64);
                let mode = match mode {
                    CrashMode::Torn { seed } => CrashMode::Torn { seed: salt(seed) },
                    CrashMode::Garbled { seed } => CrashMode::Garbled { seed: salt(seed) },
                    CrashMode::Durable => CrashMode::Durable,
                };
                file.crash(mode);
            }
        }
        let mut plan = self.inner.plan.lock();
        plan.fail_at = None;
        plan.failing = false;
        plan.crash_at_sync = None;
        plan.dead = false;
        plan.stalled = false;
        drop(plan);
        self.inner.stall.notify_all();
    }

    /// Successful syncs so far, over both files.
    pub fn syncs(&self) -> u64 {
        self.inner.plan.lock().syncs
    }

    /// Mutating operations (writes, resizes, syncs) attempted so far, over both files.
    pub fn mutations(&self) -> u64 {
        self.inner.plan.lock().mutations
    }

    /// Cuts the power now, without restarting: every operation fails from here on, as if
    /// the machine died mid-flight. [`power_cut`](Self::power_cut) restarts the disk.
    pub fn power_off(&self) {
        self.inner.plan.lock().dead = true;
    }

    /// Whether an injected power loss has happened (and no power cut restarted the disk).
    pub fn is_dead(&self) -> bool {
        self.inner.plan.lock().dead
    }

    /// The live bytes of the file for `role`.
    pub fn live_bytes(&self, role: StorageRole) -> Vec<u8> {
        let files = self.inner.files.lock();
        files[role_index(role)].live.clone()
    }

    /// Replaces the file for `role`, live and durable, with `bytes` (to plant damage).
    pub fn replace_bytes(&self, role: StorageRole, bytes: Vec<u8>) {
        let mut files = self.inner.files.lock();
        let file = &mut files[role_index(role)];
        file.live = bytes.clone();
        file.durable = bytes;
        file.dirty.clear();
    }

    /// Counts a mutating operation and decides whether it fails.
    fn admit(&self, generation: u64, is_sync: bool) -> io::Result<()> {
        let mut plan = self.inner.plan.lock();
        if generation != self.inner.generation.load(Ordering::SeqCst) || plan.dead {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        plan.mutations += 1;
        if is_sync {
            plan.sync_calls += 1;
            if plan.crash_at_sync.is_some_and(|k| plan.sync_calls >= k) {
                plan.dead = true;
                return Err(io::Error::from_raw_os_error(EIO));
            }
        }
        if let Some((at, persistence)) = plan.fail_at
            && plan.mutations >= at
        {
            plan.fail_at = None;
            match persistence {
                Persistence::Once => return Err(io::Error::from_raw_os_error(EIO)),
                Persistence::Forever => plan.failing = true,
            }
        }
        if plan.failing {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        Ok(())
    }

    fn check_alive(&self, generation: u64) -> io::Result<()> {
        self.check_generation(generation)?;
        if self.is_dead() {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        Ok(())
    }

    /// Fails with ENOSPC if `file` would grow past the capacity to reach `new_len`.
    fn check_space_for(&self, file: usize, new_len: u64) -> io::Result<()> {
        let Some(cap) = self.inner.plan.lock().capacity else {
            return Ok(());
        };
        let len = self.inner.files.lock()[file].live.len() as u64;
        if new_len > len && new_len > cap {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }

    fn sync(&self, file: usize, generation: u64) -> io::Result<()> {
        {
            let mut plan = self.inner.plan.lock();
            if plan.stalled {
                plan.syncs_waiting += 1;
                let deadline = std::time::Instant::now() + STALL_LIMIT;
                let mut timed_out = false;
                while plan.stalled && !timed_out {
                    timed_out = self.inner.stall.wait_until(&mut plan, deadline).timed_out();
                }
                plan.syncs_waiting -= 1;
                if timed_out {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "a stalled sync was never released",
                    ));
                }
            }
        }
        let mut files = self.inner.files.lock();
        self.check_generation(generation)?;
        if let Err(e) = self.admit(generation, true) {
            let drops = {
                let plan = self.inner.plan.lock();
                plan.failed_sync_drops && !plan.dead
            };
            if drops {
                files[file].dirty.clear();
            }
            return Err(e);
        }
        files[file].sync();
        drop(files);
        self.inner.plan.lock().syncs += 1;
        Ok(())
    }

    fn check_generation(&self, generation: u64) -> io::Result<()> {
        if generation == self.inner.generation.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(EIO))
        }
    }
}

fn role_index(role: StorageRole) -> usize {
    match role {
        StorageRole::Database => 0,
        StorageRole::Journal => 1,
    }
}

/// One file of a [`SimStorage`], as a store's storage.
#[derive(Debug)]
pub struct FaultyBackend {
    disk: SimStorage,
    file: usize,
    generation: u64,
}

impl Backend for FaultyBackend {
    fn len(&self) -> io::Result<u64> {
        self.disk.check_alive(self.generation)?;
        Ok(self.disk.inner.files.lock()[self.file].live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.disk.check_alive(self.generation)?;
        let files = self.disk.inner.files.lock();
        let live = &files[self.file].live;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start
            .checked_add(out.len())
            .filter(|&end| end <= live.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        out.copy_from_slice(&live[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.admit(self.generation, false)?;
        self.disk.check_space_for(self.file, len)?;
        let mut files = self.disk.inner.files.lock();
        self.disk.check_generation(self.generation)?;
        let file = &mut files[self.file];
        let old = file.live.len() as u64;
        let new = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        file.live.resize(new, 0);
        // Every sector whose bytes may have changed (the grown or cut tail) is unsynced.
        let (lo, hi) = (old.min(len), old.max(len));
        file.dirty.extend(lo / SECTOR..hi.div_ceil(SECTOR));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.sync(self.file, self.generation)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.disk.admit(self.generation, false)?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(io::ErrorKind::InvalidInput)?;
        self.disk.check_space_for(self.file, end)?;
        let mut files = self.disk.inner.files.lock();
        self.disk.check_generation(self.generation)?;
        let file = &mut files[self.file];
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let stop = usize::try_from(end).map_err(|_| io::ErrorKind::InvalidInput)?;
        if stop > file.live.len() {
            file.live.resize(stop, 0);
        }
        file.live[start..stop].copy_from_slice(data);
        if !data.is_empty() {
            file.dirty.extend(offset / SECTOR..end.div_ceil(SECTOR));
        }
        Ok(())
    }
}

/// A small deterministic generator (SplitMix64): the same seed tears the same way.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
