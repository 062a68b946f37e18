//! Connection limits of the listener: idle keep-alive timeout and the
//! connection cap.

// Test helpers outside #[test] fns may panic: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::World;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes, up to `deadline`; true when it closed.
async fn closed_within(s: &mut TcpStream, deadline: Duration) -> bool {
    tokio::time::timeout(deadline, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// An idle keep-alive connection is closed after `idle_timeout_secs`
/// (while the header read timeout is much longer, so it is the idle timer).
#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let w = World::builder()
        .gateway_replace("idle_timeout_secs = 60", "idle_timeout_secs = 1")
        .gateway_replace(
            "header_read_timeout_ms = 10000",
            "header_read_timeout_ms = 60000",
        )
        .start()
        .await;
    let mut s = TcpStream::connect(w.admin()).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await,
        "idle connection still open"
    );
}

/// At the connection cap the listener stops accepting: a second client is
/// served only once the first connection ends.
#[tokio::test]
async fn connection_cap_holds_further_clients_back() {
    let w = World::builder()
        .gateway_replace("max_connections = 10000", "max_connections = 1")
        .start()
        .await;
    let mut first = TcpStream::connect(w.admin()).await.unwrap();
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(first.read(&mut buf).await.unwrap() > 0);
    // The first connection is kept alive; the second one waits in the backlog.
    let mut second = TcpStream::connect(w.admin()).await.unwrap();
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(early.is_err(), "second client was served past the cap");
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}
