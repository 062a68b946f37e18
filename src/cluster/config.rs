//! `[cluster]` of gateway.toml (and `serve --redis URL`).
//!
//! ```toml
//! [cluster]
//! redis_url = "redis://127.0.0.1:6379"  # absent or "": single node
//! # or Sentinel: "redis+sentinel://[user:password@]s1:26379,s2:26379/mymaster[/db]"
//! # or Redis Cluster seeds: "redis+cluster://[user:password@]h1:7000,h2:7001"
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
    /// What the URL names: one server, a Sentinel-watched master or a Redis
    /// Cluster.
    pub target: RedisTarget,
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

/// Where Redis is, from `redis_url`.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`redis://`, `unix://`; or a proxy in front of several).
    Single(String),
    /// A master found by asking Sentinels (`redis+sentinel://`), asked again
    /// whenever the connection to it fails (failover).
    Sentinel {
        /// The Sentinels, as `redis://host:port`.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
        /// Database number on the master.
        db: i64,
        /// ACL user on the master.
        username: Option<String>,
        /// Password on the master (never shown).
        password: Option<String>,
    },
    /// A Redis Cluster (`redis+cluster://`): the seed nodes, as
    /// `redis://[user:password@]host:port`; the client finds the others.
    Cluster {
        /// Seed node URLs.
        seeds: Vec<String>,
    },
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(u) => f.debug_tuple("Single").field(&shown_url(u)).finish(),
            Self::Sentinel {
                sentinels,
                master,
                db,
                ..
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("master", master)
                .field("db", db)
                .finish_non_exhaustive(),
            Self::Cluster { seeds } => f
                .debug_struct("Cluster")
                .field(
                    "seeds",
                    &seeds.iter().map(|s| shown_url(s)).collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

impl RedisTarget {
    /// Parses `url`; the error says what is wrong with it (never quoting a
    /// password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("`{}` is not a URL (no `://`)", shown_url(url)));
        };
        match scheme {
            "redis+sentinel" => {
                let (auth, rest) = split_auth(rest);
                let Some((hosts, path)) = rest.split_once('/') else {
                    return Err(
                        "a Sentinel URL must name the master after the hosts: redis+sentinel://host:26379/master-name".into(),
                    );
                };
                let sentinels = host_list(hosts, 26379)?
                    .into_iter()
                    .map(|h| format!("redis://{h}"))
                    .collect();
                let mut parts = path.split('/');
                let master = parts.next().unwrap_or_default();
                if master.is_empty() || !master.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(
                        "a Sentinel URL must name the master: redis+sentinel://host:26379/master-name"
                            .into(),
                    );
                }
                let db = match parts.next().filter(|d| !d.is_empty()) {
                    None => 0,
                    Some(d) => d.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(|| {
                        format!("`{d}` after the master name is not a database number")
                    })?,
                };
                if parts.any(|p| !p.is_empty()) {
                    return Err(
                        "a Sentinel URL ends after the master name and database number".into(),
                    );
                }
                let (username, password) = match auth {
                    None => (None, None),
                    Some(a) => match a.split_once(':') {
                        Some((u, p)) => {
                            ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string()))
                        }
                        None => ((!a.is_empty()).then(|| a.to_string()), None),
                    },
                };
                Ok(Self::Sentinel {
                    sentinels,
                    master: master.to_string(),
                    db,
                    username,
                    password,
                })
            }
            "redis+cluster" => {
                let (auth, rest) = split_auth(rest);
                let hosts = rest.strip_suffix('/').unwrap_or(rest);
                if hosts.contains('/') {
                    return Err(
                        "a Redis Cluster has no database number: redis+cluster://h1:7000,h2:7001"
                            .into(),
                    );
                }
                let at = auth.map_or(String::new(), |a| format!("{a}@"));
                let seeds: Vec<String> = host_list(hosts, 6379)?
                    .into_iter()
                    .map(|h| format!("redis://{at}{h}"))
                    .collect();
                for s in &seeds {
                    redis::Client::open(s.as_str()).map_err(|e| {
                        format!(
                            "seed {} is not usable: {}",
                            shown_url(s),
                            e.detail().unwrap_or("bad URL")
                        )
                    })?;
                }
                Ok(Self::Cluster { seeds })
            }
            _ => match redis::Client::open(url) {
                Ok(_) => Ok(Self::Single(url.to_string())),
                Err(e) => Err(format!(
                    "not a usable Redis URL: {}",
                    e.detail().unwrap_or("bad URL")
                )),
            },
        }
    }
}

