//! Pure translations between tasks and MCP: a [`Task`] becomes a [`Tool`], a
//! [`RunReport`] becomes a [`CallToolResult`], schema violations become one
//! `invalid_params` error. No I/O, so every rule here is unit-tested.
//!
//! Schema rules. MCP requires `inputSchema` to be an object schema:
//! - `inputs` with `"type": "object"` is used unchanged;
//! - `inputs` without `type` gets `"type": "object"` added (a call's
//!   arguments are always an object, so this only states what is callable);
//! - any other `inputs` (say `{"type": "string"}`) is wrapped as
//!   `{"type": "object", "properties": {"value": inputs}, "required": ["value"]}`
//!   and the call's `value` argument is what the task receives as `data`.
//!
//! `$schema` is kept (MCP 2025-11-25 lets a tool name its dialect); when
//! wrapping it moves to the wrapper, the document's root. `outputSchema` is
//! the task's `outputs` under the same object rule, and omitted when the task
//! declared none or a non-object one: it describes the result object
//! `{status, reason, payload}`, which is exactly the `structuredContent` sent.

use std::sync::Arc;

use rmcp::ErrorData;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{Map, Value, json};
use task_executor::schema::Violation;
use task_executor::{Outcome, RunReport, Task, TaskName};

/// The property that carries the arguments of a task whose `inputs` is not an object schema.
pub const WRAPPED_PROPERTY: &str = "value";

/// How a task's `inputs` appear as a tool's `inputSchema`.
#[derive(Debug, Clone, PartialEq)]
pub enum InputShape {
    /// The arguments object is the task's `data`.
    Direct(JsonObject),
    /// The arguments object's [`WRAPPED_PROPERTY`] is the task's `data`.
    Wrapped(JsonObject),
}

impl InputShape {
    /// The schema to advertise.
    pub fn schema(&self) -> &JsonObject {
        match self {
            InputShape::Direct(s) | InputShape::Wrapped(s) => s,
        }
    }

    /// The task's `data` for a call's arguments (`None` arguments mean `{}`).
    /// A wrapped call without `value` passes `null`, which validation reports.
    pub fn data(&self, arguments: Option<JsonObject>) -> Value {
        let args = arguments.unwrap_or_default();
        match self {
            InputShape::Direct(_) => Value::Object(args),
            InputShape::Wrapped(_) => args.get(WRAPPED_PROPERTY).cloned().unwrap_or(Value::Null),
        }
    }

    /// A violation found in `data`, with its pointer rewritten to point into the arguments.
    pub fn locate(&self, violation: Violation) -> Violation {
        match self {
            InputShape::Direct(_) => violation,
            InputShape::Wrapped(_) => Violation {
                pointer: format!("/{WRAPPED_PROPERTY}{}", violation.pointer),
                message: violation.message,
            },
        }
    }
}

/// Whether `schema` is an object schema: no `type`, `"object"`, or a type list holding `"object"`.
fn object_type(schema: &Map<String, Value>) -> Option<bool> {
    match schema.get("type") {
        None => None,
        Some(Value::String(t)) => Some(t == "object"),
        Some(Value::Array(ts)) => Some(ts.iter().any(|t| t == "object")),
        Some(_) => Some(false),
    }
}

/// The `inputSchema` for a task's `inputs` (see the module docs for the rules).
pub fn input_shape(inputs: &Value) -> InputShape {
    match inputs {
        Value::Object(schema) => match object_type(schema) {
            Some(true) if schema.get("type") == Some(&json!("object")) => {
                InputShape::Direct(schema.clone())
            }
            None => {
                let mut schema = schema.clone();
                schema.insert("type".into(), json!("object"));
                InputShape::Direct(schema)
            }
            _ => InputShape::Wrapped(wrap(schema.clone())),
        },
        // `true`, `false`: boolean schemas.
        other => InputShape::Wrapped(wrap_value(other.clone(), None)),
    }
}

fn wrap(mut inner: Map<String, Value>) -> JsonObject {
    let dialect = inner.remove("$schema");
    wrap_value(Value::Object(inner), dialect)
}

fn wrap_value(inner: Value, dialect: Option<Value>) -> JsonObject {
    let mut outer = Map::new();
    if let Some(d) = dialect {
        outer.insert("$schema".into(), d);
    }
    outer.insert("type".into(), json!("object"));
    outer.insert("properties".into(), json!({ WRAPPED_PROPERTY: inner }));
    outer.insert("required".into(), json!([WRAPPED_PROPERTY]));
    outer
}

