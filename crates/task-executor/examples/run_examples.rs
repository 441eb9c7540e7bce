//! What the original's `task_executor_sample` binary did, with the library:
//! describe the two bundled example tasks and run them concurrently through a
//! [`Pool`], printing each result as it finishes.
//!
//! Run it with `cargo run --example run_examples` from the repository root.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use task_executor::pool::{Job, Pool};
use task_executor::{LogLine, LogSink};
use task_executor::{PreparedTask, RegisterOptions, RunRequest, Runner, TaskName};

/// Prints task logs to stderr, the way `manage_tasks` does.
struct PrintLogs;

impl LogSink for PrintLogs {
    fn line(&self, line: LogLine<'_>) {
        eprintln!("TASK::{} {}", line.task, String::from_utf8_lossy(line.text));
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let runner = Runner::default();
    let options = RegisterOptions::default();

    let mut jobs = Vec::new();
    for (id, (name, file, args)) in [
        ("greet", "bash.sh", json!({"name": "Ada", "excited": true})),
        (
            "wordcount",
            "python.py",
            json!({"text": "to be or not to be", "top": 2}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let task = task_executor::describe(
            &runner,
            TaskName::new(name)?,
            &examples.join(file),
            &options,
        )
        .await?;
        let task = Arc::new(PreparedTask::new(task)?);
        if let Err(violations) = task.validate_args(&args) {
            return Err(format!("bad arguments for {name}: {violations:?}").into());
        }
        jobs.push(Job {
            id: id as u64,
            task,
            request: RunRequest::new(args),
        });
    }

    let mut pool = Pool::new(runner, 2, Arc::new(PrintLogs));
    pool.run_all(jobs, |done| {
        let report = done.report;
        match report.outcome.result() {
            Some(result) => println!(
                "{}: status {} ({}) payload {}",
                report.task, result.status, result.reason, result.payload
            ),
            None => println!("{}: {}", report.task, report.outcome.kind()),
        }
    })
    .await;
    Ok(())
}
