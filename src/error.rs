//! The one error type of the request path, and its one mapping to HTTP.

use crate::auth::TokenError;

/// Everything that can stop a request inside the gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// No `Authorization: Bearer` credential on a protected route.
    #[error("a bearer access token is required")]
    MissingToken,
    /// The access token failed verification.
    #[error("the access token is invalid: {0}")]
    InvalidToken(TokenError),
    /// The token verified but its session no longer exists (revoked or expired in the store).
    #[error("the session has been revoked or does not exist")]
    SessionNotFound,
    /// The session exists but is past its `expires_at`.
    #[error("the session has expired")]
    SessionExpired,
    /// The refresh token is malformed, unknown, or its session is gone.
    #[error("the refresh token is invalid or expired")]
    InvalidRefreshToken,
    /// The refresh token was already used: the session has been revoked.
    #[error("the refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    /// The session store could not be asked; fail closed.
    #[error("the session store is unavailable")]
    StoreUnavailable,
    /// A write to the session store (a refresh, a logout, a revocation) was sent but not
    /// answered in time: it may still happen when the store recovers. Retrying the same
    /// request is safe (a refresh retried with the same token within the retry grace gets
    /// the same successor).
    #[error("the session store did not answer in time: {0}")]
    OutcomeUnknown(&'static str),
    /// The request is malformed in a way that is not about a field (framing, path, JSON syntax).
    #[error("{0}")]
    BadRequest(String),
    /// A field of a JSON body is missing or invalid.
    #[error("field `{field}` {message}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The body is larger than the configured limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The request head is larger than the configured limit.
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// The request has more header fields than the configured limit.
    #[error("the request has more than {0} header fields")]
    TooManyHeaders(usize),
    /// The admin API credential is missing or wrong.
    #[error("a valid admin bearer token is required")]
    AdminUnauthorized,
    /// Authenticated or not, the request is refused (e.g. it carries identity headers).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource or route.
    #[error("not found")]
    NotFound,
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The upstream refused or dropped the connection.
    #[error("the upstream is unavailable")]
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    #[error("the upstream timed out")]
    UpstreamTimeout,
    /// The client did not send its request head or body in time.
    #[error("the request was not received in time")]
    RequestTimeout,
    /// The listener is at its connection cap (in total or for this address).
    #[error("too many open connections; retry after {0} seconds")]
    TooManyConnections(u64),
    /// Over a rate limit; holds `Retry-After` in seconds.
    #[error("too many requests; retry after {0} seconds")]
    RateLimited(u64),
    /// A bug or an unexpected internal state.
    #[error("internal error")]
    Internal,
}

/// What a [`GateError`] looks like on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// HTTP status code.
    pub status: u16,
    /// Stable machine-readable code, the `error` member of the JSON body.
    pub code: &'static str,
    /// Value of `WWW-Authenticate`, for bearer-token failures (RFC 6750).
    pub www_authenticate: Option<&'static str>,
    /// `Retry-After` in seconds, for rate-limited requests.
    pub retry_after: Option<u64>,
}

impl ErrorResponse {
    /// The headers every writer of this error sends with its JSON body (besides the
    /// content headers): `WWW-Authenticate` and `Retry-After` when they apply.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::with_capacity(2);
        if let Some(challenge) = self.www_authenticate {
            h.push(("www-authenticate", challenge.to_string()));
        }
        if let Some(secs) = self.retry_after {
            h.push(("retry-after", secs.to_string()));
        }
        h
    }
}

const BEARER_CHALLENGE: &str = "Bearer realm=\"sessiongate\"";
const BEARER_INVALID: &str = "Bearer realm=\"sessiongate\", error=\"invalid_token\"";

