//! `export` and `import`: records as JSON lines (the format is described in `records`),
//! with a progress bar when stderr is a terminal.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde_json::json;

use crate::args::{ExportArgs, Global, ImportArgs};
use crate::exit::{self, CliError};
use crate::open::{Access, open_store};
use crate::output::{self, Reporter};
use crate::progress;
use crate::records::{EXPORT_VERSION, Header, Line, TRAILER_START, Trailer, UNTRAILED_VERSION};
use crate::run::text;
use crate::signals::Interrupts;

/// `idemdb export`.
pub fn export(global: &Global, args: ExportArgs) -> Result<u8, CliError> {
    if args.salvage {
        return export_salvage(global, &args);
    }
    let scope = args.scope.clone().map(|s| text(s, "scope")).transpose()?;
    // Caught, so that an export stopped by Ctrl-C removes its temporary file.
    let interrupts =
        Interrupts::install().map_err(|e| CliError::io("catching SIGINT and SIGTERM", e))?;
    let stopped = |error: CliError| match (error, &args.output) {
        (CliError::Interrupted(signal), Some(path)) => CliError::Stopped {
            signal,
            what: format!("nothing written to {}", path.display()),
        },
        (CliError::Interrupted(signal), None) => CliError::Stopped {
            signal,
            what: "the export on stdout is incomplete (it has no trailer)".to_owned(),
        },
        (other, _) => other,
    };
    let store = open_store(global, Access::Read, Some(&interrupts)).map_err(stopped)?;
    let to = Sink {
        json: global.json,
        interrupts: &interrupts,
    };
    let written = match &args.output {
        Some(path) => write_through_temporary(path, |sink, name| {
            write_export(&store, scope.as_deref(), &args, sink, name, &to)
        }),
        None => {
            let mut sink = BufWriter::new(std::io::stdout().lock());
            write_export(&store, scope.as_deref(), &args, &mut sink, "stdout", &to)
        }
    };
    let closed = store.close();
    let (records, unreadable) = written.map_err(stopped)?;
    closed?;

    let summary = format!("exported {records} records");
    match (&args.output, global.json) {
        (Some(path), true) => output::print_json(&json!({
            "path": path.display().to_string(),
            "records": records,
            "unreadable": unreadable,
        }))?,
        (Some(path), false) => output::print(&format!("{summary} to {}\n", path.display()))?,
        // The export itself is on stdout: the summary goes to stderr.
        (None, json) => Reporter { quiet: false, json }.note(
            "exported",
            &summary,
            json!({ "records": records, "unreadable": unreadable }),
        ),
    }
    if unreadable > 0 {
        return Err(CliError::Unhealthy(format!(
            "{unreadable} damaged records could not be read and are missing from the export (its trailer counts the {records} written); run `idemdb check`"
        )));
    }
    Ok(0)
}

