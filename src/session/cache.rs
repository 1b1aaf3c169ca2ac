//! The session cache: moka in front of the store, kept honest across replicas.
//!
//! - One entry per session (keyed by its id) holds the session and the credentials (access
//!   tokens, by digest) checked for it here, so that a credential's signature is checked
//!   once, not on every request. A request finds the entry through the session id its token
//!   claims, read unchecked: only a token whose digest the entry remembers skips the check.
//! - An entry never outlives its session (per-entry expiry = min(cache TTL from its load,
//!   time left)); a credential's own expiry is checked on every use.
//! - Misses are single-flight: a burst of requests for one uncached session makes one store
//!   round trip (`try_get_with`). Misses are not cached (no negative caching).
//! - Revocation leaves a tombstone that outlives any entry a racing loader could still
//!   insert, so a revoked session is refused on this replica at once. Other replicas hear
//!   of it through the store's events ([`EventSink`]) and do the same.
//! - Revoke-all raises a scope's generation (user or business) in the store; a session
//!   created before is refused. Each replica keeps "floors" (lowest valid generation per
//!   scope) from its own revocations, from events and from every load, checked on every
//!   hit: O(1) per request, whatever the number of sessions.
//! - Tombstones and floors are never evicted for size, only when they have outlived any
//!   entry they guard (2 × TTL + 5 s). Past `4 × max_entries` of them the replica stops
//!   trusting its cache instead (fail closed): it is flushed and bypassed until everything a
//!   dropped tombstone could have guarded has expired.
//! - While this replica is not subscribed to events (or its subscription went silent), the
//!   cache is bypassed: every lookup asks the store. On resubscription the cache is flushed,
//!   since events sent in the gap are lost; an entry a racing load puts back after a flush
//!   is loaded again before it answers. Entries loaded while bypassed only remember
//!   credentials.
//! - Degraded mode: while the store is unreachable, cached sessions are served (to any
//!   credential of theirs that checks out) for at most `stale_window` since the outage began
//!   (0 = strict: none), then refused with 503, and only if events were heard until the
//!   outage began. Nothing is deleted because of a store error.

use super::model::{business_scope, now_unix, user_scope, Session};
use super::store::{EventSink, Rotation, SessionStore, StoreError, Successor};
use crate::metrics::Metrics;
use async_trait::async_trait;
use moka::Expiry;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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
    /// The store could not be asked (or the stale window is over).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A credential's fingerprint: the SHA-256 of the token. A token is a few hundred bytes; the
/// digest is 32 bytes inline and, being collision resistant, names exactly one token, as the
/// token itself would.
pub type CredentialKey = [u8; 32];

/// What checking a credential established: the session it names, and until when it holds.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The session the credential names.
    pub session_id: String,
    /// Unix seconds; the credential is refused from this instant on.
    pub expires_at: i64,
}

/// How often a session's use may be recorded (`last_seen_at` is kept to the minute).
pub const RECORD_USE_EVERY_SECS: i64 = 60;

/// A credential checked on this replica, remembered in its session's entry.
#[derive(Debug, Clone, Copy)]
struct Seen {
    key: CredentialKey,
    /// Unix seconds from which the credential is refused; `i64::MIN` for an empty slot.
    until: i64,
}

impl Seen {
    const NONE: Seen = Seen {
        key: [0; 32],
        until: i64::MIN,
    };
}

/// Credentials remembered per session: a session has one live access token, two around a
/// refresh (both stay valid until their own `exp`).
const SEEN_PER_SESSION: usize = 2;

/// A cached session with the credentials that reached it here: one moka entry per session
/// (the session-id key, ~350 bytes of moka bookkeeping) holds what used to take two (one for
/// the verified token, one for its session), and a request makes one cache lookup.
#[derive(Debug)]
pub struct Authenticated {
    session: Session,
    /// Checked credentials of this session (their signature is not checked again until they
    /// expire or the entry goes).
    seen: [Seen; SEEN_PER_SESSION],
    /// When a use of the session was last recorded (unix seconds).
    recorded_at: AtomicI64,
    /// When the session data was read from the store: an entry expires at most the cache
    /// TTL after it, however often it is rewritten (a credential remembered).
    loaded_at: Instant,
    /// The cache flush this entry's load began after ([`UNTRUSTED`] if the cache was not
    /// trusted then: unsubscribed or bypassed). Only an entry loaded since the latest flush
    /// may answer for its session; others remember checked credentials only, so that those
    /// are not checked again on every request.
    trusted_in: u64,
}

/// [`Authenticated::trusted_in`] of an entry loaded while the cache was not trusted.
const UNTRUSTED: u64 = u64::MAX;

