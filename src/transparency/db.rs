//! The subject index's SQLite database: one row per data access that names
//! a subject, keyed by (subject, seq), so one subject's accesses are a
//! contiguous range of the table whatever the size of the log.
//!
//! Strings that repeat (client, department, dataset, scenario, purpose,
//! decision, action) are stored once in `names`; subject references once in
//! `subjects`. `meta` remembers the log position the index covers
//! (`last_seq`, `last_hash`) and the log it was built from (`first_hash`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

/// Schema version written to `meta`; another version is rebuilt.
pub const SCHEMA_VERSION: &str = "1";

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS subjects (id INTEGER PRIMARY KEY, ref BLOB NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS accesses (
        subject INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        time_us INTEGER NOT NULL,
        client INTEGER,
        department INTEGER,
        dataset INTEGER,
        scenario INTEGER,
        purpose INTEGER,
        decision INTEGER NOT NULL,
        action INTEGER NOT NULL,
        case_id TEXT,
        PRIMARY KEY (subject, seq)
    ) WITHOUT ROWID",
];

/// One indexed access (from one audit record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    /// The record's sequence number.
    pub seq: u64,
    /// The record's time, microseconds since the epoch.
    pub time_us: i64,
    /// `subject_ref` as 32 raw bytes.
    pub subject: [u8; 32],
    /// Client id.
    pub client: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// Dataset.
    pub dataset: Option<String>,
    /// Scenario.
    pub scenario: Option<String>,
    /// Purpose.
    pub purpose: Option<String>,
    /// allow / deny / error.
    pub decision: String,
    /// dataset.read, scenario.part, proxy.
    pub action: String,
    /// Service case id.
    pub case_id: Option<String>,
}

/// Where the index stands in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// Last record covered (0: none).
    pub last_seq: u64,
    /// Its hash (empty when none).
    pub last_hash: String,
    /// Hash of the log's first record (empty when none): which log this is.
    pub first_hash: String,
}

/// One subject's accesses, newest first.
#[derive(Debug, Clone, Default)]
pub struct AccessQuery {
    /// The subject reference (32 raw bytes).
    pub subject: [u8; 32],
    /// Only records with seq below this (paging), newest first.
    pub before_seq: Option<u64>,
    /// Records at or after this time (microseconds).
    pub since_us: Option<i64>,
    /// Records before this time (microseconds).
    pub until_us: Option<i64>,
    /// Only these datasets (the subject kind's), or records without a dataset.
    pub datasets: Vec<String>,
    /// Records of these purposes are left out when newer than the cutoff
    /// (microseconds): purposes withheld for a period.
    pub withheld: Vec<(String, i64)>,
    /// Page size.
    pub limit: u32,
}

/// One access as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRow {
    /// The record's sequence number (for the cursor).
    pub seq: u64,
    /// Microseconds since the epoch.
    pub time_us: i64,
    /// Client id.
    pub client: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// Dataset.
    pub dataset: Option<String>,
    /// Scenario.
    pub scenario: Option<String>,
    /// Purpose.
    pub purpose: Option<String>,
    /// Service case id.
    pub case_id: Option<String>,
    /// allow / deny / error.
    pub decision: String,
}

/// The index database (a small pool; one writer at a time).
#[derive(Debug, Clone)]
pub struct IndexDb {
    pool: SqlitePool,
}

