//! Strict JSON for messages the gateway judges and then forwards as sent.
//!
//! serde_json keeps the *last* of two equal object keys; Hasura parses with aeson, which
//! keeps the *first*. The same bytes can therefore be a `start` to the gateway and a
//! `connection_init` to Hasura. A message that is passed on unchanged must mean one thing
//! to both, so any duplicate key (compared after unescaping, at any depth) is refused.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Why a message is not a strict JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StrictError {
    /// Not JSON at all (syntax, trailing bytes, lone surrogates, too deep).
    #[error("the message is not valid JSON")]
    Syntax,
    /// An object holds the same key twice.
    #[error("the message holds a duplicate object key")]
    DuplicateKey,
    /// Valid JSON, but not an object.
    #[error("the message is not a JSON object")]
    NotObject,
}

/// Marker in the visitor's error so that a duplicate is told apart from a syntax error.
const DUPLICATE: &str = "duplicate object key";

/// Parses `bytes` as one JSON value with no duplicate object key anywhere.
pub fn strict_value(bytes: &[u8]) -> Result<Value, StrictError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de).map_err(|e| {
        if e.is_data() && e.to_string().starts_with(DUPLICATE) {
            StrictError::DuplicateKey
        } else {
            StrictError::Syntax
        }
    })?;
    de.end().map_err(|_| StrictError::Syntax)?;
    Ok(value)
}

/// Parses `bytes` as a JSON object with no duplicate key anywhere.
pub fn strict_object(bytes: &[u8]) -> Result<Map<String, Value>, StrictError> {
    match strict_value(bytes)? {
        Value::Object(m) => Ok(m),
        _ => Err(StrictError::NotObject),
    }
}

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let value = map.next_value_seed(Strict)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        for text in [
            r#"{"type":"connection_init","payload":{},"type":"start"}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            r#"{"a":[{"x":1},{"y":1,"y":1}]}"#,
            // Equal after unescaping, as aeson compares them.
            r#"{"type":"start","typ\u0065":"connection_init"}"#,
        ] {
            assert_eq!(
                strict_object(text.as_bytes()),
                Err(StrictError::DuplicateKey),
                "{text}"
            );
        }
    }

    #[test]
    fn non_objects_and_bad_json_are_refused() {
        assert_eq!(strict_object(b"[1]"), Err(StrictError::NotObject));
        assert_eq!(strict_object(b"\"x\""), Err(StrictError::NotObject));
        assert_eq!(strict_object(b"{\"a\":1} x"), Err(StrictError::Syntax));
        assert_eq!(strict_object(b"{\"a\":1}{}"), Err(StrictError::Syntax));
        assert_eq!(
            strict_object(b"{\"a\":\"\\ud800\"}"),
            Err(StrictError::Syntax)
        );
        assert_eq!(strict_object(b""), Err(StrictError::Syntax));
        let deep = "[".repeat(1000);
        assert_eq!(strict_value(deep.as_bytes()), Err(StrictError::Syntax));
    }

    #[test]
    fn valid_objects_parse_like_serde_json() -> Result<(), StrictError> {
        let text = br#" {"type":"start","id":"1","payload":{"query":"{ a }","variables":{"n":1.5,"m":-2,"k":[true,null]}}} "#;
        let strict = strict_object(text)?;
        let loose: Value = serde_json::from_slice(text).map_err(|_| StrictError::Syntax)?;
        assert_eq!(Value::Object(strict), loose);
        // Keys equal only case-insensitively are different keys.
        assert!(strict_object(br#"{"A":1,"a":2}"#).is_ok());
        Ok(())
    }
}
