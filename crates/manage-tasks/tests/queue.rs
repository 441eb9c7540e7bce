//! The durable queue with real worker processes on one store, each test on
//! SQLite and on PostgreSQL (`sqlite::NAME`, `postgres::NAME`):
//!
//! - `submit` + `worker`; `submit --wait` exits like `execute`
//! - two workers never run the same run twice
//! - 3 workers, 500 runs, one SIGKILLed mid-way: every run completed exactly once
//! - fencing: a worker that lost its lease (SIGSTOP past it) cannot overwrite
//!   the newer attempt, and kills its task when it notices
//! - SIGTERM: running tasks finish within the grace, the rest are requeued
//! - retries with backoff; a reported status is not retried; the task is
//!   told its attempt (`TASK_ATTEMPT`)
//! - per-task concurrency limit; delayed runs; `runs cancel`; cron schedules

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

on_sql_backends!(
    submit_prints_the_id_and_a_worker_runs_it,
    submit_wait_exits_like_execute,
    two_workers_never_run_the_same_run_twice,
    three_workers_500_runs_one_killed_every_run_completed_exactly_once,
    a_worker_that_lost_its_lease_cannot_overwrite_and_kills_its_task,
    sigterm_lets_short_runs_finish_and_requeues_the_rest,
    retries_with_backoff_and_status_is_not_retried,
    per_task_concurrency_limit_holds_across_workers,
    a_delayed_run_is_not_claimed_before_its_time,
    cancelling_a_queued_run_keeps_it_from_running,
    a_schedule_fires_once_per_tick_with_two_workers,
    a_queued_run_is_never_delivered_to_a_task_registered_later_under_its_name,
    a_worker_paused_past_its_lease_reclaims_the_run_and_stops_its_old_attempt,
);

/// A task that appends `$TASK_RUN_ID <worker pid>` to `file`, then sleeps `sleep` seconds (default 0)
/// and reports its worker's pid.
fn recorder(env: &Env, name: &str, file: &str) {
    let file = env.dir.path().join(file);
    let run = format!(
        "read -r envelope\ns=${{envelope##*\\\"sleep\\\":}}; s=${{s%%[,\\}}]*}}\ncase \"$s\" in *[!0-9.]*|'') s=0;; esac\necho \"$TASK_RUN_ID $PPID\" >> {file}\n[ \"$s\" != 0 ] && sleep $s\necho \"{{\\\"status\\\":1,\\\"reason\\\":\\\"ok\\\",\\\"payload\\\":$PPID}}\"",
        file = file.display()
    );
    env.task(name, &format!("{name}.sh"), "{}", &run);
}

