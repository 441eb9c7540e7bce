//! The web page: `GET /`, a single-page app (plain HTML, CSS and a script
//! of our own, embedded here, so it needs no network) over the API of
//! `/api/v1` — tasks with a form made from each input schema, live runs,
//! history with bulk cancel and retry.
//!
//! The page and its assets hold no data, so they are served to anyone who
//! can reach the server ([`is_public`]); everything the script shows comes
//! from the API, with the token the user gives (sent as `Authorization:
//! Bearer`, a header no other site can make a browser send). The HTML goes
//! out under [`HTML_CSP`]: no inline script or style, no `eval`, so what a
//! task prints or returns can never run as code, and the script builds the
//! page with `textContent` only.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::layers::HTML_CSP;

/// Where the page's assets live.
const ASSETS: &str = "/ui/";

/// The page and its assets, on any router state.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
        .route("/ui/icon.svg", get(icon))
}

/// Whether `route` (a matched path) is the page or one of its assets, or
/// the API's documentation page and its assets, which need no token: they
/// are the same for everyone and hold no data (the document they show,
/// `openapi.json`, does need one).
pub(crate) fn is_public(route: &str) -> bool {
    route == "/" || route.starts_with(ASSETS) || DOCS_PAGE.contains(&route)
}

/// The documentation page and its assets (`docs.rs`).
const DOCS_PAGE: [&str; 3] = [
    "/api/v1/docs",
    "/api/v1/docs/docs.js",
    "/api/v1/docs/docs.css",
];

/// An asset: its type, revalidated on each load (a new build serves new files).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    let mut response = asset(
        "text/html; charset=utf-8",
        include_str!("assets/ui/index.html"),
    );
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(HTML_CSP),
    );
    response
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/ui/app.js"),
    )
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/ui/app.css"))
}

async fn icon() -> Response {
    asset("image/svg+xml", include_str!("assets/ui/icon.svg"))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str) -> (StatusCode, header::HeaderMap, String) {
        let response = routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_page_loads_only_its_own_assets() {
        let (status, headers, html) = get("/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], HTML_CSP);
        assert!(html.contains(r#"<script src="/ui/app.js" defer></script>"#));
        assert_eq!(html.matches("<script").count(), 1, "no inline script");
        assert!(!html.contains("style="), "no inline style");
        for (path, kind) in [
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
            ("/ui/icon.svg", "image/svg+xml"),
        ] {
            let (status, headers, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            let ct = headers[header::CONTENT_TYPE].to_str().unwrap();
            assert!(ct.starts_with(kind), "{path}: {ct}");
            assert!(!body.is_empty(), "{path}");
        }
    }

    #[test]
    fn only_the_page_and_its_assets_are_public() {
        assert!(is_public("/"));
        assert!(is_public("/ui/app.js"));
        assert!(is_public("/api/v1/docs"));
        assert!(!is_public("/api/v1/openapi.json"));
        assert!(!is_public("/api/v1/tasks"));
        assert!(!is_public("/metrics"));
        assert!(!is_public(""));
    }

    /// The script never parses data as HTML.
    #[test]
    fn the_script_builds_no_html_from_strings() {
        let js = include_str!("assets/ui/app.js");
        for refused in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.contains(refused), "app.js uses {refused}");
        }
    }
}
