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
    /// The server could not be reached (DNS, refused, reset) after every allowed retry: the source
    /// says how.
    #[error("cannot reach Kaiten at {url} ({route}) after {attempts} attempts")]
    Connection {
        /// The route.
        route: String,
        /// The base URL, without its password ([`redact_url`](crate::redact_url)).
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
    /// A paged listing did not end within the hard cap of pages (the server kept returning full pages
    /// of new records, or paging misbehaves in a way the guards do not recognise).
    #[error("gave up listing {route} after {pages} pages: the listing never ended (a paging loop on the server?)")]
    TooManyPages {
        /// The route.
        route: String,
        /// Pages fetched.
        pages: u64,
    },
}

impl Error {
    /// Whether repeating the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Server { .. } | Self::Timeout { .. } | Self::Connection { .. })
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

/// Longest body excerpt kept in an error, in characters.
pub(crate) const SNIPPET_CHARS: usize = 200;

/// The first [`SNIPPET_CHARS`] characters of a body, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    // Leading whitespace aside, the snippet's characters lie in the first few bytes (at most 4
    // bytes a character): decode those, not a whole page of cards.
    let start = body.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(body.len());
    let head = &body[start..body.len().min(start + SNIPPET_CHARS * 4)];
    String::from_utf8_lossy(head).trim().chars().take(SNIPPET_CHARS).collect()
}

/// Whether a `Content-Type` value says JSON (`application/json`, `...+json`, with any parameters).
pub(crate) fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// Kaiten's error message from a body: the `message` of a JSON object, else the body text. HTML (the
/// 429 page, a proxy's error page) is never parsed and gives `None`.
fn error_message(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    let text = snippet(body);
    if text.is_empty() {
        return None;
    }
    match content_type {
        Some(ct) if ct.to_ascii_lowercase().contains("html") => None,
        Some(ct) if !is_json_content_type(ct) => Some(text),
        _ => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => match map.get("message") {
                Some(serde_json::Value::String(message)) => Some(message.chars().take(SNIPPET_CHARS).collect()),
                _ => Some(text),
            },
            Ok(serde_json::Value::String(message)) => Some(message.chars().take(SNIPPET_CHARS).collect()),
            _ => Some(text),
        },
    }
}

impl Error {
    /// The one mapping of a non-success HTTP status to an error. `attempts` is the number of attempts
    /// made so far; `retry_after` the wait the server asked for, if any.
    pub(crate) fn from_status(
        route: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
        retry_after: Option<Duration>,
        attempts: u32,
    ) -> Self {
        let route = route.to_owned();
        match status {
            401 => Self::Unauthorized { route },
            402 => Self::PaymentRequired {
                route,
                message: error_message(content_type, body)
                    .unwrap_or_else(|| "the feature is not included in the plan".into()),
            },
            403 => Self::Forbidden { route },
            404 => Self::NotFound { route },
            429 => Self::RateLimited { route, retry_after, attempts },
            500..=599 => Self::Server { route, status, attempts },
            _ => Self::BadRequest {
                route,
                status,
                message: error_message(content_type, body).unwrap_or_else(|| {
                    reqwest::StatusCode::from_u16(status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("no message")
                        .to_owned()
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        let json = Some("application/json; charset=utf-8");
        let html = Some("text/html");
        let e = Error::from_status("GET /x", 401, Some("text/plain"), b"Unauthorized", None, 1);
        assert!(matches!(e, Error::Unauthorized { .. }) && !e.is_retryable());
        let e = Error::from_status("GET /x", 402, json, br#"{"message":"Upgrade your plan"}"#, None, 1);
        assert!(matches!(&e, Error::PaymentRequired { message, .. } if message == "Upgrade your plan"), "{e:?}");
        let e = Error::from_status("GET /x", 402, Some("text/plain"), b"no money", None, 1);
        assert!(matches!(&e, Error::PaymentRequired { message, .. } if message == "no money"), "{e:?}");
        assert!(matches!(Error::from_status("GET /x", 403, None, b"", None, 1), Error::Forbidden { .. }));
        assert!(matches!(Error::from_status("GET /x", 404, None, b"", None, 1), Error::NotFound { .. }));
        let e =
            Error::from_status("GET /x", 429, html, b"<html>Too many requests</html>", Some(Duration::from_secs(1)), 5);
        assert!(matches!(e, Error::RateLimited { attempts: 5, retry_after: Some(_), .. }) && e.is_retryable());
        let e = Error::from_status("GET /x", 503, html, b"<html>down</html>", None, 3);
        assert!(matches!(e, Error::Server { status: 503, attempts: 3, .. }) && e.is_retryable());
        let e = Error::from_status("GET /x", 400, json, br#"{"message":"bad limit"}"#, None, 1);
        assert!(matches!(&e, Error::BadRequest { status: 400, message, .. } if message == "bad limit"), "{e:?}");
        let e = Error::from_status("GET /x", 405, html, b"<html>nope</html>", None, 1);
        assert!(
            matches!(&e, Error::BadRequest { status: 405, message, .. } if message == "Method Not Allowed"),
            "{e:?}"
        );
        assert_eq!(e.status(), Some(405));
    }

    #[test]
    fn snippets_are_short_and_content_types_are_recognised() {
        let long = "é".repeat(500);
        assert_eq!(snippet(long.as_bytes()).chars().count(), SNIPPET_CHARS);
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/problem+json"));
        assert!(!is_json_content_type("text/html; charset=utf-8"));
    }
}
