//! `execute --batch`: one run per JSON Lines input line, through the
//! service's [`Batch`].
//!
//! Input is streamed and output is written in input order through a bounded
//! reorder buffer, so memory stays flat whatever the number of lines. A bad
//! line (not UTF-8, not JSON, not an object, against the schema) becomes that
//! line's error; the other lines still run. Text output gives one line per
//! input line as its run finishes, then a summary whose counts add up to the
//! lines read.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use task_executor::Outcome;
use task_executor::history::RunRecord;
use task_executor::log::{DiscardLogs, LogSink};
use task_executor::service::{Batch, Prepared, Service};
use task_executor::view::{ErrorView, RejectedLineView, RunView};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::{Context, cancel_on_signal, parse_args};
use crate::cli::ExecuteArgs;
use crate::exit::{self, Failure};
use crate::output::{Clean, StderrLogs, Style, clean, short_json, took};

/// How long output may wait in the buffer while no run finishes.
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(20);
/// The most often this thread wakes up for finished runs: results of fast
/// runs arrive faster than a wake-up is worth, so those that come within
/// this of the last wake-up are collected together.
const WAKE_EVERY: std::time::Duration = std::time::Duration::from_millis(1);
/// How much of a payload a text line shows.
const PAYLOAD_CHARS: usize = 60;

/// What one input line came to.
enum Item {
    /// A blank line: no run, no output.
    Blank,
    /// The line could not run.
    Rejected(ErrorView),
    /// The line ran.
    Ran(Box<RunRecord>),
}

/// Counts for the closing summary.
#[derive(Default)]
struct Summary {
    ran: BTreeMap<&'static str, u64>,
    rejected: BTreeMap<String, u64>,
    runs: u64,
    lines: u64,
    worst: u8,
}

