//! Issue "Gateway core": hostile inputs at the edge of the gateway (request
//! smuggling, oversized heads and bodies, slowloris, path tricks, broken
//! departments, bad configuration, TLS, shutdown, request ids, hop-by-hop
//! headers).

// Tests may unwrap (clippy.toml only covers #[test] fns, not helpers);
// `useless_format` is pre-existing in tests/common/mod.rs (CloseMidBody).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::useless_format)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{
    FULL, Fault, MockDept, World, assert_problem, get_on, market_supervision_mock, raw_exchange,
    status_of,
};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The breaker of market-supervision never opens in these tests (faults are
/// injected on purpose and counted per call).
const NO_BREAKER: &str =
    "total_timeout_ms = 5000\nbreaker = { consecutive_failures = 1000, min_calls = 1000 }";

/// A raw request head for the data plane, with a token and a purpose;
/// `extra` holds further header lines (each ending in CRLF).
fn head(method: &str, path: &str, token: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n\
         X-Purpose: service-handling\r\n{extra}\r\n"
    )
}

/// Writes `bytes` (ignoring write errors: the peer may close early) while
/// reading until the peer closes or `wait` passes. Returns what was read and
/// whether the peer closed.
async fn exchange_tolerant(addr: SocketAddr, bytes: Vec<u8>, wait: Duration) -> (String, bool) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&bytes).await;
        w
    });
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or(false);
    writer.abort();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Asserts the raw answer is `status`, or that the connection was closed
/// without an answer.
fn status_or_closed(what: &str, resp: &str, closed: bool, status: u16) {
    match status_of(resp) {
        Some(s) => assert_eq!(s, status, "{what}: {resp}"),
        None => assert!(closed, "{what}: neither answered nor closed: {resp:?}"),
    }
}

// Hostile input: request smuggling with Content-Length and Transfer-Encoding
// together (both orders); the pipelined second request must never be served.
#[tokio::test]
async fn smuggling_cl_and_te_together_never_reaches_the_department_twice() {
    let w = World::builder()
        .mock("market-supervision", market_supervision_mock().await)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let ms = &w.mocks["market-supervision"];
    for te_first in [false, true] {
        let before = ms.calls();
        let smuggled = head("GET", "/v1/proxy/market-supervision/SMUGGLED", &t, "");
        let body = format!("0\r\n\r\n{smuggled}");
        let framing = if te_first {
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                body.len()
            )
        } else {
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                body.len()
            )
        };
        let req = head(
            "POST",
            "/v1/proxy/market-supervision/filings",
            &t,
            &format!("Content-Type: text/plain\r\n{framing}"),
        ) + &body;
        let (resp, closed) = raw_exchange(w.plain(), req.as_bytes(), Duration::from_secs(10)).await;
        assert!(closed, "te_first={te_first}: connection kept open: {resp}");
        assert_eq!(
            resp.matches("HTTP/1.1 ").count(),
            1,
            "te_first={te_first}: exactly one answer: {resp}"
        );
        let seen = ms.seen.lock().unwrap()[before..].to_vec();
        assert!(seen.len() <= 1, "te_first={te_first}: {seen:?}");
        for s in &seen {
            assert!(!s.target.contains("SMUGGLED"), "{s:?}");
            assert!(
                !String::from_utf8_lossy(&s.body).contains("SMUGGLED"),
                "smuggled bytes forwarded as a body: {s:?}"
            );
            assert!(s.header("transfer-encoding").is_none(), "{s:?}");
        }
    }
}

