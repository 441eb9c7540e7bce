//! Copying one store into another (`store copy`): tasks, schedules and the
//! history of finished runs, between any two stores this build opens
//! (YAML → SQLite, SQLite → SQLite, and so on), through the store
//! contract's `export_*`/`import_*` alone.
//!
//! The rules, once:
//! - **Idempotent, never overwriting.** Each batch is imported in one
//!   transaction of the target: new rows are inserted, identical ones
//!   counted unchanged, and a row that differs from the target's refuses its
//!   whole batch ([`CopyError::Conflict`], naming the row and the field).
//!   Batches imported before it stay; running the copy again after the
//!   conflict is resolved copies the rest.
//! - **Only finished runs.** A queued or running run is not copied: both
//!   stores' workers would run it. They are counted as skipped, with a
//!   notice saying how to copy them (drain or cancel, then copy again).
//! - **What each side keeps.** A YAML source has tasks only; a YAML target
//!   takes tasks only, and the notice says the history stayed behind. A
//!   source entry this build cannot use is skipped and named.
//! - **Not the tokens or the audit log**: a token's hash is keyed to its
//!   store, and the log is the source's record; a notice says so.
//! - **Never onto itself**, and never from a store that does not exist (a
//!   typo would otherwise copy nothing and succeed). The source is only read.
//!
//! Runs are exported in the source's insertion order and imported in that
//! order, so in the target they follow its own runs in the source's order.
//! A page holds at most [`CopyConfig::batch`] runs and stops once their log
//! lines pass [`CopyConfig::log_bytes`], which bounds memory.

use super::store_kind;
use crate::store::{ExportLimits, ImportReport, Listed, Store, StoreError, StoreSpec, Unusable};
use crate::view::{CopyCountsView, CopyView};

/// How a copy is batched.
#[derive(Debug, Clone, Copy)]
pub struct CopyConfig {
    /// Rows per batch (and per transaction of the target).
    pub batch: usize,
    /// Log text after which a batch of runs ends early, in bytes.
    pub log_bytes: usize,
}

impl Default for CopyConfig {
    fn default() -> Self {
        Self {
            batch: 500,
            log_bytes: 16 * 1024 * 1024,
        }
    }
}

/// How many rows of one kind were copied, found unchanged, or skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyCounts {
    /// Written into the target.
    pub copied: u64,
    /// Already in the target, identical.
    pub unchanged: u64,
    /// Not copied: for tasks, entries the source cannot use; for runs,
    /// runs still queued or running.
    pub skipped: u64,
}

impl CopyCounts {
    fn add(&mut self, report: ImportReport) {
        self.copied += report.inserted;
        self.unchanged += report.unchanged;
    }
}

/// Whether the history (schedules and runs) was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryCopy {
    /// It was.
    Copied,
    /// The source keeps none (a YAML store).
    NoneInSource,
    /// The target keeps none (a YAML store): it stayed in the source.
    NotKeptByTarget,
}

impl HistoryCopy {
    /// The stable name `--json` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryCopy::Copied => "copied",
            HistoryCopy::NoneInSource => "none_in_source",
            HistoryCopy::NotKeptByTarget => "not_kept_by_target",
        }
    }
}

/// What is being copied, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyStage {
    /// Tasks.
    Tasks,
    /// Schedules.
    Schedules,
    /// Runs.
    Runs,
}

/// Where a copy has got to: after each batch.
#[derive(Debug, Clone, Copy)]
pub struct CopyProgress {
    /// What the last batch was.
    pub stage: CopyStage,
    /// The counts of that kind so far.
    pub counts: CopyCounts,
}

/// What [`copy_store`] did.
#[derive(Debug, Clone)]
pub struct Copied {
    /// The source, as `--store` takes it.
    pub from: String,
    /// The target, as `--store` takes it.
    pub to: String,
    /// Tasks.
    pub tasks: CopyCounts,
    /// Schedules, when the history was copied.
    pub schedules: Option<CopyCounts>,
    /// Runs, when the history was copied.
    pub runs: Option<CopyCounts>,
    /// Whether the history was copied.
    pub history: HistoryCopy,
    /// The source's entries this build cannot use, not copied.
    pub unusable: Vec<Unusable>,
    /// What the target's writes want the user to know (a YAML rewrite
    /// that dropped comments).
    pub warnings: Vec<String>,
    /// API tokens in the source, not copied: each is keyed to its store.
    pub tokens_left: u64,
}

