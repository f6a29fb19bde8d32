//! Faults below the engine, on a simulated disk (docs/reliability.md, scenarios 1, 2, 3, 5,
//! 6 and 22): a power cut at every sync point of a fixed workload, torn and garbled unsynced
//! writes, an I/O error at every mutating operation (once and for ever), a power cut while
//! recovering, a stalled sync, and a full disk.
//!
//! Each test prints its figures (crash points enumerated, operations checked, operations
//! lost) for the reliability report.
#![cfg(feature = "testing")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{T0, fp};
use idemdb::testing::{CrashMode, Persistence, SimStorage};
use idemdb::{
    Begin, BeginOptions, Error, ManualClock, Record, RecordState, Store, StoreBuilder, Timestamp,
};

/// What the workload did to one key, as far as its caller was told.
#[derive(Debug, Default, Clone)]
struct KeyLog {
    /// The claim was submitted / acknowledged (returned Execute).
    claim_sent: bool,
    claim_acked: bool,
    /// The second operation (complete or release) was submitted / acknowledged.
    end_sent: bool,
    end_acked: bool,
}

/// The plan for key `i`: complete it, release it, or leave it in flight.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    Complete,
    Release,
    LeaveInFlight,
}

fn plan(i: usize) -> Plan {
    match i % 3 {
        0 | 1 if i % 6 != 4 => Plan::Complete,
        2 => Plan::LeaveInFlight,
        _ => Plan::Release,
    }
}

const KEYS: usize = 12;

fn key(i: usize) -> String {
    format!("key-{i}")
}

fn response(i: usize) -> Vec<u8> {
    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "r".repeat(180)).into_bytes()
}

fn builder(clock: &ManualClock, two_phase: bool) -> StoreBuilder {
    idemdb::testing::small_store(clock).two_phase_commit(two_phase)
}

/// The fixed workload: claims and completions of [`KEYS`] keys, a fold in the middle (the
/// integrity check folds), and a replay. Stops at the first error, as a process whose disk
/// died would; returns what was acknowledged.
fn workload(store: &Store, log: &mut [KeyLog]) {
    workload_folding(store, log, true);
}

/// The workload, with or without its fold in the middle.
fn workload_folding(store: &Store, log: &mut [KeyLog], fold_midway: bool) {
    for (i, entry) in log.iter_mut().enumerate() {
        if fold_midway && i == KEYS / 2 && store.check().is_err() {
            return;
        }
        entry.claim_sent = true;
        let claim = match store.begin("s", &key(i), fp(&key(i))) {
            Ok(Begin::Execute(claim)) => claim,
            Ok(other) => panic!("key {i}: a fresh key answered {other:?}"),
            Err(_) => return,
        };
        entry.claim_acked = true;
        match plan(i) {
            Plan::Complete => {
                entry.end_sent = true;
                if claim.complete(response(i)).is_err() {
                    return;
                }
            }
            Plan::Release => {
                entry.end_sent = true;
                if claim.release().is_err() {
                    return;
                }
            }
            Plan::LeaveInFlight => {
                // Detached: the claim stays in flight, as if its holder were still working.
                // Detaching is a durable write; failing, it abandons the claim, which stays
                // in flight all the same.
                if claim.detach().is_err() {
                    return;
                }
                continue;
            }
        }
        entry.end_acked = true;
        if i == 0 && store.begin("s", &key(0), fp(&key(0))).is_err() {
            return;
        }
    }
}

/// Checks the reopened store against what was acknowledged; returns how many acknowledged
/// operations were checked. Panics, naming `context`, on a lost or invented operation.
fn verify(store: &Store, log: &[KeyLog], context: &str) -> u64 {
    let mut checked = 0;
    for (i, entry) in log.iter().enumerate() {
        let record: Option<Record> = store
            .get("s", &key(i))
            .unwrap_or_else(|e| panic!("{context}: reading key {i} failed: {e}"));
        let state = record.as_ref().map(Record::state);
        let finished = |state: Option<&RecordState>| match plan(i) {
            Plan::Complete => {
                matches!(state, Some(RecordState::Completed(c)) if c.response() == response(i))
            }
            Plan::Release => state.is_none(),
            Plan::LeaveInFlight => matches!(state, Some(RecordState::InFlight(_))),
        };
        let in_flight = matches!(state, Some(RecordState::InFlight(_)));
        let ok = if !entry.claim_sent {
            state.is_none()
        } else if !entry.claim_acked {
            state.is_none() || in_flight || (entry.end_sent && finished(state))
        } else if !entry.end_sent || !entry.end_acked {
            // Acknowledged claim, end unsent or unacknowledged: in flight or ended.
            in_flight || (entry.end_sent && finished(state))
        } else {
            finished(state)
        };
        assert!(
            ok,
            "{context}: key {i} ({:?}, {entry:?}) holds {record:?}",
            plan(i)
        );
        checked += u64::from(entry.claim_acked) + u64::from(entry.end_acked);
    }
    let report = store
        .check()
        .unwrap_or_else(|e| panic!("{context}: the integrity check failed: {e}"));
    assert!(report.is_healthy(), "{context}: {:?}", report.problems);
    checked
}

