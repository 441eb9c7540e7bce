//! The executor as the reaper of everything its tasks start.
//!
//! A task's process group is killed when the task exits, but a daemon that
//! double-forks and calls `setsid` has left the group and would otherwise
//! run on for ever, re-parented to init. So, on Linux, the first [`Runner`]
//! of a process makes that process a *child subreaper*
//! (`PR_SET_CHILD_SUBREAPER`, [`become_subreaper`]): every orphan among its
//! descendants is re-parented to it instead of to init. When a run (or a
//! `schema` call) ends, [`sweep`] looks at this process's children, picks out
//! the leftovers, sends each SIGTERM (and SIGCONT, so a stopped one sees it),
//! or its whole group when it leads one, waits up to the grace period,
//! SIGKILLs what is left, and reaps them all; killing a leftover orphans its
//! own children, which come to us in turn, so the sweep goes round until it
//! finds none. Zombies of exited orphans are reaped on the way, and, while
//! runs go on, at most once a second ([`keep_reaping`]): a worker or an MCP
//! server keeps neither orphans nor zombies.
//!
//! # Which children are leftovers
//!
//! Several runs share the process in a batch, a worker or an MCP server, so
//! a sweep must not end what belongs to a run still going. A child of this
//! process is left alone when it is
//! - a task or `schema` call the runner started and tokio has not reaped
//!   yet (booked at spawn, under a lock the sweep also takes, so a process
//!   just spawned is never mistaken for a leftover);
//! - in the process group of a running task (it dies with that group);
//! - a process whose environment names a running run (`TASK_RUN_ID`), as a
//!   daemon started by a task still running normally does;
//! - in this process's own group: tasks run in groups of their own, so what
//!   is in ours was started by the program embedding the runner, not by a task.
//!
//! Every other child — alive or a zombie — is a leftover of a finished run
//! and is ended. Only children that tokio did not spawn are ever waited for
//! here, each by its pid (never `waitpid(-1)`), so tokio's own bookkeeping
//! is undisturbed.
//!
//! # What is not caught
//!
//! - Non-Linux platforms: there is no subreaper; only the task's process
//!   group is killed, and a process that left it (`setsid`) outlives the run.
//! - Processes of other users (a task running `sudo` or a setuid program):
//!   they cannot be signalled; the sweep warns once, leaves them be, and
//!   the first sweep after they exit reaps them.
//! - Processes that are not the task's descendants: what a service manager,
//!   `at`, cron, D-Bus or a remote host starts on the task's behalf
//!   (`systemd-run`, `ssh host cmd`), and orphans that a nearer subreaper
//!   below us (a container's init, a nested executor) takes in.
//! - Anything left when the executor itself is killed (SIGKILL), or a run
//!   future dropped half-way (its group is SIGKILLed at once; its daemons
//!   are ended by the next run's sweep, or not at all if none comes).
//! - As a container's PID 1 the executor is every orphan's reaper anyway,
//!   and orphans of processes started beside it (`docker exec`) are taken
//!   for leftovers too: run it under an init (`docker run --init`).
//! - A daemon of a run that is still going which cleared its environment
//!   (`env -i`) and left its task's group: another run's sweep cannot tell it
//!   from a leftover and ends it early.
//!
//! Orphans are always caught whatever the timing: a descendant of a task
//! that is not yet our child when the sweep looks is a descendant of one of
//! our children (the task's own children came to us when it exited); that
//! child is a leftover too, and once it is reaped its children are ours for
//! the next round.
//!
//! [`Runner`]: super::Runner

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Makes this process the subreaper of its descendants (once; Linux only).
pub(super) fn become_subreaper() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    linux::become_subreaper();
}

/// A child the runner spawned: booked from its spawn so that no sweep takes
/// it (or, while it runs, its group and its daemons) for a leftover.
#[derive(Debug)]
pub(super) struct Booked {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pid: i32,
}

impl Booked {
    /// The child has been reaped by tokio (its `wait` returned): its run is over.
    pub(super) fn reaped(self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        linux::forget(self.pid);
        std::mem::forget(self);
    }
}

impl Drop for Booked {
    /// Dropped before being reaped: the run was dropped, its child SIGKILLed
    /// and handed to tokio's orphan queue, which reaps it.
    fn drop(&mut self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        linux::dropped(self.pid);
    }
}

/// Spawns `cmd` for the run `run_id` (`None` for a `schema` call) and books its child.
pub(super) fn spawn(
    cmd: &mut tokio::process::Command,
    run_id: Option<&str>,
) -> std::io::Result<(tokio::process::Child, Booked)> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return linux::spawn(cmd, run_id);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = run_id;
        Ok((cmd.spawn()?, Booked {}))
    }
}

