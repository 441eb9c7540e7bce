//! Authentication and the audit log: API tokens, the scope check every
//! server front end makes, and the record of who changed what.
//!
//! **A token** is `te_` and 64 hex digits (256 bits from the operating
//! system's CSPRNG, `getrandom`): the prefix lets secret scanners find a
//! leaked one. The plaintext exists only in [`Service::create_token`]'s
//! answer ([`Secret`], whose `Debug` hides it); the store keeps
//! HMAC-SHA256 of it under the store's own key.
//!
//! **Why a fast keyed hash, and why the key lives in the store.** A token
//! is 256 random bits, so no guessing can find it from its hash: a slow
//! password hash would add nothing but a cost per request. The key is
//! generated (256 bits) with the store's first token and kept in it (table
//! `auth_key`), because every process sharing the store — CLIs, servers,
//! on any machine — must verify the same tokens. Someone who reads the
//! database gets the key and the hashes, and still no token: what the key
//! adds is that hashes mean nothing outside this store.
//!
//! **The check a server makes** for each request is [`Service::authorize`]:
//! the `Authorization` header's value and the scope the request needs in,
//! a [`Principal`] (or `None` when no token exists at all) out, or an
//! [`AuthError`] whose [`denial`](AuthError::denial) says whether to answer
//! "unauthenticated" (HTTP 401) or "forbidden" (403). It costs one indexed
//! read of the token by its hash, plus [`Service::tokens_configured`]
//! (cached), plus a write of `last_used_at` at most once a minute per token
//! and process.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

use super::Service;
use crate::store::{
    AuditEntry, AuditFilter, AuditPage, NewAudit, NewToken, Scope, Store, StoreError, TOUCH_EVERY,
    TokenRecord, TokenState,
};

/// The prefix of every token secret.
pub const TOKEN_PREFIX: &str = "te_";

/// How long "no token exists" is believed before the store is asked again
/// (a token created meanwhile is required within this long). "Some token
/// exists" is believed for good: tokens are never deleted.
pub const UNCONFIGURED_RECHECK: Duration = Duration::from_secs(1);

/// Random bytes in a token secret.
const SECRET_BYTES: usize = 32;

/// Token names: 1 to 64 of these characters.
const NAME_MAX: usize = 64;

/// A token's secret: printable once, never by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, to hand to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// Who a request comes from: a valid token's name and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (the actor its audit entries show).
    pub name: String,
    /// What it may do.
    pub scope: Scope,
}

/// Every token, and the store's time they were looked at (what their
/// states are judged at).
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The store's time of the listing (epoch ms).
    pub now: i64,
    /// The tokens, by name.
    pub tokens: Vec<TokenRecord>,
}

/// A token just created: its record and its secret, which exists nowhere else.
#[derive(Debug, Clone)]
pub struct Created {
    /// The stored token.
    pub token: TokenRecord,
    /// Its secret.
    pub secret: Secret,
    /// Set when the token was stored but its audit entry could not be.
    pub warning: Option<String>,
}

/// A token just revoked.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// The token as it is now.
    pub token: TokenRecord,
    /// Whether it was revoked before this call already.
    pub already: bool,
    /// Set when it was revoked but its audit entry could not be stored.
    pub warning: Option<String>,
}

/// Why a token could not be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The name cannot be a token's.
    #[error("invalid token name `{name}`: use 1 to {NAME_MAX} letters, digits, `.`, `_` or `-`")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A token of that name exists (perhaps revoked: names are never reused).
    #[error("token `{name}` already exists (a revoked token keeps its name); choose another name")]
    Exists {
        /// The taken name.
        name: String,
    },
    /// No token has that name.
    #[error("no token is called `{name}`; `manage_tasks tokens list` shows them")]
    NotFound {
        /// The name given.
        name: String,
    },
    /// The operating system gave no random bytes.
    #[error("cannot generate a token secret: the system's random source failed ({0})")]
    Random(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TokenError {
    /// The stable kind front ends show.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::InvalidName { .. } => "usage",
            TokenError::Exists { .. } => "token_exists",
            TokenError::NotFound { .. } => "unknown_token",
            TokenError::Random(_) => "internal",
            TokenError::Store(e) => super::store_kind(e),
        }
    }
}

