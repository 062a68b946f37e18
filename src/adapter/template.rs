//! Placeholder templates, compiled at load with the escaping of their target.
//!
//! A template is text with placeholders `{subject}`, `{subject.<kind>}`,
//! `{purpose}`, `{case_id}`, `{end_user}` and `{dataset}`; `{{` and `}}` are
//! literal braces. In a JSON body template a `{` followed by whitespace, `"` or
//! `}` and a lone `}` are also literal (JSON object braces), so
//! `{"code": {subject}}` works as written.
//!
//! The target (path, query, header, JSON, XML) is fixed at compile time and
//! decides how a value is escaped at render time: values can never change the
//! structure of what they are placed in. Rendering walks precompiled segments
//! and writes into one buffer; nothing is parsed per request.

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::xml::{self, XmlCtx};
use super::{AdapterError, CanonicalRequest};

/// Everything outside RFC 3986 `unreserved` is percent-encoded in path
/// segments and query components, so `/ ? # % & = +` and quotes are data.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Where a rendered template goes; decides escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The request path: values are percent-encoded as one path segment's data.
    Path,
    /// A query parameter name or value: values are percent-encoded.
    Query,
    /// A header value: control and non-ASCII characters are refused.
    Header,
    /// A JSON body: values render as JSON string literals (absent ones as `null`).
    Json,
    /// An XML body: values are XML-escaped; characters XML 1.0 forbids are refused.
    Xml,
}

impl Target {
    /// Lowercase name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Target::Path => "path",
            Target::Query => "query",
            Target::Header => "header",
            Target::Json => "json",
            Target::Xml => "xml",
        }
    }
}

/// One typed placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `{subject}`: the subject id of the dataset read.
    Subject,
    /// `{subject.<kind>}`: a scenario subject by kind (e.g. `guardian_id`).
    SubjectOf(String),
    /// `{purpose}`: the caller's declared purpose.
    Purpose,
    /// `{case_id}`: the service case id, when the caller sent one.
    CaseId,
    /// `{end_user}`: who is at the window, when the caller sent it.
    EndUser,
    /// `{dataset}`: the canonical dataset name.
    Dataset,
}

impl Placeholder {
    /// Parses a placeholder name as written between braces.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "subject" => Placeholder::Subject,
            "purpose" => Placeholder::Purpose,
            "case_id" => Placeholder::CaseId,
            "end_user" => Placeholder::EndUser,
            "dataset" => Placeholder::Dataset,
            _ => {
                let kind = name.strip_prefix("subject.")?;
                let ok = !kind.is_empty()
                    && kind.len() <= 64
                    && kind
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !ok {
                    return None;
                }
                Placeholder::SubjectOf(kind.to_string())
            }
        })
    }

    /// The placeholder as written, without braces (for messages).
    pub fn name(&self) -> String {
        match self {
            Placeholder::Subject => "subject".into(),
            Placeholder::SubjectOf(k) => format!("subject.{k}"),
            Placeholder::Purpose => "purpose".into(),
            Placeholder::CaseId => "case_id".into(),
            Placeholder::EndUser => "end_user".into(),
            Placeholder::Dataset => "dataset".into(),
        }
    }

    /// The value in `req`; `Ok(None)` for an absent optional input.
    pub(crate) fn value<'a>(
        &self,
        req: &CanonicalRequest<'a>,
    ) -> Result<Option<&'a str>, AdapterError> {
        Ok(match self {
            Placeholder::Subject => Some(req.subject),
            Placeholder::SubjectOf(kind) => match req.subjects.get(kind) {
                Some(v) => Some(v.as_str()),
                None => return Err(AdapterError::MissingInput(self.name())),
            },
            Placeholder::Purpose => Some(req.purpose),
            Placeholder::CaseId => req.case_id,
            Placeholder::EndUser => req.end_user,
            Placeholder::Dataset => Some(req.dataset),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Literal text, already in target form (query literals are pre-encoded).
    Lit(Box<str>),
    Var(Placeholder),
}

/// A compiled template. Build with [`Template::compile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    target: Target,
    segments: Vec<Segment>,
    literal_len: usize,
}

