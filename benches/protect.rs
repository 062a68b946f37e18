//! Cost per request of the protection layer's hot paths.

use std::hint::black_box;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use governor::clock::DefaultClock;
use onewindow::protect::{
    Breaker, Bulkhead, DepartmentProtection, KeyedLimiter, LimiterKind, Protection, Rate,
    RateLimitSettings, TokioClock,
};

fn high() -> Rate {
    let n = NonZeroU32::new(1_000_000_000).unwrap_or(NonZeroU32::MIN);
    Rate::per_second(n, n)
}

fn protection() -> Protection {
    let mut limits = RateLimitSettings {
        default_client: high(),
        ..RateLimitSettings::default()
    };
    limits.clients.insert(Arc::from("portal-binhai"), high());
    let dept = DepartmentProtection {
        rate: high(),
        per_client: high(),
        ..DepartmentProtection::default()
    };
    Protection::new(&limits, [("market-supervision", &dept)])
}

fn rate_limits(c: &mut Criterion) {
    let p = protection();
    c.bench_function("check_client/own-quota/no-department", |b| {
        b.iter(|| black_box(p.check_client(black_box("portal-binhai"), None)))
    });
    c.bench_function("check_client/default-keyed/no-department/&str", |b| {
        b.iter(|| black_box(p.check_client(black_box("portal-other"), None)))
    });
    c.bench_function("check_client/own-quota/department (3 limiters)", |b| {
        b.iter(|| black_box(p.check_client(black_box("portal-binhai"), Some("market-supervision"))))
    });
    c.bench_function("check_client/default-keyed/department (3 limiters)", |b| {
        b.iter(|| black_box(p.check_client(black_box("portal-other"), Some("market-supervision"))))
    });

    let binhai: Arc<str> = Arc::from("portal-binhai");
    let keyed = KeyedLimiter::<Arc<str>, DefaultClock>::new(
        LimiterKind::PerClientDepartment,
        &high(),
        DefaultClock::default(),
    );
    c.bench_function("keyed client x department/hot key", |b| {
        b.iter(|| black_box(keyed.check(black_box(&binhai))))
    });
    let keys: Vec<Arc<str>> = (0..10_000)
        .map(|i| Arc::from(format!("client-{i}")))
        .collect();
    let mut i = 0usize;
    c.bench_function("keyed client x department/10k keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(keyed.check(&keys[i]))
        })
    });

    let ip: IpAddr = "203.0.113.9"
        .parse()
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    c.bench_function("ip_blocked/not blocked", |b| {
        b.iter(|| black_box(p.ip_blocked(black_box(ip))))
    });
}

fn bulkhead_and_breaker(c: &mut Criterion) {
    let p = protection();
    let Some(guard) = p.department("market-supervision") else {
        return;
    };
    let bulkhead: &Bulkhead = guard.bulkhead();
    c.bench_function("bulkhead/try_acquire+release", |b| {
        b.iter(|| drop(black_box(bulkhead.try_acquire())))
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build();
    if let Ok(rt) = rt {
        c.bench_function("bulkhead/acquire().await+release", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        drop(black_box(bulkhead.acquire().await));
                    }
                    start.elapsed()
                })
            })
        });
    }
    let breaker: &Breaker<TokioClock> = guard.breaker();
    c.bench_function("breaker/permit+success", |b| {
        b.iter(|| {
            if let Ok(permit) = breaker.try_acquire() {
                permit.success();
            }
        })
    });
    c.bench_function("breaker/permit+failure (stays closed)", |b| {
        let mut n = 0u32;
        b.iter(|| {
            n += 1;
            if let Ok(permit) = breaker.try_acquire() {
                // Mostly successes so the breaker stays closed.
                if n.is_multiple_of(8) {
                    permit.failure()
                } else {
                    permit.success()
                }
            }
        })
    });
}

criterion_group!(benches, rate_limits, bulkhead_and_breaker);
criterion_main!(benches);
