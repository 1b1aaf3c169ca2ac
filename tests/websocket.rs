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
    // The handshake itself carried no identity, and no unchecked credential: the socket was
    // not authenticated yet.
    let seen = e.upstream.seen();
    assert_eq!(seen.len(), 2);
    for s in seen {
        assert!(
            s.headers
                .iter()
                .all(|(k, _)| !k.starts_with("x-hasura-") && k != "authorization"),
            "{:?}",
            s.headers
        );
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
    for s in e.upstream.seen() {
        assert!(s.messages.is_empty(), "the upstream got {:?}", s.messages);
    }
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
