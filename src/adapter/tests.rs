//! Adapter tests: file parsing and compile checks, the demo files against
//! the shipped schema, request building with hostile inputs, reply mapping.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

use super::*;

const DEPARTMENTS: [&str; 6] = [
    "market-supervision",
    "health-commission",
    "fire-rescue",
    "public-security",
    "ecology-environment",
    "tax",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn datasets() -> Datasets {
    let file = root().join("config/datasets.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    Datasets::from_toml(&file, &text, &|d| DEPARTMENTS.contains(&d)).unwrap()
}

fn no_secret(_: &str) -> Option<String> {
    None
}

fn compile_with(
    department: &str,
    text: &str,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<DepartmentAdapter, ConfigErrors> {
    let ds = datasets();
    let reg = AdapterRegistry::builtin();
    let file = PathBuf::from(format!("adapters/{department}.toml"));
    let cx = CompileContext {
        file: &file,
        expected_department: department,
        datasets: &ds,
        registry: &reg,
        secret,
    };
    AdapterSpec::from_toml(&file, text)?.compile(&cx)
}

fn compile(department: &str, text: &str) -> Result<DepartmentAdapter, ConfigErrors> {
    compile_with(department, text, &no_secret)
}

pub(super) fn demo(department: &str) -> DepartmentAdapter {
    let text = std::fs::read_to_string(root().join(format!("adapters/{department}.toml"))).unwrap();
    compile(department, &text).unwrap_or_else(|e| panic!("{e}"))
}

fn fields_of(e: &ConfigErrors) -> Vec<&str> {
    e.0.iter().map(|e| e.field.as_str()).collect()
}

struct Req {
    subjects: BTreeMap<String, String>,
}

impl Req {
    fn new() -> Self {
        Self {
            subjects: BTreeMap::new(),
        }
    }

    fn get<'a>(&'a self, dataset: &'a str, subject: &'a str) -> CanonicalRequest<'a> {
        CanonicalRequest {
            dataset,
            subject,
            subjects: &self.subjects,
            purpose: "service-handling",
            case_id: Some("CASE-2026-001"),
            end_user: Some("clerk-07"),
        }
    }
}

pub(super) fn reply<'a>(status: u16, headers: &'a HeaderMap, body: &'a [u8]) -> UpstreamReply<'a> {
    UpstreamReply {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body,
    }
}

const HOSTILE: &[&str] = &[
    "a/b",
    "a?b=c",
    "a#frag",
    "a%2e%2e",
    "a\"b'c",
    "<x>&amp;",
    "]]>",
    "a\r\nX-Injected: 1",
    "../../admin",
];

// ---- demo files ----

#[test]
fn demo_adapters_compile_against_demo_schema() {
    let ds = datasets();
    assert_eq!(ds.len(), 8);
    let set = AdapterSet::load_dir(
        &root().join("adapters"),
        &ds,
        &AdapterRegistry::builtin(),
        &no_secret,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.len(), 6);
    assert_eq!(set.department("tax").unwrap().kind, "sql");
    for d in ds.iter() {
        let a = set.for_dataset(&d.name).unwrap();
        assert_eq!(a.department, d.department);
    }
    assert_eq!(set.department("fire-rescue").unwrap().kind, "soap-xml");
    let ms = set.department("market-supervision").unwrap();
    assert_eq!(ms.http_target().map(|t| t.port), Some(7101));
    assert_eq!(
        ms.datasets,
        vec!["business-licence", "food-business-permit"]
    );
}

#[test]
fn demo_market_supervision_round_trip() {
    let a = demo("market-supervision");
    let r = Req::new();
    let up = a
        .build_request(&r.get("business-licence", "91120116MA07Q8XJ2K"))
        .unwrap();
    assert_eq!(up.method, Method::GET);
    assert_eq!(
        up.path_and_query,
        "/api/v2/licences/91120116MA07Q8XJ2K?caseNo=CASE-2026-001&purpose=service-handling"
    );
    assert_eq!(up.headers["x-case-id"], "CASE-2026-001");
    assert_eq!(up.headers["x-end-user"], "clerk-07");
    assert!(up.body.is_empty());
    let body = json!({"code": "0000", "data": {
        "tyshxydm": "91120116MA07Q8XJ2K", "qymc": "滨海小馆餐饮有限公司", "fddbr": "王芳",
        "zs": "天津市滨海新区", "jyfw": "餐饮服务", "clrq": "2024-03-12",
        "yxqz": "2044-03-11", "djzt": "存续"}})
    .to_string();
    let h = HeaderMap::new();
    let rec = a
        .map_response("business-licence", reply(200, &h, body.as_bytes()))
        .unwrap();
    assert_eq!(rec["status"], "active");
    assert_eq!(rec["name"], "滨海小馆餐饮有限公司");
    assert_eq!(rec["valid_until"], "2044-03-11");
    assert_eq!(rec.len(), 8);
    assert_eq!(
        a.map_response("business-licence", reply(404, &h, b"{}")),
        Err(AdapterError::RecordNotFound)
    );
    let up = a
        .build_request(&r.get("food-business-permit", "91120116MA07Q8XJ2K"))
        .unwrap();
    assert_eq!(
        up.path_and_query,
        "/api/v2/food-permits?caseNo=CASE-2026-001&purpose=service-handling&tyshxydm=91120116MA07Q8XJ2K"
    );
}

#[test]
fn demo_health_commission_round_trip() {
    let a = demo("health-commission");
    let r = Req::new();
    let up = a
        .build_request(&r.get("health-certificate", "91120116MA07Q8XJ2K"))
        .unwrap();
    assert_eq!(up.method, Method::POST);
    assert_eq!(up.path_and_query, "/openapi/v1/health-certificates/query");
    assert_eq!(up.headers["content-type"], "application/json");
    let sent: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
    assert_eq!(
        sent,
        json!({"orgCode": "91120116MA07Q8XJ2K", "purpose": "service-handling", "caseId": "CASE-2026-001"})
    );
    let body = json!({"code": 0, "message": "ok", "result": {
        "orgCode": "91120116MA07Q8XJ2K", "orgName": "滨海小馆", "total": 2,
        "staff": [
            {"fullName": "李雷", "certNo": "JK2026-0001", "jobType": "厨师", "issueDate": "2026-01-05", "expiryDate": "2027-01-04", "internalId": 9},
            {"fullName": "韩梅梅", "certNo": "JK2026-0002", "jobType": "服务员", "issueDate": "2026-01-05", "expiryDate": "2027-01-04"}
        ]}})
    .to_string();
    let h = HeaderMap::new();
    let rec = a
        .map_response("health-certificate", reply(200, &h, body.as_bytes()))
        .unwrap();
    assert_eq!(rec["staff_count"], 2);
    assert_eq!(
        rec["certificates"][0],
        json!({"name": "李雷", "certificate_no": "JK2026-0001", "job": "厨师", "issued_on": "2026-01-05", "valid_until": "2027-01-04"})
    );
    let nf = json!({"code": 40401, "message": "no record"}).to_string();
    assert_eq!(
        a.map_response("health-certificate", reply(200, &h, nf.as_bytes())),
        Err(AdapterError::RecordNotFound)
    );
    let up = a
        .build_request(&r.get("birth-medical-certificate", "T120116202600001"))
        .unwrap();
    assert_eq!(
        up.path_and_query,
        "/openapi/v1/birth-certificates/T120116202600001"
    );
    let body = json!({"code": 0, "result": {"certNo": "T120116202600001",
        "newborn": {"name": "张小宝", "gender": "F", "birthDate": "2026-02-01", "birthPlace": "天津市滨海新区妇产医院", "weightGrams": 3250},
        "mother": {"name": "刘敏", "idNumber": "120116199203154527"},
        "father": {"name": "张伟", "idNumber": "120116199001011234"},
        "institution": "滨海新区妇产医院"}})
    .to_string();
    let rec = a
        .map_response("birth-medical-certificate", reply(200, &h, body.as_bytes()))
        .unwrap();
    assert_eq!(rec["gender"], "female");
    assert_eq!(rec["birth_weight_g"], 3250);
    assert_eq!(rec["mother_id"], "120116199203154527");
}

const FIRE_OK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <fr:GetInspectionResponse xmlns:fr="urn:fire-rescue:inspection">
      <fr:Inspection>
        <fr:InspectionNo>XF-2026-0042</fr:InspectionNo>
        <fr:CreditCode>91120116MA07Q8XJ2K</fr:CreditCode>
        <fr:PremisesAddress>天津市滨海新区 &amp; 1号</fr:PremisesAddress>
        <fr:InspectionDate>2026-01-20</fr:InspectionDate>
        <fr:Conclusion>合格</fr:Conclusion>
        <fr:MaxOccupancy>80</fr:MaxOccupancy>
        <fr:ValidUntil>2027-01-19</fr:ValidUntil>
      </fr:Inspection>
    </fr:GetInspectionResponse>
  </soap:Body>
</soap:Envelope>"#;

#[test]
fn demo_fire_rescue_round_trip() {
    let a = demo("fire-rescue");
    let r = Req::new();
    let up = a
        .build_request(&r.get("fire-safety-inspection", "91120116MA07Q8XJ2K"))
        .unwrap();
    assert_eq!(up.method, Method::POST);
    assert_eq!(up.path_and_query, "/services/FireSafetyInspection");
    assert_eq!(
        up.headers["soapaction"],
        "\"urn:fire-rescue:GetInspection\""
    );
    assert_eq!(up.headers["content-type"], "text/xml; charset=utf-8");
    let body = std::str::from_utf8(&up.body).unwrap();
    assert!(
        body.contains("<fr:CreditCode>91120116MA07Q8XJ2K</fr:CreditCode>"),
        "{body}"
    );
    let h = HeaderMap::new();
    let rec = a
        .map_response("fire-safety-inspection", reply(200, &h, FIRE_OK.as_bytes()))
        .unwrap();
    assert_eq!(rec["passed"], true);
    assert_eq!(rec["max_occupancy"], 80);
    assert_eq!(rec["premises"], "天津市滨海新区 & 1号");
    assert_eq!(rec["inspected_on"], "2026-01-20");
}

#[test]
fn demo_public_security_round_trip() {
    let a = demo("public-security");
    let mut r = Req::new();
    r.subjects
        .insert("guardian_id".into(), "120116199203154527".into());
    let up = a
        .build_request(&r.get("household-registration", "120116199203154527"))
        .unwrap();
    assert_eq!(
        up.path_and_query,
        "/gaapi/v1/households?id_no=120116199203154527&purpose=service-handling"
    );
    let body = json!({"ret": 0, "msg": "ok", "data": {"id_no": "120116199203154527",
        "household_no": "HH120116000123", "head_name": "刘敏", "registered_address": "天津市滨海新区某街道1号",
        "police_station": "新港派出所", "members": [{"name": "刘敏", "relation": "户主", "id_no": "x"}]}})
    .to_string();
    let h = HeaderMap::new();
    let rec = a
        .map_response("household-registration", reply(200, &h, body.as_bytes()))
        .unwrap();
    assert_eq!(
        rec["members"],
        json!([{"name": "刘敏", "relation": "户主"}])
    );
}

#[test]
fn demo_ecology_environment_round_trip() {
    let a = demo("ecology-environment");
    let r = Req::new();
    let up = a
        .build_request(&r.get("environmental-penalties", "91120116MA07T6WN8F"))
        .unwrap();
    assert_eq!(
        up.path_and_query,
        "/eco-api/v3/enforcement/penalties?unifiedCode=91120116MA07T6WN8F"
    );
    // The simulated department's own answers: one penalty, and a clean company.
    for (uscc, count) in [("91120116MA07T6WN8F", 1), ("91120116MA07Q8XJ2K", 0)] {
        let (status, _, body) = crate::demo::Sim::EcologyEnvironment.answer(
            &Method::GET,
            "/eco-api/v3/enforcement/penalties",
            Some(&format!("unifiedCode={uscc}")),
            b"",
        );
        let h = HeaderMap::new();
        let rec = a
            .map_response(
                "environmental-penalties",
                reply(status.as_u16(), &h, body.as_bytes()),
            )
            .unwrap();
        assert_eq!(rec["uscc"], uscc);
        assert_eq!(rec["penalty_count"], count);
        assert_eq!(rec["penalties"].as_array().unwrap().len(), count);
        if count == 1 {
            assert_eq!(rec["penalties"][0]["amount_yuan"], 30000);
            assert_eq!(rec["penalties"][0]["rectified"], false);
        }
    }
}

// ---- file-level refusals ----

const MINIMAL: &str = r#"
department = "market-supervision"
kind = "rest-json"
base_url = "http://127.0.0.1:7101"
[datasets.business-licence]
path = "/l/{subject}"
[datasets.business-licence.response]
record = "/data"
[datasets.business-licence.response.fields]
uscc = "/a"
name = "/b"
legal_representative = "/c"
valid_until = "/d"
status = "/e"
"#;

#[test]
fn minimal_file_compiles() {
    compile("market-supervision", MINIMAL).unwrap();
}

#[test]
fn malformed_toml_is_refused() {
    let e = compile(
        "market-supervision",
        "department = \"market-supervision\"\nkind = ",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("adapters/market-supervision.toml"),
        "{e}"
    );
    let e = compile("market-supervision", "[datasets.x\n").unwrap_err();
    assert!(!e.is_empty());
    let file = Path::new("PUT");
    assert!(AdapterSpec::from_json(file, b"{\"department\": ").is_err());
}

#[test]
fn unknown_kind_is_refused() {
    let text = MINIMAL.replace("rest-json", "graphql");
    let e = compile("market-supervision", &text).unwrap_err();
    assert_eq!(fields_of(&e), vec!["kind"]);
    assert!(e.to_string().contains("rest-json, soap-xml"), "{e}");
}

#[test]
fn leftover_keys_are_refused() {
    let top = format!("{MINIMAL}\n");
    let top = top.replacen(
        "kind = \"rest-json\"",
        "kind = \"rest-json\"\ntimeout = 5",
        1,
    );
    let e = compile("market-supervision", &top).unwrap_err();
    assert_eq!(fields_of(&e), vec!["timeout"], "{e}");
    let inner = MINIMAL.replace(
        "path = \"/l/{subject}\"",
        "path = \"/l/{subject}\"\nretries = 3",
    );
    let e = compile("market-supervision", &inner).unwrap_err();
    assert_eq!(fields_of(&e), vec!["retries"], "{e}");
    let auth = format!("{MINIMAL}\n[upstream_auth]\nheader = \"X-Api-Key\"\nsecret = \"inline\"\n");
    let e = compile("market-supervision", &auth).unwrap_err();
    assert_eq!(fields_of(&e), vec!["secret"], "{e}");
    // soap-xml keys are not accepted by rest-json.
    let e = compile(
        "market-supervision",
        &MINIMAL.replace(
            "kind = \"rest-json\"",
            "kind = \"rest-json\"\nsoap_version = \"1.1\"",
        ),
    )
    .unwrap_err();
    assert_eq!(fields_of(&e), vec!["soap_version"], "{e}");
}

#[test]
fn unknown_canonical_field_is_refused() {
    let text = format!("{MINIMAL}registered_capital = \"/zczb\"\n");
    let e = compile("market-supervision", &text).unwrap_err();
    assert_eq!(
        fields_of(&e),
        vec!["datasets.business-licence.response.fields.registered_capital"]
    );
}

#[test]
fn unmapped_required_field_is_refused() {
    let text = MINIMAL.replace("status = \"/e\"\n", "");
    let e = compile("market-supervision", &text).unwrap_err();
    assert_eq!(
        fields_of(&e),
        vec!["datasets.business-licence.response.fields.status"]
    );
}

#[test]
fn dataset_of_another_department_is_refused() {
    let text = MINIMAL.replace("market-supervision", "public-security");
    let e = compile("public-security", &text).unwrap_err();
    assert_eq!(fields_of(&e), vec!["datasets.business-licence"]);
    assert!(
        e.to_string().contains("belongs to `market-supervision`"),
        "{e}"
    );
    let text = MINIMAL.replace("business-licence", "business-license");
    let e = compile("market-supervision", &text).unwrap_err();
    assert_eq!(fields_of(&e), vec!["datasets.business-license"]);
}

#[test]
fn department_must_match_file() {
    let e = compile("fire-rescue", MINIMAL).unwrap_err();
    assert_eq!(fields_of(&e)[0], "department");
}

#[test]
fn template_with_unclosed_placeholder_is_refused() {
    let text = MINIMAL.replace("/l/{subject}", "/l/{subject");
    let e = compile("market-supervision", &text).unwrap_err();
    assert_eq!(fields_of(&e), vec!["datasets.business-licence.path"]);
    assert!(e.to_string().contains("unclosed"), "{e}");
    let text = MINIMAL.replace("/l/{subject}", "/l/{subjekt}");
    let e = compile("market-supervision", &text).unwrap_err();
    assert!(e.to_string().contains("unknown placeholder"), "{e}");
}

#[test]
fn bad_base_url_is_refused_at_compile() {
    let text = MINIMAL.replace("http://127.0.0.1:7101", "http://ok@127.0.0.1:7101");
    let e = compile("market-supervision", &text).unwrap_err();
    assert_eq!(fields_of(&e), vec!["base_url"]);
    let text = MINIMAL.replace("http://127.0.0.1:7101", "http://0x7f.1:7101");
    assert!(compile("market-supervision", &text).is_err());
}

#[test]
fn reserved_headers_cannot_be_templated() {
    for h in ["Host", "Content-Length", "Transfer-Encoding", "Bad Name"] {
        let text = MINIMAL.replace(
            "path = \"/l/{subject}\"",
            &format!("path = \"/l/{{subject}}\"\nheaders = {{ \"{h}\" = \"x\" }}"),
        );
        let e = compile("market-supervision", &text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{h}: {e}");
    }
}

#[test]
fn value_map_values_are_type_checked() {
    let text = MINIMAL.replace(
        "valid_until = \"/d\"",
        "valid_until = { pointer = \"/d\", map = { \"长期\" = \"forever\" } }",
    );
    let e = compile("market-supervision", &text).unwrap_err();
    assert_eq!(
        fields_of(&e),
        vec!["datasets.business-licence.response.fields.valid_until.map.长期"]
    );
}

#[test]
fn upstream_auth_reads_only_the_departments_secrets() {
    let auth = |env: &str| {
        format!("{MINIMAL}\n[upstream_auth]\nheader = \"X-Api-Key\"\nsecret_env = \"{env}\"\n")
    };
    let secret = |name: &str| {
        (name == "ONEWINDOW_DEPT_MARKET_SUPERVISION__KEY").then(|| "s3cr3t".to_string())
    };
    let a = compile_with(
        "market-supervision",
        &auth("ONEWINDOW_DEPT_MARKET_SUPERVISION__KEY"),
        &secret,
    )
    .unwrap();
    let r = Req::new();
    let up = a.build_request(&r.get("business-licence", "X")).unwrap();
    assert_eq!(up.headers["x-api-key"], "s3cr3t");
    assert!(up.headers["x-api-key"].is_sensitive());
    assert!(!format!("{a:?}").contains("s3cr3t"));
    // Another variable of the process: refused before it is read.
    let e = compile_with(
        "market-supervision",
        &auth("AWS_SECRET_ACCESS_KEY"),
        &|_| Some("leak".into()),
    )
    .unwrap_err();
    assert_eq!(fields_of(&e), vec!["upstream_auth.secret_env"]);
    let e = compile_with(
        "market-supervision",
        &auth("ONEWINDOW_DEPT_FIRE_RESCUE__KEY"),
        &|_| Some("x".into()),
    )
    .unwrap_err();
    assert_eq!(fields_of(&e), vec!["upstream_auth.secret_env"]);
    // Unset variable.
    let e = compile_with(
        "market-supervision",
        &auth("ONEWINDOW_DEPT_MARKET_SUPERVISION__KEY"),
        &no_secret,
    )
    .unwrap_err();
    assert!(e.to_string().contains("not set"), "{e}");
    // Certificate paths stay under certs/.
    let cert = format!(
        "{MINIMAL}\n[upstream_auth]\nclient_cert = \"/etc/onewindow/server.pem\"\nclient_key = \"certs/../../k.key\"\n"
    );
    let e = compile("market-supervision", &cert).unwrap_err();
    assert_eq!(
        fields_of(&e),
        vec!["upstream_auth.client_cert", "upstream_auth.client_key"]
    );
    // A template may not overwrite the auth header.
    let clash = auth("ONEWINDOW_DEPT_MARKET_SUPERVISION__KEY").replace(
        "path = \"/l/{subject}\"",
        "path = \"/l/{subject}\"\nheaders = { \"X-Api-Key\" = \"{subject}\" }",
    );
    assert!(compile_with("market-supervision", &clash, &secret).is_err());
}

#[test]
fn secret_prefixes_of_departments_never_collide() {
    use crate::adapter::spec::is_department_variable as ours;
    assert!(ours("ONEWINDOW_DEPT_TAX__KEY", "tax"));
    assert!(ours("ONEWINDOW_DEPT_TAX_CREDIT__API_KEY", "tax-credit"));
    // `tax` cannot read `tax-credit`'s variables, nor `tax--credit`'s.
    assert!(!ours("ONEWINDOW_DEPT_TAX_CREDIT__KEY", "tax"));
    assert!(!ours("ONEWINDOW_DEPT_TAX__CREDIT__KEY", "tax"));
    assert!(ours("ONEWINDOW_DEPT_TAX__CREDIT__KEY", "tax--credit"));
    assert!(!ours("ONEWINDOW_DEPT_TAX___KEY", "tax"));
    assert!(!ours("ONEWINDOW_DEPT_TAX__", "tax"));
    assert!(!ours("ONEWINDOW_DEPT_TAX__KEY_", "tax"));
    assert!(!ours("ONEWINDOW_DEPT_TAX__key", "tax"));
    // The old prefix without a separator collided: refused now.
    assert!(!ours("ONEWINDOW_TAX_CREDIT_KEY", "tax"));
}

#[test]
fn client_certificates_come_from_the_departments_own_directory() {
    let cert = |c: &str, k: &str| {
        format!("{MINIMAL}\n[upstream_auth]\nclient_cert = \"{c}\"\nclient_key = \"{k}\"\n")
    };
    compile(
        "market-supervision",
        &cert(
            "certs/departments/market-supervision/client.pem",
            "certs/departments/market-supervision/client.key",
        ),
    )
    .unwrap();
    for (c, k) in [
        // Another department's pair.
        (
            "certs/departments/fire-rescue/client.pem",
            "certs/departments/fire-rescue/client.key",
        ),
        // The server's own key, directly under certs/.
        ("certs/server.pem", "certs/server.key"),
        // A prefix-named sibling directory.
        (
            "certs/departments/market-supervision-x/c.pem",
            "certs/departments/market-supervision2/c.key",
        ),
        // The directory itself, and climbing out of it.
        (
            "certs/departments/market-supervision",
            "certs/departments/market-supervision/../fire-rescue/client.key",
        ),
    ] {
        let e = compile("market-supervision", &cert(c, k)).unwrap_err();
        assert_eq!(
            fields_of(&e),
            vec!["upstream_auth.client_cert", "upstream_auth.client_key"],
            "{c} {k}"
        );
    }
}

#[test]
fn json_file_has_the_same_schema() {
    let body = json!({
        "department": "market-supervision", "kind": "rest-json", "base_url": "http://127.0.0.1:7101",
        "datasets": {"business-licence": {"path": "/l/{subject}", "response": {"record": "/data",
            "fields": {"uscc": "/a", "name": "/b", "legal_representative": "/c", "valid_until": "/d", "status": "/e"}}}}
    });
    let ds = datasets();
    let reg = AdapterRegistry::builtin();
    let file = Path::new("PUT /admin/adapters/market-supervision");
    let cx = CompileContext {
        file,
        expected_department: "market-supervision",
        datasets: &ds,
        registry: &reg,
        secret: &no_secret,
    };
    let spec = AdapterSpec::from_json(file, body.to_string().as_bytes()).unwrap();
    spec.compile(&cx).unwrap();
    let mut bad = body.clone();
    bad["datasets"]["business-licence"]["sql"] = json!("DROP TABLE");
    let e = AdapterSpec::from_json(file, bad.to_string().as_bytes())
        .unwrap()
        .compile(&cx)
        .unwrap_err();
    assert_eq!(fields_of(&e), vec!["sql"]);
}

#[test]
fn adapter_set_swaps_copy_on_write() {
    let set = AdapterSet::from_adapters([demo("market-supervision")]);
    let bigger = set.with(demo("fire-rescue"));
    assert_eq!(set.len(), 1);
    assert_eq!(bigger.len(), 2);
    assert!(bigger.for_dataset("fire-safety-inspection").is_some());
    let smaller = bigger.without("market-supervision");
    assert!(smaller.for_dataset("business-licence").is_none());
    let a = smaller.department("fire-rescue").unwrap();
    assert_eq!(
        a.build_request(&Req::new().get("business-licence", "X"))
            .unwrap_err(),
        AdapterError::UnknownDataset("business-licence".into())
    );
}

// ---- hostile subjects: every target escapes or refuses ----

const ALL_TARGETS: &str = r#"
department = "health-commission"
kind = "rest-json"
base_url = "http://127.0.0.1:7102/base/"
[datasets.birth-medical-certificate]
method = "POST"
path = "/c/{subject}/x"
query = { q = "{subject}", after = "1" }
headers = { "X-Subject" = "{subject}" }
body = '''{"s": {subject}}'''
[datasets.birth-medical-certificate.response]
fields = { certificate_no = "/a", newborn_name = "/b", gender = "/c", birth_date = "/d", mother_name = "/e", mother_id = "/f" }
"#;

#[test]
fn hostile_subject_in_path_query_json_is_escaped_and_in_header_refused() {
    let a = compile("health-commission", ALL_TARGETS).unwrap();
    let r = Req::new();
    for h in HOSTILE {
        let got = a.build_request(&r.get("birth-medical-certificate", h));
        if h.contains('\r') {
            assert!(
                matches!(
                    got,
                    Err(AdapterError::InvalidInput {
                        target: "header",
                        ..
                    })
                ),
                "{h:?}: {got:?}"
            );
            continue;
        }
        let up = got.unwrap();
        let pq = &up.path_and_query;
        // Path: exactly /base/c/<one segment>/x, then exactly two query params.
        let (path, query) = pq.split_once('?').unwrap();
        let segs: Vec<_> = path.split('/').collect();
        assert_eq!(segs.len(), 5, "{h:?} -> {pq}");
        assert_eq!((segs[1], segs[2], segs[4]), ("base", "c", "x"), "{pq}");
        assert!(!pq.contains('#'), "{pq}");
        let params: Vec<_> = query.split('&').collect();
        assert_eq!(params.len(), 2, "{pq}");
        assert_eq!(params[0], "after=1");
        let decoded = percent_encoding::percent_decode_str(params[1].strip_prefix("q=").unwrap())
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, *h);
        let seg = percent_encoding::percent_decode_str(segs[3])
            .decode_utf8()
            .unwrap();
        assert_eq!(seg, *h);
        // Header: verbatim (no controls got this far).
        assert_eq!(up.headers["x-subject"], *h);
        // JSON: one key, value round-trips.
        let v: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(v, json!({ "s": h }));
    }
    for bad in ["a\nb", "a\0b", "x\u{1b}[31m"] {
        assert!(
            a.build_request(&r.get("birth-medical-certificate", bad))
                .is_err()
        );
    }
}

const SOAP_MIN: &str = r#"
department = "fire-rescue"
kind = "soap-xml"
base_url = "http://127.0.0.1:7103"
soap_version = "1.2"
[datasets.fire-safety-inspection]
path = "/svc"
action = "urn:x:Get"
envelope = '''<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><Get code="{subject}"><Code>{subject}</Code><Case>{case_id}</Case></Get></e:Body></e:Envelope>'''
[datasets.fire-safety-inspection.response]
record = "Envelope/Body/GetResponse/Inspection"
not_found_fault_code = "NoRecord"
[datasets.fire-safety-inspection.response.fields]
inspection_no = "No"
uscc = "Code"
inspected_on = "Date"
passed = "Passed"
max_occupancy = "Max"
"#;

#[test]
fn hostile_subject_in_xml_is_escaped_or_refused() {
    let a = compile("fire-rescue", SOAP_MIN).unwrap();
    let r = Req::new();
    for h in HOSTILE {
        let up = a
            .build_request(&r.get("fire-safety-inspection", h))
            .unwrap();
        let body = std::str::from_utf8(&up.body).unwrap();
        assert!(!body.contains("]]>"), "{body}");
        assert!(!body.contains("<x>"), "{body}");
        assert_eq!(super::xml::tests_support::text_of(body, "Code"), *h);
        super::xml::check_well_formed(body).unwrap();
    }
    for bad in ["a\u{0}b", "a\u{8}b", "\u{ffff}"] {
        assert!(matches!(
            a.build_request(&r.get("fire-safety-inspection", bad)),
            Err(AdapterError::InvalidInput { target: "xml", .. })
        ));
    }
    let up = a
        .build_request(&r.get("fire-safety-inspection", "X"))
        .unwrap();
    assert_eq!(
        up.headers["content-type"],
        "application/soap+xml; charset=utf-8; action=\"urn:x:Get\""
    );
    assert!(up.headers.get("soapaction").is_none());
}

// ---- replies ----

fn soap(a: &DepartmentAdapter, status: u16, body: &str) -> Result<Record, AdapterError> {
    let h = HeaderMap::new();
    a.map_response("fire-safety-inspection", reply(status, &h, body.as_bytes()))
}

fn env12(inner: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body>{inner}</e:Body></e:Envelope>"#
    )
}

