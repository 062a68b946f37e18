//! Issue "Protect the departments", end to end through the gateway: client
//! quotas, timeouts of hung and slow departments, the circuit breaker, the
//! bulkhead, retries, and the per-address limit on failed authentications.
//! (The limiter and breaker units are tested in src/protect.)

// Tests may unwrap (clippy.toml only covers #[test] fns, not helpers);
// `useless_format` is pre-existing in tests/common/mod.rs (CloseMidBody).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::useless_format)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{
    Answer, FULL, Fault, MockDept, World, assert_problem, get_on, market_supervision_mock,
};
use http::Method;
use tokio::time::Instant;

/// Small timeouts for market-supervision (its protect table in gateway.toml).
const SHORT_TIMEOUTS: (&str, &str) = (
    "connect_timeout_ms = 1000\nattempt_timeout_ms = 3000\ntotal_timeout_ms = 5000",
    "connect_timeout_ms = 200\nattempt_timeout_ms = 300\ntotal_timeout_ms = 700",
);

fn retry_after(a: &Answer) -> u64 {
    let v = a.header("retry-after").expect("Retry-After");
    let n: u64 = v
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After not an integer: {v}"));
    assert!(n >= 1, "Retry-After {n}");
    n
}

/// Polls `cond` every 10 ms until it holds, failing after 10 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// Hostile input: portal-readonly (5/s, burst 10) sends a quick burst: 429
// problem+json with Retry-After, RateLimit-Policy and RateLimit; successful
// answers carry RateLimit.
#[tokio::test]
async fn client_quota_answers_429_with_ratelimit_headers() {
    let w = World::demo().await;
    let t = w.token("portal-readonly", &[], None);
    let path = format!("/v1/datasets/business-licence/{FULL}");
    let mut ok = 0;
    let mut refused = None;
    for _ in 0..100 {
        let a = w.read(&path, &t).await;
        match a.status.as_u16() {
            200 => {
                ok += 1;
                assert!(a.header("ratelimit").is_some(), "{:?}", a.headers);
            }
            429 => {
                refused = Some(a);
                break;
            }
            s => panic!("unexpected {s}: {}", a.text()),
        }
    }
    let a = refused.expect("no 429 after 100 quick requests");
    assert!(ok >= 10, "the burst of 10 was not granted: {ok}");
    assert_problem(&a, 429);
    retry_after(&a);
    let policy = a.header("ratelimit-policy").expect("RateLimit-Policy");
    assert!(policy.contains("q=10"), "{policy}");
    assert!(a.header("ratelimit").is_some(), "{:?}", a.headers);
    // The catalog shares the client's quota.
    let c = w.send(Method::GET, "/v1/catalog", Some(&t), &[], "").await;
    assert_eq!(c.status, 429, "{}", c.text());
}

// Hostile input: a hung department (accepts, never answers) with small
// timeouts: 504 problem+json in bounded time, and other departments keep
// serving meanwhile.
#[tokio::test]
async fn hung_department_times_out_with_504_while_others_serve() {
    let ms = market_supervision_mock().await;
    ms.set_fault(Fault::Hang);
    let w = World::builder()
        .mock("market-supervision", ms)
        .gateway_replace(SHORT_TIMEOUTS.0, SHORT_TIMEOUTS.1)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let addr = w.plain();
    let (t2, path) = (t.clone(), format!("/v1/datasets/business-licence/{FULL}"));
    let hung = tokio::spawn(async move { get_on(addr, &path, &t2).await });
    wait_until("the hung call", || {
        w.mocks["market-supervision"].calls() > 0
    })
    .await;
    let other = w
        .read("/v1/datasets/household-registration/120116199203154527", &t)
        .await;
    assert_eq!(other.status, 200, "{}", other.text());
    let a = tokio::time::timeout(Duration::from_secs(10), hung)
        .await
        .expect("504 in bounded time")
        .unwrap();
    assert_problem(&a, 504);
    // Proxy calls time out the same way.
    let a = tokio::time::timeout(
        Duration::from_secs(10),
        w.read(&format!("/v1/proxy/market-supervision/licences/{FULL}"), &t),
    )
    .await
    .expect("504 in bounded time");
    assert_problem(&a, 504);
}

// Hostile input: a department that answers slowly, byte by byte, beyond the
// attempt timeout: 504, never a partial 200.
#[tokio::test]
async fn byte_by_byte_department_is_504_never_partial() {
    let ms = market_supervision_mock().await;
    ms.set_fault(Fault::Slow(Duration::from_millis(50)));
    let w = World::builder()
        .mock("market-supervision", ms)
        .gateway_replace(SHORT_TIMEOUTS.0, SHORT_TIMEOUTS.1)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    for path in [
        format!("/v1/datasets/business-licence/{FULL}"),
        format!("/v1/proxy/market-supervision/licences/{FULL}"),
    ] {
        let a = tokio::time::timeout(Duration::from_secs(10), w.read(&path, &t))
            .await
            .expect("answer in bounded time");
        assert_problem(&a, 504);
    }
    // The mock itself is sound: fast, the same read succeeds.
    w.mocks["market-supervision"].set_fault(Fault::None);
    let a = w
        .read(&format!("/v1/datasets/business-licence/{FULL}"), &t)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
}

