//! What lets an idle HTTP/1.1 keep-alive connection be "parked": hyper's
//! per-connection state (an 8 KB read buffer, an 8 KB header write buffer,
//! the dispatcher) dropped between requests, the socket kept.
//!
//! [`ParkIo`] sits between hyper and the socket. It records what the
//! connection loop needs to decide that dropping hyper loses nothing: every
//! byte hyper was given belongs to a request hyper has dispatched and
//! answered, the answer is written, and hyper is waiting for bytes that have
//! not arrived. [`HeadTracker`] follows the request framing of the bytes
//! handed to hyper (heads and `Content-Length` bodies) to know when they end
//! exactly at a message boundary; anything it does not follow (chunked
//! bodies, HTTP/2, a head it cannot parse) makes the connection unparkable,
//! and it is then served by hyper as before.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's socket as the parking loop needs it: the TCP socket to wait
/// on, and whether the stream holds nothing the socket does not show.
pub(super) trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket under the stream.
    fn tcp(&self) -> &TcpStream;
    /// True when the connection may be parked at all (TLS: not when ALPN
    /// chose HTTP/2).
    fn parkable(&self) -> bool;
    /// True when the stream holds no bytes of its own (TLS: no decrypted
    /// plaintext, nothing waiting to be sent, no close alert received), so
    /// that waiting on the TCP socket alone is enough.
    fn holds_nothing(&self) -> bool;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn parkable(&self) -> bool {
        true
    }
    fn holds_nothing(&self) -> bool {
        true
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
    fn parkable(&self) -> bool {
        self.get_ref().1.alpn_protocol() != Some(b"h2")
    }
    fn holds_nothing(&self) -> bool {
        let tls = self.get_ref().1;
        // `wants_read` is false while decrypted plaintext waits to be read or
        // after the peer's close_notify; `wants_write` while TLS records wait
        // to be sent. rustls decrypts every complete record as soon as it is
        // read, so what it may still hold beyond that is part of a record,
        // whose rest is yet to arrive on the socket.
        tls.wants_read() && !tls.wants_write()
    }
}

/// Per-connection activity, shared by the connection loop, the IO wrapper
/// and the service.
pub(super) struct Activity {
    start: tokio::time::Instant,
    last_ms: AtomicU64,
    /// Requests whose service future has not finished.
    pub(super) in_flight: AtomicUsize,
    /// Requests handed to the service.
    served: AtomicU64,
    /// Complete request heads handed to hyper (counted by [`HeadTracker`]).
    heads: AtomicU64,
    /// The bytes handed to hyper end exactly at a message boundary, and the
    /// tracker follows the connection (no chunked body, no HTTP/2).
    at_boundary: AtomicBool,
    /// hyper's last read found the socket empty (it waits for bytes).
    read_blocked: AtomicBool,
    /// hyper's last write or flush could not complete.
    write_blocked: AtomicBool,
    /// The stream holds nothing of its own ([`Socket::holds_nothing`]).
    clean: AtomicBool,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            heads: AtomicU64::new(0),
            at_boundary: AtomicBool::new(true),
            read_blocked: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
            clean: AtomicBool::new(false),
        }
    }

    /// Records a read or write now.
    pub(super) fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last read or write.
    pub(super) fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// When the last read or write happened.
    pub(super) fn last(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// True when hyper's state for this connection can be dropped without
    /// losing a byte: every head hyper was given was dispatched and its
    /// service finished, the bytes given end at a message boundary, the
    /// answer is written out, and hyper waits for bytes that have not come.
    pub(super) fn can_park(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.at_boundary.load(Ordering::Relaxed)
            && self.heads.load(Ordering::Relaxed) == self.served.load(Ordering::Relaxed)
            && self.read_blocked.load(Ordering::Relaxed)
            && !self.write_blocked.load(Ordering::Relaxed)
            && self.clean.load(Ordering::Relaxed)
    }

    /// Resets the per-hyper-instance flags before hyper is rebuilt on the socket.
    pub(super) fn unpark(&self) {
        self.read_blocked.store(false, Ordering::Relaxed);
        self.write_blocked.store(false, Ordering::Relaxed);
        self.clean.store(false, Ordering::Relaxed);
    }
}

