//! Routes of both planes, matched with matchit on the normalised path.

use http::Method;

/// A data-plane route, with its parameters (still percent-encoded as in the
/// normalised path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v1/catalog`.
    Catalog,
    /// `GET /v1/datasets/{dataset}/{subject}`.
    Dataset {
        /// Dataset name.
        dataset: String,
        /// Subject id (decoded).
        subject: String,
    },
    /// `GET /v1/scenarios`: the scenarios this client may run.
    ScenarioList,
    /// `GET /v1/scenarios/{scenario}`: the scenario's guide.
    Guide {
        /// Scenario name.
        scenario: String,
    },
    /// `POST /v1/scenarios/{scenario}`.
    Scenario {
        /// Scenario name.
        scenario: String,
    },
    /// `GET /v1/cases/{case_id}`.
    Case {
        /// Case id, still percent-encoded (checked by the pipeline: 400).
        case_id: String,
    },
    /// `POST /v1/cases/{case_id}/refresh`.
    CaseRefresh {
        /// Case id, still percent-encoded.
        case_id: String,
    },
    /// `GET /.well-known/jwks.json`: the record-signing public keys (no auth).
    Jwks,
    /// `GET /v1/subjects/{kind}/{subject}/accesses`: data-subject transparency.
    SubjectAccesses {
        /// Subject kind (`uscc`, `guardian_id`...).
        kind: String,
        /// Subject id (decoded).
        subject: String,
    },
    /// `ANY /v1/proxy/{department}/{path...}`.
    Proxy {
        /// Department name.
        department: String,
        /// The rest of the path, starting with `/`.
        path: String,
    },
}

impl Route {
    /// Low-cardinality name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Catalog => "catalog",
            Route::Dataset { .. } => "dataset",
            Route::ScenarioList => "scenario-list",
            Route::Guide { .. } => "guide",
            Route::Scenario { .. } => "scenario",
            Route::Case { .. } => "case",
            Route::CaseRefresh { .. } => "case-refresh",
            Route::Proxy { .. } => "proxy",
            Route::Jwks => "jwks",
            Route::SubjectAccesses { .. } => "subject-accesses",
        }
    }
}

/// True when a route declared with `methods` answers `method`: HEAD is
/// served wherever GET is (same status and headers, no body; see
/// [`head_reply`]).
pub fn serves(methods: &[&str], method: &Method) -> bool {
    methods.contains(&method.as_str()) || (method == Method::HEAD && methods.contains(&"GET"))
}

/// Turns the answer to a request into the answer to its HEAD: the body is
/// dropped and its length kept in `Content-Length` (unless the answer already
/// says one, as a department's answer to a forwarded HEAD does).
pub fn head_reply(resp: &mut http::Response<http_body_util::Full<bytes::Bytes>>) {
    use http_body_util::Full;
    use hyper::body::Body;
    let len = resp.body().size_hint().exact().unwrap_or(0);
    if len == 0 {
        return;
    }
    let h = resp.headers_mut();
    if !h.contains_key(http::header::CONTENT_LENGTH) {
        h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
    *resp.body_mut() = Full::new(bytes::Bytes::new());
}

/// What every answer of both planes carries, set last: `X-Request-Id`, the
/// plane's `Cache-Control` (`private, no-store` on the data plane,
/// `no-store` on the admin plane), and for a HEAD request the headers alone
/// ([`head_reply`]).
pub fn finish_reply(
    resp: &mut http::Response<http_body_util::Full<bytes::Bytes>>,
    request_id: &str,
    cache_control: &'static str,
    head: bool,
) {
    let h = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static(cache_control),
    );
    if head {
        head_reply(resp);
    }
}

/// Why no route matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
}

#[derive(Debug, Clone, Copy)]
enum Id {
    Catalog,
    Dataset,
    ScenarioList,
    Scenario,
    Case,
    CaseRefresh,
    ProxyRoot,
    Proxy,
    Jwks,
    SubjectAccesses,
}

