//! Looking inside a store: `get`, `ls` and `stats`.

use std::collections::BinaryHeap;
use std::io::{BufWriter, Write};

use idemdb::{Record, RecordState, StateKind, Store, Timestamp};
use indicatif::ProgressBar;
use serde_json::{Value, json};

use crate::args::{Global, KeyArgs, LsArgs, StateFilter};
use crate::exit::CliError;
use crate::open::{Access, open_store, store_path};
use crate::output::{self, Columns, Reporter};
use crate::owner::{self, Liveness};
use crate::progress;
use crate::records::Line;
use crate::response::RunResult;
use crate::run::text;

/// `idemdb get`.
pub fn get(global: &Global, args: KeyArgs) -> Result<u8, CliError> {
    let scope = text(args.scope, "scope")?;
    let key = text(args.key, "key")?;
    let store = open_store(global, Access::Read, None)?;
    let found = store.get(&scope, &key);
    let now = store.now();
    store.close()?;
    let record = found?.ok_or_else(|| {
        CliError::NotFound(format!("no record for key {key:?} in scope {scope:?}"))
    })?;
    if global.json {
        output::print_json(&record_json(&scope, &key, &record, now))?;
    } else {
        output::print(&record_text(&scope, &key, &record, now))?;
    }
    Ok(0)
}

/// A record as JSON: its export line, plus what it means now.
pub fn record_json(scope: &str, key: &str, record: &Record, now: Timestamp) -> Value {
    let mut value = serde_json::to_value(Line::of(scope, key, record)).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("status".to_owned(), json!(record.kind(now).as_str()));
        if let RecordState::InFlight(flight) = record.state() {
            object.insert("owner".to_owned(), json!(owner::describe(flight.owner())));
            object.insert(
                "owner_alive".to_owned(),
                json!(match owner::liveness(flight.owner()) {
                    Liveness::Alive => "alive",
                    Liveness::Dead(_) => "gone",
                    Liveness::Unknown => "unknown",
                }),
            );
        }
        if let Some(result) = record.response().and_then(|r| RunResult::decode(r).ok()) {
            object.insert(
                "run".to_owned(),
                json!({
                    "exit_code": result.status.exit_code(),
                    "status": result.status.to_string(),
                    "stdout": String::from_utf8_lossy(&result.stdout.bytes),
                    "stdout_written": result.stdout.total,
                    "stdout_truncated": result.stdout.truncated(),
                    "stderr": String::from_utf8_lossy(&result.stderr.bytes),
                    "stderr_written": result.stderr.total,
                    "stderr_truncated": result.stderr.truncated(),
                }),
            );
        }
    }
    value
}

fn record_text(scope: &str, key: &str, record: &Record, now: Timestamp) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("scope", scope.to_owned()),
        ("key", key.to_owned()),
        ("state", record.kind(now).to_string()),
        (
            "created",
            format!(
                "{} ({} ago)",
                output::time(record.created_at()),
                output::age(now, record.created_at())
            ),
        ),
        ("expires", expiry_text(record.expires_at(), now)),
        ("attempt", record.attempt().to_string()),
        ("fingerprint", record.fingerprint().to_hex()),
    ];
    match record.state() {
        RecordState::Completed(completed) => {
            rows.push(("completed", output::time(completed.completed_at())));
            match RunResult::decode(completed.response()) {
                Ok(result) => {
                    rows.push(("result", result.status.to_string()));
                    for (name, stream) in [("stdout", &result.stdout), ("stderr", &result.stderr)] {
                        let cut = if stream.truncated() {
                            format!(" (cut: {} written)", output::bytes(stream.total))
                        } else {
                            String::new()
                        };
                        rows.push((
                            name,
                            format!(
                                "{}{cut} {}",
                                output::bytes(stream.bytes.len() as u64),
                                preview(&stream.bytes)
                            ),
                        ));
                    }
                }
                Err(_) => rows.push((
                    "response",
                    format!(
                        "{} (not written by `idemdb run`) {}",
                        output::bytes(completed.response().len() as u64),
                        preview(completed.response())
                    ),
                )),
            }
        }
        RecordState::InFlight(flight) => {
            rows.push(("claim", flight.claim().to_string()));
            let lease = if flight.lease_live(now) {
                format!(
                    "until {} (in {})",
                    output::time(flight.lease_until()),
                    output::span(flight.lease_until().saturating_duration_since(now))
                )
            } else {
                format!(
                    "ended {} ({} ago)",
                    output::time(flight.lease_until()),
                    output::age(now, flight.lease_until())
                )
            };
            rows.push(("lease", lease));
            if let Some(at) = flight.abandoned_at() {
                rows.push(("abandoned", output::time(at)));
            }
            let liveness = match owner::liveness(flight.owner()) {
                Liveness::Alive => "running".to_owned(),
                Liveness::Dead(reason) => format!("gone: {reason}"),
                Liveness::Unknown => "cannot tell from this host".to_owned(),
            };
            rows.push((
                "owner",
                format!("{} ({liveness})", owner::describe(flight.owner())),
            ));
        }
    }
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(name, value)| format!("{name:<width$}  {value}\n"))
        .collect()
}