// Hostile input: ambiguous framing and malformed heads (two Content-Lengths,
// `Transfer-Encoding: xchunked`, obs-fold, space before colon, bare LF in a
// chunk size line): 400 or closed, and nothing forwarded.
#[tokio::test]
async fn malformed_framing_is_refused_and_never_forwarded() {
    let w = World::builder()
        .mock("market-supervision", market_supervision_mock().await)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let ms = &w.mocks["market-supervision"];
    let path = "/v1/proxy/market-supervision/filings";
    let cases: Vec<(&str, String)> = vec![
        (
            "two content-lengths",
            head(
                "POST",
                path,
                &t,
                "Content-Length: 5\r\nContent-Length: 6\r\n",
            ) + "hello!",
        ),
        (
            "xchunked",
            head("POST", path, &t, "Transfer-Encoding: xchunked\r\n") + "5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            head(
                "POST",
                path,
                &t,
                "X-Folded: first\r\n second\r\nContent-Length: 5\r\n",
            ) + "hello",
        ),
        (
            "space before colon",
            head("POST", path, &t, "Content-Length : 5\r\n") + "hello",
        ),
        (
            "bare LF in chunk size",
            head("POST", path, &t, "Transfer-Encoding: chunked\r\n") + "5\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (what, req) in cases {
        let (resp, closed) = raw_exchange(w.plain(), req.as_bytes(), Duration::from_secs(10)).await;
        status_or_closed(what, &resp, closed, 400);
        assert_eq!(ms.calls(), 0, "{what}: forwarded to the department");
    }
    // The same route with honest framing does reach the department.
    let req = head(
        "POST",
        path,
        &t,
        "Content-Length: 5\r\nConnection: close\r\n",
    ) + "hello";
    let (resp, _) = raw_exchange(w.plain(), req.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    assert_eq!(ms.calls(), 1);
    assert_eq!(ms.last().unwrap().body, b"hello");
}

// Hostile input: a 70 KB header (431) and a 20 KB URI (414).
#[tokio::test]
async fn oversized_head_and_uri_are_refused() {
    let w = World::builder()
        .mock("market-supervision", market_supervision_mock().await)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let big = "a".repeat(70 * 1024);
    let req = head(
        "GET",
        &format!("/v1/datasets/business-licence/{FULL}"),
        &t,
        &format!("X-Big: {big}\r\n"),
    );
    let (resp, _) = exchange_tolerant(w.plain(), req.into_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), Some(431), "{resp}");

    let long = format!("/v1/datasets/business-licence/{}", "9".repeat(20 * 1024));
    let a = w.read(&long, &t).await;
    assert_problem(&a, 414);
    assert_eq!(w.mocks["market-supervision"].calls(), 0);
}

// Hostile input: a 20 MB body announced by Content-Length: 413, not forwarded.
#[tokio::test]
async fn huge_body_with_content_length_is_413() {
    let w = World::builder()
        .mock("market-supervision", market_supervision_mock().await)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let mut req = head(
        "POST",
        "/v1/proxy/market-supervision/filings",
        &t,
        &format!("Content-Length: {}\r\n", 20 * 1024 * 1024),
    )
    .into_bytes();
    // Only the start of the body: the answer must not wait for the rest.
    req.extend_from_slice(&[b'x'; 1024]);
    let (resp, _) = exchange_tolerant(w.plain(), req, Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), Some(413), "{resp}");
    assert!(resp.contains("application/problem+json"), "{resp}");
    assert_eq!(w.mocks["market-supervision"].calls(), 0);
}

// Hostile input: a 20 MB chunked body: 413 or closed, never forwarded.
#[tokio::test]
async fn huge_chunked_body_is_413_or_closed() {
    let w = World::builder()
        .mock("market-supervision", market_supervision_mock().await)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let s = TcpStream::connect(w.plain()).await.unwrap();
    let (mut r, mut wr) = s.into_split();
    let head = head(
        "POST",
        "/v1/proxy/market-supervision/filings",
        &t,
        "Transfer-Encoding: chunked\r\n",
    );
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = [b'x'; 64 * 1024];
        for _ in 0..(20 * 16) {
            let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
            piece.extend_from_slice(&chunk);
            piece.extend_from_slice(b"\r\n");
            if wr.write_all(&piece).await.is_err() {
                return;
            }
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
    });
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    // An answer that was read whole is enough.
                    if find(&out, b"\r\n\r\n").is_some() && out.ends_with(b"}") {
                        return false;
                    }
                }
            }
        }
    })
    .await
    .unwrap_or(false);
    writer.abort();
    let resp = String::from_utf8_lossy(&out).into_owned();
    status_or_closed("chunked 20 MB", &resp, closed, 413);
    assert_eq!(w.mocks["market-supervision"].calls(), 0);
}

