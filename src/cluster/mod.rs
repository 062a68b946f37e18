//! Cluster mode: several gateway nodes behind one balancer behave as one
//! gateway through a shared Redis (or Valkey).
//!
//! - [`limiter`]: every quota that protects someone (client, client x
//!   department, department) holds across all nodes together, spent through
//!   small local leases so Redis is rarely on a request's path;
//! - [`bus`]: cache invalidations, adapter changes and reloads reach every
//!   node, acknowledged, through a Redis stream read with a cursor;
//! - [`link`]: the connections, a timeout on every call, and the health
//!   `/readyz` and metrics report (the `cluster` component).
//!
//! Redis down, slow, or not Redis at all: nodes keep serving with local
//! limits at their share of each quota, report `degraded`, and catch up when
//! Redis answers again (dropping cached records unless they can prove they
//! missed nothing). Without `[cluster] redis_url` none of this exists and a
//! node behaves exactly as a single gateway.

pub mod bus;
pub mod config;
pub mod error;
pub mod limiter;
pub mod link;

use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

pub use bus::{Acks, Applier, BoxFuture, Bus, Published};
pub use config::{ClusterSettings, RawCluster};
pub use error::ClusterError;
pub use limiter::SharedLimits;
pub use link::{Health, Link};

use crate::protect::{DepartmentProtection, RateLimitSettings};

/// One node's membership of a cluster.
pub struct Cluster {
    settings: ClusterSettings,
    node: String,
    /// Connections and health.
    pub link: Arc<Link>,
    /// Cluster-wide rate limits.
    pub limits: Arc<SharedLimits>,
    /// The state bus.
    pub bus: Arc<Bus>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("redis", &self.link.url())
            .finish()
    }
}

impl Cluster {
    /// Prepares cluster mode for node `node` (nothing connects yet).
    pub fn new<'a>(
        settings: &ClusterSettings,
        node: &str,
        limits: &RateLimitSettings,
        departments: impl IntoIterator<Item = (&'a str, &'a DepartmentProtection)>,
    ) -> Result<Arc<Self>, ClusterError> {
        let link = Arc::new(Link::new(settings)?);
        let shared = Arc::new(SharedLimits::new(
            link.clone(),
            &settings.key_prefix,
            settings.nodes,
            limits,
            departments,
        ));
        let bus = Arc::new(Bus::new(
            link.clone(),
            &settings.key_prefix,
            node,
            settings.stream_max_len,
        ));
        Ok(Arc::new(Self {
            settings: settings.clone(),
            node: node.to_string(),
            link,
            limits: shared,
            bus,
            cancel: CancellationToken::new(),
        }))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The settings.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// Starts the heartbeat and the stream reader; `applier` applies other
    /// nodes' changes here.
    pub fn start(self: &Arc<Self>, applier: Weak<dyn Applier>) {
        self.bus.set_applier(applier);
        tokio::spawn(self.bus.clone().run(self.cancel.clone()));
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(bus::HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = this.cancel.cancelled() => return,
                    _ = tick.tick() => {
                        if let Ok(n) = this.bus.heartbeat().await {
                            this.limits.set_live_nodes(n);
                        }
                    }
                }
            }
        });
    }

    /// Leaves the cluster: stops the tasks and removes this node from the
    /// live set.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.bus.leave().await;
    }

    /// The `cluster` component of `/readyz`.
    pub fn status(&self) -> serde_json::Value {
        let h = &self.link.health;
        serde_json::json!({
            "status": if h.degraded() { "degraded" } else { "ok" },
            "node": self.node,
            "redis": self.link.url(),
            "redis_up": h.redis_up(),
            "events_synced": h.bus_synced(),
            "live_nodes": h.live_nodes(),
            "limits": if h.redis_up() { "shared" } else { "local share" },
            "fallback_share": self.limits.share(),
            "pending_changes": self.bus.pending(),
            "last_error": h.last_error(),
            "adapter_error": self.bus.apply_error(),
        })
    }
}
