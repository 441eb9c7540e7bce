//! `execute --batch`: one run per JSON Lines input line, through the library's [`Pool`].
//!
//! Input is streamed and output is written in input order through a bounded
//! reorder buffer, so memory stays flat whatever the number of lines. A bad
//! line becomes that line's error result; the other lines still run.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use task_executor::log::{DiscardLogs, LogSink};
use task_executor::pool::{Job, Pool};
use task_executor::{Outcome, PreparedTask, RunReport, RunRequest};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::Context;
use super::execute::{ReportDoc, cancel_on_signal, runner_for};
use crate::cli::ExecuteArgs;
use crate::exit::{self, Failure};
use crate::output::{StderrLogs, Style};

/// How long output may wait in the buffer while no run finishes.
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(20);
/// The most often this thread wakes up for finished runs: results of fast
/// runs arrive faster than a wake-up is worth, so those that come within
/// this of the last wake-up are collected together.
const WAKE_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

/// What one input line came to.
enum Item {
    /// A blank line: no run, no output.
    Blank,
    /// The line could not run (bad JSON, not an object, schema violation).
    Rejected {
        kind: &'static str,
        message: String,
        violations: Vec<task_executor::schema::Violation>,
    },
    /// The line ran.
    Ran(Box<RunReport>),
}

/// Counts for the closing summary.
#[derive(Default)]
struct Summary {
    by_kind: BTreeMap<&'static str, u64>,
    runs: u64,
    worst: u8,
}

pub async fn run(ctx: &Context, args: &ExecuteArgs, task: PreparedTask) -> anyhow::Result<u8> {
    let path = args.batch.as_ref().expect("batch::run needs --batch");
    let parallel = args.parallel.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let from_stdin = path.as_os_str() == "-";
    let input: Box<dyn AsyncBufRead + Unpin> = if from_stdin {
        Box::new(BufReader::new(tokio::io::stdin()))
    } else {
        let file = tokio::fs::File::open(path).await.map_err(|e| {
            Failure::nothing_ran(
                "batch_input",
                format!("cannot read batch file `{}`: {e}", path.display()),
            )
        })?;
        Box::new(BufReader::with_capacity(64 * 1024, file))
    };
    let mut lines = input.lines();

    let bar = (std::io::stderr().is_terminal() && !ctx.quiet).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos} runs done, {per_sec} [{elapsed_precise}] {msg}",
            )
            .expect("the template is valid"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let logs: Arc<dyn LogSink> = if ctx.quiet {
        Arc::new(DiscardLogs)
    } else {
        Arc::new(StderrLogs::with_bar(bar.clone()))
    };

    let task = Arc::new(task);
    let runner = runner_for(args);
    let mut pool = Pool::new(runner, parallel, logs);
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(cancel.clone()));

    // Enough queued that the slots never wait for this thread between its wake-ups.
    let window = parallel * 4;
    let max_held = window + 1024;
    let mut pending: BTreeMap<u64, Item> = BTreeMap::new();
    let mut next_out: u64 = 1;
    let mut line_no: u64 = 0;
    let mut input_done = false;
    let mut cancelled = false;
    let mut summary = Summary::default();
    let started = Instant::now();
    let style = Style::stdout();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut unflushed = false;
    let mut last_wake = Instant::now();

    loop {
        // Read and submit while there is room in the pool and the reorder buffer.
        while !input_done
            && !cancelled
            && pool.in_flight() < window
            && pool.in_flight() + pending.len() < max_held
        {
            let line = tokio::select! {
                line = lines.next_line() => line,
                _ = cancel.cancelled() => Err(std::io::Error::from(std::io::ErrorKind::Interrupted)),
            };
            let line: String = match line {
                Ok(Some(line)) => line,
                Ok(None) => {
                    input_done = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted && cancel.is_cancelled() => {
                    cancelled = true;
                    break;
                }
                Err(e) => {
                    return Err(Failure::nothing_ran(
                        "batch_input",
                        format!("cannot read batch input at line {}: {e}", line_no + 1),
                    )
                    .into());
                }
            };
            line_no += 1;
            match parse_line(&task, &line) {
                Ok(Some(data)) => {
                    let request = RunRequest {
                        args: data,
                        caller: args.caller.clone(),
                        timeout: args.timeout,
                        run_id: None,
                    };
                    pool.submit(Job {
                        id: line_no,
                        task: task.clone(),
                        request,
                    });
                }
                Ok(None) => {
                    pending.insert(line_no, Item::Blank);
                }
                Err(item) => {
                    pending.insert(line_no, item);
                }
            }
        }

        // Emit everything that is now in order.
        while let Some(item) = pending.remove(&next_out) {
            unflushed = true;
            emit(&mut out, next_out, &item, args.json, style, &mut summary)?;
            if let Some(bar) = &bar
                && !matches!(item, Item::Blank)
            {
                bar.inc(1);
            }
            next_out += 1;
        }

        if pool.in_flight() == 0 {
            if input_done || cancelled {
                break;
            }
            continue;
        }
        tokio::select! {
            done = pool.next() => {
                let since = last_wake.elapsed();
                if since < WAKE_EVERY {
                    tokio::time::sleep(WAKE_EVERY - since).await;
                }
                last_wake = Instant::now();
                // This one, and those that finished while this thread slept.
                for done in done.into_iter().chain(std::iter::from_fn(|| pool.try_next())) {
                    pending.insert(done.id, Item::Ran(Box::new(done.report)));
                }
            }
            _ = cancel.cancelled(), if !cancelled => {
                cancelled = true;
                pool.cancel_all();
            }
            // Results stream: written out once nothing has finished for a
            // moment, not only when the buffer fills, so a consumer of slow
            // runs sees each result soon after it ends; a fast stream still
            // goes out in large writes.
            () = tokio::time::sleep(FLUSH_AFTER), if unflushed => {
                out.flush()?;
                unflushed = false;
            }
        }
    }
    signals.abort();
    out.flush()?;
    drop(out);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }

    let not_run = if cancelled && !input_done && !from_stdin {
        let mut rest = 0u64;
        while let Ok(Some(line)) = lines.next_line().await {
            if !line.trim().is_empty() {
                rest += 1;
            }
        }
        Some(rest)
    } else {
        None
    };
    print_summary(
        &summary,
        started.elapsed(),
        cancelled,
        not_run,
        line_no,
        args.json,
    )?;
    let mut code = summary.worst;
    if cancelled {
        code = code.max(exit::RUN_FAILED);
    }
    Ok(code)
}

