//! Amity: `POST /api/v3/sessions` (v4 and v5 too: the TypeScript SDK posts to v5) with
//! `x-api-key`, plus the calls around it that existing clients make: secure-mode auth tokens
//! (`x-server-key`) and the chat network settings the SDK's login waits for. Errors are
//! `{"status": "error", "code": <Amity code>, "message": ...}`.

use super::{bearer, json_object, require_json, single_header, FieldKind, Fields, Len};
use super::{Problem, Reply, Request};
use crate::config::dialects::{find_credential, find_credential_by, AmityConfig, AmityNetwork};
use crate::error::GateError;
use crate::header_names::is_identity_value;
use crate::session::directory::UserRecord;
use crate::session::model::{now_unix, rfc3339, NewSession, Session};
use crate::session::{Authenticated, Issued};
use crate::App;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Amity's server error codes (as the SDK's `ServerError` enum names them).
mod code {
    pub const BAD_REQUEST: u32 = 400_000;
    pub const UNAUTHORIZED: u32 = 400_100;
    pub const FORBIDDEN: u32 = 400_300;
    pub const ITEM_NOT_FOUND: u32 = 400_400;
    pub const BUSINESS_ERROR: u32 = 500_000;
    /// The SDK's `ServerError` enum (6.35) has no rate-limit code; HTTP 429 is the signal,
    /// and this follows the 500000 pattern (status × 1000).
    pub const RATE_LIMITED: u32 = 429_000;
}

/// A validated session registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// `userId`: becomes `x-hasura-user-id`.
    pub user_id: String,
    /// `deviceId`: one live session per (user, device).
    pub device_id: String,
    /// `displayName`, when given (updates the user).
    pub display_name: Option<String>,
    /// `authToken` (secure mode).
    pub auth_token: Option<String>,
    /// `deviceInfo.kind`, when given.
    pub device_kind: Option<String>,
}

fn user_id_field(f: &Fields<'_>, name: &'static str) -> Result<String, Problem> {
    let user_id = f.string(name, Len { min: 1, max: 50 })?;
    // Any characters (the document's rule), but it becomes a header value upstream: no
    // control characters, and no leading or trailing space that a parser would trim.
    if !is_identity_value(&user_id) {
        return Err(f.invalid(
            name,
            FieldKind::Invalid(
                "must not hold control or invisible characters, nor start or end with a space"
                    .into(),
            ),
        ));
    }
    Ok(user_id)
}

/// Parses and validates a registration body (unknown members are ignored, as clients send
/// more than the document lists).
pub fn parse(body: &[u8]) -> Result<Register, Problem> {
    let obj = json_object(body)?;
    let f = Fields::new(&obj);
    let user_id = user_id_field(&f, "userId")?;
    let device_id = f.string("deviceId", Len { min: 1, max: 150 })?;
    let mut device_kind = None;
    if let Some(info) = f.opt_object("deviceInfo")? {
        device_kind = info.opt_string("kind", Len { min: 1, max: 50 })?;
        // Browsers send their user agent here, often longer than a phone's model name.
        info.opt_string("model", Len { min: 0, max: 1000 })?;
        info.opt_string("sdkVersion", Len { min: 0, max: 100 })?;
    }
    let display_name = f.opt_string("displayName", Len { min: 0, max: 100 })?;
    let auth_token = f.opt_string("authToken", Len { min: 1, max: 100 })?;
    Ok(Register {
        user_id,
        device_id,
        display_name,
        auth_token,
        device_kind,
    })
}

fn hmac(key: &[u8; 32], network_id: &str, user_id: &str, exp: i64) -> Option<Vec<u8>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    for part in [network_id, user_id] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac.update(&exp.to_be_bytes());
    Some(mac.finalize().into_bytes().to_vec())
}

/// A secure-mode auth token: expiry (16 hex digits) + HMAC-SHA256 over (network, user,
/// expiry) keyed by the server key's digest, truncated to 192 bits. 64 alphanumerics, so it
/// fits Amity's 100-character limit and needs no storage.
pub fn mint_auth_token(key: &[u8; 32], network_id: &str, user_id: &str, exp: i64) -> String {
    let mac = hmac(key, network_id, user_id, exp).unwrap_or_default();
    format!(
        "{:016x}{}",
        exp,
        hex::encode(mac.get(..24).unwrap_or_default())
    )
}

