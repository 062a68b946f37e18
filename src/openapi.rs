//! The OpenAPI 3 document of both planes, complete enough for a portal to
//! generate its client.
//!
//! Paths come from the route tables the routers are built from
//! ([`crate::routing::DATA_ROUTES`], [`crate::routing::ADMIN_ROUTES`]) and
//! their summaries from [`crate::routing::ROUTE_DOCS`]; dataset and scenario
//! routes are expanded per configured dataset and scenario, with response
//! schemas generated from datasets.toml (the canonical record) and the
//! scenario files. The document therefore depends on the loaded
//! configuration and is built from the state at each request.

use serde_json::{Map, Value, json};

use crate::config::datasets::{DatasetSpec, FieldType};
use crate::routing::{DATA_ROUTES, ROUTE_DOCS, admin_routes};
use crate::scenario::Scenario;
use crate::state::State;

/// matchit `{*rest}` -> OpenAPI `{path}`.
fn openapi_path(p: &str) -> String {
    p.replace("{*rest}", "{path}")
}

/// The (tag, summary) of a route; `None` when [`ROUTE_DOCS`] has no line.
fn describe(path: &str, method: &str) -> Option<(&'static str, &'static str)> {
    ROUTE_DOCS
        .iter()
        .find(|(m, p, _, _)| *p == path && (*m == method || *m == "*"))
        .map(|(_, _, tag, summary)| (*tag, *summary))
}

/// All (path as in the table, methods) of both planes.
pub fn routes() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> =
        DATA_ROUTES.iter().map(|(p, m)| (*p, m.to_vec())).collect();
    out.extend(admin_routes().into_iter().map(|(p, m)| (p, m.to_vec())));
    out
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn header_param(name: &str, required: bool, description: &str, example: &str) -> Value {
    json!({
        "name": name, "in": "header", "required": required,
        "description": description,
        "schema": {"type": "string", "minLength": 1,
                   "maxLength": crate::auth::MAX_ATTRIBUTION_BYTES},
        "example": example,
    })
}

/// The attribution headers every data read and scenario carries.
fn attribution_params() -> Vec<Value> {
    vec![
        header_param(
            "X-Purpose",
            true,
            "Why the data is needed; must be one of the client's granted purposes",
            "service-handling",
        ),
        header_param(
            "X-End-User",
            false,
            "Who at the service window the request is made for (audited as given)",
            "clerk-0042",
        ),
        header_param(
            "X-Case-Id",
            false,
            "The service case the request belongs to",
            "BH-2026-0001",
        ),
    ]
}

fn request_id_param() -> Value {
    json!({
        "name": "X-Request-Id", "in": "header", "required": false,
        "description": "Caller's request id (1..64 of [A-Za-z0-9._-]); echoed, else generated",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
        "example": "portal-7f3a9c",
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description,
           "schema": {"type": "string"}})
}

/// The JSON schema of one canonical field.
fn field_schema(ty: FieldType, required: bool) -> Value {
    let mut s = match ty {
        FieldType::String => json!({"type": "string"}),
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::Integer => json!({"type": "integer"}),
        FieldType::Number => json!({"type": "number"}),
        FieldType::Boolean => json!({"type": "boolean"}),
        FieldType::Array => json!({"type": "array", "items": {}}),
        FieldType::Object => json!({"type": "object"}),
    };
    if !required {
        s["nullable"] = json!(true);
    }
    s
}

