//! The admin plane, on its own listener: health, readiness, metrics, the
//! OpenAPI document, adapter registration by departments, cache revocation,
//! audit queries and verification, and config reload.
//!
//! Every endpoint but health, readiness, metrics and the OpenAPI document
//! needs a token; roles come from its `roles` claim. Every change is audited.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::adapter::{AdapterSpec, MAX_ADAPTER_BYTES};
use crate::audit::{Action, AuditEvent, AuditLog, Decision, Filter};
use crate::auth::{AccessError, Principal, Role};
use crate::cache::SharedCache;
use crate::cluster::{Acks, Applier, BoxFuture, Cluster, Published};
use crate::error::{GatewayError, RequestError};
use crate::loader::Overrides;
use crate::metrics::Metrics;
use crate::pipeline::{RequestIds, json_response, read_body};
use crate::routing::{AdminRoute, AdminRouter, NoRoute};
use crate::server::{ConnInfo, Handler, RequestBody};
use crate::state::{State, build_state, compile_adapter, department_upstream, endpoint_field};

type Resp = Response<Full<Bytes>>;

/// The admin plane.
pub struct AdminPlane {
    state: Arc<ArcSwap<State>>,
    audit: AuditLog,
    cache: Arc<SharedCache>,
    metrics: Arc<Metrics>,
    config: PathBuf,
    overrides: Overrides,
    shutdown: tokio_util::sync::CancellationToken,
    /// Serialises changes (adapter PUT/DELETE, reload) so two cannot race.
    changes: Mutex<()>,
    ids: RequestIds,
    router: AdminRouter,
    cluster: Option<Arc<Cluster>>,
    /// The data-subject index, reported by `/readyz`.
    subject_index: std::sync::OnceLock<crate::transparency::SubjectIndex>,
    /// Folds unauthenticated refusals (shared with the data plane by
    /// [`AdminPlane::with_aggregator`]).
    aggregator: Arc<crate::audit::DenyAggregator>,
}

impl AdminPlane {
    /// Assembles the admin plane.
    pub fn new(
        state: Arc<ArcSwap<State>>,
        audit: AuditLog,
        cache: Arc<SharedCache>,
        metrics: Arc<Metrics>,
        config: PathBuf,
        overrides: Overrides,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        Self {
            state,
            audit,
            cache,
            metrics,
            config,
            overrides,
            shutdown,
            changes: Mutex::new(()),
            ids: RequestIds::default(),
            router: AdminRouter::new(),
            cluster: None,
            subject_index: std::sync::OnceLock::new(),
            aggregator: Arc::new(crate::audit::DenyAggregator::from_settings(
                &crate::audit::AuditSettings::default(),
            )),
        }
    }
    /// Cluster mode: changes are shared with the other nodes.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Lets `/readyz` report the data-subject index.
    pub fn set_subject_index(&self, index: crate::transparency::SubjectIndex) {
        let _ = self.subject_index.set(index);
    }

    /// Shares the data plane's refusal folding (one summary per source).
    pub fn with_aggregator(mut self, aggregator: Arc<crate::audit::DenyAggregator>) -> Self {
        self.aggregator = aggregator;
        self
    }

    /// Reloads every configuration file from disk; an invalid configuration is
    /// refused and the running one kept. In cluster mode every other node is
    /// then told to reload from its own disk.
    pub async fn reload(&self) -> Result<(), crate::config::ConfigErrors> {
        self.reload_local().await?;
        if let Some(c) = &self.cluster
            && let Published::Sent { id } = c.bus.publish_reload().await
        {
            c.bus.wait_acks(&id).await;
        }
        Ok(())
    }

    async fn reload_local(&self) -> Result<(), crate::config::ConfigErrors> {
        let _g = self.changes.lock().await;
        let loaded = crate::loader::load(&self.config, &self.overrides)?;
        if let Some(c) = &self.cluster {
            c.limits.configure(
                &loaded.rate_limits,
                loaded.protect.iter().map(|(k, v)| (k.as_str(), v)),
            );
        }
        let new = build_state(loaded, &self.shutdown).await?;
        let old = self.state.swap(Arc::new(new));
        old.auth.stop();
        tracing::info!("configuration reloaded");
        Ok(())
    }
}

/// How other nodes' changes are applied here.
impl Applier for AdminPlane {
    fn invalidate(&self, dataset: &str, subject: Option<&str>) {
        self.cache.invalidate(dataset, subject);
        self.metrics.observe_invalidation();
    }

    fn drop_cache(&self) {
        let state = self.state.load();
        for d in state.datasets.iter() {
            self.cache.invalidate(&d.name, None);
        }
    }

