//! The service layer: every operation a front end offers, written once.
//!
//! The CLI, the MCP server and the HTTP API parse their input,
//! call a [`Service`] method and render what it returns; none of them
//! orchestrates a run, touches the runner or the store's backends itself.
//! Each operation returns a typed result and a typed error whose
//! [`kind`](PrepareError::kind) is the stable name front ends show
//! (`unknown_task`, `invalid_args`, …, see [`crate::view::ErrorView`]).
//!
//! - tasks: [`Service::register`] (keeping, with `replace`, what is not
//!   given again), [`Service::unregister`] (with the task's schedules),
//!   [`Service::tasks`], [`Service::task`];
//! - running: [`Service::prepare`] → [`Prepared::check`] →
//!   [`Service::execute`] (recorded in history where the store keeps it) or
//!   [`Service::batch`] (many, in this process, unrecorded);
//! - the queue: [`Service::submit`], [`Service::wait`],
//!   [`Service::cancel`], [`Service::work`] (a worker), [`Service::workers`]
//!   (the worker registry), [`Service::waiting`] (why a queued run waits);
//! - history: [`Service::run`], [`Service::runs`], [`Service::logs`]
//!   (optionally following, or from a position: [`Service::logs_from`]),
//!   [`Service::retry`] (a new run with the same arguments),
//!   [`Service::changes`] (every run's state changes, read from the store),
//!   [`Service::active`], [`Service::prune`];
//! - schedules: [`Service::add_schedule`], [`Service::schedules`],
//!   [`Service::remove_schedule`];
//! - tokens and audit ([`auth`]'s docs): [`Service::create_token`],
//!   [`Service::tokens`], [`Service::revoke_token`],
//!   [`Service::tokens_configured`], [`Service::authenticate`],
//!   [`Service::authorize`] (the check a server makes per request),
//!   [`Service::audit`], [`Service::audit_log`];
//! - stores: [`copy_store`] copies one store into another (a function, not
//!   a method: it works on two stores).

pub mod auth;
mod copy;
mod events;
mod execute;
mod runs;
mod workers;

use std::path::Path;
use std::time::Duration;

pub use auth::{
    AuthError, Created, Denial, Principal, Revoked, Secret, TOKEN_PREFIX, TokenError, Tokens,
};
pub use copy::{
    Copied, CopyConfig, CopyCounts, CopyError, CopyProgress, CopyStage, HistoryCopy, copy_store,
};
pub use events::{CHANGES_LOOKBACK, RunChanges};
pub use execute::{Batch, Call, Executed, Prepared};
pub use runs::{Cancelled, LogEvent, LogPosition, LogStream, RetryError, SubmitOptions};
pub use workers::Workers;

use crate::history::DEFAULT_LOG_LIMIT;
use crate::queue::{CronError, WorkerConfig, WorkerEvent, WorkerStats};
use crate::register::{RegisterError, RegisterOptions};
use crate::runner::{DEFAULT_SCHEMA_TIMEOUT, DiscoveryError, Runner};
use crate::schema::{SchemaError, Violation};
use crate::store::{InsertMode, Listed, MIN_PREFIX, Store, StoreError, StoreSpec, Unusable};
use crate::task::{Formats, Policy, Task, TaskName};

/// Settings of a [`Service`].
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Log bytes kept in history per run (head + tail).
    pub log_limit: usize,
    /// How long a run executed in this process stays leased without renewal
    /// (it is renewed every third of it while the run goes on).
    pub inline_lease: Duration,
    /// The worker name history records for runs executed in this process.
    pub inline_worker: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            log_limit: DEFAULT_LOG_LIMIT,
            inline_lease: Duration::from_secs(30),
            inline_worker: format!("execute-{}", std::process::id()),
        }
    }
}

/// Every operation on tasks, runs and schedules, over one store and one runner.
#[derive(Debug, Clone)]
pub struct Service {
    store: Store,
    runner: Runner,
    config: ServiceConfig,
    auth: std::sync::Arc<auth::AuthState>,
    /// Tasks whose schemas are compiled, by name (`execute.rs`).
    compiled: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<TaskName, std::sync::Arc<crate::PreparedTask>>>,
    >,
}

impl Service {
    /// A service over `store`, running tasks with `runner`.
    pub fn new(store: Store, runner: Runner, config: ServiceConfig) -> Self {
        Self {
            store,
            runner,
            config,
            auth: Default::default(),
            compiled: Default::default(),
        }
    }

