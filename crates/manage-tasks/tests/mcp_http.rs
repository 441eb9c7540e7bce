//! `manage_tasks mcp --http`: the transport's protection, through a real
//! server and raw HTTP/1.1 over TCP (so that each header is ours to get
//! wrong on purpose).
//!
//! - tokens: 401 without or with a bad/revoked one, 403 for a scope too
//!   small, tools/call audited under the token's name;
//! - Host (421) and Origin (403) checks;
//! - a non-loopback bind without tokens refuses to start (exit 2), unless
//!   `--insecure-no-auth` (a loud warning);
//! - 200 concurrent calls never run more than `--max-concurrent-runs`;
//! - the session cap and idle expiry; RSS stays bounded under a flood of
//!   `initialize` calls (`FLOOD=N` to choose how many; the figures are
//!   printed).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, task_script};
use serde_json::{Value, json};

/// A running `manage_tasks mcp --http 127.0.0.1:0 ARGS`, killed on drop.
struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    /// What it printed on stderr after its first line, read in the background.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(env: &Env, args: &[&str]) -> Server {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("manage_tasks"));
    cmd.env("TASK_STORE", &env.store)
        .env("HOME", env.dir.path())
        .env("MARKERS", env.dir.path().join("markers"))
        .env_remove("XDG_DATA_HOME")
        .args(["mcp", "--http", "127.0.0.1:0"])
        .args(args);
    let (child, addr, rest) = common::spawn_server(cmd, |line| {
        line.strip_prefix("serving MCP on http://")
            .and_then(|l| l.strip_suffix("/mcp"))
    });
    Server {
        child,
        addr,
        stderr: rest,
    }
}

/// An HTTP response, read to its end.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The JSON-RPC message in the body: the body itself, or the last SSE `data:` line.
    fn message(&self) -> Value {
        if let Ok(v) = serde_json::from_str(&self.body) {
            return v;
        }
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .rfind(|v| v.get("id").is_some())
            .unwrap_or_else(|| panic!("no JSON-RPC message in {:?}", self.body))
    }
}

/// One request on its own connection (`Connection: close`); `headers` are
/// added to (and may replace) the defaults.
fn post(addr: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    request(addr, "POST", headers, &body.to_string())
}

fn request(addr: &str, method: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut all: Vec<(String, String)> = vec![
        ("Host".into(), addr.into()),
        ("Content-Type".into(), "application/json".into()),
        (
            "Accept".into(),
            "application/json, text/event-stream".into(),
        ),
        ("Connection".into(), "close".into()),
    ];
    for (k, v) in headers {
        all.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        all.push(((*k).into(), (*v).into()));
    }
    let mut text = format!("{method} /mcp HTTP/1.1\r\n");
    for (k, v) in &all {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

const VERSION: &str = "2025-11-25";

fn initialize_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": VERSION, "capabilities": {},
        "clientInfo": {"name": "mcp_http.rs", "version": "1"}}})
}

/// A legacy (2025-11-25) session: its id, after `initialize` and `initialized`.
fn session(addr: &str, auth: &[(&str, &str)]) -> String {
    let init = post(addr, auth, &initialize_body());
    assert_eq!(init.status, 200, "{init:?}");
    let id = init
        .header("mcp-session-id")
        .expect("a session id")
        .to_owned();
    let mut headers = auth.to_vec();
    headers.push(("Mcp-Session-Id", &id));
    headers.push(("MCP-Protocol-Version", VERSION));
    let done = post(
        addr,
        &headers,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    assert_eq!(done.status, 202, "{done:?}");
    id
}

fn in_session<'a>(auth: &[(&'a str, &'a str)], id: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut headers = auth.to_vec();
    headers.push(("Mcp-Session-Id", id));
    headers.push(("MCP-Protocol-Version", VERSION));
    headers
}

fn call(name: &str, id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": {}}})
}

fn list() -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"})
}

fn register_ok(env: &Env) {
    let ok = env.script(
        "ok.sh",
        &task_script(
            r#"{"type":"object"}"#,
            r#"echo '{"status":1,"reason":"ok"}'"#,
        ),
    );
    env.register("ok", &ok);
}

