//! A task's log lines as the runner hands them on: which stream, the bytes,
//! whether they were cut; and [`LogSink`], what receives them.
//!
//! Model types: no I/O. The runner produces lines; history, the terminal and
//! the MCP server consume them through sinks.

use serde::{Deserialize, Serialize};

use crate::task::TaskName;

/// Which output stream a log line came from.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The task's stdout.
    Stdout,
    /// The task's stderr.
    Stderr,
}

/// One line a task printed.
#[derive(Debug, Clone, Copy)]
pub struct LogLine<'a> {
    /// The task's name.
    pub task: &'a TaskName,
    /// The run the line belongs to.
    pub run_id: &'a str,
    /// Where it was printed.
    pub stream: Stream,
    /// The line without its terminator; may hold invalid UTF-8.
    pub text: &'a [u8],
    /// Whether the line was longer than the limit and cut.
    pub truncated: bool,
}

/// Receives a task's log lines as they are printed. Called from the runner's
/// reader tasks; keep it quick.
pub trait LogSink: Send + Sync {
    /// One line of output.
    fn line(&self, line: LogLine<'_>);
}

/// A sink that drops every line.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardLogs;

impl LogSink for DiscardLogs {
    fn line(&self, _line: LogLine<'_>) {}
}

/// Sends each line to two sinks (e.g. the terminal and the history).
pub struct Tee<'a>(pub &'a dyn LogSink, pub &'a dyn LogSink);

impl LogSink for Tee<'_> {
    fn line(&self, line: LogLine<'_>) {
        self.0.line(line);
        self.1.line(line);
    }
}