impl GateError {
    /// The status, code and challenge of this error. Exhaustive on purpose: a new variant
    /// must decide its status here, in one place.
    pub fn response(&self) -> ErrorResponse {
        let (status, code, www_authenticate) = match self {
            GateError::MissingToken => (401, "unauthorized", Some(BEARER_CHALLENGE)),
            GateError::InvalidToken(_) => (401, "invalid_token", Some(BEARER_INVALID)),
            GateError::SessionNotFound => (401, "invalid_token", Some(BEARER_INVALID)),
            GateError::SessionExpired => (401, "invalid_token", Some(BEARER_INVALID)),
            GateError::InvalidRefreshToken => (401, "invalid_grant", None),
            GateError::RefreshTokenReused => (401, "invalid_grant", None),
            GateError::StoreUnavailable | GateError::OutcomeUnknown(_) => {
                (503, "store_unavailable", None)
            }
            GateError::BadRequest(_) => (400, "bad_request", None),
            GateError::InvalidField { .. } => (400, "invalid_request", None),
            GateError::PayloadTooLarge(_) => (413, "payload_too_large", None),
            GateError::HeadersTooLarge(_) | GateError::TooManyHeaders(_) => {
                (431, "request_header_fields_too_large", None)
            }
            GateError::AdminUnauthorized => (401, "unauthorized", Some(BEARER_CHALLENGE)),
            GateError::Forbidden(_) => (403, "forbidden", None),
            GateError::NotFound => (404, "not_found", None),
            GateError::MethodNotAllowed => (405, "method_not_allowed", None),
            GateError::UpstreamUnavailable => (502, "bad_gateway", None),
            GateError::UpstreamTimeout => (504, "gateway_timeout", None),
            GateError::RateLimited(_) => (429, "rate_limited", None),
            GateError::RequestTimeout => (408, "request_timeout", None),
            GateError::TooManyConnections(_) => (503, "too_many_connections", None),
            GateError::Internal => (500, "internal_error", None),
        };
        let retry_after = match self {
            GateError::RateLimited(secs) | GateError::TooManyConnections(secs) => Some(*secs),
            // The store is usually back within a second or two (a failover, a fork stall).
            GateError::OutcomeUnknown(_) => Some(1),
            _ => None,
        };
        ErrorResponse {
            status,
            code,
            www_authenticate,
            retry_after,
        }
    }

