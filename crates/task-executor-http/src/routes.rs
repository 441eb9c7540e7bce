//! The routes of `/api/v1`, each documented where it is declared (aide
//! builds the OpenAPI document from these declarations and the handlers'
//! types). A handler parses, calls the service once or twice, and renders
//! the library's view; nothing here decides how a run goes.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aide::OperationOutput;
use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, post_with};
use aide::openapi::OpenApi;
use aide::transform::TransformOperation;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use task_executor::history::{Cursor, RunFilter, RunRecord, RunState, now_ms, to_ms};
use task_executor::schema::Violation;
use task_executor::service::{LogEvent, LogPosition, Registration, Service, SubmitOptions};
use task_executor::store::NewAudit;
use task_executor::view::{
    CancelView, ListView, LogLineView, RunView, ScheduleView, TaskView, WorkerView,
};
use task_executor::{Formats, StoreError, TaskName};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::access::Principal;
use crate::body::{JsonBody, QueryParams, StreamHeaders};
use crate::error::ApiError;
use crate::layers::human;
use crate::metrics::Metrics;
use crate::server::{HttpConfig, Limits};

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    pub service: Service,
    pub caller: String,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub changes: broadcast::Sender<Arc<RunRecord>>,
    pub shutdown: CancellationToken,
}

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The caller recorded on a run `principal` queues: the server's
    /// (`--caller`) while no token exists, else `<caller>:<token name>`.
    fn caller_for(&self, principal: &Principal) -> String {
        if *principal == crate::access::local() {
            self.caller.clone()
        } else {
            format!("{}:{}", self.caller, principal.name)
        }
    }

    /// Records a write in the audit log before it is made: a write the log
    /// cannot record is not made (a YAML store keeps no log).
    async fn audit(
        &self,
        principal: &Principal,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<(), ApiError> {
        let entry = NewAudit {
            actor: principal.name.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
        };
        match self.service.audit(&entry).await {
            Ok(_) | Err(StoreError::Unsupported { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// An answer: a status and a JSON body (or a stream).
pub(crate) struct Reply(Response);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        self.0
    }
}

impl OperationOutput for Reply {
    type Inner = ();
}

fn reply(status: StatusCode, body: &impl Serialize) -> Reply {
    Reply((status, Json(body)).into_response())
}

type ApiResult = Result<Reply, ApiError>;

/// The API's router, documented; `metrics` and `changes` are shared with the watcher.
pub(crate) fn router(
    config: HttpConfig,
    metrics: Arc<Metrics>,
    changes: broadcast::Sender<Arc<RunRecord>>,
    shutdown: CancellationToken,
) -> axum::Router {
    let limits = config.limits.clone();
    let state = AppState(Arc::new(Shared {
        service: config.service,
        caller: config.caller,
        limits: config.limits,
        metrics,
        changes,
        shutdown,
    }));
    aide::generate::infer_responses(true);
    aide::generate::extract_schemas(true);
    aide::generate::on_error(|e| tracing::warn!("openapi: {e}"));
    let mut api = OpenApi::default();
    let documented = ApiRouter::<AppState>::new()
        .api_route(
            "/api/v1/tasks",
            get_with(list_tasks, |op| {
                op.summary("List the registered tasks")
                    .tag("tasks")
                    .response::<200, Json<ListView<TaskView<'static>>>>()
            })
            .post_with(register, |op| {
                op.summary("Register a task (as `manage_tasks register`)")
                    .description(
                        "Runs `<location> schema` on the server's machine, checks what it \
                         declares and stores the task. 409 `duplicate_task` when the name is \
                         taken (unless `replace`), 422 `discovery` or `invalid_schema` when the \
                         executable does not describe itself well.",
                    )
                    .tag("tasks")
                    .response::<201, Json<TaskView<'static>>>()
            }),
        )
        .api_route(
            "/api/v1/tasks/{name}",
            get_with(get_task, |op| {
                op.summary("Show a task")
                    .tag("tasks")
                    .response::<200, Json<TaskView<'static>>>()
            })
            .delete_with(unregister, |op| {
                op.summary("Unregister a task and remove its schedules")
                    .tag("tasks")
                    .response_with::<204, (), _>(|r| r.description("removed"))
            }),
        )
        .api_route("/api/v1/tasks/{name}/runs", post_with(submit, submit_docs))
        .api_route(
            "/api/v1/runs",
            get_with(list_runs, |op| {
                op.summary("List runs, newest first (keyset pagination with `after`)")
                    .tag("runs")
                    .response::<200, Json<ListView<RunView<'static>>>>()
            }),
        )
        .api_route(
            "/api/v1/runs/{id}",
            get_with(get_run, |op| {
                op.summary("Show a run (by id, or a unique prefix of at least 8 characters)")
                    .tag("runs")
                    .response::<200, Json<RunView<'static>>>()
            }),
        )
        .api_route(
            "/api/v1/runs/{id}/cancel",
            post_with(cancel, |op| {
                op.summary(
                    "Cancel a run: a queued one at once, a running one at its next heartbeat",
                )
                .tag("runs")
                .response::<200, Json<CancelView<'static>>>()
            }),
        )
        .api_route(
            "/api/v1/runs/{id}/retry",
            post_with(retry, |op| {
                op.summary("Queue a new run with the same arguments as an ended run")
                    .description(
                        "409 `run_active` if the run has not ended; 409 `args_unavailable` \
                         if its arguments held secret fields (history keeps them masked and \
                         drops the secrets when a run ends).",
                    )
                    .tag("runs")
                    .response::<202, Json<RunView<'static>>>()
            }),
        )
        .api_route("/api/v1/runs/{id}/logs", get_with(logs, logs_docs))
        .api_route(
            "/api/v1/events",
            get_with(events, |op| {
                op.summary("Every run's state changes, as server-sent events")
                    .description(
                        "`text/event-stream`: a `run` event (data: the run) each time a run's \
                         state, attempt or cancel request changes, read from the store (so \
                         every server on one database sees every change); `lagged` when the \
                         client fell behind.",
                    )
                    .tag("runs")
                    .response_with::<200, String, _>(|r| {
                        r.description("an event stream (`text/event-stream`)")
                    })
            }),
        )
        .api_route(
            "/api/v1/schedules",
            get_with(list_schedules, |op| {
                op.summary("List cron schedules")
                    .tag("schedules")
                    .response::<200, Json<ListView<ScheduleView<'static>>>>()
            })
            .post_with(add_schedule, |op| {
                op.summary("Add a cron schedule (UTC) queueing a run at each tick")
                    .tag("schedules")
                    .response::<201, Json<ScheduleView<'static>>>()
            }),
        )
        .api_route(
            "/api/v1/schedules/{id}",
            delete_with(remove_schedule, |op| {
                op.summary("Remove a schedule")
                    .tag("schedules")
                    .response_with::<204, (), _>(|r| r.description("removed"))
            }),
        )
        .api_route(
            "/api/v1/workers",
            get_with(list_workers, |op| {
                op.summary("List the workers registered in the store, live or gone")
                    .tag("workers")
                    .response::<200, Json<ListView<WorkerView<'static>>>>()
            }),
        );
    let router = documented.finish_api_with(&mut api, |t| {
        t.title("task-executor")
            .version(env!("CARGO_PKG_VERSION"))
            .description(
                "Typed tasks over HTTP: register executables, queue runs with JSON \
                 arguments checked against each task's input schema, follow their logs. \
                 Errors are `{\"error\": {kind, message, violations?}}`.",
            )
    });
    let router = router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(crate::docs::openapi),
        )
        .route("/api/v1/docs", axum::routing::get(crate::docs::page))
        .route(
            "/api/v1/docs/docs.js",
            axum::routing::get(crate::docs::script),
        )
        .route(
            "/api/v1/docs/docs.css",
            axum::routing::get(crate::docs::style),
        )
        .merge(crate::ui::routes())
        .route("/metrics", axum::routing::get(metrics_page))
        .layer(Extension(Arc::new(api)));
    crate::layers::wrap(router, state, &limits)
}

#[derive(Deserialize, JsonSchema)]
pub(crate) struct NamePath {
    /// The task's name.
    name: String,
}

#[derive(Deserialize, JsonSchema)]
pub(crate) struct IdPath {
    /// The run's (or schedule's) id; for runs, a unique prefix of at least 8 characters too.
    id: String,
}

fn task_name(raw: &str) -> Result<TaskName, ApiError> {
    TaskName::new(raw).map_err(|e| {
        ApiError::new(
            "unknown_task",
            format!("task `{raw}` is not registered (no task can have that name: {e})"),
        )
    })
}

/// A duration in a request (`30s`, `1m`), at least 1 ms.
fn duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration: {e} (examples: 500ms, 10s, 2m)"))?;
    if d < Duration::from_millis(1) {
        return Err(format!("`{text}` is shorter than 1ms"));
    }
    Ok(d)
}

async fn list_tasks(State(s): State<AppState>) -> ApiResult {
    let tasks = s.service.tasks().await?;
    Ok(reply(
        StatusCode::OK,
        &ListView::all(tasks.iter().map(TaskView::from).collect()),
    ))
}

async fn get_task(State(s): State<AppState>, Path(p): Path<NamePath>) -> ApiResult {
    let task = s.service.task(&task_name(&p.name)?).await?;
    Ok(reply(StatusCode::OK, &TaskView::from(&task)))
}

/// A task to register; what is left out takes its default (with `replace`,
/// the stored task's value).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    /// The task's name: 1–128 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"))]
    name: String,
    /// The executable's absolute path on the server's machine.
    #[schemars(regex(pattern = r"^/"))]
    location: String,
    /// Replace a task already registered under the name (`--force`).
    #[serde(default)]
    replace: bool,
    /// The task's default run timeout (`30s`).
    #[schemars(length(min = 1))]
    timeout: Option<String>,
    /// How long `<location> schema` may take (default 10s).
    #[schemars(length(min = 1))]
    schema_timeout: Option<String>,
    /// Retries of a failed run.
    retries: Option<u32>,
    /// The first retry's delay (`1s`), doubled for each further attempt.
    #[schemars(length(min = 1))]
    backoff: Option<String>,
    /// Also retry runs that complete with a status other than 1.
    retry_on_status: Option<bool>,
    /// At most this many running attempts across all workers.
    concurrency: Option<u32>,
    /// Claim priority: higher first.
    priority: Option<i64>,
    /// Only workers with all these tags run it; `[]` removes them.
    tags: Option<Vec<String>>,
    /// Whether `format` is asserted (`assert`, the default) or only an annotation.
    formats: Option<Formats>,
}

