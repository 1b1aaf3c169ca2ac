//! WebSockets through the gateway, with a real client and a real WebSocket upstream (both
//! tokio-tungstenite) and a real Redis: bearer or `connection_init` authentication for both
//! GraphQL subprotocols, `connection_init` rewritten so no client identity key arrives,
//! other frames untouched, and the socket closed when its session is revoked or expires.

mod common;
#[path = "common/ws_echo.rs"]
mod ws_echo;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ws_echo::WsEcho;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
type Error = Box<dyn std::error::Error>;

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn connect(
    gw: &Gateway,
    protocol: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{}/v1/graphql", gw.proxy).into_client_request()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        protocol.parse().map_err(http_err)?,
    );
    for (k, v) in headers {
        let name: http::HeaderName = k.parse().map_err(http_err)?;
        req.headers_mut().append(name, v.parse().map_err(http_err)?);
    }
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

fn http_err(_: impl std::fmt::Debug) -> tokio_tungstenite::tungstenite::Error {
    tokio_tungstenite::tungstenite::Error::Url(
        tokio_tungstenite::tungstenite::error::UrlError::UnableToConnect("bad header".into()),
    )
}

/// The next text message, or the close code.
async fn next(ws: &mut Ws, within: Duration) -> Result<Result<String, u16>, Error> {
    loop {
        match tokio::time::timeout(within, ws.next()).await? {
            Some(Ok(Message::Text(t))) => return Ok(Ok(t.to_string())),
            Some(Ok(Message::Close(c))) => return Ok(Err(c.map_or(1005, |c| u16::from(c.code)))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Ok(Err(1006)),
        }
    }
}

fn identity_keys(headers: &Value) -> Vec<(String, String)> {
    headers
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    let n = k.to_ascii_lowercase().replace('_', "-");
                    n.starts_with("x-hasura-") || n == "x-host-id" || n == "authorization"
                })
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

struct Env {
    _redis: Redis,
    upstream: WsEcho,
    gw: Gateway,
}

fn env(extra: &str) -> Result<Env, Error> {
    let redis = Redis::start()?;
    let upstream = WsEcho::start()?;
    let gw = Gateway::start_with(upstream.addr, Some(&redis.url()), extra)?;
    Ok(Env {
        _redis: redis,
        upstream,
        gw,
    })
}

#[test]
fn bearer_handshake_identity_and_init_rewrite() -> TestResult {
    let e = env("")?;
    let (_, token) =
        e.gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let rt = runtime()?;
    rt.block_on(async {
        let auth = format!("Bearer {token}");
        let mut ws = connect(
            &e.gw,
            "graphql-transport-ws",
            &[("authorization", &auth), ("X-Hasura-Role", "admin"), ("x_hasura_user_id", "evil")],
        )
        .await?;
        let init = json!({"type": "connection_init", "payload": {
            "x-hasura-role": "admin",
            "headers": {"X-Hasura-User-Id": "evil", "X_HASURA_ADMIN_SECRET": "guess", "x-request-id": "r1"}
        }});
        ws.send(Message::text(init.to_string())).await?;
        // The echo returns the rewritten init: proof of what the upstream got.
        let echoed: Value = serde_json::from_str(&next(&mut ws, Duration::from_secs(5)).await?.map_err(|c| format!("closed {c}"))?)?;
        let mut keys = identity_keys(&echoed["payload"]["headers"]);
        keys.sort();
        assert_eq!(
            keys,
            vec![
                ("x-hasura-business-id".to_string(), "biz-9".to_string()),
                ("x-hasura-role".to_string(), "agent".to_string()),
                ("x-hasura-user-id".to_string(), "user-7".to_string()),
                ("x-host-id".to_string(), "host-3".to_string()),
            ]
        );
        assert!(echoed["payload"].get("x-hasura-role").is_none());
        assert_eq!(echoed["payload"]["headers"]["x-request-id"], "r1");
        // Later frames pass untouched, in both directions.
        let sub = r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { x }","extensions":{"x-hasura-role":"kept as data"}}}"#;
        ws.send(Message::text(sub)).await?;
        assert_eq!(next(&mut ws, Duration::from_secs(5)).await?, Ok(sub.to_string()));
        let big = json!({"id": "2", "type": "subscribe", "payload": {"query": "y".repeat(70_000)}})
            .to_string();
        ws.send(Message::text(big.clone())).await?;
        assert_eq!(next(&mut ws, Duration::from_secs(5)).await?, Ok(big));
        ws.close(None).await?;
        Ok::<(), Error>(())
    })?;
    let seen = e.upstream.seen();
    assert_eq!(seen.len(), 1);
    let hs = &seen[0].headers;
    let get = |n: &str| {
        hs.iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("x-hasura-user-id"), vec!["user-7"]);
    assert_eq!(get("x-hasura-role"), vec!["agent"]);
    assert!(get("x-hasura-admin-secret").is_empty());
    assert!(
        get("authorization").is_empty(),
        "the bearer is not forwarded by default"
    );
    assert!(get("sec-websocket-extensions").is_empty());
    assert!(hs.iter().all(|(k, _)| k != "x_hasura_user_id"));
    Ok(())
}

