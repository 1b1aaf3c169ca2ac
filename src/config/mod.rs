//! Validated configuration.
//!
//! Precedence, highest first: environment variables (`SESSIONGATE_*`, see [`env`]) > the
//! config file > built-in defaults. Every problem is collected and reported at once, each
//! naming its key, so `sessiongate check` shows the whole list in one run.

pub mod dialects;
pub mod env;
pub mod file;
mod keys;

use crate::secret::Secret;
use dialects::{CredentialDigest, DialectsConfig};
use env::EnvSource;
use file::{FileConfig, SecretSource};
use ipnet::IpNet;
use jsonwebtoken::Algorithm;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every algorithm an access-token key may use.
const ALL_ALGORITHMS: &[(&str, Algorithm)] = &[
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("ES256", Algorithm::ES256),
    ("RS256", Algorithm::RS256),
    ("EdDSA", Algorithm::EdDSA),
];

/// Hasura verifies minted JWTs with published public keys: asymmetric algorithms only.
const HASURA_ALGORITHMS: &[(&str, Algorithm)] = &[
    ("RS256", Algorithm::RS256),
    ("ES256", Algorithm::ES256),
    ("EdDSA", Algorithm::EdDSA),
];

/// Secrets shipped in `config/sessiongate.toml` for development. Seeing one at start logs a
/// warning: they are public and must never guard real traffic.
pub const DEVELOPMENT_SECRETS: &[&str] = &[
    "dev-admin-token-not-for-production",
    "dev-only-hs256-secret-change-me-0123456789abcdef",
    "dev-mottasl-token",
    "dev-amity-api-key",
    "dev-amity-secure-key",
    "dev-amity-server-key",
    "dev-rapidly-token",
    // deploy/kubernetes/overlays/dev/secrets/admin-token
    "dev-k8s-admin-token-not-for-production",
];

/// Public keys (PEM bodies) of the signing keys committed for development: whoever reads
/// this repository holds their private halves.
pub const DEVELOPMENT_PUBLIC_KEYS: &[&str] = &[
    // deploy/kubernetes/overlays/dev/secrets/signing.pub.pem
    "MCowBQYDK2VwAyEANmO7RRQ36l0C5U3ENf9QedkHgvw0wlZ6yhID55pu6P4=",
];

/// Which of `names` (`[secret key, public key]`) to report when a key is a development one.
fn development_key(material: &KeyMaterial, names: [&'static str; 2]) -> Option<&'static str> {
    match material {
        KeyMaterial::Shared(s) if DEVELOPMENT_SECRETS.contains(&s.expose()) => Some(names[0]),
        KeyMaterial::Asymmetric { public_pem, .. }
            if DEVELOPMENT_PUBLIC_KEYS.contains(&pem_body(public_pem).as_str()) =>
        {
            Some(names[1])
        }
        _ => None,
    }
}

/// The base64 body of a PEM text, whitespace removed.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.split_whitespace())
        .collect()
}

/// One problem in the configuration, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key, e.g. `upstream.url`, or the environment variable's name.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for issue in &self.0 {
            writeln!(f, "  - {issue}")?;
        }
        Ok(())
    }
}

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
    /// PEM CA for a TLS upstream (system roots when `None`).
    pub ca_pem: Option<Vec<u8>>,
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
const MAX_READ_BUFFER: usize = 1024 * 1024;

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
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            max: 20_000,
            max_per_ip: 512,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            // Pingora's default is 64 KiB per connection, which is most of an idle
            // connection's memory once the allocator recycles pages; request heads and
            // bodies still arrive in as few reads (benches/idle_conns.py, docs/benchmarks.md).
            read_buffer: 16 * 1024,
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

/// One configured key.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// Key id.
    pub kid: String,
    /// The only algorithm this key accepts.
    pub algorithm: Algorithm,
    /// Its material.
    pub material: KeyMaterial,
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
}

impl Config {
    /// Reads, parses and validates a config file, applying environment overrides.
    pub fn load(path: &Path, env: &dyn EnvSource) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(vec![ConfigIssue {
                key: path.display().to_string(),
                message: format!("cannot read config file: {e}"),
            }])
        })?;
        Self::from_toml(&text, env)
    }

    /// Parses and validates config text (TOML), applying environment overrides.
    pub fn from_toml(text: &str, env: &dyn EnvSource) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            // toml's message names the key and the line; keep it whole, on one line.
            let msg = e.to_string().replace('\n', " ");
            ConfigError(vec![ConfigIssue {
                key: "config file".into(),
                message: msg,
            }])
        })?;
        Self::from_file(file, env)
    }

    /// Validates a parsed file, applying environment overrides.
    pub fn from_file(file: FileConfig, env: &dyn EnvSource) -> Result<Config, ConfigError> {
        let mut v = Validator {
            issues: Vec::new(),
            env,
        };
        let cfg = v.build(file);
        match cfg {
            Some(cfg) if v.issues.is_empty() => Ok(cfg),
            _ => Err(ConfigError(v.issues)),
        }
    }

    /// Names of settings that still hold a shipped development secret.
    pub fn development_credentials(&self) -> Vec<&'static str> {
        let mut found = Vec::new();
        let is_dev = |s: &Secret| DEVELOPMENT_SECRETS.contains(&s.expose());
        if is_dev(&self.admin.token) {
            found.push("admin.token");
        }
        for k in &self.tokens.keys {
            if let Some(what) = development_key(
                &k.material,
                ["tokens.keys.secret", "tokens.keys.public_key"],
            ) {
                found.push(what);
            }
        }
        // A development key reused to sign Hasura JWTs lets anyone mint Hasura identities.
        for k in &self.hasura.keys {
            if let Some(what) = development_key(
                &k.material,
                ["hasura.keys.secret", "hasura.keys.public_key"],
            ) {
                found.push(what);
            }
        }
        let dev_digests: Vec<CredentialDigest> = DEVELOPMENT_SECRETS
            .iter()
            .map(|s| CredentialDigest::of(s.as_bytes()))
            .collect();
        let is_dev_digest = |d: &CredentialDigest| dev_digests.contains(d);
        let d = &self.dialects;
        if let Some(m) = &d.mottasl {
            if m.credentials.iter().any(|c| is_dev_digest(&c.digest)) {
                found.push("dialects.mottasl.credentials");
            }
        }
        if let Some(a) = &d.amity {
            if a.networks.iter().any(|n| {
                is_dev_digest(&n.digest) || n.server_key.as_ref().is_some_and(is_dev_digest)
            }) {
                found.push("dialects.amity.networks");
            }
        }
        if let Some(r) = &d.rapidly {
            if r.workspaces.iter().any(|w| is_dev_digest(&w.digest)) {
                found.push("dialects.rapidly.workspaces");
            }
        }
        found.dedup();
        found
    }
}

