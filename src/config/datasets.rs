//! `config/datasets.toml`: the canonical schema of each shared dataset.
//!
//! Departments name their fields in their own way (pinyin initials, SOAP
//! elements); the canonical schema is the one shape portals see.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// `lower-kebab-case` names for datasets, departments, scenarios (one
/// definition, in the config toolkit).
pub use super::toolkit::is_name;
use super::{ConfigError, ConfigErrors, parse_toml};

/// The type of one canonical field; adapters check mapped values against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldType {
    /// A JSON string.
    String,
    /// A calendar date, `YYYY-MM-DD`, carried as a JSON string.
    Date,
    /// A JSON integer.
    Integer,
    /// Any JSON number.
    Number,
    /// A JSON boolean.
    Boolean,
    /// A JSON array (e.g. the staff certificates of a company).
    Array,
    /// A JSON object.
    Object,
}

impl FieldType {
    /// True when `v` is a value of this type.
    pub fn accepts(self, v: &serde_json::Value) -> bool {
        use serde_json::Value;
        match self {
            FieldType::String => v.is_string(),
            FieldType::Date => v.as_str().is_some_and(is_iso_date),
            FieldType::Integer => v.is_i64() || v.is_u64(),
            FieldType::Number => v.is_number(),
            FieldType::Boolean => v.is_boolean(),
            FieldType::Array => matches!(v, Value::Array(_)),
            FieldType::Object => matches!(v, Value::Object(_)),
        }
    }
}

/// `YYYY-MM-DD` with plausible month and day.
fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let month = (b[5] - b'0') * 10 + (b[6] - b'0');
    let day = (b[8] - b'0') * 10 + (b[9] - b'0');
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// Which characters a subject id of a dataset may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectChars {
    /// ASCII letters and digits only (credit codes, ID numbers, certificate numbers).
    #[default]
    Alphanumeric,
    /// Any printable character except controls; adapters escape it per target.
    Printable,
}

/// One canonical field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    /// Canonical name, as portals see it.
    pub name: String,
    /// Its type.
    pub ty: FieldType,
    /// A record without it is a department error (502), not a partial answer.
    pub required: bool,
}

/// One dataset: who owns it, what its subject looks like, its canonical fields
/// and whether it may be cached and shared between scenarios.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// Canonical dataset name (`business-licence`).
    pub name: String,
    /// Human title for the catalog.
    pub title: String,
    /// The owning department (a key of `[departments]` in gateway.toml).
    pub department: String,
    /// The kind of subject it takes (`uscc`, `birth_cert`, `guardian_id`).
    pub subject_kind: String,
    /// Allowed characters of a subject id.
    pub subject_chars: SubjectChars,
    /// Longest accepted subject id, in bytes.
    pub subject_max_len: usize,
    /// Canonical fields, in declaration order.
    pub fields: Vec<FieldSpec>,
    /// May records be cached and shared between callers (after per-client field filtering)?
    pub shareable: bool,
    /// How long a cached record is fresh.
    pub ttl: Duration,
    /// How long past `ttl` a record may still be served when the department fails.
    pub max_stale: Duration,
    /// The usage notice attached to every reply.
    pub notice: String,
    /// The issuing authority named in every reply's `source.issuer`
    /// (e.g. "天津市市场监督管理委员会 / Tianjin Market Supervision Administration").
    pub issuer: String,
    /// Unconditional, or conditional (only under a live approval; the default).
    pub sharing: Sharing,
}

impl DatasetSpec {
    /// The field named `name`, if the schema has it.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Checks a subject id against this dataset's subject rules.
    pub fn subject_is_valid(&self, subject: &str) -> bool {
        !subject.is_empty()
            && subject.len() <= self.subject_max_len
            && match self.subject_chars {
                SubjectChars::Alphanumeric => subject.bytes().all(|b| b.is_ascii_alphanumeric()),
                SubjectChars::Printable => !subject.chars().any(char::is_control),
            }
    }
}

/// All datasets, by name. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Datasets {
    by_name: HashMap<String, Arc<DatasetSpec>>,
    /// Canonical forms of subject kinds (`[subject_kinds.<kind>]`).
    subject_case: HashMap<String, SubjectCase>,
}

/// The canonical form of a subject kind's ids (`case` in
/// `[subject_kinds.<kind>]` of datasets.toml). Reads, cache keys, department
/// calls and invalidations all use the canonical form, so `91120116ma07t6wn8f`
/// and `91120116MA07T6WN8F` are one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectCase {
    /// Ids are compared as given (the default).
    #[default]
    Exact,
    /// ASCII letters upper-cased (USCC, ID card numbers ending in `X`).
    Upper,
    /// ASCII letters lower-cased.
    Lower,
}