/// The `outputSchema` for a task's `outputs`: only object schemas qualify.
pub fn output_schema(outputs: Option<&Value>) -> Option<JsonObject> {
    let Value::Object(schema) = outputs? else {
        return None;
    };
    match object_type(schema) {
        Some(true) => Some(schema.clone()),
        None => {
            let mut schema = schema.clone();
            schema.insert("type".into(), json!("object"));
            Some(schema)
        }
        Some(false) => None,
    }
}

/// The description of a task's tool: its own, or one naming the task.
pub fn description(task: &Task) -> String {
    match task.description.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => d.to_owned(),
        _ => format!("Runs the registered task `{}`.", task.name),
    }
}

/// The tool a task becomes.
pub fn tool(task: &Task) -> Tool {
    let mut tool = Tool::new(
        task.name.as_str().to_owned(),
        description(task),
        Arc::new(input_shape(&task.inputs).schema().clone()),
    )
    .with_annotations(ToolAnnotations::with_title(task.name.as_str()));
    if let Some(out) = output_schema(task.outputs.as_ref()) {
        tool = tool.with_raw_output_schema(Arc::new(out));
    }
    tool
}

/// The answer to a finished run. A completed run carries its result object as
/// `structuredContent` (and as JSON text); `isError` is set unless it
/// reported status 1. Any other outcome is an error result explaining the
/// failure, with the result object as `structuredContent` when the task
/// printed one that fits its `outputs` schema.
pub fn call_result(report: &RunReport) -> CallToolResult {
    let mut result = match &report.outcome {
        Outcome::Completed { result } => {
            let object = result_object(result);
            let mut r = CallToolResult::structured(object);
            r.is_error = Some(!result.is_success());
            if !result.is_success() {
                r.content.push(ContentBlock::text(failure_text(report)));
            }
            r
        }
        // A result that breaks the declared outputs must not be sent as structuredContent.
        Outcome::OutputViolation { .. } => {
            CallToolResult::error(vec![ContentBlock::text(failure_text(report))])
        }
        other => match other.result() {
            Some(r) => {
                let mut r = CallToolResult::structured_error(result_object(r));
                r.content.push(ContentBlock::text(failure_text(report)));
                r
            }
            None => CallToolResult::error(vec![ContentBlock::text(failure_text(report))]),
        },
    };
    result.meta = None;
    result
}

fn result_object(result: &task_executor::TaskResult) -> Value {
    json!({
        "status": result.status,
        "reason": result.reason,
        "payload": result.payload,
    })
}

/// "Task x failed: …; run …", the explanation sent with an error result.
pub fn failure_text(report: &RunReport) -> String {
    format!(
        "Task {} failed: {} (run {})",
        report.task,
        report.outcome.describe(),
        report.run_id
    )
}

