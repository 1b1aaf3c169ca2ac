//! Admin listener: health, readiness, metrics, and the session admin API.

mod common;

use common::*;

fn setup() -> Result<(Redis, echo::Echo, Gateway), Box<dyn std::error::Error>> {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    Ok((redis, echo, gw))
}

#[test]
fn health_readiness_and_metrics() -> TestResult {
    let (_r, _e, gw) = setup()?;
    assert_eq!(request(gw.admin, "GET", "/healthz", &[], None)?.status, 200);
    assert_eq!(request(gw.admin, "GET", "/readyz", &[], None)?.status, 200);
    let m = request(gw.admin, "GET", "/metrics", &[], None)?;
    assert_eq!(m.status, 200);
    for name in [
        "sessiongate_requests_total",
        "sessiongate_cache_lookups_total",
        "sessiongate_store_operations_total",
        "sessiongate_store_errors_total",
        "sessiongate_store_up",
    ] {
        assert!(m.body.contains(name), "{name} missing from /metrics");
    }
    Ok(())
}

/// A fresh gateway's `/metrics` already has a zero series for every label value the code can
/// emit, so `rate()` alerts and dashboards work from the first scrape (issue 18).
#[test]
fn every_series_exists_before_traffic() -> TestResult {
    let (_r, _e, gw) = setup()?;
    let m = request(gw.admin, "GET", "/metrics", &[], None)?;
    assert_eq!(m.status, 200);
    for series in [
        r#"sessiongate_auth_failures_total{reason="missing_token"} 0"#,
        r#"sessiongate_auth_failures_total{reason="bad_signature"} 0"#,
        r#"sessiongate_auth_failures_total{reason="refresh_token_reused"} 0"#,
        r#"sessiongate_sessions_revoked_total{source="logout"} 0"#,
        r#"sessiongate_sessions_revoked_total{source="revoke_business"} 0"#,
        r#"sessiongate_sessions_created_total{source="mottasl"} 0"#,
        r#"sessiongate_request_duration_seconds_bucket{outcome="forwarded",le="0.001"} 0"#,
        r#"sessiongate_request_duration_seconds_count{outcome="store_unavailable"} 0"#,
        r#"sessiongate_requests_total{outcome="rejected"} 0"#,
        r#"sessiongate_dialect_requests_total{dialect="amity",status="401"} 0"#,
        r#"sessiongate_store_duration_seconds_count{op="get"} 0"#,
        r#"sessiongate_websocket_closes_total{reason="init_timeout"} 0"#,
        r#"sessiongate_tls_reloads_total{result="failed"} 0"#,
        r#"sessiongate_rate_limited_total{limit="create_per_ip"} 0"#,
        r#"sessiongate_connections_closed_total{reason="header_timeout"} 0"#,
    ] {
        assert!(
            m.body.lines().any(|l| l == series),
            "{series} missing from a fresh /metrics"
        );
    }
    Ok(())
}

#[test]
fn admin_api_requires_the_admin_token() -> TestResult {
    let (_r, _e, gw) = setup()?;
    let body = r#"{"user_id":"u","business_id":"b","host_id":"h","role":"user"}"#;
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer integration-admin-token-012345678"),
        Some(ADMIN_TOKEN),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        let r = request(gw.admin, "POST", "/admin/sessions", &headers, Some(body))?;
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(r.json()?["error"].is_string());
    }
    Ok(())
}

