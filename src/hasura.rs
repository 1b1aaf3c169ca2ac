//! Hasura integration: the identity Hasura sees, in each of its three modes.
//!
//! - `headers`: trusted `x-hasura-*` headers on every forwarded request.
//! - `jwt`: a short-lived Hasura JWT per session, minted here, signed with an asymmetric key
//!   and cached per session until shortly before it expires; Hasura fetches the public keys
//!   from `/.well-known/jwks.json` (every configured key is published, so a rotated-out key
//!   keeps verifying the tokens it signed while it stays listed).
//! - `webhook`: Hasura asks `/auth/hasura` with the client's `Authorization`.
//!
//! Forward-auth (`/auth/verify`) answers with the same identity as response headers.
//!
//! [`Hasura::identity_for`] is the one place that decides, per mode, what the upstream is
//! told about a session: the HTTP flow (`headers::rewrite`), the WebSocket relay (its
//! handshake and `connection_init`) and forward-auth all render the same [`Identity`].

use crate::config::{Config, HasuraConfig, HasuraMode, KeyConfig};
use crate::error::GateError;
use crate::header_names::{ADMIN_SECRET, BUSINESS_ID, HOST_ID, ROLE, USER_ID};
use crate::secret::Secret;
use crate::session::model::{now_unix, Session};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// A minted Hasura JWT (`Debug` never prints the token).
#[derive(Clone)]
pub struct Minted {
    /// The compact JWT.
    pub token: String,
    /// Its `exp` (unix seconds).
    pub exp: i64,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("token", &"***")
            .field("exp", &self.exp)
            .finish()
    }
}

/// The signing half of the jwt mode.
struct Signer {
    kid: String,
    algorithm: Algorithm,
    key: EncodingKey,
}

/// Hasura identity for sessions.
pub struct Hasura {
    cfg: HasuraConfig,
    /// `proxy.forward_authorization` (headers mode only).
    forward_authorization: bool,
    /// `proxy.hasura_admin_secret` (headers mode only; config refuses it elsewhere).
    admin_secret: Option<Secret>,
    signer: Option<Signer>,
    jwks: Vec<u8>,
    minted: moka::sync::Cache<String, Arc<Minted>>,
}

impl std::fmt::Debug for Hasura {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasura")
            .field("mode", &self.cfg.mode)
            .field("signing_kid", &self.cfg.signing_kid)
            .finish()
    }
}

/// What the upstream's `Authorization` becomes for an authenticated request (`Debug`
/// never prints a token).
#[derive(Clone)]
pub enum Authorization<'a> {
    /// Removed: the upstream learns the identity from the gateway's headers.
    Remove,
    /// `Bearer <the token the gateway checked>` (`proxy.forward_authorization`, and webhook
    /// mode, where Hasura hands it to `/auth/hasura`); never another one the client sent.
    Checked(&'a str),
    /// `Bearer <the session's minted Hasura JWT>` (jwt mode).
    Minted(Arc<Minted>),
}

impl std::fmt::Debug for Authorization<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Authorization::Remove => "Remove",
            Authorization::Checked(_) => "Checked(***)",
            Authorization::Minted(_) => "Minted(***)",
        })
    }
}

impl Authorization<'_> {
    /// The bearer token to send, if any.
    pub fn token(&self) -> Option<&str> {
        match self {
            Authorization::Remove => None,
            Authorization::Checked(t) => Some(t),
            Authorization::Minted(m) => Some(&m.token),
        }
    }
}

/// Everything the upstream is told about a session in the configured Hasura mode, decided
/// by [`Hasura::identity_for`] alone.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    session: &'a Session,
    /// Hasura's session variables travel as headers (headers mode).
    hasura_headers: bool,
    admin_secret: Option<&'a Secret>,
    /// The upstream's `Authorization`.
    pub authorization: Authorization<'a>,
}

impl<'a> Identity<'a> {
    /// The headers the upstream gets besides `Authorization`, lower-case: `x-host-id` in
    /// every mode; in headers mode also the user, business and role, and the admin secret
    /// when one is configured.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &'a str)> + '_ {
        let s = self.session;
        let hasura = [
            (USER_ID, s.user_id.as_str()),
            (BUSINESS_ID, s.business_id.as_str()),
            (ROLE, s.role.as_str()),
        ];
        std::iter::once((HOST_ID, s.host_id.as_str()))
            .chain(hasura.into_iter().filter(|_| self.hasura_headers))
            .chain(
                self.admin_secret
                    .map(|secret| (ADMIN_SECRET, secret.expose())),
            )
    }

    /// The session's claims as Hasura names them, for forward-auth's answer.
    pub fn claims(&self) -> [(&'static str, &'a str); 4] {
        claims(self.session)
    }
}