    fn apply_adapter<'a>(
        &'a self,
        department: &'a str,
        text: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let _g = self.changes.lock().await;
            let state = self.state.load_full();
            let file = state
                .settings
                .paths
                .adapters
                .join(format!("{department}.toml"));
            match text {
                Some(t) => {
                    let valid = self
                        .validate_adapter(&state, department, t.as_bytes(), false)
                        .await
                        .map_err(|e| e.to_string())?;
                    self.install_adapter(&state, department, valid, &file)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                None => self
                    .remove_adapter(&state, department, &file)
                    .await
                    .map_err(|e| e.to_string()),
            }
        })
    }

    fn reload(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.reload_local().await.map_err(|e| e.to_string()) })
    }
}

/// An adapter file that passed every check, ready to be installed.
struct ValidAdapter {
    adapter: crate::adapter::DepartmentAdapter,
    client: Arc<dyn crate::upstream::Department>,
    text: String,
}

fn cluster_json(version: u64, acks: Acks, applied_here: bool) -> serde_json::Value {
    serde_json::json!({
        "version": version,
        "nodes_confirmed": acks.confirmed,
        "nodes_live": acks.live,
        "superseded": !applied_here,
    })
}

/// The action of an admin route's decision record; `None` for the open routes.
fn admin_action(route: AdminRoute, method: &Method) -> Option<&'static str> {
    Some(match route {
        AdminRoute::Healthz
        | AdminRoute::Readyz
        | AdminRoute::Metrics
        | AdminRoute::OpenApi
        | AdminRoute::Console => {
            return None;
        }
        AdminRoute::AuditStats => "admin.audit.stats",
        AdminRoute::AdapterTry => "admin.adapter.try",
        AdminRoute::Adapters => "admin.adapters.read",
        AdminRoute::Adapter => match *method {
            Method::PUT => "admin.adapter.put",
            Method::DELETE => "admin.adapter.delete",
            _ => "admin.adapter.read",
        },
        AdminRoute::CacheInvalidate => "admin.cache.invalidate",
        AdminRoute::Audit => "admin.audit.query",
        AdminRoute::AuditVerify => "admin.audit.verify",
        AdminRoute::Reload => "admin.reload",
        AdminRoute::Departments => "admin.departments.read",
    })
}

/// An audit query's filters for its own record: the subject becomes its
/// reference, the case id is kept (as in every record), dataset and
/// department only when they name configured ones; the other filters are
/// named, not quoted (their values are free text).
fn note_audit_filters(state: &State, query: Option<&str>, d: &mut Decided) {
    let q = parse_query(query);
    d.subject = q.get("subject").cloned();
    d.case_id = q.get("case").cloned();
    d.dataset = q
        .get("dataset")
        .filter(|x| state.datasets.get(x).is_some())
        .cloned();
    d.department = q
        .get("department")
        .filter(|x| state.settings.departments.contains_key(*x))
        .cloned();
    let mut names: Vec<&str> = q.keys().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    if !names.is_empty() {
        let known = [
            "action",
            "case",
            "client",
            "cursor",
            "dataset",
            "decision",
            "department",
            "limit",
            "scenario",
            "since",
            "subject",
            "until",
        ];
        let shown: Vec<&str> = names
            .iter()
            .map(|n| if known.contains(n) { *n } else { "(other)" })
            .collect();
        d.note = Some(format!("filters: {}", shown.join(", ")));
    }
}

impl AdminPlane {
    /// Writes the decision record of an admin request that has none yet
    /// (reads, refusals before a change, 401s, unknown routes). Refusals of
    /// unauthenticated callers are folded per source like the data plane's.
    async fn record_decision(
        &self,
        d: &Decided,
        action: &'static str,
        conn: &ConnInfo,
        request_id: &str,
        result: &Result<Resp, GatewayError>,
        started: Instant,
    ) -> Result<(), crate::audit::AuditError> {
        let (decision, status, reason) = match result {
            Ok(r) => (Decision::Allow, r.status().as_u16(), d.note.clone()),
            Err(e) => (
                e.decision(),
                e.problem().status.as_u16(),
                Some(e.audit_reason()),
            ),
        };
        let mut ev = AuditEvent::new(Action::new(action), decision);
        ev.request_id = Some(request_id.to_string());
        ev.client = Some(
            d.client
                .clone()
                .unwrap_or_else(|| format!("ip:{}", conn.peer.ip())),
        );
        ev.case_id = d.case_id.clone();
        ev.department = d.department.clone();
        ev.dataset = d.dataset.clone();
        ev.subject_ref = d.subject.as_deref().map(|s| self.audit.subject_ref(s));
        ev.status = Some(status);
        ev.reason = reason;
        ev.latency_us = Some(started.elapsed().as_micros() as u64);
        if d.client.is_none() && decision != Decision::Allow && !self.aggregator.admits(&ev) {
            return Ok(());
        }
        self.audit.append(ev).await.map(|_| ())
    }
}