impl Template {
    /// Compiles `src` for `target`. The error is a sentence for the operator;
    /// the caller names the file and field.
    pub fn compile(src: &str, target: Target) -> Result<Self, String> {
        let segments = split(src, target)?;
        let mut t = Template {
            target,
            literal_len: 0,
            segments,
        };
        match target {
            Target::Path => check_path_literals(&t.segments)?,
            Target::Query => {
                for s in &mut t.segments {
                    if let Segment::Lit(l) = s {
                        *l = utf8_percent_encode(l, NOT_UNRESERVED)
                            .to_string()
                            .into_boxed_str();
                    }
                }
            }
            Target::Header => {
                for s in &t.segments {
                    if let Segment::Lit(l) = s
                        && l.bytes().any(|b| !(b == b' ' || b.is_ascii_graphic()))
                    {
                        return Err(
                            "header templates may only hold visible ASCII and spaces".into()
                        );
                    }
                }
            }
            Target::Json => check_json(&t)?,
            Target::Xml => check_xml(&t)?,
        }
        t.literal_len = t
            .segments
            .iter()
            .map(|s| match s {
                Segment::Lit(l) => l.len(),
                Segment::Var(_) => 0,
            })
            .sum();
        Ok(t)
    }

    /// The target this template escapes for.
    pub fn target(&self) -> Target {
        self.target
    }

    /// The placeholders used, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(p) => Some(p),
            Segment::Lit(_) => None,
        })
    }

    /// True when the template has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.placeholders().next().is_none()
    }

    /// A rough capacity for the rendered text.
    pub fn size_hint(&self) -> usize {
        self.literal_len + 32 * (self.segments.len() / 2 + 1)
    }

    /// Renders into `out`, escaping each value for the target.
    pub fn render_into(
        &self,
        req: &CanonicalRequest<'_>,
        out: &mut String,
    ) -> Result<(), AdapterError> {
        for s in &self.segments {
            match s {
                Segment::Lit(l) => out.push_str(l),
                Segment::Var(p) => {
                    let v = p.value(req)?;
                    write_value(self.target, p, v, out)?;
                }
            }
        }
        Ok(())
    }

    /// Renders into a new string.
    pub fn render(&self, req: &CanonicalRequest<'_>) -> Result<String, AdapterError> {
        let mut out = String::with_capacity(self.size_hint());
        self.render_into(req, &mut out)?;
        Ok(out)
    }
}

fn invalid(p: &Placeholder, target: Target, reason: &'static str) -> AdapterError {
    AdapterError::InvalidInput {
        input: p.name(),
        target: target.name(),
        reason,
    }
}

fn write_value(
    target: Target,
    p: &Placeholder,
    v: Option<&str>,
    out: &mut String,
) -> Result<(), AdapterError> {
    match target {
        Target::Path => {
            let Some(v) = v else {
                return Err(AdapterError::MissingInput(p.name()));
            };
            if v.is_empty() {
                return Err(invalid(p, target, "empty path segment"));
            }
            // `.`/`..` are unreserved yet would walk the path.
            if v.bytes().all(|b| b == b'.') {
                return Err(invalid(p, target, "dot-only path segment"));
            }
            extend_encoded(out, v);
        }
        Target::Query => extend_encoded(out, v.unwrap_or("")),
        Target::Header => {
            let v = v.unwrap_or("");
            if v.bytes().any(|b| b.is_ascii_control()) {
                return Err(invalid(p, target, "control character (CR, LF, NUL, ...)"));
            }
            if !v.is_ascii() {
                return Err(invalid(p, target, "non-ASCII character"));
            }
            out.push_str(v);
        }
        Target::Json => match v {
            Some(v) => write_json_string(v, out),
            None => out.push_str("null"),
        },
        Target::Xml => {
            xml::write_escaped(v.unwrap_or(""), out).map_err(|reason| invalid(p, target, reason))?
        }
    }
    Ok(())
}

