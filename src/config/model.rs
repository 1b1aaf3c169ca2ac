//! The validated configuration's types: what the gateway runs on, every value checked.

use super::*;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// The backend.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The URL as configured (for logs and docs).
    pub url: String,
    /// Address resolved once at start (no DNS on the request path).
    pub addr: SocketAddr,
    /// Host name used for SNI/Host if needed.
    pub host: String,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout.
    pub read_timeout: Duration,
    /// Whether the upstream speaks TLS (`https://`).
    pub tls: bool,
    /// The CA of a TLS upstream (`upstream.ca_file`), parsed at validation; `None`: the
    /// system's roots.
    pub ca: Option<std::sync::Arc<pingora::protocols::tls::CaType>>,
}

/// TLS on the proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// How often the files are checked for changes (zero: only on SIGHUP).
    pub reload_interval: Duration,
}

/// What the proxy forwards.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Normalised public path prefixes.
    pub public_prefixes: Vec<String>,
    /// Forward the client's `Authorization` on authenticated requests.
    pub forward_authorization: bool,
    /// Optional Hasura admin secret added upstream.
    pub hasura_admin_secret: Option<Secret>,
    /// Largest total request header size; 431 beyond.
    pub max_header_bytes: usize,
    /// Proxies whose `X-Forwarded-For` names the client (empty: the socket peer is it).
    pub trusted_proxies: Vec<IpNet>,
    /// How long a WebSocket may take to authenticate in `connection_init`.
    pub websocket_init_timeout: Duration,
    /// Most request header fields; 431 beyond.
    pub max_header_count: usize,
    /// Largest forwarded request body where no `body_limits` prefix matches.
    pub max_body_bytes: u64,
    /// `(normalised prefix, largest body)`, longest prefix first.
    pub body_limits: Vec<(String, u64)>,
    /// What happens to paths a lenient backend could route elsewhere.
    pub ambiguous_paths: AmbiguousPaths,
}

/// `proxy.ambiguous_paths`: see [`crate::path::Ambiguity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmbiguousPaths {
    /// 400 before routing (default).
    Reject,
    /// Passed on as sent: only for backends that read `%2F`, `\\` and `;` literally.
    Forward,
}

/// `/auth/verify` for a proxy in front.
#[derive(Debug, Clone, Default)]
pub struct ForwardAuthConfig {
    /// The one header (lower-case) whose original URI is believed; `None`: none is.
    pub original_uri_header: Option<http::HeaderName>,
    /// The proxies that call `/auth/verify` (socket peers).
    pub trusted_peers: Vec<IpNet>,
}

impl ForwardAuthConfig {
    /// Whether the socket's peer is one of the proxies that call `/auth/verify`.
    pub fn is_trusted_peer(&self, peer: std::net::IpAddr) -> bool {
        crate::client_ip::is_trusted(peer, &self.trusted_peers)
    }
}

impl ProxyConfig {
    /// The largest request body accepted on a normalised `path`: the longest matching
    /// `body_limits` prefix, else `max_body_bytes`.
    pub fn body_limit(&self, path: &str) -> u64 {
        self.body_limits
            .iter()
            .find(|(prefix, _)| crate::path::is_public(path, std::slice::from_ref(prefix)))
            .map_or(self.max_body_bytes, |(_, limit)| *limit)
    }
}

/// Largest `connections.read_buffer_bytes`.
pub(super) const MAX_READ_BUFFER: usize = 1024 * 1024;

/// Connection caps and client deadlines on the proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionsConfig {
    /// Open connections (0: no cap).
    pub max: usize,
    /// Open connections per client address, /64 for IPv6 (0: no cap).
    pub max_per_ip: usize,
    /// Whole request head.
    pub header_read_timeout: Duration,
    /// Whole request body, after the head.
    pub body_read_timeout: Duration,
    /// Wait for the next request on a kept-alive connection.
    pub idle_timeout: Duration,
    /// Read buffer each client connection keeps for its whole life (0: unbuffered reads).
    pub read_buffer: usize,
    /// Whole TLS handshake, from the accept (Pingora's own bound is a fixed 60 s).
    pub tls_handshake_timeout: Duration,
    /// Longest one response write may wait for the client.
    pub write_timeout: Duration,
    /// HTTP/2 requests in flight per client address (0: no cap); in total they are capped
    /// by `max`, like connections.
    pub max_streams_per_ip: usize,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            max: 20_000,
            max_per_ip: 512,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            // None: Pingora's default (pingora-core 0.9.1 `listeners/mod.rs`,
            // `L4BufferSettings`) is 64 KiB per connection, and any size is zeroed (so
            // resident) for the connection's whole life, most of an idle connection's memory.
            // A request head arrives in the connection's 1 KiB head buffer (`conn::Timed`)
            // and the parser's own, bodies in the parser's: with no buffer below them an idle
            // connection costs 5.9 KiB instead of 26.5 and a request ~10 % less CPU
            // (docs/benchmarks.md).
            read_buffer: 0,
            tls_handshake_timeout: Duration::from_secs(10),
            max_streams_per_ip: 512,
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// How the upstream Hasura learns who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HasuraMode {
    /// Trusted `x-hasura-*` headers (plus the admin secret, when configured).
    Headers,
    /// A short-lived Hasura JWT per session in `Authorization`; keys at
    /// `/.well-known/jwks.json`.
    Jwt,
    /// Hasura calls `/auth/hasura` with the client's `Authorization`, which is forwarded.
    Webhook,
}

