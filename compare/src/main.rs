//! # idemdb-compare
//!
//! Runs the idempotent-request workloads W1–W5 against idemdb and the systems users would
//! hand-roll instead — redb used directly, SQLite (WAL; `synchronous=FULL` and `NORMAL`),
//! Redis (`appendfsync always`) and PostgreSQL (`fsync=on`, `synchronous_commit=on`) — in
//! one run, checks every answer, and prints one table of medians with idemdb's ratios.
//!
//! ```sh
//! cargo run --release -p idemdb-compare -- --records 0 --runs 3
//! cargo run --release -p idemdb-compare -- --records 5000000 --runs 3
//! ```
//!
//! Redis and PostgreSQL are used only if their servers are installed; the benchmark starts
//! private instances on 127.0.0.1 (data in a temporary directory) and stops them at the
//! end. See `--help` for every option.

mod bench;
mod keys;
mod report;
mod servers;
mod system;
mod systems;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use crate::bench::{Bench, Driver, Workload};
use crate::report::{Results, Row, Value};
use crate::servers::postgres::PostgresServer;
use crate::servers::redis::RedisServer;
use crate::systems::idemdb::{DEFAULT_SWEEP_BATCH, PrefillMethod};
use crate::workloads::{Config, now_ms};

/// The systems that can be compared, in column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum SystemName {
    /// idemdb, default settings (durable).
    Idemdb,
    /// redb used directly.
    Redb,
    /// SQLite, WAL, synchronous=FULL.
    SqliteFull,
    /// SQLite, WAL, synchronous=NORMAL.
    SqliteNormal,
    /// Redis, appendfsync always (if redis-server is installed).
    Redis,
    /// PostgreSQL, fsync and synchronous_commit on (if installed).
    Postgres,
}

impl SystemName {
    fn label(self) -> &'static str {
        match self {
            SystemName::Idemdb => "idemdb",
            SystemName::Redb => "redb",
            SystemName::SqliteFull => "sqlite-full",
            SystemName::SqliteNormal => "sqlite-normal",
            SystemName::Redis => "redis",
            SystemName::Postgres => "postgres",
        }
    }
}

/// Compare idemdb with SQLite, Redis, PostgreSQL and redb used directly, on the
/// idempotent-request workloads W1–W5, at the same durability, in one run.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Completed records in every store before measuring: 0 measures fresh stores; the
    /// issue's goals also hold at 5000000.
    #[arg(long, default_value_t = 0)]
    records: u64,
    /// Seconds per measurement of W1, W2, W3 and W5.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Runs of every workload; the table shows medians and the spread.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Workloads to run (default all): W1,W2,W3,W4,W5.
    #[arg(long, value_delimiter = ',', visible_alias = "only")]
    workloads: Vec<String>,
    /// Systems to run (default all; Redis and PostgreSQL only if installed).
    #[arg(long, value_delimiter = ',', value_enum)]
    systems: Vec<SystemName>,
    /// Thread counts of W2.
    #[arg(long, value_delimiter = ',', default_values_t = [16usize, 64], visible_alias = "w2-threads")]
    threads: Vec<usize>,
    /// Expired records W4 sweeps in each run.
    #[arg(long, default_value_t = 50_000)]
    expiring: u64,
    /// Threads racing for each key in W5.
    #[arg(long, default_value_t = 16)]
    w5_threads: usize,
    /// W5 stops after this many rounds even if time is left.
    #[arg(long, default_value_t = 20_000)]
    w5_max_rounds: u64,
    /// Seed of every key.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the temporary data directory is created (default: the system's temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the table, machine and command as markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// PostgreSQL's bin directory (default: newest /usr/lib/postgresql/*/bin, then PATH).
    #[arg(long)]
    pg_bin: Option<PathBuf>,
    /// Records per sweep batch (synced once) of idemdb (`StoreBuilder::sweep_batch`;
    /// the default is the store's own).
    #[arg(long, default_value_t = DEFAULT_SWEEP_BATCH)]
    idemdb_sweep_batch: usize,
    /// How idemdb's prefill writes records (both through the public API).
    #[arg(long, value_enum, default_value_t = PrefillMethod::Import)]
    idemdb_prefill: PrefillMethod,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// An error once Ctrl-C was pressed, so loops end and every guard runs.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            eprintln!("the run FAILED; no table was printed");
            ExitCode::FAILURE
        }
    }
}