impl IndexDb {
    /// Opens (creating when missing) the database at `path` and its schema.
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // A rollback journal, not WAL: every read transaction re-checks
            // the file header, so a file damaged under a running gateway is
            // noticed instead of being served from a page cache.
            .journal_mode(SqliteJournalMode::Delete)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&pool).await?;
        }
        Ok(Self { pool })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The schema version and position recorded in `meta` (`None` for a
    /// database that has none yet).
    pub async fn position(&self) -> Result<Option<(String, Position)>, sqlx::Error> {
        let rows = sqlx::query("SELECT k, v FROM meta")
            .fetch_all(&self.pool)
            .await?;
        let mut m: HashMap<String, String> = HashMap::new();
        for r in rows {
            m.insert(r.try_get(0)?, r.try_get(1)?);
        }
        let Some(version) = m.remove("version") else {
            return Ok(None);
        };
        Ok(Some((
            version,
            Position {
                last_seq: m.get("last_seq").and_then(|s| s.parse().ok()).unwrap_or(0),
                last_hash: m.remove("last_hash").unwrap_or_default(),
                first_hash: m.remove("first_hash").unwrap_or_default(),
            },
        )))
    }

    /// Appends rows and moves the position, in one transaction. `names` is
    /// the caller's cache of name ids (cleared by the caller on error).
    pub async fn apply(
        &self,
        names: &mut HashMap<String, i64>,
        rows: &[IndexRow],
        to: &Position,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for r in rows {
            let subject: i64 = sqlx::query_scalar(
                "INSERT INTO subjects(ref) VALUES (?1)
                 ON CONFLICT(ref) DO UPDATE SET ref = excluded.ref RETURNING id",
            )
            .bind(&r.subject[..])
            .fetch_one(&mut *tx)
            .await?;
            let mut ids = [None; 7];
            let values = [
                r.client.as_deref(),
                r.department.as_deref(),
                r.dataset.as_deref(),
                r.scenario.as_deref(),
                r.purpose.as_deref(),
                Some(r.decision.as_str()),
                Some(r.action.as_str()),
            ];
            for (slot, v) in ids.iter_mut().zip(values) {
                let Some(v) = v else { continue };
                if let Some(id) = names.get(v) {
                    *slot = Some(*id);
                    continue;
                }
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO names(name) VALUES (?1)
                     ON CONFLICT(name) DO UPDATE SET name = excluded.name RETURNING id",
                )
                .bind(v)
                .fetch_one(&mut *tx)
                .await?;
                names.insert(v.to_string(), id);
                *slot = Some(id);
            }
            sqlx::query(
                "INSERT OR REPLACE INTO accesses
                 (subject, seq, time_us, client, department, dataset, scenario, purpose, decision, action, case_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .bind(subject)
            .bind(i64::try_from(r.seq).unwrap_or(i64::MAX))
            .bind(r.time_us)
            .bind(ids[0])
            .bind(ids[1])
            .bind(ids[2])
            .bind(ids[3])
            .bind(ids[4])
            .bind(ids[5])
            .bind(ids[6])
            .bind(r.case_id.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        for (k, v) in [
            ("version", SCHEMA_VERSION.to_string()),
            ("last_seq", to.last_seq.to_string()),
            ("last_hash", to.last_hash.clone()),
            ("first_hash", to.first_hash.clone()),
        ] {
            sqlx::query("INSERT OR REPLACE INTO meta(k, v) VALUES (?1, ?2)")
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// One page of a subject's accesses, newest first, and the position
    /// the index covered when it answered (same read transaction).
    pub async fn accesses(
        &self,
        q: &AccessQuery,
    ) -> Result<(Vec<AccessRow>, Option<Position>), sqlx::Error> {
        let mut sql = String::from(
            "SELECT a.seq, a.time_us, c.name, dp.name, ds.name, sc.name, pu.name, a.case_id, de.name
             FROM accesses a
             LEFT JOIN names c ON c.id = a.client
             LEFT JOIN names dp ON dp.id = a.department
             LEFT JOIN names ds ON ds.id = a.dataset
             LEFT JOIN names sc ON sc.id = a.scenario
             LEFT JOIN names pu ON pu.id = a.purpose
             LEFT JOIN names de ON de.id = a.decision
             WHERE a.subject = (SELECT id FROM subjects WHERE ref = ?)
               AND a.seq < ? AND a.time_us >= ? AND a.time_us < ?",
        );
        if !q.datasets.is_empty() {
            sql.push_str(" AND (a.dataset IS NULL OR ds.name IN (");
            sql.push_str(&vec!["?"; q.datasets.len()].join(","));
            sql.push_str("))");
        }
        for _ in &q.withheld {
            sql.push_str(" AND NOT (pu.name IS ? AND a.time_us > ?)");
        }
        sql.push_str(" ORDER BY a.seq DESC LIMIT ?");
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(&q.subject[..])
            .bind(
                q.before_seq
                    .map_or(i64::MAX, |s| i64::try_from(s).unwrap_or(i64::MAX)),
            )
            .bind(q.since_us.unwrap_or(i64::MIN))
            .bind(q.until_us.unwrap_or(i64::MAX));
        for d in &q.datasets {
            query = query.bind(d.as_str());
        }
        for (p, cutoff) in &q.withheld {
            query = query.bind(p.as_str()).bind(*cutoff);
        }
        query = query.bind(i64::from(q.limit));
        let mut tx = self.pool.begin().await?;
        let rows = query.fetch_all(&mut *tx).await?;
        let meta =
            sqlx::query("SELECT k, v FROM meta WHERE k IN ('last_seq', 'last_hash', 'first_hash')")
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(AccessRow {
                seq: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                time_us: r.try_get(1)?,
                client: r.try_get(2)?,
                department: r.try_get(3)?,
                dataset: r.try_get(4)?,
                scenario: r.try_get(5)?,
                purpose: r.try_get(6)?,
                case_id: r.try_get(7)?,
                decision: r.try_get::<Option<String>, _>(8)?.unwrap_or_default(),
            });
        }
        let mut pos = Position::default();
        let mut found = 0;
        for r in meta {
            let (k, v): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            found += 1;
            match k.as_str() {
                "last_seq" => pos.last_seq = v.parse().unwrap_or(0),
                "last_hash" => pos.last_hash = v,
                _ => pos.first_hash = v,
            }
        }
        Ok((out, (found == 3).then_some(pos)))
    }

    /// The pool (benchmarks fill the table directly).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}