/// The claims of a session as Hasura names them, in a fixed order (forward-auth response
/// headers, the webhook's body).
pub fn claims(s: &Session) -> [(&'static str, &str); 4] {
    [
        ("X-Hasura-User-Id", s.user_id.as_str()),
        ("X-Hasura-Role", s.role.as_str()),
        ("X-Hasura-Business-Id", s.business_id.as_str()),
        ("X-Host-Id", s.host_id.as_str()),
    ]
}

fn public_jwk(k: &KeyConfig) -> Result<Jwk, String> {
    let mut jwk = Jwk::from_decoding_key(k.decoding_key(), Some(k.algorithm))
        .map_err(|e| format!("hasura key `{}`: {e}", k.kid))?;
    jwk.common.key_id = Some(k.kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(jwk)
}

impl Hasura {
    /// Builds the signer and the published key set; `max_entries` bounds the token cache.
    /// The proxy section says what headers mode adds (the admin secret, the client's token).
    pub fn new(config: &Config, max_entries: u64) -> Result<Hasura, String> {
        let (cfg, proxy) = (&config.hasura, &config.proxy);
        let mut keys = Vec::new();
        for k in &cfg.keys {
            keys.push(public_jwk(k)?);
        }
        let jwks = serde_json::to_vec(&JwkSet { keys }).map_err(|e| e.to_string())?;
        let signer = match cfg.mode {
            HasuraMode::Jwt => {
                let k = cfg
                    .keys
                    .iter()
                    .find(|k| k.kid == cfg.signing_kid)
                    .ok_or("hasura.signing_kid names no key")?;
                let key = k
                    .encoding_key()
                    .cloned()
                    .ok_or("hasura.signing_kid: the signing key needs a private_key")?;
                Some(Signer {
                    kid: k.kid.clone(),
                    algorithm: k.algorithm,
                    key,
                })
            }
            _ => None,
        };
        let headers_mode = cfg.mode == HasuraMode::Headers;
        Ok(Hasura {
            cfg: cfg.clone(),
            forward_authorization: config.forwards_client_credential(),
            admin_secret: proxy.hasura_admin_secret.clone().filter(|_| headers_mode),
            signer,
            jwks,
            minted: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(cfg.jwt_ttl)
                .build(),
        })
    }

    /// The mode.
    pub fn mode(&self) -> HasuraMode {
        self.cfg.mode
    }

    /// What the upstream is told about `session`, authenticated with `token`, in this
    /// mode. Jwt mode mints (or reuses) the session's Hasura JWT.
    pub fn identity_for<'a>(
        &'a self,
        session: &'a Session,
        token: &'a str,
    ) -> Result<Identity<'a>, GateError> {
        let authorization = match self.cfg.mode {
            HasuraMode::Headers if self.forward_authorization => Authorization::Checked(token),
            HasuraMode::Headers => Authorization::Remove,
            HasuraMode::Jwt => Authorization::Minted(self.jwt_for(session)?),
            // Hasura hands the client's Authorization to the webhook: it must arrive.
            HasuraMode::Webhook => Authorization::Checked(token),
        };
        Ok(Identity {
            session,
            hasura_headers: self.cfg.mode == HasuraMode::Headers,
            admin_secret: self.admin_secret.as_ref(),
            authorization,
        })
    }

    /// The JWKS document (every configured key's public half).
    pub fn jwks(&self) -> &[u8] {
        &self.jwks
    }

    /// `Cache-Control` of the JWKS, in seconds.
    pub fn jwks_max_age(&self) -> u64 {
        self.cfg.jwks_max_age.as_secs()
    }

    /// Whether any key is configured (the JWKS is served when there is).
    pub fn has_keys(&self) -> bool {
        !self.cfg.keys.is_empty()
    }

    /// `Cache-Control: max-age` for a webhook answer about `s`: never past the session.
    pub fn webhook_max_age(&self, s: &Session) -> u64 {
        self.cfg
            .webhook_max_age
            .as_secs()
            .min(s.remaining_secs(now_unix()))
    }

    /// The session's Hasura JWT: the cached one while it has more than a short margin left,
    /// else a new one (never outliving the session).
    pub fn jwt_for(&self, s: &Session) -> Result<Arc<Minted>, GateError> {
        let now = now_unix();
        if let Some(m) = self.minted.get(&s.session_id) {
            if m.exp - now > self.margin() {
                return Ok(m);
            }
        }
        let m = Arc::new(self.mint(s, now)?);
        self.minted.insert(s.session_id.clone(), m.clone());
        Ok(m)
    }

    /// Reuse a token until this much of its life is left: a fifth of the lifetime, at most
    /// 30 s, so a request never carries a token about to expire in Hasura's hands.
    fn margin(&self) -> i64 {
        let ttl = i64::try_from(self.cfg.jwt_ttl.as_secs()).unwrap_or(i64::MAX);
        (ttl / 5).min(30)
    }

    fn mint(&self, s: &Session, now: i64) -> Result<Minted, GateError> {
        let signer = self.signer.as_ref().ok_or(GateError::Internal)?;
        let ttl = i64::try_from(self.cfg.jwt_ttl.as_secs()).unwrap_or(i64::MAX);
        let exp = now.saturating_add(ttl).min(s.expires_at);
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(s.user_id));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(exp));
        claims.insert("sid".into(), json!(s.session_id));
        if let Some(iss) = &self.cfg.jwt_issuer {
            claims.insert("iss".into(), json!(iss));
        }
        if let Some(aud) = &self.cfg.jwt_audience {
            claims.insert("aud".into(), json!(aud));
        }
        claims.insert(
            self.cfg.claims_namespace.clone(),
            json!({
                "x-hasura-allowed-roles": [s.role],
                "x-hasura-default-role": s.role,
                "x-hasura-user-id": s.user_id,
                "x-hasura-business-id": s.business_id,
                "x-hasura-host-id": s.host_id,
            }),
        );
        let mut header = Header::new(signer.algorithm);
        header.kid = Some(signer.kid.clone());
        let token = jsonwebtoken::encode(&header, &Value::Object(claims), &signer.key)
            .map_err(|_| GateError::Internal)?;
        Ok(Minted { token, exp })
    }
}

