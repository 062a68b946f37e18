//! Audit log throughput: appends (group commit, fdatasync per batch, many
//! concurrent appenders) and verification (MB/s).

// A benchmark aborts on any failure; that is the point of it.
#![allow(clippy::expect_used)]
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use onewindow::audit::{
    Action, AuditEvent, AuditLog, AuditSettings, Decision, FsyncPolicy, SIGNING_PUB_FILE,
    load_public_key, verify,
};

const APPENDERS: u64 = 64;

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ow-audit-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("tmp dir");
    p
}

fn event(log: &AuditLog, i: u64) -> AuditEvent {
    let mut e = AuditEvent::new(Action::DATASET_READ, Decision::Allow);
    e.request_id = Some(format!("req-{i:016x}"));
    e.client = Some("portal-binhai".into());
    e.end_user = Some("clerk-0042".into());
    e.purpose = Some("service-handling".into());
    e.case_id = Some("CASE-2026-000123".into());
    e.department = Some("market-supervision".into());
    e.dataset = Some("business-licence".into());
    e.subject_ref = Some(log.subject_ref("91120116MA07Q8XJ2K"));
    e.status = Some(200);
    e.cache = Some("hit".into());
    e.upstream_status = Some(200);
    e.latency_us = Some(1234);
    e
}

fn bench_append(c: &mut Criterion, name: &str, fsync: FsyncPolicy) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tmp(name);
    let settings = AuditSettings {
        fsync,
        ..AuditSettings::default()
    };
    let (log, writer) = rt
        .block_on(AuditLog::open(
            settings,
            &dir.join("data"),
            &dir.join("certs"),
        ))
        .expect("open");
    let mut g = c.benchmark_group("audit_append");
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(APPENDERS);
            rt.block_on(async {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for t in 0..APPENDERS {
                    let log = log.clone();
                    tasks.push(tokio::spawn(async move {
                        for i in 0..per {
                            let ev = event(&log, t * 1_000_000 + i);
                            black_box(log.append(ev).await.expect("append"));
                        }
                    }));
                }
                for t in tasks {
                    t.await.expect("task");
                }
                // Scale to the requested iteration count.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per * APPENDERS) as f64)
            })
        })
    });
    g.finish();
    rt.block_on(writer.shutdown()).expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

fn append_fsync_always(c: &mut Criterion) {
    bench_append(c, "fsync_always_64_appenders", FsyncPolicy::Always);
}

fn append_fsync_never(c: &mut Criterion) {
    bench_append(c, "fsync_never_64_appenders", FsyncPolicy::Never);
}

fn verify_throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tmp("verify");
    let settings = AuditSettings {
        fsync: FsyncPolicy::Never,
        ..AuditSettings::default()
    };
    rt.block_on(async {
        let (log, writer) = AuditLog::open(settings, &dir.join("data"), &dir.join("certs"))
            .await
            .expect("open");
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..6_250 {
                    log.append(event(&log, t * 1_000_000 + i))
                        .await
                        .expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        writer.shutdown().await.expect("shutdown");
    });
    let audit = dir.join("data/audit");
    let key = load_public_key(&dir.join("certs").join(SIGNING_PUB_FILE)).expect("key");
    let bytes: u64 = std::fs::read_dir(&audit)
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let mut g = c.benchmark_group("audit_verify");
    g.throughput(Throughput::Bytes(bytes));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("verify_100k_records", |b| {
        b.iter(|| black_box(verify(std::slice::from_ref(&audit), &key, false).expect("intact")))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(
    benches,
    append_fsync_always,
    append_fsync_never,
    verify_throughput
);
criterion_main!(benches);
