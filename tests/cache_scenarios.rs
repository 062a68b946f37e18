//! Issue "Shared licence cache and one-thing scenarios": one department call
//! per shared record whoever asks, field filtering after the cache, revocation
//! pushes that win against loads in flight, stale-if-error only before an
//! invalidation, and scenarios that validate their subjects, survive a
//! department going down and never leak a part the client is not granted.

//!
//! Everything runs in memory (tests/common/mem.rs) on tokio's paused clock:
//! slow departments and TTLs take no real time.

// Tests may unwrap; `useless_format` is for the shared harness in tests/common.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::useless_format)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::mem::{FakeDept, Mem, until};
use common::{FULL, NO_FIRE};

/// A market-supervision business licence in the department's dialect.
fn licence_json(uscc: &str, name: &str, djzt: &str) -> String {
    serde_json::json!({"code": "0000", "data": {
        "tyshxydm": uscc, "qymc": name, "fddbr": "李海燕",
        "zs": "天津自贸试验区海滨八路56号", "clrq": "2026-03-02",
        "yxqz": "2046-03-01", "djzt": djzt
    }})
    .to_string()
}

/// Extra clients: two with different field grants on the licence, one with no
/// licence grant, one granted `open-restaurant` but not `health-certificate`.
const CLIENTS: &str = r#"
[clients.portal-names]
purposes = ["service-handling"]
[clients.portal-names.datasets.business-licence]
fields = ["uscc", "name"]

[clients.portal-status]
purposes = ["service-handling"]
[clients.portal-status.datasets.business-licence]
fields = ["uscc", "status", "valid_until"]

[clients.portal-permits]
purposes = ["service-handling"]
[clients.portal-permits.datasets.food-business-permit]
fields = ["*"]

[clients.portal-no-health]
purposes = ["service-handling"]
scenarios = ["open-restaurant"]
[clients.portal-no-health.datasets.business-licence]
fields = ["*"]
[clients.portal-no-health.datasets.food-business-permit]
fields = ["*"]
[clients.portal-no-health.datasets.fire-safety-inspection]
fields = ["*"]
"#;

fn licence_path(uscc: &str) -> String {
    format!("/v1/datasets/business-licence/{uscc}")
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

async fn invalidate(w: &Mem, subject: Option<&str>) {
    let t = w.token(
        "market-supervision-admin",
        &["department-admin"],
        Some("market-supervision"),
    );
    let body = match subject {
        Some(s) => serde_json::json!({"dataset": "business-licence", "subject": s}),
        None => serde_json::json!({"dataset": "business-licence"}),
    };
    let a = w
        .post("/admin/cache/invalidate")
        .token(&t)
        .json(&body)
        .send()
        .await;
    assert_eq!(a.status, 200, "invalidate: {}", a.text());
}

async fn scenario(w: &Mem, name: &str, token: &str, body: &str) -> common::Answer {
    w.post(&format!("/v1/scenarios/{name}"))
        .token(token)
        .purpose("service-handling")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
}

// Hostile input: two clients with different field grants read the same cached
// record; each must see only its own fields, and the department is called once.
#[tokio::test(start_paused = true)]
async fn two_clients_with_different_fields_share_one_department_call() {
    let w = Mem::builder().clients_extra(CLIENTS).start().await;
    let ms = w.dept("market-supervision");
    let names = w.token("portal-names", &[], None);
    let status = w.token("portal-status", &[], None);

    let a = w.read(&licence_path(FULL), &names).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-cache"), Some("miss"));
    let ja = a.json();
    assert_eq!(keys(&ja["record"]), ["name", "uscc"]);
    // The validity date is not granted to this client: not even in the notice.
    assert!(!ja["notice"].as_str().unwrap().contains("2046-03-01"));

    let b = w.read(&licence_path(FULL), &status).await;
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(b.header("x-cache"), Some("hit"));
    let jb = b.json();
    assert_eq!(keys(&jb["record"]), ["status", "uscc", "valid_until"]);
    assert_eq!(jb["record"]["status"], "active");
    assert!(!b.text().contains("李海燕"), "legal representative leaked");
    assert!(!b.text().contains("海味轩"), "company name leaked");

    // The first client's view is unchanged by the second's (no shared mutation).
    let a2 = w.read(&licence_path(FULL), &names).await;
    assert_eq!(keys(&a2.json()["record"]), ["name", "uscc"]);
    assert_eq!(ms.calls(), 1, "one department call for three reads");
}

// Hostile input: a client without the dataset grant asks for a record that
// another client already put in the cache.
#[tokio::test(start_paused = true)]
async fn a_client_without_the_grant_is_refused_a_cached_record() {
    let w = Mem::builder().clients_extra(CLIENTS).start().await;
    let ms = w.dept("market-supervision");
    let binhai = w.token("portal-binhai", &[], None);
    let a = w.read(&licence_path(FULL), &binhai).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(ms.calls(), 1);

    let permits = w.token("portal-permits", &[], None);
    let b = w.read(&licence_path(FULL), &permits).await;
    assert_eq!(b.status, 403, "{}", b.text());
    assert_eq!(b.header("content-type"), Some("application/problem+json"));
    assert!(b.header("x-cache").is_none());
    assert!(!b.text().contains("海味轩"));
    assert_eq!(ms.calls(), 1, "no department call for a refused read");
}

// Hostile input: 20 concurrent first reads of the same record (a thundering
// herd on a cold cache).
#[tokio::test(start_paused = true)]
async fn twenty_concurrent_first_reads_make_one_department_call() {
    let w = Mem::builder().start().await;
    let ms = w.dept("market-supervision");
    ms.set_delay(Duration::from_millis(400));
    let t = w.token("portal-binhai", &[], None);
    let path = licence_path(FULL);
    let answers = futures_util::future::join_all((0..20).map(|_| w.read(&path, &t))).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.json()["record"]["uscc"], FULL);
    }
    assert_eq!(ms.calls(), 1, "the 20 reads shared one load");
    let again = w.read(&path, &t).await;
    assert_eq!(again.header("x-cache"), Some("hit"));
    assert_eq!(ms.calls(), 1);
}

