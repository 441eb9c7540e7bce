//! The conformance suite: the store contract's behaviour, written once and
//! run against every backend (River's `riverdrivertest` is the model).
//!
//! A backend joins by implementing [`Harness`] (a fresh store, handles on
//! it, a second store to copy into, and a way to move its clock) and adding one line at the bottom of
//! this file: `registry_suite!(name, harness)` for a task registry,
//! `run_store_suite!(name, harness)` for history, the queue and schedules.
//! The queue's rules ([`crate::queue`]) run on top, so these tests also
//! prove that the rules and the guards work together on that backend.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{AuditCursor, AuditFilter, NewAudit, NewToken, Scope};
use super::{
    Availability, ClaimFilter, ExportCursor, ExportLimits, ExportedRun, ExportedSchedule, Finish,
    ImportReport, InsertMode, LeaseStatus, ManualClock, NewRun, Prune, RunLookup, Store,
    StoreError, WorkerBeat,
};
use crate::history::{LogBatch, LogEntry, RunError, RunFilter, RunState};
use crate::log::Stream;
use crate::outcome::{ExitInfo, Outcome};
use crate::protocol::TaskResult;
use crate::queue::{self, CancelResult};
use crate::task::{Formats, Policy, Task, TaskName};

/// A backend under test.
pub(super) trait Harness: Send + Sync {
    /// Another handle on the same store (its own connections, where it has any).
    fn handle(&self) -> Store;
    /// A handle on a second store of the same backend, empty at first, on
    /// the same clock: where a copy goes.
    fn second(&self) -> Store;
    /// Moves the store's clock forward.
    fn advance(&self, by: Duration);
}

/// The SQLite backend, on a file in a temporary directory and a manual clock.
pub(super) struct SqliteHarness {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    clock: Arc<ManualClock>,
}

impl SqliteHarness {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conformance.db");
        Self {
            _dir: dir,
            path,
            clock: Arc::new(ManualClock::new(1_767_225_600_000)),
        }
    }
}

impl Harness for SqliteHarness {
    fn handle(&self) -> Store {
        Store::Sqlite(super::SqliteStore::with_clock(
            &self.path,
            self.clock.clone(),
        ))
    }

