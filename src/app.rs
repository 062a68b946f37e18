//! Start and stop: from a gateway.toml path to a running gateway (the
//! simulated departments, the audit writer, the listeners, housekeeping) and
//! back down in order. Loading is `loader::load`, the runtime snapshot is
//! `state::build_state`; `main.rs` and the integration tests both start here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::adapter::sql::DatabaseSource;
use crate::adapter::{AdapterSet, Endpoint};
use crate::admin::AdminPlane;
use crate::audit::{AuditLog, WriterHandle};
use crate::auth::DemoIssuer;
use crate::cache::SharedCache;
use crate::config::{ConfigErrors, Limits};
use crate::loader::{Overrides, load, peek, root_of};
use crate::metrics::Metrics;
use crate::pipeline::DataPlane;
use crate::server::Handler;
use crate::state::build_state;

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
    /// Cluster mode could not be prepared.
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The case store could not be opened.
    #[error("case store {path}: {source}")]
    Cases {
        /// The store's file.
        path: PathBuf,
        /// The cause.
        source: crate::case::CaseError,
    },
    /// A demo exchange database could not be created.
    #[error("demo exchange database: {0}")]
    DemoExchange(String),
    /// The demo issuer key could not be made.
    #[error("demo issuer: {0}")]
    Issuer(#[from] crate::auth::AuthError),
    /// The record-signing keys could not be loaded or made.
    #[error("record-signing keys: {0}")]
    RecordKeys(#[from] crate::sharing::error::KeyError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
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

/// Creates the demo world's exchange databases (SQLite files of `sql`
/// adapters under the data dir) that are missing. Returns notes for the
/// operator.
pub async fn prepare_demo_exchanges(
    adapters: &AdapterSet,
    data_dir: &Path,
) -> Result<Vec<String>, StartError> {
    let mut notes = Vec::new();
    for a in adapters.iter() {
        let Endpoint::Sql(e) = &a.endpoint else {
            continue;
        };
        let DatabaseSource::SqliteFile(rel) = &e.source else {
            continue;
        };
        let Some(seed) = crate::demo::exchange::seed_for(&a.department) else {
            continue;
        };
        let path = data_dir.join(rel);
        if crate::demo::exchange::ensure(&path, &seed)
            .await
            .map_err(StartError::DemoExchange)?
        {
            notes.push(format!(
                "created the demo exchange database of `{}` at {}",
                a.department,
                path.display()
            ));
        }
    }
    Ok(notes)
}

/// What every listener shares: protocol limits, the shutdown signal and the
/// drain deadline.
struct Listen<'a> {
    limits: &'a Limits,
    shutdown: &'a CancellationToken,
    drain: Duration,
    connections: &'a Arc<crate::server::ConnStats>,
}

impl Listen<'_> {
    /// Binds `addr` and serves `handler` on it (over TLS when `tls` is given)
    /// in a task pushed onto `tasks`. Returns the bound address (port 0
    /// resolves here).
    async fn spawn<H: Handler>(
        &self,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: &Arc<H>,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> Result<SocketAddr, StartError> {
        let bind_error = |source| StartError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        tasks.push(tokio::spawn(crate::server::serve(
            listener,
            tls,
            handler.clone(),
            self.limits.clone(),
            self.shutdown.clone(),
            self.drain,
            self.connections.clone(),
        )));
        Ok(bound)
    }
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
        if loaded.settings.demo.enabled {
            for note in
                prepare_demo_exchanges(&loaded.adapters, &loaded.settings.server.data_dir).await?
            {
                tracing::info!("{note}");
            }
        }
        let (audit, writer) = AuditLog::open(
            loaded.audit.clone(),
            &loaded.settings.server.data_dir,
            &loaded.settings.server.certs_dir,
        )
        .await?;
        let sharing = Arc::new(crate::sharing::Accountable::start(
            &loaded.settings.server.certs_dir,
            &loaded.settings.server.data_dir,
            &audit,
            overrides.clock.clone().unwrap_or_default(),
            shutdown.clone(),
        )?);
        let index = sharing.transparency.index.clone();
        let cache = Arc::new(SharedCache::new(&loaded.cache));
        let case_store: Arc<dyn crate::case::CaseStore> = match (&overrides.case_store, &cluster) {
            (Some(s), _) => s.clone(),
            // Cluster mode: one case truth for every node.
            (None, Some(c)) => Arc::new(crate::case::RedisCaseStore::new(
                c.link.clone(),
                &c.settings().key_prefix,
            )),
            (None, None) => {
                let path = loaded.settings.server.data_dir.join("cases.sqlite");
                match crate::case::SqliteCaseStore::open(&path).await {
                    Ok(s) => Arc::new(s),
                    Err(source) => return Err(StartError::Cases { path, source }),
                }
            }
        };
        let cases = Arc::new(crate::case::Cases::new(case_store, sharing.clock.clone()));
        let settings_audit = loaded.audit.clone();
        let settings = loaded.settings.clone();
        let state = Arc::new(ArcSwap::from_pointee(build_state(loaded, &shutdown).await?));
        let connections = Arc::new(crate::server::ConnStats::default());
        let metrics = Arc::new(Metrics::new(Some(crate::metrics::Runtime {
            connections: Some(connections.clone()),
            state: state.clone(),
            audit: audit.clone(),
            cache: cache.clone(),
            cluster: cluster.clone(),
            cases: Some(cases.clone()),
        })));
        let data = Arc::new(
            DataPlane::new(
                state.clone(),
                audit.clone(),
                cache.clone(),
                metrics.clone(),
                crate::audit::DenyAggregator::from_settings(&settings_audit),
                sharing,
                cases,
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
            .with_cluster(cluster.clone())
            .with_aggregator(data.aggregator()),
        );
        admin.set_subject_index(index);
        if let Some(c) = &cluster {
            let weak = Arc::downgrade(&admin);
            let applier: std::sync::Weak<dyn crate::cluster::Applier> = weak;
            c.start(applier);
            tracing::info!(node = c.node(), redis = c.link.url(), "cluster mode");
        }
        let listen = Listen {
            limits: &settings.limits,
            shutdown: &shutdown,
            drain: settings.server.drain_timeout,
            connections: &connections,
        };
        let mut listeners = Vec::new();
        let mut tls_addr = None;
        if let Some(addr) = settings.server.listen_tls {
            let tls = crate::server::tls_config(
                &settings.server.tls_cert,
                &settings.server.tls_key,
                settings.server.client_ca.as_deref(),
                settings.server.client_cert_required,
            )?;
            tls_addr = Some(listen.spawn(addr, Some(tls), &data, &mut listeners).await?);
        }
        let mut plain_addr = None;
        if let Some(addr) = settings.server.listen {
            plain_addr = Some(listen.spawn(addr, None, &data, &mut listeners).await?);
        }
        let mut admin_addr = None;
        if let Some(addr) = settings.server.admin_listen {
            admin_addr = Some(listen.spawn(addr, None, &admin, &mut listeners).await?);
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
                            if let Some(c) = data.cluster() {
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
        self.data.sharing.transparency.index.stopped().await;
        self.data.cases.close().await;
        self.demo_shutdown.cancel();
    }
}