/// Schema name of a dataset's record (`BusinessLicenceRecord`).
fn record_name(dataset: &str) -> String {
    let mut out = String::new();
    for part in dataset.split(['-', '_']).filter(|p| !p.is_empty()) {
        let mut c = part.chars();
        if let Some(f) = c.next() {
            out.extend(f.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    out.push_str("Record");
    out
}

/// The canonical record of a dataset. Fields a client is not granted are
/// left out of its answers, so no field is required in the schema.
fn record_schema(d: &DatasetSpec) -> Value {
    let props: Map<String, Value> = d
        .fields
        .iter()
        .map(|f| (f.name.clone(), field_schema(f.ty, f.required)))
        .collect();
    let required: Vec<&str> = d
        .fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name.as_str())
        .collect();
    json!({
        "type": "object",
        "description": format!(
            "{} ({}), canonical form. Always present in the department's record: {}. \
             A client sees only the fields it is granted.",
            d.title, d.department, required.join(", ")
        ),
        "properties": props,
    })
}

/// The answer to a dataset read.
fn dataset_reply_schema(d: &DatasetSpec) -> Value {
    json!({
        "type": "object",
        "required": ["dataset", "subject", "record", "source", "notice"],
        "properties": {
            "dataset": {"type": "string", "enum": [d.name]},
            "subject": {"type": "string"},
            "record": schema_ref(&record_name(&d.name)),
            "source": {
                "type": "object",
                "required": ["department", "fetched_at", "cache"],
                "properties": {
                    "department": {"type": "string"},
                    "fetched_at": {"type": "string", "format": "date-time"},
                    "cache": {"type": "string", "enum": ["hit", "miss", "stale"]},
                },
            },
            "notice": {"type": "string"},
        },
    })
}

/// A subject id that passes the dataset's own rule.
fn subject_schema(d: &DatasetSpec) -> Value {
    let mut s = json!({"type": "string", "minLength": 1, "maxLength": d.subject_max_len});
    if d.subject_chars == crate::config::datasets::SubjectChars::Alphanumeric {
        s["pattern"] = json!("^[A-Za-z0-9]+$");
    }
    s
}

fn problem_responses(statuses: &[(&str, &str)]) -> Map<String, Value> {
    let mut m = Map::new();
    for (status, description) in statuses {
        m.insert(
            status.to_string(),
            json!({"description": description, "content": {"application/problem+json": {
                "schema": schema_ref("Problem")}}}),
        );
    }
    m.insert(
        "default".into(),
        json!({"description": "Error (RFC 9457 problem details)",
               "content": {"application/problem+json": {"schema": schema_ref("Problem")}}}),
    );
    m
}

fn ok_json(schema: Value, example: Option<Value>) -> Value {
    let mut media = json!({"schema": schema});
    if let Some(e) = example {
        media["example"] = e;
    }
    json!({"description": "OK", "headers": {
        "X-Request-Id": {"schema": {"type": "string"}}},
        "content": {"application/json": media}})
}

/// An example record for a dataset: one value per field of its type.
fn record_example(d: &DatasetSpec) -> Value {
    let m: Map<String, Value> = d
        .fields
        .iter()
        .map(|f| {
            let v = match f.ty {
                FieldType::String => json!(format!("example {}", f.name)),
                FieldType::Date => json!("2027-12-31"),
                FieldType::Integer => json!(1),
                FieldType::Number => json!(1.5),
                FieldType::Boolean => json!(true),
                FieldType::Array => json!([]),
                FieldType::Object => json!({}),
            };
            (f.name.clone(), v)
        })
        .collect();
    Value::Object(m)
}

fn dataset_operation(d: &DatasetSpec) -> Value {
    let mut params = vec![json!({
        "name": "subject", "in": "path", "required": true,
        "description": format!("The {} the record is about", d.subject_kind),
        "schema": subject_schema(d),
    })];
    params.extend(attribution_params());
    params.push(request_id_param());
    let mut responses = problem_responses(&[
        ("400", "Malformed subject or attribution header"),
        ("401", "Missing or invalid token"),
        ("403", "Dataset or purpose not granted"),
        ("404", "The department has no such record"),
        ("429", "Rate limited (Retry-After)"),
        (
            "502",
            "The department failed or answered something unusable",
        ),
        (
            "503",
            "The department is protected right now (breaker, bulkhead)",
        ),
        ("504", "The department did not answer in time"),
    ]);
    let example = json!({
        "dataset": d.name, "subject": "91120116MA07Q8XJ2K", "record": record_example(d),
        "source": {"department": d.department, "fetched_at": "2026-11-30T09:00:00Z", "cache": "miss"},
        "notice": d.notice,
    });
    let mut ok = ok_json(dataset_reply_schema(d), Some(example));
    ok["headers"]["X-Cache"] = json!({"schema": {"type": "string"}});
    responses.insert("200".into(), ok);
    json!({
        "tags": ["data"],
        "operationId": format!("read_{}", d.name.replace('-', "_")),
        "summary": format!("{}: one shared record in canonical form", d.title),
        "parameters": params,
        "security": [{"bearer": []}],
        "responses": responses,
    })
}

fn scenario_operation(s: &Scenario) -> Value {
    let mut subjects = Map::new();
    let mut required = Vec::new();
    for p in &s.parts {
        subjects
            .entry(p.subject_kind.clone())
            .or_insert_with(|| json!({"type": "string", "minLength": 1}));
        if p.required && !required.contains(&p.subject_kind) {
            required.push(p.subject_kind.clone());
        }
    }
    let parts: Map<String, Value> = s
        .parts
        .iter()
        .map(|p| {
            let record = json!({"allOf": [schema_ref(&record_name(&p.dataset))],
                                "description": format!("The {} record", p.dataset)});
            (
                p.name.clone(),
                json!({
                    "type": "object",
                    "required": ["status", "http_status"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "missing", "error", "denied"]},
                        "http_status": {"type": "integer"},
                        "record": record,
                        "detail": {"type": "string"},
                    },
                }),
            )
        })
        .collect();
    let reply = json!({
        "type": "object",
        "required": ["scenario", "complete", "parts"],
        "properties": {
            "scenario": {"type": "string", "enum": [s.name]},
            "complete": {"type": "boolean"},
            "parts": {"type": "object", "properties": parts},
        },
    });
    let example_subjects: Map<String, Value> = subjects
        .keys()
        .map(|k| (k.clone(), json!("91120116MA07Q8XJ2K")))
        .collect();
    let mut params = attribution_params();
    params.push(request_id_param());
    let mut responses = problem_responses(&[
        ("400", "Malformed body, unknown or missing subject kind"),
        ("401", "Missing or invalid token"),
        ("403", "Scenario or purpose not granted"),
        ("413", "Body too large"),
        ("429", "Rate limited (Retry-After)"),
    ]);
    responses.insert("200".into(), ok_json(reply.clone(), None));
    responses.insert(
        "424".into(),
        json!({"description": "All-or-nothing scenario: a required part failed; the parts say which",
               "content": {"application/json": {"schema": reply}}}),
    );
    json!({
        "tags": ["data"],
        "operationId": format!("run_{}", s.name.replace('-', "_")),
        "summary": format!("{}: fan out to departments and merge", s.title),
        "parameters": params,
        "security": [{"bearer": []}],
        "requestBody": {"required": true, "content": {"application/json": {
            "schema": {"type": "object", "required": ["subjects"], "additionalProperties": false,
                       "properties": {"subjects": {"type": "object", "properties": subjects,
                                                   "required": required,
                                                   "additionalProperties": false}}},
            "example": {"subjects": example_subjects},
        }}},
        "responses": responses,
    })
}

