//! `/metrics`, in the Prometheus text format: HTTP requests by route,
//! method and status; runs ended by task and outcome, and their durations
//! (as this process saw them in the store: each `serve` process counts
//! every run of the store, whichever worker ran it); the queue's depth and
//! the running attempts, read from the store at each scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use task_executor::history::RunRecord;
use task_executor::store::Active;

/// Labels of an HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route (`/api/v1/runs/{id}`), or `unmatched`.
    pub route: String,
    /// The method.
    pub method: String,
    /// The status code.
    pub status: u16,
}

/// Labels of an ended run.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    task: String,
    outcome: String,
}

/// Labels of a task.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
}

/// Labels of the queue depth.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    /// `due` (claimable now) or `delayed`.
    when: &'static str,
}

type DurationFamily = Family<TaskLabels, Histogram, fn() -> Histogram>;

/// Every metric of the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http: Family<HttpLabels, Counter>,
    runs: Family<RunLabels, Counter>,
    durations: DurationFamily,
    queue: Family<QueueLabels, Gauge>,
    running: Gauge,
}

fn duration_histogram() -> Histogram {
    // 10 ms to about 45 min.
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

impl Metrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("task_executor");
        let http = Family::<HttpLabels, Counter>::default();
        let runs = Family::<RunLabels, Counter>::default();
        let durations: DurationFamily = Family::new_with_constructor(duration_histogram);
        let queue = Family::<QueueLabels, Gauge>::default();
        let running = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            http.clone(),
        );
        registry.register(
            "runs_ended",
            "Runs seen ending in the store since this server started, by task and outcome",
            runs.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "How long the last attempt of each run seen ending took, by task",
            durations.clone(),
        );
        registry.register(
            "queue_depth",
            "Queued runs, due now or delayed (a delay, a retry's backoff)",
            queue.clone(),
        );
        registry.register(
            "running_attempts",
            "Attempts running on any worker",
            running.clone(),
        );
        Self {
            registry,
            http,
            runs,
            durations,
            queue,
            running,
        }
    }

    /// Counts an answered request.
    pub fn request(&self, labels: HttpLabels) {
        self.http.get_or_create(&labels).inc();
    }

    /// Counts `run` if it has ended (called once per change seen).
    pub fn run_changed(&self, run: &RunRecord) {
        if !run.state.is_terminal() {
            return;
        }
        let outcome = run
            .outcome
            .as_ref()
            .map(|o| o.kind().to_owned())
            .unwrap_or_else(|| run.state.as_str().to_owned());
        self.runs
            .get_or_create(&RunLabels {
                task: run.task.to_string(),
                outcome,
            })
            .inc();
        if let Some(ms) = run.duration_ms() {
            self.durations
                .get_or_create(&TaskLabels {
                    task: run.task.to_string(),
                })
                .observe(ms as f64 / 1000.0);
        }
    }

    /// The text exposition, with the queue as `active` says.
    pub fn render(&self, active: Option<Active>) -> String {
        if let Some(a) = active {
            let set = |when, n: u64| {
                self.queue
                    .get_or_create(&QueueLabels { when })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            };
            set("due", a.due);
            set("delayed", a.delayed);
            self.running
                .set(i64::try_from(a.running).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
