//! `export` and `import`: records as JSON lines (the format is described in `records`),
//! with a progress bar when stderr is a terminal.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::args::{ExportArgs, Global, ImportArgs};
use crate::exit::{self, CliError};
use crate::open::{Access, open_store};
use crate::output::{self, Reporter};
use crate::records::{EXPORT_VERSION, Header, Line};
use crate::run::text;

fn progress_bar(total: Option<u64>, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if total.is_some() {
        format!("{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{eta}})")
    } else {
        format!("{{msg}} {{spinner}} {{pos}} {unit}")
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `idemdb export`.
pub fn export(global: &Global, args: ExportArgs) -> Result<u8, CliError> {
    let scope = args.scope.clone().map(|s| text(s, "scope")).transpose()?;
    let store = open_store(global, Access::Read, None)?;
    let written = write_export(&store, scope.as_deref(), &args);
    store.close()?;
    let (records, unreadable) = written?;

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
            "{unreadable} damaged records could not be read and are missing from the export; run `idemdb check`"
        )));
    }
    Ok(0)
}

fn write_export(
    store: &idemdb::Store,
    scope: Option<&str>,
    args: &ExportArgs,
) -> Result<(u64, u64), CliError> {
    let scan = || {
        if args.include_expired {
            store.scan_including_expired(scope)
        } else {
            store.scan(scope)
        }
    };
    let mut sink: Box<dyn Write> = match &args.output {
        Some(path) => {
            Box::new(BufWriter::new(File::create(path).map_err(|e| {
                CliError::io(format!("creating {}", path.display()), e)
            })?))
        }
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let bar = if std::io::stderr().is_terminal() {
        // Counting first costs a second pass over the keys, only to show how far it is.
        let total = scan()?.count() as u64;
        progress_bar(Some(total), "records")
    } else {
        ProgressBar::hidden()
    };
    bar.set_message("exporting");
    let failed = |e: std::io::Error| CliError::io("writing the export", e);
    let header = Header {
        idemdb_export: EXPORT_VERSION,
        exported_at: store.now().as_millis(),
    };
    let header = serde_json::to_string(&header)
        .map_err(|e| CliError::io("encoding the export header", e.into()))?;
    writeln!(sink, "{header}").map_err(failed)?;
    let (mut records, mut unreadable) = (0u64, 0u64);
    for entry in scan()? {
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
    written: u64,
    kept: u64,
}

/// `idemdb import`.
pub fn import(global: &Global, args: ImportArgs) -> Result<u8, CliError> {
    let from_stdin = args.input.as_deref().is_none_or(|p| p == Path::new("-"));
    let (input, bar): (Box<dyn Read>, ProgressBar) = match &args.input {
        Some(path) if !from_stdin => {
            let file = File::open(path)
                .map_err(|e| CliError::io(format!("opening {}", path.display()), e))?;
            let size = file.metadata().map(|m| m.len()).ok();
            (Box::new(file), progress_bar(size, "bytes"))
        }
        _ => (
            Box::new(std::io::stdin().lock()),
            progress_bar(None, "bytes"),
        ),
    };
    bar.set_message("importing");
    let mut reader = BufReader::new(Counting {
        inner: input,
        bar: bar.clone(),
    });
    let store = open_store(global, Access::Bulk, None)?;
    let result = read_import(&store, &mut reader, args.overwrite);
    // Closing makes everything imported so far durable, also when a line failed.
    let closed = store.close();
    bar.finish_and_clear();
    let imported = match result {
        Ok(imported) => imported,
        Err((error, imported)) => {
            return Err(prefix_partial(error, &imported));
        }
    };
    closed?;
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

fn prefix_partial(error: CliError, imported: &Imported) -> CliError {
    if imported.written == 0 {
        return error;
    }
    let note = format!("{} records before it were imported", imported.written);
    match error {
        CliError::Invalid(message) => CliError::Invalid(format!("{message}; {note}")),
        other => other,
    }
}

fn read_import(
    store: &idemdb::Store,
    reader: &mut impl BufRead,
    overwrite: bool,
) -> Result<Imported, (CliError, Imported)> {
    let mut imported = Imported::default();
    let mut buf = String::new();
    let mut number = 0u64;
    let mut header_seen = false;
    loop {
        buf.clear();
        number += 1;
        let read = reader.read_line(&mut buf);
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let error = CliError::Invalid(format!("line {number}: not UTF-8 text"));
                return Err((error, imported));
            }
            Err(e) => return Err((CliError::io("reading the import", e), imported)),
        };
        if n == 0 {
            break;
        }
        let line = buf.trim();
        if line.is_empty() {
            continue;
        }
        if !header_seen {
            let header: Header = match serde_json::from_str(line) {
                Ok(header) => header,
                Err(e) => {
                    let error = CliError::Invalid(format!(
                        "line {number}: not an idemdb export header ({e}); an export starts with {{\"idemdb_export\":{EXPORT_VERSION},…}}"
                    ));
                    return Err((error, imported));
                }
            };
            if header.idemdb_export != EXPORT_VERSION {
                let error = CliError::Invalid(format!(
                    "line {number}: export format {} is not supported (this build reads format {EXPORT_VERSION})",
                    header.idemdb_export
                ));
                return Err((error, imported));
            }
            header_seen = true;
            continue;
        }
        let parsed: Line = match serde_json::from_str(line) {
            Ok(parsed) => parsed,
            Err(e) => return Err((CliError::Invalid(format!("line {number}: {e}")), imported)),
        };
        let record = match parsed.to_record() {
            Ok(record) => record,
            Err(e) => return Err((CliError::Invalid(format!("line {number}: {e}")), imported)),
        };
        match store.import(&parsed.scope, &parsed.key, record, overwrite) {
            Ok(true) => imported.written += 1,
            Ok(false) => imported.kept += 1,
            Err(e) => {
                let error = CliError::from(e);
                let error = if error.code() == exit::INVALID_INPUT {
                    CliError::Invalid(format!("line {number}: {error}"))
                } else {
                    error
                };
                return Err((error, imported));
            }
        }
    }
    if !header_seen {
        return Err((
            CliError::Invalid(
                "the input is empty: an export has at least its header line".to_owned(),
            ),
            imported,
        ));
    }
    Ok(imported)
}