fn expiry_text(expires_at: Option<Timestamp>, now: Timestamp) -> String {
    match expires_at {
        None => "never".to_owned(),
        Some(at) if at > now => format!(
            "{} (in {})",
            output::time(at),
            output::span(at.saturating_duration_since(now))
        ),
        Some(at) => format!("{} ({} ago)", output::time(at), output::age(now, at)),
    }
}

/// The start of some output, escaped, on one line.
fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 120;
    if bytes.is_empty() {
        return String::new();
    }
    let shown = &bytes[..bytes.len().min(MAX)];
    let more = if bytes.len() > MAX { "…" } else { "" };
    format!("\"{}\"{more}", output::printable(shown))
}

/// One row of `ls`: what it shows, without the response bytes.
struct Row {
    scope: String,
    key: String,
    kind: StateKind,
    /// Abandoned, or in flight with an owner that is gone.
    stuck: bool,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    attempt: u32,
    detail: String,
}

impl Row {
    fn rank(&self) -> u8 {
        match (self.stuck, self.kind) {
            (true, _) => 0,
            (false, StateKind::InFlight) => 1,
            (false, StateKind::Abandoned) => 0,
            (false, StateKind::Completed) => 2,
            (false, StateKind::Expired) => 3,
        }
    }

    fn state_text(&self) -> String {
        if self.stuck && self.kind == StateKind::InFlight {
            "in_flight (owner gone)".to_owned()
        } else {
            self.kind.to_string()
        }
    }
}

fn row_of(scope: String, key: String, record: &Record, now: Timestamp) -> Row {
    let kind = record.kind(now);
    let (stuck, detail) = match record.state() {
        RecordState::InFlight(flight) => {
            let liveness = owner::liveness(flight.owner());
            let gone = matches!(liveness, Liveness::Dead(_));
            let state = match liveness {
                Liveness::Alive => "running",
                Liveness::Dead(_) => "gone",
                Liveness::Unknown => "unknown",
            };
            (
                kind == StateKind::Abandoned || (kind == StateKind::InFlight && gone),
                format!("{} ({state})", owner::describe(flight.owner())),
            )
        }
        RecordState::Completed(completed) => (
            false,
            match RunResult::decode(completed.response()) {
                Ok(result) => result.status.to_string(),
                Err(_) => format!(
                    "response of {}",
                    output::bytes(completed.response().len() as u64)
                ),
            },
        ),
    };
    Row {
        scope,
        key,
        kind,
        stuck,
        created_at: record.created_at(),
        expires_at: record.expires_at(),
        attempt: record.attempt(),
        detail,
    }
}

fn wanted(row: &Row, filters: &[StateFilter]) -> bool {
    if filters.is_empty() {
        return row.kind != StateKind::Expired;
    }
    filters.iter().any(|f| match f {
        StateFilter::InFlight => row.kind == StateKind::InFlight,
        StateFilter::Abandoned => row.kind == StateKind::Abandoned,
        StateFilter::Completed => row.kind == StateKind::Completed,
        StateFilter::Expired => row.kind == StateKind::Expired,
        StateFilter::Stuck => row.stuck,
    })
}

