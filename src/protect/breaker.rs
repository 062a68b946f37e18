//! Per-department circuit breaker.
//!
//! Closed: calls pass; it opens after `consecutive_failures` failures in a row
//! or when, with at least `min_calls` calls in the rolling window, the failure
//! ratio reaches `failure_ratio`. Open: calls are refused with
//! [`BreakerOpen`] without touching the department. After the open period it
//! is half-open: exactly one probe is let through at a time; its success
//! closes the breaker, its failure re-opens it for twice the previous period
//! (up to `max_open`).
//!
//! A call takes a [`BreakerPermit`] and reports `success()` or `failure()`.
//! A permit dropped without a report (the call's future was cancelled) frees
//! the half-open probe slot and counts as nothing. Reports are tagged with the
//! breaker's epoch, so a late report from before a transition is ignored.
//!
//! Time comes from a governor [`Clock`], so tests drive a `FakeRelativeClock`.
//! State lives under a `std::sync::Mutex` held for a few instructions, never
//! across an await.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::nanos::Nanos;

use super::config::BreakerSettings;
use super::error::BreakerOpen;

/// Buckets of the rolling window.
const BUCKETS: usize = 10;

/// `closed_epoch` value while the breaker is open or half-open.
const NOT_CLOSED: u64 = u64::MAX;

/// The observable state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState<I> {
    /// Calls pass.
    Closed,
    /// Calls are refused until `until`.
    Open {
        /// When the next probe may go.
        until: I,
    },
    /// One probe at a time may go.
    HalfOpen,
}

impl<I> BreakerState<I> {
    /// `closed`, `open` or `half-open` (for logs and metric labels).
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// How many times a breaker changed state (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerTransitions {
    /// Closed or half-open -> open.
    pub opened: u64,
    /// Open -> half-open.
    pub half_opened: u64,
    /// Half-open -> closed.
    pub closed: u64,
    /// Calls refused while open or while a probe was in flight.
    pub refused: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    tick: u64,
    ok: u32,
    failed: u32,
}

#[derive(Debug)]
struct Inner<I> {
    state: BreakerState<I>,
    probe_in_flight: bool,
    epoch: u64,
    consecutive_failures: u32,
    buckets: [Bucket; BUCKETS],
    open_for: Duration,
}

#[derive(Debug)]
struct Shared<C: Clock> {
    department: Arc<str>,
    settings: BreakerSettings,
    bucket_nanos: u64,
    clock: C,
    start: C::Instant,
    inner: Mutex<Inner<C::Instant>>,
    opened: AtomicU64,
    half_opened: AtomicU64,
    closed: AtomicU64,
    refused: AtomicU64,
    /// The epoch while closed, [`NOT_CLOSED`] otherwise: lets a closed
    /// breaker hand out permits without taking the lock.
    closed_epoch: AtomicU64,
}

/// The circuit breaker of one department. Cheap to clone (shared state).
#[derive(Debug)]
pub struct Breaker<C: Clock = DefaultClock> {
    shared: Arc<Shared<C>>,
}

impl<C: Clock> Clone for Breaker<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// Leave to make one call. Report the outcome with [`success`](Self::success)
/// or [`failure`](Self::failure); dropping it reports nothing and frees a
/// half-open probe slot.
#[derive(Debug)]
#[must_use = "report the call's outcome with success() or failure()"]
pub struct BreakerPermit<C: Clock = DefaultClock> {
    shared: Arc<Shared<C>>,
    epoch: u64,
    probe: bool,
    reported: bool,
}

type Transition<I> = Option<(BreakerState<I>, BreakerState<I>)>;

