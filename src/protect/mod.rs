//! Protecting fragile departmental systems: rate limits (per client, per
//! client x department, per department, failed authentications per address),
//! and per department a bulkhead, a circuit breaker, timeouts and a retry
//! policy.
//!
//! [`Protection`] is the facade the pipeline holds (one per loaded config,
//! swapped with the rest of it). Where each check sits in the request flow:
//!
//! 1. before verifying a token that is not in the verified-token cache:
//!    [`Protection::ip_blocked`] (no crypto for a blocked address); after a
//!    failed verification: [`Protection::record_auth_failure`];
//! 2. after authorisation: [`Protection::check_client`] (429 with
//!    [`RateLimited`]; on success a [`RateLimitState`] for the `RateLimit`
//!    headers of the reply);
//! 3. around the department call, from [`Protection::department`]: bulkhead
//!    permit, then per attempt a permit of the breaker of the call's
//!    [`Traffic`] (an open breaker refuses without calling), the attempt under
//!    [`Timeouts`] and [`RetryPolicy`]; the outcome is reported to the breaker
//!    permit only after the adapter has interpreted the reply: only a
//!    department failure counts (`GatewayError::department_failure`), never a
//!    not-found, a 4xx or the caller's bad input.
//!
//! A background task calls [`Protection::maintain`] every few seconds so
//! keyed limiters forget idle keys.

mod breaker;
mod bulkhead;
mod clock;
mod config;
mod error;
mod headers;
mod ratelimit;
mod retry;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use governor::clock::Clock;

pub use breaker::{Breaker, BreakerPermit, BreakerState, BreakerTransitions};
pub use bulkhead::{Bulkhead, BulkheadPermit};
pub use clock::TokioClock;
pub use config::{
    BreakerSettings, BulkheadSettings, DepartmentProtection, MAX_ATTEMPTS_LIMIT, MAX_OPEN_SECS,
    Rate, RateLimitSettings, RawBackoff, RawBreaker, RawDepartmentProtection, RawRate,
    RawRateLimits, RawRetryBudget, RetrySettings, Timeouts,
};
pub use error::{
    BreakerOpen, BulkheadFull, BulkheadFullReason, ProtectError, RateLimited, Refusal,
};
pub use headers::{
    LimitEntry, LimiterKind, RATELIMIT, RATELIMIT_POLICY, RateLimitPolicy, RateLimitState,
    retry_after_secs,
};
pub use ratelimit::{AuthFailureLimiter, DirectLimiter, KeyedLimiter, ip_key};
pub use retry::{FailureKind, RandomSource, RetryBudget, RetryPolicy, ThreadRandom, is_idempotent};

/// The kind of traffic a department call carries. Each kind has its own
/// circuit breaker, so failures of arbitrary pass-through paths cannot cut
/// off dataset reads (or the other way round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Dataset reads and scenario parts, through the department's adapter.
    Dataset,
    /// Pass-through calls under `/v1/proxy/{department}/...`.
    Proxy,
}

impl Traffic {
    /// `dataset` or `proxy` (for `/readyz` and logs).
    pub const fn as_str(self) -> &'static str {
        match self {
            Traffic::Dataset => "dataset",
            Traffic::Proxy => "proxy",
        }
    }
}

/// Everything that protects one department.
#[derive(Debug)]
pub struct DepartmentGuard<C: Clock = TokioClock> {
    name: Arc<str>,
    per_department: DirectLimiter<C>,
    per_client: KeyedLimiter<Arc<str>, C>,
    bulkhead: Bulkhead,
    breaker: Breaker<C>,
    proxy_breaker: Breaker<C>,
    timeouts: Timeouts,
    retry: RetryPolicy,
}

impl<C: Clock + Clone> DepartmentGuard<C> {
    fn new(
        name: Arc<str>,
        settings: &DepartmentProtection,
        clock: &C,
        random: Arc<dyn RandomSource>,
    ) -> Self {
        Self {
            per_department: DirectLimiter::new(
                LimiterKind::PerDepartment,
                &settings.rate,
                clock.clone(),
            ),
            per_client: KeyedLimiter::new(
                LimiterKind::PerClientDepartment,
                &settings.per_client,
                clock.clone(),
            ),
            bulkhead: Bulkhead::new(name.clone(), &settings.bulkhead),
            breaker: Breaker::new(name.clone(), &settings.breaker, clock.clone()),
            proxy_breaker: Breaker::new(name.clone(), &settings.breaker, clock.clone()),
            timeouts: settings.timeouts,
            retry: RetryPolicy::with_random(&settings.retry, &settings.timeouts, random),
            name,
        }
    }

    /// The department's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// In-flight cap and wait queue.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// Circuit breaker of dataset traffic.
    pub fn breaker(&self) -> &Breaker<C> {
        &self.breaker
    }

    /// Circuit breaker of one kind of traffic.
    pub fn breaker_for(&self, traffic: Traffic) -> &Breaker<C> {
        match traffic {
            Traffic::Dataset => &self.breaker,
            Traffic::Proxy => &self.proxy_breaker,
        }
    }

    /// Both breakers with their traffic kind.
    pub fn breakers(&self) -> [(Traffic, &Breaker<C>); 2] {
        [
            (Traffic::Dataset, &self.breaker),
            (Traffic::Proxy, &self.proxy_breaker),
        ]
    }

