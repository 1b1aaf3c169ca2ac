//! The request flow, top to bottom: request id → shape checks (`guard`) → route
//! (`route::classify`) → credential → session lookup (`session`) → identity
//! (`hasura::identity_for`, written by `headers::rewrite`) → upstream. Session APIs go to
//! `endpoint`, WebSockets on protected routes to `ws`, refusals to `respond`. Each hook
//! only delegates; the steps live in their modules and are tested there without a socket.

mod outcome;

use crate::cors::{self, Verdict};
use crate::dialect;
use crate::endpoint::{self, Endpoint};
use crate::error::GateError;
use crate::guard;
use crate::headers;
use crate::respond;
use crate::route::{self, Route};
use crate::secret::Secret;
use crate::session::Authenticated;
use crate::upgrade;
use crate::ws;
use crate::App;
use async_trait::async_trait;
use bytes::Bytes;
use outcome::Outcome;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session as HttpSession};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// What a filter decided, converted to Pingora's `bool` in exactly one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Go on to the upstream.
    Continue,
    /// A response was written; stop.
    Responded,
}

impl Flow {
    fn into_pingora(self) -> bool {
        self == Flow::Responded
    }
}

/// Per-request state shared by the hooks.
#[derive(Debug)]
pub struct RequestCtx {
    started: Instant,
    /// The authenticated session (protected routes).
    session: Option<Arc<Authenticated>>,
    /// The token that authenticated it (forwarded where the Hasura mode says so).
    token: Secret,
    /// Normalised path + original query: what goes upstream.
    forward_uri: Option<http::Uri>,
    /// The client's address (socket peer, or `X-Forwarded-For` from a trusted proxy).
    client_ip: IpAddr,
    /// Whether the socket's peer is a trusted proxy.
    via_trusted_proxy: bool,
    /// The socket's peer.
    peer: IpAddr,
    /// `x-request-id`: the client's if well-formed, else generated; sent upstream and back.
    request_id: String,
    /// Carries the request id into every log line of this request; built by
    /// [`RequestCtx::span`] the first time the request may log (see there).
    span: tracing::Span,
    /// CORS headers for every response to this request (empty while CORS is off).
    cors: cors::Headers,
    /// The dialect whose error format refusals use on this path (`None`: the gateway's).
    errors: Option<dialect::Dialect>,
    /// Largest body this route accepts, bytes received so far, and when it must be done.
    body_limit: u64,
    body_seen: u64,
    body_due: Option<Instant>,
    outcome: Outcome,
    /// An h2 stream's place under `connections.max_streams_per_ip`, freed with the context
    /// when the request ends.
    stream_slot: Option<crate::conn::Slot>,
    /// An accepted WebSocket, handed to the listener with the connection once Pingora is
    /// done with the request (`persist_connection_context`, which only sees `&self`).
    takeover: std::sync::Mutex<Option<crate::conn::Handover>>,
}

impl RequestCtx {
    /// The request's span, built on first use. A forwarded request logs nothing at `info`
    /// or above, and building a span (a registry slot, the id formatted into it, enter and
    /// exit on every poll) cost about 3 % of such a request's CPU: so the span is built up
    /// front only when `debug` is on, and otherwise where a line may follow (refusals,
    /// session APIs, WebSockets, upstream failures). Every line about a request still
    /// carries its id.
    fn span(&mut self) -> tracing::Span {
        if self.span.is_none() {
            self.span = tracing::info_span!("request", request_id = %self.request_id);
        }
        self.span.clone()
    }
}

/// What `admit` decided for a request that was not refused.
enum Admitted {
    /// A CORS preflight from an allowed origin, answered by the gateway (no credential is
    /// ever sent on one).
    Preflight,
    /// Goes upstream through Pingora (`ctx` says where and as whom).
    Forward,
    /// A session API the gateway answers itself.
    Endpoint(Endpoint),
    /// A WebSocket on a protected route, relayed by `ws`.
    WebSocket(ws::Handshake),
}

/// The proxy service: Pingora's hooks over the shared application state.
pub struct Proxy {
    app: Arc<App>,
    /// `sessiongate_requests_total` and `_request_duration_seconds` of each outcome,
    /// resolved once ([`Outcome::index`] order): no label hashing per request.
    by_outcome: Vec<(prometheus::IntCounter, prometheus::Histogram)>,
}