impl<C: Clock> Breaker<C> {
    /// A closed breaker for `department`.
    pub fn new(department: Arc<str>, settings: &BreakerSettings, clock: C) -> Self {
        let start = clock.now();
        let bucket_nanos = u64::try_from(settings.window.as_nanos() / BUCKETS as u128)
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            shared: Arc::new(Shared {
                department,
                settings: *settings,
                bucket_nanos,
                clock,
                start,
                inner: Mutex::new(Inner {
                    state: BreakerState::Closed,
                    probe_in_flight: false,
                    epoch: 0,
                    consecutive_failures: 0,
                    buckets: [Bucket::default(); BUCKETS],
                    open_for: settings.open,
                }),
                opened: AtomicU64::new(0),
                half_opened: AtomicU64::new(0),
                closed: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                closed_epoch: AtomicU64::new(0),
            }),
        }
    }

    /// Leave to call the department, or `BreakerOpen` (503) without calling it.
    pub fn try_acquire(&self) -> Result<BreakerPermit<C>, BreakerOpen> {
        let s = &self.shared;
        let epoch = s.closed_epoch.load(Ordering::Acquire);
        if epoch != NOT_CLOSED {
            // Fast path: closed. A transition racing with this load only
            // means the permit's report will be ignored as stale.
            return Ok(BreakerPermit {
                shared: s.clone(),
                epoch,
                probe: false,
                reported: false,
            });
        }
        let now = s.clock.now();
        let mut transition = None;
        let result = {
            let mut inner = s.lock();
            match inner.state {
                BreakerState::Closed => Ok((inner.epoch, false)),
                BreakerState::Open { until } if now < until => {
                    Err(Duration::from(until.duration_since(now)))
                }
                BreakerState::Open { .. } => {
                    transition = Some((inner.state, BreakerState::HalfOpen));
                    inner.state = BreakerState::HalfOpen;
                    inner.epoch += 1;
                    s.closed_epoch.store(NOT_CLOSED, Ordering::Release);
                    inner.probe_in_flight = true;
                    Ok((inner.epoch, true))
                }
                BreakerState::HalfOpen if inner.probe_in_flight => Err(Duration::from_secs(1)),
                BreakerState::HalfOpen => {
                    inner.probe_in_flight = true;
                    Ok((inner.epoch, true))
                }
            }
        };
        s.announce(transition);
        match result {
            Ok((epoch, probe)) => Ok(BreakerPermit {
                shared: s.clone(),
                epoch,
                probe,
                reported: false,
            }),
            Err(retry_after) => {
                s.refused.fetch_add(1, Ordering::Relaxed);
                Err(BreakerOpen::new(s.department.clone(), retry_after))
            }
        }
    }

    /// The current state. An open breaker whose period is over reports
    /// `Open` until the next call turns it half-open.
    pub fn state(&self) -> BreakerState<C::Instant> {
        self.shared.lock().state
    }

    /// Transition counters.
    pub fn transitions(&self) -> BreakerTransitions {
        let s = &self.shared;
        BreakerTransitions {
            opened: s.opened.load(Ordering::Relaxed),
            half_opened: s.half_opened.load(Ordering::Relaxed),
            closed: s.closed.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
        }
    }

    /// The department.
    pub fn department(&self) -> &str {
        &self.shared.department
    }
}

impl<C: Clock> Shared<C> {
    fn lock(&self) -> MutexGuard<'_, Inner<C::Instant>> {
        // The critical sections cannot panic half-way; a poisoned lock still
        // holds consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn announce(&self, transition: Transition<C::Instant>) {
        let Some((from, to)) = transition else { return };
        match to {
            BreakerState::Open { .. } => &self.opened,
            BreakerState::HalfOpen => &self.half_opened,
            BreakerState::Closed => &self.closed,
        }
        .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            department = %self.department,
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker transition"
        );
    }

    fn record(&self, epoch: u64, probe: bool, ok: bool) {
        let now = self.clock.now();
        let mut transition = None;
        {
            let mut inner = self.lock();
            if inner.epoch != epoch {
                // Reported after a transition: the call belongs to an old period.
                return;
            }
            if probe {
                inner.probe_in_flight = false;
                let from = inner.state;
                if ok {
                    inner.state = BreakerState::Closed;
                    inner.open_for = self.settings.open;
                    inner.consecutive_failures = 0;
                    inner.buckets = [Bucket::default(); BUCKETS];
                } else {
                    inner.open_for = inner.open_for.saturating_mul(2).min(self.settings.max_open);
                    inner.state = BreakerState::Open {
                        until: now + Nanos::from(inner.open_for),
                    };
                }
                inner.epoch += 1;
                self.closed_epoch
                    .store(if ok { inner.epoch } else { NOT_CLOSED }, Ordering::Release);
                transition = Some((from, inner.state));
            } else if matches!(inner.state, BreakerState::Closed) {
                let tick = now.duration_since(self.start).as_u64() / self.bucket_nanos;
                let bucket = &mut inner.buckets[(tick % BUCKETS as u64) as usize];
                if bucket.tick != tick {
                    *bucket = Bucket {
                        tick,
                        ok: 0,
                        failed: 0,
                    };
                }
                if ok {
                    bucket.ok += 1;
                    inner.consecutive_failures = 0;
                } else {
                    bucket.failed += 1;
                    inner.consecutive_failures += 1;
                    if self.should_open(&inner, tick) {
                        inner.open_for = self.settings.open;
                        inner.state = BreakerState::Open {
                            until: now + Nanos::from(self.settings.open),
                        };
                        inner.epoch += 1;
                        self.closed_epoch.store(NOT_CLOSED, Ordering::Release);
                        inner.consecutive_failures = 0;
                        inner.buckets = [Bucket::default(); BUCKETS];
                        transition = Some((BreakerState::Closed, inner.state));
                    }
                }
            }
        }
        self.announce(transition);
    }

    fn should_open(&self, inner: &Inner<C::Instant>, tick: u64) -> bool {
        if inner.consecutive_failures >= self.settings.consecutive_failures.get() {
            return true;
        }
        let (mut ok, mut failed) = (0u64, 0u64);
        for b in &inner.buckets {
            if tick.saturating_sub(b.tick) < BUCKETS as u64 {
                ok += u64::from(b.ok);
                failed += u64::from(b.failed);
            }
        }
        let total = ok + failed;
        total >= u64::from(self.settings.min_calls.get())
            && failed as f64 >= self.settings.failure_ratio * total as f64
    }
}

