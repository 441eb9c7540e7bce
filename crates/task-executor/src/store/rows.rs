//! Stored rows before they are checked, shared by the SQL backends: a
//! backend reads its columns into [`RawRow`] (tasks) or [`RawRun`] (runs),
//! and the checks here turn them into model types or a precise
//! [`StoreError::Corrupt`] naming the store, the record and the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::StoreError;
use crate::history::{RunError, RunRecord, RunState};
use crate::task::{Formats, Policy, Task, TaskName};

fn corrupt(store: &Path, what: &'static str, key: String, message: String) -> StoreError {
    StoreError::Corrupt {
        path: store.to_owned(),
        what,
        key,
        message,
    }
}

/// Tags as stored: a JSON array of strings, or NULL for none.
pub(crate) fn tags_json(tags: &[String]) -> Option<String> {
    (!tags.is_empty()).then(|| serde_json::to_string(tags).unwrap_or_default())
}

/// Tags as read back: checked, sorted and deduplicated; the error says what is wrong.
pub(crate) fn read_tags(stored: Option<&str>) -> Result<Vec<String>, String> {
    let Some(text) = stored else {
        return Ok(Vec::new());
    };
    let tags: Vec<String> = serde_json::from_str(text)
        .map_err(|e| format!("tags is not a JSON array of strings: {e}"))?;
    crate::task::normalize_tags(&tags).map_err(|e| e.to_string())
}

fn count(n: i64) -> u32 {
    n.clamp(0, u32::MAX.into()) as u32
}

/// A `tasks` row as stored, before it is checked.
pub(crate) struct RawRow {
    pub(crate) name: String,
    pub(crate) location: String,
    pub(crate) description: Option<String>,
    pub(crate) inputs: String,
    pub(crate) outputs: Option<String>,
    pub(crate) timeout_ms: Option<i64>,
    pub(crate) retries: Option<i64>,
    pub(crate) backoff_ms: Option<i64>,
    pub(crate) retry_on_status: i64,
    pub(crate) concurrency: Option<i64>,
    pub(crate) priority: Option<i64>,
    pub(crate) formats: Option<String>,
    pub(crate) tags: Option<String>,
}

impl RawRow {
    pub(crate) fn into_task(self, store: &Path) -> Result<Task, StoreError> {
        let corrupt = |message: String| corrupt(store, "task", self.name.clone(), message);
        let name = TaskName::new(self.name.as_str()).map_err(|e| corrupt(e.to_string()))?;
        let inputs: Value = serde_json::from_str(&self.inputs)
            .map_err(|e| corrupt(format!("inputs is not valid JSON: {e}")))?;
        let outputs: Option<Value> = self
            .outputs
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("outputs is not valid JSON: {e}")))?;
        let timeout = self
            .timeout_ms
            .map(|ms| {
                u64::try_from(ms)
                    .map(Duration::from_millis)
                    .map_err(|_| corrupt(format!("timeout_ms is negative ({ms})")))
            })
            .transpose()?;
        let policy = Policy {
            retries: self.retries.map(|n| n.clamp(0, u32::MAX.into()) as u32),
            backoff: self
                .backoff_ms
                .map(|ms| Duration::from_millis(ms.max(0) as u64)),
            retry_on_status: self.retry_on_status != 0,
            concurrency: self.concurrency.map(|n| n.clamp(0, u32::MAX.into()) as u32),
            priority: self.priority,
            tags: read_tags(self.tags.as_deref()).map_err(corrupt)?,
        };
        let formats = match self.formats.as_deref() {
            None | Some("assert") => Formats::Assert,
            Some("annotate") => Formats::Annotate,
            Some(other) => return Err(corrupt(format!("unknown formats mode `{other}`"))),
        };
        if self.location.is_empty() {
            return Err(corrupt("location is empty".into()));
        }
        Ok(Task {
            name,
            location: PathBuf::from(self.location),
            description: self.description,
            inputs,
            outputs,
            timeout,
            policy,
            formats,
        })
    }
}

/// A `runs` row before it is checked.
pub(crate) struct RawRun {
    pub(crate) id: String,
    pub(crate) task: String,
    pub(crate) args: String,
    pub(crate) caller: String,
    pub(crate) state: String,
    pub(crate) priority: i64,
    pub(crate) attempt: i64,
    pub(crate) max_attempts: i64,
    pub(crate) worker: Option<String>,
    pub(crate) cancel_requested: i64,
    pub(crate) queued_at: i64,
    pub(crate) available_at: i64,
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
    pub(crate) outcome: Option<String>,
    pub(crate) exit: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) error_kind: Option<String>,
    pub(crate) log_cut_lines: i64,
    pub(crate) log_cut_bytes: i64,
    pub(crate) schedule: Option<String>,
    pub(crate) seq: i64,
}

impl RawRun {
    pub(crate) fn check(self, store: &Path) -> Result<RunRecord, StoreError> {
        let corrupt = |message: String| corrupt(store, "run", self.id.clone(), message);
        let task = TaskName::new(self.task.as_str()).map_err(|e| corrupt(e.to_string()))?;
        let state = RunState::parse(&self.state)
            .ok_or_else(|| corrupt(format!("unknown state `{}`", self.state)))?;
        let args: Value = serde_json::from_str(&self.args)
            .map_err(|e| corrupt(format!("args is not valid JSON: {e}")))?;
        let outcome = self
            .outcome
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("outcome does not parse: {e}")))?;
        let exit = self
            .exit
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("exit does not parse: {e}")))?;
        // Rows written before errors had kinds: name them by what they say.
        let error = self.error.map(|message| {
            let kind = self.error_kind.unwrap_or_else(|| {
                match state {
                    RunState::Cancelled => "cancelled",
                    RunState::Failed => "lease_lost",
                    _ => "retrying",
                }
                .to_owned()
            });
            RunError { kind, message }
        });
        Ok(RunRecord {
            id: self.id,
            task,
            args,
            caller: self.caller,
            state,
            priority: self.priority,
            attempt: count(self.attempt),
            max_attempts: count(self.max_attempts),
            worker: self.worker,
            cancel_requested: self.cancel_requested != 0,
            queued_at: self.queued_at,
            available_at: self.available_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            outcome,
            exit,
            error,
            log_cut_lines: self.log_cut_lines.max(0) as u64,
            log_cut_bytes: self.log_cut_bytes.max(0) as u64,
            schedule: self.schedule,
        })
    }
}
