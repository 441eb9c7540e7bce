//! What only the SQLite backend has: files, schema versions, migrations,
//! and rows written by hand. The contract's behaviour is in the conformance suite.

use std::fs;

use rusqlite::Connection;
use serde_json::json;

use super::*;
use crate::history::RunState;
use crate::store::contract::{RunLookup, RunStore};
use crate::store::test_support::{name, task};
use crate::task::Policy;

fn store_in(dir: &tempfile::TempDir) -> (SqliteStore, PathBuf) {
    let path = dir.path().join("tasks.db");
    (SqliteStore::open(&path), path)
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

#[tokio::test]
async fn replacing_keeps_created_at() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    store
        .insert(&task("t"), InsertMode::CreateNew)
        .await
        .unwrap();
    let (created, updated) = timestamps(&path, "t");
    assert_eq!(created, updated);
    assert!(
        created.len() == 24 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "{created}"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    store.insert(&task("t"), InsertMode::Replace).await.unwrap();
    let (created_after, updated_after) = timestamps(&path, "t");
    assert_eq!(created_after, created);
    assert!(updated_after > created, "{updated_after} <= {created}");
}

#[tokio::test]
async fn removing_a_missing_task_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    store
        .insert(&task("a"), InsertMode::CreateNew)
        .await
        .unwrap();
    let wal = dir.path().join("tasks.db-wal");
    let before = (fs::read(&path).unwrap(), fs::read(&wal).unwrap());
    assert!(matches!(
        store.remove(&name("ghost")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!((fs::read(&path).unwrap(), fs::read(&wal).unwrap()), before);
}

#[tokio::test]
async fn reading_a_missing_database_does_not_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/tasks.db");
    let store = SqliteStore::open(&path);
    assert_eq!(store.list().await.unwrap(), vec![]);
    assert_eq!(store.get(&name("a")).await.unwrap(), None);
    assert!(matches!(
        store.remove(&name("a")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.get_run("01234567").await.unwrap(), RunLookup::Missing);
    assert_eq!(store.list_schedules().await.unwrap(), vec![]);
    assert!(!store.remove_schedule("x").await.unwrap());
    assert_eq!(store.active().await.unwrap(), Default::default());
    assert!(!path.exists());
    assert!(!path.parent().unwrap().exists());

    // The first write creates directory and file, and the same handle then reads it.
    store
        .insert(&task("a"), InsertMode::CreateNew)
        .await
        .unwrap();
    assert!(path.is_file());
    assert_eq!(store.list().await.unwrap(), vec![task("a")]);
    let conn = Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
}

#[tokio::test]
async fn a_store_created_by_another_handle_is_seen_after_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, path) = store_in(&dir);
    assert_eq!(reader.list().await.unwrap(), vec![]);
    SqliteStore::open(&path)
        .insert(&task("late"), InsertMode::CreateNew)
        .await
        .unwrap();
    assert_eq!(reader.list().await.unwrap(), vec![task("late")]);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    let garbage =
        "not a database, just some text that is long enough to have a header\n".repeat(20);
    fs::write(&path, &garbage).unwrap();

    let err = store.list().await.unwrap_err();
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    let err = store
        .insert(&task("a"), InsertMode::Replace)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
    assert!(matches!(
        store.remove(&name("a")).await,
        Err(StoreError::Sqlite { .. })
    ));
    assert!(matches!(
        store.enqueue(&[]).await,
        Err(StoreError::Sqlite { .. })
    ));
    assert_eq!(fs::read_to_string(&path).unwrap(), garbage);
    assert!(!dir.path().join("tasks.db-wal").exists());
}

#[tokio::test]
async fn a_newer_schema_version_is_too_new_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let before = fs::read(&path).unwrap();
    let err = store.list().await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found, supported, .. }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err}"
    );
    assert!(matches!(
        store.insert(&task("a"), InsertMode::CreateNew).await,
        Err(StoreError::TooNew { .. })
    ));
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[tokio::test]
async fn another_programs_database_is_not_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY);")
            .unwrap();
    }
    let err = store
        .insert(&task("a"), InsertMode::CreateNew)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
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

/// Another program's database, whatever its `user_version` (none, one we
/// know, one from the future) and even with a `tasks` table of its own, is
/// "not a task-executor store", named, and left byte for byte as it was
/// (no WAL switch, no `-wal`/`-shm` files).
#[tokio::test]
async fn foreign_databases_are_named_and_left_byte_for_byte() {
    let notes = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); \
                 INSERT INTO notes (body) VALUES ('keep me');";
    let todo = "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT); \
                INSERT INTO tasks (title) VALUES ('buy milk');";
    let cases = [
        (notes, 0),
        (notes, 1),
        (notes, SCHEMA_VERSION),
        (notes, 42),
        (todo, 0),
        (todo, 2),
    ];
    for (ddl, version) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = store_in(&dir);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(ddl).unwrap();
            conn.pragma_update(None, "user_version", version).unwrap();
        }
        let before = fs::read(&path).unwrap();
        for err in [
            store.list().await.unwrap_err(),
            store
                .insert(&task("a"), InsertMode::CreateNew)
                .await
                .unwrap_err(),
            store.enqueue(&[]).await.unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(
                matches!(err, StoreError::Foreign { .. }),
                "{ddl} v{version}: {text}"
            );
            assert!(
                text.contains(&format!(
                    "`{}` is not a task-executor store",
                    path.display()
                )),
                "{text}"
            );
            assert!(text.contains("was not modified"), "{text}");
        }
        assert_eq!(fs::read(&path).unwrap(), before, "{ddl} v{version}");
        assert!(
            !dir.path().join("tasks.db-wal").exists(),
            "{ddl} v{version}"
        );
        assert!(
            !dir.path().join("tasks.db-shm").exists(),
            "{ddl} v{version}"
        );
    }
}

