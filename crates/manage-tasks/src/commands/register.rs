//! `register`: discover a task's schemas and store it.

use std::io::Write;

use task_executor::{InsertMode, RegisterError, RegisterOptions, Runner};

use super::{Context, print_json, task_json, task_name};
use crate::cli::RegisterArgs;
use crate::exit::{self, Failure};

pub async fn run(ctx: &Context, args: RegisterArgs) -> anyhow::Result<u8> {
    let name = task_name(args.name.get())?;
    let store = ctx.open_store().await?;
    let options = RegisterOptions {
        schema_timeout: args.schema_timeout,
        timeout: args.timeout,
        mode: if args.force {
            InsertMode::Replace
        } else {
            InsertMode::CreateNew
        },
        policy: task_executor::Policy {
            retries: args.retries,
            backoff: args.backoff,
            retry_on_status: args.retry_on_status,
            concurrency: args.concurrency,
            priority: args.priority,
        },
    };
    let task = task_executor::register(&store, &Runner::default(), name, &args.location, &options)
        .await
        .map_err(|e| {
            let kind = match &e {
                RegisterError::Discovery(_) => "discovery",
                RegisterError::InvalidInputs { .. }
                | RegisterError::InvalidOutputs { .. }
                | RegisterError::InputsAcceptNothing { .. } => "invalid_schema",
                RegisterError::Store(_) => "store",
            };
            match e {
                RegisterError::Store(s) => Failure::from(s),
                other => Failure::nothing_ran(kind, other.to_string()),
            }
        })?;
    if args.json {
        print_json(&task_json(&task))?;
    } else {
        writeln!(
            std::io::stdout(),
            "Task {} registered ({}){}",
            task.name,
            task.location.display(),
            if args.force {
                ", replacing any previous definition"
            } else {
                ""
            }
        )?;
    }
    Ok(exit::SUCCESS)
}
