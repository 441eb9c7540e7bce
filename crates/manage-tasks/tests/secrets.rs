//! Secrets kept out of what the tool prints and stores:
//!
//! - a secret argument that breaks its own schema is named by pointer and
//!   rule, never shown (`execute`, `submit`, `mcp`; text and `--json`)
//! - stores are private: directories we create 0700, files 0600 (SQLite's
//!   database, WAL and SHM; YAML's file and lock); a file's own mode is kept
//! - a queued run's secret arguments leave no trace in the database files
//!   once it has ended (run by a worker, or cancelled); on PostgreSQL (the
//!   same tests, `postgres::NAME`), none in its rows

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

on_sql_backends!(
    worked_runs_leave_no_secret_in_the_database_files,
    a_cancelled_queued_run_leaves_no_secret_in_the_database_files,
);

/// A secret behind a `$ref` with a pattern and a minimum length, and a
/// plain field beside it.
const PATTERN_INPUTS: &str = r##"{"type":"object","$defs":{"tok":{"type":"string","writeOnly":true,"pattern":"^tok-","minLength":30}},"properties":{"user":{"type":"string"},"token":{"$ref":"#/$defs/tok"}}}"##;
const SECRET: &str = "hunter2-S3CRET";

fn bad_args() -> String {
    format!(r#"{{"user":"ada","token":"{SECRET}"}}"#)
}

fn pattern_task(env: &Env) {
    env.task(
        "login",
        "login.sh",
        PATTERN_INPUTS,
        "cat >/dev/null\necho '{\"status\":1}'",
    );
}

/// The secret appears in neither stream; the pointer and both rules do.
fn assert_named_not_shown(out: &std::process::Output) {
    let (o, e) = (stdout(out), stderr(out));
    assert_eq!(out.status.code(), Some(2), "{o}\n{e}");
    assert!(
        !o.contains("hunter2") && !e.contains("hunter2"),
        "secret shown:\n{o}\n{e}"
    );
    let all = format!("{o}\n{e}");
    assert!(all.contains("/token"), "{all}");
    assert!(
        all.contains(r#"does not match \"^tok-\""#) || all.contains(r#"does not match "^tok-""#),
        "{all}"
    );
    assert!(all.contains("is shorter than 30 characters"), "{all}");
}

#[test]
fn execute_names_a_broken_secret_by_pointer_and_rule_without_its_value() {
    let env = Env::new("db");
    pattern_task(&env);
    for json in [false, true] {
        let mut cmd = env.cmd();
        cmd.args(["execute", "--name", "login", "--taskArgs", &bad_args()]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert_named_not_shown(&out);
        if json {
            let v = json_stdout(&out);
            let violations = v["error"]["violations"]
                .as_array()
                .unwrap_or_else(|| panic!("{v}"));
            assert!(violations.iter().any(|x| x["pointer"] == "/token"), "{v}");
        }
    }
}

#[test]
fn submit_names_a_broken_secret_by_pointer_and_rule_without_its_value() {
    let env = Env::new("db");
    pattern_task(&env);
    for json in [false, true] {
        let mut cmd = env.cmd();
        cmd.args(["submit", "--name", "login", "--taskArgs", &bad_args()]);
        if json {
            cmd.arg("--json");
        }
        assert_named_not_shown(&cmd.output().unwrap());
    }
    assert!(env.all_runs().is_empty());
}

/// `tools/call` with a broken secret: `-32602` naming `/token` and the
/// rule, the secret nowhere in the reply.
#[test]
fn mcp_names_a_broken_secret_by_pointer_and_rule_without_its_value() {
    let env = Env::new("db");
    pattern_task(&env);
    let (mut server, mut stdin) = env.mcp_session();
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"login","arguments":{}}}}}"#,
        bad_args()
    );
    writeln!(stdin, "{call}").unwrap();
    let reply = BufReader::new(server.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"] == 2)
        .expect("a reply to tools/call");
    drop(stdin);
    let out = server.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!reply.contains("hunter2"), "{reply}");
    assert!(!err.contains("hunter2"), "{err}");
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    let violations = reply["error"]["data"]["violations"].as_array().unwrap();
    for rule in [r#"does not match "^tok-""#, "is shorter than 30 characters"] {
        assert!(
            violations
                .iter()
                .any(|v| v["pointer"] == "/token" && v["message"].as_str().unwrap().contains(rule)),
            "{rule}: {reply}"
        );
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The default store, created by a first `register`: every directory on the
/// way that did not exist is 0700, the database and its WAL and SHM 0600.
#[test]
fn a_new_sqlite_store_is_private() {
    let env = Env::new("db");
    let task = env.script("t.sh", &task_script("{}", "echo '{\"status\":1}'"));
    let data = env.dir.path().join("data");
    env.cmd()
        .env_remove("TASK_STORE")
        .env("XDG_DATA_HOME", &data)
        .args(["register", "--name", "t", "--location"])
        .arg(&task)
        .assert()
        .success();
    let dir = data.join("task-executor");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&dir), 0o700);
    for file in ["tasks.db", "tasks.db-wal", "tasks.db-shm"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
}

