//! A worker: claims queued runs and executes them, renewing their leases.
//!
//! One loop owns every store call; each claimed attempt runs as a tokio task
//! with its own cancellation token and bounded log. The loop:
//! claims while slots are free, only runs its tags allow and not of tasks it
//! cannot run here → renews leases and its row in the worker registry every
//! `lease / 3` (a lost lease or a cancel request cancels that attempt, which
//! kills its process group) → flushes logs every 250 ms → requeues expired
//! leases and fires due schedules every second → records each finished
//! attempt, guarded by its fencing token. On shutdown it stops claiming, lets
//! running attempts finish for `grace`, then cancels them and gives them back
//! to the queue, and removes itself from the registry.
//!
//! Workers may run on several machines. A claimed run whose task's location
//! does not exist or is not executable here is given back uncounted, and the
//! task is left out of this worker's claims (looked at again every
//! `recheck`): another machine may run it, so it is never failed for that.
//!
//! **The store going away** (a lock held elsewhere, a full disk, a server
//! restarting) does not end the worker. An error that may pass
//! ([`StoreError::is_transient`]) starts an outage ([`Reachability`]): the
//! worker says so once, claims nothing, keeps its attempts running and tries
//! again with backoff (100 ms doubling to 5 s) — renewing leases first, then
//! recording what finished, then claiming — and says once when the store is
//! back. A finished attempt's end is kept, with its log, until the store
//! takes it or answers that the lease is lost, its lease renewed meanwhile;
//! log lines a flush could not store are sent again. An attempt whose lease
//! has certainly lapsed by the worker's own clock (no renewal for longer
//! than the lease while the store did not answer) is given up: its process
//! is stopped, as for a lost lease, since another worker may now take the
//! run over. At shutdown, ends the store still refuses are tried for at
//! most another `grace`, then left to their leases. Only errors that trying
//! again cannot mend (another program's database, a newer schema, a corrupt
//! store) end the worker.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};
use tokio_util::sync::CancellationToken;

use super::{backoff_delay, fire_schedules, is_retryable, requeue_expired, retry_note};
use crate::history::{DEFAULT_LOG_LIMIT, LogBatch, RunError, RunLogs, RunState};
use crate::outcome::{Outcome, RunReport};
use crate::runner::{DiscoveryError, RunRequest, Runner, check_executable};
use crate::secrets::secrets;
use crate::store::{
    ClaimFilter, Claimed, Finish, Lease, LeaseStatus, NewRun, Prune, Reachability, RunLookup,
    Store, StoreError, StoreNotice, WorkerBeat,
};
use crate::task::{PreparedTask, Task, TaskName};

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Recorded on each attempt it claims.
    pub id: String,
    /// Attempts run at once.
    pub concurrency: usize,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// How often to look for work when the queue was empty.
    pub poll: Duration,
    /// Whether an idle worker also wakes when the store says runs were
    /// queued (PostgreSQL's `LISTEN`/`NOTIFY`); off, it only polls.
    pub listen: bool,
    /// On shutdown, how long running attempts may still take before they
    /// are cancelled and requeued; then, if the store does not answer, how
    /// much longer their ends are tried before they are left to their leases.
    pub grace: Duration,
    /// Log budget per attempt (head + tail).
    pub log_limit: usize,
    /// Exit once no run is running anywhere and none is due now.
    pub until_idle: bool,
    /// With `until_idle`, also wait for runs queued for later (delays, retry backoffs).
    pub wait_delayed: bool,
    /// Keep at most this many finished runs per task (pruned every minute).
    pub keep_runs: Option<u64>,
    /// Its tags, sorted ([`crate::task::normalize_tags`]): it claims only
    /// runs whose task's tags are all among them (a task without tags: any
    /// worker).
    pub tags: Vec<String>,
    /// How often a task whose location cannot be run here is looked at again.
    pub recheck: Duration,
}

/// This machine's name, for worker ids (`localhost` if it has none).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_str()
        .ok()
        .map(str::to_owned)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Default for WorkerConfig {
    /// The id is `worker-<host>-<pid>`.
    fn default() -> Self {
        Self {
            id: format!("worker-{}-{}", hostname(), std::process::id()),
            concurrency: 1,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(100),
            listen: true,
            grace: Duration::from_secs(30),
            log_limit: DEFAULT_LOG_LIMIT,
            until_idle: false,
            wait_delayed: false,
            keep_runs: None,
            tags: Vec::new(),
            recheck: DEFAULT_RECHECK,
        }
    }
}

/// How often, by default, a worker looks again at a task it cannot run here.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(30);