/// Data-plane routes (matchit syntax) and their methods; the router and the
/// OpenAPI document are both built from this table.
pub const DATA_ROUTES: &[(&str, &[&str])] = &[
    ("/v1/catalog", &["GET"]),
    ("/v1/datasets/{dataset}/{subject}", &["GET"]),
    ("/v1/scenarios", &["GET"]),
    ("/v1/scenarios/{scenario}", &["GET", "POST"]),
    ("/v1/cases/{case_id}", &["GET"]),
    ("/v1/cases/{case_id}/refresh", &["POST"]),
    ("/v1/proxy/{department}", PROXY_METHODS),
    ("/v1/proxy/{department}/{*rest}", PROXY_METHODS),
    ("/.well-known/jwks.json", &["GET"]),
    ("/v1/subjects/{kind}/{subject}/accesses", &["GET"]),
];

const PROXY_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// Route ids in the order of [`DATA_ROUTES`].
const IDS: [Id; 10] = [
    Id::Catalog,
    Id::Dataset,
    Id::ScenarioList,
    Id::Scenario,
    Id::Case,
    Id::CaseRefresh,
    Id::ProxyRoot,
    Id::Proxy,
    Id::Jwks,
    Id::SubjectAccesses,
];

/// The data-plane router, built once.
#[derive(Debug)]
pub struct Router {
    /// Index into [`DATA_ROUTES`] and `IDS`.
    inner: matchit::Router<usize>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// Builds the data-plane routes of [`DATA_ROUTES`].
    pub fn new() -> Self {
        let mut inner = matchit::Router::new();
        // The route table is static; insertion cannot conflict (a test checks).
        for (i, (p, _)) in DATA_ROUTES.iter().enumerate() {
            if let Err(e) = inner.insert(*p, i) {
                tracing::error!(route = p, error = %e, "route table conflict");
            }
        }
        Self { inner }
    }

    /// Matches a normalised path.
    pub fn route(&self, method: &Method, path: &str) -> Result<Route, NoRoute> {
        let m = self.inner.at(path).map_err(|_| NoRoute::NotFound)?;
        let p = |k: &str| m.params.get(k).unwrap_or_default().to_string();
        let i = *m.value;
        let (Some(id), Some((_, methods))) = (IDS.get(i).copied(), DATA_ROUTES.get(i)) else {
            return Err(NoRoute::NotFound);
        };
        if !serves(methods, method) {
            return Err(NoRoute::MethodNotAllowed);
        }
        Ok(match id {
            Id::Catalog => Route::Catalog,
            Id::Dataset => Route::Dataset {
                dataset: p("dataset"),
                subject: crate::path::decode_value(&p("subject")).ok_or(NoRoute::NotFound)?,
            },
            Id::ScenarioList => Route::ScenarioList,
            Id::Scenario if method == Method::GET || method == Method::HEAD => Route::Guide {
                scenario: p("scenario"),
            },
            Id::Scenario => Route::Scenario {
                scenario: p("scenario"),
            },
            Id::Case => Route::Case {
                case_id: p("case_id"),
            },
            Id::CaseRefresh => Route::CaseRefresh {
                case_id: p("case_id"),
            },
            Id::ProxyRoot => Route::Proxy {
                department: p("department"),
                path: "/".into(),
            },
            Id::Proxy => Route::Proxy {
                department: p("department"),
                path: format!("/{}", p("rest")),
            },
            Id::Jwks => Route::Jwks,
            Id::SubjectAccesses => Route::SubjectAccesses {
                kind: p("kind"),
                subject: crate::path::decode_value(&p("subject")).ok_or(NoRoute::NotFound)?,
            },
        })
    }
}

