//! SQLite implementation of run history and the queue (tables `runs`,
//! `run_logs`, `schedules`; migration 2).
//!
//! Plain SQL that PostgreSQL also speaks: TEXT ids, INTEGER epoch-ms times,
//! JSON as TEXT, `RETURNING`, window functions; every write is one `BEGIN
//! IMMEDIATE` transaction (PostgreSQL: `SELECT … FOR UPDATE SKIP LOCKED` in
//! the claim). Listing is keyset-paginated on `(queued_at, id)`.

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use super::{SqliteStore, to_json};
use crate::history::{Cursor, LogBatch, LogEntry, RunFilter, RunPage, RunRecord, RunState};
use crate::log::Stream;
use crate::queue::{
    CancelResult, Claimed, Finish, Lease, LeaseStatus, NewRun, NewSchedule, Pruned, Schedule,
};
use crate::registry::StoreError;
use crate::task::TaskName;

const RUN_COLUMNS: &str = "id, task, args, caller, state, priority, attempt, max_attempts, worker, \
    cancel_requested, queued_at, available_at, started_at, finished_at, outcome, exit, error, \
    log_cut_lines, log_cut_bytes, schedule_id";

/// Attempts a run may lose to dead workers (expired leases) even when its
/// task allows fewer: a worker's death is not the task's failure.
pub const LEASE_ATTEMPTS: i64 = 3;

fn ms(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn dur(ms: Option<i64>) -> Option<Duration> {
    ms.map(|m| Duration::from_millis(m.max(0) as u64))
}

/// A `runs` row before it is checked.
struct RawRun {
    id: String,
    task: String,
    args: String,
    caller: String,
    state: String,
    priority: i64,
    attempt: i64,
    max_attempts: i64,
    worker: Option<String>,
    cancel_requested: i64,
    queued_at: i64,
    available_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    outcome: Option<String>,
    exit: Option<String>,
    error: Option<String>,
    log_cut_lines: i64,
    log_cut_bytes: i64,
    schedule: Option<String>,
}

impl RawRun {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            task: r.get(1)?,
            args: r.get(2)?,
            caller: r.get(3)?,
            state: r.get(4)?,
            priority: r.get(5)?,
            attempt: r.get(6)?,
            max_attempts: r.get(7)?,
            worker: r.get(8)?,
            cancel_requested: r.get(9)?,
            queued_at: r.get(10)?,
            available_at: r.get(11)?,
            started_at: r.get(12)?,
            finished_at: r.get(13)?,
            outcome: r.get(14)?,
            exit: r.get(15)?,
            error: r.get(16)?,
            log_cut_lines: r.get(17)?,
            log_cut_bytes: r.get(18)?,
            schedule: r.get(19)?,
        })
    }

    fn check(self, store: &SqliteStore) -> Result<RunRecord, StoreError> {
        let corrupt = |message: String| StoreError::Corrupt {
            path: store.path.clone(),
            key: format!("run {}", self.id),
            message,
        };
        let task = TaskName::new(self.task.as_str()).map_err(|e| corrupt(e.to_string()))?;
        let state = RunState::parse(&self.state)
            .ok_or_else(|| corrupt(format!("unknown state `{}`", self.state)))?;
        let args: Value = serde_json::from_str(&self.args)
            .map_err(|e| corrupt(format!("args is not valid JSON: {e}")))?;
        let outcome = self
            .outcome
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("outcome does not parse: {e}")))?;
        let exit = self
            .exit
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("exit does not parse: {e}")))?;
        Ok(RunRecord {
            id: self.id,
            task,
            args,
            caller: self.caller,
            state,
            priority: self.priority,
            attempt: self.attempt.clamp(0, u32::MAX.into()) as u32,
            max_attempts: self.max_attempts.clamp(0, u32::MAX.into()) as u32,
            worker: self.worker,
            cancel_requested: self.cancel_requested != 0,
            queued_at: self.queued_at,
            available_at: self.available_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            outcome,
            exit,
            error: self.error,
            log_cut_lines: self.log_cut_lines.max(0) as u64,
            log_cut_bytes: self.log_cut_bytes.max(0) as u64,
            schedule: self.schedule,
        })
    }
}

