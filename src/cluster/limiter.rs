//! Cluster-wide rate limits: one GCRA bucket per limiter key in Redis,
//! spent by every node through small local leases.
//!
//! A node asks Redis (one atomic Lua script, [`LEASE_LUA`]) for up to
//! `batch` tokens of a key at once and spends them locally, one per request,
//! without talking to Redis; when half the lease is spent it fetches the next
//! one in the background, so Redis is on a request's path only when a lease
//! ran dry. `batch` is a tenth of the burst divided by the node count (at
//! least 1, at most 1000): a node never holds more than 1.5 batches of any
//! key, so the whole cluster admits at most the GCRA bound plus 15 % of one
//! burst, and tokens stranded on a node that stops receiving a client's
//! traffic are at most as many. A key whose bucket is empty is refused
//! locally until Redis said a token would be back, without asking again.
//!
//! When Redis fails or answers late, every check goes to this node's share of
//! each quota (quota / max(`nodes`, live nodes seen)), enforced by the
//! ordinary in-process limiters, until the heartbeat finds Redis again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use redis::Script;
use tokio::time::Instant;

use super::error::ClusterError;
use super::link::Link;
use crate::protect::{
    DepartmentProtection, LimitEntry, LimiterKind, Protection, Rate, RateLimitPolicy,
    RateLimitSettings, RateLimitState, RateLimited, Refusal,
};

/// GCRA over a batch, atomically in Redis. `KEYS[1]`: the key holding the
/// theoretical arrival time (µs since the epoch). `ARGV`: interval (µs),
/// burst, tokens wanted, and optionally `now` (µs; tests) instead of Redis's
/// clock. Returns `{granted, wait_us, remaining}`: up to `wanted` tokens
/// (fewer when fewer are available), or none and the wait until one is.
pub const LEASE_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local now
if ARGV[4] then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local avail = math.floor((now + burst * interval - tat) / interval)
if avail > burst then avail = burst end
if avail <= 0 then
  return {0, tat + interval - burst * interval - now, 0}
end
local take = math.min(avail, want)
tat = tat + take * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
return {take, 0, avail - take}
"#;

/// The lease script.
pub fn lease_script() -> Script {
    Script::new(LEASE_LUA)
}

/// What one lease request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Tokens granted (0: refused).
    pub granted: u32,
    /// When refused: the wait until one token is available.
    pub wait: Duration,
    /// Tokens still in the shared bucket after this grant.
    pub remaining: u32,
}

/// The quotas, cluster-wide, by limiter.
#[derive(Debug, Clone)]
struct Rates {
    default_client: Rate,
    clients: HashMap<Arc<str>, Rate>,
    /// Department -> (department rate, per-client rate).
    departments: HashMap<Arc<str>, (Rate, Rate)>,
}

/// The configuration a fallback is built from.
#[derive(Debug, Clone)]
struct Source {
    limits: RateLimitSettings,
    departments: BTreeMap<String, DepartmentProtection>,
}

/// A key's lease: tokens this node may spend without asking Redis.
#[derive(Debug, Default)]
struct Lease {
    state: Mutex<LeaseState>,
    refill: tokio::sync::Mutex<()>,
    prefetching: AtomicBool,
    /// Milliseconds since the limiter's start of the last use.
    last_used: AtomicU64,
}

#[derive(Debug, Default)]
struct LeaseState {
    tokens: u32,
    remaining: u32,
    blocked_until: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LeaseKey {
    kind: LimiterKind,
    department: Option<Arc<str>>,
    client: Option<Arc<str>>,
}

enum Step {
    Pass(LimitEntry),
    Refused(RateLimited),
    Failed,
}

/// The cluster-wide limiter (per client, per client x department, per
/// department). Long-lived: survives reloads ([`SharedLimits::configure`]).
pub struct SharedLimits {
    link: Arc<Link>,
    prefix: String,
    script: Script,
    rates: ArcSwap<Rates>,
    source: Mutex<Source>,
    fallback: ArcSwap<Protection>,
    share: AtomicU32,
    configured_nodes: u32,
    leases: DashMap<LeaseKey, Arc<Lease>>,
    start: Instant,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("prefix", &self.prefix)
            .field("leases", &self.leases.len())
            .finish()
    }
}

