//! The state bus: cache invalidations, adapter changes and reloads made on
//! one node reach every node through a Redis stream (`XADD ... MAXLEN ~`),
//! which each node reads with its own cursor (`XREAD BLOCK`).
//!
//! - Adapter files live in Redis too (`<prefix>:adapters`, one versioned
//!   record per department; versions come from one Redis counter, so when two
//!   nodes change one department at once every node ends on the higher
//!   version). A node applies a record only when its version is newer than
//!   the one it applied last (validate, write the file, swap).
//! - After applying events a node records its cursor (`<prefix>:acks`); the
//!   node that made a change waits (up to a second) until every live node has
//!   acknowledged it, so when the admin's request returns the change is in
//!   force everywhere.
//! - A node that lost Redis, or finds Redis restarted, cannot know what it
//!   missed unless its cursor is still in the stream of the same server:
//!   otherwise it drops its cached records before reading on. Adapter records
//!   are re-read from Redis at every (re)connection.
//! - Invalidations and reloads made while Redis is unavailable are applied
//!   locally at once and published when Redis answers again.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use redis::Value;
use redis::streams::StreamReadReply;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::error::ClusterError;
use super::link::{BLOCK, Link};

/// A boxed future (the [`Applier`] trait is used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the bus asks of the node to apply others' changes.
pub trait Applier: Send + Sync {
    /// Revokes one cached record (or a whole dataset).
    fn invalidate(&self, dataset: &str, subject: Option<&str>);
    /// Revokes every cached record (events may have been missed).
    fn drop_cache(&self);
    /// Validates, writes and swaps in an adapter file (`None`: removes it).
    fn apply_adapter<'a>(
        &'a self,
        department: &'a str,
        text: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Reloads the configuration from this node's disk.
    fn reload(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Publishes an adapter change: next version, the record, the event.
const ADAPTER_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local v = redis.call('INCR', KEYS[1])
local rec = {version = v, node = ARGV[4]}
if ARGV[3] == '1' then rec.deleted = true else rec.text = ARGV[2] end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(rec))
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*',
  'kind', 'adapter', 'department', ARGV[1], 'version', v, 'node', ARGV[4])
return {v, id}
"#;

/// Registers a node as alive and lists the live ones.
const HEARTBEAT_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// How long a node counts as alive after its last heartbeat.
pub const NODE_TTL: Duration = Duration::from_secs(3);
/// Heartbeat period.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// Longest wait for other nodes to acknowledge a change.
pub const ACK_WAIT: Duration = Duration::from_secs(1);

/// A change waiting to be published (made while Redis was unavailable).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Invalidate {
        dataset: String,
        subject: Option<String>,
    },
    Reload,
}

/// The stored adapter record of one department.
#[derive(Debug, Clone, Deserialize)]
struct AdapterRecord {
    version: u64,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    deleted: bool,
}

/// How far a change got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// In the stream under this id.
    Sent {
        /// Stream id.
        id: String,
    },
    /// Redis unavailable: applied here, to be published when it answers.
    Queued,
}

/// Nodes that acknowledged a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acks {
    /// Nodes that applied it.
    pub confirmed: usize,
    /// Nodes alive.
    pub live: usize,
}

/// The bus of one node.
pub struct Bus {
    link: Arc<Link>,
    node: String,
    max_len: u64,
    events: String,
    adapters: String,
    version: String,
    acks: String,
    nodes: String,
    /// The data set's epoch (see [`Link::verify`]).
    epoch: String,
    adapter_script: redis::Script,
    heartbeat_script: redis::Script,
    cursor: Mutex<Option<String>>,
    /// The epoch last seen (a change: Redis lost its data).
    run_id: Mutex<Option<String>>,
    restarted: AtomicBool,
    /// Adapter versions applied here, by department; held while applying.
    applied: tokio::sync::Mutex<HashMap<String, u64>>,
    pending: Mutex<Vec<Pending>>,
    live: Mutex<Vec<String>>,
    applier: OnceLock<Weak<dyn Applier>>,
    apply_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("node", &self.node).finish()
    }
}

