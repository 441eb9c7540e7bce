//! `workers list`: the workers registered in the store, live or gone.

use std::io::Write;
use std::time::Duration;

use task_executor::view::{ListView, WorkerState, WorkerView};

use super::{Context, print_json};
use crate::cli::WorkersCommand;
use crate::exit::{self, Failure};
use crate::output::clean;

pub async fn run(ctx: &Context, cmd: WorkersCommand) -> anyhow::Result<u8> {
    let service = ctx.service()?;
    let WorkersCommand::List(a) = cmd;
    let listed = service.workers().await.map_err(Failure::from)?;
    let views: Vec<WorkerView> = listed
        .workers
        .iter()
        .map(|w| WorkerView::new(w, listed.now))
        .collect();
    if a.json {
        print_json(&ListView::all(views))?;
        return Ok(exit::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if views.is_empty() {
        writeln!(
            out,
            "No workers. Start one with: manage_tasks worker [--tags TAGS]"
        )?;
        return Ok(exit::SUCCESS);
    }
    let mut table = crate::output::table([
        "ID",
        "HOST",
        "TAGS",
        "CONCURRENCY",
        "RUNNING",
        "LAST HEARTBEAT",
        "STATE",
    ]);
    for w in &views {
        let tags = if w.tags.is_empty() {
            "-".to_owned()
        } else {
            clean(&w.tags.join(",")).into_owned()
        };
        table.add_row([
            clean(w.id).into_owned(),
            clean(w.host).into_owned(),
            tags,
            w.concurrency.to_string(),
            w.running.to_string(),
            ago(w.last_seen_ago_ms),
            match w.state {
                WorkerState::Live => "live".to_owned(),
                WorkerState::Gone => "gone".to_owned(),
            },
        ]);
    }
    writeln!(out, "{table}")?;
    Ok(exit::SUCCESS)
}

/// `3s ago`, `2m 5s ago`: to the second.
fn ago(ms: u64) -> String {
    if ms < 1000 {
        return "<1s ago".to_owned();
    }
    let secs = Duration::from_secs(ms / 1000);
    format!("{} ago", humantime::format_duration(secs))
}
