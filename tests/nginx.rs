//! Forward-auth behind a real nginx: `auth_request` to `/auth/verify`, `auth_request_set`
//! to copy the identity onto the proxied request, an echo upstream behind it. The upstream
//! gets the gateway's identity and never one a client sent.
//!
//! nginx is the Debian package's binary: the one on PATH, or `nginx` downloaded with
//! `apt-get download` and unpacked (no service is installed or started). The test is skipped,
//! saying so, only when neither works.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The nginx binary, installing it into the test scratch directory when needed.
fn nginx_binary() -> Option<PathBuf> {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return Some(candidate.into());
        }
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nginx-deb");
    let bin = dir.join("root/usr/sbin/nginx");
    if bin.exists() {
        return Some(bin);
    }
    std::fs::create_dir_all(&dir).ok()?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "-qq", "nginx"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // A fresh machine may have no package lists yet.
    if !download() {
        let _ = Command::new("apt-get")
            .args(["update", "-qq"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !download() {
            return None;
        }
    }
    let deb = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))?;
    let ok = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(dir.join("root"))
        .status()
        .is_ok_and(|s| s.success());
    (ok && bin.exists()).then_some(bin)
}

struct Nginx {
    addr: std::net::SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The auth subrequest of the README's plain-nginx snippet: the original URI in
/// `X-Original-URI`, set by nginx (which replaces a client's header of that name).
const PLAIN_NGINX: &str = "proxy_set_header X-Original-URI $request_uri;";

/// The auth subrequest as ingress-nginx builds it for `auth-url`: the client's headers are
/// passed through, and nginx sets only `X-Original-URL` (absolute).
const INGRESS_NGINX: &str = "proxy_set_header X-Original-URL $scheme://$http_host$request_uri;";

/// nginx in front of `upstream`, asking `gateway` with `auth_request`; `verify` holds the
/// auth subrequest's header directives. Public paths go around the auth subrequest
/// (`location /public/` without `auth_request`) only when `route_public` is set.
fn start_nginx(
    bin: &Path,
    gateway: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    verify: &str,
    route_public: bool,
) -> Result<Nginx, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let d = dir.path().display();
    let public = if route_public {
        format!("location /public/ {{ proxy_set_header Authorization \"\"; proxy_pass http://{upstream}; }}")
    } else {
        String::new()
    };
    let conf = format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /_sessiongate_verify {{
      internal;
      proxy_pass http://{gateway}/auth/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      {verify}
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
    {public}
    location / {{
      auth_request /_sessiongate_verify;
      auth_request_set $sg_user_id $upstream_http_x_hasura_user_id;
      auth_request_set $sg_business_id $upstream_http_x_hasura_business_id;
      auth_request_set $sg_role $upstream_http_x_hasura_role;
      auth_request_set $sg_host_id $upstream_http_x_host_id;
      proxy_set_header X-Hasura-User-Id $sg_user_id;
      proxy_set_header X-Hasura-Business-Id $sg_business_id;
      proxy_set_header X-Hasura-Role $sg_role;
      proxy_set_header X-Host-Id $sg_host_id;
      proxy_set_header Authorization "";
      proxy_pass http://{upstream};
    }}
  }}
}}
"#
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("startup.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let ng = Nginx { addr, child, dir };
    if !eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    }) {
        let log = std::fs::read_to_string(ng.dir.path().join("error.log")).unwrap_or_default();
        return Err(format!("nginx did not start: {log}").into());
    }
    Ok(ng)
}

const FORWARD_AUTH_URI: &str = r#"
[forward_auth]
original_uri_header = "x-original-uri"
trusted_peers = ["127.0.0.1"]
"#;

