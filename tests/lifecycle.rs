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
fn concurrent_refreshes_of_one_token_yield_one_successor() -> TestResult {
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
        // One rotation: the others land within its retry grace and get the same successor
        // (none is reuse, none a second successor).
        assert!(
            results.iter().all(|r| r.status == 200),
            "{:?}",
            results.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        let mut successors = Vec::new();
        for r in &results {
            successors.push(tokens(r)?.1);
        }
        successors.sort();
        successors.dedup();
        assert_eq!(successors.len(), 1, "{} successors", successors.len());
        assert_eq!(refresh(&gw, &successors[0])?.status, 200);
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

/// Two replicas on one Redis, with the harness's 300 ms store timeout.
fn two_replicas(
    edit: impl Fn(String) -> String,
) -> Result<(Redis, echo::Echo, Gateway, Gateway), Box<dyn std::error::Error>> {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let a = Gateway::start_edited(echo.addr, Some(&redis.url()), "", &edit)?;
    let b = Gateway::start_edited(echo.addr, Some(&redis.url()), "", &edit)?;
    a.wait_subscribed()?;
    b.wait_subscribed()?;
    Ok((redis, echo, a, b))
}

/// Redis stalls past the store timeout (a failover, a fork): the gateway answers 503, but the
/// rotation runs when Redis resumes. The client does what the 503 tells it, retries with the
/// same token (on another replica): it gets the successor, and nobody is logged out.
#[test]
fn a_refresh_lost_to_a_store_stall_is_retried_without_logging_the_user_out() -> TestResult {
    // Without rate limits, the rotation is the refresh's first write: the stall catches it
    // and not an earlier counter (one multiplexed connection: a stalled write holds up what
    // is sent after it, and a refresh whose check timed out never sent its rotation).
    let (redis, _echo, a, b) = two_replicas(|t| t + "\n[rate_limits]\nenabled = false\n")?;
    let (sid, access, rt1) = create(&a)?;
    // A first rotation loads the script into Redis, as any earlier refresh would have.
    let (_, rt2) = tokens(&refresh(&a, &rt1)?)?;
    for gw in [&a, &b] {
        assert_eq!(proxied_status(gw, &access)?, 200);
    }

    // Writes paused, as in a failover (Redis' own failover pauses writes like this): the
    // token is checked, the rotation waits past the store timeout.
    redis.command("CLIENT PAUSE 1500 WRITE")?;
    let r = refresh(&a, &rt2)?;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()?["error"], "store_unavailable");
    let message = r.json()?["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("may or may not have happened") && message.contains("retry"),
        "{message}"
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    // The rotation ran when Redis resumed: rt2 is spent, and its retry record is there.
    assert!(
        eventually(Duration::from_secs(3), || redis
            .command(&format!("EXISTS sg:rtr:{{{sid}}}"))
            .is_ok_and(|r| r.starts_with(":1"))),
        "the stalled rotation never ran"
    );

    // The retry, on the other replica, as a client does it: after `Retry-After`, again
    // while 503 (its connection may still be catching up on the stall). Never 401: the
    // successor the stalled rotation made current.
    let mut r = refresh(&b, &rt2)?;
    for _ in 0..5 {
        if r.status != 503 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        r = refresh(&b, &rt2)?;
    }
    assert_eq!(r.status, 200, "{}", r.body);
    let (access3, rt3) = tokens(&r)?;
    // The same successor again from the first replica (a second retry).
    let r = refresh(&a, &rt2)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(tokens(&r)?.1, rt3);
    for gw in [&a, &b] {
        assert_eq!(proxied_status(gw, &access)?, 200, "the session lives");
        assert_eq!(proxied_status(gw, &access3)?, 200);
    }
    // rt3 is the session's current token.
    let r = refresh(&b, &rt3)?;
    assert_eq!(r.status, 200, "{}", r.body);
    // Only hashes and a sealed form are stored: no refresh token in clear.
    let record = redis.command(&format!("GET sg:rtr:{{{sid}}}"))?;
    for t in [&rt2, &rt3, &tokens(&r)?.1] {
        assert!(
            !record.contains(&t[44..]),
            "a refresh token stored in clear"
        );
    }
    assert!(!a.log().contains(&rt3[44..]) && !b.log().contains(&rt3[44..]));
    Ok(())
}

/// After the grace a spent token is reuse again: the session is revoked on every replica.
#[test]
fn a_spent_refresh_token_after_the_grace_is_reuse_everywhere() -> TestResult {
    let (_redis, _echo, a, b) = two_replicas(|t| {
        t.replacen(
            "[tokens]\n",
            "[tokens]\nrefresh_retry_grace_seconds = 1\n",
            1,
        )
    })?;
    let (_, access, rt1) = create(&a)?;
    let (access2, _) = tokens(&refresh(&a, &rt1)?)?;
    assert_eq!(proxied_status(&b, &access2)?, 200);
    std::thread::sleep(Duration::from_millis(1_300));
    let r = refresh(&b, &rt1)?;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()?["error"], "invalid_grant");
    for gw in [&a, &b] {
        for t in [&access, &access2] {
            assert!(eventually_status(Duration::from_secs(1), 401, || {
                authed(gw.proxy, "GET", "/v1/graphql", t, &[], None)
            }));
        }
    }
    Ok(())
}

/// A logout that times out happened whole or not at all: never the refresh state deleted
/// with the session left alive. Its retry then finds the session gone.
#[test]
fn a_logout_lost_to_a_store_stall_ends_the_whole_session() -> TestResult {
    let (redis, _echo, a, b) = two_replicas(|t| t)?;
    // Load the delete script, as any earlier logout would have.
    let (_, warm, _) = create(&a)?;
    assert_eq!(
        authed(a.proxy, "POST", "/auth/logout", &warm, &[], None)?.status,
        204
    );
    let (sid, access, rt) = create(&a)?;
    assert_eq!(proxied_status(&b, &access)?, 200);

    redis.command("CLIENT PAUSE 1500 WRITE")?;
    let r = authed(a.proxy, "POST", "/auth/logout", &access, &[], None)?;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("may or may not have happened"),
        "{}",
        r.body
    );
    // Once Redis resumes, the session and all its refresh state are gone together.
    assert!(
        eventually(Duration::from_secs(3), || redis
            .key_count(&format!("sg:*{{{sid}}}"))
            .is_ok_and(|n| n == 0)),
        "left behind: {}",
        redis.command(&format!("KEYS sg:*{{{sid}}}"))?
    );
    assert_eq!(refresh(&b, &rt)?.status, 401);
    // The retry (this replica still has the session cached: the stalled delete published
    // nothing): 204, and now every replica hears of it.
    let r = authed(a.proxy, "POST", "/auth/logout", &access, &[], None)?;
    assert_eq!(r.status, 204, "{}", r.body);
    for gw in [&a, &b] {
        assert!(eventually_status(Duration::from_secs(1), 401, || {
            authed(gw.proxy, "GET", "/v1/graphql", &access, &[], None)
        }));
    }
    Ok(())
}