impl<C: Clock> BreakerPermit<C> {
    /// The call succeeded.
    pub fn success(mut self) {
        self.reported = true;
        self.shared.record(self.epoch, self.probe, true);
    }

    /// The call failed (connect error, timeout, 5xx from the department).
    pub fn failure(mut self) {
        self.reported = true;
        self.shared.record(self.epoch, self.probe, false);
    }

    /// True when this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl<C: Clock> Drop for BreakerPermit<C> {
    fn drop(&mut self) {
        if self.reported || !self.probe {
            return;
        }
        // Cancelled probe: free the slot so the next caller can probe.
        let mut inner = self.shared.lock();
        if inner.epoch == self.epoch {
            inner.probe_in_flight = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::AtomicU32;
    use std::task::{Context, Waker};

    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::protect::config::nz;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: nz(20),
            failure_ratio: 0.5,
            window: Duration::from_secs(30),
            min_calls: nz(20),
            open: Duration::from_secs(10),
            max_open: Duration::from_secs(60),
        }
    }

    fn breaker(clock: &FakeRelativeClock) -> Breaker<FakeRelativeClock> {
        Breaker::new(Arc::from("health-commission"), &settings(), clock.clone())
    }

    /// Runs `call` through the breaker, reporting its result; `None` when the
    /// breaker refused (and `call` was not run).
    fn run(b: &Breaker<FakeRelativeClock>, call: impl FnOnce() -> bool) -> Option<bool> {
        let permit = b.try_acquire().ok()?;
        let ok = call();
        if ok {
            permit.success()
        } else {
            permit.failure()
        }
        Some(ok)
    }

    #[test]
    fn thirty_failures_open_it_and_open_refuses_without_calling() {
        let clock = FakeRelativeClock::default();
        let b = breaker(&clock);
        let invoked = AtomicU32::new(0);
        let failing = || {
            invoked.fetch_add(1, Ordering::Relaxed);
            false
        };
        let mut refused = 0;
        for _ in 0..30 {
            if run(&b, failing).is_none() {
                refused += 1;
            }
        }
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert_eq!(invoked.load(Ordering::Relaxed), 20, "opened at 20 in a row");
        assert_eq!(refused, 10);
        let err = b.try_acquire().unwrap_err();
        assert_eq!(err.retry_after(), Duration::from_secs(10));
        assert_eq!(err.department(), "health-commission");
        clock.advance(Duration::from_millis(9_999));
        assert!(run(&b, failing).is_none());
        assert_eq!(
            invoked.load(Ordering::Relaxed),
            20,
            "never called while open"
        );
        assert_eq!(b.transitions().opened, 1);
        assert_eq!(b.transitions().refused, 12);
    }

    #[test]
    fn one_probe_after_open_period_success_closes() {
        let clock = FakeRelativeClock::default();
        let b = breaker(&clock);
        for _ in 0..20 {
            run(&b, || false);
        }
        clock.advance(Duration::from_secs(10));
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // Concurrent callers during the probe are refused.
        for _ in 0..5 {
            assert!(b.try_acquire().is_err());
        }
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        let t = b.transitions();
        assert_eq!((t.opened, t.half_opened, t.closed), (1, 1, 1));
        let p = b.try_acquire().unwrap();
        assert!(!p.is_probe());
        p.success();
    }

