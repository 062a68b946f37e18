//! `kind = "soap-xml"`: SOAP 1.1 / 1.2 over HTTP, fields picked by element path.
//!
//! ```toml
//! soap_version = "1.1"                       # "1.1" (default) or "1.2"
//! [datasets.fire-safety-inspection]
//! path = "/services/FireSafetyInspection"    # placeholders percent-encoded
//! action = "urn:fire-rescue:GetInspection"   # SOAPAction (1.1) / action param (1.2)
//! envelope = '''<soap:Envelope ...>...<fr:CreditCode>{subject}</fr:CreditCode>...'''
//! [datasets.fire-safety-inspection.response]
//! record = "Envelope/Body/GetInspectionResponse/Inspection"   # local names
//! not_found_fault_string = "NO_RECORD"       # fault string containing this = no record
//! # not_found_fault_code = "NoRecord"        # or: fault (sub)code local part equal to this
//! [datasets.fire-safety-inspection.response.fields]
//! inspection_no = "InspectionNo"             # path below the record element
//! passed = { path = "Conclusion", map = { "合格" = true, "不合格" = false } }
//! ```
//!
//! Replies are parsed with quick-xml, streaming, without building a tree:
//! a DOCTYPE is refused (so no entity declarations: no XXE, no billion
//! laughs), only the five predefined entities and character references are
//! resolved (anything else is an error), depth and captured text are bounded.
//! Namespaces are ignored: paths match local names. Text converts to the
//! canonical type only where that is unambiguous (`xs:boolean`, integers,
//! finite numbers, ISO dates).

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::compile::{DatasetInput, FieldRule, RawFieldRule};
use super::field::MappedField;
use super::spec::{CompiledKind, KindContext, type_name};
use super::template::{Target, Template};
use super::xml::{Ev, is_xml10_char, local_part, root_name, walk, xml_trim};
use super::{Adapter, AdapterError, CanonicalRequest, Record, UpstreamReply, UpstreamRequest};
use crate::config::{ConfigErrors, DatasetSpec, FieldType};

/// The kind name.
pub const KIND: &str = "soap-xml";

pub use super::xml::MAX_DEPTH;

/// Longest text captured for one field (bytes).
pub const MAX_TEXT: usize = 64 * 1024;

const FAULT: &str = "/Envelope/Body/Fault";
/// Fault detail paths, captured after the fields: 1.1 faultcode, 1.1
/// faultstring, 1.2 Code/Value, 1.2 Code/Subcode/Value, 1.2 Reason/Text.
const FAULT_PATHS: [&str; 5] = [
    "/Envelope/Body/Fault/faultcode",
    "/Envelope/Body/Fault/faultstring",
    "/Envelope/Body/Fault/Code/Value",
    "/Envelope/Body/Fault/Code/Subcode/Value",
    "/Envelope/Body/Fault/Reason/Text",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSoap {
    #[serde(default = "default_version")]
    soap_version: String,
    datasets: BTreeMap<String, RawDataset>,
}

fn default_version() -> String {
    "1.1".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    path: String,
    action: Option<String>,
    envelope: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    response: RawResponse,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    record: String,
    #[serde(default)]
    not_found_status: Vec<u16>,
    not_found_fault_code: Option<String>,
    not_found_fault_string: Option<String>,
    fields: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: String,
    #[serde(default)]
    map: BTreeMap<String, Value>,
}

/// SOAP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    /// SOAP 1.1: `text/xml`, `SOAPAction` header.
    V11,
    /// SOAP 1.2: `application/soap+xml; action="..."`.
    V12,
}

#[derive(Debug)]
struct Dataset {
    name: String,
    path: Template,
    content_type: HeaderValue,
    soap_action: Option<HeaderValue>,
    headers: Vec<(HeaderName, Template)>,
    envelope: Template,
    record_path: String,
    /// Absolute paths of the fields (in `fields` order), then [`FAULT_PATHS`].
    capture_paths: Vec<String>,
    fields: Vec<MappedField>,
    not_found_status: Vec<u16>,
    not_found_fault_code: Option<String>,
    not_found_fault_string: Option<String>,
}

/// The compiled soap-xml adapter of one department.
#[derive(Debug)]
pub struct SoapXmlAdapter {
    base_path: String,
    version: SoapVersion,
    datasets: Vec<Dataset>,
}

fn is_local_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
}

/// Turns `A/B/C` into `/A/B/C`, checking each step is a local name.
fn element_path(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len() + 1);
    for step in s.split('/') {
        if !is_local_name(step) {
            return None;
        }
        out.push('/');
        out.push_str(step);
    }
    Some(out)
}

