//! Protocol v1: the wire types exchanged with a task, and nothing else.
//!
//! A task is any executable. Discovery runs `<task> schema` and reads an
//! [`AutoSchema`] from its stdout; a run writes an [`Envelope`] to its stdin and
//! reads a [`TaskResult`] from its stdout (or from `TASK_RESULT_FILE`). These
//! types are the whole contract, documented for task authors in
//! `docs/protocol.md`; stores and the runner have their own types.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol identifier sent in every envelope.
pub const PROTOCOL_V1: &str = "v1";
/// The `status` a task reports on success; anything else is a reported failure.
pub const STATUS_SUCCESS: i64 = 1;
/// The argument that asks a task for its [`AutoSchema`].
pub const SCHEMA_ARG: &str = "schema";
/// The caller recorded when the CLI runs a task and `--caller` is not given.
pub const DEFAULT_CALLER: &str = "self";

/// Environment variable holding the task's registered name.
pub const ENV_TASK_NAME: &str = "TASK_NAME";
/// Environment variable holding the id of this run.
pub const ENV_TASK_RUN_ID: &str = "TASK_RUN_ID";
/// Environment variable naming a fresh, empty file the task may write its result to.
pub const ENV_TASK_RESULT_FILE: &str = "TASK_RESULT_FILE";
/// Environment variable holding the protocol version (`v1`).
pub const ENV_TASK_PROTOCOL: &str = "TASK_PROTOCOL";
/// Environment variable holding the attempt number of a queued run that a
/// worker executes (1 for the first; one more for each retry and each
/// takeover after a lost lease); not set for other runs.
pub const ENV_TASK_ATTEMPT: &str = "TASK_ATTEMPT";
/// Every variable the executor sets for each run (over the inherited
/// environment); [`ENV_TASK_ATTEMPT`] only for a worker's runs, and removed
/// from the inherited environment otherwise.
pub const RUN_VARIABLES: [&str; 5] = [
    ENV_TASK_NAME,
    ENV_TASK_RUN_ID,
    ENV_TASK_RESULT_FILE,
    ENV_TASK_PROTOCOL,
    ENV_TASK_ATTEMPT,
];

/// What a task prints when called with `schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoSchema {
    /// The task's own idea of its name (informational; the registered name wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One-line human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the envelope's `data`.
    pub inputs: Value,
    /// JSON Schema of the result object `{status, reason, payload}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
}

/// The `meta` half of the stdin envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Always [`PROTOCOL_V1`].
    pub protocol: String,
    /// Who asked for the run (`self` from the CLI).
    pub caller: String,
    /// The registered task name.
    #[serde(rename = "taskName")]
    pub task_name: String,
}

/// The document written to a task's stdin.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<D = Value> {
    /// Who is calling and with which protocol.
    pub meta: Meta,
    /// The caller's arguments, already validated against the task's inputs.
    pub data: D,
}

/// `data` holds the unmasked arguments, secrets included: never printed.
impl<D> std::fmt::Debug for Envelope<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("meta", &self.meta)
            .field("data", &format_args!("<hidden>"))
            .finish()
    }
}

impl<D: Serialize> Envelope<D> {
    /// A v1 envelope for `task_name` called by `caller`.
    pub fn new(caller: impl Into<String>, task_name: impl Into<String>, data: D) -> Self {
        Self {
            meta: Meta {
                protocol: PROTOCOL_V1.to_owned(),
                caller: caller.into(),
                task_name: task_name.into(),
            },
            data,
        }
    }

    /// Serialises the envelope followed by a newline, ready for stdin.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out =
            serde_json::to_vec(self).expect("an envelope of JSON values always serialises");
        out.push(b'\n');
        out
    }
}

/// The result a task reports: the last thing it says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// [`STATUS_SUCCESS`] (1) on success; any other value is a failure the task reports.
    pub status: i64,
    /// Human explanation of the status.
    #[serde(default)]
    pub reason: String,
    /// Free-form data for the caller.
    #[serde(default)]
    pub payload: Value,
}

impl TaskResult {
    /// Whether the task reported success.
    pub fn is_success(&self) -> bool {
        self.status == STATUS_SUCCESS
    }
}

/// Why an object that claimed to be a result (it has an integer `status`) is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    /// The text is not JSON at all.
    #[error("result is not valid JSON: {0}")]
    NotJson(String),
    /// Valid JSON, but not an object with an integer `status`.
    #[error("result must be a JSON object with an integer `status`")]
    NoStatus,
    /// `reason` is present but not a string.
    #[error("result field `reason` must be a string, found {found}")]
    BadReason {
        /// The JSON type found.
        found: &'static str,
    },
}