impl std::ops::Deref for Authenticated {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

impl Authenticated {
    /// An entry for `session`, read from the store from `loaded_at` on.
    fn new(session: Session, seen: Option<Seen>, trusted_in: u64, loaded_at: Instant) -> Self {
        let mut entry = Authenticated {
            session,
            seen: [Seen::NONE; SEEN_PER_SESSION],
            recorded_at: AtomicI64::new(i64::MIN),
            loaded_at,
            trusted_in,
        };
        if let Some(seen) = seen {
            entry.seen[0] = seen;
        }
        entry
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether the credential `key` was checked here and is not yet expired at `now`.
    fn knows(&self, key: &CredentialKey, now: i64) -> bool {
        use subtle::ConstantTimeEq;
        self.seen
            .iter()
            .any(|s| s.until > now && bool::from(s.key.ct_eq(key)))
    }

    /// The same session with `fresh` data and its load time (or its own) and trust,
    /// remembering `also` too: it takes an empty or expired slot, else the one that expires
    /// first.
    fn remembering(
        &self,
        fresh: Option<(Session, Instant)>,
        also: Option<Seen>,
        trusted_in: u64,
        now: i64,
    ) -> Self {
        let mut seen = self.seen;
        if let Some(also) = also {
            if let Some(slot) =
                seen.iter_mut()
                    .min_by_key(|s| if s.until > now { s.until } else { i64::MIN })
            {
                *slot = also;
            }
        }
        let (session, loaded_at) = fresh.unwrap_or_else(|| (self.session.clone(), self.loaded_at));
        Authenticated {
            session,
            seen,
            recorded_at: AtomicI64::new(self.recorded_at.load(Ordering::Relaxed)),
            loaded_at,
            trusted_in,
        }
    }

    /// Whether a use at `now` is to be recorded: true at most once per
    /// [`RECORD_USE_EVERY_SECS`] for this entry, and then the use counts as recorded.
    fn claim_use(&self, now: i64) -> bool {
        let last = self.recorded_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < RECORD_USE_EVERY_SECS {
            return false;
        }
        // A racing request that claimed the same minute wins; this one writes nothing.
        self.recorded_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// A live session found for a credential.
#[derive(Debug, Clone)]
pub struct Found {
    /// The session (and what the cache knows of it).
    pub session: Arc<Authenticated>,
    /// Whether this use is the first of its minute, to be recorded as `last_seen_at`.
    pub record_use: bool,
}

/// Why [`SessionCache::authenticate`] refused: the credential itself (the caller's check
/// failed), or its session.
#[derive(Debug)]
pub enum Refused<E> {
    /// The credential did not check out.
    Credential(E),
    /// The credential is good; its session is not usable.
    Session(LookupError),
}

impl<E> From<LookupError> for Refused<E> {
    fn from(e: LookupError) -> Self {
        Refused::Session(e)
    }
}

struct EntryExpiry {
    max: Duration,
}

impl Expiry<String, Arc<Authenticated>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Authenticated>,
        _now: Instant,
    ) -> Option<Duration> {
        // From the load, not from this insert: a rewrite (a credential remembered) can
        // insert anew when the entry went meanwhile, and must not extend its data's life.
        let left = self.max.saturating_sub(value.loaded_at.elapsed());
        Some(Duration::from_secs(value.session.remaining_secs(now_unix())).min(left))
    }
    // An update keeps the entry's expiry (moka's default), which is never later.
}

/// An invalidation every replica applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Event {
    /// One session was revoked.
    Revoked {
        /// Its id.
        sid: String,
    },
    /// Every session of a scope with a lower generation is revoked.
    Floor {
        /// `u:<user>` or `b:<business>`.
        scope: String,
        /// The scope's new generation.
        generation: u64,
    },
}

/// Cache state shared with the store's event tasks.
struct State {
    store: Arc<dyn SessionStore>,
    /// Sessions by id, with the credentials checked for them.
    cache: moka::future::Cache<String, Arc<Authenticated>>,
    revoked: moka::future::Cache<String, ()>,
    floors: moka::sync::Cache<String, u64>,
    /// Set once any floor exists, so the hot path skips floor checks until then.
    any_floor: AtomicBool,
    /// Most tombstones (and, separately, floors) held; past it the cache is bypassed.
    guard_cap: u64,
    /// How long a tombstone or floor is kept, and a bypass after an overflow lasts.
    guard_ttl: Duration,
    /// Cache flushes so far (see [`Authenticated::trusted_in`]).
    flushes: AtomicU64,
    /// Milliseconds since `epoch` until which the cache is bypassed because tombstones or
    /// floors overflowed; 0 when it is not.
    bypass_until_ms: AtomicU64,
    subscribed: AtomicBool,
    /// Milliseconds since `epoch` when the store became unreachable; 0 while reachable.
    down_since_ms: AtomicU64,
    /// Milliseconds since `epoch` when the event subscription last dropped (0: never).
    unsubscribed_at_ms: AtomicU64,
    epoch: Instant,
    stale_window: Duration,
    /// `sessiongate_cache_lookups_total` by result, resolved once (no label hashing on
    /// every lookup).
    lookups: Lookups,
    metrics: Arc<Metrics>,
}

/// The `result` series of `sessiongate_cache_lookups_total`.
struct Lookups {
    hit: prometheus::IntCounter,
    miss: prometheus::IntCounter,
    stale: prometheus::IntCounter,
    bypass: prometheus::IntCounter,
}

impl Lookups {
    fn new(m: &Metrics) -> Self {
        let series = |result: &str| m.cache_lookups.with_label_values(&[result]);
        Lookups {
            hit: series("hit"),
            miss: series("miss"),
            stale: series("stale"),
            bypass: series("bypass"),
        }
    }
}

/// How far apart the subscription's drop and the first failed store call may be for the
/// two to count as one outage (the store dying takes the subscriber connection with it at
/// once; the first failing call comes with the next request or readiness probe, about a
/// second apart).
const DROP_WITH_OUTAGE: Duration = Duration::from_secs(3);

/// Cache + store, with the metrics of both.
pub struct SessionCache {
    state: Arc<State>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("store", &self.state.store.kind())
            .field("entries", &self.state.cache.entry_count())
            .finish()
    }
}

/// Whether the store is reachable, and whether this replica hears other replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The last probe (or operation) reached the store.
    pub store_reachable: bool,
    /// Invalidation events are being received.
    pub subscribed: bool,
    /// How long the store has been unreachable.
    pub degraded_for: Option<Duration>,
}

impl State {
    fn raise_floor(&self, scope: &str, generation: u64) {
        if generation == 0 {
            return;
        }
        self.any_floor.store(true, Ordering::Release);
        if self.floors.entry_count() >= self.guard_cap && !self.floors.contains_key(scope) {
            self.overflowed();
            return;
        }
        self.floors
            .entry_by_ref(scope)
            .and_upsert_with(|old| old.map_or(generation, |e| (*e.value()).max(generation)));
    }

    /// Whether a revoke-all (known here) covers this session.
    fn below_floor(&self, s: &Session) -> bool {
        if !self.any_floor.load(Ordering::Acquire) {
            return false;
        }
        let under = |scope: String, generation: u64| {
            self.floors.get(&scope).is_some_and(|f| generation < f)
        };
        under(user_scope(&s.user_id), s.user_gen)
            || under(business_scope(&s.business_id), s.business_gen)
    }

