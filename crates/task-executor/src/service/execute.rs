//! Running tasks in this process: preparing a task, executing one run
//! (recorded in history as it goes, where the store keeps history), and
//! batches of runs on the [`Pool`] (unrecorded).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::{Instant, interval_at};
use tokio_util::sync::CancellationToken;

use super::{ExecuteError, PrepareError, Service};
use crate::history::{RunLogs, RunRecord, RunState, to_ms};
use crate::log::{LogLine, LogSink, Tee};
use crate::outcome::{RunReport, new_run_id};
use crate::pool::{Job, Pool};
use crate::runner::{RunRequest, check_executable};
use crate::secrets::{HideSecrets, hide_secrets};
use crate::store::{Backoff, Finish, LeaseStatus, NewRun};
use crate::task::{PreparedTask, Task, TaskName};

/// How often a run executed here stores the log lines printed so far.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// A task ready to run: registered, its schemas compiled, and (from
/// [`Service::prepare`]) its executable present on this machine.
#[derive(Debug, Clone)]
pub struct Prepared {
    task: Arc<PreparedTask>,
    /// From [`Service::prepare_to_queue`]: why its executable cannot run on
    /// this machine, if it cannot.
    not_here: Option<String>,
}

impl Prepared {
    /// The task's definition.
    pub fn task(&self) -> &Task {
        self.task.task()
    }

    /// Why the task's executable cannot run on this machine, when it was
    /// prepared for the queue ([`Service::prepare_to_queue`]) and cannot:
    /// its runs wait for a worker on a machine where it can.
    pub fn not_here(&self) -> Option<&str> {
        self.not_here.as_deref()
    }

    /// Checks arguments against the task's `inputs`, naming every violation.
    pub fn check(&self, args: &Value) -> Result<(), PrepareError> {
        self.task
            .validate_args(args)
            .map_err(|violations| PrepareError::InvalidArgs {
                name: self.task().name.clone(),
                violations,
            })
    }
}

/// One run's arguments and settings.
#[derive(Clone)]
pub struct Call {
    /// The arguments (the envelope's `data`).
    pub args: Value,
    /// Who asks (the envelope's `meta.caller`).
    pub caller: String,
    /// Overrides the task's run timeout.
    pub timeout: Option<Duration>,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("args", &crate::store::contract::Hidden)
            .field("caller", &self.caller)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A run executed in this process.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The run as history shows it (arguments masked).
    pub record: RunRecord,
    /// The runner's account of it.
    pub report: RunReport,
    /// History writes that failed once the task was running: the run's
    /// outcome stands, but history may not show all of it.
    pub warnings: Vec<String>,
}

/// Compiled tasks a service keeps, at most.
const COMPILED_TASKS: usize = 1024;

impl Service {
    /// Looks `name` up, checks its executable and compiles its schemas.
    pub async fn prepare(&self, name: &TaskName) -> Result<Prepared, PrepareError> {
        let task = self
            .store
            .get(name)
            .await?
            .ok_or_else(|| PrepareError::NotRegistered { name: name.clone() })?;
        check_executable(&task.location).map_err(|e| PrepareError::location_gone(name, e))?;
        Ok(Prepared {
            task: self.compiled(name, task)?,
            not_here: None,
        })
    }

    /// Looks `name` up and compiles its schemas, for runs that a worker
    /// executes ([`Service::submit`], [`Service::add_schedule`]): workers may
    /// run on other machines, so its executable need not be on this one
    /// ([`Prepared::not_here`] says when it is not).
    pub async fn prepare_to_queue(&self, name: &TaskName) -> Result<Prepared, PrepareError> {
        let task = self
            .store
            .get(name)
            .await?
            .ok_or_else(|| PrepareError::NotRegistered { name: name.clone() })?;
        let not_here = match check_executable(&task.location) {
            Ok(_) => None,
            Err(e) => match PrepareError::location_gone(name, e) {
                PrepareError::LocationGone { why, .. } => Some(why),
                other => Some(other.to_string()),
            },
        };
        Ok(Prepared {
            task: self.compiled(name, task)?,
            not_here,
        })
    }

