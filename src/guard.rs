//! Request-shape checks: what every request must satisfy before anything reads its path or
//! its credentials — head size and count, unambiguous framing (no smuggling shapes), an
//! unambiguous path, and no upgrade but WebSocket. Each is a function of the request head
//! alone, tested without a socket.

use crate::config::{AmbiguousPaths, ProxyConfig};
use crate::error::GateError;
use crate::path;
use crate::upgrade;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use pingora::http::RequestHeader;

/// Runs every shape check on `req`. `raw_head` gives the HTTP/1 head as received (`None` on
/// HTTP/2); it is only read when the parsed head cannot tell.
pub fn check<B: AsRef<[u8]>>(
    req: &RequestHeader,
    proxy: &ProxyConfig,
    raw_head: impl FnOnce() -> Option<B>,
) -> Result<(), GateError> {
    check_header_size(req, proxy.max_header_bytes)?;
    if req.headers.len() > proxy.max_header_count {
        return Err(GateError::TooManyHeaders(proxy.max_header_count));
    }
    check_framing(req)?;
    // Pingora drops Content-Length when Transfer-Encoding is present (RFC 9112 §6.3;
    // pingora-core 0.9.1, `protocols/http/v1/server.rs`, `read_request`:
    // `remove_header(&CONTENT_LENGTH)`), so the parsed headers no longer show the
    // smuggling shape; look at the raw bytes.
    if req.headers.contains_key(TRANSFER_ENCODING)
        && raw_head().is_some_and(|raw| raw_has_content_length(raw.as_ref()))
    {
        return Err(GateError::BadRequest(
            "both Content-Length and Transfer-Encoding are present".into(),
        ));
    }
    // Before routing, and on every route: a path that a lenient backend could resolve
    // somewhere else than the gateway does (`/public/..%2Fv1/graphql`) is refused.
    if proxy.ambiguous_paths == AmbiguousPaths::Reject {
        if let Some(why) = path::ambiguity(req.uri.path()) {
            return Err(GateError::BadRequest(format!(
                "ambiguous request path: it holds {why} (proxy.ambiguous_paths)"
            )));
        }
    }
    // Pingora passes through any upgrade request the upstream answers with 101
    // (pingora-proxy 0.9.1, `proxy_h1.rs`); only WebSocket upgrades the relay handles
    // (or, on public routes, plain GET WebSockets) may ask.
    if req.headers.contains_key(UPGRADE) && !upgrade::is_websocket(req) {
        return Err(GateError::BadRequest(
            "only WebSocket upgrades (GET, HTTP/1.1) are accepted".into(),
        ));
    }
    Ok(())
}

/// Whether the request declares a body: chunked, or a `Content-Length` other than `0`.
pub fn declares_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(TRANSFER_ENCODING)
        || req
            .headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Refuses a declared body larger than the route accepts before any of it is read.
pub fn declared_body(req: &RequestHeader, limit: u64) -> Result<(), GateError> {
    let declared = req
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GateError::PayloadTooLarge(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ));
    }
    Ok(())
}

/// Refuses request heads over the configured size (Pingora's own cap is far larger).
fn check_header_size(req: &RequestHeader, limit: usize) -> Result<(), GateError> {
    let size: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > limit {
        return Err(GateError::HeadersTooLarge(limit));
    }
    Ok(())
}

/// Refuses the framings used for request smuggling, whatever the HTTP parser let through.
fn check_framing(req: &RequestHeader) -> Result<(), GateError> {
    let te = req.headers.get_all(TRANSFER_ENCODING);
    let te_count = te.iter().count();
    let mut lengths = req.headers.get_all(CONTENT_LENGTH).iter();
    let first_len = lengths.next();
    if te_count > 0 && first_len.is_some() {
        return Err(GateError::BadRequest(
            "both Content-Length and Transfer-Encoding are present".into(),
        ));
    }
    if te_count > 1
        || te
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(GateError::BadRequest(
            "unsupported Transfer-Encoding".into(),
        ));
    }
    if let Some(first) = first_len {
        let valid =
            |v: &http::HeaderValue| !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit);
        if !valid(first) || lengths.any(|v| v != first) {
            return Err(GateError::BadRequest(
                "invalid or conflicting Content-Length".into(),
            ));
        }
    }
    Ok(())
}

/// Whether a raw HTTP/1 request head has a `Content-Length` field line.
fn raw_has_content_length(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::Error;

    fn req(headers: &[(&str, &str)]) -> Result<RequestHeader, Box<Error>> {
        let mut r = RequestHeader::build("POST", b"/x", None)?;
        for (k, v) in headers {
            r.append_header(k.to_string(), *v)?;
        }
        Ok(r)
    }

    #[test]
    fn smuggling_shapes_are_refused() -> Result<(), Box<Error>> {
        assert!(check_framing(&req(&[
            ("content-length", "5"),
            ("transfer-encoding", "chunked")
        ])?)
        .is_err());
        assert!(check_framing(&req(&[("content-length", "5"), ("content-length", "6")])?).is_err());
        assert!(check_framing(&req(&[("content-length", "5, 6")])?).is_err());
        assert!(check_framing(&req(&[("transfer-encoding", "chunked, identity")])?).is_err());
        assert!(check_framing(&req(&[("content-length", "5"), ("content-length", "5")])?).is_ok());
        assert!(check_framing(&req(&[("transfer-encoding", "Chunked")])?).is_ok());
        assert!(check_framing(&req(&[])?).is_ok());
        Ok(())
    }

    #[test]
    fn raw_content_length_detection() {
        assert!(raw_has_content_length(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
        ));
        assert!(raw_has_content_length(
            b"POST / HTTP/1.1\r\ncontent-LENGTH: 4\r\n\r\n"
        ));
        assert!(!raw_has_content_length(
            b"POST /content-length: HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        assert!(!raw_has_content_length(
            b"POST / HTTP/1.1\r\nX-Content-Length: 4\r\n\r\n"
        ));
    }

    #[test]
    fn declared_bodies_over_the_limit_are_refused() -> Result<(), Box<Error>> {
        assert!(declared_body(&req(&[("content-length", "11")])?, 10).is_err());
        assert!(declared_body(&req(&[("content-length", "10")])?, 10).is_ok());
        assert!(declared_body(&req(&[])?, 0).is_ok());
        Ok(())
    }
}
