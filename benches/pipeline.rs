//! Where a request's microseconds go: the in-memory data plane, whole and
//! phase by phase.
//!
//! `DataPlane::handle` runs on in-memory requests (no sockets) over the
//! shipped configuration (laid out in a temporary directory, audit
//! `fsync = "never"`, rate limits raised so that the benchmark never meets
//! them) with in-process departments answering at once. Measured:
//!
//! - `full/cached_read`: `GET /v1/datasets/business-licence/{uscc}`, a cache hit;
//! - `full/pass_through`: `GET /v1/proxy/market-supervision/licences/{uscc}`;
//! - the phases reachable through public APIs, each alone: path
//!   normalisation and routing, authentication of a cached token, attribution
//!   and grant checks, the three rate limiters, the cache lookup with the copy
//!   that field filtering works on, the reply's serialisation (the same JSON
//!   shape as the pipeline's, rebuilt here) and one audit append.
//!
//! Besides criterion's timings it prints, for the cached read and the
//! pass-through, the heap allocations and context switches (voluntary +
//! involuntary, all threads of this process) per request, counted over a
//! fixed number of requests by a counting global allocator (`stats_alloc`)
//! and `/proc/self/task/*/status`.
//!
//! `cargo bench --bench pipeline` (about a minute and a half);
//! `cargo bench --bench pipeline -- full/` for the two whole requests only.

// A benchmark aborts on any failure; that is the point of it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::alloc::System;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::HeaderValue;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use onewindow::audit::{Action, AuditEvent, AuditLog, Decision, DenyAggregator, WriterHandle};
use onewindow::auth::{Attribution, DemoIssuer};
use onewindow::cache::{Record, SharedCache};
use onewindow::case::{Cases, MemoryCaseStore};
use onewindow::clock::WallClock;
use onewindow::demo::Sim;
use onewindow::error::{GatewayError, UpstreamError};
use onewindow::loader::Overrides;
use onewindow::metrics::Metrics;
use onewindow::pipeline::DataPlane;
use onewindow::routing::Router;
use onewindow::server::{ConnInfo, Handler};
use onewindow::state::{State, build_state};
use onewindow::upstream::{Department, Reply, SendFuture};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const USCC: &str = "91120116MA07Q8XJ2K";
const CLIENT: &str = "portal-binhai";
const DEPARTMENTS: [&str; 5] = [
    "market-supervision",
    "health-commission",
    "fire-rescue",
    "public-security",
    "ecology-environment",
];
const CACHED_READ: &str = "/v1/datasets/business-licence/91120116MA07Q8XJ2K";
const PASS_THROUGH: &str = "/v1/proxy/market-supervision/licences/91120116MA07Q8XJ2K";
/// Requests over which allocations and context switches are counted.
const COUNTED: u64 = 2_000;

/// A department answering at once with its simulated department's reply.
#[derive(Debug)]
struct InstantDept(Sim);

impl Department for InstantDept {
    fn send<'a>(
        &'a self,
        req: Request<Full<Bytes>>,
        path_and_query: &'a str,
        _timeout: Duration,
        _max_reply: usize,
    ) -> SendFuture<'a> {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let (path, query) = match path_and_query.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path_and_query, None),
            };
            let (status, ctype, text) = self.0.answer(&parts.method, path, query, &body);
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            Ok::<_, UpstreamError>(Reply {
                status,
                headers,
                body: Bytes::from(text),
            })
        })
    }
}

