//! `submit`, `worker` and `schedule`: the durable queue from the command line.

use std::io::{BufRead, Write};
use std::time::Duration;

use task_executor::history::to_ms;
use task_executor::queue::{WorkerConfig, WorkerEvent};
use task_executor::service::{ServiceConfig, SubmitError, SubmitOptions};
use task_executor::store::{Availability, MAX_RETRY, StoreNotice};
use task_executor::view::{ListView, RunView, ScheduleView, time_text};
use task_executor::{Runner, RunnerConfig};
use tokio_util::sync::CancellationToken;

use super::{Context, cancel_on_signal, parse_args, print_json, read_args, task_name, whole_ms};
use crate::cli::{ScheduleAddArgs, ScheduleCommand, SubmitArgs, WorkerArgs};
use crate::exit::{self, Failure};
use crate::output::{Clean, Style, clean, render_run};

/// Says, on stderr, that `task`'s runs wait for a worker on another machine.
fn note_not_here(ctx: &Context, task: &task_executor::service::Prepared) {
    if let Some(why) = task.not_here()
        && !ctx.quiet
    {
        let _ = writeln!(
            std::io::stderr(),
            "{}",
            clean(&format!(
                "note: task `{}` cannot run on this machine ({why}); its runs wait for a worker \
                 on a machine where it can",
                task.task().name
            ))
        );
    }
}

pub async fn submit(ctx: &Context, args: SubmitArgs) -> anyhow::Result<u8> {
    let name = task_name(args.name.get())?;
    let service = ctx.service()?;
    let task = service.prepare_to_queue(&name).await?;
    note_not_here(ctx, &task);
    let available = match (&args.at, args.delay) {
        (Some(at), _) => humantime::parse_rfc3339_weak(at.trim())
            .map(|t| Availability::At(to_ms(t)))
            .map_err(|e| {
                Failure::nothing_ran(
                    "usage",
                    format!("--at `{at}` is not an RFC 3339 time ({e}); e.g. 2026-01-01T09:00:00Z"),
                )
            })?,
        (None, Some(d)) => Availability::After(d),
        (None, None) => Availability::Now,
    };
    let options = SubmitOptions {
        caller: args.caller.clone(),
        priority: args.priority,
        available,
        timeout: args.timeout,
        audit: None,
    };

    if let Some(path) = &args.batch {
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(
                |e| {
                    Failure::nothing_ran(
                        "batch_input",
                        format!("cannot read batch file `{}`: {e}", path.display()),
                    )
                },
            )?))
        };
        let mut all = Vec::new();
        let mut lines = Vec::new();
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line?;
            let no = i + 1;
            let nothing = "; nothing was queued";
            let text = std::str::from_utf8(&line).map_err(|_| {
                Failure::nothing_ran(
                    "invalid_json",
                    format!("line {no} of the batch is not valid UTF-8{nothing}"),
                )
            })?;
            if text.trim().is_empty() {
                continue;
            }
            let data = parse_args(text, &format!("line {no} of the batch")).map_err(|mut f| {
                f.message.push_str(nothing);
                f
            })?;
            all.push(data);
            lines.push(no);
        }
        let runs = service
            .submit(&task, &all, &options)
            .await
            .map_err(|e| match e {
                SubmitError::InvalidArgs { index, source } => {
                    let mut f = Failure::from(source);
                    f.message = format!("line {}: {}; nothing was queued", lines[index], f.message);
                    f
                }
                other => Failure::from(other),
            })?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for r in &runs {
            if args.json {
                serde_json::to_writer(&mut out, &RunView::from(r))?;
                out.write_all(b"\n")?;
            } else {
                writeln!(out, "{}", r.id)?;
            }
        }
        out.flush()?;
        return Ok(exit::SUCCESS);
    }

    let data = read_args(&args.args)?;
    let run = service
        .submit(&task, std::slice::from_ref(&data), &options)
        .await
        .map_err(|e| match e {
            SubmitError::InvalidArgs { source, .. } => Failure::from(source),
            other => Failure::from(other),
        })?
        .remove(0);
    if !args.wait {
        if args.json {
            print_json(&RunView::from(&run))?;
        } else {
            writeln!(std::io::stdout(), "{}", run.id)?;
        }
        return Ok(exit::SUCCESS);
    }
    if !ctx.quiet {
        writeln!(
            std::io::stderr(),
            "queued run {}; waiting for a worker",
            run.id
        )?;
    }
    let quiet = ctx.quiet;
    let mut notices = |n: StoreNotice| {
        if !quiet {
            let text = super::store_notice(&n, "waiting for the run");
            let _ = writeln!(std::io::stderr(), "{}", clean(&text));
        }
    };
    let done = service.wait(&run.id, None, &mut notices).await?;
    if args.json {
        print_json(&RunView::from(&done))?;
    } else {
        std::io::stdout()
            .lock()
            .write_all(render_run(&done, Style::stdout()).as_bytes())?;
    }
    Ok(exit::for_run(&done))
}

