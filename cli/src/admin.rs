//! Changing or maintaining a store: `rm`, `sweep`, `compact` and `check`.

use idemdb::{RecordState, Store, maintenance};
use serde_json::json;

use crate::args::{Global, RmArgs};
use crate::exit::CliError;
use crate::open::{Access, open_store, with_file};
use crate::output::{self, Reporter};
use crate::owner::{self, Liveness};
use crate::run::text;

/// `idemdb rm`.
pub fn rm(global: &Global, args: RmArgs) -> Result<u8, CliError> {
    let scope = text(args.key.scope, "scope")?;
    let key = text(args.key.key, "key")?;
    let reporter = Reporter {
        quiet: false,
        json: global.json,
    };
    let store = open_store(global, Access::Existing, None)?;
    // One open store holds the file: nothing can claim the key between the look and the
    // delete.
    let deleted = (|| -> Result<bool, CliError> {
        if let Some(holder) = running_holder(&store, &scope, &key)? {
            if !args.force {
                return Err(CliError::InUse {
                    scope: scope.clone(),
                    key: key.clone(),
                    owner: holder.owner,
                    why: holder.why,
                });
            }
            reporter.warn(
                "deleted_running",
                &format!(
                    "key {key:?}: deleting it while its run ({}) {} (--force): that run cannot record its result, and the next run executes COMMAND again",
                    holder.owner, holder.why
                ),
                json!({ "scope": scope, "key": key }),
            );
        }
        Ok(store.delete(&scope, &key)?)
    })();
    store.close()?;
    if !deleted? {
        return Err(CliError::NotFound(format!(
            "no record for key {key:?} in scope {scope:?}"
        )));
    }
    if global.json {
        output::print_json(&json!({ "scope": scope, "key": key, "deleted": true }))?;
    } else {
        output::print(&format!("deleted key {key:?} in scope {scope:?}\n"))?;
    }
    Ok(0)
}

/// The run holding a key, when it may still run.
struct Holder {
    /// Who, for people.
    owner: String,
    /// Why it counts as running, as a phrase.
    why: String,
}

/// Who holds (scope, key), if a run holds it that still runs on this host, or that runs
/// elsewhere with its lease live (its liveness cannot be checked from here).
fn running_holder(store: &Store, scope: &str, key: &str) -> Result<Option<Holder>, CliError> {
    let Some(record) = store.get(scope, key)? else {
        return Ok(None);
    };
    let RecordState::InFlight(flight) = record.state() else {
        return Ok(None);
    };
    if flight.abandoned_at().is_some() {
        return Ok(None);
    }
    let owner = owner::describe(flight.owner());
    let why = match owner::liveness(flight.owner()) {
        Liveness::Alive => "still runs".to_owned(),
        Liveness::Unknown if flight.lease_live(store.now()) => format!(
            "may still run (it cannot be checked from this host, and its lease runs until {})",
            output::time(flight.lease_until())
        ),
        Liveness::Unknown | Liveness::Dead(_) => return Ok(None),
    };
    Ok(Some(Holder { owner, why }))
}

/// `idemdb sweep`.
pub fn sweep(global: &Global) -> Result<u8, CliError> {
    let store = open_store(global, Access::Existing, None)?;
    let swept = store.sweep_now();
    store.close()?;
    let deleted = swept?;
    if global.json {
        output::print_json(&json!({ "deleted": deleted }))?;
    } else {
        output::print(&format!("deleted {deleted} expired records\n"))?;
    }
    Ok(0)
}

/// `idemdb compact`.
pub fn compact(global: &Global) -> Result<u8, CliError> {
    let (path, report) = with_file(global, "compacting", |path| maintenance::compact(path))?;
    if global.json {
        output::print_json(&json!({
            "path": path.display().to_string(),
            "size_before": report.size_before,
            "size_after": report.size_after,
            "passes": report.passes,
        }))?;
    } else {
        output::print(&format!(
            "{}: {} -> {} ({} freed)\n",
            path.display(),
            output::bytes(report.size_before),
            output::bytes(report.size_after),
            output::bytes(report.size_before.saturating_sub(report.size_after))
        ))?;
    }
    Ok(0)
}

/// `idemdb check`: exit status 0 when the store is sound, 75 when it is not. A damaged
/// database file or journal is a report (the file, what is damaged, how many records can
/// still be read), not a bare error.
pub fn check(global: &Global) -> Result<u8, CliError> {
    let (path, report) = with_file(global, "checking", |path| maintenance::check(path))?;
    let journal = report.journal.as_ref();
    if global.json {
        let problems: Vec<_> = report
            .problems
            .iter()
            .map(|p| json!({ "kind": p.kind.as_str(), "detail": p.detail }))
            .collect();
        let journal = journal.map(|j| {
            json!({
                "path": j.path.display().to_string(),
                "frames": j.frames,
                "cut_short": j.cut_short,
                "discarded_tail": j.discarded_tail.map(|t| json!({
                    "frames": t.frames,
                    "bytes": t.bytes,
                    "offset": t.offset,
                })),
            })
        });
        output::print_json(&json!({
            "path": path.display().to_string(),
            "healthy": report.is_healthy(),
            "pages": if report.pages_verified { "verified" } else { "damaged" },
            "journal": journal,
            "records": report.records,
            "index_entries": report.index_entries,
            "problem_count": report.problem_count,
            "problems": problems,
        }))?;
    } else {
        let pages = if report.pages_verified {
            "pages verified"
        } else {
            "DAMAGED"
        };
        let readable = if report.pages_verified {
            ""
        } else {
            " still readable"
        };
        let mut text = format!(
            "{}: {pages}, {} records{readable}, {} expiry-index entries, {} problems\n",
            path.display(),
            report.records,
            report.index_entries,
            report.problem_count
        );
        if let Some(j) = journal {
            text.push_str(&format!(
                "{}: {} unfolded frames{}\n",
                j.path.display(),
                j.frames,
                match j.discarded_tail {
                    Some(t) => format!(
                        ", discarded tail: {} frames, {} bytes at offset {}",
                        t.frames, t.bytes, t.offset
                    ),
                    None => String::new(),
                }
            ));
        }
        for p in &report.problems {
            text.push_str(&format!("  {}: {}\n", p.kind, p.detail));
        }
        if report.problem_count > report.problems.len() as u64 {
            text.push_str(&format!(
                "  … and {} more\n",
                report.problem_count - report.problems.len() as u64
            ));
        }
        if !report.pages_verified {
            text.push_str("  `idemdb export --salvage` writes out every record still readable\n");
        }
        output::print(&text)?;
    }
    if report.is_healthy() {
        return Ok(0);
    }
    Err(CliError::Unhealthy(format!(
        "{}: the store is corrupt or inconsistent: {} problems found",
        path.display(),
        report.problem_count
    )))
}