#[test]
fn browser_sockets_authenticate_in_connection_init_for_both_protocols() -> TestResult {
    let e = env("")?;
    let (_, token) =
        e.gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let rt = runtime()?;
    for (protocol, init) in [
        (
            "graphql-transport-ws",
            json!({"type": "connection_init", "payload": {"headers": {"Authorization": format!("Bearer {token}")}}}),
        ),
        (
            "graphql-ws",
            json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}"), "x-hasura-user-id": "evil"}}),
        ),
    ] {
        rt.block_on(async {
            // A handshake credential the gateway cannot check (not a bearer) leaves the socket
            // pending; it must not reach the upstream for a lenient backend to believe.
            let mut ws = connect(
                &e.gw,
                protocol,
                &[
                    ("authorization", "Basic YWRtaW46YWRtaW4="),
                    ("upgrade", "h2c"),
                ],
            )
            .await?;
            ws.send(Message::text(init.to_string())).await?;
            let echoed: Value = serde_json::from_str(
                &next(&mut ws, Duration::from_secs(5))
                    .await?
                    .map_err(|c| format!("{protocol}: closed {c}"))?,
            )?;
            let mut keys = identity_keys(&echoed["payload"]["headers"]);
            keys.sort();
            assert_eq!(keys.len(), 4, "{protocol}: {keys:?}");
            assert!(keys.contains(&("x-hasura-user-id".into(), "user-7".into())));
            assert!(
                echoed["payload"].get("Authorization").is_none(),
                "{protocol}"
            );
            assert!(
                echoed["payload"].get("x-hasura-user-id").is_none(),
                "{protocol}"
            );
            Ok::<(), Error>(())
        })?;
    }
    // The upstream handshake is made once connection_init authenticated: it carries the
    // session's identity, the one subprotocol agreed with the client, and no unchecked
    // credential.
    let seen = e.upstream.seen();
    assert_eq!(seen.len(), 2);
    for (s, protocol) in seen.iter().zip(["graphql-transport-ws", "graphql-ws"]) {
        let get = |n: &str| {
            s.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-hasura-user-id"), Some("user-7"), "{:?}", s.headers);
        assert_eq!(get("sec-websocket-protocol"), Some(protocol));
        assert_eq!(get("authorization"), None, "{:?}", s.headers);
    }
    Ok(())
}

#[test]
fn bad_or_missing_credentials_close_before_anything_reaches_the_upstream() -> TestResult {
    let e = env("")?;
    let rt = runtime()?;
    rt.block_on(async {
        // No token anywhere: 4401.
        let mut ws = connect(&e.gw, "graphql-transport-ws", &[]).await?;
        ws.send(Message::text(
            json!({"type": "connection_init", "payload": {}}).to_string(),
        ))
        .await?;
        assert_eq!(next(&mut ws, Duration::from_secs(5)).await?, Err(4401));
        // A bad token, legacy protocol: connection_error, then 4401.
        let mut ws = connect(&e.gw, "graphql-ws", &[]).await?;
        ws.send(Message::text(
            json!({"type": "connection_init", "payload": {"Authorization": "Bearer forged"}})
                .to_string(),
        ))
        .await?;
        let msg: Value = serde_json::from_str(
            &next(&mut ws, Duration::from_secs(5))
                .await?
                .map_err(|c| format!("closed {c}"))?,
        )?;
        assert_eq!(msg["type"], "connection_error");
        assert_eq!(next(&mut ws, Duration::from_secs(5)).await?, Err(4401));
        // Anything before connection_init: 4400.
        let mut ws = connect(&e.gw, "graphql-transport-ws", &[]).await?;
        ws.send(Message::text(
            r#"{"id":"1","type":"subscribe","payload":{"query":"{x}"}}"#,
        ))
        .await?;
        assert_eq!(next(&mut ws, Duration::from_secs(5)).await?, Err(4400));
        Ok::<(), Error>(())
    })?;
    // Not even a connection: sockets that never authenticated cost the upstream nothing.
    assert_eq!(e.upstream.seen().len(), 0);
    // A non-GraphQL socket must authenticate at the handshake: plain 401.
    let r = request(
        e.gw.proxy,
        "GET",
        "/v1/graphql",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        None,
    )?;
    assert_eq!(r.status, 401);
    Ok(())
}