/// The command line as typed (quoted where needed).
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(args: Args) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be positive");
    }
    if args.threads.contains(&0) || args.w5_threads < 2 {
        bail!("W2 needs at least 1 thread, W5 at least 2");
    }
    let workloads: Vec<Workload> = if args.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        let mut chosen = args
            .workloads
            .iter()
            .map(|w| {
                Workload::parse(w)
                    .with_context(|| format!("--workloads: unknown workload {w:?} (W1…W5)"))
            })
            .collect::<Result<Vec<_>>>()?;
        chosen.sort();
        chosen.dedup();
        chosen
    };
    let mut names = if args.systems.is_empty() {
        SystemName::value_variants().to_vec()
    } else {
        args.systems.clone()
    };
    names.sort();
    names.dedup();
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("interrupted: stopping after the current step (press again to quit at once, leaving servers running)");
    })
    .context("installing the Ctrl-C handler")?;

    let config = Config {
        seed: args.seed,
        duration: Duration::from_secs_f64(args.seconds),
        records: args.records,
        expiring: args.expiring,
        w2_threads: args.threads.clone(),
        w5_threads: args.w5_threads,
        w5_max_rounds: args.w5_max_rounds,
    };
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    // Declared before the systems, so it is removed after their servers have stopped.
    let data = tempfile::Builder::new()
        .prefix("idemdb-compare-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a data directory in {}", parent.display()))?;

    let mut header = vec![format!("command: {}", command_line())];
    header.extend(report::machine(data.path()));
    header.push(format!(
        "settings: {} prefilled records, {} s per measurement, {} run(s), {} expired records per sweep, seed {}",
        report::group(args.records as f64, 0),
        args.seconds,
        args.runs,
        report::group(args.expiring as f64, 0),
        args.seed
    ));
    for line in &header {
        println!("{line}");
    }

    let (mut benches, skipped) = start_systems(&names, &args, data.path())?;
    let mut descriptions = Vec::new();
    for bench in &benches {
        descriptions.push(format!("{}: {}", bench.name(), bench.describe()));
    }
    for line in descriptions.iter().chain(&skipped) {
        println!("  {line}");
    }

    let mut results = Results::default();
    for bench in benches.iter_mut().filter(|_| args.records > 0) {
        eprintln!("prefilling {} with {} records…", bench.name(), args.records);
        let took = bench.prefill(&config)?;
        eprintln!(
            "  {}: prefill took {:.1} s",
            bench.name(),
            took.as_secs_f64()
        );
        results.add(Row::Prefill, bench.name(), Value::Num(took.as_secs_f64()));
    }
    for run in 1..=args.runs {
        for &workload in &workloads {
            for bench in &mut benches {
                check_interrupted()?;
                let rows = bench.measure(workload, &config, run)?;
                for (row, value) in rows {
                    if let Value::Num(v) = value {
                        eprintln!(
                            "  run {run}/{}: {:<14} {}: {}",
                            args.runs,
                            bench.name(),
                            row.label(args.records, args.w5_threads),
                            report::group(v, if v < 100.0 { 2 } else { 0 })
                        );
                    }
                    results.add(row, bench.name(), value);
                }
            }
        }
    }
    let notes: Vec<String> = benches.iter().filter_map(|b| b.notes()).collect();
    let columns: Vec<&'static str> = benches.iter().map(|b| b.name()).collect();
    // Stop the servers now, before printing.
    drop(benches);

    let table = report::table(
        &results,
        &columns,
        args.records,
        args.w5_threads,
        args.idemdb_sweep_batch,
    );
    let load_end = format!("load average at the end: {}", report::load_average());
    println!();
    print!("{}", table.text());
    println!("{load_end}");
    for note in &notes {
        println!("{note}");
    }
    if let Some(path) = &args.markdown {
        let mut md = String::new();
        for line in header.iter().chain(&descriptions).chain(&skipped) {
            md.push_str(&format!("- {line}\n"));
        }
        md.push('\n');
        md.push_str(&table.markdown());
        md.push_str(&format!("\n{load_end}\n"));
        for note in &notes {
            md.push_str(&format!("\n{note}\n"));
        }
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
        println!("markdown written to {}", path.display());
    }
    Ok(())
}

/// The systems opened, and a line for each one skipped saying why.
type Started = (Vec<Box<dyn Bench>>, Vec<String>);

/// Opens every chosen system (starting private servers); the second list says which were
/// skipped and why.
fn start_systems(names: &[SystemName], args: &Args, dir: &std::path::Path) -> Result<Started> {
    use crate::systems::{idemdb::Idemdb, postgres::Postgres, redb::Redb, redis::Redis, sqlite};
    let mut benches: Vec<Box<dyn Bench>> = Vec::new();
    let mut skipped = Vec::new();
    for &name in names {
        let label = name.label();
        match name {
            SystemName::Idemdb => benches.push(Box::new(Driver::new(
                label,
                Idemdb::open(
                    dir.join("idemdb.idemdb"),
                    now_ms(),
                    args.idemdb_prefill,
                    args.idemdb_sweep_batch,
                )?,
            ))),
            SystemName::Redb => {
                benches.push(Box::new(Driver::new(label, Redb::open(&dir.join("redb.redb"))?)));
            }
            SystemName::SqliteFull => benches.push(Box::new(Driver::new(
                label,
                sqlite::Sqlite::open(&dir.join("sqlite-full.db"), sqlite::Sync::Full)?,
            ))),
            SystemName::SqliteNormal => benches.push(Box::new(Driver::new(
                label,
                sqlite::Sqlite::open(&dir.join("sqlite-normal.db"), sqlite::Sync::Normal)?,
            ))),
            SystemName::Redis => match RedisServer::find() {
                None => skipped.push(format!(
                    "{label}: SKIPPED, redis-server is not installed (not on PATH)"
                )),
                Some(binary) => {
                    eprintln!("starting a private redis-server ({})…", binary.display());
                    let server = RedisServer::start(&binary, &dir.join("redis"))?;
                    benches.push(Box::new(Driver::new(label, Redis::new(server)?)));
                }
            },
            SystemName::Postgres => match PostgresServer::find(args.pg_bin.as_deref()) {
                None => skipped.push(format!(
                    "{label}: SKIPPED, PostgreSQL is not installed (no initdb/pg_ctl/postgres in {})",
                    args.pg_bin.as_deref().map_or_else(
                        || "/usr/lib/postgresql/*/bin or on PATH".to_owned(),
                        |p| p.display().to_string()
                    )
                )),
                Some(bin) => {
                    eprintln!("starting a private PostgreSQL ({})…", bin.display());
                    let server = PostgresServer::start(&bin, &dir.join("postgres"))?;
                    benches.push(Box::new(Driver::new(label, Postgres::new(server)?)));
                }
            },
        }
    }
    Ok((benches, skipped))
}