/// Counts a request as in flight until dropped (also when the request's
/// future is cancelled by a client reset).
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    /// Called when hyper dispatches a request to the service.
    pub(super) fn enter(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.served.fetch_add(1, Ordering::Relaxed);
        Self(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Follows the HTTP/1 request framing of a byte stream: request heads and
/// `Content-Length` bodies. Anything else (a chunked body, `CONNECT`, a head
/// it cannot parse, HTTP/2's preface) makes it give up for good.
pub(super) struct HeadTracker {
    /// Bytes of a head not complete yet (empty at a boundary).
    partial: Vec<u8>,
    /// Body bytes of the current request still to come.
    body_left: u64,
    /// Gave up: the connection is never parked.
    lost: bool,
    /// Longest head followed (hyper's own ceiling).
    max_head: usize,
}

/// What parsing the start of a byte stream as a request head found.
enum Head {
    /// A head of this many bytes, followed by a body of this many bytes.
    Complete(usize, u64),
    Partial,
    Unfollowed,
}

/// Most header fields parsed; a head with more makes the tracker give up
/// (hyper parses and serves it as before; the connection is just not parked).
const MAX_TRACKED_HEADERS: usize = 128;

fn parse_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_TRACKED_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Unfollowed,
    };
    if req.method == Some("CONNECT") {
        return Head::Unfollowed;
    }
    let mut body: Option<u64> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Head::Unfollowed;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
            else {
                return Head::Unfollowed;
            };
            if body.is_some_and(|b| b != n) {
                return Head::Unfollowed;
            }
            body = Some(n);
        }
    }
    Head::Complete(len, body.unwrap_or(0))
}

impl HeadTracker {
    pub(super) fn new(max_head: usize, follow: bool) -> Self {
        Self {
            partial: Vec::new(),
            body_left: 0,
            lost: !follow,
            max_head,
        }
    }

    /// True when the bytes fed so far end exactly at the end of a message.
    pub(super) fn at_boundary(&self) -> bool {
        !self.lost && self.partial.is_empty() && self.body_left == 0
    }

    /// Follows `data`, the next bytes handed to hyper; returns how many
    /// request heads it completed.
    pub(super) fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut heads = 0;
        while !self.lost && !data.is_empty() {
            if self.body_left > 0 {
                let n = usize::try_from(self.body_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.body_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let (found, before) = if self.partial.is_empty() {
                (parse_head(data), 0)
            } else {
                let before = self.partial.len();
                let room = self.max_head.saturating_sub(before).min(data.len());
                self.partial.extend_from_slice(&data[..room]);
                (parse_head(&self.partial), before)
            };
            match found {
                Head::Complete(len, body) => {
                    heads += 1;
                    data = &data[len - before..];
                    self.partial = Vec::new();
                    self.body_left = body;
                }
                Head::Partial => {
                    if self.partial.is_empty() {
                        self.partial
                            .extend_from_slice(&data[..data.len().min(self.max_head)]);
                    }
                    if self.partial.len() >= self.max_head {
                        self.give_up();
                    }
                    return heads;
                }
                Head::Unfollowed => self.give_up(),
            }
        }
        heads
    }

    fn give_up(&mut self) {
        self.lost = true;
        self.partial = Vec::new();
    }
}

/// The socket as hyper sees it: records activity, what hyper was given and
/// whether its reads and writes wait; hands the socket back through `home`
/// when hyper's connection is dropped.
pub(super) struct ParkIo<S: Socket> {
    io: Option<S>,
    home: Arc<Mutex<Option<S>>>,
    activity: Arc<Activity>,
    tracker: HeadTracker,
}

impl<S: Socket> ParkIo<S> {
    pub(super) fn new(
        io: S,
        home: Arc<Mutex<Option<S>>>,
        activity: Arc<Activity>,
        tracker: HeadTracker,
    ) -> Self {
        activity.unpark();
        activity
            .at_boundary
            .store(tracker.at_boundary(), Ordering::Relaxed);
        Self {
            io: Some(io),
            home,
            activity,
            tracker,
        }
    }

