//! Authentication tests at the `authenticate` level, with keys generated at
//! run time; JWKS URL mode against an in-process HTTPS server.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;

// ---------------------------------------------------------------- helpers

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "onewindow-auth-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            SystemClock.now_unix()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A clock tests move by hand; starts at the real time so jsonwebtoken's
/// own (real-time) checks agree with ours.
struct ManualClock(AtomicU64);

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(SystemClock.now_unix())))
    }
    fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn now() -> u64 {
    SystemClock.now_unix()
}

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn good_claims() -> Value {
    let n = now();
    json!({
        "iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "portal-binhai",
        "iat": n, "nbf": n, "exp": n + 600,
    })
}

/// Signs `header` + `claims` as given (no checks), with `key` and `alg`.
fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
    format!("{msg}.{sig}")
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

struct World {
    dir: TempDir,
    demo: DemoIssuer,
    auth: Authenticator,
    clock: Arc<ManualClock>,
}

impl World {
    fn token(&self, claims: &Value) -> String {
        self.demo.mint_claims(claims).unwrap()
    }
    fn header(&self) -> Value {
        json!({"alg": "ES256", "typ": "JWT", "kid": self.demo.kid()})
    }
    async fn auth(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        self.auth.authenticate(Some(&bearer(token)), None).await
    }
    fn public_key_pem(&self) -> String {
        let pem = std::fs::read_to_string(DemoIssuer::key_path(self.dir.path())).unwrap();
        rcgen::KeyPair::from_pem(&pem).unwrap().public_key_pem()
    }
}

fn file_settings(dir: &Path) -> AuthSettings {
    AuthSettings {
        issuers: vec![IssuerSettings {
            issuer: DEMO_ISSUER.into(),
            audiences: vec![DEMO_AUDIENCE.into()],
            algorithms: vec![Algorithm::ES256],
            jwks: JwksSource::File(DemoIssuer::jwks_path(dir)),
            roles: crate::auth::Role::ALL.to_vec(),
        }],
        ..AuthSettings::default()
    }
}

async fn world() -> World {
    let dir = TempDir::new();
    let (demo, generated) = DemoIssuer::load_or_generate(dir.path()).unwrap();
    assert!(generated);
    let clock = ManualClock::new();
    let auth = Authenticator::start_with_clock(
        &file_settings(dir.path()),
        &CancellationToken::new(),
        clock.clone(),
    )
    .await
    .unwrap();
    World {
        dir,
        demo,
        auth,
        clock,
    }
}

fn is_invalid(r: &Result<Arc<Principal>, AuthError>) -> bool {
    matches!(r, Err(AuthError::Invalid(_)))
}

// ------------------------------------------------------------ happy paths

#[tokio::test]
async fn demo_token_verifies_and_hot_token_comes_from_cache() {
    let w = world().await;
    let roles = vec!["auditor".to_string(), "astronaut".to_string()];
    let t = w
        .demo
        .mint("auditor", &roles, None, Duration::from_secs(300))
        .unwrap();
    let p1 = w.auth(&t).await.unwrap();
    assert_eq!(p1.sub(), "auditor");
    assert_eq!(p1.issuer(), DEMO_ISSUER);
    assert!(p1.is_auditor());
    assert_eq!(p1.roles().collect::<Vec<_>>(), vec![Role::Auditor]);
    let p2 = w.auth(&t).await.unwrap();
    assert!(Arc::ptr_eq(&p1, &p2), "second call must be a cache hit");
    assert_eq!(w.auth.cached_tokens(), 1);
    // scheme is case-insensitive
    let lower = HeaderValue::from_str(&format!("bearer {t}")).unwrap();
    assert!(w.auth.authenticate(Some(&lower), None).await.is_ok());
}

#[tokio::test]
async fn cached_token_stops_working_at_exp() {
    let w = world().await;
    let t = w
        .demo
        .mint("portal-binhai", &[], None, Duration::from_secs(100))
        .unwrap();
    assert!(w.auth(&t).await.is_ok());
    w.clock.advance(100 + 30); // exp + leeway
    assert_eq!(w.auth(&t).await.unwrap_err(), AuthError::Expired);
}