/// Something a worker did, for its caller to report.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    /// An attempt started.
    Started {
        /// The run.
        run: String,
        /// Its task.
        task: TaskName,
        /// The attempt number.
        attempt: u32,
    },
    /// An attempt ended and was recorded.
    Finished {
        /// The run.
        run: String,
        /// Its task.
        task: TaskName,
        /// The state recorded (`queued` for a retry).
        state: RunState,
    },
    /// An attempt's lease was lost: its result was not recorded.
    LeaseLost {
        /// The run.
        run: String,
        /// What happened, and what became of the run: `lease expired while
        /// this worker was not running (no renewal for 4s); attempt 2 is
        /// running on this worker`.
        message: String,
    },
    /// A running attempt was given back to the queue at shutdown.
    Released {
        /// The run.
        run: String,
    },
    /// Expired leases were requeued or failed.
    Expired {
        /// How many runs.
        count: u64,
    },
    /// A schedule fired.
    Fired {
        /// The run it queued.
        run: String,
        /// Its task.
        task: TaskName,
    },
    /// A claimed run's task cannot run on this machine (its location is
    /// missing or not executable here): the attempt was given back uncounted,
    /// and this worker leaves the task's runs to others until its location
    /// can be run here.
    LeftForOthers {
        /// The run.
        run: String,
        /// Its task.
        task: TaskName,
        /// Why: "task `x`: `/opt/x.sh` does not exist on this machine; left
        /// for another worker (looked at again every 30s)".
        message: String,
    },
    /// A claimed run could not start (task unregistered or broken); it was recorded as failed.
    Unrunnable {
        /// The run.
        run: String,
        /// Why.
        message: String,
    },
    /// A store call failed with a transient error: from now on the worker
    /// claims nothing, its running attempts go on, and it tries again with
    /// backoff. Said once per outage.
    StoreUnavailable {
        /// The first error.
        error: String,
        /// The pause before the next try (then longer, up to
        /// [`MAX_RETRY`](crate::store::MAX_RETRY)).
        retry_in: Duration,
    },
    /// A store call succeeded again after [`WorkerEvent::StoreUnavailable`].
    StoreBack {
        /// How long the store did not answer.
        after: Duration,
    },
    /// At shutdown, an attempt's end could not be recorded before the worker
    /// had to stop (the store did not answer).
    Unrecorded {
        /// The run.
        run: String,
        /// What becomes of it.
        message: String,
    },
}

/// What a worker did over its life.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerStats {
    /// Attempts recorded as completed.
    pub completed: u64,
    /// Of the completed attempts, those whose task reported a status other than 1.
    pub other_status: u64,
    /// Attempts recorded as failed or cancelled, including claimed runs that
    /// could not start (task unregistered or broken).
    pub failed: u64,
    /// Attempts queued again for a retry.
    pub retried: u64,
    /// Attempts whose lease was lost, that were given up while the store
    /// did not answer, or whose end could not be recorded before shutdown.
    pub lost: u64,
    /// Attempts given back at shutdown.
    pub released: u64,
    /// Attempts given back because their task cannot run on this machine.
    pub left: u64,
}

struct InFlight {
    lease: Lease,
    task: TaskName,
    attempt: u32,
    max_attempts: u32,
    backoff: Option<Duration>,
    retry_on_status: bool,
    cancel: CancellationToken,
    logs: Arc<RunLogs>,
    /// Why its lease was lost (or the attempt given up), once it was.
    lost: Option<String>,
    cancel_requested: bool,
    released: bool,
    /// When its lease was last renewed (claimed, or a heartbeat held it), as
    /// that call returned: the store's lease has certainly lapsed `lease`
    /// after this.
    renewed: Instant,
}

/// A finished (or never started) attempt whose end waits to be recorded.
/// It stays until the store takes it or answers that the lease is lost, its
/// lease renewed meanwhile.
struct Ending {
    run: String,
    lease: Lease,
    task: TaskName,
    attempt: u32,
    end: End,
}

enum End {
    /// Give the run back to the queue, uncounted. Its log goes first.
    Release { logs: LogBatch, why: GiveBack },
    /// Queue the run again for a retry.
    Retry {
        finish: Finish,
        delay: Duration,
        note: RunError,
    },
    /// Record the attempt's end; `unrunnable` says why it never started.
    Finish {
        finish: Finish,
        unrunnable: Option<String>,
    },
}

/// Why a claimed run is given back to the queue.
enum GiveBack {
    /// The worker stops.
    Shutdown,
    /// The store could not say what its task is: another try will.
    NotStarted,
    /// Its task cannot run on this machine (why, as the event says it).
    LeftForOthers(String),
}

/// How long a store call pending since before an attempt's lease lapsed
/// may still answer before that attempt is given up (so that a worker
/// resumed after a pause, whose call answers at once, is not taken for one
/// whose store is away).
const SUSPECT: Duration = Duration::from_millis(100);

/// How long a worker trusts its copy of a task definition before re-reading it.
const TASK_CACHE_TTL: Duration = Duration::from_secs(1);

/// Why a claimed run cannot be started now.
enum Refusal {
    /// The store did not answer (or failed): the run goes back to the queue.
    Store(StoreError),
    /// The run can never start as queued: it fails, saying why.
    Unrunnable(String),
}

/// Prepared tasks by name, re-read at most every [`TASK_CACHE_TTL`] and
/// recompiled only when the stored definition changed.
#[derive(Default)]
struct TaskCache(HashMap<TaskName, (Arc<PreparedTask>, Instant)>);

