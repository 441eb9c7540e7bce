//! Wake-up latency of an idle worker: from just before a run is queued
//! (through the library, as `submit` does) to the moment its task process
//! is running. The worker is a real `manage_tasks worker` process that
//! `bench/postgres.sh` starts; its task is `bench/stamp.c`, which reads
//! `CLOCK_REALTIME` first thing in `main` and writes it to the FIFO
//! `$WAKE_FIFO`; this bench takes the same clock just before
//! [`Store::enqueue`] and reads the stamp back from the FIFO (a blocking
//! read: nothing here competes for the CPU while the worker wakes). After
//! each sample it waits for the run to be recorded, then for 5 ms plus a
//! random pause of up to `JITTER_MS`, so that a polling worker is caught at
//! every phase of its poll.
//!
//! `WAKE_STORE=postgres://… WAKE_FIFO=PATH cargo bench -p task-executor
//! --bench wake_pg -- --bench [SAMPLES] [JITTER_MS]` (default 1000 samples,
//! 20 ms); the store must hold the task `stamp` and have one idle worker.
//! Prints one line: samples, then p50, p90, p99 and max of the latency, the
//! median time `enqueue` itself took, and the median from its return to the
//! task's start, in ms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use task_executor::history::RunState;
use task_executor::store::RunLookup;
use task_executor::{Store, StoreSpec, TaskName};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Samples taken first and thrown away (connections, caches, the worker's first claim).
const WARMUP: usize = 10;

fn realtime_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as i64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Waits until run `id` has ended; panics if it did not complete.
async fn wait_recorded(store: &Store, id: &str) {
    for _ in 0..10_000 {
        if let RunLookup::Found(r) = store.get_run(id).await.expect("get_run") {
            match r.state {
                RunState::Queued | RunState::Running => {}
                RunState::Completed => return,
                other => panic!("run {id} ended {other}: {:?}", r.outcome),
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("run {id} was not recorded within 10 s: is the worker running?");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let mut numbers = args.iter().filter_map(|a| a.parse::<u64>().ok());
    let samples = numbers.next().unwrap_or(1000) as usize;
    let jitter_ms = numbers.next().unwrap_or(20);
    let (Ok(spec), Ok(fifo)) = (std::env::var("WAKE_STORE"), std::env::var("WAKE_FIFO")) else {
        eprintln!("wake_pg: set WAKE_STORE (a store with the task `stamp`) and WAKE_FIFO");
        std::process::exit(2);
    };
    let store = Store::open(&StoreSpec::parse(&spec).expect("WAKE_STORE is a store spec"));
    let name = TaskName::new("stamp").unwrap();
    let task = store
        .get(&name)
        .await
        .expect("read the task")
        .expect("the task `stamp` is registered (bench/postgres.sh registers it)");
    // Read-write, so that the FIFO never reports end-of-file between writers.
    let rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&fifo)
        .expect("open WAKE_FIFO");
    let mut stamps = BufReader::new(rx).lines();

    // A worker is up once it is registered; give it time to go idle.
    for _ in 0..300 {
        if !store.list_workers().await.expect("workers").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !store.list_workers().await.expect("workers").is_empty(),
        "no worker registered within 30 s"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut latency = Vec::with_capacity(samples);
    let mut enqueue = Vec::with_capacity(samples);
    let mut after = Vec::with_capacity(samples);
    for i in 0..WARMUP + samples {
        let pause = 5_000 + fastrand::u64(0..=jitter_ms * 1000);
        tokio::time::sleep(Duration::from_micros(pause)).await;
        let run = task_executor::queue::new_run(&task, &json!({}), "wake-bench");
        let id = run.id.clone();
        let t0 = realtime_ns();
        store.enqueue(&[run]).await.expect("enqueue");
        let t1 = realtime_ns();
        let line = tokio::time::timeout(Duration::from_secs(30), stamps.next_line())
            .await
            .expect("the task started within 30 s (is the worker running?)")
            .expect("read WAKE_FIFO")
            .expect("WAKE_FIFO stays open");
        let started: i64 = line.trim().parse().expect("a timestamp in ns");
        wait_recorded(&store, &id).await;
        if i >= WARMUP {
            latency.push((started - t0) as f64 / 1e6);
            enqueue.push((t1 - t0) as f64 / 1e6);
            after.push((started - t1) as f64 / 1e6);
        }
    }
    latency.sort_by(f64::total_cmp);
    enqueue.sort_by(f64::total_cmp);
    after.sort_by(f64::total_cmp);
    println!(
        "{samples}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.2}",
        percentile(&latency, 0.5),
        percentile(&latency, 0.9),
        percentile(&latency, 0.99),
        latency[latency.len() - 1],
        percentile(&enqueue, 0.5),
        percentile(&after, 0.5),
    );
}
