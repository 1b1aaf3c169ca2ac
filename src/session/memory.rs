//! In-process store: the embedded default. Sessions are lost on restart.

use super::model::{now_unix, Session};
use super::store::{SessionStore, StoreError};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

/// A `HashMap` behind a mutex; the lock is never held across an `.await`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<String, Session>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Session>>, StoreError> {
        self.sessions
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn put(&self, session: &Session) -> Result<(), StoreError> {
        let now = now_unix();
        let mut map = self.lock()?;
        // Sweep expired entries on write so memory stays bounded by live sessions.
        if map.len() % 1024 == 0 {
            map.retain(|_, s| !s.is_expired_at(now));
        }
        map.insert(session.session_id.clone(), session.clone());
        Ok(())
    }

    async fn get(&self, session_id: &str) -> Result<Option<Session>, StoreError> {
        let now = now_unix();
        let mut map = self.lock()?;
        match map.get(session_id) {
            Some(s) if s.is_expired_at(now) => {
                map.remove(session_id);
                Ok(None)
            }
            other => Ok(other.cloned()),
        }
    }

    async fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.remove(session_id).is_some())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
