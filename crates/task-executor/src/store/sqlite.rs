//! SQLite backend: the default store, safe for many concurrent processes.
//!
//! A [`SqliteStore`] is a cheap handle to a small pool of connections, each
//! used on tokio's blocking pool, so no SQLite call ever blocks an async
//! runtime's thread. A connection is opened on first use: a read of a
//! database that does not exist yet answers "empty" without creating it; the
//! first write creates the parent directory (0700) and the file (0600, and
//! SQLite gives its `-wal` and `-shm` the same mode). Connections run in
//! WAL mode with a 10 s busy timeout, and every write is one `BEGIN
//! IMMEDIATE` transaction, so dozens of processes writing at once queue up
//! instead of failing or losing updates. Its clock is the [`Clock`] it was
//! opened with (this machine's, for a local file).
//!
//! The schema is versioned with `PRAGMA user_version` and upgraded by the
//! ordered, append-only `MIGRATIONS` list inside one immediate transaction;
//! when the version is already current no DDL runs. A database from a newer
//! build is refused ([`StoreError::TooNew`]), and a file that is not an
//! SQLite database, or is some other program's database, is reported and
//! never modified. Run history and the queue are in `runs.rs`, the worker
//! registry in `workers.rs`.
//!
//! A queued run holds its secret arguments in plaintext until it ends. Then
//! they are dropped and overwritten: `secure_delete` zeroes them in the
//! page, and the write that ended the run truncates the WAL, whose older
//! frames still hold them (`write_dropping_secrets`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use serde_json::Value;

mod auth;
mod copy;
mod runs;
mod workers;

use super::contract::{Clock, ImportReport, Registry, SystemClock};
use super::rows::{RawRow, tags_json};
use super::{InsertMode, StoreError};
use crate::task::{Formats, Policy, Task, TaskName};

