//! A department query, checked at load: one read-only `SELECT` (or `WITH ...
//! SELECT`) whose inputs are placeholders bound as parameters.
//!
//! The check is lexical and deliberately strict: it refuses what it cannot
//! read with certainty (comments, backslashes and dollar quoting, raw
//! parameter markers) rather than guess how a database would parse it. The
//! session is read-only as well (see `upstream::sql`), so this is the first of
//! two locks, not the only one.

use std::fmt::Write as _;
use std::sync::Arc;

use super::super::template::Placeholder;

/// Longest query text accepted.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// How bound parameters are written in the database's dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL: `$1`, `$2`, ...
    Postgres,
    /// SQLite: `?1`, `?2`, ...
    Sqlite,
}

impl Dialect {
    /// Lowercase name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
        }
    }
}

/// A query ready to run: the text with numbered parameters, and which input
/// each parameter number takes (parameter `n` is `params[n - 1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledQuery {
    /// The SQL as sent to the database.
    pub text: Arc<str>,
    /// The inputs, in parameter order.
    pub params: Vec<Placeholder>,
}

/// Why a query was refused: a sentence for the operator and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryProblem {
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: &'static str,
}

fn refuse(problem: impl Into<String>, fix: &'static str) -> QueryProblem {
    QueryProblem {
        problem: problem.into(),
        fix,
    }
}

/// Words that write, change the session or leave the statement; refused
/// anywhere outside quotes (quote an identifier that happens to be one).
const WRITE_WORDS: &[&str] = &[
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "UPSERT",
    "INTO",
    "CREATE",
    "ALTER",
    "DROP",
    "TRUNCATE",
    "GRANT",
    "REVOKE",
    "ATTACH",
    "DETACH",
    "PRAGMA",
    "VACUUM",
    "REINDEX",
    "COPY",
    "CALL",
    "EXECUTE",
    "PREPARE",
    "DEALLOCATE",
    "LOCK",
    "SET",
    "RESET",
    "LISTEN",
    "NOTIFY",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "DISCARD",
];

/// Functions that change state, reach outside the database or could turn the
/// session writable again (`set_config`).
const REFUSED_FUNCTIONS: &[&str] = &[
    "set_config",
    "load_extension",
    "nextval",
    "setval",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_notify",
    "pg_advisory_lock",
    "pg_advisory_xact_lock",
    "lo_import",
    "lo_export",
    "lo_put",
    "lo_from_bytea",
    "dblink",
    "dblink_exec",
    "writefile",
    "readfile",
];

