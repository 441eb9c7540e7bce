//! `manage_tasks`: the command-line face of the task-executor library.
//!
//! Thin by design: parse arguments (keeping the original tool's `-name`
//! style), open the store, call the library, print. Exit codes live in
//! [`exit`]; human rendering in [`output`].

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod exit;
mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::exit::Failure;

fn main() -> ExitCode {
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
    let json = commands::wants_json(&cli.command);
    // Servers and workers serve many requests and runs at once: the
    // multi-thread runtime. A one-shot command needs one thread.
    let mut builder = if matches!(
        cli.command,
        cli::Command::Worker(_) | cli::Command::Mcp(_) | cli::Command::Serve(_)
    ) {
        tokio::runtime::Builder::new_multi_thread()
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
    // Boxed: the future of every subcommand is large.
    match runtime.block_on(Box::pin(commands::run(cli))) {
        Ok(code) => ExitCode::from(code),
        Err(err) => report_error(err, json),
    }
}

fn report_error(err: anyhow::Error, json: bool) -> ExitCode {
    if is_broken_pipe(&err) {
        return ExitCode::SUCCESS;
    }
    let failure = Failure::of(&err);
    let (code, kind, violations) = match &failure {
        Some(f) => (f.code, f.kind, f.violations.clone()),
        None => (exit::NOTHING_RAN, "error", Vec::new()),
    };
    let style = output::Style::stderr();
    let message = match &failure {
        Some(f) => f.to_string(),
        None => format!("{err:#}"),
    };
    let _ = writeln!(
        std::io::stderr(),
        "{} {}",
        style.red("error:"),
        output::clean(&message)
    );
    if json {
        let doc = task_executor::view::ErrorDoc {
            error: task_executor::view::ErrorView {
                kind: kind.to_owned(),
                message: failure.map_or_else(|| format!("{err:#}"), |f| f.message),
                violations,
            },
        };
        if let Ok(text) = serde_json::to_string(&doc) {
            let _ = writeln!(std::io::stdout(), "{text}");
        }
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