impl SubjectCase {
    /// `id` in this canonical form.
    pub fn apply(self, id: &str) -> String {
        match self {
            SubjectCase::Exact => id.to_string(),
            SubjectCase::Upper => id.to_ascii_uppercase(),
            SubjectCase::Lower => id.to_ascii_lowercase(),
        }
    }
}

impl Datasets {
    /// The dataset named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<DatasetSpec>> {
        self.by_name.get(name)
    }

    /// `id` of subject kind `kind` in its canonical form.
    pub fn canonical_subject(&self, kind: &str, id: &str) -> String {
        self.subject_case
            .get(kind)
            .copied()
            .unwrap_or_default()
            .apply(id)
    }

    /// All datasets, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<DatasetSpec>> {
        let mut v: Vec<_> = self.by_name.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.into_iter()
    }

    /// Number of datasets.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Builds the model from specs (used by tests and by the loader).
    pub fn from_specs(specs: impl IntoIterator<Item = DatasetSpec>) -> Self {
        Self {
            by_name: specs
                .into_iter()
                .map(|s| (s.name.clone(), Arc::new(s)))
                .collect(),
            subject_case: HashMap::new(),
        }
    }

    /// Parses and validates `datasets.toml`. `departments` are the department
    /// names declared in gateway.toml; a dataset owned by any other is refused.
    pub fn from_toml(
        file: &Path,
        text: &str,
        departments: &dyn Fn(&str) -> bool,
    ) -> Result<Self, ConfigErrors> {
        let raw: RawDatasetsFile = parse_toml(file, text)?;
        let mut errors = ConfigErrors::default();
        let mut specs = Vec::new();
        for (name, d) in raw.datasets {
            let at = |f: &str| format!("datasets.{name}.{f}");
            if !is_name(&name) {
                errors.push(ConfigError::new(
                    file,
                    format!("datasets.{name}"),
                    "dataset names must be lowercase letters, digits and '-'",
                    "rename the table, e.g. [datasets.business-licence]",
                ));
            }
            if !departments(&d.department) {
                errors.push(ConfigError::new(
                    file,
                    at("department"),
                    format!("unknown department `{}`", d.department),
                    "declare it under [departments] in gateway.toml or correct the name",
                ));
            }
            if d.fields.is_empty() {
                errors.push(ConfigError::new(
                    file,
                    at("fields"),
                    "a dataset needs at least one canonical field",
                    "add [datasets.NAME.fields.FIELD] tables",
                ));
            }
            if d.subject_max_len == 0 || d.subject_max_len > 256 {
                errors.push(ConfigError::new(
                    file,
                    at("subject_max_len"),
                    "must be between 1 and 256",
                    "set the longest valid subject id, e.g. 18 for a credit code",
                ));
            }
            match d.issuer.as_deref().map(str::trim) {
                None | Some("") => errors.push(ConfigError::new(
                    file,
                    at("issuer"),
                    "no issuing authority: every reply names who issued the record",
                    "add issuer = \"<authority's name>\", e.g. \"天津市市场监督管理委员会 / Tianjin Market Supervision Administration\"",
                )),
                Some(i) if i.chars().count() > 200 || i.chars().any(char::is_control) => {
                    errors.push(ConfigError::new(
                        file,
                        at("issuer"),
                        "the issuer must be at most 200 characters without control characters",
                        "give the authority's official name on one line",
                    ))
                }
                Some(_) => {}
            }
            let mut fields = Vec::new();
            for (fname, f) in d.fields {
                if !is_field_name(&fname) {
                    errors.push(ConfigError::new(
                        file,
                        format!("datasets.{name}.fields.{fname}"),
                        "field names must be lowercase letters, digits and '_'",
                        "rename the field",
                    ));
                }
                fields.push(FieldSpec {
                    name: fname,
                    ty: f.r#type,
                    required: f.required,
                });
            }
            specs.push(DatasetSpec {
                title: d.title.unwrap_or_else(|| name.clone()),
                name,
                department: d.department,
                subject_kind: d.subject_kind,
                subject_chars: d.subject_chars,
                subject_max_len: d.subject_max_len,
                fields,
                shareable: d.shareable,
                ttl: Duration::from_secs(d.ttl_secs),
                max_stale: Duration::from_secs(d.max_stale_secs),
                notice: d.notice.unwrap_or_else(|| {
                    "For government service handling only; do not disclose or reuse.".into()
                }),
                issuer: d.issuer.unwrap_or_default().trim().to_string(),
                sharing: d.sharing,
            });
        }
        for kind in raw.subject_kinds.keys() {
            if !specs.iter().any(|s| &s.subject_kind == kind) {
                errors.push(ConfigError::new(
                    file,
                    format!("subject_kinds.{kind}"),
                    format!("no dataset takes subjects of kind `{kind}`"),
                    "remove the table or correct the kind's name",
                ));
            }
        }
        let mut model = Self::from_specs(specs);
        model.subject_case = raw
            .subject_kinds
            .into_iter()
            .map(|(k, v)| (k, v.case))
            .collect();
        errors.into_result(model)
    }
}

