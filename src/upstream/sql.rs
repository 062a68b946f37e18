//! A department reached through its exchange database (adapter kind `sql`).
//!
//! [`SqlDepartment`] answers the calls the `sql` adapter builds (a JSON body
//! naming the dataset and the bound values) the way an HTTP department would:
//! it runs the dataset's query, compiled and checked at load, on the
//! department's own pool and answers a [`Reply`]: 200 with the rows, 404 when
//! there is none, 500 when a row cannot be converted to the canonical type of
//! the field it feeds (so the breaker counts it as the department's failure).
//! Connection trouble is an [`UpstreamError`] like a refused TCP connect.
//!
//! Sessions are read-only whatever the query says: PostgreSQL sessions start
//! with `default_transaction_read_only=on` (the startup-parameter form of
//! `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`) and a
//! `statement_timeout`; SQLite files are opened with `SQLITE_OPEN_READONLY`
//! (`mode=ro`) and `PRAGMA query_only`. The PostgreSQL host passes the
//! department's address policy like an HTTP `base_url`, and the pool connects
//! to the checked address only.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Number, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgValueFormat};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Row, TypeInfo, ValueRef};

use super::Reply;
use crate::adapter::sql::{
    ColumnRule, ColumnType, DatabaseSource, MAX_ROWS, QueryPlan, SqlCall, SqlEndpoint, SqlFailure,
    SqlRows,
};
use crate::adapter::ssrf::{SystemResolver, check_target};
use crate::adapter::{AllowList, UpstreamTarget};
use crate::config::FieldType;
use crate::error::UpstreamError;

/// Timeouts of a SQL department, from its `[departments.<name>.protect]`.
#[derive(Debug, Clone, Copy)]
pub struct SqlTimeouts {
    /// Longest wait for a pooled connection (opening one included).
    pub acquire: Duration,
    /// Longest a statement may run on the server (PostgreSQL
    /// `statement_timeout`, SQLite busy timeout).
    pub statement: Duration,
}

#[derive(Debug, Clone)]
enum DbPool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// One department's exchange database: its pool and compiled queries.
#[derive(Debug, Clone)]
pub struct SqlDepartment {
    department: Arc<str>,
    pool: DbPool,
    plans: Arc<BTreeMap<String, Arc<QueryPlan>>>,
}

impl SqlDepartment {
    /// Builds the department's pool without connecting (the first call
    /// connects, so a database that is down at start is a 502 later, not a
    /// refused start). A PostgreSQL host is resolved and checked against
    /// `allow` now, and only the checked address is used. A SQLite file is
    /// relative to `data_dir` and is never created.
    pub async fn connect(
        department: &str,
        endpoint: &SqlEndpoint,
        data_dir: &Path,
        allow: &AllowList,
        timeouts: SqlTimeouts,
    ) -> Result<Self, String> {
        let pool = match &endpoint.source {
            DatabaseSource::SqliteFile(rel) => DbPool::Sqlite(sqlite_pool(
                SqliteConnectOptions::new().filename(data_dir.join(rel)),
                endpoint.max_connections,
                timeouts,
            )),
            DatabaseSource::Url { url, env, dialect } => match dialect {
                crate::adapter::sql::query::Dialect::Sqlite => {
                    let o = SqliteConnectOptions::from_str(url)
                        .map_err(|_| format!("the value of `{env}` is not a valid SQLite URL"))?;
                    DbPool::Sqlite(sqlite_pool(o, endpoint.max_connections, timeouts))
                }
                crate::adapter::sql::query::Dialect::Postgres => {
                    let o = PgConnectOptions::from_str(url).map_err(|_| {
                        format!("the value of `{env}` is not a valid PostgreSQL URL")
                    })?;
                    let o = pin_postgres_host(o, allow).await?;
                    DbPool::Postgres(postgres_pool(o, endpoint.max_connections, timeouts))
                }
            },
        };
        Ok(Self {
            department: Arc::from(department),
            pool,
            plans: Arc::new(endpoint.plans.clone()),
        })
    }

    /// The department's name.
    pub fn department(&self) -> &str {
        &self.department
    }

