//! Chaos on PostgreSQL (issue 15): real worker processes on a real server,
//! a private cluster per test ([`PgCluster`]) so that stopping the database
//! disturbs no other test, and faults injected while the workers drain the
//! queue.
//!
//! - 4 workers, 2000 runs: one worker SIGKILLed, one SIGSTOPped past its
//!   lease and resumed, the server itself restarted; every run completes
//!   exactly once with its own final attempt's result, the side effects of
//!   each final attempt happen once, the runs of the killed worker are run
//!   again under a later attempt, and the survivors carry on by themselves
//! - a connection cut without the database stopping (a [`Proxy`]): the
//!   cut-off worker stops its task once its lease has lapsed, a worker
//!   connected directly takes the run over and completes it; once the
//!   connection is back the first worker recovers by itself, its old
//!   attempt fenced

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Child;
use std::time::{Duration, Instant};

use common::pgcluster::PgCluster;
use common::proxy::Proxy;
use common::*;
use serde_json::Value;

/// Background processes, SIGKILLed and reaped when the test ends however it
/// ends: a worker outlives its store by design, so one that a failed test
/// left behind would wait for it forever.
#[derive(Default)]
struct Procs(HashMap<String, Child>);

impl Procs {
    /// `manage_tasks ARGS` with `TASK_STORE=store`, stdout and stderr in
    /// `NAME.out` and `NAME.err` of the env's dir; returns its pid.
    fn spawn(&mut self, env: &Env, name: &str, store: &str, args: &[&str]) -> u32 {
        let file = |ext: &str| {
            std::fs::File::create(env.dir.path().join(format!("{name}.{ext}"))).unwrap()
        };
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_manage_tasks"))
            .args(args)
            .env("TASK_STORE", store)
            .env("HOME", env.dir.path())
            .env_remove("XDG_DATA_HOME")
            .current_dir(env.dir.path())
            .stdout(file("out"))
            .stderr(file("err"))
            .spawn()
            .unwrap();
        let pid = child.id();
        self.0.insert(name.to_owned(), child);
        pid
    }

    fn get(&mut self, name: &str) -> &mut Child {
        self.0.get_mut(name).unwrap()
    }

