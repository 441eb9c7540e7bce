//! `runs list|show|logs|cancel|prune`: reading and trimming run history.

use std::io::Write;
use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::{Value, json};
use task_executor::Store;
use task_executor::Stream;
use task_executor::history::{Cursor, RunFilter, RunRecord, RunState, from_ms, now_ms};
use task_executor::queue::CancelResult;

use super::execute::report_json;
use super::{Context, print_json, task_name};
use crate::cli::{PruneArgs, RunIdArgs, RunsCommand, RunsListArgs, RunsLogsArgs};
use crate::exit::{self, Failure};
use crate::output::{Style, render_report};

pub async fn run(ctx: &Context, cmd: RunsCommand) -> anyhow::Result<u8> {
    let store = ctx.open_store().await?;
    match cmd {
        RunsCommand::List(a) => list(&store, a).await,
        RunsCommand::Show(a) => show(&store, a).await,
        RunsCommand::Logs(a) => logs(&store, a).await,
        RunsCommand::Cancel(a) => cancel(&store, a).await,
        RunsCommand::Prune(a) => prune(&store, a).await,
    }
}

/// RFC 3339 (milliseconds, UTC) of an epoch-ms time.
pub fn time_text(ms: i64) -> String {
    humantime::format_rfc3339_millis(from_ms(ms)).to_string()
}

/// The `--json` document of a run: `execute --json`'s fields plus the history's.
pub fn run_json(r: &RunRecord) -> Value {
    let mut doc = match r.report() {
        Some(report) => report_json(&report),
        None => json!({
            "task": r.task, "run_id": r.id, "success": false, "outcome": null,
            "status": null, "reason": null, "payload": null, "error": r.error,
            "violations": [], "exit_code": null, "signal": null,
            "started_at": r.started_at.map(time_text), "duration_ms": null,
        }),
    };
    let extra = json!({
        "state": r.state,
        "args": r.args,
        "caller": r.caller,
        "attempt": r.attempt,
        "max_attempts": r.max_attempts,
        "priority": r.priority,
        "worker": r.worker,
        "cancel_requested": r.cancel_requested,
        "queued_at": time_text(r.queued_at),
        "available_at": time_text(r.available_at),
        "finished_at": r.finished_at.map(time_text),
        "log_cut_lines": r.log_cut_lines,
        "log_cut_bytes": r.log_cut_bytes,
        "schedule": r.schedule,
    });
    if let (Value::Object(doc), Value::Object(extra)) = (&mut doc, extra) {
        doc.extend(extra);
        if r.state != RunState::Completed {
            // A queued or running run has not succeeded yet, whatever an earlier attempt said.
            doc.insert("success".into(), json!(false));
        }
        if doc.get("error").is_none_or(Value::is_null) {
            doc.insert("error".into(), json!(r.error));
        }
    }
    doc
}

/// The exit code for a finished run, as `execute` would exit.
pub fn exit_for(r: &RunRecord) -> u8 {
    match (&r.outcome, r.state) {
        (Some(o), RunState::Completed | RunState::Failed) => exit::for_outcome(o),
        _ => exit::RUN_FAILED,
    }
}

/// Human rendering of a finished (or not) run.
pub fn render_run(r: &RunRecord, style: Style) -> String {
    let mut out = String::new();
    match (r.state.is_terminal(), r.report()) {
        (true, Some(report)) if r.state != RunState::Cancelled || r.outcome.is_some() => {
            out.push_str(&render_report(&report, style));
        }
        _ => {
            let why = r.error.clone().unwrap_or_default();
            out.push_str(&format!(
                "Run {} of task {} is {}{}\n",
                r.id,
                style.bold(r.task.as_str()),
                r.state,
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            ));
        }
    }
    out
}

async fn get(store: &Store, id: &str) -> Result<RunRecord, Failure> {
    store.get_run(id).await?.ok_or_else(|| {
        Failure::nothing_ran(
            "unknown_run",
            format!("run `{id}` is not in the history; `manage_tasks runs list` shows recent runs"),
        )
    })
}

