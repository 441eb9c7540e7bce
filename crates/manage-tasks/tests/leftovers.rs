//! Nothing left behind (issue 14), through the real `manage_tasks`:
//!
//! - a `TASK_RESULT_FILE` that is a FIFO, a symlink or a directory: an
//!   invalid result naming what it is, at once, and removed afterwards
//! - a daemon a task starts (double fork + `setsid`) does not outlive the
//!   run, from `execute`, `execute --batch`, `register` (the `schema`
//!   call) and a long-lived worker, which keeps neither orphans nor zombies

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// A private runtime dir for `env`, so its result files are ours to inspect:
/// the runner puts them in `$XDG_RUNTIME_DIR/task-executor`.
fn runtime_dir(env: &Env) -> PathBuf {
    let dir = env.dir.path().join("runtime");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The names left in the results directory under `runtime`.
fn leftovers(runtime: &Path) -> Vec<String> {
    match std::fs::read_dir(runtime.join("task-executor")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_result_file_that_is_not_a_regular_file_is_an_invalid_result_at_once() {
    let env = Env::new("db");
    let runtime = runtime_dir(&env);
    let elsewhere = env.dir.path().join("elsewhere.json");
    std::fs::write(&elsewhere, r#"{"status":1,"reason":"not the task's"}"#).unwrap();
    let ok = r#"echo '{"status":1,"reason":"on stdout"}'"#;
    let cases = [
        (
            "fifo",
            "a FIFO",
            format!(r#"mkfifo "$TASK_RESULT_FILE"; {ok}"#),
        ),
        (
            "link",
            "a symbolic link",
            format!(r#"ln -s {} "$TASK_RESULT_FILE"; {ok}"#, elsewhere.display()),
        ),
        (
            "dir",
            "a directory",
            format!(r#"mkdir -p "$TASK_RESULT_FILE/a/b"; touch "$TASK_RESULT_FILE/a/b/c"; {ok}"#),
        ),
    ];
    for (name, kind, run) in cases {
        env.task(name, &format!("{name}.sh"), "{}", &run);
        let start = Instant::now();
        // Before the fix a FIFO wedged `execute` for good: the timeout kills it.
        let out = env
            .cmd()
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(["execute", "--name", name, "--json"])
            .timeout(Duration::from_secs(10))
            .output()
            .unwrap();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
        let doc = json_stdout(&out);
        // 3: the task ran but did not report a usable result.
        assert_eq!(out.status.code(), Some(3), "{name}: {}", stderr(&out));
        assert_eq!(doc["outcome"], "invalid_result", "{name}: {doc}");
        assert_ne!(doc["reason"], "not the task's", "{name}: {doc}");
        let text = doc.to_string();
        assert!(
            text.contains(&format!("is {kind}, not a regular file")),
            "{name}: {text}"
        );
        assert!(text.contains("TASK_RESULT_FILE"), "{name}: {text}");
        assert!(
            text.contains(&runtime.join("task-executor").display().to_string()),
            "{name}: the message names the path: {text}"
        );
        assert_eq!(leftovers(&runtime), Vec::<String>::new(), "{name}");
    }
    assert!(elsewhere.exists(), "the symlink's target is left alone");
}

/// Bash that starts a daemon the classic way — fork, the child forks again
/// and exits, the grandchild calls `setsid` and sleeps — which writes its
/// pid to `pid_file` (a bash word: it may name variables); waits for that file.
fn daemon(pid_file: &str) -> String {
    format!(
        "( setsid bash -c \"echo \\$\\$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 1000\" </dev/null >/dev/null 2>&1 & )\n\
         while [ ! -e {pid_file} ]; do sleep 0.01; done"
    )
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits up to 5 s for `pid` to no longer exist at all (not even as a zombie);
/// SIGKILLs it if it is still there, so a failing test leaves nothing behind.
fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    false
}

/// The children of process `pid`, from its threads' `children` files.
fn children_of(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for thread in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = thread.unwrap().path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            found.extend(text.split_whitespace().map(str::to_owned));
        }
    }
    found
}

#[test]
fn a_daemon_started_by_a_task_does_not_outlive_execute() {
    let env = Env::new("db");
    let pid_file = env.dir.path().join("daemon.pid");
    let run = format!(
        "{}\necho '{{\"status\":1,\"reason\":\"started it\"}}'",
        daemon(&pid_file.display().to_string())
    );
    env.task("starter", "starter.sh", "{}", &run);
    let out = env
        .cmd()
        .args(["execute", "--name", "starter"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pid = read_pid(&pid_file);
    assert!(gone(pid), "daemon {pid} outlived `execute`");
}

#[test]
fn a_daemon_started_by_the_schema_call_does_not_outlive_register() {
    let env = Env::new("yaml");
    let pid_file = env.dir.path().join("daemon.pid");
    let script = env.script(
        "schema-starter.sh",
        &format!(
            "#!/bin/bash\nif [ \"$1\" = schema ]; then\n{}\n  echo '{{\"inputs\":{{}}}}'\n  exit 0\nfi\necho '{{\"status\":1}}'\n",
            daemon(&pid_file.display().to_string())
        ),
    );
    env.register("schemaStarter", &script);
    let pid = read_pid(&pid_file);
    assert!(gone(pid), "daemon {pid} outlived `register`");
}

/// A worker running runs that each leave a daemon keeps neither the daemons
/// nor their zombies while it goes on running.
#[test]
fn a_worker_keeps_no_orphans_and_no_zombies() {
    let env = Env::new("db");
    let dir = env.dir.path().display().to_string();
    let run = format!(
        "{}\necho '{{\"status\":1}}'",
        daemon(&format!("{dir}/daemon-$TASK_RUN_ID.pid"))
    );
    env.task("starter", "starter.sh", "{}", &run);
    let mut worker = env.spawn(&["-q", "worker", "--concurrency", "2", "--poll", "20ms"]);
    let ids = env.submit_many("starter", 4, "{}");
    wait_until(30.0, "the runs to complete", || {
        env.all_runs().iter().all(|r| r["state"] == "completed")
    });
    let pids: Vec<i32> = ids
        .iter()
        .map(|id| read_pid(&env.dir.path().join(format!("daemon-{id}.pid"))))
        .collect();
    let left: Vec<i32> = pids.iter().copied().filter(|&pid| !gone(pid)).collect();
    // Still running, with no child at all: no daemon, no zombie.
    let still_running = worker.try_wait().unwrap().is_none();
    let children = children_of(worker.id());
    signal(worker.id(), "-TERM");
    let status = worker.wait().unwrap();
    assert!(still_running, "the worker exited early");
    assert_eq!(left, Vec::<i32>::new(), "daemons outlived their runs");
    assert_eq!(children, Vec::<String>::new(), "the worker's children");
    assert!(status.success(), "{status:?}");
}

#[test]
fn daemons_started_by_a_batch_do_not_outlive_it() {
    let env = Env::new("yaml");
    let dir = env.dir.path().display().to_string();
    let run = format!(
        "{}\necho '{{\"status\":1}}'",
        daemon(&format!("{dir}/daemon-$TASK_RUN_ID.pid"))
    );
    env.task("starter", "starter.sh", "{}", &run);
    let out = env
        .cmd()
        .args([
            "-q",
            "execute",
            "--name",
            "starter",
            "--batch",
            "-",
            "--parallel",
            "3",
        ])
        .write_stdin("{}\n".repeat(6))
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pid_files: Vec<PathBuf> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("daemon-") && name.ends_with(".pid")
        })
        .collect();
    assert_eq!(pid_files.len(), 6, "{pid_files:?}");
    let left: Vec<i32> = pid_files
        .iter()
        .map(|p| read_pid(p))
        .filter(|&pid| !gone(pid))
        .collect();
    assert_eq!(left, Vec::<i32>::new(), "daemons outlived the batch");
}
