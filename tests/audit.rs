//! Issue "Tamper-evident audit trail", end to end: one record per decision with
//! every field of the audit record, queries by plain subject / case / client / time
//! with cursor paging, hostile header and path values that must not break a
//! line, the `onewindow audit` CLI against edits and cuts, failing closed when
//! the log cannot be written, a `kill -9` under load, and a 10 000-record chain.

// Tests may unwrap; `useless_format` is for the shared harness in tests/common.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::useless_format)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{FULL, NO_FIRE, World, raw_exchange};
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

const PURPOSE: (&str, &str) = ("x-purpose", "service-handling");

/// The fields of an audit record (docs/ARCHITECTURE.md).
const FIELDS: &[&str] = &[
    "seq",
    "time",
    "request_id",
    "client",
    "end_user",
    "purpose",
    "case_id",
    "action",
    "department",
    "dataset",
    "scenario",
    "subject_ref",
    "decision",
    "reason",
    "status",
    "cache",
    "upstream_status",
    "latency_us",
    "prev",
    "hash",
];

fn auditor(w: &World) -> String {
    w.token("security-team", &["auditor"], None)
}

/// `GET /admin/audit?{query}` as the auditor: (records, next_cursor).
async fn query(w: &World, q: &str) -> (Vec<Value>, Option<String>) {
    let a = w
        .send(
            Method::GET,
            &format!("/admin/audit?{q}"),
            Some(&auditor(w)),
            &[],
            "",
        )
        .await;
    assert_eq!(a.status, 200, "audit query {q}: {}", a.text());
    let j = a.json();
    (
        j["records"].as_array().unwrap().clone(),
        j["next_cursor"].as_str().map(str::to_string),
    )
}

fn request_ids(recs: &[Value]) -> BTreeSet<String> {
    recs.iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_string))
        .collect()
}

fn audit_dir(root: &Path) -> PathBuf {
    root.join("data/audit")
}

/// The segment files of the log, oldest first (not set-aside torn tails).
fn segments(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(audit_dir(root))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("audit-") && n.ends_with(".jsonl")
        })
        .collect();
    v.sort();
    v
}

/// Every line of every segment, each parsed as a JSON object (panics naming
/// the file and line otherwise).
fn all_records(root: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for f in segments(root) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends mid-line",
            f.display()
        );
        for (i, line) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{} line {}: not JSON ({e}): {line}", f.display(), i + 1)
            });
            assert!(v.is_object(), "{} line {}", f.display(), i + 1);
            out.push(v);
        }
    }
    out
}

/// Runs the real binary: (exit code, stdout, stderr).
async fn cli(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_onewindow"))
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn cli_verify(root: &Path) -> (i32, String, String) {
    let cfg = root.join("config/gateway.toml");
    cli(&["audit", "verify", "--config", cfg.to_str().unwrap()]).await
}

async fn read_as(w: &World, path: &str, token: &str, extra: &[(&str, &str)]) -> common::Answer {
    let mut h = vec![PURPOSE];
    h.extend_from_slice(extra);
    w.send(Method::GET, path, Some(token), &h, Bytes::new())
        .await
}

fn licence(uscc: &str) -> String {
    format!("/v1/datasets/business-licence/{uscc}")
}

fn is_hex64(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()))
}

