//! Configuration of the protection layer: `[rate_limits]` in gateway.toml and
//! the `protect` table under each department.
//!
//! Raw serde types (`Raw*`, `deny_unknown_fields`, every key optional) are
//! embedded by the gateway.toml loader (`loader::load`) and converted with `from_raw`
//! into the validated model below. Every knob has a default; nonsense (zero
//! rates, a ratio outside `0..=1`, an attempt timeout longer than the total)
//! is refused at load, naming the file, the dotted field and the fix.
//!
//! ```toml
//! [rate_limits]
//! default_client = { per_second = 50, burst = 100 }
//! failed_auth_per_ip = { per_minute = 30, burst = 30 }
//! [rate_limits.clients.portal-readonly]
//! per_second = 5
//! burst = 10
//!
//! [departments.market-supervision.protect]
//! rate = { per_second = 100000, burst = 100000 }      # whole department
//! per_client = { per_second = 1000, burst = 2000 }    # client x department
//! max_in_flight = 256
//! max_queue = 1024
//! queue_timeout_ms = 1000
//! connect_timeout_ms = 1000
//! attempt_timeout_ms = 5000
//! total_timeout_ms = 8000
//! max_attempts = 2
//! breaker = { consecutive_failures = 20, failure_ratio = 0.5, window_secs = 30, min_calls = 20, open_secs = 10, max_open_secs = 60 }
//! retry_budget = { ratio = 0.2, reserve = 10 }
//! backoff = { base_ms = 50, max_ms = 1000 }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
use serde::Deserialize;

use crate::config::toolkit::Fields;
use crate::config::{ConfigError, ConfigErrors};

/// Largest number of attempts (first try included) a department may allow;
/// more only multiplies load on a system that is already failing.
pub const MAX_ATTEMPTS_LIMIT: u32 = 5;

/// Longest breaker open period accepted, in seconds (a day).
pub const MAX_OPEN_SECS: u64 = 86_400;

/// A rate as written in TOML: exactly one of `per_second`, `per_minute`,
/// `per_hour`, and an optional `burst` (default: the per-period count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    /// Requests replenished per second.
    pub per_second: Option<u32>,
    /// Requests replenished per minute.
    pub per_minute: Option<u32>,
    /// Requests replenished per hour.
    pub per_hour: Option<u32>,
    /// Most requests accepted at once with a full bucket.
    pub burst: Option<u32>,
}

/// `[rate_limits]` of gateway.toml.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    /// Quota of every client without an entry under `clients`
    /// (default 50/s, burst 100).
    pub default_client: Option<RawRate>,
    /// Failed authentications tolerated per source address (IPv4 address or
    /// IPv6 /64) before it is refused without verification (default 30/min,
    /// burst 30).
    pub failed_auth_per_ip: Option<RawRate>,
    /// Per-client quotas by client id (the token's `sub`).
    #[serde(default)]
    pub clients: BTreeMap<String, RawRate>,
}

/// `[departments.NAME.protect]`: how onewindow protects one department.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDepartmentProtection {
    /// Department-wide rate, all clients together (default 1000/s, burst 1000).
    pub rate: Option<RawRate>,
    /// Rate of one client towards this department (default 100/s, burst 200).
    pub per_client: Option<RawRate>,
    /// Calls in flight to the department at most (default 64).
    pub max_in_flight: Option<u32>,
    /// Callers waiting for an in-flight slot at most; 0 disables waiting
    /// (default 256).
    pub max_queue: Option<u32>,
    /// Longest wait for an in-flight slot, in milliseconds (default 1000).
    pub queue_timeout_ms: Option<u64>,
    /// Connection establishment timeout, in milliseconds (default 1000).
    pub connect_timeout_ms: Option<u64>,
    /// Timeout of one attempt, in milliseconds (default 5000).
    pub attempt_timeout_ms: Option<u64>,
    /// Timeout of the whole call, retries and backoff included, in
    /// milliseconds (default 8000).
    pub total_timeout_ms: Option<u64>,
    /// Attempts at most, the first one included (default 2, at most 5).
    pub max_attempts: Option<u32>,
    /// Circuit breaker.
    pub breaker: Option<RawBreaker>,
    /// Retry budget.
    pub retry_budget: Option<RawRetryBudget>,
    /// Backoff between attempts.
    pub backoff: Option<RawBackoff>,
}

