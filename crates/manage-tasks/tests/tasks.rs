//! Registering, listing, showing and unregistering tasks, on both store backends.
//!
//! - registration of the bundled examples and what `list`/`show` report
//! - refusals at register time: each bad task is named, the store is untouched
//! - store selection, the default store notice, unreadable stores
//! - 30 concurrent registers: none lost

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::json;

const KINDS: [&str; 2] = ["yaml", "db"];

#[test]
fn registers_lists_and_shows_the_examples() {
    for kind in KINDS {
        let env = Env::new(kind);
        env.register("greet", &examples_dir().join("bash.sh"));
        env.register("wordcount", &examples_dir().join("python.py"));

        let out = env.cmd().args(["list", "--json"]).output().unwrap();
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        let list = json_stdout(&out);
        let names: Vec<_> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["greet", "wordcount"], "{kind}");

        let out = env
            .cmd()
            .args(["show", "--name", "wordcount", "--json"])
            .output()
            .unwrap();
        let task = json_stdout(&out);
        assert_eq!(task["location"], json!(examples_dir().join("python.py")));
        assert_eq!(task["inputs"]["required"], json!(["text"]));
        assert_eq!(
            task["outputs"]["required"],
            json!(["status", "reason", "payload"])
        );
        assert!(
            task["description"]
                .as_str()
                .unwrap()
                .contains("Counts the words")
        );

        // Human table.
        env.cmd()
            .arg("list")
            .assert()
            .success()
            .stdout(predicate::str::contains("greet").and(predicate::str::contains("wordcount")));
    }
}

#[test]
fn register_stores_an_absolute_location_and_timeout() {
    let env = Env::new("db");
    env.script("t.sh", &task_script("{}", "echo '{\"status\":1}'"));
    env.cmd()
        .args([
            "register",
            "--name",
            "t",
            "--location",
            "./t.sh",
            "--timeout",
            "90s",
            "--json",
        ])
        .assert()
        .success();
    let task = json_stdout(&env.cmd().args(["show", "t", "--json"]).output().unwrap());
    assert_eq!(
        task["location"],
        json!(env.dir.path().canonicalize().unwrap().join("t.sh"))
    );
    assert_eq!(task["timeout_ms"], json!(90_000));
    assert_eq!(task["timeout"], json!("1m 30s"));
}

#[test]
fn duplicate_register_is_refused_and_force_replaces() {
    for kind in KINDS {
        let env = Env::new(kind);
        let script = env.script(
            "t.sh",
            &task_script(r#"{"type":"object"}"#, "echo '{\"status\":1}'"),
        );
        env.register("t", &script);
        let before = env.store_bytes();
        env.cmd()
            .args(["register", "--name", "t", "--location"])
            .arg(&script)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("task `t` is already registered"));
        assert_eq!(
            env.store_bytes(),
            before,
            "{kind}: store changed by a refused register"
        );

        env.script(
            "t.sh",
            &task_script(
                r#"{"type":"object","required":["x"]}"#,
                "echo '{\"status\":1}'",
            ),
        );
        env.cmd()
            .args(["register", "--name", "t", "--force", "--location"])
            .arg(&script)
            .assert()
            .success();
        let task = json_stdout(&env.cmd().args(["show", "t", "--json"]).output().unwrap());
        assert_eq!(task["inputs"]["required"], json!(["x"]), "{kind}");
    }
}

#[test]
fn bad_tasks_are_refused_with_the_reason() {
    let env = Env::new("yaml");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "fails",
            task_script("{}", "").replace("exit 0", "exit 4"),
            "exited with code 4",
        ),
        (
            "junk",
            "#!/bin/bash\necho 'this is not json'\n".into(),
            "json",
        ),
        (
            "noinputs",
            "#!/bin/bash\necho '{\"name\":\"x\"}'\n".into(),
            "inputs",
        ),
        (
            "badschema",
            task_script(r#"{"type":"objekt"}"#, ""),
            "inputs",
        ),
        (
            "badoutputs",
            "#!/bin/bash\necho '{\"inputs\":{},\"outputs\":{\"required\":\"status\"}}'\n".into(),
            "outputs",
        ),
        (
            "baddraft",
            task_script(r#"{"$schema":"http://example.com/my-meta"}"#, ""),
            "unsupported `$schema`",
        ),
    ];
    for (name, body, needle) in cases {
        let script = env.script(&format!("{name}.sh"), &body);
        let out = env
            .cmd()
            .args(["register", "--name", name, "--location"])
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        let err = stderr(&out).to_lowercase();
        assert!(
            err.contains(&needle.to_lowercase()),
            "{name}: expected {needle:?} in {err}"
        );
        assert!(
            err.contains(&format!("{name}.sh")) || err.contains(name),
            "{name}: error names neither task nor file: {err}"
        );
    }
    assert!(!env.store.exists(), "a refused register created the store");
}

