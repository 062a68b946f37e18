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
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite};

/// Rows per multi-row insert: 11 bound values each, well under SQLite's
/// limit on bound values per statement (32 766).
pub const ROWS_PER_STATEMENT: usize = 256;

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
///
/// Writes are not synced (`synchronous = OFF`) when the machine's boot id is
/// known: the index is derived from the audit log, and an fsync of its own
/// per commit competed with the audit log's for the disk. SQLite keeps such
/// a file consistent across a crash of the process (the kernel still holds
/// every write), not across a crash of the machine; so each commit records
/// the boot it was written under, a clean close syncs the file once and says
/// so, and an index last written under another boot and not closed cleanly
/// is rebuilt from the log (see [`Session::survived`]).
#[derive(Debug, Clone)]
pub struct IndexDb {
    pool: SqlitePool,
    boot: Option<Arc<str>>,
}

/// How the index was last written: under which boot of the machine, and
/// whether it was closed cleanly (synced) afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// Boot id of the last writer (`None`: written with synced commits).
    pub boot: Option<String>,
    /// Closed cleanly after the last write.
    pub clean: bool,
}

impl Session {
    /// Whether the file can be trusted on the machine's boot `now`: written
    /// with synced commits, closed cleanly, or written since this boot (a
    /// process crash loses nothing the kernel had).
    pub fn survived(&self, now: Option<&str>) -> bool {
        match (&self.boot, now) {
            (None, _) => true,
            _ if self.clean => true,
            (Some(then), Some(now)) => then == now,
            (Some(_), None) => false,
        }
    }
}

