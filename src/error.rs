//! The one place where errors become HTTP answers.
//!
//! Every area has its own error enum; [`GatewayError`] wraps them and
//! [`GatewayError::problem`] is the only status mapping in the crate, and
//! [`GatewayError::cause`] the only classification of outcomes (which [`Side`]
//! failed). Callers get
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
    /// 502: the department answered a pass-through call with a 5xx status.
    #[error("department answered {0}")]
    Status(u16),
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
    /// A case that is not there, does not match, or cannot be stored.
    #[error(transparent)]
    Case(#[from] crate::case::CaseError),
    /// A refused adapter registration (admin PUT).
    #[error("invalid adapter: {0}")]
    InvalidAdapter(crate::config::ConfigErrors),
    /// A refused reload; the running configuration is kept.
    #[error("invalid configuration: {0}")]
    InvalidConfig(crate::config::ConfigErrors),
    /// An error shared by coalesced callers (the cache's single load): the
    /// loader's own error, typed, answered and classified exactly like it.
    #[error("{0}")]
    Shared(std::sync::Arc<GatewayError>),
    /// Cluster mode: a change that must reach every node could not be
    /// stored in Redis (nothing was changed).
    #[error("{0}")]
    ClusterUnavailable(crate::cluster::ClusterError),
    /// A refused data-subject transparency request, or its index unavailable.
    #[error(transparent)]
    Transparency(#[from] crate::transparency::TransparencyError),
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

/// Which side of the exchange failed (as pingora's `ErrorSource`): the one
/// classification every consumer derives from (audit decision, scenario part
/// status, stale-if-error, breaker and retry accounting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller: bad input, no credentials, not granted, not found, over
    /// quota. An answer, not a failure; a `4xx`.
    Caller,
    /// The department: timed out, unreachable, a status or reply the adapter
    /// could not use, or shielded by its breaker or bulkhead. A `502`-`504`.
    Department,
    /// The gateway itself: the audit log, its configuration, a bug. A `5xx`.
    Gateway,
}

/// What happened, one step finer than [`Side`]; every cause belongs to one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Malformed request, header, body, query or configuration sent by the caller.
    BadInput,
    /// No valid credentials.
    Unauthenticated,
    /// Authenticated, but not granted (dataset, scenario, proxy path, role).
    NotGranted,
    /// No such route, dataset, department or record (the adapter's not-found
    /// rule included).
    NotFound,
    /// A rate limit refused the request.
    RateLimited,
    /// The department did not answer within the time allowed.
    DepartmentTimeout,
    /// The department could not be reached, or broke the connection.
    DepartmentUnreachable,
    /// The department answered, but not usably (a 5xx that is not its
    /// not-found, a fault, a malformed or oversized reply).
    DepartmentBadReply,
    /// The department was not called: its breaker is open or its bulkhead full.
    DepartmentShielded,
    /// The request contradicts what is kept (a case id already used for
    /// another scenario or other subjects, or changed concurrently).
    Conflict,
    /// The audit log cannot record the decision (fail closed).
    AuditUnavailable,
    /// Cluster mode: the shared store (Redis) cannot take a change that must
    /// reach every node.
    ClusterUnavailable,
    /// The case store cannot be read or written.
    CaseStoreUnavailable,
    /// The gateway is not set up for this (e.g. no adapter registered).
    Misconfigured,
    /// A bug or an unexpected internal failure.
    Internal,
}

impl Cause {
    /// The side this cause belongs to.
    pub const fn side(self) -> Side {
        match self {
            Cause::BadInput
            | Cause::Unauthenticated
            | Cause::NotGranted
            | Cause::NotFound
            | Cause::Conflict
            | Cause::RateLimited => Side::Caller,
            Cause::DepartmentTimeout
            | Cause::DepartmentUnreachable
            | Cause::DepartmentBadReply
            | Cause::DepartmentShielded => Side::Department,
            Cause::AuditUnavailable
            | Cause::ClusterUnavailable
            | Cause::CaseStoreUnavailable
            | Cause::Misconfigured
            | Cause::Internal => Side::Gateway,
        }
    }
}

