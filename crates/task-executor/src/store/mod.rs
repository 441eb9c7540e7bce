//! Where tasks, runs, logs and schedules are kept: the store contract and
//! its backends.
//!
//! - [`contract`]: the traits a backend implements ([`Registry`],
//!   [`RunStore`], [`AuthStore`], [`Clock`]) and the types they trade; the
//!   rules every backend keeps are in its docs;
//! - [`StoreSpec`] turns `TASK_STORE`/`--store` into a backend choice;
//! - [`StoreError::is_transient`] decides which failures may pass, and
//!   [`Reachability`] + [`Backoff`] ride them out;
//! - [`Store`]: the one handle every caller uses, an enum dispatching to a
//!   backend: [`YamlStore`] (the original tool's file; tasks only) or
//!   [`SqliteStore`] (everything). PostgreSQL will be one more variant.
//!
//! The queue's rules are not here: [`crate::queue`] decides, backends store.
//! Every backend runs the same conformance suite (`conformance.rs`).

#[cfg(test)]
mod conformance;
pub mod contract;
mod postgres;
mod retry;
mod rows;
mod signals;
mod spec;
mod sqlite;
#[cfg(test)]
mod test_support;
mod yaml;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use contract::{
    Active, Availability, ClaimFilter, Claimed, Clock, Due, DueSchedule, Expired, ExportCursor,
    ExportLimits, ExportPage, ExportedLogLine, ExportedRun, ExportedSchedule, FORGET_WORKERS_AFTER,
    Finish, ImportReport, Lease, LeaseStatus, MIN_PREFIX, ManualClock, NewRun, NewSchedule, Prune,
    Registry, RunLookup, RunStore, Schedule, Started, SystemClock, Verdict, WorkerBeat,
    WorkerRecord, task_difference,
};
pub use contract::{
    AuditCursor, AuditEntry, AuditFilter, AuditPage, AuthStore, FoundToken, NewAudit, NewToken,
    Scope, TOUCH_EVERY, TokenRecord, TokenState,
};
pub use postgres::PgStore;
pub use retry::{Backoff, FIRST_RETRY, MAX_RETRY, Reachability, StoreNotice};
pub use spec::{ENV_TASK_STORE, StoreSpec, redact};
pub use sqlite::SqliteStore;
pub use yaml::YamlStore;

use crate::history::{LogBatch, LogEntry, RunError, RunFilter, RunPage};
use crate::task::{Task, TaskName};

/// A stored entry this build cannot use: a name [`TaskName`] refuses, a
/// field it cannot read. The store keeps it as written; `list` shows it,
/// `unregister` removes it by its raw name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    /// Its name as stored (not necessarily a valid [`TaskName`]).
    pub name: String,
    /// Its `location`, when that is a string.
    pub location: Option<PathBuf>,
    /// Why it cannot be used and how to fix that.
    pub reason: String,
}

/// One entry of [`Store::entries`].
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a listing's entries, made once per `list`; nearly all are tasks"
)]
pub enum Listed {
    /// A task.
    Task(Task),
    /// An entry that cannot be used.
    Unusable(Unusable),
}

