//! Which caller headers a proxied request carries to a department: an
//! allow-list, never a deny-list.
//!
//! A header a department's server (or a proxy in front of it) may read as
//! routing (`X-HTTP-Method-Override`, `X-Original-URL`, `X-Rewrite-URL`,
//! `X-Forwarded-*`, `Forwarded`, ...) would let a caller bypass the method
//! and path grants, so nothing passes unless named here or declared by the
//! department's adapter (`forward_headers = [...]`, checked by
//! [`check_declared`]). The gateway then adds its own headers (`Via`,
//! `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Request-Id`, `traceparent`,
//! the upstream credential); `Content-Length` is set by the HTTP client from
//! the body.

use http::header::{self, HeaderMap, HeaderName};

/// End-to-end headers every department may need.
pub const FORWARDED_ALWAYS: [HeaderName; 14] = [
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::CONTENT_TYPE,
    header::CONTENT_LANGUAGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("x-purpose"),
    HeaderName::from_static("x-end-user"),
    HeaderName::from_static("x-case-id"),
];

/// Longest `tracestate` passed on (W3C Trace Context: 512 is what vendors
/// must accept).
const MAX_TRACESTATE: usize = 512;

/// The caller headers to forward: those in [`FORWARDED_ALWAYS`] plus the
/// adapter's `declared` ones, every value of each; everything else dropped.
pub fn forwardable(caller: &HeaderMap, declared: &[HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED_ALWAYS.iter().chain(declared) {
        for v in caller.get_all(name) {
            if name == "tracestate" && v.len() > MAX_TRACESTATE {
                continue;
            }
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// Why a declared `forward_headers` entry is refused, or the header name.
pub fn check_declared(raw: &str) -> Result<HeaderName, &'static str> {
    let name = HeaderName::from_bytes(raw.as_bytes()).map_err(|_| "not a valid header name")?;
    let n = name.as_str();
    let routing = n.starts_with("x-forwarded-")
        || n.starts_with("x-original-")
        || n.starts_with("x-rewrite-")
        || n.starts_with("proxy-")
        || n.contains("method-override")
        || matches!(
            n,
            "forwarded"
                | "x-http-method"
                | "x-method"
                | "x-real-ip"
                | "x-client-ip"
                | "x-host"
                | "x-forwarded"
                | "x-envoy-original-path"
                | "x-accel-redirect"
                | "via"
        );
    let ours = matches!(
        n,
        "authorization" | "cookie" | "x-request-id" | "traceparent" | "www-authenticate"
    );
    if routing {
        Err("routing headers cannot be forwarded (a department could read them as method or path)")
    } else if ours || is_reserved_header(n) {
        Err("this header belongs to the gateway or the HTTP connection")
    } else {
        Ok(name)
    }
}

/// Headers a template may not set: framing, routing and hop-by-hop headers,
/// which belong to the upstream client.
pub fn is_reserved_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
            | "proxy-authorization"
            | "proxy-connection"
            | "content-type"
            | "expect"
            | "soapaction"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_listed_and_declared_headers_pass() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("accept", "application/json"),
            ("if-none-match", "\"abc\""),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/admin"),
            ("cookie", "a=b"),
            ("x-dept-token", "t"),
        ] {
            h.insert(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let out = forwardable(&h, &[HeaderName::from_static("x-dept-token")]);
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "if-none-match", "x-dept-token"]);
    }

    #[test]
    fn declared_routing_and_gateway_headers_are_refused() {
        for n in [
            "X-HTTP-Method-Override",
            "X-Original-URL",
            "X-Rewrite-URL",
            "X-Forwarded-Prefix",
            "Forwarded",
            "Authorization",
            "Cookie",
            "Host",
            "Content-Length",
            "bad header",
        ] {
            assert!(check_declared(n).is_err(), "{n}");
        }
        assert!(check_declared("X-Dept-Version").is_ok());
    }
}
