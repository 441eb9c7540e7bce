//! SQLite side of copying a store (`store copy`): tasks, runs with their
//! log lines, and schedules, read whole (`export_*`) and written in one
//! transaction per batch (`import_*`), as the contract says.
//!
//! Plain SQL that PostgreSQL also speaks: a lookup by key, a plain
//! `INSERT`, and `(SELECT coalesce(max(seq), 0) + 1 FROM runs)` in each
//! run's `INSERT`, which gives imported runs the next places in insertion
//! order, one after the other, in the order of the batch. An export reads
//! in one (deferred) transaction, so a page is one snapshot of the store.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

use super::runs::{RUN_COLUMNS, count, dur, ms, read_run};
use super::{COLUMNS, Ctx, Fail, INSERT_TASK, SqliteStore, TaskRow, read_task, to_json};
use crate::history::LogEntry;
use crate::log::Stream;
use crate::store::StoreError;
use crate::store::contract::{
    ExportCursor, ExportLimits, ExportPage, ExportedLogLine, ExportedRun, ExportedSchedule,
    ImportReport, Schedule, task_difference,
};
use crate::store::rows::RawRun;
use crate::task::{Task, TaskName};

/// The columns of `runs` an export reads after [`RUN_COLUMNS`], in the
/// order [`RawExtra::read`] reads them.
const EXTRA_COLUMNS: &str =
    "fence, lease_until, timeout_ms, backoff_ms, retry_on_status, inline, task_rev, secret_args";

/// The first index of [`EXTRA_COLUMNS`] in a row (after [`RUN_COLUMNS`]).
const EXTRA_AT: usize = 22;

const INSERT_RUN: &str = "INSERT INTO runs (id, task, args, secret_args, caller, state, priority, \
    attempt, max_attempts, fence, worker, lease_until, cancel_requested, timeout_ms, backoff_ms, \
    retry_on_status, queued_at, available_at, started_at, finished_at, outcome, exit, error, \
    error_kind, log_cut_lines, log_cut_bytes, schedule_id, inline, task_rev, seq) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
    ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, (SELECT coalesce(max(seq), 0) + 1 FROM runs))";

const INSERT_LOG: &str = "INSERT INTO run_logs (run_id, attempt, seq, stream, line, truncated) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const SCHEDULE_COLUMNS: &str =
    "id, task, cron, args, caller, next_fire_at, created_at, secret_args";

/// The columns of a run beyond what history shows, before they are checked.
struct RawExtra {
    fence: i64,
    lease_until: Option<i64>,
    timeout_ms: Option<i64>,
    backoff_ms: Option<i64>,
    retry_on_status: i64,
    inline: i64,
    task_rev: Option<String>,
    secret_args: Option<String>,
}

impl RawExtra {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let at = EXTRA_AT;
        Ok(Self {
            fence: r.get(at)?,
            lease_until: r.get(at + 1)?,
            timeout_ms: r.get(at + 2)?,
            backoff_ms: r.get(at + 3)?,
            retry_on_status: r.get(at + 4)?,
            inline: r.get(at + 5)?,
            task_rev: r.get(at + 6)?,
            secret_args: r.get(at + 7)?,
        })
    }
}

fn read_run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RawRun, RawExtra)> {
    Ok((read_run(r)?, RawExtra::read(r)?))
}

/// The whole run of a row, with its log lines.
fn exported(
    conn: &Connection,
    ctx: &Ctx<'_>,
    (raw, extra): (RawRun, RawExtra),
) -> Result<ExportedRun, Fail> {
    let record = raw.check(ctx.path)?;
    let secret_args = extra
        .secret_args
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()
        // serde_json's message names a position, not the text.
        .map_err(|e| {
            ctx.corrupt(
                "run",
                record.id.clone(),
                format!("secret_args is not valid JSON: {e}"),
            )
        })?;
    let logs = logs_of(conn, &record.id)?;
    Ok(ExportedRun {
        secret_args,
        fence: extra.fence,
        lease_until: extra.lease_until,
        timeout: dur(extra.timeout_ms),
        backoff: dur(extra.backoff_ms),
        retry_on_status: extra.retry_on_status != 0,
        inline: extra.inline != 0,
        task_rev: extra.task_rev,
        logs,
        record,
    })
}

