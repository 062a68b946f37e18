//! Signed records and conditional sharing, end to end: a portal archives a
//! record and proves it later offline with the gateway's public key
//! (`onewindow record verify`, run as the real binary); conditional datasets
//! flow only under live approvals that the audit log names.

// Helpers panic on unexpected answers; that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{FULL, NO_FIRE, World, assert_problem};
use http::Method;
use serde_json::{Value, json};

const GUARDIAN: &str = "120116199203154527";
const BIRTH_CERT: &str = "T120116202600001";

fn licence(s: &str) -> String {
    format!("/v1/datasets/business-licence/{s}")
}

/// Runs `onewindow record verify` on `doc`; returns (exit code, stdout).
fn record_verify(w: &World, doc: &Value, via_stdin: bool, jwks: Option<&Path>) -> (i32, String) {
    let file = w.root().join("saved-reply.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onewindow"));
    cmd.arg("--config")
        .arg(w.config())
        .arg("record")
        .arg("verify");
    if !via_stdin {
        cmd.arg(&file);
    }
    if let Some(j) = jwks {
        cmd.arg("--jwks").arg(j);
    }
    cmd.stdin(if via_stdin {
        Stdio::from(std::fs::File::open(&file).unwrap())
    } else {
        Stdio::null()
    });
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn jwks_file(w: &World) -> std::path::PathBuf {
    let a = w
        .send(Method::GET, "/.well-known/jwks.json", None, &[], "")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let path = w.root().join("served-jwks.json");
    std::fs::write(&path, &a.body).unwrap();
    path
}

