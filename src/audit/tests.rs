//! Hostile and behavioural tests of the audit log.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;

use super::writer::WriteFault;
use super::*;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh directory per test, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "ow-audit-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
    fn data(&self) -> PathBuf {
        self.0.join("data")
    }
    fn certs(&self) -> PathBuf {
        self.0.join("certs")
    }
    fn audit(&self) -> PathBuf {
        self.0.join("data/audit")
    }
    fn seg(&self, i: u32) -> PathBuf {
        self.audit().join(format!("audit-{i:06}.jsonl"))
    }
    fn key(&self) -> VerifyingKey {
        load_public_key(&self.certs().join(SIGNING_PUB_FILE)).unwrap()
    }
    fn verify(&self) -> Result<VerifyReport, VerifyFailure> {
        verify(&[self.audit()], &self.key(), false)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn settings() -> AuditSettings {
    AuditSettings {
        fsync: FsyncPolicy::Never,
        ..AuditSettings::default()
    }
}

fn ev(i: u64) -> AuditEvent {
    let mut e = AuditEvent::new(Action::DATASET_READ, Decision::Allow);
    e.request_id = Some(format!("req-{i}"));
    e.client = Some("portal-binhai".into());
    e.purpose = Some("service-handling".into());
    e.dataset = Some("business-licence".into());
    e.department = Some("market-supervision".into());
    e.status = Some(200);
    e.latency_us = Some(i);
    e
}

async fn open(t: &Tmp, s: AuditSettings) -> (AuditLog, WriterHandle) {
    AuditLog::open(s, &t.data(), &t.certs()).await.unwrap()
}

/// Writes `n` records and shuts down (final checkpoint).
async fn populate(t: &Tmp, s: AuditSettings, n: u64) {
    let (log, w) = open(t, s).await;
    for i in 0..n {
        log.append(ev(i)).await.unwrap();
    }
    w.shutdown().await.unwrap();
}

fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(p: &Path, l: &[String]) {
    let mut s = l.join("\n");
    s.push('\n');
    fs::write(p, s).unwrap();
}

fn rec(line: &str) -> AuditRecord {
    serde_json::from_str(line).unwrap()
}

fn expect_fail(t: &Tmp, kind: FailureKind, seq: Option<u64>) -> VerifyFailure {
    let f = t.verify().unwrap_err();
    assert_eq!(f.kind, kind, "{f}");
    if seq.is_some() {
        assert_eq!(f.seq, seq, "{f}");
    }
    assert!(f.file.to_string_lossy().contains("audit-"), "{f}");
    f
}

#[tokio::test]
async fn appends_chain_and_verify() {
    let t = Tmp::new("basic");
    populate(&t, settings(), 50).await;
    let r = t.verify().unwrap();
    assert_eq!(r.records, 51, "50 records + final checkpoint");
    assert_eq!(r.checkpoints, 1);
    assert_eq!(r.last_checkpoint_seq, Some(51));
    assert_eq!(r.unsigned_tail, 0);
    assert!(r.head_checked);
    let l = lines(&t.seg(1));
    let first = rec(&l[0]);
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev, GENESIS_HASH);
    for w in l.windows(2) {
        assert_eq!(rec(&w[1]).prev, rec(&w[0]).hash);
    }
    // The documented canonical form: the line without its `hash` member.
    let line = &l[3];
    let r3 = rec(line);
    let canon = line.replace(&format!(",\"hash\":\"{}\"", r3.hash), "");
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(canon.as_bytes())), r3.hash);
    let mut copy = r3.clone();
    copy.hash = String::new();
    let mut again = copy.clone();
    assert_eq!(again.seal().unwrap(), format!("{line}\n").into_bytes());
}

