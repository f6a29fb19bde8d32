//! Model checking of the in-flight protocol with [shuttle](https://docs.rs/shuttle).
//!
//! ```text
//! RUSTFLAGS="--cfg shuttle" CARGO_TARGET_DIR=target/shuttle \
//!     cargo test --lib shuttle_tests -- --nocapture
//! ```
//!
//! The real `Store::begin`, `Claim` and `InflightMap` code runs over a model of storage: the
//! records in a map behind one (shuttle) mutex, each operation decided by
//! `decision::transition` and applied atomically, as the journaled engine does minus the disk.
//! Shuttle runs every property under its random and its PCT scheduler, and fails on an
//! assertion, a deadlock or a thread that runs for ever. Timed waits are modelled as
//! `crate::sync::model` describes: a wait of an hour never times out (a lost wake-up is then
//! a deadlock), a short one may time out at any moment.
//!
//! `IDEMDB_SHUTTLE_ITERATIONS` sets the schedules per scheduler (a soak run);
//! `IDEMDB_SEED` replays the seed a failing run printed.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shuttle::rand::{Rng, thread_rng};
use shuttle::scheduler::{PctScheduler, RandomScheduler};
use shuttle::{Config, MaxSteps, Runner};

use super::{Entry, InflightMap};
use crate::begin::{Begin, BeginOptions};
use crate::config::Settings;
use crate::decision::{self, Change, RecoveryPolicy};
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::key::{KeyPolicy, storage_key};
use crate::record::{Record, RecordState};
use crate::storage::{Engine, EngineStats, KeyedOp, OpenOptions, Opener, ScanPage, SweepPass};
use crate::store::Store;
use crate::sync::{Condvar, Mutex};
use crate::time::{ManualClock, Timestamp};

/// Schedules per scheduler and property, unless `IDEMDB_SHUTTLE_ITERATIONS` says otherwise.
const ITERATIONS: usize = 2000;
/// PCT's bug depth: the number of priority changes per schedule.
const PCT_DEPTH: usize = 3;
/// A wait that never runs out in a model run (see `crate::sync::model::UNBOUNDED_WAIT`).
const FOREVER: Duration = Duration::from_secs(3600);
/// A wait that may run out at any moment in a model run.
const SHORT: Duration = Duration::from_secs(1);

const SCOPE: &str = "s";
const A: Fingerprint = Fingerprint::from_bytes([0xa; 32]);
const B: Fingerprint = Fingerprint::from_bytes([0xb; 32]);

