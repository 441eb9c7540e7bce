//! Human output: colour decisions, the task log sink, and rendering of runs.
//! Machine output (`--json`) is the library's views (`task_executor::view`),
//! on stdout alone.
//!
//! Text a task or a store supplies (names, descriptions, locations, log
//! lines, reasons, payloads, error messages) goes through [`clean`] (or
//! [`Clean`]) on its way to human output, so that a task cannot move the
//! cursor, clear or retitle the user's terminal: every control character
//! but tab and newline is shown as an escape instead. `--json` output and
//! stored logs keep the bytes as they were.

use std::borrow::Cow;
use std::fmt;
use std::io::{IsTerminal, Write};

use std::time::Duration;

use task_executor::history::RunRecord;
use task_executor::{ExitInfo, LogLine, LogSink, Outcome};

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

/// Whether `c` is a control character a terminal may act on: C0 but tab
/// and newline, DEL, and C1.
fn is_control(c: char) -> bool {
    matches!(c, '\0'..='\x08' | '\x0b'..='\x1f' | '\x7f'..='\u{9f}')
}

/// `text` safe to print: each control character (C0 but tab and newline —
/// ESC, BEL, CR, backspace… —, DEL and C1) written as an escape, `\x1b` for
/// ESC, `\x7f` for DEL, `\u{9b}` for C1's CSI. Everything else, backslashes
/// included, is kept.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !is_control(c) => out.push(c),
            c if c <= '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// A value displayed through [`clean`]: `format!("{}", Clean(&task.name))`.
pub struct Clean<T>(pub T);

impl<T: fmt::Display> fmt::Display for Clean<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&clean(&self.0.to_string()))
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
        let text = clean(&text);
        let prefix = self.style.dim(&format!("TASK::{}", Clean(line.task)));
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

/// Human rendering of a run, for stdout: its result or failure when an
/// attempt has ended, else its state and why.
pub fn render_run(r: &RunRecord, style: Style) -> String {
    let mut out = String::new();
    let Some(outcome) = r.outcome.as_ref().filter(|_| r.state.is_terminal()) else {
        let why = r.error.as_ref().map(|e| format!(": {}", clean(&e.message)));
        out.push_str(&format!(
            "Run {} of task {} is {}{}\n",
            r.id,
            style.bold(&clean(r.task.as_str())),
            r.state,
            why.unwrap_or_default()
        ));
        return out;
    };
    let took = took(r.duration_ms().unwrap_or(0));
    match outcome {
        Outcome::Completed { result } if result.is_success() => {
            out.push_str(&format!(
                "Task {} {} with status {} ({}) in {took}\n",
                style.bold(&clean(r.task.as_str())),
                style.green("succeeded"),
                result.status,
                clean(&result.reason)
            ));
        }
        other => {
            out.push_str(&format!(
                "Task {} {}: {} ({took})\n",
                style.bold(&clean(r.task.as_str())),
                style.red("failed"),
                clean(&other.describe())
            ));
        }
    }
    if let Some(result) = outcome.result() {
        let payload = serde_json::to_string_pretty(&result.payload).unwrap_or_default();
        out.push_str(&format!("payload:\n{}\n", clean(&payload)));
    }
    out.push_str(&style.dim(&format!("run {}", r.id)));
    if let Some(exit) = &r.exit {
        out.push_str(&style.dim(&format!(", {}", exit_text(exit))));
    }
    out.push('\n');
    out
}

/// A run's duration as text: `41ms`, `2s 5ms`; `<1ms` for a run that
/// took less than the millisecond history counts in.
pub fn took(ms: u64) -> String {
    if ms == 0 {
        return "<1ms".to_owned();
    }
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

pub fn exit_text(exit: &ExitInfo) -> String {
    match exit {
        ExitInfo::Code { code } => format!("exit code {code}"),
        ExitInfo::Signal { name, .. } => format!("killed by {name}"),
    }
}

/// `value` as compact JSON of at most `max` characters, cut with `…`.
pub fn short_json(value: &serde_json::Value, max: usize) -> String {
    let text = value.to_string();
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A table of human output with `header`: condensed UTF-8 borders, columns
/// fitted to the terminal. The one look every listing has.
pub fn table<const N: usize>(header: [&str; N]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(header);
    table
}

#[cfg(test)]
mod tests {
    use super::{clean, took};

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            clean("plain\ttab\nnewline ünï \\x1b"),
            "plain\ttab\nnewline ünï \\x1b"
        );
        assert_eq!(
            clean("\x1b[2J\x07bell\r\x08\x7f\u{9b}31m\0"),
            r"\x1b[2J\x07bell\x0d\x08\x7f\u{9b}31m\x00"
        );
    }

    #[test]
    fn a_run_under_a_millisecond_does_not_read_as_zero_seconds() {
        assert_eq!(took(0), "<1ms");
        assert_eq!(took(41), "41ms");
        assert_eq!(took(2005), "2s 5ms");
    }
}