// Hostile input: none beyond an unauthenticated and an unauthorised call; the
// trail must hold one complete record per decision, findable by plain subject,
// case, client and time, with stable cursor paging, and never the raw subject.
#[tokio::test]
async fn one_record_per_decision_with_every_field_and_every_query() {
    let w = World::demo().await;
    let portal = w.token("portal-binhai", &[], None);
    let readonly = w.token("portal-readonly", &[], None);
    let t0 = onewindow::audit::now_rfc3339();

    let a = read_as(
        &w,
        &licence(FULL),
        &portal,
        &[
            ("x-end-user", "clerk-7"),
            ("x-case-id", "CASE-A1"),
            ("x-request-id", "req-allow"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let t1 = onewindow::audit::now_rfc3339();
    let b = read_as(
        &w,
        &licence(FULL),
        "not-a-token",
        &[("x-request-id", "req-401")],
    )
    .await;
    assert_eq!(b.status, 401);
    let c = read_as(
        &w,
        &format!("/v1/datasets/food-business-permit/{FULL}"),
        &readonly,
        &[("x-case-id", "CASE-A1"), ("x-request-id", "req-403")],
    )
    .await;
    assert_eq!(c.status, 403, "{}", c.text());
    let d = w
        .send(
            Method::POST,
            "/v1/scenarios/open-restaurant",
            Some(&portal),
            &[
                PURPOSE,
                ("x-case-id", "CASE-S1"),
                ("x-request-id", "req-scn"),
            ],
            format!(r#"{{"subjects":{{"uscc":"{FULL}"}}}}"#),
        )
        .await;
    assert_eq!(d.status, 200, "{}", d.text());

    let (all, next) = query(&w, "limit=1000").await;
    assert!(next.is_none());
    for r in &all {
        for f in FIELDS {
            assert!(r.get(*f).is_some(), "field `{f}` missing in {r}");
        }
        assert!(is_hex64(&r["hash"]) && is_hex64(&r["prev"]), "{r}");
    }
    let by_id = |id: &str| -> Vec<&Value> {
        all.iter()
            .filter(|r| r["request_id"] == id && r["action"] != "checkpoint")
            .collect()
    };

    let allow = by_id("req-allow");
    assert_eq!(allow.len(), 1, "one record for the read: {allow:?}");
    let r = allow[0];
    assert_eq!(r["action"], "dataset.read");
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["client"], "portal-binhai");
    assert_eq!(r["end_user"], "clerk-7");
    assert_eq!(r["purpose"], "service-handling");
    assert_eq!(r["case_id"], "CASE-A1");
    assert_eq!(r["department"], "market-supervision");
    assert_eq!(r["dataset"], "business-licence");
    assert_eq!(r["status"], 200);
    assert_eq!(r["cache"], "miss");
    assert_eq!(r["upstream_status"], 200);
    assert!(r["latency_us"].is_u64());
    assert!(r["time"].as_str().unwrap().ends_with('Z'));
    let subject_ref = r["subject_ref"].as_str().unwrap().to_string();
    assert!(!subject_ref.contains(FULL));
    assert_ne!(subject_ref, FULL);

    let denied = by_id("req-401");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["action"], "auth.denied");
    assert_eq!(denied[0]["decision"], "deny");
    assert_eq!(denied[0]["status"], 401);
    assert!(
        !denied[0].to_string().contains("not-a-token"),
        "token logged"
    );

    let forbidden = by_id("req-403");
    assert_eq!(forbidden.len(), 1, "{forbidden:?}");
    assert_eq!(forbidden[0]["decision"], "deny");
    assert_eq!(forbidden[0]["status"], 403);
    assert_eq!(forbidden[0]["client"], "portal-readonly");
    assert_eq!(forbidden[0]["dataset"], "food-business-permit");
    assert_eq!(forbidden[0]["subject_ref"], subject_ref.as_str());

    let scn = by_id("req-scn");
    let runs: Vec<_> = scn
        .iter()
        .filter(|r| r["action"] == "scenario.run")
        .collect();
    assert_eq!(runs.len(), 1, "{scn:?}");
    assert_eq!(runs[0]["scenario"], "open-restaurant");
    assert_eq!(runs[0]["decision"], "allow");
    assert_eq!(runs[0]["status"], 200);
    let parts: BTreeSet<_> = scn
        .iter()
        .filter(|r| r["action"] == "scenario.part")
        .map(|r| r["dataset"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(parts.len(), 4, "one record per part: {scn:?}");

    // Raw subject ids never reach the files.
    for f in segments(w.root()) {
        assert!(!std::fs::read_to_string(f).unwrap().contains(FULL));
    }

    // By plain subject: the gateway computes the reference.
    let (s, _) = query(&w, &format!("subject={FULL}&limit=1000")).await;
    assert!(s.iter().all(|r| r["subject_ref"] == subject_ref.as_str()));
    assert_eq!(
        request_ids(&s),
        ["req-403", "req-allow", "req-scn"].map(String::from).into()
    );
    assert_eq!(s.len(), 1 + 1 + 4, "read, refusal, four parts");
    let (s, _) = query(&w, &format!("subject={NO_FIRE}")).await;
    assert!(s.is_empty());

    let (s, _) = query(&w, "case=CASE-A1").await;
    assert_eq!(
        request_ids(&s),
        ["req-403", "req-allow"].map(String::from).into()
    );
    let (s, _) = query(&w, "case=CASE-S1").await;
    assert_eq!(request_ids(&s), ["req-scn"].map(String::from).into());
    assert_eq!(s.len(), 5, "the run and its four parts");

    let (s, _) = query(&w, "client=portal-readonly").await;
    assert_eq!(request_ids(&s), ["req-403"].map(String::from).into());

    let (s, _) = query(&w, &format!("since={t0}&until={t1}")).await;
    assert_eq!(request_ids(&s), ["req-allow"].map(String::from).into());
    let (s, _) = query(&w, &format!("since={t1}&limit=1000")).await;
    assert!(!request_ids(&s).contains("req-allow"));
    assert!(request_ids(&s).contains("req-401"));
    let (s, _) = query(&w, &format!("until={t1}")).await;
    assert!(!request_ids(&s).contains("req-scn"));

    // Cursor paging walks every record exactly once, in order.
    let mut seqs = Vec::new();
    let (mut page, mut cursor) = query(&w, "limit=2").await;
    loop {
        assert!(page.len() <= 2);
        // Auditors' own queries are records too (issue 12): leave them out.
        seqs.extend(
            page.iter()
                .filter(|r| r["action"] != "admin.audit.query")
                .map(|r| r["seq"].as_u64().unwrap()),
        );
        let Some(c) = cursor else { break };
        (page, cursor) = query(&w, &format!("limit=2&cursor={c}")).await;
    }
    let want: Vec<u64> = all
        .iter()
        .filter(|r| r["action"] != "admin.audit.query")
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, want);
    assert!(seqs.len() >= 8);
}

// Hostile input: CR/LF, JSON fragments, tabs, Unicode line separators and C1
// controls in X-End-User / X-Case-Id / X-Request-Id and in paths; accepted
// values must stay inside their field, refused ones are 400 and recorded, and
// every line of the files stays one JSON record.
#[tokio::test]
async fn hostile_attribution_and_paths_never_break_a_line() {
    let mut w = World::demo().await;
    let portal = w.token("portal-binhai", &[], None);

    // Accepted as printable: stored verbatim, escaped.
    let accepted = [
        ("x-end-user", r#"{"seq":1,"decision":"allow"}"#, "acc-1"),
        ("x-end-user", r#"clerk","decision":"allow","x":""#, "acc-2"),
        ("x-case-id", r"CASE\r\n\u000a}{", "acc-3"),
        ("x-end-user", "王芳 </script>", "acc-4"),
    ];
    for (h, v, id) in accepted {
        let a = read_as(&w, &licence(FULL), &portal, &[(h, v), ("x-request-id", id)]).await;
        assert_eq!(a.status, 200, "{h}: {v}: {}", a.text());
    }
    // Refused: 400, and the refusal is recorded.
    let too_long = "C".repeat(300);
    let refused = [
        ("x-end-user", "a\tb", "ref-1"),
        ("x-case-id", "x\u{2028}y", "ref-2"),
        ("x-end-user", "\u{85}nel", "ref-3"),
        ("x-case-id", too_long.as_str(), "ref-4"),
        ("x-end-user", "rtl\u{202e}txt", "ref-5"),
    ];
    for (h, v, id) in refused {
        let a = read_as(&w, &licence(FULL), &portal, &[(h, v), ("x-request-id", id)]).await;
        assert_eq!(a.status, 400, "{h}: {v:?}: {}", a.text());
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
    }
    // A request id with JSON in it is replaced by a generated one.
    let a = read_as(
        &w,
        &licence(FULL),
        &portal,
        &[("x-request-id", r#"x","decision":"allow"#)],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_ne!(a.header("x-request-id"), Some(r#"x","decision":"allow"#));
    // Paths with encoded CR/LF and JSON.
    for (path, status) in [
        (
            "/v1/datasets/business-licence/%0D%0A%7B%22seq%22%3A1%7D",
            400,
        ),
        (
            "/v1/datasets/bl%22%2C%22decision%22%3A%22allow/91120116MA07Q8XJ2K",
            404,
        ),
        ("/v1/datasets/business-licence/%E2%80%A8x", 400),
        ("/v1/datasets/business-licence/%22%7D%7B%22a", 400),
        ("/v1/proxy/market-supervision/api/%22%7D%0A", 400),
        ("/v1/%7B%22seq%22%3A1%7D", 404),
    ] {
        let a = read_as(&w, path, &portal, &[("x-request-id", "path-1")]).await;
        assert_eq!(a.status, status, "{path}: {}", a.text());
    }
    // Raw CR / LF inside a header never reaches the handler.
    for raw in [
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {portal}\r\nX-Purpose: service-handling\r\nX-End-User: evil\r{{\"seq\":1}}\r\n\r\n",
            licence(FULL)
        ),
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {portal}\r\nX-Purpose: service-handling\r\nX-End-User: a\r\n{{\"seq\":1,\"decision\":\"allow\"}}: z\r\n\r\n",
            licence(FULL)
        ),
    ] {
        let (resp, _) = raw_exchange(w.plain(), raw.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            resp.is_empty() || resp.starts_with("HTTP/1.1 400"),
            "raw CR/LF: {resp}"
        );
    }

    let (recs, _) = query(&w, "limit=1000").await;
    for (h, v, id) in accepted {
        let r: Vec<_> = recs.iter().filter(|r| r["request_id"] == id).collect();
        assert_eq!(r.len(), 1, "{id}");
        let field = if h == "x-end-user" {
            "end_user"
        } else {
            "case_id"
        };
        assert_eq!(r[0][field], v.trim(), "{id}: stored verbatim");
        assert_eq!(r[0]["decision"], "allow", "{id}");
    }
    for (_, _, id) in refused {
        let r: Vec<_> = recs.iter().filter(|r| r["request_id"] == id).collect();
        assert_eq!(r.len(), 1, "{id} recorded once");
        assert_eq!(r[0]["status"], 400, "{id}");
        assert_eq!(r[0]["decision"], "deny", "{id}");
    }
    let paths: Vec<_> = recs
        .iter()
        .filter(|r| r["request_id"] == "path-1")
        .collect();
    assert_eq!(paths.len(), 6, "every path refusal recorded");
    assert!(
        recs.iter()
            .all(|r| r["request_id"] != r#"x","decision":"allow"#)
    );

    w.stop().await;
    let lines = all_records(w.root());
    assert_eq!(
        lines.len(),
        recs.len() + 2,
        "records, the auditor's query that read them, and the final checkpoint"
    );
    let (code, out, err) = cli_verify(w.root()).await;
    assert_eq!(code, 0, "verify: {out}{err}");
}

// Hostile input: an edited byte, records cut from the start and from the end
// of the log; the CLI must exit 1 naming the file and seq, and `audit query`
// must print exactly the matching records.
#[tokio::test]
async fn cli_verify_detects_edits_and_cuts_and_query_prints_matches() {
    let mut w = World::demo().await;
    let portal = w.token("portal-binhai", &[], None);
    for uscc in [FULL, NO_FIRE, FULL, FULL, NO_FIRE] {
        let a = w.read(&licence(uscc), &portal).await;
        assert_eq!(a.status, 200);
    }
    let a = w
        .send(
            Method::POST,
            "/v1/scenarios/open-restaurant",
            Some(&portal),
            &[PURPOSE],
            format!(r#"{{"subjects":{{"uscc":"{FULL}"}}}}"#),
        )
        .await;
    assert_eq!(a.status, 200);
    w.stop().await;
    let root = w.root().to_path_buf();

    let (code, out, err) = cli_verify(&root).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("intact"), "{out}");

    // audit query --subject: exactly the records with that subject's reference.
    let key = onewindow::audit::SubjectKey::load(&root.join("certs")).unwrap();
    let sref = key.subject_ref(FULL).as_str().to_string();
    let want: Vec<Value> = all_records(&root)
        .into_iter()
        .filter(|r| r["subject_ref"] == sref.as_str())
        .collect();
    assert_eq!(want.len(), 3 + 4, "three reads and four scenario parts");
    let cfg = root.join("config/gateway.toml");
    let (code, out, err) = cli(&[
        "audit",
        "query",
        "--config",
        cfg.to_str().unwrap(),
        "--subject",
        FULL,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let got: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, want);

    let seg = audit_dir(&root).join("audit-000001.jsonl");
    let original = std::fs::read(&seg).unwrap();
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            original
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .filter(|i| *i < original.len())
        .collect();
    assert!(line_starts.len() >= 10);

    // One byte edited in the middle of the file (inside a record's time).
    let mid = line_starts.len() / 2;
    let line_start = line_starts[mid];
    let line = &original[line_start..line_starts[mid + 1]];
    let rec: Value = serde_json::from_slice(&line[..line.len() - 1]).unwrap();
    let seq = rec["seq"].as_u64().unwrap();
    let at = line_start + line.windows(8).position(|w| w == b"\"time\":\"").unwrap() + 8 + 3;
    let mut edited = original.clone();
    edited[at] = if edited[at] == b'7' { b'8' } else { b'7' };
    std::fs::write(&seg, &edited).unwrap();
    let (code, out, err) = cli_verify(&root).await;
    assert_eq!(code, 1, "edited byte not detected: {out}{err}");
    assert!(out.contains("audit-000001.jsonl"), "{out}");
    assert!(
        out.contains(&format!("seq {seq}")),
        "names seq {seq}: {out}"
    );

    // The first two records cut away.
    std::fs::write(&seg, &original[line_starts[2]..]).unwrap();
    let (code, out, err) = cli_verify(&root).await;
    assert_eq!(
        code, 1,
        "records cut from the start not detected: {out}{err}"
    );

    // The last two records (with the final signed checkpoint) cut away.
    let n = line_starts.len();
    std::fs::write(&seg, &original[..line_starts[n - 2]]).unwrap();
    let (code, out, err) = cli_verify(&root).await;
    assert_eq!(code, 1, "records cut from the end not detected: {out}{err}");

    std::fs::write(&seg, &original).unwrap();
    let (code, out, err) = cli_verify(&root).await;
    assert_eq!(code, 0, "restored: {out}{err}");
}

// Hostile input: a portal (data-plane client) token and no token on the
// auditor's endpoints.
#[tokio::test]
async fn live_verify_is_for_auditors_only() {
    let w = World::demo().await;
    let portal = w.token("portal-binhai", &[], None);
    for _ in 0..3 {
        assert_eq!(w.read(&licence(FULL), &portal).await.status, 200);
    }
    let a = w
        .send(
            Method::GET,
            "/admin/audit/verify",
            Some(&auditor(&w)),
            &[],
            "",
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json();
    assert_eq!(j["intact"], true, "{j}");
    assert!(j["records"].as_u64().unwrap() >= 3);
    for path in ["/admin/audit/verify", "/admin/audit"] {
        let a = w.send(Method::GET, path, Some(&portal), &[], "").await;
        assert_eq!(a.status, 403, "{path}: {}", a.text());
        let a = w.send(Method::GET, path, None, &[], "").await;
        assert_eq!(a.status, 401, "{path}: {}", a.text());
    }
}

// Hostile input: the audit log cannot be written (the next segment is
// /dev/full, a real ENOSPC from the kernel): data requests fail closed with
// 503 and release nothing, /readyz turns red; once writable again the gateway
// recovers and the chain is unbroken.
#[tokio::test]
async fn an_unwritable_audit_log_fails_closed_and_recovers() {
    if !Path::new("/dev/full").exists() {
        eprintln!("no /dev/full on this system; skipping");
        return;
    }
    let mut w = World::builder()
        .gateway_replace("rotate_bytes = 67108864", "rotate_bytes = 4096")
        .start()
        .await;
    let portal = w.token("portal-binhai", &[], None);
    let next = audit_dir(w.root()).join("audit-000002.jsonl");
    std::os::unix::fs::symlink("/dev/full", &next).unwrap();

    // Records fill the first segment; the write that rotates fails.
    let mut failed = None;
    for i in 0..200 {
        let a = read_as(
            &w,
            &licence(FULL),
            &portal,
            &[("x-request-id", format!("fc-{i}").as_str())],
        )
        .await;
        match a.status.as_u16() {
            200 => continue,
            503 => {
                failed = Some(a);
                break;
            }
            s => panic!("unexpected {s}: {}", a.text()),
        }
    }
    let a = failed.expect("the audit write failure was noticed");
    assert_eq!(a.header("content-type"), Some("application/problem+json"));
    assert!(a.header("retry-after").is_some());
    assert!(
        a.json().get("record").is_none(),
        "data released: {}",
        a.text()
    );
    assert!(!a.text().contains("海味轩"));
    let r = w.send(Method::GET, "/readyz", None, &[], "").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["audit_writable"], false);
    // Still failing: every data request, not just the first.
    let a = read_as(&w, &licence(NO_FIRE), &portal, &[]).await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(!a.text().contains("渤海湾"));

    // Writable again.
    std::fs::remove_file(&next).unwrap();
    let a = read_as(&w, &licence(FULL), &portal, &[("x-request-id", "fc-back")]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = w.send(Method::GET, "/readyz", None, &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = w
        .send(
            Method::GET,
            "/admin/audit/verify",
            Some(&auditor(&w)),
            &[],
            "",
        )
        .await;
    assert_eq!(v.status, 200, "{}", v.text());
    assert_eq!(v.json()["intact"], true);
    let (recs, _) = query(&w, "action=audit.outage").await;
    assert_eq!(recs.len(), 1, "the outage is itself recorded");
    w.stop().await;
    let (code, out, err) = cli_verify(w.root()).await;
    assert_eq!(code, 0, "{out}{err}");
    let all = all_records(w.root());
    assert!(all.iter().any(|r| r["request_id"] == "fc-back"));
}

/// A free loopback port (bound, then released).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Starts the real binary on `root`'s config with plain and admin listeners
/// on free ports; waits (bounded) until `/healthz` answers.
async fn spawn_gateway(root: &Path) -> (tokio::process::Child, SocketAddr, SocketAddr) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for _attempt in 0..3 {
        let (plain, admin) = (free_port(), free_port());
        let cfg = root.join("config/gateway.toml");
        let stderr = std::fs::File::create(root.join("gateway.stderr")).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_onewindow"))
            .args([
                "serve",
                "--config",
                cfg.to_str().unwrap(),
                "--listen",
                &plain.to_string(),
                "--admin-listen",
                &admin.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited (e.g. a port taken meanwhile): try again
            }
            let req = http::Request::get(format!("http://{admin}/healthz"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(2), client.request(req)).await
                && r.status() == 200
            {
                return (child, plain, admin);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    panic!(
        "gateway did not start: {}",
        std::fs::read_to_string(root.join("gateway.stderr")).unwrap_or_default()
    );
}

// Hostile input: `kill -9` of the gateway in the middle of a load; every
// request that was answered 200 must be in the log after a restart, and the
// chain must verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_record() {
    let w = World::builder().prepare().await;
    let root = w.root().to_path_buf();
    let (mut child, plain, _admin) = spawn_gateway(&root).await;
    let portal = w.token("portal-binhai", &[], None);

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (acked, client, portal) = (acked.clone(), client.clone(), portal.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let id = format!("k9-{t}-{i}");
                let subject = if i % 2 == 0 { FULL } else { NO_FIRE };
                let req = http::Request::get(format!("http://{plain}{}", licence(subject)))
                    .header("authorization", format!("Bearer {portal}"))
                    .header("x-purpose", "service-handling")
                    .header("x-request-id", &id)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let Ok(Ok(resp)) =
                    tokio::time::timeout(Duration::from_secs(10), client.request(req)).await
                else {
                    return;
                };
                let status = resp.status();
                let Ok(body) = resp.into_body().collect().await else {
                    return;
                };
                if status == 200 {
                    assert!(!body.to_bytes().is_empty());
                    acked.lock().unwrap().push(id);
                }
            }
        }));
    }
    // Kill once a good number of requests has been acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 {
        assert!(tokio::time::Instant::now() < deadline, "load too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();

    // Restart on the same data: the writer resumes (setting a torn tail aside).
    let (mut child, plain2, _) = spawn_gateway(&root).await;
    let req = http::Request::get(format!("http://{plain2}{}", licence(FULL)))
        .header("authorization", format!("Bearer {portal}"))
        .header("x-purpose", "service-handling")
        .header("x-request-id", "after-restart")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let logged: BTreeSet<String> = all_records(&root)
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<_> = acked.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged requests not in the log: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(logged.contains("after-restart"));
    let (code, out, err) = cli_verify(&root).await;
    assert_eq!(code, 0, "{out}{err}");
}

// Hostile input: 10 000 concurrent requests (50 tasks x 200); the writer's
// group commit must still produce one contiguous chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_make_one_contiguous_chain() {
    let mut w = World::builder()
        .gateway_replace("fsync = \"always\"", "fsync = \"never\"")
        .start()
        .await;
    let portal = w.token("portal-binhai", &[], None);
    let tasks = (0..50).map(|t| {
        let (w, portal) = (&w, &portal);
        async move {
            let mut statuses = BTreeMap::new();
            for i in 0..200 {
                let id = format!("bulk-{t}-{i}");
                let a = if i % 2 == 0 {
                    w.send(
                        Method::GET,
                        "/v1/catalog",
                        Some(portal),
                        &[("x-request-id", id.as_str())],
                        "",
                    )
                    .await
                } else {
                    read_as(w, &licence(FULL), portal, &[("x-request-id", id.as_str())]).await
                };
                *statuses.entry(a.status.as_u16()).or_insert(0u32) += 1;
            }
            statuses
        }
    });
    let results = futures_util::future::join_all(tasks).await;
    for s in &results {
        assert_eq!(s.get(&200), Some(&200), "{s:?}");
    }
    w.stop().await;

    let recs = all_records(w.root());
    let mut prev = "0".repeat(64);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"].as_u64().unwrap(), i as u64 + 1, "gap at {i}");
        assert_eq!(r["prev"], prev.as_str(), "broken link at seq {}", i + 1);
        prev = r["hash"].as_str().unwrap().to_string();
    }
    let ids: Vec<&str> = recs
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .filter(|id| id.starts_with("bulk-"))
        .collect();
    assert_eq!(ids.len(), 10_000);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        10_000,
        "no duplicates"
    );
    assert!(recs.iter().filter(|r| r["action"] == "checkpoint").count() >= 10);
    let (code, out, err) = cli_verify(w.root()).await;
    assert_eq!(code, 0, "{out}{err}");
}