impl Handler for AdminPlane {
    async fn handle<B: RequestBody>(self: Arc<Self>, req: Request<B>, conn: Arc<ConnInfo>) -> Resp {
        let request_id = self.ids.from_headers(req.headers());
        let head = req.method() == Method::HEAD;
        let started = Instant::now();
        let mut d = Decided::default();
        let result = self.process(req, &conn, &request_id, &mut d).await;
        if let Some(action) = d.action
            && !d.recorded.load(Ordering::Acquire)
            && let Err(e) = self
                .record_decision(&d, action, &conn, &request_id, &result, started)
                .await
        {
            tracing::error!(request_id = %request_id, error = %e, "audit log unavailable; failing closed");
            let mut resp = GatewayError::Audit(e).problem().into_response(&request_id);
            crate::routing::finish_reply(&mut resp, &request_id, "no-store", head);
            return resp;
        }
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => e.problem().into_response(&request_id),
        };
        crate::routing::finish_reply(&mut resp, &request_id, "no-store", head);
        resp
    }
}

/// An admin change, for the audit record.
struct Change<'a> {
    action: &'static str,
    principal: &'a Principal,
    department: Option<String>,
    dataset: Option<String>,
    subject: Option<String>,
    request_id: &'a str,
    started: Instant,
    recorded: &'a AtomicBool,
}

/// An authenticated admin request: who calls, its id, when it started.
struct Call<'a> {
    principal: &'a Principal,
    request_id: &'a str,
    started: Instant,
    /// Set once the call's decision has its own record (a change).
    recorded: &'a AtomicBool,
}

/// What the admin plane knows about a request, for its decision record.
#[derive(Default)]
struct Decided {
    /// The action; `None` for the open routes (health, metrics, OpenAPI).
    action: Option<&'static str>,
    /// The authenticated caller.
    client: Option<String>,
    /// Department, dataset, subject and case concerned (audit filters too).
    department: Option<String>,
    dataset: Option<String>,
    subject: Option<String>,
    case_id: Option<String>,
    /// A rule-level note (e.g. which audit filters were used), never input.
    note: Option<String>,
    /// The decision already has its own record (changes).
    recorded: AtomicBool,
}

impl<'a> Call<'a> {
    /// The audit description of a change made by this call.
    fn change(
        &self,
        action: &'static str,
        department: Option<String>,
        dataset: Option<String>,
        subject: Option<String>,
    ) -> Change<'a> {
        Change {
            action,
            principal: self.principal,
            department,
            dataset,
            subject,
            request_id: self.request_id,
            started: self.started,
            recorded: self.recorded,
        }
    }
}

