//! In-memory harness: the real data and admin planes (`Handler::handle`) on
//! in-memory requests, with fake departments behind the `Department` trait.
//! No sockets: a test runs under `#[tokio::test(start_paused = true)]` and
//! time passes only when every task waits (tokio auto-advances the paused
//! clock to the next timer), so timeouts, breaker cool-downs, TTLs and
//! backoffs take milliseconds and come out the same every run.
//!
//! The audit log is real (files in a temporary directory) but does not
//! fsync: its blocking writes hold the paused clock still while they run
//! (tokio does not auto-advance during `spawn_blocking`), and skipping fsync
//! keeps them short.
//!
//! ```ignore
//! let w = Mem::builder().start().await;
//! let a = w.get("/v1/catalog").token(&w.token("portal-binhai", &[], None)).send().await;
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio_util::sync::CancellationToken;

use onewindow::admin::AdminPlane;
use onewindow::audit::{AuditLog, DenyAggregator, WriterHandle, WriterPlacement};
use onewindow::auth::DemoIssuer;
use onewindow::cache::SharedCache;
use onewindow::case::{Cases, MemoryCaseStore};
use onewindow::clock::WallClock;
use onewindow::demo::Sim;
use onewindow::error::UpstreamError;
use onewindow::loader::Overrides;
use onewindow::metrics::{Metrics, Runtime};
use onewindow::pipeline::DataPlane;
use onewindow::server::{ConnInfo, Handler};
use onewindow::state::{State, build_state};
use onewindow::upstream::{Department, Reply, SendFuture};

use super::{Answer, lay_out_project};

/// The departments of the demo world.
pub const DEPARTMENTS: [&str; 5] = [
    "market-supervision",
    "health-commission",
    "fire-rescue",
    "public-security",
    "ecology-environment",
];

/// A request as a fake department received it.
#[derive(Debug, Clone)]
pub struct Got {
    pub method: Method,
    /// Relative to the department's base path.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or_default()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a fake department does with one request.
pub type Behaviour = dyn Fn(&Got) -> Result<(u16, String), UpstreamError> + Send + Sync;

/// A fake department: counts calls, records requests, waits `delay` on the
/// (paused) tokio clock, then answers with its behaviour — by default the
/// simulated department's own answer.
pub struct FakeDept {
    name: String,
    calls: AtomicUsize,
    got: Mutex<Vec<Got>>,
    delay: Mutex<Duration>,
    behaviour: Mutex<Arc<Behaviour>>,
    /// The behaviour it was made with, for [`FakeDept::heal`].
    normal: Arc<Behaviour>,
}

impl std::fmt::Debug for FakeDept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FakeDept({})", self.name)
    }
}

impl FakeDept {
    /// The simulated department `name` (same answers as `onewindow::demo`).
    pub fn sim(name: &str) -> Arc<Self> {
        let sim = Sim::for_department(name).unwrap_or_else(|| panic!("no sim `{name}`"));
        Self::new(name, move |g| {
            let (path, query) = match g.path_and_query.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (g.path_and_query.as_str(), None),
            };
            let (status, _, body) = sim.answer(&g.method, path, query, &g.body);
            Ok((status.as_u16(), body))
        })
    }

    /// A department answering `behaviour(request)`: `Ok((status, JSON body))`
    /// or a transport failure.
    pub fn new(
        name: &str,
        behaviour: impl Fn(&Got) -> Result<(u16, String), UpstreamError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        let normal: Arc<Behaviour> = Arc::new(behaviour);
        Arc::new(Self {
            name: name.to_string(),
            calls: AtomicUsize::new(0),
            got: Mutex::new(Vec::new()),
            delay: Mutex::new(Duration::ZERO),
            behaviour: Mutex::new(normal.clone()),
            normal,
        })
    }

    /// Every request fails as a broken connection (a reset).
    pub fn break_connections(&self) {
        self.set(|_| Err(UpstreamError::Broken("connection reset by peer".into())));
    }

    /// Back to the behaviour it was made with, without delay.
    pub fn heal(&self) {
        *self.behaviour.lock().unwrap() = self.normal.clone();
        self.set_delay(Duration::ZERO);
    }

    /// Replaces the behaviour.
    pub fn set(
        &self,
        behaviour: impl Fn(&Got) -> Result<(u16, String), UpstreamError> + Send + Sync + 'static,
    ) {
        *self.behaviour.lock().unwrap() = Arc::new(behaviour);
    }

    /// Waits this long (paused clock) before answering each request.
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    /// Accepts and never answers (the attempt timeout ends it).
    pub fn hang(&self) {
        self.set_delay(Duration::from_secs(24 * 3600));
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Option<Got> {
        self.got.lock().unwrap().last().cloned()
    }

    async fn answer(&self, got: Got, max_reply: usize) -> Result<Reply, UpstreamError> {
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let behaviour = self.behaviour.lock().unwrap().clone();
        let (status, body) = behaviour(&got)?;
        if body.len() > max_reply {
            return Err(UpstreamError::ReplyTooLarge { limit: max_reply });
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(if body.starts_with('<') {
                "text/xml; charset=utf-8"
            } else {
                "application/json"
            }),
        );
        Ok(Reply {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body),
        })
    }
}

