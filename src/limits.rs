//! Abuse protection: rate limits on session creation and refresh (per client IP and per
//! credential), and on failed authentication per client IP.
//!
//! Counts live in the session store (Redis: one sliding-window counter per key, shared by
//! every replica, timed by Redis' clock), so N replicas enforce one limit. A refused
//! request is counted too: a client that ignores `Retry-After` stays refused.
//!
//! Failed authentications are counted on the failure path only; once an address is over
//! its limit, this replica remembers it in process until the window lets it go, so the hot
//! path never asks the store whether a client is blocked. Another replica learns it at that
//! client's next failure there: an address gets at most `limit + replicas - 1` failures.
//!
//! If the store does not answer, counting falls back to this process (the limit then holds
//! per replica), and the fallback is counted in a metric: a store outage never turns every
//! caller away, and never lets limits lapse altogether.

use crate::config::dialects::CredentialDigest;
use crate::config::RateLimitConfig;
use crate::metrics::Metrics;
use crate::session::store::CounterStore;
use crate::session::window::{unix_ms, LocalWindows, WindowCount};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Which limit refused a request (also the metric label and the counter key's prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Session-creation requests per client IP.
    CreatePerIp,
    /// Session-creation requests per credential.
    CreatePerCredential,
    /// Refresh requests per client IP.
    RefreshPerIp,
    /// Refresh requests per session.
    RefreshPerSession,
    /// Failed authentications per client IP.
    AuthFailuresPerIp,
}

impl Bucket {
    /// Every bucket (to pre-create metric series).
    pub const ALL: [Bucket; 5] = [
        Bucket::CreatePerIp,
        Bucket::CreatePerCredential,
        Bucket::RefreshPerIp,
        Bucket::RefreshPerSession,
        Bucket::AuthFailuresPerIp,
    ];

    /// The config key naming this limit.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::CreatePerIp => "create_per_ip",
            Bucket::CreatePerCredential => "create_per_credential",
            Bucket::RefreshPerIp => "refresh_per_ip",
            Bucket::RefreshPerSession => "refresh_per_session",
            Bucket::AuthFailuresPerIp => "auth_failures_per_ip",
        }
    }
}

/// A request over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The limit.
    pub bucket: Bucket,
    /// When the same request would be accepted again, if nothing else arrives meanwhile.
    pub retry_after: Duration,
}

impl Limited {
    /// `Retry-After` in whole seconds (rounded up, at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        let ms = u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX);
        ms.div_ceil(1000).max(1)
    }
}

/// Whether a hit that produced `count` stays within `limit`; `Err` holds how long until it
/// would. The sliding estimate weighs the previous fixed window by its remaining overlap.
pub fn decide(count: &WindowCount, limit: u32) -> Result<(), Duration> {
    let w = count.window.as_secs_f64().max(0.001);
    let e = count.elapsed.as_secs_f64().min(w);
    let (cur, prev, limit) = (
        count.current as f64,
        count.previous as f64,
        f64::from(limit),
    );
    let estimate = prev * (w - e) / w + cur;
    if estimate <= limit {
        return Ok(());
    }
    // The retry is a hit of its own: wait until the estimate leaves room for one more.
    let room = limit - 1.0;
    let wait = if cur > room {
        // This window alone is too full: wait for it to end, then for its weight to decay.
        (w - e) + w * (1.0 - room.max(0.0) / cur)
    } else {
        // The previous window's share is what fills it; wait for that share to decay.
        (w - e) - w * (room - cur) / prev
    };
    Err(Duration::from_secs_f64(wait.clamp(0.001, 2.0 * w)))
}

/// The address a per-IP limit counts: IPv4 addresses one by one, IPv6 by /64 (one host
/// usually owns a whole /64, so counting single IPv6 addresses would let it pick new ones).
pub fn ip_subject(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        v4 => v4,
    }
}

/// The rate limiter.
pub struct Limits {
    cfg: RateLimitConfig,
    store: Arc<dyn CounterStore>,
    fallback: LocalWindows,
    /// Addresses over their failed-authentication limit → refused until (unix ms).
    blocked: moka::sync::Cache<IpAddr, u64>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").field("cfg", &self.cfg).finish()
    }
}

