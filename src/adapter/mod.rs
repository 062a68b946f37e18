//! Adapters: pure translation between canonical requests and each
//! department's own API.
//!
//! An adapter builds the department call ([`UpstreamRequest`]) from a
//! [`CanonicalRequest`] and maps the department's reply back into the
//! dataset's canonical [`Record`]. It never touches the network: the upstream
//! client sends what the adapter built and hands the reply back.
//!
//! Each department has one adapter file (`adapters/<department>.toml`, or the
//! same schema as TOML/JSON in `PUT /admin/adapters/{department}`). Its `kind`
//! picks the adapter implementation from an [`AdapterRegistry`] (River-style:
//! unknown kinds and leftover keys are refused); compiling the file against the
//! canonical schema yields a [`DepartmentAdapter`]; all of them together form an
//! [`AdapterSet`], swapped atomically with the rest of the configuration.
//!
//! Flow per dataset read:
//! 1. `set.for_dataset(name)` -> the department's adapter;
//! 2. `adapter.build_request(&canonical)` -> method, path+query (base path
//!    included), headers (upstream auth included), body;
//! 3. the upstream client sends it to `adapter.target` (after [`ssrf`] checks);
//! 4. `adapter.map_response(dataset, reply)` -> canonical record or an
//!    [`AdapterError`].

mod compile;
pub mod error;
mod field;
pub mod rest_json;
pub mod soap_xml;
pub mod spec;
pub mod sql;
pub mod ssrf;
pub mod subject_paths;
pub mod template;
pub(crate) mod xml;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{ConfigError, ConfigErrors, Datasets};

pub use error::AdapterError;
pub use spec::{AdapterSpec, CompileContext, CompiledKind, KindContext};
pub use ssrf::{AllowList, CheckedTarget, UpstreamTarget};
pub use template::{Placeholder, Target, Template};

/// Most bytes of an adapter file accepted (admin PUT, console try-it).
pub const MAX_ADAPTER_BYTES: usize = 256 * 1024;

/// One canonical read, as the pipeline knows it after authorisation.
#[derive(Debug, Clone, Copy)]
pub struct CanonicalRequest<'a> {
    /// Canonical dataset name.
    pub dataset: &'a str,
    /// The subject id for this dataset (already checked against the dataset's
    /// subject rules).
    pub subject: &'a str,
    /// Subjects by kind (`uscc`, `guardian_id`, ...). For a plain dataset read
    /// the pipeline should put the dataset's own subject kind here, so
    /// `{subject.<kind>}` works in both cases.
    pub subjects: &'a BTreeMap<String, String>,
    /// The caller's declared, granted purpose.
    pub purpose: &'a str,
    /// `X-Case-Id`, if sent.
    pub case_id: Option<&'a str>,
    /// `X-End-User`, if sent.
    pub end_user: Option<&'a str>,
}

/// The department call an adapter built.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// HTTP method.
    pub method: http::Method,
    /// Origin-form path and query, the target's base path included.
    pub path_and_query: String,
    /// Headers to send (content type, accept, SOAPAction, upstream auth marked
    /// sensitive, templated headers). The upstream client adds `Host`,
    /// `Content-Length` and its hygiene headers.
    pub headers: HeaderMap,
    /// Body (empty for none).
    pub body: bytes::Bytes,
}

/// A department reply, as the upstream client received it.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamReply<'a> {
    /// Status.
    pub status: http::StatusCode,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// Body (already size-capped by the client).
    pub body: &'a [u8],
}

/// A canonical record: canonical field name -> value.
pub type Record = serde_json::Map<String, serde_json::Value>;

/// One adapter kind's compiled translation for one department.
///
/// Object-safe; implementations are immutable after compile and shared
/// between requests.
pub trait Adapter: Send + Sync + fmt::Debug {
    /// The kind name (`rest-json`, `soap-xml`).
    fn kind(&self) -> &'static str;