/// Collects the violations of a request body: each with its pointer.
#[derive(Default)]
struct Violations(Vec<Violation>);

impl Violations {
    fn duration(&mut self, pointer: &str, text: Option<&str>) -> Option<Duration> {
        match duration(text?) {
            Ok(d) => Some(d),
            Err(message) => {
                self.0.push(Violation {
                    pointer: pointer.to_owned(),
                    message,
                });
                None
            }
        }
    }

    fn check(self, what: &str) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut e = ApiError::new(
            "invalid_body",
            format!("the {what} is not valid ({} violations)", self.0.len()),
        );
        e.set_violations(self.0);
        Err(e)
    }
}

async fn register(
    State(s): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(b): JsonBody<RegisterBody>,
) -> ApiResult {
    let mut v = Violations::default();
    let name = match TaskName::new(b.name.as_str()) {
        Ok(n) => Some(n),
        Err(e) => {
            v.0.push(Violation {
                pointer: "/name".into(),
                message: e.to_string(),
            });
            None
        }
    };
    let location = PathBuf::from(&b.location);
    if !location.is_absolute() {
        v.0.push(Violation {
            pointer: "/location".into(),
            message: format!(
                "`{}` is not an absolute path (the executable's path on the server's machine)",
                b.location
            ),
        });
    }
    let registration = Registration {
        schema_timeout: v.duration("/schema_timeout", b.schema_timeout.as_deref()),
        replace: b.replace,
        timeout: v.duration("/timeout", b.timeout.as_deref()),
        retries: b.retries,
        backoff: v.duration("/backoff", b.backoff.as_deref()),
        retry_on_status: b.retry_on_status,
        concurrency: b.concurrency,
        priority: b.priority,
        tags: b.tags,
        formats: b.formats,
    };
    v.check("task to register")?;
    // A name that did not parse left a violation, so `check` answered already.
    let name = name.ok_or_else(|| ApiError::new("invalid_body", "the task's name is not valid"))?;
    s.audit(
        &principal,
        "task.register",
        name.as_str(),
        json!({"location": b.location, "replace": b.replace, "transport": "http"}),
    )
    .await?;
    let task = s.service.register(name, &location, &registration).await?;
    Ok(reply(StatusCode::CREATED, &TaskView::from(&task)))
}