impl AdminPlane {
    /// Routes, answers the open routes, authenticates, then hands the request
    /// to its route's handler.
    async fn process<B: RequestBody>(
        &self,
        mut req: Request<B>,
        conn: &ConnInfo,
        request_id: &str,
        d: &mut Decided,
    ) -> Result<Resp, GatewayError> {
        d.action = Some(Action::REQUEST_REFUSED_NAME);
        let path = crate::path::normalise(req.uri().path())?;
        let (route, department) = self
            .router
            .route(req.method(), &path)
            .map_err(|e| match e {
                NoRoute::NotFound => RequestError::NotFound("no such admin route".into()),
                NoRoute::MethodNotAllowed => RequestError::MethodNotAllowed,
            })?;
        d.action = admin_action(route, req.method());
        // HEAD is answered (and audited) exactly as GET; the body is dropped
        // in `handle`.
        if req.method() == Method::HEAD {
            *req.method_mut() = Method::GET;
        }
        let state = self.state.load_full();
        // Only a configured department's name is recorded: the path is input.
        d.department = department
            .clone()
            .filter(|x| state.settings.departments.contains_key(x));
        match route {
            AdminRoute::Healthz => return Ok(text(StatusCode::OK, "ok\n", "text/plain")),
            AdminRoute::Readyz => return Ok(self.readyz(&state)),
            AdminRoute::Metrics => {
                self.metrics.count_cases().await;
                return Ok(text(
                    StatusCode::OK,
                    &self.metrics.encode(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ));
            }
            AdminRoute::OpenApi => {
                return Ok(json_response(
                    StatusCode::OK,
                    &crate::openapi::document(&state),
                ));
            }
            AdminRoute::Console => return crate::console::serve(&path),
            _ => {}
        }
        // Everything else needs a verified token.
        let principal = match state.authenticate(req.headers(), conn).await {
            Ok(p) => p,
            Err(e) => {
                d.action = Some(Action::AUTH_DENIED_NAME);
                return Err(e);
            }
        };
        d.client = Some(principal.sub().to_string());
        if route == AdminRoute::Audit {
            note_audit_filters(&state, req.uri().query(), d);
        }
        let call = Call {
            principal: &principal,
            request_id,
            started: Instant::now(),
            recorded: &d.recorded,
        };
        match route {
            AdminRoute::Adapters => list_adapters(&state, &principal),
            AdminRoute::Adapter => {
                let department = department.unwrap_or_default();
                self.adapter(&state, &call, req, &department).await
            }
            AdminRoute::CacheInvalidate => {
                self.invalidate_cache(&state, &call, req.into_body()).await
            }
            AdminRoute::Audit => self.query_audit(&principal, req.uri().query()).await,
            AdminRoute::AuditVerify => self.verify_audit(&principal).await,
            AdminRoute::Reload => self.reload_route(&call).await,
            AdminRoute::Departments => departments(&state, &principal),
            AdminRoute::AuditStats => self.audit_stats(&principal, req.uri().query()).await,
            AdminRoute::AdapterTry => {
                let department = department.unwrap_or_default();
                self.try_adapter(&state, &call, req.into_body(), &department)
                    .await
            }
            AdminRoute::Healthz
            | AdminRoute::Readyz
            | AdminRoute::Metrics
            | AdminRoute::OpenApi
            | AdminRoute::Console => {
                Err(RequestError::NotFound("no such admin route".into()).into())
            }
        }
    }

    /// `GET|PUT|DELETE /admin/adapters/{department}`: the department's own
    /// admin (or a platform admin) reads, replaces or removes its adapter.
    async fn adapter<B: RequestBody>(
        &self,
        state: &State,
        call: &Call<'_>,
        req: Request<B>,
        department: &str,
    ) -> Result<Resp, GatewayError> {
        let principal = call.principal;
        if let Err(e) = principal.require_department_admin(department) {
            // A refused change attempt is a decision: audit it.
            let r = Err(e.into());
            let action = match *req.method() {
                Method::PUT => Some("admin.adapter.put"),
                Method::DELETE => Some("admin.adapter.delete"),
                _ => None,
            };
            if let Some(action) = action {
                let c = call.change(action, Some(department.to_string()), None, None);
                self.audit_change(&c, &r).await?;
            }
            return r;
        }
        if !state.settings.departments.contains_key(department) {
            return Err(RequestError::NotFound(format!("no department `{department}`")).into());
        }
        let file = state
            .settings
            .paths
            .adapters
            .join(format!("{department}.toml"));
        match *req.method() {
            Method::GET => match tokio::fs::read_to_string(&file).await {
                Ok(t) => Ok(text(StatusCode::OK, &t, "application/toml")),
                Err(_) => Err(RequestError::NotFound(format!(
                    "no adapter registered for `{department}`"
                ))
                .into()),
            },
            Method::PUT => {
                let json = req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/json"));
                let body = read_body(req.into_body(), MAX_ADAPTER_BYTES).await?;
                let c = call.change(
                    "admin.adapter.put",
                    Some(department.to_string()),
                    None,
                    None,
                );
                let r = match &self.cluster {
                    Some(cl) => self.put_adapter_cluster(cl, department, &body, json).await,
                    None => self.put_adapter(department, &body, json, &file).await,
                };
                self.audit_change(&c, &r).await?;
                r
            }
            _ => {
                let c = call.change(
                    "admin.adapter.delete",
                    Some(department.to_string()),
                    None,
                    None,
                );
                let r = match &self.cluster {
                    Some(cl) => self.delete_adapter_cluster(cl, department).await,
                    None => self.delete_adapter(department, &file).await,
                };
                self.audit_change(&c, &r).await?;
                r
            }
        }
    }

    /// `POST /admin/cache/invalidate`: revokes a cached record (or a whole
    /// dataset) of the caller's department.
    async fn invalidate_cache<B: RequestBody>(
        &self,
        state: &State,
        call: &Call<'_>,
        body: B,
    ) -> Result<Resp, GatewayError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            dataset: String,
            subject: Option<String>,
        }
        let body = read_body(body, 64 * 1024).await?;
        let mut b: Body = serde_json::from_slice(&body).map_err(|e| {
            RequestError::Malformed(format!(
                "body must be {{\"dataset\": \"...\", \"subject\"?: \"...\"}}: {e}"
            ))
        })?;
        let spec = state
            .datasets
            .get(&b.dataset)
            .ok_or_else(|| RequestError::NotFound(format!("no dataset `{}`", b.dataset)))?;
        // The same canonical form reads use (USCC upper-case, ...).
        b.subject = b
            .subject
            .map(|s| state.datasets.canonical_subject(&spec.subject_kind, &s));
        let c = call.change(
            "admin.cache.invalidate",
            Some(spec.department.clone()),
            Some(b.dataset.clone()),
            b.subject.clone(),
        );
        if let Err(e) = call.principal.require_department_admin(&spec.department) {
            let r = Err(e.into());
            self.audit_change(&c, &r).await?;
            return r;
        }
        self.cache.invalidate(&b.dataset, b.subject.as_deref());
        self.metrics.observe_invalidation();
        let mut reply = serde_json::json!({
            "invalidated": {"dataset": b.dataset, "subject": b.subject},
        });
        let mut status = StatusCode::OK;
        if let Some(cl) = &self.cluster {
            // Every live node has dropped the record when this returns (or
            // the reply says how many had, after a second).
            reply["cluster"] = match cl
                .bus
                .publish_invalidate(&b.dataset, b.subject.as_deref())
                .await
            {
                Published::Sent { id } => {
                    let acks = cl.bus.wait_acks(&id).await;
                    serde_json::json!({"published": true,
                        "nodes_confirmed": acks.confirmed, "nodes_live": acks.live})
                }
                Published::Queued => {
                    status = StatusCode::ACCEPTED;
                    serde_json::json!({"published": false, "queued": true,
                        "detail": "revoked on this node; Redis is unavailable, so the other nodes are told when it answers again (and drop their cached records on reconnecting)"})
                }
            };
        }
        let r = Ok(json_response(status, &reply));
        self.audit_change(&c, &r).await?;
        r
    }

    /// `GET /admin/audit`: one page of matching records (auditor).
    async fn query_audit(
        &self,
        principal: &Principal,
        query: Option<&str>,
    ) -> Result<Resp, GatewayError> {
        principal.require_role(Role::Auditor)?;
        let q = parse_query(query);
        let filter = audit_filter(&q);
        let limit = match q.get("limit") {
            Some(l) => Some(
                l.parse::<usize>()
                    .map_err(|_| RequestError::Malformed("limit must be a whole number".into()))?,
            ),
            None => None,
        };
        let filter = filter.compile(self.audit.subject_key())?;
        let page = self
            .audit
            .query(filter, q.get("cursor").cloned(), limit)
            .await?;
        Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"records": page.records, "next_cursor": page.next_cursor}),
        ))
    }

    /// `GET /admin/audit/stats`: decisions over time and top clients and
    /// datasets for the console's chart (auditor; the query's filters).
    async fn audit_stats(
        &self,
        principal: &Principal,
        query: Option<&str>,
    ) -> Result<Resp, GatewayError> {
        principal.require_role(Role::Auditor)?;
        let filter = audit_filter(&parse_query(query));
        let summary = crate::console::stats::run(&self.audit, filter).await?;
        Ok(json_response(StatusCode::OK, &summary))
    }

    /// `POST /admin/adapters/{department}/try` (that department's admin or a
    /// platform admin): runs an adapter once; audited, the refusal too.
    async fn try_adapter<B: RequestBody>(
        &self,
        state: &State,
        call: &Call<'_>,
        body: B,
        department: &str,
    ) -> Result<Resp, GatewayError> {
        use crate::console::try_it;
        let dept = Some(department.to_string());
        if let Err(e) = call.principal.require_department_admin(department) {
            let r = Err(e.into());
            self.audit_change(&call.change(try_it::ACTION, dept, None, None), &r)
                .await?;
            return r;
        }
        let body = read_body(body, try_it::MAX_TRY_BYTES).await?;
        let t = try_it::TryRequest::parse(&body)?;
        let c = call.change(
            try_it::ACTION,
            dept,
            Some(t.dataset.clone()),
            Some(t.subject.clone()),
        );
        let r = try_it::run(state, call.principal, department, &t, call.request_id).await;
        self.audit_change(&c, &r).await?;
        Ok(try_it::answer(r, call.request_id))
    }

    /// `GET /admin/audit/verify`: the chain checked now (auditor); 409 when broken.
    async fn verify_audit(&self, principal: &Principal) -> Result<Resp, GatewayError> {
        principal.require_role(Role::Auditor)?;
        match self.audit.verify().await? {
            Ok(r) => Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"intact": true, "files": r.files, "records": r.records,
                    "checkpoints": r.checkpoints, "first_seq": r.first_seq, "last_seq": r.last_seq,
                    "last_hash": r.last_hash, "last_checkpoint_seq": r.last_checkpoint_seq}),
            )),
            Err(f) => Ok(json_response(
                StatusCode::CONFLICT,
                &serde_json::json!({"intact": false, "file": f.file, "line": f.line,
                    "seq": f.seq, "kind": format!("{:?}", f.kind).to_lowercase(),
                    "detail": f.detail, "summary": f.to_string(),
                    "findings": std::iter::once(&f).chain(f.also.iter()).map(|x| serde_json::json!({
                        "file": x.file, "line": x.line, "seq": x.seq,
                        "kind": format!("{:?}", x.kind).to_lowercase(), "detail": x.detail,
                    })).collect::<Vec<_>>()}),
            )),
        }
    }

    /// `POST /admin/reload` (platform admin), audited.
    async fn reload_route(&self, call: &Call<'_>) -> Result<Resp, GatewayError> {
        call.principal.require_role(Role::PlatformAdmin)?;
        let c = call.change("admin.reload", None, None, None);
        let r = match self.reload().await {
            Ok(()) => Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"reloaded": true}),
            )),
            Err(e) => Err(GatewayError::InvalidConfig(e)),
        };
        self.audit_change(&c, &r).await?;
        r
    }

    fn readyz(&self, state: &State) -> Resp {
        let audit_ok = self.audit.is_healthy();
        let keys = state.auth.key_freshness();
        let jwks_fresh = keys.iter().all(|(_, fresh, _)| *fresh);
        let jwks: serde_json::Map<_, _> = keys
            .into_iter()
            .map(|(issuer, fresh, age)| {
                (issuer, serde_json::json!({"fresh": fresh, "age_secs": age}))
            })
            .collect();
        let ready = audit_ok && jwks_fresh;
        // A cluster without Redis still serves (local limits): degraded, not
        // unready, or a Redis outage would take every node out of the balancer.
        let cluster = self.cluster.as_ref().map(|c| c.status());
        let degraded = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.link.health.degraded());
        let witness = self
            .audit
            .witness_status()
            .map(|(dir, ok)| serde_json::json!({"location": dir, "writable": ok}));
        let detail = serde_json::json!({
            "ready": ready,
            "status": if !ready { "unready" } else if degraded { "degraded" } else { "ok" },
            "cluster": cluster,
            "config_loaded": true,
            "audit_writable": audit_ok,
            "audit_witness": witness,
            "jwks_fresh": jwks_fresh,
            "jwks": jwks,
            "adapters": state.adapters.len(),
            "departments": departments_detail(state),
            // The transparency view's index: `ready`, `starting`, `rebuilding`
            // or `failed: ...` (that view answers 503 meanwhile; data reads
            // are not affected, so it does not make the gateway unready).
            "subject_index": self
                .subject_index
                .get()
                .map(|i| serde_json::json!({
                    "status": i.status().to_string(),
                    "covers_seq": i.position().last_seq,
                })),
        });
        json_response(
            if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            &detail,
        )
    }

    /// Validates completely, then writes atomically and swaps; a refused PUT
    /// changes nothing.
    async fn put_adapter(
        &self,
        department: &str,
        body: &[u8],
        json: bool,
        file: &std::path::Path,
    ) -> Result<Resp, GatewayError> {
        let _g = self.changes.lock().await;
        let state = self.state.load_full();
        let valid = self
            .validate_adapter(&state, department, body, json)
            .await?;
        let (kind, datasets) = self.install_adapter(&state, department, valid, file)?;
        Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"department": department, "kind": kind, "datasets": datasets}),
        ))
    }

    /// Cluster mode: validates here, stores the file in Redis as the
    /// department's next version, applies it here (unless a newer version
    /// already was) and waits for the other nodes to apply it.
    async fn put_adapter_cluster(
        &self,
        cluster: &Cluster,
        department: &str,
        body: &[u8],
        json: bool,
    ) -> Result<Resp, GatewayError> {
        let state = self.state.load_full();
        let valid = self
            .validate_adapter(&state, department, body, json)
            .await?;
        let (kind, datasets) = (valid.adapter.kind, valid.adapter.datasets.clone());
        let (version, id) = cluster
            .bus
            .publish_adapter(department, Some(&valid.text))
            .await
            .map_err(GatewayError::ClusterUnavailable)?;
        let applied = cluster
            .bus
            .apply_adapter(department, version, Some(&valid.text))
            .await
            .map_err(GatewayError::Internal)?;
        let acks = cluster.bus.wait_acks(&id).await;
        Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"department": department, "kind": kind, "datasets": datasets,
                "cluster": cluster_json(version, acks, applied)}),
        ))
    }

    /// Parses, compiles and checks an adapter file (address policy included).
    async fn validate_adapter(
        &self,
        state: &State,
        department: &str,
        body: &[u8],
        json: bool,
    ) -> Result<ValidAdapter, GatewayError> {
        // Messages name the file as the department knows it, never the
        // server's absolute path.
        let shown = std::path::PathBuf::from(format!("adapters/{department}.toml"));
        let spec = if json {
            AdapterSpec::from_json(&shown, body)
        } else {
            let text = std::str::from_utf8(body)
                .map_err(|_| RequestError::Malformed("adapter file must be UTF-8".into()))?;
            AdapterSpec::from_toml(&shown, text)
        }
        .map_err(GatewayError::InvalidAdapter)?;
        let adapter = compile_adapter(state, department, &shown, &spec)?;
        let allow = state
            .allow_lists
            .get(department)
            .cloned()
            .unwrap_or_default();
        let timeouts = state
            .protect
            .department(department)
            .map(|g| *g.timeouts())
            .unwrap_or_default();
        let client = department_upstream(
            &adapter,
            &allow,
            &timeouts,
            &state.settings.paths.root,
            &state.settings.server.data_dir,
        )
        .await
        .map_err(|e| {
            GatewayError::InvalidAdapter(
                crate::config::ConfigError::new(
                    &shown,
                    endpoint_field(&adapter),
                    e,
                    "use an address the department's allow-list permits",
                )
                .into(),
            )
        })?;
        let text = if json {
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| RequestError::Malformed(e.to_string()))?;
            toml::to_string(&v).map_err(|e| {
                RequestError::Malformed(format!("adapter cannot be stored as TOML: {e}"))
            })?
        } else {
            String::from_utf8_lossy(body).into_owned()
        };
        Ok(ValidAdapter {
            adapter,
            client,
            text,
        })
    }

    /// Writes the file atomically, swaps the adapter in and revokes the
    /// records fetched through the old one. Returns the kind and datasets.
    fn install_adapter(
        &self,
        state: &State,
        department: &str,
        valid: ValidAdapter,
        file: &std::path::Path,
    ) -> Result<(&'static str, Vec<String>), GatewayError> {
        write_unique(file, valid.text.as_bytes())
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let datasets = valid.adapter.datasets.clone();
        let kind = valid.adapter.kind;
        let mut next = state.clone();
        next.adapters = state.adapters.with(valid.adapter);
        next.upstreams.insert(department.to_string(), valid.client);
        self.state.store(Arc::new(next));
        // Records fetched through the old adapter (mapping, upstream) must not
        // outlive it.
        self.invalidate_department(state, department);
        tracing::info!(department, "adapter registered");
        Ok((kind, datasets))
    }

    /// Revokes every cached record of the department's datasets.
    fn invalidate_department(&self, state: &State, department: &str) {
        for d in state.datasets.iter().filter(|d| d.department == department) {
            self.cache.invalidate(&d.name, None);
        }
    }

    async fn delete_adapter(
        &self,
        department: &str,
        file: &std::path::Path,
    ) -> Result<Resp, GatewayError> {
        let _g = self.changes.lock().await;
        let state = self.state.load_full();
        if state.adapters.department(department).is_none() {
            return Err(RequestError::NotFound(format!(
                "no adapter registered for `{department}`"
            ))
            .into());
        }
        self.remove_adapter(&state, department, file).await?;
        Ok(no_content())
    }

    /// Cluster mode: the removal is stored in Redis as the department's next
    /// version and applied on every node.
    async fn delete_adapter_cluster(
        &self,
        cluster: &Cluster,
        department: &str,
    ) -> Result<Resp, GatewayError> {
        if self.state.load().adapters.department(department).is_none() {
            return Err(RequestError::NotFound(format!(
                "no adapter registered for `{department}`"
            ))
            .into());
        }
        let (version, id) = cluster
            .bus
            .publish_adapter(department, None)
            .await
            .map_err(GatewayError::ClusterUnavailable)?;
        cluster
            .bus
            .apply_adapter(department, version, None)
            .await
            .map_err(GatewayError::Internal)?;
        cluster.bus.wait_acks(&id).await;
        Ok(no_content())
    }

    /// Removes the file and the adapter (nothing to do when absent).
    async fn remove_adapter(
        &self,
        state: &State,
        department: &str,
        file: &std::path::Path,
    ) -> Result<(), GatewayError> {
        match tokio::fs::remove_file(file).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(GatewayError::Internal(e.to_string())),
        }
        if state.adapters.department(department).is_none() {
            return Ok(());
        }
        let mut next = state.clone();
        next.adapters = state.adapters.without(department);
        next.upstreams.remove(department);
        self.state.store(Arc::new(next));
        self.invalidate_department(state, department);
        tracing::info!(department, "adapter removed");
        Ok(())
    }

    async fn audit_change(
        &self,
        c: &Change<'_>,
        result: &Result<Resp, GatewayError>,
    ) -> Result<(), GatewayError> {
        let (decision, status, reason) = match result {
            Ok(r) => (Decision::Allow, r.status().as_u16(), None),
            Err(e) => (
                e.decision(),
                e.problem().status.as_u16(),
                Some(e.audit_reason()),
            ),
        };
        let mut ev = AuditEvent::new(Action::from_name(c.action), decision);
        ev.request_id = Some(c.request_id.to_string());
        ev.client = Some(c.principal.sub().to_string());
        // Names from the path are recorded only when they are configured ones.
        let state = self.state.load();
        ev.department = c
            .department
            .clone()
            .filter(|x| state.settings.departments.contains_key(x));
        ev.dataset = c
            .dataset
            .clone()
            .filter(|x| state.datasets.get(x).is_some());
        ev.subject_ref = c.subject.as_deref().map(|s| self.audit.subject_ref(s));
        ev.status = Some(status);
        ev.reason = reason;
        ev.latency_us = Some(c.started.elapsed().as_micros() as u64);
        self.audit.append(ev).await?;
        c.recorded.store(true, Ordering::Release);
        Ok(())
    }
}

