//! Continuity across restarts, the witness and the pinned key: each hostile
//! edit of the data dir is noticed by `verify` (with the witness where the
//! rollback reaches the head).

use super::*;

fn witnessed(witness: &Path) -> AuditSettings {
    AuditSettings {
        checkpoint_every: std::num::NonZeroU64::new(5).unwrap(),
        witness_dir: Some(witness.to_path_buf()),
        ..settings()
    }
}

fn heads(dir: &Path) -> Vec<WitnessHead> {
    read_witness(dir)
        .unwrap()
        .into_iter()
        .map(|(line, record)| WitnessHead {
            file: dir.join(WITNESS_FILE),
            line,
            record,
        })
        .collect()
}

fn verify_w(t: &Tmp, w: &Path) -> Result<VerifyReport, VerifyFailure> {
    verify_witnessed(&[t.audit()], &t.key(), &VerifyOptions::default(), &heads(w))
}

async fn restart_and_append(t: &Tmp, s: AuditSettings, n: u64) {
    let (log, w) = open(t, s).await;
    for i in 0..n {
        log.append(ev(1000 + i)).await.unwrap();
    }
    w.shutdown().await.unwrap();
}

#[tokio::test]
async fn cut_tail_then_restart_is_a_gap_for_ever() {
    let t = Tmp::new("cut-tail-restart");
    populate(&t, settings(), 20).await; // 20 records + checkpoint 21 (head)
    let l = lines(&t.seg(1));
    write_lines(&t.seg(1), &l[..l.len() - 5]); // log now ends at seq 16
    // Before the restart verify already says truncated.
    expect_fail(&t, FailureKind::Truncated, None);
    restart_and_append(&t, settings(), 3).await;
    let f = t.verify().unwrap_err();
    assert_eq!(f.kind, FailureKind::Gap, "{f}");
    assert!(f.detail.contains("seqs 17..=21 missing"), "{f}");
    assert_eq!(
        f.seq,
        Some(22),
        "the gap record skips the missing seqs: {f}"
    );
    assert!(f.to_string().contains("audit-000001.jsonl line 17"), "{f}");
    // More restarts and records never launder it.
    restart_and_append(&t, settings(), 3).await;
    restart_and_append(&t, settings(), 3).await;
    let f = t.verify().unwrap_err();
    assert_eq!(f.kind, FailureKind::Gap, "{f}");
    // The gap record is signed (a checkpoint follows it at once) and queryable.
    let l = lines(&t.seg(1));
    let gap = rec(&l[16]);
    assert_eq!(gap.event.action, Action::AUDIT_GAP);
    assert_eq!(rec(&l[17]).event.action, Action::CHECKPOINT);
    let page = query(
        &t.audit(),
        &Filter {
            action: Some("audit.gap".into()),
            ..Filter::default()
        }
        .compile(&SubjectKey::from_bytes([0; 32]))
        .unwrap(),
        None,
        None,
    )
    .unwrap();
    assert_eq!(page.records.len(), 1);
}

#[tokio::test]
async fn cut_middle_then_restart_is_still_found() {
    let t = Tmp::new("cut-middle-restart");
    populate(&t, settings(), 30).await;
    let mut l = lines(&t.seg(1));
    l.drain(9..14);
    write_lines(&t.seg(1), &l);
    restart_and_append(&t, settings(), 3).await;
    let f = expect_fail(&t, FailureKind::Deleted, Some(15));
    assert!(f.to_string().contains("line 10"), "{f}");
}

#[tokio::test]
async fn head_record_replaced_then_restart_is_a_gap() {
    let t = Tmp::new("head-replaced");
    populate(&t, settings(), 10).await;
    // Cut the log to seq 5 and forge (unsigned) records 6..=11 after it: the
    // record at the head's seq now has another hash.
    let l = lines(&t.seg(1));
    write_lines(&t.seg(1), &l[..5]);
    let head = fs::read(t.audit().join(HEAD_FILE)).unwrap();
    {
        // A writer without the head continues from seq 5 ...
        let saved = head.clone();
        fs::remove_file(t.audit().join(HEAD_FILE)).unwrap();
        restart_and_append(&t, settings(), 5).await; // seqs 6..=10, checkpoint 11
        fs::write(t.audit().join(HEAD_FILE), saved).unwrap(); // ... then the old head is put back
    }
    restart_and_append(&t, settings(), 1).await;
    let f = t.verify().unwrap_err();
    let all: Vec<_> = std::iter::once(&f).chain(f.also.iter()).collect();
    assert!(
        all.iter().any(
            |x| x.kind == FailureKind::Gap && x.detail.contains("differs from the signed head")
        ),
        "{f}"
    );
}