/// Runs the workload with a power cut at sync `k`, restarts the disk as `mode` says, and
/// returns the disk, the log, and whether the cut happened.
fn run_crashing_at(k: u64, two_phase: bool) -> (SimStorage, Vec<KeyLog>, bool) {
    let clock = ManualClock::new(T0);
    let disk = SimStorage::new();
    disk.crash_at_sync(k);
    let mut log = vec![KeyLog::default(); KEYS];
    if let Ok(store) = disk.open(builder(&clock, two_phase)) {
        workload(&store, &mut log);
        if !disk.is_dead() {
            let _ = store.close();
        }
    }
    let crashed = disk.is_dead();
    (disk, log, crashed)
}

fn reopen(disk: &SimStorage, two_phase: bool, context: &str) -> Store {
    disk.open(builder(&ManualClock::new(T0), two_phase))
        .unwrap_or_else(|e| panic!("{context}: reopening failed: {e}"))
}

/// Scenario 1 (and 2 without garbling): a power cut at every sync of the workload,
/// creation and close included; after each, every acknowledged operation is there and
/// nothing unsubmitted is.
fn crash_at_every_sync_point(two_phase: bool, torn: bool) {
    // Each torn seed tears every crash point's unsynced writes differently.
    let seeds = if torn {
        common::env_number("IDEMDB_TORN_SEEDS", 1)
    } else {
        1
    };
    let mut points = 0;
    let mut checked = 0;
    for k in 1.. {
        let mut crashed_any = false;
        for seed in 0..seeds {
            let (disk, log, crashed) = run_crashing_at(k, two_phase);
            if !crashed {
                break;
            }
            crashed_any = true;
            points += 1;
            let mode = if torn {
                CrashMode::Torn {
                    seed: k * 1000 + seed,
                }
            } else {
                CrashMode::Durable
            };
            disk.power_cut(mode);
            let context = format!("power cut at sync {k} ({mode:?}, two-phase {two_phase})");
            let store = reopen(&disk, two_phase, &context);
            checked += verify(&store, &log, &context);
            store.close().expect("close after the check");
        }
        if !crashed_any {
            break;
        }
    }
    eprintln!(
        "crash points (two-phase {two_phase}, torn {torn}): {points} enumerated, \
         {checked} acknowledged operations checked, 0 lost"
    );
    assert!(points > 2 * KEYS as u64, "only {points} sync points");
}

#[test]
fn s01_power_cut_at_every_sync_point_loses_nothing_acknowledged() {
    crash_at_every_sync_point(false, false);
}

#[test]
fn s01_power_cut_at_every_sync_point_under_two_phase_commit() {
    crash_at_every_sync_point(true, false);
}

#[test]
fn s02_torn_and_reordered_unsynced_writes_lose_nothing_acknowledged() {
    crash_at_every_sync_point(false, true);
    crash_at_every_sync_point(true, true);
}

#[test]
fn s02_garbled_sectors_recover_or_fail_typed_never_open_empty() {
    let seeds = common::env_number("IDEMDB_GARBLE_SEEDS", 2);
    let (mut recovered, mut refused, mut points) = (0, 0, 0);
    for k in 1.. {
        let mut crashed_any = false;
        for seed in 0..seeds {
            let (disk, log, crashed) = run_crashing_at(k, false);
            if !crashed {
                break;
            }
            crashed_any = true;
            points += 1;
            disk.power_cut(CrashMode::Garbled {
                seed: k * 1000 + seed,
            });
            let context = format!("garbled power cut at sync {k}, seed {seed}");
            match disk.open(builder(&ManualClock::new(T0), false)) {
                Ok(store) => {
                    verify(&store, &log, &context);
                    store.close().expect("close");
                    recovered += 1;
                }
                Err(
                    e @ (Error::Corrupt { .. }
                    | Error::NotAStore { .. }
                    | Error::EmptyFile { .. }
                    | Error::Storage(_)),
                ) => {
                    eprintln!("{context}: refused: {e}");
                    refused += 1;
                }
                Err(e) => panic!("{context}: an untyped failure: {e:?}"),
            }
        }
        if !crashed_any {
            break;
        }
    }
    eprintln!(
        "garbled crashes: {points} images, {recovered} recovered everything acknowledged, \
         {refused} refused with a typed error, 0 opened with an acknowledged operation missing"
    );
    assert!(recovered > 0);
}

