//! Cases: "accept now, supply later" (容缺受理).
//!
//! A scenario run with `X-Case-Id` keeps its outcome as a case: which
//! scenario, for which subjects, when it was accepted, by when the
//! outstanding parts are due, and each part's status. The clerk reads it
//! back (`GET /v1/cases/{id}`) and later refreshes it
//! (`POST /v1/cases/{id}/refresh`), which fetches only the parts still
//! outstanding and completes the case when none is left.
//!
//! Cases are keyed by (client, case id). The subjects are kept because a
//! refresh needs them; they stay in the case store and are never shown,
//! logged or audited in the clear. Changes to one case are serialised on
//! this node by a per-case lock ([`Cases::lock`]) and across writers by the
//! store's compare-and-swap on [`Case::version`].

mod error;
pub mod redis;
pub mod sqlite;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde::{Deserialize, Serialize};

pub use error::CaseError;
pub use redis::RedisCaseStore;
pub use sqlite::SqliteCaseStore;
pub use store::{CaseCounts, CaseStore, MemoryCaseStore};

use crate::audit::time::format_rfc3339_micros;
use crate::clock::{WallClock, duration_micros};
use crate::scenario::{PartResult, PartStatus, Scenario, ScenarioReply};

/// One part of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasePart {
    /// ok, missing, error or denied, as in the scenario reply.
    pub status: PartStatus,
    /// The status a single read would have answered.
    pub http_status: u16,
    /// Why not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The scenario lets this part be supplied later (an optional part).
    pub supply_later: bool,
    /// When the part was last fetched (µs since the Unix epoch).
    pub checked_at: i64,
}

/// A kept case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// The client that created it (its token's `sub`).
    pub client: String,
    /// The caller's case id.
    pub case_id: String,
    /// The scenario run.
    pub scenario: String,
    /// Subject kind -> id, as given at acceptance (needed to refresh).
    pub subjects: BTreeMap<String, String>,
    /// When the case was accepted (µs since the Unix epoch).
    pub accepted_at: i64,
    /// By when the outstanding parts are due (µs).
    pub supply_by: i64,
    /// Last change (µs).
    pub updated_at: i64,
    /// When the last outstanding part arrived (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<i64>,
    /// Part name -> status.
    pub parts: BTreeMap<String, CasePart>,
    /// Refreshes so far.
    pub refreshes: u32,
    /// Bumped by every write; the store's compare-and-swap key.
    pub version: u64,
}

impl Case {
    /// A new case from a scenario run accepted at `now`.
    pub fn accept(
        client: &str,
        case_id: &str,
        spec: &Scenario,
        subjects: &BTreeMap<String, String>,
        reply: &ScenarioReply,
        now: i64,
    ) -> Case {
        let mut case = Case {
            client: client.to_string(),
            case_id: case_id.to_string(),
            scenario: spec.name.clone(),
            subjects: subjects.clone(),
            accepted_at: now,
            supply_by: now.saturating_add(duration_micros(spec.supply_later)),
            updated_at: now,
            completed_at: None,
            parts: BTreeMap::new(),
            refreshes: 0,
            version: 0,
        };
        case.apply(spec, &reply.parts, now);
        case
    }

    /// Takes the results of a run or refresh into the case (the parts not
    /// fetched keep their status) and bumps the version.
    pub fn apply(&mut self, spec: &Scenario, results: &BTreeMap<String, PartResult>, now: i64) {
        for (name, r) in results {
            let supply_later = spec
                .parts
                .iter()
                .find(|p| &p.name == name)
                .is_some_and(|p| !p.required);
            self.parts.insert(
                name.clone(),
                CasePart {
                    status: r.status,
                    http_status: r.http_status,
                    detail: r.detail.clone(),
                    supply_later,
                    checked_at: now,
                },
            );
        }
        self.updated_at = now;
        if self.complete() && self.completed_at.is_none() {
            self.completed_at = Some(now);
        }
        self.version += 1;
    }

    /// True when every part is ok.
    pub fn complete(&self) -> bool {
        self.parts.values().all(|p| p.status == PartStatus::Ok)
    }

