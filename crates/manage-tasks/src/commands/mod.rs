//! One function per subcommand, plus what they share: the service, task
//! names, arguments from the command line, and writing JSON.
//!
//! A command parses its flags into the service's types, calls
//! [`task_executor::service::Service`] and renders the result; the
//! orchestration is in the library.

mod batch;
mod execute;
mod mcp;
mod queue;
mod register;
mod runs;
mod serve;
mod store;
mod tasks;
mod tokens;
mod workers;

use std::io::{Read, Write};

use serde_json::Value;
use task_executor::service::{Service, ServiceConfig};
use task_executor::store::ENV_TASK_STORE;
use task_executor::{Runner, Store, StoreSpec, TaskName};

use crate::cli::{
    ArgsSource, AuditCommand, Cli, Command, RunsCommand, ScheduleCommand, StoreCommand,
    TokensCommand, WorkersCommand,
};
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
        Command::Runs(RunsCommand::Prune(a)) => a.json,
        Command::Schedule(ScheduleCommand::Add(a)) => a.json,
        Command::Schedule(ScheduleCommand::List(a)) => a.json,
        Command::Workers(WorkersCommand::List(a)) => a.json,
        Command::Store(StoreCommand::Copy(a)) => a.json,
        Command::Tokens(TokensCommand::Create(a)) => a.json,
        Command::Tokens(TokensCommand::List(a)) => a.json,
        Command::Tokens(TokensCommand::Revoke(a)) => a.json,
        Command::Audit(AuditCommand::List(a)) => a.json,
        Command::Unregister(_)
        | Command::Mcp(_)
        | Command::Serve(_)
        | Command::Completions { .. }
        | Command::Worker(_)
        | Command::Schedule(ScheduleCommand::Remove(_)) => false,
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
        Command::Serve(args) => serve::run(&ctx, args).await,
        Command::Submit(args) => queue::submit(&ctx, args).await,
        Command::Worker(args) => queue::worker(&ctx, args).await,
        Command::Workers(cmd) => workers::run(&ctx, cmd).await,
        Command::Runs(cmd) => runs::run(&ctx, cmd).await,
        Command::Schedule(cmd) => queue::schedule(&ctx, cmd).await,
        Command::Store(cmd) => store::run(&ctx, cmd).await,
        Command::Tokens(cmd) => tokens::tokens(&ctx, cmd).await,
        Command::Audit(cmd) => tokens::audit(&ctx, cmd).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into a buffer first: clap_complete panics on a write error
            // (a closed pipe, `| head`); ours is handled like any other.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "manage_tasks", &mut script);
            std::io::stdout().lock().write_all(&script)?;
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

    /// [`Context::service_with`] for a command that uses up to
    /// `connections` store connections at once (a worker).
    pub fn service_sized(
        &self,
        runner: Runner,
        config: ServiceConfig,
        connections: usize,
    ) -> Result<Service, Failure> {
        Ok(Service::new(
            Store::open_sized(&self.store_spec()?, connections),
            runner,
            config,
        ))
    }

    /// The service over this command's store, running tasks with `runner`.
    pub fn service_with(&self, runner: Runner, config: ServiceConfig) -> Result<Service, Failure> {
        Ok(Service::new(
            Store::open(&self.store_spec()?),
            runner,
            config,
        ))
    }

    /// The service with default settings.
    pub fn service(&self) -> Result<Service, Failure> {
        self.service_with(Runner::default(), ServiceConfig::default())
    }
}

/// Checks a task name given on the command line.
pub fn task_name(name: &str) -> Result<TaskName, Failure> {
    TaskName::new(name).map_err(|e| Failure::nothing_ran("invalid_name", e.to_string()))
}

/// Checks a task name given on the command line; a name the store holds as
/// an entry it cannot use (the original tool takes any name) says so and why.
pub async fn task_name_in(service: &Service, name: &str) -> Result<TaskName, Failure> {
    let invalid = match TaskName::new(name) {
        Ok(n) => return Ok(n),
        Err(e) => e,
    };
    match service.unusable(name).await? {
        Some(u) => Err(Failure::nothing_ran(
            "unusable_task",
            format!("task `{}` is unusable: {}", u.name, u.reason),
        )),
        None => Err(Failure::nothing_ran("invalid_name", invalid.to_string())),
    }
}