    fn mark_reachable(&self, up: bool) {
        if up {
            self.down_since_ms.store(0, Ordering::Release);
        } else {
            let now = u64::try_from(self.epoch.elapsed().as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let _ =
                self.down_since_ms
                    .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        }
        self.metrics.store_up.set(i64::from(up));
        self.metrics.degraded.set(i64::from(!up));
    }

    fn degraded_for(&self) -> Option<Duration> {
        match self.down_since_ms.load(Ordering::Acquire) {
            0 => None,
            since => {
                let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                Some(Duration::from_millis(now.saturating_sub(since)))
            }
        }
    }

    /// Whether the event subscription dropped at most [`DROP_WITH_OUTAGE`] before the store
    /// was first found unreachable: the two are one event (the store died), so nothing was
    /// published that this replica missed before the outage began.
    fn dropped_with_outage(&self) -> bool {
        let dropped = self.unsubscribed_at_ms.load(Ordering::Acquire);
        let down = self.down_since_ms.load(Ordering::Acquire);
        let link = u64::try_from(DROP_WITH_OUTAGE.as_millis()).unwrap_or(u64::MAX);
        dropped != 0 && down != 0 && down.saturating_sub(dropped) <= link && dropped <= down + link
    }

    /// The cached entry, if an outage `outage` old still lets it be served: within a
    /// non-zero stale window, only while the cache is trusted (not bypassed after an overflow
    /// of revocations), and only an entry loaded while it was.
    fn stale(
        &self,
        cached: Option<&Arc<Authenticated>>,
        outage: Duration,
    ) -> Option<Arc<Authenticated>> {
        if self.stale_window.is_zero() || outage > self.stale_window || self.bypassed() {
            return None;
        }
        let entry = cached.filter(|e| self.trusts(e))?;
        self.lookups.stale.inc();
        Some(entry.clone())
    }

    async fn evict(&self, session_id: &str) {
        if self.revoked.entry_count() >= self.guard_cap {
            self.overflowed();
        } else {
            self.revoked.insert(session_id.to_string(), ()).await;
        }
        self.cache.invalidate(session_id).await;
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A tombstone or floor could not be kept: whatever it would have guarded may sit in the
    /// cache or be loaded into it by a racing lookup, so the cache is flushed and bypassed
    /// (every lookup asks the store) until all of that has expired.
    fn overflowed(&self) {
        self.flush();
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(self.guard_ttl.as_millis()).unwrap_or(u64::MAX));
        if self.bypass_until_ms.swap(until, Ordering::AcqRel) <= self.now_ms() {
            tracing::warn!(
                held = self.guard_cap,
                "too many revocations to remember: the session cache is bypassed for a while"
            );
        }
    }

    /// Empties the cache. Entries a racing load inserts afterwards carry the flush they
    /// began before, so they do not answer for their session (see [`Self::trusts`]).
    fn flush(&self) {
        self.flushes.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }

    /// Whether `e` may answer for its session: loaded while the cache was trusted and since
    /// its latest flush.
    fn trusts(&self, e: &Authenticated) -> bool {
        e.trusted_in == self.flushes.load(Ordering::Acquire)
    }

    /// Whether the cache is bypassed after an overflow of tombstones or floors.
    /// Whether the cache may answer without the store: reachable, hearing revocations, and
    /// not bypassed after missing too many of them.
    fn cache_trusted(&self) -> bool {
        self.degraded_for().is_none() && self.subscribed.load(Ordering::Acquire) && !self.bypassed()
    }

    fn bypassed(&self) -> bool {
        self.bypass_until_ms.load(Ordering::Acquire) > self.now_ms()
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
        match &result {
            Err(StoreError::Unavailable(_)) => {
                self.metrics.store_errors.with_label_values(&[op]).inc();
                self.mark_reachable(false);
            }
            Err(StoreError::Corrupt(_)) => {
                self.metrics.store_errors.with_label_values(&[op]).inc();
            }
            Ok(_) => self.mark_reachable(true),
        }
        result
    }

    /// The session from the store, checked against its scopes' current generations (which
    /// also become this replica's floors).
    async fn load(&self, session_id: &str) -> Result<Session, LookupError> {
        let Some(session) = self.timed("get", self.store.get(session_id)).await? else {
            return Err(LookupError::NotFound);
        };
        let scopes = [
            user_scope(&session.user_id),
            business_scope(&session.business_id),
        ];
        let gens = self
            .timed("generations", self.store.generations(&scopes))
            .await?;
        for (scope, g) in scopes.iter().zip(&gens) {
            self.raise_floor(scope, *g);
        }
        let user_gen = gens.first().copied().unwrap_or(0);
        let business_gen = gens.get(1).copied().unwrap_or(0);
        if session.user_gen < user_gen || session.business_gen < business_gen {
            return Err(LookupError::NotFound);
        }
        Ok(session)
    }

    /// Remembers a checked credential in its session's entry, if the entry is still there.
    async fn remember(&self, session_id: &str, seen: Seen, now: i64) {
        use moka::ops::compute::Op;
        self.cache
            .entry_by_ref(session_id)
            .and_compute_with(|current| async move {
                match current.map(moka::Entry::into_value) {
                    Some(e) if !e.knows(&seen.key, now) => {
                        Op::Put(Arc::new(e.remembering(None, Some(seen), e.trusted_in, now)))
                    }
                    _ => Op::Nop,
                }
            })
            .await;
    }

    /// The entry of a session cached while the cache was not trusted (or before its latest
    /// flush), loaded again and trusted; concurrent requests wait for one load, as on a miss.
    async fn trust(
        &self,
        session_id: &str,
        also: Option<Seen>,
        now: i64,
    ) -> Result<Arc<Authenticated>, LookupError> {
        use moka::ops::compute::{CompResult, Op};
        let computed = self
            .cache
            .entry_by_ref(session_id)
            .and_try_compute_with(|current| async move {
                let current = current.map(moka::Entry::into_value);
                if let Some(e) = current.as_ref().filter(|e| self.trusts(e)) {
                    return Ok(match also.filter(|s| !e.knows(&s.key, now)) {
                        Some(_) => Op::Put(Arc::new(e.remembering(None, also, e.trusted_in, now))),
                        None => Op::Nop,
                    });
                }
                // A request queued behind one whose load just failed: the outage is known,
                // and each waiter loading in turn would wait out the store's timeout again.
                if self.degraded_for().is_some() {
                    return Err(LookupError::Store(StoreError::Unavailable(
                        "the store is unreachable".into(),
                    )));
                }
                let flush = self.flushes.load(Ordering::Acquire);
                let started = Instant::now();
                let session = self.load(session_id).await?;
                Ok(Op::Put(Arc::new(match current {
                    Some(e) => e.remembering(Some((session, started)), also, flush, now),
                    None => Authenticated::new(session, also, flush, started),
                })))
            })
            .await;
        match computed {
            Ok(
                CompResult::Inserted(e) | CompResult::ReplacedWith(e) | CompResult::Unchanged(e),
            ) => Ok(e.into_value()),
            Ok(CompResult::StillNone(_) | CompResult::Removed(_)) => Err(LookupError::NotFound),
            Err(e) => Err(self.failed_load(session_id, e).await),
        }
    }

    /// A failed load's error, after dropping the entry unless the store failed: a session
    /// gone or expired in the store is gone here too, but an outage keeps what the stale
    /// window may still serve.
    async fn failed_load(&self, session_id: &str, e: LookupError) -> LookupError {
        if !matches!(e, LookupError::Store(_)) {
            self.cache.invalidate(session_id).await;
        }
        e
    }

    /// The session from the store while the cache is not trusted. The entry it makes is
    /// cached (untrusted: see [`Authenticated::trusted_in`]) only when there is a credential
    /// to remember in it (`also`, or none cached yet); the bool says whether it was.
    async fn reload(
        &self,
        session_id: &str,
        cached: Option<&Arc<Authenticated>>,
        also: Option<Seen>,
        now: i64,
    ) -> Result<(Arc<Authenticated>, bool), LookupError> {
        let started = Instant::now();
        let session = match self.load(session_id).await {
            Ok(session) => session,
            Err(e) => return Err(self.failed_load(session_id, e).await),
        };
        let entry = Arc::new(match cached {
            Some(e) => e.remembering(Some((session, started)), also, UNTRUSTED, now),
            None => Authenticated::new(session, also, UNTRUSTED, started),
        });
        let remember = also.is_some() || cached.is_none();
        if remember {
            self.cache
                .insert(session_id.to_string(), entry.clone())
                .await;
        }
        Ok((entry, remember))
    }
}

#[async_trait]
impl EventSink for State {
    async fn event(&self, payload: &[u8]) {
        match serde_json::from_slice::<Event>(payload) {
            Ok(Event::Revoked { sid }) => self.evict(&sid).await,
            Ok(Event::Floor { scope, generation }) => self.raise_floor(&scope, generation),
            // Another version's event, or noise on the channel: nothing to apply. A
            // revocation we cannot read is still bounded by the cache TTL.
            Err(_) => self.metrics.events_unreadable.inc(),
        }
    }

    fn subscribed(&self, up: bool) {
        let was = self.subscribed.swap(up, Ordering::AcqRel);
        if was && !up {
            self.unsubscribed_at_ms
                .store(self.now_ms().max(1), Ordering::Release);
        }
        if up && !was {
            // Whatever was published while we were not listening is lost: start over.
            self.flush();
        }
        self.metrics.events_subscribed.set(i64::from(up));
    }

    fn store_reachable(&self, up: bool) {
        self.mark_reachable(up);
    }

