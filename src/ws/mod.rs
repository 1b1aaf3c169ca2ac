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
//!
//! Files: `handshake.rs` (the upstream handshake), `graphql.rs` (the client's GraphQL
//! stream, a pure state machine), `frame.rs` and `init.rs` (wire formats); this file is the
//! relay itself. The upstream connection is `crate::upstream`'s, the identity
//! `hasura::identity_for`'s, as for every forwarded request.

pub mod bounds;
pub mod frame;
mod graphql;
mod handshake;
pub mod init;

use crate::error::GateError;
use crate::json::StrictError;
use crate::session::Authenticated;
use crate::upgrade::{self, Subprotocol};
use crate::App;
use bytes::Bytes;
use frame::Boundaries;
use graphql::{ClientStream, Event};
use pingora::http::ResponseHeader;
use pingora::prelude::Session as HttpSession;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How often a live socket's session is checked again.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Why a relayed socket ended (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client or the upstream closed it.
    Closed,
    /// The session was revoked or expired.
    Revoked,
    /// No credential in `connection_init`, or an expired one.
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
    /// A client message not completed within `websocket.message_timeout_ms`.
    MessageTimeout,
    /// Holding more of the client's message would take the process past
    /// `websocket.max_buffered_bytes`.
    OverBudget,
    /// The session already holds `websocket.max_per_session` sockets.
    SessionCap,
    /// The session store could not confirm the session.
    StoreUnavailable,
    /// The upstream's handshake answer could not be relayed.
    UpstreamFailed,
    /// The gateway failed (e.g. minting the Hasura JWT for `connection_init`).
    Internal,
}

impl End {
    /// How a socket ends when authenticating its `connection_init` (or building its identity)
    /// fails with `err`. Exhaustive: a new error picks its end.
    fn refused(err: &GateError) -> End {
        match err {
            GateError::MissingToken
            | GateError::InvalidToken(_)
            | GateError::SessionNotFound
            | GateError::SessionExpired
            | GateError::InvalidRefreshToken
            | GateError::RefreshTokenReused
            | GateError::AdminUnauthorized
            | GateError::Forbidden(_) => {
                if err.counts_as_failed_authentication() {
                    End::Refused
                } else {
                    End::Unauthorized
                }
            }
            GateError::StoreUnavailable | GateError::OutcomeUnknown(_) => End::StoreUnavailable,
            // None of these comes from checking a token; refused without a verdict on it.
            GateError::RateLimited(_)
            | GateError::TooManyConnections(_)
            | GateError::BadRequest(_)
            | GateError::InvalidField { .. }
            | GateError::PayloadTooLarge(_)
            | GateError::HeadersTooLarge(_)
            | GateError::TooManyHeaders(_)
            | GateError::NotFound
            | GateError::MethodNotAllowed
            | GateError::RequestTimeout => End::Unauthorized,
            GateError::UpstreamUnavailable | GateError::UpstreamTimeout | GateError::Internal => {
                End::Internal
            }
        }
    }

    /// Whether the socket's end counts against the client's address as a failed
    /// authentication. A refused credential counts like anywhere else. Unlike an HTTP request,
    /// a socket that never authenticated has held a connection and an upstream handshake, so
    /// a `connection_init` without a credential, or with an expired one, counts too, as do
    /// protocol violations before or after it: otherwise opening sockets and never
    /// authenticating would be free.
    pub fn counts_as_failed_authentication(self) -> bool {
        match self {
            End::Refused
            | End::Unauthorized
            | End::BadInit
            | End::InitTimeout
            | End::TooManyInits
            | End::BadMessage(_) => true,
            End::Closed
            | End::Revoked
            | End::TooLarge
            | End::MessageTimeout
            | End::OverBudget
            | End::SessionCap
            | End::StoreUnavailable
            | End::UpstreamFailed
            | End::Internal => false,
        }
    }

