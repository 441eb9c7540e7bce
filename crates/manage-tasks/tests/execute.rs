//! Executing tasks through the CLI: results, logs, exit codes, timeouts and signals.
//!
//! - the bundled examples, human and `--json` output
//! - the run's `TASK_*` variables over the inherited environment
//! - argument sources (`--taskArgs`, `-`, `--args-file`) and their errors
//! - the exit-code table: 0, 1, 2, 3
//! - timeouts, Ctrl-C and SIGTERM stop the whole process group

mod common;

use std::time::{Duration, Instant};

use common::*;
use predicates::prelude::*;
use serde_json::json;

#[test]
fn executes_the_python_example_with_json_output() {
    for kind in ["yaml", "db"] {
        let env = Env::new(kind);
        env.register("wordcount", &examples_dir().join("python.py"));
        let out = env
            .cmd()
            .args(["execute", "--name", "wordcount", "--json", "--taskArgs"])
            .arg(r#"{"text":"the cat and the hat","top":1}"#)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let r = json_stdout(&out);
        assert_eq!(r["task"], "wordcount");
        assert_eq!(r["status"], 1);
        assert_eq!(r["reason"], "ok");
        assert_eq!(r["outcome"], "completed");
        assert_eq!(r["success"], true);
        assert_eq!(r["payload"], json!({"words": 5, "top": [["the", 2]]}));
        assert_eq!(r["exit_code"], 0);
        assert!(r["run_id"].as_str().unwrap().len() >= 32);
        assert!(r["duration_ms"].as_f64().unwrap() > 0.0);
        // Logs go to stderr, prefixed with the task name; stdout holds the JSON alone.
        let err = stderr(&out);
        assert!(err.contains("TASK::wordcount counted 5 words"), "{err}");
        assert!(
            err.contains("TASK::wordcount called by self as wordcount"),
            "{err}"
        );
    }
}

#[test]
fn executes_the_bash_example_with_human_output() {
    let env = Env::new("db");
    env.register("greet", &examples_dir().join("bash.sh"));
    env.cmd()
        .args([
            "execute",
            "--name",
            "greet",
            "--taskArgs",
            r#"{"name":"Ada","excited":true}"#,
        ])
        .assert()
        .code(0)
        .stdout(
            predicate::str::contains("Task greet succeeded with status 1 (ok)")
                .and(predicate::str::contains("\"greeting\": \"Hello, Ada!\""))
                .and(predicate::str::contains("\x1b[").not()),
        )
        .stderr(predicate::str::contains("TASK::greet greeting Ada"));
}

#[test]
fn envelope_meta_carries_caller_and_task_name() {
    let env = Env::new("db");
    env.task(
        "echo",
        "echo.sh",
        "{}",
        "in=$(cat)\necho \"{\\\"status\\\":1,\\\"reason\\\":\\\"ok\\\",\\\"payload\\\":$in}\"",
    );
    let out = env
        .cmd()
        .args([
            "execute",
            "--name",
            "echo",
            "--caller",
            "ci-bot",
            "--json",
            "--taskArgs",
            r#"{"k":[1,2]}"#,
        ])
        .output()
        .unwrap();
    let r = json_stdout(&out);
    assert_eq!(
        r["payload"],
        json!({"meta": {"protocol": "v1", "caller": "ci-bot", "taskName": "echo"}, "data": {"k": [1, 2]}})
    );
}

/// The run's own `TASK_*` variables replace any the executor inherited
/// (say, from a task that runs `manage_tasks` itself); the rest is passed on.
#[test]
fn run_variables_replace_inherited_ones() {
    let env = Env::new("db");
    env.task(
        "vars",
        "vars.sh",
        "{}",
        r#"case "$TASK_RESULT_FILE" in /stale/*) file=stale;; *) file=fresh;; esac
printf '{"status":1,"payload":{"name":"%s","run":"%s","protocol":"%s","file":"%s","kept":"%s"}}\n' "$TASK_NAME" "$TASK_RUN_ID" "$TASK_PROTOCOL" "$file" "$KEPT""#,
    );
    let out = env
        .cmd()
        .args(["execute", "--name", "vars", "--json", "--taskArgs", "{}"])
        .env("TASK_NAME", "stale")
        .env("TASK_RUN_ID", "stale")
        .env("TASK_PROTOCOL", "v0")
        .env("TASK_RESULT_FILE", "/stale/result.json")
        .env("KEPT", "inherited")
        .output()
        .unwrap();
    let r = json_stdout(&out);
    let payload = &r["payload"];
    assert_eq!(payload["name"], "vars");
    assert_eq!(payload["protocol"], "v1");
    assert_eq!(payload["file"], "fresh");
    assert_eq!(payload["kept"], "inherited");
    assert_ne!(payload["run"], "stale");
    assert_eq!(payload["run"], r["run_id"], "{r}");
}

#[test]
fn arguments_come_from_stdin_or_a_file() {
    let env = Env::new("db");
    env.register("wordcount", &examples_dir().join("python.py"));
    let out = env
        .cmd()
        .args([
            "execute",
            "--name",
            "wordcount",
            "--json",
            "--taskArgs",
            "-",
        ])
        .write_stdin(r#"{"text":"a b c"}"#)
        .output()
        .unwrap();
    assert_eq!(json_stdout(&out)["payload"]["words"], 3, "{}", stderr(&out));
    let file = env.dir.path().join("args.json");
    std::fs::write(&file, r#"{"text":"x y"}"#).unwrap();
    let out = env
        .cmd()
        .args(["execute", "--name", "wordcount", "--json", "--args-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(json_stdout(&out)["payload"]["words"], 2, "{}", stderr(&out));
}

#[test]
fn invalid_arguments_list_every_violation_and_nothing_runs() {
    let env = Env::new("db");
    let marker = env.dir.path().join("ran");
    let body = task_script(
        r#"{"type":"object","required":["user","n"],"properties":{"user":{"type":"string"},"n":{"type":"integer","maximum":3}},"additionalProperties":false}"#,
        &format!("touch {}\necho '{{\"status\":1}}'", marker.display()),
    );
    let script = env.script("t.sh", &body);
    env.register("t", &script);
    let out = env
        .cmd()
        .args([
            "execute",
            "--name",
            "t",
            "--json",
            "--taskArgs",
            r#"{"user":5,"n":9,"extra":true}"#,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for pointer in ["at \"/user\"", "at \"/n\"", "at \"\""] {
        assert!(err.contains(pointer), "missing {pointer} in {err}");
    }
    let doc = json_stdout(&out);
    assert_eq!(doc["error"]["kind"], "invalid_args");
    let pointers: Vec<_> = doc["error"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/user") && pointers.contains(&"/n"),
        "{pointers:?}"
    );
    assert!(!marker.exists(), "the task ran despite invalid arguments");
}

#[test]
fn invalid_json_reports_its_position() {
    let env = Env::new("db");
    env.register("wordcount", &examples_dir().join("python.py"));
    env.cmd()
        .args([
            "execute",
            "--name",
            "wordcount",
            "--taskArgs",
            "{\"text\": \n oops}",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("line 2, column 2"));
    env.cmd()
        .args(["execute", "--name", "wordcount", "--taskArgs", "[1]"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("must be a JSON object"));
    env.cmd()
        .args([
            "execute",
            "--name",
            "wordcount",
            "--args-file",
            "missing.json",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.json"));
}

#[test]
fn unknown_task_exits_2() {
    let env = Env::new("db");
    env.cmd()
        .args(["execute", "--name", "ghost"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("task `ghost` is not registered"));
}

#[test]
fn exit_codes_follow_the_outcome() {
    let env = Env::new("db");
    let cases: &[(&str, &str, i32, &str)] = &[
        (
            "ok",
            "echo '{\"status\":1,\"reason\":\"fine\"}'",
            0,
            "completed",
        ),
        (
            "reported",
            "echo '{\"status\":2,\"reason\":\"disk full\"}'",
            1,
            "completed",
        ),
        ("crash", "echo boom >&2; exit 7", 3, "exited_non_zero"),
        ("silent", "echo just logs", 3, "no_result"),
        (
            "badreason",
            "echo '{\"status\":1,\"reason\":42}'",
            3,
            "invalid_result",
        ),
        ("segv", "kill -SEGV $$", 3, "signalled"),
    ];
    for (name, run, code, kind) in cases {
        env.task(name, &format!("{name}.sh"), "{}", run);
        let out = env
            .cmd()
            .args(["execute", "--name", name, "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(*code), "{name}: {}", stderr(&out));
        assert_eq!(json_stdout(&out)["outcome"], *kind, "{name}");
    }
    let out = env
        .cmd()
        .args(["execute", "--name", "segv", "--json"])
        .output()
        .unwrap();
    assert_eq!(json_stdout(&out)["signal"], "SIGSEGV");
    env.cmd()
        .args(["execute", "--name", "reported"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("status 2 (disk full)"));
}

#[test]
fn output_schema_violations_fail_the_run_with_pointers() {
    let env = Env::new("db");
    let body = "#!/bin/bash\nif [ \"$1\" = schema ]; then echo '{\"inputs\":{},\"outputs\":{\"type\":\"object\",\"properties\":{\"payload\":{\"type\":\"object\",\"required\":[\"count\"]}}}}'; exit 0; fi\necho '{\"status\":1,\"reason\":\"ok\",\"payload\":{\"cnt\":1}}'\n";
    let script = env.script("out.sh", body);
    env.register("out", &script);
    let out = env
        .cmd()
        .args(["execute", "--name", "out", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let r = json_stdout(&out);
    assert_eq!(r["outcome"], "output_violation");
    assert_eq!(r["error"]["kind"], "output_violation");
    assert_eq!(r["error"]["violations"][0]["pointer"], "/payload");
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let env = Env::new("db");
    let pids = env.dir.path().join("pids");
    let script = env.script(
        "slow.sh",
        &task_script(
            "{}",
            &format!("sleep 1000 &\necho $! > {}\nsleep 1000", pids.display()),
        ),
    );
    env.cmd()
        .args([
            "register",
            "--name",
            "slow",
            "--timeout",
            "30s",
            "--location",
        ])
        .arg(&script)
        .assert()
        .success();
    let started = Instant::now();
    let out = env
        .cmd()
        .args([
            "execute",
            "--name",
            "slow",
            "--timeout",
            "500ms",
            "--grace",
            "1s",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(json_stdout(&out)["outcome"], "timed_out");
    assert!(started.elapsed() < Duration::from_secs(15));
    let grandchild: i32 = std::fs::read_to_string(&pids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SIGKILLed before the executor exited; gone once the kernel has run it down.
    wait_until(2.0, &format!("grandchild {grandchild} to die"), || {
        !alive(grandchild)
    });
}

/// With history (SQLite, PostgreSQL: the run is recorded as it goes, and
/// ends cancelled) and without (YAML).
#[test]
fn sigint_and_sigterm_cancel_the_run_cleanly() {
    for (store, signal) in [
        ("db", "INT"),
        ("db", "TERM"),
        ("postgres", "INT"),
        ("yaml", "INT"),
        ("yaml", "TERM"),
    ] {
        let env = Env::new(store);
        let pids = env.dir.path().join("pids");
        env.task(
            "slow",
            "slow.sh",
            "{}",
            &format!("sleep 1000 &\necho $! > {}\nsleep 1000", pids.display()),
        );
        let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("manage_tasks"))
            .env("TASK_STORE", &env.store)
            .args(["execute", "--name", "slow", "--json", "--grace", "2s"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pids.exists() || std::fs::read_to_string(&pids).unwrap().trim().is_empty() {
            assert!(Instant::now() < deadline, "task never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{store} {signal}: {}",
            stderr(&out)
        );
        assert_eq!(
            json_stdout(&out)["outcome"],
            "cancelled",
            "{store} {signal}"
        );
        let grandchild: i32 = std::fs::read_to_string(&pids)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SIGKILLed before the executor exited; gone once the kernel has run it down.
        wait_until(
            2.0,
            &format!("{store} {signal}: the grandchild to die"),
            || !alive(grandchild),
        );
        if store != "yaml" {
            let runs = env.all_runs();
            assert_eq!(runs.len(), 1, "{store} {signal}");
            assert_eq!(runs[0]["state"], "cancelled", "{store} {signal}");
        }
    }
}

#[test]
fn a_location_removed_after_register_is_reported() {
    let env = Env::new("db");
    let script = env.task("gone", "gone.sh", "{}", "echo '{\"status\":1}'");
    std::fs::remove_file(&script).unwrap();
    env.cmd()
        .args(["execute", "--name", "gone"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("gone.sh` no longer exists")
                .and(predicate::str::contains("register --force")),
        );
}

#[test]
fn quiet_drops_task_logs_and_no_color_never_colours() {
    let env = Env::new("db");
    env.register("greet", &examples_dir().join("bash.sh"));
    env.cmd()
        .args([
            "-q",
            "execute",
            "--name",
            "greet",
            "--taskArgs",
            r#"{"name":"Bo"}"#,
        ])
        .assert()
        .success()
        .stderr(predicate::str::is_empty());
    env.cmd()
        .env("NO_COLOR", "1")
        .args([
            "execute",
            "--name",
            "greet",
            "--taskArgs",
            r#"{"name":"Bo"}"#,
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("\x1b[").not())
        .stderr(predicate::str::contains("\x1b[").not());
}

/// One run whose output and result are larger than the first heap of the
/// shipped (musl) build, 1 MiB: its buffers move to the second allocator
/// mid-run (`src/alloc.rs`), and on SQLite the history's do too. History
/// (SQLite, PostgreSQL) keeps the start of each over-long line and every
/// line around them.
#[test]
fn output_and_results_of_several_mib_come_through_intact() {
    for kind in ["yaml", "db", "postgres"] {
        let env = Env::new(kind);
        env.task(
            "big",
            "big.sh",
            "{}",
            "cat >/dev/null\n\
             head -c 3000000 /dev/zero | tr '\\0' l; echo\n\
             for i in $(seq 1 20000); do echo \"log line $i\"; done\n\
             printf '{\"status\":1,\"reason\":\"ok\",\"payload\":\"'\n\
             head -c 2500000 /dev/zero | tr '\\0' p\n\
             printf '\"}\\n'",
        );
        let out = env
            .cmd()
            .args(["execute", "--name", "big", "--json"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{kind}: {}",
            &stderr(&out)[..500]
        );
        let r = json_stdout(&out);
        let payload = r["payload"].as_str().unwrap();
        assert_eq!(payload.len(), 2_500_000, "{kind}");
        assert!(payload.bytes().all(|b| b == b'p'), "{kind}");
        let err = stderr(&out);
        assert!(err.contains("TASK::big log line 1\n"), "{kind}");
        assert!(err.contains("TASK::big log line 20000\n"), "{kind}");
        assert!(err.contains(&"l".repeat(100_000)), "{kind}: the long line");
        if kind != "yaml" {
            let id = r["run_id"].as_str().unwrap();
            let logs = stdout(&env.cmd().args(["runs", "logs", id]).output().unwrap());
            let lines: Vec<&str> = logs.lines().collect();
            assert_eq!(lines.len(), 20_002, "every line is kept");
            assert_eq!(lines[0], format!("out| {} […line cut]", "l".repeat(4096)));
            assert_eq!(lines[1], "out| log line 1");
            assert_eq!(lines[20_000], "out| log line 20000");
            assert!(
                lines[20_001].starts_with("out| {\"status\":1,\"reason\":\"ok\",\"payload\":\"ppp")
            );
            assert!(lines[20_001].ends_with("p […line cut]"));
        }
    }
}

/// `format` is checked in every draft unless the task opts out at register.
#[test]
fn formats_are_checked_unless_the_task_opts_out() {
    let env = Env::new("db");
    let inputs = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"d":{"type":"string","format":"date"},"to":{"type":"string","format":"idn-email"}}}"#;
    let script = env.script("t.sh", &task_script(inputs, "echo '{\"status\":1}'"));
    env.register("strict", &script);
    let out = env
        .cmd()
        .args([
            "-q",
            "execute",
            "strict",
            "--json",
            "--taskArgs",
            r#"{"d":"2020-13-01"}"#,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let error = &json_stdout(&out)["error"];
    assert_eq!(error["kind"], "invalid_args");
    assert_eq!(error["violations"][0]["pointer"], "/d");
    env.cmd()
        .args([
            "-q",
            "execute",
            "strict",
            "--taskArgs",
            r#"{"to":"not an address"}"#,
        ])
        .assert()
        .code(2);
    env.cmd()
        .args([
            "-q",
            "execute",
            "strict",
            "--taskArgs",
            r#"{"d":"2020-12-01","to":"用户@例子.广告"}"#,
        ])
        .assert()
        .success();
    env.cmd()
        .args([
            "-q",
            "register",
            "--name",
            "lenient",
            "--formats",
            "annotate",
            "--location",
        ])
        .arg(&script)
        .assert()
        .success();
    env.cmd()
        .args([
            "-q",
            "execute",
            "lenient",
            "--taskArgs",
            r#"{"d":"2020-13-01"}"#,
        ])
        .assert()
        .success();
}

/// An `inputs` schema no object can satisfy is refused at register, saying why.
#[test]
fn inputs_that_accept_no_object_are_refused_at_register() {
    let env = Env::new("db");
    for (file, inputs, says) in [
        (
            "s.sh",
            r#"{"type":"string"}"#,
            "its root `type` is \"string\"",
        ),
        ("f.sh", "false", "is the schema `false`"),
    ] {
        let script = env.script(file, &task_script(inputs, "true"));
        env.cmd()
            .args(["register", "--name", "t", "--location"])
            .arg(&script)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
    env.cmd()
        .args(["list", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"items\":[]"));
}
