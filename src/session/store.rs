//! What the gateway asks of its backend, as three traits split by who asks: sessions with
//! their refresh rotation, revocation generations and events ([`SessionStore`], the session
//! cache), directory records ([`RecordStore`], the directory), rate-limit counters
//! ([`CounterStore`], the limits). Each user holds only the trait it calls, so a test double
//! implements just that one. Stores know sessions, never dialects or HTTP.

use super::model::Session;
use super::window::WindowCount;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Key of a directory record (a user, a customer, a device binding): a kind and an id unique
/// within that kind. Stores treat both as opaque and never parse the value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    /// Short, fixed namespace such as `user` or `device`.
    pub kind: &'static str,
    /// Identifier within the kind; any bytes (the Redis store hashes it into the key).
    pub id: String,
}

/// What presenting a refresh token (as its SHA-256) for rotation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was the session's current token; the successor is now current.
    Rotated,
    /// It is the token rotated away last, presented again within the retry grace: a client
    /// retrying a refresh whose answer it never got (a store stall answered 503 while the
    /// rotation still ran). Holds the successor issued for it, sealed ([`Successor`]).
    Retried(String),
    /// It was a token of this session that has already been rotated: reuse.
    Reused,
    /// Not a token of this session (or the session is gone).
    Unknown,
}

/// The token a rotation makes current, as the store keeps it.
#[derive(Debug, Clone, Copy)]
pub struct Successor<'a> {
    /// SHA-256 (hex) of the successor: the session's current token from now on.
    pub sha256: &'a str,
    /// The successor sealed under a key only the presented token yields (hex): kept with
    /// the presented token's hash for `grace`, so that a retry of it gets the same successor
    /// back. The store never holds it in a form it could use.
    pub sealed: &'a str,
    /// How long a retry of the presented token gets the successor back (zero: never; then
    /// any second presentation is reuse).
    pub grace: Duration,
}

/// How [`RecordStore::record_put`] treats an existing record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Create or replace.
    Upsert,
    /// Create only; an existing record is left alone and `Ok(false)` returned.
    IfAbsent,
}

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

/// Redis settings revocation depends on, as read with `CONFIG GET` (`None`: not readable,
/// as on managed Redis services that forbid `CONFIG`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreSettings {
    /// `maxmemory-policy`.
    pub maxmemory_policy: Option<String>,
    /// `appendonly`.
    pub appendonly: Option<String>,
    /// `appendfsync`.
    pub appendfsync: Option<String>,
}

impl StoreSettings {
    /// Whether the eviction policy may drop keys sessiongate needs: `allkeys-*` any key,
    /// `volatile-*` any key with a TTL (sessions, tombstones). `None`: not known.
    pub fn may_evict(&self) -> Option<bool> {
        self.maxmemory_policy
            .as_deref()
            .map(|p| p.starts_with("allkeys-") || p.starts_with("volatile-"))
    }

    /// Whether an acknowledged write survives a crash of the Redis process: AOF on, synced
    /// `always` or `everysec` (then at most a second of writes is lost). `None`: not known.
    pub fn durable(&self) -> Option<bool> {
        let aof = self.appendonly.as_deref()?;
        let fsync = self.appendfsync.as_deref()?;
        Some(aof == "yes" && matches!(fsync, "always" | "everysec"))
    }

    /// The gauge value of a check: 1 holds, 0 does not, -1 unknown.
    pub fn gauge(check: Option<bool>) -> i64 {
        match check {
            Some(true) => 1,
            Some(false) => 0,
            None => -1,
        }
    }
}

/// Receives what other replicas (and the store's own probes) report. Implemented by the
/// session cache; a store calls it from its background tasks.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// An invalidation event published by some replica (possibly this one).
    async fn event(&self, payload: &[u8]);
    /// Whether this replica currently receives events (false: it may miss invalidations).
    fn subscribed(&self, up: bool);
    /// Whether the store answered its last probe.
    fn store_reachable(&self, up: bool);
    /// Called after every (re)subscription, before [`EventSink::subscribed`]: the store may
    /// have lost data while this replica was not listening (`data_lost`: it certainly did,
    /// its epoch changed). The sink puts back what it keeps on the store's behalf; `false`
    /// when that failed, and the store then drops the subscription and tries again.
    async fn resubscribed(&self, data_lost: bool) -> bool;
}