    /// Whether a socket that ended this way, `lived` after its `101`, without ever
    /// authenticating, counts as a failed authentication: every end the client chose or
    /// caused, but a prompt close (a page navigated away) and the gateway's own faults.
    pub fn counts_before_authentication(self, lived: Duration) -> bool {
        match self {
            End::Closed => lived >= Duration::from_secs(1),
            End::StoreUnavailable | End::UpstreamFailed | End::Internal => false,
            _ => true,
        }
    }

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
            End::MessageTimeout => "message_timeout",
            End::OverBudget => "over_budget",
            End::SessionCap => "session_cap",
            End::StoreUnavailable => "store_unavailable",
            End::UpstreamFailed => "upstream_failed",
            End::Internal => "internal",
        }
    }

    /// The close code and reason the client gets (graphql-transport-ws codes; the legacy
    /// protocol defines none and gets the same).
    fn close(self) -> Option<(u16, &'static str)> {
        match self {
            End::Closed => None,
            End::UpstreamFailed => Some((1014, "Bad Gateway: the upstream is unavailable")),
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
            End::MessageTimeout => Some((1008, "message not completed in time")),
            End::OverBudget => Some((1013, "Try Again Later: the gateway holds too much")),
            End::SessionCap => Some((1008, "too many sockets for this session")),
            End::StoreUnavailable => Some((4500, "the session store is unavailable")),
            End::Internal => Some((1011, "internal error")),
        }
    }
}

/// The authenticated side of a socket.
#[derive(Debug)]
pub struct Authed {
    /// The session.
    pub session: Arc<Authenticated>,
    /// The token that authenticated it (re-checked while the socket lives).
    pub token: crate::secret::Secret,
}

/// What the proxy decided about a WebSocket it hands to [`relay`].
#[derive(Debug)]
pub struct Handshake {
    /// The forwarded path and query.
    pub uri: http::Uri,
    /// The session, when the handshake carried a valid credential; `None`: a GraphQL
    /// socket that authenticates in `connection_init`.
    pub authed: Option<Authed>,
    /// GraphQL over WebSocket (every protected path but Amity's realtime paths): one
    /// `connection_init` first, rewritten; no second one; every message must be JSON.
    pub graphql: bool,
}

/// The client's side of a relayed socket on the gateway: its GraphQL stream (one buffer),
/// that buffer's share of the process-wide budget, and since when a message is unfinished.
struct Client<'a> {
    stream: ClientStream,
    share: bounds::Share<'a>,
    /// While unauthenticated, the same bytes from the pending sockets' smaller budget, so
    /// that sockets nobody vouched for cannot take what authenticated ones need.
    pending: Option<bounds::Share<'a>>,
    since: Option<Instant>,
    /// `stream.completed()` when `since` was last set: a completed message restarts it.
    completed: u64,
}

impl<'a> Client<'a> {
    fn new(app: &'a App) -> Self {
        Client {
            stream: ClientStream::default(),
            share: app.ws_budget.share(),
            pending: Some(app.ws_pending_budget.share()),
            since: None,
            completed: 0,
        }
    }

    /// The socket authenticated: it leaves the pending budget.
    fn authenticated(&mut self) {
        self.pending = None;
    }

    /// Takes what the stream holds now into account: over a budget the socket ends; an
    /// unfinished message starts (or keeps) its clock, which restarts whenever one completes.
    fn account(&mut self) -> Result<(), End> {
        let held = self.stream.held();
        if let Some(p) = self.pending.as_mut() {
            if !p.set(held) {
                return Err(End::OverBudget);
            }
        }
        if !self.share.set(held) {
            return Err(End::OverBudget);
        }
        if self.stream.completed() != self.completed {
            self.completed = self.stream.completed();
            self.since = None;
        }
        self.since = (held > 0).then(|| self.since.unwrap_or_else(Instant::now));
        Ok(())
    }

    /// Whether an unfinished message has run past `websocket.message_timeout_ms`.
    fn overdue(&self, app: &App) -> bool {
        self.since
            .is_some_and(|t| t.elapsed() >= app.config.websocket.message_timeout)
    }
}