    fn running(&mut self, name: &str) -> bool {
        self.get(name).try_wait().unwrap().is_none()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in self.0.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An env whose store is `url` (the CLI reads it from `TASK_STORE`).
fn env_on(url: &str) -> Env {
    Env::on_url(url)
}

fn read(env: &Env, file: &str) -> String {
    std::fs::read_to_string(env.dir.path().join(file)).unwrap_or_default()
}

/// The runs in `state`, at most `limit`.
fn runs_in(env: &Env, state: &str, limit: u32) -> Vec<Value> {
    let limit = limit.to_string();
    env.json(&[
        "runs", "list", "--state", state, "--json", "--limit", &limit,
    ])["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The attempts `worker` holds in the store: `(run id, attempt)`.
fn held_by(env: &Env, worker: &str) -> Vec<(String, u64)> {
    runs_in(env, "running", 100)
        .iter()
        .filter(|r| r["worker"] == worker)
        .map(|r| {
            (
                r["run_id"].as_str().unwrap().to_owned(),
                r["attempt"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// SIGSTOPs `pid` at a moment its worker `id` holds at least one attempt
/// (it may be between two, its ends recorded and nothing claimed yet: then
/// it is resumed and stopped again a little later). Returns what it holds;
/// stopped, it can neither renew nor end any of them.
fn stop_holding(env: &Env, pid: u32, id: &str) -> Vec<(String, u64)> {
    for _ in 0..50 {
        signal(pid, "-STOP");
        let held = held_by(env, id);
        if !held.is_empty() {
            return held;
        }
        signal(pid, "-CONT");
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!("worker {id} held no attempt at any of 50 tries");
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// A POSIX sh task: it reads the envelope, sleeps 0–50 ms, appends
/// `RUN ATTEMPT` to `effects` (its side effect), and reports its run id and
/// attempt as its payload.
fn noop_task(env: &Env, effects: &std::path::Path) {
    let script = env.script(
        "noop.sh",
        &format!(
            r#"#!/bin/sh
if [ "$1" = schema ]; then
  echo '{{"description":"chaos test task","inputs":{{"type":"object"}}}}'
  exit 0
fi
cat > /dev/null
sleep "$(printf '0.%03d' $(($$ % 51)))"
echo "$TASK_RUN_ID $TASK_ATTEMPT" >> {effects}
echo "{{\"status\":1,\"payload\":{{\"run\":\"$TASK_RUN_ID\",\"attempt\":$TASK_ATTEMPT}}}}"
"#,
            effects = effects.display()
        ),
    );
    env.register("noop", &script);
}

const RUNS: usize = 2000;
const WORKERS: [&str; 4] = ["w1", "w2", "w3", "w4"];

#[test]
fn four_workers_drain_2000_runs_through_a_kill_a_stop_and_a_database_restart() {
    let t0 = Instant::now();
    let cluster = PgCluster::start();
    let env = env_on(&cluster.url());
    let url = cluster.url();
    let effects = env.dir.path().join("effects");
    let effect_lines = || read(&env, "effects").lines().count();
    noop_task(&env, &effects);
    let ids = env.submit_many("noop", RUNS, "{}");
    assert_eq!(ids.len(), RUNS);
    let mut procs = Procs::default();
    let mut pid = HashMap::new();
    for w in WORKERS {
        let args = [
            "worker",
            "--concurrency",
            "2",
            "--lease",
            "3s",
            "--drain",
            "5s",
            "--id",
            w,
        ];
        pid.insert(w, procs.spawn(&env, w, &url, &args));
    }
    let started = Instant::now();
    wait_until(120.0, "the first 200 runs", || effect_lines() >= 200);
    let rate = effect_lines() as f64 / started.elapsed().as_secs_f64();

    // 1. w1 dies: what it held is lost with it, until the leases lapse.
    let killed = stop_holding(&env, pid["w1"], "w1");
    signal(pid["w1"], "-KILL");
    procs.get("w1").wait().unwrap();
    let kill_at = effect_lines();
    wait_until(30.0, "w1's attempts to lapse and be queued again", || {
        let held = held_by(&env, "w1");
        killed.iter().all(|k| !held.contains(k))
    });

    // 2. w2 stops for longer than its lease; the others queue its runs
    //    again meanwhile; then it resumes.
    let stopped = stop_holding(&env, pid["w2"], "w2");
    let stop_at = (Instant::now(), effect_lines());
    wait_until(30.0, "w2's attempts to lapse and be queued again", || {
        let held = held_by(&env, "w2");
        stopped.iter().all(|s| !held.contains(s))
    });
    std::thread::sleep(Duration::from_secs(4).saturating_sub(stop_at.0.elapsed()));
    let stopped_for = stop_at.0.elapsed();
    signal(pid["w2"], "-CONT");
    wait_until(30.0, "w2 to notice its lost leases", || {
        let err = read(&env, "w2.err");
        stopped
            .iter()
            .all(|(id, _)| err.contains(&format!("run {id}: ")))
    });

    // 3. The database restarts. The issue says `pg_ctlcluster 15 main
    //    restart`; on a private cluster that is `pg_ctl restart`, which is
    //    what pg_ctlcluster runs.
    let queued_before_restart = runs_in(&env, "queued", 10_000).len();
    let restart_at = (Instant::now(), effect_lines());
    cluster.restart();
    let restart_took = restart_at.0.elapsed();
    for w in ["w2", "w3", "w4"] {
        wait_until(60.0, &format!("{w} to say the store is back"), || {
            read(&env, &format!("{w}.err")).contains("store back after")
        });
    }

    wait_until(300.0, "no run queued or running", || {
        runs_in(&env, "queued", 1).is_empty() && runs_in(&env, "running", 1).is_empty()
    });
    let drained = started.elapsed();
    // The survivors carry on by themselves.
    let more = env.submit_many("noop", 10, "{}");
    wait_until(30.0, "10 more runs to complete", || {
        runs_in(&env, "completed", 10_000).len() == RUNS + 10
    });

    // Every run ended once, completed, with its own final attempt's result.
    let runs = env.all_runs();
    assert_eq!(runs.len(), RUNS + 10);
    let by_id: HashMap<&str, &Value> = runs
        .iter()
        .map(|r| (r["run_id"].as_str().unwrap(), r))
        .collect();
    for id in ids.iter().chain(&more) {
        let r = by_id[id.as_str()];
        assert_eq!(
            (r["state"].as_str(), r["success"].as_bool()),
            (Some("completed"), Some(true)),
            "{r}"
        );
        assert_eq!(r["payload"]["run"], r["run_id"], "{r}");
        assert_eq!(
            r["payload"]["attempt"], r["attempt"],
            "another attempt's result: {r}"
        );
    }
    for id in &more {
        let worker = by_id[id.as_str()]["worker"].as_str().unwrap();
        assert!(["w2", "w3", "w4"].contains(&worker), "{worker}");
    }
    // What w1 held was run again under a later attempt, by another worker.
    for (id, attempt) in &killed {
        let r = by_id[id.as_str()];
        assert!(r["attempt"].as_u64().unwrap() > *attempt, "{r}");
        assert_ne!(r["worker"], "w1", "{r}");
    }
    // So was what w2 held while stopped; it said its results were not recorded.
    let w2_err = read(&env, "w2.err");
    for (id, attempt) in &stopped {
        let r = by_id[id.as_str()];
        assert!(r["attempt"].as_u64().unwrap() > *attempt, "{r}");
        let said = w2_err.lines().any(|l| {
            l.contains(&format!("run {id}: "))
                && l.contains("this attempt's result was not recorded")
        });
        assert!(said, "{id}:\n{w2_err}");
    }

    // Side effects: each final attempt executed exactly once; the earlier
    // attempts that also ran are those fenced off.
    let mut executions: HashMap<(String, u64), usize> = HashMap::new();
    for line in read(&env, "effects").lines() {
        let (id, attempt) = line.split_once(' ').unwrap();
        *executions
            .entry((id.to_owned(), attempt.parse().unwrap()))
            .or_default() += 1;
    }
    let mut fenced = 0;
    for ((id, attempt), n) in &executions {
        let final_attempt = by_id[id.as_str()]["attempt"].as_u64().unwrap();
        assert!(
            *attempt <= final_attempt,
            "{id}: attempt {attempt} ran after the final one"
        );
        if *attempt == final_attempt {
            assert_eq!(*n, 1, "{id}: its final attempt {attempt} ran {n} times");
        } else {
            assert_eq!(*n, 1, "{id}: attempt {attempt} ran {n} times");
            fenced += 1;
        }
    }
    for id in ids.iter().chain(&more) {
        let final_attempt = by_id[id.as_str()]["attempt"].as_u64().unwrap();
        assert!(
            executions.contains_key(&(id.clone(), final_attempt)),
            "{id}: its final attempt {final_attempt} left no side effect"
        );
    }
    // Each run was told completed once, by the worker the store names; only
    // w1, killed, may have recorded an end it could not tell (at most its 2).
    let mut told: HashMap<String, Vec<&str>> = HashMap::new();
    for w in WORKERS {
        for line in read(&env, &format!("{w}.err")).lines() {
            if let Some(id) = line
                .strip_prefix("run ")
                .and_then(|rest| rest.strip_suffix(" (noop) completed"))
            {
                told.entry(id.to_owned()).or_default().push(w);
            }
        }
    }
    let mut untold = Vec::new();
    for id in ids.iter().chain(&more) {
        let worker = by_id[id.as_str()]["worker"].as_str().unwrap();
        match told.get(id).map(Vec::as_slice) {
            Some([w]) => assert_eq!(*w, worker, "{id}"),
            None if worker == "w1" => untold.push(id),
            other => panic!("{id}, completed by {worker}, was told completed by {other:?}"),
        }
    }
    assert!(untold.len() <= 2, "{untold:?}");

    // The survivors are alive, said once each way that the store went and
    // came back, and stop cleanly.
    for w in ["w2", "w3", "w4"] {
        assert!(
            procs.running(w),
            "{w} exited by itself: {}",
            read(&env, &format!("{w}.err"))
        );
    }
    for w in ["w2", "w3", "w4"] {
        signal(pid[w], "-TERM");
        let status = exits_within(procs.get(w), 30.0);
        let err = read(&env, &format!("{w}.err"));
        assert!(status.success(), "{w}: {err}");
        assert!(!err.contains("panicked"), "{w}: {err}");
        let (down, back) = (
            count(&err, "store unavailable"),
            count(&err, "store back after"),
        );
        assert!(
            down >= 1 && down == back,
            "{w}: {down} outages, {back} ends:\n{err}"
        );
    }
    let relost: HashSet<&str> = executions
        .keys()
        .filter(|(id, a)| *a < by_id[id.as_str()]["attempt"].as_u64().unwrap())
        .map(|(id, _)| id.as_str())
        .collect();
    eprintln!(
        "chaos: {RUNS} runs + 10 in {drained:?} after the submit ({:?} in all, {rate:.0} runs/s \
         before the faults); w1 killed after {kill_at} runs holding {}; w2 stopped after {} runs \
         for {stopped_for:?} holding {}; the database restarted after {} runs ({} still queued) \
         in {restart_took:?}; {fenced} earlier attempts of {} runs also ran (fenced off); \
         runs no worker reported completed: {untold:?}",
        t0.elapsed(),
        killed.len(),
        stop_at.1,
        stopped.len(),
        restart_at.1,
        queued_before_restart,
        relost.len(),
    );
    assert!(
        queued_before_restart > 0,
        "the queue was drained before the restart"
    );
    let _ = std::process::Command::new("cp")
        .arg("-r")
        .arg(env.dir.path())
        .status();
}

#[test]
fn a_worker_cut_off_from_a_running_database_gives_its_attempt_up_and_recovers() {
    let cluster = PgCluster::start();
    let env = env_on(&cluster.url());
    let proxy = Proxy::start(cluster.addr());
    let through = format!("postgres://postgres@{}/postgres", proxy.addr);
    let events = env.dir.path().join("events");
    // Attempt 1 runs for 8 s, later ones end at once; each says when it
    // starts and ends, with its pid.
    let script = env.script(
        "long.sh",
        &format!(
            r#"#!/bin/sh
if [ "$1" = schema ]; then
  echo '{{"description":"chaos test task","inputs":{{"type":"object"}}}}'
  exit 0
fi
cat > /dev/null
echo "start $TASK_ATTEMPT $$" >> {events}
[ "$TASK_ATTEMPT" = 1 ] && sleep 8
echo "end $TASK_ATTEMPT $$" >> {events}
echo "{{\"status\":1,\"payload\":{{\"attempt\":$TASK_ATTEMPT,\"pid\":$$}}}}"
"#,
            events = events.display()
        ),
    );
    env.register("long", &script);
    let lines = || {
        read(&env, "events")
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut procs = Procs::default();
    let worker = |id: &'static str| ["worker", "--lease", "2s", "--drain", "5s", "--id", id];
    let a = procs.spawn(&env, "a", &through, &worker("A"));
    let id = env.submit_many("long", 1, "{}").remove(0);
    wait_until(20.0, "A to start attempt 1", || !lines().is_empty());
    let first: i32 = lines()[0]
        .strip_prefix("start 1 ")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(env.json(&["runs", "show", &id, "--json"])["worker"], "A");
    let b = procs.spawn(&env, "b", &cluster.url(), &worker("B"));
    wait_until(20.0, "B to be listed", || {
        env.json(&["workers", "list", "--json"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == "B")
    });

    proxy.cut();
    let cut = Instant::now();
    // A cannot renew: once the lease (2 s) has certainly lapsed, it stops
    // its task, since another worker may take the run over.
    wait_until(10.0, "A to stop its task", || !alive(first));
    let stopped_after = cut.elapsed();
    assert!(stopped_after < Duration::from_secs(5), "{stopped_after:?}");
    // B, connected directly, queues the lapsed run again and completes it.
    wait_until(20.0, "B to complete the run", || {
        env.json(&["runs", "show", &id, "--json"])["state"] == "completed"
    });
    // A's calls fail: at once on a connection the cut closed, after the
    // 15 s deadline on one the proxy black-holes.
    wait_until(30.0, "A to say its store is unavailable", || {
        read(&env, "a.err").contains("store unavailable")
    });
    // Cut for well over the lease, whichever way A's calls failed.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(cut.elapsed()));
    let cut_for = cut.elapsed();
    assert!(procs.running("a"), "A exited: {}", read(&env, "a.err"));
    assert!(
        !read(&env, "a.err").contains("store back"),
        "{}",
        read(&env, "a.err")
    );
    proxy.restore();
    wait_until(30.0, "A to say its store is back", || {
        read(&env, "a.err").contains("store back after")
    });

    let r = env.json(&["runs", "show", &id, "--json"]);
    assert_eq!(
        (
            r["worker"].as_str(),
            r["attempt"].as_u64(),
            r["payload"]["attempt"].as_u64()
        ),
        (Some("B"), Some(2), Some(2)),
        "{r}"
    );
    let second = r["payload"]["pid"].as_i64().unwrap();
    assert_eq!(
        lines(),
        [
            format!("start 1 {first}"),
            format!("start 2 {second}"),
            format!("end 2 {second}")
        ],
        "attempt 1 never ended by itself"
    );
    // B stops; A, recovered by itself, claims and completes a new run.
    signal(b, "-TERM");
    assert!(
        exits_within(procs.get("b"), 30.0).success(),
        "{}",
        read(&env, "b.err")
    );
    let next = env.submit_many("long", 1, "{}").remove(0);
    wait_until(30.0, "A to complete a new run", || {
        env.json(&["runs", "show", &next, "--json"])["state"] == "completed"
    });
    let n = env.json(&["runs", "show", &next, "--json"]);
    assert_eq!(
        (n["worker"].as_str(), n["attempt"].as_u64()),
        (Some("A"), Some(1)),
        "{n}"
    );
    // Still the second attempt's result: A's old attempt was fenced.
    let again = env.json(&["runs", "show", &id, "--json"]);
    assert_eq!(
        (
            again["worker"].clone(),
            again["payload"].clone(),
            again["finished_at"].clone()
        ),
        (
            r["worker"].clone(),
            r["payload"].clone(),
            r["finished_at"].clone()
        )
    );
    assert!(procs.running("a"), "A exited: {}", read(&env, "a.err"));
    signal(a, "-TERM");
    assert!(exits_within(procs.get("a"), 30.0).success());
    let err = read(&env, "a.err");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(count(&err, "store unavailable"), 1, "{err}");
    assert_eq!(count(&err, "store back after"), 1, "{err}");
    assert!(
        err.contains(&format!("run {id}: the store did not answer for "))
            && err.contains("and the lease (2s) lapsed without renewal")
            && err.contains("this attempt's result was not recorded"),
        "{err}"
    );
    let _ = std::process::Command::new("cp")
        .arg("-r")
        .arg(env.dir.path())
        .status();
    eprintln!("cut: A stopped its task {stopped_after:?} after the cut, which lasted {cut_for:?}");
}
