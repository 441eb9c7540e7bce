//! `store copy`: one store into another, through the service's
//! [`copy_store`]. This parses the two specs and renders: a progress line
//! on a terminal's stderr, the summary on stdout (or `--json`), notices
//! and warnings on stderr.

use std::io::{IsTerminal, Write};

use task_executor::StoreSpec;
use task_executor::service::{
    Copied, CopyConfig, CopyCounts, CopyProgress, CopyStage, HistoryCopy, copy_store,
};
use task_executor::view::CopyView;

use super::{Context, print_json};
use crate::cli::{CopyArgs, StoreCommand};
use crate::exit::{self, Failure};
use crate::output::clean;

pub async fn run(ctx: &Context, cmd: StoreCommand) -> anyhow::Result<u8> {
    match cmd {
        StoreCommand::Copy(a) => copy(ctx, a).await,
    }
}

async fn copy(ctx: &Context, a: CopyArgs) -> anyhow::Result<u8> {
    let from = match a.from.as_deref() {
        Some(s) => StoreSpec::parse(s).map_err(Failure::from)?,
        None => ctx.store_spec()?,
    };
    let to = StoreSpec::parse(&a.to).map_err(Failure::from)?;

    let bar = (std::io::stderr().is_terminal() && !ctx.quiet).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} copying {msg} [{elapsed_precise}]")
                .expect("the template is valid"),
        );
        bar.set_message("tasks");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let mut progress = |p: CopyProgress| {
        if let Some(bar) = &bar {
            bar.set_message(progress_text(p));
        }
    };
    let result = copy_store(&from, &to, &CopyConfig::default(), &mut progress).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let copied = result?;

    let mut err = std::io::stderr().lock();
    for warning in &copied.warnings {
        let _ = writeln!(err, "warning: {}", clean(warning));
    }
    if !ctx.quiet {
        for notice in copied.notices() {
            let _ = writeln!(err, "{}", clean(&notice));
        }
    }
    drop(err);
    if a.json {
        print_json(&CopyView::from(&copied))?;
    } else {
        writeln!(std::io::stdout(), "{}", summary(&copied))?;
    }
    Ok(exit::SUCCESS)
}

fn progress_text(p: CopyProgress) -> String {
    let what = match p.stage {
        CopyStage::Tasks => "tasks",
        CopyStage::Schedules => "schedules",
        CopyStage::Runs => "runs",
    };
    let CopyCounts {
        copied,
        unchanged,
        skipped,
    } = p.counts;
    format!("{what}: {copied} copied, {unchanged} unchanged, {skipped} skipped")
}

/// `tasks: 3 copied, 1 unchanged; schedules: …; runs: 1200 copied, 0
/// unchanged, 12 skipped (queued or running)`.
fn summary(c: &Copied) -> String {
    let counts = |n: CopyCounts| format!("{} copied, {} unchanged", n.copied, n.unchanged);
    let mut out = format!("tasks: {}", counts(c.tasks));
    if c.tasks.skipped > 0 {
        out.push_str(&format!(", {} skipped (unusable)", c.tasks.skipped));
    }
    match c.history {
        HistoryCopy::Copied => {
            let (schedules, runs) = (c.schedules.unwrap_or_default(), c.runs.unwrap_or_default());
            out.push_str(&format!(
                "; schedules: {}; runs: {}, {} skipped (queued or running)",
                counts(schedules),
                counts(runs),
                runs.skipped
            ));
        }
        HistoryCopy::NoneInSource => out.push_str("; no history in a YAML store"),
        HistoryCopy::NotKeptByTarget => {
            out.push_str("; schedules and runs not copied (a YAML store keeps tasks only)")
        }
    }
    out
}
