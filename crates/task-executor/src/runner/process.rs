//! One run of a task: spawning it, supervising it, and judging how it ended.
//!
//! Owns process control, because that is where runners go wrong: the task
//! is started with `tokio::process::Command` (no shell, its own process
//! group, stdin/stdout/stderr piped, the run's `TASK_*` variables over the
//! inherited environment), the envelope is written into stdin at once when
//! it fits the pipe (the usual case: no event-loop registration for stdin),
//! else while stdout and stderr are read concurrently (megabyte arguments
//! cannot deadlock), a timeout or cancellation sends SIGTERM to the group,
//! waits `grace`, then SIGKILL.
//! Whatever the ending, once the task itself has exited the rest of its
//! group is SIGKILLed, so no grandchild outlives the run or holds its pipes
//! open; then, on Linux, what it started outside its group (a `setsid`
//! daemon) is ended and reaped too ([`reaper::sweep`], before this run
//! returns); reading the remaining output is bounded by [`DRAIN_BOUND`] in
//! case something escaped both. The child is always awaited: no
//! zombies; a run dropped half-way SIGKILLs the group ([`Group`]) and the
//! child (`kill_on_drop`), which tokio then reaps.
//! The result file is read only if it is a regular file (opened with
//! `O_NOFOLLOW | O_NONBLOCK`, checked with `fstat`, at most the result limit
//! read): a FIFO there cannot block the run, a symlink cannot make it read
//! another file. Whatever the task left at that path — file, symlink, FIFO,
//! directory tree — is removed when the run ends ([`ResultPath`]).
//!
//! std starts the child with `posix_spawn` (no `pre_exec` here, which
//! would force fork + exec), resets SIGPIPE to its default (Rust ignores it,
//! and an ignored signal survives exec) and leaves the signal mask as the
//! spawning thread's; on Linux tokio waits through a pidfd. Modelled on
//! cargo-nextest's `runner/unix.rs` and process-wrap's tokio `ProcessGroup`.

use std::future::{Future, pending};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, sleep_until, timeout as within};
use tokio_util::sync::CancellationToken;

use super::output::{Extracted, Line, LineReader, ResultScanner, STDERR_LINE_CAP};
use super::reaper::{self, Booked};
use super::{RunRequest, RunnerConfig};
use crate::log::{LogLine, LogSink, Stream};
use crate::outcome::{ExitInfo, Outcome, RunReport, new_run_id};
use crate::protocol::{
    ENV_TASK_ATTEMPT, ENV_TASK_NAME, ENV_TASK_PROTOCOL, ENV_TASK_RESULT_FILE, ENV_TASK_RUN_ID,
    Envelope, PROTOCOL_V1, parse_result,
};
use crate::task::PreparedTask;
use crate::task::TaskName;

/// How long output is still read once the task's process group is dead.
///
/// Killing the group (and the reaper's sweep) closes every pipe the task's
/// processes held, so EOF normally follows at once; only a process that
/// left the group and that the sweep cannot end (another user's, or any on
/// a platform without a subreaper) can delay it, and it must not hang the
/// executor.
pub(crate) const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// Why supervision stopped waiting.
enum Ending {
    /// The task exited by itself.
    Exited,
    /// The timeout expired.
    TimedOut,
    /// The cancellation token fired.
    Cancelled,
    /// The kill switch fired.
    Killed,
}

/// What a run knows from its start: its id, its timeout, when it began.
struct Begun<'a> {
    def: &'a crate::Task,
    run_id: String,
    timeout: Duration,
    started_at: SystemTime,
    start: std::time::Instant,
}

impl<'a> Begun<'a> {
    /// Starts the clock of a run of `def` with `request`.
    fn new(def: &'a crate::Task, request: &RunRequest, config: &RunnerConfig) -> Self {
        Self {
            def,
            run_id: request.run_id.clone().unwrap_or_else(new_run_id),
            timeout: request
                .timeout
                .or(def.timeout)
                .unwrap_or(config.default_timeout),
            started_at: SystemTime::now(),
            start: std::time::Instant::now(),
        }
    }

    /// The run's report, ending now.
    fn report(&self, outcome: Outcome, exit: Option<ExitInfo>) -> RunReport {
        RunReport {
            run_id: self.run_id.clone(),
            task: self.def.name.clone(),
            outcome,
            exit,
            started_at: self.started_at,
            duration: self.start.elapsed(),
        }
    }
}

