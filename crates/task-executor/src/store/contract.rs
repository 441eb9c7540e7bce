//! The store contract: what a backend must provide, and the types it trades.
//!
//! Two traits, modelled on River's driver interface: [`Registry`] (the
//! tasks) and [`RunStore`] (history, the queue's storage and its guards,
//! schedules). A backend stores and guards; it decides nothing. When to
//! retry, what a lapsed lease becomes, how a schedule tick becomes a run and
//! every text a user reads live once, above the backends, in
//! [`crate::queue`]. Every backend passes the conformance suite
//! (`store/conformance.rs`), written once against this contract.
//!
//! The rules a backend keeps:
//! - **Guards.** Every write about an attempt (`heartbeat`, `finish`,
//!   `retry`, `release`, `settle`, `record_logs`) is one conditional
//!   statement on `id AND fence AND state = 'running'` (and, for `settle`,
//!   a lapsed lease), so that it stays right when several connections commit
//!   at once: 0 rows means a newer attempt owns the run, and nothing is
//!   written. Log lines are stored only after that guard held, in the same
//!   transaction.
//! - **The concurrency cap.** A claim counts a task's running attempts and
//!   takes a run in one conditional update, serialised per task (SQLite by
//!   its single writer, PostgreSQL by locking the task's row first).
//! - **One clock.** Lease expiry, delays, schedule ticks and timestamps come
//!   from the backend's [`Clock`] (on a shared server, the database's
//!   clock), never from a caller's `now`: callers pass durations.
//! - **Routing.** A claim takes only runs its [`ClaimFilter`] allows (the
//!   task's tags all held by the worker, the task not excluded), decided in
//!   the claim's own statement, so the cap and the order stay in one place.
//! - A write lands whole or not at all; reads never create anything.
//! - **Copying** (`store copy`): `export_*` read every stored column (and a
//!   run's log lines) without changing anything; `import_*` write a batch in
//!   one transaction, inserting each row whose key is not stored yet,
//!   counting an identical one as unchanged, and refusing the whole batch
//!   with [`StoreError::Conflict`] (nothing written) at the first row that
//!   differs from the stored one. Which rows to copy is the caller's choice
//!   ([`crate::service::copy_store`]).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{InsertMode, StoreError};
use crate::history::{LogBatch, LogEntry, RunError, RunFilter, RunPage, RunRecord, RunState};
use crate::outcome::{ExitInfo, Outcome};
use crate::task::{Task, TaskName};

/// The time source of a store: milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now_ms(&self) -> i64;
}

/// This machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::history::now_ms()
    }
}

