//! SQLite implementation of [`RunStore`]: run history, the queue's storage
//! and guards, and schedules (tables `runs`, `run_logs`, `schedules`); the
//! worker registry's statements are in `workers.rs`.
//!
//! Plain SQL that PostgreSQL also speaks: TEXT ids, INTEGER epoch-ms times,
//! JSON as TEXT, `RETURNING`, window functions. Every guard is one
//! conditional statement (`WHERE id = ? AND fence = ? AND state =
//! 'running'`) that a second backend can run unchanged; log lines of an
//! attempt are written only after that guard held, in its transaction.
//! Listing is keyset-paginated on `(queued_at, seq)`. Times come from the
//! store's clock, read inside each transaction (after its lock is taken).

use std::time::Duration;

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;

use super::{Ctx, Fail, SqliteStore, to_json};
use crate::history::{Cursor, LogBatch, LogEntry, RunError, RunFilter, RunPage};
use crate::log::Stream;
use crate::store::StoreError;
use crate::store::contract::{
    Active, ClaimFilter, Claimed, Due, DueSchedule, Expired, ExportCursor, ExportLimits,
    ExportPage, ExportedRun, ExportedSchedule, Finish, ImportReport, Lease, LeaseStatus,
    MIN_PREFIX, NewAudit, NewRun, NewSchedule, Prune, RunLookup, RunStore, Schedule, Started,
    Verdict, WorkerBeat, WorkerRecord,
};
use crate::store::rows::RawRun;
use crate::task::TaskName;

pub(super) const RUN_COLUMNS: &str = "id, task, args, caller, state, priority, attempt, max_attempts, worker, \
    cancel_requested, queued_at, available_at, started_at, finished_at, outcome, exit, error, \
    error_kind, log_cut_lines, log_cut_bytes, schedule_id, seq";

/// The finished states, as SQL.
const TERMINAL: &str = "('completed', 'failed', 'cancelled')";

/// How many runs an ambiguous prefix is counted up to.
const AMBIGUITY_COUNT_LIMIT: i64 = 1000;

pub(super) fn ms(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) fn dur(ms: Option<i64>) -> Option<Duration> {
    ms.map(|m| Duration::from_millis(m.max(0) as u64))
}

fn plus(now: i64, d: Duration) -> i64 {
    now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether run `id` still holds its secret arguments (a write that ends it
/// drops them, and then scrubs the WAL: see `write_dropping_secrets`).
fn has_secret_args(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("SELECT secret_args IS NOT NULL FROM runs WHERE id = ?1")?
        .query_row([id], |r| r.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false))
}

pub(super) fn count(n: i64) -> u32 {
    n.clamp(0, u32::MAX.into()) as u32
}

/// Reads a `runs` row selected as [`RUN_COLUMNS`].
pub(super) fn read_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRun> {
    Ok(RawRun {
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
        error_kind: r.get(17)?,
        log_cut_lines: r.get(18)?,
        log_cut_bytes: r.get(19)?,
        schedule: r.get(20)?,
        seq: r.get::<_, Option<i64>>(21)?.unwrap_or(0),
    })
}

const INSERT_RUN: &str = "INSERT INTO runs (id, task, args, secret_args, caller, state, priority, \
    attempt, max_attempts, fence, worker, lease_until, timeout_ms, backoff_ms, retry_on_status, \
    queued_at, available_at, started_at, schedule_id, inline, task_rev, seq) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
    ?20, ?21, (SELECT coalesce(max(seq), 0) + 1 FROM runs))";

/// Inserts `run` at `now`: queued, or with `running` = (worker, lease) as the
/// first attempt of an inline run.
fn insert_run(
    tx: &Transaction<'_>,
    run: &NewRun,
    now: i64,
    running: Option<(&str, Duration)>,
) -> rusqlite::Result<()> {
    let (state, attempt, fence, worker, lease, started) = match running {
        Some((worker, lease)) => (
            "running",
            1,
            1,
            Some(worker),
            Some(plus(now, lease)),
            Some(now),
        ),
        None => ("queued", 0, 0, None, None, None),
    };
    tx.prepare_cached(INSERT_RUN)?.execute(params![
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
        run.available.resolve(now),
        started,
        run.schedule,
        running.is_some(),
        run.task_rev,
    ])?;
    Ok(())
}

