//! Retry policy of one department: which failures are retried, how often,
//! and how long to back off. The lead runs the loop:
//!
//! ```text
//! policy.on_request();                       // once per client request
//! for attempt in 1.. {
//!     let Some(timeout) = timeouts.next_attempt(elapsed) else { break 504 };
//!     match call(timeout).await {
//!         Ok(r) => break r,
//!         Err(kind) => match policy.should_retry(&method, attempt, kind, elapsed) {
//!             Some(backoff) => sleep(backoff).await,
//!             None => break error,
//!         },
//!     }
//! }
//! ```
//!
//! Retries happen only for idempotent methods (GET, HEAD, OPTIONS, PUT,
//! DELETE), only for failures that may be transient, at most
//! `max_attempts - 1` times per request, only while the retry budget allows
//! (token bucket: each request earns `ratio` of a retry, each retry spends
//! one, at most `reserve` saved up; so retries stay below `ratio` of recent
//! traffic and cannot multiply load on a failing department), and only when
//! the backoff still fits in the total timeout. Backoff is "full jitter":
//! uniform in `[0, min(max, base * 2^(attempt-1))]`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http::Method;
use rand::Rng as _;

use super::config::{RetrySettings, Timeouts};

/// Milli-retries per retry in the budget's integer arithmetic.
const SCALE: i64 = 1000;

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be established (refused, reset, TLS, connect
    /// timeout): the department did not see the request.
    Connect,
    /// The attempt timed out after the request was sent.
    AttemptTimeout,
    /// The department answered 502, 503 or 504.
    Unavailable,
    /// Anything else (4xx, a malformed reply, a mapping error): retrying
    /// would give the same answer.
    Other,
}

impl FailureKind {
    /// True when another attempt may get a different answer.
    pub fn is_transient(self) -> bool {
        !matches!(self, FailureKind::Other)
    }
}

/// True for the methods RFC 9110 defines as idempotent (TRACE excepted: never
/// proxied).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// A source of randomness for the jitter; injectable for tests.
pub trait RandomSource: Send + Sync {
    /// A uniformly distributed `u64`.
    fn next_u64(&self) -> u64;
}

/// The default source: the thread-local `rand` generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRandom;

impl RandomSource for ThreadRandom {
    fn next_u64(&self) -> u64 {
        rand::rng().next_u64()
    }
}

/// Token-bucket retry budget, lock-free.
#[derive(Debug)]
pub struct RetryBudget {
    /// Milli-retries available.
    balance: AtomicI64,
    deposit: i64,
    cap: i64,
}

impl RetryBudget {
    /// A budget earning `ratio` retries per request, saving up at most
    /// `reserve` (and starting with them).
    pub fn new(ratio: f64, reserve: u32) -> Self {
        let cap = i64::from(reserve) * SCALE;
        Self {
            balance: AtomicI64::new(cap),
            deposit: (ratio.clamp(0.0, 1.0) * SCALE as f64).round() as i64,
            cap: cap.max(SCALE),
        }
    }

    /// Earns the share of one request.
    pub fn deposit(&self) {
        if self.deposit == 0 {
            return;
        }
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b < self.cap).then(|| (b + self.deposit).min(self.cap))
            });
    }

    /// Spends one retry; false when the budget is empty.
    pub fn try_withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b >= SCALE).then_some(b - SCALE)
            })
            .is_ok()
    }

    /// Whole retries available now (for metrics).
    pub fn available(&self) -> u64 {
        u64::try_from(self.balance.load(Ordering::Acquire) / SCALE).unwrap_or(0)
    }
}

/// Retry decisions for one department.
pub struct RetryPolicy {
    settings: RetrySettings,
    total: Duration,
    budget: RetryBudget,
    random: Arc<dyn RandomSource>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("settings", &self.settings)
            .field("total", &self.total)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl RetryPolicy {
    /// A policy with thread-local randomness.
    pub fn new(settings: &RetrySettings, timeouts: &Timeouts) -> Self {
        Self::with_random(settings, timeouts, Arc::new(ThreadRandom))
    }

    /// A policy with the given randomness (tests).
    pub fn with_random(
        settings: &RetrySettings,
        timeouts: &Timeouts,
        random: Arc<dyn RandomSource>,
    ) -> Self {
        Self {
            settings: *settings,
            total: timeouts.total,
            budget: RetryBudget::new(settings.budget_ratio, settings.budget_reserve),
            random,
        }
    }

    /// Call once per client request that reaches the department: earns
    /// retry budget.
    pub fn on_request(&self) {
        self.budget.deposit();
    }

    /// After attempt number `attempt` (1-based) failed with `failure`, with
    /// `elapsed` spent since the call started: `Some(backoff)` to retry after
    /// sleeping `backoff`, `None` to give up.
    pub fn should_retry(
        &self,
        method: &Method,
        attempt: u32,
        failure: FailureKind,
        elapsed: Duration,
    ) -> Option<Duration> {
        if !is_idempotent(method)
            || !failure.is_transient()
            || attempt == 0
            || attempt >= self.settings.max_attempts
        {
            return None;
        }
        let backoff = self.backoff(attempt);
        if elapsed.saturating_add(backoff) >= self.total {
            return None;
        }
        self.budget.try_withdraw().then_some(backoff)
    }

    /// Full-jitter backoff after attempt `attempt`: uniform in
    /// `[0, min(max, base * 2^(attempt-1))]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let ceiling = self
            .settings
            .backoff_base
            .saturating_mul(1u32 << exp.min(31))
            .min(self.settings.backoff_max);
        let ceiling_ns = ceiling.as_nanos();
        let r = u128::from(self.random.next_u64());
        // (r / 2^64) * (ceiling + 1ns), so the ceiling itself is reachable.
        let ns = (r * (ceiling_ns + 1)) >> 64;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// The retry budget (for metrics).
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// Attempts at most, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.settings.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);
    impl RandomSource for Fixed {
        fn next_u64(&self) -> u64 {
            self.0
        }
    }

    fn policy(max_attempts: u32, random: u64) -> RetryPolicy {
        RetryPolicy::with_random(
            &RetrySettings {
                max_attempts,
                ..RetrySettings::default()
            },
            &Timeouts::default(),
            Arc::new(Fixed(random)),
        )
    }

    #[test]
    fn only_idempotent_methods_and_transient_failures_are_retried() {
        let p = policy(2, 0);
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(
                p.should_retry(&m, 1, FailureKind::Connect, Duration::ZERO)
                    .is_some(),
                "{m}"
            );
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert_eq!(
                p.should_retry(&m, 1, FailureKind::Connect, Duration::ZERO),
                None,
                "{m}"
            );
        }
        assert_eq!(
            p.should_retry(&Method::GET, 1, FailureKind::Other, Duration::ZERO),
            None
        );
        assert!(
            p.should_retry(&Method::GET, 1, FailureKind::Unavailable, Duration::ZERO)
                .is_some()
        );
        assert!(
            p.should_retry(&Method::GET, 1, FailureKind::AttemptTimeout, Duration::ZERO)
                .is_some()
        );
    }

