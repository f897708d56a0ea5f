//! The admin guard (loopback or token, CSRF), startup checks of secrets and tokens, the security
//! headers of every response and the request size limits.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Result};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kaiten_client::Secret;
use kaiten_sync::constant_time_eq;
use maud::{html, Markup};

use super::html::ADMIN_TEMPLATE;
use super::{AppState, ENV_ADMIN_TOKEN, ENV_WEBHOOK_SECRET, MIN_SECRET_CHARS, WEBHOOK_PATH};

/// Largest webhook body accepted (413 above).
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;
/// Largest body of every other route (413 above): the admin page's forms send a few fields.
pub const ADMIN_BODY_LIMIT: usize = 16 * 1024;
/// Most request headers accepted (431 above).
pub const MAX_HEADERS: usize = 64;
/// Largest size of all request headers together, names and values (431 above).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Longest request target, path and query (414 above).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Refused webhook deliveries are logged at most once per this interval, with their count.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The webhook secret from the environment, or an error saying how to set it.
pub fn webhook_secret(value: Option<String>) -> Result<Secret> {
    let value = value.map(|v| v.trim().to_owned()).unwrap_or_default();
    if value.is_empty() {
        bail!(
            "{ENV_WEBHOOK_SECRET} is not set: `serve` receives Kaiten webhooks at /api/webhooks/kaiten/<secret>, and Kaiten \
             signs nothing, so the secret in the URL is what authenticates them. Set it to a long random string \
             (e.g. `openssl rand -hex 24`) in the environment or .env"
        );
    }
    let chars = value.chars().count();
    if chars < MIN_SECRET_CHARS {
        bail!("{ENV_WEBHOOK_SECRET} is {chars} characters long; use at least {MIN_SECRET_CHARS} random characters (e.g. `openssl rand -hex 24`)");
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c)) {
        bail!("{ENV_WEBHOOK_SECRET} must be URL-safe (letters, digits, - _ . ~): it is part of the webhook URL");
    }
    Ok(Secret::new(value))
}

/// The admin token: required (and checked) when listening on anything but loopback.
pub fn admin_token(listen: SocketAddr, value: Option<String>) -> Result<Option<Secret>> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    match value {
        None if !listen.ip().is_loopback() => bail!(
            "--listen {listen} is reachable from other machines: set {ENV_ADMIN_TOKEN} (at least {MIN_SECRET_CHARS} \
             characters) to protect the admin page and the sync buttons, or listen on 127.0.0.1 behind a reverse proxy"
        ),
        None => Ok(None),
        Some(token) if token.chars().count() < MIN_SECRET_CHARS => {
            bail!("{ENV_ADMIN_TOKEN} is too short; use at least {MIN_SECRET_CHARS} random characters")
        }
        Some(token) => Ok(Some(Secret::new(token))),
    }
}

impl AppState {
    /// Whether a request may reach the admin routes.
    fn admit(&self, req: &Request) -> Result<AdminLink, Refusal> {
        let headers = req.headers();
        if req.method() == Method::POST && cross_site(headers) {
            return Err(Refusal::CrossSite);
        }
        match &self.0.admin_token {
            Some(token) => {
                let expected = token.expose().as_bytes();
                let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token);
                if bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), expected)) {
                    return Ok(AdminLink::default());
                }
                let query = query_token(req.uri());
                if query.as_deref().is_some_and(|q| constant_time_eq(q.as_bytes(), expected)) {
                    return Ok(AdminLink { token: query });
                }
                Err(Refusal::NeedsToken)
            }
            None => {
                let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
                let loopback = peer.is_some_and(|ip| ip.to_canonical().is_loopback());
                let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"].iter().any(|h| headers.contains_key(*h));
                let host_ok = headers.get(header::HOST).and_then(|v| v.to_str().ok()).is_none_or(is_loopback_host);
                if loopback && !forwarded && host_ok {
                    Ok(AdminLink::default())
                } else {
                    Err(Refusal::NotLoopback)
                }
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, the scheme in any case (RFC 9110).
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Refused webhook deliveries (401), logged at most once per interval with their count: a flood of
/// wrong secrets (a scanner, a space still posting to an old secret) must not flood the log.
pub(super) struct RefusedDeliveries {
    pub(super) interval_ms: AtomicU64,
    state: Mutex<RefusedState>,
}

#[derive(Default)]
pub(super) struct RefusedState {
    /// Refusals not logged yet.
    pending: u64,
    /// When the last line was written.
    logged_at: Option<tokio::time::Instant>,
    /// Whether a task logs `pending` when the interval is over.
    flush_due: bool,
}

impl RefusedDeliveries {
    pub(super) fn new(interval: Duration) -> Self {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        Self { interval_ms: AtomicU64::new(ms), state: Mutex::new(RefusedState::default()) }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    /// Counts one refusal: logged at once when no line was written within the interval, else by a
    /// task at the end of the interval, together with the others of the interval.
    pub(super) fn record(self: &Arc<Self>) {
        let now = tokio::time::Instant::now();
        let interval = self.interval();
        let mut state = self.state.lock().unwrap();
        state.pending += 1;
        match state.logged_at {
            Some(at) if now.duration_since(at) < interval => {
                if !state.flush_due {
                    state.flush_due = true;
                    let this = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at + interval).await;
                        this.flush();
                    });
                }
            }
            _ => {
                let count = std::mem::take(&mut state.pending);
                state.logged_at = Some(now);
                drop(state);
                Self::log(count, None, interval);
            }
        }
    }

    /// Logs the refusals not logged yet, if any.
    pub(super) fn flush(&self) {
        let mut state = self.state.lock().unwrap();
        state.flush_due = false;
        if state.pending == 0 {
            return;
        }
        let count = std::mem::take(&mut state.pending);
        let now = tokio::time::Instant::now();
        let since = state.logged_at.map(|at| now.duration_since(at));
        state.logged_at = Some(now);
        drop(state);
        Self::log(count, since, self.interval());
    }

    fn log(count: u64, since: Option<Duration>, interval: Duration) {
        let why = "wrong secret in the URL, or a missing or invalid signature";
        match since {
            None => tracing::warn!(
                refused = count,
                "refused a webhook delivery (401: {why}); further refusals are logged at most once every {}s, with \
                 their count",
                interval.as_secs().max(1)
            ),
            Some(since) => tracing::warn!(
                refused = count,
                "refused {count} more webhook deliveries (401: {why}) in the last {}s",
                since.as_secs().max(1)
            ),
        }
    }
}

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A browser form posted from another site.
    CrossSite,
    /// A token is configured and the request did not carry it.
    NeedsToken,
    /// No token is configured and the request is not from this machine.
    NotLoopback,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::CrossSite => {
                (StatusCode::FORBIDDEN, "cross-site request refused: use the buttons of the admin page\n")
                    .into_response()
            }
            Refusal::NeedsToken => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                format!(
                    "this page needs {ENV_ADMIN_TOKEN}: send `Authorization: Bearer <token>` or open /?token=<token>\n"
                ),
            )
                .into_response(),
            Refusal::NotLoopback => (
                StatusCode::FORBIDDEN,
                format!(
                    "the admin page is only served to this machine (loopback, not through a proxy); set \
                     {ENV_ADMIN_TOKEN} to reach it from elsewhere\n"
                ),
            )
                .into_response(),
        }
    }
}