/// `GET /admin/adapters`: every adapter for a platform admin, the caller's
/// own for a department admin.
fn list_adapters(state: &State, principal: &Principal) -> Result<Resp, GatewayError> {
    let own = if principal.has_role(Role::PlatformAdmin) {
        None
    } else if principal.has_role(Role::DepartmentAdmin) {
        Some(principal.department().unwrap_or_default().to_string())
    } else {
        return Err(AccessError::RoleRequired(Role::DepartmentAdmin.as_str()).into());
    };
    let list: Vec<_> = state
        .adapters
        .iter()
        .filter(|a| own.as_deref().is_none_or(|d| d == a.department))
        .map(|a| {
            serde_json::json!({
                "department": a.department, "kind": a.kind,
                "datasets": a.datasets,
                "path": format!("/admin/adapters/{}", a.department),
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "adapters": list }),
    ))
}

/// `GET /admin/departments`: breaker and bulkhead state per department.
fn departments(state: &State, principal: &Principal) -> Result<Resp, GatewayError> {
    if !(principal.has_role(Role::PlatformAdmin)
        || principal.has_role(Role::DepartmentAdmin)
        || principal.has_role(Role::Auditor))
    {
        return Err(AccessError::RoleRequired(Role::PlatformAdmin.as_str()).into());
    }
    Ok(json_response(StatusCode::OK, &departments_detail(state)))
}

