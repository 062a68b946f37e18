//! One data-plane request's way through the gateway, phase by phase:
//!
//! 1. limits (URI, headers) and path normalisation — before anything else;
//! 2. route;
//! 3. pre-authentication per-IP check (cheap, before any crypto);
//! 4. authenticate (JWT, token cache, certificate binding);
//! 5. authorise (grants, purpose) — deny by default;
//! 6. rate limits (client, client x department, department);
//! 7. the route's work: catalog, dataset read (cache, adapter, department
//!    call through bulkhead, breaker, timeouts, retries), scenario, proxy;
//! 8. audit: the reply is released only after its record is written;
//! 9. respond.
//!
//! Per-request state lives in [`RequestCtx`]; configuration is read once per
//! request from an `ArcSwap` snapshot, so a reload never mixes old and new.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::Instant;

use crate::adapter::{CanonicalRequest, DepartmentAdapter, UpstreamReply};
use crate::audit::{Action, AuditEvent, AuditLog, Decision};
use crate::auth::{Attribution, ClientGrants, Principal};
use crate::cache::{CacheStatus, Record, SharedCache};
use crate::error::{GatewayError, RequestError, UpstreamError};
use crate::protect::Traffic;
use crate::routing::{NoRoute, Route, Router};
use crate::scenario::{PartResult, PartStatus};
use crate::server::{ConnInfo, Handler, RequestBody};
use crate::state::State;
use crate::upstream::Reply;

mod onething;
mod transparency;

/// Per-request state, filled in as the request moves through the phases and
/// turned into the audit record at the end.
#[derive(Debug)]
pub struct RequestCtx {
    /// Request id (caller's when well-formed, else generated).
    pub request_id: String,
    /// When the request arrived.
    pub started: Instant,
    /// Caller's address.
    pub peer: std::net::IpAddr,
    /// The audit action.
    pub action: &'static str,
    /// Authenticated client (`sub`).
    pub client: Option<String>,
    /// X-Purpose, X-End-User, X-Case-Id.
    pub attribution: Option<Attribution>,
    /// Department involved.
    pub department: Option<String>,
    /// Dataset involved.
    pub dataset: Option<String>,
    /// Scenario involved.
    pub scenario: Option<String>,
    /// Subject id (only its HMAC reaches the audit log).
    pub subject: Option<String>,
    /// Cache outcome.
    pub cache: Option<CacheStatus>,
    /// The department's status, when it was called.
    pub upstream_status: Option<u16>,
    /// Rate-limit state for the `RateLimit` header of successful answers.
    pub ratelimit: Option<crate::protect::RateLimitState>,
    /// W3C trace context, propagated to departments.
    pub trace: crate::trace::TraceContext,
    /// The approval a conditional dataset's read rests on (audit `approval`).
    pub approval: Option<String>,
}

/// Request ids: a per-process random prefix and a counter; unique and cheap.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self {
            prefix: rand::random(),
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    /// The caller's `X-Request-Id` when it is 1..=64 characters of
    /// `[A-Za-z0-9._-]`, else a fresh one.
    pub fn from_headers(&self, headers: &HeaderMap) -> String {
        if let Some(v) = headers.get("x-request-id").map(HeaderValue::as_bytes)
            && !v.is_empty()
            && v.len() <= 64
            && v.iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return String::from_utf8_lossy(v).into_owned();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n:012x}", self.prefix)
    }
}

/// The data plane: everything a request needs, shared by all connections.
pub struct DataPlane {
    /// Current configuration snapshot.
    pub state: Arc<ArcSwap<State>>,
    /// The audit log.
    pub audit: AuditLog,
    /// Shared licence cache.
    pub cache: Arc<SharedCache>,
    /// Metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Record signing, transparency, the wall clock.
    pub sharing: Arc<crate::sharing::Accountable>,
    /// Kept cases (accept now, supply later).
    pub cases: Arc<crate::case::Cases>,
    /// Folds floods of refusals into summary records.
    aggregator: Arc<crate::audit::DenyAggregator>,
    router: Router,
    ids: RequestIds,
    /// Cluster mode: quotas shared with the other nodes.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl DataPlane {
    /// Assembles the data plane.
    pub fn new(
        state: Arc<ArcSwap<State>>,
        audit: AuditLog,
        cache: Arc<SharedCache>,
        metrics: Arc<crate::metrics::Metrics>,
        aggregator: crate::audit::DenyAggregator,
        sharing: Arc<crate::sharing::Accountable>,
        cases: Arc<crate::case::Cases>,
    ) -> Self {
        Self {
            state,
            sharing,
            aggregator: Arc::new(aggregator),
            audit,
            cache,
            metrics,
            cases,
            router: Router::new(),
            ids: RequestIds::default(),
            cluster: None,
        }
    }

