//! Issue 12 at the gateway: no raw subject id reaches the audit folder after
//! any request a test can make, every admin-plane decision is a record, and a
//! scanner's flood of unauthenticated requests costs bounded records. Driven
//! in memory (tests/common/mem.rs) on a paused clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::useless_format)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::FULL;
use common::mem::Mem;
use http::{Method, StatusCode};
use serde_json::Value;

/// Every record in the audit folder (all segments).
fn records(root: &Path) -> Vec<Value> {
    let dir = root.join("data/audit");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// Every byte of every file under the audit folder, lowercased.
fn audit_folder_text(root: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(root.join("data/audit")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    out.to_lowercase()
}

fn of_action<'a>(recs: &'a [Value], action: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["action"] == action).collect()
}

#[tokio::test(start_paused = true)]
async fn no_raw_subject_id_anywhere_in_the_audit_folder() {
    let mut w = Mem::demo().await;
    let portal = w.token("portal-binhai", &[], None);
    let readonly = w.token("portal-readonly", &[], None);
    let auditor = w.token("auditor", &["auditor"], None);
    let ms_admin = w.token(
        "market-supervision-admin",
        &["department-admin"],
        Some("market-supervision"),
    );
    // Ids of the two kinds the README promises never to store: unified
    // social credit codes and ID-card numbers. Each is used once, somewhere.
    let mut ids: Vec<String> = (0..40)
        .map(|i| format!("91330100MA2{i:02}QZ7K"))
        .chain((0..20).map(|i| format!("3301061990010{i:02}12X")))
        .collect();
    ids.push(FULL.to_string());
    let mut next = ids.iter();
    let mut id = || next.next().unwrap().clone();

    // Dataset reads: allowed (real subject, ids in query and headers),
    // refused (no token, dataset not granted, unknown dataset).
    let a = w
        .get(&format!(
            "/v1/datasets/business-licence/{FULL}?note={}",
            id()
        ))
        .token(&portal)
        .purpose("service-handling")
        .header("x-note", &id())
        .header("user-agent", &id())
        .send()
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    for (path, token) in [
        (format!("/v1/datasets/business-licence/{}", id()), None),
        (
            format!("/v1/datasets/health-certificate/{}", id()),
            Some(&readonly),
        ),
        (format!("/v1/datasets/no-such/{}", id()), Some(&portal)),
        (format!("/v1/datasets/{}/{}", id(), id()), Some(&portal)),
        (
            format!("/v1/proxy/{}/licences/{}", id(), id()),
            Some(&portal),
        ),
        (
            format!("/v1/datasets/business-licence/{}", id()),
            Some(&portal),
        ), // not found upstream
    ] {
        let mut c = w
            .get(&path)
            .purpose("service-handling")
            .header("x-other", &id());
        if let Some(t) = token {
            c = c.token(t);
        }
        let a = c.send().await;
        assert!(a.status.is_client_error(), "{path}: {}", a.status);
    }
    // Scenario: allowed with ids in the body, refused with a malformed body.
    let a = w
        .post("/v1/scenarios/open-restaurant")
        .token(&portal)
        .purpose("service-handling")
        .json(&serde_json::json!({"subjects": {"uscc": FULL, "id_card": id()}, "note": id()}))
        .send()
        .await;
    assert!(
        a.status.is_success() || a.status.is_client_error(),
        "{}",
        a.status
    );
    let a = w
        .post(&format!("/v1/scenarios/{}", id()))
        .token(&portal)
        .purpose("service-handling")
        .json(&serde_json::json!({"subjects": {"uscc": id()}}))
        .send()
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = w
        .post("/v1/scenarios/open-restaurant")
        .token(&portal)
        .purpose("service-handling")
        .body(format!("{{\"subjects\": {{\"uscc\": \"{}\"", id()))
        .send()
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // Proxy: allowed on a declared subject path, refused (not granted, and
    // not authenticated), with ids in the path, the query and the body.
    let proxied = id();
    let a = w
        .get(&format!(
            "/v1/proxy/market-supervision/licences/{proxied}?q={}",
            id()
        ))
        .token(&portal)
        .purpose("service-handling")
        .send()
        .await;
    assert!(!a.status.is_server_error(), "{}", a.status);
    let refused_proxy = id();
    let a = w
        .post(&format!(
            "/v1/proxy/market-supervision/api/v2/licences/{refused_proxy}"
        ))
        .token(&readonly)
        .purpose("service-handling")
        .body(id())
        .send()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = w
        .get(&format!("/v1/proxy/market-supervision/other/{}", id()))
        .token(&readonly)
        .purpose("service-handling")
        .send()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Before authentication: unknown route, bad method, ambiguous path, limits.
    for (m, path) in [
        (Method::GET, format!("/v1/nothing/{}", id())),
        (
            Method::DELETE,
            format!("/v1/datasets/business-licence/{}", id()),
        ),
        (
            Method::GET,
            format!("/v1/datasets/business-licence/{}%2Fx", id()),
        ),
        (Method::GET, format!("/v1/x/{}?{}", id(), "a".repeat(9000))),
    ] {
        let a = w.request(m, &path).header("x-id", &id()).send().await;
        assert!(a.status.is_client_error(), "{path}: {}", a.status);
    }
    // Admin plane: queries by subject, invalidations, refusals, 401s.
    let queried = id();
    let a = w
        .get(&format!("/admin/audit?subject={queried}&client={}", id()))
        .token(&auditor)
        .send()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = w
        .get(&format!("/admin/audit?subject={}", id()))
        .token(&portal)
        .send()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let invalidated = id();
    for token in [&ms_admin, &portal] {
        let a = w
            .post("/admin/cache/invalidate")
            .token(token)
            .json(&serde_json::json!({"dataset": "business-licence", "subject": invalidated}))
            .send()
            .await;
        assert!(a.status == StatusCode::OK || a.status == StatusCode::FORBIDDEN);
    }
    let a = w
        .post("/admin/cache/invalidate")
        .token(&ms_admin)
        .body(format!(
            "{{\"dataset\": \"business-licence\", \"subject\": \"{}\", \"x\": 1}}",
            id()
        ))
        .send()
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = w
        .get(&format!("/admin/adapters/{}", id()))
        .header("x-id", &id())
        .send()
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = w.get(&format!("/admin/nothing/{}", id())).send().await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    w.data.flush_aggregates().await;
    w.stop().await;
    let text = audit_folder_text(w.root());
    let used: Vec<&String> = ids.iter().take(ids.len()).collect();
    for id in &used {
        if let Some(at) = text.find(&id.to_lowercase()) {
            panic!(
                "raw id {id} found in the audit folder: {}",
                &text[at.saturating_sub(300)..(at + 100).min(text.len())]
            );
        }
    }

    // The ids are findable by reference: the proxy reads, the auditor's own
    // query and the invalidations.
    let recs = records(w.root());
    let by_subject = |subject: &str| {
        let key = onewindow::audit::SubjectKey::load(&w.root().join("certs")).unwrap();
        let r = key.subject_ref(subject);
        recs.iter()
            .filter(|x| x["subject_ref"] == r.as_str())
            .map(|x| x["action"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        by_subject(&proxied),
        ["proxy"],
        "allowed proxy read by subject"
    );
    assert_eq!(
        by_subject(&refused_proxy),
        ["proxy"],
        "refused proxy read by subject"
    );
    assert_eq!(by_subject(&queried), ["admin.audit.query"]);
    assert_eq!(
        by_subject(&invalidated),
        ["admin.cache.invalidate", "admin.cache.invalidate"]
    );
    let q = of_action(&recs, "admin.audit.query");
    assert!(
        q.iter().any(|r| r["reason"] == "filters: client, subject"),
        "{q:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn every_admin_decision_is_a_record() {
    let mut w = Mem::demo().await;
    let auditor = w.token("auditor", &["auditor"], None);
    let portal = w.token("portal-binhai", &[], None);
    let ms_admin = w.token(
        "market-supervision-admin",
        &["department-admin"],
        Some("market-supervision"),
    );
    let platform = w.token("platform-admin", &["platform-admin"], None);
    let calls: Vec<(Method, &str, Option<&String>, StatusCode)> = vec![
        (
            Method::GET,
            "/admin/adapters",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/admin/adapters",
            Some(&ms_admin),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/admin/adapters/market-supervision",
            Some(&ms_admin),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/admin/adapters/fire-rescue",
            Some(&ms_admin),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/admin/reload",
            Some(&ms_admin),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/admin/reload",
            Some(&platform),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/admin/audit?decision=deny",
            Some(&auditor),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/admin/audit",
            Some(&portal),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/admin/audit/verify",
            Some(&auditor),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/admin/audit/verify",
            Some(&portal),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/admin/departments",
            Some(&platform),
            StatusCode::OK,
        ),
    ];
    for (m, path, token, want) in &calls {
        let mut c = w.request(m.clone(), path);
        if let Some(t) = token {
            c = c.token(t);
        }
        let a = c.send().await;
        assert_eq!(a.status, *want, "{m} {path}: {}", a.text());
        if path.starts_with("/admin/audit?decision=deny") {
            // The new record kinds are queryable like any other.
            let j = a.json();
            let actions: Vec<&str> = j["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["action"].as_str().unwrap())
                .collect();
            assert!(actions.contains(&"auth.denied"), "{actions:?}");
            assert!(actions.contains(&"admin.reload"), "{actions:?}");
        }
    }
    let a = w
        .post("/admin/cache/invalidate")
        .token(&portal)
        .json(&serde_json::json!({"dataset": "business-licence"}))
        .send()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Probes are not decisions.
    assert_eq!(w.get("/healthz").send().await.status, StatusCode::OK);
    w.stop().await;
    let recs = records(w.root());
    let mut seen: BTreeMap<(String, String, u64), usize> = BTreeMap::new();
    for r in &recs {
        if r["action"] == "checkpoint" {
            continue;
        }
        *seen
            .entry((
                r["action"].as_str().unwrap().to_string(),
                r["decision"].as_str().unwrap().to_string(),
                r["status"].as_u64().unwrap_or(0),
            ))
            .or_default() += 1;
    }
    let want = [
        ("auth.denied", "deny", 401),
        ("admin.adapters.read", "allow", 200),
        ("admin.adapter.read", "allow", 200),
        ("admin.adapter.read", "deny", 403),
        ("admin.reload", "deny", 403),
        ("admin.reload", "allow", 200),
        ("admin.audit.query", "allow", 200),
        ("admin.audit.query", "deny", 403),
        ("admin.audit.verify", "allow", 200),
        ("admin.audit.verify", "deny", 403),
        ("admin.departments.read", "allow", 200),
        ("admin.cache.invalidate", "deny", 403),
    ];
    for (action, decision, status) in want {
        assert_eq!(
            seen.get(&(action.to_string(), decision.to_string(), status)),
            Some(&1),
            "{action} {decision} {status}: {seen:?}"
        );
    }
    assert_eq!(seen.len(), want.len(), "nothing else recorded: {seen:?}");
    // The auditor's query names its filters, not their values.
    let q = of_action(&recs, "admin.audit.query");
    assert_eq!(q[0]["reason"], "filters: decision");
    assert_eq!(q[0]["client"], "auditor");
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_unauthenticated_requests_cost_bounded_records() {
    let mut w = Mem::demo().await;
    const N: usize = 10_000;
    for i in 0..N {
        let path = match i % 4 {
            0 => format!("/v1/scan/{i}"),
            1 => format!("/v1/datasets/business-licence/{i}"), // 401
            2 => format!("/admin/scan/{i}"),
            _ => format!("/v1/catalog/{i}/x"),
        };
        let m = if i % 8 == 7 { Method::PUT } else { Method::GET };
        let a = w.request(m, &path).from("203.0.113.9").send().await;
        assert!(a.status.is_client_error(), "{path}: {}", a.status);
    }
    w.data.flush_aggregates().await;
    w.stop().await;
    let recs: Vec<Value> = records(w.root())
        .into_iter()
        .filter(|r| r["action"] != "checkpoint")
        .collect();
    // Per (source, action, rule) at most `deny_summary_threshold` (20)
    // records one by one, then one summary: a handful of rules here.
    assert!(
        recs.len() <= 8 * 21,
        "{} records for {N} requests",
        recs.len()
    );
    let summaries: Vec<&Value> = recs
        .iter()
        .filter(|r| r["reason"].as_str().unwrap_or("").contains("(summary:"))
        .collect();
    assert!(!summaries.is_empty());
    // The count is kept: individual records plus the summaries' counts = N.
    let individual = recs.len() - summaries.len();
    let suppressed: usize = summaries
        .iter()
        .map(|r| {
            let s = r["reason"].as_str().unwrap();
            let n = s.split(", ").nth(1).unwrap().split(' ').next().unwrap();
            n.parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(individual + suppressed, N, "{summaries:?}");
    assert!(recs.iter().all(|r| r["client"] == "ip:203.0.113.9"));
}

#[tokio::test(start_paused = true)]
async fn a_lost_witness_shows_in_readyz_and_fails_closed_until_it_is_back() {
    let witness = tempfile::tempdir().unwrap();
    let wdir = witness.path().join("mounted");
    std::fs::create_dir(&wdir).unwrap();
    let mut w = Mem::builder()
        .gateway_replace(
            "checkpoint_interval_secs = 60",
            &format!(
                "checkpoint_interval_secs = 60\nwitness_dir = \"{}\"",
                wdir.display()
            ),
        )
        .start()
        .await;
    let portal = w.token("portal-binhai", &[], None);
    let ready = w.get("/readyz").send().await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert_eq!(ready.json()["audit_witness"]["writable"], true);
    // The witness disk goes away; the next signed head cannot be handed over.
    std::fs::remove_dir_all(&wdir).unwrap();
    let a = w
        .read(&format!("/v1/datasets/business-licence/{FULL}"), &portal)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    w.data.audit.checkpoint_now().await.unwrap();
    let ready = w.get("/readyz").send().await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["audit_witness"]["writable"], false);
    assert_eq!(
        ready.json()["audit_witness"]["location"],
        wdir.display().to_string()
    );
    let a = w
        .read(&format!("/v1/datasets/business-licence/{FULL}"), &portal)
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "fails closed");
    // Back: the writer retries and hands the pending head over.
    std::fs::create_dir(&wdir).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    common::mem::until("witness back", || w.data.audit.is_healthy()).await;
    let ready = w.get("/readyz").send().await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert!(
        std::fs::read_to_string(wdir.join(onewindow::audit::WITNESS_FILE))
            .unwrap()
            .contains("\"checkpoint\"")
    );
    w.stop().await;
}