/// A clock that moves only when told to: for testing leases and schedules.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The task registry: what every backend provides.
pub trait Registry: Send + Sync {
    /// Every task, sorted by name.
    fn list(&self) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send;
    /// The task called `name`, if registered.
    fn get(&self, name: &TaskName)
    -> impl Future<Output = Result<Option<Task>, StoreError>> + Send;
    /// Stores `task`; with [`InsertMode::CreateNew`] a taken name is [`StoreError::Duplicate`].
    fn insert(
        &self,
        task: &Task,
        mode: InsertMode,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes and returns the task called `name`; [`StoreError::NotFound`] if absent.
    fn remove(&self, name: &TaskName) -> impl Future<Output = Result<Task, StoreError>> + Send;

    /// Imports `tasks` in one transaction: each is inserted unless a task
    /// of its name is stored; one equal to the stored task is counted
    /// unchanged; one that differs ([`task_difference`]) refuses the whole
    /// batch with [`StoreError::Conflict`] and nothing is written.
    fn import_tasks(
        &self,
        tasks: &[Task],
    ) -> impl Future<Output = Result<ImportReport, StoreError>> + Send;
}

/// Run history, the queue's storage and schedules: what a backend with
/// history provides. See the module docs for the rules.
pub trait RunStore: Send + Sync {
    /// The backend's clock: the time every lease and schedule is measured by.
    fn now(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Queues `runs` in one transaction; returns the time they were queued at.
    fn enqueue(&self, runs: &[NewRun]) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// [`RunStore::enqueue`], appending `audit` to the audit log in the same
    /// transaction: both are recorded, or neither.
    fn enqueue_audited(
        &self,
        runs: &[NewRun],
        audit: &NewAudit,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Records a run executed in-process (`execute`, MCP) as running, its
    /// first attempt held by `worker` for `lease`.
    fn start_inline(
        &self,
        run: &NewRun,
        worker: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Started, StoreError>> + Send;

    /// Claims up to `n` due runs for `worker` for `lease`: highest priority
    /// first, then oldest (`available_at`, then insertion order); a task at
    /// its concurrency cap is skipped, and so is a run `filter` does not
    /// allow. Each claim bumps the run's fence.
    fn claim(
        &self,
        worker: &str,
        n: usize,
        lease: Duration,
        filter: &ClaimFilter,
    ) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send;

    /// Extends each lease still held by `lease` from now; one status per lease, in order.
    fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<LeaseStatus>, StoreError>> + Send;

    /// Records an attempt's end (and its last log lines); `false` if the lease was lost.
    fn finish(
        &self,
        lease: &Lease,
        finish: &Finish,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Queues the run again after a failed attempt, claimable after `delay`,
    /// with `note` saying why; `false` if the lease was lost.
    fn retry(
        &self,
        lease: &Lease,
        finish: &Finish,
        delay: Duration,
        note: &RunError,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives a running attempt back to the queue uncounted (worker shutdown);
    /// `false` if the lease was lost.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Running attempts whose lease has lapsed, at most `limit`.
    fn expired(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Expired>, StoreError>> + Send;

    /// Applies `verdict` to a lapsed attempt, if it is still running under
    /// that fence with its lease lapsed; `false` otherwise.
    fn settle(
        &self,
        expired: &Expired,
        verdict: &Verdict,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores log lines of an attempt still held by `lease`; `false` if it is
    /// not. Sending a batch again (after a call whose outcome was unknown)
    /// is harmless: a line already stored (same run, attempt and `seq`) is
    /// kept as it is, here and in [`RunStore::finish`] and [`RunStore::retry`].
    fn record_logs(
        &self,
        lease: &Lease,
        attempt: u32,
        batch: &LogBatch,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// One run by id, or by a prefix of at least [`MIN_PREFIX`] characters.
    fn get_run(&self, id: &str) -> impl Future<Output = Result<RunLookup, StoreError>> + Send;

    /// A page of runs, newest first (keyset pagination).
    fn list_runs(
        &self,
        filter: &RunFilter,
    ) -> impl Future<Output = Result<RunPage, StoreError>> + Send;

    /// An attempt's stored log lines from `from_seq` on, in order.
    fn run_logs(
        &self,
        id: &str,
        attempt: u32,
        from_seq: u64,
    ) -> impl Future<Output = Result<Vec<LogEntry>, StoreError>> + Send;

    /// Cancels a run that is still queued, noting `note`; `false` if it is not queued.
    fn cancel_queued(
        &self,
        id: &str,
        note: &RunError,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Asks the holder of a running run to stop it; `false` if it is not running.
    fn request_cancel(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes finished runs (and their logs) as `prune` says; returns how many.
    fn prune(&self, prune: &Prune) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How many runs are due, delayed and running.
    fn active(&self) -> impl Future<Output = Result<Active, StoreError>> + Send;

    /// Adds a schedule.
    fn add_schedule(
        &self,
        schedule: &NewSchedule,
    ) -> impl Future<Output = Result<Schedule, StoreError>> + Send;

    /// Every schedule, oldest first.
    fn list_schedules(&self) -> impl Future<Output = Result<Vec<Schedule>, StoreError>> + Send;

    /// Removes a schedule; `false` if there is none with that id.
    fn remove_schedule(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Removes every schedule of `task`; returns how many.
    fn remove_schedules_of(
        &self,
        task: &TaskName,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The schedules due now, and that now.
    fn due_schedules(&self) -> impl Future<Output = Result<Due, StoreError>> + Send;

    /// Records that a worker is alive, and what it is (upsert by id):
    /// `last_seen` is the store's now; `started_at` is kept from the row it
    /// updates (unless that row is another process's: another host or pid).
    /// In the same transaction, workers not seen for [`FORGET_WORKERS_AFTER`]
    /// are deleted.
    fn beat_worker(&self, beat: &WorkerBeat)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every registered worker, live or not, oldest first (`started_at`, then id).
    fn list_workers(&self) -> impl Future<Output = Result<Vec<WorkerRecord>, StoreError>> + Send;

    /// Removes worker `id` (at its clean exit); `false` if it was not there.
    fn remove_worker(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Fires a due schedule: moves its next tick to `next_fire_at` if it is
    /// still `due.next_fire_at` (compare-and-set), and in the same
    /// transaction queues `run` (none when the task is gone). `false` if
    /// another caller fired this tick first.
    fn fire(
        &self,
        due: &DueSchedule,
        next_fire_at: i64,
        run: Option<&NewRun>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A page of runs in every state, with every stored column and their log
    /// lines, in insertion order (`seq` ascending) from after `after` (from
    /// the first with `None`). A page holds at most `limits.runs` runs, and
    /// stops after the run whose log lines bring it over `limits.log_bytes`
    /// (it holds at least one run). `next` is set when a limit ended the
    /// page. A read: nothing is changed or created.
    fn export_runs(
        &self,
        after: Option<ExportCursor>,
        limits: ExportLimits,
    ) -> impl Future<Output = Result<ExportPage, StoreError>> + Send;

    /// Imports `runs` in one transaction, in their order: a run whose id is
    /// not stored is inserted with its log lines, after every stored run in
    /// insertion order (each gets the next `seq`, so the batch keeps its
    /// order and follows what the store held); one equal to the stored run
    /// ([`ExportedRun::difference`], log lines included) is counted
    /// unchanged; one that differs refuses the whole batch with
    /// [`StoreError::Conflict`] and nothing is written.
    fn import_runs(
        &self,
        runs: &[ExportedRun],
    ) -> impl Future<Output = Result<ImportReport, StoreError>> + Send;

    /// Every schedule with every stored column (its unmasked arguments
    /// too), oldest first. A read.
    fn export_schedules(
        &self,
    ) -> impl Future<Output = Result<Vec<ExportedSchedule>, StoreError>> + Send;

    /// Imports `schedules` in one transaction, as [`RunStore::import_runs`]
    /// does runs: inserted as given (`created_at` and `next_fire_at`
    /// included), unchanged when equal ([`ExportedSchedule::difference`]:
    /// `next_fire_at` is not compared), the whole batch refused with
    /// [`StoreError::Conflict`] when one differs.
    fn import_schedules(
        &self,
        schedules: &[ExportedSchedule],
    ) -> impl Future<Output = Result<ImportReport, StoreError>> + Send;
}

/// The shortest run-id prefix that [`RunStore::get_run`] looks up.
pub const MIN_PREFIX: usize = 8;

/// Workers not seen for this long are deleted by the next beat of any worker.
pub const FORGET_WORKERS_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Which runs a claim may take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimFilter {
    /// The worker's tags: a run is claimable only if every tag of its task
    /// is among them. A task without tags may go to any worker; a worker
    /// without tags takes only runs of tasks without tags.
    pub tags: Vec<String>,
    /// Tasks whose runs are not claimed (this worker cannot run them here).
    pub exclude: Vec<TaskName>,
}

/// What a worker says about itself at each beat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerBeat {
    /// Its id (the `worker` of the attempts it claims).
    pub id: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// Its tags, sorted.
    pub tags: Vec<String>,
    /// Attempts it runs at once.
    pub concurrency: u32,
    /// Attempts it is running now.
    pub running: u32,
    /// Its lease: it is live while it was seen within this long.
    pub lease: Duration,
}

/// A registered worker, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    /// Its id.
    pub id: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// Its tags, sorted.
    pub tags: Vec<String>,
    /// Attempts it runs at once.
    pub concurrency: u32,
    /// Attempts it was running at its last beat.
    pub running: u32,
    /// Its lease, in milliseconds.
    pub lease_ms: i64,
    /// When it first beat (epoch ms, store clock).
    pub started_at: i64,
    /// When it last beat (epoch ms, store clock).
    pub last_seen: i64,
}

impl WorkerRecord {
    /// Whether it is live at `now` (store clock): seen within its own lease,
    /// the time after which its runs would be rescued.
    pub fn is_live(&self, now: i64) -> bool {
        now.saturating_sub(self.last_seen) <= self.lease_ms
    }
}

/// When a queued run may first be claimed, resolved by the store's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// At once.
    Now,
    /// This long after it is queued.
    After(Duration),
    /// Not before this time (epoch ms).
    At(i64),
}

impl Availability {
    /// The time (epoch ms) this means for a run queued at `now`.
    pub fn resolve(self, now: i64) -> i64 {
        match self {
            Availability::Now => now,
            Availability::After(d) => now.saturating_add(d.as_millis() as i64),
            Availability::At(at) => at,
        }
    }
}

/// A run to queue, or to record as running for `execute`. Built by
/// [`crate::queue::new_run`], the one constructor every way in uses.
#[derive(Clone)]
pub struct NewRun {
    /// The run id.
    pub id: String,
    /// The task.
    pub task: TaskName,
    /// The arguments with secrets masked: what history shows.
    pub args: Value,
    /// The full arguments, when they differ from `args`; dropped once the run is over.
    pub secret_args: Option<Value>,
    /// Who asked.
    pub caller: String,
    /// Higher is claimed first.
    pub priority: i64,
    /// Attempts allowed (1 + retries).
    pub max_attempts: u32,
    /// The first retry's delay.
    pub backoff: Option<Duration>,
    /// Whether a status other than 1 is retried.
    pub retry_on_status: bool,
    /// Run timeout overriding the task's.
    pub timeout: Option<Duration>,
    /// When it may first be claimed.
    pub available: Availability,
    /// The schedule that fired it.
    pub schedule: Option<String>,
    /// The task's [`revision`](crate::task::Task::revision) when the run was made.
    pub task_rev: Option<String>,
}

impl fmt::Debug for NewRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRun")
            .field("id", &self.id)
            .field("task", &self.task)
            .field("args", &self.args)
            .field("secret_args", &self.secret_args.as_ref().map(|_| Hidden))
            .field("caller", &self.caller)
            .field("priority", &self.priority)
            .field("max_attempts", &self.max_attempts)
            .field("available", &self.available)
            .field("schedule", &self.schedule)
            .field("task_rev", &self.task_rev)
            .finish_non_exhaustive()
    }
}

/// Shown in `Debug` output in place of arguments that may hold secrets.
pub(crate) struct Hidden;

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// An inline run as recorded: its lease and when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The lease of its (only) attempt.
    pub lease: Lease,
    /// When it was recorded as started (epoch ms, store clock).
    pub at: i64,
}

/// A run a worker has claimed: everything needed to execute this attempt.
#[derive(Clone)]
pub struct Claimed {
    /// The run id.
    pub id: String,
    /// The task.
    pub task: TaskName,
    /// The full (unmasked) arguments.
    pub args: Value,
    /// Who asked.
    pub caller: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// This attempt's fencing token.
    pub fence: i64,
    /// Run timeout overriding the task's.
    pub timeout: Option<Duration>,
    /// The first retry's delay.
    pub backoff: Option<Duration>,
    /// Whether a status other than 1 is retried.
    pub retry_on_status: bool,
    /// The task's revision when the run was queued (`None` for runs queued
    /// before revisions were kept).
    pub task_rev: Option<String>,
}

impl Claimed {
    /// The lease this claim holds.
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id.clone(),
            fence: self.fence,
        }
    }
}

impl fmt::Debug for Claimed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claimed")
            .field("id", &self.id)
            .field("task", &self.task)
            .field("args", &Hidden)
            .field("caller", &self.caller)
            .field("attempt", &self.attempt)
            .field("max_attempts", &self.max_attempts)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

/// A held attempt: the run and the fencing token of its attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The run id.
    pub id: String,
    /// The attempt's fencing token.
    pub fence: i64,
}

/// What a heartbeat learned about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Still ours; lease extended.
    Held,
    /// Still ours, and `runs cancel` asked to stop it.
    CancelRequested,
    /// No longer ours: it lapsed and another attempt took over, or the run is gone.
    Lost,
}

/// How an attempt ended, to record.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The final state.
    pub state: RunState,
    /// The attempt's outcome.
    pub outcome: Outcome,
    /// How its process ended.
    pub exit: Option<ExitInfo>,
    /// The attempt that ended (1-based).
    pub attempt: u32,
    /// Its last log lines, stored in the same transaction.
    pub logs: LogBatch,
}

/// A running attempt whose lease has lapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The attempt's lease.
    pub lease: Lease,
    /// Its number.
    pub attempt: u32,
    /// Attempts the run may take.
    pub max_attempts: u32,
    /// Whether `runs cancel` had asked it to stop.
    pub cancel_requested: bool,
    /// Whether it was executed in-process (`execute`, MCP) rather than queued.
    pub inline: bool,
}

/// What a lapsed attempt becomes ([`crate::queue`] decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Queued again, claimable at once, the attempt counted.
    Requeue(RunError),
    /// Failed for good.
    Fail(RunError),
    /// Cancelled, as asked.
    Cancel(RunError),
}

/// What looking a run up by id or prefix found.
#[derive(Debug, Clone, PartialEq)]
pub enum RunLookup {
    /// The run.
    Found(Box<RunRecord>),
    /// No run has that id (or starts with that prefix).
    Missing,
    /// Several runs start with the prefix.
    Ambiguous {
        /// How many (counted up to a bound).
        count: u64,
    },
}

/// Which finished runs [`RunStore::prune`] deletes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prune {
    /// Those that finished more than this long ago.
    pub older_than: Option<Duration>,
    /// Except the newest this many finished runs of each task; alone, it
    /// deletes every finished run beyond them.
    pub keep: Option<u64>,
}

/// How many runs wait or run, store-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Active {
    /// Queued and claimable now.
    pub due: u64,
    /// Queued for later (a delay, a retry's backoff).
    pub delayed: u64,
    /// Running.
    pub running: u64,
}

