//! The PostgreSQL store behind PgBouncer in transaction mode (issue 15,
//! "Many machines on PostgreSQL"), through the real binary: a PgBouncer of
//! the test's own (`pool_mode = transaction`, two server connections for
//! every client, so consecutive transactions of one client land on
//! different server connections) in front of a fresh test database.
//!
//! - `register` migrates the new database through it; `submit` (one by
//!   one and a batch) queues; `worker --poll 200ms` drains every run to
//!   completed; `runs list`, `runs show`, `runs logs` and `submit --wait`
//!   answer as on a direct connection.
//!
//! PgBouncer is the system's (`pgbouncer` on `PATH`, else
//! `/usr/sbin/pgbouncer`, or `TASK_EXECUTOR_PGBOUNCER`); without it the test
//! fails and says to `apt-get install pgbouncer`. It refuses to run as root,
//! so as root it runs with `-u postgres`.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A PgBouncer process in transaction mode in front of one database of the
/// test server; killed when dropped.
struct PgBouncer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// The database it serves, and the user every client logs in as.
    db: String,
    user: String,
}

/// The PgBouncer binary, or a panic saying how to install it.
fn pgbouncer_bin() -> PathBuf {
    let found = match std::env::var_os("TASK_EXECUTOR_PGBOUNCER") {
        Some(bin) => Some(PathBuf::from(bin)).filter(|bin| bin.is_file()),
        None => std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("pgbouncer"))
            .find(|bin| bin.is_file()),
    };
    found.unwrap_or_else(|| {
        panic!(
            "this test runs the store behind PgBouncer, and there is no `pgbouncer` (not on \
             PATH, not in /usr/sbin, not at TASK_EXECUTOR_PGBOUNCER): apt-get install pgbouncer"
        )
    })
}

