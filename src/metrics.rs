//! Prometheus metrics (prometheus-client), served on the admin listener.
//!
//! Label values never come from callers: routes are a fixed set of kinds,
//! departments come from configuration, statuses are the gateway's own.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::CacheStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepartmentLabels {
    department: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

/// All gateway metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    upstream_latency: Family<DepartmentLabels, Histogram>,
    cache: Family<CacheLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Actions the gateway records; anything else is folded into `other` so a
/// caller can never create a series.
const ACTIONS: &[&str] = &[
    "request",
    "catalog.read",
    "dataset.read",
    "scenario.run",
    "scenario.part",
    "proxy",
    "auth.denied",
    "admin",
];

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("onewindow");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Data-plane requests by action and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Gateway latency from request to reply",
            latency.clone(),
        );
        let upstream_latency = Family::<DepartmentLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "department_call_duration_seconds",
            "Latency of department calls, all attempts",
            upstream_latency.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Shared-record cache lookups by result",
            cache.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            upstream_latency,
            cache,
        }
    }

    /// Counts one answered request.
    pub fn observe_request(&self, action: &'static str, status: u16, took: Duration) {
        let action = if ACTIONS.contains(&action) {
            action
        } else {
            "other"
        };
        self.requests
            .get_or_create(&RequestLabels { action, status })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { action })
            .observe(took.as_secs_f64());
    }

    /// Times one department call (`department` comes from configuration).
    pub fn observe_upstream(&self, department: &str, took: Duration) {
        self.upstream_latency
            .get_or_create(&DepartmentLabels {
                department: department.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one cache outcome.
    pub fn observe_cache(&self, status: CacheStatus) {
        self.cache
            .get_or_create(&CacheLabels {
                result: status.as_str(),
            })
            .inc();
    }

    /// The registry, for components that register their own gauges.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_actions_never_create_series() {
        let m = Metrics::new();
        m.observe_request("dataset.read", 200, Duration::from_millis(1));
        m.observe_request("evil-random-path", 404, Duration::from_millis(1));
        let text = m.encode();
        assert!(text.contains("action=\"dataset.read\""));
        assert!(!text.contains("evil"));
        assert!(text.contains("action=\"other\""));
        assert!(text.ends_with("# EOF\n"));
    }
}
