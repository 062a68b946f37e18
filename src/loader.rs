//! Loading the whole configuration from disk: the complete gateway.toml
//! schema (including the sections other modules own and convert), the
//! command-line [`Overrides`], and every file gateway.toml points at
//! (datasets, scenarios, clients, adapters), validated into [`Loaded`].
//! Nothing is started here; `state::build_state` turns a [`Loaded`] into a
//! runnable snapshot.
//!
//! The loader sits above the domain modules (it reads each one's section
//! and files), while `config/` below them holds only the vocabulary they
//! share (models, `ConfigError`, the toolkit).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::adapter::{AdapterRegistry, AdapterSet, AllowList};
use crate::audit::{AuditSettings, RawAudit};
use crate::auth::{AuthSettings, Grants, KnownNames, RawAuth};
use crate::cache::CacheSettings;
use crate::config::gateway::{RawDemo, RawLimits, RawPaths, RawServer};
use crate::config::{ConfigError, ConfigErrors, Datasets, GatewaySettings, parse_toml};
use crate::protect::{
    DepartmentProtection, RateLimitSettings, RawDepartmentProtection, RawRateLimits,
};
use crate::scenario::Scenarios;

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
    title: Option<crate::config::gateway::RawTitle>,
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
    /// The wall clock approvals and the transparency view read (tests inject one).
    pub clock: Option<crate::clock::WallClock>,
    /// A case store to use instead of `<data-dir>/cases.sqlite` (tests).
    pub case_store: Option<std::sync::Arc<dyn crate::case::CaseStore>>,
    /// `--audit-witness`: overrides `[audit] witness_dir`.
    pub audit_witness: Option<PathBuf>,
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
    let raw_issuers: BTreeSet<String> = raw.auth.issuers.iter().map(|i| i.issuer.clone()).collect();
    let auth = AuthSettings::from_raw(raw.auth, config, &root).map_err(|e| errors.0.extend(e.0));
    let audit = AuditSettings::from_raw(raw.audit, config)
        .map(|mut a| {
            if let Some(w) = &o.audit_witness {
                a.witness_dir = Some(w.clone());
            }
            if let Some(w) = a.witness_dir.take() {
                a.witness_dir = Some(if w.is_absolute() { w } else { root.join(w) });
            }
            a
        })
        .map_err(|e| errors.0.extend(e.0));
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
    if let Ok(s) = &scenarios {
        s.check_department_titles(&datasets, &settings.departments, config, &mut errors);
    }
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
        issuers: raw_issuers,
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

/// Just `[server]` and `[demo]` of gateway.toml, read leniently: what the CLI
/// needs before (or without) a full load.
#[derive(Deserialize, Default)]
pub(crate) struct Peek {
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) demo: RawDemo,
    #[serde(default)]
    pub(crate) audit: RawAudit,
}

/// [`Peek`] of `config`, or `None` when it cannot be read or parsed.
pub(crate) fn peek(config: &Path) -> Option<Peek> {
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
/// `[audit]` of gateway.toml (defaults when unreadable), for the offline
/// commands; a relative `witness_dir` is resolved like the gateway does.
pub fn audit_settings(config: &Path) -> AuditSettings {
    let raw = peek(config).map(|p| p.audit).unwrap_or_default();
    let mut s = AuditSettings::from_raw(raw, config).unwrap_or_default();
    if let Some(w) = s.witness_dir.take() {
        s.witness_dir = Some(if w.is_absolute() {
            w
        } else {
            root_of(config).join(w)
        });
    }
    s
}

/// The audit log directory named by gateway.toml, for the offline commands.
pub fn audit_dir(config: &Path, data_dir: &Path) -> PathBuf {
    let raw = peek(config).map(|p| p.audit).unwrap_or_default();
    match AuditSettings::from_raw(raw, config) {
        Ok(s) => s.resolve_dir(data_dir),
        Err(_) => data_dir.join("audit"),
    }
}