    fn io(&mut self) -> Pin<&mut S> {
        // Only `Drop` takes it out.
        #[allow(clippy::expect_used)]
        Pin::new(self.io.as_mut().expect("socket present until drop"))
    }

    fn note_clean(&self) {
        let clean = self
            .io
            .as_ref()
            .is_some_and(|s| s.parkable() && s.holds_nothing());
        self.activity.clean.store(clean, Ordering::Relaxed);
    }

    fn note_write<T>(&self, r: &Poll<std::io::Result<T>>) {
        self.activity
            .write_blocked
            .store(r.is_pending(), Ordering::Relaxed);
    }
}

impl<S: Socket> Drop for ParkIo<S> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take()
            && let Ok(mut home) = self.home.lock()
        {
            *home = Some(io);
        }
    }
}

impl<S: Socket> AsyncRead for ParkIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = self.io().poll_read(cx, buf);
        match &r {
            Poll::Pending => {
                self.activity.read_blocked.store(true, Ordering::Relaxed);
                self.note_clean();
            }
            Poll::Ready(res) => {
                self.activity.read_blocked.store(false, Ordering::Relaxed);
                let got = &buf.filled()[before..];
                if res.is_ok() && !got.is_empty() {
                    self.activity.touch();
                    let heads = self.tracker.feed(got);
                    if heads > 0 {
                        self.activity.heads.fetch_add(heads, Ordering::Relaxed);
                    }
                    let at = self.tracker.at_boundary();
                    self.activity.at_boundary.store(at, Ordering::Relaxed);
                }
            }
        }
        r
    }
}

impl<S: Socket> AsyncWrite for ParkIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = self.io().poll_write(cx, buf);
        self.note_write(&r);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = self.io().poll_write_vectored(cx, bufs);
        self.note_write(&r);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|s| s.is_write_vectored())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = self.io().poll_flush(cx);
        self.note_write(&r);
        if r.is_ready() {
            self.note_clean();
        }
        r
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> HeadTracker {
        HeadTracker::new(64 * 1024, true)
    }

    #[test]
    fn one_bodyless_head_ends_at_a_boundary() {
        let mut t = tracker();
        assert_eq!(t.feed(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"), 1);
        assert!(t.at_boundary());
    }

    #[test]
    fn a_head_in_pieces_is_followed() {
        let mut t = tracker();
        assert_eq!(t.feed(b"GET / HTTP/1.1\r\nho"), 0);
        assert!(!t.at_boundary());
        assert_eq!(t.feed(b"st: x\r\n\r\nGET /b HTTP/1.1\r\n"), 1);
        assert!(!t.at_boundary());
        assert_eq!(t.feed(b"\r\n"), 1);
        assert!(t.at_boundary());
    }

    #[test]
    fn content_length_bodies_are_skipped() {
        let mut t = tracker();
        assert_eq!(t.feed(b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nab"), 1);
        assert!(!t.at_boundary(), "body still coming");
        assert_eq!(t.feed(b"cde"), 0);
        assert!(t.at_boundary());
        assert_eq!(
            t.feed(b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\nxyGET / HTTP/1.1\r\n\r\n"),
            2
        );
        assert!(t.at_boundary());
    }

    #[test]
    fn pipelined_heads_are_counted() {
        let mut t = tracker();
        assert_eq!(t.feed(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"), 2);
        assert!(t.at_boundary());
    }

    #[test]
    fn unfollowed_framing_gives_up_for_good() {
        for bad in [
            &b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: +1\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01",
        ] {
            let mut t = tracker();
            t.feed(bad);
            assert!(!t.at_boundary(), "{}", String::from_utf8_lossy(bad));
            t.feed(b"GET / HTTP/1.1\r\n\r\n");
            assert!(!t.at_boundary());
        }
    }

    #[test]
    fn an_endless_head_gives_up() {
        let mut t = HeadTracker::new(64, true);
        t.feed(b"GET / HTTP/1.1\r\n");
        for _ in 0..10 {
            t.feed(b"x-long: aaaaaaaaaaaaaaaa\r\n");
        }
        assert!(t.lost);
        assert!(t.partial.is_empty());
    }
}
