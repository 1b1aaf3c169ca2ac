//! A WebSocket upstream (tokio-tungstenite, independent of the gateway's own framing) that
//! records each connection's handshake headers and first message, echoes every text
//! message, and picks the first GraphQL subprotocol the client offers. Plain TCP, or TLS
//! with a given server config.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// What one connection showed the upstream.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Handshake headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Every text message received, in order.
    pub messages: Vec<String>,
}

pub struct WsEcho {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _rt: tokio::runtime::Runtime,
}

impl WsEcho {
    pub fn start() -> Result<WsEcho, Box<dyn std::error::Error>> {
        Self::start_with(None)
    }

    /// A `wss://` upstream with this server certificate.
    pub fn start_tls(tls: Arc<rustls::ServerConfig>) -> Result<WsEcho, Box<dyn std::error::Error>> {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(tls)))
    }

    fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<WsEcho, Box<dyn std::error::Error>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve(s, record).await;
                            }
                        }
                        None => serve(stream, record).await,
                    }
                });
            }
        });
        Ok(WsEcho {
            addr,
            seen,
            _rt: rt,
        })
    }

    /// A copy of what the upstream has seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// One upstream connection: handshake (recording its headers), then echo text messages.
async fn serve<S>(stream: S, record: Arc<Mutex<Vec<Seen>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let index = {
        let Ok(mut all) = record.lock() else { return };
        all.push(Seen::default());
        all.len() - 1
    };
    let hs_record = record.clone();
    // The callback's signature (and its large error type) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, mut resp: Response| {
        if let Ok(mut all) = hs_record.lock() {
            all[index].headers = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).to_string(),
                    )
                })
                .collect();
        }
        let offered = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|p| p.trim().to_string());
        if let Some(p) = offered.and_then(|p| p.parse().ok()) {
            resp.headers_mut().insert("sec-websocket-protocol", p);
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(t) => {
                if let Ok(mut all) = record.lock() {
                    all[index].messages.push(t.to_string());
                }
                if ws.send(Message::Text(t)).await.is_err() {
                    break;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
}