fn parse_since(s: &str) -> Result<i64, Failure> {
    if let Ok(d) = humantime::parse_duration(s.trim()) {
        return Ok(now_ms() - d.as_millis() as i64);
    }
    humantime::parse_rfc3339_weak(s.trim())
        .map(task_executor::history::to_ms)
        .map_err(|_| {
            Failure::nothing_ran(
                "usage",
                format!("--since `{s}` is neither a duration (`1h`, `30m`) nor an RFC 3339 time"),
            )
        })
}

async fn list(store: &Store, a: RunsListArgs) -> anyhow::Result<u8> {
    let filter = RunFilter {
        task: a.task.as_deref().map(task_name).transpose()?,
        state: a.state.as_deref().and_then(RunState::parse),
        since: a.since.as_deref().map(parse_since).transpose()?,
        limit: a.limit as usize,
        after: a
            .after
            .as_deref()
            .map(|c| {
                Cursor::decode(c).ok_or_else(|| {
                    Failure::nothing_ran(
                        "usage",
                        format!("--after `{c}` is not a cursor printed by `runs list`"),
                    )
                })
            })
            .transpose()?,
    };
    let page = store.list_runs(&filter).await.map_err(Failure::from)?;
    let next = page.next.as_ref().map(Cursor::encode);
    if a.json {
        let runs: Vec<Value> = page.runs.iter().map(run_json).collect();
        print_json(&json!({"runs": runs, "next": next}))?;
        return Ok(exit::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if page.runs.is_empty() {
        writeln!(out, "No runs.")?;
        return Ok(exit::SUCCESS);
    }
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "RUN", "TASK", "STATE", "ATTEMPT", "QUEUED", "DURATION", "OUTCOME",
        ]);
    for r in &page.runs {
        let duration = match (r.started_at, r.finished_at) {
            (Some(s), Some(f)) => {
                humantime::format_duration(Duration::from_millis((f - s).max(0) as u64)).to_string()
            }
            _ => "-".into(),
        };
        let outcome = match &r.outcome {
            Some(task_executor::Outcome::Completed { result }) => {
                format!("status {}", result.status)
            }
            Some(o) => o.kind().to_owned(),
            None => r.error.clone().unwrap_or_else(|| "-".into()),
        };
        table.add_row([
            r.id.clone(),
            r.task.to_string(),
            r.state.to_string(),
            format!("{}/{}", r.attempt, r.max_attempts),
            humantime::format_rfc3339_seconds(from_ms(r.queued_at)).to_string(),
            duration,
            outcome,
        ]);
    }
    writeln!(out, "{table}")?;
    if let Some(next) = next {
        writeln!(
            std::io::stderr(),
            "more: manage_tasks runs list --after {next}"
        )?;
    }
    Ok(exit::SUCCESS)
}

async fn show(store: &Store, a: RunIdArgs) -> anyhow::Result<u8> {
    let r = get(store, &a.id).await?;
    if a.json {
        print_json(&run_json(&r))?;
        return Ok(exit::SUCCESS);
    }
    let style = Style::stdout();
    let mut out = std::io::stdout().lock();
    let opt = |ms: Option<i64>| ms.map(time_text).unwrap_or_else(|| "-".into());
    writeln!(out, "{} {}", style.bold("run"), r.id)?;
    writeln!(out, "task:      {}", r.task)?;
    writeln!(out, "state:     {}", r.state)?;
    writeln!(out, "attempt:   {} of {}", r.attempt, r.max_attempts)?;
    writeln!(out, "caller:    {}", r.caller)?;
    writeln!(out, "worker:    {}", r.worker.as_deref().unwrap_or("-"))?;
    writeln!(out, "queued:    {}", time_text(r.queued_at))?;
    writeln!(out, "started:   {}", opt(r.started_at))?;
    writeln!(out, "finished:  {}", opt(r.finished_at))?;
    writeln!(out, "arguments: {}", r.args)?;
    if let Some(o) = &r.outcome {
        let text = match o {
            task_executor::Outcome::Completed { result } => {
                format!("status {} ({})", result.status, result.reason)
            }
            other => other.describe(),
        };
        writeln!(out, "outcome:   {text}")?;
        if let Some(result) = o.result() {
            writeln!(out, "payload:   {}", result.payload)?;
        }
    }
    if let Some(e) = &r.error {
        writeln!(out, "note:      {e}")?;
    }
    Ok(exit::SUCCESS)
}