impl GatewayError {
    /// The one classification of this error. Every variant is matched; no `_ =>`.
    pub fn cause(&self) -> Cause {
        use crate::adapter::AdapterError as A;
        use crate::audit::AuditError as Au;
        use GatewayError as G;
        match self {
            G::Request(e) => match e {
                RequestError::NotFound(_) => Cause::NotFound,
                RequestError::UriTooLong { .. }
                | RequestError::HeadersTooLarge { .. }
                | RequestError::BodyTooLarge { .. }
                | RequestError::BodyUnreadable
                | RequestError::AmbiguousPath(_)
                | RequestError::Malformed(_)
                | RequestError::MethodNotAllowed => Cause::BadInput,
            },
            G::Auth(_) => Cause::Unauthenticated,
            G::Access(e) => match e {
                crate::auth::AccessError::PurposeRequired => Cause::BadInput,
                crate::auth::AccessError::PurposeNotGranted(_)
                | crate::auth::AccessError::DatasetNotGranted(_)
                | crate::auth::AccessError::ScenarioNotGranted(_)
                | crate::auth::AccessError::ProxyNotGranted { .. }
                | crate::auth::AccessError::RoleRequired(_)
                | crate::auth::AccessError::NotDepartmentAdmin(_)
                | crate::auth::AccessError::ApprovalLapsed { .. }
                | crate::auth::AccessError::ApprovalPurpose { .. }
                | crate::auth::AccessError::SubjectAccessNotGranted
                | crate::auth::AccessError::IssuerNotBound(_) => Cause::NotGranted,
            },
            G::Attribution(_) | G::Scenario(_) | G::InvalidAdapter(_) | G::InvalidConfig(_) => {
                Cause::BadInput
            }
            G::RateLimited(_) => Cause::RateLimited,
            G::Protect(e) => match e {
                crate::protect::ProtectError::BulkheadFull(_)
                | crate::protect::ProtectError::BreakerOpen(_) => Cause::DepartmentShielded,
            },
            G::Adapter(e) => match e {
                A::RecordNotFound | A::UnknownDataset(_) => Cause::NotFound,
                A::MissingInput(_) | A::InvalidInput { .. } => Cause::BadInput,
                A::DepartmentStatus(_)
                | A::DepartmentFault { .. }
                | A::MalformedReply(_)
                | A::FieldMissing { .. }
                | A::FieldType { .. } => Cause::DepartmentBadReply,
            },
            G::Upstream(e) => match e {
                UpstreamError::Timeout(_) => Cause::DepartmentTimeout,
                UpstreamError::Broken(_) => Cause::DepartmentUnreachable,
                UpstreamError::Status(_) | UpstreamError::ReplyTooLarge { .. } => {
                    Cause::DepartmentBadReply
                }
                UpstreamError::NoAdapter(_) => Cause::Misconfigured,
            },
            G::Audit(e) => match e {
                Au::BadQuery(_) => Cause::BadInput,
                Au::Unavailable | Au::Io { .. } | Au::Key { .. } | Au::Corrupt { .. } => {
                    Cause::AuditUnavailable
                }
            },
            G::Case(e) => match e {
                crate::case::CaseError::NotFound(_) | crate::case::CaseError::ScenarioGone(_) => {
                    Cause::NotFound
                }
                crate::case::CaseError::Mismatch(_) | crate::case::CaseError::Conflict(_) => {
                    Cause::Conflict
                }
                crate::case::CaseError::Store(_) => Cause::CaseStoreUnavailable,
            },
            G::Shared(e) => e.cause(),
            G::ClusterUnavailable(_) => Cause::ClusterUnavailable,
            G::Transparency(e) => match e {
                crate::transparency::TransparencyError::UnknownKind { .. }
                | crate::transparency::TransparencyError::MalformedSubject(_)
                | crate::transparency::TransparencyError::BadParameter(_)
                | crate::transparency::TransparencyError::BadCursor => Cause::BadInput,
                // The index is the gateway's own state (being checked or rebuilt).
                crate::transparency::TransparencyError::Index(_) => Cause::Internal,
            },
            G::Internal(_) => Cause::Internal,
        }
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        self.cause().side()
    }

