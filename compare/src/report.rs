//! The results: medians of the runs, one table (rows = measurements, columns = systems,
//! then idemdb's ratios), as plain text for the terminal and as markdown for a file; and
//! the machine the run was on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Row {
    /// W1 cycles/s.
    W1,
    /// W2 cycles/s with this many threads.
    W2(usize),
    /// W3 reads/s.
    W3,
    /// W4 records/s.
    W4Sweep,
    /// W4: the longest claim or completion overlapping the sweep, ms.
    W4Stall,
    /// W5 µs per contended key.
    W5,
    /// Prefill time, s (measured once).
    Prefill,
}

impl Row {
    /// The row's label, with its unit.
    pub fn label(self, records: u64, w5_threads: usize) -> String {
        match self {
            Row::W1 => "W1 claim+complete, 1 thread (cycles/s)".to_owned(),
            Row::W2(t) => format!("W2 claim+complete, {t} threads (cycles/s)"),
            Row::W3 => "W3 replay, 1 thread (reads/s)".to_owned(),
            Row::W4Sweep => "W4 sweep expired (records/s)".to_owned(),
            Row::W4Stall => "W4 longest claim/complete during sweep (ms)".to_owned(),
            Row::W5 => format!("W5 {w5_threads} threads race one key (µs/key)"),
            Row::Prefill => format!("prefill {} records, once (s)", group(records as f64, 0)),
        }
    }

    /// Whether more is better (rates) or less (times).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Row::W1 | Row::W2(_) | Row::W3 | Row::W4Sweep)
    }

    fn format(self, v: f64) -> String {
        match self {
            Row::W1 | Row::W2(_) | Row::W3 | Row::W4Sweep => group(v, 0),
            Row::W4Stall | Row::W5 => {
                if v >= 100.0 {
                    group(v, 0)
                } else {
                    format!("{v:.2}")
                }
            }
            Row::Prefill => format!("{v:.1}"),
        }
    }
}

/// A measured value, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A number in the row's unit.
    Num(f64),
    /// The workload does not apply to the system (the reason is printed as a note).
    NotApplicable(&'static str),
}

/// Thousands separators, `decimals` digits after the point.
pub fn group(v: f64, decimals: usize) -> String {
    let text = format!("{v:.decimals$}");
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

/// Every value measured, by row and system.
#[derive(Debug, Default)]
pub struct Results {
    values: BTreeMap<Row, BTreeMap<&'static str, Vec<Value>>>,
}

impl Results {
    /// Records one measurement.
    pub fn add(&mut self, row: Row, system: &'static str, value: Value) {
        self.values
            .entry(row)
            .or_default()
            .entry(system)
            .or_default()
            .push(value);
    }

    /// The median of a row's values for a system (not-applicable wins over numbers).
    pub fn median(&self, row: Row, system: &str) -> Option<Value> {
        self.summary(row, system).map(|s| match s {
            Summary::Num { median, .. } => Value::Num(median),
            Summary::NotApplicable(why) => Value::NotApplicable(why),
        })
    }

    /// The median as a number, if the row was measured for the system.
    pub fn num(&self, row: Row, system: &str) -> Option<f64> {
        match self.median(row, system)? {
            Value::Num(v) => Some(v),
            Value::NotApplicable(_) => None,
        }
    }

    /// Median, minimum, maximum and count of a row's values for a system.
    pub fn summary(&self, row: Row, system: &str) -> Option<Summary> {
        let values = self.values.get(&row)?.get(system)?;
        if let Some(Value::NotApplicable(why)) =
            values.iter().find(|v| matches!(v, Value::NotApplicable(_)))
        {
            return Some(Summary::NotApplicable(why));
        }
        let mut nums: Vec<f64> = values
            .iter()
            .filter_map(|v| match v {
                Value::Num(n) => Some(*n),
                Value::NotApplicable(_) => None,
            })
            .collect();
        nums.sort_by(f64::total_cmp);
        let n = nums.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => nums[n / 2],
            _ => (nums[n / 2 - 1] + nums[n / 2]) / 2.0,
        };
        Some(Summary::Num {
            median,
            min: nums[0],
            max: nums[n - 1],
            runs: n,
        })
    }

    /// The rows measured, in order.
    pub fn rows(&self) -> Vec<Row> {
        self.values.keys().copied().collect()
    }
}

/// What the runs of one row and system amount to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Summary {
    /// Numbers.
    Num {
        /// The median.
        median: f64,
        /// The smallest value.
        min: f64,
        /// The largest value.
        max: f64,
        /// How many runs.
        runs: usize,
    },
    /// The workload does not apply.
    NotApplicable(&'static str),
}

