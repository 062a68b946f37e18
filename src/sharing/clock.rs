//! The wall clock that approvals and the transparency view read; tests
//! inject one to move days forward without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// A source of wall-clock time. The default is the system clock.
#[derive(Clone, Default)]
pub struct WallClock {
    /// Seconds added to the system time (tests move it forward).
    skew: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.skew {
            None => f.write_str("WallClock(system)"),
            Some(s) => write!(f, "WallClock(system + {} s)", s.load(Ordering::Relaxed)),
        }
    }
}

impl WallClock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that runs with the system clock plus an offset the returned
    /// handle moves forward (tests).
    pub fn adjustable() -> (Self, ClockHandle) {
        let skew = Arc::new(AtomicU64::new(0));
        (
            Self {
                skew: Some(skew.clone()),
            },
            ClockHandle(skew),
        )
    }

    /// Now.
    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        match &self.skew {
            None => now,
            Some(s) => now + Duration::from_secs(s.load(Ordering::Relaxed)),
        }
    }
}

/// Moves an [`WallClock::adjustable`] clock forward.
#[derive(Debug, Clone)]
pub struct ClockHandle(Arc<AtomicU64>);

impl ClockHandle {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::Relaxed);
    }
}
