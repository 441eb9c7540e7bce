//! The runner against real processes: bash and python scripts written into
//! temporary directories, exercising results, the envelope, exit statuses,
//! timeouts and cancellation (with grandchildren), bounded output, and discovery.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use task_executor::runner::{DiscoveryError, RunRequest, Runner, RunnerConfig, check_executable};
use task_executor::{
    ExitInfo, LogLine, LogSink, Outcome, PreparedTask, RunReport, Stream, Task, TaskName,
};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// Writes an executable bash script `name` with `body` into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Writes an executable python script.
fn python(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/usr/bin/python3\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn task_at(location: PathBuf, outputs: Option<Value>) -> PreparedTask {
    PreparedTask::new(Task {
        name: TaskName::new("testTask").unwrap(),
        location,
        description: None,
        inputs: json!({"type": "object"}),
        outputs,
        timeout: None,
        policy: Default::default(),
        formats: Default::default(),
    })
    .unwrap()
}

/// Keeps every line it is given.
#[derive(Default)]
struct Collect(Mutex<Vec<(Stream, Vec<u8>, bool)>>);

impl LogSink for Collect {
    fn line(&self, line: LogLine<'_>) {
        assert_eq!(line.task.as_str(), "testTask");
        assert!(!line.run_id.is_empty());
        self.0
            .lock()
            .unwrap()
            .push((line.stream, line.text.to_vec(), line.truncated));
    }
}

impl Collect {
    fn texts(&self, stream: Stream) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| *s == stream)
            .map(|(_, t, _)| String::from_utf8_lossy(t).into_owned())
            .collect()
    }
}

/// Counts lines without keeping them.
#[derive(Default)]
struct Count {
    lines: AtomicUsize,
    truncated: AtomicUsize,
    longest: AtomicUsize,
}

impl LogSink for Count {
    fn line(&self, line: LogLine<'_>) {
        self.lines.fetch_add(1, Ordering::Relaxed);
        if line.truncated {
            self.truncated.fetch_add(1, Ordering::Relaxed);
        }
        self.longest.fetch_max(line.text.len(), Ordering::Relaxed);
    }
}

async fn run_with(
    config: RunnerConfig,
    task: &PreparedTask,
    request: RunRequest,
    cancel: &CancellationToken,
) -> (RunReport, Collect) {
    let logs = Collect::default();
    let report = Runner::new(config).run(task, request, &logs, cancel).await;
    (report, logs)
}

async fn run_script(body: &str, args: Value) -> (RunReport, Collect, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(script(dir.path(), "t.sh", body), None);
    let (report, logs) = run_with(
        RunnerConfig::default(),
        &task,
        RunRequest::new(args),
        &CancellationToken::new(),
    )
    .await;
    (report, logs, dir)
}

/// The message of a run that could not be started.
fn spawn_failure(report: &RunReport) -> &str {
    match &report.outcome {
        Outcome::SpawnFailed { message } => message,
        other => panic!("expected a spawn failure, got {other:?}"),
    }
}

/// One run of `task` with no arguments, never cancelled.
async fn run_once(config: RunnerConfig, task: &PreparedTask) -> (RunReport, Collect) {
    run_with(
        config,
        task,
        RunRequest::new(json!({})),
        &CancellationToken::new(),
    )
    .await
}

fn completed(report: &RunReport) -> &task_executor::TaskResult {
    match &report.outcome {
        Outcome::Completed { result } => result,
        other => panic!("expected completed, got {other:?}"),
    }
}

/// Whether `pid` is a live (non-zombie) process.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            state != Some(Some('Z'))
        }
        Err(_) => false,
    }
}

/// Waits up to 3 s for `pid` to be gone (a signal is delivered asynchronously).
async fn gone(pid: i32) -> bool {
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits up to 3 s for `pid` to be reaped: not even a zombie is left.
async fn reaped(pid: i32) -> bool {
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn success_with_status_1() {
    let (report, _, _d) = run_script(
        r#"cat >/dev/null; echo '{"status":1,"reason":"ok","payload":{"foo":"bar"}}'"#,
        json!({}),
    )
    .await;
    let result = completed(&report);
    assert_eq!(result.reason, "ok");
    assert_eq!(result.payload, json!({"foo": "bar"}));
    assert!(report.outcome.is_success());
    assert_eq!(report.exit, Some(ExitInfo::Code { code: 0 }));
    assert_eq!(report.task.as_str(), "testTask");
    assert!(!report.run_id.is_empty());
}

#[tokio::test]
async fn status_2_is_completed_but_not_success() {
    let (report, _, _d) =
        run_script(r#"echo '{"status":2,"reason":"bad input"}'"#, json!({})).await;
    assert_eq!(completed(&report).status, 2);
    assert!(!report.outcome.is_success());
}

#[tokio::test]
async fn result_is_the_last_candidate_among_logs() {
    let (report, logs, _d) = run_script(
        r#"echo starting
echo 'to stderr' >&2
echo '{"status":2,"reason":"early"}'
echo '{"not":"a result"}'
echo '{"status":1,"reason":"final","payload":[1,2]}'
echo 'bye' >&2
echo '[1,2,3]'"#,
        json!({}),
    )
    .await;
    let result = completed(&report);
    assert_eq!(result.reason, "final");
    assert_eq!(result.payload, json!([1, 2]));
    assert_eq!(logs.texts(Stream::Stdout).len(), 5);
    assert_eq!(logs.texts(Stream::Stdout)[0], "starting");
    assert_eq!(logs.texts(Stream::Stderr), ["to stderr", "bye"]);
}

#[tokio::test]
async fn pretty_printed_result_ending_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(
        python(
            dir.path(),
            "t.py",
            r#"import json, sys
print("working...")
print(json.dumps({"status": 1, "reason": "ok", "payload": {"items": [1, 2], "n": {"a": 1}}}, indent=2))
print()"#,
        ),
        None,
    );
    let (report, _) = run_once(RunnerConfig::default(), &task).await;
    assert_eq!(
        completed(&report).payload,
        json!({"items": [1, 2], "n": {"a": 1}})
    );
}

#[tokio::test]
async fn result_file_is_preferred_over_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let task = task_at(
        script(
            dir.path(),
            "t.sh",
            r#"echo "$TASK_RESULT_FILE" >&2
dir_mode=$(stat -c %a "$(dirname "$TASK_RESULT_FILE")")
if [ -e "$TASK_RESULT_FILE" ]; then exists=true; else exists=false; fi
echo '{"status":2,"reason":"stdout junk"}'
printf '{"status":1,"reason":"from file","payload":{"dir_mode":"%s","existed":%s}}' "$dir_mode" "$exists" > "$TASK_RESULT_FILE""#,
        ),
        None,
    );
    let config = RunnerConfig {
        results_dir: Some(results.clone()),
        ..RunnerConfig::default()
    };
    let (report, logs) = run_once(config, &task).await;
    let result = completed(&report);
    assert_eq!(result.reason, "from file");
    // A path nobody else can reach, not yet created: the task makes it.
    assert_eq!(result.payload, json!({"dir_mode": "700", "existed": false}));
    let path = PathBuf::from(&logs.texts(Stream::Stderr)[0]);
    assert_eq!(path.parent(), Some(results.as_path()));
    assert!(!path.exists(), "{} was not removed", path.display());
    // The directory stays for the next runs, and holds nothing.
    assert_eq!(std::fs::read_dir(&results).unwrap().count(), 0);
}

/// What is left in `results` (names), after a run.
fn leftovers(results: &Path) -> Vec<String> {
    match std::fs::read_dir(results) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// One run on a thread of its own, or `None` if it has not ended within
/// `limit`: a run that blocks its thread cannot hang the test.
fn run_on_a_thread(config: RunnerConfig, task: PreparedTask, limit: Duration) -> Option<RunReport> {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = send.send(runtime.block_on(run_once(config, &task)).0);
    });
    receive.recv_timeout(limit).ok()
}