// Hostile input: an invalidation pushed while a slow load of the same record
// is in flight; the load must not put the revoked value back in the cache.
#[tokio::test(start_paused = true)]
async fn invalidation_during_a_slow_load_is_not_undone() {
    // First answer: the old name; every later answer: the new one.
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let mock = FakeDept::new("market-supervision", move |_| {
        let name = if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            "旧名称餐饮有限公司"
        } else {
            "新名称餐饮有限公司"
        };
        Ok((200, licence_json(FULL, name, "存续")))
    });
    mock.set_delay(Duration::from_millis(800));
    let w = Mem::builder()
        .dept("market-supervision", mock)
        .start()
        .await;
    let ms = w.dept("market-supervision");
    let t = w.token("portal-binhai", &[], None);
    let path = licence_path(FULL);

    let slow = w.read(&path, &t);
    let push = async {
        // As soon as the department has the request, revoke.
        until("the load started", || ms.calls() > 0).await;
        invalidate(&w, Some(FULL)).await;
    };
    let (first, ()) = tokio::join!(slow, push);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(ms.calls(), 1);

    ms.set_delay(Duration::ZERO);
    let after = w.read(&path, &t).await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(
        ms.calls(),
        2,
        "the read after the push went to the department"
    );
    assert_eq!(after.header("x-cache"), Some("miss"));
    assert_eq!(after.json()["record"]["name"], "新名称餐饮有限公司");
}

// Hostile input: a licence revoked at the department and pushed by its admin;
// the very next read must say so, not the cached "active".
#[tokio::test(start_paused = true)]
async fn a_revoked_licence_is_seen_right_after_the_push() {
    let djzt = Arc::new(std::sync::Mutex::new("存续"));
    let d2 = djzt.clone();
    let mock = FakeDept::new("market-supervision", move |_| {
        let s = *d2.lock().unwrap();
        Ok((200, licence_json(FULL, "海味轩", s)))
    });
    let w = Mem::builder()
        .dept("market-supervision", mock)
        .start()
        .await;
    let ms = w.dept("market-supervision");
    let t = w.token("portal-binhai", &[], None);
    let path = licence_path(FULL);
    let a = w.read(&path, &t).await;
    assert_eq!(a.json()["record"]["status"], "active");
    let b = w.read(&path, &t).await;
    assert_eq!(b.header("x-cache"), Some("hit"));
    assert_eq!(b.json()["record"]["status"], "active");

    *djzt.lock().unwrap() = "吊销";
    invalidate(&w, Some(FULL)).await;
    let c = w.read(&path, &t).await;
    assert_eq!(c.status, 200, "{}", c.text());
    assert_eq!(c.header("x-cache"), Some("miss"));
    assert_eq!(c.json()["source"]["cache"], "miss");
    assert_eq!(c.json()["record"]["status"], "revoked");
    assert_eq!(ms.calls(), 2);
}

