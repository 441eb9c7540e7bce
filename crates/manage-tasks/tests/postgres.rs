//! What only the PostgreSQL store does, through the real binary on a fresh
//! database per test (the rest of the CLI runs on it in the other test
//! files, `postgres::NAME`):
//!
//! - ten `register`s at once on a new database: all succeed, the schema is
//!   migrated once (one `schema_version` row, the current version)
//! - a schema newer than this build, and a `task_executor` schema that is
//!   another program's, are refused and left as they were (a dump before
//!   and after)
//! - bad URLs and unreachable servers: clear errors, exit code 2, the
//!   password never shown
//! - `sslmode=require` encrypts and `sslmode=disable` does not (as the
//!   server sees it); `verify-ca`/`verify-full` check the certificate
//! - the `PG*` variables fill in what the URL leaves out, and the URL wins
//! - an idle worker is woken by `NOTIFY` at once; `worker --poll` does not
//!   `LISTEN`

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A task that succeeds at once.
fn quick(env: &Env) -> std::path::PathBuf {
    env.script(
        "quick.sh",
        &task_script(
            "{}",
            "cat >/dev/null\necho '{\"status\":1,\"reason\":\"ok\"}'",
        ),
    )
}

fn pg(env: &Env) -> &PgDb {
    env.pg().expect("a PostgreSQL env")
}

/// `manage_tasks ARGS` with `TASK_STORE=store`, no `PG*` variable of the
/// caller's leaking in.
fn with_store(env: &Env, store: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = env.cmd();
    for var in PG_VARS {
        cmd.env_remove(var);
    }
    cmd.env("TASK_STORE", store).args(args).output().unwrap()
}

const PG_VARS: [&str; 9] = [
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
];

/// Asserts `out` failed with exit code 2, saying `says` on stderr.
fn refused(out: &std::process::Output, says: &str) {
    let (o, e) = (stdout(out), stderr(out));
    assert_eq!(out.status.code(), Some(2), "{o}\n{e}");
    assert!(e.contains(says), "{says}:\n{o}\n{e}");
    assert!(!e.contains("panicked"), "{e}");
}

/// Asserts `secret` is in neither of `out`'s streams.
fn never_shows(out: &std::process::Output, secret: &str) {
    let (o, e) = (stdout(out), stderr(out));
    assert!(
        !o.contains(secret) && !e.contains(secret),
        "`{secret}` shown:\n{o}\n{e}"
    );
}

/// The user, host and port of the test server's admin URL.
fn server() -> (String, String, String) {
    let admin = pg_admin_url();
    let rest = admin.split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (u.split(':').next().unwrap_or_default(), h),
        None => ("postgres", authority),
    };
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    (user.to_owned(), host.to_owned(), port.to_owned())
}

#[test]
fn ten_registers_at_once_on_a_new_database_migrate_it_once() {
    let env = Env::new("postgres");
    let script = quick(&env);
    let children: Vec<_> = (0..10)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_manage_tasks"))
                .env("TASK_STORE", &env.store)
                .env("HOME", env.dir.path())
                .args(["register", "--name", &format!("task{i}"), "--location"])
                .arg(&script)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "register {i}: {err}");
        assert!(
            !err.to_lowercase().contains("error") && !err.contains("warning"),
            "register {i} said: {err}"
        );
    }
    let listed = env.json(&["list", "--json"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 10, "{listed}");
    // One row, one version: nobody migrated twice or left a half-done schema.
    let rows = pg(&env).psql("SELECT version FROM task_executor.schema_version");
    let versions: Vec<i64> = rows.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(versions.len(), 1, "{rows}");
    let version = versions[0];
    assert!(version >= 1, "{rows}");
    // And it is this build's: one more is "newer than this build supports (it)".
    pg(&env).psql(&format!(
        "UPDATE task_executor.schema_version SET version = {}",
        version + 1
    ));
    let out = env.cmd().args(["list"]).output().unwrap();
    refused(
        &out,
        &format!(
            "has schema version {}, newer than this build supports ({version})",
            version + 1
        ),
    );
}

