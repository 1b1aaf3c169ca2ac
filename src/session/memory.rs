//! In-process store: the embedded default. Sessions are lost on restart.

use super::model::{now_unix, Session};
use super::store::{
    CounterStore, EventSink, RecordKey, RecordStore, Rotation, SessionStore, StoreError, Successor,
    UserIndex, WriteMode, INDEX_CAP,
};
use super::window::{unix_ms, LocalWindows, WindowCount};
use async_trait::async_trait;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Each user's sessions.
type Index = HashMap<String, UserSessions>;

/// One user's sessions ordered by expiry, like the Redis store's sorted set: adding one,
/// dropping the expired and trimming to [`INDEX_CAP`] cost O(log n), not a pass over the
/// user's (up to a thousand) entries on every creation.
#[derive(Debug, Default)]
struct UserSessions {
    /// Session id → expiry (unix seconds).
    expiry: HashMap<String, i64>,
    /// (expiry, session id), soonest first; the same pairs as `expiry`.
    order: BTreeSet<(i64, String)>,
}

impl UserSessions {
    fn insert(&mut self, id: &str, expires_at: i64) {
        if let Some(old) = self.expiry.insert(id.to_string(), expires_at) {
            self.order.remove(&(old, id.to_string()));
        }
        self.order.insert((expires_at, id.to_string()));
    }

    fn remove(&mut self, id: &str) {
        if let Some(exp) = self.expiry.remove(id) {
            self.order.remove(&(exp, id.to_string()));
        }
    }

    /// Drops entries expired at `now`, then the soonest-expiring past `cap`.
    fn trim(&mut self, now: i64, cap: usize) {
        while let Some((exp, _)) = self.order.first() {
            if *exp > now && self.order.len() <= cap {
                break;
            }
            if let Some((_, id)) = self.order.pop_first() {
                self.expiry.remove(&id);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

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
    /// The last rotation, while a retry of it is within grace: the presented token's hash,
    /// the sealed successor, and until when.
    retry: Option<(String, String, Instant)>,
}

impl Stored {
    /// What presenting `presented` finds, changing nothing.
    fn find(&self, presented: &str) -> Rotation {
        if self.refresh.as_deref() == Some(presented) {
            return Rotation::Rotated;
        }
        if let Some((spent, sealed, until)) = &self.retry {
            if spent == presented && Instant::now() < *until {
                return Rotation::Retried(sealed.clone());
            }
        }
        if self.used.iter().any(|u| u == presented) {
            Rotation::Reused
        } else {
            Rotation::Unknown
        }
    }
}

/// The sessions, and their ids in expiry order so that writes sweep the expired a few at a
/// time (a pass over every session now and then held the lock for hundreds of
/// milliseconds with a few hundred thousand sessions).
#[derive(Debug, Default)]
struct Sessions {
    map: HashMap<String, Stored>,
    /// (expiry, id), soonest on top. An id deleted or re-put early stays here until its
    /// time comes and is then checked against the map.
    expiring: BinaryHeap<Reverse<(i64, String)>>,
}

/// Expired sessions removed per write: more than one, so the sweep outpaces creation.
const SWEEP_PER_WRITE: usize = 4;

impl Sessions {
    fn sweep(&mut self, now: i64) {
        for _ in 0..SWEEP_PER_WRITE {
            match self.expiring.peek() {
                Some(Reverse((exp, _))) if *exp <= now => {}
                _ => return,
            }
            if let Some(Reverse((_, id))) = self.expiring.pop() {
                if self
                    .map
                    .get(&id)
                    .is_some_and(|s| s.session.is_expired_at(now))
                {
                    self.map.remove(&id);
                }
            }
        }
    }
}

/// `HashMap`s behind mutexes; a lock is never held across an `.await`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: Mutex<Sessions>,
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

    fn lock(&self) -> Result<MutexGuard<'_, Sessions>, StoreError> {
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
        let mut sessions = self.lock()?;
        // Sweep expired entries on write so memory stays bounded by live sessions.
        sessions.sweep(now);
        sessions
            .expiring
            .push(Reverse((session.expires_at, session.session_id.clone())));
        sessions.map.insert(
            session.session_id.clone(),
            Stored {
                session: session.clone(),
                refresh: refresh_sha256.map(str::to_string),
                used: Vec::new(),
                retry: None,
            },
        );
        Ok(())
    }

    async fn get(&self, session_id: &str) -> Result<Option<Session>, StoreError> {
        let now = now_unix();
        let map = &mut self.lock()?.map;
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
        next: &Successor<'_>,
    ) -> Result<Rotation, StoreError> {
        let now = now_unix();
        let map = &mut self.lock()?.map;
        let Some(stored) = map
            .get_mut(session_id)
            .filter(|s| !s.session.is_expired_at(now))
        else {
            return Ok(Rotation::Unknown);
        };
        let found = stored.find(presented);
        if found == Rotation::Rotated {
            stored.used.push(presented.to_string());
            stored.refresh = Some(next.sha256.to_string());
            stored.retry = (!next.grace.is_zero()).then(|| {
                (
                    presented.to_string(),
                    next.sealed.to_string(),
                    Instant::now() + next.grace,
                )
            });
        }
        Ok(found)
    }

    async fn peek_refresh(
        &self,
        session_id: &str,
        presented: &str,
    ) -> Result<Rotation, StoreError> {
        let now = now_unix();
        let sessions = self.lock()?;
        Ok(sessions
            .map
            .get(session_id)
            .filter(|s| !s.session.is_expired_at(now))
            .map_or(Rotation::Unknown, |s| s.find(presented)))
    }

    async fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.map.remove(session_id).is_some())
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

