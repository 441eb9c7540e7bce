//! The task registry: one interface over several storage backends.
//!
//! [`StoreSpec`] turns `TASK_STORE`/`--store` into a backend choice; [`Store`]
//! is the async facade every caller uses, dispatching to a backend. Backends
//! are synchronous today (YAML file, SQLite); PostgreSQL will be an async
//! variant of the same enum, so callers already `.await`.
//!
//! Invariants every backend keeps: a write either lands whole or not at all;
//! concurrent writers never lose each other's updates; a store that does not
//! parse is reported (path and line) and never overwritten.

mod sqlite;
#[cfg(test)]
mod test_support;
mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use sqlite::SqliteStore;
pub use yaml::YamlStore;

use crate::history::{LogBatch, LogEntry, RunFilter, RunPage, RunRecord};
use crate::queue::{
    CancelResult, Claimed, Finish, Lease, LeaseStatus, NewRun, NewSchedule, Pruned, Schedule,
};
use crate::task::{Task, TaskName};

/// Environment variable naming the store, as in the original tool.
pub const ENV_TASK_STORE: &str = "TASK_STORE";

/// Which backend and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// A YAML file in the original tool's format.
    Yaml(PathBuf),
    /// An SQLite database file.
    Sqlite(PathBuf),
}

impl StoreSpec {
    /// Interprets a `TASK_STORE` value: a path ending `.yaml`/`.yml` is YAML; a
    /// `sqlite:` URL or a path ending `.db`/`.sqlite`/`.sqlite3` is SQLite.
    pub fn parse(spec: &str) -> Result<Self, StoreError> {
        if let Some(rest) = spec.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(StoreError::BadSpec {
                    spec: spec.to_owned(),
                    why: "the sqlite: URL names no file".into(),
                });
            }
            return Ok(StoreSpec::Sqlite(PathBuf::from(path)));
        }
        let path = PathBuf::from(spec);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("yaml" | "yml") => Ok(StoreSpec::Yaml(path)),
            Some("db" | "sqlite" | "sqlite3") => Ok(StoreSpec::Sqlite(path)),
            _ => Err(StoreError::BadSpec {
                spec: spec.to_owned(),
                why: "end the path in .yaml/.yml (YAML) or .db/.sqlite/.sqlite3 (SQLite), or use a sqlite: URL".into(),
            }),
        }
    }

    /// The default store: SQLite at `$XDG_DATA_HOME/task-executor/tasks.db`
    /// (falling back to `~/.local/share/task-executor/tasks.db`).
    pub fn default_location() -> Result<Self, StoreError> {
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".local/share"))
            })
            .ok_or(StoreError::NoDefault)?;
        Ok(StoreSpec::Sqlite(data.join("task-executor/tasks.db")))
    }

    /// The file this spec points at.
    pub fn path(&self) -> &Path {
        match self {
            StoreSpec::Yaml(p) | StoreSpec::Sqlite(p) => p,
        }
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Yaml(p) => write!(f, "{} (yaml)", p.display()),
            StoreSpec::Sqlite(p) => write!(f, "{} (sqlite)", p.display()),
        }
    }
}

/// What [`Store::insert`] does when the name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertMode {
    /// Fail with [`StoreError::Duplicate`].
    CreateNew,
    /// Replace the existing definition (`register --force`).
    Replace,
}

