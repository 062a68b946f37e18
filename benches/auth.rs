//! Auth hot paths: cold ES256 verification, verified-token cache hit, grant
//! checks and field filtering.

#![allow(clippy::expect_used)] // a bench aborts on setup failure

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Method};
use onewindow::auth::{
    AuthSettings, Authenticator, DEMO_AUDIENCE, DEMO_ISSUER, DemoIssuer, Grants, IssuerSettings,
    JwksSource, KnownNames,
};
use onewindow::config::{DatasetSpec, Datasets, FieldSpec, FieldType, SubjectChars};
use tokio_util::sync::CancellationToken;

fn setup(rt: &tokio::runtime::Runtime) -> (Authenticator, String) {
    let dir = std::env::temp_dir().join(format!("onewindow-auth-bench-{}", std::process::id()));
    let (demo, _) = DemoIssuer::load_or_generate(&dir).expect("demo issuer");
    let settings = AuthSettings {
        issuers: vec![IssuerSettings {
            issuer: DEMO_ISSUER.into(),
            audiences: vec![DEMO_AUDIENCE.into()],
            algorithms: vec![jsonwebtoken::Algorithm::ES256],
            jwks: JwksSource::File(DemoIssuer::jwks_path(&dir)),
            roles: onewindow::auth::Role::ALL.to_vec(),
        }],
        ..AuthSettings::default()
    };
    let auth = rt
        .block_on(Authenticator::start(&settings, &CancellationToken::new()))
        .expect("start");
    let token = demo
        .mint(
            "portal-binhai",
            &["auditor".to_string()],
            None,
            Duration::from_secs(3600),
        )
        .expect("mint");
    let _ = std::fs::remove_dir_all(&dir);
    (auth, token)
}

fn grants() -> Grants {
    let names = [
        "business-licence",
        "food-business-permit",
        "health-certificate",
        "birth-medical-certificate",
        "household-registration",
        "fire-safety-inspection",
    ];
    let specs = names.iter().map(|n| DatasetSpec {
        name: n.to_string(),
        title: n.to_string(),
        department: "market-supervision".into(),
        subject_kind: "uscc".into(),
        subject_chars: SubjectChars::Alphanumeric,
        subject_max_len: 32,
        fields: ["uscc", "name", "legal_representative", "status", "address"]
            .iter()
            .map(|f| FieldSpec {
                name: f.to_string(),
                ty: FieldType::String,
                required: false,
            })
            .collect(),
        shareable: true,
        ttl: Duration::from_secs(60),
        max_stale: Duration::from_secs(60),
        notice: String::new(),
        issuer: "Issuing authority".into(),
        sharing: onewindow::config::Sharing::Unconditional,
    });
    let known = KnownNames {
        issuers: [DEMO_ISSUER.to_string()].into(),
        datasets: names.iter().map(|s| s.to_string()).collect(),
        scenarios: ["open-restaurant", "newborn"].map(String::from).into(),
        departments: [
            "market-supervision",
            "health-commission",
            "fire-rescue",
            "public-security",
        ]
        .map(String::from)
        .into(),
    };
    let text = format!(
        "{}\n[clients.narrow]\npurposes = [\"service-handling\"]\n\
         [clients.narrow.datasets.business-licence]\nfields = [\"uscc\", \"name\"]\n",
        include_str!("../config/clients.toml")
    );
    Grants::from_toml(
        Path::new("clients.toml"),
        &text,
        &known,
        &Datasets::from_specs(specs),
    )
    .expect("grants")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (auth, token) = setup(&rt);
    let header = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");

    c.bench_function("auth/cold_verify_es256", |b| {
        b.iter(|| {
            rt.block_on(auth.verify_uncached(black_box(&token), None))
                .expect("valid")
        })
    });

    rt.block_on(auth.authenticate(Some(&header), None))
        .expect("warm the cache");
    c.bench_function("auth/hot_cache_hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(
                        auth.authenticate(Some(black_box(&header)), None)
                            .await
                            .expect("valid"),
                    );
                }
                start.elapsed()
            })
        })
    });

    // Components of the hot path, to see where its time goes.
    c.bench_function("auth/part_sha256_token", |b| {
        use sha2::Digest as _;
        b.iter(|| sha2::Sha256::digest(black_box(token.as_bytes())))
    });
    let cache: moka::sync::Cache<[u8; 32], std::sync::Arc<u64>> =
        moka::sync::Cache::builder().max_capacity(100_000).build();
    cache.insert([7u8; 32], std::sync::Arc::new(1));
    c.bench_function("auth/part_moka_get", |b| {
        b.iter(|| cache.get(black_box(&[7u8; 32])))
    });

    let bad = HeaderValue::from_str(&format!("Bearer {}", "A".repeat(9000))).expect("header");
    c.bench_function("auth/reject_oversize", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _ = black_box(auth.authenticate(Some(black_box(&bad)), None).await);
                }
                start.elapsed()
            })
        })
    });

    let g = grants();
    c.bench_function("grants/check_purpose_dataset_scenario", |b| {
        b.iter(|| {
            let cg = g.client(black_box("portal-binhai"));
            cg.check_purpose(Some("service-handling")).expect("purpose");
            cg.check_dataset(black_box("fire-safety-inspection"))
                .expect("dataset");
            cg.check_scenario(black_box("open-restaurant"))
                .expect("scenario");
        })
    });
    c.bench_function("grants/check_proxy", |b| {
        b.iter(|| {
            g.client(black_box("portal-readonly"))
                .check_proxy(
                    black_box("market-supervision"),
                    &Method::GET,
                    black_box("/licences/91120116MA07Q8XJ2K"),
                )
                .expect("proxy")
        })
    });
    let record: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        r#"{"uscc":"91120116MA07Q8XJ2K","name":"A","legal_representative":"B","status":"ok","address":"C"}"#,
    )
    .expect("record");
    c.bench_function("grants/filter_fields", |b| {
        let f = g
            .client("narrow")
            .check_dataset("business-licence")
            .expect("granted");
        b.iter(|| {
            let mut r = record.clone();
            f.filter(&mut r);
            r
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