/// Never returns: while a run goes on, reaps (at most once every
/// [`REAP_EVERY`] in the whole process) the zombies of orphans that exited
/// on their own, so a long run whose task keeps starting short-lived
/// daemons does not fill the process table. Does nothing off Linux.
pub(super) async fn keep_reaping() -> std::convert::Infallible {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        linux::reap_zombies();
    }
}

/// How often [`keep_reaping`] reaps, at most.
pub(super) const REAP_EVERY: Duration = Duration::from_secs(1);

/// Ends every leftover of finished runs: SIGTERM, up to `grace` (cut short
/// when `kill` fires), SIGKILL, and reaps them. Does nothing off Linux.
pub(super) async fn sweep(grace: Duration, kill: Option<&CancellationToken>) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    linux::sweep(grace, kill).await;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (grace, kill);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io;
    use std::path::Path;
    use std::sync::{Mutex, MutexGuard, Once, OnceLock, PoisonError, RwLock};
    use std::time::Duration;

    use rustix::io::Errno;
    use rustix::process::{Pid, Signal, WaitOptions};
    use tokio::time::{Instant, sleep};
    use tokio_util::sync::CancellationToken;

    use super::Booked;
    use crate::protocol::ENV_TASK_RUN_ID;

    /// How often a sweep looks whether its leftovers have exited.
    const POLL: Duration = Duration::from_millis(5);
    /// How long a sweep waits for a SIGKILLed leftover before leaving it to the next one.
    const KILL_WAIT: Duration = Duration::from_secs(1);
    /// Generations of leftovers one sweep ends (each orphans the next).
    const MAX_ROUNDS: usize = 32;

    /// Held shared while spawning, exclusively while a sweep picks its
    /// leftovers: a child is booked before any sweep can see it.
    static GATE: RwLock<()> = RwLock::new(());
    static BOOK: Mutex<Book> = Mutex::new(Book {
        spawned: BTreeMap::new(),
        claimed: BTreeSet::new(),
        unkillable: BTreeSet::new(),
    });

    /// This process's children that sweeps must not take for leftovers.
    struct Book {
        /// Children tokio spawned and reaps; `Some(run id)` while their run
        /// goes on (`None` inside for a `schema` call), `None` once dropped.
        spawned: BTreeMap<i32, Option<Option<String>>>,
        /// Leftovers a sweep is ending: the others leave them to it.
        claimed: BTreeSet<i32>,
        /// Leftovers that may not be signalled: reaped once they exit.
        unkillable: BTreeSet<i32>,
    }

    fn book() -> MutexGuard<'static, Book> {
        BOOK.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn become_subreaper() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| match rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            Ok(()) => tracing::debug!("this process is now the subreaper of the tasks it runs"),
            Err(e) => tracing::warn!(
                "cannot make this process a child subreaper ({e}): daemons that tasks start with `setsid` may outlive their runs"
            ),
        });
    }

    pub(super) fn spawn(
        cmd: &mut tokio::process::Command,
        run_id: Option<&str>,
    ) -> io::Result<(tokio::process::Child, Booked)> {
        let _gate = GATE.read().unwrap_or_else(PoisonError::into_inner);
        let child = cmd.spawn()?;
        // No pid only once reaped, which nobody has done yet.
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(0);
        book().spawned.insert(pid, Some(run_id.map(str::to_owned)));
        Ok((child, Booked { pid }))
    }

    pub(super) fn forget(pid: i32) {
        book().spawned.remove(&pid);
    }

    pub(super) fn dropped(pid: i32) {
        if let Some(entry) = book().spawned.get_mut(&pid) {
            *entry = None;
        }
    }

    /// A leftover being ended by this sweep.
    struct Leftover {
        pid: Pid,
        /// Whether it leads its own group, which is then signalled whole.
        leads_group: bool,
    }

    /// The leftovers one sweep has claimed; unclaimed on drop, even if the
    /// sweep is dropped half-way.
    struct Claim(Vec<Leftover>);

    impl Drop for Claim {
        fn drop(&mut self) {
            let mut book = book();
            for leftover in &self.0 {
                book.claimed.remove(&leftover.pid.as_raw_nonzero().get());
            }
        }
    }

    impl Claim {
        /// Sends `signal` to each leftover (its group when it leads one).
        /// One that may not be signalled (another user's) is let go, and
        /// left alone by later sweeps until it exits and can be reaped.
        fn signal(&mut self, signal: Signal) {
            let mut refused = Vec::new();
            self.0.retain(|leftover| {
                // A child not yet reaped keeps its pid, and its group's id,
                // from being reused: these signals reach no stranger.
                let mut sent = if leftover.leads_group {
                    rustix::process::kill_process_group(leftover.pid, signal)
                } else {
                    rustix::process::kill_process(leftover.pid, signal)
                };
                if leftover.leads_group && sent == Err(Errno::PERM) {
                    // Some of its group may be another user's, and it not.
                    sent = rustix::process::kill_process(leftover.pid, signal);
                }
                match sent {
                    Ok(()) | Err(Errno::SRCH) => true,
                    Err(e) => {
                        refused.push(leftover.pid.as_raw_nonzero().get());
                        tracing::warn!(
                            pid = leftover.pid.as_raw_nonzero(),
                            "cannot end a process left by a task ({e}); it is reaped once it exits"
                        );
                        false
                    }
                }
            });
            let mut book = book();
            for pid in refused {
                book.claimed.remove(&pid);
                book.unkillable.insert(pid);
            }
        }

        /// Reaps the leftovers that have exited; true once none is left.
        fn reap(&mut self) -> bool {
            let mut book = book();
            self.0.retain(|leftover| {
                let gone = loop {
                    match rustix::process::waitpid(Some(leftover.pid), WaitOptions::NOHANG) {
                        Ok(None) => break false,
                        Err(Errno::INTR) => continue,
                        // Reaped, or (ECHILD) no longer ours to reap.
                        Ok(Some(_)) | Err(_) => break true,
                    }
                };
                if gone {
                    let pid = leftover.pid.as_raw_nonzero().get();
                    book.claimed.remove(&pid);
                    book.unkillable.remove(&pid);
                }
                !gone
            });
            self.0.is_empty()
        }

        /// Waits until every leftover is reaped or `limit` has passed or `kill` fired.
        async fn wait(&mut self, limit: Duration, kill: Option<&CancellationToken>) -> bool {
            let until = Instant::now() + limit;
            loop {
                if self.reap() {
                    return true;
                }
                if Instant::now() >= until || kill.is_some_and(CancellationToken::is_cancelled) {
                    return false;
                }
                sleep(POLL).await;
            }
        }
    }

    pub(super) async fn sweep(grace: Duration, kill: Option<&CancellationToken>) {
        if !unaccounted_children() {
            return;
        }
        for _round in 0..MAX_ROUNDS {
            let now = grace.is_zero() || kill.is_some_and(CancellationToken::is_cancelled);
            let mut claim = claim_leftovers();
            if claim.0.is_empty() {
                return;
            }
            tracing::debug!(
                count = claim.0.len(),
                "ending processes left by finished tasks"
            );
            if !now {
                claim.signal(Signal::TERM);
                claim.signal(Signal::CONT);
                if claim.wait(grace, kill).await {
                    continue;
                }
            }
            claim.signal(Signal::KILL);
            if !claim.wait(KILL_WAIT, None).await {
                let pids: Vec<i32> = claim
                    .0
                    .iter()
                    .map(|l| l.pid.as_raw_nonzero().get())
                    .collect();
                tracing::warn!(
                    ?pids,
                    "processes left by a task survive SIGKILL (in uninterruptible sleep?); the next run's cleanup tries again"
                );
                return;
            }
        }
        tracing::warn!(
            "tasks' leftover processes keep starting new ones; gave up after {MAX_ROUNDS} rounds"
        );
    }

    /// Reaps the zombies among this process's children that nobody else
    /// reaps, unless another run did so less than [`super::REAP_EVERY`] ago.
    pub(super) fn reap_zombies() {
        static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
        {
            let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < super::REAP_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let zombie = |pid: i32, book: &Book, ours: i32| {
            !book.spawned.contains_key(&pid)
                && !book.claimed.contains(&pid)
                && Stat::of(pid).is_some_and(|stat| stat.zombie && stat.pgid != ours)
        };
        let ours = rustix::process::getpgrp().as_raw_nonzero().get();
        let children = children();
        if !children.iter().any(|&pid| zombie(pid, &book(), ours)) {
            return;
        }
        // Under the gate a zombie cannot be a task that exited before its spawn was booked.
        let _gate = GATE.write().unwrap_or_else(PoisonError::into_inner);
        let mut book = book();
        for &pid in &children {
            if zombie(pid, &book, ours) {
                if let Some(pid) = Pid::from_raw(pid) {
                    let _ = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG);
                }
                book.unkillable.remove(&pid);
            }
        }
    }

    /// Whether this process has a child that no run accounts for: the
    /// usual answer, no, costs no lock that spawns wait for. Forgets the
    /// dropped runs' children that tokio has reaped since.
    fn unaccounted_children() -> bool {
        let children = children();
        let mut book = book();
        book.spawned
            .retain(|pid, run| run.is_some() || children.contains(pid));
        children
            .iter()
            .any(|pid| !book.spawned.contains_key(pid) && !book.claimed.contains(pid))
    }

    /// Picks this process's children that are leftovers of finished runs,
    /// claims them, and returns them; see the module docs for the rules.
    fn claim_leftovers() -> Claim {
        let _gate = GATE.write().unwrap_or_else(PoisonError::into_inner);
        let children = children();
        let mut book = book();
        let running: BTreeSet<i32> = book
            .spawned
            .iter()
            .filter_map(|(pid, run)| run.is_some().then_some(*pid))
            .collect();
        let running_ids: BTreeSet<&str> = book
            .spawned
            .values()
            .filter_map(|run| run.as_ref()?.as_deref())
            .collect();
        let ours = rustix::process::getpgrp().as_raw_nonzero().get();
        let mut found = Vec::new();
        for &pid in &children {
            if book.spawned.contains_key(&pid) || book.claimed.contains(&pid) {
                continue;
            }
            let Some(stat) = Stat::of(pid) else { continue };
            if stat.pgid == ours {
                continue;
            }
            if !stat.zombie
                && (book.unkillable.contains(&pid)
                    || running.contains(&stat.pgid)
                    || (!running_ids.is_empty() && of_a_running_run(pid, &running_ids)))
            {
                continue;
            }
            let Some(pid_) = Pid::from_raw(pid) else {
                continue;
            };
            found.push(Leftover {
                pid: pid_,
                leads_group: stat.pgid == pid,
            });
        }
        for leftover in &found {
            book.claimed.insert(leftover.pid.as_raw_nonzero().get());
        }
        Claim(found)
    }

    /// The fields of `/proc/<pid>/stat` a sweep needs.
    struct Stat {
        zombie: bool,
        pgid: i32,
    }

    impl Stat {
        fn of(pid: i32) -> Option<Self> {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Self::parse(&text).map(|(stat, _ppid)| stat)
        }

        /// The state, parent and group after the parenthesised command name
        /// (which may itself hold spaces and parentheses).
        fn parse(text: &str) -> Option<(Self, i32)> {
            let (_, rest) = text.rsplit_once(')')?;
            let mut fields = rest.split_ascii_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgid = fields.next()?.parse().ok()?;
            Some((
                Self {
                    zombie: state == "Z",
                    pgid,
                },
                ppid,
            ))
        }
    }

    /// Whether `pid`'s environment names one of `runs` as its `TASK_RUN_ID`.
    fn of_a_running_run(pid: i32, runs: &BTreeSet<&str>) -> bool {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return false;
        };
        let key = format!("{ENV_TASK_RUN_ID}=");
        environ
            .split(|&b| b == 0)
            .filter_map(|entry| entry.strip_prefix(key.as_bytes()))
            .any(|id| std::str::from_utf8(id).is_ok_and(|id| runs.contains(id)))
    }

    /// This process's children: the `children` files of its threads (an
    /// orphan's new parent is one of our threads), else a scan of `/proc`
    /// for kernels built without them.
    fn children() -> BTreeSet<i32> {
        static HAVE_CHILDREN_FILES: OnceLock<bool> = OnceLock::new();
        let mut found = BTreeSet::new();
        if *HAVE_CHILDREN_FILES.get_or_init(|| Path::new("/proc/thread-self/children").exists()) {
            let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
                return found;
            };
            for thread in threads.flatten() {
                // A thread that just ended has no file any more: it had no children left.
                if let Ok(text) = std::fs::read_to_string(thread.path().join("children")) {
                    found.extend(
                        text.split_ascii_whitespace()
                            .filter_map(|pid| pid.parse::<i32>().ok()),
                    );
                }
            }
        } else {
            let me = rustix::process::getpid().as_raw_nonzero().get();
            let Ok(entries) = std::fs::read_dir("/proc") else {
                return found;
            };
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i32>().ok())
                else {
                    continue;
                };
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
                if stat
                    .as_deref()
                    .and_then(Stat::parse)
                    .is_some_and(|(_, ppid)| ppid == me)
                {
                    found.insert(pid);
                }
            }
        }
        found
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stat_lines_with_awkward_names() {
            let (stat, ppid) = Stat::parse("42 (a) b (c) Z 7 42 42 0 -1").unwrap();
            assert!(stat.zombie);
            assert_eq!((ppid, stat.pgid), (7, 42));
            let (stat, _) = Stat::parse("9 (sleep) S 1 5 5 0").unwrap();
            assert!(!stat.zombie);
            assert_eq!(stat.pgid, 5);
            assert!(Stat::parse("9 (sleep").is_none());
        }

        #[test]
        fn the_test_process_sees_its_own_child() {
            let mut child = std::process::Command::new("sleep")
                .arg("5")
                .spawn()
                .unwrap();
            let pid = child.id() as i32;
            assert!(children().contains(&pid));
            child.kill().unwrap();
            child.wait().unwrap();
            assert!(!children().contains(&pid));
        }
    }
}
