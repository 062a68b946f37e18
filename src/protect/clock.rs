//! The clock of the running gateway's limiters and breakers: tokio's.
//!
//! In production it reads the monotonic clock like any other; under
//! `tokio::time::pause()` (tests with `start_paused = true`) it follows the
//! paused clock, so an open breaker's cool-down or a limiter's refill passes
//! when the test advances time, without real waiting.

use governor::clock::{Clock, ReasonablyRealtime};

/// A governor [`Clock`] reading `tokio::time::Instant`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

impl ReasonablyRealtime for TokioClock {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn follows_the_paused_clock() {
        let c = TokioClock;
        let t0 = c.now();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(c.now().duration_since(t0), Duration::from_secs(30));
    }
}
