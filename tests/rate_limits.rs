//! Abuse protection over real sockets: two gateway replicas on one real Redis enforce one
//! limit on session creation (per credential, per client IP), on refresh (per session) and
//! on failed authentication (per client IP), answering 429 with `Retry-After` in the calling
//! API's own error format. `X-Forwarded-For` names the client only behind a trusted proxy.

mod common;

use common::*;
use serde_json::{json, Value};

const MOTTASL_TOKEN: &str = "limits-mottasl-token";
const AMITY_KEY: &str = "limits-amity-key";
const RAPIDLY_TOKEN: &str = "limits-rapidly-token";
const BUSINESS: &str = "550e8400-e29b-41d4-a716-446655440000";
const CUSTOMER: &str = "7b0c7c6e-6f1d-4c3e-9a57-2f1e4d8b9c01";

/// Dialects with a per-credential limit of 3 on Mottasl, and the given `[rate_limits]` keys.
fn config(limits: &str) -> String {
    format!(
        r#"
[rate_limits]
window_seconds = 60
{limits}

[[dialects.mottasl.credentials]]
token = "{MOTTASL_TOKEN}"
businesses = ["{BUSINESS}"]
roles = ["admin", "user"]
default_host_id = "h"
session_rate_limit = 3

[[dialects.amity.networks]]
network_id = "net-1"
api_key = "{AMITY_KEY}"
default_host_id = "h"

[[dialects.rapidly.workspaces]]
workspace_id = "ws-1"
token = "{RAPIDLY_TOKEN}"
default_host_id = "h"
portal_base_url = "https://portal.example/ws-1"

[[dialects.rapidly.customers]]
id = "{CUSTOMER}"
workspace_id = "ws-1"
email = "c@example.com"
"#
    )
}

/// Two replicas on one Redis.
fn replicas(
    redis: &Redis,
    echo: &echo::Echo,
    extra: &str,
) -> Result<(Gateway, Gateway), Box<dyn std::error::Error>> {
    let a = Gateway::start_with(echo.addr, Some(&redis.url()), extra)?;
    let b = Gateway::start_with(echo.addr, Some(&redis.url()), extra)?;
    Ok((a, b))
}

fn mottasl(
    gw: &Gateway,
    token: &str,
    platform_id: &str,
) -> Result<Resp, Box<dyn std::error::Error>> {
    let body = json!({
        "business_id": BUSINESS, "platform_type": "web", "platform_id": platform_id,
        "role": "user", "profile_name": "p", "display_name": "d",
        "profile_image_url": "https://example.com/p.jpg"
    });
    request(
        gw.proxy,
        "POST",
        "/v1/app/user.new.session",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {token}")),
        ],
        Some(&body.to_string()),
    )
}

fn amity(
    gw: &Gateway,
    headers: &[(&str, &str)],
    user: &str,
) -> Result<Resp, Box<dyn std::error::Error>> {
    let mut h = vec![
        ("Content-Type", "application/json"),
        ("X-API-Key", AMITY_KEY),
    ];
    h.extend_from_slice(headers);
    request(
        gw.proxy,
        "POST",
        "/api/v3/sessions",
        &h,
        Some(&json!({"userId": user, "deviceId": format!("d-{user}")}).to_string()),
    )
}

fn rapidly(gw: &Gateway) -> Result<Resp, Box<dyn std::error::Error>> {
    request(
        gw.proxy,
        "POST",
        "/api/customer-sessions/",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {RAPIDLY_TOKEN}")),
        ],
        Some(&json!({"customer_id": CUSTOMER}).to_string()),
    )
}

/// A 429 with a sane `Retry-After` (whole seconds, within the 60 s window's reach).
fn assert_429(r: &Resp) -> Result<Value, Box<dyn std::error::Error>> {
    assert_eq!(r.status, 429, "{}", r.body);
    let secs: u64 = r.header("retry-after").ok_or("no Retry-After")?.parse()?;
    assert!((1..=120).contains(&secs), "Retry-After {secs}");
    Ok(r.json()?)
}

