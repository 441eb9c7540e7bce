//! What sending each statement as the unnamed one (`query_typed`, as the
//! PostgreSQL store does: `store/postgres/sql.rs`) costs against the two
//! ways the store used before: a named statement prepared once per
//! connection and reused (`prepare_cached`: the claim, heartbeats, inserts
//! of runs and logs, finish), and one prepared for each call (`query(&str)`
//! with parameters: prepare, run, close; every other call). On the queue's
//! hottest statements: the claim's candidate pick (a join and a subquery,
//! planned at each call when unnamed), a heartbeat (an `UPDATE … FROM
//! unnest(…)`), a task lookup by name and the `INSERT` of a queued run (one
//! per run `submit` queues), on a schema the library created with `QUEUED`
//! runs queued.
//!
//! The three ways alternate call by call (each call in a transaction of
//! its own, rolled back), so that whatever else the machine does falls on
//! all alike. Prints, per statement, the median µs of a call
//! each way and the ratios cached / unnamed and prepared / unnamed (below
//! 1: unnamed is slower).
//!
//! `STATEMENTS_PG_URL=postgres://postgres@127.0.0.1/DB cargo bench -p
//! task-executor --bench statements_pg -- --bench [CALLS]` (default 2000
//! calls per statement and way). It drops and recreates the schema
//! `task_executor` in that database (nothing else): give it one of its own.

use std::time::Instant;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::json;
use task_executor::{InsertMode, Store, StoreSpec, Task, TaskName};
use tokio_postgres::NoTls;
use tokio_postgres::types::{ToSql, Type};

/// Runs queued behind the statements.
const QUEUED: usize = 10_000;

const PICK: &str = "SELECT r.id, r.task, t.concurrency FROM task_executor.runs r \
    LEFT JOIN task_executor.tasks t ON t.name = r.task \
    WHERE r.state = 'queued' AND r.available_at <= task_executor.now_ms() \
      AND NOT (r.task = ANY($2)) AND r.task <> ALL($4) \
      AND (t.tags IS NULL OR t.tags::jsonb <@ to_jsonb($3::text[])) \
      AND (t.concurrency IS NULL OR t.concurrency > \
           (SELECT count(*) FROM task_executor.runs x \
            WHERE x.task = r.task AND x.state = 'running')) \
    ORDER BY r.priority DESC, r.available_at, r.seq \
    LIMIT $1 FOR UPDATE OF r SKIP LOCKED";

const HEARTBEAT: &str = "UPDATE task_executor.runs r \
    SET lease_until = task_executor.now_ms() + $3 \
    FROM unnest($1::text[], $2::bigint[]) AS l(id, fence) \
    WHERE r.id = l.id AND r.fence = l.fence AND r.state = 'running' \
    RETURNING r.id, r.fence, r.cancel_requested";

const TASK: &str = "SELECT name, location, description, inputs, outputs, timeout_ms, retries, \
    backoff_ms, retry_on_status, concurrency, priority, formats, tags \
    FROM task_executor.tasks WHERE name = $1";

const INSERT: &str = "INSERT INTO task_executor.runs (id, task, args, secret_args, caller, \
    state, priority, attempt, max_attempts, fence, worker, lease_until, timeout_ms, backoff_ms, \
    retry_on_status, queued_at, available_at, started_at, schedule_id, inline, task_rev) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
    $19, $20, $21)";

/// The values of `params`, as `query` takes them.
fn values(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|(v, _)| &**v as _).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Owned parameters of one call, with their types.
type Params = Vec<(Box<dyn ToSql + Sync + Send>, Type)>;

