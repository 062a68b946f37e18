//! The configuration snapshot every request reads: validated config plus what
//! was built from it (adapters, department clients, limiters). Swapped whole
//! with `ArcSwap` on reload or adapter change, so a request sees either the
//! old snapshot or the new one, never a mix. [`build_state`] makes one from
//! a loaded configuration.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::adapter::ssrf::{Scheme, SystemResolver, check_target};
use crate::adapter::{
    AdapterRegistry, AdapterSet, AdapterSpec, AllowList, CheckedTarget, CompileContext,
    DepartmentAdapter, Endpoint,
};
use crate::auth::{Authenticator, Grants};
use crate::config::{ConfigError, ConfigErrors, Datasets, GatewaySettings};
use crate::loader::Loaded;
use crate::protect::Protection;
use crate::scenario::Scenarios;
use crate::upstream::sql::{SqlDepartment, SqlTimeouts};
use crate::upstream::{Department, DepartmentClient, PinnedTarget};

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
    /// How to reach each department with an adapter (a pooled HTTP client
    /// in production).
    pub upstreams: HashMap<String, Arc<dyn Department>>,
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

/// Checks an adapter's upstream address against its department's policy and
/// builds the pooled client that connects only to the checked addresses.
pub async fn department_client(
    adapter: &DepartmentAdapter,
    allow: &AllowList,
    connect_timeout: Duration,
    root: &Path,
) -> Result<DepartmentClient, String> {
    let Some(target) = adapter.http_target() else {
        return Err(format!(
            "department `{}` is not reached over HTTP",
            adapter.department
        ));
    };
    let checked: CheckedTarget = check_target(target, allow, &SystemResolver)
        .await
        .map_err(|e| e.to_string())?;
    let https = checked.scheme == Scheme::Https;
    // An https department is verified against its own CA, `certs/<department>-ca.pem`
    // (no public web PKI is bundled); its optional client certificate for mTLS
    // comes from `upstream_auth`, relative to the project root.
    let tls = if https {
        let ca = root
            .join("certs")
            .join(format!("{}-ca.pem", adapter.department));
        let client_cert = adapter.upstream_auth.as_ref().and_then(|a| {
            Some((
                root.join(a.client_cert.as_ref()?),
                root.join(a.client_key.as_ref()?),
            ))
        });
        let cc = client_cert
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        Some(crate::upstream::client_tls(&ca, cc).map_err(|e| e.to_string())?)
    } else {
        None
    };
    Ok(DepartmentClient::new(
        PinnedTarget {
            https,
            host: checked.host,
            port: checked.port,
            addrs: checked.addrs,
            base_path: checked.base_path,
        },
        tls,
        connect_timeout,
    ))
}

/// Builds how the gateway reaches a department: the checked HTTP client, or
/// the exchange database's pool (kind `sql`; a SQLite file is relative to
/// `data_dir`). Either way the pipeline's protections wrap it.
pub async fn department_upstream(
    adapter: &DepartmentAdapter,
    allow: &AllowList,
    timeouts: &crate::protect::Timeouts,
    root: &Path,
    data_dir: &Path,
) -> Result<Arc<dyn Department>, String> {
    match &adapter.endpoint {
        Endpoint::Http(_) => department_client(adapter, allow, timeouts.connect, root)
            .await
            .map(|c| Arc::new(c) as Arc<dyn Department>),
        Endpoint::Sql(e) => SqlDepartment::connect(
            &adapter.department,
            e,
            data_dir,
            allow,
            SqlTimeouts {
                acquire: timeouts.connect,
                statement: timeouts.attempt,
            },
        )
        .await
        .map(|d| Arc::new(d) as Arc<dyn Department>),
    }
}

/// The field of an adapter file that says where its department is (for
/// messages about it).
pub fn endpoint_field(adapter: &DepartmentAdapter) -> &'static str {
    match adapter.endpoint {
        Endpoint::Http(_) => "base_url",
        Endpoint::Sql(_) => "database_url_env",
    }
}

/// Builds a runnable snapshot from loaded config: checks every adapter's
/// address, builds clients and limiters, starts the authenticator.
pub async fn build_state(
    loaded: Loaded,
    shutdown: &CancellationToken,
) -> Result<State, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut upstreams = HashMap::new();
    for a in loaded.adapters.iter() {
        let allow = loaded
            .allow_lists
            .get(&a.department)
            .cloned()
            .unwrap_or_default();
        let timeouts = loaded
            .protect
            .get(&a.department)
            .map(|p| p.timeouts)
            .unwrap_or_default();
        match department_upstream(
            a,
            &allow,
            &timeouts,
            &loaded.settings.paths.root,
            &loaded.settings.server.data_dir,
        )
        .await
        {
            Ok(c) => {
                upstreams.insert(a.department.clone(), c);
            }
            Err(e) => errors.push(ConfigError::new(
                loaded
                    .settings
                    .paths
                    .adapters
                    .join(format!("{}.toml", a.department)),
                endpoint_field(a),
                e,
                format!(
                    "point base_url at an allowed address, or allow it in [departments.{}] allow_upstream of gateway.toml",
                    a.department
                ),
            )),
        }
    }
    let auth = Authenticator::start(&loaded.auth, shutdown)
        .await
        .map_err(|e| {
            ConfigErrors::from(ConfigError::new(
                &loaded.settings.paths.gateway,
                "auth.issuers",
                format!("cannot load issuer keys: {e}"),
                "check jwks_file / jwks_url of each issuer",
            ))
        });
    let auth = match auth {
        Ok(a) => a,
        Err(e) => {
            errors.0.extend(e.0);
            return Err(errors);
        }
    };
    if !errors.is_empty() {
        auth.stop();
        return Err(errors);
    }
    let protect = Arc::new(Protection::new(
        &loaded.rate_limits,
        loaded.protect.iter().map(|(k, v)| (k.as_str(), v)),
    ));
    Ok(State {
        settings: loaded.settings,
        datasets: loaded.datasets,
        grants: loaded.grants,
        scenarios: loaded.scenarios,
        adapters: loaded.adapters,
        allow_lists: loaded.allow_lists,
        upstreams,
        protect,
        auth,
    })
}

/// Compiles a department's adapter file against the running configuration
/// (datasets, built-in kinds, secrets from the environment), as a PUT and a
/// try-it both do before anything is swapped or called.
pub fn compile_adapter(
    state: &State,
    department: &str,
    shown: &std::path::Path,
    spec: &AdapterSpec,
) -> Result<DepartmentAdapter, crate::error::GatewayError> {
    let registry = AdapterRegistry::builtin();
    let secret = |var: &str| std::env::var(var).ok();
    let cx = CompileContext {
        file: shown,
        expected_department: department,
        datasets: &state.datasets,
        registry: &registry,
        secret: &secret,
    };
    spec.compile(&cx)
        .map_err(crate::error::GatewayError::InvalidAdapter)
}
