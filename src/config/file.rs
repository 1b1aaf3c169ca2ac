//! The config file's shape, exactly as serde reads it. Nothing here is validated yet:
//! `super::Config::from_file` turns it into the checked internal config.

use serde::Deserialize;
use std::path::PathBuf;

/// Where a secret comes from: inline in the file, an environment variable, or a file
/// (a mounted Kubernetes Secret).
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    /// The value itself, in the file (fine for development, avoid in production).
    Inline(String),
    /// `{ env = "NAME" }`: read from the environment at start.
    Env {
        /// Variable name.
        env: String,
    },
    /// `{ file = "/path" }`: read from a file at start; one trailing newline is dropped.
    File {
        /// File path.
        file: PathBuf,
    },
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(***)"),
            SecretSource::Env { env } => write!(f, "Env({env})"),
            SecretSource::File { file } => write!(f, "File({})", file.display()),
        }
    }
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`
    #[serde(default)]
    pub server: ServerSection,
    /// `[upstream]`
    #[serde(default)]
    pub upstream: UpstreamSection,
    /// `[proxy]`
    #[serde(default)]
    pub proxy: ProxySection,
    /// `[store]`
    #[serde(default)]
    pub store: StoreSection,
    /// `[cache]`
    #[serde(default)]
    pub cache: CacheSection,
    /// `[tokens]`
    #[serde(default)]
    pub tokens: TokensSection,
    /// `[admin]`
    #[serde(default)]
    pub admin: AdminSection,
    /// `[dialects]`
    #[serde(default)]
    pub dialects: DialectsSection,
    /// `[rate_limits]`
    #[serde(default)]
    pub rate_limits: RateLimitsSection,
    /// `[hasura]`
    #[serde(default)]
    pub hasura: HasuraSection,
    /// `[connections]`
    #[serde(default)]
    pub connections: ConnectionsSection,
    /// `[forward_auth]`
    #[serde(default)]
    pub forward_auth: ForwardAuthSection,
    /// `[cors]`
    #[serde(default)]
    pub cors: CorsSection,
    /// `[websocket]`
    #[serde(default)]
    pub websocket: WebSocketSection,
}

/// `[websocket]`: what a relayed GraphQL socket may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSection {
    /// How long a client message may take to complete once its first byte arrived.
    pub message_timeout_ms: Option<u64>,
    /// Bytes of incomplete client messages held across every socket of this process.
    pub max_buffered_bytes: Option<u64>,
    /// Most sockets one session may hold open at once.
    pub max_per_session: Option<u64>,
}

/// `[cors]`: browsers on other origins. Off while `allowed_origins` is empty.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// Exact origins (`https://app.example.com`), `*`, or one leading-label wildcard
    /// (`https://*.example.com`).
    pub allowed_origins: Option<Vec<String>>,
    /// Request headers a browser may send (preflight `Access-Control-Allow-Headers`).
    pub allowed_headers: Option<Vec<String>>,
    /// Response headers a script may read (`Access-Control-Expose-Headers`).
    pub exposed_headers: Option<Vec<String>>,
    /// `Access-Control-Allow-Credentials: true` (cookies, HTTP auth).
    pub allow_credentials: Option<bool>,
    /// How long a browser may cache a preflight answer.
    pub max_age_seconds: Option<u64>,
}

/// `[connections]`: how many client connections are accepted and how long a client may
/// take (0 turns a cap off; timeouts must be positive).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsSection {
    /// Open client connections on the proxy listener; new ones past it get 503 and close.
    pub max_connections: Option<usize>,
    /// Open client connections per address (IPv6: per /64); trusted proxies are exempt.
    pub max_connections_per_ip: Option<usize>,
    /// Time for a whole request head, from the connection's open (or the request's first
    /// byte on a kept-alive connection); 408 beyond.
    pub header_read_timeout_ms: Option<u64>,
    /// Time for a whole request body after its head (and longest pause between its reads);
    /// 408 beyond.
    pub body_read_timeout_ms: Option<u64>,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout_ms: Option<u64>,
    /// Read buffer per client connection, below the HTTP parser (0: none).
    pub read_buffer_bytes: Option<usize>,
    /// Time for a TLS handshake, from the accept (the connection holds its slot meanwhile).
    pub tls_handshake_timeout_ms: Option<u64>,
    /// Longest a response write may wait for the client (a client that stops reading, or
    /// an h2 stream with no flow-control window); then the stream or connection ends.
    pub write_timeout_ms: Option<u64>,
    /// HTTP/2 requests in flight per client address, over all its connections (each may
    /// hold an upstream connection); also the most streams one h2 connection may open.
    pub max_streams_per_ip: Option<usize>,
}

