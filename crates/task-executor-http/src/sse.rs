//! Server-sent event streams: a run's log as it is written (resumable with
//! `Last-Event-ID`), and every run's state changes (`/events`), plus the
//! one watcher per process that reads those changes from the store.
//!
//! Each stream is a task of its own that reads through the service and
//! sends events down a bounded channel; it ends when the client goes, when
//! the log ends, or at shutdown (so a graceful shutdown is not held up by
//! a dashboard left open).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use task_executor::history::RunRecord;
use task_executor::service::{LogEvent, LogPosition, Service};
use task_executor::store::StoreNotice;
use task_executor::view::{CutCounts, ErrorView, LogCutView, LogLineView, RunView};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the watcher looks at the store for run changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Changes kept for a slow `/events` client before it misses some.
pub const EVENTS_BACKLOG: usize = 1024;

/// The response of a stream fed by `rx`.
fn respond(rx: mpsc::Receiver<Event>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// An event named `name` carrying `data` as JSON.
fn json_event(name: &str, data: &impl Serialize) -> Event {
    match Event::default().event(name).json_data(data) {
        Ok(e) => e,
        // Our views always serialize; say so rather than panic if one did not.
        Err(e) => Event::default()
            .event("error")
            .data(format!("cannot encode event: {e}")),
    }
}

/// The `id` of a log line event: `<attempt>.<seq>`.
pub fn line_id(attempt: u32, seq: u64) -> String {
    format!("{attempt}.{seq}")
}

/// Where a stream resumes after the event `id` ([`line_id`]), if it is one of ours.
pub fn resume_after(id: &str) -> Option<LogPosition> {
    let (attempt, seq) = id.split_once('.')?;
    Some(LogPosition {
        attempt: attempt.parse().ok()?,
        next_seq: seq.parse::<u64>().ok()?.checked_add(1)?,
    })
}

#[derive(Serialize)]
struct AttemptData {
    attempt: u32,
}

#[derive(Serialize)]
struct StoreData {
    available: bool,
    message: String,
}

/// Streams run `id`'s log from `from`: `line` events (id `<attempt>.<seq>`),
/// `cut`, `attempt` (a new attempt starts), `state` (the run, when its
/// state or attempt changes; first, as it is now), `store` (the store
/// stopped or started answering), and at the end `end` (the run as it
/// ended) or `error`.
pub fn log_stream(
    service: Service,
    run_id: String,
    from: LogPosition,
    shutdown: CancellationToken,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut stream = match service.logs_from(&run_id, from, true).await {
            Ok(s) => s,
            Err(e) => {
                let view = ErrorView::new(e.kind(), e.to_string());
                let _ = tx.send(json_event("error", &view)).await;
                return;
            }
        };
        let mut last = (stream.run().state, stream.run().attempt);
        if tx
            .send(json_event("state", &RunView::from(stream.run())))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
            };
            let event = match next {
                Ok(Some(LogEvent::Line { attempt, entry })) => {
                    json_event("line", &LogLineView::new(attempt, &entry))
                        .id(line_id(attempt, entry.seq))
                }
                Ok(Some(LogEvent::Cut { lines, bytes })) => json_event(
                    "cut",
                    &LogCutView {
                        cut: CutCounts { lines, bytes },
                    },
                ),
                Ok(Some(LogEvent::Attempt(attempt))) => {
                    json_event("attempt", &AttemptData { attempt })
                }
                Ok(Some(LogEvent::Store(notice))) => json_event(
                    "store",
                    &match notice {
                        StoreNotice::Unavailable { error, .. } => StoreData {
                            available: false,
                            message: format!("the store does not answer: {error}"),
                        },
                        StoreNotice::Back { after } => StoreData {
                            available: true,
                            message: format!(
                                "the store answers again after {}",
                                humantime::format_duration(Duration::from_millis(
                                    after.as_millis() as u64
                                ))
                            ),
                        },
                    },
                ),
                Ok(None) => {
                    let _ = tx
                        .send(json_event("end", &RunView::from(stream.run())))
                        .await;
                    return;
                }
                Err(e) => {
                    let view = ErrorView::new(e.kind(), e.to_string());
                    let _ = tx.send(json_event("error", &view)).await;
                    return;
                }
            };
            if tx.send(event).await.is_err() {
                return;
            }
            let now = (stream.run().state, stream.run().attempt);
            if now != last {
                last = now;
                if tx
                    .send(json_event("state", &RunView::from(stream.run())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    respond(rx)
}

/// Streams every run's state changes: a `run` event per change, with the
/// run; `lagged` when this client fell behind and missed some.
pub fn events_stream(
    mut changes: broadcast::Receiver<Arc<RunRecord>>,
    shutdown: CancellationToken,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
            };
            let event = match change {
                Ok(run) => json_event("run", &RunView::from(&*run)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Event::default().event("lagged").data(missed.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    respond(rx)
}

/// Reads run changes from the store every [`WATCH_EVERY`] until `shutdown`,
/// counting ended runs in `metrics` and handing each change to `changes`.
pub async fn watch(
    service: Service,
    changes: broadcast::Sender<Arc<RunRecord>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    // What ends while the watcher gets ready counts too.
    let started = task_executor::history::now_ms();
    let mut feed = match service.changes_from(Some(started)) {
        Ok(feed) => feed,
        Err(e) => {
            tracing::warn!("cannot read run changes: {e}");
            return;
        }
    };
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(WATCH_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        first = false;
        match feed.poll().await {
            Ok(changed) => {
                for run in changed {
                    metrics.run_changed(&run);
                    // No subscriber is fine.
                    let _ = changes.send(Arc::new(run));
                }
            }
            Err(e) => tracing::warn!("cannot read run changes: {e}; trying again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_resume_after_the_line() {
        assert_eq!(line_id(2, 41), "2.41");
        assert_eq!(
            resume_after("2.41"),
            Some(LogPosition {
                attempt: 2,
                next_seq: 42
            })
        );
        assert_eq!(resume_after("nonsense"), None);
        assert_eq!(resume_after("1.18446744073709551615"), None);
    }
}
