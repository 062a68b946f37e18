//! Issue "Hardening": paths and headers that cannot smuggle, departments in
//! their own lane, clients and roles bound to their issuers. Each test is a
//! hostile input that passed on the earlier build (in-memory harness: the
//! real planes, fake departments that record what they received).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mem::Mem;
use common::{FULL, assert_problem};
use http::Method;
use onewindow::auth::{DEMO_AUDIENCE, DemoIssuer};

// ---- `;` path parameters ----------------------------------------------------

// Hostile input: as portal-readonly (GET under /licences/ only), path
// parameters that Tomcat/Jetty/WebLogic strip before resolving dot-segments.
// Each is refused with 400 problem+json and the department is never called.
#[tokio::test(start_paused = true)]
async fn path_parameters_are_refused_before_grants_and_forwarding() {
    let w = Mem::demo().await;
    let ro = w.token("portal-readonly", &[], None);
    for path in [
        format!("/v1/proxy/market-supervision/licences/..;/api/v2/licences/{FULL}"),
        format!("/v1/proxy/market-supervision/licences/{FULL};x=1"),
        format!("/v1/proxy/market-supervision/licences/;x=1/../../api/v2/licences/{FULL}"),
        format!("/v1/proxy/market-supervision/licences/..%3b/api/v2/licences/{FULL}"),
        format!("/v1/proxy/market-supervision/licences/..%3B/api/v2/licences/{FULL}"),
    ] {
        let a = w.read(&path, &ro).await;
        assert_problem(&a, 400);
        assert!(a.text().contains(';'), "{path}: {}", a.text());
    }
    assert_eq!(w.dept("market-supervision").calls(), 0);
    // The same refusal on a dataset read: one normaliser for every route.
    let binhai = w.token("portal-binhai", &[], None);
    let a = w
        .read(
            &format!("/v1/datasets/business-licence/{FULL};jsessionid=1"),
            &binhai,
        )
        .await;
    assert_problem(&a, 400);
    assert_eq!(w.dept("market-supervision").calls(), 0);
}

// ---- proxy headers by allow-list -------------------------------------------

/// Headers a department (or a proxy in front of it) may read as routing, and
/// the caller's own credentials: none may reach the department.
const DROPPED: [(&str, &str); 14] = [
    ("x-http-method-override", "DELETE"),
    ("x-http-method", "DELETE"),
    ("x-method-override", "DELETE"),
    ("x-original-url", "/admin/delete-all"),
    ("x-rewrite-url", "/admin/delete-all"),
    ("x-forwarded-prefix", "/internal"),
    ("x-forwarded-host", "intranet.example"),
    ("x-forwarded-port", "8443"),
    ("x-forwarded-server", "intranet"),
    ("forwarded", "for=10.0.0.1;host=intranet"),
    ("x-real-ip", "10.0.0.1"),
    ("cookie", "JSESSIONID=abc"),
    ("x-api-version", "9"),
    ("proxy-authorization", "Basic eA=="),
];

/// End-to-end headers a department needs: all arrive as sent.
const KEPT: [(&str, &str); 11] = [
    ("accept", "application/json"),
    ("accept-language", "zh-CN"),
    ("content-type", "application/json"),
    ("if-none-match", "\"v1\""),
    ("if-modified-since", "Sun, 29 Nov 2026 10:00:00 GMT"),
    ("if-match", "\"v1\""),
    ("if-unmodified-since", "Sun, 29 Nov 2026 10:00:00 GMT"),
    ("if-range", "\"v1\""),
    ("range", "bytes=0-99"),
    ("x-end-user", "clerk-wang"),
    ("x-case-id", "BH-2026-0001"),
];

// Hostile input: each routing header on a proxied request. The department
// records what it saw: none of them, nor the caller's Authorization or
// Cookie; the end-to-end headers and the gateway's own are there.
#[tokio::test(start_paused = true)]
async fn proxy_forwards_only_allow_listed_headers() {
    let w = Mem::demo().await;
    let t = w.token("portal-binhai", &[], None);
    let mut call = w
        .get(&format!(
            "/v1/proxy/market-supervision/api/v2/licences/{FULL}"
        ))
        .token(&t)
        .purpose("service-handling");
    for (k, v) in DROPPED.iter().chain(KEPT.iter()) {
        call = call.header(k, v);
    }
    let a = call.send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let got = w.dept("market-supervision").last().unwrap();
    for (k, _) in DROPPED {
        assert_eq!(got.header(k), None, "{k} reached the department");
    }
    assert_eq!(got.header("authorization"), None);
    for (k, v) in KEPT {
        assert_eq!(got.header(k), Some(v), "{k} did not reach the department");
    }
    assert_eq!(got.header("x-purpose"), Some("service-handling"));
    assert!(got.header("x-request-id").is_some());
    assert!(got.header("traceparent").is_some());
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(got.header("via"), Some("1.1 onewindow"));
}