/// One `[[proxy.body_limits]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyLimitEntry {
    /// Path prefix (normalised, matched at segment boundaries; the longest wins).
    pub prefix: String,
    /// Largest request body under this prefix; 413 beyond.
    pub max_body_bytes: u64,
}

/// `[hasura]`: how the upstream Hasura learns who is calling.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HasuraSection {
    /// `headers` (trusted `x-hasura-*` headers), `jwt` (a minted Hasura JWT) or `webhook`
    /// (Hasura asks `/auth/hasura`).
    pub mode: Option<String>,
    /// Claims namespace of minted JWTs (default `https://hasura.io/jwt/claims`).
    pub claims_namespace: Option<String>,
    /// Lifetime of a minted JWT (capped by its session).
    pub jwt_ttl_seconds: Option<u64>,
    /// `iss` of minted JWTs (optional).
    pub jwt_issuer: Option<String>,
    /// `aud` of minted JWTs (optional).
    pub jwt_audience: Option<String>,
    /// The key in `hasura.keys` that signs.
    pub signing_kid: Option<String>,
    /// `Cache-Control: max-age` of `/.well-known/jwks.json`.
    pub jwks_max_age_seconds: Option<u64>,
    /// Longest `Cache-Control: max-age` the webhook answers (capped by the session).
    pub webhook_max_age_seconds: Option<u64>,
    /// Asymmetric keys (RS256, ES256 or EdDSA); every one is published in the JWKS.
    #[serde(default)]
    pub keys: Vec<KeySection>,
}

/// `[rate_limits]`: abuse protection on session creation, refresh and failed authentication.
/// Every limit counts requests per `window_seconds`; 0 turns that one limit off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsSection {
    /// Whether any limit applies (default true).
    pub enabled: Option<bool>,
    /// Length of the sliding window.
    pub window_seconds: Option<u64>,
    /// Session-creation requests per client IP.
    pub create_per_ip: Option<u32>,
    /// Session-creation requests per credential (API key / token); a credential's own
    /// `session_rate_limit` overrides it.
    pub create_per_credential: Option<u32>,
    /// `POST /auth/refresh` requests per client IP.
    pub refresh_per_ip: Option<u32>,
    /// `POST /auth/refresh` requests per session (the credential a refresh token is).
    pub refresh_per_session: Option<u32>,
    /// Failed authentications per client IP; past it, the IP gets 429 on everything that
    /// needs authentication until the window lets it go.
    pub auth_failures_per_ip: Option<u32>,
}

/// `[server]`: listeners and process settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Proxy listener address.
    pub listen: Option<String>,
    /// Admin/metrics listener address.
    pub admin_listen: Option<String>,
    /// Worker threads of the proxy service.
    pub threads: Option<usize>,
    /// Seconds to keep serving in-flight requests after SIGTERM.
    pub grace_period_seconds: Option<u64>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// TLS on the proxy listener (HTTP/2 and HTTP/1.1 over TLS); plain HTTP/1.1 without.
    pub tls: Option<TlsSection>,
}

/// `[server.tls]`: the proxy listener's certificate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain (e.g. a Kubernetes TLS Secret's `tls.crt`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (`tls.key`).
    pub key_file: Option<PathBuf>,
    /// How often the files are checked for changes (0: only on SIGHUP).
    pub reload_interval_seconds: Option<u64>,
}

