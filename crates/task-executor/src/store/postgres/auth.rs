//! API tokens and the audit log in PostgreSQL (tables `auth_key`,
//! `tokens`, `audit`, migration 2): the statements behind [`AuthStore`],
//! the same as SQLite's. Times are the database's clock
//! (`task_executor.now_ms()`), computed in each statement.

use tokio_postgres::Row;

use super::sql::{Sql, p};
use super::{PgStore, SCHEMA, no_nul, to_json};
use crate::store::StoreError;
use crate::store::contract::{
    AuditCursor, AuditEntry, AuditFilter, AuditPage, AuthStore, FoundToken, NewAudit, NewToken,
    Scope, TOUCH_EVERY, TokenRecord,
};

const TOKEN_COLUMNS: &str = "name, scope, created_at, expires_at, revoked_at, last_used_at";

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgStore {
    fn token_of(&self, r: &Row) -> Result<TokenRecord, StoreError> {
        let name: String = r.get(0);
        let scope: &str = r.get(1);
        let scope = Scope::parse(scope).ok_or_else(|| {
            self.corrupt("token", name.clone(), format!("unknown scope `{scope}`"))
        })?;
        Ok(TokenRecord {
            name,
            scope,
            created_at: r.get(2),
            expires_at: r.get(3),
            revoked_at: r.get(4),
            last_used_at: r.get(5),
        })
    }

    fn audit_of(&self, r: &Row) -> Result<AuditEntry, StoreError> {
        let seq: i64 = r.get(0);
        let detail = serde_json::from_str(r.get(5))
            .map_err(|e| self.corrupt("audit entry", seq.to_string(), e.to_string()))?;
        Ok(AuditEntry {
            seq,
            at: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            target: r.get(4),
            detail,
        })
    }
}

