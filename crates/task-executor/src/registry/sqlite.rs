//! SQLite backend: the default store, safe for many concurrent processes.
//!
//! Each [`SqliteStore`] owns one connection, opened on first use: a read of a
//! database that does not exist yet answers "empty" without creating it; the
//! first write creates the parent directory and the file. Connections run in
//! WAL mode with a 10 s busy timeout, and every write is one `BEGIN IMMEDIATE`
//! transaction, so dozens of `manage_tasks register` processes writing at once
//! queue up instead of failing or losing updates.
//!
//! The schema is versioned with `PRAGMA user_version` and upgraded by the
//! ordered, append-only `MIGRATIONS` list inside one immediate transaction;
//! when the version is already current (the common case) no DDL runs, so
//! opening costs a few pragmas. A database from a newer build is refused
//! ([`StoreError::TooNew`]), and a file that is not an SQLite database, or is
//! some other program's database, is reported and never modified.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

mod runs;

use super::{InsertMode, StoreError};
use crate::task::{Policy, Task, TaskName};

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
];

/// The schema version this build writes and understands.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a writer waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Current time as RFC 3339 UTC with milliseconds, computed by SQLite.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// The task columns, in the order `RawRow::read` reads them.
const COLUMNS: &str = "name, location, description, inputs, outputs, timeout_ms";

/// The policy columns, read after [`COLUMNS`].
const POLICY_COLUMNS: &str = "retries, backoff_ms, retry_on_status, concurrency, priority";

/// An SQLite database.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
}

/// A `tasks` row as stored, before it is checked.
struct RawRow {
    name: String,
    location: String,
    description: Option<String>,
    inputs: String,
    outputs: Option<String>,
    timeout_ms: Option<i64>,
    retries: Option<i64>,
    backoff_ms: Option<i64>,
    retry_on_status: i64,
    concurrency: Option<i64>,
    priority: Option<i64>,
}

impl RawRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
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
        })
    }

    fn into_task(self, path: &Path) -> Result<Task, StoreError> {
        let corrupt = |message: String| StoreError::Corrupt {
            path: path.to_owned(),
            key: self.name.clone(),
            message,
        };
        let name = TaskName::new(self.name.as_str()).map_err(|e| corrupt(e.to_string()))?;
        let inputs: Value = serde_json::from_str(&self.inputs)
            .map_err(|e| corrupt(format!("inputs is not valid JSON: {e}")))?;
        let outputs: Option<Value> = self
            .outputs
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("outputs is not valid JSON: {e}")))?;
        let timeout = self
            .timeout_ms
            .map(|ms| {
                u64::try_from(ms)
                    .map(Duration::from_millis)
                    .map_err(|_| corrupt(format!("timeout_ms is negative ({ms})")))
            })
            .transpose()?;
        let policy = Policy {
            retries: self.retries.map(|n| n.clamp(0, u32::MAX.into()) as u32),
            backoff: self
                .backoff_ms
                .map(|ms| Duration::from_millis(ms.max(0) as u64)),
            retry_on_status: self.retry_on_status != 0,
            concurrency: self.concurrency.map(|n| n.clamp(0, u32::MAX.into()) as u32),
            priority: self.priority,
        };
        if self.location.is_empty() {
            return Err(corrupt("location is empty".into()));
        }
        Ok(Task {
            name,
            location: PathBuf::from(self.location),
            description: self.description,
            inputs,
            outputs,
            timeout,
            policy,
            formats: Default::default(),
        })
    }
}

