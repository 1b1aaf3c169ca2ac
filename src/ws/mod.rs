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
use crate::header_names::REQUEST_ID;
use crate::json::StrictError;
use crate::session::Authenticated;
use crate::upgrade::{self, Subprotocol};
use crate::App;
use frame::Boundaries;
use graphql::{ClientStream, Event};
use pingora::http::RequestHeader;
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

/// A WebSocket handshake the gateway accepted. Its `101` is not written by the request:
/// once Pingora is done with the request, the listener takes the connection over and
/// [`Socket::run`](crate::conn::Takeover::run) writes it and serves the socket. So a socket
/// lives in the listener's small future, inside its connection slot, not in Pingora's
/// request future (tens of KiB), and a pending one costs its connection, a few hundred
/// bytes of state and its client buffer.
pub struct Socket {
    app: Arc<App>,
    /// The `101` head for the client.
    switching: Vec<u8>,
    client_ip: IpAddr,
    /// The request's span: what the socket logs carries its request id.
    span: tracing::Span,
    side: Side,
}

/// The two kinds of socket.
enum Side {
    /// The handshake carried a valid credential: the upstream already answered `101`.
    Relayed {
        up: pingora::protocols::Stream,
        /// Bytes the upstream sent after its `101`.
        early: Vec<u8>,
        authed: Authed,
        slot: bounds::Slot,
        graphql: bool,
        protocol: Option<Subprotocol>,
    },
    /// A GraphQL socket that authenticates in `connection_init`; nothing upstream yet.
    Pending {
        /// The client's handshake (as a plain map), for the upstream's once it authenticated.
        request: Box<RequestHeader>,
        uri: http::Uri,
        protocol: Subprotocol,
        request_id: String,
    },
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = match self.side {
            Side::Relayed { .. } => "relayed",
            Side::Pending { .. } => "pending",
        };
        f.debug_struct("Socket").field("side", &side).finish()
    }
}

/// Accepts a WebSocket handshake on a protected route. `Err` is a refusal before anything
/// was written to the client (the upstream cannot be reached or refuses the upgrade, the
/// identity cannot be built, the handshake is malformed, or the session holds its most
/// sockets): the caller answers it like any refused request.
///
/// With a credential, the upstream handshake (with the session's identity) is made here and
/// its `101` relayed. A GraphQL socket whose handshake carried none is answered `101` by
/// the gateway itself; its upstream connection is made only once `connection_init`
/// authenticated.
pub async fn accept(
    app: &Arc<App>,
    down: &mut HttpSession,
    hs: Handshake,
    client_ip: IpAddr,
    request_id: &str,
    span: tracing::Span,
) -> Result<Socket, GateError> {
    // Pingora's HTTP/2 server has no extended CONNECT (RFC 8441), and only an HTTP/1.1
    // connection can be handed over.
    if down.is_http2() {
        return Err(GateError::BadRequest(
            "a WebSocket needs an HTTP/1.1 connection".into(),
        ));
    }
    // After the `101` every client byte is WebSocket data: a body on the handshake would be
    // read as such by one reader and as a body by another.
    if crate::guard::declares_body(down.req_header()) {
        return Err(GateError::BadRequest(
            "a WebSocket handshake has no body".into(),
        ));
    }
    // The socket is served once Pingora hands the connection back, which it does only if it
    // may keep it alive (and only if it read nothing past the handshake: a client that sent
    // frames with it, before its `101`, which RFC 6455 §4.1 forbids, is closed unanswered).
    // A server about to stop does not refuse a socket it just accepted; a client whose
    // `Connection` says `close` is refused here, before anything is asked of the upstream.
    down.set_keepalive(Some(0));
    if down.get_keepalive().is_none() {
        return Err(GateError::BadRequest(
            "a WebSocket handshake cannot ask to close its connection".into(),
        ));
    }
    let Handshake {
        uri,
        authed,
        graphql,
    } = hs;
    let (switching, side) = match authed {
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
            let (up, answer) = Box::pin(connect_upstream(app, &request)).await?;
            let mut protocol = None;
            let mut fields = Vec::with_capacity(answer.headers.len());
            for (name, value) in &answer.headers {
                // While CORS is on the gateway owns these headers (see `crate::cors`); the
                // request id is the gateway's.
                if (app.cors.is_some() && crate::cors::is_cors_header(name))
                    || name.eq_ignore_ascii_case(REQUEST_ID)
                {
                    continue;
                }
                if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                    protocol = std::str::from_utf8(value)
                        .ok()
                        .and_then(Subprotocol::from_name);
                }
                fields.push((name.as_bytes(), value.as_slice()));
            }
            let switching =
                switching_protocols(&fields, request_id).ok_or(GateError::UpstreamUnavailable)?;
            let side = Side::Relayed {
                up,
                early: answer.early,
                authed,
                slot,
                graphql,
                protocol,
            };
            (switching, side)
        }
        None if graphql => {
            let req = down.req_header();
            let protocol = upgrade::preferred_graphql(req).ok_or(GateError::MissingToken)?;
            let accept = upgrade::accept_key(req)
                .ok_or_else(|| GateError::BadRequest("not a valid WebSocket handshake".into()))?;
            let fields: [(&[u8], &[u8]); 4] = [
                (b"upgrade", b"websocket"),
                (b"connection", b"Upgrade"),
                (b"sec-websocket-accept", accept.as_bytes()),
                (b"sec-websocket-protocol", protocol.name().as_bytes()),
            ];
            let switching = switching_protocols(&fields, request_id).ok_or(GateError::Internal)?;
            // Without Pingora's second map of the names' spellings: the upstream's
            // handshake is written from the plain map anyway (`handshake::request`).
            let parts: &http::request::Parts = req;
            let side = Side::Pending {
                request: Box::new(RequestHeader::from(parts.clone())),
                uri,
                protocol,
                request_id: request_id.to_string(),
            };
            (switching, side)
        }
        None => return Err(GateError::MissingToken),
    };
    Ok(Socket {
        app: app.clone(),
        switching,
        client_ip,
        span,
        side,
    })
}

