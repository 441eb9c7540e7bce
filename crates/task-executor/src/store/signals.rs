//! In-process wake-ups: what one handle of a store (and every clone of it)
//! tells the others in the same process, so that a server's own workers
//! claim a run the moment its API queues it, and a caller waiting for a run
//! hears the moment its worker records the end, instead of at the next poll.
//!
//! Best effort by design: a signal can be missed (a waiter that starts
//! waiting just after it), so every waiter still looks again at its own
//! interval; runs queued or ended by other processes are only seen that way
//! (or, for idle PostgreSQL workers, by `LISTEN`).

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

/// How many run changes a slow waiter may fall behind by before it is told
/// it lagged (and looks at its run again anyway).
const CHANGES: usize = 1024;

/// The signals of one store handle, shared by its clones.
#[derive(Debug)]
pub(crate) struct Signals {
    /// Runs were queued (or queued again): idle workers look for work.
    work: Arc<Notify>,
    /// The id of a run whose state was just written.
    changed: broadcast::Sender<Arc<str>>,
    /// A cancel was asked of a running run: its worker renews at once,
    /// which tells it, rather than at its next heartbeat.
    cancel: Notify,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            work: Arc::new(Notify::new()),
            changed: broadcast::channel(CHANGES).0,
            cancel: Notify::new(),
        }
    }
}

impl Signals {
    /// The notifier idle workers wait on (PostgreSQL's listener wakes it too).
    pub(crate) fn work(&self) -> &Arc<Notify> {
        &self.work
    }

    /// Wakes every worker of this process that waits for work, and leaves a
    /// permit for one that is about to wait (so a run queued between its
    /// claim and its wait is not left to the next poll).
    pub(crate) fn queued(&self) {
        self.work.notify_waiters();
        self.work.notify_one();
    }

    /// Tells whoever follows run `id` that its state was written.
    pub(crate) fn changed(&self, id: &str) {
        // Nobody listening is the usual case, not an error.
        let _ = self.changed.send(Arc::from(id));
    }

    /// Wakes this process's workers waiting in [`Signals::cancel_asked`].
    /// (and one about to wait: a permit, as [`Signals::queued`] leaves).
    pub(crate) fn cancelled(&self) {
        self.cancel.notify_waiters();
        self.cancel.notify_one();
    }

    /// Waits until a cancel is asked of a running run through this store.
    pub(crate) async fn cancel_asked(&self) {
        self.cancel.notified().await;
    }

    /// Hears of every run state written through this store from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A worker that was between its claim and its wait when a run was
    /// queued still wakes at once (the permit), and one already waiting does too.
    #[tokio::test]
    async fn a_queued_run_wakes_a_waiting_and_a_late_worker() {
        let s = Signals::default();
        s.queued();
        tokio::time::timeout(Duration::from_secs(5), s.work().notified())
            .await
            .expect("the permit left for a late waiter");
        let work = s.work().clone();
        let waiting = tokio::spawn(async move { work.notified().await });
        tokio::task::yield_now().await;
        s.queued();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a waiting worker woken")
            .unwrap();
    }

    #[tokio::test]
    async fn followers_hear_each_changed_run() {
        let s = Signals::default();
        let mut rx = s.subscribe();
        s.changed("r1");
        s.changed("r2");
        assert_eq!(&*rx.recv().await.unwrap(), "r1");
        assert_eq!(&*rx.recv().await.unwrap(), "r2");
    }
}
