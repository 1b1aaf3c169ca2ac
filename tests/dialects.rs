//! The three session dialects over real sockets, with a real Redis: each creates sessions
//! in its provider's wire format, the tokens pass the proxy, and the echo upstream shows the
//! identity each dialect promises. Every validation rule and error format is exercised.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const MOTTASL_TOKEN: &str = "integration-mottasl-token";
const AMITY_KEY: &str = "integration-amity-key";
const AMITY_SECURE_KEY: &str = "integration-amity-secure-key";
const AMITY_SERVER_KEY: &str = "integration-amity-server-key";
const RAPIDLY_TOKEN: &str = "integration-rapidly-token";
const RAPIDLY_OTHER_TOKEN: &str = "integration-rapidly-other";
const RAPIDLY_NO_SCOPE: &str = "integration-rapidly-noscope";
const BUSINESS: &str = "550e8400-e29b-41d4-a716-446655440000";
const CUSTOMER: &str = "7b0c7c6e-6f1d-4c3e-9a57-2f1e4d8b9c01";

/// The Mottasl token is configured as a digest, the rest as plaintext: both paths run.
fn dialects_toml() -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(MOTTASL_TOKEN.as_bytes()));
    format!(
        r#"
[dialects]
max_body_bytes = 65536

[[dialects.mottasl.credentials]]
token_sha256 = "{digest}"
businesses = ["{BUSINESS}"]
roles = ["admin", "agent", "user"]
default_host_id = "host-default"
channels = ["WhatsApp"]
billing_source = "Stripe"

[dialects.amity]
realtime_paths = ["/socket.io"]

[[dialects.amity.networks]]
network_id = "net-1"
api_key = "{AMITY_KEY}"
default_host_id = "amity-host"

[[dialects.amity.networks]]
network_id = "net-secure"
api_key = "{AMITY_SECURE_KEY}"
secure = true
server_key = "{AMITY_SERVER_KEY}"
default_host_id = "amity-secure-host"

[[dialects.rapidly.workspaces]]
workspace_id = "ws-1"
token = "{RAPIDLY_TOKEN}"
default_host_id = "ws-host"
portal_base_url = "https://portal.example/ws-1"

[[dialects.rapidly.workspaces]]
workspace_id = "ws-2"
token = "{RAPIDLY_OTHER_TOKEN}"
default_host_id = "ws2-host"
member_model_enabled = true
portal_base_url = "https://portal.example/ws-2"

[[dialects.rapidly.workspaces]]
workspace_id = "ws-3"
token = "{RAPIDLY_NO_SCOPE}"
scopes = ["customers:read"]
default_host_id = "ws3-host"
portal_base_url = "https://portal.example/ws-3"

[[dialects.rapidly.customers]]
id = "{CUSTOMER}"
workspace_id = "ws-1"
email = "dev@example.com"
name = "Dev Customer"
external_id = "seeded-ext"
"#
    )
}

struct Setup {
    redis: Redis,
    echo: echo::Echo,
    gw: Gateway,
}

fn setup() -> Result<Setup, Box<dyn std::error::Error>> {
    setup_with(|t| t)
}

/// `setup` with the dialects' config text edited first.
fn setup_with(edit: impl FnOnce(String) -> String) -> Result<Setup, Box<dyn std::error::Error>> {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_with(echo.addr, Some(&redis.url()), &edit(dialects_toml()))?;
    Ok(Setup { redis, echo, gw })
}

