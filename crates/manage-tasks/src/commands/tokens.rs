//! `tokens create|list|revoke` and `audit list`: API tokens and the audit
//! log. What the command line does is audited as `cli:<user>`.

use std::io::Write;

use task_executor::service::Service;
use task_executor::store::{AuditCursor, AuditFilter, Scope, TokenState};
use task_executor::view::{AuditView, CreatedTokenView, ListView, TokenView};

use super::runs::parse_since;
use super::{Context, print_json};
use crate::cli::{AuditCommand, AuditListArgs, ScopeArg, TokenCreateArgs, TokensCommand};
use crate::exit::{self, Failure};
use crate::output::{Style, clean};

pub async fn tokens(ctx: &Context, cmd: TokensCommand) -> anyhow::Result<u8> {
    let service = ctx.service()?;
    match cmd {
        TokensCommand::Create(a) => create(&service, a).await,
        TokensCommand::List(a) => list(&service, a.json).await,
        TokensCommand::Revoke(a) => {
            let revoked = service
                .revoke_token(&cli_actor(), &a.name)
                .await
                .map_err(Failure::from)?;
            warn(revoked.warning.as_deref());
            let now = service.tokens().await.map_err(Failure::from)?.now;
            if a.json {
                print_json(&TokenView::new(&revoked.token, now))?;
            } else if revoked.already {
                writeln!(
                    std::io::stdout(),
                    "Token `{}` was revoked already.",
                    clean(&a.name)
                )?;
            } else {
                writeln!(std::io::stdout(), "Revoked token `{}`.", clean(&a.name))?;
            }
            Ok(exit::SUCCESS)
        }
    }
}

/// Who the command line acts as in the audit log: `cli:<user>`.
fn cli_actor() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self")
                .map(|m| format!("uid:{}", m.uid()))
                .unwrap_or_else(|_| "unknown".into())
        });
    format!("cli:{user}")
}

fn warn(warning: Option<&str>) {
    if let Some(w) = warning {
        let style = Style::stderr();
        let _ = writeln!(std::io::stderr(), "{} {}", style.bold("warning:"), clean(w));
    }
}

async fn create(service: &Service, a: TokenCreateArgs) -> anyhow::Result<u8> {
    let scope = match a.scope {
        ScopeArg::Read => Scope::Read,
        ScopeArg::Run => Scope::Run,
        ScopeArg::Admin => Scope::Admin,
    };
    let created = service
        .create_token(&cli_actor(), &a.name, scope, a.expires)
        .await
        .map_err(Failure::from)?;
    warn(created.warning.as_deref());
    let view = TokenView::new(&created.token, created.token.created_at);
    if a.json {
        print_json(&CreatedTokenView {
            token: view,
            secret: created.secret.expose(),
        })?;
        return Ok(exit::SUCCESS);
    }
    // The secret alone on stdout, so `$(manage_tasks tokens create …)` captures it.
    writeln!(std::io::stdout(), "{}", created.secret.expose())?;
    let expires = view.expires_at.as_deref().unwrap_or("never");
    writeln!(
        std::io::stderr(),
        "created token `{}` (scope {scope}, expires {expires}); its secret is printed above \
         and stored nowhere: keep it now",
        clean(&a.name)
    )?;
    Ok(exit::SUCCESS)
}

async fn list(service: &Service, json: bool) -> anyhow::Result<u8> {
    let listed = service.tokens().await.map_err(Failure::from)?;
    let views: Vec<TokenView> = listed
        .tokens
        .iter()
        .map(|t| TokenView::new(t, listed.now))
        .collect();
    if json {
        print_json(&ListView::all(views))?;
        return Ok(exit::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if views.is_empty() {
        writeln!(
            out,
            "No tokens. Create one with: manage_tasks tokens create --name NAME --scope read|run|admin"
        )?;
        return Ok(exit::SUCCESS);
    }
    let mut table =
        crate::output::table(["NAME", "SCOPE", "STATE", "CREATED", "EXPIRES", "LAST USED"]);
    let or_dash = |t: &Option<String>| t.clone().unwrap_or_else(|| "-".into());
    for t in &views {
        table.add_row([
            clean(t.name).into_owned(),
            t.scope.to_string(),
            match t.state {
                TokenState::Active => "active",
                TokenState::Expired => "expired",
                TokenState::Revoked => "revoked",
            }
            .to_owned(),
            t.created_at.clone(),
            or_dash(&t.expires_at),
            or_dash(&t.last_used_at),
        ]);
    }
    writeln!(out, "{table}")?;
    Ok(exit::SUCCESS)
}

pub async fn audit(ctx: &Context, cmd: AuditCommand) -> anyhow::Result<u8> {
    let service = ctx.service()?;
    let AuditCommand::List(a) = cmd;
    audit_list(&service, a).await
}

async fn audit_list(service: &Service, a: AuditListArgs) -> anyhow::Result<u8> {
    let filter = AuditFilter {
        since: a.since.as_deref().map(parse_since).transpose()?,
        limit: a.limit as usize,
        after: super::after_cursor(a.after.as_deref(), "audit list", AuditCursor::decode)?,
    };
    let page = service.audit_log(&filter).await.map_err(Failure::from)?;
    let next = page.next.as_ref().map(AuditCursor::encode);
    if a.json {
        print_json(&ListView {
            items: page.entries.iter().map(AuditView::from).collect(),
            next,
        })?;
        return Ok(exit::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if page.entries.is_empty() {
        writeln!(out, "No audit entries.")?;
        return Ok(exit::SUCCESS);
    }
    let mut table = crate::output::table(["TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"]);
    for e in page.entries.iter().map(AuditView::from) {
        table.add_row([
            e.at.clone(),
            clean(e.actor).into_owned(),
            clean(e.action).into_owned(),
            clean(e.target).into_owned(),
            clean(&e.detail.to_string()).into_owned(),
        ]);
    }
    writeln!(out, "{table}")?;
    if let Some(next) = next {
        let mut args = vec![format!("--limit {}", a.limit)];
        if let Some(since) = &a.since {
            args.push(format!("--since '{since}'"));
        }
        args.push(format!("--after {next}"));
        writeln!(
            std::io::stderr(),
            "more: manage_tasks audit list {}",
            args.join(" ")
        )?;
    }
    Ok(exit::SUCCESS)
}
