//! The HTTP transport's front door: every request passes these checks, in
//! this order, before rmcp sees it.
//!
//! 1. **Host** (DNS rebinding): the `Host` header must name the server as
//!    it was bound — `localhost`, `127.0.0.1` or `[::1]`, the bound address
//!    when it is a specific one, or an `--allowed-host` — with the bound
//!    port; else HTTP 421.
//! 2. **Origin** (cross-site requests from browsers): when present it must
//!    be the served origin, `http://` and that same host and port; else 403.
//! 3. **Peers** while no token exists: loopback clients only (a server
//!    bound to a public address without tokens refuses to start unless
//!    `--insecure-no-auth`, which lifts this check); else 403.
//! 4. **Token**: once any token exists in the store, `Authorization: Bearer`
//!    with scope `run` for a `tools/call`, `read` for anything else
//!    ([`Service::authorize`]); 401 without a valid token, 403 when its
//!    scope is too small. The principal rides in the request's extensions
//!    to the handler, which audits `tools/call` under its name.
//! 5. **Sessions**: an `initialize` while [`max_sessions`](crate::HttpOptions)
//!    sessions are open is refused with 503; initializes are checked one at
//!    a time, so the cap is never passed.
//!
//! Each refusal is a JSON-RPC error body (`id: null`) with its HTTP status;
//! the codes are in [`codes`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{Method, Request, Response, StatusCode, header, uri::Authority};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::{Value, json};
use task_executor::service::{AuthError, Denial, Service};
use task_executor::store::Scope;

use crate::malformed::MAX_BODY;

/// The JSON-RPC error codes of the HTTP transport's refusals.
pub mod codes {
    /// No valid token (HTTP 401).
    pub const UNAUTHENTICATED: i32 = -32001;
    /// Refused: a token's scope too small, a foreign `Origin`, a
    /// non-loopback client without tokens (HTTP 403).
    pub const FORBIDDEN: i32 = -32003;
    /// The `Host` header does not name this server (HTTP 421).
    pub const MISDIRECTED: i32 = -32004;
    /// Too many sessions open (HTTP 503), or the store could not check a token.
    pub const UNAVAILABLE: i32 = -32005;
    /// Too many tool calls waiting for a run slot (a JSON-RPC error of the call).
    pub const BUSY: i32 = -32006;
}

/// What the checks need, shared by every request.
pub(crate) struct Guard {
    pub(crate) service: Service,
    /// The authorities `Host` may name.
    pub(crate) hosts: Vec<Authority>,
    /// Serve non-loopback clients without tokens (`--insecure-no-auth`).
    pub(crate) insecure_no_auth: bool,
    pub(crate) sessions: Arc<LocalSessionManager>,
    pub(crate) max_sessions: usize,
    /// Held while an `initialize` is checked and served.
    pub(crate) initializing: tokio::sync::Mutex<()>,
}

impl Guard {
    /// The authorities a server bound at `bound` answers to, plus `extra`
    /// (`HOST` or `HOST:PORT`; without a port, the bound one).
    pub(crate) fn hosts(bound: SocketAddr, extra: &[String]) -> Result<Vec<Authority>, String> {
        let port = bound.port();
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()];
        let ip = bound.ip();
        if !ip.is_unspecified() && !ip.is_loopback() {
            names.push(match ip {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                std::net::IpAddr::V4(v4) => v4.to_string(),
            });
        }
        let mut out = Vec::new();
        for name in names.iter().chain(extra) {
            let name = name.trim();
            let parsed = Authority::try_from(name)
                .map_err(|e| format!("`--allowed-host {name}` is not a host name: {e}"))?;
            let with_port = match parsed.port_u16() {
                Some(_) => parsed,
                None => Authority::try_from(format!("{name}:{port}"))
                    .map_err(|e| format!("`--allowed-host {name}` is not a host name: {e}"))?,
            };
            out.push(with_port);
        }
        Ok(out)
    }
}

/// Host and port, normalised: lowercase, no brackets, port 80 when absent.
fn key(a: &Authority) -> (String, u16) {
    let host = a.host().trim_matches(['[', ']']).to_ascii_lowercase();
    (host, a.port_u16().unwrap_or(80))
}

