//! The queue, history and schedules, as front ends use them: submitting
//! runs, waiting for one, cancelling, looking runs up, reading (and
//! following) their logs, pruning, and cron schedules.
//!
//! Waiting for a run and following its log outlast many store calls: a
//! transient store error ([`StoreError::is_transient`]) does not end them.
//! They back off as a worker does ([`Reachability`]) and tell their caller
//! once when the store stops answering and once when it is back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;

use super::execute::Prepared;
use super::{LookupError, PrepareError, ScheduleError, Service, SubmitError};
use crate::history::{LogEntry, RunFilter, RunPage, RunRecord, RunState};
use crate::queue::CancelResult;
use crate::store::{
    Active, Availability, MIN_PREFIX, NewAudit, NewRun, Prune, Reachability, RunLookup, Schedule,
    StoreError, StoreNotice,
};
use crate::task::TaskName;

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
    /// An entry for the audit log, recorded in the same transaction as the
    /// runs (a front end's record of who asked).
    pub audit: Option<NewAudit>,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        Self {
            caller: crate::protocol::DEFAULT_CALLER.to_owned(),
            priority: None,
            available: Availability::Now,
            timeout: None,
            audit: None,
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

/// Where a log is read from: `attempt`'s line `next_seq` onwards (a reader
/// that saw line `seq` resumes at `seq + 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// The attempt, from 1.
    pub attempt: u32,
    /// The first line to read.
    pub next_seq: u64,
}

/// Why a run could not be retried. Nothing was queued.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// The run could not be found.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The run has not ended: it is queued or running.
    #[error(
        "run `{id}` is still {state}: only an ended run can be retried; cancel it first, or wait for it"
    )]
    NotEnded {
        /// The run.
        id: String,
        /// Its state.
        state: RunState,
    },
    /// The run's arguments held secrets, which history does not keep once a run ends.
    #[error(
        "run `{id}` cannot be retried: its arguments held secret fields of task `{task}`, \
         and a run's secrets are dropped when it ends; submit a new run with the arguments"
    )]
    ArgsUnavailable {
        /// The run.
        id: String,
        /// Its task.
        task: TaskName,
    },
    /// The task is gone, or the arguments no longer fit its schema.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The new run could not be queued.
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

impl RetryError {
    /// The stable kind front ends show.
    pub fn kind(&self) -> &'static str {
        match self {
            RetryError::Lookup(e) => e.kind(),
            RetryError::NotEnded { .. } => "run_active",
            RetryError::ArgsUnavailable { .. } => "args_unavailable",
            RetryError::Prepare(e) => e.kind(),
            RetryError::Submit(e) => e.kind(),
        }
    }

    /// The schema violations, if that is what is wrong.
    pub fn violations(&self) -> &[crate::schema::Violation] {
        match self {
            RetryError::Prepare(e) => e.violations(),
            RetryError::Submit(SubmitError::InvalidArgs { source, .. }) => source.violations(),
            _ => &[],
        }
    }
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
    /// While following: the store stopped answering (following goes on once
    /// it answers again), or answers again.
    Store(StoreNotice),
}

/// How often a followed log or a waited-for run is looked at again, at
/// most, when nothing is heard of it ([`heard`]).
const POLL: Duration = Duration::from_millis(200);

