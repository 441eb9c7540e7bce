//! Starting a task's process: `posix_spawn` with the environment prebuilt
//! once per runner, and waiting for it through a pidfd.
//!
//! Why not `tokio::process::Command`: once any variable is set, std rebuilds
//! the whole environment for every spawn (two B-trees and one C string per
//! variable), which was 35–40 % of the executor's instructions per run in a
//! batch (callgrind) and ~4 % of its throughput. Here the inherited part is
//! made into `KEY=value` C strings once ([`BaseEnv`]) and each run only adds
//! its own `TASK_*` variables. Otherwise this does what std does: the same
//! `posix_spawn` (vfork + exec inside libc, so no page tables are copied),
//! SIGPIPE back to its default (Rust ignores it, and an ignored signal
//! survives exec), an empty signal mask, and here also the child's own
//! process group. Exec failures (a missing file, no permission, a bad
//! interpreter) come back from `posix_spawn` as the error.
//!
//! The child is awaited through a pidfd (Linux 5.3+) registered with tokio;
//! where `pidfd_open` is unavailable, a blocking `waitpid` on tokio's
//! blocking pool does it. A [`Child`] dropped before it was reaped is
//! SIGKILLed and reaped by a helper thread: no zombies.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{SigSet, Signal as NixSignal};
use rustix::process::{Pid, WaitOptions, WaitStatus};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// The environment every task inherits, as `KEY=value` C strings, made once:
/// all in one buffer, each ended by its NUL (one allocation, not one per
/// variable: this is built by every `execute`).
#[derive(Debug)]
pub(super) struct BaseEnv {
    entries: Vec<u8>,
    /// Each entry's range in `entries`, its NUL included.
    ranges: Vec<std::ops::Range<usize>>,
}

/// The environment tasks inherit: this process's, as it was when the runner
/// was made, without the variables each run sets itself.
impl Default for BaseEnv {
    fn default() -> Self {
        Self::capture(&crate::protocol::RUN_VARIABLES)
    }
}

impl BaseEnv {
    /// This process's environment without `skip` (variables each run sets itself).
    pub(super) fn capture(skip: &[&str]) -> Self {
        Self::from_vars(std::env::vars_os(), skip)
    }

    fn from_vars(vars: impl Iterator<Item = (OsString, OsString)>, skip: &[&str]) -> Self {
        let mut env = Self {
            entries: Vec::new(),
            ranges: Vec::new(),
        };
        for (key, value) in vars {
            if skip.iter().any(|s| OsStr::new(s) == key) {
                continue;
            }
            let start = env.entries.len();
            // A NUL cannot come from a C environment; such a pair is skipped.
            if push_entry(&mut env.entries, key.as_bytes(), value.as_bytes()) {
                env.ranges.push(start..env.entries.len());
            }
        }
        env
    }

    /// The entries, each a `KEY=value` C string.
    fn iter(&self) -> impl Iterator<Item = &CStr> {
        self.ranges.iter().map(|range| {
            // SAFETY: `from_vars` wrote each range as bytes without a NUL
            // (checked) followed by one NUL, and `entries` is never changed
            // after. (The checked constructor would scan every variable on
            // every spawn: 5k instructions per run in a batch.)
            unsafe { CStr::from_bytes_with_nul_unchecked(&self.entries[range.clone()]) }
        })
    }
}

/// Appends `KEY=value` and its NUL to `buf`; appends nothing and returns
/// false if either holds a NUL byte.
fn push_entry(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) -> bool {
    if key.contains(&0) || value.contains(&0) {
        return false;
    }
    buf.extend_from_slice(key);
    buf.push(b'=');
    buf.extend_from_slice(value);
    buf.push(0);
    true
}

/// `KEY=value` as a C string; `None` if either holds a NUL byte.
fn env_entry(key: &[u8], value: &[u8]) -> Option<CString> {
    let mut entry = Vec::with_capacity(key.len() + value.len() + 2);
    push_entry(&mut entry, key, value)
        .then(|| CString::from_vec_with_nul(entry).expect("one NUL, at the end"))
}

/// What `waitpid` without `WNOHANG` returns.
type Waited = Option<(Pid, WaitStatus)>;