/// A cron schedule that queues a run of a task at each tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// The schedule's id.
    pub id: String,
    /// The task.
    pub task: TaskName,
    /// The cron expression (5 fields, or 6 with seconds first).
    pub cron: String,
    /// The arguments, masked.
    pub args: Value,
    /// Recorded as each run's caller.
    pub caller: String,
    /// The next tick (epoch ms).
    pub next_fire_at: i64,
    /// When it was added (epoch ms).
    pub created_at: i64,
}

/// A schedule to add.
#[derive(Clone)]
pub struct NewSchedule {
    /// Its id.
    pub id: String,
    /// The task.
    pub task: TaskName,
    /// The cron expression, checked.
    pub cron: String,
    /// The arguments, masked.
    pub args: Value,
    /// The full arguments when they differ.
    pub secret_args: Option<Value>,
    /// The caller recorded on each run.
    pub caller: String,
    /// The first tick (epoch ms).
    pub next_fire_at: i64,
}

impl fmt::Debug for NewSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSchedule")
            .field("id", &self.id)
            .field("task", &self.task)
            .field("cron", &self.cron)
            .field("args", &self.args)
            .field("secret_args", &self.secret_args.as_ref().map(|_| Hidden))
            .field("next_fire_at", &self.next_fire_at)
            .finish_non_exhaustive()
    }
}

