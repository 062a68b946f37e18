//! Client grants from `config/clients.toml`: deny by default.
//!
//! ```toml
//! [clients.portal-readonly]          # key = the token's `sub`
//! description = "Read-only portal"
//! purposes = ["service-handling"]    # X-Purpose values it may give
//! scenarios = []                     # scenarios it may run
//! [clients.portal-readonly.datasets.business-licence]
//! fields = ["*"]                     # or a list of canonical field names
//! [[clients.portal-readonly.proxy]]
//! department = "market-supervision"
//! methods = ["GET"]
//! path_prefixes = ["/licences/"]     # segment-boundary prefixes of the normalised path
//! ```
//!
//! A client without an entry, or a section it does not list, is refused.
//! Refusals name what was asked for, never what else is granted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use http::Method;
use serde::{Deserialize, Serialize};

use super::Approval;
use super::error::AccessError;
use crate::clock::Date;
use crate::config::Sharing;
use crate::config::datasets::is_name;
use crate::config::{ConfigError, ConfigErrors, Datasets, parse_toml};

/// Names that grants may refer to, from the rest of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownNames {
    /// Dataset names (datasets.toml).
    pub datasets: BTreeSet<String>,
    /// Scenario names (scenarios/*.toml).
    pub scenarios: BTreeSet<String>,
    /// Department names (gateway.toml `[departments]`).
    pub departments: BTreeSet<String>,
    /// Trusted issuers (gateway.toml `[[auth.issuers]]`, their `iss`).
    pub issuers: BTreeSet<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientsFile {
    #[serde(default)]
    clients: BTreeMap<String, RawClient>,
    #[serde(default)]
    purposes: BTreeMap<String, RawPurpose>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    disclose_after_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    #[serde(default)]
    description: String,
    #[serde(default)]
    purposes: Vec<String>,
    #[serde(default)]
    scenarios: Vec<String>,
    #[serde(default)]
    datasets: BTreeMap<String, RawDatasetGrant>,
    #[serde(default)]
    proxy: Vec<RawProxy>,
    #[serde(default)]
    subject_access: bool,
    /// The one issuer that may speak for this client.
    issuer: Option<String>,
    /// The issuers that may speak for this client.
    issuers: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatasetGrant {
    fields: Vec<String>,
    approval: Option<String>,
    expires: Option<toml::Value>,
    purposes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    department: String,
    methods: Vec<String>,
    path_prefixes: Vec<String>,
}

/// Which canonical fields of a dataset a client may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldFilter {
    /// `fields = ["*"]`: every field.
    All,
    /// Only these fields; the others are removed from the record.
    Only(HashSet<String>),
}

impl FieldFilter {
    /// Removes from `record` every field this client may not see.
    pub fn filter(&self, record: &mut serde_json::Map<String, serde_json::Value>) {
        if let FieldFilter::Only(keep) = self {
            record.retain(|k, _| keep.contains(k));
        }
    }

    /// True when the client may see `field`.
    pub fn allows(&self, field: &str) -> bool {
        match self {
            FieldFilter::All => true,
            FieldFilter::Only(keep) => keep.contains(field),
        }
    }

    /// A stable name of this projection: `*`, or the visible fields sorted
    /// and joined with `,` (signatures of cached records are kept per projection).
    pub fn projection(&self) -> std::borrow::Cow<'static, str> {
        match self {
            FieldFilter::All => std::borrow::Cow::Borrowed("*"),
            FieldFilter::Only(_) => std::borrow::Cow::Owned(self.names().join(",")),
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            FieldFilter::All => vec!["*".to_string()],
            FieldFilter::Only(keep) => {
                let mut v: Vec<_> = keep.iter().cloned().collect();
                v.sort();
                v
            }
        }
    }
}

/// One pass-through grant: methods and path prefixes on one department.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyGrant {
    /// The department.
    pub department: String,
    /// Allowed methods (exact; `HEAD` is not implied by `GET`).
    pub methods: Vec<Method>,
    /// Allowed path prefixes, matched on segment boundaries.
    pub path_prefixes: Vec<String>,
}

impl ProxyGrant {
    fn allows(&self, department: &str, method: &Method, path: &str) -> bool {
        self.department == department
            && self.methods.contains(method)
            && self.path_prefixes.iter().any(|p| prefix_matches(p, path))
    }
}

