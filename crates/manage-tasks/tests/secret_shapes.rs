//! Secret arguments, end to end: a field is secret when its schema says
//! `writeOnly: true` or `format: password`, wherever that schema sits —
//! behind `$ref`/`$defs`, in `allOf`/`anyOf`/`oneOf`, `additionalProperties`,
//! `patternProperties`, `prefixItems`. None of their values may reach the
//! terminal, `--json`, run history or stored logs; an in-process run's
//! never reach the database file at all.

mod common;

use common::*;

/// One secret per shape; the keys say where it sits.
const INPUTS: &str = r##"{
  "type": "object",
  "$defs": {"tok": {"type": "string", "writeOnly": true}},
  "properties": {
    "by_ref": {"$ref": "#/$defs/tok"},
    "in_all_of": {"allOf": [{"type": "string"}, {"format": "password"}]},
    "in_any_of": {"anyOf": [{"type": "string", "writeOnly": true}, {"type": "null"}]},
    "in_one_of": {"oneOf": [{"type": "string", "format": "password"}, {"type": "integer"}]},
    "extra": {"type": "object", "additionalProperties": {"type": "string", "writeOnly": true}},
    "patterned": {"type": "object", "patternProperties": {"^key_": {"type": "string", "format": "password"}}},
    "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string", "writeOnly": true}]},
    "user": {"type": "string"}
  }
}"##;

const SECRETS: [&str; 7] = [
    "s3cret-ref",
    "s3cret-allof",
    "s3cret-anyof",
    "s3cret-oneof",
    "s3cret-additional",
    "s3cret-pattern",
    "s3cret-prefix",
];

const ARGS: &str = r#"{"by_ref":"s3cret-ref","in_all_of":"s3cret-allof","in_any_of":"s3cret-anyof","in_one_of":"s3cret-oneof","extra":{"x":"s3cret-additional"},"patterned":{"key_1":"s3cret-pattern"},"pair":["public","s3cret-prefix"],"user":"ada"}"#;

fn leaked<'a>(text: &str) -> Vec<&'a str> {
    SECRETS.into_iter().filter(|s| text.contains(s)).collect()
}

#[test]
fn secrets_in_every_schema_shape_stay_out_of_output_history_and_logs() {
    let env = Env::new("db");
    // The task echoes its whole envelope to both streams, and gets the real values.
    let got = env.dir.path().join("got");
    env.task(
        "login",
        "login.sh",
        &INPUTS.replace('\n', " "),
        &format!(
            "read -r envelope\necho \"$envelope\" > {}\necho \"out $envelope\"\necho \"err $envelope\" >&2\n\
             echo '{{\"status\":1,\"reason\":\"ok\",\"payload\":null}}'",
            got.display()
        ),
    );
    let out = env
        .cmd()
        .args(["execute", "login", "--json", "--taskArgs", ARGS])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let task_saw = std::fs::read_to_string(&got).unwrap();
    assert!(
        leaked(&task_saw).len() == SECRETS.len(),
        "the task gets every value: {task_saw}"
    );
    assert!(
        stderr(&out).contains("out {") && stderr(&out).contains("\"user\":\"ada\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        leaked(&stderr(&out)),
        Vec::<&str>::new(),
        "stderr: {}",
        stderr(&out)
    );
    assert_eq!(
        leaked(&stdout(&out)),
        Vec::<&str>::new(),
        "--json: {}",
        stdout(&out)
    );

    let id = json_stdout(&out)["run_id"].as_str().unwrap().to_owned();
    let shown = env.json(&["runs", "show", &id, "--json"]);
    let args = &shown["args"];
    assert_eq!(args["by_ref"], "********", "{args}");
    assert_eq!(args["extra"]["x"], "********", "{args}");
    assert_eq!(
        args["pair"],
        serde_json::json!(["public", "********"]),
        "{args}"
    );
    assert_eq!(args["user"], "ada", "{args}");
    assert_eq!(leaked(&shown.to_string()), Vec::<&str>::new(), "{shown}");
    let logs = env.cmd().args(["runs", "logs", &id]).output().unwrap();
    assert!(stdout(&logs).contains("err {"), "{}", stdout(&logs));
    assert_eq!(
        leaked(&stdout(&logs)),
        Vec::<&str>::new(),
        "{}",
        stdout(&logs)
    );
    // A run executed in-process never stores them, not even for a while.
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", env.store.display());
        let bytes = std::fs::read(&file).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(leaked(&text), Vec::<&str>::new(), "{file}");
    }

    // Queued with the secrets and worked: nothing shows them.
    let queued = env
        .cmd()
        .args(["-q", "submit", "login", "--taskArgs", ARGS])
        .output()
        .unwrap();
    assert!(queued.status.success(), "{}", stderr(&queued));
    let worker = env
        .cmd()
        .args(["worker", "--until-idle", "--poll", "20ms"])
        .output()
        .unwrap();
    assert!(worker.status.success(), "{}", stderr(&worker));
    assert_eq!(
        leaked(&stderr(&worker)),
        Vec::<&str>::new(),
        "{}",
        stderr(&worker)
    );
    let listed = env.cmd().args(["runs", "list", "--json"]).output().unwrap();
    assert_eq!(leaked(&stdout(&listed)), Vec::<&str>::new());
}

/// The same task over MCP: its log lines arrive as log notifications with
/// every secret hidden, and the stored run shows none.
#[test]
fn mcp_log_notifications_hide_secrets_in_every_schema_shape() {
    use std::io::{BufRead, BufReader, Write};
    let env = Env::new("db");
    env.task(
        "login",
        "login.sh",
        &INPUTS.replace('\n', " "),
        "read -r envelope\necho \"out $envelope\"\necho \"err $envelope\" >&2\n\
         echo '{\"status\":1,\"reason\":\"ok\",\"payload\":null}'",
    );
    let (mut server, mut stdin) = env.mcp_session();
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"login","arguments":{ARGS}}}}}"#
    );
    for message in [
        r#"{"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"debug"}}"#,
        &call,
    ] {
        writeln!(stdin, "{message}").unwrap();
    }
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = serde_json::from_str::<serde_json::Value>(&line).unwrap()["id"] == 3;
        seen.push(line);
        if done {
            break;
        }
    }
    // Notifications may trail the reply by a moment; then end the session.
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(stdin);
    seen.extend(lines.map(Result::unwrap));
    let out = server.wait_with_output().unwrap();
    let logs: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("notifications/message"))
        .collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("out {") && l.contains(r#"\"user\":\"ada\""#)),
        "the task's stdout line as a log notification: {seen:#?}"
    );
    assert!(logs.iter().any(|l| l.contains("err {")), "{seen:#?}");
    assert_eq!(leaked(&seen.concat()), Vec::<&str>::new(), "{seen:#?}");
    assert_eq!(
        leaked(&stderr(&out)),
        Vec::<&str>::new(),
        "{}",
        stderr(&out)
    );
    let runs = env.all_runs();
    assert_eq!(runs[0]["caller"], "mcp");
    assert_eq!(
        leaked(&runs[0].to_string()),
        Vec::<&str>::new(),
        "{}",
        runs[0]
    );
}