impl Department for FakeDept {
    fn send<'a>(
        &'a self,
        req: Request<Full<Bytes>>,
        path_and_query: &'a str,
        timeout: Duration,
        max_reply: usize,
    ) -> SendFuture<'a> {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let got = Got {
                method: parts.method,
                path_and_query: path_and_query.to_string(),
                headers: parts.headers,
                body,
            };
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.got.lock().unwrap().push(got.clone());
            match tokio::time::timeout(timeout, self.answer(got, max_reply)).await {
                Ok(r) => r,
                Err(_) => Err(UpstreamError::Timeout(timeout)),
            }
        })
    }
}

/// Yields until `cond` holds (a concurrent request got that far). The paused
/// clock does not move while this task stays runnable; the bound is on real
/// time, only to fail instead of hanging.
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::task::yield_now().await;
    }
}

/// An edit of a project file before the gateway loads it.
type Edit = Box<dyn FnOnce(String) -> String>;

/// How to build a [`Mem`] world.
#[derive(Default)]
pub struct MemBuilder {
    depts: BTreeMap<String, Arc<FakeDept>>,
    replace: Vec<(String, String)>,
    clients_extra: String,
    edits: Vec<(String, Edit)>,
}

impl MemBuilder {
    /// Uses `fake` for `department` (the others are simulated).
    pub fn dept(mut self, department: &str, fake: Arc<FakeDept>) -> Self {
        self.depts.insert(department.to_string(), fake);
        self
    }
    /// Replaces text of gateway.toml (it must be there).
    pub fn gateway_replace(mut self, from: &str, to: &str) -> Self {
        self.replace.push((from.to_string(), to.to_string()));
        self
    }
    /// Appends to clients.toml.
    pub fn clients_extra(mut self, toml: &str) -> Self {
        self.clients_extra.push_str(toml);
        self
    }
    /// Rewrites a project file (`config/datasets.toml`, ...) before loading.
    pub fn edit(mut self, file: &str, f: impl FnOnce(String) -> String + 'static) -> Self {
        self.edits.push((file.to_string(), Box::new(f)));
        self
    }

    /// Lays out a project in a temporary directory and assembles both planes.
    pub async fn start(self) -> Mem {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        layout(root, &self.replace, &self.clients_extra);
        for (file, f) in self.edits {
            let path = root.join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, f(text)).unwrap();
        }
        let config = root.join("config/gateway.toml");
        let certs = root.join("certs");
        // The demo issuer's key; its JWKS is what [auth] trusts.
        DemoIssuer::load_or_generate(&certs).unwrap();
        let overrides = Overrides::default();
        let loaded = onewindow::loader::load(&config, &overrides)
            .unwrap_or_else(|e| panic!("config did not load: {e}"));
        let shutdown = CancellationToken::new();
        // Under a paused clock the writer runs on this runtime (see
        // `WriterPlacement::Runtime`): time stands still while it writes.
        let mut audit_settings = loaded.audit.clone();
        audit_settings.writer = WriterPlacement::Runtime;
        let (audit, writer) = AuditLog::open(
            audit_settings,
            &loaded.settings.server.data_dir,
            &loaded.settings.server.certs_dir,
        )
        .await
        .unwrap();
        let sharing = Arc::new(
            onewindow::sharing::Accountable::start(
                &loaded.settings.server.certs_dir,
                &loaded.settings.server.data_dir,
                &audit,
                WallClock::new(),
                shutdown.clone(),
            )
            .unwrap(),
        );
        let cache = Arc::new(SharedCache::new(&loaded.cache));
        let aggregator = DenyAggregator::from_settings(&loaded.audit);
        let mut state: State = build_state(loaded, &shutdown)
            .await
            .unwrap_or_else(|e| panic!("state did not build: {e}"));
        let mut depts = self.depts;
        for name in DEPARTMENTS {
            let fake = depts
                .entry(name.to_string())
                .or_insert_with(|| FakeDept::sim(name))
                .clone();
            state.upstreams.insert(name.to_string(), fake);
        }
        let state = Arc::new(ArcSwap::from_pointee(state));
        // Cases in memory, dated by a clock that follows the paused tokio clock.
        let cases = Arc::new(Cases::new(
            Arc::new(MemoryCaseStore::default()),
            WallClock::new(),
        ));
        let metrics = Arc::new(Metrics::new(Some(Runtime {
            state: state.clone(),
            audit: audit.clone(),
            cache: cache.clone(),
            cluster: None,
            cases: Some(cases.clone()),
            connections: None,
        })));
        let data = Arc::new(DataPlane::new(
            state.clone(),
            audit.clone(),
            cache.clone(),
            metrics.clone(),
            aggregator,
            sharing,
            cases,
        ));
        let admin = Arc::new(
            AdminPlane::new(
                state,
                audit,
                cache,
                metrics,
                config,
                overrides,
                shutdown.clone(),
            )
            .with_aggregator(data.aggregator()),
        );
        Mem {
            dir,
            data,
            admin,
            depts,
            writer: Some(writer),
            shutdown,
        }
    }
}