/// `breaker = { ... }` of a department.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Failures in a row that open the breaker (default 20).
    pub consecutive_failures: Option<u32>,
    /// Failure ratio over the window that opens the breaker, in `(0, 1]`
    /// (default 0.5).
    pub failure_ratio: Option<f64>,
    /// Length of the rolling window, in seconds (default 30).
    pub window_secs: Option<u64>,
    /// Calls in the window before the ratio is considered (default 20).
    pub min_calls: Option<u32>,
    /// How long the breaker stays open, in seconds (default 10).
    pub open_secs: Option<u64>,
    /// Longest open period after repeated failed probes, in seconds; each
    /// failed probe doubles the open period up to this (default 60).
    pub max_open_secs: Option<u64>,
}

/// `retry_budget = { ... }` of a department.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryBudget {
    /// Retries allowed per request, in `[0, 1]` (default 0.2: one retry per
    /// five requests).
    pub ratio: Option<f64>,
    /// Retries the budget can save up, also available at start (default 10).
    pub reserve: Option<u32>,
}

/// `backoff = { ... }` of a department (full-jitter exponential backoff).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    /// Ceiling of the first backoff, in milliseconds (default 50).
    pub base_ms: Option<u64>,
    /// Largest ceiling, in milliseconds (default 1000).
    pub max_ms: Option<u64>,
}

/// A validated rate: a GCRA quota plus the numbers shown to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Time to replenish one request.
    interval: Duration,
    /// Requests accepted at once with a full bucket.
    burst: NonZeroU32,
}

impl Rate {
    /// `count` requests per `period`, `burst` at once. `None` when the
    /// interval would be shorter than a nanosecond.
    pub fn new(count: NonZeroU32, period: Duration, burst: NonZeroU32) -> Option<Self> {
        let nanos = period.as_nanos() / u128::from(count.get());
        let interval = Duration::from_nanos(u64::try_from(nanos).ok()?);
        if interval.is_zero() {
            return None;
        }
        Some(Self { interval, burst })
    }

    /// `n` per second, burst `burst`; test and default helper.
    pub fn per_second(n: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::new(n, Duration::from_secs(1), burst).unwrap_or(Self {
            interval: Duration::from_nanos(1),
            burst,
        })
    }

    /// `n` per minute, burst `burst`.
    pub fn per_minute(n: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::new(n, Duration::from_secs(60), burst).unwrap_or(Self {
            interval: Duration::from_nanos(1),
            burst,
        })
    }

    /// The governor quota.
    pub fn quota(&self) -> Quota {
        // `interval` is never zero (checked by the constructors).
        Quota::with_period(self.interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(self.burst)
    }

    /// Time to replenish one request.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Requests accepted at once with a full bucket (the `q` of
    /// `RateLimit-Policy`).
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// One node's share of this rate when `nodes` nodes share it: `nodes`
    /// times the interval and `burst / nodes` (at least 1).
    pub fn share(&self, nodes: u32) -> Self {
        let n = nodes.max(1);
        let burst = NonZeroU32::new(self.burst.get() / n).unwrap_or(NonZeroU32::MIN);
        Self {
            interval: self.interval.saturating_mul(n),
            burst,
        }
    }

    /// Seconds to refill a whole burst, rounded up, at least 1 (the `w` of
    /// `RateLimit-Policy`). Rounding up advertises a rate no higher than the
    /// real one.
    pub fn window_secs(&self) -> u64 {
        let nanos = self.interval.as_nanos() * u128::from(self.burst.get());
        let secs = nanos.div_ceil(1_000_000_000);
        u64::try_from(secs).unwrap_or(u64::MAX).max(1)
    }
}

/// Validated `[rate_limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Quota of clients without their own entry.
    pub default_client: Rate,
    /// Failed authentications per source address.
    pub failed_auth_per_ip: Rate,
    /// Quotas by client id.
    pub clients: HashMap<Arc<str>, Rate>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            default_client: Rate::per_second(nz(50), nz(100)),
            failed_auth_per_ip: Rate::per_minute(nz(30), nz(30)),
            clients: HashMap::new(),
        }
    }
}

