//! Validation of signing keys: `[tokens]` (access tokens) and `[hasura]` (minted Hasura
//! JWTs), each key pinned to its algorithm.

use super::*;

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

impl Validator<'_> {
    pub(super) fn hasura(
        &mut self,
        h: file::HasuraSection,
        proxy: &ProxyConfig,
    ) -> Option<HasuraConfig> {
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

    pub(super) fn tokens(&mut self, t: file::TokensSection) -> Option<TokenConfig> {
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
        // A retry comes seconds after the lost answer; a long grace only widens what a thief
        // holding a spent token could still redeem.
        let refresh_retry_grace = t.refresh_retry_grace_seconds.unwrap_or(10);
        if refresh_retry_grace > 300 {
            self.issue(
                "tokens.refresh_retry_grace_seconds",
                "must be at most 300 (0 turns it off)",
            );
        }
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
            refresh_retry_grace: Duration::from_secs(refresh_retry_grace),
            signing_kid,
            keys,
        })
    }

    /// Parses a list of keys (`prefix[i]`), each with one of the `allowed` algorithms.
    pub(super) fn key_list(
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
            match KeyConfig::new(k.kid.clone(), algorithm, material) {
                Ok(kc) => keys.push(kc),
                Err(e) => self.issue(key, e),
            }
        }
        keys
    }

    /// The `{section}.signing_kid`, which must name a key of `keys` with a private key.
    pub(super) fn signing_kid(
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
