//! Bearer extraction and access-token signing/verification.
//!
//! Every key pins its algorithm: the verifier looks the key up by `kid` and then accepts
//! only that key's algorithm, so `alg: none` and HS/RS confusion cannot get through. The
//! `Validation` is built from config, never from the token header.

use crate::config::TokenConfig;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Why a token was refused. Each maps to a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, bad base64/JSON, or an algorithm we do not know (including `none`).
    #[error("malformed token")]
    Malformed,
    /// No `kid`, or a `kid` no configured key has.
    #[error("unknown key id")]
    UnknownKid,
    /// The header's `alg` is not the one pinned for its key.
    #[error("algorithm not allowed for this key")]
    AlgorithmMismatch,
    /// Signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("wrong issuer")]
    WrongIssuer,
    /// Wrong `aud`.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is absent or of the wrong type.
    #[error("missing or invalid claim")]
    BadClaims,
    /// The header lists `crit` extensions: RFC 7515 §4.1.11 says a verifier that does not
    /// understand them must refuse, and this one understands none.
    #[error("critical header extension not supported")]
    CriticalExtension,
}

impl TokenError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::AlgorithmMismatch => "algorithm_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::BadClaims => "bad_claims",
            TokenError::CriticalExtension => "critical_extension",
        }
    }
}

/// The claims of a sessiongate access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Session id: the token is only good while this session exists. First, so that it is
    /// the payload's first member, which the session cache reads (unchecked, as a hint) at a
    /// fixed place.
    pub sid: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// User id.
    pub sub: String,
    /// Business id.
    pub bid: String,
    /// Host id.
    pub hid: String,
    /// Role.
    pub role: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not before (unix seconds).
    pub nbf: i64,
    /// Expires (unix seconds); never after the session's expiry.
    pub exp: i64,
}

struct VerifyKey {
    algorithm: Algorithm,
    decoding: DecodingKey,
    validation: Validation,
}

/// The configured keys: several verify, one signs.
pub struct KeySet {
    verify: HashMap<String, VerifyKey>,
    signing_kid: String,
    signing_alg: Algorithm,
    signing: EncodingKey,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.verify.keys().collect::<Vec<_>>())
            .field("signing_kid", &self.signing_kid)
            .finish()
    }
}

impl KeySet {
    /// Builds the key set from validated config.
    pub fn new(cfg: &TokenConfig) -> Result<KeySet, String> {
        let mut verify = HashMap::new();
        let mut signing = None;
        for k in &cfg.keys {
            let mut validation = Validation::new(k.algorithm);
            validation.set_issuer(&[&cfg.issuer]);
            validation.set_audience(&[&cfg.audience]);
            validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
            validation.validate_nbf = true;
            validation.validate_exp = true;
            validation.leeway = cfg.leeway_seconds;
            verify.insert(
                k.kid.clone(),
                VerifyKey {
                    algorithm: k.algorithm,
                    decoding: k.decoding_key().clone(),
                    validation,
                },
            );
            if k.kid == cfg.signing_kid {
                signing = Some((k.algorithm, k.encoding_key().cloned()));
            }
        }
        let Some((signing_alg, Some(signing))) = signing else {
            return Err(format!(
                "signing key `{}` has no private material",
                cfg.signing_kid
            ));
        };
        Ok(KeySet {
            verify,
            signing_kid: cfg.signing_kid.clone(),
            signing_alg,
            signing,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
        })
    }

    /// The `iss` written into tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` written into tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Signs claims with the signing key.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.signing_alg);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing)
    }

    /// Verifies a token: known `kid`, that key's pinned algorithm, signature, `exp`, `nbf`,
    /// `iss`, `aud`. Does not check the session; the caller must.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_until(token).map(|(claims, _)| claims)
    }

    /// [`KeySet::verify`], with the instant (unix seconds) from which the token is refused:
    /// its `exp` plus the configured leeway.
    pub fn verify_until(&self, token: &str) -> Result<(Claims, i64), TokenError> {
        check_header(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKid)?;
        let key = self.verify.get(kid).ok_or(TokenError::UnknownKid)?;
        if header.alg != key.algorithm {
            return Err(TokenError::AlgorithmMismatch);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => TokenError::AlgorithmMismatch,
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                    TokenError::BadClaims
                }
                ErrorKind::Json(_) => TokenError::BadClaims,
                _ => TokenError::Malformed,
            })?;
        // RFC 7519 §4.1.4: not on or after `exp`. jsonwebtoken only refuses `exp < now -
        // leeway`, which accepts a token through its whole `exp` second.
        let leeway = i64::try_from(key.validation.leeway).unwrap_or(i64::MAX);
        let refused_from = claims.exp.saturating_add(leeway);
        if refused_from <= time::OffsetDateTime::now_utc().unix_timestamp() {
            return Err(TokenError::Expired);
        }
        Ok((claims, refused_from))
    }
}

