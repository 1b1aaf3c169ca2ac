//! Responses the gateway writes itself, in one place each: a [`GateError`] as JSON (proxy
//! refusals, upstream failures, WebSocket handshake refusals), and a session API's [`Reply`].
//! Both carry the request id, `Cache-Control: no-store` (unless a reply says otherwise) and
//! the request's CORS headers (`extra`), so a browser app can read refusals too.

use crate::dialect::Reply;
use crate::error::GateError;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::Session as HttpSession;
use pingora::Result;

pub use crate::header_names::REQUEST_ID;

/// Headers added to every response the gateway writes for a request (its CORS headers).
pub type Extra = [(&'static str, HeaderValue)];

/// Writes a gateway error as JSON, with its `WWW-Authenticate` and `Retry-After`.
pub async fn error(
    session: &mut HttpSession,
    err: &GateError,
    request_id: &str,
    extra: &Extra,
) -> Result<()> {
    let r = err.response();
    let body = Bytes::from(err.body());
    let mut resp = ResponseHeader::build(r.status, Some(7 + extra.len()))?;
    resp.insert_header(REQUEST_ID, request_id)?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    for (name, value) in r.headers() {
        resp.insert_header(name, value)?;
    }
    for (name, value) in extra {
        resp.append_header(*name, value)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Answers a CORS preflight from an allowed origin: 204 with its headers.
pub async fn preflight(session: &mut HttpSession, request_id: &str, extra: &Extra) -> Result<()> {
    let mut resp = ResponseHeader::build(204, Some(3 + extra.len()))?;
    resp.insert_header(REQUEST_ID, request_id)?;
    resp.insert_header("content-length", "0")?;
    resp.insert_header("cache-control", "no-store")?;
    for (name, value) in extra {
        resp.append_header(*name, value)?;
    }
    session.write_response_header(Box::new(resp), true).await
}

/// Writes a session API's reply whole.
pub async fn reply(
    session: &mut HttpSession,
    reply: Reply,
    request_id: &str,
    extra: &Extra,
) -> Result<()> {
    let mut resp =
        ResponseHeader::build(reply.status, Some(5 + reply.headers.len() + extra.len()))?;
    resp.insert_header(REQUEST_ID, request_id)?;
    resp.insert_header("content-type", reply.content_type)?;
    resp.insert_header("content-length", reply.body.len().to_string())?;
    // Nothing the gateway answers itself may be cached, unless the reply says otherwise
    // (the JWKS).
    if !reply.headers.iter().any(|(n, _)| *n == "cache-control") {
        resp.insert_header("cache-control", "no-store")?;
    }
    for (name, value) in reply.headers {
        resp.append_header(name, value)?;
    }
    for (name, value) in extra {
        resp.append_header(*name, value)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(reply.body)), true)
        .await
}