impl Copied {
    /// What the user should know beyond the counts: what was left behind
    /// and how to copy it. One sentence each.
    pub fn notices(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.unusable.is_empty() {
            let names: Vec<String> = self
                .unusable
                .iter()
                .map(|u| format!("`{}` ({})", u.name, u.reason))
                .collect();
            out.push(format!(
                "{} {} in `{}` cannot be used and {} not copied: {}",
                self.unusable.len(),
                plural(self.unusable.len() as u64, "entry", "entries"),
                self.from,
                if self.unusable.len() == 1 {
                    "was"
                } else {
                    "were"
                },
                names.join("; ")
            ));
        }
        if let Some(runs) = self.runs.filter(|r| r.skipped > 0) {
            out.push(format!(
                "{} {} queued or running in `{}`; drain or cancel {} and run `store copy` \
                 again to copy {}",
                runs.skipped,
                if runs.skipped == 1 {
                    "run is"
                } else {
                    "runs are"
                },
                self.from,
                if runs.skipped == 1 { "it" } else { "them" },
                if runs.skipped == 1 { "it" } else { "them" },
            ));
        }
        if self.tokens_left > 0 {
            out.push(format!(
                "{} API {} in `{}` {} not copied (a token is keyed to its store) and the \
                 audit log stays there: create tokens on `{}` with `tokens create`",
                self.tokens_left,
                plural(self.tokens_left, "token", "tokens"),
                self.from,
                if self.tokens_left == 1 { "was" } else { "were" },
                self.to
            ));
        }
        if self.history == HistoryCopy::NotKeptByTarget {
            out.push(format!(
                "history was not copied: `{}` is a YAML store, which keeps tasks only; the \
                 schedules and runs of `{}` are still there (copy into an SQLite store to keep them)",
                self.to, self.from
            ));
        }
        if self.schedules.is_some_and(|s| s.copied > 0) {
            out.push(format!(
                "the copied schedules are in both stores now: remove them from `{}` \
                 (`schedule remove`) once workers run on `{}`, or both will fire",
                self.from, self.to
            ));
        }
        out
    }
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

impl From<CopyCounts> for CopyCountsView {
    fn from(c: CopyCounts) -> Self {
        Self {
            copied: c.copied,
            unchanged: c.unchanged,
            skipped: c.skipped,
        }
    }
}

impl From<&Copied> for CopyView {
    fn from(c: &Copied) -> Self {
        Self {
            tasks: c.tasks.into(),
            schedules: c.schedules.map(Into::into),
            runs: c.runs.map(Into::into),
            history: c.history.as_str(),
        }
    }
}

/// Why a copy stopped. What was imported before it stays.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// `--from` and `--to` are one store.
    #[error("`{store}` is both the source and the target; copy into another store")]
    SameStore {
        /// The store.
        store: String,
    },
    /// The source does not exist.
    #[error("the source store `{store}` does not exist; check --from (nothing was copied)")]
    NoSource {
        /// The store.
        store: String,
    },
    /// A row differs between the stores.
    #[error(
        "{what} `{key}` is already in `{target}` with a different `{field}`, so the copy stopped; \
         nothing of its batch was written and what was copied before stays. {hint}, then run \
         `store copy` again; or copy into an empty store"
    )]
    Conflict {
        /// What kind of row (`task`, `schedule`, `run`).
        what: &'static str,
        /// Its name or id.
        key: String,
        /// The first field that differs.
        field: &'static str,
        /// The target, as `--store` takes it.
        target: String,
        /// How to resolve it in the target.
        hint: String,
    },
    /// Reading the source failed.
    #[error("cannot read the source `{store}`: {source}")]
    Source {
        /// The store.
        store: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// Writing the target failed.
    #[error("cannot write the target `{store}`: {source}")]
    Target {
        /// The store.
        store: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
}

impl CopyError {
    /// The stable kind front ends show.
    pub fn kind(&self) -> &'static str {
        match self {
            CopyError::SameStore { .. } => "same_store",
            CopyError::NoSource { .. } => "missing_store",
            CopyError::Conflict { .. } => "conflict",
            CopyError::Source { source, .. } | CopyError::Target { source, .. } => {
                store_kind(source)
            }
        }
    }
}

/// Copies the tasks, schedules and finished runs of `from` into `to`:
/// see the module docs. `progress` hears after each batch.
pub async fn copy_store(
    from: &StoreSpec,
    to: &StoreSpec,
    config: &CopyConfig,
    progress: &mut dyn FnMut(CopyProgress),
) -> Result<Copied, CopyError> {
    if from.same_store(to) {
        return Err(CopyError::SameStore {
            store: from.as_arg(),
        });
    }
    if from.is_missing() {
        return Err(CopyError::NoSource {
            store: from.as_arg(),
        });
    }
    let copy = Copying {
        from: Store::open(from),
        to: Store::open(to),
        from_arg: from.as_arg(),
        to_arg: to.as_arg(),
    };
    copy.run(config, progress).await
}

