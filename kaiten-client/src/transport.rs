//! Sending one request: concurrency limit, rate limit, retries, status mapping, JSON decoding, tracing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::field::Empty;
use tracing::Instrument;

use crate::error::{is_json_content_type, snippet, Error, Result};
use crate::rate_limit::RateLimiter;
use crate::redact::redact_url;
use crate::retry::{rate_limit_exhausted, rate_limit_limit, rate_limit_reset, retry_after, RetryPolicy};

/// Without a reset time, `X-RateLimit-Remaining: 0` holds requests this long (Kaiten's window is 1 s).
const DEFAULT_HOLD: Duration = Duration::from_secs(1);

/// What every clone of a client shares.
pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    /// The normalised base URL, without a trailing slash.
    pub(crate) base_url: String,
    /// `Bearer <token>`, marked sensitive.
    pub(crate) authorization: HeaderValue,
    pub(crate) user_agent: String,
    pub(crate) timeout: Option<Duration>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) rate_limit: Option<f64>,
    pub(crate) limiter: RateLimiter,
    pub(crate) max_concurrent: usize,
    pub(crate) semaphore: Semaphore,
    pub(crate) retry: RetryPolicy,
    pub(crate) requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    /// Responses that were 429.
    pub(crate) rate_limited: AtomicU64,
}

/// Turns a 2xx body into what the caller asked for. Runs inside the retry loop, so that a body cut
/// short is asked for again.
pub(crate) type Parse<T> = fn(&[u8]) -> std::result::Result<T, BodyError>;

/// Why a 2xx body could not be turned into what was asked for.
#[derive(Debug)]
pub(crate) struct BodyError {
    reason: String,
    /// The JSON ends early (the connection dropped mid-body): worth another attempt.
    truncated: bool,
}

impl BodyError {
    /// The JSON is valid but not of the expected shape.
    pub(crate) fn shape(reason: String) -> Self {
        Self { reason, truncated: false }
    }
}

impl From<serde_json::Error> for BodyError {
    fn from(err: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match err.classify() {
            Category::Eof => Self { reason: format!("{TRUNCATED} ({err})"), truncated: true },
            Category::Syntax | Category::Io => Self::shape(format!("the body is not valid JSON ({err})")),
            Category::Data => Self::shape(err.to_string()),
        }
    }
}

/// How one attempt failed.
enum Failure {
    /// Give up now.
    Fatal(Error),
    /// Worth another attempt, after `wait` when the server said how long. `unprocessed`: the server
    /// surely did not act on the request (429, or the connection was never made), so even a request
    /// that is not idempotent may be sent again.
    Retryable { error: Error, wait: Option<Duration>, unprocessed: bool },
}

/// The HTTP methods the client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// Reads.
    Get,
    /// Creates: not idempotent (a repeat may create a second record or be refused as a duplicate).
    Post,
    /// Sets fields to the values in the body: idempotent, a repeat has the same effect.
    Patch,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Patch => "PATCH",
        }
    }

    /// Whether sending the request twice has the same effect as sending it once.
    fn is_idempotent(self) -> bool {
        !matches!(self, Self::Post)
    }
}

impl Inner {
    /// `GET {base}{path}?{query}` with the rate limit, the concurrency limit and the retry policy; the
    /// 2xx body must be JSON.
    pub(crate) async fn get<T>(&self, path: &str, query: &[(&str, String)], parse: Parse<T>) -> Result<T> {
        self.request(Method::Get, path, query, None, parse).await
    }