fn rates_of(source: &Source) -> Rates {
    Rates {
        default_client: source.limits.default_client,
        clients: source.limits.clients.clone(),
        departments: source
            .departments
            .iter()
            .map(|(n, p)| (Arc::from(n.as_str()), (p.rate, p.per_client)))
            .collect(),
    }
}

fn fallback_of(source: &Source, share: u32) -> Protection {
    let mut limits = source.limits.clone();
    limits.default_client = limits.default_client.share(share);
    for r in limits.clients.values_mut() {
        *r = r.share(share);
    }
    let departments: Vec<(String, DepartmentProtection)> = source
        .departments
        .iter()
        .map(|(n, p)| {
            let mut p = p.clone();
            p.rate = p.rate.share(share);
            p.per_client = p.per_client.share(share);
            (n.clone(), p)
        })
        .collect();
    Protection::new(&limits, departments.iter().map(|(n, p)| (n.as_str(), p)))
}

impl SharedLimits {
    /// A limiter over `link` for the given quotas; `nodes` is the configured
    /// node count (the fallback share until more nodes are seen alive).
    pub fn new<'a>(
        link: Arc<Link>,
        prefix: &str,
        nodes: u32,
        limits: &RateLimitSettings,
        departments: impl IntoIterator<Item = (&'a str, &'a DepartmentProtection)>,
    ) -> Self {
        let source = Source {
            limits: limits.clone(),
            departments: departments
                .into_iter()
                .map(|(n, p)| (n.to_string(), p.clone()))
                .collect(),
        };
        let share = nodes.max(1);
        Self {
            link,
            prefix: prefix.to_string(),
            script: lease_script(),
            rates: ArcSwap::from_pointee(rates_of(&source)),
            fallback: ArcSwap::from_pointee(fallback_of(&source, share)),
            source: Mutex::new(source),
            share: AtomicU32::new(share),
            configured_nodes: nodes.max(1),
            leases: DashMap::new(),
            start: Instant::now(),
        }
    }

    /// New quotas after a reload. Leases already held are kept (they were
    /// taken from the shared buckets).
    pub fn configure<'a>(
        &self,
        limits: &RateLimitSettings,
        departments: impl IntoIterator<Item = (&'a str, &'a DepartmentProtection)>,
    ) {
        let source = Source {
            limits: limits.clone(),
            departments: departments
                .into_iter()
                .map(|(n, p)| (n.to_string(), p.clone()))
                .collect(),
        };
        self.rates.store(Arc::new(rates_of(&source)));
        self.fallback.store(Arc::new(fallback_of(
            &source,
            self.share.load(Ordering::Relaxed),
        )));
        if let Ok(mut s) = self.source.lock() {
            *s = source;
        }
    }

    /// The heartbeat saw `live` nodes: the fallback share becomes quota /
    /// max(configured, live).
    pub fn set_live_nodes(&self, live: u32) {
        let share = self.configured_nodes.max(live).max(1);
        if self.share.swap(share, Ordering::Relaxed) != share
            && let Ok(s) = self.source.lock()
        {
            tracing::info!(
                share,
                "cluster: fallback share of each quota is now 1/{share}"
            );
            self.fallback.store(Arc::new(fallback_of(&s, share)));
        }
    }

    /// The current fallback divisor.
    pub fn share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    /// Charges one request of `client` (towards `department`) to the
    /// cluster-wide per-client, per-client x department and per-department
    /// quotas, in that order, stopping at the first refusal; with Redis
    /// unavailable, to this node's share of them.
    pub async fn check(
        self: &Arc<Self>,
        client: &Arc<str>,
        department: Option<&str>,
    ) -> Result<RateLimitState, RateLimited> {
        if !self.link.health.redis_up() {
            return self.fallback(client, department);
        }
        let rates = self.rates.load();
        let rate = rates.clients.get(client).unwrap_or(&rates.default_client);
        let per_client = match self
            .take(
                LeaseKey {
                    kind: LimiterKind::PerClient,
                    department: None,
                    client: Some(client.clone()),
                },
                RateLimitPolicy::new(LimiterKind::PerClient, rate),
            )
            .await
        {
            Step::Pass(e) => e,
            Step::Refused(r) => return Err(r),
            Step::Failed => return self.fallback(client, department),
        };
        let mut state = RateLimitState {
            per_client,
            per_client_department: None,
            per_department: None,
        };
        if let Some((name, (dept_rate, per_client_rate))) =
            department.and_then(|d| rates.departments.get_key_value(d))
        {
            let steps = [
                (
                    LimiterKind::PerClientDepartment,
                    per_client_rate,
                    Some(client.clone()),
                ),
                (LimiterKind::PerDepartment, dept_rate, None),
            ];
            for (kind, rate, client_key) in steps {
                let key = LeaseKey {
                    kind,
                    department: Some(name.clone()),
                    client: client_key,
                };
                let entry = match self.take(key, RateLimitPolicy::new(kind, rate)).await {
                    Step::Pass(e) => e,
                    Step::Refused(r) => return Err(r),
                    Step::Failed => return self.fallback(client, department),
                };
                match kind {
                    LimiterKind::PerClientDepartment => state.per_client_department = Some(entry),
                    _ => state.per_department = Some(entry),
                }
            }
        }
        Ok(state)
    }

    fn fallback(
        &self,
        client: &Arc<str>,
        department: Option<&str>,
    ) -> Result<RateLimitState, RateLimited> {
        self.link
            .health
            .fallback_checks
            .fetch_add(1, Ordering::Relaxed);
        self.fallback.load().check_client(client, department)
    }

    fn batch(&self, policy: &RateLimitPolicy) -> u32 {
        let n = self.share.load(Ordering::Relaxed).max(1);
        (policy.quota() / (10 * n)).clamp(1, 1000)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn take(self: &Arc<Self>, key: LeaseKey, policy: RateLimitPolicy) -> Step {
        let lease = match self.leases.get(&key) {
            Some(l) => l.clone(),
            None => self.leases.entry(key.clone()).or_default().clone(),
        };
        lease.last_used.store(self.now_ms(), Ordering::Relaxed);
        let batch = self.batch(&policy);
        if let Some(step) = self.from_lease(&lease, &key, &policy, batch, true) {
            return step;
        }
        // The lease is dry: one task fetches, the others wait for it.
        let _g = lease.refill.lock().await;
        if let Some(step) = self.from_lease(&lease, &key, &policy, batch, false) {
            return step;
        }
        let grant = match self.fetch(&key, &policy, batch).await {
            Ok(g) => g,
            Err(_) => return Step::Failed,
        };
        let Ok(mut s) = lease.state.lock() else {
            return Step::Failed;
        };
        if grant.granted == 0 {
            s.blocked_until = Some(Instant::now() + grant.wait);
            return Step::Refused(RateLimited::new(
                policy.kind(),
                Refusal::new(grant.wait, policy),
            ));
        }
        s.tokens += grant.granted - 1;
        s.remaining = grant.remaining;
        Step::Pass(LimitEntry::after_pass(policy, s.remaining + s.tokens))
    }

    /// Spends one token of the lease, or refuses while the key is known to
    /// be empty; `None` when the lease must be refilled first.
    fn from_lease(
        self: &Arc<Self>,
        lease: &Arc<Lease>,
        key: &LeaseKey,
        policy: &RateLimitPolicy,
        batch: u32,
        may_prefetch: bool,
    ) -> Option<Step> {
        let now = Instant::now();
        let mut s = lease.state.lock().ok()?;
        if let Some(until) = s.blocked_until {
            if now < until {
                return Some(Step::Refused(RateLimited::new(
                    policy.kind(),
                    Refusal::new(until - now, *policy),
                )));
            }
            s.blocked_until = None;
        }
        if s.tokens == 0 {
            return None;
        }
        s.tokens -= 1;
        let remaining = s.remaining + s.tokens;
        let low = batch >= 4 && s.tokens <= batch / 2;
        drop(s);
        if may_prefetch && low && !lease.prefetching.swap(true, Ordering::AcqRel) {
            self.prefetch(lease.clone(), key.clone(), *policy, batch);
        }
        Some(Step::Pass(LimitEntry::after_pass(*policy, remaining)))
    }

    fn prefetch(
        self: &Arc<Self>,
        lease: Arc<Lease>,
        key: LeaseKey,
        policy: RateLimitPolicy,
        batch: u32,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            {
                let _g = lease.refill.lock().await;
                let low = lease
                    .state
                    .lock()
                    .map(|s| s.tokens <= batch / 2)
                    .unwrap_or(false);
                if low
                    && let Ok(g) = this.fetch(&key, &policy, batch).await
                    && g.granted > 0
                    && let Ok(mut s) = lease.state.lock()
                {
                    s.tokens += g.granted;
                    s.remaining = g.remaining;
                }
            }
            lease.prefetching.store(false, Ordering::Release);
        });
    }

    fn redis_key(&self, key: &LeaseKey) -> String {
        let d = key.department.as_deref().unwrap_or("");
        let c = key.client.as_deref().unwrap_or("");
        match key.kind {
            LimiterKind::PerClient => format!("{}:rl:c:{c}", self.prefix),
            LimiterKind::PerClientDepartment => format!("{}:rl:cd:{d}:{c}", self.prefix),
            LimiterKind::PerDepartment => format!("{}:rl:d:{d}", self.prefix),
            LimiterKind::PerIpAuthFailures => format!("{}:rl:ip:{c}", self.prefix),
        }
    }

    async fn fetch(
        &self,
        key: &LeaseKey,
        policy: &RateLimitPolicy,
        want: u32,
    ) -> Result<Grant, ClusterError> {
        self.link
            .health
            .lease_fetches
            .fetch_add(1, Ordering::Relaxed);
        lease(
            &self.link,
            &self.script,
            &self.redis_key(key),
            policy.interval(),
            policy.quota(),
            want,
            None,
        )
        .await
    }

    /// Forgets leases unused for a minute (their tokens are not returned: at
    /// most one batch per key) and idle keys of the fallback limiters.
    pub fn maintain(&self) {
        let cutoff = self.now_ms().saturating_sub(60_000);
        self.leases
            .retain(|_, l| l.last_used.load(Ordering::Relaxed) >= cutoff);
        self.fallback.load().maintain();
    }

    /// Keys with a lease (for tests and metrics).
    pub fn leases(&self) -> usize {
        self.leases.len()
    }
}

