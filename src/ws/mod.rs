//! WebSocket relay for protected routes.
//!
//! Pingora's own upgrade path has no way to speak to a client at a moment of the proxy's
//! choosing, and the gateway must close a socket when its session is revoked even if no byte
//! moves. So upgrades on protected routes are relayed here: the gateway connects to the
//! upstream itself, forwards the (rewritten) handshake, answers the client's 101 with the
//! upstream's, and then moves bytes both ways while it
//!
//! - holds back the client's bytes until its first data message, which must be graphql-ws
//!   `connection_init` (for the `graphql-transport-ws` and legacy `graphql-ws` subprotocols):
//!   the token may come from it (browsers cannot set headers on a WebSocket), and it is
//!   rewritten so that Hasura, which merges its payload headers into the session, sees only
//!   the gateway's identity;
//! - re-checks the session every [`CHECK_EVERY`] and closes the socket (4403, with a reason)
//!   once it is revoked or expired, at a frame boundary of the stream to the client.
//!
//! Everything after `connection_init` streams through untouched. Compression extensions are
//! not offered upstream, so `connection_init` is always readable.

pub mod frame;
pub mod init;

use crate::config::HasuraMode;
use crate::error::GateError;
use crate::headers;
use crate::json::StrictError;
use crate::session::model::Session;
use crate::App;
use bytes::Bytes;
use frame::Boundaries;
use http::header::{CONNECTION, UPGRADE};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::Session as HttpSession;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The upstream connection: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Upstream = Box<dyn Io>;

/// Connects to the upstream, with TLS when its URL is `https://`.
async fn connect_upstream(app: &App) -> Result<Upstream, GateError> {
    let up = &app.config.upstream;
    let tcp = match tokio::time::timeout(up.connect_timeout, TcpStream::connect(up.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Err(GateError::UpstreamUnavailable),
        Err(_) => return Err(GateError::UpstreamTimeout),
    };
    let _ = tcp.set_nodelay(true);
    if !up.tls {
        return Ok(Box::new(tcp));
    }
    let name = pingora::tls::ServerName::try_from(up.host.clone())
        .map_err(|_| GateError::UpstreamUnavailable)?;
    let client = app
        .upstream_tls
        .as_ref()
        .map(|t| t.client.clone())
        .ok_or(GateError::UpstreamUnavailable)?;
    let connector = pingora::tls::TlsConnector::from(client);
    match tokio::time::timeout(up.connect_timeout, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "TLS handshake with the upstream failed");
            Err(GateError::UpstreamUnavailable)
        }
        Err(_) => Err(GateError::UpstreamTimeout),
    }
}

/// How often a live socket's session is checked again.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Largest `connection_init` accepted.
const MAX_INIT: usize = 64 * 1024;
/// Largest client message on a GraphQL socket (each is held and read whole).
const MAX_MESSAGE: usize = 1024 * 1024;
/// Largest upstream handshake response head.
const MAX_HEAD: usize = 16 * 1024;

/// The GraphQL-over-WebSocket subprotocols, which carry `connection_init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subprotocol {
    /// `graphql-transport-ws` (graphql-ws library).
    TransportWs,
    /// `graphql-ws` (legacy subscriptions-transport-ws, Hasura's default).
    LegacyWs,
}

impl Subprotocol {
    fn from_name(name: &str) -> Option<Subprotocol> {
        match name.trim() {
            "graphql-transport-ws" => Some(Subprotocol::TransportWs),
            "graphql-ws" => Some(Subprotocol::LegacyWs),
            _ => None,
        }
    }
}