/// Runs `task` once; see [`super::Runner::run`]. When `kill` fires, the
/// group is SIGKILLed at once (no grace), the task reaped, its output no
/// longer read, and the run reports [`Outcome::Cancelled`]: what dropping the
/// run would do, but with the task reaped before this returns.
pub(super) async fn run(
    runner: &super::Runner,
    task: &PreparedTask,
    request: RunRequest,
    logs: &dyn LogSink,
    cancel: &CancellationToken,
    kill: Option<&CancellationToken>,
) -> RunReport {
    let config = &*runner.config;
    let def = task.task();
    let begun = Begun::new(def, &request, config);
    let (run_id, timeout) = (begun.run_id.as_str(), begun.timeout);
    let start = Instant::from_std(begun.start);
    let report = |outcome, exit| begun.report(outcome, exit);
    if cancel.is_cancelled() || kill.is_some_and(CancellationToken::is_cancelled) {
        return report(Outcome::Cancelled, None);
    }
    let result_path = match ResultPath::new(&runner.results, run_id, def) {
        Ok(path) => path,
        Err(outcome) => return report(outcome, None),
    };

    // Our own pipe for stdin rather than `Stdio::piped()`, which tokio would
    // register with the event loop and write to only on its next turn: most
    // envelopes fit in the pipe and are written at once, right after the spawn.
    let (stdin_read, stdin_write) = match stdin_pipe() {
        Ok(pipe) => pipe,
        Err(e) => {
            let message = format!("cannot make a pipe for `{}`: {e}", def.location.display());
            return report(Outcome::SpawnFailed { message }, None);
        }
    };
    let mut cmd = Command::new(&def.location);
    cmd.stdin(stdin_read)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .envs(run_variables(def, run_id, &result_path));
    // Only a worker's runs have an attempt; never one inherited from the
    // executor's own environment (a worker started by a task).
    match request.attempt {
        Some(attempt) => cmd.env(ENV_TASK_ATTEMPT, attempt.to_string()),
        None => cmd.env_remove(ENV_TASK_ATTEMPT),
    };
    let spawned = spawn_in_group(&mut cmd, Some(run_id));
    // Closes our copy of the read end of stdin: only the task holds it now,
    // so a task that exits without reading makes our writes fail (EPIPE).
    drop(cmd);
    let (mut child, mut group) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            let message = format!("cannot start `{}`: {e}", def.location.display());
            return report(Outcome::SpawnFailed { message }, None);
        }
    };
    tracing::debug!(task = %def.name, run_id, pid = group.pgid.as_raw_nonzero(), "task started");

    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let envelope = Envelope::new(request.caller, def.name.as_str(), request.args).to_line();
    // What did not fit in the pipe, written by tokio as the task reads.
    let unwritten = write_now(stdin_write, &envelope).and_then(|(fd, written)| {
        pipe::Sender::from_owned_fd_unchecked(fd)
            .inspect_err(|e| tracing::debug!("cannot register the task's stdin: {e}"))
            .ok()
            .map(|stdin| (stdin, written))
    });

    let drained = CancellationToken::new();
    let mut scanner = ResultScanner::new(config.result_limit);
    let ctx = SinkCtx {
        logs,
        task: &def.name,
        run_id,
    };
    let read_stdout = unless_fired(
        kill,
        bounded_by(
            &drained,
            pump(stdout, config.result_limit, Stream::Stdout, &ctx, |line| {
                scanner.feed(line)
            }),
        ),
    );
    let read_stderr = unless_fired(
        kill,
        bounded_by(
            &drained,
            pump(stderr, STDERR_LINE_CAP, Stream::Stderr, &ctx, |_| {}),
        ),
    );

    let supervise = async {
        let deadline = start.checked_add(timeout);
        let expired = async {
            match deadline {
                Some(at) => sleep_until(at).await,
                None => pending().await,
            }
        };
        let (ending, status) = tokio::select! {
            biased;
            status = child.wait() => (Ending::Exited, Some(status)),
            () = expired => (Ending::TimedOut, None),
            () = cancel.cancelled() => (Ending::Cancelled, None),
            () = fired(kill) => (Ending::Killed, None),
            never = reaper::keep_reaping() => match never {},
        };
        let status = match (status, &ending) {
            (Some(status), _) => status,
            (None, Ending::Killed) => kill_now(&mut child, group.pgid).await,
            (None, _) => tokio::select! {
                biased;
                status = terminate(&mut child, group.pgid, config.grace) => status,
                () = fired(kill) => kill_now(&mut child, group.pgid).await,
            },
        };
        // The task is gone: nothing else of its group may live on, nor
        // anything it started elsewhere (which may hold its pipes open).
        let grace = match ending {
            Ending::Killed => Duration::ZERO,
            _ => config.grace,
        };
        group.finish(grace, kill).await;
        drained.cancel();
        (ending, status)
    };

    // Stops writing once the task is gone: one that never reads stdin must
    // not keep a large envelope's write pending.
    let write_input = async {
        if let Some((stdin, written)) = unwritten {
            tokio::select! {
                () = write_envelope(stdin, &envelope[written..]) => {}
                () = drained.cancelled() => {}
            }
        }
    };

    let ((ending, status), stdout_complete, stderr_complete, ()) =
        tokio::join!(supervise, read_stdout, read_stderr, write_input);
    if !(stdout_complete && stderr_complete) {
        tracing::warn!(
            task = %def.name, run_id,
            "output still open {DRAIN_BOUND:?} after the task's process group was killed \
             (a process left the group?); stopped reading"
        );
    }

    let status = match status {
        Ok(status) => status,
        Err(e) => {
            // Cannot really happen; the child's drop and the group kill clean up.
            let message = format!(
                "lost track of `{}` (pid {}): {e}",
                def.location.display(),
                group.pgid.as_raw_nonzero()
            );
            return report(Outcome::SpawnFailed { message }, None);
        }
    };
    let exit = exit_info(status);
    tracing::debug!(task = %def.name, run_id, ?exit, "task ended");

    let outcome = conclude(task, config, ending, status, timeout, result_path, scanner);
    report(outcome, exit)
}