/// An admin-plane route (the admin listener serves only these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoute {
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /admin/openapi.json`.
    OpenApi,
    /// `GET /admin/adapters`.
    Adapters,
    /// `GET|PUT|DELETE /admin/adapters/{department}`.
    Adapter,
    /// `POST /admin/cache/invalidate`.
    CacheInvalidate,
    /// `GET /admin/audit`.
    Audit,
    /// `GET /admin/audit/verify`.
    AuditVerify,
    /// `POST /admin/reload`.
    Reload,
    /// `GET /admin/departments`.
    Departments,
    /// `GET /console`, `/console/`, `/console/{file}`: the web console.
    Console,
    /// `GET /admin/audit/stats`: the console chart's numbers (auditor).
    AuditStats,
    /// `POST /admin/adapters/{department}/try`: run an adapter once.
    AdapterTry,
}

/// Admin routes (matchit syntax); the admin router and the OpenAPI document
/// are both built from this table.
pub const ADMIN_ROUTES: &[(&str, AdminRoute)] = &[
    ("/healthz", AdminRoute::Healthz),
    ("/readyz", AdminRoute::Readyz),
    ("/metrics", AdminRoute::Metrics),
    ("/admin/openapi.json", AdminRoute::OpenApi),
    ("/admin/adapters", AdminRoute::Adapters),
    ("/admin/adapters/{department}", AdminRoute::Adapter),
    ("/admin/cache/invalidate", AdminRoute::CacheInvalidate),
    ("/admin/audit", AdminRoute::Audit),
    ("/admin/audit/verify", AdminRoute::AuditVerify),
    ("/admin/reload", AdminRoute::Reload),
    ("/admin/departments", AdminRoute::Departments),
    ("/console", AdminRoute::Console),
    ("/console/", AdminRoute::Console),
    ("/console/{*rest}", AdminRoute::Console),
    ("/admin/audit/stats", AdminRoute::AuditStats),
    ("/admin/adapters/{department}/try", AdminRoute::AdapterTry),
];

impl AdminRoute {
    /// The methods the route answers.
    pub fn methods(self) -> &'static [&'static str] {
        match self {
            AdminRoute::Healthz
            | AdminRoute::Readyz
            | AdminRoute::Metrics
            | AdminRoute::OpenApi
            | AdminRoute::Adapters
            | AdminRoute::Audit
            | AdminRoute::AuditVerify
            | AdminRoute::Departments
            | AdminRoute::Console
            | AdminRoute::AuditStats => &["GET"],
            AdminRoute::Adapter => &["GET", "PUT", "DELETE"],
            AdminRoute::CacheInvalidate | AdminRoute::Reload | AdminRoute::AdapterTry => &["POST"],
        }
    }

    /// True for the routes anyone may call (no token): probes, metrics,
    /// the OpenAPI document and the console's files (which hold no data).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            AdminRoute::Healthz
                | AdminRoute::Readyz
                | AdminRoute::Metrics
                | AdminRoute::OpenApi
                | AdminRoute::Console
        )
    }
}

/// One line of the API document per (method, path) of both route tables:
/// (method, path as in the table, tag, summary). Adding a route means adding
/// its line here; a unit test of `openapi` fails for a route without one.
pub const ROUTE_DOCS: &[(&str, &str, &str, &str)] = &[
    (
        "GET",
        "/admin/audit/stats",
        "audit",
        "Audit summary for the console: decisions per time bucket, top clients and datasets (auditor; same filters as /admin/audit)",
    ),
    (
        "POST",
        "/admin/adapters/{department}/try",
        "admin",
        "Run a draft (or the registered) adapter once on one subject; nothing swapped or cached; audited",
    ),
    (
        "GET",
        "/console",
        "console",
        "The web console (HTML, scripts and styles built into the binary)",
    ),
    (
        "GET",
        "/console/",
        "console",
        "The web console (HTML, scripts and styles built into the binary)",
    ),
    (
        "GET",
        "/console/{*rest}",
        "console",
        "The web console's assets (built into the binary)",
    ),
    (
        "GET",
        "/v1/catalog",
        "data",
        "Datasets, scenarios and proxy routes this client may use",
    ),
    (
        "GET",
        "/v1/datasets/{dataset}/{subject}",
        "data",
        "One shared record in canonical form",
    ),
    (
        "GET",
        "/v1/scenarios",
        "data",
        "The scenarios this client may run: [{scenario, title, summary}] (Accept-Language: zh or en)",
    ),
    (
        "GET",
        "/v1/scenarios/{scenario}",
        "data",
        "The scenario's guide: parts, departments, what to bring, time limit, legal basis (Accept-Language: zh or en)",
    ),
    (
        "GET",
        "/v1/cases/{case_id}",
        "data",
        "A case of this client: accepted_at, supply_by, overdue, part statuses, outstanding parts",
    ),
    (
        "POST",
        "/v1/cases/{case_id}/refresh",
        "data",
        "Fetch the case's outstanding parts again; the case completes when none is left",
    ),
    (
        "POST",
        "/v1/scenarios/{scenario}",
        "data",
        "Run a one-thing scenario: fan out to departments and merge",
    ),
    (
        "*",
        "/v1/proxy/{department}",
        "proxy",
        "Pass-through to the department's own API; the answer is the department's own",
    ),
    (
        "*",
        "/v1/proxy/{department}/{*rest}",
        "proxy",
        "Pass-through to the department's own API; the answer is the department's own",
    ),
    (
        "GET",
        "/.well-known/jwks.json",
        "data",
        "The gateway's record-signing public keys (JWK Set, OKP/Ed25519); no token needed",
    ),
    (
        "GET",
        "/v1/subjects/{kind}/{subject}/accesses",
        "data",
        "Data-subject transparency: who read this subject's data, when and why (subject_access clients; since, until, limit, cursor)",
    ),
    ("GET", "/healthz", "operate", "Liveness"),
    (
        "GET",
        "/readyz",
        "operate",
        "Readiness: configuration, audit log, issuer keys, department breakers",
    ),
    (
        "GET",
        "/metrics",
        "operate",
        "Prometheus / OpenMetrics text",
    ),
    (
        "GET",
        "/admin/openapi.json",
        "operate",
        "This document (built from the loaded configuration)",
    ),
    (
        "GET",
        "/admin/adapters",
        "admin",
        "Registered adapters (platform-admin: all; department-admin: own)",
    ),
    (
        "GET",
        "/admin/adapters/{department}",
        "admin",
        "The department's adapter file (TOML)",
    ),
    (
        "PUT",
        "/admin/adapters/{department}",
        "admin",
        "Register or replace the department's adapter (TOML or JSON body); validated before it is taken",
    ),
    (
        "DELETE",
        "/admin/adapters/{department}",
        "admin",
        "Remove the department's adapter",
    ),
    (
        "POST",
        "/admin/cache/invalidate",
        "admin",
        "Revoke cached records of a dataset (one subject or all)",
    ),
    (
        "GET",
        "/admin/audit",
        "audit",
        "Query the audit log (auditor)",
    ),
    (
        "GET",
        "/admin/audit/verify",
        "audit",
        "Verify the audit chain now (auditor); 409 when broken",
    ),
    (
        "POST",
        "/admin/reload",
        "admin",
        "Reload configuration from disk (platform-admin)",
    ),
    (
        "GET",
        "/admin/departments",
        "admin",
        "Department breaker and bulkhead state",
    ),
];

/// Paths and methods of the admin plane.
pub fn admin_routes() -> Vec<(&'static str, &'static [&'static str])> {
    ADMIN_ROUTES
        .iter()
        .map(|(p, r)| (*p, r.methods()))
        .collect()
}

/// The admin-plane router, built once.
#[derive(Debug)]
pub struct AdminRouter {
    inner: matchit::Router<AdminRoute>,
}

impl Default for AdminRouter {
    fn default() -> Self {
        Self::new()
    }
}

impl AdminRouter {
    /// Builds the admin routes of [`ADMIN_ROUTES`].
    pub fn new() -> Self {
        let mut inner = matchit::Router::new();
        for (p, r) in ADMIN_ROUTES {
            if let Err(e) = inner.insert(*p, *r) {
                tracing::error!(route = p, error = %e, "admin route conflict");
            }
        }
        Self { inner }
    }

    /// Matches a normalised path: the route and its `{department}`, if any.
    pub fn route(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<(AdminRoute, Option<String>), NoRoute> {
        let m = self.inner.at(path).map_err(|_| NoRoute::NotFound)?;
        let route = *m.value;
        if !serves(route.methods(), method) {
            return Err(NoRoute::MethodNotAllowed);
        }
        Ok((route, m.params.get("department").map(str::to_string)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_tables_build_without_conflict() {
        let mut r = matchit::Router::new();
        for (p, _) in DATA_ROUTES {
            r.insert(*p, ()).unwrap();
        }
        let mut r = matchit::Router::new();
        for (p, _) in ADMIN_ROUTES {
            r.insert(*p, ()).unwrap();
        }
    }

    #[test]
    fn admin_routes_match() {
        let r = AdminRouter::new();
        assert_eq!(
            r.route(&Method::PUT, "/admin/adapters/fire-rescue"),
            Ok((AdminRoute::Adapter, Some("fire-rescue".into())))
        );
        assert_eq!(
            r.route(&Method::GET, "/healthz"),
            Ok((AdminRoute::Healthz, None))
        );
        assert_eq!(
            r.route(&Method::GET, "/admin/reload"),
            Err(NoRoute::MethodNotAllowed)
        );
        assert_eq!(r.route(&Method::GET, "/admin/x"), Err(NoRoute::NotFound));
        assert_eq!(
            r.route(&Method::HEAD, "/metrics"),
            Ok((AdminRoute::Metrics, None))
        );
        assert_eq!(
            r.route(&Method::HEAD, "/admin/reload"),
            Err(NoRoute::MethodNotAllowed)
        );
    }

    #[test]
    fn routes_match() {
        let r = Router::new();
        assert_eq!(r.route(&Method::GET, "/v1/catalog"), Ok(Route::Catalog));
        assert_eq!(
            r.route(&Method::GET, "/v1/datasets/business-licence/9112"),
            Ok(Route::Dataset {
                dataset: "business-licence".into(),
                subject: "9112".into()
            })
        );
        assert_eq!(
            r.route(&Method::POST, "/v1/proxy/market-supervision/licences/1"),
            Ok(Route::Proxy {
                department: "market-supervision".into(),
                path: "/licences/1".into()
            })
        );
        assert_eq!(
            r.route(&Method::GET, "/v1/proxy/market-supervision"),
            Ok(Route::Proxy {
                department: "market-supervision".into(),
                path: "/".into()
            })
        );
        assert_eq!(
            r.route(&Method::GET, "/.well-known/jwks.json"),
            Ok(Route::Jwks)
        );
        assert_eq!(
            r.route(&Method::GET, "/v1/subjects/uscc/9112/accesses"),
            Ok(Route::SubjectAccesses {
                kind: "uscc".into(),
                subject: "9112".into()
            })
        );
        assert_eq!(r.route(&Method::GET, "/v2/x"), Err(NoRoute::NotFound));
        assert_eq!(r.route(&Method::HEAD, "/v1/catalog"), Ok(Route::Catalog));
        assert_eq!(
            r.route(&Method::HEAD, "/v1/scenarios/newborn"),
            Ok(Route::Guide {
                scenario: "newborn".into()
            })
        );
        assert_eq!(
            r.route(&Method::HEAD, "/v1/cases/C-1/refresh"),
            Err(NoRoute::MethodNotAllowed)
        );
        assert_eq!(
            r.route(&Method::POST, "/v1/catalog"),
            Err(NoRoute::MethodNotAllowed)
        );
        assert_eq!(
            r.route(&Method::GET, "/v1/scenarios/newborn"),
            Ok(Route::Guide {
                scenario: "newborn".into()
            })
        );
        assert_eq!(
            r.route(&Method::POST, "/v1/scenarios/newborn"),
            Ok(Route::Scenario {
                scenario: "newborn".into()
            })
        );
        assert_eq!(
            r.route(&Method::GET, "/v1/scenarios"),
            Ok(Route::ScenarioList)
        );
        assert_eq!(
            r.route(&Method::GET, "/v1/cases/BH%2D1"),
            Ok(Route::Case {
                case_id: "BH%2D1".into()
            })
        );
        assert_eq!(
            r.route(&Method::POST, "/v1/cases/BH-1/refresh"),
            Ok(Route::CaseRefresh {
                case_id: "BH-1".into()
            })
        );
        assert_eq!(
            r.route(&Method::GET, "/v1/cases/BH-1/refresh"),
            Err(NoRoute::MethodNotAllowed)
        );
        assert_eq!(
            r.route(&Method::DELETE, "/v1/cases/BH-1"),
            Err(NoRoute::MethodNotAllowed)
        );
    }
}