/// Scenario 5: a power cut during recovery (at each of the recovering open's syncs), then
/// a clean recovery: nothing acknowledged is lost.
#[test]
fn s05_power_cut_during_recovery_then_recovery_loses_nothing() {
    let mut points = 0;
    for k in (3..).step_by(4) {
        let (disk, log, crashed) = run_crashing_at(k, false);
        if !crashed {
            break;
        }
        for j in 1..=6 {
            disk.power_cut(CrashMode::Torn { seed: k + j });
            // The recovering open dies at its j-th sync (the fold of the journal, the
            // checkpoint), or not at all when it needs fewer.
            disk.crash_at_sync(j);
            let context = format!("power cut at sync {k}, then at recovery sync {j}");
            match disk.open(builder(&ManualClock::new(T0), false)) {
                Ok(store) => {
                    if disk.is_dead() {
                        drop(store);
                    } else {
                        verify(&store, &log, &context);
                        drop(store);
                    }
                }
                Err(e) => assert!(disk.is_dead(), "{context}: {e}"),
            }
            points += 1;
            disk.power_cut(CrashMode::Torn { seed: k * 7 + j });
            let store = reopen(&disk, false, &context);
            verify(&store, &log, &context);
            store.close().expect("close");
        }
    }
    eprintln!("crash during recovery: {points} points, 0 lost");
    assert!(points > 10);
}