/// The mode of every file a store creates: owner only, since a store holds
/// queued runs' secret arguments. A file that exists keeps its mode.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with mode 0700 (owner only, as
/// [`FILE_MODE`] says why, and as the XDG base directory specification asks
/// of the data directories it creates). Directories that exist keep theirs.
pub(crate) fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
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
        /// The value given, passwords hidden.
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
    /// A stored record is not valid (a bad task name, unparsable JSON, …).
    #[error(
        "store `{path}` holds an invalid {what} `{key}`: {message}; fix or remove that entry (the file was not modified)"
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What kind of record (`task`, `run`, `schedule`, …).
        what: &'static str,
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
    /// A PostgreSQL error (the server's message, or why it cannot be reached).
    #[error("postgres store `{store}`: {message}")]
    Postgres {
        /// The URL, password hidden.
        store: String,
        /// What went wrong.
        message: String,
        /// Whether trying again later may succeed (a lost connection, a
        /// restarting server, a deadlock) rather than needing a fix.
        transient: bool,
    },
    /// The database was written by a newer version of this tool.
    #[error(
        "store `{path}` has schema version {found}, newer than this build supports ({supported}); upgrade manage_tasks (the store was not modified)"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The file is an SQLite database of some other program (tables that
    /// are not ours, or a schema version without our tables); it is left
    /// untouched.
    #[error(
        "`{path}` is not a task-executor store: {reason}; point --store or TASK_STORE at a task-executor store, or at a new file (this one was not modified)"
    )]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// What gives it away.
        reason: String,
    },
    /// A task with this name is already registered.
    #[error(
        "task `{name}` is already registered; use --force to re-read its schema, or unregister it first"
    )]
    Duplicate {
        /// The taken name.
        name: TaskName,
    },
    /// The store holds an entry of this name that this build cannot use.
    #[error("task `{name}` in store `{path}` is unusable: {reason}")]
    Unusable {
        /// The store file.
        path: PathBuf,
        /// The entry's name as stored.
        name: String,
        /// Why, and how to fix it.
        reason: String,
    },
    /// No task with this name is registered.
    #[error("task `{name}` is not registered")]
    NotFound {
        /// The missing name.
        name: TaskName,
    },
    /// The requested feature is not available on this backend.
    #[error("{what} is not supported by the {backend} store; use an SQLite or PostgreSQL store")]
    Unsupported {
        /// The feature asked for.
        what: &'static str,
        /// The backend's name.
        backend: &'static str,
    },
    /// A row being imported differs from the one stored under its key
    /// (`store copy`); nothing of its batch was written. Names the field,
    /// never its values (they may be secret).
    #[error(
        "{what} `{key}` is already stored with a different `{field}`; nothing of this batch was written (remove that {what} from the store, or import into an empty one)"
    )]
    Conflict {
        /// What kind of row (`task`, `schedule`, `run`).
        what: &'static str,
        /// Its key (name or id).
        key: String,
        /// The first field that differs, by its column's name.
        field: &'static str,
    },
    /// The backend's worker thread stopped unexpectedly.
    #[error("store `{path}`: {message}")]
    Internal {
        /// The store file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

impl StoreError {
    /// Whether trying again later may succeed: the store is there but did not
    /// answer this time (another process holds its lock, a file could not be
    /// read or written, the disk is full, a server is restarting). Callers
    /// that outlive one call — a worker, `runs logs --follow`, waiting for a
    /// run — back off and try again ([`Backoff`]); everything else ends them
    /// with its message.
    ///
    /// The rule, the one place that decides it for every backend:
    /// - transient: [`StoreError::Io`]; SQLite's busy and locked, I/O,
    ///   cannot-open, disk-full, read-only, locking-protocol, out-of-memory
    ///   and schema-changed codes; PostgreSQL's lost or refused connections
    ///   (no SQLSTATE, a pool timeout, class `08`), a server shutting down or
    ///   starting (`57P*`, `cannot_connect_now`), serialization failures,
    ///   deadlocks and too many connections (the `transient` flag its
    ///   backend sets from the SQLSTATE);
    /// - not transient: what trying again cannot change — a bad or missing
    ///   store spec, a file that does not parse, a corrupt record or
    ///   database, a newer schema, another program's database, a missing or
    ///   duplicate task, an unsupported feature, a cancelled backend call,
    ///   and every other SQLite error (constraints, misuse, type errors).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Io { .. } => true,
            StoreError::Sqlite { source, .. } => sqlite::is_transient(source),
            // Sorted where the error is built, from the server's SQLSTATE.
            StoreError::Postgres { transient, .. } => *transient,
            StoreError::BadSpec { .. }
            | StoreError::NoDefault
            | StoreError::Parse { .. }
            | StoreError::Corrupt { .. }
            | StoreError::TooNew { .. }
            | StoreError::Foreign { .. }
            | StoreError::Duplicate { .. }
            | StoreError::Unusable { .. }
            | StoreError::NotFound { .. }
            | StoreError::Unsupported { .. }
            | StoreError::Conflict { .. }
            | StoreError::Internal { .. } => false,
        }
    }
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// The store every caller uses: one backend behind one interface. Cheap to
/// clone (handles share their connections).
#[derive(Debug, Clone)]
pub enum Store {
    /// YAML file backend: tasks only.
    Yaml(YamlStore),
    /// SQLite backend.
    Sqlite(SqliteStore),
    /// PostgreSQL backend.
    Postgres(PgStore),
}

