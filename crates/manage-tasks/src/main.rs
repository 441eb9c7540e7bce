//! `manage_tasks`: the command-line face of the task-executor library.
//!
//! Thin by design: parse arguments (keeping the original tool's `-name`
//! style), open the store, call the library, print. Exit codes live in
//! [`exit`]; human rendering in [`output`].

mod cli;
mod commands;
mod exit;
mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::exit::Failure;

/// The static musl release build (`make build`) uses mimalloc: musl's own
/// allocator maps and unmaps pages for most allocations of a few KiB, and in a
/// batch every unmap is a TLB shootdown across the pool's threads (1000 no-op
/// runs went from 1451 to 1635 runs/s). `no_thp` keeps mimalloc from asking for
/// huge pages, whose zeroing added 0.13 ms to every short command. The
/// Makefile's musl build also tunes it at compile time (`MIMALLOC_CFLAGS`).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SQLite is C and allocates with libc's `malloc`, which in the musl build is
/// musl's own: ~75 `mmap`/`munmap` calls and ~100 extra page faults per
/// `execute` on a SQLite store. Routed to mimalloc like everything else.
#[cfg(target_env = "musl")]
mod sqlite_malloc {
    use std::ffi::{c_int, c_void};

    use libmimalloc_sys as mi;
    use rusqlite::ffi;

    fn size(n: c_int) -> usize {
        usize::try_from(n).unwrap_or(0)
    }

    unsafe extern "C" fn malloc(n: c_int) -> *mut c_void {
        // SAFETY: any size is valid; mimalloc aligns to 16, SQLite needs 8.
        unsafe { mi::mi_malloc(size(n)) }
    }

    unsafe extern "C" fn free(p: *mut c_void) {
        // SAFETY: SQLite frees only what `malloc`/`realloc` above returned.
        unsafe { mi::mi_free(p) }
    }

    unsafe extern "C" fn realloc(p: *mut c_void, n: c_int) -> *mut c_void {
        // SAFETY: as for `free`.
        unsafe { mi::mi_realloc(p, size(n)) }
    }

    unsafe extern "C" fn usable(p: *mut c_void) -> c_int {
        // SAFETY: as for `free`.
        c_int::try_from(unsafe { mi::mi_usable_size(p) }).unwrap_or(c_int::MAX)
    }

    unsafe extern "C" fn roundup(n: c_int) -> c_int {
        // SAFETY: a pure function of the size.
        c_int::try_from(unsafe { mi::mi_good_size(size(n)) }).unwrap_or(c_int::MAX)
    }

    unsafe extern "C" fn init(_: *mut c_void) -> c_int {
        ffi::SQLITE_OK
    }

    unsafe extern "C" fn shutdown(_: *mut c_void) {}

    /// Must run before SQLite is first used (it then refuses, harmlessly).
    pub fn install() {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(malloc),
            xFree: Some(free),
            xRealloc: Some(realloc),
            xSize: Some(usable),
            xRoundup: Some(roundup),
            xInit: Some(init),
            xShutdown: Some(shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: SQLite copies `methods` before returning, and nothing has
        // used SQLite yet (single-threaded start of `main`).
        let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods) };
        debug_assert_eq!(rc, ffi::SQLITE_OK, "sqlite3_config(SQLITE_CONFIG_MALLOC)");
    }
}

fn main() -> ExitCode {
    #[cfg(target_env = "musl")]
    sqlite_malloc::install();
    let command = cli::Cli::command();
    let args = cli::rewrite_single_dash(std::env::args_os().collect(), &command);
    let cli = match command
        .try_get_matches_from(args)
        .and_then(|m| cli::Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::NOTHING_RAN } else { 0 });
        }
    };
    let json = commands::wants_json(&cli.command);
    // A worker runs its tasks' I/O on a second thread while its loop waits on the store.
    let mut builder = if matches!(cli.command, cli::Command::Worker(_)) {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::NOTHING_RAN);
        }
    };
    // Boxed: the future of every subcommand is large, and as a local of
    // `main` its stack frame was faulted in page by page (stack probes).
    match runtime.block_on(Box::pin(commands::run(cli))) {
        Ok(code) => ExitCode::from(code),
        Err(err) => report_error(err, json),
    }
}

fn report_error(err: anyhow::Error, json: bool) -> ExitCode {
    if is_broken_pipe(&err) {
        return ExitCode::SUCCESS;
    }
    let (code, kind, violations) = match err.downcast_ref::<Failure>() {
        Some(f) => (f.code, f.kind, f.violations.clone()),
        None => (exit::NOTHING_RAN, "error", Vec::new()),
    };
    let style = output::Style::stderr();
    let _ = writeln!(std::io::stderr(), "{} {err:#}", style.red("error:"));
    if json {
        let doc = serde_json::json!({
            "error": {"kind": kind, "message": format!("{err:#}"), "violations": violations}
        });
        let _ = writeln!(std::io::stdout(), "{doc}");
    }
    ExitCode::from(code)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