    fn second(&self) -> Store {
        Store::Sqlite(super::SqliteStore::with_clock(
            &self.path.with_file_name("second.db"),
            self.clock.clone(),
        ))
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// The PostgreSQL backend, on a fresh database (dropped afterwards) and a
/// manual clock in place of the database's.
pub(super) struct PgHarness {
    db: super::postgres::testdb::TestDb,
    /// Made when a test first asks for it.
    second: std::sync::OnceLock<super::postgres::testdb::TestDb>,
    clock: Arc<ManualClock>,
}

impl PgHarness {
    pub(super) fn new() -> Self {
        Self {
            db: super::postgres::testdb::TestDb::new(),
            second: std::sync::OnceLock::new(),
            clock: Arc::new(ManualClock::new(1_767_225_600_000)),
        }
    }
}

impl Harness for PgHarness {
    fn handle(&self) -> Store {
        Store::Postgres(super::PgStore::open_clocked(
            &self.db.url,
            4,
            Some(self.clock.clone()),
        ))
    }

    fn second(&self) -> Store {
        let db = self
            .second
            .get_or_init(super::postgres::testdb::TestDb::new);
        Store::Postgres(super::PgStore::open_clocked(
            &db.url,
            4,
            Some(self.clock.clone()),
        ))
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// The YAML backend (a registry only).
pub(super) struct YamlHarness {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl YamlHarness {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.yaml");
        Self { _dir: dir, path }
    }
}

impl Harness for YamlHarness {
    fn handle(&self) -> Store {
        Store::Yaml(super::YamlStore::open(&self.path))
    }

    fn second(&self) -> Store {
        Store::Yaml(super::YamlStore::open(
            &self.path.with_file_name("second.yaml"),
        ))
    }

    fn advance(&self, _by: Duration) {}
}

fn name(s: &str) -> TaskName {
    TaskName::new(s).unwrap()
}

/// A task whose `pw` input is secret.
fn task(n: &str, policy: Policy) -> Task {
    Task {
        name: name(n),
        location: format!("/opt/tasks/{n}.sh").into(),
        description: None,
        inputs: json!({"type": "object", "properties": {"pw": {"type": "string", "writeOnly": true}}}),
        outputs: None,
        timeout: None,
        policy,
        formats: Formats::Assert,
    }
}

/// A task with every optional field set.
fn full_task(n: &str) -> Task {
    Task {
        description: Some("Greets someone".into()),
        outputs: Some(json!({"type": "object", "required": ["status"]})),
        timeout: Some(Duration::from_secs(90)),
        policy: Policy {
            retries: Some(3),
            backoff: Some(Duration::from_secs(2)),
            retry_on_status: true,
            concurrency: Some(4),
            priority: Some(-2),
            tags: vec!["gpu".into(), "linux".into()],
        },
        formats: Formats::Annotate,
        ..task(n, Policy::default())
    }
}

async fn registered(store: &Store, t: &Task) {
    store.insert(t, InsertMode::CreateNew).await.unwrap();
}

async fn run_of(store: &Store, id: &str) -> crate::history::RunRecord {
    match store.get_run(id).await.unwrap() {
        RunLookup::Found(r) => *r,
        other => panic!("run {id}: {other:?}"),
    }
}

fn done(attempt: u32, logs: LogBatch) -> Finish {
    Finish {
        state: RunState::Completed,
        outcome: Outcome::Completed {
            result: TaskResult {
                status: 1,
                reason: "ok".into(),
                payload: json!({"n": attempt}),
            },
        },
        exit: None,
        attempt,
        logs,
    }
}

fn failed(attempt: u32) -> Finish {
    Finish {
        state: RunState::Failed,
        outcome: Outcome::NoResult,
        exit: None,
        attempt,
        logs: LogBatch::default(),
    }
}

const LEASE: Duration = Duration::from_secs(10);

/// The filter of a worker without tags that can run every task: it takes
/// every run of a task without tags.
const UNTAGGED: ClaimFilter = ClaimFilter {
    tags: Vec::new(),
    exclude: Vec::new(),
};

// ---- the registry ------------------------------------------------------

pub(super) async fn registry_round_trip(h: &dyn Harness) {
    let store = h.handle();
    assert_eq!(store.list().await.unwrap(), vec![]);
    assert_eq!(store.get(&name("greet")).await.unwrap(), None);
    let (full, plain) = (full_task("greet"), task("alpha", Policy::default()));
    registered(&store, &full).await;
    registered(&store, &plain).await;
    let other = h.handle();
    assert_eq!(other.get(&name("greet")).await.unwrap(), Some(full.clone()));
    assert_eq!(other.get(&name("nope")).await.unwrap(), None);
    assert_eq!(
        other.list().await.unwrap(),
        vec![plain.clone(), full.clone()]
    );
    assert_eq!(store.remove(&name("greet")).await.unwrap(), full);
    assert_eq!(other.list().await.unwrap(), vec![plain]);
}

pub(super) async fn registry_refuses_a_taken_name_unless_replacing(h: &dyn Harness) {
    let store = h.handle();
    registered(&store, &task("t", Policy::default())).await;
    let err = store
        .insert(&full_task("t"), InsertMode::CreateNew)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { name } if name.as_str() == "t"),
        "{err}"
    );
    assert_eq!(
        store.get(&name("t")).await.unwrap(),
        Some(task("t", Policy::default()))
    );
    store
        .insert(&full_task("t"), InsertMode::Replace)
        .await
        .unwrap();
    assert_eq!(store.list().await.unwrap(), vec![full_task("t")]);
}

pub(super) async fn registry_removing_a_missing_task_is_not_found(h: &dyn Harness) {
    let store = h.handle();
    let err = store.remove(&name("ghost")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { name } if name.as_str() == "ghost"),
        "{err}"
    );
    registered(&store, &task("a", Policy::default())).await;
    assert!(matches!(
        store.remove(&name("ghost")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.list().await.unwrap().len(), 1);
}

pub(super) async fn registry_concurrent_writers_all_land(h: &dyn Harness) {
    let writes = (0..30).map(|i| {
        let store = h.handle();
        async move {
            store
                .insert(&full_task(&format!("task{i:02}")), InsertMode::CreateNew)
                .await
        }
    });
    for result in futures_join_all(writes).await {
        result.unwrap();
    }
    let names: Vec<String> = h
        .handle()
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    let want: Vec<String> = (0..30).map(|i| format!("task{i:02}")).collect();
    assert_eq!(names, want);
}

/// Runs every future at once (each store call goes to its own thread).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

// ---- runs and the queue ------------------------------------------------

pub(super) async fn queued_runs_keep_masked_args_and_are_found_by_prefix(h: &dyn Harness) {
    let store = h.handle();
    let t = task("t", Policy::default());
    registered(&store, &t).await;
    let run = queue::new_run(&t, &json!({"pw": "hunter2", "x": 1}), "me");
    let queued_at = store.enqueue(std::slice::from_ref(&run)).await.unwrap();
    let rec = run_of(&store, &run.id).await;
    assert_eq!(rec.args, json!({"pw": "********", "x": 1}));
    assert_eq!(
        (rec.state, rec.attempt, rec.max_attempts),
        (RunState::Queued, 0, 1)
    );
    assert_eq!((rec.queued_at, rec.available_at), (queued_at, queued_at));
    assert_eq!(rec.caller, "me");
    // The worker still gets the real arguments, and the task's revision.
    let claimed = store.claim("w", 1, LEASE, &UNTAGGED).await.unwrap();
    assert_eq!(claimed[0].args, json!({"pw": "hunter2", "x": 1}));
    assert_eq!(claimed[0].task_rev.as_deref(), Some(t.revision().as_str()));

    assert_eq!(run_of(&store, &run.id[..8]).await.id, run.id);
    assert_eq!(
        run_of(&store, &run.id.to_uppercase()[..12]).await.id,
        run.id
    );
    assert_eq!(
        store.get_run(&run.id[..7]).await.unwrap(),
        RunLookup::Missing
    );
    assert_eq!(
        store.get_run("ffffffff-none").await.unwrap(),
        RunLookup::Missing
    );
    let mut twins = vec![];
    for i in 0..3 {
        let mut r = queue::new_run(&t, &json!({}), "me");
        r.id = format!("abcdef01-0000-4000-8000-00000000000{i}");
        twins.push(r);
    }
    store.enqueue(&twins).await.unwrap();
    assert_eq!(
        store.get_run("abcdef01").await.unwrap(),
        RunLookup::Ambiguous { count: 3 }
    );
    assert_eq!(
        run_of(&store, "abcdef01-0000-4000-8000-000000000002")
            .await
            .id,
        twins[2].id
    );
}

/// A batch of more runs than one statement carries (PostgreSQL inserts
/// 1000 to a statement) lands whole, each run with its own fields, and is
/// claimed in the order it was queued.
pub(super) async fn a_large_batch_lands_whole_and_in_order(h: &dyn Harness) {
    let store = h.handle();
    let t = task("t", Policy::default());
    registered(&store, &t).await;
    let runs: Vec<_> = (0..2345)
        .map(|i| {
            let mut r = queue::new_run(&t, &json!({ "i": i }), &format!("caller-{i}"));
            r.timeout = (i % 2 == 0).then(|| Duration::from_millis(1000 + i));
            r
        })
        .collect();
    store.enqueue(&runs).await.unwrap();
    assert_eq!(store.active().await.unwrap().due, 2345);
    for i in [0usize, 999, 1000, 1001, 2344] {
        let got = run_of(&store, &runs[i].id).await;
        assert_eq!(got.args, json!({ "i": i }), "run {i}");
        assert_eq!(got.caller, format!("caller-{i}"), "run {i}");
    }
    let claimed = store.claim("w", 3, LEASE, &UNTAGGED).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [&runs[0].id, &runs[1].id, &runs[2].id]);
    assert_eq!(claimed[0].timeout, Some(Duration::from_millis(1000)));
    assert_eq!(claimed[1].timeout, None);
}

pub(super) async fn a_claim_bumps_the_fence_and_a_stale_attempt_cannot_write(h: &dyn Harness) {
    let (a, b) = (h.handle(), h.handle());
    let t = task(
        "t",
        Policy {
            retries: Some(1),
            ..Policy::default()
        },
    );
    registered(&a, &t).await;
    let run = queue::new_run(&t, &json!({}), "me");
    a.enqueue(std::slice::from_ref(&run)).await.unwrap();
    let first = a.claim("A", 5, LEASE, &UNTAGGED).await.unwrap();
    assert_eq!((first.len(), first[0].attempt, first[0].fence), (1, 1, 1));
    assert!(b.claim("B", 5, LEASE, &UNTAGGED).await.unwrap().is_empty());

    // A stalls past its lease; B takes over with a newer fence.
    h.advance(LEASE + Duration::from_millis(1));
    assert_eq!(queue::requeue_expired(&b).await.unwrap(), 1);
    let second = b.claim("B", 5, LEASE, &UNTAGGED).await.unwrap();
    assert_eq!((second[0].attempt, second[0].fence), (2, 2));
    let (stale, held) = (first[0].lease(), second[0].lease());
    assert_eq!(
        a.heartbeat(&[stale.clone(), held.clone()], LEASE)
            .await
            .unwrap(),
        [LeaseStatus::Lost, LeaseStatus::Held]
    );
    let line = |seq, text: &str| LogEntry {
        seq,
        stream: Stream::Stdout,
        text: text.into(),
        truncated: false,
    };
    let stale_logs = LogBatch {
        lines: vec![line(0, "from the stale attempt")],
        ..LogBatch::default()
    };
    assert!(!a.record_logs(&stale, 1, &stale_logs).await.unwrap());
    assert!(
        !a.finish(&stale, &done(1, stale_logs.clone()))
            .await
            .unwrap()
    );
    let note = RunError::new("retrying", "x");
    assert!(
        !a.retry(&stale, &failed(1), Duration::ZERO, &note)
            .await
            .unwrap()
    );
    assert!(!a.release(&stale).await.unwrap());
    assert!(a.run_logs(&run.id, 1, 0).await.unwrap().is_empty());

    let logs = LogBatch {
        lines: vec![line(0, "from attempt 2")],
        ..LogBatch::default()
    };
    assert!(b.finish(&held, &done(2, logs)).await.unwrap());
    let rec = run_of(&a, &run.id).await;
    assert_eq!(
        (rec.state, rec.attempt, rec.worker.as_deref()),
        (RunState::Completed, 2, Some("B"))
    );
    assert_eq!(
        rec.outcome.unwrap().result().unwrap().payload,
        json!({"n": 2})
    );
    let stored: Vec<String> = a
        .run_logs(&run.id, 2, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(stored, ["from attempt 2"]);
    // The finished run cannot be written to either.
    assert_eq!(
        a.heartbeat(std::slice::from_ref(&held), LEASE)
            .await
            .unwrap(),
        [LeaseStatus::Lost]
    );
    assert!(
        !a.finish(&held, &done(2, LogBatch::default()))
            .await
            .unwrap()
    );
}

pub(super) async fn lapsed_leases_requeue_until_attempts_are_used_up(h: &dyn Harness) {
    let store = h.handle();
    let t = task("t", Policy::default());
    registered(&store, &t).await;
    let run = queue::new_run(&t, &json!({}), "me");
    store.enqueue(std::slice::from_ref(&run)).await.unwrap();
    for attempt in 1..=queue::LEASE_ATTEMPTS {
        let claimed = store.claim("w", 1, LEASE, &UNTAGGED).await.unwrap();
        assert_eq!(claimed.len(), 1, "attempt {attempt}");
        assert_eq!(claimed[0].attempt, attempt);
        // Not lapsed yet: nothing to settle.
        assert_eq!(queue::requeue_expired(&store).await.unwrap(), 0);
        h.advance(LEASE + Duration::from_millis(1));
        assert_eq!(queue::requeue_expired(&store).await.unwrap(), 1);
    }
    let rec = run_of(&store, &run.id).await;
    assert_eq!(rec.state, RunState::Failed);
    let error = rec.error.unwrap();
    assert_eq!(error.kind, "lease_lost");
    assert!(error.message.contains("no attempts left"), "{error:?}");
    assert!(
        store
            .claim("w", 1, LEASE, &UNTAGGED)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(super) async fn an_inline_run_whose_executor_died_fails_and_is_never_rerun(h: &dyn Harness) {
    let store = h.handle();
    let t = task(
        "t",
        Policy {
            retries: Some(5),
            ..Policy::default()
        },
    );
    registered(&store, &t).await;
    let mut run = queue::new_run(&t, &json!({}), "me");
    run.max_attempts = 1;
    let started = store.start_inline(&run, "execute-1", LEASE).await.unwrap();
    assert_eq!(started.lease.fence, 1);
    let rec = run_of(&store, &run.id).await;
    assert_eq!(
        (rec.state, rec.attempt, rec.started_at),
        (RunState::Running, 1, Some(started.at))
    );
    assert!(
        store
            .claim("w", 5, LEASE, &UNTAGGED)
            .await
            .unwrap()
            .is_empty()
    );
    h.advance(LEASE + Duration::from_millis(1));
    assert_eq!(queue::requeue_expired(&store).await.unwrap(), 1);
    let rec = run_of(&store, &run.id).await;
    assert_eq!(rec.state, RunState::Failed);
    assert_eq!(rec.error.unwrap().kind, "executor_lost");
    assert!(
        store
            .claim("w", 5, LEASE, &UNTAGGED)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(super) async fn a_retry_waits_for_its_delay(h: &dyn Harness) {
    let store = h.handle();
    let t = task(
        "t",
        Policy {
            retries: Some(2),
            ..Policy::default()
        },
    );
    registered(&store, &t).await;
    let run = queue::new_run(&t, &json!({}), "me");
    store.enqueue(std::slice::from_ref(&run)).await.unwrap();
    let c = store
        .claim("w", 1, LEASE, &UNTAGGED)
        .await
        .unwrap()
        .remove(0);
    let delay = Duration::from_secs(10);
    let note = queue::retry_note(&Outcome::NoResult, 1, 3, delay);
    assert!(
        store
            .retry(&c.lease(), &failed(1), delay, &note)
            .await
            .unwrap()
    );
    let rec = run_of(&store, &run.id).await;
    assert_eq!((rec.state, rec.attempt), (RunState::Queued, 1));
    assert_eq!(rec.error.as_ref().unwrap().kind, "retrying");
    assert_eq!(rec.outcome, Some(Outcome::NoResult));
    assert!(
        store
            .claim("w", 1, LEASE, &UNTAGGED)
            .await
            .unwrap()
            .is_empty()
    );
    let active = store.active().await.unwrap();
    assert_eq!((active.due, active.delayed, active.running), (0, 1, 0));
    h.advance(delay);
    let again = store.claim("w", 1, LEASE, &UNTAGGED).await.unwrap();
    assert_eq!((again[0].attempt, again[0].fence), (2, 2));
}

pub(super) async fn a_released_attempt_is_not_counted(h: &dyn Harness) {
    let store = h.handle();
    let t = task("t", Policy::default());
    registered(&store, &t).await;
    let run = queue::new_run(&t, &json!({}), "me");
    store.enqueue(std::slice::from_ref(&run)).await.unwrap();
    let c = store
        .claim("w", 1, LEASE, &UNTAGGED)
        .await
        .unwrap()
        .remove(0);
    assert!(store.release(&c.lease()).await.unwrap());
    let rec = run_of(&store, &run.id).await;
    assert_eq!(
        (rec.state, rec.attempt, rec.started_at),
        (RunState::Queued, 0, None)
    );
    let again = store.claim("w", 1, LEASE, &UNTAGGED).await.unwrap();
    assert_eq!((again[0].attempt, again[0].fence), (1, 2));
}

pub(super) async fn cancel_stops_queued_runs_and_asks_running_ones(h: &dyn Harness) {
    let store = h.handle();
    let t = task("t", Policy::default());
    registered(&store, &t).await;
    let runs: Vec<NewRun> = (0..3)
        .map(|_| queue::new_run(&t, &json!({}), "me"))
        .collect();
    store.enqueue(&runs).await.unwrap();
    let running = store
        .claim("w", 1, LEASE, &UNTAGGED)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(running.id, runs[0].id);

    let queued = &runs[1].id;
    assert_eq!(
        queue::cancel(&store, queued, RunState::Queued)
            .await
            .unwrap(),
        CancelResult::Cancelled
    );
    let rec = run_of(&store, queued).await;
    assert_eq!(rec.state, RunState::Cancelled);
    assert_eq!(rec.error.unwrap().kind, "cancelled");
    assert!(rec.finished_at.is_some());

    assert_eq!(
        queue::cancel(&store, &running.id, RunState::Running)
            .await
            .unwrap(),
        CancelResult::Requested
    );
    assert_eq!(
        store.heartbeat(&[running.lease()], LEASE).await.unwrap(),
        [LeaseStatus::CancelRequested]
    );
    assert!(run_of(&store, &running.id).await.cancel_requested);
    // A state seen before a worker took the run: the cancel follows it.
    let taken = store
        .claim("w", 1, LEASE, &UNTAGGED)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(taken.id, runs[2].id);
    assert_eq!(
        queue::cancel(&store, &taken.id, RunState::Queued)
            .await
            .unwrap(),
        CancelResult::Requested
    );
    assert!(
        store
            .finish(&taken.lease(), &done(1, LogBatch::default()))
            .await
            .unwrap()
    );
    assert_eq!(
        queue::cancel(&store, &taken.id, RunState::Running)
            .await
            .unwrap(),
        CancelResult::AlreadyOver(RunState::Completed)
    );
    // A cancelled run whose worker then died ends cancelled, not requeued.
    h.advance(LEASE + Duration::from_millis(1));
    assert_eq!(queue::requeue_expired(&store).await.unwrap(), 1);
    assert_eq!(run_of(&store, &running.id).await.state, RunState::Cancelled);
}

pub(super) async fn the_concurrency_cap_holds_with_concurrent_claimers(h: &dyn Harness) {
    let setup = h.handle();
    let capped = task(
        "capped",
        Policy {
            concurrency: Some(2),
            ..Policy::default()
        },
    );
    registered(&setup, &capped).await;
    let runs: Vec<NewRun> = (0..40)
        .map(|_| queue::new_run(&capped, &json!({}), "me"))
        .collect();
    setup.enqueue(&runs).await.unwrap();
    let claim_all = || {
        futures_join_all((0..8).map(|i| {
            let store = h.handle();
            async move {
                store
                    .claim(&format!("w{i}"), 5, LEASE, &UNTAGGED)
                    .await
                    .unwrap()
            }
        }))
    };
    let first: Vec<_> = claim_all().await.into_iter().flatten().collect();
    assert_eq!(
        first.len(),
        2,
        "8 claimers at once took {} runs of a task capped at 2",
        first.len()
    );
    assert_eq!(setup.active().await.unwrap().running, 2);
    assert!(
        setup
            .finish(&first[0].lease(), &done(1, LogBatch::default()))
            .await
            .unwrap()
    );
    let second: Vec<_> = claim_all().await.into_iter().flatten().collect();
    assert_eq!(second.len(), 1);
    assert_eq!(setup.active().await.unwrap().running, 2);
}

pub(super) async fn a_capped_task_does_not_hold_up_others(h: &dyn Harness) {
    let store = h.handle();
    let capped = task(
        "capped",
        Policy {
            concurrency: Some(1),
            ..Policy::default()
        },
    );
    let free = task("free", Policy::default());
    registered(&store, &capped).await;
    registered(&store, &free).await;
    let mut runs: Vec<NewRun> = (0..50)
        .map(|_| queue::new_run(&capped, &json!({}), "me"))
        .collect();
    runs.extend((0..3).map(|_| queue::new_run(&free, &json!({}), "me")));
    store.enqueue(&runs).await.unwrap();
    let got = store.claim("w", 4, LEASE, &UNTAGGED).await.unwrap();
    let names: Vec<&str> = got.iter().map(|c| c.task.as_str()).collect();
    assert_eq!(names, ["capped", "free", "free", "free"]);
}

pub(super) async fn claims_follow_priority_then_age_then_insertion_order(h: &dyn Harness) {
    let store = h.handle();
    let plain = task("plain", Policy::default());
    let urgent = task(
        "urgent",
        Policy {
            priority: Some(5),
            ..Policy::default()
        },
    );
    registered(&store, &plain).await;
    registered(&store, &urgent).await;
    // Queued in the same millisecond (the clock stands still): insertion order decides.
    let mut runs: Vec<NewRun> = (0..6)
        .map(|_| queue::new_run(&plain, &json!({}), "me"))
        .collect();
    runs.push(queue::new_run(&urgent, &json!({}), "me"));
    store.enqueue(&runs).await.unwrap();
    let mut order = vec![];
    while let Some(c) = store.claim("w", 1, LEASE, &UNTAGGED).await.unwrap().pop() {
        order.push(c.id);
    }
    let mut want: Vec<String> = vec![runs[6].id.clone()];
    want.extend(runs[..6].iter().map(|r| r.id.clone()));
    assert_eq!(order, want);
}

pub(super) async fn a_delayed_run_waits_for_its_time(h: &dyn Harness) {
    let store = h.handle();
    let t = task("t", Policy::default());
    registered(&store, &t).await;
    let now = store.now().await.unwrap();
    let mut later = queue::new_run(&t, &json!({}), "me");
    later.available = Availability::After(Duration::from_secs(3600));
    let mut at = queue::new_run(&t, &json!({}), "me");
    at.available = Availability::At(now + 7_200_000);
    store.enqueue(&[later.clone(), at.clone()]).await.unwrap();
    // Measured from when it was queued (a database's clock moves meanwhile).
    let queued = run_of(&store, &later.id).await;
    assert!(queued.queued_at >= now, "{} < {now}", queued.queued_at);
    assert_eq!(queued.available_at, queued.queued_at + 3_600_000);
    assert!(
        store
            .claim("w", 5, LEASE, &UNTAGGED)
            .await
            .unwrap()
            .is_empty()
    );
    h.advance(Duration::from_secs(3600));
    assert_eq!(
        store.claim("w", 5, LEASE, &UNTAGGED).await.unwrap()[0].id,
        later.id
    );
    h.advance(Duration::from_secs(3600));
    assert_eq!(
        store.claim("w", 5, LEASE, &UNTAGGED).await.unwrap()[0].id,
        at.id
    );
}

pub(super) async fn a_schedule_fires_once_per_tick(h: &dyn Harness) {
    let (a, b) = (h.handle(), h.handle());
    let t = task(
        "t",
        Policy {
            retries: Some(2),
            priority: Some(3),
            ..Policy::default()
        },
    );
    registered(&a, &t).await;
    let now = a.now().await.unwrap();
    let new =
        queue::new_schedule(&t, "* * * * * *", &json!({"pw": "s3cret"}), "cron", now).unwrap();
    let added = a.add_schedule(&new).await.unwrap();
    assert_eq!(added.args, json!({"pw": "********"}));
    assert_eq!(a.list_schedules().await.unwrap(), vec![added.clone()]);
    assert!(
        queue::fire_schedules(&a).await.unwrap().is_empty(),
        "not due yet"
    );
    h.advance(Duration::from_millis(1500));
    // Two workers see the same tick: it fires once.
    let fired: Vec<NewRun> = futures_join_all(
        [a.clone(), b.clone()]
            .into_iter()
            .map(|s| async move { queue::fire_schedules(&s).await.unwrap() }),
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(fired.len(), 1);
    let rec = run_of(&a, &fired[0].id).await;
    assert_eq!(rec.schedule.as_deref(), Some(added.id.as_str()));
    assert_eq!(
        (rec.caller.as_str(), rec.priority, rec.max_attempts),
        ("cron", 3, 3)
    );
    assert_eq!(rec.args, json!({"pw": "********"}));
    let claimed = a.claim("w", 1, LEASE, &UNTAGGED).await.unwrap();
    assert_eq!(claimed[0].args, json!({"pw": "s3cret"}));
    let next = a.list_schedules().await.unwrap()[0].next_fire_at;
    assert!(next > added.next_fire_at && next <= now + 3000, "{next}");
    assert!(queue::fire_schedules(&b).await.unwrap().is_empty());

    // A schedule whose task is gone passes its tick without a run.
    a.remove(&t.name).await.unwrap();
    h.advance(Duration::from_secs(2));
    assert!(queue::fire_schedules(&a).await.unwrap().is_empty());
    assert!(a.list_schedules().await.unwrap()[0].next_fire_at > next);
    assert_eq!(a.remove_schedules_of(&t.name).await.unwrap(), 1);
    assert!(a.list_schedules().await.unwrap().is_empty());
    assert!(!a.remove_schedule(&added.id).await.unwrap());
}

pub(super) async fn prune_deletes_old_runs_and_keep_protects_the_newest(h: &dyn Harness) {
    let store = h.handle();
    let (x, y) = (task("x", Policy::default()), task("y", Policy::default()));
    registered(&store, &x).await;
    registered(&store, &y).await;
    let mut ids = vec![];
    for t in [&x, &x, &x, &y, &y] {
        let run = queue::new_run(t, &json!({}), "me");
        store.enqueue(std::slice::from_ref(&run)).await.unwrap();
        let c = store
            .claim("w", 1, LEASE, &UNTAGGED)
            .await
            .unwrap()
            .remove(0);
        store
            .finish(&c.lease(), &done(1, LogBatch::default()))
            .await
            .unwrap();
        ids.push(run.id);
        h.advance(Duration::from_secs(60));
    }
    let waiting = queue::new_run(&x, &json!({}), "me");
    store.enqueue(std::slice::from_ref(&waiting)).await.unwrap();
    // Finished 5, 4, 3, 2 and 1 minutes ago.
    let minutes = |m: u64| Some(Duration::from_secs(60 * m));
    assert_eq!(
        store
            .prune(&Prune {
                older_than: minutes(10),
                keep: None
            })
            .await
            .unwrap(),
        0
    );
    // Old, but the newest of each task is kept.
    assert_eq!(
        store
            .prune(&Prune {
                older_than: minutes(1),
                keep: Some(1)
            })
            .await
            .unwrap(),
        3
    );
    let left: Vec<String> = store
        .list_runs(&RunFilter {
            limit: 10,
            ..RunFilter::default()
        })
        .await
        .unwrap()
        .runs
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, [waiting.id.clone(), ids[4].clone(), ids[2].clone()]);
    assert_eq!(
        store
            .prune(&Prune {
                older_than: None,
                keep: Some(0)
            })
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.prune(&Prune::default()).await.unwrap(), 0);
    assert_eq!(run_of(&store, &waiting.id).await.state, RunState::Queued);
}

pub(super) async fn history_pages_newest_first_without_gaps_or_repeats(h: &dyn Harness) {
    let store = h.handle();
    let (x, y) = (task("x", Policy::default()), task("y", Policy::default()));
    registered(&store, &x).await;
    registered(&store, &y).await;
    let mut all = vec![];
    // Batches queued in the same millisecond, and single runs between them.
    for round in 0..5 {
        let batch: Vec<NewRun> = (0..4)
            .map(|i| queue::new_run(if i % 2 == 0 { &x } else { &y }, &json!({}), "me"))
            .collect();
        store.enqueue(&batch).await.unwrap();
        all.extend(batch.iter().map(|r| (r.id.clone(), r.task.clone(), round)));
        h.advance(Duration::from_millis(1));
        let single = queue::new_run(&x, &json!({}), "me");
        store.enqueue(std::slice::from_ref(&single)).await.unwrap();
        all.push((single.id.clone(), single.task.clone(), round));
        h.advance(Duration::from_secs(1));
    }
    all.reverse();
    let page_through = |filter: RunFilter| {
        let store = store.clone();
        async move {
            let mut seen = vec![];
            let mut filter = filter;
            loop {
                let page = store.list_runs(&filter).await.unwrap();
                assert!(page.runs.len() <= filter.limit);
                seen.extend(page.runs.into_iter().map(|r| r.id));
                match page.next {
                    Some(c) => filter.after = Some(c),
                    None => break seen,
                }
            }
        }
    };
    let want: Vec<String> = all.iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(
        page_through(RunFilter {
            limit: 7,
            ..RunFilter::default()
        })
        .await,
        want
    );
    assert_eq!(
        page_through(RunFilter {
            limit: 1,
            ..RunFilter::default()
        })
        .await,
        want
    );
    let only_y: Vec<String> = all
        .iter()
        .filter(|(_, t, _)| t.as_str() == "y")
        .map(|(id, ..)| id.clone())
        .collect();
    let filter = RunFilter {
        task: Some(name("y")),
        limit: 3,
        ..RunFilter::default()
    };
    assert_eq!(page_through(filter).await, only_y);
    // `since` the start of the last round: its five runs.
    let last_round: Vec<String> = all
        .iter()
        .filter(|(.., r)| *r == 4)
        .map(|(id, ..)| id.clone())
        .collect();
    let since = run_of(&store, &last_round[4]).await.queued_at;
    let filter = RunFilter {
        since: Some(since),
        limit: 100,
        ..RunFilter::default()
    };
    assert_eq!(page_through(filter).await, last_round);
    let running = store.claim("w", 2, LEASE, &UNTAGGED).await.unwrap();
    let filter = RunFilter {
        state: Some(RunState::Running),
        limit: 100,
        ..RunFilter::default()
    };
    let mut got = page_through(filter).await;
    got.sort();
    let mut want: Vec<String> = running.into_iter().map(|c| c.id).collect();
    want.sort();
    assert_eq!(got, want);
}

pub(super) async fn logs_are_stored_in_order_and_cut_lines_deleted(h: &dyn Harness) {
    let store = h.handle();
    let t = task("t", Policy::default());
    registered(&store, &t).await;
    let run = queue::new_run(&t, &json!({}), "me");
    store.enqueue(std::slice::from_ref(&run)).await.unwrap();
    let c = store
        .claim("w", 1, LEASE, &UNTAGGED)
        .await
        .unwrap()
        .remove(0);
    let entry = |seq: u64| LogEntry {
        seq,
        stream: if seq.is_multiple_of(2) {
            Stream::Stdout
        } else {
            Stream::Stderr
        },
        text: format!("line {seq}"),
        truncated: seq == 3,
    };
    let first = LogBatch {
        lines: (0..6).map(entry).collect(),
        ..LogBatch::default()
    };
    assert!(store.record_logs(&c.lease(), 1, &first).await.unwrap());
    // Lines 2..5 fell out of the middle; 6 and 7 are new.
    let second = LogBatch {
        lines: vec![entry(6), entry(7)],
        delete: Some((2, 5)),
        cut_lines: 3,
        cut_bytes: 21,
    };
    assert!(store.finish(&c.lease(), &done(1, second)).await.unwrap());
    let stored = store.run_logs(&run.id, 1, 0).await.unwrap();
    let seqs: Vec<u64> = stored.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, [0, 1, 5, 6, 7]);
    assert_eq!(stored[1], entry(1));
    assert_eq!(
        store.run_logs(&run.id, 1, 6).await.unwrap(),
        vec![entry(6), entry(7)]
    );
    assert!(store.run_logs(&run.id, 2, 0).await.unwrap().is_empty());
    let rec = run_of(&store, &run.id).await;
    assert_eq!((rec.log_cut_lines, rec.log_cut_bytes), (3, 21));
}

/// A worker whose store did not answer sends a batch again when it comes
/// back, not knowing whether the first call landed: nothing is doubled and
/// nothing fails.
pub(super) async fn a_log_batch_sent_again_is_stored_once(h: &dyn Harness) {
    let store = h.handle();
    let t = task("t", Policy::default());
    registered(&store, &t).await;
    let run = queue::new_run(&t, &json!({}), "me");
    store.enqueue(std::slice::from_ref(&run)).await.unwrap();
    let c = store
        .claim("w", 1, LEASE, &UNTAGGED)
        .await
        .unwrap()
        .remove(0);
    let line = |seq: u64| LogEntry {
        seq,
        stream: Stream::Stdout,
        text: format!("line {seq}"),
        truncated: false,
    };
    let batch = LogBatch {
        lines: (0..3).map(line).collect(),
        ..LogBatch::default()
    };
    assert!(store.record_logs(&c.lease(), 1, &batch).await.unwrap());
    assert!(store.record_logs(&c.lease(), 1, &batch).await.unwrap());
    // The end, with lines of which some are stored already.
    let end = LogBatch {
        lines: (2..5).map(line).collect(),
        ..LogBatch::default()
    };
    assert!(store.finish(&c.lease(), &done(1, end)).await.unwrap());
    let stored = store.run_logs(&run.id, 1, 0).await.unwrap();
    assert_eq!(stored, (0..5).map(line).collect::<Vec<_>>());
}

/// A lease that lapsed is still the attempt's until someone settles it: a
/// worker whose store came back late renews it, or records its end, and
/// loses it only once the lapse was settled.
pub(super) async fn a_lapsed_lease_is_held_until_it_is_settled(h: &dyn Harness) {
    let store = h.handle();
    let t = task("t", Policy::default());
    registered(&store, &t).await;
    let runs = [
        queue::new_run(&t, &json!({}), "me"),
        queue::new_run(&t, &json!({}), "me"),
    ];
    store.enqueue(&runs).await.unwrap();
    let claimed = store.claim("w", 2, LEASE, &UNTAGGED).await.unwrap();
    let (renewed, ended) = (claimed[0].lease(), claimed[1].lease());
    h.advance(LEASE * 2);
    assert_eq!(
        store
            .heartbeat(std::slice::from_ref(&renewed), LEASE)
            .await
            .unwrap(),
        vec![LeaseStatus::Held]
    );
    assert!(
        store
            .finish(&ended, &done(1, LogBatch::default()))
            .await
            .unwrap()
    );
    assert_eq!(run_of(&store, &ended.id).await.state, RunState::Completed);
    // Renewed: not lapsed, nothing to settle.
    assert_eq!(queue::requeue_expired(&store).await.unwrap(), 0);
    h.advance(LEASE * 2);
    assert_eq!(queue::requeue_expired(&store).await.unwrap(), 1);
    assert_eq!(
        store
            .heartbeat(std::slice::from_ref(&renewed), LEASE)
            .await
            .unwrap(),
        vec![LeaseStatus::Lost]
    );
    assert!(
        !store
            .finish(&renewed, &done(1, LogBatch::default()))
            .await
            .unwrap()
    );
    assert_eq!(run_of(&store, &renewed.id).await.state, RunState::Queued);
}

fn tagged(n: &str, tags: &[&str]) -> Task {
    task(
        n,
        Policy {
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            ..Policy::default()
        },
    )
}

fn filter(tags: &[&str], exclude: &[&str]) -> ClaimFilter {
    ClaimFilter {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        exclude: exclude.iter().map(|t| name(t)).collect(),
    }
}

/// The tasks of the claimed runs, sorted.
fn tasks_of(claimed: &[super::Claimed]) -> Vec<&str> {
    let mut names: Vec<&str> = claimed.iter().map(|c| c.task.as_str()).collect();
    names.sort();
    names
}

pub(super) async fn a_claim_takes_only_runs_whose_task_tags_the_worker_has(h: &dyn Harness) {
    let store = h.handle();
    let (gpu, both, plain) = (
        tagged("gpu", &["gpu"]),
        tagged("both", &["gpu", "linux"]),
        task("plain", Policy::default()),
    );
    for t in [&gpu, &both, &plain] {
        registered(&store, t).await;
    }
    let runs: Vec<NewRun> = [&gpu, &both, &plain, &gpu, &both, &plain]
        .into_iter()
        .map(|t| queue::new_run(t, &json!({}), "me"))
        .collect();
    store.enqueue(&runs).await.unwrap();
    // No tags: only the untagged task's runs.
    let untagged = store.claim("none", 10, LEASE, &UNTAGGED).await.unwrap();
    assert_eq!(tasks_of(&untagged), ["plain", "plain"]);
    // `gpu` alone is not enough for a task that also needs `linux`.
    let some = store
        .claim("gpu", 10, LEASE, &filter(&["gpu", "x86"], &[]))
        .await
        .unwrap();
    assert_eq!(tasks_of(&some), ["gpu", "gpu"]);
    assert!(
        store
            .claim("linux", 10, LEASE, &filter(&["linux"], &[]))
            .await
            .unwrap()
            .is_empty()
    );
    let all = store
        .claim("all", 10, LEASE, &filter(&["arm", "gpu", "linux"], &[]))
        .await
        .unwrap();
    assert_eq!(tasks_of(&all), ["both", "both"]);
    assert_eq!(store.active().await.unwrap().running, 6);

    // Claims read the task's tags as they are now: re-registered without
    // them, its runs go to any worker.
    let later = queue::new_run(&both, &json!({}), "me");
    store.enqueue(std::slice::from_ref(&later)).await.unwrap();
    assert!(
        store
            .claim("none", 10, LEASE, &UNTAGGED)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .insert(&tagged("both", &[]), InsertMode::Replace)
        .await
        .unwrap();
    let now_free = store.claim("none", 10, LEASE, &UNTAGGED).await.unwrap();
    assert_eq!(now_free.len(), 1);
    assert_eq!(now_free[0].id, later.id);

    // A run whose task is gone from the registry has no tags to ask for:
    // any worker takes it (and fails it, as before tags existed).
    let orphan = queue::new_run(&gpu, &json!({}), "me");
    store.enqueue(std::slice::from_ref(&orphan)).await.unwrap();
    store.remove(&gpu.name).await.unwrap();
    let taken = store.claim("none", 10, LEASE, &UNTAGGED).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, orphan.id);
}

pub(super) async fn a_claim_skips_excluded_tasks_and_leaves_them_for_others(h: &dyn Harness) {
    let store = h.handle();
    let (here, elsewhere) = (
        task("here", Policy::default()),
        task(
            "elsewhere",
            Policy {
                priority: Some(9),
                ..Policy::default()
            },
        ),
    );
    registered(&store, &here).await;
    registered(&store, &elsewhere).await;
    let runs = vec![
        queue::new_run(&elsewhere, &json!({}), "me"),
        queue::new_run(&here, &json!({}), "me"),
        queue::new_run(&elsewhere, &json!({}), "me"),
    ];
    store.enqueue(&runs).await.unwrap();
    // The excluded task's runs come first by priority, and are passed over.
    let mine = store
        .claim("a", 10, LEASE, &filter(&[], &["elsewhere", "ghost"]))
        .await
        .unwrap();
    assert_eq!(tasks_of(&mine), ["here"]);
    assert!(
        store
            .claim("a", 10, LEASE, &filter(&[], &["elsewhere"]))
            .await
            .unwrap()
            .is_empty()
    );
    let active = store.active().await.unwrap();
    assert_eq!((active.due, active.running), (2, 1));
    // Another worker, which can run it, takes them in order.
    let theirs = store.claim("b", 10, LEASE, &UNTAGGED).await.unwrap();
    let ids: Vec<&str> = theirs.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [runs[0].id.as_str(), runs[2].id.as_str()]);
}

fn beat(id: &str, pid: u32, tags: &[&str], running: u32) -> WorkerBeat {
    WorkerBeat {
        id: id.to_owned(),
        host: "host-1".into(),
        pid,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        concurrency: 4,
        running,
        lease: LEASE,
    }
}

pub(super) async fn workers_beat_are_listed_and_removed(h: &dyn Harness) {
    let (store, other) = (h.handle(), h.handle());
    assert!(store.list_workers().await.unwrap().is_empty());
    assert!(!store.remove_worker("nobody").await.unwrap());
    let t0 = store.now().await.unwrap();
    store.beat_worker(&beat("w-a", 10, &[], 0)).await.unwrap();
    h.advance(Duration::from_secs(1));
    store
        .beat_worker(&beat("w-b", 20, &["gpu", "linux"], 0))
        .await
        .unwrap();
    h.advance(Duration::from_secs(2));
    // A beat updates the row in place, keeping when the worker started.
    other.beat_worker(&beat("w-a", 10, &[], 3)).await.unwrap();
    let listed = other.list_workers().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["w-a", "w-b"], "oldest first");
    let (a, b) = (&listed[0], &listed[1]);
    assert_eq!(
        (a.started_at, a.last_seen, a.running, a.concurrency),
        (t0, t0 + 3000, 3, 4)
    );
    assert_eq!((a.host.as_str(), a.pid, a.lease_ms), ("host-1", 10, 10_000));
    assert_eq!(b.tags, ["gpu", "linux"]);
    assert!(a.tags.is_empty());
    assert_eq!((b.started_at, b.last_seen), (t0 + 1000, t0 + 1000));
    // Live while seen within its own lease.
    let now = store.now().await.unwrap();
    assert!(a.is_live(now) && b.is_live(now));
    h.advance(Duration::from_millis(8001));
    let now = store.now().await.unwrap();
    assert!(a.is_live(now), "seen 8.001s ago, lease 10s");
    assert!(!b.is_live(now), "seen 10.001s ago, lease 10s");
    assert!(b.is_live(now - 1), "seen exactly its lease ago");

    // The same id from another process (a restart with `--id`) starts again.
    store.beat_worker(&beat("w-b", 21, &[], 0)).await.unwrap();
    let b = store
        .list_workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id == "w-b")
        .unwrap();
    assert_eq!((b.pid, b.started_at, b.last_seen), (21, now, now));
    assert!(b.tags.is_empty());

    assert!(store.remove_worker("w-a").await.unwrap());
    assert!(!other.remove_worker("w-a").await.unwrap());
    let ids: Vec<String> = other
        .list_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, ["w-b"]);
}

pub(super) async fn workers_not_seen_for_a_day_are_forgotten_by_the_next_beat(h: &dyn Harness) {
    let store = h.handle();
    store.beat_worker(&beat("gone", 1, &[], 0)).await.unwrap();
    store.beat_worker(&beat("stays", 2, &[], 0)).await.unwrap();
    h.advance(super::FORGET_WORKERS_AFTER - Duration::from_secs(1));
    store.beat_worker(&beat("stays", 2, &[], 0)).await.unwrap();
    h.advance(Duration::from_secs(1));
    // Exactly a day: still kept. Listing deletes nothing.
    store.beat_worker(&beat("stays", 2, &[], 0)).await.unwrap();
    assert_eq!(store.list_workers().await.unwrap().len(), 2);
    h.advance(Duration::from_millis(1));
    assert_eq!(store.list_workers().await.unwrap().len(), 2);
    store.beat_worker(&beat("stays", 2, &[], 0)).await.unwrap();
    let ids: Vec<String> = store
        .list_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, ["stays"]);
}

// ---- copying a store ---------------------------------------------------

pub(super) async fn import_tasks_inserts_new_keeps_equal_and_refuses_different(h: &dyn Harness) {
    let store = h.handle();
    let (a, b, c) = (
        full_task("a"),
        task("b", Policy::default()),
        task("c", Policy::default()),
    );
    registered(&store, &a).await;
    assert_eq!(
        store.import_tasks(&[b.clone(), a.clone()]).await.unwrap(),
        ImportReport {
            inserted: 1,
            unchanged: 1
        }
    );
    assert_eq!(store.list().await.unwrap(), vec![a.clone(), b.clone()]);

    let described = Task {
        description: Some("Another".into()),
        ..a.clone()
    };
    let err = store
        .import_tasks(&[c.clone(), described])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { what: "task", key, field: "description" } if key == "a"),
        "{err}"
    );
    let capped = Task {
        policy: Policy {
            concurrency: Some(9),
            ..a.policy.clone()
        },
        ..a.clone()
    };
    assert!(matches!(
        store.import_tasks(&[capped]).await,
        Err(StoreError::Conflict {
            field: "concurrency",
            ..
        })
    ));
    // Nothing of a refused batch was written: no `c`, `a` as it was.
    assert_eq!(store.list().await.unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(
        store.import_tasks(&[a, b]).await.unwrap(),
        ImportReport {
            inserted: 0,
            unchanged: 2
        }
    );
    assert_eq!(
        h.second().import_tasks(&[]).await.unwrap(),
        ImportReport::default()
    );
}

