//! The MCP server handler (rmcp): `tools/list` and `tools/call` over the task
//! store, task log lines as logging notifications, and `tools/list_changed`
//! when the store changes while a client is connected.
//!
//! Every operation goes through the library's service layer
//! ([`task_executor::service::Service`]): the store is read at call time,
//! so changes made by other processes (`manage_tasks register`) are seen,
//! and noticed for `list_changed` by polling a fingerprint of the task list.

// MCP logging (`notifications/message`, `logging/setLevel`) is deprecated by
// SEP-2577 but is the only way the protocol carries a tool's log lines.
#![allow(deprecated)]

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomRequest,
    CustomResult, Implementation, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    SetLevelRequestParams, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::json;
use task_executor::service::{Call, ExecuteError, PrepareError, Principal, Service};
use task_executor::store::NewAudit;
use task_executor::{LogLine, LogSink, Stream, Task, TaskName};
use tokio::sync::mpsc;

use crate::mapping;

/// The protocol revisions served: the current one and the previous one.
pub const PROTOCOL_VERSIONS: &[ProtocolVersion] =
    &[ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28];

/// How many task log lines may wait to be sent before further lines are dropped (and counted).
const LOG_BACKLOG: usize = 1024;

/// What the server needs: the tasks and how to run them.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// The tasks, and how `tools/call` runs them.
    pub service: Service,
    /// The `meta.caller` tasks see in their envelope.
    pub caller: String,
    /// How often the store is checked for changes while a client is connected.
    pub poll_interval: Duration,
    /// The cap on tool calls running at once, across every session.
    pub runs: RunLimit,
}

/// A cap on tool calls running at once, shared by every session: a call
/// beyond it waits for a slot (first come, first served) up to
/// [`RunLimit::wait`], then is refused with JSON-RPC error
/// [`BUSY`](crate::guard::codes::BUSY); a call cancelled meanwhile stops waiting.
#[derive(Debug, Clone)]
pub struct RunLimit {
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
    wait: Duration,
}

impl RunLimit {
    /// How long a call waits for a slot by default.
    pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

    /// At most `max` (at least 1) calls at once; others wait up to `wait`.
    pub fn new(max: usize, wait: Duration) -> Self {
        let max = max.max(1);
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            wait,
        }
    }

    /// How many calls may run at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How long a call waits for a slot.
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

/// One MCP session's handler. Cheap to clone; the HTTP transport makes one per session.
#[derive(Debug, Clone)]
pub struct TaskServer {
    config: Arc<McpConfig>,
    /// The session's `logging/setLevel` (handshake-era sessions only).
    level: Arc<Mutex<LoggingLevel>>,
}

impl TaskServer {
    /// A handler serving `config`'s store.
    pub fn new(config: Arc<McpConfig>) -> Self {
        Self {
            config,
            level: Arc::new(Mutex::new(LoggingLevel::Debug)),
        }
    }

    async fn tasks(&self) -> Result<Vec<Task>, ErrorData> {
        self.config.service.tasks().await.map_err(internal)
    }

