//! `execute`: validate arguments, run the task once, report the outcome.

use std::io::{Read, Write};
use std::sync::Arc;

use serde_json::{Value, json};
use task_executor::log::DiscardLogs;
use task_executor::runner::{DiscoveryError, check_executable};
use task_executor::schema::Violation;
use task_executor::{ExitInfo, LogSink};
use task_executor::{Outcome, PreparedTask, RunReport, RunRequest, Runner, RunnerConfig, TaskName};
use tokio_util::sync::CancellationToken;

use super::{Context, print_json, task_name};
use crate::cli::{ArgsSource, ExecuteArgs};
use crate::exit::{self, Failure};
use crate::output::{StderrLogs, Style, render_report};

pub async fn run(ctx: &Context, args: ExecuteArgs) -> anyhow::Result<u8> {
    let name = task_name(args.name.get())?;
    if args.batch.is_some() {
        let prepared = prepare(ctx, &name).await?;
        return super::batch::run(ctx, &args, prepared).await;
    }
    let data = read_args(&args.args)?;
    let store = ctx.open_store().await?;
    let prepared = prepare_in(&store, &name).await?;
    if let Err(violations) = prepared.validate_args(&data) {
        return Err(invalid_args(&name, violations).into());
    }

    let runner = runner_for(&args);
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(cancel.clone()));
    let logs: Arc<dyn LogSink> = if ctx.quiet {
        Arc::new(DiscardLogs)
    } else {
        Arc::new(StderrLogs::new())
    };
    let request = RunRequest {
        args: data,
        caller: args.caller.clone(),
        timeout: args.timeout,
        run_id: None,
    };
    // Secret arguments are hidden from the terminal too, if the task echoes them.
    let logs = task_executor::secrets::HideSecrets {
        inner: logs.as_ref(),
        secrets: task_executor::secrets::secrets(&prepared.task().inputs, &request.args),
    };
    let report = if store.has_history() {
        task_executor::queue::run_inline(
            &store,
            &runner,
            &prepared,
            request,
            &logs,
            &cancel,
            args.log_limit,
            INLINE_LEASE,
        )
        .await
        .map_err(Failure::from)?
    } else {
        runner.run(&prepared, request, &logs, &cancel).await
    };
    signals.abort();

    if args.json {
        print_json(&ReportDoc::new(&report))?;
    } else {
        let text = render_report(&report, Style::stdout());
        std::io::stdout().lock().write_all(text.as_bytes())?;
    }
    Ok(exit::for_outcome(&report.outcome))
}

/// Loads `name` from the store, checks its executable and compiles its schemas.
pub async fn prepare(ctx: &Context, name: &TaskName) -> Result<PreparedTask, Failure> {
    prepare_in(&ctx.open_store().await?, name).await
}

/// How long an `execute` run stays `running` in history if this process dies without a word.
const INLINE_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// Loads `name` from `store`, checks its executable and compiles its schemas.
pub async fn prepare_in(
    store: &task_executor::Store,
    name: &TaskName,
) -> Result<PreparedTask, Failure> {
    let task = store
        .get(name)
        .await
        .map_err(Failure::from)?
        .ok_or_else(|| super::tasks::unknown(name))?;
    check_executable(&task.location).map_err(|e| {
        let why = match e {
            DiscoveryError::NotFound { path } => format!("`{}` no longer exists", path.display()),
            other => other.to_string(),
        };
        Failure::nothing_ran(
            "location",
            format!(
                "task `{name}` cannot be run: {why}; restore the file, or point the task at its new place with `manage_tasks register --force --name {name} --location PATH`"
            ),
        )
    })?;
    PreparedTask::new(task).map_err(|e| {
        Failure::nothing_ran(
            "invalid_schema",
            format!("task `{name}` has a stored schema that no longer compiles: {e}; register it again with --force"),
        )
    })
}

/// The error for arguments that break the task's input schema.
pub fn invalid_args(name: &TaskName, violations: Vec<Violation>) -> Failure {
    Failure {
        code: exit::NOTHING_RAN,
        kind: "invalid_args",
        message: format!(
            "arguments for task `{name}` do not match its input schema ({} violation{}); `manage_tasks show {name}` prints the schema",
            violations.len(),
            if violations.len() == 1 { "" } else { "s" }
        ),
        violations,
    }
}

/// The runner configured by `execute`'s flags.
pub fn runner_for(args: &ExecuteArgs) -> Runner {
    Runner::new(RunnerConfig {
        grace: args.grace,
        result_limit: args.result_limit,
        ..RunnerConfig::default()
    })
}

/// Cancels `token` on Ctrl-C or SIGTERM, so the task's process group is stopped cleanly.
///
/// The handlers are installed when this is called, not when the returned
/// future first runs: on the current-thread runtime a spawned future starts
/// only at the caller's next yield, which may come after the task has been
/// started, and a signal arriving in between would kill the executor instead.
pub fn cancel_on_signal(token: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        token.cancel();
    }
}

