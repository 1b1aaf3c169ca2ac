//! The endpoints the gateway answers itself instead of forwarding: which path is whose
//! (among the enabled dialects and Hasura modes), the limits checked before a body is read,
//! and the dispatch to the three session dialects and the gateway's own API
//! (`crate::auth_api`), each replying in its own format.

use crate::auth_api;
use crate::config::{Config, HasuraMode};
use crate::dialect::amity::TokenApi;
use crate::dialect::{self, amity, mottasl, rapidly, Dialect, Problem, Reply, Request};
use crate::App;
use http::Method;
use std::net::IpAddr;

/// An endpoint the gateway answers itself instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/app/user.new.session`.
    MottaslNewSession,
    /// `POST /api/v3/sessions` (and v4, v5: what the TypeScript SDK posts to).
    AmitySessions,
    /// `GET /api/v3/authentication/token?userId=` (secure mode, server key).
    AmityAuthTokenV3,
    /// `POST /api/v4/authentication/token` with `{"userId"}`.
    AmityAuthTokenV4,
    /// `GET /api/v3/network-settings/chat` (the SDK's login needs it).
    AmityChatSettings,
    /// `POST /api/customer-sessions/` (with or without the slash).
    RapidlyCustomerSessions,
    /// `POST /auth/refresh`.
    AuthRefresh,
    /// `POST /auth/logout`.
    AuthLogout,
    /// `/auth/verify`, any method: forward-auth for nginx `auth_request`, ingress-nginx
    /// `auth-url`, Traefik ForwardAuth.
    AuthVerify,
    /// `GET|POST /auth/hasura`: Hasura's auth webhook (hasura.mode = webhook).
    HasuraWebhook,
    /// `GET /.well-known/jwks.json`: the Hasura JWT keys (when any is configured).
    Jwks,
    /// `GET|DELETE /auth/sessions`: the bearer's own sessions; DELETE ends all but the
    /// current one.
    AuthSessions,
    /// `DELETE /auth/sessions/{session_id}`: ends one of the bearer's own sessions.
    AuthSession,
}

impl Endpoint {
    /// The dialect that renders this endpoint's replies; `None`: the gateway's own API
    /// (`crate::auth_api`), in the gateway's own error format.
    pub fn dialect(self) -> Option<Dialect> {
        match self {
            Endpoint::MottaslNewSession => Some(Dialect::Mottasl),
            Endpoint::AmitySessions
            | Endpoint::AmityAuthTokenV3
            | Endpoint::AmityAuthTokenV4
            | Endpoint::AmityChatSettings => Some(Dialect::Amity),
            Endpoint::RapidlyCustomerSessions => Some(Dialect::Rapidly),
            Endpoint::AuthRefresh
            | Endpoint::AuthLogout
            | Endpoint::AuthVerify
            | Endpoint::HasuraWebhook
            | Endpoint::Jwks
            | Endpoint::AuthSessions
            | Endpoint::AuthSession => None,
        }
    }

    /// The `dialect` label of `sessiongate_dialect_requests_total` ("gateway" for the
    /// gateway's own API).
    pub fn label(self) -> &'static str {
        self.dialect().map_or("gateway", Dialect::name)
    }

    /// Whether the endpoint creates sessions (rate-limited per IP and per credential).
    pub fn creates_sessions(self) -> bool {
        matches!(
            self,
            Endpoint::MottaslNewSession
                | Endpoint::AmitySessions
                | Endpoint::RapidlyCustomerSessions
        )
    }

    /// The methods the endpoint answers, as an `Allow` value; `None`: any method
    /// (forward-auth sees the original request's method).
    pub fn allow(self) -> Option<&'static str> {
        match self {
            Endpoint::AmityAuthTokenV3 | Endpoint::AmityChatSettings | Endpoint::Jwks => {
                Some("GET")
            }
            Endpoint::HasuraWebhook => Some("GET, POST"),
            Endpoint::AuthSessions => Some("GET, DELETE"),
            Endpoint::AuthSession => Some("DELETE"),
            Endpoint::AuthVerify => None,
            _ => Some("POST"),
        }
    }

    /// Whether failed authentications here count against the client's address. Forward-auth
    /// and the Hasura webhook are called by infrastructure (the ingress, Hasura) on behalf of
    /// clients: they count only when a trusted proxy named the client, never against the
    /// caller itself. The JWKS is public.
    pub fn counts_client(self, via_trusted_proxy: bool) -> bool {
        match self {
            Endpoint::AuthVerify | Endpoint::HasuraWebhook => via_trusted_proxy,
            Endpoint::Jwks => false,
            _ => true,
        }
    }

    /// Whether the endpoint answers `method`.
    pub fn allows(self, method: &Method) -> bool {
        self.allow()
            .is_none_or(|allow| allow.split(", ").any(|m| m == method.as_str()))
    }
}