/// Parses and validates one input line: `Ok(None)` for a blank line.
fn parse_line(task: &PreparedTask, line: &str) -> Result<Option<Value>, Item> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let data: Value = serde_json::from_str(line).map_err(|e| Item::Rejected {
        kind: "invalid_json",
        message: format!("not valid JSON at column {}: {e}", e.column()),
        violations: Vec::new(),
    })?;
    if !data.is_object() {
        return Err(Item::Rejected {
            kind: "invalid_args",
            message: format!(
                "arguments must be a JSON object, not {}",
                task_executor::protocol::json_type(&data)
            ),
            violations: Vec::new(),
        });
    }
    if let Err(violations) = task.validate_args(&data) {
        return Err(Item::Rejected {
            kind: "invalid_args",
            message: format!(
                "arguments do not match the input schema of task `{}`",
                task.task().name
            ),
            violations,
        });
    }
    Ok(Some(data))
}

fn emit(
    out: &mut impl Write,
    line: u64,
    item: &Item,
    json: bool,
    style: Style,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    match item {
        Item::Blank => {}
        Item::Rejected {
            kind,
            message,
            violations,
        } => {
            *summary.by_kind.entry(kind).or_default() += 1;
            summary.worst = summary.worst.max(exit::NOTHING_RAN);
            if json {
                let doc = json!({
                    "line": line, "success": false, "outcome": kind,
                    "error": message, "violations": violations,
                });
                serde_json::to_writer(&mut *out, &doc)?;
                out.write_all(b"\n")?;
            } else {
                writeln!(out, "line {line}: {} {message}", style.red("rejected:"))?;
                for v in violations {
                    writeln!(out, "  - {v}")?;
                }
            }
        }
        Item::Ran(report) => {
            summary.runs += 1;
            let kind = match &report.outcome {
                Outcome::Completed { result } if result.is_success() => "succeeded",
                Outcome::Completed { .. } => "reported_failure",
                other => other.kind(),
            };
            *summary.by_kind.entry(kind).or_default() += 1;
            summary.worst = summary.worst.max(exit::for_outcome(&report.outcome));
            if json {
                let mut doc = ReportDoc::new(report);
                doc.line = Some(line);
                serde_json::to_writer(&mut *out, &doc)?;
                out.write_all(b"\n")?;
            } else if !report.outcome.is_success() {
                writeln!(
                    out,
                    "line {line}: {} {}",
                    style.red("failed:"),
                    report.outcome.describe()
                )?;
            }
        }
    }
    Ok(())
}

fn print_summary(
    summary: &Summary,
    wall: std::time::Duration,
    cancelled: bool,
    not_run: Option<u64>,
    lines_read: u64,
    json: bool,
) -> anyhow::Result<()> {
    let counts: Vec<String> = summary
        .by_kind
        .iter()
        .map(|(k, n)| format!("{n} {}", k.replace('_', " ")))
        .collect();
    let secs = wall.as_secs_f64();
    let rate = if secs > 0.0 {
        summary.runs as f64 / secs
    } else {
        0.0
    };
    let mut text = format!(
        "{} runs in {:.2}s ({rate:.0} runs/s): {}",
        summary.runs,
        secs,
        if counts.is_empty() {
            "nothing to do".to_owned()
        } else {
            counts.join(", ")
        }
    );
    if cancelled {
        text.push_str(&format!("\ncancelled after reading {lines_read} lines"));
        match not_run {
            Some(n) => text.push_str(&format!("; {n} more lines did not run")),
            None => text.push_str("; the rest of the input did not run"),
        }
    }
    // With --json, stdout holds only the per-line results.
    if json {
        let _ = writeln!(std::io::stderr(), "{text}");
    } else {
        writeln!(std::io::stdout(), "{text}")?;
    }
    Ok(())
}