#[test]
fn session_creation_is_limited_per_credential_across_replicas() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let (a, b) = replicas(&redis, &echo, &config("create_per_ip = 0"))?;
    // The credential's own limit (3) holds across both replicas.
    assert_eq!(mottasl(&a, MOTTASL_TOKEN, "1")?.status, 200);
    assert_eq!(mottasl(&b, MOTTASL_TOKEN, "2")?.status, 200);
    assert_eq!(mottasl(&a, MOTTASL_TOKEN, "3")?.status, 200);
    let v = assert_429(&mottasl(&b, MOTTASL_TOKEN, "4")?)?;
    assert_eq!(v["success"], false);
    assert!(v["message"]
        .as_str()
        .is_some_and(|m| m.contains("retry after")));
    // Nothing was created for the refused request.
    assert_eq!(
        redis.key_count("sg:sess:*")?,
        3,
        "a refused creation must not write a session"
    );
    // Other credentials are not affected (their limit is the global default: unlimited).
    for i in 0..5 {
        assert_eq!(amity(&a, &[], &format!("u{i}"))?.status, 200);
    }
    assert_eq!(rapidly(&b)?.status, 201);
    Ok(())
}

#[test]
fn session_creation_is_limited_per_client_ip_in_each_dialects_format() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let (a, b) = replicas(&redis, &echo, &config("create_per_ip = 3"))?;
    assert_eq!(amity(&a, &[], "u1")?.status, 200);
    assert_eq!(amity(&b, &[], "u2")?.status, 200);
    assert_eq!(rapidly(&a)?.status, 201);
    // The fourth creation from this address, whatever the dialect, is refused.
    let v = assert_429(&amity(&b, &[], "u3")?)?;
    assert_eq!(v["status"], "error");
    assert_eq!(v["code"], 429000);
    let v = assert_429(&rapidly(&a)?)?;
    assert_eq!(v["error"], "TooManyRequests");
    assert!(v["detail"].is_string());
    let v = assert_429(&mottasl(&b, MOTTASL_TOKEN, "9")?)?;
    assert_eq!(v["success"], false);
    // A client cannot pick another address by sending X-Forwarded-For: no proxy is trusted.
    assert_eq!(
        amity(&a, &[("X-Forwarded-For", "198.51.100.20")], "u4")?.status,
        429
    );
    let metrics = request(a.admin, "GET", "/metrics", &[], None)?.body;
    assert!(
        metrics.contains("sessiongate_rate_limited_total{limit=\"create_per_ip\"}"),
        "{metrics}"
    );
    Ok(())
}

#[test]
fn refresh_is_limited_per_session_and_per_ip() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let (a, b) = replicas(
        &redis,
        &echo,
        &config("refresh_per_session = 2\nrefresh_per_ip = 4"),
    )?;
    let create = |gw: &Gateway| -> Result<String, Box<dyn std::error::Error>> {
        let body = json!({"user_id": "u", "business_id": "b", "host_id": "h", "role": "user"});
        let r = admin_request(gw.admin, "POST", "/admin/sessions", Some(&body.to_string()))?;
        Ok(r.json()?["refresh_token"]
            .as_str()
            .ok_or("refresh_token")?
            .to_string())
    };
    let refresh = |gw: &Gateway, token: &str| {
        request(
            gw.proxy,
            "POST",
            "/auth/refresh",
            &[("Content-Type", "application/json")],
            Some(&json!({ "refresh_token": token }).to_string()),
        )
    };
    let mut token = create(&a)?;
    for gw in [&a, &b] {
        let r = refresh(gw, &token)?;
        assert_eq!(r.status, 200, "{}", r.body);
        token = r.json()?["refresh_token"]
            .as_str()
            .ok_or("refresh_token")?
            .to_string();
    }
    // Third refresh of one session within the window: refused in the gateway's format, and
    // the presented token is not spent (no rotation happened).
    let v = assert_429(&refresh(&a, &token)?)?;
    assert_eq!(v["error"], "rate_limited");
    // A second session from the same address: one more refresh passes the per-IP limit (4),
    // the next does not.
    let other = create(&b)?;
    let r = refresh(&b, &other)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_429(&refresh(&a, &other)?)?;
    Ok(())
}

