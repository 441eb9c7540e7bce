//! A fresh PostgreSQL database per test, dropped when the test ends.
//!
//! The server is `TASK_EXECUTOR_TEST_PG` (an admin URL; default
//! `postgres://postgres@127.0.0.1:5432/postgres`). A test that cannot reach
//! it fails and says how to start it: it never passes without PostgreSQL.

use std::future::Future;

/// The admin URL the tests create their databases with.
pub(crate) fn admin_url() -> String {
    std::env::var("TASK_EXECUTOR_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for as long as this value.
pub(crate) struct TestDb {
    name: String,
    /// Its URL.
    pub url: String,
}

/// Runs `f` on a runtime of its own (tests call this from inside theirs).
fn blocking<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f)
    })
    .join()
    .expect("the admin thread")
}

async fn admin(sql: String) -> Result<(), String> {
    let url = admin_url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            format!(
                "cannot reach PostgreSQL at {} for the tests: {e}; start it with \
                 `pg_ctlcluster --skip-systemctl-redirect 15 main start`, or set \
                 TASK_EXECUTOR_TEST_PG to an admin URL",
                crate::store::redact(&url)
            )
        })?;
    tokio::spawn(conn);
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| format!("{sql}: {e}"))
}

impl TestDb {
    /// Creates a database with a unique name; panics (failing the test) if
    /// PostgreSQL cannot be reached.
    pub(crate) fn new() -> Self {
        let name = format!(
            "te_test_{}_{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        if let Err(e) = blocking(admin(format!("CREATE DATABASE {name}"))) {
            panic!("{e}");
        }
        let admin = admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = blocking(admin(sql));
    }
}