    /// A service over the store `spec` names, with default settings.
    pub fn open(spec: &StoreSpec, runner: Runner) -> Self {
        Self::new(Store::open(spec), runner, ServiceConfig::default())
    }

    /// Whether the store keeps run history, the queue and schedules.
    pub fn has_history(&self) -> bool {
        self.store.has_history()
    }

    /// Whether idle workers are woken as soon as runs are queued (a
    /// PostgreSQL store's `LISTEN`/`NOTIFY`), so they can poll less often.
    pub fn hears_new_work(&self) -> bool {
        self.store.hears_new_work()
    }

    /// The runner's settings.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Refuses queue operations on a store without history.
    fn queue_store(&self, what: &'static str) -> Result<&Store, StoreError> {
        if self.store.has_history() {
            return Ok(&self.store);
        }
        Err(StoreError::Unsupported {
            what,
            backend: "yaml",
        })
    }

    /// Registers the executable at `location` as `name`: runs `<location>
    /// schema`, checks what it declares and stores it. With
    /// [`Registration::replace`], a task already registered under that name
    /// is replaced, and every setting not given in `registration` keeps its
    /// stored value.
    pub async fn register(
        &self,
        name: TaskName,
        location: &Path,
        registration: &Registration,
    ) -> Result<Task, RegisterError> {
        let stored = if registration.replace {
            match self.store.get(&name).await {
                // `--force` is how an unusable entry is mended: nothing of it is kept.
                Err(StoreError::Unusable { .. }) => None,
                other => other?,
            }
        } else {
            None
        };
        let base = stored.as_ref();
        let policy = base.map(|t| t.policy.clone()).unwrap_or_default();
        let r = registration;
        let tags = match &r.tags {
            Some(tags) => {
                crate::task::normalize_tags(tags).map_err(|source| RegisterError::InvalidTag {
                    name: name.clone(),
                    source,
                })?
            }
            None => policy.tags,
        };
        let options = RegisterOptions {
            schema_timeout: r.schema_timeout.unwrap_or(DEFAULT_SCHEMA_TIMEOUT),
            timeout: r.timeout.or(base.and_then(|t| t.timeout)),
            mode: if r.replace {
                InsertMode::Replace
            } else {
                InsertMode::CreateNew
            },
            policy: Policy {
                retries: r.retries.or(policy.retries),
                backoff: r.backoff.or(policy.backoff),
                retry_on_status: r.retry_on_status.unwrap_or(policy.retry_on_status),
                concurrency: r.concurrency.or(policy.concurrency),
                priority: r.priority.or(policy.priority),
                tags,
            },
            formats: r.formats.or(base.map(|t| t.formats)).unwrap_or_default(),
        };
        crate::register::register(&self.store, &self.runner, name, location, &options).await
    }

    /// Removes `name` and its schedules.
    pub async fn unregister(&self, name: &TaskName) -> Result<Unregistered, TaskError> {
        // Schedules first: a tick that fires in between finds the task and
        // queues a run that fails as unregistered, which says what happened.
        let schedules = self.store.remove_schedules_of(name).await?;
        match self.store.remove(name).await {
            Ok(task) => Ok(Unregistered { task, schedules }),
            Err(StoreError::NotFound { name }) => Err(TaskError::NotRegistered { name }),
            Err(e) => Err(e.into()),
        }
    }

    /// Every registered task, sorted by name.
    pub async fn tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.store.list().await
    }

    /// Every entry of the store, sorted by name: the tasks, and the entries
    /// a YAML store holds but this build cannot use ([`Unusable`]).
    pub async fn entries(&self) -> Result<Vec<Listed>, StoreError> {
        self.store.entries().await
    }

    /// The unusable entry called `raw`, any name the store holds (even one
    /// [`TaskName`] refuses), if there is one.
    pub async fn unusable(&self, raw: &str) -> Result<Option<Unusable>, StoreError> {
        self.store.unusable(raw).await
    }

    /// Removes the unusable entry called `raw`, if there is one; `None`
    /// leaves the store as it was (then [`Service::unregister`] a task).
    pub async fn unregister_unusable(&self, raw: &str) -> Result<Option<Unusable>, StoreError> {
        self.store.remove_unusable(raw).await
    }

    /// Takes the warnings the store's writes left since the last call, for
    /// the front end to show (a YAML rewrite that dropped comments).
    pub fn take_warnings(&self) -> Vec<String> {
        self.store.take_warnings()
    }

    /// The task called `name`.
    pub async fn task(&self, name: &TaskName) -> Result<Task, TaskError> {
        self.store
            .get(name)
            .await?
            .ok_or_else(|| TaskError::NotRegistered { name: name.clone() })
    }

    /// Runs a worker until `shutdown` fires (then drains) or, with
    /// `until_idle`, until nothing is left to do. `events` hears of each step.
    pub async fn work(
        &self,
        config: &WorkerConfig,
        shutdown: &tokio_util::sync::CancellationToken,
        events: &mut dyn FnMut(WorkerEvent),
    ) -> Result<WorkerStats, StoreError> {
        let store = self.queue_store("the run queue")?;
        crate::queue::run_worker(store, &self.runner, config, shutdown, events).await
    }
}

