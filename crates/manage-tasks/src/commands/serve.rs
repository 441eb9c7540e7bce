//! `serve`: the HTTP API (`task_executor_http`) and, with `--workers N`,
//! N worker slots in the same process, until SIGTERM/SIGINT: then the
//! listener stops accepting, requests in flight finish, and the workers
//! drain as `worker` does.

use std::io::Write;
use std::time::Duration;

use task_executor::queue::{WorkerConfig, WorkerEvent};
use task_executor::service::ServiceConfig;
use task_executor::{Runner, RunnerConfig};
use task_executor_http::{Exposure, HttpConfig, Limits};
use tokio_util::sync::CancellationToken;

use super::{Context, cancel_on_signal};
use crate::cli::ServeArgs;
use crate::exit::{self, Failure};
use crate::output::clean;

/// Store connections kept for the API's requests, beyond the workers'.
const API_CONNECTIONS: usize = 16;

pub async fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<u8> {
    let workers = match args.workers {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let runner = Runner::new(RunnerConfig {
        grace: args.grace,
        ..RunnerConfig::default()
    });
    let service = ctx.service_sized(
        runner,
        ServiceConfig {
            inline_worker: format!("serve-{}", std::process::id()),
            ..ServiceConfig::default()
        },
        workers + 2 + API_CONNECTIONS,
    )?;
    let tokens = service.tokens_configured().await.map_err(Failure::from)?;
    let exposure = match task_executor_http::check_bind(args.listen, tokens, args.insecure_no_auth)
    {
        Ok(e) => e,
        Err(e) => {
            return Err(Failure {
                code: exit::NOT_LOOPBACK,
                ..Failure::nothing_ran(e.kind(), e.to_string())
            }
            .into());
        }
    };
    if !service.has_history() {
        return Err(Failure::nothing_ran(
            "unsupported",
            "the HTTP API needs a store that keeps run history and a queue: a YAML store \
             keeps neither; use --store sqlite:PATH or a postgres:// URL (`manage_tasks store \
             copy` moves the tasks over)",
        )
        .into());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            Failure::nothing_ran(
                "usage",
                match e.kind() {
                    std::io::ErrorKind::AddrInUse => format!(
                        "cannot serve http on `{}`: the address is already in use; stop the \
                         other server, or choose another port (port 0 picks a free one)",
                        args.listen
                    ),
                    _ => format!("cannot serve http on `{}`: {e}", args.listen),
                },
            )
        })?;
    let bound = listener.local_addr()?;
    let quiet = ctx.quiet;
    let mut err = std::io::stderr();
    // Always said: tests and scripts read the address from this line.
    let _ = writeln!(
        err,
        "serving http://{bound} (web page /, api /api/v1, docs /api/v1/docs)"
    );
    match exposure {
        Exposure::Loopback => {
            if !quiet {
                let _ = writeln!(
                    err,
                    "no API tokens are configured: answering on loopback only, every request \
                     acting as the local administrator"
                );
            }
        }
        Exposure::Tokens => {
            if !quiet {
                let _ = writeln!(
                    err,
                    "API tokens are configured: every request needs `Authorization: Bearer <token>`"
                );
            }
        }
        Exposure::OpenToNetwork => {
            let _ = writeln!(
                err,
                "warning: serving on {bound} WITHOUT AUTHENTICATION (--insecure-no-auth): \
                 anyone who can reach this address can register and run tasks on this machine"
            );
        }
    }
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    let worker_service = service.clone();
    let worker_config = (workers > 0).then(|| {
        let listens = service.hears_new_work();
        WorkerConfig {
            id: format!(
                "serve-{}-{}",
                task_executor::queue::hostname(),
                std::process::id()
            ),
            concurrency: workers,
            poll: if listens {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(100)
            },
            listen: true,
            grace: args.drain,
            keep_runs: Some(10_000),
            ..WorkerConfig::default()
        }
    });
    let work = async {
        let config = worker_config?;
        if !quiet {
            let _ = writeln!(
                std::io::stderr(),
                "worker {} started: concurrency {}",
                config.id,
                config.concurrency
            );
        }
        let mut events = |e: WorkerEvent| {
            if !quiet {
                let _ = writeln!(std::io::stderr(), "{}", clean(&super::queue::describe(e)));
            }
        };
        Some(worker_service.work(&config, &shutdown, &mut events).await)
    };
    let config = HttpConfig {
        service,
        caller: args.caller,
        limits: Limits {
            max_body: args.max_body,
            shutdown_grace: args.drain,
            ..Limits::default()
        },
    };
    let serve = async {
        let served = task_executor_http::serve(listener, config, shutdown.clone()).await;
        // The server stops only at shutdown or on a listener failure:
        // either way the workers drain now.
        shutdown.cancel();
        served
    };
    let (served, worked) = tokio::join!(serve, work);
    signals.abort();
    served?;
    match worked {
        Some(Ok(stats)) if !quiet => {
            let _ = writeln!(
                err,
                "worker stopped: {} completed, {} failed, {} requeued at shutdown",
                stats.completed, stats.failed, stats.released
            );
        }
        Some(Err(e)) => return Err(Failure::from(e).into()),
        _ => {}
    }
    if !quiet {
        let _ = writeln!(err, "stopped");
    }
    Ok(exit::SUCCESS)
}