#[test]
fn a_newer_schema_is_refused_and_nothing_is_changed() {
    let env = Env::new("postgres");
    let script = quick(&env);
    env.register("t", &script);
    let id = env.submit_many("t", 1, "{}").remove(0);
    pg(&env).psql("UPDATE task_executor.schema_version SET version = 999");
    let before = pg(&env).dump();
    let says = "has schema version 999, newer than this build supports (";
    let upgrade = "); upgrade manage_tasks (the store was not modified)";
    let location = script.to_str().unwrap();
    for (args, json) in [
        (&["list"][..], true),
        (&["show", "t"], true),
        (&["register", "u", "--location", location], true),
        (&["register", "t", "--force", "--location", location], true),
        (&["unregister", "t"], false),
        (&["execute", "t"], true),
        (&["submit", "t"], true),
        (&["runs", "list"], true),
        (&["runs", "show", &id], true),
        (&["runs", "cancel", &id], true),
        (&["runs", "prune", "--keep", "0"], true),
        (&["schedule", "add", "t", "--cron", "* * * * *"], true),
        (&["worker", "--until-idle"], false),
        (&["workers", "list"], true),
    ] {
        let out = env.cmd().args(args).output().unwrap();
        refused(&out, says);
        assert!(stderr(&out).contains(upgrade), "{args:?}: {}", stderr(&out));
        if json {
            let out = env.cmd().args(args).arg("--json").output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
            let error = &json_stdout(&out)["error"];
            assert_eq!(error["kind"], "store", "{args:?}");
            assert!(error["message"].as_str().unwrap().contains(says), "{error}");
        }
    }
    // MCP cannot list its tools from it, and says why.
    let (mut server, mut stdin) = env.mcp_session();
    {
        use std::io::{BufRead, Write};
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#).unwrap();
        let reply = std::io::BufReader::new(server.stdout.take().unwrap())
            .lines()
            .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
            .find(|m| m["id"] == 2)
            .expect("a reply to tools/list");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{reply}"
        );
    }
    drop(stdin);
    server.wait().unwrap();
    assert_eq!(pg(&env).dump(), before, "the database was changed");
}

#[test]
fn a_foreign_task_executor_schema_is_refused_as_not_ours() {
    let env = Env::new("postgres");
    let script = quick(&env);
    pg(&env).psql(
        "CREATE SCHEMA task_executor; \
         CREATE TABLE task_executor.jobs (id int PRIMARY KEY, what text); \
         INSERT INTO task_executor.jobs VALUES (1, 'theirs');",
    );
    let before = pg(&env).dump();
    let location = script.to_str().unwrap();
    for args in [
        &["list"][..],
        &["register", "t", "--location", location],
        &["submit", "t"],
        &["runs", "list"],
        &["worker", "--until-idle"],
    ] {
        let out = env.cmd().args(args).output().unwrap();
        refused(
            &out,
            "is not a task-executor store: its schema `task_executor` holds table `jobs` \
             but no `task_executor.schema_version` table",
        );
    }
    let out = env.cmd().args(["list", "--json"]).output().unwrap();
    assert_eq!(json_stdout(&out)["error"]["kind"], "store");
    assert_eq!(pg(&env).dump(), before, "the database was changed");
}

#[test]
fn bad_urls_and_unreachable_servers_are_clear_errors_without_the_password() {
    let env = Env::new("db");
    // A closed port: bound, then released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let closed = format!("postgres://ada:hunter2@127.0.0.1:{port}/tasks");
    let cases: [(String, &str); 4] = [
        (
            "postgres://ada:hunter2@127.0.0.1/tasks?sslmode=sometimes".into(),
            "store `postgres://ada:****@127.0.0.1/tasks?sslmode=sometimes`: unknown sslmode \
             `sometimes`; use disable, prefer, require, verify-ca or verify-full",
        ),
        (
            "postgres://ada:hunter2@127.0.0.1:notaport/tasks".into(),
            "not a valid PostgreSQL URL",
        ),
        (
            closed.clone(),
            &format!("postgres store `postgres://ada:****@127.0.0.1:{port}/tasks`: "),
        ),
        (
            "postgres://ada:hunter2@127.0.0.1/tasks?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"
                .into(),
            "/nonexistent/ca.pem",
        ),
    ];
    for (url, says) in &cases {
        for args in [&["list"][..], &["runs", "list"], &["submit", "t"]] {
            let t0 = Instant::now();
            let out = with_store(&env, url, args);
            refused(&out, says);
            never_shows(&out, "hunter2");
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{url}: {:?}",
                t0.elapsed()
            );
        }
        let out = with_store(&env, url, &["list", "--json"]);
        assert_eq!(out.status.code(), Some(2), "{url}");
        let doc = json_stdout(&out);
        let message = doc["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{url}: {doc}");
        assert!(!out.stdout.windows(7).any(|w| w == b"hunter2"), "{doc}");
    }
    // A refused connection says so.
    let out = with_store(&env, &closed, &["list"]);
    assert!(
        stderr(&out).to_lowercase().contains("connection refused"),
        "{}",
        stderr(&out)
    );
    // A bad URL is a usage error; an unreachable server a store error.
    let kind = |url: &str| {
        json_stdout(&with_store(&env, url, &["list", "--json"]))["error"]["kind"].clone()
    };
    assert_eq!(kind(&cases[0].0), "usage");
    assert_eq!(kind(&closed), "store");

    // A password from PGPASSWORD is not shown either.
    let out = env
        .cmd()
        .env("PGPASSWORD", "hunter2")
        .env(
            "TASK_STORE",
            format!("postgres://ada@127.0.0.1:{port}/tasks"),
        )
        .arg("list")
        .output()
        .unwrap();
    refused(&out, "postgres store `postgres://ada@127.0.0.1:");
    never_shows(&out, "hunter2");
}

