//! The session flows on every Redis topology the gateway supports, each started for real by
//! the test: a 3-master Redis Cluster (`--cluster-enabled yes`, `redis-cli --cluster
//! create`), Sentinel (one master, one replica, one sentinel) including a failover, and TLS
//! (`rediss://`) with an ACL user.

mod common;

use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

fn status(proxy: SocketAddr, token: &str) -> Result<u16, Box<dyn std::error::Error>> {
    Ok(authed(proxy, "GET", "/v1/graphql", token, &[], None)?.status)
}

fn create(
    gw: &Gateway,
    user: &str,
) -> Result<(String, String, String), Box<dyn std::error::Error>> {
    let body = json!({"user_id": user, "business_id": "biz", "host_id": "h", "role": "user"});
    let r = admin_request(gw.admin, "POST", "/admin/sessions", Some(&body.to_string()))?;
    if r.status != 201 {
        return Err(format!("create: {} {}", r.status, r.body).into());
    }
    let v = r.json()?;
    let f = |k: &str| v[k].as_str().map(String::from).ok_or(format!("no {k}"));
    Ok((f("session_id")?, f("access_token")?, f("refresh_token")?))
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

/// Mottasl dialect config: its user directory lives in the store too.
const MOTTASL: &str = r#"
[[dialects.mottasl.credentials]]
token = "topology-mottasl-token"
businesses = ["biz"]
roles = ["user"]
default_host_id = "h"
"#;

/// Every session flow against one set of replicas on one store.
fn exercise(gws: &[Gateway]) -> TestResult {
    let (a, b) = (&gws[0], &gws[gws.len() - 1]);
    // Create on one replica, use on the other.
    let (sid, access, rt) = create(a, "flow-user")?;
    let r = authed(b.proxy, "GET", "/v1/graphql", &access, &[], None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-hasura-user-id")?, vec!["flow-user"]);
    // Refresh rotation and reuse detection.
    let r = refresh(b, &rt)?;
    assert_eq!(r.status, 200, "{}", r.body);
    let next = r.json()?["refresh_token"]
        .as_str()
        .ok_or("refresh_token")?
        .to_string();
    // Presented again at once, the spent token is a retry (the same successor); once the
    // successor has rotated, it is reuse.
    let r = refresh(a, &rt)?;
    assert_eq!(r.status, 200, "retry within the grace: {}", r.body);
    assert_eq!(r.json()?["refresh_token"], next.as_str());
    let r = refresh(a, &next)?;
    assert_eq!(r.status, 200, "{}", r.body);
    let last = r.json()?["refresh_token"]
        .as_str()
        .ok_or("refresh_token")?
        .to_string();
    assert_eq!(refresh(b, &rt)?.status, 401, "reuse");
    assert_eq!(
        refresh(a, &last)?.status,
        401,
        "the session died with the reuse"
    );
    assert_eq!(status(b.proxy, &access)?, 401);
    assert_eq!(
        admin_request(a.admin, "GET", &format!("/admin/sessions/{sid}"), None)?.status,
        404
    );
    // Logout on one replica.
    let (_, access, _) = create(b, "logout-user")?;
    assert_eq!(status(a.proxy, &access)?, 200);
    assert_eq!(
        authed(b.proxy, "POST", "/auth/logout", &access, &[], None)?.status,
        204
    );
    assert!(eventually_status(Duration::from_secs(1), 401, || authed(
        a.proxy,
        "GET",
        "/v1/graphql",
        &access,
        &[],
        None
    )));
    // Revoke-all.
    let (_, u1, _) = create(a, "revoked-user")?;
    let (_, u2, _) = create(a, "kept-user")?;
    assert_eq!(status(b.proxy, &u1)?, 200);
    let r = admin_request(
        b.admin,
        "DELETE",
        "/admin/users/revoked-user/sessions",
        None,
    )?;
    assert_eq!(r.status, 204);
    assert!(eventually_status(Duration::from_secs(1), 401, || authed(
        a.proxy,
        "GET",
        "/v1/graphql",
        &u1,
        &[],
        None
    )));
    assert_eq!(status(b.proxy, &u2)?, 200);
    // A dialect: the user directory (create-if-absent, upsert) on this store.
    let body = json!({
        "business_id": "biz", "platform_type": "p", "platform_id": "42", "role": "user",
        "profile_name": "n", "display_name": "d", "profile_image_url": "https://e.x/i.png"
    });
    let mut ids = Vec::new();
    for gw in [a, b] {
        let r = request(
            gw.proxy,
            "POST",
            "/v1/app/user.new.session",
            &[
                ("Authorization", "Bearer topology-mottasl-token"),
                ("Content-Type", "application/json"),
            ],
            Some(&body.to_string()),
        )?;
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.json()?["user_details"]["id"].clone());
    }
    assert_eq!(
        ids[0], ids[1],
        "one identity, one user id, whichever replica"
    );
    // Rate limits (refresh, creation, failed authentication above) were counted in this
    // store, never in process.
    for gw in [a, b] {
        let metrics = request(gw.admin, "GET", "/metrics", &[], None)?.body;
        assert!(
            metrics.contains("\nsessiongate_rate_limit_fallback_total 0\n"),
            "rate limits fell back to in-process counting"
        );
    }
    Ok(())
}

fn store_toml(mode: &str, urls: &str, extra: &str) -> String {
    format!(
        "backend = \"redis\"\nmode = \"{mode}\"\nredis_url = \"{urls}\"\ntimeout_ms = 500\n{extra}"
    )
}

#[test]
fn cluster_of_three_masters() -> TestResult {
    let nodes: Vec<Redis> = (0..3)
        .map(|_| {
            Redis::start_with(
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--appendonly",
                    "no",
                ],
                false,
            )
        })
        .collect::<Result<_, _>>()?;
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()?;
    assert!(
        out.status.success(),
        "redis-cli --cluster create: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        eventually(Duration::from_secs(15), || nodes.iter().all(|n| n
            .command("CLUSTER INFO")
            .is_ok_and(|i| i.contains("cluster_state:ok")))),
        "cluster never became ok"
    );
    let urls = addrs
        .iter()
        .map(|a| format!("redis://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    let echo = echo::Echo::start()?;
    let store = store_toml("cluster", &urls, "");
    let gws = (0..2)
        .map(|_| Gateway::start_with(echo.addr, Some(&store), MOTTASL))
        .collect::<Result<Vec<_>, _>>()?;
    for gw in &gws {
        gw.wait_subscribed()?;
    }
    exercise(&gws)?;
    // Keys really spread over the masters (hash tags keep each session's keys together).
    let mut per_node = Vec::new();
    for _ in 0..20 {
        create(&gws[0], "spread")?;
    }
    for n in &nodes {
        let reply = n.command("DBSIZE")?;
        let first = reply.lines().next().unwrap_or_default();
        per_node.push(first.trim_start_matches(':').trim().parse::<u64>()?);
    }
    assert!(
        per_node.iter().filter(|&&k| k > 0).count() >= 2,
        "keys on one node only: {per_node:?}"
    );
    Ok(())
}

#[test]
fn sentinel_with_failover() -> TestResult {
    let master = Redis::start()?;
    let replica_of = master.port.to_string();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &replica_of], false)?;
    let sentinel = Sentinel::start(master.port)?;
    assert!(
        eventually(Duration::from_secs(15), || master
            .command("INFO replication")
            .is_ok_and(|i| i.contains("connected_slaves:1"))
            && sentinel
                .command("SENTINEL replicas mymaster")
                .is_ok_and(|r| r.contains(&replica.port.to_string()))),
        "replication / sentinel discovery did not settle: master {:?}; sentinel {:?}",
        master.command("INFO replication"),
        sentinel.command("SENTINEL replicas mymaster")
    );
    let echo = echo::Echo::start()?;
    let store = store_toml(
        "sentinel",
        &format!("redis://127.0.0.1:{}", sentinel.port),
        "sentinel_master = \"mymaster\"",
    );
    let gws = (0..2)
        .map(|_| Gateway::start_with(echo.addr, Some(&store), MOTTASL))
        .collect::<Result<Vec<_>, _>>()?;
    for gw in &gws {
        gw.wait_subscribed()?;
    }
    exercise(&gws)?;

    // A session written before the failover, replicated before the master goes away.
    let (_, before, rt) = create(&gws[0], "survivor")?;
    master.command("WAIT 1 2000")?;
    let mut master = master;
    master.stop();
    assert!(
        eventually(Duration::from_secs(30), || sentinel.master_port()
            == Some(replica.port)),
        "sentinel did not promote the replica"
    );
    // Both replicas find the new master by themselves: old sessions still valid, new ones
    // created, refresh works, and revocations reach the other replica again.
    for gw in &gws {
        assert!(
            eventually_status(Duration::from_secs(15), 200, || authed(
                gw.proxy,
                "GET",
                "/v1/graphql",
                &before,
                &[],
                None
            )),
            "session lost in the failover; log:\n{}",
            gw.log()
        );
    }
    assert!(eventually(Duration::from_secs(15), || create(
        &gws[1], "after"
    )
    .is_ok()));
    assert_eq!(refresh(&gws[1], &rt)?.status, 200);
    for gw in &gws {
        gw.wait_subscribed()?;
    }
    exercise(&gws)?;
    Ok(())
}