const GOOD_INSPECTION: &str = "<GetResponse><Inspection><No>N1</No><Code>C1</Code><Date>2026-01-02</Date><Passed>true</Passed><Max> 42 </Max></Inspection></GetResponse>";

#[test]
fn soap_reply_maps_and_converts() {
    let a = compile("fire-rescue", SOAP_MIN).unwrap();
    let rec = soap(&a, 200, &env12(GOOD_INSPECTION)).unwrap();
    assert_eq!(
        serde_json::Value::Object(rec),
        json!({"inspection_no": "N1", "uscc": "C1", "inspected_on": "2026-01-02", "passed": true, "max_occupancy": 42})
    );
}

#[test]
fn soap_reply_with_doctype_is_refused() {
    let a = compile("fire-rescue", SOAP_MIN).unwrap();
    let xxe = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE e:Envelope [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{}",
        env12(GOOD_INSPECTION)
            .replacen("<?xml version=\"1.0\"?>", "", 1)
            .replace("N1", "&xxe;")
    );
    let got = soap(&a, 200, &xxe);
    assert!(
        matches!(&got, Err(AdapterError::MalformedReply(m)) if m.contains("DOCTYPE")),
        "{got:?}"
    );
    let laughs = format!(
        "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]>{}",
        env12(&GOOD_INSPECTION.replace("N1", "&lol2;"))
    );
    assert!(matches!(
        soap(&a, 200, &laughs),
        Err(AdapterError::MalformedReply(_))
    ));
}

