//! Connection caps and client deadlines, end to end through the real binary: slowloris,
//! 10,000 idle keep-alive connections, refusals past the caps, body limits and timeouts,
//! upstream timeouts. Attackers connect from other loopback addresses (127.0.0.2, ...), so
//! per-address caps tell them from the normal client on 127.0.0.1.

mod common;

use common::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

async fn connect_from(src: IpAddr, dst: SocketAddr) -> AnyResult<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    Ok(socket.connect(dst).await?)
}

/// Reads one response (head + `content-length` body) off a kept-alive connection; returns
/// its status and body. `None` when the server closed the connection first.
async fn read_response(s: &mut TcpStream) -> AnyResult<Option<(u16, String)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(&buf)? {
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            let status = resp.code.unwrap_or(0);
            while buf.len() < n + len {
                let got = s.read(&mut chunk).await?;
                if got == 0 {
                    return Err("closed inside a body".into());
                }
                buf.extend_from_slice(&chunk[..got]);
            }
            return Ok(Some((
                status,
                String::from_utf8_lossy(&buf[n..n + len]).into_owned(),
            )));
        }
        let got = s.read(&mut chunk).await?;
        if got == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(format!("closed mid-response: {:?}", String::from_utf8_lossy(&buf)).into())
            };
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// One keep-alive GET; the connection stays open.
async fn get(s: &mut TcpStream, target: &str, token: Option<&str>) -> AnyResult<(u16, String)> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: gw\r\n{auth}\r\n").as_bytes())
        .await?;
    read_response(s)
        .await?
        .ok_or_else(|| "connection closed before a response".into())
}