/// Every stored log line of run `id`, by attempt, then `seq`.
fn logs_of(conn: &Connection, id: &str) -> rusqlite::Result<Vec<ExportedLogLine>> {
    conn.prepare_cached(
        "SELECT attempt, seq, stream, line, truncated FROM run_logs \
         WHERE run_id = ?1 ORDER BY attempt, seq",
    )?
    .query_map([id], |r| {
        Ok(ExportedLogLine {
            attempt: count(r.get(0)?),
            entry: LogEntry {
                seq: r.get::<_, i64>(1)?.max(0) as u64,
                stream: if r.get::<_, String>(2)? == "stderr" {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                text: r.get(3)?,
                truncated: r.get::<_, i64>(4)? != 0,
            },
        })
    })?
    .collect()
}

/// Inserts `run` and its log lines after every stored run.
fn insert_run(tx: &Transaction<'_>, run: &ExportedRun) -> rusqlite::Result<()> {
    let r = &run.record;
    let outcome = r
        .outcome
        .as_ref()
        .map(|o| serde_json::to_string(o).unwrap_or_default());
    let exit = r
        .exit
        .as_ref()
        .map(|e| serde_json::to_string(e).unwrap_or_default());
    tx.prepare_cached(INSERT_RUN)?.execute(params![
        r.id,
        r.task.as_str(),
        to_json(&r.args),
        run.secret_args.as_ref().map(to_json),
        r.caller,
        r.state.as_str(),
        r.priority,
        r.attempt,
        r.max_attempts,
        run.fence,
        r.worker,
        run.lease_until,
        r.cancel_requested,
        ms(run.timeout),
        ms(run.backoff),
        run.retry_on_status,
        r.queued_at,
        r.available_at,
        r.started_at,
        r.finished_at,
        outcome,
        exit,
        r.error.as_ref().map(|e| e.message.as_str()),
        r.error.as_ref().map(|e| e.kind.as_str()),
        r.log_cut_lines.min(i64::MAX as u64) as i64,
        r.log_cut_bytes.min(i64::MAX as u64) as i64,
        r.schedule,
        run.inline,
        run.task_rev,
    ])?;
    let mut ins = tx.prepare_cached(INSERT_LOG)?;
    for l in &run.logs {
        let stream = match l.entry.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        ins.execute(params![
            r.id,
            l.attempt,
            l.entry.seq.min(i64::MAX as u64) as i64,
            stream,
            l.entry.text,
            l.entry.truncated
        ])?;
    }
    Ok(())
}

/// Schedules selected as [`SCHEDULE_COLUMNS`], checked.
fn read_schedules(
    conn: &Connection,
    ctx: &Ctx<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<ExportedSchedule>, Fail> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        i64,
        i64,
        Option<String>,
    );
    let rows: Vec<Row> = conn
        .prepare_cached(sql)?
        .query_map(params, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter()
        .map(
            |(id, task, cron, args, caller, next_fire_at, created_at, secret)| {
                let corrupt = |m: String| ctx.corrupt("schedule", id.clone(), m);
                let secret_args = secret
                    .as_deref()
                    .map(serde_json::from_str::<Value>)
                    .transpose()
                    .map_err(|e| corrupt(format!("secret_args is not valid JSON: {e}")))?;
                Ok(ExportedSchedule {
                    schedule: Schedule {
                        task: TaskName::new(task).map_err(|e| corrupt(e.to_string()))?,
                        args: serde_json::from_str(&args)
                            .map_err(|e| corrupt(format!("args is not valid JSON: {e}")))?,
                        id,
                        cron,
                        caller,
                        next_fire_at,
                        created_at,
                    },
                    secret_args,
                })
            },
        )
        .collect()
}

fn conflict(what: &'static str, key: &str, field: &'static str) -> Fail {
    Fail::Store(StoreError::Conflict {
        what,
        key: key.to_owned(),
        field,
    })
}

impl SqliteStore {
    pub(super) async fn import_tasks_in(&self, tasks: &[Task]) -> Result<ImportReport, StoreError> {
        if tasks.is_empty() {
            return Ok(ImportReport::default());
        }
        let rows = tasks
            .iter()
            .map(|t| Ok((t.clone(), TaskRow::new(t, self.path())?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let select = format!("SELECT {COLUMNS} FROM tasks WHERE name = ?1");
        self.write(move |tx, ctx| {
            let mut report = ImportReport::default();
            for (task, row) in &rows {
                let stored = tx
                    .prepare_cached(&select)?
                    .query_row([task.name.as_str()], read_task)
                    .optional()?;
                match stored {
                    None => {
                        row.execute(tx, INSERT_TASK)?;
                        report.inserted += 1;
                    }
                    Some(raw) => match task_difference(task, &raw.into_task(ctx.path)?) {
                        None => report.unchanged += 1,
                        Some(field) => return Err(conflict("task", task.name.as_str(), field)),
                    },
                }
            }
            Ok(report)
        })
        .await
    }

    pub(super) async fn export_runs_in(
        &self,
        after: Option<ExportCursor>,
        limits: ExportLimits,
    ) -> Result<ExportPage, StoreError> {
        let limit = limits.runs.max(1);
        let from = after.map_or(i64::MIN, |c| c.seq);
        let sql = format!(
            "SELECT {RUN_COLUMNS}, {EXTRA_COLUMNS} FROM runs WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        );
        let page = self
            .read(move |conn, ctx| {
                let tx = conn.unchecked_transaction()?;
                let rows = tx
                    .prepare_cached(&sql)?
                    .query_map(params![from, limit as i64], read_run_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let scanned = rows.len();
                let (mut runs, mut bytes, mut last) = (Vec::new(), 0usize, None);
                for row in rows {
                    last = Some(row.0.seq);
                    let run = exported(&tx, ctx, row)?;
                    bytes = bytes.saturating_add(run.log_bytes());
                    runs.push(run);
                    if bytes > limits.log_bytes {
                        break;
                    }
                }
                let more = scanned == limit || runs.len() < scanned;
                let next = last.filter(|_| more).map(|seq| ExportCursor { seq });
                Ok(ExportPage { runs, next })
            })
            .await?;
        Ok(page.unwrap_or(ExportPage {
            runs: Vec::new(),
            next: None,
        }))
    }

    pub(super) async fn import_runs_in(
        &self,
        runs: &[ExportedRun],
    ) -> Result<ImportReport, StoreError> {
        if runs.is_empty() {
            return Ok(ImportReport::default());
        }
        let runs = runs.to_vec();
        let select = format!("SELECT {RUN_COLUMNS}, {EXTRA_COLUMNS} FROM runs WHERE id = ?1");
        self.write(move |tx, ctx| {
            let mut report = ImportReport::default();
            for run in &runs {
                let stored = tx
                    .prepare_cached(&select)?
                    .query_row([&run.record.id], read_run_row)
                    .optional()?;
                match stored {
                    None => {
                        insert_run(tx, run)?;
                        report.inserted += 1;
                    }
                    Some(row) => match run.difference(&exported(tx, ctx, row)?) {
                        None => report.unchanged += 1,
                        Some(field) => return Err(conflict("run", &run.record.id, field)),
                    },
                }
            }
            Ok(report)
        })
        .await
    }

    pub(super) async fn export_schedules_in(&self) -> Result<Vec<ExportedSchedule>, StoreError> {
        let all = self
            .read(|conn, ctx| {
                read_schedules(
                    conn,
                    ctx,
                    &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY created_at, id"),
                    [],
                )
            })
            .await?;
        Ok(all.unwrap_or_default())
    }

    pub(super) async fn import_schedules_in(
        &self,
        schedules: &[ExportedSchedule],
    ) -> Result<ImportReport, StoreError> {
        if schedules.is_empty() {
            return Ok(ImportReport::default());
        }
        let schedules = schedules.to_vec();
        let select = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?1");
        self.write(move |tx, ctx| {
            let mut report = ImportReport::default();
            for new in &schedules {
                let s = &new.schedule;
                let stored = read_schedules(tx, ctx, &select, [&s.id])?.pop();
                match stored {
                    None => {
                        tx.prepare_cached(
                            "INSERT INTO schedules (id, task, cron, args, secret_args, caller, \
                                next_fire_at, created_at) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        )?
                        .execute(params![
                            s.id,
                            s.task.as_str(),
                            s.cron,
                            to_json(&s.args),
                            new.secret_args.as_ref().map(to_json),
                            s.caller,
                            s.next_fire_at,
                            s.created_at
                        ])?;
                        report.inserted += 1;
                    }
                    Some(stored) => match new.difference(&stored) {
                        None => report.unchanged += 1,
                        Some(field) => return Err(conflict("schedule", &s.id, field)),
                    },
                }
            }
            Ok(report)
        })
        .await
    }
}