impl RateLimitSettings {
    /// Validates `raw`; `field_prefix` is the dotted path of the table
    /// (normally `rate_limits`).
    pub fn from_raw(
        raw: &RawRateLimits,
        file: &Path,
        field_prefix: &str,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let d = Self::default();
        let mut f = Fields::new(file, field_prefix, &mut errors);
        let default_client = rate_or(
            raw.default_client.as_ref(),
            d.default_client,
            &mut f,
            "default_client",
        );
        let failed_auth_per_ip = rate_or(
            raw.failed_auth_per_ip.as_ref(),
            d.failed_auth_per_ip,
            &mut f,
            "failed_auth_per_ip",
        );
        let mut clients = HashMap::new();
        for (name, r) in &raw.clients {
            let field = format!("clients.{name}");
            let printable =
                !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control);
            if !f.require(
                printable,
                &field,
                "client ids must be 1 to 256 printable characters",
                "use the client's token `sub`, e.g. [rate_limits.clients.portal-binhai]",
            ) {
                continue;
            }
            if let Some(rate) = parse_rate(r, f.file(), &f.path(&field), f.errors()) {
                clients.insert(Arc::from(name.as_str()), rate);
            }
        }
        errors.into_result(Self {
            default_client,
            failed_auth_per_ip,
            clients,
        })
    }
}

/// Validated bulkhead knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadSettings {
    /// Calls in flight at most.
    pub max_in_flight: NonZeroU32,
    /// Waiters at most (0: refuse at once when full).
    pub max_queue: u32,
    /// Longest wait in the queue.
    pub queue_timeout: Duration,
}

impl Default for BulkheadSettings {
    fn default() -> Self {
        Self {
            max_in_flight: nz(64),
            max_queue: 256,
            queue_timeout: Duration::from_millis(1000),
        }
    }
}

/// Validated timeouts of calls to one department.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connection establishment (TCP + TLS).
    pub connect: Duration,
    /// One attempt, connection included.
    pub attempt: Duration,
    /// The whole call: every attempt and backoff.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_millis(1000),
            attempt: Duration::from_millis(5000),
            total: Duration::from_millis(8000),
        }
    }
}

impl Timeouts {
    /// The timeout of the next attempt when `elapsed` has already been spent:
    /// the per-attempt timeout capped by what is left of the total; `None`
    /// when the total is used up.
    pub fn next_attempt(&self, elapsed: Duration) -> Option<Duration> {
        let left = self.total.checked_sub(elapsed).filter(|d| !d.is_zero())?;
        Some(self.attempt.min(left))
    }
}

/// Validated retry knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySettings {
    /// Attempts at most, the first included (1: never retry).
    pub max_attempts: u32,
    /// Retries earned per request, `[0, 1]`.
    pub budget_ratio: f64,
    /// Retries the budget can save up (and starts with).
    pub budget_reserve: u32,
    /// Ceiling of the first backoff.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_max: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 2,
            budget_ratio: 0.2,
            budget_reserve: 10,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(1000),
        }
    }
}

/// Validated circuit breaker knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: NonZeroU32,
    /// Failure ratio in the window that opens it, `(0, 1]`.
    pub failure_ratio: f64,
    /// Rolling window length.
    pub window: Duration,
    /// Calls in the window before the ratio counts.
    pub min_calls: NonZeroU32,
    /// First open period.
    pub open: Duration,
    /// Longest open period (failed probes double it up to this).
    pub max_open: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: nz(20),
            failure_ratio: 0.5,
            window: Duration::from_secs(30),
            min_calls: nz(20),
            open: Duration::from_secs(10),
            max_open: Duration::from_secs(60),
        }
    }
}

/// Validated `protect` table of one department.
#[derive(Debug, Clone, PartialEq)]
pub struct DepartmentProtection {
    /// Department-wide rate.
    pub rate: Rate,
    /// Rate of one client towards the department.
    pub per_client: Rate,
    /// Concurrency cap and wait queue.
    pub bulkhead: BulkheadSettings,
    /// Connect, attempt and total timeouts.
    pub timeouts: Timeouts,
    /// Attempts, retry budget and backoff.
    pub retry: RetrySettings,
    /// Circuit breaker.
    pub breaker: BreakerSettings,
}

