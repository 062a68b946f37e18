//! Assembly: load every configuration file into a validated snapshot, start
//! the audit writer, the simulated departments and the listeners, and stop
//! them in order. `main.rs` and the integration tests both go through here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::adapter::ssrf::{Scheme, SystemResolver, check_target};
use crate::adapter::{AdapterRegistry, AdapterSet, AllowList, CheckedTarget, DepartmentAdapter};
use crate::admin::AdminPlane;
use crate::audit::{AuditLog, AuditSettings, RawAudit, WriterHandle};
use crate::auth::{AuthSettings, Authenticator, DemoIssuer, Grants, KnownNames, RawAuth};
use crate::cache::{CacheSettings, SharedCache};
use crate::config::gateway::{RawDemo, RawLimits, RawPaths, RawServer};
use crate::config::{ConfigError, ConfigErrors, Datasets, GatewaySettings, parse_toml};
use crate::metrics::Metrics;
use crate::pipeline::DataPlane;
use crate::protect::{
    DepartmentProtection, Protection, RateLimitSettings, RawDepartmentProtection, RawRateLimits,
};
use crate::scenario::Scenarios;
use crate::state::State;
use crate::upstream::{DepartmentClient, PinnedTarget};

/// The whole gateway.toml, including the sections other modules own.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    paths: RawPaths,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    rate_limits: RawRateLimits,
    #[serde(default)]
    departments: BTreeMap<String, RawDepartmentFull>,
    #[serde(default)]
    demo: RawDemo,
    #[serde(default)]
    cluster: crate::cluster::RawCluster,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDepartmentFull {
    title: Option<String>,
    #[serde(default)]
    allow_upstream: Vec<String>,
    #[serde(default)]
    protect: RawDepartmentProtection,
}

/// `[cache]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    max_bytes: u64,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Command-line overrides of gateway.toml.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`: plain data-plane listener.
    pub listen: Option<SocketAddr>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `--tls-listen` (tests use port 0).
    pub tls_listen: Option<Option<SocketAddr>>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--redis URL`: cluster mode (`""` turns a configured cluster off).
    pub redis: Option<String>,
    /// `--no-demo`: do not start the simulated departments (another node
    /// runs them).
    pub no_demo: bool,
    /// `--node NAME`: this node's name in cluster mode.
    pub node: Option<String>,
}

/// Everything loaded from disk and validated, before anything is started.
#[derive(Debug)]
pub struct Loaded {
    /// gateway.toml.
    pub settings: GatewaySettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[audit]`.
    pub audit: AuditSettings,
    /// `[cache]`.
    pub cache: CacheSettings,
    /// `[rate_limits]`.
    pub rate_limits: RateLimitSettings,
    /// `[departments.*.protect]`.
    pub protect: BTreeMap<String, DepartmentProtection>,
    /// `[departments.*.allow_upstream]`.
    pub allow_lists: HashMap<String, AllowList>,
    /// datasets.toml.
    pub datasets: Datasets,
    /// scenarios/.
    pub scenarios: Scenarios,
    /// clients.toml.
    pub grants: Grants,
    /// adapters/.
    pub adapters: AdapterSet,
    /// `[cluster]` (cluster mode when present).
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