#[test]
fn soap_unknown_entity_is_refused() {
    let a = compile("fire-rescue", SOAP_MIN).unwrap();
    let got = soap(&a, 200, &env12(&GOOD_INSPECTION.replace("N1", "&nbsp;")));
    assert!(
        matches!(&got, Err(AdapterError::MalformedReply(m)) if m.contains("unknown entity")),
        "{got:?}"
    );
    let got = soap(&a, 200, &env12(&GOOD_INSPECTION.replace("N1", "&#0;")));
    assert!(
        matches!(got, Err(AdapterError::MalformedReply(_))),
        "{got:?}"
    );
    let rec = soap(
        &a,
        200,
        &env12(&GOOD_INSPECTION.replace("N1", "N&#49;&lt;&#x32;")),
    )
    .unwrap();
    assert_eq!(rec["inspection_no"], "N1<2");
}

#[test]
fn soap_fault_not_found_and_other() {
    let a = compile("fire-rescue", SOAP_MIN).unwrap();
    let nf = env12(
        "<e:Fault><e:Code><e:Value>e:Sender</e:Value><e:Subcode><e:Value>fr:NoRecord</e:Value></e:Subcode></e:Code><e:Reason><e:Text xml:lang=\"en\">no inspection</e:Text></e:Reason></e:Fault>",
    );
    assert_eq!(soap(&a, 500, &nf), Err(AdapterError::RecordNotFound));
    let other = env12(
        "<e:Fault><e:Code><e:Value>e:Receiver</e:Value></e:Code><e:Reason><e:Text>database down</e:Text></e:Reason></e:Fault>",
    );
    assert_eq!(
        soap(&a, 500, &other),
        Err(AdapterError::DepartmentFault {
            code: "e:Receiver".into(),
            reason: "database down".into()
        })
    );
    // SOAP 1.1 fault with the string marker (demo file).
    let fire = demo("fire-rescue");
    let f11 = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>NO_RECORD: no inspection on file</faultstring></soap:Fault></soap:Body></soap:Envelope>"#;
    assert_eq!(soap(&fire, 500, f11), Err(AdapterError::RecordNotFound));
    let f11b = f11.replace("NO_RECORD: no inspection on file", "Server busy");
    assert!(matches!(
        soap(&fire, 500, &f11b),
        Err(AdapterError::DepartmentFault { .. })
    ));
}