impl Default for DepartmentProtection {
    fn default() -> Self {
        Self {
            rate: Rate::per_second(nz(1000), nz(1000)),
            per_client: Rate::per_second(nz(100), nz(200)),
            bulkhead: BulkheadSettings::default(),
            timeouts: Timeouts::default(),
            retry: RetrySettings::default(),
            breaker: BreakerSettings::default(),
        }
    }
}

impl DepartmentProtection {
    /// Validates `raw`; `field_prefix` is the dotted path of the table, e.g.
    /// `departments.market-supervision.protect`. Every key left out takes
    /// its value from [`DepartmentProtection::default`].
    pub fn from_raw(
        raw: &RawDepartmentProtection,
        file: &Path,
        field_prefix: &str,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let d = Self::default();
        let mut f = Fields::new(file, field_prefix, &mut errors);
        let settings = Self {
            rate: rate_or(raw.rate.as_ref(), d.rate, &mut f, "rate"),
            per_client: rate_or(raw.per_client.as_ref(), d.per_client, &mut f, "per_client"),
            bulkhead: BulkheadSettings::from_raw(raw, &d.bulkhead, &mut f),
            timeouts: Timeouts::from_raw(raw, &d.timeouts, &mut f),
            retry: RetrySettings::from_raw(raw, &d.retry, &mut f),
            breaker: BreakerSettings::from_raw(raw.breaker.as_ref(), &d.breaker, &mut f),
        };
        errors.into_result(settings)
    }
}

impl BulkheadSettings {
    fn from_raw(raw: &RawDepartmentProtection, d: &Self, f: &mut Fields<'_>) -> Self {
        Self {
            max_in_flight: f.non_zero(
                "max_in_flight",
                raw.max_in_flight,
                d.max_in_flight,
                "0 would refuse every call to the department",
            ),
            max_queue: raw.max_queue.unwrap_or(d.max_queue),
            queue_timeout: f.millis("queue_timeout_ms", raw.queue_timeout_ms, d.queue_timeout),
        }
    }
}

impl Timeouts {
    fn from_raw(raw: &RawDepartmentProtection, d: &Self, f: &mut Fields<'_>) -> Self {
        let t = Self {
            connect: f.millis("connect_timeout_ms", raw.connect_timeout_ms, d.connect),
            attempt: f.millis("attempt_timeout_ms", raw.attempt_timeout_ms, d.attempt),
            total: f.millis("total_timeout_ms", raw.total_timeout_ms, d.total),
        };
        let ms = |d: Duration| d.as_millis();
        f.require(
            t.attempt <= t.total,
            "attempt_timeout_ms",
            format!(
                "the attempt timeout ({} ms) is longer than the total timeout ({} ms)",
                ms(t.attempt),
                ms(t.total)
            ),
            "lower attempt_timeout_ms or raise total_timeout_ms",
        );
        f.require(
            t.connect <= t.attempt,
            "connect_timeout_ms",
            format!(
                "the connect timeout ({} ms) is longer than the attempt timeout ({} ms)",
                ms(t.connect),
                ms(t.attempt)
            ),
            "lower connect_timeout_ms or raise attempt_timeout_ms",
        );
        t
    }
}

impl RetrySettings {
    fn from_raw(raw: &RawDepartmentProtection, d: &Self, f: &mut Fields<'_>) -> Self {
        let budget = raw.retry_budget.clone().unwrap_or_default();
        let backoff = raw.backoff.clone().unwrap_or_default();
        let r = Self {
            max_attempts: f.in_range(
                "max_attempts",
                raw.max_attempts,
                1..=MAX_ATTEMPTS_LIMIT,
                d.max_attempts,
            ),
            budget_ratio: f.fraction(
                "retry_budget.ratio",
                budget.ratio,
                d.budget_ratio,
                true,
                "the fraction of requests that may be retried",
            ),
            budget_reserve: budget.reserve.unwrap_or(d.budget_reserve),
            backoff_base: f.millis("backoff.base_ms", backoff.base_ms, d.backoff_base),
            backoff_max: f.millis("backoff.max_ms", backoff.max_ms, d.backoff_max),
        };
        f.require(
            r.backoff_base <= r.backoff_max,
            "backoff.base_ms",
            "the first backoff is longer than the largest",
            "set base_ms <= max_ms",
        );
        r
    }
}