#[test]
fn a_hanging_schema_command_times_out() {
    let env = Env::new("db");
    let script = env.script("hang.sh", "#!/bin/bash\nsleep 30\n");
    let started = std::time::Instant::now();
    env.cmd()
        .args([
            "register",
            "--name",
            "hang",
            "--schema-timeout",
            "300ms",
            "--location",
        ])
        .arg(&script)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("300ms"));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn missing_or_non_executable_locations_are_refused() {
    let env = Env::new("db");
    env.cmd()
        .args(["register", "--name", "x", "--location", "./nope.sh"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nope.sh"));
    let path = env.dir.path().join("plain.sh");
    std::fs::write(&path, "#!/bin/sh\n").unwrap();
    env.cmd()
        .args(["register", "--name", "x", "--location"])
        .arg(&path)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("plain.sh").and(predicate::str::contains("executable")));
}

#[test]
fn invalid_task_names_are_refused() {
    let env = Env::new("db");
    let script = env.script("t.sh", &task_script("{}", ""));
    for bad in ["-lead", "has space", "sl/ash", ""] {
        env.cmd()
            .args(["register", "--location"])
            .arg(&script)
            .arg(format!("--name={bad}"))
            .assert()
            .code(2)
            .stderr(predicate::str::contains("task name"));
    }
    env.cmd()
        .args(["register", "--location"])
        .arg(&script)
        .arg(format!("--name={}", "a".repeat(129)))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("128"));
}

#[test]
fn unregister_removes_and_reports_unknown_names() {
    for kind in KINDS {
        let env = Env::new(kind);
        env.register("greet", &examples_dir().join("bash.sh"));
        env.cmd()
            .args(["unregister", "--name", "greet"])
            .assert()
            .success();
        let out = env.cmd().args(["list", "--json"]).output().unwrap();
        assert_eq!(
            json_stdout(&out),
            json!({"items": [], "next": null}),
            "{kind}"
        );
        env.cmd()
            .args(["unregister", "--name", "greet"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("task `greet` is not registered"));
        env.cmd().args(["show", "greet"]).assert().code(2);
    }
}

#[test]
fn store_is_chosen_by_suffix_and_bad_specs_are_refused() {
    let env = Env::new("db");
    env.cmd()
        .env("TASK_STORE", env.dir.path().join("tasks.json"))
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("tasks.json").and(predicate::str::contains(".yaml")));
    // sqlite: URL and --store override TASK_STORE.
    let db = env.dir.path().join("other.bin");
    env.cmd()
        .arg("--store")
        .arg(format!("sqlite://{}", db.display()))
        .args(["register", "--name", "greet", "--location"])
        .arg(examples_dir().join("bash.sh"))
        .assert()
        .success();
    assert!(db.exists());
    assert!(!env.store.exists());
}

#[test]
fn default_store_is_sqlite_under_xdg_data_home_with_a_notice() {
    let env = Env::new("db");
    let data = env.dir.path().join("data");
    let mut cmd = env.cmd();
    cmd.env_remove("TASK_STORE").env("XDG_DATA_HOME", &data);
    cmd.args(["register", "--name", "greet", "--location"])
        .arg(examples_dir().join("bash.sh"))
        .assert()
        .success()
        .stderr(
            predicate::str::contains("TASK_STORE")
                .and(predicate::str::contains("task-executor/tasks.db")),
        );
    assert!(data.join("task-executor/tasks.db").exists());
    // HOME fallback.
    let mut cmd = env.cmd();
    cmd.env_remove("TASK_STORE");
    cmd.arg("list")
        .assert()
        .success()
        .stderr(predicate::str::contains(
            ".local/share/task-executor/tasks.db",
        ));
    // --quiet silences the notice.
    let mut cmd = env.cmd();
    cmd.env_remove("TASK_STORE").env("XDG_DATA_HOME", &data);
    cmd.args(["-q", "list"])
        .assert()
        .success()
        .stderr(predicate::str::is_empty());
}

#[test]
fn an_unparsable_yaml_store_is_reported_and_never_overwritten() {
    let env = Env::new("yaml");
    let garbage = b"greet:\n  name: greet\n  location: [unclosed\n";
    std::fs::write(&env.store, garbage).unwrap();
    env.cmd()
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("tasks.yaml").and(predicate::str::contains("line")));
    env.cmd()
        .args(["register", "--name", "greet", "--location"])
        .arg(examples_dir().join("bash.sh"))
        .assert()
        .code(2);
    env.cmd().args(["unregister", "greet"]).assert().code(2);
    assert_eq!(env.store_bytes(), garbage);
}

