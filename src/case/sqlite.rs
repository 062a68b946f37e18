//! The embedded case store: one SQLite file under the data dir
//! (`<data-dir>/cases.sqlite`), through sqlx (the same crate the `sql`
//! adapter uses). Each case is one row: its key, the columns the metrics
//! count by, a version for compare-and-swap, and the case itself as JSON.
//! The subjects a case must keep to be refreshed live here and nowhere
//! else: never in the audit log, never in a log line.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::store::{CaseCounts, CaseStore};
use super::{Case, CaseError};

/// Cases in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteCaseStore {
    pool: SqlitePool,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS cases (
    client    TEXT NOT NULL,
    case_id   TEXT NOT NULL,
    scenario  TEXT NOT NULL,
    open      INTEGER NOT NULL,
    supply_by INTEGER NOT NULL,
    version   INTEGER NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (client, case_id)
)";

const INDEX: &str = "CREATE INDEX IF NOT EXISTS cases_open ON cases (open, supply_by)";

fn store_err(e: impl std::fmt::Display) -> CaseError {
    CaseError::Store(e.to_string())
}

impl SqliteCaseStore {
    /// Opens (creating when missing) the store at `path`, readable by the
    /// gateway's user only.
    pub async fn open(path: &Path) -> Result<Self, CaseError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(store_err)?;
        }
        create_private(path).map_err(store_err)?;
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(store_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An accepted case must survive a power cut.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(store_err)?;
        sqlx::query(SCHEMA)
            .execute(&pool)
            .await
            .map_err(store_err)?;
        sqlx::query(INDEX).execute(&pool).await.map_err(store_err)?;
        Ok(Self { pool })
    }
}

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map(|_| ())
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

impl CaseStore for SqliteCaseStore {
    fn load<'a>(
        &'a self,
        client: &'a str,
        case_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Case>, CaseError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT body FROM cases WHERE client = ? AND case_id = ?")
                .bind(client)
                .bind(case_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let body: String = row.try_get("body").map_err(store_err)?;
            serde_json::from_str(&body).map(Some).map_err(store_err)
        })
    }

    fn save<'a>(&'a self, case: &'a Case) -> BoxFuture<'a, Result<(), CaseError>> {
        Box::pin(async move {
            let body = serde_json::to_string(case).map_err(store_err)?;
            let version = i64::try_from(case.version).map_err(store_err)?;
            let open = i64::from(!case.complete());
            let done = if case.version == 1 {
                sqlx::query(
                    "INSERT INTO cases (client, case_id, scenario, open, supply_by, version, body)
                     VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (client, case_id) DO NOTHING",
                )
                .bind(&case.client)
                .bind(&case.case_id)
                .bind(&case.scenario)
                .bind(open)
                .bind(case.supply_by)
                .bind(version)
                .bind(&body)
                .execute(&self.pool)
                .await
            } else {
                sqlx::query(
                    "UPDATE cases SET scenario = ?, open = ?, supply_by = ?, version = ?, body = ?
                     WHERE client = ? AND case_id = ? AND version = ?",
                )
                .bind(&case.scenario)
                .bind(open)
                .bind(case.supply_by)
                .bind(version)
                .bind(&body)
                .bind(&case.client)
                .bind(&case.case_id)
                .bind(version - 1)
                .execute(&self.pool)
                .await
            }
            .map_err(store_err)?;
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                Err(CaseError::Conflict(case.case_id.clone()))
            }
        })
    }

    fn counts(&self, now_micros: i64) -> BoxFuture<'_, Result<CaseCounts, CaseError>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT COUNT(*) AS open, COALESCE(SUM(supply_by < ?), 0) AS overdue
                 FROM cases WHERE open = 1",
            )
            .bind(now_micros)
            .fetch_one(&self.pool)
            .await
            .map_err(store_err)?;
            let open: i64 = row.try_get("open").map_err(store_err)?;
            let overdue: i64 = row.try_get("overdue").map_err(store_err)?;
            Ok(CaseCounts {
                open: u64::try_from(open).unwrap_or(0),
                overdue: u64::try_from(overdue).unwrap_or(0),
            })
        })
    }

    /// Closes the pool (waits for connections to finish).
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.close())
    }
}