#[tokio::test]
async fn auditor_principal_has_no_data_grants() {
    let w = world().await;
    let (known, datasets) = super::grants::tests::demo_world();
    let grants = Grants::from_toml(
        Path::new("clients.toml"),
        include_str!("../../config/clients.toml"),
        &known,
        &datasets,
    )
    .unwrap();
    let t = w
        .demo
        .mint(
            "auditor",
            &["auditor".into()],
            None,
            Duration::from_secs(60),
        )
        .unwrap();
    let p = w.auth(&t).await.unwrap();
    let g = grants.client(p.sub());
    assert!(g.check_purpose(Some("service-handling")).is_err());
    assert!(g.check_dataset("business-licence").is_err());
    assert!(g.check_scenario("open-restaurant").is_err());
    assert!(
        g.check_proxy("market-supervision", &http::Method::GET, "/licences/1")
            .is_err()
    );
    assert!(g.catalog().datasets.is_empty());
}

#[tokio::test]
async fn department_admin_token_of_a_cannot_act_for_b() {
    let w = world().await;
    let t = w
        .demo
        .mint(
            "fire-rescue-admin",
            &["department-admin".into()],
            Some("fire-rescue"),
            Duration::from_secs(60),
        )
        .unwrap();
    let p = w.auth(&t).await.unwrap();
    assert!(p.require_department_admin("fire-rescue").is_ok());
    assert!(p.require_department_admin("public-security").is_err());
    assert!(p.require_role(Role::PlatformAdmin).is_err());
}

#[tokio::test]
async fn demo_issuer_files_and_reload() {
    let dir = TempDir::new();
    let (a, generated) = DemoIssuer::load_or_generate(dir.path()).unwrap();
    assert!(generated);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(DemoIssuer::key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(DemoIssuer::jwks_path(dir.path())).unwrap())
            .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], a.kid());
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "no private part in the JWKS"
    );
    // kid is the RFC 7638 thumbprint, as jsonwebtoken computes it
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    assert_eq!(
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap(),
        a.kid()
    );
    std::fs::remove_file(DemoIssuer::jwks_path(dir.path())).unwrap();
    let (b, generated) = DemoIssuer::load_or_generate(dir.path()).unwrap();
    assert!(!generated);
    assert_eq!(a.kid(), b.kid());
    assert!(
        DemoIssuer::jwks_path(dir.path()).exists(),
        "JWKS rewritten from the key"
    );
}

// ------------------------------------------------------- header / structure

#[tokio::test]
async fn missing_basic_and_two_tokens_are_refused() {
    let w = world().await;
    let t = w.token(&good_claims());
    assert_eq!(
        w.auth.authenticate(None, None).await.unwrap_err(),
        AuthError::Missing
    );
    for v in [
        "Basic dXNlcjpwYXNz".to_string(),
        format!("Basic {t}"),
        format!("Bearer {t} {t}"),
        format!("Bearer {t}, Bearer {t}"),
        format!("Bearer {t},{t}"),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        t.clone(),
        format!("Bearer {t}="),
    ] {
        let hv = HeaderValue::from_str(&v).unwrap();
        let r = w.auth.authenticate(Some(&hv), None).await;
        assert!(matches!(r, Err(AuthError::Malformed(_))), "{v:.40}: {r:?}");
    }
    assert_eq!(w.auth.cached_tokens(), 0);
}

#[tokio::test]
async fn one_megabyte_header_is_refused_before_parsing() {
    let w = world().await;
    let big = format!("Bearer {}", "A".repeat(1 << 20));
    let hv = HeaderValue::from_str(&big).unwrap();
    let err = w.auth.authenticate(Some(&hv), None).await.unwrap_err();
    assert!(matches!(err, AuthError::Malformed(_)));
    // refused by the size gate (first check), not by a later stage
    assert!(
        err.detail().contains("authorization header of"),
        "{}",
        err.detail()
    );
}

#[tokio::test]
async fn token_of_dots_is_refused() {
    let w = world().await;
    let dots = format!("Bearer {}", ".".repeat(100_000));
    let err = w
        .auth
        .authenticate(Some(&HeaderValue::from_str(&dots).unwrap()), None)
        .await
        .unwrap_err();
    assert!(
        err.detail().contains("authorization header of"),
        "{}",
        err.detail()
    );
    // under the size limit: refused by the structural check
    for t in [
        ".".repeat(8000),
        "..".into(),
        "a.b.c.d".into(),
        "a..c".into(),
    ] {
        let r = w.auth(&t).await;
        assert!(matches!(r, Err(AuthError::Malformed(_))), "{r:?}");
    }
}

