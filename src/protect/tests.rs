//! Facade and configuration tests.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use http::HeaderMap;
use http::header::RETRY_AFTER;
use serde::Deserialize;

use super::*;
use crate::config::parse_toml;

/// The shape gateway.toml embeds: `[rate_limits]` and `[departments.NAME.protect]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gateway {
    #[serde(default)]
    rate_limits: RawRateLimits,
    #[serde(default)]
    departments: BTreeMap<String, Dept>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dept {
    #[serde(default)]
    protect: RawDepartmentProtection,
}

const GATEWAY: &str = r#"
[rate_limits]
default_client = { per_second = 50, burst = 100 }
failed_auth_per_ip = { per_minute = 30, burst = 30 }
[rate_limits.clients.portal-readonly]
per_second = 5
burst = 10
[rate_limits.clients.portal-binhai]
per_second = 100000
burst = 100000

[departments.market-supervision.protect]
rate = { per_second = 100000, burst = 100000 }
per_client = { per_second = 1000, burst = 2000 }
max_in_flight = 256
max_queue = 1024
queue_timeout_ms = 1000
connect_timeout_ms = 1000
attempt_timeout_ms = 5000
total_timeout_ms = 8000
max_attempts = 2
breaker = { consecutive_failures = 20, failure_ratio = 0.5, window_secs = 30, min_calls = 20, open_secs = 10 }
retry_budget = { ratio = 0.2, reserve = 10 }
backoff = { base_ms = 50, max_ms = 1000 }

[departments.fire-rescue.protect]
per_client = { per_second = 2, burst = 3 }
rate = { per_second = 4, burst = 4 }

[departments.health-commission]
"#;

fn file() -> &'static Path {
    Path::new("config/gateway.toml")
}

struct World {
    protection: Protection<FakeRelativeClock>,
    clock: FakeRelativeClock,
}

fn world(text: &str) -> World {
    let g: Gateway = parse_toml(file(), text).unwrap();
    let limits = RateLimitSettings::from_raw(&g.rate_limits, file(), "rate_limits").unwrap();
    let depts: Vec<(String, DepartmentProtection)> = g
        .departments
        .iter()
        .map(|(name, d)| {
            let prefix = format!("departments.{name}.protect");
            (
                name.clone(),
                DepartmentProtection::from_raw(&d.protect, file(), &prefix).unwrap(),
            )
        })
        .collect();
    let clock = FakeRelativeClock::default();
    let protection = Protection::with_clock(
        &limits,
        depts.iter().map(|(n, d)| (n.as_str(), d)),
        clock.clone(),
        Arc::new(ThreadRandom),
    );
    World { protection, clock }
}

fn errors_of(text: &str) -> Vec<(String, String)> {
    let g: Gateway = parse_toml(file(), text).unwrap();
    let mut out = Vec::new();
    if let Err(e) = RateLimitSettings::from_raw(&g.rate_limits, file(), "rate_limits") {
        out.extend(e.0.into_iter().map(|e| (e.field.clone(), e.to_string())));
    }
    for (name, d) in &g.departments {
        let prefix = format!("departments.{name}.protect");
        if let Err(e) = DepartmentProtection::from_raw(&d.protect, file(), &prefix) {
            out.extend(e.0.into_iter().map(|e| (e.field.clone(), e.to_string())));
        }
    }
    out
}

#[test]
fn shipped_shape_parses_into_the_model() {
    let g: Gateway = parse_toml(file(), GATEWAY).unwrap();
    let limits = RateLimitSettings::from_raw(&g.rate_limits, file(), "rate_limits").unwrap();
    assert_eq!(limits.default_client.burst(), 100);
    assert_eq!(limits.default_client.interval(), Duration::from_millis(20));
    assert_eq!(limits.failed_auth_per_ip.interval(), Duration::from_secs(2));
    assert_eq!(limits.clients["portal-readonly"].burst(), 10);
    let ms = DepartmentProtection::from_raw(
        &g.departments["market-supervision"].protect,
        file(),
        "departments.market-supervision.protect",
    )
    .unwrap();
    assert_eq!(ms.bulkhead.max_in_flight.get(), 256);
    assert_eq!(ms.bulkhead.max_queue, 1024);
    assert_eq!(ms.timeouts.total, Duration::from_secs(8));
    assert_eq!(ms.retry.max_attempts, 2);
    assert_eq!(ms.breaker.open, Duration::from_secs(10));
    assert_eq!(ms.breaker.max_open, Duration::from_secs(60));
    // An empty table gets every default.
    let hc = DepartmentProtection::from_raw(
        &g.departments["health-commission"].protect,
        file(),
        "departments.health-commission.protect",
    )
    .unwrap();
    assert_eq!(hc, DepartmentProtection::default());
    let empty = RateLimitSettings::from_raw(&RawRateLimits::default(), file(), "rate_limits");
    assert_eq!(empty.unwrap(), RateLimitSettings::default());
}

