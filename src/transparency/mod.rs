//! Data-subject transparency: `GET /v1/subjects/{kind}/{subject}/accesses`
//! tells a company or citizen (through a portal granted `subject_access`)
//! who read their data, when, for which purpose and case, and with what
//! outcome — answered from the subject index ([`index`]), never by scanning
//! the log.
//!
//! Records of a purpose with `[purposes.<name>] disclose_after_days` stay
//! invisible until that many days have passed since the access.
//!
//! This module holds the index and the view's types; answering the request
//! (which reads the running configuration) is the data plane's, in
//! `pipeline/transparency.rs`.

pub mod cursor;
pub mod db;
pub mod index;

use serde::Serialize;

pub use cursor::CursorKey;
pub use db::{AccessQuery, AccessRow, IndexDb, IndexRow, Position, Session, boot_id};
pub use index::{INDEX_FILE, IndexError, IndexStatus, SubjectIndex, reindex};

/// Default page size of the transparency view.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 500;

/// A refused transparency request.
#[derive(Debug, thiserror::Error)]
pub enum TransparencyError {
    /// 400: no dataset or scenario takes subjects of this kind.
    #[error("unknown subject kind `{kind}`; known kinds: {known}")]
    UnknownKind {
        /// The kind asked for.
        kind: String,
        /// The kinds the configuration knows.
        known: String,
    },
    /// 400: the subject id is not well formed for its kind.
    #[error("malformed subject id for kind `{0}`")]
    MalformedSubject(String),
    /// 400: a query parameter is unusable.
    #[error("{0}")]
    BadParameter(String),
    /// 400: the cursor was not issued for this subject's listing.
    #[error("`cursor` is not one this server issued for this subject")]
    BadCursor,
    /// 503: the index cannot answer right now.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// One access as a data subject sees it.
#[derive(Debug, Clone, Serialize)]
pub struct AccessView {
    /// When (RFC 3339 UTC).
    pub time: String,
    /// Who: the client's description from clients.toml.
    pub organisation: String,
    /// The client id.
    pub client: Option<String>,
    /// The department whose data was read.
    pub department: Option<String>,
    /// The department's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department_title: Option<String>,
    /// The dataset read.
    pub dataset: Option<String>,
    /// The scenario (one-thing service) it was read for.
    pub scenario: Option<String>,
    /// The declared purpose.
    pub purpose: Option<String>,
    /// The service case id.
    pub case_id: Option<String>,
    /// allow, deny or error.
    pub decision: String,
}

/// The reply of `GET /v1/subjects/{kind}/{subject}/accesses`.
#[derive(Debug, Clone, Serialize)]
pub struct AccessesReply {
    /// The subject kind asked about.
    pub subject_kind: String,
    /// Newest first.
    pub accesses: Vec<AccessView>,
    /// Cursor of the next (older) page, when there is one.
    pub next_cursor: Option<String>,
}

/// The transparency service: the index and the cursor key.
#[derive(Debug, Clone)]
pub struct Transparency {
    /// The subject index.
    pub index: SubjectIndex,
    /// Cursor tagging key.
    pub cursor_key: CursorKey,
}