#[test]
fn a_corrupt_sqlite_store_is_reported_and_never_overwritten() {
    let env = Env::new("db");
    let garbage = vec![b'x'; 8192];
    std::fs::write(&env.store, &garbage).unwrap();
    env.cmd()
        .args(["register", "--name", "greet", "--location"])
        .arg(examples_dir().join("bash.sh"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("tasks.db"));
    env.cmd().arg("list").assert().code(2);
    assert_eq!(env.store_bytes(), garbage);
}

#[test]
fn thirty_concurrent_registers_all_land() {
    for kind in KINDS {
        let env = Env::new(kind);
        let script = env.script(
            "t.sh",
            &task_script(r#"{"type":"object"}"#, "echo '{\"status\":1}'"),
        );
        let children: Vec<_> = (0..30)
            .map(|i| {
                let mut cmd =
                    std::process::Command::new(assert_cmd::cargo::cargo_bin("manage_tasks"));
                cmd.env("TASK_STORE", &env.store)
                    .args([
                        "-q",
                        "register",
                        "--name",
                        &format!("task{i:02}"),
                        "--location",
                    ])
                    .arg(&script)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{kind}: {}", stderr(&out));
        }
        let list = json_stdout(&env.cmd().args(["list", "--json"]).output().unwrap());
        assert_eq!(
            list["items"].as_array().unwrap().len(),
            30,
            "{kind}: registers were lost"
        );
    }
}

#[test]
fn completions_are_generated() {
    let env = Env::new("db");
    for shell in ["bash", "zsh", "fish"] {
        env.cmd()
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(
                predicate::str::contains("manage_tasks").and(predicate::str::contains("register")),
            );
    }
}

/// Each subcommand's `--help` opens with its own description, the one the
/// top-level help lists (subcommands are built lazily, and a flattened
/// argument group's doc comment once replaced theirs).
#[test]
fn every_subcommand_help_opens_with_its_own_description() {
    let env = Env::new("yaml");
    let top = stdout(&env.cmd().arg("--help").output().unwrap());
    let listed: Vec<(String, String)> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| {
            let (name, about) = l.trim().split_once(char::is_whitespace)?;
            Some((name.to_owned(), about.trim().to_owned()))
        })
        .filter(|(name, _)| name != "help")
        .collect();
    assert!(listed.len() >= 10, "subcommands listed: {listed:?}\n{top}");
    for (name, about) in listed {
        let help = stdout(&env.cmd().args([&name, "--help"]).output().unwrap());
        let first = help.lines().next().unwrap_or_default();
        // The listing wraps long descriptions; compare their first words.
        let start: String = about.chars().take(30).collect();
        assert!(
            first.starts_with(&start),
            "`{name} --help` opens with {first:?}, not its description {about:?}"
        );
    }
}

/// A reader that stops early (`| head`) is not an error: no message, exit 0,
/// whichever way the output is written (a table, or JSON through serde_json,
/// whose error hides the io::Error). The output is larger than stdout's buffer.
#[test]
fn a_closed_stdout_ends_quietly() {
    let env = Env::new("db");
    env.register("greet", &examples_dir().join("bash.sh"));
    let lines = "{\"name\":\"Ada\"}\n".repeat(200);
    env.cmd()
        .args(["-q", "submit", "--name", "greet", "--batch", "-"])
        .write_stdin(lines)
        .assert()
        .success();
    for args in [
        &["runs", "list", "--limit", "200"][..],
        &["runs", "list", "--limit", "200", "--json"],
        &["completions", "bash"],
        &["completions", "zsh"],
    ] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("manage_tasks"))
            .env("TASK_STORE", &env.store)
            .env("HOME", env.dir.path())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before the child has even reached `main`: its writes fail.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{args:?}: {}", stderr(&out));
    }
}

