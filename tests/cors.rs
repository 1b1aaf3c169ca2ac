//! Browsers on another origin (`[cors]`): preflights answered by the gateway on every route
//! without a token and without reaching the upstream; `Access-Control-Allow-Origin` on every
//! answer to an allowed origin, refusals included; nothing allowed for another origin. The
//! last test drives a real headless Chromium through login, a protected call and a 401.

mod common;

use common::echo::Echo;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const API_KEY: &str = "cors-amity-api-key";
const APP: &str = "https://app.example.com";

fn amity() -> String {
    format!(
        r#"
[dialects.amity]
[[dialects.amity.networks]]
network_id = "cors-net"
api_key = "{API_KEY}"
default_host_id = "cors-host"
"#
    )
}

struct Env {
    echo: Echo,
    gw: Gateway,
    _redis: Redis,
}

fn env(origins: &str) -> Result<Env, Box<dyn std::error::Error>> {
    let redis = Redis::start()?;
    let echo = Echo::start()?;
    let gw = Gateway::start_env(
        echo.addr,
        Some(&redis.url()),
        &amity(),
        |t| t,
        &[("SESSIONGATE_CORS_ALLOWED_ORIGINS", origins)],
    )?;
    Ok(Env {
        echo,
        gw,
        _redis: redis,
    })
}

fn preflight(gw: &Gateway, path: &str, origin: &str) -> Result<Resp, Box<dyn std::error::Error>> {
    request(
        gw.proxy,
        "OPTIONS",
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
        None,
    )
}

#[test]
fn preflights_are_answered_on_every_route_without_the_upstream() -> TestResult {
    let e = env(APP)?;
    for path in [
        "/v1/graphql",
        "/public/x",
        "/api/v5/sessions",
        "/auth/refresh",
    ] {
        let r = preflight(&e.gw, path, APP)?;
        assert_eq!(r.status, 204, "{path}: {}", r.body);
        assert_eq!(r.header("access-control-allow-origin"), Some(APP), "{path}");
        assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
        let allowed = r.header("access-control-allow-headers").unwrap_or_default();
        for h in [
            "authorization",
            "content-type",
            "x-api-key",
            "set-access-token-cookie",
        ] {
            assert!(allowed.contains(h), "{h} in {allowed}");
        }
        assert_eq!(r.header("access-control-max-age"), Some("600"));
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("vary") && v == "origin"));
        // Another origin: refused, and nothing that would let a browser through.
        let r = preflight(&e.gw, path, "https://evil.example.net")?;
        assert_eq!(r.status, 403, "{path}");
        assert!(
            r.headers
                .iter()
                .all(|(k, _)| !k.to_ascii_lowercase().starts_with("access-control-allow")),
            "{path}: {:?}",
            r.headers
        );
    }
    assert_eq!(
        e.echo.hits.load(Ordering::SeqCst),
        0,
        "a preflight reached the upstream"
    );
    // Forward-auth is called by an ingress, never by a browser: an OPTIONS there is the
    // original request's method and meets /auth/verify's own checks (before: 204, which an
    // ingress reads as "allowed", identity headers and all).
    let r = request(
        e.gw.proxy,
        "OPTIONS",
        "/auth/verify",
        &[
            ("origin", APP),
            ("access-control-request-method", "POST"),
            ("x-hasura-role", "admin"),
        ],
        None,
    )?;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = request(
        e.gw.proxy,
        "OPTIONS",
        "/auth/verify",
        &[("origin", APP), ("access-control-request-method", "POST")],
        None,
    )?;
    assert_eq!(r.status, 401, "{}", r.body);
    Ok(())
}

#[test]
fn every_answer_to_an_allowed_origin_is_readable_refusals_included() -> TestResult {
    let e = env(&format!("{APP},https://*.example.org"))?;
    let (_, token) = e.gw.create_session("u-1", "b-1", "h-1", "user", 600)?;
    let bearer = format!("Bearer {token}");
    let origin = "https://tenant.example.org";
    // Forwarded.
    let ok = request(
        e.gw.proxy,
        "GET",
        "/v1/graphql",
        &[("origin", origin), ("authorization", &bearer)],
        None,
    )?;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some(origin));
    let exposed = ok
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("retry-after"),
        "{exposed}"
    );
    // Refused: 401, and a session API's own error.
    let refused = request(
        e.gw.proxy,
        "GET",
        "/v1/graphql",
        &[("origin", origin)],
        None,
    )?;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("access-control-allow-origin"), Some(origin));
    let bad = request(
        e.gw.proxy,
        "POST",
        "/api/v5/sessions",
        &[
            ("origin", APP),
            ("content-type", "application/json"),
            ("x-api-key", "wrong-key-0000"),
        ],
        Some("{}"),
    )?;
    assert!(bad.status >= 400, "{}", bad.status);
    assert_eq!(bad.header("access-control-allow-origin"), Some(APP));
    // Another origin: the answer is the same, without Access-Control-Allow-*.
    let other = request(
        e.gw.proxy,
        "GET",
        "/v1/graphql",
        &[
            ("origin", "https://evil.example.net"),
            ("authorization", &bearer),
        ],
        None,
    )?;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert!(other
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("vary") && v == "origin"));
    // No Origin (not a browser): nothing allowed, but still `Vary: Origin` for caches.
    let plain = request(
        e.gw.proxy,
        "GET",
        "/v1/graphql",
        &[("authorization", &bearer)],
        None,
    )?;
    assert_eq!(plain.header("access-control-allow-origin"), None);
    assert!(plain
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("vary") && v == "origin"));
    Ok(())
}