#[test]
fn unknown_keys_are_refused() {
    let err =
        parse_toml::<Gateway>(file(), "[departments.x.protect]\nmax_inflight = 3\n").unwrap_err();
    assert_eq!(err.field, "max_inflight");
    let err = parse_toml::<Gateway>(
        file(),
        "[rate_limits]\ndefault_client = { per_second = 5, brust = 3 }\n",
    )
    .unwrap_err();
    assert_eq!(err.field, "brust");
}

#[test]
fn nonsense_is_refused_naming_file_field_and_fix() {
    let errs = errors_of(
        r#"
[rate_limits]
default_client = { per_second = 0 }
failed_auth_per_ip = { per_minute = 30, per_second = 1 }
[rate_limits.clients.a]
burst = 3
[rate_limits.clients.b]
per_second = 3
burst = 0
[departments.x.protect]
rate = { per_second = 0, burst = 5 }
max_in_flight = 0
attempt_timeout_ms = 9000
total_timeout_ms = 8000
queue_timeout_ms = 0
max_attempts = 9
breaker = { failure_ratio = 1.5, window_secs = 0, min_calls = 0, open_secs = 0, consecutive_failures = 0 }
retry_budget = { ratio = -0.1 }
backoff = { base_ms = 2000, max_ms = 1000 }
[departments.y.protect]
breaker = { failure_ratio = 0.0, open_secs = 30, max_open_secs = 10 }
connect_timeout_ms = 6000
"#,
    );
    let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
    for expected in [
        "rate_limits.default_client.per_second",
        "rate_limits.failed_auth_per_ip",
        "rate_limits.clients.a",
        "rate_limits.clients.b.burst",
        "departments.x.protect.rate.per_second",
        "departments.x.protect.max_in_flight",
        "departments.x.protect.attempt_timeout_ms",
        "departments.x.protect.queue_timeout_ms",
        "departments.x.protect.max_attempts",
        "departments.x.protect.breaker.failure_ratio",
        "departments.x.protect.breaker.window_secs",
        "departments.x.protect.breaker.min_calls",
        "departments.x.protect.breaker.open_secs",
        "departments.x.protect.breaker.consecutive_failures",
        "departments.x.protect.retry_budget.ratio",
        "departments.x.protect.backoff.base_ms",
        "departments.y.protect.breaker.failure_ratio",
        "departments.y.protect.breaker.max_open_secs",
        "departments.y.protect.connect_timeout_ms",
    ] {
        assert!(
            fields.contains(&expected),
            "missing {expected} in {fields:#?}"
        );
    }
    for (_, msg) in &errs {
        assert!(msg.starts_with("config/gateway.toml: field `"), "{msg}");
        assert!(msg.contains("; fix: "), "{msg}");
    }
}

#[test]
fn client_with_own_quota_is_refused_beyond_its_burst() {
    let w = world(GATEWAY);
    for _ in 0..10 {
        w.protection.check_client("portal-readonly", None).unwrap();
    }
    let err = w
        .protection
        .check_client("portal-readonly", None)
        .unwrap_err();
    assert!(matches!(err, RateLimited::PerClient(_)));
    assert_eq!(err.wait(), Duration::from_millis(200));
    let mut h = HeaderMap::new();
    err.apply_headers(&mut h);
    assert_eq!(h[RETRY_AFTER], "1");
    assert_eq!(h[RATELIMIT_POLICY], "\"per-client\";q=10;w=2");
    assert_eq!(h[RATELIMIT], "\"per-client\";r=0;t=1");
    // Another client is unaffected.
    assert!(w.protection.check_client("portal-binhai", None).is_ok());
    w.clock.advance(Duration::from_millis(200));
    assert!(w.protection.check_client("portal-readonly", None).is_ok());
}

