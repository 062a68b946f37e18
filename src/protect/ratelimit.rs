//! Rate limiters (governor GCRA), generic over governor's clock so tests
//! drive a `FakeRelativeClock`.
//!
//! Keyed limiters (per client, per client x department, per source address)
//! keep one 8-byte state per key in a `DashMap`; [`KeyedLimiter::maintain`]
//! drops keys whose state is indistinguishable from a fresh one, so memory
//! stays bounded under millions of distinct keys.

use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, Reference};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, RateLimiter};

use super::config::Rate;
use super::error::{RateLimited, Refusal};
use super::headers::{LimitEntry, LimiterKind, RateLimitPolicy};

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, StateInformationMiddleware>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

fn decide<C: Clock>(
    clock: &C,
    policy: &RateLimitPolicy,
    r: Result<StateSnapshot, NotUntil<C::Instant>>,
) -> Result<LimitEntry, RateLimited> {
    match r {
        Ok(snapshot) => Ok(LimitEntry::after_pass(
            *policy,
            snapshot.remaining_burst_capacity(),
        )),
        Err(not_until) => Err(RateLimited::new(
            policy.kind(),
            Refusal::new(not_until.wait_time_from(clock.now()), *policy),
        )),
    }
}

/// One limiter with one state (a client with its own quota, a department).
#[derive(Debug)]
pub struct DirectLimiter<C: Clock> {
    limiter: Direct<C>,
    policy: RateLimitPolicy,
}

impl<C: Clock> DirectLimiter<C> {
    /// A limiter for `rate`, reporting itself as `kind`.
    pub fn new(kind: LimiterKind, rate: &Rate, clock: C) -> Self {
        Self {
            limiter: RateLimiter::direct_with_clock(rate.quota(), clock)
                .with_middleware::<StateInformationMiddleware>(),
            policy: RateLimitPolicy::new(kind, rate),
        }
    }

    /// Takes one request from the bucket.
    pub fn check(&self) -> Result<LimitEntry, RateLimited> {
        decide(self.limiter.clock(), &self.policy, self.limiter.check())
    }

    /// The policy.
    pub fn policy(&self) -> &RateLimitPolicy {
        &self.policy
    }
}

/// One quota applied separately to each key.
#[derive(Debug)]
pub struct KeyedLimiter<K: Hash + Eq + Clone, C: Clock> {
    limiter: Keyed<K, C>,
    policy: RateLimitPolicy,
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedLimiter<K, C> {
    /// A keyed limiter for `rate`, reporting itself as `kind`.
    pub fn new(kind: LimiterKind, rate: &Rate, clock: C) -> Self {
        Self {
            limiter: RateLimiter::dashmap_with_clock(rate.quota(), clock)
                .with_middleware::<StateInformationMiddleware>(),
            policy: RateLimitPolicy::new(kind, rate),
        }
    }

    /// Takes one request from `key`'s bucket.
    pub fn check(&self, key: &K) -> Result<LimitEntry, RateLimited> {
        decide(
            self.limiter.clock(),
            &self.policy,
            self.limiter.check_key(key),
        )
    }

    /// The policy.
    pub fn policy(&self) -> &RateLimitPolicy {
        &self.policy
    }

    /// Forgets keys whose bucket is full again, then returns memory.
    pub fn maintain(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }

    fn clock(&self) -> &C {
        self.limiter.clock()
    }
}

/// The source-address key of the failed-authentication limiter: an IPv4
/// address, or the /64 prefix of an IPv6 address (one IPv6 host usually owns
/// a whole /64 and could otherwise rotate through it). IPv4-mapped IPv6
/// addresses count as their IPv4 address.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let masked = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(masked.into())
            }
        },
    }
}

/// The limit on failed authentications per source address.
///
/// Only failures are counted, so any number of honest callers with valid
/// tokens behind one address never use it up. Once an address has used its
/// failure budget it is *blocked* until the next failure would be accepted;
/// [`ip_blocked`](Self::ip_blocked) answers from a map lookup, without
/// touching the limiter, so the pipeline can ask before any signature check.
///
/// Pipeline protocol: (1) a token found in the verified-token cache needs no
/// crypto and should skip this check, so even an address shared with an
/// attacker keeps serving its already-verified tokens; (2) otherwise call
/// `ip_blocked` before verifying; (3) after a failed verification call
/// `record_failure`.
#[derive(Debug)]
pub struct AuthFailureLimiter<C: Clock> {
    failures: KeyedLimiter<IpAddr, C>,
    /// Blocked addresses: nanoseconds since `start` until which they are blocked.
    blocked: DashMap<IpAddr, u64>,
    start: C::Instant,
}

