//! How a request ended: the one `outcome` label of `sessiongate_requests_total` and of the
//! access log line, decided where the request ends and nowhere else.

use crate::error::GateError;

/// How a request ended: the `outcome` label of `sessiongate_requests_total` and of the
/// access log line, decided where the request ends and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Authenticated and sent upstream.
    Forwarded,
    /// A public route, sent upstream without identity.
    Public,
    /// Answered by a session API (dialect) of the gateway.
    Dialect,
    /// A CORS preflight the gateway answered.
    Preflight,
    /// A WebSocket the gateway accepted: its `101` and the socket itself follow once the
    /// listener takes the connection over (how it ends: `sessiongate_websocket_closes_total`
    /// and a log line of its own).
    WebSocket,
    /// Refused for want of a valid credential (or anything else not listed).
    Rejected,
    /// The session store could not be asked.
    StoreUnavailable,
    /// Malformed, too large or too slow.
    BadRequest,
    /// The upstream failed or timed out.
    UpstreamError,
    /// Over a rate limit.
    RateLimited,
    /// The gateway failed.
    Internal,
}

impl Outcome {
    /// Every outcome, in [`Outcome::index`] order.
    pub(super) const ALL: [Outcome; 11] = [
        Outcome::Forwarded,
        Outcome::Public,
        Outcome::Dialect,
        Outcome::Preflight,
        Outcome::WebSocket,
        Outcome::Rejected,
        Outcome::StoreUnavailable,
        Outcome::BadRequest,
        Outcome::UpstreamError,
        Outcome::RateLimited,
        Outcome::Internal,
    ];

    /// Position in [`Outcome::ALL`].
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Public => "public",
            Outcome::Dialect => "dialect",
            Outcome::Preflight => "preflight",
            Outcome::WebSocket => "websocket",
            Outcome::Rejected => "rejected",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::BadRequest => "bad_request",
            Outcome::UpstreamError => "upstream_error",
            Outcome::RateLimited => "rate_limited",
            Outcome::Internal => "internal",
        }
    }

    /// Served as asked (logged at debug), as opposed to refused or failed (info).
    pub(super) fn served(self) -> bool {
        matches!(
            self,
            Outcome::Forwarded
                | Outcome::Public
                | Outcome::Dialect
                | Outcome::Preflight
                | Outcome::WebSocket
        )
    }

    /// The outcome of a request refused with `err` (no `_ =>`: a new error picks its label).
    pub(super) fn of(err: &GateError) -> Outcome {
        match err {
            GateError::StoreUnavailable | GateError::OutcomeUnknown(_) => Outcome::StoreUnavailable,
            GateError::BadRequest(_)
            | GateError::InvalidField { .. }
            | GateError::HeadersTooLarge(_)
            | GateError::TooManyHeaders(_)
            | GateError::PayloadTooLarge(_)
            | GateError::RequestTimeout
            | GateError::MethodNotAllowed => Outcome::BadRequest,
            GateError::RateLimited(_) | GateError::TooManyConnections(_) => Outcome::RateLimited,
            GateError::UpstreamUnavailable | GateError::UpstreamTimeout => Outcome::UpstreamError,
            GateError::Internal => Outcome::Internal,
            GateError::MissingToken
            | GateError::InvalidToken(_)
            | GateError::SessionNotFound
            | GateError::SessionExpired
            | GateError::InvalidRefreshToken
            | GateError::RefreshTokenReused
            | GateError::AdminUnauthorized
            | GateError::Forbidden(_)
            | GateError::NotFound => Outcome::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every outcome's series exists before traffic (metrics pre-creates them).
    #[test]
    fn every_outcome_is_a_precreated_series() {
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            assert!(crate::metrics::OUTCOMES.contains(&o.label()), "{o:?}");
            assert_eq!(o.index(), i, "{o:?}");
        }
        assert_eq!(crate::metrics::OUTCOMES.len(), 11);
    }
}