/// Relays one WebSocket and returns how it ended. `Err` is a refusal before anything was
/// written to the client (the upstream cannot be reached, refuses the upgrade, the identity
/// cannot be built, the handshake is malformed, or the session holds its most sockets): the
/// caller answers it like any refused request.
///
/// A GraphQL socket whose handshake carried no credential is answered `101` by the gateway
/// itself; its upstream connection, with the session's identity in the handshake, is made
/// only once `connection_init` authenticated. Until then it holds no upstream descriptor:
/// its own state is under 1 KiB plus its client buffer (within a quarter of
/// `websocket.max_buffered_bytes` for all such sockets); the connection and Pingora's
/// in-flight request around it are counted by the connection caps like any connection.
pub async fn relay(
    app: &App,
    down: &mut HttpSession,
    hs: Handshake,
    client_ip: IpAddr,
    request_id: &str,
) -> Result<End, GateError> {
    let Handshake {
        uri,
        authed,
        graphql,
    } = hs;
    let mut client = Client::new(app);
    if authed.is_some() {
        client.authenticated();
    }
    let mut to_client = Boundaries::default();
    let mut unauthenticated = false;
    let (end, protocol) = match authed {
        Some(authed) => {
            let Some(slot) = app.ws_sessions.acquire(&authed.session.session_id) else {
                return Err(GateError::RateLimited(1));
            };
            let request = handshake::request(
                app,
                down.req_header(),
                &uri,
                Some(&authed),
                request_id,
                None,
            )?;
            let (mut up, answer) = Box::pin(connect_upstream(app, &request)).await?;
            let Some(protocol) = relay_101(app, down, answer.headers, request_id).await? else {
                return Ok(End::Closed);
            };
            app.metrics.websockets_open.inc();
            let mut authed = Some(authed);
            let end = Box::pin(pump(
                app,
                down,
                &mut up,
                &mut authed,
                graphql,
                &mut client,
                &mut to_client,
                answer.early,
            ))
            .await;
            let _ = up.shutdown().await;
            drop(slot);
            (end, protocol)
        }
        None if graphql => {
            let protocol =
                upgrade::preferred_graphql(down.req_header()).ok_or(GateError::MissingToken)?;
            let accept = upgrade::accept_key(down.req_header())
                .ok_or_else(|| GateError::BadRequest("not a valid WebSocket handshake".into()))?;
            let mut resp = ResponseHeader::build(101, Some(5)).map_err(|_| GateError::Internal)?;
            for (name, value) in [
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-accept", accept.as_str()),
                ("sec-websocket-protocol", protocol.name()),
                ("x-request-id", request_id),
            ] {
                resp.insert_header(name, value)
                    .map_err(|_| GateError::Internal)?;
            }
            if down
                .write_response_header(Box::new(resp), false)
                .await
                .is_err()
            {
                return Ok(End::Closed);
            }
            down.set_read_timeout(None);
            app.metrics.websockets_open.inc();
            let opened = Instant::now();
            let end = Box::pin(pending(
                app,
                down,
                &uri,
                protocol,
                request_id,
                &mut client,
                &mut to_client,
            ))
            .await;
            if client.pending.is_some() && end.counts_before_authentication(opened.elapsed()) {
                // Never authenticated: holding a socket without a credential is not free.
                unauthenticated = true;
            }
            (end, Some(protocol))
        }
        None => return Err(GateError::MissingToken),
    };
    drop(client);
    finish(app, down, &mut to_client, protocol, end).await;
    if end.counts_as_failed_authentication() || unauthenticated {
        app.limits.auth_failed(client_ip).await;
    }
    app.metrics.websockets_open.dec();
    let _ = down.write_response_body(None, true).await;
    Ok(end)
}

/// Connects to the upstream and sends the handshake; its answer must be `101`.
async fn connect_upstream(
    app: &App,
    request: &[u8],
) -> Result<(pingora::protocols::Stream, handshake::Response), GateError> {
    let mut up = app.upstream.connect().await?;
    up.write_all(request)
        .await
        .map_err(|_| GateError::UpstreamUnavailable)?;
    let answer = tokio::time::timeout(app.upstream.read_timeout(), handshake::response(&mut up))
        .await
        .map_err(|_| GateError::UpstreamTimeout)??;
    if answer.status != 101 {
        tracing::info!(
            status = answer.status,
            "upstream refused the WebSocket upgrade"
        );
        return Err(GateError::UpstreamUnavailable);
    }
    // None was offered: an extension (compressed frames) would make connection_init and the
    // frame boundaries unreadable to the relay.
    if answer
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-extensions"))
    {
        tracing::info!("upstream answered the WebSocket upgrade with an extension not offered");
        return Err(GateError::UpstreamUnavailable);
    }
    Ok((up, answer))
}

/// Answers the client with the upstream's `101`. `Ok(None)`: the client is gone; else the
/// GraphQL subprotocol the upstream chose, if any.
async fn relay_101(
    app: &App,
    down: &mut HttpSession,
    headers: Vec<(String, Vec<u8>)>,
    request_id: &str,
) -> Result<Option<Option<Subprotocol>>, GateError> {
    let mut resp =
        ResponseHeader::build(101, Some(headers.len() + 1)).map_err(|_| GateError::Internal)?;
    let mut protocol = None;
    for (name, value) in headers {
        // While CORS is on the gateway owns these headers (see `crate::cors`).
        if app.cors.is_some() && crate::cors::is_cors_header(&name) {
            continue;
        }
        if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protocol = std::str::from_utf8(&value)
                .ok()
                .and_then(Subprotocol::from_name);
        }
        resp.append_header(name, value.as_slice())
            .map_err(|_| GateError::UpstreamUnavailable)?;
    }
    resp.insert_header("x-request-id", request_id)
        .map_err(|_| GateError::Internal)?;
    if down
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
    {
        return Ok(None);
    }
    // The socket lives as long as its session; idleness is the upstream's business.
    down.set_read_timeout(None);
    Ok(Some(protocol))
}

