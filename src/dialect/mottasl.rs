//! Mottasl: `POST /v1/app/user.new.session?host_id=...` with `Authorization: Bearer
//! <integration token>`. Seven required strings in, the identity headers the upstream will
//! see (and the user's details) out; errors are `{"success": false, "message": ...}`.

use super::{bearer, field, json_object, query_field, require_json, FieldKind, Fields, Len};
use super::{Problem, Reply, Request};
use crate::config::dialects::{find_credential, MottaslCredential};
use crate::headers::is_header_safe;
use crate::session::directory::UserRecord;
use crate::session::model::NewSession;
use crate::App;
use serde_json::{json, Map, Value};

/// A validated `user.new.session` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUserSession {
    /// Business the session is for.
    pub business_id: String,
    /// Platform the user comes from (with `platform_id`, the user's identity).
    pub platform_type: String,
    /// The user's id on that platform.
    pub platform_id: String,
    /// Role granted.
    pub role: String,
    /// `user_details.name`.
    pub profile_name: String,
    /// `user_details.display_name`.
    pub display_name: String,
    /// `user_details.image`.
    pub profile_image_url: String,
    /// `?host_id=`, if given.
    pub host_id: Option<String>,
}

/// Parses and validates the body and query (no credential involved).
pub fn parse(query: Option<&str>, body: &[u8]) -> Result<NewUserSession, Problem> {
    let obj = json_object(body)?;
    let f = Fields::new(&obj);
    // Named one by one, in the document's order: the first bad field is the one reported.
    let text = Len { min: 1, max: 256 };
    let business_id = f.string("business_id", text)?;
    let platform_type = f.string("platform_type", text)?;
    let platform_id = f.string("platform_id", text)?;
    let role = f.string("role", text)?;
    // Required but may be empty (a user without a name or picture yet); the ids may not.
    let profile_name = f.string("profile_name", Len { min: 0, max: 256 })?;
    let display_name = f.string("display_name", Len { min: 0, max: 256 })?;
    let profile_image_url = f.string("profile_image_url", Len { min: 0, max: 2048 })?;
    // These two become headers upstream, so they must be header-safe.
    for (value, name) in [(&business_id, "business_id"), (&role, "role")] {
        if !is_header_safe(value) {
            return Err(field(
                &[name],
                FieldKind::Invalid(
                    "must be printable ASCII without leading or trailing spaces".into(),
                ),
            ));
        }
    }
    let host_id = match super::query_param(query, "host_id") {
        None => None,
        Some(h) if h.is_empty() => {
            return Err(query_field("host_id", FieldKind::TooShort(1)));
        }
        Some(h) if h.len() > 256 => {
            return Err(query_field("host_id", FieldKind::TooLong(256)));
        }
        Some(h) if !is_header_safe(&h) => {
            return Err(query_field(
                "host_id",
                FieldKind::Invalid("must be printable ASCII without spaces around it".into()),
            ));
        }
        Some(h) => Some(h),
    };
    Ok(NewUserSession {
        business_id,
        platform_type,
        platform_id,
        role,
        profile_name,
        display_name,
        profile_image_url,
        host_id,
    })
}

/// Checks the request against the credential's scope; the host id the session gets.
pub fn authorize(req: &NewUserSession, cred: &MottaslCredential) -> Result<String, Problem> {
    if !cred.allows_business(&req.business_id) {
        return Err(Problem::Forbidden(format!(
            "this integration token may not create sessions for business {}",
            req.business_id
        )));
    }
    if !cred.allows_role(&req.role) {
        return Err(Problem::Forbidden(format!(
            "this integration token may not grant role {}",
            req.role
        )));
    }
    match &req.host_id {
        None => Ok(cred.default_host_id.clone()),
        Some(h) if cred.allowed_host_ids.is_empty() || cred.allowed_host_ids.contains(h) => {
            Ok(h.clone())
        }
        Some(h) => Err(Problem::Forbidden(format!(
            "this integration token may not create sessions for host {h}"
        ))),
    }
}

/// The profile kept in the user directory for this request.
pub fn profile(req: &NewUserSession) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("name".into(), req.profile_name.clone().into());
    p.insert("display_name".into(), req.display_name.clone().into());
    p.insert("image".into(), req.profile_image_url.clone().into());
    p.insert("role".into(), req.role.clone().into());
    p
}