fn read_lines(env: &Env, file: &str) -> Vec<String> {
    std::fs::read_to_string(env.dir.path().join(file))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn by_id(runs: &[Value]) -> HashMap<String, Value> {
    runs.iter()
        .map(|r| (r["run_id"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

fn run(env: &Env, id: &str) -> Value {
    env.json(&["runs", "show", id, "--json"])
}

const FAST: [&str; 4] = ["--poll", "20ms", "--lease", "2s"];

fn submit_prints_the_id_and_a_worker_runs_it(env: Env) {
    recorder(&env, "rec", "ran");
    let out = env
        .cmd()
        .args(["-q", "submit", "--name", "rec"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert_eq!(run(&env, &id)["state"], "queued");
    let mut args = vec!["-q", "worker", "--until-idle"];
    args.extend(FAST);
    env.cmd().args(&args).assert().success();
    let r = run(&env, &id);
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(r["attempt"], 1);
    assert!(r["worker"].as_str().unwrap().starts_with("worker-"));
    assert_eq!(read_lines(&env, "ran").len(), 1);

    // Invalid arguments are refused at submit time: nothing is queued.
    let bad = env
        .cmd()
        .args(["submit", "--name", "rec", "--taskArgs", "[1]"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(env.all_runs().len(), 1);
}

fn submit_wait_exits_like_execute(env: Env) {
    env.task("st", "st.sh", r#"{"type":"object","properties":{"mode":{"type":"string"}}}"#, "read -r e\ncase \"$e\" in *ok*) echo '{\"status\":1,\"reason\":\"fine\"}';; *two*) echo '{\"status\":2,\"reason\":\"nope\"}';; *) exit 7;; esac");
    let mut worker = env.spawn(&["-q", "worker", "--concurrency", "2", "--poll", "20ms"]);
    for (mode, code) in [("ok", 0), ("two", 1), ("crash", 3)] {
        let out = env
            .cmd()
            .args([
                "-q",
                "submit",
                "--name",
                "st",
                "--wait",
                "--json",
                "--taskArgs",
            ])
            .arg(format!(r#"{{"mode":"{mode}"}}"#))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{mode}: {}", stderr(&out));
        let doc = json_stdout(&out);
        assert_eq!(doc["state"], if code == 3 { "failed" } else { "completed" });
        if code == 3 {
            assert_eq!(doc["exit_code"], 7);
        }
    }
    let out = env
        .cmd()
        .args([
            "-q",
            "submit",
            "--name",
            "st",
            "--wait",
            "--taskArgs",
            r#"{"mode":"ok"}"#,
        ])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("Task st succeeded with status 1 (fine)"),
        "{}",
        stdout(&out)
    );
    signal(worker.id(), "-TERM");
    assert!(worker.wait().unwrap().success());
}

fn two_workers_never_run_the_same_run_twice(env: Env) {
    recorder(&env, "rec", "ran");
    let ids = env.submit_many("rec", 120, "{}");
    let mut args = vec!["-q", "worker", "--until-idle", "--concurrency", "3"];
    args.extend(FAST);
    let workers: Vec<_> = (0..2).map(|_| env.spawn(&args)).collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success());
    }
    let lines = read_lines(&env, "ran");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in &lines {
        *seen.entry(l.split(' ').next().unwrap()).or_default() += 1;
    }
    assert_eq!(lines.len(), 120, "some run ran twice or never");
    assert!(ids.iter().all(|id| seen.get(id.as_str()) == Some(&1)));
    let pids: std::collections::HashSet<&str> =
        lines.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(pids.len(), 2, "both workers took a share");
    assert!(env.all_runs().iter().all(|r| r["state"] == "completed"));
}

fn three_workers_500_runs_one_killed_every_run_completed_exactly_once(env: Env) {
    recorder(&env, "rec", "ran");
    let ids = env.submit_many("rec", 500, r#"{"sleep":0.01}"#);
    let mut args = vec!["-q", "worker", "--concurrency", "2"];
    args.extend(FAST);
    let mut victim = env.spawn(&args);
    let mut until_idle = args.clone();
    until_idle.push("--until-idle");
    let others: Vec<_> = (0..2).map(|_| env.spawn(&until_idle)).collect();
    wait_until(30.0, "150 runs", || read_lines(&env, "ran").len() >= 150);
    signal(victim.id(), "-KILL");
    victim.wait().unwrap();
    for mut w in others {
        assert!(w.wait().unwrap().success());
    }

    let runs = by_id(&env.all_runs());
    assert_eq!(runs.len(), 500);
    let mut starts: HashMap<String, usize> = HashMap::new();
    for l in read_lines(&env, "ran") {
        *starts
            .entry(l.split(' ').next().unwrap().to_owned())
            .or_default() += 1;
    }
    let mut retried = 0;
    for id in &ids {
        let r = &runs[id];
        assert_eq!(r["state"], "completed", "{r}");
        assert_eq!(r["status"], 1);
        let attempt = r["attempt"].as_u64().unwrap() as usize;
        // Each attempt starts the task at most once; only attempts on the killed
        // worker (claimed, perhaps started) came before the one that completed.
        let started = starts.get(id).copied().unwrap_or(0);
        assert!(
            started >= 1 && started <= attempt,
            "started {started} times: {r}"
        );
        if attempt > 1 {
            retried += 1;
            assert!(
                !r["worker"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("-{}", victim.id()))
            );
        }
    }
    assert!(
        retried <= 2,
        "{retried} runs were in flight on the killed worker (concurrency 2)"
    );
}

fn a_worker_that_lost_its_lease_cannot_overwrite_and_kills_its_task(env: Env) {
    let pids = env.dir.path().join("pids");
    let run_script = format!(
        "read -r e\necho \"$$ $PPID\" >> {}\nsleep 3\necho \"{{\\\"status\\\":1,\\\"payload\\\":$PPID}}\"",
        pids.display()
    );
    env.task("slow", "slow.sh", "{}", &run_script);
    let id = env.submit_many("slow", 1, "{}").remove(0);
    let mut a = env.spawn(&["worker", "--poll", "20ms", "--lease", "1s", "--id", "A"]);
    wait_until(10.0, "attempt 1", || read_lines(&env, "pids").len() == 1);
    signal(a.id(), "-STOP");
    let first_task: i32 = read_lines(&env, "pids")[0]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut b = env.spawn(&[
        "-q",
        "worker",
        "--poll",
        "20ms",
        "--lease",
        "1s",
        "--id",
        "B",
        "--until-idle",
    ]);
    wait_until(10.0, "attempt 2", || read_lines(&env, "pids").len() == 2);
    assert_eq!(run(&env, &id)["attempt"], 2);
    // A comes back while both tasks still run: it must notice and kill its task.
    signal(a.id(), "-CONT");
    wait_until(2.5, "A to kill its stale task", || !alive(first_task));
    assert!(b.wait().unwrap().success());
    let r = run(&env, &id);
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(r["worker"], "B");
    assert_eq!(r["payload"], b.id());
    assert_eq!(r["attempt"], 2);
    signal(a.id(), "-TERM");
    assert!(a.wait().unwrap().success());
    let r = run(&env, &id);
    assert_eq!(
        (r["worker"].clone(), r["payload"].clone()),
        ("B".into(), b.id().into())
    );
    let err = std::fs::read_to_string(env.dir.path().join("bg.err")).unwrap_or_default();
    assert!(!err.contains("panicked"), "{err}");
    // A says what really happened to it, and what became of the run.
    assert!(
        err.contains(&format!(
            "run {id}: lease expired while this worker was not running"
        )),
        "{err}"
    );
    assert!(err.contains("attempt 2 is running on B"), "{err}");
}

fn sigterm_lets_short_runs_finish_and_requeues_the_rest(env: Env) {
    recorder(&env, "rec", "ran");
    let short = env.submit_many("rec", 2, r#"{"sleep":0.5}"#);
    let long = env.submit_many("rec", 1, r#"{"sleep":30}"#);
    let mut w = env.spawn(&[
        "-q",
        "worker",
        "--concurrency",
        "3",
        "--drain",
        "1500ms",
        "--poll",
        "20ms",
        "--grace",
        "1s",
    ]);
    wait_until(10.0, "3 runs started", || {
        read_lines(&env, "ran").len() == 3
    });
    let t0 = Instant::now();
    signal(w.id(), "-TERM");
    assert!(w.wait().unwrap().success());
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    for id in &short {
        assert_eq!(run(&env, id)["state"], "completed");
    }
    let r = run(&env, &long[0]);
    assert_eq!(r["state"], "queued", "{r}");
    assert_eq!(r["attempt"], 0, "a shutdown does not count as an attempt");
    // Nothing lost: another worker picks it up (and is cancelled through `runs cancel`).
    let mut w2 = env.spawn(&[
        "-q",
        "worker",
        "--poll",
        "20ms",
        "--lease",
        "600ms",
        "--until-idle",
    ]);
    wait_until(10.0, "the long run restarted", || {
        read_lines(&env, "ran").len() == 4
    });
    env.cmd()
        .args(["runs", "cancel", &long[0]])
        .assert()
        .success()
        .stdout(predicates::str::contains("its worker will stop it"));
    assert!(w2.wait().unwrap().success());
    assert_eq!(run(&env, &long[0])["state"], "cancelled");
}

fn retries_with_backoff_and_status_is_not_retried(env: Env) {
    let count = env.dir.path().join("count");
    let run_script = format!(
        "read -r e\necho x >> {c}\nn=$(wc -l < {c})\ncase \"$e\" in *status*) echo '{{\"status\":2}}'; exit 0;; esac\n[ $n -lt 3 ] && exit 9\necho '{{\"status\":1}}'",
        c = count.display()
    );
    let script = env.script("flaky.sh", &task_script("{}", &run_script));
    env.cmd()
        .args([
            "-q",
            "register",
            "--name",
            "flaky",
            "--retries",
            "3",
            "--backoff",
            "300ms",
            "--location",
        ])
        .arg(&script)
        .assert()
        .success();
    let shown = env.json(&["show", "flaky", "--json"]);
    assert_eq!(shown["policy"]["retries"], 3);
    let mut w = env.spawn(&["-q", "worker", "--poll", "20ms"]);
    let t0 = Instant::now();
    let out = env
        .cmd()
        .args(["-q", "submit", "--name", "flaky", "--wait", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json_stdout(&out);
    assert_eq!(doc["attempt"], 3);
    // Backoff 300 ms then 600 ms, each at least halved by jitter.
    assert!(
        t0.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t0.elapsed()
    );

    let out = env
        .cmd()
        .args([
            "-q",
            "submit",
            "--name",
            "flaky",
            "--wait",
            "--json",
            "--taskArgs",
            r#"{"status":true}"#,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_stdout(&out)["attempt"], 1);
    signal(w.id(), "-TERM");
    assert!(w.wait().unwrap().success());
}

fn per_task_concurrency_limit_holds_across_workers(env: Env) {
    let slots = env.dir.path().join("slots");
    let seen = env.dir.path().join("seen");
    std::fs::create_dir(&slots).unwrap();
    let run_script = format!(
        "cat >/dev/null\ntouch {slots}/$TASK_RUN_ID\nls {slots} | wc -l >> {seen}\nsleep 0.15\nrm {slots}/$TASK_RUN_ID\necho '{{\"status\":1}}'",
        slots = slots.display(),
        seen = seen.display()
    );
    let script = env.script("slot.sh", &task_script("{}", &run_script));
    env.cmd()
        .args([
            "-q",
            "register",
            "--name",
            "slot",
            "--concurrency",
            "2",
            "--location",
        ])
        .arg(&script)
        .assert()
        .success();
    env.submit_many("slot", 12, "{}");
    let args = [
        "-q",
        "worker",
        "--until-idle",
        "--concurrency",
        "4",
        "--poll",
        "20ms",
    ];
    let workers: Vec<_> = (0..2).map(|_| env.spawn(&args)).collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success());
    }
    let counts: Vec<usize> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 12);
    assert!(counts.iter().all(|&c| c <= 2), "{counts:?}");
    assert!(counts.contains(&2), "the limit is 2, not 1: {counts:?}");
}

fn a_delayed_run_is_not_claimed_before_its_time(env: Env) {
    recorder(&env, "rec", "ran");
    let out = env
        .cmd()
        .args(["-q", "submit", "--name", "rec", "--in", "1s", "--json"])
        .output()
        .unwrap();
    let id = json_stdout(&out)["run_id"].as_str().unwrap().to_owned();
    assert_eq!(json_stdout(&out)["state"], "queued");
    // Nothing is runnable now: --until-idle alone does not wait for it.
    let started = std::time::Instant::now();
    env.cmd()
        .args(["-q", "worker", "--poll", "20ms", "--until-idle"])
        .assert()
        .success();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run(&env, &id)["state"], "queued");
    let mut w = env.spawn(&[
        "-q",
        "worker",
        "--poll",
        "20ms",
        "--until-idle",
        "--wait-delayed",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(run(&env, &id)["state"], "queued");
    assert!(w.wait().unwrap().success());
    let r = run(&env, &id);
    assert_eq!(r["state"], "completed");
    let at = |k: &str| humantime::parse_rfc3339(r[k].as_str().unwrap()).unwrap();
    assert!(
        at("started_at").duration_since(at("queued_at")).unwrap() >= Duration::from_millis(1000)
    );
}

fn cancelling_a_queued_run_keeps_it_from_running(env: Env) {
    recorder(&env, "rec", "ran");
    let id = env.submit_many("rec", 1, "{}").remove(0);
    env.cmd()
        .args(["runs", "cancel", &id])
        .assert()
        .success()
        .stdout(predicates::str::contains("cancelled before it ran"));
    env.cmd()
        .args(["-q", "worker", "--until-idle", "--poll", "20ms"])
        .assert()
        .success();
    assert!(read_lines(&env, "ran").is_empty());
    assert_eq!(run(&env, &id)["state"], "cancelled");
    let out = env.cmd().args(["runs", "cancel", &id]).output().unwrap();
    assert!(stdout(&out).contains("already cancelled"));
}

fn a_schedule_fires_once_per_tick_with_two_workers(env: Env) {
    recorder(&env, "rec", "ran");
    let out = env
        .cmd()
        .args([
            "-q",
            "schedule",
            "add",
            "--name",
            "rec",
            "--cron",
            "* * * * * *",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let sched = json_stdout(&out)["id"].as_str().unwrap().to_owned();
    let args = ["-q", "worker", "--poll", "20ms"];
    let workers: Vec<_> = (0..2).map(|_| env.spawn(&args)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(3500));
    env.cmd()
        .args(["schedule", "remove", &sched])
        .assert()
        .success();
    let elapsed = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    for mut w in workers {
        signal(w.id(), "-TERM");
        assert!(w.wait().unwrap().success());
    }
    let runs = env.all_runs();
    let n = runs.len() as f64;
    assert!(
        n >= elapsed - 2.0 && n <= elapsed + 1.0,
        "{n} runs in {elapsed:.1}s"
    );
    assert!(runs.iter().all(|r| r["schedule"] == sched.as_str()));
}

fn a_queued_run_is_never_delivered_to_a_task_registered_later_under_its_name(env: Env) {
    let marker = |file: &str| {
        format!(
            "read -r _\necho ran >> {}\necho '{{\"status\":1,\"reason\":\"ok\",\"payload\":null}}'",
            env.dir.path().join(file).display()
        )
    };
    env.task("t", "first.sh", "{}", &marker("first"));
    let submit = |env: &Env| -> String {
        let out = env.cmd().args(["-q", "submit", "t"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_owned()
    };
    let work = |env: &Env| {
        let mut args = vec!["-q", "worker", "--until-idle"];
        args.extend(FAST);
        env.cmd().args(&args).assert().success();
    };

    // Registered again unchanged (--force re-reads the same script): the run is its own.
    let same = submit(&env);
    env.cmd()
        .args(["-q", "register", "t", "--location"])
        .arg(env.dir.path().join("first.sh"))
        .arg("--force")
        .assert()
        .success();
    work(&env);
    assert_eq!(run(&env, &same)["state"], "completed");
    assert_eq!(read_lines(&env, "first").len(), 1);

    // Replaced by another script under the same name: the run is not delivered to it.
    let replaced = submit(&env);
    let second = env.script("second.sh", &task_script("{}", &marker("second")));
    env.cmd()
        .args(["-q", "register", "t", "--force", "--location"])
        .arg(&second)
        .assert()
        .success();
    let fresh = submit(&env);
    work(&env);
    let r = run(&env, &replaced);
    assert_eq!(r["state"], "failed", "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("registered again"), "{r}");
    // The run queued for the new definition runs it, once.
    assert_eq!(run(&env, &fresh)["state"], "completed");
    assert_eq!(read_lines(&env, "second").len(), 1);
    assert_eq!(read_lines(&env, "first").len(), 1);

    // Unregistered meanwhile: the run fails saying so.
    let orphan = submit(&env);
    env.cmd().args(["-q", "unregister", "t"]).assert().success();
    work(&env);
    let r = run(&env, &orphan);
    assert_eq!(r["state"], "failed", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not registered"),
        "{r}"
    );
    assert_eq!(read_lines(&env, "second").len(), 1);
}

/// One worker, paused past its lease; meanwhile the lapsed attempt is settled
/// (requeued, as another worker's maintenance would). Resumed, the worker
/// claims the run again itself, stops its old attempt, says what happened,
/// and records only the new attempt's result.
fn a_worker_paused_past_its_lease_reclaims_the_run_and_stops_its_old_attempt(env: Env) {
    let pids = env.dir.path().join("pids");
    env.task(
        "slow",
        "slow.sh",
        "{}",
        &format!(
            "read -r e\necho $$ >> {}\nsleep 2\necho \"{{\\\"status\\\":1,\\\"payload\\\":$$}}\"",
            pids.display()
        ),
    );
    let id = env.submit_many("slow", 1, "{}").remove(0);
    let mut w = env.spawn(&[
        "worker",
        "--poll",
        "20ms",
        "--lease",
        "1s",
        "--concurrency",
        "2",
        "--id",
        "W",
        "--until-idle",
    ]);
    wait_until(10.0, "attempt 1", || read_lines(&env, "pids").len() == 1);
    signal(w.id(), "-STOP");
    std::thread::sleep(Duration::from_millis(1200));
    // What `requeue_expired` does to a lapsed attempt, done by another process.
    env.sql(&format!(
        "UPDATE runs SET state = 'queued', lease_until = NULL, available_at = 0 \
         WHERE id = '{id}' AND state = 'running';"
    ));
    signal(w.id(), "-CONT");
    assert!(w.wait().unwrap().success());
    let r = run(&env, &id);
    assert_eq!(r["state"], "completed", "{r}");
    let tasks = read_lines(&env, "pids");
    let err = std::fs::read_to_string(env.dir.path().join("bg.err")).unwrap_or_default();
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("{err}");
    assert_eq!(r["attempt"], 2, "{r}");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    // The result is the second attempt's, and the first was stopped.
    assert_eq!(r["payload"].to_string(), tasks[1], "{r}");
    assert!(
        !alive(tasks[0].parse().unwrap()),
        "attempt 1's task still runs"
    );
    assert!(
        err.contains(&format!(
            "run {id}: lease expired while this worker was not running"
        )),
        "{err}"
    );
}

#[test]
fn a_worker_tells_its_task_the_attempt_and_execute_does_not() {
    let env = Env::new("db");
    let seen = env.dir.path().join("seen");
    // Fails its first two attempts; reports what TASK_ATTEMPT said.
    let run_script = format!(
        "read -r e\na=${{TASK_ATTEMPT-unset}}\necho \"$a\" >> {}\ncase \"$a\" in 1|2) exit 9;; esac\necho \"{{\\\"status\\\":1,\\\"payload\\\":\\\"$a\\\"}}\"",
        seen.display()
    );
    let script = env.script("attempts.sh", &task_script("{}", &run_script));
    env.cmd()
        .args([
            "-q",
            "register",
            "--name",
            "attempts",
            "--retries",
            "2",
            "--backoff",
            "50ms",
            "--location",
        ])
        .arg(&script)
        .assert()
        .success();
    let mut w = env.spawn(&["-q", "worker", "--poll", "20ms"]);
    let out = env
        .cmd()
        .args(["-q", "submit", "--name", "attempts", "--wait", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json_stdout(&out);
    assert_eq!(
        (doc["attempt"].clone(), doc["payload"].clone()),
        (3.into(), "3".into())
    );
    assert_eq!(read_lines(&env, "seen"), ["1", "2", "3"]);
    signal(w.id(), "-TERM");
    assert!(w.wait().unwrap().success());
    // Not a worker's run: no attempt, not even one the executor inherited.
    let out = env
        .cmd()
        .env("TASK_ATTEMPT", "7")
        .args(["execute", "--name", "attempts", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_stdout(&out)["payload"], "unset");
}