/// Why a request is not let through.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Tokens are configured and the request carries none.
    #[error("this server requires a token: send `Authorization: Bearer <token>`")]
    Missing,
    /// The `Authorization` value is not `Bearer te_…` with a well-formed token.
    #[error("the Authorization header is not `Bearer {TOKEN_PREFIX}` followed by 64 hex digits")]
    Malformed,
    /// No token has this secret.
    #[error("unknown token: it was never created in this store")]
    Unknown,
    /// The token was revoked.
    #[error("token `{name}` was revoked; create a new one with `manage_tasks tokens create`")]
    Revoked {
        /// The token's name.
        name: String,
    },
    /// The token has expired.
    #[error("token `{name}` has expired; create a new one with `manage_tasks tokens create`")]
    Expired {
        /// The token's name.
        name: String,
    },
    /// The token is valid but its scope is too small for the request.
    #[error("token `{name}` has scope `{scope}`; this needs `{needed}` or more")]
    Forbidden {
        /// The token's name.
        name: String,
        /// Its scope.
        scope: Scope,
        /// The scope the request needs.
        needed: Scope,
    },
    /// The store could not be asked.
    #[error("cannot check the token: {0}")]
    Store(#[from] StoreError),
}

/// What kind of refusal an [`AuthError`] is, for a front end's status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No valid token (HTTP 401).
    Unauthenticated,
    /// A valid token whose scope is too small (HTTP 403).
    Forbidden,
    /// The store failed: try again (HTTP 503).
    Unavailable,
}

impl AuthError {
    /// The stable kind front ends show.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Malformed => "malformed_token",
            AuthError::Unknown => "unknown_token",
            AuthError::Revoked { .. } => "revoked_token",
            AuthError::Expired { .. } => "expired_token",
            AuthError::Forbidden { .. } => "forbidden",
            AuthError::Store(_) => "store",
        }
    }

    /// Which kind of refusal this is.
    pub fn denial(&self) -> Denial {
        match self {
            AuthError::Forbidden { .. } => Denial::Forbidden,
            AuthError::Store(_) => Denial::Unavailable,
            _ => Denial::Unauthenticated,
        }
    }
}

/// What a [`Service`] keeps between authentications (shared by its clones).
#[derive(Default)]
pub(super) struct AuthState {
    /// Whether tokens exist, and when "no" was last read.
    configured: Mutex<Option<(bool, Instant)>>,
    /// The store's hashing key, once read.
    key: tokio::sync::OnceCell<String>,
    /// When this process last wrote each token's `last_used_at`.
    touched: Mutex<HashMap<String, Instant>>,
}

impl fmt::Debug for AuthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthState").finish_non_exhaustive()
    }
}

impl AuthState {
    /// The store's key; with `create`, made and stored if there is none.
    async fn key(&self, store: &Store, create: bool) -> Result<Option<&str>, TokenError> {
        if let Some(key) = self.key.get() {
            return Ok(Some(key));
        }
        let candidate = if create {
            Some(hex(&random_bytes()?))
        } else {
            None
        };
        match store.token_key(candidate.as_deref()).await? {
            Some(key) => Ok(Some(self.key.get_or_init(|| async { key }).await)),
            None => Ok(None),
        }
    }
}

