//! Issue 13 (contract part): HEAD wherever GET works, parse-level refusals
//! as problem+json, and the OpenAPI document a portal generates its client
//! from.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mem::Mem;
use common::{Answer, FULL};
use http::Method;

/// Every GET route of both planes that answers 200 in the demo world, with
/// the token it needs (None: open route).
fn get_routes(w: &Mem) -> Vec<(String, Option<String>)> {
    let portal = w.token("portal-binhai", &[], None);
    let admin = w.token("platform-admin", &["platform-admin"], None);
    let auditor = w.token("auditor", &["auditor"], None);
    vec![
        ("/healthz".into(), None),
        ("/readyz".into(), None),
        ("/metrics".into(), None),
        ("/admin/openapi.json".into(), None),
        ("/v1/catalog".into(), Some(portal.clone())),
        ("/v1/scenarios".into(), Some(portal.clone())),
        ("/v1/scenarios/open-restaurant".into(), Some(portal.clone())),
        (
            format!("/v1/datasets/business-licence/{FULL}"),
            Some(portal.clone()),
        ),
        ("/admin/adapters".into(), Some(admin.clone())),
        (
            "/admin/adapters/market-supervision".into(),
            Some(admin.clone()),
        ),
        ("/admin/departments".into(), Some(admin)),
        ("/admin/audit?limit=1".into(), Some(auditor.clone())),
        ("/admin/audit/verify".into(), Some(auditor)),
    ]
}

async fn call(w: &Mem, method: Method, path: &str, token: Option<&str>) -> Answer {
    let mut c = w.request(method, path).purpose("service-handling");
    if let Some(t) = token {
        c = c.token(t);
    }
    c.send().await
}

/// Headers whose value legitimately differs between two answers.
const VARYING: &[&str] = &["x-request-id", "date", "ratelimit", "ratelimit-policy"];

// Hostile input: HEAD where GET works was 405. Now every GET route of both
// planes answers HEAD with the GET's status and headers and no body.
#[tokio::test(start_paused = true)]
async fn head_answers_like_get_without_a_body_on_every_get_route() {
    let w = Mem::demo().await;
    for (path, token) in get_routes(&w) {
        // A first GET warms the cache, so the HEAD and the GET compared
        // below both read the same cached record.
        let warm = call(&w, Method::GET, &path, token.as_deref()).await;
        assert_eq!(warm.status, 200, "GET {path}: {}", warm.text());
        let head = call(&w, Method::HEAD, &path, token.as_deref()).await;
        let get = call(&w, Method::GET, &path, token.as_deref()).await;
        assert_eq!(head.status, get.status, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} has a body");
        for (name, value) in &get.headers {
            if VARYING.contains(&name.as_str()) {
                assert!(head.headers.contains_key(name), "HEAD {path}: no {name}");
                continue;
            }
            assert_eq!(
                head.headers.get(name),
                Some(value),
                "HEAD {path}: header {name}"
            );
        }
        // The length the GET's body would have had (metrics and the audit
        // pages may grow between the two calls).
        let len: usize = head.header("content-length").unwrap().parse().unwrap();
        if !path.starts_with("/metrics") && !path.starts_with("/admin/audit") {
            assert_eq!(len, get.body.len(), "HEAD {path}: content-length");
        }
    }
}

