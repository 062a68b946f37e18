//! `POST /admin/adapters/{department}/try`: run an adapter once, for one
//! subject, before it is saved.
//!
//! Body: `{"adapter"?: "<TOML text>", "dataset": "...", "subject": "..."}`.
//! With `adapter`, that text is validated exactly as a PUT validates it
//! (schema, templates, the upstream address against the department's
//! allow-list) and the compiled draft is used; without it, the registered
//! adapter is. The call then goes to the department as a live read would:
//! the per-client and department rate limits, the bulkhead, the breaker (an
//! open breaker refuses) and the attempt/total timeouts. It differs on
//! purpose in three ways: nothing is swapped in, nothing is read from or
//! written to the cache, and the outcome is not reported to the breaker (a
//! draft with a wrong path must not trip the breaker for live traffic); it is
//! tried once, without retries.
//!
//! The answer is the mapped record, or the error as problem+json with, for
//! mapping errors, a `cause` naming what did not fit (the department
//! administrator is the one who can fix it). The admin plane audits every
//! try as `admin.adapter.try` with the subject as `subject_ref` only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use tokio::time::Instant;

use crate::adapter::{AdapterSpec, CanonicalRequest, DepartmentAdapter, UpstreamReply};
use crate::auth::Principal;
use crate::error::{GatewayError, PROBLEM_BASE, RequestError, UpstreamError};
use crate::state::State;
use crate::upstream::{Department, DepartmentClient};

/// The audit action of a try.
pub const ACTION: &str = "admin.adapter.try";

/// Most bytes of a try body: an adapter file (as much as a PUT takes) plus
/// JSON escaping and the other two fields.
pub const MAX_TRY_BYTES: usize = 2 * crate::adapter::MAX_ADAPTER_BYTES + 4096;

/// The purpose sent to the department for a try (its templates may use
/// `{purpose}`); departments can tell a try from a live read by it.
pub const PURPOSE: &str = "adapter-try";

/// A parsed try body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TryRequest {
    /// Draft adapter file (TOML); the registered adapter when absent.
    pub adapter: Option<String>,
    /// Canonical dataset to read.
    pub dataset: String,
    /// Subject id.
    pub subject: String,
}

impl TryRequest {
    /// Parses the body; a malformed one is a 400 that says what to send.
    pub fn parse(body: &[u8]) -> Result<Self, GatewayError> {
        serde_json::from_slice(body).map_err(|e| {
            RequestError::Malformed(format!(
                "body must be {{\"adapter\"?: \"<TOML>\", \"dataset\": \"...\", \"subject\": \"...\"}}: {e}"
            ))
            .into()
        })
    }
}

/// Which adapter ran, for the answer.
#[derive(Debug, Clone, Copy)]
enum Which {
    Draft,
    Current,
}

/// Runs the try for `department` (the caller has checked the role).
pub async fn run(
    state: &State,
    principal: &Principal,
    department: &str,
    t: &TryRequest,
    request_id: &str,
) -> Result<Response<Full<Bytes>>, GatewayError> {
    if !state.settings.departments.contains_key(department) {
        return Err(RequestError::NotFound(format!("no department `{department}`")).into());
    }
    let spec = state
        .datasets
        .get(&t.dataset)
        .filter(|s| s.department == department)
        .ok_or_else(|| {
            RequestError::NotFound(format!(
                "department `{department}` has no dataset `{}`",
                t.dataset
            ))
        })?;
    if !spec.subject_is_valid(&t.subject) {
        return Err(RequestError::Malformed(format!(
            "malformed subject for dataset `{}`",
            t.dataset
        ))
        .into());
    }
    let (adapter, client, which): (Arc<DepartmentAdapter>, Arc<dyn Department>, _) =
        match &t.adapter {
            Some(text) => {
                let (a, c) = compile_draft(state, department, text).await?;
                (Arc::new(a), Arc::new(c), Which::Draft)
            }
            None => {
                let a = state
                    .adapters
                    .department(department)
                    .cloned()
                    .ok_or_else(|| UpstreamError::NoAdapter(department.to_string()))?;
                let c = state
                    .upstreams
                    .get(department)
                    .cloned()
                    .ok_or_else(|| UpstreamError::NoAdapter(department.to_string()))?;
                (a, c, Which::Current)
            }
        };
    state
        .protect
        .check_client(principal.sub(), Some(department))?;
    let subjects = BTreeMap::from([(spec.subject_kind.clone(), t.subject.clone())]);
    let creq = CanonicalRequest {
        dataset: &t.dataset,
        subject: &t.subject,
        subjects: &subjects,
        purpose: PURPOSE,
        case_id: None,
        end_user: None,
    };
    let started = Instant::now();
    let (record, upstream_status) =
        call_once(state, &adapter, client.as_ref(), &creq, request_id).await?;
    let body = serde_json::json!({
        "department": department,
        "dataset": t.dataset,
        "adapter": match which { Which::Draft => "draft", Which::Current => "current" },
        "upstream_status": upstream_status,
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "record": record,
    });
    Ok(crate::pipeline::json_response(StatusCode::OK, &body))
}