#[tokio::test]
async fn rows_that_do_not_parse_are_corrupt_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    store
        .insert(&task("good"), InsertMode::CreateNew)
        .await
        .unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        &format!(
            "INSERT INTO tasks (name, location, inputs, created_at, updated_at)
             VALUES ('bad', '/x', '{{not json', {NOW}, {NOW})"
        ),
        [],
    )
    .unwrap();
    let err = store.list().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { key, what: "task", .. } if key == "bad"),
        "{err}"
    );
    assert!(err.to_string().contains("inputs"), "{err}");
    assert!(store.remove(&name("bad")).await.is_err());
    // The failed remove rolled back: the row is still there to be fixed.
    assert!(matches!(
        store.get(&name("bad")).await,
        Err(StoreError::Corrupt { .. })
    ));
    conn.execute(
        &format!(
            "INSERT INTO tasks (name, location, inputs, created_at, updated_at)
             VALUES ('bad name', '/x', '{{}}', {NOW}, {NOW})"
        ),
        [],
    )
    .unwrap();
    conn.execute("DELETE FROM tasks WHERE name = 'bad'", [])
        .unwrap();
    assert!(matches!(
        store.list().await,
        Err(StoreError::Corrupt { key, .. }) if key == "bad name"
    ));
    assert_eq!(store.get(&name("good")).await.unwrap(), Some(task("good")));
    conn.execute(
        "UPDATE tasks SET formats = 'sometimes' WHERE name = 'good'",
        [],
    )
    .unwrap();
    assert!(matches!(
        store.get(&name("good")).await,
        Err(StoreError::Corrupt { .. })
    ));
}

/// A copy of a checked-in database of an old schema version.
fn fixture(dir: &tempfile::TempDir, file: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file);
    let dst = dir.path().join(file);
    fs::copy(src, &dst).unwrap();
    dst
}

#[tokio::test]
async fn the_oldest_schema_migrates_and_keeps_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir, "schema-v1.db");
    assert_eq!(user_version(&Connection::open(&path).unwrap()).unwrap(), 1);
    let store = SqliteStore::open(&path);
    let tasks = store.list().await.unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["greet", "plain"]);
    let greet = &tasks[0];
    assert_eq!(greet.location, Path::new("/opt/tasks/greet.sh"));
    assert_eq!(greet.description.as_deref(), Some("Greets someone"));
    assert_eq!(greet.timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        greet.inputs,
        json!({"type": "object", "properties": {"name": {"type": "string"}}})
    );
    assert_eq!(greet.policy, Policy::default());
    assert_eq!(greet.formats, Formats::Assert);
    assert_eq!(
        user_version(&Connection::open(&path).unwrap()).unwrap(),
        SCHEMA_VERSION
    );
    // And it works as a current store.
    let run = crate::queue::new_run(greet, &json!({"name": "Ada"}), "me");
    store.enqueue(std::slice::from_ref(&run)).await.unwrap();
    assert_eq!(
        store
            .claim("w", 1, Duration::from_secs(5), &Default::default())
            .await
            .unwrap()[0]
            .id,
        run.id
    );
}

#[tokio::test]
async fn a_schema_v2_store_keeps_its_runs_order_and_policies() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(&dir, "schema-v2.db");
    let store = SqliteStore::open(&path);
    let greet = store.get(&name("greet")).await.unwrap().unwrap();
    assert_eq!(greet.policy.retries, Some(2));
    assert_eq!(greet.policy.backoff, Some(Duration::from_secs(2)));
    assert_eq!(
        (greet.policy.priority, greet.policy.concurrency),
        (Some(3), Some(2))
    );
    assert_eq!(greet.timeout, Some(Duration::from_secs(30)));
    // Tags and the worker registry came later: none of either.
    assert!(greet.policy.tags.is_empty());
    assert!(store.list_workers().await.unwrap().is_empty());
    let page = store
        .list_runs(&crate::history::RunFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let states: Vec<(&str, RunState)> = page
        .runs
        .iter()
        .map(|r| (r.task.as_str(), r.state))
        .collect();
    // Newest first, as they were queued (two in-process runs, then two submitted).
    assert_eq!(
        states,
        [
            ("greet", RunState::Queued),
            ("secret", RunState::Queued),
            ("greet", RunState::Completed),
            ("secret", RunState::Completed),
        ]
    );
    assert_eq!(page.runs[3].args, json!({"pw": "********", "n": 1}));
    // The in-process runs of schema 2 are marked inline: never re-run by a worker.
    let inline: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM runs WHERE inline = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(inline, 2);
    // The submitted secret run still carries its real arguments for a worker.
    let claimed = store
        .claim("w", 5, Duration::from_secs(5), &Default::default())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the other one is delayed an hour");
    assert_eq!(claimed[0].args, json!({"pw": "s3cret", "n": 2}));
    let schedules = store.list_schedules().await.unwrap();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0].cron, "0 9 * * *");
    // New runs go after the old ones.
    let t = store.get(&name("secret")).await.unwrap().unwrap();
    let run = crate::queue::new_run(&t, &json!({}), "me");
    store.enqueue(std::slice::from_ref(&run)).await.unwrap();
    let newest = store
        .list_runs(&crate::history::RunFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(newest.runs[0].id, run.id);
}
