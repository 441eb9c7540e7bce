//! Run history, each test on SQLite and on PostgreSQL (`sqlite::NAME`,
//! `postgres::NAME`):
//!
//! - `execute` records its run: state, outcome, timings, masked arguments, logs by stream
//! - secret (`writeOnly` / `format: password`) values never reach the database or `--json`
//! - logs are bounded to head + tail with a marker saying what was cut
//! - `runs list` filters (task, state, since) and keyset pages
//! - `runs prune` by age and by count per task
//! - `runs logs --follow` while the run goes on
//! - a run id prefix; a history write failing mid-run is a warning; a killed
//!   `execute`'s run fails as `executor_lost`
//! - the YAML store says it keeps no history

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::json;

on_sql_backends!(
    execute_records_the_run_with_masked_arguments_and_its_logs,
    logs_keep_head_and_tail_with_a_marker_and_streams_in_order,
    runs_list_filters_and_pages_newest_first,
    prune_removes_old_runs_and_caps_each_task,
    logs_follow_streams_a_running_run_until_it_ends,
    run_ids_differ_early_and_an_ambiguous_prefix_says_so,
    the_next_page_hint_keeps_the_filters,
    a_history_write_that_fails_after_the_run_is_a_warning_not_a_failure,
    prune_keep_holds_whatever_else_is_given,
    a_run_whose_execute_was_killed_fails_as_executor_lost_and_is_never_rerun,
);

const SECRET_INPUTS: &str = r#"{"type":"object","properties":{"user":{"type":"string"},"token":{"type":"string","writeOnly":true},"db":{"type":"object","properties":{"password":{"type":"string","format":"password"}}}}}"#;

fn execute_records_the_run_with_masked_arguments_and_its_logs(env: Env) {
    env.task("secret", "secret.sh", SECRET_INPUTS, "read -r envelope\necho \"got $envelope\"\necho 'to stderr' >&2\necho '{\"status\":1,\"reason\":\"ok\",\"payload\":42}'");
    let out = env
        .cmd()
        .args(["execute", "--name", "secret", "--json", "--taskArgs"])
        .arg(r#"{"user":"ada","token":"tok-s3cret","db":{"password":"hunter2"}}"#)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json_stdout(&out);
    let err = stderr(&out);
    assert!(
        !err.contains("tok-s3cret") && !err.contains("hunter2"),
        "{err}"
    );

    let runs = env.all_runs();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["run_id"], report["run_id"]);
    assert_eq!(run["state"], "completed");
    assert_eq!(run["status"], 1);
    assert_eq!(run["payload"], 42);
    assert_eq!(run["attempt"], 1);
    assert_eq!(
        run["args"],
        json!({"user": "ada", "token": "********", "db": {"password": "********"}})
    );
    for key in ["queued_at", "started_at", "finished_at"] {
        assert!(run[key].is_string(), "{key}: {run}");
    }
    let id = run["run_id"].as_str().unwrap();
    let shown = env.json(&["runs", "show", id, "--json"]);
    assert_eq!(shown["args"], run["args"]);

    let logs = env.cmd().args(["runs", "logs", id]).output().unwrap();
    let text = stdout(&logs);
    assert!(text.contains("out| got {"), "{text}");
    assert!(text.contains("err| to stderr"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("tok-s3cret"),
        "{text}"
    );

    // Nowhere in the database either: its files (SQLite), its rows (PostgreSQL).
    if let Some(pg) = env.pg() {
        let dump = pg.dump();
        assert!(
            dump.contains(r#""user":"ada""#),
            "the dump holds no run: {dump}"
        );
        assert!(
            !dump.contains("hunter2") && !dump.contains("tok-s3cret"),
            "secret in the database: {dump}"
        );
        return;
    }
    for suffix in ["", "-wal"] {
        let bytes = std::fs::read(format!("{}{suffix}", env.store.display())).unwrap_or_default();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains("hunter2") && !hay.contains("tok-s3cret"),
            "secret in tasks.db{suffix}"
        );
    }
}

fn logs_keep_head_and_tail_with_a_marker_and_streams_in_order(env: Env) {
    env.task("loud", "loud.sh", "{}", "cat >/dev/null\nfor i in $(seq 0 1999); do printf 'line %04d %s\\n' $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done\necho '{\"status\":1}'");
    env.cmd()
        .args(["-q", "execute", "--name", "loud", "--log-limit", "20000"])
        .assert()
        .success();
    let id = env.all_runs()[0]["run_id"].as_str().unwrap().to_owned();
    let out = env.cmd().args(["runs", "logs", &id]).output().unwrap();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("out| line 0000 "), "{}", lines[0]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("lines (") && l.contains("bytes) cut")),
        "no marker"
    );
    assert_eq!(*lines.last().unwrap(), "out| {\"status\":1}");
    assert!(lines[lines.len() - 2].starts_with("out| line 1999 "));
    // About 20 000 bytes of 100-byte lines: ~200 lines kept of 2001.
    assert!(
        lines.len() < 230 && lines.len() > 150,
        "{} lines",
        lines.len()
    );
    // The kept lines are in order, around one gap.
    let nums: Vec<u32> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("out| line ")?.get(..4)?.parse().ok())
        .collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]));
    let run = env.json(&["runs", "show", &id, "--json"]);
    let cut = run["log_cut_lines"].as_u64().unwrap();
    assert_eq!(cut as usize + nums.len(), 2000, "{run}");
}