/// Compiles a soap-xml section.
pub fn compile(
    cx: &KindContext<'_>,
    section: Map<String, Value>,
) -> Result<CompiledKind, ConfigErrors> {
    let raw: RawSoap = cx.parse_section(section)?;
    let mut errors = ConfigErrors::default();
    let version = match raw.soap_version.as_str() {
        "1.1" => SoapVersion::V11,
        "1.2" => SoapVersion::V12,
        other => {
            errors.push(cx.err(
                "soap_version",
                format!("unknown SOAP version `{other}`"),
                "use \"1.1\" or \"1.2\"",
            ));
            SoapVersion::V11
        }
    };
    let datasets = cx.compile_datasets(raw.datasets, &mut errors, |d, errors| {
        compile_dataset(cx, version, d, errors)
    });
    let names = datasets.iter().map(|d| d.name.clone()).collect();
    errors.into_result(CompiledKind {
        adapter: Box::new(SoapXmlAdapter {
            base_path: cx.base_path.to_string(),
            version,
            datasets,
        }),
        datasets: names,
        endpoint: None,
    })
}

/// One `[datasets.<name>]` table: the request, then the response.
fn compile_dataset(
    cx: &KindContext<'_>,
    version: SoapVersion,
    input: DatasetInput<RawDataset>,
    errors: &mut ConfigErrors,
) -> Option<Dataset> {
    let DatasetInput {
        name,
        at,
        spec,
        raw,
    } = input;
    let path = cx.template(
        format!("{at}.path"),
        &raw.path,
        Target::Path,
        "fix the template",
        errors,
    );
    let envelope = compile_envelope(cx, &raw.envelope, &at, errors);
    let (content_type, soap_action) =
        action_headers(cx, version, raw.action.as_deref(), &at, errors);
    let headers = cx.header_templates(&raw.headers, &at, errors);
    let r = raw.response;
    let record_path = element_path(&r.record);
    if record_path.is_none() {
        errors.push(cx.err(
            format!("{at}.response.record"),
            format!("`{}` is not an element path", r.record),
            "write local names separated by `/`, e.g. Envelope/Body/GetXResponse/X",
        ));
    }
    let record_path = record_path.unwrap_or_default();
    cx.check_not_found_status(&r.not_found_status, &at, errors);
    let (fields, capture_paths) = compile_fields(cx, &spec, &r.fields, &at, &record_path, errors);
    Some(Dataset {
        name,
        path: path?,
        content_type,
        soap_action,
        headers,
        envelope: envelope?,
        record_path,
        capture_paths,
        fields,
        not_found_status: r.not_found_status,
        not_found_fault_code: r.not_found_fault_code,
        not_found_fault_string: r.not_found_fault_string,
    })
}

/// The envelope template: well-formed once filled in, rooted at an Envelope.
fn compile_envelope(
    cx: &KindContext<'_>,
    src: &str,
    at: &str,
    errors: &mut ConfigErrors,
) -> Option<Template> {
    let field = format!("{at}.envelope");
    let envelope = cx.template(field.clone(), src, Target::Xml, "fix the envelope", errors)?;
    let sample = envelope.render(&sample_request()).unwrap_or_default();
    if root_name(&sample).as_deref() != Some("Envelope") {
        errors.push(cx.err(
            field,
            "the root element is not a SOAP Envelope",
            "wrap the request in <soap:Envelope><soap:Body>...</soap:Body></soap:Envelope>",
        ));
    }
    Some(envelope)
}

/// `Content-Type` and (1.1 only) `SOAPAction` for the operation's action.
fn action_headers(
    cx: &KindContext<'_>,
    version: SoapVersion,
    action: Option<&str>,
    at: &str,
    errors: &mut ConfigErrors,
) -> (HeaderValue, Option<HeaderValue>) {
    let action = action.unwrap_or_default();
    if !action
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        errors.push(cx.err(
            format!("{at}.action"),
            "the action must be visible ASCII without quotes or backslashes",
            "use the operation's URI, e.g. urn:fire-rescue:GetInspection",
        ));
    }
    match version {
        SoapVersion::V11 => (
            HeaderValue::from_static("text/xml; charset=utf-8"),
            HeaderValue::from_str(&format!("\"{action}\"")).ok(),
        ),
        SoapVersion::V12 if action.is_empty() => (
            HeaderValue::from_static("application/soap+xml; charset=utf-8"),
            None,
        ),
        SoapVersion::V12 => (
            HeaderValue::from_str(&format!(
                "application/soap+xml; charset=utf-8; action=\"{action}\""
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("application/soap+xml")),
            None,
        ),
    }
}