/// Whether the server sees the connections of `app` (its
/// `application_name`) on this database as encrypted; waits for one.
fn ssl_of(env: &Env, app: &str) -> Vec<String> {
    let sql = format!(
        "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = current_database() AND a.application_name = '{app}'"
    );
    let mut seen = String::new();
    wait_until(10.0, &format!("a connection of {app}"), || {
        seen = pg(env).psql(&sql);
        !seen.trim().is_empty()
    });
    seen.lines().map(str::to_owned).collect()
}

#[test]
fn sslmode_require_encrypts_and_disable_does_not() {
    let env = Env::new("postgres");
    let script = quick(&env);
    for (mode, encrypted) in [("require", "t"), ("disable", "f"), ("prefer", "t")] {
        let app = format!("te-{mode}");
        let url = format!(
            "{}?sslmode={mode}&application_name={app}",
            env.store.display()
        );
        let name = format!("t-{mode}");
        let out = with_store(
            &env,
            &url,
            &[
                "-q",
                "register",
                &name,
                "--location",
                script.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        let out = with_store(&env, &url, &["-q", "execute", &name, "--json"]);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        // A worker stays connected: the server says how.
        let mut worker = env.spawn(&["-q", "worker", "--store", &url]);
        let ssl = ssl_of(&env, &app);
        signal(worker.id(), "-TERM");
        assert!(worker.wait().unwrap().success());
        assert!(ssl.iter().all(|s| s == encrypted), "{mode}: ssl {ssl:?}");
    }
    let runs = env.all_runs();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r["state"] == "completed"), "{runs:?}");
}

