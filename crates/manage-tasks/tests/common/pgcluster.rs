//! A private PostgreSQL cluster for one test: `initdb` into a temp dir,
//! started on a free loopback port with trust authentication and its socket
//! in that dir, restartable (a test may stop the database itself without
//! disturbing the other tests on the shared server), stopped and removed
//! when dropped — also when the test panics.
//!
//! The server binaries are PostgreSQL 15's (`/usr/lib/postgresql/15/bin`,
//! or `TASK_EXECUTOR_PG_BIN`). `initdb` refuses to run as root, so as root
//! every server command runs as the `postgres` user (`runuser`), on a data
//! directory it owns.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Output};

/// Where the server binaries are unless `TASK_EXECUTOR_PG_BIN` says.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The cluster; stopped (immediate mode) and its files removed when dropped.
pub struct PgCluster {
    /// Holds `data/`, the socket and `server.log`.
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The server commands run as `postgres` (we are root).
    as_postgres: bool,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PgCluster {
    /// Creates and starts a cluster; panics, saying why and how to fix it,
    /// if it cannot.
    pub fn start() -> Self {
        let bin = std::env::var_os("TASK_EXECUTOR_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PG_BIN.into());
        if !bin.join("initdb").is_file() || !bin.join("pg_ctl").is_file() {
            panic!(
                "a private PostgreSQL cluster needs `initdb` and `pg_ctl` in `{}`: install \
                 PostgreSQL 15 (apt-get install postgresql-15), or set TASK_EXECUTOR_PG_BIN to \
                 the directory that holds them",
                bin.display()
            );
        }
        let dir = tempfile::tempdir().expect("a temp dir for the cluster");
        let as_postgres = is_root();
        if as_postgres {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap_or_else(|e| {
                panic!(
                    "cannot give `{}` to the postgres user ({e}); initdb refuses to run as root \
                     and needs a directory it owns",
                    dir.path().display()
                )
            });
        }
        let mut cluster = Self {
            dir,
            bin,
            as_postgres,
            port: 0,
        };
        let data = cluster.data();
        let out = cluster.server_cmd("initdb", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8"])
                .args(["--locale=C", "--no-sync", "--no-instructions"]);
        });
        if !out.status.success() {
            panic!(
                "initdb could not create a cluster in `{}`: {}{}",
                data.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A port found free may be taken before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..3 {
            cluster.port = free_port();
            cluster.configure();
            let out = cluster.pg_ctl(&["start"]);
            if out.status.success() {
                return cluster;
            }
            last = format!(
                "{}{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                cluster.log()
            );
        }
        panic!(
            "a private PostgreSQL cluster in `{}` did not start (pg_ctl start): {last}\nfix what \
             the log says (a full disk, no shared memory, a port in use) and run the test again",
            data.display()
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Restarts the server: a fast shutdown (open transactions rolled back,
    /// every client disconnected, a checkpoint), then a start; returns once
    /// it accepts connections again.
    pub fn restart(&self) {
        let out = self.pg_ctl(&["restart", "-m", "fast"]);
        assert!(
            out.status.success(),
            "pg_ctl restart failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Our settings, last in `postgresql.conf` so that they win (and hold
    /// across a restart). Durability is not what the tests look at — a fast
    /// shutdown writes everything out anyway — so fsync is off to spare the
    /// shared machine's disk.
    fn configure(&self) {
        use std::io::Write;
        let conf = self.data().join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .unwrap_or_else(|e| panic!("cannot open `{}`: {e}", conf.display()));
        writeln!(
            f,
            "\n# the test's\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 100\n",
            self.port,
            self.dir.path().display()
        )
        .unwrap();
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let (data, log) = (self.data(), self.dir.path().join("server.log"));
        self.server_cmd("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60"])
                .args(args);
        })
    }

    /// Runs the server binary `name` (as `postgres` when we are root).
    fn server_cmd(&self, name: &str, args: impl FnOnce(&mut Command)) -> Output {
        let program = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        args(&mut cmd);
        // Its own working directory: postgres may not enter ours.
        cmd.current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", program.display()))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: nothing of it is needed any more; the files go with `dir`.
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
    }
}

fn is_root() -> bool {
    // `id -u` rather than a libc call: the tests call no C functions directly.
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "there is no `postgres` user to run the private cluster as (initdb refuses \
                     to run as root): install PostgreSQL 15 (apt-get install postgresql-15), \
                     or run the tests as another user"
                )
            })
    };
    (id("-u"), id("-g"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}