    #[test]
    fn failed_probe_reopens_with_backoff() {
        let clock = FakeRelativeClock::default();
        let b = breaker(&clock);
        for _ in 0..20 {
            run(&b, || false);
        }
        clock.advance(Duration::from_secs(10));
        assert_eq!(run(&b, || false), Some(false), "the probe ran and failed");
        let err = b.try_acquire().unwrap_err();
        assert_eq!(err.retry_after(), Duration::from_secs(20), "doubled");
        clock.advance(Duration::from_secs(20));
        assert_eq!(run(&b, || false), Some(false));
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after(),
            Duration::from_secs(40)
        );
        clock.advance(Duration::from_secs(40));
        assert_eq!(run(&b, || false), Some(false));
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after(),
            Duration::from_secs(60),
            "capped at max_open"
        );
        clock.advance(Duration::from_secs(60));
        assert_eq!(run(&b, || true), Some(true));
        assert_eq!(b.state(), BreakerState::Closed);
        // Back to the base period after closing.
        for _ in 0..20 {
            run(&b, || false);
        }
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after(),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn failure_ratio_over_window_opens_with_min_calls() {
        let clock = FakeRelativeClock::default();
        let b = breaker(&clock);
        // Alternating: never 20 in a row, ratio 0.5 reached at 20 calls.
        for i in 0..19 {
            run(&b, || i % 2 == 0);
            clock.advance(Duration::from_millis(100));
        }
        assert_eq!(b.state(), BreakerState::Closed, "19 calls < min_calls");
        run(&b, || false);
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let clock = FakeRelativeClock::default();
        let b = breaker(&clock);
        for _ in 0..15 {
            run(&b, || false);
        }
        run(&b, || true);
        clock.advance(Duration::from_secs(31));
        // The 15 failures are out of the window: 4 successes + 16 failures
        // would be 0.8, but only the new calls count.
        for _ in 0..10 {
            run(&b, || true);
        }
        for _ in 0..9 {
            run(&b, || false);
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "9/19 calls, below min_calls"
        );
        run(&b, || true);
        assert_eq!(b.state(), BreakerState::Closed, "9/20 failed < 0.5");
    }

    #[test]
    fn concurrent_callers_in_half_open_get_exactly_one_probe() {
        let clock = FakeRelativeClock::default();
        let b = breaker(&clock);
        for _ in 0..20 {
            run(&b, || false);
        }
        clock.advance(Duration::from_secs(10));
        let barrier = std::sync::Barrier::new(64);
        let permits: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..64)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        b.try_acquire().ok()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let granted: Vec<_> = permits.into_iter().flatten().collect();
        assert_eq!(granted.len(), 1, "exactly one probe");
        assert!(granted[0].is_probe());
        assert_eq!(b.transitions().half_opened, 1);
    }

    #[test]
    fn dropped_probe_frees_the_half_open_slot() {
        let clock = FakeRelativeClock::default();
        let b = breaker(&clock);
        for _ in 0..20 {
            run(&b, || false);
        }
        clock.advance(Duration::from_secs(10));
        {
            // A call future holding the probe is cancelled mid-flight.
            let call = async {
                let permit = b.try_acquire()?;
                std::future::pending::<()>().await;
                permit.success();
                Ok::<(), BreakerOpen>(())
            };
            let mut call = pin!(call);
            assert!(
                call.as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                    .is_pending()
            );
            assert!(b.try_acquire().is_err(), "probe in flight");
        }
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.try_acquire().expect("slot freed by the cancelled probe");
        assert!(probe.is_probe());
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn late_reports_from_before_a_transition_are_ignored() {
        let clock = FakeRelativeClock::default();
        let b = breaker(&clock);
        let slow = b.try_acquire().unwrap();
        for _ in 0..20 {
            run(&b, || false);
        }
        clock.advance(Duration::from_secs(10));
        let probe = b.try_acquire().unwrap();
        // The slow call from the closed period succeeds now: not a probe result.
        slow.success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.failure();
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }

    #[test]
    fn one_department_open_does_not_affect_another() {
        let clock = FakeRelativeClock::default();
        let a = breaker(&clock);
        let other = Breaker::new(Arc::from("fire-rescue"), &settings(), clock.clone());
        for _ in 0..30 {
            run(&a, || false);
        }
        assert!(a.try_acquire().is_err());
        assert_eq!(other.state(), BreakerState::Closed);
        assert_eq!(run(&other, || true), Some(true));
    }
}