/// This boot of the machine (Linux), `None` where it cannot be told.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl IndexDb {
    /// Opens (creating when missing) the database at `path` and its schema,
    /// for this boot of the machine.
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        Self::open_for_boot(path, boot_id()).await
    }

    /// [`IndexDb::open`] for a given boot id (`None`: synced commits).
    pub async fn open_for_boot(path: &Path, boot: Option<String>) -> Result<Self, sqlx::Error> {
        let synchronous = if boot.is_some() {
            SqliteSynchronous::Off
        } else {
            SqliteSynchronous::Normal
        };
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // A rollback journal, not WAL: every read transaction re-checks
            // the file header, so a file damaged under a running gateway is
            // noticed instead of being served from a page cache.
            .journal_mode(SqliteJournalMode::Delete)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&pool).await?;
        }
        Ok(Self {
            pool,
            boot: boot.map(Arc::from),
        })
    }

    /// Closes every connection. With unsynced commits, first syncs the file
    /// with one synced commit that marks it closed cleanly.
    pub async fn close(&self) {
        if self.boot.is_some()
            && let Err(e) = self.mark_clean().await
        {
            tracing::debug!(error = %e, "subject index: could not mark the file closed cleanly");
        }
        self.pool.close().await;
    }

    /// Closes every connection without marking the file closed cleanly:
    /// for a file that is not to be trusted.
    pub async fn discard(&self) {
        self.pool.close().await;
    }

    async fn mark_clean(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT OR REPLACE INTO meta(k, v) VALUES ('clean', '1')")
            .execute(&mut *conn)
            .await?;
        // Back to the pool's setting before the connection is reused.
        sqlx::query("PRAGMA synchronous = OFF")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// The boot id this handle writes under (`None`: synced commits).
    pub fn boot(&self) -> Option<&str> {
        self.boot.as_deref()
    }

    /// How the file was last written (`meta`'s `boot` and `clean`).
    pub async fn session(&self) -> Result<Session, sqlx::Error> {
        let rows = sqlx::query("SELECT k, v FROM meta WHERE k IN ('boot', 'clean')")
            .fetch_all(&self.pool)
            .await?;
        let mut s = Session::default();
        for r in rows {
            let (k, v): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            match k.as_str() {
                "boot" => s.boot = Some(v),
                _ => s.clean = v == "1",
            }
        }
        Ok(s)
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
    ///
    /// Rows go in as multi-row statements, [`ROWS_PER_STATEMENT`] at a time:
    /// every statement is a round trip to SQLite's worker thread, and one
    /// per row cost more than the inserts themselves.
    pub async fn apply(
        &self,
        names: &mut HashMap<String, i64>,
        rows: &[IndexRow],
        to: &Position,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Name ids first: almost always from the cache.
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows {
            let mut row_ids = [None; 7];
            let values = [
                r.client.as_deref(),
                r.department.as_deref(),
                r.dataset.as_deref(),
                r.scenario.as_deref(),
                r.purpose.as_deref(),
                Some(r.decision.as_str()),
                Some(r.action.as_str()),
            ];
            for (slot, v) in row_ids.iter_mut().zip(values) {
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
            ids.push(row_ids);
        }
        for (chunk, chunk_ids) in rows
            .chunks(ROWS_PER_STATEMENT)
            .zip(ids.chunks(ROWS_PER_STATEMENT))
        {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO subjects(ref) ");
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.subject.to_vec());
            });
            q.push("ON CONFLICT(ref) DO NOTHING");
            q.build().execute(&mut *tx).await?;

            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR REPLACE INTO accesses (subject, seq, time_us, client, department, \
                 dataset, scenario, purpose, decision, action, case_id) ",
            );
            q.push_values(chunk.iter().zip(chunk_ids), |mut b, (r, ids)| {
                b.push("(SELECT id FROM subjects WHERE ref = ")
                    .push_bind_unseparated(r.subject.to_vec())
                    .push_unseparated(")")
                    .push_bind(i64::try_from(r.seq).unwrap_or(i64::MAX))
                    .push_bind(r.time_us);
                for id in ids {
                    b.push_bind(*id);
                }
                b.push_bind(r.case_id.clone());
            });
            q.build().execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT OR REPLACE INTO meta(k, v) VALUES
             ('version', ?1), ('last_seq', ?2), ('last_hash', ?3), ('first_hash', ?4), ('clean', '0')",
        )
        .bind(SCHEMA_VERSION)
        .bind(to.last_seq.to_string())
        .bind(to.last_hash.clone())
        .bind(to.first_hash.clone())
        .execute(&mut *tx)
        .await?;
        if let Some(boot) = &self.boot {
            sqlx::query("INSERT OR REPLACE INTO meta(k, v) VALUES ('boot', ?1)")
                .bind(boot.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, subject: u8, case: Option<&str>) -> IndexRow {
        IndexRow {
            seq,
            time_us: 1_000 + seq as i64,
            subject: [subject; 32],
            client: Some("portal-binhai".into()),
            department: Some("market-supervision".into()),
            dataset: Some("business-licence".into()),
            scenario: seq.is_multiple_of(2).then(|| "open-restaurant".into()),
            purpose: Some("service-handling".into()),
            decision: if seq.is_multiple_of(7) {
                "deny"
            } else {
                "allow"
            }
            .into(),
            action: "dataset.read".into(),
            case_id: case.map(str::to_string),
        }
    }

    fn query(subject: u8, limit: u32) -> AccessQuery {
        AccessQuery {
            subject: [subject; 32],
            before_seq: None,
            since_us: None,
            until_us: None,
            datasets: Vec::new(),
            withheld: Vec::new(),
            limit,
        }
    }

    // Batches larger than one multi-row statement, subjects seen again in a
    // later batch, names first met mid-batch: every row lands on its subject
    // with its own fields, and the position moves with the last batch.
    #[tokio::test]
    async fn multi_row_inserts_keep_every_row_on_its_subject() {
        let dir = tempfile::tempdir().unwrap();
        let db = IndexDb::open(&dir.path().join("i.sqlite")).await.unwrap();
        let mut names = HashMap::new();
        let first: Vec<IndexRow> = (1..=600)
            .map(|s| row(s, (s % 3) as u8, (s == 5).then_some("case-5")))
            .collect();
        let pos = |last_seq: u64| Position {
            last_seq,
            last_hash: format!("h{last_seq}"),
            first_hash: "h1".into(),
        };
        db.apply(&mut names, &first, &pos(600)).await.unwrap();
        let second: Vec<IndexRow> = (601..=700).map(|s| row(s, 1, None)).collect();
        db.apply(&mut names, &second, &pos(700)).await.unwrap();

        let (subject2, at) = db.accesses(&query(2, 1000)).await.unwrap();
        assert_eq!(at, Some(pos(700)));
        let seqs: Vec<u64> = subject2.iter().map(|r| r.seq).collect();
        let want: Vec<u64> = (1..=600).rev().filter(|s| s % 3 == 2).collect();
        assert_eq!(seqs, want);
        let (subject1, _) = db.accesses(&query(1, 1000)).await.unwrap();
        assert_eq!(subject1.len(), 200 + 100);
        assert_eq!(subject1[0].seq, 700);
        let five = subject2.iter().find(|r| r.seq == 5).unwrap();
        assert_eq!(five.case_id.as_deref(), Some("case-5"));
        assert_eq!(five.scenario, None);
        assert_eq!(five.decision, "allow");
        let fourteen = subject2.iter().find(|r| r.seq == 14).unwrap();
        assert_eq!(fourteen.scenario.as_deref(), Some("open-restaurant"));
        assert_eq!(fourteen.decision, "deny");
        assert_eq!(fourteen.client.as_deref(), Some("portal-binhai"));
        assert_eq!(
            db.position().await.unwrap(),
            Some((SCHEMA_VERSION.to_string(), pos(700)))
        );
    }

    #[test]
    fn an_unsynced_index_is_trusted_only_in_its_own_boot_or_after_a_clean_close() {
        let s = |boot: Option<&str>, clean| Session {
            boot: boot.map(str::to_string),
            clean,
        };
        assert!(s(None, false).survived(Some("b")), "synced commits");
        assert!(s(Some("a"), false).survived(Some("a")), "a process crash");
        assert!(s(Some("a"), true).survived(Some("b")), "closed cleanly");
        assert!(!s(Some("a"), false).survived(Some("b")), "a machine crash");
        assert!(!s(Some("a"), false).survived(None), "cannot tell");
    }

    #[tokio::test]
    async fn writes_mark_the_boot_and_a_close_marks_the_file_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        let db = IndexDb::open_for_boot(&path, Some("boot-a".into()))
            .await
            .unwrap();
        let mut names = HashMap::new();
        db.apply(&mut names, &[row(1, 1, None)], &Position::default())
            .await
            .unwrap();
        let dirty = Session {
            boot: Some("boot-a".into()),
            clean: false,
        };
        assert_eq!(db.session().await.unwrap(), dirty);
        db.close().await;
        let db = IndexDb::open_for_boot(&path, Some("boot-b".into()))
            .await
            .unwrap();
        assert!(db.session().await.unwrap().clean);
        db.apply(&mut names, &[row(2, 1, None)], &Position::default())
            .await
            .unwrap();
        assert_eq!(
            db.session().await.unwrap(),
            Session {
                boot: Some("boot-b".into()),
                clean: false
            }
        );
        db.discard().await;
        let db = IndexDb::open_for_boot(&path, None).await.unwrap();
        assert!(!db.session().await.unwrap().clean, "discard marks nothing");
        db.discard().await;
    }
}
