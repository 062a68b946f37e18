//! Wall-clock time derived from tokio's clock, so that tests which pause and
//! advance tokio time (`tokio::time::pause`, `advance`) move dates too: a
//! case accepted "today" is overdue after the test advances 31 days.
//!
//! The clock reads the system time once, when it is made, and adds tokio's
//! monotonic elapsed time from then on; a running gateway's dates therefore
//! never jump backwards when the system clock is adjusted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Wall-clock time as the system time at creation plus tokio time elapsed.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    base: SystemTime,
    at: Instant,
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
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        self.base + self.at.elapsed()
    }

    /// The current time in microseconds since the Unix epoch.
    pub fn now_micros(&self) -> i64 {
        micros(self.now())
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
}
