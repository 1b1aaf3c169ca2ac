//! The upstream half of a WebSocket handshake: the request the relay sends (the client's,
//! rewritten like any forwarded request) and the response head it reads back.

use super::Authed;
use crate::error::GateError;
use crate::headers;
use crate::App;
use http::header::{CONNECTION, UPGRADE};
use pingora::http::RequestHeader;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest upstream handshake response head.
const MAX_HEAD: usize = 16 * 1024;

/// The upstream's answer to the handshake.
#[derive(Debug)]
pub struct Response {
    /// Its status.
    pub status: u16,
    /// Its header fields, as received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes the upstream sent after the head (the first WebSocket frames).
    pub early: Vec<u8>,
}

/// The handshake request sent upstream: the client's, with the forwarded path, identity
/// rewritten as for any request (`hasura::identity_for`), and no compression offered, so
/// that `connection_init` is always readable. `protocol`: the only subprotocol offered (the
/// one the gateway already agreed with the client), instead of the client's list.
pub fn request(
    app: &App,
    req: &RequestHeader,
    uri: &http::Uri,
    authed: Option<&Authed>,
    request_id: &str,
    protocol: Option<&'static str>,
) -> Result<Vec<u8>, GateError> {
    let mut head = req.clone();
    head.set_uri(uri.clone());
    head.remove_header("sec-websocket-extensions");
    // After the 101 every client byte is WebSocket data: a handshake never has a body.
    head.remove_header("content-length");
    head.remove_header("transfer-encoding");
    let identity = match authed {
        Some(a) => Some(app.hasura.identity_for(&a.session, a.token.expose())?),
        None => None,
    };
    headers::rewrite(&mut head, identity.as_ref(), request_id)?;
    if identity.is_none() {
        // A socket that authenticates in connection_init: whatever `Authorization` the
        // handshake carried was not a bearer the gateway checked, and must not reach a
        // backend that would believe it.
        head.remove_header(&http::header::AUTHORIZATION);
    }
    // After `rewrite`, which removes what the client's `Connection` names: the client cannot
    // strip what the gateway sets.
    if let Some(p) = protocol {
        head.insert_header("sec-websocket-protocol", p)
            .map_err(|_| GateError::Internal)?;
    }
    head.insert_header(CONNECTION, "Upgrade")
        .map_err(|_| GateError::Internal)?;
    // Only the protocol the relay speaks: `Upgrade: websocket, h2c` must not let the upstream
    // pick another one for bytes the relay reads as WebSocket frames.
    head.insert_header(UPGRADE, "websocket")
        .map_err(|_| GateError::Internal)?;
    let mut out = format!("GET {} HTTP/1.1\r\n", head.uri).into_bytes();
    for (name, value) in head.headers.iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// Reads the upstream's handshake response head, and any bytes after it.
pub async fn response<S: AsyncRead + Unpin + ?Sized>(up: &mut S) -> Result<Response, GateError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = up
            .read(&mut chunk)
            .await
            .map_err(|_| GateError::UpstreamUnavailable)?;
        if n == 0 {
            return Err(GateError::UpstreamUnavailable);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.unwrap_or(502);
                let headers = resp
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect();
                return Ok(Response {
                    status,
                    headers,
                    early: buf.split_off(len),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Err(GateError::UpstreamUnavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn response_head_and_early_bytes() -> Result<(), GateError> {
        let bytes: &[u8] =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: graphql-ws\r\n\r\n\x81\x00";
        let mut reader = bytes;
        let r = response(&mut reader).await?;
        assert_eq!(r.status, 101);
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.early, b"\x81\x00");
        let mut truncated: &[u8] = b"HTTP/1.1 101 Switching";
        assert!(response(&mut truncated).await.is_err());
        Ok(())
    }
}
