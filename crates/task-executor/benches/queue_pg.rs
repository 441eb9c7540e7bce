//! The PostgreSQL queue's machinery alone, no process spawned: N runs are
//! queued, then 2 concurrent "workers" (tokio tasks, each with its own
//! [`Store`] handle and connection) claim and finish them
//! ([`Store::claim`] + [`Store::finish`] with a completed outcome) until
//! the queue is empty: claiming 1 at a time, then 8; and 1 at a time again
//! with ten times as many runs queued, of which N are taken (a claim's cost
//! must not grow with the queue). Prints runs/s for each; the baseline
//! (`pgbench -N`, 2 clients, same database) is run by `bench/postgres.sh`,
//! which alternates the two and prints the ratio.
//!
//! `QUEUE_PG_URL=postgres://postgres@127.0.0.1/DB cargo bench -p task-executor
//! --bench queue_pg -- --bench [RUNS]` (default 2000 runs per variant). Each
//! variant starts from a fresh schema: the bench drops and recreates
//! `task_executor` in that database (never anything else), so give it a
//! database of its own.
//!
//! A custom harness, not criterion: one measurement is a whole drain of a
//! queue from a known state (the queue must be refilled between samples,
//! and the figure is a rate over many claims by two concurrent workers, not
//! the time of one call), and the script alternates it with pgbench round
//! by round.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use task_executor::history::{LogBatch, RunState};
use task_executor::store::{ClaimFilter, Finish};
use task_executor::{InsertMode, Outcome, Store, StoreSpec, Task, TaskName, TaskResult};

/// Concurrent workers, as in the end-to-end benchmark.
const WORKERS: usize = 2;

const LEASE: Duration = Duration::from_secs(60);

fn task() -> Task {
    Task {
        name: TaskName::new("noop").unwrap(),
        location: "/bin/true".into(),
        description: None,
        inputs: json!({"type": "object"}),
        outputs: None,
        timeout: None,
        policy: Default::default(),
        formats: Default::default(),
    }
}

fn completed(attempt: u32) -> Finish {
    Finish {
        state: RunState::Completed,
        outcome: Outcome::Completed {
            result: TaskResult {
                status: 1,
                reason: "ok".into(),
                payload: serde_json::Value::Null,
            },
        },
        exit: Some(task_executor::ExitInfo::Code { code: 0 }),
        attempt,
        logs: LogBatch::default(),
    }
}

/// Drops our schema (and only it) so that the next store call migrates a fresh one.
async fn reset(url: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {}: {e}; start it with `pg_ctlcluster \
                 --skip-systemctl-redirect 15 main start` (or point QUEUE_PG_URL at a \
                 database of its own)",
                task_executor::store::redact(url)
            )
        });
    let conn = tokio::spawn(conn);
    client
        .batch_execute("DROP SCHEMA IF EXISTS task_executor CASCADE")
        .await
        .expect("drop the schema task_executor");
    drop(client);
    let _ = conn.await;
}

/// One worker: claims up to `k` runs at a time and finishes each, until a
/// claim finds nothing or the workers have taken `budget` runs between them.
/// Returns how many runs it finished.
async fn drain(store: Store, id: String, k: usize, budget: Arc<AtomicUsize>) -> u64 {
    let filter = ClaimFilter::default();
    let mut done = 0;
    loop {
        // Reserve up to `k` of the budget; give back what the claim did not take.
        let Ok(before) = budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
            (b > 0).then(|| b - b.min(k))
        }) else {
            return done;
        };
        let want = before.min(k);
        let claimed = store.claim(&id, want, LEASE, &filter).await.expect("claim");
        budget.fetch_add(want - claimed.len(), Ordering::SeqCst);
        if claimed.is_empty() {
            return done;
        }
        for c in claimed {
            assert!(
                store
                    .finish(&c.lease(), &completed(c.attempt))
                    .await
                    .expect("finish"),
                "lease of {} lost",
                c.id
            );
            done += 1;
        }
    }
}

/// Queues `queued` runs on a fresh schema, then has [`WORKERS`] workers
/// claim `k` at a time until `runs` are done (or the queue is empty);
/// runs/s of the drain.
async fn measure(spec: &StoreSpec, url: &str, queued: usize, runs: usize, k: usize) -> f64 {
    reset(url).await;
    let admin = Store::open(spec);
    let task = task();
    admin
        .insert(&task, InsertMode::Replace)
        .await
        .expect("register");
    let batch: Vec<_> = (0..queued)
        .map(|_| task_executor::queue::new_run(&task, &json!({}), "bench"))
        .collect();
    admin.enqueue(&batch).await.expect("enqueue");
    // Settle the new rows (visibility map, statistics) as a queue that has
    // been running a while would be.
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);
    client
        .batch_execute("VACUUM ANALYZE task_executor.runs")
        .await
        .expect("vacuum");
    drop(client);
    let _ = conn.await;

    // Each worker's own handle, connected before the clock starts.
    let mut handles = Vec::new();
    for _ in 0..WORKERS {
        let s = Store::open_sized(spec, 1);
        s.now().await.expect("connect");
        handles.push(s);
    }
    let budget = Arc::new(AtomicUsize::new(runs));
    let start = Instant::now();
    let workers: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(drain(s, format!("bench-{i}"), k, budget.clone())))
        .collect();
    let mut done = 0;
    for w in workers {
        done += w.await.expect("worker");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(done, runs as u64, "as many runs finished as asked");
    let left = admin.active().await.expect("active");
    assert_eq!(
        (left.due, left.running),
        ((queued - runs) as u64, 0),
        "the rest is still queued"
    );
    runs as f64 / secs
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` and nextest run bench targets without
    // `--bench`: there is nothing to test here.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let runs: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(2000);
    let Ok(url) = std::env::var("QUEUE_PG_URL") else {
        eprintln!(
            "queue_pg: set QUEUE_PG_URL to a database of its own (bench/postgres.sh creates \
             one), e.g. postgres://postgres@127.0.0.1:5432/te_bench"
        );
        std::process::exit(2);
    };
    let spec = StoreSpec::parse(&url).expect("QUEUE_PG_URL is a postgres:// URL");
    // One line per variant: its name and runs/s, for the script to read.
    // `deep`: the same drain with ten times as many runs queued behind it
    // (the rate of a claim must not depend on the queue's length).
    for (name, queued, k) in [
        ("claim-1", runs, 1),
        ("claim-8", runs, 8),
        ("claim-1-deep", runs * 10, 1),
    ] {
        let rate = measure(&spec, &url, queued, runs, k).await;
        println!("{name}\t{rate:.1}");
    }
}
