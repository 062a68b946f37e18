//! Cluster mode: several in-process nodes sharing one real `redis-server`
//! (started per test on a free port, without persistence, so a test can kill
//! and restart it). Skipped with "SKIPPED: ..." when redis-server is not
//! installed, unless ONEWINDOW_CI_REQUIRE=1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::num::NonZeroU32;
use std::path::Path;

use common::redis::RedisServer;
use common::{FULL, NO_FIRE, REVOKED, World};
use futures_util::StreamExt;
use http::Method;
use onewindow::cluster::limiter::{lease, lease_script};
use onewindow::cluster::{ClusterSettings, Link, RawCluster, SharedLimits};
use onewindow::protect::{Rate, RateLimitSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A node of a cluster on `redis_url`: the demo world plus `[cluster]`.
async fn node(redis_url: &str, name: &str, extra: &str) -> World {
    World::builder()
        .gateway_replace("fsync = \"always\"", "fsync = \"never\"")
        .gateway_extra(&format!(
            "\n[cluster]\nredis_url = \"{redis_url}\"\nnode = \"{name}\"\nnodes = 3\n{extra}\n"
        ))
        .start()
        .await
}

fn admin(w: &World) -> String {
    w.token("platform-admin", &["platform-admin"], None)
}

async fn readyz(w: &World) -> serde_json::Value {
    w.send(Method::GET, "/readyz", None, &[], "").await.json()
}

/// Polls until `f` holds (bounded: state reached through real Redis I/O).
async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cluster_status(w: &World) -> String {
    readyz(w).await["cluster"]["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn wait_ok(w: &World) {
    eventually("cluster ok", Duration::from_secs(10), || async {
        cluster_status(w).await == "ok"
    })
    .await;
}

async fn wait_degraded(w: &World) {
    eventually("cluster degraded", Duration::from_secs(10), || async {
        cluster_status(w).await == "degraded"
    })
    .await;
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

async fn metrics(w: &World) -> String {
    w.send(Method::GET, "/metrics", None, &[], "").await.text()
}

async fn read(w: &World, subject: &str) -> common::Answer {
    let t = w.token("portal-binhai", &[], None);
    w.read(&format!("/v1/datasets/business-licence/{subject}"), &t)
        .await
}

// Three nodes, one client at its quota: together they allow the quota (within
// 10 %), not three times it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_hold_one_client_quota_together() {
    let Some(redis) = RedisServer::start("three_nodes_hold_one_client_quota_together") else {
        return;
    };
    // portal-readonly: 300 at once, one more per minute (so the test's own
    // duration adds nothing measurable).
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let w = World::builder()
            .gateway_replace("fsync = \"always\"", "fsync = \"never\"")
            .gateway_replace("per_second = 5\nburst = 10", "per_minute = 1\nburst = 300")
            .gateway_extra(&format!(
                // A generous timeout: a loaded test machine must not make a
                // slow answer look like an outage (this test is about sharing).
                "\n[cluster]\nredis_url = \"{}\"\nnode = \"{name}\"\nnodes = 3\ntimeout_ms = 3000\n",
                redis.url()
            ))
            .start()
            .await;
        nodes.push(w);
    }
    for w in &nodes {
        wait_ok(w).await;
    }
    let allowed = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let per_node = 400;
    let mut tasks = Vec::new();
    for w in &nodes {
        let token = w.token("portal-readonly", &[], None);
        let (allowed, refused) = (allowed.clone(), refused.clone());
        tasks.push(async move {
            futures_util::stream::iter(0..per_node)
                .for_each_concurrent(16, |_| {
                    let (token, allowed, refused) = (&token, &allowed, &refused);
                    async move {
                        let a = w
                            .send(Method::GET, "/v1/catalog", Some(token), &[], "")
                            .await;
                        match a.status.as_u16() {
                            200 => allowed.fetch_add(1, Ordering::Relaxed),
                            429 => refused.fetch_add(1, Ordering::Relaxed),
                            s => panic!("unexpected {s}: {}", a.text()),
                        };
                    }
                })
                .await;
        });
    }
    futures_util::future::join_all(tasks).await;
    let allowed = allowed.load(Ordering::Relaxed);
    eprintln!("figure: three nodes admitted {allowed} for a shared quota of 300");
    // Nothing went to the local fallback.
    for w in &nodes {
        assert_eq!(
            metric(&metrics(w).await, "onewindow_cluster_fallback_checks_total"),
            0.0
        );
    }
    assert_eq!(allowed + refused.load(Ordering::Relaxed), 3 * per_node);
    assert!(
        (270..=301).contains(&allowed),
        "{allowed} allowed by three nodes for a quota of 300"
    );
}

// An invalidation through node A is in force on node C when A answers: a read
// on C right after is never a hit of the revoked record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidation_on_a_is_never_a_hit_on_c() {
    let Some(redis) = RedisServer::start("invalidation_on_a_is_never_a_hit_on_c") else {
        return;
    };
    let a = node(&redis.url(), "a", "").await;
    let b = node(&redis.url(), "b", "").await;
    let c = node(&redis.url(), "c", "").await;
    for w in [&a, &b, &c] {
        wait_ok(w).await;
    }
    // Until every node is in everyone's live set.
    eventually("three live nodes", Duration::from_secs(10), || async {
        readyz(&a).await["cluster"]["live_nodes"] == 3
    })
    .await;
    let t = admin(&a);
    for (round, subject) in [REVOKED, FULL, NO_FIRE].iter().cycle().take(12).enumerate() {
        read(&c, subject).await;
        let warm = read(&c, subject).await;
        assert_eq!(warm.header("x-cache"), Some("hit"), "round {round}: warmed");
        let inv = a
            .send(
                Method::POST,
                "/admin/cache/invalidate",
                Some(&t),
                &[],
                format!(r#"{{"dataset":"business-licence","subject":"{subject}"}}"#),
            )
            .await;
        assert_eq!(inv.status, 200, "{}", inv.text());
        let j = inv.json();
        assert_eq!(j["cluster"]["nodes_confirmed"], 3, "{j}");
        let after = read(&c, subject).await;
        assert_eq!(after.status, 200);
        assert_ne!(
            after.header("x-cache"),
            Some("hit"),
            "round {round}: node C served the revoked record from its cache"
        );
    }
}

// Redis killed while nodes serve, then restarted: serving continues with local
// limits, /readyz and metrics say degraded, the node recovers and drops the
// records it cached (it may have missed invalidations).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_load_and_restarted() {
    let Some(mut redis) = RedisServer::start("redis_killed_mid_load_and_restarted") else {
        return;
    };
    let a = node(&redis.url(), "a", "").await;
    let b = node(&redis.url(), "b", "").await;
    wait_ok(&a).await;
    wait_ok(&b).await;
    read(&a, FULL).await;
    assert_eq!(read(&a, FULL).await.header("x-cache"), Some("hit"));
    let drops_before = metric(&metrics(&a).await, "onewindow_cluster_cache_drops_total");

    // Load on both nodes for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        let (ta, tb) = (
            a.token("portal-binhai", &[], None),
            b.token("portal-binhai", &[], None),
        );
        let (a, b) = (&a, &b);
        async move {
            while !stop.load(Ordering::Relaxed) {
                for (w, t) in [(a, &ta), (b, &tb)] {
                    let r = w
                        .read(&format!("/v1/datasets/business-licence/{NO_FIRE}"), t)
                        .await;
                    if r.status == 200 {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    let script = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        redis.kill();
        wait_degraded(&a).await;
        wait_degraded(&b).await;
        let m = metrics(&a).await;
        assert_eq!(metric(&m, "onewindow_cluster_degraded"), 1.0);
        let r = readyz(&a).await;
        assert_eq!(r["status"], "degraded", "{r}");
        assert_eq!(r["cluster"]["limits"], "local share", "{r}");
        assert!(r["cluster"]["last_error"].as_str().is_some(), "{r}");
        let during = served.load(Ordering::Relaxed);
        eventually(
            "serving during the outage",
            Duration::from_secs(10),
            || async { served.load(Ordering::Relaxed) > during + 20 },
        )
        .await;
        // A change that must reach every node is refused, not half-made.
        let put = a
            .send(
                Method::PUT,
                "/admin/adapters/fire-rescue",
                Some(&admin(&a)),
                &[("content-type", "application/toml")],
                std::fs::read_to_string(a.root().join("adapters/fire-rescue.toml")).unwrap(),
            )
            .await;
        assert_eq!(put.status, 503, "{}", put.text());
        assert!(put.text().contains("cluster-unavailable"), "{}", put.text());
        redis.restart();
        wait_ok(&a).await;
        wait_ok(&b).await;
        stop.store(true, Ordering::Relaxed);
    };
    tokio::join!(load, script);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the outage"
    );
    let m = metrics(&a).await;
    assert!(metric(&m, "onewindow_cluster_fallback_checks_total") > 0.0);
    assert!(metric(&m, "onewindow_cluster_cache_drops_total") > drops_before);
    assert_eq!(metric(&m, "onewindow_cluster_degraded"), 0.0);
    // The record cached before the outage was dropped on reconnecting.
    assert_eq!(read(&a, FULL).await.header("x-cache"), Some("miss"));
}

/// A TCP proxy to `upstream` that holds every chunk for `delay` (shared, so
/// a test can change it).
async fn delaying_proxy(
    upstream: SocketAddr,
    delay: Arc<std::sync::Mutex<Duration>>,
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let delay = delay.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let d1 = delay.clone();
                let up = async move {
                    let mut buf = vec![0u8; 16384];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let d = *d1.lock().unwrap();
                        tokio::time::sleep(d).await;
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async move {
                    let mut buf = vec![0u8; 16384];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::join!(up, down);
            });
        }
    });
    addr
}