/// Writes `path` through a temporary file beside it, renamed over `path` only once it is
/// complete and synced: a failed or interrupted export never leaves a partial file under
/// the name asked for. `write` gets the sink and a name for it in messages.
fn write_through_temporary<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write, &str) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let name = path.file_name().ok_or_else(|| {
        CliError::Invalid(format!("{}: not a file name to write to", path.display()))
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temporary: PathBuf = dir.join(format!(
        ".{}.{}.partial",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .map_err(|e| CliError::io(format!("creating {}", temporary.display()), e))?;
    let label = temporary.display().to_string();
    let written = (|| {
        let mut sink = BufWriter::new(file);
        let value = write(&mut sink, &label)?;
        let file = sink
            .into_inner()
            .map_err(|e| CliError::io(format!("writing {label}"), e.into_error()))?;
        file.sync_all()
            .map_err(|e| CliError::io(format!("syncing {label}"), e))?;
        std::fs::rename(&temporary, path)
            .map_err(|e| CliError::io(format!("renaming {label} to {}", path.display()), e))?;
        Ok(value)
    })();
    match &written {
        // The rename is durable once the directory is synced; a failure here loses
        // nothing written, so it is not worth failing the export for.
        Ok(_) => {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Err(_) => {
            let _ = std::fs::remove_file(&temporary);
        }
    }
    written
}

/// How an export is watched while it writes: progress on a terminal, and signals that stop
/// it.
struct Sink<'a> {
    json: bool,
    interrupts: &'a Interrupts,
}

fn write_export(
    store: &idemdb::Store,
    scope: Option<&str>,
    args: &ExportArgs,
    sink: &mut dyn Write,
    sink_name: &str,
    watch: &Sink<'_>,
) -> Result<(u64, u64), CliError> {
    let json = watch.json;
    let scan = || {
        if args.include_expired {
            store.scan_including_expired(scope)
        } else {
            store.scan(scope)
        }
    };
    // Counting first costs a second pass over the keys, only to show how far it is.
    let total = if progress::shown(json) {
        Some(scan()?.count() as u64)
    } else {
        None
    };
    let bar = progress::bar(json, total, "records", "exporting");
    let failed = |e: std::io::Error| CliError::io(format!("writing {sink_name}"), e);
    let header = Header {
        idemdb_export: EXPORT_VERSION,
        exported_at: store.now().as_millis(),
    };
    let header = serde_json::to_string(&header)
        .map_err(|e| CliError::io("encoding the export header", e.into()))?;
    writeln!(sink, "{header}").map_err(failed)?;
    let (mut records, mut unreadable) = (0u64, 0u64);
    for entry in scan()? {
        if let Some(signal) = watch.interrupts.received() {
            return Err(CliError::Interrupted(signal));
        }
        let entry = match entry {
            Ok(entry) => entry,
            Err(idemdb::Error::Corrupt { .. }) => {
                unreadable += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let line = serde_json::to_string(&Line::of(&entry.scope, &entry.key, &entry.record))
            .map_err(|e| CliError::io("encoding a record", e.into()))?;
        writeln!(sink, "{line}").map_err(failed)?;
        records += 1;
        bar.inc(1);
    }
    let trailer = serde_json::to_string(&Trailer {
        idemdb_export_end: true,
        records,
    })
    .map_err(|e| CliError::io("encoding the export trailer", e.into()))?;
    writeln!(sink, "{trailer}").map_err(failed)?;
    sink.flush().map_err(failed)?;
    bar.finish_and_clear();
    Ok((records, unreadable))
}

/// Counts the bytes read through it, for the progress bar.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// What an import did.
#[derive(Default)]
struct Imported {
    /// Records written.
    written: u64,
    /// Records read but not written (a live record existed, no `--overwrite`).
    kept: u64,
}

impl Imported {
    fn read(&self) -> u64 {
        self.written + self.kept
    }
}

/// `idemdb import`.
pub fn import(global: &Global, args: ImportArgs) -> Result<u8, CliError> {
    let from_stdin = args.input.as_deref().is_none_or(|p| p == Path::new("-"));
    let (input, bar, source): (Box<dyn Read>, progress::Progress, String) = match &args.input {
        Some(path) if !from_stdin => {
            let file = File::open(path)
                .map_err(|e| CliError::io(format!("opening {}", path.display()), e))?;
            let size = file.metadata().map(|m| m.len()).ok();
            (
                Box::new(file),
                progress::bar(global.json, size, "bytes", "importing"),
                path.display().to_string(),
            )
        }
        _ => (
            Box::new(std::io::stdin().lock()),
            progress::bar(global.json, None, "bytes", "importing"),
            "stdin".to_owned(),
        ),
    };
    let mut reader = BufReader::new(Counting {
        inner: input,
        bar: ProgressBar::clone(&bar),
    });
    let store = open_store(global, Access::Bulk, None).map_err(|error| CliError::Partial {
        imported: 0,
        kept: 0,
        durable: true,
        source: Box::new(error),
    })?;
    let result = read_import(&store, &mut reader, &source, &args);
    // Closing makes everything imported so far durable, also when a line failed.
    let closed = store.close();
    bar.finish_and_clear();
    let (imported, stopped) = match result {
        Ok(imported) => (imported, None),
        Err((error, imported)) => (imported, Some(error)),
    };
    match (stopped, closed) {
        (None, Ok(())) => {}
        (Some(error), closed) => {
            return Err(CliError::Partial {
                imported: imported.written,
                kept: imported.kept,
                durable: closed.is_ok(),
                source: Box::new(error),
            });
        }
        (None, Err(error)) => {
            return Err(CliError::Partial {
                imported: imported.written,
                kept: imported.kept,
                durable: false,
                source: Box::new(error.into()),
            });
        }
    }
    if global.json {
        output::print_json(&json!({ "imported": imported.written, "kept": imported.kept }))?;
    } else {
        let mut text = format!("imported {} records", imported.written);
        if imported.kept > 0 {
            text.push_str(&format!(
                "; kept {} existing live records (--overwrite replaces them)",
                imported.kept
            ));
        }
        output::print(&format!("{text}\n"))?;
    }
    Ok(0)
}

/// Reads an export line by line into the store. The error comes with what was imported
/// before it.
fn read_import(
    store: &idemdb::Store,
    reader: &mut impl BufRead,
    source: &str,
    args: &ImportArgs,
) -> Result<Imported, (CliError, Imported)> {
    let mut imported = Imported::default();
    let mut buf = String::new();
    let mut number = 0u64;
    let mut header_seen = false;
    // The trailer's line and count, once read.
    let mut trailer: Option<(u64, u64)> = None;
    loop {
        buf.clear();
        number += 1;
        let read = reader.read_line(&mut buf);
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let error = CliError::Invalid(format!("{source}: line {number}: not UTF-8 text"));
                return Err((error, imported));
            }
            Err(e) => return Err((CliError::io(format!("reading {source}"), e), imported)),
        };
        if n == 0 {
            break;
        }
        let line = buf.trim();
        if line.is_empty() {
            continue;
        }
        let invalid =
            |message: String| CliError::Invalid(format!("{source}: line {number}: {message}"));
        if !header_seen {
            if let Err(message) = check_header(line, args.no_trailer) {
                return Err((invalid(message), imported));
            }
            header_seen = true;
            continue;
        }
        if let Some((at, _)) = trailer {
            let error = invalid(format!(
                "more lines after the export's trailer (line {at}): the file was edited or two exports were joined"
            ));
            return Err((error, imported));
        }
        if line.starts_with(TRAILER_START) {
            match serde_json::from_str::<Trailer>(line) {
                Ok(end) if end.idemdb_export_end => {
                    trailer = Some((number, end.records));
                    continue;
                }
                Ok(_) => {
                    return Err((
                        invalid("a trailer must say \"idemdb_export_end\":true".to_owned()),
                        imported,
                    ));
                }
                Err(e) => return Err((invalid(format!("not an export trailer ({e})")), imported)),
            }
        }
        let parsed: Line = match serde_json::from_str(line) {
            Ok(parsed) => parsed,
            Err(e) => return Err((invalid(e.to_string()), imported)),
        };
        let record = match parsed.to_record() {
            Ok(record) => record,
            Err(e) => return Err((invalid(e), imported)),
        };
        match store.import(&parsed.scope, &parsed.key, record, args.overwrite) {
            Ok(true) => imported.written += 1,
            Ok(false) => imported.kept += 1,
            Err(e) => {
                let error = CliError::from(e);
                let error = if error.code() == exit::INVALID_INPUT {
                    invalid(error.to_string())
                } else {
                    error
                };
                return Err((error, imported));
            }
        }
    }
    if !header_seen {
        let error = CliError::Invalid(format!(
            "{source}: the input is empty: an export has at least its header and trailer lines"
        ));
        return Err((error, imported));
    }
    let read = imported.read();
    match trailer {
        Some((at, count)) if count != read => {
            let error = CliError::Invalid(format!(
                "{source}: the export's trailer (line {at}) counts {count} records, but {read} were read: the file was cut or edited"
            ));
            Err((error, imported))
        }
        Some(_) => Ok(imported),
        None if args.no_trailer => Ok(imported),
        None => {
            let error = CliError::Invalid(format!(
                "{source}: the input ended after {read} records without the export's trailer line ({TRAILER_START}:true,\"records\":N}}): it was cut short (--no-trailer accepts an export without one)"
            ));
            Err((error, imported))
        }
    }
}

/// Checks an export's first line: the error says what is wrong with it.
fn check_header(line: &str, no_trailer: bool) -> Result<(), String> {
    let header: Header = serde_json::from_str(line).map_err(|e| {
        format!(
            "not an idemdb export header ({e}); an export starts with {{\"idemdb_export\":{EXPORT_VERSION},…}}"
        )
    })?;
    match header.idemdb_export {
        EXPORT_VERSION => Ok(()),
        UNTRAILED_VERSION if no_trailer => Ok(()),
        UNTRAILED_VERSION => Err(format!(
            "a format-{UNTRAILED_VERSION} export has no trailer, so one cut short cannot be told from a whole one (--no-trailer imports it anyway, if you know it is whole)"
        )),
        other => Err(format!(
            "export format {other} is not supported (this build reads formats {UNTRAILED_VERSION} and {EXPORT_VERSION})"
        )),
    }
}

/// `idemdb export --salvage`: every record still decodable from a damaged store and its
/// journal, read without opening the store (nothing is written to it). The export has the
/// usual trailer (counting the records written) and `-o` writes through a temporary file,
/// as for a normal export. Exits 75 when anything had to be skipped, after writing what
/// could be read.
fn export_salvage(global: &Global, args: &ExportArgs) -> Result<u8, CliError> {
    let scope = args.scope.clone().map(|s| text(s, "scope")).transpose()?;
    let (path, _) = crate::open::store_path(global)?;
    let salvage = idemdb::maintenance::salvage(&path).map_err(CliError::from)?;
    let exported_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let entries = salvage
        .entries
        .iter()
        .filter(|entry| scope.as_deref().is_none_or(|s| s == entry.scope));
    let records = match &args.output {
        Some(out) => write_through_temporary(out, |sink, name| {
            write_salvaged(entries, exported_at, sink, name)
        })?,
        None => {
            let mut sink = BufWriter::new(std::io::stdout().lock());
            write_salvaged(entries, exported_at, &mut sink, "stdout")?
        }
    };
    let reporter = Reporter {
        quiet: false,
        json: global.json,
    };
    for skipped in &salvage.skipped {
        reporter.note("skipped", skipped, json!({ "what": skipped }));
    }
    reporter.note(
        "salvaged",
        &format!(
            "salvaged {records} records from {} ({} from its journal); {} undecodable records skipped",
            path.display(),
            salvage.from_journal,
            salvage.skipped_records
        ),
        json!({
            "path": path.display().to_string(),
            "records": records,
            "from_journal": salvage.from_journal,
            "skipped_records": salvage.skipped_records,
            "skipped": salvage.skipped,
        }),
    );
    if salvage.skipped.is_empty() && salvage.skipped_records == 0 {
        return Ok(0);
    }
    Err(CliError::Unhealthy(format!(
        "{}: the salvage skipped damaged parts (listed above)",
        path.display()
    )))
}

/// Writes salvaged records as an export (header, records, trailer); returns how many.
fn write_salvaged<'a>(
    entries: impl Iterator<Item = &'a idemdb::ScanEntry>,
    exported_at: u64,
    sink: &mut dyn Write,
    sink_name: &str,
) -> Result<u64, CliError> {
    let failed = |e: std::io::Error| CliError::io(format!("writing {sink_name}"), e);
    let header = serde_json::to_string(&Header {
        idemdb_export: EXPORT_VERSION,
        exported_at,
    })
    .map_err(|e| CliError::io("encoding the export header", e.into()))?;
    writeln!(sink, "{header}").map_err(failed)?;
    let mut records = 0u64;
    for entry in entries {
        let line = serde_json::to_string(&Line::of(&entry.scope, &entry.key, &entry.record))
            .map_err(|e| CliError::io("encoding a record", e.into()))?;
        writeln!(sink, "{line}").map_err(failed)?;
        records += 1;
    }
    let trailer = serde_json::to_string(&Trailer {
        idemdb_export_end: true,
        records,
    })
    .map_err(|e| CliError::io("encoding the export trailer", e.into()))?;
    writeln!(sink, "{trailer}").map_err(failed)?;
    sink.flush().map_err(failed)?;
    Ok(records)
}