/// The variables a run sets for its task, besides the inherited environment.
fn run_variables<'a>(
    def: &'a crate::Task,
    run_id: &'a str,
    result_path: &'a ResultPath,
) -> [(&'static str, &'a std::ffi::OsStr); 4] {
    [
        (ENV_TASK_NAME, def.name.as_str().as_ref()),
        (ENV_TASK_RUN_ID, run_id.as_ref()),
        (ENV_TASK_PROTOCOL, PROTOCOL_V1.as_ref()),
        (ENV_TASK_RESULT_FILE, result_path.path.as_os_str()),
    ]
}

/// The outcome of a run whose task has exited: the ending, else what the
/// result file or stdout reported, judged against the task's `outputs`.
fn conclude(
    task: &PreparedTask,
    config: &RunnerConfig,
    ending: Ending,
    status: ExitStatus,
    timeout: Duration,
    mut result_path: ResultPath,
    scanner: ResultScanner,
) -> Outcome {
    match ending {
        Ending::TimedOut => Outcome::TimedOut { after: timeout },
        Ending::Cancelled | Ending::Killed => Outcome::Cancelled,
        Ending::Exited => {
            let from_file = read_result_file(&result_path.path, config.result_limit);
            // Nothing to remove if the task made nothing there.
            result_path.maybe_written = from_file != ResultFile::Absent;
            let extracted = match from_file {
                ResultFile::Read(from_file) => from_file,
                ResultFile::Absent | ResultFile::Empty => scanner.finish(),
            };
            judge(task, status, extracted, config.result_limit)
        }
    }
}

/// Turns how the task exited and what it reported into an [`Outcome`].
fn judge(task: &PreparedTask, status: ExitStatus, extracted: Extracted, limit: usize) -> Outcome {
    if let Some(signal) = status.signal() {
        return Outcome::Signalled {
            signal: signal_name(signal),
        };
    }
    let code = status.code().unwrap_or(-1);
    if code != 0 {
        let result = match extracted {
            Extracted::Found(result, _) => Some(result),
            _ => None,
        };
        return Outcome::ExitedNonZero { code, result };
    }
    match extracted {
        Extracted::None => Outcome::NoResult,
        Extracted::Invalid(message) => Outcome::InvalidResult { message },
        Extracted::TooLarge => Outcome::ResultTooLarge { limit },
        Extracted::Found(result, raw) => match task.validate_result(&raw) {
            Ok(()) => Outcome::Completed { result },
            Err(violations) => Outcome::OutputViolation { result, violations },
        },
    }
}