    /// Builds the department call for `req.dataset`. Errors are about the
    /// request's inputs (missing or unsafe values) or an unknown dataset.
    fn build_request(&self, req: &CanonicalRequest<'_>) -> Result<UpstreamRequest, AdapterError>;

    /// Maps the department's reply for `dataset` into a canonical record.
    fn map_response(&self, dataset: &str, reply: UpstreamReply<'_>)
    -> Result<Record, AdapterError>;
}

/// How the gateway authenticates to a department.
#[derive(Debug, Clone)]
pub struct UpstreamAuth {
    /// Header carrying the secret, and the secret (marked sensitive, so it is
    /// never printed by `Debug` nor indexed by HPACK).
    pub header: Option<(HeaderName, HeaderValue)>,
    /// The environment variable the secret came from (for messages).
    pub secret_env: Option<String>,
    /// Client certificate (PEM) for mTLS to the department, relative to the
    /// config root; the upstream client loads it.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub client_key: Option<PathBuf>,
}

/// How the gateway reaches a department.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Over HTTP(S) at the file's `base_url` (kinds `rest-json`, `soap-xml`).
    Http(UpstreamTarget),
    /// Through its exchange database (kind `sql`): the connection and the
    /// compiled queries the department side runs.
    Sql(Arc<sql::SqlEndpoint>),
}

/// A department's compiled adapter: everything the pipeline needs to call it.
#[derive(Debug)]
pub struct DepartmentAdapter {
    /// Department name (the adapter file's name).
    pub department: String,
    /// Adapter kind.
    pub kind: &'static str,
    /// Where the department lives: an HTTP base URL (syntax-checked; run
    /// [`ssrf::check_target`] before connecting) or an exchange database.
    pub endpoint: Endpoint,
    /// Upstream authentication, if any.
    pub upstream_auth: Option<UpstreamAuth>,
    /// Datasets this adapter serves, sorted.
    pub datasets: Vec<String>,
    /// Where the department's pass-through paths name a subject.
    pub subject_paths: subject_paths::SubjectPaths,
    /// Caller headers the proxy route passes on besides
    /// [`crate::forward::FORWARDED_ALWAYS`] (`forward_headers`, checked).
    pub forward_headers: Vec<http::HeaderName>,
    /// Subject kinds its templates name as `{subject.<kind>}`, sorted: the
    /// co-subjects a department call (and so its cache entry) depends on.
    pub subject_kinds_used: Vec<String>,
    adapter: Box<dyn Adapter>,
}

impl DepartmentAdapter {
    /// Assembles a compiled adapter (used by [`AdapterSpec::compile`]).
    pub fn new(
        department: String,
        kind: &'static str,
        endpoint: Endpoint,
        upstream_auth: Option<UpstreamAuth>,
        mut datasets: Vec<String>,
        adapter: Box<dyn Adapter>,
    ) -> Self {
        datasets.sort();
        datasets.dedup();
        Self {
            department,
            kind,
            endpoint,
            upstream_auth,
            datasets,
            subject_paths: subject_paths::SubjectPaths::default(),
            forward_headers: Vec::new(),
            subject_kinds_used: Vec::new(),
            adapter,
        }
    }

    /// Sets the subject kinds its templates use (`{subject.<kind>}`).
    pub fn with_subject_kinds_used(mut self, mut kinds: Vec<String>) -> Self {
        kinds.sort();
        kinds.dedup();
        self.subject_kinds_used = kinds;
        self
    }

    /// Sets the caller headers the proxy route passes on (already checked
    /// with [`crate::forward::check_declared`]).
    pub fn with_forward_headers(mut self, headers: Vec<http::HeaderName>) -> Self {
        self.forward_headers = headers;
        self
    }

    /// The HTTP target, for departments reached over HTTP.
    pub fn http_target(&self) -> Option<&UpstreamTarget> {
        match &self.endpoint {
            Endpoint::Http(t) => Some(t),
            Endpoint::Sql(_) => None,
        }
    }

    /// The same adapter with declared subject paths.
    pub fn with_subject_paths(mut self, paths: subject_paths::SubjectPaths) -> Self {
        self.subject_paths = paths;
        self
    }

    /// True when this adapter serves `dataset`.
    pub fn serves(&self, dataset: &str) -> bool {
        self.datasets
            .binary_search_by(|d| d.as_str().cmp(dataset))
            .is_ok()
    }

    /// The kind-specific adapter.
    pub fn adapter(&self) -> &dyn Adapter {
        self.adapter.as_ref()
    }

    /// Builds the department call, upstream auth header included.
    pub fn build_request(
        &self,
        req: &CanonicalRequest<'_>,
    ) -> Result<UpstreamRequest, AdapterError> {
        if !self.serves(req.dataset) {
            return Err(AdapterError::UnknownDataset(req.dataset.to_string()));
        }
        let mut out = self.adapter.build_request(req)?;
        if let Some(UpstreamAuth {
            header: Some((name, value)),
            ..
        }) = &self.upstream_auth
        {
            out.headers.insert(name.clone(), value.clone());
        }
        Ok(out)
    }

