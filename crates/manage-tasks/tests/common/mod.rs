//! Shared helpers for the CLI tests: a temp workspace with a store (a file,
//! or a fresh PostgreSQL database), real task scripts, and
//! [`on_sql_backends!`], which runs a test body on SQLite and PostgreSQL.
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

/// A temp dir with a store: a file in it (`yaml`, `db`), or a fresh
/// PostgreSQL database (`postgres`, see [`PgDb`]) dropped with the `Env`.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// What `TASK_STORE` is set to: the store's file, or the database's URL.
    pub store: PathBuf,
    pg: Option<PgDb>,
}

impl Env {
    /// An env of kind `yaml` or `db` (a store file in the temp dir), or
    /// `postgres` (a database of its own on the test server; the test fails,
    /// saying how to start the server, if it cannot be reached).
    pub fn new(kind: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if kind == "postgres" {
            let pg = PgDb::new();
            return Self {
                dir,
                store: PathBuf::from(&pg.url),
                pg: Some(pg),
            };
        }
        let store = dir.path().join(format!("tasks.{kind}"));
        Self {
            dir,
            store,
            pg: None,
        }
    }

    /// An env on the store `url` that something else owns (a private
    /// PostgreSQL cluster, a proxy in front of one): nothing is dropped with it.
    pub fn on_url(url: &str) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            store: PathBuf::from(url),
            pg: None,
        }
    }

    /// The env's PostgreSQL database, if it has one.
    pub fn pg(&self) -> Option<&PgDb> {
        self.pg.as_ref()
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

    /// [`Env::cmd`] as a plain `std` command, for a process a test keeps
    /// running (a server: [`spawn_server`]).
    #[allow(dead_code)]
    pub fn std_cmd(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_manage_tasks"));
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

    /// The raw bytes of the store file; of a PostgreSQL store, a dump of
    /// its database (schema and rows), to compare before and after.
    pub fn store_bytes(&self) -> Vec<u8> {
        match &self.pg {
            Some(pg) => pg.dump().into_bytes(),
            None => std::fs::read(&self.store).unwrap_or_default(),
        }
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

    /// Runs `sql` on the store from another process than ours, as a second
    /// program or a fault would: Python's sqlite3 on an SQLite file, `psql`
    /// (with the search path set to our schema, so the same plain
    /// statements work) on PostgreSQL.
    pub fn sql(&self, sql: &str) {
        if let Some(pg) = &self.pg {
            pg.psql(&format!("SET search_path TO task_executor;\n{sql}"));
            return;
        }
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

/// `s` as an SQL string literal (both dialects double the quote).
pub fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The admin URL the PostgreSQL tests create their databases with:
/// `TASK_EXECUTOR_TEST_PG`, as in the library's tests.
pub fn pg_admin_url() -> String {
    std::env::var("TASK_EXECUTOR_TEST_PG")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` naming database `name` instead of its own (its query kept).
pub fn pg_url_of(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{host}/{name}{query}")
}

/// A database of its own on the test server, created with the admin URL
/// and dropped (`WITH (FORCE)`, so workers still connected do not keep it)
/// when this value drops. Named `te_test_cli_<pid>_<uuid>`: `.ci/run` drops
/// those whose process is gone (a killed test run's).
///
/// Made and inspected with `psql`/`pg_dump`, PostgreSQL's own clients:
/// another process than the one under test (as `Env::sql` is for SQLite),
/// nothing more to build, and the dump is the natural "before and after".
pub struct PgDb {
    pub name: String,
    /// The database's URL (the admin URL's server, user and options).
    pub url: String,
}

impl PgDb {
    /// Creates the database; panics (failing the test) with how to start
    /// the server if it cannot be reached.
    pub fn new() -> Self {
        let name = format!("te_test_cli_{}_{:016x}", std::process::id(), random_u64());
        psql_on(&pg_admin_url(), &format!("CREATE DATABASE {name}"));
        let url = pg_url_of(&pg_admin_url(), &name);
        Self { name, url }
    }

    /// Runs `sql` (psql, stopping at the first error) and returns its rows,
    /// unaligned, `|` between columns; panics with psql's error.
    pub fn psql(&self, sql: &str) -> String {
        psql_on(&self.url, sql)
    }

    /// `pg_dump` of the database, schema and rows, without the random
    /// `\restrict` key newer clients print: equal dumps, equal databases.
    pub fn dump(&self) -> String {
        let out = std::process::Command::new("pg_dump")
            .args(["--no-owner", "--no-privileges", "-d", &self.url])
            .output()
            .expect("pg_dump (apt-get install postgresql-client) dumps this test's database");
        assert!(out.status.success(), "pg_dump: {}", stderr(&out));
        stdout(&out)
            .lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args(["-X", "-q", "-d", &pg_admin_url(), "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// `psql` on `url` running `sql`; panics with a hint when the server is down.
fn psql_on(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url])
        .arg("-c")
        .arg(sql)
        .output()
        .expect("psql (apt-get install postgresql-client) runs this test's SQL");
    if !out.status.success() {
        let err = stderr(&out);
        if err.contains("connection to server") || err.contains("could not connect") {
            panic!(
                "cannot reach PostgreSQL at {} for the tests: {}; start it with \
                 `pg_ctlcluster --skip-systemctl-redirect 15 main start`, or set \
                 TASK_EXECUTOR_TEST_PG to an admin URL",
                task_executor::store::redact(url),
                err.trim()
            );
        }
        panic!("psql: {sql}: {err}");
    }
    stdout(&out)
}

/// 64 random bits (from the standard library's randomly keyed hasher).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Runs each named test body (a `fn NAME(env: Env)` of the test file) on
/// both SQL backends: `sqlite::NAME` on a fresh SQLite file and
/// `postgres::NAME` on a fresh PostgreSQL database, each its own test
/// (nextest runs each in a process of its own).
#[allow(unused_macros)]
macro_rules! on_sql_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name($crate::common::Env::new("db")) })+
        }
        mod postgres {
            $(#[test] fn $name() { super::$name($crate::common::Env::new("postgres")) })+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_sql_backends;

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

/// What a server process started by [`spawn_server`] has said on stderr,
/// kept for assertions and failure messages.
pub type Said = std::sync::Arc<std::sync::Mutex<String>>;

/// Spawns `cmd` (a `serve` or `mcp --http`) with stderr piped, reads its
/// first stderr line, and returns the child, what `address` makes of that
/// line (the server's address; panics naming the line if `None`), and its
/// stderr (that line, then the rest as it comes).
#[allow(dead_code)]
pub fn spawn_server(
    mut cmd: std::process::Command,
    address: impl Fn(&str) -> Option<&str>,
) -> (std::process::Child, String, Said) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = address(line.trim())
        .unwrap_or_else(|| panic!("unexpected first stderr line: {line:?}"))
        .to_owned();
    let said = Said::new(std::sync::Mutex::new(line));
    let sink = said.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    (child, addr, said)
}
