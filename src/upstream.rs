//! The client side. Every department call goes through the [`Department`]
//! trait (one async `send`); [`DepartmentClient`] is its HTTP implementation:
//! one pooled keep-alive client per department, connecting only to the
//! addresses that passed the department's address policy (no DNS lookup at
//! request time, so no DNS-rebinding gap), plus header hygiene.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::error::UpstreamError;

pub mod sql;

/// Where a department's system is, after its address was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedTarget {
    /// True for https.
    pub https: bool,
    /// Host name for `Host` and TLS SNI.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The checked addresses; connections go only here.
    pub addrs: Vec<SocketAddr>,
    /// Path prefix of the department's API (no trailing `/`).
    pub base_path: String,
}

/// A department's answer, read completely (never a partial body).
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers, hop-by-hop already removed.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// The future a [`Department`] answers with.
pub type SendFuture<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Reply, UpstreamError>> + Send + 'a>>;

/// One department as the pipeline sees it: something that takes a request
/// built by the department's adapter and answers a complete [`Reply`].
///
/// The pipeline wraps every call in the department's bulkhead, breaker and
/// retries; an implementation only performs one attempt within `timeout` and
/// refuses replies over `max_reply` bytes. The HTTP client
/// ([`DepartmentClient`]) is one implementation; tests use in-memory ones.
pub trait Department: Send + Sync + std::fmt::Debug {
    /// Sends `req` (its method, headers and body; `path_and_query` relative to
    /// the department's base) and reads the whole reply within `timeout`.
    fn send<'a>(
        &'a self,
        req: Request<Full<Bytes>>,
        path_and_query: &'a str,
        timeout: Duration,
        max_reply: usize,
    ) -> SendFuture<'a>;

    /// Where the department is, for logs and diagnostics.
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl Department for DepartmentClient {
    fn send<'a>(
        &'a self,
        req: Request<Full<Bytes>>,
        path_and_query: &'a str,
        timeout: Duration,
        max_reply: usize,
    ) -> SendFuture<'a> {
        Box::pin(DepartmentClient::send(
            self,
            req,
            path_and_query,
            timeout,
            max_reply,
        ))
    }

    fn describe(&self) -> String {
        let t = &self.target;
        let scheme = if t.https { "https" } else { "http" };
        format!("{scheme}://{}:{}{}", t.host, t.port, t.base_path)
    }
}

/// A pooled client bound to one department.
#[derive(Clone, Debug)]
pub struct DepartmentClient {
    client: Client<PinnedConnector, Full<Bytes>>,
    target: Arc<PinnedTarget>,
    authority: HeaderValue,
}

impl DepartmentClient {
    /// A client for `target`; `tls` is used for https targets (with an optional
    /// client certificate for mTLS to the department).
    pub fn new(
        target: PinnedTarget,
        tls: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
    ) -> Self {
        let target = Arc::new(target);
        let connector = PinnedConnector {
            target: target.clone(),
            tls: tls.map(tokio_rustls::TlsConnector::from),
            connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        let default_port = if target.https { 443 } else { 80 };
        let authority = if target.port == default_port {
            target.host.clone()
        } else if target.host.contains(':') {
            format!("[{}]:{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        Self {
            client,
            authority: HeaderValue::try_from(authority).unwrap_or(HeaderValue::from_static("")),
            target,
        }
    }

    /// The department's address.
    pub fn target(&self) -> &PinnedTarget {
        &self.target
    }

    /// Sends one request (`path_and_query` relative to the target's base path)
    /// and reads the whole reply within `timeout`, refusing replies over
    /// `max_reply` bytes.
    pub async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
        path_and_query: &str,
        timeout: Duration,
        max_reply: usize,
    ) -> Result<Reply, UpstreamError> {
        let scheme = if self.target.https { "https" } else { "http" };
        let uri = format!(
            "{scheme}://{}{}{}",
            self.authority.to_str().unwrap_or_default(),
            self.target.base_path,
            path_and_query
        );
        *req.uri_mut() = Uri::try_from(uri)
            .map_err(|e| UpstreamError::Broken(format!("cannot build department URI: {e}")))?;
        req.headers_mut()
            .insert(header::HOST, self.authority.clone());
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| UpstreamError::Broken(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            if let Some(len) = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                && len > max_reply as u64
            {
                return Err(UpstreamError::ReplyTooLarge { limit: max_reply });
            }
            let body = Limited::new(body, max_reply)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        UpstreamError::ReplyTooLarge { limit: max_reply }
                    } else {
                        UpstreamError::Broken(format!("reply body cut short: {e}"))
                    }
                })?
                .to_bytes();
            let mut headers = parts.headers;
            strip_hop_by_hop(&mut headers);
            Ok(Reply {
                status: parts.status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout(timeout)),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(n);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Connects only to the pinned addresses, in order, each within the connect timeout.
#[derive(Clone)]
struct PinnedConnector {
    target: Arc<PinnedTarget>,
    tls: Option<tokio_rustls::TlsConnector>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for PinnedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedConnector")
            .field("target", &self.target)
            .finish()
    }
}

impl tower_service::Service<Uri> for PinnedConnector {
    type Response = Stream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let mut last = std::io::Error::other("no address to connect to");
            for addr in &this.target.addrs {
                match tokio::time::timeout(this.connect_timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(tcp)) => {
                        let _ = tcp.set_nodelay(true);
                        return match &this.tls {
                            None if !this.target.https => Ok(Stream::Plain(TokioIo::new(tcp))),
                            None => Err(std::io::Error::other("https target without TLS config")),
                            Some(tls) => {
                                let name = rustls::pki_types::ServerName::try_from(
                                    this.target.host.clone(),
                                )
                                .map_err(std::io::Error::other)?;
                                let s = tls.connect(name, tcp).await?;
                                Ok(Stream::Tls(Box::new(TokioIo::new(s))))
                            }
                        };
                    }
                    Ok(Err(e)) => last = e,
                    Err(_) => {
                        last = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("connect to {addr} timed out"),
                        )
                    }
                }
            }
            Err(last)
        })
    }
}

/// A connection to a department.
#[allow(clippy::large_enum_variant)]
enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Builds the rustls client config for https departments: the web PKI is not
/// bundled, so the operator names the CA (`ca`) and optionally a client
/// certificate for mTLS to the department.
pub fn client_tls(
    ca: &std::path::Path,
    client_cert: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Arc<rustls::ClientConfig>, crate::certs::CertError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in crate::certs::load_certs(ca)? {
        roots.add(c).map_err(|e| crate::certs::CertError::Invalid {
            path: ca.to_path_buf(),
            what: e.to_string(),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::certs::CertError::Invalid {
            path: ca.to_path_buf(),
            what: e.to_string(),
        })?
        .with_root_certificates(roots);
    let cfg = match client_cert {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(
                crate::certs::load_certs(cert)?,
                crate::certs::load_key(key)?,
            )
            .map_err(|e| crate::certs::CertError::Invalid {
                path: cert.to_path_buf(),
                what: e.to_string(),
            })?,
    };
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
