//! sessiongate: an authentication gateway on Pingora in front of Hasura (or any HTTP
//! backend). It verifies bearer access tokens, looks their session up (moka cache in front
//! of Redis or memory), strips every client-sent identity header and injects the trusted
//! ones.
//!
//! `main.rs` is a thin CLI; [`build_app`] and [`run`] are what it calls.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod auth_api;
pub mod client_ip;
pub mod config;
pub mod conn;
pub mod cors;
pub mod dialect;
pub mod endpoint;
pub mod error;
pub mod guard;
pub mod hasura;
pub mod header_names;
pub mod headers;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod path;
pub mod pem;
pub mod proxy;
pub mod respond;
pub mod route;
pub mod secret;
pub mod session;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod ws;

use config::{Config, StoreConfig};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use session::cache::SessionCache;
use session::memory::MemoryStore;
use session::redis::RedisStore;
use session::store::Stores;
use session::Sessions;
use std::sync::Arc;

/// State shared by the proxy and the admin listener.
#[derive(Debug)]
pub struct App {
    /// Validated configuration.
    pub config: Config,
    /// Session service.
    pub sessions: Sessions,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Rate limits.
    pub limits: limits::Limits,
    /// Hasura identity (mode, minted JWTs, JWKS).
    pub hasura: hasura::Hasura,
    /// The backend: its peer (TLS, CA, timeouts) and the relay's connector.
    pub upstream: upstream::Upstream,
    /// Cross-origin policy (`None`: CORS off).
    pub cors: Option<cors::Cors>,
    /// Bytes of incomplete WebSocket messages held, across all sockets.
    pub ws_budget: ws::bounds::Budget,
    /// The part of `ws_budget` sockets not yet authenticated may take (a quarter).
    pub ws_pending_budget: ws::bounds::Budget,
    /// WebSockets open per session.
    pub ws_sessions: Arc<ws::bounds::PerSession>,
    /// HTTP/2 requests in flight, in total and per client address.
    pub streams: Arc<conn::Slots>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Metrics registration failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Keys could not be built.
    #[error("tokens: {0}")]
    Keys(String),
    /// Hasura keys could not be built.
    #[error("hasura: {0}")]
    Hasura(String),
    /// The TLS listener could not be set up.
    #[error("tls: {0}")]
    Tls(String),
    /// The store could not be set up.
    #[error("store: {0}")]
    Store(#[from] session::store::StoreError),
    /// A listener's address cannot be bound (in use, not local, no permission).
    #[error("{key} = {addr}: {reason}")]
    Listen {
        /// The config key of the listener.
        key: &'static str,
        /// Its address.
        addr: std::net::SocketAddr,
        /// Why it cannot be bound.
        reason: String,
    },
}

/// Builds the shared state from a validated config (no listener is opened).
pub fn build_app(config: Config) -> Result<Arc<App>, StartError> {
    let metrics = Arc::new(metrics::Metrics::new()?);
    let keys = Arc::new(auth::KeySet::new(&config.tokens).map_err(StartError::Keys)?);
    let stores = match &config.store {
        StoreConfig::Memory => Stores::new(MemoryStore::new()),
        StoreConfig::Redis {
            urls,
            mode,
            tls_ca_pem,
            timeout,
            ..
        } => {
            // rediss:// needs a process-wide rustls provider; a second install is a no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Stores::new(RedisStore::new(session::redis_conn::Topology {
                mode: mode.clone(),
                urls: urls.iter().map(|u| u.expose().to_string()).collect(),
                tls_ca_pem: tls_ca_pem.clone(),
                timeout: *timeout,
            })?)
        }
    };
    let hasura =
        hasura::Hasura::new(&config, config.cache.max_entries).map_err(StartError::Hasura)?;
    if config.upstream.tls {
        // Pingora's rustls connector builds its client config on the process default
        // provider; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let upstream = upstream::Upstream::new(&config.upstream);
    let limits = limits::Limits::new(config.rate_limits.clone(), stores.counters, metrics.clone());
    let cache = SessionCache::new(
        stores.sessions,
        config.cache.max_entries,
        config.cache.ttl,
        config.cache.stale_window,
        metrics.clone(),
    );
    metrics
        .development_credentials
        .set(i64::from(!config.development_credentials().is_empty()));
    let sessions = Sessions::new(
        cache,
        stores.records,
        stores.index,
        keys,
        config.tokens.access_ttl,
    )
    .with_refresh_retry_grace(config.tokens.refresh_retry_grace);
    let cors = cors::Cors::new(&config.cors);
    let ws_budget = ws::bounds::Budget::new(
        config.websocket.max_buffered_bytes,
        Some(metrics.websocket_buffered_bytes.clone()),
    );
    let ws_pending_budget = ws::bounds::Budget::new(config.websocket.max_buffered_bytes / 4, None);
    let ws_sessions = ws::bounds::PerSession::new(config.websocket.max_per_session);
    let streams = conn::Slots::with_caps(
        config.connections.max,
        config.connections.max_streams_per_ip,
        config.proxy.trusted_proxies.clone(),
    );
    Ok(Arc::new(App {
        config,
        sessions,
        metrics,
        limits,
        hasura,
        upstream,
        cors,
        ws_budget,
        ws_pending_budget,
        ws_sessions,
        streams,
    }))
}

