//! PostgreSQL implementation of [`RunStore`]: the same tables, guards and
//! keyset order as SQLite (`sqlite/runs.rs`), in PostgreSQL's dialect.
//!
//! What differs, because many machines share this database:
//! - **Claims** lock their candidates with `FOR UPDATE SKIP LOCKED`, so
//!   concurrent workers never wait on each other's rows. A task with a
//!   concurrency cap has its `tasks` row locked (`FOR UPDATE`, all of a
//!   claim's capped tasks at once, in name order so claimers cannot
//!   deadlock) before its running attempts are counted: the count and the
//!   take are serialised per capped task, exact with any number of claimers.
//! - **Time** is `task_executor.now_ms()` inside each statement: the
//!   database's clock.
//! - **Wake-up**: `enqueue` (and a schedule that fires) sends a coalesced
//!   `NOTIFY` after its commit.
//! - **Prune** deletes in batches of [`PRUNE_BATCH`] rows, one transaction
//!   each, so retention never holds long locks or bloats one transaction.

use std::time::Duration;

use serde_json::Value;
use tokio_postgres::Row;

use super::sql::{Param, Sql, p};
use super::{PgStore, SCHEMA, no_nul, to_json};
use crate::history::{Cursor, LogBatch, LogEntry, RunError, RunFilter, RunPage, RunRecord};
use crate::log::Stream;
use crate::store::StoreError;
use crate::store::contract::{
    Active, ClaimFilter, Claimed, Due, DueSchedule, Expired, ExportCursor, ExportLimits,
    ExportPage, ExportedRun, ExportedSchedule, FORGET_WORKERS_AFTER, Finish, ImportReport, Lease,
    LeaseStatus, MIN_PREFIX, NewAudit, NewRun, NewSchedule, Prune, RunLookup, RunStore, Schedule,
    Started, Verdict, WorkerBeat, WorkerRecord,
};
use crate::store::rows::RawRun;
use crate::store::rows::{read_tags, tags_json};
use crate::task::TaskName;

pub(super) const RUN_COLUMNS: &str = "id, task, args, caller, state, priority, attempt, max_attempts, worker, \
    cancel_requested, queued_at, available_at, started_at, finished_at, outcome, exit, error, \
    error_kind, log_cut_lines, log_cut_bytes, schedule_id, seq";

/// How many runs an ambiguous prefix is counted up to.
const AMBIGUITY_COUNT_LIMIT: i64 = 1000;

/// Rows one prune transaction deletes at most.
const PRUNE_BATCH: i64 = 1000;

