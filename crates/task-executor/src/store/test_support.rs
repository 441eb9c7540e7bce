//! Test fixtures shared by the store backends' tests: the same tasks go
//! through every backend.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::task::{Task, TaskName};

pub fn name(s: &str) -> TaskName {
    TaskName::new(s).unwrap()
}

/// A minimal task called `n`.
pub fn task(n: &str) -> Task {
    Task {
        name: name(n),
        location: PathBuf::from(format!("/opt/tasks/{n}.sh")),
        description: None,
        inputs: json!({"type": "object", "properties": {"x": {"type": "string"}}}),
        outputs: None,
        timeout: None,
        policy: Default::default(),
        formats: Default::default(),
    }
}

/// A task called `n` with every optional field set, and the given timeout.
pub fn full_task(n: &str, timeout: Duration) -> Task {
    Task {
        description: Some("Greets someone".into()),
        outputs: Some(json!({"type": "object", "required": ["greeting"]})),
        timeout: Some(timeout),
        ..task(n)
    }
}