    /// Names of the parts not yet ok.
    pub fn outstanding(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter(|(_, p)| p.status != PartStatus::Ok)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Open and past its supply-by time.
    pub fn overdue(&self, now: i64) -> bool {
        !self.complete() && now > self.supply_by
    }

    /// The case as answered to its client; with `records`, the records
    /// fetched just now (a refresh) under their parts. Subjects are not shown.
    pub fn view(
        &self,
        now: i64,
        records: Option<&BTreeMap<String, PartResult>>,
    ) -> serde_json::Value {
        let parts: serde_json::Map<String, serde_json::Value> = self
            .parts
            .iter()
            .map(|(name, p)| {
                let mut v = serde_json::json!({
                    "status": p.status,
                    "http_status": p.http_status,
                    "supply_later": p.supply_later,
                    "checked_at": format_rfc3339_micros(p.checked_at),
                });
                if let Some(d) = &p.detail {
                    v["detail"] = d.clone().into();
                }
                if let Some(r) = records.and_then(|r| r.get(name))
                    && let Some(rec) = &r.record
                {
                    v["record"] = rec.clone();
                    // Provenance and signature, as in a scenario reply's part.
                    if let (Some(signed), Some(obj)) = (&r.signed, v.as_object_mut()) {
                        for (k, x) in signed {
                            obj.insert(k.clone(), x.clone());
                        }
                    }
                }
                (name.clone(), v)
            })
            .collect();
        let mut v = serde_json::json!({
            "case_id": self.case_id,
            "scenario": self.scenario,
            "accepted_at": format_rfc3339_micros(self.accepted_at),
            "supply_by": format_rfc3339_micros(self.supply_by),
            "updated_at": format_rfc3339_micros(self.updated_at),
            "complete": self.complete(),
            "overdue": self.overdue(now),
            "outstanding": self.outstanding(),
            "refreshes": self.refreshes,
            "parts": parts,
        });
        if let Some(t) = self.completed_at {
            v["completed_at"] = format_rfc3339_micros(t).into();
        }
        v
    }
}

/// Checks a case id taken from a path segment (still percent-encoded): the
/// same rule as the `X-Case-Id` header (at most 128 bytes of UTF-8, no
/// control or bidi-override characters, not blank); else 400.
pub fn case_id_from_path(raw: &str) -> Result<String, crate::auth::AttributionError> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    crate::auth::check_value("case id", &bytes)
}

/// The case service: a store, a per-case lock, and the clock dates are read
/// from.
#[derive(Debug)]
pub struct Cases {
    store: Arc<dyn CaseStore>,
    locks: Mutex<LockMap>,
    clock: WallClock,
}

/// (client, case id) -> the case's lock, while anyone holds or waits for it.
type LockMap = HashMap<(String, String), Weak<tokio::sync::Mutex<()>>>;

/// Held while one case is being changed.
pub type CaseLock = tokio::sync::OwnedMutexGuard<()>;

/// Above this many remembered locks, forgotten ones are swept.
const LOCK_SWEEP: usize = 1024;

impl Cases {
    /// Cases in `store`, dated by `clock`.
    pub fn new(store: Arc<dyn CaseStore>, clock: WallClock) -> Self {
        Self {
            store,
            locks: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Now, in µs since the Unix epoch.
    pub fn now(&self) -> i64 {
        self.clock.now_micros()
    }

    /// Waits until no other request on this node changes case `case_id` of
    /// `client`, and holds it until the guard is dropped. (The map's lock is
    /// held only to look the case's lock up, never across an await.)
    pub async fn lock(&self, client: &str, case_id: &str) -> CaseLock {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (client.to_string(), case_id.to_string());
            match map.get(&key).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    if map.len() >= LOCK_SWEEP {
                        map.retain(|_, w| w.strong_count() > 0);
                    }
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key, Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }

    /// The case, if this client has one of that id.
    pub async fn load(&self, client: &str, case_id: &str) -> Result<Option<Case>, CaseError> {
        self.store.load(client, case_id).await
    }

    /// Writes a case (compare-and-swap on its version).
    pub async fn save(&self, case: &Case) -> Result<(), CaseError> {
        self.store.save(case).await
    }

    /// Closes the store (shutdown).
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// Open and overdue cases now.
    pub async fn counts(&self) -> Result<CaseCounts, CaseError> {
        self.store.counts(self.now()).await
    }
}

#[cfg(test)]
mod tests;
