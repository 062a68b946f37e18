//! The demo world's exchange databases (前置机): SQLite files created under
//! the data dir at first start, so the `sql` adapter kind runs without a
//! database server.

use std::path::Path;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::data::{COMPANY_FULL, COMPANY_NO_FIRE, COMPANY_REVOKED};

/// The schema and synthetic rows of the tax bureau's exchange database.
const TAX: &str = r#"
CREATE TABLE tax_credit (
    uscc          TEXT PRIMARY KEY,
    taxpayer_name TEXT NOT NULL,
    rating        TEXT NOT NULL,      -- 纳税信用级别: A级 B级 M级 C级 D级
    assessed_year INTEGER NOT NULL,
    arrears_cny   REAL NOT NULL DEFAULT 0
);
CREATE TABLE tax_arrears (
    uscc       TEXT NOT NULL REFERENCES tax_credit(uscc),
    tax_type   TEXT NOT NULL,
    amount_cny REAL NOT NULL,
    due_on     TEXT NOT NULL
);
INSERT INTO tax_credit VALUES
    ('{FULL}',    '天津港保税区海味轩餐饮管理有限公司', 'A级', 2025, 0),
    ('{NO_FIRE}', '天津港保税区渤海湾小馆餐饮有限公司', 'B级', 2025, 12850.5),
    ('{REVOKED}', '天津港保税区旧港湾餐饮有限公司',     'D级', 2025, 86400);
INSERT INTO tax_arrears VALUES
    ('{NO_FIRE}', '增值税',         9600,    '2026-10-15'),
    ('{NO_FIRE}', '城市维护建设税', 3250.5,  '2026-10-15'),
    ('{REVOKED}', '企业所得税',     86400,   '2026-05-31');
"#;

/// The seed of a demo department's exchange database, if it has one.
pub fn seed_for(department: &str) -> Option<String> {
    match department {
        "tax" => Some(
            TAX.replace("{FULL}", COMPANY_FULL)
                .replace("{NO_FIRE}", COMPANY_NO_FIRE)
                .replace("{REVOKED}", COMPANY_REVOKED),
        ),
        _ => None,
    }
}

/// Creates `path` from `seed` when it does not exist yet (written beside it
/// and renamed into place, so a crash never leaves half a database).
/// Returns true when it created the file.
pub async fn ensure(path: &Path, seed: &str) -> Result<bool, String> {
    if tokio::fs::try_exists(path).await.unwrap_or(false) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("sqlite.tmp");
    let _ = tokio::fs::remove_file(&tmp).await;
    let mut conn = SqliteConnectOptions::new()
        .filename(&tmp)
        .create_if_missing(true)
        .connect()
        .await
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(seed))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("cannot fill {}: {e}", tmp.display()))?;
    conn.close()
        .await
        .map_err(|e| format!("cannot close {}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| format!("cannot move {} into place: {e}", path.display()))?;
    Ok(true)
}
