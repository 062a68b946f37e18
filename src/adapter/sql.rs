//! `kind = "sql"`: a department that shares through an exchange database
//! (前置机) instead of an API.
//!
//! ```toml
//! department = "tax"
//! kind = "sql"
//! database_url_env = "ONEWINDOW_DEPT_TAX__DATABASE_URL"   # postgres://user:secret@host/db
//! # database = "exchange/tax.sqlite"               # or: a SQLite file under the data dir
//! [pool]
//! max_connections = 4                               # default 4, at most 64
//!
//! [datasets.tax-credit]
//! query = "SELECT uscc, rating, arrears_cny FROM tax_credit WHERE uscc = {subject}"
//! [datasets.tax-credit.fields]
//! uscc = "uscc"                                     # canonical field = column
//! rating = { column = "rating", map = { "A" = "A", "M" = "M" } }
//! arrears = { items = { year = "assessed_year", amount_cny = "arrears_cny" } }  # one item per row
//! ```
//!
//! Like the HTTP kinds this is pure translation: [`SqlAdapter`] builds an
//! `http`-shaped call naming the dataset and the bound values (a JSON body)
//! and maps the rows that come back; the department side
//! (`crate::upstream::sql::SqlDepartment`) runs the query compiled here on
//! its pool, so bulkhead, timeouts, retries, breaker, cache and audit apply
//! to it exactly as to an HTTP department.
//!
//! Inputs never become SQL text: `{subject}`, `{subject.<kind>}`,
//! `{purpose}`, `{case_id}`, `{end_user}` and `{dataset}` are rewritten at
//! load into the database's parameters (`$1` / `?1`) and bound per call.
//! Queries that are not a single read-only SELECT are refused at load
//! ([`query`]), and the sessions are read-only anyway.

pub mod query;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use self::query::{Dialect, compile_query};
use super::compile::{DatasetInput, FieldRule, RawFieldRule};
use super::field::MappedField;
use super::spec::{CompiledKind, KindContext, type_name};
use super::template::Placeholder;
use super::{
    Adapter, AdapterError, CanonicalRequest, Endpoint, Record, UpstreamReply, UpstreamRequest,
};
use crate::config::{ConfigErrors, FieldType};

/// The kind name.
pub const KIND: &str = "sql";

/// Default number of pooled connections per department.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;
/// Most pooled connections a department may ask for.
pub const MAX_CONNECTIONS: u32 = 64;
/// Most rows one call may return (a record with an array field); more is a
/// department error, never a truncated answer.
pub const MAX_ROWS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSql {
    database_url_env: Option<String>,
    database: Option<String>,
    #[serde(default)]
    pool: RawPool,
    datasets: BTreeMap<String, RawDataset>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    max_connections: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    query: String,
    fields: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    column: Option<String>,
    #[serde(default)]
    map: BTreeMap<String, Value>,
    #[serde(default)]
    items: BTreeMap<String, String>,
}

impl RawFieldRule for RawRule {
    const HINT: &'static str = "write \"column\" or { column = \"c\", map = {..} } or \
                                { items = { key = \"column\", .. } }";

    fn shorthand(s: &str) -> Self {
        RawRule {
            column: Some(s.to_string()),
            map: BTreeMap::new(),
            items: BTreeMap::new(),
        }
    }

    fn value_map(&self) -> &BTreeMap<String, Value> {
        &self.map
    }
}

/// Where the exchange database is.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseSource {
    /// A URL read from the environment (`database_url_env`); it carries the
    /// password, so `Debug` never prints it.
    Url {
        /// The variable it came from.
        env: String,
        /// The URL (secret).
        url: String,
        /// Its database.
        dialect: Dialect,
    },
    /// A SQLite file, relative to the data dir (`database`).
    SqliteFile(PathBuf),
}

impl fmt::Debug for DatabaseSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseSource::Url { env, dialect, .. } => f
                .debug_struct("Url")
                .field("env", env)
                .field("dialect", dialect)
                .finish_non_exhaustive(),
            DatabaseSource::SqliteFile(p) => f.debug_tuple("SqliteFile").field(p).finish(),
        }
    }
}

impl DatabaseSource {
    /// The database's dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            DatabaseSource::Url { dialect, .. } => *dialect,
            DatabaseSource::SqliteFile(_) => Dialect::Sqlite,
        }
    }
}

/// What a column must hold, from the canonical field it feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A field of that canonical type (`Array` and `Object` never appear).
    Field(FieldType),
    /// A value looked up in a value map or placed in an array item: any
    /// text, number or boolean.
    Any,
}

/// One column the department side reads and converts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRule {
    /// The column's name in the query's result.
    pub column: String,
    /// The canonical field it feeds (named in errors).
    pub field: String,
    /// What it must hold.
    pub expect: ColumnType,
}

