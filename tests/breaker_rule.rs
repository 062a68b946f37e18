//! Issue "Hardening", first finding: breakers trip on department failures
//! only. A not-found by the adapter's rule (the fire-rescue SOAP "no record"
//! fault arrives as HTTP 500), any 4xx and a caller's bad input never count;
//! pass-through (proxy) traffic has its own breaker, so a flood of proxy 5xx
//! cannot cut off dataset reads. Real department 5xx and timeouts still open
//! the breaker.

// Tests may unwrap (clippy.toml only covers #[test] fns, not helpers);
// `useless_format` is pre-existing in tests/common/mod.rs (CloseMidBody).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::useless_format)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use common::{Answer, FULL, Fault, MockDept, NO_FIRE, World, assert_problem};
use http::Method;

/// A small breaker for market-supervision: 5 failures in a row open it.
const SMALL_BREAKER: (&str, &str) = (
    "total_timeout_ms = 5000",
    "total_timeout_ms = 5000\nbreaker = { consecutive_failures = 5, min_calls = 1000, \
     open_secs = 60, max_open_secs = 120 }",
);

async fn readyz(w: &World) -> serde_json::Value {
    let r = w.send(Method::GET, "/readyz", None, &[], "").await;
    r.json()
}

/// A licence record as market supervision sends it.
fn licence(uscc: &str) -> String {
    serde_json::json!({"code": "0000", "data": {
        "tyshxydm": uscc, "qymc": "滨海面馆有限公司", "fddbr": "李伟",
        "yxqz": "2046-03-01", "djzt": "存续"}})
    .to_string()
}

