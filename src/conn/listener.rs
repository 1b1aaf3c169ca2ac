//! A listener's accept-side application: it takes a connection slot (or refuses and
//! closes), makes the TLS handshake when the listener has TLS, wraps the stream in
//! [`Timed`], and hands HTTP/1 requests to the HTTP application (Pingora's proxy, or the
//! admin API) one by one, re-arming the deadlines between them. An HTTP/2 connection's
//! preface is read under the head deadline, then Pingora's h2 server serves it.

use super::head::{Deadlines, Timed};
use super::slots::{Refused, Slots};
use super::REFUSAL_WRITE_TIMEOUT;
use crate::error::GateError;
use crate::metrics::Metrics;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{GetSocketDigest, Shutdown, Ssl, Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::any::Any;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// A connection a request takes over once Pingora is done with it: one switched to another
/// protocol (a WebSocket). It leaves Pingora's request future (tens of KiB, alive as long as
/// its request) and lives on in the listener's own small one, still inside its connection
/// slot and under [`Timed`]'s write deadline.
pub trait Takeover: Send + Sync {
    /// Serves the connection to its end. `stream` is the client's, its request head read,
    /// nothing written to it yet.
    fn run(self: Box<Self>, stream: Stream) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A [`Takeover`] on its way from the request flow (Pingora's
/// `ProxyHttp::persist_connection_context`) back to the listener, with the kept-alive
/// connection (Pingora hands a connection back only if it may be reused: nothing written
/// to it, nothing read past the request).
pub struct Handover(Box<dyn Takeover>);

impl Handover {
    /// Wraps `t`.
    pub fn new(t: impl Takeover + 'static) -> Self {
        Handover(Box::new(t))
    }

    /// As Pingora carries a connection's context.
    pub fn into_context(self) -> Box<dyn Any + Send + Sync> {
        Box::new(self)
    }
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handover")
    }
}

/// A TLS record (TLS 1.2 framing, which TLS 1.3 clients accept before the ServerHello)
/// holding a fatal `internal_error` alert: what a refused TLS connection gets.
const TLS_INTERNAL_ERROR_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50];

/// A listener's application: admission, head deadlines, then the HTTP application `A`.
pub struct Listener<A> {
    proxy: Arc<A>,
    slots: Arc<Slots>,
    deadlines: Deadlines,
    idle_secs: u64,
    body_deadline: std::time::Duration,
    metrics: Arc<Metrics>,
    /// Whether its connections count in `sessiongate_connections_open` (the proxy
    /// listener's; the admin listener's do not).
    counted: bool,
    /// TLS, handshaken here rather than in Pingora's listener: after the connection took its
    /// slot, and within its own deadline (Pingora's is a fixed 60 s, before any cap).
    tls: Option<(Acceptor, std::time::Duration)>,
}

impl<A> Listener<A> {
    /// Wraps `http` with these caps (`slots`) and the configured deadlines.
    pub fn new(
        http: A,
        slots: Arc<Slots>,
        config: &crate::config::Config,
        metrics: Arc<Metrics>,
        counted: bool,
    ) -> Self {
        Listener {
            proxy: Arc::new(http),
            slots,
            deadlines: Deadlines::new(&config.connections, config.proxy.max_header_bytes),
            // Pingora's own keep-alive wait (whole seconds) is only the outer bound; the
            // precise one is `Timed`'s.
            idle_secs: config.connections.idle_timeout.as_secs().max(1) + 1,
            body_deadline: config.connections.body_read_timeout,
            metrics,
            counted,
            tls: None,
        }
    }

    /// Serves TLS: each admitted connection's handshake must end within
    /// `connections.tls_handshake_timeout_ms`.
    pub fn with_tls(mut self, acceptor: Acceptor, config: &crate::config::Config) -> Self {
        self.tls = Some((acceptor, config.connections.tls_handshake_timeout));
        self
    }

    /// The TLS handshake of an admitted connection, within its deadline; `None` when it
    /// failed or was late (counted), and the connection is dropped.
    async fn handshake(
        &self,
        acceptor: &Acceptor,
        due: std::time::Duration,
        stream: Stream,
    ) -> Option<Stream> {
        // The listener is plain TCP: what it hands over is Pingora's TCP stream.
        let Ok(tcp) = stream.into_any().downcast::<TcpStream>() else {
            tracing::error!("TLS listener got a stream that is not TCP: connection dropped");
            self.closed("tls_handshake_failed");
            return None;
        };
        let peer = tcp
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        match tokio::time::timeout(due, acceptor.tls_handshake(*tcp)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                // Pingora logged these at error; scanners and TCP health checks make them
                // common, so at debug (the counter is the signal).
                tracing::debug!(peer = ?peer, error = %e, "TLS handshake failed");
                self.closed("tls_handshake_failed");
                None
            }
            Err(_) => {
                self.closed("tls_handshake_timeout");
                None
            }
        }
    }

    fn closed(&self, reason: &str) {
        self.metrics
            .connections_closed
            .with_label_values(&[reason])
            .inc();
    }

    /// Answers a connection past a cap and closes it. HTTP/2 clients (ALPN) cannot read an
    /// HTTP/1.1 answer; they just see the close.
    async fn refuse(&self, mut stream: Stream, why: Refused) {
        self.metrics
            .connections_refused
            .with_label_values(&[why.name()])
            .inc();
        // Before a TLS handshake nothing HTTP can be said (and making one for a refusal
        // would spend what the cap saves): a plaintext fatal alert (internal_error) says
        // "refused" instead of a reset. HTTP/2 clients cannot read an HTTP/1.1 answer.
        if self.tls.is_none() && matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return;
        }
        let response = match self.tls {
            Some(_) => TLS_INTERNAL_ERROR_ALERT.to_vec(),
            None => GateError::TooManyConnections(1).http1_close(),
        };
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
            stream.write_all(&response).await?;
            stream.flush().await
        })
        .await;
        // Closing with the request unread would reset the connection and could destroy the
        // answer before the client reads it: stop sending, then drain briefly.
        Shutdown::shutdown(stream.as_mut()).await;
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
            let mut sink = [0u8; 4096];
            loop {
                match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

/// The client's address, for the per-address cap. A stream without one (a Unix socket)
/// counts as the unspecified address, so such clients share one per-address count.
fn peer_ip(stream: &Stream) -> IpAddr {
    // Canonical, as the request path sees it: on a dual-stack listener an IPv4 client
    // arrives as `::ffff:a.b.c.d`, which would miss an IPv4 trusted-proxy range and get a
    // per-address slot of its own apart from its plain-IPv4 self.
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |ip| {
            ip.to_canonical()
        })
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Listener<A> {
    /// The connection is served in a task of its own: the one Pingora spawned for it holds
    /// its TLS handshake's state inline (8.8 KiB, pingora-core 0.9.1 `services/listening.rs`,
    /// `run_endpoint`) for the connection's whole life, whether or not it has TLS; it ends
    /// here. A connection waiting in [`Listener::serve`] costs a ~1.3 KiB future instead.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        tokio::spawn(self.clone().serve(stream, shutdown.clone()));
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Listener<A> {
    /// Serves one connection to its end: admission, TLS, then its requests one by one (or
    /// a [`Takeover`]).
    async fn serve(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch) {
        let shutdown = &shutdown;
        let _slot = match self.slots.admit(peer_ip(&stream)) {
            Ok(slot) => slot,
            // Boxed, like the handshake below: both are rare or brief, and inline they would
            // size every connection's future for its whole life (8 KiB instead of ~1.3).
            Err(why) => {
                Box::pin(self.refuse(stream, why)).await;
                return;
            }
        };
        let _gauge = self
            .counted
            .then(|| crate::metrics::Held::new(&self.metrics.connections_open));
        let opened = tokio::time::Instant::now();
        let stream = match &self.tls {
            Some((acceptor, due)) => match Box::pin(self.handshake(acceptor, *due, stream)).await {
                Some(stream) => stream,
                None => return,
            },
            None => stream,
        };
        // The head deadline runs from the accept, the handshake's time included.
        let mut timed = Box::new(Timed::opened_at(
            stream,
            self.deadlines,
            self.metrics.clone(),
            opened,
        ));
        if matches!(timed.selected_alpn_proto(), Some(ALPN::H2)) {
            // HTTP/2 frames its own requests and Pingora's h2 server (with `h2_idle_timeout`)
            // serves the connection, but it waits for the client's preface for ever: the
            // preface and the first SETTINGS frame must come within the head deadline.
            let mut stopping = shutdown.clone();
            let prefaced = tokio::select! {
                ok = timed.h2_preface() => ok,
                _ = stopping.changed() => false,
            };
            if !prefaced || *shutdown.borrow() {
                return;
            }
            // HTTP/2 hands nothing back: the h2 server serves the connection to its end.
            let _ = ServerApp::process_new(&self.proxy, timed, shutdown).await;
            return;
        }
        let mut settings = None;
        loop {
            // A kept-alive connection waiting here ends when the server begins to shut down
            // (Pingora's own wait does the same).
            let mut stopping = shutdown.clone();
            if *stopping.borrow() {
                return;
            }
            let more = tokio::select! {
                more = timed.next_request() => more,
                _ = stopping.changed() => false,
            };
            if !more {
                return;
            }
            let mut session = ServerSession::new_http1(timed);
            // A body the application did not read is drained before the connection is
            // reused, read by read (Pingora's 60 s each): bound the whole drain like any
            // body, or a GET with a dripping chunked body holds its slot for good.
            session.set_total_drain_timeout(Some(self.body_deadline));
            match settings.take() {
                Some(s) => HttpPersistentSettings::apply_to_session(s, &mut session),
                None => session.set_keepalive((!*shutdown.borrow()).then_some(self.idle_secs)),
            }
            let Some(reused) =
                HttpServerApp::process_new_http(&self.proxy, session, shutdown).await
            else {
                return;
            };
            let (stream, mut kept) = reused.consume();
            // Only ever a `Timed` here: it is what went in.
            let Ok(reused) = stream.into_any().downcast::<Timed>() else {
                return;
            };
            timed = reused;
            let handover = kept
                .as_mut()
                .and_then(HttpPersistentSettings::take_user_context)
                .and_then(|c| c.downcast::<Handover>().ok());
            if let Some(handover) = handover {
                // Only after a whole head (which Pingora parsed): were this wrapper to think
                // otherwise, its head deadline or size cap would write a 408 or 431 into the
                // taken-over stream.
                if timed.head_complete() {
                    handover.0.run(timed).await;
                }
                return;
            }
            settings = kept;
            timed.rearm();
        }
    }
}
