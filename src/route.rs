//! The one routing decision: [`classify`] turns a request head into a [`Route`]. The
//! canonical path ([`crate::path`]) decides everything — session API, public or protected,
//! Amity realtime or GraphQL WebSocket — and that same form is what goes upstream, so the
//! check and the upstream cannot disagree. [`credential`] says where a route's token is.

use crate::auth::{bearer_token, TokenError};
use crate::config::Config;
use crate::dialect::Dialect;
use crate::endpoint::{self, Endpoint};
use crate::error::GateError;
use crate::path;
use crate::upgrade;
use http::header::AUTHORIZATION;
use pingora::http::RequestHeader;
use std::borrow::Cow;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A session API the gateway answers itself (never forwarded).
    Endpoint(Endpoint),
    /// Forwarded without authentication and without identity (WebSockets included: Pingora
    /// passes them through).
    Public(Forward),
    /// Needs a valid session; identity is injected.
    Protected {
        /// What goes upstream.
        forward: Forward,
        /// An Amity realtime path: the token may travel in the query.
        realtime: bool,
    },
    /// A WebSocket upgrade on a protected path, relayed by `crate::ws`.
    WebSocket {
        /// What goes upstream.
        forward: Forward,
        /// An Amity realtime path (token in the query, no GraphQL rules); otherwise GraphQL
        /// over WebSocket, where the token may wait for `connection_init`.
        realtime: bool,
    },
}

/// What a forwarded request sends upstream, and how much body it may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The normalised path and the query (without a realtime token unless
    /// `proxy.forward_authorization`).
    pub uri: http::Uri,
    /// The route's body limit (`proxy.body_limit`).
    pub body_limit: u64,
    /// The format of the gateway's refusals on this path: a dialect's when the path belongs
    /// to its API (`dialects.amity.api_prefixes`: the Amity SDK renews an expired token only
    /// when it recognises Amity's error), else the gateway's own.
    pub errors: Option<Dialect>,
}

/// Routes a request head (already through `crate::guard`).
pub fn classify(req: &RequestHeader, config: &Config) -> Result<Route, GateError> {
    let path =
        path::normalize_path(req.uri.path()).map_err(|e| GateError::BadRequest(e.to_string()))?;
    if let Some(ep) = endpoint::for_path(&path, config) {
        return Ok(Route::Endpoint(ep));
    }
    let realtime = config
        .dialects
        .amity
        .as_ref()
        .is_some_and(|a| path::is_public(&path, &a.realtime_paths));
    let query = match req.uri.query() {
        // The realtime token never travels further than it has to.
        Some(q) if realtime && !config.forwards_client_credential() => without_param(q, "token"),
        other => other.map(Cow::Borrowed),
    };
    let errors = config
        .dialects
        .amity
        .as_ref()
        .is_some_and(|a| path::is_public(&path, &a.api_prefixes))
        .then_some(Dialect::Amity);
    let forward = Forward {
        uri: forward_uri(&path, query.as_deref())?,
        body_limit: config.proxy.body_limit(&path),
        errors,
    };
    Ok(if path::is_public(&path, &config.proxy.public_prefixes) {
        Route::Public(forward)
    } else if upgrade::is_websocket(req) {
        Route::WebSocket { forward, realtime }
    } else {
        Route::Protected { forward, realtime }
    })
}

/// The request's access token: the one `Authorization: Bearer` header, else (realtime
/// paths, whose SDK cannot set headers) the `token` query parameter. `MissingToken` when
/// there is none; two `Authorization` headers are malformed, not missing.
pub fn credential(req: &RequestHeader, realtime: bool) -> Result<Cow<'_, str>, GateError> {
    match bearer(req) {
        Err(GateError::MissingToken) if realtime => {
            crate::dialect::query_param(req.uri.query(), "token")
                .filter(|t| !t.is_empty())
                .map(Cow::Owned)
                .ok_or(GateError::MissingToken)
        }
        other => other.map(Cow::Borrowed),
    }
}

fn bearer(req: &RequestHeader) -> Result<&str, GateError> {
    let mut values = req.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(GateError::MissingToken);
    };
    if values.next().is_some() {
        return Err(GateError::InvalidToken(TokenError::Malformed));
    }
    bearer_token(value.as_bytes()).ok_or(GateError::MissingToken)
}

/// `query` without any `name=...` parameter (names compared after percent-decoding); the
/// other parameters are kept byte for byte.
fn without_param<'a>(query: &str, name: &str) -> Option<Cow<'a, str>> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            form_urlencoded::parse(key.as_bytes())
                .next()
                .is_none_or(|(k, _)| k != name)
        })
        .collect();
    (!kept.is_empty()).then(|| Cow::Owned(kept.join("&")))
}