/// The answer schema of the routes that have a fixed one.
fn fixed_response(path: &str, method: &str) -> Option<Value> {
    let text = |ctype: &str| json!({"description": "OK", "content": {ctype: {"schema": {"type": "string"}}}});
    let object = || ok_json(json!({"type": "object"}), None);
    Some(match (method, path) {
        ("GET", "/v1/catalog") => ok_json(schema_ref("Catalog"), None),
        ("GET", "/healthz") => text("text/plain"),
        ("GET", "/metrics") => text("application/openmetrics-text"),
        ("GET", "/readyz") => object(),
        ("GET", "/admin/adapters/{department}") => text("application/toml"),
        ("GET", _) | ("PUT", _) | ("POST", _) | ("DELETE", _) => object(),
        _ => return None,
    })
}

/// Routes besides the proxy that read department data and so need the
/// attribution headers.
const NEEDS_ATTRIBUTION: &[(&str, &str)] = &[("POST", "/v1/cases/{case_id}/refresh")];

fn generic_operation(path: &str, method: &str, open: bool) -> Value {
    let (tag, summary) = describe(path, method).unwrap_or(("unknown", "undocumented"));
    let api_path = openapi_path(path);
    let mut params: Vec<Value> = api_path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| path_param(name, name))
        .collect();
    let proxy = path.starts_with("/v1/proxy/");
    if proxy || NEEDS_ATTRIBUTION.contains(&(method, path)) {
        params.extend(attribution_params());
    }
    params.push(request_id_param());
    let mut responses = problem_responses(&[]);
    if proxy {
        responses.insert(
            "200".into(),
            json!({"description": "The department's own answer, passed through as it is: its \
                   status, headers (after the gateway's header rules) and body are the \
                   department's, not the gateway's. Errors the gateway itself raises \
                   (authentication, grants, limits, department unreachable) are problem+json."}),
        );
    } else if let Some(ok) = fixed_response(path, method) {
        responses.insert("200".into(), ok);
    }
    let mut op = json!({
        "tags": [tag],
        "summary": summary,
        "parameters": params,
        "responses": responses,
    });
    if !open {
        op["security"] = json!([{"bearer": []}]);
    }
    op
}

