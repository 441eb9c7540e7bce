//! PostgreSQL side of copying a store (`store copy`), as SQLite's
//! (`sqlite/copy.rs`): whole rows out (`export_*`, each page read in one
//! `REPEATABLE READ` snapshot), one transaction per imported batch, which
//! inserts what is absent, counts what is identical and refuses the whole
//! batch at the first row that differs. Imported runs draw their `seq` from
//! the identity as they are inserted, in the batch's order: after every run
//! already there, in the source's order.

use serde_json::Value;
use tokio_postgres::{IsolationLevel, Row};

use super::runs::{RUN_COLUMNS, count, dur, ms, read_run};
use super::sql::{Sql, p};
use super::{COLUMNS, PgStore, SCHEMA, no_nul, to_json};
use crate::history::LogEntry;
use crate::log::Stream;
use crate::store::InsertMode;
use crate::store::StoreError;
use crate::store::contract::{
    ExportCursor, ExportLimits, ExportPage, ExportedLogLine, ExportedRun, ExportedSchedule,
    ImportReport, Schedule, task_difference,
};
use crate::task::{Task, TaskName};

/// The columns of `runs` an export reads after [`RUN_COLUMNS`].
const EXTRA_COLUMNS: &str =
    "fence, lease_until, timeout_ms, backoff_ms, retry_on_status, inline, task_rev, secret_args";

/// The first index of [`EXTRA_COLUMNS`] in a row.
const EXTRA_AT: usize = 22;

const SCHEDULE_COLUMNS: &str =
    "id, task, cron, args, caller, next_fire_at, created_at, secret_args";

fn conflict(what: &'static str, key: &str, field: &'static str) -> StoreError {
    StoreError::Conflict {
        what,
        key: key.to_owned(),
        field,
    }
}

impl PgStore {
    /// The whole run of a row selected as `RUN_COLUMNS, EXTRA_COLUMNS`, with its log lines.
    async fn exported(&self, client: &impl Sql, r: &Row) -> Result<ExportedRun, StoreError> {
        let record = self.check(read_run(r))?;
        let at = EXTRA_AT;
        let secret: Option<String> = r.get(at + 7);
        let secret_args = secret
            .as_deref()
            .map(serde_json::from_str::<Value>)
            .transpose()
            .map_err(|e| {
                self.corrupt(
                    "run",
                    record.id.clone(),
                    format!("secret_args is not valid JSON: {e}"),
                )
            })?;
        let logs = client
            .rows(
                &format!(
                    "SELECT attempt, seq, stream, line, truncated FROM {SCHEMA}.run_logs \
                     WHERE run_id = $1 ORDER BY attempt, seq"
                ),
                &[p(&record.id)],
            )
            .await
            .map_err(|e| self.fail(e))?
            .iter()
            .map(|l| ExportedLogLine {
                attempt: count(l.get(0)),
                entry: LogEntry {
                    seq: l.get::<_, i64>(1).max(0) as u64,
                    stream: if l.get::<_, &str>(2) == "stderr" {
                        Stream::Stderr
                    } else {
                        Stream::Stdout
                    },
                    text: l.get(3),
                    truncated: l.get(4),
                },
            })
            .collect();
        Ok(ExportedRun {
            secret_args,
            fence: r.get(at),
            lease_until: r.get(at + 1),
            timeout: dur(r.get(at + 2)),
            backoff: dur(r.get(at + 3)),
            retry_on_status: r.get(at + 4),
            inline: r.get(at + 5),
            task_rev: r.get(at + 6),
            logs,
            record,
        })
    }

    pub(super) async fn import_tasks_in(&self, tasks: &[Task]) -> Result<ImportReport, StoreError> {
        if tasks.is_empty() {
            return Ok(ImportReport::default());
        }
        let fail = |e| self.fail(e);
        let mut client = self.write_conn().await?;
        let tx = client.transaction().await.map_err(fail)?;
        let mut report = ImportReport::default();
        for task in tasks {
            let stored = tx
                .opt(
                    &format!("SELECT {COLUMNS} FROM {SCHEMA}.tasks WHERE name = $1 FOR UPDATE"),
                    &[p(&task.name.as_str())],
                )
                .await
                .map_err(fail)?;
            match stored {
                None => {
                    self.insert_task(&tx, task, InsertMode::CreateNew).await?;
                    report.inserted += 1;
                }
                Some(row) => match task_difference(task, &self.task_of(&row)?) {
                    None => report.unchanged += 1,
                    Some(field) => return Err(conflict("task", task.name.as_str(), field)),
                },
            }
        }
        tx.commit().await.map_err(fail)?;
        Ok(report)
    }

