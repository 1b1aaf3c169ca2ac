//! Session lifecycle over real sockets and a real Redis: refresh rotation with reuse
//! detection, concurrent refreshes, logout, short-lived access tokens.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// (session_id, access_token, refresh_token) from the admin API.
fn create(gw: &Gateway) -> Result<(String, String, String), Box<dyn std::error::Error>> {
    let body = json!({"user_id": "u1", "business_id": "b1", "host_id": "h1", "role": "user"});
    let r = admin_request(gw.admin, "POST", "/admin/sessions", Some(&body.to_string()))?;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json()?;
    let field = |k: &str| -> Result<String, Box<dyn std::error::Error>> {
        Ok(v[k].as_str().ok_or(format!("no {k}"))?.to_string())
    };
    Ok((
        field("session_id")?,
        field("access_token")?,
        field("refresh_token")?,
    ))
}

fn refresh(gw: &Gateway, token: &str) -> Result<Resp, Box<dyn std::error::Error>> {
    request(
        gw.proxy,
        "POST",
        "/auth/refresh",
        &[("Content-Type", "application/json")],
        Some(&json!({ "refresh_token": token }).to_string()),
    )
}

fn tokens(r: &Resp) -> Result<(String, String), Box<dyn std::error::Error>> {
    let v: Value = r.json()?;
    Ok((
        v["access_token"]
            .as_str()
            .ok_or("access_token")?
            .to_string(),
        v["refresh_token"]
            .as_str()
            .ok_or("refresh_token")?
            .to_string(),
    ))
}

fn proxied_status(gw: &Gateway, token: &str) -> Result<u16, Box<dyn std::error::Error>> {
    Ok(authed(gw.proxy, "GET", "/v1/graphql", token, &[], None)?.status)
}

#[test]
fn refresh_rotates_and_reuse_revokes_everything() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    let (sid, access1, rt1) = create(&gw)?;

    let r = refresh(&gw, &rt1)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()?["expires_at"].is_string());
    let (access2, rt2) = tokens(&r)?;
    assert_ne!(rt2, rt1);
    let up = authed(gw.proxy, "GET", "/v1/graphql", &access2, &[], None)?;
    assert_eq!(up.status, 200);
    assert_eq!(up.upstream_header("x-hasura-user-id")?, vec!["u1"]);

    let (access3, rt3) = tokens(&refresh(&gw, &rt2)?)?;
    assert_eq!(proxied_status(&gw, &access3)?, 200);
    // Only hashes are stored.
    let stored = redis.command(&format!("GET sg:rt:{{{sid}}}"))?;
    assert!(
        !stored.contains(&rt3[44..]),
        "refresh token stored in clear"
    );

    // rt1 again: reuse. 401, and the session is gone with every token of it.
    let r = refresh(&gw, &rt1)?;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()?["error"], "invalid_grant");
    for t in [&access1, &access2, &access3] {
        assert_eq!(proxied_status(&gw, t)?, 401);
    }
    assert_eq!(refresh(&gw, &rt3)?.status, 401);
    assert_eq!(redis.key_count(&format!("sg:*{{{sid}}}"))?, 0);

    // Garbage is 400/401, never a panic or a 500.
    assert_eq!(refresh(&gw, "nonsense")?.status, 401);
    let r = request(
        gw.proxy,
        "POST",
        "/auth/refresh",
        &[("Content-Type", "application/json")],
        Some("{}"),
    )?;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("refresh_token"));
    assert!(!gw.log().contains(&rt1) && !gw.log().contains(&rt3));
    Ok(())
}

#[test]
fn concurrent_refreshes_never_yield_two_live_successors() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    for _round in 0..3 {
        let (_, _, rt) = create(&gw)?;
        let results: Vec<Resp> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| refresh(&gw, &rt).map_err(|e| e.to_string())))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .filter_map(Result::ok)
                .collect()
        });
        assert_eq!(results.len(), 8);
        let winners: Vec<&Resp> = results.iter().filter(|r| r.status == 200).collect();
        assert!(winners.len() <= 1, "{} successors", winners.len());
        assert!(results.iter().all(|r| r.status == 200 || r.status == 401));
        let mut live = 0;
        for w in winners {
            let (_, next) = tokens(w)?;
            if refresh(&gw, &next)?.status == 200 {
                live += 1;
            }
        }
        assert!(live <= 1);
    }
    Ok(())
}

#[test]
fn logout_ends_the_session_everywhere() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    let (_, access, rt) = create(&gw)?;
    assert_eq!(proxied_status(&gw, &access)?, 200);
    let r = authed(gw.proxy, "POST", "/auth/logout", &access, &[], None)?;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(proxied_status(&gw, &access)?, 401);
    assert_eq!(refresh(&gw, &rt)?.status, 401);
    let r = authed(gw.proxy, "POST", "/auth/logout", &access, &[], None)?;
    assert_eq!(r.status, 401);
    let r = request(gw.proxy, "POST", "/auth/logout", &[], None)?;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(
        echo.hits(),
        1,
        "only the first proxied call reached the upstream"
    );
    Ok(())
}

#[test]
fn short_lived_access_tokens_are_renewed_by_refresh() -> TestResult {
    let echo = echo::Echo::start()?;
    // access_token_ttl_seconds lives in [tokens]; the harness's [tokens] comes first.
    let gw = Gateway::start_with(echo.addr, None, "")?;
    let text = std::fs::read_to_string(&gw.config_path)?.replace(
        "max_ttl_seconds = 86400",
        "max_ttl_seconds = 86400\naccess_token_ttl_seconds = 1",
    );
    std::fs::write(&gw.config_path, text)?;
    let gw = gw.restart()?;
    let (_, access, rt) = create(&gw)?;
    assert_eq!(proxied_status(&gw, &access)?, 200);
    assert!(
        eventually(Duration::from_secs(5), || proxied_status(&gw, &access)
            .is_ok_and(|s| s == 401)),
        "a 1 s access token must expire"
    );
    let r = refresh(&gw, &rt)?;
    assert_eq!(r.status, 200, "{}", r.body);
    let (fresh, _) = tokens(&r)?;
    assert_eq!(proxied_status(&gw, &fresh)?, 200);
    Ok(())
}
