//! Bearer token extraction and JWT verification.
//!
//! Order of checks, cheapest first, so hostile input costs little:
//! 1. header value size, scheme, exactly one token, token size;
//! 2. structure: exactly three non-empty base64url segments;
//! 3. JOSE header: `alg` named and not `none`; no `jwk`/`jku`/`x5u`/`x5c`/
//!    `crit` (keys never come from the token);
//! 4. claims parsed (unverified) only to pick the issuer by `iss`;
//! 5. `alg` in the issuer's pinned list; key by `kid` from the configured
//!    JWKS, of the type that `alg` needs;
//! 6. signature and registered claims by jsonwebtoken with every check set
//!    explicitly; then our own `exp`/`nbf`/`iat`/`aud` checks with the
//!    injected clock, and the RFC 8705 certificate binding.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::Clock;
use super::error::AuthError;
use super::jwks::{IssuerKeys, MAX_KID_BYTES};
use super::principal::{Principal, Role};

/// Longest `sub`, `department` and role name accepted.
const MAX_CLAIM_BYTES: usize = 256;
/// Most roles read from one token.
const MAX_ROLES: usize = 16;

/// The token bytes from an `Authorization: Bearer <token>` value.
///
/// Refuses a missing header, other schemes, an empty token and tokens over
/// `max_token_bytes` (the whole value is bounded before it is scanned). The
/// characters are checked by [`check_token`], which the cache-hit path can
/// skip: a hit is byte-identical to a token that passed it.
pub(crate) fn bearer_bytes(
    authorization: Option<&http::HeaderValue>,
    max_token_bytes: usize,
) -> Result<&[u8], AuthError> {
    let Some(v) = authorization else {
        return Err(AuthError::Missing);
    };
    let bytes = v.as_bytes();
    if bytes.len() > max_token_bytes + 16 {
        return Err(AuthError::malformed(format!(
            "authorization header of {} bytes",
            bytes.len()
        )));
    }
    let (scheme, rest) = match bytes.iter().position(|b| *b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthError::malformed("scheme is not Bearer"));
    }
    let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
    let end = rest
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(start, |i| i + 1);
    let token = &rest[start..end];
    if token.is_empty() {
        return Err(AuthError::malformed("empty bearer token"));
    }
    if token.len() > max_token_bytes {
        return Err(AuthError::malformed(format!(
            "token of {} bytes",
            token.len()
        )));
    }
    Ok(token)
}

/// Bytes allowed in a compact JWS: base64url and `.`.
const TOKEN_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
        i += 1;
    }
    t
};

/// Checks a token in one pass: only base64url characters and `.`, exactly
/// three non-empty segments. Returns it as `&str` with its segments.
pub(crate) fn check_token(token: &[u8]) -> Result<(&str, [&str; 3]), AuthError> {
    let mut dots = [0usize; 2];
    let mut n = 0usize;
    for (i, b) in token.iter().enumerate() {
        if !TOKEN_BYTE[usize::from(*b)] {
            return Err(AuthError::malformed(if matches!(b, b' ' | b',') {
                "more than one token"
            } else {
                "character outside base64url in token"
            }));
        }
        if *b == b'.' {
            if n == 2 {
                return Err(AuthError::malformed("more than three segments"));
            }
            dots[n] = i;
            n += 1;
        }
    }
    if n != 2 || dots[0] == 0 || dots[1] == dots[0] + 1 || dots[1] + 1 == token.len() {
        return Err(AuthError::malformed("not three non-empty segments"));
    }
    // Only ASCII is left, so this cannot fail.
    let s = std::str::from_utf8(token).map_err(|_| AuthError::malformed("token is not ASCII"))?;
    Ok((
        s,
        [&s[..dots[0]], &s[dots[0] + 1..dots[1]], &s[dots[1] + 1..]],
    ))
}

/// The JOSE header fields we look at. Unknown fields are collected to
/// refuse the dangerous ones by name.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// Header parameters that would let the token choose its own key, or
/// extend the processing rules; all refused.
const REFUSED_HEADER_PARAMS: &[&str] = &["jwk", "jku", "x5u", "x5c", "crit", "b64"];

/// Registered and private claims we use.
#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    department: Option<String>,
    #[serde(default)]
    cnf: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// One configured issuer with its precompiled validations.
pub(crate) struct Issuer {
    pub(crate) keys: Arc<IssuerKeys>,
    validations: HashMap<Algorithm, Validation>,
}

impl Issuer {
    pub(crate) fn new(keys: Arc<IssuerKeys>, leeway_secs: u64) -> Self {
        let s = &keys.settings;
        let validations = s
            .algorithms
            .iter()
            .map(|alg| {
                // jsonwebtoken's defaults are lax (aud/iss may be absent, nbf
                // unchecked, leeway 60 s): set every knob.
                let mut v = Validation::new(*alg);
                v.algorithms = vec![*alg];
                v.leeway = leeway_secs;
                v.reject_tokens_expiring_in_less_than = 0;
                v.validate_exp = true;
                v.validate_nbf = true;
                v.validate_aud = true;
                v.set_audience(&s.audiences);
                v.set_issuer(&[&s.issuer]);
                v.sub = None;
                v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                (*alg, v)
            })
            .collect();
        Self { keys, validations }
    }
}