    /// Cluster mode, when on.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// Cluster mode: rate limits are charged to the cluster-wide quotas.
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Charges one request to the client's (and department's) quotas: the
    /// cluster-wide ones in cluster mode, this node's otherwise.
    async fn charge(
        &self,
        state: &State,
        client: &str,
        department: Option<&str>,
    ) -> Result<crate::protect::RateLimitState, crate::protect::RateLimited> {
        match &self.cluster {
            Some(c) => c.limits.check(&Arc::from(client), department).await,
            None => state.protect.check_client(client, department),
        }
    }
}

type Resp = Response<Full<Bytes>>;

impl Handler for DataPlane {
    async fn handle<B: RequestBody>(self: Arc<Self>, req: Request<B>, conn: Arc<ConnInfo>) -> Resp {
        let state = self.state.load_full();
        let head = req.method() == Method::HEAD;
        let mut ctx = RequestCtx {
            request_id: self.ids.from_headers(req.headers()),
            started: Instant::now(),
            peer: conn.peer.ip(),
            action: "request",
            client: None,
            attribution: None,
            department: None,
            dataset: None,
            scenario: None,
            subject: None,
            cache: None,
            upstream_status: None,
            ratelimit: None,
            trace: crate::trace::TraceContext::from_header(req.headers().get("traceparent")),
            approval: None,
        };
        let result = self.process(&state, &mut ctx, req, &conn).await;
        let (mut resp, decision, reason) = match result {
            Ok(resp) => (resp, Decision::Allow, None),
            Err(e) => {
                if let GatewayError::RateLimited(r) = &e {
                    self.metrics.observe_rate_limited(r.limiter().name());
                }
                let problem = e.problem();
                let decision = e.decision();
                // The rule that refused, never the input (which may carry ids).
                let reason = e.audit_reason();
                if problem.status.is_server_error() {
                    tracing::warn!(request_id = %ctx.request_id, error = %e, "request failed");
                } else {
                    tracing::debug!(request_id = %ctx.request_id, error = %e, "request refused");
                }
                (
                    problem.into_response(&ctx.request_id),
                    decision,
                    Some(reason),
                )
            }
        };
        // Phase 8: the record is written before the reply is released; if it
        // cannot be, data is not released either.
        if let Err(e) = self.record(&ctx, decision, reason, resp.status()).await {
            tracing::error!(request_id = %ctx.request_id, error = %e, "audit log unavailable; failing closed");
            resp = GatewayError::Audit(e)
                .problem()
                .into_response(&ctx.request_id);
        }
        finish(&mut resp, &ctx, head);
        // Label values only from configuration: a caller's unknown dataset
        // or department never creates a series.
        let dataset = ctx
            .dataset
            .as_deref()
            .filter(|d| state.datasets.get(d).is_some());
        let department = ctx
            .department
            .as_deref()
            .filter(|d| state.settings.departments.contains_key(*d));
        self.metrics.observe_request(
            ctx.action,
            resp.status().as_u16(),
            department,
            dataset,
            ctx.started.elapsed(),
        );
        tracing::info!(
            request_id = %ctx.request_id,
            client = ctx.client.as_deref().unwrap_or("-"),
            action = ctx.action,
            trace_id = %ctx.trace.trace_id,
            status = resp.status().as_u16(),
            latency_us = ctx.started.elapsed().as_micros() as u64,
            "request"
        );
        resp
    }
}

/// 424 when an all-or-nothing scenario lost a required part, else 200.
fn scenario_status(spec: &crate::scenario::Scenario, failed_required: bool) -> StatusCode {
    if failed_required && spec.mode == crate::scenario::Mode::AllOrNothing {
        StatusCode::FAILED_DEPENDENCY
    } else {
        StatusCode::OK
    }
}

/// Headers every answer carries: the rate-limit state, then what both
/// planes set last.
fn finish(resp: &mut Resp, ctx: &RequestCtx, head: bool) {
    if let Some(rl) = &ctx.ratelimit {
        rl.apply_headers(resp.headers_mut());
    }
    crate::routing::finish_reply(resp, &ctx.request_id, "private, no-store", head);
}

