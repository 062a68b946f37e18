//! Issuer key sets (JWKS): parsing, loading from a file or an HTTPS URL,
//! background refresh, unknown-`kid` refetch with a cooldown, and the
//! max-stale rule. The current set is swapped atomically (arc-swap), so a
//! verification sees a whole old set or a whole new one.
//!
//! Keys come only from configuration: a token's `kid` is a lookup key into
//! the configured set, never a path or URL, and nothing in a token causes a
//! fetch other than the cooldown-guarded refetch of the configured URL.

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::Clock;
use super::config::{IssuerSettings, JwksSource, UrlSource};
use super::error::{AuthError, Detail};

/// Largest JWKS document accepted from a file or URL.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Longest `kid` looked up.
pub(crate) const MAX_KID_BYTES: usize = 256;
/// Smallest RSA modulus accepted (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// System CA bundles tried for `jwks_url` (first found wins); `jwks_ca_file`
/// is added to it.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// The key type of a JWK, which fixes the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    EcP256,
    EcP384,
    Rsa,
    Ed25519,
}

/// One usable verification key.
pub(crate) struct VerifyKey {
    kind: KeyKind,
    /// The JWK's own `alg`, when it states one.
    jwk_alg: Option<Algorithm>,
    /// RFC 7638 thumbprint of the key material: what "the same key" means
    /// when a JWKS is reloaded (a `kid` is only a name).
    thumbprint: String,
    pub(crate) key: DecodingKey,
}

impl VerifyKey {
    /// True when this key may verify a signature made with `alg`: the key
    /// type must match the algorithm family and curve, and the JWK's own
    /// `alg`, if given, must be exactly `alg`.
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        let kind_ok = match alg {
            Algorithm::ES256 => self.kind == KeyKind::EcP256,
            Algorithm::ES384 => self.kind == KeyKind::EcP384,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => self.kind == KeyKind::Rsa,
            Algorithm::EdDSA => self.kind == KeyKind::Ed25519,
            // Shared-secret algorithms are never accepted: JWKS keys are public.
            _ => false,
        };
        kind_ok && self.jwk_alg.is_none_or(|a| a == alg)
    }
}

/// An issuer's keys at one moment.
pub(crate) struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    /// When the set was last loaded successfully (Unix seconds).
    loaded_at: u64,
}

impl KeySet {
    /// The key for `kid`; a token without `kid` is accepted only when the set
    /// holds exactly one key.
    fn find(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        match kid {
            Some(k) => self.by_kid.get(k).cloned(),
            None if self.by_kid.len() == 1 => self.by_kid.values().next().cloned(),
            None => None,
        }
    }

    /// Same names bound to the same key material and `alg`. A key replaced
    /// under an unchanged `kid` is a different set: cached verifications
    /// made with the old key must go.
    fn same_keys(&self, other: &KeySet) -> bool {
        self.by_kid.len() == other.by_kid.len()
            && self.by_kid.iter().all(|(kid, k)| {
                other
                    .by_kid
                    .get(kid)
                    .is_some_and(|o| o.thumbprint == k.thumbprint && o.jwk_alg == k.jwk_alg)
            })
    }
}

/// Parses a JWKS document into usable verification keys. Keys that cannot
/// be used for signatures here (symmetric `oct` keys, private keys, `use`
/// other than `sig`, unknown curves, RSA under 2048 bits) are skipped; a set
/// with no usable key is an error.
pub(crate) fn parse_jwks(bytes: &[u8]) -> Result<HashMap<String, Arc<VerifyKey>>, String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
    }
    let raw: RawSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut out = HashMap::new();
    let mut skipped = Vec::new();
    for (i, v) in raw.keys.into_iter().enumerate() {
        match parse_key(v) {
            Ok((kid, key)) => {
                if out.insert(kid.clone(), Arc::new(key)).is_some() {
                    return Err(format!("duplicate kid `{kid}`"));
                }
            }
            Err(why) => skipped.push(format!("keys[{i}]: {why}")),
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(skipped = ?skipped, "JWKS keys skipped");
    }
    if out.is_empty() {
        return Err(format!("no usable signature key ({})", skipped.join("; ")));
    }
    Ok(out)
}

