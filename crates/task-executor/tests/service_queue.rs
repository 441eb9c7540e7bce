//! The service operations the HTTP API rests on, with real scripts, a real
//! SQLite store and a real worker: retrying an ended run (and refusing when
//! its secrets are gone), reading a log from a position, and the feed of
//! run state changes read from the store.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use task_executor::history::RunState;
use task_executor::queue::WorkerConfig;
use task_executor::service::{
    LogEvent, LogPosition, Registration, RetryError, Service, SubmitOptions,
};
use task_executor::{Runner, StoreSpec, TaskName};
use tokio_util::sync::CancellationToken;

/// Registers a bash task `name` with `inputs`, printing `lines` lines and succeeding.
async fn task(service: &Service, dir: &Path, name: &str, inputs: Value, lines: usize) {
    let path = dir.join(format!("{name}.sh"));
    let schema = json!({"inputs": inputs});
    std::fs::write(
        &path,
        format!(
            "#!/bin/bash\nif [ \"$1\" = schema ]; then echo '{schema}'; exit 0; fi\n\
             cat >/dev/null\nfor i in $(seq 0 {last}); do echo \"line $i\"; done\n\
             echo '{{\"status\": 1, \"reason\": \"ok\", \"payload\": null}}'\n",
            last = lines.saturating_sub(1)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    service
        .register(
            TaskName::new(name).unwrap(),
            &path,
            &Registration::default(),
        )
        .await
        .unwrap();
}

fn service(dir: &Path) -> Service {
    Service::open(&StoreSpec::Sqlite(dir.join("tasks.db")), Runner::default())
}

async fn submit(service: &Service, name: &str, args: Value) -> String {
    let task = service
        .prepare_to_queue(&TaskName::new(name).unwrap())
        .await
        .unwrap();
    service
        .submit(&task, &[args], &SubmitOptions::default())
        .await
        .unwrap()
        .remove(0)
        .id
}

/// Runs a worker until nothing is left to do.
async fn drain(service: &Service) {
    let config = WorkerConfig {
        until_idle: true,
        poll: Duration::from_millis(20),
        ..WorkerConfig::default()
    };
    service
        .work(&config, &CancellationToken::new(), &mut |_| {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_queues_the_same_arguments_unless_secrets_were_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path());
    task(&s, dir.path(), "plain", json!({"type": "object"}), 1).await;
    let secret_inputs = json!({
        "type": "object",
        "properties": {"token": {"type": "string", "writeOnly": true}}
    });
    task(&s, dir.path(), "secret", secret_inputs, 1).await;
    let plain = submit(&s, "plain", json!({"n": 1})).await;
    let secret = submit(&s, "secret", json!({"token": "hunter2"})).await;

    let err = s.retry(&plain, "test", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            RetryError::NotEnded {
                state: RunState::Queued,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), "run_active");

    drain(&s).await;
    let again = s.retry(&plain, "again", None).await.unwrap();
    assert_ne!(again.id, plain);
    assert_eq!(again.args, json!({"n": 1}));
    assert_eq!(again.caller, "again");
    assert_eq!(again.state, RunState::Queued);

    let err = s.retry(&secret, "test", None).await.unwrap_err();
    assert_eq!(err.kind(), "args_unavailable", "{err}");
    assert!(err.to_string().contains("secrets are dropped"), "{err}");
    let err = s.retry("not-a-run-at-all", "test", None).await.unwrap_err();
    assert_eq!(err.kind(), "unknown_run");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_is_read_from_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path());
    task(&s, dir.path(), "lines", json!({"type": "object"}), 5).await;
    let id = submit(&s, "lines", json!({})).await;
    drain(&s).await;
    let from = LogPosition {
        attempt: 1,
        next_seq: 3,
    };
    let mut stream = s.logs_from(&id, from, false).await.unwrap();
    let mut seqs = Vec::new();
    while let Some(e) = stream.next().await.unwrap() {
        if let LogEvent::Line { attempt, entry } = e {
            assert_eq!(attempt, 1);
            seqs.push((entry.seq, entry.text));
        }
    }
    // Lines 0..=4 and the result line (5): from 3 on.
    assert_eq!(seqs[0], (3, "line 3".to_owned()));
    assert_eq!(seqs[1], (4, "line 4".to_owned()));
    assert_eq!(seqs.len(), 3, "{seqs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_change_feed_sees_what_happens_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path());
    task(&s, dir.path(), "quick", json!({"type": "object"}), 1).await;
    let before = submit(&s, "quick", json!({})).await;
    let mut feed = s.changes().await.unwrap();
    // What was there when the feed began is its starting point, not news.
    assert!(feed.poll().await.unwrap().is_empty());

    // Another service over the same store (as another process would be).
    let other = service(dir.path());
    let queued = submit(&other, "quick", json!({})).await;
    let changed = feed.poll().await.unwrap();
    assert_eq!(
        changed
            .iter()
            .map(|r| (r.id.as_str(), r.state))
            .collect::<Vec<_>>(),
        [(queued.as_str(), RunState::Queued)]
    );
    assert!(feed.poll().await.unwrap().is_empty(), "told once");

    drain(&other).await;
    let mut ended: Vec<(String, RunState)> = feed
        .poll()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.state))
        .collect();
    ended.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![(before, RunState::Completed), (queued, RunState::Completed)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ended, expected);

    // Queued and ended between two looks: told once, ended.
    let quick = submit(&other, "quick", json!({})).await;
    drain(&other).await;
    let changed = feed.poll().await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(
        (changed[0].id.as_str(), changed[0].state),
        (quick.as_str(), RunState::Completed)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feed_from_a_time_tells_what_ended_since() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path());
    task(&s, dir.path(), "quick", json!({"type": "object"}), 1).await;
    let old = submit(&s, "quick", json!({})).await;
    drain(&s).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let from = task_executor::history::now_ms();
    let new = submit(&s, "quick", json!({})).await;
    drain(&s).await;
    // Made after both ended: the one queued since `from` is news, the other not.
    let mut feed = s.changes_from(Some(from)).unwrap();
    let told: Vec<String> = feed
        .poll()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(told, std::slice::from_ref(&new));
    assert_ne!(old, new);
    assert!(feed.poll().await.unwrap().is_empty());
}

/// A task's compiled schemas are kept between calls, and a definition
/// registered anew under the same name is compiled anew.
#[tokio::test]
async fn a_task_registered_again_is_checked_against_its_new_schema() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path());
    let strict = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    task(&s, dir.path(), "t", strict, 0).await;
    let name = TaskName::new("t").unwrap();
    let args = json!({"n": "seven"});
    for _ in 0..2 {
        let prepared = s.prepare_to_queue(&name).await.unwrap();
        assert!(prepared.check(&args).is_err(), "a string is not an integer");
    }
    // The same name, a looser schema: the new one decides.
    let path = dir.path().join("t.sh");
    std::fs::write(
        &path,
        "#!/bin/bash\nif [ \"$1\" = schema ]; then echo '{\"inputs\": {\"type\": \"object\"}}'; exit 0; fi\n\
         cat >/dev/null; echo '{\"status\": 1, \"reason\": \"ok\", \"payload\": null}'\n",
    )
    .unwrap();
    let again = Registration {
        replace: true,
        ..Registration::default()
    };
    s.register(name.clone(), &path, &again).await.unwrap();
    let prepared = s.prepare_to_queue(&name).await.unwrap();
    prepared
        .check(&args)
        .expect("the new schema takes any object");
    assert!(s.prepare(&name).await.unwrap().check(&args).is_ok());
}