impl DataPlane {
    async fn process<B: RequestBody>(
        &self,
        state: &State,
        ctx: &mut RequestCtx,
        req: Request<B>,
        conn: &ConnInfo,
    ) -> Result<Resp, GatewayError> {
        let limits = &state.settings.limits;
        // Phase 1: limits the parser did not already enforce, then the path.
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > limits.max_uri_bytes {
            return Err(RequestError::UriTooLong {
                limit: limits.max_uri_bytes,
            }
            .into());
        }
        if req.headers().len() > limits.max_headers {
            return Err(RequestError::HeadersTooLarge { what: "count" }.into());
        }
        let head_bytes: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if head_bytes > limits.max_header_bytes {
            return Err(RequestError::HeadersTooLarge { what: "bytes" }.into());
        }
        let path = crate::path::normalise(req.uri().path())?;

        // Phase 2: route.
        let route = self
            .router
            .route(req.method(), &path)
            .map_err(|e| match e {
                NoRoute::NotFound => RequestError::NotFound("no such route".into()),
                NoRoute::MethodNotAllowed => RequestError::MethodNotAllowed,
            })?;
        ctx.action = match &route {
            Route::Catalog => "catalog.read",
            Route::Dataset { .. } => "dataset.read",
            Route::ScenarioList => "scenario.list",
            Route::Guide { .. } => "scenario.guide",
            Route::Scenario { .. } => "scenario.run",
            Route::Case { .. } => "case.read",
            Route::CaseRefresh { .. } => "case.refresh",
            Route::Proxy { .. } => "proxy",
            Route::Jwks => JWKS_READ,
            Route::SubjectAccesses { .. } => "subject.accesses",
        };
        if route == Route::Jwks {
            // Public keys only; nothing to authenticate, nothing to audit.
            return Ok(json_response(StatusCode::OK, self.sharing.keys.jwks()));
        }

        // Phases 3-4: per-address block of failed authentications, then the token.
        let principal = match state.authenticate(req.headers(), conn).await {
            Ok(p) => p,
            Err(e) => {
                ctx.action = "auth.denied";
                return Err(e);
            }
        };
        ctx.client = Some(principal.sub().to_string());
        let grants = state.grants.client(principal.sub()).clone();
        grants.check_issuer(principal.issuer())?;

        // Phase 5 onwards, per route.
        match route {
            Route::Jwks => Ok(json_response(StatusCode::OK, self.sharing.keys.jwks())),
            Route::SubjectAccesses { kind, subject } => {
                // On behalf of the data subject: no purpose needed, but an
                // X-End-User (the signed-in person) is recorded when given.
                ctx.attribution = Some(Attribution::from_headers(req.headers())?);
                ctx.subject = Some(subject.clone());
                if !grants.subject_access() {
                    return Err(crate::auth::AccessError::SubjectAccessNotGranted.into());
                }
                ctx.ratelimit = Some(state.protect.check_client(principal.sub(), None)?);
                let reply = transparency::accesses(
                    &self.sharing.transparency,
                    state,
                    self.audit.subject_key(),
                    &grants,
                    &kind,
                    &subject,
                    req.uri().query(),
                    self.sharing.clock.now(),
                )
                .await?;
                Ok(json_response(StatusCode::OK, &reply))
            }
            Route::Catalog => {
                ctx.ratelimit = Some(self.charge(state, principal.sub(), None).await?);
                Ok(json_response(StatusCode::OK, &self.catalog(state, &grants)))
            }
            Route::Dataset { dataset, subject } => {
                let attribution = Attribution::from_headers(req.headers())?;
                grants.check_purpose(attribution.purpose.as_deref())?;
                ctx.attribution = Some(attribution);
                ctx.dataset = Some(dataset.clone());
                ctx.subject = Some(subject.clone());
                let read = self
                    .read_dataset(state, ctx, &principal, &grants, &dataset, &subject, None)
                    .await?;
                let cache = read.cache;
                let mut resp = json_bytes_response(StatusCode::OK, self.reply_body(read));
                resp.headers_mut()
                    .insert("x-cache", HeaderValue::from_static(cache.as_str()));
                Ok(resp)
            }
            Route::Scenario { scenario } => {
                let attribution = Attribution::from_headers(req.headers())?;
                grants.check_purpose(attribution.purpose.as_deref())?;
                ctx.attribution = Some(attribution);
                ctx.scenario = Some(scenario.clone());
                let spec =
                    state.scenarios.get(&scenario).cloned().ok_or_else(|| {
                        RequestError::NotFound(format!("no scenario `{scenario}`"))
                    })?;
                grants.check_scenario(&scenario)?;
                ctx.ratelimit = Some(self.charge(state, principal.sub(), None).await?);
                let body = read_body(req.into_body(), limits.max_body_bytes).await?;
                let subjects = spec.parse_request(&body, &state.datasets)?;
                let case_id = ctx.attribution.as_ref().and_then(|a| a.case_id.clone());
                match case_id {
                    Some(case_id) => {
                        self.run_as_case(
                            state, ctx, &principal, &grants, &spec, &subjects, &case_id,
                        )
                        .await
                    }
                    None => {
                        self.run_scenario(state, ctx, &principal, &grants, &spec, &subjects)
                            .await
                    }
                }
            }
            Route::ScenarioList => {
                ctx.ratelimit = Some(state.protect.check_client(principal.sub(), None)?);
                Ok(self.scenario_list(state, &grants, req.headers()))
            }
            Route::Guide { scenario } => {
                ctx.scenario = Some(scenario.clone());
                ctx.ratelimit = Some(state.protect.check_client(principal.sub(), None)?);
                self.scenario_guide(state, &grants, &scenario, req.headers())
            }
            Route::Case { case_id } => {
                self.case_read(state, ctx, &principal, &grants, &case_id, req.headers())
                    .await
            }
            Route::CaseRefresh { case_id } => {
                self.case_refresh(state, ctx, &principal, &grants, &case_id, req.headers())
                    .await
            }
            Route::Proxy { department, path } => {
                // A subject named in the path (as the adapter declares) is
                // recorded as its reference, allowed or refused.
                ctx.subject = state
                    .adapters
                    .department(&department)
                    .and_then(|a| a.subject_paths.subject_in(&path))
                    .map(str::to_string);
                let attribution = Attribution::from_headers(req.headers())?;
                grants.check_purpose(attribution.purpose.as_deref())?;
                ctx.attribution = Some(attribution);
                ctx.department = Some(department.clone());
                if !state.settings.departments.contains_key(&department) {
                    return Err(
                        RequestError::NotFound(format!("no department `{department}`")).into(),
                    );
                }
                grants.check_proxy(&department, req.method(), &path)?;
                ctx.ratelimit = Some(
                    self.charge(state, principal.sub(), Some(&department))
                        .await?,
                );
                self.proxy(state, ctx, conn, req, &department, &path).await
            }
        }
    }

