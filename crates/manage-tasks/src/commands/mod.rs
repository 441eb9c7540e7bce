//! One function per subcommand, plus what they share: opening the store.

mod batch;
mod execute;
mod mcp;
mod queue;
mod register;
mod runs;
mod tasks;

use std::io::Write;

use task_executor::registry::ENV_TASK_STORE;
use task_executor::{Store, StoreSpec, TaskName};

use crate::cli::{Cli, Command, RunsCommand, ScheduleCommand};
use crate::exit::Failure;

/// Whether the command asked for machine output.
pub fn wants_json(command: &Command) -> bool {
    match command {
        Command::Register(a) => a.json,
        Command::List(a) => a.json,
        Command::Show(a) => a.json,
        Command::Execute(a) => a.json,
        Command::Submit(a) => a.json,
        Command::Runs(RunsCommand::List(a)) => a.json,
        Command::Runs(RunsCommand::Show(a) | RunsCommand::Cancel(a)) => a.json,
        Command::Runs(RunsCommand::Logs(a)) => a.json,
        Command::Schedule(ScheduleCommand::Add(a)) => a.json,
        Command::Schedule(ScheduleCommand::List(a)) => a.json,
        Command::Unregister(_)
        | Command::Mcp(_)
        | Command::Completions { .. }
        | Command::Worker(_)
        | Command::Runs(RunsCommand::Prune(_))
        | Command::Schedule(ScheduleCommand::Remove { .. }) => false,
    }
}

/// Runs the parsed command, returning the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let ctx = Context {
        store: cli.store,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Register(args) => register::run(&ctx, args).await,
        Command::Unregister(args) => tasks::unregister(&ctx, args).await,
        Command::List(args) => tasks::list(&ctx, args).await,
        Command::Show(args) => tasks::show(&ctx, args).await,
        Command::Execute(args) => execute::run(&ctx, args).await,
        Command::Mcp(args) => mcp::run(&ctx, args).await,
        Command::Submit(args) => queue::submit(&ctx, args).await,
        Command::Worker(args) => queue::worker(&ctx, args).await,
        Command::Runs(cmd) => runs::run(&ctx, cmd).await,
        Command::Schedule(cmd) => queue::schedule(&ctx, cmd).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "manage_tasks", &mut std::io::stdout());
            Ok(crate::exit::SUCCESS)
        }
    }
}

/// What every command shares.
pub struct Context {
    store: Option<String>,
    pub quiet: bool,
}

impl Context {
    /// The store named by `--store`/`TASK_STORE`, or the default one with a notice.
    pub fn store_spec(&self) -> Result<StoreSpec, Failure> {
        Ok(match self.store.as_deref() {
            Some(s) => StoreSpec::parse(s)?,
            None => {
                let spec = StoreSpec::default_location()?;
                if !self.quiet {
                    let _ = writeln!(
                        std::io::stderr(),
                        "env variable `{ENV_TASK_STORE}` not set, using default: {}",
                        spec.path().display()
                    );
                }
                spec
            }
        })
    }

    /// Opens the store named by `--store`/`TASK_STORE`, or the default one with a notice.
    pub async fn open_store(&self) -> Result<Store, Failure> {
        Ok(Store::open(&self.store_spec()?).await?)
    }
}

/// Checks a task name given on the command line.
pub fn task_name(name: &str) -> Result<TaskName, Failure> {
    TaskName::new(name).map_err(|e| Failure::nothing_ran("invalid_name", e.to_string()))
}

/// Writes `value` as one line of JSON to stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// The JSON shape of a task in `show --json` / `list --json` / `register --json`.
pub fn task_json(task: &task_executor::Task) -> serde_json::Value {
    serde_json::json!({
        "name": task.name,
        "location": task.location,
        "description": task.description,
        "inputs": task.inputs,
        "outputs": task.outputs,
        "timeout": task.timeout.map(|t| humantime::format_duration(t).to_string()),
        "timeout_ms": task.timeout.map(|t| t.as_millis() as u64),
        "policy": task.policy,
    })
}
