//! Prometheus metrics (prometheus-client), served on the admin listener.
//!
//! Label values never come from callers: actions are a fixed set, datasets
//! and departments are labelled only when they exist in configuration,
//! statuses are the gateway's own. Counters of the request path are updated
//! inline (an atomic add); the state of limiters, breakers, bulkheads, the
//! audit writer and the token cache is read at scrape time.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::audit::AuditLog;
use crate::cache::{CacheStatus, SharedCache};
use crate::state::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: &'static str,
    status: u16,
    department: String,
    dataset: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimiterLabels {
    limiter: &'static str,
}

/// All gateway metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    upstream_latency: Family<DepartmentLabels, Histogram>,
    cache: Family<CacheLabels, Counter>,
    invalidations: Counter,
    rate_limited: Family<LimiterLabels, Counter>,
    cases_open: Gauge,
    cases_overdue: Gauge,
    cases: Option<Arc<crate::case::Cases>>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Actions the gateway records; anything else is folded into `other` so a
/// caller can never create a series.
const ACTIONS: &[&str] = &[
    "request",
    "catalog.read",
    "dataset.read",
    "scenario.list",
    "scenario.guide",
    "scenario.run",
    "scenario.part",
    "case.read",
    "case.refresh",
    "proxy",
    "auth.denied",
    "admin",
];

