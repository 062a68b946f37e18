//! Attribution headers: why (`X-Purpose`), for whom at the window
//! (`X-End-User`) and in which service case (`X-Case-Id`). They are recorded
//! in the audit log, so they are bounded and printable (no CR/LF or other
//! controls that could forge log lines).

use http::HeaderMap;

use super::error::{AttributionError, AttributionProblem};

/// Longest accepted attribution header value, in bytes.
pub const MAX_ATTRIBUTION_BYTES: usize = 128;

/// The attribution of one request. `purpose` is required on data reads: the
/// pipeline passes it to [`crate::auth::ClientGrants::check_purpose`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    /// `X-Purpose`.
    pub purpose: Option<String>,
    /// `X-End-User`.
    pub end_user: Option<String>,
    /// `X-Case-Id`.
    pub case_id: Option<String>,
}

impl Attribution {
    /// Reads and checks the three headers; an absent header is `None`, a
    /// repeated, empty, oversize or non-printable one is a 400-class error
    /// naming the header.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, AttributionError> {
        Ok(Self {
            purpose: one(headers, "x-purpose", "X-Purpose")?,
            end_user: one(headers, "x-end-user", "X-End-User")?,
            case_id: one(headers, "x-case-id", "X-Case-Id")?,
        })
    }
}

fn one(
    headers: &HeaderMap,
    name: &'static str,
    display: &'static str,
) -> Result<Option<String>, AttributionError> {
    let err = |reason| AttributionError {
        header: display,
        reason,
    };
    let mut values = headers.get_all(name).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(err(AttributionProblem::Repeated));
    }
    check_value(display, v.as_bytes()).map(Some)
}

/// Checks one attribution value (raw bytes, as they came off the wire) for
/// header `display`: at most [`MAX_ATTRIBUTION_BYTES`], UTF-8, no control or
/// bidi-override characters, not blank. Returns it trimmed of spaces.
pub(crate) fn check_value(display: &'static str, bytes: &[u8]) -> Result<String, AttributionError> {
    let err = |reason| AttributionError {
        header: display,
        reason,
    };
    if bytes.len() > MAX_ATTRIBUTION_BYTES {
        return Err(err(AttributionProblem::TooLong(MAX_ATTRIBUTION_BYTES)));
    }
    let s = std::str::from_utf8(bytes).map_err(|_| err(AttributionProblem::NotPrintable))?;
    // `char::is_control` covers C0 (incl. CR, LF, NUL, TAB), DEL and C1.
    if s.chars().any(|c| c.is_control() || is_invisible_format(c)) {
        return Err(err(AttributionProblem::NotPrintable));
    }
    let s = s.trim_matches(' ');
    if s.is_empty() {
        return Err(err(AttributionProblem::Empty));
    }
    Ok(s.to_string())
}

/// Bidi overrides and line/paragraph separators: printable by Unicode class
/// but able to disguise a value in a log viewer.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_all_three() {
        let a = Attribution::from_headers(&headers(&[
            ("x-purpose", b"service-handling"),
            ("x-end-user", "clerk 王芳".as_bytes()),
            ("x-case-id", b"BH-2026-0001"),
        ]))
        .unwrap();
        assert_eq!(a.purpose.as_deref(), Some("service-handling"));
        assert_eq!(a.end_user.as_deref(), Some("clerk 王芳"));
        assert_eq!(a.case_id.as_deref(), Some("BH-2026-0001"));
        assert_eq!(
            Attribution::from_headers(&HeaderMap::new()).unwrap(),
            Attribution::default()
        );
    }

    #[test]
    fn refuses_controls_naming_the_header() {
        // HeaderValue refuses CR/LF/NUL/DEL itself; these are the ones it lets through.
        for (name, display, v) in [
            ("x-end-user", "X-End-User", &b"a\tb"[..]),
            ("x-purpose", "X-Purpose", "a\u{85}b".as_bytes()),
            ("x-end-user", "X-End-User", "a\u{202E}b".as_bytes()),
            ("x-case-id", "X-Case-Id", &b"\xff\xfe"[..]),
        ] {
            let e = Attribution::from_headers(&headers(&[(name, v)])).unwrap_err();
            assert_eq!(e.header, display);
            assert_eq!(e.reason, AttributionProblem::NotPrintable, "{v:?}");
        }
        let e = check_value("X-Case-Id", b"a\x7fb").unwrap_err();
        assert_eq!(e.reason, AttributionProblem::NotPrintable);
    }

    #[test]
    fn crlf_and_nul_are_refused() {
        // HeaderValue itself refuses CR/LF/NUL, so the raw check is tested.
        assert!(HeaderValue::from_bytes(b"a\r\nX-Evil: 1").is_err());
        for v in [
            &b"a\r\nX-Evil: 1"[..],
            b"a\nb",
            b"a\rb",
            b"a\0b",
            b"\x1b[31m",
        ] {
            let e = check_value("X-End-User", v).unwrap_err();
            assert_eq!(
                (e.header, e.reason),
                ("X-End-User", AttributionProblem::NotPrintable)
            );
        }
        assert_eq!(check_value("X-Case-Id", b" c-1 ").unwrap(), "c-1");
    }

    #[test]
    fn refuses_oversize_empty_and_repeated() {
        let long = vec![b'a'; MAX_ATTRIBUTION_BYTES + 1];
        let e = Attribution::from_headers(&headers(&[("x-case-id", &long)])).unwrap_err();
        assert_eq!(e.reason, AttributionProblem::TooLong(MAX_ATTRIBUTION_BYTES));
        let ok = vec![b'a'; MAX_ATTRIBUTION_BYTES];
        assert!(Attribution::from_headers(&headers(&[("x-case-id", &ok)])).is_ok());
        let e = Attribution::from_headers(&headers(&[("x-purpose", b"  ")])).unwrap_err();
        assert_eq!(e.reason, AttributionProblem::Empty);
        let e = Attribution::from_headers(&headers(&[("x-purpose", b"a"), ("x-purpose", b"b")]))
            .unwrap_err();
        assert_eq!(
            (e.header, e.reason),
            ("X-Purpose", AttributionProblem::Repeated)
        );
        assert_eq!(e.to_string(), "header X-Purpose: given more than once");
    }
}
