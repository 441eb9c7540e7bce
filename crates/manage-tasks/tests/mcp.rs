//! `manage_tasks mcp` driven by the official MCP Python SDK (`tests/mcp_client.py`).
//!
//! Every scenario runs twice per transport: mode `auto` negotiates the
//! current revision (2026-07-28, through `server/discover`) and mode
//! `legacy` the previous one (2025-11-25, through `initialize`). The SDK
//! lives in a virtualenv that `.ci/run` creates: `$MCP_PYTHON`, else
//! `.venv-mcp/bin/python` in the workspace root.
//!
//! The scenarios that read or write the store (tools from the registry,
//! calls recorded in history, failures, cancel, `list_changed`, SIGTERM, a
//! removed executable) run on SQLite and on PostgreSQL (`sqlite::NAME`,
//! `postgres::NAME`); those about the protocol alone on SQLite.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Env, alive, on_sql_backends, sql_text, task_script};

on_sql_backends!(
    lists_one_tool_per_task_with_schemas,
    calls_a_task_and_returns_its_result_and_logs,
    failed_runs_are_tool_errors_with_an_explanation,
    cancelling_a_call_kills_its_process_group,
    registering_during_a_session_notifies_list_changed,
    sigterm_stops_the_server_and_its_running_task,
    a_removed_executable_is_an_explained_tool_error,
);

const MODES: [&str; 2] = ["auto", "legacy"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter that has the `mcp` package. Fails (never skips) without one.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MCP_PYTHON").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let venv = workspace_root().join(".venv-mcp/bin/python");
    if venv.exists() {
        return venv;
    }
    panic!(
        "the MCP tests need the official Python SDK: run `.ci/run`, or in the workspace root \
         `python3 -m venv .venv-mcp && .venv-mcp/bin/pip install mcp==2.3.0` (or set MCP_PYTHON)"
    );
}

/// A store with five tasks: `greet` (schemas, logs), `fails` (status 2),
/// `crashes` (exit 7), `hangs` (writes its pid and its child's, then waits)
/// and `shout` (a string input schema, so its tool wraps it as `value`;
/// `register` refuses such inputs now, so it is stored as an older version
/// of the tool stored it).
struct Fixture {
    env: Env,
    pid_file: PathBuf,
    late: PathBuf,
}

