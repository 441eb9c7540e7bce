//! The JSON views: one serde type per concept, the same from every front end.
//!
//! A run is a [`RunView`] whether it comes from `execute --json`, a line of
//! `execute --batch --json`, `submit --json`, `runs show --json` or
//! the HTTP API; a task is a [`TaskView`] (in `list`, an entry the store
//! cannot use is an [`UnusableView`]); every list is a [`ListView`]
//! (`{"items": [...], "next": cursor|null}`); every error is an
//! [`ErrorView`] (`{kind, message, violations?}`), alone as
//! `{"error": {...}}` ([`ErrorDoc`]) when nothing could run. Times are RFC
//! 3339 UTC with milliseconds, durations whole milliseconds, and a JSON
//! pointer to the root is `""`, as RFC 6901 writes it. The shapes are
//! documented in `docs/json.md` and pinned by snapshot tests.

use serde::Serialize;
use serde_json::Value;

use crate::history::{LogEntry, RunRecord, RunState, from_ms};
use crate::outcome::{ExitInfo, Outcome};
use crate::queue::CancelResult;
use crate::schema::Violation;
use crate::store::{
    AuditEntry, Listed, Schedule, Scope, TokenRecord, TokenState, Unusable, WorkerRecord,
};
use crate::task::{Formats, Task, TaskName};

/// An epoch-milliseconds time as RFC 3339 UTC with milliseconds.
pub fn time_text(ms: i64) -> String {
    humantime::format_rfc3339_millis(from_ms(ms)).to_string()
}

/// A page of a list: `{"items": [...], "next": cursor|null}`; `next` is
/// where the following page starts (`--after`), `null` on the last page.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct ListView<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// The cursor of the next page, if there may be one.
    pub next: Option<String>,
}

impl<T> ListView<T> {
    /// A list that is complete in one page.
    pub fn all(items: Vec<T>) -> Self {
        Self { items, next: None }
    }
}

/// Why something could not be done, or why a run failed.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorView {
    /// A short, stable name for scripts (`invalid_args`, `timed_out`, …).
    pub kind: String,
    /// What happened and how to fix it, for people.
    pub message: String,
    /// Each schema violation, with its JSON pointer, when there are any.
    // `default`: absent when empty, so not required in the JSON Schema.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
}

impl ErrorView {
    /// An error of `kind`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            violations: Vec::new(),
        }
    }

    /// The error of a failed run's outcome: `None` for a completed run.
    pub fn of_outcome(outcome: &Outcome) -> Option<Self> {
        match outcome {
            Outcome::Completed { .. } => None,
            other => Some(Self {
                kind: other.kind().to_owned(),
                message: other.describe(),
                violations: match other {
                    Outcome::OutputViolation { violations, .. } => violations.clone(),
                    _ => Vec::new(),
                },
            }),
        }
    }
}

/// `{"error": {...}}`: what `--json` prints when nothing could run.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDoc {
    /// The error.
    pub error: ErrorView,
}

/// A task's queue policy, as shown.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    /// Retries of a failed run.
    pub retries: u32,
    /// The first retry's delay (`"1s"`), when set.
    pub backoff: Option<String>,
    /// The same in milliseconds.
    pub backoff_ms: Option<u64>,
    /// Whether a status other than 1 is retried too.
    pub retry_on_status: bool,
    /// At most this many running attempts across all workers, when capped.
    pub concurrency: Option<u32>,
    /// Claim priority.
    pub priority: i64,
    /// Only workers with all these tags claim its runs; empty: any worker.
    pub tags: Vec<String>,
}

/// A registered task.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct TaskView<'a> {
    /// Its name.
    pub name: &'a TaskName,
    /// Its executable.
    pub location: &'a std::path::Path,
    /// Its description, if it gave one.
    pub description: Option<&'a str>,
    /// The JSON Schema of its arguments.
    pub inputs: &'a Value,
    /// The JSON Schema of its result, when declared.
    pub outputs: Option<&'a Value>,
    /// Its default run timeout (`"30s"`), when set.
    pub timeout: Option<String>,
    /// The same in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Whether `format` is checked (`assert`) or only an annotation.
    pub formats: Formats,
    /// How the queue treats its runs.
    pub policy: PolicyView,
}