#[test]
fn soap_envelope_missing_the_record_is_malformed() {
    let a = compile("fire-rescue", SOAP_MIN).unwrap();
    let got = soap(&a, 200, &env12("<GetResponse><Other/></GetResponse>"));
    assert!(
        matches!(&got, Err(AdapterError::MalformedReply(m)) if m.contains("Inspection")),
        "{got:?}"
    );
    // The record must be at the configured path, not anywhere.
    let got = soap(
        &a,
        200,
        &env12(&format!("<Wrapper>{GOOD_INSPECTION}</Wrapper>")),
    );
    assert!(
        matches!(got, Err(AdapterError::MalformedReply(_))),
        "{got:?}"
    );
}

#[test]
fn soap_missing_required_and_wrong_types() {
    let a = compile("fire-rescue", SOAP_MIN).unwrap();
    let got = soap(&a, 200, &env12(&GOOD_INSPECTION.replace("<No>N1</No>", "")));
    assert_eq!(
        got,
        Err(AdapterError::FieldMissing {
            field: "inspection_no".into()
        })
    );
    for (from, to, field) in [
        ("<Passed>true</Passed>", "<Passed>yes</Passed>", "passed"),
        ("<Max> 42 </Max>", "<Max>42.5</Max>", "max_occupancy"),
        (
            "<Date>2026-01-02</Date>",
            "<Date>02/01/2026</Date>",
            "inspected_on",
        ),
    ] {
        let got = soap(&a, 200, &env12(&GOOD_INSPECTION.replace(from, to)));
        assert!(
            matches!(&got, Err(AdapterError::FieldType { field: f, .. }) if f == field),
            "{to}: {got:?}"
        );
    }
    // Optional empty -> omitted.
    let rec = soap(
        &a,
        200,
        &env12(&GOOD_INSPECTION.replace("<Max> 42 </Max>", "<Max/>")),
    )
    .unwrap();
    assert!(!rec.contains_key("max_occupancy"));
}