async fn unregister(
    State(s): State<AppState>,
    Path(p): Path<NamePath>,
    Extension(principal): Extension<Principal>,
) -> ApiResult {
    let name = task_name(&p.name)?;
    s.audit(
        &principal,
        "task.unregister",
        name.as_str(),
        json!({"transport": "http"}),
    )
    .await?;
    s.service.unregister(&name).await?;
    Ok(Reply(StatusCode::NO_CONTENT.into_response()))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitQuery {
    /// Wait up to this long (`30s`, at most 60s) for the run to end: 200 with
    /// the ended run, or 202 if it is still queued or running.
    #[schemars(length(min = 1))]
    wait: Option<String>,
}

fn submit_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.summary("Queue a run of the task; the body is its arguments")
        .description(
            "202 with the run as queued; with `?wait=`, 200 once it has ended. Invalid \
             arguments: 422 `invalid_args` with every violation by JSON pointer. Each \
             registered task also has its own path in this document, \
             `/api/v1/tasks/<name>/runs`, whose request body is the task's input schema.",
        )
        .tag("runs")
        .response::<202, Json<RunView<'static>>>()
        .response_with::<200, Json<RunView<'static>>, _>(|r| {
            r.description("the run, ended (with `?wait=`)")
        })
}

async fn submit(
    State(s): State<AppState>,
    Path(p): Path<NamePath>,
    Extension(principal): Extension<Principal>,
    QueryParams(q): QueryParams<SubmitQuery>,
    JsonBody(args): JsonBody<Map<String, Value>>,
) -> ApiResult {
    let args = Value::Object(args);
    let name = task_name(&p.name)?;
    let wait = q
        .wait
        .as_deref()
        .map(|w| {
            let d = duration(w).map_err(ApiError::bad_request)?;
            if d > s.limits.max_wait {
                return Err(ApiError::bad_request(format!(
                    "`wait={w}` is longer than the longest wait, {}; poll `GET /api/v1/runs/{{id}}` instead",
                    human(s.limits.max_wait)
                )));
            }
            Ok(d)
        })
        .transpose()?;
    let task = s.service.prepare_to_queue(&name).await?;
    task.check(&args)?;
    // Recorded with the run, in its transaction (a YAML store has no queue).
    let options = SubmitOptions {
        caller: s.caller_for(&principal),
        audit: Some(NewAudit {
            actor: principal.name.clone(),
            action: "run.submit".to_owned(),
            target: name.as_str().to_owned(),
            detail: json!({"transport": "http"}),
        }),
        ..SubmitOptions::default()
    };
    let run = s
        .service
        .submit(&task, std::slice::from_ref(&args), &options)
        .await?
        .remove(0);
    let Some(wait) = wait else {
        return Ok(reply(StatusCode::ACCEPTED, &RunView::from(&run)));
    };
    let mut unheard = |_| {};
    let run = tokio::select! {
        r = s.service.wait(&run.id, Some(wait), &mut unheard) => r?,
        // Shutting down: answer with the run as it is.
        _ = s.shutdown.cancelled() => s.service.run(&run.id).await?,
    };
    let status = if run.state.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(reply(status, &RunView::from(&run)))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    /// Only this task's runs.
    task: Option<String>,
    /// Only runs in this state.
    state: Option<RunState>,
    /// Only runs queued since then: a duration ago (`1h`) or an RFC 3339 time.
    #[schemars(length(min = 1))]
    since: Option<String>,
    /// At most this many (default 50, at most 1000).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
    /// The `next` cursor of the previous page.
    #[schemars(length(min = 1))]
    after: Option<String>,
}

