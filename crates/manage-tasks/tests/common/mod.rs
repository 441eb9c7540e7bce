//! Shared helpers for the CLI tests: a temp workspace with a store, and real task scripts.
#![allow(dead_code)]

pub mod pgcluster;
pub mod proxy;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

/// The repository's `examples/` directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .canonicalize()
        .unwrap()
}

/// A temp dir with a store of the given kind (`yaml` or `db`).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
}

impl Env {
    pub fn new(kind: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(format!("tasks.{kind}"));
        Self { dir, store }
    }

    /// `manage_tasks` with this env's store, no colour, and a clean HOME.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("manage_tasks").unwrap();
        cmd.env("TASK_STORE", &self.store)
            .env("HOME", self.dir.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("NO_COLOR")
            .current_dir(self.dir.path());
        cmd
    }

    /// Writes an executable script into the env's dir and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        write_script(self.dir.path(), name, body)
    }

    /// Registers `location` as `name`, asserting success.
    pub fn register(&self, name: &str, location: &Path) {
        self.cmd()
            .args(["register", "--name", name, "--location"])
            .arg(location)
            .assert()
            .success();
    }

    /// Writes a bash task (schema `inputs`, run `run`, see [`task_script`])
    /// as `file`, registers it as `name`, and returns its path.
    pub fn task(&self, name: &str, file: &str, inputs: &str, run: &str) -> PathBuf {
        let script = self.script(file, &task_script(inputs, run));
        self.register(name, &script);
        script
    }

    /// The raw bytes of the store file.
    pub fn store_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.store).unwrap_or_default()
    }
}

pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A bash task whose schema is `inputs` (JSON text) and whose run is `run` (bash).
pub fn task_script(inputs: &str, run: &str) -> String {
    format!(
        "#!/bin/bash\nif [ \"$1\" = schema ]; then\n  echo '{{\"description\":\"test task\",\"inputs\":{inputs}}}'\n  exit 0\nfi\n{run}\n"
    )
}

/// Parses stdout as one JSON document.
pub fn json_stdout(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

impl Env {
    /// `manage_tasks ARGS` as a background process (stdout/stderr to files in the env dir).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        let log = |kind: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(format!("bg.{kind}")))
                .unwrap()
        };
        std::process::Command::new(env!("CARGO_BIN_EXE_manage_tasks"))
            .args(args)
            .env("TASK_STORE", &self.store)
            .env("HOME", self.dir.path())
            .env_remove("XDG_DATA_HOME")
            .current_dir(self.dir.path())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .unwrap()
    }

    /// Runs `sql` on the SQLite store with Python's sqlite3: another process
    /// than ours, as a second program or a fault would be.
    pub fn sql(&self, sql: &str) {
        let out = std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
            ])
            .arg(&self.store)
            .arg(sql)
            .output()
            .expect("/usr/bin/python3 runs this test's SQL (apt-get install python3)");
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// `manage_tasks mcp` on piped stdio, its MCP session already opened
    /// (`initialize` at 2025-11-25, then `notifications/initialized`): the
    /// server, and its stdin to send further JSON-RPC lines on. Its stderr is
    /// piped too (read it with `wait_with_output`).
    pub fn mcp_session(&self) -> (std::process::Child, std::process::ChildStdin) {
        use std::io::Write;
        let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_manage_tasks"))
            .arg("mcp")
            .env("TASK_STORE", &self.store)
            .env("HOME", self.dir.path())
            .env_remove("XDG_DATA_HOME")
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = server.stdin.take().unwrap();
        for message in [
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"test","version":"0"}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ] {
            writeln!(stdin, "{message}").unwrap();
        }
        (server, stdin)
    }

    /// Runs `manage_tasks ARGS --json`-style commands and parses stdout, asserting success.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        json_stdout(&out)
    }

    /// Every run in the history, newest first (all pages).
    pub fn all_runs(&self) -> Vec<Value> {
        self.json(&["runs", "list", "--json", "--limit", "10000"])["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Queues `n` runs of `task` with `args` each (one transaction), returning their ids.
    pub fn submit_many(&self, task: &str, n: usize, args: &str) -> Vec<String> {
        let input = format!("{args}\n").repeat(n);
        let out = self
            .cmd()
            .args(["-q", "submit", "--name", task, "--batch", "-"])
            .write_stdin(input)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().map(str::to_owned).collect()
    }
}

/// Polls `cond` every 20 ms until it holds, panicking after `secs` seconds.
pub fn wait_until(secs: f64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Sends `signal` (e.g. `-KILL`) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

/// How [`Env::hold_store`] makes the SQLite store unavailable.
#[derive(Debug, Clone, Copy)]
pub enum Hold {
    /// An open `BEGIN EXCLUSIVE` transaction: every write waits for the
    /// busy timeout (10 s) and then fails with `database is locked`; reads
    /// go on (WAL mode lets them).
    Writes,
    /// Every lock of the WAL index (bytes 120..128 of the `-shm` file, as
    /// SQLite's unix VFS places them) taken with `fcntl`: readers and writers
    /// retry for about 10 s, then fail with `locking protocol`.
    Everything,
}

impl Env {
    /// Makes the store unavailable from another process (Python), as a
    /// long transaction or a stuck program holding its locks would, until
    /// the returned child is killed (it gives up by itself after 120 s).
    /// Returns once the lock is held.
    pub fn hold_store(&self, hold: Hold) -> std::process::Child {
        use std::io::BufRead;
        let script = match hold {
            Hold::Writes => {
                "import sqlite3, sys, time\n\
                 c = sqlite3.connect(sys.argv[1], timeout=5, isolation_level=None)\n\
                 c.execute('BEGIN EXCLUSIVE')\n\
                 print('held', flush=True)\n\
                 time.sleep(120)\n"
            }
            Hold::Everything => {
                "import fcntl, os, sys, time\n\
                 fd = os.open(sys.argv[1] + '-shm', os.O_RDWR)\n\
                 deadline = time.time() + 5\n\
                 while True:\n\
                 \x20   try:\n\
                 \x20       fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 8, 120)\n\
                 \x20       break\n\
                 \x20   except OSError:\n\
                 \x20       if time.time() > deadline: raise\n\
                 \x20       time.sleep(0.001)\n\
                 print('held', flush=True)\n\
                 time.sleep(120)\n"
            }
        };
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(&self.store)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 holds the store's lock (apt-get install python3)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held", "the lock was not taken");
        child
    }

    /// What the background processes ([`Env::spawn`]) wrote to stderr so far.
    pub fn bg_err(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bg.err")).unwrap_or_default()
    }
}

/// Waits up to `secs` for `child` to exit, and returns its status.
pub fn exits_within(child: &mut std::process::Child, secs: f64) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(secs, "the process to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}