/// The demo guardian id (household registration subject).
const GUARDIAN: &str = "120116199203154527";

/// A public-security mock answering household registrations in its dialect.
async fn public_security_mock() -> MockDept {
    MockDept::start(|_| {
        let body = serde_json::json!({"data": {
            "id_no": GUARDIAN, "household_no": "120116-2019-004512",
            "head_name": "王芳", "registered_address": "滨海新区新港路 1 号"}});
        (200, "application/json".into(), body.to_string())
    })
    .await
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

// Hostile input: slowloris, a request head that never ends; the header read
// timeout closes the connection.
#[tokio::test]
async fn never_ending_header_is_closed_by_the_header_read_timeout() {
    let w = World::builder()
        .gateway_replace(
            "header_read_timeout_ms = 10000",
            "header_read_timeout_ms = 300",
        )
        .start()
        .await;
    let mut s = TcpStream::connect(w.plain()).await.unwrap();
    s.write_all(b"GET /v1/catalog HTTP/1.1\r\nHost: gateway\r\n")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = false;
    let mut out = Vec::new();
    // Trickle one header line every 50 ms: activity must not extend the timeout.
    while Instant::now() < deadline {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    closed = true;
                    break;
                }
            }
        }
    }
    assert!(closed, "slow head kept the connection open");
    let resp = String::from_utf8_lossy(&out);
    assert!(
        matches!(status_of(&resp), None | Some(408)),
        "a slow head is never served: {resp}"
    );
}

