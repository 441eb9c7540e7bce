//! `runs list` on a store holding 1 000 000 runs: the first page, a deep keyset
//! page and filtered pages, against the same queries on an empty store.
//!
//! `cargo bench -p task-executor --bench runs_list` (set `RUNS_DB=/path/x.db`
//! to keep the generated database, e.g. to time the CLI on it; `RUNS=N` to
//! change the row count).

use std::time::{Duration, Instant};

use serde_json::json;
use task_executor::history::{Cursor, RunFilter, RunState, now_ms};
use task_executor::{InsertMode, Store, StoreSpec, Task, TaskName};

fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<Duration> = (0..30)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

fn task(name: &str) -> Task {
    Task {
        name: TaskName::new(name).unwrap(),
        location: "/bin/true".into(),
        description: None,
        inputs: json!({"type": "object"}),
        outputs: None,
        timeout: None,
        policy: Default::default(),
        formats: Default::default(),
    }
}

async fn store_at(path: &std::path::Path) -> Store {
    let store = Store::open(&StoreSpec::Sqlite(path.to_owned()));
    for name in ["noop", "other"] {
        store
            .insert(&task(name), InsertMode::Replace)
            .await
            .unwrap();
    }
    // Creates the run tables (migration) with one real run.
    let run = task_executor::queue::new_run(&task("noop"), &json!({}), "bench");
    store.enqueue(&[run]).await.unwrap();
    store
}

fn fill(path: &std::path::Path, rows: u64) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO runs (id, task, args, caller, state, attempt, max_attempts, fence, \
                 queued_at, available_at, started_at, finished_at, outcome, seq) \
                 VALUES (?1, ?2, '{\"n\":1}', 'bench', ?3, 1, 1, 1, ?4, ?4, ?4, ?5, \
                 '{\"kind\":\"completed\",\"result\":{\"status\":1,\"reason\":\"ok\",\"payload\":null}}', ?6)",
            )
            .unwrap();
        let start = now_ms() - rows as i64 * 10;
        for i in 0..rows {
            let at = start + i as i64 * 10;
            let task = if i % 10 == 0 { "other" } else { "noop" };
            let state = if i % 100 == 0 { "failed" } else { "completed" };
            let id = format!("{:016x}-bench-{i:012}", at);
            stmt.execute(rusqlite::params![id, task, state, at, at + 3, i as i64 + 2])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("ANALYZE").unwrap();
}

struct Figures {
    first: f64,
    deep: f64,
    task: f64,
    state: f64,
}

async fn measure(store: &Store, deep: Option<Cursor>) -> Figures {
    let page = |filter: RunFilter| {
        let fut = store.list_runs(&filter);
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| rt.block_on(fut)).unwrap()
    };
    let base = RunFilter {
        limit: 50,
        ..RunFilter::default()
    };
    let first = median_ms(|| assert!(!page(base.clone()).runs.is_empty()));
    let deep = median_ms(|| {
        page(RunFilter {
            after: deep.clone(),
            ..base.clone()
        });
    });
    let task = median_ms(|| {
        page(RunFilter {
            task: Some(TaskName::new("other").unwrap()),
            ..base.clone()
        });
    });
    let state = median_ms(|| {
        page(RunFilter {
            state: Some(RunState::Failed),
            ..base.clone()
        });
    });
    Figures {
        first,
        deep,
        task,
        state,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` and nextest run bench targets without `--bench`
    // (and with `--list`): there is nothing to test here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rows: u64 = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let big_path = std::env::var_os("RUNS_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("big.db"));
    let _ = std::fs::remove_file(&big_path);
    let empty = store_at(&dir.path().join("empty.db")).await;
    let big = store_at(&big_path).await;
    let t = Instant::now();
    fill(&big_path, rows);
    let fill_s = t.elapsed().as_secs_f64();

    // A cursor 90% of the way down the newest-first order.
    let conn = rusqlite::Connection::open(&big_path).unwrap();
    let deep: Cursor = conn
        .query_row(
            "SELECT queued_at, seq FROM runs ORDER BY queued_at DESC, seq DESC LIMIT 1 OFFSET ?1",
            [(rows * 9 / 10) as i64],
            |r| {
                Ok(Cursor {
                    queued_at: r.get(0)?,
                    seq: r.get(1)?,
                })
            },
        )
        .unwrap();
    let e = measure(&empty, None).await;
    let b = measure(&big, Some(deep)).await;
    println!("runs list on {rows} runs (filled in {fill_s:.1} s), median of 30, limit 50:");
    println!("query              empty store   {rows} runs   ratio");
    for (name, e, b) in [
        ("first page", e.first, b.first),
        ("deep keyset page", e.deep, b.deep),
        ("--task (10%)", e.task, b.task),
        ("--state (1%)", e.state, b.state),
    ] {
        println!("{name:<18} {e:>8.3} ms   {b:>9.3} ms   {:>5.2}", b / e);
    }
}
