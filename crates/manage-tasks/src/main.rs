//! `manage_tasks`: the command-line face of the task-executor library.
//!
//! Thin by design: parse arguments (keeping the original tool's `-name`
//! style), open the store, call the library, print. Exit codes live in
//! [`exit`]; human rendering in [`output`].

#[cfg(target_env = "musl")]
mod alloc;
mod cli;
mod commands;
mod exit;
mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::exit::Failure;

/// The static musl release build (`make build`) uses mimalloc: musl's own
/// allocator maps and unmaps pages for most allocations of a few KiB, and in a
/// batch every unmap is a TLB shootdown across the pool's threads (1000 no-op
/// runs went from 1451 to 1635 runs/s). `no_thp` keeps mimalloc from asking for
/// huge pages, whose zeroing added 0.13 ms to every short command. The
/// Makefile's musl build also tunes it at compile time (`MIMALLOC_CFLAGS`).
/// One-shot commands allocate from a dense heap instead (see [`alloc`]).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: alloc::Hybrid = alloc::Hybrid;

fn main() -> ExitCode {
    #[cfg(target_env = "musl")]
    alloc::route_sqlite();
    let command = cli::Cli::command();
    let args = cli::rewrite_single_dash(std::env::args_os().collect(), &command);
    let cli = match command
        .try_get_matches_from(args)
        .and_then(|m| cli::Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::NOTHING_RAN } else { 0 });
        }
    };
    #[cfg(target_env = "musl")]
    if runs_many(&cli.command) {
        alloc::close_dense();
    }
    let json = commands::wants_json(&cli.command);
    // A worker runs its tasks' I/O on a second thread while its loop waits on the store.
    let mut builder = if matches!(cli.command, cli::Command::Worker(_)) {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::NOTHING_RAN);
        }
    };
    // Boxed: the future of every subcommand is large, and as a local of
    // `main` its stack frame was faulted in page by page (stack probes).
    match runtime.block_on(Box::pin(commands::run(cli))) {
        Ok(code) => ExitCode::from(code),
        Err(err) => report_error(err, json),
    }
}

/// Commands that run many tasks at once or serve: they allocate from several
/// threads for a long time, which is what mimalloc is for (see [`alloc`]).
#[cfg(target_env = "musl")]
fn runs_many(command: &cli::Command) -> bool {
    match command {
        cli::Command::Execute(args) => args.batch.is_some(),
        cli::Command::Worker(_) | cli::Command::Mcp(_) => true,
        _ => false,
    }
}

fn report_error(err: anyhow::Error, json: bool) -> ExitCode {
    if is_broken_pipe(&err) {
        return ExitCode::SUCCESS;
    }
    let (code, kind, violations) = match err.downcast_ref::<Failure>() {
        Some(f) => (f.code, f.kind, f.violations.clone()),
        None => (exit::NOTHING_RAN, "error", Vec::new()),
    };
    let style = output::Style::stderr();
    let _ = writeln!(std::io::stderr(), "{} {err:#}", style.red("error:"));
    if json {
        let doc = serde_json::json!({
            "error": {"kind": kind, "message": format!("{err:#}"), "violations": violations}
        });
        let _ = writeln!(std::io::stdout(), "{doc}");
    }
    ExitCode::from(code)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == BrokenPipe)
            // serde_json's error wraps the io::Error without listing it as its source.
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(BrokenPipe))
    })
}