/// Issue 14: a FIFO, a symlink, a directory at `TASK_RESULT_FILE` is an
/// invalid result naming what it is (never a hang, never the symlink's
/// target read), and whatever the task left there is removed.
#[test]
fn a_result_file_that_is_not_a_regular_file_is_refused_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let elsewhere = dir.path().join("elsewhere.json");
    std::fs::write(&elsewhere, r#"{"status":1,"reason":"not the task's"}"#).unwrap();
    let stdout_result = r#"echo '{"status":1,"reason":"stdout"}'"#;
    let cases = [
        (
            "a FIFO",
            format!(r#"mkfifo "$TASK_RESULT_FILE"; {stdout_result}"#),
        ),
        (
            "a symbolic link",
            format!(
                r#"ln -s {} "$TASK_RESULT_FILE"; {stdout_result}"#,
                elsewhere.display()
            ),
        ),
        (
            "a directory",
            format!(
                r#"mkdir -p "$TASK_RESULT_FILE/sub"; echo x > "$TASK_RESULT_FILE/sub/f"; ln -s {} "$TASK_RESULT_FILE/link"; {stdout_result}"#,
                dir.path().display()
            ),
        ),
    ];
    let config = RunnerConfig {
        results_dir: Some(results.clone()),
        ..RunnerConfig::default()
    };
    for (kind, body) in cases {
        let task = task_at(script(dir.path(), "t.sh", &body), None);
        let start = Instant::now();
        let report = run_on_a_thread(config.clone(), task, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{kind}: the run hung"));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{kind}: {:?}",
            start.elapsed()
        );
        match &report.outcome {
            Outcome::InvalidResult { message } => {
                assert!(
                    message.contains(&format!("is {kind}, not a regular file")),
                    "{kind}: {message}"
                );
                assert!(message.contains("TASK_RESULT_FILE"), "{message}");
                assert!(
                    message.contains(&results.display().to_string()),
                    "{message}"
                );
            }
            other => panic!("{kind}: {other:?}"),
        }
        assert_eq!(leftovers(&results), Vec::<String>::new(), "{kind}");
    }
    // The link was removed, not what it pointed at; nor what the directory's link did.
    assert!(elsewhere.exists());
    assert!(dir.path().join("t.sh").exists());
}

/// An empty result file, and one left by a task that timed out, are removed too.
#[tokio::test]
async fn the_results_directory_keeps_no_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let config = RunnerConfig {
        results_dir: Some(results.clone()),
        ..RunnerConfig::default()
    };
    let empty = task_at(
        script(
            dir.path(),
            "empty.sh",
            r#": > "$TASK_RESULT_FILE"; echo '{"status":1}'"#,
        ),
        None,
    );
    let (report, _) = run_once(config.clone(), &empty).await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert_eq!(leftovers(&results), Vec::<String>::new());

    let slow = task_at(
        script(
            dir.path(),
            "slow.sh",
            r#"mkdir "$TASK_RESULT_FILE"; exec sleep 30"#,
        ),
        None,
    );
    let config = RunnerConfig {
        default_timeout: Duration::from_millis(300),
        ..config
    };
    let (report, _) = run_once(config, &slow).await;
    assert!(
        matches!(report.outcome, Outcome::TimedOut { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(leftovers(&results), Vec::<String>::new());
}

#[tokio::test]
async fn a_result_directory_others_can_enter_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    std::fs::create_dir(&results).unwrap();
    std::fs::set_permissions(&results, std::fs::Permissions::from_mode(0o777)).unwrap();
    let task = task_at(script(dir.path(), "t.sh", r#"echo '{"status":1}'"#), None);
    let config = RunnerConfig {
        results_dir: Some(results.clone()),
        ..RunnerConfig::default()
    };
    let (report, _) = run_once(config, &task).await;
    let message = spawn_failure(&report);
    assert!(
        message.contains(&results.display().to_string()),
        "{message}"
    );
    assert!(message.contains("mode 777"), "{message}");
    assert!(report.exit.is_none(), "the task must not have run");
}

#[tokio::test]
async fn environment_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(
        script(
            dir.path(),
            "t.sh",
            r#"printf '{"status":1,"payload":{"name":"%s","run":"%s","protocol":"%s","home":"%s"}}\n' "$TASK_NAME" "$TASK_RUN_ID" "$TASK_PROTOCOL" "$HOME""#,
        ),
        None,
    );
    let mut request = RunRequest::new(json!({}));
    request.run_id = Some("run-42".to_owned());
    let (report, _) = run_with(
        RunnerConfig::default(),
        &task,
        request,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(report.run_id, "run-42");
    let home = std::env::var("HOME").unwrap_or_default();
    assert_eq!(
        completed(&report).payload,
        json!({"name": "testTask", "run": "run-42", "protocol": "v1", "home": home})
    );
    // A fresh run id otherwise.
    let (report, _, _d) = run_script(
        r#"printf '{"status":1,"payload":"%s"}\n' "$TASK_RUN_ID""#,
        json!({}),
    )
    .await;
    assert_eq!(completed(&report).payload, json!(report.run_id));
}

const ECHO_STDIN: &str = r#"import json, sys
envelope = json.load(sys.stdin)
print("got it", file=sys.stderr)
print(json.dumps({"status": 1, "reason": "ok", "payload": envelope}))"#;

#[tokio::test]
async fn envelope_is_received_intact() {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(python(dir.path(), "t.py", ECHO_STDIN), None);
    let args = json!({"cmd": "hostname", "requestId": "214215161263", "user": "tester", "ü": "→"});
    let mut request = RunRequest::new(args.clone());
    request.caller = "api".to_owned();
    let (report, _) = run_with(
        RunnerConfig::default(),
        &task,
        request,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(
        completed(&report).payload,
        json!({"meta": {"protocol": "v1", "caller": "api", "taskName": "testTask"}, "data": args})
    );
}

#[tokio::test]
async fn five_megabyte_argument_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(python(dir.path(), "t.py", ECHO_STDIN), None);
    let big = "x".repeat(5 * 1024 * 1024);
    let (report, _) = run_with(
        RunnerConfig::default(),
        &task,
        RunRequest::new(json!({"big": big})),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(
        completed(&report).payload["data"]["big"].as_str(),
        Some(big.as_str())
    );
}

#[tokio::test]
async fn five_megabyte_argument_never_read() {
    let big = "x".repeat(5 * 1024 * 1024);
    let (report, _, _d) = run_script(
        r#"echo '{"status":1,"reason":"did not read"}'"#,
        json!({"big": big}),
    )
    .await;
    assert_eq!(completed(&report).reason, "did not read");
    // And one that dies before reading, after printing a lot.
    let (report, _, _d) = run_script(
        r#"yes line | head -n 100000; echo '{"status":1}'; exit 0"#,
        json!({"big": "y".repeat(5 * 1024 * 1024)}),
    )
    .await;
    assert_eq!(completed(&report).status, 1);
}

/// A task that reads its stdin only after a while: the envelope (far more
/// than a pipe holds) waits for it, whole.
#[tokio::test]
async fn a_big_envelope_reaches_a_task_that_reads_late() {
    let args = json!({"big": "x".repeat(1 << 20)});
    let (report, _, _d) = run_script(
        r#"sleep 0.2; n=$(wc -c); echo "{\"status\":1,\"payload\":$n}""#,
        args.clone(),
    )
    .await;
    let sent = task_executor::Envelope::new("self", "testTask", args).to_line();
    assert_eq!(completed(&report).payload, json!(sent.len()));
}

/// A task that exits at once, before its envelope is written (or while it
/// is): EPIPE is not an error, and nothing waits for the write.
#[tokio::test]
async fn writing_to_a_task_that_exited_is_not_an_error() {
    for big in [0, 5 << 20] {
        let (report, _, _d) = run_script("exit 0", json!({"big": "x".repeat(big)})).await;
        assert_eq!(report.outcome, Outcome::NoResult, "{big} bytes");
        assert_eq!(report.exit, Some(ExitInfo::Code { code: 0 }));
    }
}

/// A process that left the group holds the task's stdin without reading
/// it (`<&0`: a background command's stdin is otherwise /dev/null): once
/// the task has exited, the rest of a large envelope is not waited for
/// (its output is closed, so nothing else is either).
#[tokio::test]
async fn stdin_held_by_an_escaped_process_does_not_delay_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let task = task_at(
        script(
            dir.path(),
            "t.sh",
            &format!(
                "setsid bash -c 'echo $$ > {d}/escaped.tmp; mv {d}/escaped.tmp {d}/escaped.pid; exec sleep 1000' <&0 >/dev/null 2>&1 &\n\
                 while [ ! -e {d}/escaped.pid ]; do sleep 0.01; done\necho '{{\"status\":1}}'"
            ),
        ),
        None,
    );
    let never = CancellationToken::new();
    let run = run_with(
        RunnerConfig::default(),
        &task,
        RunRequest::new(json!({"big": "x".repeat(5 << 20)})),
        &never,
    );
    let ran = tokio::time::timeout(Duration::from_secs(10), run).await;
    let escaped = read_pid(&dir.path().join("escaped.pid"));
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(escaped).unwrap(),
        rustix::process::Signal::KILL,
    );
    let (report, _) = ran.expect("the run waited for the envelope's write");
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    // Well under the drain bound (2 s) that held output would cost.
    assert!(
        report.duration < Duration::from_millis(1500),
        "{:?}",
        report.duration
    );
}

#[tokio::test]
async fn non_zero_exit_with_and_without_result() {
    let (report, _, _d) = run_script(
        r#"echo '{"status":0,"reason":"failed"}'; exit 3"#,
        json!({}),
    )
    .await;
    match &report.outcome {
        Outcome::ExitedNonZero {
            code: 3,
            result: Some(r),
        } => assert_eq!(r.reason, "failed"),
        other => panic!("{other:?}"),
    }
    assert_eq!(report.exit, Some(ExitInfo::Code { code: 3 }));
    let (report, _, _d) = run_script("echo oops >&2; exit 3", json!({})).await;
    assert_eq!(
        report.outcome,
        Outcome::ExitedNonZero {
            code: 3,
            result: None
        }
    );
}

#[tokio::test]
async fn killed_by_its_own_signal() {
    for (sig, name, number) in [("SEGV", "SIGSEGV", 11), ("KILL", "SIGKILL", 9)] {
        let (report, _, _d) = run_script(
            &format!("echo '{{\"status\":1}}'; kill -{sig} $$; sleep 5"),
            json!({}),
        )
        .await;
        assert_eq!(
            report.outcome,
            Outcome::Signalled {
                signal: name.to_owned()
            }
        );
        assert_eq!(
            report.exit,
            Some(ExitInfo::Signal {
                number,
                name: name.to_owned()
            })
        );
    }
}

#[tokio::test]
async fn no_result() {
    let (report, _, _d) = run_script("echo 'just logs'; echo '{\"x\":1}'", json!({})).await;
    assert_eq!(report.outcome, Outcome::NoResult);
    assert!(report.outcome.result().is_none());
}

#[tokio::test]
async fn invalid_reason() {
    let (report, _, _d) = run_script(r#"echo '{"status":1,"reason":42}'"#, json!({})).await;
    match &report.outcome {
        Outcome::InvalidResult { message } => assert!(message.contains("reason"), "{message}"),
        other => panic!("{other:?}"),
    }
    let (report, _, _d) = run_script(r#"echo 'not json' > "$TASK_RESULT_FILE""#, json!({})).await;
    match &report.outcome {
        Outcome::InvalidResult { message } => {
            assert!(message.contains("TASK_RESULT_FILE"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn result_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = RunnerConfig {
        result_limit: 1000,
        ..RunnerConfig::default()
    };
    let cases = [
        // One line.
        r#"printf '{"status":1,"payload":"%s"}\n' "$(head -c 2000 /dev/zero | tr '\0' x)""#,
        // Pretty-printed.
        r#"echo '{'; echo '"status": 1,'; echo "\"payload\": \"$(head -c 2000 /dev/zero | tr '\0' x)\""; echo '}'"#,
        // Result file.
        r#"printf '{"status":1,"payload":"%s"}\n' "$(head -c 2000 /dev/zero | tr '\0' x)" > "$TASK_RESULT_FILE""#,
    ];
    for (i, body) in cases.iter().enumerate() {
        let task = task_at(script(dir.path(), &format!("t{i}.sh"), body), None);
        let (report, logs) = run_once(config.clone(), &task).await;
        assert_eq!(
            report.outcome,
            Outcome::ResultTooLarge { limit: 1000 },
            "case {i}"
        );
        if i == 0 {
            let lines = logs.0.lock().unwrap();
            assert_eq!(lines.len(), 1);
            assert_eq!(lines[0].1.len(), 1000);
            assert!(lines[0].2, "the sink is told the line was cut");
        }
    }
}

#[tokio::test]
async fn output_schema_violation_lists_pointers() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = json!({
        "type": "object",
        "required": ["status", "payload"],
        "properties": {
            "payload": {
                "type": "object",
                "required": ["count"],
                "properties": {"count": {"type": "integer"}, "name": {"type": "string"}}
            }
        }
    });
    let task = task_at(
        script(
            dir.path(),
            "t.sh",
            r#"echo '{"status":1,"payload":{"count":"three","name":5}}'"#,
        ),
        Some(outputs.clone()),
    );
    let (report, _) = run_once(RunnerConfig::default(), &task).await;
    match &report.outcome {
        Outcome::OutputViolation { result, violations } => {
            assert_eq!(result.status, 1);
            let pointers: Vec<_> = violations.iter().map(|v| v.pointer.as_str()).collect();
            assert!(pointers.contains(&"/payload/count"), "{violations:?}");
            assert!(pointers.contains(&"/payload/name"), "{violations:?}");
        }
        other => panic!("{other:?}"),
    }
    let ok = task_at(
        script(
            dir.path(),
            "ok.sh",
            r#"echo '{"status":1,"payload":{"count":3}}'"#,
        ),
        Some(outputs),
    );
    let (report, _) = run_once(RunnerConfig::default(), &ok).await;
    assert!(report.outcome.is_success());
}

/// A script that records its pid and a background grandchild's, then sleeps.
fn sleeper(dir: &Path, prelude: &str) -> PathBuf {
    let d = dir.display();
    script(
        dir,
        "t.sh",
        &format!(
            "{prelude}\nsleep 1000 &\necho $! > {d}/child.pid\necho $$ > {d}/main.pid\necho started\nsleep 1000 & wait $!"
        ),
    )
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(sleeper(dir.path(), ""), None);
    let mut request = RunRequest::new(json!({}));
    request.timeout = Some(Duration::from_millis(500));
    let (report, logs) = run_with(
        RunnerConfig::default(),
        &task,
        request,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(
        report.outcome,
        Outcome::TimedOut {
            after: Duration::from_millis(500)
        }
    );
    assert_eq!(logs.texts(Stream::Stdout), ["started"]);
    let (main, child) = (
        read_pid(&dir.path().join("main.pid")),
        read_pid(&dir.path().join("child.pid")),
    );
    assert!(gone(main).await, "task {main} survived");
    assert!(gone(child).await, "grandchild {child} survived");
    // bash dies of the SIGTERM.
    assert!(matches!(
        report.exit,
        Some(ExitInfo::Signal { number: 15, .. })
    ));
}

#[tokio::test]
async fn task_timeout_and_default_timeout_apply() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = Task {
        name: TaskName::new("testTask").unwrap(),
        location: script(dir.path(), "t.sh", "sleep 1000"),
        description: None,
        inputs: json!(true),
        outputs: None,
        timeout: Some(Duration::from_millis(200)),
        policy: Default::default(),
        formats: Default::default(),
    };
    let prepared = PreparedTask::new(task.clone()).unwrap();
    let (report, _) = run_once(RunnerConfig::default(), &prepared).await;
    assert_eq!(
        report.outcome,
        Outcome::TimedOut {
            after: Duration::from_millis(200)
        }
    );
    task.timeout = None;
    let prepared = PreparedTask::new(task).unwrap();
    let config = RunnerConfig {
        default_timeout: Duration::from_millis(300),
        ..RunnerConfig::default()
    };
    let (report, _) = run_once(config, &prepared).await;
    assert_eq!(
        report.outcome,
        Outcome::TimedOut {
            after: Duration::from_millis(300)
        }
    );
}

#[tokio::test]
async fn sigterm_handler_runs_within_grace() {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(
        sleeper(dir.path(), "trap 'echo cleaning up >&2; exit 0' TERM"),
        None,
    );
    let mut request = RunRequest::new(json!({}));
    request.timeout = Some(Duration::from_millis(300));
    let config = RunnerConfig {
        grace: Duration::from_secs(20),
        ..RunnerConfig::default()
    };
    let (report, logs) = run_with(config, &task, request, &CancellationToken::new()).await;
    assert!(matches!(report.outcome, Outcome::TimedOut { .. }));
    assert_eq!(report.exit, Some(ExitInfo::Code { code: 0 }));
    assert_eq!(logs.texts(Stream::Stderr), ["cleaning up"]);
    assert!(
        report.duration < Duration::from_secs(10),
        "waited for the grace period: {:?}",
        report.duration
    );
    assert!(gone(read_pid(&dir.path().join("child.pid"))).await);
}

#[tokio::test]
async fn sigterm_ignored_means_sigkill_after_grace() {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(sleeper(dir.path(), "trap '' TERM"), None);
    let mut request = RunRequest::new(json!({}));
    request.timeout = Some(Duration::from_millis(200));
    let config = RunnerConfig {
        grace: Duration::from_millis(300),
        ..RunnerConfig::default()
    };
    let (report, _) = run_with(config, &task, request, &CancellationToken::new()).await;
    assert!(matches!(report.outcome, Outcome::TimedOut { .. }));
    assert_eq!(
        report.exit,
        Some(ExitInfo::Signal {
            number: 9,
            name: "SIGKILL".to_owned()
        })
    );
    assert!(
        report.duration >= Duration::from_millis(500),
        "{:?}",
        report.duration
    );
    let main = read_pid(&dir.path().join("main.pid"));
    assert!(gone(main).await);
    assert!(gone(read_pid(&dir.path().join("child.pid"))).await);
    // The executor's own child is reaped too, not left a zombie.
    assert!(reaped(main).await, "process {main} was left a zombie");
}

#[tokio::test]
async fn cancellation_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(sleeper(dir.path(), ""), None);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let (report, _) = run_with(
        RunnerConfig::default(),
        &task,
        RunRequest::new(json!({})),
        &cancel,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert!(gone(read_pid(&dir.path().join("main.pid"))).await);
    assert!(gone(read_pid(&dir.path().join("child.pid"))).await);
    // Already cancelled: nothing is started.
    let (report, _) = run_with(
        RunnerConfig::default(),
        &task,
        RunRequest::new(json!({})),
        &cancel,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(report.exit, None);
}

#[tokio::test]
async fn dropping_the_run_future_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(sleeper(dir.path(), "trap '' TERM"), None);
    let logs = Collect::default();
    let cancel = CancellationToken::new();
    let runner = Runner::default();
    let run = runner.run(&task, RunRequest::new(json!({})), &logs, &cancel);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), run)
            .await
            .is_err()
    );
    let main = read_pid(&dir.path().join("main.pid"));
    assert!(gone(main).await);
    assert!(gone(read_pid(&dir.path().join("child.pid"))).await);
    // Killed and reaped when the run was dropped: no zombie either.
    assert!(reaped(main).await, "process {main} was left a zombie");
}

#[tokio::test]
async fn grandchild_holding_stdout_does_not_hang_a_normal_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let task = task_at(
        script(
            dir.path(),
            "t.sh",
            &format!("sleep 1000 &\necho $! > {d}/child.pid\necho '{{\"status\":1}}'"),
        ),
        None,
    );
    let (report, _) = run_once(RunnerConfig::default(), &task).await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert!(gone(read_pid(&dir.path().join("child.pid"))).await);
}

/// Issue 14: a process that left the group (`setsid`) and holds stdout open
/// is ended with the run (the runner is its subreaper), not waited for.
#[tokio::test]
async fn a_process_escaping_the_group_is_ended_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let task = task_at(
        script(
            dir.path(),
            "t.sh",
            // The pid file is written after setsid(2): the sleep has left the group.
            &format!(
                "setsid bash -c 'echo $$ > {d}/escaped.tmp; mv {d}/escaped.tmp {d}/escaped.pid; exec sleep 1000' &\n\
                 while [ ! -e {d}/escaped.pid ]; do sleep 0.01; done\necho '{{\"status\":1}}'"
            ),
        ),
        None,
    );
    let (report, _) = run_once(RunnerConfig::default(), &task).await;
    let escaped = read_pid(&dir.path().join("escaped.pid"));
    let left = reaped(escaped).await;
    if !left {
        // Not ours to keep around.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(escaped).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert!(left, "process {escaped} outlived its run");
    // Without waiting for the drain bound (2 s) on the stdout it held.
    assert!(
        report.duration < Duration::from_millis(1500),
        "{:?}",
        report.duration
    );
}

/// Bash that starts a daemon the classic way — fork, the child forks again
/// and exits, the grandchild calls `setsid` — which writes its pid to
/// `pid_file` and then runs `then` (ignoring SIGTERM if `stubborn`), and
/// waits until the pid file exists.
fn daemon(pid_file: &Path, then: &str, stubborn: bool) -> String {
    let p = pid_file.display();
    let trap = if stubborn { "trap \"\" TERM; " } else { "" };
    format!(
        "( setsid bash -c '{trap}echo $$ > {p}.tmp; mv {p}.tmp {p}; {then}' </dev/null >/dev/null 2>&1 & )\n\
         while [ ! -e {p} ]; do sleep 0.01; done"
    )
}

/// Issue 14: a daemon (double fork + `setsid`) does not outlive its run;
/// one that ignores SIGTERM is SIGKILLed after the grace.
#[tokio::test]
async fn a_daemon_started_by_a_task_is_ended_with_its_run() {
    let dir = tempfile::tempdir().unwrap();
    for stubborn in [false, true] {
        let pid_file = dir.path().join(format!("daemon-{stubborn}.pid"));
        let body = format!(
            "{}\necho '{{\"status\":1}}'",
            daemon(&pid_file, "exec sleep 1000", stubborn)
        );
        let task = task_at(script(dir.path(), "t.sh", &body), None);
        let config = RunnerConfig {
            grace: Duration::from_millis(300),
            ..RunnerConfig::default()
        };
        let (report, _) = run_once(config, &task).await;
        let pid = read_pid(&pid_file);
        let ended = reaped(pid).await;
        if !ended {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        assert!(report.outcome.is_success(), "{:?}", report.outcome);
        assert!(
            ended,
            "daemon {pid} (stubborn: {stubborn}) outlived its run"
        );
        if stubborn {
            assert!(
                report.duration >= Duration::from_millis(300),
                "{:?}",
                report.duration
            );
        }
    }
}

/// Orphans that exit on their own while their run goes on are reaped as it
/// goes, not when it ends: a long run cannot fill the process table with zombies.
#[tokio::test]
async fn orphans_exiting_during_a_long_run_leave_no_zombies() {
    let dir = tempfile::tempdir().unwrap();
    let body = "for i in $(seq 20); do ( sleep 0.05 & ); done\n\
                sleep 2.5\n\
                zombies=$(ps --ppid $PPID -o stat= | grep -c '^Z')\n\
                echo \"{\\\"status\\\":1,\\\"payload\\\":$zombies}\"";
    let task = task_at(script(dir.path(), "t.sh", body), None);
    let (report, _) = run_once(RunnerConfig::default(), &task).await;
    assert_eq!(
        completed(&report).payload,
        json!(0),
        "zombies of the executor"
    );
}

/// One run's end spares what belongs to a run still going: its task, its
/// daemon (its environment names that run); and children the program
/// started itself (they share the program's process group).
#[tokio::test]
async fn a_runs_cleanup_spares_other_runs_and_the_programs_own_children() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut own = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let long = format!(
        "{}\nwhile [ ! -e {d}/short.done ]; do sleep 0.01; done\n\
         if kill -0 $(cat {d}/long-daemon.pid); then s=1; else s=2; fi\n\
         echo \"{{\\\"status\\\":$s}}\"",
        daemon(&d.join("long-daemon.pid"), "exec sleep 1000", false),
        d = d.display()
    );
    let short = format!(
        "{}\necho '{{\"status\":1}}'",
        daemon(&d.join("short-daemon.pid"), "exec sleep 1000", false)
    );
    let long = task_at(script(d, "long.sh", &long), None);
    let short = task_at(script(d, "short.sh", &short), None);
    let runner = Runner::default();
    let cancel = CancellationToken::new();
    let (long_logs, short_logs) = (Collect::default(), Collect::default());
    let (long_report, short_daemon_ended) = tokio::join!(
        runner.run(&long, RunRequest::new(json!({})), &long_logs, &cancel),
        async {
            // Once the long run's daemon is up.
            while !d.join("long-daemon.pid").exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let report = runner
                .run(&short, RunRequest::new(json!({})), &short_logs, &cancel)
                .await;
            assert!(report.outcome.is_success(), "{:?}", report.outcome);
            let ended = reaped(read_pid(&d.join("short-daemon.pid"))).await;
            std::fs::write(d.join("short.done"), "").unwrap();
            ended
        }
    );
    let own_alive = own.try_wait().unwrap().is_none();
    let _ = own.kill();
    let _ = own.wait();
    let long_daemon = read_pid(&d.join("long-daemon.pid"));
    let long_daemon_ended = reaped(long_daemon).await;
    for pid in [long_daemon, read_pid(&d.join("short-daemon.pid"))] {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    assert!(short_daemon_ended, "the short run's daemon outlived it");
    // Status 1: its daemon was still there after the short run ended.
    assert!(
        long_report.outcome.is_success(),
        "{:?}",
        long_report.outcome
    );
    assert!(long_daemon_ended, "the long run's daemon outlived it");
    assert!(own_alive, "a child the program started itself was killed");
}

#[tokio::test]
async fn non_utf8_lines_reach_the_sink() {
    let (report, logs, _d) = run_script(
        r#"printf 'a\xffb\r\n'; printf 'err\xfe\n' >&2; echo '{"status":1}'"#,
        json!({}),
    )
    .await;
    assert!(report.outcome.is_success());
    let lines = logs.0.lock().unwrap();
    assert!(lines.contains(&(Stream::Stdout, b"a\xffb".to_vec(), false)));
    assert!(lines.contains(&(Stream::Stderr, b"err\xfe".to_vec(), false)));
}

#[tokio::test]
async fn huge_output_is_streamed() {
    let dir = tempfile::tempdir().unwrap();
    // 5 million lines, 50 MB on stdout, plus a stderr line; then the result.
    let task = task_at(
        script(
            dir.path(),
            "t.sh",
            "yes 123456789 | head -n 5000000\necho done >&2\necho '{\"status\":1}'",
        ),
        None,
    );
    let logs = Count::default();
    let report = Runner::default()
        .run(
            &task,
            RunRequest::new(json!({})),
            &logs,
            &CancellationToken::new(),
        )
        .await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert_eq!(logs.lines.load(Ordering::Relaxed), 5_000_002);
}

#[tokio::test]
async fn one_huge_line_is_cut_to_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(
        script(
            dir.path(),
            "t.sh",
            "head -c 30000000 /dev/zero | tr '\\0' x",
        ),
        None,
    );
    let logs = Count::default();
    let config = RunnerConfig {
        result_limit: 1 << 20,
        ..RunnerConfig::default()
    };
    let report = Runner::new(config)
        .run(
            &task,
            RunRequest::new(json!({})),
            &logs,
            &CancellationToken::new(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::NoResult);
    assert_eq!(logs.lines.load(Ordering::Relaxed), 1);
    assert_eq!(logs.truncated.load(Ordering::Relaxed), 1);
    assert_eq!(logs.longest.load(Ordering::Relaxed), 1 << 20);
}

/// Peak RSS of this process, in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// 150 MB of short lines, then the result, then one 150 MB line without a
/// newline. Run alone, so that no other test shares the process:
/// `cargo test -p task-executor --test runner -- --ignored --exact memory_stays_bounded`.
#[tokio::test]
#[ignore = "measures the whole process's peak RSS; run alone"]
async fn memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let task = task_at(
        script(
            dir.path(),
            "t.sh",
            "yes 123456789 | head -c 150000000\necho '{\"status\":1}'\nhead -c 150000000 /dev/zero | tr '\\0' x",
        ),
        None,
    );
    let logs = Count::default();
    let report = Runner::default()
        .run(
            &task,
            RunRequest::new(json!({"big": "z".repeat(1 << 20)})),
            &logs,
            &CancellationToken::new(),
        )
        .await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert_eq!(logs.truncated.load(Ordering::Relaxed), 1);
    let peak = peak_rss();
    eprintln!("peak RSS: {} MiB", peak >> 20);
    assert!(peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
}

#[tokio::test]
async fn spawn_failures_are_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sh");
    let (report, _) = run_once(RunnerConfig::default(), &task_at(missing.clone(), None)).await;
    let message = spawn_failure(&report);
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("No such file"), "{message}");
    assert_eq!(report.exit, None);
}

/// A location std cannot pass to `posix_spawn` is the run's failure, not a panic.
#[tokio::test]
async fn a_path_with_a_nul_byte_is_a_spawn_failure() {
    let (report, _) = run_once(
        RunnerConfig::default(),
        &task_at(PathBuf::from("/bin/t\0rue"), None),
    )
    .await;
    let message = spawn_failure(&report);
    assert!(message.contains("nul byte"), "{message}");
    assert_eq!(report.exit, None);
}

/// What the task gets is this process's environment plus the run's four
/// variables, nothing else: read back from the kernel's copy of the
/// environment the task was started with (`/proc/<pid>/environ`), which
/// the shell's own variables do not touch.
#[tokio::test]
async fn the_environment_is_the_inherited_one_plus_the_run_variables() {
    use std::collections::BTreeMap;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let environ = dir.path().join("environ");
    let task = task_at(
        script(
            dir.path(),
            "t.sh",
            &format!(
                "cat /proc/$$/environ > {}\necho '{{\"status\":1}}'",
                environ.display()
            ),
        ),
        None,
    );
    let config = RunnerConfig {
        results_dir: Some(results.clone()),
        ..RunnerConfig::default()
    };
    let (report, _) = run_once(config, &task).await;
    completed(&report);
    let mut got: BTreeMap<Vec<u8>, Vec<u8>> = std::fs::read(&environ)
        .unwrap()
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let eq = entry.iter().position(|b| *b == b'=').unwrap();
            (entry[..eq].to_vec(), entry[eq + 1..].to_vec())
        })
        .collect();
    let result_file = PathBuf::from(std::ffi::OsStr::from_bytes(
        &got.remove(&b"TASK_RESULT_FILE"[..]).unwrap(),
    ));
    assert_eq!(result_file.parent(), Some(results.as_path()));
    let mut expected: BTreeMap<Vec<u8>, Vec<u8>> = std::env::vars_os()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    expected.remove(&b"TASK_RESULT_FILE"[..]);
    for (k, v) in [
        ("TASK_NAME", "testTask"),
        ("TASK_RUN_ID", report.run_id.as_str()),
        ("TASK_PROTOCOL", "v1"),
    ] {
        expected.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn run_future_is_send() {
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    let (_, _, dir) = run_script("true", json!({})).await;
    let task = task_at(dir.path().join("t.sh"), None);
    let runner = Runner::default();
    let cancel = CancellationToken::new();
    let report = assert_send(runner.run(
        &task,
        RunRequest::new(json!({})),
        &task_executor::log::DiscardLogs,
        &cancel,
    ))
    .await;
    assert_eq!(report.outcome, Outcome::NoResult);
}

// ---------------------------------------------------------------- discovery

async fn discover(
    path: &Path,
    timeout: Duration,
) -> Result<task_executor::AutoSchema, DiscoveryError> {
    Runner::default().discover(path, timeout).await
}

const SECOND: Duration = Duration::from_secs(10);

/// Issue 14: a daemon started by `<task> schema` does not outlive the call.
#[tokio::test]
async fn a_daemon_started_by_the_schema_call_is_ended() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("daemon.pid");
    let body = format!(
        "{}\necho '{{\"inputs\": {{\"type\": \"object\"}}}}'",
        daemon(&pid_file, "exec sleep 1000", false)
    );
    let path = script(dir.path(), "t.sh", &body);
    let schema = discover(&path, SECOND).await;
    let pid = read_pid(&pid_file);
    let ended = reaped(pid).await;
    if !ended {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    assert!(schema.is_ok(), "{schema:?}");
    assert!(ended, "daemon {pid} outlived the schema call");
}

#[tokio::test]
async fn discovery_ok() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(
        dir.path(),
        "t.sh",
        r#"[ "$1" = schema ] || exit 9
echo 'some log line'
cat <<'EOF'
{
  "name": "python",
  "description": "Python example",
  "inputs": {"type": "object", "properties": {"user": {"type": "string"}}},
  "outputs": {"type": "object"}
}
EOF"#,
    );
    let schema = discover(&path, SECOND).await.unwrap();
    assert_eq!(schema.description.as_deref(), Some("Python example"));
    assert_eq!(schema.inputs["properties"]["user"]["type"], "string");
    assert_eq!(schema.outputs, Some(json!({"type": "object"})));
    // check_executable gives the canonical path.
    assert_eq!(
        check_executable(&path).unwrap(),
        path.canonicalize().unwrap()
    );
}

#[tokio::test]
async fn discovery_non_zero_exit_reports_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(
        dir.path(),
        "t.sh",
        "echo 'unknown command: schema' >&2; exit 2",
    );
    let err = discover(&path, SECOND).await.unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::ExitedNonZero { code: 2, stderr, .. } if stderr == "unknown command: schema"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("`{} schema` exited with code 2", path.display())),
        "{msg}"
    );
    assert!(msg.contains("unknown command: schema"), "{msg}");
}