/// The `Authorization` value Hasura's POST webhook forwards in `{"headers": {...}}`
/// (header names compared case-insensitively).
pub fn webhook_authorization(body: &Value) -> Option<&str> {
    body.get("headers")?
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.as_str())
}

/// The webhook's 200 body for a session.
pub fn webhook_body(s: &Session, max_age: u64) -> Value {
    let mut m = Map::new();
    for (name, value) in claims(s) {
        m.insert(name.into(), json!(value));
    }
    m.insert("Cache-Control".into(), json!(format!("max-age={max_age}")));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::BASE;
    use crate::config::Config;
    use std::collections::HashMap;

    const ED_PRIVATE: &str = include_str!("../tests/fixtures/ed25519-private.pem");
    const ED_PUBLIC: &str = include_str!("../tests/fixtures/ed25519-public.pem");

    fn config(mode: &str) -> Result<Config, String> {
        let text = format!(
            r#"{BASE}
            [hasura]
            mode = "{mode}"
            signing_kid = "h1"
            jwt_ttl_seconds = 100
            jwt_issuer = "sessiongate"
            [[hasura.keys]]
            kid = "h1"
            algorithm = "EdDSA"
            private_key = """{ED_PRIVATE}"""
            public_key = """{ED_PUBLIC}"""
            "#
        );
        let env: HashMap<String, String> = HashMap::new();
        Config::from_toml(&text, &env).map_err(|e| e.to_string())
    }

    fn session() -> Session {
        let now = now_unix();
        Session {
            session_id: "s1".into(),
            user_id: "u1".into(),
            business_id: "b1".into(),
            host_id: "h1".into(),
            role: "user".into(),
            created_at: now,
            expires_at: now + 50,
            source: "admin".into(),
            external_id: None,
            user_gen: 0,
            business_gen: 0,
            user_agent: None,
            ip: None,
        }
    }

    #[test]
    fn minted_jwt_verifies_with_the_published_key_and_carries_the_claims() -> Result<(), String> {
        let cfg = config("jwt")?;
        let h = Hasura::new(&cfg, 100)?;
        let s = session();
        let m = h.jwt_for(&s).map_err(|e| e.to_string())?;
        // Capped by the session (50 s left), not the 100 s lifetime.
        assert_eq!(m.exp, s.expires_at);
        // Cached: the same token again.
        let again = h.jwt_for(&s).map_err(|e| e.to_string())?;
        assert_eq!(again.token, m.token);
        // Verify with the JWKS, as Hasura would.
        let set: JwkSet = serde_json::from_slice(h.jwks()).map_err(|e| e.to_string())?;
        let jwk = set.find("h1").ok_or("kid h1 not published")?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut v = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        v.set_issuer(&["sessiongate"]);
        v.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(&m.token, &key, &v).map_err(|e| e.to_string())?;
        let c = &data.claims["https://hasura.io/jwt/claims"];
        assert_eq!(c["x-hasura-user-id"], "u1");
        assert_eq!(c["x-hasura-business-id"], "b1");
        assert_eq!(c["x-hasura-host-id"], "h1");
        assert_eq!(c["x-hasura-default-role"], "user");
        assert_eq!(c["x-hasura-allowed-roles"], json!(["user"]));
        Ok(())
    }

    #[test]
    fn webhook_reads_authorization_case_insensitively() {
        let body = json!({"headers": {"authorization": "Bearer t"}, "request": {}});
        assert_eq!(webhook_authorization(&body), Some("Bearer t"));
        assert_eq!(webhook_authorization(&json!({"headers": 1})), None);
        let b = webhook_body(&session(), 60);
        assert_eq!(b["X-Hasura-User-Id"], "u1");
        assert_eq!(b["X-Host-Id"], "h1");
        assert_eq!(b["Cache-Control"], "max-age=60");
    }

    #[test]
    fn admin_secret_is_refused_outside_headers_mode() {
        let text =
            format!("{BASE}\n[proxy]\nhasura_admin_secret = \"s\"\n[hasura]\nmode = \"webhook\"\n");
        let err = Config::from_toml(&text, &HashMap::<String, String>::new());
        let err = err.map_err(|e| e.to_string());
        assert!(err.is_err_and(|e| e.contains("proxy.hasura_admin_secret")));
    }
}
