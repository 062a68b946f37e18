//! The data-subject transparency query: one subject's accesses among ten
//! million index rows (1 million subjects, ~10 accesses each, plus one busy
//! subject with 2 000), newest page first, with the kind's dataset filter and
//! one withheld purpose, as `GET /v1/subjects/{kind}/{subject}/accesses` runs it.
//!
//! The rows are generated inside SQLite in one transaction (a recursive CTE,
//! sorted by the table's key), about a minute on a small machine; the file is
//! kept in `target/transparency-bench/` and reused by later runs.

// Setup failures abort the benchmark; that is the report.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use onewindow::transparency::{AccessQuery, IndexDb};
use sqlx::Row;

const ROWS: i64 = 10_000_000;
const SUBJECTS: i64 = 1_000_000;
const BUSY_ROWS: i64 = 2_000;

const NAMES: &[&str] = &[
    "portal-binhai",
    "portal-readonly",
    "portal-heping",
    "market-supervision",
    "health-commission",
    "fire-rescue",
    "public-security",
    "business-licence",
    "food-business-permit",
    "health-certificate",
    "fire-safety-inspection",
    "household-registration",
    "birth-medical-certificate",
    "open-restaurant",
    "service-handling",
    "investigation",
    "allow",
    "deny",
    "dataset.read",
    "scenario.part",
];

async fn prepare(path: &std::path::Path) -> IndexDb {
    let db = IndexDb::open(path).await.expect("open the index");
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM subjects")
        .fetch_one(db.pool())
        .await
        .expect("count");
    if have == SUBJECTS + 1 {
        return db;
    }
    let started = Instant::now();
    let mut conn = db.pool().acquire().await.expect("connection");
    for p in [
        "PRAGMA synchronous = OFF",
        "PRAGMA cache_size = -400000",
        "PRAGMA temp_store = FILE",
    ] {
        sqlx::query(p).execute(&mut *conn).await.expect("pragma");
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
    for n in NAMES {
        sqlx::query("INSERT OR IGNORE INTO names(name) VALUES (?1)")
            .bind(*n)
            .execute(&mut *tx)
            .await
            .expect("name");
    }
    // Subject 1 to SUBJECTS: ~10 accesses each; subject SUBJECTS + 1: busy.
    sqlx::query(
        "INSERT INTO subjects(id, ref)
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
         SELECT x, randomblob(32) FROM c",
    )
    .bind(SUBJECTS + 1)
    .execute(&mut *tx)
    .await
    .expect("subjects");
    sqlx::query(
        "INSERT INTO accesses
           (subject, seq, time_us, client, department, dataset, scenario, purpose, decision, action, case_id)
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
         SELECT CASE WHEN x % ?3 = 0 THEN ?2 + 1 ELSE (x * 7919) % ?2 + 1 END,
                x,
                1767225600000000 + x * 250000,
                1 + x % 3,
                4 + x % 4,
                8 + x % 6,
                CASE WHEN x % 5 = 0 THEN 14 END,
                CASE WHEN x % 50 = 0 THEN 16 ELSE 15 END,
                CASE WHEN x % 20 = 0 THEN 18 ELSE 17 END,
                CASE WHEN x % 5 = 0 THEN 20 ELSE 19 END,
                CASE WHEN x % 3 = 0 THEN 'CASE-' || x END
         FROM c ORDER BY 1, 2",
    )
    .bind(ROWS)
    .bind(SUBJECTS)
    .bind(ROWS / BUSY_ROWS)
    .execute(&mut *tx)
    .await
    .expect("accesses");
    tx.commit().await.expect("commit");
    eprintln!(
        "generated {ROWS} index rows for {SUBJECTS} subjects in {:.0?}",
        started.elapsed()
    );
    db
}

async fn subject_ref(db: &IndexDb, id: i64) -> [u8; 32] {
    let row = sqlx::query("SELECT ref FROM subjects WHERE id = ?1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .expect("subject");
    let bytes: Vec<u8> = row.try_get(0).expect("ref");
    bytes.try_into().expect("32 bytes")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/transparency-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let db = rt.block_on(prepare(&dir.join("index.sqlite")));
    let total: i64 = rt
        .block_on(sqlx::query_scalar("SELECT count(*) FROM accesses").fetch_one(db.pool()))
        .expect("count");
    assert_eq!(total, ROWS);
    let query = |subject: [u8; 32]| AccessQuery {
        subject,
        before_seq: None,
        since_us: None,
        until_us: None,
        datasets: NAMES[7..13].iter().map(|s| s.to_string()).collect(),
        withheld: vec![("investigation".into(), i64::MAX)],
        limit: 51,
    };
    let typical = query(rt.block_on(subject_ref(&db, 4242)));
    let busy = query(rt.block_on(subject_ref(&db, SUBJECTS + 1)));
    let n = rt.block_on(db.accesses(&typical)).expect("query").0.len();
    assert!(n > 0, "the typical subject has accesses");
    let mut g = c.benchmark_group("transparency");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("one subject (~10 accesses) among 10M rows", |b| {
        b.iter(|| black_box(rt.block_on(db.accesses(&typical)).expect("query")))
    });
    g.bench_function("busy subject (2000 accesses), first page of 50", |b| {
        b.iter(|| black_box(rt.block_on(db.accesses(&busy)).expect("query")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
