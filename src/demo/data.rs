//! Synthetic records of the demo world (no real person or company).

use http::{Method, StatusCode};
use serde_json::json;

const JSON: &str = "application/json; charset=utf-8";
const XML: &str = "text/xml; charset=utf-8";

/// The full restaurant company: every record of the restaurant scenario.
pub const COMPANY_FULL: &str = "91120116MA07Q8XJ2K";
/// Licence and food permit, no fire-safety inspection yet.
pub const COMPANY_NO_FIRE: &str = "91120116MA07R3LP5D";
/// A revoked business licence.
pub const COMPANY_REVOKED: &str = "91120116MA07T6WN8F";
/// The newborn's birth medical certificate number.
pub const BIRTH_CERT: &str = "T120116202600001";
/// The guardian's ID number.
pub const GUARDIAN_ID: &str = "120116199203154527";

fn json(status: StatusCode, v: serde_json::Value) -> (StatusCode, &'static str, String) {
    (status, JSON, v.to_string())
}

fn last_segment<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)
        .filter(|s| !s.is_empty() && !s.contains('/'))
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Market supervision: `GET /api/v2/licences/{uscc}` (also the public
/// look-up `GET /licences/{uscc}`), `GET /api/v2/food-permits?tyshxydm=`;
/// pinyin-initial field names inside `{"code": "0000", "data": {...}}`.
pub fn market_supervision(
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> (StatusCode, &'static str, String) {
    let not_found = || {
        json(
            StatusCode::NOT_FOUND,
            json!({"code": "4040", "msg": "记录不存在"}),
        )
    };
    if method != Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"code": "4050", "msg": "仅支持查询"}),
        );
    }
    let licence =
        last_segment(path, "/api/v2/licences/").or_else(|| last_segment(path, "/licences/"));
    if let Some(uscc) = licence {
        let rec = match uscc {
            COMPANY_FULL => json!({
                "tyshxydm": COMPANY_FULL, "qymc": "天津港保税区海味轩餐饮管理有限公司",
                "fddbr": "李海燕", "qylx": "有限责任公司",
                "zs": "天津自贸试验区(天津港保税区)海滨八路56号",
                "jyfw": "餐饮服务;食品销售", "zczb": 500, "clrq": "2026-03-02",
                "yxqz": "2046-03-01", "djjg": "天津港保税区市场监督管理局", "djzt": "存续"
            }),
            COMPANY_NO_FIRE => json!({
                "tyshxydm": COMPANY_NO_FIRE, "qymc": "天津港保税区渤海湾小馆餐饮有限公司",
                "fddbr": "王建国", "qylx": "有限责任公司",
                "zs": "天津自贸试验区(天津港保税区)津滨大道160号",
                "jyfw": "餐饮服务", "zczb": 100, "clrq": "2026-05-18",
                "yxqz": "2046-05-17", "djjg": "天津港保税区市场监督管理局", "djzt": "存续"
            }),
            COMPANY_REVOKED => json!({
                "tyshxydm": COMPANY_REVOKED, "qymc": "天津港保税区旧港湾餐饮有限公司",
                "fddbr": "赵明", "qylx": "有限责任公司",
                "zs": "天津自贸试验区(天津港保税区)跃进路12号",
                "jyfw": "餐饮服务", "zczb": 50, "clrq": "2019-08-09",
                "yxqz": "2039-08-08", "djjg": "天津港保税区市场监督管理局", "djzt": "吊销"
            }),
            _ => return not_found(),
        };
        return json(StatusCode::OK, json!({"code": "0000", "data": rec}));
    }
    if path == "/api/v2/food-permits" {
        let uscc = query_param(query, "tyshxydm").unwrap_or_default();
        let (no, name, addr) = match uscc {
            COMPANY_FULL => (
                "JY11201160026031",
                "天津港保税区海味轩餐饮管理有限公司",
                "天津自贸试验区(天津港保税区)海滨八路56号",
            ),
            COMPANY_NO_FIRE => (
                "JY11201160026502",
                "天津港保税区渤海湾小馆餐饮有限公司",
                "天津自贸试验区(天津港保税区)津滨大道160号",
            ),
            _ => return not_found(),
        };
        return json(
            StatusCode::OK,
            json!({"code": "0000", "data": {
                "xkzbh": no, "jyzmc": name, "tyshxydm": uscc,
                "jyxm": "热食类食品制售", "jycs": addr,
                "fzrq": "2026-06-01", "yxqz": "2031-05-31", "fzjg": "天津港保税区市场监督管理局"
            }}),
        );
    }
    not_found()
}