/// Canonical field names: `lower_snake_case`.
fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatasetsFile {
    #[serde(default)]
    datasets: BTreeMap<String, RawDataset>,
    #[serde(default)]
    subject_kinds: BTreeMap<String, RawSubjectKind>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubjectKind {
    #[serde(default)]
    case: SubjectCase,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    title: Option<String>,
    department: String,
    subject_kind: String,
    #[serde(default)]
    subject_chars: SubjectChars,
    #[serde(default = "default_subject_max_len")]
    subject_max_len: usize,
    #[serde(default)]
    shareable: bool,
    #[serde(default = "default_ttl")]
    ttl_secs: u64,
    #[serde(default)]
    max_stale_secs: u64,
    notice: Option<String>,
    issuer: Option<String>,
    #[serde(default)]
    sharing: Sharing,
    #[serde(default)]
    fields: BTreeMap<String, RawField>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    r#type: FieldType,
    #[serde(default)]
    required: bool,
}

fn default_subject_max_len() -> usize {
    64
}

fn default_ttl() -> u64 {
    300
}

/// How a dataset may be shared (政务信息资源共享管理暂行办法: 无条件共享,
/// 有条件共享). Datasets that may not be shared at all are simply not
/// configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Sharing {
    /// Any client granted the dataset may read it.
    Unconditional,
    /// Only under a live approval named in the client's grant (the default:
    /// deny unless approved).
    #[default]
    Conditional,
}

impl Sharing {
    /// `unconditional` or `conditional`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Unconditional => "unconditional",
            Sharing::Conditional => "conditional",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[datasets.business-licence]
department = "market-supervision"
issuer = "天津市市场监督管理委员会"
sharing = "unconditional"
subject_kind = "uscc"
subject_max_len = 18
shareable = true
ttl_secs = 600
[datasets.business-licence.fields.uscc]
type = "string"
required = true
[datasets.business-licence.fields.valid_until]
type = "date"
"#;

    #[test]
    fn parses_a_dataset() {
        let d = Datasets::from_toml(Path::new("datasets.toml"), OK, &|d| {
            d == "market-supervision"
        })
        .unwrap();
        let bl = d.get("business-licence").unwrap();
        assert!(bl.shareable);
        assert_eq!(bl.issuer, "天津市市场监督管理委员会");
        assert_eq!(bl.sharing, Sharing::Unconditional);
        assert_eq!(bl.ttl, Duration::from_secs(600));
        assert!(bl.field("uscc").unwrap().required);
        assert!(bl.subject_is_valid("91120116MA07Q8XJ2K"));
        assert!(!bl.subject_is_valid("../x"));
    }

    #[test]
    fn unknown_department_is_named() {
        let err = Datasets::from_toml(Path::new("datasets.toml"), OK, &|_| false).unwrap_err();
        assert_eq!(err.0[0].field, "datasets.business-licence.department");
        assert!(err.to_string().contains("gateway.toml"));
    }

    #[test]
    fn issuer_is_required_and_sharing_defaults_to_conditional() {
        let text = OK.replace("issuer = \"天津市市场监督管理委员会\"\n", "");
        let err = Datasets::from_toml(Path::new("datasets.toml"), &text, &|_| true).unwrap_err();
        assert_eq!(err.0[0].field, "datasets.business-licence.issuer");
        let text = OK.replace("sharing = \"unconditional\"\n", "");
        let d = Datasets::from_toml(Path::new("datasets.toml"), &text, &|_| true).unwrap();
        assert_eq!(
            d.get("business-licence").unwrap().sharing,
            Sharing::Conditional
        );
        let text = OK.replace("\"unconditional\"", "\"sometimes\"");
        assert!(Datasets::from_toml(Path::new("datasets.toml"), &text, &|_| true).is_err());
    }

    #[test]
    fn date_type_checks_shape() {
        assert!(FieldType::Date.accepts(&serde_json::json!("2027-01-31")));
        assert!(!FieldType::Date.accepts(&serde_json::json!("2027-13-01")));
        assert!(!FieldType::Date.accepts(&serde_json::json!(20270131)));
    }
}
