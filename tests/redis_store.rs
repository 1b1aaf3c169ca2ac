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

/// Issue 20, item 4: a Redis whose `maxmemory-policy` can evict sessiongate's keys
/// (`allkeys-*`, `volatile-*`: a revoked session or a revoke-all could come back) is refused
/// at start by every replica, naming the setting and the override; with
/// `store.allow_eviction` the replica runs and says what it found; and a Redis that becomes
/// evicting under a running replica (a failover to a misconfigured one) makes it unready.
#[test]
fn an_evicting_redis_is_refused_at_start_and_by_readiness() -> TestResult {
    let redis = Redis::start_with(&["--maxmemory-policy", "allkeys-lru"], false)?;
    let echo = echo::Echo::start()?;
    for replica in 0..2 {
        match Gateway::start(echo.addr, Some(&redis.url())) {
            Ok(_) => return Err(format!("replica {replica} started on allkeys-lru").into()),
            Err(e) => {
                let log = e.to_string();
                assert!(
                    log.contains("maxmemory-policy is allkeys-lru")
                        && log.contains("store.allow_eviction"),
                    "{log}"
                );
            }
        }
    }
    let allowed = Gateway::start_edited(echo.addr, Some(&redis.url()), "", |t| {
        t.replace("[store]\n", "[store]\nallow_eviction = true\n")
    })?;
    let ready = request(allowed.admin, "GET", "/readyz", &[], None)?;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready.body.contains("\"maxmemory_policy\":\"allkeys-lru\""),
        "{}",
        ready.body
    );
    let metrics = request(allowed.admin, "GET", "/metrics", &[], None)?.body;
    assert!(
        metrics.contains("sessiongate_store_eviction_safe 0"),
        "{metrics}"
    );
    // The test Redis runs AOF with appendfsync always.
    assert!(metrics.contains("sessiongate_store_durable 1"), "{metrics}");

    let safe = Redis::start()?;
    let a = Gateway::start(echo.addr, Some(&safe.url()))?;
    let b = Gateway::start(echo.addr, Some(&safe.url()))?;
    for gw in [&a, &b] {
        assert_eq!(request(gw.admin, "GET", "/readyz", &[], None)?.status, 200);
    }
    safe.command("CONFIG SET maxmemory-policy volatile-lru")?;
    for gw in [&a, &b] {
        let r = request(gw.admin, "GET", "/readyz", &[], None)?;
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            r.body.contains("unsafe_store") && r.body.contains("volatile-lru"),
            "{}",
            r.body
        );
    }
    safe.command("CONFIG SET maxmemory-policy noeviction")?;
    assert_eq!(request(a.admin, "GET", "/readyz", &[], None)?.status, 200);
    Ok(())
}
