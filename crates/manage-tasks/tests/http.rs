//! `manage_tasks serve`: the HTTP API, through a real server on a loopback
//! port and a real HTTP client (ureq), with real task scripts.
//!
//! - every route and its errors (404, 422 with pointers, 400, 415, 409, 405,
//!   413 past `--max-body`), `?wait=`, retry (and why a run with secrets
//!   cannot be retried), schedules, workers;
//! - live logs over SSE and their resumption with `Last-Event-ID`; the
//!   `/events` feed read from the store;
//! - the OpenAPI document (each task's input schema as its run body), the
//!   docs page under a strict CSP, `/metrics` counting a run;
//! - the web page at `/` and its assets, without a token (the browser test
//!   is `browser.rs`);
//! - graceful SIGTERM with a run in flight; refusing a non-loopback address
//!   without tokens; refusing a YAML store.
//!
//! Each body runs on SQLite and PostgreSQL (`on_sql_backends!`) where the
//! store matters.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::time::Duration;

use common::{Env, exits_within, on_sql_backends, signal, wait_until};
use serde_json::{Value, json};

/// A running `manage_tasks serve --listen 127.0.0.1:0`.
struct Server {
    child: Child,
    base: String,
    agent: ureq::Agent,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts the server on `env` with `extra` flags; returns once it listens.
    fn start(env: &Env, extra: &[&str]) -> Self {
        Self::start_on(env, "127.0.0.1:0", extra)
    }