async fn logs(store: &Store, a: RunsLogsArgs) -> anyhow::Result<u8> {
    let mut r = get(store, &a.id).await?;
    let mut attempt = a.attempt.unwrap_or(r.attempt.max(1));
    let mut next_seq = 0u64;
    let mut marked = false;
    let mut out = std::io::stdout().lock();
    loop {
        let lines = store
            .run_logs(&r.id, attempt, next_seq)
            .await
            .map_err(Failure::from)?;
        for l in &lines {
            if l.seq > next_seq && !marked {
                marked = true;
                let cut = store.get_run(&r.id).await?.unwrap_or(r.clone());
                let marker = format!(
                    "[… {} lines ({} bytes) cut from the middle of this log …]",
                    cut.log_cut_lines, cut.log_cut_bytes
                );
                if a.json {
                    serde_json::to_writer(
                        &mut out,
                        &json!({"cut": {"lines": cut.log_cut_lines, "bytes": cut.log_cut_bytes}}),
                    )?;
                    out.write_all(b"\n")?;
                } else {
                    writeln!(out, "{marker}")?;
                }
            }
            if a.json {
                serde_json::to_writer(&mut out, l)?;
                out.write_all(b"\n")?;
            } else {
                let tag = match l.stream {
                    Stream::Stdout => "out",
                    Stream::Stderr => "err",
                };
                writeln!(
                    out,
                    "{tag}| {}{}",
                    l.text,
                    if l.truncated { " […line cut]" } else { "" }
                )?;
            }
            next_seq = l.seq + 1;
        }
        out.flush()?;
        if !a.follow || r.state.is_terminal() && lines.is_empty() {
            break;
        }
        if lines.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        r = get(store, &r.id).await?;
        if a.attempt.is_none() && r.attempt > attempt {
            attempt = r.attempt;
            next_seq = 0;
            marked = false;
            writeln!(out, "[attempt {attempt}]")?;
        }
    }
    Ok(exit::SUCCESS)
}

async fn cancel(store: &Store, a: RunIdArgs) -> anyhow::Result<u8> {
    let r = get(store, &a.id).await?;
    let result = store.cancel_run(&r.id, now_ms()).await?.ok_or_else(|| {
        Failure::nothing_ran(
            "unknown_run",
            format!("run `{}` is not in the history", a.id),
        )
    })?;
    let text = match result {
        CancelResult::Cancelled => format!("Run {} cancelled before it ran", r.id),
        CancelResult::Requested => format!("Run {} is running; its worker will stop it", r.id),
        CancelResult::AlreadyOver(state) => {
            format!("Run {} is already {state}; nothing to cancel", r.id)
        }
    };
    if a.json {
        print_json(&json!({"run_id": r.id, "result": result}))?;
    } else {
        writeln!(std::io::stdout(), "{text}")?;
    }
    Ok(exit::SUCCESS)
}

async fn prune(store: &Store, a: PruneArgs) -> anyhow::Result<u8> {
    let before = a.older_than.map(|d| now_ms() - d.as_millis() as i64);
    let pruned = store.prune(before, a.keep).await.map_err(Failure::from)?;
    writeln!(std::io::stdout(), "Pruned {} finished runs", pruned.runs)?;
    Ok(exit::SUCCESS)
}