/// Schedules due at `now`.
#[derive(Debug, Clone)]
pub struct Due {
    /// The store's time they are due at.
    pub now: i64,
    /// The due schedules.
    pub schedules: Vec<DueSchedule>,
}

/// A due schedule, with what its run needs.
#[derive(Clone)]
pub struct DueSchedule {
    /// The schedule's id.
    pub id: String,
    /// The task.
    pub task: TaskName,
    /// The cron expression.
    pub cron: String,
    /// The full (unmasked) arguments.
    pub args: Value,
    /// The caller recorded on its runs.
    pub caller: String,
    /// The tick that is due (epoch ms).
    pub next_fire_at: i64,
}

impl fmt::Debug for DueSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DueSchedule")
            .field("id", &self.id)
            .field("task", &self.task)
            .field("cron", &self.cron)
            .field("args", &Hidden)
            .field("next_fire_at", &self.next_fire_at)
            .finish_non_exhaustive()
    }
}

/// What an import did: rows inserted, and rows that were stored already, identical.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Rows written.
    pub inserted: u64,
    /// Rows found stored, equal to the imported ones; left as they were.
    pub unchanged: u64,
}

/// The first field (by its stored column's name) in which `task` differs
/// from `stored`, `None` when they are equal.
pub fn task_difference(task: &Task, stored: &Task) -> Option<&'static str> {
    let (a, b) = (task, stored);
    first_false([
        ("name", a.name == b.name),
        ("location", a.location == b.location),
        ("description", a.description == b.description),
        ("inputs", a.inputs == b.inputs),
        ("outputs", a.outputs == b.outputs),
        ("timeout", a.timeout == b.timeout),
        ("retries", a.policy.retries == b.policy.retries),
        ("backoff", a.policy.backoff == b.policy.backoff),
        (
            "retry_on_status",
            a.policy.retry_on_status == b.policy.retry_on_status,
        ),
        ("concurrency", a.policy.concurrency == b.policy.concurrency),
        ("priority", a.policy.priority == b.policy.priority),
        ("formats", a.formats == b.formats),
    ])
}