#[test]
fn revoked_or_expired_sessions_close_the_socket() -> TestResult {
    let e = env("")?;
    let (sid, token) =
        e.gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let (_, short) =
        e.gw.create_session("user-8", "biz-9", "host-3", "agent", 2)?;
    let rt = runtime()?;
    rt.block_on(async {
        let auth = format!("Bearer {token}");
        let mut ws = connect(&e.gw, "graphql-transport-ws", &[("authorization", &auth)]).await?;
        ws.send(Message::text(json!({"type": "connection_init"}).to_string())).await?;
        assert!(next(&mut ws, Duration::from_secs(5)).await?.is_ok());
        let r = admin_request(e.gw.admin, "DELETE", &format!("/admin/sessions/{sid}"), None)?;
        assert_eq!(r.status, 204);
        let revoked_at = Instant::now();
        assert_eq!(next(&mut ws, Duration::from_secs(5)).await?, Err(4403));
        eprintln!("closed {} ms after the revocation", revoked_at.elapsed().as_millis());

        // Expiry: a 2 s session, authenticated in connection_init.
        let mut ws = connect(&e.gw, "graphql-ws", &[]).await?;
        ws.send(Message::text(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {short}")}}).to_string())).await?;
        assert!(next(&mut ws, Duration::from_secs(5)).await?.is_ok());
        assert_eq!(next(&mut ws, Duration::from_secs(6)).await?, Err(4403));
        Ok::<(), Error>(())
    })?;
    // The relay counts a socket's end after writing its close frame: poll briefly.
    let mut metrics = String::new();
    let counted = eventually(Duration::from_secs(5), || {
        metrics = request(e.gw.admin, "GET", "/metrics", &[], None)
            .map(|r| r.body)
            .unwrap_or_default();
        metrics.contains("sessiongate_websocket_closes_total{reason=\"revoked\"} 2")
            && metrics.contains("sessiongate_websockets_open 0")
    });
    assert!(counted, "{metrics}");
    Ok(())
}

#[test]
fn silent_sockets_time_out_and_jwt_mode_puts_the_hasura_jwt_in_init() -> TestResult {
    let redis = Redis::start()?;
    let upstream = WsEcho::start()?;
    let ed_private = include_str!("fixtures/ed25519-private.pem");
    let ed_public = include_str!("fixtures/ed25519-public.pem");
    let extra = format!(
        "[hasura]\nmode = \"jwt\"\nsigning_kid = \"h1\"\n[[hasura.keys]]\nkid = \"h1\"\nalgorithm = \"EdDSA\"\nprivate_key = \"\"\"{ed_private}\"\"\"\npublic_key = \"\"\"{ed_public}\"\"\"\n"
    );
    let gw = Gateway::start_edited(upstream.addr, Some(&redis.url()), &extra, |t| {
        t.replace("[proxy]\n", "[proxy]\nwebsocket_init_timeout_seconds = 1\n")
    })?;
    let (_, token) = gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let rt = runtime()?;
    rt.block_on(async {
        // No connection_init within the configured second: 4408.
        let mut ws = connect(&gw, "graphql-transport-ws", &[]).await?;
        assert_eq!(next(&mut ws, Duration::from_secs(5)).await?, Err(4408));

        let mut ws = connect(&gw, "graphql-transport-ws", &[]).await?;
        let init = json!({"type": "connection_init", "payload": {"headers": {"Authorization": format!("Bearer {token}")}}});
        ws.send(Message::text(init.to_string())).await?;
        let echoed: Value = serde_json::from_str(
            &next(&mut ws, Duration::from_secs(5)).await?.map_err(|c| format!("closed {c}"))?,
        )?;
        let headers = &echoed["payload"]["headers"];
        let jwt = headers["Authorization"]
            .as_str()
            .and_then(|a| a.strip_prefix("Bearer "))
            .ok_or("no Hasura JWT in connection_init")?;
        assert_ne!(jwt, token);
        assert_eq!(jsonwebtoken::decode_header(jwt)?.kid.as_deref(), Some("h1"));
        assert_eq!(headers["x-host-id"], "host-3");
        assert!(headers.get("x-hasura-user-id").is_none(), "jwt mode sends no raw identity");
        Ok::<(), Error>(())
    })?;
    Ok(())
}

#[test]
fn a_revocation_on_another_replica_closes_the_socket() -> TestResult {
    let redis = Redis::start()?;
    let upstream = WsEcho::start()?;
    let a = Gateway::start(upstream.addr, Some(&redis.url()))?;
    let b = Gateway::start(upstream.addr, Some(&redis.url()))?;
    a.wait_subscribed()?;
    b.wait_subscribed()?;
    let (_, token) = a.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let rt = runtime()?;
    rt.block_on(async {
        let auth = format!("Bearer {token}");
        let mut ws = connect(&a, "graphql-ws", &[("authorization", &auth)]).await?;
        ws.send(Message::text(
            json!({"type": "connection_init"}).to_string(),
        ))
        .await?;
        assert!(next(&mut ws, Duration::from_secs(5)).await?.is_ok());
        // Revoke every session of the user, on the other replica.
        let r = admin_request(b.admin, "DELETE", "/admin/users/user-7/sessions", None)?;
        assert_eq!(r.status, 204);
        assert_eq!(next(&mut ws, Duration::from_secs(5)).await?, Err(4403));
        Ok::<(), Error>(())
    })?;
    Ok(())
}

#[test]
fn identity_cannot_be_smuggled_after_or_around_connection_init() -> TestResult {
    let e = env("")?;
    let (_, token) =
        e.gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let auth = format!("Bearer {token}");
    let rt = runtime()?;
    let second_inits = [
        json!({"type": "connection_init", "payload": {"headers": {"x-host-id": "victim"}}})
            .to_string(),
        r#"{"type":"connection\u005finit","payload":{"headers":{"x-host-id":"victim"}}}"#
            .to_string(),
    ];
    for (i, second) in second_inits.iter().enumerate() {
        rt.block_on(async {
            // No subprotocol offered: Hasura would speak graphql-ws anyway, so the same rules.
            let protocol = if i == 0 { "" } else { "graphql-transport-ws" };
            let mut ws = connect(&e.gw, protocol, &[("authorization", &auth)]).await?;
            ws.send(Message::text(
                json!({"type": "connection_init", "payload": {"x-host-id": "victim"}}).to_string(),
            ))
            .await?;
            let first: Value = serde_json::from_str(
                &next(&mut ws, Duration::from_secs(5))
                    .await?
                    .map_err(|c| format!("closed {c}"))?,
            )?;
            assert_eq!(first["payload"]["headers"]["x-host-id"], "host-3", "{i}");
            assert!(first["payload"].get("x-host-id").is_none(), "{i}");
            // A second connection_init, in any disguise, ends the socket.
            ws.send(Message::text(second.clone())).await?;
            assert_eq!(
                next(&mut ws, Duration::from_secs(5)).await?,
                Err(4429),
                "{second}"
            );
            Ok::<(), Error>(())
        })?;
    }
    // Something that is not a JSON object after init: 4400.
    rt.block_on(async {
        let mut ws = connect(&e.gw, "graphql-ws", &[("authorization", &auth)]).await?;
        ws.send(Message::text(
            json!({"type": "connection_init"}).to_string(),
        ))
        .await?;
        assert!(next(&mut ws, Duration::from_secs(5)).await?.is_ok());
        ws.send(Message::text("not json")).await?;
        assert_eq!(next(&mut ws, Duration::from_secs(5)).await?, Err(4400));
        Ok::<(), Error>(())
    })?;
    // The upstream saw exactly one message per socket: each rewritten connection_init.
    for s in e.upstream.seen() {
        assert_eq!(s.messages.len(), 1, "{:?}", s.messages);
        assert!(!s.messages[0].contains("victim"), "{:?}", s.messages);
    }
    // Upgrades that are not GET WebSockets never reach the upstream's upgrade path.
    let hits = e.upstream.seen().len();
    for (method, upgrade) in [("POST", "websocket"), ("GET", "h2c"), ("GET", "websocketx")] {
        let r = authed(
            e.gw.proxy,
            method,
            "/v1/graphql",
            &token,
            &[
                ("Upgrade", upgrade),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ],
            Some("{}"),
        )?;
        assert_eq!(r.status, 400, "{method} {upgrade}");
    }
    assert_eq!(e.upstream.seen().len(), hits);
    Ok(())
}

/// Hasura (aeson) keeps the first of two equal keys, serde_json the last: before, the issue's
/// message was a `start` to the gateway and a second `connection_init` to Hasura, and went
/// upstream as sent. Now any duplicate key, at any depth, closes the socket with 4400.
#[test]
fn duplicate_keys_close_the_socket_before_the_upstream_sees_them() -> TestResult {
    let e = env("")?;
    let (_, token) =
        e.gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let auth = format!("Bearer {token}");
    let rt = runtime()?;
    let after_init = [
        r#"{"type":"connection_init","payload":{"headers":{"x-hasura-role":"admin"}},"type":"start"}"#,
        r#"{"type":"subscribe","type":"connection_init","payload":{"x-host-id":"victim"}}"#,
        r#"{"id":"1","type":"start","payload":{"query":"{ a }","variables":{"x":1,"x":2}}}"#,
        r#"{"id":"1","type":"start","typ\u0065":"connection_init"}"#,
        r#"[{"type":"connection_init"}]"#,
    ];
    for protocol in ["graphql-ws", "graphql-transport-ws"] {
        for message in after_init {
            rt.block_on(async {
                let mut ws = connect(&e.gw, protocol, &[("authorization", &auth)]).await?;
                ws.send(Message::text(
                    json!({"type": "connection_init"}).to_string(),
                ))
                .await?;
                assert!(next(&mut ws, Duration::from_secs(5)).await?.is_ok());
                ws.send(Message::text(message)).await?;
                assert_eq!(
                    next(&mut ws, Duration::from_secs(5)).await?,
                    Err(4400),
                    "{protocol}: {message}"
                );
                Ok::<(), Error>(())
            })?;
        }
        // A duplicate in the first message: refused before anything goes upstream.
        rt.block_on(async {
            let mut ws = connect(&e.gw, protocol, &[("authorization", &auth)]).await?;
            ws.send(Message::text(
                r#"{"type":"connection_init","payload":{"headers":{"x-host-id":"a","x-host-id":"b"}}}"#,
            ))
            .await?;
            assert_eq!(next(&mut ws, Duration::from_secs(5)).await?, Err(4400));
            Ok::<(), Error>(())
        })?;
    }
    let seen = e.upstream.seen();
    assert_eq!(seen.len(), 2 * (after_init.len() + 1));
    for s in &seen {
        // Only the rewritten first init of each socket; none of the duplicates.
        assert!(s.messages.len() <= 1, "{:?}", s.messages);
        for m in &s.messages {
            assert_eq!(serde_json::from_str::<Value>(m)?["type"], "connection_init");
            assert!(!m.contains("admin") && !m.contains("victim"), "{m}");
        }
    }
    Ok(())
}

/// `Upgrade: websocket, h2c` is a WebSocket to the gateway; the upstream is offered only
/// `websocket` (before: the whole list, letting it pick a protocol the relay does not speak).
#[test]
fn only_websocket_is_offered_upstream() -> TestResult {
    use std::io::{Read, Write};
    let e = env("")?;
    let (_, token) =
        e.gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let mut s = std::net::TcpStream::connect(e.gw.proxy)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /v1/graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket, h2c\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-ws\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    assert_eq!(&head, b"HTTP/1.1 101", "{}", String::from_utf8_lossy(&head));
    let seen = e.upstream.seen();
    let upgrade: Vec<&str> = seen
        .iter()
        .flat_map(|c| c.headers.iter())
        .filter(|(k, _)| k == "upgrade")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(upgrade, vec!["websocket"]);
    Ok(())
}

/// A raw WebSocket client: the handshake by hand, so a test can hold a thousand of them or
/// stop halfway through a frame.
mod raw {
    use super::Error;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Opens a socket offering `graphql-transport-ws`, with `extra` header lines; returns it
    /// after the `101` and the response head.
    pub async fn open(
        addr: std::net::SocketAddr,
        extra: &str,
    ) -> Result<(TcpStream, String), Error> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!(
                "GET /v1/graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Protocol: graphql-transport-ws\r\n{extra}\r\n"
            )
            .as_bytes(),
        )
        .await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await? == 0 {
                return Err(format!("closed after {}", String::from_utf8_lossy(&head)).into());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(format!("not upgraded: {head}").into());
        }
        Ok((s, head))
    }

    /// A masked frame header for a payload of `len` bytes (`fin` set).
    pub fn header(opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        // A zero mask: the payload goes as it is.
        f.extend_from_slice(&[0, 0, 0, 0]);
        f
    }

    /// One whole masked text frame.
    pub fn text(payload: &str) -> Vec<u8> {
        let mut f = header(0x1, payload.len());
        f.extend_from_slice(payload.as_bytes());
        f
    }

    /// The next frame from the server: `Ok(text)` or `Err(close code)`.
    pub async fn next(s: &mut TcpStream) -> Result<Result<String, u16>, Error> {
        loop {
            let mut h = [0u8; 2];
            if s.read_exact(&mut h).await.is_err() {
                return Ok(Err(1006));
            }
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).await?;
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).await?;
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; usize::try_from(len)?];
            s.read_exact(&mut payload).await?;
            match h[0] & 0x0f {
                0x1 => return Ok(Ok(String::from_utf8_lossy(&payload).to_string())),
                0x8 => {
                    let code = payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    return Ok(Err(code));
                }
                _ => continue,
            }
        }
    }
}