/// The checks (see the module docs), then the rest of the stack.
pub(crate) async fn check(
    State(guard): State<Arc<Guard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
    next: axum::middleware::Next,
) -> Response<Body> {
    let host = match host_of(&request) {
        Some(h) if guard.hosts.iter().any(|a| key(a) == key(&h)) => h,
        Some(h) => {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                codes::MISDIRECTED,
                format!(
                    "this server does not serve host `{h}` (a DNS-rebinding defence); connect \
                     through localhost or the address it was bound to, or start it with \
                     --allowed-host {}",
                    h.host()
                ),
            );
        }
        None => {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                codes::MISDIRECTED,
                "the request names no host (send a `Host` header)".into(),
            );
        }
    };
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://"))
            .and_then(|o| Authority::try_from(o).ok())
            .is_some_and(|o| key(&o) == key(&host));
        if !same {
            return refuse(
                StatusCode::FORBIDDEN,
                codes::FORBIDDEN,
                format!(
                    "cross-origin requests are refused: `Origin` must be http://{host} (got `{}`)",
                    String::from_utf8_lossy(origin.as_bytes())
                ),
            );
        }
    }
    let configured = match guard.service.tokens_configured().await {
        Ok(c) => c,
        Err(e) => return denied(&AuthError::Store(e)),
    };
    if !configured && !guard.insecure_no_auth && !peer.ip().to_canonical().is_loopback() {
        return refuse(
            StatusCode::FORBIDDEN,
            codes::FORBIDDEN,
            "no API token exists in the store, so only loopback clients are served; create one \
             with `manage_tasks tokens create --name NAME --scope run`"
                .into(),
        );
    }

    // A POST's body says what it asks for: read it once, pass it on.
    let (parts, body) = request.into_parts();
    let bytes = if parts.method == Method::POST {
        match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(e) => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    -32600,
                    format!("the request body exceeds {MAX_BODY} bytes ({e})"),
                );
            }
        }
    } else {
        Bytes::new()
    };
    let methods = methods(&bytes);
    let needed = if methods.iter().any(|m| m == "tools/call") {
        Scope::Run
    } else {
        Scope::Read
    };
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match guard.service.authorize(authorization, needed).await {
        Ok(p) => p,
        Err(e) => return denied(&e),
    };
    let mut request = Request::from_parts(parts, Body::from(bytes));
    if let Some(p) = principal {
        request.extensions_mut().insert(p);
    }
    let initialize = methods.iter().any(|m| m == "initialize")
        && !request.headers().contains_key("mcp-session-id");
    if !initialize {
        return next.run(request).await;
    }
    let _one_at_a_time = guard.initializing.lock().await;
    let open = guard.sessions.sessions.read().await.len();
    if open >= guard.max_sessions {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            format!(
                "too many MCP sessions are open ({open}, the --max-sessions cap); close one \
                 (HTTP DELETE with its Mcp-Session-Id), wait for idle ones to expire, or try \
                 again later"
            ),
        );
    }
    next.run(request).await
}

/// The host the request names: its `Host` header, else its URI's authority.
fn host_of(request: &Request<Body>) -> Option<Authority> {
    match request.headers().get(header::HOST) {
        Some(h) => Authority::try_from(h.to_str().ok()?).ok(),
        None => request.uri().authority().cloned(),
    }
}

/// The JSON-RPC methods a body asks for (a message, or a batch of them).
fn methods(bytes: &Bytes) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return Vec::new();
    };
    let one = |m: &Value| m.get("method").and_then(Value::as_str).map(str::to_owned);
    match &v {
        Value::Array(items) => items.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    }
}

fn denied(e: &AuthError) -> Response<Body> {
    let (status, code) = match e.denial() {
        Denial::Unauthenticated => (StatusCode::UNAUTHORIZED, codes::UNAUTHENTICATED),
        Denial::Forbidden => (StatusCode::FORBIDDEN, codes::FORBIDDEN),
        Denial::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE),
    };
    let mut response = refuse(status, code, e.to_string());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
        .headers_mut()
        .insert("x-error-kind", header::HeaderValue::from_static(e.kind()));
    response
}

fn refuse(status: StatusCode, code: i32, message: String) -> Response<Body> {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_carry_the_bound_port_and_match_normalised() {
        let bound: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let hosts = Guard::hosts(bound, &["mcp.example:443".into(), "box".into()]).unwrap();
        let allowed = |h: &str| {
            let a = Authority::try_from(h).unwrap();
            hosts.iter().any(|x| key(x) == key(&a))
        };
        for ok in [
            "localhost:8080",
            "LOCALHOST:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "10.1.2.3:8080",
            "mcp.example:443",
            "box:8080",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for bad in [
            "localhost",
            "localhost:8081",
            "evil.example:8080",
            "10.1.2.4:8080",
        ] {
            assert!(!allowed(bad), "{bad}");
        }
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let hosts = Guard::hosts(any, &[]).unwrap();
        assert!(hosts.iter().any(|x| key(x) == ("localhost".into(), 80)));
        assert!(!hosts.iter().any(|x| x.host() == "0.0.0.0"));
        assert!(Guard::hosts(any, &["bad host".into()]).is_err());
    }

    #[test]
    fn the_methods_of_a_body_are_read_from_messages_and_batches() {
        let m = |s: &str| methods(&Bytes::from(s.to_owned()));
        assert_eq!(
            m(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#),
            ["tools/call"]
        );
        assert_eq!(
            m(r#"[{"method":"tools/list"},{"method":"tools/call"}]"#),
            ["tools/list", "tools/call"]
        );
        assert!(m("not json").is_empty());
    }
}