/// A GraphQL socket the gateway answered itself: reads the client until `connection_init`
/// authenticates (nothing upstream yet), then connects upstream with the session's identity
/// in the handshake, sends the rewritten `connection_init` and whatever followed it, and
/// relays like any socket.
async fn pending(
    app: &App,
    down: &mut HttpSession,
    uri: &http::Uri,
    protocol: Subprotocol,
    request_id: &str,
    client: &mut Client<'_>,
    to_client: &mut Boundaries,
) -> End {
    let init_deadline = Instant::now() + app.config.proxy.websocket_init_timeout;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut authed = None;
    let first = loop {
        tokio::select! {
            r = down.read_request_body() => {
                let Ok(Some(bytes)) = r else { return End::Closed };
                client.stream.push(&bytes);
                let out = match client_bytes(app, &mut client.stream, &mut authed).await {
                    Ok(out) => out,
                    Err(end) => return end,
                };
                if let Err(end) = client.account() {
                    return end;
                }
                if authed.is_some() {
                    client.authenticated();
                    break out;
                }
            }
            _ = tick.tick() => {
                if Instant::now() >= init_deadline {
                    return End::InitTimeout;
                }
                if client.overdue(app) {
                    return End::MessageTimeout;
                }
            }
        }
    };
    let Some(a) = authed.as_ref() else {
        return End::Unauthorized;
    };
    let Some(slot) = app.ws_sessions.acquire(&a.session.session_id) else {
        return End::SessionCap;
    };
    let request = match handshake::request(
        app,
        down.req_header(),
        uri,
        Some(a),
        request_id,
        Some(protocol.name()),
    ) {
        Ok(r) => r,
        Err(e) => return End::refused(&e),
    };
    // Boxed here and below: what follows authentication is not part of what a pending
    // socket holds while it waits.
    let (mut up, answer) = match Box::pin(connect_upstream(app, &request)).await {
        Ok(c) => c,
        Err(_) => return End::UpstreamFailed,
    };
    // The client was told which subprotocol it speaks; an upstream that picks another would
    // read its frames differently.
    let chosen = answer
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .and_then(Subprotocol::from_name);
    if chosen != Some(protocol) {
        tracing::info!("upstream chose another WebSocket subprotocol than the client's");
        let _ = up.shutdown().await;
        return End::UpstreamFailed;
    }
    let end = if up.write_all(&first).await.is_err() {
        End::UpstreamFailed
    } else {
        Box::pin(pump(
            app,
            down,
            &mut up,
            &mut authed,
            true,
            client,
            to_client,
            answer.early,
        ))
        .await
    };
    let _ = up.shutdown().await;
    drop(slot);
    end
}

/// Moves bytes both ways until one side closes or the session ends.
#[allow(clippy::too_many_arguments)]
async fn pump<U: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    app: &App,
    down: &mut HttpSession,
    up: &mut U,
    authed: &mut Option<Authed>,
    graphql: bool,
    client: &mut Client<'_>,
    to_client: &mut Boundaries,
    early: Vec<u8>,
) -> End {
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
    let init_deadline = Instant::now() + app.config.proxy.websocket_init_timeout;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = down.read_request_body() => {
                let Ok(Some(bytes)) = r else { return End::Closed };
                let out = if graphql {
                    client.stream.push(&bytes);
                    let out = match client_bytes(app, &mut client.stream, authed).await {
                        Ok(out) => out,
                        Err(end) => return end,
                    };
                    if let Err(end) = client.account() {
                        return end;
                    }
                    out
                } else {
                    bytes.to_vec()
                };
                if !out.is_empty() && up.write_all(&out).await.is_err() {
                    return End::Closed;
                }
            }
            r = up.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(n) => n,
                };
                to_client.feed(&buf[..n]);
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                if down.write_response_body(Some(chunk), false).await.is_err() {
                    return End::Closed;
                }
            }
            _ = tick.tick() => {
                if client.overdue(app) {
                    return End::MessageTimeout;
                }
                let waiting = graphql && !client.stream.initialised();
                if let Some(end) = still_valid(app, authed.as_ref(), waiting, init_deadline).await {
                    return end;
                }
            }
        }
    }
}

