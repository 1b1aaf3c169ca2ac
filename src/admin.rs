//! The admin listener: health, readiness, metrics and the admin API.

use crate::config::dialects::parse_uuid4;
use crate::dialect::{rapidly, Problem};
use crate::error::GateError;
use crate::headers::is_header_safe;
use crate::session::model::{is_valid_session_id, rfc3339, NewSession, Session};
use crate::App;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The admin HTTP application.
pub struct AdminApp {
    app: Arc<App>,
}

impl AdminApp {
    /// Serves the given application state.
    pub fn new(app: Arc<App>) -> Self {
        AdminApp { app }
    }
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type)
        .header("cache-control", "no-store");
    if !body.is_empty() || status != 204 {
        b = b.header("content-length", body.len());
    }
    b.body(body).unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_response(status: u16, value: &Value) -> Response<Vec<u8>> {
    respond(status, "application/json", value.to_string().into_bytes())
}

fn error_response(err: &GateError) -> Response<Vec<u8>> {
    let r = err.response();
    let mut resp = respond(r.status, "application/json", err.body());
    for (name, value) in r.headers() {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// The JSON shape of a session on the admin API; never includes a token.
fn session_json(s: &Session) -> Value {
    json!({
        "session_id": s.session_id,
        "user_id": s.user_id,
        "business_id": s.business_id,
        "host_id": s.host_id,
        "role": s.role,
        "created_at": rfc3339(s.created_at),
        "expires_at": rfc3339(s.expires_at),
    })
}

/// Reads the request body up to `limit` bytes, whole within `due`
/// (`connections.body_read_timeout_ms`, as on the proxy listener): 408 after it.
async fn read_body(
    http: &mut ServerSession,
    limit: usize,
    due: Duration,
) -> Result<Vec<u8>, GateError> {
    tokio::time::timeout(due, read_body_unbounded(http, limit))
        .await
        .unwrap_or(Err(GateError::RequestTimeout))
}

async fn read_body_unbounded(http: &mut ServerSession, limit: usize) -> Result<Vec<u8>, GateError> {
    if let Some(len) = http.get_header("content-length") {
        let declared = len
            .to_str()
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| GateError::BadRequest("invalid Content-Length".into()))?;
        if declared > limit {
            return Err(GateError::PayloadTooLarge(limit));
        }
    }
    let mut body = Vec::new();
    loop {
        match http.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(GateError::PayloadTooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(GateError::BadRequest(
                    "could not read the request body".into(),
                ))
            }
        }
    }
}

fn string_field(obj: &Map<String, Value>, field: &'static str) -> Result<String, GateError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(GateError::InvalidField {
            field,
            message: "is required".into(),
        }),
        Some(Value::String(s)) if s.len() > 256 => Err(GateError::InvalidField {
            field,
            message: "must be at most 256 characters".into(),
        }),
        Some(Value::String(s)) if is_header_safe(s) => Ok(s.clone()),
        Some(Value::String(_)) => Err(GateError::InvalidField {
            field,
            message: "must be non-empty printable ASCII without leading or trailing spaces".into(),
        }),
        Some(_) => Err(GateError::InvalidField {
            field,
            message: "must be a string".into(),
        }),
    }
}

/// Parses a `POST /admin/sessions` body into the common new-session model.
pub fn parse_new_session(
    body: &[u8],
    default_ttl: u64,
    max_ttl: u64,
) -> Result<NewSession, GateError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| GateError::BadRequest(format!("malformed JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(GateError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    const KNOWN: &[&str] = &["user_id", "business_id", "host_id", "role", "ttl_seconds"];
    if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(GateError::BadRequest(format!("unknown field `{unknown}`")));
    }
    let user_id = string_field(&obj, "user_id")?;
    let business_id = string_field(&obj, "business_id")?;
    let host_id = string_field(&obj, "host_id")?;
    let role = string_field(&obj, "role")?;
    let ttl_secs = match obj.get("ttl_seconds") {
        None | Some(Value::Null) => default_ttl,
        Some(v) => match v.as_u64() {
            Some(t) if (1..=max_ttl).contains(&t) => t,
            _ => {
                return Err(GateError::InvalidField {
                    field: "ttl_seconds",
                    message: format!("must be an integer from 1 to {max_ttl}"),
                })
            }
        },
    };
    Ok(NewSession::new(
        "admin",
        user_id,
        business_id,
        host_id,
        role,
        ttl_secs,
    ))
}

