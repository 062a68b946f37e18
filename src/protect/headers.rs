//! `Retry-After` and the IETF RateLimit header fields
//! (draft-ietf-httpapi-ratelimit-headers-10, structured fields, RFC 9651).
//!
//! How a GCRA limiter (governor) is described in the draft's terms:
//!
//! - `RateLimit-Policy: "<name>";q=<burst>;w=<secs>`: `q` is the burst (the
//!   most requests accepted at once), `w` the seconds to refill that burst
//!   (burst x replenish interval), rounded **up**, at least 1; so the
//!   advertised rate `q/w` is never above the real one. `<name>` is one of
//!   `per-client`, `per-client-department`, `per-department`,
//!   `per-ip-auth-failures` (an sf-string, as in the draft's examples).
//! - `RateLimit: "<name>";r=<remaining>;t=<secs>`: `r` the requests that
//!   would pass right now (never negative); `t` the seconds until more quota
//!   is made available (draft -10 wording), rounded **up**: on a 429 it
//!   equals `Retry-After` (the wait until one request passes); on a success
//!   it is the replenish interval rounded up (a bound: one unit comes back
//!   within that time).
//! - `Retry-After: <secs>`: the real wait rounded **up**, at least 1, so a
//!   client that obeys it is never refused for being early.
//!
//! On successful replies only the client's own policies (`per-client`,
//! `per-client-department`) are shown: the department-wide remainder says how
//! busy a department is for every client and is not the caller's business.
//! A 429 names the policy that refused, whichever it is.

use std::fmt::Write as _;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::config::Rate;

/// Which rate limiter refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimiterKind {
    /// The client's own quota (`[rate_limits]` default or per-client entry).
    PerClient,
    /// The client's quota towards one department (`protect.per_client`).
    PerClientDepartment,
    /// The department's quota, all clients together (`protect.rate`).
    PerDepartment,
    /// Failed authentications from one source address.
    PerIpAuthFailures,
}

impl LimiterKind {
    /// The policy name used in `RateLimit-Policy` / `RateLimit` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            LimiterKind::PerClient => "per-client",
            LimiterKind::PerClientDepartment => "per-client-department",
            LimiterKind::PerDepartment => "per-department",
            LimiterKind::PerIpAuthFailures => "per-ip-auth-failures",
        }
    }
}

/// `RateLimit-Policy` header name.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` header name.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// One rate-limit policy as shown to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    kind: LimiterKind,
    quota: u32,
    window_secs: u64,
    interval: Duration,
}

impl RateLimitPolicy {
    pub(crate) fn new(kind: LimiterKind, rate: &Rate) -> Self {
        Self {
            kind,
            quota: rate.burst(),
            window_secs: rate.window_secs(),
            interval: rate.interval(),
        }
    }

    /// Which limiter.
    pub fn kind(&self) -> LimiterKind {
        self.kind
    }

    /// `q`: the burst.
    pub fn quota(&self) -> u32 {
        self.quota
    }

    /// `w`: seconds to refill the burst, rounded up.
    pub fn window_secs(&self) -> u64 {
        self.window_secs
    }

    /// Time to replenish one request.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn write_policy(&self, out: &mut String) {
        let _ = write!(
            out,
            "\"{}\";q={};w={}",
            self.kind.name(),
            self.quota,
            self.window_secs
        );
    }
}

/// The state of one limiter after a request passed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitEntry {
    /// The policy.
    pub policy: RateLimitPolicy,
    /// Requests that would still pass now (`r`).
    pub remaining: u32,
    /// Seconds until more quota is made available (`t`), rounded up.
    pub reset_secs: u64,
}

impl LimitEntry {
    pub(crate) fn after_pass(policy: RateLimitPolicy, remaining: u32) -> Self {
        Self {
            policy,
            remaining,
            reset_secs: ceil_secs(policy.interval),
        }
    }

    fn write_state(&self, out: &mut String) {
        let _ = write!(
            out,
            "\"{}\";r={};t={}",
            self.policy.kind.name(),
            self.remaining,
            self.reset_secs
        );
    }
}

/// The limiters a request passed, for `RateLimit` on successful replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitState {
    /// The client's own quota.
    pub per_client: LimitEntry,
    /// The client's quota towards the department, when one was addressed.
    pub per_client_department: Option<LimitEntry>,
    /// The department's quota (not rendered to clients; for metrics).
    pub per_department: Option<LimitEntry>,
}

impl RateLimitState {
    /// The entries shown to the client: per-client, then
    /// per-client-department.
    pub fn client_entries(&self) -> impl Iterator<Item = &LimitEntry> {
        std::iter::once(&self.per_client).chain(self.per_client_department.as_ref())
    }

