//! Opening a store: every setting, its default, and its limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::decision::RecoveryPolicy;
use crate::error::{Error, Result};
use crate::key::KeyPolicy;
use crate::storage::{
    AsRedb, Backend, BackendFactory, MemoryBackend, OpenOptions, Opener, ReadOnlyEngine,
    StorageRole,
};
use crate::store::Store;
use crate::time::{Clock, SystemClock};

/// The shortest retention a request may ask for.
pub const MIN_RETENTION: Duration = Duration::from_secs(1);

/// The largest `max_response_size` a store accepts: 64 MiB.
pub const MAX_RESPONSE_LIMIT: usize = 64 * 1024 * 1024;

/// The largest owner tag a claim may carry, in bytes.
pub const MAX_OWNER_LEN: usize = 1024;

/// The default size of the journal ring: 64 MiB.
pub const DEFAULT_JOURNAL_SIZE: u64 = 64 * 1024 * 1024;

/// When a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is synced before the callers in it are answered: an acknowledged claim
    /// or completion survives a crash. The default.
    #[default]
    Immediate,
    /// The journal is never synced; changes reach the disk when the operating system writes
    /// them back, with the periodic folds into the database, or when the store is closed. A
    /// crash loses recent claims and completions, so a retry after a crash may execute
    /// again. For caches and tests, never for side effects that matter.
    None,
}

/// Configures and opens a [`Store`].
///
/// ```
/// use idemdb::{Store, KeyPolicy};
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::builder()
///     .default_retention(Duration::from_secs(3600))
///     .lease(Duration::from_secs(30))
///     .key_policy(KeyPolicy::Opaque { max_len: 128 })
///     .open(dir.path().join("idempotency.idemdb"))?;
/// # store.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct StoreBuilder {
    default_retention: Duration,
    max_retention: Duration,
    lease: Duration,
    wait: Duration,
    key_policy: KeyPolicy,
    max_response_size: usize,
    sweep_interval: Option<Duration>,
    sweep_batch: usize,
    durability: Durability,
    two_phase_commit: bool,
    quick_repair: bool,
    cache_size: usize,
    record_cache_size: usize,
    clock: Arc<dyn Clock>,
    recovery: RecoveryPolicy,
    verify_on_open: bool,
    short_process: bool,
    create_if_missing: bool,
    read_only: bool,
    block_on_lock: bool,
    max_batch: usize,
    journal_size: u64,
    defer_claim_sync: bool,
    fold_interval: Duration,
    generation_size: usize,
}

impl Default for StoreBuilder {
    fn default() -> Self {
        StoreBuilder {
            default_retention: Duration::from_secs(24 * 3600),
            max_retention: Duration::from_secs(365 * 24 * 3600),
            lease: Duration::from_secs(60),
            wait: Duration::from_secs(10),
            key_policy: KeyPolicy::default(),
            max_response_size: 1024 * 1024,
            sweep_interval: Some(Duration::from_secs(1)),
            sweep_batch: 10_000,
            durability: Durability::Immediate,
            two_phase_commit: false,
            quick_repair: false,
            cache_size: 256 * 1024 * 1024,
            record_cache_size: 64 * 1024 * 1024,
            clock: Arc::new(SystemClock),
            recovery: RecoveryPolicy::TakeOver,
            verify_on_open: false,
            short_process: false,
            create_if_missing: true,
            read_only: false,
            block_on_lock: false,
            max_batch: 1024,
            journal_size: DEFAULT_JOURNAL_SIZE,
            defer_claim_sync: false,
            fold_interval: Duration::from_secs(1),
            generation_size: crate::storage::DEFAULT_GENERATION_KEYS,
        }
    }
}

/// The settings a running store uses, validated.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) default_retention: Duration,
    pub(crate) max_retention: Duration,
    pub(crate) lease: Duration,
    pub(crate) wait: Duration,
    pub(crate) key_policy: KeyPolicy,
    pub(crate) max_response_size: usize,
    pub(crate) sweep_interval: Option<Duration>,
    pub(crate) sweep_batch: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) recovery: RecoveryPolicy,
}

impl StoreBuilder {
    /// A builder with the defaults listed on each setter.
    pub fn new() -> StoreBuilder {
        StoreBuilder::default()
    }

    /// How long a record counts when a request does not say (default 24 h). Between 1 s and
    /// the maximum retention.
    pub fn default_retention(mut self, retention: Duration) -> Self {
        self.default_retention = retention;
        self
    }

