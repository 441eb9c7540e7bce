//! The queue, history and schedules, as front ends use them: submitting
//! runs, waiting for one, cancelling, looking runs up, reading (and
//! following) their logs, pruning, and cron schedules.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;

use super::execute::Prepared;
use super::{LookupError, ScheduleError, Service, SubmitError};
use crate::history::{LogEntry, RunFilter, RunPage, RunRecord, RunState};
use crate::queue::CancelResult;
use crate::store::{Availability, MIN_PREFIX, NewRun, Prune, RunLookup, Schedule, StoreError};

/// How a submitted run is queued.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// Who asks.
    pub caller: String,
    /// Claim priority, overriding the task's.
    pub priority: Option<i64>,
    /// When it may first be claimed.
    pub available: Availability,
    /// Run timeout, overriding the task's.
    pub timeout: Option<Duration>,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        Self {
            caller: crate::protocol::DEFAULT_CALLER.to_owned(),
            priority: None,
            available: Availability::Now,
            timeout: None,
        }
    }
}

/// What [`Service::cancel`] did to a run.
#[derive(Debug, Clone)]
pub struct Cancelled {
    /// The run's full id.
    pub run_id: String,
    /// What happened.
    pub result: CancelResult,
}

/// One thing [`LogStream::next`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    /// A stored log line of `attempt`.
    Line {
        /// The attempt.
        attempt: u32,
        /// The line.
        entry: LogEntry,
    },
    /// Lines were cut from the middle of the log here (head and tail kept).
    Cut {
        /// Lines cut.
        lines: u64,
        /// Bytes cut.
        bytes: u64,
    },
    /// A new attempt started; its lines follow.
    Attempt(u32),
}

/// How often a followed log or a waited-for run is looked at again.
const POLL: Duration = Duration::from_millis(200);

impl Service {
    /// Queues one run of `task` per element of `args`, in one transaction.
    /// Every argument object is checked first; if one is invalid, nothing
    /// is queued. Returns the runs as queued, in order.
    pub async fn submit(
        &self,
        task: &Prepared,
        args: &[Value],
        options: &SubmitOptions,
    ) -> Result<Vec<RunRecord>, SubmitError> {
        let store = self.queue_store("the run queue")?;
        for (index, a) in args.iter().enumerate() {
            task.check(a)
                .map_err(|source| SubmitError::InvalidArgs { index, source })?;
        }
        let runs: Vec<NewRun> = args
            .iter()
            .map(|a| {
                let mut run = crate::queue::new_run(task.task(), a, &options.caller);
                if let Some(p) = options.priority {
                    run.priority = p;
                }
                run.timeout = options.timeout;
                run.available = options.available;
                run
            })
            .collect();
        let queued_at = store.enqueue(&runs).await?;
        Ok(runs.iter().map(|r| queued(r, queued_at)).collect())
    }

    /// The run `id` (or a unique prefix of it).
    pub async fn run(&self, id: &str) -> Result<RunRecord, LookupError> {
        let store = self.queue_store("run history")?;
        match store.get_run(id).await? {
            RunLookup::Found(r) => Ok(*r),
            RunLookup::Missing if id.trim().len() < MIN_PREFIX => {
                Err(LookupError::TooShort { id: id.to_owned() })
            }
            RunLookup::Missing => Err(LookupError::NotFound { id: id.to_owned() }),
            RunLookup::Ambiguous { count } => Err(LookupError::Ambiguous {
                id: id.to_owned(),
                count,
            }),
        }
    }

    /// Waits for the run `id` to end, at most `timeout` (for ever when
    /// `None`); returns it as it is then, ended or not.
    pub async fn wait(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<RunRecord, LookupError> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut pause = Duration::from_millis(20);
        loop {
            let run = self.run(id).await?;
            let timed_out = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            if run.state.is_terminal() || timed_out {
                return Ok(run);
            }
            let mut sleep = pause;
            if let Some(d) = deadline {
                sleep = sleep.min(d.saturating_duration_since(tokio::time::Instant::now()));
            }
            tokio::time::sleep(sleep).await;
            pause = (pause * 2).min(POLL);
        }
    }

    /// Cancels a queued run at once, or asks the worker of a running one to
    /// stop it (it does at its next heartbeat).
    pub async fn cancel(&self, id: &str) -> Result<Cancelled, LookupError> {
        let run = self.run(id).await?;
        let result = crate::queue::cancel(&self.store, &run.id, run.state).await?;
        Ok(Cancelled {
            run_id: run.id,
            result,
        })
    }