/// A started task's process and our ends of its pipes (non-blocking), tied
/// to no event loop: what [`spawn`] registers with tokio.
pub(super) struct Spawned {
    pub process: Process,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// A child process, SIGKILLed and reaped if dropped before it was reaped:
/// no zombies, whatever the path out. Until it is reaped its pid cannot be
/// reused, so signalling the pid is safe.
pub(super) struct Process {
    pub pid: Pid,
    /// Readable once the process has exited (Linux 5.3+); `None` on older kernels.
    pub pidfd: Option<OwnedFd>,
    /// Reaped, or being reaped by someone else: nothing left for the drop.
    reaped: bool,
}

impl Process {
    /// Its exit status if it has exited (reaping it), without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let waited = rustix::process::waitpid(Some(self.pid), WaitOptions::NOHANG)?;
        Ok(waited.map(|(_, status)| {
            self.reaped = true;
            ExitStatus::from_raw(status.as_raw())
        }))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let _ = rustix::process::kill_process(self.pid, rustix::process::Signal::KILL);
        if let Ok(Some(_)) = self.try_wait() {
            return;
        }
        // Dying, not yet dead: reap it off this thread.
        let pid = self.pid;
        let _ = std::thread::Builder::new()
            .name("task-reaper".into())
            .spawn(move || rustix::process::waitpid(Some(pid), WaitOptions::empty()));
    }
}

/// A running (or exited, not yet reaped) task process, registered with tokio.
pub(super) struct Child {
    pub pid: Pid,
    process: Process,
    /// Our end of the task's stdin, non-blocking and not yet registered
    /// with tokio: most envelopes fit in the pipe and are written at once
    /// ([`write_now`]), with no event-loop registration for it at all.
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    /// `None` without pidfd support.
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// Without a pidfd: the blocking `waitpid` in flight, kept across
    /// cancelled [`Child::wait`] calls so the status is never lost.
    blocking_wait: Option<tokio::task::JoinHandle<io::Result<Waited>>>,
}

/// [`spawn_fds`], with the pipes and the pidfd registered with tokio.
pub(super) fn spawn(program: &Path, base: &BaseEnv, extra: &[(&str, &OsStr)]) -> io::Result<Child> {
    let Spawned {
        mut process,
        stdin,
        stdout,
        stderr,
    } = spawn_fds(program, base, extra)?;
    // The process's drop kills and reaps it if a step below fails.
    let pidfd = match process.pidfd.take() {
        // SAFETY: the `OwnedFd` is open and owned by the `AsyncFd` for its
        // whole life, so its descriptor cannot change or be closed under it.
        Some(fd) => Some(
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?,
        ),
        None => None, // an old kernel: waited for on the blocking pool
    };
    Ok(Child {
        pid: process.pid,
        stdout: Some(pipe::Receiver::from_owned_fd_unchecked(stdout)?),
        stderr: Some(pipe::Receiver::from_owned_fd_unchecked(stderr)?),
        stdin: Some(stdin),
        process,
        pidfd,
        blocking_wait: None,
    })
}