/// Stream ids compare as (milliseconds, sequence).
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn field(map: &HashMap<String, Value>, k: &str) -> Option<String> {
    match map.get(k)? {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

impl Bus {
    /// The bus of `node`, keys under `prefix`.
    pub fn new(link: Arc<Link>, prefix: &str, node: &str, max_len: u64) -> Self {
        // One hash tag: the multi-key scripts stay in one slot of a Redis Cluster.
        let k = |s: &str| format!("{{{prefix}}}:{s}");
        Self {
            link,
            node: node.to_string(),
            max_len,
            events: k("events"),
            adapters: k("adapters"),
            version: k("adapter-version"),
            acks: k("acks"),
            nodes: k("nodes"),
            epoch: k("epoch"),
            adapter_script: redis::Script::new(ADAPTER_LUA),
            heartbeat_script: redis::Script::new(HEARTBEAT_LUA),
            cursor: Mutex::new(None),
            run_id: Mutex::new(None),
            restarted: AtomicBool::new(false),
            applied: tokio::sync::Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
            applier: OnceLock::new(),
            apply_error: Mutex::new(None),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Connects the bus to the node that applies others' changes (once).
    pub fn set_applier(&self, applier: Weak<dyn Applier>) {
        let _ = self.applier.set(applier);
    }

    fn applier(&self) -> Option<Arc<dyn Applier>> {
        self.applier.get().and_then(Weak::upgrade)
    }

    /// The last adapter change from another node that could not be applied here.
    pub fn apply_error(&self) -> Option<String> {
        self.apply_error.lock().ok().and_then(|e| e.clone())
    }

    /// Changes waiting for Redis.
    pub fn pending(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }

    /// Live nodes seen by the last heartbeat.
    pub fn live_nodes(&self) -> Vec<String> {
        self.live.lock().map(|l| l.clone()).unwrap_or_default()
    }

    async fn xadd(&self, fields: &[(&str, &str)]) -> Result<String, ClusterError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.events)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.arg("node").arg(&self.node);
        self.link.query("XADD", &cmd).await
    }

    async fn send(&self, p: &Pending) -> Result<String, ClusterError> {
        match p {
            Pending::Invalidate { dataset, subject } => {
                let mut f = vec![("kind", "invalidate"), ("dataset", dataset.as_str())];
                if let Some(s) = subject {
                    f.push(("subject", s.as_str()));
                }
                self.xadd(&f).await
            }
            Pending::Reload => self.xadd(&[("kind", "reload")]).await,
        }
    }

    async fn publish(&self, p: Pending) -> Published {
        match self.send(&p).await {
            Ok(id) => Published::Sent { id },
            Err(e) => {
                tracing::warn!(error = %e, "cluster: change applied on this node only; it is published when Redis answers");
                if let Ok(mut q) = self.pending.lock()
                    && !q.contains(&p)
                {
                    q.push(p);
                }
                Published::Queued
            }
        }
    }

    /// Tells every node to revoke a cached record (the caller already did
    /// here).
    pub async fn publish_invalidate(&self, dataset: &str, subject: Option<&str>) -> Published {
        self.publish(Pending::Invalidate {
            dataset: dataset.to_string(),
            subject: subject.map(str::to_string),
        })
        .await
    }

    /// Tells every node to reload its configuration (the caller already did
    /// here).
    pub async fn publish_reload(&self) -> Published {
        self.publish(Pending::Reload).await
    }

    /// Stores a validated adapter file (`None`: deleted) as the department's
    /// next version and announces it; returns the version and stream id.
    /// Refused while Redis is unavailable (the nodes would diverge).
    pub async fn publish_adapter(
        &self,
        department: &str,
        text: Option<&str>,
    ) -> Result<(u64, String), ClusterError> {
        let mut inv = self.adapter_script.prepare_invoke();
        inv.key(&self.version)
            .key(&self.adapters)
            .key(&self.events)
            .arg(department)
            .arg(text.unwrap_or(""))
            .arg(if text.is_some() { "0" } else { "1" })
            .arg(&self.node)
            .arg(self.max_len);
        let (v, id): (u64, String) = self.link.script("adapter change", &inv).await?;
        Ok((v, id))
    }

    /// Applies version `version` of a department's adapter unless a newer
    /// one was applied already. `Ok(false)`: superseded, nothing done.
    pub async fn apply_adapter(
        &self,
        department: &str,
        version: u64,
        text: Option<&str>,
    ) -> Result<bool, String> {
        let mut applied = self.applied.lock().await;
        if applied.get(department).is_some_and(|v| *v >= version) {
            return Ok(false);
        }
        let Some(applier) = self.applier() else {
            return Err("the node is stopping".into());
        };
        let r = applier.apply_adapter(department, text).await;
        // Recorded even when refused here, so the refusal is not retried on
        // every event; the error is shown in /readyz.
        applied.insert(department.to_string(), version);
        match &r {
            Ok(()) => {
                if let Ok(mut e) = self.apply_error.lock() {
                    *e = None;
                }
            }
            Err(e) => {
                tracing::error!(department, version, error = %e, "cluster: adapter version from another node refused here");
                if let Ok(mut s) = self.apply_error.lock() {
                    *s = Some(format!("adapter {department} version {version}: {e}"));
                }
            }
        }
        r.map(|()| true)
    }

    /// Waits (up to [`ACK_WAIT`]) until every live node has read past `id`.
    pub async fn wait_acks(&self, id: &str) -> Acks {
        let target = id_key(id);
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        loop {
            let mut live = self.live_nodes();
            if !live.contains(&self.node) {
                live.push(self.node.clone());
            }
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(&self.acks).arg(&live);
            let acks: Vec<Option<String>> =
                self.link.query("HMGET", &cmd).await.unwrap_or_default();
            let confirmed = acks
                .iter()
                .filter(|a| a.as_deref().is_some_and(|a| id_key(a) >= target))
                .count();
            let out = Acks {
                confirmed,
                live: live.len(),
            };
            if confirmed >= live.len() || tokio::time::Instant::now() >= deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One heartbeat: registers this node, learns the live ones, notices a
    /// Redis restart, publishes changes made while Redis was away. Returns
    /// the number of live nodes.
    pub async fn heartbeat(&self) -> Result<u32, ClusterError> {
        let run_id = self.link.verify(&self.epoch).await?;
        let known = self.run_id.lock().ok().and_then(|r| r.clone());
        if known.is_some_and(|k| k != run_id) {
            // Redis restarted: whatever it held (stream included) may be gone.
            self.restarted.store(true, Ordering::Release);
            self.link.health.set_bus_synced(false);
        }
        let mut inv = self.heartbeat_script.prepare_invoke();
        inv.key(&self.nodes)
            .arg(&self.node)
            .arg(NODE_TTL.as_millis() as u64);
        let live: Vec<String> = self.link.script("heartbeat", &inv).await?;
        let n = u32::try_from(live.len()).unwrap_or(u32::MAX).max(1);
        if let Ok(mut l) = self.live.lock() {
            *l = live;
        }
        self.link.health.set_live_nodes(n);
        if self.link.health.bus_synced() {
            self.flush_pending().await;
        }
        Ok(n)
    }

    async fn flush_pending(&self) {
        let queued: Vec<Pending> = self
            .pending
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default();
        for (i, p) in queued.iter().enumerate() {
            if let Err(e) = self.send(p).await {
                tracing::debug!(error = %e, "cluster: queued change not yet published");
                if let Ok(mut q) = self.pending.lock() {
                    let rest = queued[i..].iter().filter(|p| !q.contains(p)).cloned();
                    let rest: Vec<_> = rest.collect();
                    q.splice(0..0, rest);
                }
                return;
            }
        }
    }

    /// Leaves the live set (others stop waiting for this node's acks).
    pub async fn leave(&self) {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&self.nodes).arg(&self.node);
        let _ = self.link.query::<i64>("ZREM", &cmd).await;
    }

    /// After a (re)connection: proves no event was missed or drops the
    /// cache, re-reads adapter records, publishes queued changes.
    async fn resync(&self, first: bool) -> Result<(), ClusterError> {
        let run_id = self.link.verify(&self.epoch).await?;
        let cursor = self.cursor.lock().ok().and_then(|c| c.clone());
        let same_server = self
            .run_id
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .is_some_and(|r| r == run_id);
        let restarted = self.restarted.swap(false, Ordering::AcqRel);
        let mut proven = false;
        if !first
            && same_server
            && !restarted
            && let Some(c) = &cursor
        {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&self.events).arg(c).arg(c);
            let v: Vec<Value> = self.link.query("XRANGE", &cmd).await?;
            proven = !v.is_empty();
        }
        if !proven {
            if let Some(a) = self.applier() {
                a.drop_cache();
            }
            self.link.health.cache_drops.fetch_add(1, Ordering::Relaxed);
            if !first {
                tracing::warn!(
                    "cluster: events may have been missed while Redis was unavailable; cached records dropped"
                );
            }
            let id = self.xadd(&[("kind", "hello")]).await?;
            if let Ok(mut c) = self.cursor.lock() {
                *c = Some(id);
            }
        }
        if let Ok(mut r) = self.run_id.lock() {
            *r = Some(run_id);
        }
        self.sync_adapters().await?;
        self.flush_pending().await;
        self.ack().await?;
        Ok(())
    }

    /// Applies every adapter record newer than what this node applied.
    async fn sync_adapters(&self) -> Result<(), ClusterError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&self.adapters);
        let all: HashMap<String, String> = self.link.query("HGETALL", &cmd).await?;
        let mut depts: Vec<_> = all.into_iter().collect();
        depts.sort();
        for (dept, json) in depts {
            self.apply_record(&dept, &json).await;
        }
        Ok(())
    }

    async fn apply_record(&self, department: &str, json: &str) {
        match serde_json::from_str::<AdapterRecord>(json) {
            Ok(r) => {
                let text = if r.deleted { None } else { r.text.as_deref() };
                if let Ok(true) = self.apply_adapter(department, r.version, text).await {
                    self.link
                        .health
                        .events_applied
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        department,
                        version = r.version,
                        "cluster: adapter change from another node applied"
                    );
                }
            }
            Err(e) => {
                tracing::error!(department, error = %e, "cluster: unreadable adapter record in Redis")
            }
        }
    }

    async fn ack(&self) -> Result<(), ClusterError> {
        let Some(c) = self.cursor.lock().ok().and_then(|c| c.clone()) else {
            return Ok(());
        };
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&self.acks).arg(&self.node).arg(c);
        self.link.query::<i64>("HSET", &cmd).await.map(|_| ())
    }

    async fn apply_entry(&self, map: &HashMap<String, Value>) {
        let from_self = field(map, "node").is_some_and(|n| n == self.node);
        match field(map, "kind").as_deref() {
            Some("invalidate") if !from_self => {
                if let (Some(a), Some(d)) = (self.applier(), field(map, "dataset")) {
                    a.invalidate(&d, field(map, "subject").as_deref());
                    self.link
                        .health
                        .events_applied
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Some("reload") if !from_self => {
                if let Some(a) = self.applier() {
                    match a.reload().await {
                        Ok(()) => tracing::info!("cluster: reloaded on another node's request"),
                        Err(e) => {
                            tracing::error!(error = %e, "cluster: reload requested by another node refused here")
                        }
                    }
                }
            }
            Some("adapter") => {
                // The record may be newer than the event: apply what Redis holds.
                if let Some(d) = field(map, "department") {
                    let mut cmd = redis::cmd("HGET");
                    cmd.arg(&self.adapters).arg(&d);
                    if let Ok(Some(json)) = self.link.query::<Option<String>>("HGET", &cmd).await {
                        self.apply_record(&d, &json).await;
                    }
                }
            }
            _ => {}
        }
    }

    /// Reads the stream until `cancel`: applies others' changes, keeps the
    /// cursor, resynchronises after any failure.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut synced = false;
        let mut first = true;
        let mut backoff = Duration::from_millis(100);
        loop {
            if cancel.is_cancelled() {
                return;
            }
            if self.restarted.load(Ordering::Acquire) {
                synced = false;
            }
            if !synced {
                match self.resync(first).await {
                    Ok(()) => {
                        synced = true;
                        first = false;
                        backoff = Duration::from_millis(100);
                        self.link.health.set_bus_synced(true);
                    }
                    Err(e) => {
                        self.link.health.set_bus_synced(false);
                        tracing::debug!(error = %e, "cluster: event stream not available");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
            let Some(cursor) = self.cursor.lock().ok().and_then(|c| c.clone()) else {
                synced = false;
                continue;
            };
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.events)
                .arg(&cursor);
            let read = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.link.blocking::<Option<StreamReadReply>>("XREAD", &cmd) => r,
            };
            match read {
                Ok(None) => {}
                Ok(Some(reply)) => {
                    let mut last = None;
                    for key in reply.keys {
                        for entry in key.ids {
                            self.apply_entry(&entry.map).await;
                            last = Some(entry.id);
                        }
                    }
                    if let Some(id) = last {
                        if let Ok(mut c) = self.cursor.lock() {
                            *c = Some(id);
                        }
                        if self.ack().await.is_err() {
                            synced = false;
                            self.link.health.set_bus_synced(false);
                        }
                    }
                }
                Err(_) => {
                    synced = false;
                    self.link.health.set_bus_synced(false);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_numerically() {
        assert!(id_key("1700000000000-10") > id_key("1700000000000-9"));
        assert!(id_key("1700000000001-0") > id_key("1700000000000-99"));
        assert_eq!(id_key("5"), (5, 0));
        assert_eq!(id_key("garbage"), (0, 0));
    }
}