const INSERT_RUN: &str = "INSERT INTO runs (id, task, args, secret_args, caller, state, priority, \
    attempt, max_attempts, fence, worker, lease_until, timeout_ms, backoff_ms, retry_on_status, \
    queued_at, available_at, started_at, schedule_id) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";

fn insert_run(
    conn: &rusqlite::Connection,
    run: &NewRun,
    now: i64,
    running: Option<(&str, i64)>,
) -> rusqlite::Result<()> {
    let (state, attempt, fence, worker, lease, started) = match running {
        Some((worker, lease_until)) => {
            ("running", 1, 1, Some(worker), Some(lease_until), Some(now))
        }
        None => ("queued", 0, 0, None, None, None),
    };
    conn.prepare_cached(INSERT_RUN)?.execute(params![
        run.id,
        run.task.as_str(),
        to_json(&run.args),
        run.secret_args.as_ref().map(to_json),
        run.caller,
        state,
        run.priority,
        attempt,
        run.max_attempts,
        fence,
        worker,
        lease,
        ms(run.timeout),
        ms(run.backoff),
        run.retry_on_status,
        now,
        run.available_at,
        started,
        run.schedule,
    ])?;
    Ok(())
}

/// Stores `batch` for `lease`'s attempt; the caller has checked the lease holds.
fn insert_logs(
    tx: &rusqlite::Transaction<'_>,
    lease: &Lease,
    attempt: u32,
    batch: &LogBatch,
) -> rusqlite::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    if let Some((from, to)) = batch.delete {
        tx.prepare_cached(
            "DELETE FROM run_logs WHERE run_id = ?1 AND attempt = ?2 AND seq >= ?3 AND seq < ?4",
        )?
        .execute(params![lease.id, attempt, from as i64, to as i64])?;
    }
    let mut ins = tx.prepare_cached(
        "INSERT INTO run_logs (run_id, attempt, seq, stream, line, truncated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for l in &batch.lines {
        let stream = match l.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        ins.execute(params![
            lease.id,
            attempt,
            l.seq as i64,
            stream,
            l.text,
            l.truncated
        ])?;
    }
    tx.prepare_cached("UPDATE runs SET log_cut_lines = ?2, log_cut_bytes = ?3 WHERE id = ?1")?
        .execute(params![
            lease.id,
            batch.cut_lines as i64,
            batch.cut_bytes as i64
        ])?;
    Ok(())
}

