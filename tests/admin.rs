//! Issue "Adapters that departments own", end to end through the admin
//! plane: department admins read, replace and remove their adapter; refused
//! changes change nothing; SSRF base URLs; hostile subjects; SOAP faults;
//! replacement under load; reload; the OpenAPI document; audit of changes.

// `useless_format`: a pre-existing lint in tests/common/mod.rs (append-only for helpers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::useless_format)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Answer, FULL, MockDept, NO_FIRE, REVOKED, World, raw_status, rewrite_base_url};
use http::Method;

const MS: &str = "market-supervision";

/// A market-supervision mock that knows every company: the licence's `qymc`
/// is "`tag` `subject`" and `qymc2` is "ALT `subject`".
async fn licence_mock(tag: &'static str) -> MockDept {
    MockDept::start(move |req| {
        let path = req.target.split('?').next().unwrap_or_default();
        match path.strip_prefix("/api/v2/licences/") {
            Some(subject) if !subject.is_empty() => {
                let body = serde_json::json!({"code": "0000", "data": {
                    "tyshxydm": subject, "qymc": format!("{tag} {subject}"),
                    "qymc2": format!("ALT {subject}"), "fddbr": "Li", "zs": "Harbour Rd 1",
                    "jyfw": "catering", "clrq": "2020-01-01", "yxqz": "2040-01-01",
                    "djzt": "存续",
                }});
                (200, "application/json".into(), body.to_string())
            }
            _ => (404, "application/json".into(), r#"{"code":"4040"}"#.into()),
        }
    })
    .await
}

/// A fresh, valid company id (so the shared cache never hides the adapter).
fn company(n: usize) -> String {
    format!("91120116MA{n:08}")
}

/// Readers of `business-licence` running until told to stop, each answer
/// checked: 200 with either field naming ("ONE s" from `qymc`, "ALT s" from
/// `qymc2`). Fresh subjects from `first` on reach the department; with
/// `one_cached`, the first reader keeps reading one subject (a cache hit).
struct Readers {
    done: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Readers {
    fn start(w: &Arc<World>, n: usize, one_cached: bool, first: usize) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(first));
        let tasks = (0..n)
            .map(|r| {
                let (w, done, next) = (w.clone(), done.clone(), next.clone());
                tokio::spawn(async move {
                    let t = portal(&w);
                    let mut reads = 0usize;
                    let mut failures = Vec::new();
                    loop {
                        let last = done.load(Ordering::SeqCst);
                        let s = company(if one_cached && r == 0 {
                            1
                        } else {
                            next.fetch_add(1, Ordering::SeqCst)
                        });
                        let a = w
                            .read(&format!("/v1/datasets/business-licence/{s}"), &t)
                            .await;
                        reads += 1;
                        let name = if a.status == 200 {
                            a.json()["record"]["name"].as_str().map(str::to_string)
                        } else {
                            None
                        };
                        if name != Some(format!("ONE {s}")) && name != Some(format!("ALT {s}")) {
                            failures.push(format!("{} {}", a.status, a.text()));
                        }
                        if last {
                            return (reads, failures);
                        }
                    }
                })
            })
            .collect();
        Self { done, tasks }
    }

    /// Stops the readers (each makes one more read), asserts that no read
    /// failed, and returns how many there were.
    async fn finish(self) -> usize {
        self.done.store(true, Ordering::SeqCst);
        let mut total = 0;
        for t in self.tasks {
            let (reads, failures) = t.await.unwrap();
            assert!(
                failures.is_empty(),
                "{} failed reads: {:?}",
                failures.len(),
                &failures[..failures.len().min(3)]
            );
            total += reads;
        }
        total
    }
}

/// The demo world with market supervision served by [`licence_mock`]("ONE").
async fn licence_world() -> World {
    World::builder()
        .mock(MS, licence_mock("ONE").await)
        .start()
        .await
}

fn ms_admin(w: &World) -> String {
    w.token(
        "market-supervision-admin",
        &["department-admin"],
        Some("market-supervision"),
    )
}

fn platform(w: &World) -> String {
    w.token("platform-admin", &["platform-admin"], None)
}

fn auditor(w: &World) -> String {
    w.token("auditor", &["auditor"], None)
}

fn portal(w: &World) -> String {
    w.token("portal-binhai", &[], None)
}

fn adapter_file(w: &World, dept: &str) -> PathBuf {
    w.root().join(format!("adapters/{dept}.toml"))
}

async fn put(
    w: &World,
    dept: &str,
    token: &str,
    ctype: &str,
    body: impl Into<bytes::Bytes>,
) -> Answer {
    w.send(
        Method::PUT,
        &format!("/admin/adapters/{dept}"),
        Some(token),
        &[("content-type", ctype)],
        body,
    )
    .await
}

async fn licence_name(w: &World, subject: &str) -> Answer {
    w.read(
        &format!("/v1/datasets/business-licence/{subject}"),
        &portal(w),
    )
    .await
}

fn name_of(a: &Answer) -> String {
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["record"]["name"].as_str().unwrap().to_string()
}

