//! Errors of the protection layer. No status codes here: src/error.rs maps
//! each variant; the intended status is written on each variant.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::headers::{self, LimiterKind, RateLimitPolicy};

/// What a rate limiter said when it refused: how long until a request would
/// pass, and the policy that refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    wait: Duration,
    policy: RateLimitPolicy,
}

impl Refusal {
    pub(crate) fn new(wait: Duration, policy: RateLimitPolicy) -> Self {
        Self { wait, policy }
    }
}

/// A request refused by a rate limiter. Every variant is **429 Too Many
/// Requests** with `Retry-After`, `RateLimit-Policy` and `RateLimit`
/// (see [`RateLimited::apply_headers`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimited {
    /// 429: the client's own quota is used up.
    #[error("client quota exceeded")]
    PerClient(Refusal),
    /// 429: the client's quota towards this department is used up.
    #[error("client quota towards the department exceeded")]
    PerClientDepartment(Refusal),
    /// 429: the department's quota (all clients) is used up.
    #[error("department quota exceeded")]
    PerDepartment(Refusal),
    /// 429: too many failed authentications from this address; refused
    /// before any signature check.
    #[error("too many failed authentications from this address")]
    PerIpAuthFailures(Refusal),
}

impl RateLimited {
    pub(crate) fn new(kind: LimiterKind, refusal: Refusal) -> Self {
        match kind {
            LimiterKind::PerClient => Self::PerClient(refusal),
            LimiterKind::PerClientDepartment => Self::PerClientDepartment(refusal),
            LimiterKind::PerDepartment => Self::PerDepartment(refusal),
            LimiterKind::PerIpAuthFailures => Self::PerIpAuthFailures(refusal),
        }
    }

    fn refusal(&self) -> &Refusal {
        match self {
            Self::PerClient(r)
            | Self::PerClientDepartment(r)
            | Self::PerDepartment(r)
            | Self::PerIpAuthFailures(r) => r,
        }
    }

    /// Which limiter refused.
    pub fn limiter(&self) -> LimiterKind {
        match self {
            Self::PerClient(_) => LimiterKind::PerClient,
            Self::PerClientDepartment(_) => LimiterKind::PerClientDepartment,
            Self::PerDepartment(_) => LimiterKind::PerDepartment,
            Self::PerIpAuthFailures(_) => LimiterKind::PerIpAuthFailures,
        }
    }

    /// The exact wait until a request would pass (as measured when refused).
    pub fn wait(&self) -> Duration {
        self.refusal().wait
    }

    /// The policy that refused.
    pub fn policy(&self) -> &RateLimitPolicy {
        &self.refusal().policy
    }

    /// `Retry-After` in whole seconds: the wait rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        headers::retry_after_secs(self.wait())
    }

    /// Sets `Retry-After`, `RateLimit-Policy` and `RateLimit` (`r=0`, `t` =
    /// `Retry-After`) on a 429 reply.
    pub fn apply_headers(&self, map: &mut HeaderMap) {
        headers::apply_refusal(self.policy(), self.wait(), map);
    }
}

/// Why a bulkhead refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkheadFullReason {
    /// Every in-flight slot is taken and the wait queue is full.
    QueueFull,
    /// The caller waited `queue_timeout` without getting a slot.
    QueueTimeout,
}

/// **503 Service Unavailable** with `Retry-After`: the department already has
/// as many calls in flight and waiting as it is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("department {department} is at its concurrency limit ({reason:?})")]
pub struct BulkheadFull {
    department: Arc<str>,
    reason: BulkheadFullReason,
    retry_after: Duration,
}

impl BulkheadFull {
    pub(crate) fn new(
        department: Arc<str>,
        reason: BulkheadFullReason,
        retry_after: Duration,
    ) -> Self {
        Self {
            department,
            reason,
            retry_after,
        }
    }

    /// The department.
    pub fn department(&self) -> &str {
        &self.department
    }

    /// Queue full or queue timeout.
    pub fn reason(&self) -> BulkheadFullReason {
        self.reason
    }

    /// Suggested wait before trying again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        headers::retry_after_secs(self.retry_after)
    }

    /// Sets `Retry-After`.
    pub fn apply_headers(&self, map: &mut HeaderMap) {
        headers::apply_retry_after(self.retry_after, map);
    }
}

/// **503 Service Unavailable** with `Retry-After`: the department's circuit
/// breaker is open (or half-open with its one probe already in flight); the
/// department was not called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker of department {department} is open")]
pub struct BreakerOpen {
    department: Arc<str>,
    retry_after: Duration,
}

impl BreakerOpen {
    pub(crate) fn new(department: Arc<str>, retry_after: Duration) -> Self {
        Self {
            department,
            retry_after,
        }
    }

    /// The department.
    pub fn department(&self) -> &str {
        &self.department
    }

    /// Time until the breaker lets a probe through.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        headers::retry_after_secs(self.retry_after)
    }

    /// Sets `Retry-After`.
    pub fn apply_headers(&self, map: &mut HeaderMap) {
        headers::apply_retry_after(self.retry_after, map);
    }
}

/// A department call refused by the protection layer (the department was
/// not called). Rate limits are their own error, [`RateLimited`]: the one
/// way to a 429.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtectError {
    /// 503 (see [`BulkheadFull`]).
    #[error(transparent)]
    BulkheadFull(#[from] BulkheadFull),
    /// 503 (see [`BreakerOpen`]).
    #[error(transparent)]
    BreakerOpen(#[from] BreakerOpen),
}

impl ProtectError {
    /// Sets the headers that go with the refusal.
    pub fn apply_headers(&self, map: &mut HeaderMap) {
        match self {
            ProtectError::BulkheadFull(e) => e.apply_headers(map),
            ProtectError::BreakerOpen(e) => e.apply_headers(map),
        }
    }
}
