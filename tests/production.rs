//! Production behaviours over real sockets: request ids end to end and in the logs, and a
//! SIGTERM that lets in-flight requests finish before the process exits 0.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

#[test]
fn request_ids_are_propagated_or_generated_and_logged() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    let (_, token) = gw.create_session("u", "b", "h", "user", 600)?;

    // Well-formed: kept, sent upstream, returned.
    let r = authed(
        gw.proxy,
        "GET",
        "/v1/graphql",
        &token,
        &[("X-Request-Id", "req-42.a:b")],
        None,
    )?;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-request-id")?, vec!["req-42.a:b"]);
    assert_eq!(r.header("x-request-id"), Some("req-42.a:b"));

    // Missing, malformed, too long or repeated: a fresh UUID, the same both ways.
    let long = "a".repeat(129);
    for bad in [
        None,
        Some("has space"),
        Some(long.as_str()),
        Some("\"quoted\""),
    ] {
        let headers: Vec<(&str, &str)> = bad.map(|v| ("X-Request-Id", v)).into_iter().collect();
        let r = authed(gw.proxy, "GET", "/v1/graphql", &token, &headers, None)?;
        let id = r
            .header("x-request-id")
            .ok_or("no x-request-id")?
            .to_string();
        assert!(uuid_like(&id), "{bad:?} → {id}");
        assert_eq!(r.upstream_header("x-request-id")?, vec![id]);
    }
    let r = authed(
        gw.proxy,
        "GET",
        "/v1/graphql",
        &token,
        &[("X-Request-Id", "one"), ("X-Request-Id", "two")],
        None,
    )?;
    assert!(uuid_like(r.header("x-request-id").unwrap_or_default()));

    // Answers the gateway writes itself carry it too: a refusal, a session API, the 404 of
    // nothing at all.
    let r = request(
        gw.proxy,
        "GET",
        "/v1/graphql",
        &[("X-Request-Id", "refused-1")],
        None,
    )?;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-request-id"), Some("refused-1"));
    let r = request(
        gw.proxy,
        "POST",
        "/auth/refresh",
        &[
            ("X-Request-Id", "refresh-1"),
            ("Content-Type", "application/json"),
        ],
        Some("{}"),
    )?;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-request-id"), Some("refresh-1"));

    // The refusal's log line names the request id, never the token.
    let bad_token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.secret-looking-signature";
    let r = authed(
        gw.proxy,
        "GET",
        "/v1/graphql",
        bad_token,
        &[("X-Request-Id", "logged-7")],
        None,
    )?;
    assert_eq!(r.status, 401);
    assert!(
        eventually(Duration::from_secs(5), || gw.log().contains("logged-7")),
        "{}",
        gw.log()
    );
    assert!(!gw.log().contains("secret-looking-signature"));
    assert!(!gw.log().contains(&token));
    Ok(())
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[test]
fn json_logs_carry_the_request_id() -> TestResult {
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_edited(echo.addr, None, "", |t| {
        t.replace("[server]\n", "[server]\nlog_format = \"json\"\n")
    })?;
    let r = request(
        gw.proxy,
        "GET",
        "/v1/graphql",
        &[("X-Request-Id", "json-9")],
        None,
    )?;
    assert_eq!(r.status, 401);
    assert!(eventually(Duration::from_secs(5), || gw
        .log()
        .contains("json-9")));
    let line = gw
        .log()
        .lines()
        .find(|l| l.contains("json-9"))
        .map(str::to_string)
        .ok_or("no log line")?;
    let v: Value = serde_json::from_str(&line)?;
    assert_eq!(v["span"]["request_id"], "json-9", "{line}");
    Ok(())
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() -> TestResult {
    let echo = echo::Echo::start()?;
    let mut gw = Gateway::start_edited(echo.addr, None, "", |t| {
        t.replace("grace_period_seconds = 0", "grace_period_seconds = 2")
    })?;
    let (_, token) = gw.create_session("u", "b", "h", "user", 600)?;
    let proxy = gw.proxy;
    let in_flight = std::thread::spawn(move || {
        authed(proxy, "GET", "/v1/graphql?delay_ms=1200", &token, &[], None)
            .map_err(|e| e.to_string())
    });
    // Let the request reach the upstream, then ask the gateway to stop.
    assert!(eventually(Duration::from_secs(5), || echo.hits() == 1));
    gw.signal("TERM")?;
    // It stops accepting...
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(
            proxy
        )
        .is_err()),
        "still accepting after SIGTERM"
    );
    // ...the request in flight completes...
    let r = in_flight.join().map_err(|_| "request thread panicked")??;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()?["target"]
        .as_str()
        .is_some_and(|t| t.contains("delay_ms")));
    // ...and the process exits 0 after the grace period.
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .ok_or("did not exit")?;
    assert!(status.success(), "exit status {status:?}\n{}", gw.log());
    Ok(())
}

/// A listener whose address is taken fails the start at once, naming it (Pingora alone
/// retries the bind, then runs on without that listener).
#[test]
fn a_listener_address_in_use_fails_the_start() -> TestResult {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sessiongate.toml");
    std::fs::write(
        &path,
        config_text(port, free_port(), "127.0.0.1:9".parse()?, None, ""),
    )?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let exited = eventually(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(exited, "still running with its listener taken: {text}");
    assert!(!out.status.success());
    assert!(
        text.contains(&format!("server.listen = 127.0.0.1:{port}")),
        "{text}"
    );
    Ok(())
}