/// A new YAML store: its directory 0700, the file and its lock 0600; a
/// rewrite keeps a mode the user chose.
#[test]
fn a_new_yaml_store_is_private_and_a_rewrite_keeps_its_mode() {
    let env = Env::new("yaml");
    let task = env.script("t.sh", &task_script("{}", "echo '{\"status\":1}'"));
    let dir = env.dir.path().join("sub/dir");
    let store = dir.join("tasks.yaml");
    let register = |name: &str| {
        env.cmd()
            .env("TASK_STORE", &store)
            .args(["register", "--name", name, "--location"])
            .arg(&task)
            .assert()
            .success();
    };
    register("a");
    assert_eq!(mode(&env.dir.path().join("sub")), 0o700);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&store), 0o600);
    assert_eq!(mode(&dir.join("tasks.yaml.lock")), 0o600);
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o640)).unwrap();
    register("b");
    assert_eq!(mode(&store), 0o640);
    // No temporary file was left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// Each SQLite file of the store, raw.
/// The SQLite database's files; a PostgreSQL database's rows (a dump: the
/// server's own files keep dead row versions until it vacuums them).
fn store_files(env: &Env) -> Vec<(String, Vec<u8>)> {
    if env.pg().is_some() {
        return vec![("the database (pg_dump)".into(), env.store_bytes())];
    }
    ["", "-wal", "-shm"]
        .into_iter()
        .map(|suffix| {
            let path = format!("{}{suffix}", env.store.display());
            (path.clone(), std::fs::read(&path).unwrap_or_default())
        })
        .collect()
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Queued runs keep their secret arguments (the worker needs them); once a
/// worker has run them, their bytes are nowhere in the database, its WAL or
/// its SHM. Twenty runs, so that rows share pages and the WAL is
/// checkpointed on the way: what `secure_delete` and the final checkpoint
/// are for.
fn worked_runs_leave_no_secret_in_the_database_files(env: Env) {
    env.task(
        "login",
        "login.sh",
        r#"{"type":"object","properties":{"token":{"type":"string","writeOnly":true}}}"#,
        "cat >/dev/null\necho '{\"status\":1,\"reason\":\"ok\"}'",
    );
    let secret = |i: usize| format!("Zq9-queued-secret-{i:02}-Xk27");
    for i in 0..20 {
        env.cmd()
            .args(["-q", "submit", "--name", "login", "--taskArgs"])
            .arg(format!(r#"{{"token":"{}"}}"#, secret(i)))
            .assert()
            .success();
    }
    assert!(
        store_files(&env).iter().any(|(_, b)| holds(b, &secret(0))),
        "a queued run should hold its secret"
    );
    env.cmd()
        .args(["-q", "worker", "--until-idle", "--poll", "20ms"])
        .args(["--concurrency", "4"])
        .assert()
        .success();
    let runs = env.all_runs();
    assert_eq!(runs.len(), 20);
    assert!(runs.iter().all(|r| r["state"] == "completed"), "{runs:?}");
    for (path, bytes) in store_files(&env) {
        for i in 0..20 {
            assert!(!holds(&bytes, &secret(i)), "secret {i} is still in {path}");
        }
    }
}

/// A queued run cancelled before it ran drops its secret the same way.
fn a_cancelled_queued_run_leaves_no_secret_in_the_database_files(env: Env) {
    env.task(
        "login",
        "login.sh",
        r#"{"type":"object","properties":{"token":{"format":"password"}}}"#,
        "cat >/dev/null\necho '{\"status\":1}'",
    );
    let secret = "Zq9-cancelled-secret-Xk27";
    let out = env
        .cmd()
        .args(["-q", "submit", "--name", "login", "--taskArgs"])
        .arg(format!(r#"{{"token":"{secret}"}}"#))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert!(store_files(&env).iter().any(|(_, b)| holds(b, secret)));
    env.cmd().args(["runs", "cancel", &id]).assert().success();
    assert_eq!(env.all_runs()[0]["state"], "cancelled");
    for (path, bytes) in store_files(&env) {
        assert!(!holds(&bytes, secret), "the secret is still in {path}");
    }
}