fn first_false<const N: usize>(checks: [(&'static str, bool); N]) -> Option<&'static str> {
    checks
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(name, _)| name)
}

/// Where [`RunStore::export_runs`] goes on: the insertion order (`seq`) of
/// the last run of the previous page, in the exporting store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportCursor {
    /// The last exported run's `seq`.
    pub seq: i64,
}

/// How much one page of [`RunStore::export_runs`] may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportLimits {
    /// At most this many runs.
    pub runs: usize,
    /// Log text bytes after which the page ends (with the run that passed them).
    pub log_bytes: usize,
}

/// One page of exported runs.
#[derive(Debug, Clone)]
pub struct ExportPage {
    /// The runs, oldest insertion first.
    pub runs: Vec<ExportedRun>,
    /// Where the next page starts, when a limit ended this one.
    pub next: Option<ExportCursor>,
}

/// A run with every column a store keeps of it and its log lines: what
/// [`RunStore::export_runs`] reads and [`RunStore::import_runs`] writes.
/// Only its insertion order (`seq`) is not carried: the importing store
/// gives it the next of its own.
#[derive(Clone, PartialEq)]
pub struct ExportedRun {
    /// The columns history shows (arguments masked).
    pub record: RunRecord,
    /// The unmasked arguments, kept only while the run is queued or running.
    pub secret_args: Option<Value>,
    /// The fencing token of its last attempt.
    pub fence: i64,
    /// When its running attempt's lease lapses (only while running).
    pub lease_until: Option<i64>,
    /// Its run timeout, overriding the task's.
    pub timeout: Option<Duration>,
    /// The first retry's delay.
    pub backoff: Option<Duration>,
    /// Whether a status other than 1 is retried.
    pub retry_on_status: bool,
    /// Whether it was executed in-process (`execute`, MCP) rather than queued.
    pub inline: bool,
    /// The task's revision when it was queued.
    pub task_rev: Option<String>,
    /// Its stored log lines, by attempt, then `seq`.
    pub logs: Vec<ExportedLogLine>,
}