/// idemdb's advantage over a peer: above 1, idemdb is better (rates: idemdb/peer; times:
/// peer/idemdb).
pub fn advantage(row: Row, idemdb: f64, peer: f64) -> Option<f64> {
    (idemdb > 0.0 && peer > 0.0).then(|| {
        if row.higher_is_better() {
            idemdb / peer
        } else {
            peer / idemdb
        }
    })
}

/// Differences smaller than this fraction are noise on a shared machine (the rule).
pub const NOISE: f64 = 0.25;

/// One of the goals, evaluated on the medians.
pub struct Goal {
    /// The row it is read from.
    pub row: Row,
    /// The peer it compares with (`None`: not a ratio to a peer).
    pub peer: Option<&'static str>,
    /// What it demands, in words.
    pub text: String,
    /// The measured value, in words (a ratio, or µs).
    pub measured: String,
    /// Met, not met, or not measured.
    pub verdict: String,
}

/// The goals of issue 4 that the measured rows allow to check.
pub fn goals(results: &Results, sweep_batch: usize) -> Vec<Goal> {
    let mut goals = Vec::new();
    let ratio_goal = |row: Row, peers: &[&'static str], target: f64, what: &str| {
        let ours = results.num(row, "idemdb");
        let best = peers
            .iter()
            .filter_map(|p| Some((*p, results.num(row, p)?)))
            .reduce(|a, b| {
                let better = if row.higher_is_better() {
                    b.1 > a.1
                } else {
                    b.1 < a.1
                };
                if better { b } else { a }
            });
        let names = peers.join(" or ");
        let text = format!("{what}: ≥ {target:.2}× {names}");
        match (ours, best) {
            (Some(o), Some((peer, p))) => {
                let r = advantage(row, o, p).unwrap_or(0.0);
                Goal {
                    row,
                    peer: Some(peer),
                    text,
                    measured: format!("{r:.2}× {peer}"),
                    verdict: verdict(r >= target, r / target),
                }
            }
            _ => Goal {
                row,
                peer: None,
                text,
                measured: "-".to_owned(),
                verdict: "not measured".to_owned(),
            },
        }
    };
    goals.push(ratio_goal(Row::W1, &["sqlite-full"], 1.1, "W1"));
    for row in results.rows() {
        if let Row::W2(t) = row {
            let target = match t {
                16 => 1.3,
                64 => 1.2,
                _ => continue,
            };
            goals.push(ratio_goal(
                row,
                &["redis"],
                target,
                &format!("W2 {t} threads"),
            ));
        }
    }
    goals.push(ratio_goal(
        Row::W3,
        &["sqlite-full", "sqlite-normal"],
        3.0,
        "W3",
    ));
    // The engine's own work per replay on top of a plain redb read.
    let text = "W3: idemdb's work per replay on top of redb's read < 1 µs".to_owned();
    goals.push(
        match (results.num(Row::W3, "idemdb"), results.num(Row::W3, "redb")) {
            (Some(o), Some(r)) if o > 0.0 && r > 0.0 => {
                let extra = 1e6 / o - 1e6 / r;
                Goal {
                    row: Row::W3,
                    peer: None,
                    text,
                    measured: format!("{extra:+.2} µs ({:.2} vs {:.2} µs/read)", 1e6 / o, 1e6 / r),
                    verdict: verdict(extra < 1.0, 1.0 / extra.max(1e-9)),
                }
            }
            _ => Goal {
                row: Row::W3,
                peer: None,
                text,
                measured: "-".to_owned(),
                verdict: "not measured".to_owned(),
            },
        },
    );
    goals.push(ratio_goal(Row::W4Sweep, &["postgres"], 1.2, "W4"));
    let text = format!("W4: no claim/complete stalls over one sweep batch ({sweep_batch} records)");
    goals.push(
        match (
            results.num(Row::W4Stall, "idemdb"),
            results.num(Row::W4Sweep, "idemdb"),
        ) {
            (Some(stall), Some(rate)) if rate > 0.0 => {
                let batch_ms = sweep_batch as f64 / rate * 1e3;
                Goal {
                    row: Row::W4Stall,
                    peer: None,
                    text,
                    measured: format!("{stall:.1} ms stall, {batch_ms:.1} ms per batch"),
                    verdict: verdict(stall <= batch_ms, batch_ms / stall.max(1e-9)),
                }
            }
            _ => Goal {
                row: Row::W4Stall,
                peer: None,
                text,
                measured: "-".to_owned(),
                verdict: "not measured".to_owned(),
            },
        },
    );
    let mut w5 = ratio_goal(
        Row::W5,
        &["redis"],
        1.0,
        "W5: one winner per round (else the run fails); µs/key",
    );
    w5.text = w5.text.replace("≥ 1.00×", "no slower than");
    goals.push(w5);
    goals
}

