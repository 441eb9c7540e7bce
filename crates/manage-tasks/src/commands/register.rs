//! `register`: discover a task's schemas and store it.

use std::io::Write;

use task_executor::Formats;
use task_executor::service::Registration;
use task_executor::view::TaskView;

use super::{Context, print_json, print_warnings, task_name};
use crate::cli::{FormatsArg, RegisterArgs};
use crate::exit;
use crate::output::Clean;

pub async fn run(ctx: &Context, args: RegisterArgs) -> anyhow::Result<u8> {
    let name = task_name(args.name.get())?;
    let registration = Registration {
        schema_timeout: Some(args.schema_timeout),
        replace: args.force,
        timeout: args.timeout,
        retries: args.retries,
        backoff: args.backoff,
        retry_on_status: match (args.retry_on_status, args.no_retry_on_status) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        concurrency: args.concurrency,
        priority: args.priority,
        tags: args.tags.map(|t| t.0),
        formats: args.formats.map(|f| match f {
            FormatsArg::Assert => Formats::Assert,
            FormatsArg::Annotate => Formats::Annotate,
        }),
    };
    let service = ctx.service()?;
    let task = service
        .register(name, &args.location, &registration)
        .await?;
    print_warnings(&service);
    if args.json {
        print_json(&TaskView::from(&task))?;
    } else {
        writeln!(
            std::io::stdout(),
            "Task {} registered ({}){}",
            Clean(&task.name),
            Clean(task.location.display()),
            if args.force {
                ", replacing any previous definition"
            } else {
                ""
            }
        )?;
    }
    Ok(exit::SUCCESS)
}