/// Schema migrations, applied in order; entry `i` takes `user_version` from
/// `i` to `i + 1`. Append only: never edit a released entry.
const MIGRATIONS: &[&str] = &[
    // 1: the task registry.
    "CREATE TABLE tasks (
        name        TEXT PRIMARY KEY NOT NULL,
        location    TEXT NOT NULL,
        description TEXT,
        inputs      TEXT NOT NULL,  -- JSON Schema of the inputs
        outputs     TEXT,           -- JSON Schema of the result, or NULL
        timeout_ms  INTEGER,
        created_at  TEXT NOT NULL,  -- RFC 3339 UTC
        updated_at  TEXT NOT NULL   -- RFC 3339 UTC
    ) STRICT;",
    // 2: run history, the queue and schedules (see `runs.rs`). Portable SQL:
    // TEXT ids, INTEGER epoch-millisecond times, JSON as TEXT.
    "ALTER TABLE tasks ADD COLUMN retries INTEGER;
    ALTER TABLE tasks ADD COLUMN backoff_ms INTEGER;
    ALTER TABLE tasks ADD COLUMN retry_on_status INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN concurrency INTEGER;
    ALTER TABLE tasks ADD COLUMN priority INTEGER;
    CREATE TABLE runs (
        id               TEXT PRIMARY KEY NOT NULL,  -- UUID v7
        task             TEXT NOT NULL,
        args             TEXT NOT NULL,     -- JSON, secret fields masked
        secret_args      TEXT,              -- JSON, unmasked; only while queued/running
        caller           TEXT NOT NULL,
        state            TEXT NOT NULL,     -- queued, running, completed, failed, cancelled
        priority         INTEGER NOT NULL DEFAULT 0,
        attempt          INTEGER NOT NULL DEFAULT 0,
        max_attempts     INTEGER NOT NULL DEFAULT 1,
        fence            INTEGER NOT NULL DEFAULT 0,  -- bumped by every claim
        worker           TEXT,
        lease_until      INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        timeout_ms       INTEGER,
        backoff_ms       INTEGER,
        retry_on_status  INTEGER NOT NULL DEFAULT 0,
        queued_at        INTEGER NOT NULL,
        available_at     INTEGER NOT NULL,
        started_at       INTEGER,
        finished_at      INTEGER,
        outcome          TEXT,              -- JSON `Outcome`
        exit             TEXT,              -- JSON `ExitInfo`
        error            TEXT,
        log_cut_lines    INTEGER NOT NULL DEFAULT 0,
        log_cut_bytes    INTEGER NOT NULL DEFAULT 0,
        schedule_id      TEXT
    ) STRICT;
    CREATE INDEX runs_order ON runs (queued_at, id);
    CREATE INDEX runs_task_order ON runs (task, queued_at, id);
    CREATE INDEX runs_state_order ON runs (state, queued_at, id);
    CREATE INDEX runs_task_state ON runs (task, state);
    CREATE INDEX runs_claim ON runs (state, priority DESC, available_at, id);
    CREATE INDEX runs_lease ON runs (state, lease_until);
    CREATE TABLE run_logs (
        run_id    TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        attempt   INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        stream    TEXT NOT NULL,      -- stdout or stderr
        line      TEXT NOT NULL,
        truncated INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, attempt, seq)
    ) STRICT;
    CREATE TABLE schedules (
        id           TEXT PRIMARY KEY NOT NULL,
        task         TEXT NOT NULL,
        cron         TEXT NOT NULL,
        args         TEXT NOT NULL,   -- JSON, secret fields masked
        secret_args  TEXT,            -- JSON, unmasked, when it differs
        caller       TEXT NOT NULL,
        next_fire_at INTEGER NOT NULL,
        created_at   INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX schedules_due ON schedules (next_fire_at);",
    // 3: runs get an insertion order (`seq`: ids are random now, and runs
    // queued in the same millisecond must keep their order), a kind for
    // `error`, and a mark for runs executed in-process; tasks keep their
    // `formats` mode. The ordering indexes follow `seq` instead of `id`, and
    // the queue's indexes hold only the runs they serve (queued ones to
    // claim, running ones for leases and the concurrency cap), so finished
    // history never weighs on them and a run touches fewer of them.
    "ALTER TABLE tasks ADD COLUMN formats TEXT;  -- NULL: assert; 'annotate'
    ALTER TABLE runs ADD COLUMN seq INTEGER;
    UPDATE runs SET seq = rowid;
    CREATE UNIQUE INDEX runs_seq ON runs (seq);
    ALTER TABLE runs ADD COLUMN error_kind TEXT;
    ALTER TABLE runs ADD COLUMN inline INTEGER NOT NULL DEFAULT 0;
    UPDATE runs SET inline = 1 WHERE worker LIKE 'execute-%';
    DROP INDEX runs_order;
    CREATE INDEX runs_order ON runs (queued_at, seq);
    DROP INDEX runs_task_order;
    CREATE INDEX runs_task_order ON runs (task, queued_at, seq);
    DROP INDEX runs_state_order;
    CREATE INDEX runs_state_order ON runs (state, queued_at, seq);
    DROP INDEX runs_claim;
    CREATE INDEX runs_claim ON runs (priority DESC, available_at, seq) WHERE state = 'queued';
    DROP INDEX runs_lease;
    CREATE INDEX runs_lease ON runs (lease_until) WHERE state = 'running';
    DROP INDEX runs_task_state;
    CREATE INDEX runs_running ON runs (task) WHERE state = 'running';",
    // 4: a run keeps the revision of the task it was queued for (a hash of
    // its location and schemas), so a worker can refuse to deliver it to a
    // different script registered later under the same name.
    "ALTER TABLE runs ADD COLUMN task_rev TEXT;",
    // 5: workers on several machines. A task's tags route its runs to the
    // workers that have them all; workers register themselves (upserted at
    // each heartbeat, removed at a clean exit, forgotten a day after they
    // were last seen). Tags are JSON arrays of strings; NULL is none.
    "ALTER TABLE tasks ADD COLUMN tags TEXT;
    CREATE TABLE workers (
        id          TEXT PRIMARY KEY NOT NULL,
        host        TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        tags        TEXT,              -- JSON array of strings, or NULL
        concurrency INTEGER NOT NULL,
        running     INTEGER NOT NULL,
        lease_ms    INTEGER NOT NULL,
        started_at  INTEGER NOT NULL,  -- epoch ms, store clock
        last_seen   INTEGER NOT NULL   -- epoch ms, store clock
    ) STRICT;",
    // 6: API tokens and the audit log (see `auth.rs`). A token keeps the
    // keyed hash of its secret, never the secret; the key is the store's
    // own (one row), so every process sharing the store verifies the same
    // tokens. Tokens are revoked, never deleted: a name is never reused.
    "CREATE TABLE auth_key (
        id  INTEGER PRIMARY KEY CHECK (id = 1),
        key TEXT NOT NULL               -- hex, 256 bits
    ) STRICT;
    CREATE TABLE tokens (
        name         TEXT PRIMARY KEY NOT NULL,
        scope        TEXT NOT NULL,     -- read, run, admin
        hash         TEXT NOT NULL UNIQUE,  -- HMAC-SHA256 of the secret, hex
        created_at   INTEGER NOT NULL,  -- epoch ms, store clock
        expires_at   INTEGER,
        revoked_at   INTEGER,
        last_used_at INTEGER
    ) STRICT;
    CREATE TABLE audit (
        seq    INTEGER PRIMARY KEY AUTOINCREMENT,
        at     INTEGER NOT NULL,        -- epoch ms, store clock
        actor  TEXT NOT NULL,           -- a token's name, or cli:<user>
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL            -- JSON, never a secret
    ) STRICT;
    CREATE INDEX audit_order ON audit (at, seq);",
];

