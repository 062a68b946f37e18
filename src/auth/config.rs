//! The `[auth]` section of `config/gateway.toml`: raw serde types and the
//! validated [`AuthSettings`].
//!
//! ```toml
//! [auth]
//! leeway_secs = 30              # default 30, at most 60
//! token_cache_capacity = 100000 # verified tokens kept (0 disables the cache)
//! max_token_bytes = 8192        # longer tokens are refused before any crypto
//!
//! [[auth.issuers]]
//! issuer = "https://demo-issuer.onewindow.local"
//! audiences = ["onewindow"]
//! algorithms = ["ES256"]
//! jwks_file = "certs/demo-issuer.jwks.json"
//!
//! [[auth.issuers]]
//! issuer = "https://idp.example.gov"
//! audiences = ["onewindow"]
//! algorithms = ["RS256", "ES256"]
//! jwks_url = "https://idp.example.gov/.well-known/jwks.json"
//! jwks_ca_file = "certs/idp-ca.pem"   # optional, added to the system roots
//! refresh_secs = 300                  # background refresh period
//! unknown_kid_cooldown_secs = 30      # at most one refetch per cooldown
//! max_stale_secs = 86400              # keys older than this are unusable
//! fetch_timeout_secs = 10
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::config::toolkit::Fields;
use crate::config::{ConfigError, ConfigErrors};

/// Largest accepted leeway.
pub const MAX_LEEWAY_SECS: u64 = 60;
const MAX_MAX_TOKEN_BYTES: usize = 64 * 1024;

/// `[auth]` as written in gateway.toml. The lead embeds it in the gateway's
/// raw config (`#[serde(default)] auth: RawAuth`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Clock leeway in seconds (default 30, max 60).
    pub leeway_secs: Option<u64>,
    /// Verified-token cache capacity (default 100000; 0 disables).
    pub token_cache_capacity: Option<u64>,
    /// Largest accepted token in bytes (default 8192).
    pub max_token_bytes: Option<usize>,
    /// Trusted issuers.
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
}

/// One `[[auth.issuers]]` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// Pinned algorithms (asymmetric only).
    pub algorithms: Vec<String>,
    /// Local JWKS file (relative to the config dir).
    pub jwks_file: Option<PathBuf>,
    /// HTTPS URL of the JWKS.
    pub jwks_url: Option<String>,
    /// Extra CA certificates (PEM) trusted for `jwks_url`.
    pub jwks_ca_file: Option<PathBuf>,
    /// Background refresh period for `jwks_url`.
    pub refresh_secs: Option<u64>,
    /// Minimum time between two refetches caused by unknown `kid`s.
    pub unknown_kid_cooldown_secs: Option<u64>,
    /// Keys older than this (issuer unreachable) are no longer used.
    pub max_stale_secs: Option<u64>,
    /// Admin roles (`platform-admin`, `department-admin`, `auditor`) this
    /// issuer's tokens may carry; other roles in its tokens are ignored.
    /// Default: every role when this is the only issuer, none otherwise.
    pub roles: Option<Vec<String>>,
    /// Timeout of one JWKS fetch.
    pub fetch_timeout_secs: Option<u64>,
}

/// Validated `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Clock leeway for `exp`, `nbf`, `iat`.
    pub leeway: Duration,
    /// Verified-token cache capacity (0: no cache).
    pub token_cache_capacity: u64,
    /// Longest accepted token.
    pub max_token_bytes: usize,
    /// Trusted issuers, unique by `issuer`.
    pub issuers: Vec<IssuerSettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            leeway: Duration::from_secs(30),
            token_cache_capacity: 100_000,
            max_token_bytes: 8 * 1024,
            issuers: Vec::new(),
        }
    }
}

/// One validated issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted audiences (non-empty).
    pub audiences: Vec<String>,
    /// Pinned algorithms (non-empty, asymmetric).
    pub algorithms: Vec<Algorithm>,
    /// Where the keys come from.
    pub jwks: JwksSource,
    /// Admin roles its tokens may carry (others are dropped at verification).
    pub roles: Vec<crate::auth::Role>,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A local file, read at start.
    File(PathBuf),
    /// An HTTPS URL, fetched at start and refreshed.
    Url(UrlSource),
}

