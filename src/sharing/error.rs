//! Why a signed record does not verify, or why the signing keys cannot be used.

use std::path::PathBuf;

/// A record signature that does not verify; each variant says what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The document is not a signed record reply (not JSON, no `signature`).
    #[error("not a signed record: {0}")]
    NotSigned(String),
    /// `signature` is not a compact JWS with a detached (empty) payload.
    #[error("signature is not a compact JWS with detached payload: {0}")]
    Malformed(String),
    /// The JWS header names another algorithm than `EdDSA` (`none`, `HS256`...).
    #[error("signature algorithm `{0}` is not accepted (only EdDSA)")]
    Algorithm(String),
    /// The JWS header carries a parameter this format does not allow (`crit`, `b64`).
    #[error("signature header parameter `{0}` is not accepted")]
    HeaderParameter(String),
    /// No key of the JWKS has the signature's `kid`.
    #[error("no key `{0}` in the JWKS")]
    UnknownKey(String),
    /// The key named by `kid` is not an Ed25519 public key.
    #[error("key `{0}` is not an Ed25519 (OKP) public key")]
    BadKey(String),
    /// The signature does not match the record: it was changed, or the
    /// signature belongs to another record.
    #[error("signature does not match the record (changed, or signed for another record)")]
    Mismatch,
}

/// The record-signing key files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file exists but is unusable.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
}

impl KeyError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KeyError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        KeyError::Invalid {
            path: path.into(),
            problem: problem.into(),
        }
    }
}
