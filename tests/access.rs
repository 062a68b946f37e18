//! Issue "Identity and access", end to end through the gateway: bad tokens,
//! oversized credentials, unregistered clients, grants, field filtering,
//! attribution headers, roles on both planes, tokens kept out of the audit
//! log, and certificate-bound tokens on an mTLS listener.

// `useless_format`: a pre-existing lint in tests/common/mod.rs (append-only for helpers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::useless_format)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use common::mem::Mem;
use common::{Answer, FULL, REVOKED, World, raw_status};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use onewindow::auth::{DEMO_AUDIENCE, DEMO_ISSUER, DemoIssuer};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn issuer(w: &World) -> DemoIssuer {
    DemoIssuer::load_or_generate(&w.root().join("certs"))
        .unwrap()
        .0
}

/// Claims of a valid demo token for `sub`.
fn claims(sub: &str) -> serde_json::Value {
    let t = now();
    serde_json::json!({
        "iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": sub,
        "iat": t, "nbf": t, "exp": t + 600,
    })
}

fn licence_path(subject: &str) -> String {
    format!("/v1/datasets/business-licence/{subject}")
}

/// Sends a request whose header values are given as raw bytes (obs-text).
async fn send_bytes(addr: SocketAddr, path: &str, headers: &[(&str, &[u8])]) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut b = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, HeaderValue::from_bytes(v).unwrap());
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(b.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("answered in time")
    .expect("sent");
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn assert_invalid_token(a: &Answer, token: Option<&str>, what: &str) {
    assert_eq!(a.status, 401, "{what}: {}", a.text());
    assert_eq!(
        a.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\""),
        "{what}"
    );
    assert_eq!(
        a.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    let j = a.json();
    assert_eq!(j["status"], 401, "{what}");
    assert!(j["request_id"].is_string(), "{what}");
    if let Some(t) = token {
        assert!(!a.text().contains(t), "{what}: the body echoes the token");
        // Not even the signature part.
        if let Some(sig) = t.rsplit('.').next().filter(|s| s.len() > 8) {
            assert!(
                !a.text().contains(sig),
                "{what}: the body echoes the signature"
            );
        }
    }
}

// Missing token, Basic scheme, two tokens in one header, two Authorization
// headers, garbage, `alg: none`, expired, wrong aud, wrong iss: each 401.
#[tokio::test]
async fn every_bad_credential_is_401_with_a_bearer_challenge() {
    let w = World::demo().await;
    let iss = issuer(&w);
    let good = w.token("portal-binhai", &[], None);
    let path = licence_path(FULL);
    let purpose = ("x-purpose", "service-handling");

    // Missing.
    let a = w.send(Method::GET, &path, None, &[purpose], "").await;
    assert_invalid_token(&a, None, "missing");

    // Basic scheme, with a real token as the credentials.
    let basic = format!("Basic {good}");
    let a = w
        .send(
            Method::GET,
            &path,
            None,
            &[purpose, ("authorization", &basic)],
            "",
        )
        .await;
    assert_invalid_token(&a, Some(&good), "basic");

    // Two tokens in one header.
    let two = format!("Bearer {good} {good}");
    let a = w
        .send(
            Method::GET,
            &path,
            None,
            &[purpose, ("authorization", &two)],
            "",
        )
        .await;
    assert_invalid_token(&a, Some(&good), "two tokens in one header");
    let comma = format!("Bearer {good}, Bearer {good}");
    let a = w
        .send(
            Method::GET,
            &path,
            None,
            &[purpose, ("authorization", &comma)],
            "",
        )
        .await;
    assert_invalid_token(&a, Some(&good), "two comma-separated credentials");

    // Two Authorization headers, each valid alone.
    let bearer = format!("Bearer {good}");
    let a = w
        .send(
            Method::GET,
            &path,
            None,
            &[
                purpose,
                ("authorization", &bearer),
                ("authorization", &bearer),
            ],
            "",
        )
        .await;
    assert_invalid_token(&a, Some(&good), "two Authorization headers");
    // ... also on the admin plane.
    let admin = w.token("platform-admin", &["platform-admin"], None);
    let admin_bearer = format!("Bearer {admin}");
    let a = w
        .send(
            Method::GET,
            "/admin/adapters",
            None,
            &[
                ("authorization", &admin_bearer),
                ("authorization", &admin_bearer),
            ],
            "",
        )
        .await;
    assert_invalid_token(&a, Some(&admin), "two Authorization headers (admin)");

    // Garbage.
    for garbage in [
        "garbage",
        "a.b.c",
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        "....",
    ] {
        let a = w.read(&path, garbage).await;
        assert_invalid_token(&a, Some(garbage), garbage);
    }

    // alg: none, claims otherwise perfect, no signature (and a junk one).
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims("portal-binhai").to_string());
    for t in [format!("{header}.{body}."), format!("{header}.{body}.AAAA")] {
        let a = w.read(&path, &t).await;
        assert_invalid_token(&a, Some(&t), "alg none");
    }
    // A valid signature's header swapped for HS256 (key confusion).
    let (_, rest) = good.split_once('.').unwrap();
    let hs = format!(
        "{}.{rest}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#)
    );
    let a = w.read(&path, &hs).await;
    assert_invalid_token(&a, Some(&hs), "alg swapped");

    // Expired (well beyond the leeway).
    let mut c = claims("portal-binhai");
    c["iat"] = (now() - 7200).into();
    c["nbf"] = (now() - 7200).into();
    c["exp"] = (now() - 3600).into();
    let expired = iss.mint_claims(&c).unwrap();
    let a = w.read(&path, &expired).await;
    assert_invalid_token(&a, Some(&expired), "expired");

    // Wrong audience, wrong issuer, no sub, not yet valid.
    let mut c = claims("portal-binhai");
    c["aud"] = "someone-else".into();
    let wrong_aud = iss.mint_claims(&c).unwrap();
    let mut c = claims("portal-binhai");
    c["iss"] = "https://evil.example".into();
    let wrong_iss = iss.mint_claims(&c).unwrap();
    let mut c = claims("portal-binhai");
    c.as_object_mut().unwrap().remove("sub");
    let no_sub = iss.mint_claims(&c).unwrap();
    let mut c = claims("portal-binhai");
    c["nbf"] = (now() + 3600).into();
    let future = iss.mint_claims(&c).unwrap();
    for (t, what) in [
        (&wrong_aud, "wrong aud"),
        (&wrong_iss, "wrong iss"),
        (&no_sub, "no sub"),
        (&future, "nbf in the future"),
    ] {
        let a = w.read(&path, t).await;
        assert_invalid_token(&a, Some(t), what);
    }

    // The good token still works (nothing above poisoned anything).
    let a = w.read(&path, &good).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

// A 1 MB Authorization header: 431, before any crypto.
#[tokio::test]
async fn a_megabyte_authorization_header_is_431() {
    let w = World::demo().await;
    let big = "A".repeat(1024 * 1024);
    let req = format!(
        "GET {} HTTP/1.1\r\nhost: x\r\nx-purpose: service-handling\r\nauthorization: Bearer {big}\r\n\r\n",
        licence_path(FULL)
    );
    let (code, text) = raw_status(w.plain(), req.into_bytes()).await;
    assert_eq!(code, Some(431), "{}", &text[..text.len().min(300)]);
    // The gateway is still fine for the next caller.
    let t = w.token("portal-binhai", &[], None);
    assert_eq!(w.read(&licence_path(FULL), &t).await.status, 200);
}

// A token of 100 000 dots: 401 or 431, quickly; and one just under the
// header limit (8000 dots) is a 401.
#[tokio::test]
async fn a_token_of_dots_is_refused() {
    let w = World::demo().await;
    let dots = ".".repeat(100_000);
    let req = format!(
        "GET {} HTTP/1.1\r\nhost: x\r\nx-purpose: service-handling\r\nauthorization: Bearer {dots}\r\n\r\n",
        licence_path(FULL)
    );
    let (code, text) = raw_status(w.plain(), req.into_bytes()).await;
    assert!(
        matches!(code, Some(401 | 431)),
        "{}",
        &text[..text.len().min(300)]
    );
    let dots = ".".repeat(8000);
    let a = w.read(&licence_path(FULL), &dots).await;
    assert_invalid_token(&a, None, "8000 dots");
}

// A token for a client that clients.toml does not know: 403 on reads, an
// empty catalog.
#[tokio::test(start_paused = true)]
async fn an_unregistered_client_is_denied_everything() {
    let w = Mem::demo().await;
    let t = w.token("stranger", &[], None);
    let scenario = format!(r#"{{"subjects":{{"uscc":"{FULL}"}}}}"#);
    for (method, path, body) in [
        (Method::GET, licence_path(FULL), String::new()),
        (
            Method::POST,
            "/v1/scenarios/open-restaurant".into(),
            scenario,
        ),
        (
            Method::GET,
            format!("/v1/proxy/market-supervision/licences/{FULL}"),
            String::new(),
        ),
    ] {
        let a = w
            .request(method.clone(), &path)
            .token(&t)
            .purpose("service-handling")
            .body(body)
            .send()
            .await;
        assert_eq!(a.status, 403, "{method} {path}: {}", a.text());
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
    }
    let a = w.get("/v1/catalog").token(&t).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json();
    for k in ["datasets", "scenarios", "proxy", "purposes"] {
        assert_eq!(j[k], serde_json::json!([]), "{k}: {j}");
    }
    for d in ["market-supervision", "health-commission"] {
        assert_eq!(w.dept(d).calls(), 0, "{d} was called for a stranger");
    }
}

/// (method, path, X-Purpose, body, status, named in the detail, never named).
type Case<'a> = (
    Method,
    &'a str,
    Option<&'a str>,
    &'a str,
    u16,
    &'a str,
    &'a [&'a str],
);