/// A dataset's compiled query and the columns to read from its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPlan {
    /// The SQL with numbered parameters.
    pub sql: Arc<str>,
    /// Number of parameters the call binds.
    pub params: usize,
    /// Columns to read, each once.
    pub columns: Vec<ColumnRule>,
}

/// Everything the department side needs: where the database is, the pool's
/// size and each dataset's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlEndpoint {
    /// The database.
    pub source: DatabaseSource,
    /// Pool size.
    pub max_connections: u32,
    /// Plans by dataset.
    pub plans: BTreeMap<String, Arc<QueryPlan>>,
}

/// The call the adapter sends to the department side (a JSON body).
#[derive(Debug, Serialize, Deserialize)]
pub struct SqlCall {
    /// Dataset whose plan to run.
    pub dataset: String,
    /// Bound values in parameter order; `null` for an absent optional input.
    pub params: Vec<Option<String>>,
}

/// The department side's answer: 200 with rows, 404 with none.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SqlRows {
    /// Each row: column -> converted value (only the plan's columns).
    pub rows: Vec<Map<String, Value>>,
}

/// The department side's answer when a row cannot be converted (status 500,
/// so the breaker counts it).
#[derive(Debug, Serialize, Deserialize)]
pub struct SqlFailure {
    /// `column-type`, `column-missing`, `too-many-rows`, `database`.
    pub error: String,
    /// The canonical field concerned, when one is.
    #[serde(default)]
    pub field: Option<String>,
}

/// Where a field's value is in the result rows.
#[derive(Debug)]
enum Rule {
    /// One column of the first row.
    Column(String),
    /// An array: per row, an object of these (key, column).
    Items(Vec<(String, String)>),
}

#[derive(Debug)]
struct Field {
    field: MappedField,
    rule: Rule,
}

#[derive(Debug)]
struct Dataset {
    name: String,
    params: Vec<Placeholder>,
    fields: Vec<Field>,
    many: bool,
}

/// The compiled sql adapter of one department.
#[derive(Debug)]
pub struct SqlAdapter {
    datasets: Vec<Dataset>,
}

/// Compiles a sql section.
pub fn compile(
    cx: &KindContext<'_>,
    section: Map<String, Value>,
) -> Result<CompiledKind, ConfigErrors> {
    let raw: RawSql = cx.parse_section(section)?;
    let mut errors = ConfigErrors::default();
    let source = source(cx, &raw, &mut errors);
    let max_connections = raw.pool.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if !(1..=MAX_CONNECTIONS).contains(&max_connections) {
        errors.push(cx.err(
            "pool.max_connections",
            format!("{max_connections} is outside 1..={MAX_CONNECTIONS}"),
            "pick a small pool; the department's bulkhead bounds concurrency too",
        ));
    }
    let dialect = source
        .as_ref()
        .map_or(Dialect::Postgres, DatabaseSource::dialect);
    let compiled = cx.compile_datasets(raw.datasets, &mut errors, |input, errors| {
        let DatasetInput {
            name,
            at,
            spec,
            raw: d,
        } = input;
        let compiled = match compile_query(&d.query, dialect) {
            Ok(q) => Some(q),
            Err(p) => {
                errors.push(cx.err(format!("{at}.query"), p.problem, p.fix));
                None
            }
        };
        let mut columns: Vec<ColumnRule> = Vec::new();
        let mut add_column = |column: &str, field: &str, expect: ColumnType| {
            // One conversion per column: a column feeding two fields is read
            // as the first one needs it.
            if !columns.iter().any(|c| c.column == column) {
                columns.push(ColumnRule {
                    column: column.to_string(),
                    field: field.to_string(),
                    expect,
                });
            }
        };
        let fields: Vec<Field> = cx
            .compile_fields(
                &spec,
                &d.fields,
                &format!("{at}.fields"),
                errors,
                |f: &FieldRule<'_, RawRule>, errors| column_rule(cx, f, &mut add_column, errors),
            )
            .into_iter()
            .map(|(field, rule)| Field { field, rule })
            .collect();
        let many = fields.iter().any(|f| matches!(f.rule, Rule::Items(_)));
        let q = compiled?;
        let plan = Arc::new(QueryPlan {
            sql: q.text,
            params: q.params.len(),
            columns,
        });
        Some((
            Dataset {
                name,
                params: q.params,
                fields,
                many,
            },
            plan,
        ))
    });
    let mut datasets = Vec::with_capacity(compiled.len());
    let mut plans = BTreeMap::new();
    for (d, plan) in compiled {
        plans.insert(d.name.clone(), plan);
        datasets.push(d);
    }
    let (Some(source), true) = (source, errors.is_empty()) else {
        return Err(errors);
    };
    let names = datasets.iter().map(|d| d.name.clone()).collect();
    Ok(CompiledKind {
        adapter: Box::new(SqlAdapter { datasets }),
        datasets: names,
        endpoint: Some(Endpoint::Sql(Arc::new(SqlEndpoint {
            source,
            max_connections,
            plans,
        }))),
    })
}

