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

/// Market supervision: `GET /licences/{uscc}`, `GET /food-permits/{uscc}`;
/// pinyin-initial field names inside `{"code": 0, "data": {...}}`.
pub fn market_supervision(method: &Method, path: &str) -> (StatusCode, &'static str, String) {
    let not_found = || {
        json(
            StatusCode::NOT_FOUND,
            json!({"code": 404, "msg": "记录不存在"}),
        )
    };
    if method != Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"code": 405, "msg": "仅支持查询"}),
        );
    }
    if let Some(uscc) = last_segment(path, "/licences/") {
        let rec = match uscc {
            COMPANY_FULL => json!({
                "tyshxydm": COMPANY_FULL, "qymc": "天津港保税区海味轩餐饮管理有限公司",
                "fddbr": "李海燕", "qylx": "有限责任公司",
                "zs": "天津自贸试验区(天津港保税区)海滨八路56号",
                "jyfw": "餐饮服务;食品销售", "zczb": 500, "clrq": "2026-03-02",
                "yxqz": "2046-03-01", "djjg": "天津港保税区市场监督管理局", "djzt": "存续", "djztdm": "active"
            }),
            COMPANY_NO_FIRE => json!({
                "tyshxydm": COMPANY_NO_FIRE, "qymc": "天津港保税区渤海湾小馆餐饮有限公司",
                "fddbr": "王建国", "qylx": "有限责任公司",
                "zs": "天津自贸试验区(天津港保税区)津滨大道160号",
                "jyfw": "餐饮服务", "zczb": 100, "clrq": "2026-05-18",
                "yxqz": "2046-05-17", "djjg": "天津港保税区市场监督管理局", "djzt": "存续", "djztdm": "active"
            }),
            COMPANY_REVOKED => json!({
                "tyshxydm": COMPANY_REVOKED, "qymc": "天津港保税区旧港湾餐饮有限公司",
                "fddbr": "赵明", "qylx": "有限责任公司",
                "zs": "天津自贸试验区(天津港保税区)跃进路12号",
                "jyfw": "餐饮服务", "zczb": 50, "clrq": "2019-08-09",
                "yxqz": "2039-08-08", "djjg": "天津港保税区市场监督管理局", "djzt": "吊销", "djztdm": "revoked"
            }),
            _ => return not_found(),
        };
        return json(StatusCode::OK, json!({"code": 0, "data": rec}));
    }
    if let Some(uscc) = last_segment(path, "/food-permits/") {
        let (no, name) = match uscc {
            COMPANY_FULL => ("JY11201160026031", "天津港保税区海味轩餐饮管理有限公司"),
            COMPANY_NO_FIRE => ("JY11201160026502", "天津港保税区渤海湾小馆餐饮有限公司"),
            _ => return not_found(),
        };
        return json(
            StatusCode::OK,
            json!({"code": 0, "data": {
                "xkzbh": no, "jyzmc": name, "tyshxydm": uscc,
                "jyxm": "热食类食品制售", "jycs": "天津自贸试验区(天津港保税区)",
                "fzrq": "2026-06-01", "yxqz": "2031-05-31", "fzjg": "天津港保税区市场监督管理局"
            }}),
        );
    }
    not_found()
}

/// Health commission: `GET /api/health-certificates?orgCode=`,
/// `GET /api/birth-certificates/{no}`; `{"status": "OK", "result": {...}}`.
pub fn health_commission(
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> (StatusCode, &'static str, String) {
    let not_found = || {
        json(
            StatusCode::NOT_FOUND,
            json!({"status": "NOT_FOUND", "result": null}),
        )
    };
    if method != Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"status": "METHOD_NOT_ALLOWED"}),
        );
    }
    if path == "/api/health-certificates" {
        let staff = match query_param(query, "orgCode") {
            Some(COMPANY_FULL) => json!([
                {"name": "李海燕", "certNo": "JKZ2026120116001", "post": "负责人", "validTo": "2027-03-10"},
                {"name": "陈小川", "certNo": "JKZ2026120116002", "post": "厨师", "validTo": "2027-03-10"},
                {"name": "刘芳", "certNo": "JKZ2026120116003", "post": "服务员", "validTo": "2027-04-02"}
            ]),
            Some(COMPANY_NO_FIRE) => json!([
                {"name": "王建国", "certNo": "JKZ2026120116101", "post": "负责人", "validTo": "2027-05-20"}
            ]),
            _ => return not_found(),
        };
        let org = query_param(query, "orgCode").unwrap_or_default();
        return json(
            StatusCode::OK,
            json!({"status": "OK", "result": {"orgCode": org, "staffCount": staff.as_array().map_or(0, |a| a.len()), "staff": staff}}),
        );
    }
    if let Some(no) = last_segment(path, "/api/birth-certificates/") {
        if no != BIRTH_CERT {
            return not_found();
        }
        return json(
            StatusCode::OK,
            json!({"status": "OK", "result": {
                "certificateNo": BIRTH_CERT, "newborn": {"name": "张小禾", "gender": "F", "birthDate": "2026-11-20"},
                "birthPlace": "天津市滨海新区", "institution": "天津港保税区妇产医院",
                "mother": {"name": "张丽", "idMasked": "120116199203****27"}
            }}),
        );
    }
    not_found()
}

/// Public security: `GET /hukou/households?guardianId=`.
pub fn public_security(
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> (StatusCode, &'static str, String) {
    if method != Method::GET || path != "/hukou/households" {
        return json(StatusCode::NOT_FOUND, json!({"error": "no such resource"}));
    }
    if query_param(query, "guardianId") != Some(GUARDIAN_ID) {
        return json(
            StatusCode::NOT_FOUND,
            json!({"error": "household not found"}),
        );
    }
    json(
        StatusCode::OK,
        json!({"household": {
            "householdNo": "120116-2019-004512", "headName": "张丽", "relationToHead": "本人",
            "address": "天津市滨海新区新港街道海运里3号", "memberCount": 2,
            "registeredOn": "2019-07-01", "policeStation": "天津港保税区派出所"
        }}),
    )
}

/// Fire and rescue: SOAP 1.1 at `POST /services/InspectionService`,
/// `SOAPAction: "urn:fire-rescue:GetInspection"`.
pub fn fire_rescue(method: &Method, path: &str, body: &[u8]) -> (StatusCode, &'static str, String) {
    if method != Method::POST || path != "/services/InspectionService" {
        return fault("soap:Client", "UnknownOperation");
    }
    let body = String::from_utf8_lossy(body);
    let uscc = body
        .split("<Uscc>")
        .nth(1)
        .and_then(|s| s.split("</Uscc>").next())
        .unwrap_or_default();
    if uscc != COMPANY_FULL {
        return fault("soap:Client", "InspectionNotFound");
    }
    let xml = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <GetInspectionResponse xmlns="urn:fire-rescue">
      <Inspection>
        <InspectionNo>TJFR-BSQ-2026-0412</InspectionNo>
        <Uscc>{COMPANY_FULL}</Uscc>
        <PremisesAddress>天津自贸试验区(天津港保税区)海滨八路56号</PremisesAddress>
        <Result>PASSED</Result>
        <InspectedOn>2026-04-12</InspectedOn>
        <ValidUntil>2027-04-11</ValidUntil>
        <Authority>天津港保税区消防救援支队</Authority>
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