/// Validates and compiles a draft exactly as a PUT does, and builds its
/// department client (the address is checked against the allow-list).
async fn compile_draft(
    state: &State,
    department: &str,
    text: &str,
) -> Result<(DepartmentAdapter, DepartmentClient), GatewayError> {
    if text.len() > crate::adapter::MAX_ADAPTER_BYTES {
        return Err(RequestError::BodyTooLarge {
            limit: crate::adapter::MAX_ADAPTER_BYTES,
        }
        .into());
    }
    let shown = PathBuf::from(format!("adapters/{department}.toml"));
    let spec = AdapterSpec::from_toml(&shown, text).map_err(GatewayError::InvalidAdapter)?;
    let adapter = crate::state::compile_adapter(state, department, &shown, &spec)?;
    let allow = state
        .allow_lists
        .get(department)
        .cloned()
        .unwrap_or_default();
    let connect = state
        .protect
        .department(department)
        .map_or(std::time::Duration::from_secs(1), |g| g.timeouts().connect);
    let client =
        crate::state::department_client(&adapter, &allow, connect, &state.settings.paths.root)
            .await
            .map_err(|e| {
                GatewayError::InvalidAdapter(
                    crate::config::ConfigError::new(
                        &shown,
                        "base_url",
                        e,
                        "use an address the department's allow-list permits",
                    )
                    .into(),
                )
            })?;
    Ok((adapter, client))
}

/// One department call through the department's rate limit, bulkhead,
/// breaker gate and timeouts; no retry, no breaker report, no cache.
async fn call_once(
    state: &State,
    adapter: &DepartmentAdapter,
    client: &dyn Department,
    creq: &CanonicalRequest<'_>,
    request_id: &str,
) -> Result<(crate::adapter::Record, u16), GatewayError> {
    let ureq = adapter.build_request(creq)?;
    let guard = state
        .protect
        .department(&adapter.department)
        .ok_or_else(|| UpstreamError::NoAdapter(adapter.department.clone()))?;
    let _slot = guard.bulkhead().acquire().await?;
    // The gate only: dropping the permit unreported leaves the breaker's
    // counts as they were (and frees a half-open probe slot).
    let _permit = guard
        .breaker_for(crate::protect::Traffic::Dataset)
        .try_acquire()?;
    let timeouts = guard.timeouts();
    let budget = timeouts.attempt.min(timeouts.total);
    let mut req = Request::new(Full::new(ureq.body));
    *req.method_mut() = ureq.method;
    *req.headers_mut() = ureq.headers;
    if let Ok(v) = HeaderValue::from_str(request_id) {
        req.headers_mut().insert("x-request-id", v);
    }
    let max_reply = state.settings.limits.max_reply_bytes;
    let reply = client
        .send(req, &ureq.path_and_query, budget, max_reply)
        .await?;
    let status = reply.status.as_u16();
    let record = adapter.map_response(
        creq.dataset,
        UpstreamReply {
            status: reply.status,
            headers: &reply.headers,
            body: &reply.body,
        },
    )?;
    Ok((record, status))
}

/// Renders a try's outcome: the record, or problem+json with a `cause` for
/// errors of the adapter's mapping (what did not fit the draft).
pub fn answer(
    result: Result<Response<Full<Bytes>>, GatewayError>,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let e = match result {
        Ok(r) => return r,
        Err(e) => e,
    };
    let cause = match &e {
        GatewayError::Adapter(a) => Some(a.to_string()),
        _ => None,
    };
    let p = e.problem();
    let Some(cause) = cause else {
        return p.into_response(request_id);
    };
    let doc = serde_json::json!({
        "type": format!("{PROBLEM_BASE}{}", p.kind),
        "title": p.status.canonical_reason().unwrap_or("Error"),
        "status": p.status.as_u16(),
        "detail": p.detail,
        "request_id": request_id,
        "cause": cause,
    });
    let mut r = crate::pipeline::json_response(p.status, &doc);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    for (k, v) in p.headers {
        r.headers_mut().append(k, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_strict() {
        let t = TryRequest::parse(br#"{"dataset":"d","subject":"s"}"#).unwrap();
        assert_eq!(t.adapter, None);
        assert!(TryRequest::parse(br#"{"dataset":"d"}"#).is_err());
        assert!(TryRequest::parse(br#"{"dataset":"d","subject":"s","x":1}"#).is_err());
        assert!(TryRequest::parse(b"not json").is_err());
    }

    #[test]
    fn mapping_errors_carry_their_cause() {
        let e = GatewayError::Adapter(crate::adapter::AdapterError::DepartmentStatus(418));
        let r = answer(Err(e), "rid");
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let e = GatewayError::Upstream(UpstreamError::Broken("10.1.2.3 reset".into()));
        let r = answer(Err(e), "rid");
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    }
}
