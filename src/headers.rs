//! Identity headers: strip whatever the client sent, inject what the session says.

use crate::error::GateError;
use crate::hasura::Identity;
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, COOKIE, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;

pub use crate::header_names::{
    is_header_safe, is_identity_header, ADMIN_SECRET, BUSINESS_ID, HOST_ID, REQUEST_ID, ROLE,
    USER_ID,
};

/// Headers a `Connection` listing must never remove: message framing and routing.
fn is_protected_from_connection(name: &str) -> bool {
    name.eq_ignore_ascii_case(CONTENT_LENGTH.as_str())
        || name.eq_ignore_ascii_case(TRANSFER_ENCODING.as_str())
        || name.eq_ignore_ascii_case(HOST.as_str())
}

fn internal(_: impl std::fmt::Debug) -> GateError {
    GateError::Internal
}

/// Rewrites the upstream request in place, and sets its `x-request-id`.
///
/// Order matters: the `Connection` listing is handled first (its hop-by-hop headers removed,
/// the header itself dropped) so that nothing downstream of us can remove what we inject;
/// then every client identity header goes; then the session's identity is set. A public
/// request (`identity` `None`) keeps its `Authorization` and gets no identity.
///
/// The headers are rewritten as a plain [`http::HeaderMap`]: Pingora keeps, next to it, a
/// map of each name's spelling as the client sent it, and every insert through
/// [`RequestHeader`] parsed the name again and wrote (and grew) both maps, several times per
/// request. The upstream gets names lowercase, as from an HTTP/2 client (HTTP field names
/// are case-insensitive).
pub fn rewrite(
    req: &mut RequestHeader,
    identity: Option<&Identity<'_>>,
    request_id: &str,
) -> Result<(), GateError> {
    let send_end_stream = req.send_end_stream();
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, empty).into();
    let rewritten = rewrite_map(&mut parts.headers, identity, request_id);
    let mut back = RequestHeader::from(parts);
    if let Some(end) = send_end_stream {
        back.set_send_end_stream(end);
    }
    *req = back;
    rewritten
}

fn rewrite_map(
    headers: &mut HeaderMap,
    identity: Option<&Identity<'_>>,
    request_id: &str,
) -> Result<(), GateError> {
    let mut upgrade = false;
    if headers.contains_key(CONNECTION) {
        let listed: Vec<String> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        headers.remove(CONNECTION);
        for token in listed {
            match token.as_str() {
                "upgrade" => upgrade = true,
                "close" | "keep-alive" => {}
                name if is_protected_from_connection(name) => {}
                name => {
                    headers.remove(name);
                }
            }
        }
        if upgrade {
            headers
                .try_insert(CONNECTION, HeaderValue::from_static("upgrade"))
                .map_err(internal)?;
        }
    }

    // RFC 9113 §8.2.3: an HTTP/2 client may send its cookies as several `cookie` fields;
    // an HTTP/1.1 upstream must get them as one, joined with "; " (RFC 6265 §5.4 allows one
    // Cookie line, and frameworks read only the first of several).
    join_cookies(headers)?;

    // Most requests carry no identity header: check before allocating.
    if headers.keys().any(|k| is_identity_header(k.as_str())) {
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| is_identity_header(k.as_str()))
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(name);
        }
    }

    // Room for everything inserted below at once: the map is sized for the client's headers
    // and would otherwise grow (and rehash) more than once.
    headers.try_reserve(6).map_err(internal)?;
    set_request_id(headers, request_id)?;
    if let Some(identity) = identity {
        match identity.authorization.token() {
            Some(token) => {
                let value = HeaderValue::try_from(format!("Bearer {token}")).map_err(internal)?;
                headers.try_insert(AUTHORIZATION, value).map_err(internal)?;
            }
            None => {
                headers.remove(AUTHORIZATION);
            }
        }
        for (name, value) in identity.headers() {
            // An id may be UTF-8: it goes as those bytes (obs-text), checked at creation.
            let value = HeaderValue::from_bytes(value.as_bytes()).map_err(internal)?;
            headers
                .try_insert(self::name(name)?, value)
                .map_err(internal)?;
        }
    }
    Ok(())
}

