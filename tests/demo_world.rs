//! The shipped demo world answers through the gateway: every dataset of the
//! demo subjects, both scenarios, the pass-through proxy and the catalog.

// Test helpers outside #[test] fns may panic: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FULL, NO_FIRE, REVOKED, World};
use http::Method;

#[tokio::test]
async fn every_demo_dataset_answers_in_canonical_form() {
    let w = World::demo().await;
    let t = w.token("portal-binhai", &[], None);
    for (path, field, value) in [
        (
            format!("/v1/datasets/business-licence/{FULL}"),
            "status",
            "active",
        ),
        (
            format!("/v1/datasets/business-licence/{REVOKED}"),
            "status",
            "revoked",
        ),
        (
            format!("/v1/datasets/food-business-permit/{FULL}"),
            "uscc",
            FULL,
        ),
        (
            format!("/v1/datasets/health-certificate/{FULL}"),
            "uscc",
            FULL,
        ),
        (
            format!("/v1/datasets/fire-safety-inspection/{FULL}"),
            "uscc",
            FULL,
        ),
        (
            "/v1/datasets/birth-medical-certificate/T120116202600001".to_string(),
            "gender",
            "female",
        ),
        (
            "/v1/datasets/household-registration/120116199203154527".to_string(),
            "household_no",
            "120116-2019-004512",
        ),
    ] {
        let a = w.read(&path, &t).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        let j = a.json();
        assert_eq!(j["record"][field], value, "{path}");
        assert!(j["source"]["fetched_at"].as_str().unwrap().ends_with('Z'));
        assert!(j["notice"].as_str().unwrap().contains("government service"));
        assert_eq!(a.header("cache-control"), Some("private, no-store"));
        assert!(a.header("x-request-id").is_some());
    }
    // The SOAP department's "no record" fault is a 404, not a 502.
    let a = w
        .read(
            &format!("/v1/datasets/fire-safety-inspection/{NO_FIRE}"),
            &t,
        )
        .await;
    assert_eq!(a.status, 404, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn second_read_of_a_licence_is_a_cache_hit() {
    let w = World::demo().await;
    let t = w.token("portal-binhai", &[], None);
    let path = format!("/v1/datasets/business-licence/{FULL}");
    let a = w.read(&path, &t).await;
    assert_eq!(a.header("x-cache"), Some("miss"));
    let b = w.read(&path, &t).await;
    assert_eq!(b.header("x-cache"), Some("hit"));
    assert_eq!(b.json()["source"]["cache"], "hit");
}

#[tokio::test]
async fn open_restaurant_supplies_the_inspection_later() {
    let w = World::demo().await;
    let t = w.token("portal-binhai", &[], None);
    let a = w
        .send(
            Method::POST,
            "/v1/scenarios/open-restaurant",
            Some(&t),
            &[("x-purpose", "service-handling")],
            format!(r#"{{"subjects":{{"uscc":"{NO_FIRE}"}}}}"#),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json();
    assert_eq!(j["complete"], false);
    assert_eq!(j["parts"]["fire-safety-inspection"]["status"], "missing");
    assert_eq!(j["parts"]["business-licence"]["status"], "ok");
    assert_eq!(j["parts"]["health-certificate"]["status"], "ok");
    assert_eq!(j["parts"]["food-business-permit"]["status"], "ok");

    let a = w
        .send(
            Method::POST,
            "/v1/scenarios/newborn",
            Some(&t),
            &[("x-purpose", "service-handling")],
            r#"{"subjects":{"birth_cert":"T120116202600001","guardian_id":"120116199203154527"}}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["complete"], true);
}

#[tokio::test]
async fn catalog_and_proxy_for_the_readonly_portal() {
    let w = World::demo().await;
    let t = w.token("portal-readonly", &[], None);
    let a = w.send(Method::GET, "/v1/catalog", Some(&t), &[], "").await;
    assert_eq!(a.status, 200);
    let j = a.json();
    let names: Vec<_> = j["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["business-licence"]);
    let a = w
        .read(&format!("/v1/proxy/market-supervision/licences/{FULL}"), &t)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("via"), Some("1.1 onewindow"));
    let a = w
        .read(
            &format!("/v1/proxy/market-supervision/api/v2/licences/{FULL}"),
            &t,
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text());
}