/// Runs `test` under the random and the PCT scheduler and reports what it ran.
fn explore(name: &str, test: impl Fn() + Send + Sync + Clone + 'static) {
    let iterations = env_number("IDEMDB_SHUTTLE_ITERATIONS").map_or(ITERATIONS, |n| n as usize);
    let seed = env_number("IDEMDB_SEED").unwrap_or_else(|| RandomState::new().hash_one(name));
    println!("shuttle {name}: seed {seed} (replay with IDEMDB_SEED={seed})");
    let config = || {
        let mut config = Config::new();
        config.stack_size = 1 << 20;
        // A thread that spins instead of blocking shows up as a failure, not a slow test.
        config.max_steps = MaxSteps::FailAfter(100_000);
        config
    };
    let started = Instant::now();
    let random =
        Runner::new(RandomScheduler::new_from_seed(seed, iterations), config()).run(test.clone());
    let pct = Runner::new(
        PctScheduler::new_from_seed(seed, PCT_DEPTH, iterations),
        config(),
    )
    .run(test);
    println!(
        "shuttle {name}: {random} random + {pct} PCT (depth {PCT_DEPTH}) schedules passed in {:.1?}",
        started.elapsed()
    );
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

/// Storage as the store sees it, in memory: one lock, each operation decided by the real
/// state machine against the record it read and applied at once.
struct ModelEngine {
    records: Mutex<HashMap<Vec<u8>, Record>>,
    clock: ManualClock,
}

impl ModelEngine {
    fn record(&self, storage_key: &[u8]) -> Option<Record> {
        self.records.lock().get(storage_key).cloned()
    }
}

impl Engine for ModelEngine {
    fn read(&self, key: &[u8]) -> Result<Option<Record>> {
        Ok(self.records.lock().get(key).cloned())
    }

    fn apply(&self, ops: Vec<KeyedOp>) -> Vec<Result<crate::decision::Outcome>> {
        let mut records = self.records.lock();
        let now = crate::time::Clock::now(&self.clock);
        ops.into_iter()
            .map(|(key, op)| {
                let t = decision::transition(records.get(&key).cloned(), op, now);
                match t.change {
                    Change::Keep => {}
                    Change::Put(record) => {
                        records.insert(key, record);
                    }
                    Change::Delete => {
                        records.remove(&key);
                    }
                }
                Ok(t.outcome)
            })
            .collect()
    }

    fn submit(&self, ops: Vec<KeyedOp>) -> crate::storage::Applying {
        // The model decides at once; nothing to wait for.
        Box::pin(std::future::ready(self.apply(ops)))
    }

    fn scan(&self, _start: &[u8], _end: Option<&[u8]>, _limit: usize) -> Result<ScanPage> {
        Ok(ScanPage {
            rows: Vec::new(),
            next: None,
        })
    }

    fn sweep(&self, _now: Timestamp, _limit: usize, _from: Option<&[u8]>) -> Result<SweepPass> {
        Ok(SweepPass::default())
    }

    fn stats(&self) -> EngineStats {
        EngineStats::default()
    }

    fn flush(&self) -> Result<()> {
        // Every change is in the one map already.
        Ok(())
    }

    fn check(&self, _report: &mut crate::maintenance::CheckReport) -> Result<()> {
        Ok(())
    }

    fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// A store over the model engine, with a clock that stands still.
fn model_store(recovery: RecoveryPolicy) -> (Store, std::sync::Arc<ModelEngine>) {
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let engine = std::sync::Arc::new(ModelEngine {
        records: Mutex::new(HashMap::new()),
        clock: clock.clone(),
    });
    let settings = Settings {
        default_retention: Duration::from_secs(24 * 3600),
        max_retention: Duration::from_secs(365 * 24 * 3600),
        lease: Duration::from_secs(60),
        wait: FOREVER,
        key_policy: KeyPolicy::default(),
        max_response_size: 1024,
        sweep_interval: None,
        sweep_batch: 100,
        clock: std::sync::Arc::new(clock),
        recovery,
    };
    let opener = Opener::file(
        PathBuf::from("shuttle-model"),
        OpenOptions {
            cache_size: 0,
            verify: false,
            create: false,
            defer_folds: false,
            read_only: false,
            block_on_lock: false,
        },
    );
    let store =
        Store::on_engine(engine.clone(), opener, settings, usize::MAX).expect("model store");
    (store, engine)
}

/// A flag that threads can wait for.
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            open: Mutex::new(false),
            opened: Condvar::new(),
        }
    }

    fn open(&self) {
        *self.open.lock() = true;
        self.opened.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock();
        while !*open {
            self.opened.wait_until(&mut open, Instant::now() + FOREVER);
        }
    }
}

/// How the first execution of a key ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Complete,
    Release,
    /// The claim is dropped without an outcome.
    Drop,
    /// The caller panics while it holds the claim.
    Panic,
}

/// What one caller got in the end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    /// It executed (`recovery`: taking over an abandoned claim) and completed.
    Completed {
        recovery: bool,
        response: Vec<u8>,
    },
    /// It executed and ended the claim as told (release, drop, panic).
    Ended {
        recovery: bool,
        ending: Ending,
    },
    Replayed(Vec<u8>),
    Conflict,
    InProgress,
    Abandoned,
}

/// The callers of one test run: they check that no two of them execute at once, and pick how
/// each execution ends.
struct Callers {
    store: Store,
    executing: AtomicUsize,
    executions: AtomicUsize,
    first_ending: Ending,
    /// The request of every caller of the race, and of those that have returned.
    requests: Vec<Fingerprint>,
    returned: Mutex<Vec<Fingerprint>>,
    returned_changed: Condvar,
}