/// `idemdb ls`.
pub fn ls(global: &Global, args: LsArgs) -> Result<u8, CliError> {
    let scope = args.scope.clone().map(|s| text(s, "scope")).transpose()?;
    let limit = if args.all { None } else { Some(args.limit) };
    let store = open_store(global, Access::Read, None)?;
    let bar = progress::bar(global.json, None, "records", "listing");
    let listed = list(&store, scope.as_deref(), &args, limit, &bar);
    drop(bar);
    let now = store.now();
    store.close()?;
    let listing = listed?;
    let reporter = Reporter {
        quiet: false,
        json: global.json,
    };
    if global.json {
        // One object a line, written as it goes: a listing of any size takes the memory
        // of its rows only.
        let mut out = BufWriter::new(std::io::stdout().lock());
        for r in &listing.rows {
            let line = json!({
                "scope": r.scope,
                "key": r.key,
                "status": r.kind.as_str(),
                "stuck": r.stuck,
                "created_at": r.created_at.as_millis(),
                "expires_at": r.expires_at.map(Timestamp::as_millis),
                "attempt": r.attempt,
                "detail": r.detail,
            });
            writeln!(out, "{line}").map_err(|e| CliError::io("writing to stdout", e))?;
        }
        out.flush()
            .map_err(|e| CliError::io("writing to stdout", e))?;
    } else if listing.matched == 0 {
        output::print("no records\n")?;
    } else {
        let header = [
            "SCOPE", "KEY", "STATE", "AGE", "EXPIRES", "ATTEMPT", "DETAIL",
        ];
        let cells = |r: &Row| {
            vec![
                r.scope.clone(),
                r.key.clone(),
                r.state_text(),
                output::age(now, r.created_at),
                match r.expires_at {
                    None => "never".to_owned(),
                    Some(at) if at > now => {
                        format!("in {}", output::span(at.saturating_duration_since(now)))
                    }
                    Some(at) => format!("{} ago", output::age(now, at)),
                },
                r.attempt.to_string(),
                r.detail.clone(),
            ]
        };
        // Measured in one pass, written in another: the listing is never held as text.
        let columns = Columns::fit(&header, listing.rows.iter().map(cells));
        let mut out = BufWriter::new(std::io::stdout().lock());
        let failed = |e| CliError::io("writing to stdout", e);
        out.write_all(columns.line(&header).as_bytes())
            .map_err(failed)?;
        for r in &listing.rows {
            out.write_all(columns.line(&cells(r)).as_bytes())
                .map_err(failed)?;
        }
        out.flush().map_err(failed)?;
    }
    let shown = listing.rows.len() as u64;
    if listing.matched > shown {
        reporter.warn(
            "more",
            &format!(
                "{} more records not shown ({shown} of {}; --limit N shows more, --all every one)",
                listing.matched - shown,
                listing.matched
            ),
            json!({ "shown": shown, "matched": listing.matched }),
        );
    }
    if listing.unreadable > 0 {
        reporter.warn(
            "unreadable",
            &format!(
                "{} records could not be read (damaged); run `idemdb check`",
                listing.unreadable
            ),
            json!({ "unreadable": listing.unreadable }),
        );
    }
    Ok(0)
}

/// What `ls` found.
struct Listing {
    /// The rows to show, in order.
    rows: Vec<Row>,
    /// How many records matched the filters (more than the rows when the limit cut).
    matched: u64,
    /// Records that could not be read.
    unreadable: u64,
}

/// A row ordered as `ls` lists: stuck first, then in flight, completed and expired,
/// oldest first.
struct Ranked(Row);