#[test]
fn failed_authentication_blocks_the_address_on_every_replica() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let (a, b) = replicas(&redis, &echo, &config("auth_failures_per_ip = 3"))?;
    let (_, good) = a.create_session("u", "b", "h", "user", 600)?;
    let bad = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad-signature";
    for _ in 0..3 {
        assert_eq!(
            authed(a.proxy, "GET", "/v1/graphql", bad, &[], None)?.status,
            401
        );
    }
    // Still within the limit on both.
    assert_eq!(
        authed(a.proxy, "GET", "/v1/graphql", &good, &[], None)?.status,
        200
    );
    // The fourth failure (on B) is over the shared count: B refuses this address's
    // failures with 429 from now on...
    assert_429(&authed(b.proxy, "GET", "/v1/graphql", bad, &[], None)?)?;
    let v = assert_429(&authed(
        b.proxy,
        "GET",
        "/v1/graphql",
        "another-guess",
        &[],
        None,
    )?)?;
    assert_eq!(v["error"], "rate_limited");
    // ...while a valid session from the same address (a NAT, a /64) still passes...
    assert_eq!(
        authed(b.proxy, "GET", "/v1/graphql", &good, &[], None)?.status,
        200
    );
    // ...and the session APIs, where credentials are guessed, refuse the address outright,
    // in their own formats.
    let v = assert_429(&mottasl(&b, MOTTASL_TOKEN, "1")?)?;
    assert_eq!(v["success"], false);
    // Public routes need no authentication and stay open.
    assert_eq!(request(b.proxy, "GET", "/public/x", &[], None)?.status, 200);
    // A learns at this address's next failure there (at most limit + replicas - 1 failures).
    assert_429(&authed(a.proxy, "GET", "/v1/graphql", bad, &[], None)?)?;
    assert_429(&authed(a.proxy, "GET", "/v1/graphql", bad, &[], None)?)?;
    assert_eq!(
        authed(a.proxy, "GET", "/v1/graphql", &good, &[], None)?.status,
        200
    );
    // Dialect endpoints count wrong credentials too.
    let redis2 = Redis::start()?;
    let c = Gateway::start_with(
        echo.addr,
        Some(&redis2.url()),
        &config("auth_failures_per_ip = 2"),
    )?;
    for _ in 0..3 {
        let r = amity_with_key(&c, "wrong-key")?;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let v = assert_429(&amity(&c, &[], "u1")?)?;
    assert_eq!(v["code"], 429000);
    Ok(())
}

fn amity_with_key(gw: &Gateway, key: &str) -> Result<Resp, Box<dyn std::error::Error>> {
    request(
        gw.proxy,
        "POST",
        "/api/v3/sessions",
        &[("Content-Type", "application/json"), ("X-API-Key", key)],
        Some(&json!({"userId": "u", "deviceId": "d"}).to_string()),
    )
}

#[test]
fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_edited(
        echo.addr,
        Some(&redis.url()),
        &config("auth_failures_per_ip = 2"),
        |text| text.replace("[proxy]\n", "[proxy]\ntrusted_proxies = [\"127.0.0.1\"]\n"),
    )?;
    let (_, good) = gw.create_session("u", "b", "h", "user", 600)?;
    let bad = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad-signature";
    let from = |client: &str, token: &str| {
        authed(
            gw.proxy,
            "GET",
            "/v1/graphql",
            token,
            &[("X-Forwarded-For", client)],
            None,
        )
    };
    for _ in 0..2 {
        assert_eq!(from("203.0.113.5", bad)?.status, 401);
    }
    // The third failure is over the limit: that client's failures get 429 now; another
    // client behind the same proxy, and the proxy itself, still get plain 401s.
    assert_429(&from("203.0.113.5", bad)?)?;
    assert_429(&from("203.0.113.5", bad)?)?;
    assert_eq!(from("203.0.113.6", bad)?.status, 401);
    assert_eq!(
        authed(gw.proxy, "GET", "/v1/graphql", "guess", &[], None)?.status,
        401
    );
    // A valid session passes whoever the client is.
    assert_eq!(from("203.0.113.5", &good)?.status, 200);
    // A client that prepends an address of its own choosing is still itself: the walk
    // starts at the right, where the trusted proxy appended the real peer.
    assert_429(&from("203.0.113.6, 203.0.113.5", bad)?)?;
    Ok(())
}

#[test]
fn limits_hold_per_replica_while_redis_is_down() -> TestResult {
    let mut redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_with(
        echo.addr,
        Some(&redis.url()),
        &config("auth_failures_per_ip = 2"),
    )?;
    let (_, good) = gw.create_session("u", "b", "h", "user", 600)?;
    redis.stop();
    // Let the gateway notice the outage (its stale window does not cover an uncached
    // session anyway).
    let bad = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad-signature";
    for _ in 0..2 {
        assert_eq!(
            authed(gw.proxy, "GET", "/v1/graphql", bad, &[], None)?.status,
            401
        );
    }
    // Counted in process: the third failure is over the limit.
    assert_429(&authed(gw.proxy, "GET", "/v1/graphql", bad, &[], None)?)?;
    // The store is down, so the valid session cannot be confirmed: 503, never 429 or 200.
    assert_eq!(
        authed(gw.proxy, "GET", "/v1/graphql", &good, &[], None)?.status,
        503
    );
    let metrics = request(gw.admin, "GET", "/metrics", &[], None)?.body;
    let fallback = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sessiongate_rate_limit_fallback_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(fallback, Some(3), "{metrics}");
    Ok(())
}