// Hostile input: path tricks (`/../`, `%2e%2e`, `..%2f`, `%252e`, `//`) in a
// proxy path never reach another department than the one authorised.
#[tokio::test]
async fn path_tricks_never_reach_another_department() {
    let w = World::builder()
        .mock("market-supervision", market_supervision_mock().await)
        .mock(
            "public-security",
            MockDept::json(serde_json::json!({"ok": true})).await,
        )
        .mock(
            "health-commission",
            MockDept::json(serde_json::json!({"ok": true})).await,
        )
        .start()
        .await;
    let ro = w.token("portal-readonly", &[], None);
    let all = w.token("portal-binhai", &[], None);
    let calls = |w: &World| {
        ["market-supervision", "public-security", "health-commission"].map(|d| w.mocks[d].calls())
    };
    // (token, path, status, department reached (if any), target it saw)
    let cases: Vec<(&str, String, u16, Option<&str>, &str)> = vec![
        (
            &ro,
            "/v1/proxy/market-supervision/..%2fhealth-commission/x".into(),
            400,
            None,
            "",
        ),
        (
            &ro,
            "/v1/proxy/market-supervision/licences/..%2F..%2Fhealth-commission/x".into(),
            400,
            None,
            "",
        ),
        (
            &ro,
            "/v1/proxy/market-supervision/%252e%252e/health-commission/x".into(),
            400,
            None,
            "",
        ),
        (
            &ro,
            "/v1/proxy/market-supervision/%5c../health-commission/x".into(),
            400,
            None,
            "",
        ),
        (
            &ro,
            "/v1/proxy/market-supervision/licences/../../../../../etc/passwd".into(),
            400,
            None,
            "",
        ),
        // Resolved before authorisation: routed and authorised as public-security.
        (
            &ro,
            "/v1/proxy/market-supervision/../public-security/x".into(),
            403,
            None,
            "",
        ),
        (
            &ro,
            "/v1/proxy/market-supervision/%2e%2e/public-security/x".into(),
            403,
            None,
            "",
        ),
        (
            &ro,
            "/v1/proxy/market-supervision/%2E%2E/public-security/x".into(),
            403,
            None,
            "",
        ),
        (&ro, "/v1/proxy//public-security/x".into(), 403, None, ""),
        // The prefix grant is checked on the resolved path.
        (
            &ro,
            format!("/v1/proxy/market-supervision/licences/../api/v2/licences/{FULL}"),
            403,
            None,
            "",
        ),
        // What is forwarded is the resolved path, to the resolved department.
        (
            &all,
            "/v1/proxy/market-supervision/../public-security/x".into(),
            200,
            Some("public-security"),
            "/x",
        ),
        (
            &all,
            "/v1/proxy/market-supervision/%2e%2e/public-security/./y".into(),
            200,
            Some("public-security"),
            "/y",
        ),
        (
            &ro,
            format!("/v1/proxy/market-supervision//licences//{FULL}"),
            200,
            Some("market-supervision"),
            "/licences/91120116MA07Q8XJ2K",
        ),
    ];
    for (token, path, status, reached, target) in cases {
        let before = calls(&w);
        let a = w
            .send(
                Method::GET,
                &path,
                Some(token),
                &[("x-purpose", "service-handling")],
                Bytes::new(),
            )
            .await;
        assert_eq!(a.status, status, "{path}: {}", a.text());
        if status != 200 {
            assert_eq!(
                a.header("content-type"),
                Some("application/problem+json"),
                "{path}"
            );
        }
        let after = calls(&w);
        for (i, d) in ["market-supervision", "public-security", "health-commission"]
            .iter()
            .enumerate()
        {
            let expected = before[i] + usize::from(reached == Some(*d));
            assert_eq!(after[i], expected, "{path}: calls of {d}");
        }
        if let Some(d) = reached {
            assert_eq!(w.mocks[d].last().unwrap().target, target, "{path}");
        }
    }
}

// Hostile input: a department that answers garbage, resets, closes mid-body or
// sends a malformed status line: 502 problem+json, never a partial 200, for a
// dataset read and a proxy call alike.
#[tokio::test]
async fn broken_department_answers_are_502_problems() {
    let w = World::builder()
        .mock("market-supervision", market_supervision_mock().await)
        .gateway_replace("total_timeout_ms = 5000", NO_BREAKER)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let ms = &w.mocks["market-supervision"];
    let faults = [
        ("garbage", Fault::Raw(b"garbage\r\n\r\n".to_vec())),
        ("reset", Fault::Reset),
        ("close mid-body", Fault::CloseMidBody),
        (
            "malformed status line",
            Fault::Raw(b"HTTP/1.1 2O0 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec()),
        ),
        (
            "no status line",
            Fault::Raw(b"{\"code\":\"0000\",\"data\":{}}".to_vec()),
        ),
    ];
    for (what, fault) in faults {
        ms.set_fault(fault);
        for path in [
            format!("/v1/datasets/business-licence/{FULL}"),
            format!("/v1/proxy/market-supervision/licences/{FULL}"),
        ] {
            let before = ms.calls();
            let a = w.read(&path, &t).await;
            assert_problem(&a, 502);
            assert!(ms.calls() > before, "{what} {path}: department not called");
            assert!(a.header("x-request-id").is_some());
        }
    }
    // The same reads succeed once the department behaves (the mock speaks
    // the department's dialect; the 502s came from the faults).
    ms.set_fault(Fault::None);
    let a = w
        .read(&format!("/v1/datasets/business-licence/{FULL}"), &t)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["record"]["status"], "active");
}

/// Runs `onewindow check` on `config`.
fn check(config: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_onewindow"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run onewindow check")
}

fn edit(path: &std::path::Path, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, f(text)).unwrap();
}

