//! Issue 17, the console: its assets and headers on the admin listener, the
//! try-it endpoint and the audit summary behind the chart, and (when node,
//! playwright-core and chromium are installed: `.ci/setup-browser.sh`) the
//! browser tests in tests/browser/console.test.mjs against a live gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::{FULL, Fault, MockDept, World, assert_problem, raw_status};
use http::Method;

/// Short timeouts for fire-rescue, whose mock never answers in some tests.
const FIRE_PROTECT: (&str, &str) = (
    "[departments.fire-rescue.protect]\n",
    "[departments.fire-rescue.protect]\nconnect_timeout_ms = 200\nattempt_timeout_ms = 400\ntotal_timeout_ms = 800\n",
);

/// A fire-rescue mock that accepts and never answers.
async fn hanging_fire_rescue() -> MockDept {
    let m = MockDept::start(|_| (200, "text/xml".into(), String::new())).await;
    m.set_fault(Fault::Hang);
    m
}

async fn world() -> World {
    World::builder()
        .mock("fire-rescue", hanging_fire_rescue().await)
        .gateway_replace(FIRE_PROTECT.0, FIRE_PROTECT.1)
        .start()
        .await
}

fn admin(w: &World) -> String {
    w.token(
        "ms-admin",
        &["department-admin"],
        Some("market-supervision"),
    )
}

fn auditor(w: &World) -> String {
    w.token("security-team", &["auditor"], None)
}

/// Audit records of the admin plane's own actions, as JSON.
async fn audit_records(w: &World, query: &str) -> Vec<serde_json::Value> {
    let a = w
        .send(
            Method::GET,
            &format!("/admin/audit?{query}"),
            Some(&auditor(w)),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["records"].as_array().unwrap().clone()
}

async fn get_console(w: &World, path: &str) -> common::Answer {
    let addr = w.admin();
    let (code, text) = raw_status(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes(),
    )
    .await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut headers = http::HeaderMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            headers.append(
                http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                v.trim().parse().unwrap(),
            );
        }
    }
    common::Answer {
        status: http::StatusCode::from_u16(code.expect("an HTTP answer")).unwrap(),
        headers,
        body: Bytes::from(body.to_string()),
    }
}