// ------------------------------------------------------------- algorithms

#[tokio::test]
async fn alg_none_in_any_case_is_refused() {
    let w = world().await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "typ": "JWT", "kid": w.demo.kid()});
        let unsigned = format!(
            "{}.{}.",
            b64(h.to_string().as_bytes()),
            b64(good_claims().to_string().as_bytes())
        );
        assert!(matches!(
            w.auth(&unsigned).await,
            Err(AuthError::Malformed(_))
        ));
        let with_sig = format!("{}{}", unsigned, b64(b"sig"));
        assert!(is_invalid(&w.auth(&with_sig).await), "{alg}");
    }
}

#[tokio::test]
async fn stripped_truncated_and_edited_are_refused() {
    let w = world().await;
    let t = w.token(&good_claims());
    let (msg, sig) = t.rsplit_once('.').unwrap();
    assert!(matches!(
        w.auth(&format!("{msg}.")).await,
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(w.auth(msg).await, Err(AuthError::Malformed(_))));
    assert!(is_invalid(
        &w.auth(&format!("{msg}.{}", &sig[..sig.len() - 4])).await
    ));
    let mut edited = good_claims();
    edited["sub"] = json!("platform-admin");
    edited["roles"] = json!(["platform-admin"]);
    let (h, _) = msg.split_once('.').unwrap();
    let forged = format!("{h}.{}.{sig}", b64(edited.to_string().as_bytes()));
    assert!(is_invalid(&w.auth(&forged).await));
    // the untouched token still works (nothing above poisoned the cache)
    assert!(w.auth(&t).await.is_ok());
}

#[tokio::test]
async fn hs256_with_public_key_as_secret_is_refused() {
    let w = world().await;
    let h = json!({"alg": "HS256", "typ": "JWT", "kid": w.demo.kid()});
    let pem = w.public_key_pem();
    let jwk_json = serde_json::to_string(
        &serde_json::from_str::<Value>(w.demo.jwks_json()).unwrap()["keys"][0],
    )
    .unwrap();
    for secret in [
        pem.as_bytes(),
        jwk_json.as_bytes(),
        w.demo.jwks_json().as_bytes(),
    ] {
        let t = sign_raw(
            &h,
            &good_claims(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        );
        let e = w.auth(&t).await.unwrap_err();
        assert!(e.detail().contains("not pinned"), "{}", e.detail());
    }
}

#[tokio::test]
async fn foreign_key_with_right_kid_is_refused() {
    let w = world().await;
    let other_dir = TempDir::new();
    let (other, _) = DemoIssuer::load_or_generate(other_dir.path()).unwrap();
    let t = sign_raw(
        &w.header(),
        &good_claims(),
        other.encoding_key(),
        Algorithm::ES256,
    );
    assert_eq!(w.auth(&t).await.unwrap_err().detail(), "InvalidSignature");
    // and the foreign issuer's own kid is simply unknown
    assert!(is_invalid(
        &w.auth(&other.mint_claims(&good_claims()).unwrap()).await
    ));
}

#[tokio::test]
async fn embedded_jwk_header_is_refused() {
    let w = world().await;
    let other_dir = TempDir::new();
    let (other, _) = DemoIssuer::load_or_generate(other_dir.path()).unwrap();
    let jwk = serde_json::from_str::<Value>(other.jwks_json()).unwrap()["keys"][0].clone();
    for kid in [w.demo.kid(), other.kid()] {
        let h = json!({"alg": "ES256", "kid": kid, "jwk": jwk});
        let t = sign_raw(&h, &good_claims(), other.encoding_key(), Algorithm::ES256);
        assert!(is_invalid(&w.auth(&t).await));
    }
    // even a correctly signed token is refused when it carries a key
    let h = json!({"alg": "ES256", "kid": w.demo.kid(), "jwk": jwk});
    let t = sign_raw(&h, &good_claims(), w.demo.encoding_key(), Algorithm::ES256);
    let e = w.auth(&t).await.unwrap_err();
    assert!(e.detail().contains("`jwk`"), "{}", e.detail());
}

#[tokio::test]
async fn kid_path_traversal_with_empty_hmac_key_is_refused() {
    let w = world().await;
    for kid in ["../../dev/null", "/dev/null", "../../../../etc/passwd"] {
        let h = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        let t = sign_raw(
            &h,
            &good_claims(),
            &EncodingKey::from_secret(b""),
            Algorithm::HS256,
        );
        assert!(is_invalid(&w.auth(&t).await), "{kid}");
        let h = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
        let t = sign_raw(&h, &good_claims(), w.demo.encoding_key(), Algorithm::ES256);
        assert!(is_invalid(&w.auth(&t).await), "{kid}");
    }
}

#[tokio::test]
async fn ecdsa_zero_signature_is_refused() {
    // CVE-2022-21449 ("psychic signatures"): r = s = 0.
    let w = world().await;
    let msg = format!(
        "{}.{}",
        b64(w.header().to_string().as_bytes()),
        b64(good_claims().to_string().as_bytes())
    );
    let t = format!("{msg}.{}", b64(&[0u8; 64]));
    let e = w.auth(&t).await.unwrap_err();
    assert_eq!(
        e.detail(),
        "InvalidSignature",
        "reached the signature check"
    );
    // and a DER-encoded zero signature
    let t = format!(
        "{msg}.{}",
        b64(&[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00])
    );
    assert!(is_invalid(&w.auth(&t).await));
}

// ----------------------------------------------------------------- claims

#[tokio::test]
async fn time_claims_are_enforced() {
    let w = world().await;
    let n = now();
    let mut c = good_claims();
    c["exp"] = json!(n - 3600);
    c["iat"] = json!(n - 7200);
    c["nbf"] = json!(n - 7200);
    assert_eq!(w.auth(&w.token(&c)).await.unwrap_err(), AuthError::Expired);
    let mut c = good_claims();
    c["nbf"] = json!(n + 3600);
    assert!(is_invalid(&w.auth(&w.token(&c)).await), "nbf ahead");
    let mut c = good_claims();
    c["iat"] = json!(n + 3600);
    assert!(is_invalid(&w.auth(&w.token(&c)).await), "iat ahead");
    let mut c = good_claims();
    c["iat"] = json!(n + 10);
    c["nbf"] = json!(n + 10);
    assert!(w.auth(&w.token(&c)).await.is_ok(), "within the 30 s leeway");
}

#[tokio::test]
async fn wrong_aud_and_iss_are_refused() {
    let w = world().await;
    for (k, v) in [
        ("aud", json!("someone-else")),
        ("aud", json!(["someone-else", "another"])),
        ("aud", json!([])),
        ("iss", json!("https://evil.example")),
        ("iss", json!([DEMO_ISSUER])),
    ] {
        let mut c = good_claims();
        c[k] = v.clone();
        assert!(is_invalid(&w.auth(&w.token(&c)).await), "{k} = {v}");
    }
    let mut c = good_claims();
    c["aud"] = json!(["other", DEMO_AUDIENCE]);
    assert!(
        w.auth(&w.token(&c)).await.is_ok(),
        "aud list containing ours"
    );
}

#[tokio::test]
async fn each_required_claim_missing_is_refused() {
    let w = world().await;
    for k in ["exp", "aud", "iss", "sub"] {
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove(k);
        assert!(is_invalid(&w.auth(&w.token(&c)).await), "missing {k}");
    }
}

#[tokio::test]
async fn malformed_claim_types_are_refused() {
    let w = world().await;
    for (k, v) in [
        ("exp", json!((now() + 600).to_string())),
        ("exp", json!(null)),
        ("nbf", json!("0")),
        ("sub", json!("")),
        ("sub", json!(42)),
        ("roles", json!("platform-admin")),
    ] {
        let mut c = good_claims();
        c[k] = v.clone();
        assert!(is_invalid(&w.auth(&w.token(&c)).await), "{k} = {v}");
    }
}

// ------------------------------------------------------- RFC 8705 binding

#[tokio::test]
async fn certificate_bound_tokens() {
    let w = world().await;
    let cert: [u8; 32] = sha2::Sha256::digest(b"client certificate DER").into();
    let other: [u8; 32] = sha2::Sha256::digest(b"another certificate").into();
    let mut c = good_claims();
    c["cnf"] = json!({"x5t#S256": b64(&cert)});
    let t = w.token(&c);
    let hv = bearer(&t);
    assert_eq!(
        w.auth.authenticate(Some(&hv), None).await.unwrap_err(),
        AuthError::CertBindingMismatch
    );
    assert_eq!(
        w.auth
            .authenticate(Some(&hv), Some(&other))
            .await
            .unwrap_err(),
        AuthError::CertBindingMismatch
    );
    let p = w.auth.authenticate(Some(&hv), Some(&cert)).await.unwrap();
    assert_eq!(p.cnf_x5t_s256(), Some(&cert));
    // now cached: the binding is still checked on every hit
    assert_eq!(
        w.auth
            .authenticate(Some(&hv), Some(&other))
            .await
            .unwrap_err(),
        AuthError::CertBindingMismatch
    );
    assert_eq!(
        w.auth.authenticate(Some(&hv), None).await.unwrap_err(),
        AuthError::CertBindingMismatch
    );
    assert!(w.auth.authenticate(Some(&hv), Some(&cert)).await.is_ok());
    // an unbound token is fine with or without a client certificate
    let plain = bearer(&w.token(&good_claims()));
    assert!(w.auth.authenticate(Some(&plain), Some(&cert)).await.is_ok());
    // a cnf we cannot check is refused
    let mut c = good_claims();
    c["cnf"] = json!({"jkt": "abc"});
    assert!(is_invalid(&w.auth(&w.token(&c)).await));
}

use sha2::Digest as _;

// -------------------------------------------------------- JWKS over HTTPS

/// An in-process HTTPS JWKS server on 127.0.0.1:0, counting requests.
struct JwksServer {
    port: u16,
    hits: Arc<AtomicUsize>,
    /// (status, body) served now.
    reply: Arc<Mutex<(u16, String)>>,
    ca_file: PathBuf,
    stop: CancellationToken,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl JwksServer {
    fn set(&self, status: u16, body: &str) {
        *self.reply.lock().unwrap() = (status, body.to_string());
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn jwks_server(dir: &Path, body: &str) -> JwksServer {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_file = dir.join("jwks-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let reply = Arc::new(Mutex::new((200, body.to_string())));
    let stop = CancellationToken::new();
    let (h, r, s) = (hits.clone(), reply.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                () = s.cancelled() => break,
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            };
            let (acceptor, h, r) = (acceptor.clone(), h.clone(), r.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = r.lock().unwrap().clone();
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    JwksServer {
        port,
        hits,
        reply,
        ca_file,
        stop,
    }
}

struct UrlWorld {
    _dir: TempDir,
    demo: DemoIssuer,
    server: JwksServer,
    auth: Authenticator,
    clock: Arc<ManualClock>,
}

impl UrlWorld {
    fn fetches(&self) -> u64 {
        self.auth.jwks_fetches(DEMO_ISSUER).unwrap()
    }
}

async fn url_world() -> UrlWorld {
    let dir = TempDir::new();
    let (demo, _) = DemoIssuer::load_or_generate(dir.path()).unwrap();
    let server = jwks_server(dir.path(), demo.jwks_json()).await;
    let settings = AuthSettings {
        issuers: vec![IssuerSettings {
            issuer: DEMO_ISSUER.into(),
            audiences: vec![DEMO_AUDIENCE.into()],
            algorithms: vec![Algorithm::ES256],
            jwks: JwksSource::Url(UrlSource {
                url: format!("https://127.0.0.1:{}/jwks.json", server.port),
                host: "127.0.0.1".into(),
                port: server.port,
                path_and_query: "/jwks.json".into(),
                ca_file: Some(server.ca_file.clone()),
                refresh: Duration::from_secs(300),
                unknown_kid_cooldown: Duration::from_secs(30),
                max_stale: Duration::from_secs(3600),
                fetch_timeout: Duration::from_secs(5),
            }),
            roles: crate::auth::Role::ALL.to_vec(),
        }],
        ..AuthSettings::default()
    };
    let clock = ManualClock::new();
    let auth = Authenticator::start_with_clock(&settings, &CancellationToken::new(), clock.clone())
        .await
        .unwrap();
    UrlWorld {
        _dir: dir,
        demo,
        server,
        auth,
        clock,
    }
}

fn random_kid_token(w: &UrlWorld, i: usize) -> String {
    let h = json!({"alg": "ES256", "typ": "JWT", "kid": format!("random-{i}")});
    sign_raw(&h, &good_claims(), w.demo.encoding_key(), Algorithm::ES256)
}

#[tokio::test]
async fn url_issuer_is_fetched_at_start_and_verifies() {
    let w = url_world().await;
    assert_eq!((w.fetches(), w.server.hits()), (1, 1));
    let t = w
        .demo
        .mint("portal-binhai", &[], None, Duration::from_secs(60))
        .unwrap();
    assert!(w.auth.authenticate(Some(&bearer(&t)), None).await.is_ok());
    assert_eq!(w.server.hits(), 1, "a known kid causes no fetch");
}

#[tokio::test]
async fn start_fails_when_the_url_issuer_is_unreachable() {
    let dir = TempDir::new();
    let server = jwks_server(dir.path(), "{}").await;
    server.set(500, "down");
    let settings = AuthSettings {
        issuers: vec![IssuerSettings {
            issuer: DEMO_ISSUER.into(),
            audiences: vec![DEMO_AUDIENCE.into()],
            algorithms: vec![Algorithm::ES256],
            jwks: JwksSource::Url(UrlSource {
                url: "https://127.0.0.1/".into(),
                host: "127.0.0.1".into(),
                port: server.port,
                path_and_query: "/".into(),
                ca_file: Some(server.ca_file.clone()),
                refresh: Duration::from_secs(300),
                unknown_kid_cooldown: Duration::from_secs(30),
                max_stale: Duration::from_secs(3600),
                fetch_timeout: Duration::from_secs(5),
            }),
            roles: crate::auth::Role::ALL.to_vec(),
        }],
        ..AuthSettings::default()
    };
    let r = Authenticator::start(&settings, &CancellationToken::new()).await;
    assert!(matches!(r, Err(AuthError::Setup(_))), "{r:?}");
    // a server whose certificate we do not trust is refused too
    let mut s2 = settings.clone();
    if let JwksSource::Url(u) = &mut s2.issuers[0].jwks {
        let other = TempDir::new();
        let other_server = jwks_server(other.path(), "{}").await;
        u.ca_file = Some(other_server.ca_file.clone());
        server.set(200, "{}");
    }
    let hits = server.hits();
    assert!(
        Authenticator::start(&s2, &CancellationToken::new())
            .await
            .is_err()
    );
    assert_eq!(
        server.hits(),
        hits,
        "no request over an untrusted TLS session"
    );
}

#[tokio::test]
async fn flood_of_unknown_kids_causes_one_fetch_per_cooldown() {
    let w = url_world().await;
    let auth = w.auth.clone();
    let tokens: Vec<_> = (0..50).map(|i| random_kid_token(&w, i)).collect();
    let handles: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let a = auth.clone();
            tokio::spawn(async move { a.authenticate(Some(&bearer(&t)), None).await })
        })
        .collect();
    for h in handles {
        assert!(matches!(h.await.unwrap(), Err(AuthError::Invalid(_))));
    }
    assert_eq!(w.fetches(), 2, "start + one refetch");
    assert_eq!(w.server.hits(), 2);
    for i in 50..100 {
        let _ = w
            .auth
            .authenticate(Some(&bearer(&random_kid_token(&w, i))), None)
            .await;
    }
    assert_eq!(w.server.hits(), 2, "still inside the cooldown");
    w.clock.advance(31);
    let _ = w
        .auth
        .authenticate(Some(&bearer(&random_kid_token(&w, 1000))), None)
        .await;
    assert_eq!(w.server.hits(), 3, "one more after the cooldown");
}

#[tokio::test]
async fn rotated_key_is_picked_up_by_unknown_kid_refetch() {
    let w = url_world().await;
    let new_dir = TempDir::new();
    let (new, _) = DemoIssuer::load_or_generate(new_dir.path()).unwrap();
    let old_token = w
        .demo
        .mint("portal-binhai", &[], None, Duration::from_secs(60))
        .unwrap();
    assert!(
        w.auth
            .authenticate(Some(&bearer(&old_token)), None)
            .await
            .is_ok()
    );
    w.server.set(200, new.jwks_json());
    let t = new
        .mint("portal-binhai", &[], None, Duration::from_secs(60))
        .unwrap();
    assert!(w.auth.authenticate(Some(&bearer(&t)), None).await.is_ok());
    assert_eq!(w.server.hits(), 2);
    // the old key was withdrawn: its cached token is no longer accepted
    assert!(is_invalid(
        &w.auth.authenticate(Some(&bearer(&old_token)), None).await
    ));
}

// Hostile input: the issuer's key replaced under the same `kid`. The key set
// is compared by key material, so tokens verified (and cached) with the old
// key are refused after the reload, and the new key's tokens verify.
#[tokio::test]
async fn a_key_replaced_under_the_same_kid_drops_cached_verifications() {
    let w = url_world().await;
    let old_token = w
        .demo
        .mint("portal-binhai", &[], None, Duration::from_secs(60))
        .unwrap();
    assert!(
        w.auth
            .authenticate(Some(&bearer(&old_token)), None)
            .await
            .is_ok()
    );
    let new_dir = TempDir::new();
    let (new, _) = DemoIssuer::load_or_generate(new_dir.path()).unwrap();
    // The new key's material under the old key's name.
    let mut jwks: Value = serde_json::from_str(new.jwks_json()).unwrap();
    jwks["keys"][0]["kid"] = json!(w.demo.kid());
    w.server.set(200, &jwks.to_string());
    w.auth.refresh_issuer(DEMO_ISSUER).await.unwrap();
    assert!(
        is_invalid(&w.auth.authenticate(Some(&bearer(&old_token)), None).await),
        "a verification made with the replaced key was served from the cache"
    );
    let claims = json!({"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "portal-binhai",
        "exp": w.clock.now_unix() + 60});
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some(w.demo.kid().to_string());
    let pem = std::fs::read(DemoIssuer::key_path(new_dir.path())).unwrap();
    let t = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap();
    assert!(w.auth.authenticate(Some(&bearer(&t)), None).await.is_ok());
}

#[tokio::test]
async fn last_good_keys_are_kept_until_max_stale() {
    let w = url_world().await;
    let t = w
        .demo
        .mint("portal-binhai", &[], None, Duration::from_secs(7200))
        .unwrap();
    w.server.set(503, "unavailable");
    w.clock.advance(1800);
    assert!(w.auth.refresh_issuer(DEMO_ISSUER).await.is_err());
    let fresh = w
        .demo
        .mint("portal-binhai", &[], None, Duration::from_secs(7200))
        .unwrap();
    assert!(
        w.auth
            .authenticate(Some(&bearer(&fresh)), None)
            .await
            .is_ok(),
        "stale but usable"
    );
    w.clock.advance(1801);
    let other = w
        .demo
        .mint("portal-readonly", &[], None, Duration::from_secs(7200))
        .unwrap();
    let r = w.auth.authenticate(Some(&bearer(&other)), None).await;
    assert!(
        matches!(r, Err(AuthError::IssuerKeysUnavailable(_))),
        "{r:?}"
    );
    // the issuer comes back: a refresh restores service
    w.server.set(200, w.demo.jwks_json());
    w.auth.refresh_issuer(DEMO_ISSUER).await.unwrap();
    assert!(w.auth.authenticate(Some(&bearer(&t)), None).await.is_ok());
}

#[tokio::test]
async fn jku_and_x5u_headers_cause_no_fetch() {
    let w = url_world().await;
    let evil = format!("https://127.0.0.1:{}/evil.json", w.server.port);
    let before = (w.fetches(), w.server.hits());
    for h in [
        json!({"alg": "ES256", "kid": w.demo.kid(), "jku": evil}),
        json!({"alg": "ES256", "kid": "not-known", "jku": evil}),
        json!({"alg": "ES256", "kid": w.demo.kid(), "x5u": evil}),
        json!({"alg": "ES256", "kid": "not-known", "x5u": evil}),
        json!({"alg": "ES256", "kid": w.demo.kid(), "x5c": ["MIIB"]}),
        json!({"alg": "ES256", "kid": w.demo.kid(), "crit": ["exp"]}),
    ] {
        let t = sign_raw(&h, &good_claims(), w.demo.encoding_key(), Algorithm::ES256);
        let r = w.auth.authenticate(Some(&bearer(&t)), None).await;
        assert!(matches!(r, Err(AuthError::Invalid(_))), "{h}: {r:?}");
    }
    assert_eq!((w.fetches(), w.server.hits()), before);
}

#[tokio::test]
async fn stop_cancels_background_refresh() {
    let w = url_world().await;
    w.auth.stop();
    // after stop, explicit refreshes still work; nothing else fetches
    w.auth.refresh_issuer(DEMO_ISSUER).await.unwrap();
    assert_eq!(w.server.hits(), 2);
    assert_eq!(w.auth.jwks_fetches("nobody"), None);
}

// ---------------------------------------------------------------- config

#[tokio::test]
async fn settings_from_toml_start_an_authenticator() {
    let dir = TempDir::new();
    let (demo, _) = DemoIssuer::load_or_generate(&dir.path().join("certs")).unwrap();
    let text = r#"
[auth]
leeway_secs = 10
token_cache_capacity = 0
[[auth.issuers]]
issuer = "https://demo-issuer.onewindow.local"
audiences = ["onewindow"]
algorithms = ["ES256"]
jwks_file = "certs/demo-issuer.jwks.json"
"#;
    #[derive(serde::Deserialize)]
    struct Doc {
        auth: RawAuth,
    }
    let file = dir.path().join("gateway.toml");
    let doc: Doc = crate::config::parse_toml(&file, text).unwrap();
    let s = AuthSettings::from_raw(doc.auth, &file, dir.path()).unwrap();
    let auth = Authenticator::start(&s, &CancellationToken::new())
        .await
        .unwrap();
    let t = demo
        .mint("portal-binhai", &[], None, Duration::from_secs(60))
        .unwrap();
    let a = auth.authenticate(Some(&bearer(&t)), None).await.unwrap();
    let b = auth.authenticate(Some(&bearer(&t)), None).await.unwrap();
    assert!(!Arc::ptr_eq(&a, &b), "capacity 0 disables the cache");
    assert_eq!(auth.cached_tokens(), 0);
    // a missing JWKS file fails the start
    let mut s2 = s.clone();
    s2.issuers[0].jwks = JwksSource::File(dir.path().join("nope.json"));
    assert!(matches!(
        Authenticator::start(&s2, &CancellationToken::new()).await,
        Err(AuthError::Setup(_))
    ));
}

#[test]
fn errors_never_echo_the_token() {
    let e = AuthError::Invalid(Detail::new("x"));
    assert_eq!(e.to_string(), "invalid token");
    assert_eq!(AuthError::Expired.detail(), "");
}

#[tokio::test]
async fn alg_must_fit_the_key_type_even_when_pinned() {
    let dir = TempDir::new();
    let (demo, _) = DemoIssuer::load_or_generate(dir.path()).unwrap();
    let mut s = file_settings(dir.path());
    s.issuers[0].algorithms = vec![Algorithm::ES256, Algorithm::RS256, Algorithm::ES384];
    let auth = Authenticator::start(&s, &CancellationToken::new())
        .await
        .unwrap();
    for alg in ["RS256", "ES384"] {
        let h = json!({"alg": alg, "kid": demo.kid()});
        let t = format!(
            "{}.{}.{}",
            b64(h.to_string().as_bytes()),
            b64(good_claims().to_string().as_bytes()),
            b64(&[1u8; 256])
        );
        let e = auth
            .authenticate(Some(&bearer(&t)), None)
            .await
            .unwrap_err();
        assert!(
            e.detail().contains("key type does not fit"),
            "{alg}: {}",
            e.detail()
        );
    }
}

#[tokio::test]
async fn expired_cache_entry_is_reverified_with_leeway() {
    let w = world().await;
    let t = w
        .demo
        .mint("portal-binhai", &[], None, Duration::from_secs(100))
        .unwrap();
    let a = w.auth(&t).await.unwrap();
    w.clock.advance(110); // past exp, inside the 30 s leeway
    let b = w.auth(&t).await.unwrap();
    assert!(
        !Arc::ptr_eq(&a, &b),
        "re-verified, not served from the cache"
    );
    w.clock.advance(30);
    assert_eq!(w.auth(&t).await.unwrap_err(), AuthError::Expired);
}

#[tokio::test]
async fn verify_uncached_applies_the_same_gates() {
    let w = world().await;
    let t = w.token(&good_claims());
    assert!(w.auth.verify_uncached(&t, None).await.is_ok());
    assert!(matches!(
        w.auth.verify_uncached(&format!("{t} {t}"), None).await,
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        w.auth.verify_uncached(&".".repeat(100_000), None).await,
        Err(AuthError::Malformed(_))
    ));
}