fn is_column_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

fn source(cx: &KindContext<'_>, raw: &RawSql, errors: &mut ConfigErrors) -> Option<DatabaseSource> {
    match (&raw.database_url_env, &raw.database) {
        (Some(env), None) => {
            let prefix = super::spec::secret_env_prefix(cx.department);
            let env_ok = super::spec::is_department_variable(env, cx.department);
            if !env_ok {
                // A department admin must not be able to point the gateway at
                // another variable (and so learn or misuse another secret).
                errors.push(cx.err(
                    "database_url_env",
                    format!("`{env}` is not one of this department's variables"),
                    format!("name a variable starting with {prefix}, e.g. {prefix}DATABASE_URL"),
                ));
                return None;
            }
            let Some(url) = (cx.secret)(env) else {
                errors.push(cx.err(
                    "database_url_env",
                    format!("environment variable `{env}` is not set"),
                    format!("export {env}=postgres://user:password@host:5432/db before starting"),
                ));
                return None;
            };
            let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                match sqlx::postgres::PgConnectOptions::from_str(&url) {
                    Ok(o) if o.get_socket().is_none() && !o.get_host().starts_with('/') => {
                        Some(Dialect::Postgres)
                    }
                    Ok(_) => {
                        errors.push(cx.err(
                            "database_url_env",
                            format!("the URL in `{env}` names a Unix socket"),
                            "connect over TCP: postgres://user:password@host:port/db",
                        ));
                        None
                    }
                    Err(_) => {
                        // The message could quote the password: not repeated.
                        errors.push(cx.err(
                            "database_url_env",
                            format!("the value of `{env}` is not a valid PostgreSQL URL"),
                            "set it to postgres://user:password@host:port/db",
                        ));
                        None
                    }
                }
            } else if url.starts_with("sqlite:") {
                Some(Dialect::Sqlite)
            } else {
                errors.push(cx.err(
                    "database_url_env",
                    format!("the value of `{env}` is neither a postgres:// nor a sqlite: URL"),
                    "set it to postgres://user:password@host:port/db",
                ));
                None
            };
            dialect.map(|dialect| DatabaseSource::Url {
                env: env.clone(),
                url,
                dialect,
            })
        }
        (None, Some(file)) => {
            let p = Path::new(file);
            let ok = p.components().count() > 0
                && p.components().all(|c| matches!(c, Component::Normal(_)));
            if !ok {
                errors.push(cx.err(
                    "database",
                    format!("`{file}` is not a relative path inside the data dir"),
                    "write a path such as exchange/tax.sqlite (no `..`, not absolute)",
                ));
                return None;
            }
            Some(DatabaseSource::SqliteFile(p.to_path_buf()))
        }
        (Some(_), Some(_)) => {
            errors.push(cx.err(
                "database",
                "both `database_url_env` and `database` are set",
                "keep one: a URL from the environment, or a SQLite file under the data dir",
            ));
            None
        }
        (None, None) => {
            errors.push(cx.err(
                "database_url_env",
                "the adapter names no database",
                "set database_url_env = \"ONEWINDOW_DEPT_<DEPARTMENT>__DATABASE_URL\" \
                 (or database = \"<file>.sqlite\" under the data dir)",
            ));
            None
        }
    }
}

impl SqlAdapter {
    fn dataset(&self, name: &str) -> Result<&Dataset, AdapterError> {
        self.datasets
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| AdapterError::UnknownDataset(name.to_string()))
    }
}

impl Adapter for SqlAdapter {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build_request(&self, req: &CanonicalRequest<'_>) -> Result<UpstreamRequest, AdapterError> {
        let d = self.dataset(req.dataset)?;
        let mut params = Vec::with_capacity(d.params.len());
        for p in &d.params {
            let v = p.value(req)?;
            if let Some(v) = v
                && v.contains('\0')
            {
                // Neither database stores NUL in text; refused, never cut.
                return Err(AdapterError::InvalidInput {
                    input: p.name(),
                    target: "sql",
                    reason: "NUL characters cannot be bound",
                });
            }
            params.push(v.map(str::to_string));
        }
        let body = serde_json::to_vec(&SqlCall {
            dataset: d.name.clone(),
            params,
        })
        .map_err(|e| AdapterError::InvalidInput {
            input: "params".into(),
            target: "sql",
            reason: if e.is_io() { "io" } else { "not serialisable" },
        })?;
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        Ok(UpstreamRequest {
            // GET: a read, so the retry policy treats it as idempotent.
            method: Method::GET,
            path_and_query: format!("/{}", d.name),
            headers,
            body: Bytes::from(body),
        })
    }

