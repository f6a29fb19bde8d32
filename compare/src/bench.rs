//! Drives one system through the prefill and the workloads, behind an object-safe trait so
//! the main loop can interleave systems (run 1 of every system, then run 2, …).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::keys::KeyStream;
use crate::report::{Row, Value};
use crate::system::{SweepSupport, System};
use crate::workloads::{self, Config, now_ms};

/// A workload selectable with `--workloads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// One thread, claim + complete.
    W1,
    /// Many threads, claim + complete on distinct keys.
    W2,
    /// One thread, replays.
    W3,
    /// Sweep of expired records.
    W4,
    /// Many threads race one key.
    W5,
}

impl Workload {
    /// All workloads, in order.
    pub const ALL: [Workload; 5] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
    ];

    /// Parses `W1` … `W5` (any case).
    pub fn parse(text: &str) -> Option<Workload> {
        match text.trim().to_ascii_uppercase().as_str() {
            "W1" => Some(Workload::W1),
            "W2" => Some(Workload::W2),
            "W3" => Some(Workload::W3),
            "W4" => Some(Workload::W4),
            "W5" => Some(Workload::W5),
            _ => None,
        }
    }
}

/// One system as the main loop sees it.
pub trait Bench {
    /// The system's name (a `--systems` value and a table column).
    fn name(&self) -> &'static str;
    /// Version and settings, for the report.
    fn describe(&self) -> String;
    /// Fills the store with `config.records` completed records; returns how long it took.
    fn prefill(&mut self, config: &Config) -> Result<Duration>;
    /// Runs one workload once; returns the rows it measured.
    fn measure(
        &mut self,
        workload: Workload,
        config: &Config,
        run: u32,
    ) -> Result<Vec<(Row, Value)>>;
    /// Anything to print after the table.
    fn notes(&self) -> Option<String>;
}

/// A [`System`] with its name.
pub struct Driver<S: System> {
    name: &'static str,
    system: S,
}

impl<S: System> Driver<S> {
    /// Wraps a system.
    pub fn new(name: &'static str, system: S) -> Driver<S> {
        Driver { name, system }
    }
}

impl<S: System> Bench for Driver<S> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn describe(&self) -> String {
        self.system.describe()
    }

    fn prefill(&mut self, config: &Config) -> Result<Duration> {
        let started = Instant::now();
        self.system
            .prefill(KeyStream::new(config.seed, 0), config.records, now_ms())
            .with_context(|| format!("{}: prefill", self.name))?;
        Ok(started.elapsed())
    }

    fn measure(
        &mut self,
        workload: Workload,
        config: &Config,
        run: u32,
    ) -> Result<Vec<(Row, Value)>> {
        self.system.set_time(now_ms());
        let name = self.name;
        let context = move || format!("{name}: {workload:?} (run {run})");
        Ok(match workload {
            Workload::W1 => {
                let rate = workloads::w1::run(&self.system, config, run).with_context(context)?;
                vec![(Row::W1, Value::Num(rate))]
            }
            Workload::W2 => {
                let mut rows = Vec::new();
                for &threads in &config.w2_threads {
                    let rate = workloads::w2::run(&self.system, config, run, threads)
                        .with_context(context)?;
                    rows.push((Row::W2(threads), Value::Num(rate)));
                }
                rows
            }
            Workload::W3 => {
                let rate =
                    workloads::w3::run(&mut self.system, config, run).with_context(context)?;
                vec![(Row::W3, Value::Num(rate))]
            }
            Workload::W4 => match self.system.sweep_support() {
                SweepSupport::NotApplicable(why) => vec![
                    (Row::W4Sweep, Value::NotApplicable(why)),
                    (Row::W4Stall, Value::NotApplicable(why)),
                ],
                SweepSupport::Supported => {
                    let sweep =
                        workloads::w4::run(&mut self.system, config, run).with_context(context)?;
                    vec![
                        (Row::W4Sweep, Value::Num(sweep.records_per_second)),
                        (
                            Row::W4Stall,
                            Value::Num(sweep.max_stall.as_secs_f64() * 1e3),
                        ),
                    ]
                }
            },
            Workload::W5 => {
                let micros = workloads::w5::run(&self.system, config, run).with_context(context)?;
                vec![(Row::W5, Value::Num(micros))]
            }
        })
    }

    fn notes(&self) -> Option<String> {
        self.system.notes()
    }
}
