//! Session dialects: the providers' session-creation APIs the gateway terminates itself.
//!
//! Each dialect parses its own request into the common [`NewSession`] model, calls the
//! session core, and renders its own success and error bodies. No dialect knows the store;
//! the store knows no dialect. This module holds what they share: which paths are theirs,
//! the request/reply types, the [`Problem`] every dialect renders in its own format, and
//! JSON field readers that name the offending field.
//!
//! [`NewSession`]: crate::session::model::NewSession

pub mod amity;
pub mod gateway;
pub mod mottasl;
pub mod rapidly;

use crate::config::{Config, HasuraMode};
use crate::error::GateError;
use crate::limits::Limited;
use crate::session::store::StoreError;
use crate::App;
use http::{HeaderMap, Method};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// The dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Mottasl.
    Mottasl,
    /// Amity.
    Amity,
    /// Rapidly.
    Rapidly,
    /// The gateway's own API (refresh, logout).
    Gateway,
}

impl Dialect {
    /// Label for metrics and logs; also the session's `source`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Mottasl => "mottasl",
            Dialect::Amity => "amity",
            Dialect::Rapidly => "rapidly",
            Dialect::Gateway => "gateway",
        }
    }
}

/// An endpoint the gateway answers itself instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/app/user.new.session`.
    MottaslNewSession,
    /// `POST /api/v3/sessions` (and v4, v5: what the TypeScript SDK posts to).
    AmitySessions,
    /// `GET /api/v3/authentication/token?userId=` (secure mode, server key).
    AmityAuthTokenV3,
    /// `POST /api/v4/authentication/token` with `{"userId"}`.
    AmityAuthTokenV4,
    /// `GET /api/v3/network-settings/chat` (the SDK's login needs it).
    AmityChatSettings,
    /// `POST /api/customer-sessions/` (with or without the slash).
    RapidlyCustomerSessions,
    /// `POST /auth/refresh`.
    AuthRefresh,
    /// `POST /auth/logout`.
    AuthLogout,
    /// `/auth/verify`, any method: forward-auth for nginx `auth_request`, ingress-nginx
    /// `auth-url`, Traefik ForwardAuth.
    AuthVerify,
    /// `GET|POST /auth/hasura`: Hasura's auth webhook (hasura.mode = webhook).
    HasuraWebhook,
    /// `GET /.well-known/jwks.json`: the Hasura JWT keys (when any is configured).
    Jwks,
}

impl Endpoint {
    /// The dialect that renders this endpoint's replies.
    pub fn dialect(self) -> Dialect {
        match self {
            Endpoint::MottaslNewSession => Dialect::Mottasl,
            Endpoint::AmitySessions
            | Endpoint::AmityAuthTokenV3
            | Endpoint::AmityAuthTokenV4
            | Endpoint::AmityChatSettings => Dialect::Amity,
            Endpoint::RapidlyCustomerSessions => Dialect::Rapidly,
            Endpoint::AuthRefresh
            | Endpoint::AuthLogout
            | Endpoint::AuthVerify
            | Endpoint::HasuraWebhook
            | Endpoint::Jwks => Dialect::Gateway,
        }
    }

    /// Whether the endpoint creates sessions (rate-limited per IP and per credential).
    pub fn creates_sessions(self) -> bool {
        matches!(
            self,
            Endpoint::MottaslNewSession
                | Endpoint::AmitySessions
                | Endpoint::RapidlyCustomerSessions
        )
    }