impl<'a> From<&'a Task> for TaskView<'a> {
    fn from(t: &'a Task) -> Self {
        let duration = |d: std::time::Duration| humantime::format_duration(d).to_string();
        Self {
            name: &t.name,
            location: &t.location,
            description: t.description.as_deref(),
            inputs: &t.inputs,
            outputs: t.outputs.as_ref(),
            timeout: t.timeout.map(duration),
            timeout_ms: t.timeout.map(|d| d.as_millis() as u64),
            formats: t.formats,
            policy: PolicyView {
                retries: t.policy.retries.unwrap_or(0),
                backoff: t.policy.backoff.map(duration),
                backoff_ms: t.policy.backoff.map(|d| d.as_millis() as u64),
                retry_on_status: t.policy.retry_on_status,
                concurrency: t.policy.concurrency,
                priority: t.policy.priority.unwrap_or(0),
                tags: t.policy.tags.clone(),
            },
        }
    }
}

/// An entry the store holds but cannot use (a YAML entry the original tool
/// wrote with a name or field this build refuses): `{name, location, error}`,
/// `error.kind` being `unusable_task`.
#[derive(Debug, Clone, Serialize)]
pub struct UnusableView<'a> {
    /// Its name as stored.
    pub name: &'a str,
    /// Its `location`, when the entry has a readable one.
    pub location: Option<&'a std::path::Path>,
    /// Why it cannot be used and how to fix that.
    pub error: ErrorView,
}

impl<'a> From<&'a Unusable> for UnusableView<'a> {
    fn from(u: &'a Unusable) -> Self {
        Self {
            name: &u.name,
            location: u.location.as_deref(),
            error: ErrorView::new("unusable_task", u.reason.clone()),
        }
    }
}

/// One item of `list --json`: a [`TaskView`], or an [`UnusableView`]
/// (told apart by its `error`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EntryView<'a> {
    /// A task.
    Task(TaskView<'a>),
    /// An entry that cannot be used.
    Unusable(UnusableView<'a>),
}

impl<'a> From<&'a Listed> for EntryView<'a> {
    fn from(e: &'a Listed) -> Self {
        match e {
            Listed::Task(t) => EntryView::Task(t.into()),
            Listed::Unusable(u) => EntryView::Unusable(u.into()),
        }
    }
}

/// One run: its state, its result or failure, its arguments (masked) and
/// its timeline.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct RunView<'a> {
    /// The run id.
    pub run_id: &'a str,
    /// The task.
    pub task: &'a TaskName,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub state: RunState,
    /// Whether it completed and its task reported status 1.
    pub success: bool,
    /// How the last finished attempt ended (`completed`, `timed_out`, …), if one has.
    pub outcome: Option<&'static str>,
    /// The status the task reported.
    pub status: Option<i64>,
    /// The reason the task gave.
    pub reason: Option<&'a str>,
    /// The payload the task returned (`null` when it returned none).
    pub payload: Option<&'a Value>,
    /// Why it failed, waits again or was cancelled; `null` otherwise.
    pub error: Option<ErrorView>,
    /// The process's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the process, if one did.
    pub signal: Option<&'a str>,
    /// The arguments, secret fields masked.
    pub args: &'a Value,
    /// Who asked for it.
    pub caller: &'a str,
    /// The current (or last) attempt, from 1; 0 before the first.
    pub attempt: u32,
    /// Attempts it may take.
    pub max_attempts: u32,
    /// Claim priority.
    pub priority: i64,
    /// The worker (or `execute` process) holding or last holding it.
    pub worker: Option<&'a str>,
    /// Whether a cancel was asked while it ran.
    pub cancel_requested: bool,
    /// The schedule that queued it.
    pub schedule: Option<&'a str>,
    /// When it was queued.
    pub queued_at: String,
    /// When it could first be claimed.
    pub available_at: String,
    /// When its current (or last) attempt started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// How long its last attempt took, in whole milliseconds.
    pub duration_ms: Option<u64>,
    /// Log lines cut from the middle of its stored log.
    pub log_cut_lines: u64,
    /// Bytes cut from the middle of its stored log.
    pub log_cut_bytes: u64,
    /// The input line, for `execute --batch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// History writes that failed after the task had started (`execute`
    /// only): the run's outcome stands, history may not show all of it.
    #[serde(default, skip_serializing_if = "<[String]>::is_empty")]
    pub warnings: &'a [String],
    /// Why a queued run waits when no live worker can take it (`runs show`
    /// only, see [`crate::service::Service::waiting`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

