//! The official Amity TypeScript SDK (`@amityco/ts-sdk`, pinned in tests/amity_sdk) logs in
//! against sessiongate, unchanged, with its HTTP endpoint pointed at the gateway; renews its
//! token the way it does in production; and its tokens pass the proxy. Skipped (with a
//! message) only when Node/npm are missing or npm cannot install the SDK.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

const API_KEY: &str = "integration-amity-key";
const SECURE_KEY: &str = "integration-amity-secure-key";
const SERVER_KEY: &str = "integration-amity-server-key";

fn config() -> String {
    format!(
        r#"
[dialects.amity]
[[dialects.amity.networks]]
network_id = "sdk-net"
api_key = "{API_KEY}"
default_host_id = "sdk-host"

[[dialects.amity.networks]]
network_id = "sdk-secure"
api_key = "{SECURE_KEY}"
secure = true
server_key = "{SERVER_KEY}"
default_host_id = "sdk-secure-host"
"#
    )
}

/// Installs the pinned SDK (from the lockfile) unless this checkout already has it.
/// `Err` carries the reason to skip.
fn install_sdk() -> Result<std::path::PathBuf, String> {
    let dir = repo_path("tests/amity_sdk");
    let installed = dir.join("node_modules/@amityco/ts-sdk/package.json");
    let pinned = std::fs::read_to_string(dir.join("package.json"))
        .ok()
        .and_then(|p| serde_json::from_str::<Value>(&p).ok())
        .and_then(|p| {
            p["dependencies"]["@amityco/ts-sdk"]
                .as_str()
                .map(String::from)
        })
        .ok_or("tests/amity_sdk/package.json does not pin @amityco/ts-sdk")?;
    let have = std::fs::read_to_string(&installed)
        .ok()
        .and_then(|p| serde_json::from_str::<Value>(&p).ok())
        .and_then(|p| p["version"].as_str().map(String::from));
    if have.as_deref() == Some(pinned.as_str()) {
        return Ok(dir);
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .map_err(|e| format!("npm is not available: {e}"))?;
    if !status.success() {
        return Err(format!("npm ci failed ({status})"));
    }
    Ok(dir)
}

fn run_login(
    dir: &std::path::Path,
    base: &str,
    envs: &[(&str, &str)],
) -> Result<Value, Box<dyn std::error::Error>> {
    let out = Command::new("node")
        .arg(dir.join("login.mjs"))
        .env("SESSIONGATE_BASE_URL", base)
        .env("AMITY_TIMEOUT_MS", "20000")
        .envs(envs.iter().copied())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line).map_err(|e| {
        format!(
            "harness printed no JSON ({e}); stdout {stdout:?}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(v)
}

#[test]
fn the_official_sdk_logs_in_renews_and_its_tokens_pass_the_proxy() -> TestResult {
    let dir = match install_sdk() {
        Ok(d) => d,
        Err(reason) => {
            eprintln!("SKIPPED: Amity SDK test: {reason}");
            return Ok(());
        }
    };
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_with(echo.addr, Some(&redis.url()), &config())?;
    let base = format!("http://{}", gw.proxy);

    // Normal mode: API key + userId.
    let v = run_login(
        &dir,
        &base,
        &[
            ("AMITY_API_KEY", API_KEY),
            ("AMITY_USER_ID", "sdk-user"),
            ("AMITY_DISPLAY_NAME", "SDK User"),
        ],
    )?;
    assert_eq!(v["ok"], true, "{v}\ngateway log:\n{}", gw.log());
    assert_eq!(v["userId"], "sdk-user");
    assert_eq!(v["sessionState"], "established");
    assert_eq!(v["renewal"]["ok"], true, "{v}");
    assert_eq!(v["renewal"]["changed"], true, "{v}");
    for key in ["accessToken", "renewal"] {
        let token = if key == "accessToken" {
            v["accessToken"].as_str()
        } else {
            v["renewal"]["accessToken"].as_str()
        }
        .ok_or("no token")?;
        let r = authed(gw.proxy, "GET", "/api/v3/users/me", token, &[], None)?;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.upstream_header("x-hasura-business-id")?, vec!["sdk-net"]);
        assert_eq!(r.upstream_header("x-hasura-user-id")?, vec!["sdk-user"]);
        assert_eq!(r.upstream_header("x-host-id")?, vec!["sdk-host"]);
    }

    // Wrong key: the SDK surfaces Amity's UNAUTHORIZED code.
    let v = run_login(
        &dir,
        &base,
        &[
            ("AMITY_API_KEY", "wrong-key-000"),
            ("AMITY_USER_ID", "sdk-user"),
        ],
    )?;
    assert_eq!(v["ok"], false);
    assert_eq!(v["code"], 400100, "{v}");

    // Secure mode: the backend fetches an auth token with the server key.
    let r = request(
        gw.proxy,
        "GET",
        "/api/v3/authentication/token?userId=sdk-secure-user",
        &[("x-server-key", SERVER_KEY)],
        None,
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = run_login(
        &dir,
        &base,
        &[
            ("AMITY_API_KEY", SECURE_KEY),
            ("AMITY_USER_ID", "sdk-secure-user"),
            ("AMITY_AUTH_TOKEN", &r.body),
        ],
    )?;
    assert_eq!(v["ok"], true, "{v}\ngateway log:\n{}", gw.log());
    assert_eq!(v["renewal"]["ok"], true, "{v}");
    let v = run_login(
        &dir,
        &base,
        &[
            ("AMITY_API_KEY", SECURE_KEY),
            ("AMITY_USER_ID", "sdk-secure-user"),
            ("AMITY_SKIP_RENEWAL", "1"),
        ],
    )?;
    assert_eq!(v["ok"], false, "secure mode without authToken: {v}");
    assert_eq!(v["code"], 400100);
    Ok(())
}
