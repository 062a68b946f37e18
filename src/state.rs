//! The configuration snapshot every request reads: validated config plus what
//! was built from it (adapters, department clients, limiters). Swapped whole
//! with `ArcSwap` on reload or adapter change, so a request sees either the
//! old snapshot or the new one, never a mix.

use std::collections::HashMap;
use std::sync::Arc;

use crate::adapter::{AdapterSet, AllowList};
use crate::auth::{Authenticator, Grants};
use crate::config::{Datasets, GatewaySettings};
use crate::protect::Protection;
use crate::scenario::Scenarios;
use crate::upstream::Upstream;

/// One configuration snapshot.
#[derive(Debug, Clone)]
pub struct State {
    /// gateway.toml.
    pub settings: GatewaySettings,
    /// Canonical datasets.
    pub datasets: Datasets,
    /// Client grants.
    pub grants: Grants,
    /// Scenarios.
    pub scenarios: Scenarios,
    /// Registered adapters.
    pub adapters: AdapterSet,
    /// Address policy per department (for adapter PUTs).
    pub allow_lists: HashMap<String, AllowList>,
    /// One pooled client (HTTP or exchange database) per department with an
    /// adapter.
    pub upstreams: HashMap<String, Upstream>,
    /// Rate limits, bulkheads, breakers.
    pub protect: Arc<Protection>,
    /// Token verification.
    pub auth: Authenticator,
}

impl State {
    /// Phases 3 and 4 of both planes: the per-address failed-authentication
    /// block (before any crypto; a token already verified costs none, so
    /// honest callers behind a flooding address are not locked out), then
    /// token verification. A failure is counted against the address; that
    /// answer stays 401, later ones from a blocked address are 429.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        conn: &crate::server::ConnInfo,
    ) -> Result<Arc<crate::auth::Principal>, crate::error::GatewayError> {
        let mut auths = headers.get_all(http::header::AUTHORIZATION).iter();
        let authorization = auths.next();
        if !self.auth.is_cached(authorization) {
            self.protect.ip_blocked(conn.peer.ip())?;
        }
        let verified = if auths.next().is_some() {
            Err(crate::auth::AuthError::malformed(
                "more than one Authorization header",
            ))
        } else {
            self.auth
                .authenticate(authorization, conn.client_cert_sha256.as_ref())
                .await
        };
        verified.map_err(|e| {
            let _ = self.protect.record_auth_failure(conn.peer.ip());
            e.into()
        })
    }
}
