//! `submit`, `worker` and `schedule`: the durable queue from the command line.

use std::io::{BufRead, Write};
use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::{Value, json};
use task_executor::history::{now_ms, to_ms};
use task_executor::queue::{NewRun, NewSchedule, WorkerConfig, WorkerEvent, run_worker};
use task_executor::{Runner, RunnerConfig, Store, StoreError};
use tokio_util::sync::CancellationToken;

use super::execute::{cancel_on_signal, invalid_args, prepare_in, read_args};
use super::runs::{exit_for, render_run, run_json, time_text};
use super::{Context, print_json, task_name};
use crate::cli::{ScheduleAddArgs, ScheduleCommand, SubmitArgs, WorkerArgs};
use crate::exit::{self, Failure};
use crate::output::Style;

/// Opens the store and checks it has a queue.
async fn queue_store(ctx: &Context) -> Result<Store, Failure> {
    let store = ctx.open_store().await?;
    if !store.has_history() {
        return Err(StoreError::Unsupported {
            what: "the run queue",
            backend: "yaml",
        }
        .into());
    }
    Ok(store)
}

pub async fn submit(ctx: &Context, args: SubmitArgs) -> anyhow::Result<u8> {
    let name = task_name(args.name.get())?;
    let store = queue_store(ctx).await?;
    let prepared = prepare_in(&store, &name).await?;
    let available_at = match (&args.at, args.delay) {
        (Some(at), _) => humantime::parse_rfc3339_weak(at.trim())
            .map(to_ms)
            .map_err(|e| {
                Failure::nothing_ran(
                    "usage",
                    format!("--at `{at}` is not an RFC 3339 time ({e}); e.g. 2026-01-01T09:00:00Z"),
                )
            })?,
        (None, Some(d)) => now_ms() + d.as_millis() as i64,
        (None, None) => now_ms(),
    };
    let make = |data: &Value| {
        let mut run = NewRun::new(prepared.task(), data, &args.caller);
        if let Some(p) = args.priority {
            run.priority = p;
        }
        run.timeout = args.timeout;
        run.available_at = available_at;
        run
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
        let mut runs = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let data: Value = serde_json::from_str(&line).map_err(|e| {
                Failure::nothing_ran(
                    "invalid_json",
                    format!(
                        "line {} of the batch is not valid JSON: {e}; nothing was queued",
                        i + 1
                    ),
                )
            })?;
            if let Err(violations) = prepared.validate_args(&data) {
                let mut f = invalid_args(&name, violations);
                f.message = format!("line {}: {}; nothing was queued", i + 1, f.message);
                return Err(f.into());
            }
            runs.push(make(&data));
        }
        store.enqueue(&runs).await.map_err(Failure::from)?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for r in &runs {
            if args.json {
                serde_json::to_writer(&mut out, &json!({"run_id": r.id}))?;
                out.write_all(b"\n")?;
            } else {
                writeln!(out, "{}", r.id)?;
            }
        }
        out.flush()?;
        return Ok(exit::SUCCESS);
    }

    let data = read_args(&args.args)?;
    if let Err(violations) = prepared.validate_args(&data) {
        return Err(invalid_args(&name, violations).into());
    }
    let run = make(&data);
    store
        .enqueue(std::slice::from_ref(&run))
        .await
        .map_err(Failure::from)?;
    if !args.wait {
        if args.json {
            print_json(
                &json!({"run_id": run.id, "state": "queued", "available_at": time_text(run.available_at)}),
            )?;
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
    let record = loop {
        match store.get_run(&run.id).await.map_err(Failure::from)? {
            Some(r) if r.state.is_terminal() => break r,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    if args.json {
        print_json(&run_json(&record))?;
    } else {
        std::io::stdout()
            .lock()
            .write_all(render_run(&record, Style::stdout()).as_bytes())?;
    }
    Ok(exit_for(&record))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub async fn worker(ctx: &Context, args: WorkerArgs) -> anyhow::Result<u8> {
    let store = queue_store(ctx).await?;
    let config = WorkerConfig {
        id: args
            .id
            .clone()
            .unwrap_or_else(|| format!("worker-{}-{}", hostname(), std::process::id())),
        concurrency: usize::from(args.concurrency),
        lease: args.lease,
        poll: args.poll,
        grace: args.grace,
        log_limit: args.log_limit,
        until_idle: args.until_idle,
        keep_runs: (args.keep_runs > 0).then_some(args.keep_runs),
    };
    let runner = Runner::new(RunnerConfig {
        grace: args.kill_grace,
        result_limit: args.result_limit,
        ..RunnerConfig::default()
    });
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    let quiet = ctx.quiet;
    let mut err = std::io::stderr();
    if !quiet {
        let _ = writeln!(
            err,
            "worker {} started: concurrency {}, lease {}",
            config.id,
            config.concurrency,
            humantime::format_duration(config.lease)
        );
    }
    let mut events = |e: WorkerEvent| {
        if quiet {
            return;
        }
        let line = match e {
            WorkerEvent::Started { run, task, attempt } => {
                format!("run {run} ({task}) attempt {attempt} started")
            }
            WorkerEvent::Finished { run, task, state } => format!("run {run} ({task}) {state}"),
            WorkerEvent::LeaseLost { run } => {
                format!("run {run}: lease lost to another worker; result dropped")
            }
            WorkerEvent::Released { run } => {
                format!("run {run}: stopped at shutdown and queued again")
            }
            WorkerEvent::Expired { count } => {
                format!("{count} runs with expired leases requeued or failed")
            }
            WorkerEvent::Fired { run, task } => format!("schedule queued run {run} ({task})"),
            WorkerEvent::Unrunnable { run, message } => format!("run {run} failed: {message}"),
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    };
    let stats = run_worker(&store, &runner, &config, &shutdown, &mut events)
        .await
        .map_err(Failure::from)?;
    signals.abort();
    if !quiet {
        let _ = writeln!(
            err,
            "worker {} stopped: {} completed, {} failed, {} retried, {} requeued at shutdown, {} lost",
            config.id, stats.completed, stats.failed, stats.retried, stats.released, stats.lost
        );
    }
    Ok(exit::SUCCESS)
}

pub async fn schedule(ctx: &Context, cmd: ScheduleCommand) -> anyhow::Result<u8> {
    let store = queue_store(ctx).await?;
    match cmd {
        ScheduleCommand::Add(a) => add(&store, a).await,
        ScheduleCommand::List(a) => {
            let all = store.list_schedules().await.map_err(Failure::from)?;
            if a.json {
                let docs: Vec<Value> = all
                    .iter()
                    .map(|s| json!({"id": s.id, "task": s.task, "cron": s.cron, "args": s.args, "caller": s.caller, "next_fire_at": time_text(s.next_fire_at)}))
                    .collect();
                print_json(&docs)?;
                return Ok(exit::SUCCESS);
            }
            let mut table = Table::new();
            table
                .load_style(presets::UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header(["ID", "TASK", "CRON", "NEXT", "ARGS"]);
            for s in &all {
                table.add_row([
                    s.id.clone(),
                    s.task.to_string(),
                    s.cron.clone(),
                    time_text(s.next_fire_at),
                    s.args.to_string(),
                ]);
            }
            writeln!(std::io::stdout(), "{table}")?;
            Ok(exit::SUCCESS)
        }
        ScheduleCommand::Remove { id } => {
            if !store.remove_schedule(&id).await.map_err(Failure::from)? {
                return Err(Failure::nothing_ran(
                    "unknown_schedule",
                    format!(
                        "schedule `{id}` does not exist; `manage_tasks schedule list` shows them"
                    ),
                )
                .into());
            }
            writeln!(std::io::stdout(), "Schedule {id} removed")?;
            Ok(exit::SUCCESS)
        }
    }
}

async fn add(store: &Store, a: ScheduleAddArgs) -> anyhow::Result<u8> {
    let name = task_name(a.name.get())?;
    let prepared = prepare_in(store, &name).await?;
    let data = read_args(&a.args)?;
    if let Err(violations) = prepared.validate_args(&data) {
        return Err(invalid_args(&name, violations).into());
    }
    let new = NewSchedule::new(prepared.task(), &a.cron, &data, &a.caller)
        .map_err(|e| Failure::nothing_ran("invalid_cron", e.to_string()))?;
    let id = store.add_schedule(&new).await.map_err(Failure::from)?;
    if a.json {
        print_json(&json!({"id": id, "next_fire_at": time_text(new.next_fire_at)}))?;
    } else {
        writeln!(std::io::stdout(), "{id}")?;
        writeln!(
            std::io::stderr(),
            "first run at {}",
            time_text(new.next_fire_at)
        )?;
    }
    Ok(exit::SUCCESS)
}
