//! Nothing left behind (issue 14), through the real `manage_tasks`:
//!
//! - a `TASK_RESULT_FILE` that is a FIFO, a symlink or a directory: an
//!   invalid result naming what it is, at once, and removed afterwards
//! - a daemon a task starts (double fork + `setsid`) does not outlive the
//!   run, from `execute`, from `register` (the `schema` call) and from a
//!   long-lived worker, which keeps neither orphans nor zombies

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