/// Health commission: `POST /openapi/v1/health-certificates/query` with
/// `{"orgCode", "purpose", "caseId"}`, `GET /openapi/v1/birth-certificates/{no}`;
/// `{"code": 0, "message", "result": {...}}`, "no record" as code 40401.
pub fn health_commission(
    method: &Method,
    path: &str,
    body: &[u8],
) -> (StatusCode, &'static str, String) {
    let not_found = || {
        json(
            StatusCode::OK,
            json!({"code": 40401, "message": "no record", "result": null}),
        )
    };
    if method == Method::POST && path == "/openapi/v1/health-certificates/query" {
        let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let org = req
            .get("orgCode")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let (name, staff) = match org {
            COMPANY_FULL => (
                "天津港保税区海味轩餐饮管理有限公司",
                json!([
                    {"fullName": "李海燕", "certNo": "JKZ2026120116001", "jobType": "负责人", "issueDate": "2026-03-10", "expiryDate": "2027-03-09"},
                    {"fullName": "陈小川", "certNo": "JKZ2026120116002", "jobType": "厨师", "issueDate": "2026-03-10", "expiryDate": "2027-03-09"},
                    {"fullName": "刘芳", "certNo": "JKZ2026120116003", "jobType": "服务员", "issueDate": "2026-04-02", "expiryDate": "2027-04-01"}
                ]),
            ),
            COMPANY_NO_FIRE => (
                "天津港保税区渤海湾小馆餐饮有限公司",
                json!([
                    {"fullName": "王建国", "certNo": "JKZ2026120116101", "jobType": "负责人", "issueDate": "2026-05-20", "expiryDate": "2027-05-19"}
                ]),
            ),
            _ => return not_found(),
        };
        let total = staff.as_array().map_or(0, Vec::len);
        return json(
            StatusCode::OK,
            json!({"code": 0, "message": "ok", "result": {"orgCode": org, "orgName": name, "total": total, "staff": staff}}),
        );
    }
    if method == Method::GET
        && let Some(no) = last_segment(path, "/openapi/v1/birth-certificates/")
    {
        if no != BIRTH_CERT {
            return not_found();
        }
        return json(
            StatusCode::OK,
            json!({"code": 0, "message": "ok", "result": {
                "certNo": BIRTH_CERT,
                "newborn": {"name": "张小禾", "gender": "F", "birthDate": "2026-11-20", "birthPlace": "天津市滨海新区", "weightGrams": 3350},
                "mother": {"name": "张丽", "idNumber": GUARDIAN_ID},
                "father": {"name": "陈东", "idNumber": "120116199005210036"},
                "institution": "天津港保税区妇产医院"
            }}),
        );
    }
    json(
        StatusCode::NOT_FOUND,
        json!({"code": 40400, "message": "no such API"}),
    )
}

