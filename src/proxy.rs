//! The request flow, top to bottom: route → authenticate → session lookup → rewrite headers
//! → upstream. Each hook only delegates; the steps live in `route`, `auth`, `session` and
//! `headers`, and are tested there without a socket.

use crate::config::{AmbiguousPaths, HasuraMode};
use crate::dialect::{self, Endpoint};
use crate::error::GateError;
use crate::headers;
use crate::path;
use crate::respond;
use crate::route::{self, Route};
use crate::session::model::Session;
use crate::ws;
use crate::App;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, TRANSFER_ENCODING};
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

/// How a request ended: the `outcome` label of `sessiongate_requests_total` and of the
/// access log line, decided where the request ends and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Authenticated and sent upstream.
    Forwarded,
    /// A public route, sent upstream without identity.
    Public,
    /// Answered by a session API (dialect) of the gateway.
    Dialect,
    /// A relayed WebSocket that ran its course.
    WebSocket,
    /// Refused for want of a valid credential (or anything else not listed).
    Rejected,
    /// The session store could not be asked.
    StoreUnavailable,
    /// Malformed, too large or too slow.
    BadRequest,
    /// The upstream failed or timed out.
    UpstreamError,
    /// Over a rate limit.
    RateLimited,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Public => "public",
            Outcome::Dialect => "dialect",
            Outcome::WebSocket => "websocket",
            Outcome::Rejected => "rejected",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::BadRequest => "bad_request",
            Outcome::UpstreamError => "upstream_error",
            Outcome::RateLimited => "rate_limited",
        }
    }

    /// Served as asked (logged at debug), as opposed to refused or failed (info).
    fn served(self) -> bool {
        matches!(
            self,
            Outcome::Forwarded | Outcome::Public | Outcome::Dialect | Outcome::WebSocket
        )
    }

    /// The outcome of a request refused with `err` (no `_ =>`: a new error picks its label).
    fn of(err: &GateError) -> Outcome {
        match err {
            GateError::StoreUnavailable => Outcome::StoreUnavailable,
            GateError::BadRequest(_)
            | GateError::InvalidField { .. }
            | GateError::HeadersTooLarge(_)
            | GateError::TooManyHeaders(_)
            | GateError::PayloadTooLarge(_)
            | GateError::RequestTimeout
            | GateError::MethodNotAllowed => Outcome::BadRequest,
            GateError::RateLimited(_) | GateError::TooManyConnections(_) => Outcome::RateLimited,
            GateError::UpstreamUnavailable | GateError::UpstreamTimeout => Outcome::UpstreamError,
            GateError::Internal
            | GateError::MissingToken
            | GateError::InvalidToken(_)
            | GateError::SessionNotFound
            | GateError::SessionExpired
            | GateError::InvalidRefreshToken
            | GateError::RefreshTokenReused
            | GateError::AdminUnauthorized
            | GateError::Forbidden(_)
            | GateError::NotFound => Outcome::Rejected,
        }
    }
}

/// Per-request state shared by the hooks.
#[derive(Debug)]
pub struct RequestCtx {
    started: Instant,
    route: Option<Route>,
    session: Option<Arc<Session>>,
    /// Normalised path + original query: what goes upstream.
    forward_uri: Option<http::Uri>,
    /// The client's address (socket peer, or `X-Forwarded-For` from a trusted proxy).
    client_ip: IpAddr,
    /// Whether the socket's peer is a trusted proxy.
    via_trusted_proxy: bool,
    /// The socket's peer.
    peer: IpAddr,
    /// A WebSocket upgrade on a protected route: relayed by `ws::relay`.
    websocket: bool,
    /// The WebSocket's bearer token, re-checked while the socket lives.
    ws_token: Option<String>,
    /// A GraphQL WebSocket (not an Amity realtime path): `connection_init` rules apply.
    ws_graphql: bool,
    /// `x-request-id`: the client's if well-formed, else generated; sent upstream and back.
    request_id: String,
    /// Carries the request id into every log line of this request.
    span: tracing::Span,
    /// Largest body this route accepts, bytes received so far, and when it must be done.
    body_limit: u64,
    body_seen: u64,
    body_due: Option<Instant>,
    outcome: Outcome,
}

/// The proxy service.
pub struct Gateway {
    app: Arc<App>,
}