/// Whether a request asks to become a WebSocket (HTTP/1.1 GET with `Upgrade: websocket`).
pub fn is_upgrade(req: &RequestHeader) -> bool {
    req.method == http::Method::GET
        && req.version == http::Version::HTTP_11
        && req
            .headers
            .get_all(UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Whether the client offers a GraphQL subprotocol (then the token may wait for
/// `connection_init`).
pub fn offers_graphql(req: &RequestHeader) -> bool {
    offered(req).next().is_some()
}

fn offered(req: &RequestHeader) -> impl Iterator<Item = Subprotocol> + '_ {
    req.headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(Subprotocol::from_name)
}

/// Why a relayed socket ended (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client or the upstream closed it.
    Closed,
    /// The session was revoked or expired.
    Revoked,
    /// No credential, or an expired one (at the handshake or in `connection_init`).
    Unauthorized,
    /// A credential was presented in `connection_init` and refused: a failed
    /// authentication ([`GateError::counts_as_failed_authentication`]).
    Refused,
    /// The first message was not a valid `connection_init`.
    BadInit,
    /// A client message was not a strict JSON object (duplicate key, bad JSON, not an
    /// object): Hasura could read it differently from the gateway.
    BadMessage(crate::json::StrictError),
    /// No `connection_init` in time.
    InitTimeout,
    /// A second `connection_init`.
    TooManyInits,
    /// A client message over the relay's limit.
    TooLarge,
    /// The session store could not confirm the session.
    StoreUnavailable,
    /// The upstream refused the handshake or could not be reached.
    UpstreamFailed,
    /// The gateway failed (e.g. minting the Hasura JWT for `connection_init`).
    Internal,
}

impl End {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Revoked => "revoked",
            End::Unauthorized | End::Refused => "unauthorized",
            End::BadInit => "bad_init",
            End::BadMessage(_) => "bad_message",
            End::InitTimeout => "init_timeout",
            End::TooManyInits => "too_many_inits",
            End::TooLarge => "too_large",
            End::StoreUnavailable => "store_unavailable",
            End::UpstreamFailed => "upstream_failed",
            End::Internal => "internal",
        }
    }

    /// The close code and reason the client gets (graphql-transport-ws codes; the legacy
    /// protocol defines none and gets the same).
    fn close(self) -> Option<(u16, &'static str)> {
        match self {
            End::Closed | End::UpstreamFailed => None,
            End::Revoked => Some((4403, "Forbidden: the session was revoked or has expired")),
            End::Unauthorized | End::Refused => Some((4401, "Unauthorized")),
            End::BadInit => Some((
                4400,
                "the first message must be connection_init, every message a JSON object",
            )),
            End::BadMessage(StrictError::DuplicateKey) => {
                Some((4400, "Invalid message: duplicate JSON object key"))
            }
            End::BadMessage(StrictError::NotObject) => {
                Some((4400, "Invalid message: not a JSON object"))
            }
            End::BadMessage(StrictError::Syntax) => Some((4400, "Invalid message: not valid JSON")),
            End::InitTimeout => Some((4408, "Connection initialisation timeout")),
            End::TooManyInits => Some((4429, "Too many initialisation requests")),
            End::TooLarge => Some((1009, "message too big")),
            End::StoreUnavailable => Some((4500, "the session store is unavailable")),
            End::Internal => Some((1011, "internal error")),
        }
    }
}

/// The authenticated side of a socket.
struct Authed {
    session: Arc<Session>,
    token: String,
}

/// The handshake request sent upstream: the client's, with the forwarded path, identity
/// rewritten as for any request, and no compression offered.
fn upstream_handshake(
    app: &App,
    req: &RequestHeader,
    uri: &http::Uri,
    authed: Option<&Authed>,
    request_id: &str,
) -> Result<Vec<u8>, GateError> {
    let mut head = req.clone();
    head.set_uri(uri.clone());
    head.insert_header("x-request-id", request_id)
        .map_err(|_| GateError::Internal)?;
    head.remove_header("sec-websocket-extensions");
    // After the 101 every client byte is WebSocket data: a handshake never has a body.
    head.remove_header("content-length");
    head.remove_header("transfer-encoding");
    let minted = match (app.hasura.mode(), authed) {
        (HasuraMode::Jwt, Some(a)) => Some(app.hasura.jwt_for(&a.session)?),
        _ => None,
    };
    headers::rewrite(
        &mut head,
        authed.map(|a| a.session.as_ref()),
        app.hasura
            .rewrite_options(&app.config.proxy, minted.as_ref().map(|m| m.token.as_str())),
    )?;
    head.insert_header(CONNECTION, "Upgrade")
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

/// What `connection_init` carries for a session, per Hasura mode.
fn init_identity(app: &App, a: &Authed) -> Result<Vec<(&'static str, String)>, GateError> {
    let s = &a.session;
    let mut set = vec![(headers::HOST_ID, s.host_id.clone())];
    match app.hasura.mode() {
        HasuraMode::Headers => {
            set.push((headers::USER_ID, s.user_id.clone()));
            set.push((headers::BUSINESS_ID, s.business_id.clone()));
            set.push((headers::ROLE, s.role.clone()));
            if let Some(secret) = &app.config.proxy.hasura_admin_secret {
                set.push((headers::ADMIN_SECRET, secret.expose().to_string()));
            }
            if app.config.proxy.forward_authorization {
                set.push(("Authorization", format!("Bearer {}", a.token)));
            }
        }
        HasuraMode::Jwt => {
            let m = app.hasura.jwt_for(s)?;
            set.push(("Authorization", format!("Bearer {}", m.token)));
        }
        // The token the gateway checked, never another one the client slipped in.
        HasuraMode::Webhook => set.push(("Authorization", format!("Bearer {}", a.token))),
    }
    Ok(set)
}

/// Reads the upstream's handshake response head; returns it parsed and any bytes after it.
async fn read_response_head(
    up: &mut Upstream,
) -> Result<(u16, Vec<(String, Vec<u8>)>, Vec<u8>), GateError> {
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
                return Ok((status, headers, buf.split_off(len)));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Err(GateError::UpstreamUnavailable),
        }
    }
}

