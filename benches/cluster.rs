//! Cost of cluster-wide rate limits against a local `redis-server` (started
//! by the bench on a free port; skipped when redis-server is missing), next to
//! the single-node limiter, plus an accuracy run: three limiters ("nodes")
//! sharing one sustained quota.
//!
//! `cargo bench --bench cluster`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use onewindow::cluster::limiter::{lease, lease_script};
use onewindow::cluster::{ClusterSettings, Link, RawCluster, SharedLimits};
use onewindow::protect::{DepartmentProtection, Protection, Rate, RateLimitSettings};

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Option<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let r = Redis(child, port);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(r);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn rate(per_second: u32, burst: u32) -> Rate {
    Rate::per_second(
        NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN),
        NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
    )
}

fn link(rt: &tokio::runtime::Runtime, port: u16) -> Arc<Link> {
    let raw = RawCluster {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        timeout_ms: Some(1000),
        ..RawCluster::default()
    };
    let s = ClusterSettings::from_raw(&raw, None, None, std::path::Path::new("bench"))
        .ok()
        .flatten()
        .unwrap_or_else(|| unreachable!());
    let l = Arc::new(Link::new(&s).unwrap_or_else(|e| panic!("{e}")));
    rt.block_on(l.verify("{bench}:epoch"))
        .unwrap_or_else(|e| panic!("{e}"));
    l
}

fn limits(default_client: Rate) -> (RateLimitSettings, DepartmentProtection) {
    let limits = RateLimitSettings {
        default_client,
        ..RateLimitSettings::default()
    };
    let dept = DepartmentProtection {
        rate: rate(1_000_000, 1_000_000),
        per_client: rate(1_000_000, 1_000_000),
        ..DepartmentProtection::default()
    };
    (limits, dept)
}

fn bench(c: &mut Criterion) {
    let Some(server) = redis() else {
        eprintln!("SKIPPED: cluster bench: redis-server not installed");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let client: Arc<str> = Arc::from("portal-binhai");

    // Single node: the in-process limiters (client, client x department, department).
    let (l, d) = limits(rate(1_000_000, 1_000_000));
    let local = Protection::new(&l, [("market-supervision", &d)]);
    c.bench_function("limits/single-node (3 limiters)", |b| {
        b.iter(|| black_box(local.check_client(&client, Some("market-supervision"))))
    });

    // Cluster, large quotas: leases of 1000 tokens, Redis off the request path.
    let shared = Arc::new(SharedLimits::new(
        link(&rt, server.1),
        "bench-lease",
        1,
        &l,
        [("market-supervision", &d)],
    ));
    c.bench_function("limits/cluster, leased (3 limiters)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(shared.check(&client, Some("market-supervision")).await.ok());
                }
                t.elapsed()
            })
        })
    });

    // Cluster, a burst of 9: leases of one token, one Lua call per limiter
    // per request (the worst case: Redis on every request's path).
    let (l9, d9) = limits(rate(1_000_000, 9));
    let per_request = Arc::new(SharedLimits::new(
        link(&rt, server.1),
        "bench-each",
        1,
        &l9,
        [("market-supervision", &d9)],
    ));
    c.bench_function(
        "limits/cluster, Redis per request (client limiter only)",
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        black_box(per_request.check(&client, None).await.ok());
                    }
                    t.elapsed()
                })
            })
        },
    );

    let raw_link = link(&rt, server.1);
    let script = lease_script();
    c.bench_function("redis/lease script round trip", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(
                        lease(
                            &raw_link,
                            &script,
                            "bench:raw",
                            Duration::from_micros(1),
                            1_000_000,
                            1,
                            None,
                        )
                        .await
                        .ok(),
                    );
                }
                t.elapsed()
            })
        })
    });

    accuracy(&rt, server.1);
}

/// Three limiters sharing 1000/s, burst 300, hammered for 3 s by 4 tasks each:
/// admitted against the GCRA bound (burst + rate x time).
fn accuracy(rt: &tokio::runtime::Runtime, port: u16) {
    let (l, _) = limits(rate(1000, 300));
    let nodes: Vec<_> = (0..3)
        .map(|_| {
            Arc::new(SharedLimits::new(
                link(rt, port),
                "bench-accuracy",
                3,
                &l,
                std::iter::empty(),
            ))
        })
        .collect();
    let allowed = Arc::new(AtomicUsize::new(0));
    let checks = Arc::new(AtomicUsize::new(0));
    let client: Arc<str> = Arc::from("portal");
    let run = Duration::from_secs(3);
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for n in &nodes {
            for _ in 0..4 {
                let (n, client, allowed, checks) =
                    (n.clone(), client.clone(), allowed.clone(), checks.clone());
                tasks.push(tokio::spawn(async move {
                    while start.elapsed() < run {
                        checks.fetch_add(1, Ordering::Relaxed);
                        if n.check(&client, None).await.is_ok() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let allowed = allowed.load(Ordering::Relaxed) as f64;
    let ideal = 300.0 + 1000.0 * secs;
    println!(
        "accuracy: 3 nodes, 1000/s burst 300, {secs:.2} s, {} checks: admitted {allowed:.0}, GCRA bound {ideal:.0} ({:+.1} %)",
        checks.load(Ordering::Relaxed),
        (allowed / ideal - 1.0) * 100.0
    );
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
