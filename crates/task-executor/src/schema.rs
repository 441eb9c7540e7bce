//! JSON Schema: checking a task's declared schemas, and validating values against them.
//!
//! Schemas are checked against their draft's meta-schema once, at register time
//! ([`check_schema`]); execution compiles a [`Validator`] once per task and
//! reuses it for every run. Only the bundled drafts are supported (4, 6, 7,
//! 2019-09, 2020-12): remote `$ref`s are never fetched.
//!
//! # `format`
//!
//! People who write `"format": "date"` or `"email"` expect it checked, but
//! drafts 2019-09 and 2020-12 make `format` an annotation by default (drafts
//! 4 to 7 leave it to the implementation, which here checks it). So a task's
//! [`Formats`] decides, the same way in every draft:
//!
//! - [`Formats::Assert`] (the default): a string must match its `format`.
//! - [`Formats::Annotate`]: each draft's own default — an annotation in
//!   2019-09 and 2020-12, checked in drafts 4, 6 and 7.
//!
//! Which names are formats is the draft's vocabulary, as `jsonschema`
//! implements it: every draft knows `date`, `date-time`, `time`, `email`,
//! `idn-email`, `hostname`, `ipv4`, `ipv6`, `uri` and `regex`; draft 6 adds
//! `uri-reference`, `uri-template` and `json-pointer`; draft 7 adds
//! `idn-hostname`, `iri`, `iri-reference` and `relative-json-pointer`;
//! 2019-09 adds `duration` and `uuid`. A format a value is not a string for
//! is ignored (`{"format": "date"}` accepts `5`).
//!
//! **Unknown formats are annotations**, never errors, in both modes: a name
//! the draft does not define (`password`, `binary`, `int32`, `textarea`, or
//! `uuid` in draft 7) accepts every value. Schemas written for OpenAPI or
//! form generators use such names freely (this crate's own secret marker is
//! `"format": "password"`), the specifications tell validators to ignore
//! what they do not know, and failing every value — or every registration —
//! because of a UI hint would make a task unusable. A task that needs a
//! later draft's format checked declares that draft in `$schema`.

use std::borrow::Cow;
use std::fmt;

use jsonschema::Draft as JsDraft;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::secrets::{Found, MASK, hide_secrets};

/// How a schema's `format` keyword is treated; see the [module docs](self#format).
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Formats {
    /// Values must match their `format`, in every draft: the default.
    #[default]
    Assert,
    /// Each draft's default: only an annotation in 2019-09 and 2020-12, checked in drafts 4 to 7.
    Annotate,
}

impl Formats {
    /// Whether this is the default ([`Formats::Assert`]).
    pub fn is_default(&self) -> bool {
        *self == Formats::Assert
    }
}

/// The JSON Schema drafts we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Draft {
    /// Draft 4.
    Draft4,
    /// Draft 6.
    Draft6,
    /// Draft 7 (the original sample's).
    Draft7,
    /// Draft 2019-09.
    Draft201909,
    /// Draft 2020-12, assumed when `$schema` is absent.
    Draft202012,
}

impl Draft {
    fn to_js(self) -> JsDraft {
        match self {
            Draft::Draft4 => JsDraft::Draft4,
            Draft::Draft6 => JsDraft::Draft6,
            Draft::Draft7 => JsDraft::Draft7,
            Draft::Draft201909 => JsDraft::Draft201909,
            Draft::Draft202012 => JsDraft::Draft202012,
        }
    }
}

impl fmt::Display for Draft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Draft::Draft4 => "draft-04",
            Draft::Draft6 => "draft-06",
            Draft::Draft7 => "draft-07",
            Draft::Draft201909 => "2019-09",
            Draft::Draft202012 => "2020-12",
        })
    }
}

/// One way a value breaks a schema.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// JSON pointer to the offending part of the value (`""` is the whole value).
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

/// `at "/user": …`: the pointer as the JSON string it is in `--json`
/// output, so the root (`""`, as RFC 6901 writes it) reads the same in both.
impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = serde_json::to_string(&self.pointer).unwrap_or_default();
        write!(f, "at {at}: {}", self.message)
    }
}

/// Why a schema cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// `$schema` names a draft we do not bundle.
    #[error(
        "unsupported `$schema` `{uri}`; use draft 4, 6, 7, 2019-09 or 2020-12 (or omit `$schema` for 2020-12)"
    )]
    UnsupportedDraft {
        /// The URI found.
        uri: String,
    },
    /// The schema breaks its draft's meta-schema.
    #[error("not a valid {draft} JSON Schema: {}", join(violations))]
    Invalid {
        /// Which draft it was checked against.
        draft: Draft,
        /// Each violation of the meta-schema.
        violations: Vec<Violation>,
    },
    /// The schema passed the meta-schema but cannot be compiled (e.g. a `$ref` to a remote document).
    #[error("schema cannot be compiled: {0}")]
    Compile(String),
}