/// What the scrape-time collector reads.
#[derive(Clone)]
pub struct Runtime {
    /// The configuration snapshot (limiters, breakers, bulkheads, token cache).
    pub state: Arc<ArcSwap<State>>,
    /// The audit writer.
    pub audit: AuditLog,
    /// The shared-record cache.
    pub cache: Arc<SharedCache>,
    /// Cluster mode, when on.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Kept cases (counted at scrape time by [`Metrics::count_cases`]).
    pub cases: Option<Arc<crate::case::Cases>>,
    /// Client connections of the gateway's listeners.
    pub connections: Option<Arc<crate::server::ConnStats>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl Metrics {
    /// Registers every metric; with a runtime, also the scrape-time collector.
    pub fn new(runtime: Option<Runtime>) -> Self {
        let mut registry = Registry::with_prefix("onewindow");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Data-plane requests by action, status, department and dataset",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Gateway latency from request to reply (audit record included)",
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
            "Shared-record cache lookups by result (hit, miss, stale)",
            cache.clone(),
        );
        let invalidations = Counter::default();
        registry.register(
            "cache_invalidations",
            "Revocations pushed through /admin/cache/invalidate",
            invalidations.clone(),
        );
        let rate_limited = Family::<LimiterLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limiter, by limiter",
            rate_limited.clone(),
        );
        let cases_open = Gauge::default();
        registry.register(
            "cases_open",
            "Kept cases with outstanding parts",
            cases_open.clone(),
        );
        let cases_overdue = Gauge::default();
        registry.register(
            "cases_overdue",
            "Open cases past their supply-by date",
            cases_overdue.clone(),
        );
        let cases = runtime.as_ref().and_then(|rt| rt.cases.clone());
        if let Some(rt) = runtime {
            registry.register_collector(Box::new(RuntimeCollector(rt)));
        }
        Self {
            registry,
            requests,
            latency,
            upstream_latency,
            cache,
            invalidations,
            rate_limited,
            cases_open,
            cases_overdue,
            cases,
        }
    }

    /// Counts open and overdue cases in the case store (called before each
    /// scrape; the collector itself cannot wait for the store). A store
    /// that cannot answer leaves the last counts.
    pub async fn count_cases(&self) {
        let Some(cases) = &self.cases else {
            return;
        };
        match cases.counts().await {
            Ok(c) => {
                self.cases_open
                    .set(i64::try_from(c.open).unwrap_or(i64::MAX));
                self.cases_overdue
                    .set(i64::try_from(c.overdue).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "cannot count cases for the metrics"),
        }
    }

    /// Counts one answered request. `department` and `dataset` must come from
    /// configuration (the caller checks), never from the request as sent.
    pub fn observe_request(
        &self,
        action: &'static str,
        status: u16,
        department: Option<&str>,
        dataset: Option<&str>,
        took: Duration,
    ) {
        let action = if ACTIONS.contains(&action) {
            action
        } else {
            "other"
        };
        self.requests
            .get_or_create(&RequestLabels {
                action,
                status,
                department: department.unwrap_or("-").to_string(),
                dataset: dataset.unwrap_or("-").to_string(),
            })
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

    /// Counts one revocation.
    pub fn observe_invalidation(&self) {
        self.invalidations.inc();
    }

    /// Counts one rate-limit refusal (`limiter` is the policy name).
    pub fn observe_rate_limited(&self, limiter: &'static str) {
        self.rate_limited
            .get_or_create(&LimiterLabels { limiter })
            .inc();
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

/// Reads component state at scrape time.
#[derive(Debug)]
struct RuntimeCollector(Runtime);

fn gauge<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, f64)],
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(0.0f64);
    let mut fam = e.encode_descriptor(name, help, None, g.metric_type())?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(fam.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, u64)],
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(0u64);
    let mut fam = e.encode_descriptor(name, help, None, c.metric_type())?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(fam.encode_family(labels)?)?;
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoLabels {}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    department: String,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApprovalLabels {
    client: String,
    dataset: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.0.state.load();
        let mut breaker = Vec::new();
        let mut transitions = Vec::new();
        let mut in_flight = Vec::new();
        let mut queued = Vec::new();
        for g in state.protect.departments() {
            let d = || DepartmentLabels {
                department: g.name().to_string(),
            };
            let code = match g.breaker_summary() {
                "closed" => 0.0,
                "half-open" => 1.0,
                _ => 2.0,
            };
            breaker.push((d(), code));
            let t = g.breaker_transitions();
            for (to, n) in [
                ("open", t.opened),
                ("half-open", t.half_opened),
                ("closed", t.closed),
            ] {
                transitions.push((
                    TransitionLabels {
                        department: g.name().to_string(),
                        to,
                    },
                    n,
                ));
            }
            in_flight.push((d(), g.bulkhead().in_flight() as f64));
            queued.push((d(), g.bulkhead().queue_depth() as f64));
        }
        // Label values from clients.toml only (client and dataset names).
        let today = crate::clock::Date::today();
        let approvals: Vec<_> = state
            .grants
            .approvals()
            .into_iter()
            .map(|(client, dataset, a)| {
                (
                    ApprovalLabels {
                        client: client.to_string(),
                        dataset: dataset.to_string(),
                    },
                    a.days_to_expiry(today) as f64,
                )
            })
            .collect();
        gauge(
            &mut e,
            "approval_days_to_expiry",
            "Days until the approval of a conditional grant lapses (negative: lapsed)",
            &approvals,
        )?;
        gauge(
            &mut e,
            "breaker_state",
            "Circuit breaker per department: 0 closed, 1 half-open, 2 open",
            &breaker,
        )?;
        counter(
            &mut e,
            "breaker_transitions",
            "Breaker transitions per department, by target state",
            &transitions,
        )?;
        gauge(
            &mut e,
            "bulkhead_in_flight",
            "Department calls in flight",
            &in_flight,
        )?;
        gauge(
            &mut e,
            "bulkhead_queued",
            "Department calls waiting for a bulkhead slot",
            &queued,
        )?;
        let s = self.0.audit.stats();
        let one = |v: f64| [(NoLabels {}, v)];
        gauge(
            &mut e,
            "audit_queue_depth",
            "Audit records waiting for the writer",
            &one(s.queued as f64),
        )?;
        gauge(
            &mut e,
            "audit_last_batch_size",
            "Records in the last group commit",
            &one(s.last_batch as f64),
        )?;
        gauge(
            &mut e,
            "audit_healthy",
            "1 while the audit log can be written; 0 fails data requests closed",
            &one(if self.0.audit.is_healthy() { 1.0 } else { 0.0 }),
        )?;
        counter(
            &mut e,
            "audit_batches",
            "Group commits written",
            &[(NoLabels {}, s.batches)],
        )?;
        counter(
            &mut e,
            "audit_records",
            "Audit records acknowledged",
            &[(NoLabels {}, s.records)],
        )?;
        counter(
            &mut e,
            "audit_write_failures",
            "Group commits that failed to write or sync",
            &[(NoLabels {}, s.write_failures)],
        )?;
        gauge(
            &mut e,
            "audit_write_seconds_spent",
            "Time spent writing and syncing audit batches",
            &one(s.write_seconds),
        )?;
        let (hits, misses) = state.auth.cache_hits_misses();
        counter(
            &mut e,
            "token_cache_hits",
            "Bearer tokens answered from the verified-token cache",
            &[(NoLabels {}, hits)],
        )?;
        counter(
            &mut e,
            "token_cache_misses",
            "Bearer tokens verified cryptographically",
            &[(NoLabels {}, misses)],
        )?;
        let fetches: Vec<_> = state
            .auth
            .issuers()
            .map(|i| {
                (
                    IssuerLabels {
                        issuer: i.to_string(),
                    },
                    state.auth.jwks_fetches(i).unwrap_or(0),
                )
            })
            .collect();
        counter(
            &mut e,
            "jwks_fetches",
            "JWKS fetches per URL issuer",
            &fetches,
        )?;
        if let Some(c) = &self.0.connections {
            gauge(
                &mut e,
                "connections_open",
                "Open client connections (data plane and admin listeners)",
                &one(c.open() as f64),
            )?;
            gauge(
                &mut e,
                "connections_parked",
                "Idle HTTP/1 connections parked without HTTP state",
                &one(c.parked() as f64),
            )?;
        }
        gauge(
            &mut e,
            "cache_entries",
            "Records held in the shared-record cache",
            &one(self.0.cache.entry_count() as f64),
        )?;
        gauge(
            &mut e,
            "rate_limiter_keys",
            "Keys tracked by the keyed rate limiters (bounded by maintenance)",
            &one(state.protect.tracked_keys() as f64),
        )?;
        if let Some(c) = &self.0.cluster {
            let h = &c.link.health;
            let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            gauge(
                &mut e,
                "cluster_degraded",
                "1 while cluster mode runs degraded (Redis unavailable: local limits at this node's share, events not received)",
                &one(if h.degraded() { 1.0 } else { 0.0 }),
            )?;
            gauge(
                &mut e,
                "cluster_redis_up",
                "1 while Redis answers within the timeout",
                &one(if h.redis_up() { 1.0 } else { 0.0 }),
            )?;
            gauge(
                &mut e,
                "cluster_live_nodes",
                "Nodes alive in the last heartbeat",
                &one(f64::from(h.live_nodes())),
            )?;
            counter(
                &mut e,
                "cluster_redis_errors",
                "Redis calls that failed or timed out",
                &[(NoLabels {}, n(&h.errors))],
            )?;
            counter(
                &mut e,
                "cluster_fallback_checks",
                "Rate-limit checks answered by this node's local share",
                &[(NoLabels {}, n(&h.fallback_checks))],
            )?;
            counter(
                &mut e,
                "cluster_lease_fetches",
                "Token leases fetched from Redis",
                &[(NoLabels {}, n(&h.lease_fetches))],
            )?;
            counter(
                &mut e,
                "cluster_cache_drops",
                "Times cached records were dropped because events may have been missed",
                &[(NoLabels {}, n(&h.cache_drops))],
            )?;
            counter(
                &mut e,
                "cluster_events_applied",
                "Changes from other nodes applied here",
                &[(NoLabels {}, n(&h.events_applied))],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_actions_never_create_series() {
        let m = Metrics::new(None);
        m.observe_request(
            "dataset.read",
            200,
            Some("market-supervision"),
            Some("business-licence"),
            Duration::from_millis(1),
        );
        m.observe_request(
            "evil-random-path",
            404,
            None,
            None,
            Duration::from_millis(1),
        );
        let text = m.encode();
        assert!(text.contains("action=\"dataset.read\""));
        assert!(!text.contains("evil"));
        assert!(text.contains("action=\"other\""));
        assert!(text.ends_with("# EOF\n"));
    }
}