    fn catalog(&self, state: &State, grants: &ClientGrants) -> serde_json::Value {
        let view = grants.catalog();
        let datasets: Vec<_> = view
            .datasets
            .iter()
            .filter_map(|g| {
                let d = state.datasets.get(&g.name)?;
                Some(serde_json::json!({
                    "name": d.name, "title": d.title, "department": d.department,
                    "subject_kind": d.subject_kind, "fields": g.fields,
                    "path": format!("/v1/datasets/{}/{{subject}}", d.name),
                }))
            })
            .collect();
        let scenarios: Vec<_> = view
            .scenarios
            .iter()
            .filter_map(|name| {
                let s = state.scenarios.get(name)?;
                Some(serde_json::json!({
                    "name": s.name, "title": s.title,
                    "subjects": s.kinds().collect::<std::collections::BTreeSet<_>>(),
                    "path": format!("/v1/scenarios/{}", s.name),
                }))
            })
            .collect();
        serde_json::json!({
            "client": grants.id(),
            "purposes": view.purposes,
            "datasets": datasets,
            "scenarios": scenarios,
            "proxy": view.proxy,
        })
    }

    /// A single shared-record read: authorise, rate-limit, cache, adapter,
    /// department, filter. Used by dataset reads and scenario parts alike;
    /// a scenario passes all its subjects (adapters may use `{subject.<kind>}`).
    #[allow(clippy::too_many_arguments)]
    async fn read_dataset<'g>(
        &self,
        state: &State,
        ctx: &mut RequestCtx,
        principal: &Principal,
        grants: &'g ClientGrants,
        dataset: &str,
        subject: &str,
        scenario_subjects: Option<&BTreeMap<String, String>>,
    ) -> Result<DatasetRead<'g>, GatewayError> {
        let spec = state
            .datasets
            .get(dataset)
            .ok_or_else(|| RequestError::NotFound(format!("no dataset `{dataset}`")))?;
        ctx.department = Some(spec.department.clone());
        // Authorisation before the cache lookup: a cached record is never
        // even looked at for a client that may not read the dataset.
        let fields = grants.check_dataset(dataset)?;
        // Conditional sharing: only under a live approval covering the purpose.
        ctx.approval = grants.approval(dataset).map(|a| a.reference.clone());
        let purpose = ctx
            .attribution
            .as_ref()
            .and_then(|a| a.purpose.as_deref())
            .unwrap_or_default();
        let today = crate::clock::Date::at(self.sharing.clock.now());
        grants.check_sharing(dataset, spec.sharing, purpose, today)?;
        if !spec.subject_is_valid(subject) {
            return Err(RequestError::Malformed(format!(
                "malformed subject for dataset `{dataset}`"
            ))
            .into());
        }
        // One subject, one spelling: reads, the cache key and the department
        // call use the kind's canonical form (datasets.toml `[subject_kinds]`).
        let subject = state
            .datasets
            .canonical_subject(&spec.subject_kind, subject);
        let subject = subject.as_str();
        if ctx.subject.is_some() {
            ctx.subject = Some(subject.to_string());
        }
        let canonical_subjects: Option<BTreeMap<String, String>> = scenario_subjects.map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), state.datasets.canonical_subject(k, v)))
                .collect()
        });
        let scenario_subjects = canonical_subjects.as_ref();
        ctx.ratelimit = Some(
            self.charge(state, principal.sub(), Some(&spec.department))
                .await?,
        );
        let adapter = state
            .adapters
            .for_dataset(dataset)
            .cloned()
            .ok_or_else(|| UpstreamError::NoAdapter(spec.department.clone()))?;
        let upstream_status = std::sync::atomic::AtomicU16::new(0);
        // Only a miss builds the department request; a hit allocates nothing here.
        let load = || async {
            let single;
            let subjects = match scenario_subjects {
                Some(s) => s,
                None => {
                    single = BTreeMap::from([(spec.subject_kind.clone(), subject.to_string())]);
                    &single
                }
            };
            let attribution = ctx.attribution.as_ref();
            let creq = CanonicalRequest {
                dataset,
                subject,
                subjects,
                purpose: attribution
                    .and_then(|a| a.purpose.as_deref())
                    .unwrap_or_default(),
                case_id: attribution.and_then(|a| a.case_id.as_deref()),
                end_user: attribution.and_then(|a| a.end_user.as_deref()),
            };
            let r = self.call_adapter(state, &adapter, &creq, ctx).await;
            if let Some(s) = r.1 {
                upstream_status.store(s, Ordering::Relaxed);
            }
            r.0
        };
        // Field filtering after the lookup: the shared record is never changed.
        let (record, fetched_at, status, entry) = if spec.shareable {
            // Every co-subject the department call depends on is part of
            // the key: a record fetched for one pairing is never another's.
            let mut variant = String::new();
            for kind in &adapter.subject_kinds_used {
                if *kind == spec.subject_kind {
                    continue;
                }
                let v = scenario_subjects.and_then(|m| m.get(kind));
                variant.push_str(kind);
                variant.push('=');
                variant.push_str(v.map_or("\u{0}", String::as_str));
                variant.push('\u{1f}');
            }
            let (entry, status) = self
                .cache
                .get_variant(spec, subject, &variant, load)
                .await
                .map_err(GatewayError::Shared)?;
            // A hit copies nothing here: the reply may already be serialised.
            (None, entry.fetched_at, status, Some(entry))
        } else {
            (
                Some(load().await?),
                std::time::SystemTime::now(),
                CacheStatus::Miss,
                None,
            )
        };
        let us = upstream_status.load(Ordering::Relaxed);
        if us != 0 {
            ctx.upstream_status = Some(us);
        }
        ctx.cache = Some(status);
        self.metrics.observe_cache(status);
        Ok(DatasetRead {
            spec: spec.clone(),
            subject: subject.to_string(),
            record,
            fields,
            fetched_at,
            cache: status,
            entry,
            projection: fields.projection(),
        })
    }

    /// Translates, calls the department through its protections, maps back.
    /// Returns the department's status too (for the audit record).
    async fn call_adapter(
        &self,
        state: &State,
        adapter: &DepartmentAdapter,
        creq: &CanonicalRequest<'_>,
        ctx: &RequestCtx,
    ) -> (Result<Record, GatewayError>, Option<u16>) {
        let ureq = match adapter.build_request(creq) {
            Ok(r) => r,
            Err(e) => return (Err(e.into()), None),
        };
        let mut headers = ureq.headers;
        if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
            headers.insert("x-request-id", v);
        }
        headers.insert("traceparent", ctx.trace.header());
        // The adapter interprets each reply before the breaker hears of it:
        // its not-found (a 404, a not-found SOAP fault on a 500) is an answer.
        let interpret = |reply: Reply| {
            adapter
                .map_response(
                    creq.dataset,
                    UpstreamReply {
                        status: reply.status,
                        headers: &reply.headers,
                        body: &reply.body,
                    },
                )
                .map_err(GatewayError::from)
        };
        self.send_protected(
            state,
            &adapter.department,
            Traffic::Dataset,
            (ureq.method, &ureq.path_and_query, headers, ureq.body),
            interpret,
        )
        .await
    }

    /// Sends one request to a department inside its bulkhead, through the
    /// breaker of its kind of traffic, with per-attempt and total timeouts
    /// and budgeted retries for idempotent methods. Each reply is first
    /// interpreted (`interpret`: the adapter's mapping, or the proxy's rule);
    /// only then is the outcome reported to the breaker, and only a
    /// department failure ([`GatewayError::department_failure`]) counts.
    /// Returns the interpreted result and the department's last status.
    async fn send_protected<T>(
        &self,
        state: &State,
        department: &str,
        traffic: Traffic,
        (method, path_and_query, headers, body): (Method, &str, HeaderMap, Bytes),
        interpret: impl Fn(Reply) -> Result<T, GatewayError>,
    ) -> (Result<T, GatewayError>, Option<u16>) {
        let no_adapter = || GatewayError::from(UpstreamError::NoAdapter(department.to_string()));
        let (Some(client), Some(guard)) = (
            state.upstreams.get(department),
            state.protect.department(department),
        ) else {
            return (Err(no_adapter()), None);
        };
        let _slot = match guard.bulkhead().acquire().await {
            Ok(slot) => slot,
            Err(e) => return (Err(e.into()), None),
        };
        let timeouts = guard.timeouts();
        let retry = guard.retry();
        retry.on_request();
        let start = Instant::now();
        let mut attempt: u32 = 1;
        let mut status = None;
        loop {
            let permit = match guard.breaker_for(traffic).try_acquire() {
                Ok(p) => p,
                Err(e) => return (Err(e.into()), status),
            };
            let remaining = timeouts.total.saturating_sub(start.elapsed());
            let budget = timeouts.attempt.min(remaining);
            if budget.is_zero() {
                permit.failure();
                return (Err(UpstreamError::Timeout(timeouts.total).into()), status);
            }
            let mut req = Request::new(Full::new(body.clone()));
            *req.method_mut() = method.clone();
            *req.headers_mut() = headers.clone();
            let max_reply = state.settings.limits.max_reply_bytes;
            let sent = client.send(req, path_and_query, budget, max_reply).await;
            status = sent.as_ref().ok().map(|r| r.status.as_u16()).or(status);
            let result = sent.map_err(GatewayError::from).and_then(&interpret);
            let Some(kind) = result
                .as_ref()
                .err()
                .and_then(GatewayError::department_failure)
            else {
                permit.success();
                self.metrics.observe_upstream(department, start.elapsed());
                return (result, status);
            };
            permit.failure();
            if let Some(backoff) = retry.should_retry(&method, attempt, kind, start.elapsed()) {
                tokio::time::sleep(backoff).await;
                attempt += 1;
                continue;
            }
            self.metrics.observe_upstream(department, start.elapsed());
            return match result {
                Err(GatewayError::Upstream(UpstreamError::Timeout(_))) => {
                    (Err(UpstreamError::Timeout(budget).into()), status)
                }
                other => (other, status),
            };
        }
    }

    async fn run_scenario(
        &self,
        state: &State,
        ctx: &mut RequestCtx,
        principal: &Principal,
        grants: &ClientGrants,
        spec: &crate::scenario::Scenario,
        subjects: &BTreeMap<String, String>,
    ) -> Result<Resp, GatewayError> {
        let (reply, failed_required) = self
            .run_parts(state, ctx, principal, grants, spec, subjects, None)
            .await?;
        Ok(json_response(
            scenario_status(spec, failed_required),
            &reply,
        ))
    }

    /// Runs a scenario's parts (those in `only`, or all), each through
    /// [`DataPlane::read_dataset`] with its own audit record. Returns the
    /// merged reply and whether a required part failed.
    #[allow(clippy::too_many_arguments)]
    async fn run_parts(
        &self,
        state: &State,
        ctx: &RequestCtx,
        principal: &Principal,
        grants: &ClientGrants,
        spec: &crate::scenario::Scenario,
        subjects: &BTreeMap<String, String>,
        only: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<(crate::scenario::ScenarioReply, bool), GatewayError> {
        let parent = ctx;
        let unrecorded = std::sync::atomic::AtomicBool::new(false);
        let unrecorded = &unrecorded;
        let run_part = |part: &crate::scenario::Part, subject: &str| {
            let part_dataset = part.dataset.clone();
            let part_timeout = part.timeout;
            let subject = subject.to_string();
            async move {
                let mut pctx = RequestCtx {
                    request_id: parent.request_id.clone(),
                    started: Instant::now(),
                    peer: parent.peer,
                    action: "scenario.part",
                    client: parent.client.clone(),
                    attribution: parent.attribution.clone(),
                    department: None,
                    dataset: Some(part_dataset.clone()),
                    scenario: parent.scenario.clone(),
                    subject: Some(subject.clone()),
                    cache: None,
                    upstream_status: None,
                    ratelimit: None,
                    trace: parent.trace.clone(),
                    approval: None,
                };
                // The part enforces its own deadline so that a timed-out part
                // is still recorded (the scenario's deadline is only a backstop).
                let r = tokio::time::timeout(
                    part_timeout,
                    self.read_dataset(
                        state,
                        &mut pctx,
                        principal,
                        grants,
                        &part_dataset,
                        &subject,
                        Some(subjects),
                    ),
                )
                .await
                .unwrap_or(Err(UpstreamError::Timeout(part_timeout).into()));
                let (result, decision, reason) = match r {
                    Ok(read) => {
                        let mut signed = self.signed_reply(read);
                        let record = signed.remove("record");
                        (
                            PartResult {
                                status: PartStatus::Ok,
                                http_status: 200,
                                record,
                                detail: None,
                                signed: Some(signed),
                            },
                            Decision::Allow,
                            None,
                        )
                    }
                    Err(e) => {
                        let p = e.problem();
                        (
                            PartResult {
                                status: e.part_status(),
                                http_status: p.status.as_u16(),
                                record: None,
                                detail: Some(p.detail),
                                signed: None,
                            },
                            e.decision(),
                            Some(e.to_string()),
                        )
                    }
                };
                // Each part is its own decision in the audit log.
                let rec = self
                    .record(
                        &pctx,
                        decision,
                        reason,
                        StatusCode::from_u16(result.http_status).unwrap_or(StatusCode::OK),
                    )
                    .await;
                if rec.is_err() {
                    // No data leaves without its record: the whole scenario fails closed.
                    unrecorded.store(true, Ordering::Relaxed);
                }
                result
            }
        };
        let (reply, failed_required) = spec.run_only(subjects, only, run_part).await;
        if unrecorded.load(Ordering::Relaxed) {
            return Err(GatewayError::Audit(crate::audit::AuditError::Unavailable));
        }
        Ok((reply, failed_required))
    }

    async fn proxy<B: RequestBody>(
        &self,
        state: &State,
        ctx: &mut RequestCtx,
        conn: &ConnInfo,
        req: Request<B>,
        department: &str,
        path: &str,
    ) -> Result<Resp, GatewayError> {
        let (parts, body) = req.into_parts();
        let body = read_body(body, state.settings.limits.max_body_bytes).await?;
        // An allow-list: routing headers (`X-HTTP-Method-Override`,
        // `X-Original-URL`, `X-Forwarded-*`, ...), the caller's credentials
        // and cookies never reach the department.
        let declared = state
            .adapters
            .department(department)
            .map(|a| a.forward_headers.as_slice())
            .unwrap_or_default();
        let mut headers = crate::forward::forwardable(&parts.headers, declared);
        if let Ok(v) = HeaderValue::from_str(&conn.peer.ip().to_string()) {
            headers.insert("x-forwarded-for", v);
        }
        headers.insert(
            "x-forwarded-proto",
            HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
        );
        headers.append(header::VIA, HeaderValue::from_static("1.1 onewindow"));
        if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
            headers.insert("x-request-id", v);
        }
        // The caller's traceparent is replaced by ours (validated, re-parented).
        headers.insert("traceparent", ctx.trace.header());
        if let Some(adapter) = state.adapters.department(department)
            && let Some(crate::adapter::UpstreamAuth {
                header: Some((name, value)),
                ..
            }) = &adapter.upstream_auth
        {
            headers.insert(name.clone(), value.clone());
        }
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        // A pass-through answer is the department's own, except a 5xx: that
        // is the department failing (and counts for the proxy breaker only).
        let interpret = |reply: Reply| {
            if reply.status.is_server_error() {
                Err(UpstreamError::Status(reply.status.as_u16()).into())
            } else {
                Ok(reply)
            }
        };
        let (reply, status) = self
            .send_protected(
                state,
                department,
                Traffic::Proxy,
                (parts.method, &path_and_query, headers, body),
                interpret,
            )
            .await;
        ctx.upstream_status = status;
        let reply = reply?;
        let mut resp = Response::new(Full::new(reply.body));
        *resp.status_mut() = reply.status;
        let h = resp.headers_mut();
        for (k, v) in reply.headers.iter() {
            if k != header::CONTENT_LENGTH && k != header::SET_COOKIE {
                h.append(k.clone(), v.clone());
            }
        }
        h.append(header::VIA, HeaderValue::from_static("1.1 onewindow"));
        Ok(resp)
    }

    /// The refusal folding, to share with the admin plane.
    pub fn aggregator(&self) -> Arc<crate::audit::DenyAggregator> {
        self.aggregator.clone()
    }

    /// Writes the summary records of folded refusals (called periodically).
    pub async fn flush_aggregates(&self) {
        for ev in self.aggregator.drain() {
            if let Err(e) = self.audit.append(ev).await {
                tracing::error!(error = %e, "audit log unavailable for refusal summaries");
            }
        }
    }

    /// Writes the audit record of one decision and waits until it is durable.
    async fn record(
        &self,
        ctx: &RequestCtx,
        decision: Decision,
        reason: Option<String>,
        status: StatusCode,
    ) -> Result<(), crate::audit::AuditError> {
        if ctx.action == JWKS_READ {
            return Ok(());
        }
        // Refused before a route or a token was known: folded per source below.
        let pre_auth =
            ctx.client.is_none() && ctx.action == "request" && decision != Decision::Allow;
        let action = if pre_auth {
            Action::REQUEST_REFUSED
        } else {
            Action::from_name(ctx.action)
        };
        let mut ev = AuditEvent::new(action, decision);
        ev.approval = ctx.approval.clone();
        ev.request_id = Some(ctx.request_id.clone());
        // Unauthenticated callers are known by their address.
        ev.client = Some(
            ctx.client
                .clone()
                .unwrap_or_else(|| format!("ip:{}", ctx.peer)),
        );
        if let Some(a) = &ctx.attribution {
            ev.end_user = a.end_user.clone();
            ev.purpose = a.purpose.clone();
            ev.case_id = a.case_id.clone();
        }
        // Names taken from the path are recorded only when they name
        // configured ones: an unknown "dataset" may be an id typed there.
        let state = self.state.load();
        ev.department = ctx
            .department
            .clone()
            .filter(|d| state.settings.departments.contains_key(d));
        ev.dataset = ctx
            .dataset
            .clone()
            .filter(|d| state.datasets.get(d).is_some());
        ev.scenario = ctx
            .scenario
            .clone()
            .filter(|s| state.scenarios.get(s).is_some());
        ev.subject_ref = ctx.subject.as_deref().map(|s| self.audit.subject_ref(s));
        ev.reason = reason;
        ev.status = Some(status.as_u16());
        ev.cache = ctx.cache.map(|c| c.as_str().to_string());
        ev.upstream_status = ctx.upstream_status;
        ev.latency_us = Some(ctx.started.elapsed().as_micros() as u64);
        // Floods of refusals are folded into periodic summary records, per
        // client (or address, when unauthenticated).
        if (pre_auth || ctx.action == "auth.denied" || status == StatusCode::TOO_MANY_REQUESTS)
            && !self.aggregator.admits(&ev)
        {
            return Ok(());
        }
        self.audit.append(ev).await.map(|_| ())
    }
}