impl AdminApp {
    async fn route(&self, http: &mut ServerSession) -> Result<Response<Vec<u8>>, GateError> {
        let method = http.req_header().method.clone();
        let path = http.req_header().uri.path().to_string();
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => Ok(json_response(200, &json!({"status": "ok"}))),
            (Method::GET, "/readyz") => Ok(self.ready().await),
            (Method::GET, "/metrics") => Ok(respond(
                200,
                "text/plain; version=0.0.4",
                self.app.metrics.render(),
            )),
            (_, "/healthz" | "/readyz" | "/metrics") => Err(GateError::MethodNotAllowed),
            (method, p) if p == "/admin" || p.starts_with("/admin/") => {
                self.authorize(http)?;
                self.admin_api(http, method, p).await
            }
            _ => Err(GateError::NotFound),
        }
    }

    async fn ready(&self) -> Response<Vec<u8>> {
        let probe =
            tokio::time::timeout(Duration::from_secs(2), self.app.sessions.cache().ping()).await;
        let health = self.app.sessions.cache().health();
        let events = if health.subscribed {
            "subscribed"
        } else {
            // Ready all the same: the cache is bypassed until resubscribed, so nothing
            // revoked is served; requests just cost a store round trip.
            "resubscribing"
        };
        match probe {
            Ok(Ok(())) => self.ready_store(events).await,
            Ok(Err(_)) | Err(_) => {
                self.app.metrics.store_up.set(0);
                let degraded_for = health.degraded_for.map_or(0, |d| d.as_secs());
                json_response(
                    503,
                    &json!({
                        "status": "degraded",
                        "store": "down",
                        "degraded_for_seconds": degraded_for,
                        "stale_window_seconds": self.app.config.cache.stale_window.as_secs(),
                    }),
                )
            }
        }
    }

    /// Readiness of a store that answers: its settings (Redis) are read on every probe, so a
    /// failover to a Redis that may evict revocations makes the replica unready (unless
    /// `store.allow_eviction`), and the detail says what was found.
    async fn ready_store(&self, events: &str) -> Response<Vec<u8>> {
        let allow = matches!(
            self.app.config.store,
            crate::config::StoreConfig::Redis {
                allow_eviction: true,
                ..
            }
        );
        let read = tokio::time::timeout(
            Duration::from_secs(2),
            self.app.sessions.cache().store_settings(),
        )
        .await;
        let settings = match read {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => {
                return json_response(
                    200,
                    &json!({"status": "ready", "store": "up", "events": events}),
                )
            }
            Ok(Err(_)) | Err(_) => crate::session::store::StoreSettings::default(),
        };
        let detail = json!({
            "maxmemory_policy": settings.maxmemory_policy,
            "appendonly": settings.appendonly,
            "appendfsync": settings.appendfsync,
        });
        match crate::assess_store(&settings, allow, &self.app.metrics) {
            Ok(()) => json_response(
                200,
                &json!({"status": "ready", "store": "up", "events": events, "redis": detail}),
            ),
            Err(why) => json_response(
                503,
                &json!({"status": "unsafe_store", "store": "up", "events": events,
                        "redis": detail, "reason": why}),
            ),
        }
    }

    fn authorize(&self, http: &ServerSession) -> Result<(), GateError> {
        let presented = http
            .get_header(http::header::AUTHORIZATION)
            .and_then(|v| crate::auth::bearer_token(v.as_bytes()));
        match presented {
            Some(t) if self.app.config.admin.token.matches(t.as_bytes()) => Ok(()),
            _ => Err(GateError::AdminUnauthorized),
        }
    }

    async fn admin_api(
        &self,
        http: &mut ServerSession,
        method: Method,
        path: &str,
    ) -> Result<Response<Vec<u8>>, GateError> {
        let sessions = &self.app.sessions;
        if let Some(id) = path.strip_prefix("/admin/customers/") {
            return self.customers(http, method, id).await;
        }
        if let Some(rest) = path.strip_prefix("/admin/users/") {
            let user = scope_id(rest)?;
            if method == Method::GET {
                // Every live session of the user id, in every business.
                let list: Vec<Value> = sessions
                    .list_user(&user)
                    .await?
                    .iter()
                    .map(|l| {
                        let mut v = crate::auth_api::listed_json(l, None);
                        if let Value::Object(m) = &mut v {
                            m.insert("user_id".into(), l.session.user_id.clone().into());
                            m.insert("business_id".into(), l.session.business_id.clone().into());
                            m.insert("host_id".into(), l.session.host_id.clone().into());
                            m.insert("role".into(), l.session.role.clone().into());
                        }
                        v
                    })
                    .collect();
                return Ok(json_response(200, &json!({ "sessions": list })));
            }
            if method != Method::DELETE {
                return Err(GateError::MethodNotAllowed);
            }
            sessions.revoke_user(&user).await?;
            self.app
                .metrics
                .sessions_revoked
                .with_label_values(&["revoke_user"])
                .inc();
            tracing::info!(user_id = %user, "all sessions of a user revoked");
            return Ok(respond(204, "application/json", Vec::new()));
        }
        if let Some(rest) = path.strip_prefix("/admin/businesses/") {
            let business = scope_id(rest)?;
            if method != Method::DELETE {
                return Err(GateError::MethodNotAllowed);
            }
            sessions.revoke_business(&business).await?;
            self.app
                .metrics
                .sessions_revoked
                .with_label_values(&["revoke_business"])
                .inc();
            tracing::info!(business_id = %business, "all sessions of a business revoked");
            return Ok(respond(204, "application/json", Vec::new()));
        }
        if path == "/admin/sessions" {
            if method != Method::POST {
                return Err(GateError::MethodNotAllowed);
            }
            let tokens = &self.app.config.tokens;
            let body = read_body(
                http,
                self.app.config.admin.max_body_bytes,
                self.app.config.connections.body_read_timeout,
            )
            .await?;
            let mut new = parse_new_session(
                &body,
                tokens.default_ttl.as_secs(),
                tokens.max_ttl.as_secs(),
            )?;
            new.with_refresh_token = true;
            let issued = sessions.create(new).await?;
            self.app
                .metrics
                .sessions_created
                .with_label_values(&["admin"])
                .inc();
            tracing::info!(user_id = %issued.session.user_id, "session created via admin API");
            return Ok(json_response(
                201,
                &json!({
                    "session_id": issued.session.session_id,
                    "access_token": issued.access_token,
                    "refresh_token": issued.refresh_token,
                    "expires_at": rfc3339(issued.session.expires_at),
                }),
            ));
        }
        let Some(id) = path.strip_prefix("/admin/sessions/") else {
            return Err(GateError::NotFound);
        };
        if !is_valid_session_id(id) {
            return Err(GateError::NotFound);
        }
        match method {
            Method::GET => match sessions.cache().get_uncached(id).await {
                Ok(Some(s)) => Ok(json_response(200, &session_json(&s))),
                Ok(None) => Err(GateError::NotFound),
                Err(_) => Err(GateError::StoreUnavailable),
            },
            Method::DELETE => {
                if sessions.revoke(id).await? {
                    self.app
                        .metrics
                        .sessions_revoked
                        .with_label_values(&["admin"])
                        .inc();
                    Ok(respond(204, "application/json", Vec::new()))
                } else {
                    Err(GateError::NotFound)
                }
            }
            _ => Err(GateError::MethodNotAllowed),
        }
    }
}

