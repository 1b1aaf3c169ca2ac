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
    /// What created it: `admin`, `mottasl`, `amity` or `rapidly`.
    #[serde(default)]
    pub source: String,
    /// The dialect's own id of this session (Rapidly's customer-session `id`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Revocation generation of its user when it was created; a revoke-all of the user
    /// raises the user's generation past it.
    #[serde(default)]
    pub user_gen: u64,
    /// Revocation generation of its business when it was created.
    #[serde(default)]
    pub business_gen: u64,
    /// The creating client's `User-Agent` (at most 256 characters), for the user's list of
    /// their sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The creating client's network, coarsened ([`coarse_ip`]): enough to tell "home" from
    /// "abroad", not an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// An address coarsened to its /24 (IPv4) or /48 (IPv6) network, as shown to users.
pub fn coarse_ip(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        std::net::IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, 48)
            .map(|n| n.trunc().to_string())
            .unwrap_or_default(),
    }
}

/// Revocation scope of every session of one user (user ids are global to the gateway).
pub fn user_scope(user_id: &str) -> String {
    format!("u:{user_id}")
}

/// Revocation scope of every session of one business.
pub fn business_scope(business_id: &str) -> String {
    format!("b:{business_id}")
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
    /// What is creating it (a metrics label and part of the stored session).
    pub source: &'static str,
    /// The dialect's own id for the session, if it has one.
    pub external_id: Option<String>,
    /// Whether to issue a refresh token with it.
    pub with_refresh_token: bool,
    /// The creating client's `User-Agent`, if known.
    pub user_agent: Option<String>,
    /// The creating client's address, if known (stored coarsened).
    pub ip: Option<std::net::IpAddr>,
}

impl NewSession {
    /// A session without dialect data.
    pub fn new(
        source: &'static str,
        user_id: String,
        business_id: String,
        host_id: String,
        role: String,
        ttl_secs: u64,
    ) -> Self {
        NewSession {
            user_id,
            business_id,
            host_id,
            role,
            ttl_secs,
            source,
            external_id: None,
            with_refresh_token: false,
            user_agent: None,
            ip: None,
        }
    }

    /// The same, remembering the creating client (shown in the user's list of sessions).
    pub fn from_client(mut self, headers: &http::HeaderMap, ip: std::net::IpAddr) -> Self {
        self.user_agent = headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        self.ip = Some(ip);
        self
    }
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
    id.len() == SESSION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Characters in a session id (256 random bits, URL-safe base64).
pub const SESSION_ID_LEN: usize = 43;

/// 256 random bits as 43 URL-safe characters: refresh tokens and other opaque secrets.
pub fn random_token() -> String {
    new_session_id()
}

/// Hex SHA-256 of a secret, the only form in which issued secrets are stored.
pub fn sha256_hex(value: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(value.as_bytes()))
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
    #[test]
    fn coarse_ips() {
        let v4: std::net::IpAddr = [203, 0, 113, 77].into();
        assert_eq!(coarse_ip(v4), "203.0.113.0/24");
        let v6: std::net::IpAddr = "2001:db8:abcd:12::1".parse().unwrap_or(v4);
        assert_eq!(coarse_ip(v6), "2001:db8:abcd::/48");
        let mapped: std::net::IpAddr = "::ffff:198.51.100.9".parse().unwrap_or(v4);
        assert_eq!(coarse_ip(mapped), "198.51.100.0/24");
    }

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
