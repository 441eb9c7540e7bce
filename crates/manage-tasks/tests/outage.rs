//! The store going away under long-lived commands (issue 15), with real
//! processes on one SQLite file. Another process makes the store
//! unavailable for longer than a few calls ([`Env::hold_store`]): an open
//! `BEGIN EXCLUSIVE` (writes fail after our 10 s busy timeout), or every lock
//! of the WAL index (reads fail too, after SQLite's ~10 s of retries).
//!
//! - a worker keeps its running task, records its result once the store is
//!   back, claims again, never exits, and says once each way what happened
//! - a worker whose store stays away past the lease gives its attempt up
//!   (its task is killed) and a second worker completes the run exactly once
//! - `runs logs --follow` outlives an outage and prints the lines after it;
//!   `submit --wait` outlives it too
//! - a worker stopped while its store is away exits after its drain and
//!   says which end it could not record
//! - an MCP tool call outlives an outage: its result, the server, and the
//!   run's whole log in history

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn lines_of(env: &Env, file: &str) -> Vec<String> {
    std::fs::read_to_string(env.dir.path().join(file))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn run(env: &Env, id: &str) -> Value {
    env.json(&["runs", "show", id, "--json"])
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn a_worker_keeps_its_task_through_an_outage_records_it_and_claims_again() {
    let env = Env::new("db");
    let pids = env.dir.path().join("pids");
    // Starts, prints a line every half second for 4 s, reports its pid.
    env.task(
        "slow",
        "slow.sh",
        "{}",
        &format!(
            "read -r e\necho $$ >> {}\nfor i in 1 2 3 4 5 6 7 8; do echo \"tick $i\"; sleep 0.5; done\necho \"{{\\\"status\\\":1,\\\"payload\\\":$$}}\"",
            pids.display()
        ),
    );
    let first = env.submit_many("slow", 1, "{}").remove(0);
    // Due while the store is away: claimed once it is back.
    let out = env
        .cmd()
        .args(["-q", "submit", "--name", "slow", "--in", "5s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let later = stdout(&out).trim().to_owned();
    let mut worker = env.spawn(&["worker", "--poll", "50ms", "--lease", "30s", "--id", "W"]);
    wait_until(10.0, "the first task to start", || {
        lines_of(&env, "pids").len() == 1
    });
    let task: i32 = lines_of(&env, "pids")[0].parse().unwrap();
    let mut hold = env.hold_store(Hold::Writes);
    let held = Instant::now();
    wait_until(20.0, "the worker to notice", || {
        env.bg_err().contains("store unavailable")
    });
    // Our connections waited for the busy timeout before failing.
    assert!(
        held.elapsed() >= Duration::from_secs(9),
        "{:?}",
        held.elapsed()
    );
    assert!(!alive(task), "the task ran to its end meanwhile");
    assert_eq!(run(&env, &first)["state"], "running");
    std::thread::sleep(Duration::from_secs(13).saturating_sub(held.elapsed()));
    assert!(worker.try_wait().unwrap().is_none(), "the worker exited");
    hold.kill().unwrap();
    hold.wait().unwrap();
    wait_until(20.0, "both runs to complete", || {
        run(&env, &later)["state"] == "completed"
    });
    let r = run(&env, &first);
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(
        (r["attempt"].clone(), r["worker"].clone()),
        (1.into(), "W".into())
    );
    assert_eq!(
        r["payload"], task,
        "the result of the task that ran through the outage"
    );
    let logs = env.cmd().args(["runs", "logs", &first]).output().unwrap();
    let logs = stdout(&logs);
    for i in 1..=8 {
        assert_eq!(count(&logs, &format!("out| tick {i}\n")), 1, "{logs}");
    }
    let r = run(&env, &later);
    assert_eq!(
        (r["attempt"].clone(), r["worker"].clone()),
        (1.into(), "W".into())
    );
    assert_eq!(lines_of(&env, "pids").len(), 2, "each run executed once");
    assert!(worker.try_wait().unwrap().is_none(), "the worker exited");
    signal(worker.id(), "-TERM");
    assert!(exits_within(&mut worker, 10.0).success());
    let err = env.bg_err();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(count(&err, "store unavailable"), 1, "{err}");
    assert_eq!(count(&err, "store back after"), 1, "{err}");
    assert!(err.contains("database is locked"), "{err}");
    assert!(err.contains("2 succeeded"), "{err}");
    assert!(err.contains(" 0 lost"), "{err}");
}

#[test]
fn a_worker_whose_store_stays_away_past_the_lease_gives_its_attempt_up() {
    let env = Env::new("db");
    let pids = env.dir.path().join("pids");
    // The first attempt would run for a minute; later ones end at once.
    env.task(
        "once",
        "once.sh",
        "{}",
        &format!(
            "read -r e\necho $$ >> {p}\nn=$(wc -l < {p})\n[ $n = 1 ] && sleep 60\necho \"{{\\\"status\\\":1,\\\"payload\\\":$n}}\"",
            p = pids.display()
        ),
    );
    let id = env.submit_many("once", 1, "{}").remove(0);
    let mut a = env.spawn(&["worker", "--poll", "50ms", "--lease", "2s", "--id", "A"]);
    wait_until(10.0, "attempt 1 to start", || {
        lines_of(&env, "pids").len() == 1
    });
    let task: i32 = lines_of(&env, "pids")[0].parse().unwrap();
    let mut b = env.spawn(&[
        "-q", "worker", "--poll", "50ms", "--lease", "2s", "--id", "B",
    ]);
    let mut hold = env.hold_store(Hold::Writes);
    let held = Instant::now();
    // No renewal for longer than the lease: A stops its task while the
    // store is still locked, before anyone could take the run over.
    wait_until(8.0, "A to stop its task", || !alive(task));
    assert!(
        held.elapsed() < Duration::from_secs(8),
        "{:?}",
        held.elapsed()
    );
    wait_until(15.0, "A to say so", || {
        env.bg_err().contains("gave the attempt up")
    });
    assert!(a.try_wait().unwrap().is_none(), "A exited on its own");
    // A is asked to stop while its store is away, and does once it answers.
    signal(a.id(), "-TERM");
    std::thread::sleep(Duration::from_secs(12).saturating_sub(held.elapsed()));
    hold.kill().unwrap();
    hold.wait().unwrap();
    assert!(exits_within(&mut a, 15.0).success());
    wait_until(20.0, "B to complete the run", || {
        run(&env, &id)["state"] == "completed"
    });
    let r = run(&env, &id);
    assert_eq!(
        (r["worker"].clone(), r["attempt"].clone()),
        ("B".into(), 2.into()),
        "{r}"
    );
    assert_eq!(r["payload"], 2, "{r}");
    assert_eq!(env.all_runs().len(), 1);
    // Once more, after a while: nothing ran it again, nothing overwrote it.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lines_of(&env, "pids").len(), 2);
    let again = run(&env, &id);
    assert_eq!(again["finished_at"], r["finished_at"], "{again}");
    assert!(b.try_wait().unwrap().is_none(), "B exited on its own");
    signal(b.id(), "-TERM");
    assert!(exits_within(&mut b, 10.0).success());
    let err = env.bg_err();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(count(&err, "store unavailable"), 1, "{err}");
    assert!(
        err.contains(&format!("run {id}: the store did not answer for "))
            && err.contains("and the lease (2s) lapsed without renewal")
            && err.contains("this attempt's result was not recorded"),
        "{err}"
    );
    assert!(
        err.contains("0 succeeded") && err.contains(" 1 lost"),
        "{err}"
    );
}

#[test]
fn a_worker_stopped_while_its_store_is_away_exits_and_says_what_it_could_not_record() {
    let env = Env::new("db");
    let pids = env.dir.path().join("pids");
    env.task(
        "quick",
        "quick.sh",
        "{}",
        &format!(
            "read -r e\necho $$ >> {}\nsleep 1\necho '{{\"status\":1}}'",
            pids.display()
        ),
    );
    let id = env.submit_many("quick", 1, "{}").remove(0);
    let mut worker = env.spawn(&[
        "worker", "--poll", "50ms", "--lease", "30s", "--drain", "1s", "--id", "W",
    ]);
    wait_until(10.0, "the task to start", || {
        lines_of(&env, "pids").len() == 1
    });
    let mut hold = env.hold_store(Hold::Writes);
    let task: i32 = lines_of(&env, "pids")[0].parse().unwrap();
    wait_until(5.0, "the task to end", || !alive(task));
    signal(worker.id(), "-TERM");
    let stopped = Instant::now();
    // Each try waits for the busy timeout: the drain, once more, and the
    // call under way bound the wait.
    let status = exits_within(&mut worker, 30.0);
    assert!(status.success());
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "{:?}",
        stopped.elapsed()
    );
    hold.kill().unwrap();
    hold.wait().unwrap();
    let err = env.bg_err();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(count(&err, "store unavailable"), 1, "{err}");
    assert!(
        err.contains(&format!(
            "run {id}: the store did not answer before the worker stopped, so this attempt's end \
             was not recorded"
        )),
        "{err}"
    );
    assert!(err.contains(" 1 lost"), "{err}");
    // Left to its lease, not lost: the run is still the attempt's until it lapses.
    let r = run(&env, &id);
    assert_eq!(
        (r["state"].clone(), r["worker"].clone()),
        ("running".into(), "W".into()),
        "{r}"
    );
}

/// `manage_tasks ARGS` in the background, its stdout and stderr in files
/// `NAME.out` and `NAME.err` of the env's dir.
fn background(env: &Env, name: &str, args: &[&str]) -> std::process::Child {
    let file =
        |ext: &str| std::fs::File::create(env.dir.path().join(format!("{name}.{ext}"))).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_manage_tasks"))
        .args(args)
        .env("TASK_STORE", &env.store)
        .env("HOME", env.dir.path())
        .current_dir(env.dir.path())
        .stdout(file("out"))
        .stderr(file("err"))
        .spawn()
        .unwrap()
}

fn read(env: &Env, file: &str) -> String {
    std::fs::read_to_string(env.dir.path().join(file)).unwrap_or_default()
}

#[test]
fn runs_logs_follow_and_submit_wait_outlive_an_outage() {
    let env = Env::new("db");
    // 30 lines over about 15 s.
    env.task(
        "chatty",
        "chatty.sh",
        "{}",
        "read -r e\nfor i in $(seq 1 30); do echo \"line $i\"; sleep 0.5; done\necho '{\"status\":1}'",
    );
    let mut waiter = background(
        &env,
        "wait",
        &["submit", "--name", "chatty", "--wait", "--json"],
    );
    wait_until(10.0, "the run to be queued", || {
        read(&env, "wait.err").contains("queued run ")
    });
    let id = read(&env, "wait.err")
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(';')
        .to_owned();
    let mut worker = env.spawn(&["-q", "worker", "--poll", "50ms", "--lease", "60s"]);
    wait_until(10.0, "the first lines", || {
        let out = env.cmd().args(["runs", "logs", &id]).output().unwrap();
        stdout(&out).contains("line 2\n")
    });
    let mut follow = background(&env, "follow", &["runs", "logs", "--follow", &id]);
    wait_until(5.0, "the follower to print", || {
        read(&env, "follow.out").contains("line 1\n")
    });
    let mut hold = env.hold_store(Hold::Everything);
    let held = Instant::now();
    wait_until(20.0, "the follower and the waiter to notice", || {
        read(&env, "follow.err").contains("store unavailable")
            && read(&env, "wait.err").contains("store unavailable")
    });
    // Reads failed too, after SQLite's own retries.
    assert!(
        held.elapsed() >= Duration::from_secs(5),
        "{:?}",
        held.elapsed()
    );
    assert!(follow.try_wait().unwrap().is_none(), "the follower gave up");
    assert!(waiter.try_wait().unwrap().is_none(), "the waiter gave up");
    let printed = read(&env, "follow.out");
    std::thread::sleep(Duration::from_secs(12).saturating_sub(held.elapsed()));
    hold.kill().unwrap();
    hold.wait().unwrap();
    let status = exits_within(&mut follow, 40.0);
    let (text, err) = (read(&env, "follow.out"), read(&env, "follow.err"));
    assert!(status.success(), "{err}");
    assert!(
        text.len() > printed.len(),
        "nothing printed after the outage"
    );
    let want: Vec<String> = (1..=30)
        .map(|i| format!("out| line {i}"))
        .chain(["out| {\"status\":1}".to_owned()])
        .collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), want, "{err}");
    assert_eq!(count(&err, "store unavailable"), 1, "{err}");
    assert!(err.contains("locking protocol"), "{err}");
    assert_eq!(count(&err, "store back after"), 1, "{err}");
    // The waiter prints the run once it has ended, and exits like `execute`.
    let status = exits_within(&mut waiter, 10.0);
    let err = read(&env, "wait.err");
    assert!(status.success(), "{err}");
    let done: Value = serde_json::from_str(&read(&env, "wait.out")).unwrap();
    assert_eq!(
        (done["run_id"].as_str(), done["state"].as_str()),
        (Some(id.as_str()), Some("completed"))
    );
    assert_eq!(count(&err, "store unavailable"), 1, "{err}");
    assert!(err.contains("still waiting for the run"), "{err}");
    assert_eq!(count(&err, "store back after"), 1, "{err}");
    signal(worker.id(), "-TERM");
    assert!(exits_within(&mut worker, 10.0).success());
}

#[test]
fn an_mcp_tool_call_outlives_an_outage_and_history_keeps_its_whole_log() {
    let env = Env::new("db");
    let started = env.dir.path().join("started");
    // 40 lines over about 4 s.
    env.task(
        "chatty",
        "chatty.sh",
        "{}",
        &format!(
            "read -r e\ntouch {}\nfor i in $(seq 1 40); do echo \"line $i\"; sleep 0.1; done\necho '{{\"status\":1,\"payload\":\"done\"}}'",
            started.display()
        ),
    );
    let (mut server, mut stdin) = env.mcp_session();
    let mut replies = BufReader::new(server.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap());
    let call = |id: u32| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"chatty","arguments":{{}}}}}}"#
        )
    };
    writeln!(stdin, "{}", call(2)).unwrap();
    wait_until(10.0, "the task to start", || started.exists());
    std::thread::sleep(Duration::from_millis(300));
    let mut hold = env.hold_store(Hold::Writes);
    let held = Instant::now();
    std::thread::sleep(Duration::from_secs(12));
    hold.kill().unwrap();
    hold.wait().unwrap();
    let reply = replies.find(|m| m["id"] == 2).unwrap();
    assert!(held.elapsed() >= Duration::from_secs(12));
    assert_eq!(reply["result"]["isError"], false, "{reply}");
    assert!(reply.to_string().contains("done"), "{reply}");
    // The server still serves.
    writeln!(stdin, "{}", call(3)).unwrap();
    let reply = replies.find(|m| m["id"] == 3).unwrap();
    assert_eq!(reply["result"]["isError"], false, "{reply}");
    drop(stdin);
    assert!(server.wait().unwrap().success());
    let runs = env.all_runs();
    assert_eq!(runs.len(), 2);
    let first = runs
        .iter()
        .find(|r| r["run_id"] != runs[0]["run_id"])
        .unwrap();
    assert_eq!(first["state"], "completed", "{first}");
    // Lines printed while the store refused them were stored afterwards.
    let id = first["run_id"].as_str().unwrap();
    let logs = env.cmd().args(["runs", "logs", id]).output().unwrap();
    let want: Vec<String> = (1..=40)
        .map(|i| format!("out| line {i}"))
        .chain([r#"out| {"status":1,"payload":"done"}"#.to_owned()])
        .collect();
    assert_eq!(stdout(&logs).lines().collect::<Vec<_>>(), want);
}
