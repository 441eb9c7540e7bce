//! Human output: colour decisions, the task log sink, and rendering of runs.
//! Machine output (`--json`) is built in the commands and goes to stdout alone.

use std::io::{IsTerminal, Write};

use task_executor::{ExitInfo, LogLine, LogSink};
use task_executor::{Outcome, RunReport};

/// Whether to colour a stream: only on a terminal, and never when `NO_COLOR` is set.
pub fn color_for(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Colour choices for one stream.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    on: bool,
}

impl Style {
    pub fn stdout() -> Self {
        Self {
            on: color_for(std::io::stdout().is_terminal()),
        }
    }
    pub fn stderr() -> Self {
        Self {
            on: color_for(std::io::stderr().is_terminal()),
        }
    }
    fn paint(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
}

/// Prints each task log line to stderr as `TASK::<name> <line>`, above the
/// progress bar when there is one.
pub struct StderrLogs {
    style: Style,
    bar: Option<indicatif::ProgressBar>,
}

impl StderrLogs {
    pub fn new() -> Self {
        Self {
            style: Style::stderr(),
            bar: None,
        }
    }

    pub fn with_bar(bar: Option<indicatif::ProgressBar>) -> Self {
        Self {
            style: Style::stderr(),
            bar,
        }
    }
}

impl LogSink for StderrLogs {
    fn line(&self, line: LogLine<'_>) {
        let text = String::from_utf8_lossy(line.text);
        let prefix = self.style.dim(&format!("TASK::{}", line.task));
        let cut = if line.truncated { " […line cut]" } else { "" };
        let write = || {
            // A closed stderr is not worth failing the run over.
            let _ = writeln!(std::io::stderr().lock(), "{prefix} {text}{cut}");
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

/// Human rendering of a finished run, for stdout.
pub fn render_report(report: &RunReport, style: Style) -> String {
    let mut out = String::new();
    let took = humantime::format_duration(std::time::Duration::from_millis(
        report.duration.as_millis() as u64,
    ));
    match &report.outcome {
        Outcome::Completed { result } if result.is_success() => {
            out.push_str(&format!(
                "Task {} {} with status {} ({}) in {took}\n",
                style.bold(report.task.as_str()),
                style.green("succeeded"),
                result.status,
                result.reason
            ));
        }
        other => {
            out.push_str(&format!(
                "Task {} {}: {} ({took})\n",
                style.bold(report.task.as_str()),
                style.red("failed"),
                other.describe()
            ));
        }
    }
    if let Some(result) = report.outcome.result() {
        let payload = serde_json::to_string_pretty(&result.payload).unwrap_or_default();
        out.push_str(&format!("payload:\n{payload}\n"));
    }
    out.push_str(&style.dim(&format!("run {}", report.run_id)));
    if let Some(exit) = &report.exit {
        out.push_str(&style.dim(&format!(", {}", exit_text(exit))));
    }
    out.push('\n');
    out
}

pub fn exit_text(exit: &ExitInfo) -> String {
    match exit {
        ExitInfo::Code { code } => format!("exit code {code}"),
        ExitInfo::Signal { name, .. } => format!("killed by {name}"),
    }
}