    /// Answers one call built by the `sql` adapter (`body` is its JSON),
    /// within `timeout`, refusing answers over `max_reply` bytes.
    pub async fn send(
        &self,
        body: &[u8],
        timeout: Duration,
        max_reply: usize,
    ) -> Result<Reply, UpstreamError> {
        let Ok(call) = serde_json::from_slice::<SqlCall>(body) else {
            return Ok(failure(StatusCode::BAD_REQUEST, "bad-call", None));
        };
        let Some(plan) = self.plans.get(&call.dataset) else {
            return Ok(failure(StatusCode::NOT_FOUND, "unknown-dataset", None));
        };
        if call.params.len() != plan.params {
            return Ok(failure(StatusCode::BAD_REQUEST, "bad-call", None));
        }
        let work = async {
            match &self.pool {
                DbPool::Postgres(p) => {
                    let mut q = sqlx::query(AssertSqlSafe(plan.sql.clone()));
                    for v in &call.params {
                        q = q.bind(v.clone());
                    }
                    collect(q.fetch(p), plan, pg_cell).await
                }
                DbPool::Sqlite(p) => {
                    let mut q = sqlx::query(AssertSqlSafe(plan.sql.clone()));
                    for v in &call.params {
                        q = q.bind(v.clone());
                    }
                    collect(q.fetch(p), plan, sqlite_cell).await
                }
            }
        };
        let outcome = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => return Err(UpstreamError::Timeout(timeout)),
        };
        match outcome {
            Ok(Collected::Rows(rows)) => {
                let status = if rows.is_empty() {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::OK
                };
                let body = serde_json::to_vec(&SqlRows { rows })
                    .map_err(|e| UpstreamError::Broken(format!("rows not serialisable: {e}")))?;
                if body.len() > max_reply {
                    return Err(UpstreamError::ReplyTooLarge { limit: max_reply });
                }
                Ok(json_reply(status, Bytes::from(body)))
            }
            Ok(Collected::Failure { error, field }) => {
                tracing::warn!(
                    department = &*self.department,
                    dataset = call.dataset,
                    error,
                    field = field.as_deref(),
                    "exchange database row not usable"
                );
                Ok(failure(StatusCode::INTERNAL_SERVER_ERROR, error, field))
            }
            Err(e) => self.classify(&call.dataset, e),
        }
    }

    /// Turns a driver error into the answer an HTTP department would give.
    fn classify(&self, dataset: &str, e: sqlx::Error) -> Result<Reply, UpstreamError> {
        match e {
            sqlx::Error::PoolTimedOut => Err(UpstreamError::Timeout(Duration::ZERO)),
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // 57014: statement_timeout; 57P01..57P03 / class 08:
                // terminated or lost connection; SQLite 5/6: busy/locked.
                if code == "57014" || code == "5" || code == "6" {
                    return Err(UpstreamError::Timeout(Duration::ZERO));
                }
                if code.starts_with("57P") || code.starts_with("08") {
                    return Err(UpstreamError::Broken(format!(
                        "database session ended ({code})"
                    )));
                }
                tracing::warn!(
                    department = &*self.department,
                    dataset,
                    code,
                    message = db.message(),
                    "exchange database refused the query"
                );
                Ok(failure(StatusCode::INTERNAL_SERVER_ERROR, "database", None))
            }
            other => Err(UpstreamError::Broken(other.to_string())),
        }
    }
}

impl super::Department for SqlDepartment {
    /// The adapter's call is in the body; method, headers and path only name
    /// it (`GET /<dataset>`), so they are not read here.
    fn send<'a>(
        &'a self,
        req: http::Request<http_body_util::Full<Bytes>>,
        _path_and_query: &'a str,
        timeout: Duration,
        max_reply: usize,
    ) -> super::SendFuture<'a> {
        Box::pin(async move {
            let body = match http_body_util::BodyExt::collect(req.into_body()).await {
                Ok(b) => b.to_bytes(),
                Err(never) => match never {},
            };
            SqlDepartment::send(self, &body, timeout, max_reply).await
        })
    }

    fn describe(&self) -> String {
        format!("sql department {}", self.department)
    }
}

