//! What a registered task *is*: its validated name and its stored definition.
//!
//! Every backend (YAML, SQLite, later PostgreSQL) stores and returns [`Task`];
//! the runner executes a [`PreparedTask`] (its schemas compiled once). Names are checked once, here, because they become
//! file keys, URL path segments and MCP tool names.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::schema::Formats;
use crate::schema::{SchemaError, Validator, Violation};

/// The longest task name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// A task name: 1–128 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TaskName(String);

/// Why a string is not a valid [`TaskName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// The name is empty.
    #[error("task name is empty; use 1-{MAX_NAME_LEN} characters of [A-Za-z0-9_.-]")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("task name is {len} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// Its length in characters.
        len: usize,
    },
    /// The first character is not a letter or digit.
    #[error("task name `{name}` must start with a letter or digit")]
    BadStart {
        /// The rejected name.
        name: String,
    },
    /// A character outside `[A-Za-z0-9_.-]`.
    #[error(
        "task name `{name}` contains {ch:?} at position {position}; only [A-Za-z0-9_.-] are allowed"
    )]
    BadChar {
        /// The rejected name.
        name: String,
        /// The offending character.
        ch: char,
        /// Its 1-based position.
        position: usize,
    },
}

impl TaskName {
    /// Checks `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        let len = name.chars().count();
        if len == 0 {
            return Err(InvalidName::Empty);
        }
        if len > MAX_NAME_LEN {
            return Err(InvalidName::TooLong { len });
        }
        for (i, ch) in name.chars().enumerate() {
            let ok = ch.is_ascii_alphanumeric() || (i > 0 && matches!(ch, '_' | '.' | '-'));
            if !ok {
                if i == 0 && matches!(ch, '_' | '.' | '-') {
                    return Err(InvalidName::BadStart { name });
                }
                return Err(InvalidName::BadChar {
                    name,
                    ch,
                    position: i + 1,
                });
            }
        }
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TaskName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for TaskName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TaskName::new(s).map_err(serde::de::Error::custom)
    }
}

impl AsRef<str> for TaskName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A registered task, as every store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The unique name callers use.
    pub name: TaskName,
    /// Absolute path of the executable.
    pub location: PathBuf,
    /// Human description from the task's AutoSchema, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the `data` object the task accepts.
    pub inputs: Value,
    /// JSON Schema of the result object, when the task declared one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
    /// Default run timeout; `None` means the executor's default.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::task::duration_opt"
    )]
    pub timeout: Option<Duration>,
    /// How the queue treats runs of this task (retries, concurrency, priority).
    /// Set at register time; absent from YAML files that never set it.
    #[serde(default, skip_serializing_if = "Policy::is_default")]
    pub policy: Policy,
    /// Whether the `format` keyword of its schemas is checked (the default) or only an annotation.
    #[serde(default, skip_serializing_if = "Formats::is_default")]
    pub formats: Formats,
}

impl Task {
    /// What the task *is*, as a short hash: its location, schemas and
    /// formats mode (not its description, timeout or queue policy). A
    /// queued run keeps the revision it was submitted for, so a worker
    /// never delivers it to a different script registered later under the
    /// same name. Stable across processes, machines and versions: SHA-256
    /// of a canonical JSON form (object keys sorted).
    pub fn revision(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut text = Vec::with_capacity(256);
        canonical_json(
            &serde_json::json!({
                "location": self.location.to_string_lossy(),
                "inputs": self.inputs,
                "outputs": self.outputs,
                "formats": self.formats,
            }),
            &mut text,
        );
        let digest = Sha256::digest(&text);
        digest[..12].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `value` as JSON with every object's keys in sorted order.
fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                canonical_json(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(v, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// A task's queue policy, set at register time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// How many times a failed run (timeout, crash, no result) is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The first retry's delay; doubled for each further attempt, with jitter.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::task::duration_opt"
    )]
    pub backoff: Option<Duration>,
    /// Also retry runs that complete with a status other than 1.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_on_status: bool,
    /// At most this many running attempts of the task across all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Higher runs are claimed first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Only workers with every one of these tags claim its runs (none: any
    /// worker). Sorted and deduplicated, each a valid tag ([`check_tag`]).
    /// They route runs; they are not part of [`Task::revision`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Policy {
    /// Whether nothing is set.
    pub fn is_default(&self) -> bool {
        *self == Policy::default()
    }

    /// Attempts a run may take: the first plus the retries.
    pub fn max_attempts(&self) -> u32 {
        self.retries.unwrap_or(0).saturating_add(1)
    }
}

/// The longest tag accepted.
pub const MAX_TAG_LEN: usize = 63;

/// Why a string is not a valid tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tag `{tag}` is not valid: {why}; a tag is 1-{MAX_TAG_LEN} characters of [a-z0-9_.-], \
     starting with a letter or digit (e.g. `gpu`, `linux`, `x86_64`)"
)]
pub struct InvalidTag {
    /// The rejected tag.
    pub tag: String,
    /// What is wrong with it.
    pub why: String,
}

