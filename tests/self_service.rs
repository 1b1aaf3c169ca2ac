//! Self-service sessions: a user lists their live sessions (`GET /auth/sessions`), ends one
//! (`DELETE /auth/sessions/{id}`) or all but the current one (`DELETE /auth/sessions`, "sign
//! out other devices"), on every replica; the admin lists a user's sessions. Real gateways,
//! a real echo upstream and a real Redis (the per-user index lives there).

mod common;

use common::echo::Echo;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

type Error = Box<dyn std::error::Error>;

const AMITY_KEY: &str = "self-service-amity-key";

fn amity() -> String {
    format!(
        r#"
[dialects.amity]
[[dialects.amity.networks]]
network_id = "net-ss"
api_key = "{AMITY_KEY}"
default_host_id = "ss-host"
"#
    )
}

/// An Amity login from a device with a user agent: (session id, access token).
fn login(gw: &Gateway, user: &str, device: &str, ua: &str) -> Result<(String, String), Error> {
    let r = request(
        gw.proxy,
        "POST",
        "/api/v5/sessions",
        &[
            ("content-type", "application/json"),
            ("x-api-key", AMITY_KEY),
            ("user-agent", ua),
        ],
        Some(&json!({"userId": user, "deviceId": device}).to_string()),
    )?;
    if r.status != 200 {
        return Err(format!("login: {} {}", r.status, r.body).into());
    }
    let token = r.json()?["accessToken"]
        .as_str()
        .ok_or("accessToken")?
        .to_string();
    let mine = list(gw, &token)?;
    let current = mine
        .iter()
        .find(|s| s["current"] == true)
        .and_then(|s| s["session_id"].as_str())
        .ok_or("no current session listed")?
        .to_string();
    Ok((current, token))
}

fn list(gw: &Gateway, token: &str) -> Result<Vec<Value>, Error> {
    let r = authed(gw.proxy, "GET", "/auth/sessions", token, &[], None)?;
    if r.status != 200 {
        return Err(format!("list: {} {}", r.status, r.body).into());
    }
    Ok(r.json()?["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn ids(list: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = list
        .iter()
        .filter_map(|s| s["session_id"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

fn status(gw: &Gateway, token: &str) -> Result<u16, Error> {
    Ok(authed(gw.proxy, "GET", "/v1/graphql", token, &[], None)?.status)
}

#[test]
fn users_list_and_end_their_own_sessions_on_every_replica() -> TestResult {
    let redis = Redis::start()?;
    let echo = Echo::start()?;
    let gw = Gateway::start_with(echo.addr, Some(&redis.url()), &amity())?;
    let other_replica = Gateway::start_with(echo.addr, Some(&redis.url()), &amity())?;
    other_replica.wait_subscribed()?;

    let (s1, t1) = login(&gw, "ss-user", "laptop", "UA-laptop")?;
    let (s2, t2) = login(&gw, "ss-user", "phone", "UA-phone")?;
    // The same user id in another business, and another user: never listed, never ended.
    let (s3, t3) = gw.create_session("ss-user", "other-business", "h", "user", 600)?;
    let (s4, t4) = gw.create_session("someone-else", "net-ss", "h", "user", 600)?;

    let mine = list(&gw, &t1)?;
    assert_eq!(ids(&mine), {
        let mut v = vec![s1.clone(), s2.clone()];
        v.sort();
        v
    });
    let first = mine
        .iter()
        .find(|s| s["session_id"] == s1.as_str())
        .ok_or("s1 listed")?;
    assert_eq!(first["current"], true);
    assert_eq!(first["source"], "amity");
    assert_eq!(first["user_agent"], "UA-laptop");
    assert_eq!(first["ip"], "127.0.0.0/24");
    assert!(first["created_at"].is_string() && first["expires_at"].is_string());
    // The listing itself used s1: its last_seen_at is written off the request path.
    assert!(eventually(Duration::from_secs(5), || list(&gw, &t1)
        .ok()
        .and_then(|l| l.into_iter().find(|s| s["session_id"] == s1.as_str()))
        .is_some_and(|s| s["last_seen_at"].is_string())));

    // Someone else's session, one of another business, garbage: 404 alike; nothing ended.
    for id in [s4.as_str(), s3.as_str(), "not-a-session-id"] {
        let r = authed(
            gw.proxy,
            "DELETE",
            &format!("/auth/sessions/{id}"),
            &t1,
            &[],
            None,
        )?;
        assert_eq!(r.status, 404, "{id}: {}", r.body);
    }
    assert_eq!(status(&gw, &t3)?, 200);
    assert_eq!(status(&gw, &t4)?, 200);

    // Warm the other replica's cache, then end s2 through the first one: refused there too.
    assert_eq!(status(&other_replica, &t2)?, 200);
    let r = authed(
        gw.proxy,
        "DELETE",
        &format!("/auth/sessions/{s2}"),
        &t1,
        &[],
        None,
    )?;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(status(&gw, &t2)?, 401);
    assert!(eventually_status(Duration::from_secs(5), 401, || authed(
        other_replica.proxy,
        "GET",
        "/v1/graphql",
        &t2,
        &[],
        None
    )));

    // Sign out other devices: two more logins end, the current one and the others stay.
    let (_, t5) = login(&gw, "ss-user", "tablet", "UA-tablet")?;
    let (_, t6) = login(&gw, "ss-user", "tv", "UA-tv")?;
    assert_eq!(status(&other_replica, &t5)?, 200);
    let r = authed(gw.proxy, "DELETE", "/auth/sessions", &t1, &[], None)?;
    assert_eq!(r.status, 204, "{}", r.body);
    for t in [&t5, &t6] {
        assert_eq!(status(&gw, t)?, 401);
    }
    assert!(eventually_status(Duration::from_secs(5), 401, || authed(
        other_replica.proxy,
        "GET",
        "/v1/graphql",
        &t5,
        &[],
        None
    )));
    assert_eq!(status(&gw, &t1)?, 200);
    assert_eq!(status(&gw, &t3)?, 200);
    assert_eq!(status(&gw, &t4)?, 200);
    assert_eq!(ids(&list(&gw, &t1)?), vec![s1.clone()]);

    // The admin sees the user id's sessions in every business.
    let r = admin_request(gw.admin, "GET", "/admin/users/ss-user/sessions", None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    let all = r.json()?["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(ids(&all), {
        let mut v = vec![s1.clone(), s3.clone()];
        v.sort();
        v
    });
    assert!(all.iter().any(|s| s["business_id"] == "other-business"));

    // No bearer: 401 in the gateway's format; a bad one counts like any failed login.
    let r = request(gw.proxy, "GET", "/auth/sessions", &[], None)?;
    assert_eq!(r.status, 401);
    let r = authed(gw.proxy, "GET", "/auth/sessions", "garbage", &[], None)?;
    assert_eq!(r.status, 401);
    // The index lives in Redis under one hash-tagged key per user, expiring.
    assert!(redis.key_count("sg:us:*")? >= 2);
    Ok(())
}

/// A browser-shaped user id (UTF-8) can be listed by the admin too.
#[test]
fn admin_lists_utf8_user_ids() -> TestResult {
    let redis = Redis::start()?;
    let echo = Echo::start()?;
    let gw = Gateway::start_with(echo.addr, Some(&redis.url()), &amity())?;
    let (s, _) = login(&gw, "Zoë", "d", "UA")?;
    let r = admin_request(gw.admin, "GET", "/admin/users/Zo%C3%AB/sessions", None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        ids(r.json()?["sessions"].as_array().ok_or("sessions")?),
        vec![s]
    );
    Ok(())
}
