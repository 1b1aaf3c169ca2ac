//! Every metric, defined once. Label values come from fixed sets: never a user id, a path
//! or a token.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The `limit` labels of `sessiongate_rate_limited_total`: the names of `limits::Bucket`
/// (a test there keeps the two in step; metrics know nothing of limits).
pub const RATE_LIMITS: [&str; 5] = [
    "create_per_ip",
    "create_per_credential",
    "refresh_per_ip",
    "refresh_per_session",
    "auth_failures_per_ip",
];

/// The `outcome` labels of `sessiongate_requests_total` (each request has exactly one,
/// decided by the proxy where the request ends).
pub const OUTCOMES: &[&str] = &[
    "forwarded",
    "public",
    "rejected",
    "store_unavailable",
    "bad_request",
    "upstream_error",
    "rate_limited",
    "internal",
    "websocket",
    "dialect",
    "preflight",
];

/// The `reason` labels of `sessiongate_auth_failures_total`: every value of
/// `GateError::auth_failure_reason` (a test there keeps the two in step).
pub const AUTH_FAILURE_REASONS: &[&str] = &[
    "missing_token",
    "malformed",
    "unknown_kid",
    "algorithm_mismatch",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "bad_claims",
    "critical_extension",
    "session_not_found",
    "session_expired",
    "invalid_refresh_token",
    "refresh_token_reused",
];

/// The `source` labels of `sessiongate_sessions_created_total`.
pub const CREATION_SOURCES: &[&str] = &["admin", "mottasl", "amity", "rapidly"];

/// The `source` labels of `sessiongate_sessions_revoked_total`.
pub const REVOCATION_SOURCES: &[&str] = &[
    "admin",
    "amity",
    "logout",
    "refresh_reuse",
    "revoke_business",
    "revoke_user",
    "self_service",
];

/// The `dialect` labels of `sessiongate_dialect_requests_total` (`Endpoint::label`).
pub const DIALECT_LABELS: &[&str] = &["mottasl", "amity", "rapidly", "gateway"];

/// The `status` labels of `sessiongate_dialect_requests_total` (`endpoint::status_label`).
pub const DIALECT_STATUSES: &[&str] = &[
    "200", "201", "204", "400", "401", "403", "404", "405", "413", "415", "422", "429", "500",
    "503", "other",
];

/// The `reason` labels of `sessiongate_websocket_closes_total` (`ws::End::label`).
pub const WEBSOCKET_CLOSES: &[&str] = &[
    "closed",
    "revoked",
    "unauthorized",
    "bad_init",
    "bad_message",
    "init_timeout",
    "too_many_inits",
    "too_large",
    "message_timeout",
    "over_budget",
    "session_cap",
    "store_unavailable",
    "upstream_failed",
    "internal",
];

/// The `op` labels of the store metrics (the session cache's calls to the store).
pub const STORE_OPS: &[&str] = &[
    "get",
    "put",
    "delete",
    "ping",
    "generations",
    "bump_generation",
    "publish",
    "rotate",
    "peek_refresh",
    "restore_generation",
];

/// Counts one more in a gauge while it lives (a connection, a socket), whatever ends it.
pub struct Held<'a>(&'a prometheus::IntGauge);

