//! WebSocket handshakes as a request shows them: whether a request asks to become a
//! WebSocket, and which GraphQL subprotocols it offers. Routing, the shape checks and the
//! relay all ask these same questions.

use http::header::UPGRADE;
use pingora::http::RequestHeader;

/// The GraphQL-over-WebSocket subprotocols, which carry `connection_init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subprotocol {
    /// `graphql-transport-ws` (graphql-ws library).
    TransportWs,
    /// `graphql-ws` (legacy subscriptions-transport-ws, Hasura's default).
    LegacyWs,
}

impl Subprotocol {
    /// The subprotocol a `Sec-WebSocket-Protocol` token names, if it is a GraphQL one.
    pub fn from_name(name: &str) -> Option<Subprotocol> {
        match name.trim() {
            "graphql-transport-ws" => Some(Subprotocol::TransportWs),
            "graphql-ws" => Some(Subprotocol::LegacyWs),
            _ => None,
        }
    }

    /// Its `Sec-WebSocket-Protocol` token.
    pub fn name(self) -> &'static str {
        match self {
            Subprotocol::TransportWs => "graphql-transport-ws",
            Subprotocol::LegacyWs => "graphql-ws",
        }
    }
}

/// The GraphQL subprotocol the client prefers (the first it offers), if any.
pub fn preferred_graphql(req: &RequestHeader) -> Option<Subprotocol> {
    req.headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(Subprotocol::from_name)
}

/// RFC 6455 §4.2.2: the `Sec-WebSocket-Accept` answering this handshake, when it is a valid
/// version-13 handshake (§4.2.1: `Connection` names `upgrade`, exactly one 16-byte
/// `Sec-WebSocket-Key`); `None` otherwise.
pub fn accept_key(req: &RequestHeader) -> Option<String> {
    use base64::Engine;
    use sha1::Digest;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let upgrade_named = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !is_websocket(req) || !upgrade_named {
        return None;
    }
    let mut versions = req.headers.get_all("sec-websocket-version").iter();
    if versions.next().map(|v| v.as_bytes()) != Some(b"13") || versions.next().is_some() {
        return None;
    }
    let mut keys = req.headers.get_all("sec-websocket-key").iter();
    let key = keys.next()?.as_bytes();
    if keys.next().is_some() {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    if decoded.len() != 16 {
        return None;
    }
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(GUID);
    Some(base64::engine::general_purpose::STANDARD.encode(sha.finalize()))
}

/// Whether a request asks to become a WebSocket (HTTP/1.1 GET with `Upgrade: websocket`).
pub fn is_websocket(req: &RequestHeader) -> bool {
    req.method == http::Method::GET
        && req.version == http::Version::HTTP_11
        && req
            .headers
            .get_all(UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Whether the client offers a GraphQL subprotocol (then the token may wait for
/// `connection_init`).
pub fn offers_graphql(req: &RequestHeader) -> bool {
    req.headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| Subprotocol::from_name(name).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> Result<RequestHeader, Box<pingora::Error>> {
        let mut r = RequestHeader::build(method, b"/v1/graphql", None)?;
        for (k, v) in headers {
            r.append_header(k.to_string(), *v)?;
        }
        Ok(r)
    }

    #[test]
    fn accept_key_is_rfc_6455s() -> Result<(), Box<pingora::Error>> {
        // The example of RFC 6455 §1.3.
        let ok = req(
            "GET",
            &[
                ("upgrade", "websocket"),
                ("connection", "keep-alive, Upgrade"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
            ],
        )?;
        assert_eq!(
            accept_key(&ok).as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        for bad in [
            vec![("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")],
            vec![
                ("upgrade", "websocket"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
            ],
            vec![
                ("sec-websocket-key", "c2hvcnQ="),
                ("sec-websocket-version", "13"),
            ],
            vec![
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "8"),
            ],
            vec![
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
            ],
        ] {
            let with_upgrade: Vec<(&str, &str)> = if bad.iter().any(|(k, _)| *k == "upgrade") {
                bad.clone()
            } else {
                [("upgrade", "websocket"), ("connection", "upgrade")]
                    .into_iter()
                    .chain(bad.iter().copied())
                    .collect()
            };
            assert_eq!(accept_key(&req("GET", &with_upgrade)?), None, "{bad:?}");
        }
        let offers = req(
            "GET",
            &[(
                "sec-websocket-protocol",
                "chat, graphql-ws, graphql-transport-ws",
            )],
        )?;
        assert_eq!(preferred_graphql(&offers), Some(Subprotocol::LegacyWs));
        Ok(())
    }

    #[test]
    fn upgrades_and_offers() -> Result<(), Box<pingora::Error>> {
        assert!(is_websocket(&req("GET", &[("upgrade", "h2c, WebSocket")])?));
        assert!(!is_websocket(&req("POST", &[("upgrade", "websocket")])?));
        assert!(!is_websocket(&req("GET", &[("upgrade", "h2c")])?));
        assert!(offers_graphql(&req(
            "GET",
            &[("sec-websocket-protocol", "chat, graphql-ws")]
        )?));
        assert!(!offers_graphql(&req(
            "GET",
            &[("sec-websocket-protocol", "chat")]
        )?));
        assert_eq!(
            Subprotocol::from_name(" graphql-transport-ws"),
            Some(Subprotocol::TransportWs)
        );
        Ok(())
    }
}