    /// Maps the department's reply into a canonical record.
    pub fn map_response(
        &self,
        dataset: &str,
        reply: UpstreamReply<'_>,
    ) -> Result<Record, AdapterError> {
        if !self.serves(dataset) {
            return Err(AdapterError::UnknownDataset(dataset.to_string()));
        }
        self.adapter.map_response(dataset, reply)
    }
}

/// Compiles one kind's section of an adapter file. `section` holds every key
/// of the file except `department`, `kind`, `base_url` and `upstream_auth`;
/// the kind refuses keys it does not know. A kind that brings its own
/// endpoint (`sql`) returns it in [`CompiledKind::endpoint`]; the others are
/// reached at the file's `base_url`.
pub type CompileFn = fn(
    &KindContext<'_>,
    serde_json::Map<String, serde_json::Value>,
) -> Result<CompiledKind, ConfigErrors>;

/// Adapter kinds by name. New kinds plug in with [`AdapterRegistry::register`].
#[derive(Debug, Clone)]
pub struct AdapterRegistry {
    kinds: BTreeMap<&'static str, CompileFn>,
}

impl Default for AdapterRegistry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl AdapterRegistry {
    /// No kinds at all.
    pub fn empty() -> Self {
        Self {
            kinds: BTreeMap::new(),
        }
    }

    /// The built-in kinds: `rest-json`, `soap-xml` and `sql`.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        r.register(rest_json::KIND, rest_json::compile);
        r.register(soap_xml::KIND, soap_xml::compile);
        r.register(sql::KIND, sql::compile);
        r
    }

    /// Adds or replaces a kind.
    pub fn register(&mut self, kind: &'static str, compile: CompileFn) {
        self.kinds.insert(kind, compile);
    }

    /// The kind's static name and compile function.
    pub fn get(&self, kind: &str) -> Option<(&'static str, CompileFn)> {
        self.kinds.get_key_value(kind).map(|(k, f)| (*k, *f))
    }

    /// Known kind names, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}

/// All compiled adapters, by department and by dataset. Cheap to clone;
/// changes build a new set (copy-on-write) for an atomic swap.
#[derive(Debug, Clone, Default)]
pub struct AdapterSet {
    by_department: BTreeMap<String, Arc<DepartmentAdapter>>,
    by_dataset: HashMap<String, Arc<DepartmentAdapter>>,
}

impl AdapterSet {
    /// A set from compiled adapters (a later one replaces an earlier one of the
    /// same department).
    pub fn from_adapters(adapters: impl IntoIterator<Item = DepartmentAdapter>) -> Self {
        let mut by_department = BTreeMap::new();
        for a in adapters {
            by_department.insert(a.department.clone(), Arc::new(a));
        }
        Self::index(by_department)
    }

    fn index(by_department: BTreeMap<String, Arc<DepartmentAdapter>>) -> Self {
        let mut by_dataset = HashMap::new();
        for a in by_department.values() {
            for d in &a.datasets {
                by_dataset.insert(d.clone(), a.clone());
            }
        }
        Self {
            by_department,
            by_dataset,
        }
    }

    /// A copy with `adapter` registered (replacing the department's old one).
    pub fn with(&self, adapter: DepartmentAdapter) -> Self {
        let mut m = self.by_department.clone();
        m.insert(adapter.department.clone(), Arc::new(adapter));
        Self::index(m)
    }

    /// A copy without `department`'s adapter.
    pub fn without(&self, department: &str) -> Self {
        let mut m = self.by_department.clone();
        m.remove(department);
        Self::index(m)
    }

    /// The adapter serving `dataset`.
    pub fn for_dataset(&self, dataset: &str) -> Option<&Arc<DepartmentAdapter>> {
        self.by_dataset.get(dataset)
    }

    /// The adapter of `department`.
    pub fn department(&self, department: &str) -> Option<&Arc<DepartmentAdapter>> {
        self.by_department.get(department)
    }

    /// All adapters, sorted by department.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<DepartmentAdapter>> {
        self.by_department.values()
    }

    /// Number of departments with an adapter.
    pub fn len(&self) -> usize {
        self.by_department.len()
    }

    /// True when no adapter is registered.
    pub fn is_empty(&self) -> bool {
        self.by_department.is_empty()
    }

    /// Loads and compiles every `*.toml` in `dir`; each file's stem is the
    /// department it must declare. Collects the problems of all files.
    pub fn load_dir(
        dir: &Path,
        datasets: &Datasets,
        registry: &AdapterRegistry,
        secret: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut adapters = Vec::new();
        let files = crate::config::read_toml_dir(dir, &mut errors)?.ok_or_else(|| {
            ConfigError::new(
                dir,
                "(directory)",
                "the adapters directory does not exist",
                "create it or point [paths] adapters at the right place",
            )
        })?;
        for f in files {
            let cx = CompileContext {
                file: &f.path,
                expected_department: &f.stem,
                datasets,
                registry,
                secret,
            };
            match AdapterSpec::from_toml(&f.path, &f.text).and_then(|s| s.compile(&cx)) {
                Ok(a) => adapters.push(a),
                Err(e) => errors.0.extend(e.0),
            }
        }
        errors.into_result(Self::from_adapters(adapters))
    }
}