// Hostile input: configuration with an unknown key, a bad adapter URL, a
// dataset owned by an unknown department: `onewindow check` fails and names
// the file and the field.
#[tokio::test]
async fn check_names_file_and_field_of_bad_config() {
    // The untouched project passes.
    let w = World::builder().prepare().await;
    let out = check(&w.config());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    type Edit = fn(&std::path::Path);
    let cases: [(&str, Edit, &str, &str); 3] = [
        (
            "unknown key",
            |root| {
                edit(&root.join("config/gateway.toml"), |t| {
                    t.replace(
                        "max_body_bytes = 1048576",
                        "max_body_bytes = 1048576\nmax_bodyy_bytes = 5",
                    )
                })
            },
            "gateway.toml",
            "max_bodyy_bytes",
        ),
        (
            "bad adapter URL",
            |root| {
                let p = root.join("adapters/market-supervision.toml");
                let text = std::fs::read_to_string(&p).unwrap();
                std::fs::write(&p, common::rewrite_base_url(&text, "htp:/not a url")).unwrap();
            },
            "market-supervision.toml",
            "base_url",
        ),
        (
            "dataset of an unknown department",
            |root| {
                edit(&root.join("config/datasets.toml"), |t| {
                    t + "\n[datasets.tax-record]\ntitle = \"Tax record\"\n\
                         department = \"tax-bureau\"\nsubject_kind = \"uscc\"\n\
                         subject_max_len = 18\nshareable = false\nttl_secs = 60\n\
                         [datasets.tax-record.fields]\n\
                         uscc = { type = \"string\", required = true }\n"
                })
            },
            "datasets.toml",
            "datasets.tax-record.department",
        ),
    ];
    for (what, change, file, field) in cases {
        let w = World::builder().prepare().await;
        change(w.root());
        let out = check(&w.config());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: check passed");
        assert!(stderr.contains(file), "{what}: file not named: {stderr}");
        assert!(stderr.contains(field), "{what}: field not named: {stderr}");
    }
}