/// The schema version this build writes and understands.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a writer waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections kept open between calls, per store handle (and its clones).
const MAX_IDLE: usize = 4;

/// Current time as RFC 3339 UTC with milliseconds, computed by SQLite.
macro_rules! now_sql {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
}

/// [`now_sql!`], for tests that write rows themselves.
#[cfg(test)]
const NOW: &str = now_sql!();

/// The task columns, in the order `read_task` reads them.
const COLUMNS: &str = "name, location, description, inputs, outputs, timeout_ms, \
    retries, backoff_ms, retry_on_status, concurrency, priority, formats, tags";

/// An SQLite database. Cheap to clone: clones share the connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    idle: Mutex<Vec<Connection>>,
    /// Held for each write transaction of this handle and its clones.
    writer: Mutex<()>,
    signals: super::signals::Signals,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// What a blocking call gets besides its connection.
pub(super) struct Ctx<'a> {
    path: &'a Path,
    clock: &'a dyn Clock,
    /// This handle's writers take turns here ([`transaction`]).
    writer: &'a Mutex<()>,
}

impl Ctx<'_> {
    /// The store's time now.
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn corrupt(&self, what: &'static str, key: impl Into<String>, message: String) -> Fail {
        Fail::Store(StoreError::Corrupt {
            path: self.path.to_owned(),
            what,
            key: key.into(),
            message,
        })
    }
}

/// Why a blocking call failed: SQLite itself, or a finding of ours.
pub(super) enum Fail {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    fn into_store(self, path: &Path) -> StoreError {
        match self {
            Fail::Sql(source) => StoreError::Sqlite {
                path: path.to_owned(),
                source,
            },
            Fail::Store(e) => e,
        }
    }
}

/// Reads a `tasks` row selected as [`COLUMNS`].
pub(super) fn read_task(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        name: row.get(0)?,
        location: row.get(1)?,
        description: row.get(2)?,
        inputs: row.get(3)?,
        outputs: row.get(4)?,
        timeout_ms: row.get(5)?,
        retries: row.get(6)?,
        backoff_ms: row.get(7)?,
        retry_on_status: row.get(8)?,
        concurrency: row.get(9)?,
        priority: row.get(10)?,
        formats: row.get(11)?,
        tags: row.get(12)?,
    })
}