/// The project root for a gateway.toml path: the parent of its folder.
pub fn root_of(config: &Path) -> PathBuf {
    config
        .parent()
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn read(file: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(file).map_err(|e| {
        ConfigError::new(
            file,
            "(file)",
            format!("cannot read: {e}"),
            "check the path (see [paths] in gateway.toml) and permissions",
        )
        .into()
    })
}

/// Reads and validates every configuration file. Collects as many problems as
/// it can; each names the file, the field and the fix.
pub fn load(config: &Path, o: &Overrides) -> Result<Loaded, ConfigErrors> {
    let root = root_of(config);
    let text = read(config)?;
    let raw: RawFile = parse_toml(config, &text)?;
    let mut errors = ConfigErrors::default();
    let mut departments_raw = BTreeMap::new();
    let mut protect_raw = BTreeMap::new();
    for (name, d) in raw.departments {
        departments_raw.insert(
            name.clone(),
            crate::config::gateway::RawDepartment {
                title: d.title,
                allow_upstream: d.allow_upstream,
            },
        );
        protect_raw.insert(name, d.protect);
    }
    let gw = crate::config::RawGateway {
        server: raw.server,
        limits: raw.limits,
        paths: raw.paths,
        departments: departments_raw,
        demo: raw.demo,
    };
    let mut settings = GatewaySettings::from_raw(gw, config, &root)?;
    if let Some(a) = o.listen {
        settings.server.listen = Some(a);
    }
    if let Some(a) = o.admin_listen {
        settings.server.admin_listen = Some(a);
    }
    if let Some(a) = o.tls_listen {
        settings.server.listen_tls = a;
    }
    if let Some(d) = &o.data_dir {
        settings.server.data_dir = d.clone();
    }
    if o.no_demo {
        settings.demo.enabled = false;
    }
    let cluster = crate::cluster::ClusterSettings::from_raw(
        &raw.cluster,
        o.redis.as_deref(),
        o.node.as_deref(),
        config,
    )
    .map_err(|e| errors.0.extend(e.0));
    let auth = AuthSettings::from_raw(raw.auth, config, &root).map_err(|e| errors.0.extend(e.0));
    let audit = AuditSettings::from_raw(raw.audit, config).map_err(|e| errors.0.extend(e.0));
    let rate_limits = RateLimitSettings::from_raw(&raw.rate_limits, config, "rate_limits")
        .map_err(|e| errors.0.extend(e.0));
    let mut protect = BTreeMap::new();
    let mut allow_lists = HashMap::new();
    for (name, p) in protect_raw {
        match DepartmentProtection::from_raw(&p, config, &format!("departments.{name}.protect")) {
            Ok(p) => {
                protect.insert(name.clone(), p);
            }
            Err(e) => errors.0.extend(e.0),
        }
        let d = &settings.departments[&name];
        match AllowList::from_raw(
            &d.allow_upstream,
            config,
            &format!("departments.{name}.allow_upstream"),
        ) {
            Ok(a) => {
                allow_lists.insert(name, a);
            }
            Err(e) => errors.0.extend(e.0),
        }
    }
    let datasets_text = read(&settings.paths.datasets)?;
    let datasets = Datasets::from_toml(&settings.paths.datasets, &datasets_text, &|d| {
        settings.departments.contains_key(d)
    })?;
    let scenarios =
        Scenarios::load_dir(&settings.paths.scenarios, &datasets).map_err(|e| errors.0.extend(e.0));
    let known = KnownNames {
        datasets: datasets.iter().map(|d| d.name.clone()).collect(),
        scenarios: scenarios
            .as_ref()
            .map(|s| s.names().map(str::to_string).collect())
            .unwrap_or_default(),
        departments: settings
            .departments
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
    };
    let grants =
        Grants::load(&settings.paths.clients, &known, &datasets).map_err(|e| errors.0.extend(e.0));
    let adapters = AdapterSet::load_dir(
        &settings.paths.adapters,
        &datasets,
        &AdapterRegistry::builtin(),
        &|var| std::env::var(var).ok(),
    )
    .map_err(|e| errors.0.extend(e.0));
    if let Ok(adapters) = &adapters {
        for a in adapters.iter() {
            if !settings.departments.contains_key(&a.department) {
                errors.push(ConfigError::new(
                    settings
                        .paths
                        .adapters
                        .join(format!("{}.toml", a.department)),
                    "department",
                    format!(
                        "department `{}` is not declared in gateway.toml",
                        a.department
                    ),
                    "add [departments.NAME] to gateway.toml or remove the adapter file",
                ));
            }
        }
    }
    let max_entry_life = datasets
        .iter()
        .map(|d| d.ttl + d.max_stale)
        .max()
        .unwrap_or(Duration::from_secs(300));
    let cache = CacheSettings {
        max_bytes: raw.cache.max_bytes.max(1024),
        max_entry_life,
    };
    match (
        auth,
        audit,
        rate_limits,
        scenarios,
        grants,
        adapters,
        cluster,
    ) {
        (
            Ok(auth),
            Ok(audit),
            Ok(rate_limits),
            Ok(scenarios),
            Ok(grants),
            Ok(adapters),
            Ok(cluster),
        ) if errors.is_empty() => Ok(Loaded {
            settings,
            auth,
            audit,
            cache,
            rate_limits,
            protect,
            allow_lists,
            datasets,
            scenarios,
            grants,
            adapters,
            cluster,
        }),
        _ => Err(errors),
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
    let checked: CheckedTarget = check_target(&adapter.target, allow, &SystemResolver)
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
        let connect = loaded
            .protect
            .get(&a.department)
            .map_or(Duration::from_secs(1), |p| p.timeouts.connect);
        match department_client(a, &allow, connect, &loaded.settings.paths.root).await {
            Ok(c) => {
                upstreams.insert(a.department.clone(), c);
            }
            Err(e) => errors.push(ConfigError::new(
                loaded
                    .settings
                    .paths
                    .adapters
                    .join(format!("{}.toml", a.department)),
                "base_url",
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

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Certificates or keys could not be made or read.
    #[error("{0}")]
    Certs(#[from] crate::certs::CertError),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The demo issuer key could not be made.
    #[error("demo issuer: {0}")]
    Issuer(#[from] crate::auth::AuthError),
    /// Cluster mode could not be prepared.
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Just `[server]` and `[demo]` of gateway.toml, read leniently: what the CLI
/// needs before (or without) a full load.
#[derive(Deserialize, Default)]
struct Peek {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    demo: RawDemo,
    #[serde(default)]
    audit: RawAudit,
}

fn peek(config: &Path) -> Option<Peek> {
    let text = std::fs::read_to_string(config).ok()?;
    toml::from_str::<Peek>(&text).ok()
}

/// The data and certs directories named by gateway.toml (defaults when it
/// cannot be read); `data_dir` overrides the first.
pub fn dirs(config: &Path, data_dir: Option<&Path>) -> (PathBuf, PathBuf) {
    let root = root_of(config);
    let server = peek(config).map(|p| p.server).unwrap_or_default();
    let data = data_dir.map_or_else(|| root.join(&server.data_dir), Path::to_path_buf);
    (data, root.join(&server.certs_dir))
}

/// The audit log directory named by gateway.toml (`[audit] dir` under the
/// data dir), for the offline `audit` commands.
pub fn audit_dir(config: &Path, data_dir: &Path) -> PathBuf {
    let raw = peek(config).map(|p| p.audit).unwrap_or_default();
    match AuditSettings::from_raw(raw, config) {
        Ok(s) => s.resolve_dir(data_dir),
        Err(_) => data_dir.join("audit"),
    }
}

/// Generates what the shipped config needs before it can load: the demo
/// issuer key (whose JWKS `[auth]` trusts) and the development TLS certificate.
/// Returns notes for the operator (what was generated).
pub fn prepare_dev_material(config: &Path) -> Result<Vec<String>, StartError> {
    let mut notes = Vec::new();
    // A file that cannot be read or parsed is reported properly by load().
    let Some(peek) = peek(config) else {
        return Ok(notes);
    };
    let root = root_of(config);
    let certs_dir = root.join(&peek.server.certs_dir);
    if peek.demo.enabled {
        let (_, generated) = DemoIssuer::load_or_generate(&certs_dir)?;
        if generated {
            notes.push(format!(
                "generated the demo token issuer key in {}",
                certs_dir.display()
            ));
        }
    }
    if peek.server.dev_certs && !peek.server.listen_tls.is_empty() {
        let cert = root.join(&peek.server.tls_cert);
        let key = root.join(&peek.server.tls_key);
        if crate::certs::ensure_dev_server_cert(&certs_dir, &cert, &key, false)? {
            notes.push(format!(
                "generated a development TLS certificate {} (CA {})",
                cert.display(),
                crate::certs::dev_ca_path(&certs_dir).display()
            ));
        }
    }
    Ok(notes)
}

/// A running gateway: its listeners' addresses and the handles to stop it.
pub struct Running {
    /// TLS data-plane address.
    pub tls_addr: Option<SocketAddr>,
    /// Plain data-plane address.
    pub plain_addr: Option<SocketAddr>,
    /// Admin address.
    pub admin_addr: Option<SocketAddr>,
    /// Simulated departments' addresses.
    pub demo_addrs: BTreeMap<String, SocketAddr>,
    /// The data plane (tests read its cache and state).
    pub data: Arc<DataPlane>,
    /// The admin plane (SIGHUP reloads through it).
    pub admin: Arc<AdminPlane>,
    /// Cluster mode: this node's membership.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    shutdown: CancellationToken,
    listeners: Vec<tokio::task::JoinHandle<()>>,
    writer: WriterHandle,
    demo_shutdown: CancellationToken,
}

impl Running {
    /// Loads the configuration, generates missing development material,
    /// starts the simulated departments (when configured), the audit writer
    /// and the listeners.
    pub async fn start(config: &Path, overrides: Overrides) -> Result<Self, StartError> {
        for note in prepare_dev_material(config)? {
            tracing::info!("{note}");
        }
        let mut loaded = load(config, &overrides)?;
        let shutdown = CancellationToken::new();
        let demo_shutdown = CancellationToken::new();
        let mut demo_addrs = BTreeMap::new();
        if loaded.settings.demo.enabled {
            for (name, addr) in &loaded.settings.demo.departments {
                let Some(sim) = crate::demo::Sim::for_department(name) else {
                    continue;
                };
                let bound = crate::demo::start(sim, *addr, demo_shutdown.clone())
                    .await
                    .map_err(|source| StartError::Bind {
                        addr: *addr,
                        source,
                    })?;
                demo_addrs.insert(name.clone(), bound);
            }
        }
        let cluster = match loaded.cluster.clone() {
            Some(cs) => {
                let port = loaded
                    .settings
                    .server
                    .listen_tls
                    .or(loaded.settings.server.listen)
                    .map(|a| a.port());
                let node = cs
                    .node
                    .clone()
                    .unwrap_or_else(|| crate::cluster::config::default_node(port));
                // Each node keeps its own audit chain; its records name it.
                loaded.audit.node = Some(node.clone());
                Some(crate::cluster::Cluster::new(
                    &cs,
                    &node,
                    &loaded.rate_limits,
                    loaded.protect.iter().map(|(k, v)| (k.as_str(), v)),
                )?)
            }
            None => None,
        };
        let (audit, writer) = AuditLog::open(
            loaded.audit.clone(),
            &loaded.settings.server.data_dir,
            &loaded.settings.server.certs_dir,
        )
        .await?;
        let cache = Arc::new(SharedCache::new(&loaded.cache));
        let settings_audit = loaded.audit.clone();
        let settings = loaded.settings.clone();
        let state = Arc::new(ArcSwap::from_pointee(build_state(loaded, &shutdown).await?));
        let metrics = Arc::new(Metrics::new(Some(crate::metrics::Runtime {
            state: state.clone(),
            audit: audit.clone(),
            cache: cache.clone(),
            cluster: cluster.clone(),
        })));
        let data = Arc::new(
            DataPlane::new(
                state.clone(),
                audit.clone(),
                cache.clone(),
                metrics.clone(),
                crate::audit::DenyAggregator::from_settings(&settings_audit),
            )
            .with_cluster(cluster.clone()),
        );
        let admin = Arc::new(
            AdminPlane::new(
                state.clone(),
                audit.clone(),
                cache,
                metrics,
                config.to_path_buf(),
                overrides,
                shutdown.clone(),
            )
            .with_cluster(cluster.clone()),
        );
        if let Some(c) = &cluster {
            let weak = Arc::downgrade(&admin);
            let applier: std::sync::Weak<dyn crate::cluster::Applier> = weak;
            c.start(applier);
            tracing::info!(node = c.node(), redis = c.link.url(), "cluster mode");
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let limits = settings.limits.clone();
        let drain = settings.server.drain_timeout;
        let mut listeners = Vec::new();
        let mut tls_addr = None;
        if let Some(addr) = settings.server.listen_tls {
            let tls = crate::server::tls_config(
                &settings.server.tls_cert,
                &settings.server.tls_key,
                settings.server.client_ca.as_deref(),
                settings.server.client_cert_required,
            )?;
            let l = bind(addr).await?;
            tls_addr = l.local_addr().ok();
            listeners.push(tokio::spawn(crate::server::serve(
                l,
                Some(tls),
                data.clone(),
                limits.clone(),
                shutdown.clone(),
                drain,
            )));
        }
        let mut plain_addr = None;
        if let Some(addr) = settings.server.listen {
            let l = bind(addr).await?;
            plain_addr = l.local_addr().ok();
            listeners.push(tokio::spawn(crate::server::serve(
                l,
                None,
                data.clone(),
                limits.clone(),
                shutdown.clone(),
                drain,
            )));
        }
        let mut admin_addr = None;
        if let Some(addr) = settings.server.admin_listen {
            let l = bind(addr).await?;
            admin_addr = l.local_addr().ok();
            listeners.push(tokio::spawn(crate::server::serve(
                l,
                None,
                admin.clone(),
                limits.clone(),
                shutdown.clone(),
                drain,
            )));
        }
        // Housekeeping: bounded limiter memory, folded refusals to the audit log.
        {
            let state = state.clone();
            let data = data.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tick.tick() => {
                            state.load().protect.maintain();
                            if let Some(c) = &data.cluster() {
                                c.limits.maintain();
                            }
                            data.flush_aggregates().await;
                        }
                    }
                }
            });
        }
        Ok(Self {
            tls_addr,
            plain_addr,
            admin_addr,
            demo_addrs,
            data,
            admin,
            cluster,
            shutdown,
            listeners,
            writer,
            demo_shutdown,
        })
    }

    /// Stops accepting, drains in-flight requests (bounded by the drain
    /// deadline), then closes the audit log with a final signed checkpoint.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for l in self.listeners {
            let _ = l.await;
        }
        self.data.flush_aggregates().await;
        if let Some(c) = &self.cluster {
            c.stop().await;
        }
        self.data.state.load().auth.stop();
        if let Err(e) = self.writer.shutdown().await {
            tracing::error!(error = %e, "audit log did not close cleanly");
        }
        self.demo_shutdown.cancel();
    }
}