// Hostile input: the department fails after the TTL has passed; a stale record
// may stand in (marked stale), but never after an invalidation.
#[tokio::test(start_paused = true)]
async fn stale_if_error_but_never_after_invalidation() {
    let w = Mem::builder()
        .edit("config/datasets.toml", |text| {
            let head = "[datasets.business-licence]";
            let at = text.find(head).unwrap();
            let (before, after) = text.split_at(at);
            assert!(after.contains("ttl_secs = 600\nmax_stale_secs = 3600"));
            let after = after.replacen(
                "ttl_secs = 600\nmax_stale_secs = 3600",
                "ttl_secs = 1\nmax_stale_secs = 3600",
                1,
            );
            format!("{before}{after}")
        })
        .start()
        .await;
    let ms = w.dept("market-supervision");
    let t = w.token("portal-binhai", &[], None);
    let path = licence_path(FULL);

    let a = w.read(&path, &t).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-cache"), Some("miss"));
    ms.break_connections();

    // Within the TTL of one second: a hit, the department not asked.
    tokio::time::advance(Duration::from_millis(990)).await;
    let hit = w.read(&path, &t).await;
    assert_eq!(hit.header("x-cache"), Some("hit"), "{}", hit.text());
    assert_eq!(ms.calls(), 1);
    // Past it: the department fails, the stale record stands in.
    tokio::time::advance(Duration::from_millis(20)).await;
    let stale = w.read(&path, &t).await;
    assert_eq!(stale.status, 200, "{}", stale.text());
    assert_eq!(stale.header("x-cache"), Some("stale"));
    let j = stale.json();
    assert_eq!(j["source"]["cache"], "stale");
    assert_eq!(j["record"]["uscc"], FULL);
    assert!(
        ms.calls() >= 2,
        "the department was tried before going stale"
    );
    // Still stale-eligible later within max_stale (an hour).
    tokio::time::advance(Duration::from_secs(3000)).await;
    assert_eq!(w.read(&path, &t).await.header("x-cache"), Some("stale"));

    invalidate(&w, Some(FULL)).await;
    let gone = w.read(&path, &t).await;
    assert_eq!(gone.status, 502, "{}", gone.text());
    assert_eq!(
        gone.header("content-type"),
        Some("application/problem+json")
    );
    assert!(!gone.text().contains("海味轩"));
}

// Hostile input: none (the contract of a reply): provenance, notice with the
// validity date, X-Cache and no caching by intermediaries.
#[tokio::test(start_paused = true)]
async fn replies_carry_provenance_notice_and_cache_headers() {
    let w = Mem::demo().await;
    let t = w.token("portal-binhai", &[], None);
    let path = licence_path(FULL);
    for expected in ["miss", "hit"] {
        let a = w.read(&path, &t).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let j = a.json();
        assert_eq!(j["dataset"], "business-licence");
        assert_eq!(j["subject"], FULL);
        assert_eq!(j["source"]["department"], "market-supervision");
        let fetched = j["source"]["fetched_at"].as_str().unwrap();
        assert!(
            onewindow::audit::parse_rfc3339_micros(fetched).is_some(),
            "fetched_at {fetched}"
        );
        assert_eq!(j["source"]["cache"], expected);
        assert_eq!(a.header("x-cache"), Some(expected));
        assert!(j["notice"].as_str().unwrap().contains("2046-03-01"));
        assert_eq!(a.header("cache-control"), Some("private, no-store"));
    }
}

