//! The one-thing service end to end: scenario list and guides in Chinese and
//! English, cases kept under X-Case-Id (accept now, supply later), refresh
//! of outstanding parts only, ownership, hostile case ids, racing refreshes,
//! persistence across a restart, and the demo world's listing scenario.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use http::Method;
use serde_json::Value;

const PORTAL: &str = "portal-binhai";
const CASE: &str = "BH-2026-0042";

/// A fire-rescue mock speaking SOAP like the simulated department, except
/// that company NO_FIRE's inspection is on file only once `on_file` is set.
async fn fire_mock(on_file: Arc<AtomicBool>) -> MockDept {
    MockDept::start(move |seen| {
        let sim = onewindow::demo::Sim::FireRescue;
        let path = seen.target.split('?').next().unwrap_or_default();
        let body = String::from_utf8_lossy(&seen.body).into_owned();
        let (status, ctype, text) = if on_file.load(Ordering::SeqCst) && body.contains(NO_FIRE) {
            let (s, c, t) = sim.answer(
                &Method::POST,
                path,
                None,
                body.replace(NO_FIRE, FULL).as_bytes(),
            );
            (s, c, t.replace(FULL, NO_FIRE))
        } else {
            sim.answer(&Method::POST, path, None, body.as_bytes())
        };
        (status.as_u16(), ctype.to_string(), text)
    })
    .await
}

async fn with_fire_mock() -> (World, Arc<AtomicBool>) {
    let on_file = Arc::new(AtomicBool::new(false));
    let w = World::builder()
        .mock("fire-rescue", fire_mock(on_file.clone()).await)
        .clients_extra(
            r#"
[clients.portal-hexi]
description = "Another district's portal with the same grants"
purposes = ["service-handling"]
scenarios = ["open-restaurant"]
[clients.portal-hexi.datasets.business-licence]
fields = ["*"]
[clients.portal-hexi.datasets.food-business-permit]
fields = ["*"]
[clients.portal-hexi.datasets.fire-safety-inspection]
fields = ["*"]
[clients.portal-hexi.datasets.health-certificate]
fields = ["*"]
"#,
        )
        .start()
        .await;
    (w, on_file)
}

async fn get(w: &World, path: &str, token: &str, headers: &[(&str, &str)]) -> Answer {
    w.send(Method::GET, path, Some(token), headers, "").await
}