// Ungranted dataset, scenario, purpose, proxy method and path: 403; missing
// X-Purpose: 400. Details name what was asked, never the other grants.
#[tokio::test(start_paused = true)]
async fn ungranted_requests_are_refused_without_listing_grants() {
    let w = Mem::demo().await;
    let t = w.token("portal-readonly", &[], None);
    let scenario = format!(r#"{{"subjects":{{"uscc":"{FULL}"}}}}"#);
    let licence = licence_path(FULL);
    let proxied = format!("/v1/proxy/market-supervision/licences/{FULL}");
    let health = format!("/v1/proxy/health-commission/licences/{FULL}");
    let permit = format!("/v1/datasets/food-business-permit/{FULL}");
    let purpose = Some("service-handling");
    // (method, path, X-Purpose, body, status, named in the detail, never named)
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Method::GET, &permit, purpose, "", 403, "food-business-permit",
         &["business-licence", "service-handling"]),
        (Method::POST, "/v1/scenarios/open-restaurant", purpose, &scenario, 403,
         "open-restaurant", &["business-licence", "newborn"]),
        (Method::GET, &licence, Some("marketing"), "", 403, "marketing", &["service-handling"]),
        (Method::GET, &licence, None, "", 400, "X-Purpose", &["service-handling"]),
        (Method::POST, &proxied, purpose, "{}", 403, "POST", &["GET"]),
        (Method::GET, "/v1/proxy/market-supervision/api/v2/other", purpose, "", 403,
         "/api/v2/other", &["/licences/"]),
        // A prefix matches whole segments only.
        (Method::GET, "/v1/proxy/market-supervision/licencesX/1", purpose, "", 403,
         "/licencesX/1", &["/licences/"]),
        (Method::GET, &health, purpose, "", 403, "health-commission", &["market-supervision"]),
    ];
    for (method, path, purpose, body, status, names, never) in cases {
        let mut call = w
            .request(method.clone(), path)
            .token(&t)
            .body(body.to_string());
        if let Some(p) = purpose {
            call = call.purpose(p);
        }
        let a = call.send().await;
        let what = format!("{method} {path} ({purpose:?})");
        assert_eq!(a.status, status, "{what}: {}", a.text());
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
        let detail = a.json()["detail"].as_str().unwrap().to_string();
        assert!(
            detail.contains(names),
            "{what}: {detail} should name {names}"
        );
        for n in never {
            assert!(!detail.contains(n), "{what}: {detail} lists a grant ({n})");
        }
    }
    assert_eq!(w.dept("market-supervision").calls(), 0);
    assert_eq!(w.dept("health-commission").calls(), 0);
}