/// The endpoint a normalised path belongs to, among the enabled dialects and modes.
pub fn for_path(path: &str, config: &Config) -> Option<Endpoint> {
    let cfg = &config.dialects;
    let ep = match path {
        "/v1/app/user.new.session" => Endpoint::MottaslNewSession,
        "/api/v3/sessions" | "/api/v4/sessions" | "/api/v5/sessions" => Endpoint::AmitySessions,
        "/api/v3/authentication/token" => Endpoint::AmityAuthTokenV3,
        "/api/v4/authentication/token" => Endpoint::AmityAuthTokenV4,
        "/api/v3/network-settings/chat" => Endpoint::AmityChatSettings,
        "/api/customer-sessions" | "/api/customer-sessions/" => Endpoint::RapidlyCustomerSessions,
        "/auth/refresh" => Endpoint::AuthRefresh,
        "/auth/logout" => Endpoint::AuthLogout,
        "/auth/verify" => Endpoint::AuthVerify,
        "/auth/hasura" => Endpoint::HasuraWebhook,
        "/.well-known/jwks.json" => Endpoint::Jwks,
        "/auth/sessions" => Endpoint::AuthSessions,
        p if p
            .strip_prefix("/auth/sessions/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
        {
            Endpoint::AuthSession
        }
        _ => return None,
    };
    let enabled = match ep {
        Endpoint::HasuraWebhook => config.hasura.mode == HasuraMode::Webhook,
        Endpoint::Jwks => !config.hasura.keys.is_empty(),
        _ => match ep.dialect() {
            None => true,
            Some(Dialect::Mottasl) => cfg.mottasl.is_some(),
            Some(Dialect::Amity) => cfg.amity.is_some(),
            Some(Dialect::Rapidly) => cfg.rapidly.is_some(),
        },
    };
    enabled.then_some(ep)
}

/// The limits a request from `client_ip` must pass before its body is even read: refused
/// addresses, and the per-IP limits of session creation and refresh.
pub async fn precheck(
    app: &App,
    ep: Endpoint,
    client_ip: IpAddr,
    via_trusted_proxy: bool,
) -> Result<(), Problem> {
    if ep.counts_client(via_trusted_proxy) {
        if let Some(blocked) = app.limits.blocked(client_ip) {
            return Err(blocked.into());
        }
    }
    if ep.creates_sessions() {
        app.limits.create_from(client_ip).await?;
    } else if matches!(
        ep,
        Endpoint::AuthRefresh | Endpoint::AuthSessions | Endpoint::AuthSession
    ) {
        // Listing or ending sessions reads up to `store::INDEX_CAP` sessions: bounded per
        // address like refreshes, so a loop cannot turn one token into store load.
        app.limits.refresh_from(client_ip).await?;
    }
    Ok(())
}

/// Answers one endpoint request; every failure is rendered in the dialect's own format.
/// A refused credential counts as a failed authentication of the client's address
/// ([`Problem::counts_as_failed_authentication`]).
pub async fn handle(app: &App, ep: Endpoint, req: &Request<'_>) -> Reply {
    let result = if let Some(allow) = ep.allow().filter(|_| !ep.allows(req.method)) {
        Err(Problem::MethodNotAllowed(allow))
    } else {
        match ep {
            Endpoint::MottaslNewSession => mottasl::new_session(app, req).await,
            Endpoint::AmitySessions => amity::register_session(app, req).await,
            Endpoint::AmityAuthTokenV3 => amity::auth_token(app, TokenApi::V3, req).await,
            Endpoint::AmityAuthTokenV4 => amity::auth_token(app, TokenApi::V4, req).await,
            Endpoint::AmityChatSettings => amity::chat_settings(app, req).await,
            Endpoint::RapidlyCustomerSessions => rapidly::create_session(app, req).await,
            Endpoint::AuthRefresh => auth_api::refresh(app, req).await,
            Endpoint::AuthLogout => auth_api::logout(app, req).await,
            Endpoint::AuthVerify => auth_api::verify(app, req).await,
            Endpoint::HasuraWebhook => auth_api::hasura_webhook(app, req).await,
            Endpoint::Jwks => Ok(auth_api::jwks(app)),
            Endpoint::AuthSessions => auth_api::own_sessions(app, req).await,
            Endpoint::AuthSession => auth_api::end_own_session(app, req).await,
        }
    };
    let (reply, failed_authentication) = match result {
        Ok(reply) => (reply, false),
        Err(problem) => (
            render(ep, &problem),
            problem.counts_as_failed_authentication(),
        ),
    };
    if failed_authentication && ep.counts_client(req.via_trusted_proxy) {
        app.limits.auth_failed(req.client_ip).await;
    }
    app.metrics
        .dialect_requests
        .with_label_values(&[ep.label(), status_label(reply.status)])
        .inc();
    reply
}

/// A problem in the endpoint's own error format: its dialect's, or the gateway's; a
/// refused method names the allowed ones (`Allow`) in every format.
pub fn render(ep: Endpoint, problem: &Problem) -> Reply {
    let mut reply = match ep.dialect() {
        Some(d) => dialect::render(d, problem),
        None => auth_api::render(problem),
    };
    if let Problem::MethodNotAllowed(allow) = problem {
        reply.headers.push(("allow", (*allow).to_string()));
    }
    reply
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every dialect label and status label is a series `metrics` creates at start.
    #[test]
    fn every_dialect_series_is_precreated() {
        let all = [
            Endpoint::MottaslNewSession,
            Endpoint::AmitySessions,
            Endpoint::AmityAuthTokenV3,
            Endpoint::AmityAuthTokenV4,
            Endpoint::AmityChatSettings,
            Endpoint::RapidlyCustomerSessions,
            Endpoint::AuthRefresh,
            Endpoint::AuthLogout,
            Endpoint::AuthVerify,
            Endpoint::HasuraWebhook,
            Endpoint::Jwks,
            Endpoint::AuthSessions,
            Endpoint::AuthSession,
        ];
        for ep in all {
            // No `_ =>`: a new endpoint does not compile until it is listed above.
            match ep {
                Endpoint::MottaslNewSession
                | Endpoint::AmitySessions
                | Endpoint::AmityAuthTokenV3
                | Endpoint::AmityAuthTokenV4
                | Endpoint::AmityChatSettings
                | Endpoint::RapidlyCustomerSessions
                | Endpoint::AuthRefresh
                | Endpoint::AuthLogout
                | Endpoint::AuthVerify
                | Endpoint::HasuraWebhook
                | Endpoint::Jwks
                | Endpoint::AuthSessions
                | Endpoint::AuthSession => {}
            }
            assert!(
                crate::metrics::DIALECT_LABELS.contains(&ep.label()),
                "{ep:?}"
            );
        }
        for status in 100..600 {
            assert!(
                crate::metrics::DIALECT_STATUSES.contains(&status_label(status)),
                "{status}"
            );
        }
    }
}