/// `[upstream]`: the backend everything is forwarded to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `http://host:port`.
    pub url: Option<String>,
    /// TCP connect timeout.
    pub connect_timeout_ms: Option<u64>,
    /// Timeout between reads of the upstream response.
    pub read_timeout_ms: Option<u64>,
    /// PEM CA that signed a `https://` upstream's certificate (system roots when absent).
    pub ca_file: Option<PathBuf>,
}

/// `[proxy]`: what is forwarded and how.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Path prefixes forwarded without authentication (and without identity).
    pub public_prefixes: Option<Vec<String>>,
    /// Whether the client's `Authorization` header goes upstream on authenticated requests.
    pub forward_authorization: Option<bool>,
    /// Largest total size of request header fields (names + values) accepted; 431 beyond.
    pub max_header_bytes: Option<usize>,
    /// Most request header fields accepted; 431 beyond.
    pub max_header_count: Option<usize>,
    /// Largest request body forwarded upstream (routes without a `body_limits` entry); 413
    /// beyond.
    pub max_body_bytes: Option<u64>,
    /// Per-route body limits.
    pub body_limits: Option<Vec<BodyLimitEntry>>,
    /// Adds `x-hasura-admin-secret` on authenticated requests (Hasura trusted-header mode).
    pub hasura_admin_secret: Option<SecretSource>,
    /// How long a WebSocket without a bearer may take to send graphql-ws `connection_init`.
    pub websocket_init_timeout_seconds: Option<u64>,
    /// Addresses or CIDR ranges of proxies in front of the gateway whose
    /// `X-Forwarded-For` is believed (empty: the socket's peer is the client).
    pub trusted_proxies: Option<Vec<String>>,
    /// `reject` (default): 400 for paths a lenient backend could route elsewhere (encoded
    /// `/` or `\`, `\`, `;`, double encodings, control bytes, overlong UTF-8); `forward`:
    /// pass them on as sent (only for a backend that reads them literally).
    pub ambiguous_paths: Option<String>,
}

/// `[forward_auth]`: `/auth/verify` for a proxy in front (nginx `auth_request`,
/// ingress-nginx `auth-url`, Traefik `forwardAuth`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthSection {
    /// The one header that carries the original request URI (e.g. `x-original-url` for
    /// ingress-nginx). Unset: none is believed, and public paths must be routed around the
    /// auth subrequest.
    pub original_uri_header: Option<String>,
    /// Addresses or CIDR ranges of the proxies that call `/auth/verify`: only their
    /// original-URI header is believed, and only they get the minted Hasura JWT.
    pub trusted_peers: Option<Vec<String>>,
}

/// `[store]`: where sessions live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `memory` or `redis`.
    pub backend: Option<String>,
    /// `redis[s]://[user:password@]host:port[/db]`, or a comma-separated list (cluster
    /// nodes, or the sentinels); may carry a password, hence a secret.
    pub redis_url: Option<SecretSource>,
    /// `standalone`, `sentinel` or `cluster`.
    pub mode: Option<String>,
    /// The master the sentinels monitor (sentinel mode).
    pub sentinel_master: Option<String>,
    /// PEM file of the CA that signed the Redis servers' certificates (`rediss://`); the
    /// system roots are used when absent.
    pub tls_ca_file: Option<PathBuf>,
    /// Per-operation timeout.
    pub timeout_ms: Option<u64>,
    /// How long into a store outage cached sessions are still served (0 = strict).
    pub stale_window_seconds: Option<u64>,
    /// Start (and report ready) although Redis' `maxmemory-policy` may evict keys
    /// (`allkeys-*`, `volatile-*`): revocations and revoke-all generations can then be
    /// lost. Default false.
    pub allow_eviction: Option<bool>,
}

/// `[cache]`: the in-process session cache.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Maximum cached sessions.
    pub max_entries: Option<u64>,
    /// Upper bound of how long a session stays cached (never beyond its expiry).
    pub ttl_seconds: Option<u64>,
}

