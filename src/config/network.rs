//! Validation of the listener, upstream, proxy, forward-auth, connection and rate-limit
//! sections.

use super::*;

impl Validator<'_> {
    /// A list of addresses or CIDR ranges: the environment's (comma-separated) if set, else
    /// the file's. Each bad entry is an issue naming its key.
    pub(super) fn networks(
        &mut self,
        key: &str,
        var: &str,
        file_value: Option<Vec<String>>,
    ) -> Vec<IpNet> {
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

    pub(super) fn forward_auth(&mut self, f: file::ForwardAuthSection) -> ForwardAuthConfig {
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

    pub(super) fn connections(&mut self, c: file::ConnectionsSection) -> ConnectionsConfig {
        let d = ConnectionsConfig::default();
        let mut ms = |key: &str, v: Option<u64>, default: Duration| {
            let v = v.unwrap_or(u64::try_from(default.as_millis()).unwrap_or(u64::MAX));
            if !(1..=86_400_000).contains(&v) {
                self.issue(key, "must be between 1 and 86400000 (milliseconds)");
                return default;
            }
            Duration::from_millis(v)
        };
        let header_read_timeout = ms(
            "connections.header_read_timeout_ms",
            c.header_read_timeout_ms,
            d.header_read_timeout,
        );
        // Unset: 10 s, or the head's deadline when that is shorter (a client that cannot
        // finish a handshake in the time it would have for its request head is not served).
        let tls_handshake_timeout = ms(
            "connections.tls_handshake_timeout_ms",
            c.tls_handshake_timeout_ms,
            d.tls_handshake_timeout.min(header_read_timeout),
        );
        ConnectionsConfig {
            header_read_timeout,
            tls_handshake_timeout,
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
            // Unset: as many as connections, so one address holds no more upstream
            // connections over h2 than it could over HTTP/1.1.
            write_timeout: ms(
                "connections.write_timeout_ms",
                c.write_timeout_ms,
                d.write_timeout,
            ),
            max_streams_per_ip: c
                .max_streams_per_ip
                .or(c.max_connections_per_ip)
                .unwrap_or(d.max_streams_per_ip),
            read_buffer: match c.read_buffer_bytes.unwrap_or(d.read_buffer) {
                b if b <= model::MAX_READ_BUFFER => b,
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

    pub(super) fn tls(&mut self, t: file::TlsSection) -> Option<TlsConfig> {
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

    pub(super) fn rate_limits(&mut self, r: file::RateLimitsSection) -> RateLimitConfig {
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

    pub(super) fn upstream(&mut self, u: file::UpstreamSection) -> Option<UpstreamConfig> {
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
        let ca = match &u.ca_file {
            Some(path) if tls => match std::fs::read(path) {
                Ok(pem) => match crate::pem::upstream_ca(&pem) {
                    Ok(ca) => Some(ca),
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
                ca,
            }),
            Ok(None) | Err(_) => {
                self.issue(key, format!("cannot resolve `{authority}`"));
                None
            }
        }
    }

    pub(super) fn proxy(&mut self, p: file::ProxySection) -> ProxyConfig {
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
}
