//! API tokens and the audit log in SQLite (tables `auth_key`, `tokens`,
//! `audit`, migration 6): the statements behind [`AuthStore`].
//!
//! A token row holds the keyed hash of its secret (unique, so a lookup is
//! one index probe), never the secret. Times are the store's clock, read
//! inside each transaction.

use rusqlite::{OptionalExtension, Row, params};

use super::{Ctx, Fail, SqliteStore, to_json};
use crate::store::StoreError;
use crate::store::contract::{
    AuditCursor, AuditEntry, AuditFilter, AuditPage, AuthStore, FoundToken, NewAudit, NewToken,
    Scope, TOUCH_EVERY, TokenRecord,
};

const TOKEN_COLUMNS: &str = "name, scope, created_at, expires_at, revoked_at, last_used_at";

fn read_token(row: &Row<'_>, ctx: &Ctx<'_>) -> Result<TokenRecord, Fail> {
    let name: String = row.get(0)?;
    let scope: String = row.get(1)?;
    let scope = Scope::parse(&scope)
        .ok_or_else(|| ctx.corrupt("token", &name, format!("unknown scope `{scope}`")))?;
    Ok(TokenRecord {
        name,
        scope,
        created_at: row.get(2)?,
        expires_at: row.get(3)?,
        revoked_at: row.get(4)?,
        last_used_at: row.get(5)?,
    })
}

fn read_audit(row: &Row<'_>, ctx: &Ctx<'_>) -> Result<AuditEntry, Fail> {
    let seq: i64 = row.get(0)?;
    let detail: String = row.get(5)?;
    let detail = serde_json::from_str(&detail)
        .map_err(|e| ctx.corrupt("audit entry", seq.to_string(), e.to_string()))?;
    Ok(AuditEntry {
        seq,
        at: row.get(1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        target: row.get(4)?,
        detail,
    })
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl AuthStore for SqliteStore {
    async fn token_key(&self, create: Option<&str>) -> Result<Option<String>, StoreError> {
        let select = |conn: &rusqlite::Connection| -> rusqlite::Result<Option<String>> {
            conn.prepare_cached("SELECT key FROM auth_key WHERE id = 1")?
                .query_row([], |r| r.get(0))
                .optional()
        };
        match create {
            None => Ok(self.read(move |conn, _| Ok(select(conn)?)).await?.flatten()),
            Some(key) => {
                let key = key.to_owned();
                let stored = self
                    .write(move |tx, _| {
                        tx.prepare_cached(
                            "INSERT INTO auth_key (id, key) VALUES (1, ?1) \
                             ON CONFLICT (id) DO NOTHING",
                        )?
                        .execute([&key])?;
                        Ok(select(tx)?)
                    })
                    .await?;
                Ok(stored)
            }
        }
    }

    async fn create_token(&self, token: &NewToken) -> Result<Option<TokenRecord>, StoreError> {
        let token = token.clone();
        self.write(move |tx, ctx| {
            let now = ctx.now();
            let expires = token.expires_in.map(|d| now.saturating_add(ms(d)));
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO tokens (name, scope, hash, created_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
                )?
                .execute(params![
                    token.name,
                    token.scope.as_str(),
                    token.hash,
                    now,
                    expires
                ])?;
            Ok((inserted == 1).then_some(TokenRecord {
                name: token.name,
                scope: token.scope,
                created_at: now,
                expires_at: expires,
                revoked_at: None,
                last_used_at: None,
            }))
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let all = self
            .read(|conn, ctx| {
                let mut stmt = conn
                    .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name"))?;
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(read_token(row, ctx)?);
                }
                Ok(out)
            })
            .await?;
        Ok(all.unwrap_or_default())
    }

    async fn any_token(&self) -> Result<bool, StoreError> {
        let any = self
            .read(|conn, _| {
                Ok(conn
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM tokens)")?
                    .query_row([], |r| r.get::<_, bool>(0))?)
            })
            .await?;
        Ok(any.unwrap_or(false))
    }

    async fn find_token(&self, hash: &str) -> Result<Option<FoundToken>, StoreError> {
        let hash = hash.to_owned();
        let found = self
            .read(move |conn, ctx| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS}, hash FROM tokens WHERE hash = ?1"
                ))?;
                let mut rows = stmt.query([&hash])?;
                let Some(row) = rows.next()? else {
                    return Ok(None);
                };
                Ok(Some(FoundToken {
                    record: read_token(row, ctx)?,
                    hash: row.get(6)?,
                    now: ctx.now(),
                }))
            })
            .await?;
        Ok(found.flatten())
    }

    async fn revoke_token(&self, name: &str) -> Result<Option<(TokenRecord, bool)>, StoreError> {
        let name = name.to_owned();
        let revoked = self
            .write_existing(move |tx, ctx| {
                let now = tx
                    .prepare_cached(
                        "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                    )?
                    .execute(params![name, ctx.now()])?
                    == 1;
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE name = ?1"
                ))?;
                let mut rows = stmt.query([&name])?;
                match rows.next()? {
                    Some(row) => Ok(Some((read_token(row, ctx)?, now))),
                    None => Ok(None),
                }
            })
            .await?;
        Ok(revoked.flatten())
    }

    async fn touch_token(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        let touched = self
            .write_existing(move |tx, ctx| {
                let now = ctx.now();
                let n = tx
                    .prepare_cached(
                        "UPDATE tokens SET last_used_at = ?2 WHERE name = ?1 \
                         AND (last_used_at IS NULL OR last_used_at <= ?3)",
                    )?
                    .execute(params![name, now, now.saturating_sub(ms(TOUCH_EVERY))])?;
                Ok(n == 1)
            })
            .await?;
        Ok(touched.unwrap_or(false))
    }

    async fn audit(&self, entry: &NewAudit) -> Result<AuditEntry, StoreError> {
        let entry = entry.clone();
        self.write(move |tx, ctx| {
            let at = ctx.now();
            let seq = insert_audit(tx, at, &entry)?;
            Ok(AuditEntry {
                seq,
                at,
                actor: entry.actor,
                action: entry.action,
                target: entry.target,
                detail: entry.detail,
            })
        })
        .await
    }

    async fn audit_log(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
        let limit = filter.limit.max(1);
        let since = filter.since.unwrap_or(i64::MIN);
        // Without a cursor, start after the newest possible entry.
        let after = filter.after.unwrap_or(AuditCursor {
            at: i64::MAX,
            seq: i64::MAX,
        });
        let page = self
            .read(move |conn, ctx| {
                // The first conjunct lets the index range-scan.
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, at, actor, action, target, detail FROM audit \
                     WHERE at >= ?1 AND at <= ?2 AND (at < ?2 OR seq < ?3) \
                     ORDER BY at DESC, seq DESC LIMIT ?4",
                )?;
                let mut rows = stmt.query(params![since, after.at, after.seq, limit as i64 + 1])?;
                let mut entries = Vec::new();
                while let Some(row) = rows.next()? {
                    entries.push(read_audit(row, ctx)?);
                }
                Ok(entries)
            })
            .await?;
        Ok(AuditPage::of_overfetch(page.unwrap_or_default(), limit))
    }
}

/// Appends `entry` to the audit log at `at`, in `tx`; returns its `seq`.
pub(super) fn insert_audit(
    tx: &rusqlite::Transaction<'_>,
    at: i64,
    entry: &NewAudit,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO audit (at, actor, action, target, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING seq",
    )?
    .query_row(
        params![
            at,
            entry.actor,
            entry.action,
            entry.target,
            to_json(&entry.detail)
        ],
        |r| r.get(0),
    )
}
