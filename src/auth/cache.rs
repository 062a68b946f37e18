//! Verified-token cache: a hot token is not verified again.
//!
//! Keyed by the SHA-256 of the token (collision-safe, and the cache holds no
//! token); each entry expires no later than the token's `exp`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use sha2::{Digest, Sha256};

use super::Clock;
use super::principal::Principal;

/// SHA-256 of a token, the cache key.
pub(crate) type TokenKey = [u8; 32];

/// The key of `token`.
pub(crate) fn token_key(token: &[u8]) -> TokenKey {
    Sha256::digest(token).into()
}

struct ExpireAtExp {
    clock: Arc<dyn Clock>,
}

impl Expiry<TokenKey, Arc<Principal>> for ExpireAtExp {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Arc<Principal>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.exp().saturating_sub(self.clock.now_unix()),
        ))
    }
}

/// Verified principals by token hash. Capacity 0 disables caching.
pub(crate) struct TokenCache {
    inner: Option<moka::sync::Cache<TokenKey, Arc<Principal>>>,
}

impl TokenCache {
    pub(crate) fn new(capacity: u64, clock: Arc<dyn Clock>) -> Self {
        let inner = (capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(ExpireAtExp { clock })
                .build()
        });
        Self { inner }
    }

    pub(crate) fn get(&self, key: &TokenKey) -> Option<Arc<Principal>> {
        self.inner.as_ref()?.get(key)
    }

    pub(crate) fn insert(&self, key: TokenKey, p: Arc<Principal>) {
        if let Some(c) = &self.inner {
            c.insert(key, p);
        }
    }

    pub(crate) fn remove(&self, key: &TokenKey) {
        if let Some(c) = &self.inner {
            c.invalidate(key);
        }
    }

    pub(crate) fn clear(&self) {
        if let Some(c) = &self.inner {
            c.invalidate_all();
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}
