//! The OpenAPI 3 document of both planes, generated from the route tables the
//! routers are built from, so it cannot drift from the real routes.

use serde_json::{Value, json};

/// Descriptions of each (path, method); every route of both route tables must
/// have one (a unit test checks).
fn describe(path: &str, method: &str) -> Option<(&'static str, &'static str)> {
    Some(match (path, method) {
        ("/v1/catalog", "GET") => (
            "data",
            "Datasets, scenarios and proxy routes this client may use",
        ),
        ("/v1/datasets/{dataset}/{subject}", "GET") => (
            "data",
            "One shared record in canonical form (needs X-Purpose)",
        ),
        ("/v1/scenarios", "GET") => (
            "data",
            "The scenarios this client may run: [{scenario, title, summary}] (Accept-Language: zh or en)",
        ),
        ("/v1/scenarios/{scenario}", "GET") => (
            "data",
            "The scenario's guide: parts, departments, what to bring, time limit, legal basis (Accept-Language: zh or en)",
        ),
        ("/v1/scenarios/{scenario}", "POST") => (
            "data",
            "Run a one-thing scenario: fan out to departments and merge (needs X-Purpose); with X-Case-Id the outcome is kept as a case",
        ),
        ("/v1/cases/{case_id}", "GET") => (
            "data",
            "A case of this client: accepted_at, supply_by, overdue, part statuses, outstanding parts",
        ),
        ("/v1/cases/{case_id}/refresh", "POST") => (
            "data",
            "Fetch the case's outstanding parts again (needs X-Purpose); the case completes when none is left",
        ),
        ("/v1/proxy/{department}", _) | ("/v1/proxy/{department}/{path}", _) => (
            "data",
            "Pass-through to the department's own API (needs X-Purpose and a proxy grant)",
        ),
        ("/healthz", "GET") => ("admin", "Liveness"),
        ("/readyz", "GET") => (
            "admin",
            "Readiness: config loaded, audit writable, department breakers",
        ),
        ("/metrics", "GET") => ("admin", "Prometheus metrics"),
        ("/admin/openapi.json", "GET") => ("admin", "This document"),
        ("/admin/adapters", "GET") => (
            "admin",
            "Registered adapters (platform-admin: all; department-admin: own)",
        ),
        ("/admin/adapters/{department}", "GET") => {
            ("admin", "The department's adapter file (TOML)")
        }
        ("/admin/adapters/{department}", "PUT") => (
            "admin",
            "Register or replace the department's adapter (TOML or JSON body); validated before it is taken",
        ),
        ("/admin/adapters/{department}", "DELETE") => ("admin", "Remove the department's adapter"),
        ("/admin/cache/invalidate", "POST") => (
            "admin",
            "Revoke cached records: {\"dataset\", \"subject\"?}",
        ),
        ("/admin/audit", "GET") => ("admin", "Query the audit log (auditor)"),
        ("/admin/audit/verify", "GET") => ("admin", "Verify the audit chain now (auditor)"),
        ("/admin/reload", "POST") => ("admin", "Reload configuration from disk (platform-admin)"),
        ("/admin/departments", "GET") => ("admin", "Department breaker and bulkhead state"),
        ("/admin/audit/stats", "GET") => (
            "admin",
            "Audit summary for the console: decisions per time bucket, top clients and datasets (auditor; same filters as /admin/audit)",
        ),
        ("/admin/adapters/{department}/try", "POST") => (
            "admin",
            "Run an adapter (the given draft or the registered one) once for one subject: {\"adapter\"?, \"dataset\", \"subject\"}; nothing swapped or cached; audited",
        ),
        ("/console", "GET") | ("/console/", "GET") | ("/console/{path}", "GET") => (
            "console",
            "The web console (HTML, scripts and styles built into the binary)",
        ),
        _ => return None,
    })
}

/// matchit `{*rest}` -> OpenAPI `{path}`.
fn openapi_path(p: &str) -> String {
    p.replace("{*rest}", "{path}")
}

/// All (path, methods) of both planes.
pub fn routes() -> Vec<(String, Vec<&'static str>)> {
    let mut out: Vec<(String, Vec<&'static str>)> = crate::routing::DATA_ROUTES
        .iter()
        .map(|(p, m)| (openapi_path(p), m.to_vec()))
        .collect();
    out.extend(
        crate::routing::admin_routes()
            .into_iter()
            .map(|(p, m)| (openapi_path(p), m.to_vec())),
    );
    out
}

/// The document.
pub fn document() -> Value {
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let mut paths = serde_json::Map::new();
    for (path, methods) in routes() {
        let mut item = serde_json::Map::new();
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        for m in methods {
            let (plane, summary) = describe(&path, m).unwrap_or(("unknown", "undocumented"));
            let mut op = json!({
                "tags": [plane],
                "summary": summary,
                "parameters": params,
                "responses": {
                    "200": {"description": "OK"},
                    "default": {"description": "Error", "content": {"application/problem+json": {"schema": problem}}}
                }
            });
            let open = crate::routing::ADMIN_ROUTES
                .iter()
                .any(|(p, r)| openapi_path(p) == path && r.is_open());
            if !open {
                op["security"] = json!([{"bearer": []}]);
            }
            item.insert(m.to_lowercase(), op);
        }
        paths.insert(path, Value::Object(item));
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "onewindow", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Data-sharing integration gateway: data plane (/v1) and admin plane."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Problem": {"type": "object", "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "request_id": {"type": "string"}}}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented() {
        for (path, methods) in routes() {
            for m in methods {
                assert!(
                    describe(&path, m).is_some(),
                    "{m} {path} has no description"
                );
            }
        }
        let doc = document();
        for (path, _) in routes() {
            assert!(doc["paths"].get(&path).is_some(), "{path} missing");
        }
    }
}
