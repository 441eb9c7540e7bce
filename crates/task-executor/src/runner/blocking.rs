//! One run of a task supervised on the calling thread, without an event
//! loop: one `poll(2)` over the task's pipes, its pidfd and a [`Stop`].
//!
//! Why a second supervisor beside [`super::process`]: the [`crate::Pool`]'s
//! slot threads each supervise one run at a time, and there tokio's
//! machinery is pure cost. Every run registered its pidfd and two pipes with
//! the slot's event loop (six `epoll_ctl`s), woke through it, and its timers
//! and select arms were polled again at each wake-up; a blocking
//! spawn-write-read-wait loop per thread was the fastest design measured
//! (docs/performance.md). The contract is the same as the async runner's,
//! and the tests run every scenario through both: timeout and cancellation
//! send SIGTERM to the group, wait `grace`, then SIGKILL; once the task has
//! exited the rest of its group is killed and output is read for at most
//! [`DRAIN_BOUND`] more; the child is always reaped. [`Stop::abort`] is what
//! dropping the async run's future does: SIGKILL at once.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};
use rustix::process::Signal;

use super::RunRequest;
use super::output::{LineReader, ResultScanner, STDERR_LINE_CAP};
use super::process::{
    DRAIN_BOUND, Ending, Group, begin, conclude, exit_info, kill_group, run_variables,
};
use super::spawn::{Spawned, spawn_fds, write_now};
use crate::log::{LogLine, LogSink, Stream};
use crate::outcome::{Outcome, RunReport};
use crate::protocol::Envelope;
use crate::task::PreparedTask;

/// How often a run without a pidfd (kernels before 5.3) checks whether its
/// task has exited.
const NO_PIDFD_TICK: Duration = Duration::from_millis(5);

/// Stops blocking runs ([`super::Runner::run_blocking`]) from any thread.
///
/// [`Stop::cancel`] is a [`tokio_util::sync::CancellationToken`]'s
/// `cancel` for them (SIGTERM, grace, SIGKILL; the run reports
/// [`Outcome::Cancelled`]); [`Stop::abort`] is dropping the run's future
/// (SIGKILL to the group at once). Both are final, and every run sharing the
/// `Stop` sees them, running or not yet started.
#[derive(Debug, Clone)]
pub struct Stop {
    inner: Arc<StopInner>,
}

#[derive(Debug)]
struct StopInner {
    cancel: Flag,
    abort: Flag,
}

/// A one-way switch a `poll(2)` can wait on: an eventfd that becomes
/// readable, and stays so, once the switch is set.
#[derive(Debug)]
struct Flag {
    set: AtomicBool,
    fd: OwnedFd,
}

impl Flag {
    fn new() -> io::Result<Self> {
        Ok(Self {
            set: AtomicBool::new(false),
            fd: rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
        })
    }

    fn set(&self) {
        if !self.set.swap(true, Ordering::SeqCst) {
            // Never read back: the descriptor stays readable for every poller.
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }
}

impl Stop {
    /// A switch nothing has pulled yet.
    ///
    /// # Errors
    /// If the system cannot make an eventfd (out of descriptors).
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            inner: Arc::new(StopInner {
                cancel: Flag::new()?,
                abort: Flag::new()?,
            }),
        })
    }

    /// Cancels every run sharing this switch: SIGTERM to the group, `grace`,
    /// SIGKILL; runs not yet started report [`Outcome::Cancelled`] at once.
    pub fn cancel(&self) {
        self.inner.cancel.set();
    }

    /// SIGKILLs every run's group at once and returns as soon as the task is
    /// reaped, reporting [`Outcome::Cancelled`].
    pub fn abort(&self) {
        self.inner.abort.set();
        self.inner.cancel.set();
    }

    /// Whether [`Stop::cancel`] (or [`Stop::abort`]) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_set()
    }
}

