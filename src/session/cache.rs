//! The session cache: moka in front of the store.
//!
//! - An entry never outlives its session (per-entry expiry = min(cache TTL, time left)).
//! - Misses are single-flight: a burst of requests for one uncached session makes one store
//!   round trip (`try_get_with`).
//! - Misses are not cached (no negative caching): a revoked or unknown session id costs one
//!   store lookup per request. That keeps revocation exact; rate limits come with issue 5.
//! - Revocation leaves a tombstone that outlives any entry a racing loader could still
//!   insert, so a revoked session is refused on this replica at once.

use super::model::{now_unix, Session};
use super::store::{Rotation, SessionStore, StoreError};
use crate::metrics::Metrics;
use moka::Expiry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a lookup found no usable session.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// No such session (revoked, expired in the store, or never existed).
    #[error("session not found")]
    NotFound,
    /// Found but past its expiry.
    #[error("session expired")]
    Expired,
    /// The store could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct SessionExpiry {
    max: Duration,
}

impl Expiry<String, Arc<Session>> for SessionExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Session>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(value.remaining_secs(now_unix())).min(self.max))
    }
}

/// Cache + store, with the metrics of both.
pub struct SessionCache {
    store: Arc<dyn SessionStore>,
    cache: moka::future::Cache<String, Arc<Session>>,
    revoked: moka::future::Cache<String, ()>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("store", &self.store.kind())
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl SessionCache {
    /// A cache of at most `max_entries` sessions, each kept at most `ttl`.
    pub fn new(
        store: Arc<dyn SessionStore>,
        max_entries: u64,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(SessionExpiry { max: ttl })
            .build();
        // A racing loader inserts at most one store timeout after the tombstone; twice the
        // TTL plus a margin covers it with room to spare.
        let revoked = moka::future::Cache::builder()
            .max_capacity(max_entries)
            .time_to_live(ttl * 2 + Duration::from_secs(5))
            .build();
        SessionCache {
            store,
            cache,
            revoked,
            metrics,
        }
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = fut.await;
        self.metrics.store_operations.with_label_values(&[op]).inc();
        self.metrics
            .store_duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.store_errors.with_label_values(&[op]).inc();
        }
        result
    }

    /// The live session with this id, from the cache or the store.
    pub async fn lookup(&self, session_id: &str) -> Result<Arc<Session>, LookupError> {
        if self.revoked.contains_key(session_id) {
            return Err(LookupError::NotFound);
        }
        let session = match self.cache.get(session_id).await {
            Some(s) => {
                self.metrics.cache_lookups.with_label_values(&["hit"]).inc();
                s
            }
            None => {
                self.metrics
                    .cache_lookups
                    .with_label_values(&["miss"])
                    .inc();
                self.cache
                    .try_get_with_by_ref(session_id, async {
                        match self.timed("get", self.store.get(session_id)).await {
                            Ok(Some(s)) => Ok(Arc::new(s)),
                            Ok(None) => Err(LookupError::NotFound),
                            Err(e) => Err(LookupError::Store(e)),
                        }
                    })
                    .await
                    .map_err(|e| (*e).clone())?
            }
        };
        if session.is_expired_at(now_unix()) {
            self.cache.invalidate(session_id).await;
            return Err(LookupError::Expired);
        }
        Ok(session)
    }

    /// The session straight from the store, bypassing the cache (admin reads).
    pub async fn get_uncached(&self, session_id: &str) -> Result<Option<Session>, StoreError> {
        if self.revoked.contains_key(session_id) {
            return Ok(None);
        }
        self.timed("get", self.store.get(session_id)).await
    }

    /// Stores a new session (with the SHA-256 of its refresh token, if it has one).
    pub async fn insert(
        &self,
        session: &Session,
        refresh_sha256: Option<&str>,
    ) -> Result<(), StoreError> {
        self.timed("put", self.store.put(session, refresh_sha256))
            .await
    }

    /// Rotates a session's refresh token (hashes) in the store.
    pub async fn rotate_refresh(
        &self,
        session_id: &str,
        presented: &str,
        next: &str,
    ) -> Result<Rotation, StoreError> {
        self.timed(
            "rotate",
            self.store.rotate_refresh(session_id, presented, next),
        )
        .await
    }

    /// Deletes a session from the store, then from this replica's cache. On a store error
    /// nothing is changed and the caller must report failure.
    pub async fn revoke(&self, session_id: &str) -> Result<bool, StoreError> {
        let existed = self.timed("delete", self.store.delete(session_id)).await?;
        self.evict(session_id).await;
        Ok(existed)
    }