#[tokio::test]
async fn crlf_and_json_in_fields_stay_one_line() {
    let t = Tmp::new("inject");
    let (log, w) = open(&t, settings()).await;
    let mut e = ev(1);
    e.end_user = Some("clerk\r\n{\"seq\":1,\"decision\":\"allow\"}".into());
    e.case_id = Some("\",\"decision\":\"allow\",\"x\":\"".into());
    e.reason = Some("line1\nline2\r\n\u{2028}\u{0000}}{".into());
    e.request_id = Some("\"hash\":\"00\"".into());
    let a = log.append(e.clone()).await.unwrap();
    w.shutdown().await.unwrap();
    let l = lines(&t.seg(1));
    assert_eq!(l.len(), 2, "record + checkpoint, nothing split: {l:?}");
    let r = rec(&l[0]);
    assert_eq!(r.seq, a.seq);
    assert_eq!(r.event.end_user, e.end_user);
    assert_eq!(r.event.case_id, e.case_id);
    assert_eq!(r.event.reason, e.reason);
    assert_eq!(r.event.request_id, e.request_id);
    assert_eq!(r.event.decision, Decision::Allow);
    assert!(!l[0].contains('\r'));
    t.verify().unwrap();
}

#[tokio::test]
async fn edited_byte_is_found() {
    let t = Tmp::new("edit");
    populate(&t, settings(), 20).await;
    let mut l = lines(&t.seg(1));
    l[9] = l[9].replace("business-licence", "business-licencf");
    write_lines(&t.seg(1), &l);
    let f = expect_fail(&t, FailureKind::Edited, Some(10));
    assert_eq!(f.line, 10);
}

#[tokio::test]
async fn edited_and_rehashed_is_found_at_the_record() {
    let t = Tmp::new("rehash");
    populate(&t, settings(), 20).await;
    let mut l = lines(&t.seg(1));
    let mut r = rec(&l[9]);
    r.event.client = Some("someone-else".into());
    l[9] = String::from_utf8(r.seal().unwrap())
        .unwrap()
        .trim_end()
        .to_string();
    write_lines(&t.seg(1), &l);
    let f = expect_fail(&t, FailureKind::Edited, Some(10));
    assert_eq!(f.line, 10);
}

#[tokio::test]
async fn deleted_record_is_found() {
    let t = Tmp::new("delete");
    populate(&t, settings(), 20).await;
    let mut l = lines(&t.seg(1));
    l.remove(7);
    write_lines(&t.seg(1), &l);
    let f = expect_fail(&t, FailureKind::Deleted, Some(9));
    assert!(f.detail.contains("expected seq 8"), "{f}");
}

#[tokio::test]
async fn inserted_record_is_found() {
    let t = Tmp::new("insert");
    populate(&t, settings(), 20).await;
    let mut l = lines(&t.seg(1));
    // A well-formed forgery: right seq, right prev, right hash.
    let before = rec(&l[4]);
    let mut e = ev(999);
    e.client = Some("ghost".into());
    let mut forged = AuditRecord::from_event(e, before.seq + 1, before.hash.clone());
    let line = String::from_utf8(forged.seal().unwrap()).unwrap();
    l.insert(5, line.trim_end().to_string());
    write_lines(&t.seg(1), &l);
    let f = expect_fail(&t, FailureKind::Inserted, Some(6));
    assert_eq!(f.line, 7);
}

#[tokio::test]
async fn reordered_records_are_found() {
    let t = Tmp::new("reorder");
    populate(&t, settings(), 20).await;
    let mut l = lines(&t.seg(1));
    l.swap(5, 6);
    write_lines(&t.seg(1), &l);
    let f = expect_fail(&t, FailureKind::Reordered, Some(7));
    assert_eq!(f.line, 6);
}

#[tokio::test]
async fn duplicated_record_is_found() {
    let t = Tmp::new("dup");
    populate(&t, settings(), 20).await;
    let mut l = lines(&t.seg(1));
    let d = l[5].clone();
    l.insert(6, d.clone());
    write_lines(&t.seg(1), &l);
    expect_fail(&t, FailureKind::Duplicated, Some(6));
    // A copy of an older record further down.
    let mut l = lines(&t.seg(1));
    l.remove(6);
    l.insert(12, d);
    write_lines(&t.seg(1), &l);
    expect_fail(&t, FailureKind::Duplicated, Some(6));
}