fn join(v: &[Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The draft a schema declares with `$schema` (2020-12 when absent or not a string).
pub fn detect_draft(schema: &Value) -> Result<Draft, SchemaError> {
    let Some(uri) = schema.get("$schema").and_then(Value::as_str) else {
        return Ok(Draft::Draft202012);
    };
    match JsDraft::default().detect(schema) {
        JsDraft::Draft4 => Ok(Draft::Draft4),
        JsDraft::Draft6 => Ok(Draft::Draft6),
        JsDraft::Draft7 => Ok(Draft::Draft7),
        JsDraft::Draft201909 => Ok(Draft::Draft201909),
        JsDraft::Draft202012 => Ok(Draft::Draft202012),
        _ => Err(SchemaError::UnsupportedDraft {
            uri: uri.to_owned(),
        }),
    }
}

/// Checks `schema` against the meta-schema of the draft it declares, listing every violation.
/// Unknown keywords are tolerated, as the specification requires.
pub fn check_schema(schema: &Value) -> Result<Draft, SchemaError> {
    let draft = detect_draft(schema)?;
    let meta = match draft {
        Draft::Draft4 => jsonschema::draft4::meta::validator(),
        Draft::Draft6 => jsonschema::draft6::meta::validator(),
        Draft::Draft7 => jsonschema::draft7::meta::validator(),
        Draft::Draft201909 => jsonschema::draft201909::meta::validator(),
        Draft::Draft202012 => jsonschema::draft202012::meta::validator(),
    };
    let violations = collect(meta.iter_errors(schema));
    if !violations.is_empty() {
        return Err(SchemaError::Invalid { draft, violations });
    }
    // The meta-schema cannot see everything (unresolvable `$ref`s, bad regexes): compile too.
    // Whether `format` asserts does not change what compiles.
    Validator::compile(schema, Formats::Assert)?;
    Ok(draft)
}

fn collect<'a>(errors: impl Iterator<Item = jsonschema::ValidationError<'a>>) -> Vec<Violation> {
    errors
        .map(|e| Violation {
            pointer: e.instance_path().to_string(),
            message: e.to_string(),
        })
        .collect()
}

/// A compiled schema, built once and reused for every value.
pub struct Validator {
    inner: jsonschema::Validator,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator").finish_non_exhaustive()
    }
}

