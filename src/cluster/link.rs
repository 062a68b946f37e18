//! The connection to Redis: two auto-reconnecting connections (one for
//! commands, one for the event stream's blocking reads, which would stall
//! every other command on a shared connection), a timeout on every call, and
//! the health every other part of cluster mode reads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, ScriptInvocation, Value};

use super::config::ClusterSettings;
use super::error::ClusterError;

/// How long a blocking stream read waits for new events.
pub const BLOCK: Duration = Duration::from_millis(500);

/// Health of cluster mode, for `/readyz` and metrics.
#[derive(Debug, Default)]
pub struct Health {
    redis_up: AtomicBool,
    bus_synced: AtomicBool,
    last_error: Mutex<Option<String>>,
    live_nodes: AtomicU32,
    /// Redis calls that failed.
    pub errors: AtomicU64,
    /// Rate-limit checks answered by the local fallback share.
    pub fallback_checks: AtomicU64,
    /// Times the record cache was dropped because events may have been missed.
    pub cache_drops: AtomicU64,
    /// Token leases fetched from Redis.
    pub lease_fetches: AtomicU64,
    /// Events applied from other nodes.
    pub events_applied: AtomicU64,
}

impl Health {
    /// True when the last Redis call succeeded.
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Acquire)
    }

    /// True when the event stream is being read (no event can be missed).
    pub fn bus_synced(&self) -> bool {
        self.bus_synced.load(Ordering::Acquire)
    }

    /// True when anything works in a reduced way (local limits, events not
    /// being received).
    pub fn degraded(&self) -> bool {
        !(self.redis_up() && self.bus_synced())
    }

    /// The last Redis error seen (cleared when Redis answers again).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Nodes seen alive in the last heartbeat.
    pub fn live_nodes(&self) -> u32 {
        self.live_nodes.load(Ordering::Relaxed)
    }

    pub(crate) fn set_live_nodes(&self, n: u32) {
        self.live_nodes.store(n, Ordering::Relaxed);
    }

    pub(crate) fn set_bus_synced(&self, v: bool) {
        self.bus_synced.store(v, Ordering::Release);
    }

    pub(crate) fn up(&self) {
        if !self.redis_up.swap(true, Ordering::AcqRel) {
            tracing::info!("cluster: Redis answers again; shared limits resume");
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
    }

    pub(crate) fn down(&self, e: &ClusterError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.redis_up.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %e, "cluster: Redis failed; serving with local limits at this node's share");
        }
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e.to_string());
        }
    }
}

/// The two connections and the timeout.
pub struct Link {
    cmd: ConnectionManager,
    stream: ConnectionManager,
    timeout: Duration,
    url: String,
    /// Shared health.
    pub health: Health,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Link {
    /// Prepares the connections; nothing is connected until the first call,
    /// so a node starts (and serves locally) while Redis is down.
    pub fn new(settings: &ClusterSettings) -> Result<Self, ClusterError> {
        let url = settings.shown_url();
        let client = redis::Client::open(settings.redis_url.as_str()).map_err(|e| {
            ClusterError::Unreachable {
                url: url.clone(),
                op: "open",
                detail: e.to_string(),
            }
        })?;
        let timeout = settings.timeout;
        let config = |response: Duration| {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout.max(Duration::from_millis(50))))
                // Longer than ours: our timeout fires first, with its message.
                .set_response_timeout(Some(response * 2 + Duration::from_millis(100)))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(500))
        };
        let make = |response| {
            ConnectionManager::new_lazy_with_config(client.clone(), config(response)).map_err(|e| {
                ClusterError::Unreachable {
                    url: url.clone(),
                    op: "connect",
                    detail: e.to_string(),
                }
            })
        };
        Ok(Self {
            cmd: make(timeout)?,
            stream: make(BLOCK + timeout)?,
            timeout,
            url,
            health: Health::default(),
        })
    }

    /// The Redis URL, password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn guard<T>(
        &self,
        op: &'static str,
        after: Duration,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        let r = match tokio::time::timeout(after, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClusterError::from_redis(&self.url, op, after, &e)),
            Err(_) => Err(ClusterError::Timeout {
                url: self.url.clone(),
                op,
                after,
            }),
        };
        match &r {
            Ok(_) => self.health.up(),
            Err(e) => self.health.down(e),
        }
        r
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, ClusterError> {
        let mut c = self.cmd.clone();
        self.guard(op, self.timeout, cmd.query_async(&mut c)).await
    }

    /// Runs a pipeline.
    pub async fn pipe<T: FromRedisValue>(
        &self,
        op: &'static str,
        p: &Pipeline,
    ) -> Result<T, ClusterError> {
        let mut c = self.cmd.clone();
        self.guard(op, self.timeout, p.query_async(&mut c)).await
    }

    /// Runs a Lua script (EVALSHA, loading it on NOSCRIPT).
    pub async fn script<T: FromRedisValue>(
        &self,
        op: &'static str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        let mut c = self.cmd.clone();
        self.guard(op, self.timeout, inv.invoke_async(&mut c)).await
    }

    /// Runs a blocking stream read on the stream connection (waits up to
    /// [`BLOCK`] plus the timeout).
    pub async fn blocking<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, ClusterError> {
        let mut c = self.stream.clone();
        self.guard(op, BLOCK + self.timeout, cmd.query_async(&mut c))
            .await
    }

    /// Checks that the server is Redis: `PING` must answer `PONG`; returns
    /// the server's `run_id` (a restart changes it).
    pub async fn verify(&self) -> Result<String, ClusterError> {
        let mut p = redis::pipe();
        p.cmd("PING").cmd("INFO").arg("server");
        let (pong, info): (Value, Value) = self.pipe("PING", &p).await?;
        let not_redis = |detail: String| {
            let e = ClusterError::NotRedis {
                url: self.url.clone(),
                op: "PING",
                detail,
            };
            self.health.down(&e);
            e
        };
        match pong {
            Value::SimpleString(s) if s == "PONG" => {}
            other => return Err(not_redis(format!("PING answered {}", describe(&other)))),
        }
        let info = match info {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::VerbatimString { text, .. } => text,
            other => return Err(not_redis(format!("INFO answered {}", describe(&other)))),
        };
        info.lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|s| s.trim().to_string())
            .ok_or_else(|| not_redis("INFO server has no run_id".into()))
    }
}

/// A short description of an unexpected reply (never its whole content).
pub fn describe(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Int(i) => format!("the integer {i}"),
        Value::SimpleString(s) => format!("`{}`", s.chars().take(40).collect::<String>()),
        Value::BulkString(b) => format!("a {}-byte string", b.len()),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::ServerError(e) => format!("the error {:?}", e.code()),
        other => format!("{:?}", std::mem::discriminant(other)),
    }
}