/// What the proxy knows about a socket it hands to [`relay`].
#[derive(Debug)]
pub struct Socket<'a> {
    /// The forwarded path and query.
    pub uri: &'a http::Uri,
    /// The session, when the handshake carried a valid bearer.
    pub session: Option<Arc<Session>>,
    /// That bearer (re-checked while the socket lives).
    pub token: Option<String>,
    /// The client's address (failed authentications count against it).
    pub client_ip: std::net::IpAddr,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// GraphQL over WebSocket (every protected path but Amity's realtime paths): one
    /// `connection_init` first, rewritten; no second one; every message must be JSON.
    pub graphql: bool,
}

/// Relays one WebSocket. Without a bearer at the handshake the socket must be a GraphQL one
/// and authenticates in `connection_init`. Returns how it ended; errors before the 101 are
/// answered here too.
pub async fn relay(app: &App, down: &mut HttpSession, s: Socket<'_>) -> End {
    let request_id = s.request_id;
    let mut authed = match (s.session, s.token) {
        (Some(session), Some(token)) => Some(Authed { session, token }),
        _ => None,
    };
    if authed.is_none() && !s.graphql {
        return refuse(down, request_id, &GateError::MissingToken).await;
    }
    let upstream = &app.config.upstream;
    let handshake =
        match upstream_handshake(app, down.req_header(), s.uri, authed.as_ref(), request_id) {
            Ok(h) => h,
            Err(e) => return refuse(down, request_id, &e).await,
        };
    let mut up = match connect_upstream(app).await {
        Ok(s) => s,
        Err(e) => return refuse(down, request_id, &e).await,
    };
    if up.write_all(&handshake).await.is_err() {
        return refuse(down, request_id, &GateError::UpstreamUnavailable).await;
    }
    let head = tokio::time::timeout(upstream.read_timeout, read_response_head(&mut up)).await;
    let (status, resp_headers, early) = match head {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return refuse(down, request_id, &e).await,
        Err(_) => return refuse(down, request_id, &GateError::UpstreamTimeout).await,
    };
    if status != 101 {
        tracing::info!(status, "upstream refused the WebSocket upgrade");
        return refuse(down, request_id, &GateError::UpstreamUnavailable).await;
    }
    let mut resp = match ResponseHeader::build(101, Some(resp_headers.len() + 1)) {
        Ok(r) => r,
        Err(_) => return End::UpstreamFailed,
    };
    let mut protocol = None;
    for (name, value) in resp_headers {
        if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protocol = std::str::from_utf8(&value)
                .ok()
                .and_then(Subprotocol::from_name);
        }
        if resp.append_header(name, value.as_slice()).is_err() {
            return End::UpstreamFailed;
        }
    }
    if resp.insert_header("x-request-id", request_id).is_err() {
        return End::UpstreamFailed;
    }
    if down
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
    {
        return End::Closed;
    }
    // The socket lives as long as its session; idleness is the upstream's business.
    down.set_read_timeout(None);
    app.metrics.websockets_open.inc();
    let end = pump(app, down, &mut up, &mut authed, s.graphql, protocol, early).await;
    if matches!(
        end,
        End::Refused
            | End::Unauthorized
            | End::BadInit
            | End::InitTimeout
            | End::TooManyInits
            | End::BadMessage(_)
    ) {
        // A refused credential counts like anywhere else. Unlike an HTTP request, a socket
        // that never authenticated also costs an upstream connection and handshake (the relay
        // opens them before connection_init), so a connection_init without a credential, or
        // with an expired one, counts here too, as do protocol violations: otherwise opening
        // sockets and never authenticating would be free.
        app.limits.auth_failed(s.client_ip).await;
    }
    app.metrics.websockets_open.dec();
    let _ = up.shutdown().await;
    let _ = down.write_response_body(None, true).await;
    end
}