impl ExportedRun {
    /// The first field (by column name; `logs` for the log lines) in which
    /// this run differs from `stored`, `None` when they are equal.
    pub fn difference(&self, stored: &ExportedRun) -> Option<&'static str> {
        let (a, b) = (&self.record, &stored.record);
        first_false([
            ("id", a.id == b.id),
            ("task", a.task == b.task),
            ("args", a.args == b.args),
            ("secret_args", self.secret_args == stored.secret_args),
            ("caller", a.caller == b.caller),
            ("state", a.state == b.state),
            ("priority", a.priority == b.priority),
            ("attempt", a.attempt == b.attempt),
            ("max_attempts", a.max_attempts == b.max_attempts),
            ("fence", self.fence == stored.fence),
            ("worker", a.worker == b.worker),
            ("lease_until", self.lease_until == stored.lease_until),
            ("cancel_requested", a.cancel_requested == b.cancel_requested),
            ("timeout_ms", self.timeout == stored.timeout),
            ("backoff_ms", self.backoff == stored.backoff),
            (
                "retry_on_status",
                self.retry_on_status == stored.retry_on_status,
            ),
            ("queued_at", a.queued_at == b.queued_at),
            ("available_at", a.available_at == b.available_at),
            ("started_at", a.started_at == b.started_at),
            ("finished_at", a.finished_at == b.finished_at),
            ("outcome", a.outcome == b.outcome),
            ("exit", a.exit == b.exit),
            ("error", a.error == b.error),
            ("log_cut_lines", a.log_cut_lines == b.log_cut_lines),
            ("log_cut_bytes", a.log_cut_bytes == b.log_cut_bytes),
            ("schedule_id", a.schedule == b.schedule),
            ("inline", self.inline == stored.inline),
            ("task_rev", self.task_rev == stored.task_rev),
            ("logs", self.logs == stored.logs),
        ])
    }

    /// The bytes of log text it carries.
    pub fn log_bytes(&self) -> usize {
        self.logs.iter().map(|l| l.entry.text.len()).sum()
    }
}

impl fmt::Debug for ExportedRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportedRun")
            .field("record", &self.record)
            .field("secret_args", &self.secret_args.as_ref().map(|_| Hidden))
            .field("fence", &self.fence)
            .field("inline", &self.inline)
            .field("task_rev", &self.task_rev)
            .field("logs", &self.logs.len())
            .finish_non_exhaustive()
    }
}

/// One stored log line of an exported run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedLogLine {
    /// Its attempt.
    pub attempt: u32,
    /// The line.
    pub entry: LogEntry,
}

/// A schedule with every column a store keeps of it: what
/// [`RunStore::export_schedules`] reads and [`RunStore::import_schedules`]
/// writes.
#[derive(Clone, PartialEq)]
pub struct ExportedSchedule {
    /// The columns `schedule list` shows (arguments masked).
    pub schedule: Schedule,
    /// The full arguments when they differ from the masked ones: each tick's
    /// run needs them.
    pub secret_args: Option<Value>,
}

