//! The shared-record cache's hit path: generation lookup + entry lookup, and
//! the per-client field filter applied after it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use onewindow::cache::{CacheSettings, Record, SharedCache, StaleEligible};
use onewindow::config::{DatasetSpec, FieldSpec, FieldType, SubjectChars};

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl StaleEligible for Never {
    fn allows_stale(&self) -> bool {
        false
    }
}

fn spec() -> DatasetSpec {
    DatasetSpec {
        name: "business-licence".into(),
        title: "Business licence".into(),
        department: "market-supervision".into(),
        subject_kind: "uscc".into(),
        subject_chars: SubjectChars::Alphanumeric,
        subject_max_len: 18,
        fields: [
            "uscc",
            "name",
            "legal_representative",
            "address",
            "valid_until",
            "status",
        ]
        .iter()
        .map(|n| FieldSpec {
            name: (*n).into(),
            ty: FieldType::String,
            required: true,
        })
        .collect(),
        shareable: true,
        ttl: Duration::from_secs(3600),
        max_stale: Duration::from_secs(3600),
        notice: String::new(),
        issuer: "Issuing authority".into(),
        sharing: onewindow::config::Sharing::Unconditional,
    }
}

fn record() -> Record {
    let v = serde_json::json!({
        "uscc": "91120116MA07Q8XJ2K", "name": "天津港保税区海味轩餐饮管理有限公司",
        "legal_representative": "李海燕", "address": "天津自贸试验区(天津港保税区)海滨八路56号",
        "valid_until": "2046-03-01", "status": "active"});
    v.as_object().cloned().unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let cache = SharedCache::new(&CacheSettings {
        max_bytes: 64 << 20,
        max_entry_life: Duration::from_secs(7200),
    });
    let spec = spec();
    rt.block_on(async {
        let _ = cache
            .get(&spec, "91120116MA07Q8XJ2K", || async {
                Ok::<_, Never>(record())
            })
            .await;
    });
    c.bench_function("cache hit (generation + lookup)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = cache
                    .get(&spec, black_box("91120116MA07Q8XJ2K"), || async {
                        Ok::<_, Never>(Record::new())
                    })
                    .await;
                black_box(r.is_ok())
            })
        })
    });
    c.bench_function("cache hit + copy for field filtering", |b| {
        b.iter(|| {
            rt.block_on(async {
                if let Ok((e, _)) = cache
                    .get(&spec, black_box("91120116MA07Q8XJ2K"), || async {
                        Ok::<_, Never>(Record::new())
                    })
                    .await
                {
                    let mut r: Record = (*e.record).clone();
                    r.remove("address");
                    black_box(r.len());
                }
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