fn fixture(env: Env) -> Fixture {
    let greet = env.script(
        "greet.sh",
        r#"#!/bin/bash
if [ "$1" = schema ]; then
  echo '{"description":"says hello","inputs":{"type":"object","properties":{"who":{"type":"string"}},"required":["who"],"additionalProperties":false},"outputs":{"type":"object","properties":{"status":{"type":"integer"},"reason":{"type":"string"},"payload":{}},"required":["status"]}}'
  exit 0
fi
who=$(sed 's/.*"who":"\([^"]*\)".*/\1/')
echo "greeting $who"
echo "to stderr" >&2
echo "{\"status\":1,\"reason\":\"ok\",\"payload\":{\"greeting\":\"hello $who\"}}"
"#,
    );
    let fails = env.script(
        "fails.sh",
        &task_script(
            r#"{"type":"object"}"#,
            r#"echo '{"status":2,"reason":"no luck","payload":null}'"#,
        ),
    );
    let crashes = env.script("crashes.sh", &task_script(r#"{"type":"object"}"#, "exit 7"));
    let hangs = env.script(
        "hangs.sh",
        &task_script(
            r#"{"type":"object"}"#,
            "sleep 1000 &\necho \"$$ $!\" > \"$PID_FILE\"\nwait",
        ),
    );
    let shout = env.script(
        "shout.sh",
        r#"#!/bin/bash
if [ "$1" = schema ]; then
  echo '{"inputs":{"$schema":"http://json-schema.org/draft-07/schema#","type":"string","minLength":1}}'
  exit 0
fi
data=$(sed 's/.*"data":"\([^"]*\)".*/\1/')
echo "{\"status\":1,\"reason\":\"\",\"payload\":\"${data^^}\"}"
"#,
    );
    let late = env.script("late.sh", &task_script(r#"{"type":"object"}"#, "true"));
    for (name, path) in [
        ("greet", &greet),
        ("fails", &fails),
        ("crashes", &crashes),
        ("hangs", &hangs),
    ] {
        env.register(name, path);
    }
    env.sql(&format!(
        "INSERT INTO tasks (name, location, inputs, created_at, updated_at) \
         VALUES ('shout', {}, {}, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');",
        sql_text(shout.to_str().unwrap()),
        sql_text(
            r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"string","minLength":1}"#
        ),
    ));
    let pid_file = env.dir.path().join("pids");
    Fixture {
        env,
        pid_file,
        late,
    }
}

impl Fixture {
    /// Starts `manage_tasks ARGS` and, in raw JSON-RPC over its stdin (no SDK),
    /// initializes and calls `tool` with no arguments as request id 2.
    /// Returns the server and its stdin, still open.
    fn call_over_stdio(
        &self,
        args: &[&str],
        tool: &str,
    ) -> (std::process::Child, std::process::ChildStdin) {
        use std::io::Write;
        let mut server = self
            .command(assert_cmd::cargo::cargo_bin("manage_tasks"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = server.stdin.take().unwrap();
        let call = format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
        );
        for message in [
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"test","version":"0"}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            &call,
        ] {
            writeln!(stdin, "{message}").unwrap();
        }
        (server, stdin)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("TASK_STORE", &self.env.store)
            .env("HOME", self.env.dir.path())
            .env_remove("XDG_DATA_HOME")
            .env("MANAGE_TASKS", assert_cmd::cargo::cargo_bin("manage_tasks"))
            .env("PID_FILE", &self.pid_file)
            .env("LATE_SCRIPT", &self.late)
            .current_dir(self.env.dir.path());
        cmd
    }

    /// Runs one client scenario, asserting it passed.
    fn client(&self, scenario: &str, mode: &str, transport: &str) {
        let _ = std::fs::remove_file(&self.pid_file);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py");
        let out = self
            .command(python())
            .arg(script)
            .args([scenario, mode, transport])
            .output()
            .expect("run the Python MCP client");
        assert!(
            out.status.success(),
            "scenario {scenario} ({mode}, {transport}) failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if scenario == "cancel" {
            let pids = std::fs::read_to_string(&self.pid_file).unwrap();
            for pid in pids.split_whitespace() {
                let pid = pid.parse().unwrap();
                common::wait_until(2.0, &format!("process {pid} to die"), || !alive(pid));
            }
        }
    }

    fn unregister(&self, name: &str) {
        self.env
            .cmd()
            .args(["unregister", "--name", name])
            .assert()
            .success();
    }
}

fn stdio(env: Env, scenario: &str) {
    let fx = fixture(env);
    for mode in MODES {
        fx.client(scenario, mode, "stdio");
        if scenario == "list_changed" {
            fx.unregister("late");
        }
    }
}

fn lists_one_tool_per_task_with_schemas(env: Env) {
    stdio(env, "list");
}

fn calls_a_task_and_returns_its_result_and_logs(env: Env) {
    let fx = fixture(env);
    for mode in MODES {
        fx.client("call", mode, "stdio");
    }
    // Each call is recorded in run history, as `execute` is.
    let out = fx
        .env
        .cmd()
        .args(["runs", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = runs["items"]
        .as_array()
        .expect("runs list --json has an `items` array");
    // The scenario makes calls in each protocol mode; none may be missing.
    assert!(runs.len() >= MODES.len(), "{runs:?}");
    for run in runs {
        assert_eq!(run["state"], "completed", "{run}");
        assert_eq!(run["caller"], "mcp", "{run}");
    }
}

#[test]
fn invalid_arguments_are_a_protocol_error_naming_each_violation() {
    stdio(Env::new("db"), "invalid");
}

fn failed_runs_are_tool_errors_with_an_explanation(env: Env) {
    stdio(env, "failures");
}

fn cancelling_a_call_kills_its_process_group(env: Env) {
    stdio(env, "cancel");
}

fn registering_during_a_session_notifies_list_changed(env: Env) {
    stdio(env, "list_changed");
}

/// `mcp --http`: the same scenarios over streamable HTTP against one server.
#[test]
fn serves_streamable_http() {
    let fx = fixture(Env::new("db"));
    let mut server = fx
        .command(assert_cmd::cargo::cargo_bin("manage_tasks"))
        .args(["mcp", "--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open until the end, so the server's later stderr lines have a reader.
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("serving MCP on ")
        .unwrap_or_else(|| panic!("unexpected first stderr line: {line:?}"))
        .to_owned();
    for mode in MODES {
        for scenario in [
            "list",
            "call",
            "invalid",
            "failures",
            "cancel",
            "list_changed",
        ] {
            fx.client(scenario, mode, &url);
        }
        fx.unregister("late");
    }
    server.kill().unwrap();
    server.wait().unwrap();
    drop(stderr);
}

#[test]
fn http_refuses_a_taken_address() {
    let fx = fixture(Env::new("db"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    fx.env
        .cmd()
        .args(["mcp", "--http", &addr])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(format!(
            "cannot serve http on `{addr}`"
        )));
}

/// SIGTERM to a stdio server with a call in flight: the task's group is
/// stopped, the run recorded as cancelled, and the server exits promptly,
/// without waiting for stdin to close.
fn sigterm_stops_the_server_and_its_running_task(env: Env) {
    use std::time::{Duration, Instant};

    let fx = fixture(env);
    let (mut server, stdin) = fx.call_over_stdio(&["mcp", "--grace", "1s"], "hangs");
    let deadline = Instant::now() + Duration::from_secs(15);
    let pids = loop {
        let text = std::fs::read_to_string(&fx.pid_file).unwrap_or_default();
        let pids: Vec<i32> = text
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "the hanging task never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids {
        common::wait_until(
            2.0,
            &format!("process {pid} to die with the server"),
            || !alive(pid),
        );
    }
    drop(stdin);
    // The call's run is recorded as cancelled, not left running.
    let runs = fx.env.all_runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        (runs[0]["state"].as_str(), runs[0]["caller"].as_str()),
        (Some("cancelled"), Some("mcp")),
        "{runs:?}"
    );
}

/// A tool whose executable was removed after registration answers with an
/// explained tool error (raw JSON-RPC over stdio, no SDK involved).
fn a_removed_executable_is_an_explained_tool_error(env: Env) {
    let fx = fixture(env);
    let gone = fx
        .env
        .script("gone.sh", &task_script(r#"{"type":"object"}"#, "true"));
    fx.env.register("gone", &gone);
    std::fs::remove_file(&gone).unwrap();
    let (mut server, stdin) = fx.call_over_stdio(&["mcp"], "gone");
    let stdout = BufReader::new(server.stdout.take().unwrap());
    let reply = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap())
        .find(|m| m["id"] == 2)
        .expect("a reply to tools/call");
    drop(stdin);
    server.wait().unwrap();
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    let text = reply["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Task `gone` cannot be run: `") && text.contains("` no longer exists;"),
        "{text}"
    );
}

/// A line that is not JSON gets JSON-RPC's parse error (`-32700`, id null)
/// and the session goes on: the next request is answered.
#[test]
fn a_line_that_is_not_json_gets_a_parse_error_and_the_session_goes_on() {
    use std::io::Write;
    let fx = fixture(Env::new("db"));
    let mut server = fx
        .command(assert_cmd::cargo::cargo_bin("manage_tasks"))
        .args(["mcp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = server.stdin.take().unwrap();
    for message in [
        "this is not json",
        "{\"jsonrpc\": \"2.0\", \"id\": 5, oops",
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"test","version":"0"}}}"#,
    ] {
        writeln!(stdin, "{message}").unwrap();
    }
    let mut replies = BufReader::new(server.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap());
    for _ in 0..2 {
        let reply = replies.next().expect("a parse error reply");
        assert_eq!(reply["error"]["code"], -32700, "{reply}");
        assert_eq!(reply["id"], serde_json::Value::Null, "{reply}");
    }
    let init = replies.next().expect("the initialize reply");
    assert_eq!(init["id"], 1, "{init}");
    assert!(init["result"]["serverInfo"].is_object(), "{init}");
    drop(stdin);
    assert!(server.wait().unwrap().success());
}
