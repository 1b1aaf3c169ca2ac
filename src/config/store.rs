//! Validation of the `[store]` section: memory, or Redis (standalone, Sentinel, Cluster).

use super::*;

impl Validator<'_> {
    pub(super) fn store(&mut self, s: file::StoreSection) -> StoreConfig {
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

    pub(super) fn redis(
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
            allow_eviction: s.allow_eviction.unwrap_or(false),
        }
    }
}