/// The protocol error for arguments that break a task's input schema: the
/// message lists every violation with its JSON pointer; `data.violations`
/// holds them as objects.
pub fn invalid_arguments(name: &TaskName, violations: &[Violation]) -> ErrorData {
    let list: String = violations.iter().map(|v| format!("\n  - {v}")).collect();
    let message = format!(
        "arguments for tool `{name}` do not match its input schema ({} violation{}):{list}",
        violations.len(),
        if violations.len() == 1 { "" } else { "s" },
    );
    ErrorData::invalid_params(message, Some(json!({ "violations": violations })))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use task_executor::TaskResult;

    use super::*;

    fn task(inputs: Value, outputs: Option<Value>, description: Option<&str>) -> Task {
        Task {
            name: TaskName::new("greet").unwrap(),
            location: "/bin/true".into(),
            description: description.map(str::to_owned),
            inputs,
            outputs,
            timeout: None,
            policy: Default::default(),
            formats: Default::default(),
        }
    }

    fn obj(v: Value) -> JsonObject {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn object_inputs_are_used_unchanged() {
        let inputs = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"who": {"type": "string"}},
            "required": ["who"]
        });
        assert_eq!(input_shape(&inputs), InputShape::Direct(obj(inputs)));
    }

    #[test]
    fn untyped_inputs_become_object_schemas() {
        let shape = input_shape(&json!({"properties": {"n": {"type": "integer"}}}));
        assert_eq!(
            shape,
            InputShape::Direct(obj(
                json!({"type": "object", "properties": {"n": {"type": "integer"}}})
            ))
        );
    }

    #[test]
    fn other_inputs_are_wrapped_with_the_dialect_at_the_root() {
        let shape = input_shape(
            &json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"}),
        );
        assert_eq!(
            shape.schema(),
            &obj(json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"value": {"type": "string"}},
                "required": ["value"]
            }))
        );
        assert!(matches!(
            input_shape(&json!({"type": ["object", "null"]})),
            InputShape::Wrapped(_)
        ));
        assert!(matches!(input_shape(&json!(true)), InputShape::Wrapped(_)));
    }

    #[test]
    fn call_arguments_become_data() {
        let direct = input_shape(&json!({"type": "object"}));
        assert_eq!(direct.data(None), json!({}));
        assert_eq!(direct.data(Some(obj(json!({"a": 1})))), json!({"a": 1}));
        let wrapped = input_shape(&json!({"type": "string"}));
        assert_eq!(wrapped.data(Some(obj(json!({"value": "x"})))), json!("x"));
        assert_eq!(wrapped.data(None), Value::Null);
        let v = Violation {
            pointer: "/0".into(),
            message: "bad".into(),
        };
        assert_eq!(wrapped.locate(v.clone()).pointer, "/value/0");
        assert_eq!(direct.locate(v.clone()), v);
    }

    #[test]
    fn output_schema_only_for_object_outputs() {
        assert_eq!(output_schema(None), None);
        let outputs = json!({"type": "object", "required": ["status"]});
        assert_eq!(output_schema(Some(&outputs)), Some(obj(outputs)));
        assert_eq!(
            output_schema(Some(&json!({"required": ["status"]}))),
            Some(obj(json!({"type": "object", "required": ["status"]})))
        );
        assert_eq!(output_schema(Some(&json!({"type": "string"}))), None);
    }

    #[test]
    fn task_becomes_tool() {
        let outputs = json!({"type": "object"});
        let tool = tool(&task(
            json!({"type": "object"}),
            Some(outputs.clone()),
            Some("says hello"),
        ));
        let wire = serde_json::to_value(&tool).unwrap();
        assert_eq!(
            wire,
            json!({
                "name": "greet",
                "description": "says hello",
                "inputSchema": {"type": "object"},
                "outputSchema": outputs,
                "annotations": {"title": "greet"}
            })
        );
        let tool = super::tool(&task(json!({}), None, Some("  ")));
        assert_eq!(
            tool.description.as_deref(),
            Some("Runs the registered task `greet`.")
        );
        assert!(tool.output_schema.is_none());
    }

    fn report(outcome: Outcome) -> RunReport {
        RunReport {
            run_id: "r1".into(),
            task: TaskName::new("greet").unwrap(),
            outcome,
            exit: None,
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(5),
        }
    }

    fn completed(status: i64) -> Outcome {
        Outcome::Completed {
            result: TaskResult {
                status,
                reason: "why".into(),
                payload: json!({"k": 1}),
            },
        }
    }

    fn texts(r: &CallToolResult) -> Vec<String> {
        r.content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect()
    }

    #[test]
    fn success_carries_the_result_object() {
        let r = call_result(&report(completed(1)));
        let object = json!({"status": 1, "reason": "why", "payload": {"k": 1}});
        assert_eq!(r.structured_content, Some(object.clone()));
        assert_eq!(r.is_error, Some(false));
        let text = texts(&r);
        assert_eq!(text.len(), 1);
        assert_eq!(serde_json::from_str::<Value>(&text[0]).unwrap(), object);
    }

    #[test]
    fn other_status_is_an_error_with_the_result() {
        let r = call_result(&report(completed(2)));
        assert_eq!(r.is_error, Some(true));
        assert_eq!(r.structured_content.as_ref().unwrap()["status"], 2);
        assert!(
            texts(&r)[1].contains("reported status 2 (why)"),
            "{:?}",
            texts(&r)
        );
    }

    #[test]
    fn failed_runs_are_explained() {
        let r = call_result(&report(Outcome::Signalled {
            signal: "SIGSEGV".into(),
        }));
        assert_eq!(r.is_error, Some(true));
        assert_eq!(r.structured_content, None);
        assert_eq!(texts(&r), ["Task greet failed: killed by SIGSEGV (run r1)"]);
        let r = call_result(&report(Outcome::OutputViolation {
            result: TaskResult {
                status: 1,
                reason: String::new(),
                payload: Value::Null,
            },
            violations: vec![Violation {
                pointer: "/payload".into(),
                message: "bad".into(),
            }],
        }));
        assert_eq!(r.structured_content, None);
        assert!(texts(&r)[0].contains("/payload"));
    }

    #[test]
    fn invalid_arguments_name_every_violation() {
        let e = invalid_arguments(
            &TaskName::new("greet").unwrap(),
            &[
                Violation {
                    pointer: "".into(),
                    message: "\"who\" is a required property".into(),
                },
                Violation {
                    pointer: "/n".into(),
                    message: "not an integer".into(),
                },
            ],
        );
        assert_eq!(e.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        assert!(e.message.contains("2 violations"), "{}", e.message);
        assert!(e.message.contains("/n"), "{}", e.message);
        assert_eq!(e.data.unwrap()["violations"][1]["pointer"], "/n");
    }
}