fn line(seq: u64, text: &str, stream: Stream) -> LogEntry {
    LogEntry {
        seq,
        stream,
        text: text.into(),
        truncated: seq == 1,
    }
}

/// Runs in every state with every column set, queued `STEP` apart: a run
/// completed after a retry (log lines of both attempts, a cut, an exit
/// code, a schedule id, a timeout), an inline run failed as
/// `executor_lost`, a run cancelled while queued, a delayed queued run with
/// secret arguments, and a running run asked to stop. Returns their ids in
/// insertion order.
async fn varied_history(h: &dyn Harness, store: &Store) -> Vec<String> {
    const STEP: Duration = Duration::from_millis(5);
    let t = task(
        "t",
        Policy {
            retries: Some(1),
            backoff: Some(Duration::from_secs(1)),
            retry_on_status: true,
            priority: Some(2),
            ..Policy::default()
        },
    );
    registered(store, &t).await;
    let args = json!({"pw": "hunter2", "x": 1});

    let mut retried = queue::new_run(&t, &args, "me");
    retried.schedule = Some("sched-1".into());
    retried.timeout = Some(Duration::from_secs(9));
    store.enqueue(std::slice::from_ref(&retried)).await.unwrap();
    let c = store
        .claim("w1", 1, LEASE, &UNTAGGED)
        .await
        .unwrap()
        .remove(0);
    let first = LogBatch {
        lines: vec![line(0, "first try", Stream::Stdout)],
        ..LogBatch::default()
    };
    assert!(store.record_logs(&c.lease(), 1, &first).await.unwrap());
    let note = queue::retry_note(&Outcome::NoResult, 1, 2, Duration::ZERO);
    assert!(
        store
            .retry(&c.lease(), &failed(1), Duration::ZERO, &note)
            .await
            .unwrap()
    );
    h.advance(STEP);
    let c = store
        .claim("w2", 1, LEASE, &UNTAGGED)
        .await
        .unwrap()
        .remove(0);
    let mut end = done(
        2,
        LogBatch {
            lines: vec![
                line(0, "second try", Stream::Stderr),
                line(1, "a cut line", Stream::Stdout),
                line(5, "the tail", Stream::Stdout),
            ],
            delete: None,
            cut_lines: 3,
            cut_bytes: 42,
        },
    );
    end.exit = Some(ExitInfo::Code { code: 0 });
    assert!(store.finish(&c.lease(), &end).await.unwrap());
    h.advance(STEP);

    let inline = queue::new_run(&t, &json!({}), "mcp");
    store
        .start_inline(&inline, "execute-1", LEASE)
        .await
        .unwrap();
    h.advance(LEASE + STEP);
    assert_eq!(queue::requeue_expired(store).await.unwrap(), 1);

    let cancelled = queue::new_run(&t, &json!({}), "me");
    store
        .enqueue(std::slice::from_ref(&cancelled))
        .await
        .unwrap();
    queue::cancel(store, &cancelled.id, RunState::Queued)
        .await
        .unwrap();
    h.advance(STEP);

    let mut waiting = queue::new_run(&t, &args, "me");
    waiting.available = Availability::After(Duration::from_secs(3600));
    waiting.priority = -4;
    waiting.backoff = Some(Duration::from_millis(1500));
    store.enqueue(std::slice::from_ref(&waiting)).await.unwrap();
    h.advance(STEP);

    let running = queue::new_run(&t, &json!({}), "me");
    store.enqueue(std::slice::from_ref(&running)).await.unwrap();
    let c = store
        .claim("w3", 1, LEASE, &UNTAGGED)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(c.id, running.id);
    assert!(store.request_cancel(&running.id).await.unwrap());
    vec![retried.id, inline.id, cancelled.id, waiting.id, running.id]
}