/// What a task left at its `TASK_RESULT_FILE` path.
#[derive(Debug, PartialEq)]
enum ResultFile {
    /// Nothing: the task reported on stdout, if at all.
    Absent,
    /// An empty regular file: as if absent, but something to remove.
    Empty,
    /// The result it holds, or why it cannot be used.
    Read(Extracted),
}

/// Reads the result the task left at `path`, at most `limit` bytes of it.
///
/// Only a regular file counts: the path is opened without following a
/// symlink (which could point at any file this user can read) and without
/// blocking (opening a FIFO waits for a writer, forever), and the open file
/// is checked again with `fstat` in case it was swapped after the `lstat`.
/// Anything else there is an invalid result naming what it is.
///
/// Plain blocking reads: the file is local and small (bounded by `limit`), and
/// `tokio::fs` would start a blocking-pool thread on the hot path of every run.
fn read_result_file(path: &Path, limit: usize) -> ResultFile {
    let cannot_read = |e: io::Error| {
        ResultFile::Read(Extracted::Invalid(format!(
            "cannot read `{ENV_TASK_RESULT_FILE}` `{}`: {e}",
            path.display()
        )))
    };
    let not_regular = |kind: &str| {
        ResultFile::Read(Extracted::Invalid(format!(
            "`{ENV_TASK_RESULT_FILE}` `{}` is {kind}, not a regular file; a task reporting \
             through it must write its result into a regular file at that path",
            path.display()
        )))
    };
    // Not opening what is not a regular file at all: opening a device can do things.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => return not_regular(file_kind(meta.file_type())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return ResultFile::Absent,
        Err(e) => return cannot_read(e),
    }
    let flags = rustix::fs::OFlags::RDONLY
        | rustix::fs::OFlags::NOFOLLOW
        | rustix::fs::OFlags::NONBLOCK
        | rustix::fs::OFlags::NOCTTY
        | rustix::fs::OFlags::CLOEXEC;
    let file = match rustix::fs::open(path, flags, rustix::fs::Mode::empty()) {
        Ok(fd) => std::fs::File::from(fd),
        // Replaced since the `lstat`: by a symlink (ELOOP), a socket (ENXIO), or removed.
        Err(Errno::LOOP) => return not_regular("a symbolic link"),
        Err(Errno::NOENT) => return ResultFile::Absent,
        Err(e) => return cannot_read(e.into()),
    };
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(e) => return cannot_read(e),
    };
    if !meta.file_type().is_file() {
        return not_regular(file_kind(meta.file_type()));
    }
    let len = meta.len();
    if len == 0 {
        return ResultFile::Empty;
    }
    if len > limit as u64 {
        return ResultFile::Read(Extracted::TooLarge);
    }
    let mut bytes = Vec::with_capacity(len as usize);
    if let Err(e) =
        std::io::Read::read_to_end(&mut std::io::Read::take(file, limit as u64 + 1), &mut bytes)
    {
        return cannot_read(e);
    }
    if bytes.len() > limit {
        return ResultFile::Read(Extracted::TooLarge);
    }
    ResultFile::Read(match parse_result(&bytes) {
        Ok((result, raw)) => Extracted::Found(result, raw),
        Err(e) => Extracted::Invalid(format!("`{ENV_TASK_RESULT_FILE}`: {e}")),
    })
}

/// What a file that is not a regular file is, with its article.
fn file_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// Removes whatever is at `path`: a file, a symlink (not its target), a
/// FIFO, a socket, or a directory with all it holds (symlinks inside are
/// removed, never followed: std's `remove_dir_all` opens each level with
/// `O_NOFOLLOW`).
fn remove_leftover(path: &Path) {
    let removed = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    match removed {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            "cannot remove `{}`, which the task left at its `{ENV_TASK_RESULT_FILE}`: {e}",
            path.display()
        ),
    }
}

/// A run's `TASK_RESULT_FILE` path; whatever the task left there is removed on drop.
struct ResultPath {
    path: std::path::PathBuf,
    /// Cleared when nothing was there once the task had exited: saves an
    /// `lstat` per run.
    maybe_written: bool,
}

impl ResultPath {
    /// A fresh path in the runner's private directory; the task creates the
    /// file if it reports through it. `Err` is the run's outcome.
    #[expect(
        clippy::result_large_err,
        reason = "once per run, and the outcome is what the run returns anyway"
    )]
    fn new(
        results: &super::result_dir::ResultDir,
        run_id: &str,
        def: &crate::Task,
    ) -> Result<Self, Outcome> {
        match results.next_path(run_id) {
            Ok(path) => Ok(Self {
                path,
                maybe_written: true,
            }),
            Err(e) => {
                let message = format!(
                    "cannot use `{}` for `{}`'s result file: {e}",
                    results.path().display(),
                    def.location.display(),
                );
                Err(Outcome::SpawnFailed { message })
            }
        }
    }
}

