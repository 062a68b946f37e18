//! A bare reverse proxy built from the gateway's own crates: the stack's limit.
//!
//! hyper 1 server (hyper-util's auto builder: HTTP/1.1 and HTTP/2, h2c by
//! prior knowledge on the plain listener, ALPN `h2`/`http/1.1` with `--tls`),
//! hyper-util's pooled legacy `Client` to the upstream, a tokio multi-thread
//! runtime. No authentication, no audit, no limits, no logging: whatever the
//! gateway does on top of this is its own cost. `benches/load.sh` runs it as a
//! peer next to nginx.
//!
//! ```text
//! cargo build --release --example bare-proxy
//! target/release/examples/bare-proxy 127.0.0.1:8081 127.0.0.1:9000
//! target/release/examples/bare-proxy 127.0.0.1:8444 127.0.0.1:9000 --tls cert.pem key.pem
//! ```
//!
//! Every request is forwarded as it came (method, path and query, headers
//! less the hop-by-hop ones, streamed body) to `http://UPSTREAM`, with `Host`
//! set to the upstream as nginx's `proxy_pass` does; the reply streams back.
//! An upstream failure is a bare 502.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = Client<HttpConnector, Incoming>;

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

struct Args {
    listen: SocketAddr,
    upstream: String,
    tls: Option<(String, String)>,
}

fn usage() -> ! {
    eprintln!("usage: bare-proxy LISTEN_ADDR UPSTREAM_ADDR [--tls CERT_PEM KEY_PEM]");
    eprintln!("  e.g. bare-proxy 127.0.0.1:8081 127.0.0.1:9000");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, tls) = match args.as_slice() {
        [l, u] => (l, u, None),
        [l, u, flag, c, k] if flag == "--tls" => (l, u, Some((c.clone(), k.clone()))),
        _ => usage(),
    };
    let Ok(listen) = listen.parse() else {
        eprintln!("bare-proxy: LISTEN_ADDR `{listen}` is not an address like 127.0.0.1:8081");
        usage()
    };
    if upstream.parse::<SocketAddr>().is_err() {
        eprintln!("bare-proxy: UPSTREAM_ADDR `{upstream}` is not an address like 127.0.0.1:9000");
        usage()
    }
    Args {
        listen,
        upstream: upstream.clone(),
        tls,
    }
}

fn tls_config(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let read = |p: &str| std::fs::read(Path::new(p)).map_err(|e| format!("{p}: {e}"));
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("{key}: {e}"))?
        .ok_or_else(|| format!("{key}: no private key in the file"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("{cert} and {key}: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn bad_gateway() -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

async fn forward(
    client: Upstream,
    upstream: Arc<str>,
    host: HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let (mut parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(uri) = Uri::try_from(format!("http://{upstream}{pq}")) else {
        return Ok(bad_gateway());
    };
    parts.uri = uri;
    // The upstream leg is HTTP/1.1 whatever the client spoke.
    parts.version = http::Version::HTTP_11;
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    parts.headers.insert(header::HOST, host);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(h);
            }
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(_) => Ok(bad_gateway()),
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let tls = match &args.tls {
        Some((c, k)) => match tls_config(c, k) {
            Ok(cfg) => Some(tokio_rustls::TlsAcceptor::from(cfg)),
            Err(e) => {
                eprintln!("bare-proxy: TLS certificate or key unusable: {e}");
                std::process::exit(1)
            }
        },
        None => None,
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare-proxy: cannot listen on {}: {e}", args.listen);
            std::process::exit(1)
        }
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(connector);
    let upstream: Arc<str> = Arc::from(args.upstream.as_str());
    let Ok(host) = HeaderValue::from_str(&args.upstream) else {
        usage()
    };
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    eprintln!(
        "bare-proxy: {} -> http://{}{}",
        args.listen,
        args.upstream,
        if tls.is_some() { " (TLS)" } else { "" }
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("bare-proxy: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (client, upstream, host) = (client.clone(), upstream.clone(), host.clone());
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                forward(client.clone(), upstream.clone(), host.clone(), req)
            });
            let _ = match tls {
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                    Err(_) => return,
                },
            };
        });
    }
}
