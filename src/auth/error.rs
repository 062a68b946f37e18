//! Errors of the auth area: authentication (401), authorisation (403) and
//! attribution headers (400). Details are private: `Display` is the generic
//! message safe to show a client, [`AuthError::detail`] is for the log. No
//! variant ever carries the token.

use std::fmt;

/// Private diagnostic text attached to an error, for logs only.
///
/// Never contains the token; may contain a claim name, an algorithm, a `kid`
/// (truncated) or an issuer URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Detail(String);

impl Detail {
    pub(crate) fn new(s: impl Into<String>) -> Self {
        let mut s: String = s.into();
        if s.len() > 256 {
            let mut cut = 256;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        Self(s)
    }

    /// The diagnostic text, for the log.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Why a request could not be authenticated, or why the authenticator could
/// not start.
///
/// Every request-time variant maps to 401 with
/// `WWW-Authenticate: Bearer error="invalid_token"` (mapped in `src/error.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Status 401: No `Authorization` header.
    #[error("missing bearer token")]
    Missing,
    /// Status 401: Not a single `Bearer` token (other scheme, two tokens, bad
    /// characters, over the size limit, not three base64url segments).
    #[error("malformed authorization header")]
    Malformed(Detail),
    /// Status 401: Signature, algorithm, key or claims did not verify.
    #[error("invalid token")]
    Invalid(Detail),
    /// Status 401: The token's `exp` (plus leeway) is past.
    #[error("token expired")]
    Expired,
    /// Status 401: The issuer's keys could not be loaded, or are older than the
    /// configured `max_stale_secs` because the issuer is unreachable.
    #[error("issuer keys unavailable")]
    IssuerKeysUnavailable(Detail),
    /// Status 401: The token is certificate-bound (`cnf.x5t#S256`, RFC 8705) and the
    /// connection's client certificate is absent or different.
    #[error("token is bound to another client certificate")]
    CertBindingMismatch,
    /// Not a request error: the authenticator or the demo issuer could not
    /// start (key files, JWKS fetch at start). 500 / process exit.
    #[error("authentication setup failed: {0:?}")]
    Setup(Detail),
}

impl AuthError {
    /// Private detail for the log (never the token); empty for variants
    /// whose message says everything.
    pub fn detail(&self) -> &str {
        match self {
            AuthError::Malformed(d)
            | AuthError::Invalid(d)
            | AuthError::IssuerKeysUnavailable(d)
            | AuthError::Setup(d) => d.as_str(),
            AuthError::Missing | AuthError::Expired | AuthError::CertBindingMismatch => "",
        }
    }

    pub(crate) fn malformed(s: impl Into<String>) -> Self {
        AuthError::Malformed(Detail::new(s))
    }

    pub(crate) fn invalid(s: impl Into<String>) -> Self {
        AuthError::Invalid(Detail::new(s))
    }

    pub(crate) fn setup(s: impl Into<String>) -> Self {
        AuthError::Setup(Detail::new(s))
    }
}

/// The caller is authenticated but not allowed to do this. The message names
/// what was asked for (the dataset, purpose, route, role), never the
/// caller's other grants nor anyone else's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// Status 400: A data read without an `X-Purpose` header.
    #[error("the X-Purpose header is required")]
    PurposeRequired,
    /// Status 403: The purpose given is not granted to this client.
    #[error("purpose `{0}` is not granted to this client")]
    PurposeNotGranted(String),
    /// Status 403: The dataset is not granted to this client.
    #[error("dataset `{0}` is not granted to this client")]
    DatasetNotGranted(String),
    /// Status 403: The scenario is not granted to this client.
    #[error("scenario `{0}` is not granted to this client")]
    ScenarioNotGranted(String),
    /// Status 403: No proxy grant covers this department, method and path.
    #[error("{method} {path} on department `{department}` is not granted to this client")]
    ProxyNotGranted {
        /// The department asked for.
        department: String,
        /// The method asked for.
        method: String,
        /// The (normalised) path asked for.
        path: String,
    },
    /// Status 403: The token lacks a role this action needs.
    #[error("role `{0}` is required")]
    RoleRequired(&'static str),
    /// Status 403: A department admin acting for a department that is not theirs.
    #[error("not an administrator of department `{0}`")]
    NotDepartmentAdmin(String),
    /// Status 403: The approval a conditionally shared dataset's grant rests on has lapsed.
    #[error(
        "the approval `{approval}` for dataset `{dataset}` lapsed on {expired}; a new approval is needed"
    )]
    ApprovalLapsed {
        /// The dataset asked for.
        dataset: String,
        /// The approval's reference.
        approval: String,
        /// Its last valid day.
        expired: String,
    },
    /// Status 403: The approval does not cover the purpose given.
    #[error("the approval `{approval}` for dataset `{dataset}` does not cover purpose `{purpose}`")]
    ApprovalPurpose {
        /// The dataset asked for.
        dataset: String,
        /// The approval's reference.
        approval: String,
        /// The purpose given.
        purpose: String,
    },
    /// Status 403: The data-subject transparency view is not granted (`subject_access`).
    #[error("the data-subject transparency view is not granted to this client")]
    SubjectAccessNotGranted,
    /// Status 403: The token's issuer may not speak for this client
    /// (`issuer`/`issuers` of its clients.toml entry).
    #[error("client `{0}` does not accept tokens from this issuer")]
    IssuerNotBound(String),
}

/// Status 400: An attribution header (`X-Purpose`, `X-End-User`, `X-Case-Id`) is
/// unusable; the message names the header, never echoes its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header {header}: {reason}")]
pub struct AttributionError {
    /// The header's name.
    pub header: &'static str,
    /// What is wrong with it.
    pub reason: AttributionProblem,
}

/// What is wrong with an attribution header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttributionProblem {
    /// Longer than the limit.
    #[error("longer than {0} bytes")]
    TooLong(usize),
    /// Present but empty.
    #[error("empty")]
    Empty,
    /// Contains control characters (CR, LF, NUL, DEL...) or is not UTF-8.
    #[error("contains non-printable characters")]
    NotPrintable,
    /// Given more than once.
    #[error("given more than once")]
    Repeated,
}
