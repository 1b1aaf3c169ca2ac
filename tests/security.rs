//! Bypasses found by a security review (issue 14), each against the real binary, a real
//! echo upstream and a real Redis: paths a lenient backend resolves into protected ones,
//! JWT `crit`, tokens in logs, and development credentials on public listeners. Each test
//! failed on the code before the fix (said per test).

mod common;

use base64::Engine as _;
use common::*;
use hmac::Mac;
use std::process::{Command, Stdio};

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// Every shape Envoy and Istio (CVE-2021-31920) refuse, as request targets under the public
/// prefix that a lenient backend resolves to `/v1/graphql`.
const AMBIGUOUS: &[&str] = &[
    "/public/..%2Fv1/graphql",
    "/public/..%2fv1/graphql",
    "/public/..%252f..%252fv1/graphql",
    "/public/..%252Fv1/graphql",
    "/public/..;/v1/graphql",
    "/public;x=1/../v1/graphql",
    "/public/..\\v1/graphql",
    "/public/..%5cv1/graphql",
    "/public/..%5Cv1/graphql",
    "/public/%2e%2e%5cv1/graphql",
    "/public/%252e%252e/v1/graphql",
    "/public/..%c0%af/v1/graphql",
    "/public/..%C0%AFv1/graphql",
    "/public/%00/../v1/graphql",
    "/public/..%3b/v1/graphql",
];

/// Before: each of these was public to the gateway and forwarded unauthenticated.
#[test]
fn ambiguous_paths_are_refused_before_routing() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    let (_, token) = gw.create_session("u", "b", "h", "user", 600)?;
    let hits = echo.hits();
    for path in AMBIGUOUS {
        let r = request(gw.proxy, "GET", path, &[], None)?;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert_eq!(r.json()?["error"], "bad_request", "{path}");
        assert!(r.body.contains("ambiguous request path"), "{}", r.body);
        // A valid session does not make them acceptable either: the backend would still
        // see another path than the one the gateway judged.
        let r = authed(gw.proxy, "GET", path, &token, &[], None)?;
        assert_eq!(r.status, 400, "{path}");
    }
    assert_eq!(echo.hits(), hits, "no ambiguous path reached the upstream");
    // Plain, encoded-unreserved and dot-segment paths still work as before.
    let r = request(gw.proxy, "GET", "/public/%70age?x=%2F", &[], None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        request(gw.proxy, "GET", "/public/../v1/graphql", &[], None)?.status,
        401
    );
    let r = authed(gw.proxy, "GET", "/v1/graphql?q=a;b%2Fc", &token, &[], None)?;
    assert_eq!(r.status, 200, "the query is not the path: {}", r.body);

    // `forward` keeps the old behaviour for backends that read them literally.
    let gw = Gateway::start_edited(echo.addr, Some(&redis.url()), "", |t| {
        t.replace("[proxy]\n", "[proxy]\nambiguous_paths = \"forward\"\n")
    })?;
    let r = request(gw.proxy, "GET", "/public/..%2Fv1/graphql", &[], None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    Ok(())
}

/// A token signed with the test key exactly as written (any header).
fn signed(header: &str, claims: &serde_json::Value) -> Result<String, Box<dyn std::error::Error>> {
    let h = b64(header.as_bytes());
    let p = b64(claims.to_string().as_bytes());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HS_SECRET.as_bytes())?;
    mac.update(format!("{h}.{p}").as_bytes());
    Ok(format!("{h}.{p}.{}", b64(&mac.finalize().into_bytes())))
}