    async fn resubscribed(&self, data_lost: bool) -> bool {
        if data_lost {
            self.metrics.store_data_lost.inc();
        }
        // A store that lost a revoke-all's counter (restarted empty, failed over to a node
        // that missed it, a lost Cluster shard) hands out generations below this replica's
        // floors: sessions created there would be refused here for 2 x TTL + 5 s while a
        // fresh replica accepts them, and a fresh replica would accept sessions revoked
        // before. Writing the floors back makes the store agree with every replica again.
        // Dropping them instead would un-revoke sessions a partial loss kept. Tombstones need
        // nothing: they refuse ids that are gone from the store anyway.
        let floors: Vec<(Arc<String>, u64)> = self.floors.iter().collect();
        for (scope, generation) in floors {
            let restored = self
                .timed(
                    "restore_generation",
                    self.store.restore_generation(&scope, generation),
                )
                .await;
            if let Err(e) = restored {
                // The floors stay here (fail closed), and the store resubscribes (the cache
                // bypassed meanwhile) until they are written.
                tracing::warn!(error = %e, "could not write revoke-all floors back to the store");
                return false;
            }
        }
        true
    }
}

impl SessionCache {
    /// A cache of at most `max_entries` sessions, each kept at most `ttl`; cached sessions
    /// are served for at most `stale_window` of a store outage.
    pub fn new(
        store: Arc<dyn SessionStore>,
        max_entries: u64,
        ttl: Duration,
        stale_window: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(EntryExpiry { max: ttl })
            .build();
        // A racing loader inserts at most one store timeout after the tombstone (or floor);
        // twice the TTL plus a margin covers it with room to spare.
        // Never evicted for size (an evicted tombstone lets a revoked session back in); the
        // count is checked on insert instead (see `State::overflowed`).
        let guard_ttl = ttl * 2 + Duration::from_secs(5);
        let revoked = moka::future::Cache::builder()
            .time_to_live(guard_ttl)
            .build();
        let floors = moka::sync::Cache::builder().time_to_live(guard_ttl).build();
        let state = Arc::new(State {
            store: store.clone(),
            cache,
            revoked,
            floors,
            any_floor: AtomicBool::new(false),
            guard_cap: max_entries.saturating_mul(4).max(1),
            guard_ttl,
            bypass_until_ms: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            down_since_ms: AtomicU64::new(0),
            unsubscribed_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            stale_window,
            lookups: Lookups::new(&metrics),
            metrics,
        });
        store.start_events(state.clone());
        SessionCache { state }
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.state.store
    }

    /// Store reachability and event subscription, as this replica sees them.
    pub fn health(&self) -> Health {
        let degraded_for = self.state.degraded_for();
        Health {
            store_reachable: degraded_for.is_none(),
            subscribed: self.state.subscribed.load(Ordering::Acquire),
            degraded_for,
        }
    }

    /// The live session a credential names, from the cache or the store. `hint` is the
    /// session the credential claims, read without checking it: it finds the entry that says
    /// whether this credential (`key`, its digest) was checked here before. Only if it was not
    /// is `check` called, to check the credential and say which session it names and until
    /// when it holds.
    pub async fn authenticate<E>(
        &self,
        hint: Option<&str>,
        key: &CredentialKey,
        check: impl FnOnce() -> Result<Credential, E>,
    ) -> Result<Found, Refused<E>> {
        let st = &self.state;
        let now = now_unix();
        let hinted = match hint {
            Some(session_id) => st.cache.get(session_id).await,
            None => None,
        };
        let (cached, checked) = match hinted {
            // Whatever the cache's state, an entry remembers the credentials checked for it.
            Some(e) if e.knows(key, now) => (Some(e), None),
            hinted => {
                let c = check().map_err(Refused::Credential)?;
                // The session is the one the checked credential names, never the hint's.
                let cached = match hinted {
                    Some(e) if e.session.session_id == c.session_id => Some(e),
                    _ => st.cache.get(&c.session_id).await,
                };
                (cached, Some(c))
            }
        };
        let session_id = match (&checked, &cached) {
            (Some(c), _) => c.session_id.as_str(),
            (None, Some(e)) => e.session.session_id.as_str(),
            (None, None) => return Err(LookupError::NotFound.into()),
        };
        // A credential checked just now, to remember in its session's entry.
        let also = checked.as_ref().map(|c| Seen {
            key: *key,
            until: c.expires_at,
        });
        if st.revoked.contains_key(session_id) {
            return Err(LookupError::NotFound.into());
        }
        // (the entry, whether the cache holds it, whether `also` is still to be remembered)
        let (entry, in_cache, pending) = if let Some(outage) = st.degraded_for() {
            // Degraded: only what is cached, only within the stale window, and only if no
            // revocation can have been missed before the outage (events were heard until
            // it began).
            let heard = st.subscribed.load(Ordering::Acquire) || st.dropped_with_outage();
            match heard.then(|| st.stale(cached.as_ref(), outage)).flatten() {
                Some(e) => (e, true, also),
                // Not cached, or the window is over: the store is the only authority left,
                // and a success there ends the outage.
                None => {
                    let (e, in_cache) = st.reload(session_id, cached.as_ref(), also, now).await?;
                    (e, in_cache, None)
                }
            }
        } else if !st.cache_trusted() {
            st.lookups.bypass.inc();
            match st.reload(session_id, cached.as_ref(), also, now).await {
                // When the store dies, the event subscription drops first, so the first
                // lookups of an outage land here: a failed call is the outage's first
                // instant (`timed` has just marked it), and the stale-window rule applies
                // from it, not from the next lookup.
                // Only when the subscription dropped with the outage: after a drop for
                // another reason (a killed subscriber connection, a failover that kept the
                // data) revocations published since were missed, and the cache must not
                // outlive them.
                Err(LookupError::Store(e)) => match st.degraded_for() {
                    Some(outage) if st.dropped_with_outage() => {
                        let stale = st.stale(cached.as_ref(), outage);
                        (stale.ok_or(LookupError::Store(e))?, true, also)
                    }
                    _ => return Err(LookupError::Store(e).into()),
                },
                loaded => {
                    let (e, in_cache) = loaded?;
                    (e, in_cache, None)
                }
            }
        } else {
            match &cached {
                Some(e) if st.trusts(e) => {
                    st.lookups.hit.inc();
                    (e.clone(), true, also)
                }
                // Cached while the cache was not trusted: the session is loaded again, the
                // credential is not checked again.
                Some(_) => {
                    st.lookups.miss.inc();
                    (st.trust(session_id, also, now).await?, true, None)
                }
                None => {
                    st.lookups.miss.inc();
                    let flush = st.flushes.load(Ordering::Acquire);
                    let load = async {
                        let started = Instant::now();
                        let session = st.load(session_id).await?;
                        let e = Authenticated::new(session, also, flush, started);
                        Ok::<_, LookupError>(Arc::new(e))
                    };
                    let e = st
                        .cache
                        .try_get_with_by_ref(session_id, load)
                        .await
                        .map_err(|e| (*e).clone())?;
                    // Not necessarily this request's load: one it joined, begun before a
                    // flush, or an entry a racing load put there first. Each answers only if
                    // trusted, like a hit.
                    if st.trusts(&e) {
                        (e, true, also)
                    } else {
                        (st.trust(session_id, also, now).await?, true, None)
                    }
                }
            }
        };
        if st.below_floor(&entry.session) {
            st.cache.invalidate(session_id).await;
            return Err(LookupError::NotFound.into());
        }
        if entry.session.is_expired_at(now) {
            st.cache.invalidate(session_id).await;
            return Err(LookupError::Expired.into());
        }
        // Uses are tallied on the entry the cache holds, not on a copy made for one request,
        // and before a credential is remembered (which copies the tally into a new entry).
        let tally = match (&cached, in_cache) {
            (Some(c), false) => c,
            _ => &entry,
        };
        let record_use = tally.claim_use(now);
        if let Some(seen) = pending.filter(|s| !entry.knows(&s.key, now)) {
            st.remember(session_id, seen, now).await;
        }
        Ok(Found {
            session: entry,
            record_use,
        })
    }

