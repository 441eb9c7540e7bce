//! Run state changes as a feed, read from the store: what a dashboard (the
//! HTTP API's `/events`) shows. Every process reading the same store sees
//! every change, whichever process or worker made it, because nothing
//! here listens to an in-process bus.
//!
//! The store keeps no change log, so the feed compares what it sees at each
//! look with what it saw before: the runs still queued or running, the runs
//! queued since its last look (with [`CHANGES_LOOKBACK`] to spare, for
//! writes that committed late), and each run it last saw active. A change
//! is a run whose state, attempt or cancel request differs from the last
//! time it was seen; states a run passed through between two looks are not
//! told (a run queued and finished between them is told once, finished).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::Service;
use crate::history::{RunFilter, RunRecord, RunState};
use crate::store::{RunLookup, StoreError};

/// How far before its last look the feed lists newly queued runs again:
/// a run queued (by the store's clock) just before a look but committed
/// after it is still seen at the next.
pub const CHANGES_LOOKBACK: Duration = Duration::from_secs(10);

/// The most runs of one state read per look; a store with more queued runs
/// than this tells changes of the newest only.
const ACTIVE_LIMIT: usize = 10_000;

/// Rows per listing call.
const PAGE: usize = 500;

/// What the feed last saw of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    state: RunState,
    attempt: u32,
    cancel_requested: bool,
    queued_at: i64,
}

impl Seen {
    fn of(r: &RunRecord) -> Self {
        Self {
            state: r.state,
            attempt: r.attempt,
            cancel_requested: r.cancel_requested,
            queued_at: r.queued_at,
        }
    }
}

/// The state changes of every run in the store, from when it was made
/// ([`Service::changes`]); [`RunChanges::poll`] returns what changed since
/// the last call.
#[derive(Debug)]
pub struct RunChanges<'s> {
    service: &'s Service,
    seen: HashMap<String, Seen>,
    /// The store's time at the last look.
    last: i64,
    /// At the first look, runs queued, started or ended since then are news.
    from: Option<i64>,
}

impl Service {
    /// A feed of run state changes from now on: the runs as they are now
    /// are its starting point, not changes.
    pub async fn changes(&self) -> Result<RunChanges<'_>, StoreError> {
        let mut feed = self.changes_from(None)?;
        feed.poll().await?;
        Ok(feed)
    }

    /// A feed whose first [`RunChanges::poll`] also tells the runs queued,
    /// started or ended since `from` (epoch ms; none when `None`): a caller
    /// that must not miss what happened while it was getting ready.
    pub fn changes_from(&self, from: Option<i64>) -> Result<RunChanges<'_>, StoreError> {
        self.queue_store("run history")?;
        Ok(RunChanges {
            service: self,
            seen: HashMap::new(),
            last: 0,
            from,
        })
    }
}

impl RunChanges<'_> {
    /// The runs whose state, attempt or cancel request changed since the
    /// last call, oldest-queued first. A failed call changes nothing: it
    /// can simply be made again.
    pub async fn poll(&mut self) -> Result<Vec<RunRecord>, StoreError> {
        let store = self.service.queue_store("run history")?;
        let now = store.now().await?;
        let first = self.last == 0;
        let lookback = CHANGES_LOOKBACK.as_millis() as i64;
        let since = match (first, self.from) {
            (true, Some(from)) => from.min(now) - lookback,
            (true, None) => now - lookback,
            (false, _) => self.last - lookback,
        };
        let mut looked: Vec<RunRecord> = Vec::new();
        let mut ids: HashSet<String> = HashSet::new();
        for (state, since) in [
            (None, Some(since)),
            (Some(RunState::Queued), None),
            (Some(RunState::Running), None),
        ] {
            for r in self.list(state, since).await? {
                if ids.insert(r.id.clone()) {
                    looked.push(r);
                }
            }
        }
        // Runs last seen active that none of the listings showed have ended
        // (or were pruned): look at each.
        let missing: Vec<String> = self
            .seen
            .iter()
            .filter(|(id, s)| !s.state.is_terminal() && !ids.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        let mut gone = Vec::new();
        for id in missing {
            match store.get_run(&id).await? {
                RunLookup::Found(r) => {
                    ids.insert(r.id.clone());
                    looked.push(*r);
                }
                _ => gone.push(id),
            }
        }
        let mut changed = Vec::new();
        let mut seen = self.seen.clone();
        for id in gone {
            seen.remove(&id);
        }
        for r in looked {
            let now_seen = Seen::of(&r);
            let news = match (first, self.from) {
                (false, _) => true,
                (true, None) => false,
                (true, Some(from)) => [Some(r.queued_at), r.started_at, r.finished_at]
                    .into_iter()
                    .flatten()
                    .any(|t| t >= from),
            };
            if seen.insert(r.id.clone(), now_seen) != Some(now_seen) && news {
                changed.push(r);
            }
        }
        // Ended runs queued before the lookback are listed no more: forget them.
        let horizon = now - 2 * lookback;
        seen.retain(|_, s| !s.state.is_terminal() || s.queued_at >= horizon);
        self.seen = seen;
        self.last = now;
        changed.sort_by_key(|r| r.queued_at);
        Ok(changed)
    }

    /// Every run in `state` (any, when `None`) queued since `since`, up to [`ACTIVE_LIMIT`].
    async fn list(
        &self,
        state: Option<RunState>,
        since: Option<i64>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .service
                .runs(&RunFilter {
                    task: None,
                    state,
                    since,
                    limit: PAGE,
                    after,
                })
                .await?;
            all.extend(page.runs);
            match page.next {
                Some(next) if all.len() < ACTIVE_LIMIT => after = Some(next),
                _ => return Ok(all),
            }
        }
    }
}
