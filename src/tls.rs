//! TLS: the proxy listener's certificate, reloadable without dropping a connection. (An
//! `https://` upstream is `crate::upstream`'s.)
//!
//! The listener asks [`CertReloader`] for the certificate at every handshake, so swapping
//! it affects new connections only; established ones keep the certificate they were opened
//! with. The files are read again on SIGHUP and whenever their contents change (checked every
//! `reload_interval`): a Kubernetes TLS Secret mounted as a volume is updated in place.
//! A reload that fails (half-written files, a key that does not match) keeps the current
//! certificate and says so in the log and the metric.

use crate::config::TlsConfig;
use crate::metrics::Metrics;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

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
        let (key, digest) = crate::pem::read_files(&cfg.cert_file, &cfg.key_file)?;
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
        let result =
            crate::pem::read_files(&self.cert_file, &self.key_file).and_then(|(key, digest)| {
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
