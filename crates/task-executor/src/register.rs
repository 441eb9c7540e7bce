//! Registration: from an executable's path to a stored [`Task`].
//!
//! Ties the runner (which runs `<task> schema`), the schema checks (which
//! validate `inputs`/`outputs` against their meta-schema once, here, so that
//! execution never pays for it) and the store together. Nothing is written
//! unless every check passed.
//!
//! Beyond its meta-schema, `inputs` must accept something: a root `false`
//! would register and then refuse every run, so it is refused here. A root
//! `type` other than `"object"` is not refused, although the CLI only ever
//! sends an object as `data`: the MCP server wraps such a schema as the
//! tool's `value` property and passes that value as `data`. Stores do not
//! repeat the check: tasks stored before it load and run as they did.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::registry::{InsertMode, Store, StoreError};
use crate::runner::{DEFAULT_SCHEMA_TIMEOUT, DiscoveryError, Runner, check_executable};
use crate::schema::{SchemaError, check_schema};
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
}

impl Default for RegisterOptions {
    fn default() -> Self {
        Self {
            schema_timeout: DEFAULT_SCHEMA_TIMEOUT,
            timeout: None,
            mode: InsertMode::CreateNew,
            policy: Default::default(),
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
        formats: Default::default(),
    })
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
    use super::*;

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
