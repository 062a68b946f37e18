//! XML in one place: the streaming reply walker (what soap-xml replies and
//! envelope templates must satisfy), XML 1.0 characters and escaping, and the
//! position scanner that keeps template placeholders in text or attribute
//! values. Used by [`super::template`] (rendering, load checks) and
//! [`super::soap_xml`] (replies); depends on neither.

use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// Deepest element nesting accepted in a reply.
pub const MAX_DEPTH: usize = 64;

/// True for characters XML 1.0 allows in a document (`Char` production).
pub(crate) fn is_xml10_char(c: char) -> bool {
    matches!(c as u32,
        0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// XML-escapes `v` for text or a quoted attribute value. `>` is escaped too,
/// so `]]>` cannot end a CDATA section; CR, LF and TAB become character
/// references so they survive attribute-value normalisation.
pub(crate) fn write_escaped(v: &str, out: &mut String) -> Result<(), &'static str> {
    let mut start = 0;
    for (i, c) in v.char_indices() {
        let esc = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&apos;",
            '\t' => "&#9;",
            '\n' => "&#10;",
            '\r' => "&#13;",
            c if !is_xml10_char(c) => return Err("character not allowed in XML 1.0"),
            _ => continue,
        };
        out.push_str(&v[start..i]);
        out.push_str(esc);
        start = i + c.len_utf8();
    }
    out.push_str(&v[start..]);
    Ok(())
}

/// One step of the streaming walk.
pub(crate) enum Ev<'t> {
    /// An element opens (also for an empty element).
    Start,
    /// An element closes.
    End,
    /// Text (or one resolved reference) inside the current element.
    Text(&'t str),
}

/// Walks `xml`, calling `f(path, depth, event)` with the absolute local-name
/// path (`/Envelope/Body/...`) of the current element. Enforces: no DOCTYPE,
/// only predefined entities and valid character references, one root, no
/// text outside it, depth at most [`MAX_DEPTH`], all elements closed.
pub(crate) fn walk(
    xml: &str,
    mut f: impl FnMut(&str, usize, Ev<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut reader = Reader::from_str(xml);
    let mut path = String::with_capacity(128);
    let mut lens: Vec<usize> = Vec::with_capacity(16);
    let mut root_done = false;
    loop {
        let ev = reader.read_event().map_err(|e| e.to_string())?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root_done && lens.is_empty() {
                    return Err("more than one root element".into());
                }
                if lens.len() >= MAX_DEPTH {
                    return Err(format!("elements nested deeper than {MAX_DEPTH}"));
                }
                lens.push(path.len());
                path.push('/');
                path.push_str(e.local_name().as_ref());
                f(&path, lens.len(), Ev::Start)?;
                if matches!(ev, Event::Empty(_)) {
                    f(&path, lens.len(), Ev::End)?;
                    leave(&mut path, &mut lens, &mut root_done);
                }
            }
            Event::End(_) => {
                f(&path, lens.len(), Ev::End)?;
                leave(&mut path, &mut lens, &mut root_done);
            }
            Event::Text(t) => {
                let s = t.xml10_content();
                if lens.is_empty() {
                    if !s.trim_ascii().is_empty() {
                        return Err("text outside the root element".into());
                    }
                } else {
                    f(&path, lens.len(), Ev::Text(&s))?;
                }
            }
            Event::CData(c) => {
                if lens.is_empty() {
                    return Err("CDATA outside the root element".into());
                }
                let s = c.xml10_content();
                f(&path, lens.len(), Ev::Text(&s))?;
            }
            Event::GeneralRef(r) => {
                let resolved = match &*r {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "apos" => '\'',
                    "quot" => '"',
                    name => match r.resolve_char_ref() {
                        Ok(Some(c)) if is_xml10_char(c) => c,
                        Ok(Some(_)) | Err(_) => {
                            return Err(format!("invalid character reference `&{name};`"));
                        }
                        Ok(None) => return Err(format!("unknown entity `&{name};`")),
                    },
                };
                if lens.is_empty() {
                    return Err("reference outside the root element".into());
                }
                let mut buf = [0u8; 4];
                f(&path, lens.len(), Ev::Text(resolved.encode_utf8(&mut buf)))?;
            }
            // Entity declarations live in the DTD: refusing any DOCTYPE rules
            // out external entities (XXE) and entity expansion bombs.
            Event::DocType(_) => return Err("a DOCTYPE is not allowed".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => {
                if !lens.is_empty() {
                    return Err("unclosed element".into());
                }
                if !root_done {
                    return Err("no root element".into());
                }
                return Ok(());
            }
        }
    }
}