impl SqliteStore {
    /// The store at `path`, on this machine's clock. The database is opened
    /// (and, if needed, migrated) on first use; nothing is created until the
    /// first write.
    pub fn open(path: &Path) -> Self {
        Self::with_clock(path, Arc::new(SystemClock))
    }

    /// [`SqliteStore::open`] with the clock leases and schedules are measured by.
    pub fn with_clock(path: &Path, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                clock,
                idle: Mutex::new(Vec::new()),
                writer: Mutex::new(()),
                signals: Default::default(),
            }),
        }
    }

    /// What this handle and its clones tell each other (in-process wake-ups).
    pub(crate) fn signals(&self) -> &super::signals::Signals {
        &self.inner.signals
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a pooled connection, on the blocking pool. Without
    /// `create`, a missing database gives `Ok(None)` and is not created.
    async fn with_conn<T: Send + 'static>(
        &self,
        create: bool,
        f: impl FnOnce(&mut Connection, &Ctx<'_>) -> Result<T, Fail> + Send + 'static,
    ) -> Result<Option<T>, StoreError> {
        let inner = self.inner.clone();
        let job = move || {
            let pooled = inner.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                // A directory we may not search is an error, not a missing store.
                None if !create && !exists(&inner.path)? => return Ok(None),
                None => connect_retrying(&inner.path, create)?,
            };
            let ctx = Ctx {
                path: &inner.path,
                clock: &*inner.clock,
                writer: &inner.writer,
            };
            let out = f(&mut conn, &ctx).map_err(|e| e.into_store(&inner.path));
            // After a failure that may pass (I/O, a lock), the next call
            // starts from a fresh connection rather than one in an unknown state.
            if !out.as_ref().is_err_and(StoreError::is_transient) {
                let mut idle = inner.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < MAX_IDLE {
                    idle.push(conn);
                }
            }
            out.map(Some)
        };
        match tokio::task::spawn_blocking(job).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StoreError::Internal {
                path: self.inner.path.clone(),
                message: format!("the database call was cancelled: {e}"),
            }),
        }
    }

    /// A read; `None` when the database does not exist (yet).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &Ctx<'_>) -> Result<T, Fail> + Send + 'static,
    ) -> Result<Option<T>, StoreError> {
        self.with_conn(false, move |conn, ctx| f(conn, ctx)).await
    }

    /// One `BEGIN IMMEDIATE` transaction, committed if `f` succeeds; creates
    /// the database if need be.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &Ctx<'_>) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, StoreError> {
        let out = self
            .with_conn(true, move |conn, ctx| transaction(conn, ctx, f))
            .await?;
        Ok(out.expect("a write opens (and creates) the database"))
    }

    /// A write ([`SqliteStore::write`], or without `create`
    /// [`SqliteStore::write_existing`]) that may drop a run's secret
    /// arguments, `f` saying whether it did. When it did, the WAL is
    /// checkpointed and truncated after the commit: `secure_delete` zeroes
    /// the dropped value in the page, but older copies of that page stay in
    /// the WAL until it is reset. Best effort: the change stands whatever the
    /// checkpoint does (it cannot finish while another connection reads an
    /// older snapshot; a later one resets the WAL).
    async fn write_dropping_secrets<T: Send + 'static>(
        &self,
        create: bool,
        f: impl FnOnce(&Transaction<'_>, &Ctx<'_>) -> Result<(T, bool), Fail> + Send + 'static,
    ) -> Result<Option<T>, StoreError> {
        self.with_conn(create, move |conn, ctx| {
            let (out, dropped) = transaction(conn, ctx, f)?;
            if dropped {
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            }
            Ok(out)
        })
        .await
    }

    /// [`SqliteStore::write`] on a database that exists; `None` (nothing
    /// done, nothing created) when it does not.
    async fn write_existing<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &Ctx<'_>) -> Result<T, Fail> + Send + 'static,
    ) -> Result<Option<T>, StoreError> {
        self.with_conn(false, move |conn, ctx| transaction(conn, ctx, f))
            .await
    }
}