    #[test]
    fn max_attempts_counts_the_first_try() {
        let p = policy(2, 0);
        assert!(
            p.should_retry(&Method::GET, 1, FailureKind::Connect, Duration::ZERO)
                .is_some()
        );
        assert_eq!(
            p.should_retry(&Method::GET, 2, FailureKind::Connect, Duration::ZERO),
            None
        );
        let never = policy(1, 0);
        assert_eq!(
            never.should_retry(&Method::GET, 1, FailureKind::Connect, Duration::ZERO),
            None
        );
    }

    #[test]
    fn budget_limits_retries_to_a_fifth_of_requests() {
        let p = policy(2, 0);
        // The reserve (10) goes first.
        let mut granted = 0;
        while p
            .should_retry(&Method::GET, 1, FailureKind::Unavailable, Duration::ZERO)
            .is_some()
        {
            granted += 1;
        }
        assert_eq!(granted, 10);
        // Then 1000 requests earn 200 retries, no more.
        let mut granted = 0;
        for _ in 0..1000 {
            p.on_request();
            if p.should_retry(&Method::GET, 1, FailureKind::Unavailable, Duration::ZERO)
                .is_some()
            {
                granted += 1;
            }
        }
        assert_eq!(granted, 200);
        // Savings are capped at the reserve.
        for _ in 0..10_000 {
            p.on_request();
        }
        assert_eq!(p.budget().available(), 10);
    }

    #[test]
    fn backoff_is_full_jitter_capped_exponential() {
        // Highest random value: the ceiling itself.
        let hi = policy(5, u64::MAX);
        assert_eq!(hi.backoff(1), Duration::from_millis(50));
        assert_eq!(hi.backoff(2), Duration::from_millis(100));
        assert_eq!(hi.backoff(3), Duration::from_millis(200));
        assert_eq!(hi.backoff(10), Duration::from_millis(1000), "capped");
        assert_eq!(hi.backoff(u32::MAX), Duration::from_millis(1000));
        // Lowest: no wait. Middle: about half the ceiling.
        assert_eq!(policy(5, 0).backoff(3), Duration::ZERO);
        let mid = policy(5, u64::MAX / 2).backoff(3);
        assert!(
            mid > Duration::from_millis(99) && mid < Duration::from_millis(101),
            "{mid:?}"
        );
        // The real source stays within bounds.
        let real = RetryPolicy::new(&RetrySettings::default(), &Timeouts::default());
        for a in 1..5 {
            assert!(real.backoff(a) <= Duration::from_millis(50 << (a - 1)));
        }
    }

    #[test]
    fn no_retry_when_backoff_would_overrun_the_total_timeout() {
        let p = policy(2, u64::MAX); // backoff 50 ms
        let total = Timeouts::default().total;
        assert_eq!(
            p.should_retry(
                &Method::GET,
                1,
                FailureKind::AttemptTimeout,
                total - Duration::from_millis(10)
            ),
            None
        );
        assert_eq!(
            p.should_retry(
                &Method::GET,
                1,
                FailureKind::AttemptTimeout,
                total - Duration::from_millis(60)
            ),
            Some(Duration::from_millis(50))
        );
    }

    #[test]
    fn next_attempt_timeout_is_capped_by_the_total() {
        let t = Timeouts {
            connect: Duration::from_secs(1),
            attempt: Duration::from_secs(5),
            total: Duration::from_secs(8),
        };
        assert_eq!(t.next_attempt(Duration::ZERO), Some(Duration::from_secs(5)));
        assert_eq!(
            t.next_attempt(Duration::from_secs(5)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(t.next_attempt(Duration::from_secs(8)), None);
        assert_eq!(t.next_attempt(Duration::from_secs(9)), None);
    }
}