    pub(super) async fn export_runs_in(
        &self,
        after: Option<ExportCursor>,
        limits: ExportLimits,
    ) -> Result<ExportPage, StoreError> {
        let empty = ExportPage {
            runs: Vec::new(),
            next: None,
        };
        let fail = |e| self.fail(e);
        let Some(mut client) = self.conn(false).await? else {
            return Ok(empty);
        };
        let limit = limits.runs.max(1);
        let from = after.map_or(i64::MIN, |c| c.seq);
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(fail)?;
        let rows = tx
            .rows(
                &format!(
                    "SELECT {RUN_COLUMNS}, {EXTRA_COLUMNS} FROM {SCHEMA}.runs \
                     WHERE seq > $1 ORDER BY seq LIMIT $2"
                ),
                &[p(&from), p(&(limit as i64))],
            )
            .await
            .map_err(fail)?;
        let scanned = rows.len();
        let (mut runs, mut bytes, mut last) = (Vec::new(), 0usize, None);
        for row in &rows {
            last = Some(row.get::<_, i64>(21));
            let run = self.exported(&tx, row).await?;
            bytes = bytes.saturating_add(run.log_bytes());
            runs.push(run);
            if bytes > limits.log_bytes {
                break;
            }
        }
        tx.commit().await.map_err(fail)?;
        let more = scanned == limit || runs.len() < scanned;
        let next = last.filter(|_| more).map(|seq| ExportCursor { seq });
        Ok(ExportPage { runs, next })
    }

    pub(super) async fn import_runs_in(
        &self,
        runs: &[ExportedRun],
    ) -> Result<ImportReport, StoreError> {
        if runs.is_empty() {
            return Ok(ImportReport::default());
        }
        let fail = |e| self.fail(e);
        let mut client = self.write_conn().await?;
        let tx = client.transaction().await.map_err(fail)?;
        let select = format!(
            "SELECT {RUN_COLUMNS}, {EXTRA_COLUMNS} FROM {SCHEMA}.runs WHERE id = $1 FOR UPDATE"
        );
        let mut report = ImportReport::default();
        for run in runs {
            let stored = tx.opt(&select, &[p(&run.record.id)]).await.map_err(fail)?;
            match stored {
                None => {
                    self.insert_exported(&tx, run).await?;
                    report.inserted += 1;
                }
                Some(row) => match run.difference(&self.exported(&tx, &row).await?) {
                    None => report.unchanged += 1,
                    Some(field) => return Err(conflict("run", &run.record.id, field)),
                },
            }
        }
        tx.commit().await.map_err(fail)?;
        Ok(report)
    }