impl Proxy {
    /// A proxy over the shared application state.
    pub fn new(app: Arc<App>) -> Self {
        let m = &app.metrics;
        let by_outcome = Outcome::ALL
            .iter()
            .map(|o| {
                (
                    m.requests.with_label_values(&[o.label()]),
                    m.request_duration.with_label_values(&[o.label()]),
                )
            })
            .collect();
        Proxy { app, by_outcome }
    }

    /// The request flow up to the upstream: shape checks → route → credential → session.
    async fn admit(
        &self,
        session: &HttpSession,
        ctx: &mut RequestCtx,
    ) -> Result<Admitted, GateError> {
        let req = session.req_header();
        let config = &self.app.config;
        (ctx.peer, ctx.client_ip, ctx.via_trusted_proxy) = self.client_ip(session);
        // First, so that every answer to a browser, refusals included, carries its headers.
        let preflight = match self.app.cors.as_ref().map(|c| c.verdict(req)) {
            None | Some(Verdict::None) => None,
            Some(Verdict::Request(headers)) => {
                ctx.cors = headers;
                None
            }
            Some(Verdict::Preflight { allowed, headers }) => {
                ctx.cors = headers;
                Some(allowed)
            }
        };
        // Every h2 stream may hold an upstream connection: streams are counted per address
        // and in total like connections, so many streams on few connections do not escape
        // the caps (an HTTP/1.1 request is already inside its connection's slot).
        if session.is_http2() {
            // Behind a trusted proxy, per end client (its `X-Forwarded-For` address), so one
            // client cannot take every stream the proxy's connections carry.
            let key = if ctx.via_trusted_proxy {
                ctx.client_ip
            } else {
                ctx.peer
            };
            match self.app.streams.admit(key) {
                Ok(slot) => ctx.stream_slot = Some(slot),
                Err(why) => {
                    let cap = match why {
                        crate::conn::Refused::Total => "max_streams",
                        crate::conn::Refused::PerIp => "max_streams_per_ip",
                    };
                    self.app
                        .metrics
                        .connections_refused
                        .with_label_values(&[cap])
                        .inc();
                    return Err(GateError::TooManyConnections(1));
                }
            }
        }
        guard::check(req, &config.proxy, || {
            session.as_http1().map(|h1| h1.get_headers_raw_bytes())
        })?;
        let route = route::classify(req, config)?;
        // Forward-auth and the Hasura webhook are called by infrastructure, never by a
        // browser: an OPTIONS there is the original request's method, and must meet their
        // own checks (identity headers refused) rather than a preflight's 204.
        let infrastructure = matches!(
            route,
            Route::Endpoint(Endpoint::AuthVerify | Endpoint::HasuraWebhook)
        );
        match preflight.filter(|_| !infrastructure) {
            Some(true) => return Ok(Admitted::Preflight),
            Some(false) => {
                return Err(GateError::Forbidden(
                    "CORS: the origin is not allowed".into(),
                ))
            }
            None => {}
        }
        let (forward, realtime, websocket) = match route {
            Route::Endpoint(ep) => return Ok(Admitted::Endpoint(ep)),
            Route::Public(forward) => {
                ctx.errors = forward.errors;
                guard::declared_body(req, forward.body_limit)?;
                ctx.body_limit = forward.body_limit;
                ctx.forward_uri = Some(forward.uri);
                return Ok(Admitted::Forward);
            }
            Route::Protected { forward, realtime } => (forward, realtime, false),
            Route::WebSocket { forward, realtime } => (forward, realtime, true),
        };
        ctx.errors = forward.errors;
        guard::declared_body(req, forward.body_limit)?;
        let token = match route::credential(req, realtime) {
            Ok(token) => token,
            // Browsers cannot set headers on a WebSocket: graphql-ws clients send the token
            // in connection_init, which the relay reads before anything goes upstream.
            Err(GateError::MissingToken)
                if websocket && !realtime && upgrade::offers_graphql(req) =>
            {
                // An address refused for failed authentications opens no pending socket.
                if let Some(blocked) = self.app.limits.blocked(ctx.client_ip) {
                    return Err(GateError::RateLimited(blocked.retry_after_secs()));
                }
                return Ok(Admitted::WebSocket(ws::Handshake {
                    uri: forward.uri,
                    authed: None,
                    graphql: true,
                }));
            }
            Err(e) => return Err(e),
        };
        let found = self.app.sessions.authenticate(&token).await?;
        if websocket {
            return Ok(Admitted::WebSocket(ws::Handshake {
                uri: forward.uri,
                authed: Some(ws::Authed {
                    session: found,
                    token: Secret::new(token.into_owned()),
                }),
                graphql: !realtime,
            }));
        }
        ctx.body_limit = forward.body_limit;
        ctx.forward_uri = Some(forward.uri);
        ctx.session = Some(found);
        ctx.token = Secret::new(token.into_owned());
        Ok(Admitted::Forward)
    }

