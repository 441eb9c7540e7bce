//! `mcp`: serve the registered tasks as MCP tools, on stdio or streamable HTTP.

use std::io::Write;
use std::time::Duration;

use task_executor::service::ServiceConfig;
use task_executor::{Runner, RunnerConfig};
use task_executor_mcp::{HttpOptions, McpConfig, RunLimit, ServeError};
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::cli::McpArgs;
use crate::exit::{self, Failure};
use crate::output::Style;

/// How often the store is checked for registrations while a client is connected.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(ctx: &Context, args: McpArgs) -> anyhow::Result<u8> {
    let runner = Runner::new(RunnerConfig {
        grace: args.grace,
        ..RunnerConfig::default()
    });
    let service = ctx.service_with(
        runner,
        ServiceConfig {
            inline_worker: format!("mcp-{}", std::process::id()),
            ..ServiceConfig::default()
        },
    )?;
    let max_runs = args.max_concurrent_runs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n as usize,
    );
    let config = McpConfig {
        service,
        caller: args.caller,
        poll_interval: POLL_INTERVAL,
        runs: RunLimit::new(max_runs, RunLimit::DEFAULT_WAIT),
    };
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(super::cancel_on_signal(cancel.clone()));
    let served = match args.http {
        None => task_executor_mcp::serve_stdio(config, cancel).await,
        Some(addr) => {
            let quiet = ctx.quiet;
            let options = HttpOptions {
                addr,
                insecure_no_auth: args.insecure_no_auth,
                max_sessions: args.max_sessions as usize,
                session_idle: args.session_idle,
                allowed_hosts: args.allowed_host,
            };
            // Whether tokens are required; a store that cannot say fails in serve_http.
            let configured = config.service.tokens_configured().await.unwrap_or(false);
            let insecure = args.insecure_no_auth && !addr.ip().is_loopback() && !configured;
            task_executor_mcp::serve_http(config, options, cancel, |bound| {
                let mut err = std::io::stderr();
                if !quiet {
                    let _ = writeln!(err, "serving MCP on http://{bound}/mcp");
                }
                // Said even with --quiet: it is about who can run tasks.
                if insecure {
                    let style = Style::stderr();
                    let _ = writeln!(
                        err,
                        "{} --insecure-no-auth: no API token exists and {bound} is not loopback: \
                         ANYONE WHO CAN REACH THIS ADDRESS CAN RUN EVERY TASK. Create a token \
                         (`manage_tasks tokens create`) to require one.",
                        style.red("WARNING:")
                    );
                } else if !configured && !quiet {
                    let _ = writeln!(
                        err,
                        "no API token exists: serving loopback clients only, without \
                         authentication (`manage_tasks tokens create` to require tokens)"
                    );
                }
            })
            .await
        }
    };
    signals.abort();
    match served {
        // The same refusal, code and kind as `serve`'s.
        Err(e @ ServeError::NoAuth { .. }) => Err(Failure {
            code: exit::NOT_LOOPBACK,
            ..Failure::nothing_ran("not_loopback", e.to_string())
        }
        .into()),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(exit::SUCCESS),
    }
}