fn departments_detail(state: &State) -> serde_json::Value {
    let mut out = BTreeMap::new();
    for name in state.settings.departments.keys() {
        let mut d = serde_json::Map::new();
        d.insert(
            "adapter".into(),
            state.adapters.department(name).is_some().into(),
        );
        if let Some(g) = state.protect.department(name) {
            d.insert("breaker".into(), g.breaker_summary().into());
            let per_traffic = g.breakers().map(|(t, b)| (t.as_str(), b.state().as_str()));
            d.insert(
                "breakers".into(),
                serde_json::json!(BTreeMap::from(per_traffic)),
            );
            d.insert("in_flight".into(), g.bulkhead().in_flight().into());
            d.insert("queued".into(), g.bulkhead().queue_depth().into());
        }
        out.insert(name.clone(), serde_json::Value::Object(d));
    }
    serde_json::to_value(out).unwrap_or_default()
}

fn no_content() -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Writes `data` to `path` through a temporary file of this process and
/// task (nodes sharing one project folder may write the same file at once),
/// then renames it into place.
fn write_unique(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, data)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

fn text(status: StatusCode, body: &str, ctype: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// The audit filters of a query string (shared by the query and the summary).
fn audit_filter(q: &BTreeMap<String, String>) -> Filter {
    Filter {
        client: q.get("client").cloned(),
        subject: q.get("subject").cloned(),
        dataset: q.get("dataset").cloned(),
        scenario: q.get("scenario").cloned(),
        department: q.get("department").cloned(),
        case_id: q.get("case").cloned(),
        decision: q.get("decision").cloned(),
        action: q.get("action").cloned(),
        since: q.get("since").cloned(),
        until: q.get("until").cloned(),
    }
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for kv in q.unwrap_or_default().split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        out.insert(dec(k), dec(v));
    }
    out
}
