//! `execute --batch`: many runs through the pool.
//!
//! - results in input order, one JSON object per line, with line numbers
//! - bad lines become error results; the other lines still run
//! - concurrency never exceeds `--parallel`
//! - Ctrl-C cancels everything cleanly and says what did not run

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn lines_json(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A task that echoes `n` back as its payload.
fn echo_task(env: &Env) {
    env.task("echo", "echo.sh", r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}"#, "in=$(cat)\nn=${in##*\\\"n\\\":}\nn=${n%%[,\\}]*}\necho \"{\\\"status\\\":1,\\\"reason\\\":\\\"ok\\\",\\\"payload\\\":$n}\"");
}

#[test]
fn results_come_back_in_input_order_with_line_numbers() {
    let env = Env::new("db");
    echo_task(&env);
    let input: String = (1..=40).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let file = env.dir.path().join("in.jsonl");
    std::fs::write(&file, input).unwrap();
    let out = env
        .cmd()
        .args([
            "-q",
            "execute",
            "--name",
            "echo",
            "--json",
            "--parallel",
            "4",
            "--batch",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results = lines_json(&out);
    assert_eq!(results.len(), 40);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["line"], i as u64 + 1);
        assert_eq!(r["payload"], i as u64 + 1, "{r}");
        assert_eq!(r["outcome"], "completed");
    }
    assert!(stderr(&out).contains("40 runs in"), "{}", stderr(&out));
}

#[test]
fn bad_lines_are_reported_and_the_rest_still_run() {
    let env = Env::new("db");
    echo_task(&env);
    let input = "{\"n\":1}\n{oops\n\n{\"n\":\"two\"}\n[3]\n{\"n\":5}\n";
    let out = env
        .cmd()
        .args(["-q", "execute", "--name", "echo", "--json", "--batch", "-"])
        .write_stdin(input)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "worst of the runs is 'nothing ran'"
    );
    let r = lines_json(&out);
    // A run says how it ended; a line that could not run, why (`error.kind`).
    let summary: Vec<(u64, &str)> = r
        .iter()
        .map(|v| {
            let what = v["outcome"].as_str().or(v["error"]["kind"].as_str());
            (v["line"].as_u64().unwrap(), what.unwrap())
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "completed"),
            (2, "invalid_json"),
            (4, "invalid_args"),
            (5, "invalid_args"),
            (6, "completed")
        ]
    );
    assert_eq!(r[2]["error"]["violations"][0]["pointer"], "/n");
    assert!(r[1].get("run_id").is_none(), "{}", r[1]);
    assert_eq!(r[4]["payload"], 5);
}

#[test]
fn human_output_lists_failures_and_a_summary() {
    let env = Env::new("db");
    env.task(
        "flaky",
        "flaky.sh",
        "{}",
        "in=$(cat)\ncase $in in *fail*) exit 9;; esac\necho '{\"status\":1}'",
    );
    let out = env
        .cmd()
        .args(["-q", "execute", "--name", "flaky", "--batch", "-"])
        .args(["--parallel", "2"])
        .write_stdin("{}\n{\"fail\":1}\n{}\n\n{oops\n[1]\n")
        .output()
        .unwrap();
    // A rejected line is "nothing ran" (2); a failed run (3) is worse.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    // One line per input line, in input order (the blank one says nothing), then the summary.
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[0].starts_with("line 1: succeeded, status 1, "),
        "{text}"
    );
    assert!(lines[0].ends_with(": null"), "the short payload: {text}");
    assert!(
        lines[1].starts_with("line 2: failed: exited with code 9"),
        "{text}"
    );
    assert!(lines[2].starts_with("line 3: succeeded"), "{text}");
    assert!(lines[3].starts_with("line 5: rejected: "), "{text}");
    assert!(lines[4].starts_with("line 6: rejected: "), "{text}");
    // The counts add up to the five lines read.
    let summary = lines[5];
    assert!(summary.starts_with("5 lines, 3 runs in "), "{summary}");
    assert!(
        summary.ends_with(
            ": 1 exited non zero, 2 succeeded, 2 rejected (1 invalid args, 1 invalid json)"
        ),
        "{summary}"
    );
}

