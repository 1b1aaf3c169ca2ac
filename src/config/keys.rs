//! Parsing of configured key material into jsonwebtoken keys, once, at validation: a bad
//! PEM fails the start naming its key, and the key sets (access tokens, Hasura JWTs) take
//! the parsed keys from the config.

use super::{KeyConfig, KeyMaterial};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// What [`KeyConfig::new`] parses from.
struct Unparsed<'a> {
    algorithm: Algorithm,
    material: &'a KeyMaterial,
}

impl KeyConfig {
    /// A key whose material parses for `algorithm`; the error says which half does not.
    pub fn new(
        kid: String,
        algorithm: Algorithm,
        material: KeyMaterial,
    ) -> Result<KeyConfig, String> {
        let raw = Unparsed {
            algorithm,
            material: &material,
        };
        let decoding = raw.decoding_key()?;
        let encoding = raw.encoding_key()?;
        Ok(KeyConfig {
            kid,
            algorithm,
            material,
            decoding,
            encoding,
        })
    }

    /// The verifying key (HMAC secret or PEM public key) for this key's pinned algorithm.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The signing key, `None` for a verify-only key.
    pub fn encoding_key(&self) -> Option<&EncodingKey> {
        self.encoding.as_ref()
    }
}

impl Unparsed<'_> {
    fn decoding_key(&self) -> Result<DecodingKey, String> {
        let k = self;
        match k.material {
            KeyMaterial::Shared(s) => Ok(DecodingKey::from_secret(s.expose().as_bytes())),
            KeyMaterial::Asymmetric { public_pem, .. } => {
                let pem = public_pem.as_bytes();
                match k.algorithm {
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
                    Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
                    _ => return Err("algorithm does not take a PEM key".into()),
                }
                .map_err(|e| {
                    format!(
                        "public_key is not a valid PEM key for {:?}: {e}",
                        k.algorithm
                    )
                })
            }
        }
    }

    fn encoding_key(&self) -> Result<Option<EncodingKey>, String> {
        let k = self;
        match k.material {
            KeyMaterial::Shared(s) => Ok(Some(EncodingKey::from_secret(s.expose().as_bytes()))),
            KeyMaterial::Asymmetric {
                private_pem: None, ..
            } => Ok(None),
            KeyMaterial::Asymmetric {
                private_pem: Some(pem),
                ..
            } => {
                let pem = pem.expose().as_bytes();
                match k.algorithm {
                    Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
                    Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
                    Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
                    _ => return Err("algorithm does not take a PEM key".into()),
                }
                .map(Some)
                // The error text of a PEM parser never contains key bytes, but say less anyway.
                .map_err(|_| format!("private_key is not a valid PEM key for {:?}", k.algorithm))
            }
        }
    }
}
