//! Secrets kept out of what the tool prints and stores:
//!
//! - a secret argument that breaks its own schema is named by pointer and
//!   rule, never shown (`execute`, `submit`, `mcp`; text and `--json`)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use common::*;

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
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_manage_tasks"))
        .arg("mcp")
        .env("TASK_STORE", &env.store)
        .env("HOME", env.dir.path())
        .env_remove("XDG_DATA_HOME")
        .current_dir(env.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = server.stdin.take().unwrap();
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"login","arguments":{}}}}}"#,
        bad_args()
    );
    for message in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"test","version":"0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        &call,
    ] {
        writeln!(stdin, "{message}").unwrap();
    }
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
