//! What a short command-line process costs: `idemdb run -- true` on a fresh key against the
//! bare `true`, the fdatasync calls one run makes, 20 runs on 20 keys at once, and how long
//! the library takes to open the store, on an empty and on prefilled stores.
//!
//! `cargo bench -p idemdb-cli --bench cli` (release build). Settings, from the environment:
//! - `IDEMDB_BENCH_SIZES`: store sizes in records, comma-separated (default `0,1000000`);
//! - `IDEMDB_BENCH_DIR`: where the prefilled stores are kept and reused between runs
//!   (default a fresh temporary directory);
//! - `IDEMDB_BENCH_RUNS`: timed runs per figure (default 15).
//!
//! The fdatasync count needs `strace` on the PATH (otherwise it prints `-`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use idemdb::{Durability, Fingerprint, Record, Store, Timestamp};

const BIN: &str = env!("CARGO_BIN_EXE_idemdb");

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let sizes: Vec<u64> = env_or("IDEMDB_BENCH_SIZES", "0,1000000")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = env_or("IDEMDB_BENCH_RUNS", "15").parse().unwrap_or(15);
    let temp = tempfile::tempdir().expect("temporary directory");
    let dir = std::env::var_os("IDEMDB_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir).expect("bench directory");

    println!(
        "| records | `true` median | `idemdb run -- true` median | overhead | fdatasync per run | 20 at once (wall) | library open |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &records in &sizes {
        let path = dir.join(format!("bench-{records}.idemdb"));
        prepare(&path, records);
        let mut bare = Vec::new();
        let mut run = Vec::new();
        // Warm the page cache and let a first session settle the files.
        time_run(&path, "warm-up");
        for i in 0..runs {
            bare.push(time(Command::new("true")));
            run.push(time_run(&path, &format!("fresh-{}-{i}", nanos())));
        }
        let bare = median(bare);
        let run = median(run);
        let syncs = fdatasyncs(&path);
        let parallel = twenty_at_once(&path);
        let open = library_open(&path);
        println!(
            "| {records} | {} | {} | {} | {} | {} | {} |",
            ms(bare),
            ms(run),
            ms(run.saturating_sub(bare)),
            syncs.map_or("-".to_owned(), |n| n.to_string()),
            ms(parallel),
            ms(open),
        );
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Creates the store with `records` completed records (once: an existing file is reused),
/// written through the library without syncs, then closed cleanly.
fn prepare(path: &Path, records: u64) {
    if path.exists() {
        return;
    }
    let started = Instant::now();
    let store = Store::builder()
        .sweep_interval(None)
        .durability(Durability::None)
        .open(path)
        .expect("create the bench store");
    let now = store.now().as_millis();
    let expires = Some(Timestamp::from_millis(now + 365 * 24 * 3600 * 1000));
    for i in 0..records {
        let key = format!("prefill-{i:08}");
        let record = Record::builder(Fingerprint::of(key.as_bytes()), Timestamp::from_millis(now))
            .expires_at(expires)
            .completed(Timestamp::from_millis(now), b"exit 0\n".to_vec());
        store
            .import("default", &key, record, false)
            .expect("prefill");
    }
    store.close().expect("close the bench store");
    eprintln!(
        "prefilled {} with {records} records in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
}

fn run_command(path: &Path, key: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--db")
        .arg(path)
        .args(["--key", key, "--", "true"]);
    cmd
}

fn time(mut cmd: Command) -> Duration {
    let started = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start");
    assert!(status.success(), "{cmd:?}: {status}");
    started.elapsed()
}

fn time_run(path: &Path, key: &str) -> Duration {
    time(run_command(path, key))
}

/// fdatasync and fsync calls of one run on a fresh key, counted by strace.
fn fdatasyncs(path: &Path) -> Option<u64> {
    let out = tempfile::NamedTempFile::new().ok()?;
    let status = Command::new("strace")
        .args(["-f", "-c", "-e", "trace=fdatasync,fsync", "-o"])
        .arg(out.path())
        .arg(BIN)
        .arg("run")
        .arg("--db")
        .arg(path)
        .args(["--key", &format!("strace-{}", nanos()), "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let summary = std::fs::read_to_string(out.path()).ok()?;
    Some(
        summary
            .lines()
            .filter(|l| l.ends_with("fdatasync") || l.ends_with("fsync"))
            .filter_map(|l| l.split_whitespace().rev().nth(1)?.parse::<u64>().ok())
            .sum(),
    )
}

/// Wall time of 20 runs on 20 fresh keys started at once.
fn twenty_at_once(path: &Path) -> Duration {
    let round = nanos();
    let started = Instant::now();
    let children: Vec<_> = (0..20)
        .map(|i| {
            run_command(path, &format!("parallel-{round}-{i}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start")
        })
        .collect();
    for mut child in children {
        let status = child.wait().expect("wait");
        assert!(status.success(), "a parallel run failed: {status}");
    }
    started.elapsed()
}

/// How long `Store::open` takes on the store (closed cleanly just before), the median of 5.
fn library_open(path: &Path) -> Duration {
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let store = Store::builder()
            .sweep_interval(None)
            .open(path)
            .expect("open");
        times.push(started.elapsed());
        store.close().expect("close");
    }
    median(times)
}