// Hostile input: scenario bodies with missing, malformed, too many and unknown
// subjects, and a body that is not JSON at all.
#[tokio::test(start_paused = true)]
async fn bad_scenario_bodies_are_400_naming_the_problem() {
    let w = Mem::builder().start().await;
    let t = w.token("portal-binhai", &[], None);
    let many: serde_json::Map<String, serde_json::Value> = (0..5000)
        .map(|i| (format!("k{i}"), serde_json::Value::from("x")))
        .collect();
    let many = serde_json::json!({ "subjects": many }).to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("open-restaurant", r#"{"subjects":{}}"#.into(), "uscc"),
        ("open-restaurant", "{}".into(), "subjects"),
        (
            "open-restaurant",
            r#"{"subjects":{"uscc":"../../etc"}}"#.into(),
            "uscc",
        ),
        (
            "open-restaurant",
            r#"{"subjects":{"uscc":123}}"#.into(),
            "subjects",
        ),
        (
            "open-restaurant",
            format!(r#"{{"subjects":{{"uscc":"{}"}}}}"#, "9".repeat(400)),
            "uscc",
        ),
        (
            "newborn",
            r#"{"subjects":{"birth_cert":"T120116202600001"}}"#.into(),
            "guardian_id",
        ),
        ("open-restaurant", many, "subjects"),
        (
            "open-restaurant",
            format!(r#"{{"subjects":{{"uscc":"{FULL}","passport":"E123"}}}}"#),
            "passport",
        ),
        ("open-restaurant", "not json at all".into(), "JSON"),
        ("open-restaurant", String::new(), "JSON"),
    ];
    for (name, body, names) in cases {
        let a = scenario(&w, name, &t, &body).await;
        let shown: String = body.chars().take(60).collect();
        assert_eq!(a.status, 400, "{name} {shown}: {}", a.text());
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
        let detail = a.json()["detail"].as_str().unwrap().to_string();
        assert!(
            detail.contains(names),
            "{shown}: detail `{detail}` names `{names}`"
        );
    }
    assert_eq!(
        w.dept("market-supervision").calls(),
        0,
        "no department call for a bad request"
    );
}

// Hostile input: a department down (connection reset) during a scenario.
#[tokio::test(start_paused = true)]
async fn a_department_down_fails_only_its_part_or_the_all_or_nothing_scenario() {
    let w = Mem::demo().await;
    w.dept("health-commission").break_connections();
    w.dept("public-security").break_connections();
    let t = w.token("portal-binhai", &[], None);

    let a = scenario(
        &w,
        "open-restaurant",
        &t,
        &format!(r#"{{"subjects":{{"uscc":"{FULL}"}}}}"#),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json();
    assert_eq!(j["complete"], false);
    let hc = &j["parts"]["health-certificate"];
    assert_eq!(hc["status"], "error", "{j}");
    let hs = hc["http_status"].as_u64().unwrap();
    assert!(hs == 502 || hs == 504, "{hs}");
    assert!(hc.get("record").is_none());
    for p in [
        "business-licence",
        "food-business-permit",
        "fire-safety-inspection",
    ] {
        assert_eq!(j["parts"][p]["status"], "ok", "{p}: {j}");
        assert_eq!(j["parts"][p]["record"]["uscc"], FULL);
    }

    // Health commission is up again: the newborn scenario fails on public security.
    w.dept("health-commission").heal();
    let a = scenario(
        &w,
        "newborn",
        &t,
        r#"{"subjects":{"birth_cert":"T120116202600001","guardian_id":"120116199203154527"}}"#,
    )
    .await;
    assert_eq!(a.status, 424, "{}", a.text());
    let j = a.json();
    assert_eq!(j["complete"], false);
    assert_eq!(j["parts"]["birth-medical-certificate"]["status"], "ok");
    let hr = &j["parts"]["household-registration"];
    assert_eq!(hr["status"], "error", "{j}");
    let hs = hr["http_status"].as_u64().unwrap();
    assert!(hs == 502 || hs == 504, "{hs}");
}

// Hostile input: a client granted the scenario but not one of its datasets;
// that part must be `denied` with no record, not fetched and leaked.
#[tokio::test(start_paused = true)]
async fn an_ungranted_part_is_denied_not_leaked() {
    let w = Mem::builder().clients_extra(CLIENTS).start().await;
    let t = w.token("portal-no-health", &[], None);
    let a = scenario(
        &w,
        "open-restaurant",
        &t,
        &format!(r#"{{"subjects":{{"uscc":"{FULL}"}}}}"#),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json();
    let hc = &j["parts"]["health-certificate"];
    assert_eq!(hc["status"], "denied", "{j}");
    assert_eq!(hc["http_status"], 403);
    assert!(hc.get("record").is_none());
    assert_eq!(j["complete"], false);
    assert_eq!(j["parts"]["business-licence"]["status"], "ok");
    // Nothing of the health certificates in the reply, and no call made.
    assert!(!a.text().contains("certificate_no"));
    assert!(!a.text().contains("certificates"));
    assert_eq!(w.dept("health-commission").calls(), 0);
}

// Hostile input: the same one-thing request run twice (the second must not
// call the departments again for the shareable records).
#[tokio::test(start_paused = true)]
async fn running_a_scenario_twice_saves_department_calls() {
    let w = Mem::demo().await;
    let t = w.token("portal-binhai", &[], None);
    let body = format!(r#"{{"subjects":{{"uscc":"{FULL}"}}}}"#);
    let mut counts = Vec::new();
    for _ in 0..2 {
        let a = scenario(&w, "open-restaurant", &t, &body).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.json()["complete"], true, "{}", a.text());
        counts.push((
            w.dept("market-supervision").calls(),
            w.dept("health-commission").calls(),
            w.dept("fire-rescue").calls(),
        ));
    }
    // Licence + food permit, and the staff certificates: once each.
    assert_eq!(counts[0], (2, 1, 1));
    // Second run: the shareable parts come from the cache; the fire-safety
    // inspection is not shareable and is fetched again.
    assert_eq!(counts[1], (2, 1, 2));

    // A company without an inspection: its part is missing, the others ok.
    let a = scenario(
        &w,
        "open-restaurant",
        &t,
        &format!(r#"{{"subjects":{{"uscc":"{NO_FIRE}"}}}}"#),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json()["parts"]["fire-safety-inspection"]["status"],
        "missing"
    );
}