    /// The socket's peer; the client (the peer, or what a trusted proxy says in
    /// `X-Forwarded-For`); and whether the peer is a trusted proxy.
    fn client_ip(&self, session: &HttpSession) -> (IpAddr, IpAddr, bool) {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip().to_canonical());
        let trusted = &self.app.config.proxy.trusted_proxies;
        let client = crate::client_ip::client_ip(peer, &session.req_header().headers, trusted);
        (peer, client, crate::client_ip::is_trusted(peer, trusted))
    }

    /// `request_filter`'s work, inside the request's span.
    async fn filter(&self, session: &mut HttpSession, ctx: &mut RequestCtx) -> Result<bool> {
        let flow = match self.admit(session, ctx).await {
            Ok(Admitted::Forward) => {
                if session.is_http2() && !session.is_body_done() {
                    // Boxed: rare, and not part of every request's future.
                    if let Err(e) = Box::pin(self.prebuffer(session, ctx)).await {
                        let span = ctx.span();
                        self.reject(session, ctx, &e).instrument(span).await?;
                        return Ok(true);
                    }
                }
                Flow::Continue
            }
            Ok(Admitted::Preflight) => {
                ctx.outcome = Outcome::Preflight;
                // A preflight has no body; one that declares one is not read, so the
                // connection is not reused.
                if guard::declares_body(session.req_header()) {
                    session.set_keepalive(None);
                }
                respond::preflight(session, &ctx.request_id, &ctx.cors).await?;
                Flow::Responded
            }
            Ok(Admitted::Endpoint(ep)) => {
                let span = ctx.span();
                Box::pin(self.terminate(session, ctx, ep).instrument(span)).await?;
                Flow::Responded
            }
            Ok(Admitted::WebSocket(handshake)) => {
                let span = ctx.span();
                // Boxed, like the session APIs: not part of every request's future, which
                // is boxed and moved for every request.
                let accepted = Box::pin(
                    ws::accept(
                        &self.app,
                        session,
                        handshake,
                        ctx.client_ip,
                        &ctx.request_id,
                        span.clone(),
                    )
                    .instrument(span.clone()),
                )
                .await;
                match accepted {
                    // Nothing is written here: the listener writes the `101` and serves the
                    // socket once Pingora hands the connection back (`ws::Socket`).
                    Ok(socket) => match ctx.takeover.get_mut() {
                        Ok(t) => {
                            *t = Some(crate::conn::Handover::new(socket));
                            ctx.outcome = Outcome::WebSocket;
                        }
                        Err(_) => {
                            let e = GateError::Internal;
                            self.reject(session, ctx, &e).instrument(span).await?
                        }
                    },
                    Err(e) => self.reject(session, ctx, &e).instrument(span).await?,
                }
                Flow::Responded
            }
            Err(e) => {
                let span = ctx.span();
                self.reject(session, ctx, &e).instrument(span).await?;
                Flow::Responded
            }
        };
        Ok(flow.into_pingora())
    }

    /// HTTP/2 only: the start of a forwarded body is read here, under the body deadline and
    /// before any upstream connection exists. Pingora times each read of an HTTP/1.1 body,
    /// but an h2 stream that sends its headers and then nothing (or a trickle) would hold
    /// its stream and an upstream connection until the upstream read timeout; the body
    /// deadline in `request_body_filter` only runs when a chunk arrives. What is read here
    /// sits in Pingora's retry buffer, which it sends upstream first; the rest (a body over
    /// [`PREBUFFER_BYTES`]) is read by Pingora as usual.
    async fn prebuffer(
        &self,
        session: &mut HttpSession,
        ctx: &RequestCtx,
    ) -> Result<(), GateError> {
        session.enable_retry_buffering();
        let due = ctx.body_due.unwrap_or_else(Instant::now);
        let mut read: u64 = 0;
        while !session.is_body_done() && read < PREBUFFER_BYTES {
            let left = due.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, session.read_request_body()).await {
                Err(_) => return Err(GateError::RequestTimeout),
                // A reset stream or a broken connection: nobody is left to answer.
                Ok(Err(_)) => {
                    return Err(GateError::BadRequest(
                        "the request body could not be read".into(),
                    ))
                }
                Ok(Ok(None)) => break,
                // Counted against the route's limit here; `request_body_filter` counts it
                // (once) when Pingora replays it.
                Ok(Ok(Some(chunk))) => {
                    read = read.saturating_add(chunk.len() as u64);
                    if read > ctx.body_limit {
                        return Err(GateError::PayloadTooLarge(
                            usize::try_from(ctx.body_limit).unwrap_or(usize::MAX),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Answers a session API request: reads the (bounded) body, lets the dialect handle it,
    /// writes its reply. Every failure is in the dialect's own format.
    async fn terminate(
        &self,
        session: &mut HttpSession,
        ctx: &mut RequestCtx,
        ep: Endpoint,
    ) -> Result<()> {
        ctx.outcome = Outcome::Dialect;
        let limit = self.app.config.dialects.max_body_bytes;
        let due = self.app.config.connections.body_read_timeout;
        let admitted =
            match endpoint::precheck(&self.app, ep, ctx.client_ip, ctx.via_trusted_proxy).await {
                Ok(()) => tokio::time::timeout(due, read_body(session, limit))
                    .await
                    .unwrap_or(Err(dialect::Problem::Timeout)),
                Err(problem) => Err(problem),
            };
        let reply = match admitted {
            Ok(body) => {
                let req = session.req_header();
                // As routed (`route::classify` normalised the same path).
                let path = crate::path::normalize_path(req.uri.path()).unwrap_or_default();
                let request = dialect::Request {
                    method: &req.method,
                    path: &path,
                    query: req.uri.query(),
                    headers: &req.headers,
                    body: &body,
                    client_ip: ctx.client_ip,
                    via_trusted_proxy: ctx.via_trusted_proxy,
                    peer: ctx.peer,
                };
                endpoint::handle(&self.app, ep, &request).await
            }
            Err(problem) => {
                // The rest of the body was not read: the connection cannot be reused.
                session.set_keepalive(None);
                endpoint::render(ep, &problem)
            }
        };
        respond::reply(session, reply, &ctx.request_id, &ctx.cors).await
    }

    async fn reject(
        &self,
        session: &mut HttpSession,
        ctx: &mut RequestCtx,
        err: &GateError,
    ) -> Result<()> {
        ctx.outcome = Outcome::of(err);
        if let Some(reason) = err.auth_failure_reason() {
            self.app
                .metrics
                .auth_failures
                .with_label_values(&[reason])
                .inc();
        }
        if err.counts_as_failed_authentication() {
            self.app.limits.auth_failed(ctx.client_ip).await;
        }
        // An address over its failed-authentication limit gets 429 instead of 401 on the
        // failure path only: a valid session from the same address (a NAT, a /64) still
        // passes, while guessing learns nothing more.
        let limited;
        let err = match (
            err.auth_failure_reason(),
            self.app.limits.blocked(ctx.client_ip),
        ) {
            (Some(_), Some(blocked)) => {
                ctx.outcome = Outcome::RateLimited;
                limited = GateError::RateLimited(blocked.retry_after_secs());
                &limited
            }
            _ => err,
        };
        // The request body (if any) is not read; never reuse the connection after a refusal.
        session.set_keepalive(None);
        // A refusal is small and holds no slot: a client that does not take it (an h2
        // stream with no flow-control window) loses it quickly, not at the write deadline.
        session.set_write_timeout(Some(crate::conn::REFUSAL_WRITE_TIMEOUT));
        match ctx.errors {
            None => respond::error(session, err, &ctx.request_id, &ctx.cors).await,
            Some(d) => {
                let reply = dialect::render(d, &dialect::Problem::Gate(err.clone()));
                respond::reply(session, reply, &ctx.request_id, &ctx.cors).await
            }
        }
    }
}

/// How much of an HTTP/2 request body [`Proxy::prebuffer`] reads before Pingora takes over:
/// Pingora's retry buffer holds 64 KiB and drops everything past it, and one read is one
/// DATA frame of at most 16 KiB (`SETTINGS_MAX_FRAME_SIZE`, pinned where the listener is
/// built), so reading stops below 64 - 16 KiB.
pub const PREBUFFER_BYTES: u64 = 48 * 1024;

/// The headers the gateway sets on every proxied response: the request id and, with CORS
/// on, its own CORS headers instead of the upstream's.
fn respond_headers(
    headers: &mut http::HeaderMap,
    ctx: &RequestCtx,
    cors_on: bool,
) -> std::result::Result<(), GateError> {
    headers::set_request_id(headers, &ctx.request_id)?;
    if cors_on {
        // The gateway owns CORS: a permissive upstream cannot widen the policy.
        let theirs: Vec<http::HeaderName> = headers
            .keys()
            .filter(|k| cors::is_cors_header(k.as_str()))
            .cloned()
            .collect();
        for name in theirs {
            headers.remove(name);
        }
        for (name, value) in &ctx.cors {
            let name =
                http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| GateError::Internal)?;
            headers
                .try_append(name, value.clone())
                .map_err(|_| GateError::Internal)?;
        }
    }
    Ok(())
}

/// The request's id: the client's `x-request-id` when it is one short token of safe
/// characters (so it can go into logs and headers as is), else a new UUIDv4.
fn request_id(req: &RequestHeader) -> String {
    let mut values = req.headers.get_all(REQUEST_ID).iter();
    match (values.next(), values.next()) {
        (Some(v), None)
            if (1..=128).contains(&v.len())
                && v.as_bytes().iter().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
                }) =>
        {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        }
        // From the thread's CSPRNG, not `Uuid::new_v4` (a getrandom syscall per request).
        _ => uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .to_string(),
    }
}

use respond::REQUEST_ID;

/// Pingora error type for a forwarded body over its route's limit (mapped to 413).
const BODY_TOO_LARGE: &str = "request body too large";

/// Reads a request body of at most `limit` bytes.
async fn read_body(session: &mut HttpSession, limit: usize) -> Result<Vec<u8>, dialect::Problem> {
    if guard::declared_body(session.req_header(), limit as u64).is_err() {
        return Err(dialect::Problem::PayloadTooLarge(limit));
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(dialect::Problem::PayloadTooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.etype() == &ErrorType::ReadTimedout => {
                return Err(dialect::Problem::Timeout)
            }
            Err(_) => {
                return Err(dialect::Problem::Malformed(
                    "could not read the request body".into(),
                ))
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            session: None,
            token: Secret::new(String::new()),
            forward_uri: None,
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            via_trusted_proxy: false,
            peer: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            request_id: String::new(),
            span: tracing::Span::none(),
            cors: Vec::new(),
            errors: None,
            body_limit: u64::MAX,
            body_seen: 0,
            body_due: None,
            outcome: Outcome::Rejected,
            stream_slot: None,
            takeover: std::sync::Mutex::new(None),
        }
    }

    /// Runs first for every request: normalise and route the path, then (protected routes)
    /// verify the bearer token and find its session. `Ok(true)` means a refusal was written.
    async fn request_filter(
        &self,
        session: &mut HttpSession,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        ctx.request_id = request_id(session.req_header());
        // The body (and an upgraded connection's traffic) is read through Pingora, which
        // times each read; the whole body's deadline is checked as chunks arrive.
        let body_timeout = self.app.config.connections.body_read_timeout;
        // A response the client does not take (an HTTP/2 flow-control window left at zero,
        // a socket nobody reads) may not hold its stream and upstream connection for ever:
        // each write gets `connections.write_timeout_ms`, then the stream (h2) or connection
        // ends.
        session.set_write_timeout(Some(self.app.config.connections.write_timeout));
        if upgrade::is_websocket(session.req_header()) {
            session.set_read_timeout(None);
        } else {
            session.set_read_timeout(Some(body_timeout));
            ctx.body_due = Some(Instant::now() + body_timeout);
        }
        // One await either way: this future is moved into a box per request (async_trait),
        // and two differently typed awaits of `filter` would double its size.
        let span = match tracing::enabled!(tracing::Level::DEBUG) {
            true => ctx.span(),
            false => tracing::Span::none(),
        };
        self.filter(session, ctx).instrument(span).await
    }

    /// What Pingora's own error lines ("Fail to proxy: …", pingora-proxy 0.9.1 `lib.rs`,
    /// whose default summary is the whole request target) print about the request: method,
    /// path and request id, never the query (Amity's realtime token travels there) nor any
    /// header (CWE-532).
    fn request_summary(&self, session: &HttpSession, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!(
            "{} {}, request_id: {}",
            req.method,
            req.uri.path(),
            ctx.request_id
        )
    }

    /// The one backend; resolved at start.
    async fn upstream_peer(
        &self,
        _session: &mut HttpSession,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        // Each attempt (Pingora retries a failed reused connection) replays the body read
        // so far through `request_body_filter`, which counts it again from here.
        ctx.body_seen = 0;
        Ok(Box::new(self.app.upstream.peer()))
    }

    /// Runs after `request_filter` admitted the request: the forwarded path is the
    /// normalised one that was routed, and identity headers are rewritten.
    async fn upstream_request_filter(
        &self,
        _session: &mut HttpSession,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Cloned, not taken: Pingora calls this hook again for each retry of a request
        // whose pooled connection failed (pingora-proxy 0.9.1, `lib.rs`, `proxy_request`'s
        // retry loop, from the client's original head), and every attempt must carry the
        // path that was routed, without a realtime token.
        match &ctx.forward_uri {
            Some(uri) => upstream.set_uri(uri.clone()),
            None => return Error::e_explain(ErrorType::InternalError, "no routed URI to forward"),
        }
        let identity = match ctx.session.as_deref() {
            Some(s) => Some(
                self.app
                    .hasura
                    .identity_for(s, ctx.token.expose())
                    .map_err(|e| {
                        Error::because(
                            ErrorType::InternalError,
                            "the session's upstream identity",
                            e,
                        )
                    })?,
            ),
            None => None,
        };
        headers::rewrite(upstream, identity.as_ref(), &ctx.request_id).map_err(|e| {
            Error::because(ErrorType::InternalError, "rewriting identity headers", e)
        })?;
        ctx.outcome = match identity {
            Some(_) => Outcome::Forwarded,
            None => Outcome::Public,
        };
        Ok(())
    }

    /// Bounds a forwarded body: its route's size limit and the whole body's deadline
    /// (Pingora only times each read).
    async fn request_body_filter(
        &self,
        _session: &mut HttpSession,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.body_seen += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_seen > ctx.body_limit {
            let mut e =
                Error::explain(ErrorType::Custom(BODY_TOO_LARGE), "request body over limit");
            e.as_down();
            return Err(e);
        }
        if !end_of_stream && ctx.body_due.is_some_and(|due| Instant::now() > due) {
            let mut e = Error::explain(ErrorType::ReadTimedout, "request body deadline passed");
            e.as_down();
            return Err(e);
        }
        Ok(())
    }

    /// The request id goes back to the client on every proxied response.
    async fn response_filter(
        &self,
        _session: &mut HttpSession,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // As a plain map, like the request's headers (`headers::rewrite`): Pingora's second
        // map of the upstream's name spellings would be parsed into and grown by every
        // insert. The client gets the names lowercase (or in their canonical form), as an
        // HTTP/2 upstream would send them.
        let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
        let mut parts: http::response::Parts = std::mem::replace(upstream_response, empty).into();
        let written = respond_headers(&mut parts.headers, ctx, self.app.cors.is_some());
        *upstream_response = ResponseHeader::from(parts);
        written.map_err(|e| Error::because(ErrorType::InternalError, "writing response headers", e))
    }

    /// Upstream failures become JSON 502/504 instead of Pingora's empty error page.
    async fn fail_to_proxy(
        &self,
        session: &mut HttpSession,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let err = match (e.esource(), e.etype()) {
            (ErrorSource::Upstream, ErrorType::ConnectTimedout | ErrorType::ReadTimedout) => {
                Some(GateError::UpstreamTimeout)
            }
            (ErrorSource::Upstream, _) => Some(GateError::UpstreamUnavailable),
            (
                ErrorSource::Downstream,
                ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::WriteTimedout
                | ErrorType::ConnectionClosed,
            ) => None,
            // A reply the gateway wrote itself that the client did not take (in time).
            (ErrorSource::Unset, ErrorType::WriteTimedout | ErrorType::WriteError) => None,
            (ErrorSource::Downstream, ErrorType::ReadTimedout) => Some(GateError::RequestTimeout),
            (ErrorSource::Downstream, ErrorType::Custom(BODY_TOO_LARGE)) => Some(
                GateError::PayloadTooLarge(usize::try_from(ctx.body_limit).unwrap_or(usize::MAX)),
            ),
            (ErrorSource::Downstream, _) => Some(GateError::BadRequest("malformed request".into())),
            (ErrorSource::Internal | ErrorSource::Unset, _) => Some(GateError::Internal),
        };
        // Past request_filter, whatever is not the client's fault (an internal error, a
        // client gone mid-request) counts as the upstream leg's failure.
        ctx.outcome = match err.as_ref().map(Outcome::of) {
            Some(Outcome::BadRequest) => Outcome::BadRequest,
            _ => Outcome::UpstreamError,
        };
        let code = match &err {
            Some(err) => {
                // Only possible before the response started; afterwards the write just fails.
                if session.response_written().is_none() {
                    let span = ctx.span();
                    let _ = respond::error(session, err, &ctx.request_id, &ctx.cors)
                        .instrument(span)
                        .await;
                }
                err.response().status
            }
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// An accepted WebSocket goes back to the listener with its connection (see
    /// `conn::Takeover`).
    fn persist_connection_context(
        &self,
        _session: &HttpSession,
        ctx: &RequestCtx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        if ctx.outcome != Outcome::WebSocket {
            return None;
        }
        let handover = ctx.takeover.lock().ok()?.take()?;
        Some(handover.into_context())
    }

    /// Last hook of every request: metrics and the access log line (no token, no query).
    async fn logging(&self, session: &mut HttpSession, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some((requests, duration)) = self.by_outcome.get(ctx.outcome.index()) {
            requests.inc();
            duration.observe(ctx.started.elapsed().as_secs_f64());
        }
        let outcome = ctx.outcome.label();
        let status = match ctx.outcome {
            // Its `101` is written once the listener takes the connection over.
            Outcome::WebSocket => 101,
            _ => session.response_written().map_or(0, |r| r.status.as_u16()),
        };
        let req = session.req_header();
        if !ctx.outcome.served() {
            ctx.span();
        }
        let _in_request = ctx.span.enter();
        if ctx.outcome.served() {
            tracing::debug!(method = %req.method, path = req.uri.path(), status, outcome, "request");
        } else {
            tracing::info!(
                method = %req.method,
                path = req.uri.path(),
                status,
                outcome,
                error = e.map(|e| e.etype().as_str()),
                "request refused"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_clients_when_safe_else_fresh_uuid_v4s(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let bare = RequestHeader::build("GET", b"/", None)?;
        let a = request_id(&bare);
        let b = request_id(&bare);
        assert_ne!(a, b);
        for id in [&a, &b] {
            let u = uuid::Uuid::parse_str(id)?;
            assert_eq!(u.get_version_num(), 4);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        }
        let mut own = RequestHeader::build("GET", b"/", None)?;
        own.append_header(REQUEST_ID, "client-id_1.2")?;
        assert_eq!(request_id(&own), "client-id_1.2");
        let mut bad = RequestHeader::build("GET", b"/", None)?;
        bad.append_header(REQUEST_ID, "has space")?;
        assert_ne!(request_id(&bad), "has space");
        Ok(())
    }
}