/// `[tokens]`: access-token issuing and verification.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensSection {
    /// `iss` claim written and required.
    pub issuer: Option<String>,
    /// `aud` claim written and required.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway_seconds: Option<u64>,
    /// Session TTL when a creation request gives none.
    pub default_ttl_seconds: Option<u64>,
    /// Longest session TTL a request may ask for.
    pub max_ttl_seconds: Option<u64>,
    /// Lifetime of each access token (never beyond its session); refresh issues new ones.
    /// Absent: an access token lives as long as its session.
    pub access_token_ttl_seconds: Option<u64>,
    /// How long a spent refresh token, presented again, gets the successor issued for it
    /// instead of revoking the session (a client retrying a refresh it got no answer to).
    pub refresh_retry_grace_seconds: Option<u64>,
    /// The `kid` of the key that signs new tokens.
    pub signing_kid: Option<String>,
    /// Every key that verifies tokens (the signing key among them).
    #[serde(default)]
    pub keys: Vec<KeySection>,
}

/// One `[[tokens.keys]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    /// Key id, written to and matched against the JWT `kid` header.
    pub kid: String,
    /// `HS256`, `HS384`, `HS512`, `ES256`, `RS256` or `EdDSA`; pinned for this key.
    pub algorithm: String,
    /// Shared secret for HS* keys.
    pub secret: Option<SecretSource>,
    /// PEM private key for asymmetric keys (optional: a key without it only verifies).
    pub private_key: Option<SecretSource>,
    /// PEM public key for asymmetric keys.
    pub public_key: Option<SecretSource>,
}

/// `[admin]`: the admin API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Bearer token of the admin API.
    pub token: Option<SecretSource>,
    /// Largest admin request body accepted.
    pub max_body_bytes: Option<usize>,
    /// Open connections to the admin listener (0: no cap).
    pub max_connections: Option<usize>,
}

/// `[dialects]`: the provider session APIs the gateway terminates itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialectsSection {
    /// Largest request body a dialect endpoint reads (default 64 KiB); 413 beyond.
    pub max_body_bytes: Option<usize>,
    /// `[dialects.mottasl]`
    pub mottasl: Option<MottaslSection>,
    /// `[dialects.amity]`
    pub amity: Option<AmitySection>,
    /// `[dialects.rapidly]`
    pub rapidly: Option<RapidlySection>,
}

/// `[dialects.mottasl]`: `POST /v1/app/user.new.session`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MottaslSection {
    /// Whether the endpoint is served (default true when the section exists).
    pub enabled: Option<bool>,
    /// Integration tokens.
    #[serde(default)]
    pub credentials: Vec<MottaslCredentialSection>,
}

/// One Mottasl integration token and its scope.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MottaslCredentialSection {
    /// A name for logs and metrics (never the token).
    pub name: Option<String>,
    /// The bearer token (inline, `{env}` or `{file}`).
    pub token: Option<SecretSource>,
    /// Or its SHA-256, hex, so the config holds no plaintext.
    pub token_sha256: Option<String>,
    /// Businesses it may create sessions for.
    #[serde(default)]
    pub businesses: Vec<String>,
    /// Roles it may grant.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Host ids a request may ask for with `?host_id=` (empty: any).
    #[serde(default)]
    pub allowed_host_ids: Vec<String>,
    /// Host id when the request names none.
    pub default_host_id: Option<String>,
    /// Session lifetime.
    pub session_ttl_seconds: Option<u64>,
    /// `channels` reported in the response.
    #[serde(default)]
    pub channels: Vec<String>,
    /// `billing_source` reported in the response.
    pub billing_source: Option<String>,
    /// `user_details.language` reported in the response.
    pub language: Option<String>,
    /// Session-creation requests per rate-limit window for this token (overrides
    /// `rate_limits.create_per_credential`; 0 = unlimited).
    pub session_rate_limit: Option<u32>,
}