/// Starts `program` (no arguments) with `base` plus `extra` as its
/// environment, stdin/stdout/stderr piped, as the leader of a new process group.
pub(super) fn spawn_fds(
    program: &Path,
    base: &BaseEnv,
    extra: &[(&str, &OsStr)],
) -> io::Result<Spawned> {
    let path = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    let own = extra
        .iter()
        .map(|(k, v)| {
            env_entry(k.as_bytes(), v.as_bytes()).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{k}` contains a NUL byte"),
                )
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    let envp: Vec<&CStr> = base
        .iter()
        .chain(own.iter().map(CString::as_c_str))
        .collect();

    let (stdin_r, stdin_w) = pipe_above_stdio()?;
    let (stdout_r, stdout_w) = pipe_above_stdio()?;
    let (stderr_r, stderr_w) = pipe_above_stdio()?;

    let mut actions = PosixSpawnFileActions::init()?;
    actions.add_dup2(raw(&stdin_r), 0)?;
    actions.add_dup2(raw(&stdout_w), 1)?;
    actions.add_dup2(raw(&stderr_w), 2)?;
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    attr.set_pgroup(nix::unistd::Pid::from_raw(0))?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut sigpipe = SigSet::empty();
    sigpipe.add(NixSignal::SIGPIPE);
    attr.set_sigdefault(&sigpipe)?;

    let pid = nix::spawn::posix_spawn(path.as_c_str(), &actions, &attr, &[path.as_c_str()], &envp)?;
    let pid = Pid::from_raw(pid.as_raw())
        .ok_or_else(|| io::Error::other("posix_spawn returned pid 0"))?;
    // The child's ends close here, so EOF on stdout means the task (and
    // whatever it gave the pipe to) is done with it.
    drop((stdin_r, stdout_w, stderr_w));

    // From here on the child exists: built first, so that its drop kills
    // and reaps it if any of the steps below fails.
    let mut process = Process {
        pid,
        pidfd: None,
        reaped: false,
    };
    // Without pidfd support (an old kernel), waited for some other way.
    #[cfg(test)]
    let old_kernel = tests::WITHOUT_PIDFD.with(std::cell::Cell::get);
    #[cfg(not(test))]
    let old_kernel = false;
    if !old_kernel {
        process.pidfd =
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK).ok();
    }
    Ok(Spawned {
        stdin: nonblocking(stdin_w)?,
        stdout: nonblocking(stdout_r)?,
        stderr: nonblocking(stderr_r)?,
        process,
    })
}

impl Child {
    /// Waits for the process to exit and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(pidfd) = &self.pidfd {
            loop {
                let mut ready = pidfd.readable().await?;
                if let Some(status) = self.process.try_wait()? {
                    return Ok(status);
                }
                ready.clear_ready();
            }
        }
        let pid = self.pid;
        let handle = self.blocking_wait.get_or_insert_with(|| {
            tokio::task::spawn_blocking(move || {
                rustix::process::waitpid(Some(pid), WaitOptions::empty()).map_err(io::Error::from)
            })
        });
        let waited = handle.await;
        self.blocking_wait = None;
        self.process.reaped = true;
        let (_, status) = waited
            .map_err(io::Error::other)??
            .ok_or_else(|| io::Error::other("waitpid returned no status"))?;
        Ok(ExitStatus::from_raw(status.as_raw()))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.blocking_wait.is_some() && !self.process.reaped {
            // That `waitpid` reaps it once it is dead.
            let _ = rustix::process::kill_process(self.pid, rustix::process::Signal::KILL);
            self.process.reaped = true;
        }
        // Otherwise the process's own drop kills and reaps it.
    }
}

fn raw(fd: &OwnedFd) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

/// A close-on-exec pipe whose ends are above 2, so that the child's `dup2`s
/// onto 0, 1 and 2 cannot clobber one of them (possible if this process was
/// started with a standard stream closed).
fn pipe_above_stdio() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((above_stdio(r)?, above_stdio(w)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if raw(&fd) > 2 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(fd.as_fd(), 3)?)
}

/// Writes as much of `bytes` to the non-blocking `fd` as it takes without
/// waiting. Returns the descriptor and how much was written if the pipe
/// filled up first; `None` once everything is written (dropping `fd`
/// closes the task's stdin) or the task stopped reading (`EPIPE`: not an
/// error, a task need not read its input).
pub(super) fn write_now(fd: OwnedFd, bytes: &[u8]) -> Option<(OwnedFd, usize)> {
    let mut written = 0;
    while written < bytes.len() {
        match rustix::io::write(&fd, &bytes[written..]) {
            Ok(n) => written += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return Some((fd, written)),
            Err(rustix::io::Errno::PIPE) => return None,
            Err(e) => {
                tracing::debug!("writing the envelope to the task's stdin failed: {e}");
                return None;
            }
        }
    }
    None
}

/// Our end only: the child's end of the same pipe must stay blocking.
fn nonblocking(fd: OwnedFd) -> io::Result<OwnedFd> {
    rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK)?;
    Ok(fd)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    thread_local! {
        /// Makes [`spawn_fds`] on this thread behave as on a kernel without
        /// `pidfd_open` (before 5.3).
        pub(in crate::runner) static WITHOUT_PIDFD: std::cell::Cell<bool> =
            const { std::cell::Cell::new(false) };
    }

    #[test]
    fn base_env_skips_the_variables_each_run_sets() {
        let vars = [
            ("PATH", "/bin"),
            ("TASK_NAME", "stale"),
            ("NUL", "a\0b"),
            ("EMPTY", ""),
        ]
        .into_iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = BaseEnv::from_vars(vars, &["TASK_NAME"]);
        let got: Vec<&str> = env.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(got, ["PATH=/bin", "EMPTY="]);
    }

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("t.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn exit_codes_and_signals_come_back_through_the_pidfd() {
        let dir = tempfile::tempdir().unwrap();
        let env = BaseEnv::capture(&[]);
        let mut child = spawn(&script(dir.path(), "exit 3"), &env, &[]).unwrap();
        assert!(child.pidfd.is_some(), "this kernel has pidfd_open");
        assert_eq!(child.wait().await.unwrap().code(), Some(3));
        let mut child = spawn(&script(dir.path(), "kill -KILL $$"), &env, &[]).unwrap();
        assert_eq!(child.wait().await.unwrap().signal(), Some(9));
    }

    /// Everything the child prints on stdout, to EOF.
    async fn read_stdout(child: &mut Child) -> String {
        use tokio::io::AsyncReadExt;
        let mut out = String::new();
        let mut stdout = child.stdout.take().unwrap();
        stdout.read_to_string(&mut out).await.unwrap();
        out
    }

    /// `body` started as on a kernel without `pidfd_open`.
    fn spawn_without_pidfd(dir: &Path, body: &str) -> Child {
        let mut child = spawn(&script(dir, body), &BaseEnv::capture(&[]), &[]).unwrap();
        child.pidfd = None;
        child
    }

    #[tokio::test]
    async fn without_a_pidfd_the_blocking_pool_waits() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_without_pidfd(dir.path(), "read line; exit \"$line\"");
        assert!(write_now(child.stdin.take().unwrap(), b"7\n").is_none());
        assert_eq!(child.wait().await.unwrap().code(), Some(7));
    }

    #[tokio::test]
    async fn a_cancelled_wait_loses_nothing_without_a_pidfd() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_without_pidfd(dir.path(), "read line; exit 5");
        // Gives up while the task still waits for its input.
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), child.wait()).await;
        assert!(waited.is_err(), "the task cannot have exited yet");
        drop(child.stdin.take()); // EOF: `read` fails, the script exits 5
        assert_eq!(child.wait().await.unwrap().code(), Some(5));
    }

    #[tokio::test]
    async fn the_environment_is_the_base_plus_the_run_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "echo \"$A|$B|$C\"");
        let vars = [("A", "base"), ("B", "old")]
            .into_iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = BaseEnv::from_vars(vars, &["B"]);
        let mut child = spawn(
            &path,
            &env,
            &[("B", OsStr::new("run")), ("C", OsStr::new("x y"))],
        )
        .unwrap();
        assert_eq!(read_stdout(&mut child).await, "base|run|x y\n");
        assert!(child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn write_now_stops_when_the_pipe_is_full_and_tokio_writes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        // Reads nothing for a while: a 1 MiB envelope cannot fit the pipe.
        let path = script(dir.path(), "sleep 0.2; wc -c");
        let mut child = spawn(&path, &BaseEnv::capture(&[]), &[]).unwrap();
        let big = vec![b'x'; 1 << 20];
        let (fd, written) =
            write_now(child.stdin.take().unwrap(), &big).expect("the pipe filled up");
        assert!(written > 0 && written < big.len(), "wrote {written} bytes");
        use tokio::io::AsyncWriteExt;
        let mut rest = pipe::Sender::from_owned_fd_unchecked(fd).unwrap();
        rest.write_all(&big[written..]).await.unwrap();
        drop(rest);
        assert_eq!(read_stdout(&mut child).await.trim(), (1 << 20).to_string());
        assert!(child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn write_now_to_a_task_that_exited_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(&script(dir.path(), "exit 0"), &BaseEnv::capture(&[]), &[]).unwrap();
        assert!(child.wait().await.unwrap().success());
        // The read end is gone: EPIPE (SIGPIPE is ignored in Rust programs).
        assert!(write_now(child.stdin.take().unwrap(), b"{}\n").is_none());
    }

    #[test]
    fn a_path_with_a_nul_byte_is_an_error_not_a_panic() {
        let err = match spawn(Path::new("/bin/t\0rue"), &BaseEnv::capture(&[]), &[]) {
            Err(e) => e,
            Ok(_) => panic!("spawned a path with a NUL byte"),
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