impl SqliteStore {
    /// Opens the store at `path`. The database is opened (and, if needed,
    /// migrated) on first use; nothing is created until the first write.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(None),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every task, sorted by name.
    pub fn list(&self) -> Result<Vec<Task>, StoreError> {
        let rows = self.with_conn(false, |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS}, {POLICY_COLUMNS} FROM tasks ORDER BY name"
            ))?;
            let rows = stmt.query_map([], RawRow::read)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.unwrap_or_default()
            .into_iter()
            .map(|r| r.into_task(&self.path))
            .collect()
    }

    /// The task called `name`.
    pub fn get(&self, name: &TaskName) -> Result<Option<Task>, StoreError> {
        let row = self.with_conn(false, |conn| {
            conn.prepare(&format!(
                "SELECT {COLUMNS}, {POLICY_COLUMNS} FROM tasks WHERE name = ?1"
            ))?
            .query_row([name.as_str()], RawRow::read)
            .optional()
        })?;
        row.flatten().map(|r| r.into_task(&self.path)).transpose()
    }

    /// Stores `task`; with [`InsertMode::CreateNew`] a taken name is
    /// [`StoreError::Duplicate`]. Replacing keeps the original `created_at`.
    pub fn insert(&self, task: &Task, mode: InsertMode) -> Result<(), StoreError> {
        let location = task.location.to_str().ok_or_else(|| {
            self.sqlite_err(rusqlite::Error::ToSqlConversionFailure(
                format!(
                    "the location of task `{}` ({}) is not valid UTF-8",
                    task.name,
                    task.location.display()
                )
                .into(),
            ))
        })?;
        let timeout_ms = task
            .timeout
            .map(|d| {
                i64::try_from(d.as_millis()).map_err(|_| {
                    self.sqlite_err(rusqlite::Error::ToSqlConversionFailure(
                        format!("the timeout of task `{}` is too large", task.name).into(),
                    ))
                })
            })
            .transpose()?;
        let inputs = to_json(&task.inputs);
        let outputs = task.outputs.as_ref().map(to_json);
        let sql = format!(
            "INSERT INTO tasks ({COLUMNS}, {POLICY_COLUMNS}, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, {NOW}, {NOW})
             ON CONFLICT (name) DO UPDATE SET
                retries = excluded.retries,
                backoff_ms = excluded.backoff_ms,
                retry_on_status = excluded.retry_on_status,
                concurrency = excluded.concurrency,
                priority = excluded.priority,
                location = excluded.location,
                description = excluded.description,
                inputs = excluded.inputs,
                outputs = excluded.outputs,
                timeout_ms = excluded.timeout_ms,
                updated_at = excluded.updated_at"
        );
        let inserted = self.with_conn(true, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if mode == InsertMode::CreateNew {
                let taken = tx
                    .prepare("SELECT 1 FROM tasks WHERE name = ?1")?
                    .exists([task.name.as_str()])?;
                if taken {
                    return Ok(false);
                }
            }
            tx.prepare(&sql)?.execute(params![
                task.name.as_str(),
                location,
                task.description,
                inputs,
                outputs,
                timeout_ms,
                task.policy.retries,
                task.policy.backoff.map(|d| d.as_millis() as i64),
                task.policy.retry_on_status,
                task.policy.concurrency,
                task.policy.priority,
            ])?;
            tx.commit()?;
            Ok(true)
        })?;
        match inserted {
            Some(true) => Ok(()),
            _ => Err(StoreError::Duplicate {
                name: task.name.clone(),
            }),
        }
    }

    /// Removes and returns the task called `name`; [`StoreError::NotFound`] if absent.
    pub fn remove(&self, name: &TaskName) -> Result<Task, StoreError> {
        let path = &self.path;
        let removed = self.with_conn(false, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = tx
                .prepare(&format!(
                    "DELETE FROM tasks WHERE name = ?1 RETURNING {COLUMNS}, {POLICY_COLUMNS}"
                ))?
                .query_row([name.as_str()], RawRow::read)
                .optional()?;
            let Some(row) = row else {
                return Ok(None);
            };
            // A row we cannot read back is reported, not silently deleted.
            match row.into_task(path) {
                Ok(task) => {
                    tx.commit()?;
                    Ok(Some(Ok(task)))
                }
                Err(e) => Ok(Some(Err(e))),
            }
        })?;
        match removed.flatten() {
            Some(result) => result,
            None => Err(StoreError::NotFound { name: name.clone() }),
        }
    }

    fn sqlite_err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` on the connection, opening it first if needed. Without
    /// `create`, a missing database file gives `Ok(None)` and is not created.
    fn with_conn<T>(
        &self,
        create: bool,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            if !create && !self.path.exists() {
                return Ok(None);
            }
            *guard = Some(connect_retrying(&self.path, create)?);
        }
        match guard.as_mut() {
            Some(conn) => f(conn).map(Some).map_err(|e| self.sqlite_err(e)),
            None => Ok(None),
        }
    }
}

/// WAL pages after which a committing writer checkpoints (SQLite's default is 1000).
const WAL_AUTOCHECKPOINT: u32 = 100;

fn to_json(v: &Value) -> String {
    // Serializing a `Value` to a string cannot fail (its keys are strings).
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
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
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                action: "create directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    // The first read of the header: a file that is not a database fails here,
    // before anything could write to it.
    let version = user_version(&conn).map_err(sqlite)?;
    check_version(path, version)?;
    // Short-lived processes (`execute`, `submit`) would otherwise checkpoint
    // the WAL and fsync on every close (below). But the first connection of a
    // process that finds no other one open rebuilds the WAL index by reading
    // every valid WAL frame, so the WAL must stay short: an automatic
    // checkpoint every WAL_AUTOCHECKPOINT pages (SQLite's default, 1000 pages,
    // made every CLI call read up to 4 MB; see docs/performance.md).
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT};"
    ))
    .map_err(sqlite)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(sqlite)?;
    if version != SCHEMA_VERSION {
        // WAL is a property of the file and persists: set it once, when the
        // database is created or upgraded, not on every (hot-path) open.
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .map_err(sqlite)?;
        migrate(&mut conn, path)?;
    }
    Ok(conn)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
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
    let done = check_version(path, version)?;
    if done == 0 {
        let objects: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
                [],
                |r| r.get(0),
            )
            .map_err(sqlite)?;
        if objects > 0 {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                key: "user_version".into(),
                message: format!(
                    "the database holds {objects} tables or indexes but no task-executor schema version; \
                     it looks like another program's database"
                ),
            });
        }
    }
    for sql in MIGRATIONS.iter().skip(done) {
        tx.execute_batch(sql).map_err(sqlite)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    tx.commit().map_err(sqlite)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use super::*;

    use crate::registry::test_support::{name, task};

    /// Sub-second precision where the backend keeps it.
    fn full_task(n: &str) -> Task {
        crate::registry::test_support::full_task(n, Duration::from_millis(90_500))
    }

    fn store_in(dir: &tempfile::TempDir) -> (SqliteStore, PathBuf) {
        let path = dir.path().join("tasks.db");
        (SqliteStore::open(&path).unwrap(), path)
    }

    fn timestamps(path: &Path, n: &str) -> (String, String) {
        let conn = Connection::open(path).unwrap();
        conn.query_row(
            "SELECT created_at, updated_at FROM tasks WHERE name = ?1",
            [n],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_insert_get_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        let full = full_task("greet");
        let plain = task("alpha");
        store.insert(&full, InsertMode::CreateNew).unwrap();
        store.insert(&plain, InsertMode::CreateNew).unwrap();

        let other = SqliteStore::open(&path).unwrap();
        assert_eq!(other.get(&name("greet")).unwrap(), Some(full.clone()));
        assert_eq!(other.get(&name("nope")).unwrap(), None);
        assert_eq!(other.list().unwrap(), vec![plain.clone(), full.clone()]);

        let (created, updated) = timestamps(&path, "greet");
        assert_eq!(created, updated);
        assert!(
            created.len() == 24 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
            "{created}"
        );

        assert_eq!(store.remove(&name("greet")).unwrap(), full);
        assert_eq!(other.list().unwrap(), vec![plain]);
    }

    #[test]
    fn create_new_refuses_a_taken_name_and_replace_keeps_created_at() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        store.insert(&task("t"), InsertMode::CreateNew).unwrap();
        let (created, _) = timestamps(&path, "t");

        let changed = full_task("t");
        let err = store.insert(&changed, InsertMode::CreateNew).unwrap_err();
        assert!(
            matches!(&err, StoreError::Duplicate { name: n } if n.as_str() == "t"),
            "{err}"
        );
        assert_eq!(store.get(&name("t")).unwrap(), Some(task("t")));

        std::thread::sleep(Duration::from_millis(5));
        store.insert(&changed, InsertMode::Replace).unwrap();
        assert_eq!(store.list().unwrap(), vec![changed]);
        let (created_after, updated_after) = timestamps(&path, "t");
        assert_eq!(created_after, created);
        assert!(updated_after > created, "{updated_after} <= {created}");
    }

    #[test]
    fn removing_a_missing_task_is_not_found_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        store.insert(&task("a"), InsertMode::CreateNew).unwrap();
        let wal = dir.path().join("tasks.db-wal");
        let before = (fs::read(&path).unwrap(), fs::read(&wal).unwrap());

        let err = store.remove(&name("ghost")).unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { name: n } if n.as_str() == "ghost"),
            "{err}"
        );
        assert_eq!((fs::read(&path).unwrap(), fs::read(&wal).unwrap()), before);
        assert_eq!(store.list().unwrap(), vec![task("a")]);
    }

    #[test]
    fn reading_a_missing_database_does_not_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/tasks.db");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.list().unwrap(), vec![]);
        assert_eq!(store.get(&name("a")).unwrap(), None);
        assert!(matches!(
            store.remove(&name("a")),
            Err(StoreError::NotFound { .. })
        ));
        assert!(!path.exists());
        assert!(!path.parent().unwrap().exists());

        // The first write creates directory and file, and the same handle then reads it.
        store.insert(&task("a"), InsertMode::CreateNew).unwrap();
        assert!(path.is_file());
        assert_eq!(store.list().unwrap(), vec![task("a")]);
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_store_created_by_another_handle_is_seen_after_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let (reader, path) = store_in(&dir);
        assert_eq!(reader.list().unwrap(), vec![]);
        SqliteStore::open(&path)
            .unwrap()
            .insert(&task("late"), InsertMode::CreateNew)
            .unwrap();
        assert_eq!(reader.list().unwrap(), vec![task("late")]);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        let garbage =
            "not a database, just some text that is long enough to have a header\n".repeat(20);
        fs::write(&path, &garbage).unwrap();

        let err = store.list().unwrap_err();
        assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        let err = store.insert(&task("a"), InsertMode::Replace).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
        assert!(matches!(
            store.remove(&name("a")),
            Err(StoreError::Sqlite { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), garbage);
        assert!(!dir.path().join("tasks.db-wal").exists());
    }

    #[test]
    fn a_newer_schema_version_is_too_new() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let err = store.list().unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found, supported, .. }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err}"
        );
        assert!(matches!(
            store.insert(&task("a"), InsertMode::CreateNew),
            Err(StoreError::TooNew { .. })
        ));
    }

    #[test]
    fn another_programs_database_is_not_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY);")
                .unwrap();
        }
        let err = store.insert(&task("a"), InsertMode::CreateNew).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let conn = Connection::open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 0);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'tasks'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
    }

    #[test]
    fn rows_that_do_not_parse_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        store.insert(&task("good"), InsertMode::CreateNew).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            &format!(
                "INSERT INTO tasks ({COLUMNS}, created_at, updated_at)
                 VALUES ('bad', '/x', NULL, '{{not json', NULL, NULL, {NOW}, {NOW})"
            ),
            [],
        )
        .unwrap();
        let err = store.list().unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, .. } if key == "bad"),
            "{err}"
        );
        assert!(err.to_string().contains("inputs"), "{err}");
        assert!(store.remove(&name("bad")).is_err());
        // The failed remove rolled back: the row is still there to be fixed.
        assert!(matches!(
            store.get(&name("bad")),
            Err(StoreError::Corrupt { .. })
        ));

        conn.execute(
            &format!(
                "INSERT INTO tasks ({COLUMNS}, created_at, updated_at)
                 VALUES ('bad name', '/x', NULL, '{{}}', NULL, NULL, {NOW}, {NOW})"
            ),
            [],
        )
        .unwrap();
        conn.execute("DELETE FROM tasks WHERE name = 'bad'", [])
            .unwrap();
        assert!(matches!(
            store.list(),
            Err(StoreError::Corrupt { key, .. }) if key == "bad name"
        ));
        assert_eq!(store.get(&name("good")).unwrap(), Some(task("good")));
    }

    #[test]
    fn thirty_concurrent_writers_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("new/tasks.db"));
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let path = Arc::clone(&path);
                std::thread::spawn(move || {
                    let store = SqliteStore::open(&path).unwrap();
                    store
                        .insert(&full_task(&format!("task{i:02}")), InsertMode::CreateNew)
                        .unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let names: Vec<String> = SqliteStore::open(&path)
            .unwrap()
            .list()
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        let want: Vec<String> = (0..30).map(|i| format!("task{i:02}")).collect();
        assert_eq!(names, want);
    }
}
