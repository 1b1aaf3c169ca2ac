//! Sessions: the common model, the store trait and its implementations, the cache, and the
//! one service every creation path (admin API now, dialects later) goes through.

pub mod cache;
pub mod directory;
pub mod memory;
pub mod model;
pub mod redis;
pub mod store;

use crate::auth::{Claims, KeySet};
use crate::error::GateError;
use cache::{LookupError, SessionCache};
use directory::Directory;
use model::{new_session_id, now_unix, random_token, sha256_hex, NewSession, Session};
use std::sync::Arc;

/// A session just created, with its access token.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The stored session.
    pub session: Session,
    /// Signed access token (a secret: never log it).
    pub access_token: String,
    /// Opaque refresh token, when one was asked for (a secret: never log it).
    pub refresh_token: Option<String>,
}

/// A token that already verified: its session id and expiry.
#[derive(Debug, Clone)]
struct Verified {
    sid: Arc<str>,
    exp: i64,
}

struct VerifiedExpiry {
    max: std::time::Duration,
}

impl moka::Expiry<String, Verified> for VerifiedExpiry {
    fn expire_after_create(
        &self,
        _: &String,
        v: &Verified,
        _: std::time::Instant,
    ) -> Option<std::time::Duration> {
        let left = u64::try_from(v.exp.saturating_sub(now_unix())).unwrap_or(0);
        Some(std::time::Duration::from_secs(left).min(self.max))
    }
}

/// Creates, looks up and revokes sessions; knows nothing of HTTP dialects.
pub struct Sessions {
    cache: SessionCache,
    directory: Directory,
    keys: Arc<KeySet>,
    /// Signature checks dominate the hot path, so a token that verified once is remembered
    /// (bounded, never past its `exp` or the cache TTL). Its session is still looked up on
    /// every request, so revocation is unaffected.
    verified: moka::future::Cache<String, Verified>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("cache", &self.cache)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Wires the cache and the key set together; `max_entries`/`ttl` bound the cache of
    /// verified tokens like the session cache.
    pub fn new(
        cache: SessionCache,
        keys: Arc<KeySet>,
        max_entries: u64,
        ttl: std::time::Duration,
    ) -> Self {
        let verified = moka::future::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(VerifiedExpiry { max: ttl })
            .build();
        Sessions {
            directory: Directory::new(cache.store().clone()),
            cache,
            keys,
            verified,
        }
    }

    /// The cache (and through it, the store).
    pub fn cache(&self) -> &SessionCache {
        &self.cache
    }

    /// Users, customers and device bindings, in the same store as the sessions.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// The key set.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Creates a session and its token. The token is signed before anything is stored, so a
    /// failure leaves nothing behind; a store failure is `StoreUnavailable`.
    pub async fn create(&self, new: NewSession) -> Result<Issued, GateError> {
        let now = now_unix();
        let ttl = i64::try_from(new.ttl_secs).map_err(|_| GateError::Internal)?;
        let refresh_token = new.with_refresh_token.then(random_token);
        let session = Session {
            session_id: new_session_id(),
            user_id: new.user_id,
            business_id: new.business_id,
            host_id: new.host_id,
            role: new.role,
            created_at: now,
            expires_at: now.saturating_add(ttl),
            source: new.source.to_string(),
            external_id: new.external_id,
            refresh_token_sha256: refresh_token.as_deref().map(sha256_hex),
        };
        let claims = Claims {
            iss: self.keys.issuer().to_string(),
            aud: self.keys.audience().to_string(),
            sub: session.user_id.clone(),
            sid: session.session_id.clone(),
            bid: session.business_id.clone(),
            hid: session.host_id.clone(),
            role: session.role.clone(),
            iat: now,
            nbf: now,
            exp: session.expires_at,
        };
        let access_token = self.keys.sign(&claims).map_err(|_| GateError::Internal)?;
        self.cache
            .insert(&session)
            .await
            .map_err(|_| GateError::StoreUnavailable)?;
        Ok(Issued {
            session,
            access_token,
            refresh_token,
        })
    }

    /// Verifies an access token and returns its live session.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Session>, GateError> {
        let now = now_unix();
        let sid = match self.verified.get(token).await {
            Some(v) if v.exp > now => v.sid,
            _ => {
                let claims = self.keys.verify(token).map_err(GateError::InvalidToken)?;
                let sid: Arc<str> = claims.sid.into();
                self.verified
                    .insert(
                        token.to_string(),
                        Verified {
                            sid: sid.clone(),
                            exp: claims.exp,
                        },
                    )
                    .await;
                sid
            }
        };
        self.cache.lookup(&sid).await.map_err(|e| match e {
            LookupError::NotFound => GateError::SessionNotFound,
            LookupError::Expired => GateError::SessionExpired,
            LookupError::Store(_) => GateError::StoreUnavailable,
        })
    }

    /// Revokes a session everywhere this replica can see; `Ok(false)` if there was none.
    pub async fn revoke(&self, session_id: &str) -> Result<bool, GateError> {
        self.cache
            .revoke(session_id)
            .await
            .map_err(|_| GateError::StoreUnavailable)
    }
}
