//! Validated configuration.
//!
//! Precedence, highest first: environment variables (`SESSIONGATE_*`, see [`env`]) > the
//! config file > built-in defaults. Every problem is collected and reported at once, each
//! naming its key, so `sessiongate check` shows the whole list in one run.

mod cors;
mod development;
pub mod dialects;
pub mod env;
pub mod file;
mod keys;
mod model;
mod network;
mod signing;
mod store;

pub use development::{DEVELOPMENT_PUBLIC_KEYS, DEVELOPMENT_SECRETS};
pub use model::*;

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
        // A container limited to N CPUs (or a benchmark pinned to one) sets the worker
        // count to match without editing the file.
        let (threads_text, threads_key) =
            self.overridden(env::THREADS, f.server.threads.map(|t| t.to_string()));
        let threads_key = if threads_key.is_empty() {
            "server.threads".to_string()
        } else {
            threads_key
        };
        let threads = match threads_text.as_deref().map(str::parse::<usize>) {
            None => 2,
            Some(Ok(t)) if (1..=1024).contains(&t) => t,
            Some(_) => {
                self.issue(threads_key, "must be a whole number between 1 and 1024");
                2
            }
        };
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
        let cors = self.cors(f.cors);
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
        let websocket = WebSocketConfig {
            message_timeout: Duration::from_millis(self.positive(
                "websocket.message_timeout_ms",
                f.websocket.message_timeout_ms,
                10_000,
            )),
            max_buffered_bytes: usize::try_from(self.positive(
                "websocket.max_buffered_bytes",
                f.websocket.max_buffered_bytes,
                64 * 1024 * 1024,
            ))
            .unwrap_or(usize::MAX),
            max_per_session: usize::try_from(self.positive(
                "websocket.max_per_session",
                f.websocket.max_per_session,
                16,
            ))
            .unwrap_or(usize::MAX),
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
                max_connections: f.admin.max_connections.unwrap_or(256),
            },
            dialects,
            rate_limits,
            hasura: hasura?,
            connections,
            forward_auth,
            cors,
            websocket,
        })
        .filter(|cfg| self.development_exposure(cfg))
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
            (env::THREADS, "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = Config::from_toml(SHIPPED, &env)?;
        assert_eq!(c.threads, 1);
        assert_eq!(c.listen.port(), 18080);
        assert_eq!(c.admin_listen.port(), 19090);
        assert_eq!(c.upstream.addr.port(), 18081);
        assert!(matches!(c.store, StoreConfig::Redis { .. }));
        assert!(c.admin.token.matches(b"an-admin-token-from-the-env"));
        assert!(!c.development_credentials().contains(&"admin.token"));
        for bad in ["0", "many", "2000"] {
            let env: HashMap<String, String> =
                HashMap::from([(env::THREADS.to_string(), bad.to_string())]);
            let Err(ConfigError(issues)) = Config::from_toml(SHIPPED, &env) else {
                panic!("SESSIONGATE_THREADS={bad} accepted");
            };
            assert_eq!(issues[0].key, env::THREADS, "{issues:?}");
        }
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
             read_buffer_bytes = 4096\n"
        );
        let cfg = Config::from_toml(&text, &no_env())?;
        assert_eq!(
            (
                cfg.connections.max,
                cfg.connections.idle_timeout,
                cfg.connections.read_buffer
            ),
            (0, Duration::from_millis(1500), 4096)
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
