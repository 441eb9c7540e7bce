//! The one error shape of the API, `{"error": {kind, message, violations?}}`
//! ([`task_executor::view::ErrorDoc`]), and the HTTP status each kind gets.
//! `kind` is the service error's stable `kind()`, the same `--json` shows.

use aide::OperationOutput;
use aide::generate::GenContext;
use aide::openapi::{Operation, Response as ApiResponse};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use task_executor::schema::Violation;
use task_executor::service::{
    AuthError, Denial, LookupError, PrepareError, RetryError, ScheduleError, SubmitError,
    TaskError, register_kind, store_kind,
};
use task_executor::view::{ErrorDoc, ErrorView};
use task_executor::{RegisterError, StoreError};

/// An error answer: a status and the error view.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    view: ErrorView,
    /// A 401: answer with `WWW-Authenticate: Bearer`.
    bearer: bool,
}

/// The status of an error of `kind`; `transient` for store errors that may pass.
pub fn status_of(kind: &str, transient: bool) -> StatusCode {
    match kind {
        "unknown_task" | "unknown_run" | "unknown_schedule" | "not_found" => StatusCode::NOT_FOUND,
        "invalid_args" | "invalid_schema" | "invalid_cron" | "discovery" | "usage"
        | "invalid_body" => StatusCode::UNPROCESSABLE_ENTITY,
        "duplicate_task" | "conflict" | "run_active" | "args_unavailable" | "unusable_task"
        | "location" => StatusCode::CONFLICT,
        "ambiguous_run" | "bad_request" | "bad_json" => StatusCode::BAD_REQUEST,
        "unsupported_media_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "body_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "timeout" => StatusCode::REQUEST_TIMEOUT,
        "unauthorized" => StatusCode::UNAUTHORIZED,
        "forbidden" => StatusCode::FORBIDDEN,
        "unsupported" => StatusCode::NOT_IMPLEMENTED,
        "store" if transient => StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The kind of a bare HTTP status an outer layer answered with.
pub fn kind_of_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

impl ApiError {
    /// An error of `kind` with its status.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self::with(kind, message.into(), &[], false)
    }

    pub fn set_violations(&mut self, violations: Vec<Violation>) {
        self.view.violations = violations;
    }

    fn with(kind: &str, message: String, violations: &[Violation], transient: bool) -> Self {
        Self {
            bearer: false,
            status: status_of(kind, transient),
            view: ErrorView {
                kind: kind.to_owned(),
                message,
                violations: violations.to_vec(),
            },
        }
    }

    /// An error with an explicit status (outer layers' answers).
    pub fn status(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            view: ErrorView::new(kind, message),
            bearer: false,
        }
    }

    /// A 400 for a bad query parameter or path segment.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new("bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let bearer = self.bearer;
        let mut response = (self.status, Json(ErrorDoc { error: self.view })).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if bearer {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl OperationOutput for ApiError {
    type Inner = ErrorDoc;

    fn operation_response(ctx: &mut GenContext, operation: &mut Operation) -> Option<ApiResponse> {
        let mut r = Json::<ErrorDoc>::operation_response(ctx, operation)?;
        r.description = "an error: `kind` names it (see docs/json.md), `violations` point \
                         into the request body"
            .to_owned();
        Some(r)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<u16>, ApiResponse)> {
        Self::operation_response(ctx, operation)
            .map(|r| vec![(None, r)])
            .unwrap_or_default()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let transient = e.is_transient();
        Self::with(store_kind(&e), e.to_string(), &[], transient)
    }
}

/// The transient flag of the store error inside a service error, if any.
fn transient(e: Option<&StoreError>) -> bool {
    e.is_some_and(StoreError::is_transient)
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        let t = transient(match &e {
            TaskError::Store(s) => Some(s),
            _ => None,
        });
        Self::with(e.kind(), e.to_string(), &[], t)
    }
}

impl From<PrepareError> for ApiError {
    fn from(e: PrepareError) -> Self {
        let t = transient(match &e {
            PrepareError::Store(s) => Some(s),
            _ => None,
        });
        Self::with(e.kind(), e.to_string(), e.violations(), t)
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            // One run per request: its index says nothing.
            SubmitError::InvalidArgs { source, .. } => source.into(),
            SubmitError::Store(s) => s.into(),
        }
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        let t = transient(match &e {
            LookupError::Store(s) => Some(s),
            _ => None,
        });
        Self::with(e.kind(), e.to_string(), &[], t)
    }
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Prepare(p) => p.into(),
            ScheduleError::Store(s) => s.into(),
            other => Self::with(other.kind(), other.to_string(), &[], false),
        }
    }
}

impl From<RetryError> for ApiError {
    fn from(e: RetryError) -> Self {
        match e {
            RetryError::Lookup(l) => l.into(),
            RetryError::Prepare(p) => p.into(),
            RetryError::Submit(s) => s.into(),
            other => Self::with(other.kind(), other.to_string(), other.violations(), false),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match (&e, e.denial()) {
            (AuthError::Store(s), _) if s.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            (AuthError::Store(_), _) => StatusCode::INTERNAL_SERVER_ERROR,
            (_, Denial::Unauthenticated) => StatusCode::UNAUTHORIZED,
            (_, Denial::Forbidden) => StatusCode::FORBIDDEN,
            (_, Denial::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = Self::status(status, e.kind(), e.to_string());
        response.bearer = status == StatusCode::UNAUTHORIZED;
        response
    }
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::Store(s) => s.into(),
            other => Self::with(register_kind(&other), other.to_string(), &[], false),
        }
    }
}