impl HasuraMode {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            HasuraMode::Headers => "headers",
            HasuraMode::Jwt => "jwt",
            HasuraMode::Webhook => "webhook",
        }
    }
}

/// Hasura integration.
#[derive(Debug, Clone)]
pub struct HasuraConfig {
    /// Mode.
    pub mode: HasuraMode,
    /// Where minted JWTs keep the `x-hasura-*` claims.
    pub claims_namespace: String,
    /// Lifetime of a minted JWT (capped by its session).
    pub jwt_ttl: Duration,
    /// `iss` of minted JWTs.
    pub jwt_issuer: Option<String>,
    /// `aud` of minted JWTs.
    pub jwt_audience: Option<String>,
    /// The signing key's kid (jwt mode).
    pub signing_kid: String,
    /// Every key; all are published, one signs.
    pub keys: Vec<KeyConfig>,
    /// `Cache-Control: max-age` of the JWKS.
    pub jwks_max_age: Duration,
    /// Longest `Cache-Control: max-age` of a webhook answer.
    pub webhook_max_age: Duration,
}

/// Abuse protection. Every limit counts per sliding `window`; 0 means that limit is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Whether any limit applies.
    pub enabled: bool,
    /// The window every limit counts over.
    pub window: Duration,
    /// Session-creation requests per client IP.
    pub create_per_ip: u32,
    /// Session-creation requests per credential, unless the credential sets its own.
    pub create_per_credential: u32,
    /// Refresh requests per client IP.
    pub refresh_per_ip: u32,
    /// Refresh requests per session.
    pub refresh_per_session: u32,
    /// Failed authentications per client IP before it is refused.
    pub auth_failures_per_ip: u32,
}

impl Default for RateLimitConfig {
    /// Generous enough for a backend that creates sessions for many users from one address,
    /// tight enough to stop guessing: see the README's "Abuse protection".
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            window: Duration::from_secs(60),
            create_per_ip: 600,
            create_per_credential: 0,
            refresh_per_ip: 600,
            refresh_per_session: 30,
            auth_failures_per_ip: 100,
        }
    }
}

/// How the Redis deployment is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisMode {
    /// One server (or a managed endpoint).
    Standalone,
    /// Sentinels that name the current master.
    Sentinel {
        /// The monitored master's name.
        master: String,
    },
    /// Redis Cluster; the URLs are seed nodes.
    Cluster,
}

/// Where sessions are kept.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// In process; lost on restart. The embedded default.
    Memory,
    /// Redis.
    Redis {
        /// Connection URLs (may hold passwords): one for standalone, seed nodes for cluster,
        /// the sentinels for sentinel mode.
        urls: Vec<Secret>,
        /// Topology.
        mode: RedisMode,
        /// PEM of the CA for `rediss://` (system roots when `None`).
        tls_ca_pem: Option<Vec<u8>>,
        /// Per-operation timeout.
        timeout: Duration,
        /// Run on a Redis whose eviction policy can drop our keys (`store.allow_eviction`).
        allow_eviction: bool,
    },
}

/// The in-process cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// How long into a store outage cached sessions are still served (zero: strict).
    pub stale_window: Duration,
    /// Maximum entries.
    pub max_entries: u64,
    /// Longest time an entry lives (never beyond the session's expiry).
    pub ttl: Duration,
}

/// Key material of one signing/verifying key.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// HMAC shared secret.
    Shared(Secret),
    /// PEM keys; `private_pem` absent for verify-only keys.
    Asymmetric {
        /// PEM private key.
        private_pem: Option<Secret>,
        /// PEM public key.
        public_pem: String,
    },
}

/// One configured key, its material parsed once for its algorithm (built by
/// `KeyConfig::new`, so a key that does not parse never gets this far).
#[derive(Clone)]
pub struct KeyConfig {
    /// Key id.
    pub kid: String,
    /// The only algorithm this key accepts.
    pub algorithm: Algorithm,
    /// Its material as configured.
    pub material: KeyMaterial,
    /// The verifying key.
    pub(super) decoding: jsonwebtoken::DecodingKey,
    /// The signing key (`None` for a verify-only key).
    pub(super) encoding: Option<jsonwebtoken::EncodingKey>,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("material", &self.material)
            .field("signs", &self.encoding.is_some())
            .finish()
    }
}