    /// The methods the endpoint answers, as an `Allow` value; `None`: any method
    /// (forward-auth sees the original request's method).
    pub fn allow(self) -> Option<&'static str> {
        match self {
            Endpoint::AmityAuthTokenV3 | Endpoint::AmityChatSettings | Endpoint::Jwks => {
                Some("GET")
            }
            Endpoint::HasuraWebhook => Some("GET, POST"),
            Endpoint::AuthVerify => None,
            _ => Some("POST"),
        }
    }

    /// Whether failed authentications here count against the client's address. Forward-auth
    /// and the Hasura webhook are called by infrastructure (the ingress, Hasura) on behalf of
    /// clients: they count only when a trusted proxy named the client, never against the
    /// caller itself. The JWKS is public.
    pub fn counts_client(self, via_trusted_proxy: bool) -> bool {
        match self {
            Endpoint::AuthVerify | Endpoint::HasuraWebhook => via_trusted_proxy,
            Endpoint::Jwks => false,
            _ => true,
        }
    }

    /// Whether the endpoint answers `method`.
    pub fn allows(self, method: &Method) -> bool {
        self.allow()
            .is_none_or(|allow| allow.split(", ").any(|m| m == method.as_str()))
    }
}

/// The endpoint a normalised path belongs to, among the enabled dialects and modes.
pub fn endpoint(path: &str, config: &Config) -> Option<Endpoint> {
    let cfg = &config.dialects;
    let ep = match path {
        "/v1/app/user.new.session" => Endpoint::MottaslNewSession,
        "/api/v3/sessions" | "/api/v4/sessions" | "/api/v5/sessions" => Endpoint::AmitySessions,
        "/api/v3/authentication/token" => Endpoint::AmityAuthTokenV3,
        "/api/v4/authentication/token" => Endpoint::AmityAuthTokenV4,
        "/api/v3/network-settings/chat" => Endpoint::AmityChatSettings,
        "/api/customer-sessions" | "/api/customer-sessions/" => Endpoint::RapidlyCustomerSessions,
        "/auth/refresh" => Endpoint::AuthRefresh,
        "/auth/logout" => Endpoint::AuthLogout,
        "/auth/verify" => Endpoint::AuthVerify,
        "/auth/hasura" => Endpoint::HasuraWebhook,
        "/.well-known/jwks.json" => Endpoint::Jwks,
        _ => return None,
    };
    let enabled = match ep {
        Endpoint::HasuraWebhook => config.hasura.mode == HasuraMode::Webhook,
        Endpoint::Jwks => !config.hasura.keys.is_empty(),
        _ => match ep.dialect() {
            Dialect::Gateway => true,
            Dialect::Mottasl => cfg.mottasl.is_some(),
            Dialect::Amity => cfg.amity.is_some(),
            Dialect::Rapidly => cfg.rapidly.is_some(),
        },
    };
    enabled.then_some(ep)
}

/// What a dialect handler sees of a request.
#[derive(Debug)]
pub struct Request<'a> {
    /// Method.
    pub method: &'a Method,
    /// Raw query string, if any.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The whole body (already bounded by `dialects.max_body_bytes`).
    pub body: &'a [u8],
    /// The client's address (see `client_ip`).
    pub client_ip: IpAddr,
    /// Whether the socket's peer is a trusted proxy (`proxy.trusted_proxies`): only then
    /// is `X-Forwarded-For` believed.
    pub via_trusted_proxy: bool,
    /// The socket's peer: `/auth/verify` believes an original URI, and hands out the minted
    /// Hasura JWT, only when it is one of `forward_auth.trusted_peers`.
    pub peer: IpAddr,
}

/// A complete response written by the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers (e.g. `Allow`).
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }
}

/// What kind of problem a field has; each dialect words it its own way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// Absent (or null where null is not allowed).
    Missing,
    /// Present with the wrong JSON type; names the expected one.
    Type(&'static str),
    /// Shorter than the minimum (characters).
    TooShort(usize),
    /// Longer than the maximum (characters).
    TooLong(usize),
    /// Not in the expected format (uuid, url, ...); names it.
    Format(&'static str),
    /// Well-formed but not acceptable (explained in the message).
    Invalid(String),
}

/// A field problem: where (`["deviceInfo", "kind"]`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Path of the field inside the body (or the query parameter's name).
    pub loc: Vec<String>,
    /// Whether the field is a query parameter rather than a body member.
    pub in_query: bool,
    /// What is wrong.
    pub kind: FieldKind,
}

