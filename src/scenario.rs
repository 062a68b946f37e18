//! Scenarios: one "thing" (open a restaurant, register a newborn) fans out to
//! several datasets concurrently and merges the parts into one reply.
//!
//! Each part goes through the same authorisation, cache and protections as a
//! single dataset read; this module only defines scenarios, validates the
//! request's subjects, runs the parts with their timeouts and merges.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::datasets::is_name;
use crate::config::toolkit::localized;
use crate::config::{ConfigError, ConfigErrors, Datasets, parse_toml};
use crate::lang::{Localized, RawLocalized};

mod guide;

pub use guide::Guide;

/// Whether a failed required part fails the whole scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Answer 200 with whatever parts succeeded; `complete` tells.
    #[default]
    Partial,
    /// Answer 424 with the parts when a required part fails.
    AllOrNothing,
}

/// One part of a scenario.
#[derive(Debug, Clone)]
pub struct Part {
    /// Part name in the reply.
    pub name: String,
    /// Dataset it reads.
    pub dataset: String,
    /// Which entry of the request's `subjects` is its subject.
    pub subject_kind: String,
    /// Optional parts ("may be supplied later") never fail the scenario.
    pub required: bool,
    /// Per-part deadline.
    pub timeout: Duration,
    /// What the applicant brings when the department has no record on file.
    pub bring: Localized,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Scenario name (file stem).
    pub name: String,
    /// Human title (the guide's English title).
    pub title: String,
    /// Partial or all-or-nothing.
    pub mode: Mode,
    /// Its parts, in declaration order.
    pub parts: Vec<Part>,
    /// The guide told to clerks and applicants.
    pub guide: Guide,
    /// How long an accepted case may wait for its outstanding parts
    /// (容缺受理: the applicant's promise to supply them), in days.
    pub supply_later: Duration,
}

/// All scenarios by name.
#[derive(Debug, Clone, Default)]
pub struct Scenarios {
    by_name: BTreeMap<String, Arc<Scenario>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    mode: Mode,
    #[serde(default = "default_timeout_ms")]
    part_timeout_ms: u64,
    #[serde(default = "default_supply_later_days")]
    supply_later_days: u32,
    guide: Option<guide::RawGuide>,
    parts: Vec<RawPart>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPart {
    name: Option<String>,
    dataset: String,
    subject: Option<String>,
    #[serde(default = "yes")]
    required: bool,
    timeout_ms: Option<u64>,
    bring: Option<RawLocalized>,
}

fn default_timeout_ms() -> u64 {
    5000
}

/// Default supply-later period: 30 days.
fn default_supply_later_days() -> u32 {
    30
}

/// Longest supply-later period accepted, in days.
const MAX_SUPPLY_LATER_DAYS: u32 = 365;

fn yes() -> bool {
    true
}

/// Extra time the scenario gives a part beyond its own timeout before
/// abandoning it, so the part's runner can record its own timeout first.
pub const PART_GRACE: Duration = Duration::from_millis(250);

/// Most subjects a scenario request may carry.
pub const MAX_SUBJECTS: usize = 16;

impl Scenarios {
    /// The scenario named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Scenario>> {
        self.by_name.get(name)
    }