pub async fn run(
    ctx: &Context,
    service: &Service,
    args: &ExecuteArgs,
    task: Prepared,
) -> anyhow::Result<u8> {
    let path = args.batch.as_ref().expect("batch::run needs --batch");
    let parallel = args.parallel.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let from_stdin = path.as_os_str() == "-";
    let mut input: Box<dyn AsyncBufRead + Unpin> = if from_stdin {
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

    let mut batch: Batch = service.batch(&task, parallel, &args.caller, args.timeout, logs);
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
    let mut buf = Vec::new();

    loop {
        // Read and submit while there is room in the pool and the reorder buffer.
        while !input_done
            && !cancelled
            && batch.in_flight() < window
            && batch.in_flight() + pending.len() < max_held
        {
            buf.clear();
            let read = tokio::select! {
                read = input.read_until(b'\n', &mut buf) => read,
                _ = cancel.cancelled() => {
                    cancelled = true;
                    break;
                }
            };
            match read {
                Ok(0) => {
                    input_done = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(Failure::nothing_ran(
                        "batch_input",
                        format!("cannot read batch input at line {}: {e}", line_no + 1),
                    )
                    .into());
                }
            }
            line_no += 1;
            match parse_line(&task, &buf, line_no) {
                Ok(Some(data)) => batch.submit(line_no, data),
                Ok(None) => {
                    pending.insert(line_no, Item::Blank);
                }
                Err(error) => {
                    pending.insert(line_no, Item::Rejected(error));
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

        if batch.in_flight() == 0 {
            if input_done || cancelled {
                break;
            }
            continue;
        }
        tokio::select! {
            done = batch.next() => {
                let since = last_wake.elapsed();
                if since < WAKE_EVERY {
                    tokio::time::sleep(WAKE_EVERY - since).await;
                }
                last_wake = Instant::now();
                // This one, and those that finished while this thread slept.
                for (line, record) in done.into_iter().chain(std::iter::from_fn(|| batch.try_next())) {
                    pending.insert(line, Item::Ran(Box::new(record)));
                }
            }
            _ = cancel.cancelled(), if !cancelled => {
                cancelled = true;
                batch.cancel_all();
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
        loop {
            buf.clear();
            match input.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) if buf.trim_ascii().is_empty() => {}
                Ok(_) => rest += 1,
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

/// Reads one input line as the arguments of a run: `Ok(None)` for a blank line.
fn parse_line(task: &Prepared, bytes: &[u8], line: u64) -> Result<Option<Value>, ErrorView> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(ErrorView::new(
            "invalid_json",
            format!("line {line} is not valid UTF-8, so it is not JSON"),
        ));
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    let data = parse_args(text, &format!("line {line}")).map_err(|f| f.view())?;
    task.check(&data).map_err(|e| {
        let mut view = crate::exit::Failure::from(e).view();
        view.message = format!("line {line}: {}", view.message);
        view
    })?;
    Ok(Some(data))
}

/// The summary name of how a run ended.
fn ended(r: &RunRecord) -> &'static str {
    match &r.outcome {
        Some(Outcome::Completed { result }) if result.is_success() => "succeeded",
        Some(Outcome::Completed { .. }) => "reported failure",
        Some(other) => other.kind(),
        None => "not run",
    }
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
        Item::Rejected(error) => {
            summary.lines += 1;
            *summary
                .rejected
                .entry(error.kind.replace('_', " "))
                .or_default() += 1;
            summary.worst = summary.worst.max(exit::NOTHING_RAN);
            if json {
                let doc = RejectedLineView {
                    line,
                    error: error.clone(),
                };
                serde_json::to_writer(&mut *out, &doc)?;
                out.write_all(b"\n")?;
            } else {
                writeln!(
                    out,
                    "line {line}: {} {}",
                    style.red("rejected:"),
                    clean(&error.message)
                )?;
                for v in &error.violations {
                    writeln!(out, "  - {}", Clean(v))?;
                }
            }
        }
        Item::Ran(record) => {
            summary.lines += 1;
            summary.runs += 1;
            *summary.ran.entry(ended(record)).or_default() += 1;
            let outcome = record.outcome.as_ref();
            summary.worst = summary
                .worst
                .max(outcome.map_or(exit::RUN_FAILED, exit::for_outcome));
            if json {
                let mut view = RunView::from(record.as_ref());
                view.line = Some(line);
                serde_json::to_writer(&mut *out, &view)?;
                out.write_all(b"\n")?;
            } else {
                writeln!(out, "{}", text_line(line, record, style))?;
            }
        }
    }
    Ok(())
}

/// `line 3: succeeded, status 1 (ok), 41ms: {"words":11}`, or what went wrong.
fn text_line(line: u64, r: &RunRecord, style: Style) -> String {
    let took = took(r.duration_ms().unwrap_or(0));
    match &r.outcome {
        Some(Outcome::Completed { result }) => {
            let head = if result.is_success() {
                style.green("succeeded")
            } else {
                style.red("reported failure")
            };
            let reason = if result.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", clean(&result.reason))
            };
            format!(
                "line {line}: {head}, status {}{reason}, {took}: {}",
                result.status,
                clean(&short_json(&result.payload, PAYLOAD_CHARS))
            )
        }
        Some(other) => format!(
            "line {line}: {} {} ({took})",
            style.red("failed:"),
            clean(&other.describe())
        ),
        None => format!("line {line}: {}", style.red("did not run")),
    }
}

fn print_summary(
    summary: &Summary,
    wall: std::time::Duration,
    cancelled: bool,
    not_run: Option<u64>,
    lines_read: u64,
    json: bool,
) -> anyhow::Result<()> {
    let secs = wall.as_secs_f64();
    let rate = if secs > 0.0 {
        summary.runs as f64 / secs
    } else {
        0.0
    };
    let mut counts: Vec<String> = summary
        .ran
        .iter()
        .map(|(k, n)| format!("{n} {}", k.replace('_', " ")))
        .collect();
    let rejected: u64 = summary.rejected.values().sum();
    if rejected > 0 {
        let why: Vec<String> = summary
            .rejected
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        counts.push(format!("{rejected} rejected ({})", why.join(", ")));
    }
    let mut text = format!(
        "{} lines, {} runs in {secs:.2}s ({rate:.0} runs/s): {}",
        summary.lines,
        summary.runs,
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
