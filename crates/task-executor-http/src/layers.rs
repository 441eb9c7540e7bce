//! What wraps every route: the body limit, timeouts, security headers, the
//! catch-panic answer, errors of outer layers turned into the API's JSON
//! shape, and the count of requests for `/metrics`.

use std::any::Any;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use crate::error::{ApiError, kind_of_status};
use crate::metrics::HttpLabels;
use crate::routes::AppState;
use crate::server::Limits;

/// The policy of HTML pages: our own script and style only, nothing inline,
/// no frames, no forms posting elsewhere.
pub const HTML_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// For everything else: nothing may be loaded or framed.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Wraps `router` in every layer.
pub fn wrap(router: Router<AppState>, state: AppState, limits: &Limits) -> Router {
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::access::authorize,
        ))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limits.max_body))
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        // Inside the header layers, so a 500 from a panic carries them too.
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn(uniform_errors))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_CSP),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// The last resort: a route that panicked answers 500 in our shape.
fn panicked(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed on this request; it has been logged",
    )
    .into_response()
}

/// The largest error body of an outer layer that is kept as the message.
const MESSAGE_LIMIT: usize = 4096;

/// An error answer that is not JSON (axum's 404 and 405, the timeout's 408,
/// the body limit's 413) becomes `{"error": {kind, message}}`.
async fn uniform_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MESSAGE_LIMIT).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => default_message(status).to_owned(),
    };
    let mut fixed = ApiError::status(status, kind_of_status(status), text).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            fixed.headers_mut().insert(name, v.clone());
        }
    }
    fixed
}

fn default_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "no such route; /api/v1/docs lists them",
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method (see `Allow`)",
        StatusCode::REQUEST_TIMEOUT => "the request took too long",
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is larger than the server accepts (`serve --max-body`)"
        }
        _ => "the request failed",
    }
}

/// Counts each answered request by route, method and status.
async fn count(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Only the methods HTTP defines: a label per invented method would let
    // clients grow the metrics without bound.
    let method = match *req.method() {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::OPTIONS
        | Method::TRACE
        | Method::CONNECT => req.method().to_string(),
        _ => "other".to_owned(),
    };
    let response = next.run(req).await;
    state.metrics.request(HttpLabels {
        route,
        method,
        status: response.status().as_u16(),
    });
    response
}

/// A duration as `30s`, for messages.
pub fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use task_executor::service::Service;
    use task_executor::{Runner, StoreSpec};
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::Metrics;
    use crate::routes::Shared;

    /// A handler that panics still answers: 500 in the API's shape, with the
    /// headers every response carries.
    #[tokio::test]
    async fn a_panicking_handler_answers_500_json() {
        let dir = tempfile::tempdir().unwrap();
        let service = Service::open(
            &StoreSpec::Sqlite(dir.path().join("t.db")),
            Runner::default(),
        );
        let (changes, _) = tokio::sync::broadcast::channel(4);
        let state = AppState::from(Shared {
            service,
            caller: "test".into(),
            limits: Limits::default(),
            metrics: Arc::new(Metrics::new()),
            changes,
            shutdown: CancellationToken::new(),
        });
        let router: Router<AppState> = Router::new().route(
            "/boom",
            axum::routing::get(|| async {
                let nothing = std::hint::black_box(None::<String>);
                nothing.expect("a bug in a handler")
            }),
        );
        let app = wrap(router, state, &Limits::default());
        let response = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["error"]["kind"], "internal");
    }
}