#[tokio::test]
async fn discovery_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), "t.sh", "kill -ABRT $$");
    let err = discover(&path, SECOND).await.unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::Signalled { signal, .. } if signal == "SIGABRT"),
        "{err:?}"
    );
}

#[tokio::test]
async fn discovery_hang_times_out_and_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let path = script(
        dir.path(),
        "t.sh",
        &format!("trap '' TERM\nsleep 1000 &\necho $! > {d}/child.pid\nsleep 1000 & wait $!"),
    );
    let start = Instant::now();
    let err = discover(&path, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::TimedOut { after, .. } if *after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(err.to_string().contains("300ms"), "{err}");
    // TERM is ignored: the grace for discovery is at most a second.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(gone(read_pid(&dir.path().join("child.pid"))).await);
}

#[tokio::test]
async fn discovery_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), "t.sh", "echo 'usage: t.sh run'");
    let err = discover(&path, SECOND).await.unwrap_err();
    let DiscoveryError::NotJson { excerpt, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(excerpt, "usage: t.sh run");
    let msg = err.to_string();
    assert!(msg.contains("printed no JSON"), "{msg}");
    assert!(msg.contains("line 1 column 1"), "{msg}");
}

#[tokio::test]
async fn discovery_missing_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), "t.sh", r#"echo '{"name":"x","outputs":{}}'"#);
    let err = discover(&path, SECOND).await.unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::NotAutoSchema { message, .. } if message.contains("`inputs`")),
        "{err:?}"
    );
}