/// The caller's arguments from `--taskArgs`, `--taskArgs -` (stdin) or `--args-file`; `{}` if none.
pub fn read_args(source: &ArgsSource) -> Result<Value, Failure> {
    let (text, source) = match (source.task_args.as_deref(), source.args_file.as_deref()) {
        (Some("-"), _) => {
            let mut buf = String::new();
            std::io::stdin().read_to_string(&mut buf).map_err(|e| {
                Failure::nothing_ran(
                    "invalid_args",
                    format!("cannot read arguments from stdin: {e}"),
                )
            })?;
            (buf, "stdin".to_owned())
        }
        (Some(s), _) => (s.to_owned(), "--taskArgs".to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::nothing_ran(
                    "invalid_args",
                    format!("cannot read arguments file `{}`: {e}", path.display()),
                )
            })?;
            (text, format!("`{}`", path.display()))
        }
        (None, None) => return Ok(Value::Object(Default::default())),
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        Failure::nothing_ran(
            "invalid_json",
            format!(
                "arguments in {source} are not valid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    if !value.is_object() {
        return Err(Failure::nothing_ran(
            "invalid_args",
            format!(
                "arguments in {source} must be a JSON object (the envelope's `data`), not {}",
                task_executor::protocol::json_type(&value)
            ),
        ));
    }
    Ok(value)
}

/// The `--json` document for a finished run, borrowed from its report.
///
/// Written straight out rather than built as a `Value`: `execute --batch`
/// writes one per run. The fields are declared in alphabetical order, the
/// order `serde_json` gives a `Value`'s (sorted) keys, so both forms print the
/// same bytes.
#[derive(Debug, serde::Serialize)]
pub struct ReportDoc<'a> {
    duration_ms: f64,
    error: Option<String>,
    exit_code: Option<i32>,
    /// The input line, for `execute --batch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    outcome: &'static str,
    payload: Option<&'a Value>,
    reason: Option<&'a str>,
    run_id: &'a str,
    signal: Option<&'a str>,
    started_at: String,
    status: Option<i64>,
    success: bool,
    task: &'a TaskName,
    violations: Value,
}

impl<'a> ReportDoc<'a> {
    /// The document for `report`, without a line number.
    pub fn new(report: &'a RunReport) -> Self {
        let result = report.outcome.result();
        let (exit_code, signal) = match &report.exit {
            Some(ExitInfo::Code { code }) => (Some(*code), None),
            Some(ExitInfo::Signal { name, .. }) => (None, Some(name.as_str())),
            None => (None, None),
        };
        let violations = match &report.outcome {
            Outcome::OutputViolation { violations, .. } => json!(violations),
            _ => json!([]),
        };
        Self {
            duration_ms: report.duration.as_secs_f64() * 1000.0,
            error: (!matches!(report.outcome, Outcome::Completed { .. }))
                .then(|| report.outcome.describe()),
            exit_code,
            line: None,
            outcome: report.outcome.kind(),
            payload: result.map(|r| &r.payload),
            reason: result.map(|r| r.reason.as_str()),
            run_id: &report.run_id,
            signal,
            started_at: humantime::format_rfc3339_millis(report.started_at).to_string(),
            status: result.map(|r| r.status),
            success: report.outcome.is_success(),
            task: &report.task,
            violations,
        }
    }
}

/// The `--json` document for a finished run, as a `Value` to add fields to.
pub fn report_json(report: &RunReport) -> Value {
    serde_json::to_value(ReportDoc::new(report)).expect("a report serializes to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use task_executor::protocol::TaskResult;

    fn report(outcome: Outcome, exit: Option<ExitInfo>) -> RunReport {
        RunReport {
            run_id: "01a2-run".into(),
            task: TaskName::new("t").unwrap(),
            outcome,
            exit,
            started_at: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            duration: std::time::Duration::from_micros(2500),
        }
    }

    /// Its fields must stay in alphabetical order: that is the order the
    /// `Value` form (sorted keys) prints, and what scripts have been reading.
    #[test]
    fn the_document_prints_the_same_bytes_as_its_value_form() {
        let completed = Outcome::Completed {
            result: TaskResult {
                status: 1,
                reason: "ok".into(),
                payload: json!({"z": 1, "a": [true]}),
            },
        };
        let reports = [
            report(completed, Some(ExitInfo::Code { code: 0 })),
            report(
                Outcome::Signalled {
                    signal: "SIGKILL".into(),
                },
                Some(ExitInfo::Signal {
                    number: 9,
                    name: "SIGKILL".into(),
                }),
            ),
            report(Outcome::Cancelled, None),
        ];
        for r in &reports {
            let direct = serde_json::to_string(&ReportDoc::new(r)).unwrap();
            let via_value = serde_json::to_string(&report_json(r)).unwrap();
            assert_eq!(direct, via_value);
            let mut with_line = ReportDoc::new(r);
            with_line.line = Some(7);
            let mut value = report_json(r);
            value["line"] = json!(7);
            assert_eq!(
                serde_json::to_string(&with_line).unwrap(),
                value.to_string()
            );
        }
        assert!(
            serde_json::to_string(&ReportDoc::new(&reports[0]))
                .unwrap()
                .starts_with(r#"{"duration_ms":2.5,"error":null,"exit_code":0,"outcome":"completed","payload":{"a":[true],"z":1}"#)
        );
    }
}