/// The shipped project in a temporary directory: fsync off, limits out of
/// the way, no demo listeners, adapters pointing nowhere (the in-process
/// departments stand in).
fn layout(root: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    for d in ["config/scenarios", "adapters", "certs", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["config/datasets.toml", "config/clients.toml"] {
        std::fs::copy(src.join(f), root.join(f)).unwrap();
    }
    for e in std::fs::read_dir(src.join("config/scenarios")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(
            &p,
            root.join("config/scenarios").join(p.file_name().unwrap()),
        )
        .unwrap();
    }
    for dept in DEPARTMENTS {
        let text = std::fs::read_to_string(src.join(format!("adapters/{dept}.toml"))).unwrap();
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("base_url") {
                    "base_url = \"http://127.0.0.1:9\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(root.join(format!("adapters/{dept}.toml")), text.join("\n")).unwrap();
    }
    let mut gw = std::fs::read_to_string(src.join("config/gateway.toml")).unwrap();
    assert!(
        gw.contains("fsync = \"always\""),
        "gateway.toml changed shape"
    );
    gw = gw
        .replace("fsync = \"always\"", "fsync = \"never\"")
        .replace("per_second = 100000", "per_second = 1000000000")
        .replace("burst = 100000", "burst = 1000000000");
    if let Some(at) = gw.find("[demo]") {
        gw.truncate(at);
    }
    std::fs::write(root.join("config/gateway.toml"), gw).unwrap();
}

/// One gateway's data plane, in memory.
struct World {
    _dir: tempfile::TempDir,
    data: Arc<DataPlane>,
    token: String,
    conn: Arc<ConnInfo>,
    _writer: WriterHandle,
    _shutdown: CancellationToken,
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        layout(root);
        let (issuer, _) = DemoIssuer::load_or_generate(&root.join("certs")).unwrap();
        let token = issuer
            .mint(CLIENT, &[], None, Duration::from_secs(3600))
            .unwrap();
        let config = root.join("config/gateway.toml");
        let loaded = onewindow::loader::load(&config, &Overrides::default())
            .unwrap_or_else(|e| panic!("config did not load: {e}"));
        let shutdown = CancellationToken::new();
        let (audit, writer) = AuditLog::open(
            loaded.audit.clone(),
            &loaded.settings.server.data_dir,
            &loaded.settings.server.certs_dir,
        )
        .await
        .unwrap();
        let sharing = Arc::new(
            onewindow::sharing::Accountable::start(
                &loaded.settings.server.certs_dir,
                &loaded.settings.server.data_dir,
                &audit,
                WallClock::new(),
                shutdown.clone(),
            )
            .unwrap(),
        );
        let cache = Arc::new(SharedCache::new(&loaded.cache));
        let aggregator = DenyAggregator::from_settings(&loaded.audit);
        let mut state: State = build_state(loaded, &shutdown)
            .await
            .unwrap_or_else(|e| panic!("state did not build: {e}"));
        for name in DEPARTMENTS {
            let sim = Sim::for_department(name).unwrap();
            state
                .upstreams
                .insert(name.to_string(), Arc::new(InstantDept(sim)));
        }
        let state = Arc::new(ArcSwap::from_pointee(state));
        let cases = Arc::new(Cases::new(
            Arc::new(MemoryCaseStore::default()),
            WallClock::new(),
        ));
        let metrics = Arc::new(Metrics::new(None));
        let data = Arc::new(DataPlane::new(
            state, audit, cache, metrics, aggregator, sharing, cases,
        ));
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        World {
            _dir: dir,
            data,
            token,
            conn: Arc::new(ConnInfo {
                peer,
                tls: false,
                client_cert_sha256: None,
            }),
            _writer: writer,
            _shutdown: shutdown,
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", self.token)).unwrap(),
        );
        h.insert("x-purpose", HeaderValue::from_static("service-handling"));
        h.insert(http::header::HOST, HeaderValue::from_static("localhost"));
        h
    }

    fn request(&self, path: &str) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = path.parse().unwrap();
        *req.headers_mut() = self.headers();
        req
    }

    /// One whole request through `DataPlane::handle`; the body is read as
    /// hyper would write it.
    async fn call(&self, path: &str) -> StatusCode {
        let resp = self
            .data
            .clone()
            .handle(self.request(path), self.conn.clone())
            .await;
        let status = resp.status();
        black_box(resp.into_body().collect().await.unwrap().to_bytes());
        status
    }
}

/// Voluntary + involuntary context switches of every thread of this process.
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Allocations, bytes and context switches per request over `COUNTED` requests.
fn count_per_request(rt: &Runtime, w: &World, name: &str, path: &str) {
    rt.block_on(async {
        for _ in 0..100 {
            assert_eq!(w.call(path).await, StatusCode::OK, "{name}: {path}");
        }
    });
    let switches = context_switches();
    let region = Region::new(GLOBAL);
    let started = Instant::now();
    rt.block_on(async {
        for _ in 0..COUNTED {
            black_box(w.call(path).await);
        }
    });
    let took = started.elapsed();
    let change = region.change();
    let switches = context_switches().saturating_sub(switches);
    let n = COUNTED as f64;
    println!(
        "{name}: {:.1} allocations/request ({:.0} bytes), {:.2} context switches/request, {:.1} µs/request sequential ({COUNTED} requests, all threads)",
        change.allocations as f64 / n,
        change.bytes_allocated as f64 / n,
        switches as f64 / n,
        took.as_secs_f64() * 1e6 / n,
    );
}