/// Prints, on stderr, what the store's writes want the user to know.
pub fn print_warnings(service: &Service) {
    for warning in service.take_warnings() {
        let _ = writeln!(
            std::io::stderr(),
            "warning: {}",
            crate::output::clean(&warning)
        );
    }
}

/// Writes `value` as one line of JSON to stdout.
/// A listing's `--after CURSOR`, decoded by `decode`; a cursor it does not
/// take is a usage error that names the listing (`listing`) that prints them.
pub fn after_cursor<T>(
    cursor: Option<&str>,
    listing: &str,
    decode: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, Failure> {
    cursor
        .map(|c| {
            decode(c).ok_or_else(|| {
                Failure::nothing_ran(
                    "usage",
                    format!("--after `{c}` is not a cursor printed by `{listing}`"),
                )
            })
        })
        .transpose()
}

pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// The caller's arguments from `--taskArgs`, `--taskArgs -` (stdin) or `--args-file`; `{}` if none.
pub fn read_args(source: &ArgsSource) -> Result<Value, Failure> {
    let (text, source) = match (source.task_args.as_deref(), source.args_file.as_deref()) {
        (Some("-"), _) => {
            let mut buf = String::new();
            std::io::stdin().read_to_string(&mut buf).map_err(|e| {
                Failure::nothing_ran(
                    "invalid_args",
                    format!("cannot read arguments from stdin: {e}"),
                )
            })?;
            (buf, "stdin".to_owned())
        }
        (Some(s), _) => (s.to_owned(), "--taskArgs".to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::nothing_ran(
                    "invalid_args",
                    format!("cannot read arguments file `{}`: {e}", path.display()),
                )
            })?;
            (text, format!("`{}`", path.display()))
        }
        (None, None) => return Ok(Value::Object(Default::default())),
    };
    parse_args(&text, &source)
}

/// Parses one arguments object, naming where it came from (`--taskArgs`, `line 3`, …) in errors.
pub fn parse_args(text: &str, source: &str) -> Result<Value, Failure> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        // serde_json's text ends with its own "at line L column C".
        let what = e.to_string();
        let what = what
            .rsplit_once(" at line ")
            .map_or(what.as_str(), |(head, _)| head);
        let at = if e.line() == 1 {
            format!("column {}", e.column())
        } else {
            format!("line {}, column {}", e.line(), e.column())
        };
        Failure::nothing_ran(
            "invalid_json",
            format!("arguments in {source} are not valid JSON at {at}: {what}"),
        )
    })?;
    if !value.is_object() {
        return Err(Failure::nothing_ran(
            "invalid_args",
            format!(
                "arguments in {source} must be a JSON object (the envelope's `data`), not {}",
                task_executor::protocol::json_type(&value)
            ),
        ));
    }
    Ok(value)
}

/// Cancels `token` on Ctrl-C or SIGTERM, so running tasks are stopped cleanly.
///
/// The handlers are installed when this is called, not when the returned
/// future first runs: on the current-thread runtime a spawned future starts
/// only at the caller's next yield, which may come after the task has been
/// started, and a signal arriving in between would kill the executor instead.
/// `d` to the millisecond, as `1s 250ms`.
pub fn whole_ms(d: std::time::Duration) -> humantime::FormattedDuration {
    humantime::format_duration(std::time::Duration::from_millis(d.as_millis() as u64))
}

/// The stderr line for a store that stopped answering, or answers again,
/// while a command was `doing` something that outlasts one call.
pub fn store_notice(notice: &task_executor::store::StoreNotice, doing: &str) -> String {
    use task_executor::store::StoreNotice;
    match notice {
        StoreNotice::Unavailable { error, retry_in } => format!(
            "store unavailable: {error}; still {doing}, trying again in {} (backing off to every {})",
            whole_ms(*retry_in),
            whole_ms(task_executor::store::MAX_RETRY)
        ),
        StoreNotice::Back { after } => format!("store back after {}", whole_ms(*after)),
    }
}

pub fn cancel_on_signal(
    token: tokio_util::sync::CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        token.cancel();
    }
}
