//! Running many tasks at once with bounded concurrency.
//!
//! A [`Pool`] never has more than its `concurrency` runs alive at once.
//! Results come back in completion order, tagged with the caller's job id, so
//! a caller can stream input and reorder output itself. One cancellation
//! token stops everything (each run's process group gets SIGTERM, grace, SIGKILL).
//!
//! Runs are supervised on the pool's own *slot threads*, not on the caller's
//! runtime: with one event loop for all runs, every spawn (the parent waits
//! in `posix_spawn` until the child has exec'd) and every reap held up the
//! other runs' completions. There are `min(concurrency, max(2, CPUs))` slot
//! threads, so `--parallel 500` does not mean 500 threads; each runs its
//! share of the concurrency with [`Runner::run`] on a current-thread tokio
//! runtime of its own, so a run's process control is the runner's, whoever
//! calls it.

use std::any::Any;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::log::LogSink;
use crate::outcome::RunReport;
use crate::runner::{RunRequest, Runner};
use crate::task::PreparedTask;

/// One unit of work for a [`Pool`]. Its `Debug` hides the arguments, as
/// [`RunRequest`]'s does.
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
/// use task_executor::log::DiscardLogs;
/// use task_executor::runner::{RunRequest, Runner};
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
    concurrency: usize,
    cancel: CancellationToken,
    /// Fired when the pool is dropped: each running job's process group is
    /// SIGKILLed at once and its task reaped; queued jobs never start.
    abort: CancellationToken,
    jobs: Option<mpsc::UnboundedSender<Job>>,
    done: mpsc::UnboundedReceiver<SlotResult>,
    in_flight: usize,
    slots: Vec<JoinHandle<()>>,
}

/// What a slot sends back: the finished job, or the panic of a run (which a
/// run never does by design, and which [`Pool::next`] resumes rather than hides).
type SlotResult = Result<Finished, Box<dyn Any + Send>>;

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("concurrency", &self.concurrency)
            .field("in_flight", &self.in_flight)
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool running at most `concurrency` (at least 1) jobs at once, sending
    /// every log line to `logs`. Starts the pool's slot threads.
    ///
    /// # Panics
    /// If the operating system refuses to start a thread or an I/O driver.
    pub fn new(runner: Runner, concurrency: usize, logs: Arc<dyn LogSink>) -> Self {
        let concurrency = concurrency.max(1);
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let threads = concurrency.min(cpus.max(2));
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let abort = CancellationToken::new();
        let slots = (0..threads)
            .map(|i| {
                // Shares `concurrency` out exactly: the capacities add up to it.
                let capacity = concurrency / threads + usize::from(i < concurrency % threads);
                let slot = Slot {
                    runner: runner.clone(),
                    logs: logs.clone(),
                    jobs: jobs_rx.clone(),
                    done: done_tx.clone(),
                    cancel: cancel.clone(),
                    abort: abort.clone(),
                    capacity,
                };
                std::thread::Builder::new()
                    .name(format!("task-slot-{i}"))
                    .spawn(move || slot.serve())
                    .expect("cannot start a pool thread")
            })
            .collect();
        Self {
            concurrency,
            cancel,
            abort,
            jobs: Some(jobs_tx),
            done: done_rx,
            in_flight: 0,
            slots,
        }
    }

    /// The most jobs that run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Jobs submitted and not yet returned by [`Pool::next`] (running or waiting for a slot).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues `job`; it starts as soon as a slot is free.
    pub fn submit(&mut self, job: Job) {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        assert!(sent, "the pool's slot threads have stopped");
        self.in_flight += 1;
    }

    /// The next job to finish, or `None` when nothing is in flight.
    pub async fn next(&mut self) -> Option<Finished> {
        if self.in_flight == 0 {
            return None;
        }
        let result = self
            .done
            .recv()
            .await
            .expect("a slot answers every job it takes");
        Some(self.returned(result))
    }

    /// A job that has already finished, without waiting; `None` if none has.
    pub fn try_next(&mut self) -> Option<Finished> {
        let result = self.done.try_recv().ok()?;
        Some(self.returned(result))
    }

    /// Accounts for a slot's answer; resumes a run's panic rather than hide it.
    fn returned(&mut self, result: SlotResult) -> Finished {
        self.in_flight -= 1;
        match result {
            Ok(done) => done,
            Err(panic) => std::panic::resume_unwind(panic),
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

impl Drop for Pool {
    /// Stops the slots: the process groups of runs still going are
    /// SIGKILLed and their tasks reaped, queued jobs are dropped, and the
    /// threads are joined, so nothing of the pool outlives it.
    fn drop(&mut self) {
        self.abort.cancel();
        self.jobs = None;
        for slot in self.slots.drain(..) {
            let _ = slot.join();
        }
    }
}

/// One slot thread, running up to `capacity` jobs at once.
struct Slot {
    runner: Runner,
    logs: Arc<dyn LogSink>,
    jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    done: mpsc::UnboundedSender<SlotResult>,
    cancel: CancellationToken,
    abort: CancellationToken,
    capacity: usize,
}

impl Slot {
    fn serve(self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot start a pool thread's runtime");
        runtime.block_on(self.run_jobs());
    }

    /// Runs up to `capacity` jobs at once on a current-thread runtime.
    async fn run_jobs(self) {
        let mut running: JoinSet<Finished> = JoinSet::new();
        let mut open = true;
        loop {
            if !open && running.is_empty() {
                return;
            }
            let take = async {
                let mut jobs = self.jobs.lock().await;
                jobs.recv().await
            };
            tokio::select! {
                biased;
                // The running jobs see `abort` themselves and end at once.
                () = self.abort.cancelled(), if open => open = false,
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    let result = joined.map_err(|e| {
                        e.try_into_panic().unwrap_or_else(|_| {
                            Box::new("a pool run was aborted") as Box<dyn Any + Send>
                        })
                    });
                    let _ = self.done.send(result);
                }
                job = take, if open && running.len() < self.capacity => match job {
                    Some(job) => {
                        let runner = self.runner.clone();
                        let logs = self.logs.clone();
                        let (cancel, abort) = (self.cancel.clone(), self.abort.clone());
                        // The run's future (kilobytes) is boxed: it is then
                        // written once, not copied at each move into the task.
                        running.spawn(async move {
                            let run = runner.run_or_kill(
                                &job.task,
                                job.request,
                                logs.as_ref(),
                                &cancel,
                                &abort,
                            );
                            let report = Box::pin(run).await;
                            Finished { id: job.id, report }
                        });
                    }
                    None => open = false,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::task::{Task, TaskName};

    #[test]
    fn a_jobs_debug_shows_no_argument() {
        let task = Task {
            name: TaskName::new("login").unwrap(),
            location: "/bin/true".into(),
            description: None,
            inputs: json!({"type": "object"}),
            outputs: None,
            timeout: None,
            policy: Default::default(),
            formats: Default::default(),
        };
        let job = Job {
            id: 3,
            task: Arc::new(PreparedTask::new(task).unwrap()),
            request: RunRequest::new(json!({"token": "tok-5ecret"})),
        };
        for shown in [format!("{job:?}"), format!("{job:#?}")] {
            assert!(!shown.contains("tok-5ecret"), "{shown}");
            assert!(shown.contains("bytes hidden"), "{shown}");
            assert!(shown.contains("login"), "{shown}");
        }
    }
}