impl<'a> From<&'a RunRecord> for RunView<'a> {
    fn from(r: &'a RunRecord) -> Self {
        let result = r.outcome.as_ref().and_then(Outcome::result);
        let (exit_code, signal) = match &r.exit {
            Some(ExitInfo::Code { code }) => (Some(*code), None),
            Some(ExitInfo::Signal { name, .. }) => (None, Some(name.as_str())),
            None => (None, None),
        };
        let from_outcome = r.outcome.as_ref().and_then(ErrorView::of_outcome);
        let error = match (&r.error, from_outcome) {
            (Some(e), from_outcome) => Some(ErrorView {
                kind: e.kind.clone(),
                message: e.message.clone(),
                violations: from_outcome.map(|o| o.violations).unwrap_or_default(),
            }),
            (None, from_outcome) => from_outcome,
        };
        Self {
            run_id: &r.id,
            task: &r.task,
            state: r.state,
            success: r.state == RunState::Completed
                && r.outcome.as_ref().is_some_and(Outcome::is_success),
            outcome: r.outcome.as_ref().map(Outcome::kind),
            status: result.map(|r| r.status),
            reason: result.map(|r| r.reason.as_str()),
            payload: result.map(|r| &r.payload),
            error,
            exit_code,
            signal,
            args: &r.args,
            caller: &r.caller,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            priority: r.priority,
            worker: r.worker.as_deref(),
            cancel_requested: r.cancel_requested,
            schedule: r.schedule.as_deref(),
            queued_at: time_text(r.queued_at),
            available_at: time_text(r.available_at),
            started_at: r.started_at.map(time_text),
            finished_at: r.finished_at.map(time_text),
            duration_ms: r.duration_ms(),
            log_cut_lines: r.log_cut_lines,
            log_cut_bytes: r.log_cut_bytes,
            line: None,
            warnings: &[],
            waiting: None,
        }
    }
}

/// A line of `execute --batch` that could not run: `{"line": n, "error": {...}}`.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedLineView {
    /// The input line.
    pub line: u64,
    /// Why it did not run.
    pub error: ErrorView,
}

/// A cron schedule.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView<'a> {
    /// Its id.
    pub id: &'a str,
    /// The task it queues.
    pub task: &'a TaskName,
    /// Its cron expression (UTC).
    pub cron: &'a str,
    /// The arguments of each run, secret fields masked.
    pub args: &'a Value,
    /// The caller recorded on each run.
    pub caller: &'a str,
    /// Its next tick.
    pub next_fire_at: String,
    /// When it was added.
    pub created_at: String,
}

impl<'a> From<&'a Schedule> for ScheduleView<'a> {
    fn from(s: &'a Schedule) -> Self {
        Self {
            id: &s.id,
            task: &s.task,
            cron: &s.cron,
            args: &s.args,
            caller: &s.caller,
            next_fire_at: time_text(s.next_fire_at),
            created_at: time_text(s.created_at),
        }
    }
}

/// Whether a registered worker is live.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Seen within its lease.
    Live,
    /// Not seen for longer than its lease: stopped, killed or cut off; its
    /// runs are rescued once their leases lapse.
    Gone,
}

/// A registered worker (`workers list --json`).
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView<'a> {
    /// Its id (the `worker` of the runs it claims).
    pub id: &'a str,
    /// The machine it runs on.
    pub host: &'a str,
    /// Its process id there.
    pub pid: u32,
    /// Its tags.
    pub tags: &'a [String],
    /// Attempts it runs at once.
    pub concurrency: u32,
    /// Attempts it was running at its last heartbeat.
    pub running: u32,
    /// Its lease, in milliseconds: it is live while seen within it.
    pub lease_ms: i64,
    /// When it started.
    pub started_at: String,
    /// Its last heartbeat.
    pub last_seen: String,
    /// How long ago its last heartbeat was, in whole milliseconds.
    pub last_seen_ago_ms: u64,
    /// `live` or `gone`.
    pub state: WorkerState,
}

impl<'a> WorkerView<'a> {
    /// The view of `w` at `now` (the store's time).
    pub fn new(w: &'a WorkerRecord, now: i64) -> Self {
        Self {
            id: &w.id,
            host: &w.host,
            pid: w.pid,
            tags: &w.tags,
            concurrency: w.concurrency,
            running: w.running,
            lease_ms: w.lease_ms,
            started_at: time_text(w.started_at),
            last_seen: time_text(w.last_seen),
            last_seen_ago_ms: now.saturating_sub(w.last_seen).max(0) as u64,
            state: if w.is_live(now) {
                WorkerState::Live
            } else {
                WorkerState::Gone
            },
        }
    }
}