#[test]
fn cors_is_off_without_origins() -> TestResult {
    let redis = Redis::start()?;
    let echo = Echo::start()?;
    let gw = Gateway::start_with(echo.addr, Some(&redis.url()), &amity())?;
    let r = preflight(&gw, "/v1/graphql", APP)?;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), None);
    Ok(())
}

/// A page server on its own origin: `/` is `page`, and `POST /result` records what the
/// page's script reports.
struct PageServer {
    addr: SocketAddr,
    page: Arc<Mutex<String>>,
    result: Arc<Mutex<Option<String>>>,
}

fn serve_page() -> Result<PageServer, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let result = Arc::new(Mutex::new(None));
    let sink = result.clone();
    let page = Arc::new(Mutex::new(String::new()));
    let shared = page.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let page = shared.lock().map(|p| p.clone()).unwrap_or_default();
            let sink = sink.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut reader = BufReader::new(stream.try_clone()?);
                let mut line = String::new();
                reader.read_line(&mut line)?;
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h)?;
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body)?;
                let mut out = stream;
                if line.starts_with("POST /result") {
                    if let Ok(mut r) = sink.lock() {
                        *r = Some(String::from_utf8_lossy(&body).into_owned());
                    }
                    out.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                } else {
                    write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    )
                }
            });
        }
    });
    Ok(PageServer { addr, page, result })
}

/// Debian's Chromium, installed by the test command when missing.
fn chromium() -> Option<&'static str> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
}

#[test]
fn a_real_browser_logs_in_calls_and_reads_a_refusal_across_origins() -> TestResult {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: no Chromium (the test command installs Debian's `chromium`; it could not here)");
        return Ok(());
    };
    let redis = Redis::start()?;
    let echo = Echo::start()?;
    // The page's origin is known once its server listens; the gateway allows exactly it, and
    // the page is written once the gateway's address is known.
    let page = serve_page()?;
    let origin = format!("http://{}", page.addr);
    let gw = Gateway::start_with(
        echo.addr,
        Some(&redis.url()),
        &format!("{}\n[cors]\nallowed_origins = [\"{origin}\"]\n", amity()),
    )?;
    let gw = gw.proxy;
    let script = format!(
        r#"<!doctype html><html><body><script>
const gw = "http://{gw}";
async function run() {{
  const out = {{}};
  try {{
    const login = await fetch(gw + "/api/v5/sessions", {{
      method: "POST",
      headers: {{ "content-type": "application/json", "x-api-key": "{API_KEY}" }},
      body: JSON.stringify({{ userId: "browser-user", deviceId: "browser-device",
        deviceInfo: {{ kind: "web", model: "chromium", sdkVersion: "6.35.3" }}, displayName: "Browser" }})
    }});
    out.loginStatus = login.status;
    const session = await login.json();
    const call = await fetch(gw + "/v1/graphql", {{
      method: "POST",
      headers: {{ "authorization": "Bearer " + session.accessToken, "content-type": "application/json" }},
      body: JSON.stringify({{ query: "{{ __typename }}" }})
    }});
    out.callStatus = call.status;
    out.echo = await call.json();
    out.requestId = call.headers.get("x-request-id");
    const refused = await fetch(gw + "/v1/graphql", {{ method: "POST", headers: {{ "content-type": "application/json" }}, body: "{{}}" }});
    out.refusedStatus = refused.status;
    out.refusedBody = await refused.json();
    out.challenge = refused.headers.get("www-authenticate");
  }} catch (e) {{ out.error = String(e); }}
  await fetch("/result", {{ method: "POST", body: JSON.stringify(out) }});
}}
run();
</script></body></html>"#
    );
    *page.page.lock().map_err(|_| "page lock")? = script;
    let profile = tempfile::tempdir()?;
    let mut child = std::process::Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("{origin}/"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        if let Some(r) = page.result.lock().ok().and_then(|r| r.clone()) {
            break Some(r);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let report: Value =
        serde_json::from_str(&report.ok_or("the page reported nothing within 60 s")?)?;
    assert_eq!(report["error"], Value::Null, "{report}");
    assert_eq!(report["loginStatus"], 200, "{report}");
    assert_eq!(report["callStatus"], 200, "{report}");
    // What the upstream saw: the session's identity, injected by the gateway.
    let headers = report["echo"]["headers"].as_array().ok_or("no echo")?;
    let user = headers
        .iter()
        .find(|h| {
            h[0].as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("x-hasura-user-id"))
        })
        .and_then(|h| h[1].as_str());
    assert_eq!(user, Some("browser-user"), "{report}");
    assert!(
        report["requestId"].as_str().is_some_and(|s| !s.is_empty()),
        "{report}"
    );
    assert_eq!(report["refusedStatus"], 401, "{report}");
    assert!(report["refusedBody"]["error"].is_string(), "{report}");
    // Exposed, so the app can tell a missing token from another refusal.
    assert!(
        report["challenge"]
            .as_str()
            .is_some_and(|c| c.starts_with("Bearer")),
        "{report}"
    );
    Ok(())
}