impl<'a> Held<'a> {
    /// Raises `gauge` by one until dropped.
    pub fn new(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Held(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The gateway's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    /// `sessiongate_requests_total{outcome}`: one of [`OUTCOMES`].
    pub requests: IntCounterVec,
    /// `sessiongate_auth_failures_total{reason}`: see `GateError::auth_failure_reason`.
    pub auth_failures: IntCounterVec,
    /// `sessiongate_request_duration_seconds{outcome}`: whole request, as seen by the gateway.
    pub request_duration: HistogramVec,
    /// `sessiongate_cache_lookups_total{result}`: hit, miss, stale (served during a store
    /// outage), bypass (cache not trusted: no event subscription, or too many revocations).
    pub cache_lookups: IntCounterVec,
    /// `sessiongate_store_operations_total{op}`: get, generations, put, rotate, peek_refresh,
    /// delete, bump_generation, publish, ping (the session cache's calls to the store).
    pub store_operations: IntCounterVec,
    /// `sessiongate_store_errors_total{op}`.
    pub store_errors: IntCounterVec,
    /// `sessiongate_store_duration_seconds{op}`.
    pub store_duration: HistogramVec,
    /// `sessiongate_dialect_requests_total{dialect,status}`: requests to the session APIs the
    /// gateway terminates (mottasl, amity, rapidly), by HTTP status.
    pub dialect_requests: IntCounterVec,
    /// `sessiongate_sessions_created_total{source}`: admin, mottasl, amity, rapidly.
    pub sessions_created: IntCounterVec,
    /// `sessiongate_sessions_revoked_total{source}`.
    pub sessions_revoked: IntCounterVec,
    /// `sessiongate_store_up`: 1 when the last readiness probe reached the store.
    pub store_up: IntGauge,
    /// `sessiongate_store_eviction_safe`: 1 when Redis' `maxmemory-policy` cannot evict
    /// sessiongate's keys (`noeviction`), 0 when it can, -1 unknown (not readable, memory
    /// store, or not read yet).
    pub store_eviction_safe: IntGauge,
    /// `sessiongate_store_durable`: 1 when Redis' AOF is on with `appendfsync` `always` or
    /// `everysec`, 0 when not, -1 unknown.
    pub store_durable: IntGauge,
    /// `sessiongate_development_credentials`: 1 while shipped development secrets are in use.
    pub development_credentials: IntGauge,
    /// `sessiongate_degraded`: 1 while the store is unreachable (cached sessions served
    /// within the stale window, everything else 503).
    pub degraded: IntGauge,
    /// `sessiongate_events_subscribed`: 1 while this replica receives other replicas'
    /// invalidations (0: its cache is bypassed).
    pub events_subscribed: IntGauge,
    /// `sessiongate_rate_limited_total{limit}`: requests refused with 429, by the limit that
    /// refused them (create_per_ip, create_per_credential, refresh_per_ip,
    /// refresh_per_session, auth_failures_per_ip).
    pub rate_limited: IntCounterVec,
    /// `sessiongate_rate_limit_fallback_total`: limit checks counted in process because the
    /// shared store did not answer (those limits are then per replica).
    pub rate_limit_fallback: prometheus::IntCounter,
    /// `sessiongate_tls_reloads_total{result}`: reloaded, unchanged, failed.
    pub tls_reloads: IntCounterVec,
    /// `sessiongate_websockets_open`: relayed WebSockets currently open.
    pub websockets_open: IntGauge,
    /// `sessiongate_websocket_closes_total{reason}`: one of [`WEBSOCKET_CLOSES`].
    pub websocket_closes: IntCounterVec,
    /// `sessiongate_websocket_buffered_bytes`: bytes of incomplete client messages held
    /// across all relayed sockets (bounded by `websocket.max_buffered_bytes`).
    pub websocket_buffered_bytes: IntGauge,
    /// `sessiongate_events_unreadable_total`: invalidation events this replica could not parse.
    pub events_unreadable: prometheus::IntCounter,
    /// `sessiongate_store_data_lost_total`: times this replica found the store back without
    /// its data (its epoch changed) and dropped the revoke-all floors it no longer backs.
    pub store_data_lost: prometheus::IntCounter,
    /// `sessiongate_connections_open`: client connections open on the proxy listener.
    pub connections_open: IntGauge,
    /// `sessiongate_connections_refused_total{cap}`: connections answered 503 and closed,
    /// by the cap that refused them (max_connections, max_connections_per_ip).
    pub connections_refused: IntCounterVec,
    /// `sessiongate_connections_closed_total{reason}`: connections the gateway ended for a
    /// client's slowness or size: header_timeout, header_too_large, idle_timeout,
    /// tls_handshake_timeout, tls_handshake_failed, h2_preface_invalid, h2_control_flood,
    /// h2_stream_flood, h2_body_timeout, write_timeout.
    pub connections_closed: IntCounterVec,
    /// `sessiongate_h2_body_timeouts_total`: HTTP/2 request streams ended because their body
    /// was not complete a second past `connections.body_read_timeout_ms` after their headers.
    pub h2_body_timeouts: prometheus::IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(r: &Registry, name: &str, help: &str, label: &str) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// A counter without labels.
fn total(r: &Registry, name: &str, help: &str) -> prometheus::Result<prometheus::IntCounter> {
    let c = prometheus::IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &[label])?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let m = Metrics {
            requests: counter(
                &r,
                "sessiongate_requests_total",
                "Proxy requests by outcome.",
                "outcome",
            )?,
            auth_failures: counter(
                &r,
                "sessiongate_auth_failures_total",
                "Requests refused for authentication, by reason.",
                "reason",
            )?,
            request_duration: histogram(
                &r,
                "sessiongate_request_duration_seconds",
                "Proxy request duration by outcome.",
                "outcome",
                LATENCY_BUCKETS.to_vec(),
            )?,
            cache_lookups: counter(
                &r,
                "sessiongate_cache_lookups_total",
                "Session cache lookups by result.",
                "result",
            )?,
            store_operations: counter(
                &r,
                "sessiongate_store_operations_total",
                "Session store operations by kind.",
                "op",
            )?,
            store_errors: counter(
                &r,
                "sessiongate_store_errors_total",
                "Failed session store operations by kind.",
                "op",
            )?,
            store_duration: histogram(
                &r,
                "sessiongate_store_duration_seconds",
                "Session store operation latency by kind.",
                "op",
                LATENCY_BUCKETS.to_vec(),
            )?,
            dialect_requests: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "sessiongate_dialect_requests_total",
                        "Requests to the session APIs the gateway terminates, by dialect and status.",
                    ),
                    &["dialect", "status"],
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            sessions_created: counter(
                &r,
                "sessiongate_sessions_created_total",
                "Sessions created, by source.",
                "source",
            )?,
            sessions_revoked: counter(
                &r,
                "sessiongate_sessions_revoked_total",
                "Sessions revoked, by source.",
                "source",
            )?,
            store_up: gauge(
                &r,
                "sessiongate_store_up",
                "1 when the session store answered the last readiness probe.",
            )?,
            store_eviction_safe: gauge(
                &r,
                "sessiongate_store_eviction_safe",
                "1 when Redis' maxmemory-policy cannot evict sessiongate's keys, 0 when it can, -1 unknown.",
            )?,
            store_durable: gauge(
                &r,
                "sessiongate_store_durable",
                "1 when Redis' AOF is on (appendfsync always or everysec), 0 when not, -1 unknown.",
            )?,
            development_credentials: gauge(
                &r,
                "sessiongate_development_credentials",
                "1 while shipped development credentials are in use.",
            )?,
            degraded: gauge(
                &r,
                "sessiongate_degraded",
                "1 while the session store is unreachable (degraded mode).",
            )?,
            events_subscribed: gauge(
                &r,
                "sessiongate_events_subscribed",
                "1 while this replica receives cross-replica invalidation events.",
            )?,
            events_unreadable: total(
                &r,
                "sessiongate_events_unreadable_total",
                "Invalidation events that could not be parsed.",
            )?,
            store_data_lost: total(
                &r,
                "sessiongate_store_data_lost_total",
                "Times the store came back without its data (its epoch changed).",
            )?,
            tls_reloads: counter(
                &r,
                "sessiongate_tls_reloads_total",
                "Checks of the listener's certificate files, by result.",
                "result",
            )?,
            websockets_open: gauge(
                &r,
                "sessiongate_websockets_open",
                "Relayed WebSockets currently open.",
            )?,
            websocket_closes: counter(
                &r,
                "sessiongate_websocket_closes_total",
                "Relayed WebSockets ended, by reason.",
                "reason",
            )?,
            websocket_buffered_bytes: gauge(
                &r,
                "sessiongate_websocket_buffered_bytes",
                "Bytes of incomplete client messages held across all relayed WebSockets.",
            )?,
            rate_limited: counter(
                &r,
                "sessiongate_rate_limited_total",
                "Requests refused with 429, by limit.",
                "limit",
            )?,
            rate_limit_fallback: total(
                &r,
                "sessiongate_rate_limit_fallback_total",
                "Rate-limit checks counted in process because the store did not answer.",
            )?,
            connections_open: gauge(
                &r,
                "sessiongate_connections_open",
                "Client connections open on the proxy listener.",
            )?,
            connections_refused: counter(
                &r,
                "sessiongate_connections_refused_total",
                "Client connections refused (503) at a connection cap, by cap.",
                "cap",
            )?,
            connections_closed: counter(
                &r,
                "sessiongate_connections_closed_total",
                "Client connections closed by the gateway for slowness or size, by reason.",
                "reason",
            )?,
            h2_body_timeouts: total(
                &r,
                "sessiongate_h2_body_timeouts_total",
                "HTTP/2 request streams ended because their body missed the body deadline.",
            )?,
            registry: r,
        };
        // Every label value the code can emit exists from the start, at zero: dashboards
        // and `rate()`/`increase()` alerts work from the first scrape, not after the first
        // event of each kind (Prometheus' instrumentation guidance).
        for cap in [
            "max_connections",
            "max_connections_per_ip",
            "max_streams",
            "max_streams_per_ip",
        ] {
            m.connections_refused.with_label_values(&[cap]);
        }
        for reason in [
            "header_timeout",
            "header_too_large",
            "idle_timeout",
            "tls_handshake_timeout",
            "tls_handshake_failed",
            "h2_preface_invalid",
            "h2_control_flood",
            "h2_stream_flood",
            "h2_body_timeout",
            "write_timeout",
        ] {
            m.connections_closed.with_label_values(&[reason]);
        }
        for o in OUTCOMES {
            m.requests.with_label_values(&[o]);
            m.request_duration.with_label_values(&[o]);
        }
        for reason in AUTH_FAILURE_REASONS {
            m.auth_failures.with_label_values(&[reason]);
        }
        for l in RATE_LIMITS {
            m.rate_limited.with_label_values(&[l]);
        }
        for r in ["hit", "miss", "bypass", "stale"] {
            m.cache_lookups.with_label_values(&[r]);
        }
        for op in STORE_OPS {
            m.store_operations.with_label_values(&[op]);
            m.store_errors.with_label_values(&[op]);
            m.store_duration.with_label_values(&[op]);
        }
        for dialect in DIALECT_LABELS {
            for status in DIALECT_STATUSES {
                m.dialect_requests.with_label_values(&[dialect, status]);
            }
        }
        for source in CREATION_SOURCES {
            m.sessions_created.with_label_values(&[source]);
        }
        for source in REVOCATION_SOURCES {
            m.sessions_revoked.with_label_values(&[source]);
        }
        for reason in WEBSOCKET_CLOSES {
            m.websocket_closes.with_label_values(&[reason]);
        }
        for result in ["reloaded", "unchanged", "failed"] {
            m.tls_reloads.with_label_values(&[result]);
        }
        m.store_eviction_safe.set(-1);
        m.store_durable.set(-1);
        Ok(m)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `new` rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}