// An adapter may declare extra end-to-end headers its department needs.
#[tokio::test(start_paused = true)]
async fn adapter_declared_headers_are_forwarded() {
    let w = Mem::builder()
        .edit("adapters/market-supervision.toml", |t| {
            t.replacen(
                "kind = \"rest-json\"",
                "kind = \"rest-json\"\nforward_headers = [\"X-Api-Version\"]",
                1,
            )
        })
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let a = w
        .get(&format!(
            "/v1/proxy/market-supervision/api/v2/licences/{FULL}"
        ))
        .token(&t)
        .purpose("service-handling")
        .header("x-api-version", "9")
        .header("x-original-url", "/admin")
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let got = w.dept("market-supervision").last().unwrap();
    assert_eq!(got.header("x-api-version"), Some("9"));
    assert_eq!(got.header("x-original-url"), None);
}

fn ms_admin(w: &Mem) -> String {
    w.token(
        "market-supervision-admin",
        &["department-admin"],
        Some("market-supervision"),
    )
}

async fn put_adapter(w: &Mem, text: String) -> common::Answer {
    w.request(Method::PUT, "/admin/adapters/market-supervision")
        .token(&ms_admin(w))
        .header("content-type", "application/toml")
        .body(text)
        .send()
        .await
}

fn shipped_ms(w: &Mem) -> String {
    std::fs::read_to_string(w.root().join("adapters/market-supervision.toml")).unwrap()
}

// A department admin cannot declare a routing header as "needed".
#[tokio::test(start_paused = true)]
async fn declaring_a_routing_header_is_refused() {
    let w = Mem::demo().await;
    let text = shipped_ms(&w).replacen(
        "kind = \"rest-json\"",
        "kind = \"rest-json\"\nforward_headers = [\"Accept-Version\", \"X-Original-URL\"]",
        1,
    );
    let a = put_adapter(&w, text).await;
    assert_problem(&a, 422);
    assert!(a.text().contains("forward_headers[1]"), "{}", a.text());
}

// ---- department confinement --------------------------------------------------

// Hostile input: a department admin's PUT naming another department's client
// key, or the server's own key. 422 naming the field; nothing replaced.
#[tokio::test(start_paused = true)]
async fn an_adapter_cannot_borrow_another_departments_credentials() {
    let w = Mem::demo().await;
    let before = shipped_ms(&w);
    for (cert, key, field) in [
        (
            "certs/departments/market-supervision/client.pem",
            "certs/departments/fire-rescue/client.key",
            "upstream_auth.client_key",
        ),
        (
            "certs/departments/fire-rescue/client.pem",
            "certs/departments/market-supervision/client.key",
            "upstream_auth.client_cert",
        ),
        (
            "certs/departments/market-supervision/client.pem",
            "certs/dev-server.key",
            "upstream_auth.client_key",
        ),
    ] {
        let text = format!(
            "{before}\n[upstream_auth]\nclient_cert = \"{cert}\"\nclient_key = \"{key}\"\n"
        );
        let a = put_adapter(&w, text).await;
        assert_problem(&a, 422);
        assert!(a.text().contains(field), "{field}: {}", a.text());
    }
    // Another department's secret variable, including the one whose name
    // extends ours (prefix collision under the old `ONEWINDOW_<DEPT>_` rule).
    for env in [
        "ONEWINDOW_DEPT_FIRE_RESCUE__KEY",
        "ONEWINDOW_DEPT_MARKET_SUPERVISION__X__KEY",
        "ONEWINDOW_MARKET_SUPERVISION_KEY",
    ] {
        let text =
            format!("{before}\n[upstream_auth]\nheader = \"X-Api-Key\"\nsecret_env = \"{env}\"\n");
        let a = put_adapter(&w, text).await;
        assert_problem(&a, 422);
        assert!(
            a.text().contains("upstream_auth.secret_env"),
            "{env}: {}",
            a.text()
        );
    }
    assert_eq!(shipped_ms(&w), before, "a refused PUT changes nothing");
}

// ---- clients and roles bound to issuers --------------------------------------

const SECOND: &str = "https://second-idp.example.gov";