    /// The longest retention a request may ask for (default 365 days). "Forever" is always
    /// allowed.
    pub fn max_retention(mut self, retention: Duration) -> Self {
        self.max_retention = retention;
        self
    }

    /// How long a claim holds its key before others may treat it as abandoned (default
    /// 60 s). A holder can extend it; a dropped claim ends it at once.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a `begin` waits for another caller in this process that holds the same key
    /// (default 10 s) before answering "in progress".
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Which keys are accepted (default: opaque, up to 255 bytes; [`KeyPolicy::OpaqueChars`]
    /// counts characters instead).
    pub fn key_policy(mut self, policy: KeyPolicy) -> Self {
        self.key_policy = policy;
        self
    }

    /// The largest response `complete` accepts, in bytes (default 1 MiB, at most 64 MiB).
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.max_response_size = bytes;
        self
    }

    /// How often the background sweeper deletes expired records (default every second);
    /// `None` turns it off ([`Store::sweep_now`] still works). Expired records count as
    /// absent at once either way.
    pub fn sweep_interval(mut self, interval: Option<Duration>) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// How many expired records one sweep batch examines at most (default 10,000). A batch
    /// is synced once; the writer deletes it in frames of at most 4,096 tombstones and
    /// commits queued claims between them, so a claim waits for one frame at most, whatever
    /// the batch size.
    pub fn sweep_batch(mut self, batch: usize) -> Self {
        self.sweep_batch = batch;
        self
    }

    /// When commits reach the disk (default [`Durability::Immediate`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Commit in two phases (two syncs per commit): protects against a crash that reorders
    /// writes adversarially, at the cost of commit latency. Off by default.
    pub fn two_phase_commit(mut self, enabled: bool) -> Self {
        self.two_phase_commit = enabled;
        self
    }

    /// Save redb's allocator state with every commit, so reopening after a crash is quick
    /// instead of a full repair. Off by default (each commit writes a little more).
    pub fn quick_repair(mut self, enabled: bool) -> Self {
        self.quick_repair = enabled;
        self
    }