    /// Inserts `run` and its log lines after every stored run.
    async fn insert_exported(&self, tx: &impl Sql, run: &ExportedRun) -> Result<(), StoreError> {
        let fail = |e| self.fail(e);
        let r = &run.record;
        let outcome = r
            .outcome
            .as_ref()
            .map(|o| no_nul(&serde_json::to_string(o).unwrap_or_default()).into_owned());
        let exit = r
            .exit
            .as_ref()
            .map(|e| serde_json::to_string(e).unwrap_or_default());
        let error = r.error.as_ref().map(|e| no_nul(&e.message).into_owned());
        let kind = r.error.as_ref().map(|e| e.kind.as_str());
        let caller = no_nul(&r.caller).into_owned();
        tx.exec(
            &format!(
                "INSERT INTO {SCHEMA}.runs (id, task, args, secret_args, caller, state, \
                    priority, attempt, max_attempts, fence, worker, lease_until, \
                    cancel_requested, timeout_ms, backoff_ms, retry_on_status, queued_at, \
                    available_at, started_at, finished_at, outcome, exit, error, error_kind, \
                    log_cut_lines, log_cut_bytes, schedule_id, inline, task_rev) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                    $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)"
            ),
            &[
                p(&r.id),
                p(&r.task.as_str()),
                p(&to_json(&r.args)),
                p(&run.secret_args.as_ref().map(to_json)),
                p(&caller),
                p(&r.state.as_str()),
                p(&r.priority),
                p(&i64::from(r.attempt)),
                p(&i64::from(r.max_attempts)),
                p(&run.fence),
                p(&r.worker),
                p(&run.lease_until),
                p(&r.cancel_requested),
                p(&ms(run.timeout)),
                p(&ms(run.backoff)),
                p(&run.retry_on_status),
                p(&r.queued_at),
                p(&r.available_at),
                p(&r.started_at),
                p(&r.finished_at),
                p(&outcome),
                p(&exit),
                p(&error),
                p(&kind),
                p(&(r.log_cut_lines.min(i64::MAX as u64) as i64)),
                p(&(r.log_cut_bytes.min(i64::MAX as u64) as i64)),
                p(&r.schedule),
                p(&run.inline),
                p(&run.task_rev),
            ],
        )
        .await
        .map_err(fail)?;
        if run.logs.is_empty() {
            return Ok(());
        }
        let attempts: Vec<i64> = run.logs.iter().map(|l| i64::from(l.attempt)).collect();
        let seqs: Vec<i64> = run
            .logs
            .iter()
            .map(|l| l.entry.seq.min(i64::MAX as u64) as i64)
            .collect();
        let streams: Vec<&str> = run
            .logs
            .iter()
            .map(|l| match l.entry.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            })
            .collect();
        let lines: Vec<String> = run
            .logs
            .iter()
            .map(|l| no_nul(&l.entry.text).into_owned())
            .collect();
        let cut: Vec<bool> = run.logs.iter().map(|l| l.entry.truncated).collect();
        tx.exec(
            &format!(
                "INSERT INTO {SCHEMA}.run_logs (run_id, attempt, seq, stream, line, truncated) \
                 SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], \
                    $6::bool[])"
            ),
            &[
                p(&r.id),
                p(&attempts),
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

    fn exported_schedule(&self, r: &Row) -> Result<ExportedSchedule, StoreError> {
        let id: String = r.get(0);
        let corrupt = |m: String| self.corrupt("schedule", id.clone(), m);
        let args: String = r.get(3);
        let secret: Option<String> = r.get(7);
        let secret_args = secret
            .as_deref()
            .map(serde_json::from_str::<Value>)
            .transpose()
            .map_err(|e| corrupt(format!("secret_args is not valid JSON: {e}")))?;
        Ok(ExportedSchedule {
            schedule: Schedule {
                task: TaskName::new(r.get::<_, String>(1)).map_err(|e| corrupt(e.to_string()))?,
                args: serde_json::from_str(&args)
                    .map_err(|e| corrupt(format!("args is not valid JSON: {e}")))?,
                cron: r.get(2),
                caller: r.get(4),
                next_fire_at: r.get(5),
                created_at: r.get(6),
                id,
            },
            secret_args,
        })
    }

    pub(super) async fn export_schedules_in(&self) -> Result<Vec<ExportedSchedule>, StoreError> {
        let Some(client) = self.conn(false).await? else {
            return Ok(Vec::new());
        };
        client
            .rows(
                &format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM {SCHEMA}.schedules ORDER BY created_at, id"
                ),
                &[],
            )
            .await
            .map_err(|e| self.fail(e))?
            .iter()
            .map(|r| self.exported_schedule(r))
            .collect()
    }

    pub(super) async fn import_schedules_in(
        &self,
        schedules: &[ExportedSchedule],
    ) -> Result<ImportReport, StoreError> {
        if schedules.is_empty() {
            return Ok(ImportReport::default());
        }
        let fail = |e| self.fail(e);
        let mut client = self.write_conn().await?;
        let tx = client.transaction().await.map_err(fail)?;
        let mut report = ImportReport::default();
        for new in schedules {
            let s = &new.schedule;
            let stored = tx
                .opt(
                    &format!(
                        "SELECT {SCHEDULE_COLUMNS} FROM {SCHEMA}.schedules WHERE id = $1 FOR UPDATE"
                    ),
                    &[p(&s.id)],
                )
                .await
                .map_err(fail)?;
            match stored {
                None => {
                    tx.exec(
                        &format!(
                            "INSERT INTO {SCHEMA}.schedules (id, task, cron, args, secret_args, \
                                caller, next_fire_at, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                        ),
                        &[
                            p(&s.id),
                            p(&s.task.as_str()),
                            p(&s.cron),
                            p(&to_json(&s.args)),
                            p(&new.secret_args.as_ref().map(to_json)),
                            p(&no_nul(&s.caller)),
                            p(&s.next_fire_at),
                            p(&s.created_at),
                        ],
                    )
                    .await
                    .map_err(fail)?;
                    report.inserted += 1;
                }
                Some(row) => match new.difference(&self.exported_schedule(&row)?) {
                    None => report.unchanged += 1,
                    Some(field) => return Err(conflict("schedule", &s.id, field)),
                },
            }
        }
        tx.commit().await.map_err(fail)?;
        Ok(report)
    }
}
