//! A worker: claims queued runs and executes them, renewing their leases.
//!
//! One loop owns every store call; each claimed attempt runs as a tokio task
//! with its own cancellation token and bounded log. The loop:
//! claims while slots are free → renews leases every `lease / 3` (a lost
//! lease or a cancel request cancels that attempt, which kills its process
//! group) → flushes logs every 250 ms → requeues expired leases and fires
//! due schedules every second → records each finished attempt, guarded by
//! its fencing token. On shutdown it stops claiming, lets running attempts
//! finish for `grace`, then cancels them and gives them back to the queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};
use tokio_util::sync::CancellationToken;

use super::{backoff_delay, fire_schedules, is_retryable, requeue_expired, retry_note};
use crate::history::{DEFAULT_LOG_LIMIT, LogBatch, RunLogs, RunState};
use crate::outcome::RunReport;
use crate::runner::{RunRequest, Runner};
use crate::secrets::secrets;
use crate::store::{Claimed, Finish, Lease, LeaseStatus, NewRun, Prune, Store, StoreError};
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
            grace: Duration::from_secs(30),
            log_limit: DEFAULT_LOG_LIMIT,
            until_idle: false,
            wait_delayed: false,
            keep_runs: None,
        }
    }
}

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
    lost: bool,
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
            Ok(None) => return Err(format!("task `{name}` is not registered")),
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
    let mut inflight: HashMap<String, InFlight> = HashMap::new();
    let mut running: JoinSet<(String, RunReport)> = JoinSet::new();
    let mut heartbeat = interval((config.lease / 3).max(Duration::from_millis(50)));
    let mut flush = interval(Duration::from_millis(250));
    let mut maintain = interval(Duration::from_secs(1));
    let mut prune = interval(Duration::from_secs(60));
    for t in [&mut heartbeat, &mut flush, &mut maintain, &mut prune] {
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    let mut grace_until: Option<Instant> = None;
    let mut grace_over = false;
    let mut result = Ok(());

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
        if !stopping && inflight.len() < config.concurrency {
            let free = config.concurrency - inflight.len();
            match store.claim(&config.id, free, config.lease).await {
                Ok(claimed) => {
                    // Fewer than asked: nothing more is due; look again after `poll`.
                    idle = claimed.len() < free;
                    for c in claimed {
                        start(
                            store,
                            runner,
                            config,
                            &mut cache,
                            c,
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
                Ok(a)
                    if a.due == 0 && a.running == 0 && (a.delayed == 0 || !config.wait_delayed) =>
                {
                    break;
                }
                Ok(_) => {}
                Err(e) => result = Err(e),
            }
        }
        let poll = tokio::time::sleep(config.poll);
        tokio::select! {
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let Ok((id, report)) = joined else { continue };
                if let Some(run) = inflight.remove(&id) {
                    if let Err(e) = record(store, run, report, &mut stats, events).await {
                        result = Err(e);
                    }
                }
            }
            _ = heartbeat.tick() => {
                let leases: Vec<Lease> = inflight.values().map(|r| r.lease.clone()).collect();
                match store.heartbeat(&leases, config.lease).await {
                    Ok(statuses) => {
                        for (lease, status) in leases.iter().zip(statuses) {
                            let Some(run) = inflight.get_mut(&lease.id) else { continue };
                            match status {
                                LeaseStatus::Held => {}
                                LeaseStatus::CancelRequested => {
                                    run.cancel_requested = true;
                                    run.cancel.cancel();
                                }
                                LeaseStatus::Lost => {
                                    run.lost = true;
                                    run.cancel.cancel();
                                }
                            }
                        }
                    }
                    Err(e) => result = Err(e),
                }
            }
            _ = flush.tick() => {
                for run in inflight.values().filter(|r| !r.lost) {
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
    result.map(|()| stats)
}

#[allow(clippy::too_many_arguments)]
async fn start(
    store: &Store,
    runner: &Runner,
    config: &WorkerConfig,
    cache: &mut TaskCache,
    c: Claimed,
    inflight: &mut HashMap<String, InFlight>,
    running: &mut JoinSet<(String, RunReport)>,
    stats: &mut WorkerStats,
    events: &mut dyn FnMut(WorkerEvent),
) {
    let lease = c.lease();
    let prepared = match cache.get(store, &c.task).await {
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
        c.id.clone(),
        InFlight {
            lease,
            task: c.task.clone(),
            attempt: c.attempt,
            max_attempts: c.max_attempts,
            backoff: c.backoff,
            retry_on_status: c.retry_on_status,
            cancel: cancel.clone(),
            logs: logs.clone(),
            lost: false,
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
    let id = c.id;
    running.spawn(async move {
        let report = runner.run(&prepared, request, logs.as_ref(), &cancel).await;
        (id, report)
    });
}

async fn record(
    store: &Store,
    run: InFlight,
    report: RunReport,
    stats: &mut WorkerStats,
    events: &mut dyn FnMut(WorkerEvent),
) -> Result<(), StoreError> {
    let id = report.run_id.clone();
    if run.lost {
        stats.lost += 1;
        events(WorkerEvent::LeaseLost { run: id });
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
            events(WorkerEvent::LeaseLost { run: id });
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
        events(WorkerEvent::LeaseLost { run: id });
    }
    Ok(())
}
