//! `config/gateway.toml`: listeners, limits, timeouts, departments.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::toolkit::{Fields, is_name};
use super::{ConfigError, ConfigErrors};

/// Raw `gateway.toml`, as written by the operator.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// `[server]`.
    #[serde(default)]
    pub server: RawServer,
    /// `[limits]`.
    #[serde(default)]
    pub limits: RawLimits,
    /// `[paths]`.
    #[serde(default)]
    pub paths: RawPaths,
    /// `[departments.NAME]`.
    #[serde(default)]
    pub departments: BTreeMap<String, RawDepartment>,
    /// `[demo]`.
    #[serde(default)]
    pub demo: RawDemo,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// TLS data-plane listener; empty string disables it.
    pub listen_tls: String,
    /// Plain-HTTP data-plane listener (benchmarks, behind a TLS-terminating balancer).
    pub listen: Option<String>,
    /// Admin listener; empty string disables it.
    pub admin_listen: String,
    /// Server certificate chain (PEM).
    pub tls_cert: String,
    /// Server private key (PEM).
    pub tls_key: String,
    /// Generate a development CA and server certificate when the files are missing.
    pub dev_certs: bool,
    /// CA bundle (PEM) for client certificates; enables mTLS on the TLS listener.
    pub client_ca: Option<String>,
    /// Refuse TLS clients without a certificate (only with `client_ca`).
    pub client_cert_required: bool,
    /// Directory for state (audit log).
    pub data_dir: String,
    /// Directory for keys and certificates.
    pub certs_dir: String,
    /// How long in-flight requests may run after SIGTERM.
    pub drain_timeout_secs: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen_tls: "127.0.0.1:8443".into(),
            listen: None,
            admin_listen: "127.0.0.1:9090".into(),
            tls_cert: "certs/dev-server.crt".into(),
            tls_key: "certs/dev-server.key".into(),
            dev_certs: true,
            client_ca: None,
            client_cert_required: false,
            data_dir: "data".into(),
            certs_dir: "certs".into(),
            drain_timeout_secs: 15,
        }
    }
}

/// `[limits]`: protocol limits applied before anything else. Every key is
/// optional; the defaults are [`Limits::default`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request head (request line + headers), bytes; over it: 431.
    pub max_header_bytes: Option<usize>,
    /// Most header fields; over it: 431.
    pub max_headers: Option<usize>,
    /// Longest request target, bytes; over it: 414.
    pub max_uri_bytes: Option<usize>,
    /// Largest request body, bytes; over it: 413.
    pub max_body_bytes: Option<usize>,
    /// Largest department reply the gateway reads, bytes; over it: 502. The
    /// one reply cap: adapters map what the department client has read.
    pub max_reply_bytes: Option<usize>,
    /// A request head must arrive within this time, else the connection is closed.
    pub header_read_timeout_ms: Option<u64>,
    /// An idle keep-alive connection is closed after this time.
    pub idle_timeout_secs: Option<u64>,
    /// Most concurrent client connections per listener; more wait in the accept queue.
    pub max_connections: Option<usize>,
    /// HTTP/2: most concurrent streams per connection.
    pub max_concurrent_streams: Option<u32>,
}

/// `[paths]`: where the other files are, relative to the project root (the
/// parent of the folder holding gateway.toml).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPaths {
    /// Client grants.
    pub clients: String,
    /// Canonical dataset schemas.
    pub datasets: String,
    /// Scenario definitions (`*.toml`).
    pub scenarios: String,
    /// Department adapter files (`<department>.toml`).
    pub adapters: String,
}

impl Default for RawPaths {
    fn default() -> Self {
        Self {
            clients: "config/clients.toml".into(),
            datasets: "config/datasets.toml".into(),
            scenarios: "config/scenarios".into(),
            adapters: "adapters".into(),
        }
    }
}

/// `[departments.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDepartment {
    /// Human name: a string, or `{ zh = "...", en = "..." }` (scenario
    /// guides need both languages).
    pub title: Option<RawTitle>,
    /// Address classes or CIDRs its adapter may point at beyond public
    /// addresses (`loopback`, `private`, `link-local`, `10.20.0.0/16`).
    #[serde(default)]
    pub allow_upstream: Vec<String>,
}

/// A department's `title`: one string, or Chinese and English.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawTitle {
    /// One name (taken as the English one).
    Plain(String),
    /// `{ zh = "...", en = "..." }`.
    Localized(crate::lang::RawLocalized),
}