fn assert_problem(a: &Answer, status: &[u16], what: &str) -> String {
    assert!(
        status.contains(&a.status.as_u16()),
        "{what}: {} {}",
        a.status,
        a.text()
    );
    assert_eq!(
        a.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    let detail = a.json()["detail"].as_str().unwrap_or_default().to_string();
    assert!(!detail.is_empty(), "{what}: no detail");
    detail
}

// A department admin reads its adapter, replaces it (TOML, then JSON), sees
// the change on the next read, deletes it (reads 503), and registers it again.
#[tokio::test]
async fn a_department_admin_owns_its_adapter() {
    let second = licence_mock("TWO").await;
    let w = licence_world().await;
    let t = ms_admin(&w);
    let file = adapter_file(&w, MS);
    let original = std::fs::read_to_string(&file).unwrap();

    let a = w
        .send(
            Method::GET,
            "/admin/adapters/market-supervision",
            Some(&t),
            &[],
            "",
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/toml"));
    assert_eq!(a.text(), original);
    assert_eq!(
        name_of(&licence_name(&w, &company(1)).await),
        format!("ONE {}", company(1))
    );

    // TOML PUT: another department server.
    let v2 = rewrite_base_url(&original, &second.base_url());
    let a = put(&w, MS, &t, "application/toml", v2.clone()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["department"], MS);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), v2);
    assert_eq!(
        name_of(&licence_name(&w, &company(2)).await),
        format!("TWO {}", company(2))
    );
    assert_eq!(second.calls(), 1);

    // JSON PUT of the same schema: a changed mapping.
    let v3 = v2.replace("name = \"/qymc\"", "name = \"/qymc2\"");
    assert_ne!(v3, v2);
    let json: serde_json::Value = toml::from_str(&v3).unwrap();
    let a = put(&w, MS, &t, "application/json", json.to_string()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let stored = std::fs::read_to_string(&file).unwrap();
    let back: serde_json::Value = toml::from_str(&stored).expect("stored as TOML");
    assert_eq!(back, json);
    let a = w
        .send(
            Method::GET,
            "/admin/adapters/market-supervision",
            Some(&t),
            &[],
            "",
        )
        .await;
    assert_eq!(a.text(), stored);
    assert_eq!(
        name_of(&licence_name(&w, &company(3)).await),
        format!("ALT {}", company(3))
    );

    // DELETE: the file goes, reads are 503, the listing forgets it.
    let a = w
        .send(
            Method::DELETE,
            "/admin/adapters/market-supervision",
            Some(&t),
            &[],
            "",
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text());
    assert!(!file.exists());
    let a = licence_name(&w, &company(4)).await;
    assert_problem(&a, &[503], "read after delete");
    let a = w
        .send(Method::GET, "/admin/adapters", Some(&platform(&w)), &[], "")
        .await;
    assert_eq!(a.status, 200);
    let listed: Vec<String> = a.json()["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["department"].as_str().unwrap().to_string())
        .collect();
    assert!(!listed.contains(&MS.to_string()), "{listed:?}");
    assert_eq!(listed.len(), 5);
    let a = w
        .send(
            Method::GET,
            "/admin/adapters/market-supervision",
            Some(&t),
            &[],
            "",
        )
        .await;
    assert_problem(&a, &[404], "GET after delete");
    let a = w
        .send(
            Method::DELETE,
            "/admin/adapters/market-supervision",
            Some(&t),
            &[],
            "",
        )
        .await;
    assert_problem(&a, &[404], "second delete");

    // Registered again: reads work again.
    let a = put(&w, MS, &t, "application/toml", original.clone()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    assert_eq!(
        name_of(&licence_name(&w, &company(5)).await),
        format!("ONE {}", company(5))
    );
}

// GET /admin/adapters: the platform admin sees all five, a department admin its own.
#[tokio::test]
async fn the_adapter_listing_is_scoped_to_the_caller() {
    let w = World::demo().await;
    let list = |a: Answer| -> BTreeSet<String> {
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["adapters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["department"].as_str().unwrap().to_string())
            .collect()
    };
    let all = list(
        w.send(Method::GET, "/admin/adapters", Some(&platform(&w)), &[], "")
            .await,
    );
    assert_eq!(
        all,
        [
            "ecology-environment",
            "fire-rescue",
            "health-commission",
            "market-supervision",
            "public-security",
            "tax"
        ]
        .map(String::from)
        .into()
    );
    for dept in ["market-supervision", "fire-rescue"] {
        let t = w.token(&format!("{dept}-admin"), &["department-admin"], Some(dept));
        let own = list(
            w.send(Method::GET, "/admin/adapters", Some(&t), &[], "")
                .await,
        );
        assert_eq!(own, [dept.to_string()].into());
    }
    let a = w
        .send(Method::GET, "/admin/adapters", Some(&auditor(&w)), &[], "")
        .await;
    assert_problem(&a, &[403], "auditor listing adapters");
}

// Refused PUTs change nothing: another department's admin, malformed TOML,
// unknown kind, leftover key, unknown canonical field, unclosed placeholder,
// a 10 MB body, wrong department, not UTF-8, bad JSON.
#[tokio::test]
async fn refused_puts_change_nothing() {
    let w = licence_world().await;
    let t = ms_admin(&w);
    let file = adapter_file(&w, MS);
    let original = std::fs::read(&file).unwrap();
    let text = String::from_utf8(original.clone()).unwrap();
    let with_top = |line: &str| {
        text.replace(
            "kind = \"rest-json\"\n",
            &format!("kind = \"rest-json\"\n{line}\n"),
        )
    };
    let mut n = 100;
    let mut still_serving = async |what: &str| {
        assert_eq!(
            std::fs::read(&file).unwrap(),
            original,
            "{what}: file changed"
        );
        n += 1;
        let a = licence_name(&w, &company(n)).await;
        assert_eq!(name_of(&a), format!("ONE {}", company(n)), "{what}");
    };

    let other = w.token(
        "health-commission-admin",
        &["department-admin"],
        Some("health-commission"),
    );
    let a = put(&w, MS, &other, "application/toml", text.clone()).await;
    assert_problem(&a, &[403], "other department's admin");
    still_serving("other admin").await;

    let cases: Vec<(&str, String, &str, &[&str])> = vec![
        (
            "malformed TOML",
            "department = \n[[[".to_string(),
            "application/toml",
            &[],
        ),
        (
            "unknown kind",
            text.replace("kind = \"rest-json\"", "kind = \"graphql\""),
            "application/toml",
            &["kind"],
        ),
        (
            "leftover key",
            with_top("colour = \"blue\""),
            "application/toml",
            &["colour"],
        ),
        (
            "leftover key in a dataset",
            text.replace(
                "[datasets.business-licence]\n",
                "[datasets.business-licence]\nretries = 3\n",
            ),
            "application/toml",
            &["retries"],
        ),
        (
            "unknown canonical field",
            text.replace(
                "uscc = \"/tyshxydm\"",
                "uscc = \"/tyshxydm\"\nfavourite_colour = \"/x\"",
            ),
            "application/toml",
            &["favourite_colour"],
        ),
        (
            "unknown dataset",
            format!(
                "{text}\n[datasets.tax-records]\nmethod = \"GET\"\npath = \"/x\"\n[datasets.tax-records.response]\nrecord = \"/data\"\n[datasets.tax-records.response.fields]\nuscc = \"/a\"\n"
            ),
            "application/toml",
            &["tax-records"],
        ),
        (
            "unclosed placeholder",
            text.replace("/api/v2/licences/{subject}", "/api/v2/licences/{subject"),
            "application/toml",
            &["path"],
        ),
        (
            "unknown placeholder",
            text.replace("/api/v2/licences/{subject}", "/api/v2/licences/{password}"),
            "application/toml",
            &["password"],
        ),
        (
            "another department's name",
            text.replace(
                "department = \"market-supervision\"",
                "department = \"health-commission\"",
            ),
            "application/toml",
            &["department"],
        ),
        (
            "missing base_url",
            text.lines()
                .filter(|l| !l.starts_with("base_url"))
                .collect::<Vec<_>>()
                .join("\n"),
            "application/toml",
            &["base_url"],
        ),
        (
            "bad JSON",
            "{\"department\": ".to_string(),
            "application/json",
            &[],
        ),
        (
            "JSON with a leftover key",
            {
                let mut v: serde_json::Value = toml::from_str(&text).unwrap();
                v["colour"] = "blue".into();
                v.to_string()
            },
            "application/json",
            &["colour"],
        ),
    ];
    for (what, body, ctype, names) in cases {
        let a = put(&w, MS, &t, ctype, body).await;
        let detail = assert_problem(&a, &[400, 422], what);
        for name in names {
            assert!(
                detail.contains(name),
                "{what}: `{detail}` should name {name}"
            );
        }
        still_serving(what).await;
    }
    // Not UTF-8.
    let a = put(
        &w,
        MS,
        &t,
        "application/toml",
        b"department = \"\xff\xfe\"".to_vec(),
    )
    .await;
    assert_problem(&a, &[400, 422], "not UTF-8");
    still_serving("not UTF-8").await;
    // 10 MB.
    let big = format!("{text}\n# {}\n", "x".repeat(10 * 1024 * 1024));
    let a = put(&w, MS, &t, "application/toml", big).await;
    assert_problem(&a, &[413], "10 MB");
    still_serving("10 MB").await;
}

// SSRF: base URLs pointing at loopback, link-local, metadata, private ranges,
// odd IPv4 spellings, userinfo or other schemes are refused for a department
// whose allow-list is empty; no file is created.
#[tokio::test]
async fn ssrf_base_urls_are_refused() {
    let w = World::builder()
        .gateway_replace(
            "en = \"Public Security Bureau\" }\nallow_upstream = [\"loopback\"]",
            "en = \"Public Security Bureau\" }\nallow_upstream = []",
        )
        .prepare()
        .await;
    let file = adapter_file(&w, "public-security");
    std::fs::remove_file(&file).unwrap();
    let w = w.boot().await;
    let t = w.token(
        "public-security-admin",
        &["department-admin"],
        Some("public-security"),
    );
    let shipped =
        std::fs::read_to_string(common::repo().join("adapters/public-security.toml")).unwrap();
    for (url, says) in [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.0.0.1:8080/api", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://169.254.169.254/", "metadata"),
        ("http://100.100.100.200/", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://2130706433/", "canonical"),
        ("http://0177.0.0.1/", "canonical"),
        ("http://0x7f.0.0.1/", "canonical"),
        ("http://127.1/", "canonical"),
        ("http://ok@127.0.0.1/", "userinfo"),
        ("http://ok:pw@93.184.216.34/", "userinfo"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://x/", "scheme"),
        ("ftp://93.184.216.34/", "scheme"),
    ] {
        let body = rewrite_base_url(&shipped, url);
        let a = put(&w, "public-security", &t, "application/toml", body).await;
        let detail = assert_problem(&a, &[400, 422], url);
        assert!(
            detail.contains("base_url"),
            "{url}: `{detail}` should name base_url"
        );
        assert!(detail.contains(says), "{url}: `{detail}` should say {says}");
        assert!(!file.exists(), "{url}: a file was created");
        // As JSON too.
        let json: serde_json::Value = toml::from_str(&rewrite_base_url(&shipped, url)).unwrap();
        let a = put(
            &w,
            "public-security",
            &t,
            "application/json",
            json.to_string(),
        )
        .await;
        assert_problem(&a, &[400, 422], url);
        assert!(!file.exists(), "{url} (JSON): a file was created");
    }
    let a = w
        .send(
            Method::GET,
            "/admin/adapters/public-security",
            Some(&t),
            &[],
            "",
        )
        .await;
    assert_problem(&a, &[404], "no adapter yet");
    let a = w
        .read(
            "/v1/datasets/household-registration/120116199203154527",
            &portal(&w),
        )
        .await;
    assert_problem(&a, &[503], "no adapter: 503");
    // A public address is taken (the refusals above are not blanket).
    let a = put(
        &w,
        "public-security",
        &t,
        "application/toml",
        rewrite_base_url(&shipped, "http://93.184.216.34/"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(file.exists());
}

// Hostile subjects (`/ ? # %` quotes `<` `]]>` CRLF ...) are refused before
// any department is called; the pass-through forwards only normalised paths
// and never an injected header.
#[tokio::test]
async fn hostile_subjects_never_reach_a_department() {
    let ms = licence_mock("ONE").await;
    let seen = ms.seen.clone();
    let calls = ms.calls.clone();
    let fire_seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let fs = fire_seen.clone();
    let fire = MockDept::start(move |req| {
        fs.lock().unwrap().push(String::from_utf8_lossy(&req.body).into_owned());
        (
            500,
            "text/xml".into(),
            r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>NO_RECORD</faultstring></soap:Fault></soap:Body></soap:Envelope>"#.into(),
        )
    })
    .await;
    let w = World::builder()
        .mock(MS, ms)
        .mock("fire-rescue", fire)
        .start()
        .await;
    let t = portal(&w);
    for (subject, ok) in [
        ("a%2Fb", &[400u16][..]),
        ("a%3Fb", &[400, 404]),
        ("a%23b", &[400, 404]),
        ("a%25b", &[400, 404]),
        ("a%2541", &[400]),
        ("%22quoted%22", &[400, 404]),
        ("%3Cscript%3E", &[400, 404]),
        ("%5D%5D%3E", &[400, 404]),
        ("a%0D%0AX-Evil:%201", &[400]),
        ("a%00b", &[400]),
        ("a%5Cb", &[400]),
        ("%2e%2e", &[400, 404]),
        ("91120116MA07Q8XJ2K%20", &[400, 404]),
        ("91120116MA07Q8XJ2KX", &[400, 404]),
        ("%E4%B8%AD", &[400, 404]),
    ] {
        for dataset in ["business-licence", "fire-safety-inspection"] {
            let a = w
                .read(&format!("/v1/datasets/{dataset}/{subject}"), &t)
                .await;
            assert_problem(&a, ok, subject);
        }
    }
    // Bytes a client library would not send, straight onto the socket.
    let auth = format!("Bearer {t}");
    for target in [
        "/v1/datasets/business-licence/a\"b",
        "/v1/datasets/business-licence/a<b>",
        "/v1/datasets/business-licence/a]]>",
    ] {
        let req = format!(
            "GET {target} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\nx-purpose: service-handling\r\n\r\n"
        );
        let (code, text) = raw_status(w.plain(), req.into_bytes()).await;
        assert!(matches!(code, Some(400 | 404)), "{target}: {text}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a department was called");
    assert!(fire_seen.lock().unwrap().is_empty());
    // A raw `#` or `?` ends the path: the subject is what precedes it, and
    // the department sees exactly that subject, nothing after it.
    for target in [
        "/v1/datasets/business-licence/A1#X-Evil",
        "/v1/datasets/business-licence/A1?X-Evil",
    ] {
        let req = format!(
            "GET {target} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\nx-purpose: service-handling\r\n\r\n"
        );
        let (code, text) = raw_status(w.plain(), req.into_bytes()).await;
        assert!(matches!(code, Some(200 | 400 | 404)), "{target}: {text}");
        if let Some(last) = seen.lock().unwrap().last() {
            assert!(
                last.target.starts_with("/api/v2/licences/A1?"),
                "{}",
                last.target
            );
            assert!(!last.target.contains("Evil"), "{}", last.target);
        }
    }

    // Attribution values are data, never markup or query syntax.
    let a = w
        .send(
            Method::GET,
            &format!("/v1/datasets/business-licence/{FULL}"),
            Some(&t),
            &[
                ("x-purpose", "service-handling"),
                ("x-case-id", "c1&purpose=evil#x"),
                ("x-end-user", "clerk\"<b>]]>"),
            ],
            "",
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert!(!last.target.contains("&purpose=evil"), "{}", last.target);
    assert!(!last.target.contains('#'), "{}", last.target);
    assert_eq!(
        last.target.matches("purpose=").count(),
        1,
        "{}",
        last.target
    );
    let a = w
        .send(
            Method::GET,
            &format!("/v1/datasets/fire-safety-inspection/{FULL}"),
            Some(&t),
            &[
                ("x-purpose", "service-handling"),
                (
                    "x-case-id",
                    "]]></fr:CaseNo><fr:CreditCode>91120116MA07R3LP5D</fr:CreditCode><fr:CaseNo>",
                ),
            ],
            "",
        )
        .await;
    assert_problem(&a, &[404], "SOAP with a hostile case id");
    let body = fire_seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(body.matches("<fr:CreditCode>").count(), 1, "{body}");
    assert!(
        body.contains(&format!("<fr:CreditCode>{FULL}</fr:CreditCode>")),
        "{body}"
    );
    assert!(
        body.contains(&format!("&lt;fr:CreditCode&gt;{NO_FIRE}")),
        "{body}"
    );

    // Pass-through: only normalised paths reach the department.
    let before = calls.load(Ordering::SeqCst);
    for path in [
        "/v1/proxy/market-supervision/licences/./x/../91120116MA07Q8XJ2K",
        "/v1/proxy/market-supervision//licences//91120116MA07Q8XJ2K",
        "/v1/proxy/market-supervision/licences/%2e/91120116MA07Q8XJ2K",
        "/v1/proxy/market-supervision/%6Cicences/91120116MA07Q8XJ2K",
    ] {
        let a = w.read(path, &t).await;
        assert_eq!(a.status, 404, "{path}: {}", a.text());
        let last = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.target, "/licences/91120116MA07Q8XJ2K", "{path}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), before + 4);
    for path in [
        "/v1/proxy/market-supervision/licences/a%0D%0AX-Evil:%201",
        "/v1/proxy/market-supervision/licences/a%2F..%2F..%2Fadmin",
        "/v1/proxy/market-supervision/licences/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/v1/proxy/market-supervision/licences/a%5C..%5Cadmin",
        "/v1/proxy/market-supervision/licences/a%252e%252e",
    ] {
        let a = w.read(path, &t).await;
        assert_problem(&a, &[400, 404], path);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before + 4,
        "refused paths reached the department"
    );
    // Dot-segments resolve before authorisation: the read-only portal cannot
    // climb out of /licences/.
    let ro = w.token("portal-readonly", &[], None);
    let a = w
        .read(
            "/v1/proxy/market-supervision/licences/../api/v2/licences/91120116MA07Q8XJ2K",
            &ro,
        )
        .await;
    assert_problem(&a, &[403], "climbing out of the prefix");
    assert_eq!(calls.load(Ordering::SeqCst), before + 4);
    for s in seen.lock().unwrap().iter() {
        assert!(s.header("x-evil").is_none(), "{s:?}");
        assert!(!s.target.contains(".."), "{s:?}");
        assert!(!s.target.contains("//"), "{s:?}");
        assert!(s.header("authorization").is_none(), "{s:?}");
    }
}

// SOAP through the gateway: a DOCTYPE reply -> 502; a Fault other than
// NO_RECORD -> 502; a NO_RECORD fault -> 404; an envelope without the
// expected element -> 502.
#[tokio::test]
async fn soap_replies_are_mapped_safely() {
    let reply: Arc<Mutex<(u16, String)>> = Arc::new(Mutex::new((200, String::new())));
    let r = reply.clone();
    let fire = MockDept::start(move |_| {
        let (s, b) = r.lock().unwrap().clone();
        (s, "text/xml; charset=utf-8".into(), b)
    })
    .await;
    let w = World::builder().mock("fire-rescue", fire).start().await;
    let t = portal(&w);
    let env = |inner: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>{inner}</soap:Body></soap:Envelope>"#
        )
    };
    let inspection = r#"<GetInspectionResponse xmlns="urn:fire-rescue:inspection"><Inspection>
<InspectionNo>N-1</InspectionNo><CreditCode>C</CreditCode><PremisesAddress>P</PremisesAddress>
<InspectionDate>2026-04-12</InspectionDate><Conclusion>合格</Conclusion><MaxOccupancy>80</MaxOccupancy>
<ValidUntil>2027-04-11</ValidUntil></Inspection></GetInspectionResponse>"#;
    let fault = |s: &str| {
        env(&format!(
            "<soap:Fault><faultcode>soap:Server</faultcode><faultstring>{s}</faultstring></soap:Fault>"
        ))
    };
    let doctype = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE soap:Envelope [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n{}",
        env(inspection)
            .split_once('\n')
            .unwrap()
            .1
            .replace("<InspectionNo>N-1", "<InspectionNo>&x;")
    );
    let billion = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]>\n{}",
        env(inspection).split_once('\n').unwrap().1
    );
    let cases: Vec<(u16, String, u16, &str)> = vec![
        (200, env(inspection), 200, "valid"),
        (200, doctype, 502, "DOCTYPE with an external entity"),
        (200, billion, 502, "DOCTYPE with entity expansion"),
        (500, fault("SERVER_BUSY: try later"), 502, "other fault"),
        (
            500,
            fault("NO_RECORD: no inspection on file"),
            404,
            "NO_RECORD fault",
        ),
        (200, fault("NO_RECORD"), 404, "NO_RECORD fault with 200"),
        (
            200,
            env("<GetInspectionResponse xmlns=\"urn:fire-rescue:inspection\"/>"),
            502,
            "missing element",
        ),
        (200, env("<Other/>"), 502, "another element"),
        (200, "not xml at all <".into(), 502, "not XML"),
        (
            200,
            env(inspection).replace("</soap:Envelope>", ""),
            502,
            "truncated",
        ),
    ];
    for (i, (status, body, want, what)) in cases.into_iter().enumerate() {
        *reply.lock().unwrap() = (status, body);
        let subject = company(900 + i);
        let a = w
            .read(
                &format!("/v1/datasets/fire-safety-inspection/{subject}"),
                &t,
            )
            .await;
        assert_eq!(a.status, want, "{what}: {}", a.text());
        if want == 200 {
            assert_eq!(a.json()["record"]["inspection_no"], "N-1");
            assert_eq!(a.json()["record"]["passed"], true);
        } else {
            let detail = assert_problem(&a, &[want], what);
            assert!(
                !detail.contains("passwd") && !detail.contains("SERVER_BUSY"),
                "{what}: {detail}"
            );
        }
    }
}

// 100 PUTs alternating two valid versions while readers read continuously:
// every read succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_an_adapter_under_load_fails_no_read() {
    let w = Arc::new(licence_world().await);
    let t = ms_admin(&w);
    let a_text = std::fs::read_to_string(adapter_file(&w, MS)).unwrap();
    let b_text = a_text.replace("name = \"/qymc\"", "name = \"/qymc2\"");
    assert_ne!(a_text, b_text);
    let readers = Readers::start(&w, 4, false, 10_000);
    for i in 0..100 {
        let body = if i % 2 == 0 {
            b_text.clone()
        } else {
            a_text.clone()
        };
        let a = put(&w, MS, &t, "application/toml", body).await;
        assert_eq!(a.status, 200, "PUT {i}: {}", a.text());
    }
    let total = readers.finish().await;
    assert!(total >= 4, "readers ran");
    // The last PUT (i = 99) was version A.
    assert_eq!(
        std::fs::read_to_string(adapter_file(&w, MS)).unwrap(),
        a_text
    );
    assert_eq!(
        name_of(&licence_name(&w, &company(1)).await),
        format!("ONE {}", company(1))
    );
}

// Hostile input of the performance issue: a whole-configuration reload under
// load drops no request. Readers keep going (fresh subjects that reach the
// department, and one cached subject) while gateway.toml, clients.toml and an
// adapter are rewritten and reloaded 40 times: every read is answered 200 by
// the old or the new configuration, and every one has its audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_the_whole_configuration_under_load_drops_no_request() {
    let w = Arc::new(licence_world().await);
    let admin = platform(&w);
    let clients_file = w.root().join("config/clients.toml");
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap();
    let (adapter_a, gateway_a, clients_a) = (
        read(&adapter_file(&w, MS)),
        read(&w.config()),
        read(&clients_file),
    );
    let adapter_b = adapter_a.replace("name = \"/qymc\"", "name = \"/qymc2\"");
    let gateway_b = gateway_a.replace("max_body_bytes = 1048576", "max_body_bytes = 2097152");
    let clients_b = clients_a.replace(
        "[clients.portal-readonly.datasets.business-licence]\nfields = [\"*\"]\n",
        "[clients.portal-readonly.datasets.business-licence]\nfields = [\"*\"]\n[clients.portal-readonly.datasets.food-business-permit]\nfields = [\"*\"]\n",
    );
    assert!(adapter_b != adapter_a && gateway_b != gateway_a && clients_b != clients_a);

    let readers = Readers::start(&w, 5, true, 20_000);
    for i in 0..40 {
        let (adapter, gateway, clients) = if i % 2 == 0 {
            (&adapter_b, &gateway_b, &clients_b)
        } else {
            (&adapter_a, &gateway_a, &clients_a)
        };
        std::fs::write(adapter_file(&w, MS), adapter).unwrap();
        std::fs::write(w.config(), gateway).unwrap();
        std::fs::write(&clients_file, clients).unwrap();
        let a = w
            .send(Method::POST, "/admin/reload", Some(&admin), &[], "")
            .await;
        assert_eq!(a.status, 200, "reload {i}: {}", a.text());
    }
    let mut total = readers.finish().await;
    eprintln!("{total} reads across 40 reloads");
    assert!(total >= 40, "readers ran throughout ({total} reads)");

    // The last reload (i = 39) was version A: its field naming serves.
    assert_eq!(
        name_of(&licence_name(&w, &company(2)).await),
        format!("ONE {}", company(2))
    );
    total += 1;

    // Every answered read has its record: none was answered unrecorded.
    let auditor = auditor(&w);
    let mut recorded = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut q = "/admin/audit?action=dataset.read&decision=allow&limit=1000".to_string();
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let a = w.send(Method::GET, &q, Some(&auditor), &[], "").await;
        assert_eq!(a.status, 200, "{}", a.text());
        let j = a.json();
        recorded += j["records"].as_array().unwrap().len();
        match j["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(recorded, total, "one audit record per answered read");
    let a = w
        .send(Method::GET, "/admin/audit/verify", Some(&auditor), &[], "")
        .await;
    assert_eq!(a.json()["intact"], true, "{}", a.text());
}

// POST /admin/reload: a valid change on disk takes effect; an invalid one is
// refused naming file and field, and the old configuration keeps serving.
#[tokio::test]
async fn reload_takes_valid_config_and_refuses_invalid() {
    let w = World::demo().await;
    let admin = platform(&w);
    let ro = w.token("portal-readonly", &[], None);
    let permit = format!("/v1/datasets/food-business-permit/{FULL}");
    let reload = async || {
        w.send(Method::POST, "/admin/reload", Some(&admin), &[], "")
            .await
    };
    assert_eq!(w.read(&permit, &ro).await.status, 403);

    // Only the platform admin may reload.
    let a = w
        .send(Method::POST, "/admin/reload", Some(&ms_admin(&w)), &[], "")
        .await;
    assert_problem(&a, &[403], "department admin reloading");

    // A valid change: grant the read-only portal the food permit.
    let clients = w.root().join("config/clients.toml");
    let original = std::fs::read_to_string(&clients).unwrap();
    let granted = original.replace(
        "[clients.portal-readonly.datasets.business-licence]\nfields = [\"*\"]\n",
        "[clients.portal-readonly.datasets.business-licence]\nfields = [\"*\"]\n[clients.portal-readonly.datasets.food-business-permit]\nfields = [\"*\"]\n",
    );
    assert_ne!(granted, original);
    std::fs::write(&clients, &granted).unwrap();
    let a = reload().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(w.read(&permit, &ro).await.status, 200);

    // Invalid: each refused naming the file and the field; the running
    // configuration (with the grant) keeps serving.
    let gateway = w.config();
    let gw_text = std::fs::read_to_string(&gateway).unwrap();
    let ms_file = adapter_file(&w, MS);
    let ms_text = std::fs::read_to_string(&ms_file).unwrap();
    let bad: Vec<(PathBuf, String, &str, &str)> = vec![
        (
            clients.clone(),
            granted.replace(
                "[clients.portal-readonly.datasets.food-business-permit]",
                "[clients.portal-readonly.datasets.no-such-dataset]",
            ),
            "clients.toml",
            "no-such-dataset",
        ),
        (
            clients.clone(),
            format!(
                "{granted}\n[clients.portal-x]\npurposes = [\"service-handling\"]\nfavourite = 1\n"
            ),
            "clients.toml",
            "favourite",
        ),
        (
            gateway.clone(),
            gw_text.replace("max_body_bytes = 1048576", "max_body_bytes = \"lots\""),
            "gateway.toml",
            "max_body_bytes",
        ),
        (
            ms_file.clone(),
            ms_text.replace("kind = \"rest-json\"", "kind = \"graphql\""),
            "market-supervision.toml",
            "kind",
        ),
        (
            ms_file.clone(),
            rewrite_base_url(&ms_text, "http://169.254.169.254/"),
            "market-supervision.toml",
            "base_url",
        ),
    ];
    for (file, text, names_file, names_field) in bad {
        let keep = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text).unwrap();
        let a = reload().await;
        let detail = assert_problem(&a, &[400, 422], names_field);
        assert!(
            detail.contains(names_file),
            "`{detail}` should name {names_file}"
        );
        assert!(
            detail.contains(names_field),
            "`{detail}` should name {names_field}"
        );
        std::fs::write(&file, keep).unwrap();
        assert_eq!(
            w.read(&permit, &ro).await.status,
            200,
            "old config after {names_field}"
        );
        let a = w
            .read(
                &format!("/v1/datasets/business-licence/{REVOKED}"),
                &portal(&w),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    // Restored files reload fine.
    let a = reload().await;
    assert_eq!(a.status, 200, "{}", a.text());
}

// GET /admin/openapi.json lists every admin and data route.
#[tokio::test]
async fn openapi_lists_every_route() {
    let w = World::demo().await;
    let a = w
        .send(Method::GET, "/admin/openapi.json", None, &[], "")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let doc = a.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let proxy = ["get", "head", "post", "put", "patch", "delete"];
    let expected: Vec<(&str, &[&str])> = vec![
        ("/v1/catalog", &["get"]),
        // One path per configured dataset and scenario, each with its schema.
        ("/v1/datasets/business-licence/{subject}", &["get"]),
        ("/v1/datasets/food-business-permit/{subject}", &["get"]),
        ("/v1/datasets/health-certificate/{subject}", &["get"]),
        ("/v1/datasets/birth-medical-certificate/{subject}", &["get"]),
        ("/v1/datasets/fire-safety-inspection/{subject}", &["get"]),
        ("/v1/datasets/household-registration/{subject}", &["get"]),
        ("/v1/scenarios/newborn", &["get", "post"]),
        ("/v1/scenarios/open-restaurant", &["get", "post"]),
        ("/v1/datasets/environmental-penalties/{subject}", &["get"]),
        ("/v1/datasets/tax-credit/{subject}", &["get"]),
        ("/v1/scenarios/listing-compliance", &["get", "post"]),
        ("/v1/scenarios", &["get"]),
        ("/v1/cases/{case_id}", &["get"]),
        ("/v1/cases/{case_id}/refresh", &["post"]),
        ("/.well-known/jwks.json", &["get"]),
        ("/v1/subjects/{kind}/{subject}/accesses", &["get"]),
        ("/v1/proxy/{department}", &proxy),
        ("/v1/proxy/{department}/{path}", &proxy),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/admin/openapi.json", &["get"]),
        ("/admin/adapters", &["get"]),
        ("/admin/adapters/{department}", &["get", "put", "delete"]),
        ("/admin/cache/invalidate", &["post"]),
        ("/admin/audit", &["get"]),
        ("/admin/audit/verify", &["get"]),
        ("/admin/reload", &["post"]),
        ("/admin/departments", &["get"]),
        ("/admin/audit/stats", &["get"]),
        ("/admin/adapters/{department}/try", &["post"]),
        ("/console", &["get"]),
        ("/console/", &["get"]),
        ("/console/{path}", &["get"]),
    ];
    let paths = doc["paths"].as_object().unwrap();
    for (p, methods) in &expected {
        let item = paths
            .get(*p)
            .unwrap_or_else(|| panic!("{p} missing from the document"));
        for m in *methods {
            assert!(item.get(*m).is_some(), "{m} {p} missing");
        }
    }
    let listed: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = expected.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        listed, want,
        "the document lists routes the test does not know"
    );
    // And each listed route answers on its plane (no 404 from the router).
    let t = platform(&w);
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/adapters",
        "/admin/departments",
    ] {
        let a = w.send(Method::GET, p, Some(&t), &[], "").await;
        assert_eq!(a.status, 200, "{p}: {}", a.text());
    }
}

// Every admin change (PUT allowed and refused, DELETE, invalidate, reload)
// leaves an audit record an auditor can query.
#[tokio::test]
async fn every_admin_change_is_audited() {
    let w = World::demo().await;
    let t = ms_admin(&w);
    let text = std::fs::read_to_string(adapter_file(&w, MS)).unwrap();
    assert_eq!(
        put(&w, MS, &t, "application/toml", text.clone())
            .await
            .status,
        200
    );
    let a = put(
        &w,
        MS,
        &t,
        "application/toml",
        text.replace("rest-json", "graphql"),
    )
    .await;
    assert_eq!(a.status, 422, "{}", a.text());
    // Attempts refused for lack of rights are decisions too.
    let other = w.token(
        "health-commission-admin",
        &["department-admin"],
        Some("health-commission"),
    );
    let a = put(&w, MS, &other, "application/toml", text.clone()).await;
    assert_eq!(a.status, 403, "{}", a.text());
    let a = w
        .send(
            Method::DELETE,
            "/admin/adapters/market-supervision",
            Some(&other),
            &[],
            "",
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text());
    let a = w
        .send(
            Method::POST,
            "/admin/cache/invalidate",
            Some(&other),
            &[],
            r#"{"dataset":"business-licence"}"#,
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text());
    let a = w
        .send(
            Method::DELETE,
            "/admin/adapters/market-supervision",
            Some(&t),
            &[],
            "",
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text());
    let a = w
        .send(
            Method::POST,
            "/admin/cache/invalidate",
            Some(&t),
            &[],
            format!(r#"{{"dataset":"business-licence","subject":"{FULL}"}}"#),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = w
        .send(Method::POST, "/admin/reload", Some(&platform(&w)), &[], "")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());

    let aud = auditor(&w);
    let query = async |q: &str| -> Vec<serde_json::Value> {
        let a = w
            .send(
                Method::GET,
                &format!("/admin/audit?{q}"),
                Some(&aud),
                &[],
                "",
            )
            .await;
        assert_eq!(a.status, 200, "{q}: {}", a.text());
        a.json()["records"].as_array().unwrap().clone()
    };
    let refused = query("client=health-commission-admin").await;
    let actions: BTreeSet<&str> = refused
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "admin.adapter.delete",
            "admin.adapter.put",
            "admin.cache.invalidate"
        ]
        .into(),
        "{refused:?}"
    );
    for r in &refused {
        assert_eq!(r["decision"], "deny", "{r}");
        assert_eq!(r["status"], 403, "{r}");
        assert_eq!(r["department"], MS, "{r}");
    }
    let puts = query("action=admin.adapter.put&client=market-supervision-admin").await;
    assert_eq!(puts.len(), 2, "{puts:?}");
    for r in &puts {
        assert_eq!(r["action"], "admin.adapter.put");
        assert_eq!(r["client"], "market-supervision-admin");
        assert_eq!(r["department"], MS);
    }
    let decisions: BTreeSet<&str> = puts
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["allow", "deny"].into());
    let denied = puts.iter().find(|r| r["decision"] == "deny").unwrap();
    assert_eq!(denied["status"], 422);
    assert!(
        denied["reason"].as_str().unwrap().contains("kind"),
        "{denied}"
    );

    let dels = query("action=admin.adapter.delete&decision=allow").await;
    assert_eq!(dels.len(), 1, "{dels:?}");
    assert_eq!(dels[0]["decision"], "allow");
    assert_eq!(dels[0]["department"], MS);
    let inv = query("action=admin.cache.invalidate&decision=allow").await;
    assert_eq!(inv.len(), 1, "{inv:?}");
    assert_eq!(inv[0]["dataset"], "business-licence");
    assert_eq!(inv[0]["client"], "market-supervision-admin");
    // The auditor finds it by the plain subject id.
    let by_subject = query(&format!(
        "action=admin.cache.invalidate&decision=allow&subject={FULL}"
    ))
    .await;
    assert_eq!(by_subject.len(), 1);
    let rel = query("action=admin.reload").await;
    assert_eq!(rel.len(), 1, "{rel:?}");
    assert_eq!(rel[0]["client"], "platform-admin");
    assert_eq!(rel[0]["decision"], "allow");
    // Only auditors query.
    let a = w
        .send(
            Method::GET,
            "/admin/audit?action=admin.reload",
            Some(&platform(&w)),
            &[],
            "",
        )
        .await;
    assert_problem(&a, &[403], "platform admin querying the audit log");
}