fn runs_list_filters_and_pages_newest_first(env: Env) {
    let script = env.task("alpha", "t.sh", "{}", "echo '{\"status\":1}'");
    env.register("beta", &script);
    let a = env.submit_many("alpha", 5, "{}");
    let b = env.submit_many("beta", 3, "{}");
    env.cmd().args(["runs", "cancel", &a[0]]).assert().success();

    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let beta = env.json(&["runs", "list", "--json", "--task", "beta"]);
    let mut want = b.clone();
    want.reverse();
    assert_eq!(ids(&beta), want);
    let cancelled = env.json(&["runs", "list", "--json", "--state", "cancelled"]);
    assert_eq!(ids(&cancelled), [a[0].clone()]);
    assert_eq!(
        env.json(&["runs", "list", "--json", "--since", "1h"])["items"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert!(
        env.json(&["runs", "list", "--json", "--since", "2999-01-01T00:00:00Z"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Keyset pages of 3 cover everything once, newest first.
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["runs", "list", "--json", "--limit", "3"];
        if let Some(c) = &after {
            args.extend(["--after", c.as_str()]);
        }
        let page = env.json(&args);
        all.extend(ids(&page));
        match page["next"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => break,
        }
    }
    let mut want: Vec<String> = a.iter().chain(&b).cloned().collect();
    want.reverse();
    assert_eq!(all, want);

    let table = env
        .cmd()
        .args(["runs", "list", "--limit", "2"])
        .output()
        .unwrap();
    assert!(stdout(&table).contains("beta"), "{}", stdout(&table));
    assert!(stderr(&table).contains("--after"), "{}", stderr(&table));
}

fn prune_removes_old_runs_and_caps_each_task(env: Env) {
    env.task("t", "t.sh", "{}", "echo '{\"status\":1}'");
    for id in env.submit_many("t", 4, "{}") {
        env.cmd().args(["runs", "cancel", &id]).assert().success();
    }
    let queued = env.submit_many("t", 1, "{}");
    env.cmd()
        .args(["runs", "prune", "--keep", "1"])
        .assert()
        .success()
        .stdout("Pruned 3 finished runs\n");
    std::thread::sleep(std::time::Duration::from_millis(20));
    env.cmd()
        .args(["runs", "prune", "--older-than", "10ms"])
        .assert()
        .success()
        .stdout("Pruned 1 finished runs\n");
    // Queued and running runs are never pruned.
    let left: Vec<_> = env.all_runs().iter().map(|r| r["run_id"].clone()).collect();
    assert_eq!(left, [json!(queued[0])]);
}

#[test]
fn the_yaml_store_says_it_keeps_no_history() {
    let env = Env::new("yaml");
    env.task("t", "t.sh", "{}", "echo '{\"status\":1}'");
    // execute works as before, unrecorded.
    env.cmd()
        .args(["-q", "execute", "--name", "t"])
        .assert()
        .success();
    for args in [
        &["runs", "list"][..],
        &["submit", "--name", "t"],
        &["worker", "--until-idle"],
    ] {
        let out = env.cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("not supported by the yaml store; use an SQLite or PostgreSQL store"),
            "{err}"
        );
    }
}

fn logs_follow_streams_a_running_run_until_it_ends(env: Env) {
    env.task(
        "slow",
        "slow.sh",
        "{}",
        "cat >/dev/null\necho first\nsleep 0.8\necho second >&2\nsleep 0.2\necho '{\"status\":1}'",
    );
    let mut exec = env.spawn(&["-q", "execute", "--name", "slow"]);
    let mut id = String::new();
    wait_until(10.0, "a running run", || {
        let runs = env.json(&["runs", "list", "--json", "--state", "running"]);
        match runs["items"][0]["run_id"].as_str() {
            Some(r) => {
                id = r.to_owned();
                true
            }
            None => false,
        }
    });
    let out = env
        .cmd()
        .args(["runs", "logs", "--follow", &id])
        .output()
        .unwrap();
    assert!(exec.wait().unwrap().success());
    assert_eq!(
        stdout(&out),
        "out| first\nerr| second\nout| {\"status\":1}\n",
        "{}",
        stderr(&out)
    );
}

/// Runs queued together have ids that differ from their first characters,
/// so a short prefix picks one; a prefix several runs share says how many.
fn run_ids_differ_early_and_an_ambiguous_prefix_says_so(env: Env) {
    env.task("t", "t.sh", "{}", "echo '{\"status\":1}'");
    let ids = env.submit_many("t", 50, "{}");
    let prefixes: std::collections::HashSet<&str> = ids.iter().map(|id| &id[..8]).collect();
    assert_eq!(
        prefixes.len(),
        ids.len(),
        "8-character prefixes collide: {ids:?}"
    );
    let shown = env.json(&["runs", "show", &ids[7][..8], "--json"]);
    assert_eq!(shown["run_id"], ids[7].as_str());

    // Two runs whose ids share a prefix (written as another tool might have).
    for (i, suffix) in ["1", "2"].iter().enumerate() {
        env.sql(&format!(
            "UPDATE runs SET id = 'abcdef01-0000-4000-8000-00000000000{suffix}' WHERE id = '{}';",
            ids[i]
        ));
    }
    env.cmd()
        .args(["runs", "show", "abcdef01"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "ambiguous: 2 runs start with `abcdef01`; give more characters of the id",
        ));
    let out = env
        .cmd()
        .args(["runs", "show", "abcdef01", "--json"])
        .output()
        .unwrap();
    assert_eq!(json_stdout(&out)["error"]["kind"], "ambiguous_run");
    env.cmd()
        .args([
            "runs",
            "show",
            "abcdef01-0000-4000-8000-000000000002",
            "--json",
        ])
        .assert()
        .success();
    env.cmd()
        .args(["runs", "show", "abc"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "run id `abc` is too short: give the whole id or a prefix of at least 8 characters",
        ));
}

/// The hint for the next page repeats the filters of this one.
fn the_next_page_hint_keeps_the_filters(env: Env) {
    let script = env.task("alpha", "t.sh", "{}", "echo '{\"status\":1}'");
    env.register("beta", &script);
    env.submit_many("alpha", 2, "{}");
    let beta = env.submit_many("beta", 3, "{}");
    let out = env
        .cmd()
        .args([
            "runs", "list", "beta", "--state", "queued", "--since", "1 hour", "--limit", "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let hint = stderr(&out);
    let command = hint
        .lines()
        .find_map(|l| l.strip_prefix("more: manage_tasks "))
        .unwrap_or_else(|| panic!("no hint in {hint}"));
    assert!(
        command.starts_with(
            "runs list --name beta --state queued --since '1 hour' --limit 2 --after "
        ),
        "{command}"
    );
    // The hint, run as printed (through a shell), gives the rest of beta's runs.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("\"$MT\" {command} --json"))
        .env("MT", assert_cmd::cargo::cargo_bin("manage_tasks"))
        .env("TASK_STORE", &env.store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rest = json_stdout(&out);
    let ids: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [beta[0].as_str()]);
    assert!(rest["next"].is_null());
}

fn a_history_write_that_fails_after_the_run_is_a_warning_not_a_failure(env: Env) {
    let dir = env.dir.path();
    env.task(
        "t",
        "t.sh",
        "{}",
        &format!(
            "read -r _\necho ran >> {ran}\ntouch {started}\nwhile [ ! -e {go} ]; do sleep 0.01; done\n\
             echo '{{\"status\":1,\"reason\":\"ok\",\"payload\":7}}'",
            ran = dir.join("ran").display(),
            started = dir.join("started").display(),
            go = dir.join("go").display(),
        ),
    );
    let mut child = env.spawn(&["execute", "t", "--json"]);
    wait_until(10.0, "the task to start", || dir.join("started").exists());
    // While it runs, history stops taking writes (as a full disk would).
    let (refuse, allow) = match env.pg() {
        None => (
            "CREATE TRIGGER refuse BEFORE UPDATE ON runs BEGIN SELECT RAISE(FAIL, 'disk is full (test)'); END;",
            "DROP TRIGGER refuse;",
        ),
        Some(_) => (
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'disk is full (test)'; END $$; \
             CREATE TRIGGER refuse BEFORE UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION refuse();",
            "DROP TRIGGER refuse ON runs;",
        ),
    };
    env.sql(refuse);
    std::fs::write(dir.join("go"), "").unwrap();
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(dir.join("bg.err")).unwrap();
    // The task's outcome decides the exit code; the failed write is a warning.
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: cannot record the run's end in history")
            && err.contains("disk is full (test)"),
        "{err}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bg.out")).unwrap()).unwrap();
    assert_eq!(report["state"], "completed", "{report}");
    assert_eq!(report["payload"], 7);
    let warnings = report["warnings"].as_array().expect("warnings in --json");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("disk is full (test)")),
        "{report}"
    );
    env.sql(allow);
    // Ran once; a worker never runs it again.
    env.cmd()
        .args(["-q", "worker", "--until-idle", "--poll", "20ms"])
        .timeout(std::time::Duration::from_secs(1))
        .output()
        .unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("ran")).unwrap(), "ran\n");
}

