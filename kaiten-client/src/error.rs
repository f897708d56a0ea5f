//! Errors of the Kaiten client.

use std::time::Duration;

/// Result with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to Kaiten. Never contains the API token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client was configured wrongly (missing token, bad URL, missing environment variable).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// 401: the token was rejected.
    #[error("Kaiten rejected the API token (401 Unauthorized) on {route}: check KAITEN_API_TOKEN and that the token belongs to this company's URL")]
    Unauthorized {
        /// The route asked for (`GET /cards`).
        route: String,
    },
    /// 403: the token's user may not see this.
    #[error("access forbidden (403) on {route}: the token's user lacks access")]
    Forbidden {
        /// The route.
        route: String,
    },
    /// 404.
    #[error("not found (404): {route}")]
    NotFound {
        /// The route.
        route: String,
    },
    /// 402: the feature is not in the customer's plan.
    #[error("feature not available in the Kaiten plan (402) on {route}: {message}")]
    PaymentRequired {
        /// The route.
        route: String,
        /// Kaiten's message.
        message: String,
    },
    /// 429 after every allowed retry.
    #[error("rate limited by Kaiten (429) on {route}; gave up after {attempts} attempts")]
    RateLimited {
        /// The route.
        route: String,
        /// What the server asked to wait, if it said.
        retry_after: Option<Duration>,
        /// Attempts made.
        attempts: u32,
    },
    /// Another 4xx (400, 405, 409, 422 ...).
    #[error("Kaiten refused the request ({status}) on {route}: {message}")]
    BadRequest {
        /// The route.
        route: String,
        /// HTTP status.
        status: u16,
        /// Kaiten's message or a body snippet.
        message: String,
    },
    /// 5xx after every allowed retry.
    #[error("Kaiten server error ({status}) on {route} after {attempts} attempts")]
    Server {
        /// The route.
        route: String,
        /// HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
    /// The request timed out after every allowed retry.
    #[error("request to Kaiten timed out on {route} after {attempts} attempts")]
    Timeout {
        /// The route.
        route: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The server could not be reached (DNS, refused, reset) after every allowed retry.
    #[error("cannot reach Kaiten at {url} ({route}) after {attempts} attempts: {source}")]
    Connection {
        /// The route.
        route: String,
        /// The base URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The body was not the JSON expected (HTML, truncated, wrong shape).
    #[error("unexpected response body from {route}: {reason}; body starts with: {body_snippet:?}")]
    Decode {
        /// The route.
        route: String,
        /// What was wrong.
        reason: String,
        /// The first bytes of the body (at most 200 characters).
        body_snippet: String,
    },
}

impl Error {
    /// Whether repeating the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Server { .. } | Self::Timeout { .. } | Self::Connection { .. }
        )
    }

    /// The HTTP status behind the error, if there was a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::NotFound { .. } => Some(404),
            Self::PaymentRequired { .. } => Some(402),
            Self::RateLimited { .. } => Some(429),
            Self::BadRequest { status, .. } | Self::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}