/// Dispatches a run-history operation to the backend that has one; the
/// YAML store holds tasks only.
macro_rules! runs_op {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Yaml(_) => Err(StoreError::Unsupported {
                what: "run history",
                backend: "yaml",
            }),
            Store::Sqlite($s) => $call.await,
            Store::Postgres($s) => $s.bounded($call).await,
        }
    };
}

impl Store {
    /// Opens (without creating anything yet) the store `spec` names.
    pub fn open(spec: &StoreSpec) -> Self {
        Self::open_with_clock(spec, Arc::new(SystemClock))
    }

    /// [`Store::open`] with the clock its leases and schedules are measured
    /// by (a PostgreSQL store always uses the database's).
    pub fn open_with_clock(spec: &StoreSpec, clock: Arc<dyn Clock>) -> Self {
        Self::open_for(spec, clock, postgres::DEFAULT_POOL)
    }

    /// [`Store::open`] for a caller that uses up to `connections` at once
    /// (a worker: its concurrency); only a PostgreSQL pool is sized by it.
    pub fn open_sized(spec: &StoreSpec, connections: usize) -> Self {
        Self::open_for(spec, Arc::new(SystemClock), connections)
    }

    fn open_for(spec: &StoreSpec, clock: Arc<dyn Clock>, connections: usize) -> Self {
        match spec {
            StoreSpec::Yaml(p) => Store::Yaml(YamlStore::open(p)),
            StoreSpec::Sqlite(p) => Store::Sqlite(SqliteStore::with_clock(p, clock)),
            StoreSpec::Postgres(url) => Store::Postgres(PgStore::open(url, connections)),
        }
    }

    /// Waits until runs may have been queued or `timeout` passes: runs
    /// queued through this handle (or a clone) end the wait at once, and on
    /// PostgreSQL so does a `NOTIFY` from any process.
    pub async fn wait_for_work(&self, timeout: Duration) {
        match self {
            Store::Postgres(s) => s.wait_for_work(timeout).await,
            Store::Sqlite(s) => {
                let _ = tokio::time::timeout(timeout, s.signals().work().notified()).await;
            }
            Store::Yaml(_) => tokio::time::sleep(timeout).await,
        }
    }

    /// Waits until a cancel is asked, through this handle or a clone, of a
    /// running run (never, on a YAML store): its worker then renews its
    /// leases at once, which tells it, instead of at its next heartbeat.
    pub async fn cancel_asked(&self) {
        match self.signals() {
            Some(s) => s.cancel_asked().await,
            None => std::future::pending().await,
        }
    }

    fn signals(&self) -> Option<&signals::Signals> {
        match self {
            Store::Yaml(_) => None,
            Store::Sqlite(s) => Some(s.signals()),
            Store::Postgres(s) => Some(s.signals()),
        }
    }