fn post_json(
    gw: &Gateway,
    target: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Result<Resp, Box<dyn std::error::Error>> {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(gw.proxy, "POST", target, &all, Some(&body.to_string()))
}

fn mottasl_body() -> Value {
    json!({
        "business_id": BUSINESS,
        "platform_type": "avocado",
        "platform_id": "1234567890",
        "role": "admin",
        "profile_name": "johndoe",
        "display_name": "John Doe",
        "profile_image_url": "https://example.com/profile.jpg"
    })
}

fn mottasl(gw: &Gateway, query: &str, body: &Value) -> Result<Resp, Box<dyn std::error::Error>> {
    let auth = format!("Bearer {MOTTASL_TOKEN}");
    post_json(
        gw,
        &format!("/v1/app/user.new.session{query}"),
        &[("Authorization", &auth)],
        body,
    )
}

/// Calls the upstream through the proxy with a token, spoofing identity on the way in.
fn through_proxy(gw: &Gateway, token: &str) -> Result<Resp, Box<dyn std::error::Error>> {
    authed(
        gw.proxy,
        "POST",
        "/v1/graphql",
        token,
        &[
            ("X-Hasura-User-Id", "attacker"),
            ("x-hasura-role", "admin"),
            ("X-Host-Id", "evil-host"),
            ("Content-Type", "application/json"),
        ],
        Some(r#"{"query":"{ me { id } }"}"#),
    )
}

fn assert_identity(
    r: &Resp,
    business: &str,
    user: &str,
    host: &str,
    role: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-hasura-business-id")?, vec![business]);
    assert_eq!(r.upstream_header("x-hasura-user-id")?, vec![user]);
    assert_eq!(r.upstream_header("x-host-id")?, vec![host]);
    assert_eq!(r.upstream_header("x-hasura-role")?, vec![role]);
    Ok(())
}

// ── Mottasl ───────────────────────────────────────────────────────────────────────────

#[test]
fn mottasl_session_passes_the_proxy_with_exactly_the_returned_headers() -> TestResult {
    let s = setup()?;
    let r = mottasl(&s.gw, "?host_id=xyz", &mottasl_body())?;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json()?;
    assert_eq!(v["success"], true);
    assert_eq!(v["channels"], json!(["WhatsApp"]));
    assert_eq!(v["billing_source"], "Stripe");
    let keys: Vec<&str> = v["user_details"]
        .as_object()
        .ok_or("user_details")?
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.len(),
        7,
        "id name display_name email image language role: {keys:?}"
    );
    assert_eq!(v["user_details"]["name"], "johndoe");
    assert_eq!(v["user_details"]["display_name"], "John Doe");
    assert_eq!(
        v["user_details"]["image"],
        "https://example.com/profile.jpg"
    );
    assert_eq!(v["user_details"]["role"], "admin");
    let headers = v["headers"].as_object().ok_or("headers")?;
    assert_eq!(headers.len(), 4);
    let user_id = v["user_details"]["id"].as_str().ok_or("id")?.to_string();
    assert_eq!(headers["x-hasura-user-id"], user_id.as_str());
    assert_eq!(headers["x-hasura-business-id"], BUSINESS);
    assert_eq!(headers["x-host-id"], "xyz");
    let token = headers["Authorization"]
        .as_str()
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or("Authorization must be a bearer token")?;

    // What the upstream receives is exactly the `headers` object (plus the role).
    let up = through_proxy(&s.gw, token)?;
    assert_identity(&up, BUSINESS, &user_id, "xyz", "admin")?;

    // Same (business, platform_type, platform_id) → same user; profile updated.
    let mut again = mottasl_body();
    again["display_name"] = json!("Johnny");
    again["role"] = json!("agent");
    let v2 = mottasl(&s.gw, "", &again)?.json()?;
    assert_eq!(v2["user_details"]["id"], user_id.as_str());
    assert_eq!(v2["user_details"]["display_name"], "Johnny");
    assert_eq!(v2["headers"]["x-host-id"], "host-default");
    let token2 = v2["headers"]["Authorization"]
        .as_str()
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or("token")?;
    assert_identity(
        &through_proxy(&s.gw, token2)?,
        BUSINESS,
        &user_id,
        "host-default",
        "agent",
    )?;

    // Another platform identity → another user.
    let mut other = mottasl_body();
    other["platform_id"] = json!("999");
    let v3 = mottasl(&s.gw, "", &other)?.json()?;
    assert_ne!(v3["user_details"]["id"], user_id.as_str());

    // Users live in Redis beside sessions.
    assert_eq!(s.redis.key_count("sg:user:*")?, 2);
    // The gateway never logged a token.
    assert!(!s.gw.log().contains(token), "token in log");
    Ok(())
}

#[test]
fn mottasl_rejects_bad_requests_in_its_own_format() -> TestResult {
    let s = setup()?;
    let check = |r: Resp, status: u16, needle: &str| -> TestResult {
        assert_eq!(r.status, status, "{}", r.body);
        let v = r.json()?;
        assert_eq!(v["success"], false, "{}", r.body);
        let msg = v["message"].as_str().ok_or("message")?;
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        Ok(())
    };
    let target = "/v1/app/user.new.session";
    let body = mottasl_body().to_string();
    check(
        request(
            s.gw.proxy,
            "POST",
            target,
            &[("Content-Type", "application/json")],
            Some(&body),
        )?,
        401,
        "token",
    )?;
    check(
        request(
            s.gw.proxy,
            "POST",
            target,
            &[
                ("Authorization", "Bearer wrong-token-value"),
                ("Content-Type", "application/json"),
            ],
            Some(&body),
        )?,
        401,
        "not valid",
    )?;
    let auth = format!("Bearer {MOTTASL_TOKEN}");
    check(
        request(
            s.gw.proxy,
            "POST",
            target,
            &[("Authorization", &auth), ("Content-Type", "text/plain")],
            Some(&body),
        )?,
        400,
        "Content-Type",
    )?;
    check(
        request(
            s.gw.proxy,
            "POST",
            target,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some("{not json"),
        )?,
        400,
        "JSON",
    )?;
    for field in [
        "business_id",
        "platform_type",
        "platform_id",
        "role",
        "profile_name",
        "display_name",
        "profile_image_url",
    ] {
        let profile = field.starts_with("profile_") || field == "display_name";
        for bad in [Value::Null, json!(""), json!(42)] {
            let mut b = mottasl_body();
            let empty = bad == json!("");
            if bad.is_null() {
                b.as_object_mut().ok_or("object")?.remove(field);
            } else {
                b[field] = bad;
            }
            if empty && profile {
                // Accepted: checked below, once nothing else may have been created.
                continue;
            }
            check(mottasl(&s.gw, "", &b)?, 400, field)?;
        }
    }
    let mut b = mottasl_body();
    b["business_id"] = json!("someone-elses-business");
    check(mottasl(&s.gw, "", &b)?, 403, "business")?;
    let mut b = mottasl_body();
    b["role"] = json!("owner");
    check(mottasl(&s.gw, "", &b)?, 403, "role")?;
    check(
        mottasl(&s.gw, "?host_id=", &mottasl_body())?,
        400,
        "host_id",
    )?;
    let mut big = mottasl_body();
    big["display_name"] = json!("x".repeat(70_000));
    check(mottasl(&s.gw, "", &big)?, 413, "larger")?;
    let r = request(s.gw.proxy, "GET", target, &[("Authorization", &auth)], None)?;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    // None of this reached the upstream or created anything.
    assert_eq!(s.echo.hits(), 0);
    assert_eq!(s.redis.data_key_count()?, 0);
    // Profile fields may be empty (a user without a name or picture yet); ids may not.
    for field in ["profile_name", "display_name", "profile_image_url"] {
        let mut b = mottasl_body();
        b[field] = json!("");
        let r = mottasl(&s.gw, "", &b)?;
        assert_eq!(r.status, 200, "{field}: {}", r.body);
    }
    Ok(())
}

#[test]
fn store_failure_is_an_error_in_each_format_and_writes_nothing() -> TestResult {
    let mut s = setup()?;
    s.redis.stop();
    let r = mottasl(&s.gw, "", &mottasl_body())?;
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.json()?["success"], false);
    let r = post_json(
        &s.gw,
        "/api/v3/sessions",
        &[("x-api-key", AMITY_KEY)],
        &json!({"userId": "u1", "deviceId": "d1"}),
    )?;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()?["code"], 500000);
    let auth = format!("Bearer {RAPIDLY_TOKEN}");
    let r = post_json(
        &s.gw,
        "/api/customer-sessions/",
        &[("Authorization", &auth)],
        &json!({"customer_id": CUSTOMER}),
    )?;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.json()?["detail"].is_string());
    s.redis.restart()?;
    assert!(eventually_status(Duration::from_secs(10), 200, || mottasl(
        &s.gw,
        "",
        &mottasl_body()
    )));
    Ok(())
}

