//! Errors of cluster mode: every Redis failure is one of these, with the URL
//! shown without its password.

use std::time::Duration;

/// Why a Redis call did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// Redis did not answer within the configured `timeout_ms`.
    #[error("Redis at {url} did not answer {op} within {} ms", after.as_millis())]
    Timeout {
        /// The Redis URL (password hidden).
        url: String,
        /// What was asked.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// No connection (refused, reset, closed).
    #[error("Redis at {url} is unreachable ({op}): {detail}")]
    Unreachable {
        /// The Redis URL (password hidden).
        url: String,
        /// What was asked.
        op: &'static str,
        /// The cause.
        detail: String,
    },
    /// Something answered, but not like Redis (garbage, an echo, another
    /// protocol).
    #[error(
        "the server at {url} does not answer like Redis ({op}): {detail}; check [cluster] redis_url / --redis"
    )]
    NotRedis {
        /// The Redis URL (password hidden).
        url: String,
        /// What was asked.
        op: &'static str,
        /// What was wrong with the answer.
        detail: String,
    },
    /// Redis answered with an error (e.g. NOAUTH, OOM, READONLY).
    #[error("Redis at {url} refused {op}: {detail}")]
    Refused {
        /// The Redis URL (password hidden).
        url: String,
        /// What was asked.
        op: &'static str,
        /// Redis's error.
        detail: String,
    },
}

impl ClusterError {
    /// Classifies a client error for `op`.
    pub(crate) fn from_redis(
        url: &str,
        op: &'static str,
        after: Duration,
        e: &redis::RedisError,
    ) -> Self {
        use redis::ErrorKind;
        let detail = e.to_string();
        let url = url.to_string();
        if e.is_timeout() {
            return Self::Timeout { url, op, after };
        }
        match e.kind() {
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType | ErrorKind::RESP3NotSupported => {
                Self::NotRedis { url, op, detail }
            }
            ErrorKind::Server(_) | ErrorKind::AuthenticationFailed | ErrorKind::Extension => {
                Self::Refused { url, op, detail }
            }
            _ => Self::Unreachable { url, op, detail },
        }
    }
}