/// How to register a task; what is `None` takes its default, or with
/// `replace` the stored task's value.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// How long `<task> schema` may take.
    pub schema_timeout: Option<Duration>,
    /// Replace a task already registered under the name (`--force`).
    pub replace: bool,
    /// The task's default run timeout.
    pub timeout: Option<Duration>,
    /// Retries of a failed run.
    pub retries: Option<u32>,
    /// The first retry's delay.
    pub backoff: Option<Duration>,
    /// Whether a status other than 1 is retried.
    pub retry_on_status: Option<bool>,
    /// The cap on running attempts across workers.
    pub concurrency: Option<u32>,
    /// Claim priority.
    pub priority: Option<i64>,
    /// The tags a worker needs to claim its runs, checked and sorted
    /// ([`crate::task::parse_tags`]); `Some(vec![])` removes them.
    pub tags: Option<Vec<String>>,
    /// Whether `format` is asserted or only an annotation.
    pub formats: Option<Formats>,
}

/// What [`Service::unregister`] removed.
#[derive(Debug, Clone)]
pub struct Unregistered {
    /// The task.
    pub task: Task,
    /// How many of its schedules were removed with it.
    pub schedules: u64,
}

/// Why an operation on a named task failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No task has that name.
    #[error("task `{name}` is not registered; `manage_tasks list` shows the registered tasks")]
    NotRegistered {
        /// The name asked for.
        name: TaskName,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TaskError {
    /// The stable kind front ends show.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskError::NotRegistered { .. } => "unknown_task",
            TaskError::Store(e) => store_kind(e),
        }
    }
}

/// Why a task cannot be run as asked. Nothing ran.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// No task has that name.
    #[error("task `{name}` is not registered; `manage_tasks list` shows the registered tasks")]
    NotRegistered {
        /// The name asked for.
        name: TaskName,
    },
    /// The task's executable is gone or no longer executable.
    #[error(
        "task `{name}` cannot be run: {why}; restore the file, or point the task at its new place with `manage_tasks register --force --name {name} --location PATH`"
    )]
    LocationGone {
        /// The task.
        name: TaskName,
        /// What is wrong with its location.
        why: String,
    },
    /// The task's stored schemas no longer compile (a newer or older build wrote them).
    #[error(
        "task `{name}` has a stored schema that no longer compiles: {source}; register it again with --force"
    )]
    SchemaBroken {
        /// The task.
        name: TaskName,
        /// Why.
        #[source]
        source: SchemaError,
    },
    /// The arguments break the task's input schema.
    #[error(
        "arguments for task `{name}` do not match its input schema ({} violation{}); `manage_tasks show {name}` prints the schema",
        violations.len(),
        if violations.len() == 1 { "" } else { "s" }
    )]
    InvalidArgs {
        /// The task.
        name: TaskName,
        /// Every violation, with its JSON pointer.
        violations: Vec<Violation>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PrepareError {
    /// The stable kind front ends show.
    pub fn kind(&self) -> &'static str {
        match self {
            PrepareError::NotRegistered { .. } => "unknown_task",
            PrepareError::LocationGone { .. } => "location",
            PrepareError::SchemaBroken { .. } => "invalid_schema",
            PrepareError::InvalidArgs { .. } => "invalid_args",
            PrepareError::Store(e) => store_kind(e),
        }
    }

    /// The schema violations, if that is what is wrong.
    pub fn violations(&self) -> &[Violation] {
        match self {
            PrepareError::InvalidArgs { violations, .. } => violations,
            _ => &[],
        }
    }

    fn location_gone(name: &TaskName, e: DiscoveryError) -> Self {
        let why = match e {
            DiscoveryError::NotFound { path } => format!("`{}` no longer exists", path.display()),
            other => other.to_string(),
        };
        PrepareError::LocationGone {
            name: name.clone(),
            why,
        }
    }
}

