//! `/api/v1/openapi.json` and `/api/v1/docs`.
//!
//! The document is the one aide built from the routes, plus, at each
//! request, the bearer scheme (required once tokens exist), a path per registered task (`/api/v1/tasks/<name>/runs`) whose
//! request body is that task's input schema, so the document shows real
//! argument types. The page is ours: HTML, a script and a stylesheet served
//! from here (no CDN), under a policy that allows no inline script.

use std::sync::Arc;

use aide::openapi::{
    MediaType, OpenApi, Parameter, ReferenceOr, RequestBody, SchemaObject, SecurityRequirement,
    SecurityScheme,
};
use axum::Extension;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::layers::HTML_CSP;
use crate::routes::AppState;

/// The templated run path every task's own path is made from.
const RUNS_TEMPLATE: &str = "/api/v1/tasks/{name}/runs";

/// The document, with a path per registered task.
pub(crate) async fn openapi(
    State(s): State<AppState>,
    Extension(api): Extension<Arc<OpenApi>>,
) -> Result<Response, ApiError> {
    let tasks = s.service.tasks().await?;
    let mut api = (*api).clone();
    secure(&mut api, s.service.tokens_configured().await?);
    let template = api
        .paths
        .as_ref()
        .and_then(|p| p.paths.get(RUNS_TEMPLATE))
        .and_then(|p| match p {
            ReferenceOr::Item(item) => item.post.clone(),
            ReferenceOr::Reference { .. } => None,
        });
    if let (Some(template), Some(paths)) = (template, api.paths.as_mut()) {
        for task in &tasks {
            let mut op = template.clone();
            op.operation_id = Some(format!("submit_{}", task.name));
            op.summary = Some(format!("Queue a run of `{}`", task.name));
            op.description = task.description.clone();
            op.parameters.retain(|p| match p {
                ReferenceOr::Item(Parameter::Path { parameter_data, .. }) => {
                    parameter_data.name != "name"
                }
                _ => true,
            });
            let schema = match schemars::Schema::try_from(task.inputs.clone()) {
                Ok(s) => s,
                Err(_) => continue,
            };
            op.request_body = Some(ReferenceOr::Item(RequestBody {
                description: Some(format!("the arguments of `{}`", task.name)),
                content: [(
                    "application/json".to_owned(),
                    MediaType {
                        schema: Some(SchemaObject {
                            json_schema: schema,
                            external_docs: None,
                            example: None,
                        }),
                        ..Default::default()
                    },
                )]
                .into_iter()
                .collect(),
                required: true,
                extensions: Default::default(),
            }));
            let item = aide::openapi::PathItem {
                post: Some(op),
                ..Default::default()
            };
            paths.paths.insert(
                format!("/api/v1/tasks/{}/runs", task.name),
                ReferenceOr::Item(item),
            );
        }
    }
    Ok(([(header::CACHE_CONTROL, "no-cache")], axum::Json(api)).into_response())
}

/// Declares the bearer scheme, required on every operation once tokens
/// exist (`tokens`), optional before (the server then answers on loopback
/// without one).
fn secure(api: &mut OpenApi, tokens: bool) {
    let scheme = SecurityScheme::Http {
        scheme: "bearer".to_owned(),
        bearer_format: None,
        description: Some(
            "A token from `manage_tasks tokens create --scope read|run|admin`: `read` for \
             GET, `run` to submit, cancel and retry, `admin` for everything. 401 without \
             one (or with a revoked or expired one), 403 for a scope too small."
                .to_owned(),
        ),
        extensions: Default::default(),
    };
    api.components
        .get_or_insert_with(Default::default)
        .security_schemes
        .insert(BEARER.to_owned(), ReferenceOr::Item(scheme));
    let bearer: SecurityRequirement = [(BEARER.to_owned(), Vec::new())].into_iter().collect();
    api.security = if tokens {
        vec![bearer]
    } else {
        vec![bearer, SecurityRequirement::new()]
    };
}

/// The name of the bearer scheme in the document.
const BEARER: &str = "bearer";

/// The page.
pub(crate) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, HTML_CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("assets/docs.html"),
    )
        .into_response()
}

/// The page's script.
pub(crate) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("assets/docs.js"),
    )
        .into_response()
}

/// The page's stylesheet.
pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("assets/docs.css"),
    )
        .into_response()
}