impl FieldProblem {
    /// The dotted field name, e.g. `deviceInfo.kind`.
    pub fn field(&self) -> String {
        self.loc.join(".")
    }

    /// A plain-English description naming the field.
    pub fn describe(&self) -> String {
        let f = self.field();
        match &self.kind {
            FieldKind::Missing => format!("{f} is required"),
            FieldKind::Type(t) => format!("{f} must be {t}"),
            FieldKind::TooShort(1) => format!("{f} must not be empty"),
            FieldKind::TooShort(n) => format!("{f} must be at least {n} characters long"),
            FieldKind::TooLong(n) => format!("{f} must be at most {n} characters long"),
            FieldKind::Format(what) => format!("{f} must be a valid {what}"),
            FieldKind::Invalid(why) => format!("{f} {why}"),
        }
    }
}

/// Everything a dialect request can fail with. Each dialect maps it to its own status codes
/// and error body, in one function (`render`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The body is not JSON, or not a JSON object.
    #[error("{0}")]
    Malformed(String),
    /// `Content-Type` is not `application/json`.
    #[error("Content-Type must be application/json")]
    ContentType,
    /// A field is missing or invalid.
    #[error("{}", .0.describe())]
    Field(FieldProblem),
    /// A credential was presented and refused (counts as a failed authentication).
    #[error("{0}")]
    Unauthorized(String),
    /// No credential was presented (or only an expired one): 401 all the same, but not a
    /// guess, so not counted against the client's address.
    #[error("{0}")]
    NoCredential(String),
    /// A gateway refusal: the gateway's own format writes it as is, the other dialects
    /// through `From<GateError>`.
    #[error("{0}")]
    Gate(GateError),
    /// The credential is valid but not for this (business, role, host, scope).
    #[error("{0}")]
    Forbidden(String),
    /// The body is over the limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive in time.
    #[error("the request body was not received in time")]
    Timeout,
    /// The endpoint exists, not with this method; names the ones it allows.
    #[error("use {0}")]
    MethodNotAllowed(&'static str),
    /// A referenced object does not exist (e.g. a customer); names the field.
    #[error("{message}")]
    NotFound {
        /// The body field that referenced it.
        field: &'static str,
        /// What was not found.
        message: String,
    },
    /// The session store could not be reached; nothing was written.
    #[error("the session store is unavailable; nothing was created")]
    Unavailable,
    /// Over a rate limit; holds `Retry-After` in seconds.
    #[error("too many requests; retry after {0} seconds")]
    RateLimited(u64),
    /// A bug; nothing was written.
    #[error("internal error; nothing was created")]
    Internal,
}

impl Problem {
    /// Whether this refusal counts against the client's address as a failed
    /// authentication (see [`GateError::counts_as_failed_authentication`]).
    pub fn counts_as_failed_authentication(&self) -> bool {
        match self {
            Problem::Unauthorized(_) => true,
            Problem::Gate(e) => e.counts_as_failed_authentication(),
            Problem::NoCredential(_)
            | Problem::Malformed(_)
            | Problem::ContentType
            | Problem::Field(_)
            | Problem::Forbidden(_)
            | Problem::PayloadTooLarge(_)
            | Problem::Timeout
            | Problem::MethodNotAllowed(_)
            | Problem::NotFound { .. }
            | Problem::Unavailable
            | Problem::RateLimited(_)
            | Problem::Internal => false,
        }
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Problem::Unavailable,
            StoreError::Corrupt(_) => Problem::Internal,
        }
    }
}

impl From<Limited> for Problem {
    fn from(l: Limited) -> Self {
        Problem::RateLimited(l.retry_after_secs())
    }
}