    /// The JSON body `{"error": ..., "message": ...}`.
    pub fn body(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "error": self.response().code,
            "message": self.to_string(),
        });
        body.to_string().into_bytes()
    }

    /// The whole HTTP/1.1 response, ending the connection: for refusals written below
    /// Pingora's HTTP layer (connection caps, request-head deadline and size), where no
    /// request has been parsed. Same JSON body and headers as every other gateway error.
    pub fn http1_close(&self) -> Vec<u8> {
        let r = self.response();
        let body = self.body();
        let reason = http::StatusCode::from_u16(r.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             cache-control: no-store\r\nconnection: close\r\n",
            r.status,
            body.len()
        );
        for (name, value) in r.headers() {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }

    /// Whether this refusal counts against the client's address as a failed authentication:
    /// a credential was presented and refused. No credential at all is not a guess, and an
    /// expired one is the normal end of a token's life. The one decision for proxied requests,
    /// the session APIs and WebSockets (exhaustive: a new error decides here).
    pub fn counts_as_failed_authentication(&self) -> bool {
        match self {
            GateError::InvalidToken(crate::auth::TokenError::Expired)
            | GateError::MissingToken
            | GateError::SessionExpired => false,
            GateError::InvalidToken(_)
            | GateError::SessionNotFound
            | GateError::InvalidRefreshToken
            | GateError::RefreshTokenReused
            | GateError::AdminUnauthorized => true,
            GateError::StoreUnavailable
            | GateError::OutcomeUnknown(_)
            | GateError::BadRequest(_)
            | GateError::InvalidField { .. }
            | GateError::PayloadTooLarge(_)
            | GateError::HeadersTooLarge(_)
            | GateError::TooManyHeaders(_)
            | GateError::Forbidden(_)
            | GateError::NotFound
            | GateError::MethodNotAllowed
            | GateError::UpstreamUnavailable
            | GateError::UpstreamTimeout
            | GateError::RequestTimeout
            | GateError::TooManyConnections(_)
            | GateError::RateLimited(_)
            | GateError::Internal => false,
        }
    }

    /// A bounded label for the auth-failure metric, or `None` when this is not an auth failure.
    pub fn auth_failure_reason(&self) -> Option<&'static str> {
        match self {
            GateError::MissingToken => Some("missing_token"),
            GateError::InvalidToken(e) => Some(e.reason()),
            GateError::SessionNotFound => Some("session_not_found"),
            GateError::SessionExpired => Some("session_expired"),
            GateError::InvalidRefreshToken => Some("invalid_refresh_token"),
            GateError::RefreshTokenReused => Some("refresh_token_reused"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason the code can report is a series `metrics` creates at start.
    #[test]
    fn every_auth_failure_reason_is_a_precreated_series() {
        use crate::auth::TokenError::*;
        let tokens = [
            Malformed,
            UnknownKid,
            AlgorithmMismatch,
            BadSignature,
            Expired,
            NotYetValid,
            WrongIssuer,
            WrongAudience,
            BadClaims,
            CriticalExtension,
        ];
        for t in tokens {
            // No `_ =>`: a new variant does not compile until it is listed above.
            match t {
                Malformed | UnknownKid | AlgorithmMismatch | BadSignature | Expired
                | NotYetValid | WrongIssuer | WrongAudience | BadClaims | CriticalExtension => {}
            }
        }
        let errors = tokens.into_iter().map(GateError::InvalidToken).chain([
            GateError::MissingToken,
            GateError::SessionNotFound,
            GateError::SessionExpired,
            GateError::InvalidRefreshToken,
            GateError::RefreshTokenReused,
        ]);
        let mut reported = 0;
        for e in errors {
            let reason = e.auth_failure_reason().unwrap_or_default();
            assert!(
                crate::metrics::AUTH_FAILURE_REASONS.contains(&reason),
                "{e:?}: {reason}"
            );
            reported += 1;
        }
        assert_eq!(reported, crate::metrics::AUTH_FAILURE_REASONS.len());
    }

    #[test]
    fn store_outage_is_503_never_401() {
        let r = GateError::StoreUnavailable.response();
        assert_eq!(r.status, 503);
        assert!(r.www_authenticate.is_none());
    }

    #[test]
    fn rate_limited_is_429_with_retry_after() {
        let r = GateError::RateLimited(7).response();
        assert_eq!(
            (r.status, r.code, r.retry_after),
            (429, "rate_limited", Some(7))
        );
    }

    #[test]
    fn connection_level_refusals_are_whole_http1_responses(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let raw = GateError::TooManyConnections(1).http1_close();
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = resp.parse(&raw)? else {
            return Err("incomplete response".into());
        };
        assert_eq!(resp.code, Some(503));
        let get = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.to_vec())
        };
        assert_eq!(get("connection").as_deref(), Some(&b"close"[..]));
        assert_eq!(get("retry-after").as_deref(), Some(&b"1"[..]));
        let body: serde_json::Value = serde_json::from_slice(&raw[head..])?;
        assert_eq!(body["error"], "too_many_connections");
        assert_eq!(
            get("content-length").as_deref(),
            Some(raw[head..].len().to_string().as_bytes())
        );
        assert!(GateError::RequestTimeout
            .http1_close()
            .starts_with(b"HTTP/1.1 408 Request Timeout\r\n"));
        Ok(())
    }

    #[test]
    fn auth_failures_carry_rfc6750_challenge() {
        let r = GateError::MissingToken.response();
        assert_eq!(r.status, 401);
        assert_eq!(r.www_authenticate, Some("Bearer realm=\"sessiongate\""));
        let r = GateError::SessionNotFound.response();
        assert_eq!(
            r.www_authenticate,
            Some("Bearer realm=\"sessiongate\", error=\"invalid_token\"")
        );
    }

    #[test]
    fn body_is_json_with_error_and_message() -> Result<(), serde_json::Error> {
        let v: serde_json::Value = serde_json::from_slice(
            &GateError::InvalidField {
                field: "user_id",
                message: "is required".into(),
            }
            .body(),
        )?;
        assert_eq!(v["error"], "invalid_request");
        assert_eq!(v["message"], "field `user_id` is required");
        Ok(())
    }
}
