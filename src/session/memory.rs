//! In-process store: the embedded default. Sessions are lost on restart.

use super::model::{now_unix, Session};
use super::store::{
    CounterStore, EventSink, RecordKey, RecordStore, Rotation, SessionStore, StoreError, UserIndex,
    WriteMode, INDEX_CAP,
};
use super::window::{unix_ms, LocalWindows, WindowCount};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Each user's sessions: user id → (session id → expiry, unix seconds).
type Index = HashMap<String, HashMap<String, i64>>;

/// A record's value and when it stops existing.
#[derive(Debug)]
struct Record {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Record {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// A session with its refresh-token state (kept under one lock, so rotation is atomic).
#[derive(Debug)]
struct Stored {
    session: Session,
    refresh: Option<String>,
    used: Vec<String>,
}

/// `HashMap`s behind mutexes; a lock is never held across an `.await`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<String, Stored>>,
    generations: Mutex<HashMap<String, u64>>,
    records: Mutex<HashMap<RecordKey, Record>>,
    windows: LocalWindows,
    /// user id → (session id → expiry, unix seconds).
    index: Mutex<Index>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<String, Stored>>, StoreError> {
        self.sessions
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))
    }

    fn records(&self) -> Result<MutexGuard<'_, HashMap<RecordKey, Record>>, StoreError> {
        let mut map = self
            .records
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))?;
        // Sweep expired records now and then so memory stays bounded by live ones.
        if map.len() % 1024 == 1023 {
            let now = Instant::now();
            map.retain(|_, r| r.live(now));
        }
        Ok(map)
    }
}

fn record(value: &[u8], ttl: Option<Duration>) -> Record {
    Record {
        value: value.to_vec(),
        expires: ttl.map(|t| Instant::now() + t),
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn put(&self, session: &Session, refresh_sha256: Option<&str>) -> Result<(), StoreError> {
        let now = now_unix();
        let mut map = self.lock()?;
        // Sweep expired entries on write so memory stays bounded by live sessions.
        if map.len() % 1024 == 0 {
            map.retain(|_, s| !s.session.is_expired_at(now));
        }
        map.insert(
            session.session_id.clone(),
            Stored {
                session: session.clone(),
                refresh: refresh_sha256.map(str::to_string),
                used: Vec::new(),
            },
        );
        Ok(())
    }

    async fn get(&self, session_id: &str) -> Result<Option<Session>, StoreError> {
        let now = now_unix();
        let mut map = self.lock()?;
        match map.get(session_id) {
            Some(s) if s.session.is_expired_at(now) => {
                map.remove(session_id);
                Ok(None)
            }
            other => Ok(other.map(|s| s.session.clone())),
        }
    }

    async fn rotate_refresh(
        &self,
        session_id: &str,
        presented: &str,
        next: &str,
    ) -> Result<Rotation, StoreError> {
        let now = now_unix();
        let mut map = self.lock()?;
        let Some(stored) = map
            .get_mut(session_id)
            .filter(|s| !s.session.is_expired_at(now))
        else {
            return Ok(Rotation::Unknown);
        };
        if stored.refresh.as_deref() == Some(presented) {
            stored.used.push(presented.to_string());
            stored.refresh = Some(next.to_string());
            return Ok(Rotation::Rotated);
        }
        if stored.used.iter().any(|u| u == presented) {
            return Ok(Rotation::Reused);
        }
        Ok(Rotation::Unknown)
    }

    async fn peek_refresh(
        &self,
        session_id: &str,
        presented: &str,
    ) -> Result<Rotation, StoreError> {
        let now = now_unix();
        let map = self.lock()?;
        let Some(stored) = map
            .get(session_id)
            .filter(|s| !s.session.is_expired_at(now))
        else {
            return Ok(Rotation::Unknown);
        };
        Ok(if stored.refresh.as_deref() == Some(presented) {
            Rotation::Rotated
        } else if stored.used.iter().any(|u| u == presented) {
            Rotation::Reused
        } else {
            Rotation::Unknown
        })
    }

    async fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.remove(session_id).is_some())
    }

    async fn generations(&self, scopes: &[String]) -> Result<Vec<u64>, StoreError> {
        let map = self
            .generations
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))?;
        Ok(scopes
            .iter()
            .map(|s| map.get(s).copied().unwrap_or(0))
            .collect())
    }

    async fn bump_generation(&self, scope: &str) -> Result<u64, StoreError> {
        let mut map = self
            .generations
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))?;
        let g = map.entry(scope.to_string()).or_insert(0);
        *g += 1;
        Ok(*g)
    }

    // One process, one cache: the revoking call already updated it; nothing to send.
    async fn publish(&self, _payload: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }

    fn start_events(&self, sink: std::sync::Arc<dyn EventSink>) {
        sink.subscribed(true);
        sink.store_reachable(true);
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[async_trait]
impl RecordStore for MemoryStore {
    async fn record_get(&self, key: &RecordKey) -> Result<Option<Vec<u8>>, StoreError> {
        let now = Instant::now();
        Ok(self
            .records()?
            .get(key)
            .filter(|r| r.live(now))
            .map(|r| r.value.clone()))
    }

    async fn record_put(
        &self,
        key: &RecordKey,
        value: &[u8],
        mode: WriteMode,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut map = self.records()?;
        if mode == WriteMode::IfAbsent && map.get(key).is_some_and(|r| r.live(now)) {
            return Ok(false);
        }
        map.insert(key.clone(), record(value, ttl));
        Ok(true)
    }

    async fn record_swap(
        &self,
        key: &RecordKey,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let now = Instant::now();
        let previous = self.records()?.insert(key.clone(), record(value, ttl));
        Ok(previous.filter(|r| r.live(now)).map(|r| r.value))
    }

    async fn record_delete(&self, key: &RecordKey) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(self.records()?.remove(key).is_some_and(|r| r.live(now)))
    }
}

