//! Sessions: the common model, the store traits and their implementations, the cache, and
//! the one service every creation path (the admin API and the three dialects) goes through.

pub mod cache;
pub mod directory;
pub mod memory;
pub mod model;
pub mod redis;
pub mod redis_conn;
pub mod store;
pub mod window;

use crate::auth::{Claims, KeySet};
use crate::error::GateError;
pub use cache::Authenticated;
use cache::{Credential, LookupError, Refused, SessionCache};
use directory::Directory;
use model::{
    is_valid_session_id, new_session_id, now_unix, random_token, sha256_hex, NewSession, Session,
    SESSION_ID_LEN,
};
use std::sync::Arc;
use store::{RecordStore, Rotation, StoreError, UserIndex};

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

/// What a refresh returns.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// New access token (a secret).
    pub access_token: String,
    /// The successor refresh token (a secret); the presented one is now spent.
    pub refresh_token: String,
    /// The access token's `exp`.
    pub expires_at: i64,
}

/// A refresh token: the session id, a dot, 256 random bits. The id locates the session's
/// refresh state without an index; the random part is what makes it unguessable.
fn refresh_token_for(session_id: &str) -> String {
    format!("{session_id}.{}", random_token())
}

/// The pad that seals a successor of `presented`: SHA-256 of a random nonce and the
/// presented token under a label of their own. The store keeps the presented token only as
/// its plain SHA-256, which does not yield this, so what the store holds of a successor is
/// useless without the presented token itself (whose holder may rotate it anyway). The
/// nonce makes every pad new, also when a store that lost a rotation lets the same token be
/// rotated twice.
fn successor_pad(nonce: &[u8; 16], presented: &str) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"sessiongate refresh successor v2\n");
    h.update(nonce);
    h.update(presented.as_bytes());
    h.finalize().into()
}

/// A successor for `presented` (a well-formed refresh token of `session_id`): the token,
/// and its secret sealed for the store (hex of nonce, then of secret XOR pad).
fn successor_of(session_id: &str, presented: &str) -> (String, String) {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut secret);
    rand::rng().fill_bytes(&mut nonce);
    let pad = successor_pad(&nonce, presented);
    let mut sealed = nonce.to_vec();
    sealed.extend(secret.iter().zip(pad).map(|(s, p)| s ^ p));
    (refresh_token_with(session_id, &secret), hex::encode(sealed))
}