impl ExportedSchedule {
    /// The first field (by column name) in which this schedule differs from
    /// `stored`, `None` when they are equal. `next_fire_at` is not
    /// compared: it is where the schedule has got to, not what it is, and it
    /// moves on in a store whose workers fire it.
    pub fn difference(&self, stored: &ExportedSchedule) -> Option<&'static str> {
        let (a, b) = (&self.schedule, &stored.schedule);
        first_false([
            ("id", a.id == b.id),
            ("task", a.task == b.task),
            ("cron", a.cron == b.cron),
            ("args", a.args == b.args),
            ("secret_args", self.secret_args == stored.secret_args),
            ("caller", a.caller == b.caller),
            ("created_at", a.created_at == b.created_at),
        ])
    }
}

impl fmt::Debug for ExportedSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportedSchedule")
            .field("schedule", &self.schedule)
            .field("secret_args", &self.secret_args.as_ref().map(|_| Hidden))
            .finish()
    }
}

/// What a token may do; each scope includes those below it
/// (`read < run < admin`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Look: list tasks, runs, logs.
    Read,
    /// Also run: submit, cancel, retry, call tools.
    Run,
    /// Also administer: register tasks, schedules, tokens.
    Admin,
}

impl Scope {
    /// Every scope, smallest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Run, Scope::Admin];

    /// The stored (and shown) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Run => "run",
            Scope::Admin => "admin",
        }
    }

    /// The scope called `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token to store: its name, scope and the keyed hash of its secret —
/// never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Its unique name (the actor audit entries show).
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// The keyed hash of its secret, lowercase hex.
    pub hash: String,
    /// How long after its creation (store clock) it expires; `None`: never.
    pub expires_in: Option<Duration>,
}

/// A stored token, as listings show it (its hash is not part of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// When it was created (epoch ms, store clock).
    pub created_at: i64,
    /// When it expires, if it does.
    pub expires_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// When it was last used (updated at most every [`TOUCH_EVERY`]).
    pub last_used_at: Option<i64>,
}

/// Where a token is in its life, at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// It authenticates.
    Active,
    /// Its expiry has passed.
    Expired,
    /// It was revoked.
    Revoked,
}

impl TokenRecord {
    /// Its state at `now` (store clock): revoked wins over expired.
    pub fn state(&self, now: i64) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }
}

/// A token found by its hash, with the store's time it was looked up at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// The token.
    pub record: TokenRecord,
    /// Its stored hash (lowercase hex), for the caller's constant-time comparison.
    pub hash: String,
    /// The store's now: what expiry is judged at.
    pub now: i64,
}

/// How often at most a token's `last_used_at` is written.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// An audit entry to record: who did what to what.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    /// A token's name, or `cli:<user>` for the command line.
    pub actor: String,
    /// What was done (`token.create`, `tools.call`, …).
    pub action: String,
    /// What it was done to (a token's or a task's name).
    pub target: String,
    /// More about it, as JSON; never a secret.
    pub detail: Value,
}

/// A recorded audit entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Its place in insertion order.
    pub seq: i64,
    /// When it was recorded (epoch ms, store clock).
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub target: String,
    /// More, as JSON.
    pub detail: Value,
}

/// Which audit entries to list: newest first, keyset-paginated.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only entries recorded at or after this time (epoch ms).
    pub since: Option<i64>,
    /// At most this many.
    pub limit: usize,
    /// Continue after this cursor (from [`AuditPage::next`]).
    pub after: Option<AuditCursor>,
}

/// A keyset position in the newest-first order of the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    /// The last entry's `at`.
    pub at: i64,
    /// The last entry's `seq`.
    pub seq: i64,
}

