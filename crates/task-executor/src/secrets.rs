//! Secret arguments: which input fields are secret, and keeping their
//! values out of history, logs and output.
//!
//! A field is secret when its schema says `"writeOnly": true` or `"format":
//! "password"`. [`mask`] replaces such values by [`MASK`] in a copy of the
//! arguments (what history stores and front ends show); [`secrets`] lists
//! their values so that [`hide_secrets`] (and the [`HideSecrets`] sink) can
//! blank them out of log lines a task prints. No I/O here.
//!
//! # What is hidden in logs
//!
//! [`secrets`] lists every string (of any length: a two-character PIN is
//! still a PIN) and every number (as its JSON text, `1234`) in secret
//! values, leaf by leaf inside secret objects and arrays. It does not list
//! booleans and `null`: a secret flag has two values that anyone can guess,
//! and hiding every `true`, `false` or `null` in every log line would garble
//! the log while protecting nothing. [`mask`] masks them all the same. The
//! flip side of short secrets: a one-character secret hides that character
//! wherever the task prints it.

use std::borrow::Cow;

use serde_json::Value;

use crate::log::{LogLine, LogSink};

/// What replaces a secret value.
pub const MASK: &str = "********";

/// `text` with every occurrence of a secret replaced by [`MASK`]. Occurrences
/// that overlap (of `ab` and `bc` in `abc`, or of `ab` inside `abc`) become one mask.
pub fn hide_secrets<'a>(text: &'a [u8], secrets: &[String]) -> Cow<'a, [u8]> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        spans.extend(memchr::memmem::find_iter(text, s.as_bytes()).map(|at| (at, at + s.len())));
    }
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = Vec::with_capacity(text.len());
    let mut copied = 0;
    let mut spans = spans.into_iter().peekable();
    while let Some((start, mut end)) = spans.next() {
        while let Some(&(next_start, next_end)) = spans.peek() {
            if next_start >= end {
                break;
            }
            end = end.max(next_end);
            spans.next();
        }
        out.extend_from_slice(&text[copied..start]);
        out.extend_from_slice(MASK.as_bytes());
        copied = end;
    }
    out.extend_from_slice(&text[copied..]);
    Cow::Owned(out)
}

/// A sink that hides secret values before passing lines on (e.g. to the terminal).
pub struct HideSecrets<'a> {
    /// Where lines go.
    pub inner: &'a dyn LogSink,
    /// The values to hide (see [`secrets`]).
    pub secrets: Vec<String>,
}

impl LogSink for HideSecrets<'_> {
    fn line(&self, line: LogLine<'_>) {
        let text = hide_secrets(line.text, &self.secrets);
        self.inner.line(LogLine {
            text: &text,
            ..line
        });
    }
}

/// Whether a property's schema marks it secret.
fn is_secret(schema: &Value) -> bool {
    schema.get("writeOnly").and_then(Value::as_bool) == Some(true)
        || schema.get("format").and_then(Value::as_str) == Some("password")
}

/// `args` with the values of secret fields (per `schema`'s `properties`,
/// recursively, through `items` and `allOf`/`anyOf`/`oneOf`) replaced by [`MASK`].
pub fn mask(schema: &Value, args: &Value) -> Value {
    let mut out = args.clone();
    walk(schema, &mut out, &mut |v| *v = Value::String(MASK.into()));
    out
}

/// The values to hide in logs: the strings and numbers in secret fields of
/// `args`, without duplicates, longest first.
pub fn secrets(schema: &Value, args: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut copy = args.clone();
    walk(schema, &mut copy, &mut |v| leaves(v, &mut found));
    found.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    found.dedup();
    found
}

fn leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if !s.is_empty() => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
        Value::String(_) | Value::Bool(_) | Value::Null => {}
    }
}