// ── Amity ─────────────────────────────────────────────────────────────────────────────

fn amity(
    gw: &Gateway,
    version: &str,
    key: &str,
    body: &Value,
) -> Result<Resp, Box<dyn std::error::Error>> {
    post_json(
        gw,
        &format!("/api/{version}/sessions"),
        &[("x-api-key", key)],
        body,
    )
}

#[test]
fn amity_session_passes_the_proxy_and_tabs_of_one_device_keep_their_sessions() -> TestResult {
    let s = setup()?;
    let body = json!({
        "userId": "user-1",
        "deviceId": "device-1",
        "deviceInfo": {"kind": "ios", "model": "iPhone", "sdkVersion": "6.35.3"},
        "displayName": "User One"
    });
    let r = amity(&s.gw, "v3", AMITY_KEY, &body)?;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json()?;
    for k in [
        "accessToken",
        "refreshToken",
        "issuedAt",
        "expiresAt",
        "users",
        "roles",
        "files",
        "lastCachePurge",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    let user = &v["users"][0];
    for k in [
        "_id",
        "path",
        "userId",
        "userInternalId",
        "userPublicId",
        "roles",
        "permissions",
        "displayName",
        "profileHandle",
        "description",
        "avatarFileId",
        "avatarCustomUrl",
        "flagCount",
        "hashFlag",
        "metadata",
        "isGlobalBan",
        "isBrand",
        "createdAt",
        "updatedAt",
        "isDeleted",
    ] {
        assert!(user.get(k).is_some(), "user object lacks {k}: {user}");
    }
    assert_eq!(user["userId"], "user-1");
    assert_eq!(user["displayName"], "User One");
    let first = v["accessToken"].as_str().ok_or("accessToken")?.to_string();
    assert_identity(
        &through_proxy(&s.gw, &first)?,
        "net-1",
        "user-1",
        "amity-host",
        "user",
    )?;

    // Same user, another device, v5 (the SDK's path): the first session stays valid, the
    // user keeps its internal id, and the display name is updated.
    let mut other_device = body.clone();
    other_device["deviceId"] = json!("device-2");
    other_device["displayName"] = json!("Renamed");
    let v2 = amity(&s.gw, "v5", AMITY_KEY, &other_device)?.json()?;
    assert_eq!(v2["users"][0]["_id"], user["_id"]);
    assert_eq!(v2["users"][0]["displayName"], "Renamed");
    assert_eq!(through_proxy(&s.gw, &first)?.status, 200);

    // Same device again (v4), as another browser tab sharing the deviceId would: both
    // sessions live (dialects.amity.replace_device_sessions is off by default).
    let v3 = amity(
        &s.gw,
        "v4",
        AMITY_KEY,
        &json!({"userId": "user-1", "deviceId": "device-1"}),
    )?
    .json()?;
    let third = v3["accessToken"].as_str().ok_or("accessToken")?;
    assert_eq!(
        v3["users"][0]["displayName"], "Renamed",
        "kept when not given"
    );
    assert_eq!(
        through_proxy(&s.gw, &first)?.status,
        200,
        "a login in another tab logged this one out"
    );
    assert_eq!(through_proxy(&s.gw, third)?.status, 200);

    // The login-adjacent call the SDK makes.
    let chat = authed(
        s.gw.proxy,
        "GET",
        "/api/v3/network-settings/chat",
        third,
        &[],
        None,
    )?;
    assert_eq!(chat.status, 200, "{}", chat.body);
    assert_eq!(chat.json()?["messagePreview"]["enabled"], false);
    let r = request(
        s.gw.proxy,
        "GET",
        "/api/v3/network-settings/chat",
        &[],
        None,
    )?;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()?["code"], 400100);
    // Other /api/ paths are ordinary authenticated traffic for the upstream.
    let r = authed(s.gw.proxy, "GET", "/api/v3/channels", third, &[], None)?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()?["target"], "/api/v3/channels");
    Ok(())
}

