//! The session store interface. Stores know sessions, never dialects or HTTP.

use super::model::Session;
use async_trait::async_trait;

/// A store operation failed; the session's state is unknown, so callers fail closed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Could not reach the backend, or it did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with something we cannot read.
    #[error("store returned corrupt data: {0}")]
    Corrupt(String),
}

/// Where sessions live.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session; it disappears by itself at `expires_at`.
    async fn put(&self, session: &Session) -> Result<(), StoreError>;
    /// The session, if it exists and has not expired.
    async fn get(&self, session_id: &str) -> Result<Option<Session>, StoreError>;
    /// Deletes a session; `Ok(false)` when there was none.
    async fn delete(&self, session_id: &str) -> Result<bool, StoreError>;
    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Short name for logs and metrics.
    fn kind(&self) -> &'static str;
}
