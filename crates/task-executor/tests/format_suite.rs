//! The official JSON-Schema-Test-Suite's `format` tests, in both modes.
//!
//! Every case of `fixtures/json-schema-test-suite/<draft>/optional/format/`
//! (drafts 4, 6, 7, 2019-09, 2020-12; where they come from: the README
//! beside them) runs through [`PreparedTask`], as `inputs` and as
//! `outputs`:
//!
//! - with [`Formats::Assert`] the suite's verdict must hold (its optional
//!   format tests assume `format` is asserted);
//! - with [`Formats::Annotate`] too in drafts 4 to 7, while in 2019-09 and
//!   2020-12 every value must pass (the schemas hold nothing but `format`).
//!
//! Cases our validator gets wrong are listed in [`KNOWN_FAILURES`] with the
//! reason; the test fails on any other failure, and on a listed case that
//! passes (so the list shrinks when `jsonschema` improves).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use task_executor::{Formats, PreparedTask, Task, TaskName};

/// `draft/file: group description / test description` of each case that fails
/// with [`Formats::Assert`] (and, in drafts 4 to 7, with `Annotate`).
const KNOWN_FAILURES: &[&str] = &[];

/// Each folder and its draft's `$schema`, which the suite leaves out of drafts 4 to 7.
const DRAFTS: [(&str, &str); 5] = [
    ("draft4", "http://json-schema.org/draft-04/schema#"),
    ("draft6", "http://json-schema.org/draft-06/schema#"),
    ("draft7", "http://json-schema.org/draft-07/schema#"),
    (
        "draft2019-09",
        "https://json-schema.org/draft/2019-09/schema",
    ),
    (
        "draft2020-12",
        "https://json-schema.org/draft/2020-12/schema",
    ),
];

#[derive(Deserialize)]
struct Group {
    description: String,
    schema: Value,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    description: String,
    data: Value,
    valid: bool,
}

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/json-schema-test-suite")
}

fn files(draft: &str) -> Vec<PathBuf> {
    let dir = suite_dir().join(draft).join("optional/format");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn prepared(schema: &Value, formats: Formats) -> PreparedTask {
    PreparedTask::new(Task {
        name: TaskName::new("suite").unwrap(),
        location: "/bin/true".into(),
        description: None,
        inputs: schema.clone(),
        outputs: Some(schema.clone()),
        timeout: None,
        policy: Default::default(),
        formats,
    })
    .unwrap_or_else(|e| panic!("{schema}: {e}"))
}

/// Whether `task` accepts `data`, as `inputs` and as `outputs` (which must agree).
fn accepts(task: &PreparedTask, data: &Value) -> bool {
    let as_inputs = task.validate_args(data).is_ok();
    assert_eq!(as_inputs, task.validate_result(data).is_ok(), "{data}");
    as_inputs
}

#[test]
fn the_suites_format_tests_in_both_modes() {
    let mut cases = 0;
    let mut failed: Vec<String> = Vec::new();
    let mut wrong_when_annotating: Vec<String> = Vec::new();
    for (draft, uri) in DRAFTS {
        let annotates = matches!(draft, "draft2019-09" | "draft2020-12");
        for file in files(draft) {
            let text = std::fs::read_to_string(&file).unwrap();
            let groups: Vec<Group> =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            for mut group in groups {
                // Without `$schema` a schema is 2020-12 here; the suite's files mean their folder's draft.
                if let Value::Object(schema) = &mut group.schema {
                    schema
                        .entry("$schema")
                        .or_insert_with(|| Value::String(uri.to_owned()));
                }
                let assert = prepared(&group.schema, Formats::Assert);
                let annotate = prepared(&group.schema, Formats::Annotate);
                for case in group.tests {
                    cases += 1;
                    let id = format!(
                        "{draft}/{name}: {} / {}",
                        group.description, case.description
                    );
                    let asserted_right = accepts(&assert, &case.data) == case.valid;
                    if !asserted_right {
                        failed.push(id.clone());
                    }
                    let annotated_right = if annotates {
                        accepts(&annotate, &case.data)
                    } else {
                        // Drafts 4 to 7 check `format` in both modes: the same verdict.
                        accepts(&annotate, &case.data) == accepts(&assert, &case.data)
                    };
                    if !annotated_right {
                        wrong_when_annotating.push(id);
                    }
                }
            }
        }
    }
    eprintln!(
        "{cases} cases in {} drafts, each in both modes; {} fail with `Assert` ({} known)",
        DRAFTS.len(),
        failed.len(),
        KNOWN_FAILURES.len()
    );
    assert!(cases > 1500, "only {cases} cases: is the suite there?");
    assert!(
        wrong_when_annotating.is_empty(),
        "with `Annotate`:\n{}",
        wrong_when_annotating.join("\n")
    );
    let unexpected: Vec<_> = failed
        .iter()
        .filter(|id| !KNOWN_FAILURES.contains(&id.as_str()))
        .collect();
    let fixed: Vec<_> = KNOWN_FAILURES
        .iter()
        .filter(|id| !failed.iter().any(|f| f == *id))
        .collect();
    assert!(
        unexpected.is_empty() && fixed.is_empty(),
        "failing, not listed:\n{unexpected:#?}\nlisted, now passing:\n{fixed:#?}"
    );
}