    /// A fingerprint of the registered tasks; `None` when the store cannot be read.
    async fn fingerprint(&self) -> Option<u64> {
        let tasks = self.tasks().await.ok()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&tasks).ok()?.hash(&mut h);
        Some(h.finish())
    }

    /// The lowest level to send for this request, or `None` to send no logs:
    /// a 2026-07-28 request opts in with `_meta` `logLevel`; a handshake-era
    /// session gets everything at or above its `logging/setLevel`.
    fn log_threshold(&self, ctx: &RequestContext<RoleServer>) -> Option<LoggingLevel> {
        if let Some(level) = ctx.meta.log_level() {
            return Some(level);
        }
        let modern = ctx.protocol_version().is_some_and(|v| !v.has_initialize());
        (!modern).then(|| *self.level.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn call(
        &self,
        params: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let unknown = || ErrorData::invalid_params(format!("unknown tool `{}`", params.name), None);
        let name = TaskName::new(params.name.as_ref()).map_err(|_| unknown())?;
        let service = &self.config.service;
        let task = match service.prepare(&name).await {
            Ok(task) => task,
            Err(PrepareError::NotRegistered { .. }) => return Err(unknown()),
            Err(PrepareError::Store(e)) => return Err(internal(e)),
            // The task exists but cannot run: a tool result the model can read.
            Err(e) => return Ok(cannot_run(&e)),
        };
        let shape = mapping::input_shape(&task.task().inputs);
        let data = shape.data(params.arguments);
        if let Err(e) = task.check(&data) {
            let violations: Vec<_> = e
                .violations()
                .iter()
                .cloned()
                .map(|v| shape.locate(v))
                .collect();
            return Err(mapping::invalid_arguments(&name, &violations));
        }

        let limit = &self.config.runs;
        let _slot = tokio::select! {
            slot = tokio::time::timeout(limit.wait, limit.slots.clone().acquire_owned()) => {
                match slot {
                    Ok(Ok(slot)) => slot,
                    _ => return Err(ErrorData::new(
                        rmcp::model::ErrorCode(crate::guard::codes::BUSY),
                        format!(
                            "the server is busy: {} tool calls are running (its \
                             --max-concurrent-runs) and this one waited {}s for a slot; \
                             try again later",
                            limit.max,
                            limit.wait.as_secs()
                        ),
                        None,
                    )),
                }
            }
            () = ctx.ct.cancelled() => {
                return Err(ErrorData::internal_error("cancelled while waiting for a run slot", None));
            }
        };
        self.audit_call(&name, &ctx).await?;

        let threshold = self.log_threshold(&ctx);
        let (tx, rx) = mpsc::channel(LOG_BACKLOG);
        let sink = ChannelLogs {
            tx,
            dropped: Default::default(),
            threshold: threshold.map(rank),
        };
        let forward = tokio::spawn(forward_logs(rx, ctx.peer.clone(), name.clone()));
        let call = Call {
            args: data,
            caller: self.config.caller.clone(),
            timeout: None,
        };
        // Recorded in run history exactly like `execute`, where the store keeps
        // history; secret arguments never reach the client's logs.
        let executed = service.execute(&task, call, &sink, &ctx.ct).await;
        let dropped = sink.dropped.load(std::sync::atomic::Ordering::Relaxed);
        drop(sink);
        let _ = forward.await;
        if dropped > 0 && threshold.is_some() {
            let note = format!("{dropped} log lines were dropped: the client read them too slowly");
            let _ = ctx
                .peer
                .notify_logging_message(
                    LoggingMessageNotificationParam::new(LoggingLevel::Warning, json!(note))
                        .with_logger(name.as_str()),
                )
                .await;
        }
        match executed {
            Ok(run) => Ok(mapping::call_result(&run.report)),
            Err(ExecuteError::Prepare(e)) => Err(internal(e)),
            Err(ExecuteError::Store(e)) => Err(internal(e)),
        }
    }
}

impl TaskServer {
    /// Records a `tools/call` over HTTP in the audit log, under the
    /// token's name (`anonymous` while the store has no token). Calls over
    /// stdio come from whoever started the server, like `execute`, and are
    /// not audited. A store without an audit log (YAML) records nothing.
    async fn audit_call(
        &self,
        name: &TaskName,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let Some(parts) = ctx.extensions.get::<axum::http::request::Parts>() else {
            return Ok(());
        };
        let actor = parts
            .extensions
            .get::<Principal>()
            .map_or_else(|| "anonymous".to_owned(), |p| p.name.clone());
        let entry = NewAudit {
            actor,
            action: "tools.call".into(),
            target: name.to_string(),
            detail: json!({"transport": "http", "caller": self.config.caller}),
        };
        match self.config.service.audit(&entry).await {
            Ok(_) | Err(task_executor::StoreError::Unsupported { .. }) => Ok(()),
            Err(e) => Err(ErrorData::internal_error(
                format!("the call was not run: the audit log could not record it: {e}"),
                None,
            )),
        }
    }
}

/// A tool result saying why the task cannot run (its message names the task).
fn cannot_run(e: &PrepareError) -> CallToolResult {
    let text = e.to_string();
    // "task `x` cannot be run: …" reads as a sentence at the start of a result.
    let text = match text.strip_prefix('t') {
        Some(rest) => format!("T{rest}"),
        None => text,
    };
    CallToolResult::error(vec![ContentBlock::text(text)])
}

fn internal(e: impl std::fmt::Display) -> ErrorData {
    ErrorData::internal_error(format!("task store: {e}"), None)
}

/// Severity order of logging levels.
fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// The level a task's output line is sent at: stdout is `info`, stderr `warning`.
pub fn level_for(stream: Stream) -> LoggingLevel {
    match stream {
        Stream::Stdout => LoggingLevel::Info,
        Stream::Stderr => LoggingLevel::Warning,
    }
}

/// Hands log lines from the runner's (synchronous) sink to an async forwarder.
struct ChannelLogs {
    tx: mpsc::Sender<(LoggingLevel, String)>,
    dropped: std::sync::atomic::AtomicU64,
    threshold: Option<u8>,
}

impl LogSink for ChannelLogs {
    fn line(&self, line: LogLine<'_>) {
        let level = level_for(line.stream);
        if self.threshold.is_none_or(|t| rank(level) < t) {
            return;
        }
        let mut text = String::from_utf8_lossy(line.text).into_owned();
        if line.truncated {
            text.push_str(" […]");
        }
        if self.tx.try_send((level, text)).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

async fn forward_logs(
    mut rx: mpsc::Receiver<(LoggingLevel, String)>,
    peer: Peer<RoleServer>,
    task: TaskName,
) {
    while let Some((level, text)) = rx.recv().await {
        let param =
            LoggingMessageNotificationParam::new(level, json!(text)).with_logger(task.as_str());
        if peer.notify_logging_message(param).await.is_err() {
            break;
        }
    }
}

impl ServerHandler for TaskServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_logging()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new(
            "task-executor",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "Each tool is a registered task. Call it with arguments matching its input schema; \
             the result is the task's {status, reason, payload} object (status 1 is success).",
        )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(PROTOCOL_VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self.tasks().await?.iter().map(mapping::tool).collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(request, context).await.map(Into::into)
    }

    /// A request rmcp could not read as a method it knows: `-32602` when
    /// the method is MCP's and its params are malformed, else `-32601`.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        Err(crate::malformed::custom_request_error(
            &request.method,
            request.params.as_ref(),
        ))
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self.level.lock().unwrap_or_else(|e| e.into_inner()) = request.level;
        Ok(())
    }

    /// Handshake-era sessions: watch the store and send `notifications/tools/list_changed`.
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let server = self.clone();
        let peer = context.peer;
        tokio::spawn(async move {
            let mut last = server.fingerprint().await;
            loop {
                tokio::time::sleep(server.config.poll_interval).await;
                if peer.is_transport_closed() {
                    break;
                }
                let now = server.fingerprint().await;
                if now.is_some() && now != last {
                    last = now;
                    if peer.notify_tool_list_changed().await.is_err() {
                        break;
                    }
                }
            }
        });
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    /// 2026-07-28 sessions: `subscriptions/listen` streams `tools/list_changed`.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        if context.accepted().tools_list_changed != Some(true) {
            context.cancelled().await;
            return Ok(());
        }
        let mut last = self.fingerprint().await;
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
            let now = self.fingerprint().await;
            if now.is_some() && now != last {
                last = now;
                if context.sink().notify_tool_list_changed().await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_newest_two_revisions_the_sdk_knows() {
        // A tripwire for SDK upgrades: revisit the list (and the README) when it fires.
        let known = ProtocolVersion::KNOWN_VERSIONS;
        assert_eq!(PROTOCOL_VERSIONS, &known[known.len() - 2..]);
        assert!(PROTOCOL_VERSIONS[0].has_initialize());
        assert!(!PROTOCOL_VERSIONS[1].has_initialize());
    }

    #[test]
    fn stdout_is_info_and_stderr_is_warning() {
        assert_eq!(level_for(Stream::Stdout), LoggingLevel::Info);
        assert_eq!(level_for(Stream::Stderr), LoggingLevel::Warning);
        assert!(rank(LoggingLevel::Debug) < rank(LoggingLevel::Info));
        assert!(rank(LoggingLevel::Warning) < rank(LoggingLevel::Error));
    }

    #[test]
    fn log_lines_below_the_threshold_are_not_queued() {
        let (tx, mut rx) = mpsc::channel(1);
        let sink = ChannelLogs {
            tx,
            dropped: Default::default(),
            threshold: Some(rank(LoggingLevel::Warning)),
        };
        let name = TaskName::new("t").unwrap();
        let line = |stream, text: &'static [u8]| LogLine {
            task: &name,
            run_id: "r",
            stream,
            text,
            truncated: false,
        };
        sink.line(line(Stream::Stdout, b"quiet"));
        sink.line(line(Stream::Stderr, b"loud"));
        sink.line(line(Stream::Stderr, b"overflow"));
        assert_eq!(
            rx.try_recv().unwrap(),
            (LoggingLevel::Warning, "loud".into())
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(sink.dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