#[tokio::test]
async fn tail_truncated_before_last_checkpoint_is_found() {
    let t = Tmp::new("trunc");
    let s = AuditSettings {
        checkpoint_every: std::num::NonZeroU64::new(10).unwrap(),
        ..settings()
    };
    populate(&t, s, 25).await;
    let l = lines(&t.seg(1));
    // Cut at a line boundary so the rest is a valid prefix chain.
    write_lines(&t.seg(1), &l[..15]);
    let f = expect_fail(&t, FailureKind::Truncated, Some(16));
    assert!(f.detail.contains("audit-head.json"), "{f}");
    // Cut mid-line: also truncated.
    let mut bytes = fs::read(t.seg(1)).unwrap();
    bytes.truncate(bytes.len() - 30);
    fs::write(t.seg(1), bytes).unwrap();
    expect_fail(&t, FailureKind::Truncated, None);
}

#[tokio::test]
async fn checkpoint_signature_altered_is_found() {
    let t = Tmp::new("sig");
    let s = AuditSettings {
        checkpoint_every: std::num::NonZeroU64::new(5).unwrap(),
        ..settings()
    };
    populate(&t, s, 12).await;
    let l = lines(&t.seg(1));
    let idx = l
        .iter()
        .position(|x| x.contains("\"action\":\"checkpoint\""))
        .unwrap();
    let cp = rec(&l[idx]);
    let sig = cp.checkpoint.as_ref().unwrap().signature.clone();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    // Plain edit of the signature.
    let mut edited = l.clone();
    edited[idx] = l[idx].replace(&sig, &flipped);
    write_lines(&t.seg(1), &edited);
    expect_fail(&t, FailureKind::BadSignature, Some(cp.seq));
    // Signature replaced and the record re-hashed: still a bad signature.
    let mut forged = cp.clone();
    forged.checkpoint.as_mut().unwrap().signature = flipped;
    let mut edited = l.clone();
    edited[idx] = String::from_utf8(forged.seal().unwrap())
        .unwrap()
        .trim_end()
        .to_string();
    write_lines(&t.seg(1), &edited);
    expect_fail(&t, FailureKind::BadSignature, Some(cp.seq));
    // Verified with another key: bad signature at the first checkpoint.
    write_lines(&t.seg(1), &l);
    let other = SigningKeys::from_seed([7; 32]).public();
    let f = verify(&[t.audit()], &other, false).unwrap_err();
    assert_eq!(f.kind, FailureKind::BadSignature, "{f}");
}

#[tokio::test]
async fn garbage_appended_is_found() {
    let t = Tmp::new("garbage");
    populate(&t, settings(), 5).await;
    let n = lines(&t.seg(1)).len() as u64;
    let mut f = fs::OpenOptions::new().append(true).open(t.seg(1)).unwrap();
    f.write_all(b"{\"seq\":7,\"note\":\"hi\"}\n").unwrap();
    let fail = expect_fail(&t, FailureKind::Garbage, None);
    assert_eq!(fail.line, n + 1);
    f.write_all(b"\x00\xff garbage\n").unwrap();
    expect_fail(&t, FailureKind::Garbage, None);
}

#[tokio::test]
async fn a_segment_that_never_ends_is_reported_not_read_into_memory() {
    if !Path::new("/dev/zero").exists() {
        return;
    }
    let t = Tmp::new("endless");
    populate(&t, settings(), 3).await;
    // A "segment" linked to /dev/zero is an endless line without a newline.
    std::os::unix::fs::symlink("/dev/zero", t.seg(2)).unwrap();
    let got: Vec<_> = QueryIter::new(&t.audit(), QueryFilter::default(), None)
        .unwrap()
        .collect();
    assert!(
        matches!(got.last(), Some(Err(AuditError::Corrupt { .. }))),
        "{got:?}"
    );
    assert!(t.verify().is_err());
}

/// Fault hook that, while armed, writes half the batch and fails with ENOSPC.
fn half_write_fault(armed: Arc<AtomicBool>) -> WriteFault {
    Arc::new(move |len| {
        armed
            .load(Ordering::SeqCst)
            .then(|| (len / 2, std::io::Error::from_raw_os_error(28)))
    })
}