    /// Drops a session from this replica's cache and refuses it from now on (also the hook
    /// for cross-replica invalidation messages).
    pub async fn evict(&self, session_id: &str) {
        self.revoked.insert(session_id.to_string(), ()).await;
        self.cache.invalidate(session_id).await;
    }

    /// Readiness probe of the store.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let r = self.timed("ping", self.store.ping()).await;
        self.metrics.store_up.set(i64::from(r.is_ok()));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::memory::MemoryStore;
    use crate::session::model::new_session_id;
    use crate::session::store::{RecordKey, WriteMode};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingStore {
        inner: MemoryStore,
        gets: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl SessionStore for CountingStore {
        async fn put(&self, s: &Session, r: Option<&str>) -> Result<(), StoreError> {
            self.inner.put(s, r).await
        }
        async fn rotate_refresh(
            &self,
            id: &str,
            presented: &str,
            next: &str,
        ) -> Result<Rotation, StoreError> {
            self.inner.rotate_refresh(id, presented, next).await
        }
        async fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            // Make the miss slow enough that concurrent callers pile up on it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            self.inner.get(id).await
        }
        async fn delete(&self, id: &str) -> Result<bool, StoreError> {
            self.inner.delete(id).await
        }
        async fn record_get(&self, key: &RecordKey) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.record_get(key).await
        }
        async fn record_put(
            &self,
            key: &RecordKey,
            value: &[u8],
            mode: WriteMode,
            ttl: Option<Duration>,
        ) -> Result<bool, StoreError> {
            self.inner.record_put(key, value, mode, ttl).await
        }
        async fn record_swap(
            &self,
            key: &RecordKey,
            value: &[u8],
            ttl: Option<Duration>,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.record_swap(key, value, ttl).await
        }
        async fn record_delete(&self, key: &RecordKey) -> Result<bool, StoreError> {
            self.inner.record_delete(key).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn kind(&self) -> &'static str {
            "counting"
        }
    }

    fn session(ttl: i64) -> Session {
        let now = now_unix();
        Session {
            session_id: new_session_id(),
            user_id: "u".into(),
            business_id: "b".into(),
            host_id: "h".into(),
            role: "user".into(),
            created_at: now,
            expires_at: now + ttl,
            source: "admin".into(),
            external_id: None,
        }
    }

    fn setup() -> Result<(Arc<CountingStore>, SessionCache), prometheus::Error> {
        let store = Arc::new(CountingStore {
            inner: MemoryStore::new(),
            gets: AtomicUsize::new(0),
            fail: Default::default(),
        });
        let cache = SessionCache::new(
            store.clone(),
            1000,
            Duration::from_secs(60),
            Arc::new(Metrics::new()?),
        );
        Ok((store, cache))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundred_concurrent_misses_make_one_store_call(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?;
        let cache = Arc::new(cache);
        let s = session(600);
        cache.insert(&s, None).await?;
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let cache = cache.clone();
            let id = s.session_id.clone();
            tasks.push(tokio::spawn(async move {
                cache.lookup(&id).await.map(|s| s.user_id.clone())
            }));
        }
        for t in tasks {
            assert_eq!(t.await?.map_err(|e| e.to_string())?, "u");
        }
        assert_eq!(store.gets.load(Ordering::SeqCst), 1);
        Ok(())
    }

    #[tokio::test]
    async fn revoke_takes_effect_on_a_cached_session() -> Result<(), Box<dyn std::error::Error>> {
        let (_, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        cache.lookup(&s.session_id).await?;
        assert!(cache.revoke(&s.session_id).await?);
        assert!(matches!(
            cache.lookup(&s.session_id).await,
            Err(LookupError::NotFound)
        ));
        Ok(())
    }

    #[tokio::test]
    async fn store_error_is_not_cached_and_not_a_miss() -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        store.fail.store(true, Ordering::SeqCst);
        assert!(matches!(
            cache.lookup(&s.session_id).await,
            Err(LookupError::Store(_))
        ));
        store.fail.store(false, Ordering::SeqCst);
        assert!(cache.lookup(&s.session_id).await.is_ok());
        Ok(())
    }

    #[tokio::test]
    async fn expired_session_is_refused_even_if_cached() -> Result<(), Box<dyn std::error::Error>> {
        let (_, cache) = setup()?;
        let mut s = session(600);
        cache.insert(&s, None).await?;
        cache.lookup(&s.session_id).await?;
        // Simulate time passing by caching an already-expired copy directly.
        s.expires_at = now_unix() - 1;
        cache
            .cache
            .insert(s.session_id.clone(), Arc::new(s.clone()))
            .await;
        assert!(cache.lookup(&s.session_id).await.is_err());
        Ok(())
    }
}
