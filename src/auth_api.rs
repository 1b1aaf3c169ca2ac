//! The gateway's own API on the proxy listener (not a provider's dialect): `POST
//! /auth/refresh` (rotate a refresh token), `POST /auth/logout` (end the bearer's session),
//! `/auth/verify` (forward-auth), `/auth/hasura` (Hasura's auth webhook) and the JWKS of
//! minted Hasura JWTs. Errors use the gateway's format, `{"error": <code>, "message": ...}`,
//! as everywhere outside the dialects. It shares the dialects' request, reply and
//! [`Problem`] types and field readers.

use crate::dialect::{bearer, json_object, require_json, single_header, Fields, Len};
use crate::dialect::{Problem, Reply, Request};
use crate::error::GateError;
use crate::hasura::Authorization;
use crate::session::model::rfc3339;
use crate::session::model::Session;
use crate::session::{Authenticated, Listed};
use crate::App;
use serde_json::json;
use serde_json::Value;
use std::sync::Arc;

/// A [`GateError`] as a reply (status, JSON body, RFC 6750 challenge).
pub fn error_reply(err: &GateError) -> Reply {
    let r = err.response();
    Reply {
        status: r.status,
        content_type: "application/json",
        headers: r.headers(),
        body: err.body(),
    }
}

fn record_failure(app: &App, err: &GateError) {
    if let Some(reason) = err.auth_failure_reason() {
        app.metrics.auth_failures.with_label_values(&[reason]).inc();
    }
}

/// `POST /auth/refresh` `{"refresh_token": ...}` → 200 `{"access_token", "refresh_token",
/// "expires_at"}`; a spent token is reuse: 401 and the session is revoked.
pub async fn refresh(app: &App, req: &Request<'_>) -> Result<Reply, Problem> {
    require_json(req.headers)?;
    let obj = json_object(req.body)?;
    let token = Fields::new(&obj).string("refresh_token", Len { min: 1, max: 256 })?;
    // A refresh counts against its session only once its secret verifies: the session id
    // is the token's visible prefix, and guesses must not use up the owner's refreshes.
    // A guess is a 401, which counts against the client's address instead. A spent token is
    // never limited: its reuse must reach `refresh` and revoke the session, however busy a
    // thief keeps the session's limit.
    // A retry within the grace is not limited either: it only returns the one successor
    // that exists, and a client held at its limit past the grace would be logged out.
    match app.sessions.verify_refresh(&token).await {
        Ok((session_id, crate::session::store::Rotation::Rotated)) => {
            app.limits.refresh_of(session_id).await?
        }
        Ok(_) => {}
        Err(e) => {
            record_failure(app, &e);
            return Err(Problem::Gate(e));
        }
    }
    match app.sessions.refresh(&token).await {
        Ok(r) => Ok(Reply::json(
            200,
            &json!({
                "access_token": r.access_token,
                "refresh_token": r.refresh_token,
                "expires_at": rfc3339(r.expires_at),
            }),
        )),
        Err(e) => {
            if matches!(e, GateError::RefreshTokenReused) {
                app.metrics
                    .sessions_revoked
                    .with_label_values(&["refresh_reuse"])
                    .inc();
                tracing::warn!("refresh token reuse: session revoked");
            }
            record_failure(app, &e);
            Err(Problem::Gate(e))
        }
    }
}

/// `POST /auth/logout` with the bearer access token → 204; the session is gone.
pub async fn logout(app: &App, req: &Request<'_>) -> Result<Reply, Problem> {
    let Some(token) = bearer(req.headers) else {
        let e = GateError::MissingToken;
        record_failure(app, &e);
        return Err(Problem::Gate(e));
    };
    let session = match app.sessions.authenticate(token).await {
        Ok(s) => s,
        Err(e) => {
            record_failure(app, &e);
            return Err(Problem::Gate(e));
        }
    };
    match app.sessions.revoke(&session.session_id).await {
        Ok(_) => {
            app.metrics
                .sessions_revoked
                .with_label_values(&["logout"])
                .inc();
            Ok(Reply {
                status: 204,
                content_type: "application/json",
                headers: Vec::new(),
                body: Vec::new(),
            })
        }
        Err(e) => Err(Problem::Gate(e)),
    }
}

/// The bearer's live session; a refused credential counts like at `/auth/logout`.
async fn caller(app: &App, req: &Request<'_>) -> Result<Arc<Authenticated>, Problem> {
    let Some(token) = bearer(req.headers) else {
        let e = GateError::MissingToken;
        record_failure(app, &e);
        return Err(Problem::Gate(e));
    };
    app.sessions.authenticate(token).await.map_err(|e| {
        record_failure(app, &e);
        Problem::Gate(e)
    })
}