/// `[demo]`: the simulated departments, run in-process.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDemo {
    /// Start the simulated departments.
    #[serde(default)]
    pub enabled: bool,
    /// Department name -> loopback address it listens on.
    #[serde(default)]
    pub departments: BTreeMap<String, String>,
}

/// Validated server settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// TLS data-plane listener.
    pub listen_tls: Option<SocketAddr>,
    /// Plain data-plane listener.
    pub listen: Option<SocketAddr>,
    /// Admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// Server certificate chain.
    pub tls_cert: PathBuf,
    /// Server key.
    pub tls_key: PathBuf,
    /// Generate development certificates when missing.
    pub dev_certs: bool,
    /// mTLS client CA.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate.
    pub client_cert_required: bool,
    /// State directory.
    pub data_dir: PathBuf,
    /// Keys and certificates.
    pub certs_dir: PathBuf,
    /// Drain deadline on shutdown.
    pub drain_timeout: Duration,
}

/// Validated limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// See [`RawLimits::max_header_bytes`].
    pub max_header_bytes: usize,
    /// See [`RawLimits::max_headers`].
    pub max_headers: usize,
    /// See [`RawLimits::max_uri_bytes`].
    pub max_uri_bytes: usize,
    /// See [`RawLimits::max_body_bytes`].
    pub max_body_bytes: usize,
    /// See [`RawLimits::max_reply_bytes`].
    pub max_reply_bytes: usize,
    /// See [`RawLimits::header_read_timeout_ms`].
    pub header_read_timeout: Duration,
    /// See [`RawLimits::idle_timeout_secs`].
    pub idle_timeout: Duration,
    /// See [`RawLimits::max_connections`].
    pub max_connections: usize,
    /// See [`RawLimits::max_concurrent_streams`].
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    /// The one statement of the `[limits]` defaults.
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 1024 * 1024,
            max_reply_bytes: 4 * 1024 * 1024,
            header_read_timeout: Duration::from_millis(10_000),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_concurrent_streams: 128,
        }
    }
}

/// Validated department settings (the adapter comes from adapters/).
#[derive(Debug, Clone)]
pub struct DepartmentSettings {
    /// Department name.
    pub name: String,
    /// Human name (English, or the one name given).
    pub title: String,
    /// Chinese name, when given (`title = { zh, en }`); scenario guides
    /// require it for every department their parts read from.
    pub title_zh: Option<String>,
    /// Raw allow-list entries, validated by the adapter module's address policy.
    pub allow_upstream: Vec<String>,
}

/// Validated `[demo]`.
#[derive(Debug, Clone, Default)]
pub struct DemoSettings {
    /// Start the simulated departments.
    pub enabled: bool,
    /// Department name -> address.
    pub departments: BTreeMap<String, SocketAddr>,
}

/// Paths of the other config files, resolved.
#[derive(Debug, Clone)]
pub struct ConfigPaths {
    /// Project root all relative paths are resolved against.
    pub root: PathBuf,
    /// gateway.toml itself.
    pub gateway: PathBuf,
    /// clients.toml.
    pub clients: PathBuf,
    /// datasets.toml.
    pub datasets: PathBuf,
    /// scenarios folder.
    pub scenarios: PathBuf,
    /// adapters folder.
    pub adapters: PathBuf,
}

/// Everything from gateway.toml, validated.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[limits]`.
    pub limits: Limits,
    /// Resolved file locations.
    pub paths: ConfigPaths,
    /// `[departments]`, by name.
    pub departments: BTreeMap<String, DepartmentSettings>,
    /// `[demo]`.
    pub demo: DemoSettings,
}

fn addr(file: &Path, field: &str, v: &str, errors: &mut ConfigErrors) -> Option<SocketAddr> {
    if v.is_empty() {
        return None;
    }
    match v.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(ConfigError::new(
                file,
                field,
                format!("`{v}` is not an IP:port socket address"),
                "write it like 127.0.0.1:8443 or [::1]:8443 (empty string disables)",
            ));
            None
        }
    }
}

