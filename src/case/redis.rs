//! The shared case store of cluster mode: cases live in the cluster's Redis,
//! so a case accepted through one node is read, refreshed and counted
//! through any other.
//!
//! Same semantics as the SQLite store: keyed by (client, case id), each
//! write a compare-and-swap on [`Case::version`] (one Lua script, atomic in
//! Redis), kept until removed by the operator (no expiry). Layout, all under
//! the cluster's hash tag `{<prefix>}` (one slot, as the Lua script needs on a
//! Redis Cluster):
//!
//! - `{<prefix>}:case:<len(client)>:<client>:<case id>`: a hash with `v` (the
//!   version) and `body` (the case as JSON, subjects included: protect Redis
//!   like the gateway's data dir);
//! - `{<prefix>}:cases:open`: a sorted set of the open cases' keys scored by
//!   their supply-by time, for the open and overdue counts.
//!
//! Redis down, slow or not Redis: case requests answer 503
//! `case-store-unavailable` (nothing is kept on one node only, where the
//! other nodes could not see it); the cause is in the node's log and in
//! `/readyz`'s cluster component.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use redis::Script;

use super::store::{CaseCounts, CaseStore};
use super::{Case, CaseError};
use crate::cluster::{ClusterError, Link};

/// Compare-and-swap of one case. KEYS: the case, the open index. ARGV: the
/// new version, the body, 1 when open, the supply-by time (µs). Returns 1
/// when written, 0 when the stored version is not the new one minus one.
const SAVE_LUA: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cur + 1 ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'body', ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
else
  redis.call('ZREM', KEYS[2], KEYS[1])
end
return 1
"#;

/// Cases in the cluster's Redis.
pub struct RedisCaseStore {
    link: Arc<Link>,
    prefix: String,
    save: Script,
}

impl std::fmt::Debug for RedisCaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCaseStore")
            .field("redis", &self.link.url())
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn store_err(e: ClusterError) -> CaseError {
    tracing::warn!(error = %e, "cases: the shared case store failed");
    CaseError::Store(e.to_string())
}

impl RedisCaseStore {
    /// The store on `link`, keys under the hash tag `{prefix}`.
    pub fn new(link: Arc<Link>, prefix: &str) -> Self {
        Self {
            link,
            prefix: prefix.to_string(),
            save: Script::new(SAVE_LUA),
        }
    }

    /// The key of one case. The client's length comes first, so that no
    /// (client, case id) pair can name another's key whatever `:` they hold.
    pub fn case_key(&self, client: &str, case_id: &str) -> String {
        format!(
            "{{{}}}:case:{}:{client}:{case_id}",
            self.prefix,
            client.len()
        )
    }

    fn open_key(&self) -> String {
        format!("{{{}}}:cases:open", self.prefix)
    }
}

impl CaseStore for RedisCaseStore {
    fn load<'a>(
        &'a self,
        client: &'a str,
        case_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Case>, CaseError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("HGET");
            cmd.arg(self.case_key(client, case_id)).arg("body");
            let body: Option<String> = self
                .link
                .query("HGET case", &cmd)
                .await
                .map_err(store_err)?;
            match body {
                None => Ok(None),
                Some(b) => serde_json::from_str(&b)
                    .map(Some)
                    .map_err(|e| CaseError::Store(format!("a stored case is not readable: {e}"))),
            }
        })
    }

    fn save<'a>(&'a self, case: &'a Case) -> BoxFuture<'a, Result<(), CaseError>> {
        Box::pin(async move {
            let body = serde_json::to_string(case).map_err(|e| CaseError::Store(e.to_string()))?;
            let mut inv = self.save.prepare_invoke();
            inv.key(self.case_key(&case.client, &case.case_id))
                .key(self.open_key())
                .arg(case.version)
                .arg(body)
                .arg(u8::from(!case.complete()))
                .arg(case.supply_by);
            let written: i64 = self
                .link
                .script("case compare-and-swap", &inv)
                .await
                .map_err(store_err)?;
            if written == 1 {
                Ok(())
            } else {
                Err(CaseError::Conflict(case.case_id.clone()))
            }
        })
    }

    fn counts(&self, now_micros: i64) -> BoxFuture<'_, Result<CaseCounts, CaseError>> {
        Box::pin(async move {
            let key = self.open_key();
            let mut p = redis::pipe();
            p.cmd("ZCARD")
                .arg(&key)
                .cmd("ZCOUNT")
                .arg(&key)
                .arg("-inf")
                .arg(format!("({now_micros}"));
            let (open, overdue): (u64, u64) =
                self.link.pipe("count cases", &p).await.map_err(store_err)?;
            Ok(CaseCounts { open, overdue })
        })
    }
}
