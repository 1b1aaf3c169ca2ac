//! TLS: the proxy listener's certificate, reloadable without dropping a connection, and the
//! trust roots for a TLS upstream.
//!
//! The listener asks [`CertReloader`] for the certificate at every handshake, so swapping
//! it affects new connections only; established ones keep the certificate they were opened
//! with. The files are read again on SIGHUP and whenever their contents change (checked every
//! `reload_interval`): a Kubernetes TLS Secret mounted as a volume is updated in place.
//! A reload that fails (half-written files, a key that does not match) keeps the current
//! certificate and says so in the log and the metric.

use crate::config::TlsConfig;
use crate::metrics::Metrics;
use pingora::tls::{CertificateDer, PrivateKeyDer, RootCertStore};
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A certificate chain and key, read from PEM files.
fn read_files(cert: &Path, key: &Path) -> Result<(CertifiedKey, [u8; 32]), String> {
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

/// The listener's certificate, swapped in place on reload.
pub struct CertReloader {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    digest: Mutex<[u8; 32]>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertReloader")
            .field("cert_file", &self.cert_file)
            .finish()
    }
}

impl CertReloader {
    /// Reads the files once.
    pub fn load(cfg: &TlsConfig, metrics: Arc<Metrics>) -> Result<Arc<CertReloader>, String> {
        let (key, digest) = read_files(&cfg.cert_file, &cfg.key_file)?;
        Ok(Arc::new(CertReloader {
            cert_file: cfg.cert_file.clone(),
            key_file: cfg.key_file.clone(),
            current: RwLock::new(Arc::new(key)),
            digest: Mutex::new(digest),
            metrics,
        }))
    }

    /// Reads the files again; swaps the certificate when they changed. `Ok(true)` if it did.
    pub fn reload(&self) -> Result<bool, String> {
        let result = read_files(&self.cert_file, &self.key_file).and_then(|(key, digest)| {
            let mut last = self
                .digest
                .lock()
                .map_err(|_| "certificate state poisoned".to_string())?;
            if *last == digest {
                return Ok(false);
            }
            let mut current = self
                .current
                .write()
                .map_err(|_| "certificate state poisoned".to_string())?;
            *current = Arc::new(key);
            *last = digest;
            Ok(true)
        });
        let label = match &result {
            Ok(true) => "reloaded",
            Ok(false) => "unchanged",
            Err(_) => "failed",
        };
        self.metrics.tls_reloads.with_label_values(&[label]).inc();
        match &result {
            Ok(true) => {
                tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded")
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate reload failed; keeping the current one")
            }
            Ok(false) => {}
        }
        result
    }

    /// Reloads on SIGHUP and, when `interval` is not zero, whenever the files change.
    pub fn watch(self: Arc<Self>, interval: Duration) -> std::io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("tls-reload".into())
            .spawn(move || {
                rt.block_on(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    let mut hup = match signal(SignalKind::hangup()) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for SIGHUP");
                            None
                        }
                    };
                    let every = if interval.is_zero() {
                        Duration::from_secs(86_400 * 365)
                    } else {
                        interval
                    };
                    let mut tick = tokio::time::interval(every);
                    tick.tick().await;
                    loop {
                        tokio::select! {
                            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                                tracing::info!("SIGHUP: reloading the TLS certificate");
                            }
                            _ = tick.tick(), if !interval.is_zero() => {}
                        }
                        let _ = self.reload();
                    }
                });
            })?;
        Ok(())
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| k.clone())
    }
}

/// Trust roots for a TLS upstream: the configured CA's PEM, else the system's.
pub fn upstream_roots(ca_pem: Option<&[u8]>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|_| "upstream.ca_file is not PEM".to_string())?;
                roots
                    .add(cert)
                    .map_err(|e| format!("upstream.ca_file: {e}"))?;
            }
        }
        None => {
            pingora::tls::load_platform_certs_incl_env_into_store(&mut roots)
                .map_err(|e| format!("system trust roots: {e}"))?;
        }
    }
    if roots.is_empty() {
        return Err("no trust roots for the TLS upstream".into());
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
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
    fn upstream_roots_from_a_ca_file() -> Result<(), String> {
        let pem = std::fs::read(fixture("ca.pem")).map_err(|e| e.to_string())?;
        assert_eq!(upstream_roots(Some(&pem))?.len(), 1);
        assert!(upstream_roots(Some(b"garbage")).is_err());
        Ok(())
    }
}