#[async_trait]
impl CounterStore for MemoryStore {
    async fn count_hit(&self, key: &str, window: Duration) -> Result<WindowCount, StoreError> {
        Ok(self.windows.hit(key, window, unix_ms()))
    }
}

#[async_trait]
impl UserIndex for MemoryStore {
    async fn index_add(
        &self,
        user_id: &str,
        session_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let now = now_unix();
        let mut index = self.index()?;
        // Sweep every user now and then, so users who never log in again are forgotten.
        if index.len() % 1024 == 1023 {
            index.retain(|_, list| {
                list.retain(|_, exp| *exp > now);
                !list.is_empty()
            });
        }
        let list = index.entry(user_id.to_string()).or_default();
        list.retain(|_, exp| *exp > now);
        list.insert(session_id.to_string(), expires_at);
        if list.len() > INDEX_CAP {
            // The cap keeps the entries expiring last, as in Redis.
            let mut by_expiry: Vec<(String, i64)> = list.drain().collect();
            by_expiry.sort_by_key(|e| std::cmp::Reverse(e.1));
            by_expiry.truncate(INDEX_CAP);
            list.extend(by_expiry);
        }
        Ok(())
    }

    async fn index_list(&self, user_id: &str, now: i64) -> Result<Vec<String>, StoreError> {
        let index = self.index()?;
        let mut live: Vec<(&String, &i64)> = index
            .get(user_id)
            .map(|l| l.iter().filter(|(_, exp)| **exp > now).collect())
            .unwrap_or_default();
        live.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        Ok(live
            .into_iter()
            .take(INDEX_CAP)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn index_remove(&self, user_id: &str, session_ids: &[String]) -> Result<(), StoreError> {
        let mut index = self.index()?;
        if let Some(list) = index.get_mut(user_id) {
            for id in session_ids {
                list.remove(id);
            }
            if list.is_empty() {
                index.remove(user_id);
            }
        }
        Ok(())
    }
}

impl MemoryStore {
    fn index(&self) -> Result<MutexGuard<'_, Index>, StoreError> {
        self.index
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn user_index_lists_live_entries_newest_expiry_first() -> Result<(), StoreError> {
        let m = MemoryStore::new();
        let now = now_unix();
        m.index_add("u", "a", now + 10).await?;
        m.index_add("u", "b", now + 20).await?;
        m.index_add("u", "old", now - 1).await?;
        m.index_add("v", "c", now + 30).await?;
        assert_eq!(m.index_list("u", now).await?, vec!["b", "a"]);
        m.index_remove("u", &["b".to_string()]).await?;
        assert_eq!(m.index_list("u", now).await?, vec!["a"]);
        assert_eq!(m.index_list("nobody", now).await?, Vec::<String>::new());
        Ok(())
    }
}