/// Whether `token` was minted for (network, user) and has not expired at `now`.
pub fn check_auth_token(
    key: &[u8; 32],
    network_id: &str,
    user_id: &str,
    token: &str,
    now: i64,
) -> bool {
    if token.len() != 64 || !token.is_ascii() {
        return false;
    }
    let (exp_hex, mac_hex) = token.split_at(16);
    let Ok(exp) = u64::from_str_radix(exp_hex, 16) else {
        return false;
    };
    let Ok(exp) = i64::try_from(exp) else {
        return false;
    };
    let (Ok(presented), Some(expected)) =
        (hex::decode(mac_hex), hmac(key, network_id, user_id, exp))
    else {
        return false;
    };
    let valid: bool = expected
        .get(..24)
        .unwrap_or_default()
        .ct_eq(&presented)
        .into();
    valid && now < exp
}

fn object_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The documented user object.
pub fn user_json(user: &UserRecord, user_id: &str, network: &AmityNetwork) -> Value {
    let display_name = user
        .profile
        .get("displayName")
        .and_then(Value::as_str)
        .unwrap_or(user_id);
    json!({
        "_id": user.id,
        "path": format!("{}/user/{}", network.network_id, user.id),
        "userId": user_id,
        "userInternalId": user.id,
        "userPublicId": user_id,
        "roles": [network.role],
        "permissions": [],
        "displayName": display_name,
        "profileHandle": user_id,
        "description": "",
        "avatarFileId": "",
        "avatarCustomUrl": "",
        "flagCount": 0,
        "hashFlag": {"bits": 0, "hashes": 0, "hash": []},
        "metadata": {},
        "isGlobalBan": false,
        "isBrand": false,
        "createdAt": rfc3339(user.created_at),
        "updatedAt": rfc3339(user.updated_at),
        "isDeleted": false,
    })
}

/// The 200 body of a registration.
pub fn render_success(
    access_token: &str,
    refresh_token: &str,
    session: &Session,
    user: &UserRecord,
    network: &AmityNetwork,
) -> Value {
    json!({
        "accessToken": access_token,
        "refreshToken": refresh_token,
        "issuedAt": rfc3339(session.created_at),
        "expiresAt": rfc3339(session.expires_at),
        "users": [user_json(user, &session.user_id, network)],
        "roles": [{
            "roleId": network.role,
            "displayName": network.role,
            "updatedAt": rfc3339(0),
            "createdAt": rfc3339(0),
            "permissions": [],
            "isDeleted": false,
        }],
        "files": [],
        "lastCachePurge": rfc3339(0),
    })
}

fn amity_config(app: &App) -> Result<&AmityConfig, Problem> {
    app.config.dialects.amity.as_ref().ok_or(Problem::Internal)
}

fn network<'a>(app: &'a App, req: &Request<'_>) -> Result<&'a AmityNetwork, Problem> {
    let cfg = amity_config(app)?;
    let key = single_header(req.headers, "x-api-key")
        .ok_or_else(|| Problem::NoCredential("an x-api-key header is required".into()))?;
    find_credential(&cfg.networks, key.as_bytes())
        .ok_or_else(|| Problem::Unauthorized("the API key is not valid".into()))
}

/// The caller's live Amity session, if its bearer is one (on `network_id`, when given); and
/// whether a bearer was presented and refused (a failed authentication by the common
/// policy, [`GateError::counts_as_failed_authentication`]).
async fn amity_session(
    app: &App,
    req: &Request<'_>,
    network_id: Option<&str>,
) -> Result<(Option<Arc<Authenticated>>, bool), Problem> {
    let Some(token) = bearer(req.headers) else {
        return Ok((None, false));
    };
    match app.sessions.authenticate(token).await {
        Ok(s) if s.source == "amity" && network_id.is_none_or(|n| s.business_id == n) => {
            Ok((Some(s), false))
        }
        Ok(_) => Ok((None, false)),
        Err(GateError::StoreUnavailable) => Err(Problem::Unavailable),
        Err(e) => Ok((None, e.counts_as_failed_authentication())),
    }
}

/// 401 in Amity's format, counted as a failed authentication only when a credential was
/// presented and refused.
fn unauthorized(refused: bool, message: &str) -> Problem {
    if refused {
        Problem::Unauthorized(message.to_string())
    } else {
        Problem::NoCredential(message.to_string())
    }
}

