//! What every kind's compile step shares: the loop over the file's datasets
//! (each checked against the canonical schema), request templates, header
//! templates, and the field mapping compiled against the canonical dataset.
//! A kind supplies its raw types and the kind-specific part of each dataset
//! and field (pointer, element path, ...).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderName;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::field::MappedField;
use super::spec::KindContext;
use super::template::{Target, Template};
use crate::config::{ConfigErrors, DatasetSpec, FieldSpec};

/// One `[datasets.<name>]` table whose canonical dataset exists and belongs
/// to the department.
pub(crate) struct DatasetInput<D> {
    /// The dataset name.
    pub name: String,
    /// `datasets.<name>`, for messages.
    pub at: String,
    /// Its canonical schema.
    pub spec: Arc<DatasetSpec>,
    /// The table as written.
    pub raw: D,
}

/// A field rule as written in the adapter file: a plain string (shorthand)
/// or a table. Each kind's rule table implements this.
pub(crate) trait RawFieldRule: DeserializeOwned {
    /// How to write a rule, for the fix message of a malformed one.
    const HINT: &'static str;
    /// The rule written as a plain string (`uscc = "/tyshxydm"`).
    fn shorthand(s: &str) -> Self;
    /// Its `map` table (department value -> canonical value).
    fn value_map(&self) -> &BTreeMap<String, Value>;
}

/// One parsed field rule, handed to the kind's own step.
pub(crate) struct FieldRule<'a, R> {
    /// `datasets.<name>.response.fields.<field>`, for messages.
    pub at: String,
    /// The canonical field it maps.
    pub spec: &'a FieldSpec,
    /// The rule as written.
    pub rule: R,
}

impl KindContext<'_> {
    /// Runs `compile` on each dataset table whose canonical dataset exists
    /// and belongs to this department; a file with no dataset is an error.
    pub(crate) fn compile_datasets<D, T>(
        &self,
        raw: BTreeMap<String, D>,
        errors: &mut ConfigErrors,
        mut compile: impl FnMut(DatasetInput<D>, &mut ConfigErrors) -> Option<T>,
    ) -> Vec<T> {
        if raw.is_empty() {
            errors.push(self.err(
                "datasets",
                "the adapter serves no dataset",
                "add [datasets.<name>] tables",
            ));
        }
        let mut out = Vec::with_capacity(raw.len());
        for (name, raw) in raw {
            let at = format!("datasets.{name}");
            let Some(spec) = self.dataset(&name, errors) else {
                continue;
            };
            let input = DatasetInput {
                name,
                at,
                spec,
                raw,
            };
            if let Some(t) = compile(input, errors) {
                out.push(t);
            }
        }
        out
    }

    /// Compiles the `fields` table of a dataset's response against its
    /// canonical schema: names must be canonical fields and cover the required
    /// ones; each rule is parsed (shorthand or table), handed to `kind_part`
    /// (which returns `None` after recording why it cannot be used), and its
    /// value map compiled. `fields_at` is the table's path
    /// (`datasets.<name>.response.fields`), for messages.
    pub(crate) fn compile_fields<R: RawFieldRule, T>(
        &self,
        spec: &DatasetSpec,
        raw: &BTreeMap<String, Value>,
        fields_at: &str,
        errors: &mut ConfigErrors,
        mut kind_part: impl FnMut(&FieldRule<'_, R>, &mut ConfigErrors) -> Option<T>,
    ) -> Vec<(MappedField, T)> {
        self.check_fields(spec, raw.keys().map(String::as_str), fields_at, errors);
        let mut out = Vec::with_capacity(raw.len());
        for (name, rule) in raw {
            let Some(fs) = spec.field(name) else {
                continue;
            };
            let at = format!("{fields_at}.{name}");
            let rule = match rule {
                Value::String(s) => R::shorthand(s),
                other => match serde_json::from_value::<R>(other.clone()) {
                    Ok(r) => r,
                    Err(e) => {
                        errors.push(self.err(at, e.to_string(), R::HINT));
                        continue;
                    }
                },
            };
            let input = FieldRule { at, spec: fs, rule };
            let Some(part) = kind_part(&input, errors) else {
                continue;
            };
            let map = self.value_map(
                input.rule.value_map(),
                fs.ty,
                &format!("{}.map", input.at),
                errors,
            );
            let mapped = MappedField {
                name: name.clone(),
                ty: fs.ty,
                required: fs.required,
                map,
            };
            out.push((mapped, part));
        }
        out
    }

    /// Compiles a template, recording a failure on `field` with `fix`.
    pub(crate) fn template(
        &self,
        field: String,
        src: &str,
        target: Target,
        fix: &str,
        errors: &mut ConfigErrors,
    ) -> Option<Template> {
        Template::compile(src, target)
            .map_err(|e| errors.push(self.err(field, e, fix)))
            .ok()
    }

    /// Compiles a `headers` table (`name = "template"`): names a template may
    /// set, values header templates. `at` is `datasets.<name>`.
    pub(crate) fn header_templates(
        &self,
        raw: &BTreeMap<String, String>,
        at: &str,
        errors: &mut ConfigErrors,
    ) -> Vec<(HeaderName, Template)> {
        let mut headers = Vec::with_capacity(raw.len());
        for (k, v) in raw {
            let field = format!("{at}.headers.{k}");
            let name = self.header_name(k, &field, errors);
            let value = self.template(field, v, Target::Header, "fix the template", errors);
            if let (Some(n), Some(t)) = (name, value) {
                headers.push((n, t));
            }
        }
        headers
    }
}