/// The JOSE header read strictly before anything else looks at it: a duplicate member
/// (`{"alg":"EdDSA","alg":"none"}`) could mean different things to different parsers, and
/// any `crit` (even empty, which RFC 7515 forbids) names extensions this verifier does not
/// implement.
fn check_header(token: &str) -> Result<(), TokenError> {
    use base64::Engine as _;
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::Malformed)?;
    let header = crate::json::strict_object(&bytes).map_err(|_| TokenError::Malformed)?;
    if header.contains_key("crit") {
        return Err(TokenError::CriticalExtension);
    }
    Ok(())
}

/// The token of an `Authorization: Bearer <token>` header value, if that is what it is.
/// The scheme is case-insensitive (RFC 7235); exactly one space-separated token follows.
pub fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() || token.contains(' ') {
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyConfig, KeyMaterial, TokenConfig};
    use crate::secret::Secret;
    use base64::Engine;
    use std::time::Duration;

    const SECRET: &str = "unit-test-secret-unit-test-secret-0123";

    fn cfg(keys: Vec<KeyConfig>, signing: &str) -> TokenConfig {
        TokenConfig {
            issuer: "sessiongate".into(),
            audience: "sessiongate".into(),
            leeway_seconds: 0,
            default_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(600),
            access_ttl: None,
            refresh_retry_grace: Duration::from_secs(10),
            signing_kid: signing.into(),
            keys,
        }
    }

    fn hs(kid: &str, secret: &str) -> KeyConfig {
        match KeyConfig::new(
            kid.into(),
            Algorithm::HS256,
            KeyMaterial::Shared(Secret::new(secret)),
        ) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn claims() -> Claims {
        Claims {
            iss: "sessiongate".into(),
            aud: "sessiongate".into(),
            sub: "u1".into(),
            sid: "s1".into(),
            bid: "b1".into(),
            hid: "h1".into(),
            role: "user".into(),
            iat: now(),
            nbf: now() - 1,
            exp: now() + 60,
        }
    }

    fn keys() -> Result<KeySet, String> {
        KeySet::new(&cfg(vec![hs("k1", SECRET)], "k1"))
    }

    fn b64(v: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let k = keys()?;
        let expected = claims();
        let t = k.sign(&expected)?;
        assert_eq!(k.verify(&t), Ok(expected));
        Ok(())
    }

    /// A header signed with the test key exactly as written (jsonwebtoken would rewrite it).
    fn signed_with_header(header_json: &[u8]) -> Result<String, Box<dyn std::error::Error>> {
        use hmac::Mac;
        let header = b64(header_json);
        let payload = b64(&serde_json::to_vec(&claims())?);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes())?;
        mac.update(format!("{header}.{payload}").as_bytes());
        let sig = b64(&mac.finalize().into_bytes());
        Ok(format!("{header}.{payload}.{sig}"))
    }

    #[test]
    fn crit_and_duplicate_header_members_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let k = keys()?;
        let plain = signed_with_header(br#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#)?;
        assert!(k.verify(&plain).is_ok());
        for crit in [
            r#"{"alg":"HS256","kid":"k1","crit":["http://example.com/ext"],"http://example.com/ext":true}"#,
            r#"{"alg":"HS256","kid":"k1","crit":["exp"]}"#,
            r#"{"alg":"HS256","kid":"k1","crit":[]}"#,
        ] {
            let t = signed_with_header(crit.as_bytes())?;
            assert_eq!(k.verify(&t), Err(TokenError::CriticalExtension), "{crit}");
        }
        let t = signed_with_header(br#"{"alg":"HS256","kid":"k1","kid":"k2"}"#)?;
        assert_eq!(k.verify(&t), Err(TokenError::Malformed));
        Ok(())
    }

    #[test]
    fn alg_none_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let k = keys()?;
        let header = b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        let payload = b64(&serde_json::to_vec(&claims())?);
        assert_eq!(
            k.verify(&format!("{header}.{payload}.")),
            Err(TokenError::Malformed)
        );
        Ok(())
    }

    #[test]
    fn tampered_payload_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let k = keys()?;
        let t = k.sign(&claims())?;
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = claims();
        c.sub = "admin".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&c)?),
            parts[2]
        );
        assert_eq!(k.verify(&forged), Err(TokenError::BadSignature));
        Ok(())
    }

    #[test]
    fn time_and_audience_checks() -> Result<(), Box<dyn std::error::Error>> {
        let k = keys()?;
        let mut c = claims();
        c.exp = now() - 10;
        assert_eq!(k.verify(&k.sign(&c)?), Err(TokenError::Expired));
        // From its exp second on, not through it (issue 20, item 3).
        let mut c = claims();
        c.exp = now();
        assert_eq!(k.verify(&k.sign(&c)?), Err(TokenError::Expired));
        let mut c = claims();
        c.exp = now() + 2;
        assert!(k.verify(&k.sign(&c)?).is_ok());
        let mut c = claims();
        c.nbf = now() + 30;
        assert_eq!(k.verify(&k.sign(&c)?), Err(TokenError::NotYetValid));
        let mut c = claims();
        c.iss = "someone-else".into();
        assert_eq!(k.verify(&k.sign(&c)?), Err(TokenError::WrongIssuer));
        let mut c = claims();
        c.aud = "other".into();
        assert_eq!(k.verify(&k.sign(&c)?), Err(TokenError::WrongAudience));
        Ok(())
    }

    #[test]
    fn unknown_kid_and_other_secret_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let k = keys()?;
        let other = KeySet::new(&cfg(vec![hs("k2", SECRET)], "k2"))?;
        assert_eq!(
            k.verify(&other.sign(&claims())?),
            Err(TokenError::UnknownKid)
        );
        let same_kid = KeySet::new(&cfg(
            vec![hs("k1", "another-secret-another-secret-012345")],
            "k1",
        ))?;
        assert_eq!(
            k.verify(&same_kid.sign(&claims())?),
            Err(TokenError::BadSignature)
        );
        Ok(())
    }

    #[test]
    fn rotation_old_key_still_verifies() -> Result<(), Box<dyn std::error::Error>> {
        let old = KeySet::new(&cfg(vec![hs("old", SECRET)], "old"))?;
        let token = old.sign(&claims())?;
        let both = KeySet::new(&cfg(
            vec![
                hs("old", SECRET),
                hs("new", "the-new-secret-the-new-secret-0123456"),
            ],
            "new",
        ))?;
        assert!(both.verify(&token).is_ok());
        assert!(both.verify(&both.sign(&claims())?).is_ok());
        Ok(())
    }

    #[test]
    fn algorithm_pinned_per_key() -> Result<(), Box<dyn std::error::Error>> {
        // A token claiming HS384 under an HS256 key is refused before any crypto runs.
        let k = keys()?;
        let mut header = Header::new(Algorithm::HS384);
        header.kid = Some("k1".into());
        let t = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )?;
        assert_eq!(k.verify(&t), Err(TokenError::AlgorithmMismatch));
        Ok(())
    }

    fn pem_key(kid: &str, algorithm: Algorithm, private: &str, public: &str) -> KeyConfig {
        let material = KeyMaterial::Asymmetric {
            private_pem: Some(Secret::new(private)),
            public_pem: public.into(),
        };
        match KeyConfig::new(kid.into(), algorithm, material) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    const RSA_PRIVATE: &str = include_str!("../tests/fixtures/rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("../tests/fixtures/rsa-public.pem");

    #[test]
    fn asymmetric_keys_sign_and_verify() -> Result<(), Box<dyn std::error::Error>> {
        let cases = [
            (Algorithm::RS256, RSA_PRIVATE, RSA_PUBLIC),
            (
                Algorithm::EdDSA,
                include_str!("../tests/fixtures/ed25519-private.pem"),
                include_str!("../tests/fixtures/ed25519-public.pem"),
            ),
            (
                Algorithm::ES256,
                include_str!("../tests/fixtures/ec-private.pem"),
                include_str!("../tests/fixtures/ec-public.pem"),
            ),
        ];
        for (alg, private, public) in cases {
            let k = KeySet::new(&cfg(vec![pem_key("a", alg, private, public)], "a"))?;
            // One claims value: two calls to claims() can straddle a second boundary.
            let expected = claims();
            let t = k.sign(&expected)?;
            assert_eq!(k.verify(&t), Ok(expected), "{alg:?}");
        }
        Ok(())
    }

    #[test]
    fn hs_rs_confusion_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        // The classic attack: sign HS256 with the RSA *public* key as the HMAC secret.
        let k = KeySet::new(&cfg(
            vec![pem_key("rsa", Algorithm::RS256, RSA_PRIVATE, RSA_PUBLIC)],
            "rsa",
        ))?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa".into());
        let forged = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        )?;
        assert_eq!(k.verify(&forged), Err(TokenError::AlgorithmMismatch));
        Ok(())
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer a b"), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(&[0xff, 0xfe]), None);
    }
}