/// Before: a validly signed token whose header lists a `crit` extension was accepted
/// (RFC 7515 §4.1.11 says refuse).
#[test]
fn jwt_crit_and_duplicate_header_members_are_refused() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start(echo.addr, Some(&redis.url()))?;
    let (_, token) = gw.create_session("u", "b", "h", "user", 600)?;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).ok_or("token shape")?)?,
    )?;
    let kid = "k1";
    // Same claims, our own header: accepted (the harness signs like the gateway).
    let plain = signed(
        &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
        &claims,
    )?;
    assert_eq!(
        authed(gw.proxy, "GET", "/v1/graphql", &plain, &[], None)?.status,
        200
    );
    let hits = echo.hits();
    for header in [
        format!(r#"{{"alg":"HS256","kid":"{kid}","crit":["urn:x:ext"],"urn:x:ext":1}}"#),
        format!(r#"{{"alg":"HS256","kid":"{kid}","crit":["exp"]}}"#),
        format!(r#"{{"alg":"HS256","kid":"{kid}","crit":[]}}"#),
        format!(r#"{{"alg":"HS256","kid":"{kid}","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"HS256","alg":"none","kid":"{kid}"}}"#),
    ] {
        let t = signed(&header, &claims)?;
        let r = authed(gw.proxy, "GET", "/v1/graphql", &t, &[], None)?;
        assert_eq!(r.status, 401, "{header}: {}", r.body);
    }
    assert_eq!(echo.hits(), hits);
    Ok(())
}

/// Before: Pingora's "Fail to proxy" line printed the request target, so an Amity realtime
/// token in the query was logged at ERROR with the upstream down.
#[test]
fn tokens_never_reach_the_logs_at_any_level() -> TestResult {
    let redis = Redis::start()?;
    // Nothing listens here: every proxied request fails upstream.
    let down = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let amity = r#"
[dialects.amity]
realtime_paths = ["/socket.io"]

[[dialects.amity.networks]]
network_id = "net-1"
api_key = "logs-amity-key"
default_host_id = "h"
"#;
    // A more specific directive cannot lift the clamp on the crates that dump wire data.
    for level in [
        "trace",
        "pingora_core=trace,pingora_proxy=trace,pingora_core::apps::http_app=trace,trace",
        "debug",
        "info",
        "error",
    ] {
        let gw = Gateway::start_env(
            down,
            Some(&redis.url()),
            amity,
            |t| t,
            &[("RUST_LOG", level)],
        )?;
        let (_, token) = gw.create_session("u", "b", "h", "user", 600)?;
        let r = request(
            gw.proxy,
            "GET",
            &format!("/socket.io/?EIO=4&transport=polling&token={token}"),
            &[],
            None,
        )?;
        assert_eq!(r.status, 502, "{level}: {}", r.body);
        let r = authed(gw.proxy, "GET", "/v1/graphql?x=1", &token, &[], None)?;
        assert_eq!(r.status, 502, "{level}: {}", r.body);
        // A refused one too (the query and header of a failed authentication).
        let forged = format!("{token}x");
        let r = request(
            gw.proxy,
            "GET",
            &format!("/socket.io/?token={forged}"),
            &[],
            None,
        )?;
        assert_eq!(r.status, 401);
        authed(gw.proxy, "GET", "/v1/graphql", &forged, &[], None)?;
        let signature = token.rsplit('.').next().ok_or("token shape")?;
        let payload = token.split('.').nth(1).ok_or("token shape")?;
        let log = gw.log();
        assert!(
            !log.contains(signature) && !log.contains(payload),
            "{level}: a token reached the log:\n{log}"
        );
        assert!(!log.contains("logs-amity-key"));
        // The admin API's bearer (create_session above) is a credential too.
        assert!(
            !log.contains(ADMIN_TOKEN),
            "{level}: the admin token reached the log"
        );
        if level != "error" {
            assert!(
                log.contains("Fail to proxy"),
                "{level}: the error is still logged:\n{log}"
            );
        }
    }
    Ok(())
}

/// `sessiongate` with the shipped config and `env`; (exit code, stderr + stdout).
fn run_shipped(
    command: &str,
    env: &[(&str, &str)],
) -> Result<(i32, String), Box<dyn std::error::Error>> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessiongate"));
    cmd.arg(command)
        .arg("--config")
        .arg(repo_path("config/sessiongate.toml"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SESSIONGATE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("out.log");
    let file = std::fs::File::create(&log)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .spawn()?;
    // A gateway that starts serves until killed: that is the failure (code -1).
    let mut code = -1;
    if eventually(std::time::Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    }) {
        code = child.wait()?.code().unwrap_or(-1);
    } else {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok((code, std::fs::read_to_string(&log)?))
}

/// Before: `SESSIONGATE_LISTEN=0.0.0.0:8080` with the shipped config started and served the
/// public development credentials to the network.
#[test]
fn development_credentials_never_start_on_a_public_listener() -> TestResult {
    let public = format!("0.0.0.0:{}", free_port());
    for (var, command) in [
        ("SESSIONGATE_LISTEN", "serve"),
        ("SESSIONGATE_ADMIN_LISTEN", "serve"),
        ("SESSIONGATE_LISTEN", "check"),
    ] {
        let (code, out) = run_shipped(command, &[(var, &public)])?;
        assert_eq!(code, 78, "{var} {command}: {out}");
        assert!(out.contains(&public), "names the listener: {out}");
        for key in [
            "admin.token",
            "tokens.keys.secret",
            "dialects.mottasl.credentials",
            "dialects.amity.networks",
            "dialects.rapidly.workspaces",
        ] {
            assert!(out.contains(key), "names {key}: {out}");
        }
        assert!(
            out.contains("SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS"),
            "{out}"
        );
    }
    // Loopback is the development default; the operator may accept the risk explicitly.
    let (code, out) = run_shipped("check", &[])?;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_shipped(
        "check",
        &[
            ("SESSIONGATE_LISTEN", &public),
            ("SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS", "1"),
        ],
    )?;
    assert_eq!(code, 0, "{out}");
    // The Kubernetes dev overlay's committed admin token counts too: a real-looking config
    // otherwise, with that token on a public listener.
    let dev_token = std::fs::read_to_string(repo_path(
        "deploy/kubernetes/overlays/dev/secrets/admin-token",
    ))?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sessiongate.toml");
    // `sessiongate check` on `text` must fail naming `key`.
    let refused = |text: &str, key: &str| -> TestResult {
        std::fs::write(&path, text)?;
        let out = Command::new(env!("CARGO_BIN_EXE_sessiongate"))
            .args(["check", "--config"])
            .arg(&path)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(key), "{key} not named: {stderr}");
        Ok(())
    };
    let (proxy, admin) = two_free_ports();
    let public = config_text(proxy, admin, down_addr(), None, "").replace("127.0.0.1:", "0.0.0.0:");
    refused(
        &public.replace(ADMIN_TOKEN, dev_token.trim()),
        "admin.token",
    )?;
    // And the overlay's committed signing key, by its public half.
    let pem = repo_path("deploy/kubernetes/overlays/dev/secrets/signing.pem");
    let pub_pem = repo_path("deploy/kubernetes/overlays/dev/secrets/signing.pub.pem");
    let text = public
        .replace("algorithm = \"HS256\"", "algorithm = \"EdDSA\"")
        .replace(
            &format!("secret = \"{HS_SECRET}\""),
            &format!(
                "private_key = {{ file = \"{}\" }}\npublic_key = {{ file = \"{}\" }}",
                pem.display(),
                pub_pem.display()
            ),
        );
    refused(&text, "tokens.keys.public_key")
}

fn down_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}