/// Before: `refresh_per_session` counted before the refresh secret was checked, so anyone
/// who knew a session id (the refresh token's visible prefix) could use up its refreshes
/// and lock its owner out. Now guesses count against the guesser's address only.
#[test]
fn refresh_guesses_do_not_use_up_the_owners_refreshes() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_edited(
        echo.addr,
        Some(&redis.url()),
        &config("refresh_per_session = 3\nrefresh_per_ip = 1000\nauth_failures_per_ip = 10"),
        |t| t.replace("[proxy]\n", "[proxy]\ntrusted_proxies = [\"127.0.0.1\"]\n"),
    )?;
    let body = json!({"user_id": "u", "business_id": "b", "host_id": "h", "role": "user"});
    let r = admin_request(gw.admin, "POST", "/admin/sessions", Some(&body.to_string()))?;
    let token = r.json()?["refresh_token"]
        .as_str()
        .ok_or("refresh_token")?
        .to_string();
    let (sid, secret) = token.split_once('.').ok_or("token shape")?;
    let refresh = |token: &str, client: &str| {
        request(
            gw.proxy,
            "POST",
            "/auth/refresh",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", client),
            ],
            Some(&json!({ "refresh_token": token }).to_string()),
        )
    };
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..45 {
        // Same session id, a well-formed secret that is not the session's.
        let mut guess: Vec<u8> = secret.bytes().rev().collect();
        guess[0] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz012"[i];
        let guess = format!("{sid}.{}", String::from_utf8(guess)?);
        assert_ne!(guess, token);
        *statuses
            .entry(refresh(&guess, "203.0.113.9")?.status)
            .or_insert(0) += 1;
    }
    // The guesser is refused (401, then 429 once its address is over the failure limit)...
    let refused = statuses.get(&401).copied().unwrap_or(0);
    assert!((10..=11).contains(&refused), "{statuses:?}");
    assert_eq!(
        statuses.get(&429).copied(),
        Some(45 - refused),
        "{statuses:?}"
    );
    // ...and the owner, elsewhere, still has all three refreshes.
    let mut current = token.clone();
    for _ in 0..3 {
        let r = refresh(&current, "198.51.100.7")?;
        assert_eq!(r.status, 200, "{}", r.body);
        current = r.json()?["refresh_token"]
            .as_str()
            .ok_or("refresh_token")?
            .to_string();
    }
    assert_429(&refresh(&current, "198.51.100.7")?)?;
    // A spent token is reuse even with the session's limit used up (a thief refreshing
    // often must not keep the owner from tripping reuse detection): 401 and the session is
    // revoked, so the current token dies too.
    let r = refresh(&token, "198.51.100.7")?;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = admin_request(gw.admin, "GET", &format!("/admin/sessions/{sid}"), None)?;
    assert_eq!(r.status, 404, "{}", r.body);
    Ok(())
}

/// One policy everywhere (before, the session APIs counted every 401 and the proxy only
/// refused credentials): a credential presented and refused counts against the address; no
/// credential, or an expired one, does not — on proxied routes, session APIs and /auth/*.
#[test]
fn only_refused_credentials_count_against_the_address() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_with(
        echo.addr,
        Some(&redis.url()),
        &config("auth_failures_per_ip = 3"),
    )?;
    let (_, expired) = gw.create_session("u", "b", "h", "user", 1)?;
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let logout = |token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        request(gw.proxy, "POST", "/auth/logout", &headers, None)
    };
    for _ in 0..5 {
        // No credential, in each place.
        assert_eq!(
            request(gw.proxy, "GET", "/v1/graphql", &[], None)?.status,
            401
        );
        let r = request(
            gw.proxy,
            "POST",
            "/v1/app/user.new.session",
            &[("Content-Type", "application/json")],
            Some("{}"),
        )?;
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(logout(None)?.status, 401);
        // An expired token, in each place.
        let r = authed(gw.proxy, "GET", "/v1/graphql", &expired, &[], None)?;
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(logout(Some(&expired))?.status, 401);
    }
    // Still not refused: none of that was a guess. Refused credentials are, wherever they
    // come in: the fourth failure is over the limit (3).
    assert_eq!(mottasl(&gw, "wrong-token", "1")?.status, 401);
    assert_eq!(logout(Some("not-a-token"))?.status, 401);
    assert_eq!(
        authed(gw.proxy, "GET", "/v1/graphql", "not-a-token", &[], None)?.status,
        401
    );
    assert_429(&authed(
        gw.proxy,
        "GET",
        "/v1/graphql",
        "another",
        &[],
        None,
    )?)?;
    Ok(())
}
