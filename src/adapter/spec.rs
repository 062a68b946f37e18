//! The adapter file: raw serde schema, parsing (TOML or JSON) and compiling
//! into a [`DepartmentAdapter`].
//!
//! Common keys (every kind):
//!
//! ```toml
//! department = "market-supervision"     # must equal the file name / PUT path
//! kind = "rest-json"                    # a registered kind
//! base_url = "http://127.0.0.1:7101"    # http(s)://host[:port][/base]
//! [upstream_auth]                       # optional
//! header = "X-Api-Key"                  # header carrying the secret ...
//! secret_env = "ONEWINDOW_DEPT_MARKET_SUPERVISION__KEY"  # ... read from this variable
//! client_cert = "certs/departments/market-supervision/client.pem"  # optional mTLS pair
//! client_key = "certs/departments/market-supervision/client.key"
//! forward_headers = ["X-Api-Version"]  # optional: extra caller headers the
//!                                       # proxy route passes on (see crate::forward)
//! subject_paths = ["/licences/{subject}"]  # optional: pass-through paths naming a subject
//! subject_kind = "uscc"                 # optional: what those ids are
//! ```
//!
//! Every other key belongs to the kind (`datasets`, `soap_version`, ...), and
//! the kind refuses keys it does not know.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ssrf::UpstreamTarget;
use super::subject_paths::SubjectPaths;
use super::{Adapter, AdapterRegistry, DepartmentAdapter, UpstreamAuth};
use crate::config::datasets::is_name;
use crate::config::{ConfigError, ConfigErrors, DatasetSpec, Datasets, FieldType, parse_toml};
use crate::forward::is_reserved_header;

/// Largest adapter file accepted (TOML or JSON).
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// A parsed, not yet compiled adapter file.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSpec {
    /// The department the file declares.
    pub department: String,
    /// The adapter kind it asks for.
    pub kind: String,
    /// The department's base URL, as written (HTTP kinds; the `sql` kind
    /// names its database instead).
    pub base_url: Option<String>,
    upstream_auth: Option<RawUpstreamAuth>,
    subject_paths: Vec<String>,
    subject_kind: Option<String>,
    forward_headers: Vec<String>,
    section: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RawAdapterFile {
    department: String,
    kind: String,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    upstream_auth: Option<RawUpstreamAuth>,
    /// Pass-through paths that name a subject (`/licences/{subject}`).
    #[serde(default)]
    subject_paths: Vec<String>,
    /// What kind of id those paths carry (e.g. `uscc`).
    #[serde(default)]
    subject_kind: Option<String>,
    #[serde(default)]
    forward_headers: Vec<String>,
    // Everything else goes to the kind, which denies unknown keys.
    #[serde(flatten)]
    section: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamAuth {
    header: Option<String>,
    secret_env: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
}

/// What compiling needs besides the file.
pub struct CompileContext<'a> {
    /// The file name for messages (for a PUT, e.g. `adapters/<department>.toml`).
    pub file: &'a Path,
    /// The department the file must declare (file stem, PUT path).
    pub expected_department: &'a str,
    /// The canonical schema.
    pub datasets: &'a Datasets,
    /// Known kinds.
    pub registry: &'a AdapterRegistry,
    /// Looks up a secret by environment variable name (`std::env::var(..).ok()`
    /// in production; injected in tests).
    pub secret: &'a dyn Fn(&str) -> Option<String>,
}

/// What a kind's compile function receives.
pub struct KindContext<'a> {
    /// The file, for messages.
    pub file: &'a Path,
    /// The department (already checked).
    pub department: &'a str,
    /// The canonical schema.
    pub datasets: &'a Datasets,
    /// The target's base path, to prepend to every request path.
    pub base_path: &'a str,
    /// The upstream auth header, which templates may not set.
    pub auth_header: Option<&'a HeaderName>,
    /// Looks up a secret by environment variable name (the `sql` kind's
    /// database URL).
    pub secret: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for KindContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindContext")
            .field("file", &self.file)
            .field("department", &self.department)
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

