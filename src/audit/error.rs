//! The audit area's one error enum.

use std::path::PathBuf;

/// Errors of the audit log. The lead maps each to an HTTP status in
/// `src/error.rs`; the intended status is noted on each variant.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// 503: the record could not be written (disk full, I/O error, writer
    /// stopped); nothing was acknowledged. The request must fail closed.
    #[error("audit log unavailable")]
    Unavailable,
    /// 500 (startup): a file or directory of the audit log could not be used.
    #[error("audit log: {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// 500 (startup): a key file is unreadable, malformed or too open.
    #[error("audit key {path}: {problem}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// 500: the log is damaged in a way the writer will not repair by itself
    /// (run `onewindow audit verify`).
    #[error("audit log {file} line {line}: {problem}")]
    Corrupt {
        /// The file concerned.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        problem: String,
    },
    /// 400: a query parameter is invalid (e.g. `since` not RFC 3339, bad cursor).
    #[error("invalid audit query: {0}")]
    BadQuery(String),
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
