//! Environment overrides, read through a trait so that tests pass a map instead of
//! mutating the process environment.

use std::collections::HashMap;

/// Proxy listener address.
pub const LISTEN: &str = "SESSIONGATE_LISTEN";
/// Admin/metrics listener address.
pub const ADMIN_LISTEN: &str = "SESSIONGATE_ADMIN_LISTEN";
/// Backend URL.
pub const UPSTREAM: &str = "SESSIONGATE_UPSTREAM";
/// Redis URL; when set, the Redis store is used.
pub const REDIS_URL: &str = "SESSIONGATE_REDIS_URL";
/// `standalone` (default), `sentinel` or `cluster`.
pub const REDIS_MODE: &str = "SESSIONGATE_REDIS_MODE";
/// Name of the master the sentinels monitor (sentinel mode).
pub const REDIS_SENTINEL_MASTER: &str = "SESSIONGATE_REDIS_SENTINEL_MASTER";
/// Admin API bearer token.
pub const ADMIN_TOKEN: &str = "SESSIONGATE_ADMIN_TOKEN";
/// File holding the admin API bearer token.
pub const ADMIN_TOKEN_FILE: &str = "SESSIONGATE_ADMIN_TOKEN_FILE";
/// Hasura admin secret added upstream.
pub const HASURA_ADMIN_SECRET: &str = "SESSIONGATE_HASURA_ADMIN_SECRET";
/// File holding the Hasura admin secret.
pub const HASURA_ADMIN_SECRET_FILE: &str = "SESSIONGATE_HASURA_ADMIN_SECRET_FILE";
/// `headers`, `jwt` or `webhook`.
pub const HASURA_MODE: &str = "SESSIONGATE_HASURA_MODE";
/// `text` or `json`.
pub const LOG_FORMAT: &str = "SESSIONGATE_LOG_FORMAT";
/// Proxy worker threads; replaces `server.threads`.
pub const THREADS: &str = "SESSIONGATE_THREADS";
/// Comma-separated addresses or CIDR ranges; replaces `proxy.trusted_proxies`.
pub const TRUSTED_PROXIES: &str = "SESSIONGATE_TRUSTED_PROXIES";
/// Comma-separated addresses or CIDR ranges; replaces `forward_auth.trusted_peers`.
pub const FORWARD_AUTH_TRUSTED_PEERS: &str = "SESSIONGATE_FORWARD_AUTH_TRUSTED_PEERS";
/// Replaces `forward_auth.original_uri_header`.
pub const FORWARD_AUTH_ORIGINAL_URI_HEADER: &str = "SESSIONGATE_FORWARD_AUTH_ORIGINAL_URI_HEADER";
/// Comma-separated origins; replaces `cors.allowed_origins`.
pub const CORS_ALLOWED_ORIGINS: &str = "SESSIONGATE_CORS_ALLOWED_ORIGINS";
/// `1`: start even though a development credential is in use on a non-loopback listener.
pub const ALLOW_DEVELOPMENT_CREDENTIALS: &str = "SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS";

/// A source of environment variables.
pub trait EnvSource {
    /// The variable's value, if set (and valid UTF-8).
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}