/// `user:password@rest` -> (`Some("user:password")`, `rest`).
fn split_auth(rest: &str) -> (Option<&str>, &str) {
    match rest.rsplit_once('@') {
        Some((auth, hosts)) => (Some(auth), hosts),
        None => (None, rest),
    }
}

/// `h1:p1,h2,[::1]:p3` -> `["h1:p1", "h2:<default>", "[::1]:p3"]`, each host
/// checked.
fn host_list(hosts: &str, default_port: u16) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for h in hosts.split(',') {
        let h = h.trim();
        if h.is_empty() {
            return Err("the host list has an empty entry (`host:port,host:port`)".into());
        }
        let (host, port) = match h.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("`{h}` opens `[` without closing it"))?;
                (format!("[{addr}]"), after.strip_prefix(':'))
            }
            None => match h.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (h.to_string(), None),
            },
        };
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "/?#@".contains(c))
        {
            return Err(format!("`{h}` is not a host name or address"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{h}` has no valid port (1 to 65535)"))?,
        };
        out.push(format!("{host}:{port}"));
    }
    Ok(out)
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
        let target = match RedisTarget::parse(url) {
            Ok(t) => t,
            Err(problem) => {
                errors.push(ConfigError::new(
                    file,
                    "cluster.redis_url",
                    problem,
                    "use redis://host:port (optionally redis://user:password@host:port/db), \
                     unix:///path/to/redis.sock, redis+sentinel://s1:26379,s2:26379/master-name[/db] \
                     or redis+cluster://h1:7000,h2:7001",
                ));
                RedisTarget::Single(String::new())
            }
        };
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
            target,
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
    fn sentinel_and_cluster_urls_are_parsed() {
        assert_eq!(
            RedisTarget::parse("redis+sentinel://app:pw@s1:26379,s2,[::1]:26380/mymaster/2")
                .unwrap(),
            RedisTarget::Sentinel {
                sentinels: vec![
                    "redis://s1:26379".into(),
                    "redis://s2:26379".into(),
                    "redis://[::1]:26380".into()
                ],
                master: "mymaster".into(),
                db: 2,
                username: Some("app".into()),
                password: Some("pw".into()),
            }
        );
        assert_eq!(
            RedisTarget::parse("redis+sentinel://:pw@s1/m").unwrap(),
            RedisTarget::Sentinel {
                sentinels: vec!["redis://s1:26379".into()],
                master: "m".into(),
                db: 0,
                username: None,
                password: Some("pw".into()),
            }
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://:pw@h1:7000,h2:7001/").unwrap(),
            RedisTarget::Cluster {
                seeds: vec!["redis://:pw@h1:7000".into(), "redis://:pw@h2:7001".into()]
            }
        );
        assert_eq!(
            RedisTarget::parse("redis://h:1/3").unwrap(),
            RedisTarget::Single("redis://h:1/3".into())
        );
        // The password never reaches Debug output.
        let t = RedisTarget::parse("redis+cluster://:s3cret@h1:7000").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        let t = RedisTarget::parse("redis+sentinel://:s3cret@s1/m").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn bad_sentinel_and_cluster_urls_say_what_is_wrong() {
        let cases = [
            ("redis+sentinel://s1:26379", "name the master"),
            ("redis+sentinel://s1:26379/", "name the master"),
            ("redis+sentinel://s1:26379/m/x", "not a database number"),
            ("redis+sentinel://s1:26379/m/1/extra", "ends after"),
            ("redis+sentinel://s1:99999/m", "no valid port"),
            ("redis+sentinel://s1:0/m", "no valid port"),
            ("redis+sentinel://s1,,s2/m", "empty entry"),
            ("redis+sentinel://[::1/m", "without closing"),
            ("redis+cluster://h1:7000,h2:x", "no valid port"),
            ("redis+cluster://h1:7000/0", "no database number"),
            ("redis+cluster://", "empty entry"),
            ("redis+cluster://h 1:7000", "not a host"),
            ("nonsense", "not a URL"),
            ("http://h:1", "not a usable Redis URL"),
        ];
        for (url, want) in cases {
            let e = RedisTarget::parse(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
        // Through the settings: one error naming the field and the forms.
        let e = ClusterSettings::from_raw(
            &raw("redis+sentinel://:s3cret@s1:26379"),
            None,
            None,
            Path::new("config/gateway.toml"),
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].field, "cluster.redis_url");
        assert!(e.0[0].fix.contains("redis+sentinel://"), "{:?}", e.0[0]);
        assert!(!e.to_string().contains("s3cret"), "{e}");
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