impl Service {
    /// Creates a token called `name` with `scope`, expiring `expires` after
    /// now (store clock) or never, and records it in the audit log as done
    /// by `actor`. The answer holds the only copy of its secret.
    pub async fn create_token(
        &self,
        actor: &str,
        name: &str,
        scope: Scope,
        expires: Option<Duration>,
    ) -> Result<Created, TokenError> {
        check_name(name)?;
        let key = self
            .auth
            .key(&self.store, true)
            .await?
            .expect("a created key is returned")
            .to_owned();
        let secret = Secret(format!("{TOKEN_PREFIX}{}", hex(&random_bytes()?)));
        let token = NewToken {
            name: name.to_owned(),
            scope,
            hash: keyed_hash(&key, secret.expose()),
            expires_in: expires,
        };
        let Some(token) = self.store.create_token(&token).await? else {
            return Err(TokenError::Exists {
                name: name.to_owned(),
            });
        };
        // Tokens exist now: believed without asking again.
        *lock(&self.auth.configured) = Some((true, Instant::now()));
        let entry = NewAudit {
            actor: actor.to_owned(),
            action: "token.create".into(),
            target: token.name.clone(),
            detail: json!({"scope": token.scope, "expires_at": token.expires_at}),
        };
        let warning = self.audit(&entry).await.err().map(|e| audit_warning(&e));
        Ok(Created {
            token,
            secret,
            warning,
        })
    }

    /// Every token (never a secret), by name, with the store's time.
    pub async fn tokens(&self) -> Result<Tokens, StoreError> {
        let tokens = self.store.tokens().await?;
        let now = self.store.now().await?;
        Ok(Tokens { now, tokens })
    }

    /// Revokes token `name` (it stays listed, and its name taken), and
    /// records that in the audit log as done by `actor`.
    pub async fn revoke_token(&self, actor: &str, name: &str) -> Result<Revoked, TokenError> {
        let Some((token, now)) = self.store.revoke_token(name).await? else {
            return Err(TokenError::NotFound {
                name: name.to_owned(),
            });
        };
        let already = !now;
        let entry = NewAudit {
            actor: actor.to_owned(),
            action: "token.revoke".into(),
            target: token.name.clone(),
            detail: json!({"already_revoked": already}),
        };
        let warning = self.audit(&entry).await.err().map(|e| audit_warning(&e));
        Ok(Revoked {
            token,
            already,
            warning,
        })
    }

    /// Whether any token was ever created in the store (revoked and expired
    /// ones count: revoking the last token does not open a server). Cheap
    /// enough for every request: once true it is not asked again; false is
    /// asked again after [`UNCONFIGURED_RECHECK`]. A YAML store has none.
    pub async fn tokens_configured(&self) -> Result<bool, StoreError> {
        if let Some((known, at)) = *lock(&self.auth.configured)
            && (known || at.elapsed() < UNCONFIGURED_RECHECK)
        {
            return Ok(known);
        }
        let known = self.store.any_token().await?;
        *lock(&self.auth.configured) = Some((known, Instant::now()));
        Ok(known)
    }

    /// The principal whose token `secret` is (`te_…`, without `Bearer`).
    /// Unknown, revoked and expired tokens are told apart (by kind; the
    /// message of an unknown one says nothing about which tokens exist).
    /// The stored hash is compared in constant time. A valid token's
    /// `last_used_at` is written at most once a minute by this process
    /// (and the store skips a write within a minute of another's).
    pub async fn authenticate(&self, secret: &str) -> Result<Principal, AuthError> {
        if !well_formed(secret) {
            return Err(AuthError::Malformed);
        }
        let key = match self.auth.key(&self.store, false).await {
            Ok(Some(key)) => key,
            Ok(None) => return Err(AuthError::Unknown),
            Err(TokenError::Store(e)) => return Err(AuthError::Store(e)),
            Err(_) => return Err(AuthError::Unknown),
        };
        let mac = mac(key, secret);
        let hash = hex(&mac.clone().finalize().into_bytes());
        let Some(found) = self.store.find_token(&hash).await? else {
            return Err(AuthError::Unknown);
        };
        // The index found it by equality; the comparison that decides is
        // constant-time all the same.
        let stored = unhex(&found.hash).ok_or(AuthError::Unknown)?;
        if mac.verify_slice(&stored).is_err() {
            return Err(AuthError::Unknown);
        }
        let token = found.record;
        match token.state(found.now) {
            TokenState::Revoked => return Err(AuthError::Revoked { name: token.name }),
            TokenState::Expired => return Err(AuthError::Expired { name: token.name }),
            TokenState::Active => {}
        }
        self.touch(&token.name).await;
        Ok(Principal {
            name: token.name,
            scope: token.scope,
        })
    }