    fn map_response(
        &self,
        dataset: &str,
        reply: UpstreamReply<'_>,
    ) -> Result<Record, AdapterError> {
        let d = self.dataset(dataset)?;
        match reply.status.as_u16() {
            200 => {}
            404 => return Err(AdapterError::RecordNotFound),
            status => {
                if let Ok(SqlFailure {
                    field: Some(field), ..
                }) = serde_json::from_slice::<SqlFailure>(reply.body)
                    && let Some(f) = d.fields.iter().find(|f| f.field.name == field)
                {
                    return Err(f.field.type_error());
                }
                return Err(AdapterError::DepartmentStatus(status));
            }
        }
        let rows: SqlRows = serde_json::from_slice(reply.body)
            .map_err(|e| AdapterError::MalformedReply(format!("not the rows JSON: {e}")))?;
        let Some(first) = rows.rows.first() else {
            return Err(AdapterError::RecordNotFound);
        };
        if rows.rows.len() > 1 && !d.many {
            return Err(AdapterError::MalformedReply(format!(
                "the query returned {} rows for one record (map an array field with items, \
                 or narrow the query)",
                rows.rows.len()
            )));
        }
        let mut out = Record::new();
        for f in &d.fields {
            let v = match &f.rule {
                Rule::Items(items) => {
                    // A row whose item columns are all NULL (a LEFT JOIN
                    // without a match) adds no item: the list is empty.
                    let list = rows
                        .rows
                        .iter()
                        .filter_map(|row| {
                            let mut item = Map::new();
                            for (key, column) in items {
                                match row.get(column) {
                                    None | Some(Value::Null) => {}
                                    Some(v) => {
                                        item.insert(key.clone(), v.clone());
                                    }
                                }
                            }
                            (!item.is_empty()).then_some(Value::Object(item))
                        })
                        .collect();
                    Some(Value::Array(list))
                }
                Rule::Column(column) => match first.get(column) {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(f.field.convert_json(v)?),
                },
            };
            f.field.put(&mut out, v)?;
        }
        Ok(out)
    }
}

/// The sql part of one field rule: a column (its conversion registered
/// with `add_column`), or `items` (an array of one object per row, a column
/// per key). `None` once the reason is recorded.
fn column_rule(
    cx: &KindContext<'_>,
    f: &FieldRule<'_, RawRule>,
    add_column: &mut impl FnMut(&str, &str, ColumnType),
    errors: &mut ConfigErrors,
) -> Option<Rule> {
    let FieldRule {
        at: fat,
        spec: fs,
        rule: raw_rule,
    } = f;
    let fname = fs.name.as_str();
    let rule = match (&raw_rule.column, raw_rule.items.is_empty()) {
        (Some(c), true) => {
            if !is_column_name(c) {
                errors.push(cx.err(
                    format!("{fat}.column"),
                    format!("`{c}` is not a column name"),
                    "name a column of the query's result (letters, digits, _)",
                ));
                return None;
            }
            if matches!(fs.ty, FieldType::Array | FieldType::Object) {
                errors.push(cx.err(
                    fat.as_str(),
                    format!(
                        "`{fname}` is an {}; a column holds one value",
                        type_name(fs.ty)
                    ),
                    "map an array field with { items = { key = \"column\", .. } }",
                ));
                return None;
            }
            // A mapped column is read as it comes; the map decides.
            let expect = if raw_rule.map.is_empty() {
                ColumnType::Field(fs.ty)
            } else {
                ColumnType::Any
            };
            add_column(c, fname, expect);
            Rule::Column(c.clone())
        }
        (None, false) => {
            if fs.ty != FieldType::Array {
                errors.push(cx.err(
                    format!("{fat}.items"),
                    format!(
                        "`items` needs an array field; `{fname}` is a {}",
                        type_name(fs.ty)
                    ),
                    "map it with \"column\" or change the canonical type to array",
                ));
                return None;
            }
            if !raw_rule.map.is_empty() {
                errors.push(cx.err(fat.as_str(), "use either `map` or `items`", "remove one"));
                return None;
            }
            let mut items = Vec::new();
            for (k, c) in &raw_rule.items {
                if !is_column_name(c) {
                    errors.push(cx.err(
                        format!("{fat}.items.{k}"),
                        format!("`{c}` is not a column name"),
                        "name a column of the query's result (letters, digits, _)",
                    ));
                    continue;
                }
                add_column(c, fname, ColumnType::Any);
                items.push((k.clone(), c.clone()));
            }
            Rule::Items(items)
        }
        _ => {
            errors.push(cx.err(
                fat.as_str(),
                "a field takes either `column` or `items`",
                "write { column = \"c\" } for a value, { items = {..} } for an array of rows",
            ));
            return None;
        }
    };
    Some(rule)
}
