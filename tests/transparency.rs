//! Data-subject transparency end to end: a company is shown who read its
//! data and why, from the subject index; cursors, kinds and withheld
//! purposes are checked; the index survives being deleted or damaged under
//! a running gateway without ever answering wrongly.

// Helpers panic on unexpected answers; that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{FULL, NO_FIRE, REVOKED, World, assert_problem};
use http::Method;
use serde_json::Value;

fn licence(s: &str) -> String {
    format!("/v1/datasets/business-licence/{s}")
}

fn accesses_path(kind: &str, subject: &str, query: &str) -> String {
    format!("/v1/subjects/{kind}/{subject}/accesses{query}")
}

async fn accesses(w: &World, token: &str, subject: &str, query: &str) -> common::Answer {
    w.send(
        Method::GET,
        &accesses_path("uscc", subject, query),
        Some(token),
        &[("x-end-user", "citizen-login-7")],
        "",
    )
    .await
}

async fn read_as(w: &World, token: &str, path: &str, purpose: &str, case: &str) -> u16 {
    w.send(
        Method::GET,
        path,
        Some(token),
        &[("x-purpose", purpose), ("x-case-id", case)],
        "",
    )
    .await
    .status
    .as_u16()
}

fn list(a: &common::Answer) -> Vec<Value> {
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["accesses"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_company_sees_who_read_its_data_and_why() {
    let w = World::demo().await;
    let binhai = w.token("portal-binhai", &[], None);
    let readonly = w.token("portal-readonly", &[], None);
    assert_eq!(
        read_as(&w, &binhai, &licence(FULL), "service-handling", "CASE-1").await,
        200
    );
    assert_eq!(
        read_as(&w, &readonly, &licence(FULL), "service-handling", "CASE-2").await,
        200
    );
    // A refused read is shown too, with its decision.
    assert_eq!(
        read_as(
            &w,
            &readonly,
            "/v1/datasets/food-business-permit/91120116MA07Q8XJ2K",
            "service-handling",
            "CASE-3"
        )
        .await,
        403
    );
    // Another company's read is not.
    assert_eq!(
        read_as(&w, &binhai, &licence(NO_FIRE), "service-handling", "CASE-4").await,
        200
    );
    // A scenario part names the scenario.
    let a = w
        .send(
            Method::POST,
            "/v1/scenarios/open-restaurant",
            Some(&binhai),
            &[("x-purpose", "service-handling"), ("x-case-id", "CASE-5")],
            format!(r#"{{"subjects": {{"uscc": "{FULL}"}}}}"#),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());

    let got = list(&accesses(&w, &binhai, FULL, "").await);
    let cases: Vec<_> = got.iter().map(|r| r["case_id"].as_str().unwrap()).collect();
    assert_eq!(cases.len(), 7, "{got:#?}"); // 3 reads + 4 scenario parts
    assert!(!cases.contains(&"CASE-4"));
    assert_eq!(got[0]["case_id"], "CASE-5", "newest first");
    assert_eq!(got[0]["scenario"], "open-restaurant");
    let by_case = |c: &str| got.iter().find(|r| r["case_id"] == c).unwrap();
    let r = by_case("CASE-2");
    assert_eq!(
        r["organisation"],
        "Read-only portal: business licences, and licence look-ups at market supervision"
    );
    assert_eq!(r["client"], "portal-readonly");
    assert_eq!(r["department"], "market-supervision");
    assert_eq!(r["dataset"], "business-licence");
    assert_eq!(r["purpose"], "service-handling");
    assert_eq!(r["decision"], "allow");
    assert!(r["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(by_case("CASE-3")["decision"], "deny");

    // since/until narrow by time.
    let later = list(&accesses(&w, &binhai, FULL, "?since=2999-01-01T00:00:00Z").await);
    assert!(later.is_empty());
    let earlier = list(&accesses(&w, &binhai, FULL, "?until=2000-01-01T00:00:00Z").await);
    assert!(earlier.is_empty());
    assert_problem(&accesses(&w, &binhai, FULL, "?since=yesterday").await, 400);

    // The call itself is audited (with the subject's reference, not the id).
    let auditor = w.token("auditor", &["auditor"], None);
    let a = w
        .send(
            Method::GET,
            &format!("/admin/audit?action=subject.accesses&subject={FULL}"),
            Some(&auditor),
            &[],
            "",
        )
        .await;
    let records = a.json()["records"].as_array().unwrap().clone();
    assert!(!records.is_empty(), "{}", a.text());
    assert_eq!(records[0]["client"], "portal-binhai");
    assert_eq!(records[0]["end_user"], "citizen-login-7");
    assert!(!a.text().contains(FULL));
}

#[tokio::test]
async fn only_subject_access_clients_and_known_kinds() {
    let w = World::demo().await;
    let binhai = w.token("portal-binhai", &[], None);
    let readonly = w.token("portal-readonly", &[], None);
    // Nobody read this company: an empty list, not 404.
    let a = accesses(&w, &binhai, REVOKED, "").await;
    assert!(list(&a).is_empty());
    assert!(a.json()["next_cursor"].is_null());
    // A client without subject_access: 403.
    assert_problem(&accesses(&w, &readonly, FULL, "").await, 403);
    // Wrong kind: 400 naming the known kinds.
    let a = w
        .send(
            Method::GET,
            &accesses_path("passport", FULL, ""),
            Some(&binhai),
            &[],
            "",
        )
        .await;
    assert_problem(&a, 400);
    assert!(
        a.json()["detail"].as_str().unwrap().contains("uscc"),
        "{}",
        a.text()
    );
    // A subject id that no dataset of the kind accepts: 400.
    let a = w
        .send(
            Method::GET,
            &accesses_path("uscc", "not-a-credit-code!", ""),
            Some(&binhai),
            &[],
            "",
        )
        .await;
    assert_problem(&a, 400);
    // No token: 401.
    let a = w
        .send(Method::GET, &accesses_path("uscc", FULL, ""), None, &[], "")
        .await;
    assert_eq!(a.status, 401);
}

#[tokio::test]
async fn cursors_page_one_subject_and_refuse_forgeries() {
    let w = World::demo().await;
    let binhai = w.token("portal-binhai", &[], None);
    for case in ["P-1", "P-2", "P-3"] {
        assert_eq!(
            read_as(&w, &binhai, &licence(FULL), "service-handling", case).await,
            200
        );
    }
    assert_eq!(
        read_as(&w, &binhai, &licence(NO_FIRE), "service-handling", "Q-1").await,
        200
    );
    let first = accesses(&w, &binhai, FULL, "?limit=2").await;
    let page1 = list(&first);
    assert_eq!(page1.len(), 2);
    let cursor = first.json()["next_cursor"].as_str().unwrap().to_string();
    let second = accesses(&w, &binhai, FULL, &format!("?limit=2&cursor={cursor}")).await;
    let page2 = list(&second);
    let cases: Vec<_> = page1
        .iter()
        .chain(&page2)
        .map(|r| r["case_id"].clone())
        .collect();
    assert_eq!(cases, ["P-3", "P-2", "P-1"]);
    assert!(second.json()["next_cursor"].is_null());

    // Another subject's cursor: 400.
    let a = accesses(&w, &binhai, NO_FIRE, &format!("?cursor={cursor}")).await;
    assert_problem(&a, 400);
    // Forged cursors: 400.
    for forged in ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "7", "%FF"] {
        let a = accesses(&w, &binhai, FULL, &format!("?cursor={forged}")).await;
        assert_problem(&a, 400);
    }
    // The right cursor with its seq bumped: 400.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut raw = b64.decode(&cursor).unwrap();
    raw[7] = raw[7].wrapping_add(1);
    let a = accesses(&w, &binhai, FULL, &format!("?cursor={}", b64.encode(&raw))).await;
    assert_problem(&a, 400);
}

#[tokio::test]
async fn a_withheld_purpose_stays_invisible_until_its_period_passes() {
    let (clock, hand) = onewindow::clock::WallClock::adjustable();
    let w = World::builder()
        .clients_extra(
            r#"
[clients.inspectorate]
description = "Market inspectorate"
purposes = ["investigation"]
[clients.inspectorate.datasets.business-licence]
fields = ["*"]
"#,
        )
        .clock(clock)
        .start()
        .await;
    let binhai = w.token("portal-binhai", &[], None);
    let inspector = w.token("inspectorate", &[], None);
    assert_eq!(
        read_as(&w, &inspector, &licence(FULL), "investigation", "INV-9").await,
        200
    );
    assert_eq!(
        read_as(&w, &binhai, &licence(FULL), "service-handling", "S-1").await,
        200
    );
    let cases = |v: Vec<Value>| v.iter().map(|r| r["case_id"].clone()).collect::<Vec<_>>();
    // `[purposes.investigation] disclose_after_days = 180` in the demo clients.toml.
    assert_eq!(cases(list(&accesses(&w, &binhai, FULL, "").await)), ["S-1"]);
    hand.advance(Duration::from_secs(179 * 86_400));
    assert_eq!(cases(list(&accesses(&w, &binhai, FULL, "").await)), ["S-1"]);
    hand.advance(Duration::from_secs(2 * 86_400));
    let now = list(&accesses(&w, &binhai, FULL, "").await);
    assert_eq!(cases(now.clone()), ["S-1", "INV-9"]);
    assert_eq!(now[1]["organisation"], "Market inspectorate");
    assert_eq!(now[1]["purpose"], "investigation");
}

/// The subject index file under the world's data directory.
fn index_file(w: &World) -> std::path::PathBuf {
    w.root()
        .join("data")
        .join(onewindow::transparency::INDEX_FILE)
}

async fn readyz_index(w: &World) -> Value {
    let a = w.send(Method::GET, "/readyz", None, &[], "").await;
    a.json()["subject_index"].clone()
}

#[tokio::test]
async fn a_deleted_or_damaged_index_is_rebuilt_never_wrong() {
    let mut w = World::demo().await;
    let binhai = w.token("portal-binhai", &[], None);
    for case in ["D-1", "D-2"] {
        assert_eq!(
            read_as(&w, &binhai, &licence(FULL), "service-handling", case).await,
            200
        );
    }
    let expected = vec!["D-2", "D-1"];
    let cases = |a: &common::Answer| -> Option<Vec<String>> {
        if a.status == 503 {
            return None; // reported, not wrong
        }
        Some(
            list(a)
                .iter()
                .map(|r| r["case_id"].as_str().unwrap().to_string())
                .collect(),
        )
    };
    assert_eq!(
        cases(&accesses(&w, &binhai, FULL, "").await).unwrap(),
        expected
    );
    assert_eq!(readyz_index(&w).await["status"], "ready");
    let index = index_file(&w);
    assert!(index.exists());

    // Deleted under the running gateway: the next answer is right (rebuilt) or 503.
    std::fs::remove_file(&index).unwrap();
    let a = accesses(&w, &binhai, FULL, "").await;
    if let Some(c) = cases(&a) {
        assert_eq!(c, expected);
    }
    assert_eq!(
        cases(&accesses(&w, &binhai, FULL, "").await).unwrap(),
        expected
    );
    assert!(index.exists(), "rebuilt in place");

    // Damaged in place (same file, garbage over it).
    let len = std::fs::metadata(&index).unwrap().len() as usize;
    std::fs::write(&index, vec![0x5a; len.max(8192)]).unwrap();
    let a = accesses(&w, &binhai, FULL, "").await;
    if let Some(c) = cases(&a) {
        assert_eq!(c, expected);
    }
    assert_eq!(readyz_index(&w).await["status"], "ready");
    assert_eq!(
        cases(&accesses(&w, &binhai, FULL, "").await).unwrap(),
        expected
    );
    let head = std::fs::read(&index).unwrap();
    assert!(
        head.starts_with(b"SQLite format 3\0"),
        "the damaged file was rebuilt"
    );

    // Replaced by an index of another log while stopped: rebuilt at start.
    assert_eq!(
        read_as(&w, &binhai, &licence(FULL), "service-handling", "D-3").await,
        200
    );
    w.stop().await;
    let other = tempfile::tempdir().unwrap();
    std::fs::remove_file(&index).unwrap();
    let w = {
        // An empty index file from elsewhere: no position, another log.
        let db = onewindow::transparency::IndexDb::open(&other.path().join("x.sqlite"))
            .await
            .unwrap();
        db.close().await;
        std::fs::copy(other.path().join("x.sqlite"), &index).unwrap();
        w.boot().await
    };
    let binhai = w.token("portal-binhai", &[], None);
    let a = accesses(&w, &binhai, FULL, "").await;
    assert_eq!(
        cases(&a).unwrap_or_else(|| panic!("{}", a.text())),
        ["D-3", "D-2", "D-1"]
    );
}

#[tokio::test]
async fn audit_reindex_rebuilds_the_index_offline() {
    let mut w = World::demo().await;
    let binhai = w.token("portal-binhai", &[], None);
    assert_eq!(
        read_as(&w, &binhai, &licence(FULL), "service-handling", "R-1").await,
        200
    );
    assert_eq!(list(&accesses(&w, &binhai, FULL, "").await).len(), 1);
    w.stop().await;
    let index = index_file(&w);
    std::fs::remove_file(&index).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onewindow"))
        .arg("--config")
        .arg(w.config())
        .arg("--data-dir")
        .arg(w.root().join("data"))
        .args(["audit", "reindex"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("rebuilt"), "{text}");
    assert!(index.exists());
    let w = w.boot().await;
    let binhai = w.token("portal-binhai", &[], None);
    let got = list(&accesses(&w, &binhai, FULL, "").await);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["case_id"], "R-1");
}

// Hostile input: the machine went down while the index was being written.
// Its commits are not synced (the log is the record; the index is derived),
// so an index last written under another boot of the machine and not closed
// cleanly may have lost writes: it is rebuilt from the log at start, never
// trusted. Simulated here by rewriting the file's boot and clean marks and
// deleting an access the log still has.
#[tokio::test]
async fn an_index_written_before_a_machine_crash_is_rebuilt_from_the_log() {
    if onewindow::transparency::boot_id().is_none() {
        eprintln!("SKIPPED: no boot id on this system; the index syncs its commits instead");
        return;
    }
    let mut w = World::demo().await;
    let binhai = w.token("portal-binhai", &[], None);
    for case in ["B-1", "B-2"] {
        assert_eq!(
            read_as(&w, &binhai, &licence(FULL), "service-handling", case).await,
            200
        );
    }
    assert_eq!(list(&accesses(&w, &binhai, FULL, "").await).len(), 2);
    w.stop().await;
    let index = index_file(&w);
    {
        let db = onewindow::transparency::IndexDb::open_for_boot(&index, None)
            .await
            .unwrap();
        let s = db.session().await.unwrap();
        assert!(
            s.clean && s.boot.is_some(),
            "a clean stop marks the file: {s:?}"
        );
        for q in [
            "DELETE FROM accesses WHERE seq = (SELECT MAX(seq) FROM accesses)",
            "UPDATE meta SET v = 'another-boot' WHERE k = 'boot'",
            "UPDATE meta SET v = '0' WHERE k = 'clean'",
        ] {
            sqlx::query(q).execute(db.pool()).await.unwrap();
        }
        db.discard().await;
    }
    let w = w.boot().await;
    let binhai = w.token("portal-binhai", &[], None);
    let got = list(&accesses(&w, &binhai, FULL, "").await);
    let cases: Vec<&str> = got.iter().map(|r| r["case_id"].as_str().unwrap()).collect();
    assert_eq!(
        cases,
        ["B-2", "B-1"],
        "rebuilt from the log, the lost row back"
    );
}