#[test]
fn soap_malformed_and_hostile_shapes() {
    let a = compile("fire-rescue", SOAP_MIN).unwrap();
    for body in [
        "not xml at all".to_string(),
        "{\"json\": true}".to_string(),
        env12(GOOD_INSPECTION).replace("</e:Envelope>", ""),
        format!("{}<second/>", env12(GOOD_INSPECTION)),
        env12(&GOOD_INSPECTION.replace("</No>", "</Nope>")),
        format!(
            "{}{}{}",
            "<a>".repeat(100),
            env12(GOOD_INSPECTION),
            "</a>".repeat(100)
        ),
        env12(&GOOD_INSPECTION.replace("N1", &"x".repeat(MAX_TEXT_TEST))),
    ] {
        assert!(
            matches!(soap(&a, 200, &body), Err(AdapterError::MalformedReply(_))),
            "{}",
            &body[..body.len().min(120)]
        );
    }
    let h = HeaderMap::new();
    assert!(matches!(
        a.map_response(
            "fire-safety-inspection",
            reply(200, &h, &[0xff, 0xfe, b'<'])
        ),
        Err(AdapterError::MalformedReply(_))
    ));
    // Non-XML error page with a 503 is the department's status.
    assert_eq!(
        soap(&a, 503, "<html>"),
        Err(AdapterError::DepartmentStatus(503))
    );
}

