//! Redis behaviour: persistence across gateway restarts, no round trip on a cache hit,
//! fail-closed outages and recovery without restart.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn sessions_survive_a_gateway_restart() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    let (sid, token) = gw.create_session("u", "b", "h", "user", 600)?;
    let ttl = redis.command(&format!("PTTL sg:sess:{{{sid}}}"))?;
    let ms: i64 = ttl
        .trim_start_matches(':')
        .lines()
        .next()
        .unwrap_or("0")
        .parse()?;
    assert!(
        ms > 590_000 && ms <= 600_000,
        "key TTL should match the session: {ms}"
    );
    let gw = gw.restart()?;
    let r = authed(gw.proxy, "GET", "/x", &token, &[], None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-hasura-user-id")?, vec!["u"]);
    Ok(())
}

#[test]
fn a_cache_hit_makes_no_redis_round_trip() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    gw.wait_subscribed()?;
    let (_, token) = gw.create_session("u", "b", "h", "user", 600)?;
    let before = redis.calls("get")?;
    for _ in 0..20 {
        assert_eq!(
            authed(gw.proxy, "GET", "/x", &token, &[], None)?.status,
            200
        );
    }
    assert_eq!(
        redis.calls("get")? - before,
        3,
        "only the first lookup may reach Redis: the session and its two generation counters"
    );
    Ok(())
}

#[test]
fn redis_outage_fails_closed_and_recovers_without_restart() -> TestResult {
    let mut redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    let (_, token) = gw.create_session("u", "b", "h", "user", 600)?;
    redis.stop();

    // Never looked up, so not cached: it cannot be checked, so it is not forwarded.
    let r = authed(gw.proxy, "GET", "/x", &token, &[], None)?;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()?["error"], "store_unavailable");
    assert_eq!(echo.hits(), 0);
    assert_eq!(request(gw.admin, "GET", "/readyz", &[], None)?.status, 503);
    let r = admin_request(
        gw.admin,
        "POST",
        "/admin/sessions",
        Some(r#"{"user_id":"u","business_id":"b","host_id":"h","role":"r"}"#),
    )?;
    assert_eq!(r.status, 503, "creation must not claim success: {}", r.body);
    assert!(gw.log().lines().all(|l| !l.contains(&token)));

    redis.restart()?;
    assert!(
        eventually_status(Duration::from_secs(15), 200, || request(
            gw.admin,
            "GET",
            "/readyz",
            &[],
            None
        )),
        "readiness did not recover"
    );
    // The session was not deleted by the outage.
    assert!(
        eventually_status(Duration::from_secs(10), 200, || authed(
            gw.proxy,
            "GET",
            "/x",
            &token,
            &[],
            None
        )),
        "session did not work again after Redis came back"
    );
    let m = request(gw.admin, "GET", "/metrics", &[], None)?.body;
    assert!(
        m.lines().any(
            |l| l.starts_with("sessiongate_store_errors_total{op=\"get\"}") && !l.ends_with(" 0")
        ),
        "store errors not counted"
    );
    Ok(())
}

#[test]
fn a_hung_redis_times_out_into_503() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    let (_, token) = gw.create_session("u", "b", "h", "user", 600)?;
    redis.signal("STOP");
    let started = std::time::Instant::now();
    let r = authed(gw.proxy, "GET", "/x", &token, &[], None);
    redis.signal("CONT");
    let r = r?;
    assert_eq!(r.status, 503, "{}", r.body);
    // The store timeout is 300 ms in the test config; allow generous slack for a busy CI box.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a hung Redis stalled the request"
    );
    assert!(
        eventually_status(Duration::from_secs(10), 200, || authed(
            gw.proxy,
            "GET",
            "/x",
            &token,
            &[],
            None
        )),
        "did not recover after Redis resumed"
    );
    Ok(())
}