// Redis answering slowly (a proxy holding every request 300 ms, timeout 50 ms):
// requests are served from the local share without waiting on Redis each
// time, readiness says degraded with the timeout named; when Redis is fast
// again the node goes back to shared limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_redis_falls_back_to_local_limits() {
    let Some(redis) = RedisServer::start("slow_redis_falls_back_to_local_limits") else {
        return;
    };
    let delay = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let proxy = delaying_proxy(redis.addr(), delay.clone()).await;
    let a = node(&format!("redis://{proxy}"), "a", "timeout_ms = 50").await;
    wait_ok(&a).await;
    *delay.lock().unwrap() = Duration::from_millis(300);
    wait_degraded(&a).await;
    let r = readyz(&a).await;
    let err = r["cluster"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("did not answer"), "{r}");
    assert!(!err.contains("@"), "no credentials in the error: {err}");
    for _ in 0..20 {
        assert_eq!(read(&a, FULL).await.status, 200);
    }
    assert!(
        metric(
            &metrics(&a).await,
            "onewindow_cluster_fallback_checks_total"
        ) >= 20.0
    );
    *delay.lock().unwrap() = Duration::ZERO;
    wait_ok(&a).await;
    // Requests held by the proxy drain first; then reads use shared limits again.
    eventually("shared limits again", Duration::from_secs(10), || async {
        let before = metric(
            &metrics(&a).await,
            "onewindow_cluster_fallback_checks_total",
        );
        assert_eq!(read(&a, FULL).await.status, 200);
        metric(
            &metrics(&a).await,
            "onewindow_cluster_fallback_checks_total",
        ) == before
    })
    .await;
}

