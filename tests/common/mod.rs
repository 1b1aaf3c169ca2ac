//! Test harness: a real `redis-server` on a free port, the echo upstream, the real
//! `sessiongate` binary on free ports, and a raw HTTP/1.1 client that sends exactly the
//! bytes a test writes (header case, duplicates and framing included).

#![allow(dead_code)]

pub mod echo;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const ADMIN_TOKEN: &str = "integration-admin-token-0123456789";
pub const HS_SECRET: &str = "integration-hs256-secret-0123456789abcdef";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Two different free ports: both are held while the second is found (two calls of
/// [`free_port`] can return the same port, and a gateway refuses equal listen addresses).
pub fn two_free_ports() -> (u16, u16) {
    let first = TcpListener::bind("127.0.0.1:0");
    let second = TcpListener::bind("127.0.0.1:0");
    let port = |l: &std::io::Result<TcpListener>| {
        l.as_ref()
            .ok()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port())
    };
    (port(&first), port(&second))
}

fn wait_for(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A `redis-server` owned by one test; killed on drop.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra `redis-server` arguments (cluster, replicaof, ACL, TLS ...).
    extra: Vec<String>,
    /// Serve TLS on `port` (and no plain-text port).
    tls: bool,
}

impl Redis {
    pub fn start() -> Result<Redis, Box<dyn std::error::Error>> {
        Self::start_with(&[], false)
    }