#[tokio::test]
async fn restored_older_head_and_cut_is_caught_by_the_witness() {
    let t = Tmp::new("rollback");
    let w = Tmp::new("rollback-witness");
    let s = witnessed(&w.0);
    populate(&t, s.clone(), 10).await; // checkpoints at 6 and 12(5+cp), final
    let old_head = fs::read(t.audit().join(HEAD_FILE)).unwrap();
    let old_len = lines(&t.seg(1)).len();
    restart_and_append(&t, s.clone(), 10).await;
    assert!(heads(&w.0).len() >= 4);
    assert!(verify_w(&t, &w.0).is_ok());
    // Roll the data dir back: older head, log cut to it.
    fs::write(t.audit().join(HEAD_FILE), &old_head).unwrap();
    let l = lines(&t.seg(1));
    write_lines(&t.seg(1), &l[..old_len]);
    // Without the witness the rollback is invisible to verify ...
    assert!(t.verify().is_ok(), "what the witness exists for");
    // ... with it, the log is shorter than a head the witness holds.
    let f = verify_w(&t, &w.0).unwrap_err();
    assert_eq!(f.kind, FailureKind::Witness, "{f}");
    assert!(f.to_string().contains(WITNESS_FILE), "{f}");
    assert!(f.detail.contains("cut back"), "{f}");
    // A restart with the witness configured does not continue silently: the
    // writer checks the witness's latest head too and writes the gap.
    restart_and_append(&t, s.clone(), 2).await;
    let f = t.verify().unwrap_err();
    assert_eq!(f.kind, FailureKind::Gap, "{f}");
    assert!(f.detail.contains("the witness"), "{f}");
    let f = verify_w(&t, &w.0).unwrap_err();
    let kinds: Vec<_> = std::iter::once(&f).chain(&f.also).map(|x| x.kind).collect();
    assert!(kinds.contains(&FailureKind::Gap), "{f}");
}

#[tokio::test]
async fn swapped_key_and_resigned_history_is_caught_by_the_pin() {
    let t = Tmp::new("swap-key");
    let w = Tmp::new("swap-key-witness");
    populate(&t, witnessed(&w.0), 10).await;
    let pinned = key_fingerprint(&t.key());
    // The forger replaces the whole history and the key pair next to it.
    fs::remove_dir_all(t.audit()).unwrap();
    fs::remove_file(t.certs().join(SIGNING_KEY_FILE)).unwrap();
    fs::remove_file(t.certs().join(SIGNING_PUB_FILE)).unwrap();
    populate(&t, settings(), 10).await;
    assert!(t.verify().is_ok(), "self-consistent with the new key");
    let e = check_fingerprint(&t.key(), &pinned, &t.certs().join(SIGNING_PUB_FILE)).unwrap_err();
    assert!(e.to_string().contains(SIGNING_PUB_FILE), "{e}");
    assert!(e.to_string().contains(&pinned), "{e}");
    // The witness heads were signed with the old key.
    let f = verify_w(&t, &w.0).unwrap_err();
    assert_eq!(f.kind, FailureKind::Witness, "{f}");
    // A gateway pinned to the old key refuses to start with the new one.
    let s = AuditSettings {
        signing_key_fingerprint: Some(pinned),
        ..settings()
    };
    let e = AuditLog::open(s, &t.data(), &t.certs())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("fingerprint"), "{e}");
}