/// The caller's own sessions: same user and same business (the same user id in another
/// business, an Amity network say, is someone else).
async fn own_list(app: &App, me: &Session) -> Result<Vec<Listed>, Problem> {
    let all = app
        .sessions
        .list_user(&me.user_id)
        .await
        .map_err(Problem::Gate)?;
    Ok(all
        .into_iter()
        .filter(|l| l.session.business_id == me.business_id)
        .collect())
}

/// One listed session as JSON; `current` when `me` is given.
pub fn listed_json(l: &Listed, me: Option<&str>) -> Value {
    let s = &l.session;
    let mut v = json!({
        "session_id": s.session_id,
        "source": s.source,
        "created_at": rfc3339(s.created_at),
        "expires_at": rfc3339(s.expires_at),
        "last_seen_at": l.last_seen_at.map(rfc3339),
        "user_agent": s.user_agent,
        "ip": s.ip,
    });
    if let (Some(me), Value::Object(m)) = (me, &mut v) {
        m.insert("current".into(), Value::Bool(s.session_id == me));
    }
    v
}

/// `GET /auth/sessions`: the bearer's live sessions, newest first. `DELETE /auth/sessions`:
/// ends all of them but the current one ("sign out other devices"), on every replica.
pub async fn own_sessions(app: &App, req: &Request<'_>) -> Result<Reply, Problem> {
    let me = caller(app, req).await?;
    let mine = own_list(app, &me).await?;
    if *req.method == http::Method::GET {
        let list: Vec<Value> = mine
            .iter()
            .map(|l| listed_json(l, Some(&me.session_id)))
            .collect();
        return Ok(Reply::json(200, &json!({ "sessions": list })));
    }
    let mut ended = 0;
    for l in mine
        .iter()
        .filter(|l| l.session.session_id != me.session_id)
    {
        if app
            .sessions
            .end_listed(&l.session)
            .await
            .map_err(Problem::Gate)?
        {
            ended += 1;
        }
    }
    app.metrics
        .sessions_revoked
        .with_label_values(&["self_service"])
        .inc_by(ended);
    Ok(empty(204, Vec::new()))
}

/// `DELETE /auth/sessions/{session_id}`: ends one of the bearer's own sessions; anyone
/// else's (or an unknown one) is 404 alike, so ids cannot be probed.
pub async fn end_own_session(app: &App, req: &Request<'_>) -> Result<Reply, Problem> {
    let me = caller(app, req).await?;
    let id = req.path.strip_prefix("/auth/sessions/").unwrap_or_default();
    let not_found = || Problem::Gate(GateError::NotFound);
    if !crate::session::model::is_valid_session_id(id) {
        return Err(not_found());
    }
    // One lookup, not the whole list: the session must be live and the caller's own.
    let target = app.sessions.live(id).await.map_err(Problem::Gate)?;
    let Some(target) =
        target.filter(|t| t.user_id == me.user_id && t.business_id == me.business_id)
    else {
        return Err(not_found());
    };
    if app
        .sessions
        .end_listed(&target)
        .await
        .map_err(Problem::Gate)?
    {
        app.metrics
            .sessions_revoked
            .with_label_values(&["self_service"])
            .inc();
    }
    Ok(empty(204, Vec::new()))
}

