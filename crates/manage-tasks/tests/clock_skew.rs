//! Workers whose clocks disagree by minutes, on one PostgreSQL store: every
//! lease, expiry and rescue is measured by the database's clock, so neither
//! a clock ahead (which would see others' leases as lapsed and run their
//! runs again) nor one behind (which would wait minutes to rescue a dead
//! worker's run) changes what happens. The clocks are moved with
//! libfaketime (`faketime`, Debian's package of that name).

mod common;

use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

/// A worker under faketime: faketime's process, and the worker's pid (its
/// child: faketime forks, it does not exec).
struct Skewed {
    faketime: Child,
    pid: u32,
}

impl Skewed {
    fn stop(mut self, sig: &str) {
        signal(self.pid, sig);
        let _ = self.faketime.wait();
    }
}

/// `manage_tasks ARGS` under `faketime -f OFFSET`, logging to `<name>.err`.
fn skewed(env: &Env, offset: &str, name: &str, args: &[&str]) -> Skewed {
    let faketime = spawn_skewed(env, offset, name, args);
    let mut pid = 0;
    wait_until(10.0, "the worker under faketime to start", || {
        let out = Command::new("pgrep")
            .args(["-P", &faketime.id().to_string()])
            .output()
            .unwrap();
        pid = stdout(&out).trim().parse().unwrap_or(0);
        pid != 0
    });
    Skewed { faketime, pid }
}

fn spawn_skewed(env: &Env, offset: &str, name: &str, args: &[&str]) -> Child {
    let log = std::fs::File::create(env.dir.path().join(format!("{name}.err"))).unwrap();
    Command::new("faketime")
        .args(["-f", offset, env!("CARGO_BIN_EXE_manage_tasks")])
        .args(args)
        .env("TASK_STORE", &env.store)
        .env("HOME", env.dir.path())
        // Only the wall clock moves: timers keep their pace.
        .env("DONT_FAKE_MONOTONIC", "1")
        .env_remove("XDG_DATA_HOME")
        .current_dir(env.dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("faketime runs (apt-get install faketime)")
}

/// Fails, saying how to get it, unless faketime moves this process's clock.
fn require_faketime() {
    let out = Command::new("faketime")
        .args(["-f", "+10m", "date", "+%s"])
        .output()
        .unwrap_or_else(|e| {
            panic!("faketime is needed for this test ({e}); apt-get install faketime")
        });
    let faked: i64 = stdout(&out)
        .trim()
        .parse()
        .expect("faketime date prints a time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (faked - now - 600).abs() < 30,
        "faketime did not move the clock by 10 minutes ({faked} vs {now}); apt-get install faketime"
    );
}

/// The run whose arguments have `n`.
fn run_with(env: &Env, n: u64) -> Value {
    env.all_runs()
        .into_iter()
        .find(|r| r["args"]["n"] == n)
        .unwrap_or_else(|| panic!("no run with n = {n}"))
}

#[test]
fn workers_whose_clocks_disagree_by_minutes_agree_on_every_lease() {
    require_faketime();
    let env = Env::new("postgres");
    let ran = env.dir.path().join("ran.log");
    // Each execution appends "n pid" before it works for 2 s.
    env.task(
        "slow",
        "slow.sh",
        r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}"#,
        &format!(
            "n=$(sed -n 's/.*\"n\":\\([0-9]*\\).*/\\1/p')\necho \"$n $$\" >> {}\nsleep 2\n\
             echo '{{\"status\":1,\"reason\":\"ok\",\"payload\":{{}}}}'",
            ran.display()
        ),
    );
    for n in 0..6 {
        env.cmd()
            .args(["-q", "submit", "--name", "slow", "--args"])
            .arg(format!(r#"{{"n":{n}}}"#))
            .assert()
            .success();
    }
    let lease = ["worker", "--concurrency", "2", "--lease", "3s"];
    let ahead = skewed(&env, "+10m", "ahead", &lease);
    let behind = skewed(&env, "-10m", "behind", &lease);
    wait_until(60.0, "all six runs completed", || {
        let runs = env.all_runs();
        runs.len() == 6 && runs.iter().all(|r| r["state"] == "completed")
    });
    // A worker 10 minutes ahead would have found the other's leases lapsed
    // and run those runs again: each ran once, in its first attempt.
    let lines = std::fs::read_to_string(&ran).unwrap();
    let mut ns: Vec<&str> = lines
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    ns.sort();
    assert_eq!(ns, ["0", "1", "2", "3", "4", "5"], "executions:\n{lines}");
    let workers: std::collections::BTreeSet<String> = env
        .all_runs()
        .iter()
        .inspect(|r| assert_eq!(r["attempt"], 1, "{r}"))
        .map(|r| r["worker"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(workers.len(), 2, "both workers took runs: {workers:?}");

    // Rescue follows the database's clock as well: a worker 10 minutes
    // behind takes over a dead worker's run once its 3 s lease lapses, not
    // 10 minutes later. The one behind stops; the one ahead takes run 99.
    behind.stop("-TERM");
    env.cmd()
        .args(["-q", "submit", "--name", "slow", "--args", r#"{"n":99}"#])
        .assert()
        .success();
    let holder = wait_for_holder(&env, 99, 30.0);
    assert!(holder.ends_with(&format!("-{}", ahead.pid)), "{holder}");
    let behind = skewed(&env, "-10m", "behind2", &lease);
    ahead.stop("-KILL");
    wait_until(30.0, "the dead worker's run rescued and completed", || {
        let r = run_with(&env, 99);
        r["state"] == "completed" && r["attempt"] == 2
    });
    let r = run_with(&env, 99);
    assert!(
        r["worker"]
            .as_str()
            .unwrap()
            .ends_with(&format!("-{}", behind.pid)),
        "{r}"
    );
    let lines = std::fs::read_to_string(&ran).unwrap();
    let of_99 = lines.lines().filter(|l| l.starts_with("99 ")).count();
    assert_eq!(
        of_99, 2,
        "run 99: the dead worker's attempt, then the rescue:\n{lines}"
    );
    behind.stop("-KILL");
}

/// The worker holding run `n` once it is running.
fn wait_for_holder(env: &Env, n: u64, secs: f64) -> String {
    let mut holder = String::new();
    wait_until(secs, "the run to start", || {
        let r = run_with(env, n);
        if r["state"] == "running" {
            holder = r["worker"].as_str().unwrap_or_default().to_owned();
            true
        } else {
            false
        }
    });
    holder
}
