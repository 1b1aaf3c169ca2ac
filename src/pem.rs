//! PEM material: the listener's certificate chain and key, and the trust roots of a TLS
//! upstream. Read by config validation (a bad file fails at start, naming its key) and by
//! the listener and the connectors. A leaf: it depends on no other module of the crate.

use pingora::tls::{CertificateDer, PrivateKeyDer};
use rustls::pki_types::pem::PemObject;
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// A certificate chain and key, read from PEM files, with a digest of both files (to tell
/// whether a reload changed anything).
pub fn read_files(cert: &Path, key: &Path) -> Result<(CertifiedKey, [u8; 32]), String> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{} is not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    // Never echo key material: say only which file and what kind of problem.
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| format!("{} is not a PEM private key", key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|_| format!("{} is not a supported private key", key.display()))?;
    let certified = CertifiedKey::new(certs, signer);
    certified
        .keys_match()
        .map_err(|_| format!("{} does not match {}", key.display(), cert.display()))?;
    let mut h = Sha256::new();
    h.update(&cert_pem);
    h.update(&key_pem);
    Ok((certified, h.finalize().into()))
}

/// Checks that the configured files make a usable certificate (config validation).
pub fn check_files(cert: &Path, key: &Path) -> Result<(), String> {
    read_files(cert, key).map(|_| ())
}

/// The certificates of a CA file, every one of them (one that does not parse is an error,
/// never skipped).
pub fn ca_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "upstream.ca_file is not PEM".to_string())
}

/// The configured CA of a TLS upstream, parsed once, in the form Pingora's connector takes
/// (`HttpPeer.options.ca`); every certificate must parse, and there must be one.
pub fn upstream_ca(pem: &[u8]) -> Result<Arc<pingora::protocols::tls::CaType>, String> {
    let certs: Vec<pingora::utils::tls::WrappedX509> = ca_certificates(pem)?
        .into_iter()
        .map(|der| {
            pingora::utils::tls::WrappedX509::new(
                der.as_ref().to_vec(),
                pingora::utils::tls::parse_x509,
            )
        })
        .collect();
    if certs.is_empty() {
        return Err("upstream.ca_file holds no certificate".into());
    }
    Ok(Arc::from(certs.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn loads_and_refuses_mismatched_files() {
        assert!(check_files(&fixture("proxy-a.pem"), &fixture("proxy-a-key.pem")).is_ok());
        let mismatch = check_files(&fixture("proxy-a.pem"), &fixture("proxy-b-key.pem"));
        assert!(mismatch.is_err_and(|e| e.contains("does not match")));
        let missing = check_files(&fixture("nope.pem"), &fixture("proxy-a-key.pem"));
        assert!(missing.is_err_and(|e| e.contains("cannot read")));
        // A certificate where the key should be: no key bytes in the message either way.
        let wrong = check_files(&fixture("proxy-a.pem"), &fixture("proxy-a.pem"));
        assert!(wrong.is_err_and(|e| e.contains("not a PEM private key")));
    }

    #[test]
    fn upstream_ca_from_a_ca_file() -> Result<(), String> {
        let pem = std::fs::read(fixture("ca.pem")).map_err(|e| e.to_string())?;
        assert_eq!(upstream_ca(&pem)?.len(), 1);
        assert!(upstream_ca(b"garbage").is_err());
        assert!(upstream_ca(b"").is_err());
        Ok(())
    }
}
