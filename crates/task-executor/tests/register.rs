//! Registration of real scripts: `inputs` that accept no JSON object
//! (`false`, a root `type` without `"object"`) are refused and nothing is
//! stored; a task stored with such inputs before this check still loads and runs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use task_executor::log::DiscardLogs;
use task_executor::{
    InsertMode, PreparedTask, RegisterError, RegisterOptions, RunRequest, Runner, Store, StoreSpec,
    Task, TaskName,
};
use tokio_util::sync::CancellationToken;

/// Writes an executable that describes itself with `inputs` and, when run, succeeds.
fn task_script(dir: &Path, inputs: &Value) -> PathBuf {
    let path = dir.join("task.sh");
    let schema = json!({"inputs": inputs, "outputs": {"type": "object"}});
    std::fs::write(
        &path,
        format!(
            "#!/bin/bash\nif [ \"$1\" = schema ]; then echo '{schema}'; exit 0; fi\n\
             cat >/dev/null\necho '{{\"status\": 1, \"reason\": \"ok\", \"payload\": {{}}}}'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

async fn register(dir: &Path, store: &Store, inputs: &Value) -> Result<Task, RegisterError> {
    let path = task_script(dir, inputs);
    let name = TaskName::new("strict").unwrap();
    task_executor::register(
        store,
        &Runner::default(),
        name,
        &path,
        &RegisterOptions::default(),
    )
    .await
}

#[tokio::test]
async fn inputs_false_is_not_registered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreSpec::Sqlite(dir.path().join("tasks.db")));
    let err = register(dir.path(), &store, &json!(false))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegisterError::InputsAcceptNothing { name } if name.as_str() == "strict"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("task `strict`: `inputs` is the schema `false`"),
        "{err}"
    );
    let name = TaskName::new("strict").unwrap();
    assert_eq!(store.get(&name).await.unwrap(), None, "stored anyway");
}

#[tokio::test]
async fn inputs_that_accept_something_are_registered() {
    for inputs in [
        json!(true),
        json!({}),
        json!({"type": "object"}),
        json!({"type": ["object", "null"]}),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreSpec::Sqlite(dir.path().join("tasks.db")));
        let task = register(dir.path(), &store, &inputs)
            .await
            .unwrap_or_else(|e| panic!("{inputs}: {e}"));
        assert_eq!(task.inputs, inputs);
    }
}

#[tokio::test]
async fn inputs_whose_root_type_leaves_out_object_are_not_registered() {
    for (inputs, found) in [
        (json!({"type": "string"}), "\"string\""),
        (json!({"type": ["array", "null"]}), "[\"array\",\"null\"]"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreSpec::Sqlite(dir.path().join("tasks.db")));
        let err = register(dir.path(), &store, &inputs).await.unwrap_err();
        assert!(
            matches!(&err, RegisterError::InputsNotAnObject { found: f, .. } if f == found),
            "{inputs}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains("the envelope's `data` always is one"),
            "{err}"
        );
        assert_eq!(store.list().await.unwrap(), vec![], "stored anyway");
    }
}

/// The stores do not check: a task stored with `inputs: false` (by an older
/// version) loads, prepares and runs as before; only its arguments fail, as ever.
#[tokio::test]
async fn a_stored_task_with_inputs_false_still_loads_and_runs() {
    for spec in ["tasks.yaml", "tasks.db"] {
        let dir = tempfile::tempdir().unwrap();
        let inputs = json!(false);
        let task = Task {
            name: TaskName::new("legacy").unwrap(),
            location: task_script(dir.path(), &inputs),
            description: None,
            inputs,
            outputs: None,
            timeout: None,
            policy: Default::default(),
            formats: Default::default(),
        };
        let path = dir.path().join(spec);
        let store = Store::open(&StoreSpec::parse(path.to_str().unwrap()).unwrap());
        store.insert(&task, InsertMode::CreateNew).await.unwrap();

        let loaded = store.get(&task.name).await.unwrap().expect("stored");
        assert_eq!(loaded.inputs, task.inputs, "{spec}");
        let prepared = PreparedTask::new(loaded).unwrap();
        assert!(prepared.validate_args(&json!({})).is_err(), "{spec}");
        let report = Runner::default()
            .run(
                &prepared,
                RunRequest::new(json!({})),
                &DiscardLogs,
                &CancellationToken::new(),
            )
            .await;
        assert!(report.outcome.is_success(), "{spec}: {:?}", report.outcome);
    }
}