impl BreakerSettings {
    fn from_raw(raw: Option<&RawBreaker>, d: &Self, f: &mut Fields<'_>) -> Self {
        let Some(b) = raw else { return *d };
        let open = f.secs(
            "breaker.open_secs",
            b.open_secs,
            d.open,
            MAX_OPEN_SECS,
            "0 would probe the failing department at once",
        );
        let s = Self {
            consecutive_failures: f.non_zero(
                "breaker.consecutive_failures",
                b.consecutive_failures,
                d.consecutive_failures,
                "0 would open the breaker before any call",
            ),
            failure_ratio: f.fraction(
                "breaker.failure_ratio",
                b.failure_ratio,
                d.failure_ratio,
                false,
                "the share of failed calls that opens the breaker",
            ),
            window: f.secs(
                "breaker.window_secs",
                b.window_secs,
                d.window,
                MAX_OPEN_SECS,
                "a zero-length window holds no calls",
            ),
            min_calls: f.non_zero(
                "breaker.min_calls",
                b.min_calls,
                d.min_calls,
                "0 would let a single failure open the breaker",
            ),
            open,
            // Left out, the longest period is at least the first.
            max_open: match b.max_open_secs {
                None => d.max_open.max(open),
                Some(_) => f.secs(
                    "breaker.max_open_secs",
                    b.max_open_secs,
                    d.max_open,
                    MAX_OPEN_SECS,
                    "0 would probe the failing department at once",
                ),
            },
        };
        f.require(
            s.max_open >= s.open,
            "breaker.max_open_secs",
            "the longest open period is shorter than the first",
            "set max_open_secs >= open_secs",
        );
        s
    }
}

/// A compile-time non-zero constant helper (values are literals > 0).
pub(crate) const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

fn rate_or(raw: Option<&RawRate>, default: Rate, f: &mut Fields<'_>, field: &str) -> Rate {
    match raw {
        None => default,
        Some(r) => parse_rate(r, f.file(), &f.path(field), f.errors()).unwrap_or(default),
    }
}

fn parse_rate(raw: &RawRate, file: &Path, field: &str, errors: &mut ConfigErrors) -> Option<Rate> {
    let given = [
        (raw.per_second, Duration::from_secs(1), "per_second"),
        (raw.per_minute, Duration::from_secs(60), "per_minute"),
        (raw.per_hour, Duration::from_secs(3600), "per_hour"),
    ];
    let set: Vec<_> = given.iter().filter(|(v, _, _)| v.is_some()).collect();
    let &&(count, period, key) = match set.as_slice() {
        [one] => one,
        [] => {
            errors.push(ConfigError::new(
                file,
                field,
                "no rate given",
                "add one of per_second, per_minute or per_hour, e.g. { per_second = 50, burst = 100 }",
            ));
            return None;
        }
        _ => {
            errors.push(ConfigError::new(
                file,
                field,
                "more than one of per_second, per_minute, per_hour given",
                "keep exactly one of them",
            ));
            return None;
        }
    };
    let Some(count) = count.and_then(NonZeroU32::new) else {
        errors.push(ConfigError::new(
            file,
            format!("{field}.{key}"),
            "a zero rate refuses every request",
            "set a positive rate (to block a client, revoke its grants instead)",
        ));
        return None;
    };
    let burst = match raw.burst {
        None => count,
        Some(b) => match NonZeroU32::new(b) {
            Some(b) => b,
            None => {
                errors.push(ConfigError::new(
                    file,
                    format!("{field}.burst"),
                    "a zero burst refuses every request",
                    "set burst >= 1, usually the per-period count or twice it",
                ));
                return None;
            }
        },
    };
    match Rate::new(count, period, burst) {
        Some(r) => Some(r),
        None => {
            errors.push(ConfigError::new(
                file,
                format!("{field}.{key}"),
                "the rate is above one request per nanosecond",
                "lower the rate",
            ));
            None
        }
    }
}
