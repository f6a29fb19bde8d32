//! `idemdb`: durable "at most once" for scripts, cron jobs and operators.
//!
//! `idemdb run --key KEY -- COMMAND` runs COMMAND at most once per key and replays its
//! recorded result to every retry; the operator commands (`get`, `ls`, `rm`, `stats`,
//! `sweep`, `compact`, `check`, `export`, `import`) look inside a store. `idemdb --help`
//! lists everything, including the exit codes.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

mod admin;
mod args;
mod capture;
mod exit;
mod inspect;
mod open;
mod output;
mod owner;
mod progress;
mod records;
mod response;
mod run;
mod signals;
mod transfer;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::args::{Cli, Command};
use crate::exit::CliError;

fn main() -> ExitCode {
    quiet_storage_panics();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version print to stdout and succeed; every other parse error is
            // invalid input, with clap's own message on stderr.
            let code = match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => exit::INVALID_INPUT,
            };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    let json = cli.global.json;
    let store = open::store_path(&cli.global).ok().map(|(path, _)| path);
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        // A reader that went away (`idemdb ls | head -1`) has what it wanted: the command
        // ends quietly and successfully, as a filter does.
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            let error = match &store {
                Some(path) => error.naming_store(path),
                None => error,
            };
            output::report_error(json, &error);
            ExitCode::from(error.code())
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8, CliError> {
    let global = &cli.global;
    match cli.command {
        Command::Run(args) => run::run(global, args),
        Command::Get(args) => inspect::get(global, args),
        Command::Ls(args) => inspect::ls(global, args),
        Command::Rm(args) => admin::rm(global, args),
        Command::Stats => inspect::stats(global),
        Command::Sweep => admin::sweep(global),
        Command::Compact => admin::compact(global),
        Command::Check => admin::check(global),
        Command::Export(args) => transfer::export(global, args),
        Command::Import(args) => transfer::import(global, args),
    }
}

/// The storage engine can panic on damaged pages (a normal open does not verify every
/// page); idemdb catches such a panic and reports the damage as a corrupt store, so the
/// panic's own message and backtrace would only be noise before that report.
fn quiet_storage_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_storage = info.location().is_some_and(|l| l.file().contains("/redb-"));
        if !in_storage {
            default(info);
        }
    }));
}