fn verdict(met: bool, margin: f64) -> String {
    let noise = (margin - 1.0).abs() < NOISE;
    match (met, noise) {
        (true, false) => "met".to_owned(),
        (true, true) => "met (within noise)".to_owned(),
        (false, true) => "NOT MET (within noise)".to_owned(),
        (false, false) => "NOT MET".to_owned(),
    }
}

/// The table's cells: header, then one line per (row, system); plus the notes it refers to
/// and the goals.
pub struct Table {
    header: Vec<String>,
    lines: Vec<Vec<String>>,
    notes: Vec<String>,
    goals: Vec<Goal>,
    runs: usize,
    store: String,
}

/// Builds the table from the runs. `systems` in column order.
pub fn table(
    results: &Results,
    systems: &[&'static str],
    records: u64,
    w5_threads: usize,
    sweep_batch: usize,
) -> Table {
    let goals = goals(results, sweep_batch);
    let store = if records == 0 {
        "on fresh stores".to_owned()
    } else {
        format!(
            "on stores prefilled with {} records",
            group(records as f64, 0)
        )
    };
    let mut runs = 0;
    let mut notes: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    for row in results.rows() {
        let ours = results.num(row, "idemdb");
        let mut first = true;
        for system in systems {
            let Some(summary) = results.summary(row, system) else {
                continue;
            };
            let mut line = vec![if first {
                row.label(records, w5_threads)
            } else {
                String::new()
            }];
            first = false;
            line.push((*system).to_owned());
            match summary {
                Summary::Num {
                    median,
                    min,
                    max,
                    runs: n,
                } => {
                    runs = runs.max(n);
                    line.push(row.format(median));
                    line.push(if n > 1 {
                        format!(
                            "{} – {} (±{:.0}%)",
                            row.format(min),
                            row.format(max),
                            (max - min) / 2.0 / median.abs().max(1e-12) * 100.0
                        )
                    } else {
                        "one run".to_owned()
                    });
                    line.push(match (ours, *system == "idemdb") {
                        (Some(o), false) => advantage(row, o, median)
                            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}×")),
                        _ => String::new(),
                    });
                }
                Summary::NotApplicable(why) => {
                    let note = format!("{system}: {why}");
                    let index = notes.iter().position(|n| *n == note).unwrap_or_else(|| {
                        notes.push(note);
                        notes.len() - 1
                    });
                    line.push(format!("N/A ({})", index + 1));
                    line.push(String::new());
                    line.push(String::new());
                }
            }
            line.push(
                goals
                    .iter()
                    .filter(|g| g.row == row && g.peer == Some(*system))
                    .map(|g| g.verdict.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            lines.push(line);
        }
    }
    let header = vec![
        "workload".to_owned(),
        "system".to_owned(),
        "median".to_owned(),
        "min – max (spread)".to_owned(),
        "idemdb ×".to_owned(),
        "goal".to_owned(),
    ];
    Table {
        header,
        lines,
        notes,
        goals,
        runs,
        store,
    }
}

impl Table {
    /// Aligned plain text: the table, its notes and the goals.
    pub fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.lines)
                    .map(|l| l.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let render = |cells: &[String]| {
            let mut out = String::new();
            for (c, cell) in cells.iter().enumerate() {
                let pad = widths[c].saturating_sub(cell.chars().count());
                if c == 0 {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else if c == 1 || c == self.header.len() - 1 {
                    out.push_str("  ");
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str("  ");
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
            out.trim_end().to_owned()
        };
        let rule = "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1));
        let mut out = render(&self.header);
        out.push('\n');
        out.push_str(&rule);
        out.push('\n');
        for line in &self.lines {
            if !line[0].is_empty() && !out.ends_with(&format!("{rule}\n")) {
                out.push('\n');
            }
            out.push_str(&render(line));
            out.push('\n');
        }
        out.push_str(&rule);
        out.push('\n');
        out.push_str(&self.footer());
        out.push('\n');
        out.push_str(&self.goal_lines(false));
        out
    }

    /// A markdown table, its notes and the goals.
    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.header.join(" | "));
        let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: | --- |");
        for line in &self.lines {
            let _ = writeln!(out, "| {} |", line.join(" | "));
        }
        out.push('\n');
        out.push_str(&self.footer().replace('\n', "\n\n"));
        out.push('\n');
        out.push_str(&self.goal_lines(true));
        out
    }

    fn footer(&self) -> String {
        let mut out = format!(
            "Medians of {} run(s); min – max across the runs, spread = half the range over the median. \
             idemdb × = idemdb's advantage over that system (above 1: idemdb is better): idemdb/peer for rates, \
             peer/idemdb for times. Differences under {:.0}% are noise on a shared machine.\n",
            self.runs,
            NOISE * 100.0
        );
        for (i, note) in self.notes.iter().enumerate() {
            let _ = writeln!(out, "N/A ({}): {note}", i + 1);
        }
        out
    }

    fn goal_lines(&self, markdown: bool) -> String {
        let mut out = String::new();
        if markdown {
            let _ = writeln!(
                out,
                "| goal (issue 4), {} | measured | verdict |",
                self.store
            );
            out.push_str("| --- | --- | --- |\n");
        } else {
            let _ = writeln!(out, "Goals (issue 4), on the medians, {}:", self.store);
        }
        let width = self
            .goals
            .iter()
            .map(|g| g.text.chars().count())
            .max()
            .unwrap_or(0);
        let mwidth = self
            .goals
            .iter()
            .map(|g| g.measured.chars().count())
            .max()
            .unwrap_or(0);
        for g in &self.goals {
            if markdown {
                let _ = writeln!(out, "| {} | {} | {} |", g.text, g.measured, g.verdict);
            } else {
                let _ = writeln!(
                    out,
                    "  {}{}  {}{}  {}",
                    g.text,
                    " ".repeat(width - g.text.chars().count()),
                    g.measured,
                    " ".repeat(mwidth - g.measured.chars().count()),
                    g.verdict
                );
            }
        }
        out
    }
}

/// What machine this is, for the report.
pub fn machine(data_dir: &Path) -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let kb: f64 = t
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let load = load_average();
    vec![
        format!("machine: {cores} cores ({cpu}), {memory} memory, kernel {kernel} (uname -r)"),
        format!(
            "data directory: {} on {}",
            data_dir.display(),
            file_system(data_dir)
        ),
        format!("load average at start: {load}"),
    ]
}

/// The 1, 5 and 15 minute load averages (`uptime`'s).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The file system type and device of the mount holding `dir`.
fn file_system(dir: &Path) -> String {
    let findmnt = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE,SOURCE", "-T"])
        .arg(dir)
        .output();
    if let Ok(out) = findmnt
        && out.status.success()
    {
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if let Some((fs, dev)) = text.split_once(char::is_whitespace) {
            return format!("{fs} ({})", dev.trim());
        }
        if !text.is_empty() {
            return text;
        }
    }
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "an unknown file system".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(1234567.0, 0), "1,234,567");
        assert_eq!(group(999.0, 0), "999");
        assert_eq!(group(1000.5, 1), "1,000.5");
    }

    #[test]
    fn medians_spread_and_ratios() {
        let mut r = Results::default();
        for v in [3.0, 1.0, 2.0] {
            r.add(Row::W1, "idemdb", Value::Num(v * 100.0));
            r.add(Row::W1, "sqlite-full", Value::Num(v * 50.0));
            r.add(Row::W5, "idemdb", Value::Num(v));
            r.add(Row::W5, "redis", Value::Num(v * 4.0));
        }
        assert_eq!(r.median(Row::W1, "idemdb"), Some(Value::Num(200.0)));
        assert_eq!(
            r.summary(Row::W1, "idemdb"),
            Some(Summary::Num {
                median: 200.0,
                min: 100.0,
                max: 300.0,
                runs: 3
            })
        );
        let t = table(&r, &["idemdb", "sqlite-full", "redis"], 10, 16, 1000);
        // W1: idemdb's line, then sqlite-full's with the ratio 200/100 and the goal.
        assert_eq!(t.lines[0][1], "idemdb");
        assert_eq!(t.lines[1][1], "sqlite-full");
        assert_eq!(t.lines[1][4], "2.00×");
        assert_eq!(t.lines[1][5], "met");
        // W5 is a time: redis/idemdb = 8/2 = 4.
        assert_eq!(t.lines[3][4], "4.00×");
        assert!(t.text().contains("Goals (issue 4)"));
    }

    #[test]
    fn verdicts_flag_noise() {
        assert_eq!(verdict(true, 2.0), "met");
        assert_eq!(verdict(true, 1.1), "met (within noise)");
        assert_eq!(verdict(false, 0.9), "NOT MET (within noise)");
        assert_eq!(verdict(false, 0.5), "NOT MET");
    }
}