/// A second trusted issuer with its own key; every shipped client is bound to
/// the demo issuer, `portal-second` to the second one. The second issuer may
/// grant `auditor` only.
async fn two_issuers() -> (Mem, DemoIssuer, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let (second, _) = DemoIssuer::load_or_generate(keys.path()).unwrap();
    let jwks = DemoIssuer::jwks_path(keys.path());
    let demo_block = "jwks_file = \"certs/demo-issuer.jwks.json\"";
    let w = Mem::builder()
        .gateway_replace(
            demo_block,
            &format!(
                "{demo_block}\nroles = [\"platform-admin\", \"department-admin\", \"auditor\"]\n\n\
                 [[auth.issuers]]\nissuer = \"{SECOND}\"\naudiences = [\"onewindow\"]\n\
                 algorithms = [\"ES256\"]\njwks_file = \"{}\"\nroles = [\"auditor\"]\n",
                jwks.display()
            ),
        )
        .edit("config/clients.toml", |t| {
            let mut out = String::new();
            for line in t.lines() {
                out.push_str(line);
                out.push('\n');
                // Each client's own table (not its sub-tables).
                if line.starts_with("[clients.") && line.matches('.').count() == 1 {
                    out.push_str("issuer = \"https://demo-issuer.onewindow.local\"\n");
                }
            }
            out.push_str(&format!(
                "\n[clients.portal-second]\nissuer = \"{SECOND}\"\npurposes = [\"service-handling\"]\n\
                 [clients.portal-second.datasets.business-licence]\nfields = [\"*\"]\n"
            ));
            out
        })
        .start()
        .await;
    (w, second, keys)
}

fn mint(issuer: &DemoIssuer, iss: &str, sub: &str, roles: &[&str]) -> String {
    mint_for(issuer, iss, sub, roles, None)
}

fn mint_for(
    issuer: &DemoIssuer,
    iss: &str,
    sub: &str,
    roles: &[&str],
    department: Option<&str>,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    issuer
        .mint_claims(&serde_json::json!({
            "iss": iss, "aud": DEMO_AUDIENCE, "sub": sub,
            "iat": now, "exp": now + 600, "roles": roles, "department": department,
        }))
        .unwrap()
}