fn prune_keep_holds_whatever_else_is_given(env: Env) {
    env.task("t", "t.sh", "{}", "echo '{\"status\":1}'");
    for id in env.submit_many("t", 5, "{}") {
        env.cmd().args(["runs", "cancel", &id]).assert().success();
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    env.cmd()
        .args(["runs", "prune", "--older-than", "1ms", "--keep", "3"])
        .assert()
        .success()
        .stdout("Pruned 2 finished runs\n");
    assert_eq!(env.all_runs().len(), 3);
    env.cmd()
        .args(["runs", "prune", "--older-than", "1ms", "--keep", "10"])
        .assert()
        .success()
        .stdout("Pruned 0 finished runs\n");
    assert_eq!(env.all_runs().len(), 3);
}

fn a_run_whose_execute_was_killed_fails_as_executor_lost_and_is_never_rerun(env: Env) {
    let dir = env.dir.path();
    env.task(
        "slow",
        "slow.sh",
        "{}",
        &format!(
            "read -r _\necho $$ > {}\necho ran >> {}\nexec sleep 30",
            dir.join("pid").display(),
            dir.join("ran").display()
        ),
    );
    let mut execute = env.spawn(&["execute", "slow"]);
    wait_until(10.0, "the task to start", || dir.join("ran").exists());
    signal(execute.id(), "-KILL");
    execute.wait().unwrap();
    let runs = env.all_runs();
    assert_eq!(runs[0]["state"], "running", "{}", runs[0]);
    let id = runs[0]["run_id"].as_str().unwrap().to_owned();
    // Its lease lapses (as 30 s would make it)...
    env.sql("UPDATE runs SET lease_until = 0;");
    let worker = env
        .cmd()
        .args(["worker", "--until-idle", "--poll", "20ms"])
        .output()
        .unwrap();
    assert!(worker.status.success(), "{}", stderr(&worker));
    // ...and a worker settles it as failed, without running it again.
    let r = env.json(&["runs", "show", &id, "--json"]);
    assert_eq!(r["state"], "failed", "{r}");
    assert_eq!(r["error"]["kind"], "executor_lost", "{r}");
    assert_eq!(r["attempt"], 1, "{r}");
    assert_eq!(std::fs::read_to_string(dir.join("ran")).unwrap(), "ran\n");
    // SIGKILL left the task behind; it is the test's to stop.
    let pid = std::fs::read_to_string(dir.join("pid")).unwrap();
    signal(pid.trim().parse().unwrap(), "-KILL");
}
