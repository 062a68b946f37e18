//! Errors of the adapter area: building a department call and mapping its reply.
//!
//! No status codes here: `src/error.rs` maps each variant; the intended status is
//! documented on each variant. Details are for the log, never for the client
//! (they may quote department data).

use thiserror::Error;

/// What went wrong while translating a canonical request or a department reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdapterError {
    /// The department says the record does not exist (its 404, a configured
    /// not-found status, a not-found SOAP fault or a not-found marker). /// 404
    #[error("the department has no such record")]
    RecordNotFound,
    /// The department answered with a non-success status that is not "not found". /// 502
    #[error("the department answered with status {0}")]
    DepartmentStatus(u16),
    /// The department answered with a SOAP fault that does not mean "not found". /// 502
    #[error("the department answered with a SOAP fault (code `{code}`)")]
    DepartmentFault {
        /// The fault code as sent (for the log).
        code: String,
        /// The fault string as sent, truncated (for the log).
        reason: String,
    },
    /// The reply is not the JSON/XML it should be (unparseable, wrong shape, a
    /// DOCTYPE, an unknown entity, too deep, expected element missing). /// 502
    #[error("malformed department reply: {0}")]
    MalformedReply(String),
    /// A required canonical field is absent from the department's record. /// 502
    #[error("department record lacks required field `{field}`")]
    FieldMissing {
        /// Canonical field name.
        field: String,
    },
    /// A mapped value does not have (or cannot be safely converted to) the
    /// canonical field's type, or is not in the field's value map. /// 502
    #[error("department value for field `{field}` is not a valid {expected}")]
    FieldType {
        /// Canonical field name.
        field: String,
        /// The canonical type expected (`date`, `integer`, ...).
        expected: &'static str,
    },
    /// This adapter does not serve the dataset (a routing mistake). /// 404
    #[error("dataset `{0}` is not served by this adapter")]
    UnknownDataset(String),
    /// A template needs an input the request does not carry (e.g.
    /// `{subject.guardian_id}` outside a scenario that supplies it). /// 400
    #[error("the request lacks `{0}`, which the department call needs")]
    MissingInput(String),
    /// An input cannot be carried safely to the department (a control character
    /// in a header, a character XML 1.0 forbids, a dot-only path segment).
    /// Refused, never stripped. /// 400
    #[error("input `{input}` cannot be sent in the {target}: {reason}")]
    InvalidInput {
        /// Which placeholder (`subject`, `case_id`, ...).
        input: String,
        /// Where it was going (`path`, `query`, `header`, `json`, `xml`).
        target: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
}
