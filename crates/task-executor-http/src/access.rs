//! Who may do what: the one place a request is let through or refused.
//!
//! Each route needs a [`Scope`] ([`required_scope`]: `read` for GET, `run`
//! to submit, cancel or retry, `admin` for tasks and schedules). Once a
//! token exists in the store, every request needs `Authorization: Bearer
//! <token>` of at least that scope (401 without or with a bad one, 403 for a
//! scope too small), checked by the service ([`Service::authorize`]). Until
//! then every request acts as the local administrator ([`local`]), which is
//! why [`check_bind`] lets the server answer on loopback only (or anywhere
//! with `--insecure-no-auth`). The principal goes on to the route, which
//! records each write in the audit log under its name.
//!
//! [`Service::authorize`]: task_executor::service::Service::authorize

use std::net::SocketAddr;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
pub use task_executor::service::Principal;
pub use task_executor::store::Scope;

use crate::routes::AppState;

/// The principal of every request while no token exists.
pub fn local() -> Principal {
    Principal {
        name: "http:local".to_owned(),
        scope: Scope::Admin,
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

/// The middleware: refuses what the request may not do, else passes its
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
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match state.service.authorize(authorization, needed).await {
        Ok(Some(p)) => p,
        Ok(None) => local(),
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Who can reach the server, as [`check_bind`] allowed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Only this machine (a loopback address).
    Loopback,
    /// Tokens exist: anyone who can reach the address, with one.
    Tokens,
    /// Anyone who can reach the address, without authentication (`--insecure-no-auth`).
    OpenToNetwork,
}

/// Why the server refuses to start on an address.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A non-loopback address while no token exists.
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

/// Whether the API may listen on `addr`: anywhere once tokens exist
/// (`tokens`), else on loopback only, unless `insecure_no_auth`.
pub fn check_bind(
    addr: SocketAddr,
    tokens: bool,
    insecure_no_auth: bool,
) -> Result<Exposure, BindError> {
    if tokens {
        Ok(Exposure::Tokens)
    } else if addr.ip().is_loopback() {
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
        assert_eq!(check_bind(lo, false, false).unwrap(), Exposure::Loopback);
        assert_eq!(check_bind(lo6, false, false).unwrap(), Exposure::Loopback);
        assert!(matches!(
            check_bind(any, false, false),
            Err(BindError::NotLoopback { .. })
        ));
        assert_eq!(
            check_bind(any, false, true).unwrap(),
            Exposure::OpenToNetwork
        );
        // Once tokens exist, anywhere: every request needs one.
        assert_eq!(check_bind(any, true, false).unwrap(), Exposure::Tokens);
        assert_eq!(check_bind(lo, true, false).unwrap(), Exposure::Tokens);
    }
}