/// Runs `task` once on this thread; see [`super::Runner::run_blocking`].
pub(super) fn run(
    runner: &super::Runner,
    task: &PreparedTask,
    request: RunRequest,
    logs: &dyn LogSink,
    stop: &Stop,
) -> RunReport {
    let config = &*runner.config;
    let def = task.task();
    let (begun, result_path) = begin(runner, def, &request, stop.is_cancelled());
    let (run_id, timeout, start) = (begun.run_id.as_str(), begun.timeout, begun.start);
    let report = |outcome, exit| begun.report(outcome, exit);
    let result_path = match result_path {
        Ok(path) => path,
        Err(outcome) => return report(outcome, None),
    };

    let spawned = spawn_fds(
        &def.location,
        &runner.env,
        &run_variables(def, run_id, &result_path),
    );
    let Spawned {
        mut process,
        stdin,
        stdout,
        stderr,
    } = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            let message = format!("cannot start `{}`: {e}", def.location.display());
            return report(Outcome::SpawnFailed { message }, None);
        }
    };
    let mut group = Group::led_by(process.pid);
    tracing::debug!(task = %def.name, run_id, pid = group.pgid.as_raw_nonzero(), "task started");

    let envelope = Envelope::new(request.caller, def.name.as_str(), request.args).to_line();
    // Usually the whole envelope fits in the pipe; the rest is written as
    // the task reads, until it exits.
    let mut input = write_now(stdin, &envelope);
    let mut scanner = ResultScanner::new(config.result_limit);
    let mut out = Some(LineReader::new(stdout, config.result_limit));
    let mut err = Some(LineReader::new(stderr, STDERR_LINE_CAP));
    let sink = |stream, line: super::output::Line<'_>| {
        logs.line(LogLine {
            task: &def.name,
            run_id,
            stream,
            text: line.text,
            truncated: line.truncated,
        });
    };

    let deadline = start.checked_add(timeout);
    let mut ending: Option<Ending> = None;
    let mut status: Option<io::Result<ExitStatus>> = None;
    // After SIGTERM: when the group gets SIGKILL if the task is still there.
    let mut kill_at: Option<Instant> = None;
    // Once the task has exited: how long its output is still read.
    let mut drain_until: Option<Instant> = None;
    let stop = &stop.inner;
    loop {
        if status.is_some() && out.is_none() && err.is_none() {
            break;
        }
        let now = Instant::now();
        if drain_until.is_some_and(|until| now >= until) {
            tracing::warn!(
                task = %def.name, run_id,
                "output still open {DRAIN_BOUND:?} after the task's process group was killed \
                 (a process left the group?); stopped reading"
            );
            break;
        }

        // The next moment something must happen without any descriptor
        // becoming ready.
        let mut wake_at = drain_until.or(kill_at);
        if ending.is_none() {
            wake_at = earliest(wake_at, deadline);
        }
        if status.is_none() && process.pidfd.is_none() {
            wake_at = earliest(wake_at, Some(now + NO_PIDFD_TICK));
        }

        let ready = {
            // The abort switch is always watched, at index 0.
            let mut set = PollSet::new(stop.abort.fd.as_fd());
            let abort = Some(0);
            let cancel = set.watch(
                ending.is_none().then(|| stop.cancel.fd.as_fd()),
                PollFlags::IN,
            );
            let pidfd = set.watch(
                status
                    .is_none()
                    .then(|| process.pidfd.as_ref().map(AsFd::as_fd))
                    .flatten(),
                PollFlags::IN,
            );
            let stdout = set.watch(out.as_ref().map(|r| r.get_ref().as_fd()), PollFlags::IN);
            let stderr = set.watch(err.as_ref().map(|r| r.get_ref().as_fd()), PollFlags::IN);
            let stdin = set.watch(input.as_ref().map(|(fd, _)| fd.as_fd()), PollFlags::OUT);
            let timeout = wake_at.map(|at| {
                let left = at.saturating_duration_since(now);
                Timespec {
                    tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
                    tv_nsec: left.subsec_nanos().into(),
                }
            });
            if let Err(e) = set.poll(timeout.as_ref()) {
                // Cannot really happen with valid descriptors; the
                // group's and the process's drops clean up.
                let message = format!("cannot wait for `{}`: {e}", def.location.display());
                return report(Outcome::SpawnFailed { message }, None);
            }
            Ready {
                stdout: set.ready(stdout),
                stderr: set.ready(stderr),
                stdin: set.ready(stdin),
                exited: set.ready(pidfd),
                cancelled: set.ready(cancel),
                aborted: set.ready(abort),
            }
        };

        if ready.aborted {
            // What dropping the async run does: nothing is left, nothing waited for.
            kill_group(group.pgid, Signal::KILL);
            drop(process); // SIGKILLed (again) and reaped
            return report(Outcome::Cancelled, None);
        }
        if ready.stdout {
            read_lines(&mut out, Stream::Stdout, def, run_id, |line| {
                sink(Stream::Stdout, line);
                scanner.feed(line);
            });
        }
        if ready.stderr {
            read_lines(&mut err, Stream::Stderr, def, run_id, |line| {
                sink(Stream::Stderr, line);
            });
        }
        if ready.stdin
            && let Some((fd, written)) = input.take()
        {
            input = write_now(fd, &envelope[written..]).map(|(fd, more)| (fd, written + more));
        }

        let now = Instant::now();
        if ending.is_none() {
            let stopping = if ready.cancelled {
                Some(Ending::Cancelled)
            } else if deadline.is_some_and(|at| now >= at) {
                Some(Ending::TimedOut)
            } else {
                None
            };
            if let Some(why) = stopping {
                kill_group(group.pgid, Signal::TERM);
                kill_at = Some(now + config.grace);
                ending = Some(why);
            }
        }
        if status.is_none()
            && (ready.exited || process.pidfd.is_none())
            && let Some(waited) = process.try_wait().transpose()
        {
            status = Some(waited);
            // The task is gone: nothing else of its group may live on,
            // and nobody is left to read the rest of the envelope.
            group.kill_rest();
            input = None;
            kill_at = None;
            drain_until = Some(now + DRAIN_BOUND);
            ending.get_or_insert(Ending::Exited);
        }
        if status.is_none() && kill_at.is_some_and(|at| now >= at) {
            kill_group(group.pgid, Signal::KILL);
            kill_at = None;
        }
    }

    let ending = ending.unwrap_or(Ending::Exited);
    let status = match status {
        Some(Ok(status)) => status,
        Some(Err(e)) => {
            let message = format!(
                "lost track of `{}` (pid {}): {e}",
                def.location.display(),
                group.pgid.as_raw_nonzero()
            );
            return report(Outcome::SpawnFailed { message }, None);
        }
        None => unreachable!("the loop ends only once the task has exited"),
    };
    let exit = exit_info(status);
    tracing::debug!(task = %def.name, run_id, ?exit, "task ended");
    let outcome = conclude(task, config, ending, status, timeout, result_path, scanner);
    report(outcome, exit)
}