/// Why `execute` could not run the task. Nothing ran.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The task or its arguments.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The run could not be recorded as started in history.
    #[error("cannot record the run in history, so it was not started: {0}")]
    Store(#[source] StoreError),
}

impl ExecuteError {
    /// The stable kind front ends show.
    pub fn kind(&self) -> &'static str {
        match self {
            ExecuteError::Prepare(e) => e.kind(),
            ExecuteError::Store(e) => store_kind(e),
        }
    }

    /// The schema violations, if that is what is wrong.
    pub fn violations(&self) -> &[Violation] {
        match self {
            ExecuteError::Prepare(e) => e.violations(),
            ExecuteError::Store(_) => &[],
        }
    }
}

/// Why runs could not be queued. Nothing was queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The arguments of run `index` (from 0, in the order given) are invalid.
    #[error("run {}: {source}", index + 1)]
    InvalidArgs {
        /// Which run.
        index: usize,
        /// What is wrong.
        #[source]
        source: PrepareError,
    },
    /// The store failed (or keeps no queue).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SubmitError {
    /// The stable kind front ends show.
    pub fn kind(&self) -> &'static str {
        match self {
            SubmitError::InvalidArgs { source, .. } => source.kind(),
            SubmitError::Store(e) => store_kind(e),
        }
    }
}

/// Why a run could not be found.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No run has that id, or starts with that prefix.
    #[error("run `{id}` is not in the history; `manage_tasks runs list` shows recent runs")]
    NotFound {
        /// The id or prefix asked for.
        id: String,
    },
    /// No run has that id, and it is too short to be taken as a prefix.
    #[error(
        "run id `{id}` is too short: give the whole id or a prefix of at least {MIN_PREFIX} \
         characters; `manage_tasks runs list` shows recent runs"
    )]
    TooShort {
        /// The id asked for.
        id: String,
    },
    /// Several runs start with that prefix.
    #[error("ambiguous: {count} runs start with `{id}`; give more characters of the id")]
    Ambiguous {
        /// The prefix.
        id: String,
        /// How many runs start with it.
        count: u64,
    },
    /// The store failed (or keeps no history).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LookupError {
    /// The stable kind front ends show.
    pub fn kind(&self) -> &'static str {
        match self {
            LookupError::NotFound { .. } | LookupError::TooShort { .. } => "unknown_run",
            LookupError::Ambiguous { .. } => "ambiguous_run",
            LookupError::Store(e) => store_kind(e),
        }
    }
}

/// Why a schedule could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The arguments are invalid.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The cron expression does not parse.
    #[error(transparent)]
    Cron(#[from] CronError),
    /// No schedule has that id.
    #[error("schedule `{id}` does not exist; `manage_tasks schedule list` shows them")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The store failed (or keeps no schedules).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ScheduleError {
    /// The stable kind front ends show.
    pub fn kind(&self) -> &'static str {
        match self {
            ScheduleError::Prepare(e) => e.kind(),
            ScheduleError::Cron(_) => "invalid_cron",
            ScheduleError::NotFound { .. } => "unknown_schedule",
            ScheduleError::Store(e) => store_kind(e),
        }
    }
}

/// The kind of a store error: `unsupported` for what the backend lacks,
/// `duplicate_task`/`unknown_task` for those two, else `store`.
pub fn store_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unsupported { .. } => "unsupported",
        StoreError::Duplicate { .. } => "duplicate_task",
        StoreError::NotFound { .. } => "unknown_task",
        StoreError::Unusable { .. } => "unusable_task",
        StoreError::BadSpec { .. } | StoreError::NoDefault => "usage",
        StoreError::Conflict { .. } => "conflict",
        _ => "store",
    }
}

/// The kind of a registration error.
pub fn register_kind(e: &RegisterError) -> &'static str {
    match e {
        RegisterError::Discovery(_) => "discovery",
        RegisterError::Store(s) => store_kind(s),
        RegisterError::InvalidTag { .. } => "usage",
        _ => "invalid_schema",
    }
}
