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
    /// No valid credentials.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// Authenticated but not allowed.
    #[error(transparent)]
    Access(#[from] crate::auth::AccessError),
    /// An unusable X-Purpose / X-End-User / X-Case-Id header.
    #[error(transparent)]
    Attribution(#[from] crate::auth::AttributionError),
    /// A rate limit refused the request.
    #[error(transparent)]
    RateLimited(#[from] crate::protect::RateLimited),
    /// A department's bulkhead or breaker refused the call.
    #[error(transparent)]
    Protect(#[from] crate::protect::ProtectError),
    /// The adapter could not translate the request or the reply.
    #[error(transparent)]
    Adapter(#[from] crate::adapter::AdapterError),
    /// A department failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The audit log could not record the decision.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// A malformed scenario request.
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
    /// A refused adapter registration (admin PUT).
    #[error("invalid adapter: {0}")]
    InvalidAdapter(crate::config::ConfigErrors),
    /// A refused reload; the running configuration is kept.
    #[error("invalid configuration: {0}")]
    InvalidConfig(crate::config::ConfigErrors),
    /// An error shared by coalesced callers (the cache's single load).
    #[error("{0}")]
    Shared(std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// Cluster mode: a change that must reach every node could not be
    /// stored in Redis (nothing was changed).
    #[error("{0}")]
    ClusterUnavailable(crate::cluster::ClusterError),
    /// The gateway itself failed; details are logged, never answered.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::protect::BulkheadFull> for GatewayError {
    fn from(e: crate::protect::BulkheadFull) -> Self {
        GatewayError::Protect(e.into())
    }
}

impl From<crate::protect::BreakerOpen> for GatewayError {
    fn from(e: crate::protect::BreakerOpen) -> Self {
        GatewayError::Protect(e.into())
    }
}

impl crate::cache::StaleEligible for GatewayError {
    /// A department that failed, timed out or is shielded by its breaker may
    /// be stood in for by a stale record; answers (not found, refusals) may not.
    fn allows_stale(&self) -> bool {
        use crate::adapter::AdapterError as A;
        match self {
            GatewayError::Upstream(
                UpstreamError::Broken(_)
                | UpstreamError::Timeout(_)
                | UpstreamError::ReplyTooLarge { .. },
            ) => true,
            GatewayError::Protect(_) => true,
            GatewayError::Adapter(a) => matches!(
                a,
                A::DepartmentStatus(_)
                    | A::DepartmentFault { .. }
                    | A::MalformedReply(_)
                    | A::ReplyTooLarge { .. }
            ),
            _ => false,
        }
    }
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
            G::Auth(e) => {
                return Problem {
                    status: StatusCode::UNAUTHORIZED,
                    kind: "invalid-token",
                    detail: match e {
                        crate::auth::AuthError::Missing => "a bearer token is required",
                        crate::auth::AuthError::Expired => "the token has expired",
                        crate::auth::AuthError::Malformed(_)
                        | crate::auth::AuthError::Invalid(_)
                        | crate::auth::AuthError::IssuerKeysUnavailable(_)
                        | crate::auth::AuthError::CertBindingMismatch
                        | crate::auth::AuthError::Setup(_) => "the bearer token is not valid",
                    }
                    .to_string(),
                    headers: vec![(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer error=\"invalid_token\""),
                    )],
                };
            }
            G::Access(e) => match e {
                crate::auth::AccessError::PurposeRequired => {
                    (StatusCode::BAD_REQUEST, "purpose-required", e.to_string())
                }
                crate::auth::AccessError::PurposeNotGranted(_)
                | crate::auth::AccessError::DatasetNotGranted(_)
                | crate::auth::AccessError::ScenarioNotGranted(_)
                | crate::auth::AccessError::ProxyNotGranted { .. }
                | crate::auth::AccessError::RoleRequired(_)
                | crate::auth::AccessError::NotDepartmentAdmin(_) => {
                    (StatusCode::FORBIDDEN, "not-granted", e.to_string())
                }
            },
            G::Attribution(e) => (StatusCode::BAD_REQUEST, "bad-attribution", e.to_string()),
            G::RateLimited(e) => {
                let mut h = http::HeaderMap::new();
                e.apply_headers(&mut h);
                return Problem {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    kind: "rate-limited",
                    detail: format!("{e}; retry after {} s", e.retry_after_secs()),
                    headers: h.into_iter().filter_map(|(k, v)| Some((k?, v))).collect(),
                };
            }
            G::Protect(e) => {
                let mut h = http::HeaderMap::new();
                e.apply_headers(&mut h);
                let kind = match e {
                    crate::protect::ProtectError::RateLimited(_) => "rate-limited",
                    crate::protect::ProtectError::BulkheadFull(_) => "department-busy",
                    crate::protect::ProtectError::BreakerOpen(_) => "department-unavailable",
                };
                let status = match e {
                    crate::protect::ProtectError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                    crate::protect::ProtectError::BulkheadFull(_)
                    | crate::protect::ProtectError::BreakerOpen(_) => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                };
                return Problem {
                    status,
                    kind,
                    detail: e.to_string(),
                    headers: h.into_iter().filter_map(|(k, v)| Some((k?, v))).collect(),
                };
            }
            G::Adapter(e) => {
                use crate::adapter::AdapterError as A;
                match e {
                    A::RecordNotFound => (
                        StatusCode::NOT_FOUND,
                        "record-not-found",
                        "the department has no such record".to_string(),
                    ),
                    A::UnknownDataset(_) => (StatusCode::NOT_FOUND, "not-found", e.to_string()),
                    A::MissingInput(_) | A::InvalidInput { .. } => {
                        (StatusCode::BAD_REQUEST, "bad-request", e.to_string())
                    }
                    A::DepartmentStatus(_)
                    | A::DepartmentFault { .. }
                    | A::MalformedReply(_)
                    | A::ReplyTooLarge { .. }
                    | A::FieldMissing { .. }
                    | A::FieldType { .. } => (
                        StatusCode::BAD_GATEWAY,
                        "department-error",
                        "the department's system did not give a usable answer".to_string(),
                    ),
                }
            }
            G::Audit(e) => match e {
                crate::audit::AuditError::BadQuery(_) => {
                    (StatusCode::BAD_REQUEST, "bad-query", e.to_string())
                }
                crate::audit::AuditError::Unavailable
                | crate::audit::AuditError::Io { .. }
                | crate::audit::AuditError::Key { .. }
                | crate::audit::AuditError::Corrupt { .. } => {
                    return Problem {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        kind: "audit-unavailable",
                        detail: "the audit log cannot record this access right now".to_string(),
                        headers: vec![retry_after(Duration::from_secs(5))],
                    };
                }
            },
            G::Scenario(e) => (
                StatusCode::BAD_REQUEST,
                "bad-scenario-request",
                e.to_string(),
            ),
            G::InvalidAdapter(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-adapter",
                e.to_string(),
            ),
            G::InvalidConfig(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-configuration",
                e.to_string(),
            ),
            G::Shared(e) => {
                let inner = e
                    .downcast_ref::<crate::cache::LoadFailed>()
                    .and_then(|l| l.inner.downcast_ref::<GatewayError>());
                return match inner {
                    Some(g) => g.problem(),
                    None => GatewayError::Internal(e.to_string()).problem(),
                };
            }
            G::ClusterUnavailable(_) => {
                return Problem {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    kind: "cluster-unavailable",
                    detail: "the change was not made: the cluster's shared store (Redis) is unavailable, and a change made on one node only would leave the nodes disagreeing; retry when /readyz shows the cluster component ok".to_string(),
                    headers: vec![retry_after(Duration::from_secs(5))],
                };
            }
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