/// Verifies tokens against the configured issuers.
pub(crate) struct Verifier {
    pub(crate) issuers: HashMap<String, Issuer>,
    pub(crate) leeway_secs: u64,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Verifier {
    /// Full verification of a structurally checked token (see module doc).
    pub(crate) async fn verify(
        &self,
        token: &str,
        [h64, p64, _]: [&str; 3],
        peer_cert_sha256: Option<&[u8; 32]>,
    ) -> Result<Principal, AuthError> {
        let header_bytes = URL_SAFE_NO_PAD
            .decode(h64)
            .map_err(|_| AuthError::malformed("header is not base64url"))?;
        let header: JoseHeader = serde_json::from_slice(&header_bytes)
            .map_err(|_| AuthError::invalid("header is not a JOSE header"))?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::invalid("alg none"));
        }
        let alg: Algorithm = header
            .alg
            .parse()
            .map_err(|_| AuthError::invalid(format!("unknown alg `{:.16}`", header.alg)))?;
        if let Some(p) = REFUSED_HEADER_PARAMS
            .iter()
            .find(|p| header.rest.contains_key(**p))
        {
            return Err(AuthError::invalid(format!(
                "refused header parameter `{p}`"
            )));
        }
        if let Some(t) = &header.typ
            && !(t.eq_ignore_ascii_case("JWT")
                || t.eq_ignore_ascii_case("at+jwt")
                || t.eq_ignore_ascii_case("application/at+jwt"))
        {
            return Err(AuthError::invalid("typ is not JWT"));
        }
        let kid = header.kid.as_deref();
        if kid.is_some_and(|k| k.is_empty() || k.len() > MAX_KID_BYTES) {
            return Err(AuthError::invalid("kid empty or too long"));
        }

        let payload = URL_SAFE_NO_PAD
            .decode(p64)
            .map_err(|_| AuthError::malformed("payload is not base64url"))?;
        // Unverified until the signature check below: used only to pick the
        // issuer and, after verification, to build the principal.
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|e| AuthError::invalid(format!("claims: {}", serde_error_summary(&e))))?;
        let Some(issuer) = self.issuers.get(&claims.iss) else {
            return Err(AuthError::invalid(format!(
                "unknown issuer `{:.64}`",
                claims.iss
            )));
        };
        let Some(validation) = issuer.validations.get(&alg) else {
            return Err(AuthError::invalid(format!(
                "alg {alg:?} not pinned for issuer"
            )));
        };
        let key = issuer.keys.key_for(kid).await?;
        if !key.accepts(alg) {
            return Err(AuthError::invalid(format!(
                "key type does not fit alg {alg:?}"
            )));
        }
        jsonwebtoken::decode::<serde::de::IgnoredAny>(token, &key.key, validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                kind => AuthError::invalid(format!("{kind:?}")),
            },
        )?;

        // Our own time checks with the injected clock (jsonwebtoken never
        // checks `iat`).
        let now = self.clock.now_unix();
        let leeway = self.leeway_secs;
        if now >= claims.exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            return Err(AuthError::invalid("nbf in the future"));
        }
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(leeway))
        {
            return Err(AuthError::invalid("iat in the future"));
        }
        let audiences = &issuer.keys.settings.audiences;
        let aud_ok = match &claims.aud {
            Audience::One(a) => audiences.contains(a),
            Audience::Many(v) => v.iter().any(|a| audiences.contains(a)),
        };
        if !aud_ok {
            return Err(AuthError::invalid("aud not accepted"));
        }
        if !is_printable_bounded(&claims.sub) {
            return Err(AuthError::invalid("sub empty, too long or not printable"));
        }
        if claims
            .department
            .as_deref()
            .is_some_and(|d| !is_printable_bounded(d))
        {
            return Err(AuthError::invalid("department not printable or too long"));
        }
        let cnf = match &claims.cnf {
            None => None,
            Some(c) => {
                let t = c
                    .get("x5t#S256")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| AuthError::invalid("cnf without x5t#S256"))?;
                let bytes = URL_SAFE_NO_PAD
                    .decode(t)
                    .map_err(|_| AuthError::invalid("cnf.x5t#S256 not base64url"))?;
                let arr: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| AuthError::invalid("cnf.x5t#S256 not 32 bytes"))?;
                Some(arr)
            }
        };
        check_binding(cnf.as_ref(), peer_cert_sha256)?;
        let roles: Vec<Role> = claims
            .roles
            .iter()
            .flatten()
            .take(MAX_ROLES)
            .filter_map(|r| Role::from_name(r))
            // An issuer speaks only for the roles bound to it.
            .filter(|r| issuer.keys.settings.roles.contains(r))
            .collect();
        Ok(Principal::new(
            claims.sub,
            claims.iss,
            &roles,
            claims.department,
            claims.exp,
            cnf,
        ))
    }
}

/// RFC 8705: a certificate-bound token is only good on a connection that
/// presented that certificate.
pub(crate) fn check_binding(
    bound_to: Option<&[u8; 32]>,
    peer_cert_sha256: Option<&[u8; 32]>,
) -> Result<(), AuthError> {
    match (bound_to, peer_cert_sha256) {
        (None, _) => Ok(()),
        (Some(want), Some(got)) if want == got => Ok(()),
        (Some(_), _) => Err(AuthError::CertBindingMismatch),
    }
}

fn is_printable_bounded(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CLAIM_BYTES && !s.chars().any(char::is_control)
}

/// Where and what kind of JSON error, without serde's message (which may
/// quote claim values).
fn serde_error_summary(e: &serde_json::Error) -> String {
    format!("{:?} error at column {}", e.classify(), e.column())
}