fn parse_key(v: serde_json::Value) -> Result<(String, VerifyKey), String> {
    if v.get("d").is_some() || v.get("p").is_some() {
        return Err("private key material in a public JWKS".into());
    }
    let jwk: Jwk = serde_json::from_value(v).map_err(|e| format!("not a JWK: {e}"))?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("`use` is not `sig`".into());
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return Err("unsupported curve".into()),
        },
        AlgorithmParameters::RSA(p) => {
            use base64::Engine as _;
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.n.trim_end_matches('='))
                .map_err(|_| "bad RSA modulus".to_string())?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return Err("RSA key shorter than 2048 bits".into());
            }
            KeyKind::Rsa
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        AlgorithmParameters::OctetKey(_) => return Err("symmetric key refused".into()),
        _ => return Err("unsupported key type".into()),
    };
    let jwk_alg = match jwk.common.key_algorithm {
        Some(a) => Some(
            a.to_string()
                .parse::<Algorithm>()
                .map_err(|_| format!("unsupported alg `{a}`"))?,
        ),
        None => None,
    };
    let kid = match &jwk.common.key_id {
        Some(k) if !k.is_empty() && k.len() <= MAX_KID_BYTES => k.clone(),
        Some(_) => return Err("kid empty or too long".into()),
        None => jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| format!("no kid and no thumbprint: {e}"))?,
    };
    let thumbprint = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| format!("no thumbprint: {e}"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok((
        kid,
        VerifyKey {
            kind,
            jwk_alg,
            thumbprint,
            key,
        },
    ))
}

/// Fetches a JWKS over HTTPS with our own rustls client.
struct Fetcher {
    src: UrlSource,
    tls: TlsConnector,
}