impl Gateway {
    /// A proxy over the shared application state.
    pub fn new(app: Arc<App>) -> Self {
        Gateway { app }
    }

    /// Decides whether the request may go upstream, filling `ctx` on the way. `Some` names a
    /// session API the gateway answers itself.
    async fn admit(
        &self,
        session: &HttpSession,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Endpoint>, GateError> {
        let req = session.req_header();
        (ctx.peer, ctx.client_ip, ctx.via_trusted_proxy) = self.client_ip(session);
        check_header_size(req, self.app.config.proxy.max_header_bytes)?;
        if req.headers.len() > self.app.config.proxy.max_header_count {
            return Err(GateError::TooManyHeaders(
                self.app.config.proxy.max_header_count,
            ));
        }
        check_framing(req)?;
        // Before routing, and on every route: a path that a lenient backend could resolve
        // somewhere else than the gateway does (`/public/..%2Fv1/graphql`) is refused.
        if self.app.config.proxy.ambiguous_paths == AmbiguousPaths::Reject {
            if let Some(why) = path::ambiguity(req.uri.path()) {
                return Err(GateError::BadRequest(format!(
                    "ambiguous request path: it holds {why} (proxy.ambiguous_paths)"
                )));
            }
        }
        // Pingora passes through any upgrade request the upstream answers with 101
        // (pingora-proxy 0.9.1, `proxy_h1.rs`); only WebSocket upgrades the relay handles
        // (or, on public routes, plain GET WebSockets) may ask.
        if req.headers.contains_key(http::header::UPGRADE) && !ws::is_upgrade(req) {
            return Err(GateError::BadRequest(
                "only WebSocket upgrades (GET, HTTP/1.1) are accepted".into(),
            ));
        }
        // Pingora drops Content-Length when Transfer-Encoding is present (RFC 9112 §6.3;
        // pingora-core 0.9.1, `protocols/http/v1/server.rs`, `read_request`:
        // `remove_header(&CONTENT_LENGTH)`), so the parsed headers no longer show the
        // smuggling shape; look at the raw bytes.
        if req.headers.contains_key(TRANSFER_ENCODING) {
            if let Some(h1) = session.as_http1() {
                if raw_has_content_length(&h1.get_headers_raw_bytes()) {
                    return Err(GateError::BadRequest(
                        "both Content-Length and Transfer-Encoding are present".into(),
                    ));
                }
            }
        }
        let path = path::normalize_path(req.uri.path())
            .map_err(|e| GateError::BadRequest(e.to_string()))?;
        if let Some(ep) = dialect::endpoint(&path, &self.app.config) {
            ctx.route = Some(Route::Dialect(ep));
            return Ok(Some(ep));
        }
        let realtime = self.is_realtime(&path);
        let query = match req.uri.query() {
            // The realtime token never travels further than it has to.
            Some(q) if realtime && !self.app.config.proxy.forward_authorization => {
                without_param(q, "token")
            }
            other => other.map(str::to_string),
        };
        ctx.forward_uri = Some(forward_uri(&path, query.as_deref())?);
        ctx.body_limit = self.app.config.proxy.body_limit(&path);
        if declared_length(req).is_some_and(|n| n > ctx.body_limit) {
            return Err(GateError::PayloadTooLarge(
                usize::try_from(ctx.body_limit).unwrap_or(usize::MAX),
            ));
        }
        let r = route::route(&path, &self.app.config.proxy.public_prefixes);
        ctx.route = Some(r);
        if r == Route::Public {
            return Ok(None);
        }
        let websocket = ws::is_upgrade(req);
        ctx.ws_graphql = !realtime;
        let session = match bearer(req) {
            Ok(token) => {
                let session = self.app.sessions.authenticate(token).await?;
                if websocket {
                    ctx.ws_token = Some(token.to_string());
                }
                session
            }
            // Realtime sockets (Amity's SDK) carry the token in the query instead.
            Err(GateError::MissingToken) if realtime => {
                let token = dialect::query_param(req.uri.query(), "token")
                    .filter(|t| !t.is_empty())
                    .ok_or(GateError::MissingToken)?;
                let session = self.app.sessions.authenticate(&token).await?;
                if websocket {
                    ctx.ws_token = Some(token);
                }
                session
            }
            // Browsers cannot set headers on a WebSocket: graphql-ws clients send the token
            // in connection_init, which the relay reads before anything goes upstream.
            Err(GateError::MissingToken) if websocket && ws::offers_graphql(req) => {
                // An address refused for failed authentications opens no pending socket.
                if let Some(blocked) = self.app.limits.blocked(ctx.client_ip) {
                    return Err(GateError::RateLimited(blocked.retry_after_secs()));
                }
                ctx.websocket = true;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        ctx.websocket = websocket;
        ctx.session = Some(session);
        Ok(None)
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
            Ok(None) if ctx.websocket => {
                let uri = ctx.forward_uri.take().unwrap_or_default();
                let socket = ws::Socket {
                    uri: &uri,
                    session: ctx.session.clone(),
                    token: ctx.ws_token.take(),
                    client_ip: ctx.client_ip,
                    request_id: &ctx.request_id,
                    graphql: ctx.ws_graphql,
                };
                let end = ws::relay(&self.app, session, socket).await;
                ctx.outcome = match end {
                    ws::End::Unauthorized | ws::End::Refused => Outcome::Rejected,
                    ws::End::StoreUnavailable => Outcome::StoreUnavailable,
                    ws::End::UpstreamFailed => Outcome::UpstreamError,
                    ws::End::Internal => Outcome::Rejected,
                    ws::End::Closed
                    | ws::End::Revoked
                    | ws::End::BadInit
                    | ws::End::BadMessage(_)
                    | ws::End::InitTimeout
                    | ws::End::TooManyInits
                    | ws::End::TooLarge => Outcome::WebSocket,
                };
                Flow::Responded
            }
            Ok(None) => Flow::Continue,
            Ok(Some(ep)) => {
                self.terminate(session, ctx, ep).await?;
                Flow::Responded
            }
            Err(e) => {
                self.reject(session, ctx, &e).await?;
                Flow::Responded
            }
        };
        Ok(flow.into_pingora())
    }

    fn is_realtime(&self, path: &str) -> bool {
        self.app
            .config
            .dialects
            .amity
            .as_ref()
            .is_some_and(|a| path::is_public(path, &a.realtime_paths))
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
            match dialect::precheck(&self.app, ep, ctx.client_ip, ctx.via_trusted_proxy).await {
                Ok(()) => tokio::time::timeout(due, read_body(session, limit))
                    .await
                    .unwrap_or(Err(dialect::Problem::Timeout)),
                Err(problem) => Err(problem),
            };
        let reply = match admitted {
            Ok(body) => {
                let req = session.req_header();
                let request = dialect::Request {
                    method: &req.method,
                    query: req.uri.query(),
                    headers: &req.headers,
                    body: &body,
                    client_ip: ctx.client_ip,
                    via_trusted_proxy: ctx.via_trusted_proxy,
                    peer: ctx.peer,
                };
                dialect::handle(&self.app, ep, &request).await
            }
            Err(problem) => {
                // The rest of the body was not read: the connection cannot be reused.
                session.set_keepalive(None);
                dialect::render(ep.dialect(), &problem)
            }
        };
        respond::reply(session, reply, &ctx.request_id).await
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
        respond::error(session, err, &ctx.request_id).await
    }
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
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

use respond::REQUEST_ID;

/// Pingora error type for a forwarded body over its route's limit (mapped to 413).
const BODY_TOO_LARGE: &str = "request body too large";

/// The request's `Content-Length`, when it has a valid one.
fn declared_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(session: &mut HttpSession, limit: usize) -> Result<Vec<u8>, dialect::Problem> {
    let declared = declared_length(session.req_header());
    if declared.is_some_and(|n| n > limit as u64) {
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

/// `query` without any `name=...` parameter (names compared after percent-decoding); the
/// other parameters are kept byte for byte.
fn without_param(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            form_urlencoded::parse(key.as_bytes())
                .next()
                .is_none_or(|(k, _)| k != name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
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

fn bearer(req: &RequestHeader) -> Result<&str, GateError> {
    let mut values = req.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(GateError::MissingToken);
    };
    if values.next().is_some() {
        return Err(GateError::InvalidToken(crate::auth::TokenError::Malformed));
    }
    crate::auth::bearer_token(value.as_bytes()).ok_or(GateError::MissingToken)
}

fn forward_uri(path: &str, query: Option<&str>) -> Result<http::Uri, GateError> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    pq.parse::<http::Uri>()
        .map_err(|_| GateError::BadRequest("the request target is not a valid URI".into()))
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            route: None,
            session: None,
            forward_uri: None,
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            via_trusted_proxy: false,
            peer: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            websocket: false,
            ws_token: None,
            ws_graphql: false,
            request_id: String::new(),
            span: tracing::Span::none(),
            body_limit: u64::MAX,
            body_seen: 0,
            body_due: None,
            outcome: Outcome::Rejected,
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
        if ws::is_upgrade(session.req_header()) {
            session.set_read_timeout(None);
        } else {
            session.set_read_timeout(Some(body_timeout));
            ctx.body_due = Some(Instant::now() + body_timeout);
        }
        ctx.span = tracing::info_span!("request", request_id = %ctx.request_id);
        let span = ctx.span.clone();
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
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let up = &self.app.config.upstream;
        let mut peer = HttpPeer::new(up.addr, up.tls, up.host.clone());
        peer.options.ca = self.app.upstream_tls.as_ref().and_then(|t| t.ca.clone());
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.read_timeout = Some(up.read_timeout);
        Ok(Box::new(peer))
    }

    /// Runs after `request_filter` admitted the request: the forwarded path is the
    /// normalised one that was routed, and identity headers are rewritten.
    async fn upstream_request_filter(
        &self,
        _session: &mut HttpSession,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(uri) = ctx.forward_uri.take() {
            upstream.set_uri(uri);
        }
        upstream.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        let session = ctx.session.as_deref();
        let minted = match (self.app.hasura.mode(), session) {
            (HasuraMode::Jwt, Some(s)) => Some(self.app.hasura.jwt_for(s).map_err(|e| {
                Error::because(ErrorType::InternalError, "minting the Hasura JWT", e)
            })?),
            _ => None,
        };
        let bearer = minted.as_deref().map(|m| m.token.as_str());
        let opts = self
            .app
            .hasura
            .rewrite_options(&self.app.config.proxy, bearer);
        headers::rewrite(upstream, session, opts).map_err(|e| {
            Error::because(ErrorType::InternalError, "rewriting identity headers", e)
        })?;
        ctx.outcome = match ctx.route {
            Some(Route::Public) => Outcome::Public,
            _ => Outcome::Forwarded,
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
        upstream_response.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        Ok(())
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
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => None,
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
                    let _ = respond::error(session, err, &ctx.request_id)
                        .instrument(ctx.span.clone())
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

    /// Last hook of every request: metrics and the access log line (no token, no query).
    async fn logging(&self, session: &mut HttpSession, e: Option<&Error>, ctx: &mut RequestCtx) {
        let _in_request = ctx.span.enter();
        let m = &self.app.metrics;
        let outcome = ctx.outcome.label();
        m.requests.with_label_values(&[outcome]).inc();
        m.request_duration
            .with_label_values(&[outcome])
            .observe(ctx.started.elapsed().as_secs_f64());
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
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
    fn bearer_extraction() -> Result<(), Box<Error>> {
        assert!(matches!(bearer(&req(&[])?), Err(GateError::MissingToken)));
        assert_eq!(
            bearer(&req(&[("authorization", "Bearer abc")])?).ok(),
            Some("abc")
        );
        assert!(bearer(&req(&[
            ("authorization", "Bearer a"),
            ("authorization", "Bearer b")
        ])?)
        .is_err());
        assert!(matches!(
            bearer(&req(&[("authorization", "Basic abc")])?),
            Err(GateError::MissingToken)
        ));
        Ok(())
    }

    #[test]
    fn realtime_token_is_dropped_from_the_query() {
        assert_eq!(
            without_param("token=abc&EIO=3&transport=websocket", "token").as_deref(),
            Some("EIO=3&transport=websocket")
        );
        assert_eq!(
            without_param("a=%20x&%74oken=abc", "token").as_deref(),
            Some("a=%20x")
        );
        assert_eq!(without_param("token=abc", "token"), None);
        assert_eq!(
            without_param("tokens=1", "token").as_deref(),
            Some("tokens=1")
        );
    }

    #[test]
    fn forwarded_uri_keeps_query() -> Result<(), GateError> {
        assert_eq!(
            forward_uri("/v1/graphql", Some("a=1&b=%2F"))?.to_string(),
            "/v1/graphql?a=1&b=%2F"
        );
        assert_eq!(forward_uri("/x", None)?.to_string(), "/x");
        Ok(())
    }
}
