//! deploy/ against the real gateway: every metric the Grafana dashboard and the alert rules
//! query is one the gateway exports, and the Kubernetes config file is a valid config.
//! (Rendering and schema validation of the manifests: scripts/validate-deploy.sh.)

mod common;

use common::*;
use std::collections::BTreeSet;

/// `sessiongate_*` metric names in a query text, without histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("sessiongate_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_string());
        i = end;
    }
    names
}

#[test]
fn dashboard_and_alerts_query_only_exported_metrics() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    // Traffic, so that every labelled series has at least one child.
    let (sid, token) = gw.create_session("u", "b", "h", "user", 600)?;
    assert_eq!(
        authed(gw.proxy, "GET", "/v1/graphql", &token, &[], None)?.status,
        200
    );
    assert_eq!(
        authed(gw.proxy, "GET", "/v1/graphql", "bad", &[], None)?.status,
        401
    );
    admin_request(gw.admin, "DELETE", &format!("/admin/sessions/{sid}"), None)?;
    let exported = request(gw.admin, "GET", "/metrics", &[], None)?.body;

    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo_path(
        "deploy/grafana/sessiongate.json",
    ))?)?;
    let panels = dashboard["panels"].as_array().ok_or("no panels")?;
    let mut queried = BTreeSet::new();
    for p in panels {
        for t in p["targets"].as_array().ok_or("panel without targets")? {
            queried.extend(metric_names(
                t["expr"].as_str().ok_or("target without expr")?,
            ));
        }
    }
    let alerts = std::fs::read_to_string(repo_path("deploy/prometheus/alerts.yaml"))?;
    let alert_metrics = metric_names(&alerts);
    assert!(queried.len() >= 10, "{queried:?}");
    assert!(alert_metrics.len() >= 4, "{alert_metrics:?}");
    for name in queried.iter().chain(alert_metrics.iter()) {
        assert!(
            exported.contains(&format!("# TYPE {name} ")),
            "{name} is queried but not exported"
        );
    }
    Ok(())
}

#[test]
fn the_kubernetes_config_is_valid_with_its_secrets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let secrets = repo_path("deploy/kubernetes/overlays/dev/secrets");
    let text = std::fs::read_to_string(repo_path("deploy/kubernetes/base/sessiongate.toml"))?
        .replace("/etc/sessiongate/secrets", &secrets.display().to_string());
    let path = dir.path().join("sessiongate.toml");
    std::fs::write(&path, text)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["check", "--config"])
        .arg(&path)
        .env("SESSIONGATE_REDIS_URL", "redis://redis:6379")
        // `hasura` resolves inside the cluster only; the upstream is resolved at start.
        .env("SESSIONGATE_UPSTREAM", "http://127.0.0.1:8081")
        .env("SESSIONGATE_ADMIN_TOKEN_FILE", secrets.join("admin-token"))
        .output()?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