/// `/auth/verify` (any method): forward-auth. 200 with the identity as response headers
/// (`X-Hasura-User-Id`, `X-Hasura-Role`, `X-Hasura-Business-Id`, `X-Host-Id`; in jwt mode
/// also `Authorization: Bearer <hasura jwt>`) for a live session, 401 with
/// `WWW-Authenticate` otherwise. A request carrying identity headers of its own is refused
/// with 403: an ingress forwards client headers it was not told to replace. The original
/// URI is read from the one header named in `forward_auth.original_uri_header`, only when
/// the socket's peer is one of `forward_auth.trusted_peers`, and only to answer 200 without
/// identity for a public path: a proxy passes the client's own headers to the auth
/// subrequest, so any other header could have been written by the client.
pub async fn verify(app: &App, req: &Request<'_>) -> Result<Reply, Problem> {
    if req
        .headers
        .keys()
        .any(|k| crate::headers::is_identity_header(k.as_str()))
    {
        return Err(Problem::Gate(GateError::Forbidden(
            "identity headers are not accepted from clients".into(),
        )));
    }
    let trusted_peer = app.config.forward_auth.is_trusted_peer(req.peer);
    if trusted_peer && original_path_is_public(app, req) {
        return Ok(empty(200, Vec::new()));
    }
    let Some(token) = bearer(req.headers) else {
        return Err(Problem::Gate(GateError::MissingToken));
    };
    let session = match app.sessions.authenticate(token).await {
        Ok(s) => s,
        Err(e) => {
            record_failure(app, &e);
            return Err(Problem::Gate(e));
        }
    };
    let identity = app
        .hasura
        .identity_for(&session, token)
        .map_err(Problem::Gate)?;
    let mut headers: Vec<(&'static str, String)> = identity
        .claims()
        .iter()
        .map(|(n, v)| (*n, (*v).to_string()))
        .collect();
    // The minted JWT goes only to the proxy that asked (which forwards it to Hasura): handed
    // to a client, it would outlive a revocation at Hasura until it expires. The client's own
    // token is never echoed.
    if let (Authorization::Minted(m), true) = (&identity.authorization, trusted_peer) {
        headers.push(("authorization", format!("Bearer {}", m.token)));
    }
    Ok(empty(200, headers))
}

/// Whether the configured original-URI header names a public path, judged as the proxy
/// will route it (see [`crate::path::public_as_proxied`]).
fn original_path_is_public(app: &App, req: &Request<'_>) -> bool {
    let Some(name) = &app.config.forward_auth.original_uri_header else {
        return false;
    };
    single_header(req.headers, name.as_str())
        .and_then(crate::path::original_uri_path)
        .is_some_and(|path| crate::path::public_as_proxied(path, &app.config.proxy.public_prefixes))
}

fn empty(status: u16, headers: Vec<(&'static str, String)>) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        headers,
        body: Vec::new(),
    }
}

/// `GET|POST /auth/hasura`: Hasura's auth webhook. GET reads the `Authorization` header
/// Hasura forwards; POST reads it from the body's `headers` object. 200 with the session
/// variables and `Cache-Control: max-age` (never past the session), or 401.
pub async fn hasura_webhook(app: &App, req: &Request<'_>) -> Result<Reply, Problem> {
    let authorization = if *req.method == http::Method::POST {
        let body: serde_json::Value = serde_json::from_slice(req.body)
            .map_err(|e| Problem::Malformed(format!("malformed JSON: {e}")))?;
        crate::hasura::webhook_authorization(&body).map(str::to_string)
    } else {
        single_header(req.headers, "authorization").map(str::to_string)
    };
    let Some(token) = authorization
        .as_deref()
        .and_then(|a| crate::auth::bearer_token(a.as_bytes()))
    else {
        return Err(Problem::Gate(GateError::MissingToken));
    };
    match app.sessions.authenticate(token).await {
        Ok(s) => Ok(Reply::json(
            200,
            &crate::hasura::webhook_body(&s, app.hasura.webhook_max_age(&s)),
        )),
        Err(e) => {
            record_failure(app, &e);
            Err(Problem::Gate(e))
        }
    }
}

/// `GET /.well-known/jwks.json`: the public keys of minted Hasura JWTs.
pub fn jwks(app: &App) -> Reply {
    Reply {
        status: 200,
        content_type: "application/json",
        headers: vec![(
            "cache-control",
            format!("public, max-age={}", app.hasura.jwks_max_age()),
        )],
        body: app.hasura.jwks().to_vec(),
    }
}

/// Body and method problems, in the gateway's format.
pub fn render(problem: &Problem) -> Reply {
    let err = match problem {
        Problem::Malformed(m) => GateError::BadRequest(m.clone()),
        Problem::ContentType => {
            GateError::BadRequest("Content-Type must be application/json".into())
        }
        Problem::Field(f) => GateError::BadRequest(f.describe()),
        Problem::Unauthorized(_) | Problem::NoCredential(_) => GateError::MissingToken,
        Problem::Gate(e) => e.clone(),
        Problem::Forbidden(m) => GateError::Forbidden(m.clone()),
        Problem::NotFound { .. } => GateError::NotFound,
        Problem::PayloadTooLarge(n) => GateError::PayloadTooLarge(*n),
        Problem::MethodNotAllowed(_) => GateError::MethodNotAllowed,
        Problem::Timeout => GateError::RequestTimeout,
        Problem::Unavailable => GateError::StoreUnavailable,
        Problem::RateLimited(secs) => GateError::RateLimited(*secs),
        Problem::Internal => GateError::Internal,
    };
    error_reply(&err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway's own format keeps every refusal's status (before: 403 became 400).
    #[test]
    fn refusals_keep_their_status_in_the_gateway_format() {
        let forbidden = render(&Problem::Gate(GateError::Forbidden("no".into())));
        assert_eq!(forbidden.status, 403);
        let limited = render(&Problem::from(GateError::RateLimited(7)));
        assert_eq!(limited.status, 429);
        assert!(limited
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("retry-after") && v == "7"));
        let missing = render(&Problem::NoCredential("none".into()));
        assert_eq!(missing.status, 401);
    }
}