fn walk(schema: &Value, value: &mut Value, on_secret: &mut dyn FnMut(&mut Value)) {
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(subs) = schema.get(key).and_then(Value::as_array) {
            for sub in subs {
                walk(sub, value, on_secret);
            }
        }
    }
    match value {
        Value::Object(map) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (name, sub) in props {
                if let Some(v) = map.get_mut(name) {
                    if is_secret(sub) {
                        on_secret(v);
                    } else {
                        walk(sub, v, on_secret);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    if is_secret(sub) {
                        on_secret(item);
                    } else {
                        walk(sub, item, on_secret);
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `secrets` in a stable order, for comparing.
    fn sorted_secrets(schema: &Value, args: &Value) -> Vec<String> {
        let mut s = secrets(schema, args);
        s.sort();
        s
    }

    /// One schema, arguments, what `mask` gives and what `secrets` lists (sorted).
    struct Case {
        name: &'static str,
        schema: Value,
        args: Value,
        masked: Value,
        secrets: &'static [&'static str],
    }

    fn check(cases: Vec<Case>) {
        for c in cases {
            assert_eq!(mask(&c.schema, &c.args), c.masked, "{}: mask", c.name);
            assert_eq!(
                sorted_secrets(&c.schema, &c.args),
                c.secrets,
                "{}: secrets",
                c.name
            );
        }
    }

    #[test]
    fn masks_write_only_and_password_fields_recursively() {
        let schema = json!({
            "type": "object",
            "properties": {
                "user": {"type": "string"},
                "token": {"type": "string", "writeOnly": true},
                "db": {"type": "object", "properties": {
                    "password": {"type": "string", "format": "password"},
                    "host": {"type": "string"}
                }},
                "keys": {"type": "array", "items": {"type": "string", "writeOnly": true}},
                "pairs": {"type": "array", "items": {"properties": {"pin": {"writeOnly": true}}}}
            },
            "allOf": [{"properties": {"extra": {"format": "password"}}}]
        });
        let args = json!({
            "user": "ada", "token": "s3cret", "db": {"password": "hunter2", "host": "h"},
            "keys": ["k1", "k2"], "pairs": [{"pin": 1234, "x": 1}], "extra": "e", "other": "o"
        });
        assert_eq!(
            mask(&schema, &args),
            json!({
                "user": "ada", "token": MASK, "db": {"password": MASK, "host": "h"},
                "keys": [MASK, MASK], "pairs": [{"pin": MASK, "x": 1}], "extra": MASK, "other": "o"
            })
        );
        assert_eq!(
            sorted_secrets(&schema, &args),
            ["1234", "e", "hunter2", "k1", "k2", "s3cret"]
        );
    }

    #[test]
    fn hides_secrets_in_a_log_line() {
        let hide = |text: &str, secrets: &[&str]| {
            let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
            String::from_utf8(hide_secrets(text.as_bytes(), &secrets).into_owned()).unwrap()
        };
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "login ada pw=hunter2",
                &["hunter2"],
                "login ada pw=********",
            ),
            ("pin 42, again 42", &["42"], "pin ********, again ********"),
            ("x=7", &["7"], "x=********"),
            // One inside another, in either order: no tail of the longer leaks.
            ("key abc!", &["ab", "abc"], "key ********!"),
            ("key abc!", &["abc", "ab"], "key ********!"),
            // Overlapping occurrences become one mask.
            ("abcd", &["abc", "bcd"], "********"),
            ("nothing here", &["secret", ""], "nothing here"),
            ("tok tok", &["tok"], "******** ********"),
        ];
        for (text, secrets, expected) in cases {
            assert_eq!(
                hide(text, secrets),
                *expected,
                "{text:?} hiding {secrets:?}"
            );
        }
        assert!(matches!(
            hide_secrets(b"clean", &["x".into()]),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn secret_values_of_every_type() {
        let secret = json!({"writeOnly": true});
        let names = [
            "pin", "ratio", "creds", "keys", "a", "b", "flag", "none", "empty",
        ];
        let schema = json!({"properties": Value::Object(
            names.iter().map(|n| (n.to_string(), secret.clone())).collect()
        )});
        check(vec![
            Case {
                name: "a number, as its JSON text",
                schema: schema.clone(),
                args: json!({"pin": 1234, "ratio": 0.5}),
                masked: json!({"pin": MASK, "ratio": MASK}),
                secrets: &["0.5", "1234"],
            },
            Case {
                name: "an object, masked whole; its scalar leaves hidden",
                schema: schema.clone(),
                args: json!({"creds": {"user": "ada", "key": "k", "port": 5432, "tls": true, "x": null}}),
                masked: json!({"creds": MASK}),
                secrets: &["5432", "ada", "k"],
            },
            Case {
                name: "an array, masked whole; its leaves hidden, nested too",
                schema: schema.clone(),
                args: json!({"keys": ["k1", ["k2", 3]]}),
                masked: json!({"keys": MASK}),
                secrets: &["3", "k1", "k2"],
            },
            Case {
                name: "short strings: one and two characters",
                schema: schema.clone(),
                args: json!({"a": "x", "b": "42"}),
                masked: json!({"a": MASK, "b": MASK}),
                secrets: &["42", "x"],
            },
            Case {
                name: "booleans, null and the empty string: masked, never listed",
                schema: schema.clone(),
                args: json!({"flag": true, "none": null, "empty": ""}),
                masked: json!({"flag": MASK, "none": MASK, "empty": MASK}),
                secrets: &[],
            },
        ]);
    }

    #[test]
    fn secrets_are_listed_once_longest_first() {
        let secret = json!({"writeOnly": true});
        let schema = json!({"properties": {"a": secret, "b": secret, "c": secret, "d": secret}});
        let args = json!({"a": "ab", "b": "abc", "c": "ab", "d": "zz"});
        assert_eq!(secrets(&schema, &args), ["abc", "ab", "zz"]);
    }

    #[test]
    fn the_sink_hides_what_secrets_lists() {
        use std::sync::Mutex;

        use crate::log::Stream;
        use crate::task::TaskName;

        #[derive(Default)]
        struct Keep(Mutex<Vec<String>>);
        impl LogSink for Keep {
            fn line(&self, line: LogLine<'_>) {
                let text = String::from_utf8_lossy(line.text).into_owned();
                self.0.lock().unwrap().push(text);
            }
        }
        let schema =
            json!({"properties": {"pin": {"writeOnly": true}, "user": {"type": "string"}}});
        let args = json!({"pin": 4711, "user": "ada"});
        let keep = Keep::default();
        let sink = HideSecrets {
            inner: &keep,
            secrets: secrets(&schema, &args),
        };
        let task = TaskName::new("t").unwrap();
        sink.line(LogLine {
            task: &task,
            run_id: "r",
            stream: Stream::Stdout,
            text: b"ada entered 4711",
            truncated: false,
        });
        assert_eq!(*keep.0.lock().unwrap(), ["ada entered ********"]);
    }
}