/// Every run `store` exports, page by page (`limits.runs` at a time).
async fn export_all(store: &Store, runs: usize) -> Vec<ExportedRun> {
    let limits = ExportLimits {
        runs,
        log_bytes: usize::MAX,
    };
    let (mut all, mut after) = (Vec::new(), None);
    loop {
        let page = store.export_runs(after, limits).await.unwrap();
        assert!(page.runs.len() <= runs);
        all.extend(page.runs);
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

async fn newest_first(store: &Store) -> Vec<crate::history::RunRecord> {
    store
        .list_runs(&RunFilter {
            limit: 100,
            ..RunFilter::default()
        })
        .await
        .unwrap()
        .runs
}

pub(super) async fn exported_runs_import_with_every_column_and_log_line(h: &dyn Harness) {
    let (source, target) = (h.handle(), h.second());
    let ids = varied_history(h, &source).await;
    let now = source.now().await.unwrap();
    let new = queue::new_schedule(
        &task("t", Policy::default()),
        "*/5 * * * *",
        &json!({"pw": "s3cret"}),
        "cron",
        now,
    )
    .unwrap();
    source.add_schedule(&new).await.unwrap();

    let exported = export_all(&source, 2).await;
    let got: Vec<&str> = exported.iter().map(|r| r.record.id.as_str()).collect();
    assert_eq!(got, ids, "insertion order");
    let [retried, inline, cancelled, waiting, running] = &exported[..] else {
        panic!("{exported:?}");
    };
    assert_eq!(
        (retried.record.state, retried.record.attempt),
        (RunState::Completed, 2)
    );
    let attempts: Vec<(u32, u64)> = retried
        .logs
        .iter()
        .map(|l| (l.attempt, l.entry.seq))
        .collect();
    assert_eq!(attempts, [(1, 0), (2, 0), (2, 1), (2, 5)]);
    assert!(retried.logs[2].entry.truncated);
    assert_eq!(
        (retried.record.log_cut_lines, retried.record.log_cut_bytes),
        (3, 42)
    );
    assert_eq!(retried.record.schedule.as_deref(), Some("sched-1"));
    assert_eq!(retried.record.exit, Some(ExitInfo::Code { code: 0 }));
    assert_eq!(
        (retried.timeout, retried.fence, retried.retry_on_status),
        (Some(Duration::from_secs(9)), 2, true)
    );
    assert!(retried.task_rev.is_some());
    assert_eq!(retried.secret_args, None, "scrubbed when it ended");
    assert!(inline.inline && !retried.inline);
    assert_eq!(inline.record.error.as_ref().unwrap().kind, "executor_lost");
    assert_eq!(cancelled.record.state, RunState::Cancelled);
    assert_eq!(
        waiting.secret_args,
        Some(json!({"pw": "hunter2", "x": 1})),
        "kept while queued"
    );
    assert_eq!(waiting.backoff, Some(Duration::from_millis(1500)));
    assert!(waiting.record.available_at > waiting.record.queued_at);
    assert_eq!(running.record.state, RunState::Running);
    assert!(running.record.cancel_requested && running.lease_until.is_some());

    let first = target.import_runs(&exported[..3]).await.unwrap();
    let rest = target.import_runs(&exported[3..]).await.unwrap();
    assert_eq!((first.inserted, rest.inserted), (3, 2));
    assert_eq!(export_all(&target, 100).await, exported);
    assert_eq!(newest_first(&target).await, newest_first(&source).await);
    let second: Vec<LogEntry> = retried.logs[1..].iter().map(|l| l.entry.clone()).collect();
    assert_eq!(
        target.run_logs(&retried.record.id, 2, 0).await.unwrap(),
        second
    );

    let schedules = source.export_schedules().await.unwrap();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0].secret_args, Some(json!({"pw": "s3cret"})));
    assert_eq!(
        schedules[0].schedule,
        source.list_schedules().await.unwrap()[0]
    );
    assert_eq!(
        target.import_schedules(&schedules).await.unwrap().inserted,
        1
    );
    assert_eq!(target.export_schedules().await.unwrap(), schedules);
    // A tick fired from the copy queues the source's real arguments.
    registered(&target, &task("t", Policy::default())).await;
    h.advance(Duration::from_secs(600));
    let fired = queue::fire_schedules(&target).await.unwrap();
    assert_eq!(fired[0].secret_args, Some(json!({"pw": "s3cret"})));

    // Exporting changed nothing in the source.
    assert_eq!(export_all(&source, 100).await, exported);
}