/// The document for the configuration in `state`.
pub fn document(state: &State) -> Value {
    let mut paths = Map::new();
    for (path, methods) in routes() {
        let open = crate::routing::ADMIN_ROUTES
            .iter()
            .any(|(p, r)| *p == path && r.is_open());
        let mut item = Map::new();
        match path {
            "/v1/datasets/{dataset}/{subject}" => {
                for d in state.datasets.iter() {
                    let item = json!({"get": dataset_operation(d)});
                    paths.insert(format!("/v1/datasets/{}/{{subject}}", d.name), item);
                }
                continue;
            }
            "/v1/scenarios/{scenario}" => {
                for s in state.scenarios.iter() {
                    let mut guide = generic_operation(path, "GET", false);
                    if let Some(params) = guide["parameters"].as_array_mut() {
                        params.retain(|p| p["name"] != "scenario");
                    }
                    let item = json!({"post": scenario_operation(s), "get": guide});
                    paths.insert(format!("/v1/scenarios/{}", s.name), item);
                }
                continue;
            }
            _ => {}
        }
        for m in methods {
            item.insert(m.to_lowercase(), generic_operation(path, m, open));
        }
        paths.insert(openapi_path(path), Value::Object(item));
    }
    let mut schemas = Map::new();
    for d in state.datasets.iter() {
        schemas.insert(record_name(&d.name), record_schema(d));
    }
    schemas.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "description": "RFC 9457 problem details; every gateway error has this shape",
            "required": ["type", "title", "status", "detail", "request_id"],
            "properties": {
                "type": {"type": "string", "format": "uri"},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "request_id": {"type": "string"},
            },
            "example": {"type": format!("{}not-found", crate::error::PROBLEM_BASE),
                        "title": "Not Found", "status": 404,
                        "detail": "the department has no record for this subject",
                        "request_id": "portal-7f3a9c"},
        }),
    );
    schemas.insert(
        "Catalog".into(),
        json!({
            "type": "object",
            "required": ["client", "purposes", "datasets", "scenarios", "proxy"],
            "properties": {
                "client": {"type": "string"},
                "purposes": {"type": "array", "items": {"type": "string"}},
                "datasets": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "title": {"type": "string"},
                    "department": {"type": "string"}, "subject_kind": {"type": "string"},
                    "fields": {"type": "array", "items": {"type": "string"}},
                    "path": {"type": "string"}}}},
                "scenarios": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "title": {"type": "string"},
                    "subjects": {"type": "array", "items": {"type": "string"}},
                    "path": {"type": "string"}}}},
                "proxy": {"type": "array", "items": {"type": "object"}},
            },
        }),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "onewindow",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Data-sharing integration gateway. Data plane: /v1 (catalog, dataset \
                reads in canonical form, one-thing scenarios, and a proxy whose answers are the \
                department's own). Admin plane: probes, metrics, adapters, cache, audit. \
                HEAD is answered wherever GET is. Errors raised by the gateway are \
                application/problem+json (RFC 9457).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "A JWT from a trusted issuer; `sub` names the client (clients.toml)"}},
            "schemas": schemas,
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
                    describe(path, m).is_some(),
                    "{m} {path} has no line in routing::ROUTE_DOCS"
                );
            }
        }
    }

    #[test]
    fn record_names_are_pascal_case() {
        assert_eq!(record_name("business-licence"), "BusinessLicenceRecord");
        assert_eq!(record_name("a_b-c"), "ABCRecord");
    }
}