impl<C: Clock> AuthFailureLimiter<C> {
    /// A limiter allowing `rate` failures per address.
    pub fn new(rate: &Rate, clock: C) -> Self {
        let start = clock.now();
        Self {
            failures: KeyedLimiter::new(LimiterKind::PerIpAuthFailures, rate, clock),
            blocked: DashMap::new(),
            start,
        }
    }

    fn now_nanos(&self) -> u64 {
        self.failures
            .clock()
            .now()
            .duration_since(self.start)
            .as_u64()
    }

    /// `Err` while `ip` is blocked: no crypto should be spent on it.
    pub fn ip_blocked(&self, ip: IpAddr) -> Result<(), RateLimited> {
        let key = ip_key(ip);
        let Some(until) = self.blocked.get(&key).map(|v| *v) else {
            return Ok(());
        };
        let now = self.now_nanos();
        if now < until {
            return Err(RateLimited::new(
                LimiterKind::PerIpAuthFailures,
                Refusal::new(Duration::from_nanos(until - now), *self.failures.policy()),
            ));
        }
        self.blocked.remove_if(&key, |_, u| *u <= now);
        Ok(())
    }

    /// Records one failed authentication from `ip`. `Err` when the address
    /// has now used its budget and is blocked (the current request is still
    /// answered as an authentication failure).
    pub fn record_failure(&self, ip: IpAddr) -> Result<(), RateLimited> {
        let key = ip_key(ip);
        let block_for = match self.failures.check(&key) {
            // Budget left: nothing to do.
            Ok(entry) if entry.remaining > 0 => return Ok(()),
            // That was the last failure of the burst: block until one more is
            // replenished (at most one interval), so the next attempt costs
            // no crypto.
            Ok(entry) => entry.policy.interval(),
            Err(refused) => refused.wait(),
        };
        let now = self.now_nanos();
        let until = now.saturating_add(u64::try_from(block_for.as_nanos()).unwrap_or(u64::MAX));
        self.blocked
            .entry(key)
            .and_modify(|u| *u = (*u).max(until))
            .or_insert(until);
        Err(RateLimited::new(
            LimiterKind::PerIpAuthFailures,
            Refusal::new(block_for, *self.failures.policy()),
        ))
    }

    /// Drops expired blocks and forgotten failure states.
    pub fn maintain(&self) {
        self.failures.maintain();
        let now = self.now_nanos();
        self.blocked.retain(|_, until| *until > now);
        self.blocked.shrink_to_fit();
    }

    /// Addresses tracked (failure states + blocks).
    pub fn len(&self) -> usize {
        self.failures.len() + self.blocked.len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Barrier};

    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::protect::config::nz;

