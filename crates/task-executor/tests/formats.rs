//! `format` per draft and per mode, through [`PreparedTask`] as execution uses it.
//!
//! One table: for each format, a value that matches it and one that does not.
//! Every row runs in drafts 4, 6, 7, 2019-09 and 2020-12, with
//! [`Formats::Assert`] and [`Formats::Annotate`], against `inputs` and
//! `outputs` alike. A matching value is always accepted; a value that does not
//! match is refused exactly when the draft defines the format and the mode
//! checks it there (see `task_executor::schema`'s docs).

use serde_json::{Value, json};
use task_executor::{Formats, PreparedTask, Task, TaskName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Draft {
    D4,
    D6,
    D7,
    D201909,
    D202012,
}

const DRAFTS: [(Draft, &str); 5] = [
    (Draft::D4, "http://json-schema.org/draft-04/schema#"),
    (Draft::D6, "http://json-schema.org/draft-06/schema#"),
    (Draft::D7, "http://json-schema.org/draft-07/schema#"),
    (
        Draft::D201909,
        "https://json-schema.org/draft/2019-09/schema",
    ),
    (
        Draft::D202012,
        "https://json-schema.org/draft/2020-12/schema",
    ),
];

/// A format, the first draft that defines it, a matching and a non-matching value.
struct Row {
    format: &'static str,
    since: Draft,
    valid: &'static str,
    invalid: &'static str,
}

const fn row(
    format: &'static str,
    since: Draft,
    valid: &'static str,
    invalid: &'static str,
) -> Row {
    Row {
        format,
        since,
        valid,
        invalid,
    }
}

const ROWS: &[Row] = &[
    row("date", Draft::D4, "2020-01-31", "2020-13-01"),
    row(
        "date-time",
        Draft::D4,
        "2020-01-31T12:30:00Z",
        "2020-01-31T25:30:00Z",
    ),
    row("time", Draft::D4, "12:30:00+02:00", "12:60:00+02:00"),
    row("email", Draft::D4, "ada@example.com", "ada.example.com"),
    row("idn-email", Draft::D4, "실례@실례.테스트", "실례.테스트"),
    row(
        "hostname",
        Draft::D4,
        "build-1.example.com",
        "-build.example.com",
    ),
    row("idn-hostname", Draft::D7, "실례.테스트", "〮실례.테스트"),
    row("ipv4", Draft::D4, "192.168.0.1", "256.168.0.1"),
    row("ipv6", Draft::D4, "2001:db8::1", "2001:db8:::1"),
    row(
        "uri",
        Draft::D4,
        "https://example.com/a?b=c#d",
        "/relative/path",
    ),
    row(
        "uri-reference",
        Draft::D6,
        "../a/b?c#d",
        "\\\\WINDOWS\\share",
    ),
    row(
        "uuid",
        Draft::D201909,
        "2eb8aa08-aa98-11ea-b4aa-73b441d16380",
        "2eb8aa08-aa98-11ea-b4aa-73b441d1638",
    ),
    row("regex", Draft::D4, "^[a-z]+(-[0-9]+)?$", "^(abc]"),
    row("duration", Draft::D201909, "P4DT12H30M5S", "PT1D"),
    row("json-pointer", Draft::D6, "/a~1b/0", "a/b"),
];

fn prepared(uri: &str, format: &str, formats: Formats) -> PreparedTask {
    let schema = json!({
        "$schema": uri,
        "type": "object",
        "properties": {"v": {"type": "string", "format": format}}
    });
    PreparedTask::new(Task {
        name: TaskName::new("formats").unwrap(),
        location: "/bin/true".into(),
        description: None,
        inputs: schema.clone(),
        outputs: Some(schema),
        timeout: None,
        policy: Default::default(),
        formats,
    })
    .unwrap()
}

/// Whether `value` is refused by the task's `inputs` and by its `outputs` (which must agree).
fn refused(task: &PreparedTask, value: &str) -> bool {
    let v: Value = json!({"v": value});
    let by_inputs = task.validate_args(&v).is_err();
    let by_outputs = task.validate_result(&v).is_err();
    assert_eq!(by_inputs, by_outputs, "inputs and outputs disagree on {v}");
    by_inputs
}

#[test]
fn each_format_in_each_draft_and_mode() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (draft, uri) in DRAFTS {
        for formats in [Formats::Assert, Formats::Annotate] {
            for r in ROWS {
                let task = prepared(uri, r.format, formats);
                let defined = draft >= r.since;
                let checks = match formats {
                    Formats::Assert => true,
                    Formats::Annotate => draft <= Draft::D7,
                };
                let expect_refused = defined && checks;
                if refused(&task, r.valid) {
                    failures.push(format!(
                        "{draft:?} {formats:?} {}: refused valid {:?}",
                        r.format, r.valid
                    ));
                }
                if refused(&task, r.invalid) != expect_refused {
                    let verb = if expect_refused {
                        "accepted"
                    } else {
                        "refused"
                    };
                    failures.push(format!(
                        "{draft:?} {formats:?} {}: {verb} invalid {:?}",
                        r.format, r.invalid
                    ));
                }
                checked += 2;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, DRAFTS.len() * 2 * ROWS.len() * 2);
}

/// The motivating case: 2020-12 (no `$schema`) with the default mode checks `date`.
#[test]
fn a_bad_date_is_refused_by_default_in_2020_12() {
    let task = PreparedTask::new(Task {
        name: TaskName::new("dates").unwrap(),
        location: "/bin/true".into(),
        description: None,
        inputs: json!({"properties": {"d": {"format": "date"}}}),
        outputs: None,
        timeout: None,
        policy: Default::default(),
        formats: Default::default(),
    })
    .unwrap();
    let errors = task.validate_args(&json!({"d": "2020-13-01"})).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].pointer, "/d");
    assert!(task.validate_args(&json!({"d": "2020-12-01"})).is_ok());
}

/// Unknown names are annotations in both modes and every draft: `password` is
/// this crate's own secret marker, `uuid` is unknown before 2019-09.
#[test]
fn unknown_formats_accept_every_value() {
    for (_, uri) in DRAFTS {
        for formats in [Formats::Assert, Formats::Annotate] {
            for format in ["password", "x-made-up", "int32"] {
                let task = prepared(uri, format, formats);
                assert!(
                    !refused(&task, "anything at all"),
                    "{uri} {formats:?} {format}"
                );
            }
        }
    }
}

/// `format` constrains strings only: other types pass whatever the mode.
#[test]
fn formats_ignore_values_that_are_not_strings() {
    let task = PreparedTask::new(Task {
        name: TaskName::new("types").unwrap(),
        location: "/bin/true".into(),
        description: None,
        inputs: json!({"properties": {"d": {"format": "date"}}}),
        outputs: None,
        timeout: None,
        policy: Default::default(),
        formats: Formats::Assert,
    })
    .unwrap();
    for v in [
        json!(5),
        json!(null),
        json!(["2020-13-01"]),
        json!({"x": 1}),
    ] {
        assert!(task.validate_args(&json!({"d": v})).is_ok(), "{v}");
    }
}
