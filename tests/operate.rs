//! Operating the gateway: metrics, trace context, readiness detail.

// Test helpers outside #[test] fns may panic: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FULL, MockDept, World};
use http::Method;

/// `/metrics` parses with a Prometheus text parser, carries the series the
/// operators need, and caller-supplied names never become label values.
#[tokio::test]
async fn metrics_parse_and_labels_stay_bounded() {
    let w = World::demo().await;
    let t = w.token("portal-binhai", &[], None);
    assert_eq!(
        w.read(&format!("/v1/datasets/business-licence/{FULL}"), &t)
            .await
            .status,
        200
    );
    w.read(&format!("/v1/datasets/business-licence/{FULL}"), &t)
        .await;
    // Hostile names: an unknown dataset and a random path.
    assert_eq!(
        w.read("/v1/datasets/zz-unknown-dataset-123/x1", &t)
            .await
            .status,
        404
    );
    assert_eq!(w.read("/v1/random-path-987", &t).await.status, 404);
    assert_eq!(w.read("/v1/proxy/no-such-dept-555/x", &t).await.status, 404);
    let m = w.send(Method::GET, "/metrics", None, &[], "").await;
    assert_eq!(m.status, 200);
    let text = m.text();
    for hostile in [
        "zz-unknown-dataset-123",
        "random-path-987",
        "no-such-dept-555",
    ] {
        assert!(!text.contains(hostile), "{hostile} became a label value");
    }
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("parses as Prometheus text");
    let names: std::collections::BTreeSet<_> =
        scrape.samples.iter().map(|s| s.metric.clone()).collect();
    for want in [
        "onewindow_requests_total",
        "onewindow_request_duration_seconds",
        "onewindow_department_call_duration_seconds",
        "onewindow_cache_lookups_total",
        "onewindow_breaker_state",
        "onewindow_bulkhead_in_flight",
        "onewindow_audit_queue_depth",
        "onewindow_audit_batches_total",
        "onewindow_audit_write_failures_total",
        "onewindow_token_cache_hits_total",
        "onewindow_token_cache_misses_total",
    ] {
        assert!(names.contains(want), "missing {want}; have {names:?}");
    }
    let hit = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "onewindow_cache_lookups_total" && s.labels.get("result") == Some("hit")
        })
        .expect("a cache hit was counted");
    let v = match hit.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("unexpected value {other:?}"),
    };
    assert!(v >= 1.0, "cache hits {v}");
}

/// A valid `traceparent` is propagated (same trace, the gateway as parent);
/// a malformed one is replaced, never forwarded.
#[tokio::test]
async fn traceparent_is_propagated_or_replaced() {
    let ms = MockDept::json(serde_json::json!({"code": "0000", "data": {
        "tyshxydm": FULL, "qymc": "x", "fddbr": "y", "yxqz": "2046-03-01", "djzt": "存续"}}))
    .await;
    let w = World::builder()
        .mock("market-supervision", ms)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let a = w
        .send(
            Method::GET,
            "/v1/proxy/market-supervision/licences/1",
            Some(&t),
            &[("x-purpose", "service-handling"), ("traceparent", good)],
            "",
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let seen = w.mocks["market-supervision"].last().unwrap();
    let tp = seen.header("traceparent").unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "the gateway is the new parent"
    );

    let bad = "00-4bf92f3577b34da6a3ce929d0e0e4736-zzzz-01";
    w.send(
        Method::GET,
        "/v1/proxy/market-supervision/licences/2",
        Some(&t),
        &[("x-purpose", "service-handling"), ("traceparent", bad)],
        "",
    )
    .await;
    let seen = w.mocks["market-supervision"].last().unwrap();
    let tp = seen.header("traceparent").unwrap();
    assert!(!tp.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{tp}");
    assert!(!tp.contains("zzzz"));
    assert_eq!(tp.len(), 55);
}

/// `/readyz` details config, audit and breakers, and is green when ready.
#[tokio::test]
async fn readyz_details() {
    let w = World::demo().await;
    let r = w.send(Method::GET, "/readyz", None, &[], "").await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["audit_writable"], true);
    assert_eq!(j["config_loaded"], true);
    assert_eq!(j["jwks_fresh"], true);
    assert_eq!(
        j["jwks"]["https://demo-issuer.onewindow.local"]["fresh"],
        true
    );
    assert_eq!(j["departments"]["fire-rescue"]["breaker"], "closed");
}