fn gauge(gw: &Gateway, name: &str) -> Result<f64, Error> {
    let body = request(gw.admin, "GET", "/metrics", &[], None)?.body;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {name}").into())
}

/// Issue 18: a GraphQL socket without a credential is answered by the gateway; nothing goes
/// upstream until `connection_init` authenticates, and a pending socket costs little.
#[test]
fn pending_sockets_open_no_upstream_connection_and_cost_little() -> TestResult {
    let e = env("[connections]\nmax_connections_per_ip = 4000\n")?;
    let (_, token) =
        e.gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let rt = runtime()?;
    rt.block_on(async {
        let mut socks = Vec::new();
        // Warm-up: the allocator's and the runtime's first growth is not a socket's cost.
        for _ in 0..50 {
            socks.push(raw::open(e.gw.proxy, "").await?.0);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = e.gw.rss_kib()?;
        for _ in 0..1000 {
            let (s, head) = raw::open(e.gw.proxy, "").await?;
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
            assert!(lower.contains("sec-websocket-protocol: graphql-transport-ws"), "{head}");
            socks.push(s);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = e.gw.rss_kib()?;
        let per_socket = after.saturating_sub(before) * 1024 / 1000;
        eprintln!("RSS {before} KiB -> {after} KiB with 1,000 pending sockets: {per_socket} bytes each");
        // The whole connection, its task, its pending state and buffer: issue 18's target.
        assert!(per_socket <= 16 * 1024, "{per_socket} bytes per pending socket");
        assert_eq!(e.upstream.seen().len(), 0, "a pending socket opened an upstream connection");
        assert_eq!(gauge(&e.gw, "sessiongate_websockets_open")?, 1050.0);

        // One authenticates: now, and only now, its upstream handshake is made, with the
        // session's identity.
        let s = &mut socks[7];
        use tokio::io::AsyncWriteExt;
        let init = json!({"type": "connection_init", "payload": {"headers": {"Authorization": format!("Bearer {token}")}}});
        s.write_all(&raw::text(&init.to_string())).await?;
        let echoed: Value = serde_json::from_str(&raw::next(s).await?.map_err(|c| format!("closed {c}"))?)?;
        assert_eq!(echoed["payload"]["headers"]["x-hasura-user-id"], "user-7");
        let sub = r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { x }"}}"#;
        s.write_all(&raw::text(sub)).await?;
        assert_eq!(raw::next(s).await?, Ok(sub.to_string()));
        Ok::<(), Error>(())
    })?;
    let seen = e.upstream.seen();
    assert_eq!(seen.len(), 1);
    let get = |n: &str| {
        seen[0]
            .headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("x-hasura-user-id").as_deref(), Some("user-7"));
    assert_eq!(
        get("sec-websocket-protocol").as_deref(),
        Some("graphql-transport-ws")
    );
    assert_eq!(get("authorization"), None);
    Ok(())
}

/// Issue 18: 50 sockets each holding a 900 KiB unfinished message: the held bytes never go
/// past `websocket.max_buffered_bytes`; the sockets that would are closed 1013, the others
/// keep working, and memory stays bounded.
#[test]
fn held_bytes_stay_within_the_budget_and_other_sockets_keep_working() -> TestResult {
    const BUDGET: usize = 8 * 1024 * 1024;
    const PART: usize = 900 * 1024;
    let e = env(&format!(
        "[connections]\nmax_connections_per_ip = 4000\n[websocket]\nmax_buffered_bytes = {BUDGET}\nmax_per_session = 100\n"
    ))?;
    let (_, token) =
        e.gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let rt = runtime()?;
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let init = json!({"type": "connection_init"}).to_string();
        let mut socks = Vec::new();
        for _ in 0..50 {
            let (mut s, _) = raw::open(e.gw.proxy, &auth).await?;
            s.write_all(&raw::text(&init)).await?;
            assert!(raw::next(&mut s).await?.is_ok());
            socks.push(s);
        }
        let before = e.gw.rss_kib()?;
        // A 1,000,000-byte message (a JSON object, as every message must be), of which the
        // frame header and 900 KiB are sent.
        let (open_, close_) = (
            r#"{"id":"1","type":"subscribe","payload":{"query":""#,
            r#""}}"#,
        );
        let message = format!(
            "{open_}{}{close_}",
            "x".repeat(1_000_000 - open_.len() - close_.len())
        );
        let mut part = raw::header(0x1, message.len());
        part.extend_from_slice(&message.as_bytes()[..PART]);
        let mut peak = 0.0f64;
        for s in &mut socks {
            // A socket closed for the budget may refuse the rest of the write.
            let _ = s.write_all(&part).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            let held = gauge(&e.gw, "sessiongate_websocket_buffered_bytes")?;
            peak = peak.max(held);
            assert!(held <= BUDGET as f64, "{held} bytes held");
        }
        let rss = e.gw.rss_kib()?;
        eprintln!("held at most {peak} bytes (budget {BUDGET}); RSS {before} -> {rss} KiB");
        assert!(
            rss.saturating_sub(before) < 64 * 1024,
            "RSS grew {} KiB",
            rss - before
        );
        // The ones past the budget were told 1013; the rest are open.
        let mut closed = 0;
        let mut open = Vec::new();
        for mut s in socks {
            match tokio::time::timeout(Duration::from_millis(200), raw::next(&mut s)).await {
                Ok(r) => {
                    assert_eq!(r?, Err(1013));
                    closed += 1;
                }
                Err(_) => open.push(s),
            }
        }
        let fits = BUDGET / (PART + 14);
        eprintln!("{closed} closed with 1013, {} holding", open.len());
        assert!(
            open.len() >= fits - 1 && open.len() <= fits,
            "{} open",
            open.len()
        );
        assert_eq!(closed + open.len(), 50);
        // A socket still holding finishes its message: it arrives whole.
        let s = &mut open[0];
        s.write_all(&message.as_bytes()[PART..]).await?;
        let echoed = raw::next(s).await?.map_err(|c| format!("closed {c}"))?;
        assert_eq!(echoed, message);
        // And a new socket works.
        let (mut fresh, _) = raw::open(e.gw.proxy, &auth).await?;
        fresh.write_all(&raw::text(&init)).await?;
        assert!(raw::next(&mut fresh).await?.is_ok());
        Ok::<(), Error>(())
    })?;
    let closes = request(e.gw.admin, "GET", "/metrics", &[], None)?.body;
    assert!(closes.contains("sessiongate_websocket_closes_total{reason=\"over_budget\"}"));
    Ok(())
}

