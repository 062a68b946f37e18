//! Request path normalisation, done once before routing.
//!
//! The normalised path is what is routed, authorised, audited and forwarded,
//! so every component sees the same path. Anything whose meaning a department's
//! server could read differently from ours is refused as ambiguous (400)
//! rather than guessed at: encoded `/` and `\`, double encoding, NUL and
//! control bytes, dot-segments climbing above the root, and `;` path
//! parameters (raw or `%3B`): servers that strip `;params` before resolving
//! dot-segments (Tomcat, Jetty, WebLogic) would read `/a/..;/b` as `/b`.

use crate::error::RequestError;

/// Normalises an origin-form request path (without the query).
///
/// - `//` collapses to `/`;
/// - `.` and `..` segments (also as `%2e`) are resolved (RFC 3986 §5.2.4);
///   climbing above `/` is refused;
/// - percent-encoded unreserved characters are decoded, other escapes are
///   kept with upper-case hex;
/// - `%2F`, `%5C`, raw `\`, `%25XX` (double encoding), `%00`, control bytes and
///   malformed escapes are refused.
pub fn normalise(raw: &str) -> Result<String, RequestError> {
    use RequestError::AmbiguousPath as Ambiguous;
    if !raw.starts_with('/') {
        return Err(Ambiguous("path must start with '/'"));
    }
    let mut out: Vec<String> = Vec::new();
    let trailing = raw.len() > 1 && raw.ends_with('/');
    for seg in raw.split('/') {
        if seg.is_empty() {
            continue;
        }
        let seg = decode_segment(seg)?;
        match seg.as_str() {
            "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(Ambiguous("dot-segment climbs above the root"));
                }
            }
            _ => out.push(seg),
        }
    }
    let mut path = String::with_capacity(raw.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(path)
}

/// Decodes unreserved escapes in one segment and refuses ambiguous ones.
fn decode_segment(seg: &str) -> Result<String, RequestError> {
    use RequestError::AmbiguousPath as Ambiguous;
    let b = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(Ambiguous("malformed percent-escape"));
                };
                let v = h * 16 + l;
                match v {
                    b'/' | b'\\' => return Err(Ambiguous("encoded path separator")),
                    b';' => return Err(Ambiguous("path parameter delimiter `;`")),
                    b'%' => {
                        let next_is_escape = b.get(i + 3).copied().and_then(hex).is_some()
                            && b.get(i + 4).copied().and_then(hex).is_some();
                        if next_is_escape {
                            return Err(Ambiguous("double percent-encoding"));
                        }
                        out.push_str("%25");
                    }
                    0..=0x1f | 0x7f => return Err(Ambiguous("encoded control character")),
                    _ if is_unreserved(v) => out.push(v as char),
                    _ => {
                        out.push('%');
                        out.push(HEX[(v >> 4) as usize] as char);
                        out.push(HEX[(v & 0xf) as usize] as char);
                    }
                }
                i += 3;
            }
            b'\\' => return Err(Ambiguous("backslash in path")),
            b';' => return Err(Ambiguous("path parameter delimiter `;`")),
            0..=0x20 | 0x7f..=0xff => return Err(Ambiguous("raw control or non-ASCII byte")),
            _ => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Percent-decodes a normalised segment for use as a value (a subject id).