fn forward_uri(path: &str, query: Option<&str>) -> Result<http::Uri, GateError> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    pq.parse::<http::Uri>()
        .map_err(|_| GateError::BadRequest("the request target is not a valid URI".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::BASE;
    use std::collections::HashMap;

    fn config(extra: &str) -> Result<Config, String> {
        let env: HashMap<String, String> = HashMap::new();
        Config::from_toml(&format!("{BASE}\n{extra}"), &env).map_err(|e| e.to_string())
    }

    fn req(target: &str, headers: &[(&str, &str)]) -> Result<RequestHeader, String> {
        let mut r =
            RequestHeader::build("GET", target.as_bytes(), None).map_err(|e| e.to_string())?;
        for (k, v) in headers {
            r.append_header(k.to_string(), *v)
                .map_err(|e| e.to_string())?;
        }
        Ok(r)
    }

    fn route(target: &str, headers: &[(&str, &str)], cfg: &Config) -> Result<Route, String> {
        classify(&req(target, headers)?, cfg).map_err(|e| e.to_string())
    }

    #[test]
    fn public_prefix_is_segment_bounded_on_the_canonical_path() -> Result<(), String> {
        let cfg = config("[proxy]\npublic_prefixes = [\"/public\"]\n")?;
        for (target, public) in [
            ("/public", true),
            ("/public/x?a=1", true),
            ("/publicity", false),
            ("/v1/graphql", false),
            ("/public/../v1/graphql", false),
            ("/public/%2e%2e/v1/graphql", false),
        ] {
            let r = route(target, &[], &cfg)?;
            assert_eq!(matches!(r, Route::Public(_)), public, "{target}: {r:?}");
        }
        match route("/public/./x?a=%2F", &[], &cfg)? {
            Route::Public(f) => assert_eq!(f.uri.to_string(), "/public/x?a=%2F"),
            other => return Err(format!("{other:?}")),
        }
        Ok(())
    }

    #[test]
    fn endpoints_websockets_and_protected_routes() -> Result<(), String> {
        let cfg = config("")?;
        assert_eq!(
            route("/auth/refresh", &[], &cfg)?,
            Route::Endpoint(Endpoint::AuthRefresh)
        );
        // A session API path of a disabled dialect is just a protected path.
        assert!(matches!(
            route("/api/customer-sessions", &[], &cfg)?,
            Route::Protected {
                realtime: false,
                ..
            }
        ));
        assert!(matches!(
            route("/v1/graphql", &[("upgrade", "websocket")], &cfg)?,
            Route::WebSocket {
                realtime: false,
                ..
            }
        ));
        assert!(matches!(
            route("/v1/graphql", &[], &cfg)?,
            Route::Protected {
                realtime: false,
                ..
            }
        ));
        Ok(())
    }

    /// The realtime `token` stays in the forwarded query only where the client's credential
    /// is forwarded as sent (headers mode with `proxy.forward_authorization`); in webhook
    /// mode the checked token travels as `Authorization` instead (before: it also stayed in
    /// the query whenever `forward_authorization` was set, whatever the mode).
    #[test]
    fn realtime_token_leaves_the_query_unless_credentials_are_forwarded() -> Result<(), String> {
        let amity = "[dialects.amity]\nrealtime_paths = [\"/socket.io\"]\n\
                     [[dialects.amity.networks]]\nnetwork_id = \"n\"\napi_key = \"k-0123456789\"\n\
                     default_host_id = \"h\"\n";
        for (extra, kept) in [
            ("", false),
            ("[proxy]\nforward_authorization = true\n", true),
            (
                "[proxy]\nforward_authorization = true\n[hasura]\nmode = \"webhook\"\n",
                false,
            ),
        ] {
            let cfg = config(&format!("{amity}{extra}"))?;
            match route("/socket.io/?EIO=3&token=secret", &[], &cfg)? {
                Route::Protected {
                    forward,
                    realtime: true,
                } => {
                    let q = forward.uri.query().unwrap_or_default().to_string();
                    assert_eq!(q.contains("token=secret"), kept, "{extra}: {q}");
                    assert!(q.contains("EIO=3"));
                }
                other => return Err(format!("{extra}: {other:?}")),
            }
        }
        Ok(())
    }

    #[test]
    fn credentials_by_route() -> Result<(), String> {
        let r = req("/x?token=q", &[])?;
        assert!(matches!(
            credential(&r, false),
            Err(GateError::MissingToken)
        ));
        assert_eq!(credential(&r, true).ok().as_deref(), Some("q"));
        let r = req("/x?token=q", &[("authorization", "Bearer h")])?;
        assert_eq!(credential(&r, true).ok().as_deref(), Some("h"));
        let r = req(
            "/x?token=q",
            &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
        )?;
        assert!(matches!(
            credential(&r, true),
            Err(GateError::InvalidToken(_))
        ));
        let r = req("/x", &[("authorization", "Basic abc")])?;
        assert!(matches!(
            credential(&r, false),
            Err(GateError::MissingToken)
        ));
        Ok(())
    }

    #[test]
    fn realtime_token_is_dropped_from_the_query() {
        assert_eq!(
            without_param("token=abc&EIO=3&transport=websocket", "token").as_deref(),
            Some("EIO=3&transport=websocket")
        );
        assert_eq!(
            without_param("a=%20x&%74oken=abc", "token").as_deref(),
            Some("a=%20x")
        );
        assert_eq!(without_param("token=abc", "token"), None);
        assert_eq!(
            without_param("tokens=1", "token").as_deref(),
            Some("tokens=1")
        );
    }

    #[test]
    fn forwarded_uri_keeps_query() -> Result<(), GateError> {
        assert_eq!(
            forward_uri("/v1/graphql", Some("a=1&b=%2F"))?.to_string(),
            "/v1/graphql?a=1&b=%2F"
        );
        assert_eq!(forward_uri("/x", None)?.to_string(), "/x");
        Ok(())
    }
}
