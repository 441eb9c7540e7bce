//! `manage_tasks tokens` and `audit` through the real binary: the secret
//! shown once, refusals and their exit codes, states, the audit log's
//! pages. (`--json` shapes: `json.rs`; tokens on the MCP transport:
//! `mcp_http.rs`.)

mod common;

use common::{Env, json_stdout, on_sql_backends, stderr, stdout};

on_sql_backends!(
    the_secret_is_printed_once_alone_and_listed_never,
    refusals_exit_2_with_their_kinds,
    an_expired_token_is_listed_as_expired,
    the_audit_log_pages_with_after,
);

fn the_secret_is_printed_once_alone_and_listed_never(env: Env) {
    let out = env
        .cmd()
        .args(["tokens", "create", "--name", "ci", "--scope", "read"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let secret = stdout(&out);
    let secret = secret.trim();
    assert!(
        secret.starts_with("te_") && secret.len() == 67,
        "{secret:?}"
    );
    assert!(stderr(&out).contains("stored nowhere"), "{}", stderr(&out));
    let listed = env.cmd().args(["tokens", "list"]).output().unwrap();
    let text = stdout(&listed);
    assert!(
        text.contains("ci") && text.contains("read") && text.contains("active"),
        "{text}"
    );
    assert!(!text.contains(&secret[3..]), "{text}");
    let audit = env.cmd().args(["audit", "list"]).output().unwrap();
    assert!(!stdout(&audit).contains(&secret[3..]));
    assert!(
        stdout(&audit).contains("token.create"),
        "{}",
        stdout(&audit)
    );
}

fn refusals_exit_2_with_their_kinds(env: Env) {
    env.cmd()
        .args(["tokens", "create", "--name", "ci", "--scope", "run"])
        .assert()
        .success();
    for (args, kind, says) in [
        (
            vec![
                "tokens", "create", "--name", "ci", "--scope", "admin", "--json",
            ],
            "token_exists",
            "token `ci` already exists",
        ),
        (
            vec![
                "tokens",
                "create",
                "--name",
                "has space",
                "--scope",
                "run",
                "--json",
            ],
            "usage",
            "invalid token name",
        ),
        (
            vec!["tokens", "revoke", "nobody", "--json"],
            "unknown_token",
            "no token is called `nobody`",
        ),
        (
            vec!["audit", "list", "--after", "x", "--json"],
            "usage",
            "not a cursor",
        ),
    ] {
        let out = env.cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let doc = json_stdout(&out);
        assert_eq!(doc["error"]["kind"], kind, "{args:?}: {doc}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    // Revoking twice is not an error; it says so.
    env.cmd()
        .args(["tokens", "revoke", "ci"])
        .assert()
        .success();
    let again = env.cmd().args(["tokens", "revoke", "ci"]).output().unwrap();
    assert!(again.status.success());
    assert!(
        stdout(&again).contains("revoked already"),
        "{}",
        stdout(&again)
    );
}

#[test]
fn a_yaml_store_refuses_tokens() {
    let env = Env::new("yaml");
    let out = env
        .cmd()
        .args(["tokens", "create", "--name", "ci", "--scope", "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty(), "no secret without a token");
    assert!(
        stderr(&out)
            .contains("is not supported by the yaml store; use an SQLite or PostgreSQL store"),
        "{}",
        stderr(&out)
    );
}

fn an_expired_token_is_listed_as_expired(env: Env) {
    env.cmd()
        .args([
            "tokens",
            "create",
            "--name",
            "brief",
            "--scope",
            "run",
            "--expires",
            "1ms",
        ])
        .assert()
        .success();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let listed = env.json(&["tokens", "list", "--json"]);
    assert_eq!(listed["items"][0]["state"], "expired", "{listed}");
}

fn the_audit_log_pages_with_after(env: Env) {
    for name in ["a", "b", "c"] {
        env.cmd()
            .args(["tokens", "create", "--name", name, "--scope", "read"])
            .assert()
            .success();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["audit", "list", "--json", "--limit", "2"];
        if let Some(a) = &after {
            args.extend(["--after", a]);
        }
        let page = env.json(&args);
        for item in page["items"].as_array().unwrap() {
            seen.push(item["target"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["c", "b", "a"]);
    let since = env.json(&["audit", "list", "--json", "--since", "1h"]);
    assert_eq!(since["items"].as_array().unwrap().len(), 3);
    let none = env.json(&["audit", "list", "--json", "--since", "2099-01-01T00:00:00Z"]);
    assert!(none["items"].as_array().unwrap().is_empty(), "{none}");
}