/// Tells the client why its socket ends (a close frame, when the end has one and the stream
/// to the client is between frames) and counts the end.
async fn finish(
    app: &App,
    down: &mut HttpSession,
    to_client: &mut Boundaries,
    protocol: Option<Subprotocol>,
    end: End,
) {
    if let Some((code, reason)) = end.close() {
        if protocol == Some(Subprotocol::LegacyWs)
            && matches!(end, End::Unauthorized | End::Refused)
        {
            // The legacy protocol reports a refused connection_init as a message first.
            let msg =
                serde_json::json!({"type": "connection_error", "payload": {"message": reason}});
            let _ = write_frame(
                down,
                to_client,
                frame::encode(frame::TEXT, msg.to_string().as_bytes(), None),
            )
            .await;
        }
        let _ = write_frame(down, to_client, frame::close(code, reason, None)).await;
    }
    app.metrics
        .websocket_closes
        .with_label_values(&[end.label()])
        .inc();
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
    match app.sessions.authenticate(a.token.expose()).await {
        Ok(_) => None,
        Err(GateError::StoreUnavailable) => Some(End::StoreUnavailable),
        Err(_) => Some(End::Revoked),
    }
}

/// What may go upstream of the client's bytes so far (see `graphql.rs`); the first
/// `connection_init` is authenticated (if the handshake was not) and rewritten here.
async fn client_bytes(
    app: &App,
    client: &mut ClientStream,
    authed: &mut Option<Authed>,
) -> Result<Vec<u8>, End> {
    let mut out = Vec::new();
    while let Some(event) = client.next_event()? {
        match event {
            Event::Forward(frames) => out.extend_from_slice(&frames),
            Event::Init(message) => out.extend(first_init(app, &message, authed).await?),
        }
    }
    Ok(out)
}

/// The first `connection_init`: authenticated if the handshake was not, rewritten with the
/// session's identity (the same `hasura::identity_for` as the handshake), re-framed.
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
        // Boxed: the lookup's state is not kept in every pending socket's future.
        match Box::pin(app.sessions.authenticate(&token)).await {
            Ok(session) => {
                *authed = Some(Authed {
                    session,
                    token: crate::secret::Secret::new(token),
                })
            }
            Err(e) => {
                if let Some(reason) = e.auth_failure_reason() {
                    app.metrics.auth_failures.with_label_values(&[reason]).inc();
                }
                return Err(End::refused(&e));
            }
        }
    }
    let a = authed.as_ref().ok_or(End::Unauthorized)?;
    let identity = app
        .hasura
        .identity_for(&a.session, a.token.expose())
        .map_err(|e| End::refused(&e))?;
    let bearer = identity
        .authorization
        .token()
        .map(|t| format!("Bearer {t}"));
    let set: Vec<(&str, &str)> = identity
        .headers()
        .chain(bearer.as_deref().map(|b| ("Authorization", b)))
        .collect();
    let text = init.rewrite(&set);
    Ok(frame::encode(frame::TEXT, &text, Some(rand::random())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way a socket can end is a series `metrics` creates at start.
    #[test]
    fn every_close_reason_is_a_precreated_series() {
        let ends = [
            End::Closed,
            End::Revoked,
            End::Unauthorized,
            End::Refused,
            End::BadInit,
            End::BadMessage(crate::json::StrictError::Syntax),
            End::InitTimeout,
            End::TooManyInits,
            End::TooLarge,
            End::MessageTimeout,
            End::OverBudget,
            End::SessionCap,
            End::StoreUnavailable,
            End::UpstreamFailed,
            End::Internal,
        ];
        for end in ends {
            // No `_ =>`: a new variant does not compile until it is listed above.
            match end {
                End::Closed
                | End::Revoked
                | End::Unauthorized
                | End::Refused
                | End::BadInit
                | End::BadMessage(_)
                | End::InitTimeout
                | End::TooManyInits
                | End::TooLarge
                | End::MessageTimeout
                | End::OverBudget
                | End::SessionCap
                | End::StoreUnavailable
                | End::UpstreamFailed
                | End::Internal => {}
            }
            assert!(
                crate::metrics::WEBSOCKET_CLOSES.contains(&end.label()),
                "{end:?}"
            );
        }
    }
}
