//! [`Problem`]: everything a session API request can fail with, and the exhaustive bridges
//! into it from the gateway's own errors.

use super::fields::{field, FieldKind, FieldProblem};
use crate::error::GateError;
use crate::limits::Limited;
use crate::session::store::StoreError;

/// Everything a dialect request can fail with. Each dialect maps it to its own status codes
/// and error body, in one function (`render`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The body is not JSON, or not a JSON object.
    #[error("{0}")]
    Malformed(String),
    /// `Content-Type` is not `application/json`.
    #[error("Content-Type must be application/json")]
    ContentType,
    /// A field is missing or invalid.
    #[error("{}", .0.describe())]
    Field(FieldProblem),
    /// A credential was presented and refused (counts as a failed authentication).
    #[error("{0}")]
    Unauthorized(String),
    /// No credential was presented (or only an expired one): 401 all the same, but not a
    /// guess, so not counted against the client's address.
    #[error("{0}")]
    NoCredential(String),
    /// A gateway refusal: the gateway's own format writes it as is, the other dialects
    /// through `From<GateError>`.
    #[error("{0}")]
    Gate(GateError),
    /// The credential is valid but not for this (business, role, host, scope).
    #[error("{0}")]
    Forbidden(String),
    /// The body is over the limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive in time.
    #[error("the request body was not received in time")]
    Timeout,
    /// The endpoint exists, not with this method; names the ones it allows.
    #[error("use {0}")]
    MethodNotAllowed(&'static str),
    /// A referenced object does not exist (e.g. a customer); names the field.
    #[error("{message}")]
    NotFound {
        /// The body field that referenced it.
        field: &'static str,
        /// What was not found.
        message: String,
    },
    /// The session store could not be reached; nothing was written.
    #[error("the session store is unavailable; nothing was created")]
    Unavailable,
    /// Over a rate limit; holds `Retry-After` in seconds.
    #[error("too many requests; retry after {0} seconds")]
    RateLimited(u64),
    /// A bug; nothing was written.
    #[error("internal error; nothing was created")]
    Internal,
}

impl Problem {
    /// Whether this refusal counts against the client's address as a failed
    /// authentication (see [`GateError::counts_as_failed_authentication`]).
    pub fn counts_as_failed_authentication(&self) -> bool {
        match self {
            Problem::Unauthorized(_) => true,
            Problem::Gate(e) => e.counts_as_failed_authentication(),
            Problem::NoCredential(_)
            | Problem::Malformed(_)
            | Problem::ContentType
            | Problem::Field(_)
            | Problem::Forbidden(_)
            | Problem::PayloadTooLarge(_)
            | Problem::Timeout
            | Problem::MethodNotAllowed(_)
            | Problem::NotFound { .. }
            | Problem::Unavailable
            | Problem::RateLimited(_)
            | Problem::Internal => false,
        }
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Problem::Unavailable,
            StoreError::Corrupt(_) => Problem::Internal,
        }
    }
}

impl From<Limited> for Problem {
    fn from(l: Limited) -> Self {
        Problem::RateLimited(l.retry_after_secs())
    }
}

impl From<GateError> for Problem {
    /// Exhaustive: every gateway error keeps its meaning in the dialect's own format. Some
    /// statuses have no dialect equivalent and take the nearest (431 → 400, 502/504 → 500,
    /// 503 connection cap → 429); none of those reaches a dialect today (session creation
    /// fails only with a store outage or an internal error).
    fn from(e: GateError) -> Self {
        match e {
            GateError::StoreUnavailable | GateError::OutcomeUnknown(_) => Problem::Unavailable,
            GateError::MissingToken
            | GateError::InvalidToken(_)
            | GateError::SessionNotFound
            | GateError::SessionExpired
            | GateError::InvalidRefreshToken
            | GateError::RefreshTokenReused
            | GateError::AdminUnauthorized => {
                if e.counts_as_failed_authentication() {
                    Problem::Unauthorized(e.to_string())
                } else {
                    Problem::NoCredential(e.to_string())
                }
            }
            GateError::BadRequest(m) => Problem::Malformed(m),
            GateError::InvalidField { field: f, message } => {
                field(&[f], FieldKind::Invalid(message))
            }
            GateError::PayloadTooLarge(n) => Problem::PayloadTooLarge(n),
            GateError::HeadersTooLarge(_) | GateError::TooManyHeaders(_) => {
                Problem::Malformed(e.to_string())
            }
            GateError::Forbidden(m) => Problem::Forbidden(m),
            GateError::NotFound => Problem::NotFound {
                field: "",
                message: e.to_string(),
            },
            GateError::MethodNotAllowed => Problem::MethodNotAllowed("POST"),
            GateError::RequestTimeout => Problem::Timeout,
            GateError::RateLimited(secs) | GateError::TooManyConnections(secs) => {
                Problem::RateLimited(secs)
            }
            GateError::UpstreamUnavailable | GateError::UpstreamTimeout | GateError::Internal => {
                Problem::Internal
            }
        }
    }
}
