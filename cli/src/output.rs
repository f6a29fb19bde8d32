//! Writing results: tables and times for people, JSON for programs, and idemdb's own notes
//! on stderr.

use std::io::Write;
use std::time::Duration;

use idemdb::Timestamp;
use serde_json::{Value, json};

use crate::exit::CliError;

/// An instant for people: RFC 3339 in UTC, to the second.
pub fn time(at: Timestamp) -> String {
    humantime::format_rfc3339_seconds(at.to_system_time()).to_string()
}

/// A duration for people, in its two largest units: `3d 4h`, `5m 12s`, `42s`.
pub fn span(d: Duration) -> String {
    let secs = d.as_secs();
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (size, name) in units {
        if rest >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    parts.join(" ")
}

/// How long before `now` an instant was.
pub fn age(now: Timestamp, then: Timestamp) -> String {
    span(now.saturating_duration_since(then))
}

/// A size for people: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Text that may hold anything, made safe for one line of a terminal: control characters
/// and invalid UTF-8 are escaped.
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// Writes `text` to stdout.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::io("writing to stdout", e))
}

/// Writes one JSON value to stdout, on one line.
pub fn print_json(value: &Value) -> Result<(), CliError> {
    print(&format!("{value}\n"))
}

/// Columns of text, each as wide as its widest cell, so a table can be measured in one
/// pass over its rows and written line by line in another (no copy of the whole table).
pub struct Columns {
    widths: Vec<usize>,
}

impl Columns {
    /// Columns wide enough for the header and every row.
    pub fn fit<R: AsRef<str>>(header: &[&str], rows: impl Iterator<Item = Vec<R>>) -> Columns {
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.as_ref().chars().count());
                }
            }
        }
        Columns { widths }
    }

    /// One line of the table, with its newline; the last cell is not padded.
    pub fn line<R: AsRef<str>>(&self, cells: &[R]) -> String {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let cell = cell.as_ref();
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let pad = self.widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<pad$}  "));
            }
        }
        let mut line = line.trim_end().to_owned();
        line.push('\n');
        line
    }
}

/// idemdb's own messages on stderr: notes (which `--quiet` silences) and warnings (which it
/// does not), as text or, with `--json`, as one JSON object a line.
#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    /// Silence notes.
    pub quiet: bool,
    /// Write JSON lines.
    pub json: bool,
}

impl Reporter {
    /// A note: what idemdb did (replayed, took over). Silenced by `--quiet`.
    pub fn note(&self, event: &str, message: &str, fields: Value) {
        if !self.quiet {
            self.emit("note", event, message, fields);
        }
    }

    /// A warning: something the user must know (output cut, interrupted). Always shown.
    pub fn warn(&self, event: &str, message: &str, fields: Value) {
        self.emit("warning", event, message, fields);
    }

    fn emit(&self, level: &str, event: &str, message: &str, fields: Value) {
        let line = if self.json {
            let mut object = json!({ "idemdb": level, "event": event, "message": message });
            if let (Some(target), Value::Object(extra)) = (object.as_object_mut(), fields) {
                target.extend(extra);
            }
            format!("{object}\n")
        } else {
            format!("idemdb: {message}\n")
        };
        // Nothing sensible can be done if stderr itself is gone.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Reports an error on stderr: `idemdb: error: …`, or with `--json` a JSON object.
pub fn report_error(json: bool, error: &CliError) {
    let line = if json {
        let mut object = json!({
            "idemdb": "error",
            "kind": error.kind(),
            "exit_code": error.code(),
            "message": error.to_string(),
        });
        if let (Some(target), Some(Value::Object(extra))) =
            (object.as_object_mut(), error.json_fields())
        {
            target.extend(extra);
        }
        format!("{object}\n")
    } else {
        format!("idemdb: error: {error}\n")
    };
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_sizes_for_people() {
        assert_eq!(span(Duration::from_secs(42)), "42s");
        assert_eq!(span(Duration::from_secs(312)), "5m 12s");
        assert_eq!(
            span(Duration::from_secs(3 * 86_400 + 4 * 3_600 + 5)),
            "3d 4h"
        );
        assert_eq!(span(Duration::from_secs(3_600)), "1h");
        assert_eq!(span(Duration::from_millis(250)), "250ms");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn columns_align_to_the_widest_cell() {
        let rows = [vec!["wide cell", "x"]];
        let columns = Columns::fit(&["A", "LONGER"], rows.iter().cloned());
        assert_eq!(columns.line(&["A", "LONGER"]), "A          LONGER\n");
        assert_eq!(columns.line(&rows[0]), "wide cell  x\n");
    }
}
