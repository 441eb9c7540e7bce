//! The worker registry as front ends use it: which workers there are, and
//! why a queued run waits when no live worker can take it.

use super::Service;
use crate::history::{RunRecord, RunState};
use crate::store::{StoreError, WorkerRecord};

/// Every registered worker, and the store's time they were looked at.
#[derive(Debug, Clone)]
pub struct Workers {
    /// The store's time of the listing (epoch ms): what liveness and ages are measured at.
    pub now: i64,
    /// The workers, oldest first, live or not.
    pub workers: Vec<WorkerRecord>,
}

impl Service {
    /// Every registered worker, oldest first.
    pub async fn workers(&self) -> Result<Workers, StoreError> {
        let store = self.queue_store("the worker registry")?;
        let workers = store.list_workers().await?;
        let now = store.now().await?;
        Ok(Workers { now, workers })
    }

    /// Why `run` waits, when the worker registry can tell: a queued run,
    /// due now, that no live worker can claim. `no live worker`, or `no live
    /// worker has tags gpu, linux` (the task's tags that no live worker has;
    /// all of them when each is held by some worker but none holds them
    /// all), each with how to start one. `None` otherwise: the run is not
    /// queued or not due yet, or a live worker has the task's tags. One
    /// registry read and one task read.
    pub async fn waiting(&self, run: &RunRecord) -> Result<Option<String>, StoreError> {
        if run.state != RunState::Queued {
            return Ok(None);
        }
        let store = self.queue_store("the worker registry")?;
        let Workers { now, workers } = self.workers().await?;
        if run.available_at > now {
            return Ok(None);
        }
        // A task that is gone or unreadable: its run is failed by the worker
        // that claims it, which says why.
        let tags = match store.get(&run.task).await {
            Ok(Some(task)) => task.policy.tags,
            Ok(None) | Err(_) => Vec::new(),
        };
        Ok(why_waiting(&tags, &workers, now))
    }
}

/// Why a due run of a task with `tags` waits, given the registered `workers` at `now`.
fn why_waiting(tags: &[String], workers: &[WorkerRecord], now: i64) -> Option<String> {
    let live: Vec<&WorkerRecord> = workers.iter().filter(|w| w.is_live(now)).collect();
    let start = if tags.is_empty() {
        "`manage_tasks worker`".to_owned()
    } else {
        format!("`manage_tasks worker --tags {}`", tags.join(","))
    };
    if live.is_empty() {
        return Some(format!("no live worker; start one with {start}"));
    }
    let has = |w: &WorkerRecord, tag: &String| w.tags.contains(tag);
    if live.iter().any(|w| tags.iter().all(|t| has(w, t))) {
        return None;
    }
    let mut missing: Vec<&str> = tags
        .iter()
        .filter(|t| !live.iter().any(|w| has(w, t)))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        missing = tags.iter().map(String::as_str).collect();
    }
    Some(format!(
        "no live worker has tags {}; start one with {start}",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(tags: &[&str], last_seen: i64) -> WorkerRecord {
        WorkerRecord {
            id: format!("w-{}", tags.join("-")),
            host: "h".into(),
            pid: 1,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            concurrency: 1,
            running: 0,
            lease_ms: 30_000,
            started_at: 0,
            last_seen,
        }
    }

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn a_run_waits_for_a_live_worker_with_all_its_tags() {
        let now = 100_000;
        let (fresh, stale) = (now - 1_000, now - 31_000);
        let why = |t: &[&str], ws: &[WorkerRecord]| why_waiting(&tags(t), ws, now);
        assert_eq!(
            why(&[], &[]).as_deref(),
            Some("no live worker; start one with `manage_tasks worker`")
        );
        assert_eq!(
            why(&["gpu"], &[worker(&["gpu"], stale)]).as_deref(),
            Some("no live worker; start one with `manage_tasks worker --tags gpu`")
        );
        assert_eq!(why(&[], &[worker(&["gpu"], fresh)]), None);
        assert_eq!(why(&["gpu"], &[worker(&["gpu", "linux"], fresh)]), None);
        // Only a gone worker has the tag: named, with the tags to start one with.
        assert_eq!(
            why(
                &["gpu", "linux"],
                &[worker(&["gpu", "linux"], stale), worker(&["linux"], fresh)]
            )
            .as_deref(),
            Some(
                "no live worker has tags gpu; start one with `manage_tasks worker --tags gpu,linux`"
            )
        );
        assert_eq!(
            why(&["gpu", "linux"], &[worker(&[], fresh)]).as_deref(),
            Some(
                "no live worker has tags gpu, linux; start one with `manage_tasks worker --tags gpu,linux`"
            )
        );
        // Each tag on some worker, none with both: both named.
        assert_eq!(
            why(
                &["gpu", "linux"],
                &[worker(&["gpu"], fresh), worker(&["linux"], fresh)]
            )
            .as_deref(),
            Some(
                "no live worker has tags gpu, linux; start one with `manage_tasks worker --tags gpu,linux`"
            )
        );
    }
}