impl Drop for ResultPath {
    fn drop(&mut self) {
        if self.maybe_written {
            remove_leftover(&self.path);
        }
    }
}

/// The task's stdin: the read end (blocking, for the task) and ours
/// (non-blocking, for [`write_now`]), both closed on exec.
fn stdin_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    #[cfg(not(any(
        target_vendor = "apple",
        target_os = "aix",
        target_os = "haiku",
        target_os = "nto"
    )))]
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // No pipe2(2) there: close-on-exec is set right after, as std does.
    #[cfg(any(
        target_vendor = "apple",
        target_os = "aix",
        target_os = "haiku",
        target_os = "nto"
    ))]
    let (read, write) = {
        let (read, write) = rustix::pipe::pipe()?;
        for fd in [&read, &write] {
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
        }
        (read, write)
    };
    rustix::fs::fcntl_setfl(&write, rustix::fs::OFlags::NONBLOCK)?;
    Ok((read, write))
}

/// Writes as much of `bytes` to the non-blocking `fd` as it takes without
/// waiting. Returns the descriptor and how much was written if the pipe
/// filled up first; `None` once everything is written (dropping `fd` closes
/// the task's stdin) or the task stopped reading (EPIPE: not an error, a
/// task need not read its input).
fn write_now(fd: OwnedFd, bytes: &[u8]) -> Option<(OwnedFd, usize)> {
    let mut written = 0;
    while written < bytes.len() {
        match rustix::io::write(&fd, &bytes[written..]) {
            Ok(n) => written += n,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => return Some((fd, written)),
            Err(Errno::PIPE) => return None,
            Err(e) => {
                tracing::debug!("writing the envelope to the task's stdin failed: {e}");
                return None;
            }
        }
    }
    None
}

/// Writes what [`write_now`] could not and closes stdin. A task that never
/// reads stdin, or exits before reading all of it, is fine: EPIPE is not an
/// error.
async fn write_envelope(mut stdin: impl AsyncWrite + Unpin, envelope: &[u8]) {
    match stdin.write_all(envelope).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => tracing::debug!("writing the envelope to the task's stdin failed: {e}"),
    }
    drop(stdin);
}

/// What every log line carries besides its text.
struct SinkCtx<'a> {
    logs: &'a dyn LogSink,
    task: &'a TaskName,
    run_id: &'a str,
}

/// Reads `reader` line by line to EOF, sending each line to the sink and to `on_line`.
async fn pump<R: AsyncRead + Unpin>(
    reader: R,
    cap: usize,
    stream: Stream,
    ctx: &SinkCtx<'_>,
    mut on_line: impl FnMut(Line<'_>),
) {
    let mut lines = LineReader::new(reader, cap);
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                ctx.logs.line(LogLine {
                    task: ctx.task,
                    run_id: ctx.run_id,
                    stream,
                    text: line.text,
                    truncated: line.truncated,
                });
                on_line(line);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(task = %ctx.task, run_id = ctx.run_id, ?stream, "reading the task's output failed: {e}");
                break;
            }
        }
    }
}

/// Waits until `token` fires; forever without one.
async fn fired(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => pending().await,
    }
}

/// Runs `fut` (which says whether it completed) unless `kill` fires first;
/// true then too, as nothing more was wanted.
async fn unless_fired(kill: Option<&CancellationToken>, fut: impl Future<Output = bool>) -> bool {
    tokio::select! {
        biased;
        complete = fut => complete,
        () = fired(kill) => true,
    }
}

/// Runs `fut` to completion unless it is still running [`DRAIN_BOUND`] after
/// `drained` fires. Returns whether it completed.
pub(super) async fn bounded_by(drained: &CancellationToken, fut: impl Future<Output = ()>) -> bool {
    // Biased: output that has already ended wins without arming the timer.
    tokio::select! {
        biased;
        () = fut => true,
        () = async { drained.cancelled().await; sleep(DRAIN_BOUND).await } => false,
    }
}

