//! Clear errors for what users got wrong (issue 14, "Clear errors"), each
//! driven through the real binary:
//!
//! - `--result-limit 0` is refused before anything runs
//! - every duration flag refuses less than 1 ms (it would be stored as 0)
//! - the worker's summary counts every run that failed
//! - a run id too short to be a prefix says so, in every `runs` command
//! - another program's SQLite database is "not a task-executor store",
//!   named, and left byte for byte as it was

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::{Value, json};

/// A task that leaves `ran` in its dir when it runs, and succeeds.
fn marker_task(env: &Env) -> std::path::PathBuf {
    let marker = env.dir.path().join("ran");
    env.task(
        "t",
        "t.sh",
        r#"{"type":"object"}"#,
        &format!(
            "touch {}\necho '{{\"status\":1,\"reason\":\"ok\",\"payload\":null}}'",
            marker.display()
        ),
    );
    marker
}

#[test]
fn a_result_limit_of_zero_is_refused_before_anything_runs() {
    let env = Env::new("db");
    let marker = marker_task(&env);
    for args in [
        &["execute", "t", "--result-limit", "0"][..],
        &["worker", "--until-idle", "--result-limit", "0"],
    ] {
        env.cmd()
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "invalid value '0' for '--result-limit <BYTES>': must be at least 1 byte",
            ));
    }
    assert!(!marker.exists(), "the task ran");
    env.cmd()
        .args(["execute", "t", "--result-limit", "1000"])
        .assert()
        .success();
    assert!(marker.exists());
}

#[test]
fn durations_under_a_millisecond_are_refused_by_every_duration_flag() {
    let env = Env::new("db");
    let marker = marker_task(&env);
    let t = env.dir.path().join("t.sh");
    let t = t.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["register", "u", "--location", t, "--timeout", "1ns"],
        &["register", "u", "--location", t, "--timeout", "999us"],
        &["register", "u", "--location", t, "--schema-timeout", "1ns"],
        &["register", "u", "--location", t, "--backoff", "500us"],
        &["execute", "t", "--timeout", "1ns"],
        &["execute", "t", "--grace", "1ns"],
        &["submit", "t", "--timeout", "1ns"],
        &["submit", "t", "--in", "1ns"],
        &["worker", "--until-idle", "--lease", "1ns"],
        &["worker", "--until-idle", "--drain", "1ns"],
        &["worker", "--until-idle", "--grace", "1ns"],
        &["worker", "--until-idle", "--poll", "1ns"],
        &["runs", "prune", "--older-than", "1ns"],
        &["mcp", "--grace", "1ns"],
    ];
    for args in cases {
        env.cmd()
            .args(*args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("must be at least 1ms"));
    }
    assert!(!marker.exists(), "the task ran");
    let names: Vec<Value> = env.json(&["list", "--json"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("t")], "`u` was registered");
    assert!(env.all_runs().is_empty(), "a run was queued");
    // 1 ms itself is accepted.
    env.cmd()
        .args(["register", "u", "--location", t, "--timeout", "1ms"])
        .assert()
        .success();
    assert_eq!(env.json(&["show", "u", "--json"])["timeout_ms"], 1);
}

#[test]
fn the_worker_summary_counts_every_run_that_failed() {
    let env = Env::new("db");
    env.task(
        "ok",
        "ok.sh",
        "{}",
        r#"echo '{"status":1,"reason":"ok","payload":null}'"#,
    );
    env.task(
        "no",
        "no.sh",
        "{}",
        r#"echo '{"status":0,"reason":"nope","payload":null}'"#,
    );
    env.task("crash", "crash.sh", "{}", "exit 7");
    env.task("gone", "gone.sh", "{}", "true");
    for task in ["ok", "no", "crash", "gone"] {
        env.submit_many(task, 1, "{}");
    }
    // Unregistered while its run waits: the worker cannot start it.
    env.cmd().args(["unregister", "gone"]).assert().success();
    let out = env.cmd().args(["worker", "--until-idle"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let summary = err
        .lines()
        .find(|l| l.contains(" stopped: "))
        .unwrap_or_else(|| panic!("no summary in {err}"));
    assert!(
        summary.ends_with(
            "stopped: 1 succeeded, 1 reported another status, 2 failed, 0 retried, \
             0 requeued at shutdown, 0 lost"
        ),
        "{summary}"
    );
}

#[test]
fn a_run_id_too_short_to_be_a_prefix_says_so_in_every_runs_command() {
    let env = Env::new("db");
    env.task("t", "t.sh", "{}", "true");
    env.submit_many("t", 1, "{}");
    for args in [
        &["runs", "show", "0193"][..],
        &["runs", "logs", "0193"],
        &["runs", "logs", "--follow", "0193"],
        &["runs", "cancel", "0193"],
    ] {
        env.cmd()
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "run id `0193` is too short: give the whole id or a prefix of at least 8 characters",
            ))
            .stderr(predicate::str::contains("not in the history").not());
    }
    let out = env
        .cmd()
        .args(["runs", "show", "0193", "--json"])
        .output()
        .unwrap();
    assert_eq!(json_stdout(&out)["error"]["kind"], "unknown_run");
    // Long enough but matching nothing: not in the history.
    env.cmd()
        .args(["runs", "show", "ffffffff"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "run `ffffffff` is not in the history",
        ));
}

#[test]
fn a_foreign_sqlite_database_is_named_and_left_untouched() {
    for (ddl, version) in [
        ("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", 42),
        ("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", 0),
        ("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT)", 1),
    ] {
        let env = Env::new("db");
        {
            let conn = rusqlite::Connection::open(&env.store).unwrap();
            conn.execute_batch(ddl).unwrap();
            conn.pragma_update(None, "user_version", version).unwrap();
        }
        let before = env.store_bytes();
        let script = env.script("t.sh", &task_script("{}", "true"));
        let commands: &[&[&str]] = &[
            &["list"],
            &["register", "t", "--location", script.to_str().unwrap()],
            &["execute", "t"],
            &["runs", "list"],
        ];
        for args in commands {
            env.cmd()
                .args(*args)
                .assert()
                .code(2)
                .stderr(predicate::str::contains(format!(
                    "`{}` is not a task-executor store",
                    env.store.display()
                )))
                .stderr(predicate::str::contains("this one was not modified"))
                .stderr(predicate::str::contains("invalid").not());
        }
        assert!(
            env.store_bytes() == before,
            "{ddl} v{version}: the file changed"
        );
        let wal = env.dir.path().join("tasks.db-wal");
        assert!(!wal.exists(), "{ddl} v{version}: a WAL was created");
    }
}