#[tokio::test]
async fn write_fault_fails_closed_and_recovers_the_chain() {
    let t = Tmp::new("fault");
    let armed = Arc::new(AtomicBool::new(false));
    let (log, w) = AuditLog::open_with(
        settings(),
        &t.data(),
        &t.certs(),
        Some(half_write_fault(armed.clone())),
    )
    .await
    .unwrap();
    let a1 = log.append(ev(1)).await.unwrap();
    armed.store(true, Ordering::SeqCst);
    for i in 0..3 {
        assert!(matches!(
            log.append(ev(10 + i)).await,
            Err(AuditError::Unavailable)
        ));
    }
    assert!(!log.is_healthy());
    // Nothing partial left behind: the file ends at the last good record.
    let l = lines(&t.seg(1));
    assert_eq!(l.len(), 1);
    assert!(fs::read(t.seg(1)).unwrap().ends_with(b"\n"));
    armed.store(false, Ordering::SeqCst);
    let a2 = log.append(ev(2)).await.unwrap();
    assert!(log.is_healthy());
    // seq 2 is the outage note, then the record.
    assert_eq!(a2.seq, a1.seq + 2);
    w.shutdown().await.unwrap();
    let l = lines(&t.seg(1));
    let note = rec(&l[1]);
    assert_eq!(note.event.action, Action::AUDIT_OUTAGE);
    assert!(note.event.reason.unwrap().contains("3 records refused"));
    t.verify().unwrap();
}

