//! `kind = "rest-json"`: JSON over HTTP, fields picked by JSON pointer.
//!
//! ```toml
//! [datasets.business-licence]
//! method = "GET"                                # GET (default) or POST
//! path = "/api/v2/licences/{subject}"           # placeholders percent-encoded
//! query = { purpose = "{purpose}", caseNo = "{case_id}" }   # empty values are left out
//! headers = { "X-Case-Id" = "{case_id}" }       # controls refused; empty values left out
//! # body = '''{"code": {subject}}'''            # JSON; placeholders become JSON strings
//! [datasets.business-licence.response]
//! record = "/data"                              # JSON pointer to the record (default: whole body)
//! not_found_status = [404]                      # default [404]
//! not_found_when = { pointer = "/code", equals = "E404" }   # optional: 2xx body meaning "no record"
//! [datasets.business-licence.response.fields]
//! uscc = "/tyshxydm"                            # canonical field = pointer inside the record
//! status = { pointer = "/djzt", map = { "存续" = "active", "吊销" = "revoked" } }
//! staff = { pointer = "/list", items = { name = "/xm", cert_no = "/zsbh" } }  # arrays of objects
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::compile::{DatasetInput, FieldRule, RawFieldRule};
use super::field::MappedField;
use super::spec::{CompiledKind, KindContext, type_name};
use super::template::{Target, Template};
use super::{Adapter, AdapterError, CanonicalRequest, Record, UpstreamReply, UpstreamRequest};
use crate::config::{ConfigErrors, DatasetSpec, FieldType};

/// The kind name.
pub const KIND: &str = "rest-json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRest {
    datasets: BTreeMap<String, RawDataset>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    #[serde(default = "default_method")]
    method: String,
    path: String,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    response: RawResponse,
}

fn default_method() -> String {
    "GET".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    #[serde(default)]
    record: String,
    #[serde(default = "default_not_found")]
    not_found_status: Vec<u16>,
    not_found_when: Option<RawNotFoundWhen>,
    fields: BTreeMap<String, Value>,
}

fn default_not_found() -> Vec<u16> {
    vec![404]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotFoundWhen {
    pointer: String,
    equals: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    pointer: String,
    #[serde(default)]
    map: BTreeMap<String, Value>,
    #[serde(default)]
    items: BTreeMap<String, String>,
}

/// A JSON pointer (RFC 6901), split into tokens at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pointer {
    tokens: Vec<String>,
}