/// The audit action of `GET /.well-known/jwks.json` (public, not recorded).
const JWKS_READ: &str = "jwks.read";

/// A record as the client may see it, and how it was obtained.
struct DatasetRead<'g> {
    spec: Arc<crate::config::DatasetSpec>,
    /// The subject in its canonical spelling (what the record and its
    /// signature name, whatever spelling the caller used).
    subject: String,
    /// The record when it was not cached (else it is in `entry`), unfiltered.
    record: Option<Record>,
    /// The client's field filter.
    fields: &'g crate::auth::FieldFilter,
    fetched_at: std::time::SystemTime,
    cache: CacheStatus,
    /// The cache entry it came from (its signatures are kept there).
    entry: Option<Arc<crate::cache::Entry>>,
    /// Name of the client's field projection (see `FieldFilter::projection`).
    projection: Cow<'static, str>,
}

impl DatasetRead<'_> {
    /// The record as this client may see it.
    fn visible_record(&mut self) -> Record {
        let mut record = match (self.record.take(), &self.entry) {
            (Some(r), _) => r,
            (None, Some(e)) => (*e.record).clone(),
            (None, None) => Record::new(),
        };
        self.fields.filter(&mut record);
        record
    }
}

impl DataPlane {
    /// The signed dataset reply (docs/SIGNATURES.md): `dataset`, `subject`,
    /// `record`, `source` (`department`, `issuer`, `fetched_at`, `cache`),
    /// `notice` and `signature`. A cached record is signed once per field
    /// projection; `source.cache` is outside the signature.
    fn signed_reply(
        &self,
        mut read: DatasetRead<'_>,
    ) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::{Value, json};
        let record = read.visible_record();
        let spec = &read.spec;
        let valid = record
            .get("valid_until")
            .and_then(|v| v.as_str())
            .map(|d| format!(" Valid until {d}."))
            .unwrap_or_default();
        let mut body = serde_json::Map::new();
        body.insert("dataset".into(), json!(spec.name));
        body.insert("subject".into(), json!(read.subject));
        body.insert("record".into(), Value::Object(record));
        body.insert(
            "source".into(),
            json!({
                "department": spec.department,
                "issuer": spec.issuer,
                "fetched_at": rfc3339(read.fetched_at),
            }),
        );
        body.insert("notice".into(), json!(format!("{}{valid}", spec.notice)));
        let sign = || match crate::sharing::signed::signing_input(&body) {
            Ok(payload) => self.sharing.keys.sign(&payload),
            Err(e) => {
                tracing::error!(error = %e, "record could not be canonicalised for signing");
                String::new()
            }
        };
        let signature: Arc<str> = match &read.entry {
            Some(e) => e.signatures.get_or_sign(&read.projection, sign),
            None => Arc::from(sign()),
        };
        if let Some(Value::Object(source)) = body.get_mut("source") {
            source.insert("cache".into(), json!(read.cache.as_str()));
        }
        body.insert("signature".into(), json!(&*signature));
        body
    }

    /// The serialised dataset reply. A cached record's reply is built once
    /// per field projection and cache status and kept with the entry: a hit
    /// is a lookup and a `Bytes` clone.
    fn reply_body(&self, read: DatasetRead<'_>) -> Bytes {
        let Some(entry) = read.entry.clone() else {
            return Bytes::from(serde_json::to_vec(&self.signed_reply(read)).unwrap_or_default());
        };
        if let Some(body) = entry.replies.get(&read.projection, read.cache) {
            return body;
        }
        let (projection, status) = (read.projection.clone(), read.cache);
        let body = Bytes::from(serde_json::to_vec(&self.signed_reply(read)).unwrap_or_default());
        entry.replies.keep(&projection, status, body.clone());
        body
    }
}

/// Reads a request body up to `limit` bytes (Content-Length and chunked alike).
pub async fn read_body<B: RequestBody>(body: B, limit: usize) -> Result<Bytes, GatewayError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(RequestError::BodyTooLarge { limit }.into());
    }
    match Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(RequestError::BodyTooLarge { limit }.into())
        }
        Err(_) => Err(RequestError::BodyUnreadable.into()),
    }
}

/// A JSON answer.
pub fn json_response<T: serde::Serialize>(status: StatusCode, v: &T) -> Resp {
    json_bytes_response(
        status,
        Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
    )
}

/// A JSON answer already serialised.
pub fn json_bytes_response(status: StatusCode, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let micros = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    crate::audit::time::format_rfc3339_micros(micros)
}