    /// Starts the server listening on `listen`.
    fn start_on(env: &Env, listen: &str, extra: &[&str]) -> Self {
        let mut cmd = env.std_cmd();
        cmd.args(["serve", "--listen", listen]).args(extra);
        let (child, base, kept) = common::spawn_server(cmd, |line| {
            line.strip_prefix("serving ")
                .and_then(|rest| rest.strip_suffix(" (web page /, api /api/v1, docs /api/v1/docs)"))
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self {
            child,
            base,
            agent,
            stderr: kept,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// GET `path`: status and JSON body.
    fn get(&self, path: &str) -> (u16, Value) {
        let r = self.agent.get(&self.url(path)).call().unwrap();
        answer(r)
    }

    /// POST `body` (JSON text) to `path`.
    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .agent
            .post(&self.url(path))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        answer(r)
    }

    fn delete(&self, path: &str) -> (u16, Value) {
        answer(self.agent.delete(&self.url(path)).call().unwrap())
    }

    /// Opens an event stream at `path`, resuming after `last` if given.
    fn events(&self, path: &str, last: Option<&str>) -> EventStream {
        let mut req = self
            .agent
            .get(&self.url(path))
            .header("Accept", "text/event-stream");
        if let Some(id) = last {
            req = req.header("Last-Event-ID", id);
        }
        let r = req.call().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        EventStream {
            lines: BufReader::new(r.into_body().into_reader()),
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "-TERM");
        exits_within(&mut self.child, 60.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(mut r: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()
            .get("x-content-type-options")
            .map(|v| v.to_str().unwrap()),
        Some("nosniff"),
        "every response says nosniff"
    );
    let text = r.body_mut().read_to_string().unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    if status >= 400 {
        let kind = &body["error"]["kind"];
        assert!(kind.is_string(), "an error in the one shape: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    (status, body)
}

/// One server-sent event.
#[derive(Debug, Default)]
struct Event {
    name: String,
    id: Option<String>,
    data: Value,
}

struct EventStream {
    lines: BufReader<ureq::BodyReader<'static>>,
}

impl EventStream {
    /// The next event (comments and keep-alives skipped), `None` at the end.
    fn next(&mut self) -> Option<Event> {
        let mut event = Event::default();
        let mut data = String::new();
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if event.name.is_empty() && data.is_empty() {
                    continue;
                }
                event.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(event);
            }
            if let Some(v) = line.strip_prefix("event:") {
                event.name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("id:") {
                event.id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }

    /// The next event named `name`, skipping others.
    fn next_named(&mut self, name: &str) -> Event {
        loop {
            let e = self
                .next()
                .unwrap_or_else(|| panic!("the stream ended before a `{name}` event"));
            if e.name == name {
                return e;
            }
        }
    }
}

const ECHO_INPUTS: &str = r#"{"type":"object","properties":{"n":{"type":"integer","minimum":0},"who":{"type":"string","maxLength":8}},"required":["n"],"additionalProperties":false}"#;

/// A task echoing `n` back as its payload, after a line of log.
fn echo_task(env: &Env) {
    env.task(
        "echo",
        "echo.sh",
        ECHO_INPUTS,
        r#"read -r env; n=$(echo "$env" | sed -E 's/.*"n":([0-9]+).*/\1/'); echo "got $n"; echo "{\"status\":1,\"reason\":\"ok\",\"payload\":{\"n\":$n}}""#,
    );
}

/// A task that sleeps `secs` seconds, printing a line before and after.
fn sleepy_task(env: &Env, name: &str, secs: f64) {
    env.task(
        name,
        &format!("{name}.sh"),
        r#"{"type":"object"}"#,
        &format!(
            "echo start; sleep {secs}; echo done; echo '{{\"status\":1,\"reason\":\"ok\",\"payload\":null}}'"
        ),
    );
}

fn run_id(v: &Value) -> String {
    v["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run_id: {v}"))
        .to_owned()
}

/// Every route and error status of the API, on one server.
fn routes_and_errors(env: Env) {
    echo_task(&env);
    sleepy_task(&env, "slow", 30.0);
    env.task(
        "login",
        "login.sh",
        r#"{"type":"object","properties":{"user":{"type":"string"},"password":{"type":"string","writeOnly":true}}}"#,
        r#"echo '{"status":1,"reason":"ok","payload":null}'"#,
    );
    let s = Server::start(&env, &["--workers", "2"]);
    wait_until(5.0, "the loopback notice", || {
        s.stderr().contains("answering on loopback only")
    });

    // Tasks.
    let (st, list) = s.get("/api/v1/tasks");
    assert_eq!(st, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "login", "slow"]);
    let (st, task) = s.get("/api/v1/tasks/echo");
    assert_eq!(st, 200);
    assert_eq!(task["inputs"]["required"], json!(["n"]));
    let (st, e) = s.get("/api/v1/tasks/nope");
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (404, Some("unknown_task"))
    );

    // Register: created, taken, invalid.
    let script = env.script(
        "extra.sh",
        &common::task_script(
            r#"{"type":"object"}"#,
            "echo '{\"status\":1,\"reason\":\"ok\",\"payload\":null}'",
        ),
    );
    let body =
        json!({"name": "extra", "location": script, "timeout": "5s", "tags": []}).to_string();
    let (st, t) = s.post("/api/v1/tasks", &body);
    assert_eq!(st, 201, "{t}");
    assert_eq!(t["timeout_ms"], 5000);
    let (st, e) = s.post("/api/v1/tasks", &body);
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (409, Some("duplicate_task"))
    );
    let (st, e) = s.post(
        "/api/v1/tasks",
        &json!({"name": "bad name", "location": "relative.sh", "timeout": "soon"}).to_string(),
    );
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (422, Some("invalid_body"))
    );
    let pointers: Vec<&str> = e["error"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/name", "/location", "/timeout"]);
    let (st, e) = s.post(
        "/api/v1/tasks",
        r#"{"name":"x","location":"/bin/true","colour":1}"#,
    );
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (422, Some("invalid_body")),
        "{e}"
    );
    let (st, _) = s.delete("/api/v1/tasks/extra");
    assert_eq!(st, 204);
    let (st, _) = s.get("/api/v1/tasks/extra");
    assert_eq!(st, 404);
    let (st, e) = s.delete("/api/v1/tasks/extra");
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (404, Some("unknown_task"))
    );

    // Submit: ?wait= ends it; without, it is queued.
    let (st, done) = s.post("/api/v1/tasks/echo/runs?wait=30s", r#"{"n": 7}"#);
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["state"], "completed");
    assert_eq!(done["payload"], json!({"n": 7}));
    assert_eq!(done["caller"], "http");
    let done_id = run_id(&done);
    let (st, queued) = s.post("/api/v1/tasks/echo/runs", r#"{"n": 8}"#);
    assert_eq!(st, 202);
    assert!(
        ["queued", "running", "completed"].contains(&queued["state"].as_str().unwrap()),
        "{queued}"
    );
    // Every violation, by pointer.
    let (st, e) = s.post(
        "/api/v1/tasks/echo/runs",
        r#"{"n": -1, "who": "far too long", "x": 1}"#,
    );
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (422, Some("invalid_args"))
    );
    let mut pointers: Vec<&str> = e["error"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pointer"].as_str().unwrap())
        .collect();
    pointers.sort();
    assert_eq!(pointers, ["", "/n", "/who"], "{e}");
    let (st, e) = s.post("/api/v1/tasks/nope/runs", "{}");
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (404, Some("unknown_task"))
    );
    let (st, e) = s.post("/api/v1/tasks/echo/runs", r#"{"n": "#);
    assert_eq!((st, e["error"]["kind"].as_str()), (400, Some("bad_json")));
    let r = s
        .agent
        .post(&s.url("/api/v1/tasks/echo/runs"))
        .header("Content-Type", "text/plain")
        .send(r#"{"n": 1}"#)
        .unwrap();
    let (st, e) = answer(r);
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (st, e) = s.post("/api/v1/tasks/echo/runs?wait=2h", r#"{"n": 1}"#);
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (400, Some("bad_request"))
    );
    let (st, e) = s.post("/api/v1/tasks/echo/runs?wait=soon", r#"{"n": 1}"#);
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (400, Some("bad_request"))
    );

    // Runs: show, pages, filters.
    let (st, shown) = s.get(&format!("/api/v1/runs/{done_id}"));
    assert_eq!(st, 200);
    assert_eq!(shown["payload"], json!({"n": 7}));
    let (st, prefixed) = s.get(&format!("/api/v1/runs/{}", &done_id[..8]));
    assert_eq!(
        (st, prefixed["run_id"].as_str()),
        (200, Some(done_id.as_str()))
    );
    let (st, e) = s.get("/api/v1/runs/00000000-0000-0000-0000-000000000000");
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (404, Some("unknown_run"))
    );
    let (st, page) = s.get("/api/v1/runs?task=echo&limit=1");
    assert_eq!(st, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().expect("a next cursor").to_owned();
    let (_, page2) = s.get(&format!("/api/v1/runs?task=echo&limit=1&after={next}"));
    assert_ne!(page2["items"][0]["run_id"], page["items"][0]["run_id"]);
    let (st, done_page) = s.get("/api/v1/runs?state=completed&since=1h");
    assert_eq!(st, 200);
    assert!(
        done_page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "completed")
    );
    for bad in [
        "state=done",
        "limit=0",
        "after=xyz",
        "since=yesterday",
        "task=bad%20name",
        "colour=red",
    ] {
        let (st, e) = s.get(&format!("/api/v1/runs?{bad}"));
        assert_eq!(
            (st, e["error"]["kind"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {e}"
        );
    }

    // Logs as a JSON page.
    let (st, logs) = s.get(&format!("/api/v1/runs/{done_id}/logs"));
    assert_eq!(st, 200);
    let texts: Vec<&str> = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert!(texts.contains(&"got 7"), "{logs}");
    let (_, first) = s.get(&format!("/api/v1/runs/{done_id}/logs?limit=1"));
    let after = first["next"].as_str().unwrap().to_owned();
    let (_, rest) = s.get(&format!("/api/v1/runs/{done_id}/logs?after={after}"));
    assert_eq!(
        rest["items"].as_array().unwrap().len() + 1,
        logs["items"].as_array().unwrap().len()
    );

    // Cancel and retry.
    let (st, slow) = s.post("/api/v1/tasks/slow/runs", "{}");
    assert_eq!(st, 202);
    let slow_id = run_id(&slow);
    wait_until(20.0, "the slow run to start", || {
        s.get(&format!("/api/v1/runs/{slow_id}")).1["state"] == "running"
    });
    let (st, e) = s.post(&format!("/api/v1/runs/{slow_id}/retry"), "");
    assert_eq!((st, e["error"]["kind"].as_str()), (409, Some("run_active")));
    let (st, c) = s.post(&format!("/api/v1/runs/{slow_id}/cancel"), "");
    assert_eq!((st, c["result"].as_str()), (200, Some("requested")), "{c}");
    // The server's own worker hears of it at once, not at its next
    // heartbeat (a third of the 30 s lease, 10 s after the start).
    wait_until(5.0, "the slow run to be cancelled", || {
        s.get(&format!("/api/v1/runs/{slow_id}")).1["state"] == "cancelled"
    });
    let (st, c) = s.post(&format!("/api/v1/runs/{slow_id}/cancel"), "");
    assert_eq!(st, 200);
    assert_eq!(c["result"], json!({"already_over": "cancelled"}));
    let (st, again) = s.post(&format!("/api/v1/runs/{done_id}/retry"), "");
    assert_eq!(st, 202, "{again}");
    assert_ne!(run_id(&again), done_id);
    assert_eq!(again["args"], json!({"n": 7}));
    let (st, secret) = s.post(
        "/api/v1/tasks/login/runs?wait=30s",
        r#"{"user": "ann", "password": "hunter2"}"#,
    );
    assert_eq!(st, 200);
    assert_eq!(secret["args"]["password"], "********");
    let (st, e) = s.post(&format!("/api/v1/runs/{}/retry", run_id(&secret)), "");
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (409, Some("args_unavailable")),
        "{e}"
    );
    let (st, e) = s.post("/api/v1/runs/00000000-0000/retry", "");
    assert_eq!(st, 404, "{e}");

    // Schedules.
    let (st, sched) = s.post(
        "/api/v1/schedules",
        &json!({"task": "echo", "cron": "0 3 * * *", "args": {"n": 1}}).to_string(),
    );
    assert_eq!(st, 201, "{sched}");
    let sid = sched["id"].as_str().unwrap().to_owned();
    let (_, all) = s.get("/api/v1/schedules");
    assert_eq!(all["items"][0]["id"], sid.as_str());
    let (st, e) = s.post(
        "/api/v1/schedules",
        &json!({"task": "echo", "cron": "every tuesday", "args": {"n": 1}}).to_string(),
    );
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (422, Some("invalid_cron"))
    );
    let (st, e) = s.post(
        "/api/v1/schedules",
        &json!({"task": "echo", "cron": "0 3 * * *", "args": {"n": "one"}}).to_string(),
    );
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (422, Some("invalid_args"))
    );
    assert_eq!(e["error"]["violations"][0]["pointer"], "/n");
    assert_eq!(s.delete(&format!("/api/v1/schedules/{sid}")).0, 204);
    let (st, e) = s.delete(&format!("/api/v1/schedules/{sid}"));
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (404, Some("unknown_schedule"))
    );

    // Workers: the server's own.
    let (st, workers) = s.get("/api/v1/workers");
    assert_eq!(st, 200);
    let w = &workers["items"][0];
    assert!(w["id"].as_str().unwrap().starts_with("serve-"), "{workers}");
    assert_eq!(w["concurrency"], 2);

    // Unknown routes and methods answer in the same shape.
    let (st, e) = s.get("/api/v1/nothing");
    assert_eq!((st, e["error"]["kind"].as_str()), (404, Some("not_found")));
    let (st, e) = s.delete("/api/v1/runs");
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (405, Some("method_not_allowed"))
    );