    #[test]
    fn ipv6_is_keyed_by_slash_64_and_mapped_v4_by_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(ip_key(mapped), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            ip_key(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
    }

    /// 64 threads hit one key at one fake instant: exactly `burst` pass; after
    /// advancing `t`, never more than `burst + rate * t` in total.
    #[test]
    fn parallel_hits_on_one_key_never_exceed_burst_plus_rate() {
        let clock = FakeRelativeClock::default();
        // 10/s, burst 20.
        let lim = Arc::new(KeyedLimiter::<String, _>::new(
            LimiterKind::PerClient,
            &Rate::per_second(nz(10), nz(20)),
            clock.clone(),
        ));
        let passed = Arc::new(AtomicU32::new(0));
        let round = |per_task: u32| {
            let barrier = Arc::new(Barrier::new(64));
            std::thread::scope(|s| {
                for _ in 0..64 {
                    let (lim, passed, barrier) = (lim.clone(), passed.clone(), barrier.clone());
                    s.spawn(move || {
                        let key = "portal".to_string();
                        barrier.wait();
                        for _ in 0..per_task {
                            if lim.check(&key).is_ok() {
                                passed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
        };
        round(4);
        assert_eq!(passed.load(Ordering::Relaxed), 20, "burst is 20");
        // Advance 1.55 s: at most 20 + 10 * 1.55 = 35.5 in total.
        clock.advance(Duration::from_millis(1550));
        round(4);
        let total = passed.load(Ordering::Relaxed);
        assert!(total <= 35, "{total} > burst + rate * t");
        assert_eq!(total, 35, "the 15 replenished requests are usable");
        // Nothing more at the same instant.
        round(1);
        assert_eq!(passed.load(Ordering::Relaxed), 35);
    }

    #[test]
    fn burst_beyond_quota_is_refused_with_rounded_up_retry_after() {
        let clock = FakeRelativeClock::default();
        // portal-readonly: 5/s, burst 10.
        let lim = DirectLimiter::new(
            LimiterKind::PerClient,
            &Rate::per_second(nz(5), nz(10)),
            clock.clone(),
        );
        for i in 0..10 {
            let e = lim.check().unwrap();
            assert_eq!(e.remaining, 9 - i);
        }
        let err = lim.check().unwrap_err();
        assert_eq!(err.limiter(), LimiterKind::PerClient);
        assert_eq!(err.wait(), Duration::from_millis(200));
        assert_eq!(err.retry_after_secs(), 1);
        clock.advance(Duration::from_millis(150));
        assert_eq!(lim.check().unwrap_err().wait(), Duration::from_millis(50));
        clock.advance(Duration::from_millis(50));
        assert!(lim.check().is_ok());

        // 24/min = one per 2.5 s, burst 1: Retry-After 3, never 2.
        let slow = DirectLimiter::new(
            LimiterKind::PerDepartment,
            &Rate::per_minute(nz(24), nz(1)),
            clock.clone(),
        );
        slow.check().unwrap();
        let err = slow.check().unwrap_err();
        assert_eq!(err.wait(), Duration::from_millis(2500));
        assert_eq!(err.retry_after_secs(), 3);
        assert!(matches!(err, RateLimited::PerDepartment(_)));
    }

    #[test]
    fn hundred_thousand_keys_are_forgotten_after_maintenance() {
        let clock = FakeRelativeClock::default();
        let lim = KeyedLimiter::<u64, _>::new(
            LimiterKind::PerClient,
            &Rate::per_second(nz(10), nz(20)),
            clock.clone(),
        );
        for k in 0..100_000u64 {
            lim.check(&k).unwrap();
        }
        assert_eq!(lim.len(), 100_000);
        lim.maintain();
        assert_eq!(lim.len(), 100_000, "fresh states are kept");
        clock.advance(Duration::from_secs(3));
        lim.check(&7).unwrap();
        lim.maintain();
        assert_eq!(lim.len(), 1, "only the recently used key stays");
    }

    #[test]
    fn failed_auth_blocks_after_budget_and_unblocks_after_wait() {
        let clock = FakeRelativeClock::default();
        // 30/min, burst 30: one failure per 2 s replenished.
        let lim = AuthFailureLimiter::new(&Rate::per_minute(nz(30), nz(30)), clock.clone());
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..29 {
            assert!(lim.ip_blocked(ip).is_ok());
            assert!(lim.record_failure(ip).is_ok());
        }
        assert!(lim.ip_blocked(ip).is_ok());
        // The 30th failure uses the budget up: blocked from now on.
        let err = lim.record_failure(ip).unwrap_err();
        assert_eq!(err.limiter(), LimiterKind::PerIpAuthFailures);
        let err = lim.ip_blocked(ip).unwrap_err();
        assert!(matches!(err, RateLimited::PerIpAuthFailures(_)));
        assert_eq!(err.retry_after_secs(), 2);
        // Another address is not affected.
        assert!(lim.ip_blocked("203.0.113.8".parse().unwrap()).is_ok());
        clock.advance(Duration::from_secs(2));
        assert!(lim.ip_blocked(ip).is_ok());
        // One more failure allowed, then blocked again.
        assert!(lim.record_failure(ip).is_err());
        assert!(lim.ip_blocked(ip).is_err());
    }

    #[test]
    fn honest_callers_behind_one_address_are_never_blocked() {
        let clock = FakeRelativeClock::default();
        let lim = AuthFailureLimiter::new(&Rate::per_minute(nz(30), nz(30)), clock.clone());
        let nat: IpAddr = "198.51.100.1".parse().unwrap();
        // A million checks from valid-token callers behind one NAT address,
        // plus an occasional typo (one failure a minute): never blocked.
        for minute in 0..10 {
            for _ in 0..100_000 {
                assert!(lim.ip_blocked(nat).is_ok(), "blocked in minute {minute}");
            }
            assert!(lim.record_failure(nat).is_ok());
            clock.advance(Duration::from_secs(60));
        }
    }

    #[test]
    fn failed_auth_memory_is_bounded() {
        let clock = FakeRelativeClock::default();
        let lim = AuthFailureLimiter::new(&Rate::per_minute(nz(2), nz(2)), clock.clone());
        for i in 0..100_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i));
            lim.record_failure(ip).unwrap();
            if i % 10 == 0 {
                assert!(lim.record_failure(ip).is_err(), "second failure blocks");
            }
        }
        assert!(lim.len() >= 100_000);
        clock.advance(Duration::from_secs(120));
        lim.maintain();
        assert_eq!(lim.len(), 0);
    }
}