#[tokio::test]
async fn discovery_output_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), "t.sh", "yes '{}'");
    let runner = Runner::new(RunnerConfig {
        result_limit: 1000,
        ..RunnerConfig::default()
    });
    let err = runner.discover(&path, SECOND).await.unwrap_err();
    assert!(
        matches!(err, DiscoveryError::TooLarge { limit: 1000, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn discovery_of_non_executables() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.sh");
    std::fs::write(&plain, "#!/bin/bash\necho '{\"inputs\":{}}'\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = discover(&plain, SECOND).await.unwrap_err();
    assert!(
        matches!(err, DiscoveryError::NotExecutable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod +x"), "{err}");

    let missing = dir.path().join("nope.sh");
    let err = discover(&missing, SECOND).await.unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::NotFound { path } if *path == missing),
        "{err:?}"
    );
    assert_eq!(
        err.to_string().split(';').next().unwrap(),
        format!("`{}` does not exist", missing.display())
    );

    let err = check_executable(dir.path()).unwrap_err();
    assert!(matches!(err, DiscoveryError::NotAFile { .. }), "{err:?}");

    // Executable but not startable: no `#!` line and not a binary.
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, [0u8, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = discover(&garbage, SECOND).await.unwrap_err();
    assert!(matches!(err, DiscoveryError::SpawnFailed { .. }), "{err:?}");
}

/// A pool of `parallel` with the default runner, its logs collected.
fn test_pool(parallel: usize) -> task_executor::pool::Pool {
    task_executor::pool::Pool::new(
        Runner::default(),
        parallel,
        std::sync::Arc::new(Collect::default()),
    )
}

/// More than a pool has slot threads (`max(2, CPUs)`): each slot then runs
/// several jobs at once on its runtime, not one at a time.
fn beyond_the_slots() -> usize {
    2 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) + 3
}

/// Jobs that record how many of them run at once, through pools whose slots
/// run one job at a time and several.
#[tokio::test]
async fn pool_returns_every_job_and_never_exceeds_its_concurrency() {
    pool_bounds_concurrency(2).await;
    pool_bounds_concurrency(beyond_the_slots()).await;
}

async fn pool_bounds_concurrency(parallel: usize) {
    use task_executor::pool::Job;
    let dir = tempfile::tempdir().unwrap();
    let slots = dir.path().join("slots");
    std::fs::create_dir(&slots).unwrap();
    let seen = dir.path().join("seen");
    let body = format!(
        "touch {slots}/$TASK_RUN_ID\nls {slots} | wc -l >> {seen}\nsleep 0.1\nrm {slots}/$TASK_RUN_ID\necho '{{\"status\":1}}'",
        slots = slots.display(),
        seen = seen.display()
    );
    let task = std::sync::Arc::new(task_at(script(dir.path(), "t.sh", &body), None));
    let mut pool = test_pool(parallel);
    let mut ids = Vec::new();
    pool.run_all(
        (0..4 * parallel as u64).map(|id| Job {
            id,
            task: task.clone(),
            request: RunRequest::new(json!({})),
        }),
        |done| {
            completed(&done.report);
            ids.push(done.id);
        },
    )
    .await;
    ids.sort_unstable();
    assert_eq!(ids, (0..4 * parallel as u64).collect::<Vec<_>>());
    let counts: Vec<usize> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let max = *counts.iter().max().unwrap();
    assert!(max <= parallel, "saw {max} runs at once: {counts:?}");
    assert!(max >= parallel.min(3), "runs hardly overlapped: {counts:?}");
}

/// Dropping a pool with runs in flight leaves no process of theirs behind,
/// whichever kind of slot runs them: SIGKILL at once, even for a task that
/// ignores SIGTERM, and the pool's own children reaped, not left zombies.
#[tokio::test]
async fn dropping_a_pool_kills_its_running_tasks() {
    dropping_a_pool_kills(2).await;
    dropping_a_pool_kills(beyond_the_slots()).await;
}

async fn dropping_a_pool_kills(parallel: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (mains, pids) = (dir.path().join("mains"), dir.path().join("pids"));
    let body = format!(
        "trap '' TERM\necho $$ >> {mains}\nsleep 30 &\necho $! >> {pids}\necho $$ >> {pids}\nwait",
        mains = mains.display(),
        pids = pids.display()
    );
    let pool = two_started_jobs(parallel, dir.path(), &body, &pids, 4).await;
    let dropped_at = Instant::now();
    drop(pool);
    // Well inside the 5 s grace a SIGTERM would have waited for.
    assert!(
        dropped_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        dropped_at.elapsed()
    );
    for pid in lines_of(&pids) {
        let pid = pid.parse().unwrap();
        assert!(gone(pid).await, "process {pid} outlived the pool");
    }
    let mains = lines_of(&mains);
    assert_eq!(mains.len(), 2);
    for pid in mains {
        let pid = pid.parse().unwrap();
        assert!(reaped(pid).await, "process {pid} was left a zombie");
    }
}

/// The lines of `path` so far (none if it does not exist yet).
fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

/// A pool of `parallel` running two jobs of a task with `body`, returned
/// once the jobs have written `lines` lines to `marker` between them.
async fn two_started_jobs(
    parallel: usize,
    dir: &Path,
    body: &str,
    marker: &Path,
    lines: usize,
) -> task_executor::pool::Pool {
    use task_executor::pool::Job;
    let task = std::sync::Arc::new(task_at(script(dir, "t.sh", body), None));
    let mut pool = test_pool(parallel);
    for id in 0..2 {
        pool.submit(Job {
            id,
            task: task.clone(),
            request: RunRequest::new(json!({})),
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines_of(marker).len() < lines {
        assert!(Instant::now() < deadline, "the tasks did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool
}

/// Cancelling a pool's token (what a Ctrl-C handler holds) stops its runs
/// within the grace period and reports them cancelled, in either kind of slot.
#[tokio::test]
async fn cancelling_a_pools_token_stops_its_runs() {
    pool_cancellation(2).await;
    pool_cancellation(beyond_the_slots()).await;
}

async fn pool_cancellation(parallel: usize) {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let body = format!("echo go >> {}\nsleep 30", started.display());
    let mut pool = two_started_jobs(parallel, dir.path(), &body, &started, 2).await;
    let cancelled_at = Instant::now();
    pool.cancel_token().cancel();
    for _ in 0..2 {
        let done = pool.next().await.expect("two jobs in flight");
        assert_eq!(
            done.report.outcome,
            Outcome::Cancelled,
            "parallel {parallel}"
        );
    }
    // SIGTERM ends `sleep` at once: no wait for the 5 s grace.
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(4),
        "{:?}",
        cancelled_at.elapsed()
    );
    assert!(pool.next().await.is_none());
}

/// The task starts with SIGPIPE at its default (Rust ignores it in the
/// executor, and an ignored signal would survive exec) and nothing blocked,
/// so `producer | head -1` in a task ends the way it does in a shell. (std
/// passes on the spawning thread's signal mask: nothing in the executor
/// blocks a signal, and this test process starts with none blocked.)
#[tokio::test]
async fn signals_start_clean() {
    // What the shell ignores, and what a command it starts has blocked (the
    // shell itself may block signals while it waits for a command).
    let (report, logs, _d) = run_script(
        r#"sed -n 's/^SigIgn:[[:space:]]*/ignored /p' /proc/$$/status >&2
sed -n 's/^SigBlk:[[:space:]]*/blocked /p' /proc/self/status >&2
echo '{"status":1}'"#,
        json!({}),
    )
    .await;
    completed(&report);
    let lines = logs.texts(Stream::Stderr);
    let mask = |kind: &str| {
        let line = lines.iter().find_map(|l| l.strip_prefix(kind)).unwrap();
        u64::from_str_radix(line.trim(), 16).unwrap()
    };
    let sigpipe = 1u64 << (13 - 1);
    assert_eq!(mask("ignored ") & sigpipe, 0, "SIGPIPE ignored: {lines:?}");
    assert_eq!(mask("blocked "), 0, "signals blocked: {lines:?}");
}

#[tokio::test]
async fn a_task_file_that_is_not_executable_is_a_spawn_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), "t.sh", r#"echo '{"status":1}'"#);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (report, _) = run_once(RunnerConfig::default(), &task_at(path.clone(), None)).await;
    let message = spawn_failure(&report);
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("Permission denied"), "{message}");
    assert_eq!(report.exit, None);
}

/// `try_next` hands out finished jobs only, and never waits.
#[tokio::test]
async fn try_next_returns_only_finished_jobs() {
    use task_executor::pool::Job;
    let dir = tempfile::tempdir().unwrap();
    let body = "sleep 0.3\necho '{\"status\":1}'";
    let task = std::sync::Arc::new(task_at(script(dir.path(), "t.sh", body), None));
    let mut pool = test_pool(2);
    pool.submit(Job {
        id: 7,
        task,
        request: RunRequest::new(json!({})),
    });
    assert!(
        pool.try_next().is_none(),
        "the job cannot have finished yet"
    );
    assert_eq!(pool.in_flight(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        if let Some(done) = pool.try_next() {
            break done;
        }
        assert!(Instant::now() < deadline, "the job never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done.id, 7);
    completed(&done.report);
    assert_eq!(pool.in_flight(), 0);
    assert!(pool.try_next().is_none());
    assert!(pool.next().await.is_none());
}