/// A JWKS served over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlSource {
    /// The full URL (for logs).
    pub url: String,
    /// Host name or IP literal (TLS server name).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query sent in the request line.
    pub path_and_query: String,
    /// Extra trusted CA file (PEM).
    pub ca_file: Option<PathBuf>,
    /// Background refresh period.
    pub refresh: Duration,
    /// Minimum time between unknown-kid refetches.
    pub unknown_kid_cooldown: Duration,
    /// Longest time keys are used after the last successful fetch.
    pub max_stale: Duration,
    /// Timeout of one fetch (connect + TLS + response).
    pub fetch_timeout: Duration,
}

impl Default for UrlSource {
    /// The one statement of the JWKS-over-HTTPS timing defaults (the address
    /// fields are filled from `jwks_url`).
    fn default() -> Self {
        Self {
            url: String::new(),
            host: String::new(),
            port: 443,
            path_and_query: "/".into(),
            ca_file: None,
            refresh: Duration::from_secs(300),
            unknown_kid_cooldown: Duration::from_secs(30),
            max_stale: Duration::from_secs(24 * 3600),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

impl AuthSettings {
    /// Validates `raw`. Relative paths are resolved against `base_dir` (the
    /// directory of gateway.toml). JWKS files are not required to exist yet
    /// (the demo issuer writes its own at first start); they are read by
    /// [`crate::auth::Authenticator::start`].
    pub fn from_raw(raw: RawAuth, file: &Path, base_dir: &Path) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let d = Self::default();
        let mut f = Fields::new(file, "auth", &mut errors);
        let leeway_secs = f.in_range(
            "leeway_secs",
            raw.leeway_secs,
            0..=MAX_LEEWAY_SECS,
            d.leeway.as_secs(),
        );
        let max_token_bytes = f.in_range(
            "max_token_bytes",
            raw.max_token_bytes,
            256..=MAX_MAX_TOKEN_BYTES,
            d.max_token_bytes,
        );
        let mut issuers = Vec::new();
        let mut seen = HashSet::new();
        let only_one = raw.issuers.len() == 1;
        for (i, r) in raw.issuers.into_iter().enumerate() {
            let at = |f: &str| format!("auth.issuers[{i}].{f}");
            if !seen.insert(r.issuer.clone()) {
                errors.push(ConfigError::new(
                    file,
                    at("issuer"),
                    format!("issuer `{}` is configured twice", r.issuer),
                    "keep one [[auth.issuers]] entry per issuer",
                ));
            }
            let roles = match &r.roles {
                None if only_one => crate::auth::Role::ALL.to_vec(),
                None => Vec::new(),
                Some(names) => names
                    .iter()
                    .filter_map(|n| {
                        let role = crate::auth::Role::from_name(n);
                        if role.is_none() {
                            errors.push(ConfigError::new(
                                file,
                                at("roles"),
                                format!("unknown role `{n}`"),
                                "use platform-admin, department-admin or auditor",
                            ));
                        }
                        role
                    })
                    .collect(),
            };
            if let Some(mut s) = issuer_from_raw(r, file, base_dir, &at, &mut errors) {
                s.roles = roles;
                issuers.push(s);
            }
        }
        errors.into_result(AuthSettings {
            leeway: Duration::from_secs(leeway_secs),
            token_cache_capacity: raw.token_cache_capacity.unwrap_or(d.token_cache_capacity),
            max_token_bytes,
            issuers,
        })
    }
}

fn issuer_from_raw(
    r: RawIssuer,
    file: &Path,
    base_dir: &Path,
    at: &dyn Fn(&str) -> String,
    errors: &mut ConfigErrors,
) -> Option<IssuerSettings> {
    let before = errors.0.len();
    if r.issuer.is_empty() || r.issuer.chars().any(char::is_control) {
        errors.push(ConfigError::new(
            file,
            at("issuer"),
            "the issuer must be a non-empty printable string",
            "set it to the exact `iss` value of the issuer's tokens",
        ));
    }
    if r.audiences.is_empty() || r.audiences.iter().any(String::is_empty) {
        errors.push(ConfigError::new(
            file,
            at("audiences"),
            "at least one non-empty audience is required",
            "list the `aud` values meant for this gateway, e.g. [\"onewindow\"]",
        ));
    }
    let mut algorithms = Vec::new();
    for a in &r.algorithms {
        match a.parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
                errors.push(ConfigError::new(
                    file,
                    at("algorithms"),
                    format!("`{a}` is a shared-secret algorithm"),
                    "use asymmetric algorithms only (ES256, ES384, RS256.., PS256.., EdDSA)",
                ))
            }
            Ok(alg) => {
                if !algorithms.contains(&alg) {
                    algorithms.push(alg);
                }
            }
            Err(_) => errors.push(ConfigError::new(
                file,
                at("algorithms"),
                format!("unknown or refused algorithm `{a}`"),
                "use ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512 or EdDSA",
            )),
        }
    }
    if r.algorithms.is_empty() {
        errors.push(ConfigError::new(
            file,
            at("algorithms"),
            "no algorithm is pinned",
            "list the algorithms this issuer signs with, e.g. [\"ES256\"]",
        ));
    }
    let url_only = [
        ("jwks_ca_file", r.jwks_ca_file.is_some()),
        ("refresh_secs", r.refresh_secs.is_some()),
        (
            "unknown_kid_cooldown_secs",
            r.unknown_kid_cooldown_secs.is_some(),
        ),
        ("max_stale_secs", r.max_stale_secs.is_some()),
        ("fetch_timeout_secs", r.fetch_timeout_secs.is_some()),
    ];
    let jwks = match (r.jwks_file, r.jwks_url) {
        (Some(path), None) => {
            for (name, set) in url_only {
                if set {
                    errors.push(ConfigError::new(
                        file,
                        at(name),
                        "only meaningful with jwks_url",
                        format!("remove {name} or use jwks_url instead of jwks_file"),
                    ));
                }
            }
            Some(JwksSource::File(base_dir.join(path)))
        }
        (None, Some(url)) => parse_url(&url, file, at, errors).map(|(host, port, pq)| {
            let d = UrlSource::default();
            let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
            let src = UrlSource {
                url: url.clone(),
                host,
                port,
                path_and_query: pq,
                ca_file: r.jwks_ca_file.map(|p| base_dir.join(p)),
                refresh: secs(r.refresh_secs, d.refresh),
                unknown_kid_cooldown: secs(r.unknown_kid_cooldown_secs, d.unknown_kid_cooldown),
                max_stale: secs(r.max_stale_secs, d.max_stale),
                fetch_timeout: secs(r.fetch_timeout_secs, d.fetch_timeout),
            };
            for (name, d) in [
                ("refresh_secs", src.refresh),
                ("fetch_timeout_secs", src.fetch_timeout),
                ("unknown_kid_cooldown_secs", src.unknown_kid_cooldown),
            ] {
                if d.is_zero() {
                    errors.push(ConfigError::new(
                        file,
                        at(name),
                        "must be at least 1 second",
                        format!("set {name} to a positive number of seconds"),
                    ));
                }
            }
            if src.max_stale < src.refresh {
                errors.push(ConfigError::new(
                    file,
                    at("max_stale_secs"),
                    "shorter than refresh_secs: keys would expire between two refreshes",
                    "set max_stale_secs to several times refresh_secs",
                ));
            }
            JwksSource::Url(src)
        }),
        (Some(_), Some(_)) | (None, None) => {
            errors.push(ConfigError::new(
                file,
                at("jwks_file"),
                "exactly one of jwks_file and jwks_url is required",
                "give either a local JWKS file or the issuer's HTTPS JWKS URL",
            ));
            None
        }
    };
    if errors.0.len() != before {
        return None;
    }
    Some(IssuerSettings {
        issuer: r.issuer,
        audiences: r.audiences,
        algorithms,
        jwks: jwks?,
        roles: Vec::new(),
    })
}

