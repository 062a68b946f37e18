//! Property tests: template rendering per target and the reply mappers of
//! both adapter kinds, on arbitrary input.

use std::collections::BTreeMap;

use http::HeaderMap;
use proptest::prelude::*;

use super::{CanonicalRequest, DepartmentAdapter};

/// The demo adapters, compiled once for all cases.
static ADAPTERS: std::sync::LazyLock<[DepartmentAdapter; 2]> =
    std::sync::LazyLock::new(|| [demo("market-supervision"), demo("fire-rescue")]);
use super::template::{Target, Template};
use super::tests::{demo, reply};

fn req<'a>(subject: &'a str, subjects: &'a BTreeMap<String, String>) -> CanonicalRequest<'a> {
    CanonicalRequest {
        dataset: "business-licence",
        subject,
        subjects,
        purpose: "service-handling",
        case_id: Some(subject),
        end_user: Some(subject),
    }
}

/// Any string, with the characters that matter to each target over-weighted.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just('/'),
                Just('?'),
                Just('#'),
                Just('%'),
                Just('&'),
                Just('='),
                Just('.'),
                Just('<'),
                Just('>'),
                Just('"'),
                Just('\''),
                Just('\\'),
                Just(']'),
                Just('\r'),
                Just('\n'),
                Just('\0'),
                Just(';'),
                Just('+'),
                Just(' '),
                Just('中'),
                Just('\u{2028}'),
                Just('\u{fffe}'),
                proptest::char::range('a', 'z'),
            ],
            0..24
        )
        .prop_map(|v| v.into_iter().collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // A rendered path segment never holds `/`, `?` or `#` (nor a raw `%`
    // that is not an escape): the value cannot change the path's structure.
    #[test]
    fn path_segment_never_holds_a_separator(v in value()) {
        let m = BTreeMap::new();
        let t = Template::compile("/api/{subject}/x", Target::Path).unwrap();
        if let Ok(out) = t.render(&req(&v, &m)) {
            let mid = out.strip_prefix("/api/").unwrap().strip_suffix("/x").unwrap();
            prop_assert!(!mid.contains(['/', '?', '#']), "{v:?} -> {out}");
            prop_assert!(mid != "." && mid != "..");
            let back = percent_encoding::percent_decode_str(mid).decode_utf8().unwrap();
            prop_assert_eq!(back, v.as_str());
        }
    }

    // A rendered query value decodes back to the value and never holds a
    // raw `&`, `=`, `#` or space.
    #[test]
    fn query_value_round_trips(v in value()) {
        let m = BTreeMap::new();
        let t = Template::compile("{subject}", Target::Query).unwrap();
        let out = t.render(&req(&v, &m)).unwrap();
        prop_assert!(!out.contains(['&', '=', '#', ' ', '+', '?']), "{v:?} -> {out}");
        let back = percent_encoding::percent_decode_str(&out).decode_utf8().unwrap();
        prop_assert_eq!(back, v.as_str());
    }

    // A rendered JSON value parses as the same string, and the document keeps
    // its shape (no injected keys).
    #[test]
    fn json_value_parses_as_the_same_string(v in value()) {
        let m = BTreeMap::new();
        let t = Template::compile(r#"{"code": {subject}, "case": {case_id}}"#, Target::Json)
            .unwrap();
        let out = t.render(&req(&v, &m)).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        let obj = doc.as_object().unwrap();
        prop_assert_eq!(obj.len(), 2);
        prop_assert_eq!(obj["code"].as_str(), Some(v.as_str()));
    }

    // A rendered XML value never breaks out of its element: the result parses
    // (quick-xml), the element holds text only, and the text unescapes to the
    // value. Values XML 1.0 cannot carry are refused, never written.
    #[test]
    fn xml_value_stays_in_its_element(v in value()) {
        let m = BTreeMap::new();
        let t = Template::compile("<r><code>{subject}</code><n>1</n></r>", Target::Xml).unwrap();
        let Ok(out) = t.render(&req(&v, &m)) else {
            prop_assert!(v.chars().any(|c| !super::xml::is_xml10_char(c)), "{v:?} refused");
            return Ok(());
        };
        use quick_xml::events::Event;
        let mut r = quick_xml::Reader::from_str(&out);
        let mut depth = 0usize;
        let mut elements = Vec::new();
        let mut text = String::new();
        loop {
            match r.read_event() {
                Ok(Event::Start(e)) => {
                    depth += 1;
                    elements.push(e.local_name().as_ref().to_string());
                }
                Ok(Event::End(_)) => {
                    depth -= 1;
                    // Only the text of <code> is the value.
                    if depth == 1 {
                        elements.push("/".into());
                    }
                }
                Ok(Event::Text(t)) if depth == 2 && elements.len() == 2 => text.push_str(&t.xml10_content()),
                Ok(Event::CData(c)) if depth == 2 && elements.len() == 2 => text.push_str(&c.xml10_content()),
                Ok(Event::GeneralRef(g)) if depth == 2 && elements.len() == 2 => {
                    let c = match &*g {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "quot" => '"',
                        "apos" => '\'',
                        name => g
                            .resolve_char_ref()
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| panic!("unknown reference &{name}; in {out}")),
                    };
                    text.push(c);
                }
                Ok(Event::Eof) => break,
                Ok(Event::Empty(_)) => prop_assert!(false, "{v:?} -> {out}"),
                Ok(_) => {}
                Err(e) => prop_assert!(false, "{v:?} -> {out}: {e}"),
            }
        }
        prop_assert_eq!(elements, vec!["r", "code", "/", "n", "/"], "{} -> {}", v, out);
        prop_assert_eq!(text, v);
    }

    // The reply mappers never panic on arbitrary bytes, whatever the status.
    #[test]
    fn reply_mappers_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        status in prop_oneof![Just(200u16), Just(404), Just(500), 100u16..600],
    ) {
        let h = HeaderMap::new();
        for (a, dataset) in ADAPTERS.iter().zip(["business-licence", "fire-safety-inspection"]) {
            let _ = a.map_response(dataset, reply(status, &h, &body));
        }
    }

    // Near-miss replies (valid JSON or XML of the wrong shape) never panic
    // either.
    #[test]
    fn reply_mappers_never_panic_on_structured_input(v in value(), n in any::<i64>()) {
        let h = HeaderMap::new();
        let json = serde_json::json!({"data": {"uscc": v, "name": n, "status": [v]}, "code": n});
        let [rest, fire] = &*ADAPTERS;
        let _ = rest.map_response("business-licence", reply(200, &h, json.to_string().as_bytes()));
        let mut esc = String::new();
        let _ = super::xml::write_escaped(&v, &mut esc);
        let soap = format!(
            "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
             <r><code>{esc}</code><n>{n}</n></r></soap:Body></soap:Envelope>"
        );
        for status in [200, 500] {
            let _ = fire.map_response("fire-safety-inspection", reply(status, &h, soap.as_bytes()));
        }
    }
}
