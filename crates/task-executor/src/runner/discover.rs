//! Discovery: checking that a location is an executable and asking it for its AutoSchema.
//!
//! Owns `check_executable` (path → canonical executable regular file) and
//! `discover` (`<task> schema`, run directly, no shell, in its own process
//! group with a timeout, stdout bounded by the result limit), and every way
//! that can fail, as [`DiscoveryError`]. These are the only errors of the
//! runner, because a task that cannot describe itself cannot be registered;
//! each message names the path and says how to fix the task.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::fs::Access;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::timeout as within;
use tokio_util::sync::CancellationToken;

use super::RunnerConfig;
use super::process::{bounded_by, kill_group, signal_name, spawn_in_group, terminate};
use crate::protocol::{AutoSchema, SCHEMA_ARG, json_type};

/// How much of stderr is kept for error messages.
const STDERR_TAIL: usize = 4 * 1024;
/// How much of a non-JSON stdout is quoted in [`DiscoveryError::NotJson`].
const EXCERPT_CHARS: usize = 200;
/// Longest grace between SIGTERM and SIGKILL for `<task> schema`.
const MAX_SCHEMA_GRACE: Duration = Duration::from_secs(1);

const FIX: &str = "the task must print its AutoSchema {\"inputs\": <JSON Schema>, \"outputs\": <JSON Schema>} on stdout and exit 0 when called with `schema`";

/// Why a location is not a task: it is not an executable, or `<task> schema` did not yield an AutoSchema.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Nothing exists at the path.
    #[error(
        "`{path}` does not exist; give the path of the task's executable (a relative path is resolved from the current directory)"
    )]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The path (or one of its directories) cannot be examined.
    #[error(
        "cannot access `{path}`: {message}; check the path and the permissions of its directories"
    )]
    Inaccessible {
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The path is a directory, device, socket, ….
    #[error("`{path}` is not a regular file; give the path of the task's executable file")]
    NotAFile {
        /// The canonical path.
        path: PathBuf,
    },
    /// The file exists but this user may not execute it.
    #[error("`{path}` is not executable; make it executable with `chmod +x {path}`")]
    NotExecutable {
        /// The canonical path.
        path: PathBuf,
    },
    /// The OS refused to start it (bad `#!` line, missing interpreter, wrong architecture).
    #[error(
        "cannot start `{path}`: {message}; check that it begins with a `#!` line naming an installed interpreter (or is a binary for this machine)"
    )]
    SpawnFailed {
        /// The canonical path.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// `<task> schema` ran longer than the timeout and was killed.
    #[error(
        "`{path} schema` did not finish within {}; the task must print its AutoSchema and exit promptly when called with `schema`",
        humantime::format_duration(*.after)
    )]
    TimedOut {
        /// The canonical path.
        path: PathBuf,
        /// The timeout that expired.
        after: Duration,
    },
    /// `<task> schema` exited with a non-zero code.
    #[error("`{path} schema` exited with code {code}; {FIX}{}", stderr_suffix(.stderr))]
    ExitedNonZero {
        /// The canonical path.
        path: PathBuf,
        /// The exit code.
        code: i32,
        /// The end of its stderr (at most 4 KiB), trimmed.
        stderr: String,
    },
    /// `<task> schema` was killed by a signal.
    #[error("`{path} schema` was killed by {signal}; {FIX}{}", stderr_suffix(.stderr))]
    Signalled {
        /// The canonical path.
        path: PathBuf,
        /// The signal's name, e.g. `SIGSEGV`.
        signal: String,
        /// The end of its stderr (at most 4 KiB), trimmed.
        stderr: String,
    },
    /// `<task> schema` printed more than the result limit.
    #[error(
        "`{path} schema` printed more than {limit} bytes on stdout; an AutoSchema must be smaller than that (print logs on stderr)"
    )]
    TooLarge {
        /// The canonical path.
        path: PathBuf,
        /// The limit in bytes.
        limit: usize,
    },
    /// stdout holds no JSON document.
    #[error("`{path} schema` printed no JSON: {error}; {FIX}{}", excerpt_suffix(.excerpt))]
    NotJson {
        /// The canonical path.
        path: PathBuf,
        /// The parser's error, with line and column.
        error: String,
        /// The first ~200 characters of stdout.
        excerpt: String,
    },
    /// stdout is JSON but not an AutoSchema.
    #[error("`{path} schema` printed JSON that is not an AutoSchema: {message}; {FIX}")]
    NotAutoSchema {
        /// The canonical path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Waiting for the process or reading its output failed.
    #[error("running `{path} schema` failed: {message}")]
    Io {
        /// The canonical path.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with:\n{stderr}")
    }
}

fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(" (stdout began with {excerpt:?})")
    }
}

/// The canonical path of `location`, checked to be an executable regular file.
pub(super) fn check_executable(location: &Path) -> Result<PathBuf, DiscoveryError> {
    let path = match std::fs::canonicalize(location) {
        Ok(path) => path,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(DiscoveryError::NotFound {
                path: location.to_owned(),
            });
        }
        Err(e) => {
            return Err(DiscoveryError::Inaccessible {
                path: location.to_owned(),
                message: e.to_string(),
            });
        }
    };
    let meta = std::fs::metadata(&path).map_err(|e| DiscoveryError::Inaccessible {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(DiscoveryError::NotAFile { path });
    }
    // access(2) answers for this user (root passes with any x bit); the mode
    // check catches root and files without any x bit.
    if meta.permissions().mode() & 0o111 == 0 || rustix::fs::access(&path, Access::EXEC_OK).is_err()
    {
        return Err(DiscoveryError::NotExecutable { path });
    }
    Ok(path)
}

/// Runs `<location> schema` for at most `timeout` and parses its AutoSchema.
pub(super) async fn discover(
    config: &RunnerConfig,
    location: &Path,
    timeout: Duration,
) -> Result<AutoSchema, DiscoveryError> {
    let path = check_executable(location)?;
    let mut cmd = Command::new(&path);
    cmd.arg(SCHEMA_ARG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let (mut child, mut group) =
        spawn_in_group(&mut cmd, None).map_err(|e| DiscoveryError::SpawnFailed {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let limit = config.result_limit;

    let drained = CancellationToken::new();
    let mut out = Vec::new();
    let mut too_large = false;
    let mut err_tail = Vec::new();
    let mut read_error = None;
    let pgid = group.pgid;
    let read_stdout = bounded_by(&drained, async {
        if let Err(e) = read_bounded(stdout, &mut out, limit).await {
            if e.kind() == io::ErrorKind::FileTooLarge {
                too_large = true;
                // No point letting it print on: stop it now rather than at the timeout.
                kill_group(pgid, rustix::process::Signal::KILL);
            } else {
                read_error = Some(e);
            }
        }
    });
    let read_stderr = bounded_by(&drained, keep_tail(stderr, &mut err_tail));
    let supervise = async {
        let (timed_out, status) = match within(timeout, child.wait()).await {
            Ok(status) => (false, status),
            Err(_elapsed) => {
                let grace = config.grace.min(MAX_SCHEMA_GRACE);
                (true, terminate(&mut child, group.pgid, grace).await)
            }
        };
        group.finish(config.grace.min(MAX_SCHEMA_GRACE), None).await;
        drained.cancel();
        (timed_out, status)
    };
    let ((timed_out, status), _, _) = tokio::join!(supervise, read_stdout, read_stderr);
    drop(group);

    let io_error = |e: io::Error| DiscoveryError::Io {
        path: path.clone(),
        message: e.to_string(),
    };
    if too_large {
        return Err(DiscoveryError::TooLarge { path, limit });
    }
    if timed_out {
        return Err(DiscoveryError::TimedOut {
            path,
            after: timeout,
        });
    }
    let status = status.map_err(io_error)?;
    if let Some(e) = read_error {
        return Err(io_error(e));
    }
    let stderr = tail_text(&err_tail);
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return Err(DiscoveryError::Signalled {
            path,
            signal: signal_name(signal),
            stderr,
        });
    }
    match status.code() {
        Some(0) => parse_autoschema(&path, &out),
        code => Err(DiscoveryError::ExitedNonZero {
            path,
            code: code.unwrap_or(-1),
            stderr,
        }),
    }
}

/// Reads `reader` to EOF into `out`; `FileTooLarge` once more than `limit` bytes arrive.
async fn read_bounded<R: AsyncRead + Unpin>(
    mut reader: R,
    out: &mut Vec<u8>,
    limit: usize,
) -> io::Result<()> {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if out.len() + n > limit {
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Reads `reader` to EOF keeping roughly its last [`STDERR_TAIL`] bytes in `tail`.
async fn keep_tail<R: AsyncRead + Unpin>(mut reader: R, tail: &mut Vec<u8>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
}

/// The last [`STDERR_TAIL`] bytes of stderr as trimmed text, starting at a line when possible.
fn tail_text(tail: &[u8]) -> String {
    let mut start = tail.len().saturating_sub(STDERR_TAIL);
    if start > 0
        && let Some(nl) = memchr::memchr(b'\n', &tail[start..])
    {
        start += nl + 1;
    }
    String::from_utf8_lossy(&tail[start..]).trim().to_owned()
}

/// Finds and checks the AutoSchema in what `<task> schema` printed.
///
/// The whole of stdout should be one JSON document (surrounding whitespace is
/// fine). Otherwise log lines before the document are tolerated: the last line
/// that is a JSON object with `inputs` is taken, else an object starting at
/// column 0 on some line and running to the end of stdout.
fn parse_autoschema(path: &Path, stdout: &[u8]) -> Result<AutoSchema, DiscoveryError> {
    let trimmed = stdout.trim_ascii();
    if trimmed.is_empty() {
        return Err(DiscoveryError::NotJson {
            path: path.to_owned(),
            error: "stdout was empty".to_owned(),
            excerpt: String::new(),
        });
    }
    let whole_error = match serde_json::from_slice::<Value>(trimmed) {
        Ok(value) => return to_autoschema(path, value),
        Err(e) => e,
    };
    if let Some(value) = find_embedded(trimmed) {
        return to_autoschema(path, value);
    }
    Err(DiscoveryError::NotJson {
        path: path.to_owned(),
        error: whole_error.to_string(),
        excerpt: excerpt(trimmed),
    })
}

/// A JSON object after log lines: the last line that is an object with
/// `inputs`, else an object from a `{` at column 0 to the end.
fn find_embedded(stdout: &[u8]) -> Option<Value> {
    let lines: Vec<&[u8]> = stdout.split(|&b| b == b'\n').collect();
    let object = |bytes: &[u8]| match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Some(v),
        _ => None,
    };
    for line in lines.iter().rev() {
        let line = line.trim_ascii();
        if line.first() == Some(&b'{')
            && let Some(v) = object(line).filter(|v| v.get("inputs").is_some())
        {
            return Some(v);
        }
    }
    // Offsets of lines starting with `{`, latest first; a few attempts suffice.
    let mut offset = 0;
    let mut starts = Vec::new();
    for line in &lines {
        if line.first() == Some(&b'{') {
            starts.push(offset);
        }
        offset += line.len() + 1;
    }
    starts
        .iter()
        .rev()
        .take(64)
        .find_map(|&start| object(&stdout[start..]))
}

/// The first [`EXCERPT_CHARS`] characters of `bytes`, lossily decoded.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4 * EXCERPT_CHARS)]);
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() || bytes.len() > 4 * EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// Checks the shape of an AutoSchema with messages that point at the field.
fn to_autoschema(path: &Path, value: Value) -> Result<AutoSchema, DiscoveryError> {
    let bad = |message: String| DiscoveryError::NotAutoSchema {
        path: path.to_owned(),
        message,
    };
    let Value::Object(obj) = &value else {
        return Err(bad(format!(
            "it is {}, not an object",
            article(json_type(&value))
        )));
    };
    match obj.get("inputs") {
        None => return Err(bad("it has no `inputs`".to_owned())),
        Some(Value::Object(_) | Value::Bool(_)) => {}
        Some(other) => {
            return Err(bad(format!(
                "`inputs` must be a JSON Schema (an object or a boolean), found {}",
                article(json_type(other))
            )));
        }
    }
    match obj.get("outputs") {
        None | Some(Value::Null | Value::Object(_) | Value::Bool(_)) => {}
        Some(other) => {
            return Err(bad(format!(
                "`outputs` must be a JSON Schema (an object or a boolean), found {}",
                article(json_type(other))
            )));
        }
    }
    for field in ["name", "description"] {
        match obj.get(field) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => {
                return Err(bad(format!(
                    "`{field}` must be a string, found {}",
                    article(json_type(other))
                )));
            }
        }
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

fn article(kind: &str) -> String {
    match kind {
        "array" | "integer" | "object" => format!("an {kind}"),
        "null" => "null".to_owned(),
        _ => format!("a {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Result<AutoSchema, DiscoveryError> {
        parse_autoschema(Path::new("/t/task.sh"), s.as_bytes())
    }

    #[test]
    fn whole_document_with_whitespace() {
        let s = parse("\n  {\"name\":\"x\",\"inputs\":{\"type\":\"object\"},\"outputs\":null}\n\n")
            .unwrap();
        assert_eq!(s.name.as_deref(), Some("x"));
        assert_eq!(s.inputs, json!({"type": "object"}));
        assert!(s.outputs.is_none());
    }

    #[test]
    fn log_lines_before_the_document() {
        let s = parse("loading…\n{\"inputs\": true}\n").unwrap();
        assert_eq!(s.inputs, json!(true));
        let pretty = "debug: hi\n{\n  \"description\": \"d\",\n  \"inputs\": {\n    \"type\": \"object\"\n  }\n}\n";
        assert_eq!(parse(pretty).unwrap().description.as_deref(), Some("d"));
        // A later log line after the document: the last line with `inputs` still wins.
        let s = parse("{\"inputs\": {\"type\": \"string\"}}\nbye\n").unwrap();
        assert_eq!(s.inputs, json!({"type": "string"}));
    }

    #[test]
    fn not_json_names_path_position_and_excerpt() {
        let e = parse("usage: task.sh [run]\n").unwrap_err();
        let DiscoveryError::NotJson { error, excerpt, .. } = &e else {
            panic!("{e:?}")
        };
        assert!(error.contains("line 1 column 1"), "{error}");
        assert_eq!(excerpt, "usage: task.sh [run]");
        let msg = e.to_string();
        assert!(
            msg.starts_with("`/t/task.sh schema` printed no JSON: "),
            "{msg}"
        );
        assert!(msg.contains("when called with `schema`"), "{msg}");
        let long = parse(&"x".repeat(1000)).unwrap_err();
        let DiscoveryError::NotJson { excerpt, .. } = long else {
            panic!()
        };
        assert_eq!(excerpt.chars().count(), EXCERPT_CHARS + 1);
        assert!(matches!(parse("  \n"), Err(DiscoveryError::NotJson { .. })));
    }

    #[test]
    fn json_but_not_an_autoschema() {
        let msg = |s: &str| match parse(s) {
            Err(DiscoveryError::NotAutoSchema { message, .. }) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(msg("{\"name\": \"x\"}"), "it has no `inputs`");
        assert_eq!(msg("[1]"), "it is an array, not an object");
        assert!(msg("{\"inputs\": 5}").contains("found an integer"));
        assert!(msg("{\"inputs\": {}, \"outputs\": \"s\"}").contains("`outputs`"));
        assert!(msg("{\"inputs\": {}, \"name\": 1}").contains("`name` must be a string"));
        assert!(msg("log\n{\n\"name\": \"x\"\n}").contains("no `inputs`"));
    }

    #[test]
    fn stderr_tail_starts_at_a_line() {
        let mut t = b"a".repeat(STDERR_TAIL);
        t.extend_from_slice(b"\nlast line\n");
        assert_eq!(tail_text(&t), "last line");
        assert_eq!(tail_text(b"  short\n"), "short");
    }
}
