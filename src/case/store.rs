//! Where cases are kept: a small trait, so the embedded SQLite store of a
//! single node and a shared store of a cluster are interchangeable.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use futures_util::future::BoxFuture;

use super::{Case, CaseError};

/// Open and overdue cases, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaseCounts {
    /// Cases with outstanding parts.
    pub open: u64,
    /// Open cases past their supply-by date.
    pub overdue: u64,
}

/// A case store. Cases are keyed by (client, case id): a client never sees
/// another's case, and two clients may use the same id.
///
/// Writes are compare-and-swap on [`Case::version`], so two writers (on one
/// node or several) can never silently overwrite each other.
pub trait CaseStore: std::fmt::Debug + Send + Sync {
    /// The case `case_id` of `client`, if any.
    fn load<'a>(
        &'a self,
        client: &'a str,
        case_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Case>, CaseError>>;

    /// Writes `case`, whose version the caller has already bumped: version 1
    /// only when no such case exists, version n only over version n-1.
    /// Otherwise [`CaseError::Conflict`] and nothing is written.
    fn save<'a>(&'a self, case: &'a Case) -> BoxFuture<'a, Result<(), CaseError>>;

    /// Open cases, and those of them whose supply-by time is before `now`
    /// (microseconds since the Unix epoch).
    fn counts(&self, now_micros: i64) -> BoxFuture<'_, Result<CaseCounts, CaseError>>;

    /// Flushes and closes the store on shutdown (default: nothing to do).
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A store in memory: for tests and for running without a data dir. Cases
/// are lost on restart.
#[derive(Debug, Default)]
pub struct MemoryCaseStore {
    cases: Mutex<HashMap<(String, String), Case>>,
}

impl CaseStore for MemoryCaseStore {
    fn load<'a>(
        &'a self,
        client: &'a str,
        case_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Case>, CaseError>> {
        let found = self
            .cases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(client.to_string(), case_id.to_string()))
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn save<'a>(&'a self, case: &'a Case) -> BoxFuture<'a, Result<(), CaseError>> {
        let mut cases = self.cases.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (case.client.clone(), case.case_id.clone());
        let current = cases.get(&key).map_or(0, |c| c.version);
        let r = if current + 1 == case.version {
            cases.insert(key, case.clone());
            Ok(())
        } else {
            Err(CaseError::Conflict(case.case_id.clone()))
        };
        Box::pin(async move { r })
    }

    fn counts(&self, now_micros: i64) -> BoxFuture<'_, Result<CaseCounts, CaseError>> {
        let cases = self.cases.lock().unwrap_or_else(PoisonError::into_inner);
        let mut c = CaseCounts::default();
        for case in cases.values().filter(|c| !c.complete()) {
            c.open += 1;
            if case.supply_by < now_micros {
                c.overdue += 1;
            }
        }
        Box::pin(async move { Ok(c) })
    }
}
