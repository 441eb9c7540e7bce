//! Micro-benchmarks of the per-run hot path that does not involve a process:
//! argument validation, envelope encoding and result parsing. Run with
//! `cargo bench -p task-executor`; CI only compiles them.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use task_executor::protocol::{Envelope, parse_result, parse_result_line};
use task_executor::schema::{Formats, Validator};

fn validation(c: &mut Criterion) {
    let schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "user": {"type": "string", "minLength": 1},
            "cmd": {"type": "string", "enum": ["hostname", "uptime", "date"]},
            "requestId": {"type": "string", "pattern": "^[0-9]+$"},
            "retries": {"type": "integer", "minimum": 0, "maximum": 10}
        },
        "required": ["user", "cmd", "requestId"],
        "additionalProperties": false
    });
    let args =
        json!({"user": "tester", "cmd": "hostname", "requestId": "214215161263", "retries": 2});
    let bad = json!({"user": "", "cmd": "rm", "requestId": "x", "retries": 99, "extra": 1});
    let validator = Validator::compile(&schema, Formats::Assert).unwrap();
    c.bench_function("validate/valid_args", |b| {
        b.iter(|| validator.validate(black_box(&args)))
    });
    c.bench_function("validate/invalid_args_all_errors", |b| {
        b.iter(|| validator.validate(black_box(&bad)))
    });
    c.bench_function("validate/compile_draft7", |b| {
        b.iter(|| Validator::compile(black_box(&schema), Formats::Assert))
    });
}

fn envelope(c: &mut Criterion) {
    let small = json!({"user": "tester", "cmd": "hostname", "requestId": "214215161263"});
    let large = json!({"rows": (0..1000).map(|i| json!({"id": i, "name": format!("row {i}")})).collect::<Vec<_>>()});
    c.bench_function("envelope/encode_small", |b| {
        b.iter(|| Envelope::new("self", "pythonTestTask", black_box(&small)).to_line())
    });
    c.bench_function("envelope/encode_30kb", |b| {
        b.iter(|| Envelope::new("self", "pythonTestTask", black_box(&large)).to_line())
    });
}

fn result(c: &mut Criterion) {
    let line = br#"{"status":1,"reason":"ok","payload":{"foo":"bar","items":[1,2,3]}}"#;
    let log = b"2023/02/26 18:30:19 TASK::pythonTestTask hello world, this is a log line";
    c.bench_function("result/parse_result_line", |b| {
        b.iter(|| parse_result_line(black_box(line)))
    });
    c.bench_function("result/skip_log_line", |b| {
        b.iter(|| parse_result_line(black_box(log)))
    });
    c.bench_function("result/parse_result_document", |b| {
        b.iter(|| parse_result(black_box(line)))
    });
}

criterion_group!(benches, validation, envelope, result);
criterion_main!(benches);