/// `POST /api/v3|v4|v5/sessions`: register (or renew) a session.
pub async fn register_session(app: &App, req: &Request<'_>) -> Result<Reply, Problem> {
    let network = network(app, req)?;
    app.limits
        .create_with("amity", &network.digest, network.session_rate_limit)
        .await?;
    require_json(req.headers)?;
    let reg = parse(req.body)?;
    // Renewal (the SDK posts again with its current access token): a live session of the
    // same user on this network stands in for the secure-mode auth token. Without one, an
    // Authorization header changes nothing: the API key and userId decide, as on first login.
    let (renewal, refused) = amity_session(app, req, Some(&network.network_id)).await?;
    let renewing = renewal.is_some_and(|s| s.user_id == reg.user_id);
    if let Some(server_key) = &network.server_key {
        if !renewing {
            let Some(auth_token) = &reg.auth_token else {
                return Err(unauthorized(
                    refused,
                    "this network is in secure mode: authToken is required",
                ));
            };
            let ok = check_auth_token(
                server_key.as_bytes(),
                &network.network_id,
                &reg.user_id,
                auth_token,
                now_unix(),
            );
            if !ok {
                return Err(Problem::Unauthorized(
                    "authToken is invalid or expired".into(),
                ));
            }
        }
    }
    let mut profile = Map::new();
    if let Some(name) = &reg.display_name {
        profile.insert("displayName".into(), name.clone().into());
    }
    let directory = app.sessions.directory();
    let user = directory
        .upsert_user(&network.network_id, &[&reg.user_id], profile, object_id)
        .await?;
    let mut new = NewSession::new(
        "amity",
        reg.user_id.clone(),
        network.network_id.clone(),
        network.default_host_id.clone(),
        network.role.clone(),
        network.ttl_secs,
    )
    // The SDK runs on the user's device: its user agent and network are the user's. (Mottasl
    // and Rapidly sessions are created by the customer's backend, whose would mislead.)
    .from_client(req.headers, req.client_ip);
    new.with_refresh_token = true;
    let issued = app.sessions.create(new).await?;
    let replace = amity_config(app)?.replace_device_sessions;
    if let Err(p) = replace_device_session(app, network, &reg, &issued, replace).await {
        // Undo: the client gets an error, so no session of this request may stay behind.
        let _ = app.sessions.revoke(&issued.session.session_id).await;
        return Err(p);
    }
    app.metrics
        .sessions_created
        .with_label_values(&["amity"])
        .inc();
    tracing::info!(
        dialect = "amity",
        network = %network.name,
        user_id = %reg.user_id,
        renewal = renewing,
        "session created"
    );
    let refresh = issued.refresh_token.as_deref().unwrap_or_default();
    Ok(Reply::json(
        200,
        &render_success(
            &issued.access_token,
            refresh,
            &issued.session,
            &user,
            network,
        ),
    ))
}

/// Records the device's newest session; with `dialects.amity.replace_device_sessions`,
/// registering again from the same device also ends that device's previous session (off by
/// default: the web SDK's tabs share one `deviceId`, and each tab logs in on its own).
async fn replace_device_session(
    app: &App,
    network: &AmityNetwork,
    reg: &Register,
    issued: &Issued,
    replace: bool,
) -> Result<(), Problem> {
    let ttl = Duration::from_secs(network.ttl_secs);
    let previous = app
        .sessions
        .directory()
        .bind_device(
            &network.network_id,
            &[&reg.user_id, &reg.device_id],
            &issued.session.session_id,
            ttl,
        )
        .await?;
    if let Some(previous) = previous.filter(|p| replace && *p != issued.session.session_id) {
        app.sessions.revoke(&previous).await?;
        app.metrics
            .sessions_revoked
            .with_label_values(&["amity"])
            .inc();
    }
    Ok(())
}

/// Which version of the auth-token API was called: they differ in where `userId` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenApi {
    /// `GET /api/v3/authentication/token?userId=`.
    V3,
    /// `POST /api/v4/authentication/token` with `{"userId"}`.
    V4,
}

/// `GET /api/v3/authentication/token?userId=` and `POST /api/v4/authentication/token`
/// (`{"userId"}`), authenticated by `x-server-key`: a secure-mode auth token, as text.
pub async fn auth_token(app: &App, api: TokenApi, req: &Request<'_>) -> Result<Reply, Problem> {
    let cfg = amity_config(app)?;
    let presented = single_header(req.headers, "x-server-key")
        .ok_or_else(|| Problem::NoCredential("an x-server-key header is required".into()))?;
    let network = find_credential_by(&cfg.networks, presented.as_bytes(), |n| {
        n.server_key.as_ref()
    })
    .ok_or_else(|| Problem::Unauthorized("the server key is not valid".into()))?;
    let key = network
        .server_key
        .as_ref()
        .ok_or(Problem::Internal)?
        .as_bytes();
    let user_id = if api == TokenApi::V4 {
        require_json(req.headers)?;
        let obj = json_object(req.body)?;
        user_id_field(&Fields::new(&obj), "userId")?
    } else {
        let mut q = Map::new();
        if let Some(u) = super::query_param(req.query, "userId") {
            q.insert("userId".into(), u.into());
        }
        user_id_field(&Fields::new(&q), "userId").map_err(|p| match p {
            Problem::Field(mut f) => {
                f.in_query = true;
                Problem::Field(f)
            }
            other => other,
        })?
    };
    let exp = now_unix().saturating_add(i64::try_from(cfg.auth_token_ttl_secs).unwrap_or(600));
    let token = mint_auth_token(key, &network.network_id, &user_id, exp);
    Ok(Reply {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        headers: Vec::new(),
        body: token.into_bytes(),
    })
}

