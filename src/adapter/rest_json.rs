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

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::spec::{CompiledKind, KindContext, lookup_map, type_name};
use super::template::{Target, Template};
use super::{
    Adapter, AdapterError, CanonicalRequest, MAX_REPLY_BYTES, Record, UpstreamReply,
    UpstreamRequest,
};
use crate::config::{ConfigErrors, FieldType};

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
    name: String,
    ty: FieldType,
    required: bool,
    pointer: Pointer,
    map: Vec<(String, Value)>,
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
    let mut datasets = Vec::new();
    if raw.datasets.is_empty() {
        errors.push(cx.err(
            "datasets",
            "the adapter serves no dataset",
            "add [datasets.<name>] tables",
        ));
    }
    for (name, d) in raw.datasets {
        let at = format!("datasets.{name}");
        let Some(spec) = cx.dataset(&name, &mut errors) else {
            continue;
        };
        let method = match d.method.as_str() {
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
        };
        let mut tpl = |field: String, src: &str, target: Target| -> Option<Template> {
            match Template::compile(src, target) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(cx.err(field, e, "fix the template"));
                    None
                }
            }
        };
        let path = tpl(format!("{at}.path"), &d.path, Target::Path);
        let query: Vec<_> = d
            .query
            .iter()
            .filter_map(|(k, v)| {
                let name = Template::compile(k, Target::Query)
                    .ok()
                    .filter(Template::is_literal);
                let Some(name) = name else {
                    errors.push(cx.err(
                        format!("{at}.query.{k}"),
                        "query parameter names must be literal",
                        "move placeholders into the value",
                    ));
                    return None;
                };
                let mut encoded = String::new();
                let _ = name.render_into(&dummy_request(), &mut encoded);
                let v = match Template::compile(v, Target::Query) {
                    Ok(t) => t,
                    Err(e) => {
                        errors.push(cx.err(format!("{at}.query.{k}"), e, "fix the template"));
                        return None;
                    }
                };
                Some((encoded, v))
            })
            .collect();
        let mut headers = Vec::new();
        for (k, v) in &d.headers {
            let field = format!("{at}.headers.{k}");
            let name = cx.header_name(k, &field, &mut errors);
            match Template::compile(v, Target::Header) {
                Ok(t) => {
                    if let Some(n) = name {
                        headers.push((n, t));
                    }
                }
                Err(e) => errors.push(cx.err(field, e, "fix the template")),
            }
        }
        let body = d
            .body
            .as_ref()
            .and_then(|b| match Template::compile(b, Target::Json) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(cx.err(format!("{at}.body"), e, "fix the JSON body template"));
                    None
                }
            });
        if body.is_some() && method == Some(Method::GET) {
            errors.push(cx.err(
                format!("{at}.body"),
                "a GET request has no body",
                "set method = \"POST\" or remove the body",
            ));
        }
        let r = &d.response;
        let record = pointer(cx, &mut errors, format!("{at}.response.record"), &r.record);
        let not_found_when = r.not_found_when.as_ref().and_then(|w| {
            pointer(
                cx,
                &mut errors,
                format!("{at}.response.not_found_when.pointer"),
                &w.pointer,
            )
            .map(|p| (p, w.equals.clone()))
        });
        cx.check_not_found_status(&r.not_found_status, &at, &mut errors);
        let fields_at = format!("{at}.response.fields");
        cx.check_fields(
            &spec,
            r.fields.keys().map(String::as_str),
            &fields_at,
            &mut errors,
        );
        let mut fields = Vec::new();
        for (fname, rule) in &r.fields {
            let Some(fs) = spec.field(fname) else {
                continue;
            };
            let fat = format!("{fields_at}.{fname}");
            let rule = match rule {
                Value::String(p) => RawRule {
                    pointer: p.clone(),
                    map: BTreeMap::new(),
                    items: BTreeMap::new(),
                },
                other => match serde_json::from_value::<RawRule>(other.clone()) {
                    Ok(r) => r,
                    Err(e) => {
                        errors.push(cx.err(
                            fat,
                            e.to_string(),
                            "write \"/pointer\" or { pointer = \"/p\", map = {..} } or \
                             { pointer = \"/p\", items = {..} }",
                        ));
                        continue;
                    }
                },
            };
            let Some(p) = pointer(cx, &mut errors, format!("{fat}.pointer"), &rule.pointer) else {
                continue;
            };
            let map = cx.value_map(&rule.map, fs.ty, &format!("{fat}.map"), &mut errors);
            if !rule.items.is_empty() && fs.ty != FieldType::Array {
                errors.push(cx.err(
                    format!("{fat}.items"),
                    format!(
                        "`items` needs an array field; `{fname}` is a {}",
                        type_name(fs.ty)
                    ),
                    "remove `items` or change the canonical type to array",
                ));
            }
            if !rule.items.is_empty() && !rule.map.is_empty() {
                errors.push(cx.err(&fat, "use either `map` or `items`", "remove one"));
            }
            let mut items = Vec::new();
            for (k, v) in &rule.items {
                if let Some(p) = pointer(cx, &mut errors, format!("{fat}.items.{k}"), v) {
                    items.push((k.clone(), p));
                }
            }
            fields.push(Field {
                name: fname.clone(),
                ty: fs.ty,
                required: fs.required,
                pointer: p,
                map,
                items,
            });
        }
        if let (Some(method), Some(path), Some(record)) = (method, path, record) {
            datasets.push(Dataset {
                name,
                method,
                path,
                query,
                headers,
                body,
                record,
                not_found_status: r.not_found_status.clone(),
                not_found_when,
                fields,
            });
        }
    }
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
        if reply.body.len() > MAX_REPLY_BYTES {
            return Err(AdapterError::ReplyTooLarge {
                limit: MAX_REPLY_BYTES,
            });
        }
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
                None | Some(Value::Null) => {
                    if f.required {
                        return Err(AdapterError::FieldMissing {
                            field: f.name.clone(),
                        });
                    }
                    continue;
                }
                Some(v) => v,
            };
            out.insert(f.name.clone(), map_value(f, v)?);
        }
        Ok(out)
    }
}

fn type_error(f: &Field) -> AdapterError {
    AdapterError::FieldType {
        field: f.name.clone(),
        expected: type_name(f.ty),
    }
}

fn map_value(f: &Field, v: &Value) -> Result<Value, AdapterError> {
    if !f.map.is_empty() {
        let key: Cow<'_, str> = match v {
            Value::String(s) => Cow::Borrowed(s),
            Value::Number(n) => Cow::Owned(n.to_string()),
            Value::Bool(b) => Cow::Owned(b.to_string()),
            _ => return Err(type_error(f)),
        };
        return lookup_map(&f.map, &key)
            .cloned()
            .ok_or_else(|| type_error(f));
    }
    if !f.items.is_empty() {
        let Value::Array(list) = v else {
            return Err(type_error(f));
        };
        let mut out = Vec::with_capacity(list.len());
        for el in list {
            if !el.is_object() {
                return Err(type_error(f));
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
        return Ok(Value::Array(out));
    }
    if f.ty.accepts(v) {
        Ok(v.clone())
    } else {
        Err(type_error(f))
    }
}