/// The refresh token of `session_id` whose secret is `secret` (as [`refresh_token_for`]
/// makes them: 32 bytes, base64url).
fn refresh_token_with(session_id: &str, secret: &[u8; 32]) -> String {
    use base64::Engine;
    format!(
        "{session_id}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    )
}

/// The successor [`successor_of`] sealed for `presented`; `None` if `sealed` is not one.
fn unseal_successor(session_id: &str, presented: &str, sealed: &str) -> Option<String> {
    let bytes: [u8; 48] = hex::decode(sealed).ok()?.try_into().ok()?;
    let (nonce, secret) = bytes.split_at(16);
    let pad = successor_pad(nonce.try_into().ok()?, presented);
    let mut out = [0u8; 32];
    for (o, (s, p)) in out.iter_mut().zip(secret.iter().zip(pad)) {
        *o = s ^ p;
    }
    Some(refresh_token_with(session_id, &out))
}

/// The session id of a well-formed refresh token.
fn session_of_refresh_token(token: &str) -> Option<&str> {
    let (sid, secret) = token.split_once('.')?;
    (is_valid_session_id(sid) && is_valid_session_id(secret)).then_some(sid)
}

/// What a refresh whose rotation the store did not answer tells the client.
const REFRESH_UNKNOWN: &str =
    "the refresh may or may not have happened; retry with the same refresh token";
/// The same, when a retry would be reuse (`tokens.refresh_retry_grace_seconds = 0`).
const REFRESH_UNKNOWN_NO_GRACE: &str = "the refresh may or may not have happened, and \
     presenting the same refresh token again would be reuse (no retry grace is configured): \
     keep using the access token until it expires, then sign in again";
/// What a logout or revocation the store did not answer tells the client.
const REVOCATION_UNKNOWN: &str =
    "the revocation may or may not have happened; retry the same request";

/// The hot cache's key for a token: its SHA-256 (see [`cache::CredentialKey`]).
fn token_digest(token: &str) -> cache::CredentialKey {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// What a session the cache could not hand out means to the client.
fn refusal(e: LookupError) -> GateError {
    match e {
        LookupError::NotFound => GateError::SessionNotFound,
        LookupError::Expired => GateError::SessionExpired,
        LookupError::Store(_) => GateError::StoreUnavailable,
    }
}

/// A session id as a token claims it, read without checking the token.
#[derive(Debug, Clone, Copy)]
pub struct ClaimedSession([u8; SESSION_ID_LEN]);

impl ClaimedSession {
    /// The id (43 URL-safe characters).
    pub fn as_str(&self) -> &str {
        // Built only from bytes checked to be ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The session a token claims, read from its payload without checking anything: only a hint
/// for finding the session's cache entry, which says whether this very token was checked
/// before (by its digest). A wrong or forged hint finds no such entry and the token is
/// checked in full. `None` when the payload is not one the gateway would sign.
pub fn claimed_session(token: &str) -> Option<ClaimedSession> {
    use base64::Engine as _;
    const KEY: &[u8] = b"\"sid\":\"";
    // Tokens the gateway signs open with `{"sid":"<id>"`, and this is read on every request:
    // only the base64 groups that hold it are decoded (72 characters, 54 bytes).
    const OPENING: usize = (1 + KEY.len() + SESSION_ID_LEN + 1).div_ceil(3) * 3;
    let payload = token.split('.').nth(1)?;
    let mut head = [0u8; OPENING];
    let opening = payload.get(..OPENING / 3 * 4).and_then(|p| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(p, &mut head)
            .ok()
    });
    if opening == Some(OPENING)
        && head.first() == Some(&b'{')
        && head.get(1..=KEY.len()) == Some(KEY)
    {
        return session_at(&head, 1 + KEY.len());
    }
    // Tokens signed before `sid` came first: the whole payload. Claims the gateway signs are
    // a few hundred bytes; long ids still fit.
    const MAX_PAYLOAD: usize = 3072;
    if payload.len() > MAX_PAYLOAD * 4 / 3 {
        return None;
    }
    let mut buf = [0u8; MAX_PAYLOAD];
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_slice(payload, &mut buf)
        .ok()?;
    let json = buf.get(..n)?;
    // JSON escapes every quote inside a string, so this is the `sid` member's key whatever
    // the other claims hold (the gateway's claims have one; a payload with two fails the
    // check, which refuses duplicate members).
    let at = memchr::memmem::find(json, KEY)? + KEY.len();
    session_at(json, at)
}

/// The session id at `at` in a claims payload, if one is there, closed by a quote.
fn session_at(json: &[u8], at: usize) -> Option<ClaimedSession> {
    let id = json.get(at..at + SESSION_ID_LEN)?;
    let valid = std::str::from_utf8(id).is_ok_and(is_valid_session_id);
    if !valid || json.get(at + SESSION_ID_LEN) != Some(&b'"') {
        return None;
    }
    let mut out = [0u8; SESSION_ID_LEN];
    out.copy_from_slice(id);
    Some(ClaimedSession(out))
}

/// Creates, looks up and revokes sessions; knows nothing of HTTP dialects.
pub struct Sessions {
    cache: SessionCache,
    directory: Directory,
    keys: Arc<KeySet>,
    access_ttl: Option<std::time::Duration>,
    /// Each user's sessions.
    index: Arc<dyn UserIndex>,
    /// `last_seen_at` writes in flight.
    touching: Arc<std::sync::atomic::AtomicUsize>,
    /// How long a spent refresh token, presented again, gets its successor back
    /// (`tokens.refresh_retry_grace_seconds`).
    refresh_grace: std::time::Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("cache", &self.cache)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// Most `last_seen_at` writes in flight at once.
const MAX_TOUCHING: usize = 1024;

/// A session in its user's list.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The session.
    pub session: Arc<Session>,
    /// When it was last used (unix seconds, to the minute), if since its creation.
    pub last_seen_at: Option<i64>,
}

impl Sessions {
    /// Wires the cache, the directory's records (the same backend as the cache's store) and
    /// the key set together.
    pub fn new(
        cache: SessionCache,
        records: Arc<dyn RecordStore>,
        index: Arc<dyn UserIndex>,
        keys: Arc<KeySet>,
        access_ttl: Option<std::time::Duration>,
    ) -> Self {
        Sessions {
            directory: Directory::new(records),
            index,
            touching: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            cache,
            keys,
            access_ttl,
            refresh_grace: std::time::Duration::ZERO,
        }
    }

    /// The same, with a retry grace for refreshes: a refresh token presented again within
    /// `grace` of its rotation gets the successor issued for it, not a revoked session.
    pub fn with_refresh_retry_grace(mut self, grace: std::time::Duration) -> Self {
        self.refresh_grace = grace;
        self
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

    /// Creates a session and its access token (and refresh token, when asked for). Tokens
    /// are signed before anything is stored, so a failure leaves nothing behind; a store
    /// failure is `StoreUnavailable`.
    pub async fn create(&self, new: NewSession) -> Result<Issued, GateError> {
        let now = now_unix();
        let ttl = i64::try_from(new.ttl_secs).map_err(|_| GateError::Internal)?;
        // A session belongs to the current generation of its user and business: a later
        // revoke-all of either raises it past this one.
        let (user_gen, business_gen) = self
            .cache
            .generations(&new.user_id, &new.business_id)
            .await
            .map_err(|_| GateError::StoreUnavailable)?;
        let session = Session {
            user_agent: new.user_agent,
            ip: new.ip.map(model::coarse_ip),
            session_id: new_session_id(),
            user_id: new.user_id,
            business_id: new.business_id,
            host_id: new.host_id,
            role: new.role,
            created_at: now,
            expires_at: now.saturating_add(ttl),
            source: new.source.to_string(),
            external_id: new.external_id,
            user_gen,
            business_gen,
        };
        let refresh_token = new
            .with_refresh_token
            .then(|| refresh_token_for(&session.session_id));
        let (access_token, _) = self.sign_access(&session, now)?;
        // The user's index first: a session never exists unlisted (one that fails to be
        // stored after this leaves an entry the reader filters out).
        self.index
            .index_add(&session.user_id, &session.session_id, session.expires_at)
            .await
            .map_err(|_| GateError::StoreUnavailable)?;
        self.cache
            .insert(
                &session,
                refresh_token.as_deref().map(sha256_hex).as_deref(),
            )
            .await
            .map_err(|_| GateError::StoreUnavailable)?;
        Ok(Issued {
            session,
            access_token,
            refresh_token,
        })
    }

    /// An access token for `session`: it expires after `tokens.access_token_ttl_seconds`,
    /// never after the session. Returns the token and its `exp`.
    fn sign_access(&self, session: &Session, now: i64) -> Result<(String, i64), GateError> {
        let exp = match self.access_ttl {
            Some(ttl) => now
                .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
                .min(session.expires_at),
            None => session.expires_at,
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
            exp,
        };
        let token = self.keys.sign(&claims).map_err(|_| GateError::Internal)?;
        Ok((token, exp))
    }

    /// What a refresh token is, changing nothing: its session id, and whether it is the
    /// session's current token (`Rotated`: rotating it would succeed) or a spent one
    /// (`Reused`: [`Sessions::refresh`] will revoke the session). Anything else is
    /// `InvalidRefreshToken`: a guess at the secret of a known session id.
    pub async fn verify_refresh<'t>(
        &self,
        refresh_token: &'t str,
    ) -> Result<(&'t str, Rotation), GateError> {
        let sid = session_of_refresh_token(refresh_token).ok_or(GateError::InvalidRefreshToken)?;
        match self
            .cache
            .peek_refresh(sid, &sha256_hex(refresh_token))
            .await
            .map_err(|_| GateError::StoreUnavailable)?
        {
            Rotation::Unknown => Err(GateError::InvalidRefreshToken),
            found => Ok((sid, found)),
        }
    }

    /// Redeems a refresh token: a new access token and a new refresh token (rotation). A
    /// token that was already redeemed is reuse: the whole session is revoked and every
    /// token of it stops working. Of concurrent redemptions of one token exactly one
    /// rotates; the others, within the retry grace, get the same successor (a client that
    /// lost the answer retries), and after it are reuse.
    ///
    /// A store that does not answer leaves the outcome unknown (the rotation may still run
    /// when it recovers): [`GateError::OutcomeUnknown`], and a retry with the same token
    /// within the grace gets the successor either way.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Refreshed, GateError> {
        let sid = session_of_refresh_token(refresh_token).ok_or(GateError::InvalidRefreshToken)?;
        let (next, sealed) = successor_of(sid, refresh_token);
        let next_sha256 = sha256_hex(&next);
        let successor = store::Successor {
            sha256: &next_sha256,
            sealed: &sealed,
            grace: self.refresh_grace,
        };
        let unknown = GateError::OutcomeUnknown(if self.refresh_grace.is_zero() {
            REFRESH_UNKNOWN_NO_GRACE
        } else {
            REFRESH_UNKNOWN
        });
        let rotation = match self
            .cache
            .rotate_refresh(sid, &sha256_hex(refresh_token), &successor)
            .await
        {
            Ok(r) => r,
            Err(StoreError::Corrupt(e)) => {
                tracing::error!(error = %e, "refresh: unreadable answer from the store");
                return Err(GateError::Internal);
            }
            Err(e) => {
                tracing::warn!(error = %e, "refresh: the store did not answer the rotation");
                return Err(unknown);
            }
        };
        let next = match rotation {
            Rotation::Rotated => next,
            Rotation::Retried(sealed) => {
                unseal_successor(sid, refresh_token, &sealed).ok_or(GateError::Internal)?
            }
            Rotation::Reused => {
                // Said before the revocation, which may fail: a detected reuse is never
                // silent.
                tracing::warn!("refresh token reuse: revoking the session");
                self.revoke(sid).await?;
                return Err(GateError::RefreshTokenReused);
            }
            Rotation::Unknown => return Err(GateError::InvalidRefreshToken),
        };
        // Rotated (or retried): from here on a failure must not read as "nothing changed";
        // a retry with the same token gets this successor.
        let session = match self.cache.get_uncached(sid).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(GateError::InvalidRefreshToken),
            Err(e) => {
                tracing::warn!(error = %e, "refresh: rotated, but the session could not be read");
                return Err(unknown);
            }
        };
        let now = now_unix();
        if session.is_expired_at(now) {
            return Err(GateError::InvalidRefreshToken);
        }
        let (access_token, exp) = self.sign_access(&session, now)?;
        Ok(Refreshed {
            access_token,
            refresh_token: next,
            expires_at: exp,
        })
    }

    /// Verifies an access token and returns its live session. Signature checks dominate
    /// the hot path, so the cache remembers a token that checked out (by its digest, in its
    /// session's entry, never past the token's `exp`); its session is still checked against
    /// revocations on every request.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Authenticated>, GateError> {
        let check = || {
            // Until the leeway is over, as the check itself would accept it.
            self.keys
                .verify_until(token)
                .map(|(claims, refused_from)| Credential {
                    session_id: claims.sid,
                    expires_at: refused_from,
                })
        };
        let hint = claimed_session(token);
        let found = self
            .cache
            .authenticate(
                hint.as_ref().map(|h| h.as_str()),
                &token_digest(token),
                check,
            )
            .await
            .map_err(|e| match e {
                Refused::Credential(e) => GateError::InvalidToken(e),
                Refused::Session(e) => refusal(e),
            })?;
        if found.record_use {
            self.touch(&found.session, now_unix());
        }
        Ok(found.session)
    }

    /// Records that a session was used (the cache says when: at most once a minute per
    /// entry), in a task of its own: the request never waits for it, and a failure only
    /// leaves `last_seen_at` older.
    fn touch(&self, through: &Authenticated, now: i64) {
        use std::sync::atomic::Ordering;
        // Bounded: with the store slow, writes in flight would pile up; a skipped one only
        // leaves `last_seen_at` a minute older.
        let in_flight = self.touching.clone();
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_TOUCHING {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let directory = self.directory.clone();
        let (sid, ttl) = (through.session_id.clone(), through.remaining_secs(now));
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = directory
                        .set_last_seen(&sid, now, std::time::Duration::from_secs(ttl))
                        .await;
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                });
            }
            Err(_) => {
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// The session `session_id` if it is live (not revoked, not expired), from the cache or
    /// the store.
    pub async fn live(&self, session_id: &str) -> Result<Option<Arc<Session>>, GateError> {
        match self.cache.live(session_id).await {
            Ok(s) => Ok(Some(s)),
            Err(LookupError::NotFound | LookupError::Expired) => Ok(None),
            Err(LookupError::Store(_)) => Err(GateError::StoreUnavailable),
        }
    }

    /// Ends `session_id` through its user's index: revoked everywhere, and its entry gone.
    pub async fn end_listed(&self, session: &Session) -> Result<bool, GateError> {
        let ended = self.revoke(&session.session_id).await?;
        // Best effort: an entry left behind is skipped (its session is gone) until it expires.
        let _ = self
            .index
            .index_remove(&session.user_id, std::slice::from_ref(&session.session_id))
            .await;
        Ok(ended)
    }

    /// The live sessions of `user_id` (every business), newest first, each with when it was
    /// last seen (at most [`store::INDEX_CAP`] of them: the ones expiring last).
    pub async fn list_user(&self, user_id: &str) -> Result<Vec<Listed>, GateError> {
        let now = now_unix();
        let ids = self
            .index
            .index_list(user_id, now)
            .await
            .map_err(|_| GateError::StoreUnavailable)?;
        let mut live = Vec::with_capacity(ids.len());
        for id in ids {
            // An entry without a session is skipped, never pruned here: it may belong to a
            // session being created right now (the entry is written first). Entries leave
            // the index when they expire, or when the session is ended through it.
            match self.live(&id).await? {
                Some(s) if s.user_id == user_id => live.push(s),
                _ => {}
            }
        }
        live.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.session_id.cmp(&b.session_id))
        });
        let mut listed = Vec::with_capacity(live.len());
        for session in live {
            let last_seen_at = self
                .directory
                .last_seen(&session.session_id)
                .await
                .map_err(|_| GateError::StoreUnavailable)?;
            listed.push(Listed {
                session,
                last_seen_at,
            });
        }
        Ok(listed)
    }

    /// Revokes every session of a user (all businesses), on every replica, in O(1).
    pub async fn revoke_user(&self, user_id: &str) -> Result<(), GateError> {
        self.cache
            .revoke_scope(&model::user_scope(user_id))
            .await
            .map(|_| ())
            .map_err(|_| GateError::OutcomeUnknown(REVOCATION_UNKNOWN))
    }

    /// Revokes every session of a business, on every replica, in O(1).
    pub async fn revoke_business(&self, business_id: &str) -> Result<(), GateError> {
        self.cache
            .revoke_scope(&model::business_scope(business_id))
            .await
            .map(|_| ())
            .map_err(|_| GateError::OutcomeUnknown(REVOCATION_UNKNOWN))
    }

    /// Revokes a session everywhere (this replica at once, others through events);
    /// `Ok(false)` if there was none.
    pub async fn revoke(&self, session_id: &str) -> Result<bool, GateError> {
        self.cache
            .revoke(session_id)
            .await
            .map_err(|_| GateError::OutcomeUnknown(REVOCATION_UNKNOWN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn app_from(text: &str) -> Result<Arc<crate::App>, Box<dyn std::error::Error>> {
        let env: HashMap<String, String> = HashMap::new();
        Ok(crate::build_app(Config::from_toml(text, &env)?)?)
    }

    fn b64url(v: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn the_claimed_session_is_read_from_the_payload_and_only_as_signed(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let app = app()?;
        let k = app.sessions.keys();
        let sid = new_session_id();
        // Another claim that spells a `sid` member inside its value.
        let other = new_session_id();
        let now = now_unix();
        let mut c = Claims {
            sid: sid.clone(),
            iss: "sessiongate".into(),
            aud: "sessiongate".into(),
            sub: String::new(),
            bid: "b".into(),
            hid: "h".into(),
            role: "user".into(),
            iat: now,
            nbf: now,
            exp: now + 60,
        };
        c.sub = format!("\",\"sid\":\"{other}\"");
        let t = k.sign(&c)?;
        assert_eq!(
            claimed_session(&t).map(|h| h.as_str().to_string()),
            Some(sid.clone())
        );
        // Signed before `sid` came first: found further in, past a claim that spells one.
        let header = t.split('.').next().unwrap_or_default();
        let sub = serde_json::to_string(&c.sub)?;
        let older = format!(r#"{{"iss":"sessiongate","sub":{sub},"sid":"{sid}"}}"#);
        let older = format!("{header}.{}.sig", b64url(older.as_bytes()));
        assert_eq!(
            claimed_session(&older).map(|h| h.as_str().to_string()),
            Some(sid)
        );
        // Not a payload the gateway signs: no hint (the token is then checked in full).
        for payload in [
            b64url(b"{\"sid\": \"x\"}"),
            b64url(format!("{{\"sid\":\"{other}x\"}}").as_bytes()),
            b64url(b"{\"sid\":\"short\"}"),
            "!!not base64!!".to_string(),
            "A".repeat(5000),
        ] {
            assert!(claimed_session(&format!("{header}.{payload}.sig")).is_none());
        }
        assert!(claimed_session("no dots").is_none());
        Ok(())
    }

    fn app() -> Result<Arc<crate::App>, Box<dyn std::error::Error>> {
        app_from(include_str!("../../config/sessiongate.toml"))
    }

    fn new_session() -> NewSession {
        let mut n = NewSession::new(
            "admin",
            "u".into(),
            "b".into(),
            "h".into(),
            "user".into(),
            600,
        );
        n.with_refresh_token = true;
        n
    }

    #[tokio::test]
    async fn refresh_rotates_and_reuse_revokes_the_session() -> TestResult {
        let app = app()?;
        let s = &app.sessions;
        let issued = s.create(new_session()).await?;
        let rt1 = issued.refresh_token.clone().ok_or("no refresh token")?;
        let r2 = s.refresh(&rt1).await?;
        assert_ne!(r2.refresh_token, rt1);
        assert!(s.authenticate(&r2.access_token).await.is_ok());
        let r3 = s.refresh(&r2.refresh_token).await?;
        // rt1 again: reuse. The session dies, with every token of it.
        assert!(matches!(
            s.refresh(&rt1).await,
            Err(GateError::RefreshTokenReused)
        ));
        assert!(s.authenticate(&issued.access_token).await.is_err());
        assert!(s.authenticate(&r3.access_token).await.is_err());
        assert!(matches!(
            s.refresh(&r3.refresh_token).await,
            Err(GateError::InvalidRefreshToken)
        ));
        Ok(())
    }

    fn app_with_grace(secs: u64) -> Result<Arc<crate::App>, Box<dyn std::error::Error>> {
        app_from(&include_str!("../../config/sessiongate.toml").replacen(
            "[tokens]\n",
            &format!("[tokens]\nrefresh_retry_grace_seconds = {secs}\n"),
            1,
        ))
    }

    #[tokio::test]
    async fn a_refresh_retried_within_the_grace_gets_the_same_successor() -> TestResult {
        let app = app_with_grace(10)?;
        let s = &app.sessions;
        let issued = s.create(new_session()).await?;
        let rt1 = issued.refresh_token.clone().ok_or("no refresh token")?;
        let r2 = s.refresh(&rt1).await?;
        // The client never got r2 and retries: the same successor, a working access token,
        // and the session lives.
        let again = s.refresh(&rt1).await?;
        assert_eq!(again.refresh_token, r2.refresh_token);
        assert!(s.authenticate(&again.access_token).await.is_ok());
        assert!(s.authenticate(&issued.access_token).await.is_ok());
        // The successor rotates as usual; the retry record now belongs to it, so rt1 is
        // reuse from here on.
        let r3 = s.refresh(&r2.refresh_token).await?;
        assert!(matches!(
            s.refresh(&rt1).await,
            Err(GateError::RefreshTokenReused)
        ));
        assert!(s.authenticate(&r3.access_token).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn without_a_grace_or_after_it_a_second_presentation_is_reuse() -> TestResult {
        for (grace, wait) in [(0, 0), (1, 1_200)] {
            let app = app_with_grace(grace)?;
            let s = &app.sessions;
            let issued = s.create(new_session()).await?;
            let rt1 = issued.refresh_token.clone().ok_or("no refresh token")?;
            let r2 = s.refresh(&rt1).await?;
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            assert!(
                matches!(s.refresh(&rt1).await, Err(GateError::RefreshTokenReused)),
                "grace {grace} s, retried after {wait} ms"
            );
            assert!(s.authenticate(&r2.access_token).await.is_err());
        }
        Ok(())
    }

    #[test]
    fn a_sealed_successor_opens_only_with_the_token_it_was_issued_for() {
        let sid = new_session_id();
        let presented = refresh_token_for(&sid);
        let (next, sealed) = successor_of(&sid, &presented);
        assert!(session_of_refresh_token(&next) == Some(sid.as_str()));
        assert_eq!(
            unseal_successor(&sid, &presented, &sealed).as_deref(),
            Some(next.as_str())
        );
        // Neither the sealed form nor what another token opens it to is the successor.
        assert!(!sealed.contains(&next[44..]));
        let other = refresh_token_for(&sid);
        assert_ne!(
            unseal_successor(&sid, &other, &sealed).as_deref(),
            Some(next.as_str())
        );
        for bad in ["", "zz", &sealed[..94], &sealed[32..]] {
            assert_eq!(unseal_successor(&sid, &presented, bad), None);
        }
    }

    #[tokio::test]
    async fn malformed_and_foreign_refresh_tokens_are_invalid_not_reuse() -> TestResult {
        let app = app()?;
        let s = &app.sessions;
        let issued = s.create(new_session()).await?;
        for bad in [
            "",
            "x",
            "a.b",
            &format!("{}.short", issued.session.session_id),
        ] {
            assert!(matches!(
                s.refresh(bad).await,
                Err(GateError::InvalidRefreshToken)
            ));
        }
        // A well-formed guess for a real session is not reuse: the session survives.
        let guess = refresh_token_for(&issued.session.session_id);
        assert!(matches!(
            s.refresh(&guess).await,
            Err(GateError::InvalidRefreshToken)
        ));
        assert!(s.authenticate(&issued.access_token).await.is_ok());
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_refreshes_of_one_token_leave_one_live_successor() -> TestResult {
        let app = app()?;
        let issued = app.sessions.create(new_session()).await?;
        let rt = issued.refresh_token.ok_or("no refresh token")?;
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let app = app.clone();
            let rt = rt.clone();
            tasks.push(tokio::spawn(async move { app.sessions.refresh(&rt).await }));
        }
        let mut successors = Vec::new();
        for t in tasks {
            successors.push(t.await??.refresh_token);
        }
        // One rotation; the others fall within its retry grace and get the same successor.
        successors.dedup();
        assert_eq!(successors.len(), 1, "{successors:?}");
        let next = app.sessions.refresh(&successors[0]).await?;
        assert!(app.sessions.authenticate(&next.access_token).await.is_ok());
        Ok(())
    }
}