impl Pointer {
    pub(crate) fn compile(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(Self { tokens: Vec::new() });
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(format!(
                "`{s}` is not a JSON pointer; it must start with `/`"
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut t = String::with_capacity(raw.len());
            let mut it = raw.chars();
            while let Some(c) = it.next() {
                if c == '~' {
                    match it.next() {
                        Some('0') => t.push('~'),
                        Some('1') => t.push('/'),
                        _ => return Err(format!("`{s}` has a bad `~` escape (use ~0 or ~1)")),
                    }
                } else {
                    t.push(c);
                }
            }
            tokens.push(t);
        }
        Ok(Self { tokens })
    }

    pub(crate) fn get<'v>(&self, mut v: &'v Value) -> Option<&'v Value> {
        for t in &self.tokens {
            v = match v {
                Value::Object(m) => m.get(t)?,
                Value::Array(a) => {
                    if t.len() > 1 && t.starts_with('0') {
                        return None;
                    }
                    a.get(t.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        Some(v)
    }
}

#[derive(Debug)]
struct Field {
    field: MappedField,
    pointer: Pointer,
    items: Vec<(String, Pointer)>,
}

#[derive(Debug)]
struct Dataset {
    name: String,
    method: Method,
    path: Template,
    query: Vec<(String, Template)>,
    headers: Vec<(HeaderName, Template)>,
    body: Option<Template>,
    record: Pointer,
    not_found_status: Vec<u16>,
    not_found_when: Option<(Pointer, Value)>,
    fields: Vec<Field>,
}

/// The compiled rest-json adapter of one department.
#[derive(Debug)]
pub struct RestJsonAdapter {
    base_path: String,
    datasets: Vec<Dataset>,
}

/// Compiles a rest-json section.
pub fn compile(
    cx: &KindContext<'_>,
    section: Map<String, Value>,
) -> Result<CompiledKind, ConfigErrors> {
    let raw: RawRest = cx.parse_section(section)?;
    let mut errors = ConfigErrors::default();
    let datasets = cx.compile_datasets(raw.datasets, &mut errors, |d, errors| {
        compile_dataset(cx, d, errors)
    });
    let names = datasets.iter().map(|d| d.name.clone()).collect();
    errors.into_result(CompiledKind {
        adapter: Box::new(RestJsonAdapter {
            base_path: cx.base_path.to_string(),
            datasets,
        }),
        datasets: names,
        endpoint: None,
    })
}

/// One `[datasets.<name>]` table: the request, then the response.
fn compile_dataset(
    cx: &KindContext<'_>,
    input: DatasetInput<RawDataset>,
    errors: &mut ConfigErrors,
) -> Option<Dataset> {
    let DatasetInput {
        name,
        at,
        spec,
        raw,
    } = input;
    let method = compile_method(cx, &raw.method, &at, errors);
    let path = cx.template(
        format!("{at}.path"),
        &raw.path,
        Target::Path,
        "fix the template",
        errors,
    );
    let query = compile_query(cx, &raw.query, &at, errors);
    let headers = cx.header_templates(&raw.headers, &at, errors);
    let body = compile_body(cx, raw.body.as_deref(), method.as_ref(), &at, errors);
    let r = raw.response;
    let record = pointer(cx, errors, format!("{at}.response.record"), &r.record);
    let not_found_when = r.not_found_when.as_ref().and_then(|w| {
        pointer(
            cx,
            errors,
            format!("{at}.response.not_found_when.pointer"),
            &w.pointer,
        )
        .map(|p| (p, w.equals.clone()))
    });
    cx.check_not_found_status(&r.not_found_status, &at, errors);
    let fields = compile_fields(cx, &spec, &r.fields, &at, errors);
    Some(Dataset {
        name,
        method: method?,
        path: path?,
        query,
        headers,
        body,
        record: record?,
        not_found_status: r.not_found_status,
        not_found_when,
        fields,
    })
}

fn compile_method(
    cx: &KindContext<'_>,
    method: &str,
    at: &str,
    errors: &mut ConfigErrors,
) -> Option<Method> {
    match method {
        "GET" => Some(Method::GET),
        "POST" => Some(Method::POST),
        other => {
            errors.push(cx.err(
                format!("{at}.method"),
                format!("method `{other}` is not supported for reads"),
                "use GET or POST",
            ));
            None
        }
    }
}

/// `query = { name = "template" }`: literal names (encoded once here),
/// templated values.
fn compile_query(
    cx: &KindContext<'_>,
    raw: &BTreeMap<String, String>,
    at: &str,
    errors: &mut ConfigErrors,
) -> Vec<(String, Template)> {
    let mut query = Vec::with_capacity(raw.len());
    for (k, v) in raw {
        let field = format!("{at}.query.{k}");
        let name = Template::compile(k, Target::Query)
            .ok()
            .filter(Template::is_literal);
        let Some(name) = name else {
            errors.push(cx.err(
                field,
                "query parameter names must be literal",
                "move placeholders into the value",
            ));
            continue;
        };
        let mut encoded = String::new();
        let _ = name.render_into(&dummy_request(), &mut encoded);
        if let Some(v) = cx.template(field, v, Target::Query, "fix the template", errors) {
            query.push((encoded, v));
        }
    }
    query
}

/// The JSON body template; only a POST has one.
fn compile_body(
    cx: &KindContext<'_>,
    body: Option<&str>,
    method: Option<&Method>,
    at: &str,
    errors: &mut ConfigErrors,
) -> Option<Template> {
    let body = body.and_then(|b| {
        cx.template(
            format!("{at}.body"),
            b,
            Target::Json,
            "fix the JSON body template",
            errors,
        )
    });
    if body.is_some() && method == Some(&Method::GET) {
        errors.push(cx.err(
            format!("{at}.body"),
            "a GET request has no body",
            "set method = \"POST\" or remove the body",
        ));
    }
    body
}

impl RawFieldRule for RawRule {
    const HINT: &'static str = "write \"/pointer\" or { pointer = \"/p\", map = {..} } or \
                                { pointer = \"/p\", items = {..} }";

    fn shorthand(s: &str) -> Self {
        RawRule {
            pointer: s.to_string(),
            map: BTreeMap::new(),
            items: BTreeMap::new(),
        }
    }

    fn value_map(&self) -> &BTreeMap<String, Value> {
        &self.map
    }
}

/// The response fields: a pointer each, and `items` for arrays of objects.
fn compile_fields(
    cx: &KindContext<'_>,
    spec: &DatasetSpec,
    raw: &BTreeMap<String, Value>,
    at: &str,
    errors: &mut ConfigErrors,
) -> Vec<Field> {
    cx.compile_fields(
        spec,
        raw,
        &format!("{at}.response.fields"),
        errors,
        |f: &FieldRule<'_, RawRule>, errors| {
            let FieldRule { at, spec, rule } = f;
            let p = pointer(cx, errors, format!("{at}.pointer"), &rule.pointer)?;
            if !rule.items.is_empty() && spec.ty != FieldType::Array {
                errors.push(cx.err(
                    format!("{at}.items"),
                    format!(
                        "`items` needs an array field; `{}` is a {}",
                        spec.name,
                        type_name(spec.ty)
                    ),
                    "remove `items` or change the canonical type to array",
                ));
            }
            if !rule.items.is_empty() && !rule.map.is_empty() {
                errors.push(cx.err(at, "use either `map` or `items`", "remove one"));
            }
            let mut items = Vec::new();
            for (k, v) in &rule.items {
                if let Some(p) = pointer(cx, errors, format!("{at}.items.{k}"), v) {
                    items.push((k.clone(), p));
                }
            }
            Some((p, items))
        },
    )
    .into_iter()
    .map(|(field, (pointer, items))| Field {
        field,
        pointer,
        items,
    })
    .collect()
}

fn pointer(
    cx: &KindContext<'_>,
    errors: &mut ConfigErrors,
    field: String,
    s: &str,
) -> Option<Pointer> {
    match Pointer::compile(s) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(cx.err(field, e, "write a JSON pointer such as /data/name"));
            None
        }
    }
}