/// Issue 18: a message must complete within `websocket.message_timeout_ms` of its first
/// byte (1008), and a session holds at most `websocket.max_per_session` sockets.
#[test]
fn unfinished_messages_time_out_and_a_session_holds_few_sockets() -> TestResult {
    let e = env("[websocket]\nmessage_timeout_ms = 1000\nmax_per_session = 2\n")?;
    let (_, token) =
        e.gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let rt = runtime()?;
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let init = json!({"type": "connection_init"}).to_string();
        let (mut a, _) = raw::open(e.gw.proxy, &auth).await?;
        a.write_all(&raw::text(&init)).await?;
        assert!(raw::next(&mut a).await?.is_ok());
        // Half a frame, then nothing.
        let frame = raw::text(r#"{"id":"1","type":"subscribe","payload":{}}"#);
        a.write_all(&frame[..10]).await?;
        let started = Instant::now();
        assert_eq!(raw::next(&mut a).await?, Err(1008));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");

        // Two sockets of one session; a third is refused, at the handshake (429) or, pending,
        // at connection_init (1008).
        let (mut b, _) = raw::open(e.gw.proxy, &auth).await?;
        let (mut c, _) = raw::open(e.gw.proxy, "").await?;
        let bearer_init = json!({"type": "connection_init", "payload": {"headers": {"Authorization": format!("Bearer {token}")}}}).to_string();
        c.write_all(&raw::text(&bearer_init)).await?;
        assert!(raw::next(&mut c).await?.is_ok());
        assert!(raw::open(e.gw.proxy, &auth).await.is_err_and(|e| e.to_string().contains("429")));
        let (mut d, _) = raw::open(e.gw.proxy, "").await?;
        d.write_all(&raw::text(&bearer_init)).await?;
        assert_eq!(raw::next(&mut d).await?, Err(1008));
        // One ends: there is room again.
        b.write_all(&[0x88, 0x80, 0, 0, 0, 0]).await?;
        drop(b);
        let mut room = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok((mut f, _)) = raw::open(e.gw.proxy, &auth).await {
                f.write_all(&raw::text(&init)).await?;
                room = raw::next(&mut f).await?.is_ok();
                break;
            }
        }
        assert!(room, "a closed socket gave its place back");
        Ok::<(), Error>(())
    })?;
    Ok(())
}