#[test]
fn create_get_delete_session() -> TestResult {
    let (_r, _e, gw) = setup()?;
    let r = admin_request(
        gw.admin,
        "POST",
        "/admin/sessions",
        Some(
            r#"{"user_id":"u-1","business_id":"b-1","host_id":"h-1","role":"admin","ttl_seconds":120}"#,
        ),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json()?;
    let sid = v["session_id"].as_str().ok_or("session_id")?.to_string();
    let token = v["access_token"]
        .as_str()
        .ok_or("access_token")?
        .to_string();
    let expires = v["expires_at"].as_str().ok_or("expires_at")?;
    assert!(
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{expires}"
    );

    let r = admin_request(gw.admin, "GET", &format!("/admin/sessions/{sid}"), None)?;
    assert_eq!(r.status, 200);
    let s = r.json()?;
    assert_eq!(s["user_id"], "u-1");
    assert_eq!(s["business_id"], "b-1");
    assert_eq!(s["host_id"], "h-1");
    assert_eq!(s["role"], "admin");
    assert!(!r.body.contains(&token), "GET returned the token");
    assert!(s.get("access_token").is_none());

    // Warm the cache, then revoke: the cached session must be refused at once.
    assert_eq!(
        authed(gw.proxy, "GET", "/x", &token, &[], None)?.status,
        200
    );
    assert_eq!(
        authed(gw.proxy, "GET", "/x", &token, &[], None)?.status,
        200
    );
    let r = admin_request(gw.admin, "DELETE", &format!("/admin/sessions/{sid}"), None)?;
    assert_eq!(r.status, 204);
    assert_eq!(
        authed(gw.proxy, "GET", "/x", &token, &[], None)?.status,
        401
    );
    assert_eq!(
        admin_request(gw.admin, "GET", &format!("/admin/sessions/{sid}"), None)?.status,
        404
    );
    assert_eq!(
        admin_request(gw.admin, "DELETE", &format!("/admin/sessions/{sid}"), None)?.status,
        404
    );
    assert_eq!(
        admin_request(gw.admin, "GET", "/admin/sessions/not-an-id", None)?.status,
        404
    );
    let m = request(gw.admin, "GET", "/metrics", &[], None)?.body;
    assert!(
        m.contains("sessiongate_sessions_created_total{source=\"admin\"} 1"),
        "{m}"
    );
    assert!(m.contains("sessiongate_sessions_revoked_total{source=\"admin\"} 1"));
    Ok(())
}

#[test]
fn invalid_bodies_get_400_naming_the_field() -> TestResult {
    let (_r, _e, gw) = setup()?;
    let cases = [
        ("{", None),
        ("[1]", None),
        (
            r#"{"business_id":"b","host_id":"h","role":"r"}"#,
            Some("user_id"),
        ),
        (
            r#"{"user_id":"u","host_id":"h","role":"r"}"#,
            Some("business_id"),
        ),
        (
            r#"{"user_id":"u","business_id":"b","role":"r"}"#,
            Some("host_id"),
        ),
        (
            r#"{"user_id":"u","business_id":"b","host_id":"h"}"#,
            Some("role"),
        ),
        (
            r#"{"user_id":5,"business_id":"b","host_id":"h","role":"r"}"#,
            Some("user_id"),
        ),
        (
            r#"{"user_id":"u","business_id":"b","host_id":"h","role":"r","ttl_seconds":-1}"#,
            Some("ttl_seconds"),
        ),
        (
            r#"{"user_id":"u","business_id":"b","host_id":"h\r\nx-hasura-role: admin","role":"r"}"#,
            Some("host_id"),
        ),
    ];
    for (body, field) in cases {
        let r = admin_request(gw.admin, "POST", "/admin/sessions", Some(body))?;
        assert_eq!(r.status, 400, "{body}");
        let v = r.json()?;
        assert!(v["error"].is_string(), "{body}");
        if let Some(f) = field {
            assert!(
                v["message"].as_str().unwrap_or("").contains(f),
                "{body}: {}",
                r.body
            );
        }
    }
    let big = format!(r#"{{"user_id":"{}"}}"#, "a".repeat(70_000));
    assert_eq!(
        admin_request(gw.admin, "POST", "/admin/sessions", Some(&big))?.status,
        413
    );
    Ok(())
}

#[test]
fn expired_session_is_refused() -> TestResult {
    let (_r, _e, gw) = setup()?;
    let (_, token) = gw.create_session("u", "b", "h", "user", 1)?;
    assert_eq!(
        authed(gw.proxy, "GET", "/x", &token, &[], None)?.status,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(
        authed(gw.proxy, "GET", "/x", &token, &[], None)?.status,
        401
    );
    Ok(())
}
