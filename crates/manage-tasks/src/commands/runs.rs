//! `runs list|show|logs|cancel|prune`: reading and trimming run history.

use std::io::Write;

use task_executor::history::{Cursor, RunFilter, RunState, from_ms, now_ms};
use task_executor::queue::CancelResult;
use task_executor::service::{LogEvent, Service};
use task_executor::store::Prune;
use task_executor::view::{
    CancelView, CutCounts, ListView, LogCutView, LogLineView, RunView, time_text,
};
use task_executor::{Outcome, Stream};

use super::{Context, print_json, task_name};
use crate::cli::{PruneArgs, RunIdArgs, RunsCommand, RunsListArgs, RunsLogsArgs};
use crate::exit::{self, Failure};
use crate::output::{Clean, Style, clean, took};

pub async fn run(ctx: &Context, cmd: RunsCommand) -> anyhow::Result<u8> {
    let service = ctx.service()?;
    match cmd {
        RunsCommand::List(a) => list(&service, a).await,
        RunsCommand::Show(a) => show(&service, a).await,
        RunsCommand::Logs(a) => logs(&service, a, ctx.quiet).await,
        RunsCommand::Cancel(a) => cancel(&service, a).await,
        RunsCommand::Prune(a) => prune(&service, a).await,
    }
}

