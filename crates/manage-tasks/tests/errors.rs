//! Clear errors for what users got wrong (issue 14, "Clear errors"), each
//! driven through the real binary:
//!
//! - `--result-limit 0` is refused before anything runs
//! - every duration flag refuses less than 1 ms (it would be stored as 0)
//! - the worker's summary counts every run that failed
//! - a run id too short to be a prefix says so, in every `runs` command
//! - another program's SQLite database is "not a task-executor store",
//!   named, and left byte for byte as it was
//! - `mcp --http`: a body that is not JSON is `-32700` (HTTP 400), JSON that
//!   is not JSON-RPC `-32600`, and `tools/call` with `arguments` that are not
//!   an object `-32602` (over stdio too)
//! - `mcp --http` on a taken address says so once, with a hint

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

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
        &["worker", "--until-idle", "--recheck", "1ns"],
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

/// `mcp --http 127.0.0.1:0`, and the `host:port` it serves on.
fn http_server(env: &Env) -> (std::process::Child, String) {
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_manage_tasks"))
        .args(["mcp", "--http", "127.0.0.1:0"])
        .env("TASK_STORE", &env.store)
        .env("HOME", env.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("serving MCP on http://")
        .and_then(|rest| rest.strip_suffix("/mcp"))
        .unwrap_or_else(|| panic!("unexpected first stderr line: {line:?}"))
        .to_owned();
    (server, addr)
}

/// POSTs `body` to `/mcp` (one connection, closed after the answer) and
/// returns the status code and the body as received.
fn post(addr: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// The first JSON-RPC message with `"jsonrpc"` in `body` (plain JSON, or
/// an SSE `data:` line, possibly inside chunked encoding).
fn message(body: &str) -> Value {
    body.lines()
        .map(|l| l.strip_prefix("data: ").unwrap_or(l))
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v["jsonrpc"] == "2.0")
        })
        .unwrap_or_else(|| panic!("no JSON-RPC message in {body:?}"))
}

#[test]
fn mcp_http_answers_malformed_messages_as_json_rpc_says() {
    let env = Env::new("db");
    let marker = marker_task(&env);
    let (mut server, addr) = http_server(&env);

    let (status, body) = post(&addr, &[], "this is not json");
    assert_eq!(status, 400, "{body}");
    let reply = message(&body);
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    assert_eq!(reply["id"], Value::Null, "{reply}");

    let (status, body) = post(&addr, &[], r#"{"jsonrpc":"2.0","id":9,"#);
    assert_eq!(status, 400, "{body}");
    assert_eq!(message(&body)["error"]["code"], -32700, "{body}");

    let (status, body) = post(&addr, &[], "[1, 2]");
    assert_eq!(status, 400, "{body}");
    assert_eq!(message(&body)["error"]["code"], -32600, "{body}");

    // A 2026-07-28 request carries its protocol version in `_meta`.
    let call = |id: u32, arguments: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "t", "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }})
        .to_string()
    };
    let headers = [
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "t"),
    ];
    for (id, arguments, got) in [
        (2, json!("x"), "not a string"),
        (3, json!([1]), "not an array"),
    ] {
        let (status, body) = post(&addr, &headers, &call(id, arguments));
        assert_eq!(status, 200, "{body}");
        let reply = message(&body);
        assert_eq!(reply["id"], id, "{reply}");
        assert_eq!(reply["error"]["code"], -32602, "{reply}");
        let text = reply["error"]["message"].as_str().unwrap();
        assert!(
            text.contains("`arguments` must be an object") && text.contains(got),
            "{text}"
        );
    }
    assert!(!marker.exists(), "the task ran");
    // The same call with an object runs the task.
    let (status, body) = post(&addr, &headers, &call(4, json!({})));
    assert_eq!(status, 200, "{body}");
    assert_eq!(message(&body)["result"]["isError"], false, "{body}");
    assert!(marker.exists());

    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn mcp_stdio_answers_arguments_that_are_not_an_object_with_invalid_params() {
    let env = Env::new("db");
    let marker = marker_task(&env);
    let (mut server, mut stdin) = env.mcp_session();
    for message in [
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t","arguments":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/nope","params":{}}"#,
    ] {
        writeln!(stdin, "{message}").unwrap();
    }
    let mut replies = BufReader::new(server.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
        .filter(|m| m["id"] == 2 || m["id"] == 3);
    let (a, b) = (replies.next().unwrap(), replies.next().unwrap());
    drop(stdin);
    server.wait().unwrap();
    let (bad_args, unknown) = if a["id"] == 2 { (a, b) } else { (b, a) };
    assert_eq!(bad_args["error"]["code"], -32602, "{bad_args}");
    assert!(
        bad_args["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`arguments` must be an object (the tool's arguments by name), not a string"),
        "{bad_args}"
    );
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    assert!(!marker.exists(), "the task ran");
}

#[test]
fn a_taken_address_is_reported_once_with_a_hint() {
    let env = Env::new("db");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = env.cmd().args(["mcp", "--http", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.matches("in use").count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot serve http on `{addr}`: the address is already in use"
        )),
        "{err}"
    );
    assert!(
        err.contains("choose another port (port 0 picks a free one)"),
        "{err}"
    );
    drop(listener);
}
