//! The shared-record cache: canonical records of shareable datasets, keyed
//! by dataset + subject (never by caller), with per-key load coalescing,
//! generations so an invalidation cannot be undone by a load in flight, and
//! stale-if-error within each dataset's `max_stale`.
//!
//! Authorisation happens before [`SharedCache::get`] and field filtering after
//! it, so a cached record never carries one client's view to another.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::config::DatasetSpec;

/// A canonical record (field name -> value).
pub type Record = serde_json::Map<String, serde_json::Value>;

/// How an answer was obtained, as reported in `source.cache` and `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache while fresh.
    Hit,
    /// Fetched from the department for this request (or a coalesced one).
    Miss,
    /// The department failed; served past its TTL within `max_stale`.
    Stale,
}

impl CacheStatus {
    /// `hit`, `miss`, `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
        }
    }
}

/// One fetched record with its provenance.
#[derive(Debug)]
pub struct Entry {
    /// The canonical record (before per-client field filtering).
    pub record: Arc<Record>,
    /// When the department answered.
    pub fetched_at: SystemTime,
    /// The record's signatures, one per field projection, made once while
    /// the entry lives (a hit reuses them).
    pub signatures: crate::sharing::SignatureMemo,
    /// Serialised replies, per field projection and cache status.
    pub replies: ReplyMemo,
    fresh_until: Instant,
    stale_until: Instant,
    weight: u32,
}

impl Entry {
    /// Wraps a freshly fetched record.
    pub fn new(record: Record, spec: &DatasetSpec) -> Self {
        let now = Instant::now();
        let weight = serde_json::to_vec(&record).map_or(1024, |v| v.len() + 64);
        Self {
            record: Arc::new(record),
            fetched_at: SystemTime::now(),
            signatures: crate::sharing::SignatureMemo::default(),
            replies: ReplyMemo::default(),
            fresh_until: now + spec.ttl,
            stale_until: now + spec.ttl + spec.max_stale,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        }
    }
}

/// Replies built from one entry, kept so that a hit only looks one up: one
/// per (field projection, cache status), so a handful per entry (bounded by
/// the configured projections times three).
#[derive(Debug, Default)]
pub struct ReplyMemo(std::sync::Mutex<Vec<(Box<str>, CacheStatus, bytes::Bytes)>>);

impl ReplyMemo {
    /// The reply kept for `projection` and `status`, if any.
    pub fn get(&self, projection: &str, status: CacheStatus) -> Option<bytes::Bytes> {
        let memo = self.0.lock().ok()?;
        memo.iter()
            .find(|(p, s, _)| *s == status && &**p == projection)
            .map(|(_, _, b)| b.clone())
    }

    /// Keeps `body` as the reply for `projection` and `status`.
    pub fn keep(&self, projection: &str, status: CacheStatus, body: bytes::Bytes) {
        if let Ok(mut memo) = self.0.lock()
            && !memo
                .iter()
                .any(|(p, s, _)| *s == status && &**p == projection)
        {
            memo.push((projection.into(), status, body));
        }
    }

    /// How many replies are kept (tests).
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |m| m.len())
    }

    /// True when none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type Key = (Arc<str>, Arc<str>);
/// (dataset, subject), variant (other inputs of the department call), generation.
type GenKey = (Key, Arc<str>, u64);

/// Settings of the shared cache.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Capacity in bytes of serialized records.
    pub max_bytes: u64,
    /// Longest any entry lives (largest `ttl + max_stale` over datasets).
    pub max_entry_life: Duration,
}

/// The shared-record cache. Cheap to share (`Arc`). `E` is the loader's
/// error, handed (shared, typed) to every coalesced caller.
pub struct SharedCache<E = crate::error::GatewayError> {
    entries: moka::sync::Cache<GenKey, Arc<Entry>>,
    /// Global invalidation clock; every invalidation takes the next value.
    clock: AtomicU64,
    /// Clock value of the last whole-dataset invalidation.
    /// (Sharded map: read on every lookup, so no global lock.)
    dataset_gen: dashmap::DashMap<Arc<str>, u64>,
    /// Clock value of the last single-record invalidation, kept longer than
    /// any entry can live so an older generation can never resurface.
    key_gen: moka::sync::Cache<Key, u64>,
    inflight: Mutex<HashMap<GenKey, Arc<OnceCell<LoadResult<E>>>>>,
    loads: AtomicU64,
}

type LoadResult<E> = Result<Arc<Entry>, Arc<E>>;

impl<E> std::fmt::Debug for SharedCache<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