/// Every client connection is a file descriptor, and so is each upstream connection (one
/// per HTTP/1.1 connection, one per h2 stream, each capped at `max_connections`): lift the
/// soft limit to the hard one (many systems start services at 1024) and say so when even
/// that is short of the caps.
fn raise_open_files_limit(cfg: &Config) {
    let wanted = (cfg.connections.max as u64)
        .saturating_mul(3)
        .saturating_add(1024);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(got) if cfg.connections.max > 0 && got < wanted => tracing::warn!(
            open_files_limit = got,
            max_connections = cfg.connections.max,
            "the open-files limit is below 3 x connections.max_connections + 1024; \
             connections past it will fail to open"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
}

/// What the store's settings mean for the guarantees, as readiness and the start check see
/// them: `Err` names what is unsafe (an eviction policy that can drop revocations, unless
/// `store.allow_eviction`); warnings are logged by the caller. Sets the gauges.
pub fn assess_store(
    settings: &session::store::StoreSettings,
    allow_eviction: bool,
    metrics: &metrics::Metrics,
) -> Result<(), String> {
    use session::store::StoreSettings;
    metrics
        .store_eviction_safe
        .set(StoreSettings::gauge(settings.may_evict().map(|e| !e)));
    metrics
        .store_durable
        .set(StoreSettings::gauge(settings.durable()));
    match (settings.may_evict(), &settings.maxmemory_policy) {
        (Some(true), Some(policy)) if !allow_eviction => Err(format!(
            "Redis maxmemory-policy is {policy}, which can evict sessiongate's keys (a \
             revoked session or a revoke-all could come back): set it to noeviction, or \
             store.allow_eviction = true to run anyway"
        )),
        _ => Ok(()),
    }
}

/// At start, when the store is Redis and answers within a few seconds: refuses an eviction
/// policy that can drop revocations (see [`assess_store`]) and warns about persistence that
/// can lose acknowledged writes, or settings it cannot read. A Redis that is down now is
/// checked by readiness once it answers.
fn check_store_at_start(app: &App) -> Result<(), StartError> {
    let StoreConfig::Redis { allow_eviction, .. } = &app.config.store else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Store(session::store::StoreError::Unavailable(e.to_string())))?;
    let read = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(3),
            app.sessions.cache().store_settings(),
        )
        .await
    });
    let settings = match read {
        Ok(Ok(Some(s))) => s,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(
                "Redis did not answer at start: its settings are checked when it does (readiness)"
            );
            return Ok(());
        }
    };
    assess_store(&settings, *allow_eviction, &app.metrics)
        .map_err(|e| StartError::Store(session::store::StoreError::Unavailable(e)))?;
    warn_store_settings(&settings);
    Ok(())
}

/// Logs what the settings cannot promise (once, at start).
fn warn_store_settings(s: &session::store::StoreSettings) {
    if s.maxmemory_policy.is_none() || s.durable().is_none() {
        tracing::warn!(
            "cannot read Redis' settings (CONFIG GET is not allowed, as on many managed \
             services): make sure maxmemory-policy is noeviction and AOF is on \
             (appendfsync everysec or always)"
        );
    }
    if s.may_evict() == Some(true) {
        tracing::warn!(
            policy = s.maxmemory_policy.as_deref().unwrap_or(""),
            "Redis may evict sessiongate's keys (store.allow_eviction = true)"
        );
    }
    if s.durable() == Some(false) {
        tracing::warn!(
            appendonly = s.appendonly.as_deref().unwrap_or(""),
            appendfsync = s.appendfsync.as_deref().unwrap_or(""),
            "Redis persistence can lose acknowledged writes on a crash (a revoked session \
             could come back after the in-process tombstone window): use appendonly yes \
             with appendfsync everysec or always"
        );
    }
}

