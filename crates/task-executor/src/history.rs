//! Run history: what is recorded about every run and how its log is bounded.
//!
//! - [`RunRecord`] is one row of history as every store returns it; its
//!   [`RunState`] is `queued → running → completed | failed | cancelled`.
//! - [`RunLogs`] is a [`LogSink`] that keeps a run's log bounded: the first
//!   half of the budget (the head) is kept as printed, then only the most
//!   recent half (the tail); what falls out of the middle is counted so that a
//!   reader can show a marker. Lines keep their stream and order (`seq`). Of
//!   a line longer than half the budget only the start is kept (4 KiB, marked
//!   cut like a line the runner cut): whole, it would push out every other.
//!   It also hides secret argument values ([`crate::secrets`]) where a task
//!   echoes them.
//! - [`RunFilter`], [`Cursor`] and [`RunPage`]: keyset-paginated listing.
//!
//! Storing is the store's business (`Store::record_logs`, …); nothing here does I/O.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::log::{LogLine, LogSink, Stream};
use crate::outcome::{ExitInfo, Outcome};
use crate::secrets::hide_secrets;
use crate::task::TaskName;

/// Default log budget per run (head + tail), in bytes.
pub const DEFAULT_LOG_LIMIT: usize = 1024 * 1024;

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// A time as milliseconds since the Unix epoch.
pub fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Milliseconds since the Unix epoch as a time.
pub fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Where a run is in its life.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Waiting for a worker (possibly until `available_at`).
    Queued,
    /// An attempt holds a lease.
    Running,
    /// The task reported a result (any status).
    Completed,
    /// The run failed: timeout, crash, no or invalid result, lease lost with no attempts left.
    Failed,
    /// Cancelled before or while running.
    Cancelled,
}

impl RunState {
    /// Every state, in life order.
    pub const ALL: [RunState; 5] = [
        RunState::Queued,
        RunState::Running,
        RunState::Completed,
        RunState::Failed,
        RunState::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the run is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Completed | RunState::Failed | RunState::Cancelled
        )
    }

    /// The final state a finished attempt's outcome leads to.
    pub fn for_outcome(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Completed { .. } => RunState::Completed,
            Outcome::Cancelled => RunState::Cancelled,
            _ => RunState::Failed,
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run as history keeps it. Arguments are masked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// The run id (a random UUID: ids differ from their first character).
    pub id: String,
    /// The task.
    pub task: TaskName,
    /// The arguments, with secret fields masked.
    pub args: Value,
    /// Who asked for the run.
    pub caller: String,
    /// Where the run is.
    pub state: RunState,
    /// Higher is claimed first.
    pub priority: i64,
    /// The current (or last) attempt, from 1; 0 while never claimed.
    pub attempt: u32,
    /// How many attempts the run may take.
    pub max_attempts: u32,
    /// The worker holding (or that last held) the run.
    pub worker: Option<String>,
    /// Whether `runs cancel` asked a running attempt to stop.
    pub cancel_requested: bool,
    /// When it was queued (epoch ms).
    pub queued_at: i64,
    /// When it may first be claimed (epoch ms).
    pub available_at: i64,
    /// When the current (or last) attempt started (epoch ms).
    pub started_at: Option<i64>,
    /// When it ended (epoch ms).
    pub finished_at: Option<i64>,
    /// How the last finished attempt ended.
    pub outcome: Option<Outcome>,
    /// How the last attempt's process ended.
    pub exit: Option<ExitInfo>,
    /// What went wrong (or, for a queued run, why it waits again) when the
    /// outcome does not say it all: a lapsed lease, a cancel, a retry.
    pub error: Option<RunError>,
    /// Log lines cut from the middle of the current attempt's log.
    pub log_cut_lines: u64,
    /// Bytes cut from the middle of the current attempt's log.
    pub log_cut_bytes: u64,
    /// The schedule that queued the run, if any.
    pub schedule: Option<String>,
}

impl RunRecord {
    /// How long the last attempt took, when it has started and ended.
    pub fn duration_ms(&self) -> Option<u64> {
        let (start, end) = (self.started_at?, self.finished_at?);
        Some(end.saturating_sub(start).max(0) as u64)
    }
}

/// Why a run failed, waits again, or was cancelled, beyond its outcome:
/// a stable `kind` (`lease_lost`, `cancelled`, `retrying`, …) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    /// A short, stable name for scripts.
    pub kind: String,
    /// What happened, for people.
    pub message: String,
}