fn sqlite_pool(o: SqliteConnectOptions, max: u32, t: SqlTimeouts) -> SqlitePool {
    let o = o
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(t.statement)
        .pragma("query_only", "ON");
    SqlitePoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .acquire_timeout(t.acquire)
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(o)
}

fn postgres_pool(o: PgConnectOptions, max: u32, t: SqlTimeouts) -> PgPool {
    let statement_ms = t.statement.as_millis().max(1).to_string();
    let o = o.application_name("onewindow").options([
        ("default_transaction_read_only", "on"),
        ("statement_timeout", statement_ms.as_str()),
    ]);
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .acquire_timeout(t.acquire)
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(o)
}

/// Checks the PostgreSQL host against the department's address policy and
/// pins the connection to the first checked address.
async fn pin_postgres_host(
    o: PgConnectOptions,
    allow: &AllowList,
) -> Result<PgConnectOptions, String> {
    let host = o.get_host();
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let target = UpstreamTarget::parse(&format!("http://{host}:{}", o.get_port()))
        .map_err(|e| format!("database host: {e}"))?;
    let checked = check_target(&target, allow, &SystemResolver)
        .await
        .map_err(|e| format!("database host: {e}"))?;
    let Some(addr) = checked.addrs.first() else {
        return Err("database host resolves to no address".into());
    };
    Ok(o.host(&addr.ip().to_string()).port(addr.port()))
}

enum Collected {
    Rows(Vec<Map<String, Value>>),
    Failure {
        error: &'static str,
        field: Option<String>,
    },
}

/// Why one cell could not be read.
enum CellError {
    Missing,
    Unsupported,
}

async fn collect<R, S>(
    mut rows: S,
    plan: &QueryPlan,
    cell: fn(&R, &str) -> Result<Value, CellError>,
) -> Result<Collected, sqlx::Error>
where
    S: futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin,
{
    let mut out = Vec::new();
    while let Some(row) = rows.try_next().await? {
        if out.len() == MAX_ROWS {
            return Ok(Collected::Failure {
                error: "too-many-rows",
                field: None,
            });
        }
        match convert(&row, plan, cell) {
            Ok(m) => out.push(m),
            Err(f) => return Ok(f),
        }
    }
    Ok(Collected::Rows(out))
}

fn convert<R>(
    row: &R,
    plan: &QueryPlan,
    cell: fn(&R, &str) -> Result<Value, CellError>,
) -> Result<Map<String, Value>, Collected> {
    let mut m = Map::with_capacity(plan.columns.len());
    for c in &plan.columns {
        let v = cell(row, &c.column).map_err(|e| Collected::Failure {
            error: match e {
                CellError::Missing => "column-missing",
                CellError::Unsupported => "column-type",
            },
            field: Some(c.field.clone()),
        })?;
        let v = coerce(c, v).ok_or_else(|| Collected::Failure {
            error: "column-type",
            field: Some(c.field.clone()),
        })?;
        m.insert(c.column.clone(), v);
    }
    Ok(m)
}

/// Checks a read value against what its field needs; the one conversion is
/// 0/1 to a boolean (SQLite has no boolean type).
fn coerce(c: &ColumnRule, v: Value) -> Option<Value> {
    if v.is_null() {
        return Some(v);
    }
    match c.expect {
        ColumnType::Any => Some(v),
        ColumnType::Field(FieldType::Boolean) => match v.as_i64() {
            Some(0) => Some(Value::Bool(false)),
            Some(1) => Some(Value::Bool(true)),
            _ => v.is_boolean().then_some(v),
        },
        ColumnType::Field(ty) => ty.accepts(&v).then_some(v),
    }
}