impl RawFieldRule for RawRule {
    const HINT: &'static str = "write \"Element/Path\" or { path = \"Element\", map = {..} }";

    fn shorthand(s: &str) -> Self {
        RawRule {
            path: s.to_string(),
            map: BTreeMap::new(),
        }
    }

    fn value_map(&self) -> &BTreeMap<String, Value> {
        &self.map
    }
}

/// The response fields (scalars only, by element path below the record) and
/// the absolute paths to capture: the fields' in order, then [`FAULT_PATHS`].
fn compile_fields(
    cx: &KindContext<'_>,
    spec: &DatasetSpec,
    raw: &BTreeMap<String, Value>,
    at: &str,
    record_path: &str,
    errors: &mut ConfigErrors,
) -> (Vec<MappedField>, Vec<String>) {
    let mapped = cx.compile_fields(
        spec,
        raw,
        &format!("{at}.response.fields"),
        errors,
        |f: &FieldRule<'_, RawRule>, errors| {
            let FieldRule { at, spec, rule } = f;
            if matches!(spec.ty, FieldType::Array | FieldType::Object) {
                errors.push(cx.err(
                    at,
                    format!(
                        "soap-xml cannot map the {} field `{}`",
                        type_name(spec.ty),
                        spec.name
                    ),
                    "map it with a scalar canonical type",
                ));
                return None;
            }
            let Some(rel) = element_path(&rule.path) else {
                errors.push(cx.err(
                    at,
                    format!("`{}` is not an element path", rule.path),
                    "write local names below the record element, e.g. Result or Address/City",
                ));
                return None;
            };
            Some(rel)
        },
    );
    let mut fields = Vec::with_capacity(mapped.len());
    let mut capture_paths = Vec::with_capacity(mapped.len() + FAULT_PATHS.len());
    for (m, rel) in mapped {
        capture_paths.push(format!("{record_path}{rel}"));
        fields.push(m);
    }
    capture_paths.extend(FAULT_PATHS.iter().map(|s| s.to_string()));
    (fields, capture_paths)
}

fn sample_request() -> CanonicalRequest<'static> {
    static EMPTY: std::sync::LazyLock<BTreeMap<String, String>> =
        std::sync::LazyLock::new(BTreeMap::new);
    CanonicalRequest {
        dataset: "x",
        subject: "x",
        subjects: &EMPTY,
        purpose: "x",
        case_id: Some("x"),
        end_user: Some("x"),
    }
}

impl SoapXmlAdapter {
    fn dataset(&self, name: &str) -> Result<&Dataset, AdapterError> {
        self.datasets
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| AdapterError::UnknownDataset(name.to_string()))
    }

    /// The SOAP version.
    pub fn version(&self) -> SoapVersion {
        self.version
    }
}

/// What one walk over a reply captured.
struct Captured {
    slots: Vec<Option<String>>,
    fault: bool,
    records: u32,
}

