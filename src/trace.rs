//! W3C Trace Context (`traceparent`): accepted from callers when well-formed,
//! generated when absent, replaced when malformed, and propagated to
//! departments with the gateway's own span as parent.

use http::HeaderValue;

/// The trace context of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, never all zero.
    pub trace_id: String,
    /// The gateway's span id for this request (16 hex digits).
    pub span_id: String,
    /// Trace flags (2 hex digits).
    pub flags: String,
}

impl TraceContext {
    /// From the caller's `traceparent`; a missing or malformed one starts a
    /// new trace (malformed values are never propagated).
    pub fn from_header(v: Option<&HeaderValue>) -> Self {
        if let Some((trace_id, flags)) = v.and_then(|v| parse(v.as_bytes())) {
            return Self {
                trace_id,
                span_id: new_id(8),
                flags,
            };
        }
        Self {
            trace_id: new_id(16),
            span_id: new_id(8),
            flags: "01".into(),
        }
    }

    /// The `traceparent` to send to a department: same trace, our span as parent.
    pub fn header(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "00-{}-{}-{}",
            self.trace_id, self.span_id, self.flags
        ))
        .unwrap_or(HeaderValue::from_static(
            "00-00000000000000000000000000000001-0000000000000001-00",
        ))
    }
}

/// `version-traceid-parentid-flags`; returns (trace id, flags).
fn parse(b: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(b).ok()?;
    let mut it = s.split('-');
    let (version, trace, parent, flags) = (it.next()?, it.next()?, it.next()?, it.next()?);
    let hex = |x: &str, n: usize| {
        x.len() == n
            && x.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    // Version 00 has exactly four fields; later versions may append fields.
    if !hex(version, 2) || version == "ff" || (version == "00" && it.next().is_some()) {
        return None;
    }
    if !hex(trace, 32) || trace.bytes().all(|c| c == b'0') {
        return None;
    }
    if !hex(parent, 16) || parent.bytes().all(|c| c == b'0') || !hex(flags, 2) {
        return None;
    }
    Some((trace.to_string(), flags.to_string()))
}

fn new_id(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        let v: u64 = rand::random();
        out.push_str(&format!("{v:016x}"));
    }
    out.truncate(bytes * 2);
    if out.bytes().all(|c| c == b'0') {
        out.replace_range(out.len() - 1.., "1");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_traceparent_keeps_its_trace_id() {
        let v = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let t = TraceContext::from_header(Some(&v));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(
            t.span_id, "00f067aa0ba902b7",
            "the gateway is the new parent"
        );
        let out = t.header();
        assert!(
            out.to_str()
                .unwrap()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
    }

    #[test]
    fn malformed_traceparent_is_replaced_not_propagated() {
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage\r\ninjected: 1",
        ] {
            let v =
                HeaderValue::from_bytes(bad.as_bytes()).unwrap_or(HeaderValue::from_static("x"));
            let t = TraceContext::from_header(Some(&v));
            assert_ne!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!(t.trace_id.len(), 32);
            assert!(!t.header().to_str().unwrap().contains("extra"));
        }
    }

    #[test]
    fn absent_traceparent_starts_a_trace() {
        let t = TraceContext::from_header(None);
        assert_eq!(t.trace_id.len(), 32);
        assert_eq!(t.span_id.len(), 16);
    }
}