impl Validator {
    /// Compiles `schema` with the draft it declares, treating `format` as `formats` says.
    pub fn compile(schema: &Value, formats: Formats) -> Result<Self, SchemaError> {
        let draft = detect_draft(schema)?;
        let mut options = jsonschema::options()
            .with_draft(draft.to_js())
            // Already the default; spelled out because the module docs promise it.
            .should_ignore_unknown_formats(true);
        if formats == Formats::Assert {
            options = options.should_validate_formats(true);
        }
        let inner = options
            .build(schema)
            .map_err(|e| SchemaError::Compile(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Validates `value`, listing every violation with its JSON pointer.
    pub fn validate(&self, value: &Value) -> Result<(), Vec<Violation>> {
        if self.inner.is_valid(value) {
            return Ok(());
        }
        Err(collect(self.inner.iter_errors(value)))
    }

    /// Validates `value` as [`validate`](Self::validate) does, with messages
    /// that do not show the secrets `found` lists (called only when `value`
    /// is invalid). A violation at or under a secret value names the rule it
    /// breaks and not the value ("the secret value does not match …"); one
    /// about a value that holds secrets (an object with a secret field
    /// breaking `oneOf`) shows that value masked; and every message then has
    /// the secret values blanked out of it, should a rule quote one some
    /// other way.
    pub fn validate_hiding(
        &self,
        value: &Value,
        found: impl FnOnce() -> Found,
    ) -> Result<(), Vec<Violation>> {
        if self.inner.is_valid(value) {
            return Ok(());
        }
        let found = found();
        Err(self
            .inner
            .iter_errors(value)
            .map(|e| hiding(&e, &found))
            .collect())
    }
}

/// The violation `e` without the secrets in `found`; see [`Validator::validate_hiding`].
fn hiding(e: &jsonschema::ValidationError<'_>, found: &Found) -> Violation {
    let pointer = e.instance_path().to_string();
    let at_or_under = |secret: &String| {
        pointer == *secret
            || pointer
                .strip_prefix(secret.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let holds = |secret: &String| {
        secret
            .strip_prefix(pointer.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    };
    let message = if found.pointers.iter().any(at_or_under) {
        match e.kind() {
            // Its inner error is about a property name; keep that out too.
            jsonschema::error::ValidationErrorKind::PropertyNames { error } => {
                error.masked_with("a property name").to_string()
            }
            _ => e.masked_with("the secret value").to_string(),
        }
    } else if found.pointers.iter().any(holds) {
        let masked = found
            .masked
            .pointer(&pointer)
            .map_or_else(|| format!("\"{MASK}\""), Value::to_string);
        e.masked_with(masked).to_string()
    } else {
        e.to_string()
    };
    let message = match hide_secrets(message.as_bytes(), &found.values) {
        Cow::Borrowed(_) => message,
        Cow::Owned(hidden) => String::from_utf8_lossy(&hidden).into_owned(),
    };
    Violation { pointer, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn detects_each_supported_draft() {
        let cases = [
            ("http://json-schema.org/draft-04/schema#", Draft::Draft4),
            ("http://json-schema.org/draft-06/schema#", Draft::Draft6),
            ("http://json-schema.org/draft-07/schema#", Draft::Draft7),
            (
                "https://json-schema.org/draft/2019-09/schema",
                Draft::Draft201909,
            ),
            (
                "https://json-schema.org/draft/2020-12/schema",
                Draft::Draft202012,
            ),
        ];
        for (uri, draft) in cases {
            assert_eq!(
                detect_draft(&json!({"$schema": uri})).unwrap(),
                draft,
                "{uri}"
            );
            assert_eq!(
                check_schema(&json!({"$schema": uri, "type": "object"})).unwrap(),
                draft
            );
        }
        assert_eq!(detect_draft(&json!({})).unwrap(), Draft::Draft202012);
        assert!(matches!(
            detect_draft(&json!({"$schema": "http://example.com/mine"})),
            Err(SchemaError::UnsupportedDraft { .. })
        ));
    }

    #[test]
    fn invalid_schemas_list_every_violation() {
        let err = check_schema(&json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "objekt",
            "properties": {"a": {"minLength": -1}}
        }))
        .unwrap_err();
        let SchemaError::Invalid { draft, violations } = err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert_eq!(draft, Draft::Draft7);
        assert!(violations.len() >= 2, "{violations:?}");
        assert!(violations.iter().any(|v| v.pointer == "/type"));
        assert!(
            violations
                .iter()
                .any(|v| v.pointer == "/properties/a/minLength")
        );
    }

    #[test]
    fn unknown_keywords_are_tolerated() {
        check_schema(&json!({"type": "object", "x-ui": {"widget": "textarea"}})).unwrap();
        check_schema(&json!(true)).unwrap();
    }

    /// Every rule a secret breaks is named, with its pointer, and the secret is not.
    #[test]
    fn violations_of_secret_fields_do_not_show_the_value() {
        let schema = json!({
            "type": "object",
            "$defs": {"pin": {"type": "integer", "maximum": 99, "writeOnly": true}},
            "properties": {
                "token": {"type": "string", "writeOnly": true, "pattern": "^x", "minLength": 40},
                "mode": {"format": "password", "enum": ["a", "b"]},
                "mail": {"writeOnly": true, "format": "email"},
                "pin": {"$ref": "#/$defs/pin"},
                "keys": {"additionalProperties": {"writeOnly": true, "type": "integer"}}
            },
            "oneOf": [{"required": ["nope"]}, {"required": ["never"]}]
        });
        let args = json!({
            "token": "hunter\"2", "mode": "s3cretmode", "mail": "not-an-email-s3cret",
            "pin": 123456, "keys": {"k": "s3cretkey"}
        });
        let v = Validator::compile(&schema, Formats::Assert).unwrap();
        let task_found = || crate::secrets::found(&schema, &args);
        let errs = v.validate_hiding(&args, task_found).unwrap_err();
        let text = errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        for secret in [
            "hunter",
            "s3cretmode",
            "s3cret",
            "123456",
            "s3cretkey",
            "not-an-email",
        ] {
            assert!(!text.contains(secret), "{secret} shown in:\n{text}");
        }
        for (pointer, rule) in [
            ("/token", r#"the secret value does not match "^x""#),
            ("/token", "the secret value is shorter than 40 characters"),
            ("/mode", r#"the secret value is not one of "a" or "b""#),
            ("/mail", r#"the secret value is not a "email""#),
            ("/pin", "the secret value is greater than the maximum of 99"),
            ("/keys/k", r#"the secret value is not of type "integer""#),
        ] {
            assert!(
                errs.iter()
                    .any(|e| e.pointer == pointer && e.message == rule),
                "{pointer}: {rule} missing from:\n{text}"
            );
        }
        // The whole object breaks `oneOf`: shown masked.
        let root = errs.iter().find(|e| e.pointer.is_empty()).unwrap();
        assert!(root.message.contains(r#""token":"********""#), "{root}");
        assert!(root.message.contains("'oneOf'"), "{root}");
        // Without secrets, messages are jsonschema's own.
        let plain = v.validate(&args).unwrap_err();
        assert!(plain.iter().any(|e| e.message.contains("s3cretmode")));
    }

    #[test]
    fn validator_reports_pointers() {
        let v = Validator::compile(
            &json!({
                "type": "object",
                "required": ["user", "cmd"],
                "properties": {"user": {"type": "string"}, "n": {"type": "integer", "maximum": 3}}
            }),
            Formats::Assert,
        )
        .unwrap();
        assert!(v.validate(&json!({"user": "a", "cmd": "b"})).is_ok());
        let errs = v.validate(&json!({"user": 5, "n": 9})).unwrap_err();
        let pointers: Vec<_> = errs.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/user"), "{errs:?}");
        assert!(pointers.contains(&"/n"), "{errs:?}");
        assert!(pointers.contains(&""), "{errs:?}"); // missing `cmd`
    }
}