/// `prefix` covers `path` on a segment boundary: `/licences` covers
/// `/licences` and `/licences/1` but not `/licences-admin`; `/licences/`
/// covers `/licences/1` but not `/licencesX`; `/` covers everything.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

/// What one client may do. Obtained from [`Grants::client`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientGrants {
    id: String,
    description: String,
    purposes: HashSet<String>,
    datasets: HashMap<String, FieldFilter>,
    scenarios: HashSet<String>,
    proxy: Vec<ProxyGrant>,
    approvals: HashMap<String, Approval>,
    subject_access: bool,
    issuers: HashSet<String>,
}

impl ClientGrants {
    /// The approval the grant of `dataset` rests on (conditional datasets).
    pub fn approval(&self, dataset: &str) -> Option<&Approval> {
        self.approvals.get(dataset)
    }

    /// Conditional sharing: an unconditionally shared dataset needs nothing
    /// more than the grant; a conditional one needs a live approval covering
    /// `purpose` on `today`. Returns the approval the read rests on.
    pub fn check_sharing(
        &self,
        dataset: &str,
        sharing: Sharing,
        purpose: &str,
        today: Date,
    ) -> Result<Option<&Approval>, AccessError> {
        match sharing {
            Sharing::Unconditional => Ok(None),
            Sharing::Conditional => {
                let a = self
                    .approvals
                    .get(dataset)
                    .ok_or_else(|| AccessError::DatasetNotGranted(dataset.to_string()))?;
                a.check(dataset, purpose, today)?;
                Ok(Some(a))
            }
        }
    }

    /// May this client call the data-subject transparency view?
    pub fn subject_access(&self) -> bool {
        self.subject_access
    }

    /// The client id (the token's `sub`); empty for an unknown client.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The operator's description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// `Ok` if tokens of `issuer` may speak for this client, else 403. An
    /// unknown client (no entry) has no grants to protect and passes here;
    /// everything it asks for is refused later.
    pub fn check_issuer(&self, issuer: &str) -> Result<(), AccessError> {
        if self.id.is_empty() || self.issuers.contains(issuer) {
            Ok(())
        } else {
            Err(AccessError::IssuerNotBound(self.id.clone()))
        }
    }

    /// `X-Purpose` must be present (400 otherwise) and granted (403).
    pub fn check_purpose(&self, purpose: Option<&str>) -> Result<(), AccessError> {
        match purpose {
            None => Err(AccessError::PurposeRequired),
            Some(p) if self.purposes.contains(p) => Ok(()),
            Some(p) => Err(AccessError::PurposeNotGranted(p.to_string())),
        }
    }

    /// The field filter of `dataset` if granted, else 403 naming it.
    pub fn check_dataset(&self, dataset: &str) -> Result<&FieldFilter, AccessError> {
        self.datasets
            .get(dataset)
            .ok_or_else(|| AccessError::DatasetNotGranted(dataset.to_string()))
    }

    /// `Ok` if the scenario is granted, else 403 naming it. (Each part's
    /// dataset is still checked with [`ClientGrants::check_dataset`].)
    pub fn check_scenario(&self, scenario: &str) -> Result<(), AccessError> {
        if self.scenarios.contains(scenario) {
            Ok(())
        } else {
            Err(AccessError::ScenarioNotGranted(scenario.to_string()))
        }
    }

    /// `Ok` if a proxy grant covers `department`, `method` and the already
    /// normalised `path`; else 403.
    pub fn check_proxy(
        &self,
        department: &str,
        method: &Method,
        path: &str,
    ) -> Result<(), AccessError> {
        if self
            .proxy
            .iter()
            .any(|g| g.allows(department, method, path))
        {
            Ok(())
        } else {
            Err(AccessError::ProxyNotGranted {
                department: department.to_string(),
                method: method.as_str().to_string(),
                path: path.to_string(),
            })
        }
    }

    /// What this client may use, for `GET /v1/catalog` (sorted; nothing
    /// about other clients).
    pub fn catalog(&self) -> CatalogView {
        let mut datasets: Vec<_> = self
            .datasets
            .iter()
            .map(|(name, f)| DatasetGrantView {
                name: name.clone(),
                fields: f.names(),
            })
            .collect();
        datasets.sort_by(|a, b| a.name.cmp(&b.name));
        let sorted = |s: &HashSet<String>| {
            let mut v: Vec<_> = s.iter().cloned().collect();
            v.sort();
            v
        };
        CatalogView {
            client: self.id.clone(),
            purposes: sorted(&self.purposes),
            datasets,
            scenarios: sorted(&self.scenarios),
            proxy: self
                .proxy
                .iter()
                .map(|g| ProxyGrantView {
                    department: g.department.clone(),
                    methods: g.methods.iter().map(|m| m.as_str().to_string()).collect(),
                    path_prefixes: g.path_prefixes.clone(),
                })
                .collect(),
        }
    }
}