impl TaskCache {
    async fn get(&mut self, store: &Store, name: &TaskName) -> Result<Arc<PreparedTask>, Refusal> {
        if let Some((p, at)) = self.0.get(name)
            && at.elapsed() < TASK_CACHE_TTL
        {
            return Ok(p.clone());
        }
        let task: Task = match store.get(name).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(Refusal::Unrunnable(format!(
                    "task `{name}` is not registered (it was unregistered after this run was queued); \
                     the run was not started"
                )));
            }
            Err(e) if e.is_transient() => return Err(Refusal::Store(e)),
            Err(e) => return Err(Refusal::Unrunnable(e.to_string())),
        };
        let prepared = match self.0.get(name).filter(|(p, _)| *p.task() == task) {
            Some((p, _)) => p.clone(),
            None => Arc::new(PreparedTask::new(task).map_err(|e| {
                Refusal::Unrunnable(format!(
                    "task `{name}` has a schema that no longer compiles: {e}"
                ))
            })?),
        };
        self.0
            .insert(name.clone(), (prepared.clone(), Instant::now()));
        Ok(prepared)
    }

    /// Makes the next [`TaskCache::get`] of `name` read the store.
    fn forget(&mut self, name: &TaskName) {
        self.0.remove(name);
    }
}

/// Tasks this worker cannot run on this machine, each with when it was
/// last found so; left out of its claims ([`ClaimFilter::exclude`]).
#[derive(Default)]
struct Excluded(HashMap<TaskName, Instant>);

impl Excluded {
    /// Looks again at each task found unrunnable more than `recheck` ago:
    /// it is claimed again once its location can be run here, or once it
    /// is gone from the registry or broken (then claiming it fails the run,
    /// saying why, as for any worker).
    async fn recheck(&mut self, store: &Store, cache: &mut TaskCache, recheck: Duration) {
        let due: Vec<TaskName> = self
            .0
            .iter()
            .filter(|(_, at)| at.elapsed() >= recheck)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            cache.forget(&name);
            let still = match cache.get(store, &name).await {
                Ok(p) => not_runnable(&p.task().location).await.is_some(),
                // The store did not answer: look again next time.
                Err(Refusal::Store(_)) => true,
                Err(Refusal::Unrunnable(_)) => false,
            };
            if still {
                self.0.insert(name, Instant::now());
            } else {
                self.0.remove(&name);
            }
        }
    }

    fn names(&self) -> Vec<TaskName> {
        self.0.keys().cloned().collect()
    }
}

/// Why this process cannot run the executable at `location`, if it cannot:
/// it does not exist here, is not a regular file, or is not executable by
/// this user. (A file that cannot be started for another reason, such as a
/// bad `#!` line, is tried, and fails like any run.)
async fn not_runnable(location: &Path) -> Option<String> {
    let path = location.to_owned();
    let checked = tokio::task::spawn_blocking(move || check_executable(&path)).await;
    let shown = location.display();
    match checked {
        Ok(Ok(_)) | Err(_) => None,
        Ok(Err(DiscoveryError::NotFound { .. })) => {
            Some(format!("`{shown}` does not exist on this machine"))
        }
        Ok(Err(DiscoveryError::NotAFile { .. })) => {
            Some(format!("`{shown}` is not a regular file on this machine"))
        }
        Ok(Err(DiscoveryError::NotExecutable { .. })) => Some(format!(
            "`{shown}` is not executable by this worker's user on this machine"
        )),
        Ok(Err(DiscoveryError::Inaccessible { message, .. })) => Some(format!(
            "`{shown}` cannot be examined on this machine ({message})"
        )),
        Ok(Err(other)) => Some(other.to_string()),
    }
}

/// What this worker tells the registry about itself now.
fn beat(config: &WorkerConfig, running: usize) -> WorkerBeat {
    WorkerBeat {
        id: config.id.clone(),
        host: hostname(),
        pid: std::process::id(),
        tags: config.tags.clone(),
        concurrency: u32::try_from(config.concurrency).unwrap_or(u32::MAX),
        running: u32::try_from(running).unwrap_or(u32::MAX),
        lease: config.lease,
    }
}

/// Everything the loop owns.
struct Worker<'a> {
    store: &'a Store,
    runner: &'a Runner,
    config: &'a WorkerConfig,
    cache: TaskCache,
    excluded: Excluded,
    /// With `until_idle`: the last claim found nothing, after a count that
    /// showed due runs (which this worker cannot take, then).
    nothing_for_me: bool,
    // By lease, not run id: after a pause this worker may hold a newer
    // attempt of a run whose older attempt is still being stopped.
    inflight: HashMap<Lease, InFlight>,
    running: JoinSet<(Lease, RunReport)>,
    /// Ends waiting to be recorded, oldest first.
    endings: Vec<Ending>,
    reach: Reachability,
    /// When this worker sent the last renewal of its leases that succeeded:
    /// a gap longer than the lease means it was not running (paused, or
    /// starved) while they lapsed.
    renewed: Instant,
    stats: WorkerStats,
    /// An error that trying again cannot mend: the worker stops.
    fatal: Option<StoreError>,
}