/// `GET /api/v3/network-settings/chat` with the bearer access token: the network's chat
/// settings (the SDK's login fails without them).
pub async fn chat_settings(app: &App, req: &Request<'_>) -> Result<Reply, Problem> {
    let cfg = amity_config(app)?;
    let (session, refused) = amity_session(app, req, None).await?;
    let session =
        session.ok_or_else(|| unauthorized(refused, "a valid access token is required"))?;
    let network = cfg
        .networks
        .iter()
        .find(|n| n.network_id == session.business_id)
        .ok_or_else(|| Problem::NoCredential("the session's network is not configured".into()))?;
    Ok(Reply::json(200, &network.chat_settings))
}

/// Amity's error body.
pub fn render(problem: &Problem) -> Reply {
    let (status, code, message) = match problem {
        Problem::Malformed(m) => (400, code::BAD_REQUEST, m.clone()),
        Problem::ContentType => (
            400,
            code::BAD_REQUEST,
            "Content-Type must be application/json".into(),
        ),
        Problem::Field(f) => (400, code::BAD_REQUEST, f.describe()),
        Problem::Unauthorized(m) | Problem::NoCredential(m) => (401, code::UNAUTHORIZED, m.clone()),
        Problem::Gate(e) => return render(&Problem::from(e.clone())),
        Problem::Forbidden(m) => (403, code::FORBIDDEN, m.clone()),
        Problem::NotFound { message, .. } => (404, code::ITEM_NOT_FOUND, message.clone()),
        Problem::MethodNotAllowed(m) => (405, code::BAD_REQUEST, format!("use {m}")),
        Problem::PayloadTooLarge(n) => (
            413,
            code::BAD_REQUEST,
            format!("the request body is larger than {n} bytes"),
        ),
        Problem::Timeout => (
            408,
            code::BAD_REQUEST,
            "the request body was not received in time".into(),
        ),
        Problem::Unavailable => (
            503,
            code::BUSINESS_ERROR,
            "the session store is unavailable; nothing was created".into(),
        ),
        Problem::RateLimited(secs) => (
            429,
            code::RATE_LIMITED,
            format!("too many requests; retry after {secs} seconds"),
        ),
        Problem::Internal => (
            500,
            code::BUSINESS_ERROR,
            "internal error; nothing was created".into(),
        ),
    };
    Reply::json(
        status,
        &json!({"status": "error", "code": code, "message": message}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dialects::CredentialDigest;
    use crate::dialect::field;

    const REQUEST: &str = include_str!("../../tests/fixtures/dialects/amity/request.json");
    const RESPONSE: &str = include_str!("../../tests/fixtures/dialects/amity/response.json");

    fn network() -> AmityNetwork {
        AmityNetwork {
            name: "dev".into(),
            network_id: "dev-network".into(),
            digest: CredentialDigest::of(b"dev-amity-api-key"),
            server_key: None,
            default_host_id: "dev-host".into(),
            role: "user".into(),
            ttl_secs: 3600,
            chat_settings: json!({}),
            session_rate_limit: None,
        }
    }

    #[test]
    fn golden_request_to_response() -> Result<(), Box<dyn std::error::Error>> {
        let reg = parse(REQUEST.as_bytes())?;
        assert_eq!(reg.user_id, "user-1");
        assert_eq!(reg.device_id, "device-1");
        assert_eq!(reg.device_kind.as_deref(), Some("ios"));
        let mut profile = Map::new();
        profile.insert("displayName".into(), json!("User One"));
        let user = UserRecord {
            id: "65a1b2c3d4e5f60718293a4b".into(),
            created_at: 1_700_000_000,
            updated_at: 1_700_000_100,
            profile,
        };
        let session = Session {
            session_id: "s".into(),
            user_id: reg.user_id.clone(),
            business_id: "dev-network".into(),
            host_id: "dev-host".into(),
            role: "user".into(),
            created_at: 1_700_000_100,
            expires_at: 1_700_003_700,
            source: "amity".into(),
            external_id: None,
            user_gen: 0,
            business_gen: 0,
            user_agent: None,
            ip: None,
        };
        let got = render_success("access", "refresh", &session, &user, &network());
        let want: Value = serde_json::from_str(RESPONSE)?;
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn documented_limits() {
        let cases: [(Value, Problem); 7] = [
            (
                json!({"deviceId": "d"}),
                field(&["userId"], FieldKind::Missing),
            ),
            (
                json!({"userId": "x".repeat(51), "deviceId": "d"}),
                field(&["userId"], FieldKind::TooLong(50)),
            ),
            (
                json!({"userId": "u"}),
                field(&["deviceId"], FieldKind::Missing),
            ),
            (
                json!({"userId": "u", "deviceId": "d".repeat(151)}),
                field(&["deviceId"], FieldKind::TooLong(150)),
            ),
            (
                json!({"userId": "u", "deviceId": "d", "displayName": "n".repeat(101)}),
                field(&["displayName"], FieldKind::TooLong(100)),
            ),
            (
                json!({"userId": "u", "deviceId": "d", "authToken": ""}),
                field(&["authToken"], FieldKind::TooShort(1)),
            ),
            (
                json!({"userId": "u", "deviceId": "d", "deviceInfo": {"kind": 1}}),
                field(&["deviceInfo", "kind"], FieldKind::Type("a string")),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse(body.to_string().as_bytes()), Err(want), "{body}");
        }
        // Any characters but control ones; a browser's user agent as the model.
        for ok in [
            json!({"userId": "Zoë Łukasz 李", "deviceId": "d"}),
            json!({"userId": "a b@c", "deviceId": "d", "deviceInfo": {"model": "M".repeat(1000)}}),
        ] {
            assert!(parse(ok.to_string().as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            "a\u{7}b",
            " bob",
            "bob ",
            "bob\t",
            "a\nb",
            "bob\u{a0}",
            "\u{3000}bob",
            "bob\u{200b}",
            "\u{feff}bob",
            "\u{202e}evil",
            "a\u{2028}b",
            "bob\u{fffd}",
            "x\u{fffe}",
        ] {
            let body = json!({"userId": bad, "deviceId": "d"});
            assert!(
                matches!(parse(body.to_string().as_bytes()), Err(Problem::Field(f)) if f.field() == "userId"),
                "{bad:?}"
            );
        }
        let long =
            json!({"userId": "u", "deviceId": "d", "deviceInfo": {"model": "M".repeat(1001)}});
        assert_eq!(
            parse(long.to_string().as_bytes()),
            Err(field(&["deviceInfo", "model"], FieldKind::TooLong(1000)))
        );
        assert!(parse(
            json!({"userId": "x".repeat(50), "deviceId": "d".repeat(150), "displayName": ""})
                .to_string()
                .as_bytes()
        )
        .is_ok());
    }

    #[test]
    fn auth_tokens_bind_network_user_and_expiry() {
        let key = [7u8; 32];
        let t = mint_auth_token(&key, "net", "alice", 1_000);
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(check_auth_token(&key, "net", "alice", &t, 999));
        assert!(
            !check_auth_token(&key, "net", "alice", &t, 1_000),
            "expired"
        );
        assert!(!check_auth_token(&key, "net", "bob", &t, 999), "other user");
        assert!(
            !check_auth_token(&key, "net2", "alice", &t, 999),
            "other network"
        );
        assert!(
            !check_auth_token(&[8u8; 32], "net", "alice", &t, 999),
            "other key"
        );
        let mut forged = t.clone();
        forged.replace_range(0..16, &format!("{:016x}", 5_000));
        assert!(
            !check_auth_token(&key, "net", "alice", &forged, 999),
            "moved expiry"
        );
        assert!(!check_auth_token(&key, "net", "alice", "short", 0));
    }

    #[test]
    fn errors_use_amity_codes() {
        let body = |p: &Problem| -> Value {
            serde_json::from_slice(&render(p).body).unwrap_or(Value::Null)
        };
        assert_eq!(
            body(&Problem::Unauthorized("x".into())),
            json!({"status": "error", "code": 400100, "message": "x"})
        );
        assert_eq!(render(&Problem::Unauthorized("x".into())).status, 401);
        assert_eq!(
            body(&field(&["userId"], FieldKind::Missing))["code"],
            400000
        );
        assert_eq!(render(&Problem::Forbidden("x".into())).status, 403);
        assert_eq!(render(&Problem::PayloadTooLarge(1)).status, 413);
        assert_eq!(body(&Problem::Unavailable)["code"], 500000);
    }
}