/// Answers a refused handshake with the gateway's JSON error (before any 101).
async fn refuse(down: &mut HttpSession, request_id: &str, err: &GateError) -> End {
    let end = match err {
        GateError::MissingToken
        | GateError::InvalidToken(_)
        | GateError::SessionNotFound
        | GateError::SessionExpired
        | GateError::InvalidRefreshToken
        | GateError::RefreshTokenReused
        | GateError::AdminUnauthorized
        | GateError::Forbidden(_) => End::Unauthorized,
        GateError::StoreUnavailable => End::StoreUnavailable,
        GateError::UpstreamUnavailable | GateError::UpstreamTimeout => End::UpstreamFailed,
        // A request refused for its shape or rate (none reaches the relay today).
        GateError::BadRequest(_)
        | GateError::InvalidField { .. }
        | GateError::PayloadTooLarge(_)
        | GateError::HeadersTooLarge(_)
        | GateError::TooManyHeaders(_)
        | GateError::NotFound
        | GateError::MethodNotAllowed
        | GateError::RequestTimeout
        | GateError::TooManyConnections(_)
        | GateError::RateLimited(_) => End::BadInit,
        GateError::Internal => End::Internal,
    };
    down.set_keepalive(None);
    let _ = crate::respond::error(down, err, request_id).await;
    end
}

/// The client's stream as the relay reads it on a GraphQL socket: frames held until their
/// message is complete.
#[derive(Default)]
struct ClientStream {
    /// Bytes not yet parsed into whole frames.
    raw: Vec<u8>,
    /// The current message, unmasked.
    message: Vec<u8>,
    /// The current message's frames as received.
    message_frames: Vec<u8>,
    /// `connection_init` has gone upstream.
    initialised: bool,
}

/// Moves bytes both ways until one side closes or the session ends.
async fn pump(
    app: &App,
    down: &mut HttpSession,
    up: &mut Upstream,
    authed: &mut Option<Authed>,
    graphql: bool,
    protocol: Option<Subprotocol>,
    early: Vec<u8>,
) -> End {
    let mut to_client = Boundaries::default();
    if !early.is_empty() {
        to_client.feed(&early);
        if down
            .write_response_body(Some(Bytes::from(early)), false)
            .await
            .is_err()
        {
            return End::Closed;
        }
    }
    let mut client = ClientStream::default();
    let init_deadline = Instant::now() + app.config.proxy.websocket_init_timeout;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 16 * 1024];
    let end = loop {
        tokio::select! {
            r = down.read_request_body() => {
                let Ok(Some(bytes)) = r else { break End::Closed };
                let out = if graphql {
                    client.raw.extend_from_slice(&bytes);
                    match client_bytes(app, &mut client, authed).await {
                        Ok(out) => out,
                        Err(end) => break end,
                    }
                } else {
                    bytes.to_vec()
                };
                if !out.is_empty() && up.write_all(&out).await.is_err() {
                    break End::Closed;
                }
            }
            r = up.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => break End::Closed,
                    Ok(n) => n,
                };
                to_client.feed(&buf[..n]);
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                if down.write_response_body(Some(chunk), false).await.is_err() {
                    break End::Closed;
                }
            }
            _ = tick.tick() => {
                let waiting = graphql && !client.initialised;
                if let Some(end) = still_valid(app, authed.as_ref(), waiting, init_deadline).await {
                    break end;
                }
            }
        }
    };
    if let Some((code, reason)) = end.close() {
        if protocol == Some(Subprotocol::LegacyWs)
            && matches!(end, End::Unauthorized | End::Refused)
        {
            // The legacy protocol reports a refused connection_init as a message first.
            let msg =
                serde_json::json!({"type": "connection_error", "payload": {"message": reason}});
            let _ = write_frame(
                down,
                &mut to_client,
                frame::encode(frame::TEXT, msg.to_string().as_bytes(), None),
            )
            .await;
        }
        let _ = write_frame(down, &mut to_client, frame::close(code, reason, None)).await;
    }
    app.metrics
        .websocket_closes
        .with_label_values(&[end.label()])
        .inc();
    end
}

/// Writes a frame of the gateway's own to the client, only between two upstream frames.
async fn write_frame(down: &mut HttpSession, at: &mut Boundaries, f: Vec<u8>) -> bool {
    if !at.at_boundary() {
        return false;
    }
    at.feed(&f);
    down.write_response_body(Some(Bytes::from(f)), false)
        .await
        .is_ok()
}

/// `None` while the socket may live on.
async fn still_valid(
    app: &App,
    authed: Option<&Authed>,
    waiting_for_init: bool,
    init_deadline: Instant,
) -> Option<End> {
    if waiting_for_init && Instant::now() >= init_deadline {
        return Some(End::InitTimeout);
    }
    let a = authed?;
    match app.sessions.authenticate(&a.token).await {
        Ok(_) => None,
        Err(GateError::StoreUnavailable) => Some(End::StoreUnavailable),
        Err(_) => Some(End::Revoked),
    }
}