/// A spawned child's process group, SIGKILLed when dropped unless already
/// cleaned up, so a dropped run future leaves nothing behind (the child
/// itself is killed by tokio's `kill_on_drop` and reaped by tokio's orphan
/// queue, on this or any runtime that still runs).
pub(super) struct Group {
    /// The group id, which is the child's pid.
    pub pgid: Pid,
    armed: bool,
    /// The child, booked so that no sweep takes it for a leftover.
    booked: Option<Booked>,
}

impl Group {
    /// The group of a freshly spawned child started with its own group.
    fn led_by(pgid: Pid, booked: Booked) -> Self {
        Self {
            pgid,
            armed: true,
            booked: Some(booked),
        }
    }

    /// SIGKILLs whatever is left of the group once its leader has exited.
    pub fn kill_rest(&mut self) {
        if self.armed {
            kill_group(self.pgid, Signal::KILL);
            self.armed = false;
        }
    }
}

impl Group {
    /// Once the child has been reaped: SIGKILLs the rest of its group, then
    /// ends what this run and other finished runs left running outside
    /// their groups ([`reaper::sweep`]: SIGTERM, `grace` or until `kill`
    /// fires, SIGKILL, reaped).
    pub async fn finish(&mut self, grace: Duration, kill: Option<&CancellationToken>) {
        self.kill_rest();
        if let Some(booked) = self.booked.take() {
            booked.reaped();
        }
        reaper::sweep(grace, kill).await;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill_rest();
    }
}

/// Spawns `cmd` (which must have `process_group(0)`) for the run `run_id`
/// (`None` for a `schema` call) and names its group.
pub(super) fn spawn_in_group(
    cmd: &mut Command,
    run_id: Option<&str>,
) -> io::Result<(Child, Group)> {
    let (mut child, booked) = reaper::spawn(cmd, run_id)?;
    let Some(pgid) = child
        .id()
        .and_then(|id| Pid::from_raw(i32::try_from(id).ok()?))
    else {
        // Only possible if the child was already reaped, which we have not done.
        let _ = child.start_kill();
        return Err(io::Error::other("the spawned process has no pid"));
    };
    Ok((child, Group::led_by(pgid, booked)))
}

/// Sends `signal` to every process of group `pgid`; a group already gone is fine.
pub(super) fn kill_group(pgid: Pid, signal: Signal) {
    match rustix::process::kill_process_group(pgid, signal) {
        Ok(()) | Err(Errno::SRCH) => {}
        Err(e) => tracing::warn!(
            pgid = pgid.as_raw_nonzero(),
            "cannot send {} to the task's process group: {e}",
            signal_name(signal.as_raw())
        ),
    }
}

/// SIGTERM to the group, up to `grace` for the child to exit, then SIGKILL; reaps the child.
pub(super) async fn terminate(
    child: &mut Child,
    pgid: Pid,
    grace: Duration,
) -> io::Result<ExitStatus> {
    kill_group(pgid, Signal::TERM);
    match within(grace, child.wait()).await {
        Ok(status) => status,
        Err(_elapsed) => {
            kill_group(pgid, Signal::KILL);
            child.wait().await
        }
    }
}

/// SIGKILL to the group, then reaps the child.
async fn kill_now(child: &mut Child, pgid: Pid) -> io::Result<ExitStatus> {
    kill_group(pgid, Signal::KILL);
    child.wait().await
}

/// How a reaped process ended.
fn exit_info(status: ExitStatus) -> Option<ExitInfo> {
    if let Some(code) = status.code() {
        return Some(ExitInfo::Code { code });
    }
    status.signal().map(|number| ExitInfo::Signal {
        number,
        name: signal_name(number),
    })
}