fn dummy_request() -> CanonicalRequest<'static> {
    static EMPTY: std::sync::LazyLock<BTreeMap<String, String>> =
        std::sync::LazyLock::new(BTreeMap::new);
    CanonicalRequest {
        dataset: "",
        subject: "",
        subjects: &EMPTY,
        purpose: "",
        case_id: None,
        end_user: None,
    }
}

impl RestJsonAdapter {
    fn dataset(&self, name: &str) -> Result<&Dataset, AdapterError> {
        self.datasets
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| AdapterError::UnknownDataset(name.to_string()))
    }
}

fn header_value(name: &HeaderName, v: &str) -> Result<HeaderValue, AdapterError> {
    HeaderValue::from_str(v).map_err(|_| AdapterError::InvalidInput {
        input: name.as_str().to_string(),
        target: "header",
        reason: "not a valid header value",
    })
}

impl Adapter for RestJsonAdapter {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build_request(&self, req: &CanonicalRequest<'_>) -> Result<UpstreamRequest, AdapterError> {
        let d = self.dataset(req.dataset)?;
        let mut pq = String::with_capacity(self.base_path.len() + d.path.size_hint() + 64);
        pq.push_str(&self.base_path);
        d.path.render_into(req, &mut pq)?;
        let mut sep = '?';
        for (name, t) in &d.query {
            let mark = pq.len();
            pq.push(sep);
            pq.push_str(name);
            pq.push('=');
            let value_start = pq.len();
            t.render_into(req, &mut pq)?;
            if pq.len() == value_start {
                pq.truncate(mark);
            } else {
                sep = '&';
            }
        }
        let mut headers = HeaderMap::with_capacity(d.headers.len() + 2);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let mut buf = String::new();
        for (name, t) in &d.headers {
            buf.clear();
            t.render_into(req, &mut buf)?;
            if !buf.is_empty() {
                headers.insert(name.clone(), header_value(name, &buf)?);
            }
        }
        let body = match &d.body {
            Some(t) => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Bytes::from(t.render(req)?)
            }
            None => Bytes::new(),
        };
        Ok(UpstreamRequest {
            method: d.method.clone(),
            path_and_query: pq,
            headers,
            body,
        })
    }

    fn map_response(
        &self,
        dataset: &str,
        reply: UpstreamReply<'_>,
    ) -> Result<Record, AdapterError> {
        let d = self.dataset(dataset)?;
        let status = reply.status.as_u16();
        if d.not_found_status.contains(&status) {
            return Err(AdapterError::RecordNotFound);
        }
        if !reply.status.is_success() {
            return Err(AdapterError::DepartmentStatus(status));
        }
        let doc: Value = serde_json::from_slice(reply.body)
            .map_err(|e| AdapterError::MalformedReply(format!("not JSON: {e}")))?;
        if let Some((p, equals)) = &d.not_found_when
            && p.get(&doc) == Some(equals)
        {
            return Err(AdapterError::RecordNotFound);
        }
        let rec = match d.record.get(&doc) {
            Some(v @ Value::Object(_)) => v,
            _ => {
                return Err(AdapterError::MalformedReply(
                    "the record object is missing".into(),
                ));
            }
        };
        let mut out = Record::new();
        for f in &d.fields {
            let v = match f.pointer.get(rec) {
                None | Some(Value::Null) => None,
                Some(v) => Some(map_value(f, v)?),
            };
            f.field.put(&mut out, v)?;
        }
        Ok(out)
    }
}

/// A value found at the field's pointer: an array of objects picked apart
/// by `items`, else what every kind does ([`MappedField::convert_json`]).
fn map_value(f: &Field, v: &Value) -> Result<Value, AdapterError> {
    if f.items.is_empty() {
        return f.field.convert_json(v);
    }
    let Value::Array(list) = v else {
        return Err(f.field.type_error());
    };
    let mut out = Vec::with_capacity(list.len());
    for el in list {
        if !el.is_object() {
            return Err(f.field.type_error());
        }
        let mut item = Map::new();
        for (name, p) in &f.items {
            match p.get(el) {
                None | Some(Value::Null) => {}
                Some(x) => {
                    item.insert(name.clone(), x.clone());
                }
            }
        }
        out.push(Value::Object(item));
    }
    Ok(Value::Array(out))
}