/// `calls` calls of `sql` each way, alternating, with the parameters
/// `params(i)` makes for call `i`; the median µs of a call: cached, prepared
/// for the call (`query(&str)`: a named statement, prepared, run, closed),
/// unnamed.
// The named, cached statement is the baseline measured here.
#[allow(clippy::disallowed_methods)]
async fn compare(
    pool: &Pool,
    sql: &str,
    params: &dyn Fn(usize) -> Params,
    calls: usize,
) -> (f64, f64, f64) {
    let cached = pool.get().await.expect("a connection");
    let unnamed = pool.get().await.expect("a connection");
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..calls + 20 {
        let (first, second, third) = (params(3 * i), params(3 * i + 1), params(3 * i + 2));
        let typed: Vec<(&(dyn ToSql + Sync), Type)> =
            second.iter().map(|(v, t)| (&**v as _, t.clone())).collect();
        // Each call in a transaction of its own, rolled back (untimed), as
        // the claim and a batch's inserts run: no commit's flush in the
        // figures, nothing kept, no row left locked for the next call.
        cached.batch_execute("BEGIN").await.expect("begin");
        let t = Instant::now();
        let stmt = cached.prepare_cached(sql).await.expect("prepare");
        cached.query(&stmt, &values(&first)).await.expect("cached");
        let cached_us = t.elapsed().as_secs_f64() * 1e6;
        cached.batch_execute("ROLLBACK").await.expect("rollback");
        cached.batch_execute("BEGIN").await.expect("begin");
        let t = Instant::now();
        cached.query(sql, &values(&third)).await.expect("prepared");
        let prepared_us = t.elapsed().as_secs_f64() * 1e6;
        cached.batch_execute("ROLLBACK").await.expect("rollback");
        unnamed.batch_execute("BEGIN").await.expect("begin");
        let t = Instant::now();
        unnamed.query_typed(sql, &typed).await.expect("unnamed");
        let unnamed_us = t.elapsed().as_secs_f64() * 1e6;
        unnamed.batch_execute("ROLLBACK").await.expect("rollback");
        // The first calls warm both connections (and prepare the cached one).
        if i >= 20 {
            a.push(cached_us);
            b.push(prepared_us);
            c.push(unnamed_us);
        }
    }
    (median(a), median(b), median(c))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo test --all-targets` and nextest run bench targets without
    // `--bench`: there is nothing to test here.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let calls: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(2000);
    let Ok(url) = std::env::var("STATEMENTS_PG_URL") else {
        eprintln!(
            "statements_pg: set STATEMENTS_PG_URL to a database of its own, e.g. \
             postgres://postgres@127.0.0.1:5432/te_bench"
        );
        std::process::exit(2);
    };
    let manager = Manager::from_config(
        url.parse().expect("STATEMENTS_PG_URL is a postgres:// URL"),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(2).build().expect("a pool");
    pool.get()
        .await
        .expect("connect")
        .batch_execute("DROP SCHEMA IF EXISTS task_executor CASCADE")
        .await
        .expect("drop the schema");

    let store = Store::open(&StoreSpec::parse(&url).expect("a store URL"));
    let task = Task {
        name: TaskName::new("noop").unwrap(),
        location: "/bin/true".into(),
        description: None,
        inputs: json!({"type": "object"}),
        outputs: None,
        timeout: None,
        policy: Default::default(),
        formats: Default::default(),
    };
    store
        .insert(&task, InsertMode::Replace)
        .await
        .expect("register");
    let runs: Vec<_> = (0..QUEUED)
        .map(|_| task_executor::queue::new_run(&task, &json!({}), "bench"))
        .collect();
    store.enqueue(&runs).await.expect("enqueue");
    pool.get()
        .await
        .expect("connect")
        .batch_execute("VACUUM ANALYZE task_executor.runs")
        .await
        .expect("vacuum");

    fn one<T: ToSql + Sync + Send + 'static>(
        v: T,
        t: Type,
    ) -> (Box<dyn ToSql + Sync + Send>, Type) {
        (Box::new(v), t)
    }
    let no_tasks = || one(Vec::<String>::new(), Type::TEXT_ARRAY);
    let pick = |_| vec![one(8i64, Type::INT8), no_tasks(), no_tasks(), no_tasks()];
    let heartbeat = |_| {
        let ids: Vec<String> = (0..4).map(|i| format!("absent-{i}")).collect();
        vec![
            one(ids, Type::TEXT_ARRAY),
            one(vec![1i64; 4], Type::INT8_ARRAY),
            one(30_000i64, Type::INT8),
        ]
    };
    let get = |_| vec![one("noop", Type::TEXT)];
    // A run as `submit` inserts it, a new id each call.
    let insert = |i: usize| {
        let text = |v: &str| one(v.to_owned(), Type::TEXT);
        let int = |v: i64| one(v, Type::INT8);
        let none_int = || one(None::<i64>, Type::INT8);
        let none_text = || one(None::<String>, Type::TEXT);
        vec![
            text(&format!("bench-{i}")),
            text("noop"),
            text("{}"),
            none_text(),
            text("bench"),
            text("queued"),
            int(0),
            int(0),
            int(1),
            int(0),
            none_text(),
            none_int(),
            none_int(),
            none_int(),
            one(false, Type::BOOL),
            int(1),
            int(1),
            none_int(),
            none_text(),
            one(false, Type::BOOL),
            text("rev"),
        ]
    };
    type Case<'a> = (&'a str, &'a str, &'a dyn Fn(usize) -> Params);
    let cases: [Case; 4] = [
        ("claim-pick", PICK, &pick),
        ("heartbeat", HEARTBEAT, &heartbeat),
        ("task-get", TASK, &get),
        ("insert-run", INSERT, &insert),
    ];
    println!("statement\tcached_us\tprepared_us\tunnamed_us\tcached/unnamed\tprepared/unnamed");
    for (label, sql, params) in cases {
        let (cached, prepared, unnamed) = compare(&pool, sql, params, calls).await;
        println!(
            "{label}\t{cached:.0}\t{prepared:.0}\t{unnamed:.0}\t{:.2}\t{:.2}",
            cached / unnamed,
            prepared / unnamed
        );
    }
}