    /// `task` with its schemas compiled: once per definition, since a
    /// server prepares the same task for every request. A definition that
    /// changed (`register --force`) is compiled anew.
    fn compiled(&self, name: &TaskName, task: Task) -> Result<Arc<PreparedTask>, PrepareError> {
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(name).filter(|p| *p.task() == task) {
            return Ok(p.clone());
        }
        let prepared =
            Arc::new(
                PreparedTask::new(task).map_err(|source| PrepareError::SchemaBroken {
                    name: name.clone(),
                    source,
                })?,
            );
        // Bounded: names of tasks long unregistered do not pile up.
        if cache.len() >= COMPILED_TASKS {
            cache.clear();
        }
        cache.insert(name.clone(), prepared.clone());
        Ok(prepared)
    }

    /// Runs `task` once here with `call`, sending its log lines (secret
    /// values hidden) to `logs`; `cancel` stops it. Where the store keeps
    /// history the run is recorded as it goes: `running` under a lease that
    /// is renewed while it runs, its log flushed every 250 ms, a `runs
    /// cancel` honoured, its end recorded.
    pub async fn execute(
        &self,
        task: &Prepared,
        call: Call,
        logs: &dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Executed, ExecuteError> {
        if let Some(why) = task.not_here() {
            return Err(PrepareError::LocationGone {
                name: task.task().name.clone(),
                why: why.to_owned(),
            }
            .into());
        }
        task.check(&call.args)?;
        let def = task.task();
        let mut new = crate::queue::new_run(def, &call.args, &call.caller);
        new.max_attempts = 1;
        new.timeout = call.timeout;
        // Run here, not by a worker: history keeps only the masked arguments.
        new.secret_args = None;
        let found = task.task.secrets(&call.args);
        let hidden = HideSecrets {
            inner: logs,
            secrets: found.clone(),
        };
        let request = RunRequest {
            args: call.args,
            caller: call.caller,
            timeout: call.timeout,
            run_id: Some(new.id.clone()),
            attempt: None,
        };
        if !self.store.has_history() {
            let report = self.runner.run(&task.task, request, &hidden, cancel).await;
            let started = to_ms(report.started_at);
            let record = record_of(new.into(), &report, None, started, (0, 0));
            return Ok(Executed {
                record,
                report,
                warnings: Vec::new(),
            });
        }
        self.execute_recorded(task, new, request, found, &hidden, cancel)
            .await
    }

    async fn execute_recorded(
        &self,
        task: &Prepared,
        new: NewRun,
        request: RunRequest,
        secrets: Vec<String>,
        logs: &dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Executed, ExecuteError> {
        let lease = self.config.inline_lease;
        let worker = &self.config.inline_worker;
        let started = self
            .store
            .start_inline(&new, worker, lease)
            .await
            .map_err(ExecuteError::Store)?;
        let held = started.lease;
        // When the lease was last renewed, as the call returned: it has
        // certainly lapsed `lease` after this.
        let mut renewed = Instant::now();
        let history = RunLogs::new(self.config.log_limit, secrets);
        let tee = Tee(logs, &history);
        let mut warnings = Vec::new();
        let mut warn = |what: &str, e: &dyn fmt::Display| {
            // One warning per kind of failure is enough to read.
            let text = format!("{what}: {e}");
            if !warnings.iter().any(|w: &String| w.starts_with(what)) {
                tracing::warn!(run_id = %held.id, "{text}");
                warnings.push(text);
            }
        };
        let run = self.runner.run(&task.task, request, &tee, cancel);
        tokio::pin!(run);
        // The first flush comes after 250 ms: a quick run is stored in two
        // commits (its start and its end).
        let mut tick = interval_at(Instant::now() + FLUSH_EVERY, FLUSH_EVERY);
        let mut last_beat = Instant::now();
        let report = loop {
            tokio::select! {
                report = &mut run => break report,
                _ = tick.tick() => {
                    let batch = history.take();
                    if !batch.is_empty() {
                        match self.store.record_logs(&held, 1, &batch).await {
                            Ok(_) => {}
                            Err(e) => {
                                warn("cannot store the run's log lines", &e);
                                // Sent again with the next flush, within the log budget.
                                history.put_back(batch);
                            }
                        }
                    }
                    if last_beat.elapsed() >= lease / 3 {
                        last_beat = Instant::now();
                        match self.store.heartbeat(std::slice::from_ref(&held), lease).await {
                            Ok(status) if status.first() == Some(&LeaseStatus::Held) => {
                                renewed = Instant::now();
                            }
                            // `runs cancel`, or the run was taken from us.
                            Ok(_) => cancel.cancel(),
                            Err(e) => warn("cannot renew the run's lease in history", &e),
                        }
                    }
                }
            }
        };
        let batch = history.take();
        let cut = (batch.cut_lines, batch.cut_bytes);
        let finish = Finish {
            state: RunState::for_outcome(&report.outcome),
            outcome: report.outcome.clone(),
            exit: report.exit.clone(),
            attempt: 1,
            logs: batch,
        };
        // A store that does not answer is tried again while the lease still
        // holds; after that the run may be settled (`executor_lost`) any time.
        let mut backoff = Backoff::default();
        loop {
            match self.store.finish(&held, &finish).await {
                Ok(true) => {}
                Ok(false) => warn(
                    "history did not record the run's end",
                    &"its lease had lapsed and another process settled it",
                ),
                Err(e) if e.is_transient() => {
                    let pause = backoff.next_pause();
                    if Instant::now() + pause < renewed + lease {
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    warn("cannot record the run's end in history", &e);
                }
                Err(e) => warn("cannot record the run's end in history", &e),
            }
            break;
        }
        let record = record_of(new.into(), &report, Some(worker), started.at, cut);
        Ok(Executed {
            record,
            report,
            warnings,
        })
    }

    /// A batch of runs of `task` in this process, at most `parallel` at once,
    /// each line's log lines (secret values hidden) sent to `logs`. Not
    /// recorded in history.
    pub fn batch(
        &self,
        task: &Prepared,
        parallel: usize,
        caller: &str,
        timeout: Option<Duration>,
        logs: Arc<dyn LogSink>,
    ) -> Batch {
        let secrets = Arc::new(Mutex::new(HashMap::new()));
        let sink = Arc::new(BatchLogs {
            inner: logs,
            secrets: secrets.clone(),
        });
        Batch {
            pool: Pool::new(self.runner.clone(), parallel, sink),
            task: task.clone(),
            caller: caller.to_owned(),
            timeout,
            waiting: HashMap::new(),
            secrets,
        }
    }
}

/// What a run executed here was asked: its task, masked arguments, caller, priority.
struct Asked {
    task: TaskName,
    args: Value,
    caller: String,
    priority: i64,
}

impl From<NewRun> for Asked {
    fn from(new: NewRun) -> Self {
        Self {
            task: new.task,
            args: new.args,
            caller: new.caller,
            priority: new.priority,
        }
    }
}

/// The record of a run executed here, from what was asked and what happened:
/// timestamps on the store's clock from `started` on, the duration the runner measured.
fn record_of(
    asked: Asked,
    report: &RunReport,
    worker: Option<&str>,
    started: i64,
    (cut_lines, cut_bytes): (u64, u64),
) -> RunRecord {
    RunRecord {
        id: report.run_id.clone(),
        task: asked.task,
        args: asked.args,
        caller: asked.caller,
        state: RunState::for_outcome(&report.outcome),
        priority: asked.priority,
        attempt: 1,
        max_attempts: 1,
        worker: worker.map(str::to_owned),
        cancel_requested: false,
        queued_at: started,
        available_at: started,
        started_at: Some(started),
        finished_at: Some(started.saturating_add(report.duration.as_millis() as i64)),
        outcome: Some(report.outcome.clone()),
        exit: report.exit.clone(),
        error: None,
        log_cut_lines: cut_lines,
        log_cut_bytes: cut_bytes,
        schedule: None,
    }
}

/// Runs of one task in this process, with bounded concurrency: submit
/// checked arguments, collect each run's record as it finishes (in
/// completion order, tagged with the caller's id).
pub struct Batch {
    pool: Pool,
    task: Prepared,
    caller: String,
    timeout: Option<Duration>,
    /// The masked arguments of each job in flight, by job id.
    waiting: HashMap<u64, Value>,
    /// Each job's secret values, by run id, for [`BatchLogs`].
    secrets: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("task", &self.task.task().name)
            .field("in_flight", &self.pool.in_flight())
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// Starts a run with `args` (checked with [`Prepared::check`]) as soon
    /// as a slot is free; `id` (unique among the runs in flight) comes back
    /// with its record.
    pub fn submit(&mut self, id: u64, args: Value) {
        let run_id = new_run_id();
        let found = self.task.task.secrets(&args);
        if !found.is_empty() {
            self.lock_secrets().insert(run_id.clone(), found);
        }
        self.waiting.insert(id, self.task.task.mask(&args));
        let request = RunRequest {
            args,
            caller: self.caller.clone(),
            timeout: self.timeout,
            run_id: Some(run_id),
            attempt: None,
        };
        self.pool.submit(Job {
            id,
            task: self.task.task.clone(),
            request,
        });
    }

    fn lock_secrets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finished(&mut self, id: u64, report: RunReport) -> (u64, RunRecord) {
        self.lock_secrets().remove(&report.run_id);
        let def = self.task.task();
        let asked = Asked {
            task: def.name.clone(),
            // Only a caller reusing an id in flight can miss: its arguments are unknown.
            args: self.waiting.remove(&id).unwrap_or(Value::Null),
            caller: self.caller.clone(),
            priority: def.policy.priority.unwrap_or(0),
        };
        let started = to_ms(report.started_at);
        (id, record_of(asked, &report, None, started, (0, 0)))
    }

    /// The next run to finish, or `None` when none is in flight.
    pub async fn next(&mut self) -> Option<(u64, RunRecord)> {
        let done = self.pool.next().await?;
        Some(self.finished(done.id, done.report))
    }

    /// A run that has already finished, without waiting.
    pub fn try_next(&mut self) -> Option<(u64, RunRecord)> {
        let done = self.pool.try_next()?;
        Some(self.finished(done.id, done.report))
    }

    /// Runs submitted and not yet returned.
    pub fn in_flight(&self) -> usize {
        self.pool.in_flight()
    }

    /// Cancels every queued and running run (each ends `cancelled`).
    pub fn cancel_all(&self) {
        self.pool.cancel_all();
    }
}

/// The batch's log sink: hides each run's own secret values, then passes the line on.
struct BatchLogs {
    inner: Arc<dyn LogSink>,
    secrets: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl LogSink for BatchLogs {
    fn line(&self, line: LogLine<'_>) {
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        match secrets.get(line.run_id) {
            Some(values) => {
                let text = hide_secrets(line.text, values);
                drop(secrets);
                self.inner.line(LogLine {
                    text: &text,
                    ..line
                });
            }
            None => {
                drop(secrets);
                self.inner.line(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calls_debug_output_hides_its_arguments() {
        let call = Call {
            args: serde_json::json!({"token": "hunter2"}),
            caller: "me".into(),
            timeout: None,
        };
        let text = format!("{call:?}");
        assert!(
            !text.contains("hunter2") && text.contains("<hidden>"),
            "{text}"
        );
    }
}
