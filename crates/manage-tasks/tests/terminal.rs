//! What a task writes cannot drive the user's terminal: control characters
//! in its description, log lines, reason and payload are escaped in text
//! output (`\x1b`, `\x07`) and kept byte for byte in `--json`.

mod common;

use common::*;

/// Clears the screen and rings the bell, from every field a task controls.
const EVIL: &str = r#"#!/bin/bash
if [ "$1" = schema ]; then
  echo '{"description":"evil \u001b[2J\u0007 desc","inputs":{"type":"object"}}'
  exit 0
fi
cat >/dev/null
printf 'out \033[2J\007 line\n'
printf 'err \033[2J\007 line\n' >&2
echo '{"status":1,"reason":"why \u001b[2J\u0007","payload":{"p":"pay \u001b[2J\u0007 \u007f"}}'
"#;

/// No ESC, BEL or DEL in either stream; the escapes that stand for them are there.
fn assert_escaped(what: &str, out: &std::process::Output) {
    assert!(out.status.success(), "{what}: {}", stderr(out));
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        for c in [0x1b, 0x07, 0x7f] {
            assert!(
                !bytes.contains(&c),
                "{what}: raw {c:#04x} on {stream}: {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    let text = format!("{}{}", stdout(out), stderr(out));
    assert!(text.contains(r"\x1b[2J\x07"), "{what}: {text}");
}

#[test]
fn text_output_escapes_control_characters_from_a_task() {
    let env = Env::new("db");
    let script = env.script("evil.sh", EVIL);
    let register = env
        .cmd()
        .args(["register", "--name", "evil", "--location"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(register.status.success(), "{}", stderr(&register));

    for (what, args) in [
        ("list", vec!["list"]),
        ("show", vec!["show", "evil"]),
        ("execute", vec!["execute", "--name", "evil"]),
    ] {
        assert_escaped(what, &env.cmd().args(&args).output().unwrap());
    }
    let execute = env
        .cmd()
        .args(["execute", "--name", "evil"])
        .output()
        .unwrap();
    let shown = format!("{}{}", stdout(&execute), stderr(&execute));
    for field in [
        r"out \x1b[2J\x07 line",
        r"err \x1b[2J\x07 line",
        r"why \x1b[2J\x07",
        r"\x7f",
    ] {
        assert!(shown.contains(field), "{field}: {shown}");
    }
    let batch = env
        .cmd()
        .args(["execute", "--name", "evil", "--batch", "-"])
        .write_stdin("{}\n")
        .output()
        .unwrap();
    assert_escaped("execute --batch", &batch);
    let id = env.all_runs()[0]["run_id"].as_str().unwrap().to_owned();
    for (what, args) in [
        ("runs show", vec!["runs", "show", id.as_str()]),
        ("runs logs", vec!["runs", "logs", id.as_str()]),
    ] {
        assert_escaped(what, &env.cmd().args(&args).output().unwrap());
    }
}

#[test]
fn json_output_keeps_control_characters_as_they_were() {
    let env = Env::new("db");
    let script = env.script("evil.sh", EVIL);
    env.register("evil", &script);
    let shown = env.json(&["show", "evil", "--json"]);
    assert_eq!(shown["description"], "evil \u{1b}[2J\u{7} desc");
    let ran = env.json(&["execute", "--name", "evil", "--json"]);
    assert_eq!(ran["reason"], "why \u{1b}[2J\u{7}", "{ran}");
    assert_eq!(ran["payload"]["p"], "pay \u{1b}[2J\u{7} \u{7f}", "{ran}");
    let id = ran["run_id"].as_str().unwrap();
    let out = env
        .cmd()
        .args(["runs", "logs", id, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let texts: Vec<String> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect();
    assert!(
        texts.contains(&"out \u{1b}[2J\u{7} line".to_owned()),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"err \u{1b}[2J\u{7} line".to_owned()),
        "{texts:?}"
    );
}