#[tokio::test]
async fn write_fault_on_rotation_target_dev_full() {
    // A real kernel ENOSPC: the next segment is a symlink to /dev/full.
    if !Path::new("/dev/full").exists() {
        return;
    }
    let t = Tmp::new("devfull");
    let s = AuditSettings {
        rotate_bytes: std::num::NonZeroU64::new(4096).unwrap(),
        ..settings()
    };
    let (log, w) = open(&t, s).await;
    std::os::unix::fs::symlink("/dev/full", t.seg(2)).unwrap();
    let mut refused = 0;
    for i in 0..40 {
        if log.append(ev(i)).await.is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0);
    assert!(!log.is_healthy());
    // The disk "frees up": the writer resumes the chain in the next segment.
    fs::remove_file(t.seg(2)).unwrap();
    log.append(ev(100)).await.unwrap();
    assert!(log.is_healthy());
    w.shutdown().await.unwrap();
    let r = t.verify().unwrap();
    assert!(r.files >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_concurrent_appends_make_one_chain() {
    let t = Tmp::new("concurrent");
    let s = AuditSettings {
        fsync: FsyncPolicy::Always,
        rotate_bytes: std::num::NonZeroU64::new(1 << 20).unwrap(),
        ..AuditSettings::default()
    };
    let (log, w) = open(&t, s).await;
    let mut tasks = Vec::new();
    for task in 0..100u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..100 {
                seqs.push(log.append(ev(task * 1000 + i)).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    w.shutdown().await.unwrap();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 10_000, "every append got its own seq");
    let r = t.verify().unwrap();
    // 10 000 records + one checkpoint per 1000 + the final one (if needed).
    assert!(r.records >= 10_010, "{r:?}");
    assert!(r.files >= 2, "rotated: {r:?}");
    assert_eq!(r.unsigned_tail, 0);
}

#[tokio::test]
async fn rotation_links_files_and_a_missing_middle_file_is_found() {
    let t = Tmp::new("rotate");
    let s = AuditSettings {
        rotate_bytes: std::num::NonZeroU64::new(4096).unwrap(),
        ..settings()
    };
    populate(&t, s, 100).await;
    let r = t.verify().unwrap();
    assert!(r.files >= 3, "{r:?}");
    let last_of_1 = rec(lines(&t.seg(1)).last().unwrap());
    let first_of_2 = rec(&lines(&t.seg(2))[0]);
    assert_eq!(first_of_2.prev, last_of_1.hash);
    assert_eq!(first_of_2.seq, last_of_1.seq + 1);
    // Explicit files in order verify too.
    let files: Vec<_> = (1..=r.files as u32).map(|i| t.seg(i)).collect();
    verify(&files, &t.key(), false).unwrap();
    let first_of_3 = rec(&lines(&t.seg(3))[0]);
    fs::remove_file(t.seg(2)).unwrap();
    let f = expect_fail(&t, FailureKind::Deleted, Some(first_of_3.seq));
    assert!(f.file.ends_with("audit-000003.jsonl"), "{f}");
    assert!(f.detail.contains("file"), "{f}");
}

#[tokio::test]
async fn reopen_resumes_the_chain() {
    let t = Tmp::new("resume");
    populate(&t, settings(), 10).await;
    let before = t.verify().unwrap();
    let (log, w) = open(&t, settings()).await;
    let a = log.append(ev(11)).await.unwrap();
    assert_eq!(a.seq, before.last_seq + 1);
    w.shutdown().await.unwrap();
    let l = lines(&t.seg(1));
    assert_eq!(rec(&l[before.last_seq as usize]).prev, before.last_hash);
    let after = t.verify().unwrap();
    assert_eq!(after.checkpoints, 2);
}

#[tokio::test]
async fn torn_tail_is_set_aside_and_noted() {
    let t = Tmp::new("torn");
    populate(&t, settings(), 10).await;
    let good = t.verify().unwrap();
    // Crash mid-write: half a record at the end.
    let mut half = AuditRecord::from_event(ev(99), good.last_seq + 1, good.last_hash.clone());
    let line = half.seal().unwrap();
    let torn = &line[..line.len() / 2];
    fs::OpenOptions::new()
        .append(true)
        .open(t.seg(1))
        .unwrap()
        .write_all(torn)
        .unwrap();
    expect_fail(&t, FailureKind::Truncated, None);
    let (log, w) = open(&t, settings()).await;
    log.append(ev(100)).await.unwrap();
    w.shutdown().await.unwrap();
    let aside: Vec<_> = fs::read_dir(t.audit())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".torn-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(fs::read(&aside[0]).unwrap(), torn);
    let l = lines(&t.seg(1));
    let note = rec(&l[good.last_seq as usize]);
    assert_eq!(note.event.action, Action::AUDIT_TORN_TAIL);
    assert!(
        note.event
            .reason
            .unwrap()
            .contains(&format!("{} bytes", torn.len()))
    );
    t.verify().unwrap();
}

#[tokio::test]
async fn query_filters_and_pages() {
    let t = Tmp::new("query");
    let (log, w) = open(&t, settings()).await;
    for i in 0..30u64 {
        let mut e = ev(i);
        e.time = format!("2026-01-01T00:00:{i:02}.000Z");
        e.subject_ref = Some(log.subject_ref(if i % 3 == 0 {
            "91120116MA07Q8XJ2K"
        } else {
            "other"
        }));
        if i % 5 == 0 {
            e.decision = Decision::Deny;
            e.client = Some("portal-readonly".into());
        }
        e.case_id = Some(format!("case-{}", i % 2));
        log.append(e).await.unwrap();
    }
    let key = log.subject_key().clone();
    w.shutdown().await.unwrap();
    // No raw subject id in the log.
    let text = fs::read_to_string(t.seg(1)).unwrap();
    assert!(!text.contains("91120116MA07Q8XJ2K"));
    let q = |f: Filter| f.compile(&key).unwrap();
    let page = query(
        &t.audit(),
        &q(Filter {
            subject: Some("91120116MA07Q8XJ2K".into()),
            ..Filter::default()
        }),
        None,
        None,
    )
    .unwrap();
    assert_eq!(page.records.len(), 10);
    assert!(page.next_cursor.is_none());
    let page = query(
        &t.audit(),
        &q(Filter {
            decision: Some("deny".into()),
            client: Some("portal-readonly".into()),
            ..Filter::default()
        }),
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        page.records
            .iter()
            .map(|r| r.event.latency_us.unwrap())
            .collect::<Vec<_>>(),
        vec![0, 5, 10, 15, 20, 25]
    );
    let window = q(Filter {
        since: Some("2026-01-01T00:00:10Z".into()),
        until: Some("2026-01-01T08:00:20+08:00".into()),
        case_id: Some("case-1".into()),
        ..Filter::default()
    });
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let p = query(&t.audit(), &window, cursor.as_deref(), Some(2)).unwrap();
        seen.extend(p.records.iter().map(|r| r.event.latency_us.unwrap()));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, vec![11, 13, 15, 17, 19]);
    assert!(matches!(
        Filter {
            since: Some("yesterday".into()),
            ..Filter::default()
        }
        .compile(&key),
        Err(AuditError::BadQuery(_))
    ));
    assert!(matches!(
        query(&t.audit(), &window, Some("x"), None),
        Err(AuditError::BadQuery(_))
    ));
    let all: Vec<_> = QueryIter::new(&t.audit(), QueryFilter::default(), None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(all.len(), 31);
}

#[tokio::test]
async fn checkpoints_every_n_and_on_demand() {
    let t = Tmp::new("interval");
    let s = AuditSettings {
        checkpoint_every: std::num::NonZeroU64::new(10).unwrap(),
        ..settings()
    };
    let (log, w) = open(&t, s).await;
    for i in 0..25 {
        log.append(ev(i)).await.unwrap();
    }
    let count = |t: &Tmp| {
        lines(&t.seg(1))
            .iter()
            .filter(|l| l.contains("\"checkpoint\":{"))
            .count()
    };
    assert_eq!(count(&t), 2, "at 10 and 20 records");
    // What the interval timer does.
    log.checkpoint_now().await.unwrap();
    assert_eq!(count(&t), 3);
    log.checkpoint_now().await.unwrap();
    assert_eq!(count(&t), 3, "nothing new to sign");
    w.shutdown().await.unwrap();
    assert_eq!(count(&t), 3, "no empty checkpoint at shutdown");
    let r = t.verify().unwrap();
    assert_eq!(r.checkpoints, 3);
}

#[tokio::test]
async fn appends_after_shutdown_are_refused() {
    let t = Tmp::new("closed");
    let (log, w) = open(&t, settings()).await;
    w.shutdown().await.unwrap();
    assert!(matches!(
        log.append(ev(1)).await,
        Err(AuditError::Unavailable)
    ));
    assert!(log.try_append(ev(1)).is_err());
}

#[tokio::test]
async fn keys_are_generated_private_and_stable() {
    let t = Tmp::new("keys");
    let (log, w) = open(&t, settings()).await;
    let r1 = log.subject_ref("91120116MA07Q8XJ2K");
    w.shutdown().await.unwrap();
    for f in [HMAC_KEY_FILE, SIGNING_KEY_FILE] {
        let mode = fs::metadata(t.certs().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let (log, w) = open(&t, settings()).await;
    assert_eq!(log.subject_ref("91120116MA07Q8XJ2K"), r1);
    assert_ne!(log.subject_ref("91120116MA07Q8XJ2L"), r1);
    assert_eq!(log.public_key(), t.key());
    w.shutdown().await.unwrap();
    // Same as HMAC keyed with the 32 raw bytes.
    let hexkey = fs::read_to_string(t.certs().join(HMAC_KEY_FILE)).unwrap();
    let raw = hex::decode(hexkey.trim()).unwrap();
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&raw).unwrap();
    mac.update(b"91120116MA07Q8XJ2K");
    assert_eq!(r1.as_str(), hex::encode(mac.finalize().into_bytes()));
    // A too-open key is refused; a mismatched public key is refused.
    fs::set_permissions(
        t.certs().join(HMAC_KEY_FILE),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert!(matches!(
        SubjectKey::load(&t.certs()),
        Err(AuditError::Key { .. })
    ));
    fs::write(t.certs().join(SIGNING_PUB_FILE), hex::encode([9u8; 32])).unwrap();
    assert!(matches!(
        SigningKeys::load_or_generate(&t.certs()),
        Err(AuditError::Key { .. })
    ));
}

#[test]
fn deny_aggregator_summarises_floods() {
    let agg = DenyAggregator::new(3, Duration::from_secs(10));
    let mut decisions = Vec::new();
    for _ in 0..10 {
        decisions.push(agg.observe("203.0.113.9", &Action::AUTH_DENIED, "invalid_token"));
    }
    assert_eq!(
        agg.observe("portal-readonly", &Action::RATE_LIMITED, "per-client"),
        AggregateDecision::Record
    );
    assert_eq!(
        decisions
            .iter()
            .filter(|d| **d == AggregateDecision::Record)
            .count(),
        3
    );
    let out = agg.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].client.as_deref(), Some("203.0.113.9"));
    assert_eq!(out[0].action, Action::AUTH_DENIED);
    assert!(
        out[0].reason.as_deref().unwrap().contains("10 denies"),
        "{:?}",
        out[0].reason
    );
    assert!(out[0].reason.as_deref().unwrap().contains("7 not recorded"));
    // A new interval starts fresh.
    assert_eq!(
        agg.observe("203.0.113.9", &Action::AUTH_DENIED, "invalid_token"),
        AggregateDecision::Record
    );
    assert!(agg.drain().is_empty());
}

#[test]
fn config_defaults_and_errors() {
    let file = Path::new("config/gateway.toml");
    let s = AuditSettings::from_raw(RawAudit::default(), file).unwrap();
    assert_eq!(s, AuditSettings::default());
    assert_eq!(s.rotate_bytes.get(), 64 * 1024 * 1024);
    assert_eq!(s.checkpoint_every.get(), 1000);
    assert_eq!(s.queue_capacity.get(), 8192);
    assert_eq!(s.max_batch.get(), 512);
    assert_eq!(
        s.resolve_dir(Path::new("data")),
        PathBuf::from("data/audit")
    );

    let raw: RawAudit = crate::config::parse_toml(
        file,
        "fsync = \"interval\"\nfsync_interval_ms = 20\nrotate_bytes = 1048576\n",
    )
    .unwrap();
    let s = AuditSettings::from_raw(raw, file).unwrap();
    assert_eq!(s.fsync, FsyncPolicy::Interval(Duration::from_millis(20)));

    let raw: RawAudit = crate::config::parse_toml(
        file,
        "fsync = \"sometimes\"\nfsync_interval_ms = 5\nrotate_bytes = 10\nmax_batch = 0\n",
    )
    .unwrap();
    let errs = AuditSettings::from_raw(raw, file).unwrap_err();
    let fields: Vec<_> = errs.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "audit.fsync",
            "audit.fsync_interval_ms",
            "audit.rotate_bytes",
            "audit.max_batch"
        ]
    );
    assert!(errs.to_string().contains("config/gateway.toml"));
    let err = crate::config::parse_toml::<RawAudit>(file, "fsynk = \"always\"\n").unwrap_err();
    assert_eq!(err.field, "fsynk");
}

#[tokio::test]
async fn empty_newest_segment_resumes_from_the_one_before() {
    // A crash right after rotation created the next file.
    let t = Tmp::new("emptyseg");
    populate(&t, settings(), 5).await;
    let before = t.verify().unwrap();
    fs::write(t.seg(2), b"").unwrap();
    let (log, w) = open(&t, settings()).await;
    let a = log.append(ev(6)).await.unwrap();
    assert_eq!(a.seq, before.last_seq + 1);
    w.shutdown().await.unwrap();
    assert_eq!(rec(&lines(&t.seg(2))[0]).prev, before.last_hash);
    let r = t.verify().unwrap();
    assert_eq!(r.files, 2);
}

#[tokio::test]
async fn live_verify_tolerates_a_line_being_written() {
    let t = Tmp::new("live");
    let (log, w) = open(&t, settings()).await;
    for i in 0..5 {
        log.append(ev(i)).await.unwrap();
    }
    log.checkpoint_now().await.unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(t.seg(1))
        .unwrap()
        .write_all(b"{\"seq\":7,\"ti")
        .unwrap();
    let r = log.verify().await.unwrap().unwrap();
    assert!(r.partial_tail);
    assert_eq!(r.last_seq, 6);
    // The strict verifier (CLI) does not tolerate it.
    expect_fail(&t, FailureKind::Truncated, Some(7));
    drop(w);
}

mod continuity;
