//! Progress on stderr for steps that can take long (scanning a large store, checking or
//! compacting it, waiting for the lock), shown only when stderr is a terminal and the
//! output is not `--json`: pipes, files and programs see nothing of it.

use std::io::IsTerminal;
use std::ops::Deref;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a spinner moves while nothing else changes.
const TICK: Duration = Duration::from_millis(120);

/// Whether progress may be drawn at all.
pub fn shown(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A progress display that is cleared from the terminal when dropped, however the step
/// ends.
pub struct Progress(ProgressBar);

impl Deref for Progress {
    type Target = ProgressBar;

    fn deref(&self) -> &ProgressBar {
        &self.0
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A bar counting `unit`s up to `total` (a spinner with a count when the total is unknown).
pub fn bar(json: bool, total: Option<u64>, unit: &str, message: &str) -> Progress {
    Progress(new_bar(json, total, unit, message))
}

fn new_bar(json: bool, total: Option<u64>, unit: &str, message: &str) -> ProgressBar {
    if !shown(json) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        format!("{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{eta}})")
    } else {
        format!("{{msg}} {{spinner}} {{pos}} {unit} ({{elapsed}})")
    };
    let bar = styled(bar, &template);
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(TICK);
    bar
}

/// A spinner with how long a step has taken so far, for steps that cannot count.
pub fn spinner(json: bool, message: &str) -> Progress {
    Progress(new_spinner(json, message))
}

fn new_spinner(json: bool, message: &str) -> ProgressBar {
    if !shown(json) {
        return ProgressBar::hidden();
    }
    let bar = styled(
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        "{spinner} {msg} ({elapsed})",
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(TICK);
    bar
}