    /// Hears the id of each run whose state is written through this handle
    /// (or a clone) from now on: queued, ended, queued again, cancelled.
    /// Runs changed by other processes are not heard; look at those again.
    pub fn run_changes(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<str>>> {
        self.signals().map(|s| s.subscribe())
    }

    /// After a write of `ids`' state that succeeded: wakes this process's
    /// idle workers if runs may be claimable (`work`), and tells followers.
    fn signal<'a, T>(
        &self,
        result: Result<T, StoreError>,
        work: bool,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<T, StoreError> {
        if let (Ok(_), Some(s)) = (&result, self.signals()) {
            for id in ids {
                s.changed(id);
            }
            if work {
                s.queued();
            }
        }
        result
    }

    /// Whether [`Store::wait_for_work`] hears of new runs (PostgreSQL's
    /// `LISTEN`), so that idle workers can look less often.
    pub fn hears_new_work(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Whether this store keeps run history and a queue.
    pub fn has_history(&self) -> bool {
        matches!(self, Store::Sqlite(_) | Store::Postgres(_))
    }

    /// Every task, sorted by name.
    pub async fn list(&self) -> Result<Vec<Task>, StoreError> {
        match self {
            Store::Yaml(s) => s.list().await,
            Store::Sqlite(s) => s.list().await,
            Store::Postgres(s) => s.bounded(s.list()).await,
        }
    }

    /// Every entry, usable or not, sorted by name. Only a YAML store keeps
    /// entries it cannot use; the others list their tasks.
    pub async fn entries(&self) -> Result<Vec<Listed>, StoreError> {
        match self {
            Store::Yaml(s) => s.entries().await,
            Store::Sqlite(s) => Ok(s.list().await?.into_iter().map(Listed::Task).collect()),
            Store::Postgres(s) => Ok(s
                .bounded(s.list())
                .await?
                .into_iter()
                .map(Listed::Task)
                .collect()),
        }
    }

    /// The unusable entry called `raw` (any name the store holds), if there is one.
    pub async fn unusable(&self, raw: &str) -> Result<Option<Unusable>, StoreError> {
        match self {
            Store::Yaml(s) => s.unusable(raw).await,
            Store::Sqlite(_) | Store::Postgres(_) => Ok(None),
        }
    }

    /// Removes the unusable entry called `raw`, if there is one.
    pub async fn remove_unusable(&self, raw: &str) -> Result<Option<Unusable>, StoreError> {
        match self {
            Store::Yaml(s) => s.remove_unusable(raw).await,
            Store::Sqlite(_) | Store::Postgres(_) => Ok(None),
        }
    }

    /// Takes the warnings of writes since the last call (a YAML rewrite
    /// that dropped the file's comments).
    pub fn take_warnings(&self) -> Vec<String> {
        match self {
            Store::Yaml(s) => s.take_warnings(),
            Store::Sqlite(_) | Store::Postgres(_) => Vec::new(),
        }
    }

    /// The task called `name`, if registered.
    pub async fn get(&self, name: &TaskName) -> Result<Option<Task>, StoreError> {
        match self {
            Store::Yaml(s) => s.get(name).await,
            Store::Sqlite(s) => s.get(name).await,
            Store::Postgres(s) => s.bounded(s.get(name)).await,
        }
    }

    /// Stores `task`; with [`InsertMode::CreateNew`] a taken name is [`StoreError::Duplicate`].
    pub async fn insert(&self, task: &Task, mode: InsertMode) -> Result<(), StoreError> {
        match self {
            Store::Yaml(s) => s.insert(task, mode).await,
            Store::Sqlite(s) => s.insert(task, mode).await,
            Store::Postgres(s) => s.bounded(s.insert(task, mode)).await,
        }
    }

    /// Removes and returns the task called `name`; [`StoreError::NotFound`] if absent.
    pub async fn remove(&self, name: &TaskName) -> Result<Task, StoreError> {
        match self {
            Store::Yaml(s) => s.remove(name).await,
            Store::Sqlite(s) => s.remove(name).await,
            Store::Postgres(s) => s.bounded(s.remove(name)).await,
        }
    }

    /// Imports tasks: see [`Registry::import_tasks`].
    pub async fn import_tasks(&self, tasks: &[Task]) -> Result<ImportReport, StoreError> {
        match self {
            Store::Yaml(s) => s.import_tasks(tasks).await,
            Store::Sqlite(s) => s.import_tasks(tasks).await,
            Store::Postgres(s) => s.bounded(s.import_tasks(tasks)).await,
        }
    }
}

/// Run history, the queue and schedules ([`RunStore`]); the YAML store
/// answers [`StoreError::Unsupported`].
#[allow(missing_docs)] // each is documented on `RunStore`
impl Store {
    pub async fn now(&self) -> Result<i64, StoreError> {
        match self {
            Store::Yaml(_) => Ok(crate::history::now_ms()),
            Store::Sqlite(s) => s.now().await,
            Store::Postgres(s) => s.bounded(s.now()).await,
        }
    }

    pub async fn enqueue(&self, runs: &[NewRun]) -> Result<i64, StoreError> {
        let result = runs_op!(self, s => s.enqueue(runs));
        self.signal(result, true, runs.iter().map(|r| r.id.as_str()))
    }

    pub async fn enqueue_audited(
        &self,
        runs: &[NewRun],
        audit: &NewAudit,
    ) -> Result<i64, StoreError> {
        let result = runs_op!(self, s => s.enqueue_audited(runs, audit));
        self.signal(result, true, runs.iter().map(|r| r.id.as_str()))
    }

    pub async fn start_inline(
        &self,
        run: &NewRun,
        worker: &str,
        lease: Duration,
    ) -> Result<Started, StoreError> {
        runs_op!(self, s => s.start_inline(run, worker, lease))
    }

    pub async fn claim(
        &self,
        worker: &str,
        n: usize,
        lease: Duration,
        filter: &ClaimFilter,
    ) -> Result<Vec<Claimed>, StoreError> {
        runs_op!(self, s => s.claim(worker, n, lease, filter))
    }

    pub async fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        runs_op!(self, s => s.heartbeat(leases, lease))
    }

    pub async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<bool, StoreError> {
        let result = runs_op!(self, s => s.finish(lease, finish));
        self.signal(result, false, [lease.id.as_str()])
    }

    pub async fn retry(
        &self,
        lease: &Lease,
        finish: &Finish,
        delay: Duration,
        note: &RunError,
    ) -> Result<bool, StoreError> {
        let result = runs_op!(self, s => s.retry(lease, finish, delay, note));
        self.signal(result, delay.is_zero(), [lease.id.as_str()])
    }

    pub async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        let result = runs_op!(self, s => s.release(lease));
        self.signal(result, true, [lease.id.as_str()])
    }

