//! Every `--json` shape, pinned: the real binary on real scripts, its output
//! snapshotted with what changes from run to run (ids, times, paths,
//! durations, pids) replaced by a placeholder naming the field.
//! `docs/json.md` documents these shapes; a change here must change it too.
//! The shapes that come from the store are pinned on SQLite and PostgreSQL
//! against the same snapshots (`sqlite::NAME`, `postgres::NAME`): every
//! backend gives the same JSON.

mod common;

use std::time::Duration;

use common::{Env, json_stdout, on_sql_backends, stderr, stdout, wait_until};
use serde_json::{Value, json};

on_sql_backends!(tasks, runs, queue_and_schedules, workers, tokens_and_audit);

/// Fields whose values differ between runs, by key.
const VOLATILE: &[&str] = &[
    "run_id",
    "id",
    "queued_at",
    "available_at",
    "started_at",
    "finished_at",
    "next_fire_at",
    "created_at",
    "duration_ms",
    "worker",
    "location",
    "next",
    "schedule",
    "host",
    "pid",
    "last_seen",
    "last_seen_ago_ms",
    "secret",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "at",
];

/// `v` with every volatile value that is set replaced by `"[key]"`.
fn stable(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if VOLATILE.contains(&k.as_str()) && !v.is_null() {
                        *v = Value::String(format!("[{k}]"));
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// Each stdout line as JSON.
fn json_lines(out: &std::process::Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A task with a secret input, a declared output and a timeout.
fn greeter(env: &Env) {
    let script = env.script(
        "greet.sh",
        r#"#!/bin/bash
if [ "$1" = schema ]; then
  echo '{"description":"Greets someone","inputs":{"type":"object","required":["name"],"properties":{"name":{"type":"string"},"token":{"type":"string","writeOnly":true},"sleep":{"type":"number"}}},"outputs":{"type":"object","required":["status"]}}'
  exit 0
fi
read -r envelope
echo "greeting with $envelope" >&2
sleep "$(echo "$envelope" | sed -n 's/.*"sleep":\([0-9.]*\).*/\1/p')" 2>/dev/null
echo '{"status":1,"reason":"ok","payload":{"greeting":"hello"}}'
"#,
    );
    env.cmd()
        .args([
            "-q",
            "register",
            "--name",
            "greet",
            "--timeout",
            "30s",
            "--retries",
            "2",
        ])
        .arg("--location")
        .arg(&script)
        .assert()
        .success();
}

fn tasks(env: Env) {
    let script = env.script(
        "t.sh",
        &common::task_script(r#"{"type":"object"}"#, "echo '{\"status\":1}'"),
    );
    let out = env
        .cmd()
        .args([
            "-q",
            "register",
            "--name",
            "plain",
            "--json",
            "--tags",
            "linux,gpu",
        ])
        .arg("--location")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_json_snapshot!("register", stable(json_stdout(&out)));
    greeter(&env);
    insta::assert_json_snapshot!("show", stable(env.json(&["-q", "show", "greet", "--json"])));
    insta::assert_json_snapshot!("list", stable(env.json(&["-q", "list", "--json"])));
}

#[test]
fn list_with_unusable_entries() {
    // A YAML store the original tool wrote, with a name we refuse and `schema: null`.
    let env = Env::new("yaml");
    let script = env.script(
        "t.sh",
        &common::task_script(r#"{"type":"object"}"#, "echo '{\"status\":1}'"),
    );
    std::fs::write(
        &env.store,
        format!(
            "nothing:\n  name: nothing\n  location: {0}\n  schema: null\nplain:\n  name: plain\n  location: {0}\n  schema:\n    type: object\nwith space:\n  name: with space\n  location: {0}\n  schema:\n    type: object\n",
            script.display()
        ),
    )
    .unwrap();
    insta::assert_json_snapshot!("list_unusable", stable(env.json(&["-q", "list", "--json"])));
}

fn runs(env: Env) {
    greeter(&env);
    let args = r#"{"name":"Ada","token":"hunter2"}"#;
    let done = env.json(&["-q", "execute", "greet", "--json", "--taskArgs", args]);
    insta::assert_json_snapshot!("execute", stable(done.clone()));
    let id = done["run_id"].as_str().unwrap();
    insta::assert_json_snapshot!(
        "runs_show",
        stable(env.json(&["-q", "runs", "show", id, "--json"]))
    );

    let failed = env
        .cmd()
        .args(["-q", "execute", "greet", "--json", "--timeout", "200ms"])
        .args(["--taskArgs", r#"{"name":"Bo","sleep":5}"#])
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(3), "{}", stderr(&failed));
    insta::assert_json_snapshot!("execute_timed_out", stable(json_stdout(&failed)));

    let invalid = env
        .cmd()
        .args([
            "-q",
            "execute",
            "greet",
            "--json",
            "--taskArgs",
            r#"{"name":5}"#,
        ])
        .output()
        .unwrap();
    assert_eq!(invalid.status.code(), Some(2));
    insta::assert_json_snapshot!("execute_invalid_args", json_stdout(&invalid));

    let logs = env
        .cmd()
        .args(["-q", "runs", "logs", id, "--json"])
        .output()
        .unwrap();
    insta::assert_json_snapshot!("runs_logs", json_lines(&logs));

    let listed = env.json(&["-q", "runs", "list", "--json", "--limit", "1"]);
    assert!(listed["next"].is_string(), "{listed}");
    insta::assert_json_snapshot!("runs_list", stable(listed));
}

#[test]
fn batch() {
    let env = Env::new("db");
    greeter(&env);
    let out = env
        .cmd()
        .args([
            "-q",
            "execute",
            "greet",
            "--json",
            "--parallel",
            "1",
            "--batch",
            "-",
        ])
        .write_stdin("{\"name\":\"a\"}\n{oops\n{\"name\":1}\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    insta::assert_json_snapshot!("execute_batch", stable(Value::Array(json_lines(&out))));
}

fn queue_and_schedules(env: Env) {
    greeter(&env);
    let queued = env.json(&[
        "-q",
        "submit",
        "greet",
        "--json",
        "--taskArgs",
        r#"{"name":"Cy"}"#,
    ]);
    insta::assert_json_snapshot!("submit", stable(queued.clone()));
    let id = queued["run_id"].as_str().unwrap().to_owned();
    // No worker is running: `runs show` says so.
    insta::assert_json_snapshot!(
        "runs_show_waiting",
        stable(env.json(&["-q", "runs", "show", &id, "--json"]))
    );
    let cancelled = env.json(&["-q", "runs", "cancel", &id, "--json"]);
    insta::assert_json_snapshot!("runs_cancel", stable(cancelled));
    let cancelled_again = env.json(&["-q", "runs", "cancel", &id, "--json"]);
    assert_eq!(
        cancelled_again["result"],
        json!({"already_over": "cancelled"})
    );

    let mut worker = env.spawn(&["-q", "worker", "--poll", "20ms"]);
    let waited = env
        .cmd()
        .args([
            "-q",
            "submit",
            "greet",
            "--wait",
            "--json",
            "--taskArgs",
            r#"{"name":"Di"}"#,
        ])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    common::signal(worker.id(), "-TERM");
    assert!(worker.wait().unwrap().success());
    assert!(waited.status.success(), "{}", stderr(&waited));
    insta::assert_json_snapshot!("submit_wait", stable(json_stdout(&waited)));

    let schedule = env.json(&[
        "-q",
        "schedule",
        "add",
        "greet",
        "--cron",
        "0 9 * * *",
        "--json",
        "--taskArgs",
        r#"{"name":"cron","token":"t0ken"}"#,
    ]);
    insta::assert_json_snapshot!("schedule_add", stable(schedule));
    insta::assert_json_snapshot!(
        "schedule_list",
        stable(env.json(&["-q", "schedule", "list", "--json"]))
    );

    wait_until(5.0, "two finished runs", || env.all_runs().len() == 2);
    let pruned = env.json(&["-q", "runs", "prune", "--keep", "0", "--json"]);
    insta::assert_json_snapshot!("runs_prune", pruned);
}

fn workers(env: Env) {
    let mut worker = env.spawn(&[
        "-q",
        "worker",
        "--id",
        "w-1",
        "--tags",
        "linux,gpu",
        "--concurrency",
        "2",
        "--lease",
        "1m",
    ]);
    let listed = || env.json(&["-q", "workers", "list", "--json"]);
    wait_until(10.0, "the worker registered", || {
        listed()["items"].as_array().is_some_and(|a| a.len() == 1)
    });
    insta::assert_json_snapshot!("workers_list", stable(listed()));
    common::signal(worker.id(), "-TERM");
    assert!(worker.wait().unwrap().success());
}

fn tokens_and_audit(env: Env) {
    // As user `ada`: the audit log's actor is `cli:ada`.
    let json = |args: &[&str]| {
        let out = env.cmd().env("USER", "ada").args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        json_stdout(&out)
    };
    let created = json(&[
        "-q",
        "tokens",
        "create",
        "--name",
        "ci",
        "--scope",
        "run",
        "--expires",
        "30d",
        "--json",
    ]);
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("te_") && secret.len() == 67, "{secret}");
    insta::assert_json_snapshot!("tokens_create", stable(created));
    json(&[
        "-q", "tokens", "create", "--name", "ops", "--scope", "admin", "--json",
    ]);
    let revoked = json(&["-q", "tokens", "revoke", "ops", "--json"]);
    insta::assert_json_snapshot!("tokens_revoke", stable(revoked));
    let listed = json(&["-q", "tokens", "list", "--json"]);
    assert!(!listed.to_string().contains(&secret[3..]), "{listed}");
    insta::assert_json_snapshot!("tokens_list", stable(listed));
    let audit = json(&["-q", "audit", "list", "--json"]);
    assert!(!audit.to_string().contains(&secret[3..]), "{audit}");
    insta::assert_json_snapshot!("audit_list", stable(audit));
}

#[test]
fn a_yaml_store_without_history_says_so_in_json() {
    let env = Env::new("yaml");
    greeter(&env);
    let out = env
        .cmd()
        .args(["-q", "runs", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    insta::assert_json_snapshot!("unsupported", json_stdout(&out));
    // `execute` still runs, and its run has the same shape.
    let done = env.json(&[
        "-q",
        "execute",
        "greet",
        "--json",
        "--taskArgs",
        r#"{"name":"Ed"}"#,
    ]);
    assert_eq!(done["state"], "completed");
    assert_eq!(done["worker"], Value::Null);
    assert_eq!(done["args"], json!({"name": "Ed"}));
}

#[test]
fn store_copy() {
    let env = Env::new("db");
    greeter(&env);
    env.json(&[
        "-q",
        "execute",
        "greet",
        "--json",
        "--taskArgs",
        r#"{"name":"Ada"}"#,
    ]);
    env.cmd()
        .args(["-q", "submit", "greet", "--taskArgs", r#"{"name":"Bo"}"#])
        .assert()
        .success();
    env.cmd()
        .args(["-q", "schedule", "add", "greet", "--cron", "0 3 * * *"])
        .args(["--taskArgs", r#"{"name":"cron"}"#])
        .assert()
        .success();
    let copy = |to: &str| {
        let out = env
            .cmd()
            .args(["-q", "store", "copy", "--to", to, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        json_stdout(&out)
    };
    insta::assert_json_snapshot!("store_copy", copy("copy.db"));
    insta::assert_json_snapshot!("store_copy_to_yaml", copy("copy.yaml"));
}