#[test]
fn tls_with_an_acl_user() -> TestResult {
    let redis = Redis::start_with(
        &[
            "--user",
            "default",
            "off",
            "--user",
            "gate",
            "on",
            ">gate-password-123",
            "~*",
            "&*",
            "+@all",
        ],
        true,
    )?;
    let ca = repo_path("tests/fixtures/tls/ca.pem");
    let echo = echo::Echo::start()?;
    let url = format!("rediss://gate:gate-password-123@127.0.0.1:{}/0", redis.port);
    let store = store_toml(
        "standalone",
        &url,
        &format!("tls_ca_file = \"{}\"", ca.display()),
    );
    let gws = (0..2)
        .map(|_| Gateway::start_with(echo.addr, Some(&store), MOTTASL))
        .collect::<Result<Vec<_>, _>>()?;
    for gw in &gws {
        gw.wait_subscribed()?;
    }
    exercise(&gws)?;
    for gw in &gws {
        assert!(!gw.log().contains("gate-password-123"), "password in log");
    }

    // A wrong password is an unready gateway that fails closed, not an open one.
    let bad = store_toml(
        "standalone",
        &url.replace("gate-password-123", "wrong-password"),
        &format!("tls_ca_file = \"{}\"", ca.display()),
    );
    let gw = Gateway::start_with(echo.addr, Some(&bad), "")?;
    assert!(eventually_status(Duration::from_secs(5), 503, || request(
        gw.admin,
        "GET",
        "/readyz",
        &[],
        None
    )));
    let body = json!({"user_id": "u", "business_id": "b", "host_id": "h", "role": "user"});
    let r = admin_request(gw.admin, "POST", "/admin/sessions", Some(&body.to_string()))?;
    assert_eq!(r.status, 503);
    Ok(())
}