/// Runs a worker until `shutdown` is cancelled (then drains gracefully) or,
/// with `until_idle`, until there is nothing left to do. `events` hears of
/// each step. A store that does not answer is waited for (see the module
/// docs); an error that trying again cannot mend ends the worker after its
/// attempts are released.
pub async fn run_worker(
    store: &Store,
    runner: &Runner,
    config: &WorkerConfig,
    shutdown: &CancellationToken,
    events: &mut dyn FnMut(WorkerEvent),
) -> Result<WorkerStats, StoreError> {
    let mut w = Worker {
        store,
        runner,
        config,
        cache: TaskCache::default(),
        excluded: Excluded::default(),
        nothing_for_me: false,
        inflight: HashMap::new(),
        running: JoinSet::new(),
        endings: Vec::new(),
        reach: Reachability::default(),
        renewed: Instant::now(),
        stats: WorkerStats::default(),
        fatal: None,
    };
    let mut heartbeat = interval((config.lease / 3).max(Duration::from_millis(50)));
    let mut flush = interval(Duration::from_millis(250));
    let mut maintain = interval(Duration::from_secs(1));
    let mut prune = interval(Duration::from_secs(60));
    for t in [&mut heartbeat, &mut flush, &mut maintain, &mut prune] {
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    let mut grace_until: Option<Instant> = None;
    // Once stopping: ends the store still refuses after this are left to their leases.
    let mut record_until: Option<Instant> = None;
    let mut grace_over = false;
    w.beat(events).await;

    loop {
        if grace_until.is_none() && (shutdown.is_cancelled() || w.fatal.is_some()) {
            let grace = if w.fatal.is_some() {
                Duration::ZERO
            } else {
                config.grace
            };
            grace_until = Some(Instant::now() + grace);
            record_until = Some(Instant::now() + grace * 2);
        }
        let stopping = grace_until.is_some();
        // After an outage, leases first: they are what may lapse.
        if w.reach.is_down() && w.may_call() {
            w.renew(events).await;
        }
        w.record_endings(events).await;
        let (mut idle, mut found_none) = (false, false);
        if !stopping && w.inflight.len() < config.concurrency && w.may_call() {
            (idle, found_none) = w.claim(events).await;
        }
        if stopping
            && w.inflight.is_empty()
            && (w.endings.is_empty() || record_until.is_some_and(|t| Instant::now() >= t))
        {
            w.abandon_endings(events);
            break;
        }
        if idle
            && config.until_idle
            && w.inflight.is_empty()
            && w.endings.is_empty()
            && w.may_read()
        {
            let (started, active) = during(
                &mut w.inflight,
                config.lease,
                w.reach.down_since(),
                w.store.active(),
            )
            .await;
            match w.sort(started, active, events) {
                Some(a) if a.running == 0 && (a.delayed == 0 || !config.wait_delayed) => {
                    if a.due == 0 || (found_none && w.nothing_for_me) {
                        break;
                    }
                    // Due runs, but none this worker claimed: claim once
                    // more, after this count, before deciding that they are
                    // runs it cannot take (its tags, tasks it cannot run here).
                    w.nothing_for_me = found_none;
                    if w.nothing_for_me {
                        continue;
                    }
                }
                Some(_) => w.nothing_for_me = false,
                None => {}
            }
        }
        let retry_at = w.reach.retry_at().filter(|&at| at > Instant::now());
        // While the store is away, the moment a running attempt's lease has
        // certainly lapsed.
        let lapse = w.next_lapse().filter(|_| w.reach.is_down());
        let store = w.store;
        let poll = async {
            if config.listen {
                store.wait_for_work(config.poll).await;
            } else {
                tokio::time::sleep(config.poll).await;
            }
        };
        tokio::select! {
            Some(joined) = w.running.join_next(), if !w.running.is_empty() => {
                if let Ok((lease, report)) = joined {
                    w.ended(&lease, report, events);
                }
            }
            _ = store.cancel_asked(), if !w.inflight.is_empty() && w.may_call() => {
                // Asked in this process (`serve`'s API): the renewal says which.
                w.renew(events).await;
            }
            _ = heartbeat.tick(), if w.may_call() => {
                w.renew(events).await;
                // The leases first: the registry only says who is alive.
                w.beat(events).await;
            }
            _ = flush.tick(), if w.may_call() => w.flush(events).await,
            _ = maintain.tick(), if !stopping && w.may_read() => {
                let (started, expired) =
                    during(&mut w.inflight, config.lease, None, requeue_expired(w.store)).await;
                match w.sort(started, expired, events) {
                    Some(0) | None => {}
                    Some(count) => events(WorkerEvent::Expired { count }),
                }
                if w.may_read() {
                    let (started, fired) =
                        during(&mut w.inflight, config.lease, None, fire_schedules(w.store)).await;
                    for NewRun { id, task, .. } in w.sort(started, fired, events).unwrap_or_default() {
                        events(WorkerEvent::Fired { run: id, task });
                    }
                }
            }
            _ = prune.tick(), if !stopping && config.keep_runs.is_some() && w.may_read() => {
                let keep = Prune { older_than: None, keep: config.keep_runs };
                let (started, pruned) =
                    during(&mut w.inflight, config.lease, None, w.store.prune(&keep)).await;
                w.sort(started, pruned, events);
            }
            _ = shutdown.cancelled(), if !stopping => {}
            _ = sleep_until(grace_until.unwrap_or_else(Instant::now)), if stopping && !grace_over => {
                grace_over = true;
                for run in w.inflight.values_mut() {
                    run.released = true;
                    run.cancel.cancel();
                }
            }
            _ = sleep_until(record_until.unwrap_or_else(Instant::now)),
                if stopping && w.inflight.is_empty() && !w.endings.is_empty() => {}
            _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
            _ = sleep_until(lapse.unwrap_or_else(Instant::now)), if lapse.is_some() => {
                let since = w.reach.down_since().unwrap_or_else(Instant::now);
                let now = Instant::now();
                give_up(&mut w.inflight, config.lease, since, |at| at <= now);
            }
            _ = poll, if idle && !stopping => {}
            else => tokio::time::sleep(config.poll).await,
        }
    }
    // Best effort, and not while the store is away: a worker that cannot say
    // goodbye shows as gone once its lease has passed, and is forgotten a day later.
    if !w.reach.is_down() {
        let _ = w.store.remove_worker(&config.id).await;
    }
    match w.fatal {
        Some(e) => Err(e),
        None => Ok(w.stats),
    }
}

impl Worker<'_> {
    /// Whether a store call may be made now: no outage, or its next try is due.
    fn may_call(&self) -> bool {
        self.reach.retry_at().is_none_or(|at| Instant::now() >= at)
    }

    /// Whether a call that only reads (or may not write) may be made now:
    /// not during an outage, which only calls that write may end (a store
    /// locked for writing still answers reads).
    fn may_read(&self) -> bool {
        !self.reach.is_down()
    }

    /// Sorts the result of a store call made at `started`
    /// ([`Reachability::check`]); an error that cannot pass stops the
    /// worker. While the store is away, attempts whose lease has certainly
    /// lapsed are given up.
    fn sort<T>(
        &mut self,
        started: Instant,
        result: Result<T, StoreError>,
        events: &mut dyn FnMut(WorkerEvent),
    ) -> Option<T> {
        let sorted = self.reach.check(started, result, &mut |n| {
            events(match n {
                StoreNotice::Unavailable { error, retry_in } => {
                    WorkerEvent::StoreUnavailable { error, retry_in }
                }
                StoreNotice::Back { after } => WorkerEvent::StoreBack { after },
            })
        });
        match sorted {
            Ok(Some(value)) => Some(value),
            Ok(None) => {
                let since = self.reach.down_since().unwrap_or_else(Instant::now);
                let now = Instant::now();
                give_up(&mut self.inflight, self.config.lease, since, |at| at <= now);
                None
            }
            Err(e) => {
                self.fatal.get_or_insert(e);
                None
            }
        }
    }

    /// When the first running attempt's lease will have certainly lapsed.
    fn next_lapse(&self) -> Option<Instant> {
        self.inflight
            .values()
            .filter(|r| r.lost.is_none())
            .map(|r| r.renewed + self.config.lease)
            .min()
    }

    /// Tells the worker registry it is alive (a write, so it may end an outage).
    async fn beat(&mut self, events: &mut dyn FnMut(WorkerEvent)) {
        if !self.may_call() {
            return;
        }
        let beat = beat(self.config, self.inflight.len());
        let (started, beaten) = during(
            &mut self.inflight,
            self.config.lease,
            self.reach.down_since(),
            self.store.beat_worker(&beat),
        )
        .await;
        self.sort(started, beaten, events);
    }

    /// Claims runs for the free slots and starts them. Returns whether fewer
    /// were claimed than asked (nothing more is due), and whether none was.
    async fn claim(&mut self, events: &mut dyn FnMut(WorkerEvent)) -> (bool, bool) {
        let free = self.config.concurrency - self.inflight.len();
        let (lease, down) = (self.config.lease, self.reach.down_since());
        during(
            &mut self.inflight,
            lease,
            down,
            self.excluded
                .recheck(self.store, &mut self.cache, self.config.recheck),
        )
        .await;
        let filter = ClaimFilter {
            tags: self.config.tags.clone(),
            exclude: self.excluded.names(),
        };
        let call = self.store.claim(&self.config.id, free, lease, &filter);
        let (started, claimed) = during(&mut self.inflight, lease, down, call).await;
        let Some(claimed) = self.sort(started, claimed, events) else {
            return (false, false);
        };
        let renewed = Instant::now();
        let idle = claimed.len() < free;
        let none = claimed.is_empty();
        self.nothing_for_me &= none;
        for c in claimed {
            self.start(c, renewed, events).await;
        }
        (idle, none)
    }

    async fn start(&mut self, c: Claimed, renewed: Instant, events: &mut dyn FnMut(WorkerEvent)) {
        let lease = c.lease();
        // This worker re-claimed a run whose older attempt it still runs: that
        // attempt's lease lapsed while the worker was not running. Stop it.
        for (held, run) in self.inflight.iter_mut() {
            if held.id == lease.id && run.lost.is_none() {
                let now = format!("attempt {} is running on this worker", c.attempt);
                run.lost = Some(lost_why(self.renewed.elapsed(), self.config.lease, &now));
                run.cancel.cancel();
            }
        }
        let (lapse, down) = (self.config.lease, self.reach.down_since());
        let (mut started, mut prepared) = during(
            &mut self.inflight,
            lapse,
            down,
            self.cache.get(self.store, &c.task),
        )
        .await;
        if let (Ok(p), Some(rev)) = (&prepared, &c.task_rev)
            && rev != p.revision()
        {
            // The cached copy may be older than the run: read the task again.
            self.cache.forget(&c.task);
            (started, prepared) = during(
                &mut self.inflight,
                lapse,
                down,
                self.cache.get(self.store, &c.task),
            )
            .await;
        }
        let prepared = prepared.and_then(|p| match &c.task_rev {
            // Registered again meanwhile as something else: not what was asked for.
            Some(rev) if rev != p.revision() => Err(Refusal::Unrunnable(format!(
                "task `{}` was registered again with a different location or schema after this \
                 run was queued; the run was not delivered to it (submit it again to run the new \
                 definition)",
                c.task
            ))),
            _ => Ok(p),
        });
        let prepared = match prepared {
            Ok(p) => p,
            Err(refusal) => {
                let end = match refusal {
                    Refusal::Store(e) => {
                        self.sort::<()>(started, Err(e), events);
                        End::Release {
                            logs: LogBatch::default(),
                            why: GiveBack::NotStarted,
                        }
                    }
                    Refusal::Unrunnable(message) => End::Finish {
                        finish: Finish {
                            state: RunState::Failed,
                            outcome: Outcome::SpawnFailed {
                                message: message.clone(),
                            },
                            exit: None,
                            attempt: c.attempt,
                            logs: LogBatch::default(),
                        },
                        unrunnable: Some(message),
                    },
                };
                self.endings.push(Ending {
                    run: c.id,
                    lease,
                    task: c.task,
                    attempt: c.attempt,
                    end,
                });
                return;
            }
        };
        if let Some(why) = not_runnable(&prepared.task().location).await {
            // Another machine may have it: give the attempt back, uncounted,
            // and stop claiming this task's runs here for a while.
            self.excluded.0.insert(c.task.clone(), Instant::now());
            let message = format!(
                "task `{}`: {why}; left for another worker (looked at again every {})",
                c.task,
                humantime::format_duration(self.config.recheck)
            );
            self.endings.push(Ending {
                run: c.id,
                lease,
                task: c.task,
                attempt: c.attempt,
                end: End::Release {
                    logs: LogBatch::default(),
                    why: GiveBack::LeftForOthers(message),
                },
            });
            return;
        }
        let logs = Arc::new(RunLogs::new(
            self.config.log_limit,
            secrets(&prepared.task().inputs, &c.args),
        ));
        let cancel = CancellationToken::new();
        events(WorkerEvent::Started {
            run: c.id.clone(),
            task: c.task.clone(),
            attempt: c.attempt,
        });
        self.inflight.insert(
            lease.clone(),
            InFlight {
                lease: lease.clone(),
                task: c.task.clone(),
                attempt: c.attempt,
                max_attempts: c.max_attempts,
                backoff: c.backoff,
                retry_on_status: c.retry_on_status,
                cancel: cancel.clone(),
                logs: logs.clone(),
                lost: None,
                cancel_requested: false,
                released: false,
                renewed,
            },
        );
        let runner = self.runner.clone();
        let request = RunRequest {
            args: c.args,
            caller: c.caller,
            timeout: c.timeout,
            run_id: Some(c.id.clone()),
            attempt: Some(c.attempt),
        };
        self.running.spawn(async move {
            let report = runner.run(&prepared, request, logs.as_ref(), &cancel).await;
            (lease, report)
        });
    }

    /// Renews the leases of running attempts and of ends waiting to be
    /// recorded, and acts on what the store answers.
    async fn renew(&mut self, events: &mut dyn FnMut(WorkerEvent)) {
        let leases: Vec<Lease> = self
            .inflight
            .values()
            .filter(|r| r.lost.is_none())
            .map(|r| r.lease.clone())
            .chain(self.endings.iter().map(|e| e.lease.clone()))
            .collect();
        if leases.is_empty() {
            return;
        }
        let call = self.store.heartbeat(&leases, self.config.lease);
        let (started, statuses) = during(
            &mut self.inflight,
            self.config.lease,
            self.reach.down_since(),
            call,
        )
        .await;
        let Some(statuses) = self.sort(started, statuses, events) else {
            return;
        };
        // The gap runs from the last renewal's sending to this one's answer:
        // the longest the leases may have gone unrenewed. A pause with a
        // heartbeat in flight shows in it either way: sent before the pause
        // and answered after it (this one), or answered only after it (the
        // last one, which counts from when it was sent). Each run's own
        // renewal counts from the answer: its lease has certainly lapsed
        // `lease` after that.
        let gap = self.renewed.elapsed();
        self.renewed = started;
        let answered = Instant::now();
        for (lease, status) in leases.iter().zip(statuses) {
            if let Some(run) = self.inflight.get_mut(lease) {
                if run.lost.is_some() {
                    continue;
                }
                match status {
                    LeaseStatus::Held => run.renewed = answered,
                    LeaseStatus::CancelRequested => {
                        run.renewed = answered;
                        run.cancel_requested = true;
                        run.cancel.cancel();
                    }
                    LeaseStatus::Lost => {
                        let now = what_became_of(self.store, &self.config.id, &lease.id).await;
                        run.lost = Some(lost_why(gap, self.config.lease, &now));
                        run.cancel.cancel();
                    }
                }
            } else if status == LeaseStatus::Lost
                && let Some(i) = self.endings.iter().position(|e| e.lease == *lease)
            {
                // The store says it is no longer ours: its end is dropped (fenced).
                let ending = self.endings.remove(i);
                self.stats.lost += 1;
                let now = what_became_of(self.store, &self.config.id, &lease.id).await;
                events(WorkerEvent::LeaseLost {
                    run: ending.run,
                    message: format!("lease lost before its end could be recorded; {now}"),
                });
            }
        }
    }

    /// Stores the log lines printed since the last flush; what the store
    /// does not take is sent again next time.
    async fn flush(&mut self, events: &mut dyn FnMut(WorkerEvent)) {
        let runs: Vec<(Lease, u32, Arc<RunLogs>)> = self
            .inflight
            .values()
            .filter(|r| r.lost.is_none())
            .map(|r| (r.lease.clone(), r.attempt, r.logs.clone()))
            .collect();
        for (lease, attempt, logs) in runs {
            if !self.may_call() {
                break;
            }
            let batch = logs.take();
            if batch.is_empty() {
                continue;
            }
            let call = self.store.record_logs(&lease, attempt, &batch);
            let (started, stored) = during(
                &mut self.inflight,
                self.config.lease,
                self.reach.down_since(),
                call,
            )
            .await;
            // Stored, or refused because the lease is lost (the heartbeat
            // acts on that): either way this batch is done with.
            if self.sort(started, stored, events).is_none() {
                logs.put_back(batch);
            }
        }
    }

    /// An attempt's task returned: what to record.
    fn ended(&mut self, lease: &Lease, report: RunReport, events: &mut dyn FnMut(WorkerEvent)) {
        let Some(run) = self.inflight.remove(lease) else {
            return;
        };
        let id = report.run_id.clone();
        if let Some(message) = run.lost {
            self.stats.lost += 1;
            events(WorkerEvent::LeaseLost { run: id, message });
            return;
        }
        let logs = run.logs.take();
        let end = if run.released && !run.cancel_requested {
            End::Release {
                logs,
                why: GiveBack::Shutdown,
            }
        } else {
            let finish = Finish {
                state: RunState::for_outcome(&report.outcome),
                outcome: report.outcome,
                exit: report.exit,
                attempt: run.attempt,
                logs,
            };
            let retry = !run.cancel_requested
                && run.attempt < run.max_attempts
                && is_retryable(&finish.outcome, run.retry_on_status);
            if retry {
                let delay = backoff_delay(run.backoff, run.attempt);
                let note = retry_note(&finish.outcome, run.attempt, run.max_attempts, delay);
                End::Retry {
                    finish,
                    delay,
                    note,
                }
            } else {
                End::Finish {
                    finish,
                    unrunnable: None,
                }
            }
        };
        self.endings.push(Ending {
            run: id,
            lease: run.lease,
            task: run.task,
            attempt: run.attempt,
            end,
        });
    }

    /// Records the ends waiting, oldest first, until the store fails.
    async fn record_endings(&mut self, events: &mut dyn FnMut(WorkerEvent)) {
        while !self.endings.is_empty() && self.may_call() {
            let mut ending = self.endings.remove(0);
            let call = record(self.store, &mut ending.end, &ending.lease, ending.attempt);
            let (started, recorded) = during(
                &mut self.inflight,
                self.config.lease,
                self.reach.down_since(),
                call,
            )
            .await;
            match self.sort(started, recorded, events) {
                Some(held) => self.recorded(ending, held, events).await,
                None => {
                    self.endings.insert(0, ending);
                    break;
                }
            }
        }
    }

    /// Counts and tells what recording `ending` did; `held` says whether
    /// the store took it (`false`: the lease was lost meanwhile).
    async fn recorded(&mut self, ending: Ending, held: bool, events: &mut dyn FnMut(WorkerEvent)) {
        let Ending {
            run,
            lease,
            task,
            end,
            ..
        } = ending;
        let lost = |what: &str| format!("lease lost before {what}");
        let (state, why_lost) = match end {
            End::Release { why, .. } => match (why, held) {
                (GiveBack::Shutdown, true) => {
                    self.stats.released += 1;
                    events(WorkerEvent::Released { run });
                    return;
                }
                (GiveBack::LeftForOthers(message), true) => {
                    self.stats.left += 1;
                    events(WorkerEvent::LeftForOthers { run, task, message });
                    return;
                }
                (GiveBack::Shutdown, false) => (None, lost("it could be given back")),
                // Claimed again elsewhere, or settled: nothing to tell.
                (_, _) => return,
            },
            End::Retry { .. } => {
                self.stats.retried += 1;
                (Some(RunState::Queued), lost("its end could be recorded"))
            }
            End::Finish {
                unrunnable: Some(message),
                ..
            } => {
                self.stats.failed += 1;
                events(WorkerEvent::Unrunnable { run, message });
                return;
            }
            End::Finish { finish, .. } => {
                match finish.state {
                    RunState::Completed => {
                        self.stats.completed += 1;
                        if !finish.outcome.is_success() {
                            self.stats.other_status += 1;
                        }
                    }
                    _ => self.stats.failed += 1,
                }
                (Some(finish.state), lost("its end could be recorded"))
            }
        };
        match state {
            Some(state) if held => events(WorkerEvent::Finished { run, task, state }),
            _ => {
                self.stats.lost += 1;
                let now = what_became_of(self.store, &self.config.id, &lease.id).await;
                events(WorkerEvent::LeaseLost {
                    run,
                    message: format!("{why_lost}; {now}"),
                });
            }
        }
    }

    /// At shutdown, the ends the store never took.
    fn abandon_endings(&mut self, events: &mut dyn FnMut(WorkerEvent)) {
        for ending in self.endings.drain(..) {
            self.stats.lost += 1;
            events(WorkerEvent::Unrecorded {
                run: ending.run,
                message: "the store did not answer before the worker stopped, so this attempt's \
                          end was not recorded; once its lease lapses the run is queued again \
                          (or fails when its attempts are used up)"
                    .into(),
            });
        }
    }
}