#[test]
fn nginx_auth_request_injects_the_gateways_identity_only() -> TestResult {
    let Some(bin) = nginx_binary() else {
        eprintln!("skipped: nginx is not installed and `apt-get download nginx` failed");
        return Ok(());
    };
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    // nginx calls /auth/verify: its X-Original-URI decides public paths.
    let gw = Gateway::start_edited(echo.addr, Some(&redis.url()), FORWARD_AUTH_URI, |t| {
        t.replace("[proxy]\n", "[proxy]\ntrusted_proxies = [\"127.0.0.1\"]\n")
    })?;
    let ng = start_nginx(&bin, gw.proxy, echo.addr, PLAIN_NGINX, false)?;
    let (sid, token) = gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;

    let r = authed(ng.addr, "GET", "/v1/graphql?x=1", &token, &[], None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-hasura-user-id")?, vec!["user-7"]);
    assert_eq!(r.upstream_header("x-hasura-business-id")?, vec!["biz-9"]);
    assert_eq!(r.upstream_header("x-hasura-role")?, vec!["agent"]);
    assert_eq!(r.upstream_header("x-host-id")?, vec!["host-3"]);
    assert!(r.upstream_header("authorization")?.is_empty());

    // A client-sent identity header: refused before the upstream, in every spelling nginx
    // passes on; underscore spellings nginx drops by itself.
    let hits = echo.hits();
    for spoof in [
        ("X-Hasura-User-Id", "evil"),
        ("x-hasura-org-id", "evil"),
        ("X-HASURA-ADMIN-SECRET", "guess"),
        ("X-Host-Id", "evil"),
    ] {
        let r = authed(ng.addr, "GET", "/v1/graphql", &token, &[spoof], None)?;
        assert_eq!(r.status, 403, "{spoof:?}");
    }
    assert_eq!(echo.hits(), hits, "no spoofed request reached the upstream");
    let r = authed(
        ng.addr,
        "GET",
        "/v1/graphql",
        &token,
        &[("X_Hasura_User_Id", "evil")],
        None,
    )?;
    assert_eq!(r.status, 200);
    let names: Vec<String> = r
        .upstream_header_names()?
        .into_iter()
        .map(|n| n.to_ascii_lowercase().replace('_', "-"))
        .filter(|n| n.starts_with("x-hasura-") || n == "x-host-id")
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(r.upstream_header("x-hasura-user-id")?, vec!["user-7"]);

    // No token, a bad one, a revoked one: 401 from nginx, upstream untouched.
    let hits = echo.hits();
    assert_eq!(
        request(ng.addr, "GET", "/v1/graphql", &[], None)?.status,
        401
    );
    assert_eq!(
        authed(ng.addr, "GET", "/v1/graphql", "not-a-token", &[], None)?.status,
        401
    );
    admin_request(gw.admin, "DELETE", &format!("/admin/sessions/{sid}"), None)?;
    assert_eq!(
        authed(ng.addr, "GET", "/v1/graphql", &token, &[], None)?.status,
        401
    );
    assert_eq!(echo.hits(), hits);

    // A public path: passed without authentication and without identity.
    let r = request(ng.addr, "GET", "/public/page", &[], None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.upstream_header("x-hasura-user-id")?.is_empty());
    Ok(())
}

/// Before: `/auth/verify` believed the first of `X-Original-URI`, `X-Forwarded-Uri` and
/// `X-Original-URL` from any trusted proxy. ingress-nginx passes the client's headers to the
/// auth subrequest and sets only `X-Original-URL`, so a client's own `X-Original-URI:
/// /public/x` on `GET /v1/graphql` opened the protected backend without a credential.
#[test]
fn ingress_nginx_shape_client_original_uri_headers_never_open_a_protected_path() -> TestResult {
    let Some(bin) = nginx_binary() else {
        eprintln!("skipped: nginx is not installed and `apt-get download nginx` failed");
        return Ok(());
    };
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let config = r#"
[forward_auth]
original_uri_header = "x-original-url"
trusted_peers = ["127.0.0.1"]
"#;
    // The old configuration's trust too (nginx as a trusted proxy for X-Forwarded-For).
    let gw = Gateway::start_edited(echo.addr, Some(&redis.url()), config, |t| {
        t.replace("[proxy]\n", "[proxy]\ntrusted_proxies = [\"127.0.0.1\"]\n")
    })?;
    let ng = start_nginx(&bin, gw.proxy, echo.addr, INGRESS_NGINX, false)?;
    let hits = echo.hits();
    let spoofs: [(&str, String); 4] = [
        ("X-Original-URI", "/public/x".into()),
        ("X-Forwarded-Uri", "/public/x".into()),
        ("X-Original-URL", format!("http://{}/public/x", ng.addr)),
        ("X-Original-URL", "/public/x".into()),
    ];
    for path in ["/v1/graphql", "/v1/graphql?x=/public/y", "/"] {
        for (name, value) in &spoofs {
            let r = request(ng.addr, "GET", path, &[(name, value)], None)?;
            assert_eq!(r.status, 401, "{path} with {name}: {value}");
        }
        let all: Vec<(&str, &str)> = spoofs.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(request(ng.addr, "GET", path, &all, None)?.status, 401);
    }
    // Paths that nginx routes into the protected location but that look public before
    // nginx decodes them: ambiguous, so never public.
    for path in [
        "/public/..%2Fv1/graphql",
        "/public/..%252Fv1/graphql",
        "/public/%2e%2e/v1/graphql",
        "/public//../v1/graphql",
        // And the other way round: nginx resolves these into /public, the backend gets
        // the raw bytes.
        "/v1/graphql/../../public/x",
        "/v1/graphql/%2e%2e/%2e%2e/public/x",
    ] {
        let r = request(
            ng.addr,
            "GET",
            path,
            &[("X-Original-URI", "/public/x")],
            None,
        )?;
        assert_eq!(r.status, 401, "{path}");
    }
    assert_eq!(
        echo.hits(),
        hits,
        "no protected request reached the upstream"
    );

    // The real public path, named by nginx itself, still passes without a credential.
    let r = request(ng.addr, "GET", "/public/page", &[], None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.upstream_header("x-hasura-user-id")?.is_empty());
    // And a session still works.
    let (_, token) = gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let r = authed(
        ng.addr,
        "GET",
        "/v1/graphql",
        &token,
        &[("X-Original-URI", "/public/x")],
        None,
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-hasura-user-id")?, vec!["user-7"]);

    // With no original-URI header configured none is believed: public paths go around the
    // auth subrequest in nginx (the README's snippet), everything else needs a session.
    let gw = Gateway::start_edited(echo.addr, Some(&redis.url()), "", |t| {
        t.replace("[proxy]\n", "[proxy]\ntrusted_proxies = [\"127.0.0.1\"]\n")
    })?;
    let ng = start_nginx(&bin, gw.proxy, echo.addr, INGRESS_NGINX, true)?;
    assert_eq!(
        request(ng.addr, "GET", "/public/page", &[], None)?.status,
        200
    );
    for (name, value) in &spoofs {
        let r = request(ng.addr, "GET", "/v1/graphql", &[(name, value)], None)?;
        assert_eq!(r.status, 401, "{name}");
    }
    Ok(())
}
