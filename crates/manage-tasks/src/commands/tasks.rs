//! `list`, `show` and `unregister`: reading and removing registry entries.

use std::io::Write;

use comfy_table::{ContentArrangement, Table, presets};

use super::{Context, print_json, task_json, task_name};
use crate::cli::{ListArgs, NameArgs, ShowArgs};
use crate::exit::{self, Failure};
use crate::output::Style;

pub async fn list(ctx: &Context, args: ListArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store().await?;
    let tasks = store.list().await.map_err(Failure::from)?;
    if args.json {
        let all: Vec<_> = tasks.iter().map(task_json).collect();
        print_json(&all)?;
        return Ok(exit::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if tasks.is_empty() {
        writeln!(
            out,
            "No tasks registered. Add one with: manage_tasks register --name NAME --location PATH"
        )?;
        return Ok(exit::SUCCESS);
    }
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["NAME", "DESCRIPTION", "LOCATION", "TIMEOUT"]);
    for t in &tasks {
        table.add_row([
            t.name.to_string(),
            t.description.clone().unwrap_or_default(),
            t.location.display().to_string(),
            t.timeout
                .map(|d| humantime::format_duration(d).to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    writeln!(out, "{table}")?;
    Ok(exit::SUCCESS)
}

pub async fn show(ctx: &Context, args: ShowArgs) -> anyhow::Result<u8> {
    let name = task_name(args.name.get())?;
    let store = ctx.open_store().await?;
    let task = store
        .get(&name)
        .await
        .map_err(Failure::from)?
        .ok_or_else(|| unknown(&name))?;
    if args.json {
        print_json(&task_json(&task))?;
        return Ok(exit::SUCCESS);
    }
    let style = Style::stdout();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}  {}", style.bold("name:"), task.name)?;
    writeln!(
        out,
        "{}  {}",
        style.bold("location:"),
        task.location.display()
    )?;
    if let Some(d) = &task.description {
        writeln!(out, "{}  {d}", style.bold("description:"))?;
    }
    let timeout = task
        .timeout
        .map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_else(|| "default".into());
    writeln!(out, "{}  {timeout}", style.bold("timeout:"))?;
    writeln!(
        out,
        "{}\n{}",
        style.bold("inputs:"),
        serde_json::to_string_pretty(&task.inputs)?
    )?;
    match &task.outputs {
        Some(o) => writeln!(
            out,
            "{}\n{}",
            style.bold("outputs:"),
            serde_json::to_string_pretty(o)?
        )?,
        None => writeln!(out, "{}  not declared", style.bold("outputs:"))?,
    }
    Ok(exit::SUCCESS)
}

pub async fn unregister(ctx: &Context, args: NameArgs) -> anyhow::Result<u8> {
    let name = task_name(args.get())?;
    let store = ctx.open_store().await?;
    let task = store.remove(&name).await.map_err(|e| match e {
        task_executor::StoreError::NotFound { name } => unknown(&name),
        other => other.into(),
    })?;
    writeln!(
        std::io::stdout(),
        "Task {} unregistered ({})",
        task.name,
        task.location.display()
    )?;
    Ok(exit::SUCCESS)
}

/// The error for a name that is not registered.
pub fn unknown(name: &task_executor::TaskName) -> Failure {
    Failure::nothing_ran(
        "unknown_task",
        format!("task `{name}` is not registered; `manage_tasks list` shows the registered tasks"),
    )
}