    async fn restore_generation(&self, scope: &str, at_least: u64) -> Result<(), StoreError> {
        let mut map = self
            .generations
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))?;
        let g = map.entry(scope.to_string()).or_insert(0);
        *g = (*g).max(at_least);
        Ok(())
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
                list.trim(now, INDEX_CAP);
                !list.is_empty()
            });
        }
        let list = index.entry(user_id.to_string()).or_default();
        list.insert(session_id, expires_at);
        // The cap keeps the entries expiring last, as in Redis.
        list.trim(now, INDEX_CAP);
        Ok(())
    }

    async fn index_list(&self, user_id: &str, now: i64) -> Result<Vec<String>, StoreError> {
        let index = self.index()?;
        // Latest expiry first, as ZREVRANGEBYSCORE lists them.
        Ok(index
            .get(user_id)
            .map(|l| {
                l.order
                    .iter()
                    .rev()
                    .take_while(|(exp, _)| *exp > now)
                    .take(INDEX_CAP)
                    .map(|(_, id)| id.clone())
                    .collect()
            })
            .unwrap_or_default())
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

    fn session(id: &str, expires_at: i64) -> Session {
        Session {
            session_id: id.to_string(),
            user_id: "u".into(),
            business_id: "b".into(),
            host_id: "h".into(),
            role: "user".into(),
            created_at: expires_at - 10,
            expires_at,
            source: "test".into(),
            external_id: None,
            user_gen: 0,
            business_gen: 0,
            user_agent: None,
            ip: None,
        }
    }

    #[tokio::test]
    async fn writes_sweep_expired_sessions_and_keep_live_ones() -> Result<(), StoreError> {
        let m = MemoryStore::new();
        let now = now_unix();
        for i in 0..10 {
            m.put(&session(&format!("old{i}"), now - 1), None).await?;
        }
        m.put(&session("live", now + 100), None).await?;
        // A deleted session leaves its queue entry behind; the sweep must skip it.
        m.put(&session("gone", now - 1), None).await?;
        m.delete("gone").await?;
        for i in 0..3 {
            m.put(&session(&format!("new{i}"), now + 100), None).await?;
        }
        let sessions = m.lock()?;
        assert_eq!(sessions.map.len(), 4, "only the live sessions are left");
        assert!(sessions.map.contains_key("live"));
        Ok(())
    }

    #[tokio::test]
    async fn user_index_keeps_the_latest_expiring_past_the_cap() -> Result<(), StoreError> {
        let m = MemoryStore::new();
        let now = now_unix();
        let cap = i64::try_from(INDEX_CAP).map_err(|_| StoreError::Unavailable("cap".into()))?;
        for i in 0..cap + 5 {
            m.index_add("u", &format!("s{i}"), now + 100 + i).await?;
        }
        // Re-adding an entry moves it, it is not listed twice.
        m.index_add("u", "s10", now + 10_000).await?;
        let listed = m.index_list("u", now).await?;
        assert_eq!(listed.len(), INDEX_CAP);
        assert_eq!(listed[0], "s10");
        assert_eq!(listed[1], format!("s{}", cap + 4));
        assert!(!listed.contains(&"s0".to_string()));
        assert!(!listed.contains(&"s4".to_string()));
        assert!(listed.contains(&"s5".to_string()));
        Ok(())
    }
}