/// A client's catalog: what it may use. Serialised into `GET /v1/catalog`
/// (the pipeline may enrich it with dataset titles and notices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogView {
    /// The client id.
    pub client: String,
    /// Purposes it may give.
    pub purposes: Vec<String>,
    /// Datasets with the fields it may see (`["*"]`: all).
    pub datasets: Vec<DatasetGrantView>,
    /// Scenarios it may run.
    pub scenarios: Vec<String>,
    /// Pass-through routes.
    pub proxy: Vec<ProxyGrantView>,
}

/// One granted dataset in a [`CatalogView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetGrantView {
    /// Dataset name.
    pub name: String,
    /// Visible fields, or `["*"]`.
    pub fields: Vec<String>,
}

/// One proxy grant in a [`CatalogView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyGrantView {
    /// Department.
    pub department: String,
    /// Methods.
    pub methods: Vec<String>,
    /// Path prefixes.
    pub path_prefixes: Vec<String>,
}

/// All clients' grants. Cheap to share (`Arc` inside).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    clients: HashMap<String, Arc<ClientGrants>>,
    deny_all: Arc<ClientGrants>,
    disclose_after: BTreeMap<String, u32>,
}

impl Grants {
    /// The grants of client `sub`; a client without an entry gets an empty
    /// set (everything refused).
    pub fn client(&self, sub: &str) -> &Arc<ClientGrants> {
        self.clients.get(sub).unwrap_or(&self.deny_all)
    }

    /// Every approval, as (client, dataset, approval), sorted.
    pub fn approvals(&self) -> Vec<(&str, &str, &Approval)> {
        let mut v: Vec<_> = self
            .clients
            .iter()
            .flat_map(|(c, g)| {
                g.approvals
                    .iter()
                    .map(move |(d, a)| (c.as_str(), d.as_str(), a))
            })
            .collect();
        v.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        v
    }

    /// Days that records of `purpose` stay out of the data-subject
    /// transparency view (`[purposes.<name>] disclose_after_days`).
    pub fn disclose_after_days(&self, purpose: &str) -> Option<u32> {
        self.disclose_after.get(purpose).copied()
    }

    /// Every purpose withheld from the transparency view, with its days.
    pub fn disclose_after(&self) -> impl Iterator<Item = (&str, u32)> {
        self.disclose_after.iter().map(|(p, d)| (p.as_str(), *d))
    }

    /// Client ids with an entry, sorted.
    pub fn client_ids(&self) -> Vec<&str> {
        let mut v: Vec<_> = self.clients.keys().map(String::as_str).collect();
        v.sort();
        v
    }