/// A kind's compiled adapter and the datasets it serves.
#[derive(Debug)]
pub struct CompiledKind {
    /// The adapter.
    pub adapter: Box<dyn Adapter>,
    /// Datasets it serves.
    pub datasets: Vec<String>,
    /// The endpoint of a kind that brings its own (`sql`); `None` for kinds
    /// reached at the file's `base_url`.
    pub endpoint: Option<super::Endpoint>,
}

impl AdapterSpec {
    /// Parses an adapter file written in TOML.
    pub fn from_toml(file: &Path, text: &str) -> Result<Self, ConfigErrors> {
        if text.len() > MAX_SPEC_BYTES {
            return Err(too_big(file).into());
        }
        let raw: RawAdapterFile = parse_toml(file, text)?;
        Ok(Self::from_raw(raw))
    }

    /// Parses an adapter file sent as JSON (same schema).
    pub fn from_json(file: &Path, bytes: &[u8]) -> Result<Self, ConfigErrors> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(too_big(file).into());
        }
        let raw: RawAdapterFile = serde_json::from_slice(bytes).map_err(|e| {
            ConfigError::new(
                file,
                field_from_message(&e.to_string()).unwrap_or_else(|| format!("line {}", e.line())),
                format!("{e}"),
                "send an adapter file with department, kind, base_url and datasets",
            )
        })?;
        Ok(Self::from_raw(raw))
    }

    fn from_raw(raw: RawAdapterFile) -> Self {
        Self {
            department: raw.department,
            kind: raw.kind,
            base_url: raw.base_url,
            upstream_auth: raw.upstream_auth,
            subject_paths: raw.subject_paths,
            subject_kind: raw.subject_kind,
            forward_headers: raw.forward_headers,
            section: raw.section,
        }
    }

    /// Validates and compiles the file against the canonical schema.
    pub fn compile(&self, cx: &CompileContext<'_>) -> Result<DepartmentAdapter, ConfigErrors> {
        let file = cx.file;
        let mut errors = ConfigErrors::default();
        if self.department != cx.expected_department {
            errors.push(ConfigError::new(
                file,
                "department",
                format!(
                    "the file declares `{}` but belongs to `{}`",
                    self.department, cx.expected_department
                ),
                "a department's adapter file must name that department",
            ));
        } else if !is_name(&self.department) {
            errors.push(ConfigError::new(
                file,
                "department",
                "department names are lowercase letters, digits and '-'",
                "rename the department",
            ));
        }
        let kind = cx.registry.get(&self.kind);
        if kind.is_none() {
            let known: Vec<_> = cx.registry.kinds().collect();
            errors.push(ConfigError::new(
                file,
                "kind",
                format!("unknown adapter kind `{}`", self.kind),
                format!("use one of: {}", known.join(", ")),
            ));
        }
        let target = match self.base_url.as_deref().map(UpstreamTarget::parse) {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                errors.push(e.to_config_error(file, "base_url"));
                None
            }
            None => None,
        };
        let auth = match &self.upstream_auth {
            Some(raw) => compile_auth(raw, cx, &mut errors),
            None => None,
        };
        let subject_paths =
            SubjectPaths::parse(file, &self.subject_paths, self.subject_kind.clone())
                .map_err(|e| errors.push(e))
                .unwrap_or_default();
        let mut forward_headers = Vec::new();
        for (i, h) in self.forward_headers.iter().enumerate() {
            let auth_header = auth
                .as_ref()
                .and_then(|a| a.header.as_ref().map(|(n, _)| n));
            match crate::forward::check_declared(h) {
                Ok(n) if Some(&n) == auth_header => errors.push(ConfigError::new(
                    file,
                    format!("forward_headers[{i}]"),
                    format!("`{h}` carries the gateway's credential for this department"),
                    "remove it from forward_headers",
                )),
                Ok(n) => forward_headers.push(n),
                Err(why) => errors.push(ConfigError::new(
                    file,
                    format!("forward_headers[{i}]"),
                    format!("`{h}`: {why}"),
                    "list only end-to-end headers the department itself needs",
                )),
            }
        }
        let Some((kind_name, compile)) = kind else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let kcx = KindContext {
            file,
            department: &self.department,
            datasets: cx.datasets,
            base_path: target.as_ref().map_or("", |t| t.base_path.as_str()),
            auth_header: auth
                .as_ref()
                .and_then(|a| a.header.as_ref().map(|(n, _)| n)),
            secret: cx.secret,
        };
        let compiled = compile(&kcx, self.section.clone())?;
        let endpoint = match (compiled.endpoint, target) {
            (None, Some(t)) => super::Endpoint::Http(t),
            (None, None) => {
                return Err(ConfigError::new(
                    file,
                    "base_url",
                    format!("a `{kind_name}` adapter needs the department's base_url"),
                    "add base_url = \"https://host[:port][/base]\"",
                )
                .into());
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    file,
                    "base_url",
                    format!("a `{kind_name}` adapter reaches its department without a base_url"),
                    "remove base_url",
                )
                .into());
            }
            (Some(_), None) if auth.is_some() => {
                return Err(ConfigError::new(
                    file,
                    "upstream_auth",
                    format!("a `{kind_name}` adapter carries its credentials in its database URL"),
                    "remove [upstream_auth]; put the password in the URL's environment variable",
                )
                .into());
            }
            (Some(e), None) => e,
        };
        Ok(DepartmentAdapter::new(
            self.department.clone(),
            kind_name,
            endpoint,
            auth,
            compiled.datasets,
            compiled.adapter,
        )
        .with_subject_paths(subject_paths)
        .with_forward_headers(forward_headers)
        .with_subject_kinds_used(subject_kinds_used(&self.section)))
    }
}

