//! Command-line definitions (clap derive) and the rewrite that keeps the
//! original tool's single-dash long flags (`-name x`) working.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Turn any executable into a typed task, then run it.
#[derive(Debug, Parser)]
#[command(name = "manage_tasks", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 task succeeded (status 1); 1 task reported another status; \
2 nothing ran (usage, unknown task, invalid arguments, store error); 3 the run failed \
(timeout, cancelled, crash, no or invalid result); 4 store copy: a row differs between the stores."
)]
pub struct Cli {
    /// The task store: a .yaml/.yml file; an SQLite .db/.sqlite/.sqlite3 file or
    /// sqlite: URL; or a PostgreSQL database, postgres://user:password@host:5432/db
    /// (PG* variables fill in what it leaves out). Default: SQLite at
    /// $XDG_DATA_HOME/task-executor/tasks.db.
    #[arg(long, global = true, env = "TASK_STORE", value_name = "STORE")]
    pub store: Option<String>,

    /// Say less on stderr: no store notice, no task log lines.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// `defer`: each subcommand's arguments are built only when that subcommand
/// is used (or for help), so a command does not build all the others'.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Register a new task: runs `<location> schema` and stores what it declares.
    Register(RegisterArgs),
    /// Unregister an existing task.
    Unregister(NameArgs),
    /// List all registered tasks.
    List(ListArgs),
    /// Show one task: location, description, input and output schemas, timeout.
    Show(ShowArgs),
    /// Execute a registered task now, in this process (recorded, except on a YAML store).
    Execute(ExecuteArgs),
    /// Serve every registered task as a tool to MCP clients (stdio, or streamable HTTP with --http).
    Mcp(McpArgs),
    /// Serve the HTTP API (REST + SSE under /api/v1, OpenAPI, /metrics) and run workers in-process.
    Serve(ServeArgs),
    /// Queue a run for the workers and print its id (SQLite or PostgreSQL store).
    Submit(SubmitArgs),
    /// Claim queued runs and execute them until stopped (SIGTERM drains gracefully).
    Worker(WorkerArgs),
    /// The workers registered in the store: list.
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// Run history: list, show, logs, cancel, prune.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Cron schedules that queue runs, fired by the workers.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Whole stores: copy one into another.
    #[command(subcommand)]
    Store(StoreCommand),
    /// API tokens for the MCP HTTP transport and the HTTP API: create, list, revoke.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The audit log: who created tokens, called tools, … and when.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a shell completion script.
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

// A task name, given as `--name N` (original style) or positionally.
// (Not a doc comment: on a flattened `Args` struct that becomes the `about`
// of every subcommand using it, which with `defer` would win over theirs.)
#[derive(Debug, Args)]
#[group(id = "task", required = true, multiple = false)]
pub struct NameArgs {
    /// The task's name (or give it as NAME).
    #[arg(long = "name", value_name = "NAME", group = "task")]
    pub name: Option<String>,
    /// The task's name.
    #[arg(value_name = "NAME", group = "task")]
    pub name_pos: Option<String>,
}

impl NameArgs {
    pub fn get(&self) -> &str {
        self.name
            .as_deref()
            .or(self.name_pos.as_deref())
            .expect("clap requires one of --name or NAME")
    }
}

// Where a run's arguments come from: `--taskArgs JSON`, `--taskArgs -`
// (stdin) or `--args-file F`. (Not a doc comment: see `NameArgs`.)
#[derive(Debug, Args)]
pub struct ArgsSource {
    /// The arguments, a JSON object; `-` reads them from stdin. Default `{}`.
    #[arg(
        long = "taskArgs",
        visible_alias = "args",
        value_name = "JSON",
        conflicts_with = "args_file"
    )]
    pub task_args: Option<String>,
    /// Read the arguments from a file.
    #[arg(long, value_name = "FILE")]
    pub args_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub name: NameArgs,
    /// Path of the executable.
    #[arg(long, value_name = "PATH")]
    pub location: PathBuf,
    /// Default run timeout for this task (e.g. `30s`, `5m`).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// How long `<location> schema` may take.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    pub schema_timeout: Duration,
    /// Replace an existing task of that name, re-reading its schema; the
    /// settings below that are not given again keep their stored values.
    #[arg(long)]
    pub force: bool,
    /// How `format` keywords (`date`, `email`, …) in its schemas are treated:
    /// checked (`assert`, the default) or only annotations (`annotate`).
    #[arg(long, value_enum, value_name = "MODE")]
    pub formats: Option<FormatsArg>,
    /// Queue policy: retry a failed run (timeout, crash, no result) up to N times.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Queue policy: delay before the first retry, doubled for each further one (with jitter).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub backoff: Option<Duration>,
    /// Queue policy: also retry runs that report a status other than 1.
    #[arg(long, conflicts_with = "no_retry_on_status")]
    pub retry_on_status: bool,
    /// Queue policy: retry only run failures, not reported statuses (undoes --retry-on-status).
    #[arg(long)]
    pub no_retry_on_status: bool,
    /// Queue policy: at most K running attempts of this task across all workers.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Queue policy: higher priorities are claimed first (default 0).
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Queue policy: only workers with all these tags run it (e.g. `gpu,linux`;
    /// `''` removes them with --force). Default: any worker.
    #[arg(long, value_parser = parse_tags, value_name = "TAGS")]
    pub tags: Option<Tags>,
    /// Print the registered task as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--formats` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatsArg {
    /// Values must match their `format`.
    Assert,
    /// `format` is only an annotation.
    Annotate,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print `{"items":[…],"next":null}` on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub name: NameArgs,
    /// Print the task as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    pub name: NameArgs,
    #[command(flatten)]
    pub args: ArgsSource,
    /// Run once per line of a JSON Lines file (`-` for stdin), each line the arguments object.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["task_args", "args_file"])]
    pub batch: Option<PathBuf>,
    /// With --batch: how many runs at once (default: the number of CPUs).
    #[arg(long, value_name = "N", requires = "batch", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,
    /// Run timeout, overriding the task's (e.g. `2s`, `1m30s`).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when stopping the task.
    #[arg(long, value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub grace: Duration,
    /// Caller recorded in the envelope's meta.
    #[arg(long, default_value = "self")]
    pub caller: String,
    /// Largest accepted result, in bytes.
    #[arg(long, default_value_t = task_executor::runner::DEFAULT_RESULT_LIMIT, value_parser = parse_result_limit, value_name = "BYTES")]
    pub result_limit: usize,
    /// Print the result and run facts as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Log bytes kept in history per run (head + tail).
    #[arg(long, env = "TASK_LOG_LIMIT", default_value_t = task_executor::history::DEFAULT_LOG_LIMIT, value_name = "BYTES")]
    pub log_limit: usize,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub name: NameArgs,
    #[command(flatten)]
    pub args: ArgsSource,
    /// Queue one run per line of a JSON Lines file (`-` for stdin), in one transaction; prints one id per line.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["wait", "task_args", "args_file"])]
    pub batch: Option<PathBuf>,
    /// Caller recorded in the envelope's meta.
    #[arg(long, default_value = "self")]
    pub caller: String,
    /// Claim priority, overriding the task's.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Not before this time (RFC 3339, e.g. 2026-01-01T09:00:00Z).
    #[arg(long, value_name = "TIME", conflicts_with = "delay")]
    pub at: Option<String>,
    /// Not before this delay from now (e.g. `10s`, `5m`).
    #[arg(long = "in", value_parser = parse_duration, value_name = "DURATION")]
    pub delay: Option<Duration>,
    /// Run timeout, overriding the task's.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Wait for the run to end and exit like `execute`.
    #[arg(long)]
    pub wait: bool,
    /// Print the run (with --wait: once it has ended) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Runs executed at once.
    #[arg(long, short = 'P', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// How long a claimed run is held without a heartbeat (renewed every third of it).
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub lease: Duration,
    /// On SIGTERM/Ctrl-C: how long running tasks may still take before they are stopped and requeued
    /// (and, if the store does not answer, how much longer their results are tried).
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub drain: Duration,
    /// Time between SIGTERM and SIGKILL when stopping a task.
    #[arg(long, alias = "kill-grace", value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub grace: Duration,
    /// How often to look for work when the queue is empty (default 100ms;
    /// on PostgreSQL 1s, idle workers being woken at once by LISTEN/NOTIFY).
    /// Given on PostgreSQL, it turns LISTEN off: polling only, which
    /// PgBouncer's transaction mode needs (LISTEN needs a session of its own).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub poll: Option<Duration>,
    /// Exit once no run is running anywhere and none is due now (runs
    /// queued for later, such as retries waiting out their backoff, do not
    /// keep it waiting; add --wait-delayed for that).
    #[arg(long)]
    pub until_idle: bool,
    /// With --until-idle: also wait for runs queued for later.
    #[arg(long, requires = "until_idle")]
    pub wait_delayed: bool,
    /// The worker's id in history (default: worker-HOSTNAME-PID).
    #[arg(long)]
    pub id: Option<String>,
    /// Log bytes kept in history per run (head + tail).
    #[arg(long, env = "TASK_LOG_LIMIT", default_value_t = task_executor::history::DEFAULT_LOG_LIMIT, value_name = "BYTES")]
    pub log_limit: usize,
    /// Keep at most N finished runs per task (pruned every minute); 0 keeps all.
    #[arg(
        long,
        env = "TASK_KEEP_RUNS",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub keep_runs: u64,
    /// Largest accepted result, in bytes.
    #[arg(long, default_value_t = task_executor::runner::DEFAULT_RESULT_LIMIT, value_parser = parse_result_limit, value_name = "BYTES")]
    pub result_limit: usize,
    /// This worker's tags (e.g. `gpu,linux`): it runs tasks registered with
    /// tags only if it has them all, and tasks without tags. Default: none.
    #[arg(long, value_parser = parse_tags, value_name = "TAGS")]
    pub tags: Option<Tags>,
    /// How often to look again at a task whose executable is missing (or not
    /// executable) on this machine; until then its runs are left to other workers.
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub recheck: Duration,
}

