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

/// A store as the original writes it (yaml.v2: keys sorted, `name`,
/// `location`, `schema` in that order, `schema: null` for a task without
/// `inputs`), holding names it accepts and we do not: one good entry and
/// four we cannot use. `LOC` is replaced by a real script.
const GO_STORE: &str = "'a: b':
  name: 'a: b'
  location: LOC
  schema:
    type: object
good:
  name: good
  location: LOC
  schema:
    properties:
      name:
        type: string
    type: object
nothing:
  name: nothing
  location: LOC
  schema: null
with space:
  name: with space
  location: LOC
  schema:
    type: object
ünï:
  name: ünï
  location: LOC
  schema:
    type: object
";

/// The store file's entries, parsed.
fn entries(env: &Env) -> std::collections::BTreeMap<String, serde_json::Value> {
    serde_saphyr::from_str(&std::fs::read_to_string(&env.store).unwrap()).unwrap()
}

#[test]
fn entries_the_original_wrote_that_we_cannot_use_are_listed_kept_and_removable() {
    let env = Env::new("yaml");
    let script = env.script(
        "good.sh",
        &task_script(
            "{}",
            "cat >/dev/null\necho '{\"status\":1,\"reason\":\"ok\",\"payload\":{\"ran\":true}}'",
        ),
    );
    let text = GO_STORE.replace("LOC", &script.display().to_string());
    std::fs::write(&env.store, &text).unwrap();
    let bad = ["a: b", "nothing", "with space", "ünï"];

    // `list` shows all five, the four marked unusable with why.
    let out = env.cmd().arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = stdout(&out);
    for name in ["good"].iter().chain(&bad) {
        assert!(listed.contains(name), "{name} missing from\n{listed}");
    }
    assert_eq!(listed.matches("UNUSABLE").count(), 4, "{listed}");
    let listed = json_stdout(&env.cmd().args(["list", "--json"]).output().unwrap());
    let items = listed["items"].as_array().unwrap();
    let names: Vec<_> = items.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a: b", "good", "nothing", "with space", "ünï"]);
    for item in items {
        if item["name"] == "good" {
            assert!(item.get("error").is_none(), "{item}");
            assert_eq!(item["inputs"]["type"], "object");
        } else {
            assert_eq!(item["error"]["kind"], "unusable_task", "{item}");
            assert_eq!(item["location"], script.display().to_string());
        }
    }
    let reason = |name: &str| {
        items.iter().find(|i| i["name"] == name).unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        reason("with space").starts_with("name `with space` is not a valid task name: "),
        "{}",
        reason("with space")
    );
    assert_eq!(
        reason("nothing"),
        "no schema (schema: null); register it again with --force"
    );

    // The good task runs.
    let out = env
        .cmd()
        .args(["execute", "good", "--json", "--taskArgs", r#"{"name":"x"}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_stdout(&out)["payload"]["ran"], true);

    // A bad one says it is unusable and why, by whichever name it has.
    for (name, why) in [
        ("nothing", "schema: null"),
        ("with space", "not a valid task name"),
        ("ünï", "not a valid task name"),
    ] {
        for cmd in ["execute", "show"] {
            let out = env
                .cmd()
                .args([cmd, "--name", name, "--json"])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{cmd} {name}");
            let err = stderr(&out);
            assert!(
                err.contains(&format!("task `{name}`")),
                "{cmd} {name}: {err}"
            );
            assert!(err.contains("unusable"), "{cmd} {name}: {err}");
            assert!(err.contains(why), "{cmd} {name}: {err}");
            assert_eq!(
                json_stdout(&out)["error"]["kind"],
                "unusable_task",
                "{cmd} {name}"
            );
        }
    }
    // Reading never rewrote the file.
    assert_eq!(std::fs::read_to_string(&env.store).unwrap(), text);

    // Registering another keeps every entry as it was.
    let before = entries(&env);
    env.register("another", &script);
    let mut after = entries(&env);
    assert!(after.remove("another").is_some());
    assert_eq!(after, before);
    assert_eq!(before["nothing"]["schema"], serde_json::Value::Null);
    assert_eq!(before["a: b"]["name"], "a: b");

    // `unregister 'with space'` removes just it.
    let out = env
        .cmd()
        .args(["unregister", "with space"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("with space"), "{}", stdout(&out));
    let mut left = entries(&env);
    assert!(left.remove("another").is_some());
    let mut want = before.clone();
    want.remove("with space");
    assert_eq!(left, want);
    // …and `nothing`, whose name is valid, by that name.
    env.cmd().args(["unregister", "nothing"]).assert().success();
    assert!(!entries(&env).contains_key("nothing"));
    // `register --force` mends one in place.
    env.cmd()
        .args(["register", "--force", "--name", "nothing", "--location"])
        .arg(&script)
        .assert()
        .success();
    env.cmd()
        .args(["execute", "nothing", "--taskArgs", "{}"])
        .assert()
        .code(0);
}

#[test]
fn rewriting_a_store_with_comments_warns_once_and_keeps_every_task() {
    let env = Env::new("yaml");
    let script = env.script("t.sh", &task_script("{}", "echo '{\"status\":1}'"));
    std::fs::write(
        &env.store,
        format!(
            "first:\n  name: first\n  # the script lives here\n  location: {}\n  schema:\n    type: object # any object\n",
            script.display()
        ),
    )
    .unwrap();
    let out = env
        .cmd()
        .args(["register", "--name", "second", "--location"])
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(
        err.matches(
            "warning: tasks.yaml: comments are not kept when the file is rewritten (line 3)"
        )
        .count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("comments").count(), 1, "{err}");
    let after = entries(&env);
    assert_eq!(after.keys().collect::<Vec<_>>(), ["first", "second"]);
    assert!(!std::fs::read_to_string(&env.store).unwrap().contains('#'));
    // Nothing is left to warn about.
    let out = env.cmd().args(["unregister", "second"]).output().unwrap();
    assert!(!stderr(&out).contains("comments"), "{}", stderr(&out));
}

#[test]
fn a_duplicate_key_names_the_key_and_line_and_leaves_the_store_alone() {
    let env = Env::new("yaml");
    let script = env.script("t.sh", &task_script("{}", "echo '{\"status\":1}'"));
    let text = format!(
        "a:\n  name: a\n  location: {0}\n  schema: {{}}\nb:\n  name: b\n  location: {0}\n  schema: {{}}\na:\n  name: a\n  location: {0}\n  schema: {{}}\n",
        script.display()
    );
    std::fs::write(&env.store, &text).unwrap();
    for args in [
        &["list"][..],
        &["register", "--name", "c", "--location", "t.sh"],
    ] {
        let out = env.cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("at line 9"), "{err}");
        assert!(err.contains("the key `a` appears twice"), "{err}");
        assert!(err.contains("remove one of the two"), "{err}");
        assert!(!err.contains("DuplicateKeyPolicy"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&env.store).unwrap(), text);
}