/// A server that answers every read with `reply(bytes read)`.
async fn fake_server(reply: fn(&[u8]) -> Vec<u8>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if s.write_all(&reply(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn wrong_server_is_reported_and_served_around(reply: fn(&[u8]) -> Vec<u8>) {
    let addr = fake_server(reply).await;
    let a = node(&format!("redis://{addr}"), "a", "").await;
    wait_degraded(&a).await;
    eventually("the error is named", Duration::from_secs(10), || async {
        readyz(&a).await["cluster"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not answer like Redis"))
    })
    .await;
    for _ in 0..10 {
        assert_eq!(read(&a, FULL).await.status, 200);
    }
    let r = readyz(&a).await;
    assert_eq!(r["ready"], true, "serving, degraded: {r}");
    assert_eq!(r["status"], "degraded");
    let put = a
        .send(
            Method::PUT,
            "/admin/adapters/fire-rescue",
            Some(&admin(&a)),
            &[("content-type", "application/toml")],
            std::fs::read_to_string(a.root().join("adapters/fire-rescue.toml")).unwrap(),
        )
        .await;
    assert_eq!(put.status, 503, "{}", put.text());
}

// The wrong server (a plain TCP echo): a clear error, no panic, local limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn echo_server_instead_of_redis() {
    wrong_server_is_reported_and_served_around(|b| b.to_vec()).await;
}

// A server that answers garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_answering_server_instead_of_redis() {
    wrong_server_is_reported_and_served_around(|_| b"\x00\xff?!garbage\r\n$-7\r\n*x\r\n".to_vec())
        .await;
}

// Two nodes PUT different adapters for one department at the same moment:
// every node ends with the same one (the later version Redis assigned), in
// memory and on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adapter_puts_converge_on_every_node() {
    let Some(redis) = RedisServer::start("concurrent_adapter_puts_converge_on_every_node") else {
        return;
    };
    let a = node(&redis.url(), "a", "").await;
    let b = node(&redis.url(), "b", "").await;
    let c = node(&redis.url(), "c", "").await;
    for w in [&a, &b, &c] {
        wait_ok(w).await;
    }
    let file =
        |w: &World| std::fs::read_to_string(w.root().join("adapters/fire-rescue.toml")).unwrap();
    async fn put(w: &World, body: String) -> common::Answer {
        let t = admin(w);
        w.send(
            Method::PUT,
            "/admin/adapters/fire-rescue",
            Some(&t),
            &[("content-type", "application/toml")],
            body,
        )
        .await
    }
    for round in 0..5 {
        // Two different, valid files: each node's own (its simulated
        // department's address), marked by a comment.
        let from_a = format!(
            "# from a, round {round}\n{}",
            file(&a)
                .lines()
                .filter(|l| !l.starts_with("# from"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let from_b = format!(
            "# from b, round {round}\n{}",
            file(&b)
                .lines()
                .filter(|l| !l.starts_with("# from"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let (ra, rb) = tokio::join!(put(&a, from_a.clone()), put(&b, from_b.clone()));
        assert_eq!(ra.status, 200, "{}", ra.text());
        assert_eq!(rb.status, 200, "{}", rb.text());
        let (va, vb) = (
            ra.json()["cluster"]["version"].as_u64().unwrap(),
            rb.json()["cluster"]["version"].as_u64().unwrap(),
        );
        assert_ne!(va, vb);
        let winner = if va > vb { &from_a } else { &from_b };
        for (name, w) in [("a", &a), ("b", &b), ("c", &c)] {
            eventually("converged", Duration::from_secs(5), || async {
                file(w).trim() == winner.trim()
            })
            .await;
            let got = w
                .send(
                    Method::GET,
                    "/admin/adapters/fire-rescue",
                    Some(&admin(w)),
                    &[],
                    "",
                )
                .await;
            assert_eq!(
                got.text().trim(),
                winner.trim(),
                "round {round}: node {name}"
            );
            let target = |w: &World| {
                let state = w.gw().data.state.load();
                format!(
                    "{:?}",
                    state.adapters.department("fire-rescue").unwrap().endpoint
                )
            };
            let want = if va > vb { &a } else { &b };
            assert_eq!(
                target(w),
                target(want),
                "round {round}: node {name} in memory"
            );
        }
    }
}

// A node without [cluster] has no cluster component and never talks to Redis.
#[tokio::test]
async fn single_node_has_no_cluster_component() {
    let w = World::demo().await;
    let r = readyz(&w).await;
    assert!(r["cluster"].is_null(), "{r}");
    assert_eq!(r["status"], "ok");
    assert!(!metrics(&w).await.contains("onewindow_cluster_"));
    // Records keep the single-node format: no `node` member at all.
    assert_eq!(read(&w, FULL).await.status, 200);
    let mut w = w;
    w.stop().await;
    let raw = std::fs::read_dir(w.root().join("data/audit"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect::<String>();
    assert!(raw.contains("dataset.read"));
    assert!(!raw.contains(r#""node""#), "{raw}");
}

fn link(redis: &RedisServer) -> Arc<Link> {
    let raw = RawCluster {
        redis_url: Some(redis.url()),
        timeout_ms: Some(3000),
        ..RawCluster::default()
    };
    let settings = ClusterSettings::from_raw(&raw, None, None, Path::new("gateway.toml"))
        .unwrap()
        .unwrap();
    Arc::new(Link::new(&settings).unwrap())
}

// The lease script is GCRA over batches: never more than the burst at once,
// one token back per interval, partial grants, exact waits.
#[tokio::test]
async fn lease_script_is_gcra_over_batches() {
    let Some(redis) = RedisServer::start("lease_script_is_gcra_over_batches") else {
        return;
    };
    let link = link(&redis);
    let script = lease_script();
    let t0 = 1_700_000_000_000_000u64;
    let ms = |n: u64| t0 + n * 1000;
    // 10/s, burst 10.
    let take = |want: u32, now: u64| {
        let (link, script) = (&link, &script);
        async move {
            lease(
                link,
                script,
                "t:rl",
                Duration::from_millis(100),
                10,
                want,
                Some(now),
            )
            .await
            .unwrap()
        }
    };
    let g = take(4, ms(0)).await;
    assert_eq!((g.granted, g.remaining), (4, 6));
    let g = take(10, ms(0)).await;
    assert_eq!((g.granted, g.remaining), (6, 0), "partial grant");
    let g = take(1, ms(0)).await;
    assert_eq!((g.granted, g.wait), (0, Duration::from_millis(100)));
    let g = take(5, ms(250)).await;
    assert_eq!(g.granted, 2, "2.5 intervals: two tokens");
    let g = take(1, ms(250)).await;
    assert_eq!((g.granted, g.wait), (0, Duration::from_millis(50)));
    let g = take(100, ms(60_000)).await;
    assert_eq!(g.granted, 10, "never more than the burst");
}

// Three limiters (three nodes) hammering one key with a sustained rate never
// admit more than the GCRA bound plus what their leases may hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_limiters_never_exceed_the_shared_bound() {
    let Some(redis) = RedisServer::start("three_limiters_never_exceed_the_shared_bound") else {
        return;
    };
    // 1000/s, burst 300: leases of 10 for three nodes.
    let limits = RateLimitSettings {
        default_client: Rate::per_second(
            NonZeroU32::new(1000).unwrap(),
            NonZeroU32::new(300).unwrap(),
        ),
        ..RateLimitSettings::default()
    };
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let l = link(&redis);
        // The heartbeat marks Redis up; here one call does.
        l.verify("{t}:epoch").await.unwrap();
        nodes.push(Arc::new(SharedLimits::new(
            l,
            "t",
            3,
            &limits,
            std::iter::empty(),
        )));
    }
    let client: Arc<str> = Arc::from("portal");
    let allowed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for n in &nodes {
        for _ in 0..4 {
            let (n, client, allowed) = (n.clone(), client.clone(), allowed.clone());
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < Duration::from_millis(1500) {
                    if n.check(&client, None).await.is_ok() {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let allowed = allowed.load(Ordering::Relaxed) as f64;
    let bound = 300.0 + 1000.0 * elapsed + 3.0 * 15.0;
    eprintln!(
        "figure: three limiters admitted {allowed} in {elapsed:.2} s; GCRA ideal {:.0}, bound {bound:.0}",
        300.0 + 1000.0 * elapsed
    );
    assert!(allowed <= bound, "{allowed} admitted > bound {bound:.0}");
    assert!(allowed >= 300.0, "at least the burst: {allowed}");
}

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

// Two nodes from one project folder (as the demo script runs them), each with
// its own data dir: each keeps its own chain, records name their node, and
// `audit verify` / `audit query` take both data dirs (query merged by time).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_node_keeps_its_own_audit_chain_and_the_cli_reads_them_together() {
    let Some(redis) = RedisServer::start("each_node_keeps_its_own_audit_chain") else {
        return;
    };
    let mut a = node(&redis.url(), "a", "").await;
    let b = onewindow::app::Running::start(
        &a.config(),
        onewindow::loader::Overrides {
            data_dir: Some(a.root().join("data-b")),
            node: Some("b".into()),
            no_demo: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let token = a.token("portal-binhai", &[], None);
    for i in 0..6 {
        if i % 2 == 0 {
            assert_eq!(read(&a, FULL).await.status, 200);
        } else {
            let req = format!(
                "GET /v1/datasets/business-licence/{FULL} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\nX-Purpose: service-handling\r\nConnection: close\r\n\r\n"
            );
            let (status, body) = common::raw_status(b.plain_addr.unwrap(), req.into_bytes()).await;
            assert_eq!(status, Some(200), "{body}");
        }
    }
    b.stop().await;
    a.stop().await;

    let cfg = a.config();
    let cfg = cfg.to_str().unwrap();
    let (da, db) = (a.root().join("data"), a.root().join("data-b"));
    let (da, db) = (da.to_str().unwrap(), db.to_str().unwrap());
    let (code, out, err) = cli(&[
        "audit",
        "verify",
        "--config",
        cfg,
        "--data-dir",
        da,
        "--data-dir",
        db,
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("intact").count(), 2, "{out}");

    let (code, out, err) = cli(&[
        "audit",
        "query",
        "--config",
        cfg,
        "--data-dir",
        da,
        "--data-dir",
        db,
        "--action",
        "dataset.read",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 6, "{out}");
    let nodes: Vec<&str> = recs.iter().map(|r| r["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.iter().filter(|n| **n == "a").count(), 3, "{nodes:?}");
    assert_eq!(nodes.iter().filter(|n| **n == "b").count(), 3, "{nodes:?}");
    let times: Vec<i64> = recs
        .iter()
        .map(|r| onewindow::audit::parse_rfc3339_micros(r["time"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "merged by time: {times:?}"
    );
    // Checkpoints are signed by each node's writer and name it too.
    let raw = std::fs::read_dir(a.root().join("data-b/audit"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect::<String>();
    assert!(raw.contains(r#""action":"checkpoint""#) && raw.contains(r#""node":"b""#));
}

/// A cluster node with a second portal that may run open-restaurant.
async fn case_node(redis_url: &str, name: &str) -> World {
    World::builder()
        .gateway_replace("fsync = \"always\"", "fsync = \"never\"")
        .gateway_extra(&format!(
            "\n[cluster]\nredis_url = \"{redis_url}\"\nnode = \"{name}\"\nnodes = 2\n"
        ))
        .clients_extra(
            r#"
[clients.portal-hexi]
description = "Another district's portal with the same grants"
purposes = ["service-handling"]
scenarios = ["open-restaurant"]
[clients.portal-hexi.datasets.business-licence]
fields = ["*"]
[clients.portal-hexi.datasets.food-business-permit]
fields = ["*"]
[clients.portal-hexi.datasets.fire-safety-inspection]
fields = ["*"]
[clients.portal-hexi.datasets.health-certificate]
fields = ["*"]
"#,
        )
        .start()
        .await
}

async fn accept_case(w: &World, token: &str, case: &str, uscc: &str) -> common::Answer {
    w.send(
        Method::POST,
        "/v1/scenarios/open-restaurant",
        Some(token),
        &[("x-purpose", "service-handling"), ("x-case-id", case)],
        format!(r#"{{"subjects": {{"uscc": "{uscc}"}}}}"#),
    )
    .await
}

// Cases live in Redis in cluster mode: accepted through node A, read and
// refreshed through node B, the refresh seen through A; another client sees
// nothing; with Redis gone, case requests are refused (503), never kept on
// one node only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_case_accepted_on_a_is_read_and_refreshed_on_b() {
    let Some(mut redis) = RedisServer::start("a_case_accepted_on_a_is_read_and_refreshed_on_b")
    else {
        return;
    };
    let a = case_node(&redis.url(), "a").await;
    let b = case_node(&redis.url(), "b").await;
    wait_ok(&a).await;
    wait_ok(&b).await;
    let case = "BH-2026-CLUSTER-7";
    let ta = a.token("portal-binhai", &[], None);
    let tb = b.token("portal-binhai", &[], None);
    let acc = accept_case(&a, &ta, case, NO_FIRE).await;
    assert_eq!(acc.status, 200, "{}", acc.text());
    assert_eq!(
        acc.json()["case"]["outstanding"],
        serde_json::json!(["fire-safety-inspection"])
    );

    let path = format!("/v1/cases/{case}");
    let on_b = b.send(Method::GET, &path, Some(&tb), &[], "").await;
    assert_eq!(on_b.status, 200, "{}", on_b.text());
    let j = on_b.json();
    assert_eq!(j["scenario"], "open-restaurant");
    assert_eq!(j["refreshes"], 0, "{j}");
    // The same id is a new case for another client, on any node.
    let other = b.token("portal-hexi", &[], None);
    let hidden = b.send(Method::GET, &path, Some(&other), &[], "").await;
    assert_eq!(hidden.status, 404, "{}", hidden.text());

    let refreshed = b
        .send(
            Method::POST,
            &format!("{path}/refresh"),
            Some(&tb),
            &[("x-purpose", "service-handling")],
            "",
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    let on_a = a.send(Method::GET, &path, Some(&ta), &[], "").await.json();
    assert_eq!(
        on_a["refreshes"], 1,
        "the refresh on B is seen on A: {on_a}"
    );
    // The same id through B with other subjects is A's case, so refused.
    let other_subject = accept_case(&b, &tb, case, FULL).await;
    assert_eq!(other_subject.status, 409, "{}", other_subject.text());
    assert!(other_subject.text().contains("case-conflict"));
    // Both nodes count the one open case.
    for w in [&a, &b] {
        assert_eq!(metric(&metrics(w).await, "onewindow_cases_open"), 1.0);
    }
    // Nothing went to a node-local store.
    for w in [&a, &b] {
        assert!(!w.root().join("data/cases.sqlite").exists());
    }

    redis.kill();
    let gone = b.send(Method::GET, &path, Some(&tb), &[], "").await;
    assert_eq!(gone.status, 503, "{}", gone.text());
    assert!(
        gone.text().contains("case-store-unavailable"),
        "{}",
        gone.text()
    );
    let refused = accept_case(&a, &ta, "BH-2026-CLUSTER-8", NO_FIRE).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    redis.restart();
    wait_ok(&a).await;
    // Redis restarted empty (no persistence in tests): the case store says
    // so plainly rather than inventing one.
    let after = a.send(Method::GET, &path, Some(&ta), &[], "").await;
    assert_eq!(after.status, 404, "{}", after.text());
}

// The Redis store's compare-and-swap and keys, against real Redis: version 1
// only once, version n only over n-1, ids with `:` never collide, counts of
// open and overdue cases follow completion.
#[tokio::test]
async fn redis_case_store_compare_and_swap_keys_and_counts() {
    use onewindow::case::{CaseError, CaseStore, RedisCaseStore};
    let Some(redis) = RedisServer::start("redis_case_store_compare_and_swap_keys_and_counts")
    else {
        return;
    };
    let store = RedisCaseStore::new(link(&redis), "ow-test");
    let mut c: onewindow::case::Case = serde_json::from_value(serde_json::json!({
        "client": "a:b", "case_id": "c", "scenario": "open-restaurant",
        "subjects": {"uscc": NO_FIRE}, "accepted_at": 100, "supply_by": 1_000,
        "updated_at": 100, "parts": {"fire": {"status": "missing", "http_status": 404,
        "supply_later": true, "checked_at": 100}}, "refreshes": 0, "version": 1
    }))
    .unwrap();
    assert!(!c.complete());
    store.save(&c).await.unwrap();
    assert!(matches!(store.save(&c).await, Err(CaseError::Conflict(_))));
    // Another client whose id and case id join to the same text.
    let mut twin = c.clone();
    twin.client = "a".into();
    twin.case_id = "b:c".into();
    store.save(&twin).await.unwrap();
    assert_ne!(store.case_key("a:b", "c"), store.case_key("a", "b:c"));
    assert_eq!(store.load("a:b", "c").await.unwrap().unwrap(), c);
    assert_eq!(store.load("a", "b:c").await.unwrap().unwrap(), twin);
    assert_eq!(store.load("a:b", "nope").await.unwrap(), None);

    let counts = store.counts(500).await.unwrap();
    assert_eq!((counts.open, counts.overdue), (2, 0));
    let counts = store.counts(1_001).await.unwrap();
    assert_eq!((counts.open, counts.overdue), (2, 2));

    // Version 3 over version 1 is refused; 2 over 1 is written.
    c.version = 3;
    assert!(matches!(store.save(&c).await, Err(CaseError::Conflict(_))));
    c.version = 2;
    c.refreshes = 1;
    let part = c.parts.get_mut("fire").unwrap();
    part.status = onewindow::scenario::PartStatus::Ok;
    part.http_status = 200;
    c.completed_at = Some(200);
    assert!(c.complete());
    store.save(&c).await.unwrap();
    assert_eq!(store.load("a:b", "c").await.unwrap().unwrap().refreshes, 1);
    // A stale writer (read version 1, bumped to 2) loses.
    let mut stale = c.clone();
    stale.refreshes = 9;
    assert!(matches!(
        store.save(&stale).await,
        Err(CaseError::Conflict(_))
    ));
    // The completed case left the open index.
    let counts = store.counts(1_001).await.unwrap();
    assert_eq!((counts.open, counts.overdue), (1, 1));
}

fn link_to(url: &str) -> Arc<Link> {
    let raw = RawCluster {
        redis_url: Some(url.into()),
        timeout_ms: Some(3000),
        ..RawCluster::default()
    };
    let settings = ClusterSettings::from_raw(&raw, None, None, Path::new("gateway.toml"))
        .unwrap()
        .unwrap();
    Arc::new(Link::new(&settings).unwrap())
}

fn open_case(client: &str, id: &str) -> onewindow::case::Case {
    serde_json::from_value(serde_json::json!({
        "client": client, "case_id": id, "scenario": "open-restaurant",
        "subjects": {"uscc": NO_FIRE}, "accepted_at": 100, "supply_by": 1_000,
        "updated_at": 100, "parts": {"fire": {"status": "missing", "http_status": 404,
        "supply_later": true, "checked_at": 100}}, "refreshes": 0, "version": 1
    }))
    .unwrap()
}

// `redis+sentinel://`: the link asks a real Sentinel for the master and works
// on it (the epoch and a case land on the master itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_url_reaches_the_master() {
    use common::redis::RedisProcs;
    use onewindow::case::{CaseStore, RedisCaseStore};
    let Some(master) = RedisServer::start("sentinel_url_reaches_the_master") else {
        return;
    };
    let s = RedisProcs::sentinel("sentinel_url_reaches_the_master", master.port, "ow-master");
    let via = link_to(&format!(
        "redis+sentinel://127.0.0.1:{}/ow-master",
        s.ports[0]
    ));
    let epoch = via.verify("{t}:epoch").await.unwrap();
    let direct = link(&master);
    assert_eq!(direct.verify("{t}:epoch").await.unwrap(), epoch);
    let c = open_case("portal", "S-1");
    RedisCaseStore::new(via, "ow").save(&c).await.unwrap();
    let seen = RedisCaseStore::new(direct, "ow")
        .load("portal", "S-1")
        .await;
    assert_eq!(seen.unwrap(), Some(c));
}

// `redis+cluster://` seeds: a real three-master Redis Cluster; every key
// (limiter keys spread over all slots, the hash-tagged bus and case keys)
// is routed, and the epoch stays stable across calls (no false "Redis lost
// its data" from asking different masters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_seed_list_routes_every_key() {
    use common::redis::RedisProcs;
    use onewindow::case::{CaseStore, RedisCaseStore};
    let Some(c) = RedisProcs::cluster("redis_cluster_seed_list_routes_every_key") else {
        return;
    };
    let l = link_to(&format!(
        "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
        c.ports[0], c.ports[1]
    ));
    let epoch = l.verify("{t}:epoch").await.unwrap();
    for _ in 0..5 {
        assert_eq!(l.verify("{t}:epoch").await.unwrap(), epoch);
    }
    let script = lease_script();
    for i in 0..30 {
        let g = lease(
            &l,
            &script,
            &format!("t:rl:c:client-{i}"),
            Duration::from_millis(100),
            10,
            4,
            None,
        )
        .await
        .unwrap();
        assert_eq!(g.granted, 4, "key {i}");
    }
    let store = RedisCaseStore::new(l.clone(), "ow");
    let case = open_case("portal", "K-1");
    store.save(&case).await.unwrap();
    assert_eq!(store.load("portal", "K-1").await.unwrap(), Some(case));
    assert_eq!(store.counts(0).await.unwrap().open, 1);
}

// Whole nodes over a Redis Cluster: the bus (stream, acks, heartbeats) works
// there too; an invalidation through A is confirmed by both nodes and B
// never serves the revoked record from its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_over_a_redis_cluster_share_invalidations() {
    use common::redis::RedisProcs;
    let Some(c) = RedisProcs::cluster("nodes_over_a_redis_cluster_share_invalidations") else {
        return;
    };
    let url = format!(
        "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
        c.ports[0], c.ports[2]
    );
    let a = node(&url, "a", "timeout_ms = 3000").await;
    let b = node(&url, "b", "timeout_ms = 3000").await;
    wait_ok(&a).await;
    wait_ok(&b).await;
    eventually("two live nodes", Duration::from_secs(10), || async {
        readyz(&a).await["cluster"]["live_nodes"] == 2
    })
    .await;
    read(&b, REVOKED).await;
    assert_eq!(read(&b, REVOKED).await.header("x-cache"), Some("hit"));
    let inv = a
        .send(
            Method::POST,
            "/admin/cache/invalidate",
            Some(&admin(&a)),
            &[],
            format!(r#"{{"dataset":"business-licence","subject":"{REVOKED}"}}"#),
        )
        .await;
    assert_eq!(inv.status, 200, "{}", inv.text());
    assert_eq!(
        inv.json()["cluster"]["nodes_confirmed"],
        2,
        "{}",
        inv.text()
    );
    assert_ne!(read(&b, REVOKED).await.header("x-cache"), Some("hit"));
    // Still synced: no false "Redis lost its data" from the cluster's masters.
    let m = metrics(&a).await;
    assert_eq!(metric(&m, "onewindow_cluster_degraded"), 0.0);
    assert_eq!(metric(&m, "onewindow_cluster_cache_drops_total"), 1.0);
}
