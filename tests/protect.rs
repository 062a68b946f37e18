//! Issue "Protect the departments", end to end through the gateway: client
//! quotas, timeouts of hung and slow departments, the circuit breaker, the
//! bulkhead, retries, and the per-address limit on failed authentications.
//! (The limiter and breaker units are tested in src/protect.)
//!
//! The flows run in memory (tests/common/mem.rs) on tokio's paused clock:
//! timeouts, breaker cool-downs and backoffs take no real time. One test
//! keeps real sockets for what only a socket shows (a body trickling in).

// Tests may unwrap (clippy.toml only covers #[test] fns, not helpers);
// `useless_format` is pre-existing in tests/common/mod.rs (CloseMidBody).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::useless_format)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::mem::{FakeDept, Mem, until};
use common::{Answer, FULL, Fault, World, assert_problem, market_supervision_mock};
use onewindow::error::UpstreamError;
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

/// A market-supervision department answering in its own dialect: every
/// request gets the business licence of the last path segment.
fn licence_body(path: &str) -> String {
    let uscc = path.rsplit('/').next().unwrap_or_default();
    serde_json::json!({"code": "0000", "data": {
        "tyshxydm": uscc, "qymc": "滨海面馆有限公司", "fddbr": "李伟",
        "yxqz": "2046-03-01", "djzt": "存续"}})
    .to_string()
}

// Hostile input: portal-readonly (5/s, burst 10) sends a quick burst: 429
// problem+json with Retry-After, RateLimit-Policy and RateLimit; successful
// answers carry RateLimit. The quota refills with (paused) time.
#[tokio::test(start_paused = true)]
async fn client_quota_answers_429_with_ratelimit_headers() {
    let w = Mem::demo().await;
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
    assert_eq!(ok, 10, "exactly the burst of 10 is granted at once");
    assert_problem(&a, 429);
    retry_after(&a);
    let policy = a.header("ratelimit-policy").expect("RateLimit-Policy");
    assert!(policy.contains("q=10"), "{policy}");
    assert!(a.header("ratelimit").is_some(), "{:?}", a.headers);
    // The catalog shares the client's quota.
    let c = w.get("/v1/catalog").token(&t).send().await;
    assert_eq!(c.status, 429, "{}", c.text());
    // 5 per second: a second later, five more and no more.
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut again = 0;
    while w.read(&path, &t).await.status == 200 {
        again += 1;
        assert!(again <= 10, "the quota did not hold after refilling");
    }
    assert_eq!(again, 5, "refill after one second");
}