const MAX_TEXT_TEST: usize = soap_xml::MAX_TEXT + 1;

#[test]
fn json_reply_missing_required_field_is_named() {
    let a = demo("market-supervision");
    let h = HeaderMap::new();
    let body =
        json!({"data": {"tyshxydm": "X", "qymc": "n", "fddbr": "r", "djzt": "存续"}}).to_string();
    assert_eq!(
        a.map_response("business-licence", reply(200, &h, body.as_bytes())),
        Err(AdapterError::FieldMissing {
            field: "valid_until".into()
        })
    );
}

#[test]
fn json_reply_wrong_types_are_named() {
    let a = demo("market-supervision");
    let h = HeaderMap::new();
    let base =
        json!({"tyshxydm": "X", "qymc": "n", "fddbr": "r", "yxqz": "2030-01-01", "djzt": "存续"});
    for (field, canonical, value) in [
        ("yxqz", "valid_until", json!(20300101)),
        ("yxqz", "valid_until", json!("2030-13-01")),
        ("qymc", "name", json!(["n"])),
        ("djzt", "status", json!("unknown-state")),
        ("clrq", "established_on", json!({"y": 2020})),
    ] {
        let mut d = base.clone();
        d[field] = value;
        let body = json!({ "data": d }).to_string();
        let got = a.map_response("business-licence", reply(200, &h, body.as_bytes()));
        assert!(
            matches!(&got, Err(AdapterError::FieldType { field: f, .. }) if f == canonical),
            "{field}: {got:?}"
        );
    }
    // Optional absent or null: omitted.
    let mut d = base.clone();
    d["zs"] = json!(null);
    let rec = a
        .map_response(
            "business-licence",
            reply(200, &h, json!({ "data": d }).to_string().as_bytes()),
        )
        .unwrap();
    assert!(!rec.contains_key("address"));
    assert!(!rec.contains_key("established_on"));
}