/// Errors from any store backend. Messages read well after "failed to …: ".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `TASK_STORE`/`--store` could not be interpreted.
    #[error("cannot use store `{spec}`: {why}")]
    BadSpec {
        /// The value given.
        spec: String,
        /// What to do instead.
        why: String,
    },
    /// Neither `XDG_DATA_HOME` nor `HOME` is set.
    #[error("no default store: set TASK_STORE, or HOME/XDG_DATA_HOME")]
    NoDefault,
    /// A filesystem operation on the store failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What was being done (`read`, `write`, `lock`, …).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The store file does not parse; it is left untouched.
    #[error("store `{path}` does not parse{}: {message}; fix or move the file (it was not modified)", at(*line, *column))]
    Parse {
        /// The store file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// The parser's explanation.
        message: String,
    },
    /// A stored record is not a valid task (bad name, missing location, …).
    #[error(
        "store `{path}` holds an invalid task `{key}`: {message}; fix or remove that entry (the file was not modified)"
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The record's key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// An SQLite error.
    #[error("sqlite store `{path}`: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer version of this tool.
    #[error(
        "store `{path}` has schema version {found}, newer than this build supports ({supported}); upgrade manage_tasks"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A task with this name is already registered.
    #[error(
        "task `{name}` is already registered; use --force to re-read its schema, or unregister it first"
    )]
    Duplicate {
        /// The taken name.
        name: TaskName,
    },
    /// No task with this name is registered.
    #[error("task `{name}` is not registered")]
    NotFound {
        /// The missing name.
        name: TaskName,
    },
    /// The requested feature is not available on this backend.
    #[error("{what} is not supported by the {backend} store; use an SQLite store")]
    Unsupported {
        /// The feature asked for.
        what: &'static str,
        /// The backend's name.
        backend: &'static str,
    },
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// The registry every caller uses.
#[derive(Debug)]
pub enum Store {
    /// YAML file backend.
    Yaml(YamlStore),
    /// SQLite backend.
    Sqlite(SqliteStore),
}

impl Store {
    /// Opens (without creating anything yet) the store `spec` names.
    pub async fn open(spec: &StoreSpec) -> Result<Self, StoreError> {
        Ok(match spec {
            StoreSpec::Yaml(p) => Store::Yaml(YamlStore::open(p)?),
            StoreSpec::Sqlite(p) => Store::Sqlite(SqliteStore::open(p)?),
        })
    }

    /// Every task, sorted by name.
    pub async fn list(&self) -> Result<Vec<Task>, StoreError> {
        match self {
            Store::Yaml(s) => s.list(),
            Store::Sqlite(s) => s.list(),
        }
    }

    /// The task called `name`, if registered.
    pub async fn get(&self, name: &TaskName) -> Result<Option<Task>, StoreError> {
        match self {
            Store::Yaml(s) => s.get(name),
            Store::Sqlite(s) => s.get(name),
        }
    }

    /// Stores `task`; with [`InsertMode::CreateNew`] a taken name is [`StoreError::Duplicate`].
    pub async fn insert(&self, task: &Task, mode: InsertMode) -> Result<(), StoreError> {
        match self {
            Store::Yaml(s) => s.insert(task, mode),
            Store::Sqlite(s) => s.insert(task, mode),
        }
    }

    /// Removes and returns the task called `name`; [`StoreError::NotFound`] if absent.
    pub async fn remove(&self, name: &TaskName) -> Result<Task, StoreError> {
        match self {
            Store::Yaml(s) => s.remove(name),
            Store::Sqlite(s) => s.remove(name),
        }
    }
}

/// Dispatches a history/queue operation to the backend that has one; the
/// YAML store holds tasks only.
macro_rules! runs_op {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Yaml(_) => Err(StoreError::Unsupported {
                what: "run history",
                backend: "yaml",
            }),
            Store::Sqlite($s) => $call,
        }
    };
}

/// Run history and the queue: the interface every backend with history
/// implements (SQLite now, PostgreSQL next). See [`crate::queue`] for the
/// protocol and [`crate::history`] for the records.
impl Store {
    /// Whether this store keeps run history and a queue.
    pub fn has_history(&self) -> bool {
        matches!(self, Store::Sqlite(_))
    }

    /// Queues runs, in one transaction.
    pub async fn enqueue(&self, runs: &[NewRun]) -> Result<(), StoreError> {
        runs_op!(self, s => s.enqueue(runs))
    }

    /// Records a run executed in-process (`execute`) as running; returns its fence.
    pub async fn start_inline(
        &self,
        run: &NewRun,
        worker: &str,
        lease_until: i64,
    ) -> Result<i64, StoreError> {
        runs_op!(self, s => s.start_inline(run, worker, lease_until))
    }

    /// Claims up to `n` due runs for `worker`, leased until `lease_until`.
    pub async fn claim(
        &self,
        worker: &str,
        n: usize,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        runs_op!(self, s => s.claim(worker, n, now, lease_until))
    }

    /// Renews leases; one status per lease, in order.
    pub async fn heartbeat(
        &self,
        leases: &[Lease],
        lease_until: i64,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        runs_op!(self, s => s.heartbeat(leases, lease_until))
    }

    /// Records an attempt's end; `false` if the lease was lost (nothing written).
    pub async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<bool, StoreError> {
        runs_op!(self, s => s.finish(lease, finish))
    }

