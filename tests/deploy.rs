//! deploy/ against the real gateway: every metric the Grafana dashboard and the alert rules
//! query is one the gateway exports, the Kubernetes config file is a valid config, and the
//! production overlay's SESSIONGATE_TRUSTED_PROXIES placeholder keeps the gateway from
//! starting until it is filled in.
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

/// `sessiongate check` on the Kubernetes config file (base/sessiongate.toml) with the dev
/// overlay's secrets, plus `env`.
fn check_kubernetes_config(
    env: &[(&str, &str)],
) -> Result<std::process::Output, Box<dyn std::error::Error>> {
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
        .env_remove("SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS")
        .env_remove("SESSIONGATE_TRUSTED_PROXIES")
        .envs(env.iter().copied())
        .output()?;
    Ok(out)
}

/// The literal value the production overlay's patches give a gateway env var.
fn production_env(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(repo_path(
        "deploy/kubernetes/overlays/production/kustomization.yaml",
    ))?;
    let kustomization: serde_json::Value = serde_yaml_ng::from_str(&text)?;
    for patch in kustomization["patches"].as_array().ok_or("no patches")? {
        let Some(ops) = patch["patch"].as_str() else {
            continue;
        };
        let ops: serde_json::Value = serde_yaml_ng::from_str(ops)?;
        for op in ops.as_array().into_iter().flatten() {
            if op["value"]["name"] == name {
                let value = op["value"]["value"]
                    .as_str()
                    .ok_or(format!("{name}: not a literal value"))?;
                return Ok(value.to_string());
            }
        }
    }
    Err(format!("the production overlay does not set {name}").into())
}

#[test]
fn the_kubernetes_config_is_valid_with_its_secrets() -> TestResult {
    // As the dev overlay runs it: its committed (public) secrets on 0.0.0.0 in a pod are
    // refused unless SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS=1, which that overlay sets.
    let out = check_kubernetes_config(&[("SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS", "1")])?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check_kubernetes_config(&[])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn the_production_overlay_fails_closed_until_its_trusted_proxies_are_filled_in() -> TestResult {
    // The committed placeholder is not a CIDR: the gateway refuses it, naming the variable.
    let placeholder = production_env("SESSIONGATE_TRUSTED_PROXIES")?;
    let out = check_kubernetes_config(&[
        ("SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS", "1"),
        ("SESSIONGATE_TRUSTED_PROXIES", placeholder.as_str()),
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("SESSIONGATE_TRUSTED_PROXIES"),
        "{placeholder}: {stderr}"
    );
    // Filled in with the ingress controller's pod CIDR, the same config is accepted.
    let out = check_kubernetes_config(&[
        ("SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS", "1"),
        ("SESSIONGATE_TRUSTED_PROXIES", "10.244.0.0/16"),
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