pub async fn worker(ctx: &Context, args: WorkerArgs) -> anyhow::Result<u8> {
    let runner = Runner::new(RunnerConfig {
        grace: args.grace,
        result_limit: args.result_limit,
        ..RunnerConfig::default()
    });
    // A connection per slot, one for the loop's own calls, one to spare.
    let service = ctx.service_sized(
        runner,
        ServiceConfig::default(),
        args.concurrency as usize + 2,
    )?;
    let listens = service.hears_new_work();
    let config = WorkerConfig {
        id: args
            .id
            .clone()
            .unwrap_or_else(|| WorkerConfig::default().id),
        concurrency: usize::from(args.concurrency),
        lease: args.lease,
        poll: args.poll.unwrap_or(if listens {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(100)
        }),
        listen: args.poll.is_none(),
        grace: args.drain,
        log_limit: args.log_limit,
        until_idle: args.until_idle,
        wait_delayed: args.wait_delayed,
        keep_runs: (args.keep_runs > 0).then_some(args.keep_runs),
        tags: args.tags.clone().map(|t| t.0).unwrap_or_default(),
        recheck: args.recheck,
    };
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    let quiet = ctx.quiet;
    let mut err = std::io::stderr();
    if !quiet {
        let tags = if config.tags.is_empty() {
            String::new()
        } else {
            format!(", tags {}", config.tags.join(", "))
        };
        let _ = writeln!(
            err,
            "worker {} started: concurrency {}, lease {}{tags}",
            config.id,
            config.concurrency,
            humantime::format_duration(config.lease)
        );
    }
    let mut events = |e: WorkerEvent| {
        if quiet {
            return;
        }
        let _ = writeln!(std::io::stderr(), "{}", clean(&describe(e)));
    };
    let stats = service
        .work(&config, &shutdown, &mut events)
        .await
        .map_err(Failure::from)?;
    signals.abort();
    if !quiet {
        let left = if stats.left > 0 {
            format!(", {} left for other workers", stats.left)
        } else {
            String::new()
        };
        let _ = writeln!(
            err,
            "worker {} stopped: {} succeeded, {} reported another status, {} failed, {} retried, \
             {} requeued at shutdown, {} lost{left}",
            config.id,
            stats.completed - stats.other_status,
            stats.other_status,
            stats.failed,
            stats.retried,
            stats.released,
            stats.lost
        );
    }
    Ok(exit::SUCCESS)
}

/// A line about what a worker did, for stderr.
pub fn describe(e: WorkerEvent) -> String {
    match e {
        WorkerEvent::Started { run, task, attempt } => {
            format!("run {run} ({task}) attempt {attempt} started")
        }
        WorkerEvent::Finished { run, task, state } => format!("run {run} ({task}) {state}"),
        WorkerEvent::LeaseLost { run, message } => {
            format!("run {run}: {message}; this attempt's result was not recorded")
        }
        WorkerEvent::Released { run } => {
            format!("run {run}: stopped at shutdown and queued again")
        }
        WorkerEvent::Expired { count } => {
            format!("{count} runs with lapsed leases settled (requeued, failed or cancelled)")
        }
        WorkerEvent::Fired { run, task } => format!("schedule queued run {run} ({task})"),
        WorkerEvent::Unrunnable { run, message } => format!("run {run} failed: {message}"),
        WorkerEvent::StoreUnavailable { error, retry_in } => format!(
            "store unavailable: {error}; running tasks go on, no new runs are claimed, \
             trying again in {} (backing off to every {})",
            whole_ms(retry_in),
            whole_ms(MAX_RETRY)
        ),
        WorkerEvent::StoreBack { after } => {
            format!("store back after {}; claiming runs again", whole_ms(after))
        }
        WorkerEvent::Unrecorded { run, message } => format!("run {run}: {message}"),
        WorkerEvent::LeftForOthers { run, message, .. } => format!("run {run}: {message}"),
    }
}

pub async fn schedule(ctx: &Context, cmd: ScheduleCommand) -> anyhow::Result<u8> {
    let service = ctx.service()?;
    match cmd {
        ScheduleCommand::Add(a) => add(ctx, a).await,
        ScheduleCommand::List(a) => {
            let all = service.schedules().await.map_err(Failure::from)?;
            if a.json {
                print_json(&ListView::all(all.iter().map(ScheduleView::from).collect()))?;
                return Ok(exit::SUCCESS);
            }
            let mut out = std::io::stdout().lock();
            if all.is_empty() {
                writeln!(
                    out,
                    "No schedules. Add one with: manage_tasks schedule add NAME --cron EXPR"
                )?;
                return Ok(exit::SUCCESS);
            }
            let mut table = crate::output::table(["ID", "TASK", "CRON", "NEXT", "ARGS"]);
            for s in &all {
                table.add_row([
                    s.id.clone(),
                    Clean(&s.task).to_string(),
                    clean(&s.cron).into_owned(),
                    time_text(s.next_fire_at),
                    Clean(&s.args).to_string(),
                ]);
            }
            writeln!(out, "{table}")?;
            Ok(exit::SUCCESS)
        }
        ScheduleCommand::Remove(a) => {
            service.remove_schedule(&a.id).await?;
            writeln!(std::io::stdout(), "Schedule {} removed", a.id)?;
            Ok(exit::SUCCESS)
        }
    }
}

async fn add(ctx: &Context, a: ScheduleAddArgs) -> anyhow::Result<u8> {
    let name = task_name(a.name.get())?;
    let service = ctx.service()?;
    let task = service.prepare_to_queue(&name).await?;
    note_not_here(ctx, &task);
    let data = read_args(&a.args)?;
    let schedule = service
        .add_schedule(&task, &a.cron, &data, &a.caller)
        .await?;
    if a.json {
        print_json(&ScheduleView::from(&schedule))?;
    } else {
        writeln!(std::io::stdout(), "{}", schedule.id)?;
        writeln!(
            std::io::stderr(),
            "first run at {}",
            time_text(schedule.next_fire_at)
        )?;
    }
    Ok(exit::SUCCESS)
}
