//! Identity and access: bearer JWT verification against per-issuer JWKS,
//! a verified-token cache, the [`Principal`], client grants from
//! `config/clients.toml`, attribution headers and the demo issuer.
//!
//! The pipeline calls, in order:
//! 1. [`Authenticator::authenticate`] with the `Authorization` header and the
//!    SHA-256 of the peer's client certificate (mTLS) -> `Arc<Principal>`;
//! 2. [`Attribution::from_headers`] -> purpose / end user / case id;
//! 3. [`Grants::client`] with `principal.sub()`, then
//!    [`ClientGrants::check_purpose`], [`ClientGrants::check_dataset`] (and
//!    [`FieldFilter::filter`] on the record), [`ClientGrants::check_scenario`]
//!    or [`ClientGrants::check_proxy`]; admin handlers use
//!    [`Principal::require_role`] / [`Principal::require_department_admin`].

pub mod approval;
mod attribution;
mod cache;
mod config;
mod demo;
mod error;
mod grants;
mod jwks;
mod jwt;
mod principal;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

pub use approval::Approval;
pub(crate) use attribution::check_value;
pub use attribution::{Attribution, MAX_ATTRIBUTION_BYTES};
pub use config::{
    AuthSettings, IssuerSettings, JwksSource, MAX_LEEWAY_SECS, RawAuth, RawIssuer, UrlSource,
};
pub use demo::{DEMO_AUDIENCE, DEMO_ISSUER, DemoIssuer};
pub use error::{AccessError, AttributionError, AttributionProblem, AuthError, Detail};
pub use grants::{
    CatalogView, ClientGrants, DatasetGrantView, FieldFilter, Grants, KnownNames, ProxyGrant,
    ProxyGrantView,
};
pub use principal::{Principal, Role};

use cache::TokenCache;
use jwks::IssuerKeys;
use jwt::{Issuer, Verifier};