struct Validator<'a> {
    issues: Vec<ConfigIssue>,
    env: &'a dyn EnvSource,
}

impl Validator<'_> {
    fn issue(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }

    /// The environment value if set (non-empty), else the file's.
    fn overridden(&self, var: &str, file_value: Option<String>) -> (Option<String>, String) {
        match self.env.var(var).filter(|v| !v.is_empty()) {
            Some(v) => (Some(v), var.to_string()),
            None => (file_value, String::new()),
        }
    }

    fn addr(
        &mut self,
        key: &str,
        var: &str,
        file_value: Option<String>,
        default: &str,
    ) -> SocketAddr {
        let (value, from_env) = self.overridden(var, file_value);
        let key = if from_env.is_empty() {
            key.to_string()
        } else {
            from_env
        };
        let value = value.unwrap_or_else(|| default.to_string());
        match value.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.issue(
                    key,
                    format!("`{value}` is not an address like 127.0.0.1:8080"),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        }
    }

    fn secret(&mut self, key: &str, source: &SecretSource) -> Option<Secret> {
        match source {
            SecretSource::Inline(v) => Some(Secret::new(v.clone())),
            SecretSource::Env { env } => match self.env.var(env) {
                Some(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => {
                    self.issue(key, format!("environment variable {env} is not set"));
                    None
                }
            },
            SecretSource::File { file } => self.secret_file(key, file),
        }
    }

    fn secret_file(&mut self, key: &str, file: &Path) -> Option<Secret> {
        match std::fs::read_to_string(file) {
            Ok(mut v) => {
                if v.ends_with('\n') {
                    v.pop();
                    if v.ends_with('\r') {
                        v.pop();
                    }
                }
                Some(Secret::new(v))
            }
            Err(e) => {
                self.issue(key, format!("cannot read {}: {e}", file.display()));
                None
            }
        }
    }

    /// A secret that the environment can override, by value or by file.
    fn secret_with_env(
        &mut self,
        key: &str,
        var: &str,
        file_var: &str,
        source: Option<&SecretSource>,
    ) -> Option<Secret> {
        if let Some(v) = self.env.var(var).filter(|v| !v.is_empty()) {
            return Some(Secret::new(v));
        }
        if let Some(path) = self.env.var(file_var).filter(|v| !v.is_empty()) {
            return self.secret_file(file_var, Path::new(&path));
        }
        source.and_then(|s| self.secret(key, s))
    }

    fn positive(&mut self, key: &str, value: Option<u64>, default: u64) -> u64 {
        let v = value.unwrap_or(default);
        if v == 0 {
            self.issue(key, "must be greater than 0");
            return default;
        }
        v
    }

    fn build(&mut self, f: FileConfig) -> Option<Config> {
        let listen = self.addr(
            "server.listen",
            env::LISTEN,
            f.server.listen,
            "127.0.0.1:8080",
        );
        let admin_listen = self.addr(
            "server.admin_listen",
            env::ADMIN_LISTEN,
            f.server.admin_listen,
            "127.0.0.1:9090",
        );
        if listen == admin_listen {
            self.issue("server.admin_listen", "must differ from server.listen");
        }
        let threads = f.server.threads.unwrap_or(2);
        if threads == 0 || threads > 1024 {
            self.issue("server.threads", "must be between 1 and 1024");
        }
        let grace_period = Duration::from_secs(f.server.grace_period_seconds.unwrap_or(10));
        let (log_format, log_key) = self.overridden(env::LOG_FORMAT, f.server.log_format);
        let log_format = match log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                let key = if log_key.is_empty() {
                    "server.log_format".into()
                } else {
                    log_key
                };
                self.issue(key, format!("`{other}` is not one of: text, json"));
                LogFormat::Text
            }
        };

        let tls = f.server.tls.and_then(|t| self.tls(t));
        let upstream = self.upstream(f.upstream);
        let proxy = self.proxy(f.proxy);
        let forward_auth = self.forward_auth(f.forward_auth);
        let stale_window = f.store.stale_window_seconds.unwrap_or(30);
        if stale_window > 3600 {
            self.issue("store.stale_window_seconds", "must be at most 3600");
        }
        let store = self.store(f.store);
        let cache = CacheConfig {
            stale_window: Duration::from_secs(stale_window),
            max_entries: self.positive("cache.max_entries", f.cache.max_entries, 100_000),
            ttl: Duration::from_secs(self.positive("cache.ttl_seconds", f.cache.ttl_seconds, 30)),
        };
        let tokens = self.tokens(f.tokens);
        let ttls = dialects::Ttls {
            default: tokens.as_ref().map_or(3600, |t| t.default_ttl.as_secs()),
            max: tokens.as_ref().map_or(30 * 86_400, |t| t.max_ttl.as_secs()),
        };
        let dialects = self.dialects(f.dialects, &ttls);
        let rate_limits = self.rate_limits(f.rate_limits);
        let connections = self.connections(f.connections);
        let hasura = self.hasura(f.hasura, &proxy);
        let admin_token = self.secret_with_env(
            "admin.token",
            env::ADMIN_TOKEN,
            env::ADMIN_TOKEN_FILE,
            f.admin.token.as_ref(),
        );
        let admin_token = match admin_token {
            Some(t) if t.expose().len() >= 16 => Some(t),
            Some(_) => {
                self.issue("admin.token", "must be at least 16 characters");
                None
            }
            None => {
                self.issue(
                    "admin.token",
                    format!("is required (or set {})", env::ADMIN_TOKEN),
                );
                None
            }
        };
        let max_body_bytes = f.admin.max_body_bytes.unwrap_or(64 * 1024);
        if max_body_bytes == 0 {
            self.issue("admin.max_body_bytes", "must be greater than 0");
        }

        Some(Config {
            listen,
            admin_listen,
            threads,
            grace_period,
            log_format,
            tls,
            upstream: upstream?,
            proxy,
            store,
            cache,
            tokens: tokens?,
            admin: AdminConfig {
                token: admin_token?,
                max_body_bytes,
            },
            dialects,
            rate_limits,
            hasura: hasura?,
            connections,
            forward_auth,
        })
        .filter(|cfg| self.development_exposure(cfg))
    }

    /// A shipped development credential is public: it may only guard loopback listeners,
    /// unless the operator says otherwise in so many words. `false` (with an issue naming the
    /// credential and the listener) when the config must not start.
    fn development_exposure(&mut self, cfg: &Config) -> bool {
        let dev = cfg.development_credentials();
        if dev.is_empty()
            || self.env.var(env::ALLOW_DEVELOPMENT_CREDENTIALS).as_deref() == Some("1")
        {
            return true;
        }
        let exposed: Vec<String> = [
            ("server.listen", cfg.listen),
            ("server.admin_listen", cfg.admin_listen),
        ]
        .iter()
        .filter(|(_, a)| !a.ip().is_loopback())
        .map(|(k, a)| format!("{k} = {a}"))
        .collect();
        if exposed.is_empty() {
            return true;
        }
        self.issue(
            dev.join(", "),
            format!(
                "holds a public development credential while {} is not a loopback address; \
                 set real credentials, listen on loopback, or set {}=1 to accept the risk",
                exposed.join(" and "),
                env::ALLOW_DEVELOPMENT_CREDENTIALS
            ),
        );
        false
    }

    /// A list of addresses or CIDR ranges: the environment's (comma-separated) if set, else
    /// the file's. Each bad entry is an issue naming its key.
    fn networks(&mut self, key: &str, var: &str, file_value: Option<Vec<String>>) -> Vec<IpNet> {
        let (entries, key) = match self.env.var(var).filter(|v| !v.trim().is_empty()) {
            Some(v) => (
                v.split(',').map(|e| e.trim().to_string()).collect(),
                var.to_string(),
            ),
            None => (file_value.unwrap_or_default(), key.to_string()),
        };
        let mut nets = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from));
            match net {
                Ok(n) => nets.push(n.trunc()),
                Err(_) => self.issue(
                    format!("{key}[{i}]"),
                    format!("`{entry}` is not an IP address or CIDR range like 10.0.0.0/8"),
                ),
            }
        }
        nets
    }

    fn forward_auth(&mut self, f: file::ForwardAuthSection) -> ForwardAuthConfig {
        let trusted_peers = self.networks(
            "forward_auth.trusted_peers",
            env::FORWARD_AUTH_TRUSTED_PEERS,
            f.trusted_peers,
        );
        let (header, key) =
            self.overridden(env::FORWARD_AUTH_ORIGINAL_URI_HEADER, f.original_uri_header);
        let key = if key.is_empty() {
            "forward_auth.original_uri_header".to_string()
        } else {
            key
        };
        let original_uri_header =
            header.and_then(
                |h| match http::HeaderName::from_bytes(h.trim().as_bytes()) {
                    Ok(name) if crate::header_names::is_identity_header(name.as_str()) => {
                        self.issue(key.clone(), "must not be an identity header");
                        None
                    }
                    Ok(name) => Some(name),
                    Err(_) => {
                        self.issue(key.clone(), format!("`{h}` is not a header name"));
                        None
                    }
                },
            );
        if original_uri_header.is_some() && trusted_peers.is_empty() {
            self.issue(
                "forward_auth.trusted_peers",
                "is required when forward_auth.original_uri_header is set: only the proxies \
                 that call /auth/verify may name the original URI",
            );
        }
        ForwardAuthConfig {
            original_uri_header,
            trusted_peers,
        }
    }

    fn connections(&mut self, c: file::ConnectionsSection) -> ConnectionsConfig {
        let d = ConnectionsConfig::default();
        let mut ms = |key: &str, v: Option<u64>, default: Duration| {
            let v = v.unwrap_or(u64::try_from(default.as_millis()).unwrap_or(u64::MAX));
            if !(1..=86_400_000).contains(&v) {
                self.issue(key, "must be between 1 and 86400000 (milliseconds)");
                return default;
            }
            Duration::from_millis(v)
        };
        ConnectionsConfig {
            header_read_timeout: ms(
                "connections.header_read_timeout_ms",
                c.header_read_timeout_ms,
                d.header_read_timeout,
            ),
            body_read_timeout: ms(
                "connections.body_read_timeout_ms",
                c.body_read_timeout_ms,
                d.body_read_timeout,
            ),
            idle_timeout: ms(
                "connections.idle_timeout_ms",
                c.idle_timeout_ms,
                d.idle_timeout,
            ),
            max: c.max_connections.unwrap_or(d.max),
            max_per_ip: c.max_connections_per_ip.unwrap_or(d.max_per_ip),
            read_buffer: match c.read_buffer_bytes.unwrap_or(d.read_buffer) {
                b if b <= MAX_READ_BUFFER => b,
                _ => {
                    self.issue(
                        "connections.read_buffer_bytes",
                        "must be at most 1048576 (0 turns the buffer off)",
                    );
                    d.read_buffer
                }
            },
        }
    }

    fn tls(&mut self, t: file::TlsSection) -> Option<TlsConfig> {
        let (Some(cert_file), Some(key_file)) = (t.cert_file, t.key_file) else {
            self.issue("server.tls", "needs both cert_file and key_file");
            return None;
        };
        if let Err(e) = crate::pem::check_files(&cert_file, &key_file) {
            self.issue("server.tls.cert_file", e);
            return None;
        }
        Some(TlsConfig {
            cert_file,
            key_file,
            reload_interval: Duration::from_secs(t.reload_interval_seconds.unwrap_or(10)),
        })
    }

    fn hasura(&mut self, h: file::HasuraSection, proxy: &ProxyConfig) -> Option<HasuraConfig> {
        let (mode, from_env) = self.overridden(env::HASURA_MODE, h.mode);
        let mode_key = if from_env.is_empty() {
            "hasura.mode".to_string()
        } else {
            from_env
        };
        let mode = match mode.as_deref() {
            None | Some("headers") => HasuraMode::Headers,
            Some("jwt") => HasuraMode::Jwt,
            Some("webhook") => HasuraMode::Webhook,
            Some(other) => {
                self.issue(
                    mode_key,
                    format!("`{other}` is not one of: headers, jwt, webhook"),
                );
                return None;
            }
        };
        if mode != HasuraMode::Headers && proxy.hasura_admin_secret.is_some() {
            self.issue(
                "proxy.hasura_admin_secret",
                format!(
                    "must not be set with hasura.mode = {}: Hasura would treat every request as admin",
                    mode.name()
                ),
            );
        }
        let keys = self.key_list("hasura.keys", &h.keys, HASURA_ALGORITHMS);
        let signing_kid = if mode == HasuraMode::Jwt {
            self.signing_kid("hasura", h.signing_kid, &keys, &h.keys)?
        } else {
            h.signing_kid.unwrap_or_default()
        };
        let jwt_ttl = self.positive("hasura.jwt_ttl_seconds", h.jwt_ttl_seconds, 300);
        if jwt_ttl < 10 {
            self.issue("hasura.jwt_ttl_seconds", "must be at least 10");
        }
        Some(HasuraConfig {
            mode,
            claims_namespace: h
                .claims_namespace
                .unwrap_or_else(|| "https://hasura.io/jwt/claims".into()),
            jwt_ttl: Duration::from_secs(jwt_ttl),
            jwt_issuer: h.jwt_issuer,
            jwt_audience: h.jwt_audience,
            signing_kid,
            keys,
            jwks_max_age: Duration::from_secs(h.jwks_max_age_seconds.unwrap_or(300)),
            webhook_max_age: Duration::from_secs(h.webhook_max_age_seconds.unwrap_or(60)),
        })
    }

    fn rate_limits(&mut self, r: file::RateLimitsSection) -> RateLimitConfig {
        let d = RateLimitConfig::default();
        let window = r.window_seconds.unwrap_or(d.window.as_secs());
        if !(1..=86_400).contains(&window) {
            self.issue("rate_limits.window_seconds", "must be between 1 and 86400");
        }
        RateLimitConfig {
            enabled: r.enabled.unwrap_or(d.enabled),
            window: Duration::from_secs(window.clamp(1, 86_400)),
            create_per_ip: r.create_per_ip.unwrap_or(d.create_per_ip),
            create_per_credential: r.create_per_credential.unwrap_or(d.create_per_credential),
            refresh_per_ip: r.refresh_per_ip.unwrap_or(d.refresh_per_ip),
            refresh_per_session: r.refresh_per_session.unwrap_or(d.refresh_per_session),
            auth_failures_per_ip: r.auth_failures_per_ip.unwrap_or(d.auth_failures_per_ip),
        }
    }

    fn upstream(&mut self, u: file::UpstreamSection) -> Option<UpstreamConfig> {
        let (url, from_env) = self.overridden(env::UPSTREAM, u.url);
        let key = if from_env.is_empty() {
            "upstream.url".to_string()
        } else {
            from_env
        };
        let url = url.unwrap_or_else(|| "http://127.0.0.1:8081".to_string());
        let connect_timeout = Duration::from_millis(self.positive(
            "upstream.connect_timeout_ms",
            u.connect_timeout_ms,
            2_000,
        ));
        let read_timeout = Duration::from_millis(self.positive(
            "upstream.read_timeout_ms",
            u.read_timeout_ms,
            60_000,
        ));
        let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => {
                self.issue(key, "must be an http:// or https:// URL");
                return None;
            }
        };
        let ca_pem = match &u.ca_file {
            Some(path) if tls => match std::fs::read(path) {
                Ok(pem) => match crate::pem::upstream_roots(Some(&pem)) {
                    Ok(_) => Some(pem),
                    Err(e) => {
                        self.issue("upstream.ca_file", e);
                        None
                    }
                },
                Err(e) => {
                    self.issue(
                        "upstream.ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            },
            Some(_) => {
                self.issue("upstream.ca_file", "only applies to an https:// upstream");
                None
            }
            None => None,
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            self.issue(
                key,
                "must be http://host[:port] with no path or credentials",
            );
            return None;
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.to_string()
        } else if tls {
            format!("{authority}:443")
        } else {
            format!("{authority}:80")
        };
        let host = with_port
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']').to_string())
            .unwrap_or_default();
        match with_port.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => Some(UpstreamConfig {
                url: url.clone(),
                addr,
                host,
                connect_timeout,
                read_timeout,
                tls,
                ca_pem,
            }),
            Ok(None) | Err(_) => {
                self.issue(key, format!("cannot resolve `{authority}`"));
                None
            }
        }
    }

    fn proxy(&mut self, p: file::ProxySection) -> ProxyConfig {
        let mut public_prefixes = Vec::new();
        for (i, prefix) in p
            .public_prefixes
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let key = format!("proxy.public_prefixes[{i}]");
            match crate::path::normalize_path(&prefix) {
                Ok(n) if n == prefix && prefix.starts_with('/') && prefix.len() > 1 => {
                    public_prefixes.push(prefix)
                }
                _ => self.issue(
                    key,
                    format!("`{prefix}` must be a normalised absolute path other than `/`"),
                ),
            }
        }
        let hasura_admin_secret = self.secret_with_env(
            "proxy.hasura_admin_secret",
            env::HASURA_ADMIN_SECRET,
            env::HASURA_ADMIN_SECRET_FILE,
            p.hasura_admin_secret.as_ref(),
        );
        let max_header_bytes = p.max_header_bytes.unwrap_or(32 * 1024);
        if !(1024..=1024 * 1024).contains(&max_header_bytes) {
            self.issue("proxy.max_header_bytes", "must be between 1024 and 1048576");
        }
        let max_header_count = p.max_header_count.unwrap_or(100);
        if !(1..=256).contains(&max_header_count) {
            // Pingora's parser refuses more than 256 fields itself.
            self.issue("proxy.max_header_count", "must be between 1 and 256");
        }
        let max_body_bytes = p.max_body_bytes.unwrap_or(1024 * 1024);
        if max_body_bytes == 0 {
            self.issue("proxy.max_body_bytes", "must be greater than 0");
        }
        let mut body_limits = Vec::new();
        for (i, entry) in p.body_limits.unwrap_or_default().into_iter().enumerate() {
            let normalised = crate::path::normalize_path(&entry.prefix).ok();
            if normalised.as_deref() != Some(entry.prefix.as_str()) {
                self.issue(
                    format!("proxy.body_limits[{i}].prefix"),
                    format!("`{}` must be a normalised absolute path", entry.prefix),
                );
            } else if entry.max_body_bytes == 0 {
                self.issue(
                    format!("proxy.body_limits[{i}].max_body_bytes"),
                    "must be greater than 0",
                );
            } else {
                body_limits.push((entry.prefix, entry.max_body_bytes));
            }
        }
        // Longest prefix first, so the first match is the most specific.
        body_limits.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        let trusted_proxies = self.networks(
            "proxy.trusted_proxies",
            env::TRUSTED_PROXIES,
            p.trusted_proxies,
        );
        let ambiguous_paths = match p.ambiguous_paths.as_deref() {
            None | Some("reject") => AmbiguousPaths::Reject,
            Some("forward") => AmbiguousPaths::Forward,
            Some(other) => {
                self.issue(
                    "proxy.ambiguous_paths",
                    format!("`{other}` is not one of: reject, forward"),
                );
                AmbiguousPaths::Reject
            }
        };
        ProxyConfig {
            public_prefixes,
            forward_authorization: p.forward_authorization.unwrap_or(false),
            hasura_admin_secret,
            max_header_bytes,
            trusted_proxies,
            websocket_init_timeout: Duration::from_secs(self.positive(
                "proxy.websocket_init_timeout_seconds",
                p.websocket_init_timeout_seconds,
                10,
            )),
            max_header_count,
            max_body_bytes,
            body_limits,
            ambiguous_paths,
        }
    }

    fn store(&mut self, s: file::StoreSection) -> StoreConfig {
        let timeout = Duration::from_millis(self.positive("store.timeout_ms", s.timeout_ms, 500));
        if let Some(url) = self.env.var(env::REDIS_URL).filter(|v| !v.is_empty()) {
            return self.redis(env::REDIS_URL, Secret::new(url), &s, timeout);
        }
        match s.backend.as_deref() {
            None | Some("memory") => StoreConfig::Memory,
            Some("redis") => match s.redis_url.as_ref() {
                Some(src) => match self.secret("store.redis_url", src) {
                    Some(url) => self.redis("store.redis_url", url, &s, timeout),
                    None => StoreConfig::Memory,
                },
                None => {
                    self.issue(
                        "store.redis_url",
                        "is required when store.backend = \"redis\"",
                    );
                    StoreConfig::Memory
                }
            },
            Some(other) => {
                self.issue(
                    "store.backend",
                    format!("`{other}` is not one of: memory, redis"),
                );
                StoreConfig::Memory
            }
        }
    }

    fn redis(
        &mut self,
        key: &str,
        url: Secret,
        s: &file::StoreSection,
        timeout: Duration,
    ) -> StoreConfig {
        let urls: Vec<Secret> = url
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(Secret::new)
            .collect();
        for (i, u) in urls.iter().enumerate() {
            let text = u.expose();
            let scheme_ok = text.starts_with("redis://") || text.starts_with("rediss://");
            if !scheme_ok || redis::parse_redis_url(text).is_none() {
                // Never echo the URL: it may hold a password.
                self.issue(
                    key,
                    format!(
                        "entry {} must be a redis[s]://[user:password@]host:port[/db] URL",
                        i + 1
                    ),
                );
            }
        }
        if urls.is_empty() {
            self.issue(key, "is empty");
        }
        let (mode, mode_key) = self.overridden(env::REDIS_MODE, s.mode.clone());
        let mode_key = if mode_key.is_empty() {
            "store.mode".to_string()
        } else {
            mode_key
        };
        let mode = match mode.as_deref() {
            None | Some("standalone") => {
                if urls.len() > 1 {
                    self.issue(
                        key,
                        "standalone mode takes one URL (set store.mode for cluster or sentinel)",
                    );
                }
                RedisMode::Standalone
            }
            Some("cluster") => RedisMode::Cluster,
            Some("sentinel") => {
                let (master, _) =
                    self.overridden(env::REDIS_SENTINEL_MASTER, s.sentinel_master.clone());
                match master {
                    Some(m) if !m.is_empty() => RedisMode::Sentinel { master: m },
                    _ => {
                        self.issue(
                            "store.sentinel_master",
                            format!(
                                "is required in sentinel mode (or set {})",
                                env::REDIS_SENTINEL_MASTER
                            ),
                        );
                        RedisMode::Standalone
                    }
                }
            }
            Some(other) => {
                self.issue(
                    mode_key,
                    format!("`{other}` is not one of: standalone, sentinel, cluster"),
                );
                RedisMode::Standalone
            }
        };
        let tls_ca_pem = s
            .tls_ca_file
            .as_ref()
            .and_then(|path| match std::fs::read(path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    self.issue(
                        "store.tls_ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            });
        StoreConfig::Redis {
            urls,
            mode,
            tls_ca_pem,
            timeout,
        }
    }

    fn tokens(&mut self, t: file::TokensSection) -> Option<TokenConfig> {
        let issuer = t.issuer.unwrap_or_else(|| "sessiongate".into());
        let audience = t.audience.unwrap_or_else(|| "sessiongate".into());
        let default_ttl = self.positive("tokens.default_ttl_seconds", t.default_ttl_seconds, 3600);
        let max_ttl = self.positive("tokens.max_ttl_seconds", t.max_ttl_seconds, 30 * 86_400);
        if default_ttl > max_ttl {
            self.issue(
                "tokens.default_ttl_seconds",
                "must not exceed tokens.max_ttl_seconds",
            );
        }
        let keys = self.key_list("tokens.keys", &t.keys, ALL_ALGORITHMS);
        let signing_kid = self.signing_kid("tokens", t.signing_kid, &keys, &t.keys)?;
        Some(TokenConfig {
            issuer,
            audience,
            leeway_seconds: t.leeway_seconds.unwrap_or(0),
            default_ttl: Duration::from_secs(default_ttl),
            max_ttl: Duration::from_secs(max_ttl),
            access_ttl: match t.access_token_ttl_seconds {
                None => None,
                Some(0) => {
                    self.issue("tokens.access_token_ttl_seconds", "must be greater than 0");
                    None
                }
                Some(s) => Some(Duration::from_secs(s)),
            },
            signing_kid,
            keys,
        })
    }

    /// Parses a list of keys (`prefix[i]`), each with one of the `allowed` algorithms.
    fn key_list(
        &mut self,
        prefix: &str,
        list: &[file::KeySection],
        allowed: &[(&str, Algorithm)],
    ) -> Vec<KeyConfig> {
        let mut keys = Vec::new();
        for (i, k) in list.iter().enumerate() {
            let key = format!("{prefix}[{i}]");
            if keys
                .iter()
                .any(|existing: &KeyConfig| existing.kid == k.kid)
            {
                self.issue(format!("{key}.kid"), format!("duplicate kid `{}`", k.kid));
                continue;
            }
            if k.kid.is_empty() {
                self.issue(format!("{key}.kid"), "must not be empty");
                continue;
            }
            let Some(algorithm) = allowed
                .iter()
                .find(|(name, _)| *name == k.algorithm)
                .map(|(_, a)| *a)
            else {
                let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
                self.issue(
                    format!("{key}.algorithm"),
                    format!("`{}` is not one of: {}", k.algorithm, names.join(", ")),
                );
                continue;
            };
            let material = if matches!(
                algorithm,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            ) {
                if k.private_key.is_some() || k.public_key.is_some() {
                    self.issue(key.clone(), "an HMAC key takes `secret`, not PEM keys");
                }
                match k
                    .secret
                    .as_ref()
                    .and_then(|s| self.secret(&format!("{key}.secret"), s))
                {
                    Some(s) if s.expose().len() >= 32 => KeyMaterial::Shared(s),
                    Some(_) => {
                        self.issue(format!("{key}.secret"), "must be at least 32 bytes");
                        continue;
                    }
                    None => {
                        if k.secret.is_none() {
                            self.issue(format!("{key}.secret"), "is required for HMAC keys");
                        }
                        continue;
                    }
                }
            } else {
                if k.secret.is_some() {
                    self.issue(
                        format!("{key}.secret"),
                        "an asymmetric key takes PEM keys, not `secret`",
                    );
                }
                let private_pem = k
                    .private_key
                    .as_ref()
                    .and_then(|s| self.secret(&format!("{key}.private_key"), s));
                let public_pem = k
                    .public_key
                    .as_ref()
                    .and_then(|s| self.secret(&format!("{key}.public_key"), s));
                let Some(public_pem) = public_pem else {
                    if k.public_key.is_none() {
                        self.issue(
                            format!("{key}.public_key"),
                            "is required for asymmetric keys",
                        );
                    }
                    continue;
                };
                KeyMaterial::Asymmetric {
                    private_pem,
                    public_pem: public_pem.expose().to_string(),
                }
            };
            let kc = KeyConfig {
                kid: k.kid.clone(),
                algorithm,
                material,
            };
            if let Err(e) = kc.check() {
                self.issue(key, e);
                continue;
            }
            keys.push(kc);
        }
        keys
    }

    /// The `{section}.signing_kid`, which must name a key of `keys` with a private key.
    fn signing_kid(
        &mut self,
        section: &str,
        kid: Option<String>,
        keys: &[KeyConfig],
        raw: &[file::KeySection],
    ) -> Option<String> {
        let Some(signing_kid) = kid else {
            self.issue(format!("{section}.signing_kid"), "is required");
            return None;
        };
        match keys.iter().find(|k| k.kid == signing_kid) {
            None => {
                if !raw.iter().any(|k| k.kid == signing_kid) {
                    self.issue(
                        format!("{section}.signing_kid"),
                        format!("no key in {section}.keys has kid `{signing_kid}`"),
                    );
                }
                None
            }
            Some(k) => {
                if let KeyMaterial::Asymmetric {
                    private_pem: None, ..
                } = k.material
                {
                    self.issue(
                        format!("{section}.signing_kid"),
                        "the signing key needs a private_key",
                    );
                    return None;
                }
                Some(signing_kid)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    const SHIPPED: &str = include_str!("../../config/sessiongate.toml");

    fn no_env() -> HashMap<String, String> {
        HashMap::new()
    }

    #[test]
    fn shipped_config_is_valid_and_loopback_memory() -> Result<(), ConfigError> {
        let c = Config::from_toml(SHIPPED, &no_env())?;
        assert!(c.listen.ip().is_loopback());
        assert!(c.admin_listen.ip().is_loopback());
        assert!(matches!(c.store, StoreConfig::Memory));
        assert!(!c.development_credentials().is_empty());
        Ok(())
    }

    #[test]
    fn env_overrides_file() -> Result<(), ConfigError> {
        let env: HashMap<String, String> = [
            (env::LISTEN, "127.0.0.1:18080"),
            (env::ADMIN_LISTEN, "127.0.0.1:19090"),
            (env::UPSTREAM, "http://127.0.0.1:18081"),
            (env::REDIS_URL, "redis://127.0.0.1:6390/0"),
            (env::ADMIN_TOKEN, "an-admin-token-from-the-env"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = Config::from_toml(SHIPPED, &env)?;
        assert_eq!(c.listen.port(), 18080);
        assert_eq!(c.admin_listen.port(), 19090);
        assert_eq!(c.upstream.addr.port(), 18081);
        assert!(matches!(c.store, StoreConfig::Redis { .. }));
        assert!(c.admin.token.matches(b"an-admin-token-from-the-env"));
        assert!(!c.development_credentials().contains(&"admin.token"));
        Ok(())
    }

    #[test]
    fn formatted_config_hides_secrets() -> Result<(), ConfigError> {
        let c = Config::from_toml(SHIPPED, &no_env())?;
        let printed = format!("{c:?}");
        for secret in DEVELOPMENT_SECRETS {
            assert!(!printed.contains(secret), "{secret} leaked in Debug output");
        }
        Ok(())
    }

    #[test]
    fn every_bad_key_is_named_at_once() {
        let text = r#"
            [server]
            listen = "nope"
            [upstream]
            url = "ftp://x"
            [store]
            backend = "etcd"
            [tokens]
            signing_kid = "k"
            [[tokens.keys]]
            kid = "k"
            algorithm = "none"
            secret = "x"
        "#;
        let Err(ConfigError(issues)) = Config::from_toml(text, &no_env()) else {
            panic!("a bad config was accepted");
        };
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        for expected in [
            "server.listen",
            "upstream.url",
            "store.backend",
            "tokens.keys[0].algorithm",
            "admin.token",
        ] {
            assert!(
                keys.contains(&expected),
                "{expected} not reported in {keys:?}"
            );
        }
    }

    fn issue_keys(text: &str) -> Vec<String> {
        match Config::from_toml(text, &no_env()) {
            Ok(_) => Vec::new(),
            Err(ConfigError(issues)) => issues.into_iter().map(|i| i.key).collect(),
        }
    }

    /// The sections every test config needs (shared with other modules' tests).
    pub(crate) const BASE: &str = r#"
        [tokens]
        signing_kid = "k"
        [[tokens.keys]]
        kid = "k"
        algorithm = "HS256"
        secret = "a-test-secret-of-at-least-32-bytes-long"
        [admin]
        token = "an-admin-token-0123"
    "#;

    #[test]
    fn hasura_mode_from_env_overrides_the_file() -> Result<(), ConfigError> {
        let text = format!("{BASE}\n[hasura]\nmode = \"jwt\"\n");
        // The file asks for jwt without keys (an error), the environment says webhook.
        let env: HashMap<String, String> =
            HashMap::from([(env::HASURA_MODE.to_string(), "webhook".to_string())]);
        let cfg = Config::from_toml(&text, &env)?;
        assert_eq!(cfg.hasura.mode, HasuraMode::Webhook);
        let env: HashMap<String, String> =
            HashMap::from([(env::HASURA_MODE.to_string(), "cookies".to_string())]);
        let keys = match Config::from_toml(BASE, &env) {
            Ok(_) => Vec::new(),
            Err(ConfigError(issues)) => issues.into_iter().map(|i| i.key).collect(),
        };
        assert_eq!(keys, vec![env::HASURA_MODE.to_string()]);
        Ok(())
    }

    #[test]
    fn rate_limits_and_trusted_proxies() -> Result<(), ConfigError> {
        let cfg = Config::from_toml(BASE, &no_env())?;
        assert_eq!(cfg.rate_limits, RateLimitConfig::default());
        assert!(cfg.proxy.trusted_proxies.is_empty());
        let text = format!(
            r#"{BASE}
            [proxy]
            trusted_proxies = ["10.0.0.0/8", "192.0.2.7", "fd00::/8"]
            [rate_limits]
            window_seconds = 10
            create_per_ip = 5
            auth_failures_per_ip = 0
            "#
        );
        let cfg = Config::from_toml(&text, &no_env())?;
        assert_eq!(cfg.proxy.trusted_proxies.len(), 3);
        assert!(cfg.proxy.trusted_proxies[1].contains(
            &"192.0.2.7"
                .parse::<std::net::IpAddr>()
                .map_err(|_| ConfigError(Vec::new()))?
        ));
        assert_eq!(cfg.rate_limits.window, Duration::from_secs(10));
        assert_eq!(
            (
                cfg.rate_limits.create_per_ip,
                cfg.rate_limits.auth_failures_per_ip
            ),
            (5, 0)
        );
        let bad = format!(
            r#"{BASE}
            [proxy]
            trusted_proxies = ["10.0.0.0/8", "not-a-net"]
            [rate_limits]
            window_seconds = 0
            "#
        );
        assert_eq!(
            issue_keys(&bad),
            vec!["proxy.trusted_proxies[1]", "rate_limits.window_seconds"]
        );
        Ok(())
    }

    #[test]
    fn connection_settings_parse_and_bad_ones_name_their_keys() -> Result<(), ConfigError> {
        let cfg = Config::from_toml(BASE, &no_env())?;
        assert_eq!(cfg.connections, ConnectionsConfig::default());
        let text = format!(
            "{BASE}\n[connections]\nmax_connections = 0\nidle_timeout_ms = 1500\n\
             read_buffer_bytes = 0\n"
        );
        let cfg = Config::from_toml(&text, &no_env())?;
        assert_eq!(
            (
                cfg.connections.max,
                cfg.connections.idle_timeout,
                cfg.connections.read_buffer
            ),
            (0, Duration::from_millis(1500), 0)
        );
        let bad = format!(
            "{BASE}\n[connections]\nheader_read_timeout_ms = 0\nread_buffer_bytes = 1048577\n"
        );
        assert_eq!(
            issue_keys(&bad),
            vec![
                "connections.header_read_timeout_ms",
                "connections.read_buffer_bytes"
            ]
        );
        Ok(())
    }

    #[test]
    fn dialect_config_problems_name_their_keys() {
        let text = format!(
            r#"{BASE}
            [[dialects.mottasl.credentials]]
            token = "a-token-123"
            token_sha256 = "abcd"
            roles = []
            default_host_id = " bad host "
            session_ttl_seconds = 0
            [[dialects.amity.networks]]
            network_id = "n"
            api_key = "key-12345678"
            secure = true
            default_host_id = "h"
            [[dialects.amity.networks]]
            network_id = "n"
            api_key = "key-12345678"
            default_host_id = "h"
            [[dialects.amity.networks]]
            network_id = "n"
            api_key = "key-12345678"
            default_host_id = "h"
            [[dialects.rapidly.workspaces]]
            workspace_id = "w"
            token_sha256 = "not-hex"
            default_host_id = "h"
            [[dialects.rapidly.customers]]
            id = "not-a-uuid"
            workspace_id = "elsewhere"
            "#
        );
        let keys = issue_keys(&text);
        for expected in [
            "dialects.mottasl.credentials[0]",
            "dialects.mottasl.credentials[0].businesses",
            "dialects.mottasl.credentials[0].roles",
            "dialects.mottasl.credentials[0].default_host_id",
            "dialects.mottasl.credentials[0].session_ttl_seconds",
            "dialects.amity.networks[0].server_key",
            "dialects.amity.networks[2].network_id",
            "dialects.amity.networks[2]",
            "dialects.rapidly.workspaces[0].token_sha256",
            "dialects.rapidly.workspaces[0].portal_base_url",
            "dialects.rapidly.customers[0].id",
            "dialects.rapidly.customers[0].workspace_id",
        ] {
            assert!(
                keys.iter().any(|k| k == expected),
                "{expected} not reported in {keys:?}"
            );
        }
    }

    /// The Kubernetes dev overlay's committed secrets are development credentials wherever
    /// they are used (and these constants stay in step with the files).
    #[test]
    fn the_dev_overlays_committed_secrets_are_development_credentials() -> Result<(), ConfigError> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/kubernetes/overlays/dev/secrets"
        );
        let token = std::fs::read_to_string(format!("{dir}/admin-token")).unwrap_or_default();
        let text = format!(
            r#"
            [tokens]
            signing_kid = "k"
            [[tokens.keys]]
            kid = "k"
            algorithm = "EdDSA"
            private_key = {{ file = "{dir}/signing.pem" }}
            public_key = {{ file = "{dir}/signing.pub.pem" }}
            [admin]
            token = "{}"
            [hasura]
            mode = "jwt"
            signing_kid = "h"
            [[hasura.keys]]
            kid = "h"
            algorithm = "EdDSA"
            private_key = {{ file = "{dir}/signing.pem" }}
            public_key = {{ file = "{dir}/signing.pub.pem" }}
            "#,
            token.trim()
        );
        let cfg = Config::from_toml(&text, &no_env())?;
        assert_eq!(
            cfg.development_credentials(),
            vec![
                "admin.token",
                "tokens.keys.public_key",
                "hasura.keys.public_key"
            ]
        );
        // On a public listener they refuse to start, naming each and the listener.
        let env: HashMap<String, String> =
            HashMap::from([(env::LISTEN.to_string(), "0.0.0.0:8080".to_string())]);
        let Err(ConfigError(issues)) = Config::from_toml(&text, &env) else {
            panic!("started with development credentials on 0.0.0.0");
        };
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].key.contains("hasura.keys.public_key"),
            "{issues:?}"
        );
        assert!(issues[0].message.contains("server.listen = 0.0.0.0:8080"));
        let env: HashMap<String, String> = HashMap::from([
            (env::LISTEN.to_string(), "0.0.0.0:8080".to_string()),
            (
                env::ALLOW_DEVELOPMENT_CREDENTIALS.to_string(),
                "1".to_string(),
            ),
        ]);
        assert!(Config::from_toml(&text, &env).is_ok());
        Ok(())
    }

    #[test]
    fn dialects_are_off_unless_configured_and_digests_work() -> Result<(), ConfigError> {
        let c = Config::from_toml(BASE, &no_env())?;
        assert!(c.dialects.mottasl.is_none() && c.dialects.amity.is_none());
        let shipped = Config::from_toml(SHIPPED, &no_env())?;
        assert!(shipped.dialects.mottasl.is_some());
        assert!(shipped.dialects.amity.is_some());
        assert!(shipped.dialects.rapidly.is_some());
        let dev = shipped.development_credentials();
        for key in [
            "dialects.mottasl.credentials",
            "dialects.amity.networks",
            "dialects.rapidly.workspaces",
        ] {
            assert!(dev.contains(&key), "{key} not flagged as development");
        }
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"from-a-digest-1"));
        let text = format!(
            r#"{BASE}
            [dialects.mottasl]
            enabled = true
            [[dialects.mottasl.credentials]]
            token_sha256 = "{digest}"
            businesses = ["b"]
            roles = ["user"]
            default_host_id = "h"
            [dialects.amity]
            enabled = false
            "#
        );
        let c = Config::from_toml(&text, &no_env())?;
        let m = c.dialects.mottasl.ok_or_else(|| ConfigError(Vec::new()))?;
        assert!(dialects::find_credential(&m.credentials, b"from-a-digest-1").is_some());
        assert!(c.dialects.amity.is_none(), "enabled = false turns it off");
        Ok(())
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let Err(e) = Config::from_toml("[server]\nlisen = \"127.0.0.1:1\"\n", &no_env()) else {
            panic!("unknown key accepted");
        };
        let text = e.to_string();
        assert!(text.contains("lisen"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn secrets_come_from_env_and_files() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("admin-token");
        std::fs::write(&path, "token-from-a-mounted-file\n")?;
        let text = SHIPPED.replace(
            "token = \"dev-admin-token-not-for-production\"",
            &format!("token = {{ file = \"{}\" }}", path.display()),
        );
        let c = Config::from_toml(&text, &no_env())?;
        assert!(c.admin.token.matches(b"token-from-a-mounted-file"));

        let text = SHIPPED.replace(
            "token = \"dev-admin-token-not-for-production\"",
            "token = { env = \"MY_ADMIN_TOKEN\" }",
        );
        let env: HashMap<String, String> = [(
            "MY_ADMIN_TOKEN".to_string(),
            "token-from-the-environment".to_string(),
        )]
        .into();
        let c = Config::from_toml(&text, &env)?;
        assert!(c.admin.token.matches(b"token-from-the-environment"));
        let Err(e) = Config::from_toml(&text, &no_env()) else {
            panic!("missing env secret accepted");
        };
        assert!(e.to_string().contains("MY_ADMIN_TOKEN"));
        Ok(())
    }
}