/// Hands every whole line `reader` has without waiting to `on_line`;
/// closes it (`None`) at EOF or on a read error.
fn read_lines(
    reader: &mut Option<LineReader<OwnedFd>>,
    stream: Stream,
    def: &crate::Task,
    run_id: &str,
    mut on_line: impl FnMut(super::output::Line<'_>),
) {
    let Some(lines) = reader else { return };
    loop {
        match lines.next_line_now() {
            Ok(Some(line)) => on_line(line),
            Ok(None) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(task = %def.name, run_id, ?stream, "reading the task's output failed: {e}");
                break;
            }
        }
    }
    *reader = None;
}

/// What one `poll(2)` found ready.
struct Ready {
    stdout: bool,
    stderr: bool,
    stdin: bool,
    exited: bool,
    cancelled: bool,
    aborted: bool,
}

/// The descriptors of one `poll(2)`: at most six (abort, cancel, pidfd,
/// stdout, stderr, stdin), on the stack.
struct PollSet<'a> {
    fds: [PollFd<'a>; 6],
    used: usize,
}

impl<'a> PollSet<'a> {
    /// A set watching `first` for input (its index is 0).
    fn new(first: BorrowedFd<'a>) -> Self {
        Self {
            // The unused entries are placeholders: only `fds[..used]` is polled.
            fds: std::array::from_fn(|_| PollFd::from_borrowed_fd(first, PollFlags::IN)),
            used: 1,
        }
    }

    /// Adds `fd`, if any; its index, for [`PollSet::ready`].
    fn watch(&mut self, fd: Option<BorrowedFd<'a>>, events: PollFlags) -> Option<usize> {
        let fd = fd?;
        self.fds[self.used] = PollFd::from_borrowed_fd(fd, events);
        self.used += 1;
        Some(self.used - 1)
    }

    /// Waits up to `timeout` (forever if `None`); an interrupted wait is
    /// a wait with nothing ready.
    fn poll(&mut self, timeout: Option<&Timespec>) -> rustix::io::Result<()> {
        match rustix::event::poll(&mut self.fds[..self.used], timeout) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the descriptor at `index` (if watched) has an event.
    fn ready(&self, index: Option<usize>) -> bool {
        index.is_some_and(|i| !self.fds[i].revents().is_empty())
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde_json::json;

    use super::*;
    use crate::runner::RunnerConfig;
    use crate::task::{Task, TaskName};

    /// Runs `body` as a task on this thread, as on a kernel without pidfds.
    fn run_without_pidfd(body: &str, timeout: Duration) -> RunReport {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("t.sh");
        std::fs::write(&location, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&location, std::fs::Permissions::from_mode(0o755)).unwrap();
        let task = PreparedTask::new(Task {
            name: TaskName::new("t").unwrap(),
            location,
            description: None,
            inputs: json!({"type": "object"}),
            outputs: None,
            timeout: Some(timeout),
            policy: Default::default(),
            formats: Default::default(),
        })
        .unwrap();
        let runner = super::super::Runner::new(RunnerConfig {
            grace: Duration::from_millis(200),
            results_dir: Some(dir.path().join("results")),
            ..RunnerConfig::default()
        });
        super::super::spawn::tests::WITHOUT_PIDFD.with(|old| old.set(true));
        let report = run(
            &runner,
            &task,
            RunRequest::new(json!({})),
            &crate::log::DiscardLogs,
            &Stop::new().unwrap(),
        );
        super::super::spawn::tests::WITHOUT_PIDFD.with(|old| old.set(false));
        report
    }

    #[test]
    fn without_a_pidfd_the_exit_is_still_seen() {
        // Closes its output first: only the exit itself ends the run.
        let report = run_without_pidfd(
            "echo '{\"status\":1}'; exec >&- 2>&-; sleep 0.1; exit 0",
            Duration::from_secs(30),
        );
        assert!(report.outcome.is_success(), "{:?}", report.outcome);
        assert!(
            report.duration >= Duration::from_millis(100),
            "{:?}",
            report.duration
        );
    }

    #[test]
    fn without_a_pidfd_a_timeout_still_stops_the_task() {
        let report = run_without_pidfd("exec >&- 2>&-; sleep 30", Duration::from_millis(100));
        assert_eq!(
            report.outcome,
            Outcome::TimedOut {
                after: Duration::from_millis(100)
            }
        );
        assert!(
            report.duration < Duration::from_secs(10),
            "{:?}",
            report.duration
        );
    }
}
