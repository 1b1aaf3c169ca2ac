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
    /// Adds `x-hasura-admin-secret` on authenticated requests (Hasura trusted-header mode).
    pub hasura_admin_secret: Option<SecretSource>,
}

/// `[store]`: where sessions live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `memory` or `redis`.
    pub backend: Option<String>,
    /// `redis://[user:password@]host:port[/db]`; may carry a password, hence a secret.
    pub redis_url: Option<SecretSource>,
    /// Per-operation timeout.
    pub timeout_ms: Option<u64>,
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
}