#[tokio::test]
async fn missing_or_unwritable_witness_refuses_to_start_and_fails_closed() {
    let t = Tmp::new("witness-missing");
    let gone = t.0.join("not-mounted");
    let e = AuditLog::open(witnessed(&gone), &t.data(), &t.certs())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("not-mounted"), "{e}");
    assert!(e.to_string().contains("witness"), "{e}");
    // A witness whose file cannot be written (a directory in its place; as
    // root, permissions alone would not stop the write).
    let w = Tmp::new("witness-unwritable");
    fs::create_dir(w.0.join(WITNESS_FILE)).unwrap();
    let e = AuditLog::open(witnessed(&w.0), &t.data(), &t.certs())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("witness"), "{e}");
    fs::remove_dir(w.0.join(WITNESS_FILE)).unwrap();
    if !is_root() {
        fs::set_permissions(&w.0, fs::Permissions::from_mode(0o555)).unwrap();
        let e = AuditLog::open(witnessed(&w.0), &t.data(), &t.certs())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("witness"), "{e}");
        fs::set_permissions(&w.0, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Lost while running: the log turns unhealthy until the witness is back.
    let (log, h) = open(&t, witnessed(&w.0)).await;
    assert_eq!(log.witness_status().map(|s| s.1), Some(true));
    fs::remove_dir_all(&w.0).unwrap();
    log.append(ev(1)).await.unwrap();
    log.checkpoint_now().await.unwrap();
    assert!(!log.is_healthy());
    assert_eq!(log.witness_status().map(|s| s.1), Some(false));
    assert!(
        log.append(ev(9)).await.is_err(),
        "nothing acknowledged without the witness"
    );
    fs::create_dir_all(&w.0).unwrap();
    log.append(ev(2)).await.unwrap();
    assert!(log.is_healthy());
    h.shutdown().await.unwrap();
    assert!(verify_w(&t, &w.0).is_ok());
}

fn is_root() -> bool {
    // SAFETY-free check: a root process may write a 0555 directory.
    let probe = std::env::temp_dir().join(format!("ow-root-probe-{}", std::process::id()));
    let _ = fs::create_dir(&probe);
    let _ = fs::set_permissions(&probe, fs::Permissions::from_mode(0o555));
    let root = fs::write(probe.join("x"), b"x").is_ok();
    let _ = fs::set_permissions(&probe, fs::Permissions::from_mode(0o755));
    let _ = fs::remove_dir_all(&probe);
    root
}

#[tokio::test]
async fn cluster_nodes_sharing_one_witness_each_answer_for_their_own_heads() {
    // Two nodes of one project folder: one certs dir (one key), a data dir
    // each, one witness directory.
    let a = Tmp::new("witness-node-a");
    let b = Tmp::new("witness-node-b");
    let w = Tmp::new("witness-shared");
    let node = |n: &str| AuditSettings {
        node: Some(n.into()),
        ..witnessed(&w.0)
    };
    populate(&a, node("a"), 10).await;
    let (log, h) = AuditLog::open(node("b"), &b.data(), &a.certs())
        .await
        .unwrap();
    for i in 0..12 {
        log.append(ev(i)).await.unwrap();
    }
    h.shutdown().await.unwrap();
    // The witness's last line is b's head now; a restarts and must not take
    // it for its own (that would be a false gap).
    restart_and_append(&a, node("a"), 3).await;
    let all = heads(&w.0);
    for (t, n) in [(&a, "a"), (&b, "b")] {
        assert_eq!(chain_node(&[t.audit()]).as_deref(), Some(n));
        let own: Vec<WitnessHead> = all
            .iter()
            .filter(|h| h.record.event.node.as_deref() == Some(n))
            .cloned()
            .collect();
        assert!(!own.is_empty(), "node {n} handed heads to the witness");
        let r = verify_witnessed(&[t.audit()], &a.key(), &VerifyOptions::default(), &own);
        assert!(r.is_ok(), "node {n}: {}", r.unwrap_err());
    }
    // Held to the other node's heads too, a's chain would fail: the per-node
    // filter of `audit verify` is what keeps it intact.
    assert!(verify_witnessed(&[a.audit()], &a.key(), &VerifyOptions::default(), &all).is_err());
}