/// One copy under way.
struct Copying {
    from: Store,
    to: Store,
    from_arg: String,
    to_arg: String,
}

impl Copying {
    async fn run(
        &self,
        config: &CopyConfig,
        progress: &mut dyn FnMut(CopyProgress),
    ) -> Result<Copied, CopyError> {
        let batch = config.batch.max(1);
        let mut done = Copied {
            from: self.from_arg.clone(),
            to: self.to_arg.clone(),
            tasks: CopyCounts::default(),
            schedules: None,
            runs: None,
            history: HistoryCopy::Copied,
            unusable: Vec::new(),
            warnings: Vec::new(),
            tokens_left: 0,
        };
        let result = self.copy_all(config, batch, &mut done, progress).await;
        done.warnings = self.to.take_warnings();
        result.map(|()| done)
    }

    async fn copy_all(
        &self,
        config: &CopyConfig,
        batch: usize,
        done: &mut Copied,
        progress: &mut dyn FnMut(CopyProgress),
    ) -> Result<(), CopyError> {
        let mut tasks = Vec::new();
        for entry in self.from.entries().await.map_err(|e| self.source(e))? {
            match entry {
                Listed::Task(t) => tasks.push(t),
                Listed::Unusable(u) => done.unusable.push(u),
            }
        }
        done.tasks.skipped = done.unusable.len() as u64;
        for chunk in tasks.chunks(batch) {
            let report = self
                .to
                .import_tasks(chunk)
                .await
                .map_err(|e| self.target(e))?;
            done.tasks.add(report);
            progress(CopyProgress {
                stage: CopyStage::Tasks,
                counts: done.tasks,
            });
        }

        if !self.from.has_history() {
            done.history = HistoryCopy::NoneInSource;
            return Ok(());
        }
        // Tokens are hashed with a key of their store's own, so they cannot
        // move; the audit log is the source's record and stays with it.
        done.tokens_left = match self.from.tokens().await {
            Ok(tokens) => tokens.len() as u64,
            Err(StoreError::Unsupported { .. }) => 0,
            Err(e) => return Err(self.source(e)),
        };
        if !self.to.has_history() {
            done.history = HistoryCopy::NotKeptByTarget;
            return Ok(());
        }

        let schedules = self
            .from
            .export_schedules()
            .await
            .map_err(|e| self.source(e))?;
        let counts = done.schedules.insert(CopyCounts::default());
        for chunk in schedules.chunks(batch) {
            let report = self
                .to
                .import_schedules(chunk)
                .await
                .map_err(|e| self.target(e))?;
            counts.add(report);
            progress(CopyProgress {
                stage: CopyStage::Schedules,
                counts: *counts,
            });
        }

        let limits = ExportLimits {
            runs: batch,
            log_bytes: config.log_bytes,
        };
        let counts = done.runs.insert(CopyCounts::default());
        let mut after = None;
        loop {
            let page = self
                .from
                .export_runs(after, limits)
                .await
                .map_err(|e| self.source(e))?;
            let (finished, active): (Vec<_>, Vec<_>) = page
                .runs
                .into_iter()
                .partition(|r| r.record.state.is_terminal());
            counts.skipped += active.len() as u64;
            let report = self
                .to
                .import_runs(&finished)
                .await
                .map_err(|e| self.target(e))?;
            counts.add(report);
            progress(CopyProgress {
                stage: CopyStage::Runs,
                counts: *counts,
            });
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    fn source(&self, source: StoreError) -> CopyError {
        CopyError::Source {
            store: self.from_arg.clone(),
            source,
        }
    }

    /// A failed write to the target; a conflict says how to resolve it there.
    fn target(&self, source: StoreError) -> CopyError {
        let StoreError::Conflict { what, key, field } = source else {
            return CopyError::Target {
                store: self.to_arg.clone(),
                source,
            };
        };
        let store = &self.to_arg;
        let hint = match what {
            "task" => format!(
                "To take the source's, remove it from the target \
                 (`manage_tasks --store {store} unregister {key}`, which removes its schedules \
                 there too)"
            ),
            "schedule" => format!(
                "To take the source's, remove it from the target \
                 (`manage_tasks --store {store} schedule remove {key}`)"
            ),
            _ => format!(
                "No command removes one run: to take the source's, delete the target's finished \
                 runs (`manage_tasks --store {store} runs prune --keep 0` deletes all of them)"
            ),
        };
        CopyError::Conflict {
            what,
            key,
            field,
            target: store.clone(),
            hint,
        }
    }
}