    /// All scenarios, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Scenario>> {
        self.by_name.values()
    }

    /// Names of all scenarios.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Loads every `*.toml` in `dir`; the file stem is the scenario name.
    pub fn load_dir(dir: &Path, datasets: &Datasets) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut by_name = BTreeMap::new();
        let Some(files) = crate::config::read_toml_dir(dir, &mut errors)? else {
            return Ok(Self::default());
        };
        for crate::config::TomlFile {
            path: file,
            stem: name,
            text,
        } in files
        {
            match Self::parse(&file, &name, &text, datasets) {
                Ok(s) => {
                    by_name.insert(name, Arc::new(s));
                }
                Err(e) => errors.0.extend(e.0),
            }
        }
        errors.into_result(Self { by_name })
    }

    /// Guides name each part's department in both languages: every
    /// department a scenario reads from needs a Chinese title in
    /// gateway.toml (`title = { zh = "...", en = "..." }`). One error per
    /// department, naming `gateway`'s field.
    pub fn check_department_titles(
        &self,
        datasets: &Datasets,
        departments: &BTreeMap<String, crate::config::gateway::DepartmentSettings>,
        gateway: &Path,
        errors: &mut ConfigErrors,
    ) {
        let mut named = std::collections::BTreeSet::new();
        for s in self.iter() {
            for p in &s.parts {
                let Some(dept) = datasets.get(&p.dataset).map(|d| d.department.as_str()) else {
                    continue;
                };
                let has_zh = departments.get(dept).is_some_and(|d| d.title_zh.is_some());
                if !has_zh && named.insert(dept.to_string()) {
                    errors.push(ConfigError::new(
                        gateway,
                        format!("departments.{dept}.title.zh"),
                        format!(
                            "scenario `{}` reads from this department, and its guide needs the department's Chinese title",
                            s.name
                        ),
                        "write title = { zh = \"...\", en = \"...\" }",
                    ));
                }
            }
        }
    }

    /// Parses one scenario file.
    pub fn parse(
        file: &Path,
        name: &str,
        text: &str,
        datasets: &Datasets,
    ) -> Result<Scenario, ConfigErrors> {
        let raw: RawScenario = parse_toml(file, text)?;
        let mut errors = ConfigErrors::default();
        if !is_name(name) {
            errors.push(ConfigError::new(
                file,
                "(file name)",
                "scenario names must be lowercase letters, digits and '-'",
                "rename the file, e.g. open-restaurant.toml",
            ));
        }
        if raw.parts.is_empty() {
            errors.push(ConfigError::new(
                file,
                "parts",
                "a scenario needs at least one part",
                "add [[parts]] tables with a dataset each",
            ));
        }
        if !(1..=MAX_SUPPLY_LATER_DAYS).contains(&raw.supply_later_days) {
            errors.push(ConfigError::new(
                file,
                "supply_later_days",
                format!("must be between 1 and {MAX_SUPPLY_LATER_DAYS}"),
                "give the days an applicant has to supply outstanding parts, e.g. 30",
            ));
        }
        let guide = Guide::from_raw(raw.guide, file, &mut errors);
        let mut parts: Vec<Part> = Vec::new();
        for (i, p) in raw.parts.into_iter().enumerate() {
            let field = |f: &str| format!("parts[{i}].{f}");
            let bring = localized(
                p.bring,
                file,
                &field("bring"),
                "part's \"what to bring\"",
                &mut errors,
            );
            let Some(spec) = datasets.get(&p.dataset) else {
                errors.push(ConfigError::new(
                    file,
                    field("dataset"),
                    format!("unknown dataset `{}`", p.dataset),
                    "use a dataset declared in config/datasets.toml",
                ));
                continue;
            };
            let part_name = p.name.unwrap_or_else(|| p.dataset.clone());
            if parts.iter().any(|q| q.name == part_name) {
                errors.push(ConfigError::new(
                    file,
                    field("name"),
                    format!("duplicate part name `{part_name}`"),
                    "give each part a distinct name",
                ));
            }
            let timeout_ms = p.timeout_ms.unwrap_or(raw.part_timeout_ms);
            if timeout_ms == 0 || timeout_ms > 120_000 {
                errors.push(ConfigError::new(
                    file,
                    field("timeout_ms"),
                    "must be between 1 and 120000",
                    "use a few seconds, e.g. 3000",
                ));
            }
            parts.push(Part {
                name: part_name,
                dataset: p.dataset,
                subject_kind: p.subject.unwrap_or_else(|| spec.subject_kind.clone()),
                required: p.required,
                timeout: Duration::from_millis(timeout_ms),
                bring: bring.unwrap_or_else(|| Localized {
                    zh: String::new(),
                    en: String::new(),
                }),
            });
        }
        let Some(guide) = guide else {
            return Err(errors);
        };
        errors.into_result(Scenario {
            name: name.to_string(),
            title: guide.title.en.clone(),
            mode: raw.mode,
            parts,
            guide,
            supply_later: Duration::from_secs(u64::from(raw.supply_later_days) * 86_400),
        })
    }
}