/// Runs open-restaurant for `uscc` under case `case`.
async fn accept(w: &World, token: &str, uscc: &str, case: &str) -> Answer {
    w.send(
        Method::POST,
        "/v1/scenarios/open-restaurant",
        Some(token),
        &[("x-purpose", "service-handling"), ("x-case-id", case)],
        format!(r#"{{"subjects": {{"uscc": "{uscc}"}}}}"#),
    )
    .await
}

async fn refresh(w: &World, token: &str, case: &str, request_id: &str) -> Answer {
    w.send(
        Method::POST,
        &format!("/v1/cases/{case}/refresh"),
        Some(token),
        &[
            ("x-purpose", "service-handling"),
            ("x-request-id", request_id),
        ],
        "",
    )
    .await
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

#[tokio::test]
async fn scenario_list_and_guides_in_chinese_and_english() {
    let w = World::demo().await;
    let t = w.token(PORTAL, &[], None);

    // Chinese by default; English on request; q-values decide.
    let zh = get(&w, "/v1/scenarios", &t, &[]).await;
    assert_eq!(zh.status, 200, "{}", zh.text());
    assert_eq!(zh.header("content-language"), Some("zh"));
    assert_eq!(zh.header("vary"), Some("Accept-Language"));
    let list = zh.json();
    let restaurant = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scenario"] == "open-restaurant")
        .unwrap();
    assert_eq!(restaurant["title"], "开办餐饮店");
    assert!(
        restaurant["summary"].as_str().unwrap().contains("容缺")
            || restaurant["summary"].as_str().unwrap().contains("后补")
    );
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scenario"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"newborn".to_string()), "{names:?}");
    for (accept, title) in [
        ("en-GB,en;q=0.9", "Open a restaurant"),
        ("zh;q=0.3, en;q=0.9", "Open a restaurant"),
        ("en;q=0.2, zh-CN;q=0.8", "开办餐饮店"),
        ("fr", "开办餐饮店"),
    ] {
        let a = get(&w, "/v1/scenarios", &t, &[("accept-language", accept)]).await;
        let j = a.json();
        let s = j
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["scenario"] == "open-restaurant")
            .unwrap()
            .clone();
        assert_eq!(s["title"], title, "Accept-Language: {accept}");
    }

    // The guide: parts, departments, supply later, what to bring, time
    // limit, legal basis.
    let en = get(
        &w,
        "/v1/scenarios/open-restaurant",
        &t,
        &[("accept-language", "en")],
    )
    .await;
    assert_eq!(en.status, 200, "{}", en.text());
    assert_eq!(en.header("content-language"), Some("en"));
    let g = en.json();
    assert_eq!(g["scenario"], "open-restaurant");
    assert_eq!(g["lang"], "en");
    assert_eq!(g["title"], "Open a restaurant");
    assert_eq!(g["time_limit_days"], 5);
    assert_eq!(g["supply_later_days"], 30);
    assert!(
        g["legal_basis"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("Food Safety Law"))
    );
    let parts = g["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    let fire = parts
        .iter()
        .find(|p| p["dataset"] == "fire-safety-inspection")
        .unwrap();
    assert_eq!(fire["supply_later"], true);
    assert_eq!(fire["department"], "fire-rescue");
    assert_eq!(fire["department_title"], "Fire and Rescue");
    assert!(fire["bring"].as_str().unwrap().contains("certificate"));
    let licence = parts
        .iter()
        .find(|p| p["dataset"] == "business-licence")
        .unwrap();
    assert_eq!(licence["supply_later"], false);
    let zh = get(&w, "/v1/scenarios/open-restaurant", &t, &[])
        .await
        .json();
    assert_eq!(zh["lang"], "zh");
    let fire = zh["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["dataset"] == "fire-safety-inspection")
        .unwrap()
        .clone();
    assert_eq!(fire["department_title"], "消防救援支队");
    assert!(
        zh["legal_basis"][0]
            .as_str()
            .unwrap()
            .contains("食品安全法")
    );
    let newborn = get(
        &w,
        "/v1/scenarios/newborn",
        &t,
        &[("accept-language", "en")],
    )
    .await
    .json();
    assert_eq!(newborn["title"], "Register a newborn");
    assert_eq!(newborn["mode"], "all-or-nothing");

    // Not granted: hidden from the list, 403 on the guide; unknown: 404.
    let ro = w.token("portal-readonly", &[], None);
    let a = get(&w, "/v1/scenarios", &ro, &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), serde_json::json!([]));
    assert_problem(
        &get(&w, "/v1/scenarios/open-restaurant", &ro, &[]).await,
        403,
    );
    assert_problem(&get(&w, "/v1/scenarios/no-such-thing", &t, &[]).await, 404);
    assert_problem(
        &w.send(Method::GET, "/v1/scenarios", None, &[], "").await,
        401,
    );
}

#[tokio::test]
async fn guide_without_chinese_title_is_named_by_check() {
    let w = World::builder().prepare().await;
    let file = w.root().join("config/scenarios/open-restaurant.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let broken = text.replace("title = { zh = \"开办餐饮店\", en", "title = { en");
    assert_ne!(
        text, broken,
        "the shipped guide has the expected title line"
    );
    std::fs::write(&file, broken).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onewindow"))
        .args(["check", "--config"])
        .arg(w.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("open-restaurant.toml"), "{err}");
    assert!(err.contains("guide.title.zh"), "{err}");

    // A department a guide names needs its Chinese title too.
    std::fs::write(&file, text).unwrap();
    let gw = w.config();
    let g = std::fs::read_to_string(&gw).unwrap();
    std::fs::write(
        &gw,
        g.replace(
            "title = { zh = \"消防救援支队\", en = \"Fire and Rescue\" }",
            "title = \"Fire and Rescue\"",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onewindow"))
        .args(["check", "--config"])
        .arg(&gw)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.toml"), "{err}");
    assert!(err.contains("departments.fire-rescue.title.zh"), "{err}");
}

#[tokio::test]
async fn accept_now_supply_later_then_refresh_fetches_only_what_is_outstanding() {
    let (w, on_file) = with_fire_mock().await;
    let t = w.token(PORTAL, &[], None);
    let fire = &w.mocks["fire-rescue"];

    // Accepted with the fire-safety inspection outstanding.
    let a = accept(&w, &t, NO_FIRE, CASE).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json();
    assert_eq!(j["complete"], false);
    assert_eq!(j["parts"]["fire-safety-inspection"]["status"], "missing");
    assert_eq!(j["case"]["case_id"], CASE);
    assert_eq!(
        j["case"]["outstanding"],
        serde_json::json!(["fire-safety-inspection"])
    );
    assert_eq!(
        a.header("location"),
        Some(format!("/v1/cases/{CASE}").as_str())
    );
    assert_eq!(fire.calls(), 1);

    let c = get(&w, &format!("/v1/cases/{CASE}"), &t, &[]).await;
    assert_eq!(c.status, 200, "{}", c.text());
    let c = c.json();
    assert_eq!(c["scenario"], "open-restaurant");
    assert_eq!(c["complete"], false);
    assert_eq!(c["overdue"], false);
    assert_eq!(
        c["outstanding"],
        serde_json::json!(["fire-safety-inspection"])
    );
    assert_eq!(c["parts"]["fire-safety-inspection"]["supply_later"], true);
    assert_eq!(c["parts"]["business-licence"]["status"], "ok");
    assert!(c.get("subjects").is_none(), "subjects are never shown: {c}");
    assert!(
        !c.to_string().contains(NO_FIRE),
        "no subject id in the case view"
    );
    let accepted =
        onewindow::audit::time::parse_rfc3339_micros(c["accepted_at"].as_str().unwrap()).unwrap();
    let supply_by =
        onewindow::audit::time::parse_rfc3339_micros(c["supply_by"].as_str().unwrap()).unwrap();
    assert_eq!(supply_by - accepted, 30 * 86_400 * 1_000_000);

    let m = w.send(Method::GET, "/metrics", None, &[], "").await.text();
    assert_eq!(metric(&m, "onewindow_cases_open"), 1.0);
    assert_eq!(metric(&m, "onewindow_cases_overdue"), 0.0);

    // Still not on file: a refresh fetches the one part, the case stays open.
    let r = refresh(&w, &t, CASE, "refresh-early").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["complete"], false);
    assert_eq!(fire.calls(), 2);

    // The inspection appears at the department; one refresh completes the case.
    on_file.store(true, Ordering::SeqCst);
    let r = refresh(&w, &t, CASE, "refresh-done").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = r.json();
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["outstanding"], serde_json::json!([]));
    assert_eq!(r["parts"]["fire-safety-inspection"]["status"], "ok");
    assert_eq!(
        r["parts"]["fire-safety-inspection"]["record"]["uscc"],
        NO_FIRE
    );
    assert!(r["parts"]["business-licence"].get("record").is_none());
    assert!(r["completed_at"].is_string());
    assert_eq!(r["refreshes"], 2);
    assert_eq!(fire.calls(), 3);

    // Only the outstanding part was fetched: the refresh's audit trail holds
    // the refresh and one part read, fire-safety-inspection.
    let auditor = w.token("security-team", &["auditor"], None);
    let q = w
        .send(
            Method::GET,
            &format!("/admin/audit?case={CASE}&limit=100"),
            Some(&auditor),
            &[],
            "",
        )
        .await;
    assert_eq!(q.status, 200, "{}", q.text());
    let recs: Vec<Value> = q.json()["records"].as_array().unwrap().clone();
    let of = |rid: &str| -> Vec<(String, String)> {
        recs.iter()
            .filter(|r| r["request_id"] == rid)
            .map(|r| {
                (
                    r["action"].as_str().unwrap_or_default().to_string(),
                    r["dataset"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let mut done = of("refresh-done");
    done.sort();
    assert_eq!(
        done,
        [
            ("case.refresh".to_string(), String::new()),
            (
                "scenario.part".to_string(),
                "fire-safety-inspection".to_string()
            )
        ],
        "{recs:#?}"
    );
    assert!(recs.iter().any(|r| r["action"] == "case.read"));
    // Never a subject id in the log.
    assert!(!q.text().contains(NO_FIRE));

    // A complete case has nothing to fetch.
    let r = refresh(&w, &t, CASE, "refresh-after").await;
    assert_eq!(r.status, 200);
    assert_eq!(fire.calls(), 3);
    let m = w.send(Method::GET, "/metrics", None, &[], "").await.text();
    assert_eq!(metric(&m, "onewindow_cases_open"), 0.0);
}

#[tokio::test]
async fn another_clients_case_is_not_found() {
    let (w, _) = with_fire_mock().await;
    let binhai = w.token(PORTAL, &[], None);
    let hexi = w.token("portal-hexi", &[], None);
    assert_eq!(accept(&w, &binhai, NO_FIRE, CASE).await.status, 200);
    let path = format!("/v1/cases/{CASE}");
    for token in [&hexi, &w.token("portal-readonly", &[], None)] {
        assert_problem(&get(&w, &path, token, &[]).await, 404);
        assert_problem(&refresh(&w, token, CASE, "steal").await, 404);
    }
    // The same id is another client's own, separate case.
    assert_eq!(accept(&w, &hexi, FULL, CASE).await.status, 200);
    let mine = get(&w, &path, &hexi, &[]).await.json();
    assert_eq!(mine["complete"], true);
    let theirs = get(&w, &path, &binhai, &[]).await.json();
    assert_eq!(theirs["complete"], false);
    // Re-using a case id for other subjects is refused before any fetch.
    let before = w.mocks["fire-rescue"].calls();
    let a = accept(&w, &binhai, FULL, CASE).await;
    assert_problem(&a, 409);
    assert_eq!(w.mocks["fire-rescue"].calls(), before);
}

#[tokio::test]
async fn hostile_case_ids_are_refused() {
    let w = World::demo().await;
    let t = w.token(PORTAL, &[], None);
    let long = "C".repeat(5000);
    for id in [
        "a%01b",
        "%0A",
        "x%7Fy",
        "%E2%80%AEevil",
        "%FF",
        "%20",
        long.as_str(),
    ] {
        assert_problem(&get(&w, &format!("/v1/cases/{id}"), &t, &[]).await, 400);
        assert_problem(&refresh(&w, &t, id, "r").await, 400);
    }
    // 10 KB in the path is over the URI limit; in the header, over the
    // attribution limit.
    let ten_kb = "C".repeat(10 * 1024);
    assert_problem(&get(&w, &format!("/v1/cases/{ten_kb}"), &t, &[]).await, 414);
    assert_problem(&accept(&w, &t, FULL, &ten_kb).await, 400);
    assert_problem(&accept(&w, &t, FULL, "a\tb").await, 400);
    // Nothing was kept.
    let m = w.send(Method::GET, "/metrics", None, &[], "").await.text();
    assert_eq!(metric(&m, "onewindow_cases_open"), 0.0);
}

#[tokio::test]
async fn racing_refreshes_fetch_once_and_lose_nothing() {
    let (w, on_file) = with_fire_mock().await;
    let t = w.token(PORTAL, &[], None);
    assert_eq!(accept(&w, &t, NO_FIRE, CASE).await.status, 200);
    let fire = &w.mocks["fire-rescue"];
    let before = fire.calls();
    on_file.store(true, Ordering::SeqCst);
    // The department is slow, so both refreshes are in flight together.
    fire.set_delay(Duration::from_millis(300));
    let (a, b) = tokio::join!(
        refresh(&w, &t, CASE, "race-a"),
        refresh(&w, &t, CASE, "race-b")
    );
    fire.set_delay(Duration::ZERO);
    for r in [&a, &b] {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["complete"], true);
    }
    assert_eq!(
        fire.calls(),
        before + 1,
        "the second refresh found nothing outstanding"
    );
    let c = get(&w, &format!("/v1/cases/{CASE}"), &t, &[]).await.json();
    assert_eq!(c["refreshes"], 1);
    assert_eq!(c["complete"], true);
}

#[tokio::test]
async fn cases_survive_a_restart() {
    let (mut w, on_file) = with_fire_mock().await;
    let t = w.token(PORTAL, &[], None);
    assert_eq!(accept(&w, &t, NO_FIRE, CASE).await.status, 200);
    let before = get(&w, &format!("/v1/cases/{CASE}"), &t, &[]).await.json();
    w.stop().await;
    assert!(w.root().join("data/cases.sqlite").exists());
    let w = w.boot().await;
    let t = w.token(PORTAL, &[], None);
    let after = get(&w, &format!("/v1/cases/{CASE}"), &t, &[]).await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(after.json(), before);
    // And it can still be completed: the subjects were kept.
    on_file.store(true, Ordering::SeqCst);
    let r = refresh(&w, &t, CASE, "after-restart").await;
    assert_eq!(r.json()["complete"], true, "{}", r.text());
}

/// Overdue is a matter of dates: on a paused clock the test moves 30 days
/// ahead (the case's supply-later period) without waiting.
#[tokio::test(start_paused = true)]
async fn an_open_case_is_overdue_after_its_supply_later_period() {
    use common::mem::Mem;
    let w = Mem::demo().await;
    let t = w.token(PORTAL, &[], None);
    let run = |uscc: &'static str, case: &'static str, t: String| {
        let w = &w;
        async move {
            w.post("/v1/scenarios/open-restaurant")
                .token(&t)
                .purpose("service-handling")
                .header("x-case-id", case)
                .json(&serde_json::json!({"subjects": {"uscc": uscc}}))
                .send()
                .await
        }
    };
    let a = run(NO_FIRE, CASE, t.clone()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = run(FULL, "BH-COMPLETE", t.clone()).await;
    assert_eq!(a.json()["case"]["complete"], true);
    let case = |t: String| {
        let w = &w;
        async move {
            let a = w.get(&format!("/v1/cases/{CASE}")).token(&t).send().await;
            assert_eq!(a.status, 200, "{}", a.text());
            a.json()
        }
    };
    let metrics = || async { w.get("/metrics").send().await.text() };
    let c = case(t.clone()).await;
    assert_eq!(c["overdue"], false);
    let m = metrics().await;
    assert_eq!(metric(&m, "onewindow_cases_open"), 1.0);
    assert_eq!(metric(&m, "onewindow_cases_overdue"), 0.0);

    // A minute before the period ends: still in time.
    tokio::time::advance(Duration::from_secs(30 * 86_400 - 60)).await;
    let t = w.token(PORTAL, &[], None);
    assert_eq!(case(t.clone()).await["overdue"], false);
    // Two minutes later: overdue, and counted.
    tokio::time::advance(Duration::from_secs(120)).await;
    let c = case(t.clone()).await;
    assert_eq!(c["overdue"], true, "{c}");
    assert_eq!(c["complete"], false);
    let m = metrics().await;
    assert_eq!(metric(&m, "onewindow_cases_open"), 1.0);
    assert_eq!(metric(&m, "onewindow_cases_overdue"), 1.0);
    let done = w.get("/v1/cases/BH-COMPLETE").token(&t).send().await.json();
    assert_eq!(done["overdue"], false, "a complete case is never overdue");
}

#[tokio::test]
async fn listing_compliance_runs_in_the_demo_world() {
    let w = World::demo().await;
    let t = w.token(PORTAL, &[], None);
    let list = get(&w, "/v1/scenarios", &t, &[("accept-language", "en")])
        .await
        .json();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scenario"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["listing-compliance", "newborn", "open-restaurant"]);
    let g = get(&w, "/v1/scenarios/listing-compliance", &t, &[])
        .await
        .json();
    assert_eq!(g["title"], "企业上市违法违规信息证明");
    let dept = |g: &Value, dataset: &str| {
        g["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["dataset"] == dataset)
            .unwrap()["department_title"]
            .clone()
    };
    assert_eq!(dept(&g, "tax-credit"), "税务局");
    assert_eq!(dept(&g, "environmental-penalties"), "生态环境局");

    let run = |uscc: &str| {
        w.send(
            Method::POST,
            "/v1/scenarios/listing-compliance",
            Some(&t),
            &[("x-purpose", "service-handling")],
            format!(r#"{{"subjects": {{"uscc": "{uscc}"}}}}"#),
        )
    };
    let a = run(FULL).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json();
    assert_eq!(j["complete"], true, "{j}");
    assert_eq!(j["parts"]["tax-credit"]["record"]["credit_rating"], "A");
    assert_eq!(
        j["parts"]["environmental-penalties"]["record"]["penalties"],
        serde_json::json!([])
    );
    assert_eq!(
        j["parts"]["environmental-penalties"]["record"]["penalty_count"],
        0
    );
    let j = run(REVOKED).await.json();
    let pen = &j["parts"]["environmental-penalties"]["record"];
    assert_eq!(pen["penalty_count"], 1, "{j}");
    assert_eq!(pen["penalties"][0]["penalty"], "罚款");
}