    // The retried run ends too; /metrics counted the runs.
    wait_until(20.0, "the retried run to end", || {
        s.get(&format!("/api/v1/runs/{}", run_id(&again))).1["state"] == "completed"
    });
    wait_until(
        20.0,
        "/metrics to count the echo runs and the cancelled one",
        || {
            let text = s
                .agent
                .get(&s.url("/metrics"))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap();
            let count = |prefix: &str| {
                text.lines()
                    .find(|l| l.starts_with(prefix))
                    .map_or(0, |l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            };
            // done, queued, and the retried one.
            count(r#"task_executor_runs_ended_total{task="echo",outcome="completed"}"#) == 3
                && count(r#"task_executor_runs_ended_total{task="slow",outcome="cancelled"}"#) == 1
                && count(r#"task_executor_runs_ended_total{task="login",outcome="completed"}"#) == 1
        },
    );
    let mut r = s.agent.get(&s.url("/metrics")).call().unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    for metric in [
        r#"task_executor_http_requests_total{route="/api/v1/tasks/{name}/runs",method="POST",status="422"}"#,
        r#"task_executor_runs_ended_total{task="slow",outcome="cancelled"} 1"#,
        r#"task_executor_run_duration_seconds_count{task="echo"}"#,
        r#"task_executor_queue_depth{when="due"}"#,
        "task_executor_running_attempts ",
    ] {
        assert!(text.contains(metric), "{metric} missing from:\n{text}");
    }
    assert_eq!(s.stop().code(), Some(0));
}

/// The OpenAPI document, with each task's own run path, and its page.
fn openapi_and_docs(env: Env) {
    echo_task(&env);
    let s = Server::start(&env, &["--workers", "0"]);
    let (st, doc) = s.get("/api/v1/openapi.json");
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/tasks",
        "/api/v1/tasks/{name}",
        "/api/v1/tasks/{name}/runs",
        "/api/v1/runs",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/cancel",
        "/api/v1/runs/{id}/retry",
        "/api/v1/runs/{id}/logs",
        "/api/v1/events",
        "/api/v1/schedules",
        "/api/v1/schedules/{id}",
        "/api/v1/workers",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    let echo = &paths["/api/v1/tasks/echo/runs"]["post"];
    let schema = &echo["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(schema, &serde_json::from_str::<Value>(ECHO_INPUTS).unwrap());
    assert_eq!(echo["operationId"], "submit_echo");
    assert!(echo["responses"]["202"].is_object(), "{echo}");
    assert!(doc["components"]["schemas"]["RunView"].is_object());
    // The bearer scheme, optional while no token exists.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}, {}]));

    // A write from another site's page is refused, before anything is done;
    // one from the server's own page (or a program, no header) is not.
    let (st, body) = s.post("/api/v1/tasks/echo/runs", r#"{"n": 1}"#);
    assert_eq!(st, 202, "{body}");
    let id = run_id(&body);
    let cross = |headers: &[(&str, &str)]| {
        let mut r = s
            .agent
            .post(&s.url(&format!("/api/v1/runs/{id}/cancel")))
            .header("Content-Type", "application/json");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        answer(r.send("").unwrap())
    };
    let (st, e) = cross(&[("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (403, Some("cross_origin"))
    );
    let (st, e) = cross(&[("Origin", "https://evil.example")]);
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (403, Some("cross_origin"))
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("evil.example")
    );
    let (_, run) = s.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(run["state"], "queued", "nothing was cancelled: {run}");
    let (st, body) = cross(&[("Sec-Fetch-Site", "same-origin")]);
    assert_eq!(st, 200, "{body}");

    let mut page = s.agent.get(&s.url("/api/v1/docs")).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        // No inline script or eval allowed: neither `'…-inline'` nor `'…-eval'`.
        csp.contains("script-src 'self'") && !csp.contains("-inline") && !csp.contains("-eval"),
        "{csp}"
    );
    let html = page.body_mut().read_to_string().unwrap();
    assert!(html.contains(r#"<script src="/api/v1/docs/docs.js" defer></script>"#));
    assert_eq!(html.matches("<script").count(), 1, "no inline script");
    let mut js = s.agent.get(&s.url("/api/v1/docs/docs.js")).call().unwrap();
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        js.body_mut()
            .read_to_string()
            .unwrap()
            .contains("openapi.json")
    );
}

/// A run's log, live over SSE, resumed after a dropped connection.
fn sse_logs_resume(env: Env) {
    env.task(
        "ticker",
        "ticker.sh",
        r#"{"type":"object"}"#,
        r#"for i in 0 1 2 3 4 5; do echo "tick $i"; sleep 0.3; done; echo '{"status":1,"reason":"ok","payload":null}'"#,
    );
    let s = Server::start(&env, &["--workers", "1"]);
    let (_, run) = s.post("/api/v1/tasks/ticker/runs", "{}");
    let id = run_id(&run);
    let mut stream = s.events(&format!("/api/v1/runs/{id}/logs"), None);
    let first = stream.next().unwrap();
    assert_eq!(first.name, "state");
    assert_eq!(first.data["run_id"], id.as_str());
    let a = stream.next_named("line");
    let b = stream.next_named("line");
    assert_eq!(a.data["text"], "tick 0");
    assert_eq!(b.data["text"], "tick 1");
    assert_eq!(b.id.as_deref(), Some("1.1"));
    drop(stream);
    // Resumed after line 1: line 2 comes next, then the rest and the end.
    let mut stream = s.events(&format!("/api/v1/runs/{id}/logs"), Some("1.1"));
    let mut texts = Vec::new();
    let end = loop {
        let e = stream.next().expect("the stream ends with `end`");
        match e.name.as_str() {
            "line" => texts.push(e.data["text"].as_str().unwrap().to_owned()),
            "end" => break e,
            _ => {}
        }
    };
    assert_eq!(texts[..4], ["tick 2", "tick 3", "tick 4", "tick 5"]);
    assert_eq!(end.data["state"], "completed");
    assert!(stream.next().is_none(), "the stream closes after `end`");
    let (st, e) = s.get("/api/v1/runs/nonexistent-run/logs");
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (404, Some("unknown_run"))
    );
}

/// `/events`: state changes read from the store, including a run queued
/// by another process.
fn events_feed(env: Env) {
    echo_task(&env);
    let s = Server::start(&env, &["--workers", "1"]);
    let mut stream = s.events("/api/v1/events", None);
    // Queued by the CLI, not through this server: the feed reads the store.
    let out = env
        .cmd()
        .args(["submit", "echo", "--taskArgs", r#"{"n": 3}"#])
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("completed") {
        let e = stream.next_named("run");
        if e.data["run_id"] == id.as_str() {
            states.push(e.data["state"].as_str().unwrap().to_owned());
        }
    }
    assert!(states.len() <= 3, "{states:?}");
}

/// SIGTERM with a run in flight: the run finishes, a waiting request is
/// answered, the server exits 0.
fn sigterm_drains(env: Env) {
    sleepy_task(&env, "nap", 2.0);
    let s = Server::start(&env, &["--workers", "1"]);
    let (_, run) = s.post("/api/v1/tasks/nap/runs", "{}");
    let id = run_id(&run);
    wait_until(20.0, "the run to start", || {
        s.get(&format!("/api/v1/runs/{id}")).1["state"] == "running"
    });
    let agent = s.agent.clone();
    let url = s.url("/api/v1/tasks/nap/runs?wait=50s");
    let waiting = std::thread::spawn(move || {
        answer(
            agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send("{}")
                .unwrap(),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let stderr = s.stderr.clone();
    let status = s.stop();
    assert_eq!(status.code(), Some(0), "{}", stderr.lock().unwrap());
    assert!(started.elapsed() < Duration::from_secs(30));
    // Answered at shutdown with the run as it was (queued, never started).
    let (st, w) = waiting.join().unwrap();
    assert!(st == 202 || st == 200, "{st} {w}");
    let shown = env.json(&["runs", "show", &id, "--json"]);
    assert_eq!(
        shown["state"], "completed",
        "the in-flight run finished: {shown}"
    );
    assert!(stderr.lock().unwrap().contains("stopped"));
}

/// Once a token exists: 401 without one (or with a bad one), 403 for a
/// scope too small, and every write in the audit log under the token's name.
fn tokens_and_audit(env: Env) {
    echo_task(&env);
    let token = |name: &str, scope: &str| {
        let created = env.json(&[
            "tokens", "create", "--name", name, "--scope", scope, "--json",
        ]);
        created["secret"].as_str().unwrap().to_owned()
    };
    let reader = token("dash", "read");
    let runner = token("ci", "run");
    let admin = token("ops", "admin");
    let s = Server::start(&env, &["--workers", "1"]);
    wait_until(5.0, "the tokens notice", || {
        s.stderr()
            .contains("every request needs `Authorization: Bearer <token>`")
    });
    let call = |method: &str, path: &str, token: Option<&str>, body: &str| {
        let url = s.url(path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let r = match method {
            "GET" => {
                let mut r = s.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            "DELETE" => {
                let mut r = s.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
                let mut r = s
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(body)
            }
        };
        answer(r.unwrap())
    };
    // No token, a bad one: 401.
    let (st, e) = call("GET", "/api/v1/tasks", None, "");
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (401, Some("missing_token"))
    );
    let (st, e) = call("GET", "/api/v1/tasks", Some("te_nonsense"), "");
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (401, Some("malformed_token"))
    );
    // Read may look, not run; run may run, not schedule.
    assert_eq!(call("GET", "/api/v1/tasks", Some(&reader), "").0, 200);
    // The document now says every operation needs the bearer token.
    let (st, doc) = call("GET", "/api/v1/openapi.json", Some(&reader), "");
    assert_eq!(st, 200);
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    let (st, e) = call(
        "POST",
        "/api/v1/tasks/echo/runs",
        Some(&reader),
        r#"{"n": 1}"#,
    );
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (403, Some("forbidden")),
        "{e}"
    );
    let (st, run) = call(
        "POST",
        "/api/v1/tasks/echo/runs?wait=30s",
        Some(&runner),
        r#"{"n": 1}"#,
    );
    assert_eq!(st, 200, "{run}");
    assert_eq!(run["caller"], "http:ci");
    let id = run_id(&run);
    assert_eq!(
        call(
            "POST",
            &format!("/api/v1/runs/{id}/retry"),
            Some(&runner),
            ""
        )
        .0,
        202
    );
    let sched = json!({"task": "echo", "cron": "0 3 * * *", "args": {"n": 1}}).to_string();
    let (st, e) = call("POST", "/api/v1/schedules", Some(&runner), &sched);
    assert_eq!((st, e["error"]["kind"].as_str()), (403, Some("forbidden")));
    let (st, added) = call("POST", "/api/v1/schedules", Some(&admin), &sched);
    assert_eq!(st, 201, "{added}");
    let sid = added["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(
            "DELETE",
            &format!("/api/v1/schedules/{sid}"),
            Some(&admin),
            ""
        )
        .0,
        204
    );
    assert_eq!(
        call("DELETE", "/api/v1/tasks/echo", Some(&admin), "").0,
        204
    );

    let audit = env.json(&["audit", "list", "--json", "--limit", "20"]);
    let http: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"]["transport"] == "http")
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("ops", "task.unregister"),
        ("ops", "schedule.remove"),
        ("ops", "schedule.add"),
        ("ci", "run.retry"),
        ("ci", "run.submit"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(http, want, "{audit}");
}

on_sql_backends!(
    routes_and_errors,
    openapi_and_docs,
    sse_logs_resume,
    events_feed,
    sigterm_drains,
    tokens_and_audit
);

#[test]
fn body_limit_is_413() {
    let env = Env::new("db");
    echo_task(&env);
    let s = Server::start(&env, &["--workers", "0", "--max-body", "1KiB"]);
    let big = json!({"n": 1, "who": "x".repeat(2048)}).to_string();
    let (st, e) = s.post("/api/v1/tasks/echo/runs", &big);
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (413, Some("body_too_large")),
        "{e}"
    );
    // Under the limit it goes through to the schema check.
    let (st, _) = s.post("/api/v1/tasks/echo/runs", r#"{"n": 1}"#);
    assert_eq!(st, 202);
}

#[test]
fn non_loopback_is_refused_without_tokens() {
    let env = Env::new("db");
    let out = env
        .cmd()
        .args(["serve", "--listen", "0.0.0.0:0", "--workers", "0"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve on `0.0.0.0:0`"), "{err}");
    assert!(err.contains("--insecure-no-auth"), "{err}");
    // With the override it serves, and says so loudly.
    let s = Server::start_on(&env, "0.0.0.0:0", &["--workers", "0", "--insecure-no-auth"]);
    let (st, _) = s.get("/api/v1/tasks");
    assert_eq!(st, 200);
    wait_until(5.0, "the warning", || {
        s.stderr().contains("WITHOUT AUTHENTICATION")
    });
}

#[test]
fn a_yaml_store_is_refused() {
    let env = Env::new("yaml");
    let out = env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "0"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a store that keeps run history"),
        "{err}"
    );
}

#[test]
fn a_slow_client_is_cut_off() {
    use std::io::Write;
    let env = Env::new("db");
    let s = Server::start(&env, &["--workers", "0"]);
    let addr = s.base.strip_prefix("http://").unwrap().to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /api/v1/tasks HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    // The headers never end: the server gives up on them and closes.
    let _ = conn.read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(25),
        "closed after {took:?}"
    );
}

/// The web page at `/`: HTML under the strict CSP, its assets with their
/// types, all served without a token even once tokens exist (they hold no
/// data; the API behind them still needs one).
#[test]
fn the_web_page_and_its_assets() {
    let env = Env::new("db");
    env.cmd()
        .args(["tokens", "create", "--name", "ci", "--scope", "read"])
        .assert()
        .success();
    let s = Server::start(&env, &["--workers", "0"]);
    let mut page = s.agent.get(&s.url("/")).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let header = |r: &ureq::http::Response<ureq::Body>, name: &str| {
        r.headers()[name].to_str().unwrap().to_owned()
    };
    assert!(header(&page, "content-type").starts_with("text/html"));
    let csp = header(&page, "content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("-inline") && !csp.contains("-eval"),
        "{csp}"
    );
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    let html = page.body_mut().read_to_string().unwrap();
    assert!(html.contains(r#"<script src="/ui/app.js" defer></script>"#));
    for (path, kind, needle) in [
        ("/ui/app.js", "text/javascript", "/api/v1"),
        ("/ui/app.css", "text/css", "font"),
        ("/ui/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let mut r = s.agent.get(&s.url(path)).call().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert!(header(&r, "content-type").starts_with(kind), "{path}");
        assert!(
            r.body_mut().read_to_string().unwrap().contains(needle),
            "{path}"
        );
    }
    let (st, e) = s.get("/api/v1/tasks");
    assert_eq!(
        (st, e["error"]["kind"].as_str()),
        (401, Some("missing_token"))
    );
    let (st, _) = s.get("/ui/nothing.js");
    assert_eq!(st, 401, "only the page's own assets are public");
}