    /// The live session with this id: cached, if the cache is trusted and has it, else from
    /// the store (for management calls: by id, not through a credential).
    pub async fn live(&self, session_id: &str) -> Result<Arc<Session>, LookupError> {
        let st = &self.state;
        if st.revoked.contains_key(session_id) {
            return Err(LookupError::NotFound);
        }
        let cached = match st.cache_trusted() {
            true => st.cache.get(session_id).await.filter(|e| st.trusts(e)),
            false => None,
        };
        let session = match cached {
            Some(e) => e.session.clone(),
            None => st.load(session_id).await?,
        };
        if st.below_floor(&session) {
            return Err(LookupError::NotFound);
        }
        if session.is_expired_at(now_unix()) {
            return Err(LookupError::Expired);
        }
        Ok(Arc::new(session))
    }

    /// The session straight from the store, bypassing the cache (admin reads).
    pub async fn get_uncached(&self, session_id: &str) -> Result<Option<Session>, StoreError> {
        if self.state.revoked.contains_key(session_id) {
            return Ok(None);
        }
        match self.state.load(session_id).await {
            // A revoke-all this replica knows of and the store lost (see `resubscribed`).
            Ok(s) if self.state.below_floor(&s) => Ok(None),
            Ok(s) => Ok(Some(s)),
            Err(LookupError::NotFound | LookupError::Expired) => Ok(None),
            Err(LookupError::Store(e)) => Err(e),
        }
    }

    /// Current generations of the user's and the business's scopes (for new sessions).
    pub async fn generations(
        &self,
        user_id: &str,
        business_id: &str,
    ) -> Result<(u64, u64), StoreError> {
        let scopes = [user_scope(user_id), business_scope(business_id)];
        let g = self
            .state
            .timed("generations", self.state.store.generations(&scopes))
            .await?;
        Ok((
            g.first().copied().unwrap_or(0),
            g.get(1).copied().unwrap_or(0),
        ))
    }

    /// Stores a new session (with the SHA-256 of its refresh token, if it has one).
    pub async fn insert(
        &self,
        session: &Session,
        refresh_sha256: Option<&str>,
    ) -> Result<(), StoreError> {
        self.state
            .timed("put", self.state.store.put(session, refresh_sha256))
            .await
    }

    /// Rotates a session's refresh token (hashes) in the store.
    pub async fn rotate_refresh(
        &self,
        session_id: &str,
        presented: &str,
        next: &Successor<'_>,
    ) -> Result<Rotation, StoreError> {
        self.state
            .timed(
                "rotate",
                self.state.store.rotate_refresh(session_id, presented, next),
            )
            .await
    }

    /// What rotating `presented` would find, changing nothing.
    pub async fn peek_refresh(
        &self,
        session_id: &str,
        presented: &str,
    ) -> Result<Rotation, StoreError> {
        self.state
            .timed(
                "peek_refresh",
                self.state.store.peek_refresh(session_id, presented),
            )
            .await
    }

    /// Deletes a session from the store, then from this replica's cache, then tells the
    /// other replicas. On a store error nothing is changed and the caller must report
    /// failure; a failed broadcast is logged and counted (the deletion stands, and other
    /// replicas' caches expire within the cache TTL).
    pub async fn revoke(&self, session_id: &str) -> Result<bool, StoreError> {
        let existed = self
            .state
            .timed("delete", self.state.store.delete(session_id))
            .await?;
        self.state.evict(session_id).await;
        self.broadcast(&Event::Revoked {
            sid: session_id.to_string(),
        })
        .await;
        Ok(existed)
    }

    /// Revokes every session of a scope (`u:<user>` / `b:<business>`) in O(1): the scope's
    /// generation is raised in the store, here and on every replica.
    pub async fn revoke_scope(&self, scope: &str) -> Result<u64, StoreError> {
        let generation = self
            .state
            .timed("bump_generation", self.state.store.bump_generation(scope))
            .await?;
        self.state.raise_floor(scope, generation);
        self.broadcast(&Event::Floor {
            scope: scope.to_string(),
            generation,
        })
        .await;
        Ok(generation)
    }

    async fn broadcast(&self, event: &Event) {
        let Ok(payload) = serde_json::to_vec(event) else {
            return;
        };
        if self
            .state
            .timed("publish", self.state.store.publish(&payload))
            .await
            .is_err()
        {
            tracing::error!(
                "could not broadcast a revocation; other replicas rely on their cache TTL"
            );
        }
    }

    /// Drops a session from this replica's cache and refuses it from now on.
    pub async fn evict(&self, session_id: &str) {
        self.state.evict(session_id).await;
    }

    /// Readiness probe of the store.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.state.timed("ping", self.state.store.ping()).await
    }

