//! Running many tasks at once with bounded concurrency.
//!
//! A [`Pool`] never has more than its `concurrency` runs alive at once: each
//! submitted job waits for a semaphore permit before its process is spawned.
//! Results come back in completion order, tagged with the caller's job id, so
//! a caller can stream input and reorder output itself. One cancellation
//! token stops everything (each run's process group gets SIGTERM, grace, SIGKILL).

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::runner::{LogSink, PreparedTask, RunReport, RunRequest, Runner};

/// One unit of work for a [`Pool`].
#[derive(Debug, Clone)]
pub struct Job {
    /// Caller's identifier, returned with the report (e.g. an input line number).
    pub id: u64,
    /// The task to run.
    pub task: Arc<PreparedTask>,
    /// Its arguments and settings.
    pub request: RunRequest,
}

/// A finished job.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The [`Job::id`] it was submitted with.
    pub id: u64,
    /// What happened.
    pub report: RunReport,
}

/// Runs jobs with at most `concurrency` processes alive at once.
///
/// ```no_run
/// # async fn demo(task: std::sync::Arc<task_executor::PreparedTask>) {
/// use task_executor::pool::{Job, Pool};
/// use task_executor::runner::{DiscardLogs, RunRequest, Runner};
///
/// let mut pool = Pool::new(Runner::default(), 2, std::sync::Arc::new(DiscardLogs));
/// for id in 0..4 {
///     let request = RunRequest::new(serde_json::json!({"n": id}));
///     pool.submit(Job { id, task: task.clone(), request });
/// }
/// while let Some(done) = pool.next().await {
///     println!("job {} -> {}", done.id, done.report.outcome.kind());
/// }
/// # }
/// ```
pub struct Pool {
    runner: Runner,
    permits: Arc<Semaphore>,
    concurrency: usize,
    cancel: CancellationToken,
    logs: Arc<dyn LogSink>,
    running: JoinSet<Finished>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("concurrency", &self.concurrency)
            .field("in_flight", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool running at most `concurrency` (at least 1) jobs at once, sending
    /// every log line to `logs`.
    pub fn new(runner: Runner, concurrency: usize, logs: Arc<dyn LogSink>) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            runner,
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            cancel: CancellationToken::new(),
            logs,
            running: JoinSet::new(),
        }
    }

    /// The most jobs that run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Jobs submitted and not yet returned by [`Pool::next`] (running or waiting for a slot).
    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// Queues `job`; it starts as soon as a slot is free. Must be called within a tokio runtime.
    pub fn submit(&mut self, job: Job) {
        let runner = self.runner.clone();
        let permits = self.permits.clone();
        let cancel = self.cancel.child_token();
        let logs = self.logs.clone();
        self.running.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the pool never closes its semaphore");
            let report = runner
                .run(&job.task, job.request, logs.as_ref(), &cancel)
                .await;
            Finished { id: job.id, report }
        });
    }

    /// The next job to finish, or `None` when nothing is in flight.
    pub async fn next(&mut self) -> Option<Finished> {
        loop {
            match self.running.join_next().await? {
                Ok(done) => return Some(done),
                // A run never panics by design; if one did, surface it rather than lose it silently.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => continue,
            }
        }
    }

    /// Cancels every queued and running job: running ones are stopped (SIGTERM,
    /// grace, SIGKILL) and report [`crate::Outcome::Cancelled`]; queued ones
    /// start, see the cancellation at once and report it too.
    pub fn cancel_all(&self) {
        self.cancel.cancel();
    }

    /// A token that cancels the whole pool when cancelled (e.g. from a Ctrl-C handler).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs every job from `jobs`, keeping at most twice the concurrency
    /// submitted at once so that input is read lazily, and calls `on_finished`
    /// for each as it completes.
    pub async fn run_all(
        &mut self,
        jobs: impl IntoIterator<Item = Job>,
        mut on_finished: impl FnMut(Finished),
    ) {
        let window = self.concurrency * 2;
        for job in jobs {
            while self.in_flight() >= window {
                if let Some(done) = self.next().await {
                    on_finished(done);
                }
            }
            self.submit(job);
        }
        while let Some(done) = self.next().await {
            on_finished(done);
        }
    }
}