/// Writes an attempt's end; `false` if its lease was lost. A release stores
/// the log first; once stored, it is not sent again.
async fn record(
    store: &Store,
    end: &mut End,
    lease: &Lease,
    attempt: u32,
) -> Result<bool, StoreError> {
    match end {
        End::Release { logs, .. } => {
            if !store.record_logs(lease, attempt, logs).await? {
                return Ok(false);
            }
            *logs = LogBatch::default();
            store.release(lease).await
        }
        End::Retry {
            finish,
            delay,
            note,
        } => store.retry(lease, finish, *delay, note).await,
        End::Finish { finish, .. } => store.finish(lease, finish).await,
    }
}

/// Awaits one store call of the loop. Meanwhile, an attempt whose lease
/// lapses while the call, started before, goes unanswered (for [`SUSPECT`]
/// more) is given up: its lease may be taken over, so its task must stop.
/// `down_since` is when the store stopped answering, if it was known to.
/// Returns when the call started, with its output.
async fn during<T>(
    inflight: &mut HashMap<Lease, InFlight>,
    lease: Duration,
    down_since: Option<Instant>,
    call: impl Future<Output = T>,
) -> (Instant, T) {
    let started = Instant::now();
    let since = down_since.unwrap_or(started);
    tokio::pin!(call);
    let mut suspect: Option<Instant> = None;
    loop {
        let lapse = inflight
            .values()
            .filter(|r| r.lost.is_none())
            .map(|r| r.renewed + lease)
            .filter(|&at| at > started)
            .min();
        let wake = suspect.or(lapse);
        tokio::select! {
            biased;
            out = &mut call => return (started, out),
            _ = sleep_until(wake.unwrap_or(started)), if wake.is_some() => {
                if suspect.take().is_some() {
                    let now = Instant::now();
                    give_up(inflight, lease, since, |at| at > started && at <= now);
                } else {
                    suspect = Some(Instant::now() + SUSPECT);
                }
            }
        }
    }
}