fn create_token(env: &Env, name: &str, scope: &str) -> String {
    let out = env
        .cmd()
        .args(["-q", "tokens", "create", "--name", name, "--scope", scope])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn once_a_token_exists_every_request_needs_one_with_the_scope_it_asks_for() {
    let env = Env::new("db");
    register_ok(&env);
    let reader = create_token(&env, "reader", "read");
    let runner = create_token(&env, "runner", "run");
    let server = serve(&env, &[]);
    let addr = server.addr.as_str();

    // Without a token, with a malformed or an unknown one: 401, saying why.
    let unknown = format!("Bearer te_{}", "0".repeat(64));
    for (auth, kind) in [
        (None, "missing_token"),
        (Some("Bearer nope"), "malformed_token"),
        (Some(unknown.as_str()), "unknown_token"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = post(addr, &headers, &initialize_body());
        assert_eq!(r.status, 401, "{auth:?}: {r:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{r:?}");
        assert_eq!(r.header("x-error-kind"), Some(kind), "{r:?}");
        assert_eq!(r.message()["error"]["code"], -32001, "{r:?}");
    }

    // A read token lists tools but may not call one: 403.
    let read_auth = format!("Bearer {reader}");
    let read = [("Authorization", read_auth.as_str())];
    let id = session(addr, &read);
    let listed = post(addr, &in_session(&read, &id), &list());
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.message()["result"]["tools"][0]["name"], "ok");
    let refused = post(addr, &in_session(&read, &id), &call("ok", 2));
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.message()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token `reader` has scope `read`; this needs `run`"),
        "{refused:?}"
    );

    // A run token calls it; the call is audited under the token's name.
    let run_auth = format!("Bearer {runner}");
    let run = [("Authorization", run_auth.as_str())];
    let id = session(addr, &run);
    let called = post(addr, &in_session(&run, &id), &call("ok", 3));
    assert_eq!(called.status, 200, "{called:?}");
    assert_eq!(
        called.message()["result"]["structuredContent"]["status"],
        1,
        "{called:?}"
    );
    let audit = env.json(&["audit", "list", "--json"]);
    let calls: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tools.call")
        .collect();
    assert_eq!(calls.len(), 1, "{audit}");
    assert_eq!(
        (&calls[0]["actor"], &calls[0]["target"]),
        (&json!("runner"), &json!("ok"))
    );
    let used = env.json(&["tokens", "list", "--json"]);
    let runner_row = used["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "runner")
        .unwrap()
        .clone();
    assert!(runner_row["last_used_at"].is_string(), "{used}");

    // Revoked: refused at once, and told apart from an unknown token.
    env.cmd()
        .args(["tokens", "revoke", "runner"])
        .assert()
        .success();
    let r = post(addr, &in_session(&run, &id), &call("ok", 4));
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("x-error-kind"), Some("revoked_token"), "{r:?}");
}

#[test]
fn foreign_hosts_and_origins_are_refused() {
    let env = Env::new("db");
    register_ok(&env);
    let server = serve(&env, &["--allowed-host", "mcp.example"]);
    let addr = server.addr.as_str();
    let port = addr.rsplit_once(':').unwrap().1;

    // DNS rebinding: a name that resolves here but is not ours.
    let evil_host = format!("evil.example:{port}");
    let r = post(addr, &[("Host", &evil_host)], &initialize_body());
    assert_eq!(r.status, 421, "{r:?}");
    assert_eq!(r.message()["error"]["code"], -32004);
    // The right name on the wrong port is not ours either.
    let r = post(addr, &[("Host", "localhost:1")], &initialize_body());
    assert_eq!(r.status, 421, "{r:?}");
    // Names it does serve: loopback ones, and --allowed-host on the bound port.
    for host in [format!("localhost:{port}"), format!("mcp.example:{port}")] {
        let r = post(addr, &[("Host", &host)], &initialize_body());
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }

    // A browser page from elsewhere: 403; from the served origin: fine.
    for origin in ["http://evil.example", "null", &format!("https://{addr}")] {
        let r = post(addr, &[("Origin", origin)], &initialize_body());
        assert_eq!(r.status, 403, "{origin}: {r:?}");
        assert!(r.body.contains("cross-origin"), "{r:?}");
    }
    let own = format!("http://{addr}");
    let r = post(addr, &[("Origin", &own)], &initialize_body());
    assert_eq!(r.status, 200, "{r:?}");
    // Without a token in the store it says, once, that it serves loopback only.
    common::wait_until(5.0, "the loopback notice", || {
        server
            .stderr
            .lock()
            .unwrap()
            .contains("serving loopback clients only")
    });
}