impl SqliteStore {
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let out = self.with_conn(true, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })?;
        Ok(out.expect("a write opens (and creates) the database"))
    }

    /// Queues `runs` in one transaction.
    pub fn enqueue(&self, runs: &[NewRun]) -> Result<(), StoreError> {
        let now = crate::history::now_ms();
        self.write(|tx| {
            for run in runs {
                insert_run(tx, run, now, None)?;
            }
            Ok(())
        })
    }

    /// Records a run executed in-process as running, held by `worker` until `lease_until`; its fence is 1.
    pub fn start_inline(
        &self,
        run: &NewRun,
        worker: &str,
        lease_until: i64,
    ) -> Result<i64, StoreError> {
        let now = crate::history::now_ms();
        self.write(|tx| insert_run(tx, run, now, Some((worker, lease_until))))?;
        Ok(1)
    }

    /// Claims up to `n` due runs for `worker` (see [`crate::queue`]).
    pub fn claim(
        &self,
        worker: &str,
        n: usize,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let mut candidates = tx.prepare_cached(
                "SELECT r.id, r.task, COALESCE(r.secret_args, r.args), r.caller, r.attempt, \
                        r.max_attempts, r.fence, r.timeout_ms, r.backoff_ms, r.retry_on_status, \
                        t.concurrency \
                 FROM runs r LEFT JOIN tasks t ON t.name = r.task \
                 WHERE r.state = 'queued' AND r.available_at <= ?1 \
                 ORDER BY r.priority DESC, r.available_at, r.id LIMIT ?2",
            )?;
            let rows = candidates
                .query_map(params![now, (n * 4 + 16) as i64], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, Option<i64>>(8)?,
                        r.get::<_, i64>(9)?,
                        r.get::<_, Option<i64>>(10)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut running: HashMap<String, i64> = HashMap::new();
            let mut claimed = Vec::new();
            let mut update = tx.prepare_cached(
                "UPDATE runs SET state = 'running', attempt = attempt + 1, fence = fence + 1, \
                    worker = ?2, lease_until = ?3, started_at = ?4, finished_at = NULL, \
                    cancel_requested = 0, log_cut_lines = 0, log_cut_bytes = 0 \
                 WHERE id = ?1 AND state = 'queued'",
            )?;
            for (
                id,
                task,
                args,
                caller,
                attempt,
                max_attempts,
                fence,
                timeout,
                backoff,
                ros,
                limit,
            ) in rows
            {
                if claimed.len() == n {
                    break;
                }
                if let Some(limit) = limit {
                    let count = match running.get(&task) {
                        Some(c) => *c,
                        None => tx
                            .prepare_cached(
                                "SELECT count(*) FROM runs WHERE task = ?1 AND state = 'running'",
                            )?
                            .query_row([&task], |r| r.get(0))?,
                    };
                    if count >= limit {
                        running.insert(task, count);
                        continue;
                    }
                    running.insert(task.clone(), count + 1);
                }
                if update.execute(params![id, worker, lease_until, now])? == 1 {
                    let Ok(name) = TaskName::new(task) else {
                        continue;
                    };
                    claimed.push(Claimed {
                        id,
                        task: name,
                        args: serde_json::from_str(&args).unwrap_or(Value::Null),
                        caller,
                        attempt: (attempt + 1).clamp(0, u32::MAX.into()) as u32,
                        max_attempts: max_attempts.clamp(1, u32::MAX.into()) as u32,
                        fence: fence + 1,
                        timeout: dur(timeout),
                        backoff: dur(backoff),
                        retry_on_status: ros != 0,
                    });
                }
            }
            Ok(claimed)
        })
    }

    /// Extends the leases still held (matching fence) and reports each one's status.
    pub fn heartbeat(
        &self,
        leases: &[Lease],
        lease_until: i64,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE runs SET lease_until = ?3 \
                 WHERE id = ?1 AND fence = ?2 AND state = 'running' RETURNING cancel_requested",
            )?;
            leases
                .iter()
                .map(|l| {
                    let cancel: Option<i64> = stmt
                        .query_row(params![l.id, l.fence, lease_until], |r| r.get(0))
                        .optional()?;
                    Ok(match cancel {
                        None => LeaseStatus::Lost,
                        Some(0) => LeaseStatus::Held,
                        Some(_) => LeaseStatus::CancelRequested,
                    })
                })
                .collect()
        })
    }

    /// Records an attempt's end if `lease` still holds the run; `false` if a newer attempt owns it.
    pub fn finish(&self, lease: &Lease, finish: &Finish) -> Result<bool, StoreError> {
        let outcome = serde_json::to_string(&finish.outcome).unwrap_or_default();
        let exit = finish
            .exit
            .as_ref()
            .map(|e| serde_json::to_string(e).unwrap_or_default());
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE runs SET state = ?3, outcome = ?4, exit = ?5, finished_at = ?6, \
                    lease_until = NULL, secret_args = NULL, error = NULL \
                 WHERE id = ?1 AND fence = ?2 AND state = 'running'",
                )?
                .execute(params![
                    lease.id,
                    lease.fence,
                    finish.state.as_str(),
                    outcome,
                    exit,
                    finish.finished_at
                ])?;
            if n == 1 {
                insert_logs(tx, lease, finish.attempt, &finish.logs)?;
            }
            Ok(n == 1)
        })
    }

    /// Queues the run again after a failed attempt, not before `available_at`; `false` if the lease was lost.
    pub fn retry(
        &self,
        lease: &Lease,
        finish: &Finish,
        available_at: i64,
    ) -> Result<bool, StoreError> {
        let outcome = serde_json::to_string(&finish.outcome).unwrap_or_default();
        let exit = finish
            .exit
            .as_ref()
            .map(|e| serde_json::to_string(e).unwrap_or_default());
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE runs SET state = 'queued', outcome = ?3, exit = ?4, available_at = ?5, \
                    lease_until = NULL, error = 'attempt ' || attempt || ' failed; retrying' \
                 WHERE id = ?1 AND fence = ?2 AND state = 'running'",
                )?
                .execute(params![lease.id, lease.fence, outcome, exit, available_at])?;
            if n == 1 {
                insert_logs(tx, lease, finish.attempt, &finish.logs)?;
            }
            Ok(n == 1)
        })
    }

    /// Gives a running attempt back to the queue without counting it (worker shutdown).
    pub fn release(&self, lease: &Lease, now: i64) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE runs SET state = 'queued', attempt = attempt - 1, lease_until = NULL, \
                    available_at = ?3, started_at = NULL \
                 WHERE id = ?1 AND fence = ?2 AND state = 'running'",
                )?
                .execute(params![lease.id, lease.fence, now])?;
            Ok(n == 1)
        })
    }

    /// Requeues running attempts whose lease expired before `now` (or fails
    /// them when no attempt is left, or cancels them when cancel was asked).
    /// Returns how many runs were touched.
    pub fn requeue_expired(&self, now: i64) -> Result<u64, StoreError> {
        let Some(n) = self.with_conn(false, |conn| {
            // Cheap check first, without the write lock.
            conn.prepare_cached(
                "SELECT count(*) FROM runs WHERE state = 'running' AND lease_until < ?1",
            )?
            .query_row([now], |r| r.get::<_, i64>(0))
        })?
        else {
            return Ok(0);
        };
        if n == 0 {
            return Ok(0);
        }
        self.write(|tx| {
            let mut total = tx.execute(
                "UPDATE runs SET state = 'cancelled', finished_at = ?1, lease_until = NULL, \
                    secret_args = NULL, error = 'cancelled; its worker stopped renewing the lease' \
                 WHERE state = 'running' AND lease_until < ?1 AND cancel_requested <> 0",
                [now],
            )?;
            total += tx.execute(
                "UPDATE runs SET state = 'failed', finished_at = ?1, lease_until = NULL, \
                    secret_args = NULL, \
                    error = 'attempt ' || attempt || ' of ' || max_attempts || \
                            ' lost its lease (worker died or stalled); no attempts left' \
                 WHERE state = 'running' AND lease_until < ?1 AND attempt >= max_attempts \
                    AND attempt >= ?2",
                params![now, LEASE_ATTEMPTS],
            )?;
            total += tx.execute(
                "UPDATE runs SET state = 'queued', lease_until = NULL, available_at = ?1, \
                    error = 'attempt ' || attempt || ' lost its lease (worker died or stalled); requeued' \
                 WHERE state = 'running' AND lease_until < ?1",
                [now],
            )?;
            Ok(total as u64)
        })
    }

    /// Stores a batch of an attempt's log lines, if `lease` still holds the run.
    pub fn record_logs(
        &self,
        lease: &Lease,
        attempt: u32,
        batch: &LogBatch,
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let held = tx
                .prepare_cached("SELECT 1 FROM runs WHERE id = ?1 AND fence = ?2")?
                .exists(params![lease.id, lease.fence])?;
            if held {
                insert_logs(tx, lease, attempt, batch)?;
            }
            Ok(())
        })
    }

    /// One run by id, or by a unique prefix of at least 8 characters.
    pub fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let raw = self.with_conn(false, |conn| {
            let exact = conn
                .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?
                .query_row([id], RawRun::read)
                .optional()?;
            if exact.is_some() || id.len() < 8 {
                return Ok(exact);
            }
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE id >= ?1 AND id < ?1 || '~' LIMIT 2"
            ))?;
            let mut found = stmt
                .query_map([id], RawRun::read)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(if found.len() == 1 { found.pop() } else { None })
        })?;
        raw.flatten().map(|r| r.check(self)).transpose()
    }

    /// A page of runs, newest first.
    pub fn list_runs(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(task) = &filter.task {
            arg(&mut sql, " AND task = ?", task.as_str().to_owned().into());
        }
        if let Some(state) = filter.state {
            arg(&mut sql, " AND state = ?", state.as_str().to_owned().into());
        }
        if let Some(since) = filter.since {
            arg(&mut sql, " AND queued_at >= ?", since.into());
        }
        if let Some(c) = &filter.after {
            args.push(c.queued_at.into());
            args.push(c.id.clone().into());
            let (at, id) = (args.len() - 1, args.len());
            sql.push_str(&format!(
                " AND queued_at <= ?{at} AND (queued_at < ?{at} OR id < ?{id})"
            ));
        }
        let limit = filter.limit.max(1);
        sql.push_str(&format!(
            " ORDER BY queued_at DESC, id DESC LIMIT {}",
            limit + 1
        ));
        let rows = self.with_conn(false, |conn| {
            conn.prepare_cached(&sql)?
                .query_map(rusqlite::params_from_iter(args.iter()), RawRun::read)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut runs = rows
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.check(self))
            .collect::<Result<Vec<_>, _>>()?;
        let next = (runs.len() > limit).then(|| {
            runs.truncate(limit);
            let last = runs.last().expect("limit is at least 1");
            Cursor {
                queued_at: last.queued_at,
                id: last.id.clone(),
            }
        });
        Ok(RunPage { runs, next })
    }

    /// An attempt's stored log lines from `from_seq` on, in order.
    pub fn run_logs(
        &self,
        id: &str,
        attempt: u32,
        from_seq: u64,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let rows = self.with_conn(false, |conn| {
            conn.prepare_cached(
                "SELECT seq, stream, line, truncated FROM run_logs \
                 WHERE run_id = ?1 AND attempt = ?2 AND seq >= ?3 ORDER BY seq",
            )?
            .query_map(params![id, attempt, from_seq as i64], |r| {
                Ok(LogEntry {
                    seq: r.get::<_, i64>(0)?.max(0) as u64,
                    stream: if r.get::<_, String>(1)? == "stderr" {
                        Stream::Stderr
                    } else {
                        Stream::Stdout
                    },
                    text: r.get(2)?,
                    truncated: r.get::<_, i64>(3)? != 0,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.unwrap_or_default())
    }

    /// Cancels a queued run, or asks the worker of a running one to stop it.
    pub fn cancel_run(&self, id: &str, now: i64) -> Result<Option<CancelResult>, StoreError> {
        if !self.path.exists() {
            return Ok(None);
        }
        self.write(|tx| {
            let state: Option<String> = tx
                .prepare_cached("SELECT state FROM runs WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            let Some(state) = state.as_deref().and_then(RunState::parse) else {
                return Ok(None);
            };
            Ok(Some(match state {
                RunState::Queued => {
                    tx.execute(
                        "UPDATE runs SET state = 'cancelled', finished_at = ?2, secret_args = NULL, \
                            error = 'cancelled before it ran' WHERE id = ?1",
                        params![id, now],
                    )?;
                    CancelResult::Cancelled
                }
                RunState::Running => {
                    tx.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?1", [id])?;
                    CancelResult::Requested
                }
                other => CancelResult::AlreadyOver(other),
            }))
        })
    }

    /// Deletes finished runs (and their logs) that finished before `before`,
    /// and beyond the newest `keep` finished runs of each task.
    pub fn prune(&self, before: Option<i64>, keep: Option<u64>) -> Result<Pruned, StoreError> {
        if !self.path.exists() {
            return Ok(Pruned::default());
        }
        self.write(|tx| {
            let mut runs = 0;
            if let Some(before) = before {
                runs += tx.execute(
                    "DELETE FROM runs WHERE state IN ('completed', 'failed', 'cancelled') \
                     AND finished_at < ?1",
                    [before],
                )?;
            }
            if let Some(keep) = keep {
                runs += tx.execute(
                    "DELETE FROM runs WHERE id IN (SELECT id FROM (\
                        SELECT id, ROW_NUMBER() OVER (PARTITION BY task ORDER BY queued_at DESC, id DESC) AS n \
                        FROM runs WHERE state IN ('completed', 'failed', 'cancelled')) AS ranked \
                     WHERE n > ?1)",
                    [keep as i64],
                )?;
            }
            Ok(Pruned { runs: runs as u64 })
        })
    }

    /// How many runs are queued or running.
    pub fn count_active(&self) -> Result<u64, StoreError> {
        let n = self.with_conn(false, |conn| {
            conn.prepare_cached(
                "SELECT (SELECT count(*) FROM runs WHERE state = 'queued') + \
                        (SELECT count(*) FROM runs WHERE state = 'running')",
            )?
            .query_row([], |r| r.get::<_, i64>(0))
        })?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Adds a schedule and returns its id.
    pub fn add_schedule(&self, s: &NewSchedule) -> Result<String, StoreError> {
        let id = crate::outcome::new_run_id();
        let now = crate::history::now_ms();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO schedules (id, task, cron, args, secret_args, caller, next_fire_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    id,
                    s.task.as_str(),
                    s.cron,
                    to_json(&s.args),
                    s.secret_args.as_ref().map(to_json),
                    s.caller,
                    s.next_fire_at,
                    now
                ],
            )
        })?;
        Ok(id)
    }

    /// Every schedule, oldest first.
    pub fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let rows = self.with_conn(false, |conn| {
            conn.prepare_cached(
                "SELECT id, task, cron, args, caller, next_fire_at FROM schedules ORDER BY created_at, id",
            )?
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.unwrap_or_default()
            .into_iter()
            .map(|(id, task, cron, args, caller, next_fire_at)| {
                let corrupt = |message: String| StoreError::Corrupt {
                    path: self.path.clone(),
                    key: format!("schedule {id}"),
                    message,
                };
                Ok(Schedule {
                    task: TaskName::new(task).map_err(|e| corrupt(e.to_string()))?,
                    args: serde_json::from_str(&args).map_err(|e| corrupt(e.to_string()))?,
                    id,
                    cron,
                    caller,
                    next_fire_at,
                })
            })
            .collect()
    }

    /// Removes a schedule; `false` if there was none with that id.
    pub fn remove_schedule(&self, id: &str) -> Result<bool, StoreError> {
        if !self.path.exists() {
            return Ok(false);
        }
        self.write(|tx| Ok(tx.execute("DELETE FROM schedules WHERE id = ?1", [id])? == 1))
    }

    /// Fires every schedule due at `now`: advances its `next_fire_at` (to
    /// `next(cron, now)`) by compare-and-set and enqueues one run, in one
    /// transaction. Missed ticks are not replayed. Returns the runs queued.
    pub fn fire_schedules(
        &self,
        now: i64,
        next: &dyn Fn(&str, i64) -> Option<i64>,
    ) -> Result<Vec<NewRun>, StoreError> {
        let due = self.with_conn(false, |conn| {
            conn.prepare_cached("SELECT 1 FROM schedules WHERE next_fire_at <= ?1 LIMIT 1")?
                .exists([now])
        })?;
        if due != Some(true) {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let due = tx
                .prepare_cached(
                    "SELECT s.id, s.task, s.cron, s.args, s.secret_args, s.caller, s.next_fire_at, \
                            t.retries, t.backoff_ms, t.retry_on_status, t.priority \
                     FROM schedules s LEFT JOIN tasks t ON t.name = s.task \
                     WHERE s.next_fire_at <= ?1",
                )?
                .query_map([now], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, Option<i64>>(8)?,
                        r.get::<_, Option<i64>>(9)?,
                        r.get::<_, Option<i64>>(10)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut fired = Vec::new();
            for (id, task, cron, args, secret, caller, at, retries, backoff, ros, priority) in due {
                // A schedule whose cron no longer parses is pushed far away rather than spinning.
                let next_at = next(&cron, now).unwrap_or(i64::MAX);
                let advanced = tx
                    .prepare_cached(
                        "UPDATE schedules SET next_fire_at = ?3 WHERE id = ?1 AND next_fire_at = ?2",
                    )?
                    .execute(params![id, at, next_at])?;
                let (Some(_), 1, Ok(task)) = (ros, advanced, TaskName::new(task)) else {
                    continue; // the task is gone, or another worker fired this tick
                };
                let run = NewRun {
                    id: crate::outcome::new_run_id(),
                    task,
                    args: serde_json::from_str(&args).unwrap_or(Value::Null),
                    secret_args: secret.and_then(|s| serde_json::from_str(&s).ok()),
                    caller,
                    priority: priority.unwrap_or(0),
                    max_attempts: retries.unwrap_or(0).clamp(0, i64::from(u32::MAX - 1)) as u32 + 1,
                    backoff: dur(backoff),
                    retry_on_status: ros.unwrap_or(0) != 0,
                    timeout: None,
                    available_at: now,
                    schedule: Some(id),
                };
                insert_run(tx, &run, now, None)?;
                fired.push(run);
            }
            Ok(fired)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::outcome::Outcome;
    use crate::registry::InsertMode;
    use crate::task::{Policy, Task};

    fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&dir.path().join("q.db")).unwrap()
    }

    fn task(name: &str, policy: Policy) -> Task {
        Task {
            name: TaskName::new(name).unwrap(),
            location: "/bin/true".into(),
            description: None,
            inputs: json!({"properties": {"pw": {"writeOnly": true}}}),
            outputs: None,
            timeout: None,
            policy,
            formats: Default::default(),
        }
    }

    fn done() -> Finish {
        Finish {
            state: RunState::Completed,
            outcome: Outcome::NoResult,
            exit: None,
            finished_at: 5,
            attempt: 1,
            logs: LogBatch::default(),
        }
    }

    #[test]
    fn claim_bumps_the_fence_and_a_stale_attempt_cannot_finish() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let t = task(
            "t",
            Policy {
                retries: Some(1),
                ..Policy::default()
            },
        );
        s.insert(&t, InsertMode::CreateNew).unwrap();
        let run = NewRun::new(&t, &json!({"pw": "secret", "x": 1}), "me");
        s.enqueue(std::slice::from_ref(&run)).unwrap();
        let rec = s.get_run(&run.id).unwrap().unwrap();
        assert_eq!(rec.args, json!({"pw": "********", "x": 1}));

        let n0 = crate::history::now_ms() + 1000;
        let a = s.claim("A", 5, n0, n0 + 10).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].attempt, a[0].fence), (1, 1));
        assert_eq!(a[0].args["pw"], "secret");
        assert!(s.claim("B", 5, n0, n0 + 10).unwrap().is_empty());

        // A's lease expires; B takes over with a newer fence.
        assert_eq!(s.requeue_expired(n0 + 11).unwrap(), 1);
        let b = s.claim("B", 5, n0 + 11, n0 + 100).unwrap();
        assert_eq!((b[0].attempt, b[0].fence), (2, 2));
        let lease_a = Lease {
            id: run.id.clone(),
            fence: 1,
        };
        let lease_b = Lease {
            id: run.id.clone(),
            fence: 2,
        };
        assert_eq!(
            s.heartbeat(&[lease_a.clone(), lease_b.clone()], n0 + 200)
                .unwrap(),
            [LeaseStatus::Lost, LeaseStatus::Held]
        );
        assert!(!s.finish(&lease_a, &done()).unwrap());
        assert!(s.finish(&lease_b, &done()).unwrap());
        let rec = s.get_run(&run.id).unwrap().unwrap();
        assert_eq!(
            (rec.state, rec.attempt, rec.worker.as_deref()),
            (RunState::Completed, 2, Some("B"))
        );
        // Exhausted: the third lost lease (LEASE_ATTEMPTS) fails instead of requeueing.
        let run2 = NewRun::new(&t, &json!({}), "me");
        s.enqueue(std::slice::from_ref(&run2)).unwrap();
        for i in 0..3 {
            let at = n0 + 20 * i;
            assert_eq!(s.claim("A", 1, at, at + 10).unwrap().len(), 1);
            assert_eq!(
                s.get_run(&run2.id).unwrap().unwrap().state,
                RunState::Running
            );
            s.requeue_expired(at + 11).unwrap();
        }
        let rec = s.get_run(&run2.id).unwrap().unwrap();
        assert_eq!(rec.state, RunState::Failed);
        assert!(rec.error.unwrap().contains("lost its lease"));
    }

    #[test]
    fn claim_honours_priority_delay_and_concurrency_limits() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let limited = task(
            "limited",
            Policy {
                concurrency: Some(1),
                ..Policy::default()
            },
        );
        let urgent = task(
            "urgent",
            Policy {
                priority: Some(5),
                ..Policy::default()
            },
        );
        s.insert(&limited, InsertMode::CreateNew).unwrap();
        s.insert(&urgent, InsertMode::CreateNew).unwrap();
        let mut runs = vec![];
        for _ in 0..3 {
            runs.push(NewRun::new(&limited, &json!({}), "me"));
        }
        let mut later = NewRun::new(&urgent, &json!({}), "me");
        later.available_at = i64::MAX - 1;
        runs.push(later);
        runs.push(NewRun::new(&urgent, &json!({}), "me"));
        s.enqueue(&runs).unwrap();
        let now = crate::history::now_ms();
        let got = s.claim("w", 10, now, now + 1000).unwrap();
        let names: Vec<&str> = got.iter().map(|c| c.task.as_str()).collect();
        assert_eq!(names, ["urgent", "limited"]);
        assert!(s.claim("w", 10, now, now + 1000).unwrap().is_empty());
    }

    #[test]
    fn list_pages_with_a_keyset_cursor_and_prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let t = task("t", Policy::default());
        s.insert(&t, InsertMode::CreateNew).unwrap();
        let runs: Vec<NewRun> = (0..7).map(|_| NewRun::new(&t, &json!({}), "me")).collect();
        s.enqueue(&runs).unwrap();
        let mut seen = vec![];
        let mut filter = RunFilter {
            limit: 3,
            ..RunFilter::default()
        };
        loop {
            let page = s.list_runs(&filter).unwrap();
            seen.extend(page.runs.iter().map(|r| r.id.clone()));
            match page.next {
                Some(c) => filter.after = Some(c),
                None => break,
            }
        }
        let mut want: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
        want.reverse();
        assert_eq!(seen, want);
        let claimed = s.claim("w", 7, crate::history::now_ms(), i64::MAX).unwrap();
        for c in &claimed {
            s.finish(
                &Lease {
                    id: c.id.clone(),
                    fence: c.fence,
                },
                &done(),
            )
            .unwrap();
        }
        assert_eq!(s.prune(None, Some(2)).unwrap().runs, 5);
        assert_eq!(s.prune(Some(6), None).unwrap().runs, 2);
    }

    #[test]
    fn a_schedule_fires_once_per_tick() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let t = task("t", Policy::default());
        s.insert(&t, InsertMode::CreateNew).unwrap();
        let sched = NewSchedule {
            task: t.name.clone(),
            cron: "* * * * * *".into(),
            args: json!({}),
            secret_args: None,
            caller: "cron".into(),
            next_fire_at: 1000,
        };
        s.add_schedule(&sched).unwrap();
        let next = |_: &str, now: i64| Some(now - now % 1000 + 1000);
        assert!(s.fire_schedules(999, &next).unwrap().is_empty());
        assert_eq!(s.fire_schedules(1500, &next).unwrap().len(), 1);
        // A second worker seeing the same tick fires nothing.
        assert!(s.fire_schedules(1500, &next).unwrap().is_empty());
        assert_eq!(s.fire_schedules(2000, &next).unwrap().len(), 1);
        assert_eq!(s.list_schedules().unwrap()[0].next_fire_at, 3000);
    }
}