    /// The audit decision: a caller's refusal is `deny`; a department's or
    /// the gateway's failure is `error`.
    pub fn decision(&self) -> crate::audit::Decision {
        match self.side() {
            Side::Caller => crate::audit::Decision::Deny,
            Side::Department | Side::Gateway => crate::audit::Decision::Error,
        }
    }

    /// How a scenario part that ended with this error is reported.
    pub fn part_status(&self) -> crate::scenario::PartStatus {
        use crate::scenario::PartStatus;
        match self.cause() {
            Cause::NotGranted => PartStatus::Denied,
            Cause::NotFound => PartStatus::Missing,
            Cause::BadInput
            | Cause::Unauthenticated
            | Cause::RateLimited
            | Cause::Conflict
            | Cause::DepartmentTimeout
            | Cause::DepartmentUnreachable
            | Cause::DepartmentBadReply
            | Cause::DepartmentShielded
            | Cause::AuditUnavailable
            | Cause::ClusterUnavailable
            | Cause::CaseStoreUnavailable
            | Cause::Misconfigured
            | Cause::Internal => PartStatus::Error,
        }
    }

    /// True when a stale record may stand in for this error: only for a
    /// department's failure, never for an answer (not found, refusals).
    pub fn allows_stale(&self) -> bool {
        self.side() == Side::Department
    }

    /// The failure this error is for the department's circuit breaker and
    /// retry policy, or `None` when the department did not fail: a not-found
    /// by the adapter's rule, any 4xx, a caller's bad input, a refusal of the
    /// protection layer itself (the department was not called) and the
    /// gateway's own failures never count.
    pub fn department_failure(&self) -> Option<crate::protect::FailureKind> {
        use crate::protect::FailureKind as F;
        let unavailable = |s: u16| {
            if matches!(s, 502..=504) {
                F::Unavailable
            } else {
                F::Other
            }
        };
        match self.cause() {
            Cause::DepartmentTimeout => Some(F::AttemptTimeout),
            Cause::DepartmentUnreachable => Some(F::Connect),
            Cause::DepartmentBadReply => match self {
                // A 4xx the adapter does not call not-found is still an
                // answer: the department is up and talking.
                GatewayError::Upstream(UpstreamError::Status(s))
                | GatewayError::Adapter(crate::adapter::AdapterError::DepartmentStatus(s)) => {
                    (*s >= 500).then(|| unavailable(*s))
                }
                GatewayError::Shared(e) => e.department_failure(),
                _ => Some(F::Other),
            },
            Cause::DepartmentShielded
            | Cause::BadInput
            | Cause::Unauthenticated
            | Cause::NotGranted
            | Cause::NotFound
            | Cause::RateLimited
            | Cause::Conflict
            | Cause::AuditUnavailable
            | Cause::ClusterUnavailable
            | Cause::CaseStoreUnavailable
            | Cause::Misconfigured
            | Cause::Internal => None,
        }
    }