#[test]
fn department_limits_apply_per_client_and_per_department() {
    let w = world(GATEWAY);
    let p = &w.protection;
    // fire-rescue: client x department 2/s burst 3, department 4/s burst 4.
    for i in 0..3 {
        let s = p
            .check_client("portal-binhai", Some("fire-rescue"))
            .unwrap();
        assert_eq!(s.per_client_department.unwrap().remaining, 2 - i);
    }
    let err = p
        .check_client("portal-binhai", Some("fire-rescue"))
        .unwrap_err();
    assert!(matches!(err, RateLimited::PerClientDepartment(_)));
    assert_eq!(err.retry_after_secs(), 1);
    // Other departments are unaffected for the same client.
    assert!(
        p.check_client("portal-binhai", Some("market-supervision"))
            .is_ok()
    );
    // A second client gets its own client x department bucket, but the
    // department's own quota (4) runs out after one more request.
    let s = p.check_client("someone-else", Some("fire-rescue")).unwrap();
    assert_eq!(s.per_department.unwrap().remaining, 0);
    let err = p
        .check_client("someone-else", Some("fire-rescue"))
        .unwrap_err();
    assert!(matches!(err, RateLimited::PerDepartment(_)));
    let mut h = HeaderMap::new();
    err.apply_headers(&mut h);
    assert_eq!(h[RATELIMIT_POLICY], "\"per-department\";q=4;w=1");
}

#[test]
fn success_state_renders_client_policies_with_remaining() {
    let w = world(GATEWAY);
    let s = w
        .protection
        .check_client("portal-any", Some("market-supervision"))
        .unwrap();
    let mut h = HeaderMap::new();
    s.apply_headers(&mut h);
    assert_eq!(
        h[RATELIMIT_POLICY],
        "\"per-client\";q=100;w=2, \"per-client-department\";q=2000;w=2"
    );
    assert_eq!(
        h[RATELIMIT],
        "\"per-client\";r=99;t=1, \"per-client-department\";r=1999;t=1"
    );
    // Remaining never goes negative, even when hammered past the limit.
    for _ in 0..500 {
        if let Ok(s) = w.protection.check_client("portal-any", None) {
            assert!(s.per_client.remaining < 100);
        }
    }
}

#[test]
fn failed_auth_facade_blocks_only_the_failing_address() {
    let w = world(GATEWAY);
    let p = &w.protection;
    let bad: IpAddr = "192.0.2.66".parse().unwrap();
    let good: IpAddr = "192.0.2.1".parse().unwrap();
    for _ in 0..29 {
        p.ip_blocked(bad).unwrap();
        p.record_auth_failure(bad).unwrap();
    }
    assert!(p.record_auth_failure(bad).is_err());
    let err = p.ip_blocked(bad).unwrap_err();
    assert!(matches!(err, RateLimited::PerIpAuthFailures(_)));
    let mut h = HeaderMap::new();
    err.apply_headers(&mut h);
    assert_eq!(h[RATELIMIT_POLICY], "\"per-ip-auth-failures\";q=30;w=60");
    assert_eq!(h[RETRY_AFTER], "2");
    assert!(p.ip_blocked(good).is_ok());
}

#[test]
fn maintenance_bounds_memory_of_keyed_limiters() {
    let w = world(GATEWAY);
    let p = &w.protection;
    for i in 0..100_000 {
        let client = format!("client-{i}");
        p.check_client(&client, Some("market-supervision")).unwrap();
    }
    assert_eq!(p.tracked_keys(), 200_000);
    p.maintain();
    assert_eq!(p.tracked_keys(), 200_000, "nothing is idle yet");
    w.clock.advance(Duration::from_secs(5));
    p.maintain();
    assert_eq!(p.tracked_keys(), 0);
}

#[test]
fn department_guard_exposes_its_parts() {
    let w = world(GATEWAY);
    let g = w.protection.department("market-supervision").unwrap();
    assert_eq!(g.name(), "market-supervision");
    assert_eq!(g.bulkhead().max_in_flight(), 256);
    assert_eq!(g.timeouts().attempt, Duration::from_secs(5));
    assert_eq!(g.retry().max_attempts(), 2);
    assert_eq!(g.breaker().state(), BreakerState::Closed);
    assert!(w.protection.department("nope").is_none());
    assert_eq!(w.protection.departments().count(), 3);
}

#[test]
fn one_open_breaker_leaves_other_departments_alone() {
    let w = world(GATEWAY);
    let ms = w.protection.department("market-supervision").unwrap();
    let fr = w.protection.department("fire-rescue").unwrap();
    for _ in 0..30 {
        if let Ok(permit) = ms.breaker().try_acquire() {
            permit.failure();
        }
    }
    let err = ms.breaker().try_acquire().unwrap_err();
    let mut h = HeaderMap::new();
    ProtectError::from(err).apply_headers(&mut h);
    assert_eq!(h[RETRY_AFTER], "10");
    fr.breaker().try_acquire().unwrap().success();
    assert_eq!(fr.breaker().state(), BreakerState::Closed);
}