#[test]
fn a_public_address_without_tokens_refuses_to_start_unless_insecure() {
    let env = Env::new("db");
    let out = env
        .cmd()
        .args(["mcp", "--http", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("refusing to serve MCP on `0.0.0.0:0` without authentication"),
        "{err}"
    );
    assert!(err.contains("--insecure-no-auth"), "{err}");

    // Overridden: it starts, and says loudly what that means.
    let mut insecure = Command::new(assert_cmd::cargo::cargo_bin("manage_tasks"))
        .env("TASK_STORE", &env.store)
        .args(["mcp", "--http", "0.0.0.0:0", "--insecure-no-auth"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(insecure.stderr.take().unwrap());
    let mut text = String::new();
    for _ in 0..2 {
        stderr.read_line(&mut text).unwrap();
    }
    insecure.kill().unwrap();
    insecure.wait().unwrap();
    assert!(text.contains("serving MCP on http://0.0.0.0:"), "{text}");
    assert!(
        text.contains("WARNING:") && text.contains("ANYONE"),
        "{text}"
    );

    // With a token it starts without the flag.
    create_token(&env, "ci", "run");
    let mut secured = Command::new(assert_cmd::cargo::cargo_bin("manage_tasks"))
        .env("TASK_STORE", &env.store)
        .args(["mcp", "--http", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(secured.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    secured.kill().unwrap();
    secured.wait().unwrap();
    assert!(line.starts_with("serving MCP on http://0.0.0.0:"), "{line}");
}

#[test]
fn two_hundred_concurrent_calls_never_run_more_than_the_cap() {
    const CAP: usize = 4;
    const CALLS: u64 = 200;
    let env = Env::new("db");
    // Each run leaves a marker while it runs and notes how many it saw.
    let counted = env.script(
        "counted.sh",
        &task_script(
            r#"{"type":"object"}"#,
            r#"mkdir -p "$MARKERS"; touch "$MARKERS/$$"; sleep 0.1
ls "$MARKERS" | wc -l >> "$MARKERS.counts"; rm "$MARKERS/$$"
echo '{"status":1,"reason":"ok"}'"#,
        ),
    );
    env.register("counted", &counted);
    let server = serve(&env, &["--max-concurrent-runs", &CAP.to_string()]);
    let addr = server.addr.clone();
    let id = session(&addr, &[]);
    let started = Instant::now();
    let threads: Vec<_> = (0..CALLS)
        .map(|i| {
            let (addr, id) = (addr.clone(), id.clone());
            std::thread::spawn(move || {
                post(&addr, &in_session(&[], &id), &call("counted", 100 + i))
            })
        })
        .collect();
    let mut ok = 0;
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.message()["result"]["structuredContent"]["status"],
            1,
            "{r:?}"
        );
        ok += 1;
    }
    let took = started.elapsed();
    let counts = std::fs::read_to_string(env.dir.path().join("markers.counts")).unwrap();
    let counts: Vec<usize> = counts.lines().map(|l| l.trim().parse().unwrap()).collect();
    let most = counts.iter().copied().max().unwrap();
    eprintln!(
        "{ok} calls in {took:.1?}; at most {most} ran at once (cap {CAP}); {} counted",
        counts.len()
    );
    assert_eq!(counts.len() as u64, CALLS);
    assert!(most <= CAP, "{most} runs at once, cap {CAP}");
    assert!(most >= 2, "the calls did run concurrently ({most})");
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn sessions_are_capped_and_idle_ones_expire() {
    let env = Env::new("db");
    register_ok(&env);
    let server = serve(&env, &["--max-sessions", "5", "--session-idle", "2s"]);
    let addr = server.addr.as_str();
    let ids: Vec<String> = (0..5).map(|_| session(addr, &[])).collect();
    let full = post(addr, &[], &initialize_body());
    assert_eq!(full.status, 503, "{full:?}");
    assert_eq!(full.message()["error"]["code"], -32005);
    assert!(full.body.contains("--max-sessions"), "{full:?}");
    // A session that is open goes on working meanwhile.
    let listed = post(addr, &in_session(&[], &ids[0]), &list());
    assert_eq!(listed.status, 200, "{listed:?}");
    // Once they have been idle for 2 s they are closed, and room is made.
    std::thread::sleep(Duration::from_secs(3));
    let gone = post(addr, &in_session(&[], &ids[1]), &list());
    assert_eq!(gone.status, 404, "an expired session is unknown: {gone:?}");
    for _ in 0..5 {
        session(addr, &[]);
    }
}

#[test]
fn a_flood_of_initializes_keeps_memory_bounded() {
    let flood: usize = std::env::var("FLOOD")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000);
    let env = Env::new("db");
    register_ok(&env);
    let server = serve(&env, &[]);
    let addr = server.addr.clone();
    // Warm up (first connections, store, allocator), then measure.
    session(&addr, &[]);
    let before = rss_kib(server.child.id());
    let started = Instant::now();
    let (mut opened, mut refused) = (0, 0);
    for _ in 0..flood {
        match post(&addr, &[], &initialize_body()).status {
            200 => opened += 1,
            503 => refused += 1,
            other => panic!("initialize answered {other}"),
        }
    }
    let after = rss_kib(server.child.id());
    eprintln!(
        "{flood} initializes in {:.1?}: {opened} opened, {refused} refused (cap {}); \
         RSS {before} KiB before, {after} KiB after (+{} KiB)",
        started.elapsed(),
        task_executor_mcp::DEFAULT_MAX_SESSIONS,
        after.saturating_sub(before)
    );
    assert!(opened < task_executor_mcp::DEFAULT_MAX_SESSIONS);
    assert_eq!(opened + refused, flood);
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
}