impl Fetcher {
    fn new(src: UrlSource) -> Result<Self, AuthError> {
        let mut roots = rustls::RootCertStore::empty();
        let mut add_file = |path: &std::path::Path, required: bool| -> Result<(), AuthError> {
            let f = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) if !required => {
                    tracing::trace!(path = %path.display(), error = %e, "no CA bundle here");
                    return Ok(());
                }
                Err(e) => {
                    return Err(AuthError::setup(format!(
                        "cannot read jwks_ca_file {}: {e}",
                        path.display()
                    )));
                }
            };
            let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(f))
                .filter_map(Result::ok)
                .collect();
            let (added, _) = roots.add_parsable_certificates(certs);
            if required && added == 0 {
                return Err(AuthError::setup(format!(
                    "no certificate in jwks_ca_file {}",
                    path.display()
                )));
            }
            Ok(())
        };
        if let Some(system) = SYSTEM_CA_BUNDLES
            .iter()
            .map(std::path::Path::new)
            .find(|p| p.exists())
        {
            add_file(system, false)?;
        }
        if let Some(ca) = &src.ca_file {
            add_file(ca, true)?;
        }
        if roots.is_empty() {
            return Err(AuthError::setup(format!(
                "no trusted CA for {}: install the system CA bundle or set jwks_ca_file",
                src.url
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AuthError::setup(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            src,
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    async fn fetch(&self) -> Result<Bytes, String> {
        match tokio::time::timeout(self.src.fetch_timeout, self.fetch_inner()).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {:?}", self.src.fetch_timeout)),
        }
    }

    async fn fetch_inner(&self) -> Result<Bytes, String> {
        let src = &self.src;
        let tcp = tokio::net::TcpStream::connect((src.host.as_str(), src.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(src.host.clone())
            .map_err(|e| format!("server name: {e}"))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let host = if src.host.contains(':') {
            format!("[{}]", src.host)
        } else {
            src.host.clone()
        };
        let authority = if src.port == 443 {
            host
        } else {
            format!("{host}:{}", src.port)
        };
        let req = http::Request::get(src.path_and_query.as_str())
            .header(http::header::HOST, authority)
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .header(http::header::USER_AGENT, "onewindow-jwks")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?;
            if resp.status() != http::StatusCode::OK {
                return Err(format!("status {}", resp.status()));
            }
            Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| format!("body: {e}"))
        }
        .await;
        conn.abort();
        result
    }
}

/// One issuer's key material and its refresh state.
pub(crate) struct IssuerKeys {
    pub(crate) settings: IssuerSettings,
    current: ArcSwapOption<KeySet>,
    fetcher: Option<Fetcher>,
    clock: Arc<dyn Clock>,
    /// Unix second before which no unknown-kid refetch may start.
    next_kid_fetch: AtomicU64,
    in_flight: AtomicBool,
    fetch_done: watch::Sender<u64>,
    fetches: AtomicU64,
    /// Called when a reload removed or replaced keys (cache invalidation).
    on_change: Box<dyn Fn() + Send + Sync>,
}

impl IssuerKeys {
    pub(crate) fn new(
        settings: IssuerSettings,
        clock: Arc<dyn Clock>,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> Result<Self, AuthError> {
        let fetcher = match &settings.jwks {
            JwksSource::File(_) => None,
            JwksSource::Url(u) => Some(Fetcher::new(u.clone())?),
        };
        Ok(Self {
            settings,
            current: ArcSwapOption::empty(),
            fetcher,
            clock,
            next_kid_fetch: AtomicU64::new(0),
            in_flight: AtomicBool::new(false),
            fetch_done: watch::Sender::new(0),
            fetches: AtomicU64::new(0),
            on_change,
        })
    }

    /// Usable keys now (loaded, and within `max_stale` for a URL issuer),
    /// and the age of the key set in seconds (readiness detail).
    pub(crate) fn freshness(&self) -> (bool, Option<u64>) {
        let age = self
            .current
            .load()
            .as_ref()
            .map(|s| self.clock.now_unix().saturating_sub(s.loaded_at));
        (self.usable().is_ok(), age)
    }

    /// Number of JWKS fetches attempted over HTTPS so far.
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn url(&self) -> Option<&UrlSource> {
        match &self.settings.jwks {
            JwksSource::Url(u) => Some(u),
            JwksSource::File(_) => None,
        }
    }

    /// Loads (file) or fetches (URL) the key set now; on success swaps it in.
    /// On failure the previous set, if any, stays in place.
    pub(crate) async fn reload(&self) -> Result<(), AuthError> {
        let bytes = match (&self.settings.jwks, &self.fetcher) {
            (JwksSource::File(path), _) => tokio::fs::read(path).await.map_err(|e| {
                AuthError::IssuerKeysUnavailable(Detail::new(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            })?,
            (JwksSource::Url(u), Some(f)) => {
                self.fetches.fetch_add(1, Ordering::Relaxed);
                f.fetch()
                    .await
                    .map_err(|e| {
                        AuthError::IssuerKeysUnavailable(Detail::new(format!("{}: {e}", u.url)))
                    })?
                    .to_vec()
            }
            (JwksSource::Url(_), None) => {
                return Err(AuthError::setup("JWKS URL without a client"));
            }
        };
        let by_kid = parse_jwks(&bytes).map_err(|e| {
            AuthError::IssuerKeysUnavailable(Detail::new(format!(
                "JWKS of {}: {e}",
                self.settings.issuer
            )))
        })?;
        let new = Arc::new(KeySet {
            by_kid,
            loaded_at: self.clock.now_unix(),
        });
        let old = self.current.swap(Some(new.clone()));
        if old.is_some_and(|o| !o.same_keys(&new)) {
            (self.on_change)();
        }
        Ok(())
    }

    /// The usable key set: present and, for a URL issuer, not older than
    /// `max_stale`.
    fn usable(&self) -> Result<Arc<KeySet>, AuthError> {
        let Some(set) = self.current.load_full() else {
            return Err(AuthError::IssuerKeysUnavailable(Detail::new(format!(
                "no keys loaded for {}",
                self.settings.issuer
            ))));
        };
        if let Some(u) = self.url() {
            let age = self.clock.now_unix().saturating_sub(set.loaded_at);
            if age > u.max_stale.as_secs() {
                return Err(AuthError::IssuerKeysUnavailable(Detail::new(format!(
                    "keys of {} are {age} s old (max_stale {} s)",
                    self.settings.issuer,
                    u.max_stale.as_secs()
                ))));
            }
        }
        Ok(set)
    }

    /// The key for `kid`. An unknown `kid` on a URL issuer triggers at most
    /// one refetch per cooldown (shared by all callers); callers arriving
    /// while that fetch runs wait for it instead of starting another.
    pub(crate) async fn key_for(&self, kid: Option<&str>) -> Result<Arc<VerifyKey>, AuthError> {
        if let Some(k) = self.usable()?.find(kid) {
            return Ok(k);
        }
        let unknown = || AuthError::invalid("no key for this kid");
        let Some(u) = self.url() else {
            return Err(unknown());
        };
        let mut done = self.fetch_done.subscribe();
        let now = self.clock.now_unix();
        let next = self.next_kid_fetch.load(Ordering::Acquire);
        let won = now >= next
            && self
                .next_kid_fetch
                .compare_exchange(
                    next,
                    now + u.unknown_kid_cooldown.as_secs(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
        if won {
            self.in_flight.store(true, Ordering::Release);
            let r = self.reload().await;
            self.in_flight.store(false, Ordering::Release);
            self.fetch_done.send_modify(|g| *g += 1);
            if let Err(e) = r {
                tracing::warn!(issuer = %self.settings.issuer, error = %e.detail(), "JWKS refetch failed");
            }
        } else if self.in_flight.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(u.fetch_timeout, done.changed()).await;
        } else {
            return Err(unknown());
        }
        self.usable()?.find(kid).ok_or_else(unknown)
    }

    /// Spawns the background refresh of a URL issuer; it stops when `cancel`
    /// fires. A failed refresh keeps the last good keys and retries after
    /// the unknown-kid cooldown (bounded by the refresh period).
    pub(crate) fn spawn_refresh(self: &Arc<Self>, cancel: CancellationToken) {
        let Some(u) = self.url() else { return };
        let (period, retry) = (u.refresh, u.unknown_kid_cooldown.min(u.refresh));
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut wait = period;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = match this.reload().await {
                    Ok(()) => period,
                    Err(e) => {
                        tracing::warn!(issuer = %this.settings.issuer, error = %e.detail(),
                            "JWKS refresh failed; keeping the last good keys");
                        retry
                    }
                };
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec_jwk(kid: &str, extra: serde_json::Value) -> serde_json::Value {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        use base64::Engine as _;
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut v = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": b.encode(&raw[1..33]), "y": b.encode(&raw[33..65]),
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    }

    #[test]
    fn parses_ec_keys_and_pins_kind_and_alg() {
        let doc = serde_json::json!({"keys": [
            ec_jwk("a", serde_json::json!({"alg": "ES256", "use": "sig"})),
            ec_jwk("b", serde_json::json!({})),
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert!(keys["a"].accepts(Algorithm::ES256));
        assert!(!keys["a"].accepts(Algorithm::ES384));
        assert!(!keys["a"].accepts(Algorithm::RS256));
        assert!(!keys["a"].accepts(Algorithm::HS256));
        assert!(keys["b"].accepts(Algorithm::ES256));
    }

    #[test]
    fn skips_symmetric_private_and_enc_keys() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            ec_jwk("priv", serde_json::json!({"d": "AAAA"})),
            ec_jwk("enc", serde_json::json!({"use": "enc"})),
            ec_jwk("ok", serde_json::json!({})),
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["ok"]);
        let only_bad = serde_json::json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]});
        assert!(parse_jwks(only_bad.to_string().as_bytes()).is_err());
        assert!(parse_jwks(b"not json").is_err());
    }

    #[test]
    fn jwk_alg_must_match() {
        let doc = serde_json::json!({"keys": [ec_jwk("a", serde_json::json!({"alg": "ES384"}))]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert!(!keys["a"].accepts(Algorithm::ES256));
    }
}