impl AuthStore for PgStore {
    async fn token_key(&self, create: Option<&str>) -> Result<Option<String>, StoreError> {
        let fail = |e| self.fail(e);
        let client = match create {
            Some(_) => self.write_conn().await?,
            None => match self.conn(false).await? {
                Some(client) => client,
                None => return Ok(None),
            },
        };
        if let Some(key) = create {
            client
                .exec(
                    &format!(
                        "INSERT INTO {SCHEMA}.auth_key (id, key) VALUES (1, $1) \
                         ON CONFLICT (id) DO NOTHING"
                    ),
                    &[p(&key)],
                )
                .await
                .map_err(fail)?;
        }
        let row = client
            .opt(
                &format!("SELECT key FROM {SCHEMA}.auth_key WHERE id = 1"),
                &[],
            )
            .await
            .map_err(fail)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn create_token(&self, token: &NewToken) -> Result<Option<TokenRecord>, StoreError> {
        let client = self.write_conn().await?;
        let row = client
            .opt(
                &format!(
                    "INSERT INTO {SCHEMA}.tokens (name, scope, hash, created_at, expires_at) \
                     VALUES ($1, $2, $3, task_executor.now_ms(), \
                        task_executor.now_ms() + $4::bigint) \
                     ON CONFLICT (name) DO NOTHING RETURNING {TOKEN_COLUMNS}"
                ),
                &[
                    p(&no_nul(&token.name)),
                    p(&token.scope.as_str()),
                    p(&token.hash),
                    p(&token.expires_in.map(ms)),
                ],
            )
            .await
            .map_err(|e| self.fail(e))?;
        row.map(|r| self.token_of(&r)).transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let Some(client) = self.conn(false).await? else {
            return Ok(Vec::new());
        };
        let rows = client
            .rows(
                &format!("SELECT {TOKEN_COLUMNS} FROM {SCHEMA}.tokens ORDER BY name"),
                &[],
            )
            .await
            .map_err(|e| self.fail(e))?;
        rows.iter().map(|r| self.token_of(r)).collect()
    }

    async fn any_token(&self) -> Result<bool, StoreError> {
        let Some(client) = self.conn(false).await? else {
            return Ok(false);
        };
        let row = client
            .one(
                &format!("SELECT EXISTS (SELECT 1 FROM {SCHEMA}.tokens)"),
                &[],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(row.get(0))
    }

    async fn find_token(&self, hash: &str) -> Result<Option<FoundToken>, StoreError> {
        let Some(client) = self.conn(false).await? else {
            return Ok(None);
        };
        let row = client
            .opt(
                &format!(
                    "SELECT {TOKEN_COLUMNS}, hash, task_executor.now_ms() FROM {SCHEMA}.tokens \
                     WHERE hash = $1"
                ),
                &[p(&hash)],
            )
            .await
            .map_err(|e| self.fail(e))?;
        row.map(|r| {
            Ok(FoundToken {
                record: self.token_of(&r)?,
                hash: r.get(6),
                now: r.get(7),
            })
        })
        .transpose()
    }

    async fn revoke_token(&self, name: &str) -> Result<Option<(TokenRecord, bool)>, StoreError> {
        let Some(client) = self.conn(false).await? else {
            return Ok(None);
        };
        // One statement: the update (if not revoked yet) and the row as it is then.
        let row = client
            .opt(
                &format!(
                    "WITH revoked AS (UPDATE {SCHEMA}.tokens SET revoked_at = task_executor.now_ms() \
                        WHERE name = $1 AND revoked_at IS NULL RETURNING {TOKEN_COLUMNS}) \
                     SELECT {TOKEN_COLUMNS}, true FROM revoked \
                     UNION ALL SELECT {TOKEN_COLUMNS}, false FROM {SCHEMA}.tokens \
                        WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM revoked)"
                ), &[p(&no_nul(name))],)
            .await
            .map_err(|e| self.fail(e))?;
        row.map(|r| Ok((self.token_of(&r)?, r.get(6)))).transpose()
    }

    async fn touch_token(&self, name: &str) -> Result<bool, StoreError> {
        let Some(client) = self.conn(false).await? else {
            return Ok(false);
        };
        let n = client
            .exec(
                &format!(
                    "UPDATE {SCHEMA}.tokens SET last_used_at = task_executor.now_ms() \
                     WHERE name = $1 AND (last_used_at IS NULL \
                        OR last_used_at <= task_executor.now_ms() - $2::bigint)"
                ),
                &[p(&no_nul(name)), p(&ms(TOUCH_EVERY))],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(n == 1)
    }

    async fn audit(&self, entry: &NewAudit) -> Result<AuditEntry, StoreError> {
        let client = self.write_conn().await?;
        let row = insert_audit(&client, entry)
            .await
            .map_err(|e| self.fail(e))?;
        self.audit_of(&row)
    }

    async fn audit_log(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
        let limit = filter.limit.max(1);
        let Some(client) = self.conn(false).await? else {
            return Ok(AuditPage::of_overfetch(Vec::new(), limit));
        };
        let after = filter.after.unwrap_or(AuditCursor {
            at: i64::MAX,
            seq: i64::MAX,
        });
        let rows = client
            .rows(
                &format!(
                    "SELECT seq, at, actor, action, target, detail FROM {SCHEMA}.audit \
                     WHERE at >= $1 AND at <= $2 AND (at < $2 OR seq < $3) \
                     ORDER BY at DESC, seq DESC LIMIT $4"
                ),
                &[
                    p(&filter.since.unwrap_or(i64::MIN)),
                    p(&after.at),
                    p(&after.seq),
                    p(&(limit as i64 + 1)),
                ],
            )
            .await
            .map_err(|e| self.fail(e))?;
        let entries = rows
            .iter()
            .map(|r| self.audit_of(r))
            .collect::<Result<_, _>>()?;
        Ok(AuditPage::of_overfetch(entries, limit))
    }
}

/// Appends `entry` to the audit log on `client` (a transaction or not), at
/// the database's time; returns the row as stored.
pub(super) async fn insert_audit(
    client: &impl Sql,
    entry: &NewAudit,
) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
    client
        .one(
            &format!(
                "INSERT INTO {SCHEMA}.audit (at, actor, action, target, detail) \
                 VALUES (task_executor.now_ms(), $1, $2, $3, $4) \
                 RETURNING seq, at, actor, action, target, detail"
            ),
            &[
                p(&no_nul(&entry.actor)),
                p(&no_nul(&entry.action)),
                p(&no_nul(&entry.target)),
                p(&no_nul(&to_json(&entry.detail))),
            ],
        )
        .await
}