fn capture(d: &Dataset, xml: &str) -> Result<Captured, String> {
    let nfields = d.fields.len();
    let mut c = Captured {
        slots: vec![None; d.capture_paths.len()],
        fault: false,
        records: 0,
    };
    let mut collecting: Option<(usize, usize)> = None;
    walk(xml, |path, depth, ev| {
        match ev {
            Ev::Start => {
                if path == d.record_path {
                    c.records += 1;
                } else if path == FAULT {
                    c.fault = true;
                }
                if collecting.is_none() {
                    for (i, p) in d.capture_paths.iter().enumerate() {
                        // Fields only from the first record element.
                        if p == path && c.slots[i].is_none() && (i >= nfields || c.records == 1) {
                            c.slots[i] = Some(String::new());
                            collecting = Some((i, depth));
                            break;
                        }
                    }
                }
            }
            Ev::Text(t) => {
                if let Some((i, dd)) = collecting
                    && dd == depth
                    && let Some(s) = c.slots[i].as_mut()
                {
                    if s.len() + t.len() > MAX_TEXT {
                        return Err(format!("a text node longer than {MAX_TEXT} bytes"));
                    }
                    s.push_str(t);
                }
            }
            Ev::End => {
                if collecting.is_some_and(|(_, dd)| dd == depth) {
                    collecting = None;
                }
            }
        }
        Ok(())
    })?;
    Ok(c)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// An element's text as the field's canonical value: through the map when
/// there is one, else parsed as the canonical type; empty text is no value
/// (except for a string).
fn convert(f: &MappedField, text: &str) -> Result<Option<Value>, AdapterError> {
    let bad = || f.type_error();
    let t = xml_trim(text);
    if !f.map.is_empty() {
        return f.mapped(t).map(Some);
    }
    if t.is_empty() && f.ty != FieldType::String {
        return Ok(None);
    }
    let v = match f.ty {
        FieldType::String => Value::String(t.to_string()),
        FieldType::Date => {
            let v = Value::String(t.to_string());
            if !f.ty.accepts(&v) {
                return Err(bad());
            }
            v
        }
        FieldType::Integer => Value::from(t.parse::<i64>().map_err(|_| bad())?),
        FieldType::Number => {
            let n = t.parse::<f64>().map_err(|_| bad())?;
            Value::Number(serde_json::Number::from_f64(n).ok_or_else(bad)?)
        }
        FieldType::Boolean => match t {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(bad()),
        },
        FieldType::Array | FieldType::Object => return Err(bad()),
    };
    Ok(Some(v))
}

impl Adapter for SoapXmlAdapter {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build_request(&self, req: &CanonicalRequest<'_>) -> Result<UpstreamRequest, AdapterError> {
        let d = self.dataset(req.dataset)?;
        let mut pq = String::with_capacity(self.base_path.len() + d.path.size_hint());
        pq.push_str(&self.base_path);
        d.path.render_into(req, &mut pq)?;
        let mut headers = HeaderMap::with_capacity(d.headers.len() + 3);
        headers.insert(header::CONTENT_TYPE, d.content_type.clone());
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(match self.version {
                SoapVersion::V11 => "text/xml",
                SoapVersion::V12 => "application/soap+xml",
            }),
        );
        if let Some(a) = &d.soap_action {
            headers.insert(HeaderName::from_static("soapaction"), a.clone());
        }
        let mut buf = String::new();
        for (name, t) in &d.headers {
            buf.clear();
            t.render_into(req, &mut buf)?;
            if !buf.is_empty() {
                let v = HeaderValue::from_str(&buf).map_err(|_| AdapterError::InvalidInput {
                    input: name.as_str().to_string(),
                    target: "header",
                    reason: "not a valid header value",
                })?;
                headers.insert(name.clone(), v);
            }
        }
        let body = d.envelope.render(req)?;
        Ok(UpstreamRequest {
            method: Method::POST,
            path_and_query: pq,
            headers,
            body: Bytes::from(body),
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
        let parsed = std::str::from_utf8(reply.body)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|xml| capture(d, xml));
        let c = match parsed {
            Ok(c) => c,
            Err(_) if !reply.status.is_success() => {
                return Err(AdapterError::DepartmentStatus(status));
            }
            Err(e) => return Err(AdapterError::MalformedReply(e)),
        };
        let nf = d.fields.len();
        if c.fault {
            let get = |k: usize| c.slots[nf + k].as_deref().map(xml_trim).unwrap_or("");
            let code = if get(0).is_empty() { get(2) } else { get(0) };
            let sub = get(3);
            let reason = if get(1).is_empty() { get(4) } else { get(1) };
            let code_hit = d
                .not_found_fault_code
                .as_deref()
                .is_some_and(|m| local_part(code) == m || local_part(sub) == m);
            let string_hit = d
                .not_found_fault_string
                .as_deref()
                .is_some_and(|m| reason.contains(m));
            if code_hit || string_hit {
                return Err(AdapterError::RecordNotFound);
            }
            return Err(AdapterError::DepartmentFault {
                code: truncate(code, 64),
                reason: truncate(reason, 200),
            });
        }
        if !reply.status.is_success() {
            return Err(AdapterError::DepartmentStatus(status));
        }
        if c.records == 0 {
            return Err(AdapterError::MalformedReply(format!(
                "the reply has no `{}` element",
                d.record_path
            )));
        }
        let mut out = Record::new();
        for (f, slot) in d.fields.iter().zip(&c.slots) {
            if let Some(text) = slot
                && text.chars().any(|ch| !is_xml10_char(ch))
            {
                return Err(AdapterError::MalformedReply(
                    "a character not allowed in XML 1.0".into(),
                ));
            }
            let v = match slot {
                Some(text) => convert(f, text)?,
                None => None,
            };
            f.put(&mut out, v)?;
        }
        Ok(out)
    }
}
