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
        }
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
];

const PROXY_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// Route ids in the order of [`DATA_ROUTES`].
const IDS: [Id; 8] = [
    Id::Catalog,
    Id::Dataset,
    Id::ScenarioList,
    Id::Scenario,
    Id::Case,
    Id::CaseRefresh,
    Id::ProxyRoot,
    Id::Proxy,
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
    /// Builds the data-plane routes of DESIGN.md.
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
        if !methods.contains(&method.as_str()) {
            return Err(NoRoute::MethodNotAllowed);
        }
        Ok(match id {
            Id::Catalog => Route::Catalog,
            Id::Dataset => Route::Dataset {
                dataset: p("dataset"),
                subject: crate::path::decode_value(&p("subject")).ok_or(NoRoute::NotFound)?,
            },
            Id::ScenarioList => Route::ScenarioList,
            Id::Scenario if method == Method::GET => Route::Guide {
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table_builds_without_conflict() {
        let mut r = matchit::Router::new();
        for (p, _) in DATA_ROUTES {
            r.insert(*p, ()).unwrap();
        }
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
        assert_eq!(r.route(&Method::GET, "/v2/x"), Err(NoRoute::NotFound));
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