pub(super) async fn an_export_page_ends_once_its_log_lines_pass_the_budget(h: &dyn Harness) {
    let store = h.handle();
    varied_history(h, &store).await;
    let limits = ExportLimits {
        runs: 10,
        log_bytes: 1,
    };
    let page = store.export_runs(None, limits).await.unwrap();
    assert_eq!(page.runs.len(), 1, "the first run has log lines");
    let rest = store.export_runs(page.next, limits).await.unwrap();
    assert_eq!(rest.runs.len(), 4, "the others have none");
    assert_eq!(rest.next, None);
    let after_all = ExportCursor { seq: i64::MAX };
    assert!(
        store
            .export_runs(Some(after_all), limits)
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    assert!(
        h.second()
            .export_runs(None, limits)
            .await
            .unwrap()
            .runs
            .is_empty()
    );
}

pub(super) async fn importing_twice_changes_nothing(h: &dyn Harness) {
    let (source, target) = (h.handle(), h.second());
    varied_history(h, &source).await;
    let exported = export_all(&source, 100).await;
    assert_eq!(target.import_runs(&exported).await.unwrap().inserted, 5);
    let before = newest_first(&target).await;
    assert_eq!(
        target.import_runs(&exported).await.unwrap(),
        ImportReport {
            inserted: 0,
            unchanged: 5
        }
    );
    assert_eq!(newest_first(&target).await, before);
    assert_eq!(export_all(&target, 100).await, exported);
}

pub(super) async fn imported_runs_follow_the_targets_own_in_the_sources_order(h: &dyn Harness) {
    let (source, target) = (h.handle(), h.second());
    let t = task("t", Policy::default());
    registered(&source, &t).await;
    registered(&target, &t).await;
    // All queued in the same millisecond (the clock stands still): only
    // insertion order tells them apart.
    let own = queue::new_run(&t, &json!({}), "target");
    target.enqueue(std::slice::from_ref(&own)).await.unwrap();
    let batch: Vec<NewRun> = (0..3)
        .map(|_| queue::new_run(&t, &json!({}), "source"))
        .collect();
    source.enqueue(&batch).await.unwrap();
    let exported = export_all(&source, 100).await;
    target.import_runs(&exported).await.unwrap();
    let ids = |runs: Vec<crate::history::RunRecord>| -> Vec<String> {
        runs.into_iter().map(|r| r.id).collect()
    };
    let mut want: Vec<String> = batch.iter().rev().map(|r| r.id.clone()).collect();
    assert_eq!(ids(newest_first(&source).await), want);
    want.push(own.id.clone());
    assert_eq!(ids(newest_first(&target).await), want);
}

pub(super) async fn a_differing_row_refuses_the_whole_batch(h: &dyn Harness) {
    let (source, target) = (h.handle(), h.second());
    varied_history(h, &source).await;
    let exported = export_all(&source, 100).await;
    target.import_runs(&exported[..1]).await.unwrap();
    let stored = export_all(&target, 100).await;

    let mut logs = exported[0].clone();
    logs.logs[1].entry.text = "edited".into();
    let mut outcome = exported[0].clone();
    outcome.record.outcome = Some(Outcome::NoResult);
    let mut fence = exported[0].clone();
    fence.fence += 1;
    for (changed, want) in [(logs, "logs"), (outcome, "outcome"), (fence, "fence")] {
        let batch = [exported[1].clone(), changed, exported[2].clone()];
        let err = target.import_runs(&batch).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict { what: "run", key, field } if *key == exported[0].record.id && *field == want),
            "{want}: {err}"
        );
        assert!(err.to_string().contains(want), "{err}");
        assert_eq!(export_all(&target, 100).await, stored, "{want}");
        assert_eq!(
            target.get_run(&exported[1].record.id).await.unwrap(),
            RunLookup::Missing
        );
    }

    let now = source.now().await.unwrap();
    let t = task("t", Policy::default());
    for cron in ["0 * * * *", "5 * * * *"] {
        let new = queue::new_schedule(&t, cron, &json!({"pw": "s3cret"}), "cron", now).unwrap();
        source.add_schedule(&new).await.unwrap();
    }
    let schedules = source.export_schedules().await.unwrap();
    target.import_schedules(&schedules[..1]).await.unwrap();
    // Where a schedule has got to is not what it is: a later tick is the same schedule.
    let mut ticked = schedules[0].clone();
    ticked.schedule.next_fire_at += 3_600_000;
    assert_eq!(
        target.import_schedules(&[ticked]).await.unwrap(),
        ImportReport {
            inserted: 0,
            unchanged: 1
        }
    );
    let mut secret: ExportedSchedule = schedules[0].clone();
    secret.secret_args = Some(json!({"pw": "other"}));
    let err = target
        .import_schedules(&[schedules[1].clone(), secret])
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                what: "schedule",
                field: "secret_args",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("other"), "{err}");
    assert_eq!(target.export_schedules().await.unwrap(), schedules[..1]);
}