    /// The check a server makes for each request, given the value of its
    /// `Authorization` header (if any) and the scope the request needs:
    ///
    /// - no token exists in the store: `Ok(None)`, anyone may pass (the
    ///   front end must then serve loopback only, and says so);
    /// - otherwise the header must be `Bearer <token>` of an active token
    ///   ([`Service::authenticate`]) whose scope is at least `needed`:
    ///   `Ok(Some(principal))`, else the [`AuthError`] (see
    ///   [`AuthError::denial`]).
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        needed: Scope,
    ) -> Result<Option<Principal>, AuthError> {
        if !self.tokens_configured().await? {
            return Ok(None);
        }
        let value = authorization.ok_or(AuthError::Missing)?.trim();
        let secret = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => return Err(AuthError::Malformed),
        };
        let principal = self.authenticate(secret).await?;
        if principal.scope < needed {
            return Err(AuthError::Forbidden {
                name: principal.name,
                scope: principal.scope,
                needed,
            });
        }
        Ok(Some(principal))
    }

    /// Appends `entry` to the audit log (at the store's time).
    pub async fn audit(&self, entry: &NewAudit) -> Result<AuditEntry, StoreError> {
        self.store.audit(entry).await
    }

    /// A page of the audit log, newest first.
    pub async fn audit_log(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
        self.store.audit_log(filter).await
    }

    /// Writes `last_used_at` unless this process did within [`TOUCH_EVERY`].
    /// Best effort: a failure is logged, the request goes on.
    async fn touch(&self, name: &str) {
        {
            let mut touched = lock(&self.auth.touched);
            if touched
                .get(name)
                .is_some_and(|at| at.elapsed() < TOUCH_EVERY)
            {
                return;
            }
            touched.insert(name.to_owned(), Instant::now());
        }
        if let Err(e) = self.store.touch_token(name).await {
            tracing::warn!(token = name, "cannot record the token's last use: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn audit_warning(e: &StoreError) -> String {
    format!("the audit log could not record this: {e}")
}

fn check_name(name: &str) -> Result<(), TokenError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(TokenError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Whether `secret` has a token's form: the prefix, then 64 lowercase hex digits.
fn well_formed(secret: &str) -> bool {
    secret.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == SECRET_BYTES * 2
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn random_bytes() -> Result<[u8; SECRET_BYTES], TokenError> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(bytes)
}

/// HMAC-SHA256 keyed with the store's key (its hex text, 256 bits).
fn mac(key: &str, secret: &str) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(secret.as_bytes());
    mac
}

/// The stored form of `secret`'s hash.
fn keyed_hash(key: &str, secret: &str) -> String {
    hex(&mac(key, secret).finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runner::Runner;
    use crate::service::ServiceConfig;
    use crate::store::{ManualClock, SqliteStore};

    fn service(dir: &tempfile::TempDir) -> (Service, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_767_225_600_000));
        let store = Store::Sqlite(SqliteStore::with_clock(
            &dir.path().join("t.db"),
            clock.clone(),
        ));
        let service = Service::new(store, Runner::default(), ServiceConfig::default());
        (service, clock)
    }

    #[tokio::test]
    async fn a_token_authenticates_until_revoked_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let (service, clock) = service(&dir);
        assert!(!service.tokens_configured().await.unwrap());
        assert_eq!(service.authorize(None, Scope::Admin).await.unwrap(), None);

        let ci = service
            .create_token("cli:test", "ci", Scope::Run, Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(ci.warning.is_none());
        let secret = ci.secret.expose();
        assert!(well_formed(secret), "{secret}");
        assert!(
            !format!("{ci:?}").contains(secret),
            "Debug hides the secret"
        );
        assert!(service.tokens_configured().await.unwrap());
        let bearer = format!("Bearer {secret}");

        let p = service
            .authorize(Some(&bearer), Scope::Run)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            Principal {
                name: "ci".into(),
                scope: Scope::Run
            }
        );
        let too_small = service
            .authorize(Some(&bearer), Scope::Admin)
            .await
            .unwrap_err();
        assert_eq!(
            (too_small.kind(), too_small.denial()),
            ("forbidden", Denial::Forbidden)
        );
        for (header, kind) in [
            (None, "missing_token"),
            (Some("Basic abc"), "malformed_token"),
            (Some("Bearer te_nothex"), "malformed_token"),
            (
                Some(&*format!("Bearer {TOKEN_PREFIX}{}", "0".repeat(64))),
                "unknown_token",
            ),
        ] {
            let e = service.authorize(header, Scope::Read).await.unwrap_err();
            assert_eq!(
                (e.kind(), e.denial()),
                (kind, Denial::Unauthenticated),
                "{header:?}"
            );
        }

        // Nothing in the store holds the secret.
        let db = std::fs::read(dir.path().join("t.db")).unwrap();
        let text = String::from_utf8_lossy(&db);
        assert!(!text.contains(&secret[TOKEN_PREFIX.len()..]));

        clock.advance(Duration::from_secs(61));
        let e = service.authenticate(secret).await.unwrap_err();
        assert_eq!(e.kind(), "expired_token");

        let admin = service
            .create_token("cli:test", "admin", Scope::Admin, None)
            .await
            .unwrap();
        let again = service
            .create_token("cli:test", "admin", Scope::Read, None)
            .await
            .unwrap_err();
        assert_eq!(again.kind(), "token_exists");
        let revoked = service.revoke_token("cli:test", "admin").await.unwrap();
        assert!(!revoked.already);
        let e = service
            .authenticate(admin.secret.expose())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "revoked_token");
        assert!(
            service
                .revoke_token("cli:test", "admin")
                .await
                .unwrap()
                .already
        );
        assert_eq!(
            service
                .revoke_token("cli:test", "nobody")
                .await
                .unwrap_err()
                .kind(),
            "unknown_token"
        );

        // Creations and revocations are audited, newest first, without secrets.
        let log = service
            .audit_log(&AuditFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let actions: Vec<(&str, &str)> = log
            .entries
            .iter()
            .map(|e| (e.action.as_str(), e.target.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("token.revoke", "admin"),
                ("token.revoke", "admin"),
                ("token.create", "admin"),
                ("token.create", "ci"),
            ]
        );
        assert!(log.entries.iter().all(|e| e.actor == "cli:test"));
        let all = serde_json::to_string(&log.entries).unwrap();
        assert!(!all.contains(&secret[TOKEN_PREFIX.len()..]));
    }

    #[tokio::test]
    async fn last_use_is_written_at_most_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let (service, clock) = service(&dir);
        let ci = service
            .create_token("cli:test", "ci", Scope::Read, None)
            .await
            .unwrap();
        let t0 = service.store.now().await.unwrap();
        service.authenticate(ci.secret.expose()).await.unwrap();
        clock.advance(Duration::from_secs(30));
        for _ in 0..20 {
            service.authenticate(ci.secret.expose()).await.unwrap();
        }
        let listed = service.tokens().await.unwrap();
        assert_eq!(listed.tokens[0].last_used_at, Some(t0));
    }

    #[test]
    fn names_are_checked_and_hex_round_trips() {
        assert!(check_name("ci-bot.1_x").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), bytes);
        assert_eq!(unhex("0"), None);
    }
}
