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
use crate::upstream::DepartmentClient;

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
    /// One pooled client per department with an adapter.
    pub upstreams: HashMap<String, DepartmentClient>,
    /// Rate limits, bulkheads, breakers.
    pub protect: Arc<Protection>,
    /// Token verification.
    pub auth: Authenticator,
}