fn limits_from_raw(r: RawLimits, file: &Path, errors: &mut ConfigErrors) -> Limits {
    let d = Limits::default();
    let mut f = Fields::new(file, "limits", errors);
    let max_header_bytes = f.in_range(
        "max_header_bytes",
        r.max_header_bytes,
        8192..=1 << 20,
        d.max_header_bytes,
    );
    let header_read_ms = f.at_least(
        "header_read_timeout_ms",
        r.header_read_timeout_ms,
        100,
        millis_u64(d.header_read_timeout),
    );
    let idle_secs = f.at_least(
        "idle_timeout_secs",
        r.idle_timeout_secs,
        1,
        d.idle_timeout.as_secs(),
    );
    Limits {
        max_header_bytes,
        max_headers: f.in_range("max_headers", r.max_headers, 8..=1000, d.max_headers),
        max_uri_bytes: f.in_range(
            "max_uri_bytes",
            r.max_uri_bytes,
            256..=max_header_bytes.max(256),
            d.max_uri_bytes.min(max_header_bytes),
        ),
        max_body_bytes: f.at_least("max_body_bytes", r.max_body_bytes, 1, d.max_body_bytes),
        max_reply_bytes: f.at_least("max_reply_bytes", r.max_reply_bytes, 1, d.max_reply_bytes),
        header_read_timeout: Duration::from_millis(header_read_ms),
        idle_timeout: Duration::from_secs(idle_secs),
        max_connections: f.at_least("max_connections", r.max_connections, 1, d.max_connections),
        max_concurrent_streams: f.at_least(
            "max_concurrent_streams",
            r.max_concurrent_streams,
            1,
            d.max_concurrent_streams,
        ),
    }
}

fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl GatewaySettings {
    /// Validates raw gateway.toml. `root` is the project root for relative paths.
    pub fn from_raw(raw: RawGateway, file: &Path, root: &Path) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                root.join(p)
            }
        };
        let s = &raw.server;
        let server = ServerSettings {
            listen_tls: addr(file, "server.listen_tls", &s.listen_tls, &mut errors),
            listen: s
                .listen
                .as_deref()
                .and_then(|v| addr(file, "server.listen", v, &mut errors)),
            admin_listen: addr(file, "server.admin_listen", &s.admin_listen, &mut errors),
            tls_cert: resolve(&s.tls_cert),
            tls_key: resolve(&s.tls_key),
            dev_certs: s.dev_certs,
            client_ca: s.client_ca.as_deref().map(resolve),
            client_cert_required: s.client_cert_required,
            data_dir: resolve(&s.data_dir),
            certs_dir: resolve(&s.certs_dir),
            drain_timeout: Duration::from_secs(s.drain_timeout_secs),
        };
        if server.client_cert_required && server.client_ca.is_none() {
            errors.push(ConfigError::new(
                file,
                "server.client_cert_required",
                "client certificates are required but no CA is configured to verify them",
                "set server.client_ca to a PEM bundle, or set client_cert_required = false",
            ));
        }
        let limits = limits_from_raw(raw.limits, file, &mut errors);
        let paths = ConfigPaths {
            root: root.to_path_buf(),
            gateway: file.to_path_buf(),
            clients: resolve(&raw.paths.clients),
            datasets: resolve(&raw.paths.datasets),
            scenarios: resolve(&raw.paths.scenarios),
            adapters: resolve(&raw.paths.adapters),
        };
        let mut departments = BTreeMap::new();
        for (name, d) in raw.departments {
            if !is_name(&name) {
                errors.push(ConfigError::new(
                    file,
                    format!("departments.{name}"),
                    "department names must be lowercase letters, digits and '-'",
                    "rename the table, e.g. [departments.fire-rescue]",
                ));
            }
            let (title, title_zh) = match d.title {
                None => (name.clone(), None),
                Some(RawTitle::Plain(t)) => (t, None),
                Some(RawTitle::Localized(l)) => (
                    l.en.unwrap_or_else(|| name.clone()),
                    l.zh.filter(|z| !z.trim().is_empty()),
                ),
            };
            departments.insert(
                name.clone(),
                DepartmentSettings {
                    title,
                    title_zh,
                    name,
                    allow_upstream: d.allow_upstream,
                },
            );
        }
        let mut demo = DemoSettings {
            enabled: raw.demo.enabled,
            departments: BTreeMap::new(),
        };
        for (name, a) in raw.demo.departments {
            let field = format!("demo.departments.{name}");
            if !departments.contains_key(&name) {
                errors.push(ConfigError::new(
                    file,
                    &field,
                    format!("unknown department `{name}`"),
                    "declare it under [departments] or remove the line",
                ));
            }
            if let Some(sa) = addr(file, &field, &a, &mut errors) {
                if !sa.ip().is_loopback() {
                    errors.push(ConfigError::new(
                        file,
                        &field,
                        "simulated departments listen on loopback only",
                        "use a 127.0.0.1 address",
                    ));
                }
                demo.departments.insert(name, sa);
            }
        }
        errors.into_result(GatewaySettings {
            server,
            limits,
            paths,
            departments,
            demo,
        })
    }
}