/// The request body of `POST /v1/scenarios/{scenario}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioRequest {
    /// Subject kind -> subject id.
    pub subjects: BTreeMap<String, String>,
}

/// What is wrong with a scenario request (400, naming the subject).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ScenarioError {
    /// The body is not `{"subjects": {...}}`.
    #[error("body must be JSON {{\"subjects\": {{\"<kind>\": \"<id>\"}}}}: {0}")]
    BadBody(String),
    /// Too many subjects.
    #[error("at most {MAX_SUBJECTS} subjects")]
    TooManySubjects,
    /// A subject kind this scenario does not use.
    #[error("unknown subject kind `{0}` for this scenario")]
    UnknownKind(String),
    /// A subject kind the scenario needs is missing.
    #[error("missing subject `{0}`")]
    Missing(String),
    /// A subject id that the dataset would refuse.
    #[error("malformed subject `{0}`")]
    Malformed(String),
}

impl Scenario {
    /// Subject kinds this scenario uses.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(|p| p.subject_kind.as_str())
    }

    /// Parses and checks the request body against this scenario's parts.
    pub fn parse_request(
        &self,
        body: &[u8],
        datasets: &Datasets,
    ) -> Result<BTreeMap<String, String>, ScenarioError> {
        let req: ScenarioRequest = serde_json::from_slice(body).map_err(|e| {
            let mut s = e.to_string();
            s.truncate(200);
            ScenarioError::BadBody(s)
        })?;
        if req.subjects.len() > MAX_SUBJECTS {
            return Err(ScenarioError::TooManySubjects);
        }
        for kind in req.subjects.keys() {
            if !self.kinds().any(|k| k == kind) {
                let mut k = kind.clone();
                k.truncate(64);
                return Err(ScenarioError::UnknownKind(k));
            }
        }
        for p in &self.parts {
            match req.subjects.get(&p.subject_kind) {
                None if p.required => return Err(ScenarioError::Missing(p.subject_kind.clone())),
                None => {}
                Some(id) => {
                    let ok = datasets
                        .get(&p.dataset)
                        .is_some_and(|d| d.subject_is_valid(id));
                    if !ok {
                        return Err(ScenarioError::Malformed(p.subject_kind.clone()));
                    }
                }
            }
        }
        Ok(req.subjects)
    }
}

/// How one part ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartStatus {
    /// The record is here.
    Ok,
    /// The department has no such record (yet).
    Missing,
    /// The department failed, timed out, or is protected right now.
    Error,
    /// The client is not granted this dataset.
    Denied,
}

/// One part of the reply.
#[derive(Debug, Clone, Serialize)]
pub struct PartResult {
    /// ok, missing, error, denied.
    pub status: PartStatus,
    /// The status a single read would have answered.
    pub http_status: u16,
    /// The record, filtered to the client's fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
    /// Why not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For an ok part: the record's provenance and signature (`dataset`,
    /// `subject`, `source`, `notice`, `signature`), flattened into the part
    /// so the part verifies like a dataset reply (docs/SIGNATURES.md).
    #[serde(flatten)]
    pub signed: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The scenario reply (see docs/ARCHITECTURE.md).
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReply {
    /// Scenario name.
    pub scenario: String,
    /// True when every part is ok.
    pub complete: bool,
    /// Part name -> result.
    pub parts: BTreeMap<String, PartResult>,
}

impl Scenario {
    /// Runs every part concurrently with its timeout, then merges. Returns the
    /// reply and whether a required part failed (for all-or-nothing: 424).
    pub async fn run<'a, F, Fut>(
        &'a self,
        subjects: &'a BTreeMap<String, String>,
        run_part: F,
    ) -> (ScenarioReply, bool)
    where
        F: Fn(&'a Part, &'a str) -> Fut,
        Fut: Future<Output = PartResult> + 'a,
    {
        self.run_only(subjects, None, run_part).await
    }

