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

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};
use tokio_util::sync::CancellationToken;

use super::{backoff_delay, fire_schedules, is_retryable, requeue_expired, retry_note};
use crate::history::{DEFAULT_LOG_LIMIT, LogBatch, RunLogs, RunState};
use crate::outcome::RunReport;
use crate::runner::{DiscoveryError, RunRequest, Runner, check_executable};
use crate::secrets::secrets;
use crate::store::{
    ClaimFilter, Claimed, Finish, Lease, LeaseStatus, NewRun, Prune, RunLookup, Store, StoreError,
    WorkerBeat,
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
    /// On shutdown, how long running attempts may still take before they are cancelled and requeued.
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
    /// Attempts whose lease was lost.
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
    /// Why its lease was lost, once it was.
    lost: Option<String>,
    cancel_requested: bool,
    released: bool,
}

/// How long a worker trusts its copy of a task definition before re-reading it.
const TASK_CACHE_TTL: Duration = Duration::from_secs(1);

/// Prepared tasks by name, re-read at most every [`TASK_CACHE_TTL`] and
/// recompiled only when the stored definition changed.
#[derive(Default)]
struct TaskCache(HashMap<TaskName, (Arc<PreparedTask>, Instant)>);

impl TaskCache {
    async fn get(&mut self, store: &Store, name: &TaskName) -> Result<Arc<PreparedTask>, String> {
        if let Some((p, at)) = self.0.get(name)
            && at.elapsed() < TASK_CACHE_TTL
        {
            return Ok(p.clone());
        }
        let task: Task = match store.get(name).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(format!(
                    "task `{name}` is not registered (it was unregistered after this run was queued); \
                     the run was not started"
                ));
            }
            Err(e) => return Err(e.to_string()),
        };
        let prepared =
            match self.0.get(name).filter(|(p, _)| *p.task() == task) {
                Some((p, _)) => p.clone(),
                None => Arc::new(PreparedTask::new(task).map_err(|e| {
                    format!("task `{name}` has a schema that no longer compiles: {e}")
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
                Err(_) => false,
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

/// Runs a worker until `shutdown` is cancelled (then drains gracefully) or,
/// with `until_idle`, until there is nothing left to do. `events` hears of
/// each step; store errors end the worker after its attempts are released.
pub async fn run_worker(
    store: &Store,
    runner: &Runner,
    config: &WorkerConfig,
    shutdown: &CancellationToken,
    events: &mut dyn FnMut(WorkerEvent),
) -> Result<WorkerStats, StoreError> {
    let mut stats = WorkerStats::default();
    let mut cache = TaskCache::default();
    let mut excluded = Excluded::default();
    // With `until_idle`: the last claim found nothing, after a count that
    // showed due runs (which this worker cannot take, then).
    let mut nothing_for_me = false;
    // By lease, not run id: after a pause this worker may hold a newer
    // attempt of a run whose older attempt is still being stopped.
    let mut inflight: HashMap<Lease, InFlight> = HashMap::new();
    let mut running: JoinSet<(Lease, RunReport)> = JoinSet::new();
    // When this worker sent the last renewal of its leases that succeeded: a
    // gap longer than the lease means it was not running (paused, or
    // starved) while they lapsed.
    let mut renewed = Instant::now();
    let mut heartbeat = interval((config.lease / 3).max(Duration::from_millis(50)));
    let mut flush = interval(Duration::from_millis(250));
    let mut maintain = interval(Duration::from_secs(1));
    let mut prune = interval(Duration::from_secs(60));
    for t in [&mut heartbeat, &mut flush, &mut maintain, &mut prune] {
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    let mut grace_until: Option<Instant> = None;
    let mut grace_over = false;
    let mut result = store.beat_worker(&beat(config, 0)).await;

    loop {
        if grace_until.is_none() && (shutdown.is_cancelled() || result.is_err()) {
            grace_until = Some(
                Instant::now()
                    + if result.is_err() {
                        Duration::ZERO
                    } else {
                        config.grace
                    },
            );
        }
        let stopping = grace_until.is_some();
        let mut idle = false;
        let mut found_none = false;
        if !stopping && inflight.len() < config.concurrency {
            let free = config.concurrency - inflight.len();
            excluded.recheck(store, &mut cache, config.recheck).await;
            let filter = ClaimFilter {
                tags: config.tags.clone(),
                exclude: excluded.names(),
            };
            match store.claim(&config.id, free, config.lease, &filter).await {
                Ok(claimed) => {
                    // Fewer than asked: nothing more is due; look again after `poll`.
                    idle = claimed.len() < free;
                    found_none = claimed.is_empty();
                    nothing_for_me &= found_none;
                    for c in claimed {
                        start(
                            store,
                            runner,
                            config,
                            &mut cache,
                            &mut excluded,
                            c,
                            renewed,
                            &mut inflight,
                            &mut running,
                            &mut stats,
                            events,
                        )
                        .await;
                    }
                }
                Err(e) => result = Err(e),
            }
        }
        if stopping && inflight.is_empty() {
            break;
        }
        if idle && inflight.is_empty() && config.until_idle {
            match store.active().await {
                Ok(a) if a.running == 0 && (a.delayed == 0 || !config.wait_delayed) => {
                    if a.due == 0 || (found_none && nothing_for_me) {
                        break;
                    }
                    // Due runs, but none this worker claimed: claim once
                    // more, after this count, before deciding that they are
                    // runs it cannot take (its tags, tasks it cannot run here).
                    nothing_for_me = found_none;
                    if nothing_for_me {
                        continue;
                    }
                }
                Ok(_) => nothing_for_me = false,
                Err(e) => result = Err(e),
            }
        }
        let poll = async {
            if config.listen {
                store.wait_for_work(config.poll).await;
            } else {
                tokio::time::sleep(config.poll).await;
            }
        };
        tokio::select! {
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let Ok((lease, report)) = joined else { continue };
                if let Some(run) = inflight.remove(&lease)
                    && let Err(e) = record(store, &config.id, run, report, &mut stats, events).await
                {
                    result = Err(e);
                }
            }
            _ = heartbeat.tick() => {
                let leases: Vec<Lease> = inflight.values().map(|r| r.lease.clone()).collect();
                // The gap runs from the last renewal's sending to this one's
                // answer: the longest the leases may have gone unrenewed. A
                // pause with a heartbeat in flight shows in it either way:
                // sent before the pause and answered after it (this one), or
                // answered only after it (the last one, which counts from
                // when it was sent).
                let sent = Instant::now();
                match store.heartbeat(&leases, config.lease).await {
                    Ok(statuses) => {
                        let gap = renewed.elapsed();
                        renewed = sent;
                        for (lease, status) in leases.iter().zip(statuses) {
                            let Some(run) = inflight.get_mut(lease) else { continue };
                            match status {
                                LeaseStatus::Held => {}
                                LeaseStatus::CancelRequested => {
                                    run.cancel_requested = true;
                                    run.cancel.cancel();
                                }
                                LeaseStatus::Lost if run.lost.is_none() => {
                                    let now = what_became_of(store, &config.id, &lease.id).await;
                                    run.lost = Some(lost_why(gap, config.lease, &now));
                                    run.cancel.cancel();
                                }
                                LeaseStatus::Lost => {}
                            }
                        }
                    }
                    Err(e) => result = Err(e),
                }
                // The leases first: the registry only says who is alive.
                if let Err(e) = store.beat_worker(&beat(config, inflight.len())).await {
                    result = Err(e);
                }
            }
            _ = flush.tick() => {
                for run in inflight.values().filter(|r| r.lost.is_none()) {
                    if let Err(e) = store.record_logs(&run.lease, run.attempt, &run.logs.take()).await {
                        result = Err(e);
                    }
                }
            }
            _ = maintain.tick(), if !stopping => {
                match requeue_expired(store).await {
                    Ok(0) => {}
                    Ok(count) => events(WorkerEvent::Expired { count }),
                    Err(e) => result = Err(e),
                }
                match fire_schedules(store).await {
                    Ok(fired) => {
                        for NewRun { id, task, .. } in fired {
                            events(WorkerEvent::Fired { run: id, task });
                        }
                    }
                    Err(e) => result = Err(e),
                }
            }
            _ = prune.tick(), if !stopping && config.keep_runs.is_some() => {
                let keep = Prune { older_than: None, keep: config.keep_runs };
                if let Err(e) = store.prune(&keep).await {
                    result = Err(e);
                }
            }
            _ = shutdown.cancelled(), if !stopping => {}
            _ = sleep_until(grace_until.unwrap_or_else(Instant::now)), if stopping && !grace_over => {
                grace_over = true;
                for run in inflight.values_mut() {
                    run.released = true;
                    run.cancel.cancel();
                }
            }
            _ = poll, if idle && !stopping => {}
        }
    }
    // Best effort: a worker that cannot say goodbye shows as gone once its
    // lease has passed, and is forgotten a day later.
    let _ = store.remove_worker(&config.id).await;
    result.map(|()| stats)
}

#[allow(clippy::too_many_arguments)]
async fn start(
    store: &Store,
    runner: &Runner,
    config: &WorkerConfig,
    cache: &mut TaskCache,
    excluded: &mut Excluded,
    c: Claimed,
    renewed: Instant,
    inflight: &mut HashMap<Lease, InFlight>,
    running: &mut JoinSet<(Lease, RunReport)>,
    stats: &mut WorkerStats,
    events: &mut dyn FnMut(WorkerEvent),
) {
    let lease = c.lease();
    // This worker re-claimed a run whose older attempt it still runs: that
    // attempt's lease lapsed while the worker was not running. Stop it.
    for (held, run) in inflight.iter_mut() {
        if held.id == lease.id && run.lost.is_none() {
            let now = format!("attempt {} is running on this worker", c.attempt);
            run.lost = Some(lost_why(renewed.elapsed(), config.lease, &now));
            run.cancel.cancel();
        }
    }
    let mut prepared = cache.get(store, &c.task).await;
    if let (Ok(p), Some(rev)) = (&prepared, &c.task_rev)
        && rev != p.revision()
    {
        // The cached copy may be older than the run: read the task again.
        cache.forget(&c.task);
        prepared = cache.get(store, &c.task).await;
    }
    let prepared = prepared.and_then(|p| match &c.task_rev {
        // Registered again meanwhile as something else: not what was asked for.
        Some(rev) if rev != p.revision() => Err(format!(
            "task `{}` was registered again with a different location or schema after this \
             run was queued; the run was not delivered to it (submit it again to run the new \
             definition)",
            c.task
        )),
        _ => Ok(p),
    });
    let prepared = match prepared {
        Ok(p) => p,
        Err(message) => {
            let finish = Finish {
                state: RunState::Failed,
                outcome: crate::outcome::Outcome::SpawnFailed {
                    message: message.clone(),
                },
                exit: None,
                attempt: c.attempt,
                logs: LogBatch::default(),
            };
            let _ = store.finish(&lease, &finish).await;
            stats.failed += 1;
            events(WorkerEvent::Unrunnable { run: c.id, message });
            return;
        }
    };
    if let Some(why) = not_runnable(&prepared.task().location).await {
        // Another machine may have it: give the attempt back, uncounted,
        // and stop claiming this task's runs here for a while.
        excluded.0.insert(c.task.clone(), Instant::now());
        if matches!(store.release(&lease).await, Ok(true)) {
            stats.left += 1;
            events(WorkerEvent::LeftForOthers {
                message: format!(
                    "task `{}`: {why}; left for another worker (looked at again every {})",
                    c.task,
                    humantime::format_duration(config.recheck)
                ),
                run: c.id,
                task: c.task,
            });
        }
        return;
    }
    let logs = Arc::new(RunLogs::new(
        config.log_limit,
        secrets(&prepared.task().inputs, &c.args),
    ));
    let cancel = CancellationToken::new();
    events(WorkerEvent::Started {
        run: c.id.clone(),
        task: c.task.clone(),
        attempt: c.attempt,
    });
    inflight.insert(
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
        },
    );
    let runner = runner.clone();
    let request = RunRequest {
        args: c.args,
        caller: c.caller,
        timeout: c.timeout,
        run_id: Some(c.id.clone()),
    };
    running.spawn(async move {
        let report = runner.run(&prepared, request, logs.as_ref(), &cancel).await;
        (lease, report)
    });
}

async fn record(
    store: &Store,
    me: &str,
    run: InFlight,
    report: RunReport,
    stats: &mut WorkerStats,
    events: &mut dyn FnMut(WorkerEvent),
) -> Result<(), StoreError> {
    let id = report.run_id.clone();
    if let Some(message) = run.lost {
        stats.lost += 1;
        events(WorkerEvent::LeaseLost { run: id, message });
        return Ok(());
    }
    let logs = run.logs.take();
    if run.released && !run.cancel_requested {
        store.record_logs(&run.lease, run.attempt, &logs).await?;
        if store.release(&run.lease).await? {
            stats.released += 1;
            events(WorkerEvent::Released { run: id });
        } else {
            stats.lost += 1;
            let now = what_became_of(store, me, &id).await;
            events(WorkerEvent::LeaseLost {
                run: id,
                message: format!("lease lost before it could be given back; {now}"),
            });
        }
        return Ok(());
    }
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
    let (held, state) = if retry {
        let delay = backoff_delay(run.backoff, run.attempt);
        let note = retry_note(&finish.outcome, run.attempt, run.max_attempts, delay);
        stats.retried += 1;
        (
            store.retry(&run.lease, &finish, delay, &note).await?,
            RunState::Queued,
        )
    } else {
        match finish.state {
            RunState::Completed => {
                stats.completed += 1;
                if !finish.outcome.is_success() {
                    stats.other_status += 1;
                }
            }
            _ => stats.failed += 1,
        }
        (store.finish(&run.lease, &finish).await?, finish.state)
    };
    if held {
        events(WorkerEvent::Finished {
            run: id,
            task: run.task,
            state,
        });
    } else {
        stats.lost += 1;
        let now = what_became_of(store, me, &id).await;
        events(WorkerEvent::LeaseLost {
            run: id,
            message: format!("lease lost before its end could be recorded; {now}"),
        });
    }
    Ok(())
}

/// Why an attempt's lease was lost, given how long this worker had gone
/// without renewing it (`gap`) and what the run is `now`.
fn lost_why(gap: Duration, lease: Duration, now: &str) -> String {
    if gap >= lease {
        let gap = Duration::from_millis(gap.as_millis() as u64);
        format!(
            "lease expired while this worker was not running (no renewal for {}); {now}",
            humantime::format_duration(gap)
        )
    } else {
        format!("lease taken over while this worker held it; {now}")
    }
}

/// What the run `id` is now, in a phrase: `attempt 2 is running on worker-b`.
async fn what_became_of(store: &Store, me: &str, id: &str) -> String {
    let Ok(RunLookup::Found(r)) = store.get_run(id).await else {
        return "it is no longer in the history".to_owned();
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
