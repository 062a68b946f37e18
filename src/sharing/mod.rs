//! Accountable sharing (after 国发〔2016〕51号): signed records and approvals.
//!
//! - **Signed records** ([`signed`], [`jws`], [`keys`]): every record the
//!   gateway hands out carries `source.issuer` and a `signature`, a compact
//!   JWS with detached payload (RFC 7515 Appendix F) made with the gateway's
//!   Ed25519 record-signing key over the record's RFC 8785 (JCS) canonical
//!   JSON. The public keys are served at `GET /.well-known/jwks.json`;
//!   `onewindow record verify` checks a saved reply offline. docs/SIGNATURES.md
//!   specifies the format for verifiers in other languages.
//! - **Conditional sharing** (a dataset's [`crate::config::Sharing`], a
//!   grant's [`crate::auth::Approval`]): a grant for a conditionally shared
//!   dataset rests on an approval (reference, expiry date, optional
//!   purposes); reads outside it are refused.

pub mod error;
pub mod jws;
pub mod keys;
pub mod signed;

pub use error::SignatureError;
pub use jws::Jwks;
pub use keys::{RECORD_JWKS_FILE, RECORD_KEY_FILE, RecordKeys};
pub use signed::{SignatureMemo, verify_document};

/// What the data plane needs for accountable sharing: the record-signing
/// keys, the transparency view and the clock approvals are checked against.
#[derive(Debug)]
pub struct Accountable {
    /// Record-signing keys.
    pub keys: RecordKeys,
    /// The data-subject transparency view.
    pub transparency: crate::transparency::Transparency,
    /// Wall clock (injected in tests).
    pub clock: crate::clock::WallClock,
}

impl Accountable {
    /// Loads (or generates) the record-signing keys in `certs_dir` and starts
    /// the subject index in `data_dir`, fed by `audit`.
    pub fn start(
        certs_dir: &std::path::Path,
        data_dir: &std::path::Path,
        audit: &crate::audit::AuditLog,
        clock: crate::clock::WallClock,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Self, error::KeyError> {
        let (keys, generated) = RecordKeys::load_or_generate(certs_dir)?;
        if generated {
            tracing::info!(
                kid = keys.kid(),
                "generated the record-signing key in {}",
                certs_dir.display()
            );
        }
        Ok(Self {
            keys,
            transparency: crate::transparency::Transparency {
                index: crate::transparency::SubjectIndex::start(data_dir, audit, shutdown),
                cursor_key: crate::transparency::CursorKey::derive(audit.subject_key()),
            },
            clock,
        })
    }
}
