//! Riding out a store that does not answer for a while: the backoff between
//! tries, and [`Reachability`], which sorts each call's result into a value,
//! a transient failure to try again after a pause, or an error that ends the
//! caller — and says once when an outage starts and once when it ends.
//!
//! Which errors are transient is decided in one place,
//! [`StoreError::is_transient`]. The worker, `runs logs --follow` and
//! waiting for a run all use this module, so they back off alike.

use std::time::Duration;

use tokio::time::Instant;

use super::StoreError;

/// The first pause after a failed call.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest pause between two tries.
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// Exponential backoff from [`FIRST_RETRY`] to [`MAX_RETRY`], doubling after
/// each try, each pause jittered by ±25% so that many processes that lost
/// the same store do not come back in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_RETRY }
    }
}

impl Backoff {
    /// The pause before the next try.
    pub fn next_pause(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(MAX_RETRY);
        base.mul_f64(0.75 + fastrand::f64() * 0.5)
    }
}

/// What a caller hears about its store, once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreNotice {
    /// A call failed with a transient error: an outage starts. Later
    /// failures of the same outage are not reported.
    Unavailable {
        /// The first error, as its message.
        error: String,
        /// The pause before the first new try.
        retry_in: Duration,
    },
    /// A call succeeded again after an outage.
    Back {
        /// How long the outage lasted, from its first failed call.
        after: Duration,
    },
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    backoff: Backoff,
    retry_at: Instant,
}

/// Whether a caller's store calls are getting through. Feed it every
/// result with [`Reachability::check`]; while it is down, wait until
/// [`Reachability::retry_at`] before the next try.
#[derive(Debug, Default)]
pub struct Reachability {
    outage: Option<Outage>,
}

impl Reachability {
    /// Sorts the result of a call made at `started`: `Ok(Some(value))` when
    /// it succeeded (ending an outage, with [`StoreNotice::Back`]), `Ok(None)`
    /// for a transient failure (starting an outage, with
    /// [`StoreNotice::Unavailable`], or going on with one, silently), `Err`
    /// for an error that trying again cannot mend. An outage is counted from
    /// the start of its first failed call (which may have waited for a lock).
    pub fn check<T>(
        &mut self,
        started: Instant,
        result: Result<T, StoreError>,
        notice: &mut dyn FnMut(StoreNotice),
    ) -> Result<Option<T>, StoreError> {
        match result {
            Ok(value) => {
                if let Some(o) = self.outage.take() {
                    notice(StoreNotice::Back {
                        after: o.since.elapsed(),
                    });
                }
                Ok(Some(value))
            }
            Err(e) if e.is_transient() => {
                let now = Instant::now();
                match &mut self.outage {
                    Some(o) => o.retry_at = now + o.backoff.next_pause(),
                    None => {
                        let mut backoff = Backoff::default();
                        let pause = backoff.next_pause();
                        self.outage = Some(Outage {
                            since: started.min(now),
                            backoff,
                            retry_at: now + pause,
                        });
                        notice(StoreNotice::Unavailable {
                            error: e.to_string(),
                            retry_in: pause,
                        });
                    }
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the last call failed transiently (and none succeeded since).
    pub fn is_down(&self) -> bool {
        self.outage.is_some()
    }

    /// During an outage, when the next try is due.
    pub fn retry_at(&self) -> Option<Instant> {
        self.outage.as_ref().map(|o| o.retry_at)
    }

    /// During an outage, since when calls have been failing.
    pub fn down_since(&self) -> Option<Instant> {
        self.outage.as_ref().map(|o| o.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> StoreError {
        StoreError::Io {
            action: "read",
            path: "/x".into(),
            source: std::io::Error::other("gone"),
        }
    }

    #[test]
    fn backoff_doubles_from_100ms_to_5s_with_jitter() {
        let mut b = Backoff::default();
        let pauses: Vec<Duration> = (0..10).map(|_| b.next_pause()).collect();
        for (i, p) in pauses.iter().enumerate() {
            let base = (FIRST_RETRY * (1 << i)).min(MAX_RETRY);
            assert!(
                *p >= base.mul_f64(0.75) && *p <= base.mul_f64(1.25),
                "pause {i}: {p:?} around {base:?}"
            );
        }
        assert!(pauses[9] >= MAX_RETRY.mul_f64(0.75));
    }

    #[test]
    fn an_outage_is_told_once_when_it_starts_and_once_when_it_ends() {
        let mut r = Reachability::default();
        let mut heard = Vec::new();
        let mut note = |n: StoreNotice| heard.push(n);
        assert_eq!(r.check(Instant::now(), Ok(1), &mut note).unwrap(), Some(1));
        assert!(!r.is_down());
        for _ in 0..3 {
            assert!(
                r.check::<()>(Instant::now(), Err(transient()), &mut note)
                    .unwrap()
                    .is_none()
            );
        }
        assert!(r.is_down() && r.retry_at().is_some());
        assert_eq!(r.check(Instant::now(), Ok(2), &mut note).unwrap(), Some(2));
        assert!(!r.is_down());
        assert_eq!(heard.len(), 2, "{heard:?}");
        assert!(
            matches!(&heard[0], StoreNotice::Unavailable { error, retry_in }
                if error.contains("gone") && *retry_in <= FIRST_RETRY.mul_f64(1.25)),
            "{heard:?}"
        );
        assert!(matches!(heard[1], StoreNotice::Back { .. }), "{heard:?}");
    }

    #[test]
    fn sqlite_locks_and_io_are_transient_corruption_and_constraints_are_not() {
        let sqlite = |code| StoreError::Sqlite {
            path: "/x".into(),
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        };
        use rusqlite::ffi;
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_FULL,
            ffi::SQLITE_PROTOCOL,
        ] {
            assert!(sqlite(code).is_transient(), "{code}");
        }
        for code in [
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_NOTADB,
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_MISUSE,
        ] {
            assert!(!sqlite(code).is_transient(), "{code}");
        }
        assert!(transient().is_transient());
        let too_new = StoreError::TooNew {
            path: "/x".into(),
            found: 9,
            supported: 4,
        };
        assert!(!too_new.is_transient());
    }

    #[test]
    fn an_error_that_cannot_pass_is_returned_and_starts_no_outage() {
        let mut r = Reachability::default();
        let mut heard = Vec::new();
        let foreign = StoreError::Foreign {
            path: "/x".into(),
            reason: "not ours".into(),
        };
        assert!(!foreign.is_transient());
        let e = r
            .check::<()>(Instant::now(), Err(foreign), &mut |n| heard.push(n))
            .unwrap_err();
        assert!(matches!(e, StoreError::Foreign { .. }));
        assert!(!r.is_down() && heard.is_empty());
    }
}