/// The JSON type name of a value, for error messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether `obj` qualifies as a result candidate: a JSON object with an integer `status`.
pub fn is_result_candidate(obj: &Map<String, Value>) -> bool {
    obj.get("status").is_some_and(|s| s.as_i64().is_some())
}

/// Interprets a parsed JSON value as a result, keeping the raw object for
/// validation against the task's `outputs` schema.
pub fn result_from_value(value: Value) -> Result<(TaskResult, Value), ResultError> {
    let Value::Object(obj) = &value else {
        return Err(ResultError::NoStatus);
    };
    if !is_result_candidate(obj) {
        return Err(ResultError::NoStatus);
    }
    let status = obj["status"]
        .as_i64()
        .expect("checked by is_result_candidate");
    let reason = match obj.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ResultError::BadReason {
                found: json_type(other),
            });
        }
    };
    let payload = obj.get("payload").cloned().unwrap_or(Value::Null);
    Ok((
        TaskResult {
            status,
            reason,
            payload,
        },
        value,
    ))
}

/// Parses bytes as a result document (used for `TASK_RESULT_FILE` and stdout candidates).
pub fn parse_result(bytes: &[u8]) -> Result<(TaskResult, Value), ResultError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ResultError::NotJson(e.to_string()))?;
    result_from_value(value)
}

/// Parses one stdout line as a result candidate: `Some` only when the line is a
/// JSON object with an integer `status` (surrounding whitespace allowed).
pub fn parse_result_line(line: &[u8]) -> Option<Value> {
    let trimmed = line.trim_ascii();
    if trimmed.first() != Some(&b'{') || trimmed.last() != Some(&b'}') {
        return None;
    }
    match serde_json::from_slice::<Value>(trimmed) {
        Ok(Value::Object(obj)) if is_result_candidate(&obj) => Some(Value::Object(obj)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_matches_the_original_wire_format() {
        let env = Envelope::new("self", "pythonTestTask", json!({"cmd": "hostname"}));
        let v: Value = serde_json::from_slice(&env.to_line()).unwrap();
        assert_eq!(
            v,
            json!({"meta": {"protocol": "v1", "caller": "self", "taskName": "pythonTestTask"},
                   "data": {"cmd": "hostname"}})
        );
        assert!(env.to_line().ends_with(b"}\n"));
    }

    #[test]
    fn debug_output_hides_the_arguments() {
        let env = Envelope::new("self", "t", json!({"token": "hunter2"}));
        let text = format!("{env:?}");
        assert!(
            !text.contains("hunter2") && text.contains("<hidden>"),
            "{text}"
        );
    }

    #[test]
    fn result_lines_need_an_integer_status() {
        assert!(parse_result_line(br#"{"status":1,"reason":"ok","payload":{}}"#).is_some());
        assert!(parse_result_line(b"  {\"status\": 0}  \r").is_some());
        assert!(parse_result_line(br#"{"status":"1"}"#).is_none());
        assert!(parse_result_line(br#"{"status":1.5}"#).is_none());
        assert!(parse_result_line(br#"{"reason":"ok"}"#).is_none());
        assert!(parse_result_line(b"hello").is_none());
        assert!(parse_result_line(b"[1]").is_none());
        assert!(parse_result_line(b"{not json}").is_none());
    }

    #[test]
    fn result_fields_are_checked() {
        let (r, _) = parse_result(br#"{"status":2}"#).unwrap();
        assert_eq!(r.reason, "");
        assert_eq!(r.payload, Value::Null);
        assert!(!r.is_success());
        assert_eq!(
            parse_result(br#"{"status":1,"reason":5}"#).unwrap_err(),
            ResultError::BadReason { found: "integer" }
        );
        assert!(matches!(
            parse_result(b"{oops").unwrap_err(),
            ResultError::NotJson(_)
        ));
    }

    #[test]
    fn autoschema_accepts_the_original_example() {
        let s: AutoSchema = serde_json::from_value(json!({
            "name": "python", "description": "Python example",
            "inputs": {"type": "object"}, "outputs": {"type": "object"}
        }))
        .unwrap();
        assert_eq!(s.description.as_deref(), Some("Python example"));
        let minimal: AutoSchema = serde_json::from_value(json!({"inputs": true})).unwrap();
        assert!(minimal.outputs.is_none());
    }
}