fn leave(path: &mut String, lens: &mut Vec<usize>, root_done: &mut bool) {
    if let Some(l) = lens.pop() {
        path.truncate(l);
    }
    if lens.is_empty() {
        *root_done = true;
    }
}

/// Checks that `xml` is a well-formed document under the reply rules (used
/// to validate envelope templates at load).
pub(crate) fn check_well_formed(xml: &str) -> Result<(), String> {
    walk(xml, |_, _, _| Ok(()))
}

/// The local name of the root element, if `xml` is well-formed.
pub(crate) fn root_name(xml: &str) -> Option<String> {
    let mut root = None;
    walk(xml, |path, depth, ev| {
        if depth == 1 && matches!(ev, Ev::Start) && root.is_none() {
            root = Some(path.trim_start_matches('/').to_string());
        }
        Ok(())
    })
    .ok()?;
    root
}

/// The local part of a qualified name (`soap:Client` -> `Client`).
pub(crate) fn local_part(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname).trim()
}

/// Trims XML whitespace (space, tab, CR, LF).
pub(crate) fn xml_trim(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// Where a position in an XML template is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XmlCtx {
    /// Element content.
    Text,
    /// Inside a start or end tag, outside attribute values.
    Tag,
    /// Inside an attribute value quoted with this byte.
    AttrValue(u8),
    /// Inside `<!-- -->`.
    Comment,
    /// Inside `<![CDATA[ ]]>`.
    CData,
    /// Inside `<? ?>`.
    Pi,
    /// Inside another `<! >` declaration.
    Decl,
}

/// Moves `ctx` over the literal text `l` of a template.
pub(crate) fn scan(l: &str, mut ctx: XmlCtx) -> Result<XmlCtx, String> {
    let b = l.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        match ctx {
            XmlCtx::Text if rest[0] == b'<' => {
                if rest.starts_with(b"<!--") {
                    ctx = XmlCtx::Comment;
                    i += 4;
                    continue;
                } else if rest.starts_with(b"<![CDATA[") {
                    ctx = XmlCtx::CData;
                    i += 9;
                    continue;
                } else if rest.starts_with(b"<?") {
                    ctx = XmlCtx::Pi;
                } else if rest.starts_with(b"<!") {
                    if rest.len() >= 9 && rest[2..9].eq_ignore_ascii_case(b"DOCTYPE") {
                        return Err("envelope templates may not contain a DOCTYPE".into());
                    }
                    ctx = XmlCtx::Decl;
                } else {
                    ctx = XmlCtx::Tag;
                }
            }
            XmlCtx::Tag if rest[0] == b'"' || rest[0] == b'\'' => ctx = XmlCtx::AttrValue(rest[0]),
            XmlCtx::Tag | XmlCtx::Decl if rest[0] == b'>' => ctx = XmlCtx::Text,
            XmlCtx::AttrValue(q) if rest[0] == q => ctx = XmlCtx::Tag,
            XmlCtx::Comment if rest.starts_with(b"-->") => {
                ctx = XmlCtx::Text;
                i += 3;
                continue;
            }
            XmlCtx::CData if rest.starts_with(b"]]>") => {
                ctx = XmlCtx::Text;
                i += 3;
                continue;
            }
            XmlCtx::Pi if rest.starts_with(b"?>") => {
                ctx = XmlCtx::Text;
                i += 2;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(ctx)
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// The text of the first element named `local` (test helper).
    pub(crate) fn text_of(xml: &str, local: &str) -> String {
        let mut out = String::new();
        let mut inside: Option<usize> = None;
        super::walk(xml, |path, depth, ev| {
            match ev {
                super::Ev::Start if inside.is_none() && path.ends_with(&format!("/{local}")) => {
                    inside = Some(depth)
                }
                super::Ev::Text(t) if inside == Some(depth) => out.push_str(t),
                super::Ev::End if inside == Some(depth) => inside = Some(usize::MAX),
                _ => {}
            }
            Ok(())
        })
        .unwrap();
        out
    }
}