fn pg_cell(row: &PgRow, column: &str) -> Result<Value, CellError> {
    let raw = row.try_get_raw(column).map_err(|_| CellError::Missing)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let ty = raw.type_info().name().to_string();
    let bad = |_| CellError::Unsupported;
    Ok(match ty.as_str() {
        "BOOL" => Value::Bool(row.try_get::<bool, _>(column).map_err(bad)?),
        "INT2" => Value::from(row.try_get::<i16, _>(column).map_err(bad)?),
        "INT4" => Value::from(row.try_get::<i32, _>(column).map_err(bad)?),
        "INT8" => Value::from(row.try_get::<i64, _>(column).map_err(bad)?),
        "FLOAT4" => float(f64::from(row.try_get::<f32, _>(column).map_err(bad)?))?,
        "FLOAT8" => float(row.try_get::<f64, _>(column).map_err(bad)?)?,
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" => {
            Value::String(row.try_get::<String, _>(column).map_err(bad)?)
        }
        "DATE" => {
            let raw = row.try_get_raw(column).map_err(|_| CellError::Missing)?;
            match raw.format() {
                PgValueFormat::Binary => {
                    let b: [u8; 4] = raw
                        .as_bytes()
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or(CellError::Unsupported)?;
                    Value::String(pg_date(i32::from_be_bytes(b)).ok_or(CellError::Unsupported)?)
                }
                PgValueFormat::Text => Value::String(
                    raw.as_str()
                        .map_err(|_| CellError::Unsupported)?
                        .to_string(),
                ),
            }
        }
        _ => return Err(CellError::Unsupported),
    })
}

fn sqlite_cell(row: &SqliteRow, column: &str) -> Result<Value, CellError> {
    let raw = row.try_get_raw(column).map_err(|_| CellError::Missing)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let ty = raw.type_info().name().to_string();
    let bad = |_| CellError::Unsupported;
    Ok(match ty.as_str() {
        "INTEGER" => Value::from(row.try_get::<i64, _>(column).map_err(bad)?),
        "REAL" => float(row.try_get::<f64, _>(column).map_err(bad)?)?,
        "TEXT" => Value::String(row.try_get::<String, _>(column).map_err(bad)?),
        _ => return Err(CellError::Unsupported),
    })
}

fn float(f: f64) -> Result<Value, CellError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or(CellError::Unsupported)
}

/// A PostgreSQL binary DATE (days since 2000-01-01) as `YYYY-MM-DD`; `None`
/// for infinity and years outside 1..=9999.
fn pg_date(days: i32) -> Option<String> {
    // Days from 1970-01-01, then Howard Hinnant's civil_from_days.
    let z = i64::from(days) + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (1..=9999)
        .contains(&y)
        .then(|| format!("{y:04}-{m:02}-{d:02}"))
}

fn json_reply(status: StatusCode, body: Bytes) -> Reply {
    let mut headers = HeaderMap::with_capacity(1);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Reply {
        status,
        headers,
        body,
    }
}

fn failure(status: StatusCode, error: &str, field: Option<String>) -> Reply {
    let body = serde_json::to_vec(&SqlFailure {
        error: error.to_string(),
        field,
    })
    .unwrap_or_default();
    json_reply(status, Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_dates_convert() {
        assert_eq!(pg_date(0).as_deref(), Some("2000-01-01"));
        assert_eq!(pg_date(-1).as_deref(), Some("1999-12-31"));
        assert_eq!(pg_date(59).as_deref(), Some("2000-02-29"));
        assert_eq!(pg_date(9_587).as_deref(), Some("2026-04-01"));
        assert_eq!(pg_date(i32::MAX), None);
    }

    fn rule(expect: ColumnType) -> ColumnRule {
        ColumnRule {
            column: "c".into(),
            field: "f".into(),
            expect,
        }
    }

    #[test]
    fn values_are_checked_against_their_field() {
        use serde_json::json;
        let int = rule(ColumnType::Field(FieldType::Integer));
        assert_eq!(coerce(&int, json!(3)), Some(json!(3)));
        assert_eq!(coerce(&int, json!("3")), None);
        assert_eq!(coerce(&int, json!(3.5)), None);
        let b = rule(ColumnType::Field(FieldType::Boolean));
        assert_eq!(coerce(&b, json!(1)), Some(json!(true)));
        assert_eq!(coerce(&b, json!(0)), Some(json!(false)));
        assert_eq!(coerce(&b, json!(2)), None);
        let d = rule(ColumnType::Field(FieldType::Date));
        assert_eq!(coerce(&d, json!("2026-01-31")), Some(json!("2026-01-31")));
        assert_eq!(coerce(&d, json!("31/01/2026")), None);
        assert_eq!(coerce(&d, Value::Null), Some(Value::Null));
    }
}
