//! The common session model every creation path produces.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// A live session. The store keeps exactly this; the proxy injects its identity fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Opaque, random, URL-safe id.
    pub session_id: String,
    /// `x-hasura-user-id`.
    pub user_id: String,
    /// `x-hasura-business-id`.
    pub business_id: String,
    /// `x-host-id`.
    pub host_id: String,
    /// `x-hasura-role`.
    pub role: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the session is refused from this instant on.
    pub expires_at: i64,
}

impl Session {
    /// Whether the session is past its expiry at `now` (unix seconds).
    pub fn is_expired_at(&self, now: i64) -> bool {
        now >= self.expires_at
    }

    /// Seconds left at `now`, zero when expired.
    pub fn remaining_secs(&self, now: i64) -> u64 {
        u64::try_from(self.expires_at.saturating_sub(now)).unwrap_or(0)
    }
}

/// What a creation request asks for, before an id and timestamps are assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// User id.
    pub user_id: String,
    /// Business id.
    pub business_id: String,
    /// Host id.
    pub host_id: String,
    /// Role.
    pub role: String,
    /// Lifetime in seconds (already bounded by config).
    pub ttl_secs: u64,
}

/// 256 random bits, base64url without padding (43 characters).
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether a string could be a session id we issued; anything else is refused before it
/// reaches the store (and never becomes part of a Redis key).
pub fn is_valid_session_id(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Current unix time in seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 rendering of unix seconds (UTC).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_valid() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert!(is_valid_session_id(&a));
        assert!(!is_valid_session_id("short"));
        assert!(!is_valid_session_id(&format!("{}:", &a[..42])));
    }

    #[test]
    fn rfc3339_renders_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