/// The conventional name of signal `number` (`SIGSEGV`), or `signal N` for others.
pub(super) fn signal_name(number: i32) -> String {
    let mut names: Vec<(Signal, &str)> = vec![
        (Signal::HUP, "SIGHUP"),
        (Signal::INT, "SIGINT"),
        (Signal::QUIT, "SIGQUIT"),
        (Signal::ILL, "SIGILL"),
        (Signal::TRAP, "SIGTRAP"),
        (Signal::ABORT, "SIGABRT"),
        (Signal::BUS, "SIGBUS"),
        (Signal::FPE, "SIGFPE"),
        (Signal::KILL, "SIGKILL"),
        (Signal::USR1, "SIGUSR1"),
        (Signal::SEGV, "SIGSEGV"),
        (Signal::USR2, "SIGUSR2"),
        (Signal::PIPE, "SIGPIPE"),
        (Signal::ALARM, "SIGALRM"),
        (Signal::TERM, "SIGTERM"),
        (Signal::CHILD, "SIGCHLD"),
        (Signal::CONT, "SIGCONT"),
        (Signal::STOP, "SIGSTOP"),
        (Signal::TSTP, "SIGTSTP"),
        (Signal::TTIN, "SIGTTIN"),
        (Signal::TTOU, "SIGTTOU"),
        (Signal::URG, "SIGURG"),
        (Signal::XCPU, "SIGXCPU"),
        (Signal::XFSZ, "SIGXFSZ"),
        (Signal::VTALARM, "SIGVTALRM"),
        (Signal::PROF, "SIGPROF"),
        (Signal::WINCH, "SIGWINCH"),
        (Signal::SYS, "SIGSYS"),
    ];
    #[cfg(not(target_os = "haiku"))]
    names.push((Signal::IO, "SIGIO"));
    #[cfg(any(target_os = "linux", target_os = "android"))]
    names.push((Signal::POWER, "SIGPWR"));
    names
        .iter()
        .find(|(s, _)| s.as_raw() == number)
        .map_or_else(|| format!("signal {number}"), |(_, n)| (*n).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_are_posix() {
        assert_eq!(signal_name(Signal::SEGV.as_raw()), "SIGSEGV");
        assert_eq!(signal_name(Signal::KILL.as_raw()), "SIGKILL");
        assert_eq!(signal_name(Signal::ABORT.as_raw()), "SIGABRT");
        assert_eq!(signal_name(Signal::ALARM.as_raw()), "SIGALRM");
        assert_eq!(signal_name(Signal::TERM.as_raw()), "SIGTERM");
        assert_eq!(signal_name(200), "signal 200");
    }

    #[test]
    fn result_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        assert_eq!(read_result_file(&p, 100), ResultFile::Absent);
        std::fs::write(&p, "").unwrap();
        assert_eq!(read_result_file(&p, 100), ResultFile::Empty);
        std::fs::write(&p, r#"{"status":1,"reason":"ok"}"#).unwrap();
        assert!(matches!(
            read_result_file(&p, 100),
            ResultFile::Read(Extracted::Found(r, _)) if r.reason == "ok"
        ));
        assert_eq!(
            read_result_file(&p, 10),
            ResultFile::Read(Extracted::TooLarge)
        );
        std::fs::write(&p, "nope").unwrap();
        assert!(matches!(
            read_result_file(&p, 100),
            ResultFile::Read(Extracted::Invalid(m)) if m.contains(ENV_TASK_RESULT_FILE)
        ));
    }

    /// The message for what is at `p`, which must not be a usable result.
    fn refused(p: &Path) -> String {
        match read_result_file(p, 100) {
            ResultFile::Read(Extracted::Invalid(m)) => m,
            other => panic!("{} was accepted: {other:?}", p.display()),
        }
    }

    #[test]
    fn only_a_regular_result_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("other.json");
        std::fs::write(&target, r#"{"status":1,"reason":"not yours"}"#).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let m = refused(&link);
        assert!(m.contains("is a symbolic link, not a regular file"), "{m}");
        assert!(m.contains(&link.display().to_string()), "{m}");

        let sub = dir.path().join("dir.json");
        std::fs::create_dir(&sub).unwrap();
        assert!(refused(&sub).contains("is a directory, not a regular file"));

        let fifo = dir.path().join("fifo.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", fifo.display());
        // Returns at once: nobody writes to it.
        assert!(refused(&fifo).contains("is a FIFO, not a regular file"));

        for p in [&link, &sub, &fifo] {
            remove_leftover(p);
            assert!(
                std::fs::symlink_metadata(p).is_err(),
                "{} left",
                p.display()
            );
        }
        assert!(target.exists(), "a symlink's target is not removed");
    }

    #[test]
    fn a_directory_is_removed_without_following_links_inside() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        std::fs::write(keep.join("precious"), "x").unwrap();
        let left = dir.path().join("left.json");
        std::fs::create_dir_all(left.join("a/b")).unwrap();
        std::fs::write(left.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&keep, left.join("a/to-keep")).unwrap();
        remove_leftover(&left);
        assert!(!left.exists());
        assert!(keep.join("precious").exists());
        // Nothing there: nothing to do, no error.
        remove_leftover(&left);
    }
}