fn transaction<T>(
    conn: &mut Connection,
    ctx: &Ctx<'_>,
    f: impl FnOnce(&Transaction<'_>, &Ctx<'_>) -> Result<T, Fail>,
) -> Result<T, Fail> {
    // Writers of this process queue here, in turn, rather than in SQLite's
    // busy handler, which sleeps 1, 2, 5, 10… ms between tries: a server's
    // API and its workers write all the time. Other processes still wait
    // there.
    let _turn = ctx.writer.lock().unwrap_or_else(|e| e.into_inner());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx, ctx)?;
    tx.commit()?;
    Ok(out)
}

impl Registry for SqliteStore {
    async fn list(&self) -> Result<Vec<Task>, StoreError> {
        let tasks = self
            .read(|conn, ctx| {
                let mut stmt =
                    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks ORDER BY name"))?;
                let rows = stmt
                    .query_map([], read_task)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows.into_iter()
                    .map(|r| Ok(r.into_task(ctx.path)?))
                    .collect()
            })
            .await?;
        Ok(tasks.unwrap_or_default())
    }

    async fn get(&self, name: &TaskName) -> Result<Option<Task>, StoreError> {
        let name = name.clone();
        let task = self
            .read(move |conn, ctx| {
                let row = conn
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE name = ?1"))?
                    .query_row([name.as_str()], read_task)
                    .optional()?;
                Ok(row.map(|r| r.into_task(ctx.path)).transpose()?)
            })
            .await?;
        Ok(task.flatten())
    }

    /// Replacing keeps the original `created_at`.
    async fn insert(&self, task: &Task, mode: InsertMode) -> Result<(), StoreError> {
        let row = TaskRow::new(task, self.path())?;
        let sql = format!(
            "{INSERT_TASK}
             ON CONFLICT (name) DO UPDATE SET
                location = excluded.location,
                description = excluded.description,
                inputs = excluded.inputs,
                outputs = excluded.outputs,
                timeout_ms = excluded.timeout_ms,
                retries = excluded.retries,
                backoff_ms = excluded.backoff_ms,
                retry_on_status = excluded.retry_on_status,
                concurrency = excluded.concurrency,
                priority = excluded.priority,
                formats = excluded.formats,
                tags = excluded.tags,
                updated_at = excluded.updated_at"
        );
        let inserted = self
            .write(move |tx, _| {
                if mode == InsertMode::CreateNew {
                    let taken = tx
                        .prepare_cached("SELECT 1 FROM tasks WHERE name = ?1")?
                        .exists([row.name.as_str()])?;
                    if taken {
                        return Ok(false);
                    }
                }
                row.execute(tx, &sql)?;
                Ok(true)
            })
            .await?;
        if inserted {
            Ok(())
        } else {
            Err(StoreError::Duplicate {
                name: task.name.clone(),
            })
        }
    }

    async fn remove(&self, name: &TaskName) -> Result<Task, StoreError> {
        let key = name.clone();
        let removed = self
            .write_existing(move |tx, ctx| {
                let row = tx
                    .prepare_cached(&format!(
                        "DELETE FROM tasks WHERE name = ?1 RETURNING {COLUMNS}"
                    ))?
                    .query_row([key.as_str()], read_task)
                    .optional()?;
                // A row we cannot read back is reported, not silently
                // deleted: the error rolls the transaction back.
                Ok(row.map(|r| r.into_task(ctx.path)).transpose()?)
            })
            .await?;
        removed
            .flatten()
            .ok_or_else(|| StoreError::NotFound { name: name.clone() })
    }

    async fn import_tasks(&self, tasks: &[Task]) -> Result<ImportReport, StoreError> {
        self.import_tasks_in(tasks).await
    }
}

/// Inserts a task row ([`TaskRow::execute`]'s parameters), created and
/// updated now.
const INSERT_TASK: &str = concat!(
    "INSERT INTO tasks (name, location, description, inputs, outputs, timeout_ms, retries, \
     backoff_ms, retry_on_status, concurrency, priority, formats, tags, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ",
    now_sql!(),
    ", ",
    now_sql!(),
    ")"
);

