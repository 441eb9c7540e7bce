//! Answers for messages rmcp cannot read, as JSON-RPC 2.0 and MCP say:
//!
//! - a request for a method MCP defines whose `params` do not have that
//!   method's shape (`"arguments": "x"` in `tools/call`) reaches us as a
//!   custom request, which rmcp would answer `-32601` (method not found):
//!   [`custom_request_error`] answers `-32602` (invalid params), saying
//!   what is wrong; a method MCP does not define stays `-32601`;
//! - over streamable HTTP, rmcp answers a body it cannot deserialize with
//!   HTTP 415 and plain text: [`check_body`], in front of it, answers a body
//!   that is not JSON with `-32700` (parse error) and JSON that is not a
//!   JSON-RPC message with `-32600` (invalid request), each as HTTP 400 with
//!   a JSON-RPC error body (the streamable HTTP transport's rule for input
//!   the server cannot accept). Headers are still rmcp's to check.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use rmcp::ErrorData;
use rmcp::model::{CallToolRequestParams, ClientJsonRpcMessage};
use serde_json::{Value, json};

/// The request methods rmcp 3.11 (pinned) reads into typed requests: one of
/// these arriving as a custom request had params of the wrong shape.
const MCP_METHODS: &[&str] = &[
    "ping",
    "initialize",
    "server/discover",
    "completion/complete",
    "logging/setLevel",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/directory/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "tools/call",
    "tools/list",
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
    "skills/list",
    "skills/get",
];

/// The largest request body read (rmcp's own default limit).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The error for a request rmcp could not read as any method it knows.
pub fn custom_request_error(method: &str, params: Option<&Value>) -> ErrorData {
    if !MCP_METHODS.contains(&method) {
        return ErrorData::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            format!("Method not found: `{method}` is not an MCP method this server serves"),
            None,
        );
    }
    let why = match method {
        "tools/call" => tools_call_problem(params),
        _ => format!(
            "`params` do not have the shape MCP defines for `{method}` (got {})",
            params.map_or("none", kind)
        ),
    };
    ErrorData::invalid_params(format!("Invalid params for `{method}`: {why}"), None)
}

/// What is wrong with the params of a `tools/call`.
fn tools_call_problem(params: Option<&Value>) -> String {
    let Some(Value::Object(p)) = params else {
        return format!(
            "`params` must be an object with the tool's `name` and its `arguments`, not {}",
            params.map_or("none", kind)
        );
    };
    match p.get("name") {
        Some(Value::String(_)) => {}
        None => return "`name`, the tool's name, is missing".into(),
        Some(other) => {
            return format!(
                "`name` must be the tool's name, a string, not {}",
                kind(other)
            );
        }
    }
    match p.get("arguments") {
        None | Some(Value::Null | Value::Object(_)) => {}
        Some(other) => {
            return format!(
                "`arguments` must be an object (the tool's arguments by name), not {}",
                kind(other)
            );
        }
    }
    match serde_json::from_value::<CallToolRequestParams>(Value::Object(p.clone())) {
        Err(e) => e.to_string(),
        Ok(_) => "they do not have the shape MCP defines".into(),
    }
}

/// "a string", "an array", … for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Axum middleware before rmcp's streamable HTTP service: a POST whose
/// Content-Type is JSON has its body read and checked (see the module
/// comment); a good body is passed on unchanged.
pub async fn check_body(request: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    if request.method() != Method::POST || !is_json(request.headers()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Payload Too Large: request body exceeds {MAX_BODY} bytes ({e})"),
            );
        }
    };
    if let Some(error) = body_error(&bytes) {
        return json_rpc_error(error);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The JSON-RPC error for a body rmcp would refuse, or `None` for a message.
fn body_error(bytes: &Bytes) -> Option<Value> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let value: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => {
            return Some(error_reply(
                Value::Null,
                -32700,
                format!("Parse error: the request body is not JSON ({e})"),
            ));
        }
    };
    let e = serde_json::from_value::<ClientJsonRpcMessage>(value.clone()).err()?;
    let id = match value.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => Value::Null,
    };
    Some(error_reply(
        id,
        -32600,
        format!(
            "Invalid Request: the body is not a JSON-RPC 2.0 request, notification or response ({e})"
        ),
    ))
}

fn error_reply(id: Value, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn json_rpc_error(reply: Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(reply.to_string()))
        .expect("a valid response")
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .expect("a valid response")
}

/// Whether the Content-Type is `application/json` (rmcp refuses others itself).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| {
            h.split_once(';')
                .map_or(h, |(essence, _)| essence)
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: &ErrorData) -> i32 {
        e.code.0
    }

    #[test]
    fn malformed_tools_call_params_are_invalid_params_saying_why() {
        let cases = [
            (
                json!({"name": "t", "arguments": "x"}),
                "`arguments` must be an object",
                "not a string",
            ),
            (
                json!({"name": "t", "arguments": [1]}),
                "`arguments` must be an object",
                "not an array",
            ),
            (
                json!({"arguments": {}}),
                "`name`, the tool's name, is missing",
                "",
            ),
            (
                json!({"name": 5}),
                "`name` must be the tool's name",
                "not a number",
            ),
            (json!("zzz"), "`params` must be an object", "not a string"),
        ];
        for (params, what, got) in cases {
            let e = custom_request_error("tools/call", Some(&params));
            assert_eq!(code(&e), -32602, "{params}");
            assert!(
                e.message.contains(what) && e.message.contains(got),
                "{params}: {}",
                e.message
            );
            assert!(
                e.message.starts_with("Invalid params for `tools/call`: "),
                "{}",
                e.message
            );
        }
        let e = custom_request_error("tools/call", None);
        assert_eq!(code(&e), -32602);
    }

    #[test]
    fn other_mcp_methods_are_invalid_params_and_unknown_ones_not_found() {
        let e = custom_request_error("tools/list", Some(&json!({"cursor": 5})));
        assert_eq!(code(&e), -32602, "{}", e.message);
        let e = custom_request_error("tools/frobnicate", None);
        assert_eq!(code(&e), -32601);
        assert!(e.message.contains("`tools/frobnicate`"), "{}", e.message);
    }

    #[test]
    fn bodies_that_are_not_json_or_not_json_rpc_are_refused() {
        let not_json = body_error(&Bytes::from_static(b"this is not json")).unwrap();
        assert_eq!(not_json["error"]["code"], -32700);
        assert_eq!(not_json["id"], Value::Null);
        let not_rpc = body_error(&Bytes::from_static(b"[1, 2]")).unwrap();
        assert_eq!(not_rpc["error"]["code"], -32600);
        let with_id =
            body_error(&Bytes::from_static(b"{\"id\": 7, \"jsonrpc\": \"1.0\"}")).unwrap();
        assert_eq!(with_id["error"]["code"], -32600);
        assert_eq!(with_id["id"], 7);
        let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        assert_eq!(body_error(&Bytes::from_static(ping)), None);
        let call = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t","arguments":"x"}}"#;
        assert_eq!(
            body_error(&Bytes::from_static(call)),
            None,
            "rmcp reads it as a custom request"
        );
    }
}
