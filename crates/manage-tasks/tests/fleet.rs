//! Workers on machines with different tasks (issue 15), with real worker
//! processes on one SQLite file:
//!
//! - `register --tags` is checked, shown and kept (or replaced) by `--force`
//! - `worker --tags` claims only runs whose task's tags it has all of; an
//!   untagged worker leaves them queued, and `runs show` says why
//! - `workers list` shows the running workers (and `--json`); a killed one
//!   shows as gone, a stopped one is removed
//! - a task whose executable is missing on the worker's machine is left
//!   queued (uncounted), the worker says so, and runs it once it is back

mod common;

use common::*;
use serde_json::{Value, json};

const FAST: [&str; 4] = ["--poll", "20ms", "--lease", "1s"];

fn run(env: &Env, id: &str) -> Value {
    env.json(&["runs", "show", id, "--json"])
}

fn workers(env: &Env) -> Vec<Value> {
    env.json(&["workers", "list", "--json"])["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The background processes' stderr so far.
fn bg_err(env: &Env) -> String {
    std::fs::read_to_string(env.dir.path().join("bg.err")).unwrap_or_default()
}

/// A task that reports status 1 after `sleep` seconds (0 by default).
fn sleeper(env: &Env, name: &str, register: &[&str]) -> std::path::PathBuf {
    let script = env.script(
        &format!("{name}.sh"),
        &task_script(
            "{}",
            "read -r e\ns=${e##*\\\"sleep\\\":}; s=${s%%[,\\}]*}\ncase \"$s\" in *[!0-9.]*|'') s=0;; esac\nsleep $s\necho '{\"status\":1,\"reason\":\"ok\"}'",
        ),
    );
    env.cmd()
        .args(["-q", "register", "--name", name])
        .args(register)
        .arg("--location")
        .arg(&script)
        .assert()
        .success();
    script
}

#[test]
fn register_tags_are_checked_shown_and_kept_by_force() {
    for kind in ["db", "yaml"] {
        let env = Env::new(kind);
        sleeper(&env, "t", &["--tags", "linux, gpu,gpu"]);
        let shown = env.json(&["-q", "show", "t", "--json"]);
        assert_eq!(shown["policy"]["tags"], json!(["gpu", "linux"]), "{kind}");
        let text = env.cmd().args(["-q", "show", "t"]).output().unwrap();
        assert!(
            stdout(&text).contains("workers with tags gpu, linux"),
            "{kind}: {}",
            stdout(&text)
        );
        let listed = env.json(&["-q", "list", "--json"]);
        assert_eq!(
            listed["items"][0]["policy"]["tags"],
            json!(["gpu", "linux"])
        );

        // A bad tag is refused before anything runs or is stored.
        let script = env.dir.path().join("t.sh");
        for bad in ["GPU", "gpu,,linux", "-x", "a b"] {
            let out = env
                .cmd()
                .args(["-q", "register", "--name", "u", &format!("--tags={bad}")])
                .arg("--location")
                .arg(&script)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{kind} {bad}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("is not valid"),
                "{kind} {bad}: {}",
                stderr(&out)
            );
        }
        let names: Vec<Value> = env.json(&["-q", "list", "--json"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].clone())
            .collect();
        assert_eq!(names, [json!("t")], "{kind}");
        if kind == "db" {
            let out = env
                .cmd()
                .args(["worker", "--until-idle", "--tags", "gpu,Linux"])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            assert!(
                stderr(&out).contains("tag `Linux` is not valid: 'L' is upper case"),
                "{}",
                stderr(&out)
            );
        }

        // --force keeps them unless given again; `--tags ''` removes them.
        let force = |extra: &[&str]| {
            env.cmd()
                .args(["-q", "register", "--force", "--name", "t"])
                .args(extra)
                .arg("--location")
                .arg(&script)
                .assert()
                .success();
            env.json(&["-q", "show", "t", "--json"])["policy"]["tags"].clone()
        };
        assert_eq!(
            force(&["--retries", "1"]),
            json!(["gpu", "linux"]),
            "{kind}"
        );
        assert_eq!(force(&["--tags", "arm"]), json!(["arm"]), "{kind}");
        assert_eq!(force(&["--tags", ""]), json!([]), "{kind}");
        if kind == "yaml" {
            // Only written when set: what the original tool reads is unchanged.
            let text = String::from_utf8(env.store_bytes()).unwrap();
            assert!(!text.contains("tags"), "{text}");
        }
    }
}

#[test]
fn a_worker_claims_only_runs_whose_tags_it_has_and_runs_show_says_why_others_wait() {
    let env = Env::new("db");
    sleeper(&env, "gpu", &["--tags", "gpu,linux"]);
    sleeper(&env, "plain", &[]);
    let tagged = env.submit_many("gpu", 2, "{}");
    let plain = env.submit_many("plain", 1, "{}");

    // No worker at all.
    let r = run(&env, &tagged[0]);
    assert_eq!(
        r["waiting"],
        "no live worker; start one with `manage_tasks worker --tags gpu,linux`"
    );

    // An untagged worker runs the untagged task and leaves the others queued.
    let mut args = vec!["-q", "worker", "--until-idle"];
    args.extend(FAST);
    env.cmd()
        .args(&args)
        .timeout(std::time::Duration::from_secs(30))
        .assert()
        .success();
    assert_eq!(run(&env, &plain[0])["state"], "completed");
    for id in &tagged {
        let r = run(&env, id);
        assert_eq!(
            (r["state"].clone(), r["attempt"].clone()),
            (json!("queued"), json!(0))
        );
    }

    // Live workers without all the tags: `runs show` names the missing ones.
    let mut untagged = env.spawn(&["-q", "worker", "--poll", "20ms", "--id", "plain-w"]);
    let mut half = env.spawn(&[
        "-q", "worker", "--poll", "20ms", "--id", "gpu-w", "--tags", "gpu",
    ]);
    wait_until(10.0, "two live workers", || workers(&env).len() == 2);
    let r = run(&env, &tagged[0]);
    assert_eq!(
        r["waiting"],
        "no live worker has tags linux; start one with `manage_tasks worker --tags gpu,linux`",
        "{r}"
    );
    let text = env
        .cmd()
        .args(["runs", "show", &tagged[0]])
        .output()
        .unwrap();
    assert!(
        stdout(&text).contains("waiting:   no live worker has tags linux;"),
        "{}",
        stdout(&text)
    );
    // A finished run says nothing of the kind.
    assert!(run(&env, &plain[0]).get("waiting").is_none());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(run(&env, &tagged[1])["state"], "queued");

    // A worker with both (and more) takes them.
    let mut args = vec!["-q", "worker", "--until-idle", "--tags", "linux,gpu,arm"];
    args.extend(FAST);
    env.cmd()
        .args(&args)
        .timeout(std::time::Duration::from_secs(30))
        .assert()
        .success();
    for id in &tagged {
        let r = run(&env, id);
        assert_eq!(r["state"], "completed", "{r}");
        assert!(r.get("waiting").is_none(), "{r}");
    }
    for w in [&mut untagged, &mut half] {
        signal(w.id(), "-TERM");
        assert!(w.wait().unwrap().success());
    }
    assert!(!bg_err(&env).contains("panicked"), "{}", bg_err(&env));
}

#[test]
fn workers_list_shows_running_workers_and_which_are_gone() {
    let env = Env::new("db");
    sleeper(&env, "slow", &[]);
    assert!(stdout(&env.cmd().args(["workers", "list"]).output().unwrap()).contains("No workers."));
    assert_eq!(
        env.json(&["workers", "list", "--json"]),
        json!({"items": [], "next": null})
    );

    let mut busy = env.spawn(&[
        "-q",
        "worker",
        "--poll",
        "20ms",
        "--lease",
        "900ms",
        "--id",
        "busy",
        "--concurrency",
        "2",
        "--tags",
        "gpu,linux",
    ]);
    let mut doomed = env.spawn(&[
        "-q", "worker", "--poll", "20ms", "--lease", "900ms", "--id", "doomed",
    ]);
    env.submit_many("slow", 1, r#"{"sleep":3}"#);
    // The run goes to one of them; its next heartbeat says so.
    wait_until(10.0, "a worker running the run", || {
        workers(&env).iter().any(|w| w["running"] == 1)
    });
    let listed = workers(&env);
    let mut ids: Vec<&str> = listed.iter().map(|w| w["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["busy", "doomed"], "{listed:?}");
    let b = listed.iter().find(|w| w["id"] == "busy").unwrap();
    assert_eq!(b["tags"], json!(["gpu", "linux"]));
    assert_eq!(
        (b["concurrency"].clone(), b["lease_ms"].clone()),
        (json!(2), json!(900))
    );
    assert_eq!(b["pid"], busy.id());
    assert_eq!(b["state"], "live");
    assert!(!b["host"].as_str().unwrap().is_empty());
    assert!(b["last_seen_ago_ms"].as_u64().unwrap() <= 900, "{b}");
    let text = stdout(&env.cmd().args(["workers", "list"]).output().unwrap());
    for needle in [
        "ID",
        "LAST HEARTBEAT",
        "busy",
        "gpu,linux",
        "doomed",
        "live",
        "ago",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }

    // Killed: it cannot say goodbye; once its lease has passed it is gone.
    signal(doomed.id(), "-KILL");
    doomed.wait().unwrap();
    wait_until(10.0, "the killed worker gone", || {
        workers(&env)
            .iter()
            .any(|w| w["id"] == "doomed" && w["state"] == "gone")
    });
    assert!(stdout(&env.cmd().args(["workers", "list"]).output().unwrap()).contains("gone"));
    // Stopped: it removes itself.
    signal(busy.id(), "-TERM");
    assert!(busy.wait().unwrap().success());
    let ids: Vec<Value> = workers(&env).iter().map(|w| w["id"].clone()).collect();
    assert_eq!(ids, [json!("doomed")]);
}

#[test]
fn a_task_missing_on_this_machine_is_left_queued_then_run_once_it_is_back() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new("db");
    let script = sleeper(&env, "local", &[]);
    let noexec = sleeper(&env, "noexec", &[]);
    let aside = env.dir.path().join("local.sh.aside");
    std::fs::rename(&script, &aside).unwrap();
    // Workers may be on other machines: the run is queued, with a note.
    let out = env.cmd().args(["submit", "local"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert!(
        stderr(&out).contains(&format!(
            "note: task `local` cannot run on this machine (`{}` no longer exists); its runs \
             wait for a worker on a machine where it can",
            script.display()
        )),
        "{}",
        stderr(&out)
    );
    let mut worker = env.spawn(&["worker", "--poll", "20ms", "--recheck", "1s"]);
    let said = format!(
        "run {id}: task `local`: `{}` does not exist on this machine; left for another worker \
         (looked at again every 1s)",
        script.display()
    );
    wait_until(10.0, "the worker to say it left the run", || {
        bg_err(&env).contains(&said)
    });
    let r = run(&env, &id);
    assert_eq!(
        (r["state"].clone(), r["attempt"].clone()),
        (json!("queued"), json!(0)),
        "{r}"
    );
    assert_eq!(r["error"], Value::Null, "never failed for it: {r}");
    // Looked at again every second, but not claimed again while it is missing.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(bg_err(&env).matches(&said).count(), 1, "{}", bg_err(&env));
    assert_eq!(run(&env, &id)["state"], "queued");

    // Not executable here: the same.
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let other = env.submit_many("noexec", 1, "{}").remove(0);
    let said = format!(
        "run {other}: task `noexec`: `{}` is not executable by this worker's user on this machine; \
         left for another worker",
        noexec.display()
    );
    wait_until(10.0, "the worker to find it not executable", || {
        bg_err(&env).contains(&said)
    });
    assert_eq!(run(&env, &other)["state"], "queued");

    // Put back: each runs, on its first attempt.
    std::fs::rename(&aside, &script).unwrap();
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_until(10.0, "both runs completed", || {
        [&id, &other]
            .iter()
            .all(|i| run(&env, i)["state"] == "completed")
    });
    for i in [&id, &other] {
        assert_eq!(
            run(&env, i)["attempt"],
            1,
            "the attempts given back were not counted"
        );
    }
    signal(worker.id(), "-TERM");
    assert!(worker.wait().unwrap().success());
    let err = bg_err(&env);
    assert!(
        err.contains(&format!("run {id} (local) completed")),
        "{err}"
    );
    assert!(err.contains("2 left for other workers"), "{err}");
}