/// Checks `src` and rewrites its placeholders into `dialect`'s parameters.
pub fn compile_query(src: &str, dialect: Dialect) -> Result<CompiledQuery, QueryProblem> {
    if src.len() > MAX_QUERY_BYTES {
        return Err(refuse(
            format!("the query is longer than {MAX_QUERY_BYTES} bytes"),
            "shorten it, e.g. move logic into a view in the exchange database",
        ));
    }
    if src.contains('\0') {
        return Err(refuse("the query contains a NUL character", "remove it"));
    }
    let mut out = String::with_capacity(src.len() + 16);
    let mut params: Vec<Placeholder> = Vec::new();
    let mut first_word: Option<String> = None;
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut ended = false;
    while i < chars.len() {
        let c = chars[i];
        if ended && !c.is_whitespace() {
            return Err(refuse(
                "the query holds more than one statement (text after `;`)",
                "write a single SELECT; remove the `;` and what follows",
            ));
        }
        match c {
            '\'' | '"' => {
                let start = i;
                i += 1;
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(refuse(
                            format!("a quote opened at character {} is never closed", start + 1),
                            "close the string literal or quoted identifier",
                        ));
                    };
                    if d == '\\' {
                        return Err(refuse(
                            "a backslash inside quotes (its meaning differs between databases)",
                            "write the literal without backslashes, or compare in a view",
                        ));
                    }
                    if d == '{' {
                        return Err(refuse(
                            "a placeholder inside quotes would be text, not a bound parameter",
                            "write placeholders bare: WHERE uscc = {subject}",
                        ));
                    }
                    i += 1;
                    if d == c {
                        // A doubled quote is an escaped quote; the loop
                        // reopens naturally on the next character.
                        if chars.get(i) == Some(&c) {
                            i += 1;
                            continue;
                        }
                        break;
                    }
                }
                out.extend(&chars[start..i]);
                continue;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                return Err(refuse(
                    "comments are not allowed in a department query",
                    "move the comment into the adapter file (# ...)",
                ));
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                return Err(refuse(
                    "comments are not allowed in a department query",
                    "move the comment into the adapter file (# ...)",
                ));
            }
            ';' => {
                ended = true;
                i += 1;
                continue;
            }
            '?' | '$' | '@' | '`' | '\\' => {
                return Err(refuse(
                    format!("`{c}` is not allowed outside quotes"),
                    "write inputs as placeholders ({subject}, {subject.<kind>}, {purpose}); \
                     quote identifiers with double quotes",
                ));
            }
            ':' if chars.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic())
                && (i == 0 || chars[i - 1] != ':') =>
            {
                return Err(refuse(
                    "a named parameter (`:name`) would be left unbound",
                    "write inputs as placeholders ({subject}, {subject.<kind>}, {purpose})",
                ));
            }
            '{' => {
                let Some(len) = chars[i + 1..].iter().position(|&d| d == '}') else {
                    return Err(refuse(
                        "a `{` without its `}`",
                        "write placeholders as {subject} or {subject.<kind>}",
                    ));
                };
                let name: String = chars[i + 1..i + 1 + len].iter().collect();
                let Some(p) = Placeholder::parse(&name) else {
                    return Err(refuse(
                        format!("unknown placeholder `{{{name}}}`"),
                        "use {subject}, {subject.<kind>}, {purpose}, {case_id}, {end_user} or {dataset}",
                    ));
                };
                let n = match params.iter().position(|q| *q == p) {
                    Some(k) => k + 1,
                    None => {
                        params.push(p);
                        params.len()
                    }
                };
                let _ = match dialect {
                    Dialect::Postgres => write!(out, "${n}"),
                    Dialect::Sqlite => write!(out, "?{n}"),
                };
                i += len + 2;
                continue;
            }
            '}' => {
                return Err(refuse(
                    "a `}` without its `{`",
                    "write placeholders as {subject} or {subject.<kind>}",
                ));
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|d| d.is_alphanumeric() || *d == '_')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let upper = word.to_ascii_uppercase();
                if first_word.is_none() {
                    if upper != "SELECT" && upper != "WITH" {
                        return Err(refuse(
                            format!("the query starts with `{word}`, not SELECT or WITH"),
                            "department queries are read-only: write one SELECT (or WITH ... SELECT)",
                        ));
                    }
                    first_word = Some(upper.clone());
                }
                if WRITE_WORDS.contains(&upper.as_str()) {
                    return Err(refuse(
                        format!("`{word}` is not allowed in a read-only query"),
                        "department queries are one SELECT; quote an identifier of that name \
                         (\"...\")",
                    ));
                }
                let lower = word.to_ascii_lowercase();
                if REFUSED_FUNCTIONS.contains(&lower.as_str()) {
                    return Err(refuse(
                        format!("`{word}` changes state or reaches outside the database"),
                        "remove it; department queries only read",
                    ));
                }
                out.push_str(&word);
                continue;
            }
            c if c.is_control() && !c.is_whitespace() => {
                return Err(refuse(
                    "the query contains a control character",
                    "remove it",
                ));
            }
            c => out.push(c),
        }
        i += 1;
    }
    if first_word.is_none() {
        return Err(refuse("the query is empty", "write one SELECT"));
    }
    Ok(CompiledQuery {
        text: Arc::from(out.trim_end()),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str, d: Dialect) -> CompiledQuery {
        compile_query(src, d).unwrap_or_else(|e| panic!("{src}: {e:?}"))
    }

    fn bad(src: &str) -> String {
        match compile_query(src, Dialect::Postgres) {
            Ok(q) => panic!("accepted {src:?} as {:?}", q.text),
            Err(e) => e.problem,
        }
    }

    #[test]
    fn placeholders_become_numbered_parameters() {
        let q = ok(
            "SELECT a FROM t WHERE x = {subject} AND y = {subject.guardian_id} OR z = {subject}",
            Dialect::Postgres,
        );
        assert_eq!(
            &*q.text,
            "SELECT a FROM t WHERE x = $1 AND y = $2 OR z = $1"
        );
        assert_eq!(
            q.params,
            vec![
                Placeholder::Subject,
                Placeholder::SubjectOf("guardian_id".into())
            ]
        );
        let q = ok("select a from t where x = {subject};  ", Dialect::Sqlite);
        assert_eq!(&*q.text, "select a from t where x = ?1");
    }

    #[test]
    fn literals_and_casts_pass_through() {
        let q = ok(
            "WITH c AS (SELECT 'it''s; DROP' AS s, \"update\" FROM t) \
             SELECT s, {subject}::text FROM c",
            Dialect::Postgres,
        );
        assert!(q.text.contains("'it''s; DROP'"));
        assert!(q.text.contains("$1::text"));
        // Words containing refused ones are fine.
        ok("SELECT updated_at, insert_no FROM t", Dialect::Sqlite);
    }

    #[test]
    fn writes_and_chaining_are_refused() {
        for src in [
            "DELETE FROM t",
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DROP TABLE t",
            "PRAGMA writable_schema = 1",
            "ATTACH DATABASE 'x' AS y",
            "SELECT 1; DROP TABLE t",
            "SELECT 1;DELETE FROM t",
            "WITH x AS (SELECT 1) DELETE FROM t",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT * INTO t2 FROM t",
            "SELECT * FROM t FOR UPDATE",
            "SELECT set_config('default_transaction_read_only', 'off', false)",
            "SELECT nextval('s')",
            "select 1 -- hidden",
            "select 1 /* hidden */",
            "SELECT E'\\'' ; DELETE FROM t; --'",
            "SELECT $$ x $$",
            "SELECT * FROM t WHERE a = ?",
            "SELECT * FROM t WHERE a = $1",
            "SELECT * FROM t WHERE a = :a",
            "SELECT '{subject}'",
            "SELECT {nope}",
            "SELECT 'unterminated",
            "",
            "   ;",
            "EXPLAIN ANALYZE DELETE FROM t",
        ] {
            bad(src);
        }
        assert!(bad("SELECT 1; DROP TABLE t").contains("more than one statement"));
        assert!(bad("DELETE FROM t").contains("not SELECT or WITH"));
        assert!(compile_query(&"SELECT 1 ".repeat(3000), Dialect::Sqlite).is_err());
        assert!(compile_query("SELECT 1\0", Dialect::Sqlite).is_err());
    }
}
