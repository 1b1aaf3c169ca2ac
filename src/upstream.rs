//! The one backend, as Pingora's connector reaches it: the peer (address, TLS, SNI, CA,
//! timeouts) is built in one place, for the proxy's forwarded requests and for the
//! WebSocket relay, which opens its own connection through the same connector code and so
//! the same TLS verification.

use crate::config::UpstreamConfig;
use crate::error::GateError;
use pingora::connectors::TransportConnector;
use pingora::prelude::HttpPeer;
use pingora::protocols::Stream;
use pingora::ErrorType;

/// How the gateway connects to its upstream.
pub struct Upstream {
    cfg: UpstreamConfig,
    /// The relay's connector (the proxy uses Pingora's own, from the same peer).
    connector: TransportConnector,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.cfg.url)
            .field("own_ca", &self.cfg.ca.is_some())
            .finish()
    }
}

impl Upstream {
    /// From the validated `[upstream]` section (its CA is parsed already).
    pub fn new(cfg: &UpstreamConfig) -> Upstream {
        Upstream {
            cfg: cfg.clone(),
            connector: TransportConnector::new(None),
        }
    }

    /// The peer every upstream connection is made to: HTTP/1.1 by ALPN over TLS, the
    /// configured CA (else the system roots), the connect and read timeouts.
    pub fn peer(&self) -> HttpPeer {
        let mut peer = HttpPeer::new(self.cfg.addr, self.cfg.tls, self.cfg.host.clone());
        peer.options.ca = self.cfg.ca.clone();
        peer.options.connection_timeout = Some(self.cfg.connect_timeout);
        peer.options.total_connection_timeout = Some(self.cfg.connect_timeout);
        peer.options.read_timeout = Some(self.cfg.read_timeout);
        peer
    }

    /// The read timeout (the relay applies it to the upstream's handshake response).
    pub fn read_timeout(&self) -> std::time::Duration {
        self.cfg.read_timeout
    }

    /// A new connection (never pooled: a WebSocket owns it), TLS-verified like the proxy's.
    pub async fn connect(&self) -> Result<Stream, GateError> {
        let peer = self.peer();
        match self.connector.new_stream(&peer).await {
            Ok(stream) => Ok(stream),
            Err(e) if matches!(e.etype(), ErrorType::ConnectTimedout) => {
                Err(GateError::UpstreamTimeout)
            }
            Err(e) => {
                tracing::warn!(error = %e, "connecting to the upstream failed");
                Err(GateError::UpstreamUnavailable)
            }
        }
    }
}