// A HEAD the GET would refuse is refused the same way (status and problem
// type in the headers), without a body.
#[tokio::test(start_paused = true)]
async fn head_is_refused_like_get() {
    let w = Mem::demo().await;
    let stranger = w.token("stranger", &[], None);
    let portal = w.token("portal-binhai", &[], None);
    let cases: [(&str, Option<&str>, u16); 5] = [
        ("/v1/catalog", None, 401),
        (
            "/v1/datasets/business-licence/91120116MA07Q8XJ2K",
            Some(&stranger),
            403,
        ),
        ("/v1/datasets/no-such-dataset/x", Some(&portal), 404),
        ("/admin/adapters", None, 401),
        ("/admin/nothing-here", None, 404),
    ];
    for (path, token, status) in cases {
        let get = call(&w, Method::GET, path, token).await;
        assert_eq!(get.status, status, "GET {path}: {}", get.text());
        let head = call(&w, Method::HEAD, path, token).await;
        assert_eq!(head.status, status, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} has a body");
        assert_eq!(
            head.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(
            head.header("content-length"),
            Some(get.body.len().to_string().as_str()),
            "HEAD {path}"
        );
    }
    // HEAD does not open routes that have no GET.
    for path in ["/v1/cases/C-1/refresh", "/admin/reload"] {
        let a = call(&w, Method::HEAD, path, Some(&portal)).await;
        assert_eq!(a.status, 405, "HEAD {path}");
        assert!(a.body.is_empty());
    }
}

// A HEAD data read is audited as the GET would be: a `dataset.read` record
// for the client, allowed, with the same fields.
#[tokio::test(start_paused = true)]
async fn head_read_is_audited_as_a_read() {
    let w = Mem::demo().await;
    let portal = w.token("portal-binhai", &[], None);
    let auditor = w.token("auditor", &["auditor"], None);
    let path = format!("/v1/datasets/business-licence/{FULL}");
    let head = w
        .request(Method::HEAD, &path)
        .token(&portal)
        .purpose("service-handling")
        .header("x-request-id", "head-read-1")
        .send()
        .await;
    assert_eq!(head.status, 200);
    let a = w
        .get("/admin/audit?client=portal-binhai&action=dataset.read")
        .token(&auditor)
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let records = a.json()["records"].as_array().unwrap().clone();
    let r = records
        .iter()
        .find(|r| r["request_id"] == "head-read-1")
        .unwrap_or_else(|| panic!("no record for the HEAD read: {records:?}"));
    assert_eq!(r["decision"], "allow", "{r}");
    assert_eq!(r["dataset"], "business-licence", "{r}");
    assert_eq!(r["purpose"], "service-handling", "{r}");
}

// Hostile input: a head over the configured limit (32 KiB) but under the
// parser's ceiling is refused by the gateway itself: 431 problem+json.
#[tokio::test]
async fn oversized_head_is_a_problem_json_431() {
    let w = common::World::builder().start().await;
    let t = w.token("portal-binhai", &[], None);
    let big = "a".repeat(40 * 1024);
    let req = format!(
        "GET /v1/catalog HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {t}\r\n\
         X-Big: {big}\r\nConnection: close\r\n\r\n"
    );
    let (resp, _) = common::raw_exchange(
        w.plain(),
        req.as_bytes(),
        std::time::Duration::from_secs(10),
    )
    .await;
    assert_eq!(common::status_of(&resp), Some(431), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{resp}"
    );
    assert!(resp.contains("\"status\":431"), "{resp}");
}

// hyper answers a head it cannot parse by itself (documented in README):
// a malformed request line is a bare 400 and never reaches the pipeline.
#[tokio::test]
async fn unparseable_head_is_refused_by_the_parser() {
    let w = common::World::builder().start().await;
    let (resp, _) = common::raw_exchange(
        w.plain(),
        b"GET /v1/catalog HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        std::time::Duration::from_secs(10),
    )
    .await;
    assert_eq!(common::status_of(&resp), Some(400), "{resp}");
}

// The document a portal generates its client from: attribution headers,
// bearer security, per-dataset record schemas from datasets.toml, scenario
// bodies from the scenario files, problem+json errors, the proxy note.
#[tokio::test(start_paused = true)]
async fn openapi_is_complete_enough_to_generate_a_client() {
    let w = Mem::demo().await;
    let a = w.get("/admin/openapi.json").send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let doc = a.json();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let read = &doc["paths"]["/v1/datasets/business-licence/{subject}"]["get"];
    let params = read["parameters"].as_array().unwrap();
    let named = |n: &str| {
        params
            .iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("no parameter {n}: {read}"))
    };
    assert_eq!(named("X-Purpose")["required"], true);
    assert_eq!(named("X-Purpose")["in"], "header");
    assert_eq!(named("X-End-User")["required"], false);
    assert_eq!(named("X-Case-Id")["in"], "header");
    assert_eq!(named("X-Request-Id")["in"], "header");
    assert_eq!(named("subject")["in"], "path");
    assert_eq!(named("subject")["schema"]["maxLength"], 18);
    assert_eq!(read["security"][0]["bearer"], serde_json::json!([]));
    let ok = &read["responses"]["200"]["content"]["application/json"];
    assert_eq!(
        ok["schema"]["properties"]["record"]["$ref"],
        "#/components/schemas/BusinessLicenceRecord"
    );
    assert!(ok["example"]["record"]["uscc"].is_string());
    let err = &read["responses"]["404"]["content"]["application/problem+json"]["schema"];
    assert_eq!(err["$ref"], "#/components/schemas/Problem");

    // Record schema = the canonical fields of datasets.toml, typed.
    let rec = &doc["components"]["schemas"]["BusinessLicenceRecord"]["properties"];
    let text = std::fs::read_to_string(common::repo().join("config/datasets.toml")).unwrap();
    let cfg: toml::Value = toml::from_str(&text).unwrap();
    let fields = cfg["datasets"]["business-licence"]["fields"]
        .as_table()
        .unwrap();
    assert_eq!(rec.as_object().unwrap().len(), fields.len(), "{rec}");
    for (name, _) in fields {
        assert!(rec.get(name).is_some(), "field {name} missing: {rec}");
    }
    assert_eq!(rec["valid_until"]["format"], "date");

    // Scenario body from the scenario file: the subject kinds it needs.
    let sc = &doc["paths"]["/v1/scenarios/newborn"]["post"];
    let body = &sc["requestBody"]["content"]["application/json"]["schema"];
    let subjects = &body["properties"]["subjects"];
    assert!(subjects["properties"]["birth_cert"].is_object(), "{sc}");
    assert!(subjects["properties"]["guardian_id"].is_object(), "{sc}");
    assert!(sc["responses"]["424"].is_object());

    // Problem schema and the proxy note.
    let problem = &doc["components"]["schemas"]["Problem"];
    for f in ["type", "title", "status", "detail", "request_id"] {
        assert!(problem["properties"][f].is_object(), "{f}");
    }
    let proxy =
        doc["paths"]["/v1/proxy/{department}/{path}"]["get"]["responses"]["200"]["description"]
            .as_str()
            .unwrap();
    assert!(proxy.contains("department's own"), "{proxy}");
    // Open routes have no security requirement, the others do.
    assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());
    assert!(doc["paths"]["/admin/adapters"]["get"]["security"].is_array());
}