fn extend_encoded(out: &mut String, v: &str) {
    for chunk in utf8_percent_encode(v, NOT_UNRESERVED) {
        out.push_str(chunk);
    }
}

/// Writes `v` as a JSON string literal.
pub(crate) fn write_json_string(v: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, c) in v.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{2028}' => Some("\\u2028"),
            '\u{2029}' => Some("\\u2029"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => None,
            _ => continue,
        };
        out.push_str(&v[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        start = i + c.len_utf8();
    }
    out.push_str(&v[start..]);
    out.push('"');
}

/// Splits `src` into literal and placeholder segments.
fn split(src: &str, target: Target) -> Result<Vec<Segment>, String> {
    let json = target == Target::Json;
    let mut segments = Vec::new();
    let mut lit = String::new();
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' if b.get(i + 1) == Some(&b'{') => {
                lit.push('{');
                i += 2;
            }
            b'{' if json
                && b.get(i + 1)
                    .is_none_or(|n| n.is_ascii_whitespace() || *n == b'"' || *n == b'}') =>
            {
                lit.push('{');
                i += 1;
            }
            b'{' => {
                let rest = &src[i + 1..];
                let Some(end) = rest.find('}') else {
                    return Err(format!(
                        "unclosed `{{` at byte {i}; write `{{{{` for a literal brace"
                    ));
                };
                let name = &rest[..end];
                let Some(p) = Placeholder::parse(name) else {
                    return Err(format!(
                        "unknown placeholder `{{{name}}}`; known: {{subject}}, {{subject.<kind>}}, \
                         {{purpose}}, {{case_id}}, {{end_user}}, {{dataset}}"
                    ));
                };
                if !lit.is_empty() {
                    segments.push(Segment::Lit(std::mem::take(&mut lit).into_boxed_str()));
                }
                segments.push(Segment::Var(p));
                i += end + 2;
            }
            b'}' if b.get(i + 1) == Some(&b'}') => {
                lit.push('}');
                i += 2;
            }
            b'}' if json => {
                lit.push('}');
                i += 1;
            }
            b'}' => {
                return Err(format!(
                    "unmatched `}}` at byte {i}; write `}}}}` for a literal brace"
                ));
            }
            _ => {
                // Copy the whole UTF-8 run up to the next brace.
                let next = src[i..].find(['{', '}']).map_or(src.len(), |n| i + n);
                lit.push_str(&src[i..next]);
                i = next;
            }
        }
    }
    if !lit.is_empty() {
        segments.push(Segment::Lit(lit.into_boxed_str()));
    }
    Ok(segments)
}

fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

fn check_path_literals(segments: &[Segment]) -> Result<(), String> {
    match segments.first() {
        Some(Segment::Lit(l)) if l.starts_with('/') => {}
        _ => return Err("a path template must start with `/`".into()),
    }
    let mut whole = String::new();
    for s in segments {
        match s {
            Segment::Lit(l) => {
                if let Some(b) = l.bytes().find(|b| !is_path_char(*b)) {
                    return Err(format!(
                        "path templates may not contain {:?} (no query, fragment, spaces \
                         or non-ASCII; put parameters under `query`)",
                        b as char
                    ));
                }
                whole.push_str(l);
            }
            Segment::Var(_) => whole.push('x'),
        }
    }
    if whole.contains("//") || whole.split('/').any(|s| s == "." || s == "..") {
        return Err("path templates may not contain `//`, `.` or `..` segments".into());
    }
    Ok(())
}

fn dummy_render(t: &Template, value: &str) -> String {
    let mut out = String::new();
    for s in &t.segments {
        match s {
            Segment::Lit(l) => out.push_str(l),
            Segment::Var(_) => out.push_str(value),
        }
    }
    out
}

fn check_json(t: &Template) -> Result<(), String> {
    let sample = dummy_render(t, "\"x\"");
    serde_json::from_str::<serde_json::Value>(&sample).map_err(|e| {
        format!(
            "the body is not valid JSON once placeholders are filled in ({e}); \
             placeholders render as JSON strings, so do not put them inside quotes"
        )
    })?;
    Ok(())
}