/// Market supervision whose dataset API (`/api/v2/...`) answers
/// `dataset_status` (200 with a record, or that status), and whose every
/// other path (what the proxy reaches) answers 500.
async fn split_mock(dataset_status: Arc<AtomicU16>) -> MockDept {
    MockDept::start(move |seen| {
        let path = seen.target.split('?').next().unwrap_or_default();
        if let Some(uscc) = path.strip_prefix("/api/v2/licences/") {
            match dataset_status.load(Ordering::SeqCst) {
                200 => (200, "application/json".into(), licence(uscc)),
                s => (s, "application/json".into(), r#"{"code":"9999"}"#.into()),
            }
        } else {
            (500, "application/json".into(), r#"{"code":"9999"}"#.into())
        }
    })
    .await
}

// Hostile input: 40 reads of fire-safety-inspection for a company with no
// inspection yet (the department's SOAP "NO_RECORD" fault, HTTP 500): each is
// 404, and the next read for another company is 200, not 503. Before, every
// upstream 5xx counted before the adapter had decided it means "not found",
// and the 21st read opened the breaker for every client.
#[tokio::test]
async fn not_found_soap_faults_never_open_the_breaker() {
    let w = World::demo().await;
    let t = w.token("portal-binhai", &[], None);
    for i in 0..40 {
        let a = w
            .read(
                &format!("/v1/datasets/fire-safety-inspection/{NO_FIRE}"),
                &t,
            )
            .await;
        assert_eq!(a.status, 404, "read {i}: {}", a.text());
        assert_problem(&a, 404);
    }
    let a = w
        .read(&format!("/v1/datasets/fire-safety-inspection/{FULL}"), &t)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = readyz(&w).await;
    assert_eq!(r["departments"]["fire-rescue"]["breaker"], "closed", "{r}");
}

// Hostile input: a department that answers 4xx to dataset reads (it refuses
// the gateway's request; the adapter maps it to 502) is up and talking: 4xx
// never count, however many.
#[tokio::test]
async fn department_4xx_never_opens_the_breaker() {
    let status = Arc::new(AtomicU16::new(400));
    let w = World::builder()
        .mock("market-supervision", split_mock(status.clone()).await)
        .gateway_replace(SMALL_BREAKER.0, SMALL_BREAKER.1)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let path = format!("/v1/datasets/business-licence/{FULL}");
    for s in [400, 403, 429] {
        status.store(s, Ordering::SeqCst);
        for _ in 0..10 {
            let a = w.read(&path, &t).await;
            assert_problem(&a, 502);
        }
    }
    status.store(200, Ordering::SeqCst);
    let a = w.read(&path, &t).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

// Hostile input: a flood of pass-through calls that the department answers
// with 500 opens the proxy breaker only; dataset reads of the same
// department keep being answered, and /readyz shows each breaker.
#[tokio::test]
async fn proxy_5xx_flood_does_not_open_the_dataset_breaker() {
    let w = World::builder()
        .mock(
            "market-supervision",
            split_mock(Arc::new(AtomicU16::new(200))).await,
        )
        .gateway_replace(SMALL_BREAKER.0, SMALL_BREAKER.1)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let ms = &w.mocks["market-supervision"];
    let proxy = format!("/v1/proxy/market-supervision/anything/{FULL}");
    let answers: Vec<Answer> = {
        let mut v = Vec::new();
        for _ in 0..20 {
            v.push(w.read(&proxy, &t).await);
        }
        v
    };
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(&statuses[..5], &[502; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 503), "{statuses:?}");
    assert_eq!(ms.calls(), 5, "the open proxy breaker still called");

    let a = w
        .read(&format!("/v1/datasets/business-licence/{FULL}"), &t)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(ms.calls(), 6);
    let r = readyz(&w).await;
    let d = &r["departments"]["market-supervision"];
    assert_eq!(d["breakers"]["proxy"], "open", "{r}");
    assert_eq!(d["breakers"]["dataset"], "closed", "{r}");
    assert_eq!(d["breaker"], "open", "the summary shows the worse: {r}");
}

// Hostile input: real department failures still protect it: dataset reads
// answered 500 (not the adapter's not-found) open the dataset breaker, and
// then it answers 503 without calling the department; pass-through calls
// are not refused by it.
#[tokio::test]
async fn department_5xx_still_opens_the_dataset_breaker() {
    let status = Arc::new(AtomicU16::new(500));
    let w = World::builder()
        .mock("market-supervision", split_mock(status.clone()).await)
        .gateway_replace(SMALL_BREAKER.0, SMALL_BREAKER.1)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let ms = &w.mocks["market-supervision"];
    let path = format!("/v1/datasets/business-licence/{FULL}");
    for _ in 0..5 {
        let a = w.read(&path, &t).await;
        assert_problem(&a, 502);
    }
    let calls = ms.calls();
    assert_eq!(calls, 5, "a 500 is not retried");
    for _ in 0..3 {
        let a = w.read(&path, &t).await;
        assert_problem(&a, 503);
        assert!(a.header("retry-after").is_some());
    }
    assert_eq!(ms.calls(), calls, "an open breaker still called");
    // The proxy breaker is its own: the pass-through call reaches the
    // department (which answers 500 there).
    let a = w
        .read(&format!("/v1/proxy/market-supervision/x/{FULL}"), &t)
        .await;
    assert_problem(&a, 502);
    assert_eq!(ms.calls(), calls + 1);
}

// Hostile input: a department that hangs on dataset reads: timeouts count,
// and the dataset breaker opens (503 at once, department no longer called).
#[tokio::test]
async fn department_timeouts_still_open_the_dataset_breaker() {
    let ms = split_mock(Arc::new(AtomicU16::new(200))).await;
    ms.set_fault(Fault::Hang);
    let w = World::builder()
        .mock("market-supervision", ms)
        .gateway_replace(
            "connect_timeout_ms = 1000\nattempt_timeout_ms = 3000\ntotal_timeout_ms = 5000",
            "connect_timeout_ms = 100\nattempt_timeout_ms = 150\ntotal_timeout_ms = 400\n\
             max_attempts = 1\nbreaker = { consecutive_failures = 3, min_calls = 1000, \
             open_secs = 60, max_open_secs = 120 }",
        )
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let ms = &w.mocks["market-supervision"];
    let path = format!("/v1/datasets/business-licence/{FULL}");
    for _ in 0..3 {
        let a = tokio::time::timeout(Duration::from_secs(10), w.read(&path, &t))
            .await
            .expect("answer in bounded time");
        assert_problem(&a, 504);
    }
    let calls = ms.calls();
    let a = w.read(&path, &t).await;
    assert_problem(&a, 503);
    assert_eq!(ms.calls(), calls, "an open breaker still called");
}

// Hostile input: a department reply larger than `limits.max_reply_bytes`
// (the one reply cap, for dataset reads and pass-through alike) is 502,
// never a partial answer.
#[tokio::test]
async fn one_reply_cap_for_dataset_and_proxy() {
    let big = "x".repeat(4096);
    let ms = MockDept::start(move |seen| {
        let uscc = seen.target.split('?').next().unwrap_or_default();
        let uscc = uscc.rsplit('/').next().unwrap_or_default();
        let body = serde_json::json!({"code": "0000", "data": {
            "tyshxydm": uscc, "qymc": big, "fddbr": "李伟",
            "yxqz": "2046-03-01", "djzt": "存续"}});
        (200, "application/json".into(), body.to_string())
    })
    .await;
    let w = World::builder()
        .mock("market-supervision", ms)
        .gateway_replace("max_reply_bytes = 4194304", "max_reply_bytes = 1024")
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    for path in [
        format!("/v1/datasets/business-licence/{FULL}"),
        format!("/v1/proxy/market-supervision/licences/{FULL}"),
    ] {
        let a = w.read(&path, &t).await;
        assert_problem(&a, 502);
        assert!(!a.text().contains("xxxx"), "{}", a.text());
    }
}