impl From<GateError> for Problem {
    /// Exhaustive: every gateway error keeps its meaning in the dialect's own format. Some
    /// statuses have no dialect equivalent and take the nearest (431 → 400, 502/504 → 500,
    /// 503 connection cap → 429); none of those reaches a dialect today (session creation
    /// fails only with a store outage or an internal error).
    fn from(e: GateError) -> Self {
        match e {
            GateError::StoreUnavailable => Problem::Unavailable,
            GateError::MissingToken
            | GateError::InvalidToken(_)
            | GateError::SessionNotFound
            | GateError::SessionExpired
            | GateError::InvalidRefreshToken
            | GateError::RefreshTokenReused
            | GateError::AdminUnauthorized => {
                if e.counts_as_failed_authentication() {
                    Problem::Unauthorized(e.to_string())
                } else {
                    Problem::NoCredential(e.to_string())
                }
            }
            GateError::BadRequest(m) => Problem::Malformed(m),
            GateError::InvalidField { field: f, message } => {
                field(&[f], FieldKind::Invalid(message))
            }
            GateError::PayloadTooLarge(n) => Problem::PayloadTooLarge(n),
            GateError::HeadersTooLarge(_) | GateError::TooManyHeaders(_) => {
                Problem::Malformed(e.to_string())
            }
            GateError::Forbidden(m) => Problem::Forbidden(m),
            GateError::NotFound => Problem::NotFound {
                field: "",
                message: e.to_string(),
            },
            GateError::MethodNotAllowed => Problem::MethodNotAllowed("POST"),
            GateError::RequestTimeout => Problem::Timeout,
            GateError::RateLimited(secs) | GateError::TooManyConnections(secs) => {
                Problem::RateLimited(secs)
            }
            GateError::UpstreamUnavailable | GateError::UpstreamTimeout | GateError::Internal => {
                Problem::Internal
            }
        }
    }
}

/// A body problem for `loc`.
pub fn field(loc: &[&str], kind: FieldKind) -> Problem {
    Problem::Field(FieldProblem {
        loc: loc.iter().map(|s| s.to_string()).collect(),
        in_query: false,
        kind,
    })
}

/// A query-parameter problem.
pub fn query_field(name: &str, kind: FieldKind) -> Problem {
    Problem::Field(FieldProblem {
        loc: vec![name.to_string()],
        in_query: true,
        kind,
    })
}

/// Requires `Content-Type: application/json` (parameters such as `charset` allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let ok = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(Problem::ContentType)
    }
}

/// Parses a body that must be one JSON object.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Problem::Malformed("the body must be a JSON object".into())),
        Err(e) => Err(Problem::Malformed(format!("malformed JSON: {e}"))),
    }
}

/// The bearer token of the `Authorization` header (exactly one such header).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    crate::auth::bearer_token(value.as_bytes())
}

/// One header's value as text (exactly one such header).
pub fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// The first value of a query parameter, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads the members of one JSON object, naming fields by their path on failure.
#[derive(Debug)]
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: Vec<&'a str>,
}

/// Length bounds of a string field, in characters.
#[derive(Debug, Clone, Copy)]
pub struct Len {
    /// Minimum.
    pub min: usize,
    /// Maximum.
    pub max: usize,
}