// A client granted only some fields of business-licence sees exactly those,
// before and after another client filled the shared cache.
#[tokio::test]
async fn field_grants_filter_the_record() {
    let w = World::builder()
        .clients_extra(
            r#"
[clients.portal-narrow]
description = "sees three fields of a licence"
purposes = ["service-handling"]
[clients.portal-narrow.datasets.business-licence]
fields = ["uscc", "name", "status"]
"#,
        )
        .start()
        .await;
    let narrow = w.token("portal-narrow", &[], None);
    let wide = w.token("portal-binhai", &[], None);
    let keys = |a: &Answer| {
        assert_eq!(a.status, 200, "{}", a.text());
        let mut k: Vec<String> = a.json()["record"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    // Narrow first (a miss), then wide (a hit must not be the filtered copy).
    let a = w.read(&licence_path(FULL), &narrow).await;
    assert_eq!(keys(&a), ["name", "status", "uscc"]);
    assert_eq!(a.json()["record"]["uscc"], FULL);
    let b = w.read(&licence_path(FULL), &wide).await;
    assert_eq!(b.header("x-cache"), Some("hit"));
    assert!(keys(&b).contains(&"legal_representative".to_string()));
    // Wide first, then narrow from the cache.
    let b = w.read(&licence_path(REVOKED), &wide).await;
    assert!(keys(&b).len() > 3);
    let a = w.read(&licence_path(REVOKED), &narrow).await;
    assert_eq!(a.header("x-cache"), Some("hit"));
    assert_eq!(keys(&a), ["name", "status", "uscc"]);
    assert_eq!(a.json()["record"]["status"], "revoked");
    // The catalog shows the narrow client its fields.
    let c = w
        .send(Method::GET, "/v1/catalog", Some(&narrow), &[], "")
        .await
        .json();
    assert_eq!(
        c["datasets"][0]["fields"],
        serde_json::json!(["name", "status", "uscc"])
    );
}

// X-End-User / X-Case-Id / X-Purpose with control characters, obs-text or
// more than 128 bytes: 400 naming the header. CR/LF/NUL on the wire: 400.
#[tokio::test]
async fn hostile_attribution_headers_are_400_naming_the_header() {
    let w = World::demo().await;
    let t = w.token("portal-binhai", &[], None);
    let auth = format!("Bearer {t}");
    let long = vec![b'a'; 129];
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("x-end-user", "X-End-User", b"clerk\tone".to_vec()),
        ("x-end-user", "X-End-User", b"\xff\xfe".to_vec()),
        ("x-end-user", "X-End-User", "a\u{202E}b".as_bytes().to_vec()),
        ("x-end-user", "X-End-User", "a\u{85}b".as_bytes().to_vec()),
        ("x-end-user", "X-End-User", long.clone()),
        ("x-case-id", "X-Case-Id", long.clone()),
        ("x-case-id", "X-Case-Id", b"\xc3".to_vec()),
        ("x-case-id", "X-Case-Id", b"   ".to_vec()),
    ];
    for (name, display, value) in &cases {
        let a = send_bytes(
            w.plain(),
            &licence_path(FULL),
            &[
                ("authorization", auth.as_bytes()),
                ("x-purpose", b"service-handling"),
                (name, value),
            ],
        )
        .await;
        assert_eq!(a.status, 400, "{display} {value:?}: {}", a.text());
        let detail = a.json()["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(display), "{detail} should name {display}");
        assert!(
            !detail.contains("clerk") && !detail.contains("aaaa"),
            "{detail} echoes the value"
        );
    }
    // Exactly 128 bytes is fine.
    let ok = vec![b'a'; 128];
    let a = send_bytes(
        w.plain(),
        &licence_path(FULL),
        &[
            ("authorization", auth.as_bytes()),
            ("x-purpose", b"service-handling"),
            ("x-case-id", &ok),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    // Given twice.
    let a = send_bytes(
        w.plain(),
        &licence_path(FULL),
        &[
            ("authorization", auth.as_bytes()),
            ("x-purpose", b"service-handling"),
            ("x-end-user", b"a"),
            ("x-end-user", b"b"),
        ],
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("X-End-User"));

    // Bytes no HTTP client library will send: straight onto the socket. The
    // parser refuses them (400) before the request is routed.
    for (name, raw) in [
        ("X-End-User", &b"a\rb"[..]),
        ("X-Case-Id", b"a\x00b"),
        ("X-End-User", b"a\x7fb"),
        ("X-Case-Id", b"a\x01b"),
        ("X-Case-Id", b"c\x1b[31m"),
    ] {
        let mut req = format!(
            "GET {} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\nx-purpose: service-handling\r\n{name}: ",
            licence_path(FULL)
        )
        .into_bytes();
        req.extend_from_slice(raw);
        req.extend_from_slice(b"\r\n\r\n");
        let (code, text) = raw_status(w.plain(), req).await;
        assert_eq!(code, Some(400), "{name} {raw:?}: {text}");
        assert!(!text.contains("\"record\""), "{text}");
    }
    // A bare LF splits the header in two; the injected header is then an
    // ordinary unknown header and the value before it is still checked.
    let req = format!(
        "GET {} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\nx-purpose: service-handling\r\nX-End-User: a\nX-End-User: b\r\n\r\n",
        licence_path(FULL)
    );
    let (code, text) = raw_status(w.plain(), req.into_bytes()).await;
    assert_eq!(code, Some(400), "{text}");
}

// Roles: an auditor cannot read data; a portal cannot reach the admin plane;
// a department admin cannot act for another department.
#[tokio::test(start_paused = true)]
async fn roles_are_kept_apart() {
    let w = Mem::demo().await;
    let auditor = w.token("auditor", &["auditor"], None);
    let a = w.read(&licence_path(FULL), &auditor).await;
    assert_eq!(a.status, 403, "{}", a.text());
    let portal = w.token("portal-binhai", &[], None);
    // A role claim for a client is only as good as its name: unknown roles give nothing.
    let fake = w.token("portal-binhai", &["superuser", "admin"], None);
    let ms = w.token(
        "market-supervision-admin",
        &["department-admin"],
        Some("market-supervision"),
    );
    // A department-admin token without a department claim is nobody's admin.
    let nodept = w.token("market-supervision-admin", &["department-admin"], None);
    let other = w.root().join("adapters/health-commission.toml");
    let before = std::fs::read_to_string(&other).unwrap();
    let invalidate_ms = r#"{"dataset":"business-licence"}"#;
    let invalidate_hc = r#"{"dataset":"health-certificate"}"#;
    // (who, method, path, body): every one 403 problem+json.
    #[rustfmt::skip]
    let refused: Vec<(&str, Method, &str, &str)> = vec![
        // A portal token claiming no role gets no admin powers.
        (&portal, Method::GET, "/admin/adapters", ""),
        (&portal, Method::GET, "/admin/adapters/market-supervision", ""),
        (&portal, Method::GET, "/admin/audit", ""),
        (&portal, Method::GET, "/admin/audit/verify", ""),
        (&portal, Method::POST, "/admin/reload", ""),
        (&portal, Method::POST, "/admin/cache/invalidate", invalidate_ms),
        (&fake, Method::GET, "/admin/adapters", ""),
        // A department admin, for another department.
        (&ms, Method::GET, "/admin/adapters/health-commission", ""),
        (&ms, Method::PUT, "/admin/adapters/health-commission", &before),
        (&ms, Method::DELETE, "/admin/adapters/health-commission", ""),
        (&ms, Method::POST, "/admin/cache/invalidate", invalidate_hc),
        (&nodept, Method::GET, "/admin/adapters/market-supervision", ""),
    ];
    for (who, m, p, body) in refused {
        let a = w
            .request(m.clone(), p)
            .token(who)
            .header("content-type", "application/toml")
            .body(body.to_string())
            .send()
            .await;
        assert_eq!(a.status, 403, "{m} {p}: {}", a.text());
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
        assert!(!a.text().contains("base_url"));
    }
    assert_eq!(std::fs::read_to_string(&other).unwrap(), before);
    // Its own department works, and the other department is still served.
    let a = w
        .post("/admin/cache/invalidate")
        .token(&ms)
        .body(invalidate_ms)
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = w
        .read(&format!("/v1/datasets/health-certificate/{FULL}"), &portal)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

// Tokens never reach the audit log, whether the request was allowed or denied.
#[tokio::test]
async fn tokens_never_reach_the_audit_log() {
    let w = World::demo().await;
    let iss = issuer(&w);
    let good = w.token("portal-binhai", &[], None);
    let readonly = w.token("portal-readonly", &[], None);
    let admin = w.token("platform-admin", &["platform-admin"], None);
    let mut c = claims("portal-binhai");
    c["exp"] = (now() - 3600).into();
    let expired = iss.mint_claims(&c).unwrap();
    let mut c = claims("portal-binhai");
    c["aud"] = "other".into();
    let wrong_aud = iss.mint_claims(&c).unwrap();
    let path = licence_path(FULL);
    assert_eq!(w.read(&path, &good).await.status, 200);
    assert_eq!(
        w.read(
            &format!("/v1/datasets/food-business-permit/{FULL}"),
            &readonly
        )
        .await
        .status,
        403
    );
    assert_eq!(w.read(&path, &expired).await.status, 401);
    assert_eq!(w.read(&path, &wrong_aud).await.status, 401);
    assert_eq!(w.read(&path, "not-a-token-XYZZY").await.status, 401);
    let a = w
        .send(
            Method::POST,
            "/admin/cache/invalidate",
            Some(&admin),
            &[],
            r#"{"dataset":"business-licence"}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let mut files = Vec::new();
    files_under(&w.root().join("data/audit"), &mut files);
    let mut all = String::new();
    for f in &files {
        all.push_str(&String::from_utf8_lossy(&std::fs::read(f).unwrap()));
    }
    // The log did record these requests (so the check below means something).
    assert!(
        all.contains("dataset.read") && all.contains("auth.denied"),
        "{all}"
    );
    assert!(all.contains("admin.cache.invalidate"), "{all}");
    for t in [&good, &readonly, &admin, &expired, &wrong_aud] {
        for part in t.split('.') {
            assert!(!all.contains(part), "audit log holds a token part");
        }
    }
    assert!(!all.contains("XYZZY"), "audit log holds a garbage token");
}

// --- mTLS and certificate-bound tokens ---

struct ClientCert {
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    sha256: [u8; 32],
}

/// Writes a client CA into `certs_dir/clients-ca.pem` and returns two client
/// certificates it issued.
fn client_pki(certs_dir: &Path) -> (ClientCert, ClientCert) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "test clients CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(certs_dir.join("clients-ca.pem"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let mk = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer).unwrap();
        let der = cert.der().clone();
        ClientCert {
            sha256: Sha256::digest(der.as_ref()).into(),
            chain: vec![der],
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    };
    (mk("portal-binhai"), mk("someone-else"))
}

/// One GET over TLS to `addr`, presenting `cert` when given.
async fn tls_get(
    addr: SocketAddr,
    ca_pem: &Path,
    cert: Option<&ClientCert>,
    path: &str,
    token: &str,
) -> Result<Answer, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in onewindow::certs::load_certs(ca_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match cert {
        Some(c) => b
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .header("x-purpose", "service-handling")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), send.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.map_err(|e| e.to_string())?.to_bytes(),
    })
}

// Certificate-bound tokens (RFC 8705) on an mTLS listener: accepted with the
// bound certificate; 401 with another certificate or none.
#[tokio::test]
async fn certificate_bound_tokens_need_their_certificate() {
    let w = World::builder()
        .gateway_replace(
            "# client_ca = \"certs/clients-ca.pem\"",
            "client_ca = \"certs/clients-ca.pem\"",
        )
        .prepare()
        .await;
    let (mine, theirs) = client_pki(&w.root().join("certs"));
    let w = w.boot().await;
    let addr = w.gw().tls_addr.expect("TLS listener");
    let ca = onewindow::certs::dev_ca_path(&w.root().join("certs"));
    let iss = issuer(&w);
    let bound = |sha: &[u8; 32]| {
        let mut c = claims("portal-binhai");
        c["cnf"] = serde_json::json!({"x5t#S256": URL_SAFE_NO_PAD.encode(sha)});
        iss.mint_claims(&c).unwrap()
    };
    let path = licence_path(FULL);

    // (a) The bound certificate: accepted (first verified, then from the token cache).
    let t = bound(&mine.sha256);
    for _ in 0..2 {
        let a = tls_get(addr, &ca, Some(&mine), &path, &t).await.unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
    }
    // (b) Another client certificate from the same CA: 401 (cached token) ...
    let a = tls_get(addr, &ca, Some(&theirs), &path, &t).await.unwrap();
    assert_invalid_token(&a, Some(&t), "other certificate (cached token)");
    // ... and a fresh token bound to `mine` presented first with `theirs`.
    let t2 = {
        let mut c = claims("portal-binhai");
        c["jti"] = "second".into();
        c["cnf"] = serde_json::json!({"x5t#S256": URL_SAFE_NO_PAD.encode(mine.sha256)});
        iss.mint_claims(&c).unwrap()
    };
    let a = tls_get(addr, &ca, Some(&theirs), &path, &t2).await.unwrap();
    assert_invalid_token(&a, Some(&t2), "other certificate (fresh token)");
    // (c) No client certificate: 401, cached or fresh.
    let a = tls_get(addr, &ca, None, &path, &t).await.unwrap();
    assert_invalid_token(&a, Some(&t), "no certificate (cached token)");
    let t3 = {
        let mut c = claims("portal-binhai");
        c["jti"] = "third".into();
        c["cnf"] = serde_json::json!({"x5t#S256": URL_SAFE_NO_PAD.encode(mine.sha256)});
        iss.mint_claims(&c).unwrap()
    };
    let a = tls_get(addr, &ca, None, &path, &t3).await.unwrap();
    assert_invalid_token(&a, Some(&t3), "no certificate (fresh token)");
    // The plain listener has no certificate either.
    let a = w.read(&path, &t3).await;
    assert_invalid_token(&a, Some(&t3), "plain listener");
    // A malformed binding is refused too.
    let mut c = claims("portal-binhai");
    c["cnf"] = serde_json::json!({"x5t#S256": "not-a-hash"});
    let bad = iss.mint_claims(&c).unwrap();
    let a = tls_get(addr, &ca, Some(&mine), &path, &bad).await.unwrap();
    assert_invalid_token(&a, Some(&bad), "malformed cnf");
    // An unbound token is fine on the mTLS listener, with or without a certificate.
    let plain = w.token("portal-binhai", &[], None);
    let a = tls_get(addr, &ca, Some(&theirs), &path, &plain)
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let a = tls_get(addr, &ca, None, &path, &plain).await.unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    // And a certificate-bound token on the admin plane (plain HTTP): 401.
    let mut c = claims("platform-admin");
    c["roles"] = serde_json::json!(["platform-admin"]);
    c["cnf"] = serde_json::json!({"x5t#S256": URL_SAFE_NO_PAD.encode(mine.sha256)});
    let adm = iss.mint_claims(&c).unwrap();
    let a = w
        .send(Method::GET, "/admin/adapters", Some(&adm), &[], "")
        .await;
    assert_invalid_token(&a, Some(&adm), "bound token on the admin plane");
}
