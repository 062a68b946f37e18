//! The demo issuer: an ES256 key generated on first start, whose public JWKS
//! the shipped config trusts, and which `onewindow token` uses to mint tokens.
//!
//! Files in `<certs_dir>`: `demo-issuer.key.pem` (PKCS#8, mode 0600, never
//! committed) and `demo-issuer.jwks.json` (public; `kid` is the RFC 7638
//! thumbprint of the key).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};

use super::error::AuthError;

/// The demo issuer's `iss`.
pub const DEMO_ISSUER: &str = "https://demo-issuer.onewindow.local";
/// The audience of demo tokens.
pub const DEMO_AUDIENCE: &str = "onewindow";
const KEY_FILE: &str = "demo-issuer.key.pem";
const JWKS_FILE: &str = "demo-issuer.jwks.json";

/// The demo issuer's signing key.
pub struct DemoIssuer {
    key: EncodingKey,
    kid: String,
    jwks_json: String,
}

impl std::fmt::Debug for DemoIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DemoIssuer {
    /// Path of the private key in `certs_dir`.
    pub fn key_path(certs_dir: &Path) -> PathBuf {
        certs_dir.join(KEY_FILE)
    }

    /// Path of the public JWKS in `certs_dir`.
    pub fn jwks_path(certs_dir: &Path) -> PathBuf {
        certs_dir.join(JWKS_FILE)
    }

    /// Loads the key from `certs_dir`, or generates it (P-256) when absent;
    /// (re)writes the JWKS when it is missing or does not match the key.
    /// The flag is true when a new key was generated.
    pub fn load_or_generate(certs_dir: &Path) -> Result<(Self, bool), AuthError> {
        let key_path = Self::key_path(certs_dir);
        let (pem, generated) = match std::fs::read_to_string(&key_path) {
            Ok(pem) => (pem, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(certs_dir).map_err(|e| {
                    AuthError::setup(format!("cannot create {}: {e}", certs_dir.display()))
                })?;
                let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| AuthError::setup(format!("key generation: {e}")))?;
                let pem = kp.serialize_pem();
                write_private(&key_path, pem.as_bytes())?;
                (pem, true)
            }
            Err(e) => {
                return Err(AuthError::setup(format!(
                    "cannot read {}: {e}",
                    key_path.display()
                )));
            }
        };
        warn_if_readable_by_others(&key_path);
        let issuer = Self::from_pem(&pem)
            .map_err(|e| AuthError::setup(format!("{}: {}", key_path.display(), e.detail())))?;
        let jwks_path = Self::jwks_path(certs_dir);
        if std::fs::read_to_string(&jwks_path).ok().as_deref() != Some(issuer.jwks_json.as_str()) {
            write_atomic(&jwks_path, issuer.jwks_json.as_bytes())?;
        }
        Ok((issuer, generated))
    }

    /// The issuer from a PKCS#8 PEM P-256 private key.
    pub fn from_pem(pem: &str) -> Result<Self, AuthError> {
        let kp = rcgen::KeyPair::from_pem(pem)
            .map_err(|e| AuthError::setup(format!("not a private key: {e}")))?;
        if kp.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(AuthError::setup("the demo issuer key must be ECDSA P-256"));
        }
        let raw = kp.public_key_raw();
        if raw.len() != 65 || raw[0] != 4 {
            return Err(AuthError::setup("unexpected P-256 public key encoding"));
        }
        let x = URL_SAFE_NO_PAD.encode(&raw[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&raw[33..65]);
        // RFC 7638: members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "kid": kid, "alg": "ES256", "use": "sig",
        }]});
        let jwks_json = serde_json::to_string_pretty(&jwks)
            .map_err(|e| AuthError::setup(format!("JWKS: {e}")))?
            + "\n";
        let key = EncodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| AuthError::setup(format!("signing key: {e}")))?;
        Ok(Self {
            key,
            kid,
            jwks_json,
        })
    }

    /// The key id in the JWKS and in minted tokens' headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWKS document.
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    /// Mints a token for `sub`: iss [`DEMO_ISSUER`], aud [`DEMO_AUDIENCE`],
    /// `iat`/`nbf` now, `exp` now + `ttl`, `roles` when non-empty,
    /// `department` when given.
    pub fn mint(
        &self,
        sub: &str,
        roles: &[String],
        department: Option<&str>,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = serde_json::json!({
            "iss": DEMO_ISSUER,
            "aud": DEMO_AUDIENCE,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(ttl.as_secs()),
        });
        if !roles.is_empty() {
            claims["roles"] = serde_json::json!(roles);
        }
        if let Some(d) = department {
            claims["department"] = serde_json::json!(d);
        }
        self.mint_claims(&claims)
    }

    /// Signs arbitrary `claims` with the demo key (ES256, this issuer's
    /// `kid`): for certificate-bound tokens (`cnf`) and tests.
    pub fn mint_claims(&self, claims: &serde_json::Value) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| AuthError::setup(format!("signing: {e}")))
    }

    /// The signing key (tests that craft hostile tokens).
    #[cfg(test)]
    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.key
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| AuthError::setup(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| AuthError::setup(format!("cannot write {}: {e}", path.display())))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| AuthError::setup(format!("cannot write {}: {e}", path.display())))
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "demo issuer key is readable by group/others; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