/// Sets `x-request-id` (replacing any the other side sent), on a request or a response.
pub fn set_request_id(headers: &mut HeaderMap, request_id: &str) -> Result<(), GateError> {
    let id = HeaderValue::from_str(request_id).map_err(internal)?;
    headers
        .try_insert(name(REQUEST_ID)?, id)
        .map_err(internal)?;
    Ok(())
}

/// The header names the gateway writes on every request, checked when compiled.
const WRITTEN: [HeaderName; 6] = [
    HeaderName::from_static(REQUEST_ID),
    HeaderName::from_static(HOST_ID),
    HeaderName::from_static(USER_ID),
    HeaderName::from_static(BUSINESS_ID),
    HeaderName::from_static(ROLE),
    HeaderName::from_static(ADMIN_SECRET),
];

/// `name` as a [`HeaderName`]: one of [`WRITTEN`] without parsing or allocating, else parsed.
pub fn name(name: &str) -> Result<HeaderName, GateError> {
    match WRITTEN.iter().find(|n| n.as_str() == name) {
        Some(n) => Ok(n.clone()),
        None => HeaderName::from_bytes(name.as_bytes()).map_err(internal),
    }
}

/// Joins several `Cookie` fields into one; one field (the common case) is left as it is.
fn join_cookies(headers: &mut HeaderMap) -> Result<(), GateError> {
    let mut fields = headers.get_all(COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return Ok(());
    }
    let parts: Vec<&[u8]> = headers
        .get_all(COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let joined = HeaderValue::from_bytes(&parts.join(&b"; "[..])).map_err(internal)?;
    headers.try_insert(COOKIE, joined).map_err(internal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::BASE;
    use crate::config::Config;
    use crate::hasura::Hasura;
    use crate::session::model::Session;
    use std::collections::HashMap;

    const ED_PRIVATE: &str = include_str!("../tests/fixtures/ed25519-private.pem");
    const ED_PUBLIC: &str = include_str!("../tests/fixtures/ed25519-public.pem");

    /// The Hasura identity of a config made of the test base and `extra`.
    fn hasura(extra: &str) -> Result<Hasura, String> {
        let env: HashMap<String, String> = HashMap::new();
        let cfg =
            Config::from_toml(&format!("{BASE}\n{extra}"), &env).map_err(|e| e.to_string())?;
        Hasura::new(&cfg, 10)
    }

    fn session() -> Session {
        Session {
            session_id: "s".into(),
            user_id: "user-1".into(),
            business_id: "biz-1".into(),
            host_id: "host-1".into(),
            role: "agent".into(),
            created_at: 0,
            expires_at: i64::MAX,
            source: "admin".into(),
            external_id: None,
            user_gen: 0,
            business_gen: 0,
            user_agent: None,
            ip: None,
        }
    }

    #[test]
    fn jwt_mode_replaces_authorization_and_injects_only_the_host_id(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let h = hasura(&format!(
            r#"[hasura]
            mode = "jwt"
            signing_kid = "h1"
            [[hasura.keys]]
            kid = "h1"
            algorithm = "EdDSA"
            private_key = """{ED_PRIVATE}"""
            public_key = """{ED_PUBLIC}""""#
        ))?;
        let s = session();
        let identity = h.identity_for(&s, "client-token")?;
        let minted = identity.authorization.token().map(str::to_string);
        let mut req = RequestHeader::build("GET", b"/v1/graphql", None).map_err(internal)?;
        for (k, v) in [
            ("authorization", "Bearer client-token"),
            ("x-hasura-role", "admin"),
            ("X_Hasura_User_Id", "evil"),
        ] {
            req.append_header(k, v).map_err(internal)?;
        }
        rewrite(&mut req, Some(&identity), "rid")?;
        let auth = all(&req, "authorization");
        assert_eq!(auth, vec![format!("Bearer {}", minted.unwrap_or_default())]);
        assert_ne!(auth, vec!["Bearer client-token"]);
        let identity: Vec<_> = req
            .headers
            .keys()
            .filter(|k| is_identity_header(k.as_str()))
            .map(|k| k.as_str().to_string())
            .collect();
        assert_eq!(identity, vec!["x-host-id"]);
        Ok(())
    }

    fn all(req: &RequestHeader, name: &str) -> Vec<String> {
        req.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }

    #[test]
    fn identity_names_are_normalised() {
        for n in [
            "x-hasura-user-id",
            "X-Hasura-User-Id",
            "x_hasura_user_id",
            "X_HASURA_ROLE",
            "x-hasura-admin-secret",
            "x-hasura-use-backend-only-permissions",
            "x-host-id",
            "X_Host_Id",
            "x-hasura-",
        ] {
            assert!(is_identity_header(n), "{n}");
        }
        for n in [
            "x-hasura",
            "x-host-idx",
            "x-host",
            "authorization",
            "xx-hasura-role",
        ] {
            assert!(!is_identity_header(n), "{n}");
        }
    }

    #[test]
    fn spoofed_headers_are_replaced() -> Result<(), Box<dyn std::error::Error>> {
        let mut req = RequestHeader::build("POST", b"/v1/graphql", None)?;
        req.append_header("X-Hasura-User-Id", "attacker")?;
        req.append_header("x_hasura_user_id", "attacker2")?;
        req.append_header("X-HASURA-ROLE", "admin")?;
        req.append_header("x-hasura-admin-secret", "guess")?;
        req.append_header("X_Host_Id", "evil")?;
        req.append_header("Authorization", "Bearer t")?;
        req.append_header("x-other", "kept")?;
        let (h, s) = (hasura("")?, session());
        rewrite(&mut req, Some(&h.identity_for(&s, "t")?), "rid")?;
        assert_eq!(all(&req, USER_ID), vec!["user-1"]);
        assert_eq!(all(&req, BUSINESS_ID), vec!["biz-1"]);
        assert_eq!(all(&req, HOST_ID), vec!["host-1"]);
        assert_eq!(all(&req, ROLE), vec!["agent"]);
        assert!(all(&req, ADMIN_SECRET).is_empty());
        assert!(all(&req, "x_hasura_user_id").is_empty());
        assert!(all(&req, "authorization").is_empty());
        assert_eq!(all(&req, "x-other"), vec!["kept"]);
        Ok(())
    }

    #[test]
    fn connection_listing_cannot_remove_injected_headers() -> Result<(), Box<dyn std::error::Error>>
    {
        let mut req = RequestHeader::build("GET", b"/", None)?;
        req.append_header(
            "Connection",
            "x-hasura-user-id, X-Host-Id, keep-alive, x-drop-me",
        )?;
        req.append_header("x-drop-me", "1")?;
        let (h, s) = (hasura("")?, session());
        rewrite(&mut req, Some(&h.identity_for(&s, "t")?), "rid")?;
        assert_eq!(all(&req, USER_ID), vec!["user-1"]);
        assert_eq!(all(&req, HOST_ID), vec!["host-1"]);
        assert!(all(&req, "connection").is_empty());
        assert!(all(&req, "x-drop-me").is_empty());
        Ok(())
    }

    #[test]
    fn public_requests_lose_identity_but_get_none() -> Result<(), Box<dyn std::error::Error>> {
        let mut req = RequestHeader::build("GET", b"/public", None)?;
        req.append_header("x-hasura-role", "admin")?;
        req.append_header("authorization", "Bearer x")?;
        rewrite(&mut req, None, "rid")?;
        assert!(all(&req, ROLE).is_empty());
        assert!(all(&req, USER_ID).is_empty());
        assert_eq!(all(&req, "authorization"), vec!["Bearer x"]);
        Ok(())
    }

    #[test]
    fn admin_secret_and_authorization_forwarding() -> Result<(), Box<dyn std::error::Error>> {
        let h = hasura(
            "[proxy]\nforward_authorization = true\nhasura_admin_secret = \"hasura-secret\"\n",
        )?;
        let s = session();
        let mut req = RequestHeader::build("GET", b"/", None)?;
        req.append_header("authorization", "bearer   x")?;
        req.append_header("x-hasura-admin-secret", "guess")?;
        rewrite(&mut req, Some(&h.identity_for(&s, "x")?), "rid")?;
        assert_eq!(all(&req, ADMIN_SECRET), vec!["hasura-secret"]);
        // The token the gateway checked, in one canonical form.
        assert_eq!(all(&req, "authorization"), vec!["Bearer x"]);
        // Webhook mode: the checked token reaches Hasura, and no session variable does.
        let h = hasura("[hasura]\nmode = \"webhook\"\n")?;
        let mut req = RequestHeader::build("GET", b"/", None)?;
        req.append_header("authorization", "Bearer x")?;
        rewrite(&mut req, Some(&h.identity_for(&s, "x")?), "rid")?;
        assert_eq!(all(&req, "authorization"), vec!["Bearer x"]);
        assert!(all(&req, USER_ID).is_empty() && all(&req, ROLE).is_empty());
        assert_eq!(all(&req, HOST_ID), vec!["host-1"]);
        Ok(())
    }

    #[test]
    fn the_rewritten_head_is_one_map_with_the_gateways_request_id(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut req = RequestHeader::build("POST", b"/v1/graphql", None)?;
        req.append_header("X-Request-Id", "client-chosen")?;
        req.append_header("X-Other", "kept")?;
        assert!(req.has_case());
        let (h, s) = (hasura("")?, session());
        rewrite(&mut req, Some(&h.identity_for(&s, "t")?), "rid-1")?;
        assert_eq!(all(&req, REQUEST_ID), vec!["rid-1"]);
        assert_eq!(all(&req, "x-other"), vec!["kept"]);
        assert_eq!(req.uri, "/v1/graphql");
        // Written from the one map: every name once, lowercase or canonical.
        assert!(!req.has_case());
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire)?;
        assert_eq!(wire.matches("x-request-id: rid-1\r\n").count(), 1, "{wire}");
        assert!(!wire.contains("client-chosen"), "{wire}");
        assert!(wire.contains("x-hasura-user-id: user-1\r\n"), "{wire}");
        // HTTP/2 upstreams: whether the head ends the stream survives the rewrite.
        let mut h2 = RequestHeader::build("GET", b"/", None)?;
        h2.set_version(http::Version::HTTP_2);
        h2.set_send_end_stream(false);
        rewrite(&mut h2, None, "rid-2")?;
        assert_eq!(h2.send_end_stream(), Some(false));
        Ok(())
    }

    #[test]
    fn header_safety() {
        assert!(is_header_safe("abc-123 x"));
        assert!(!is_header_safe(""));
        assert!(!is_header_safe("a\r\nb"));
        assert!(!is_header_safe(" a"));
        assert!(!is_header_safe("caf\u{e9}"));
    }

    #[test]
    fn cookie_fields_are_joined_into_one() -> Result<(), Box<dyn std::error::Error>> {
        let mut req = RequestHeader::build("GET", b"/", None)?;
        for c in ["a=1", "b=2", "c=3"] {
            req.append_header(COOKIE, c)?;
        }
        rewrite(&mut req, None, "rid")?;
        let all: Vec<_> = req.headers.get_all(COOKIE).iter().collect();
        assert_eq!(all, vec!["a=1; b=2; c=3"]);
        let mut one = RequestHeader::build("GET", b"/", None)?;
        one.append_header(COOKIE, "a=1; b=2")?;
        rewrite(&mut one, None, "rid")?;
        let all: Vec<_> = one.headers.get_all(COOKIE).iter().collect();
        assert_eq!(all, vec!["a=1; b=2"]);
        Ok(())
    }
}
