//! Session dialects: the providers' session-creation APIs the gateway terminates itself.
//!
//! Each dialect parses its own request into the common [`NewSession`] model, calls the
//! session core, and renders its own success and error bodies. No dialect knows the store;
//! the store knows no dialect. This module holds what they share: the request/reply types,
//! the [`Problem`] every dialect renders in its own format (`problem.rs`), and JSON field
//! readers that name the offending field (`fields.rs`). Which path is whose, and the
//! dispatch, are `crate::endpoint`'s.
//!
//! [`NewSession`]: crate::session::model::NewSession

pub mod amity;
mod fields;
pub mod mottasl;
mod problem;
pub mod rapidly;

pub use fields::{field, query_field, FieldKind, FieldProblem, Fields, Len};
pub use problem::Problem;

use http::{HeaderMap, Method};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// The dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Mottasl.
    Mottasl,
    /// Amity.
    Amity,
    /// Rapidly.
    Rapidly,
}

impl Dialect {
    /// Label for metrics and logs; also the session's `source`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Mottasl => "mottasl",
            Dialect::Amity => "amity",
            Dialect::Rapidly => "rapidly",
        }
    }
}

/// What a dialect handler sees of a request.
#[derive(Debug)]
pub struct Request<'a> {
    /// Method.
    pub method: &'a Method,
    /// The normalised path (`/auth/sessions/{id}` carries an id in it).
    pub path: &'a str,
    /// Raw query string, if any.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The whole body (already bounded by `dialects.max_body_bytes`).
    pub body: &'a [u8],
    /// The client's address (see `client_ip`).
    pub client_ip: IpAddr,
    /// Whether the socket's peer is a trusted proxy (`proxy.trusted_proxies`): only then
    /// is `X-Forwarded-For` believed.
    pub via_trusted_proxy: bool,
    /// The socket's peer: `/auth/verify` believes an original URI, and hands out the minted
    /// Hasura JWT, only when it is one of `forward_auth.trusted_peers`.
    pub peer: IpAddr,
}

/// A complete response written by the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers (e.g. `Allow`).
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }
}

/// Requires `Content-Type: application/json` (parameters such as `charset` allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let ok = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(Problem::ContentType)
    }
}

/// Parses a body that must be one JSON object.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Problem::Malformed("the body must be a JSON object".into())),
        Err(e) => Err(Problem::Malformed(format!("malformed JSON: {e}"))),
    }
}

/// The bearer token of the `Authorization` header (exactly one such header).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    crate::auth::bearer_token(value.as_bytes())
}

/// One header's value as text (exactly one such header).
pub fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// The first value of a query parameter, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A problem in `dialect`'s own error format. A gateway refusal ([`Problem::Gate`]) is
/// first turned into the dialect's own problem.
pub fn render(dialect: Dialect, problem: &Problem) -> Reply {
    let converted;
    let problem = match problem {
        Problem::Gate(e) => {
            converted = Problem::from(e.clone());
            &converted
        }
        p => p,
    };
    let mut reply = match dialect {
        Dialect::Mottasl => mottasl::render(problem),
        Dialect::Amity => amity::render(problem),
        Dialect::Rapidly => rapidly::render(problem),
    };
    if let Problem::RateLimited(secs) = problem {
        reply.headers.push(("retry-after", secs.to_string()));
    }
    if let Problem::Unauthorized(_) | Problem::NoCredential(_) = problem {
        if dialect != Dialect::Amity {
            reply
                .headers
                .push(("www-authenticate", "Bearer".to_string()));
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::GateError;

    /// Gateway errors keep their meaning in a dialect (before: everything but a store outage
    /// became "internal error", and the gateway's own format turned 403 into 400).
    #[test]
    fn gateway_errors_keep_their_meaning_in_every_dialect() {
        assert_eq!(
            Problem::from(GateError::Forbidden("no".into())),
            Problem::Forbidden("no".into())
        );
        assert_eq!(
            Problem::from(GateError::RateLimited(7)),
            Problem::RateLimited(7)
        );
        assert_eq!(Problem::from(GateError::RequestTimeout), Problem::Timeout);
        assert!(matches!(
            Problem::from(GateError::SessionNotFound),
            Problem::Unauthorized(_)
        ));
        assert_eq!(Problem::from(GateError::Internal), Problem::Internal);
        for d in [Dialect::Mottasl, Dialect::Amity, Dialect::Rapidly] {
            let forbidden = render(d, &Problem::from(GateError::Forbidden("no".into())));
            assert_eq!(forbidden.status, 403, "{d:?}");
            let limited = render(d, &Problem::from(GateError::RateLimited(7)));
            assert_eq!(limited.status, 429, "{d:?}");
        }
    }
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn fields_name_the_offender() {
        let o = obj(json!({"a": "x", "n": 1, "e": "", "d": {"k": 2}}));
        let f = Fields::new(&o);
        let len = Len { min: 1, max: 3 };
        assert_eq!(f.string("a", len), Ok("x".into()));
        assert_eq!(f.string("zz", len), Err(field(&["zz"], FieldKind::Missing)));
        assert_eq!(
            f.string("n", len),
            Err(field(&["n"], FieldKind::Type("a string")))
        );
        assert_eq!(
            f.string("e", len),
            Err(field(&["e"], FieldKind::TooShort(1)))
        );
        let d = f.opt_object("d").ok().flatten();
        assert!(d.is_some_and(
            |d| d.opt_string("k", len) == Err(field(&["d", "k"], FieldKind::Type("a string")))
        ));
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let o = obj(json!({"s": "\u{e9}\u{e9}\u{e9}"}));
        assert!(Fields::new(&o).string("s", Len { min: 1, max: 3 }).is_ok());
    }

    #[test]
    fn json_content_type_is_required() {
        let mut h = HeaderMap::new();
        assert_eq!(require_json(&h), Err(Problem::ContentType));
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(require_json(&h), Ok(()));
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        assert_eq!(require_json(&h), Err(Problem::ContentType));
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(matches!(json_object(b"[1]"), Err(Problem::Malformed(_))));
        assert!(matches!(json_object(b"{"), Err(Problem::Malformed(_))));
        assert!(json_object(b"{}").is_ok());
    }

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param(Some("a=1&host_id=x%20y"), "host_id").as_deref(),
            Some("x y")
        );
        assert_eq!(query_param(Some("a=1"), "host_id"), None);
        assert_eq!(query_param(None, "host_id"), None);
    }
}