/// `register --force` re-reads the schema; what it is not given again keeps
/// its stored value (it used to reset the timeout and the queue policy).
#[test]
fn register_force_keeps_what_is_not_given_again() {
    for kind in KINDS {
        let env = Env::new(kind);
        let script = env.script(
            "t.sh",
            &task_script(r#"{"type":"object"}"#, "echo '{\"status\":1}'"),
        );
        let register = |extra: &[&str]| {
            let mut cmd = env.cmd();
            cmd.args(["-q", "register", "--name", "t", "--location"])
                .arg(&script)
                .args(extra);
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{kind} {extra:?}: {}", stderr(&out));
        };
        register(&[
            "--timeout",
            "30s",
            "--retries",
            "2",
            "--backoff",
            "3s",
            "--retry-on-status",
            "--concurrency",
            "4",
            "--priority",
            "5",
            "--formats",
            "annotate",
        ]);
        // A new schema, and nothing else given.
        std::fs::write(
            &script,
            task_script(
                r#"{"type":"object","properties":{"x":{"type":"string"}}}"#,
                "true",
            ),
        )
        .unwrap();
        register(&["--force"]);
        let t = env.json(&["show", "t", "--json"]);
        assert_eq!(t["inputs"]["properties"]["x"]["type"], "string", "{kind}");
        assert_eq!(t["timeout"], "30s", "{kind}");
        assert_eq!(t["formats"], "annotate", "{kind}");
        assert_eq!(
            t["policy"],
            json!({"retries": 2, "backoff": "3s", "backoff_ms": 3000, "retry_on_status": true,
                   "concurrency": 4, "priority": 5, "tags": []}),
            "{kind}"
        );
        // What is given again replaces the stored value, and only that.
        register(&[
            "--force",
            "--retries",
            "0",
            "--no-retry-on-status",
            "--formats",
            "assert",
        ]);
        let t = env.json(&["show", "t", "--json"]);
        assert_eq!(t["policy"]["retries"], 0, "{kind}");
        assert_eq!(t["policy"]["retry_on_status"], false, "{kind}");
        assert_eq!(t["policy"]["priority"], 5, "{kind}");
        assert_eq!(t["formats"], "assert", "{kind}");
        assert_eq!(t["timeout_ms"], 30000, "{kind}");
    }
}

#[test]
fn unregister_removes_the_tasks_schedules_and_says_so() {
    let env = Env::new("db");
    let script = env.task("greet", "g.sh", "{}", "echo '{\"status\":1}'");
    env.register("other", &script);
    for (task, cron) in [
        ("greet", "0 9 * * *"),
        ("greet", "0 10 * * *"),
        ("other", "0 11 * * *"),
    ] {
        env.cmd()
            .args(["-q", "schedule", "add", task, "--cron", cron])
            .assert()
            .success();
    }
    env.cmd()
        .args(["unregister", "greet"])
        .assert()
        .success()
        .stdout(predicate::str::contains("removed its 2 schedules"));
    let left = env.json(&["schedule", "list", "--json"]);
    let tasks: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["task"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["other"]);
}

/// The task is `--name NAME` or NAME everywhere, and usage lines say so.
#[test]
fn usage_lines_show_the_positional_name() {
    let env = Env::new("yaml");
    for cmd in [
        &["register"][..],
        &["unregister"],
        &["show"],
        &["execute"],
        &["submit"],
        &["schedule", "add"],
    ] {
        let help = stdout(&env.cmd().args(cmd).arg("--help").output().unwrap());
        let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap();
        assert!(usage.contains("<--name <NAME>|NAME>"), "{cmd:?}: {usage}");
    }
    let help = stdout(&env.cmd().args(["runs", "list", "--help"]).output().unwrap());
    assert!(
        help.contains("[NAME]") && help.contains("[alias: --task]"),
        "{help}"
    );
    // The same word means the same everywhere: --grace is SIGTERM → SIGKILL.
    for cmd in [&["execute"][..], &["worker"], &["mcp"]] {
        let help = stdout(&env.cmd().args(cmd).arg("--help").output().unwrap());
        // The flag's line and its wrapped continuation.
        let grace: String = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("--grace"))
            .take(2)
            .collect();
        assert!(grace.contains("SIGTERM and SIGKILL"), "{cmd:?}: {help}");
    }
}

#[test]
fn store_urls_are_accepted_and_secrets_in_them_never_shown() {
    let env = Env::new("db");
    let url = format!("sqlite://{}", env.dir.path().join("via-url.db").display());
    let script = env.task("t", "t.sh", "{}", "echo '{\"status\":1}'");
    env.cmd()
        .env("TASK_STORE", &url)
        .args(["-q", "register", "--name", "t", "--location"])
        .arg(&script)
        .assert()
        .success();
    assert!(env.dir.path().join("via-url.db").is_file());
    for (spec, says) in [
        (
            "postgres://ada:hunter2@db.example/tasks?sslmode=sometimes",
            "unknown sslmode `sometimes`",
        ),
        (
            "postgresql://ada:hunter2@db.example:notaport/tasks",
            "not a valid PostgreSQL URL",
        ),
        ("sqlite::memory:", "keeps nothing"),
    ] {
        let out = env
            .cmd()
            .env("TASK_STORE", spec)
            .args(["list", "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{spec}");
        let text = format!("{}{}", stderr(&out), stdout(&out));
        assert!(text.contains(says), "{spec}: {text}");
        assert!(!text.contains("hunter2"), "{spec}: {text}");
        assert_eq!(json_stdout(&out)["error"]["kind"], "usage", "{spec}");
    }
}