// Hostile input: a hung department (accepts, never answers) with small
// timeouts: 504 problem+json after the total timeout, and other departments
// keep serving meanwhile.
#[tokio::test(start_paused = true)]
async fn hung_department_times_out_with_504_while_others_serve() {
    let ms = FakeDept::new("market-supervision", |g| Ok((200, licence_body(g.path()))));
    ms.hang();
    let w = Arc::new(
        Mem::builder()
            .dept("market-supervision", ms)
            .gateway_replace(SHORT_TIMEOUTS.0, SHORT_TIMEOUTS.1)
            .start()
            .await,
    );
    let t = w.token("portal-binhai", &[], None);
    let started = Instant::now();
    let hung = {
        let (w, t) = (w.clone(), t.clone());
        tokio::spawn(async move {
            let a = w
                .read(&format!("/v1/datasets/business-licence/{FULL}"), &t)
                .await;
            (a, started.elapsed())
        })
    };
    until("the hung call", || w.dept("market-supervision").calls() > 0).await;
    let other = w
        .read("/v1/datasets/household-registration/120116199203154527", &t)
        .await;
    assert_eq!(other.status, 200, "{}", other.text());
    let (a, took) = hung.await.unwrap();
    assert_problem(&a, 504);
    // Attempts of 300 ms with backoff, within the 700 ms total.
    assert!(
        took >= Duration::from_millis(300) && took <= Duration::from_millis(710),
        "{took:?}"
    );
    // Proxy calls time out the same way.
    let a = w
        .read(&format!("/v1/proxy/market-supervision/licences/{FULL}"), &t)
        .await;
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
// keep serving, /readyz shows it open; it stays open for exactly its open
// period, then one probe goes through and closes it.
#[tokio::test(start_paused = true)]
async fn failing_department_opens_the_breaker_and_recovers() {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let ms = FakeDept::new("market-supervision", move |_| {
        if h.load(Ordering::SeqCst) {
            Ok((200, r#"{"code":"0000"}"#.into()))
        } else {
            Ok((500, r#"{"code":"9999"}"#.into()))
        }
    });
    let w = Mem::builder()
        .dept("market-supervision", ms)
        .gateway_replace(
            "total_timeout_ms = 5000",
            "total_timeout_ms = 5000\nbreaker = { consecutive_failures = 30, min_calls = 1000, \
             open_secs = 2, max_open_secs = 4 }",
        )
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let ms = w.dept("market-supervision");
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
    let opened = Instant::now();
    let (i, a) = first_503.expect("breaker never opened");
    assert_eq!(i, 30, "opened after {i} failures");
    assert_problem(&a, 503);
    assert_eq!(retry_after(&a), 2, "Retry-After is the open period");
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
    let r = w.get("/readyz").send().await;
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

    // Healed, but the open period is not over: still refused, not called.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep_until(opened + Duration::from_millis(1900)).await;
    assert_problem(&w.read(&path, &t).await, 503);
    assert_eq!(ms.calls(), calls);
    // Past it: exactly one probe, which closes the breaker.
    tokio::time::sleep_until(opened + Duration::from_millis(2001)).await;
    let a = w.read(&path, &t).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(ms.calls(), calls + 1, "exactly one probe");
    let r = w.get("/readyz").send().await;
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
#[tokio::test(start_paused = true)]
async fn full_bulkhead_refuses_at_once_with_503() {
    let ms = FakeDept::new("market-supervision", |g| Ok((200, licence_body(g.path()))));
    // Shorter than the department's attempt timeout (3 s).
    ms.set_delay(Duration::from_secs(2));
    let w = Arc::new(
        Mem::builder()
            .dept("market-supervision", ms)
            .gateway_replace(
                "max_in_flight = 512\nmax_queue = 2048",
                "max_in_flight = 1\nmax_queue = 0",
            )
            .start()
            .await,
    );
    let t = w.token("portal-binhai", &[], None);
    let path = format!("/v1/proxy/market-supervision/licences/{FULL}");
    let started = Instant::now();
    let first = {
        let (w, t, path) = (w.clone(), t.clone(), path.clone());
        tokio::spawn(async move { w.read(&path, &t).await })
    };
    until("the first call", || {
        w.dept("market-supervision").calls() == 1
    })
    .await;
    let a = w.read(&path, &t).await;
    assert_problem(&a, 503);
    retry_after(&a);
    assert_eq!(started.elapsed(), Duration::ZERO, "refused at once");
    assert!(
        !first.is_finished(),
        "the second call waited for the first instead of being refused"
    );
    assert_eq!(w.dept("market-supervision").calls(), 1);
    let a = first.await.unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

// Hostile input: a department that breaks the connection once: an idempotent
// GET is retried and succeeds; a POST pass-through is never retried.
#[tokio::test(start_paused = true)]
async fn get_is_retried_after_a_reset_and_post_is_not() {
    let resets = Arc::new(AtomicUsize::new(1));
    let r = resets.clone();
    let ms = FakeDept::new("market-supervision", move |g| {
        if r.load(Ordering::SeqCst) > 0 {
            r.fetch_sub(1, Ordering::SeqCst);
            return Err(UpstreamError::Broken("connection reset by peer".into()));
        }
        Ok((200, licence_body(g.path())))
    });
    let w = Mem::builder().dept("market-supervision", ms).start().await;
    let t = w.token("portal-binhai", &[], None);
    let ms = w.dept("market-supervision");
    let a = w
        .read(&format!("/v1/datasets/business-licence/{FULL}"), &t)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(ms.calls(), 2, "one reset, one retry");

    resets.store(1, Ordering::SeqCst);
    let a = w
        .read(&format!("/v1/proxy/market-supervision/licences/{FULL}"), &t)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(ms.calls(), 4, "a proxied GET is retried too");

    // POST: the department may have acted on it; never sent twice.
    resets.store(1, Ordering::SeqCst);
    let before = ms.calls();
    let a = w
        .post("/v1/proxy/market-supervision/filings")
        .token(&t)
        .purpose("service-handling")
        .json(&serde_json::json!({"filing": 1}))
        .send()
        .await;
    assert_problem(&a, 502);
    assert_eq!(ms.calls(), before + 1, "a POST was retried");
    assert_eq!(ms.last().unwrap().method, "POST");
}

// Hostile input: a flood of bad tokens from one address: after the configured
// number of failures the address gets 429 before any verification; other
// addresses are not affected; the block lifts as the limit refills.
#[tokio::test(start_paused = true)]
async fn failed_authentications_per_address_are_limited() {
    let w = Mem::builder()
        .gateway_replace(
            "failed_auth_per_ip = { per_minute = 60, burst = 60 }",
            "failed_auth_per_ip = { per_minute = 5, burst = 5 }",
        )
        .start()
        .await;
    let good = w.token("portal-binhai", &[], None);
    // An honest caller's token, verified (and cached) before the flood.
    let a = w.get("/v1/catalog").token(&good).send().await;
    assert_eq!(a.status, 200, "{}", a.text());

    let mut unauthorised = 0;
    let mut limited = None;
    for i in 0..20 {
        let bad = format!("{good}x{i}");
        let a = w.get("/v1/catalog").token(&bad).send().await;
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
        let a = w.get("/v1/catalog").token("not-a-token").send().await;
        assert_problem(&a, 429);
    }
    // Another address is judged on its own.
    let a = w
        .get("/v1/catalog")
        .token("not-a-token")
        .from("10.0.0.7")
        .send()
        .await;
    assert_problem(&a, 401);
    // Five per minute: a minute later the address may try again.
    tokio::time::advance(Duration::from_secs(60)).await;
    let a = w.get("/v1/catalog").token("not-a-token").send().await;
    assert_problem(&a, 401);
}

// Hostile input: a flood of bad tokens from an address shared with honest
// callers ("honest callers behind one address are not throttled"): a token
// already verified (in the verified-token cache) keeps working.
#[tokio::test(start_paused = true)]
async fn honest_caller_with_a_verified_token_is_not_locked_out() {
    let w = Mem::builder()
        .gateway_replace(
            "failed_auth_per_ip = { per_minute = 60, burst = 60 }",
            "failed_auth_per_ip = { per_minute = 5, burst = 5 }",
        )
        .start()
        .await;
    let good = w.token("portal-binhai", &[], None);
    let a = w.get("/v1/catalog").token(&good).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let mut limited = false;
    for _ in 0..20 {
        let a = w.get("/v1/catalog").token("not-a-token").send().await;
        if a.status == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the flood was never limited");
    let a = w.get("/v1/catalog").token(&good).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
}