/// A source of wall-clock time in Unix seconds; injected so tests can move
/// time without sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Verifies bearer tokens. Cheap to clone (one `Arc`); background JWKS
/// refresh tasks stop when the last clone is dropped or the shutdown token
/// given to [`Authenticator::start`] fires.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: Verifier,
    cache: Arc<TokenCache>,
    max_token_bytes: usize,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "issuers",
                &self.inner.verifier.issuers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Loads every issuer's keys (reads JWKS files, fetches JWKS URLs) and
    /// spawns the background refresh of URL issuers. Call before the
    /// listener opens; any issuer whose keys cannot be loaded fails the start
    /// (so a reload with an unreachable issuer keeps the old config).
    pub async fn start(
        settings: &AuthSettings,
        shutdown: &CancellationToken,
    ) -> Result<Self, AuthError> {
        Self::start_with_clock(settings, shutdown, Arc::new(SystemClock)).await
    }

    /// [`Authenticator::start`] with an injected clock (tests, benches).
    pub async fn start_with_clock(
        settings: &AuthSettings,
        shutdown: &CancellationToken,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthError> {
        let cache = Arc::new(TokenCache::new(
            settings.token_cache_capacity,
            clock.clone(),
        ));
        let cancel = shutdown.child_token();
        let mut issuers = HashMap::new();
        for s in &settings.issuers {
            let c = Arc::downgrade(&cache);
            // Keys removed or replaced at the issuer: drop every cached
            // verification, so no token stays valid on a withdrawn key.
            let on_change = Box::new(move || {
                if let Some(c) = c.upgrade() {
                    c.clear();
                }
            });
            let keys = Arc::new(IssuerKeys::new(s.clone(), clock.clone(), on_change)?);
            keys.reload()
                .await
                .map_err(|e| AuthError::setup(format!("issuer {}: {}", s.issuer, e.detail())))?;
            keys.spawn_refresh(cancel.clone());
            issuers.insert(
                s.issuer.clone(),
                Issuer::new(keys, settings.leeway.as_secs()),
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                verifier: Verifier {
                    issuers,
                    leeway_secs: settings.leeway.as_secs(),
                    clock: clock.clone(),
                },
                cache,
                max_token_bytes: settings.max_token_bytes,
                clock,
                cancel,
                hits: std::sync::atomic::AtomicU64::new(0),
                misses: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// Authenticates one request.
    ///
    /// `authorization` is the request's `Authorization` header (the caller
    /// refuses repeated headers); `peer_cert_sha256` is the SHA-256 of the
    /// DER client certificate when the connection presented one. A token seen
    /// before is answered from the cache (hash + lookup + `exp` and binding
    /// checks, no crypto).
    pub async fn authenticate(
        &self,
        authorization: Option<&http::HeaderValue>,
        peer_cert_sha256: Option<&[u8; 32]>,
    ) -> Result<Arc<Principal>, AuthError> {
        let inner = &*self.inner;
        let raw = jwt::bearer_bytes(authorization, inner.max_token_bytes)?;
        // Size-bounded above; a hit is byte-identical to a token that passed
        // every check, so the hot path only hashes and looks up.
        let key = cache::token_key(raw);
        if let Some(p) = inner.cache.get(&key) {
            if inner.clock.now_unix() < p.exp() {
                jwt::check_binding(p.cnf_x5t_s256(), peer_cert_sha256)?;
                inner
                    .hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(p);
            }
            // Past `exp`: drop it and verify afresh, so the leeway rules are
            // the same as for a token never seen.
            inner.cache.remove(&key);
        }
        inner
            .misses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (token, parts) = jwt::check_token(raw)?;
        let p = Arc::new(
            inner
                .verifier
                .verify(token, parts, peer_cert_sha256)
                .await?,
        );
        if inner.clock.now_unix() < p.exp() {
            inner.cache.insert(key, p.clone());
        }
        Ok(p)
    }

    /// True when the request's bearer token is in the verified-token cache
    /// (hash + lookup, no crypto): such a caller is answered without
    /// verification, so the per-address failed-authentication block need not
    /// stop it.
    pub fn is_cached(&self, authorization: Option<&http::HeaderValue>) -> bool {
        jwt::bearer_bytes(authorization, self.inner.max_token_bytes)
            .is_ok_and(|t| self.inner.cache.get(&cache::token_key(t)).is_some())
    }

    /// Verifies a bare token without the cache (benchmarks, diagnostics).
    pub async fn verify_uncached(
        &self,
        token: &str,
        peer_cert_sha256: Option<&[u8; 32]>,
    ) -> Result<Principal, AuthError> {
        if token.len() > self.inner.max_token_bytes {
            return Err(AuthError::malformed("token too long"));
        }
        let (token, parts) = jwt::check_token(token.as_bytes())?;
        self.inner
            .verifier
            .verify(token, parts, peer_cert_sha256)
            .await
    }

    /// Reloads one issuer's keys now (file re-read or URL fetch). On failure
    /// the last good keys stay in place.
    pub async fn refresh_issuer(&self, issuer: &str) -> Result<(), AuthError> {
        match self.inner.verifier.issuers.get(issuer) {
            Some(i) => i.keys.reload().await,
            None => Err(AuthError::setup(format!("unknown issuer `{issuer}`"))),
        }
    }

    /// Per issuer: whether its keys are usable now, and their age in seconds
    /// (the readiness detail).
    pub fn key_freshness(&self) -> Vec<(String, bool, Option<u64>)> {
        let mut v: Vec<_> = self
            .inner
            .verifier
            .issuers
            .iter()
            .map(|(name, i)| {
                let (fresh, age) = i.keys.freshness();
                (name.clone(), fresh, age)
            })
            .collect();
        v.sort();
        v
    }

    /// Token-cache hits and misses since start (metrics).
    pub fn cache_hits_misses(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.inner.hits.load(Relaxed),
            self.inner.misses.load(Relaxed),
        )
    }

    /// The configured issuers (metrics labels come from configuration).
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.inner.verifier.issuers.keys().map(String::as_str)
    }

    /// How many HTTPS JWKS fetches this issuer has made (metrics, tests);
    /// `None` for an unknown issuer.
    pub fn jwks_fetches(&self, issuer: &str) -> Option<u64> {
        self.inner
            .verifier
            .issuers
            .get(issuer)
            .map(|i| i.keys.fetches())
    }

    /// Number of verified tokens in the cache (metrics).
    pub fn cached_tokens(&self) -> u64 {
        self.inner.cache.len()
    }

    /// Stops the background refresh tasks (also done on drop).
    pub fn stop(&self) {
        self.inner.cancel.cancel();
    }
}