    /// The `RateLimit-Policy` value, e.g.
    /// `"per-client";q=100;w=2, "per-client-department";q=2000;w=2`.
    pub fn policy_value(&self) -> String {
        let mut s = String::with_capacity(96);
        for (i, e) in self.client_entries().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            e.policy.write_policy(&mut s);
        }
        s
    }

    /// The `RateLimit` value, e.g.
    /// `"per-client";r=42;t=1, "per-client-department";r=1999;t=1`.
    pub fn state_value(&self) -> String {
        let mut s = String::with_capacity(96);
        for (i, e) in self.client_entries().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            e.write_state(&mut s);
        }
        s
    }

    /// Sets `RateLimit-Policy` and `RateLimit` on a successful reply.
    pub fn apply_headers(&self, map: &mut HeaderMap) {
        insert(map, RATELIMIT_POLICY, self.policy_value());
        insert(map, RATELIMIT, self.state_value());
    }
}

/// `Retry-After` seconds for a wait: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    ceil_secs(wait).max(1)
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub(crate) fn apply_retry_after(wait: Duration, map: &mut HeaderMap) {
    map.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
}

/// The three headers of a 429.
pub(crate) fn apply_refusal(policy: &RateLimitPolicy, wait: Duration, map: &mut HeaderMap) {
    apply_retry_after(wait, map);
    let mut p = String::with_capacity(48);
    policy.write_policy(&mut p);
    insert(map, RATELIMIT_POLICY, p);
    let state = LimitEntry {
        policy: *policy,
        remaining: 0,
        reset_secs: retry_after_secs(wait),
    };
    let mut s = String::with_capacity(48);
    state.write_state(&mut s);
    insert(map, RATELIMIT, s);
}

fn insert(map: &mut HeaderMap, name: HeaderName, value: String) {
    // Values are built from fixed names and integers: always visible ASCII.
    if let Ok(v) = HeaderValue::try_from(value) {
        map.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protect::config::nz;

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(200)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
    }

    #[test]
    fn policy_window_rounds_up() {
        let p = RateLimitPolicy::new(LimiterKind::PerClient, &Rate::per_second(nz(50), nz(100)));
        assert_eq!((p.quota(), p.window_secs()), (100, 2));
        // 3/s with burst 10 refills in 3.33 s: advertised as 10 per 4 s.
        let p = RateLimitPolicy::new(LimiterKind::PerClient, &Rate::per_second(nz(3), nz(10)));
        assert_eq!(p.window_secs(), 4);
        let p = RateLimitPolicy::new(
            LimiterKind::PerClient,
            &Rate::per_second(nz(100_000), nz(100_000)),
        );
        assert_eq!(p.window_secs(), 1);
    }

    #[test]
    fn refusal_headers_use_structured_fields() {
        let p = RateLimitPolicy::new(
            LimiterKind::PerClientDepartment,
            &Rate::per_second(nz(5), nz(10)),
        );
        let mut h = HeaderMap::new();
        apply_refusal(&p, Duration::from_millis(200), &mut h);
        assert_eq!(h[RETRY_AFTER], "1");
        assert_eq!(h[RATELIMIT_POLICY], "\"per-client-department\";q=10;w=2");
        assert_eq!(h[RATELIMIT], "\"per-client-department\";r=0;t=1");
    }

    #[test]
    fn success_headers_list_client_policies_only() {
        let pc = RateLimitPolicy::new(LimiterKind::PerClient, &Rate::per_second(nz(50), nz(100)));
        let pcd = RateLimitPolicy::new(
            LimiterKind::PerClientDepartment,
            &Rate::per_second(nz(1000), nz(2000)),
        );
        let pd = RateLimitPolicy::new(LimiterKind::PerDepartment, &Rate::per_second(nz(9), nz(9)));
        let s = RateLimitState {
            per_client: LimitEntry::after_pass(pc, 42),
            per_client_department: Some(LimitEntry::after_pass(pcd, 1999)),
            per_department: Some(LimitEntry::after_pass(pd, 3)),
        };
        let mut h = HeaderMap::new();
        s.apply_headers(&mut h);
        assert_eq!(
            h[RATELIMIT_POLICY],
            "\"per-client\";q=100;w=2, \"per-client-department\";q=2000;w=2"
        );
        assert_eq!(
            h[RATELIMIT],
            "\"per-client\";r=42;t=1, \"per-client-department\";r=1999;t=1"
        );
        assert!(!h[RATELIMIT].to_str().unwrap().contains("per-department"));
    }
}