/// The `101` head for the client: `fields`, each a valid header name and value (else
/// `None`: nothing the upstream sent may split the response), then the request id.
fn switching_protocols(fields: &[(&[u8], &[u8])], request_id: &str) -> Option<Vec<u8>> {
    let mut out = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
    let id: (&[u8], &[u8]) = (REQUEST_ID.as_bytes(), request_id.as_bytes());
    for &(name, value) in fields.iter().chain(std::iter::once(&id)) {
        http::HeaderName::from_bytes(name).ok()?;
        http::HeaderValue::from_bytes(value).ok()?;
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Some(out)
}

impl crate::conn::Takeover for Socket {
    fn run(
        self: Box<Self>,
        down: pingora::protocols::Stream,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let span = self.span.clone();
        Box::pin(tracing::Instrument::instrument(self.serve(down), span))
    }
}

impl Socket {
    /// Writes the `101` and serves the socket to its end.
    async fn serve(self: Box<Self>, mut down: pingora::protocols::Stream) {
        let Socket {
            app,
            switching,
            client_ip,
            side,
            ..
        } = *self;
        if !send(&mut down, &switching).await {
            return;
        }
        drop(switching);
        let app = &*app;
        let _open = crate::metrics::Held::new(&app.metrics.websockets_open);
        let mut client = Client::new(app);
        let mut to_client = Boundaries::default();
        let mut unauthenticated = false;
        let (end, protocol) = match side {
            Side::Relayed {
                mut up,
                early,
                authed,
                slot,
                graphql,
                protocol,
            } => {
                client.authenticated();
                let mut authed = Some(authed);
                // Boxed: a pending socket's future does not hold a relay's state.
                let end = Box::pin(pump(
                    app,
                    &mut down,
                    &mut up,
                    &mut authed,
                    graphql,
                    &mut client,
                    &mut to_client,
                    early,
                ))
                .await;
                let _ = up.shutdown().await;
                drop(slot);
                (end, protocol)
            }
            Side::Pending {
                request,
                uri,
                protocol,
                request_id,
            } => {
                let opened = Instant::now();
                let end = pending(
                    app,
                    &mut down,
                    (&request, &uri, &request_id),
                    protocol,
                    &mut client,
                    &mut to_client,
                )
                .await;
                if client.pending.is_some() && end.counts_before_authentication(opened.elapsed()) {
                    // Never authenticated: holding a socket without a credential is not free.
                    unauthenticated = true;
                }
                (end, Some(protocol))
            }
        };
        drop(client);
        finish(app, &mut down, &mut to_client, protocol, end).await;
        if end.counts_as_failed_authentication() || unauthenticated {
            app.limits.auth_failed(client_ip).await;
        }
        pingora::protocols::Shutdown::shutdown(&mut *down).await;
        match end {
            End::Closed => tracing::debug!(end = end.label(), "websocket ended"),
            _ => tracing::info!(end = end.label(), "websocket ended"),
        }
    }
}

/// Writes `bytes` to the client and flushes them (the stream below buffers small writes);
/// `false` when the client is gone or took nothing for `connections.write_timeout_ms`.
async fn send<D: AsyncWrite + Unpin + ?Sized>(down: &mut D, bytes: &[u8]) -> bool {
    down.write_all(bytes).await.is_ok() && down.flush().await.is_ok()
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

/// A GraphQL socket the gateway answered itself: reads the client until `connection_init`
/// authenticates (nothing upstream yet), then connects upstream with the session's identity
/// in the handshake, sends the rewritten `connection_init` and whatever followed it, and
/// relays like any socket.
async fn pending<D: AsyncRead + AsyncWrite + Unpin + Send + ?Sized>(
    app: &App,
    down: &mut D,
    (request, uri, request_id): (&RequestHeader, &http::Uri, &str),
    protocol: Subprotocol,
    client: &mut Client<'_>,
    to_client: &mut Boundaries,
) -> End {
    let init_deadline = Instant::now() + app.config.proxy.websocket_init_timeout;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut authed = None;
    let first = loop {
        tokio::select! {
            r = client.stream.read_from(down) => {
                if !matches!(r, Ok(n) if n > 0) {
                    return End::Closed;
                }
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
        request,
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
async fn pump<D, U>(
    app: &App,
    down: &mut D,
    up: &mut U,
    authed: &mut Option<Authed>,
    graphql: bool,
    client: &mut Client<'_>,
    to_client: &mut Boundaries,
    early: Vec<u8>,
) -> End
where
    D: AsyncRead + AsyncWrite + Unpin + Send + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    if !early.is_empty() {
        to_client.feed(&early);
        if !send(down, &early).await {
            return End::Closed;
        }
    }
    let init_deadline = Instant::now() + app.config.proxy.websocket_init_timeout;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; RELAY_READ];
    // GraphQL client bytes are read straight into the client's buffer; raw ones (Amity's
    // realtime paths) through this one.
    let mut raw = match graphql {
        true => Vec::new(),
        false => vec![0u8; RELAY_READ],
    };
    loop {
        tokio::select! {
            r = read_client(down, graphql, &mut client.stream, &mut raw) => {
                let n = match r {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(n) => n,
                };
                let out = if graphql {
                    let out = match client_bytes(app, &mut client.stream, authed).await {
                        Ok(out) => out,
                        Err(end) => return end,
                    };
                    if let Err(end) = client.account() {
                        return end;
                    }
                    out
                } else {
                    raw[..n].to_vec()
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
                if !send(down, &buf[..n]).await {
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
async fn finish<D: AsyncWrite + Unpin + Send + ?Sized>(
    app: &App,
    down: &mut D,
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
async fn write_frame<D: AsyncWrite + Unpin + ?Sized>(
    down: &mut D,
    at: &mut Boundaries,
    f: Vec<u8>,
) -> bool {
    if !at.at_boundary() {
        return false;
    }
    at.feed(&f);
    send(down, &f).await
}

/// What one read from either side of a relayed socket takes at most.
const RELAY_READ: usize = 16 * 1024;

/// Reads client bytes: into its GraphQL stream's buffer, or into `raw`.
async fn read_client<D: AsyncRead + Unpin + ?Sized>(
    down: &mut D,
    graphql: bool,
    stream: &mut ClientStream,
    raw: &mut [u8],
) -> std::io::Result<usize> {
    match graphql {
        true => stream.read_from(down).await,
        false => down.read(raw).await,
    }
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

    /// The `101` head the gateway writes: the fields given, the request id last; a name or
    /// value that could split the response refuses the whole head.
    #[test]
    fn switching_protocols_heads_are_whole_or_refused() {
        let fields: [(&[u8], &[u8]); 2] = [(b"upgrade", b"websocket"), (b"x-a", b"1")];
        let head = switching_protocols(&fields, "rid-1").unwrap_or_default();
        assert_eq!(
            head,
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nx-a: 1\r\nx-request-id: rid-1\r\n\r\n"
        );
        for bad in [
            (&b"x-a"[..], &b"1\r\nset-cookie: a=b"[..]),
            (b"x-a", b"1\n"),
            (b"x a", b"1"),
            (b"x-a:", b"1"),
            (b"", b"1"),
        ] {
            assert_eq!(switching_protocols(&[bad], "rid-1"), None, "{bad:?}");
        }
        assert_eq!(switching_protocols(&[], "rid\r\n"), None);
    }

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
