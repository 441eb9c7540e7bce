//! Where tasks may write `TASK_RESULT_FILE`: one private directory per user,
//! kept between runs and between processes.
//!
//! Each run gets a fresh path in it (`<pid>-<n>-<run id>.json`) that the task
//! creates if it reports through it; nothing is made or removed for runs that
//! don't. The directory itself is made once, mode 0700, and kept, as tmux
//! keeps `/tmp/tmux-<uid>`: making and removing a directory for every
//! `manage_tasks execute` is a metadata write that, on a filesystem mounted
//! with `discard`, waits for the disk (see docs/performance.md).
//!
//! Default place: `$XDG_RUNTIME_DIR/task-executor` (a per-user tmpfs on most
//! Linux desktops and servers), else `<temp dir>/task-executor-<uid>`.
//! Before a run uses it (at most once a second) the directory is checked with
//! one `lstat`: it must be a directory, not a symlink, owned by this user,
//! with no access for anyone else; otherwise the run fails with an error
//! naming it. In a sticky temp dir nobody else can rename or replace a
//! directory we own, so the check cannot be raced. If a temp cleaner removed
//! it, it is made again.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How often a long-lived runner re-checks the directory.
const RECHECK_MS: u64 = 1000;

/// The result directory of one runner (and its clones).
#[derive(Debug)]
pub(super) struct ResultDir {
    dir: PathBuf,
    pid: u32,
    next: AtomicU64,
    /// Milliseconds since `born` of the last successful check, plus one; 0 = never.
    checked: AtomicU64,
    born: Instant,
}

impl Default for ResultDir {
    fn default() -> Self {
        Self::new(None)
    }
}

impl ResultDir {
    /// `dir`, or the per-user default when `None`.
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir: dir.unwrap_or_else(default_location),
            pid: std::process::id(),
            next: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// The directory.
    pub(super) fn path(&self) -> &Path {
        &self.dir
    }

    /// A path for one run's result file that no other run gets, in the
    /// directory, made (or re-checked) first if need be.
    pub(super) fn next_path(&self, run_id: &str) -> io::Result<PathBuf> {
        let now = self.born.elapsed().as_millis() as u64 + 1;
        let last = self.checked.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= RECHECK_MS {
            ensure_private_dir(&self.dir)?;
            self.checked.store(now, Ordering::Relaxed);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(self.dir.join(format!("{}-{n}-{run_id}.json", self.pid)))
    }
}

/// `$XDG_RUNTIME_DIR/task-executor`, else `<temp dir>/task-executor-<uid>`.
pub(super) fn default_location() -> PathBuf {
    location_from(
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        std::env::temp_dir(),
        rustix::process::geteuid().as_raw(),
    )
}

/// [`default_location`] for user `me`: the runtime dir counts only if it is
/// an absolute path to a directory of `me` (after `su` or `sudo -E` it often
/// still names another user's).
fn location_from(runtime: Option<PathBuf>, temp: PathBuf, me: u32) -> PathBuf {
    let runtime = runtime
        .filter(|dir| dir.is_absolute())
        .filter(|dir| std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == me));
    match runtime {
        Some(runtime) => runtime.join("task-executor"),
        None => temp.join(format!("task-executor-{me}")),
    }
}

/// Makes `dir` (mode 0700) if it is missing, then checks that it is a
/// directory of ours that nobody else can enter.
fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                // Exact mode whatever the umask.
                Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            std::fs::symlink_metadata(dir)?
        }
        Err(e) => return Err(e),
    };
    let me = rustix::process::geteuid().as_raw();
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{why}; it must be a directory of this user (uid {me}) with mode 0700: remove or fix it, or point TMPDIR elsewhere"
            ),
        ))
    };
    if !meta.file_type().is_dir() {
        return refuse("it is not a directory (a symlink or a file)".to_owned());
    }
    if meta.uid() != me {
        return refuse(format!("it is owned by uid {}", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return refuse(format!(
            "others have access to it (mode {:o})",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_private_directory_and_hands_out_distinct_paths() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("results");
        let results = ResultDir::new(Some(dir.clone()));
        let a = results.next_path("run-a").unwrap();
        let b = results.next_path("run-a").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(dir.as_path()));
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert!(!a.exists(), "the path is for the task to create");
    }

    #[test]
    fn is_made_again_after_a_cleaner_removed_it() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("results");
        let results = ResultDir::new(Some(dir.clone()));
        results.next_path("x").unwrap();
        std::fs::remove_dir(&dir).unwrap();
        // As if the last check were more than RECHECK_MS ago.
        results.checked.store(0, Ordering::Relaxed);
        results.next_path("x").unwrap();
        assert!(dir.is_dir());
    }

    #[test]
    fn refuses_a_directory_others_can_enter() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("results");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = ResultDir::new(Some(dir.clone()))
            .next_path("x")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("mode 755"), "{err}");
        // Left as it was: not ours to change.
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn the_runtime_dir_counts_only_if_it_is_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let me = rustix::process::geteuid().as_raw();
        let at = |runtime: Option<&Path>, uid: u32| {
            location_from(
                runtime.map(Path::to_path_buf),
                tmp.path().to_path_buf(),
                uid,
            )
        };
        let ours = tmp.path().join("run");
        std::fs::create_dir(&ours).unwrap();
        assert_eq!(at(Some(&ours), me), ours.join("task-executor"));
        let fallback = tmp.path().join(format!("task-executor-{me}"));
        assert_eq!(at(None, me), fallback);
        assert_eq!(at(Some(Path::new("relative/run")), me), fallback);
        assert_eq!(at(Some(&tmp.path().join("missing")), me), fallback);
        // The same directory, seen by another user (as after `su`).
        let other = me + 1;
        assert_eq!(
            at(Some(&ours), other),
            tmp.path().join(format!("task-executor-{other}"))
        );
    }

    #[test]
    fn refuses_a_symlink() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = base.path().join("results");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = ResultDir::new(Some(link)).next_path("x").unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