impl RunError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// Filters for listing runs; newest first.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this task's runs.
    pub task: Option<TaskName>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Only runs queued at or after this time (epoch ms).
    pub since: Option<i64>,
    /// At most this many.
    pub limit: usize,
    /// Continue after this cursor (from [`RunPage::next`]).
    pub after: Option<Cursor>,
}

/// A keyset position in the newest-first order: `(queued_at, seq)` of the
/// last row seen, `seq` being the store's insertion order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The last row's `queued_at`.
    pub queued_at: i64,
    /// The last row's place in insertion order.
    pub seq: i64,
}

impl Cursor {
    /// The opaque text form, `<queued_at>.<seq>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.queued_at, self.seq)
    }

    /// Parses [`Cursor::encode`]'s form.
    pub fn decode(s: &str) -> Option<Self> {
        let (at, seq) = s.trim().split_once('.')?;
        Some(Self {
            queued_at: at.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// One page of runs.
#[derive(Debug, Clone)]
pub struct RunPage {
    /// The runs, newest first.
    pub runs: Vec<RunRecord>,
    /// Where the next page starts, when there may be one.
    pub next: Option<Cursor>,
}

/// One stored log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// Position in the attempt's output, from 0; a gap means lines were cut.
    pub seq: u64,
    /// Where the task printed it.
    pub stream: Stream,
    /// The text (invalid UTF-8 replaced).
    pub text: String,
    /// Whether the runner cut the line for being too long.
    pub truncated: bool,
}

/// What [`RunLogs::take`] hands to the store: new lines, and the range of
/// already stored lines that fell out of the bounded middle.
#[derive(Debug, Clone, Default)]
pub struct LogBatch {
    /// New lines, in order.
    pub lines: Vec<LogEntry>,
    /// Stored lines with `seq` in this range are to be deleted.
    pub delete: Option<(u64, u64)>,
    /// Total lines cut so far.
    pub cut_lines: u64,
    /// Total bytes cut so far.
    pub cut_bytes: u64,
}

impl LogBatch {
    /// Whether there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.delete.is_none()
    }
}

/// A bounded head + tail log of one attempt, fed by the runner and drained
/// into the store from time to time. Memory stays within the budget.
pub struct RunLogs {
    inner: Mutex<LogBuffer>,
    secrets: Vec<String>,
}

/// The secret values it hides are never printed, only counted.
impl std::fmt::Debug for RunLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("RunLogs")
            .field("next_seq", &b.next_seq)
            .field("pending", &b.pending.len())
            .field("cut_lines", &b.cut_lines)
            .field("secrets", &format_args!("<{} hidden>", self.secrets.len()))
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct LogBuffer {
    half: usize,
    head_bytes: usize,
    head_full: bool,
    next_seq: u64,
    /// Lines not yet handed to the store.
    pending: VecDeque<LogEntry>,
    /// `(seq, bytes)` of every line kept in the tail, stored or not.
    tail: VecDeque<(u64, usize)>,
    tail_bytes: usize,
    /// The first seq that went to the tail: stored lines from here up to the tail's start are cut.
    tail_start: Option<u64>,
    cut_lines: u64,
    cut_bytes: u64,
    deleted_upto: Option<u64>,
}

impl RunLogs {
    /// A log keeping at most `limit` bytes (half head, half tail), hiding `secrets`.
    pub fn new(limit: usize, secrets: Vec<String>) -> Self {
        Self {
            inner: Mutex::new(LogBuffer {
                half: (limit / 2).max(1),
                head_bytes: 0,
                head_full: false,
                next_seq: 0,
                pending: VecDeque::new(),
                tail: VecDeque::new(),
                tail_bytes: 0,
                tail_start: None,
                cut_lines: 0,
                cut_bytes: 0,
                deleted_upto: None,
            }),
            secrets,
        }
    }

    /// The first `keep` bytes of `text` (fewer at a UTF-8 boundary), with
    /// secrets hidden: a secret that starts before the cut is masked whole.
    fn start_of(&self, text: &[u8], keep: usize) -> String {
        let longest = self.secrets.iter().map(String::len).max().unwrap_or(0);
        let window = &text[..text.len().min(keep + longest)];
        let hidden = hide_secrets(window, &self.secrets);
        let mut cut = &hidden[..hidden.len().min(keep)];
        if let Err(e) = std::str::from_utf8(cut)
            && e.error_len().is_none()
        {
            cut = &cut[..e.valid_up_to()];
        }
        String::from_utf8_lossy(cut).into_owned()
    }

    /// Hands over what is new since the last call.
    pub fn take(&self) -> LogBatch {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let lines: Vec<LogEntry> = b.pending.drain(..).collect();
        // Stored lines before the tail's first kept line are cut.
        let delete = match (b.tail_start, b.tail.front()) {
            (Some(start), Some(&(first_kept, _))) => {
                let end = first_kept;
                let from = b.deleted_upto.unwrap_or(start).max(start);
                if end > from {
                    b.deleted_upto = Some(end);
                    Some((from, end))
                } else {
                    None
                }
            }
            _ => None,
        };
        LogBatch {
            lines,
            delete,
            cut_lines: b.cut_lines,
            cut_bytes: b.cut_bytes,
        }
    }
}

impl RunLogs {
    /// Gives back a batch that [`RunLogs::take`] handed out and the store
    /// could not take (it did not answer): the next `take` hands its lines
    /// out again, before the newer ones, and asks again for its deletions.
    /// Lines that fell out of the tail meanwhile stay cut, so memory stays
    /// within the budget however long the store is away.
    pub fn put_back(&self, batch: LogBatch) {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let first_kept = b.tail.front().map(|&(seq, _)| seq);
        let tail_start = b.tail_start;
        let cut = |seq: u64| match (tail_start, first_kept) {
            (Some(start), Some(kept)) => seq >= start && seq < kept,
            (Some(start), None) => seq >= start,
            (None, _) => false,
        };
        for line in batch.lines.into_iter().rev().filter(|l| !cut(l.seq)) {
            b.pending.push_front(line);
        }
        if let Some((from, _)) = batch.delete {
            b.deleted_upto = Some(b.deleted_upto.map_or(from, |d| d.min(from)));
        }
    }
}

impl LogSink for RunLogs {
    fn line(&self, line: LogLine<'_>) {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // A line longer than half the limit would push every other line out
        // of the head or the tail: keep its start, marked cut, and copy no
        // more of it than that (a 16 MiB line was once copied twice).
        let (text, truncated) = if line.text.len() >= b.half {
            (self.start_of(line.text, long_line_kept(b.half)), true)
        } else {
            let text = hide_secrets(line.text, &self.secrets);
            (String::from_utf8_lossy(&text).into_owned(), line.truncated)
        };
        let size = text.len() + 1;
        let seq = b.next_seq;
        b.next_seq += 1;
        let entry = LogEntry {
            seq,
            stream: line.stream,
            text,
            truncated,
        };
        if !b.head_full && b.head_bytes + size <= b.half {
            b.head_bytes += size;
            b.pending.push_back(entry);
            return;
        }
        b.head_full = true;
        if b.tail_start.is_none() {
            b.tail_start = Some(seq);
        }
        b.tail.push_back((seq, size));
        b.tail_bytes += size;
        b.pending.push_back(entry);
        while b.tail_bytes > b.half {
            let Some((gone, bytes)) = b.tail.pop_front() else {
                break;
            };
            b.tail_bytes -= bytes;
            b.cut_lines += 1;
            b.cut_bytes += bytes as u64;
            // Not stored yet: just forget it. Stored: `take` deletes it.
            if let Some(pos) = b.pending.iter().position(|e| e.seq == gone) {
                b.pending.remove(pos);
            }
        }
    }
}

/// How much of a line longer than half the log budget (`half`) is kept:
/// 4 KiB, or a quarter of the half when the budget is tiny.
fn long_line_kept(half: usize) -> usize {
    (half / 4).min(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(logs: &RunLogs, text: &str, stream: Stream) {
        let task = TaskName::new("t").unwrap();
        logs.line(LogLine {
            task: &task,
            run_id: "r",
            stream,
            text: text.as_bytes(),
            truncated: false,
        });
    }

    #[test]
    fn logs_keep_head_and_tail_and_count_the_cut() {
        // 10 bytes per line ("line NNNN" + newline); 100-byte budget: 5 head, 5 tail.
        let logs = RunLogs::new(100, vec![]);
        for i in 0..8 {
            feed(&logs, &format!("line {i:04}"), Stream::Stdout);
        }
        let first = logs.take();
        assert_eq!(first.lines.len(), 8);
        assert_eq!(first.delete, None);
        for i in 8..20 {
            feed(&logs, &format!("line {i:04}"), Stream::Stderr);
        }
        let second = logs.take();
        // Lines 5..15 were cut: 5..8 stored earlier (deleted now), 8..15 never stored.
        assert_eq!(second.delete, Some((5, 15)));
        let seqs: Vec<u64> = second.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (15..20).collect::<Vec<_>>());
        assert_eq!((second.cut_lines, second.cut_bytes), (10, 100));
        assert_eq!(second.lines[0].stream, Stream::Stderr);
        feed(&logs, "line 0020", Stream::Stdout);
        let third = logs.take();
        assert_eq!(third.delete, Some((15, 16)));
        assert_eq!(third.cut_lines, 11);
    }

    #[test]
    fn a_batch_put_back_is_handed_out_again_without_what_was_cut_meanwhile() {
        // 10 bytes per line; 100-byte budget: 5 head, 5 tail.
        let logs = RunLogs::new(100, vec![]);
        for i in 0..8 {
            feed(&logs, &format!("line {i:04}"), Stream::Stdout);
        }
        let first = logs.take();
        logs.put_back(first);
        feed(&logs, "line 0008", Stream::Stdout);
        let again = logs.take();
        let seqs: Vec<u64> = again.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (0..9).collect::<Vec<_>>(), "in order, nothing lost");
        assert_eq!(again.delete, None);
        // Stored now. Lines 9..20 push 5..15 out of the tail; that batch fails.
        for i in 9..20 {
            feed(&logs, &format!("line {i:04}"), Stream::Stdout);
        }
        let failed = logs.take();
        assert_eq!(failed.delete, Some((5, 15)));
        logs.put_back(failed);
        // Meanwhile two more lines push 15 and 16 out as well.
        for i in 20..22 {
            feed(&logs, &format!("line {i:04}"), Stream::Stdout);
        }
        let retried = logs.take();
        let seqs: Vec<u64> = retried.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (17..22).collect::<Vec<_>>(), "15 and 16 stay cut");
        // The deletion is asked for again, with what was cut since.
        assert_eq!(retried.delete, Some((5, 17)));
        assert_eq!((retried.cut_lines, retried.cut_bytes), (12, 120));
    }

    #[test]
    fn a_line_longer_than_half_the_limit_keeps_its_start_and_its_neighbours() {
        // A limit of 200: a head and a tail of 100 bytes each; a long line
        // keeps 25 bytes.
        let logs = RunLogs::new(200, vec![]);
        feed(&logs, &"a".repeat(150), Stream::Stdout);
        for i in 1..6 {
            feed(&logs, &format!("line {i:04}"), Stream::Stdout);
        }
        feed(&logs, &"x".repeat(5000), Stream::Stderr);
        feed(&logs, "line 0007", Stream::Stdout);
        let batch = logs.take();
        let seqs: Vec<u64> = batch.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (0..8).collect::<Vec<_>>(), "nothing is pushed out");
        assert_eq!((batch.cut_lines, batch.cut_bytes), (0, 0));
        assert_eq!(batch.lines[0].text, "a".repeat(25));
        assert!(batch.lines[0].truncated && batch.lines[6].truncated);
        assert_eq!(batch.lines[6].text, "x".repeat(25));
        assert_eq!(batch.lines[6].stream, Stream::Stderr);
        assert!(!batch.lines[7].truncated);
        // With the default budget, 4 KiB of a 16 MiB line.
        let logs = RunLogs::new(DEFAULT_LOG_LIMIT, vec![]);
        feed(&logs, &"y".repeat(16 << 20), Stream::Stdout);
        assert_eq!(logs.take().lines[0].text.len(), 4096);
    }

    #[test]
    fn the_start_of_a_long_line_hides_secrets_across_the_cut_and_ends_on_a_character() {
        let logs = RunLogs::new(200, vec!["hunter2".into()]);
        // 25 bytes are kept; the secret starts at byte 22, across the cut.
        feed(
            &logs,
            &format!("{}hunter2{}", "-".repeat(22), "-".repeat(200)),
            Stream::Stdout,
        );
        // `é` is two bytes: the 25-byte cut falls inside the 13th.
        feed(&logs, &"é".repeat(100), Stream::Stdout);
        let lines = logs.take().lines;
        assert_eq!(lines[0].text, format!("{}***", "-".repeat(22)));
        assert_eq!(lines[1].text, "é".repeat(12));
    }

    #[test]
    fn logs_hide_secret_values() {
        let logs = RunLogs::new(1000, vec!["hunter2".into()]);
        feed(&logs, "password is hunter2!", Stream::Stdout);
        let debug = format!("{logs:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(logs.take().lines[0].text, "password is ********!");
    }
}
