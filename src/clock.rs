//! Wall-clock time derived from tokio's clock, so that tests which pause and
//! advance tokio time (`tokio::time::pause`, `advance`) move dates too: a
//! case accepted "today" is overdue after the test advances 31 days.
//!
//! The clock reads the system time once, when it is made, and adds tokio's
//! monotonic elapsed time from then on; a running gateway's dates therefore
//! never jump backwards when the system clock is adjusted. Calendar dates
//! ([`Date`]) and the civil calendar arithmetic live in [`date`].

pub mod date;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

pub use date::Date;

/// Wall-clock time as the system time at creation plus tokio time elapsed,
/// plus an offset tests may move forward ([`WallClock::adjustable`]). One
/// clock serves every date the gateway computes: case deadlines, approval
/// expiry, the transparency view's disclosure delay.
#[derive(Clone)]
pub struct WallClock {
    base: SystemTime,
    at: Instant,
    /// Seconds added (tests move it forward through a [`ClockHandle`]).
    skew: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let skew = self.skew.as_ref().map_or(0, |s| s.load(Ordering::Relaxed));
        write!(f, "WallClock(now {:?}, skew {skew} s)", self.now())
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl WallClock {
    /// A clock reading the system time now. Inside a paused tokio runtime
    /// it advances only when tokio time does.
    pub fn new() -> Self {
        Self {
            base: SystemTime::now(),
            at: Instant::now(),
            skew: None,
        }
    }

    /// A clock like [`WallClock::new`] plus an offset the returned handle
    /// moves forward (tests that cross days without pausing tokio time).
    pub fn adjustable() -> (Self, ClockHandle) {
        let skew = Arc::new(AtomicU64::new(0));
        let clock = Self {
            skew: Some(skew.clone()),
            ..Self::new()
        };
        (clock, ClockHandle(skew))
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        let skew = self.skew.as_ref().map_or(0, |s| s.load(Ordering::Relaxed));
        self.base + self.at.elapsed() + Duration::from_secs(skew)
    }

    /// The current time in microseconds since the Unix epoch.
    pub fn now_micros(&self) -> i64 {
        micros(self.now())
    }
}

/// Moves an [`WallClock::adjustable`] clock forward.
#[derive(Debug, Clone)]
pub struct ClockHandle(Arc<AtomicU64>);

impl ClockHandle {
    /// Moves the clock forward by `by` (whole seconds).
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::Relaxed);
    }
}

/// Microseconds since the Unix epoch (0 before it, saturating far after).
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A duration in microseconds (saturating).
pub fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time() {
        let c = WallClock::new();
        let t0 = c.now_micros();
        tokio::time::advance(Duration::from_secs(31 * 86_400)).await;
        assert_eq!(c.now_micros() - t0, 31 * 86_400 * 1_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handle_moves_its_clock_and_its_clones() {
        let (c, hand) = WallClock::adjustable();
        let copy = c.clone();
        let t0 = c.now_micros();
        hand.advance(Duration::from_secs(86_400));
        assert_eq!(c.now_micros() - t0, 86_400 * 1_000_000);
        assert_eq!(copy.now_micros(), c.now_micros());
    }
}
