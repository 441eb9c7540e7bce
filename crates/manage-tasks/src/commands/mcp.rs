//! `mcp`: serve the registered tasks as MCP tools, on stdio or streamable HTTP.

use std::io::Write;
use std::time::Duration;

use task_executor::service::ServiceConfig;
use task_executor::{Runner, RunnerConfig};
use task_executor_mcp::McpConfig;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::cli::McpArgs;
use crate::exit;

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
    let config = McpConfig {
        service,
        caller: args.caller,
        poll_interval: POLL_INTERVAL,
    };
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(super::cancel_on_signal(cancel.clone()));
    let served = match args.http {
        None => task_executor_mcp::serve_stdio(config, cancel).await,
        Some(addr) => {
            let quiet = ctx.quiet;
            task_executor_mcp::serve_http(config, addr, cancel, |bound| {
                if !quiet {
                    let _ = writeln!(std::io::stderr(), "serving MCP on http://{bound}/mcp");
                }
            })
            .await
        }
    };
    signals.abort();
    served?;
    Ok(exit::SUCCESS)
}