impl Callers {
    fn new(store: Store, first_ending: Ending, requests: &[Fingerprint]) -> Callers {
        Callers {
            store,
            executing: AtomicUsize::new(0),
            executions: AtomicUsize::new(0),
            first_ending,
            requests: requests.to_vec(),
            returned: Mutex::new(Vec::new()),
            returned_changed: Condvar::new(),
        }
    }

    /// Waits until every caller with another request than `mine` has returned: they must be
    /// answered (conflict) without waiting for this execution to end.
    fn wait_for_other_requests(&self, mine: Fingerprint) {
        let others = |fps: &[Fingerprint]| fps.iter().filter(|&&fp| fp != mine).count();
        let mut returned = self.returned.lock();
        while others(&returned) < others(&self.requests) {
            self.returned_changed
                .wait_until(&mut returned, Instant::now() + FOREVER);
        }
    }

    /// Runs one caller, and notes that it returned.
    fn call_and_note(
        &self,
        key: &str,
        fingerprint: Fingerprint,
        wait: Duration,
        name: &str,
    ) -> Got {
        let got = self.call(key, fingerprint, wait, name);
        self.returned.lock().push(fingerprint);
        self.returned_changed.notify_all();
        got
    }

    /// One `begin` of `key` and whatever follows: the first execution ends with
    /// `first_ending`, later ones complete.
    fn call(&self, key: &str, fingerprint: Fingerprint, wait: Duration, name: &str) -> Got {
        let options = BeginOptions::new().wait(wait);
        match self
            .store
            .begin_with(SCOPE, key, fingerprint, &options)
            .expect("begin")
        {
            Begin::Execute(claim) => {
                assert_eq!(
                    self.executing.fetch_add(1, Ordering::SeqCst),
                    0,
                    "{name}: two callers execute {key} at once"
                );
                self.wait_for_other_requests(fingerprint);
                let recovery = claim.is_recovery();
                let ending = match self.executions.fetch_add(1, Ordering::SeqCst) {
                    0 => self.first_ending,
                    _ => Ending::Complete,
                };
                // Not executing any more from here: the ending makes the key free for the
                // next caller before it returns.
                self.executing.fetch_sub(1, Ordering::SeqCst);
                match ending {
                    Ending::Complete => {
                        let response = format!("{name} did {key}").into_bytes();
                        claim.complete(&response).expect("complete");
                        Got::Completed { recovery, response }
                    }
                    Ending::Release => {
                        claim.release().expect("release");
                        Got::Ended { recovery, ending }
                    }
                    Ending::Drop => {
                        drop(claim);
                        Got::Ended { recovery, ending }
                    }
                    Ending::Panic => {
                        // `resume_unwind` unwinds like a panic but skips the panic hook, which
                        // shuttle uses to report failures.
                        let unwound = catch_unwind(AssertUnwindSafe(move || {
                            let _claim = claim;
                            resume_unwind(Box::new("the caller panicked"));
                        }));
                        assert!(unwound.is_err());
                        Got::Ended { recovery, ending }
                    }
                }
            }
            Begin::Replay(replay) => Got::Replayed(replay.response),
            Begin::Conflict(_) => Got::Conflict,
            Begin::InProgress(_) => Got::InProgress,
            Begin::Abandoned(_) => Got::Abandoned,
        }
    }
}