    /// Requeues a failed attempt for a retry at `available_at`; `false` if the lease was lost.
    pub async fn retry(
        &self,
        lease: &Lease,
        finish: &Finish,
        available_at: i64,
    ) -> Result<bool, StoreError> {
        runs_op!(self, s => s.retry(lease, finish, available_at))
    }

    /// Gives an attempt back to the queue uncounted (worker shutdown).
    pub async fn release(&self, lease: &Lease, now: i64) -> Result<bool, StoreError> {
        runs_op!(self, s => s.release(lease, now))
    }

    /// Requeues (or fails) attempts whose lease expired before `now`.
    pub async fn requeue_expired(&self, now: i64) -> Result<u64, StoreError> {
        runs_op!(self, s => s.requeue_expired(now))
    }

    /// Stores log lines of an attempt still held by `lease`.
    pub async fn record_logs(
        &self,
        lease: &Lease,
        attempt: u32,
        batch: &LogBatch,
    ) -> Result<(), StoreError> {
        runs_op!(self, s => s.record_logs(lease, attempt, batch))
    }

    /// One run by id (or unique prefix of 8+ characters).
    pub async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        runs_op!(self, s => s.get_run(id))
    }

    /// A page of runs, newest first.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        runs_op!(self, s => s.list_runs(filter))
    }

    /// An attempt's log lines from `from_seq` on.
    pub async fn run_logs(
        &self,
        id: &str,
        attempt: u32,
        from_seq: u64,
    ) -> Result<Vec<LogEntry>, StoreError> {
        runs_op!(self, s => s.run_logs(id, attempt, from_seq))
    }

    /// Cancels a queued run or asks a running one to stop; `None` if there is no such run.
    pub async fn cancel_run(&self, id: &str, now: i64) -> Result<Option<CancelResult>, StoreError> {
        runs_op!(self, s => s.cancel_run(id, now))
    }

    /// Deletes finished runs older than `before` and beyond `keep` per task.
    pub async fn prune(
        &self,
        before: Option<i64>,
        keep: Option<u64>,
    ) -> Result<Pruned, StoreError> {
        runs_op!(self, s => s.prune(before, keep))
    }

    /// Runs queued or running.
    pub async fn count_active(&self) -> Result<u64, StoreError> {
        runs_op!(self, s => s.count_active())
    }

    /// Adds a schedule; returns its id.
    pub async fn add_schedule(&self, schedule: &NewSchedule) -> Result<String, StoreError> {
        runs_op!(self, s => s.add_schedule(schedule))
    }

    /// Every schedule.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        runs_op!(self, s => s.list_schedules())
    }

    /// Removes a schedule; `false` if absent.
    pub async fn remove_schedule(&self, id: &str) -> Result<bool, StoreError> {
        runs_op!(self, s => s.remove_schedule(id))
    }

    /// Fires the schedules due at `now`, each exactly once per tick.
    pub async fn fire_schedules(&self, now: i64) -> Result<Vec<NewRun>, StoreError> {
        let next = |cron: &str, now: i64| crate::queue::next_tick(cron, now).ok();
        runs_op!(self, s => s.fire_schedules(now, &next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_picks_backend_by_suffix_or_scheme() {
        let cases = [
            ("/tmp/tasks.yaml", StoreSpec::Yaml("/tmp/tasks.yaml".into())),
            ("t.YML", StoreSpec::Yaml("t.YML".into())),
            ("/x/t.db", StoreSpec::Sqlite("/x/t.db".into())),
            ("t.sqlite", StoreSpec::Sqlite("t.sqlite".into())),
            ("t.sqlite3", StoreSpec::Sqlite("t.sqlite3".into())),
            ("sqlite:///abs/t", StoreSpec::Sqlite("/abs/t".into())),
            ("sqlite:rel/t.bin", StoreSpec::Sqlite("rel/t.bin".into())),
        ];
        for (s, want) in cases {
            assert_eq!(StoreSpec::parse(s).unwrap(), want, "{s}");
        }
        for bad in ["/tmp/tasks.json", "tasks", "sqlite:", ""] {
            assert!(
                matches!(StoreSpec::parse(bad), Err(StoreError::BadSpec { .. })),
                "{bad}"
            );
        }
    }
}