    /// The worse of the two breakers' states: `open`, else `half-open`, else
    /// `closed` (the department's summary in `/readyz` and metrics).
    pub fn breaker_summary(&self) -> &'static str {
        let states = self.breakers().map(|(_, b)| b.state().as_str());
        ["open", "half-open"]
            .into_iter()
            .find(|s| states.contains(s))
            .unwrap_or("closed")
    }

    /// Transitions of both breakers together.
    pub fn breaker_transitions(&self) -> BreakerTransitions {
        let (a, b) = (self.breaker.transitions(), self.proxy_breaker.transitions());
        BreakerTransitions {
            opened: a.opened + b.opened,
            half_opened: a.half_opened + b.half_opened,
            closed: a.closed + b.closed,
            refused: a.refused + b.refused,
        }
    }

    /// Connect, attempt and total timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Retry decisions.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Client keys tracked by the client x department limiter.
    pub fn tracked_clients(&self) -> usize {
        self.per_client.len()
    }
}

/// The facade: all limiters and department guards of one loaded config.
#[derive(Debug)]
pub struct Protection<C: Clock = TokioClock> {
    default_client: KeyedLimiter<Arc<str>, C>,
    clients: HashMap<Arc<str>, DirectLimiter<C>>,
    auth_failures: AuthFailureLimiter<C>,
    departments: HashMap<Arc<str>, DepartmentGuard<C>>,
}

impl Protection<TokioClock> {
    /// Builds the limiters and guards with tokio's clock (the real one, or
    /// the paused one in tests) and real randomness.
    pub fn new<'a>(
        limits: &RateLimitSettings,
        departments: impl IntoIterator<Item = (&'a str, &'a DepartmentProtection)>,
    ) -> Self {
        Self::with_clock(limits, departments, TokioClock, Arc::new(ThreadRandom))
    }
}

impl<C: Clock + Clone> Protection<C> {
    /// Builds the limiters and guards with the given clock and randomness
    /// (tests pass a `FakeRelativeClock`).
    pub fn with_clock<'a>(
        limits: &RateLimitSettings,
        departments: impl IntoIterator<Item = (&'a str, &'a DepartmentProtection)>,
        clock: C,
        random: Arc<dyn RandomSource>,
    ) -> Self {
        Self {
            default_client: KeyedLimiter::new(
                LimiterKind::PerClient,
                &limits.default_client,
                clock.clone(),
            ),
            clients: limits
                .clients
                .iter()
                .map(|(name, rate)| {
                    (
                        name.clone(),
                        DirectLimiter::new(LimiterKind::PerClient, rate, clock.clone()),
                    )
                })
                .collect(),
            auth_failures: AuthFailureLimiter::new(&limits.failed_auth_per_ip, clock.clone()),
            departments: departments
                .into_iter()
                .map(|(name, settings)| {
                    let name: Arc<str> = Arc::from(name);
                    let guard =
                        DepartmentGuard::new(name.clone(), settings, &clock, random.clone());
                    (name, guard)
                })
                .collect(),
        }
    }
}

impl<C: Clock> Protection<C> {
    /// Charges one request of `client` (towards `department`, if any) to the
    /// per-client, per-client x department and per-department limiters, in
    /// that order, stopping at the first refusal (so a client over its own
    /// quota costs the department's quotas nothing). A department not built
    /// into this `Protection` has no department limits (the router only
    /// produces configured departments).
    pub fn check_client(
        &self,
        client: &str,
        department: Option<&str>,
    ) -> Result<RateLimitState, RateLimited> {
        let mut cached: Option<Arc<str>> = None;
        let mut key = || cached.get_or_insert_with(|| Arc::from(client)).clone();
        self.check(client, &mut key, department)
    }

    fn check(
        &self,
        client: &str,
        key: &mut dyn FnMut() -> Arc<str>,
        department: Option<&str>,
    ) -> Result<RateLimitState, RateLimited> {
        let per_client = match self.clients.get(client) {
            Some(own) => own.check()?,
            None => self.default_client.check(&key())?,
        };
        let mut state = RateLimitState {
            per_client,
            per_client_department: None,
            per_department: None,
        };
        if let Some(guard) = department.and_then(|d| self.departments.get(d)) {
            state.per_client_department = Some(guard.per_client.check(&key())?);
            state.per_department = Some(guard.per_department.check()?);
        }
        Ok(state)
    }

    /// `Err` (429) while `ip` is blocked for failed authentications; ask
    /// before spending crypto on a token not in the verified-token cache.
    pub fn ip_blocked(&self, ip: IpAddr) -> Result<(), RateLimited> {
        self.auth_failures.ip_blocked(ip)
    }

    /// Records a failed authentication from `ip`; `Err` when the address is
    /// now blocked (the failing request itself is still answered 401).
    pub fn record_auth_failure(&self, ip: IpAddr) -> Result<(), RateLimited> {
        self.auth_failures.record_failure(ip)
    }

    /// The guard of a configured department.
    pub fn department(&self, name: &str) -> Option<&DepartmentGuard<C>> {
        self.departments.get(name)
    }

    /// All department guards (for metrics).
    pub fn departments(&self) -> impl Iterator<Item = &DepartmentGuard<C>> {
        self.departments.values()
    }

    /// Forgets idle keys of every keyed limiter and expired address blocks;
    /// call every few seconds from a background task.
    pub fn maintain(&self) {
        self.default_client.maintain();
        self.auth_failures.maintain();
        for guard in self.departments.values() {
            guard.per_client.maintain();
        }
    }

    /// Keys held by all keyed limiters (for metrics and tests).
    pub fn tracked_keys(&self) -> usize {
        self.default_client.len()
            + self.auth_failures.len()
            + self
                .departments
                .values()
                .map(|g| g.per_client.len())
                .sum::<usize>()
    }
}