/// Gives up the running attempts whose lease lapse (`renewed + lease`)
/// `lapsed` picks: the store has not answered since `since`.
fn give_up(
    inflight: &mut HashMap<Lease, InFlight>,
    lease: Duration,
    since: Instant,
    lapsed: impl Fn(Instant) -> bool,
) {
    for run in inflight.values_mut() {
        if run.lost.is_none() && lapsed(run.renewed + lease) {
            run.lost = Some(given_up_why(since.elapsed(), run.renewed.elapsed(), lease));
            run.cancel.cancel();
        }
    }
}

fn whole_ms(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

/// Why an attempt was given up while the store did not answer.
fn given_up_why(unreachable: Duration, gap: Duration, lease: Duration) -> String {
    format!(
        "the store did not answer for {}, and the lease ({}) lapsed without renewal ({} since \
         the last): this worker gave the attempt up and stopped its task, since another worker \
         may take the run over",
        whole_ms(unreachable),
        whole_ms(lease),
        whole_ms(gap)
    )
}

/// Why an attempt's lease was lost, given how long this worker had gone
/// without renewing it (`gap`) and what the run is `now`.
fn lost_why(gap: Duration, lease: Duration, now: &str) -> String {
    if gap >= lease {
        format!(
            "lease expired while this worker was not running (no renewal for {}); {now}",
            whole_ms(gap)
        )
    } else {
        format!("lease taken over while this worker held it; {now}")
    }
}

/// What the run `id` is now, in a phrase: `attempt 2 is running on worker-b`.
async fn what_became_of(store: &Store, me: &str, id: &str) -> String {
    let r = match store.get_run(id).await {
        Ok(RunLookup::Found(r)) => r,
        Ok(_) => return "it is no longer in the history".to_owned(),
        Err(e) => return format!("what became of it is unknown ({e})"),
    };
    match r.state {
        RunState::Running => {
            let on = match r.worker.as_deref() {
                Some(w) if w == me => "this worker".to_owned(),
                Some(w) => w.to_owned(),
                None => "another worker".to_owned(),
            };
            format!("attempt {} is running on {on}", r.attempt)
        }
        RunState::Queued => format!("it is queued for attempt {}", r.attempt + 1),
        state => format!("attempt {} ended {state}", r.attempt),
    }
}
