//! Several gateway processes on one real Redis behave as one gateway: a revocation, logout
//! or revoke-all on one replica is refused on the others (which had the session cached)
//! within 1 s; a replica that loses its subscription never serves a revoked session; and a
//! Redis outage is the explicit, bounded degraded mode.

mod common;

use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn replicas(
    n: usize,
    extra: &str,
) -> Result<(Redis, echo::Echo, Vec<Gateway>), Box<dyn std::error::Error>> {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let mut gws = Vec::new();
    for _ in 0..n {
        let gw = Gateway::start_with(echo.addr, Some(&redis.url()), extra)?;
        gw.wait_subscribed()?;
        gws.push(gw);
    }
    Ok((redis, echo, gws))
}

fn status(proxy: SocketAddr, token: &str) -> Result<u16, Box<dyn std::error::Error>> {
    Ok(authed(proxy, "GET", "/v1/graphql", token, &[], None)?.status)
}

/// Polls until `proxy` refuses `token`; returns how long that took.
fn refusal_lag(proxy: SocketAddr, token: &str, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if status(proxy, token).map_err(|e| e.to_string())? == 401 {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(format!("still accepted after {limit:?}"))
}

#[test]
fn a_revocation_reaches_every_replica_within_a_second() -> TestResult {
    let (_redis, _echo, gws) = replicas(3, "")?;
    let mut lags = Vec::new();
    for i in 0..15 {
        let (sid, token) = gws[0].create_session(&format!("u{i}"), "b", "h", "user", 600)?;
        // Cached on every replica (any replica accepts any session: no stickiness).
        for gw in &gws {
            assert_eq!(status(gw.proxy, &token)?, 200);
            assert_eq!(status(gw.proxy, &token)?, 200);
        }
        let revoker = &gws[i % 3];
        let r = admin_request(
            revoker.admin,
            "DELETE",
            &format!("/admin/sessions/{sid}"),
            None,
        )?;
        assert_eq!(r.status, 204);
        for gw in &gws {
            lags.push(refusal_lag(gw.proxy, &token, Duration::from_secs(1))?);
        }
    }
    lags.sort();
    let p50 = lags[lags.len() / 2];
    let max = lags[lags.len() - 1];
    eprintln!(
        "revocation lag over {} refusals: p50 {p50:?}, max {max:?}",
        lags.len()
    );
    assert!(max < Duration::from_secs(1));
    Ok(())
}

#[test]
fn logout_on_one_replica_ends_the_session_on_all() -> TestResult {
    let (_redis, _echo, gws) = replicas(2, "")?;
    let (_, token) = gws[0].create_session("u", "b", "h", "user", 600)?;
    assert_eq!(status(gws[1].proxy, &token)?, 200);
    let r = authed(gws[0].proxy, "POST", "/auth/logout", &token, &[], None)?;
    assert_eq!(r.status, 204);
    refusal_lag(gws[1].proxy, &token, Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn revoke_all_of_a_user_or_business_is_o1_and_reaches_every_replica() -> TestResult {
    let (redis, _echo, gws) = replicas(2, "")?;
    let (_, u1a) = gws[0].create_session("user-1", "biz", "h", "user", 600)?;
    let (_, u1b) = gws[1].create_session("user-1", "other-biz", "h", "user", 600)?;
    let (_, u2) = gws[0].create_session("user-2", "biz", "h", "user", 600)?;
    for t in [&u1a, &u1b, &u2] {
        assert_eq!(status(gws[1].proxy, t)?, 200);
    }
    let incr_before = redis.calls("incr")?;
    let keys_before = redis.calls("keys")? + redis.calls("scan")?;
    let r = admin_request(gws[0].admin, "DELETE", "/admin/users/user-1/sessions", None)?;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        redis.calls("incr")? - incr_before,
        1,
        "one counter, whatever the count"
    );
    assert_eq!(redis.calls("keys")? + redis.calls("scan")?, keys_before);
    for gw in &gws {
        refusal_lag(gw.proxy, &u1a, Duration::from_secs(1))?;
        refusal_lag(gw.proxy, &u1b, Duration::from_secs(1))?;
        assert_eq!(status(gw.proxy, &u2)?, 200);
    }
    // New sessions of the user work again.
    let (_, again) = gws[1].create_session("user-1", "biz", "h", "user", 600)?;
    assert_eq!(status(gws[0].proxy, &again)?, 200);

    // Business-wide: every user of it, on every replica; other businesses untouched.
    let (_, elsewhere) = gws[0].create_session("user-3", "other-biz", "h", "user", 600)?;
    let r = admin_request(
        gws[1].admin,
        "DELETE",
        "/admin/businesses/biz/sessions",
        None,
    )?;
    assert_eq!(r.status, 204);
    for gw in &gws {
        refusal_lag(gw.proxy, &u2, Duration::from_secs(1))?;
        refusal_lag(gw.proxy, &again, Duration::from_secs(1))?;
        assert_eq!(status(gw.proxy, &elsewhere)?, 200);
    }
    // Ids with reserved characters are percent-encoded in the path.
    let (_, odd) = gws[0].create_session("a b/c", "biz2", "h", "user", 600)?;
    let r = admin_request(
        gws[0].admin,
        "DELETE",
        "/admin/users/a%20b%2Fc/sessions",
        None,
    )?;
    assert_eq!(r.status, 204);
    assert_eq!(status(gws[1].proxy, &odd)?, 401);
    // GET lists (tests/self_service.rs); other methods are refused.
    let r = admin_request(gws[0].admin, "PUT", "/admin/users/x/sessions", None)?;
    assert_eq!(r.status, 405);
    Ok(())
}

#[test]
fn a_replica_that_lost_its_subscription_never_serves_a_revoked_session() -> TestResult {
    let (redis, _echo, gws) = replicas(2, "")?;
    for round in 0..3 {
        let (sid, token) = gws[0].create_session(&format!("u{round}"), "b", "h", "user", 600)?;
        assert_eq!(status(gws[1].proxy, &token)?, 200);
        // Every subscriber connection dies; the revocation's message is lost for all.
        let killed = redis.command("CLIENT KILL TYPE pubsub")?;
        assert!(killed.starts_with(':'), "{killed}");
        let r = admin_request(
            gws[0].admin,
            "DELETE",
            &format!("/admin/sessions/{sid}"),
            None,
        )?;
        assert_eq!(r.status, 204);
        assert_eq!(status(gws[1].proxy, &token)?, 401, "round {round}");
        // It resubscribes by itself (and flushed its cache on the way).
        gws[1].wait_subscribed()?;
        assert_eq!(status(gws[1].proxy, &token)?, 401);
    }
    Ok(())
}

fn metric(gw: &Gateway, name: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let r = request(gw.admin, "GET", "/metrics", &[], None)?;
    let line = r
        .body
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .ok_or(format!("no metric {name}"))?;
    Ok(line.rsplit(' ').next().ok_or("no value")?.parse()?)
}

#[test]
fn redis_outage_is_an_explicit_bounded_degraded_mode() -> TestResult {
    let (mut redis, _echo, gws) = replicas(1, "")?;
    let gw = &gws[0];
    // The harness's [store] section ends the generated file; append the window there.
    let text = std::fs::read_to_string(&gw.config_path)?.replace(
        "timeout_ms = 300",
        "timeout_ms = 300\nstale_window_seconds = 3",
    );
    std::fs::write(&gw.config_path, text)?;
    let gw = gws.into_iter().next().ok_or("no gateway")?.restart()?;
    gw.wait_subscribed()?;
    let (_, cached) = gw.create_session("u", "b", "h", "user", 600)?;
    let (_, uncached) = gw.create_session("v", "b", "h", "user", 600)?;
    assert_eq!(status(gw.proxy, &cached)?, 200);

    redis.stop();
    let down = Instant::now();
    // Uncached sessions fail closed at once (503, never 401: nothing is deleted).
    assert_eq!(status(gw.proxy, &uncached)?, 503);
    // Within the window the cached one is served.
    assert_eq!(status(gw.proxy, &cached)?, 200);
    let ready = request(gw.admin, "GET", "/readyz", &[], None)?;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()?["status"], "degraded");
    assert_eq!(metric(&gw, "sessiongate_degraded")?, 1.0);
    // Creation and revocation answer 503, never a false success.
    let body = json!({"user_id": "w", "business_id": "b", "host_id": "h", "role": "user"});
    let r = admin_request(gw.admin, "POST", "/admin/sessions", Some(&body.to_string()))?;
    assert_eq!(r.status, 503);
    let r = admin_request(gw.admin, "DELETE", "/admin/users/u/sessions", None)?;
    assert_eq!(r.status, 503);
    // After the window: 503 for the cached one too.
    assert!(eventually_status(Duration::from_secs(6), 503, || authed(
        gw.proxy,
        "GET",
        "/v1/graphql",
        &cached,
        &[],
        None
    )));
    assert!(
        down.elapsed() >= Duration::from_secs(3),
        "not before the window"
    );

    redis.restart()?;
    assert!(eventually_status(Duration::from_secs(10), 200, || authed(
        gw.proxy,
        "GET",
        "/v1/graphql",
        &cached,
        &[],
        None
    )));
    assert_eq!(status(gw.proxy, &uncached)?, 200);
    assert!(eventually(Duration::from_secs(5), || metric(
        &gw,
        "sessiongate_degraded"
    )
    .is_ok_and(|v| v == 0.0)));
    Ok(())
}

/// When Redis dies the event subscription drops at once and the replica stops trusting its
/// cache before it has seen the outage; the first lookups then hit a dead store. They must
/// count as the outage's start: a cached session is served from the first request on (within
/// the stale window), on every replica (issue 18).
#[test]
fn cached_sessions_are_served_from_the_outages_first_instant() -> TestResult {
    let (mut redis, _echo, gws) = replicas(2, "")?;
    let (_, cached) = gws[0].create_session("u", "b", "h", "user", 600)?;
    let (revoked_id, revoked) = gws[0].create_session("r", "b", "h", "user", 600)?;
    let (_, uncached) = gws[0].create_session("v", "b", "h", "user", 600)?;
    for gw in &gws {
        assert_eq!(status(gw.proxy, &cached)?, 200);
        assert_eq!(status(gw.proxy, &revoked)?, 200);
    }
    let r = admin_request(
        gws[0].admin,
        "DELETE",
        &format!("/admin/sessions/{revoked_id}"),
        None,
    )?;
    assert_eq!(r.status, 204);
    for gw in &gws {
        refusal_lag(gw.proxy, &revoked, Duration::from_secs(5))?;
    }

    redis.stop();
    for (i, gw) in gws.iter().enumerate() {
        for n in 0..10 {
            assert_eq!(
                status(gw.proxy, &cached)?,
                200,
                "replica {i}, request {n} after the outage began"
            );
        }
        assert_eq!(status(gw.proxy, &revoked)?, 401, "replica {i}");
        assert_eq!(status(gw.proxy, &uncached)?, 503, "replica {i}");
        assert_eq!(status(gw.proxy, &cached)?, 200, "replica {i}");
    }
    Ok(())
}

#[test]
fn strict_mode_refuses_cached_sessions_once_the_outage_is_seen() -> TestResult {
    let (mut redis, _echo, gws) = replicas(1, "")?;
    let gw = &gws[0];
    let text = std::fs::read_to_string(&gw.config_path)?.replace(
        "timeout_ms = 300",
        "timeout_ms = 300\nstale_window_seconds = 0",
    );
    std::fs::write(&gw.config_path, text)?;
    let gw = gws.into_iter().next().ok_or("no gateway")?.restart()?;
    gw.wait_subscribed()?;
    let (_, cached) = gw.create_session("u", "b", "h", "user", 600)?;
    assert_eq!(status(gw.proxy, &cached)?, 200);
    redis.stop();
    // The probe notices within about a second; from then on even cached sessions get 503.
    assert!(eventually_status(Duration::from_secs(3), 503, || authed(
        gw.proxy,
        "GET",
        "/v1/graphql",
        &cached,
        &[],
        None
    )));
    Ok(())
}

/// Waits until `gw` has counted `losses` data losses of the store and resubscribed.
fn noticed_loss(gw: &Gateway, losses: f64) -> TestResult {
    let counted = eventually(Duration::from_secs(10), || {
        metric(gw, "sessiongate_store_data_lost_total").is_ok_and(|v| v == losses)
    });
    if !counted {
        return Err(format!("the loss was not noticed; log:\n{}", gw.log()).into());
    }
    gw.wait_subscribed()
}

/// Redis loses a business revoke-all's counter. Partly (the counter and the epoch gone, the
/// session still there: a failover to a node that missed them, a lost Cluster shard): the
/// replicas write their floor back when they resubscribe, so a replica started afterwards
/// refuses the revoked session too (before, it accepted it). Wholly (restarted empty):
/// before, the replicas that saw the revoke-all refused every new session of the business
/// for 2 x cache TTL + 5 s (65 s) while a fresh replica accepted them; now the restored
/// counter gives new sessions a generation at the floor, accepted everywhere at once.
#[test]
fn revoke_all_survives_a_redis_data_loss_without_refusing_new_sessions() -> TestResult {
    let (mut redis, echo, gws) = replicas(2, "")?;
    let (_, old) = gws[0].create_session("u1", "lossy-biz", "h", "user", 600)?;
    for gw in &gws {
        assert_eq!(status(gw.proxy, &old)?, 200);
    }
    let r = admin_request(
        gws[0].admin,
        "DELETE",
        "/admin/businesses/lossy-biz/sessions",
        None,
    )?;
    assert_eq!(r.status, 204, "{}", r.body);
    for gw in &gws {
        refusal_lag(gw.proxy, &old, Duration::from_secs(1))?;
    }
    // A restart that keeps the data (AOF) is no loss.
    redis.stop();
    redis.restart()?;
    // (Resubscribed within the reconnect backoff, at most 2 s, plus the restart.)
    std::thread::sleep(Duration::from_secs(3));
    for gw in &gws {
        gw.wait_subscribed()?;
        assert_eq!(metric(gw, "sessiongate_store_data_lost_total")?, 0.0);
        assert_eq!(status(gw.proxy, &old)?, 401);
    }

    // Partial loss: the counter and the epoch go, the session stays.
    let keys = redis.command("KEYS sg:gen:*")?;
    let gen_keys: Vec<&str> = keys.lines().filter(|l| l.starts_with("sg:gen:")).collect();
    assert!(!gen_keys.is_empty(), "{keys}");
    for key in &gen_keys {
        redis.command(&format!("DEL {key}"))?;
    }
    redis.command("DEL sg:epoch")?;
    redis.command("CLIENT KILL TYPE pubsub")?;
    for gw in &gws {
        noticed_loss(gw, 1.0)?;
    }
    let fresh = Gateway::start_with(echo.addr, Some(&redis.url()), "")?;
    fresh.wait_subscribed()?;
    assert_eq!(
        status(fresh.proxy, &old)?,
        401,
        "a replica started after the loss accepted a revoked session"
    );

    // Now empty.
    redis.stop();
    for entry in std::fs::read_dir(redis.dir())? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    redis.restart()?;
    for gw in &gws {
        noticed_loss(gw, 2.0)?;
    }
    fresh.wait_subscribed()?;
    let (_, new) = gws[1].create_session("u2", "lossy-biz", "h", "user", 600)?;
    for gw in gws.iter().chain([&fresh]) {
        assert_eq!(
            status(gw.proxy, &new)?,
            200,
            "a new session of the business"
        );
        assert_eq!(status(gw.proxy, &old)?, 401, "revoked before the loss");
    }
    Ok(())
}