/// The id in `<id>/sessions` (percent-decoded); ids are header-safe, like the sessions'.
fn scope_id(rest: &str) -> Result<String, GateError> {
    let raw = rest.strip_suffix("/sessions").ok_or(GateError::NotFound)?;
    let id = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| GateError::NotFound)?;
    // Any id a session can carry (Amity's are UTF-8), percent-encoded in the path.
    if raw.contains('/') || !crate::header_names::is_identity_value(&id) || id.len() > 256 {
        return Err(GateError::NotFound);
    }
    Ok(id.into_owned())
}

/// A dialect problem on the admin API, in the admin API's error format.
fn admin_error(p: Problem) -> GateError {
    match p {
        Problem::Unavailable => GateError::StoreUnavailable,
        Problem::Internal => GateError::Internal,
        other => GateError::BadRequest(other.to_string()),
    }
}

impl AdminApp {
    /// `PUT|GET|DELETE /admin/customers/{id}`: Rapidly customers (soft delete).
    async fn customers(
        &self,
        http: &mut ServerSession,
        method: Method,
        id: &str,
    ) -> Result<Response<Vec<u8>>, GateError> {
        let Some(cfg) = &self.app.config.dialects.rapidly else {
            return Err(GateError::NotFound);
        };
        let Some(id) = parse_uuid4(id) else {
            return Err(GateError::NotFound);
        };
        match method {
            Method::PUT => {
                let body = read_body(
                    http,
                    self.app.config.admin.max_body_bytes,
                    self.app.config.connections.body_read_timeout,
                )
                .await?;
                let customer =
                    rapidly::parse_customer(&id, &body, &cfg.workspaces).map_err(admin_error)?;
                let (customer, created) = rapidly::put_customer(&self.app, customer)
                    .await
                    .map_err(admin_error)?;
                let value = serde_json::to_value(&customer).map_err(|_| GateError::Internal)?;
                Ok(json_response(if created { 201 } else { 200 }, &value))
            }
            Method::GET => match rapidly::find_customer(&self.app, &id)
                .await
                .map_err(admin_error)?
            {
                Some(c) => {
                    let value = serde_json::to_value(&c).map_err(|_| GateError::Internal)?;
                    Ok(json_response(200, &value))
                }
                None => Err(GateError::NotFound),
            },
            Method::DELETE => match rapidly::delete_customer(&self.app, &id)
                .await
                .map_err(admin_error)?
            {
                Some(_) => Ok(respond(204, "application/json", Vec::new())),
                None => Err(GateError::NotFound),
            },
            _ => Err(GateError::MethodNotAllowed),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, http: &mut ServerSession) -> Response<Vec<u8>> {
        match self.route(http).await {
            Ok(r) => r,
            Err(e) => {
                // The body may be unread; do not reuse the connection after an error.
                http.set_keepalive(None);
                error_response(&e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<NewSession, GateError> {
        parse_new_session(body.as_bytes(), 3600, 86_400)
    }

    #[test]
    fn valid_body() -> Result<(), GateError> {
        let s = parse(
            r#"{"user_id":"u","business_id":"b","host_id":"h","role":"user","ttl_seconds":60}"#,
        )?;
        assert_eq!(s.ttl_secs, 60);
        let s = parse(r#"{"user_id":"u","business_id":"b","host_id":"h","role":"user"}"#)?;
        assert_eq!(s.ttl_secs, 3600);
        Ok(())
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"business_id":"b","host_id":"h","role":"r"}"#, "user_id"),
            (
                r#"{"user_id":1,"business_id":"b","host_id":"h","role":"r"}"#,
                "user_id",
            ),
            (
                r#"{"user_id":"u","business_id":"","host_id":"h","role":"r"}"#,
                "business_id",
            ),
            (
                r#"{"user_id":"u","business_id":"b","host_id":"a\nb","role":"r"}"#,
                "host_id",
            ),
            (
                r#"{"user_id":"u","business_id":"b","host_id":"h","role":"r","ttl_seconds":0}"#,
                "ttl_seconds",
            ),
            (
                r#"{"user_id":"u","business_id":"b","host_id":"h","role":"r","ttl_seconds":"9"}"#,
                "ttl_seconds",
            ),
            (
                r#"{"user_id":"u","business_id":"b","host_id":"h","role":"r","ttl_seconds":999999}"#,
                "ttl_seconds",
            ),
        ];
        for (body, field) in cases {
            match parse(body) {
                Err(e @ GateError::InvalidField { .. }) => {
                    assert!(e.to_string().contains(field), "{body}: {e}")
                }
                other => panic!("{body}: expected error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_json_is_bad_request() {
        assert!(matches!(parse("{"), Err(GateError::BadRequest(_))));
        assert!(matches!(parse("[]"), Err(GateError::BadRequest(_))));
        assert!(matches!(
            parse(r#"{"user_id":"u","extra":1}"#),
            Err(GateError::BadRequest(_))
        ));
    }
}