pub(super) async fn a_yaml_like_registry_refuses_history(h: &dyn Harness) {
    let store = h.handle();
    assert!(!store.has_history());
    assert!(matches!(
        store.enqueue(&[]).await,
        Err(StoreError::Unsupported { .. })
    ));
    assert!(matches!(
        store.list_runs(&RunFilter::default()).await,
        Err(StoreError::Unsupported { .. })
    ));
    let limits = ExportLimits {
        runs: 1,
        log_bytes: 1,
    };
    assert!(matches!(
        store.export_runs(None, limits).await,
        Err(StoreError::Unsupported { .. })
    ));
    assert!(matches!(
        store.import_runs(&[]).await,
        Err(StoreError::Unsupported { .. })
    ));
    assert!(matches!(
        store.export_schedules().await,
        Err(StoreError::Unsupported { .. })
    ));
    assert_eq!(store.remove_schedules_of(&name("t")).await.unwrap(), 0);
}

fn new_token(name: &str, scope: Scope, hash: &str, expires_in: Option<Duration>) -> NewToken {
    NewToken {
        name: name.to_owned(),
        scope,
        hash: hash.to_owned(),
        expires_in,
    }
}

pub(super) async fn tokens_are_created_found_by_hash_touched_and_revoked(h: &dyn Harness) {
    let (store, other) = (h.handle(), h.handle());
    // Reads of a store without tokens create nothing and find nothing.
    assert!(!store.any_token().await.unwrap());
    assert_eq!(store.token_key(None).await.unwrap(), None);
    assert!(store.find_token("00").await.unwrap().is_none());
    assert!(store.revoke_token("ci").await.unwrap().is_none());
    assert!(store.tokens().await.unwrap().is_empty());

    // The first key stored wins; later candidates get it back.
    let key = store.token_key(Some("k1")).await.unwrap();
    assert_eq!(key.as_deref(), Some("k1"));
    assert_eq!(
        other.token_key(Some("k2")).await.unwrap().as_deref(),
        Some("k1")
    );
    assert_eq!(other.token_key(None).await.unwrap().as_deref(), Some("k1"));

    let t0 = store.now().await.unwrap();
    let ci = store
        .create_token(&new_token(
            "ci",
            Scope::Run,
            "aa11",
            Some(Duration::from_secs(60)),
        ))
        .await
        .unwrap()
        .expect("a new name is stored");
    assert_eq!((ci.created_at, ci.expires_at), (t0, Some(t0 + 60_000)));
    assert_eq!((ci.revoked_at, ci.last_used_at), (None, None));
    // A taken name is refused whatever else differs, and nothing is written.
    assert!(
        other
            .create_token(&new_token("ci", Scope::Admin, "bb22", None))
            .await
            .unwrap()
            .is_none()
    );
    assert!(other.find_token("bb22").await.unwrap().is_none());
    store
        .create_token(&new_token("admin", Scope::Admin, "cc33", None))
        .await
        .unwrap()
        .unwrap();
    assert!(other.any_token().await.unwrap());
    let names: Vec<String> = other
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["admin", "ci"], "by name");

    h.advance(Duration::from_secs(5));
    let found = other
        .find_token("aa11")
        .await
        .unwrap()
        .expect("found by its hash");
    assert_eq!(found.record, ci);
    assert_eq!((found.hash.as_str(), found.now), ("aa11", t0 + 5000));

    // `last_used_at` is written at most once a minute.
    assert!(store.touch_token("ci").await.unwrap());
    h.advance(Duration::from_secs(59));
    assert!(!other.touch_token("ci").await.unwrap(), "touched 59 s ago");
    h.advance(Duration::from_secs(1));
    assert!(other.touch_token("ci").await.unwrap(), "touched 60 s ago");
    assert!(!store.touch_token("nobody").await.unwrap());
    let ci = store.find_token("aa11").await.unwrap().unwrap().record;
    assert_eq!(ci.last_used_at, Some(t0 + 65_000));

    // Revoking keeps the row (and the first revocation's time).
    h.advance(Duration::from_secs(1));
    let (revoked, now) = store.revoke_token("ci").await.unwrap().unwrap();
    assert_eq!((revoked.revoked_at, now), (Some(t0 + 66_000), true));
    h.advance(Duration::from_secs(1));
    let (again, now) = other.revoke_token("ci").await.unwrap().unwrap();
    assert_eq!((again.revoked_at, now), (Some(t0 + 66_000), false));
    assert_eq!(
        store
            .find_token("aa11")
            .await
            .unwrap()
            .unwrap()
            .record
            .revoked_at,
        Some(t0 + 66_000)
    );
    assert!(
        store.any_token().await.unwrap(),
        "revoked tokens still count"
    );
}

