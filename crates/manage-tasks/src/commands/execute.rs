//! `execute`: run a task once, here, and report how it went.

use std::io::Write;
use std::sync::Arc;

use task_executor::log::DiscardLogs;
use task_executor::service::{Call, ServiceConfig};
use task_executor::view::RunView;
use task_executor::{LogSink, Runner, RunnerConfig};
use tokio_util::sync::CancellationToken;

use super::{Context, cancel_on_signal, print_json, read_args, task_name_in};
use crate::cli::ExecuteArgs;
use crate::exit;
use crate::output::{StderrLogs, Style, clean, render_run};

pub async fn run(ctx: &Context, args: ExecuteArgs) -> anyhow::Result<u8> {
    let service = ctx.service_with(runner_for(&args), config_for(&args))?;
    let name = task_name_in(&service, args.name.get()).await?;
    if args.batch.is_some() {
        let task = service.prepare(&name).await?;
        return super::batch::run(ctx, &service, &args, task).await;
    }
    let data = read_args(&args.args)?;
    let task = service.prepare(&name).await?;
    task.check(&data)?;

    let cancel = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(cancel.clone()));
    let logs: Arc<dyn LogSink> = if ctx.quiet {
        Arc::new(DiscardLogs)
    } else {
        Arc::new(StderrLogs::new())
    };
    let call = Call {
        args: data,
        caller: args.caller.clone(),
        timeout: args.timeout,
    };
    let executed = service.execute(&task, call, logs.as_ref(), &cancel).await?;
    signals.abort();
    for warning in &executed.warnings {
        let _ = writeln!(std::io::stderr(), "warning: {}", clean(warning));
    }
    if args.json {
        let mut view = RunView::from(&executed.record);
        view.warnings = &executed.warnings;
        print_json(&view)?;
    } else {
        let text = render_run(&executed.record, Style::stdout());
        std::io::stdout().lock().write_all(text.as_bytes())?;
    }
    Ok(exit::for_outcome(&executed.report.outcome))
}

/// The runner configured by `execute`'s flags.
fn runner_for(args: &ExecuteArgs) -> Runner {
    Runner::new(RunnerConfig {
        grace: args.grace,
        result_limit: args.result_limit,
        ..RunnerConfig::default()
    })
}

fn config_for(args: &ExecuteArgs) -> ServiceConfig {
    ServiceConfig {
        log_limit: args.log_limit,
        ..ServiceConfig::default()
    }
}