/// `[dialects.amity]`: `POST /api/v3|v4|v5/sessions` and the calls the SDK's login makes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmitySection {
    /// Whether the endpoints are served (default true when the section exists).
    pub enabled: Option<bool>,
    /// Path prefixes (realtime sockets) where the access token may come in a `token` query
    /// parameter instead of the `Authorization` header.
    #[serde(default)]
    pub realtime_paths: Vec<String>,
    /// Lifetime of secure-mode auth tokens.
    pub auth_token_ttl_seconds: Option<u64>,
    /// Path prefixes of the Amity API the upstream serves (default `/api/v3/`, `/api/v4/`,
    /// `/api/v5/`): the gateway's refusals there are in Amity's error format, so the SDK
    /// recognises an expired token and renews.
    pub api_prefixes: Option<Vec<String>>,
    /// A new login from a device ends that device's previous session (default false:
    /// browsers share one `deviceId` across tabs, and a login in one tab must not log out
    /// another).
    pub replace_device_sessions: Option<bool>,
    /// Networks (one API key each).
    #[serde(default)]
    pub networks: Vec<AmityNetworkSection>,
}

/// One Amity network.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmityNetworkSection {
    /// A name for logs and metrics.
    pub name: Option<String>,
    /// The network id: `x-hasura-business-id` of its sessions.
    pub network_id: Option<String>,
    /// `x-api-key` (inline, `{env}` or `{file}`).
    pub api_key: Option<SecretSource>,
    /// Or its SHA-256, hex.
    pub api_key_sha256: Option<String>,
    /// Secure mode: session creation needs an auth token from the server-key endpoint.
    pub secure: Option<bool>,
    /// The server key (`x-server-key`), required in secure mode.
    pub server_key: Option<SecretSource>,
    /// Or its SHA-256, hex (it then also keys the auth tokens: keep it secret).
    pub server_key_sha256: Option<String>,
    /// `x-host-id` of its sessions.
    pub default_host_id: Option<String>,
    /// `x-hasura-role` of its sessions (default `user`).
    pub role: Option<String>,
    /// Session lifetime.
    pub session_ttl_seconds: Option<u64>,
    /// Served at `GET /api/v3/network-settings/chat` (default: message preview off).
    pub chat_settings: Option<toml::Value>,
    /// Session-creation requests per rate-limit window for this API key (overrides
    /// `rate_limits.create_per_credential`; 0 = unlimited).
    pub session_rate_limit: Option<u32>,
}

/// `[dialects.rapidly]`: `POST /api/customer-sessions/`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RapidlySection {
    /// Whether the endpoint is served (default true when the section exists).
    pub enabled: Option<bool>,
    /// Workspaces (one access token each).
    #[serde(default)]
    pub workspaces: Vec<RapidlyWorkspaceSection>,
    /// Customers provisioned from the config on first use (the admin API manages others).
    #[serde(default)]
    pub customers: Vec<RapidlyCustomerSection>,
}

/// One Rapidly workspace and its access token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RapidlyWorkspaceSection {
    /// A name for logs and metrics.
    pub name: Option<String>,
    /// Workspace id: `x-hasura-business-id` of its sessions.
    pub workspace_id: Option<String>,
    /// Workspace access token (inline, `{env}` or `{file}`).
    pub token: Option<SecretSource>,
    /// Or its SHA-256, hex.
    pub token_sha256: Option<String>,
    /// Scopes the token carries (default `customer_sessions:write`).
    pub scopes: Option<Vec<String>>,
    /// `x-host-id` of its sessions.
    pub default_host_id: Option<String>,
    /// Session lifetime.
    pub session_ttl_seconds: Option<u64>,
    /// Whether `member_id` / `external_member_id` are accepted.
    pub member_model_enabled: Option<bool>,
    /// Customer portal base URL; the response's `customer_portal_url` adds the token.
    pub portal_base_url: Option<String>,
    /// Session-creation requests per rate-limit window for this token (overrides
    /// `rate_limits.create_per_credential`; 0 = unlimited).
    pub session_rate_limit: Option<u32>,
}

/// A customer provisioned from the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RapidlyCustomerSection {
    /// UUIDv4.
    pub id: String,
    /// Workspace it belongs to.
    pub workspace_id: String,
    /// Email.
    pub email: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// External id.
    pub external_id: Option<String>,
}