pub(super) fn parse_since(s: &str) -> Result<i64, Failure> {
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

async fn list(service: &Service, a: RunsListArgs) -> anyhow::Result<u8> {
    let task = a.name.as_deref().or(a.name_pos.as_deref());
    let filter = RunFilter {
        task: task.map(task_name).transpose()?,
        state: a.state.as_deref().and_then(RunState::parse),
        since: a.since.as_deref().map(parse_since).transpose()?,
        limit: a.limit as usize,
        after: super::after_cursor(a.after.as_deref(), "runs list", Cursor::decode)?,
    };
    let page = service.runs(&filter).await.map_err(Failure::from)?;
    let next = page.next.as_ref().map(Cursor::encode);
    if a.json {
        print_json(&ListView {
            items: page.runs.iter().map(RunView::from).collect(),
            next,
        })?;
        return Ok(exit::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if page.runs.is_empty() {
        writeln!(out, "No runs.")?;
        return Ok(exit::SUCCESS);
    }
    let mut table = crate::output::table([
        "RUN", "TASK", "STATE", "ATTEMPT", "QUEUED", "DURATION", "OUTCOME",
    ]);
    for r in &page.runs {
        let duration = r.duration_ms().map(took).unwrap_or_else(|| "-".into());
        let outcome = match &r.outcome {
            Some(Outcome::Completed { result }) => format!("status {}", result.status),
            Some(o) => o.kind().to_owned(),
            None => r
                .error
                .as_ref()
                .map(|e| clean(&e.kind).into_owned())
                .unwrap_or_else(|| "-".into()),
        };
        table.add_row([
            r.id.clone(),
            clean(r.task.as_str()).into_owned(),
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
            "more: manage_tasks runs list {}",
            next_page_args(&a, &next)
        )?;
    }
    Ok(exit::SUCCESS)
}

/// The arguments that list the next page: the same filters, `--after` the cursor.
fn next_page_args(a: &RunsListArgs, cursor: &str) -> String {
    let mut args = Vec::new();
    if let Some(task) = a.name.as_deref().or(a.name_pos.as_deref()) {
        args.push(format!("--name {task}"));
    }
    if let Some(state) = &a.state {
        args.push(format!("--state {state}"));
    }
    if let Some(since) = &a.since {
        args.push(format!("--since {}", shell_word(since)));
    }
    if a.limit != 20 {
        args.push(format!("--limit {}", a.limit));
    }
    args.push(format!("--after {cursor}"));
    args.join(" ")
}

/// `s` as one shell word.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:+/".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

async fn show(service: &Service, a: RunIdArgs) -> anyhow::Result<u8> {
    let r = service.run(&a.id).await?;
    let waiting = service.waiting(&r).await.map_err(Failure::from)?;
    if a.json {
        let mut view = RunView::from(&r);
        view.waiting = waiting;
        print_json(&view)?;
        return Ok(exit::SUCCESS);
    }
    let style = Style::stdout();
    let mut out = std::io::stdout().lock();
    let opt = |ms: Option<i64>| ms.map(time_text).unwrap_or_else(|| "-".into());
    writeln!(out, "{} {}", style.bold("run"), r.id)?;
    writeln!(out, "task:      {}", Clean(&r.task))?;
    writeln!(out, "state:     {}", r.state)?;
    writeln!(out, "attempt:   {} of {}", r.attempt, r.max_attempts)?;
    writeln!(out, "caller:    {}", clean(&r.caller))?;
    writeln!(
        out,
        "worker:    {}",
        clean(r.worker.as_deref().unwrap_or("-"))
    )?;
    writeln!(out, "queued:    {}", time_text(r.queued_at))?;
    if r.available_at > r.queued_at {
        writeln!(out, "not before: {}", time_text(r.available_at))?;
    }
    writeln!(out, "started:   {}", opt(r.started_at))?;
    writeln!(out, "finished:  {}", opt(r.finished_at))?;
    writeln!(out, "arguments: {}", Clean(&r.args))?;
    if let Some(o) = &r.outcome {
        let text = match o {
            Outcome::Completed { result } => {
                format!("status {} ({})", result.status, result.reason)
            }
            other => other.describe(),
        };
        writeln!(out, "outcome:   {}", clean(&text))?;
        if let Some(result) = o.result() {
            writeln!(out, "payload:   {}", Clean(&result.payload))?;
        }
    }
    if let Some(e) = &r.error {
        writeln!(out, "note:      {} ({})", clean(&e.message), clean(&e.kind))?;
    }
    if let Some(why) = &waiting {
        writeln!(out, "waiting:   {}", clean(why))?;
    }
    Ok(exit::SUCCESS)
}

async fn logs(service: &Service, a: RunsLogsArgs, quiet: bool) -> anyhow::Result<u8> {
    let mut stream = service.logs(&a.id, a.attempt, a.follow).await?;
    let mut out = std::io::stdout().lock();
    while let Some(event) = stream.next().await? {
        match event {
            LogEvent::Line { attempt, entry } => {
                if a.json {
                    serde_json::to_writer(&mut out, &LogLineView::new(attempt, &entry))?;
                    out.write_all(b"\n")?;
                } else {
                    let tag = match entry.stream {
                        Stream::Stdout => "out",
                        Stream::Stderr => "err",
                    };
                    let cut = if entry.truncated {
                        " […line cut]"
                    } else {
                        ""
                    };
                    writeln!(out, "{tag}| {}{cut}", clean(&entry.text))?;
                }
            }
            LogEvent::Cut { lines, bytes } => {
                if a.json {
                    let view = LogCutView {
                        cut: CutCounts { lines, bytes },
                    };
                    serde_json::to_writer(&mut out, &view)?;
                    out.write_all(b"\n")?;
                } else {
                    writeln!(
                        out,
                        "[… {lines} lines ({bytes} bytes) cut from the middle of this log …]"
                    )?;
                }
            }
            LogEvent::Attempt(n) => {
                if !a.json {
                    writeln!(out, "[attempt {n}]")?;
                }
            }
            LogEvent::Store(notice) => {
                if !quiet {
                    let text = super::store_notice(&notice, "following the log");
                    let _ = writeln!(std::io::stderr(), "{}", clean(&text));
                }
            }
        }
        out.flush()?;
    }
    Ok(exit::SUCCESS)
}

async fn cancel(service: &Service, a: RunIdArgs) -> anyhow::Result<u8> {
    let done = service.cancel(&a.id).await?;
    if a.json {
        print_json(&CancelView {
            run_id: &done.run_id,
            result: done.result,
        })?;
        return Ok(exit::SUCCESS);
    }
    let id = &done.run_id;
    let text = match done.result {
        CancelResult::Cancelled => format!("Run {id} cancelled before it ran"),
        CancelResult::Requested => format!("Run {id} is running; its worker will stop it"),
        CancelResult::AlreadyOver(state) => {
            format!("Run {id} is already {state}; nothing to cancel")
        }
    };
    writeln!(std::io::stdout(), "{text}")?;
    Ok(exit::SUCCESS)
}

async fn prune(service: &Service, a: PruneArgs) -> anyhow::Result<u8> {
    let prune = Prune {
        older_than: a.older_than,
        keep: a.keep,
    };
    let pruned = service.prune(&prune).await.map_err(Failure::from)?;
    if a.json {
        print_json(&serde_json::json!({ "pruned": pruned }))?;
    } else {
        writeln!(std::io::stdout(), "Pruned {pruned} finished runs")?;
    }
    Ok(exit::SUCCESS)
}