    /// Memory for redb's page cache, in bytes (default 256 MiB).
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = bytes;
        self
    }

    /// Memory for decoded records read from the database, in bytes (default 64 MiB; 0
    /// turns the cache off). Replays of recently read keys are answered from it without a
    /// B-tree lookup; it is on top of [`cache_size`](Self::cache_size).
    pub fn record_cache_size(mut self, bytes: usize) -> Self {
        self.record_cache_size = bytes;
        self
    }

    /// Where time comes from (default the system clock). Tests inject a
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// What a `begin` gets when the holder of its key vanished (default
    /// [`RecoveryPolicy::TakeOver`]).
    pub fn recovery(mut self, policy: RecoveryPolicy) -> Self {
        self.recovery = policy;
        self
    }

    /// Verify every page's checksum when opening (default off). On, a damaged file is
    /// always refused at open as a typed [`Error::Corrupt`] (and a panic while redb reads
    /// the verified file is a bug, [`Error::Poisoned`]), but opening then reads the whole
    /// file, so its cost grows with the store. Off, damage is found when a damaged page or
    /// record is read (also a typed [`Error::Corrupt`]) and by
    /// [`maintenance::check`](crate::maintenance::check), which verifies every page; after
    /// a crash redb's own repair and the journal replay run either way.
    pub fn verify_on_open(mut self, verify: bool) -> Self {
        self.verify_on_open = verify;
        self
    }

    /// Open for a short-lived process (default off): the database file is not written by
    /// this process unless it must be. Operations are durable in the journal as always; the
    /// folds of the session stay in memory, and the next process replays the journal. A
    /// session writes the database file (and folds for real) only when the journal holds
    /// more than 1 MiB (or a quarter of its size) unfolded, when the file was closed cleanly or needs
    /// repair after a crash, or when the store is new. An open and a close then cost no
    /// sync of the database file: for command-line tools that open a store per operation.
    /// Not for a long-running process, whose journal would fill. The file is locked as for
    /// any writing open (exclusive, waited for with [`block_on_lock`](Self::block_on_lock))
    /// before it is judged, and the lock is kept when the session turns to writing the file.
    /// [`read_only`](Self::read_only) wins over it.
    pub fn short_process(mut self, short: bool) -> Self {
        self.short_process = short;
        self
    }

    /// Create the store file if it does not exist (default on). Off, a missing file is
    /// [`Error::Missing`].
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// Open the store for reading only (default off). The file is opened read-only under a
    /// shared lock, so any number of read-only opens share it while no writing open does;
    /// journaled changes not yet folded into the database are read into memory. Nothing is
    /// ever written, so it works on a read-only file, directory or mount and on a full disk,
    /// and leaves the files byte-for-byte unchanged. Reads, scans, `stats` and `check`
    /// work; anything that would write (a claim, a completion, a delete, a sweep) is
    /// [`Error::ReadOnly`]. A missing store is [`Error::Missing`] (never created), or
    /// [`Error::Corrupt`] if its journal is still there, as for every open; a store a
    /// crash left unrepaired, or one of an older format, is [`Error::ReadOnly`] until a
    /// writing open has repaired or upgraded it. The background sweeper does not run.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Wait for the file's lock when another process holds the store, for as long as that
    /// takes, instead of failing at once with [`Error::Locked`] (default off). The wait
    /// blocks in the kernel, which hands the lock over when it is released.
    pub fn block_on_lock(mut self, block: bool) -> Self {
        self.block_on_lock = block;
        self
    }

    /// The most operations one group commit applies (default 1024).
    pub fn max_batch(mut self, ops: usize) -> Self {
        self.max_batch = ops;
        self
    }

    /// The size of the journal ring, in bytes (default 64 MiB; at least 1 MiB and four times
    /// the largest response). Every commit is appended here first and folded into the
    /// database later; a larger journal folds less often. The file grows to this size as it
    /// fills and is then reused.
    pub fn journal_size(mut self, bytes: u64) -> Self {
        self.journal_size = bytes;
        self
    }

    /// Acknowledge claims (Execute) before the sync that makes them durable; the next sync
    /// (any completion's, or one at most 2 ms later) covers them. Off by default.
    ///
    /// The trade-off: a claim costs no sync of its own, so a claim-and-complete cycle costs
    /// one sync instead of two. But a crash in that window forgets an acknowledged claim, so
    /// a retry after the crash executes as a fresh request, not as a recovery: an operation
    /// that had started may run twice. Completions are always durable before `complete`
    /// returns.
    pub fn defer_claim_sync(mut self, defer: bool) -> Self {
        self.defer_claim_sync = defer;
        self
    }

    /// How long journaled changes wait, at most, before they are folded into the database
    /// (default 1 s). Folds also start when the journal is a quarter full.
    pub fn fold_interval(mut self, interval: Duration) -> Self {
        self.fold_interval = interval;
        self
    }

    /// About how many records one generation of the records table holds before a new one
    /// starts (default 200,000).
    ///
    /// New keys are written into the newest generation only, so a fold writes into a small
    /// B-tree however large the store grows; a key's later changes are written where it
    /// lives, and a generation that sweeps have emptied is dropped. Smaller generations make
    /// folds cheaper; more of them make a lookup of a key the record cache does not know
    /// test more key filters (about one cache line each, from memory).
    pub fn generation_size(mut self, records: usize) -> Self {
        self.generation_size = records;
        self
    }

    fn settings(&self) -> Result<Settings> {
        let invalid =
            |option: &'static str, reason: String| Err(Error::InvalidConfig { option, reason });
        if self.max_retention < MIN_RETENTION {
            return invalid(
                "max_retention",
                format!("must be at least {MIN_RETENTION:?}"),
            );
        }
        if self.default_retention < MIN_RETENTION || self.default_retention > self.max_retention {
            return invalid(
                "default_retention",
                format!(
                    "{:?} is not between {MIN_RETENTION:?} and max_retention ({:?})",
                    self.default_retention, self.max_retention
                ),
            );
        }
        if let Some(reason) = self.key_policy.limit_error() {
            return invalid("key_policy", reason);
        }
        if self.max_response_size > MAX_RESPONSE_LIMIT {
            return invalid(
                "max_response_size",
                format!(
                    "{} bytes exceeds the limit of {MAX_RESPONSE_LIMIT}",
                    self.max_response_size
                ),
            );
        }
        if self.sweep_interval == Some(Duration::ZERO) {
            return invalid("sweep_interval", "must not be zero (use None)".to_owned());
        }
        if !(1..=1_000_000).contains(&self.sweep_batch) {
            return invalid("sweep_batch", "must be between 1 and 1,000,000".to_owned());
        }
        if !(1..=1_000_000).contains(&self.max_batch) {
            return invalid("max_batch", "must be between 1 and 1,000,000".to_owned());
        }
        let needed = (4 * (self.max_response_size as u64 + 64 * 1024)).max(1024 * 1024);
        if self.journal_size < needed {
            return invalid(
                "journal_size",
                format!(
                    "{} bytes is too small: it must hold at least 1 MiB and four of the largest responses ({needed} bytes)",
                    self.journal_size
                ),
            );
        }
        if self.fold_interval.is_zero() {
            return invalid("fold_interval", "must not be zero".to_owned());
        }
        if !(1..=100_000_000).contains(&self.generation_size) {
            return invalid(
                "generation_size",
                "must be between 1 and 100,000,000".to_owned(),
            );
        }
        Ok(Settings {
            default_retention: self.default_retention,
            max_retention: self.max_retention,
            lease: self.lease,
            wait: self.wait,
            key_policy: self.key_policy.clone(),
            max_response_size: self.max_response_size,
            sweep_interval: self.sweep_interval,
            sweep_batch: self.sweep_batch,
            clock: Arc::clone(&self.clock),
            recovery: self.recovery,
        })
    }

    fn open_options(&self) -> OpenOptions {
        OpenOptions {
            cache_size: self.cache_size,
            verify: self.verify_on_open,
            create: self.create_if_missing && !self.read_only,
            // A read-only store never writes, so it never needs an overlay over its file.
            defer_folds: self.short_process && !self.read_only,
            read_only: self.read_only,
            block_on_lock: self.block_on_lock,
        }
    }

    pub(crate) fn commit_settings(&self) -> crate::storage::CommitSettings {
        crate::storage::CommitSettings {
            durable: self.durability == Durability::Immediate,
            defer_claim_sync: self.defer_claim_sync,
            two_phase: self.two_phase_commit,
            quick_repair: self.quick_repair,
            max_batch: self.max_batch,
            journal_size: self.journal_size,
            fold_interval: self.fold_interval,
            record_cache_size: self.record_cache_size,
            generation_keys: self.generation_size,
        }
    }

    /// Opens (or creates) the store in the file at `path`.
    pub fn open(self, path: impl AsRef<Path>) -> Result<Store> {
        let mut settings = self.settings()?;
        let opener = Opener::file(path.as_ref().to_owned(), self.open_options());
        if self.read_only {
            // Sweeping deletes: a read-only store has nothing for a sweeper to do.
            settings.sweep_interval = None;
            let engine = ReadOnlyEngine::open(&opener, Arc::clone(&settings.clock))?;
            // Imports are refused by a read-only engine: no batch is ever written.
            return Store::on_engine(Arc::new(engine), opener, settings, usize::MAX);
        }
        Store::start(opener, settings, self.commit_settings())
    }

    /// Opens a store held in memory only: for tests. It is gone when the store is dropped.
    pub fn open_in_memory(self) -> Result<Store> {
        let database = MemoryBackend::new();
        let journal = MemoryBackend::new();
        self.open_on("memory", move |role| {
            Ok(match role {
                StorageRole::Database => database.clone(),
                StorageRole::Journal => journal.clone(),
            })
        })
    }

    /// Opens a store on custom storage (for example storage that injects faults, like
    /// [`SimStorage`](crate::testing::SimStorage)): `factory` is asked for the database's
    /// storage and for the journal's. It is called at open and again whenever the store must
    /// reopen the database after a failure; each call must return storage over the same
    /// bytes for the same role. `label` names the store in errors.
    #[cfg(feature = "testing")]
    pub fn open_with_backend<B, F>(self, label: &str, factory: F) -> Result<Store>
    where
        B: Backend,
        F: Fn(StorageRole) -> std::io::Result<B> + Send + Sync + 'static,
    {
        self.open_on(label, factory)
    }

    fn open_on<B, F>(self, label: &str, factory: F) -> Result<Store>
    where
        B: Backend,
        F: Fn(StorageRole) -> std::io::Result<B> + Send + Sync + 'static,
    {
        let settings = self.settings()?;
        if self.read_only {
            return Err(Error::InvalidConfig {
                option: "read_only",
                reason: "a read-only store must be a file (open it with `open`)".to_owned(),
            });
        }
        let factory: BackendFactory = Arc::new(move |role| {
            factory(role).map(|b| Box::new(AsRedb(b)) as Box<dyn redb::StorageBackend>)
        });
        let opener = Opener::backend(PathBuf::from(label), factory, self.open_options());
        Store::start(opener, settings, self.commit_settings())
    }
}