#[test]
fn concurrency_never_exceeds_parallel() {
    let env = Env::new("db");
    let slots = env.dir.path().join("slots");
    let seen = env.dir.path().join("seen");
    std::fs::create_dir(&slots).unwrap();
    let run = format!(
        "cat >/dev/null\ntouch {slots}/$TASK_RUN_ID\nls {slots} | wc -l >> {seen}\nsleep 0.15\nrm {slots}/$TASK_RUN_ID\necho '{{\"status\":1}}'",
        slots = slots.display(),
        seen = seen.display()
    );
    env.task("slot", "slot.sh", "{}", &run);
    let out = env
        .cmd()
        .args([
            "-q",
            "execute",
            "--name",
            "slot",
            "--json",
            "--parallel",
            "3",
            "--batch",
            "-",
        ])
        .write_stdin("{}\n".repeat(24))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let counts: Vec<u32> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 24);
    let max = *counts.iter().max().unwrap();
    assert!(
        max <= 3,
        "saw {max} runs at once with --parallel 3: {counts:?}"
    );
    assert!(max >= 2, "runs never overlapped: {counts:?}");
}

#[test]
fn ctrl_c_cancels_running_tasks_and_reports_what_did_not_run() {
    let env = Env::new("db");
    let pids = env.dir.path().join("pids");
    env.task(
        "slow",
        "slow.sh",
        "{}",
        &format!("cat >/dev/null\necho $$ >> {}\nsleep 1000", pids.display()),
    );
    let file = env.dir.path().join("in.jsonl");
    std::fs::write(&file, "{}\n".repeat(10)).unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("manage_tasks"))
        .env("TASK_STORE", &env.store)
        .args([
            "-q",
            "execute",
            "--name",
            "slow",
            "--json",
            "--parallel",
            "2",
            "--grace",
            "1s",
            "--batch",
        ])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&pids)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 2
    {
        assert!(Instant::now() < deadline, "tasks never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let results = lines_json(&out);
    assert!(
        results.iter().all(|r| r["outcome"] == "cancelled"),
        "{results:?}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("cancelled after reading") && err.contains("more lines did not run"),
        "{err}"
    );
    for pid in std::fs::read_to_string(&pids).unwrap().lines() {
        let pid = pid.parse().unwrap();
        wait_until(2.0, &format!("task {pid} to die"), || !alive(pid));
    }
}

/// A result is written out while later runs are still going, not at the end.
#[test]
fn results_stream_while_later_runs_go_on() {
    use std::io::BufRead;
    let env = Env::new("db");
    env.task(
        "wait",
        "wait.sh",
        r#"{"type":"object"}"#,
        "in=$(cat)\ncase $in in *'\"wait\":true'*) sleep 30 ;; esac\necho '{\"status\":1}'",
    );
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("manage_tasks"))
        .env("TASK_STORE", &env.store)
        .args([
            "-q",
            "execute",
            "--name",
            "wait",
            "--json",
            "--parallel",
            "2",
            "--batch",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"{\"wait\":false}\n{\"wait\":true}\n").unwrap();
    drop(stdin);
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The second run sleeps 30 s: the first result arrived while it ran.
    let still_running = child.try_wait().unwrap().is_none();
    // Ctrl-C, so the sleeping task's process group goes too.
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let result: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(result["line"], 1, "{result}");
    assert_eq!(result["outcome"], "completed", "{result}");
    assert!(still_running, "the first result came only at the end");
}

#[test]
fn a_line_that_is_not_utf8_is_its_own_error_and_the_others_run() {
    let env = Env::new("db");
    echo_task(&env);
    let mut input = b"{\"n\":1}\n{\"n\":\"".to_vec();
    input.extend_from_slice(&[0xff, 0xfe]);
    input.extend_from_slice(b"\"}\n{\"n\":3}\n");
    let out = env
        .cmd()
        .args(["-q", "execute", "echo", "--json", "--batch", "-"])
        .write_stdin(input)
        .output()
        .unwrap();
    let r = lines_json(&out);
    assert_eq!(r.len(), 3, "{}", stdout(&out));
    assert_eq!(
        (r[0]["line"].as_u64(), r[0]["outcome"].as_str()),
        (Some(1), Some("completed"))
    );
    assert_eq!(r[1]["line"], 2);
    assert_eq!(r[1]["error"]["kind"], "invalid_json", "{}", r[1]);
    assert!(
        r[1]["error"]["message"].as_str().unwrap().contains("UTF-8"),
        "{}",
        r[1]
    );
    assert_eq!(
        (r[2]["line"].as_u64(), r[2]["payload"].as_i64()),
        (Some(3), Some(3))
    );
}