/// Every `<kind>` named as `{subject.<kind>}` anywhere in the kind's keys.
fn subject_kinds_used(section: &Map<String, Value>) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => {
                for part in s.split("{subject.").skip(1) {
                    if let Some(kind) = part.split('}').next().filter(|k| !k.is_empty()) {
                        out.push(kind.to_string());
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::Object(m) => m.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    section.values().for_each(|v| walk(v, &mut out));
    out
}

fn too_big(file: &Path) -> ConfigError {
    ConfigError::new(
        file,
        "(document)",
        format!("adapter files are limited to {MAX_SPEC_BYTES} bytes"),
        "split or shorten the file",
    )
}

fn compile_auth(
    raw: &RawUpstreamAuth,
    cx: &CompileContext<'_>,
    errors: &mut ConfigErrors,
) -> Option<UpstreamAuth> {
    let file = cx.file;
    let start = errors.0.len();
    let header = match (&raw.header, &raw.secret_env) {
        (Some(h), Some(env)) => {
            let prefix = secret_env_prefix(cx.expected_department);
            let env_ok = is_department_variable(env, cx.expected_department);
            let name = HeaderName::from_bytes(h.as_bytes()).ok();
            if name.as_ref().is_none_or(|n| is_reserved_header(n.as_str())) {
                errors.push(ConfigError::new(
                    file,
                    "upstream_auth.header",
                    format!("`{h}` is not a usable header name"),
                    "use a token header name such as X-Api-Key (not Host, Content-Length, ...)",
                ));
            }
            if !env_ok {
                // A department admin must not be able to send the gateway's
                // other secrets (cloud keys, ...) to its own server.
                errors.push(ConfigError::new(
                    file,
                    "upstream_auth.secret_env",
                    format!("`{env}` is not one of this department's variables"),
                    format!("name a variable starting with {prefix}, e.g. {prefix}KEY"),
                ));
                None
            } else {
                match ((cx.secret)(env), name) {
                    (Some(secret), Some(name)) => match HeaderValue::from_str(&secret) {
                        Ok(mut v) => {
                            v.set_sensitive(true);
                            Some((name, v))
                        }
                        Err(_) => {
                            errors.push(ConfigError::new(
                                file,
                                "upstream_auth.secret_env",
                                format!("the value of `{env}` is not a valid header value"),
                                "set it to visible ASCII without line breaks",
                            ));
                            None
                        }
                    },
                    (None, _) => {
                        errors.push(ConfigError::new(
                            file,
                            "upstream_auth.secret_env",
                            format!("environment variable `{env}` is not set"),
                            format!("export {env} before starting the gateway"),
                        ));
                        None
                    }
                    (Some(_), None) => None,
                }
            }
        }
        (None, None) => None,
        _ => {
            errors.push(ConfigError::new(
                file,
                "upstream_auth",
                "`header` and `secret_env` go together",
                "set both or neither",
            ));
            None
        }
    };
    let mut path = |field: &str, v: &Option<String>| -> Option<PathBuf> {
        let v = v.as_ref()?;
        let p = Path::new(v);
        let own = Path::new("certs/departments").join(cx.expected_department);
        let ok = p.starts_with(&own)
            && p.components().all(|c| matches!(c, Component::Normal(_)))
            && p.components().count() > own.components().count();
        if !ok {
            // Another department's key, or the server's own, would let this
            // department's admin borrow an identity that is not theirs.
            errors.push(ConfigError::new(
                file,
                format!("upstream_auth.{field}"),
                format!("`{v}` is not a path under {}/", own.display()),
                format!(
                    "put this department's client certificate and key under {}/",
                    own.display()
                ),
            ));
        }
        Some(p.to_path_buf())
    };
    let client_cert = path("client_cert", &raw.client_cert);
    let client_key = path("client_key", &raw.client_key);
    if client_cert.is_some() != client_key.is_some() {
        errors.push(ConfigError::new(
            file,
            "upstream_auth",
            "`client_cert` and `client_key` go together",
            "set both or neither",
        ));
    }
    if errors.0.len() > start {
        return None;
    }
    Some(UpstreamAuth {
        header,
        secret_env: raw.secret_env.clone(),
        client_cert,
        client_key,
    })
}

/// The prefix of a department's secret variables:
/// `ONEWINDOW_DEPT_<NAME>__` with `<NAME>` the department upper-cased and
/// `-` written `_` (`tax-credit` -> `ONEWINDOW_DEPT_TAX_CREDIT__`).
pub fn secret_env_prefix(department: &str) -> String {
    format!(
        "ONEWINDOW_DEPT_{}__",
        department.to_ascii_uppercase().replace('-', "_")
    )
}

/// True when `var` is one of `department`'s variables: its prefix, then a
/// non-empty suffix of `A-Z`, `0-9` and single `_` (not first, not last, never
/// `__`). The double `_` ends the department's part, so no department's
/// variable is another's: `ONEWINDOW_DEPT_TAX__CREDIT__KEY` is not `tax`'s
/// (its suffix holds `__`), and `ONEWINDOW_DEPT_TAX_CREDIT__KEY` does not
/// start with `tax`'s prefix.
pub fn is_department_variable(var: &str, department: &str) -> bool {
    let Some(suffix) = var.strip_prefix(&secret_env_prefix(department)) else {
        return false;
    };
    !suffix.is_empty()
        && !suffix.starts_with('_')
        && !suffix.ends_with('_')
        && !suffix.contains("__")
        && suffix
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Pulls the field name out of serde messages such as "unknown field `x`".
fn field_from_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}

impl KindContext<'_> {
    /// Checks `not_found_status` lists: each must be a non-success HTTP status.
    pub fn check_not_found_status(&self, statuses: &[u16], at: &str, errors: &mut ConfigErrors) {
        for s in statuses {
            if !(100..=599).contains(s) || (200..300).contains(s) {
                errors.push(self.err(
                    format!("{at}.response.not_found_status"),
                    format!("{s} is not a non-success HTTP status"),
                    "list statuses such as 404 or 410",
                ));
            }
        }
    }

    /// A configuration error on `field` of this file.
    pub fn err(
        &self,
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::new(self.file, field, problem, fix)
    }

    /// Deserializes the kind's section into its raw type (which should deny
    /// unknown fields), naming the offending key.
    pub fn parse_section<T: DeserializeOwned>(
        &self,
        section: Map<String, Value>,
    ) -> Result<T, ConfigErrors> {
        serde_json::from_value(Value::Object(section)).map_err(|e| {
            let msg = e.to_string();
            let fix = if msg.contains("unknown field") {
                "remove the key or correct its spelling"
            } else if msg.contains("missing field") {
                "add the missing key"
            } else {
                "correct the value to the documented type"
            };
            self.err(
                field_from_message(&msg).unwrap_or_else(|| "(document)".into()),
                msg,
                fix,
            )
            .into()
        })
    }

    /// The dataset `name`, if it exists and this department owns it.
    pub fn dataset(&self, name: &str, errors: &mut ConfigErrors) -> Option<Arc<DatasetSpec>> {
        match self.datasets.get(name) {
            None => {
                errors.push(self.err(
                    format!("datasets.{name}"),
                    format!("`{name}` is not a dataset of datasets.toml"),
                    "declare it in config/datasets.toml or correct the name",
                ));
                None
            }
            Some(d) if d.department != self.department => {
                errors.push(self.err(
                    format!("datasets.{name}"),
                    format!(
                        "dataset `{name}` belongs to `{}`, not `{}`",
                        d.department, self.department
                    ),
                    "a department may only adapt its own datasets",
                ));
                None
            }
            Some(d) => Some(d.clone()),
        }
    }

    /// Checks that `mapped` names only canonical fields of `ds` and covers all
    /// required ones. `at` is the dotted path of the fields table.
    pub fn check_fields<'m>(
        &self,
        ds: &DatasetSpec,
        mapped: impl Iterator<Item = &'m str> + Clone,
        at: &str,
        errors: &mut ConfigErrors,
    ) {
        for m in mapped.clone() {
            if ds.field(m).is_none() {
                let known: Vec<_> = ds.fields.iter().map(|f| f.name.as_str()).collect();
                errors.push(self.err(
                    format!("{at}.{m}"),
                    format!("`{m}` is not a canonical field of `{}`", ds.name),
                    format!("map one of: {}", known.join(", ")),
                ));
            }
        }
        for f in ds.fields.iter().filter(|f| f.required) {
            if !mapped.clone().any(|m| m == f.name) {
                errors.push(self.err(
                    format!("{at}.{}", f.name),
                    format!("required canonical field `{}` is not mapped", f.name),
                    "map it to the department's field",
                ));
            }
        }
    }

    /// Compiles a value map (`map = { "存续" = "active" }`): every value must
    /// be of the field's type.
    pub fn value_map(
        &self,
        raw: &BTreeMap<String, Value>,
        ty: FieldType,
        at: &str,
        errors: &mut ConfigErrors,
    ) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (k, v) in raw {
            if ty.accepts(v) {
                out.push((k.clone(), v.clone()));
            } else {
                errors.push(self.err(
                    format!("{at}.{k}"),
                    format!("{v} is not a valid {}", type_name(ty)),
                    "map department values to values of the canonical field's type",
                ));
            }
        }
        out
    }

    /// Checks a header name a template sets.
    pub fn header_name(
        &self,
        name: &str,
        at: &str,
        errors: &mut ConfigErrors,
    ) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) if !is_reserved_header(n.as_str()) && Some(&n) != self.auth_header => Some(n),
            _ => {
                errors.push(self.err(
                    at,
                    format!("`{name}` cannot be set by a template"),
                    "use a valid header name other than Host, Content-Length, Content-Type, \
                     Connection, SOAPAction or the upstream auth header",
                ));
                None
            }
        }
    }
}

/// Lowercase name of a canonical type.
pub fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "string",
        FieldType::Date => "date",
        FieldType::Integer => "integer",
        FieldType::Number => "number",
        FieldType::Boolean => "boolean",
        FieldType::Array => "array",
        FieldType::Object => "object",
    }
}

/// Looks a department value up in a compiled value map.
pub(crate) fn lookup_map<'m>(map: &'m [(String, Value)], key: &str) -> Option<&'m Value> {
    map.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}