/// `https://host[:port]/path` -> (host, port, path_and_query).
fn parse_url(
    url: &str,
    file: &Path,
    at: &dyn Fn(&str) -> String,
    errors: &mut ConfigErrors,
) -> Option<(String, u16, String)> {
    let bad = |errors: &mut ConfigErrors, why: &str| {
        errors.push(ConfigError::new(
            file,
            at("jwks_url"),
            format!("`{url}`: {why}"),
            "give an absolute https:// URL, e.g. https://idp.example.gov/jwks.json",
        ));
        None
    };
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => return bad(errors, "not a valid URL"),
    };
    if uri.scheme_str() != Some("https") {
        return bad(errors, "only https is allowed");
    }
    let Some(auth) = uri.authority() else {
        return bad(errors, "no host");
    };
    if auth.as_str().contains('@') {
        return bad(errors, "user info is not allowed");
    }
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return bad(errors, "no host");
    }
    let pq = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_string());
    Some((host.to_string(), auth.port_u16().unwrap_or(443), pq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_toml;

    #[derive(Deserialize)]
    struct Doc {
        auth: RawAuth,
    }

    fn load(text: &str) -> Result<AuthSettings, ConfigErrors> {
        let file = Path::new("gateway.toml");
        let doc: Doc = parse_toml(file, text).map_err(ConfigErrors::from)?;
        AuthSettings::from_raw(doc.auth, file, Path::new("/etc/ow"))
    }

    #[test]
    fn example_loads_with_defaults() {
        let s = load(
            r#"
[auth]
[[auth.issuers]]
issuer = "https://demo-issuer.onewindow.local"
audiences = ["onewindow"]
algorithms = ["ES256"]
jwks_file = "certs/demo-issuer.jwks.json"
[[auth.issuers]]
issuer = "https://idp"
audiences = ["onewindow"]
algorithms = ["RS256", "ES256"]
jwks_url = "https://127.0.0.1:8444/keys"
refresh_secs = 60
"#,
        )
        .unwrap();
        assert_eq!(s.leeway, Duration::from_secs(30));
        assert_eq!(s.max_token_bytes, 8192);
        assert_eq!(
            s.issuers[0].jwks,
            JwksSource::File(PathBuf::from("/etc/ow/certs/demo-issuer.jwks.json"))
        );
        let JwksSource::Url(u) = &s.issuers[1].jwks else {
            panic!("url expected")
        };
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("127.0.0.1", 8444, "/keys")
        );
        assert_eq!(u.refresh, Duration::from_secs(60));
    }

    #[test]
    fn refuses_bad_values_naming_fields() {
        let err = load(
            r#"
[auth]
leeway_secs = 120
[[auth.issuers]]
issuer = "a"
audiences = []
algorithms = ["HS256", "none"]
jwks_url = "http://idp/keys"
"#,
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "auth.leeway_secs",
            "auth.issuers[0].audiences",
            "auth.issuers[0].algorithms",
            "auth.issuers[0].jwks_url",
        ] {
            assert!(fields.contains(&f), "{f} missing from {err}");
        }
    }

    #[test]
    fn refuses_both_or_neither_source_and_unknown_keys() {
        let both = r#"
[auth]
[[auth.issuers]]
issuer = "a"
audiences = ["x"]
algorithms = ["ES256"]
jwks_file = "a.json"
jwks_url = "https://a/k"
"#;
        assert!(load(both).is_err());
        let neither = r#"
[auth]
[[auth.issuers]]
issuer = "a"
audiences = ["x"]
algorithms = ["ES256"]
"#;
        assert!(load(neither).is_err());
        let unknown = "[auth]\nleway_secs = 3\n";
        let err = load(unknown).unwrap_err();
        assert_eq!(err.0[0].field, "leway_secs");
    }
}
