//! An https department with mutual TLS: the gateway verifies the department
//! against `certs/<department>-ca.pem` and presents the client certificate
//! named in the adapter's `[upstream_auth]`.

// Test helpers outside #[test] fns may panic: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::{FULL, World, rewrite_base_url};
use http_body_util::Full;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpListener;

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "market supervision test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let leaf = |names: Vec<String>| {
        let k = KeyPair::generate().unwrap();
        let c = CertificateParams::new(names)
            .unwrap()
            .signed_by(&k, &issuer)
            .unwrap();
        (c.pem(), k.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: leaf(vec!["127.0.0.1".into()]),
        client: leaf(vec!["onewindow-gateway".into()]),
    }
}

/// Starts an https department requiring client certificates from `ca`;
/// returns its port and a counter of requests that presented one.
async fn https_department(p: &Pki) -> (u16, Arc<AtomicUsize>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(p.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from_pem_slice(p.server.0.as_bytes()).unwrap()],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(p.server.1.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let with_cert = Arc::new(AtomicUsize::new(0));
    let counter = with_cert.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return; // no or wrong client certificate
                };
                let presented = tls.get_ref().1.peer_certificates().is_some();
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        if presented {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        let uscc = req
                            .uri()
                            .path()
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        async move {
                            let body = serde_json::json!({"code": "0000", "data": {
                            "tyshxydm": uscc, "qymc": "滨海面馆有限公司", "fddbr": "李伟",
                            "yxqz": "2046-03-01", "djzt": "存续"}});
                            let mut r =
                                http::Response::new(Full::new(Bytes::from(body.to_string())));
                            r.headers_mut().insert(
                                "content-type",
                                http::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, with_cert)
}

#[tokio::test]
async fn mutual_tls_to_an_https_department() {
    let p = pki();
    let (port, with_cert) = https_department(&p).await;
    let w = World::builder().prepare().await;
    let root = w.root().to_path_buf();
    std::fs::write(root.join("certs/market-supervision-ca.pem"), &p.ca_pem).unwrap();
    std::fs::create_dir_all(root.join("certs/departments/market-supervision")).unwrap();
    std::fs::write(
        root.join("certs/departments/market-supervision/client.pem"),
        &p.client.0,
    )
    .unwrap();
    std::fs::write(
        root.join("certs/departments/market-supervision/client.key"),
        &p.client.1,
    )
    .unwrap();
    let file = root.join("adapters/market-supervision.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut text = rewrite_base_url(&text, &format!("https://127.0.0.1:{port}"));
    text.push_str(
        "\n[upstream_auth]\nclient_cert = \"certs/departments/market-supervision/client.pem\"\nclient_key = \"certs/departments/market-supervision/client.key\"\n",
    );
    std::fs::write(&file, text).unwrap();
    let w = w.boot().await;
    let t = w.token("portal-binhai", &[], None);
    let a = w
        .read(&format!("/v1/datasets/business-licence/{FULL}"), &t)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["record"]["uscc"], FULL);
    assert_eq!(
        with_cert.load(Ordering::SeqCst),
        1,
        "the client certificate was presented"
    );
}

#[tokio::test]
async fn an_https_department_without_our_client_certificate_is_a_502() {
    let p = pki();
    let (port, with_cert) = https_department(&p).await;
    let w = World::builder().prepare().await;
    let root = w.root().to_path_buf();
    std::fs::write(root.join("certs/market-supervision-ca.pem"), &p.ca_pem).unwrap();
    let file = root.join("adapters/market-supervision.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        rewrite_base_url(&text, &format!("https://127.0.0.1:{port}")),
    )
    .unwrap();
    let w = w.boot().await;
    let t = w.token("portal-binhai", &[], None);
    let a = w
        .read(&format!("/v1/datasets/business-licence/{FULL}"), &t)
        .await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert_eq!(with_cert.load(Ordering::SeqCst), 0);
}