impl<'a> Fields<'a> {
    /// The top-level object.
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        Fields {
            obj,
            prefix: Vec::new(),
        }
    }

    fn problem(&self, name: &'a str, kind: FieldKind) -> Problem {
        let mut loc = self.prefix.clone();
        loc.push(name);
        field(&loc, kind)
    }

    fn check_len(&self, name: &'a str, s: &str, len: Len) -> Result<(), Problem> {
        let n = s.chars().count();
        if n < len.min {
            return Err(if n == 0 {
                self.problem(name, FieldKind::TooShort(len.min.max(1)))
            } else {
                self.problem(name, FieldKind::TooShort(len.min))
            });
        }
        if n > len.max {
            return Err(self.problem(name, FieldKind::TooLong(len.max)));
        }
        Ok(())
    }

    /// A required string (null counts as missing).
    pub fn string(&self, name: &'a str, len: Len) -> Result<String, Problem> {
        self.opt_string(name, len)?
            .ok_or_else(|| self.problem(name, FieldKind::Missing))
    }

    /// An optional string: absent or null is `None`.
    pub fn opt_string(&self, name: &'a str, len: Len) -> Result<Option<String>, Problem> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                self.check_len(name, s, len)?;
                Ok(Some(s.clone()))
            }
            Some(_) => Err(self.problem(name, FieldKind::Type("a string"))),
        }
    }

    /// An optional nested object, read with the same field naming.
    pub fn opt_object(&self, name: &'a str) -> Result<Option<Fields<'a>>, Problem> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => {
                let mut prefix = self.prefix.clone();
                prefix.push(name);
                Ok(Some(Fields { obj: m, prefix }))
            }
            Some(_) => Err(self.problem(name, FieldKind::Type("an object"))),
        }
    }

    /// Whether the member is present and not null.
    pub fn has(&self, name: &str) -> bool {
        !matches!(self.obj.get(name), None | Some(Value::Null))
    }

    /// A field problem for a member of this object (for checks beyond type and length).
    pub fn invalid(&self, name: &'a str, kind: FieldKind) -> Problem {
        self.problem(name, kind)
    }
}

/// The limits a request from `client_ip` must pass before its body is even read: refused
/// addresses, and the per-IP limits of session creation and refresh.
pub async fn precheck(
    app: &App,
    ep: Endpoint,
    client_ip: IpAddr,
    via_trusted_proxy: bool,
) -> Result<(), Problem> {
    if ep.counts_client(via_trusted_proxy) {
        if let Some(blocked) = app.limits.blocked(client_ip) {
            return Err(blocked.into());
        }
    }
    if ep.creates_sessions() {
        app.limits.create_from(client_ip).await?;
    } else if ep == Endpoint::AuthRefresh {
        app.limits.refresh_from(client_ip).await?;
    }
    Ok(())
}

/// Answers one dialect request; every failure is rendered in the dialect's own format.
/// A refused credential counts as a failed authentication of the client's address
/// ([`Problem::counts_as_failed_authentication`]).
pub async fn handle(app: &App, ep: Endpoint, req: &Request<'_>) -> Reply {
    let dialect = ep.dialect();
    let result = if let Some(allow) = ep.allow().filter(|_| !ep.allows(req.method)) {
        Err(Problem::MethodNotAllowed(allow))
    } else {
        match ep {
            Endpoint::MottaslNewSession => mottasl::new_session(app, req).await,
            Endpoint::AmitySessions => amity::register_session(app, req).await,
            Endpoint::AmityAuthTokenV3 | Endpoint::AmityAuthTokenV4 => {
                amity::auth_token(app, ep, req).await
            }
            Endpoint::AmityChatSettings => amity::chat_settings(app, req).await,
            Endpoint::RapidlyCustomerSessions => rapidly::create_session(app, req).await,
            Endpoint::AuthRefresh => gateway::refresh(app, req).await,
            Endpoint::AuthLogout => gateway::logout(app, req).await,
            Endpoint::AuthVerify => gateway::verify(app, req).await,
            Endpoint::HasuraWebhook => gateway::hasura_webhook(app, req).await,
            Endpoint::Jwks => Ok(gateway::jwks(app)),
        }
    };
    let (reply, failed_authentication) = match result {
        Ok(reply) => (reply, false),
        Err(problem) => (
            render(dialect, &problem),
            problem.counts_as_failed_authentication(),
        ),
    };
    if failed_authentication && ep.counts_client(req.via_trusted_proxy) {
        app.limits.auth_failed(req.client_ip).await;
    }
    app.metrics
        .dialect_requests
        .with_label_values(&[dialect.name(), status_label(reply.status)])
        .inc();
    reply
}