/// `verify-ca` checks the certificate against `sslrootcert`, `verify-full`
/// its name too: the server's own certificate (self-signed, for
/// `localhost`) as the root passes both by name, and `verify-full` refuses
/// it for `127.0.0.1`. Only the given roots are trusted, as in libpq: with
/// another CA's certificate as the root, or none, the server is refused,
/// even where the system trusts its certificate (this machine's does).
#[test]
fn verify_modes_trust_only_sslrootcert_and_check_the_name() {
    let env = Env::new("postgres");
    let cert = pg(&env).psql("SHOW ssl_cert_file").trim().to_owned();
    assert!(
        std::path::Path::new(&cert).is_file(),
        "the server's certificate `{cert}` (ssl_cert_file) is not readable here"
    );
    let db = pg(&env).name.clone();
    let (_, _, port) = server();
    let url = |host: &str, mode: &str, root: &str| {
        format!("postgres://postgres@{host}:{port}/{db}?sslmode={mode}&sslrootcert={root}")
    };
    for (host, mode) in [("localhost", "verify-full"), ("127.0.0.1", "verify-ca")] {
        let out = with_store(&env, &url(host, mode, &cert), &["runs", "list", "--json"]);
        assert!(out.status.success(), "{host} {mode}: {}", stderr(&out));
    }
    let out = with_store(&env, &url("127.0.0.1", "verify-full", &cert), &["list"]);
    refused(&out, "certificate not valid for name \"127.0.0.1\"");

    // Another CA: the server's certificate is not its.
    let other = env.dir.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=other-ca", "-keyout"])
        .arg(env.dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .expect("openssl makes this test's other CA");
    assert!(made.status.success(), "{}", stderr(&made));
    for mode in ["verify-ca", "verify-full"] {
        let out = with_store(
            &env,
            &url("localhost", mode, other.to_str().unwrap()),
            &["list"],
        );
        refused(&out, "invalid peer certificate: UnknownIssuer");
    }
    // No root at all (no sslrootcert, no ~/.postgresql/root.crt): said before connecting.
    let bare = format!("postgres://postgres@localhost:{port}/{db}?sslmode=verify-ca");
    let out = with_store(&env, &bare, &["list"]);
    refused(
        &out,
        "needs the CA that signed the server's certificate: set sslrootcert=",
    );
    // The system's roots only by name, and only with the name checked.
    let out = with_store(&env, &url("localhost", "verify-ca", "system"), &["list"]);
    refused(&out, "sslrootcert=system needs sslmode=verify-full");
}

#[test]
fn pg_variables_fill_in_what_the_url_leaves_out() {
    let env = Env::new("postgres");
    let script = quick(&env);
    let db = pg(&env).name.clone();
    // The admin URL's server and user, as PG* variables.
    let (user, host, port) = server();
    let run = |url: &str, pgdatabase: &str, args: &[&str]| {
        let mut cmd = env.cmd();
        for var in PG_VARS {
            cmd.env_remove(var);
        }
        cmd.env("TASK_STORE", url)
            .env("PGHOST", &host)
            .env("PGPORT", &port)
            .env("PGUSER", &user)
            .env("PGDATABASE", pgdatabase)
            .args(args)
            .output()
            .unwrap()
    };
    let location = script.to_str().unwrap();
    let out = run(
        "postgres:///",
        &db,
        &["-q", "register", "from-env", "--location", location],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        "postgresql://",
        &db,
        &["-q", "execute", "from-env", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // It landed in this env's database, seen through its full URL.
    let listed = env.json(&["list", "--json"]);
    assert_eq!(listed["items"][0]["name"], "from-env", "{listed}");
    assert_eq!(env.all_runs().len(), 1);

    // What the URL says wins: PGDATABASE names a database that is not there.
    let url = format!("postgres:///{db}");
    let out = run(&url, "te_test_no_such_db", &["-q", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_stdout(&out)["items"][0]["name"], "from-env");
    let out = run("postgres:///", "te_test_no_such_db", &["list"]);
    refused(&out, "te_test_no_such_db");
}

/// The run's wait between being queued and being started, by the database's clock.
fn pickup(run: &Value) -> Duration {
    let at = |k: &str| humantime::parse_rfc3339(run[k].as_str().unwrap()).unwrap();
    at("started_at")
        .duration_since(at("queued_at"))
        .unwrap_or_default()
}

/// The queries of the connections to this database whose last statement
/// was a `LISTEN`.
fn listeners(env: &Env) -> usize {
    pg(env)
        .psql(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_idle_worker_is_woken_by_notify_and_poll_turns_listen_off() {
    let env = Env::new("postgres");
    let script = quick(&env);
    env.register("t", &script);
    // Listening (the default): each run is picked up well within the 1 s poll.
    let mut worker = env.spawn(&["-q", "worker"]);
    wait_until(10.0, "the worker to LISTEN", || listeners(&env) == 1);
    let mut waits = Vec::new();
    for _ in 0..5 {
        let out = env
            .cmd()
            .args(["-q", "submit", "t", "--wait", "--json"])
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        waits.push(pickup(&json_stdout(&out)));
    }
    signal(worker.id(), "-TERM");
    assert!(worker.wait().unwrap().success());
    waits.sort();
    assert!(
        waits[2] < Duration::from_millis(400),
        "picked up after {waits:?} (median over 400 ms: no NOTIFY?)"
    );

    // --poll: no LISTEN, only polling (as behind PgBouncer in transaction mode).
    let mut poller = env.spawn(&["-q", "worker", "--poll", "1500ms", "--id", "poller"]);
    wait_until(10.0, "the poller registered", || {
        env.json(&["workers", "list", "--json"])["items"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["id"] == "poller"))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(listeners(&env), 0, "worker --poll listens");
    let out = env
        .cmd()
        .args(["-q", "submit", "t", "--wait", "--json"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_stdout(&out)["worker"], "poller");
    signal(poller.id(), "-TERM");
    assert!(poller.wait().unwrap().success());
}