/// What `store copy` did: `{"tasks", "schedules", "runs", "history"}`.
#[derive(Debug, Clone, Serialize)]
pub struct CopyView {
    /// Tasks (`skipped`: entries the source cannot use).
    pub tasks: CopyCountsView,
    /// Schedules; `null` when the history was not copied.
    pub schedules: Option<CopyCountsView>,
    /// Finished runs (`skipped`: runs still queued or running); `null` when
    /// the history was not copied.
    pub runs: Option<CopyCountsView>,
    /// `copied`, `none_in_source` (a YAML source) or `not_kept_by_target`
    /// (a YAML target).
    pub history: &'static str,
}

/// Rows of one kind that `store copy` copied, found unchanged, or skipped.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CopyCountsView {
    /// Written into the target.
    pub copied: u64,
    /// Already in the target, identical.
    pub unchanged: u64,
    /// Not copied (see the field holding these counts).
    pub skipped: u64,
}

/// What `runs cancel` did: `cancelled`, `requested`, or `{"already_over": state}`.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct CancelView<'a> {
    /// The run.
    pub run_id: &'a str,
    /// What happened.
    pub result: CancelResult,
}

/// One stored log line of a run's attempt.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct LogLineView<'a> {
    /// The attempt it belongs to.
    pub attempt: u32,
    /// Its position in the attempt's output, from 0; a gap means lines were cut.
    pub seq: u64,
    /// `stdout` or `stderr`.
    pub stream: crate::log::Stream,
    /// The text.
    pub text: &'a str,
    /// Whether it was cut for being too long.
    pub truncated: bool,
}

impl<'a> LogLineView<'a> {
    /// The view of `entry`, a line of `attempt`.
    pub fn new(attempt: u32, entry: &'a LogEntry) -> Self {
        Self {
            attempt,
            seq: entry.seq,
            stream: entry.stream,
            text: &entry.text,
            truncated: entry.truncated,
        }
    }
}

/// Where lines were cut from the middle of a log: `{"cut": {"lines", "bytes"}}`.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct LogCutView {
    /// What was cut.
    pub cut: CutCounts,
}

/// Lines and bytes cut from a log.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CutCounts {
    /// Lines cut.
    pub lines: u64,
    /// Bytes cut.
    pub bytes: u64,
}

/// An API token as `tokens list --json` shows it: never its secret or hash.
#[derive(Debug, Clone, Serialize)]
pub struct TokenView<'a> {
    /// Its name.
    pub name: &'a str,
    /// `read`, `run` or `admin`.
    pub scope: Scope,
    /// `active`, `expired` or `revoked`, at the store's time of the listing.
    pub state: TokenState,
    /// When it was created.
    pub created_at: String,
    /// When it expires, `null` for never.
    pub expires_at: Option<String>,
    /// When it was revoked, `null` if it was not.
    pub revoked_at: Option<String>,
    /// When it was last used (to the minute), `null` if never.
    pub last_used_at: Option<String>,
}

impl<'a> TokenView<'a> {
    /// The view of `t` at `now` (the store's time).
    pub fn new(t: &'a TokenRecord, now: i64) -> Self {
        Self {
            name: &t.name,
            scope: t.scope,
            state: t.state(now),
            created_at: time_text(t.created_at),
            expires_at: t.expires_at.map(time_text),
            revoked_at: t.revoked_at.map(time_text),
            last_used_at: t.last_used_at.map(time_text),
        }
    }
}

/// What `tokens create --json` prints: the token, and its secret (shown once).
#[derive(Debug, Clone, Serialize)]
pub struct CreatedTokenView<'a> {
    /// The stored token.
    pub token: TokenView<'a>,
    /// The secret to send as `Authorization: Bearer <secret>`; stored nowhere.
    pub secret: &'a str,
}

/// One audit log entry as `audit list --json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditView<'a> {
    /// When it was recorded (the store's clock).
    pub at: String,
    /// A token's name, or `cli:<user>`.
    pub actor: &'a str,
    /// What was done: `token.create`, `token.revoke`, `tools.call`, …
    pub action: &'a str,
    /// What it was done to.
    pub target: &'a str,
    /// More about it; never a secret.
    pub detail: &'a Value,
}

impl<'a> From<&'a AuditEntry> for AuditView<'a> {
    fn from(e: &'a AuditEntry) -> Self {
        Self {
            at: time_text(e.at),
            actor: &e.actor,
            action: &e.action,
            target: &e.target,
            detail: &e.detail,
        }
    }
}
