//! Identity headers: strip whatever the client sent, inject what the session says.

use crate::error::GateError;
use crate::hasura::Identity;
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, COOKIE, HOST, TRANSFER_ENCODING};
use pingora::http::RequestHeader;

pub use crate::header_names::{
    is_header_safe, is_identity_header, ADMIN_SECRET, BUSINESS_ID, HOST_ID, ROLE, USER_ID,
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

/// Rewrites the upstream request in place.
///
/// Order matters: the `Connection` listing is handled first (its hop-by-hop headers removed,
/// the header itself dropped) so that nothing downstream of us can remove what we inject;
/// then every client identity header goes; then the session's identity is set. A public
/// request (`identity` `None`) keeps its `Authorization` and gets no identity.
pub fn rewrite(req: &mut RequestHeader, identity: Option<&Identity<'_>>) -> Result<(), GateError> {
    let mut upgrade = false;
    if req.headers.contains_key(CONNECTION) {
        let listed: Vec<String> = req
            .headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        req.remove_header(&CONNECTION);
        for token in listed {
            match token.as_str() {
                "upgrade" => upgrade = true,
                "close" | "keep-alive" => {}
                name if is_protected_from_connection(name) => {}
                name => {
                    req.remove_header(name);
                }
            }
        }
        if upgrade {
            req.insert_header(CONNECTION, "upgrade").map_err(internal)?;
        }
    }

    // RFC 9113 §8.2.3: an HTTP/2 client may send its cookies as several `cookie` fields;
    // an HTTP/1.1 upstream must get them as one, joined with "; " (RFC 6265 §5.4 allows one
    // Cookie line, and frameworks read only the first of several).
    join_cookies(req)?;

    // Most requests carry no identity header: check before allocating.
    if req.headers.keys().any(|k| is_identity_header(k.as_str())) {
        let spoofed: Vec<String> = req
            .headers
            .keys()
            .filter(|k| is_identity_header(k.as_str()))
            .map(|k| k.as_str().to_string())
            .collect();
        for name in spoofed {
            req.remove_header(name.as_str());
        }
    }

    if let Some(identity) = identity {
        match identity.authorization.token() {
            Some(token) => {
                req.insert_header(AUTHORIZATION, format!("Bearer {token}"))
                    .map_err(internal)?;
            }
            None => {
                req.remove_header(&AUTHORIZATION);
            }
        }
        for (name, value) in identity.headers() {
            // An id may be UTF-8: it goes as those bytes (obs-text), checked at creation.
            let value = http::HeaderValue::from_bytes(value.as_bytes()).map_err(internal)?;
            req.insert_header(name, value).map_err(internal)?;
        }
    }
    Ok(())
}

/// Joins several `Cookie` fields into one; one field (the common case) is left as it is.
fn join_cookies(req: &mut RequestHeader) -> Result<(), GateError> {
    let mut fields = req.headers.get_all(COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return Ok(());
    }
    let parts: Vec<&[u8]> = req
        .headers
        .get_all(COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let joined = http::HeaderValue::from_bytes(&parts.join(&b"; "[..])).map_err(internal)?;
    req.insert_header(COOKIE, joined).map_err(internal)?;
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
        rewrite(&mut req, Some(&identity))?;
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
        rewrite(&mut req, Some(&h.identity_for(&s, "t")?))?;
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
        rewrite(&mut req, Some(&h.identity_for(&s, "t")?))?;
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
        rewrite(&mut req, None)?;
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
        rewrite(&mut req, Some(&h.identity_for(&s, "x")?))?;
        assert_eq!(all(&req, ADMIN_SECRET), vec!["hasura-secret"]);
        // The token the gateway checked, in one canonical form.
        assert_eq!(all(&req, "authorization"), vec!["Bearer x"]);
        // Webhook mode: the checked token reaches Hasura, and no session variable does.
        let h = hasura("[hasura]\nmode = \"webhook\"\n")?;
        let mut req = RequestHeader::build("GET", b"/", None)?;
        req.append_header("authorization", "Bearer x")?;
        rewrite(&mut req, Some(&h.identity_for(&s, "x")?))?;
        assert_eq!(all(&req, "authorization"), vec!["Bearer x"]);
        assert!(all(&req, USER_ID).is_empty() && all(&req, ROLE).is_empty());
        assert_eq!(all(&req, HOST_ID), vec!["host-1"]);
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
        rewrite(&mut req, None)?;
        let all: Vec<_> = req.headers.get_all(COOKIE).iter().collect();
        assert_eq!(all, vec!["a=1; b=2; c=3"]);
        let mut one = RequestHeader::build("GET", b"/", None)?;
        one.append_header(COOKIE, "a=1; b=2")?;
        rewrite(&mut one, None)?;
        let all: Vec<_> = one.headers.get_all(COOKIE).iter().collect();
        assert_eq!(all, vec!["a=1; b=2"]);
        Ok(())
    }
}