/// The guard every write about an attempt starts with: it also records how
/// much of the attempt's log was cut. Returns whether `lease` still holds.
fn guard_logs(tx: &Transaction<'_>, lease: &Lease, batch: &LogBatch) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE runs SET log_cut_lines = ?3, log_cut_bytes = ?4 \
             WHERE id = ?1 AND fence = ?2 AND state = 'running'",
        )?
        .execute(params![
            lease.id,
            lease.fence,
            batch.cut_lines as i64,
            batch.cut_bytes as i64
        ])?;
    Ok(n == 1)
}

/// Stores `batch` for an attempt whose lease the caller's guard has checked
/// (and, on a server, locked) in this transaction.
fn insert_logs(
    tx: &Transaction<'_>,
    lease: &Lease,
    attempt: u32,
    batch: &LogBatch,
) -> rusqlite::Result<()> {
    if let Some((from, to)) = batch.delete {
        tx.prepare_cached(
            "DELETE FROM run_logs WHERE run_id = ?1 AND attempt = ?2 AND seq >= ?3 AND seq < ?4",
        )?
        .execute(params![lease.id, attempt, from as i64, to as i64])?;
    }
    // A batch may be sent again after a call whose outcome was unknown (a
    // commit that failed to answer): lines already stored are kept as they are.
    let mut ins = tx.prepare_cached(
        "INSERT INTO run_logs (run_id, attempt, seq, stream, line, truncated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (run_id, attempt, seq) DO NOTHING",
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
    Ok(())
}

/// An attempt's end, as stored: its outcome and exit as JSON.
fn end_json(finish: &Finish) -> (String, Option<String>) {
    let outcome = serde_json::to_string(&finish.outcome).unwrap_or_default();
    let exit = finish
        .exit
        .as_ref()
        .map(|e| serde_json::to_string(e).unwrap_or_default());
    (outcome, exit)
}

/// A claim candidate: a due run whose task is below its concurrency cap.
struct Candidate {
    id: String,
    task: String,
    args: String,
    caller: String,
    attempt: i64,
    max_attempts: i64,
    fence: i64,
    timeout: Option<i64>,
    backoff: Option<i64>,
    retry_on_status: bool,
    cap: Option<i64>,
    task_rev: Option<String>,
}

fn claim_in(
    tx: &Transaction<'_>,
    worker: &str,
    n: usize,
    now: i64,
    lease_until: i64,
    filter: &ClaimFilter,
) -> rusqlite::Result<Vec<Claimed>> {
    // The filter as two JSON arrays the statement reads with `json_each`
    // (PostgreSQL: `text[]` parameters, `t.tags <@ $3` and `r.task <> ALL ($4)`).
    let tags = to_json(&Value::from(filter.tags.clone()));
    let exclude = to_json(&Value::from(
        filter
            .exclude
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect::<Vec<_>>(),
    ));
    let mut claimed = Vec::new();
    // A candidate can lose its place to the cap (another of its task was
    // claimed just before it): look again, a few times, for the others.
    for _ in 0..3 {
        let want = n - claimed.len();
        // The query names the queue's partial index: without statistics,
        // SQLite's planner would take the state index and sort every queued run.
        let candidates = tx
            .prepare_cached(
                "SELECT r.id, r.task, COALESCE(r.secret_args, r.args), r.caller, r.attempt, \
                        r.max_attempts, r.fence, r.timeout_ms, r.backoff_ms, r.retry_on_status, \
                        t.concurrency, r.task_rev \
                 FROM runs r INDEXED BY runs_claim LEFT JOIN tasks t ON t.name = r.task \
                 WHERE r.state = 'queued' AND r.available_at <= ?1 \
                   AND (t.concurrency IS NULL OR t.concurrency > \
                        (SELECT count(*) FROM runs x WHERE x.task = r.task AND x.state = 'running')) \
                   AND NOT EXISTS (SELECT 1 FROM json_each(t.tags) AS need \
                        WHERE need.value NOT IN (SELECT value FROM json_each(?3))) \
                   AND r.task NOT IN (SELECT value FROM json_each(?4)) \
                 ORDER BY r.priority DESC, r.available_at, r.seq LIMIT ?2",
            )?
            .query_map(params![now, (want * 2 + 8) as i64, tags, exclude], |r| {
                Ok(Candidate {
                    id: r.get(0)?,
                    task: r.get(1)?,
                    args: r.get(2)?,
                    caller: r.get(3)?,
                    attempt: r.get(4)?,
                    max_attempts: r.get(5)?,
                    fence: r.get(6)?,
                    timeout: r.get(7)?,
                    backoff: r.get(8)?,
                    retry_on_status: r.get::<_, i64>(9)? != 0,
                    cap: r.get(10)?,
                    task_rev: r.get(11)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let found = candidates.len();
        let mut skipped = false;
        // The cap, counted and enforced in the one statement that takes the run.
        let mut take = tx.prepare_cached(
            "UPDATE runs SET state = 'running', attempt = attempt + 1, fence = fence + 1, \
                worker = ?2, lease_until = ?3, started_at = ?4, finished_at = NULL, \
                cancel_requested = 0, log_cut_lines = 0, log_cut_bytes = 0 \
             WHERE id = ?1 AND state = 'queued' \
               AND (?5 IS NULL OR ?5 > \
                    (SELECT count(*) FROM runs x WHERE x.task = ?6 AND x.state = 'running'))",
        )?;
        for c in candidates {
            if claimed.len() == n {
                break;
            }
            if take.execute(params![c.id, worker, lease_until, now, c.cap, c.task])? != 1 {
                skipped = true;
                continue;
            }
            let Ok(task) = TaskName::new(c.task) else {
                continue;
            };
            claimed.push(Claimed {
                id: c.id,
                task,
                args: serde_json::from_str(&c.args).unwrap_or(Value::Null),
                caller: c.caller,
                attempt: count(c.attempt + 1),
                max_attempts: count(c.max_attempts).max(1),
                fence: c.fence + 1,
                timeout: dur(c.timeout),
                backoff: dur(c.backoff),
                retry_on_status: c.retry_on_status,
                task_rev: c.task_rev,
            });
        }
        if claimed.len() == n || !skipped || found == 0 {
            break;
        }
    }
    Ok(claimed)
}

/// Schedules selected as `id, task, cron, args, caller, next_fire_at, created_at`.
fn read_schedules(
    conn: &rusqlite::Connection,
    ctx: &Ctx<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Schedule>, Fail> {
    let rows = conn
        .prepare_cached(sql)?
        .query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, task, cron, args, caller, next_fire_at, created_at)| {
            let corrupt = |m: String| ctx.corrupt("schedule", id.clone(), m);
            Ok(Schedule {
                task: TaskName::new(task).map_err(|e| corrupt(e.to_string()))?,
                args: serde_json::from_str(&args)
                    .map_err(|e| corrupt(format!("args is not valid JSON: {e}")))?,
                id,
                cron,
                caller,
                next_fire_at,
                created_at,
            })
        })
        .collect()
}

/// `(kind, message)` columns of an error.
fn error_cols(e: &RunError) -> (&str, &str) {
    (e.kind.as_str(), e.message.as_str())
}

impl RunStore for SqliteStore {
    async fn now(&self) -> Result<i64, StoreError> {
        Ok(self.inner.clock.now_ms())
    }

    async fn enqueue(&self, runs: &[NewRun]) -> Result<i64, StoreError> {
        let runs = runs.to_vec();
        self.write(move |tx, ctx| {
            let now = ctx.now();
            for run in &runs {
                insert_run(tx, run, now, None)?;
            }
            Ok(now)
        })
        .await
    }

    async fn enqueue_audited(&self, runs: &[NewRun], audit: &NewAudit) -> Result<i64, StoreError> {
        let (runs, audit) = (runs.to_vec(), audit.clone());
        self.write(move |tx, ctx| {
            let now = ctx.now();
            for run in &runs {
                insert_run(tx, run, now, None)?;
            }
            super::auth::insert_audit(tx, now, &audit)?;
            Ok(now)
        })
        .await
    }

    async fn start_inline(
        &self,
        run: &NewRun,
        worker: &str,
        lease: Duration,
    ) -> Result<Started, StoreError> {
        let (run, worker) = (run.clone(), worker.to_owned());
        self.write(move |tx, ctx| {
            let now = ctx.now();
            insert_run(tx, &run, now, Some((&worker, lease)))?;
            Ok(Started {
                lease: Lease {
                    id: run.id,
                    fence: 1,
                },
                at: now,
            })
        })
        .await
    }

    async fn claim(
        &self,
        worker: &str,
        n: usize,
        lease: Duration,
        filter: &ClaimFilter,
    ) -> Result<Vec<Claimed>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let (worker, filter) = (worker.to_owned(), filter.clone());
        self.write(move |tx, ctx| {
            let now = ctx.now();
            Ok(claim_in(tx, &worker, n, now, plus(now, lease), &filter)?)
        })
        .await
    }

    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let leases = leases.to_vec();
        self.write(move |tx, ctx| {
            let until = plus(ctx.now(), lease);
            let mut stmt = tx.prepare_cached(
                "UPDATE runs SET lease_until = ?3 \
                 WHERE id = ?1 AND fence = ?2 AND state = 'running' RETURNING cancel_requested",
            )?;
            let mut out = Vec::with_capacity(leases.len());
            for l in &leases {
                let cancel: Option<i64> = stmt
                    .query_row(params![l.id, l.fence, until], |r| r.get(0))
                    .optional()?;
                out.push(match cancel {
                    None => LeaseStatus::Lost,
                    Some(0) => LeaseStatus::Held,
                    Some(_) => LeaseStatus::CancelRequested,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<bool, StoreError> {
        let (lease, finish) = (lease.clone(), finish.clone());
        let (outcome, exit) = end_json(&finish);
        self.write_dropping_secrets(true, move |tx, ctx| {
            if !guard_logs(tx, &lease, &finish.logs)? {
                return Ok((false, false));
            }
            let secret = has_secret_args(tx, &lease.id)?;
            insert_logs(tx, &lease, finish.attempt, &finish.logs)?;
            tx.prepare_cached(
                "UPDATE runs SET state = ?3, outcome = ?4, exit = ?5, finished_at = ?6, \
                    lease_until = NULL, secret_args = NULL, error = NULL, error_kind = NULL \
                 WHERE id = ?1 AND fence = ?2 AND state = 'running'",
            )?
            .execute(params![
                lease.id,
                lease.fence,
                finish.state.as_str(),
                outcome,
                exit,
                ctx.now()
            ])?;
            Ok((true, secret))
        })
        .await
        .map(|done| done.unwrap_or(false))
    }

    async fn retry(
        &self,
        lease: &Lease,
        finish: &Finish,
        delay: Duration,
        note: &RunError,
    ) -> Result<bool, StoreError> {
        let (lease, finish, note) = (lease.clone(), finish.clone(), note.clone());
        let (outcome, exit) = end_json(&finish);
        self.write(move |tx, ctx| {
            if !guard_logs(tx, &lease, &finish.logs)? {
                return Ok(false);
            }
            insert_logs(tx, &lease, finish.attempt, &finish.logs)?;
            let (kind, message) = error_cols(&note);
            tx.prepare_cached(
                "UPDATE runs SET state = 'queued', outcome = ?3, exit = ?4, available_at = ?5, \
                    lease_until = NULL, error = ?6, error_kind = ?7 \
                 WHERE id = ?1 AND fence = ?2 AND state = 'running'",
            )?
            .execute(params![
                lease.id,
                lease.fence,
                outcome,
                exit,
                plus(ctx.now(), delay),
                message,
                kind
            ])?;
            Ok(true)
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        let lease = lease.clone();
        self.write(move |tx, ctx| {
            let n = tx
                .prepare_cached(
                    "UPDATE runs SET state = 'queued', attempt = attempt - 1, lease_until = NULL, \
                        available_at = ?3, started_at = NULL \
                     WHERE id = ?1 AND fence = ?2 AND state = 'running'",
                )?
                .execute(params![lease.id, lease.fence, ctx.now()])?;
            Ok(n == 1)
        })
        .await
    }

    async fn expired(&self, limit: usize) -> Result<Vec<Expired>, StoreError> {
        let found = self
            .read(move |conn, ctx| {
                let rows = conn
                    .prepare_cached(
                        "SELECT id, fence, attempt, max_attempts, cancel_requested, inline \
                         FROM runs INDEXED BY runs_lease WHERE state = 'running' AND lease_until < ?1 \
                         ORDER BY lease_until LIMIT ?2",
                    )?
                    .query_map(params![ctx.now(), limit as i64], |r| {
                        Ok(Expired {
                            lease: Lease {
                                id: r.get(0)?,
                                fence: r.get(1)?,
                            },
                            attempt: count(r.get(2)?),
                            max_attempts: count(r.get(3)?),
                            cancel_requested: r.get::<_, i64>(4)? != 0,
                            inline: r.get::<_, i64>(5)? != 0,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        Ok(found.unwrap_or_default())
    }

    async fn settle(&self, expired: &Expired, verdict: &Verdict) -> Result<bool, StoreError> {
        let (lease, verdict) = (expired.lease.clone(), verdict.clone());
        self.write_dropping_secrets(true, move |tx, ctx| {
            let ends = !matches!(verdict, Verdict::Requeue(_));
            let (sql, note) = match &verdict {
                Verdict::Requeue(note) => (
                    "UPDATE runs SET state = 'queued', lease_until = NULL, available_at = ?3, \
                        error = ?4, error_kind = ?5 \
                     WHERE id = ?1 AND fence = ?2 AND state = 'running' AND lease_until < ?3",
                    note,
                ),
                Verdict::Fail(note) => (
                    "UPDATE runs SET state = 'failed', finished_at = ?3, lease_until = NULL, \
                        secret_args = NULL, error = ?4, error_kind = ?5 \
                     WHERE id = ?1 AND fence = ?2 AND state = 'running' AND lease_until < ?3",
                    note,
                ),
                Verdict::Cancel(note) => (
                    "UPDATE runs SET state = 'cancelled', finished_at = ?3, lease_until = NULL, \
                        secret_args = NULL, error = ?4, error_kind = ?5 \
                     WHERE id = ?1 AND fence = ?2 AND state = 'running' AND lease_until < ?3",
                    note,
                ),
            };
            let (kind, message) = error_cols(note);
            let secret = ends && has_secret_args(tx, &lease.id)?;
            let n = tx.prepare_cached(sql)?.execute(params![
                lease.id,
                lease.fence,
                ctx.now(),
                message,
                kind
            ])?;
            Ok((n == 1, secret && n == 1))
        })
        .await
        .map(|done| done.unwrap_or(false))
    }

    async fn record_logs(
        &self,
        lease: &Lease,
        attempt: u32,
        batch: &LogBatch,
    ) -> Result<bool, StoreError> {
        if batch.is_empty() {
            return Ok(true);
        }
        let (lease, batch) = (lease.clone(), batch.clone());
        self.write(move |tx, _| {
            if !guard_logs(tx, &lease, &batch)? {
                return Ok(false);
            }
            insert_logs(tx, &lease, attempt, &batch)?;
            Ok(true)
        })
        .await
    }

    async fn get_run(&self, id: &str) -> Result<RunLookup, StoreError> {
        let id = id.trim().to_ascii_lowercase();
        let found = self
            .read(move |conn, ctx| {
                let exact = conn
                    .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?
                    .query_row([&id], read_run)
                    .optional()?;
                if let Some(raw) = exact {
                    return Ok(RunLookup::Found(Box::new(raw.check(ctx.path)?)));
                }
                if id.len() < MIN_PREFIX {
                    return Ok(RunLookup::Missing);
                }
                let mut found = conn
                    .prepare_cached(&format!(
                        "SELECT {RUN_COLUMNS} FROM runs WHERE id >= ?1 AND id < ?1 || '~' LIMIT 2"
                    ))?
                    .query_map([&id], read_run)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                match found.len() {
                    0 => Ok(RunLookup::Missing),
                    1 => Ok(RunLookup::Found(Box::new(
                        found.pop().expect("one row").check(ctx.path)?,
                    ))),
                    _ => {
                        let count: i64 = conn
                            .prepare_cached(
                                "SELECT count(*) FROM (SELECT 1 FROM runs \
                                 WHERE id >= ?1 AND id < ?1 || '~' LIMIT ?2)",
                            )?
                            .query_row(params![id, AMBIGUITY_COUNT_LIMIT], |r| r.get(0))?;
                        Ok(RunLookup::Ambiguous {
                            count: count.max(0) as u64,
                        })
                    }
                }
            })
            .await?;
        Ok(found.unwrap_or(RunLookup::Missing))
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
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
            args.push(c.seq.into());
            let (at, seq) = (args.len() - 1, args.len());
            // The first conjunct lets the index range-scan.
            sql.push_str(&format!(
                " AND queued_at <= ?{at} AND (queued_at < ?{at} OR seq < ?{seq})"
            ));
        }
        let limit = filter.limit.max(1);
        sql.push_str(&format!(
            " ORDER BY queued_at DESC, seq DESC LIMIT {}",
            limit + 1
        ));
        let page = self
            .read(move |conn, ctx| {
                let mut raw = conn
                    .prepare_cached(&sql)?
                    .query_map(rusqlite::params_from_iter(args.iter()), read_run)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let next = (raw.len() > limit).then(|| {
                    raw.truncate(limit);
                    let last = raw.last().expect("limit is at least 1");
                    Cursor {
                        queued_at: last.queued_at,
                        seq: last.seq,
                    }
                });
                let runs = raw
                    .into_iter()
                    .map(|r| r.check(ctx.path).map_err(Fail::Store))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(RunPage { runs, next })
            })
            .await?;
        Ok(page.unwrap_or(RunPage {
            runs: Vec::new(),
            next: None,
        }))
    }

    async fn run_logs(
        &self,
        id: &str,
        attempt: u32,
        from_seq: u64,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let id = id.to_owned();
        let rows = self
            .read(move |conn, _| {
                Ok(conn
                    .prepare_cached(
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
                    .collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        Ok(rows.unwrap_or_default())
    }

    async fn cancel_queued(&self, id: &str, note: &RunError) -> Result<bool, StoreError> {
        let (id, note) = (id.to_owned(), note.clone());
        let done = self
            .write_dropping_secrets(false, move |tx, ctx| {
                let (kind, message) = error_cols(&note);
                let secret = has_secret_args(tx, &id)?;
                let n = tx
                    .prepare_cached(
                        "UPDATE runs SET state = 'cancelled', finished_at = ?2, secret_args = NULL, \
                            error = ?3, error_kind = ?4 WHERE id = ?1 AND state = 'queued'",
                    )?
                    .execute(params![id, ctx.now(), message, kind])?;
                Ok((n == 1, secret && n == 1))
            })
            .await?;
        Ok(done.unwrap_or(false))
    }

    async fn request_cancel(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let done = self
            .write_existing(move |tx, _| {
                let n = tx
                    .prepare_cached(
                        "UPDATE runs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
                    )?
                    .execute([id])?;
                Ok(n == 1)
            })
            .await?;
        Ok(done.unwrap_or(false))
    }

    async fn prune(&self, prune: &Prune) -> Result<u64, StoreError> {
        let Prune { older_than, keep } = *prune;
        if older_than.is_none() && keep.is_none() {
            return Ok(0);
        }
        let removed = self
            .write_existing(move |tx, ctx| {
                let cutoff = older_than.map(|d| {
                    ctx.now()
                        .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                });
                let n = tx.execute(
                    &format!(
                        "DELETE FROM runs WHERE id IN (SELECT id FROM (\
                            SELECT id, finished_at, ROW_NUMBER() OVER \
                                (PARTITION BY task ORDER BY queued_at DESC, seq DESC) AS n \
                            FROM runs WHERE state IN {TERMINAL}) AS ranked \
                         WHERE (?1 IS NULL OR n > ?1) AND (?2 IS NULL OR finished_at < ?2))"
                    ),
                    params![keep.map(|k| k.min(i64::MAX as u64) as i64), cutoff],
                )?;
                Ok(n as u64)
            })
            .await?;
        Ok(removed.unwrap_or(0))
    }

    async fn active(&self) -> Result<Active, StoreError> {
        let counts = self
            .read(|conn, ctx| {
                Ok(conn
                    .prepare_cached(
                        "SELECT \
                            (SELECT count(*) FROM runs WHERE state = 'queued' AND available_at <= ?1), \
                            (SELECT count(*) FROM runs WHERE state = 'queued' AND available_at > ?1), \
                            (SELECT count(*) FROM runs WHERE state = 'running')",
                    )?
                    .query_row([ctx.now()], |r| {
                        Ok(Active {
                            due: r.get::<_, i64>(0)?.max(0) as u64,
                            delayed: r.get::<_, i64>(1)?.max(0) as u64,
                            running: r.get::<_, i64>(2)?.max(0) as u64,
                        })
                    })?)
            })
            .await?;
        Ok(counts.unwrap_or_default())
    }

    async fn add_schedule(&self, s: &NewSchedule) -> Result<Schedule, StoreError> {
        let s = s.clone();
        self.write(move |tx, ctx| {
            let now = ctx.now();
            tx.execute(
                "INSERT INTO schedules (id, task, cron, args, secret_args, caller, next_fire_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    s.id,
                    s.task.as_str(),
                    s.cron,
                    to_json(&s.args),
                    s.secret_args.as_ref().map(to_json),
                    s.caller,
                    s.next_fire_at,
                    now
                ],
            )?;
            Ok(Schedule {
                id: s.id,
                task: s.task,
                cron: s.cron,
                args: s.args,
                caller: s.caller,
                next_fire_at: s.next_fire_at,
                created_at: now,
            })
        })
        .await
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let all = self
            .read(|conn, ctx| {
                read_schedules(
                    conn,
                    ctx,
                    "SELECT id, task, cron, args, caller, next_fire_at, created_at \
                     FROM schedules ORDER BY created_at, id",
                    [],
                )
            })
            .await?;
        Ok(all.unwrap_or_default())
    }

    async fn remove_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let done = self
            .write_existing(move |tx, _| {
                Ok(tx.execute("DELETE FROM schedules WHERE id = ?1", [id])? == 1)
            })
            .await?;
        Ok(done.unwrap_or(false))
    }

    async fn remove_schedules_of(&self, task: &TaskName) -> Result<u64, StoreError> {
        let task = task.clone();
        let done = self
            .write_existing(move |tx, _| {
                Ok(tx.execute("DELETE FROM schedules WHERE task = ?1", [task.as_str()])? as u64)
            })
            .await?;
        Ok(done.unwrap_or(0))
    }

    async fn beat_worker(&self, beat: &WorkerBeat) -> Result<(), StoreError> {
        let beat = beat.clone();
        self.write(move |tx, ctx| Ok(super::workers::beat(tx, ctx.now(), &beat)?))
            .await
    }

    async fn list_workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let all = self.read(super::workers::list).await?;
        Ok(all.unwrap_or_default())
    }

    async fn remove_worker(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let done = self
            .write_existing(move |tx, _| Ok(super::workers::remove(tx, &id)?))
            .await?;
        Ok(done.unwrap_or(false))
    }

    async fn due_schedules(&self) -> Result<Due, StoreError> {
        let due = self
            .read(|conn, ctx| {
                let now = ctx.now();
                // The unmasked arguments: the run a tick queues needs them.
                let schedules = read_schedules(
                    conn,
                    ctx,
                    "SELECT id, task, cron, COALESCE(secret_args, args), caller, next_fire_at, \
                        created_at \
                     FROM schedules WHERE next_fire_at <= ?1 ORDER BY next_fire_at, id",
                    [now],
                )?;
                let schedules = schedules
                    .into_iter()
                    .map(|s| DueSchedule {
                        id: s.id,
                        task: s.task,
                        cron: s.cron,
                        args: s.args,
                        caller: s.caller,
                        next_fire_at: s.next_fire_at,
                    })
                    .collect();
                Ok(Due { now, schedules })
            })
            .await?;
        match due {
            Some(due) => Ok(due),
            None => Ok(Due {
                now: self.inner.clock.now_ms(),
                schedules: Vec::new(),
            }),
        }
    }

    async fn fire(
        &self,
        due: &DueSchedule,
        next_fire_at: i64,
        run: Option<&NewRun>,
    ) -> Result<bool, StoreError> {
        let (id, at, run) = (due.id.clone(), due.next_fire_at, run.cloned());
        self.write(move |tx, ctx| {
            let advanced = tx
                .prepare_cached(
                    "UPDATE schedules SET next_fire_at = ?3 WHERE id = ?1 AND next_fire_at = ?2",
                )?
                .execute(params![id, at, next_fire_at])?
                == 1;
            if advanced && let Some(run) = &run {
                insert_run(tx, run, ctx.now(), None)?;
            }
            Ok(advanced)
        })
        .await
    }
    // Copying a store: `copy.rs`.

    async fn export_runs(
        &self,
        after: Option<ExportCursor>,
        limits: ExportLimits,
    ) -> Result<ExportPage, StoreError> {
        self.export_runs_in(after, limits).await
    }

    async fn import_runs(&self, runs: &[ExportedRun]) -> Result<ImportReport, StoreError> {
        self.import_runs_in(runs).await
    }

    async fn export_schedules(&self) -> Result<Vec<ExportedSchedule>, StoreError> {
        self.export_schedules_in().await
    }

    async fn import_schedules(
        &self,
        schedules: &[ExportedSchedule],
    ) -> Result<ImportReport, StoreError> {
        self.import_schedules_in(schedules).await
    }
}