    /// Reads and validates `path` (see [`Grants::from_toml`]).
    pub fn load(
        path: &Path,
        known: &KnownNames,
        datasets: &Datasets,
    ) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                path,
                "(file)",
                format!("cannot read: {e}"),
                "create the file or correct the path",
            )
        })?;
        Self::from_toml(path, &text, known, datasets)
    }

    /// Parses and validates clients.toml: every dataset, scenario and
    /// department named must be known, every field must exist in the
    /// dataset's schema, methods and path prefixes must be well formed.
    pub fn from_toml(
        file: &Path,
        text: &str,
        known: &KnownNames,
        datasets: &Datasets,
    ) -> Result<Self, ConfigErrors> {
        let raw: RawClientsFile = parse_toml(file, text)?;
        let mut errors = ConfigErrors::default();
        let mut clients = HashMap::new();
        for (id, r) in raw.clients {
            let at = |f: &str| format!("clients.{id}.{f}");
            if !is_client_id(&id) {
                errors.push(ConfigError::new(
                    file,
                    format!("clients.{id}"),
                    "client ids are 1-128 ASCII letters, digits, '-', '_', '.', ':' or '@'",
                    "use the exact `sub` of the client's tokens",
                ));
            }
            let mut g = ClientGrants {
                id: id.clone(),
                description: r.description,
                subject_access: r.subject_access,
                ..ClientGrants::default()
            };
            let client_purposes: HashSet<String> = r.purposes.iter().cloned().collect();
            let named: Option<Vec<String>> = match (r.issuer, r.issuers) {
                (Some(_), Some(_)) => {
                    errors.push(ConfigError::new(
                        file,
                        at("issuer"),
                        "`issuer` and `issuers` are alternatives",
                        "give one issuer with `issuer = \"...\"` or several with `issuers = [...]`",
                    ));
                    None
                }
                (Some(i), None) => Some(vec![i]),
                (None, Some(v)) => Some(v),
                (None, None) if known.issuers.len() <= 1 => {
                    Some(known.issuers.iter().cloned().collect())
                }
                (None, None) => {
                    errors.push(ConfigError::new(
                        file,
                        at("issuer"),
                        "more than one issuer is trusted, so each client must say which may speak for it",
                        format!(
                            "add issuer = \"...\" (one of: {})",
                            known.issuers.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                    None
                }
            };
            for i in named.into_iter().flatten() {
                if known.issuers.contains(&i) {
                    g.issuers.insert(i);
                } else {
                    errors.push(ConfigError::new(
                        file,
                        at("issuer"),
                        format!("`{i}` is not a trusted issuer"),
                        "name an `issuer` of gateway.toml [[auth.issuers]]",
                    ));
                }
            }
            for p in r.purposes {
                if !is_name(&p) {
                    errors.push(ConfigError::new(
                        file,
                        at("purposes"),
                        format!("`{p}` is not a purpose name"),
                        "use lowercase letters, digits and '-', e.g. service-handling",
                    ));
                }
                g.purposes.insert(p);
            }
            for s in r.scenarios {
                if !known.scenarios.contains(&s) {
                    errors.push(ConfigError::new(
                        file,
                        at("scenarios"),
                        format!("unknown scenario `{s}`"),
                        "define it under config/scenarios/ or correct the name",
                    ));
                }
                g.scenarios.insert(s);
            }
            for (name, d) in r.datasets {
                let field = at(&format!("datasets.{name}"));
                let spec = datasets.get(&name);
                let Some(spec) = spec.filter(|_| known.datasets.contains(&name)) else {
                    errors.push(ConfigError::new(
                        file,
                        field,
                        format!("unknown dataset `{name}`"),
                        "define it in datasets.toml or correct the name",
                    ));
                    continue;
                };
                let filter = if d.fields == ["*"] {
                    FieldFilter::All
                } else {
                    let mut keep = HashSet::new();
                    if d.fields.is_empty() {
                        errors.push(ConfigError::new(
                            file,
                            format!("{field}.fields"),
                            "no field listed",
                            "list the visible fields, or [\"*\"] for all, or remove the grant",
                        ));
                    }
                    for f in d.fields {
                        if spec.field(&f).is_none() {
                            errors.push(ConfigError::new(
                                file,
                                format!("{field}.fields"),
                                format!("`{f}` is not a field of dataset `{name}`"),
                                "use canonical field names from datasets.toml, or \"*\" alone",
                            ));
                        }
                        keep.insert(f);
                    }
                    FieldFilter::Only(keep)
                };
                if let Some(a) = approval_of(
                    file,
                    &field,
                    spec.sharing,
                    d.approval,
                    d.expires,
                    d.purposes,
                    &client_purposes,
                    &mut errors,
                ) {
                    g.approvals.insert(name.clone(), a);
                }
                g.datasets.insert(name, filter);
            }
            for (i, p) in r.proxy.into_iter().enumerate() {
                let field = |f: &str| at(&format!("proxy[{i}].{f}"));
                if !known.departments.contains(&p.department) {
                    errors.push(ConfigError::new(
                        file,
                        field("department"),
                        format!("unknown department `{}`", p.department),
                        "declare it under [departments] in gateway.toml or correct the name",
                    ));
                }
                let mut methods = Vec::new();
                for m in &p.methods {
                    match parse_method(m) {
                        Some(m) => methods.push(m),
                        None => errors.push(ConfigError::new(
                            file,
                            field("methods"),
                            format!("`{m}` is not a supported method"),
                            "use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS (upper case)",
                        )),
                    }
                }
                if p.methods.is_empty() {
                    errors.push(ConfigError::new(
                        file,
                        field("methods"),
                        "no method listed",
                        "list the allowed methods, e.g. [\"GET\"]",
                    ));
                }
                if p.path_prefixes.is_empty() {
                    errors.push(ConfigError::new(
                        file,
                        field("path_prefixes"),
                        "no path prefix listed",
                        "list allowed prefixes, e.g. [\"/licences/\"], or [\"/\"] for all",
                    ));
                }
                for pp in &p.path_prefixes {
                    if !is_normalised_prefix(pp) {
                        errors.push(ConfigError::new(
                            file,
                            field("path_prefixes"),
                            format!("`{pp}` is not a normalised absolute path"),
                            "start with '/', no '//', '.', '..', '%', '?', '#', '\\' or spaces",
                        ));
                    }
                }
                g.proxy.push(ProxyGrant {
                    department: p.department,
                    methods,
                    path_prefixes: p.path_prefixes,
                });
            }
            if g.purposes.is_empty() && !(g.datasets.is_empty() && g.scenarios.is_empty()) {
                errors.push(ConfigError::new(
                    file,
                    at("purposes"),
                    "datasets or scenarios are granted but no purpose: every read would be refused",
                    "list the purposes this client may give in X-Purpose",
                ));
            }
            clients.insert(id, Arc::new(g));
        }
        let mut disclose_after = BTreeMap::new();
        for (name, p) in raw.purposes {
            let at = format!("purposes.{name}.disclose_after_days");
            if !is_name(&name) {
                errors.push(ConfigError::new(
                    file,
                    format!("purposes.{name}"),
                    "purpose names are lowercase letters, digits and '-'",
                    "use the name clients give in X-Purpose, e.g. [purposes.investigation]",
                ));
            }
            match p.disclose_after_days {
                Some(days @ 1..=3650) => {
                    disclose_after.insert(name, days);
                }
                Some(_) => errors.push(ConfigError::new(
                    file,
                    at,
                    "must be between 1 and 3650 days",
                    "set how long records of this purpose stay out of the data-subject view",
                )),
                None => {}
            }
        }
        errors.into_result(Grants {
            clients,
            deny_all: Arc::default(),
            disclose_after,
        })
    }
}

/// Validates the approval fields of one dataset grant against the dataset's
/// sharing type: a conditional dataset needs `approval` and `expires`; an
/// unconditional one takes neither.
#[allow(clippy::too_many_arguments)]
fn approval_of(
    file: &Path,
    field: &str,
    sharing: Sharing,
    approval: Option<String>,
    expires: Option<toml::Value>,
    purposes: Option<Vec<String>>,
    client_purposes: &HashSet<String>,
    errors: &mut ConfigErrors,
) -> Option<Approval> {
    if sharing == Sharing::Unconditional {
        if approval.is_some() || expires.is_some() || purposes.is_some() {
            errors.push(ConfigError::new(
                file,
                field,
                "`approval`, `expires` and `purposes` are for conditionally shared datasets; this one is unconditional",
                "remove them, or mark the dataset sharing = \"conditional\" in datasets.toml",
            ));
        }
        return None;
    }
    let reference = approval.map(|a| a.trim().to_string()).unwrap_or_default();
    if reference.is_empty()
        || reference.chars().count() > 128
        || reference.chars().any(char::is_control)
    {
        errors.push(ConfigError::new(
            file,
            format!("{field}.approval"),
            "this dataset is conditionally shared: its grant needs the reference of the approval it rests on (1-128 characters)",
            "add approval = \"<approval document number>\" and expires = YYYY-MM-DD, or remove the grant",
        ));
    }
    let expires = match expires {
        Some(toml::Value::Datetime(d)) if d.time.is_none() && d.offset.is_none() => {
            Date::parse(&d.to_string())
        }
        Some(toml::Value::String(s)) => Date::parse(&s),
        _ => None,
    };
    let Some(expires) = expires else {
        errors.push(ConfigError::new(
            file,
            format!("{field}.expires"),
            "a conditional grant needs the last day its approval is valid",
            "add expires = YYYY-MM-DD (a date, e.g. 2027-06-30)",
        ));
        return None;
    };
    let purposes = purposes.map(|ps| {
        for p in &ps {
            if !client_purposes.contains(p) {
                errors.push(ConfigError::new(
                    file,
                    format!("{field}.purposes"),
                    format!("`{p}` is not among the client's purposes"),
                    "list only purposes the client is granted, or drop `purposes` to cover all of them",
                ));
            }
        }
        ps.into_iter().collect()
    });
    Some(Approval {
        reference,
        expires,
        purposes,
    })
}

fn is_client_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

fn parse_method(m: &str) -> Option<Method> {
    match m {
        "GET" => Some(Method::GET),
        "HEAD" => Some(Method::HEAD),
        "POST" => Some(Method::POST),
        "PUT" => Some(Method::PUT),
        "PATCH" => Some(Method::PATCH),
        "DELETE" => Some(Method::DELETE),
        "OPTIONS" => Some(Method::OPTIONS),
        _ => None,
    }
}

fn is_normalised_prefix(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains("//")
        && !p
            .bytes()
            .any(|b| b.is_ascii_control() || matches!(b, b'%' | b'?' | b'#' | b'\\' | b' '))
        && p.split('/').all(|seg| seg != "." && seg != "..")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{DatasetSpec, FieldSpec, FieldType, SubjectChars};
    use std::time::Duration;

    pub(crate) fn demo_world() -> (KnownNames, Datasets) {
        let ds = [
            ("business-licence", "market-supervision"),
            ("food-business-permit", "market-supervision"),
            ("health-certificate", "health-commission"),
            ("birth-medical-certificate", "health-commission"),
            ("household-registration", "public-security"),
            ("fire-safety-inspection", "fire-rescue"),
            ("environmental-penalties", "ecology-environment"),
            ("tax-credit", "tax"),
        ];
        let specs = ds.iter().map(|(name, dept)| DatasetSpec {
            name: name.to_string(),
            title: name.to_string(),
            department: dept.to_string(),
            subject_kind: "uscc".into(),
            subject_chars: SubjectChars::Alphanumeric,
            subject_max_len: 32,
            fields: ["uscc", "name", "legal_representative", "status"]
                .iter()
                .map(|f| FieldSpec {
                    name: f.to_string(),
                    ty: FieldType::String,
                    required: false,
                })
                .collect(),
            shareable: true,
            ttl: Duration::from_secs(60),
            max_stale: Duration::from_secs(60),
            notice: String::new(),
            issuer: "Issuing authority".into(),
            sharing: if *name == "household-registration" {
                Sharing::Conditional
            } else {
                Sharing::Unconditional
            },
        });
        let known = KnownNames {
            issuers: ["https://demo-issuer.onewindow.local".to_string()].into(),
            datasets: ds.iter().map(|d| d.0.to_string()).collect(),
            scenarios: ["open-restaurant", "newborn", "listing-compliance"]
                .map(String::from)
                .into(),
            departments: [
                "market-supervision",
                "health-commission",
                "fire-rescue",
                "public-security",
                "ecology-environment",
                "tax",
            ]
            .map(String::from)
            .into(),
        };
        (known, Datasets::from_specs(specs))
    }

    fn load(text: &str) -> Result<Grants, ConfigErrors> {
        let (known, datasets) = demo_world();
        Grants::from_toml(Path::new("clients.toml"), text, &known, &datasets)
    }

    const SAMPLE: &str = r#"
[clients.narrow]
purposes = ["service-handling"]
scenarios = ["newborn"]
[clients.narrow.datasets.business-licence]
fields = ["uscc", "name"]
[[clients.narrow.proxy]]
department = "market-supervision"
methods = ["GET"]
path_prefixes = ["/licences/", "/permits"]
[clients.other]
purposes = ["audit-sampling"]
scenarios = ["open-restaurant"]
[clients.other.datasets.household-registration]
fields = ["*"]
approval = "DEMO-2026-001"
expires = 2026-12-31
"#;

    #[test]
    fn shipped_clients_toml_is_valid() {
        let text = include_str!("../../config/clients.toml");
        let g = load(text).unwrap();
        let binhai = g.client("portal-binhai");
        for d in demo_world().0.datasets {
            assert_eq!(binhai.check_dataset(&d), Ok(&FieldFilter::All));
        }
        assert!(binhai.check_scenario("newborn").is_ok());
        assert!(
            binhai
                .check_proxy("fire-rescue", &Method::POST, "/x")
                .is_ok()
        );
        assert!(
            binhai
                .check_proxy("fire-rescue", &Method::DELETE, "/x")
                .is_err()
        );
        let ro = g.client("portal-readonly");
        assert!(ro.check_dataset("business-licence").is_ok());
        assert!(ro.check_dataset("food-business-permit").is_err());
        assert!(ro.check_scenario("open-restaurant").is_err());
        assert!(
            ro.check_proxy("market-supervision", &Method::GET, "/licences/1")
                .is_ok()
        );
        assert!(
            ro.check_proxy("market-supervision", &Method::POST, "/licences/1")
                .is_err()
        );
        assert!(
            ro.check_proxy("market-supervision", &Method::GET, "/permits/1")
                .is_err()
        );
        for id in [
            "auditor",
            "platform-admin",
            "fire-rescue-admin",
            "public-security-admin",
        ] {
            let c = g.client(id);
            assert_eq!(c.id(), id);
            assert!(c.check_dataset("business-licence").is_err(), "{id}");
            assert!(c.check_scenario("newborn").is_err());
            assert!(c.check_purpose(Some("service-handling")).is_err());
            assert!(c.check_proxy("fire-rescue", &Method::GET, "/").is_err());
        }
    }

    #[test]
    fn ungranted_things_are_refused_naming_only_the_request() {
        let g = load(SAMPLE).unwrap();
        let c = g.client("narrow");
        assert_eq!(
            c.check_dataset("household-registration").unwrap_err(),
            AccessError::DatasetNotGranted("household-registration".into())
        );
        let msg = c
            .check_dataset("household-registration")
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("business-licence"), "{msg}");
        assert_eq!(
            c.check_scenario("open-restaurant").unwrap_err(),
            AccessError::ScenarioNotGranted("open-restaurant".into())
        );
        assert_eq!(c.check_purpose(None), Err(AccessError::PurposeRequired));
        let e = c.check_purpose(Some("audit-sampling")).unwrap_err();
        assert_eq!(e, AccessError::PurposeNotGranted("audit-sampling".into()));
        assert!(!e.to_string().contains("service-handling"));
        assert!(c.check_purpose(Some("service-handling")).is_ok());
        assert!(c.check_scenario("newborn").is_ok());
    }

    #[test]
    fn conditional_grants_carry_live_approvals() {
        let g = load(SAMPLE).unwrap();
        let c = g.client("other");
        let a = c.approval("household-registration").unwrap();
        assert_eq!(a.reference, "DEMO-2026-001");
        assert_eq!(a.expires.to_string(), "2026-12-31");
        let day = |s| Date::parse(s).unwrap();
        assert_eq!(
            c.check_sharing(
                "household-registration",
                Sharing::Conditional,
                "audit-sampling",
                day("2026-12-31")
            )
            .unwrap()
            .map(|a| a.reference.as_str()),
            Some("DEMO-2026-001")
        );
        assert!(matches!(
            c.check_sharing(
                "household-registration",
                Sharing::Conditional,
                "audit-sampling",
                day("2027-01-01")
            ),
            Err(AccessError::ApprovalLapsed { .. })
        ));
        // A conditional dataset without an approval in the grant is refused.
        assert!(
            g.client("narrow")
                .check_sharing(
                    "business-licence",
                    Sharing::Conditional,
                    "service-handling",
                    day("2026-01-01")
                )
                .is_err()
        );
        assert_eq!(g.approvals().len(), 1);
    }

    #[test]
    fn approval_fields_are_validated_against_the_sharing_type() {
        let missing = load(
            "[clients.x]\npurposes = [\"a\"]\n[clients.x.datasets.household-registration]\nfields = [\"*\"]\n",
        )
        .unwrap_err();
        let fields: Vec<_> = missing.0.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"clients.x.datasets.household-registration.approval"),
            "{fields:?}"
        );
        assert!(fields.contains(&"clients.x.datasets.household-registration.expires"));
        let on_unconditional = load(
            "[clients.x]\npurposes = [\"a\"]\n[clients.x.datasets.business-licence]\nfields = [\"*\"]\napproval = \"A-1\"\nexpires = 2027-01-01\n",
        )
        .unwrap_err();
        assert!(on_unconditional.to_string().contains("unconditional"));
        let bad = load(
            "[clients.x]\npurposes = [\"a\"]\n[clients.x.datasets.household-registration]\nfields = [\"*\"]\napproval = \"A-1\"\nexpires = 2027-02-30\npurposes = [\"b\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("expires"), "{bad}");
        let other_purpose = load(
            "[clients.x]\npurposes = [\"a\"]\n[clients.x.datasets.household-registration]\nfields = [\"*\"]\napproval = \"A-1\"\nexpires = \"2027-02-28\"\npurposes = [\"b\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            other_purpose.contains("`b` is not among"),
            "{other_purpose}"
        );
        let purposes = load("[purposes.investigation]\ndisclose_after_days = 90\n").unwrap();
        assert_eq!(purposes.disclose_after_days("investigation"), Some(90));
        assert_eq!(purposes.disclose_after_days("service-handling"), None);
        assert!(load("[purposes.x]\ndisclose_after_days = 0\n").is_err());
    }

    #[test]
    fn unknown_client_is_denied_everything() {
        let g = load(SAMPLE).unwrap();
        let c = g.client("nobody");
        assert!(c.check_dataset("business-licence").is_err());
        assert!(c.check_scenario("newborn").is_err());
        assert!(c.check_purpose(Some("service-handling")).is_err());
        assert!(
            c.check_proxy("market-supervision", &Method::GET, "/licences/1")
                .is_err()
        );
        assert_eq!(c.catalog().datasets, vec![]);
    }

    #[test]
    fn proxy_methods_and_prefixes_on_segment_boundaries() {
        let g = load(SAMPLE).unwrap();
        let c = g.client("narrow");
        let get = |p: &str| c.check_proxy("market-supervision", &Method::GET, p).is_ok();
        assert!(get("/licences/1"));
        assert!(get("/licences/"));
        assert!(!get("/licencesX"));
        assert!(!get("/licences"), "`/licences/` covers only paths under it");
        assert!(get("/permits"));
        assert!(get("/permits/7"));
        assert!(!get("/permits-admin"));
        assert!(!get("/"));
        assert!(!get("licences/1"));
        let e = c
            .check_proxy("market-supervision", &Method::POST, "/licences/1")
            .unwrap_err();
        assert!(matches!(e, AccessError::ProxyNotGranted { .. }));
        assert!(
            c.check_proxy("market-supervision", &Method::HEAD, "/licences/1")
                .is_err()
        );
        assert!(
            c.check_proxy("fire-rescue", &Method::GET, "/licences/1")
                .is_err()
        );
        assert!(prefix_matches("/", "/anything/at/all"));
    }

    #[test]
    fn field_filter_drops_ungranted_fields() {
        let g = load(SAMPLE).unwrap();
        let f = g
            .client("narrow")
            .check_dataset("business-licence")
            .unwrap();
        let mut rec = serde_json::json!({
            "uscc": "91120116MA07Q8XJ2K", "name": "A", "legal_representative": "B", "status": "ok"
        })
        .as_object()
        .cloned()
        .unwrap();
        f.filter(&mut rec);
        let mut keys: Vec<_> = rec.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, vec!["name", "uscc"]);
        let mut rec2 = serde_json::Map::new();
        rec2.insert("x".into(), 1.into());
        FieldFilter::All.filter(&mut rec2);
        assert_eq!(rec2.len(), 1);
    }

    #[test]
    fn catalog_lists_only_own_grants() {
        let g = load(SAMPLE).unwrap();
        let cat = g.client("narrow").catalog();
        let json = serde_json::to_string(&cat).unwrap();
        assert!(json.contains("business-licence"));
        assert!(!json.contains("household-registration"), "{json}");
        assert!(!json.contains("open-restaurant"), "{json}");
        assert!(!json.contains("audit-sampling"), "{json}");
        assert_eq!(cat.datasets[0].fields, vec!["name", "uscc"]);
        assert_eq!(cat.proxy[0].methods, vec!["GET"]);
    }

    #[test]
    fn unknown_names_and_bad_shapes_are_refused_at_load() {
        let err = load(
            r#"
[clients.x]
purposes = ["Service Handling"]
scenarios = ["nope"]
[clients.x.datasets.no-such-dataset]
fields = ["*"]
[clients.x.datasets.business-licence]
fields = ["uscc", "secret_field"]
[[clients.x.proxy]]
department = "tax-bureau"
methods = ["get", "TRACE"]
path_prefixes = ["licences", "/a/../b", "/a//b", "/%2e"]
"#,
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "Service Handling",
            "unknown scenario `nope`",
            "unknown dataset `no-such-dataset`",
            "`secret_field` is not a field",
            "unknown department `tax-bureau`",
            "`get` is not a supported method",
            "`TRACE`",
            "`licences`",
            "`/a/../b`",
            "`/a//b`",
            "`/%2e`",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(err.0.iter().all(|e| e.field.starts_with("clients.x")));
        let unknown_key = load("[clients.x]\npurpose = [\"a\"]\n").unwrap_err();
        assert_eq!(unknown_key.0[0].field, "purpose");
        let no_purpose = load("[clients.x]\nscenarios = [\"newborn\"]\n").unwrap_err();
        assert_eq!(no_purpose.0[0].field, "clients.x.purposes");
    }
}