/// One lease request: up to `want` tokens of `key` for a GCRA of `interval`
/// and `burst`; `now_us` replaces Redis's clock (tests).
pub async fn lease(
    link: &Link,
    script: &Script,
    key: &str,
    interval: Duration,
    burst: u32,
    want: u32,
    now_us: Option<u64>,
) -> Result<Grant, ClusterError> {
    let interval_us = u64::try_from(interval.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut inv = script.prepare_invoke();
    inv.key(key).arg(interval_us).arg(burst).arg(want.max(1));
    if let Some(now) = now_us {
        inv.arg(now);
    }
    let reply: redis::Value = link.script("rate-limit lease", &inv).await?;
    let not_redis = |detail: String| {
        let e = ClusterError::NotRedis {
            url: link.url().to_string(),
            op: "rate-limit lease",
            detail,
        };
        link.health.down(&e);
        e
    };
    let redis::Value::Array(items) = &reply else {
        return Err(not_redis(format!(
            "expected three integers, got {}",
            super::link::describe(&reply)
        )));
    };
    let ints: Vec<i64> = items
        .iter()
        .filter_map(|v| match v {
            redis::Value::Int(i) => Some(*i),
            _ => None,
        })
        .collect();
    match ints.as_slice() {
        [g, w, r] if (0..=i64::from(want.max(1))).contains(g) && *w >= 0 && *r >= 0 => Ok(Grant {
            granted: u32::try_from(*g).unwrap_or(0),
            wait: Duration::from_micros(u64::try_from(*w).unwrap_or(0)),
            remaining: u32::try_from(*r).unwrap_or(u32::MAX),
        }),
        _ => Err(not_redis(format!(
            "expected three integers, got {}",
            super::link::describe(&reply)
        ))),
    }
}
