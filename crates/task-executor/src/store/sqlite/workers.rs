//! The worker registry in SQLite (table `workers`): each worker upserts its
//! row at every heartbeat, deletes it at a clean exit, and rows not seen for
//! [`FORGET_WORKERS_AFTER`] are deleted by the next beat of any worker.
//!
//! Plain SQL that PostgreSQL also speaks (`INSERT … ON CONFLICT (id) DO
//! UPDATE`, `excluded.`); tags are a JSON array as TEXT, NULL for none.
//! Times are the store's clock, read inside the transaction.

use rusqlite::{Connection, Transaction, params};

use super::{Ctx, Fail};
use crate::store::contract::{FORGET_WORKERS_AFTER, WorkerBeat, WorkerRecord};
use crate::store::rows::{read_tags, tags_json};

/// Upserts `beat` as seen at `now`, and forgets workers not seen for a day.
pub(super) fn beat(tx: &Transaction<'_>, now: i64, beat: &WorkerBeat) -> rusqlite::Result<()> {
    let forget = now.saturating_sub(FORGET_WORKERS_AFTER.as_millis() as i64);
    tx.prepare_cached("DELETE FROM workers WHERE last_seen < ?1")?
        .execute([forget])?;
    // `started_at` stays that of the row's process; an id reused by another
    // process (a restart with the same `--id`) starts again.
    tx.prepare_cached(
        "INSERT INTO workers (id, host, pid, tags, concurrency, running, lease_ms, started_at, \
            last_seen) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) \
         ON CONFLICT (id) DO UPDATE SET \
            started_at = CASE WHEN workers.host = excluded.host AND workers.pid = excluded.pid \
                THEN workers.started_at ELSE excluded.started_at END, \
            host = excluded.host, pid = excluded.pid, tags = excluded.tags, \
            concurrency = excluded.concurrency, running = excluded.running, \
            lease_ms = excluded.lease_ms, last_seen = excluded.last_seen",
    )?
    .execute(params![
        beat.id,
        beat.host,
        beat.pid,
        tags_json(&beat.tags),
        beat.concurrency,
        beat.running,
        i64::try_from(beat.lease.as_millis()).unwrap_or(i64::MAX),
        now,
    ])?;
    Ok(())
}

/// Every worker, oldest first.
pub(super) fn list(conn: &Connection, ctx: &Ctx<'_>) -> Result<Vec<WorkerRecord>, Fail> {
    type Row = (String, String, i64, Option<String>, i64, i64, i64, i64, i64);
    let rows: Vec<Row> = conn
        .prepare_cached(
            "SELECT id, host, pid, tags, concurrency, running, lease_ms, started_at, last_seen \
             FROM workers ORDER BY started_at, id",
        )?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let count = |n: i64| n.clamp(0, u32::MAX.into()) as u32;
    rows.into_iter()
        .map(
            |(id, host, pid, tags, concurrency, running, lease_ms, started_at, last_seen)| {
                let tags = read_tags(tags.as_deref()).map_err(|m| ctx.corrupt("worker", &id, m))?;
                Ok(WorkerRecord {
                    id,
                    host,
                    pid: count(pid),
                    tags,
                    concurrency: count(concurrency),
                    running: count(running),
                    lease_ms,
                    started_at,
                    last_seen,
                })
            },
        )
        .collect()
}

/// Deletes worker `id`; whether it was there.
pub(super) fn remove(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("DELETE FROM workers WHERE id = ?1")?
        .execute([id])?
        == 1)
}
