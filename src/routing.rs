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
    /// `POST /v1/scenarios/{scenario}`.
    Scenario {
        /// Scenario name.
        scenario: String,
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
            Route::Scenario { .. } => "scenario",
            Route::Proxy { .. } => "proxy",
            Route::Jwks => "jwks",
            Route::SubjectAccesses { .. } => "subject-accesses",
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
    Scenario,
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
    ("/v1/scenarios/{scenario}", &["POST"]),
    ("/v1/proxy/{department}", PROXY_METHODS),
    ("/v1/proxy/{department}/{*rest}", PROXY_METHODS),
    ("/.well-known/jwks.json", &["GET"]),
    ("/v1/subjects/{kind}/{subject}/accesses", &["GET"]),
];

const PROXY_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// Route ids in the order of [`DATA_ROUTES`].
const IDS: [Id; 7] = [
    Id::Catalog,
    Id::Dataset,
    Id::Scenario,
    Id::ProxyRoot,
    Id::Proxy,
    Id::Jwks,
    Id::SubjectAccesses,
];

/// The data-plane router, built once.
#[derive(Debug)]
pub struct Router {
    inner: matchit::Router<Id>,
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
        for ((p, _), id) in DATA_ROUTES.iter().zip(IDS) {
            if let Err(e) = inner.insert(*p, id) {
                tracing::error!(route = p, error = %e, "route table conflict");
            }
        }
        Self { inner }
    }

    /// Matches a normalised path.
    pub fn route(&self, method: &Method, path: &str) -> Result<Route, NoRoute> {
        let m = self.inner.at(path).map_err(|_| NoRoute::NotFound)?;
        let p = |k: &str| m.params.get(k).unwrap_or_default().to_string();
        let route = match m.value {
            Id::Catalog => Route::Catalog,
            Id::Dataset => Route::Dataset {
                dataset: p("dataset"),
                subject: crate::path::decode_value(&p("subject")).ok_or(NoRoute::NotFound)?,
            },
            Id::Scenario => Route::Scenario {
                scenario: p("scenario"),
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
        };
        let allowed = match route {
            Route::Catalog
            | Route::Dataset { .. }
            | Route::Jwks
            | Route::SubjectAccesses { .. } => method == Method::GET,
            Route::Scenario { .. } => method == Method::POST,
            Route::Proxy { .. } => PROXY_METHODS.contains(&method.as_str()),
        };
        if allowed {
            Ok(route)
        } else {
            Err(NoRoute::MethodNotAllowed)
        }
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
        assert_eq!(
            r.route(&Method::POST, "/v1/catalog"),
            Err(NoRoute::MethodNotAllowed)
        );
        assert_eq!(
            r.route(&Method::GET, "/v1/scenarios/newborn"),
            Err(NoRoute::MethodNotAllowed)
        );
    }
}
