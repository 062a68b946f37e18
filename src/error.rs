//! The one place where errors become HTTP answers.
//!
//! Every area has its own error enum; [`GatewayError`] wraps them and
//! [`GatewayError::status`] is the only status mapping in the crate. Callers get
//! RFC 9457 `application/problem+json` with a generic `detail`; the real cause
//! goes to the log (`tracing`) and the audit record, never to the caller.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

/// Errors found in the request itself, before any routing (limits, path, body).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// 414: the request target is longer than `limits.max_uri_bytes`.
    #[error("request target longer than {limit} bytes")]
    UriTooLong {
        /// The configured limit.
        limit: usize,
    },
    /// 431: too many header fields, or too many header bytes.
    #[error("request header fields too large ({what})")]
    HeadersTooLarge {
        /// Which limit was exceeded.
        what: &'static str,
    },
    /// 413: the body is larger than `limits.max_body_bytes`.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// 400: the body could not be read (client went away, bad chunking).
    #[error("request body could not be read")]
    BodyUnreadable,
    /// 400: the path is ambiguous (encoded separators, dot-segments escaping the root, ...).
    #[error("ambiguous request path: {0}")]
    AmbiguousPath(&'static str),
    /// 400: a malformed request (bad JSON body, missing field, bad header value).
    #[error("{0}")]
    Malformed(String),
    /// 404: no route, dataset, scenario or department of that name.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
}

/// Errors talking to a department.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// 502: connection refused or reset, TLS failure, malformed status line,
    /// body cut short.
    #[error("department unreachable or broke the connection: {0}")]
    Broken(String),
    /// 502: the department's answer was larger than the gateway accepts.
    #[error("department reply larger than {limit} bytes")]
    ReplyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// 504: no complete answer within the configured time.
    #[error("department did not answer within {0:?}")]
    Timeout(Duration),
    /// 503: no adapter is registered for the department.
    #[error("no adapter registered for department `{0}`")]
    NoAdapter(String),
}

/// Every error the gateway can answer with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request itself is bad.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A department failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The gateway itself failed; details are logged, never answered.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The parts of an answer an error decides: status, problem type, title, the
/// detail safe to show a caller, and extra headers.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Short machine-readable slug; the `type` URI is built from it.
    pub kind: &'static str,
    /// A human-readable explanation safe for the caller.
    pub detail: String,
    /// Extra headers (Retry-After, WWW-Authenticate, RateLimit ...).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl GatewayError {
    /// The one mapping from errors to answers. Every variant is matched; no `_ =>`.
    pub fn problem(&self) -> Problem {
        use GatewayError as G;
        let (status, kind, detail) = match self {
            G::Request(e) => match e {
                RequestError::UriTooLong { .. } => {
                    (StatusCode::URI_TOO_LONG, "uri-too-long", e.to_string())
                }
                RequestError::HeadersTooLarge { .. } => (
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "headers-too-large",
                    e.to_string(),
                ),
                RequestError::BodyTooLarge { .. } => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    e.to_string(),
                ),
                RequestError::BodyUnreadable => {
                    (StatusCode::BAD_REQUEST, "bad-request", e.to_string())
                }
                RequestError::AmbiguousPath(_) => {
                    (StatusCode::BAD_REQUEST, "ambiguous-path", e.to_string())
                }
                RequestError::Malformed(_) => {
                    (StatusCode::BAD_REQUEST, "bad-request", e.to_string())
                }
                RequestError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", e.to_string()),
                RequestError::MethodNotAllowed => (
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method-not-allowed",
                    e.to_string(),
                ),
            },
            G::Upstream(e) => match e {
                UpstreamError::Broken(_) | UpstreamError::ReplyTooLarge { .. } => (
                    StatusCode::BAD_GATEWAY,
                    "department-error",
                    "the department's system did not give a usable answer".to_string(),
                ),
                UpstreamError::Timeout(_) => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "department-timeout",
                    "the department's system did not answer in time".to_string(),
                ),
                UpstreamError::NoAdapter(d) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "department-unavailable",
                    format!("department `{d}` has no adapter registered"),
                ),
            },
            G::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the gateway failed to handle the request".to_string(),
            ),
        };
        Problem {
            status,
            kind,
            detail,
            headers: Vec::new(),
        }
    }
}

/// The problem+json document of RFC 9457.
#[derive(Serialize)]
struct ProblemDoc<'a> {
    r#type: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    request_id: &'a str,
}

/// Problem type URIs live under this base (documented in the README).
pub const PROBLEM_BASE: &str = "https://onewindow.dev/problems/";

impl Problem {
    /// Renders the answer.
    pub fn into_response(self, request_id: &str) -> http::Response<Full<Bytes>> {
        let doc = ProblemDoc {
            r#type: format!("{PROBLEM_BASE}{}", self.kind),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            request_id,
        };
        let body = serde_json::to_vec(&doc).unwrap_or_default();
        let mut resp = http::Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        for (k, v) in self.headers {
            h.append(k, v);
        }
        resp
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after(wait: Duration) -> (header::HeaderName, HeaderValue) {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    (header::RETRY_AFTER, HeaderValue::from(secs.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_json_has_rfc9457_fields() {
        let e = GatewayError::from(RequestError::NotFound("no dataset `x`".into()));
        let resp = e.problem().into_response("req-1");
        assert_eq!(resp.status(), 404);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn internal_detail_is_never_shown() {
        let e = GatewayError::Internal("secret path /etc/x".into());
        assert!(!e.problem().detail.contains("/etc"));
        let e = GatewayError::from(UpstreamError::Broken("10.0.0.1 reset".into()));
        assert!(!e.problem().detail.contains("10.0.0.1"));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after(Duration::from_millis(1)).1, "1");
        assert_eq!(retry_after(Duration::from_millis(1001)).1, "2");
        assert_eq!(retry_after(Duration::ZERO).1, "1");
    }
}