/// Public security: `GET /gaapi/v1/households?id_no=`;
/// `{"ret": 0, "msg", "data": {...}}`, unknown person 404.
pub fn public_security(
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> (StatusCode, &'static str, String) {
    if method != Method::GET || path != "/gaapi/v1/households" {
        return json(
            StatusCode::NOT_FOUND,
            json!({"ret": 404, "msg": "no such resource"}),
        );
    }
    if query_param(query, "id_no") != Some(GUARDIAN_ID) {
        return json(
            StatusCode::NOT_FOUND,
            json!({"ret": 404, "msg": "household not found"}),
        );
    }
    json(
        StatusCode::OK,
        json!({"ret": 0, "msg": "ok", "data": {
            "id_no": GUARDIAN_ID, "household_no": "120116-2019-004512", "head_name": "张丽",
            "registered_address": "天津市滨海新区新港街道海运里3号",
            "police_station": "天津港保税区派出所",
            "members": [{"name": "张丽", "relation": "户主"}, {"name": "陈东", "relation": "配偶"}]
        }}),
    )
}

/// Ecology and environment: `GET /eco-api/v3/enforcement/penalties?unifiedCode=`;
/// camelCase inside `{"success": true, "errorCode": null, "payload": {...}}`.
/// A company without administrative penalties has an empty `penaltyList`
/// (the department keeps penalties, not registrations: any well-formed
/// code is answered). A malformed code: HTTP 400 with `success: false`.
pub fn ecology_environment(
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> (StatusCode, &'static str, String) {
    if method != Method::GET || path != "/eco-api/v3/enforcement/penalties" {
        return json(
            StatusCode::NOT_FOUND,
            json!({"success": false, "errorCode": "E404", "payload": null}),
        );
    }
    let code = query_param(query, "unifiedCode").unwrap_or_default();
    if code.len() != 18 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return json(
            StatusCode::BAD_REQUEST,
            json!({"success": false, "errorCode": "E400", "payload": null}),
        );
    }
    let penalties = if code == COMPANY_REVOKED {
        json!([{
            "documentNo": "津保环罚〔2025〕17号",
            "violation": "未按规定设置油烟净化设施，餐饮油烟超标排放",
            "penaltyType": "罚款",
            "amountYuan": 30000,
            "decisionDate": "2025-09-18",
            "authority": "天津港保税区生态环境局",
            "rectified": false
        }])
    } else {
        json!([])
    };
    let count = penalties.as_array().map_or(0, Vec::len);
    json(
        StatusCode::OK,
        json!({"success": true, "errorCode": null, "payload": {
            "unifiedCode": code, "penaltyCount": count, "penaltyList": penalties,
            "queriedAt": "2026-11-30T09:00:00+08:00"
        }}),
    )
}

/// Fire and rescue: SOAP 1.1 at `POST /services/FireSafetyInspection`,
/// `SOAPAction: "urn:fire-rescue:GetInspection"`; unknown company: a Fault
/// whose faultstring starts with `NO_RECORD`.
pub fn fire_rescue(method: &Method, path: &str, body: &[u8]) -> (StatusCode, &'static str, String) {
    if method != Method::POST || path != "/services/FireSafetyInspection" {
        return fault("soap:Client", "UNKNOWN_OPERATION");
    }
    let body = String::from_utf8_lossy(body);
    let uscc = body
        .split("CreditCode>")
        .nth(1)
        .and_then(|s| s.split("</").next())
        .unwrap_or_default();
    if uscc != COMPANY_FULL {
        return fault("soap:Client", "NO_RECORD: no inspection on file");
    }
    let xml = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <GetInspectionResponse xmlns="urn:fire-rescue:inspection">
      <Inspection>
        <InspectionNo>TJFR-BSQ-2026-0412</InspectionNo>
        <CreditCode>{COMPANY_FULL}</CreditCode>
        <PremisesAddress>天津自贸试验区(天津港保税区)海滨八路56号</PremisesAddress>
        <InspectionDate>2026-04-12</InspectionDate>
        <Conclusion>合格</Conclusion>
        <MaxOccupancy>80</MaxOccupancy>
        <ValidUntil>2027-04-11</ValidUntil>
      </Inspection>
    </GetInspectionResponse>
  </soap:Body>
</soap:Envelope>"#
    );
    (StatusCode::OK, XML, xml)
}

fn fault(code: &str, text: &str) -> (StatusCode, &'static str, String) {
    let xml = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <soap:Fault><faultcode>{code}</faultcode><faultstring>{text}</faultstring></soap:Fault>
  </soap:Body>
</soap:Envelope>"#
    );
    (StatusCode::INTERNAL_SERVER_ERROR, XML, xml)
}