/// The dataset reply's JSON shape, as the pipeline builds it.
fn reply_json(record: &Record) -> Bytes {
    let v = serde_json::json!({
        "dataset": "business-licence",
        "subject": USCC,
        "record": record,
        "source": {
            "department": "market-supervision",
            "fetched_at": onewindow::audit::now_rfc3339(),
            "cache": "hit",
        },
        "notice": "Shared for the stated purpose only. Valid until 2046-03-01.",
    });
    Bytes::from(serde_json::to_vec(&v).unwrap())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let w = rt.block_on(World::start());
    // Warm: the cache holds the licence, the token cache the token.
    rt.block_on(async {
        assert_eq!(w.call(CACHED_READ).await, StatusCode::OK, "cached read");
        assert_eq!(w.call(PASS_THROUGH).await, StatusCode::OK, "pass-through");
    });

    count_per_request(&rt, &w, "cached read", CACHED_READ);
    count_per_request(&rt, &w, "pass-through", PASS_THROUGH);

    let mut g = c.benchmark_group("full");
    for (name, path) in [("cached_read", CACHED_READ), ("pass_through", PASS_THROUGH)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(w.call(path).await);
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();

    let state = w.data.state.load_full();
    let headers = w.headers();
    let mut g = c.benchmark_group("phase");

    let router = Router::new();
    g.bench_function("normalise_and_route", |b| {
        b.iter(|| {
            let path = onewindow::path::normalise(black_box(CACHED_READ)).unwrap();
            black_box(router.route(&Method::GET, &path).is_ok())
        })
    });

    g.bench_function("authenticate_cached_token", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(state.authenticate(&headers, &w.conn).await.unwrap());
                }
                start.elapsed()
            })
        })
    });

    let principal = rt.block_on(state.authenticate(&headers, &w.conn)).unwrap();
    g.bench_function("attribution_and_grants", |b| {
        b.iter(|| {
            let grants = state.grants.client(principal.sub()).clone();
            grants.check_issuer(principal.issuer()).unwrap();
            let a = Attribution::from_headers(&headers).unwrap();
            grants.check_purpose(a.purpose.as_deref()).unwrap();
            black_box(grants.check_dataset("business-licence").unwrap());
            black_box(a)
        })
    });

    g.bench_function("rate_limiters", |b| {
        b.iter(|| {
            black_box(
                state
                    .protect
                    .check_client(CLIENT, Some("market-supervision"))
                    .unwrap(),
            )
        })
    });

    let spec = state.datasets.get("business-licence").unwrap().clone();
    let miss = || async {
        Err::<Record, GatewayError>(UpstreamError::Broken("benchmark: no department".into()).into())
    };
    g.bench_function("cache_lookup_and_copy", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let (entry, _) = w
                        .data
                        .cache
                        .get_variant(&spec, USCC, "", miss)
                        .await
                        .unwrap();
                    black_box((*entry.record).clone());
                }
                start.elapsed()
            })
        })
    });

    let record = rt
        .block_on(w.data.cache.get_variant(&spec, USCC, "", miss))
        .unwrap()
        .0
        .record
        .clone();
    g.bench_function("serialise_reply", |b| {
        b.iter(|| black_box(reply_json(&record)))
    });

    let audit = w.data.audit.clone();
    let subject_ref = audit.subject_ref(USCC);
    let event = move || {
        let mut e = AuditEvent::new(Action::DATASET_READ, Decision::Allow);
        e.request_id = Some("0badcafe-000000000001".into());
        e.client = Some(CLIENT.into());
        e.purpose = Some("service-handling".into());
        e.department = Some("market-supervision".into());
        e.dataset = Some("business-licence".into());
        e.subject_ref = Some(subject_ref.clone());
        e.status = Some(200);
        e.cache = Some("hit".into());
        e.latency_us = Some(100);
        e
    };
    g.bench_function("audit_append_fsync_never", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(audit.append(event()).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