#[test]
fn amity_realtime_token_only_on_realtime_paths_and_never_forwarded() -> TestResult {
    let s = setup()?;
    let v = amity(
        &s.gw,
        "v3",
        AMITY_KEY,
        &json!({"userId": "rt", "deviceId": "d"}),
    )?
    .json()?;
    let token = v["accessToken"].as_str().ok_or("accessToken")?;
    let target = format!("/socket.io/?EIO=4&transport=polling&token={token}");
    let r = request(s.gw.proxy, "GET", &target, &[], None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-hasura-user-id")?, vec!["rt"]);
    assert_eq!(
        r.json()?["target"],
        "/socket.io/?EIO=4&transport=polling",
        "the token is not forwarded"
    );
    let r = request(
        s.gw.proxy,
        "GET",
        &format!("/v1/graphql?token={token}"),
        &[],
        None,
    )?;
    assert_eq!(r.status, 401, "query tokens only on realtime paths");
    assert!(!s.gw.log().contains(token));
    Ok(())
}

#[test]
fn amity_secure_mode_needs_a_server_issued_auth_token() -> TestResult {
    let s = setup()?;
    let body = json!({"userId": "sec-user", "deviceId": "d1"});
    let r = amity(&s.gw, "v3", AMITY_SECURE_KEY, &body)?;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()?["code"], 400100);
    assert_eq!(r.json()?["status"], "error");

    let mut forged = body.clone();
    forged["authToken"] = json!("0".repeat(64));
    assert_eq!(amity(&s.gw, "v3", AMITY_SECURE_KEY, &forged)?.status, 401);

    // The backend's server-to-server call.
    let r = request(
        s.gw.proxy,
        "GET",
        "/api/v3/authentication/token?userId=sec-user",
        &[("x-server-key", "wrong-server-key")],
        None,
    )?;
    assert_eq!(r.status, 401);
    let r = request(
        s.gw.proxy,
        "GET",
        "/api/v3/authentication/token?userId=sec-user",
        &[("x-server-key", AMITY_SERVER_KEY)],
        None,
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    let auth_token = r.body.clone();
    assert!(!auth_token.is_empty() && auth_token.len() <= 100);

    // A token for another user does not work for this one.
    let r = post_json(
        &s.gw,
        "/api/v4/authentication/token",
        &[("x-server-key", AMITY_SERVER_KEY)],
        &json!({"userId": "someone-else"}),
    )?;
    assert_eq!(r.status, 200);
    let mut wrong_user = body.clone();
    wrong_user["authToken"] = json!(r.body);
    assert_eq!(
        amity(&s.gw, "v3", AMITY_SECURE_KEY, &wrong_user)?.status,
        401
    );

    let mut good = body.clone();
    good["authToken"] = json!(auth_token);
    let r = amity(&s.gw, "v5", AMITY_SECURE_KEY, &good)?;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()?["accessToken"]
        .as_str()
        .ok_or("accessToken")?
        .to_string();
    assert_identity(
        &through_proxy(&s.gw, &token)?,
        "net-secure",
        "sec-user",
        "amity-secure-host",
        "user",
    )?;

    // Renewal as the SDK does it: new deviceId, current access token, no authToken.
    let auth = format!("Bearer {token}");
    let r = post_json(
        &s.gw,
        "/api/v5/sessions",
        &[("x-api-key", AMITY_SECURE_KEY), ("Authorization", &auth)],
        &json!({"userId": "sec-user", "deviceId": "d2"}),
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    // A bearer of another user is no substitute for the auth token.
    let r = post_json(
        &s.gw,
        "/api/v5/sessions",
        &[("x-api-key", AMITY_SECURE_KEY), ("Authorization", &auth)],
        &json!({"userId": "other-user", "deviceId": "d3"}),
    )?;
    assert_eq!(r.status, 401);
    Ok(())
}

#[test]
fn amity_rejects_bad_requests_in_its_own_format() -> TestResult {
    let s = setup()?;
    let check = |r: Resp, status: u16, code: u64, needle: &str| -> TestResult {
        assert_eq!(r.status, status, "{}", r.body);
        let v = r.json()?;
        assert_eq!(v["status"], "error", "{}", r.body);
        assert_eq!(v["code"], code, "{}", r.body);
        let msg = v["message"].as_str().ok_or("message")?;
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        Ok(())
    };
    let ok = json!({"userId": "u", "deviceId": "d"});
    check(
        post_json(&s.gw, "/api/v3/sessions", &[], &ok)?,
        401,
        400100,
        "x-api-key",
    )?;
    check(
        amity(&s.gw, "v3", "not-the-key", &ok)?,
        401,
        400100,
        "API key",
    )?;
    let cases = [
        (json!({"deviceId": "d"}), "userId"),
        (json!({"userId": "", "deviceId": "d"}), "userId"),
        (json!({"userId": "u".repeat(51), "deviceId": "d"}), "userId"),
        (json!({"userId": 7, "deviceId": "d"}), "userId"),
        (json!({"userId": "u"}), "deviceId"),
        (
            json!({"userId": "u", "deviceId": "d".repeat(151)}),
            "deviceId",
        ),
        (
            json!({"userId": "u", "deviceId": "d", "displayName": "n".repeat(101)}),
            "displayName",
        ),
        (
            json!({"userId": "u", "deviceId": "d", "authToken": "a".repeat(101)}),
            "authToken",
        ),
        (
            json!({"userId": "u", "deviceId": "d", "deviceInfo": "ios"}),
            "deviceInfo",
        ),
    ];
    for (body, field) in cases {
        check(amity(&s.gw, "v3", AMITY_KEY, &body)?, 400, 400000, field)?;
    }
    check(
        request(
            s.gw.proxy,
            "POST",
            "/api/v3/sessions",
            &[
                ("x-api-key", AMITY_KEY),
                ("Content-Type", "application/json"),
            ],
            Some("[]"),
        )?,
        400,
        400000,
        "object",
    )?;
    let mut big = ok.clone();
    big["displayName"] = json!("x".repeat(70_000));
    let r = amity(&s.gw, "v3", AMITY_KEY, &big)?;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()?["status"], "error");
    assert_eq!(s.echo.hits(), 0);
    assert_eq!(s.redis.data_key_count()?, 0);
    Ok(())
}

// ── Rapidly ───────────────────────────────────────────────────────────────────────────

fn rapidly(gw: &Gateway, token: &str, body: &Value) -> Result<Resp, Box<dyn std::error::Error>> {
    let auth = format!("Bearer {token}");
    post_json(
        gw,
        "/api/customer-sessions/",
        &[("Authorization", &auth)],
        body,
    )
}

#[test]
fn rapidly_session_passes_the_proxy_as_the_customer() -> TestResult {
    let s = setup()?;
    let r = rapidly(
        &s.gw,
        RAPIDLY_TOKEN,
        &json!({"customer_id": CUSTOMER, "return_url": "https://example.com/account"}),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json()?;
    let token = v["token"].as_str().ok_or("token")?.to_string();
    assert_eq!(v["customer_id"], CUSTOMER);
    assert_eq!(v["return_url"], "https://example.com/account");
    assert_eq!(v["modified_at"], Value::Null);
    assert_eq!(
        v["customer_portal_url"],
        format!("https://portal.example/ws-1?customer_session_token={token}").as_str()
    );
    assert!(v["id"].as_str().is_some_and(|id| id.len() == 36));
    assert_eq!(v["customer"]["email"], "dev@example.com");
    assert_eq!(v["customer"]["workspace_id"], "ws-1");
    assert_eq!(v["customer"]["type"], "individual");
    for k in [
        "id",
        "created_at",
        "modified_at",
        "metadata",
        "external_id",
        "email",
        "email_verified",
        "name",
        "billing_address",
        "workspace_id",
        "deleted_at",
        "avatar_url",
        "type",
    ] {
        assert!(v["customer"].get(k).is_some(), "customer lacks {k}");
    }
    assert_identity(
        &through_proxy(&s.gw, &token)?,
        "ws-1",
        CUSTOMER,
        "ws-host",
        "customer",
    )?;
    // Without the trailing slash too.
    let auth = format!("Bearer {RAPIDLY_TOKEN}");
    let r = post_json(
        &s.gw,
        "/api/customer-sessions",
        &[("Authorization", &auth)],
        &json!({"customer_id": CUSTOMER, "return_url": null}),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()?["return_url"], Value::Null);
    Ok(())
}

#[test]
fn rapidly_customers_are_provisioned_through_the_admin_api() -> TestResult {
    let s = setup()?;
    let id = "3f1e2d4c-5b6a-4798-8a7b-6c5d4e3f2a1b";
    let path = format!("/admin/customers/{id}");
    let r = admin_request(
        s.gw.admin,
        "PUT",
        &path,
        Some(
            &json!({
                "workspace_id": "ws-1", "email": "new@example.com", "name": "New",
                "external_id": "usr_1", "metadata": {"plan": "pro"},
                "billing_address": {"country": "AD", "city": "Andorra la Vella"}
            })
            .to_string(),
        ),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = rapidly(&s.gw, RAPIDLY_TOKEN, &json!({"customer_id": id}))?;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json()?;
    assert_eq!(v["customer"]["metadata"]["plan"], "pro");
    assert_eq!(v["customer"]["billing_address"]["country"], "AD");
    let token = v["token"].as_str().ok_or("token")?.to_string();

    // Another workspace's token cannot use this customer.
    let r = rapidly(&s.gw, RAPIDLY_OTHER_TOKEN, &json!({"customer_id": id}))?;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        r.json()?["detail"][0]["loc"],
        json!(["body", "customer_id"])
    );

    // Update keeps created_at, sets modified_at.
    let r = admin_request(
        s.gw.admin,
        "PUT",
        &path,
        Some(&json!({"workspace_id": "ws-1", "email": "changed@example.com"}).to_string()),
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()?["modified_at"].is_string());

    // Soft delete: no new sessions; the record stays with deleted_at.
    assert_eq!(
        admin_request(s.gw.admin, "DELETE", &path, None)?.status,
        204
    );
    let r = admin_request(s.gw.admin, "GET", &path, None)?;
    assert_eq!(r.status, 200);
    assert!(r.json()?["deleted_at"].is_string());
    let r = rapidly(&s.gw, RAPIDLY_TOKEN, &json!({"customer_id": id}))?;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("Customer does not exist"));
    // A session created before the deletion is still a session (revocation is explicit).
    assert_eq!(through_proxy(&s.gw, &token)?.status, 200);

    // Unknown customers, and the config-provisioned one shows up on the admin API.
    let unknown = "0d6f4a1e-8c2b-4e3d-9f5a-7b6c5d4e3f2a";
    assert_eq!(
        admin_request(
            s.gw.admin,
            "GET",
            &format!("/admin/customers/{unknown}"),
            None
        )?
        .status,
        404
    );
    assert_eq!(
        rapidly(&s.gw, RAPIDLY_TOKEN, &json!({"customer_id": unknown}))?.status,
        422
    );
    let r = admin_request(
        s.gw.admin,
        "GET",
        &format!("/admin/customers/{CUSTOMER}"),
        None,
    )?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()?["email"], "dev@example.com");
    // Bad customer bodies are refused with the field named.
    let r = admin_request(
        s.gw.admin,
        "PUT",
        &path,
        Some(r#"{"workspace_id": "ws-1", "type": "robot"}"#),
    )?;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("type"));
    Ok(())
}

