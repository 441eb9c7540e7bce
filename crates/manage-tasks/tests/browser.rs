//! The web page of `manage_tasks serve` in a real browser: Debian's
//! `chromium` driven by `playwright-core` (npm, in `e2e/`) through
//! `e2e/ui.mjs`, against a real server with real task scripts.
//!
//! The scenario (each step asserts; see the script): the task list; a form
//! made from a schema with an enum, a nested object, a `$ref`, bounds, a
//! password, a date, an array of strings and a JSON fallback; field-level
//! errors from the server's 422 (with and without the browser's own checks);
//! a run's log arriving live, stdout and stderr apart, and its payload; a
//! long run cancelled; two failed runs retried in bulk from the history;
//! output full of markup shown as text; a phone's width; signing in with a
//! token. Screenshots go to `target/browser-screenshots/`.
//!
//! Needs `/usr/bin/chromium` (`apt-get install chromium`) and
//! `e2e/node_modules` (`npm ci --prefix e2e`): without them the test fails
//! saying so, it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::{Env, exits_within, signal};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A form with one field of each kind the page renders, then six stderr
/// lines a few tenths of a second apart, one stdout line, and a payload.
const DEPLOY: &str = r##"#!/usr/bin/python3
import json, sys, time
INPUTS = {
    "type": "object",
    "$defs": {"port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 443, "title": "Port"}},
    "properties": {
        "name": {"type": "string", "title": "Service name", "description": "lower-case letters, digits and dashes",
                 "pattern": "^[a-z][a-z0-9-]*$", "minLength": 2, "maxLength": 30},
        "env": {"type": "string", "title": "Environment", "enum": ["staging", "production"], "default": "staging"},
        "count": {"type": "integer", "title": "Replicas", "minimum": 1, "maximum": 10, "default": 2},
        "target": {"type": "object", "title": "Target", "description": "where it goes",
                   "properties": {"host": {"type": "string", "title": "Host"},
                                  "address": {"type": "string", "format": "ipv4", "title": "IPv4 address"},
                                  "port": {"$ref": "#/$defs/port"}},
                   "required": ["host"]},
        "tags": {"type": "array", "title": "Tags", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
        "dry_run": {"type": "boolean", "title": "Dry run", "default": False},
        "api_key": {"type": "string", "title": "API key", "writeOnly": True},
        "when": {"type": "string", "format": "date", "title": "Date"},
        "contact": {"type": "string", "format": "email", "title": "Contact"},
        "notes": {"title": "Notes", "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    },
    "required": ["name", "env", "target"],
    "additionalProperties": False
}
if sys.argv[1:] == ["schema"]:
    print(json.dumps({"description": "Deploy a service (every kind of field)", "inputs": INPUTS}))
    sys.exit(0)
data = json.loads(sys.stdin.readline())["data"]
for i in range(1, 7):
    print(f"step {i} of 6: {data['name']} to {data['env']}", file=sys.stderr, flush=True)
    time.sleep(0.5)
print("all steps done", flush=True)
payload = {k: v for k, v in data.items() if k != "api_key"}
print(json.dumps({"status": 1, "reason": "deployed", "payload": payload}))
"##;

/// Runs for a minute unless cancelled.
const SLEEPER: &str = r#"#!/bin/bash
if [ "$1" = schema ]; then
  echo '{"description":"Sleeps a minute","inputs":{"type":"object"}}'
  exit 0
fi
echo "sleeping 60 s"
sleep 60
echo '{"status":1,"reason":"ok","payload":null}'
"#;

/// Fails: exits 3 with no result.
const FAILS: &str = r#"#!/bin/bash
if [ "$1" = schema ]; then
  echo '{"description":"Always fails","inputs":{"type":"object","properties":{},"additionalProperties":false}}'
  exit 0
fi
echo "about to fail" >&2
exit 3
"#;

/// Markup in its description, a field title, its log, its reason and its payload.
const XSS: &str = r#"#!/usr/bin/python3
import json, sys
S = "<script>window.__xss=1</script>"
I = '"><img src=x onerror="window.__xss=1">'
if sys.argv[1:] == ["schema"]:
    print(json.dumps({"description": "Prints markup " + S + " " + I,
                      "inputs": {"type": "object", "properties": {"x": {"type": "string", "title": I}}}}))
    sys.exit(0)
print(S, flush=True)
print(I, file=sys.stderr, flush=True)
print(json.dumps({"status": 1, "reason": I, "payload": {"html": S, "attr": I, S: [I]}}))
"#;

/// The server, stopped (SIGTERM, then SIGKILL) however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            signal(self.0.id(), "-TERM");
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                exits_within(&mut self.0, 20.0)
            }))
            .is_err()
            {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[test]
fn the_web_page_in_chromium() {
    let e2e = repo().join("e2e");
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser test needs Debian's chromium (as root: apt-get install chromium)"
    );
    assert!(
        e2e.join("node_modules/playwright-core/package.json")
            .exists(),
        "{}/node_modules is missing: install the browser test's driver with `npm ci --prefix e2e` \
         (playwright-core; it never downloads a browser)",
        e2e.display()
    );

    let env = Env::new("db");
    for (name, file, body) in [
        ("deploy", "deploy.py", DEPLOY),
        ("sleeper", "sleeper.sh", SLEEPER),
        ("fails", "fails.sh", FAILS),
        ("xss", "xss.py", XSS),
    ] {
        env.register(name, &env.script(file, body));
    }

    let mut cmd = env.std_cmd();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "4",
        "--drain",
        "2s",
    ]);
    let (child, base, said) = common::spawn_server(cmd, |line| {
        line.strip_prefix("serving ")
            .and_then(|rest| rest.split_once(' ').map(|(addr, _)| addr))
    });
    let server = Server(child);

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../browser-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(e2e.join("ui.mjs"))
        .arg(&base)
        .arg(&shots)
        .env("MANAGE_TASKS", env!("CARGO_BIN_EXE_manage_tasks"))
        .env("TASK_STORE", &env.store)
        .env("HOME", env.dir.path())
        .env_remove("XDG_DATA_HOME")
        .current_dir(&e2e)
        .output()
        .expect("node runs the browser test (apt-get install nodejs)");
    drop(server);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The steps it checked, for `--success-output` and the CI log.
    print!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "e2e/ui.mjs failed ({}); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{}\n--- server\n{}",
        out.status,
        shots.display(),
        String::from_utf8_lossy(&out.stderr),
        said.lock().unwrap()
    );
    for shot in [
        "task-form.png",
        "run-page.png",
        "history.png",
        "phone-run.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot} was not saved");
    }
}