/// Access-token settings.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// Clock-skew leeway in seconds.
    pub leeway_seconds: u64,
    /// TTL when none is asked for.
    pub default_ttl: Duration,
    /// Longest TTL allowed.
    pub max_ttl: Duration,
    /// Lifetime of one access token (capped by its session's expiry); `None`: the session's.
    pub access_ttl: Option<Duration>,
    /// How long a spent refresh token presented again gets its successor back (zero: never,
    /// every second presentation is reuse).
    pub refresh_retry_grace: Duration,
    /// The signing key's id.
    pub signing_kid: String,
    /// Every key.
    pub keys: Vec<KeyConfig>,
}

/// The admin API.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Bearer token.
    pub token: Secret,
    /// Body size limit.
    pub max_body_bytes: usize,
    /// Open connections to the admin listener (0: no cap). Probes and scrapes need a few;
    /// the cap keeps a flood of sockets there from costing the proxy its descriptors.
    pub max_connections: usize,
}

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// `*`: any origin.
    Any,
    /// One origin, as browsers serialise it (`https://app.example.com`, lower case).
    Exact(String),
    /// `https://*.example.com`: the scheme, then one or more labels, then this suffix
    /// (`.example.com`, with any `:port`).
    Subdomains {
        /// `https://`.
        scheme: String,
        /// `.example.com` (and `:port` if the pattern had one).
        suffix: String,
    },
}

impl OriginRule {
    /// Whether a request's `Origin` (already lower-cased) matches.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginRule::Any => true,
            OriginRule::Exact(o) => o == origin,
            OriginRule::Subdomains { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                .is_some_and(|labels| {
                    !labels.is_empty()
                        && labels.split('.').all(|l| {
                            !l.is_empty()
                                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        })
                }),
        }
    }
}

/// Cross-origin (CORS) policy; off while `allowed_origins` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// Who may call from a browser.
    pub allowed_origins: Vec<OriginRule>,
    /// Request headers a browser may send, lower case.
    pub allowed_headers: Vec<String>,
    /// Response headers a script may read, lower case.
    pub exposed_headers: Vec<String>,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
    /// Preflight cache lifetime.
    pub max_age: Duration,
}

impl CorsConfig {
    /// Request headers the browser clients the gateway serves send: the Amity SDK's
    /// (`X-API-Key`, `set-access-token-cookie`, `Authorization`, `Content-Type`, from its
    /// `getToken` and HTTP transport) and the request id.
    pub const DEFAULT_ALLOWED_HEADERS: &'static [&'static str] = &[
        "authorization",
        "content-type",
        "x-api-key",
        "set-access-token-cookie",
        "x-request-id",
    ];
    /// Response headers a browser app needs to read: the request id, the bearer challenge,
    /// and when to retry.
    pub const DEFAULT_EXPOSED_HEADERS: &'static [&'static str] =
        &["x-request-id", "www-authenticate", "retry-after"];

    /// Whether CORS is on.
    pub fn enabled(&self) -> bool {
        !self.allowed_origins.is_empty()
    }
}

/// The validated configuration the gateway runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Proxy worker threads.
    pub threads: usize,
    /// Grace period after SIGTERM.
    pub grace_period: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// TLS on the proxy listener (plain HTTP/1.1 when `None`).
    pub tls: Option<TlsConfig>,
    /// Backend.
    pub upstream: UpstreamConfig,
    /// Forwarding rules.
    pub proxy: ProxyConfig,
    /// Session store.
    pub store: StoreConfig,
    /// Session cache.
    pub cache: CacheConfig,
    /// Tokens.
    pub tokens: TokenConfig,
    /// Admin API.
    pub admin: AdminConfig,
    /// Session dialects (Mottasl, Amity, Rapidly).
    pub dialects: DialectsConfig,
    /// Abuse protection.
    pub rate_limits: RateLimitConfig,
    /// Hasura integration.
    pub hasura: HasuraConfig,
    /// Connection caps and client deadlines.
    pub connections: ConnectionsConfig,
    /// Forward-auth (`/auth/verify`).
    pub forward_auth: ForwardAuthConfig,
    /// Cross-origin browser access.
    pub cors: CorsConfig,
    /// What relayed WebSockets may hold.
    pub websocket: WebSocketConfig,
}

/// `[websocket]`: bounds on relayed GraphQL sockets.
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// A client message must complete within this of its first byte (close 1008).
    pub message_timeout: Duration,
    /// Bytes of incomplete client messages held across all sockets; the socket that would
    /// go past it is closed (1013).
    pub max_buffered_bytes: usize,
    /// Most sockets one session may hold at once.
    pub max_per_session: usize,
}

impl Config {
    /// Whether the client's credential travels upstream as the client sent it: headers mode
    /// with `proxy.forward_authorization` (the Amity realtime `token` query parameter then
    /// stays in the query). Every other mode tells the upstream who the client is otherwise.
    pub fn forwards_client_credential(&self) -> bool {
        self.hasura.mode == HasuraMode::Headers && self.proxy.forward_authorization
    }
}
