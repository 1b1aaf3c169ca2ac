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