/// A list of tags, checked, sorted and deduplicated.
#[derive(Debug, Clone, Default)]
pub struct Tags(pub Vec<String>);

/// Parses `--tags a,b`: each tag `[a-z0-9][a-z0-9_.-]{0,62}`.
fn parse_tags(s: &str) -> Result<Tags, String> {
    task_executor::task::parse_tags(s)
        .map(Tags)
        .map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum WorkersCommand {
    /// List registered workers: id, host, tags, concurrency, running, last heartbeat, live or gone.
    List(ListArgs),
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum RunsCommand {
    /// List runs, newest first.
    List(RunsListArgs),
    /// Show one run: state, outcome, timings, masked arguments.
    Show(RunIdArgs),
    /// Print a run's log (head and tail, with a marker where lines were cut).
    Logs(RunsLogsArgs),
    /// Cancel a queued run, or stop a running one.
    Cancel(RunIdArgs),
    /// Delete finished runs and their logs.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct RunsListArgs {
    /// Only this task's runs (or give it as NAME).
    #[arg(
        long = "name",
        visible_alias = "task",
        value_name = "NAME",
        conflicts_with = "name_pos"
    )]
    pub name: Option<String>,
    /// Only this task's runs.
    #[arg(value_name = "NAME")]
    pub name_pos: Option<String>,
    /// Only runs in this state.
    #[arg(long, value_parser = ["queued", "running", "completed", "failed", "cancelled"])]
    pub state: Option<String>,
    /// Only runs queued since then: a duration ago (`1h`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// At most N runs.
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Continue after this cursor (printed with the previous page).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// Print `{"items":[…],"next":CURSOR|null}` on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunIdArgs {
    /// The run id (or a unique prefix of 8+ characters).
    pub id: String,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunsLogsArgs {
    /// The run id (or a unique prefix of 8+ characters).
    pub id: String,
    /// Keep printing lines until the run ends.
    #[arg(long, short)]
    pub follow: bool,
    /// Which attempt's log (default: the latest).
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
    /// One JSON object per line: `{"attempt","seq","stream","text","truncated"}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Delete finished runs older than this (e.g. `30d`).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", required_unless_present = "keep")]
    pub older_than: Option<Duration>,
    /// Keep the newest N finished runs of each task (with --older-than: of
    /// the old ones, still keep these N).
    #[arg(long, value_name = "N")]
    pub keep: Option<u64>,
    /// Print `{"pruned":N}` on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ScheduleCommand {
    /// Queue a run of a task at each tick of a cron expression.
    Add(ScheduleAddArgs),
    /// List schedules.
    List(ListArgs),
    /// Remove a schedule.
    Remove(ScheduleRemoveArgs),
}

#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    #[command(flatten)]
    pub name: NameArgs,
    /// Cron expression in UTC: 5 fields (`*/5 * * * *`), or 6 with seconds first.
    #[arg(long, value_name = "EXPR")]
    pub cron: String,
    #[command(flatten)]
    pub args: ArgsSource,
    /// Caller recorded on each run.
    #[arg(long, default_value = "schedule")]
    pub caller: String,
    /// Print the schedule as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ScheduleRemoveArgs {
    /// The schedule's id.
    pub id: String,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum StoreCommand {
    /// Copy tasks, schedules and finished runs into another store; running
    /// it again copies only what is new, and a row that differs in the
    /// target is never overwritten (exit 4).
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The store to copy from, as --store takes it (default: --store/TASK_STORE,
    /// else the default store). It is only read.
    #[arg(long, value_name = "STORE")]
    pub from: Option<String>,
    /// The store to copy into, as --store takes it; created if it does not exist.
    #[arg(long, value_name = "STORE")]
    pub to: String,
    /// Print `{"tasks","schedules","runs","history"}` on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum TokensCommand {
    /// Create a token and print its secret, once (it is stored hashed).
    Create(TokenCreateArgs),
    /// List tokens: name, scope, state (active, expired, revoked), dates; never secrets.
    List(ListArgs),
    /// Revoke a token: it stops authenticating at once and stays listed.
    Revoke(TokenRevokeArgs),
}

/// A token's scope on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScopeArg {
    /// Read: list tasks, runs, logs, tools.
    Read,
    /// Run: read, and run (submit, cancel, call tools).
    Run,
    /// Admin: everything, including tasks, schedules and tokens.
    Admin,
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The token's unique name (letters, digits, `.`, `_`, `-`); audit entries show it.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// What it may do.
    #[arg(long, value_enum)]
    pub scope: ScopeArg,
    /// Expire after this long (e.g. `30d`, `12h`); default: never.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub expires: Option<Duration>,
    /// Print `{"token":{…},"secret":"te_…"}` on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Print the revoked token as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum AuditCommand {
    /// List audit entries, newest first.
    List(AuditListArgs),
}

#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// At most N entries.
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Only entries since then: a duration ago (`1h`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Continue after this cursor (printed with the previous page).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// Print `{"items":[…],"next":CURSOR|null}` on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on; port 0 picks a free port. Without API tokens, a
    /// non-loopback address is refused (exit code 5) unless --insecure-no-auth.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Worker slots run in this process (default: the number of CPUs); 0
    /// serves the API only, leaving runs to `manage_tasks worker` processes.
    #[arg(long, value_name = "N")]
    pub workers: Option<u16>,
    /// The largest request body accepted (`16MiB`, `512KiB`, or bytes).
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_body: usize,
    /// Serve on a non-loopback address without authentication: anyone who
    /// can reach it can register and run tasks.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// On SIGTERM/Ctrl-C: how long running tasks and requests in flight may
    /// still take (runs still going then are stopped and queued again).
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub drain: Duration,
    /// Time between SIGTERM and SIGKILL when stopping a task.
    #[arg(long, value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub grace: Duration,
    /// The caller recorded on runs submitted through the API.
    #[arg(long, default_value = "http")]
    pub caller: String,
}

/// Parses a size: bytes, or a number with `KiB`, `MiB` or `GiB` (or `K`, `M`, `G`).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 16MiB, 512KiB, 1048576)"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB or GiB)")),
    };
    let size = n
        .checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if size == 0 {
        return Err("must be at least 1 byte".into());
    }
    Ok(size)
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Serve the streamable HTTP transport at http://ADDR/mcp instead of stdio (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// Time between SIGTERM and SIGKILL when stopping a task.
    #[arg(long, value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub grace: Duration,
    /// Caller recorded in the envelope's meta.
    #[arg(long, default_value = "mcp")]
    pub caller: String,
    /// Tool calls running at once (default: the CPUs); further calls wait
    /// up to 60 s for a slot, then are refused.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_runs: Option<u32>,
    /// With --http: sessions open at once; a further `initialize` gets HTTP 503.
    #[arg(long, value_name = "N", default_value_t = task_executor_mcp::DEFAULT_MAX_SESSIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..), requires = "http")]
    pub max_sessions: u32,
    /// With --http: a session without requests for this long is closed.
    #[arg(long, value_parser = parse_duration, default_value = "5m", value_name = "DURATION",
          requires = "http")]
    pub session_idle: Duration,
    /// With --http: another Host name (HOST or HOST:PORT) clients may use
    /// to reach this server, besides localhost and the bound address. Repeatable.
    #[arg(long, value_name = "HOST", requires = "http")]
    pub allowed_host: Vec<String>,
    /// With --http: serve a non-loopback address even though no API token
    /// exists, to anyone who can reach it. Unsafe: any client can run tasks.
    #[arg(long, requires = "http")]
    pub insecure_no_auth: bool,
}