/// Scenario 3: an I/O error at every mutating operation of the workload, once and for
/// ever (a failed fsync included): no failing call is told "ok", the store carries on after
/// a transient error (and after a persistent one once the device heals), and everything
/// acknowledged survives a power cut afterwards.
fn io_error_at_every_operation(persistence: Persistence, drop_failed_sync: bool) {
    // How many mutating operations the workload makes after the open.
    let total = {
        let disk = SimStorage::new();
        let store = disk
            .open(builder(&ManualClock::new(T0), false))
            .expect("open");
        let before = disk.mutations();
        workload(&store, &mut vec![KeyLog::default(); KEYS]);
        disk.mutations() - before
    };
    let mut checked = 0;
    for n in 1..=total {
        let clock = ManualClock::new(T0);
        let disk = SimStorage::new();
        let store = disk.open(builder(&clock, false)).expect("open");
        disk.drop_writes_on_failed_sync(drop_failed_sync);
        disk.fail_after(n, persistence);
        let mut log = vec![KeyLog::default(); KEYS];
        workload(&store, &mut log);
        if persistence == Persistence::Forever {
            disk.heal();
        }
        // The store carries on: a fresh key executes and completes. (After a failed reopen,
        // readers wait 100 ms before trying the database again, and a loaded machine is
        // slow: allow up to 20 s.)
        let context = format!("I/O error ({persistence:?}) at operation {n} of {total}");
        let mut answer = None;
        for _ in 0..1000 {
            match store.begin("s", "after", fp("after")) {
                Ok(Begin::Execute(claim)) => {
                    answer = Some(claim);
                    break;
                }
                Ok(other) => panic!("{context}: after the error, a fresh key answered {other:?}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let fresh = answer.unwrap_or_else(|| panic!("{context}: the store never carried on"));
        fresh
            .complete(b"ok")
            .unwrap_or_else(|e| panic!("{context}: completing after the error: {e:?}"));
        // Whatever was acknowledged is durable: cut the power and look.
        disk.power_cut(CrashMode::Durable);
        drop(store);
        let store = reopen(&disk, false, &context);
        checked += verify(&store, &log, &context);
        assert!(store.get("s", "after").expect("get").is_some(), "{context}");
        store.close().expect("close");
    }
    eprintln!(
        "I/O errors ({persistence:?}): {total} failure points, {checked} acknowledged \
         operations checked, 0 lost"
    );
}

#[test]
fn s03_io_error_once_at_every_operation() {
    io_error_at_every_operation(Persistence::Once, false);
}

#[test]
fn s03_io_error_for_ever_from_every_operation() {
    io_error_at_every_operation(Persistence::Forever, false);
}

/// Linux marks the pages of a failed fsync clean: a later sync never writes them. After
/// such a failure during a fold, redb's next commit would build on pages that never reach
/// the disk, and a power cut would leave a database redb refuses ("Primary is corrupted").
/// The store writes them again before its next sync; this proves it at every operation.
#[test]
fn s03_a_failed_fsync_that_drops_its_writes_loses_nothing() {
    io_error_at_every_operation(Persistence::Once, true);
}

/// As above, with every operation failing until the device heals: the writes kept across
/// many failed syncs and reopens all reach the disk once it works again.
#[test]
fn s03_failed_fsyncs_that_drop_their_writes_until_the_device_heals_lose_nothing() {
    io_error_at_every_operation(Persistence::Forever, true);
}

/// Expired records the sweep test sweeps.
const EXPIRED: usize = 40;

/// A store holding [`EXPIRED`] expired records, half folded into redb (found through the
/// expiry index) and half still journaled (found in the memtable), sweeping 16 per batch so
/// a sweep takes several passes of several pieces each.
fn store_with_expired_records() -> (SimStorage, Store) {
    let clock = ManualClock::new(T0);
    let disk = SimStorage::new();
    let store = disk
        .open(builder(&clock, false).sweep_batch(16))
        .expect("open");
    let short = BeginOptions::new().retention(Duration::from_secs(1));
    for i in 0..EXPIRED {
        if i == EXPIRED / 2 {
            assert!(store.check().expect("check").is_healthy());
        }
        match store
            .begin_with("old", &key(i), fp(&key(i)), &short)
            .expect("begin")
        {
            Begin::Execute(claim) => claim.complete(b"old").expect("complete"),
            other => panic!("{other:?}"),
        };
    }
    clock.advance(Duration::from_secs(2));
    (disk, store)
}

/// A sweep (which may fail), then the workload without its fold: a fold would make what
/// came before it durable in redb, and close the window this looks into.
fn sweep_then_workload(store: &Store, log: &mut [KeyLog]) {
    let _ = store.sweep_now();
    workload_folding(store, log, false);
}

/// Scenario 3 for sweeps: the frames of a sweep pass are synced once, at the end of the
/// pass, so a failed sync that drops its writes can take frames written before it, under
/// frames a later sync makes durable. At every mutating operation of a sweep and the
/// workload after it, fail once and drop the failed sync's writes: after a power cut,
/// everything acknowledged is there and no expired record is back.
#[test]
fn s03_a_failed_sync_that_drops_a_sweeps_frames_loses_nothing_after_it() {
    let total = {
        let (disk, store) = store_with_expired_records();
        let before = disk.mutations();
        assert_eq!(store.sweep_now().expect("sweep"), EXPIRED as u64);
        workload_folding(&store, &mut vec![KeyLog::default(); KEYS], false);
        disk.mutations() - before
    };
    let later = Timestamp::from_millis(T0.as_millis() + 2_000);
    let mut checked = 0;
    for n in 1..=total {
        let (disk, store) = store_with_expired_records();
        disk.drop_writes_on_failed_sync(true);
        disk.fail_after(n, Persistence::Once);
        let mut log = vec![KeyLog::default(); KEYS];
        sweep_then_workload(&store, &mut log);
        let context = format!("I/O error at operation {n} of {total} of a sweep and after");
        disk.power_cut(CrashMode::Durable);
        drop(store);
        let store = disk
            .open(builder(&ManualClock::new(later), false).sweep_batch(16))
            .unwrap_or_else(|e| panic!("{context}: reopening failed: {e}"));
        checked += verify(&store, &log, &context);
        for i in 0..EXPIRED {
            assert!(
                store.get("old", &key(i)).expect("get").is_none(),
                "{context}: the expired key {i} is back"
            );
        }
        let swept = store.sweep_now().expect("sweep after reopening");
        assert!(swept <= EXPIRED as u64, "{context}: swept {swept}");
        store.close().expect("close");
    }
    eprintln!(
        "failed syncs dropping a sweep's frames: {total} failure points, {checked} acknowledged \
         operations checked, 0 lost"
    );
    assert!(
        total > 20,
        "the sweep and workload made only {total} mutations"
    );
}

/// A fresh simulated store holding one completed key, ("s", "done") → "stored".
fn store_with_one_completed_key() -> (SimStorage, Store) {
    let disk = SimStorage::new();
    let store = disk
        .open(builder(&ManualClock::new(T0), false))
        .expect("open");
    match store.begin("s", "done", fp("done")).expect("begin") {
        Begin::Execute(c) => c.complete(b"stored").expect("complete"),
        other => panic!("{other:?}"),
    };
    (disk, store)
}

/// Scenario 6: a sync held open: no caller is acknowledged early, replays are still
/// served, and once the sync goes through everyone is answered.
#[test]
fn s06_a_stalled_sync_acknowledges_nobody_early_and_replays_go_on() {
    let (disk, store) = store_with_one_completed_key();

    disk.stall_syncs();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = {
        let store = store.clone();
        std::thread::spawn(move || {
            let answer = store.begin("s", "new", fp("new"));
            tx.send(()).expect("send");
            answer
        })
    };
    assert!(
        disk.wait_for_stalled_sync(),
        "the claim never reached the sync"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a claim was acknowledged before its sync"
    );
    // Replays need no sync.
    match store.begin("s", "done", fp("done")).expect("replay") {
        Begin::Replay(r) => assert_eq!(r.response, b"stored"),
        other => panic!("{other:?}"),
    }
    disk.release_syncs();
    match waiting.join().expect("join").expect("begin") {
        Begin::Execute(c) => c.release().expect("release"),
        other => panic!("{other:?}"),
    }
    store.close().expect("close");
}

/// Scenario 6: the store dropped while callers hold claims and the writer is stalled:
/// nothing hangs, and what was acknowledged survives.
#[test]
fn s06_dropping_the_store_while_a_sync_is_stalled_hangs_nothing() {
    let clock = ManualClock::new(T0);
    let disk = SimStorage::new();
    let store = disk.open(builder(&clock, false)).expect("open");
    let mut log = vec![KeyLog::default(); KEYS];
    workload(&store, &mut log);
    disk.stall_syncs();
    let worker = {
        let store = store.clone();
        std::thread::spawn(move || store.begin("s", "late", fp("late")).map(|b| b.kind()))
    };
    assert!(disk.wait_for_stalled_sync());
    // Power fails while the sync is held: the waiting caller gets an error, never "ok".
    disk.power_off();
    disk.release_syncs();
    let answer = worker.join().expect("join");
    assert!(
        answer.is_err(),
        "a caller was acknowledged by a dead disk: {answer:?}"
    );
    drop(store);
    disk.power_cut(CrashMode::Durable);
    let store = reopen(&disk, false, "after a stalled sync and a power cut");
    verify(&store, &log, "after a stalled sync and a power cut");
    assert!(store.get("s", "late").expect("get").is_none());
}

/// Scenario 22: a full disk on the simulated device: typed errors, replays still served,
/// writes resume once space returns, nothing acknowledged lost.
#[test]
fn s22_a_full_disk_fails_typed_and_resumes_when_space_returns() {
    let (disk, store) = store_with_one_completed_key();
    let sizes: BTreeMap<&str, u64> = [
        (
            "db",
            disk.live_bytes(idemdb::testing::StorageRole::Database)
                .len() as u64,
        ),
        (
            "journal",
            disk.live_bytes(idemdb::testing::StorageRole::Journal).len() as u64,
        ),
    ]
    .into();
    // No file may grow any more.
    disk.set_capacity(Some(sizes.values().copied().max().unwrap_or(0)));
    let mut acked = Vec::new();
    let mut full = None;
    for i in 0..20_000 {
        let k = format!("fill-{i}");
        match store.begin("s", &k, fp(&k)) {
            Ok(Begin::Execute(c)) => match c.complete(vec![b'z'; 2000]) {
                Ok(_) => acked.push(k),
                Err(e) => {
                    full = Some(e.error);
                    break;
                }
            },
            Ok(other) => panic!("{other:?}"),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let error = full.expect("the disk never filled");
    assert!(
        matches!(
            error,
            Error::StorageFull(_) | Error::Io(_) | Error::Storage(_)
        ),
        "untyped: {error:?}"
    );
    match store
        .begin("s", "done", fp("done"))
        .expect("replay while full")
    {
        Begin::Replay(r) => assert_eq!(r.response, b"stored"),
        other => panic!("{other:?}"),
    }
    disk.set_capacity(None);
    let mut resumed = false;
    for _ in 0..1000 {
        if let Ok(Begin::Execute(c)) = store.begin("s", "after", fp("after")) {
            c.complete(b"ok").expect("complete once space returned");
            resumed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(resumed, "writes never resumed");
    disk.power_cut(CrashMode::Durable);
    drop(store);
    let store = reopen(&disk, false, "after a full disk");
    for k in &acked {
        assert!(store.get("s", k).expect("get").is_some(), "lost {k}");
    }
    eprintln!(
        "full disk: {} writes acknowledged before it filled, 0 lost",
        acked.len()
    );
}
