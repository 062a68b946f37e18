//! What can go wrong with cases.

/// Errors of the case store and of case requests.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CaseError {
    /// 404: no case of that id for this client (another client's case is
    /// not found either: ids are per client).
    #[error("no case `{0}`")]
    NotFound(String),
    /// 409: the case id is already a case of another scenario or other subjects.
    #[error("case `{0}` was accepted for another scenario or other subjects; use a new case id")]
    Mismatch(String),
    /// 409: the case changed between reading and writing (another node wrote
    /// it first); nothing was lost, the caller may retry.
    #[error("case `{0}` was changed concurrently; retry")]
    Conflict(String),
    /// 404: the case's scenario is no longer configured.
    #[error("the scenario of case `{0}` is no longer offered")]
    ScenarioGone(String),
    /// 503: the case store cannot be read or written.
    #[error("case store unavailable: {0}")]
    Store(String),
}