    /// A page of runs, newest first.
    pub async fn runs(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        self.queue_store("run history")?.list_runs(filter).await
    }

    /// The log of run `id`: its latest attempt's (or `attempt`'s), and with
    /// `follow`, what it prints next, until it ends.
    pub async fn logs(
        &self,
        id: &str,
        attempt: Option<u32>,
        follow: bool,
    ) -> Result<LogStream<'_>, LookupError> {
        let run = self.run(id).await?;
        Ok(LogStream {
            service: self,
            attempt: attempt.unwrap_or(run.attempt.max(1)),
            fixed: attempt.is_some(),
            run,
            follow,
            next_seq: 0,
            marked: false,
            pending: VecDeque::new(),
            done: false,
        })
    }

    /// Deletes finished runs (and their logs) as `prune` says; returns how many.
    pub async fn prune(&self, prune: &Prune) -> Result<u64, StoreError> {
        self.queue_store("run history")?.prune(prune).await
    }

    /// Adds a schedule queueing a run of `task` with `args` at each tick of `cron` (UTC).
    pub async fn add_schedule(
        &self,
        task: &Prepared,
        cron: &str,
        args: &Value,
        caller: &str,
    ) -> Result<Schedule, ScheduleError> {
        let store = self.queue_store("schedules")?;
        task.check(args)?;
        let now = store.now().await?;
        let new = crate::queue::new_schedule(task.task(), cron, args, caller, now)?;
        Ok(store.add_schedule(&new).await?)
    }

    /// Every schedule, oldest first.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.queue_store("schedules")?.list_schedules().await
    }

    /// Removes the schedule `id`.
    pub async fn remove_schedule(&self, id: &str) -> Result<(), ScheduleError> {
        if self.queue_store("schedules")?.remove_schedule(id).await? {
            Ok(())
        } else {
            Err(ScheduleError::NotFound { id: id.to_owned() })
        }
    }
}

/// A run as just queued at `queued_at`.
fn queued(r: &NewRun, queued_at: i64) -> RunRecord {
    RunRecord {
        id: r.id.clone(),
        task: r.task.clone(),
        args: r.args.clone(),
        caller: r.caller.clone(),
        state: RunState::Queued,
        priority: r.priority,
        attempt: 0,
        max_attempts: r.max_attempts,
        worker: None,
        cancel_requested: false,
        queued_at,
        available_at: r.available.resolve(queued_at),
        started_at: None,
        finished_at: None,
        outcome: None,
        exit: None,
        error: None,
        log_cut_lines: 0,
        log_cut_bytes: 0,
        schedule: r.schedule.clone(),
    }
}

/// A run's log, read in order, optionally followed while it runs.
#[derive(Debug)]
pub struct LogStream<'s> {
    service: &'s Service,
    run: RunRecord,
    attempt: u32,
    /// Whether the caller chose the attempt (then a retry's attempt is not followed).
    fixed: bool,
    follow: bool,
    next_seq: u64,
    marked: bool,
    pending: VecDeque<LogEvent>,
    done: bool,
}

impl LogStream<'_> {
    /// The run, as last looked at.
    pub fn run(&self) -> &RunRecord {
        &self.run
    }

    /// The next event, or `None` at the end of the log (with `follow`: once
    /// the run has ended and every line it stored has been read).
    pub async fn next(&mut self) -> Result<Option<LogEvent>, LookupError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            let store = self.service.queue_store("run history")?;
            let lines = store
                .run_logs(&self.run.id, self.attempt, self.next_seq)
                .await?;
            if !lines.is_empty() {
                for entry in lines {
                    if entry.seq > self.next_seq && !self.marked {
                        self.marked = true;
                        // The counts as they are now, not when the stream began.
                        let now = self.service.run(&self.run.id).await?;
                        self.pending.push_back(LogEvent::Cut {
                            lines: now.log_cut_lines,
                            bytes: now.log_cut_bytes,
                        });
                    }
                    self.next_seq = entry.seq + 1;
                    self.pending.push_back(LogEvent::Line {
                        attempt: self.attempt,
                        entry,
                    });
                }
                continue;
            }
            if !self.follow || self.run.state.is_terminal() {
                self.done = true;
                continue;
            }
            tokio::time::sleep(POLL).await;
            self.run = self.service.run(&self.run.id).await?;
            if !self.fixed && self.run.attempt > self.attempt {
                self.attempt = self.run.attempt;
                self.next_seq = 0;
                self.marked = false;
                self.pending.push_back(LogEvent::Attempt(self.attempt));
            }
        }
    }
}