    pub async fn expired(&self, limit: usize) -> Result<Vec<Expired>, StoreError> {
        runs_op!(self, s => s.expired(limit))
    }

    pub async fn settle(&self, expired: &Expired, verdict: &Verdict) -> Result<bool, StoreError> {
        let requeued = matches!(verdict, Verdict::Requeue(_));
        let result = runs_op!(self, s => s.settle(expired, verdict));
        self.signal(result, requeued, [expired.lease.id.as_str()])
    }

    pub async fn record_logs(
        &self,
        lease: &Lease,
        attempt: u32,
        batch: &LogBatch,
    ) -> Result<bool, StoreError> {
        let result = runs_op!(self, s => s.record_logs(lease, attempt, batch));
        self.signal(result, false, [lease.id.as_str()])
    }

    pub async fn get_run(&self, id: &str) -> Result<RunLookup, StoreError> {
        runs_op!(self, s => s.get_run(id))
    }

    pub async fn list_runs(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        runs_op!(self, s => s.list_runs(filter))
    }

    pub async fn run_logs(
        &self,
        id: &str,
        attempt: u32,
        from_seq: u64,
    ) -> Result<Vec<LogEntry>, StoreError> {
        runs_op!(self, s => s.run_logs(id, attempt, from_seq))
    }

    pub async fn cancel_queued(&self, id: &str, note: &RunError) -> Result<bool, StoreError> {
        let result = runs_op!(self, s => s.cancel_queued(id, note));
        self.signal(result, false, [id])
    }

    pub async fn request_cancel(&self, id: &str) -> Result<bool, StoreError> {
        let result = runs_op!(self, s => s.request_cancel(id));
        if let (Ok(true), Some(s)) = (&result, self.signals()) {
            s.changed(id);
            s.cancelled();
        }
        result
    }

    pub async fn prune(&self, prune: &Prune) -> Result<u64, StoreError> {
        runs_op!(self, s => s.prune(prune))
    }

    pub async fn active(&self) -> Result<Active, StoreError> {
        runs_op!(self, s => s.active())
    }

    pub async fn add_schedule(&self, schedule: &NewSchedule) -> Result<Schedule, StoreError> {
        runs_op!(self, s => s.add_schedule(schedule))
    }