#[tokio::test]
async fn console_is_served_with_strict_security_headers() {
    let w = World::demo().await;
    let a = get_console(&w, "/console/").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(a.text().contains(r#"<script type="module" src="app.js">"#));
    for (path, ctype) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/audit.js", "text/javascript; charset=utf-8"),
        ("/console/style.css", "text/css; charset=utf-8"),
        ("/console/icon.svg", "image/svg+xml"),
        ("/console/", "text/html; charset=utf-8"),
    ] {
        let a = get_console(&w, path).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.header("content-type"), Some(ctype), "{path}");
        let csp = a.header("content-security-policy").expect("CSP");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("style-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("object-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(a.header("x-frame-options"), Some("DENY"));
    }
    // The bare path redirects so relative asset links resolve.
    let a = get_console(&w, "/console").await;
    assert_eq!(a.status, 308);
    assert_eq!(a.header("location"), Some("/console/"));
    // Only GET.
    let a = w
        .send(Method::POST, "/admin/../console/", None, &[], "x")
        .await;
    assert_eq!(a.status, 405, "{}", a.text());
}

// Hostile input: console assets requested with `..` and encoded traversal.
// Only the embedded files exist; nothing is read from disk.
#[tokio::test]
async fn console_refuses_traversal_and_unknown_names() {
    let w = World::demo().await;
    for path in [
        "/console/../Cargo.toml",
        "/console/../../../../etc/passwd",
        "/console/%2e%2e/%2e%2e/etc/passwd",
        "/console/..%2f..%2fCargo.toml",
        "/console/..%2F..%2Fsrc%2Fconsole.rs",
        "/console/%2e%2e%5capp.js",
        "/console/..\\..\\Cargo.toml",
        "/console/%252e%252e/Cargo.toml",
        "/console/app.js%00.html",
        "/console/./assets/app.js",
        "/console/console/assets/index.html",
        "/console/../src/console/assets/app.js",
        "/console/Cargo.toml",
        "/console/.git/config",
        "/console/app.js/",
        "/console/APP.JS",
    ] {
        let a = get_console(&w, path).await;
        assert!(
            matches!(a.status.as_u16(), 400 | 404),
            "{path}: {} {}",
            a.status,
            a.text()
        );
        let body = a.text();
        assert!(
            !body.contains("[package]") && !body.contains("root:") && !body.contains("import "),
            "{path} leaked a file: {body}"
        );
        assert!(
            a.header("content-type")
                .is_some_and(|c| c == "application/problem+json"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn audit_stats_counts_the_range_for_auditors_only() {
    let w = World::demo().await;
    let portal = w.token("portal-binhai", &[], None);
    for _ in 0..3 {
        let a = w
            .read(&format!("/v1/datasets/business-licence/{FULL}"), &portal)
            .await;
        assert_eq!(a.status, 200);
    }
    let stranger = w.token("stranger", &[], None);
    let a = w
        .read(&format!("/v1/datasets/business-licence/{FULL}"), &stranger)
        .await;
    assert_eq!(a.status, 403);
    let a = w
        .send(
            Method::GET,
            "/admin/audit/stats",
            Some(&auditor(&w)),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let s = a.json();
    assert_eq!(s["total"], 4, "{s}");
    let sum = |k: &str| -> u64 {
        s["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!((sum("allow"), sum("deny"), sum("error")), (3, 1, 0), "{s}");
    assert_eq!(s["top_clients"][0]["name"], "portal-binhai");
    assert_eq!(s["top_clients"][0]["count"], 3);
    assert_eq!(s["top_clients"][1]["name"], "stranger");
    assert_eq!(s["top_datasets"][0]["name"], "business-licence");
    // Filters narrow it like the query: by the plain subject id.
    let a = w
        .send(
            Method::GET,
            &format!("/admin/audit/stats?subject={FULL}&decision=allow"),
            Some(&auditor(&w)),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(a.json()["total"], 3, "{}", a.text());
    // Same filter validation as the query.
    let a = w
        .send(
            Method::GET,
            "/admin/audit/stats?since=yesterday",
            Some(&auditor(&w)),
            &[],
            Bytes::new(),
        )
        .await;
    assert_problem(&a, 400);
    // Auditors only.
    for t in [
        portal,
        admin(&w),
        w.token("root", &["platform-admin"], None),
    ] {
        let a = w
            .send(
                Method::GET,
                "/admin/audit/stats",
                Some(&t),
                &[],
                Bytes::new(),
            )
            .await;
        assert_problem(&a, 403);
    }
    let a = w
        .send(Method::GET, "/admin/audit/stats", None, &[], Bytes::new())
        .await;
    assert_problem(&a, 401);
}

fn try_body(adapter: Option<&str>, dataset: &str, subject: &str) -> String {
    let mut b = serde_json::json!({"dataset": dataset, "subject": subject});
    if let Some(a) = adapter {
        b["adapter"] = a.into();
    }
    b.to_string()
}

async fn try_it(w: &World, dept: &str, token: Option<&str>, body: String) -> common::Answer {
    w.send(
        Method::POST,
        &format!("/admin/adapters/{dept}/try"),
        token,
        &[("content-type", "application/json")],
        body,
    )
    .await
}

#[tokio::test]
async fn try_it_is_for_that_departments_admin_or_a_platform_admin() {
    let w = world().await;
    let body = || try_body(None, "business-licence", FULL);
    // No token, a bad token: 401.
    assert_problem(&try_it(&w, "market-supervision", None, body()).await, 401);
    assert_problem(
        &try_it(&w, "market-supervision", Some("x.y.z"), body()).await,
        401,
    );
    // A data client, an auditor, another department's admin: 403, audited.
    let other = w.token("hc-admin", &["department-admin"], Some("health-commission"));
    for t in [
        w.token("portal-binhai", &[], None),
        auditor(&w),
        other.clone(),
    ] {
        assert_problem(
            &try_it(&w, "market-supervision", Some(&t), body()).await,
            403,
        );
    }
    let denied = audit_records(&w, "action=admin.adapter.try&decision=deny").await;
    assert_eq!(denied.len(), 3, "{denied:?}");
    assert!(denied.iter().any(|r| r["client"] == "hc-admin"));
    // The department's admin and a platform admin may.
    for t in [admin(&w), w.token("root", &["platform-admin"], None)] {
        let a = try_it(&w, "market-supervision", Some(&t), body()).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.json()["record"]["uscc"], FULL);
        assert_eq!(a.json()["adapter"], "current");
    }
    // A dataset of another department is not this department's to try.
    let a = try_it(
        &w,
        "market-supervision",
        Some(&admin(&w)),
        try_body(None, "household-registration", "120116199203154527"),
    )
    .await;
    assert_problem(&a, 404);
    // Unknown department.
    let a = try_it(
        &w,
        "nowhere",
        Some(&w.token("root", &["platform-admin"], None)),
        body(),
    )
    .await;
    assert_problem(&a, 404);
    // Malformed bodies.
    for bad in [
        "not json".to_string(),
        r#"{"dataset":"business-licence"}"#.to_string(),
        r#"{"dataset":"business-licence","subject":"x","extra":1}"#.to_string(),
    ] {
        assert_problem(
            &try_it(&w, "market-supervision", Some(&admin(&w)), bad).await,
            400,
        );
    }
    let a = try_it(
        &w,
        "market-supervision",
        Some(&admin(&w)),
        try_body(None, "business-licence", "not-a-uscc"),
    )
    .await;
    assert_problem(&a, 400);
}

fn adapter_text(w: &World, dept: &str) -> String {
    std::fs::read_to_string(w.root().join(format!("adapters/{dept}.toml"))).unwrap()
}

#[tokio::test]
async fn try_it_runs_a_draft_without_swapping_caching_or_logging_the_subject() {
    let w = world().await;
    let t = admin(&w);
    let saved = adapter_text(&w, "market-supervision");
    let draft = saved.replace("name = \"/qymc\"", "name = \"/fddbr\"");
    assert_ne!(draft, saved);
    let a = try_it(
        &w,
        "market-supervision",
        Some(&t),
        try_body(Some(&draft), "business-licence", FULL),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json();
    assert_eq!(j["adapter"], "draft");
    assert_eq!(j["upstream_status"], 200);
    assert_eq!(j["record"]["name"], j["record"]["legal_representative"]);
    // Nothing swapped: the file, the admin GET and live reads are unchanged.
    assert_eq!(adapter_text(&w, "market-supervision"), saved);
    let portal = w.token("portal-binhai", &[], None);
    let live = w
        .read(&format!("/v1/datasets/business-licence/{FULL}"), &portal)
        .await;
    assert_eq!(live.status, 200);
    assert_ne!(live.json()["record"]["name"], j["record"]["name"]);
    // Nothing cached: that live read was the first miss, the next one a hit.
    let reads = audit_records(&w, "action=dataset.read").await;
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0]["cache"], "miss", "{reads:?}");
    // Audited with the subject as a reference only.
    let tries = audit_records(&w, &format!("action=admin.adapter.try&subject={FULL}")).await;
    assert_eq!(tries.len(), 1, "{tries:?}");
    let r = &tries[0];
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["client"], "ms-admin");
    assert_eq!(r["department"], "market-supervision");
    assert_eq!(r["dataset"], "business-licence");
    assert!(r["subject_ref"].as_str().unwrap().len() >= 32);
    let log = read_log(w.root());
    assert!(
        !log.contains(FULL),
        "a plain subject id reached the audit log"
    );
}

fn read_log(root: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(root.join("data/audit")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            out.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn try_it_reports_invalid_and_oversized_drafts_and_mapping_causes() {
    let w = world().await;
    let t = admin(&w);
    let saved = adapter_text(&w, "market-supervision");
    // Invalid: 422 naming file, field and fix, as the PUT does.
    let bad = saved.replace("kind = \"rest-json\"", "kind = \"rest-jsn\"");
    let a = try_it(
        &w,
        "market-supervision",
        Some(&t),
        try_body(Some(&bad), "business-licence", FULL),
    )
    .await;
    assert_problem(&a, 422);
    let detail = a.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("adapters/market-supervision.toml"),
        "{detail}"
    );
    assert!(detail.contains("field `kind`"), "{detail}");
    assert!(detail.contains("fix:"), "{detail}");
    // An address the allow-list refuses is refused before any call.
    let elsewhere = common::rewrite_base_url(&saved, "http://169.254.169.254");
    let a = try_it(
        &w,
        "market-supervision",
        Some(&t),
        try_body(Some(&elsewhere), "business-licence", FULL),
    )
    .await;
    assert_problem(&a, 422);
    assert!(a.json()["detail"].as_str().unwrap().contains("base_url"));
    // Hostile input: a 10 MB paste is refused with 413, nothing read past the limit.
    let huge = format!("# {}\n{saved}", "x".repeat(10 * 1024 * 1024));
    let a = try_it(
        &w,
        "market-supervision",
        Some(&t),
        try_body(Some(&huge), "business-licence", FULL),
    )
    .await;
    assert_problem(&a, 413);
    let a = w
        .send(
            Method::PUT,
            "/admin/adapters/market-supervision",
            Some(&t),
            &[("content-type", "application/toml")],
            huge,
        )
        .await;
    assert_problem(&a, 413);
    // A mapping that does not fit the department's reply: 502 with the cause.
    let wrong = saved.replace("record = \"/data\"", "record = \"/nothing-here\"");
    let a = try_it(
        &w,
        "market-supervision",
        Some(&t),
        try_body(Some(&wrong), "business-licence", FULL),
    )
    .await;
    assert_problem(&a, 502);
    assert!(a.json()["cause"].is_string(), "{}", a.text());
    // Not found at the department: 404 record-not-found.
    let a = try_it(
        &w,
        "market-supervision",
        Some(&t),
        try_body(None, "business-licence", "91120116MA07ZZZZZZ"),
    )
    .await;
    assert_problem(&a, 404);
}

// Hostile input: try-it against a department that accepts and never answers:
// 504 within the department's total timeout, and the breaker is not moved.
#[tokio::test]
async fn try_it_against_a_hanging_department_times_out() {
    let w = world().await;
    let t = w.token("fr-admin", &["department-admin"], Some("fire-rescue"));
    for _ in 0..3 {
        let a = tokio::time::timeout(
            Duration::from_secs(10),
            try_it(
                &w,
                "fire-rescue",
                Some(&t),
                try_body(None, "fire-safety-inspection", FULL),
            ),
        )
        .await
        .expect("an answer in bounded time");
        assert_problem(&a, 504);
        assert!(a.json()["detail"].as_str().unwrap().contains("in time"));
    }
    let state = w.gw().data.state.load_full();
    let guard = state.protect.department("fire-rescue").unwrap();
    assert_eq!(guard.breaker().state().as_str(), "closed");
    assert_eq!(guard.bulkhead().in_flight(), 0);
    let tries = audit_records(&w, "action=admin.adapter.try").await;
    assert_eq!(tries.len(), 3);
    assert!(
        tries
            .iter()
            .all(|r| r["decision"] == "error" && r["status"] == 504)
    );
}

// ---------------------------------------------------------------------------
// The browser tests.

/// Why the browser tests cannot run here, if they cannot.
fn browser_missing(dir: &Path, chromium: &Path) -> Option<String> {
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node is not installed (run .ci/setup-browser.sh)".into());
    }
    if !dir.join("node_modules/playwright-core").is_dir() {
        return Some(
            "tests/browser/node_modules/playwright-core is missing (npm ci --prefix tests/browser)"
                .into(),
        );
    }
    if !chromium.is_file() {
        return Some(format!(
            "{} is missing (apt-get install chromium)",
            chromium.display()
        ));
    }
    None
}

/// A day of earlier traffic, written through the audit writer into the
/// project's log before the gateway starts (which then continues the chain),
/// so the chart has a history to show.
async fn seed_history(root: &Path) {
    use onewindow::audit::{Action, AuditEvent, AuditLog, AuditSettings, Decision, FsyncPolicy};
    let settings = AuditSettings {
        fsync: FsyncPolicy::Never,
        ..AuditSettings::default()
    };
    let (log, writer) = AuditLog::open(settings, &root.join("data"), &root.join("certs"))
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let hour = 3_600_000_000i64;
    let clients = ["portal-binhai", "window-app-tianjin", "portal-readonly"];
    let datasets = [
        "business-licence",
        "food-business-permit",
        "health-certificate",
        "fire-safety-inspection",
        "household-registration",
    ];
    let subjects = [FULL, common::NO_FIRE, common::REVOKED];
    for i in 0..160i64 {
        let at = now - 24 * hour + i * (23 * hour / 160);
        let k = i as usize;
        // Mostly allowed, some refusals, a few department time-outs.
        let decision = match k % 23 {
            3 | 11 | 17 => Decision::Deny,
            7 => Decision::Error,
            _ => Decision::Allow,
        };
        let mut ev = AuditEvent::new(Action::DATASET_READ, decision);
        ev.time = onewindow::audit::time::format_rfc3339_micros(at);
        ev.client = Some(clients[(k * 7 / 5) % clients.len()].to_string());
        ev.dataset = Some(datasets[(k * k + k / 3) % datasets.len()].to_string());
        ev.subject_ref = Some(log.subject_ref(subjects[k % subjects.len()]));
        ev.purpose = Some("service-handling".into());
        ev.case_id = Some(format!("BSQ-2026-{:06}", 1000 + k / 4));
        ev.status = Some(match decision {
            Decision::Allow => 200,
            Decision::Deny => 403,
            Decision::Error => 504,
        });
        if decision == Decision::Deny {
            ev.reason = Some("dataset not granted to this client".into());
        }
        log.append(ev).await.unwrap();
    }
    writer.shutdown().await.unwrap();
}

/// Hostile values recorded in the audit log through ordinary requests:
/// `X-End-User`, `X-Case-Id` (printable, so accepted) and a token `sub`
/// (format characters such as U+202E are not controls, so accepted).
const HOSTILE_SCRIPT: &str = "<script>window.__xss=1</script>";
const HOSTILE_IMG: &str = "\"><img src=x onerror=\"window.__xss=2\">";
const HOSTILE_RTL: &str = "evil\u{202E}txt.exe";

#[tokio::test]
async fn console_in_a_real_browser() {
    let dir = common::repo().join("tests/browser");
    let chromium = PathBuf::from(
        std::env::var("ONEWINDOW_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    if let Some(why) = browser_missing(&dir, &chromium) {
        assert!(
            std::env::var("ONEWINDOW_CI_REQUIRE").as_deref() != Ok("1"),
            "browser tests required (ONEWINDOW_CI_REQUIRE=1) but {why}"
        );
        println!("SKIPPED: {why}");
        return;
    }
    let w = World::builder()
        .mock("fire-rescue", hanging_fire_rescue().await)
        .gateway_replace(FIRE_PROTECT.0, FIRE_PROTECT.1)
        .prepare()
        .await;
    seed_history(w.root()).await;
    let w = w.boot().await;
    let portal = w.token("portal-binhai", &[], None);
    let path = format!("/v1/datasets/business-licence/{FULL}");
    // Ordinary traffic for the chart and paging.
    for _ in 0..30 {
        assert_eq!(w.read(&path, &portal).await.status, 200);
    }
    // Hostile records for the subject.
    let a = w
        .send(
            Method::GET,
            &path,
            Some(&portal),
            &[
                ("x-purpose", "service-handling"),
                ("x-end-user", HOSTILE_SCRIPT),
                ("x-case-id", HOSTILE_IMG),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let rtl = w.token(HOSTILE_RTL, &[], None);
    assert_eq!(w.read(&path, &rtl).await.status, 403);
    for _ in 0..3 {
        let stranger = w.token("unknown-client", &[], None);
        assert_eq!(w.read(&path, &stranger).await.status, 403);
    }
    let iss = onewindow::auth::DemoIssuer::load_or_generate(&w.root().join("certs"))
        .unwrap()
        .0;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = iss
        .mint_claims(&serde_json::json!({
            "iss": onewindow::auth::DEMO_ISSUER, "aud": onewindow::auth::DEMO_AUDIENCE,
            "sub": "security-team", "roles": ["auditor"],
            "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600,
        }))
        .unwrap();
    let shots = std::env::var("ONEWINDOW_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.join("out"));
    let mut child = tokio::process::Command::new("node")
        .arg("console.test.mjs")
        .current_dir(&dir)
        .env("CONSOLE_URL", format!("http://{}/console/", w.admin()))
        .env("AUDITOR_TOKEN", auditor(&w))
        .env("ADMIN_TOKEN", admin(&w))
        .env(
            "HANG_TOKEN",
            w.token("fr-admin", &["department-admin"], Some("fire-rescue")),
        )
        .env("PORTAL_TOKEN", &portal)
        .env("EXPIRED_TOKEN", expired)
        .env("SUBJECT", FULL)
        .env("HOSTILE_SCRIPT", HOSTILE_SCRIPT)
        .env("HOSTILE_IMG", HOSTILE_IMG)
        .env("HOSTILE_RTL", HOSTILE_RTL)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let status = tokio::time::timeout(Duration::from_secs(300), child.wait())
        .await
        .expect("browser tests finish within 5 minutes")
        .unwrap();
    assert!(status.success(), "browser tests failed: {status}");
}