    /// The store's settings revocation depends on (see [`super::store::StoreSettings`]).
    pub async fn store_settings(&self) -> Result<Option<super::store::StoreSettings>, StoreError> {
        self.state.store.settings().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::memory::MemoryStore;
    use crate::session::model::new_session_id;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A memory store that counts (and can slow or fail) its `get`s, and hands its event
    /// sink to the test: a session store only, which is all the cache asks of a backend.
    struct CountingStore {
        inner: MemoryStore,
        gets: AtomicUsize,
        /// How long a `get` takes (milliseconds).
        delay_ms: AtomicU64,
        fail: std::sync::atomic::AtomicBool,
        sink: std::sync::Mutex<Option<Arc<dyn EventSink>>>,
    }

    impl CountingStore {
        fn sink(&self) -> Option<Arc<dyn EventSink>> {
            self.sink.lock().ok().and_then(|s| s.clone())
        }
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
            next: &Successor<'_>,
        ) -> Result<Rotation, StoreError> {
            self.inner.rotate_refresh(id, presented, next).await
        }
        async fn peek_refresh(&self, id: &str, presented: &str) -> Result<Rotation, StoreError> {
            self.inner.peek_refresh(id, presented).await
        }
        async fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            // Make the miss slow enough that concurrent callers pile up on it.
            tokio::time::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            self.inner.get(id).await
        }
        async fn delete(&self, id: &str) -> Result<bool, StoreError> {
            self.inner.delete(id).await
        }
        async fn generations(&self, scopes: &[String]) -> Result<Vec<u64>, StoreError> {
            self.inner.generations(scopes).await
        }
        async fn bump_generation(&self, scope: &str) -> Result<u64, StoreError> {
            self.inner.bump_generation(scope).await
        }
        async fn restore_generation(&self, scope: &str, at_least: u64) -> Result<(), StoreError> {
            self.inner.restore_generation(scope, at_least).await
        }
        async fn publish(&self, _payload: &[u8]) -> Result<(), StoreError> {
            Ok(())
        }
        fn start_events(&self, sink: Arc<dyn EventSink>) {
            sink.subscribed(true);
            if let Ok(mut s) = self.sink.lock() {
                *s = Some(sink);
            }
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn kind(&self) -> &'static str {
            "counting"
        }
    }

    /// The cache key of a test credential that names `session_id`.
    fn key_of(session_id: &str) -> CredentialKey {
        use sha2::Digest;
        sha2::Sha256::digest(session_id.as_bytes()).into()
    }

    /// A credential presented to `cache` as `Sessions::authenticate` presents one: `hint` is
    /// the sid its payload claims, `key` its digest; checking it (counted in `checks`) says
    /// it names `names` for an hour.
    async fn present(
        cache: &SessionCache,
        hint: &str,
        key: &CredentialKey,
        names: &str,
        checks: &AtomicUsize,
    ) -> Result<Found, LookupError> {
        let check = || {
            checks.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(Credential {
                session_id: names.to_string(),
                expires_at: now_unix() + 3600,
            })
        };
        match cache.authenticate(Some(hint), key, check).await {
            Ok(found) => Ok(found),
            Err(Refused::Session(e)) => Err(e),
            Err(Refused::Credential(never)) => match never {},
        }
    }

    /// A lookup through the one credential [`entry`] remembers for the session.
    async fn lookup(
        cache: &SessionCache,
        session_id: &str,
    ) -> Result<Arc<Authenticated>, LookupError> {
        let key = key_of(session_id);
        let found = present(cache, session_id, &key, session_id, &AtomicUsize::new(0)).await?;
        Ok(found.session)
    }

    /// A trusted entry for `s` that knows the credential [`lookup`] presents, as a lookup
    /// while subscribed caches it.
    fn entry(cache: &SessionCache, s: &Session) -> Arc<Authenticated> {
        let seen = Seen {
            key: key_of(&s.session_id),
            until: now_unix() + 3600,
        };
        let flush = cache.state.flushes.load(Ordering::SeqCst);
        Arc::new(Authenticated::new(
            s.clone(),
            Some(seen),
            flush,
            Instant::now(),
        ))
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
            user_gen: 0,
            business_gen: 0,
            user_agent: None,
            ip: None,
        }
    }

    fn setup() -> Result<(Arc<CountingStore>, SessionCache), prometheus::Error> {
        let store = Arc::new(CountingStore {
            inner: MemoryStore::new(),
            gets: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(50),
            fail: Default::default(),
            sink: Default::default(),
        });
        let cache = SessionCache::new(
            store.clone(),
            1000,
            Duration::from_secs(60),
            Duration::from_secs(2),
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
        // Through two credentials of the session (around a refresh, a client holds two).
        for i in 0..100 {
            let cache = cache.clone();
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let checks = AtomicUsize::new(0);
                let key = key_of(if i % 2 == 0 { "old token" } else { "new token" });
                through(&cache, &key, &s, &checks)
                    .await
                    .map(|s| s.user_id.clone())
            }));
        }
        for t in tasks {
            assert_eq!(t.await?.map_err(|e| e.to_string())?, "u");
        }
        assert_eq!(store.gets.load(Ordering::SeqCst), 1);
        // Both credentials are remembered in the one entry.
        let checks = AtomicUsize::new(0);
        for token in ["old token", "new token"] {
            through(&cache, &key_of(token), &s, &checks).await?;
        }
        assert_eq!(checks.load(Ordering::SeqCst), 0);
        Ok(())
    }

    /// A lookup through the credential `key` naming `s`, its check counted in `checks`.
    async fn through(
        cache: &SessionCache,
        key: &CredentialKey,
        s: &Session,
        checks: &AtomicUsize,
    ) -> Result<Arc<Authenticated>, LookupError> {
        let id = &s.session_id;
        Ok(present(cache, id, key, id, checks).await?.session)
    }

    #[tokio::test]
    async fn a_credential_is_checked_once_whatever_the_cache_trusts(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        let checks = AtomicUsize::new(0);
        let key = key_of("a token");
        through(&cache, &key, &s, &checks).await?;
        through(&cache, &key, &s, &checks).await?;
        assert_eq!(store.gets.load(Ordering::SeqCst), 1, "the second is a hit");
        // Deaf to events: the session comes from the store every time, the credential is
        // still remembered.
        let sink = store.sink().ok_or("no sink")?;
        sink.subscribed(false);
        through(&cache, &key, &s, &checks).await?;
        through(&cache, &key, &s, &checks).await?;
        assert_eq!(store.gets.load(Ordering::SeqCst), 3);
        assert_eq!(checks.load(Ordering::SeqCst), 1);
        // A credential first seen while deaf is checked once too.
        let other = key_of("another token");
        through(&cache, &other, &s, &checks).await?;
        through(&cache, &other, &s, &checks).await?;
        assert_eq!(checks.load(Ordering::SeqCst), 2);
        assert_eq!(store.gets.load(Ordering::SeqCst), 5);
        Ok(())
    }

    /// Entries loaded while the cache was bypassed must not answer for their session once it
    /// is trusted again: a revocation in the bypass could not be remembered.
    #[tokio::test]
    async fn entries_loaded_in_a_bypass_do_not_answer_after_it(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        let checks = AtomicUsize::new(0);
        let key = key_of("a token");
        cache.state.overflowed();
        through(&cache, &key, &s, &checks).await?;
        assert_eq!(store.gets.load(Ordering::SeqCst), 1);
        // The bypass ends; the session was deleted meanwhile and no tombstone says so.
        cache.state.bypass_until_ms.store(0, Ordering::SeqCst);
        store.inner.delete(&s.session_id).await?;
        assert!(matches!(
            through(&cache, &key, &s, &checks).await,
            Err(LookupError::NotFound)
        ));
        assert_eq!(store.gets.load(Ordering::SeqCst), 2);
        assert_eq!(checks.load(Ordering::SeqCst), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_revocation_refuses_every_credential_of_the_session(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        let checks = AtomicUsize::new(0);
        let keys = [key_of("before a refresh"), key_of("after it")];
        for key in &keys {
            through(&cache, key, &s, &checks).await?;
        }
        assert!(cache.revoke(&s.session_id).await?);
        for key in &keys {
            assert!(matches!(
                through(&cache, key, &s, &checks).await,
                Err(LookupError::NotFound)
            ));
        }
        Ok(())
    }

    #[tokio::test]
    async fn an_expired_credential_is_checked_again() -> Result<(), Box<dyn std::error::Error>> {
        let (_, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        let key = key_of("a token");
        let seen = Seen {
            key,
            until: now_unix(),
        };
        let flush = cache.state.flushes.load(Ordering::SeqCst);
        let expired = Arc::new(Authenticated::new(
            s.clone(),
            Some(seen),
            flush,
            Instant::now(),
        ));
        cache
            .state
            .cache
            .insert(s.session_id.clone(), expired)
            .await;
        let refused = cache
            .authenticate(Some(&s.session_id), &key, || {
                Err::<Credential, _>("expired")
            })
            .await;
        assert!(matches!(refused, Err(Refused::Credential("expired"))));
        Ok(())
    }

    /// The stale window serves cached sessions, whichever credential reaches them: a client
    /// that refreshed just before the outage presents a token this replica has not seen.
    #[tokio::test]
    async fn degraded_mode_serves_a_cached_session_to_its_other_credential(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?; // stale window: 2 s
        let s = session(600);
        cache.insert(&s, None).await?;
        let checks = AtomicUsize::new(0);
        through(&cache, &key_of("before the refresh"), &s, &checks).await?;
        store.fail.store(true, Ordering::SeqCst);
        let sink = store.sink().ok_or("no sink")?;
        sink.store_reachable(false);
        through(&cache, &key_of("after the refresh"), &s, &checks).await?;
        through(&cache, &key_of("after the refresh"), &s, &checks).await?;
        assert_eq!(
            checks.load(Ordering::SeqCst),
            2,
            "checked once, then remembered"
        );
        Ok(())
    }

    /// Entries loaded while the cache was not trusted are never served stale.
    #[tokio::test]
    async fn degraded_mode_serves_only_entries_loaded_while_trusted(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        let checks = AtomicUsize::new(0);
        let key = key_of("a token");
        cache.state.overflowed();
        through(&cache, &key, &s, &checks).await?;
        cache.state.bypass_until_ms.store(0, Ordering::SeqCst);
        store.fail.store(true, Ordering::SeqCst);
        store.sink().ok_or("no sink")?.store_reachable(false);
        assert!(matches!(
            through(&cache, &key, &s, &checks).await,
            Err(LookupError::Store(_))
        ));
        Ok(())
    }

    /// Before: the degraded branch served stale entries whatever happened to the event
    /// subscription, so a revocation missed while deaf (the subscription dropped alone, the
    /// store died later) was served for the whole stale window.
    #[tokio::test]
    async fn degraded_mode_serves_nothing_stale_after_a_deaf_spell(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        lookup(&cache, &s.session_id).await?;
        let sink = store.sink().ok_or("no sink")?;
        sink.subscribed(false);
        store.fail.store(true, Ordering::SeqCst);
        sink.store_reachable(false);
        // The subscription dropped well before the outage began (the store's first failure):
        // events published between the two were missed.
        cache.state.unsubscribed_at_ms.store(1, Ordering::SeqCst);
        cache
            .state
            .down_since_ms
            .store(1 + 10_000, Ordering::SeqCst);
        assert!(cache.health().degraded_for.is_some());
        assert!(!cache.state.dropped_with_outage());
        assert!(matches!(
            lookup(&cache, &s.session_id).await,
            Err(LookupError::Store(_))
        ));
        // The same outage with the subscription dropped at its start: served.
        cache
            .state
            .unsubscribed_at_ms
            .store(1 + 9_000, Ordering::SeqCst);
        assert!(lookup(&cache, &s.session_id).await.is_ok());
        Ok(())
    }

    #[tokio::test]
    async fn the_session_is_the_checked_credentials_never_the_hints(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_, cache) = setup()?;
        let (a, mut b) = (session(600), session(600));
        b.user_id = "someone else".into();
        for s in [&a, &b] {
            cache.insert(s, None).await?;
            lookup(&cache, &s.session_id).await?;
        }
        // A's token whose payload claims B's session (a hint is read unchecked).
        let found = present(
            &cache,
            &b.session_id,
            &key_of("a token of a"),
            &a.session_id,
            &AtomicUsize::new(0),
        )
        .await?;
        assert_eq!(found.session.session_id, a.session_id);
        assert_eq!(found.session.user_id, "u");
        Ok(())
    }

    /// The tombstone, not the eviction alone: an entry a racing load puts back after the
    /// revocation is refused.
    #[tokio::test]
    async fn a_tombstone_refuses_an_entry_put_back_after_the_revocation(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        lookup(&cache, &s.session_id).await?;
        assert!(cache.revoke(&s.session_id).await?);
        cache
            .state
            .cache
            .insert(s.session_id.clone(), entry(&cache, &s))
            .await;
        assert!(matches!(
            lookup(&cache, &s.session_id).await,
            Err(LookupError::NotFound)
        ));
        Ok(())
    }

    /// `last_seen_at` is written once a minute per session, however its credentials churn
    /// the entry (three live tokens take turns in two slots: each use rewrites the entry).
    #[tokio::test]
    async fn a_use_is_recorded_once_a_minute_per_session() -> Result<(), Box<dyn std::error::Error>>
    {
        let (_, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        let keys = [key_of("t1"), key_of("t2"), key_of("t3")];
        let mut recorded = 0;
        for round in 0..4 {
            for key in &keys {
                let found = present(
                    &cache,
                    &s.session_id,
                    key,
                    &s.session_id,
                    &AtomicUsize::new(0),
                )
                .await?;
                recorded += usize::from(found.record_use);
                assert!(round > 0 || recorded == 1);
            }
        }
        assert_eq!(recorded, 1);
        Ok(())
    }

    #[test]
    fn an_entry_expires_the_ttl_after_its_load_not_after_its_last_rewrite() {
        let expiry = EntryExpiry {
            max: Duration::from_secs(60),
        };
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(50))
            .unwrap_or_else(Instant::now);
        let e = Authenticated::new(session(600), None, 0, long_ago);
        let rewritten = Arc::new(e.remembering(None, None, 0, now_unix()));
        let left = expiry.expire_after_create(&String::new(), &rewritten, Instant::now());
        assert!(
            left.is_some_and(|d| d <= Duration::from_secs(10)),
            "{left:?}"
        );
        let reloaded =
            Arc::new(e.remembering(Some((session(600), Instant::now())), None, 0, now_unix()));
        let left = expiry.expire_after_create(&String::new(), &reloaded, Instant::now());
        assert!(
            left.is_some_and(|d| d > Duration::from_secs(50)),
            "{left:?}"
        );
    }

    /// An entry loaded before a flush and put back after it (a racing load, a credential
    /// remembered) does not answer for its session: events were missed before the flush.
    #[tokio::test]
    async fn an_entry_from_before_a_flush_is_loaded_again() -> Result<(), Box<dyn std::error::Error>>
    {
        let (store, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        let before = lookup(&cache, &s.session_id).await?;
        let sink = store.sink().ok_or("no sink")?;
        sink.subscribed(false);
        sink.subscribed(true);
        cache.state.cache.insert(s.session_id.clone(), before).await;
        let gets = store.gets.load(Ordering::SeqCst);
        lookup(&cache, &s.session_id).await?;
        assert_eq!(store.gets.load(Ordering::SeqCst), gets + 1);
        lookup(&cache, &s.session_id).await?;
        assert_eq!(store.gets.load(Ordering::SeqCst), gets + 1, "then trusted");
        Ok(())
    }

    /// A miss that joins a load begun before a flush gets that load's copy; it must load
    /// again rather than answer with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_miss_joining_a_load_from_before_a_flush_loads_again(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?;
        let cache = Arc::new(cache);
        let s = session(600);
        cache.insert(&s, None).await?;
        let sink = store.sink().ok_or("no sink")?;
        let first = {
            let (cache, id) = (cache.clone(), s.session_id.clone());
            tokio::spawn(async move { lookup(&cache, &id).await.map(|_| ()) })
        };
        // The first load is under way (the store answers after 50 ms): events are missed
        // and the cache flushed meanwhile.
        tokio::time::sleep(Duration::from_millis(15)).await;
        sink.subscribed(false);
        sink.subscribed(true);
        lookup(&cache, &s.session_id).await?;
        first.await?.map_err(|e| e.to_string())?;
        assert_eq!(
            store.gets.load(Ordering::SeqCst),
            2,
            "loaded again after the flush"
        );
        Ok(())
    }

    /// Requests queued on an entry to trust again do not each wait out a store that has
    /// just failed the first of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_queued_behind_a_failed_load_fail_at_once(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?;
        let cache = Arc::new(cache);
        let s = session(600);
        cache.insert(&s, None).await?;
        let key = key_of(&s.session_id);
        let seen = Seen {
            key,
            until: now_unix() + 3600,
        };
        let untrusted = Authenticated::new(s.clone(), Some(seen), UNTRUSTED, Instant::now());
        cache
            .state
            .cache
            .insert(s.session_id.clone(), Arc::new(untrusted))
            .await;
        store.fail.store(true, Ordering::SeqCst);
        // Long enough for all five to queue before the first fails.
        store.delay_ms.store(1000, Ordering::SeqCst);
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (cache, id) = (cache.clone(), s.session_id.clone());
            tasks.push(tokio::spawn(async move {
                matches!(lookup(&cache, &id).await, Err(LookupError::Store(_)))
            }));
        }
        for t in tasks {
            assert!(t.await?);
        }
        assert_eq!(store.gets.load(Ordering::SeqCst), 1);
        Ok(())
    }

    #[tokio::test]
    async fn revoke_takes_effect_on_a_cached_session() -> Result<(), Box<dyn std::error::Error>> {
        let (_, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        lookup(&cache, &s.session_id).await?;
        assert!(cache.revoke(&s.session_id).await?);
        assert!(matches!(
            lookup(&cache, &s.session_id).await,
            Err(LookupError::NotFound)
        ));
        Ok(())
    }

    /// Before: tombstones and floors lived in caches bounded by `max_entries`, so a burst of
    /// other revocations evicted them and a racing load brought a revoked session back.
    #[tokio::test]
    async fn revocations_past_the_guard_cap_bypass_the_cache(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let store = Arc::new(MemoryStore::new());
        let cache = SessionCache::new(
            store.clone(),
            2,
            Duration::from_secs(60),
            Duration::from_secs(2),
            Arc::new(Metrics::new()?),
        );
        let a = session(600);
        cache.insert(&a, None).await?;
        lookup(&cache, &a.session_id).await?;
        assert!(cache.revoke(&a.session_id).await?);
        for _ in 0..50 {
            cache.revoke(&new_session_id()).await?;
            cache.state.revoked.run_pending_tasks().await;
        }
        // A lookup that raced the revocation inserts its (stale) copy afterwards.
        cache
            .state
            .cache
            .insert(a.session_id.clone(), entry(&cache, &a))
            .await;
        assert!(matches!(
            lookup(&cache, &a.session_id).await,
            Err(LookupError::NotFound)
        ));
        assert!(cache.state.bypassed());
        assert!(cache.state.revoked.entry_count() <= 8 + 1);

        // Floors: the same for revoke-all scopes.
        let (_, cache) = setup()?;
        let b = session(600);
        cache.insert(&b, None).await?;
        lookup(&cache, &b.session_id).await?;
        cache.revoke_scope(&user_scope("u")).await?;
        for i in 0..5_000 {
            cache
                .revoke_scope(&user_scope(&format!("other{i}")))
                .await?;
            if i % 100 == 0 {
                cache.state.floors.run_pending_tasks();
            }
        }
        cache
            .state
            .cache
            .insert(b.session_id.clone(), entry(&cache, &b))
            .await;
        assert!(lookup(&cache, &b.session_id).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn store_error_is_not_cached_and_not_a_miss() -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        store.fail.store(true, Ordering::SeqCst);
        assert!(matches!(
            lookup(&cache, &s.session_id).await,
            Err(LookupError::Store(_))
        ));
        store.fail.store(false, Ordering::SeqCst);
        assert!(lookup(&cache, &s.session_id).await.is_ok());
        Ok(())
    }

    #[tokio::test]
    async fn expired_session_is_refused_even_if_cached() -> Result<(), Box<dyn std::error::Error>> {
        let (_, cache) = setup()?;
        let mut s = session(600);
        cache.insert(&s, None).await?;
        lookup(&cache, &s.session_id).await?;
        // Simulate time passing by caching an already-expired copy directly.
        s.expires_at = now_unix() - 1;
        cache
            .state
            .cache
            .insert(s.session_id.clone(), entry(&cache, &s))
            .await;
        assert!(lookup(&cache, &s.session_id).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn revoke_all_refuses_cached_sessions_of_the_scope_only(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_, cache) = setup()?;
        let a = session(600);
        let mut other_user = session(600);
        other_user.user_id = "someone-else".into();
        for s in [&a, &other_user] {
            cache.insert(s, None).await?;
            lookup(&cache, &s.session_id).await?;
        }
        cache.revoke_scope(&user_scope("u")).await?;
        assert!(matches!(
            lookup(&cache, &a.session_id).await,
            Err(LookupError::NotFound)
        ));
        assert!(lookup(&cache, &other_user.session_id).await.is_ok());
        // A session created after the revoke-all carries the new generation.
        let mut fresh = session(600);
        fresh.user_gen = cache.generations("u", "b").await?.0;
        cache.insert(&fresh, None).await?;
        assert!(lookup(&cache, &fresh.session_id).await.is_ok());
        // And the business scope covers every user of it.
        cache.revoke_scope(&business_scope("b")).await?;
        assert!(lookup(&cache, &fresh.session_id).await.is_err());
        assert!(lookup(&cache, &other_user.session_id).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn floor_events_from_other_replicas_apply_here() -> Result<(), Box<dyn std::error::Error>>
    {
        let (store, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        lookup(&cache, &s.session_id).await?;
        // Another replica bumped the generation and published it.
        let generation = store.inner.bump_generation(&user_scope("u")).await?;
        let sink = store.sink().ok_or("no sink")?;
        let payload = serde_json::to_vec(&Event::Floor {
            scope: user_scope("u"),
            generation,
        })?;
        sink.event(&payload).await;
        assert!(lookup(&cache, &s.session_id).await.is_err());
        // A revocation event for one session (of another user: "u" is revoked wholesale).
        let mut t = session(600);
        t.user_id = "v".into();
        cache.insert(&t, None).await?;
        lookup(&cache, &t.session_id).await?;
        sink.event(&serde_json::to_vec(&Event::Revoked {
            sid: t.session_id.clone(),
        })?)
        .await;
        assert!(lookup(&cache, &t.session_id).await.is_err());
        sink.event(b"not json").await;
        Ok(())
    }

    #[tokio::test]
    async fn unsubscribed_replica_bypasses_its_cache_and_flushes_on_resubscribe(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?;
        let s = session(600);
        cache.insert(&s, None).await?;
        lookup(&cache, &s.session_id).await?;
        let gets = store.gets.load(Ordering::SeqCst);
        let sink = store.sink().ok_or("no sink")?;
        sink.subscribed(false);
        lookup(&cache, &s.session_id).await?;
        lookup(&cache, &s.session_id).await?;
        assert_eq!(
            store.gets.load(Ordering::SeqCst),
            gets + 2,
            "every lookup asks the store"
        );
        // Revoked elsewhere while we were deaf: the store says so at once.
        store.inner.delete(&s.session_id).await?;
        assert!(lookup(&cache, &s.session_id).await.is_err());
        sink.subscribed(true);
        assert_eq!(cache.state.cache.entry_count(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn degraded_mode_serves_cached_sessions_only_within_the_stale_window(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (store, cache) = setup()?; // stale window: 2 s
        let s = session(600);
        cache.insert(&s, None).await?;
        lookup(&cache, &s.session_id).await?;
        let uncached = session(600);
        store.inner.put(&uncached, None).await?;
        store.fail.store(true, Ordering::SeqCst);
        let sink = store.sink().ok_or("no sink")?;
        sink.store_reachable(false);
        assert!(cache.health().degraded_for.is_some());
        assert!(
            lookup(&cache, &s.session_id).await.is_ok(),
            "cached: served"
        );
        assert!(matches!(
            lookup(&cache, &uncached.session_id).await,
            Err(LookupError::Store(_))
        ));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(
            matches!(
                lookup(&cache, &s.session_id).await,
                Err(LookupError::Store(_))
            ),
            "past the window: 503"
        );
        store.fail.store(false, Ordering::SeqCst);
        sink.store_reachable(true);
        assert!(lookup(&cache, &s.session_id).await.is_ok());
        assert!(lookup(&cache, &uncached.session_id).await.is_ok());
        Ok(())
    }
}