/// Review finding (issue 18): a socket that never authenticates is not free. Held a second
/// or more and then closed, it counts as a failed authentication of its address, which is
/// then refused further pending sockets; a prompt close (a page navigated away) does not.
#[test]
fn sockets_held_without_authenticating_count_as_failed_authentications() -> TestResult {
    let e = env("[rate_limits]\nauth_failures_per_ip = 3\n")?;
    let rt = runtime()?;
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let close = [0x88u8, 0x80, 0, 0, 0, 0];
        for _ in 0..5 {
            let (mut s, _) = raw::open(e.gw.proxy, "").await?;
            s.write_all(&close).await?;
            assert_eq!(raw::next(&mut s).await?, Err(1006));
        }
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(raw::open(e.gw.proxy, "").await?.0);
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
        for mut s in held {
            s.write_all(&close).await?;
            let _ = raw::next(&mut s).await?;
        }
        let refused = eventually_async(|| async {
            raw::open(e.gw.proxy, "")
                .await
                .is_err_and(|err| err.to_string().contains("429"))
        })
        .await;
        assert!(refused, "the address was not refused");
        Ok::<(), Error>(())
    })?;
    Ok(())
}

/// A socket is served by the listener once Pingora is done with its handshake request and
/// hands the connection back, so what Pingora read of that request must be all there is and
/// the connection must be one it keeps: a handshake with a body, or whose `Connection` says
/// `close` (with a bearer or without), is refused (400) before anything is asked of the
/// upstream, and a client that sends frames with its handshake, before its `101` (RFC 6455
/// §4.1), is closed unanswered, not served with those frames lost. A socket opened right
/// after on the same gateway is served.
#[test]
fn handshakes_with_a_body_or_early_frames_open_no_socket() -> TestResult {
    let e = env("")?;
    let (_, token) =
        e.gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let rt = runtime()?;
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let handshake = "GET /v1/graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n";
        let init = json!({"type": "connection_init", "payload": {"headers": {"Authorization": format!("Bearer {token}")}}});
        let with_body = format!("{handshake}Content-Length: 5\r\n\r\nhello").into_bytes();
        let mut early = format!("{handshake}\r\n").into_bytes();
        early.extend_from_slice(&raw::text(&init.to_string()));
        let closing = format!("{}Connection: close\r\n\r\n", handshake.replace("Connection: Upgrade\r\n", "Connection: Upgrade, close\r\n")).into_bytes();
        let closing_bearer = format!("{}Connection: close\r\nAuthorization: Bearer {token}\r\n\r\n", handshake.replace("Connection: Upgrade\r\n", "Connection: Upgrade, close\r\n")).into_bytes();
        for (what, bytes, answer) in [
            ("a body", with_body, "HTTP/1.1 400"),
            ("early frames", early, ""),
            ("Connection: close", closing, "HTTP/1.1 400"),
            ("Connection: close with a bearer", closing_bearer, "HTTP/1.1 400"),
        ] {
            let mut s = tokio::net::TcpStream::connect(e.gw.proxy).await?;
            s.write_all(&bytes).await?;
            let mut got = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
            assert!(read.is_ok(), "{what}: the connection stayed open");
            let got = String::from_utf8_lossy(&got);
            assert!(got.starts_with(answer) && !got.contains(" 101 "), "{what}: {got}");
        }
        let (mut s, _) = raw::open(e.gw.proxy, "").await?;
        s.write_all(&raw::text(&init.to_string())).await?;
        let echoed: Value = serde_json::from_str(&raw::next(&mut s).await?.map_err(|c| format!("closed {c}"))?)?;
        assert_eq!(echoed["payload"]["headers"]["x-hasura-user-id"], "user-7");
        Ok::<(), Error>(())
    })?;
    assert_eq!(
        e.upstream.seen().len(),
        1,
        "only the last socket reached the upstream"
    );
    Ok(())
}

async fn eventually_async<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..30 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