/// Where sessions live, with their refresh-token state, the revocation generations of their
/// scopes, and the events that carry revocations to every replica.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session (and, atomically with it, the SHA-256 of its first refresh
    /// token); both disappear by themselves at `expires_at`.
    async fn put(&self, session: &Session, refresh_sha256: Option<&str>) -> Result<(), StoreError>;
    /// Atomically replaces the session's current refresh token `presented` (SHA-256 hex) by
    /// `next`, and remembers the rotation for `next.grace` (only the last one: a rotation
    /// replaces what the previous one left). Exactly one of concurrent rotations of one token
    /// succeeds; the others are [`Rotation::Retried`] within the grace, reuse after it.
    async fn rotate_refresh(
        &self,
        session_id: &str,
        presented: &str,
        next: &Successor<'_>,
    ) -> Result<Rotation, StoreError>;
    /// What [`SessionStore::rotate_refresh`] would find for `presented`, changing nothing:
    /// lets a caller verify a refresh token's secret before charging its session's limit.
    async fn peek_refresh(&self, session_id: &str, presented: &str)
        -> Result<Rotation, StoreError>;
    /// The session, if it exists and has not expired.
    async fn get(&self, session_id: &str) -> Result<Option<Session>, StoreError>;
    /// Deletes a session with its refresh state, in one step (a timed-out delete either
    /// happened whole or not at all); `Ok(false)` when there was none.
    async fn delete(&self, session_id: &str) -> Result<bool, StoreError>;
    /// Current revocation generations of `scopes` (0 for a scope never revoked).
    async fn generations(&self, scopes: &[String]) -> Result<Vec<u64>, StoreError>;
    /// Raises a scope's generation by one, revoking every session created before, in O(1);
    /// returns the new generation.
    async fn bump_generation(&self, scope: &str) -> Result<u64, StoreError>;
    /// Raises a scope's generation to at least `at_least`, never lowering it: a replica puts
    /// back a revoke-all it knows of into a store that may have lost it.
    async fn restore_generation(&self, scope: &str, at_least: u64) -> Result<(), StoreError>;
    /// Sends an invalidation event to every replica's [`EventSink`].
    async fn publish(&self, payload: &[u8]) -> Result<(), StoreError>;
    /// Starts delivering events and health to `sink` (background tasks for a shared store;
    /// a single-process store reports itself subscribed and reachable at once).
    fn start_events(&self, sink: Arc<dyn EventSink>);
    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// The store's own settings that sessiongate's guarantees depend on; `None` for a
    /// store that has none (in process).
    async fn settings(&self) -> Result<Option<StoreSettings>, StoreError> {
        Ok(None)
    }
    /// Short name for logs and metrics.
    fn kind(&self) -> &'static str;
}

/// Directory records (users, customers, device bindings): small opaque values kept in the
/// same backend as the sessions.
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// A directory record's value.
    async fn record_get(&self, key: &RecordKey) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes a directory record (expiring after `ttl` when given); `Ok(false)` when
    /// `IfAbsent` found one already.
    async fn record_put(
        &self,
        key: &RecordKey,
        value: &[u8],
        mode: WriteMode,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError>;
    /// Replaces a record atomically and returns the previous value.
    async fn record_swap(
        &self,
        key: &RecordKey,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes a record; `Ok(false)` when there was none.
    async fn record_delete(&self, key: &RecordKey) -> Result<bool, StoreError>;
}

/// Most sessions tracked per user id: past it, the entries expiring soonest leave the index
/// (and so the user's list). Bounds what one user id costs the store and a listing.
pub const INDEX_CAP: usize = 1000;

/// Each user's sessions, for listing and ending them ("sign out other devices"). An entry is
/// written before its session, so every session is listed; an entry whose session is gone or
/// revoked is skipped by the reader. Entries expire with their sessions; at most
/// [`INDEX_CAP`] per user.
#[async_trait]
pub trait UserIndex: Send + Sync + 'static {
    /// Lists `session_id` (expiring at `expires_at`, unix seconds) under `user_id`.
    async fn index_add(
        &self,
        user_id: &str,
        session_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;
    /// The ids listed under `user_id` that have not expired at `now`, latest expiry first (at
    /// most [`INDEX_CAP`]).
    async fn index_list(&self, user_id: &str, now: i64) -> Result<Vec<String>, StoreError>;
    /// Removes `session_ids` from `user_id`'s list.
    async fn index_remove(&self, user_id: &str, session_ids: &[String]) -> Result<(), StoreError>;
}

/// Rate-limit counters, shared by every replica using the backend.
#[async_trait]
pub trait CounterStore: Send + Sync + 'static {
    /// Counts one hit on `key` (opaque; hashed by stores that build keys from it) in a
    /// sliding window of `window`, shared by every replica using this store.
    async fn count_hit(&self, key: &str, window: Duration) -> Result<WindowCount, StoreError>;
}

/// One backend seen through each of its traits, for wiring the app: the session cache takes
/// [`Stores::sessions`], the directory [`Stores::records`], the limits [`Stores::counters`],
/// the session service [`Stores::index`].
///
/// Three `Arc`s to one object rather than one `Arc<dyn Store>` of a supertrait: each user
/// then names only the trait it calls (so its test doubles implement only that), and handing
/// an `Arc<dyn Store>` on as an `Arc<dyn SessionStore>` would need trait upcasting (Rust
/// 1.86; the crate builds on 1.85). Nothing needs the whole store once it is wired.
#[derive(Clone)]
pub struct Stores {
    /// Sessions, generations, events, readiness.
    pub sessions: Arc<dyn SessionStore>,
    /// Directory records.
    pub records: Arc<dyn RecordStore>,
    /// Rate-limit counters.
    pub counters: Arc<dyn CounterStore>,
    /// Each user's sessions.
    pub index: Arc<dyn UserIndex>,
}

impl Stores {
    /// The views of `store`. Taking one value that implements them all keeps them one
    /// backend: one Redis connection, or one `MemoryStore`.
    pub fn new<S: SessionStore + RecordStore + CounterStore + UserIndex>(store: S) -> Stores {
        let store = Arc::new(store);
        Stores {
            sessions: store.clone(),
            records: store.clone(),
            counters: store.clone(),
            index: store,
        }
    }
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("kind", &self.sessions.kind())
            .finish_non_exhaustive()
    }
}
