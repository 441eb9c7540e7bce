//! Who may do what: the one place a request is let through or refused.
//!
//! Each route needs a [`Scope`] ([`required_scope`]: `read` for GET, `run`
//! to submit, cancel or retry, `admin` for tasks and schedules). The
//! [`Access`] policy turns a request into a [`Principal`] or a refusal.
//! Until tokens exist there is one policy, [`Access::Open`]: every request
//! is the local administrator, which is why [`check_bind`] lets the server
//! answer on loopback only (or anywhere with `--insecure-no-auth`). A token
//! policy (`Authorization: Bearer …` → principal, 401 without, 403 for a
//! scope too small) is a new variant here and nothing elsewhere.

use std::net::SocketAddr;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::routes::AppState;

/// What a principal may do; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read anything (GET).
    Read,
    /// Also submit, cancel and retry runs.
    Run,
    /// Also register and unregister tasks, add and remove schedules.
    Admin,
}

impl Scope {
    /// Its name: `read`, `run` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Run => "run",
            Scope::Admin => "admin",
        }
    }
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name recorded for its writes.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Access {
    /// No tokens are configured: every request acts as the local
    /// administrator. Safe only where only this machine can connect.
    Open,
}

impl Access {
    /// The principal of a request with these headers, or why it is refused.
    fn principal(
        &self,
        _headers: &axum::http::HeaderMap,
    ) -> Result<Principal, crate::error::ApiError> {
        match self {
            Access::Open => Ok(Principal {
                name: "local".to_owned(),
                scope: Scope::Admin,
            }),
        }
    }
}

/// The scope a request to `route` (its matched path) with `method` needs.
pub fn required_scope(method: &Method, route: &str) -> Scope {
    if method == Method::GET || method == Method::HEAD {
        return Scope::Read;
    }
    let run_write =
        route.ends_with("/runs") || route.ends_with("/cancel") || route.ends_with("/retry");
    if run_write && route != "/api/v1/tasks" {
        Scope::Run
    } else {
        Scope::Admin
    }
}

/// The middleware: refuses what the principal may not do, else passes the
/// principal on to the route (as a request extension).
pub(crate) async fn authorize(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let needed = required_scope(req.method(), &route);
    let principal = match state.access.principal(req.headers()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if principal.scope < needed {
        return crate::error::ApiError::forbidden(&principal, needed).into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Who can reach the server, as [`check_bind`] allowed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Only this machine (a loopback address).
    Loopback,
    /// Anyone who can reach the address, without authentication (`--insecure-no-auth`).
    OpenToNetwork,
}

/// Why the server refuses to start on an address.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A non-loopback address while no tokens are configured.
    #[error(
        "refusing to serve on `{addr}`: no API tokens are configured, so anyone who can reach \
         it could register and run tasks; listen on a loopback address (127.0.0.1:PORT, \
         [::1]:PORT), or pass --insecure-no-auth to serve without authentication anyway"
    )]
    NotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
}

impl BindError {
    /// The stable kind front ends show.
    pub fn kind(&self) -> &'static str {
        "not_loopback"
    }
}

/// Whether the API may listen on `addr`: without tokens, on loopback only,
/// unless `insecure_no_auth`.
pub fn check_bind(addr: SocketAddr, insecure_no_auth: bool) -> Result<Exposure, BindError> {
    if addr.ip().is_loopback() {
        Ok(Exposure::Loopback)
    } else if insecure_no_auth {
        Ok(Exposure::OpenToNetwork)
    } else {
        Err(BindError::NotLoopback { addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_routes() {
        assert_eq!(required_scope(&Method::GET, "/api/v1/runs"), Scope::Read);
        assert_eq!(
            required_scope(&Method::POST, "/api/v1/tasks/{name}/runs"),
            Scope::Run
        );
        assert_eq!(
            required_scope(&Method::POST, "/api/v1/runs/{id}/cancel"),
            Scope::Run
        );
        assert_eq!(
            required_scope(&Method::POST, "/api/v1/runs/{id}/retry"),
            Scope::Run
        );
        assert_eq!(required_scope(&Method::POST, "/api/v1/tasks"), Scope::Admin);
        assert_eq!(
            required_scope(&Method::DELETE, "/api/v1/tasks/{name}"),
            Scope::Admin
        );
        assert_eq!(
            required_scope(&Method::POST, "/api/v1/schedules"),
            Scope::Admin
        );
        assert_eq!(
            required_scope(&Method::DELETE, "/api/v1/schedules/{id}"),
            Scope::Admin
        );
    }

    #[test]
    fn only_loopback_without_tokens() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(check_bind(lo, false).unwrap(), Exposure::Loopback);
        assert_eq!(check_bind(lo6, false).unwrap(), Exposure::Loopback);
        assert!(matches!(
            check_bind(any, false),
            Err(BindError::NotLoopback { .. })
        ));
        assert_eq!(check_bind(any, true).unwrap(), Exposure::OpenToNetwork);
    }
}