    /// Whether the same request may succeed if tried again later: a
    /// transient department failure, a department shielded for now, a rate
    /// limit, an audit log that is unavailable. Never for an answer.
    pub fn retry_may_help(&self) -> bool {
        match self.cause() {
            Cause::DepartmentShielded
            | Cause::RateLimited
            | Cause::AuditUnavailable
            | Cause::ClusterUnavailable
            | Cause::CaseStoreUnavailable => true,
            // A case changed by another writer: the same request may succeed
            // now; a case id used for something else never will.
            Cause::Conflict => matches!(
                self,
                GatewayError::Case(crate::case::CaseError::Conflict(_))
            ),
            Cause::DepartmentTimeout | Cause::DepartmentUnreachable | Cause::DepartmentBadReply => {
                self.department_failure().is_some_and(|k| k.is_transient())
            }
            Cause::BadInput
            | Cause::Unauthenticated
            | Cause::NotGranted
            | Cause::NotFound
            | Cause::Misconfigured
            | Cause::Internal => false,
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
    /// The `reason` of this refusal's audit record: the rule that refused,
    /// never the input (paths, query strings, bodies and header values may
    /// carry subject ids). Configuration errors of admin changes name the
    /// file and field, which are the operator's, not a subject's.
    pub fn audit_reason(&self) -> String {
        use crate::auth::AccessError as A;
        use GatewayError as G;
        match self {
            G::Auth(e) => e.to_string(),
            G::Access(e) => match e {
                A::PurposeRequired => "access: purpose required".into(),
                A::PurposeNotGranted(_) => "access: purpose not granted".into(),
                A::DatasetNotGranted(d) => format!("access: dataset `{d}` not granted"),
                A::ScenarioNotGranted(_) => "access: scenario not granted".into(),
                A::ProxyNotGranted {
                    department, method, ..
                } => format!("access: no proxy grant covers this {method} path on `{department}`"),
                A::RoleRequired(r) => format!("access: role `{r}` required"),
                A::IssuerNotBound(_) => "access: token issuer not bound to this client".into(),
                A::NotDepartmentAdmin(_) => {
                    "access: not an administrator of that department".into()
                }
                A::ApprovalLapsed {
                    dataset, approval, ..
                } => format!("access: approval `{approval}` for dataset `{dataset}` lapsed"),
                A::ApprovalPurpose {
                    dataset, approval, ..
                } => format!(
                    "access: approval `{approval}` for dataset `{dataset}` does not cover the purpose"
                ),
                A::SubjectAccessNotGranted => "access: subject_access not granted".into(),
            },
            G::Attribution(e) => format!("attribution: header {} unusable", e.header),
            G::Case(e) => {
                use crate::case::CaseError as C;
                match e {
                    C::NotFound(_) => "case: not found".into(),
                    C::Mismatch(_) => "case: accepted for another scenario or subjects".into(),
                    C::Conflict(_) => "case: changed concurrently".into(),
                    C::ScenarioGone(_) => "case: scenario no longer offered".into(),
                    C::Store(_) => "case: store unavailable".into(),
                }
            }
            G::RateLimited(e) => format!("rate-limited: {}", e.limiter().name()),
            G::Request(RequestError::UriTooLong { limit }) => {
                format!("limit: request target over {limit} bytes")
            }
            G::Request(RequestError::HeadersTooLarge { what }) => {
                format!("limit: header {what} over the limit")
            }
            G::Request(RequestError::BodyTooLarge { limit }) => {
                format!("limit: body over {limit} bytes")
            }
            G::Request(RequestError::AmbiguousPath(rule)) => format!("ambiguous-path: {rule}"),
            G::InvalidAdapter(_) | G::InvalidConfig(_) => self.to_string(),
            G::Shared(e) => e.audit_reason(),
            G::Request(_)
            | G::Protect(_)
            | G::Adapter(_)
            | G::Upstream(_)
            | G::Audit(_)
            | G::Scenario(_)
            | G::ClusterUnavailable(_)
            | G::Transparency(_)
            | G::Internal(_) => self.problem().kind.to_string(),
        }
    }
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
                UpstreamError::Broken(_)
                | UpstreamError::Status(_)
                | UpstreamError::ReplyTooLarge { .. } => (
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
                | crate::auth::AccessError::NotDepartmentAdmin(_)
                | crate::auth::AccessError::SubjectAccessNotGranted
                | crate::auth::AccessError::IssuerNotBound(_) => {
                    (StatusCode::FORBIDDEN, "not-granted", e.to_string())
                }
                crate::auth::AccessError::ApprovalLapsed { .. }
                | crate::auth::AccessError::ApprovalPurpose { .. } => {
                    (StatusCode::FORBIDDEN, "approval-required", e.to_string())
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
                    crate::protect::ProtectError::BulkheadFull(_) => "department-busy",
                    crate::protect::ProtectError::BreakerOpen(_) => "department-unavailable",
                };
                return Problem {
                    status: StatusCode::SERVICE_UNAVAILABLE,
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
                    // Canonical field names are the published schema, so
                    // naming the field tells the caller (and the department's
                    // admin) what broke without quoting department data.
                    A::FieldMissing { .. } | A::FieldType { .. } => (
                        StatusCode::BAD_GATEWAY,
                        "department-error",
                        format!("the department's system did not give a usable answer: {e}"),
                    ),
                    A::DepartmentStatus(_) | A::DepartmentFault { .. } | A::MalformedReply(_) => (
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
            G::Transparency(e) => {
                use crate::transparency::TransparencyError as T;
                match e {
                    T::UnknownKind { .. } => (
                        StatusCode::BAD_REQUEST,
                        "unknown-subject-kind",
                        e.to_string(),
                    ),
                    T::MalformedSubject(_) | T::BadParameter(_) => {
                        (StatusCode::BAD_REQUEST, "bad-request", e.to_string())
                    }
                    T::BadCursor => (StatusCode::BAD_REQUEST, "bad-cursor", e.to_string()),
                    T::Index(_) => {
                        return Problem {
                            status: StatusCode::SERVICE_UNAVAILABLE,
                            kind: "index-unavailable",
                            detail:
                                "the access index is being checked or rebuilt; try again shortly"
                                    .to_string(),
                            headers: vec![retry_after(Duration::from_secs(5))],
                        };
                    }
                }
            }
            G::Case(e) => {
                use crate::case::CaseError as C;
                match e {
                    C::NotFound(_) | C::ScenarioGone(_) => {
                        (StatusCode::NOT_FOUND, "not-found", e.to_string())
                    }
                    C::Mismatch(_) | C::Conflict(_) => {
                        (StatusCode::CONFLICT, "case-conflict", e.to_string())
                    }
                    C::Store(_) => {
                        return Problem {
                            status: StatusCode::SERVICE_UNAVAILABLE,
                            kind: "case-store-unavailable",
                            detail: "cases cannot be kept right now".to_string(),
                            headers: vec![retry_after(Duration::from_secs(5))],
                        };
                    }
                }
            }
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
            G::Shared(e) => return e.problem(),
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

/// `Retry-After` in whole seconds, rounded up, at least 1 (the one rounding:
/// [`crate::protect::retry_after_secs`]).
pub fn retry_after(wait: Duration) -> (header::HeaderName, HeaderValue) {
    (
        header::RETRY_AFTER,
        HeaderValue::from(crate::protect::retry_after_secs(wait)),
    )
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

    /// A sample of every area's errors.
    fn samples() -> Vec<GatewayError> {
        use crate::adapter::AdapterError as A;
        use crate::auth::{AccessError, AuthError};
        vec![
            RequestError::Malformed("x".into()).into(),
            RequestError::NotFound("x".into()).into(),
            RequestError::MethodNotAllowed.into(),
            AuthError::Missing.into(),
            AccessError::DatasetNotGranted("d".into()).into(),
            AccessError::PurposeRequired.into(),
            A::RecordNotFound.into(),
            A::MissingInput("x".into()).into(),
            A::DepartmentStatus(500).into(),
            A::DepartmentStatus(503).into(),
            A::DepartmentStatus(400).into(),
            A::DepartmentFault {
                code: "soap:Server".into(),
                reason: "boom".into(),
            }
            .into(),
            A::MalformedReply("x".into()).into(),
            UpstreamError::Timeout(Duration::from_secs(1)).into(),
            UpstreamError::Broken("reset".into()).into(),
            UpstreamError::Status(502).into(),
            UpstreamError::ReplyTooLarge { limit: 1 }.into(),
            UpstreamError::NoAdapter("d".into()).into(),
            crate::protect::BreakerOpen::new("d".into(), Duration::from_secs(1)).into(),
            crate::audit::AuditError::Unavailable.into(),
            crate::audit::AuditError::BadQuery("x".into()).into(),
            GatewayError::Internal("x".into()),
        ]
    }

    #[test]
    fn the_side_agrees_with_the_status_class() {
        for e in samples() {
            let status = e.problem().status;
            assert_eq!(e.side() == Side::Caller, status.is_client_error(), "{e:?}");
            assert_eq!(e.side() != Side::Caller, status.is_server_error(), "{e:?}");
            if e.side() == Side::Department {
                assert!(matches!(status.as_u16(), 502..=504), "{e:?} ({status})");
            }
            let decision = e.decision();
            assert_eq!(
                decision == crate::audit::Decision::Deny,
                status.is_client_error(),
                "{e:?}"
            );
            assert_eq!(e.allows_stale(), e.side() == Side::Department, "{e:?}");
        }
    }

    #[test]
    fn part_status_follows_the_cause() {
        use crate::scenario::PartStatus;
        for e in samples() {
            let expected = match e.problem().status.as_u16() {
                403 => PartStatus::Denied,
                404 => PartStatus::Missing,
                _ => PartStatus::Error,
            };
            assert_eq!(e.part_status(), expected, "{e:?}");
        }
    }

    #[test]
    fn only_department_failures_count_for_the_breaker() {
        use crate::adapter::AdapterError as A;
        use crate::protect::FailureKind as F;
        let kind = |e: GatewayError| e.department_failure();
        // Answers: never failures.
        assert_eq!(kind(A::RecordNotFound.into()), None);
        assert_eq!(kind(A::DepartmentStatus(404).into()), None);
        assert_eq!(kind(A::DepartmentStatus(429).into()), None);
        assert_eq!(
            kind(
                A::InvalidInput {
                    input: "subject".into(),
                    target: "path",
                    reason: "x"
                }
                .into()
            ),
            None
        );
        assert_eq!(kind(RequestError::Malformed("x".into()).into()), None);
        let open = crate::protect::BreakerOpen::new("d".into(), Duration::from_secs(1));
        assert_eq!(kind(open.into()), None, "the department was not called");
        // Failures, and whether a retry may help.
        assert_eq!(kind(A::DepartmentStatus(500).into()), Some(F::Other));
        assert_eq!(kind(A::DepartmentStatus(503).into()), Some(F::Unavailable));
        assert_eq!(
            kind(UpstreamError::Status(502).into()),
            Some(F::Unavailable)
        );
        assert_eq!(kind(A::MalformedReply("x".into()).into()), Some(F::Other));
        let fault = A::DepartmentFault {
            code: "soap:Server".into(),
            reason: "x".into(),
        };
        assert_eq!(kind(fault.into()), Some(F::Other));
        assert_eq!(
            kind(UpstreamError::Timeout(Duration::from_secs(1)).into()),
            Some(F::AttemptTimeout)
        );
        assert_eq!(
            kind(UpstreamError::Broken("x".into()).into()),
            Some(F::Connect)
        );
        let e = GatewayError::from(UpstreamError::Timeout(Duration::from_secs(1)));
        assert!(e.retry_may_help());
        assert!(!GatewayError::from(A::DepartmentStatus(500)).retry_may_help());
        assert!(!GatewayError::from(A::RecordNotFound).retry_may_help());
    }

    #[test]
    fn a_shared_error_is_answered_and_classified_as_its_inner_error() {
        for e in samples() {
            let (status, cause, kind) = (e.problem().status, e.cause(), e.department_failure());
            let shared = GatewayError::Shared(std::sync::Arc::new(e));
            assert_eq!(shared.problem().status, status);
            assert_eq!(shared.cause(), cause);
            assert_eq!(shared.department_failure(), kind);
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after(Duration::from_millis(1)).1, "1");
        assert_eq!(retry_after(Duration::from_millis(1001)).1, "2");
        assert_eq!(retry_after(Duration::ZERO).1, "1");
    }
}
