//! The connection to Redis: two auto-reconnecting connections (one for
//! commands, one for the event stream's blocking reads, which would stall
//! every other command on a shared connection), a timeout on every call, and
//! the health every other part of cluster mode reads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, ScriptInvocation, Value};

use super::config::{ClusterSettings, RedisTarget};
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

/// A connection ready for commands.
#[derive(Clone)]
enum Ready {
    /// One server (directly, or the master Sentinels named).
    Manager(ConnectionManager),
    /// A Redis Cluster (routes each command by its key's slot).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Ready {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Manager(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Manager(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// How a Sentinel-watched master or a Redis Cluster is reached.
enum Finder {
    Sentinel(tokio::sync::Mutex<SentinelClient>, ConnectionManagerConfig),
    Cluster(ClusterClient),
}

/// One of the link's connections.
enum Conn {
    /// One server: reconnects by itself.
    Single(ConnectionManager),
    /// Found on first use (so a node starts while Redis is down) and again
    /// after a failure that may mean a failover (Sentinel).
    Found(Box<Found>),
}

/// A connection found on first use.
struct Found {
    finder: Finder,
    ready: tokio::sync::Mutex<Option<Ready>>,
}

impl Conn {
    async fn get(&self) -> redis::RedisResult<Ready> {
        let (finder, ready) = match self {
            Self::Single(c) => return Ok(Ready::Manager(c.clone())),
            Self::Found(f) => (&f.finder, &f.ready),
        };
        let mut slot = ready.lock().await;
        if let Some(r) = &*slot {
            return Ok(r.clone());
        }
        let r = match finder {
            Finder::Sentinel(sentinel, config) => {
                let client = sentinel.lock().await.async_get_client().await?;
                Ready::Manager(ConnectionManager::new_with_config(client, config.clone()).await?)
            }
            Finder::Cluster(client) => Ready::Cluster(client.get_async_connection().await?),
        };
        *slot = Some(r.clone());
        Ok(r)
    }

    /// After a failed call: a master found through Sentinels is looked up
    /// again when the failure may mean it moved (connection lost, or it is a
    /// replica now).
    async fn failed(&self, e: &redis::RedisError) {
        if let Self::Found(f) = self
            && let Finder::Sentinel(..) = f.finder
            && (e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.code() == Some("READONLY"))
        {
            *f.ready.lock().await = None;
        }
    }

    async fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut Ready) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let mut c = self.get().await?;
        let r = f(&mut c).await;
        if let Err(e) = &r {
            self.failed(e).await;
        }
        r
    }
}

/// The two connections and the timeout.
pub struct Link {
    cmd: Conn,
    stream: Conn,
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
        let unusable = |op: &'static str, e: redis::RedisError| ClusterError::Unreachable {
            url: url.clone(),
            op,
            detail: e.to_string(),
        };
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
        let make = |response: Duration| -> Result<Conn, ClusterError> {
            Ok(match &settings.target {
                RedisTarget::Single(u) => {
                    let client =
                        redis::Client::open(u.as_str()).map_err(|e| unusable("open", e))?;
                    Conn::Single(
                        ConnectionManager::new_lazy_with_config(client, config(response))
                            .map_err(|e| unusable("connect", e))?,
                    )
                }
                RedisTarget::Sentinel {
                    sentinels,
                    master,
                    db,
                    username,
                    password,
                } => {
                    let mut info = redis::RedisConnectionInfo::default().set_db(*db);
                    if let Some(u) = username {
                        info = info.set_username(u);
                    }
                    if let Some(p) = password {
                        info = info.set_password(p);
                    }
                    let node =
                        SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                    let client = SentinelClient::build(
                        sentinels.clone(),
                        master.clone(),
                        Some(node),
                        SentinelServerType::Master,
                    )
                    .map_err(|e| unusable("open", e))?;
                    Conn::Found(Box::new(Found {
                        finder: Finder::Sentinel(tokio::sync::Mutex::new(client), config(response)),
                        ready: tokio::sync::Mutex::new(None),
                    }))
                }
                RedisTarget::Cluster { seeds } => {
                    let client = ClusterClientBuilder::new(seeds.clone())
                        .connection_timeout(timeout.max(Duration::from_millis(50)))
                        .response_timeout(response * 2 + Duration::from_millis(100))
                        .retries(1)
                        .build()
                        .map_err(|e| unusable("open", e))?;
                    Conn::Found(Box::new(Found {
                        finder: Finder::Cluster(client),
                        ready: tokio::sync::Mutex::new(None),
                    }))
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
        let run = self.cmd.run(async |c| cmd.query_async(c).await);
        self.guard(op, self.timeout, run).await
    }

    /// Runs a pipeline.
    pub async fn pipe<T: FromRedisValue>(
        &self,
        op: &'static str,
        p: &Pipeline,
    ) -> Result<T, ClusterError> {
        let run = self.cmd.run(async |c| p.query_async(c).await);
        self.guard(op, self.timeout, run).await
    }

    /// Runs a Lua script (EVALSHA, loading it on NOSCRIPT).
    pub async fn script<T: FromRedisValue>(
        &self,
        op: &'static str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        let run = self.cmd.run(async |c| inv.invoke_async(c).await);
        self.guard(op, self.timeout, run).await
    }

    /// Runs a blocking stream read on the stream connection (waits up to
    /// [`BLOCK`] plus the timeout).
    pub async fn blocking<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, ClusterError> {
        let run = self.stream.run(async |c| cmd.query_async(c).await);
        self.guard(op, BLOCK + self.timeout, run).await
    }

    /// Checks that the server is Redis (`PING` must answer `PONG`) and
    /// returns the epoch of its data: a random value kept under `epoch_key`,
    /// set by the first node to ask. A restart that lost the data (or a
    /// failover to a server without it) changes the epoch; a Redis Cluster
    /// or a Sentinel failover that kept the data does not.
    pub async fn verify(&self, epoch_key: &str) -> Result<String, ClusterError> {
        let pong: Value = self.query("PING", &redis::cmd("PING")).await?;
        let not_redis = |op: &'static str, detail: String| {
            let e = ClusterError::NotRedis {
                url: self.url.clone(),
                op,
                detail,
            };
            self.health.down(&e);
            e
        };
        match pong {
            Value::SimpleString(s) if s == "PONG" => {}
            other => {
                return Err(not_redis(
                    "PING",
                    format!("PING answered {}", describe(&other)),
                ));
            }
        }
        let script = redis::Script::new(EPOCH_LUA);
        let mut inv = script.prepare_invoke();
        inv.key(epoch_key)
            .arg(format!("{:016x}", rand::random::<u64>()));
        match self.script::<Value>("epoch", &inv).await? {
            Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Value::SimpleString(s) => Ok(s),
            other => Err(not_redis(
                "epoch",
                format!("the epoch script answered {}", describe(&other)),
            )),
        }
    }
}

/// The data set's epoch: the stored one, or `ARGV[1]` stored now.
const EPOCH_LUA: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then
  v = ARGV[1]
  redis.call('SET', KEYS[1], v)
end
return v
"#;

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