async fn list_runs(State(s): State<AppState>, QueryParams(q): QueryParams<RunsQuery>) -> ApiResult {
    let since = q
        .since
        .as_deref()
        .map(|t| {
            if let Ok(d) = humantime::parse_duration(t.trim()) {
                return Ok(now_ms() - d.as_millis() as i64);
            }
            humantime::parse_rfc3339_weak(t.trim())
                .map(to_ms)
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "`since={t}` is neither a duration (`1h`, `30m`) nor an RFC 3339 time"
                    ))
                })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit={limit}` must be from 1 to 1000"
        )));
    }
    let after = q
        .after
        .as_deref()
        .map(|c| {
            Cursor::decode(c).ok_or_else(|| {
                ApiError::bad_request(format!("`after={c}` is not a cursor from a page's `next`"))
            })
        })
        .transpose()?;
    let task = q
        .task
        .as_deref()
        .map(|t| TaskName::new(t).map_err(|e| ApiError::bad_request(format!("`task={t}`: {e}"))))
        .transpose()?;
    let page = s
        .service
        .runs(&RunFilter {
            task,
            state: q.state,
            since,
            limit,
            after,
        })
        .await?;
    Ok(reply(
        StatusCode::OK,
        &ListView {
            items: page.runs.iter().map(RunView::from).collect(),
            next: page.next.as_ref().map(Cursor::encode),
        },
    ))
}

async fn get_run(State(s): State<AppState>, Path(p): Path<IdPath>) -> ApiResult {
    let run = s.service.run(&p.id).await?;
    let waiting = s.service.waiting(&run).await?;
    let mut view = RunView::from(&run);
    view.waiting = waiting;
    Ok(reply(StatusCode::OK, &view))
}

async fn cancel(
    State(s): State<AppState>,
    Path(p): Path<IdPath>,
    Extension(principal): Extension<Principal>,
) -> ApiResult {
    let run = s.service.run(&p.id).await?;
    s.audit(
        &principal,
        "run.cancel",
        &run.id,
        json!({"task": run.task, "transport": "http"}),
    )
    .await?;
    let c = s.service.cancel(&run.id).await?;
    Ok(reply(
        StatusCode::OK,
        &CancelView {
            run_id: &c.run_id,
            result: c.result,
        },
    ))
}

async fn retry(
    State(s): State<AppState>,
    Path(p): Path<IdPath>,
    Extension(principal): Extension<Principal>,
) -> ApiResult {
    let old = s.service.run(&p.id).await?;
    let audit = NewAudit {
        actor: principal.name.clone(),
        action: "run.retry".to_owned(),
        target: old.id.clone(),
        detail: json!({"task": old.task, "transport": "http"}),
    };
    let run = s
        .service
        .retry(&old.id, &s.caller_for(&principal), Some(audit))
        .await?;
    Ok(reply(StatusCode::ACCEPTED, &RunView::from(&run)))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogsQuery {
    /// The attempt whose log to read (default: the latest).
    attempt: Option<u32>,
    /// Start after this line: a page's `next`, or a line event's id (`<attempt>.<seq>`).
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+$"))]
    after: Option<String>,
    /// At most this many lines (default 1000, at most 10000).
    #[schemars(range(min = 1, max = 10000))]
    limit: Option<usize>,
}

fn logs_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.summary("A run's log: a JSON page, or live with `Accept: text/event-stream`")
        .description(
            "JSON: `{items: [line…], next}`, lines of one attempt in order (a gap in `seq` \
             means lines were cut from the middle). With `Accept: text/event-stream`: the \
             log as it is written, until the run ends: `state` (the run, first and on each \
             change), `line` (id `<attempt>.<seq>`), `cut`, `attempt`, `store`, then `end` \
             (the run as it ended). Reconnecting with `Last-Event-ID` resumes after that line.",
        )
        .tag("runs")
        .response::<200, Json<ListView<LogLineView<'static>>>>()
}

async fn logs(
    State(s): State<AppState>,
    Path(p): Path<IdPath>,
    headers: StreamHeaders,
    QueryParams(q): QueryParams<LogsQuery>,
) -> ApiResult {
    let run = s.service.run(&p.id).await?;
    let parse_after = |c: &str, what: &str| {
        crate::sse::resume_after(c).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{what} `{c}` is not a line id (`<attempt>.<seq>`) from this API"
            ))
        })
    };
    let start = LogPosition {
        attempt: q.attempt.unwrap_or(run.attempt.max(1)),
        next_seq: 0,
    };
    let mut from = match q.after.as_deref() {
        Some(c) => parse_after(c, "`after`")?,
        None => start,
    };
    if headers.wants_stream {
        if let Some(id) = headers.last_event_id.as_deref().filter(|i| !i.is_empty()) {
            from = parse_after(id, "`Last-Event-ID`")?;
        }
        let sse = crate::sse::log_stream(s.service.clone(), run.id, from, s.shutdown.clone());
        return Ok(Reply(sse.into_response()));
    }
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit={limit}` must be from 1 to 10000"
        )));
    }
    let mut stream = s.service.logs_from(&run.id, from, false).await?;
    let mut lines = Vec::new();
    while lines.len() < limit {
        match stream.next().await? {
            Some(LogEvent::Line { attempt, entry }) => lines.push((attempt, entry)),
            Some(_) => {}
            None => break,
        }
    }
    let next = (lines.len() == limit)
        .then(|| lines.last().map(|(a, e)| crate::sse::line_id(*a, e.seq)))
        .flatten();
    Ok(reply(
        StatusCode::OK,
        &ListView {
            items: lines.iter().map(|(a, e)| LogLineView::new(*a, e)).collect(),
            next,
        },
    ))
}