// Hostile input: a token for `portal-binhai` signed by a second trusted
// issuer. The issuer is trusted (its own client reads), but it does not speak
// for portal-binhai: 403, and the department is never called.
#[tokio::test(start_paused = true)]
async fn a_client_accepts_tokens_only_from_its_issuer() {
    let (w, second, _keys) = two_issuers().await;
    let path = format!("/v1/datasets/business-licence/{FULL}");
    let own = w
        .read(&path, &mint(&second, SECOND, "portal-second", &[]))
        .await;
    assert_eq!(own.status, 200, "{}", own.text());
    let calls = w.dept("market-supervision").calls();

    let forged = mint(&second, SECOND, "portal-binhai", &[]);
    let a = w.read(&path, &forged).await;
    assert_problem(&a, 403);
    assert!(a.text().contains("portal-binhai"), "{}", a.text());
    let a = w.get("/v1/catalog").token(&forged).send().await;
    assert_problem(&a, 403);
    assert_eq!(w.dept("market-supervision").calls(), calls);
    // The demo issuer still speaks for portal-binhai.
    let ok = w.read(&path, &w.token("portal-binhai", &[], None)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

// Same for admin roles: the second issuer may grant `auditor` only, so its
// `platform-admin` claim is ignored (403), its `auditor` claim works.
#[tokio::test(start_paused = true)]
async fn admin_roles_are_bound_to_issuers() {
    let (w, second, _keys) = two_issuers().await;
    let forged = mint(&second, SECOND, "root", &["platform-admin"]);
    let a = w.post("/admin/reload").token(&forged).send().await;
    assert_problem(&a, 403);
    let a = w
        .request(Method::PUT, "/admin/adapters/market-supervision")
        .token(&mint_for(
            &second,
            SECOND,
            "ms-admin",
            &["department-admin"],
            Some("market-supervision"),
        ))
        .header("content-type", "application/toml")
        .body(shipped_ms(&w))
        .send()
        .await;
    assert_problem(&a, 403);
    let auditor = mint(&second, SECOND, "auditor-2", &["auditor"]);
    let a = w.get("/admin/audit").token(&auditor).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    // The demo issuer keeps every role it is bound to.
    let a = w
        .get("/admin/departments")
        .token(&w.token("root", &["platform-admin"], None))
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
}

// ---- cache keys ----------------------------------------------------------------

// Hostile input: a lower-case subject read, then an upper-case invalidation.
// Subject kinds declare their canonical form (USCC upper-case), so both are
// the same record: the invalidation revokes it and the next read is a miss.
#[tokio::test(start_paused = true)]
async fn subjects_are_read_and_invalidated_in_canonical_form() {
    let w = Mem::demo().await;
    let t = w.token("portal-binhai", &[], None);
    let lower = "/v1/datasets/business-licence/91120116ma07t6wn8f";
    let upper = "/v1/datasets/business-licence/91120116MA07T6WN8F";
    let a = w.read(lower, &t).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-cache"), Some("miss"));
    assert_eq!(
        w.dept("market-supervision").last().unwrap().path(),
        "/api/v2/licences/91120116MA07T6WN8F",
        "the department is asked in canonical form"
    );
    let b = w.read(upper, &t).await;
    assert_eq!(b.header("x-cache"), Some("hit"), "one subject, one entry");
    let admin = ms_admin(&w);
    let inv = w
        .post("/admin/cache/invalidate")
        .token(&admin)
        .json(&serde_json::json!({"dataset": "business-licence", "subject": "91120116MA07T6WN8F"}))
        .send()
        .await;
    assert_eq!(inv.status, 200, "{}", inv.text());
    let calls = w.dept("market-supervision").calls();
    let c = w.read(lower, &t).await;
    assert_eq!(c.status, 200, "{}", c.text());
    assert_eq!(c.header("x-cache"), Some("miss"), "invalidated");
    assert_eq!(w.dept("market-supervision").calls(), calls + 1);
    // And the other way round: invalidating in lower case revokes it too.
    let inv = w
        .post("/admin/cache/invalidate")
        .token(&admin)
        .json(&serde_json::json!({"dataset": "business-licence", "subject": "91120116ma07t6wn8f"}))
        .send()
        .await;
    assert_eq!(inv.status, 200, "{}", inv.text());
    assert_eq!(w.read(upper, &t).await.header("x-cache"), Some("miss"));
}

const BIRTH_CERT: &str = "T120116202600001";
const GUARDIAN_ID: &str = "120116199203154527";

// Hostile input: a template that names a co-subject (`{subject.birth_cert}`)
// on a shared dataset. The record fetched for one (guardian, child) pairing
// is never served for another pairing; the same pairing is a hit.
#[tokio::test(start_paused = true)]
async fn co_subjects_are_part_of_the_cache_key() {
    let w = Mem::builder()
        .edit("config/datasets.toml", |t| {
            let at = t.find("[datasets.household-registration]").unwrap();
            let (head, tail) = t.split_at(at);
            format!(
                "{head}{}",
                tail.replacen("shareable = false", "shareable = true", 1)
            )
        })
        .edit("adapters/public-security.toml", |t| {
            t.replacen(
                "query = { id_no = \"{subject}\",",
                "query = { child = \"{subject.birth_cert}\", id_no = \"{subject}\",",
                1,
            )
        })
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let newborn = |birth: &str| {
        let body =
            serde_json::json!({"subjects": {"birth_cert": birth, "guardian_id": GUARDIAN_ID}});
        w.post("/v1/scenarios/newborn")
            .token(&t)
            .purpose("service-handling")
            .json(&body)
    };
    let ps = || w.dept("public-security");
    newborn(BIRTH_CERT).send().await;
    assert_eq!(ps().calls(), 1);
    assert!(
        ps().last().unwrap().path_and_query.contains(BIRTH_CERT),
        "the template uses the co-subject"
    );
    newborn(BIRTH_CERT).send().await;
    assert_eq!(ps().calls(), 1, "same pairing: served from the cache");
    newborn("T120116202600002").send().await;
    assert_eq!(ps().calls(), 2, "another pairing is another record");
    assert!(
        ps().last()
            .unwrap()
            .path_and_query
            .contains("T120116202600002")
    );
}

// Allow-list entries may pin host:port: with market supervision allowed only
// at 127.0.0.1:9, a PUT moving it to another port of the same host is 422
// naming `base_url`; the pinned port itself is accepted.
#[tokio::test(start_paused = true)]
async fn allow_list_port_pins_confine_base_url() {
    let w = Mem::builder()
        .gateway_replace(
            "allow_upstream = [\"loopback\"]",
            "allow_upstream = [\"127.0.0.1:9\"]",
        )
        .start()
        .await;
    let text = shipped_ms(&w);
    let a = put_adapter(&w, common::rewrite_base_url(&text, "http://127.0.0.1:22")).await;
    assert_problem(&a, 422);
    assert!(a.text().contains("base_url"), "{}", a.text());
    let a = put_adapter(&w, common::rewrite_base_url(&text, "http://127.0.0.1:9")).await;
    assert_eq!(a.status, 200, "{}", a.text());
}