/// A problem in `dialect`'s own error format.
pub fn render(dialect: Dialect, problem: &Problem) -> Reply {
    // A gateway refusal in another dialect is that dialect's own problem.
    let converted;
    let problem = match problem {
        Problem::Gate(e) if dialect != Dialect::Gateway => {
            converted = Problem::from(e.clone());
            &converted
        }
        p => p,
    };
    let mut reply = match dialect {
        Dialect::Mottasl => mottasl::render(problem),
        Dialect::Amity => amity::render(problem),
        Dialect::Rapidly => rapidly::render(problem),
        Dialect::Gateway => gateway::render(problem),
    };
    // The gateway's own format writes Retry-After with the error already.
    if let (Problem::RateLimited(secs), false) = (problem, dialect == Dialect::Gateway) {
        reply.headers.push(("retry-after", secs.to_string()));
    }
    if let Problem::MethodNotAllowed(allow) = problem {
        reply.headers.push(("allow", (*allow).to_string()));
    }
    if let Problem::Unauthorized(_) | Problem::NoCredential(_) = problem {
        if dialect != Dialect::Amity && dialect != Dialect::Gateway {
            reply
                .headers
                .push(("www-authenticate", "Bearer".to_string()));
        }
    }
    reply
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gateway errors keep their meaning in a dialect (before: everything but a store outage
    /// became "internal error", and the gateway's own format turned 403 into 400).
    #[test]
    fn gateway_errors_keep_their_meaning_in_every_dialect() {
        assert_eq!(
            Problem::from(GateError::Forbidden("no".into())),
            Problem::Forbidden("no".into())
        );
        assert_eq!(
            Problem::from(GateError::RateLimited(7)),
            Problem::RateLimited(7)
        );
        assert_eq!(Problem::from(GateError::RequestTimeout), Problem::Timeout);
        assert!(matches!(
            Problem::from(GateError::SessionNotFound),
            Problem::Unauthorized(_)
        ));
        assert_eq!(Problem::from(GateError::Internal), Problem::Internal);
        for d in [
            Dialect::Mottasl,
            Dialect::Amity,
            Dialect::Rapidly,
            Dialect::Gateway,
        ] {
            let forbidden = render(d, &Problem::from(GateError::Forbidden("no".into())));
            assert_eq!(forbidden.status, 403, "{d:?}");
            let limited = render(d, &Problem::from(GateError::RateLimited(7)));
            assert_eq!(limited.status, 429, "{d:?}");
        }
    }
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn fields_name_the_offender() {
        let o = obj(json!({"a": "x", "n": 1, "e": "", "d": {"k": 2}}));
        let f = Fields::new(&o);
        let len = Len { min: 1, max: 3 };
        assert_eq!(f.string("a", len), Ok("x".into()));
        assert_eq!(f.string("zz", len), Err(field(&["zz"], FieldKind::Missing)));
        assert_eq!(
            f.string("n", len),
            Err(field(&["n"], FieldKind::Type("a string")))
        );
        assert_eq!(
            f.string("e", len),
            Err(field(&["e"], FieldKind::TooShort(1)))
        );
        let d = f.opt_object("d").ok().flatten();
        assert!(d.is_some_and(
            |d| d.opt_string("k", len) == Err(field(&["d", "k"], FieldKind::Type("a string")))
        ));
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let o = obj(json!({"s": "\u{e9}\u{e9}\u{e9}"}));
        assert!(Fields::new(&o).string("s", Len { min: 1, max: 3 }).is_ok());
    }

    #[test]
    fn json_content_type_is_required() {
        let mut h = HeaderMap::new();
        assert_eq!(require_json(&h), Err(Problem::ContentType));
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(require_json(&h), Ok(()));
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        assert_eq!(require_json(&h), Err(Problem::ContentType));
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(matches!(json_object(b"[1]"), Err(Problem::Malformed(_))));
        assert!(matches!(json_object(b"{"), Err(Problem::Malformed(_))));
        assert!(json_object(b"{}").is_ok());
    }

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param(Some("a=1&host_id=x%20y"), "host_id").as_deref(),
            Some("x y")
        );
        assert_eq!(query_param(Some("a=1"), "host_id"), None);
        assert_eq!(query_param(None, "host_id"), None);
    }
}