/// The 200 body. `headers` is exactly what the upstream receives for this token.
pub fn render_success(
    access_token: &str,
    user: &UserRecord,
    req: &NewUserSession,
    host_id: &str,
    cred: &MottaslCredential,
) -> Value {
    let text = |k: &str| {
        user.profile
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    json!({
        "headers": {
            "Authorization": format!("Bearer {access_token}"),
            "x-hasura-business-id": req.business_id,
            "x-hasura-user-id": user.id,
            "x-host-id": host_id,
        },
        "user_details": {
            "id": user.id,
            "name": text("name"),
            "display_name": text("display_name"),
            "email": text("email"),
            "image": text("image"),
            "language": cred.language,
            "role": req.role,
        },
        "channels": cred.channels,
        "billing_source": cred.billing_source,
        "success": true,
    })
}

/// `POST /v1/app/user.new.session`.
pub async fn new_session(app: &App, req: &Request<'_>) -> Result<Reply, Problem> {
    let Some(cfg) = &app.config.dialects.mottasl else {
        return Err(Problem::Internal);
    };
    let token = bearer(req.headers)
        .ok_or_else(|| Problem::NoCredential("an integration bearer token is required".into()))?;
    let cred = find_credential(&cfg.credentials, token.as_bytes())
        .ok_or_else(|| Problem::Unauthorized("the integration token is not valid".into()))?;
    app.limits
        .create_with("mottasl", &cred.digest, cred.session_rate_limit)
        .await?;
    require_json(req.headers)?;
    let parsed = parse(req.query, req.body)?;
    let host_id = authorize(&parsed, cred)?;
    // The user first (an idempotent upsert), then the session: a failure in between leaves a
    // complete user and no session, and the client's retry converges.
    let user = app
        .sessions
        .directory()
        .upsert_user(
            &parsed.business_id,
            &[&parsed.platform_type, &parsed.platform_id],
            profile(&parsed),
            || uuid::Uuid::new_v4().to_string(),
        )
        .await?;
    let issued = app
        .sessions
        .create(NewSession::new(
            "mottasl",
            user.id.clone(),
            parsed.business_id.clone(),
            host_id.clone(),
            parsed.role.clone(),
            cred.ttl_secs,
        ))
        .await?;
    app.metrics
        .sessions_created
        .with_label_values(&["mottasl"])
        .inc();
    tracing::info!(
        dialect = "mottasl",
        credential = %cred.name,
        user_id = %user.id,
        business_id = %parsed.business_id,
        "session created"
    );
    Ok(Reply::json(
        200,
        &render_success(&issued.access_token, &user, &parsed, &host_id, cred),
    ))
}

/// Mottasl's error body: `{"success": false, "message": ...}`.
pub fn render(problem: &Problem) -> Reply {
    let (status, message) = match problem {
        Problem::Malformed(m) => (400, m.clone()),
        Problem::ContentType => (400, "Content-Type must be application/json".into()),
        Problem::Field(f) => (400, f.describe()),
        Problem::Unauthorized(m) | Problem::NoCredential(m) => (401, m.clone()),
        Problem::Gate(e) => return render(&Problem::from(e.clone())),
        Problem::Forbidden(m) => (403, m.clone()),
        Problem::PayloadTooLarge(n) => (413, format!("the request body is larger than {n} bytes")),
        Problem::MethodNotAllowed(m) => (405, format!("use {m}")),
        Problem::Timeout => (408, "the request body was not received in time".into()),
        Problem::NotFound { message, .. } => (404, message.clone()),
        Problem::Unavailable => (
            500,
            "the session store is unavailable; nothing was created".into(),
        ),
        Problem::RateLimited(secs) => (
            429,
            format!("too many requests; retry after {secs} seconds"),
        ),
        Problem::Internal => (500, "internal error; nothing was created".into()),
    };
    Reply::json(status, &json!({"success": false, "message": message}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dialects::CredentialDigest;

    const REQUEST: &str = include_str!("../../tests/fixtures/dialects/mottasl/request.json");
    const RESPONSE: &str = include_str!("../../tests/fixtures/dialects/mottasl/response.json");

    fn cred() -> MottaslCredential {
        MottaslCredential {
            name: "test".into(),
            digest: CredentialDigest::of(b"dev-mottasl-token"),
            businesses: vec!["550e8400-e29b-41d4-a716-446655440000".into()],
            roles: vec!["admin".into(), "agent".into(), "user".into()],
            allowed_host_ids: Vec::new(),
            default_host_id: "dev-host".into(),
            ttl_secs: 3600,
            channels: vec!["WhatsApp".into()],
            billing_source: "Stripe".into(),
            language: "en".into(),
            session_rate_limit: None,
        }
    }

    fn body_with(name: &str, value: Value) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(REQUEST).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            if value.is_null() {
                m.remove(name);
            } else {
                m.insert(name.into(), value);
            }
        }
        v.to_string().into_bytes()
    }

    #[test]
    fn golden_request_to_response() -> Result<(), Box<dyn std::error::Error>> {
        let req = parse(Some("host_id=xyz"), REQUEST.as_bytes())?;
        assert_eq!(req.platform_type, "avocado");
        assert_eq!(req.host_id.as_deref(), Some("xyz"));
        let c = cred();
        let host = authorize(&req, &c)?;
        let user = UserRecord {
            id: "12345".into(),
            created_at: 0,
            updated_at: 0,
            profile: profile(&req),
        };
        let got = render_success("example-jwt-token", &user, &req, &host, &c);
        let want: Value = serde_json::from_str(RESPONSE)?;
        assert_eq!(got, want);
        Ok(())
    }

    /// Each body field lands in its own member (a list read by index used to make this a
    /// matter of keeping two orders in step).
    #[test]
    fn each_field_lands_in_its_member() -> Result<(), Problem> {
        let body = json!({
            "business_id": "b", "platform_type": "pt", "platform_id": "pi", "role": "r",
            "profile_name": "pn", "display_name": "dn", "profile_image_url": "u"
        });
        let req = parse(None, body.to_string().as_bytes())?;
        assert_eq!(
            req,
            NewUserSession {
                business_id: "b".into(),
                platform_type: "pt".into(),
                platform_id: "pi".into(),
                role: "r".into(),
                profile_name: "pn".into(),
                display_name: "dn".into(),
                profile_image_url: "u".into(),
                host_id: None,
            }
        );
        Ok(())
    }

    #[test]
    fn default_host_when_none_asked() -> Result<(), Problem> {
        let req = parse(None, REQUEST.as_bytes())?;
        assert_eq!(authorize(&req, &cred())?, "dev-host");
        Ok(())
    }

    #[test]
    fn every_field_is_a_required_string_and_ids_are_not_empty() {
        let ids = ["business_id", "platform_type", "platform_id", "role"];
        let profile = ["profile_name", "display_name", "profile_image_url"];
        for name in ids.iter().chain(&profile) {
            for (value, kind) in [
                (Value::Null, FieldKind::Missing),
                (json!(7), FieldKind::Type("a string")),
                (json!(["x"]), FieldKind::Type("a string")),
            ] {
                let got = parse(None, &body_with(name, value.clone()));
                assert_eq!(got, Err(field(&[name], kind)), "{name} = {value}");
            }
        }
        for name in ids {
            let got = parse(None, &body_with(name, json!("")));
            assert_eq!(got, Err(field(&[name], FieldKind::TooShort(1))), "{name}");
        }
        // A user without a name or a picture yet.
        for name in profile {
            assert!(parse(None, &body_with(name, json!(""))).is_ok(), "{name}");
        }
    }

    #[test]
    fn wildcard_scopes_allow_any_business_or_role() -> Result<(), Problem> {
        let mut any = cred();
        any.businesses = vec!["*".into()];
        any.roles = vec!["*".into()];
        let mut req = parse(None, &body_with("business_id", json!("tenant-added-later")))?;
        req.role = "agent".into();
        assert!(authorize(&req, &any).is_ok());
        let req = parse(None, &body_with("role", json!("owner")))?;
        assert!(authorize(&req, &any).is_ok());
        // Hasura's super-user role is never covered by `*`, and a wildcard business is one
        // plain id (not Hasura's array form, not `*`).
        let admin = parse(None, &body_with("role", json!("admin")))?;
        assert!(matches!(
            authorize(&admin, &any),
            Err(Problem::Forbidden(_))
        ));
        any.roles.push("admin".into());
        assert!(authorize(&admin, &any).is_ok());
        for b in ["*", "{victim-a,victim-b}", "a,b"] {
            let mut req = parse(None, &body_with("business_id", json!(b)))?;
            req.role = "agent".into();
            assert!(
                matches!(authorize(&req, &any), Err(Problem::Forbidden(_))),
                "{b}"
            );
        }
        Ok(())
    }

    #[test]
    fn errors_render_as_success_false() {
        let r = render(&field(&["role"], FieldKind::Missing));
        assert_eq!(r.status, 400);
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert_eq!(v, json!({"success": false, "message": "role is required"}));
        assert_eq!(render(&Problem::Unauthorized("x".into())).status, 401);
        assert_eq!(render(&Problem::Forbidden("x".into())).status, 403);
        assert_eq!(render(&Problem::PayloadTooLarge(1)).status, 413);
        assert_eq!(render(&Problem::Unavailable).status, 500);
        assert!(matches!(parse(None, b"{nope"), Err(Problem::Malformed(_))));
    }

    #[test]
    fn scope_is_enforced() -> Result<(), Problem> {
        let c = cred();
        let other_business = parse(None, &body_with("business_id", json!("other")))?;
        assert!(matches!(
            authorize(&other_business, &c),
            Err(Problem::Forbidden(_))
        ));
        let other_role = parse(None, &body_with("role", json!("owner")))?;
        assert!(matches!(
            authorize(&other_role, &c),
            Err(Problem::Forbidden(_))
        ));
        let mut limited = cred();
        limited.allowed_host_ids = vec!["h1".into()];
        let req = parse(Some("host_id=h2"), REQUEST.as_bytes())?;
        assert!(matches!(
            authorize(&req, &limited),
            Err(Problem::Forbidden(_))
        ));
        Ok(())
    }

    #[test]
    fn bad_host_id_is_a_query_error() {
        assert!(matches!(
            parse(Some("host_id="), REQUEST.as_bytes()),
            Err(Problem::Field(f)) if f.in_query && f.field() == "host_id"
        ));
        assert!(parse(Some("host_id=a%0Ab"), REQUEST.as_bytes()).is_err());
    }
}
