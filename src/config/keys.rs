//! Parsing of configured key material into jsonwebtoken keys: done at validation (so a bad
//! PEM fails at start naming its key) and when the key sets are built.

use super::{KeyConfig, KeyMaterial};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

impl KeyConfig {
    /// The verifying key (HMAC secret or PEM public key) for this key's pinned algorithm.
    pub fn decoding_key(&self) -> Result<DecodingKey, String> {
        let k = self;
        match &k.material {
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

    /// The signing key, `None` for a verify-only key.
    pub fn encoding_key(&self) -> Result<Option<EncodingKey>, String> {
        let k = self;
        match &k.material {
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

    /// Checks that the key's material parses for its algorithm.
    pub fn check(&self) -> Result<(), String> {
        self.decoding_key()?;
        self.encoding_key()?;
        Ok(())
    }
}