impl AuditCursor {
    /// The opaque text form, `<at>.<seq>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at, self.seq)
    }

    /// Parses [`AuditCursor::encode`]'s form.
    pub fn decode(s: &str) -> Option<Self> {
        let (at, seq) = s.trim().split_once('.')?;
        Some(Self {
            at: at.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// One page of the audit log.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// The entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts, when there may be one.
    pub next: Option<AuditCursor>,
}

impl AuditPage {
    /// The page of `entries`, read newest first up to `limit + 1`: an
    /// entry beyond `limit` says there is a next page.
    pub fn of_overfetch(mut entries: Vec<AuditEntry>, limit: usize) -> Self {
        let next = (entries.len() > limit).then(|| {
            entries.truncate(limit);
            entries.last().map_or(
                AuditCursor {
                    at: i64::MIN,
                    seq: i64::MIN,
                },
                |last| AuditCursor {
                    at: last.at,
                    seq: last.seq,
                },
            )
        });
        Self { entries, next }
    }
}

/// API tokens and the audit log: what a backend with history provides.
///
/// Tokens are never deleted (a revoked token keeps its name and row), so
/// [`AuthStore::any_token`] once true stays true. Every time is the
/// store's clock.
pub trait AuthStore: Send + Sync {
    /// The store's key for hashing token secrets (lowercase hex). With
    /// `create`, a store without one keeps `create` as its key (the first
    /// writer's wins); without, `None` when there is none.
    fn token_key(
        &self,
        create: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Stores `token`, created now; `None` (nothing written) when a token
    /// of that name exists, revoked or not.
    fn create_token(
        &self,
        token: &NewToken,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    /// Every token, by name.
    fn tokens(&self) -> impl Future<Output = Result<Vec<TokenRecord>, StoreError>> + Send;

    /// Whether any token was ever created (one indexed read).
    fn any_token(&self) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The token whose hash is `hash` (one indexed read).
    fn find_token(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<FoundToken>, StoreError>> + Send;

    /// Revokes token `name` now (one already revoked keeps its time): the
    /// token as it is then and whether this call revoked it; `None` when
    /// there is none of that name.
    fn revoke_token(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<(TokenRecord, bool)>, StoreError>> + Send;

    /// Sets `last_used_at` of token `name` to now unless it was set within
    /// [`TOUCH_EVERY`]; whether it wrote.
    fn touch_token(&self, name: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Appends `entry` to the audit log, at the store's now.
    fn audit(
        &self,
        entry: &NewAudit,
    ) -> impl Future<Output = Result<AuditEntry, StoreError>> + Send;

    /// A page of the audit log, newest first.
    fn audit_log(
        &self,
        filter: &AuditFilter,
    ) -> impl Future<Output = Result<AuditPage, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Types that carry unmasked arguments print `<hidden>` in their place.
    #[test]
    fn debug_output_never_shows_unmasked_arguments() {
        let secret = json!({"token": "hunter2"});
        let task = TaskName::new("t").unwrap();
        let run = NewRun {
            id: "r".into(),
            task: task.clone(),
            args: json!({"token": "********"}),
            secret_args: Some(secret.clone()),
            caller: "me".into(),
            priority: 0,
            max_attempts: 1,
            backoff: None,
            retry_on_status: false,
            timeout: None,
            available: Availability::Now,
            schedule: None,
            task_rev: None,
        };
        let claimed = Claimed {
            id: "r".into(),
            task: task.clone(),
            args: secret.clone(),
            caller: "me".into(),
            attempt: 1,
            max_attempts: 1,
            fence: 1,
            timeout: None,
            backoff: None,
            retry_on_status: false,
            task_rev: None,
        };
        let schedule = NewSchedule {
            id: "s".into(),
            task: task.clone(),
            cron: "* * * * *".into(),
            args: json!({"token": "********"}),
            secret_args: Some(secret.clone()),
            caller: "me".into(),
            next_fire_at: 0,
        };
        let due = DueSchedule {
            id: "s".into(),
            task: task.clone(),
            cron: "* * * * *".into(),
            args: secret.clone(),
            caller: "me".into(),
            next_fire_at: 0,
        };
        let exported_schedule = ExportedSchedule {
            schedule: Schedule {
                id: "s".into(),
                task: task.clone(),
                cron: "* * * * *".into(),
                args: json!({"token": "********"}),
                caller: "me".into(),
                next_fire_at: 0,
                created_at: 0,
            },
            secret_args: Some(secret.clone()),
        };
        let exported_run = ExportedRun {
            record: RunRecord {
                id: "r".into(),
                task,
                args: json!({"token": "********"}),
                caller: "me".into(),
                state: RunState::Queued,
                priority: 0,
                attempt: 0,
                max_attempts: 1,
                worker: None,
                cancel_requested: false,
                queued_at: 0,
                available_at: 0,
                started_at: None,
                finished_at: None,
                outcome: None,
                exit: None,
                error: None,
                log_cut_lines: 0,
                log_cut_bytes: 0,
                schedule: None,
            },
            secret_args: Some(secret),
            fence: 0,
            lease_until: None,
            timeout: None,
            backoff: None,
            retry_on_status: false,
            inline: false,
            task_rev: None,
            logs: Vec::new(),
        };
        for text in [
            format!("{run:?}"),
            format!("{claimed:?}"),
            format!("{schedule:?}"),
            format!("{due:?}"),
            format!("{exported_schedule:?}"),
            format!("{exported_run:?}"),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("<hidden>"), "{text}");
        }
    }
}
