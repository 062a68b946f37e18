//! Deny floods (401s, 429s) in aggregate: the first `threshold` denies per
//! (client-or-ip, action, reason) and interval are recorded one by one; the
//! rest are counted and written as one summary record per key and interval.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::AuditSettings;
use super::record::{Action, AuditEvent, Decision};
use super::writer::AuditLog;

const SHARDS: usize = 16;
/// Distinct keys tracked per shard and interval; beyond that (e.g. a flood
/// from very many addresses) new sources are counted under one `*` key so
/// memory stays bounded.
const MAX_KEYS_PER_SHARD: usize = 4096;

/// What to do with one deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateDecision {
    /// Write its record as usual.
    Record,
    /// Counted; it will appear in the interval's summary record.
    Suppressed,
}

type Key = (String, Action, String);

/// Counts denies per key; sharded so a flood does not serialise on one lock
/// (locks are held for a map update only, never across an await).
pub struct DenyAggregator {
    shards: Vec<Mutex<HashMap<Key, (u64, u64)>>>,
    hasher: RandomState,
    threshold: u64,
    interval: Duration,
}

impl std::fmt::Debug for DenyAggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenyAggregator")
            .field("threshold", &self.threshold)
            .field("interval", &self.interval)
            .finish()
    }
}

impl DenyAggregator {
    /// Records `threshold` denies per key and interval individually.
    pub fn new(threshold: u64, interval: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            threshold,
            interval,
        }
    }

    /// From `deny_summary_threshold` / `deny_summary_interval_secs`.
    pub fn from_settings(s: &AuditSettings) -> Self {
        Self::new(s.deny_summary_threshold, s.deny_summary_interval)
    }

    /// Counts one deny by `who` (client id, or peer IP when unauthenticated).
    pub fn observe(&self, who: &str, action: &Action, reason: &str) -> AggregateDecision {
        let shard = &self.shards[(self.hasher.hash_one(who) as usize) % SHARDS];
        let Ok(mut map) = shard.lock() else {
            return AggregateDecision::Record;
        };
        let mut key = (who.to_string(), action.clone(), reason.to_string());
        if map.len() >= MAX_KEYS_PER_SHARD && !map.contains_key(&key) {
            key.0 = "*".to_string();
        }
        let c = map.entry(key).or_insert((0, 0));
        c.0 += 1;
        if c.0 <= self.threshold {
            AggregateDecision::Record
        } else {
            c.1 += 1;
            AggregateDecision::Suppressed
        }
    }

    /// Counts `ev` as one refusal of its client (or address) for its action
    /// and reason: true when it is to be recorded on its own, false when it is
    /// folded into the interval's summary.
    pub fn admits(&self, ev: &AuditEvent) -> bool {
        let who = ev.client.as_deref().unwrap_or_default();
        let why = ev.reason.as_deref().unwrap_or_default();
        matches!(
            self.observe(who, &ev.action, why),
            AggregateDecision::Record
        )
    }

    /// Ends the interval: one summary event per key with suppressed denies;
    /// all counters restart.
    pub fn drain(&self) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let taken = match shard.lock() {
                Ok(mut m) => std::mem::take(&mut *m),
                Err(_) => continue,
            };
            for ((who, action, reason), (seen, suppressed)) in taken {
                if suppressed == 0 {
                    continue;
                }
                let mut ev = AuditEvent::new(action, Decision::Deny);
                ev.client = Some(who);
                ev.reason = Some(format!(
                    "{reason} (summary: {seen} denies in {}s, {suppressed} not recorded individually)",
                    self.interval.as_secs()
                ));
                out.push(ev);
            }
        }
        out
    }

    /// Drains every interval into `log` until `stop`, then once more.
    pub async fn run(self: Arc<Self>, log: AuditLog, stop: CancellationToken) {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tick.tick() => false,
            };
            for ev in self.drain() {
                if let Err(e) = log.append(ev).await {
                    tracing::warn!(error = %e, "audit: deny summary not written");
                }
            }
            if stopping {
                return;
            }
        }
    }
}