pub(super) async fn the_audit_log_pages_newest_first_without_gaps_or_repeats(h: &dyn Harness) {
    let (store, other) = (h.handle(), h.handle());
    let empty = store
        .audit_log(&AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(empty.entries.is_empty() && empty.next.is_none());
    let t0 = store.now().await.unwrap();
    for i in 0..7 {
        // Two entries share each millisecond: the order still holds.
        if i % 2 == 0 {
            h.advance(Duration::from_millis(1));
        }
        let entry = NewAudit {
            actor: if i % 2 == 0 { "cli:ada" } else { "ci" }.into(),
            action: "token.create".into(),
            target: format!("t{i}"),
            detail: json!({"i": i, "scope": "read"}),
        };
        let stored = other.audit(&entry).await.unwrap();
        assert_eq!(
            (
                stored.actor.as_str(),
                stored.target.as_str(),
                &stored.detail
            ),
            (entry.actor.as_str(), entry.target.as_str(), &entry.detail)
        );
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .audit_log(&AuditFilter {
                limit: 3,
                after,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.entries.len() <= 3);
        seen.extend(page.entries.iter().map(|e| e.target.clone()));
        match page.next {
            // The cursor survives its text form.
            Some(c) => after = Some(AuditCursor::decode(&c.encode()).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, ["t6", "t5", "t4", "t3", "t2", "t1", "t0"]);
    let since = store
        .audit_log(&AuditFilter {
            since: Some(t0 + 3),
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    let targets: Vec<&str> = since.entries.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["t6", "t5", "t4"]);
    assert!(since.entries.iter().all(|e| e.at >= t0 + 3));
    assert_eq!(since.entries[0].detail, json!({"i": 6, "scope": "read"}));
}

/// The YAML store has no tokens: none exist, and creating one is refused.
pub(super) async fn a_yaml_store_refuses_tokens(h: &dyn Harness) {
    let store = h.handle();
    assert!(!store.any_token().await.unwrap());
    let err = store
        .create_token(&new_token("ci", Scope::Read, "aa", None))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("SQLite or PostgreSQL"), "{err}");
    let err = store.audit_log(&AuditFilter::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unsupported { .. }), "{err}");
}

/// The registry tests, for `$harness` (an expression building a [`Harness`]).
macro_rules! registry_suite {
    ($backend:ident, $harness:expr) => {
        mod $backend {
            use super::*;
            registry_suite!(@tests $harness;
                registry_round_trip,
                registry_refuses_a_taken_name_unless_replacing,
                registry_removing_a_missing_task_is_not_found,
                registry_concurrent_writers_all_land,
                import_tasks_inserts_new_keeps_equal_and_refuses_different,
            );
        }
    };
    (@tests $harness:expr; $($test:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::$test(&$harness).await;
            }
        )*
    };
}

/// History, the queue and schedules, for `$harness`.
pub(super) async fn an_audited_enqueue_records_both_or_neither(h: &dyn Harness) {
    let store = h.handle();
    let t = task("t", Policy::default());
    registered(&store, &t).await;
    let run = queue::new_run(&t, &json!({"x": 1}), "me");
    let entry = NewAudit {
        actor: "ci".into(),
        action: "run.submit".into(),
        target: "t".into(),
        detail: json!({"transport": "http"}),
    };
    let at = store
        .enqueue_audited(std::slice::from_ref(&run), &entry)
        .await
        .unwrap();
    assert_eq!(run_of(&store, &run.id).await.queued_at, at);
    let log = store.audit_log(&AuditFilter::default()).await.unwrap();
    assert_eq!(log.entries.len(), 1);
    assert_eq!(
        (log.entries[0].at, log.entries[0].action.as_str()),
        (at, "run.submit")
    );
    // The same run again fails (its id is taken): no entry either.
    let again = NewAudit {
        target: "again".into(),
        ..entry
    };
    store
        .enqueue_audited(std::slice::from_ref(&run), &again)
        .await
        .unwrap_err();
    let log = store.audit_log(&AuditFilter::default()).await.unwrap();
    assert_eq!(log.entries.len(), 1, "{:?}", log.entries);
}

macro_rules! run_store_suite {
    ($backend:ident, $harness:expr) => {
        mod $backend {
            use super::*;
            registry_suite!(@tests $harness;
                queued_runs_keep_masked_args_and_are_found_by_prefix,
                a_large_batch_lands_whole_and_in_order,
                a_claim_bumps_the_fence_and_a_stale_attempt_cannot_write,
                lapsed_leases_requeue_until_attempts_are_used_up,
                an_inline_run_whose_executor_died_fails_and_is_never_rerun,
                a_retry_waits_for_its_delay,
                a_released_attempt_is_not_counted,
                cancel_stops_queued_runs_and_asks_running_ones,
                the_concurrency_cap_holds_with_concurrent_claimers,
                a_capped_task_does_not_hold_up_others,
                claims_follow_priority_then_age_then_insertion_order,
                a_delayed_run_waits_for_its_time,
                a_schedule_fires_once_per_tick,
                prune_deletes_old_runs_and_keep_protects_the_newest,
                history_pages_newest_first_without_gaps_or_repeats,
                logs_are_stored_in_order_and_cut_lines_deleted,
                a_log_batch_sent_again_is_stored_once,
                a_lapsed_lease_is_held_until_it_is_settled,
                a_claim_takes_only_runs_whose_task_tags_the_worker_has,
                a_claim_skips_excluded_tasks_and_leaves_them_for_others,
                workers_beat_are_listed_and_removed,
                workers_not_seen_for_a_day_are_forgotten_by_the_next_beat,
                exported_runs_import_with_every_column_and_log_line,
                an_export_page_ends_once_its_log_lines_pass_the_budget,
                importing_twice_changes_nothing,
                imported_runs_follow_the_targets_own_in_the_sources_order,
                a_differing_row_refuses_the_whole_batch,
                tokens_are_created_found_by_hash_touched_and_revoked,
                the_audit_log_pages_newest_first_without_gaps_or_repeats,
                an_audited_enqueue_records_both_or_neither,
            );
        }
    };
}

// Every backend, one line each.
registry_suite!(yaml_registry, YamlHarness::new());
registry_suite!(sqlite_registry, SqliteHarness::new());
run_store_suite!(sqlite_runs, SqliteHarness::new());
registry_suite!(postgres_registry, PgHarness::new());
run_store_suite!(postgres_runs, PgHarness::new());

#[tokio::test]
async fn yaml_has_no_history() {
    a_yaml_like_registry_refuses_history(&YamlHarness::new()).await;
}

#[tokio::test]
async fn yaml_has_no_tokens() {
    a_yaml_store_refuses_tokens(&YamlHarness::new()).await;
}