#[test]
fn rapidly_rejects_bad_requests_in_its_own_format() -> TestResult {
    let s = setup()?;
    let validation = |r: Resp, field: &str, kind: &str| -> TestResult {
        assert_eq!(r.status, 422, "{}", r.body);
        let d = &r.json()?["detail"][0];
        assert_eq!(d["loc"], json!(["body", field]), "{}", r.body);
        assert_eq!(d["type"], kind, "{}", r.body);
        assert!(d["msg"].is_string());
        Ok(())
    };
    validation(
        rapidly(&s.gw, RAPIDLY_TOKEN, &json!({}))?,
        "customer_id",
        "missing",
    )?;
    validation(
        rapidly(&s.gw, RAPIDLY_TOKEN, &json!({"customer_id": "nope"}))?,
        "customer_id",
        "uuid_parsing",
    )?;
    validation(
        rapidly(
            &s.gw,
            RAPIDLY_TOKEN,
            &json!({"customer_id": "7b0c7c6e-6f1d-1c3e-9a57-2f1e4d8b9c01"}),
        )?,
        "customer_id",
        "uuid_version",
    )?;
    validation(
        rapidly(
            &s.gw,
            RAPIDLY_TOKEN,
            &json!({"customer_id": CUSTOMER, "return_url": ""}),
        )?,
        "return_url",
        "string_too_short",
    )?;
    validation(
        rapidly(
            &s.gw,
            RAPIDLY_TOKEN,
            &json!({"customer_id": CUSTOMER, "return_url": format!("https://e.x/{}", "a".repeat(2080))}),
        )?,
        "return_url",
        "string_too_long",
    )?;
    validation(
        rapidly(
            &s.gw,
            RAPIDLY_TOKEN,
            &json!({"customer_id": CUSTOMER, "return_url": "no scheme"}),
        )?,
        "return_url",
        "url_parsing",
    )?;
    validation(
        rapidly(
            &s.gw,
            RAPIDLY_TOKEN,
            &json!({"customer_id": CUSTOMER, "member_id": "nope"}),
        )?,
        "member_id",
        "uuid_parsing",
    )?;
    // Without the member model, member fields are ignored, as the provider's server does.
    let r = rapidly(
        &s.gw,
        RAPIDLY_TOKEN,
        &json!({"customer_id": CUSTOMER, "external_member_id": "m-1"}),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = request(
        s.gw.proxy,
        "POST",
        "/api/customer-sessions/",
        &[
            ("Authorization", &format!("Bearer {RAPIDLY_TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        Some("{oops"),
    )?;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()?["detail"][0]["type"], "json_invalid");

    // Credentials: 401 / 403 as {"error", "detail"}.
    for (token, status) in [("wrong-token-1234", 401), (RAPIDLY_NO_SCOPE, 403)] {
        let r = rapidly(&s.gw, token, &json!({"customer_id": CUSTOMER}))?;
        assert_eq!(r.status, status, "{}", r.body);
        let v = r.json()?;
        assert!(v["error"].is_string() && v["detail"].is_string(), "{v}");
    }
    let r = request(
        s.gw.proxy,
        "POST",
        "/api/customer-sessions/",
        &[("Content-Type", "application/json")],
        Some(&json!({"customer_id": CUSTOMER}).to_string()),
    )?;
    assert_eq!(r.status, 401);
    let mut big = json!({"customer_id": CUSTOMER});
    big["pad"] = json!("x".repeat(70_000));
    let r = rapidly(&s.gw, RAPIDLY_TOKEN, &big)?;
    assert_eq!(r.status, 413);
    assert!(r.json()?["error"].is_string());
    assert_eq!(s.echo.hits(), 0);
    Ok(())
}

#[test]
fn member_model_workspace_accepts_member_fields() -> TestResult {
    let s = setup()?;
    let id = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let r = admin_request(
        s.gw.admin,
        "PUT",
        &format!("/admin/customers/{id}"),
        Some(&json!({"workspace_id": "ws-2", "email": "m@example.com"}).to_string()),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = rapidly(
        &s.gw,
        RAPIDLY_OTHER_TOKEN,
        &json!({"customer_id": id, "member_id": CUSTOMER, "external_member_id": "m-1"}),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.json()?["token"].as_str().ok_or("token")?.to_string();
    assert_identity(
        &through_proxy(&s.gw, &token)?,
        "ws-2",
        id,
        "ws2-host",
        "customer",
    )?;
    Ok(())
}

/// `dialects.amity.replace_device_sessions = true`: a device has one session; logging in
/// again from it ends the previous one (the behaviour before the option existed).
#[test]
fn amity_device_replacement_when_configured() -> TestResult {
    let s = setup_with(|t| {
        t.replace(
            "[dialects.amity]\n",
            "[dialects.amity]\nreplace_device_sessions = true\n",
        )
    })?;
    let body = json!({"userId": "user-r", "deviceId": "device-r"});
    let first = amity(&s.gw, "v5", AMITY_KEY, &body)?.json()?;
    let first = first["accessToken"]
        .as_str()
        .ok_or("accessToken")?
        .to_string();
    assert_eq!(through_proxy(&s.gw, &first)?.status, 200);
    let second = amity(&s.gw, "v5", AMITY_KEY, &body)?.json()?;
    let second = second["accessToken"].as_str().ok_or("accessToken")?;
    assert_eq!(
        through_proxy(&s.gw, &first)?.status,
        401,
        "replaced session"
    );
    assert_eq!(through_proxy(&s.gw, second)?.status, 200);
    // Another device of the same user is untouched.
    let other = amity(
        &s.gw,
        "v5",
        AMITY_KEY,
        &json!({"userId": "user-r", "deviceId": "other"}),
    )?;
    assert_eq!(other.status, 200);
    assert_eq!(through_proxy(&s.gw, second)?.status, 200);
    Ok(())
}

/// Amity's userId is any 1–50 characters but control characters: a UTF-8 id reaches the
/// upstream as the same bytes; one that a header parser would trim is refused.
#[test]
fn amity_user_ids_beyond_ascii_reach_the_upstream_intact() -> TestResult {
    let s = setup()?;
    let id = "Zoë 李";
    let r = amity(
        &s.gw,
        "v5",
        AMITY_KEY,
        &json!({"userId": id, "deviceId": "d", "deviceInfo": {"kind": "web", "model": "Mozilla/5.0 ".repeat(60)}}),
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()?["accessToken"]
        .as_str()
        .ok_or("accessToken")?
        .to_string();
    let seen = through_proxy(&s.gw, &token)?;
    assert_eq!(seen.status, 200);
    assert_eq!(
        seen.upstream_header("x-hasura-user-id")?,
        vec![id.to_string()]
    );
    let bad = amity(
        &s.gw,
        "v5",
        AMITY_KEY,
        &json!({"userId": "bob ", "deviceId": "d"}),
    )?;
    assert_eq!(bad.status, 400, "{}", bad.body);
    Ok(())
}

/// A Mottasl credential with `businesses = ["*"]` and `roles = ["*"]` serves any business
/// and role (multi-tenant integrations add businesses without a redeploy); the session's
/// identity is the one asked for.
#[test]
fn mottasl_wildcard_credentials_serve_any_business_and_role() -> TestResult {
    let s = setup_with(|t| {
        t.replace(
            &format!("businesses = [\"{BUSINESS}\"]"),
            "businesses = [\"*\"]",
        )
        .replace(
            "roles = [\"admin\", \"agent\", \"user\"]",
            "roles = [\"*\"]",
        )
    })?;
    let mut b = mottasl_body();
    b["business_id"] = json!("tenant-added-later");
    b["role"] = json!("owner");
    let r = mottasl(&s.gw, "", &b)?;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json()?;
    assert_eq!(v["headers"]["x-hasura-business-id"], "tenant-added-later");
    let token = v["headers"]["Authorization"]
        .as_str()
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or("token")?;
    let seen = through_proxy(&s.gw, token)?;
    assert_eq!(
        seen.upstream_header("x-hasura-business-id")?,
        vec!["tenant-added-later"]
    );
    assert_eq!(seen.upstream_header("x-hasura-role")?, vec!["owner"]);
    Ok(())
}

/// Refusals on the Amity API's proxied paths (`dialects.amity.api_prefixes`) are in Amity's
/// error format, so the SDK recognises a missing or expired token (400100) and renews;
/// elsewhere they stay in the gateway's.
#[test]
fn amity_api_paths_refuse_in_amity_format() -> TestResult {
    let s = setup()?;
    for (path, token) in [
        ("/api/v3/users", None),
        ("/api/v5/channels?x=1", Some("not-a-jwt")),
        ("/api/v4/messages", Some("eyJhbGciOiJIUzI1NiJ9.e30.AAAA")),
    ] {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = request(s.gw.proxy, "GET", path, &headers, None)?;
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        let v = r.json()?;
        assert_eq!(v["status"], "error", "{path}: {v}");
        assert_eq!(v["code"], 400100, "{path}: {v}");
        assert!(v["message"].is_string());
    }
    // Not an Amity path: the gateway's own format.
    let r = request(s.gw.proxy, "GET", "/v1/graphql", &[], None)?;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()?["error"], "unauthorized");
    // A valid Amity session passes as before.
    let body = json!({"userId": "api-user", "deviceId": "d"});
    let v = amity(&s.gw, "v5", AMITY_KEY, &body)?.json()?;
    let token = v["accessToken"].as_str().ok_or("accessToken")?;
    let ok = authed(s.gw.proxy, "GET", "/api/v3/users", token, &[], None)?;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(s.echo.hits(), 1);
    Ok(())
}

/// The other branch of Rapidly's body union: `external_customer_id` (and its older name
/// `customer_external_id`) names the customer by the workspace's own id, within the
/// token's workspace only; an unknown, foreign or deleted one is 422 on that field.
#[test]
fn rapidly_sessions_by_external_customer_id() -> TestResult {
    let s = setup()?;
    // A configured customer, provisioned on first use.
    let r = rapidly(
        &s.gw,
        RAPIDLY_TOKEN,
        &json!({"external_customer_id": "seeded-ext"}),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()?["customer_id"], CUSTOMER);
    // One put through the admin API, by either name.
    let id = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d";
    let put = |ext: &str| {
        admin_request(
            s.gw.admin,
            "PUT",
            &format!("/admin/customers/{id}"),
            Some(
                &json!({"workspace_id": "ws-1", "email": "x@example.com", "external_id": ext})
                    .to_string(),
            ),
        )
    };
    assert!(put("crm-42")?.status < 300);
    for name in ["external_customer_id", "customer_external_id"] {
        let r = rapidly(&s.gw, RAPIDLY_TOKEN, &json!({name: "crm-42"}))?;
        assert_eq!(r.status, 201, "{name}: {}", r.body);
        let v = r.json()?;
        assert_eq!(v["customer_id"], id);
        let token = v["token"].as_str().ok_or("token")?;
        assert_eq!(
            through_proxy(&s.gw, token)?.upstream_header("x-hasura-user-id")?,
            vec![id]
        );
    }
    // Another workspace's token does not find it; an unknown id neither.
    for (token, ext) in [(RAPIDLY_OTHER_TOKEN, "crm-42"), (RAPIDLY_TOKEN, "nobody")] {
        let r = rapidly(&s.gw, token, &json!({"external_customer_id": ext}))?;
        assert_eq!(r.status, 422, "{}", r.body);
        let d = &r.json()?["detail"][0];
        assert_eq!(d["loc"], json!(["body", "external_customer_id"]));
        assert_eq!(d["msg"], "Customer does not exist.");
    }
    // Its external id changed: the old one no longer names it.
    assert!(put("crm-43")?.status < 300);
    let r = rapidly(
        &s.gw,
        RAPIDLY_TOKEN,
        &json!({"external_customer_id": "crm-42"}),
    )?;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = rapidly(
        &s.gw,
        RAPIDLY_TOKEN,
        &json!({"external_customer_id": "crm-43"}),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    // An external id names one customer of a workspace: another customer cannot take it.
    let r = admin_request(
        s.gw.admin,
        "PUT",
        "/admin/customers/6b5c4d3e-2f1a-4b0c-9d8e-7f6a5b4c3d2e",
        Some(
            &json!({"workspace_id": "ws-1", "email": "y@example.com", "external_id": "crm-43"})
                .to_string(),
        ),
    )?;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("external_id"), "{}", r.body);
    // Deleted: gone.
    let r = admin_request(
        s.gw.admin,
        "DELETE",
        &format!("/admin/customers/{id}"),
        None,
    )?;
    assert!(r.status < 300, "{}", r.body);
    let r = rapidly(
        &s.gw,
        RAPIDLY_TOKEN,
        &json!({"external_customer_id": "crm-43"}),
    )?;
    assert_eq!(r.status, 422, "{}", r.body);
    // Neither id: customer_id is required.
    let r = rapidly(
        &s.gw,
        RAPIDLY_TOKEN,
        &json!({"return_url": "https://example.com"}),
    )?;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()?["detail"][0]["loc"],
        json!(["body", "customer_id"])
    );
    Ok(())
}