/// Whether a complete message is a `connection_init`. Parsed strictly: Hasura (aeson)
/// keeps the first of two equal keys where serde_json keeps the last, so a message with a
/// duplicate key anywhere could be something else to Hasura, and is refused; so is anything
/// that is not a JSON object.
fn is_init(message: &[u8]) -> Result<bool, End> {
    let m = crate::json::strict_object(message).map_err(End::BadMessage)?;
    Ok(m.get("type").and_then(serde_json::Value::as_str) == Some("connection_init"))
}

/// Consumes the client's bytes on a GraphQL socket and returns what may go upstream. Frames
/// are held until their message is complete. Before `connection_init`: control frames are
/// dropped (a close ends the socket), the first message must be `connection_init`; it is
/// authenticated (if the handshake was not) and rewritten. After it: every message must be
/// a JSON object, and another `connection_init` ends the socket (Hasura would re-read its
/// headers and take a new identity from them).
async fn client_bytes(
    app: &App,
    c: &mut ClientStream,
    authed: &mut Option<Authed>,
) -> Result<Vec<u8>, End> {
    let mut out = Vec::new();
    loop {
        let head = match frame::parse_head(&c.raw) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(out),
            Err(_) => return Err(End::BadInit),
        };
        // Clients must mask (RFC 6455 §5.1).
        let mask = head.mask.ok_or(End::BadInit)?;
        let cap = if c.initialised { MAX_MESSAGE } else { MAX_INIT };
        if head.len > cap as u64 || c.message.len() + head.len as usize > cap {
            return Err(End::TooLarge);
        }
        let total = usize::try_from(head.total()).map_err(|_| End::TooLarge)?;
        if c.raw.len() < total {
            return Ok(out);
        }
        let rest = c.raw.split_off(total);
        let frame_bytes = std::mem::replace(&mut c.raw, rest);
        if head.is_control() {
            if c.initialised {
                out.extend_from_slice(&frame_bytes);
            } else if head.opcode == frame::CLOSE {
                return Err(End::Closed);
            }
            continue;
        }
        let first = c.message_frames.is_empty();
        let valid = if first {
            matches!(head.opcode, frame::TEXT | frame::BINARY)
        } else {
            head.opcode == frame::CONTINUATION
        };
        if !valid {
            return Err(End::BadInit);
        }
        let mut payload = frame_bytes[head.header_len..].to_vec();
        frame::apply_mask(&mut payload, mask);
        c.message.extend_from_slice(&payload);
        c.message_frames.extend_from_slice(&frame_bytes);
        if !head.fin {
            continue;
        }
        let message = std::mem::take(&mut c.message);
        let frames = std::mem::take(&mut c.message_frames);
        if c.initialised {
            if is_init(&message)? {
                return Err(End::TooManyInits);
            }
            out.extend_from_slice(&frames);
            continue;
        }
        out.extend(first_init(app, &message, authed).await?);
        c.initialised = true;
    }
}

/// The first `connection_init`: authenticated if the handshake was not, rewritten, re-framed.
async fn first_init(
    app: &App,
    message: &[u8],
    authed: &mut Option<Authed>,
) -> Result<Vec<u8>, End> {
    let init = init::Init::parse(message).map_err(|e| match e {
        init::InitError::Json(e) => End::BadMessage(e),
        _ => End::BadInit,
    })?;
    if authed.is_none() {
        let token = init
            .authorization()
            .and_then(|a| crate::auth::bearer_token(a.as_bytes()))
            .map(str::to_string)
            .ok_or(End::Unauthorized)?;
        match app.sessions.authenticate(&token).await {
            Ok(session) => *authed = Some(Authed { session, token }),
            Err(GateError::StoreUnavailable) => return Err(End::StoreUnavailable),
            Err(e) => {
                if let Some(reason) = e.auth_failure_reason() {
                    app.metrics.auth_failures.with_label_values(&[reason]).inc();
                }
                return Err(if e.counts_as_failed_authentication() {
                    End::Refused
                } else {
                    End::Unauthorized
                });
            }
        }
    }
    let a = authed.as_ref().ok_or(End::Unauthorized)?;
    let set = init_identity(app, a).map_err(|e| match e {
        GateError::StoreUnavailable => End::StoreUnavailable,
        _ => End::Internal,
    })?;
    let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let text = init.rewrite(&set);
    Ok(frame::encode(frame::TEXT, &text, Some(rand::random())))
}
