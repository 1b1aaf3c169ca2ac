//! Validation of `[cors]`: origins must be what a browser sends in `Origin` (scheme, host,
//! optional port; no path), so a pattern that could never match, or could match more than
//! meant, fails the start naming its entry.

use super::*;

impl Validator<'_> {
    pub(super) fn cors(&mut self, c: file::CorsSection) -> CorsConfig {
        let (entries, key) = match self
            .env
            .var(env::CORS_ALLOWED_ORIGINS)
            .filter(|v| !v.trim().is_empty())
        {
            Some(v) => (
                v.split(',').map(|e| e.trim().to_string()).collect(),
                env::CORS_ALLOWED_ORIGINS.to_string(),
            ),
            None => (
                c.allowed_origins.unwrap_or_default(),
                "cors.allowed_origins".to_string(),
            ),
        };
        let mut allowed_origins = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match origin_rule(entry) {
                Ok(rule) => allowed_origins.push(rule),
                Err(why) => self.issue(format!("{key}[{i}]"), format!("`{entry}` {why}")),
            }
        }
        let allow_credentials = c.allow_credentials.unwrap_or(false);
        if allow_credentials && allowed_origins.contains(&OriginRule::Any) {
            self.issue(
                "cors.allow_credentials",
                "cannot be true with `*` in cors.allowed_origins: any site could then make \
                 credentialed calls; list the origins",
            );
        }
        let mut header_list = |name: &str, list: Option<Vec<String>>, default: &[&str]| {
            let list = list.unwrap_or_else(|| default.iter().map(|h| h.to_string()).collect());
            let mut out = Vec::new();
            for (i, h) in list.iter().enumerate() {
                match http::HeaderName::from_bytes(h.trim().as_bytes()) {
                    Ok(n) => out.push(n.as_str().to_string()),
                    Err(_) => self.issue(
                        format!("cors.{name}[{i}]"),
                        format!("`{h}` is not a header name"),
                    ),
                }
            }
            out
        };
        let allowed_headers = header_list(
            "allowed_headers",
            c.allowed_headers,
            CorsConfig::DEFAULT_ALLOWED_HEADERS,
        );
        let exposed_headers = header_list(
            "exposed_headers",
            c.exposed_headers,
            CorsConfig::DEFAULT_EXPOSED_HEADERS,
        );
        let max_age = c.max_age_seconds.unwrap_or(600);
        if max_age > 86_400 {
            self.issue("cors.max_age_seconds", "must be at most 86400");
        }
        CorsConfig {
            allowed_origins,
            allowed_headers,
            exposed_headers,
            allow_credentials,
            max_age: Duration::from_secs(max_age),
        }
    }
}

/// One `allowed_origins` entry as a rule, or why it is not one.
fn origin_rule(entry: &str) -> Result<OriginRule, &'static str> {
    if entry == "*" {
        return Ok(OriginRule::Any);
    }
    let lower = entry.to_ascii_lowercase();
    let (scheme, rest) = if let Some(r) = lower.strip_prefix("https://") {
        ("https://", r)
    } else if let Some(r) = lower.strip_prefix("http://") {
        ("http://", r)
    } else {
        return Err("must start with https:// or http://");
    };
    let wildcard = rest.strip_prefix("*.");
    if wildcard.unwrap_or(rest).contains('*') {
        return Err("may hold `*` only as its first label (`https://*.example.com`)");
    }
    // What a browser would send for this origin, with the wildcard as one label.
    let probe = format!(
        "{scheme}{}",
        wildcard.map_or(rest.to_string(), |r| format!("x.{r}"))
    );
    let url = url::Url::parse(&probe).map_err(|_| "is not an origin (scheme://host[:port])")?;
    if url.origin().ascii_serialization() != probe {
        return Err("is not an origin as browsers send it: scheme://host[:port], no path, no trailing slash, no default port");
    }
    match wildcard {
        None => Ok(OriginRule::Exact(lower)),
        // `*.com` would allow every site under a public suffix.
        Some(r) if !r.contains('.') => Err("wildcard needs at least two labels after `*.`"),
        Some(r) => Ok(OriginRule::Subdomains {
            scheme: scheme.to_string(),
            suffix: format!(".{r}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::BASE;
    use super::*;
    use std::collections::HashMap;

    fn cors(toml: &str) -> Result<CorsConfig, Vec<String>> {
        match Config::from_toml(
            &format!("{BASE}\n[cors]\n{toml}"),
            &HashMap::<String, String>::new(),
        ) {
            Ok(c) => Ok(c.cors),
            Err(ConfigError(issues)) => Err(issues
                .into_iter()
                .map(|i| format!("{}: {}", i.key, i.message))
                .collect()),
        }
    }

    #[test]
    fn origins_exact_wildcard_and_any() -> Result<(), Vec<String>> {
        let c = cors(
            r#"allowed_origins = ["https://App.example.com", "https://*.example.org:8443", "http://localhost:3000"]"#,
        )?;
        let allowed = |o: &str| c.allowed_origins.iter().any(|r| r.matches(o));
        assert!(allowed("https://app.example.com"));
        assert!(!allowed("https://app.example.com.evil.net"));
        assert!(!allowed("http://app.example.com"));
        assert!(allowed("https://a.b.example.org:8443"));
        assert!(!allowed("https://example.org:8443"));
        assert!(!allowed("https://a.example.org"));
        assert!(!allowed("https://evil.net/.example.org:8443"));
        assert!(!allowed("https://a_b.example.org:8443"));
        assert!(allowed("http://localhost:3000"));
        assert_eq!(c.allowed_headers, CorsConfig::DEFAULT_ALLOWED_HEADERS);
        assert!(cors("")?.allowed_origins.is_empty());
        assert!(cors(r#"allowed_origins = ["*"]"#)?.allowed_origins == vec![OriginRule::Any]);
        Ok(())
    }

    #[test]
    fn bad_origins_name_their_entry() {
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com:443",
            "https://*.com",
            "https://a.*.example.com",
            "ftp://x.example.com",
        ] {
            let err = cors(&format!("allowed_origins = [\"{bad}\"]"));
            assert!(
                err.as_ref()
                    .is_err_and(|e| e.iter().any(|m| m.starts_with("cors.allowed_origins[0]"))),
                "{bad}: {err:?}"
            );
        }
        let err = cors("allowed_origins = [\"*\"]\nallow_credentials = true");
        assert!(err.is_err_and(|e| e.iter().any(|m| m.starts_with("cors.allow_credentials"))));
    }
}
