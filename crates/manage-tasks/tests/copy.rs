//! `store copy` between real stores in temp dirs:
//!
//! - YAML → SQLite: the tasks (an unusable entry skipped and named); no history
//! - SQLite → SQLite: runs a real worker executed (a retry, a failure, logs of
//!   both streams), an inline run and a schedule, every field and log line
//!   kept; run twice, the second copies nothing
//! - SQLite → YAML: the tasks, and a notice that the history stayed
//! - a row that differs in the target: exit 4, named with its field, the
//!   batch not written
//! - queued and running runs are skipped with a notice, copied once finished
//! - a store copied onto itself, however it is named, or from nowhere: refused
//! - API tokens stay behind, with a notice

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// `store copy --from FROM --to TO [extra…]` run from `env`.
fn copy(env: &Env, from: &Path, to: &Path, extra: &[&str]) -> std::process::Output {
    env.cmd()
        .args(["store", "copy", "--from"])
        .arg(from)
        .arg("--to")
        .arg(to)
        .args(extra)
        .output()
        .unwrap()
}

/// [`copy`], asserting success; returns stdout.
fn copied(env: &Env, from: &Path, to: &Path) -> String {
    let out = copy(env, from, to, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// What a store holds, as the CLI shows it: tasks, schedules, every run
/// (newest first), and every attempt's log lines of each run.
fn contents(env: &Env, store: &Path) -> Value {
    let json = |args: &[&str]| {
        let out = env
            .cmd()
            .env("TASK_STORE", store)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    let tasks = json_stdout(&json(&["list", "--json"]));
    let schedules = json_stdout(&json(&["schedule", "list", "--json"]));
    let runs = json_stdout(&json(&["runs", "list", "--json", "--limit", "10000"]));
    let mut logs = Vec::new();
    for run in runs["items"].as_array().unwrap() {
        let id = run["run_id"].as_str().unwrap();
        for attempt in 1..=run["attempt"].as_u64().unwrap() {
            let out = json(&[
                "runs",
                "logs",
                id,
                "--attempt",
                &attempt.to_string(),
                "--json",
            ]);
            logs.push(stdout(&out));
        }
    }
    serde_json::json!({"tasks": tasks, "schedules": schedules, "runs": runs, "logs": logs})
}

/// A task that logs on both streams, takes a secret `pw`, fails (exit 3)
/// when `fail` is set, and fails its first attempt when `flaky` is set.
fn logger(env: &Env) {
    let marker = env.dir.path().join("flaky-ran");
    let run = format!(
        "read -r e\necho \"out line for $e\"\necho 'err line' >&2\n\
         case \"$e\" in *'\"fail\"'*) exit 3;; esac\n\
         case \"$e\" in *'\"flaky\"'*) [ -e {m} ] || {{ touch {m}; exit 3; }};; esac\n\
         echo '{{\"status\":1,\"reason\":\"ok\",\"payload\":{{\"n\":1}}}}'",
        m = marker.display()
    );
    let script = env.script(
        "logger.sh",
        &task_script(
            r#"{"type":"object","properties":{"pw":{"type":"string","writeOnly":true},"fail":{"type":"boolean"},"flaky":{"type":"boolean"}}}"#,
            &run,
        ),
    );
    env.cmd()
        .args(["-q", "register", "--name", "logger", "--retries", "1"])
        .args(["--backoff", "1ms", "--timeout", "30s", "--location"])
        .arg(&script)
        .assert()
        .success();
}

/// Runs a worker on `env`'s store until nothing is left to do.
fn drain(env: &Env) {
    env.cmd()
        .args(["-q", "worker", "--until-idle", "--wait-delayed"])
        .args(["--poll", "20ms", "--id", "w-copy"])
        .assert()
        .success();
}

#[test]
fn yaml_to_sqlite_copies_the_tasks_and_skips_what_it_cannot_use() {
    let env = Env::new("yaml");
    let script = env.script(
        "t.sh",
        &task_script(r#"{"type":"object"}"#, "echo '{\"status\":1}'"),
    );
    // As the original tool writes it, with a name we refuse.
    std::fs::write(
        &env.store,
        format!(
            "plain:\n  name: plain\n  location: {0}\n  schema:\n    type: object\nwith space:\n  name: with space\n  location: {0}\n  schema:\n    type: object\n",
            script.display()
        ),
    )
    .unwrap();
    env.cmd()
        .args(["-q", "register", "--name", "full", "--timeout", "90s"])
        .args(["--retries", "2", "--concurrency", "3", "--priority", "-1"])
        .args(["--formats", "annotate", "--location"])
        .arg(&script)
        .assert()
        .success();
    let target = env.dir.path().join("copy.db");

    let out = copy(&env, &env.store, &target, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "tasks: 2 copied, 0 unchanged, 1 skipped (unusable); no history in a YAML store\n"
    );
    assert!(
        stderr(&out).contains("1 entry in `") && stderr(&out).contains("`with space`"),
        "{}",
        stderr(&out)
    );
    let show = |store: &Path, name: &str| {
        let out = env
            .cmd()
            .env("TASK_STORE", store)
            .args(["show", name, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        json_stdout(&out)
    };
    for name in ["plain", "full"] {
        assert_eq!(show(&target, name), show(&env.store, name), "{name}");
    }
    assert_eq!(show(&target, "full")["policy"]["concurrency"], 3);
    // The copy is a working store.
    env.cmd()
        .env("TASK_STORE", &target)
        .args(["-q", "execute", "plain"])
        .assert()
        .success();

    assert_eq!(
        copied(&env, &env.store, &target),
        "tasks: 0 copied, 2 unchanged, 1 skipped (unusable); no history in a YAML store\n"
    );
}

#[test]
fn sqlite_to_sqlite_keeps_every_run_log_line_and_schedule_and_twice_copies_nothing() {
    let (src, dst) = (Env::new("db"), Env::new("db"));
    logger(&src);
    for args in [
        r#"{"pw":"hunter2"}"#,
        r#"{"fail":true}"#,
        r#"{"flaky":true}"#,
        "{}",
    ] {
        src.cmd()
            .args(["-q", "submit", "logger", "--taskArgs", args])
            .assert()
            .success();
    }
    drain(&src);
    src.cmd()
        .args([
            "-q",
            "execute",
            "logger",
            "--taskArgs",
            r#"{"pw":"s3cret"}"#,
        ])
        .assert()
        .success();
    src.cmd()
        .args(["-q", "schedule", "add", "logger", "--cron", "0 3 * * *"])
        .args(["--taskArgs", r#"{"pw":"nightly"}"#])
        .assert()
        .success();
    let before = contents(&src, &src.store);
    let runs = before["runs"]["items"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    let states: Vec<&str> = runs.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert!(states.contains(&"failed"), "{states:?}");
    assert!(
        runs.iter().any(|r| r["attempt"] == 2),
        "the flaky run was retried"
    );

    let out = copy(&src, &src.store, &dst.store, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "tasks: 1 copied, 0 unchanged; schedules: 1 copied, 0 unchanged; \
         runs: 5 copied, 0 unchanged, 0 skipped (queued or running)\n"
    );
    assert!(
        stderr(&out).contains("the copied schedules are in both stores now"),
        "{}",
        stderr(&out)
    );
    // Every field of every run, every log line, the schedule and the task.
    let after = contents(&src, &dst.store);
    assert_eq!(after, before);
    assert_eq!(
        contents(&src, &src.store),
        before,
        "the source is unchanged"
    );
    // No run's secret reached the target (the schedule's must: it fires with it).
    let wal = std::fs::read(dst.store.with_extension("db-wal")).unwrap_or_default();
    let bytes = String::from_utf8_lossy(&[dst.store_bytes(), wal].concat()).into_owned();
    assert!(bytes.contains("nightly"), "the schedule's secret arguments");
    for secret in ["hunter2", "s3cret"] {
        assert!(!bytes.contains(secret), "{secret} in the target");
    }

    let again = src
        .cmd()
        .args(["store", "copy", "--to"])
        .arg(&dst.store)
        .arg("--json")
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        json_stdout(&again),
        serde_json::json!({
            "tasks": {"copied": 0, "unchanged": 1, "skipped": 0},
            "schedules": {"copied": 0, "unchanged": 1, "skipped": 0},
            "runs": {"copied": 0, "unchanged": 5, "skipped": 0},
            "history": "copied"
        })
    );
    assert_eq!(contents(&src, &dst.store), before);
}

#[test]
fn sqlite_to_yaml_copies_the_tasks_and_says_the_history_stayed() {
    let env = Env::new("db");
    env.task("t", "t.sh", "{}", "echo '{\"status\":1}'");
    env.cmd().args(["-q", "execute", "t"]).assert().success();
    let target = env.dir.path().join("tasks.yaml");
    let out = copy(&env, &env.store, &target, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "tasks: 1 copied, 0 unchanged; schedules and runs not copied (a YAML store keeps tasks only)\n"
    );
    assert!(
        stderr(&out).contains("history was not copied"),
        "{}",
        stderr(&out)
    );
    let yaml = std::fs::read_to_string(&target).unwrap();
    assert!(yaml.starts_with("t:\n  name: t\n"), "{yaml}");
}

#[test]
fn a_row_that_differs_in_the_target_stops_the_copy_with_exit_4_and_writes_nothing_of_its_batch() {
    let (src, dst) = (Env::new("db"), Env::new("db"));
    logger(&src);
    src.cmd()
        .args(["-q", "execute", "logger"])
        .assert()
        .success();
    copied(&src, &src.store, &dst.store);
    let first = src.all_runs()[0]["run_id"].as_str().unwrap().to_owned();
    dst.sql(&format!(
        "UPDATE runs SET caller = 'mallory' WHERE id = '{first}'"
    ));
    // A new run after it: in the same batch, so it is not written either.
    src.cmd()
        .args(["-q", "execute", "logger"])
        .assert()
        .success();
    let held = contents(&src, &dst.store);

    let out = copy(&src, &src.store, &dst.store, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("run `{first}` is already in `"))
            && err.contains("with a different `caller`")
            && err.contains("nothing of its batch was written")
            && err.contains("runs prune --keep 0")
            && err.contains("copy into an empty store"),
        "{err}"
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert_eq!(contents(&src, &dst.store), held, "the target is unchanged");
    assert_eq!(held["runs"]["items"].as_array().unwrap().len(), 1);

    let json = copy(&src, &src.store, &dst.store, &["--json"]);
    assert_eq!(json.status.code(), Some(4));
    let doc = json_stdout(&json);
    assert_eq!(doc["error"]["kind"], "conflict", "{doc}");

    // A task that differs: named with its field and how to take the source's.
    dst.sql("UPDATE tasks SET description = 'edited'");
    let out = copy(&src, &src.store, &dst.store, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("task `logger` is already in `")
            && err.contains("a different `description`")
            && err.contains("unregister logger"),
        "{err}"
    );
}

#[test]
fn queued_and_running_runs_are_skipped_with_a_notice_and_copied_once_finished() {
    let (src, dst) = (Env::new("db"), Env::new("db"));
    logger(&src);
    src.cmd()
        .args(["-q", "execute", "logger"])
        .assert()
        .success();
    let queued = src.submit_many("logger", 3, "{}");

    let out = copy(&src, &src.store, &dst.store, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("runs: 1 copied, 0 unchanged, 3 skipped (queued or running)\n"),
        "{}",
        stdout(&out)
    );
    let from = src.store.display();
    assert!(
        stderr(&out).contains(&format!(
            "3 runs are queued or running in `{from}`; drain or cancel them and run `store copy` \
             again to copy them"
        )),
        "{}",
        stderr(&out)
    );
    // The target's workers have nothing to run twice.
    let dst_runs = dst.all_runs();
    assert_eq!(dst_runs.len(), 1);
    assert_eq!(dst_runs[0]["state"], "completed");

    src.cmd()
        .args(["-q", "runs", "cancel", &queued[0]])
        .assert()
        .success();
    let out = copy(&src, &src.store, &dst.store, &["-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("runs: 1 copied, 1 unchanged, 2 skipped (queued or running)\n"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).is_empty(), "-q: {}", stderr(&out));
    drain(&src);
    assert!(
        copied(&src, &src.store, &dst.store)
            .ends_with("runs: 2 copied, 2 unchanged, 0 skipped (queued or running)\n")
    );
    assert_eq!(
        contents(&src, &dst.store)["runs"],
        contents(&src, &src.store)["runs"]
    );
}

#[test]
fn a_store_is_never_copied_onto_itself_nor_from_nowhere() {
    let env = Env::new("db");
    env.task("t", "t.sh", "{}", "echo '{\"status\":1}'");
    env.cmd().args(["-q", "execute", "t"]).assert().success();
    std::fs::create_dir(env.dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(&env.store, env.dir.path().join("link.db")).unwrap();
    let bytes = env.store_bytes();
    for to in [
        "tasks.db",
        "./sub/../tasks.db",
        "./missing/../tasks.db",
        "sqlite://tasks.db",
        "link.db",
    ] {
        let out = env
            .cmd()
            .args(["store", "copy", "--from", "tasks.db", "--to", to])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{to}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is both the source and the target; copy into another store"),
            "{to}: {}",
            stderr(&out)
        );
    }
    assert_eq!(env.store_bytes(), bytes);

    let out = env
        .cmd()
        .args([
            "store", "copy", "--from", "typo.db", "--to", "new.db", "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json_stdout(&out)["error"]["kind"], "missing_store");
    assert!(
        stderr(&out).contains("the source store `typo.db` does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(!env.dir.path().join("new.db").exists());
}

/// Tokens are keyed to their store: not copied, and the copy says so.
#[test]
fn tokens_stay_behind_with_a_notice() {
    let (src, dst) = (Env::new("db"), Env::new("db"));
    logger(&src);
    src.cmd()
        .args(["tokens", "create", "--name", "ci", "--scope", "run"])
        .assert()
        .success();
    let out = copy(&src, &src.store, &dst.store, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("1 API token in") && said.contains("was not copied"),
        "{said}"
    );
    let listed = dst
        .cmd()
        .args(["tokens", "list", "--json"])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert_eq!(json_stdout(&listed)["items"], serde_json::json!([]));
}
