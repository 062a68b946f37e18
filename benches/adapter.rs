//! Translation cost per call: build_request and map_response for the demo
//! rest-json (market-supervision) and soap-xml (fire-rescue) adapters.

#![allow(clippy::unwrap_used)] // a bench aborts on setup failure

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, StatusCode};
use onewindow::adapter::{
    AdapterRegistry, AdapterSpec, CanonicalRequest, CompileContext, DepartmentAdapter,
    UpstreamReply,
};
use onewindow::config::Datasets;

fn adapter(department: &str, text: &str) -> DepartmentAdapter {
    let datasets = Datasets::from_toml(
        Path::new("config/datasets.toml"),
        include_str!("../config/datasets.toml"),
        &|_| true,
    )
    .unwrap();
    let registry = AdapterRegistry::builtin();
    let file = Path::new("adapters/x.toml");
    let cx = CompileContext {
        file,
        expected_department: department,
        datasets: &datasets,
        registry: &registry,
        secret: &|_| None,
    };
    AdapterSpec::from_toml(file, text)
        .unwrap()
        .compile(&cx)
        .unwrap()
}

const LICENCE: &str = r#"{"code":"0000","data":{"tyshxydm":"91120116MA07Q8XJ2K","qymc":"滨海小馆餐饮有限公司","fddbr":"王芳","zs":"天津市滨海新区某路1号","jyfw":"餐饮服务；食品销售","clrq":"2024-03-12","yxqz":"2044-03-11","djzt":"存续"}}"#;

const INSPECTION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <fr:GetInspectionResponse xmlns:fr="urn:fire-rescue:inspection">
      <fr:Inspection>
        <fr:InspectionNo>XF-2026-0042</fr:InspectionNo>
        <fr:CreditCode>91120116MA07Q8XJ2K</fr:CreditCode>
        <fr:PremisesAddress>天津市滨海新区某路1号</fr:PremisesAddress>
        <fr:InspectionDate>2026-01-20</fr:InspectionDate>
        <fr:Conclusion>合格</fr:Conclusion>
        <fr:MaxOccupancy>80</fr:MaxOccupancy>
        <fr:ValidUntil>2027-01-19</fr:ValidUntil>
      </fr:Inspection>
    </fr:GetInspectionResponse>
  </soap:Body>
</soap:Envelope>"#;

fn bench(c: &mut Criterion) {
    let rest = adapter(
        "market-supervision",
        include_str!("../adapters/market-supervision.toml"),
    );
    let soap = adapter("fire-rescue", include_str!("../adapters/fire-rescue.toml"));
    let subjects = BTreeMap::new();
    let req = |dataset| CanonicalRequest {
        dataset,
        subject: "91120116MA07Q8XJ2K",
        subjects: &subjects,
        purpose: "service-handling",
        case_id: Some("CASE-2026-001"),
        end_user: Some("clerk-07"),
    };
    let headers = HeaderMap::new();
    let reply = |body: &'static str| UpstreamReply {
        status: StatusCode::OK,
        headers: &headers,
        body: body.as_bytes(),
    };

    c.bench_function("rest-json build_request", |b| {
        let r = req("business-licence");
        b.iter(|| rest.build_request(black_box(&r)).unwrap())
    });
    c.bench_function("rest-json map_response", |b| {
        b.iter(|| {
            rest.map_response("business-licence", black_box(reply(LICENCE)))
                .unwrap()
        })
    });
    c.bench_function("soap-xml build_request", |b| {
        let r = req("fire-safety-inspection");
        b.iter(|| soap.build_request(black_box(&r)).unwrap())
    });
    c.bench_function("soap-xml map_response", |b| {
        b.iter(|| {
            soap.map_response("fire-safety-inspection", black_box(reply(INSPECTION)))
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