    /// A server with extra arguments; `tls` serves TLS only (test certificates).
    ///
    /// The port is chosen by binding and releasing it, so another test (or, in cluster mode,
    /// the bus port at port + 10000, which must also exist: below 55536) can take it first:
    /// a start that fails is retried on another port.
    pub fn start_with(extra: &[&str], tls: bool) -> Result<Redis, Box<dyn std::error::Error>> {
        let cluster = extra.contains(&"--cluster-enabled");
        let mut last = None;
        for _ in 0..5 {
            let port = loop {
                let p = free_port();
                if !cluster || (p > 0 && p < 55_000) {
                    break p;
                }
            };
            let mut r = Redis {
                port,
                dir: tempfile::tempdir()?,
                child: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                tls,
            };
            match r.restart() {
                Ok(()) => return Ok(r),
                // Dropping `r` kills the server that did not come up.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| "redis-server did not start".into()))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts on the same port and data directory. AOF is on so that a stop/start
    /// keeps the data, like a production Redis with persistence.
    pub fn restart(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        if self.tls {
            let tls = repo_path("tests/fixtures/tls");
            cmd.args([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(tls.join("server.pem"))
            .arg("--tls-key-file")
            .arg(tls.join("server-key.pem"))
            .arg("--tls-ca-cert-file")
            .arg(tls.join("ca.pem"));
        } else {
            cmd.args(["--port", &port]);
        }
        let child = cmd
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?;
        self.child = Some(child);
        if !wait_for(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(10),
        ) {
            return Err("redis-server did not start".into());
        }
        Ok(())
    }

    /// Stops Redis cleanly (SIGTERM, so the AOF is complete) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: a Redis that accepts nothing and
    /// answers nothing, the shape of a network partition.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Sends one command (inline protocol) and returns the raw reply.
    pub fn command(&self, cmd: &str) -> Result<String, Box<dyn std::error::Error>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{cmd}\r\nQUIT\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// How many keys match `pattern` (`KEYS`; test data sets are tiny).
    /// Keys holding sessions, users, records or generations: everything but rate-limit
    /// counters (which every request to a session API touches by design) and the store's
    /// epoch (written once by the first replica to subscribe).
    pub fn data_key_count(&self) -> Result<usize, Box<dyn std::error::Error>> {
        Ok(self.key_count("sg:*")? - self.key_count("sg:rl:*")? - self.key_count("sg:epoch")?)
    }

    pub fn key_count(&self, pattern: &str) -> Result<usize, Box<dyn std::error::Error>> {
        let reply = self.command(&format!("KEYS {pattern}"))?;
        let first = reply.lines().next().unwrap_or_default();
        Ok(first
            .strip_prefix('*')
            .ok_or_else(|| format!("unexpected KEYS reply {first:?}"))?
            .parse()?)
    }

    /// How many times `cmd` ran, from `INFO commandstats`.
    pub fn calls(&self, cmd: &str) -> Result<u64, Box<dyn std::error::Error>> {
        let info = self.command("INFO commandstats")?;
        let prefix = format!("cmdstat_{cmd}:calls=");
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The gateway binary, running on free ports; killed on drop.
pub struct Gateway {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
    child: Child,
}

/// Config text for a test gateway; `extra` is appended (TOML tables).
pub fn config_text(
    proxy: u16,
    admin: u16,
    upstream: SocketAddr,
    redis: Option<&str>,
    extra: &str,
) -> String {
    let store = match redis {
        // A whole [store] body, for topologies and TLS.
        Some(body) if body.starts_with("backend") => body.to_string(),
        Some(url) => format!("backend = \"redis\"\nredis_url = \"{url}\"\ntimeout_ms = 300"),
        None => "backend = \"memory\"".to_string(),
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:{proxy}"
admin_listen = "127.0.0.1:{admin}"
threads = 2
grace_period_seconds = 0

[upstream]
url = "http://{upstream}"
connect_timeout_ms = 1000
read_timeout_ms = 5000

[proxy]
public_prefixes = ["/public"]
forward_authorization = false

[store]
{store}

[cache]
max_entries = 10000
ttl_seconds = 30

[tokens]
issuer = "sessiongate"
audience = "sessiongate"
signing_kid = "k1"
max_ttl_seconds = 86400

[[tokens.keys]]
kid = "k1"
algorithm = "HS256"
secret = "{HS_SECRET}"

[admin]
token = "{ADMIN_TOKEN}"
max_body_bytes = 65536
{extra}
"#
    )
}

impl Gateway {
    pub fn start(
        upstream: SocketAddr,
        redis: Option<&str>,
    ) -> Result<Gateway, Box<dyn std::error::Error>> {
        Self::start_with(upstream, redis, "")
    }

    pub fn start_with(
        upstream: SocketAddr,
        redis: Option<&str>,
        extra: &str,
    ) -> Result<Gateway, Box<dyn std::error::Error>> {
        Self::start_edited(upstream, redis, extra, |text| text)
    }

    /// Like `start_with`, with the whole config text passed through `edit` first (to add
    /// keys to the tables the harness writes).
    pub fn start_edited(
        upstream: SocketAddr,
        redis: Option<&str>,
        extra: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Result<Gateway, Box<dyn std::error::Error>> {
        Self::start_env(upstream, redis, extra, edit, &[])
    }

    /// Like `start_edited`, with environment variables (`RUST_LOG` among them) set.
    pub fn start_env(
        upstream: SocketAddr,
        redis: Option<&str>,
        extra: &str,
        edit: impl FnOnce(String) -> String,
        env: &[(&str, &str)],
    ) -> Result<Gateway, Box<dyn std::error::Error>> {
        let (mut proxy, mut admin) = two_free_ports();
        let mut text = edit(config_text(proxy, admin, upstream, redis, extra));
        // A port found free may be taken by a parallel test before the binary binds it:
        // then start again on other ports.
        for attempt in 1.. {
            let dir = tempfile::tempdir()?;
            let config_path = dir.path().join("sessiongate.toml");
            std::fs::write(&config_path, &text)?;
            match Self::spawn(dir, config_path, proxy, admin, env) {
                Err(e) if attempt < 5 && e.to_string().contains("in use") => {
                    let (p, a) = two_free_ports();
                    text = text
                        .replace(&format!("127.0.0.1:{proxy}\""), &format!("127.0.0.1:{p}\""))
                        .replace(&format!("127.0.0.1:{admin}\""), &format!("127.0.0.1:{a}\""));
                    (proxy, admin) = (p, a);
                }
                other => return other,
            }
        }
        Err("unreachable".into())
    }

    fn spawn(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        proxy: u16,
        admin: u16,
        env: &[(&str, &str)],
    ) -> Result<Gateway, Box<dyn std::error::Error>> {
        let log = std::fs::File::create(dir.path().join("gateway.log"))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessiongate"));
        cmd.arg("serve").arg("--config").arg(&config_path);
        for (k, _) in std::env::vars() {
            if k.starts_with("SESSIONGATE_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        let mut gw = Gateway {
            proxy: SocketAddr::from(([127, 0, 0, 1], proxy)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            config_path,
            _dir: dir,
            child,
        };
        // Up when both listeners answer and the process still runs. Pingora retries a bind
        // whose port is taken ("… is in use, will try again"), and another process may be
        // the one answering there: that is a start on other ports.
        let in_use = |gw: &Gateway| gw.log().contains(" is in use");
        let up = eventually(Duration::from_secs(20), || {
            !gw.is_running()
                || in_use(&gw)
                || (TcpStream::connect_timeout(&gw.admin, Duration::from_millis(100)).is_ok()
                    && TcpStream::connect_timeout(&gw.proxy, Duration::from_millis(100)).is_ok())
        });
        // Pingora binds the proxy right after the admin listener: give its warning time to
        // reach the log on a busy machine.
        std::thread::sleep(Duration::from_millis(200));
        if in_use(&gw) {
            return Err(format!("a port is in use; log:\n{}", gw.log()).into());
        }
        if !up || !gw.is_running() {
            return Err(format!("gateway did not start; log:\n{}", gw.log()).into());
        }
        Ok(gw)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Kills and starts the same config again (same ports).
    pub fn restart(mut self) -> Result<Gateway, Box<dyn std::error::Error>> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sessiongate.toml");
        std::fs::copy(&self.config_path, &path)?;
        // Wait for the old listeners to be released.
        std::thread::sleep(Duration::from_millis(200));
        Self::spawn(dir, path, self.proxy.port(), self.admin.port(), &[])
    }

    /// Waits until the gateway receives cross-replica events (its cache is in use).
    pub fn wait_subscribed(&self) -> Result<(), Box<dyn std::error::Error>> {
        let ok = eventually(Duration::from_secs(10), || {
            request(self.admin, "GET", "/readyz", &[], None)
                .ok()
                .and_then(|r| r.json().ok())
                .is_some_and(|v| v["events"] == "subscribed")
        });
        if ok {
            Ok(())
        } else {
            Err(format!("gateway never subscribed; log:\n{}", self.log()).into())
        }
    }

    /// Sends a signal (`TERM`, `HUP`, ...) to the gateway process.
    pub fn signal(&self, sig: &str) -> Result<(), Box<dyn std::error::Error>> {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{sig} failed").into())
        }
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The gateway process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the gateway process, in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> Result<u64, Box<dyn std::error::Error>> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .ok_or("no VmRSS")?;
        Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Creates a session through the admin API; returns (session_id, access_token).
    pub fn create_session(
        &self,
        user: &str,
        business: &str,
        host: &str,
        role: &str,
        ttl: u64,
    ) -> Result<(String, String), Box<dyn std::error::Error>> {
        let body = serde_json::json!({
            "user_id": user, "business_id": business, "host_id": host, "role": role, "ttl_seconds": ttl
        })
        .to_string();
        let r = admin_request(self.admin, "POST", "/admin/sessions", Some(&body))?;
        if r.status != 201 {
            return Err(format!("create session: {} {}", r.status, r.body).into());
        }
        let v = r.json()?;
        Ok((
            v["session_id"].as_str().ok_or("no session_id")?.to_string(),
            v["access_token"]
                .as_str()
                .ok_or("no access_token")?
                .to_string(),
        ))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response read off the wire.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.body)
    }

    /// For echo responses: every value the upstream received for `name` (exact,
    /// case-insensitive name match).
    pub fn upstream_header(&self, name: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let v = self.json()?;
        let list = v["headers"].as_array().ok_or("not an echo response")?;
        Ok(list
            .iter()
            .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .filter_map(|h| h[1].as_str().map(str::to_string))
            .collect())
    }

    /// For echo responses: every header name the upstream received.
    pub fn upstream_header_names(&self) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let v = self.json()?;
        let list = v["headers"].as_array().ok_or("not an echo response")?;
        Ok(list
            .iter()
            .filter_map(|h| h[0].as_str().map(str::to_string))
            .collect())
    }
}

/// Sends raw bytes and reads the response until the server closes the connection.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Result<Resp, Box<dyn std::error::Error>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> Result<Resp, Box<dyn std::error::Error>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = resp.parse(buf)? else {
        return Err(format!("incomplete response: {:?}", String::from_utf8_lossy(buf)).into());
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).to_string(),
            )
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let raw_body = &buf[n..];
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    Ok(Resp {
        status: resp.code.unwrap_or(0),
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(pos) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < pos + 2 + size {
            return out;
        }
        out.extend_from_slice(&b[pos + 2..pos + 2 + size]);
        b = &b[(pos + 4 + size).min(b.len())..];
    }
}

/// A request with `Connection: close`; `headers` are written as given.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Resp, Box<dyn std::error::Error>> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        req.push_str("\r\n");
    }
    raw(addr, req.as_bytes())
}

/// A proxied request carrying a bearer token.
pub fn authed(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Resp, Box<dyn std::error::Error>> {
    let auth = format!("Bearer {token}");
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    request(addr, method, target, &all, body)
}

/// An admin API request with the admin token.
pub fn admin_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Resp, Box<dyn std::error::Error>> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    request(
        addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

/// Polls until `f` holds or the timeout passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Polls a request until it answers `status` or the timeout passes.
pub fn eventually_status(
    timeout: Duration,
    status: u16,
    mut send: impl FnMut() -> Result<Resp, Box<dyn std::error::Error>>,
) -> bool {
    eventually(timeout, || send().is_ok_and(|r| r.status == status))
}

/// A Redis Sentinel (`redis-server --sentinel`) watching one master as `mymaster`.
pub struct Sentinel {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Sentinel {
    pub fn start(master_port: u16) -> Result<Sentinel, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 4000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.path().display()
            ),
        )?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        if !wait_for(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        ) {
            return Err("sentinel did not start".into());
        }
        Ok(Sentinel {
            port,
            _dir: dir,
            child,
        })
    }

    /// One inline command; the raw RESP reply.
    pub fn command(&self, cmd: &str) -> Result<String, Box<dyn std::error::Error>> {
        // Sentinel does not close on QUIT: read until the reply stops coming.
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.write_all(format!("{cmd}\r\n").as_bytes())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let wait = if out.is_empty() { 1000 } else { 200 };
            s.set_read_timeout(Some(Duration::from_millis(wait)))?;
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) if !out.is_empty() => break,
                Err(_) => {}
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The port of the master the sentinel currently names.
    pub fn master_port(&self) -> Option<u16> {
        let reply = self
            .command("SENTINEL get-master-addr-by-name mymaster")
            .ok()?;
        // *2 $9 127.0.0.1 $5 <port>
        reply.lines().nth(4)?.trim().parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
