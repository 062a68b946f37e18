//! Compact JWS with detached payload (RFC 7515 Appendix F), EdDSA only, and
//! the JWK Set of OKP/Ed25519 public keys (RFC 8037) it is verified with.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::SignatureError;

/// One public key of the JWKS: `{"kty":"OKP","crv":"Ed25519","x","kid","alg","use"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type; `OKP` for Ed25519.
    pub kty: String,
    /// Curve; `Ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// The 32-byte public key, base64url without padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Key id: the RFC 7638 thumbprint of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// The JWK of an Ed25519 public key, with its thumbprint as `kid`.
    pub fn ed25519(key: &VerifyingKey) -> Self {
        let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
        Self {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            kid: Some(thumbprint(&x)),
            x: Some(x),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
        }
    }

    /// The Ed25519 key, if this is one.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        if self.kty != "OKP" || self.crv.as_deref() != Some("Ed25519") {
            return None;
        }
        if self.alg.as_deref().is_some_and(|a| a != "EdDSA") {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(self.x.as_deref()?).ok()?;
        VerifyingKey::from_bytes(&raw.try_into().ok()?).ok()
    }
}

/// RFC 7638 thumbprint of an OKP/Ed25519 key: SHA-256 over
/// `{"crv":"Ed25519","kty":"OKP","x":"<x>"}`, base64url.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A JWK Set (RFC 7517 section 5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys; the current signing key first.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// The key with `kid`.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

/// The protected header the gateway writes. Field order is fixed: the header
/// is carried base64url-encoded, so verifiers never re-serialise it.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
}

/// Signs `payload` (the canonical bytes): `BASE64URL(header) + ".." +
/// BASE64URL(Ed25519(header_b64 + "." + BASE64URL(payload)))`.
pub fn sign_detached(key: &SigningKey, kid: &str, payload: &[u8]) -> String {
    let header = serde_json::to_vec(&Header { alg: "EdDSA", kid }).unwrap_or_default();
    let h = URL_SAFE_NO_PAD.encode(header);
    let input = format!("{h}.{}", URL_SAFE_NO_PAD.encode(payload));
    let sig = key.sign(input.as_bytes());
    format!("{h}..{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// Verifies a compact detached JWS over `payload` with a key from `jwks`.
/// Only `alg = "EdDSA"` is accepted, whatever the header says; `crit` and
/// `b64` are refused (the payload is always base64url-encoded).
pub fn verify_detached(jws: &str, payload: &[u8], jwks: &Jwks) -> Result<(), SignatureError> {
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SignatureError::Malformed(
            "expected three '.'-separated parts".into(),
        ));
    };
    if !p.is_empty() {
        return Err(SignatureError::Malformed(
            "the payload part must be empty (detached)".into(),
        ));
    }
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| SignatureError::Malformed("header is not base64url".into()))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header_bytes)
        .map_err(|_| SignatureError::Malformed("header is not a JSON object".into()))?;
    match header.get("alg") {
        Some(serde_json::Value::String(a)) if a == "EdDSA" => {}
        Some(serde_json::Value::String(a)) => return Err(SignatureError::Algorithm(a.clone())),
        Some(other) => return Err(SignatureError::Algorithm(other.to_string())),
        None => return Err(SignatureError::Malformed("header has no `alg`".into())),
    }
    for forbidden in ["crit", "b64", "jku", "jwk", "x5u", "x5c"] {
        if header.contains_key(forbidden) {
            return Err(SignatureError::HeaderParameter(forbidden.into()));
        }
    }
    let Some(serde_json::Value::String(kid)) = header.get("kid") else {
        return Err(SignatureError::Malformed(
            "header has no string `kid`".into(),
        ));
    };
    let jwk = jwks
        .find(kid)
        .ok_or_else(|| SignatureError::UnknownKey(kid.clone()))?;
    let key = jwk
        .verifying_key()
        .ok_or_else(|| SignatureError::BadKey(kid.clone()))?;
    let sig_bytes: [u8; 64] = URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| SignatureError::Malformed("signature is not 64 base64url bytes".into()))?;
    let input = format!("{h}.{}", URL_SAFE_NO_PAD.encode(payload));
    key.verify_strict(input.as_bytes(), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (SigningKey, Jwks, String) {
        let k = SigningKey::from_bytes(&[7u8; 32]);
        let jwk = Jwk::ed25519(&k.verifying_key());
        let kid = jwk.kid.clone().unwrap();
        (k, Jwks { keys: vec![jwk] }, kid)
    }

    #[test]
    fn round_trip_and_tamper() {
        let (k, jwks, kid) = key();
        let jws = sign_detached(&k, &kid, br#"{"a":1}"#);
        assert!(jws.contains(".."));
        verify_detached(&jws, br#"{"a":1}"#, &jwks).unwrap();
        assert_eq!(
            verify_detached(&jws, br#"{"a":2}"#, &jwks),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn thumbprint_matches_rfc8037_example() {
        // RFC 8037 appendix A.3.
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        assert_eq!(thumbprint(x), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn other_algorithms_and_attached_payloads_are_refused() {
        let (_, jwks, kid) = key();
        let none = format!(
            "{}..",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#))
        );
        assert_eq!(
            verify_detached(&none, b"{}", &jwks),
            Err(SignatureError::Algorithm("none".into()))
        );
        let crit = format!(
            "{}..AA",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"EdDSA","kid":"{kid}","b64":false}}"#))
        );
        assert_eq!(
            verify_detached(&crit, b"{}", &jwks),
            Err(SignatureError::HeaderParameter("b64".into()))
        );
        assert!(matches!(
            verify_detached("a.b.c", b"{}", &jwks),
            Err(SignatureError::Malformed(_))
        ));
    }
}