    /// `{method} {base}{path}?{query}` with a JSON `body`, the rate limit, the concurrency limit and the
    /// retry policy; the 2xx body must be JSON.
    ///
    /// A request that is not idempotent ([`Method::Post`]) is sent again only when the server surely
    /// did not act on it: a 429, or a connection that could not be made. After a timeout, a dropped
    /// connection or a 5xx it may have been applied, and a blind repeat could create a duplicate (or,
    /// for Kaiten's one-per-space external webhooks, fail with a 400 that hides the success): the
    /// error is returned for the caller to check the state first. `GET` and `PATCH` (which sets fields
    /// to given values) are retried on every retryable error.
    pub(crate) async fn request<T>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        parse: Parse<T>,
    ) -> Result<T> {
        let route = format!("{} {path}", method.as_str());
        let url = format!("{}{path}", self.base_url);
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            let request = Request { method, route: &route, url: &url, query, body };
            let (error, server_wait) = match self.attempt(&request, attempt, parse).await {
                Ok(body) => return Ok(body),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retryable { error, unprocessed: false, .. }) if !method.is_idempotent() => {
                    tracing::warn!(
                        route = %route,
                        attempts = attempt,
                        error = &error as &dyn std::error::Error,
                        "Kaiten request failed and is not repeated: it may have been applied"
                    );
                    return Err(error);
                }
                Err(Failure::Retryable { error, wait, .. }) => (error, wait),
            };
            if attempt >= self.retry.max_attempts {
                tracing::warn!(
                    route = %route,
                    attempts = attempt,
                    error = &error as &dyn std::error::Error,
                    "Kaiten request failed: no attempts left"
                );
                return Err(error);
            }
            let wait = server_wait.unwrap_or_else(|| self.retry.backoff(attempt));
            if waited + wait > self.retry.max_total_wait {
                tracing::warn!(route = %route, attempts = attempt, wait_ms = millis(wait), error = &error as &dyn std::error::Error,
                    "Kaiten request failed: the next wait would exceed the retry policy's max_total_wait");
                return Err(error);
            }
            tracing::info!(
                route = %route,
                attempt,
                wait_ms = millis(wait),
                error = &error as &dyn std::error::Error,
                "retrying Kaiten request"
            );
            tokio::time::sleep(wait).await;
            waited += wait;
            attempt += 1;
        }
    }

    /// One attempt: a concurrency permit, a rate-limit slot, the request, its span.
    async fn attempt<T>(&self, request: &Request<'_>, attempt: u32, parse: Parse<T>) -> Result<T, Failure> {
        let _permit =
            self.semaphore.acquire().await.map_err(|_| {
                Failure::Fatal(Error::InvalidConfig("the client's request semaphore was closed".into()))
            })?;
        let sent = self.limiter.acquire().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
        if attempt > 1 {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        let span = tracing::debug_span!(
            "kaiten_request",
            method = request.method.as_str(),
            route = request.route,
            attempt,
            status = Empty,
            duration_ms = Empty
        );
        let started = std::time::Instant::now();
        let outcome = self.send(request, attempt, sent, parse).instrument(span.clone()).await;
        span.record("duration_ms", millis(started.elapsed()));
        outcome
    }

    async fn send<T>(
        &self,
        request: &Request<'_>,
        attempt: u32,
        sent: tokio::time::Instant,
        parse: Parse<T>,
    ) -> Result<T, Failure> {
        let route = request.route;
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Patch => reqwest::Method::PATCH,
        };
        let mut builder = self
            .http
            .request(method, request.url)
            .query(request.query)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(ACCEPT, "application/json");
        if let Some(body) = request.body {
            builder = builder.json(body);
        }
        let response = builder.send().await.map_err(|err| self.transport_failure(route, err, attempt))?;
        let status = response.status();
        tracing::Span::current().record("status", status.as_u16());
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        let headers = response.headers().clone();
        let now = SystemTime::now();
        self.observe_rate_limit(&headers, now, sent);
        let body = response.bytes().await.map_err(|err| self.transport_failure(route, err, attempt))?;
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if status.is_success() {
            return decode_json(route, content_type, &body, parse);
        }
        let server_wait = retry_after(&headers, now).or_else(|| {
            (status == reqwest::StatusCode::TOO_MANY_REQUESTS).then(|| rate_limit_reset(&headers, now)).flatten()
        });
        let error = Error::from_status(route, status.as_u16(), content_type, &body, server_wait, attempt);
        tracing::debug!(error = %error, "Kaiten answered with an error");
        if !error.is_retryable() {
            return Err(Failure::Fatal(error));
        }
        if let (Some(wait), true) = (server_wait, status == reqwest::StatusCode::TOO_MANY_REQUESTS) {
            // The bucket is per token: hold every request of this client, not just this one.
            self.limiter.hold_until(tokio::time::Instant::now() + wait.min(self.retry.max_total_wait));
        }
        let unprocessed = status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        Err(Failure::Retryable { error, wait: server_wait, unprocessed })
    }

    /// `X-RateLimit-Remaining: 0` holds every request until `X-RateLimit-Reset`.
    /// When the window is full of this client's own requests, only until the oldest leaves it (see
    /// [`RateLimiter::window_used_up`]).
    fn observe_rate_limit(&self, headers: &HeaderMap, now: SystemTime, sent: tokio::time::Instant) {
        if rate_limit_exhausted(headers) {
            let wait = rate_limit_reset(headers, now).unwrap_or(DEFAULT_HOLD).min(self.retry.max_total_wait);
            tracing::debug!(wait_ms = millis(wait), "Kaiten's rate-limit window is used up: holding requests");
            self.limiter.window_used_up(rate_limit_limit(headers), tokio::time::Instant::now() + wait, sent);
        }
    }

    fn transport_failure(&self, route: &str, err: reqwest::Error, attempts: u32) -> Failure {
        let route = route.to_owned();
        if err.is_timeout() {
            return Failure::Retryable { error: Error::Timeout { route, attempts }, wait: None, unprocessed: false };
        }
        // reqwest's errors quote the whole URL, password included: they are kept without it.
        let err = err.without_url();
        if err.is_builder() {
            return Failure::Fatal(Error::InvalidConfig(format!("cannot build the request for {route}: {err}")));
        }
        // A connection that was never made carried no request.
        let unprocessed = err.is_connect();
        let error = Error::Connection { route, url: redact_url(&self.base_url), attempts, source: err };
        Failure::Retryable { error, wait: None, unprocessed }
    }
}

/// One request as sent on every attempt.
struct Request<'a> {
    method: Method,
    route: &'a str,
    url: &'a str,
    query: &'a [(&'a str, String)],
    body: Option<&'a Value>,
}

/// Parses a 2xx body as JSON, refusing anything whose content type is not JSON (an HTML login page, a
/// proxy's error page) without parsing it.
/// How the reason of a [`Error::Decode`] for a body cut short begins.
const TRUNCATED: &str = "the JSON body is truncated";

fn decode_json<T>(route: &str, content_type: Option<&str>, body: &[u8], parse: Parse<T>) -> Result<T, Failure> {
    let decode_error = |reason: String| Error::Decode { route: route.to_owned(), reason, body_snippet: snippet(body) };
    if let Some(ct) = content_type {
        if !is_json_content_type(ct) {
            return Err(Failure::Fatal(decode_error(format!("expected a JSON body, got content-type {ct:?}"))));
        }
    }
    parse(body).map_err(|BodyError { reason, truncated }| {
        let error = decode_error(reason);
        if truncated {
            // A JSON body cut short (the connection dropped mid-body) is a transport failure:
            // worth another attempt (of an idempotent request: the server did act on it).
            Failure::Retryable { error, wait: None, unprocessed: false }
        } else {
            Failure::Fatal(error)
        }
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