    pub async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        runs_op!(self, s => s.list_schedules())
    }

    pub async fn remove_schedule(&self, id: &str) -> Result<bool, StoreError> {
        runs_op!(self, s => s.remove_schedule(id))
    }

    pub async fn remove_schedules_of(&self, task: &TaskName) -> Result<u64, StoreError> {
        match self {
            // A YAML store has no schedules to leave behind.
            Store::Yaml(_) => Ok(0),
            Store::Sqlite(s) => s.remove_schedules_of(task).await,
            Store::Postgres(s) => s.bounded(s.remove_schedules_of(task)).await,
        }
    }

    pub async fn beat_worker(&self, beat: &WorkerBeat) -> Result<(), StoreError> {
        runs_op!(self, s => s.beat_worker(beat))
    }

    pub async fn list_workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        runs_op!(self, s => s.list_workers())
    }

    pub async fn remove_worker(&self, id: &str) -> Result<bool, StoreError> {
        runs_op!(self, s => s.remove_worker(id))
    }

    pub async fn due_schedules(&self) -> Result<Due, StoreError> {
        runs_op!(self, s => s.due_schedules())
    }

    pub async fn fire(
        &self,
        due: &DueSchedule,
        next_fire_at: i64,
        run: Option<&NewRun>,
    ) -> Result<bool, StoreError> {
        let result = runs_op!(self, s => s.fire(due, next_fire_at, run));
        self.signal(result, run.is_some(), run.map(|r| r.id.as_str()))
    }

    pub async fn export_runs(
        &self,
        after: Option<ExportCursor>,
        limits: ExportLimits,
    ) -> Result<ExportPage, StoreError> {
        runs_op!(self, s => s.export_runs(after, limits))
    }

    pub async fn import_runs(&self, runs: &[ExportedRun]) -> Result<ImportReport, StoreError> {
        runs_op!(self, s => s.import_runs(runs))
    }

    pub async fn export_schedules(&self) -> Result<Vec<ExportedSchedule>, StoreError> {
        runs_op!(self, s => s.export_schedules())
    }

    pub async fn import_schedules(
        &self,
        schedules: &[ExportedSchedule],
    ) -> Result<ImportReport, StoreError> {
        runs_op!(self, s => s.import_schedules(schedules))
    }
}

/// Dispatches a token or audit operation; the YAML store has neither.
macro_rules! auth_op {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Yaml(_) => Err(StoreError::Unsupported {
                what: "authentication (API tokens and the audit log)",
                backend: "yaml",
            }),
            Store::Sqlite($s) => $call.await,
            Store::Postgres($s) => $s.bounded($call).await,
        }
    };
}

/// API tokens and the audit log ([`AuthStore`]); the YAML store answers
/// [`StoreError::Unsupported`].
#[allow(missing_docs)] // each is documented on `AuthStore`
impl Store {
    pub async fn token_key(&self, create: Option<&str>) -> Result<Option<String>, StoreError> {
        auth_op!(self, s => s.token_key(create))
    }

    pub async fn create_token(&self, token: &NewToken) -> Result<Option<TokenRecord>, StoreError> {
        auth_op!(self, s => s.create_token(token))
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        auth_op!(self, s => s.tokens())
    }

    /// A YAML store has no tokens: `false`, so that its servers stay
    /// loopback-only rather than failing every request.
    pub async fn any_token(&self) -> Result<bool, StoreError> {
        match self {
            Store::Yaml(_) => Ok(false),
            Store::Sqlite(s) => s.any_token().await,
            Store::Postgres(s) => s.bounded(s.any_token()).await,
        }
    }

    pub async fn find_token(&self, hash: &str) -> Result<Option<FoundToken>, StoreError> {
        auth_op!(self, s => s.find_token(hash))
    }

    pub async fn revoke_token(
        &self,
        name: &str,
    ) -> Result<Option<(TokenRecord, bool)>, StoreError> {
        auth_op!(self, s => s.revoke_token(name))
    }

    pub async fn touch_token(&self, name: &str) -> Result<bool, StoreError> {
        auth_op!(self, s => s.touch_token(name))
    }

    pub async fn audit(&self, entry: &NewAudit) -> Result<AuditEntry, StoreError> {
        auth_op!(self, s => s.audit(entry))
    }

    pub async fn audit_log(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
        auth_op!(self, s => s.audit_log(filter))
    }
}