/// Runs one caller per entry of `callers.requests` on `key` at once, waiting up to `waits`.
fn race(callers: &Callers, key: &str, waits: &[Duration]) -> Vec<Got> {
    shuttle::thread::scope(|scope| {
        let threads: Vec<_> = callers
            .requests
            .iter()
            .zip(waits)
            .enumerate()
            .map(|(i, (&fp, &wait))| {
                scope.spawn(move || callers.call_and_note(key, fp, wait, &format!("caller {i}")))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("caller thread"))
            .collect()
    })
}

/// After everything ended: no key is left in the map, and every stripe can be locked.
fn assert_map_drained(store: &Store) {
    assert_eq!(store.stats().in_flight_here, 0, "a slot outlived its claim");
}

fn pick<T: Copy>(choices: &[T]) -> T {
    choices[thread_rng().gen_range(0..choices.len())]
}

/// (b) Callers racing `begin` on one key: exactly one executes; the others replay its
/// response, or get a conflict if their request differs — at once, without waiting for the
/// execution to end (the executor waits for them). Nobody waiting gets in-progress.
#[test]
fn one_executor() {
    explore("one_executor", || {
        let (store, engine) = model_store(RecoveryPolicy::TakeOver);
        let fingerprints = [A, A, A, B];
        let callers = Callers::new(store.clone(), Ending::Complete, &fingerprints);
        let got = race(&callers, "k", &[FOREVER; 4]);

        let executed: Vec<usize> = (0..got.len())
            .filter(|&i| matches!(got[i], Got::Completed { .. }))
            .collect();
        assert_eq!(executed.len(), 1, "one execution: {got:?}");
        let winner = executed[0];
        let Got::Completed { response, .. } = &got[winner] else {
            unreachable!()
        };
        for (i, g) in got.iter().enumerate() {
            if i == winner {
                continue;
            }
            if fingerprints[i] == fingerprints[winner] {
                assert_eq!(g, &Got::Replayed(response.clone()), "caller {i}: {got:?}");
            } else {
                assert_eq!(g, &Got::Conflict, "caller {i}: {got:?}");
            }
        }
        let record = engine.record(&storage_key(SCOPE, "k")).expect("record");
        assert!(matches!(record.state, RecordState::Completed(_)));
        assert_map_drained(&store);
    });
}

/// Checks one race on one key of same-request callers that all wait long enough: the first
/// execution ended with `ending`, and every other caller was woken and answered from that.
fn check_waiters_answered(got: &[Got], ending: Ending, policy: RecoveryPolicy) {
    let completions: Vec<(bool, &Vec<u8>)> = got
        .iter()
        .filter_map(|g| match g {
            Got::Completed { recovery, response } => Some((*recovery, response)),
            _ => None,
        })
        .collect();
    let mut others = got.len() - 1;
    if ending != Ending::Complete {
        let ended = got
            .iter()
            .filter(|g| matches!(g, Got::Ended { .. }))
            .count();
        assert_eq!(ended, 1, "{ending:?}: {got:?}");
        assert!(got.contains(&Got::Ended {
            recovery: false,
            ending
        }));
        if policy == RecoveryPolicy::Strict && ending != Ending::Release {
            // Nobody may take over: everyone else is told the claim was abandoned.
            let abandoned = got.iter().filter(|g| **g == Got::Abandoned).count();
            assert_eq!(abandoned, others, "{ending:?}: {got:?}");
            return;
        }
        // The next caller executes; after a lost claim it is flagged as a recovery.
        others -= 1;
    }
    assert_eq!(completions.len(), 1, "{ending:?}: {got:?}");
    let (recovery, response) = completions[0];
    assert_eq!(
        recovery,
        matches!(ending, Ending::Drop | Ending::Panic),
        "{ending:?}: {got:?}"
    );
    let replayed = got
        .iter()
        .filter(|g| **g == Got::Replayed(response.clone()))
        .count();
    assert_eq!(replayed, others, "{ending:?}: {got:?}");
}

/// (a) No lost wake-up: callers wait (for an hour) on the caller executing their key; however
/// that execution ends — complete, release, dropped claim — each waiter wakes and gets its
/// answer. A waiter never woken would block for ever: shuttle reports that as a deadlock.
#[test]
fn no_lost_wakeup() {
    explore("no_lost_wakeup", || {
        let (store, _engine) = model_store(RecoveryPolicy::TakeOver);
        let ending = pick(&[Ending::Complete, Ending::Release, Ending::Drop]);
        let callers = Callers::new(store.clone(), ending, &[A, A, A]);
        let got = race(&callers, "k", &[FOREVER; 3]);
        check_waiters_answered(&got, ending, RecoveryPolicy::TakeOver);
        assert_map_drained(&store);
    });
}

/// (e) A claim dropped without an outcome, or lost to a panic, wakes its waiters: they take
/// over (one of them, flagged as a recovery) or are told the claim was abandoned (strict
/// policy). No slot is left behind and no stripe stays locked.
#[test]
fn dropped_claim_wakes_waiters() {
    explore("dropped_claim_wakes_waiters", || {
        let policy = pick(&[RecoveryPolicy::TakeOver, RecoveryPolicy::Strict]);
        let (store, _engine) = model_store(policy);
        let ending = pick(&[Ending::Drop, Ending::Panic]);
        let callers = Callers::new(store.clone(), ending, &[A, A, A]);
        let got = race(&callers, "k", &[FOREVER; 3]);
        check_waiters_answered(&got, ending, policy);
        assert_map_drained(&store);
        // Every stripe is free: a fresh key anywhere can be claimed.
        let Begin::Execute(claim) = store.begin(SCOPE, "other", A).expect("begin") else {
            panic!("a fresh key executes")
        };
        claim.complete(b"ok").expect("complete");
    });
}

/// (c) Bounded waits: callers with a short wait on a key whose holder does not finish while
/// they wait get in-progress when the wait runs out — they never hang and never execute.
/// When the holder may finish while they wait, they get in-progress or its response.
#[test]
fn bounded_wait() {
    explore("bounded_wait", || {
        let (store, _engine) = model_store(RecoveryPolicy::TakeOver);
        let holder_waits = thread_rng().gen_bool(0.5);
        let Begin::Execute(claim) = store.begin(SCOPE, "k", A).expect("begin") else {
            panic!("the first caller executes")
        };
        let waiters_done = Gate::new();
        let waits = [
            pick(&[Duration::ZERO, SHORT]),
            pick(&[Duration::ZERO, SHORT]),
        ];
        let got = shuttle::thread::scope(|scope| {
            let holder = scope.spawn(|| {
                if holder_waits {
                    waiters_done.wait();
                }
                claim.complete(b"done").expect("complete");
            });
            let waiters: Vec<_> = waits
                .iter()
                .map(|&wait| {
                    let store = &store;
                    scope.spawn(move || {
                        let options = BeginOptions::new().wait(wait);
                        match store.begin_with(SCOPE, "k", A, &options).expect("begin") {
                            Begin::InProgress(_) => Got::InProgress,
                            Begin::Replay(r) => Got::Replayed(r.response),
                            other => panic!("a waiter got {}", other.kind()),
                        }
                    })
                })
                .collect();
            let got: Vec<Got> = waiters
                .into_iter()
                .map(|w| w.join().expect("waiter"))
                .collect();
            waiters_done.open();
            holder.join().expect("holder");
            got
        });
        for g in &got {
            match g {
                Got::InProgress => {}
                Got::Replayed(r) if !holder_waits => assert_eq!(r, b"done"),
                other => panic!("waits {waits:?}, holder waits {holder_waits}: {other:?}"),
            }
        }
        assert_map_drained(&store);
    });
}

/// Two keys of one stripe of `map`, and the storage keys they stand for.
fn keys_in_one_stripe(map: &InflightMap) -> (String, String) {
    let first = "a".to_owned();
    let stripe = map.stripe(&storage_key(SCOPE, &first));
    let second = (0..)
        .map(|i| format!("b{i}"))
        .find(|k| std::ptr::eq(map.stripe(&storage_key(SCOPE, k)), stripe))
        .expect("some key shares the stripe");
    (first, second)
}

/// Whether a waiter was let in: woken by the slot's end, or (coming after it) finding the key
/// free.
fn let_in(entry: Entry) -> bool {
    matches!(entry, Entry::Released | Entry::Vacant(_))
}

/// (d) No cross-key wake, in the map: two keys in one stripe, a waiter on each; ending key
/// A's slot wakes A's waiter and never B's, which wakes once, when B's slot ends.
#[test]
fn no_cross_key_wake() {
    explore("no_cross_key_wake", || {
        let map = std::sync::Arc::new(InflightMap::new());
        let (a, b) = keys_in_one_stripe(&map);
        let (a, b) = (storage_key(SCOPE, &a), storage_key(SCOPE, &b));
        let far = || Instant::now() + FOREVER;
        let Entry::Vacant(slot_a) = map.enter(&a, A, far()) else {
            panic!("a is free")
        };
        let Entry::Vacant(slot_b) = map.enter(&b, A, far()) else {
            panic!("b is free")
        };
        if thread_rng().gen_bool(0.5) {
            slot_a.hold(A);
            slot_b.hold(A);
        }
        let b_slot = std::sync::Arc::clone(&slot_b.slot);
        let b_waiter_back = AtomicBool::new(false);
        shuttle::thread::scope(|scope| {
            let a_waiter = scope.spawn(|| let_in(map.enter(&a, A, far())));
            let b_waiter = scope.spawn(|| {
                let entry = map.enter(&b, A, far());
                b_waiter_back.store(true, Ordering::SeqCst);
                let_in(entry)
            });
            drop(slot_a);
            assert!(a_waiter.join().expect("a's waiter"), "a's waiter let in");
            assert!(
                !b_waiter_back.load(Ordering::SeqCst),
                "b's waiter left early"
            );
            assert_eq!(b_slot.changed.wakeups(), 0, "ending a woke b's waiter");
            drop(slot_b);
            assert!(b_waiter.join().expect("b's waiter"), "b's waiter let in");
        });
        assert!(
            b_slot.changed.wakeups() <= 1,
            "b's waiter woke more than once"
        );
        assert_eq!(map.len(), 0);
    });
}

/// (d) No cross-key wake, through the store: callers waiting on two keys of one stripe;
/// completing A answers A's waiter and leaves B's waiting until B completes.
#[test]
fn no_cross_key_wake_in_store() {
    explore("no_cross_key_wake_in_store", || {
        let (store, _engine) = model_store(RecoveryPolicy::TakeOver);
        // The map's hasher is the same in every map of a shuttle build.
        let (a, b) = keys_in_one_stripe(&InflightMap::new());
        let execute = |key: &str| match store.begin(SCOPE, key, A).expect("begin") {
            Begin::Execute(claim) => claim,
            other => panic!("{key} is free, got {}", other.kind()),
        };
        let (claim_a, claim_b) = (execute(&a), execute(&b));
        let b_waiter_back = AtomicBool::new(false);
        let begin = |key: &str| match store.begin(SCOPE, key, A).expect("begin") {
            Begin::Replay(r) => r.response,
            other => panic!("a waiter on {key} got {}", other.kind()),
        };
        shuttle::thread::scope(|scope| {
            let a_waiter = scope.spawn(|| begin(&a));
            let b_waiter = scope.spawn(|| {
                let got = begin(&b);
                b_waiter_back.store(true, Ordering::SeqCst);
                got
            });
            claim_a.complete(b"a").expect("complete a");
            assert_eq!(a_waiter.join().expect("a's waiter"), b"a");
            assert!(
                !b_waiter_back.load(Ordering::SeqCst),
                "b's waiter left early"
            );
            claim_b.complete(b"b").expect("complete b");
            assert_eq!(b_waiter.join().expect("b's waiter"), b"b");
        });
        assert_map_drained(&store);
    });
}

/// In-process waiting: a caller that waits long enough is never told in-progress while the
/// key is held only by callers in this process — also when callers with short waits run out
/// of time, ask the writer themselves and win the key. (A bug this found: such a caller
/// executed without a slot in the map, and the next caller was told in-progress at once.)
#[test]
fn long_waiter_never_in_progress() {
    explore("long_waiter_never_in_progress", || {
        let policy = pick(&[RecoveryPolicy::TakeOver, RecoveryPolicy::Strict]);
        let (store, _engine) = model_store(policy);
        let ending = pick(&[Ending::Complete, Ending::Release, Ending::Drop]);
        // The last caller has another request: it meets the others as a conflict, or holds
        // the key and makes them meet it so.
        let callers = Callers::new(store.clone(), ending, &[A, A, A, A, B]);
        let short = || pick(&[Duration::ZERO, SHORT]);
        let got = race(
            &callers,
            "k",
            &[short(), short(), FOREVER, FOREVER, FOREVER],
        );
        for (i, g) in got.iter().enumerate().skip(2) {
            assert_ne!(
                g,
                &Got::InProgress,
                "caller {i} waits for ever, {ending:?}: {got:?}"
            );
        }
        assert_map_drained(&store);
    });
}
