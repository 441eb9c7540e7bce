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
//! records each write in the audit log under its name. The web page and its
//! assets (`ui::is_public`) need no token: they hold no data.
//!
//! Writes from another site's page are refused (403 `cross_origin`) before
//! any of that ([`cross_origin`]): while no token exists, a page on any site
//! could otherwise make the visitor's browser cancel or queue runs on a
//! loopback server.
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
    if let Some(why) = cross_origin(&req) {
        return crate::error::ApiError::status(
            axum::http::StatusCode::FORBIDDEN,
            "cross_origin",
            why,
        )
        .into_response();
    }
    if crate::ui::is_public(&route) {
        return next.run(req).await;
    }
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

/// Why a write is refused as coming from another site's page, if it is.
///
/// Browsers say where a request comes from, and nothing else does: a write
/// (any method but GET, HEAD and OPTIONS) whose `Sec-Fetch-Site` is neither
/// `same-origin` nor `none` (typed by the user) is refused; without that
/// header (older browsers), one whose `Origin` names another host than the
/// request's `Host`. A request with neither is not a browser's (curl, a
/// script) and passes. The same rule as Go's `http.CrossOriginProtection`.
pub fn cross_origin(req: &Request) -> Option<String> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => None,
            other => Some(format!(
                "refusing a {} from another site's page (Sec-Fetch-Site: {}): \
                 writes are accepted from this server's own pages and from programs",
                req.method(),
                String::from_utf8_lossy(other)
            )),
        };
    }
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        return None;
    }
    Some(format!(
        "refusing a {} from the page of another origin (`Origin: {origin}`, `Host: {host}`): \
         writes are accepted from this server's own pages and from programs",
        req.method()
    ))
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

    fn request(method: Method, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder()
            .method(method)
            .uri("/api/v1/runs/x/cancel");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn writes_from_other_sites_are_refused() {
        let host = ("host", "127.0.0.1:8080");
        // Programs send neither header; reads are always fine.
        assert!(cross_origin(&request(Method::POST, &[host])).is_none());
        assert!(
            cross_origin(&request(
                Method::GET,
                &[host, ("sec-fetch-site", "cross-site")]
            ))
            .is_none()
        );
        for ok in ["same-origin", "none"] {
            let r = request(Method::POST, &[host, ("sec-fetch-site", ok)]);
            assert!(cross_origin(&r).is_none(), "{ok}");
        }
        for bad in ["cross-site", "same-site"] {
            let r = request(Method::POST, &[host, ("sec-fetch-site", bad)]);
            assert!(cross_origin(&r).unwrap().contains(bad), "{bad}");
        }
        // Without Sec-Fetch-Site, the Origin's host must be the Host.
        let same = request(Method::DELETE, &[host, ("origin", "http://127.0.0.1:8080")]);
        assert!(cross_origin(&same).is_none());
        let other = request(Method::POST, &[host, ("origin", "https://evil.example")]);
        assert!(cross_origin(&other).unwrap().contains("evil.example"));
        let null = request(Method::POST, &[host, ("origin", "null")]);
        assert!(cross_origin(&null).is_some());
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