// Hostile input: a department answering 500 thirty times in a row: the
// breaker opens (503 + Retry-After without calling it), other departments
// keep serving, /readyz shows it open; after it heals and the open period
// passes, a request succeeds and the breaker closes.
#[tokio::test]
async fn failing_department_opens_the_breaker_and_recovers() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healthy.clone();
    let ms = MockDept::start(move |_| {
        if h.load(std::sync::atomic::Ordering::SeqCst) {
            (200, "application/json".into(), r#"{"code":"0000"}"#.into())
        } else {
            (500, "application/json".into(), r#"{"code":"9999"}"#.into())
        }
    })
    .await;
    let w = World::builder()
        .mock("market-supervision", ms)
        .gateway_replace(
            "total_timeout_ms = 5000",
            "total_timeout_ms = 5000\nbreaker = { consecutive_failures = 30, min_calls = 1000, \
             open_secs = 2, max_open_secs = 4 }",
        )
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let ms = &w.mocks["market-supervision"];
    let path = format!("/v1/proxy/market-supervision/licences/{FULL}");
    let mut first_503 = None;
    for i in 0..40 {
        let a = w.read(&path, &t).await;
        match a.status.as_u16() {
            502 => assert_problem(&a, 502),
            503 => {
                first_503 = Some((i, a));
                break;
            }
            s => panic!("unexpected {s}: {}", a.text()),
        }
    }
    let (i, a) = first_503.expect("breaker never opened");
    assert_eq!(i, 30, "opened after {i} failures");
    assert_problem(&a, 503);
    retry_after(&a);
    let calls = ms.calls();
    assert_eq!(calls, 30);
    for _ in 0..3 {
        let a = w.read(&path, &t).await;
        assert_problem(&a, 503);
        retry_after(&a);
    }
    assert_eq!(
        ms.calls(),
        calls,
        "an open breaker still called the department"
    );
    // Other departments are not affected.
    let other = w
        .read("/v1/datasets/household-registration/120116199203154527", &t)
        .await;
    assert_eq!(other.status, 200, "{}", other.text());
    let r = w.send(Method::GET, "/readyz", None, &[], "").await;
    assert_eq!(
        r.json()["departments"]["market-supervision"]["breaker"],
        "open",
        "{}",
        r.text()
    );
    assert_eq!(
        r.json()["departments"]["public-security"]["breaker"],
        "closed",
        "{}",
        r.text()
    );

    // Heal; after the open period a probe goes through and closes the breaker.
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = w.read(&path, &t).await;
        if a.status == 200 {
            break;
        }
        assert_problem(&a, 503);
        assert!(Instant::now() < deadline, "breaker never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ms.calls(), calls + 1, "exactly one probe");
    let r = w.send(Method::GET, "/readyz", None, &[], "").await;
    assert_eq!(
        r.json()["departments"]["market-supervision"]["breaker"],
        "closed",
        "{}",
        r.text()
    );
    let a = w.read(&path, &t).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

// Hostile input: a concurrent second call to a department whose bulkhead is
// full (max_in_flight = 1, max_queue = 0): 503 with Retry-After at once.
#[tokio::test]
async fn full_bulkhead_refuses_at_once_with_503() {
    let ms = market_supervision_mock().await;
    // Shorter than the department's attempt timeout (3 s).
    ms.set_delay(Duration::from_secs(2));
    let w = World::builder()
        .mock("market-supervision", ms)
        .gateway_replace(
            "max_in_flight = 512\nmax_queue = 2048",
            "max_in_flight = 1\nmax_queue = 0",
        )
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let ms = &w.mocks["market-supervision"];
    let addr = w.plain();
    let path = format!("/v1/proxy/market-supervision/licences/{FULL}");
    let (t2, p2) = (t.clone(), path.clone());
    let first = tokio::spawn(async move { get_on(addr, &p2, &t2).await });
    wait_until("the first call", || ms.calls() == 1).await;
    let a = w.read(&path, &t).await;
    assert_problem(&a, 503);
    retry_after(&a);
    assert!(
        !first.is_finished(),
        "the second call waited for the first instead of being refused"
    );
    assert_eq!(ms.calls(), 1);
    let a = first.await.unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
}

/// A market-supervision mock whose first request is reset; later ones are answered.
async fn reset_once_mock() -> MockDept {
    let cell: Arc<Mutex<Option<Arc<Mutex<Fault>>>>> = Arc::default();
    let c = cell.clone();
    let m = MockDept::start(move |seen| {
        // The fault of this request is already chosen; heal the next one.
        if let Some(f) = c.lock().unwrap().as_ref() {
            *f.lock().unwrap() = Fault::None;
        }
        let uscc = seen.target.split('?').next().unwrap_or_default();
        let uscc = uscc.rsplit('/').next().unwrap_or_default();
        let body = serde_json::json!({"code": "0000", "data": {
            "tyshxydm": uscc, "qymc": "滨海面馆有限公司", "fddbr": "李伟",
            "yxqz": "2046-03-01", "djzt": "存续"}});
        (200, "application/json".into(), body.to_string())
    })
    .await;
    *cell.lock().unwrap() = Some(m.fault.clone());
    m.set_fault(Fault::Reset);
    m
}

// Hostile input: a department that resets once: an idempotent GET is retried
// and succeeds; a POST pass-through is never retried.
#[tokio::test]
async fn get_is_retried_after_a_reset_and_post_is_not() {
    let w = World::builder()
        .mock("market-supervision", reset_once_mock().await)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let ms = &w.mocks["market-supervision"];
    let a = w
        .read(&format!("/v1/datasets/business-licence/{FULL}"), &t)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(ms.calls(), 2, "one reset, one retry");

    let a = w
        .read(&format!("/v1/proxy/market-supervision/licences/{FULL}"), &t)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(ms.calls(), 3);

    // POST: the department may have acted on it; never sent twice.
    ms.set_fault(Fault::Reset);
    let before = ms.calls();
    let a = w
        .send(
            Method::POST,
            "/v1/proxy/market-supervision/filings",
            Some(&t),
            &[
                ("x-purpose", "service-handling"),
                ("content-type", "application/json"),
            ],
            Bytes::from_static(b"{\"filing\":1}"),
        )
        .await;
    assert_problem(&a, 502);
    assert_eq!(ms.calls(), before + 1, "a POST was retried");
    assert_eq!(ms.last().unwrap().method, "POST");
}

// Hostile input: a flood of bad tokens from one address: after the configured
// number of failures the address gets 429 before any verification.
#[tokio::test]
async fn failed_authentications_per_address_are_limited() {
    let w = World::builder()
        .gateway_replace(
            "failed_auth_per_ip = { per_minute = 60, burst = 60 }",
            "failed_auth_per_ip = { per_minute = 5, burst = 5 }",
        )
        .start()
        .await;
    let good = w.token("portal-binhai", &[], None);
    // An honest caller's token, verified (and cached) before the flood.
    let a = w
        .send(Method::GET, "/v1/catalog", Some(&good), &[], "")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());

    let mut unauthorised = 0;
    let mut limited = None;
    for i in 0..20 {
        let bad = format!("{good}x{i}");
        let a = w
            .send(Method::GET, "/v1/catalog", Some(&bad), &[], "")
            .await;
        match a.status.as_u16() {
            401 => {
                unauthorised += 1;
                assert!(a.header("www-authenticate").is_some());
            }
            429 => {
                limited = Some(a);
                break;
            }
            s => panic!("unexpected {s}: {}", a.text()),
        }
    }
    let a = limited.expect("no 429 after 20 bad tokens");
    assert_eq!(unauthorised, 5, "401s before the address was limited");
    assert_problem(&a, 429);
    retry_after(&a);
    // Further bad tokens are refused without verification.
    for _ in 0..3 {
        let a = w
            .send(Method::GET, "/v1/catalog", Some("not-a-token"), &[], "")
            .await;
        assert_problem(&a, 429);
    }
}

// Hostile input: a flood of bad tokens from an address shared with honest
// callers (DESIGN: "honest callers behind one address are not throttled"):
// a token already verified (in the verified-token cache) keeps working.
#[tokio::test]
async fn honest_caller_with_a_verified_token_is_not_locked_out() {
    let w = World::builder()
        .gateway_replace(
            "failed_auth_per_ip = { per_minute = 60, burst = 60 }",
            "failed_auth_per_ip = { per_minute = 5, burst = 5 }",
        )
        .start()
        .await;
    let good = w.token("portal-binhai", &[], None);
    let a = w
        .send(Method::GET, "/v1/catalog", Some(&good), &[], "")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let mut limited = false;
    for _ in 0..20 {
        let a = w
            .send(Method::GET, "/v1/catalog", Some("not-a-token"), &[], "")
            .await;
        if a.status == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the flood was never limited");
    let a = w
        .send(Method::GET, "/v1/catalog", Some(&good), &[], "")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
}