/// A task's column values, checked before a transaction starts.
struct TaskRow {
    name: TaskName,
    location: String,
    description: Option<String>,
    inputs: String,
    outputs: Option<String>,
    timeout_ms: Option<i64>,
    policy: Policy,
    formats: Option<&'static str>,
}

impl TaskRow {
    /// The row of `task`; a location that is not UTF-8 or a timeout too
    /// large to store is refused.
    fn new(task: &Task, path: &Path) -> Result<Self, StoreError> {
        let conversion = |message: String| StoreError::Sqlite {
            path: path.to_owned(),
            source: rusqlite::Error::ToSqlConversionFailure(message.into()),
        };
        let location = task.location.to_str().ok_or_else(|| {
            conversion(format!(
                "the location of task `{}` ({}) is not valid UTF-8",
                task.name,
                task.location.display()
            ))
        })?;
        let timeout_ms = task
            .timeout
            .map(|d| {
                i64::try_from(d.as_millis()).map_err(|_| {
                    conversion(format!("the timeout of task `{}` is too large", task.name))
                })
            })
            .transpose()?;
        Ok(Self {
            name: task.name.clone(),
            location: location.to_owned(),
            description: task.description.clone(),
            inputs: to_json(&task.inputs),
            outputs: task.outputs.as_ref().map(to_json),
            timeout_ms,
            policy: task.policy.clone(),
            formats: match task.formats {
                Formats::Assert => None,
                Formats::Annotate => Some("annotate"),
            },
        })
    }

    /// Runs `sql` ([`INSERT_TASK`], possibly with an upsert clause) with this row.
    fn execute(&self, tx: &Transaction<'_>, sql: &str) -> rusqlite::Result<usize> {
        let policy = &self.policy;
        tx.prepare_cached(sql)?.execute(params![
            self.name.as_str(),
            self.location,
            self.description,
            self.inputs,
            self.outputs,
            self.timeout_ms,
            policy.retries,
            policy.backoff.map(|d| d.as_millis() as i64),
            policy.retry_on_status,
            policy.concurrency,
            policy.priority,
            self.formats,
            tags_json(&policy.tags),
        ])
    }
}

/// WAL pages after which a committing writer checkpoints (SQLite's default is 1000).
const WAL_AUTOCHECKPOINT: u32 = 100;

