//! Compatibility with the original Go tool: its flags, its output contract and its YAML store.
//!
//! - single-dash long flags (`-name`, `-location`, `-taskArgs`)
//! - a store file in the original format loads and executes unchanged
//! - files we write keep the original's fields

mod common;

use common::*;
use serde_json::json;

#[test]
fn original_single_dash_flags_work() {
    let env = Env::new("yaml");
    env.cmd()
        .args(["register", "-name", "bashTestTask", "-location"])
        .arg(examples_dir().join("bash.sh"))
        .assert()
        .success();
    let out = env
        .cmd()
        .args([
            "execute",
            "-name",
            "bashTestTask",
            "-taskArgs",
            r#"{"name":"Go"}"#,
            "-json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_stdout(&out)["payload"]["greeting"], "Hello, Go.");
    env.cmd()
        .args(["unregister", "-name", "bashTestTask"])
        .assert()
        .success();
}

#[test]
fn a_store_written_by_the_original_loads_and_runs() {
    let env = Env::new("yaml");
    let fixture = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../task-executor/tests/fixtures/original_tasks.yaml"),
    )
    .unwrap();
    // Point the fixture's locations at real scripts of ours.
    let python = write_script(
        env.dir.path(),
        "python.py",
        &task_script(
            "{}",
            "cat >/dev/null\necho hello\necho '{\"status\":1,\"reason\":\"ok\",\"payload\":{\"foo\":\"bar\"}}'",
        ),
    );
    let mut store = String::new();
    for line in fixture.lines() {
        if line.trim_start().starts_with("location:") {
            let indent = &line[..line.len() - line.trim_start().len()];
            store.push_str(&format!("{indent}location: {}\n", python.display()));
        } else {
            store.push_str(line);
            store.push('\n');
        }
    }
    std::fs::write(&env.store, &store).unwrap();

    let list = json_stdout(&env.cmd().args(["list", "--json"]).output().unwrap());
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"pythonTestTask".to_owned()), "{names:?}");

    let out = env
        .cmd()
        .args(["execute", "-name", "pythonTestTask", "-json", "-taskArgs"])
        .arg(r#"{"cmd":"hostname","requestId":"214215161263","user":"tester"}"#)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_stdout(&out)["payload"], json!({"foo": "bar"}));
    // The original's schema is enforced: a missing required field is refused.
    env.cmd()
        .args([
            "execute",
            "-name",
            "pythonTestTask",
            "-taskArgs",
            r#"{"cmd":"hostname"}"#,
        ])
        .assert()
        .code(2);
    // Reading never rewrote the file.
    assert_eq!(std::fs::read_to_string(&env.store).unwrap(), store);
}

#[test]
fn yaml_we_write_keeps_the_original_fields() {
    let env = Env::new("yaml");
    env.register("greet", &examples_dir().join("bash.sh"));
    let text = std::fs::read_to_string(&env.store).unwrap();
    for field in ["greet:", "name: greet", "location: ", "schema:"] {
        assert!(text.contains(field), "missing {field:?} in\n{text}");
    }
}