/// Fails when a listener's address cannot be bound. Pingora retries a bind whose address
/// is in use for a while and then gives up on that service alone, leaving a process that
/// runs without its listener (pingora-core 0.9.1, `listeners/l4.rs`, `bind_tcp`: "… is in
/// use, will try again"); a gateway that cannot listen must not start.
fn check_listeners(cfg: &config::Config) -> Result<(), StartError> {
    for (key, addr) in [
        ("server.listen", cfg.listen),
        ("server.admin_listen", cfg.admin_listen),
    ] {
        std::net::TcpListener::bind(addr).map_err(|e| StartError::Listen {
            key,
            addr,
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Starts the proxy and admin listeners and serves until SIGTERM/SIGINT.
pub fn run(app: Arc<App>) -> Result<(), StartError> {
    let cfg = &app.config;
    check_listeners(cfg)?;
    check_store_at_start(&app)?;
    let conf = ServerConf {
        threads: cfg.threads,
        grace_period_seconds: Some(cfg.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(cfg.grace_period.as_secs().max(1)),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    raise_open_files_limit(cfg);
    let mut http = pingora::proxy::HttpProxy::new(
        proxy::Proxy::new(app.clone()),
        server.configuration.clone(),
    );
    http.handle_init_modules();
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(cfg.connections.idle_timeout);
    http.server_options = Some(options);
    // One h2 connection may not open more streams than its address may have in flight
    // (`connections.max_streams_per_ip`), nor more than Pingora's default of 100.
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    let per_ip = u32::try_from(cfg.connections.max_streams_per_ip).unwrap_or(u32::MAX);
    h2.max_concurrent_streams(match per_ip {
        0 => 100,
        n => n.min(100),
    });
    // What h2 buffers per stream beyond what the client has read: a client that opens big
    // windows and never reads would otherwise park up to 400 KiB per stream (h2's default)
    // after the request ended and its slot was freed.
    h2.max_send_buffer_size(64 * 1024);
    // One DATA frame per body read: `proxy::PREBUFFER_BYTES` relies on frames of at most
    // 16 KiB (h2's default, pinned here).
    h2.max_frame_size(16 * 1024);
    http.h2_options = Some(h2);
    let listener = conn::Listener::new(
        http,
        conn::Slots::new(&cfg.connections, cfg.proxy.trusted_proxies.clone()),
        cfg,
        app.metrics.clone(),
        true,
    );
    let buffers = L4BufferSettings::default().read(cfg.connections.read_buffer);
    // TLS is handshaken by the listener application, after the connection took its slot
    // and under `connections.tls_handshake_timeout_ms`; Pingora's listener stays plain TCP.
    let listener = match &cfg.tls {
        Some(t) => {
            let certs = tls::CertReloader::load(t, app.metrics.clone()).map_err(StartError::Tls)?;
            certs
                .clone()
                .watch(t.reload_interval)
                .map_err(|e| StartError::Tls(e.to_string()))?;
            let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")
                .map_err(|e| StartError::Tls(e.to_string()))?;
            settings.set_cert_resolver(certs);
            settings.enable_h2();
            listener.with_tls(settings.build(), cfg)
        }
        None => listener,
    };
    let mut proxy =
        pingora::services::listening::Service::new("sessiongate proxy".to_string(), listener);
    proxy.add_listener(ListenerConfig::tcp(cfg.listen.to_string()).l4_buffer(buffers));

    // The admin listener keeps the proxy's head, idle and body deadlines, under a cap of
    // its own (`admin.max_connections`), of which one address may hold a quarter: probes
    // and scrapers need a few, and one client cannot crowd them out alone.
    let mut admin = pingora::services::listening::Service::new(
        "sessiongate admin".to_string(),
        conn::Listener::new(
            admin::AdminApp::new(app.clone()),
            conn::Slots::with_caps(
                cfg.admin.max_connections,
                cfg.admin.max_connections.div_ceil(4),
                Vec::new(),
            ),
            cfg,
            app.metrics.clone(),
            false,
        ),
    );
    admin.add_tcp(&cfg.admin_listen.to_string());

    server.add_service(proxy);
    server.add_service(admin);
    tracing::info!(
        listen = %cfg.listen,
        tls = cfg.tls.is_some(),
        admin_listen = %cfg.admin_listen,
        upstream = %cfg.upstream.url,
        store = app.sessions.cache().store().kind(),
        "sessiongate starting"
    );
    server.run(pingora::server::RunArgs::default());
    Ok(())
}
