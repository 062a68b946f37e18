//! `[cluster]` of gateway.toml (and `serve --redis URL`).
//!
//! ```toml
//! [cluster]
//! redis_url = "redis://127.0.0.1:6379"  # absent or "": single node
//! node = "gw-1"          # this node's name (default: host name and data-plane port)
//! nodes = 3              # expected node count: the fallback share is quota / nodes
//! key_prefix = "onewindow"
//! timeout_ms = 100       # every Redis call
//! stream_max_len = 10000 # events kept in the Redis stream
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, ConfigErrors};

/// `[cluster]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `redis://[user:password@]host:port[/db]` or `unix:///path`; absent or
    /// empty: single-node mode.
    pub redis_url: Option<String>,
    /// This node's name.
    pub node: Option<String>,
    /// Expected number of nodes (for the fallback share of each quota).
    pub nodes: Option<u32>,
    /// Prefix of every Redis key.
    pub key_prefix: Option<String>,
    /// Timeout of every Redis call, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Approximate number of events kept in the stream.
    pub stream_max_len: Option<u64>,
}

/// Validated `[cluster]`: present only in cluster mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The Redis URL (may hold a password: never log it; see [`Self::shown_url`]).
    pub redis_url: String,
    /// This node's name; `None`: derived at start from the host name and port.
    pub node: Option<String>,
    /// Expected number of nodes, at least 1.
    pub nodes: u32,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// Timeout of every Redis call.
    pub timeout: Duration,
    /// Approximate number of events kept in the stream.
    pub stream_max_len: u64,
}

/// Default timeout of a Redis call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

impl ClusterSettings {
    /// Validates `raw`; `None` when cluster mode is off. `redis` and `node`
    /// (from `serve --redis`, `--node`) replace `redis_url` and `node`.
    pub fn from_raw(
        raw: &RawCluster,
        redis: Option<&str>,
        node: Option<&str>,
        file: &Path,
    ) -> Result<Option<Self>, ConfigErrors> {
        let url = redis.or(raw.redis_url.as_deref()).unwrap_or("").trim();
        if url.is_empty() {
            return Ok(None);
        }
        let mut errors = ConfigErrors::default();
        if let Err(e) = redis::Client::open(url) {
            errors.push(ConfigError::new(
                file,
                "cluster.redis_url",
                format!("not a usable Redis URL: {}", e.detail().unwrap_or("bad URL")),
                "use redis://host:port (optionally redis://user:password@host:port/db) or unix:///path/to/redis.sock",
            ));
        }
        let node = node.map(str::to_string).or_else(|| raw.node.clone());
        if let Some(n) = &node
            && !valid_node(n)
        {
            errors.push(ConfigError::new(
                file,
                "cluster.node",
                format!("`{n}` is not a valid node name"),
                "use 1 to 64 letters, digits, `.`, `_`, `:` or `-`, e.g. node = \"gw-1\"",
            ));
        }
        let nodes = raw.nodes.unwrap_or(1);
        if nodes == 0 || nodes > 1000 {
            errors.push(ConfigError::new(
                file,
                "cluster.nodes",
                format!("{nodes} nodes is out of range"),
                "give the number of gateway nodes you run, 1 to 1000",
            ));
        }
        let key_prefix = raw.key_prefix.clone().unwrap_or_else(|| "onewindow".into());
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || key_prefix
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '{' || c == '}')
        {
            errors.push(ConfigError::new(
                file,
                "cluster.key_prefix",
                "the prefix must be 1 to 64 printable characters without spaces or braces",
                "use a short name such as \"onewindow\" or \"onewindow-prod\"",
            ));
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT.as_millis() as u64);
        if !(1..=10_000).contains(&timeout_ms) {
            errors.push(ConfigError::new(
                file,
                "cluster.timeout_ms",
                format!("{timeout_ms} ms is out of range"),
                "use 1 to 10000 ms; Redis on the same network answers in well under 10 ms",
            ));
        }
        let stream_max_len = raw.stream_max_len.unwrap_or(10_000);
        if !(100..=10_000_000).contains(&stream_max_len) {
            errors.push(ConfigError::new(
                file,
                "cluster.stream_max_len",
                format!("{stream_max_len} is out of range"),
                "keep 100 to 10000000 events (default 10000)",
            ));
        }
        errors.into_result(Some(Self {
            redis_url: url.to_string(),
            node,
            nodes,
            key_prefix,
            timeout: Duration::from_millis(timeout_ms),
            stream_max_len,
        }))
    }

    /// The URL with any password replaced by `***`, for logs and `/readyz`.
    pub fn shown_url(&self) -> String {
        shown_url(&self.redis_url)
    }
}

/// `url` with the password (if any) replaced by `***`.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// Node names: 1 to 64 of `[A-Za-z0-9._:-]`.
pub fn valid_node(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

/// The default node name: the host name and `port` (`host:port`); without a
/// fixed port, the host name and a random suffix.
pub fn default_node(port: Option<u16>) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    match port.filter(|p| *p != 0) {
        Some(p) => format!("{host}:{p}"),
        None => format!("{host}:{:06x}", rand::random::<u32>() & 0xff_ffff),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawCluster {
        RawCluster {
            redis_url: Some(url.into()),
            ..RawCluster::default()
        }
    }

    #[test]
    fn absent_or_empty_url_is_single_node() {
        let f = Path::new("gateway.toml");
        assert_eq!(
            ClusterSettings::from_raw(&RawCluster::default(), None, None, f).unwrap(),
            None
        );
        assert_eq!(
            ClusterSettings::from_raw(&raw(""), None, None, f).unwrap(),
            None
        );
        // --redis "" turns a configured cluster off.
        assert_eq!(
            ClusterSettings::from_raw(&raw("redis://h:1"), Some(""), None, f).unwrap(),
            None
        );
    }

    #[test]
    fn flag_overrides_file_and_defaults_apply() {
        let f = Path::new("gateway.toml");
        let s = ClusterSettings::from_raw(&raw("redis://a:1"), Some("redis://b:2"), Some("n1"), f)
            .unwrap()
            .unwrap();
        assert_eq!(s.redis_url, "redis://b:2");
        assert_eq!(s.node.as_deref(), Some("n1"));
        assert_eq!(s.nodes, 1);
        assert_eq!(s.key_prefix, "onewindow");
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn nonsense_is_refused_naming_field_and_fix() {
        let f = Path::new("config/gateway.toml");
        let r = RawCluster {
            redis_url: Some("http://nope".into()),
            node: Some("bad node!".into()),
            nodes: Some(0),
            key_prefix: Some("a{b}".into()),
            timeout_ms: Some(0),
            stream_max_len: Some(1),
        };
        let e = ClusterSettings::from_raw(&r, None, None, f).unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "cluster.redis_url",
                "cluster.node",
                "cluster.nodes",
                "cluster.key_prefix",
                "cluster.timeout_ms",
                "cluster.stream_max_len"
            ]
        );
        assert!(e.0.iter().all(|e| !e.fix.is_empty()));
    }

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(
            shown_url("redis://app:s3cret@10.0.0.5:6379/2"),
            "redis://app:***@10.0.0.5:6379/2"
        );
        assert_eq!(shown_url("redis://:s3cret@h:1"), "redis://:***@h:1");
        assert_eq!(shown_url("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn default_node_names_are_valid() {
        assert!(valid_node(&default_node(Some(8443))));
        assert!(valid_node(&default_node(None)));
    }
}