/// Parses a duration flag. Durations are stored and compared in whole
/// milliseconds, so anything shorter than 1 ms (which would be stored as 0)
/// is refused rather than silently meaning "no time at all".
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (examples: 500ms, 10s, 2m, 1h30m)"))?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms (durations are kept in milliseconds)".into());
    }
    Ok(d)
}

/// Parses `--result-limit`: a result is at least `{}`, so a limit of 0 would
/// refuse every run after it ran; refused here, before anything runs.
fn parse_result_limit(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|e| format!("{e} (a number of bytes, e.g. 1048576)"))?;
    if n == 0 {
        return Err("must be at least 1 byte (0 would refuse every result)".into());
    }
    Ok(n)
}

/// Rewrites the original tool's single-dash long flags (`-name`, `-taskArgs=…`)
/// to clap's `--name` form. Only names that are long flags somewhere in the
/// command tree are touched, values of options are never rewritten, and
/// everything after `--` is left alone.
pub fn rewrite_single_dash(
    args: Vec<std::ffi::OsString>,
    cmd: &clap::Command,
) -> Vec<std::ffi::OsString> {
    let single_dash_word = |a: &std::ffi::OsString| {
        a.to_str().is_some_and(|s| {
            s.strip_prefix('-').is_some_and(|b| {
                b.len() > 1 && b.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            })
        })
    };
    if !args.iter().skip(1).any(single_dash_word) {
        return args; // the common case: nothing to rewrite, no need to walk the command tree
    }
    let mut longs = std::collections::HashMap::new();
    // Building fills in each argument's number of values.
    let mut cmd = cmd.clone();
    cmd.build();
    collect_longs(&cmd, &mut longs);
    let mut out = Vec::with_capacity(args.len());
    let mut skip_value = false;
    let mut rest = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || rest || skip_value {
            skip_value = false;
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            rest = true;
            out.push(arg);
            continue;
        }
        let flag = if let Some(body) = s.strip_prefix("--") {
            Some(body)
        } else if let Some(body) = s.strip_prefix('-').filter(|b| b.len() > 1) {
            let name = body.split_once('=').map_or(body, |(n, _)| n);
            longs.contains_key(name).then_some(body)
        } else {
            None
        };
        match flag {
            Some(body) => {
                let (name, has_value) = match body.split_once('=') {
                    Some((n, _)) => (n, true),
                    None => (body, false),
                };
                skip_value = !has_value && longs.get(name).copied().unwrap_or(false);
                out.push(format!("--{body}").into());
            }
            None => out.push(arg),
        }
    }
    out
}