/// A token that came in the query string, carried into the page's links and forms.
#[derive(Debug, Clone, Default)]
pub(super) struct AdminLink {
    token: Option<String>,
}

impl AdminLink {
    pub(super) fn path(&self, path: &str) -> String {
        match &self.token {
            Some(token) => format!("{path}?token={}", percent_encode(token)),
            None => path.to_owned(),
        }
    }

    /// `path?name=value&...` (values percent-encoded, empty ones left out), the token last.
    pub(super) fn query(&self, path: &str, params: &[(&str, String)]) -> String {
        let mut pairs: Vec<String> =
            params.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
        if let Some(token) = &self.token {
            pairs.push(format!("token={}", percent_encode(token)));
        }
        if pairs.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", pairs.join("&"))
        }
    }

    /// The token as a hidden field of a GET form (a GET form replaces the action's query).
    pub(super) fn hidden_field(&self) -> Markup {
        html! {
            @if let Some(token) = &self.token {
                input type="hidden" name="token" value=(token);
            }
        }
    }
}

pub(super) fn query_token(uri: &Uri) -> Option<String> {
    let Query(params) = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    params.get("token").cloned()
}

pub(super) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `127.0.0.1:8080`, `localhost`, `[::1]:8080`, ... (DNS rebinding gets a foreign Host header).
pub(super) fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => {
            host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A browser form posted from another site (CSRF): `Sec-Fetch-Site` other than same-origin, or an
/// `Origin` whose host is not the `Host` of the request.
pub(super) fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return true;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/')).unwrap_or(origin);
    !origin_host.eq_ignore_ascii_case(host)
}

pub(super) fn is_webhook_path(path: &str) -> bool {
    path.strip_prefix(WEBHOOK_PATH)
        .or_else(|| path.strip_prefix("/webhooks/kaiten"))
        .is_some_and(|r| r.starts_with('/'))
}

/// Refuses oversized requests before any handler: a long target (414), too many or too large
/// headers (431), a declared body above the route's limit (413). A body sent without a length is
/// cut at the same limit by the routes that read one (`DefaultBodyLimit`); the others never read it.
pub(super) async fn request_limits(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return (StatusCode::URI_TOO_LONG, format!("the request target is longer than {MAX_URI_BYTES} bytes\n"))
            .into_response();
    }
    let headers = req.headers();
    let header_bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("at most {MAX_HEADERS} request headers of {MAX_HEADER_BYTES} bytes in all\n"),
        )
            .into_response();
    }
    let limit = if is_webhook_path(req.uri().path()) { WEBHOOK_BODY_LIMIT } else { ADMIN_BODY_LIMIT };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return (StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {limit} bytes\n"))
            .into_response();
    }
    next.run(req).await
}

/// The `Content-Security-Policy` of every response: no inline script, no framing, no other origin;
/// the admin page's one `<style>` element allowed by its hash (the page has no `style` attribute);
/// scripts only from this origin (`/admin/sync/app.js`, which polls `status.json`: `connect-src
/// 'self'`); forms post to this origin only.
pub(super) fn content_security_policy() -> &'static HeaderValue {
    static CSP: OnceLock<HeaderValue> = OnceLock::new();
    CSP.get_or_init(|| {
        let policy = format!(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src '{}'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
            style_hash(ADMIN_TEMPLATE)
        );
        HeaderValue::from_str(&policy).expect("the policy is ASCII")
    })
}

/// `sha256-<base64>` of the text of a page's first `<style>` element, as CSP hashes it.
pub(super) fn style_hash(html: &str) -> String {
    use sha2::{Digest, Sha256};
    let style =
        html.split_once("<style>").and_then(|(_, rest)| rest.split_once("</style>")).map_or("", |(style, _)| style);
    format!("sha256-{}", base64(&Sha256::digest(style.as_bytes())))
}

/// Standard base64 with padding.
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(super) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, content_security_policy().clone());
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

pub(super) async fn admin_guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match state.admit(&req) {
        Ok(link) => {
            req.extensions_mut().insert(link);
            next.run(req).await
        }
        Err(refusal) => refusal.into_response(),
    }
}
