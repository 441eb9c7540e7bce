//! Registration: from an executable's path to a stored [`Task`].
//!
//! Ties the runner (which runs `<task> schema`), the schema checks (which
//! validate `inputs`/`outputs` against their meta-schema once, here, so that
//! execution never pays for it) and the store together. Nothing is written
//! unless every check passed.
//!
//! Beyond its meta-schema, `inputs` must accept a JSON object, because the
//! envelope's `data` always is one: a root `false`, or a root `type` that
//! leaves out `"object"`, would register and then refuse every run, so both
//! are refused here, saying why. Stores do not repeat the check: tasks
//! stored before it load and run as they did (the MCP server still wraps
//! such a task's non-object schema as a `value` property).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::runner::{DEFAULT_SCHEMA_TIMEOUT, DiscoveryError, Runner, check_executable};
use crate::schema::{SchemaError, check_schema};
use crate::store::{InsertMode, Store, StoreError};
use crate::task::{Task, TaskName};

/// How to register a task.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// How long `<task> schema` may take.
    pub schema_timeout: Duration,
    /// The task's default run timeout, stored with it.
    pub timeout: Option<Duration>,
    /// Whether an existing task of that name is replaced (`--force`).
    pub mode: InsertMode,
    /// The task's queue policy, stored with it.
    pub policy: crate::task::Policy,
    /// Whether the task's schemas assert `format` (the default) or only annotate it.
    pub formats: crate::task::Formats,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        Self {
            schema_timeout: DEFAULT_SCHEMA_TIMEOUT,
            timeout: None,
            mode: InsertMode::CreateNew,
            policy: Default::default(),
            formats: Default::default(),
        }
    }
}

/// Why a task could not be registered. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The executable is missing, or `<task> schema` failed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The task's `inputs` is not a valid JSON Schema.
    #[error("task `{name}`: `inputs` {source}")]
    InvalidInputs {
        /// The task being registered.
        name: TaskName,
        /// What is wrong with the schema.
        #[source]
        source: SchemaError,
    },
    /// The task's `outputs` is not a valid JSON Schema.
    #[error("task `{name}`: `outputs` {source}")]
    InvalidOutputs {
        /// The task being registered.
        name: TaskName,
        /// What is wrong with the schema.
        #[source]
        source: SchemaError,
    },
    /// The task's `inputs` is `false`: it accepts no arguments, so every run would be refused.
    #[error(
        "task `{name}`: `inputs` is the schema `false`, which accepts no arguments, so every run would be refused; declare `\"type\": \"object\"` with `properties` (or `true` for any arguments)"
    )]
    InputsAcceptNothing {
        /// The task being registered.
        name: TaskName,
    },
    /// The task's `inputs` has a root `type` that leaves out `"object"`.
    #[error(
        "task `{name}`: `inputs` must accept a JSON object (the envelope's `data` always is one), but its root `type` is {found}; declare `\"type\": \"object\"` with `properties`, and put a single value in one of them"
    )]
    InputsNotAnObject {
        /// The task being registered.
        name: TaskName,
        /// The root `type` found, as JSON.
        found: String,
    },
    /// A tag of its policy is not valid.
    #[error("task `{name}`: {source}")]
    InvalidTag {
        /// The task being registered.
        name: TaskName,
        /// Which tag, and what is wrong with it.
        #[source]
        source: crate::task::InvalidTag,
    },
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs `<location> schema`, checks the schemas it declares, and returns the
/// task definition without storing it.
pub async fn describe(
    runner: &Runner,
    name: TaskName,
    location: &Path,
    options: &RegisterOptions,
) -> Result<Task, RegisterError> {
    let location = check_executable(location)?;
    let auto = runner.discover(&location, options.schema_timeout).await?;
    check_schema(&auto.inputs).map_err(|source| RegisterError::InvalidInputs {
        name: name.clone(),
        source,
    })?;
    if auto.inputs == Value::Bool(false) {
        return Err(RegisterError::InputsAcceptNothing { name });
    }
    if let Some(found) = root_type_without_object(&auto.inputs) {
        return Err(RegisterError::InputsNotAnObject { name, found });
    }
    if let Some(outputs) = &auto.outputs {
        check_schema(outputs).map_err(|source| RegisterError::InvalidOutputs {
            name: name.clone(),
            source,
        })?;
    }
    Ok(Task {
        name,
        location,
        description: auto.description.filter(|d| !d.is_empty()),
        inputs: auto.inputs,
        outputs: auto.outputs,
        timeout: options.timeout,
        policy: options.policy.clone(),
        formats: options.formats,
    })
}

/// The root `type` of `schema`, as JSON, when it leaves out `"object"`.
fn root_type_without_object(schema: &Value) -> Option<String> {
    let ty = schema.get("type")?;
    let allows_object = match ty {
        Value::String(t) => t == "object",
        Value::Array(types) => types.iter().any(|t| t == "object"),
        _ => true,
    };
    (!allows_object).then(|| ty.to_string())
}

/// [`describe`]s the task, then stores it.
pub async fn register(
    store: &Store,
    runner: &Runner,
    name: TaskName,
    location: &Path,
    options: &RegisterOptions,
) -> Result<Task, RegisterError> {
    if options.mode == InsertMode::CreateNew && store.get(&name).await?.is_some() {
        // Fail before running the task's `schema` at all; the insert re-checks under lock.
        return Err(StoreError::Duplicate { name }.into());
    }
    let task = describe(runner, name, location, options).await?;
    store.insert(&task, options.mode).await?;
    Ok(task)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_root_type_without_object_is_named() {
        let refused = [
            (json!({"type": "string"}), "\"string\""),
            (json!({"type": ["string", "null"]}), "[\"string\",\"null\"]"),
            (json!({"type": "array", "items": {}}), "\"array\""),
        ];
        for (schema, found) in refused {
            assert_eq!(
                root_type_without_object(&schema).as_deref(),
                Some(found),
                "{schema}"
            );
        }
        for accepted in [
            json!(true),
            json!({}),
            json!({"type": "object"}),
            json!({"type": ["object", "null"]}),
            json!({"properties": {"a": {"type": "string"}}}),
        ] {
            assert_eq!(root_type_without_object(&accepted), None, "{accepted}");
        }
        let error = RegisterError::InputsNotAnObject {
            name: TaskName::new("x").unwrap(),
            found: "\"string\"".into(),
        };
        assert!(
            error.to_string().contains("its root `type` is \"string\""),
            "{error}"
        );
    }

    #[test]
    fn the_message_names_the_task_says_why_and_how_to_fix() {
        let error = RegisterError::InputsAcceptNothing {
            name: TaskName::new("x").unwrap(),
        };
        assert_eq!(
            error.to_string(),
            "task `x`: `inputs` is the schema `false`, which accepts no arguments, so every run \
             would be refused; declare `\"type\": \"object\"` with `properties` (or `true` for any arguments)"
        );
    }
}