fn check_xml(t: &Template) -> Result<(), String> {
    let mut ctx = XmlCtx::Text;
    for s in &t.segments {
        match s {
            Segment::Lit(l) => ctx = xml::scan(l, ctx)?,
            Segment::Var(p) => {
                if !matches!(ctx, XmlCtx::Text | XmlCtx::AttrValue(_)) {
                    return Err(format!(
                        "placeholder `{{{}}}` must be in element text or a quoted attribute \
                         value, not in a tag name, comment, CDATA section or declaration",
                        p.name()
                    ));
                }
            }
        }
    }
    let sample = dummy_render(t, "x");
    xml::check_well_formed(&sample)
        .map_err(|e| format!("the envelope is not well-formed XML once filled in: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn req<'a>(subject: &'a str, subjects: &'a BTreeMap<String, String>) -> CanonicalRequest<'a> {
        CanonicalRequest {
            dataset: "business-licence",
            subject,
            subjects,
            purpose: "service-handling",
            case_id: Some("C-1"),
            end_user: None,
        }
    }

    const HOSTILE: &[&str] = &[
        "a/b",
        "a?b",
        "a#b",
        "a%2Fb",
        "a\"b",
        "a'b",
        "<x>",
        "]]>",
        "a\r\nX-Evil: 1",
        "a b",
        "a&b=c",
    ];

    #[test]
    fn unknown_placeholder_is_refused() {
        let e = Template::compile("/x/{subjekt}", Target::Path).unwrap_err();
        assert!(e.contains("unknown placeholder `{subjekt}`"), "{e}");
        assert!(Template::compile("/x/{subject.}", Target::Path).is_err());
        assert!(Template::compile("/x/{subject.A}", Target::Path).is_err());
    }

    #[test]
    fn unclosed_placeholder_is_refused() {
        let e = Template::compile("/x/{subject", Target::Path).unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
        assert!(Template::compile(r#"{"a": {subject"#, Target::Json).is_err());
        assert!(Template::compile("a}b", Target::Header).is_err());
    }

    #[test]
    fn double_braces_are_literal() {
        let m = BTreeMap::new();
        let t = Template::compile("{{x}}-{subject}", Target::Header).unwrap();
        assert_eq!(t.render(&req("S", &m)).unwrap(), "{x}-S");
    }

    #[test]
    fn path_values_never_change_structure() {
        let m = BTreeMap::new();
        let t = Template::compile("/api/{subject}/x", Target::Path).unwrap();
        for h in HOSTILE {
            let out = t.render(&req(h, &m)).unwrap();
            let mid = out
                .strip_prefix("/api/")
                .unwrap()
                .strip_suffix("/x")
                .unwrap();
            assert!(
                mid.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
                "{h:?} -> {out}"
            );
        }
        assert_eq!(
            t.render(&req("a/b?c#d%", &m)).unwrap(),
            "/api/a%2Fb%3Fc%23d%25/x"
        );
        for dots in [".", ".."] {
            assert!(matches!(
                t.render(&req(dots, &m)),
                Err(AdapterError::InvalidInput { target: "path", .. })
            ));
        }
        assert!(t.render(&req("", &m)).is_err());
    }

    #[test]
    fn path_literals_are_checked() {
        assert!(Template::compile("api/{subject}", Target::Path).is_err());
        assert!(Template::compile("/api?x={subject}", Target::Path).is_err());
        assert!(Template::compile("/api/../{subject}", Target::Path).is_err());
        assert!(Template::compile("/api//{subject}", Target::Path).is_err());
        assert!(Template::compile("/api/ x", Target::Path).is_err());
    }

    #[test]
    fn query_values_are_encoded() {
        let m = BTreeMap::new();
        let t = Template::compile("{subject}", Target::Query).unwrap();
        assert_eq!(
            t.render(&req("a&b=c d#e+f%", &m)).unwrap(),
            "a%26b%3Dc%20d%23e%2Bf%25"
        );
        assert_eq!(t.render(&req("x\r\ny", &m)).unwrap(), "x%0D%0Ay");
        let lit = Template::compile("a b&{purpose}", Target::Query).unwrap();
        assert_eq!(
            lit.render(&req("s", &m)).unwrap(),
            "a%20b%26service-handling"
        );
    }

    #[test]
    fn header_refuses_controls() {
        let m = BTreeMap::new();
        let t = Template::compile("id={subject}", Target::Header).unwrap();
        for bad in ["a\r\nX-Evil: 1", "a\nb", "a\0b", "a\tb", "a\u{7f}", "中"] {
            assert!(
                matches!(
                    t.render(&req(bad, &m)),
                    Err(AdapterError::InvalidInput {
                        target: "header",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(t.render(&req("a\"b<]]>", &m)).unwrap(), "id=a\"b<]]>");
        assert!(Template::compile("a\r\nb", Target::Header).is_err());
    }

    #[test]
    fn json_values_are_string_literals() {
        let m = BTreeMap::new();
        let t = Template::compile(
            r#"{"code": {subject}, "case": {case_id}, "u": {end_user}}"#,
            Target::Json,
        )
        .unwrap();
        for h in HOSTILE.iter().chain(&[
            "\"}, \"admin\": true, \"x\": {\"",
            "\\",
            "\u{1}",
            "\u{2028}",
        ]) {
            let out = t.render(&req(h, &m)).unwrap();
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["code"], *h, "{out}");
            assert_eq!(v.as_object().unwrap().len(), 3);
            assert!(v["u"].is_null());
        }
    }

    #[test]
    fn json_placeholder_inside_quotes_is_a_load_error() {
        let e = Template::compile(r#"{"code": "{subject}"}"#, Target::Json).unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        assert!(Template::compile(r#"{{"code": {subject}}}"#, Target::Json).is_ok());
    }

    #[test]
    fn xml_values_are_escaped_or_refused() {
        let m = BTreeMap::new();
        let t = Template::compile(r#"<a x="{subject}"><b>{subject}</b></a>"#, Target::Xml).unwrap();
        for h in HOSTILE {
            let out = t.render(&req(h, &m)).unwrap();
            assert!(!out.contains("]]>"), "{out}");
            // Parse it back: the value round-trips as text, structure unchanged.
            let text = super::super::xml::tests_support::text_of(&out, "b");
            assert_eq!(text, *h);
        }
        for bad in ["a\u{0}b", "a\u{1b}b", "\u{fffe}"] {
            assert!(matches!(
                t.render(&req(bad, &m)),
                Err(AdapterError::InvalidInput { target: "xml", .. })
            ));
        }
    }

    #[test]
    fn xml_placeholder_positions_are_checked() {
        for bad in [
            "<{subject}/>",
            "<a {subject}/>",
            "<a><!-- {subject} --></a>",
            "<a><![CDATA[{subject}]]></a>",
            "<?pi {subject}?><a/>",
        ] {
            assert!(Template::compile(bad, Target::Xml).is_err(), "{bad}");
        }
        assert!(Template::compile("<!DOCTYPE a><a>{subject}</a>", Target::Xml).is_err());
        assert!(Template::compile("<a>{subject}</b>", Target::Xml).is_err());
    }

    #[test]
    fn scenario_subjects_by_kind() {
        let mut m = BTreeMap::new();
        m.insert("guardian_id".to_string(), "120116199203154527".to_string());
        let t = Template::compile("/h/{subject.guardian_id}", Target::Path).unwrap();
        assert_eq!(t.render(&req("x", &m)).unwrap(), "/h/120116199203154527");
        let t = Template::compile("/h/{subject.birth_cert}", Target::Path).unwrap();
        assert_eq!(
            t.render(&req("x", &m)),
            Err(AdapterError::MissingInput("subject.birth_cert".into()))
        );
    }
}
