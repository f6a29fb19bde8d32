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
        let values = self.values.get(&row)?.get(system)?;
        if let Some(na) = values.iter().find(|v| matches!(v, Value::NotApplicable(_))) {
            return Some(*na);
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
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(Value::Num(nums[n / 2])),
            _ => Some(Value::Num((nums[n / 2 - 1] + nums[n / 2]) / 2.0)),
        }
    }

    /// The rows measured, in order.
    pub fn rows(&self) -> Vec<Row> {
        self.values.keys().copied().collect()
    }
}

/// The table's cells: header, then one line per row; plus the notes it refers to.
pub struct Table {
    header: Vec<String>,
    lines: Vec<Vec<String>>,
    notes: Vec<String>,
}

/// Builds the table from the medians. `systems` in column order; ratio columns appear when
/// idemdb and at least one peer were measured.
pub fn table(
    results: &Results,
    systems: &[&'static str],
    records: u64,
    w5_threads: usize,
) -> Table {
    let peers: Vec<&'static str> = systems.iter().copied().filter(|s| *s != "idemdb").collect();
    let with_ratios = systems.contains(&"idemdb") && !peers.is_empty();
    let mut header = vec!["workload".to_owned()];
    header.extend(systems.iter().map(|s| (*s).to_owned()));
    if with_ratios {
        header.push("idemdb vs best peer".to_owned());
        header.extend(peers.iter().map(|p| format!("vs {p}")));
    }
    let mut notes: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    for row in results.rows() {
        let mut line = vec![row.label(records, w5_threads)];
        for system in systems {
            line.push(match results.median(row, system) {
                Some(Value::Num(v)) => row.format(v),
                Some(Value::NotApplicable(why)) => {
                    let note = format!("{system}: {why}");
                    let index = notes.iter().position(|n| *n == note).unwrap_or_else(|| {
                        notes.push(note);
                        notes.len() - 1
                    });
                    format!("N/A ({})", index + 1)
                }
                None => "-".to_owned(),
            });
        }
        if with_ratios {
            let ours = match results.median(row, "idemdb") {
                Some(Value::Num(v)) => Some(v),
                _ => None,
            };
            let theirs: Vec<Option<f64>> = peers
                .iter()
                .map(|p| match results.median(row, p) {
                    Some(Value::Num(v)) => Some(v),
                    _ => None,
                })
                .collect();
            let best = theirs.iter().flatten().copied().reduce(|a, b| {
                if row.higher_is_better() {
                    a.max(b)
                } else {
                    a.min(b)
                }
            });
            let ratio = |peer: Option<f64>| match (ours, peer) {
                (Some(o), Some(p)) if o > 0.0 && p > 0.0 => {
                    let r = if row.higher_is_better() { o / p } else { p / o };
                    format!("{r:.2}×")
                }
                _ => "-".to_owned(),
            };
            let best_name = best.and_then(|b| {
                peers
                    .iter()
                    .zip(&theirs)
                    .find(|(_, v)| **v == Some(b))
                    .map(|(p, _)| *p)
            });
            line.push(match best_name {
                Some(name) => format!("{} ({name})", ratio(best)),
                None => "-".to_owned(),
            });
            line.extend(theirs.into_iter().map(ratio));
        }
        lines.push(line);
    }
    Table {
        header,
        lines,
        notes,
    }
}

impl Table {
    /// Aligned plain text.
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
                } else {
                    out.push_str("  ");
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = render(&self.header);
        out.push('\n');
        out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
        out.push('\n');
        for line in &self.lines {
            out.push_str(&render(line));
            out.push('\n');
        }
        out.push_str(&self.footer());
        out
    }

    /// A markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.header.join(" | "));
        let _ = writeln!(
            out,
            "| --- |{}",
            " ---: |".repeat(self.header.len().saturating_sub(1))
        );
        for line in &self.lines {
            let _ = writeln!(out, "| {} |", line.join(" | "));
        }
        out.push('\n');
        out.push_str(&self.footer());
        out
    }

    fn footer(&self) -> String {
        let mut out = String::from(
            "Medians of the runs. Ratios are idemdb's advantage (above 1: idemdb is better): idemdb/peer for rates, peer/idemdb for times.\n",
        );
        for (i, note) in self.notes.iter().enumerate() {
            let _ = writeln!(out, "N/A ({}): {note}", i + 1);
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
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned());
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
    fn medians_and_ratios() {
        let mut r = Results::default();
        for v in [3.0, 1.0, 2.0] {
            r.add(Row::W1, "idemdb", Value::Num(v * 100.0));
            r.add(Row::W1, "sqlite-full", Value::Num(v * 50.0));
            r.add(Row::W5, "idemdb", Value::Num(v));
            r.add(Row::W5, "sqlite-full", Value::Num(v * 4.0));
        }
        assert_eq!(r.median(Row::W1, "idemdb"), Some(Value::Num(200.0)));
        let t = table(&r, &["idemdb", "sqlite-full"], 10, 16);
        assert_eq!(t.lines[0][3], "2.00× (sqlite-full)");
        // times: peer/idemdb, so 8/2 = 4
        assert_eq!(t.lines[1][4], "4.00×");
    }
}