pub(super) fn ms(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms1(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn dur(ms: Option<i64>) -> Option<Duration> {
    ms.map(|m| Duration::from_millis(m.max(0) as u64))
}

pub(super) fn count(n: i64) -> u32 {
    n.clamp(0, u32::MAX.into()) as u32
}

pub(super) fn read_run(r: &Row) -> RawRun {
    RawRun {
        id: r.get(0),
        task: r.get(1),
        args: r.get(2),
        caller: r.get(3),
        state: r.get(4),
        priority: r.get(5),
        attempt: r.get(6),
        max_attempts: r.get(7),
        worker: r.get(8),
        cancel_requested: i64::from(r.get::<_, bool>(9)),
        queued_at: r.get(10),
        available_at: r.get(11),
        started_at: r.get(12),
        finished_at: r.get(13),
        outcome: r.get(14),
        exit: r.get(15),
        error: r.get(16),
        error_kind: r.get(17),
        log_cut_lines: r.get(18),
        log_cut_bytes: r.get(19),
        schedule: r.get(20),
        seq: r.get(21),
    }
}

/// How many runs one `INSERT` carries (as arrays, one per column).
const INSERT_CHUNK: usize = 1000;

/// Inserts `runs` at the database's now, [`INSERT_CHUNK`] to a statement
/// (so a batch of 100 000 is a hundred round trips, not 100 000); with
/// `running` = (worker, lease) the first (only) run starts as an inline
/// attempt. Returns the time they were queued at.
async fn insert_runs(
    store: &PgStore,
    client: &impl Sql,
    runs: &[NewRun],
    running: Option<(&str, Duration)>,
) -> Result<i64, StoreError> {
    let fail = |e| store.fail(e);
    let now: i64 = client
        .one("SELECT task_executor.now_ms()", &[])
        .await
        .map_err(fail)?
        .get(0);
    let (state, attempt, fence, worker, lease, started) = match running {
        Some((worker, lease)) => (
            "running",
            1i64,
            1i64,
            Some(worker),
            Some(now.saturating_add(ms1(lease))),
            Some(now),
        ),
        None => ("queued", 0, 0, None, None, None),
    };
    let sql = format!(
        "INSERT INTO {SCHEMA}.runs (id, task, args, secret_args, caller, priority, \
                max_attempts, timeout_ms, backoff_ms, retry_on_status, available_at, \
                schedule_id, task_rev, state, attempt, fence, worker, lease_until, queued_at, \
                started_at, inline) \
         SELECT u.*, $14, $15, $16, $17, $18, $19, $20, $21 \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                     $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::bool[], \
                     $11::int8[], $12::text[], $13::text[]) AS u"
    );
    for chunk in runs.chunks(INSERT_CHUNK) {
        let col = |f: fn(&NewRun) -> String| chunk.iter().map(f).collect::<Vec<_>>();
        let opt = |f: fn(&NewRun) -> Option<String>| chunk.iter().map(f).collect::<Vec<_>>();
        let int = |f: fn(&NewRun) -> i64| chunk.iter().map(f).collect::<Vec<_>>();
        let ids = col(|r| r.id.clone());
        let tasks = col(|r| r.task.as_str().to_owned());
        let args = col(|r| to_json(&r.args));
        let secret = opt(|r| r.secret_args.as_ref().map(to_json));
        let callers = col(|r| no_nul(&r.caller).into_owned());
        let priority = int(|r| r.priority);
        let max_attempts = int(|r| i64::from(r.max_attempts));
        let timeout: Vec<Option<i64>> = chunk.iter().map(|r| ms(r.timeout)).collect();
        let backoff: Vec<Option<i64>> = chunk.iter().map(|r| ms(r.backoff)).collect();
        let retry: Vec<bool> = chunk.iter().map(|r| r.retry_on_status).collect();
        let available: Vec<i64> = chunk.iter().map(|r| r.available.resolve(now)).collect();
        let schedule = opt(|r| r.schedule.clone());
        let rev = opt(|r| r.task_rev.clone());
        client
            .exec(
                &sql,
                &[
                    p(&ids),
                    p(&tasks),
                    p(&args),
                    p(&secret),
                    p(&callers),
                    p(&priority),
                    p(&max_attempts),
                    p(&timeout),
                    p(&backoff),
                    p(&retry),
                    p(&available),
                    p(&schedule),
                    p(&rev),
                    p(&state),
                    p(&attempt),
                    p(&fence),
                    p(&worker),
                    p(&lease),
                    p(&now),
                    p(&started),
                    p(&running.is_some()),
                ],
            )
            .await
            .map_err(fail)?;
    }
    Ok(now)
}

/// The guard every write about an attempt starts with (it also records how
/// much of the log was cut): the run's row, locked, if `lease` still holds.
async fn guard_logs(
    store: &PgStore,
    client: &impl Sql,
    lease: &Lease,
    batch: &LogBatch,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE {SCHEMA}.runs SET log_cut_lines = $3, log_cut_bytes = $4 \
             WHERE id = $1 AND fence = $2 AND state = 'running'"
    );
    let n = client
        .exec(
            &sql,
            &[
                p(&lease.id),
                p(&lease.fence),
                p(&(batch.cut_lines as i64)),
                p(&(batch.cut_bytes as i64)),
            ],
        )
        .await
        .map_err(|e| store.fail(e))?;
    Ok(n == 1)
}

/// Stores `batch` for an attempt whose row the caller's guard has locked.
async fn insert_logs(
    store: &PgStore,
    client: &impl Sql,
    lease: &Lease,
    attempt: u32,
    batch: &LogBatch,
) -> Result<(), StoreError> {
    let fail = |e| store.fail(e);
    let attempt = i64::from(attempt);
    if let Some((from, to)) = batch.delete {
        client
            .exec(
                &format!(
                    "DELETE FROM {SCHEMA}.run_logs \
                     WHERE run_id = $1 AND attempt = $2 AND seq >= $3 AND seq < $4"
                ),
                &[
                    p(&lease.id),
                    p(&attempt),
                    p(&(from as i64)),
                    p(&(to as i64)),
                ],
            )
            .await
            .map_err(fail)?;
    }
    if batch.lines.is_empty() {
        return Ok(());
    }
    // One statement for the whole batch. A batch may be sent again after a
    // call whose outcome was unknown: lines already stored are kept.
    let mut seqs = Vec::with_capacity(batch.lines.len());
    let mut streams = Vec::with_capacity(batch.lines.len());
    let mut lines = Vec::with_capacity(batch.lines.len());
    let mut cut = Vec::with_capacity(batch.lines.len());
    for l in &batch.lines {
        seqs.push(l.seq as i64);
        streams.push(match l.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        });
        lines.push(no_nul(&l.text).into_owned());
        cut.push(l.truncated);
    }
    let sql = format!(
        "INSERT INTO {SCHEMA}.run_logs (run_id, attempt, seq, stream, line, truncated) \
             SELECT $1, $2, * FROM unnest($3::bigint[], $4::text[], $5::text[], $6::bool[]) \
             ON CONFLICT (run_id, attempt, seq) DO NOTHING"
    );
    client
        .exec(
            &sql,
            &[
                p(&lease.id),
                p(&attempt),
                p(&seqs),
                p(&streams),
                p(&lines),
                p(&cut),
            ],
        )
        .await
        .map_err(fail)?;
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

fn schedule_of(store: &PgStore, r: &Row) -> Result<Schedule, StoreError> {
    let id: String = r.get(0);
    let corrupt = |m: String| store.corrupt("schedule", id.clone(), m);
    let task: String = r.get(1);
    let args: String = r.get(3);
    Ok(Schedule {
        task: TaskName::new(task).map_err(|e| corrupt(e.to_string()))?,
        args: serde_json::from_str(&args)
            .map_err(|e| corrupt(format!("args is not valid JSON: {e}")))?,
        cron: r.get(2),
        caller: r.get(4),
        next_fire_at: r.get(5),
        created_at: r.get(6),
        id,
    })
}

impl PgStore {
    pub(super) fn check(&self, raw: RawRun) -> Result<RunRecord, StoreError> {
        raw.check(std::path::Path::new(&self.inner.shown))
    }

    /// A connection for a write that needs the schema to exist already:
    /// `None` (nothing done, nothing created) when it does not.
    async fn existing(&self) -> Result<Option<deadpool_postgres::Object>, StoreError> {
        self.conn(false).await
    }
}

impl RunStore for PgStore {
    async fn now(&self) -> Result<i64, StoreError> {
        let client = self.write_conn().await?;
        let row = client
            .one("SELECT task_executor.now_ms()", &[])
            .await
            .map_err(|e| self.fail(e))?;
        Ok(row.get(0))
    }

    async fn enqueue(&self, runs: &[NewRun]) -> Result<i64, StoreError> {
        let mut client = self.write_conn().await?;
        let tx = self.begin(&mut client).await?;
        let now = insert_runs(self, &tx, runs, None).await?;
        tx.commit().await.map_err(|e| self.fail(e))?;
        if !runs.is_empty() {
            self.notify_work(&client).await;
        }
        Ok(now)
    }

    async fn enqueue_audited(&self, runs: &[NewRun], audit: &NewAudit) -> Result<i64, StoreError> {
        let mut client = self.write_conn().await?;
        let tx = self.begin(&mut client).await?;
        let now = insert_runs(self, &tx, runs, None).await?;
        super::auth::insert_audit(&tx, audit)
            .await
            .map_err(|e| self.fail(e))?;
        tx.commit().await.map_err(|e| self.fail(e))?;
        if !runs.is_empty() {
            self.notify_work(&client).await;
        }
        Ok(now)
    }

    async fn start_inline(
        &self,
        run: &NewRun,
        worker: &str,
        lease: Duration,
    ) -> Result<Started, StoreError> {
        let client = self.write_conn().await?;
        let at = insert_runs(
            self,
            &client,
            std::slice::from_ref(run),
            Some((worker, lease)),
        )
        .await?;
        Ok(Started {
            lease: Lease {
                id: run.id.clone(),
                fence: 1,
            },
            at,
        })
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
        let fail = |e| self.fail(e);
        let mut client = self.write_conn().await?;
        let tx = self.begin(&mut client).await?;
        // Candidates, locked; rows another claimer holds are skipped, and
        // tasks already at their cap are left out.
        let pick = format!(
            // The task's tags and cap are checked in scalar subqueries,
            // not a join: the planner then walks `runs_claim` in order
            // and stops at the limit, where a join made it read and sort
            // every queued run (300 ms a claim with 100 000 queued).
            "SELECT r.id, r.task, \
                    (SELECT t.concurrency FROM {SCHEMA}.tasks t WHERE t.name = r.task) \
                 FROM {SCHEMA}.runs r \
                 WHERE r.state = 'queued' AND r.available_at <= task_executor.now_ms() \
                   AND NOT (r.task = ANY($2)) AND r.task <> ALL($4) \
                   AND (SELECT (t.tags IS NULL OR t.tags::jsonb <@ to_jsonb($3::text[])) \
                          AND (t.concurrency IS NULL OR t.concurrency > \
                               (SELECT count(*) FROM {SCHEMA}.runs x \
                                WHERE x.task = r.task AND x.state = 'running')) \
                        FROM {SCHEMA}.tasks t WHERE t.name = r.task) IS NOT FALSE \
                 ORDER BY r.priority DESC, r.available_at, r.seq \
                 LIMIT $1 FOR UPDATE OF r SKIP LOCKED"
        );
        let lock_tasks = format!(
            "SELECT name FROM {SCHEMA}.tasks WHERE name = ANY($1) ORDER BY name FOR UPDATE"
        );
        let count_running = format!(
            "SELECT t.name, t.concurrency - (SELECT count(*) FROM {SCHEMA}.runs x \
                    WHERE x.task = t.name AND x.state = 'running') \
                 FROM {SCHEMA}.tasks t WHERE t.name = ANY($1)"
        );
        let exclude: Vec<&str> = filter.exclude.iter().map(|t| t.as_str()).collect();
        let mut ids: Vec<String> = Vec::with_capacity(n);
        // Room left under each capped task's cap, once its row is locked.
        let mut room: std::collections::HashMap<String, i64> = Default::default();
        // A capped task's runs can crowd a page of candidates: a few rounds,
        // each leaving out the tasks found full.
        for _ in 0..3 {
            let full: Vec<&str> = room
                .iter()
                .filter(|(_, left)| **left <= 0)
                .map(|(t, _)| t.as_str())
                .collect();
            let want = n - ids.len();
            let candidates = tx
                .rows(
                    &pick,
                    &[
                        p(&((want * 2 + 8) as i64)),
                        p(&full),
                        p(&filter.tags),
                        p(&exclude),
                    ],
                )
                .await
                .map_err(fail)?;
            let mut capped: Vec<String> = candidates
                .iter()
                .filter(|r| r.get::<_, Option<i64>>(2).is_some())
                .map(|r| r.get::<_, String>(1))
                .filter(|t| !room.contains_key(t))
                .collect();
            capped.sort();
            capped.dedup();
            if !capped.is_empty() {
                // Lock first, count after, in a statement of its own: its
                // snapshot then sees every claim committed before the lock.
                tx.rows(&lock_tasks, &[p(&capped)]).await.map_err(fail)?;
                for r in tx.rows(&count_running, &[p(&capped)]).await.map_err(fail)? {
                    room.insert(r.get(0), r.get(1));
                }
            }
            let mut skipped = false;
            for c in &candidates {
                if ids.len() == n {
                    break;
                }
                let task: String = c.get(1);
                if c.get::<_, Option<i64>>(2).is_some() {
                    let left = room.entry(task).or_insert(0);
                    if *left <= 0 {
                        skipped = true;
                        continue;
                    }
                    *left -= 1;
                }
                ids.push(c.get::<_, String>(0));
            }
            if ids.len() == n || !skipped || candidates.is_empty() {
                break;
            }
        }
        let mut claimed = Vec::with_capacity(ids.len());
        if !ids.is_empty() {
            let take = format!(
                "UPDATE {SCHEMA}.runs SET state = 'running', attempt = attempt + 1, \
                        fence = fence + 1, worker = $2, \
                        lease_until = task_executor.now_ms() + $3, \
                        started_at = task_executor.now_ms(), finished_at = NULL, \
                        cancel_requested = false, log_cut_lines = 0, log_cut_bytes = 0 \
                     WHERE id = ANY($1) AND state = 'queued' \
                     RETURNING id, task, COALESCE(secret_args, args), caller, attempt, \
                        max_attempts, fence, timeout_ms, backoff_ms, retry_on_status, task_rev, \
                        priority, available_at, seq"
            );
            let mut rows = tx
                .rows(&take, &[p(&ids), p(&worker), p(&ms1(lease))])
                .await
                .map_err(fail)?;
            // In claim order: priority, then age, then insertion.
            rows.sort_by_key(|r| {
                (
                    std::cmp::Reverse(r.get::<_, i64>(11)),
                    r.get::<_, i64>(12),
                    r.get::<_, i64>(13),
                )
            });
            for r in rows {
                let Ok(task) = TaskName::new(r.get::<_, String>(1)) else {
                    continue;
                };
                let args: String = r.get(2);
                claimed.push(Claimed {
                    id: r.get(0),
                    task,
                    args: serde_json::from_str(&args).unwrap_or(Value::Null),
                    caller: r.get(3),
                    attempt: count(r.get(4)),
                    max_attempts: count(r.get(5)).max(1),
                    fence: r.get(6),
                    timeout: dur(r.get(7)),
                    backoff: dur(r.get(8)),
                    retry_on_status: r.get(9),
                    task_rev: r.get(10),
                });
            }
        }
        tx.commit().await.map_err(fail)?;
        Ok(claimed)
    }

    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let fail = |e| self.fail(e);
        let client = self.write_conn().await?;
        let ids: Vec<&str> = leases.iter().map(|l| l.id.as_str()).collect();
        let fences: Vec<i64> = leases.iter().map(|l| l.fence).collect();
        let sql = format!(
            "UPDATE {SCHEMA}.runs r SET lease_until = task_executor.now_ms() + $3 \
                 FROM unnest($1::text[], $2::bigint[]) AS l(id, fence) \
                 WHERE r.id = l.id AND r.fence = l.fence AND r.state = 'running' \
                 RETURNING r.id, r.fence, r.cancel_requested"
        );
        let rows = client
            .rows(&sql, &[p(&ids), p(&fences), p(&ms1(lease))])
            .await
            .map_err(fail)?;
        let held: std::collections::HashMap<(String, i64), bool> = rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        Ok(leases
            .iter()
            .map(|l| match held.get(&(l.id.clone(), l.fence)) {
                None => LeaseStatus::Lost,
                Some(false) => LeaseStatus::Held,
                Some(true) => LeaseStatus::CancelRequested,
            })
            .collect())
    }

    async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<bool, StoreError> {
        let fail = |e| self.fail(e);
        let (outcome, exit) = end_json(finish);
        let mut client = self.write_conn().await?;
        let tx = self.begin(&mut client).await?;
        if !guard_logs(self, &tx, lease, &finish.logs).await? {
            return Ok(false);
        }
        insert_logs(self, &tx, lease, finish.attempt, &finish.logs).await?;
        let sql = format!(
            "UPDATE {SCHEMA}.runs SET state = $3, outcome = $4, exit = $5, \
                    finished_at = task_executor.now_ms(), lease_until = NULL, secret_args = NULL, \
                    error = NULL, error_kind = NULL \
                 WHERE id = $1 AND fence = $2 AND state = 'running'"
        );
        tx.exec(
            &sql,
            &[
                p(&lease.id),
                p(&lease.fence),
                p(&finish.state.as_str()),
                p(&no_nul(&outcome)),
                p(&exit),
            ],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(true)
    }

    async fn retry(
        &self,
        lease: &Lease,
        finish: &Finish,
        delay: Duration,
        note: &RunError,
    ) -> Result<bool, StoreError> {
        let fail = |e| self.fail(e);
        let (outcome, exit) = end_json(finish);
        let mut client = self.write_conn().await?;
        let tx = self.begin(&mut client).await?;
        if !guard_logs(self, &tx, lease, &finish.logs).await? {
            return Ok(false);
        }
        insert_logs(self, &tx, lease, finish.attempt, &finish.logs).await?;
        tx.exec(
            &format!(
                "UPDATE {SCHEMA}.runs SET state = 'queued', outcome = $3, exit = $4, \
                    available_at = task_executor.now_ms() + $5, lease_until = NULL, \
                    error = $6, error_kind = $7 \
                 WHERE id = $1 AND fence = $2 AND state = 'running'"
            ),
            &[
                p(&lease.id),
                p(&lease.fence),
                p(&no_nul(&outcome)),
                p(&exit),
                p(&ms1(delay)),
                p(&no_nul(&note.message)),
                p(&note.kind),
            ],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(true)
    }

    async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        let client = self.write_conn().await?;
        let n = client
            .exec(
                &format!(
                    "UPDATE {SCHEMA}.runs SET state = 'queued', attempt = attempt - 1, \
                        lease_until = NULL, available_at = task_executor.now_ms(), \
                        started_at = NULL \
                     WHERE id = $1 AND fence = $2 AND state = 'running'"
                ),
                &[p(&lease.id), p(&lease.fence)],
            )
            .await
            .map_err(|e| self.fail(e))?;
        if n == 1 {
            self.notify_work(&client).await;
        }
        Ok(n == 1)
    }

    async fn expired(&self, limit: usize) -> Result<Vec<Expired>, StoreError> {
        let Some(client) = self.existing().await? else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT id, fence, attempt, max_attempts, cancel_requested, inline \
                 FROM {SCHEMA}.runs \
                 WHERE state = 'running' AND lease_until < task_executor.now_ms() \
                 ORDER BY lease_until LIMIT $1"
        );
        let rows = client
            .rows(&sql, &[p(&(limit as i64))])
            .await
            .map_err(|e| self.fail(e))?;
        Ok(rows
            .iter()
            .map(|r| Expired {
                lease: Lease {
                    id: r.get(0),
                    fence: r.get(1),
                },
                attempt: count(r.get(2)),
                max_attempts: count(r.get(3)),
                cancel_requested: r.get(4),
                inline: r.get(5),
            })
            .collect())
    }

    async fn settle(&self, expired: &Expired, verdict: &Verdict) -> Result<bool, StoreError> {
        let (set, note) = match verdict {
            Verdict::Requeue(note) => (
                "state = 'queued', lease_until = NULL, available_at = task_executor.now_ms()",
                note,
            ),
            Verdict::Fail(note) => (
                "state = 'failed', finished_at = task_executor.now_ms(), lease_until = NULL, \
                 secret_args = NULL",
                note,
            ),
            Verdict::Cancel(note) => (
                "state = 'cancelled', finished_at = task_executor.now_ms(), lease_until = NULL, \
                 secret_args = NULL",
                note,
            ),
        };
        let client = self.write_conn().await?;
        let n = client
            .exec(
                &format!(
                    "UPDATE {SCHEMA}.runs SET {set}, error = $3, error_kind = $4 \
                     WHERE id = $1 AND fence = $2 AND state = 'running' \
                       AND lease_until < task_executor.now_ms()"
                ),
                &[
                    p(&expired.lease.id),
                    p(&expired.lease.fence),
                    p(&no_nul(&note.message)),
                    p(&note.kind),
                ],
            )
            .await
            .map_err(|e| self.fail(e))?;
        if n == 1 && matches!(verdict, Verdict::Requeue(_)) {
            self.notify_work(&client).await;
        }
        Ok(n == 1)
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
        let fail = |e| self.fail(e);
        let mut client = self.write_conn().await?;
        let tx = self.begin(&mut client).await?;
        if !guard_logs(self, &tx, lease, batch).await? {
            return Ok(false);
        }
        insert_logs(self, &tx, lease, attempt, batch).await?;
        tx.commit().await.map_err(fail)?;
        Ok(true)
    }

    async fn get_run(&self, id: &str) -> Result<RunLookup, StoreError> {
        let id = id.trim().to_ascii_lowercase();
        let Some(client) = self.existing().await? else {
            return Ok(RunLookup::Missing);
        };
        let fail = |e| self.fail(e);
        let exact = client
            .opt(
                &format!("SELECT {RUN_COLUMNS} FROM {SCHEMA}.runs WHERE id = $1"),
                &[p(&id)],
            )
            .await
            .map_err(fail)?;
        if let Some(r) = exact {
            return Ok(RunLookup::Found(Box::new(self.check(read_run(&r))?)));
        }
        if id.len() < MIN_PREFIX {
            return Ok(RunLookup::Missing);
        }
        let hi = format!("{id}~");
        let mut found = client
            .rows(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM {SCHEMA}.runs \
                     WHERE id >= $1 AND id < $2 COLLATE \"C\" LIMIT 2"
                ),
                &[p(&id), p(&hi)],
            )
            .await
            .map_err(fail)?;
        match found.len() {
            0 => Ok(RunLookup::Missing),
            1 => Ok(RunLookup::Found(Box::new(
                self.check(read_run(&found.pop().expect("one row")))?,
            ))),
            _ => {
                let n: i64 = client
                    .one(
                        &format!(
                            "SELECT count(*) FROM (SELECT 1 FROM {SCHEMA}.runs \
                             WHERE id >= $1 AND id < $2 COLLATE \"C\" LIMIT $3) x"
                        ),
                        &[p(&id), p(&hi), p(&AMBIGUITY_COUNT_LIMIT)],
                    )
                    .await
                    .map_err(fail)?
                    .get(0);
                Ok(RunLookup::Ambiguous {
                    count: n.max(0) as u64,
                })
            }
        }
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        let empty = RunPage {
            runs: Vec::new(),
            next: None,
        };
        let Some(client) = self.existing().await? else {
            return Ok(empty);
        };
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM {SCHEMA}.runs WHERE true");
        let task = filter.task.as_ref().map(|t| t.as_str().to_owned());
        let state = filter.state.map(|s| s.as_str());
        let mut params: Vec<Param> = Vec::new();
        if let Some(task) = &task {
            params.push(p(task));
            sql.push_str(&format!(" AND task = ${}", params.len()));
        }
        if let Some(state) = &state {
            params.push(p(state));
            sql.push_str(&format!(" AND state = ${}", params.len()));
        }
        if let Some(since) = &filter.since {
            params.push(p(since));
            sql.push_str(&format!(" AND queued_at >= ${}", params.len()));
        }
        if let Some(c) = &filter.after {
            params.push(p(&c.queued_at));
            params.push(p(&c.seq));
            let (at, seq) = (params.len() - 1, params.len());
            sql.push_str(&format!(" AND (queued_at, seq) < (${at}, ${seq})"));
        }
        let limit = filter.limit.max(1);
        sql.push_str(&format!(
            " ORDER BY queued_at DESC, seq DESC LIMIT {}",
            limit + 1
        ));
        let rows = client.rows(&sql, &params).await.map_err(|e| self.fail(e))?;
        let mut raw: Vec<RawRun> = rows.iter().map(read_run).collect();
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
            .map(|r| self.check(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RunPage { runs, next })
    }

    async fn run_logs(
        &self,
        id: &str,
        attempt: u32,
        from_seq: u64,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let Some(client) = self.existing().await? else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT seq, stream, line, truncated FROM {SCHEMA}.run_logs \
                 WHERE run_id = $1 AND attempt = $2 AND seq >= $3 ORDER BY seq"
        );
        let rows = client
            .rows(
                &sql,
                &[p(&id), p(&i64::from(attempt)), p(&(from_seq as i64))],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(rows
            .iter()
            .map(|r| LogEntry {
                seq: r.get::<_, i64>(0).max(0) as u64,
                stream: if r.get::<_, &str>(1) == "stderr" {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                text: r.get(2),
                truncated: r.get(3),
            })
            .collect())
    }

    async fn cancel_queued(&self, id: &str, note: &RunError) -> Result<bool, StoreError> {
        let Some(client) = self.existing().await? else {
            return Ok(false);
        };
        let n = client
            .exec(
                &format!(
                    "UPDATE {SCHEMA}.runs SET state = 'cancelled', \
                        finished_at = task_executor.now_ms(), secret_args = NULL, \
                        error = $2, error_kind = $3 \
                     WHERE id = $1 AND state = 'queued'"
                ),
                &[p(&id), p(&no_nul(&note.message)), p(&note.kind)],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(n == 1)
    }

    async fn request_cancel(&self, id: &str) -> Result<bool, StoreError> {
        let Some(client) = self.existing().await? else {
            return Ok(false);
        };
        let n = client
            .exec(
                &format!(
                    "UPDATE {SCHEMA}.runs SET cancel_requested = true \
                     WHERE id = $1 AND state = 'running'"
                ),
                &[p(&id)],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(n == 1)
    }

    async fn prune(&self, prune: &Prune) -> Result<u64, StoreError> {
        let Prune { older_than, keep } = *prune;
        if older_than.is_none() && keep.is_none() {
            return Ok(0);
        }
        let Some(client) = self.existing().await? else {
            return Ok(0);
        };
        let keep = keep.map(|k| k.min(i64::MAX as u64) as i64);
        let age = older_than.map(ms1);
        let sql = format!(
            "DELETE FROM {SCHEMA}.runs WHERE id IN (\
                SELECT id FROM (\
                    SELECT id, finished_at, ROW_NUMBER() OVER \
                        (PARTITION BY task ORDER BY queued_at DESC, seq DESC) AS n \
                    FROM {SCHEMA}.runs WHERE state IN ('completed', 'failed', 'cancelled')) ranked \
                WHERE ($1::bigint IS NULL OR n > $1) \
                  AND ($2::bigint IS NULL OR finished_at < task_executor.now_ms() - $2) \
                LIMIT $3)"
        );
        let mut total = 0;
        loop {
            let n = client
                .exec(&sql, &[p(&keep), p(&age), p(&PRUNE_BATCH)])
                .await
                .map_err(|e| self.fail(e))?;
            total += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    async fn active(&self) -> Result<Active, StoreError> {
        let Some(client) = self.existing().await? else {
            return Ok(Active::default());
        };
        let row = client
            .one(
                &format!(
                    "SELECT \
                        count(*) FILTER (WHERE state = 'queued' AND available_at <= now_ms), \
                        count(*) FILTER (WHERE state = 'queued' AND available_at > now_ms), \
                        count(*) FILTER (WHERE state = 'running') \
                     FROM {SCHEMA}.runs, (SELECT task_executor.now_ms() AS now_ms) t \
                     WHERE state IN ('queued', 'running')"
                ),
                &[],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(Active {
            due: row.get::<_, i64>(0).max(0) as u64,
            delayed: row.get::<_, i64>(1).max(0) as u64,
            running: row.get::<_, i64>(2).max(0) as u64,
        })
    }

    async fn add_schedule(&self, s: &NewSchedule) -> Result<Schedule, StoreError> {
        let client = self.write_conn().await?;
        let row = client
            .one(
                &format!(
                    "INSERT INTO {SCHEMA}.schedules \
                        (id, task, cron, args, secret_args, caller, next_fire_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, task_executor.now_ms()) \
                     RETURNING created_at"
                ),
                &[
                    p(&s.id),
                    p(&s.task.as_str()),
                    p(&s.cron),
                    p(&to_json(&s.args)),
                    p(&s.secret_args.as_ref().map(to_json)),
                    p(&no_nul(&s.caller)),
                    p(&s.next_fire_at),
                ],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(Schedule {
            id: s.id.clone(),
            task: s.task.clone(),
            cron: s.cron.clone(),
            args: s.args.clone(),
            caller: s.caller.clone(),
            next_fire_at: s.next_fire_at,
            created_at: row.get(0),
        })
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let Some(client) = self.existing().await? else {
            return Ok(Vec::new());
        };
        let rows = client
            .rows(
                &format!(
                    "SELECT id, task, cron, args, caller, next_fire_at, created_at \
                     FROM {SCHEMA}.schedules ORDER BY created_at, id"
                ),
                &[],
            )
            .await
            .map_err(|e| self.fail(e))?;
        rows.iter().map(|r| schedule_of(self, r)).collect()
    }

    async fn remove_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let Some(client) = self.existing().await? else {
            return Ok(false);
        };
        let n = client
            .exec(
                &format!("DELETE FROM {SCHEMA}.schedules WHERE id = $1"),
                &[p(&id)],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(n == 1)
    }

    async fn remove_schedules_of(&self, task: &TaskName) -> Result<u64, StoreError> {
        let Some(client) = self.existing().await? else {
            return Ok(0);
        };
        client
            .exec(
                &format!("DELETE FROM {SCHEMA}.schedules WHERE task = $1"),
                &[p(&task.as_str())],
            )
            .await
            .map_err(|e| self.fail(e))
    }

    async fn due_schedules(&self) -> Result<Due, StoreError> {
        let Some(client) = self.existing().await? else {
            return Ok(Due {
                now: crate::history::now_ms(),
                schedules: Vec::new(),
            });
        };
        let fail = |e| self.fail(e);
        let now: i64 = client
            .one("SELECT task_executor.now_ms()", &[])
            .await
            .map_err(fail)?
            .get(0);
        // The unmasked arguments: the run a tick queues needs them.
        let rows = client
            .rows(
                &format!(
                    "SELECT id, task, cron, COALESCE(secret_args, args), caller, next_fire_at, \
                        created_at \
                     FROM {SCHEMA}.schedules WHERE next_fire_at <= $1 ORDER BY next_fire_at, id"
                ),
                &[p(&now)],
            )
            .await
            .map_err(fail)?;
        let schedules = rows
            .iter()
            .map(|r| {
                schedule_of(self, r).map(|s| DueSchedule {
                    id: s.id,
                    task: s.task,
                    cron: s.cron,
                    args: s.args,
                    caller: s.caller,
                    next_fire_at: s.next_fire_at,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Due { now, schedules })
    }

    async fn fire(
        &self,
        due: &DueSchedule,
        next_fire_at: i64,
        run: Option<&NewRun>,
    ) -> Result<bool, StoreError> {
        let fail = |e| self.fail(e);
        let mut client = self.write_conn().await?;
        let tx = self.begin(&mut client).await?;
        let advanced = tx
            .exec(
                &format!(
                    "UPDATE {SCHEMA}.schedules SET next_fire_at = $3 \
                     WHERE id = $1 AND next_fire_at = $2"
                ),
                &[p(&due.id), p(&due.next_fire_at), p(&next_fire_at)],
            )
            .await
            .map_err(fail)?
            == 1;
        if advanced && let Some(run) = run {
            insert_runs(self, &tx, std::slice::from_ref(run), None).await?;
        }
        tx.commit().await.map_err(fail)?;
        if advanced && run.is_some() {
            self.notify_work(&client).await;
        }
        Ok(advanced)
    }

    async fn beat_worker(&self, beat: &WorkerBeat) -> Result<(), StoreError> {
        let fail = |e| self.fail(e);
        let mut client = self.write_conn().await?;
        let tx = self.begin(&mut client).await?;
        tx.exec(
            &format!("DELETE FROM {SCHEMA}.workers WHERE last_seen < task_executor.now_ms() - $1"),
            &[p(&ms1(FORGET_WORKERS_AFTER))],
        )
        .await
        .map_err(fail)?;
        // `started_at` stays that of the row's process; an id reused by
        // another process (a restart with the same `--id`) starts again.
        let sql = format!(
            "INSERT INTO {SCHEMA}.workers AS w (id, host, pid, tags, concurrency, running, \
                    lease_ms, started_at, last_seen) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, task_executor.now_ms(), \
                    task_executor.now_ms()) \
                 ON CONFLICT (id) DO UPDATE SET \
                    started_at = CASE WHEN w.host = excluded.host AND w.pid = excluded.pid \
                        THEN w.started_at ELSE excluded.started_at END, \
                    host = excluded.host, pid = excluded.pid, tags = excluded.tags, \
                    concurrency = excluded.concurrency, running = excluded.running, \
                    lease_ms = excluded.lease_ms, last_seen = excluded.last_seen"
        );
        tx.exec(
            &sql,
            &[
                p(&beat.id),
                p(&no_nul(&beat.host)),
                p(&i64::from(beat.pid)),
                p(&tags_json(&beat.tags)),
                p(&i64::from(beat.concurrency)),
                p(&i64::from(beat.running)),
                p(&ms1(beat.lease)),
            ],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(())
    }

    async fn list_workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let Some(client) = self.existing().await? else {
            return Ok(Vec::new());
        };
        let rows = client
            .rows(
                &format!(
                    "SELECT id, host, pid, tags, concurrency, running, lease_ms, started_at, \
                        last_seen FROM {SCHEMA}.workers ORDER BY started_at, id"
                ),
                &[],
            )
            .await
            .map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|r| {
                let id: String = r.get(0);
                let tags = read_tags(r.get::<_, Option<&str>>(3))
                    .map_err(|m| self.corrupt("worker", id.clone(), m))?;
                Ok(WorkerRecord {
                    id,
                    host: r.get(1),
                    pid: count(r.get(2)),
                    tags,
                    concurrency: count(r.get(4)),
                    running: count(r.get(5)),
                    lease_ms: r.get(6),
                    started_at: r.get(7),
                    last_seen: r.get(8),
                })
            })
            .collect()
    }

    async fn remove_worker(&self, id: &str) -> Result<bool, StoreError> {
        let Some(client) = self.existing().await? else {
            return Ok(false);
        };
        let n = client
            .exec(
                &format!("DELETE FROM {SCHEMA}.workers WHERE id = $1"),
                &[p(&id)],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(n == 1)
    }

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
