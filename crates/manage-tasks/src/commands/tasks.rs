//! `list`, `show` and `unregister`: reading and removing registered tasks.

use std::io::Write;

use task_executor::store::Listed;
use task_executor::view::{EntryView, ListView, TaskView};

use super::{Context, print_json, print_warnings, task_name, task_name_in};
use crate::cli::{ListArgs, NameArgs, ShowArgs};
use crate::exit;
use crate::output::{Clean, Style, clean};

pub async fn list(ctx: &Context, args: ListArgs) -> anyhow::Result<u8> {
    let entries = ctx
        .service()?
        .entries()
        .await
        .map_err(crate::exit::Failure::from)?;
    if args.json {
        print_json(&ListView::all(
            entries.iter().map(EntryView::from).collect(),
        ))?;
        return Ok(exit::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if entries.is_empty() {
        writeln!(
            out,
            "No tasks registered. Add one with: manage_tasks register --name NAME --location PATH"
        )?;
        return Ok(exit::SUCCESS);
    }
    let mut table = crate::output::table(["NAME", "DESCRIPTION", "LOCATION", "TIMEOUT"]);
    for entry in &entries {
        match entry {
            Listed::Task(t) => table.add_row([
                Clean(&t.name).to_string(),
                clean(t.description.as_deref().unwrap_or_default()).into_owned(),
                Clean(t.location.display()).to_string(),
                t.timeout
                    .map(|d| humantime::format_duration(d).to_string())
                    .unwrap_or_else(|| "-".into()),
            ]),
            Listed::Unusable(u) => table.add_row([
                clean(&u.name).into_owned(),
                format!("UNUSABLE: {}", clean(&u.reason)),
                u.location
                    .as_ref()
                    .map_or_else(|| "-".into(), |l| Clean(l.display()).to_string()),
                "-".into(),
            ]),
        };
    }
    writeln!(out, "{table}")?;
    Ok(exit::SUCCESS)
}

pub async fn show(ctx: &Context, args: ShowArgs) -> anyhow::Result<u8> {
    let service = ctx.service()?;
    let name = task_name_in(&service, args.name.get()).await?;
    let task = service.task(&name).await?;
    if args.json {
        print_json(&TaskView::from(&task))?;
        return Ok(exit::SUCCESS);
    }
    let style = Style::stdout();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}  {}", style.bold("name:"), Clean(&task.name))?;
    writeln!(
        out,
        "{}  {}",
        style.bold("location:"),
        Clean(task.location.display())
    )?;
    if let Some(d) = &task.description {
        writeln!(out, "{}  {}", style.bold("description:"), clean(d))?;
    }
    let timeout = task
        .timeout
        .map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_else(|| "default".into());
    writeln!(out, "{}  {timeout}", style.bold("timeout:"))?;
    if !task.formats.is_default() {
        writeln!(
            out,
            "{}  annotations only (not checked)",
            style.bold("formats:")
        )?;
    }
    let p = &task.policy;
    if !p.is_default() {
        let mut parts = vec![];
        if let Some(n) = p.retries {
            parts.push(format!("{n} retries"));
        }
        if let Some(b) = p.backoff {
            parts.push(format!("backoff {}", humantime::format_duration(b)));
        }
        if p.retry_on_status {
            parts.push("statuses retried".into());
        }
        if let Some(c) = p.concurrency {
            parts.push(format!("at most {c} at once"));
        }
        if let Some(pr) = p.priority {
            parts.push(format!("priority {pr}"));
        }
        if !p.tags.is_empty() {
            parts.push(format!("workers with tags {}", p.tags.join(", ")));
        }
        writeln!(out, "{}  {}", style.bold("queue:"), parts.join(", "))?;
    }
    writeln!(
        out,
        "{}\n{}",
        style.bold("inputs:"),
        clean(&serde_json::to_string_pretty(&task.inputs)?)
    )?;
    match &task.outputs {
        Some(o) => writeln!(
            out,
            "{}\n{}",
            style.bold("outputs:"),
            clean(&serde_json::to_string_pretty(o)?)
        )?,
        None => writeln!(out, "{}  not declared", style.bold("outputs:"))?,
    }
    Ok(exit::SUCCESS)
}

pub async fn unregister(ctx: &Context, args: NameArgs) -> anyhow::Result<u8> {
    let service = ctx.service()?;
    // An entry the store cannot use goes by its name as stored, whatever it is.
    if let Some(gone) = service.unregister_unusable(args.get()).await? {
        print_warnings(&service);
        writeln!(
            std::io::stdout(),
            "Unusable entry {} removed ({})",
            clean(&gone.name),
            gone.location
                .as_ref()
                .map_or_else(|| "no location".into(), |l| Clean(l.display()).to_string())
        )?;
        return Ok(exit::SUCCESS);
    }
    let name = task_name(args.get())?;
    let gone = service.unregister(&name).await?;
    print_warnings(&service);
    let schedules = match gone.schedules {
        0 => String::new(),
        1 => "; removed its schedule".to_owned(),
        n => format!("; removed its {n} schedules"),
    };
    writeln!(
        std::io::stdout(),
        "Task {} unregistered ({}){schedules}",
        Clean(&gone.task.name),
        Clean(gone.task.location.display())
    )?;
    Ok(exit::SUCCESS)
}