#[test]
fn json_reply_statuses_and_malformed_bodies() {
    let a = demo("market-supervision");
    let h = HeaderMap::new();
    assert_eq!(
        a.map_response("business-licence", reply(500, &h, b"{}")),
        Err(AdapterError::DepartmentStatus(500))
    );
    assert_eq!(
        a.map_response("business-licence", reply(302, &h, b"")),
        Err(AdapterError::DepartmentStatus(302))
    );
    for body in [
        &b"<html>oops</html>"[..],
        b"",
        b"{\"data\": ",
        b"{\"data\": []}",
        b"{\"other\": {}}",
    ] {
        assert!(
            matches!(
                a.map_response("business-licence", reply(200, &h, body)),
                Err(AdapterError::MalformedReply(_))
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        a.map_response("business-licence", reply(200, &h, deep.as_bytes())),
        Err(AdapterError::MalformedReply(_))
    ));
}

#[test]
fn missing_scenario_subject_is_reported() {
    let text = std::fs::read_to_string(root().join("adapters/public-security.toml"))
        .unwrap()
        .replace("id_no = \"{subject}\"", "id_no = \"{subject.guardian_id}\"");
    let a = compile("public-security", &text).unwrap();
    let r = Req::new();
    assert_eq!(
        a.build_request(&r.get("household-registration", "X"))
            .unwrap_err(),
        AdapterError::MissingInput("subject.guardian_id".into())
    );
}

#[test]
fn absent_optional_inputs_are_left_out() {
    let a = demo("market-supervision");
    let subjects = BTreeMap::new();
    let req = CanonicalRequest {
        dataset: "business-licence",
        subject: "91120116MA07Q8XJ2K",
        subjects: &subjects,
        purpose: "service-handling",
        case_id: None,
        end_user: None,
    };
    let up = a.build_request(&req).unwrap();
    assert_eq!(
        up.path_and_query,
        "/api/v2/licences/91120116MA07Q8XJ2K?purpose=service-handling"
    );
    assert!(up.headers.get("x-case-id").is_none());
}

#[test]
fn soap_compile_refusals() {
    let e = compile("fire-rescue", &SOAP_MIN.replace("\"1.2\"", "\"2.0\"")).unwrap_err();
    assert_eq!(fields_of(&e), vec!["soap_version"]);
    let e = compile(
        "fire-rescue",
        &SOAP_MIN.replace("<Code>{subject}</Code>", "<Code>{subject</Code>"),
    )
    .unwrap_err();
    assert_eq!(
        fields_of(&e),
        vec!["datasets.fire-safety-inspection.envelope"]
    );
    let e = compile(
        "fire-rescue",
        &SOAP_MIN.replace("<Code>{subject}</Code>", "<!-- {subject} -->"),
    )
    .unwrap_err();
    assert_eq!(
        fields_of(&e),
        vec!["datasets.fire-safety-inspection.envelope"]
    );
    let e = compile("fire-rescue", &SOAP_MIN.replace("urn:x:Get", "urn:x Get")).unwrap_err();
    assert_eq!(
        fields_of(&e),
        vec!["datasets.fire-safety-inspection.action"]
    );
    let e = compile(
        "fire-rescue",
        &SOAP_MIN.replace("Envelope/Body/GetResponse/Inspection", "Envelope//x"),
    )
    .unwrap_err();
    assert_eq!(
        fields_of(&e),
        vec!["datasets.fire-safety-inspection.response.record"]
    );
    let e = compile("fire-rescue", &SOAP_MIN.replace("e:Envelope", "e:Envelop")).unwrap_err();
    assert_eq!(
        fields_of(&e),
        vec!["datasets.fire-safety-inspection.envelope"]
    );
}