/// Checks one tag: `[a-z0-9][a-z0-9_.-]{0,62}`.
pub fn check_tag(tag: &str) -> Result<(), InvalidTag> {
    let bad = |why: String| InvalidTag {
        tag: tag.to_owned(),
        why,
    };
    if tag.is_empty() {
        return Err(bad("it is empty".into()));
    }
    for (i, ch) in tag.chars().enumerate() {
        let ok = ch.is_ascii_lowercase()
            || ch.is_ascii_digit()
            || (i > 0 && matches!(ch, '_' | '.' | '-'));
        if !ok {
            let why = if ch.is_ascii_uppercase() {
                format!("{ch:?} is upper case (tags are lower case)")
            } else if i == 0 && matches!(ch, '_' | '.' | '-') {
                "it must start with a letter or digit".to_owned()
            } else {
                format!("it contains {ch:?} at position {}", i + 1)
            };
            return Err(bad(why));
        }
    }
    // Only ASCII is left: bytes are characters.
    if tag.len() > MAX_TAG_LEN {
        return Err(bad(format!("it is {} characters long", tag.len())));
    }
    Ok(())
}

/// `tags` checked, sorted and deduplicated: the form a [`Policy`] and a
/// worker keep them in.
pub fn normalize_tags<S: AsRef<str>>(tags: &[S]) -> Result<Vec<String>, InvalidTag> {
    let mut out = Vec::with_capacity(tags.len());
    for t in tags {
        check_tag(t.as_ref())?;
        out.push(t.as_ref().to_owned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Parses a comma-separated list of tags (`gpu,linux`; spaces around each
/// are ignored), checked, sorted and deduplicated. An empty text is no tags.
pub fn parse_tags(text: &str) -> Result<Vec<String>, InvalidTag> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    normalize_tags(&parts)
}

/// Serde for `Option<Duration>` as a human string (`"30s"`, `"1m 30s"`).
pub(crate) mod duration_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A task with its schemas compiled, ready to run many times.
#[derive(Debug)]
pub struct PreparedTask {
    task: Task,
    inputs: Validator,
    outputs: Option<Validator>,
    /// Whether its inputs can mark any argument secret (see [`crate::secrets`]).
    secrets: bool,
    /// [`Task::revision`], worked out when first asked for.
    revision: std::sync::OnceLock<String>,
}

impl PreparedTask {
    /// Compiles the task's input and output schemas once, both with the task's [`Formats`].
    pub fn new(task: Task) -> Result<Self, SchemaError> {
        let inputs = Validator::compile(&task.inputs, task.formats)?;
        let outputs = task
            .outputs
            .as_ref()
            .map(|outputs| Validator::compile(outputs, task.formats))
            .transpose()?;
        Ok(Self {
            secrets: crate::secrets::may_hold_secrets(&task.inputs),
            task,
            inputs,
            outputs,
            revision: std::sync::OnceLock::new(),
        })
    }

    /// The task's [`Task::revision`], computed once.
    pub fn revision(&self) -> &str {
        self.revision.get_or_init(|| self.task.revision())
    }

    /// `args` with secret fields masked, as history shows them.
    pub fn mask(&self, args: &Value) -> Value {
        if self.secrets {
            crate::secrets::mask(&self.task.inputs, args)
        } else {
            args.clone()
        }
    }

    /// The secret values in `args`, to hide in log lines.
    pub fn secrets(&self, args: &Value) -> Vec<String> {
        if self.secrets {
            crate::secrets::secrets(&self.task.inputs, args)
        } else {
            Vec::new()
        }
    }

    /// The task definition.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Checks caller arguments against the task's `inputs`, listing every violation.
    /// Violations of secret fields name the field and the rule, never the value.
    pub fn validate_args(&self, args: &Value) -> Result<(), Vec<Violation>> {
        if self.secrets {
            self.inputs
                .validate_hiding(args, || crate::secrets::found(&self.task.inputs, args))
        } else {
            self.inputs.validate(args)
        }
    }

    /// Checks a raw result object against the task's `outputs`, if declared.
    pub fn validate_result(&self, raw: &Value) -> Result<(), Vec<Violation>> {
        match &self.outputs {
            Some(v) => v.validate(raw),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_changes_with_what_the_task_is_and_nothing_else() {
        let base = Task {
            name: TaskName::new("t").unwrap(),
            location: "/opt/t.sh".into(),
            description: None,
            inputs: serde_json::json!({"type": "object", "properties": {"a": {}, "b": {}}}),
            outputs: None,
            timeout: None,
            policy: Policy::default(),
            formats: Formats::Assert,
        };
        let rev = base.revision();
        assert_eq!(rev.len(), 24);
        // Key order, description, timeout and policy do not make another task.
        let mut same = base.clone();
        same.inputs =
            serde_json::from_str(r#"{"properties": {"b": {}, "a": {}}, "type": "object"}"#)
                .unwrap();
        same.description = Some("now described".into());
        same.timeout = Some(Duration::from_secs(3));
        same.policy.retries = Some(2);
        same.policy.tags = vec!["gpu".into()];
        assert_eq!(same.revision(), rev);
        // Its location, schemas and formats mode do.
        let mut moved = base.clone();
        moved.location = "/opt/other.sh".into();
        let mut stricter = base.clone();
        stricter.inputs["required"] = serde_json::json!(["a"]);
        let mut checked = base.clone();
        checked.outputs = Some(serde_json::json!({"type": "object"}));
        let mut lax = base.clone();
        lax.formats = Formats::Annotate;
        for other in [moved, stricter, checked, lax] {
            assert_ne!(other.revision(), rev, "{other:?}");
        }
    }

    #[test]
    fn accepts_valid_names() {
        for n in ["a", "bashTestTask", "x.y-z_1", "9lives", &"a".repeat(128)] {
            assert_eq!(TaskName::new(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn rejects_invalid_names() {
        assert_eq!(TaskName::new(""), Err(InvalidName::Empty));
        assert_eq!(
            TaskName::new("a".repeat(129)),
            Err(InvalidName::TooLong { len: 129 })
        );
        assert!(matches!(
            TaskName::new("-x"),
            Err(InvalidName::BadStart { .. })
        ));
        assert!(matches!(
            TaskName::new("a b"),
            Err(InvalidName::BadChar {
                ch: ' ',
                position: 2,
                ..
            })
        ));
        assert!(matches!(
            TaskName::new("a/b"),
            Err(InvalidName::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            TaskName::new("é"),
            Err(InvalidName::BadChar { .. })
        ));
    }

    #[test]
    fn tags_are_checked_sorted_and_deduplicated() {
        assert_eq!(parse_tags(" linux, gpu ,linux").unwrap(), ["gpu", "linux"]);
        assert_eq!(parse_tags("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_tags("  ").unwrap(), Vec::<String>::new());
        for ok in ["a", "0", "x86_64", "v1.2-rc", &"a".repeat(63)] {
            check_tag(ok).unwrap();
        }
        let why = |t: &str| check_tag(t).unwrap_err().to_string();
        assert!(why("GPU").contains("upper case"), "{}", why("GPU"));
        assert!(why("-x").contains("start with a letter or digit"));
        assert!(why("a b").contains("' ' at position 2"), "{}", why("a b"));
        assert!(why("é").contains("'é'"), "{}", why("é"));
        assert!(why(&"a".repeat(64)).contains("64 characters"));
        assert!(why("").contains("empty"));
        // An empty element of a list is refused, not skipped.
        let err = parse_tags("gpu,,linux").unwrap_err();
        assert_eq!(err.tag, "");
        assert!(err.to_string().starts_with("tag `` is not valid"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn valid_names_round_trip(s in "[A-Za-z0-9][A-Za-z0-9_.-]{0,127}") {
            let name = TaskName::new(s.clone()).unwrap();
            proptest::prop_assert_eq!(name.as_str(), s.as_str());
        }
    }
}