impl Ranked {
    fn order(&self) -> (u8, Timestamp, &str, &str) {
        let r = &self.0;
        (r.rank(), r.created_at, &r.scope, &r.key)
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

/// The first `limit` matching rows in listing order (every row when `None`), keeping no
/// more than that many in memory.
fn list(
    store: &Store,
    scope: Option<&str>,
    args: &LsArgs,
    limit: Option<usize>,
    bar: &ProgressBar,
) -> Result<Listing, CliError> {
    let now = store.now();
    let include_expired = args.state.contains(&StateFilter::Expired);
    let scan = if include_expired {
        store.scan_including_expired(scope)?
    } else {
        store.scan(scope)?
    };
    // A max-heap of the best rows so far: the worst of them is dropped when a better
    // one arrives.
    let mut best: BinaryHeap<Ranked> = BinaryHeap::new();
    let mut matched = 0;
    let mut unreadable = 0;
    for entry in scan {
        bar.inc(1);
        let entry = match entry {
            Ok(entry) => entry,
            Err(idemdb::Error::Corrupt { .. }) => {
                unreadable += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let age = now.saturating_duration_since(entry.record.created_at());
        if args.older_than.is_some_and(|min| age < min)
            || args.newer_than.is_some_and(|max| age > max)
        {
            continue;
        }
        let row = row_of(entry.scope, entry.key, &entry.record, now);
        if !wanted(&row, &args.state) {
            continue;
        }
        matched += 1;
        best.push(Ranked(row));
        if limit.is_some_and(|limit| best.len() > limit) {
            best.pop();
        }
    }
    let rows = best.into_sorted_vec().into_iter().map(|r| r.0).collect();
    Ok(Listing {
        rows,
        matched,
        unreadable,
    })
}

/// What `stats` counts.
#[derive(Default)]
struct Counts {
    in_flight: u64,
    abandoned: u64,
    completed: u64,
    expired: u64,
    stuck: u64,
    unreadable: u64,
    response_bytes: u64,
    oldest_in_flight: Option<(Timestamp, String, String)>,
    next_expiry: Option<Timestamp>,
}

/// `idemdb stats`.
pub fn stats(global: &Global) -> Result<u8, CliError> {
    let (path, _) = store_path(global)?;
    let store = open_store(global, Access::Read, None)?;
    let bar = progress::bar(global.json, None, "records", "counting");
    let counted = count(&store, &bar);
    drop(bar);
    let now = store.now();
    let journal = store.files().map(|files| files.journal);
    store.close()?;
    let c = counted?;
    let file_size = std::fs::metadata(&path)
        .map(|m| m.len())
        .map_err(|e| CliError::io(format!("reading the size of {}", path.display()), e))?;
    let journal_size = journal
        .and_then(|j| std::fs::metadata(j).ok())
        .map_or(0, |m| m.len());
    let live = c.in_flight + c.abandoned + c.completed;
    if global.json {
        output::print_json(&json!({
            "path": path.display().to_string(),
            "file_bytes": file_size,
            "journal_bytes": journal_size,
            "records": live,
            "in_flight": c.in_flight,
            "abandoned": c.abandoned,
            "completed": c.completed,
            "expired": c.expired,
            "stuck": c.stuck,
            "unreadable": c.unreadable,
            "response_bytes": c.response_bytes,
            "oldest_in_flight": c.oldest_in_flight.as_ref().map(|(at, scope, key)| json!({
                "scope": scope, "key": key, "created_at": at.as_millis(),
            })),
            "sweeper": {
                "awaiting_sweep": c.expired,
                "next_expiry": c.next_expiry.map(Timestamp::as_millis),
            },
        }))?;
        return Ok(0);
    }
    let mut rows = vec![
        (
            "store",
            format!(
                "{} ({}, journal {})",
                path.display(),
                output::bytes(file_size),
                output::bytes(journal_size)
            ),
        ),
        (
            "records",
            format!(
                "{live} live: {} in flight, {} abandoned, {} completed",
                c.in_flight, c.abandoned, c.completed
            ),
        ),
        (
            "stuck",
            format!(
                "{} (abandoned, or in flight with its owner gone; see `idemdb ls --state stuck`)",
                c.stuck
            ),
        ),
        (
            "responses",
            format!("{} stored", output::bytes(c.response_bytes)),
        ),
        (
            "oldest in flight",
            match &c.oldest_in_flight {
                None => "none".to_owned(),
                Some((at, scope, key)) => format!(
                    "key {key:?} in scope {scope:?}, created {} ({} ago)",
                    output::time(*at),
                    output::age(now, *at)
                ),
            },
        ),
        (
            "sweeper",
            format!(
                "{} expired awaiting sweep; next expiry {} (each `idemdb run` sweeps when it records; `idemdb sweep` on demand)",
                c.expired,
                match c.next_expiry {
                    None => "none".to_owned(),
                    Some(at) => format!(
                        "{} (in {})",
                        output::time(at),
                        output::span(at.saturating_duration_since(now))
                    ),
                }
            ),
        ),
    ];
    if c.unreadable > 0 {
        rows.push((
            "unreadable",
            format!("{} damaged records; run `idemdb check`", c.unreadable),
        ));
    }
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let text: String = rows
        .iter()
        .map(|(name, value)| format!("{name:<width$}  {value}\n"))
        .collect();
    output::print(&text)?;
    Ok(0)
}

fn count(store: &Store, bar: &ProgressBar) -> Result<Counts, CliError> {
    let now = store.now();
    let mut c = Counts::default();
    for entry in store.scan_including_expired(None)? {
        bar.inc(1);
        let entry = match entry {
            Ok(entry) => entry,
            Err(idemdb::Error::Corrupt { .. }) => {
                c.unreadable += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let record = &entry.record;
        let kind = record.kind(now);
        match kind {
            StateKind::InFlight => c.in_flight += 1,
            StateKind::Abandoned => c.abandoned += 1,
            StateKind::Completed => c.completed += 1,
            StateKind::Expired => c.expired += 1,
        }
        if kind == StateKind::Expired {
            continue;
        }
        c.response_bytes += record.response().map_or(0, |r| r.len() as u64);
        if let Some(at) = record.sweep_at() {
            c.next_expiry = Some(c.next_expiry.map_or(at, |t| t.min(at)));
        }
        if let RecordState::InFlight(flight) = record.state() {
            let gone = matches!(owner::liveness(flight.owner()), Liveness::Dead(_));
            if kind == StateKind::Abandoned || gone {
                c.stuck += 1;
            }
            let older = c
                .oldest_in_flight
                .as_ref()
                .is_none_or(|(at, _, _)| record.created_at() < *at);
            if older {
                c.oldest_in_flight = Some((record.created_at(), entry.scope, entry.key));
            }
        }
    }
    Ok(c)
}