#[tokio::test]
async fn dataset_reply_is_signed_and_verifies_offline() {
    let w = World::demo().await;
    let portal = w.token("portal-binhai", &[], None);
    let a = w.read(&licence(FULL), &portal).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let reply = a.json();
    assert_eq!(
        reply["source"]["issuer"],
        "天津市市场监督管理委员会 / Tianjin Market Supervision Administration"
    );
    let sig = reply["signature"].as_str().unwrap();
    let parts: Vec<_> = sig.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[1], "", "detached payload");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");

    // The public keys, without a token; no private member anywhere.
    let served = jwks_file(&w).await;
    let jwks: Value = serde_json::from_slice(&std::fs::read(&served).unwrap()).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert_eq!(key["kid"], header["kid"]);
    assert!(key.get("d").is_none());

    // Offline, from a file and from standard input, with the served JWKS
    // and with the default (the certs dir's record-signing JWKS).
    let (code, out) = record_verify(&w, &reply, false, Some(&served));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("valid"), "{out}");
    let (code, out) = record_verify(&w, &reply, true, None);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn hostile_replies_fail_record_verify() {
    let w = World::demo().await;
    let portal = w.token("portal-binhai", &[], None);
    let a = w.read(&licence(FULL), &portal).await.json();
    let b = w.read(&licence(NO_FIRE), &portal).await.json();
    let jwks = jwks_file(&w).await;

    // One byte of the record changed.
    let text = serde_json::to_string(&a).unwrap();
    let name = a["record"]["name"].as_str().unwrap().to_string();
    let mut bytes = name.clone().into_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let changed_name = String::from_utf8(bytes).unwrap_or_else(|_| format!("{name}X"));
    let changed: Value = serde_json::from_str(&text.replace(&name, &changed_name)).unwrap();
    assert_ne!(changed, a);
    let (code, out) = record_verify(&w, &changed, false, Some(&jwks));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not match"), "{out}");

    // The signature moved to another record.
    let mut moved = b.clone();
    moved["signature"] = a["signature"].clone();
    let (code, out) = record_verify(&w, &moved, false, Some(&jwks));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not match"), "{out}");

    // `alg` changed to `none` (signature dropped, as `none` would have it).
    let sig = a["signature"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(sig.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let kid = header["kid"].as_str().unwrap();
    let mut none = a.clone();
    none["signature"] = json!(format!(
        "{}..",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#))
    ));
    let (code, out) = record_verify(&w, &none, true, Some(&jwks));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("`none`"), "{out}");

    // HS256 keyed with the gateway's public key over the right payload.
    let public = {
        let j: Value = serde_json::from_slice(&std::fs::read(&jwks).unwrap()).unwrap();
        j["keys"][0]["x"].as_str().unwrap().to_string()
    };
    let mut payload = a.as_object().unwrap().clone();
    payload.remove("signature");
    payload["source"].as_object_mut().unwrap().remove("cache");
    let canonical = serde_json_canonicalizer::to_vec(&payload).unwrap();
    let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#));
    let input = format!("{h}.{}", URL_SAFE_NO_PAD.encode(&canonical));
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(public.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let mut hs = a.clone();
    hs["signature"] = json!(format!(
        "{h}..{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    ));
    let (code, out) = record_verify(&w, &hs, false, Some(&jwks));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("HS256"), "{out}");

    // The untouched reply still verifies (the checks above failed for their reason).
    assert_eq!(record_verify(&w, &a, false, Some(&jwks)).0, 0);
}

#[tokio::test]
async fn a_cached_record_is_signed_once_per_projection() {
    let w = World::builder()
        .clients_extra(
            r#"
[clients.portal-names]
description = "Portal seeing licence names only"
purposes = ["service-handling"]
[clients.portal-names.datasets.business-licence]
fields = ["uscc", "name"]
"#,
        )
        .start()
        .await;
    let full = w.token("portal-binhai", &[], None);
    let names = w.token("portal-names", &[], None);
    let first = w.read(&licence(FULL), &full).await;
    assert_eq!(first.header("x-cache"), Some("miss"));
    let hit = w.read(&licence(FULL), &full).await;
    assert_eq!(hit.header("x-cache"), Some("hit"));
    let (first, hit) = (first.json(), hit.json());
    assert_eq!(first["signature"], hit["signature"]);
    assert_eq!(first["source"]["fetched_at"], hit["source"]["fetched_at"]);
    let entry = w.gw().data.cache.peek("business-licence", FULL).unwrap();
    assert_eq!(entry.signatures.len(), 1, "hits reuse the signature");

    let narrow = w.read(&licence(FULL), &names).await;
    assert_eq!(narrow.header("x-cache"), Some("hit"));
    let narrow = narrow.json();
    assert_eq!(narrow["record"].as_object().unwrap().len(), 2, "{narrow}");
    assert_ne!(narrow["signature"], first["signature"]);
    assert_eq!(entry.signatures.len(), 2, "one signature per projection");
    // Replies are kept serialised: one per projection and cache status.
    assert_eq!(entry.replies.len(), 3, "the miss, and a hit per projection");
    let jwks = jwks_file(&w).await;
    for doc in [&first, &hit, &narrow] {
        let (code, out) = record_verify(&w, doc, false, Some(&jwks));
        assert_eq!(code, 0, "{out}");
    }
}

#[tokio::test]
async fn another_spelling_of_the_subject_gets_a_reply_its_signature_covers() {
    let w = World::demo().await;
    let portal = w.token("portal-binhai", &[], None);
    let jwks = jwks_file(&w).await;
    // The first read spells the code in lower case and fills the cache; the
    // second, in canonical form, is a hit: both must name the canonical
    // subject their (shared) signature covers.
    let lower = w.read(&licence(&FULL.to_lowercase()), &portal).await;
    assert_eq!(lower.status, 200, "{}", lower.text());
    let canonical = w.read(&licence(FULL), &portal).await;
    assert_eq!(canonical.header("x-cache"), Some("hit"));
    for doc in [lower.json(), canonical.json()] {
        assert_eq!(doc["subject"], FULL, "{doc}");
        let (code, out) = record_verify(&w, &doc, false, Some(&jwks));
        assert_eq!(code, 0, "{out}");
    }
}

#[tokio::test]
async fn scenario_parts_carry_signed_records() {
    let w = World::demo().await;
    let portal = w.token("portal-binhai", &[], None);
    let a = w
        .send(
            Method::POST,
            "/v1/scenarios/open-restaurant",
            Some(&portal),
            &[("x-purpose", "service-handling")],
            format!(r#"{{"subjects": {{"uscc": "{NO_FIRE}"}}}}"#),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let reply = a.json();
    let licence = &reply["parts"]["business-licence"];
    assert_eq!(licence["status"], "ok");
    assert!(licence["signature"].is_string(), "{licence}");
    assert!(licence["source"]["issuer"].is_string());
    let fire = &reply["parts"]["fire-safety-inspection"];
    assert_ne!(fire["status"], "ok");
    assert!(fire.get("signature").is_none());
    let jwks = jwks_file(&w).await;
    let (code, out) = record_verify(&w, &reply, false, Some(&jwks));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("business-licence"), "{out}");
    // One part's record changed: the whole file is refused, naming the part.
    let mut changed = reply.clone();
    changed["parts"]["business-licence"]["record"]["name"] = json!("Someone else Ltd");
    let (code, out) = record_verify(&w, &changed, false, Some(&jwks));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("part `business-licence`"), "{out}");
}

// The scenarios added later (tax and ecology parts) sign their parts too, each
// naming its own issuer, and the reply verifies offline part by part.
#[tokio::test]
async fn listing_compliance_parts_carry_signed_records() {
    let w = World::demo().await;
    let portal = w.token("portal-binhai", &[], None);
    let a = w
        .send(
            Method::POST,
            "/v1/scenarios/listing-compliance",
            Some(&portal),
            &[("x-purpose", "service-handling")],
            format!(r#"{{"subjects": {{"uscc": "{FULL}"}}}}"#),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let reply = a.json();
    let parts = reply["parts"].as_object().expect("parts");
    assert!(parts.len() >= 2, "{reply}");
    for (name, part) in parts {
        assert_eq!(part["status"], "ok", "{name}: {part}");
        assert!(part["signature"].is_string(), "{name}: {part}");
        assert!(part["source"]["issuer"].is_string(), "{name}: {part}");
    }
    assert_eq!(
        reply["parts"]["tax-credit"]["source"]["issuer"],
        "国家税务总局天津市税务局 / Tianjin Tax Service, STA"
    );
    assert_eq!(
        reply["parts"]["environmental-penalties"]["source"]["issuer"],
        "天津市生态环境局 / Tianjin Ecology and Environment Bureau"
    );
    let jwks = jwks_file(&w).await;
    let (code, out) = record_verify(&w, &reply, false, Some(&jwks));
    assert_eq!(code, 0, "{out}");
    let mut changed = reply.clone();
    changed["parts"]["tax-credit"]["record"]["credit_rating"] = json!("C");
    let (code, out) = record_verify(&w, &changed, false, Some(&jwks));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("part `tax-credit`"), "{out}");
}

const CONDITIONAL_CLIENTS: &str = r#"
[clients.portal-lapsed]
description = "Portal whose approval has lapsed"
purposes = ["service-handling"]
scenarios = ["newborn"]
[clients.portal-lapsed.datasets.household-registration]
fields = ["*"]
approval = "LAPSED-2020-001"
expires = 2020-01-01
[clients.portal-lapsed.datasets.birth-medical-certificate]
fields = ["*"]

[clients.portal-narrow]
description = "Portal approved for service handling only"
purposes = ["service-handling", "investigation"]
[clients.portal-narrow.datasets.household-registration]
fields = ["*"]
approval = "NARROW-2026-002"
expires = 2099-12-31
purposes = ["service-handling"]
"#;

async fn auditor_records(w: &World, query: &str) -> Vec<Value> {
    let auditor = w.token("auditor", &["auditor"], None);
    let a = w
        .send(
            Method::GET,
            &format!("/admin/audit?{query}"),
            Some(&auditor),
            &[],
            "",
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["records"].as_array().unwrap().clone()
}

#[tokio::test]
async fn conditional_datasets_flow_only_under_live_approvals() {
    let w = World::builder()
        .clients_extra(CONDITIONAL_CLIENTS)
        .start()
        .await;
    let path = format!("/v1/datasets/household-registration/{GUARDIAN}");

    // The demo grant rests on a live approval; the audit record names it.
    let binhai = w.token("portal-binhai", &[], None);
    assert_eq!(w.read(&path, &binhai).await.status, 200);

    // Lapsed: 403 saying so.
    let lapsed = w.token("portal-lapsed", &[], None);
    let a = w.read(&path, &lapsed).await;
    assert_problem(&a, 403);
    let detail = a.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("lapsed on 2020-01-01"), "{detail}");

    // An approval for another purpose.
    let narrow = w.token("portal-narrow", &[], None);
    assert_eq!(w.read(&path, &narrow).await.status, 200);
    let a = w
        .send(
            Method::GET,
            &path,
            Some(&narrow),
            &[("x-purpose", "investigation")],
            "",
        )
        .await;
    assert_problem(&a, 403);
    assert!(
        a.json()["detail"]
            .as_str()
            .unwrap()
            .contains("does not cover purpose")
    );

    // Scenario parts honour it: the lapsed client's household part is denied.
    let a = w
        .send(
            Method::POST,
            "/v1/scenarios/newborn",
            Some(&lapsed),
            &[("x-purpose", "service-handling")],
            format!(
                r#"{{"subjects": {{"birth_cert": "{BIRTH_CERT}", "guardian_id": "{GUARDIAN}"}}}}"#
            ),
        )
        .await;
    let reply = a.json();
    assert_eq!(
        reply["parts"]["household-registration"]["status"], "denied",
        "{reply}"
    );
    assert_eq!(
        reply["parts"]["birth-medical-certificate"]["status"], "ok",
        "{reply}"
    );

    let records = auditor_records(&w, "dataset=household-registration").await;
    let by = |client: &str, decision: &str| {
        records
            .iter()
            .filter(|r| r["client"] == client && r["decision"] == decision)
            .collect::<Vec<_>>()
    };
    let ok = by("portal-binhai", "allow");
    assert_eq!(ok.len(), 1, "{records:?}");
    assert_eq!(ok[0]["approval"], "津公数共审〔2026〕第0042号 (demo)");
    for r in by("portal-lapsed", "deny") {
        assert_eq!(r["approval"], "LAPSED-2020-001", "{r}");
    }
    assert_eq!(
        by("portal-lapsed", "deny").len(),
        2,
        "read and scenario part"
    );
    assert_eq!(
        by("portal-narrow", "allow")[0]["approval"],
        "NARROW-2026-002"
    );
    // Records about unconditional datasets carry no approval member at all.
    let licence_reads = auditor_records(&w, "dataset=birth-medical-certificate").await;
    assert!(!licence_reads.is_empty());
    assert!(licence_reads.iter().all(|r| r.get("approval").is_none()));

    // The log (with and without the new member) still verifies.
    let auditor = w.token("auditor", &["auditor"], None);
    let v = w
        .send(Method::GET, "/admin/audit/verify", Some(&auditor), &[], "")
        .await;
    assert_eq!(v.status, 200, "{}", v.text());
}

#[tokio::test]
async fn metrics_show_days_to_expiry_per_grant() {
    let w = World::builder()
        .clients_extra(CONDITIONAL_CLIENTS)
        .start()
        .await;
    let m = w.send(Method::GET, "/metrics", None, &[], "").await.text();
    let line = |client: &str| {
        m.lines()
            .find(|l| {
                l.contains("approval_days_to_expiry{")
                    && l.contains(&format!("client=\"{client}\""))
                    && l.contains("dataset=\"household-registration\"")
            })
            .unwrap_or_else(|| panic!("no series for {client}:\n{m}"))
            .to_string()
    };
    let days = |l: String| -> f64 { l.rsplit(' ').next().unwrap().parse().unwrap() };
    assert!(days(line("portal-binhai")) > 30.0);
    assert!(days(line("portal-lapsed")) < 0.0);
    assert!(!m.contains("client=\"portal-readonly\",dataset=\"household"));
}

#[test]
fn check_warns_30_days_before_an_approval_lapses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let src = common::repo();
    for d in ["config/scenarios", "adapters", "certs"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["config/gateway.toml", "config/datasets.toml"] {
        std::fs::copy(src.join(f), root.join(f)).unwrap();
    }
    for d in ["config/scenarios", "adapters"] {
        for e in std::fs::read_dir(src.join(d)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, root.join(d).join(p.file_name().unwrap())).unwrap();
        }
    }
    let soon = onewindow::clock::Date::at(
        std::time::SystemTime::now() + std::time::Duration::from_secs(10 * 86_400),
    );
    let clients = std::fs::read_to_string(src.join("config/clients.toml"))
        .unwrap()
        .replace("expires = 2028-12-31", &format!("expires = {soon}"));
    std::fs::write(root.join("config/clients.toml"), clients).unwrap();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_onewindow"))
            .arg("check")
            .arg("--config")
            .arg(root.join("config/gateway.toml"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = run();
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: clients.portal-binhai.datasets.household-registration")
            && out.contains(&format!("lapses on {soon}")),
        "{out}"
    );
    // Far from expiry: no warning.
    let clients = std::fs::read_to_string(root.join("config/clients.toml"))
        .unwrap()
        .replace(&format!("expires = {soon}"), "expires = 2099-12-31");
    std::fs::write(root.join("config/clients.toml"), clients).unwrap();
    let (ok, out) = run();
    assert!(ok && !out.contains("warning"), "{out}");
}