/// A department failure may be answered from a stale record; anything else
/// (record not found, bad request) may not.
pub trait StaleEligible {
    /// True when a stale record may stand in for this error.
    fn allows_stale(&self) -> bool;
}

impl StaleEligible for crate::error::GatewayError {
    /// Derived from the one classification: only a department's failure
    /// (see [`crate::error::Side`]).
    fn allows_stale(&self) -> bool {
        crate::error::GatewayError::allows_stale(self)
    }
}

impl<E: StaleEligible> SharedCache<E> {
    /// A cache bounded by `settings.max_bytes`.
    pub fn new(settings: &CacheSettings) -> Self {
        let life = settings.max_entry_life.max(Duration::from_secs(1));
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(|_k, v: &Arc<Entry>| v.weight)
                .time_to_live(life)
                .build(),
            clock: AtomicU64::new(0),
            dataset_gen: dashmap::DashMap::new(),
            key_gen: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(life * 2 + Duration::from_secs(60))
                .build(),
            inflight: Mutex::new(HashMap::new()),
            loads: AtomicU64::new(0),
        }
    }

    fn generation(&self, key: &Key) -> u64 {
        let d = self.dataset_gen.get(&key.0).map_or(0, |g| *g);
        let k = self.key_gen.get(key).unwrap_or(0);
        d.max(k)
    }

    /// Number of department loads started (for tests and metrics).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Looks up `subject` of `spec`, loading it with `load` on a miss. Concurrent
    /// misses for the same key and generation share one load. When the load
    /// fails with an error that [`StaleEligible::allows_stale`], a record past
    /// its TTL but within `max_stale` is served as [`CacheStatus::Stale`].
    pub async fn get<F, Fut>(
        &self,
        spec: &DatasetSpec,
        subject: &str,
        load: F,
    ) -> Result<(Arc<Entry>, CacheStatus), Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Record, E>>,
    {
        self.get_variant(spec, subject, "", load).await
    }

    /// [`SharedCache::get`] for one `variant` of the subject's record: every
    /// other input the department call depends on (co-subjects such as
    /// `{subject.guardian_id}`), encoded by the caller. Variants are separate
    /// entries; invalidating the subject revokes all of them.
    pub async fn get_variant<F, Fut>(
        &self,
        spec: &DatasetSpec,
        subject: &str,
        variant: &str,
        load: F,
    ) -> Result<(Arc<Entry>, CacheStatus), Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Record, E>>,
    {
        let key: Key = (Arc::from(spec.name.as_str()), Arc::from(subject));
        let generation = self.generation(&key);
        let gk = (key, Arc::from(variant), generation);
        let now = Instant::now();
        let cached = self.entries.get(&gk);
        if let Some(e) = &cached
            && now < e.fresh_until
        {
            return Ok((e.clone(), CacheStatus::Hit));
        }
        let stale = cached.filter(|e| now < e.stale_until);

        let cell = match self.inflight.lock() {
            Ok(mut m) => m.entry(gk.clone()).or_default().clone(),
            Err(_) => Arc::new(OnceCell::new()),
        };
        let result = cell
            .get_or_init(|| async {
                self.loads.fetch_add(1, Ordering::Relaxed);
                match load().await {
                    Ok(record) => {
                        let entry = Arc::new(Entry::new(record, spec));
                        // Stored only if no invalidation happened meanwhile;
                        // otherwise the entry would be unreachable anyway, but
                        // it must not even take up room.
                        if self.generation(&gk.0) == gk.2 {
                            self.entries.insert(gk.clone(), entry.clone());
                        }
                        Ok(entry)
                    }
                    Err(e) => Err(Arc::new(e)),
                }
            })
            .await
            .clone();
        if let Ok(mut m) = self.inflight.lock()
            && m.get(&gk).is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            m.remove(&gk);
        }
        match result {
            Ok(e) => Ok((e, CacheStatus::Miss)),
            Err(err) => match stale {
                Some(s) if err.allows_stale() && self.generation(&gk.0) == gk.2 => {
                    Ok((s, CacheStatus::Stale))
                }
                _ => Err(err),
            },
        }
    }

    /// Revokes one record, or all records of `dataset` when `subject` is None.
    /// Takes effect at once for every later lookup; loads already in flight
    /// cannot store their result under the new generation.
    pub fn invalidate(&self, dataset: &str, subject: Option<&str>) {
        let g = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        match subject {
            Some(s) => {
                let key: Key = (Arc::from(dataset), Arc::from(s));
                let old = self.generation(&key);
                self.key_gen.insert(key.clone(), g);
                // The plain record goes at once; variants become unreachable
                // (older generation) and age out.
                self.entries.invalidate(&(key, Arc::from(""), old));
            }
            None => {
                self.dataset_gen.insert(Arc::from(dataset), g);
                // Old generations are unreachable now; they age out by TTL and size.
            }
        }
    }

    /// The current entry of `subject` in `dataset`, fresh or not, without
    /// loading (tests and diagnostics).
    pub fn peek(&self, dataset: &str, subject: &str) -> Option<Arc<Entry>> {
        let key: Key = (Arc::from(dataset), Arc::from(subject));
        let generation = self.generation(&key);
        self.entries.get(&(key, Arc::from(""), generation))
    }

    /// Entries currently held (approximate).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FieldSpec, FieldType, SubjectChars};
    use std::sync::atomic::AtomicUsize;

    #[derive(Debug, thiserror::Error)]
    enum TestErr {
        #[error("department down")]
        Down,
        #[error("not found")]
        NotFound,
    }
    impl StaleEligible for TestErr {
        fn allows_stale(&self) -> bool {
            matches!(self, TestErr::Down)
        }
    }

    fn spec() -> DatasetSpec {
        DatasetSpec {
            name: "business-licence".into(),
            title: "t".into(),
            department: "market-supervision".into(),
            subject_kind: "uscc".into(),
            subject_chars: SubjectChars::Alphanumeric,
            subject_max_len: 18,
            fields: vec![FieldSpec {
                name: "uscc".into(),
                ty: FieldType::String,
                required: true,
            }],
            shareable: true,
            ttl: Duration::from_secs(60),
            max_stale: Duration::from_secs(300),
            notice: String::new(),
            issuer: "Issuing authority".into(),
            sharing: crate::config::Sharing::Unconditional,
        }
    }

    fn cache() -> SharedCache<TestErr> {
        SharedCache::new(&CacheSettings {
            max_bytes: 1 << 20,
            max_entry_life: Duration::from_secs(3600),
        })
    }

    fn rec(v: &str) -> Record {
        let mut r = Record::new();
        r.insert("uscc".into(), v.into());
        r
    }

    #[tokio::test]
    async fn twenty_concurrent_first_reads_make_one_load() {
        let c = Arc::new(cache());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let c = c.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                let s = spec();
                c.get(&s, "A", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, TestErr>(rec("A"))
                })
                .await
                .map(|(_, st)| st)
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let (_, st) = c
            .get(&spec(), "A", || async { Ok::<_, TestErr>(rec("X")) })
            .await
            .unwrap();
        assert_eq!(st, CacheStatus::Hit);
    }

    #[tokio::test]
    async fn invalidation_racing_a_slow_load_is_not_undone() {
        let c = Arc::new(cache());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c2 = c.clone();
        let slow = tokio::spawn(async move {
            c2.get(&spec(), "A", || async {
                let _ = rx.await;
                Ok::<_, TestErr>(rec("old"))
            })
            .await
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.invalidate("business-licence", Some("A"));
        tx.send(()).unwrap();
        slow.await.unwrap().unwrap();
        // The next read must fetch again, not see "old".
        let (e, st) = c
            .get(&spec(), "A", || async { Ok::<_, TestErr>(rec("new")) })
            .await
            .unwrap();
        assert_eq!(st, CacheStatus::Miss);
        assert_eq!(e.record["uscc"], "new");
    }

    #[tokio::test(start_paused = true)]
    async fn stale_if_error_within_max_stale_only() {
        let c = cache();
        c.get(&spec(), "A", || async { Ok::<_, TestErr>(rec("A")) })
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        let (_, st) = c
            .get(&spec(), "A", || async { Err::<Record, _>(TestErr::Down) })
            .await
            .unwrap();
        assert_eq!(st, CacheStatus::Stale);
        // Not-found is an answer, not a failure: no stale stand-in.
        assert!(
            c.get(&spec(), "A", || async {
                Err::<Record, _>(TestErr::NotFound)
            })
            .await
            .is_err()
        );
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(
            c.get(&spec(), "A", || async { Err::<Record, _>(TestErr::Down) })
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_stale_after_invalidation() {
        let c = cache();
        c.get(&spec(), "A", || async { Ok::<_, TestErr>(rec("A")) })
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        c.invalidate("business-licence", None);
        assert!(
            c.get(&spec(), "A", || async { Err::<Record, _>(TestErr::Down) })
                .await
                .is_err()
        );
    }
}