/// A TLS client trusting the world's development CA and offering one ALPN protocol.
async fn tls_connect(
    w: &World,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let ca = std::fs::read(w.root().join("certs/dev-ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = common::tls_connect(w.gw().tls_addr.unwrap(), roots, alpn).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

// Hostile input (robustness): the TLS listener serves HTTP/1.1 and HTTP/2
// with the development CA.
#[tokio::test]
async fn tls_listener_serves_http1_and_http2() {
    let w = World::demo().await;
    let t = w.token("portal-binhai", &[], None);
    let path = format!("/v1/datasets/business-licence/{FULL}");

    let tls = tls_connect(&w, b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(&path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {t}"))
        .header("x-purpose", "service-handling")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["record"]["uscc"], FULL);

    let tls = tls_connect(&w, b"h2").await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("https://localhost{path}"))
        .header("authorization", format!("Bearer {t}"))
        .header("x-purpose", "service-handling")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["record"]["uscc"], FULL);
}

// Hostile input: shutdown while a request is in flight to a slow department:
// the request completes with 200, new connections are refused.
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_refuses_new_connections() {
    let ms = market_supervision_mock().await;
    ms.set_delay(Duration::from_millis(1500));
    let mut w = World::builder()
        .mock("market-supervision", ms)
        .gateway_replace("drain_timeout_secs = 2", "drain_timeout_secs = 10")
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let addr = w.plain();
    let path = format!("/v1/proxy/market-supervision/licences/{FULL}");
    let in_flight = tokio::spawn(async move { get_on(addr, &path, &t).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.mocks["market-supervision"].calls() == 0 {
        assert!(
            Instant::now() < deadline,
            "request never reached the department"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gw = w.gw.take().unwrap();
    let stopping = tokio::spawn(gw.stop());
    // While draining, new connections are refused (not queued until the end).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr).await {
            Err(_) => break,
            Ok(_) => {
                assert!(Instant::now() < deadline, "still accepting after stop");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert!(
        !in_flight.is_finished(),
        "new connections were accepted until the drain ended"
    );
    let a = in_flight.await.unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["data"]["tyshxydm"], FULL);
    stopping.await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

// Hostile input: X-Request-Id, well-formed (echoed and forwarded) and
// malformed (replaced by a generated one).
#[tokio::test]
async fn request_id_is_echoed_when_well_formed_and_replaced_otherwise() {
    let w = World::builder()
        .mock("public-security", public_security_mock().await)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let ms = &w.mocks["public-security"];
    let long = "a".repeat(200);
    let ok = "case-2026.04_17-abc";
    for path in [
        format!("/v1/datasets/household-registration/{GUARDIAN}"),
        "/v1/proxy/public-security/gaapi/v1/households".to_string(),
    ] {
        let a = w
            .send(
                Method::GET,
                &path,
                Some(&t),
                &[("x-purpose", "service-handling"), ("x-request-id", ok)],
                Bytes::new(),
            )
            .await;
        assert_eq!(a.header("x-request-id"), Some(ok), "{path}");
        assert_eq!(
            ms.last().unwrap().header("x-request-id"),
            Some(ok),
            "{path}"
        );
        for bad in [
            "has spaces in it",
            "a%0d%0aSet-Cookie:%20x=1",
            "semi;colon",
            long.as_str(),
        ] {
            let before = ms.calls();
            let a = w
                .send(
                    Method::GET,
                    &path,
                    Some(&t),
                    &[("x-purpose", "service-handling"), ("x-request-id", bad)],
                    Bytes::new(),
                )
                .await;
            let id = a.header("x-request-id").expect("request id").to_string();
            assert_ne!(id, bad, "{path}");
            assert!(
                !id.is_empty()
                    && id.len() <= 64
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "{id}"
            );
            assert_eq!(a.status, 200, "{path}: {}", a.text());
            assert_eq!(ms.calls(), before + 1, "{path}");
            assert_eq!(ms.last().unwrap().header("x-request-id"), Some(id.as_str()));
        }
    }
    // Household registrations are not shareable (never cached): every read
    // above called the department, so every forwarded id was checked.
    assert_eq!(ms.calls(), 10);
}

// Hostile input: hop-by-hop headers and the caller's Authorization are not
// forwarded; X-Forwarded-For, X-Forwarded-Proto and Via are (and a spoofed
// X-Forwarded-For is replaced).
#[tokio::test]
async fn hop_by_hop_headers_and_credentials_are_not_forwarded() {
    let w = World::builder()
        .mock("market-supervision", market_supervision_mock().await)
        .start()
        .await;
    let t = w.token("portal-binhai", &[], None);
    let req = head(
        "POST",
        "/v1/proxy/market-supervision/filings",
        &t,
        "Connection: close, X-Secret-Hop\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
         Upgrade: websocket\r\nX-Secret-Hop: 1\r\nProxy-Authorization: Basic eDp5\r\n\
         Cookie: session=1\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
         Accept-Language: zh-CN\r\nContent-Length: 2\r\n",
    ) + "{}";
    let (resp, _) = raw_exchange(w.plain(), req.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    let seen = w.mocks["market-supervision"].last().expect("forwarded");
    for h in [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "x-secret-hop",
        "proxy-authorization",
        "authorization",
        "cookie",
    ] {
        assert!(
            seen.header(h).is_none(),
            "`{h}` forwarded: {:?}",
            seen.headers
        );
    }
    assert!(
        !seen.headers.iter().any(|(_, v)| v.contains(&t)),
        "token forwarded"
    );
    assert_eq!(
        seen.header("accept-language"),
        Some("zh-CN"),
        "an allow-listed end-to-end header is kept"
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert!(
        seen.header("via").is_some_and(|v| v.contains("onewindow")),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.body, b"{}");
}