/// Waits until `changes` says run `id` (or an id it is a prefix of) was
/// written, or it lagged, or `within` passes: a run this process's own
/// workers change is looked at again at once, any other at the next poll.
async fn heard(changes: &mut Option<broadcast::Receiver<Arc<str>>>, id: &str, within: Duration) {
    let Some(rx) = changes else {
        return tokio::time::sleep(within).await;
    };
    let _ = tokio::time::timeout(within, async {
        loop {
            match rx.recv().await {
                Ok(changed) if changed.starts_with(id) => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                // The store is gone: nothing more will be heard.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    })
    .await;
}

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
        let queued_at = match &options.audit {
            Some(audit) => store.enqueue_audited(&runs, audit).await?,
            None => store.enqueue(&runs).await?,
        };
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
    /// `None`); returns it as it is then, ended or not. A store that stops
    /// answering is waited for too, `notices` hearing when it stops and when
    /// it is back; at the deadline, its error is returned.
    pub async fn wait(
        &self,
        id: &str,
        timeout: Option<Duration>,
        notices: &mut (dyn FnMut(StoreNotice) + Send),
    ) -> Result<RunRecord, LookupError> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        // Before the first look, so that no change after it is missed.
        let mut changes = self.store.run_changes();
        let mut id = id.to_owned();
        let mut pause = Duration::from_millis(20);
        let mut reach = Reachability::default();
        loop {
            let started = tokio::time::Instant::now();
            let looked = self.run(&id).await;
            let timed_out = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            match looked {
                Ok(run) => {
                    reach.check(started, Ok(()), notices)?;
                    if run.state.is_terminal() || timed_out {
                        return Ok(run);
                    }
                    id = run.id;
                }
                Err(LookupError::Store(e)) if e.is_transient() && !timed_out => {
                    reach.check::<()>(started, Err(e), notices)?;
                }
                Err(e) => return Err(e),
            }
            let mut sleep = match reach.retry_at() {
                Some(at) => at.saturating_duration_since(tokio::time::Instant::now()),
                None => pause,
            };
            if let Some(d) = deadline {
                sleep = sleep.min(d.saturating_duration_since(tokio::time::Instant::now()));
            }
            if reach.is_down() {
                tokio::time::sleep(sleep).await;
            } else {
                heard(&mut changes, &id, sleep).await;
            }
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

    /// Queues a new run of the ended run `id`'s task with the same
    /// arguments, checked against the task as it is now. History keeps a
    /// run's arguments masked and drops the secret ones when it ends, so a
    /// run whose arguments held secret fields cannot be retried
    /// ([`RetryError::ArgsUnavailable`]): masked values are never sent to a
    /// task as if they were the real ones.
    ///
    /// `audit`, if given, is recorded in the same transaction as the new run.
    pub async fn retry(
        &self,
        id: &str,
        caller: &str,
        audit: Option<NewAudit>,
    ) -> Result<RunRecord, RetryError> {
        let run = self.run(id).await?;
        if !run.state.is_terminal() {
            return Err(RetryError::NotEnded {
                id: run.id,
                state: run.state,
            });
        }
        let task = self.prepare_to_queue(&run.task).await?;
        if !crate::secrets::secrets(&task.task().inputs, &run.args).is_empty() {
            return Err(RetryError::ArgsUnavailable {
                id: run.id,
                task: run.task,
            });
        }
        task.check(&run.args)?;
        let options = SubmitOptions {
            caller: caller.to_owned(),
            audit,
            ..SubmitOptions::default()
        };
        let mut queued = self
            .submit(&task, std::slice::from_ref(&run.args), &options)
            .await?;
        Ok(queued.remove(0))
    }

    /// How many runs wait and run, store-wide.
    pub async fn active(&self) -> Result<Active, StoreError> {
        self.queue_store("the run queue")?.active().await
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
            reach: Reachability::default(),
            changes: if follow {
                self.store.run_changes()
            } else {
                None
            },
        })
    }

    /// The log of run `id` from `from` on (a reader resuming where it
    /// stopped), and with `follow`, what it prints next, until it ends;
    /// later attempts follow as with [`Service::logs`].
    pub async fn logs_from(
        &self,
        id: &str,
        from: LogPosition,
        follow: bool,
    ) -> Result<LogStream<'_>, LookupError> {
        let mut stream = self.logs(id, Some(from.attempt.max(1)), follow).await?;
        stream.fixed = false;
        stream.next_seq = from.next_seq;
        Ok(stream)
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
    /// While following: whether the store answers.
    reach: Reachability,
    /// While following: runs this process changes ([`heard`]).
    changes: Option<broadcast::Receiver<Arc<str>>>,
}

impl LogStream<'_> {
    /// The run, as last looked at.
    pub fn run(&self) -> &RunRecord {
        &self.run
    }

    /// The next event, or `None` at the end of the log (with `follow`: once
    /// the run has ended and every line it stored has been read). While
    /// following, a transient store error is not an error: the stream says
    /// so once ([`LogEvent::Store`]), tries again with backoff, says when
    /// the store is back and goes on from the line it had reached.
    pub async fn next(&mut self) -> Result<Option<LogEvent>, LookupError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            if let Some(at) = self.reach.retry_at() {
                tokio::time::sleep_until(at).await;
            }
            let started = tokio::time::Instant::now();
            let step = self.step().await;
            let mut notices = Vec::new();
            match step {
                Ok(()) => {
                    self.reach
                        .check(started, Ok(()), &mut |n| notices.push(n))?;
                }
                Err(LookupError::Store(e)) if self.follow && e.is_transient() => {
                    self.reach
                        .check::<()>(started, Err(e), &mut |n| notices.push(n))?;
                }
                Err(e) => return Err(e),
            }
            // Said before what the call that ended the outage brought.
            for n in notices.into_iter().rev() {
                self.pending.push_front(LogEvent::Store(n));
            }
        }
    }

    /// One look at the store: the next lines, or (following, when there are
    /// none) the run again after a pause. Changes nothing unless every call
    /// it makes succeeds, so a failed step can simply be made again.
    async fn step(&mut self) -> Result<(), LookupError> {
        let store = self.service.queue_store("run history")?;
        let lines = store
            .run_logs(&self.run.id, self.attempt, self.next_seq)
            .await?;
        if !lines.is_empty() {
            // A gap before a line not yet marked: lines were cut there.
            let mut next = self.next_seq;
            let gap = !self.marked
                && lines.iter().any(|e| {
                    let skipped = e.seq > next;
                    next = e.seq + 1;
                    skipped
                });
            // The counts as they are now, not when the stream began.
            let now = if gap {
                Some(self.service.run(&self.run.id).await?)
            } else {
                None
            };
            for entry in lines {
                if entry.seq > self.next_seq
                    && !self.marked
                    && let Some(now) = &now
                {
                    self.marked = true;
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
            return Ok(());
        }
        if !self.follow || self.run.state.is_terminal() {
            self.done = true;
            return Ok(());
        }
        heard(&mut self.changes, &self.run.id, POLL).await;
        self.run = self.service.run(&self.run.id).await?;
        if !self.fixed && self.run.attempt > self.attempt {
            self.attempt = self.run.attempt;
            self.next_seq = 0;
            self.marked = false;
            self.pending.push_back(LogEvent::Attempt(self.attempt));
        }
        Ok(())
    }
}