fn to_json(v: &Value) -> String {
    // Serializing a `Value` to a string cannot fail (its keys are strings).
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Whether the database file exists; an error when that cannot be told
/// (a parent directory that may not be searched).
fn exists(path: &Path) -> Result<bool, StoreError> {
    path.try_exists().map_err(|source| StoreError::Io {
        action: "look for",
        path: path.to_owned(),
        source,
    })
}

/// [`connect`], retried while the database reports itself busy.
///
/// While a fresh database is being created, switched to WAL and migrated by
/// another process, SQLite can answer `SQLITE_BUSY` at once, without calling
/// the busy handler (the rollback → WAL transition and WAL recovery are such
/// paths). Seen in CI with 30 concurrent `register` processes on a new file.
/// Each attempt starts from a fresh connection; the whole wait is bounded by
/// the busy timeout.
fn connect_retrying(path: &Path, create: bool) -> Result<Connection, StoreError> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(2);
    loop {
        match connect(path, create) {
            Err(StoreError::Sqlite { source, .. })
                if is_busy(&source) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Whether an SQLite error may pass if the call is made again later (see
/// [`StoreError::is_transient`]).
pub(super) fn is_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e.sqlite_error_code(),
        Some(
            C::DatabaseBusy
                | C::DatabaseLocked
                | C::SystemIoFailure
                | C::CannotOpen
                | C::DiskFull
                | C::ReadOnly
                | C::FileLockingProtocolFailed
                | C::OutOfMemory
                | C::SchemaChanged
        )
    )
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Opens the database, configures the connection and brings the schema up to date.
fn connect(path: &Path, create: bool) -> Result<Connection, StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            super::create_private_dir(dir).map_err(|source| StoreError::Io {
                action: "create directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        create_private_file(path)?;
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    // The first read of the header: a file that is not a database fails here,
    // before anything could write to it. Before anything below could write
    // to it (WAL mode is a property of the file), another program's
    // database is refused untouched. Both reads see one snapshot: another
    // process may commit the migrations in between, and a version from
    // before them with the tables from after would look like another
    // program's database (seen with 30 concurrent `register`s on a new file).
    let version = {
        conn.execute_batch("BEGIN DEFERRED").map_err(sqlite)?;
        let checked = user_version(&conn)
            .map_err(sqlite)
            .and_then(|v| recognise(&conn, path, v).map(|()| v));
        let _ = conn.execute_batch("COMMIT");
        checked?
    };
    check_version(path, version)?;
    // `secure_delete` zeroes what a write removes (a queued run's secret
    // arguments, cleared when it ends) instead of leaving it in free space.
    // Closing the last connection would checkpoint the WAL (and fsync) at the
    // end of every short command; instead a committing writer checkpoints
    // every WAL_AUTOCHECKPOINT pages, which also keeps the WAL short for the
    // first connection of each process, which reads all of it.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; \
         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT};"
    ))
    .map_err(sqlite)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(sqlite)?;
    if version != SCHEMA_VERSION {
        // WAL is a property of the file and persists: set it when the
        // database is created or upgraded.
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .map_err(sqlite)?;
        migrate(&mut conn, path)?;
    }
    Ok(conn)
}

/// Creates the database file, empty, with [`super::FILE_MODE`] unless it
/// exists: SQLite would create it `0644` (with the umask), and it creates the
/// `-wal` and `-shm` files with the mode of the database file.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(super::FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io {
            action: "create",
            path: path.to_owned(),
            source,
        }),
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Refuses a database that is not a task-executor store: one that holds
/// tables but no schema version of ours, or a schema version but no `tasks`
/// table of ours. An empty database (new, or all-zero) is ours to create.
fn recognise(conn: &Connection, path: &Path, version: i64) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    // Every schema version since the first has this table with these columns.
    let ours: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('tasks') \
             WHERE name IN ('name', 'location', 'inputs')",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite)?;
    if ours == 3 && version > 0 {
        return Ok(());
    }
    let objects = user_objects(conn).map_err(sqlite)?;
    let reason = match (version, objects) {
        (0, 0) => return Ok(()),
        // Nothing but a version from the future: a newer build's, as far as
        // can be told (`check_version` says so).
        (v, 0) if v > SCHEMA_VERSION => return Ok(()),
        (0, n) => format!(
            "it holds {n} {} but no task-executor schema version (`user_version` is 0)",
            if n == 1 {
                "table or index"
            } else {
                "tables or indexes"
            }
        ),
        (v, _) => format!(
            "its `user_version` is {v} but it has no task-executor `tasks` table \
             (it looks like another program's database)"
        ),
    };
    Err(StoreError::Foreign {
        path: path.to_owned(),
        reason,
    })
}

/// How many tables, indexes, views and triggers the database holds.
fn user_objects(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
        [],
        |r| r.get(0),
    )
}

fn check_version(path: &Path, version: i64) -> Result<usize, StoreError> {
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    usize::try_from(version).map_err(|_| StoreError::Corrupt {
        path: path.to_owned(),
        what: "schema version",
        key: "user_version".into(),
        message: format!("the schema version is negative ({version})"),
    })
}

/// Applies the missing migrations in one immediate transaction. The version is
/// re-read under the write lock, since another process may have migrated first.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let version = user_version(&tx).map_err(sqlite)?;
    recognise(&tx, path, version)?;
    let done = check_version(path, version)?;
    for sql in MIGRATIONS.iter().skip(done) {
        tx.execute_batch(sql).map_err(sqlite)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    tx.commit().map_err(sqlite)
}

#[cfg(test)]
mod tests;