impl Limits {
    /// Limits counted in `store`.
    pub fn new(cfg: RateLimitConfig, store: Arc<dyn CounterStore>, metrics: Arc<Metrics>) -> Self {
        let blocked = moka::sync::Cache::builder()
            .max_capacity(1_000_000)
            .time_to_live(cfg.window.saturating_mul(2))
            .build();
        Limits {
            cfg,
            store,
            fallback: LocalWindows::default(),
            blocked,
            metrics,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RateLimitConfig {
        &self.cfg
    }

    /// Counts one request against `subject`'s `bucket`; `limit` 0 (or limits disabled)
    /// never refuses and counts nothing.
    pub async fn check(&self, bucket: Bucket, subject: &str, limit: u32) -> Result<(), Limited> {
        if !self.cfg.enabled || limit == 0 {
            return Ok(());
        }
        let key = format!("{}:{subject}", bucket.name());
        let count = match self.store.count_hit(&key, self.cfg.window).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "rate limit counted in process");
                self.metrics.rate_limit_fallback.inc();
                self.fallback.hit(&key, self.cfg.window, unix_ms())
            }
        };
        decide(&count, limit).map_err(|retry_after| {
            self.metrics
                .rate_limited
                .with_label_values(&[bucket.name()])
                .inc();
            Limited {
                bucket,
                retry_after,
            }
        })
    }

    /// A session-creation request from `ip`.
    pub async fn create_from(&self, ip: IpAddr) -> Result<(), Limited> {
        let subject = ip_subject(ip).to_string();
        self.check(Bucket::CreatePerIp, &subject, self.cfg.create_per_ip)
            .await
    }

    /// A session-creation request with a credential (`own`: its configured limit).
    pub async fn create_with(
        &self,
        dialect: &str,
        credential: &CredentialDigest,
        own: Option<u32>,
    ) -> Result<(), Limited> {
        // The digest is already a hash of the secret; the store hashes the key again.
        let subject = format!("{dialect}:{}", hex::encode(&credential.as_bytes()[..16]));
        let limit = own.unwrap_or(self.cfg.create_per_credential);
        self.check(Bucket::CreatePerCredential, &subject, limit)
            .await
    }

    /// A refresh request from `ip`.
    pub async fn refresh_from(&self, ip: IpAddr) -> Result<(), Limited> {
        let subject = ip_subject(ip).to_string();
        self.check(Bucket::RefreshPerIp, &subject, self.cfg.refresh_per_ip)
            .await
    }

    /// A refresh request for a session.
    pub async fn refresh_of(&self, session_id: &str) -> Result<(), Limited> {
        self.check(
            Bucket::RefreshPerSession,
            session_id,
            self.cfg.refresh_per_session,
        )
        .await
    }

    /// Whether `ip` is refused for having failed authentication too often (in process: no
    /// store round trip on the hot path).
    pub fn blocked(&self, ip: IpAddr) -> Option<Limited> {
        if !self.cfg.enabled || self.cfg.auth_failures_per_ip == 0 {
            return None;
        }
        let until = self.blocked.get(&ip_subject(ip))?;
        let now = unix_ms();
        if until <= now {
            return None;
        }
        self.metrics
            .rate_limited
            .with_label_values(&[Bucket::AuthFailuresPerIp.name()])
            .inc();
        Some(Limited {
            bucket: Bucket::AuthFailuresPerIp,
            retry_after: Duration::from_millis(until - now),
        })
    }

    /// Records a failed authentication from `ip` (a credential was presented and was wrong,
    /// unknown, expired or revoked); past the limit, `ip` is refused until it may retry.
    pub async fn auth_failed(&self, ip: IpAddr) {
        let subject = ip_subject(ip);
        let limit = self.cfg.auth_failures_per_ip;
        if let Err(over) = self
            .check(Bucket::AuthFailuresPerIp, &subject.to_string(), limit)
            .await
        {
            let until = unix_ms()
                .saturating_add(u64::try_from(over.retry_after.as_millis()).unwrap_or(u64::MAX));
            self.blocked.insert(subject, until);
            tracing::warn!(client = %subject, retry_after_s = over.retry_after_secs(), "too many failed authentications: client refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_has_its_metric_label() {
        let names: Vec<&str> = Bucket::ALL.iter().map(|b| b.name()).collect();
        assert_eq!(names, crate::metrics::RATE_LIMITS);
    }
    use crate::session::memory::MemoryStore;

    fn count(current: u64, previous: u64, elapsed_ms: u64) -> WindowCount {
        WindowCount {
            current,
            previous,
            elapsed: Duration::from_millis(elapsed_ms),
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn sliding_estimate_and_retry_after() {
        assert_eq!(decide(&count(5, 0, 0), 5), Ok(()));
        // Over in this window alone: wait for it to end, then until 6 hits weigh ≤ 4 (room
        // for the retry itself): 1/3 of the next window.
        let wait = decide(&count(6, 0, 4_000), 5).err();
        assert_eq!(wait.map(|d| d.as_millis()), Some(6_000 + 3_333));
        // Halfway through, the previous window's 10 hits count for 5: 5 + 1 > 5.
        let wait = decide(&count(1, 10, 5_000), 5).err();
        // The previous share must fall to 3 (3 + 1 + the retry = 5): 5 s - 10 s * 3 / 10.
        assert_eq!(wait.map(|d| d.as_millis()), Some(2_000));
        assert_eq!(decide(&count(1, 10, 6_000), 5), Ok(()));
        // Retrying exactly after the advertised wait is accepted.
        let wait = decide(&count(6, 0, 4_000), 5)
            .err()
            .map_or(0, |d| d.as_millis() as u64);
        let at = 4_000 + wait + 1; // in the next window
        let retry = count(1, 6, at - 10_000);
        assert_eq!(decide(&retry, 5), Ok(()));
    }

    #[test]
    fn retry_after_rounds_up() {
        let l = Limited {
            bucket: Bucket::CreatePerIp,
            retry_after: Duration::from_millis(1_001),
        };
        assert_eq!(l.retry_after_secs(), 2);
        let l = Limited {
            retry_after: Duration::from_millis(3),
            ..l
        };
        assert_eq!(l.retry_after_secs(), 1);
    }

    #[test]
    fn ipv6_counts_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:bbbb::9"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(ip_subject(a), ip_subject(b));
        let v4: IpAddr = "::ffff:1.2.3.4".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(ip_subject(v4), IpAddr::from([1, 2, 3, 4]));
    }

    fn limits(cfg: RateLimitConfig) -> Result<Limits, prometheus::Error> {
        Ok(Limits::new(
            cfg,
            Arc::new(MemoryStore::new()),
            Arc::new(Metrics::new()?),
        ))
    }

    #[tokio::test]
    async fn limits_refuse_past_the_count_and_zero_is_off() -> Result<(), prometheus::Error> {
        let l = limits(RateLimitConfig {
            create_per_ip: 3,
            create_per_credential: 0,
            ..RateLimitConfig::default()
        })?;
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..3 {
            assert!(l.create_from(ip).await.is_ok());
        }
        let refused = l.create_from(ip).await;
        assert!(refused.is_err_and(|r| r.bucket == Bucket::CreatePerIp
            && r.retry_after_secs() >= 1
            && r.retry_after_secs() <= 120));
        // Another address has its own count.
        assert!(l.create_from(IpAddr::from([10, 0, 0, 2])).await.is_ok());
        // 0 = unlimited.
        let digest = CredentialDigest::of(b"k");
        for _ in 0..10 {
            assert!(l.create_with("mottasl", &digest, None).await.is_ok());
        }
        // A credential's own limit wins.
        for _ in 0..2 {
            assert!(l.create_with("amity", &digest, Some(2)).await.is_ok());
        }
        assert!(l.create_with("amity", &digest, Some(2)).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn failed_authentication_blocks_the_address() -> Result<(), prometheus::Error> {
        let l = limits(RateLimitConfig {
            auth_failures_per_ip: 2,
            ..RateLimitConfig::default()
        })?;
        let ip = IpAddr::from([192, 0, 2, 1]);
        l.auth_failed(ip).await;
        l.auth_failed(ip).await;
        assert!(l.blocked(ip).is_none());
        l.auth_failed(ip).await;
        assert!(l
            .blocked(ip)
            .is_some_and(|b| b.bucket == Bucket::AuthFailuresPerIp));
        assert!(l.blocked(IpAddr::from([192, 0, 2, 2])).is_none());
        Ok(())
    }

    #[tokio::test]
    async fn disabled_limits_never_refuse() -> Result<(), prometheus::Error> {
        let l = limits(RateLimitConfig {
            enabled: false,
            create_per_ip: 1,
            auth_failures_per_ip: 1,
            ..RateLimitConfig::default()
        })?;
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..5 {
            assert!(l.create_from(ip).await.is_ok());
            l.auth_failed(ip).await;
        }
        assert!(l.blocked(ip).is_none());
        Ok(())
    }
}