/// The project files, as the shipped config with fsync off and adapters
/// pointing at a loopback address nobody calls (the fakes stand in).
fn layout(root: &Path, replace: &[(String, String)], clients_extra: &str) {
    let bases = DEPARTMENTS
        .iter()
        .map(|d| (*d, "http://127.0.0.1:9".to_string()))
        .collect();
    lay_out_project(
        root,
        clients_extra,
        &bases,
        |gw| gw.replace("fsync = \"always\"", "fsync = \"never\""),
        replace,
    );
}

/// Both planes of one gateway, driven in memory.
pub struct Mem {
    pub dir: tempfile::TempDir,
    pub data: Arc<DataPlane>,
    pub admin: Arc<AdminPlane>,
    /// The fake departments, by name.
    pub depts: BTreeMap<String, Arc<FakeDept>>,
    writer: Option<WriterHandle>,
    shutdown: CancellationToken,
}

impl Drop for Mem {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Mem {
    pub fn builder() -> MemBuilder {
        MemBuilder::default()
    }

    /// The demo world: every department simulated.
    pub async fn demo() -> Mem {
        MemBuilder::default().start().await
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.root().join("config/gateway.toml")
    }

    /// The fake standing in for `department`.
    pub fn dept(&self, department: &str) -> &FakeDept {
        &self.depts[department]
    }

    /// A token from this world's demo issuer.
    pub fn token(&self, sub: &str, roles: &[&str], department: Option<&str>) -> String {
        let (issuer, _) = DemoIssuer::load_or_generate(&self.root().join("certs")).unwrap();
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        issuer
            .mint(sub, &roles, department, Duration::from_secs(600))
            .unwrap()
    }

    pub fn get(&self, path: &str) -> Call<'_> {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Call<'_> {
        self.request(Method::POST, path)
    }

    pub fn request(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            mem: self,
            method,
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
            peer: "127.0.0.1:40000".parse().unwrap(),
        }
    }

    /// GET with a token and `X-Purpose: service-handling`.
    pub async fn read(&self, path: &str, token: &str) -> Answer {
        self.get(path)
            .token(token)
            .purpose("service-handling")
            .send()
            .await
    }

    /// Closes the audit log (final checkpoint).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(w) = self.writer.take() {
            w.shutdown().await.unwrap();
        }
    }
}

/// One request being built: `w.get(path).token(t).purpose(p).send().await`.
pub struct Call<'a> {
    mem: &'a Mem,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    peer: SocketAddr,
}

impl Call<'_> {
    pub fn token(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    pub fn purpose(self, purpose: &str) -> Self {
        self.header("x-purpose", purpose)
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
    /// A JSON body with its content type.
    pub fn json(self, v: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }
    /// The caller's address (default 127.0.0.1).
    pub fn from(mut self, ip: &str) -> Self {
        self.peer = SocketAddr::new(ip.parse().unwrap(), 40000);
        self
    }

    /// Hands the request to the admin plane (paths under `/admin`, the probes,
    /// `/metrics`) or the data plane, and reads the answer.
    pub async fn send(self) -> Answer {
        let admin = ["/admin", "/healthz", "/readyz", "/metrics"]
            .iter()
            .any(|p| self.path.starts_with(p));
        let mut b = Request::builder()
            .method(self.method)
            .uri(self.path.as_str());
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b.body(Full::new(self.body)).unwrap();
        let conn = Arc::new(ConnInfo {
            peer: self.peer,
            tls: false,
            client_cert_sha256: None,
        });
        let resp = if admin {
            self.mem.admin.clone().handle(req, conn).await
        } else {
            self.mem.data.clone().handle(req, conn).await
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}