fn collect_longs(cmd: &clap::Command, longs: &mut std::collections::HashMap<String, bool>) {
    for arg in cmd.get_arguments() {
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        for long in arg.get_long_and_visible_aliases().into_iter().flatten() {
            longs.insert(long.to_owned(), takes_value);
        }
    }
    for sub in cmd.get_subcommands() {
        collect_longs(sub, longs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn rw(args: &[&str]) -> Vec<String> {
        let args = args.iter().map(Into::into).collect();
        rewrite_single_dash(args, &Cli::command())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            rw(&["m", "execute", "-name", "t", "-taskArgs", "-json"]),
            ["m", "execute", "--name", "t", "--taskArgs", "-json"]
        );
        assert_eq!(
            rw(&["m", "register", "-name=x", "-location", "./a.sh"]),
            ["m", "register", "--name=x", "--location", "./a.sh"]
        );
        // Short flags, unknown words and values are untouched.
        assert_eq!(rw(&["m", "-q", "list", "-h"]), ["m", "-q", "list", "-h"]);
        assert_eq!(rw(&["m", "execute", "-nope"]), ["m", "execute", "-nope"]);
        assert_eq!(
            rw(&["m", "execute", "--caller", "-name", "-json"]),
            ["m", "execute", "--caller", "-name", "--json"]
        );
        assert_eq!(rw(&["m", "x", "--", "-name"]), ["m", "x", "--", "-name"]);
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
