//! Request extractors whose rejections are API errors: a JSON body (400 for
//! malformed JSON, 415 without `Content-Type: application/json`, 413 past
//! the body limit, 422 for a body of the wrong shape) and query parameters
//! (400), plus the headers the log stream reads.

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::Operation;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    let text = e.body_text();
    match e {
        JsonRejection::JsonSyntaxError(_) => ApiError::new("bad_json", text),
        JsonRejection::JsonDataError(_) => ApiError::new("invalid_body", text),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            "unsupported_media_type",
            "the request body must be JSON, sent with `Content-Type: application/json`",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            "body_too_large",
            "the request body is larger than the server accepts (`serve --max-body`)",
        ),
        other => ApiError::status(other.status(), "bad_request", text),
    }
}

impl<T: JsonSchema> OperationInput for JsonBody<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::Json::<T>::operation_input(ctx, operation);
    }
}

/// Query parameters.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn query_rejection(e: QueryRejection) -> ApiError {
    ApiError::bad_request(e.body_text())
}

impl<T: JsonSchema> OperationInput for QueryParams<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::extract::Query::<T>::operation_input(ctx, operation);
    }
}

/// What the client accepts and where it resumes: `Accept:
/// text/event-stream` asks for a stream, `Last-Event-ID` resumes one.
#[derive(Debug, Clone, Default)]
pub struct StreamHeaders {
    /// Whether `Accept` names `text/event-stream`.
    pub wants_stream: bool,
    /// The `Last-Event-ID` header, if sent.
    pub last_event_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for StreamHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let wants_stream = parts
            .headers
            .get_all(axum::http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().starts_with("text/event-stream"))
            });
        let last_event_id = match parts.headers.get("last-event-id") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| ApiError::bad_request("`Last-Event-ID` is not ASCII text"))?
                    .trim()
                    .to_owned(),
            ),
        };
        Ok(Self {
            wants_stream,
            last_event_id,
        })
    }
}

impl OperationInput for StreamHeaders {}