    /// As [`Scenario::run`], for the parts named in `only` (all when `None`):
    /// a case refresh fetches just its outstanding parts. The reply holds
    /// only the parts run.
    pub async fn run_only<'a, F, Fut>(
        &'a self,
        subjects: &'a BTreeMap<String, String>,
        only: Option<&'a std::collections::BTreeSet<String>>,
        run_part: F,
    ) -> (ScenarioReply, bool)
    where
        F: Fn(&'a Part, &'a str) -> Fut,
        Fut: Future<Output = PartResult> + 'a,
    {
        let selected = self
            .parts
            .iter()
            .filter(|p| only.is_none_or(|names| names.contains(&p.name)));
        let futs = selected.map(|p| {
            let subject = subjects.get(&p.subject_kind);
            let fut = subject.map(|s| run_part(p, s.as_str()));
            async move {
                let r = match fut {
                    None => PartResult {
                        status: PartStatus::Missing,
                        http_status: 400,
                        record: None,
                        detail: Some(format!("no `{}` subject given", p.subject_kind)),
                        signed: None,
                    },
                    // The runner is expected to enforce `p.timeout` itself (and
                    // record the outcome); this deadline is a backstop.
                    Some(fut) => match tokio::time::timeout(p.timeout + PART_GRACE, fut).await {
                        Ok(r) => r,
                        Err(_) => PartResult {
                            status: PartStatus::Error,
                            http_status: 504,
                            record: None,
                            detail: Some("the department did not answer in time".into()),
                            signed: None,
                        },
                    },
                };
                (p, r)
            }
        });
        let results = futures_util::future::join_all(futs).await;
        let mut failed_required = false;
        let mut parts = BTreeMap::new();
        for (p, r) in results {
            if p.required && r.status != PartStatus::Ok {
                failed_required = true;
            }
            parts.insert(p.name.clone(), r);
        }
        let complete = parts.values().all(|r| r.status == PartStatus::Ok);
        (
            ScenarioReply {
                scenario: self.name.clone(),
                complete,
                parts,
            },
            failed_required,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datasets() -> Datasets {
        let text = r#"
[datasets.business-licence]
department = "ms"
issuer = "Market supervision"
subject_kind = "uscc"
subject_max_len = 18
[datasets.business-licence.fields.uscc]
type = "string"
[datasets.fire-safety-inspection]
department = "fr"
issuer = "Fire and rescue"
subject_kind = "uscc"
subject_max_len = 18
[datasets.fire-safety-inspection.fields.no]
type = "string"
"#;
        Datasets::from_toml(Path::new("d.toml"), text, &|_| true).unwrap()
    }

    const GUIDE: &str = r#"
[guide]
title = { zh = "开办餐饮店", en = "Open a restaurant" }
summary = { zh = "一次办", en = "At one window" }
time_limit_days = 5
legal_basis = [{ zh = "《食品安全法》", en = "Food Safety Law" }]
"#;

    fn scenario() -> Scenario {
        let text = format!(
            r#"mode = "all-or-nothing"
supply_later_days = 20
{GUIDE}
[[parts]]
dataset = "business-licence"
bring = {{ zh = "营业执照", en = "Business licence" }}
[[parts]]
dataset = "fire-safety-inspection"
required = false
bring = {{ zh = "检查合格证", en = "Inspection certificate" }}
"#
        );
        Scenarios::parse(Path::new("s.toml"), "open-restaurant", &text, &datasets()).unwrap()
    }

    #[test]
    fn guide_is_read_and_checked() {
        let s = scenario();
        assert_eq!(s.title, "Open a restaurant");
        assert_eq!(s.guide.title.zh, "开办餐饮店");
        assert_eq!(s.guide.time_limit_days, 5);
        assert_eq!(s.supply_later, Duration::from_secs(20 * 86_400));
        assert_eq!(s.parts[1].bring.en, "Inspection certificate");
        // No Chinese title; a part without "what to bring"; no guide at all.
        let text = GUIDE.replace("zh = \"开办餐饮店\", ", "")
            + "[[parts]]\ndataset = \"business-licence\"\n";
        let e = Scenarios::parse(Path::new("s.toml"), "x", &text, &datasets()).unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["guide.title.zh", "parts[0].bring.zh", "parts[0].bring.en"]
        );
        let e = Scenarios::parse(
            Path::new("s.toml"),
            "x",
            "[[parts]]\ndataset = \"business-licence\"\nbring = { zh = \"a\", en = \"b\" }\n",
            &datasets(),
        )
        .unwrap_err();
        assert_eq!(e.0[0].field, "guide");
    }

    #[test]
    fn unknown_dataset_is_named() {
        let text =
            format!("{GUIDE}[[parts]]\ndataset = \"nope\"\nbring = {{ zh = \"a\", en = \"b\" }}\n");
        let e = Scenarios::parse(Path::new("s.toml"), "x", &text, &datasets()).unwrap_err();
        assert_eq!(e.0[0].field, "parts[0].dataset");
    }

    #[test]
    fn request_subjects_are_checked() {
        let s = scenario();
        let d = datasets();
        assert!(
            s.parse_request(br#"{"subjects":{"uscc":"91120116MA07Q8XJ2K"}}"#, &d)
                .is_ok()
        );
        assert_eq!(
            s.parse_request(br#"{"subjects":{}}"#, &d),
            Err(ScenarioError::Missing("uscc".into()))
        );
        assert_eq!(
            s.parse_request(br#"{"subjects":{"uscc":"../x"}}"#, &d),
            Err(ScenarioError::Malformed("uscc".into()))
        );
        assert_eq!(
            s.parse_request(br#"{"subjects":{"uscc":"A","pet":"B"}}"#, &d),
            Err(ScenarioError::UnknownKind("pet".into()))
        );
        assert!(matches!(
            s.parse_request(b"[1,2]", &d),
            Err(ScenarioError::BadBody(_))
        ));
        let many: BTreeMap<String, String> = (0..100)
            .map(|i| (format!("k{i}"), "x".to_string()))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "subjects": many })).unwrap();
        assert_eq!(
            s.parse_request(&body, &d),
            Err(ScenarioError::TooManySubjects)
        );
    }

    #[tokio::test]
    async fn optional_part_failure_keeps_the_scenario_alive() {
        let s = scenario();
        let subjects: BTreeMap<_, _> = [("uscc".to_string(), "A".to_string())].into();
        let (reply, failed_required) = s
            .run(&subjects, |p, _| async move {
                if p.required {
                    PartResult {
                        status: PartStatus::Ok,
                        http_status: 200,
                        record: Some(serde_json::json!({})),
                        detail: None,
                        signed: None,
                    }
                } else {
                    PartResult {
                        status: PartStatus::Missing,
                        http_status: 404,
                        record: None,
                        detail: None,
                        signed: None,
                    }
                }
            })
            .await;
        assert!(!failed_required);
        assert!(!reply.complete);
        assert_eq!(
            reply.parts["fire-safety-inspection"].status,
            PartStatus::Missing
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_part_times_out_as_error() {
        let s = scenario();
        let subjects: BTreeMap<_, _> = [("uscc".to_string(), "A".to_string())].into();
        let (reply, failed_required) = s
            .run(&subjects, |_, _| async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                PartResult {
                    status: PartStatus::Ok,
                    http_status: 200,
                    record: None,
                    detail: None,
                    signed: None,
                }
            })
            .await;
        assert!(failed_required);
        assert_eq!(reply.parts["business-licence"].http_status, 504);
    }
}