/// A fresh connection from 127.0.0.1, one authenticated request; its status and latency.
async fn normal_request(gw: SocketAddr, token: &str) -> AnyResult<(u16, Duration)> {
    let started = Instant::now();
    let mut s = connect_from(loopback(1), gw).await?;
    let (status, _) = get(&mut s, "/v1/graphql", Some(token)).await?;
    Ok((status, started.elapsed()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Reads `/metrics` and returns the value of one series (exact line prefix).
fn metric(gw: &Gateway, series: &str) -> AnyResult<f64> {
    let body = request(gw.admin, "GET", "/metrics", &[], None)
        .map_err(|e| e.to_string())?
        .body;
    let line = body
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .ok_or_else(|| format!("{series} not exported"))?;
    Ok(line.rsplit(' ').next().ok_or("no value")?.parse::<f64>()?)
}

fn start(extra: &str, edit: impl FnOnce(String) -> String) -> AnyResult<(echo::Echo, Gateway)> {
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_edited(echo.addr, None, extra, edit).map_err(|e| e.to_string())?;
    Ok((echo, gw))
}

fn session(gw: &Gateway) -> AnyResult<String> {
    let (_, token) = gw
        .create_session("user-1", "biz-1", "host-1", "user", 3600)
        .map_err(|e| e.to_string())?;
    Ok(token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_stop_a_normal_client() -> AnyResult<()> {
    let (_echo, gw) = start("[connections]\nheader_read_timeout_ms = 2000\n", |t| t)?;
    let token = session(&gw)?;
    let mut usual = Vec::new();
    for _ in 0..20 {
        let (status, took) = normal_request(gw.proxy, &token).await?;
        assert_eq!(status, 200);
        usual.push(took);
    }
    let usual = median(usual);

    // 500 clients, each sending a request head one byte every 100 ms, never finishing it.
    const ATTACKERS: usize = 500;
    let proxy = gw.proxy;
    let mut attackers = Vec::new();
    for i in 0..ATTACKERS {
        let src = loopback(2 + (i % 2) as u8);
        attackers.push(tokio::spawn(async move {
            let mut s = connect_from(src, proxy).await?;
            let opened = Instant::now();
            let head = b"GET /v1/graphql HTTP/1.1\r\nHost: gw\r\nX-Slow: ";
            for b in head.iter().chain(std::iter::repeat(&b'a')) {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = s.readable() => break,
                }
                if opened.elapsed() > Duration::from_secs(15) {
                    return Err::<_, Box<dyn std::error::Error + Send + Sync>>(
                        "the gateway kept a dripping connection open".into(),
                    );
                }
            }
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
            Ok((opened.elapsed(), answer))
        }));
    }
    // While they drip, the normal client goes on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut during = Vec::new();
    for _ in 0..20 {
        let (status, took) = normal_request(gw.proxy, &token).await?;
        assert_eq!(status, 200);
        during.push(took);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let worst = during.iter().max().copied().unwrap_or_default();
    let during = median(during);
    println!(
        "normal client: median {usual:?} before, {during:?} under {ATTACKERS} slowloris clients \
         (worst {worst:?})"
    );
    // "Its usual latency": generous bounds, this is a correctness test on a shared machine.
    assert!(
        during < usual * 20 + Duration::from_millis(50),
        "median {during:?} vs usual {usual:?}"
    );
    assert!(worst < Duration::from_secs(1), "worst {worst:?}");

    let mut cut = Vec::new();
    for a in attackers {
        let (held, answer) = a.await??;
        assert!(
            answer.starts_with(b"HTTP/1.1 408 "),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        let body = String::from_utf8_lossy(&answer);
        assert!(body.contains(r#""error":"request_timeout""#), "{body}");
        cut.push(held);
    }
    let cut = median(cut);
    println!("slowloris connections cut after {cut:?} (header_read_timeout 2 s)");
    assert!(cut >= Duration::from_millis(1900) && cut < Duration::from_secs(5));
    assert!(
        metric(
            &gw,
            "sessiongate_connections_closed_total{reason=\"header_timeout\"}"
        )? >= ATTACKERS as f64
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_keepalive_connections_are_held_while_traffic_continues() -> AnyResult<()>
{
    const IDLE: usize = 10_000;
    // The test process holds one descriptor per connection too.
    rlimit::increase_nofile_limit(u64::MAX)?;
    // Defaults for the caps (20,000 in total, 512 per address): the idle clients come from
    // 40 loopback addresses, 250 each.
    let (_echo, gw) = start("", |t| t)?;
    let token = session(&gw)?;
    let warm = normal_request(gw.proxy, &token).await?;
    assert_eq!(warm.0, 200);
    let rss_before = gw.rss_kib().map_err(|e| e.to_string())?;

    let proxy = gw.proxy;
    let mut held: Vec<TcpStream> = Vec::with_capacity(IDLE);
    let opening = Instant::now();
    for batch in 0..IDLE / 250 {
        let src = loopback(10 + batch as u8);
        let tasks: Vec<_> = (0..250)
            .map(|_| {
                tokio::spawn(async move {
                    let mut s = connect_from(src, proxy).await?;
                    let (status, _) = get(&mut s, "/public/idle", None).await?;
                    if status != 200 {
                        return Err::<_, Box<dyn std::error::Error + Send + Sync>>(
                            format!("status {status}").into(),
                        );
                    }
                    Ok(s)
                })
            })
            .collect();
        for t in tasks {
            held.push(t.await??);
        }
    }
    println!(
        "{IDLE} keep-alive connections opened in {:?}",
        opening.elapsed()
    );
    assert_eq!(metric(&gw, "sessiongate_connections_open")? as usize, IDLE);
    let rss_after = gw.rss_kib().map_err(|e| e.to_string())?;
    let per_conn = (rss_after.saturating_sub(rss_before) as f64 * 1024.0) / IDLE as f64;
    println!(
        "gateway RSS {rss_before} KiB before, {rss_after} KiB with {IDLE} idle connections: \
         {per_conn:.0} bytes per idle connection"
    );
    assert!(
        per_conn < 64.0 * 1024.0,
        "{per_conn} bytes per idle connection"
    );

    // Normal traffic goes on, on new connections.
    let mut during = Vec::new();
    for _ in 0..50 {
        let (status, took) = normal_request(gw.proxy, &token).await?;
        assert_eq!(status, 200);
        during.push(took);
    }
    println!(
        "normal request median {:?} with {IDLE} idle connections held",
        median(during)
    );
    // And the idle connections really are held: each of a sample still answers.
    for s in held.iter_mut().step_by(IDLE / 100) {
        assert_eq!(get(s, "/public/again", None).await?.0, 200);
    }
    // The normal requests' connections close as their clients go.
    assert!(eventually(Duration::from_secs(10), || {
        metric(&gw, "sessiongate_connections_open").is_ok_and(|v| v as usize == IDLE)
    }));
    drop(held);
    assert!(eventually(Duration::from_secs(10), || {
        metric(&gw, "sessiongate_connections_open").is_ok_and(|v| v == 0.0)
    }));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_caps_are_refused_cleanly() -> AnyResult<()> {
    let (_echo, gw) = start(
        "[connections]\nmax_connections = 50\nmax_connections_per_ip = 20\n",
        |t| t,
    )?;
    let token = session(&gw)?;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = connect_from(loopback(2), gw.proxy).await?;
        assert_eq!(get(&mut s, "/public/x", None).await?.0, 200);
        held.push(s);
    }
    // The 21st from the same address: 503 in the gateway's JSON, then the close.
    let mut extra = connect_from(loopback(2), gw.proxy).await?;
    extra
        .write_all(b"GET /public/x HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer)).await??;
    let r = parse_response(&answer).map_err(|e| e.to_string())?;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.json()?["error"], "too_many_connections");
    // Another address is not affected.
    assert_eq!(normal_request(gw.proxy, &token).await?.0, 200);

    // Fill the listener: 30 more from other addresses.
    for i in 0..30 {
        let mut s = connect_from(loopback(3 + (i % 3) as u8), gw.proxy).await?;
        assert_eq!(get(&mut s, "/public/x", None).await?.0, 200);
        held.push(s);
    }
    let mut s = connect_from(loopback(1), gw.proxy).await?;
    s.write_all(b"GET /public/x HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await??;
    assert_eq!(
        parse_response(&answer).map_err(|e| e.to_string())?.status,
        503
    );
    assert_eq!(
        metric(
            &gw,
            "sessiongate_connections_refused_total{cap=\"max_connections\"}"
        )?,
        1.0
    );
    assert_eq!(
        metric(
            &gw,
            "sessiongate_connections_refused_total{cap=\"max_connections_per_ip\"}"
        )?,
        1.0
    );
    // Held connections still work; closing some frees slots.
    assert_eq!(get(&mut held[0], "/public/y", None).await?.0, 200);
    held.truncate(40);
    let mut ok = false;
    for _ in 0..50 {
        if let Ok((200, _)) = normal_request(gw.proxy, &token).await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a freed slot is reused");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_and_header_limits_per_route() -> AnyResult<()> {
    let (echo, gw) = start(
        r#"
[[proxy.body_limits]]
prefix = "/public/upload"
max_body_bytes = 5000
"#,
        |t| {
            t.replace(
                "forward_authorization = false",
                "forward_authorization = false\nmax_body_bytes = 1000\nmax_header_count = 20",
            )
        },
    )?;
    let post = |target: &str, len: usize| {
        let body = "a".repeat(len);
        request(gw.proxy, "POST", target, &[], Some(&body)).map_err(|e| e.to_string())
    };
    let hits = echo.hits();
    let r = post("/public/x", 1001)?;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()?["error"], "payload_too_large");
    assert_eq!(echo.hits(), hits, "refused before the upstream");
    assert_eq!(post("/public/x", 1000)?.status, 200);
    assert_eq!(post("/public/upload/file", 4000)?.status, 200);
    assert_eq!(post("/public/upload/file", 5001)?.status, 413);

    // Chunked: no length up front; counted as it streams.
    let mut req =
        b"POST /public/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"1f4\r\n");
        req.extend_from_slice(&[b'b'; 500]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = raw(gw.proxy, &req).map_err(|e| e.to_string())?;
    assert_eq!(r.status, 413, "{}", r.body);

    // Header count.
    let many: Vec<(String, String)> = (0..25).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = request(gw.proxy, "GET", "/public/x", &many, None).map_err(|e| e.to_string())?;
    assert_eq!(r.status, 431, "{}", r.body);
    assert_eq!(r.json()?["error"], "request_header_fields_too_large");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_idle_connections_and_slow_upstreams_time_out() -> AnyResult<()> {
    let (_echo, gw) = start(
        r#"
[connections]
body_read_timeout_ms = 1500
idle_timeout_ms = 1000

[[dialects.mottasl.credentials]]
token = "connections-mottasl-token"
businesses = ["550e8400-e29b-41d4-a716-446655440000"]
roles = ["user"]
default_host_id = "host-1"
"#,
        |t| t.replace("read_timeout_ms = 5000", "read_timeout_ms = 2500"),
    )?;
    let token = session(&gw)?;

    // A body that stalls: 408 after the body deadline, in the gateway's JSON.
    let mut s = connect_from(loopback(1), gw.proxy).await?;
    s.write_all(b"POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nabcde")
        .await?;
    let started = Instant::now();
    let r = read_response(&mut s)
        .await?
        .ok_or("closed without a response")?;
    assert_eq!(r.0, 408, "{}", r.1);
    assert!(r.1.contains("request_timeout"));
    assert!(started.elapsed() >= Duration::from_millis(1400));

    // A body that drips (each byte well within a per-read timeout) is still bounded.
    let mut s = connect_from(loopback(1), gw.proxy).await?;
    s.write_all(b"POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n")
        .await?;
    let proxy_started = Instant::now();
    let dripper = tokio::spawn(async move {
        for _ in 0..100 {
            if s.write_all(b"z").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Stop once the gateway answered.
            let mut probe = [0u8; 1];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), s.peek(&mut probe)).await
            {
                if n > 0 {
                    break;
                }
            }
        }
        read_response(&mut s).await
    });
    let r = dripper.await??.ok_or("closed without a response")?;
    assert_eq!(r.0, 408, "{}", r.1);
    assert!(proxy_started.elapsed() < Duration::from_secs(5));

    // The same on a session API: 408 in that API's own format.
    let mut s = connect_from(loopback(1), gw.proxy).await?;
    s.write_all(
        b"POST /v1/app/user.new.session HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer connections-mottasl-token\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{",
    )
    .await?;
    let r = read_response(&mut s)
        .await?
        .ok_or("closed without a response")?;
    assert_eq!(r.0, 408, "{}", r.1);
    let v: serde_json::Value = serde_json::from_str(&r.1)?;
    assert_eq!(v["success"], false, "{v}");

    // Idle keep-alive: the connection closes quietly after idle_timeout.
    let mut s = connect_from(loopback(1), gw.proxy).await?;
    assert_eq!(get(&mut s, "/v1/graphql", Some(&token)).await?.0, 200);
    let idle_started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await??;
    assert!(rest.is_empty());
    let idle = idle_started.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "{idle:?}"
    );

    // Upstream too slow: 504 in JSON.
    let r = authed(
        gw.proxy,
        "GET",
        "/v1/graphql?delay_ms=3500",
        &token,
        &[],
        None,
    )
    .map_err(|e| e.to_string())?;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()?["error"], "gateway_timeout");
    Ok(())
}

/// The admin listener keeps the proxy's head deadline (a head that never ends is answered
/// 408 and closed; before, it stayed open for good) and has its own connection cap
/// (`admin.max_connections`): past it a connection gets 503, and a probe is served again as
/// soon as a slot frees (issue 18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_has_deadlines_and_a_cap() -> AnyResult<()> {
    let (_echo, gw) = start(
        "[connections]\nheader_read_timeout_ms = 1500\nbody_read_timeout_ms = 1500\n",
        |t| t.replace("[admin]\n", "[admin]\nmax_connections = 4\n"),
    )?;
    // A GET whose chunked body drips: answered (the probe does not read it), and the
    // dripping body does not hold the connection (any unread body's drain is bounded by the
    // body deadline).
    let opened = Instant::now();
    let mut dripping = connect_from(loopback(1), gw.admin).await?;
    dripping
        .write_all(
            b"GET /healthz HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
        )
        .await?;
    let first =
        tokio::time::timeout(Duration::from_secs(3), read_response(&mut dripping)).await??;
    assert_eq!(first.map(|(s, _)| s), Some(200));
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(6), dripping.read_to_end(&mut rest)).await??;
    let held = opened.elapsed();
    assert!(
        held < Duration::from_secs(4),
        "a dripping body held the connection {held:?}"
    );

    // A head that never ends.
    let opened = Instant::now();
    let mut slow = connect_from(loopback(1), gw.admin).await?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: aaaa")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(6), slow.read_to_end(&mut answer)).await??;
    let held = opened.elapsed();
    assert!(
        answer.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        held >= Duration::from_millis(1400) && held < Duration::from_secs(4),
        "{held:?}"
    );

    // Four idle connections from four addresses fill the cap (a quarter of it, one here,
    // per address): a second one from an address, and a fifth address, are refused.
    let mut idle = Vec::new();
    for last in 1..=4 {
        idle.push(connect_from(loopback(last), gw.admin).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for last in [1, 5] {
        let mut over = connect_from(loopback(last), gw.admin).await?;
        let refused =
            tokio::time::timeout(Duration::from_secs(3), read_response(&mut over)).await??;
        assert_eq!(refused.map(|(s, _)| s), Some(503), "from 127.0.0.{last}");
    }
    let (status, _) = get(&mut idle[0], "/healthz", None).await?;
    assert_eq!(status, 200, "an admitted connection is served");
    idle.clear();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut probe = connect_from(loopback(1), gw.admin).await?;
    assert_eq!(get(&mut probe, "/healthz", None).await?.0, 200);
    Ok(())
}