/// Normalised segments never hold encoded separators, so this cannot re-open
/// the path.
pub fn decode_value(seg: &str) -> Option<String> {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        normalise(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(ok("/v1/catalog"), "/v1/catalog");
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/v1/proxy/x/a/"), "/v1/proxy/x/a/");
    }

    #[test]
    fn double_slashes_collapse() {
        assert_eq!(ok("//v1//catalog"), "/v1/catalog");
    }

    #[test]
    fn dot_segments_resolve_before_routing() {
        assert_eq!(
            ok("/v1/proxy/market-supervision/../health-commission/x"),
            "/v1/proxy/health-commission/x"
        );
        assert_eq!(ok("/v1/./catalog"), "/v1/catalog");
        assert_eq!(
            ok("/v1/proxy/a/%2e%2e/b/x"),
            "/v1/proxy/b/x",
            "encoded dots resolve the same as plain ones"
        );
        assert_eq!(ok("/v1/proxy/a/%2E/x"), "/v1/proxy/a/x");
    }

    #[test]
    fn climbing_above_root_is_refused() {
        assert!(normalise("/../etc/passwd").is_err());
        assert!(normalise("/v1/../../x").is_err());
        assert!(normalise("/%2e%2e/x").is_err());
    }

    #[test]
    fn ambiguous_encodings_are_refused() {
        for p in [
            "/v1/proxy/a/..%2fb",
            "/v1/proxy/a/..%2Fb",
            "/v1/proxy/a/%5c..",
            "/v1/proxy/a/..\\b",
            "/v1/proxy/a/%252e%252e/b",
            "/v1/proxy/a/%00",
            "/v1/proxy/a/%zz",
            "/v1/proxy/a/%2",
            "/v1/proxy/a/..;/b",
            "/v1/proxy/a/x;x=1",
            "/v1/proxy/a/..%3b/b",
            "/v1/proxy/a/..%3B/b",
            "relative",
        ] {
            assert!(normalise(p).is_err(), "{p} should be refused");
        }
    }

    #[test]
    fn unreserved_escapes_decode_and_others_stay() {
        assert_eq!(ok("/v1/%41bc"), "/v1/Abc");
        assert_eq!(ok("/v1/a%3fb"), "/v1/a%3Fb");
        assert_eq!(ok("/v1/100%25"), "/v1/100%25");
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::normalise;

    /// Paths built from the pieces that matter to the normaliser.
    fn raw_path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/"),
            Just("//"),
            Just("."),
            Just(".."),
            Just("%2e"),
            Just("%2E"),
            Just("%2f"),
            Just("%2F"),
            Just("%5c"),
            Just("\\"),
            Just("%25"),
            Just("%"),
            Just("%41"),
            Just("%3f"),
            Just("%3b"),
            Just(";"),
            Just(";x=1"),
            Just("%00"),
            Just("a"),
            Just("b"),
            Just("v1"),
            Just("proxy"),
            Just("~"),
            Just("-"),
            Just("2"),
            Just("F"),
            Just("%e4%b8%ad"),
            Just("\u{4e2d}"),
            Just(" "),
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|v| format!("/{}", v.concat()))
    }

    fn any_path() -> impl Strategy<Value = String> {
        prop_oneof![raw_path(), any::<String>(), "/[ -~]{0,40}"]
    }

    fn check(out: &str) -> Result<(), TestCaseError> {
        prop_assert!(out.starts_with('/'), "{out}");
        for seg in out.split('/') {
            prop_assert!(seg != "." && seg != "..", "dot-segment in {out}");
        }
        let upper = out.to_ascii_uppercase();
        for bad in ["%2F", "%5C", "%2E", "%00", "\\", "//"] {
            prop_assert!(!upper.contains(bad), "{bad} in {out}");
        }
        prop_assert!(out.bytes().all(|b| b.is_ascii_graphic()), "{out}");
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        // Never panics; what it accepts is clean and normalising again
        // changes nothing.
        #[test]
        fn normalise_is_idempotent_and_clean(raw in any_path()) {
            if let Ok(out) = normalise(&raw) {
                check(&out)?;
                prop_assert_eq!(normalise(&out).ok(), Some(out.clone()), "{}", raw);
            }
        }

        // `;` (and its escape) never reaches routing, grants or a department.
        #[test]
        fn normalised_paths_hold_no_parameter_delimiter(raw in raw_path()) {
            if let Ok(out) = normalise(&raw) {
                prop_assert!(!out.contains(';') && !out.to_ascii_uppercase().contains("%3B"), "{}", out);
            }
        }
    }
}