/// `(host, port, user, password)` of a `postgres://` URL without a query.
fn server_of(url: &str) -> (String, u16, String, Option<String>) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let (login, hostport) = authority
        .rsplit_once('@')
        .map_or(("", authority), |(l, h)| (l, h));
    let (user, password) = match login.split_once(':') {
        Some((u, p)) => (u, Some(p.to_owned())),
        None => (login, None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().expect("a port number in the test URL")),
        None => (hostport, 5432),
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let user = if user.is_empty() { "postgres" } else { user };
    (host.to_owned(), port, user.to_owned(), password)
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

impl PgBouncer {
    /// Starts PgBouncer in front of `db`, on a free port; returns once it
    /// answers a query. Panics, with its log, if it does not start.
    fn start(db: &PgDb) -> Self {
        let bin = pgbouncer_bin();
        let (host, server_port, user, password) = server_of(&db.url);
        let mut dir = tempfile::tempdir().unwrap();
        // As root it runs as `postgres`, which must read its files (nothing
        // secret: trust authentication on loopback).
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        let users = dir.path().join("users.txt");
        std::fs::write(&users, format!("\"{user}\" \"\"\n")).unwrap();
        let ini = dir.path().join("pgbouncer.ini");
        let server_password = password.map_or(String::new(), |p| format!(" password={p}"));
        // A port found free may be taken before PgBouncer binds it: try a few.
        for _ in 0..3 {
            let port = free_port();
            std::fs::write(
                &ini,
                format!(
                    "[databases]\n{name} = host={host} port={server_port} dbname={name} \
                     user={user}{server_password}\n\n\
                     [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                     unix_socket_dir =\nauth_type = trust\nauth_file = {users}\n\
                     pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\n",
                    name = db.name,
                    users = users.display(),
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("pgbouncer.log")).unwrap();
            let mut cmd = Command::new(&bin);
            if is_root() {
                cmd.args(["-u", "postgres"]);
            }
            let child = cmd
                .arg(&ini)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", bin.display()));
            let mut bouncer = Self {
                child,
                dir,
                port,
                db: db.name.clone(),
                user: user.clone(),
            };
            if bouncer.answers() {
                return bouncer;
            }
            if bouncer.child.try_wait().unwrap().is_none() {
                panic!(
                    "PgBouncer (`{}`) runs but does not answer; its log:\n{}",
                    bin.display(),
                    bouncer.log()
                );
            }
            let log = bouncer.log();
            if !log.contains("Address already in use") {
                panic!(
                    "PgBouncer (`{}`) did not start; its log:\n{log}",
                    bin.display()
                );
            }
            dir = std::mem::replace(&mut bouncer.dir, tempfile::tempdir().unwrap());
        }
        panic!("PgBouncer found no free port in 3 tries");
    }

    /// Whether it answers `SELECT 1` within 10 s (it exits at once on a bad
    /// config or a port in use).
    fn answers(&mut self) -> bool {
        for _ in 0..200 {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            let ok = Command::new("psql")
                .args(["-X", "-q", "-A", "-t", "-d", &self.url(), "-c", "SELECT 1"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The store URL through PgBouncer.
    fn url(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            self.user, self.port, self.db
        )
    }

    /// What PgBouncer logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A task that logs a line and succeeds with its input echoed.
const ECHO: &str = "input=$(cat)\n\
    n=$(printf '%s' \"$input\" | sed -n 's/.*\"n\":\\([0-9]*\\).*/\\1/p')\n\
    echo \"working on $n\" >&2\n\
    echo \"{\\\"status\\\":1,\\\"reason\\\":\\\"ok\\\",\\\"payload\\\":{\\\"n\\\":$n}}\"";

#[test]
fn a_worker_polling_behind_pgbouncer_in_transaction_mode_drains_the_queue() {
    let direct = Env::new("postgres");
    let bouncer = PgBouncer::start(direct.pg().expect("a PostgreSQL env"));
    let env = Env::on_url(&bouncer.url());
    let context = || format!("\nPgBouncer's log:\n{}", bouncer.log());

    // The first use migrates the database, through PgBouncer.
    env.task(
        "echo",
        "echo.sh",
        r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}"#,
        ECHO,
    );
    let mut ids = Vec::new();
    for n in 0..5 {
        let out = env
            .cmd()
            .args([
                "-q",
                "submit",
                "echo",
                "--taskArgs",
                &format!(r#"{{"n":{n}}}"#),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "submit: {}{}",
            stderr(&out),
            context()
        );
        ids.push(stdout(&out).trim().to_owned());
    }
    ids.extend(env.submit_many("echo", 20, r#"{"n":7}"#));
    assert_eq!(ids.len(), 25);

    let mut worker = env.spawn(&[
        "-q",
        "worker",
        "--poll",
        "200ms",
        "--concurrency",
        "4",
        "--until-idle",
    ]);
    let status = exits_within(&mut worker, 60.0);
    assert!(
        status.success(),
        "the worker failed: {}{}",
        env.bg_err(),
        context()
    );
    assert!(
        !env.bg_err().contains("prepared statement"),
        "{}",
        env.bg_err()
    );

    let runs = env.all_runs();
    assert_eq!(runs.len(), 25, "{runs:?}");
    for run in &runs {
        assert_eq!(run["state"], "completed", "{run}{}", context());
        assert_eq!(run["status"], 1, "{run}");
    }
    let first = env.json(&["runs", "show", &ids[3], "--json"]);
    assert_eq!(first["payload"]["n"], 3, "{first}");
    let out = env.cmd().args(["runs", "logs", &ids[3]]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("err| working on 3"),
        "{}",
        stdout(&out)
    );

    // `submit --wait` while a polling worker runs.
    let mut worker = env.spawn(&["-q", "worker", "--poll", "200ms", "--id", "poller"]);
    let out = env
        .cmd()
        .args([
            "-q",
            "submit",
            "echo",
            "--taskArgs",
            r#"{"n":42}"#,
            "--wait",
            "--json",
        ])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    signal(worker.id(), "-TERM");
    assert!(
        exits_within(&mut worker, 30.0).success(),
        "{}",
        env.bg_err()
    );
    assert!(
        out.status.success(),
        "submit --wait: {}{}",
        stderr(&out),
        context()
    );
    let waited = json_stdout(&out);
    assert_eq!(waited["payload"]["n"], 42, "{waited}");
    assert_eq!(waited["worker"], "poller", "{waited}");
}