async fn events(State(s): State<AppState>) -> ApiResult {
    // Refused on a store without history, as every history route is.
    if !s.service.has_history() {
        return Err(ApiError::new(
            "unsupported",
            "run changes need a store that keeps run history (SQLite or PostgreSQL)",
        ));
    }
    Ok(Reply(
        crate::sse::events_stream(s.changes.subscribe(), s.shutdown.clone()).into_response(),
    ))
}

async fn list_schedules(State(s): State<AppState>) -> ApiResult {
    let all = s.service.schedules().await?;
    Ok(reply(
        StatusCode::OK,
        &ListView::all(all.iter().map(ScheduleView::from).collect()),
    ))
}

/// A schedule to add.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleBody {
    /// The task to run.
    task: String,
    /// A cron expression, in UTC (`*/5 * * * *`).
    cron: String,
    /// The arguments of each run (default `{}`), checked against the task's input schema.
    #[serde(default)]
    args: Map<String, Value>,
    /// The caller recorded on each run (default: the server's).
    caller: Option<String>,
}

async fn add_schedule(
    State(s): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(b): JsonBody<ScheduleBody>,
) -> ApiResult {
    let task = s.service.prepare_to_queue(&task_name(&b.task)?).await?;
    let caller = b.caller.unwrap_or_else(|| s.caller_for(&principal));
    s.audit(
        &principal,
        "schedule.add",
        task.task().name.as_str(),
        json!({"cron": b.cron, "transport": "http"}),
    )
    .await?;
    let schedule = s
        .service
        .add_schedule(&task, &b.cron, &Value::Object(b.args), &caller)
        .await?;
    Ok(reply(StatusCode::CREATED, &ScheduleView::from(&schedule)))
}

async fn remove_schedule(
    State(s): State<AppState>,
    Path(p): Path<IdPath>,
    Extension(principal): Extension<Principal>,
) -> ApiResult {
    s.audit(
        &principal,
        "schedule.remove",
        &p.id,
        json!({"transport": "http"}),
    )
    .await?;
    s.service.remove_schedule(&p.id).await?;
    Ok(Reply(StatusCode::NO_CONTENT.into_response()))
}

async fn list_workers(State(s): State<AppState>) -> ApiResult {
    let listed = s.service.workers().await?;
    Ok(reply(
        StatusCode::OK,
        &ListView::all(
            listed
                .workers
                .iter()
                .map(|w| WorkerView::new(w, listed.now))
                .collect(),
        ),
    ))
}

async fn metrics_page(State(s): State<AppState>) -> Response {
    let active = match s.service.active().await {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!("metrics: cannot read the queue: {e}");
            None
        }
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(active),
    )
        .into_response()
}
