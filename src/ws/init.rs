//! The graphql-ws `connection_init` message: where browsers put their token (they cannot set
//! headers on a WebSocket), and where Hasura looks for session variables — it merges the
//! payload's `headers` into the connection's. So the gateway reads the token from it and
//! rewrites it: every identity key the client wrote goes, the session's identity goes in.

use crate::headers::is_identity_header;
use serde_json::{Map, Value};

/// Why a first message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// Not `{"type": "connection_init"}`.
    #[error("the first message must be connection_init")]
    NotInit,
    /// Not a strict JSON object (see [`crate::json`]).
    #[error(transparent)]
    Json(#[from] crate::json::StrictError),
    /// `payload` or `payload.headers` is not an object.
    #[error("connection_init payload must be an object")]
    BadPayload,
}

/// A parsed `connection_init`.
#[derive(Debug, Clone, PartialEq)]
pub struct Init {
    message: Map<String, Value>,
}

fn is_authorization(key: &str) -> bool {
    key.eq_ignore_ascii_case("authorization")
}

impl Init {
    /// Parses a text message; it must be `connection_init` with an object (or no) payload.
    pub fn parse(text: &[u8]) -> Result<Init, InitError> {
        let message = crate::json::strict_object(text)?;
        if message.get("type").and_then(Value::as_str) != Some("connection_init") {
            return Err(InitError::NotInit);
        }
        match message.get("payload") {
            None | Some(Value::Null) => {}
            Some(Value::Object(p)) => {
                if !matches!(
                    p.get("headers"),
                    None | Some(Value::Null | Value::Object(_))
                ) {
                    return Err(InitError::BadPayload);
                }
            }
            Some(_) => return Err(InitError::BadPayload),
        }
        Ok(Init { message })
    }

    fn payload(&self) -> Option<&Map<String, Value>> {
        self.message.get("payload").and_then(Value::as_object)
    }

    /// The `Authorization` value of `payload.headers`, else of `payload` (keys compared
    /// case-insensitively).
    pub fn authorization(&self) -> Option<&str> {
        fn find(m: &Map<String, Value>) -> Option<&str> {
            m.iter()
                .find(|(k, _)| is_authorization(k))
                .and_then(|(_, v)| v.as_str())
        }
        let payload = self.payload()?;
        payload
            .get("headers")
            .and_then(Value::as_object)
            .and_then(find)
            .or_else(|| find(payload))
    }

    /// The message with every identity key and every `Authorization` removed from `payload`
    /// and `payload.headers`, and `set` written into `payload.headers`.
    pub fn rewrite(mut self, set: &[(&str, &str)]) -> Vec<u8> {
        let payload = self
            .message
            .entry("payload")
            .or_insert_with(|| Value::Object(Map::new()));
        if !payload.is_object() {
            *payload = Value::Object(Map::new());
        }
        if let Value::Object(p) = payload {
            p.retain(|k, _| !is_identity_header(k) && !is_authorization(k));
            let headers = p
                .entry("headers")
                .or_insert_with(|| Value::Object(Map::new()));
            if !headers.is_object() {
                *headers = Value::Object(Map::new());
            }
            if let Value::Object(h) = headers {
                h.retain(|k, _| !is_identity_header(k) && !is_authorization(k));
                for (name, value) in set {
                    h.insert((*name).to_string(), Value::from(*value));
                }
            }
        }
        Value::Object(self.message).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Init, InitError> {
        Init::parse(v.to_string().as_bytes())
    }

    #[test]
    fn token_from_headers_or_payload() -> Result<(), InitError> {
        let i = parse(
            json!({"type": "connection_init", "payload": {"headers": {"authorization": "Bearer a"}}}),
        )?;
        assert_eq!(i.authorization(), Some("Bearer a"));
        let i =
            parse(json!({"type": "connection_init", "payload": {"Authorization": "Bearer b"}}))?;
        assert_eq!(i.authorization(), Some("Bearer b"));
        let i = parse(json!({"type": "connection_init"}))?;
        assert_eq!(i.authorization(), None);
        Ok(())
    }

    #[test]
    fn refuses_anything_but_connection_init() {
        use crate::json::StrictError;
        assert_eq!(
            Init::parse(b"not json"),
            Err(InitError::Json(StrictError::Syntax))
        );
        assert_eq!(parse(json!({"type": "subscribe"})), Err(InitError::NotInit));
        assert_eq!(
            parse(json!([1])),
            Err(InitError::Json(StrictError::NotObject))
        );
        // aeson keeps the first `type`, serde_json the last: refused, whichever it is.
        assert_eq!(
            Init::parse(br#"{"type":"connection_init","payload":{},"type":"start"}"#),
            Err(InitError::Json(StrictError::DuplicateKey))
        );
        assert_eq!(
            Init::parse(
                br#"{"type":"connection_init","payload":{"headers":{"authorization":"a","authorization":"b"}}}"#
            ),
            Err(InitError::Json(StrictError::DuplicateKey))
        );
        assert_eq!(
            parse(json!({"type": "connection_init", "payload": 3})),
            Err(InitError::BadPayload)
        );
        assert_eq!(
            parse(json!({"type": "connection_init", "payload": {"headers": "x"}})),
            Err(InitError::BadPayload)
        );
    }

    #[test]
    fn rewrite_removes_every_identity_spelling_and_sets_ours(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let i = parse(json!({
            "type": "connection_init",
            "payload": {
                "X-Hasura-Role": "admin",
                "x_hasura_user_id": "evil",
                "Authorization": "Bearer client",
                "lang": "en",
                "headers": {
                    "X-HASURA-ADMIN-SECRET": "guess",
                    "x-host-id": "evil-host",
                    "authorization": "Bearer client",
                    "x-request-id": "r1"
                }
            }
        }))?;
        let out: Value =
            serde_json::from_slice(&i.rewrite(&[("x-hasura-user-id", "u1"), ("x-host-id", "h1")]))?;
        assert_eq!(
            out,
            json!({
                "type": "connection_init",
                "payload": {
                    "lang": "en",
                    "headers": {"x-request-id": "r1", "x-hasura-user-id": "u1", "x-host-id": "h1"}
                }
            })
        );
        // No payload at all: one is made.
        let out: Value = serde_json::from_slice(
            &parse(json!({"type": "connection_init"}))?.rewrite(&[("x-host-id", "h1")]),
        )?;
        assert_eq!(out["payload"]["headers"]["x-host-id"], "h1");
        Ok(())
    }
}
