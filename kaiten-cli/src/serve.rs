//! `kaiten-sync serve`: Kaiten webhooks, an admin page and scheduled syncs in one process.
//!
//! - `POST /api/webhooks/kaiten/{secret}` (alias `/webhooks/kaiten/{secret}`): a delivery, recorded
//!   in the store's webhook inbox and answered at once (200); a background worker then fetches
//!   the entity it names from Kaiten and stores it. 401 for a wrong secret, 400 for a malformed
//!   body, 413 above 1 MiB, 503 when the database cannot record it.
//! - `GET /admin/sync` (alias `/`): the admin page (counts, per-entity state, recent runs,
//!   schedule, buttons); `GET /admin/sync/status.json`: what `kaiten-sync status --json` prints;
//!   `POST /admin/sync/incremental`, `POST /admin/sync/full`: start a run in the background.
//!   Served to loopback clients only, unless `KAITEN_ADMIN_TOKEN` is set, which is then required
//!   from everyone (and required to listen on anything but loopback).
//! - `GET /healthz`: `ok` when the database answers.
//! - Every response carries `Content-Security-Policy` (nothing but the page's own style, no
//!   framing, forms to this origin only), `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`
//!   and `X-Content-Type-Options: nosniff`. Requests are limited in size before any handler runs:
//!   1 MiB of webhook body, 16 KiB on every other route, 64 headers of 32 KiB in all, an 8 KiB
//!   request target (413, 431, 414); hyper itself stops at 100 headers and a ~400 KiB header buffer.
//! - Refused webhook deliveries (401) are logged at most once a minute, with their count.
//! - A scheduler: an incremental sync at start and every `--incremental-every` seconds, a full sync
//!   daily at `--full-at` (UTC) or every `--full-every` seconds.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, NaiveTime, Utc};
use clap::Args;
use kaiten_client::{KaitenClient, Secret};
use kaiten_sync::{
    constant_time_eq, EntityState, InboxEntry, InboxStats, RunRecord, Store, SyncEngine, SyncError, SyncOptions,
    SyncReport, TableCount, WebhookAuth, WebhookHandler, WebhookOptions,
};
use serde_json::json;
use tokio::sync::watch;

use crate::config::{DbArgs, KaitenArgs};

/// Environment variable with the secret of the webhook URL.
pub const ENV_WEBHOOK_SECRET: &str = "KAITEN_WEBHOOK_SECRET";
/// Environment variable with the admin page's token.
pub const ENV_ADMIN_TOKEN: &str = "KAITEN_ADMIN_TOKEN";
/// Shortest secret or token accepted.
pub const MIN_SECRET_CHARS: usize = 16;
/// Where Kaiten posts deliveries: `POST {WEBHOOK_PATH}/<secret>` (`/webhooks/kaiten/<secret>` too).
pub const WEBHOOK_PATH: &str = "/api/webhooks/kaiten";

/// The admin page (`/` too).
pub const ADMIN_PATH: &str = "/admin/sync";

/// Largest webhook body accepted (413 above).
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;
/// Largest body of every other route (413 above): the admin page's forms send none.
pub const ADMIN_BODY_LIMIT: usize = 16 * 1024;
/// Most request headers accepted (431 above).
pub const MAX_HEADERS: usize = 64;
/// Largest size of all request headers together, names and values (431 above).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Longest request target, path and query (414 above).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Refused webhook deliveries are logged at most once per this interval, with their count.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Runs shown on the admin page.
const PAGE_RUNS: usize = 20;
/// Runs in `/status.json` (as `kaiten-sync status --json`).
const STATUS_RUNS: usize = 10;

/// Failed webhook inbox entries shown on the admin page and in `status.json`.
const PAGE_FAILED_ENTRIES: usize = 50;
/// Scheduler messages kept for the admin page.
const LOG_LINES: usize = 12;

const ADMIN_TEMPLATE: &str = include_str!("admin.html");

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback requires KAITEN_ADMIN_TOKEN (put a TLS reverse
    /// proxy in front for Kaiten to reach the webhook route).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Seconds between scheduled incremental syncs; the first runs at start (0 = none).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    incremental_every: u64,
    /// Daily full sync (with deletion detection) at this UTC time [default: 03:00, unless
    /// --full-every is given].
    #[arg(long, value_name = "HH:MM", conflicts_with = "full_every", value_parser = parse_hhmm)]
    full_at: Option<NaiveTime>,
    /// Full sync every SECS seconds instead of daily (0 = no scheduled full sync).
    #[arg(long, value_name = "SECS")]
    full_every: Option<u64>,
    /// No scheduled syncs: webhooks and the admin page's buttons only.
    #[arg(long)]
    no_schedule: bool,
    /// Also require this header (e.g. X-Signature) to carry the hex HMAC-SHA256 of each webhook
    /// body keyed with KAITEN_WEBHOOK_SECRET (for a signing proxy in front; Kaiten signs nothing).
    #[arg(long, env = "KAITEN_WEBHOOK_HMAC_HEADER", value_name = "HEADER")]
    hmac_header: Option<String>,
    /// Scheduled incremental syncs also fetch each changed card (`GET /cards/{id}`, one request per
    /// changed card) to store its members in `card_members`. Webhook refetches always store them.
    #[arg(long, env = "KAITEN_CARD_MEMBERS", value_parser = clap::builder::BoolishValueParser::new())]
    members: bool,
    #[command(flatten)]
    kaiten: KaitenArgs,
    #[command(flatten)]
    db: DbArgs,
}

fn parse_hhmm(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| format!("expected a UTC time of day as HH:MM (e.g. 03:00), got {text:?}"))
}

/// The webhook secret from the environment, or an error saying how to set it.
pub fn webhook_secret(value: Option<String>) -> Result<Secret> {
    let value = value.map(|v| v.trim().to_owned()).unwrap_or_default();
    if value.is_empty() {
        bail!(
            "{ENV_WEBHOOK_SECRET} is not set: `serve` receives Kaiten webhooks at /webhooks/kaiten/<secret>, and Kaiten \
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

/// When full syncs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullSchedule {
    /// Daily at this UTC time.
    DailyAt(NaiveTime),
    /// At this interval.
    Every(Duration),
}

/// When syncs run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Interval of incremental syncs (the first runs at start).
    pub incremental_every: Option<Duration>,
    /// Full syncs.
    pub full: Option<FullSchedule>,
}

impl Schedule {
    fn from_args(args: &ServeArgs) -> Self {
        if args.no_schedule {
            return Self::default();
        }
        let incremental_every = (args.incremental_every > 0).then(|| Duration::from_secs(args.incremental_every));
        let full = match (args.full_at, args.full_every) {
            (Some(at), _) => Some(FullSchedule::DailyAt(at)),
            (None, Some(0)) => None,
            (None, Some(secs)) => Some(FullSchedule::Every(Duration::from_secs(secs))),
            (None, None) => Some(FullSchedule::DailyAt(NaiveTime::from_hms_opt(3, 0, 0).expect("valid time"))),
        };
        Self { incremental_every, full }
    }

    /// The first full sync after `now`.
    pub fn next_full(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.full? {
            FullSchedule::DailyAt(at) => {
                let today = now.date_naive().and_time(at).and_utc();
                Some(if today > now { today } else { today + chrono::Duration::days(1) })
            }
            FullSchedule::Every(every) => Some(now + chrono::Duration::from_std(every).unwrap_or_default()),
        }
    }

    /// The schedule in words.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(every) = self.incremental_every {
            parts.push(format!("incremental every {} (first at start)", human(every)));
        }
        match self.full {
            Some(FullSchedule::DailyAt(at)) => parts.push(format!("full daily at {} UTC", at.format("%H:%M"))),
            Some(FullSchedule::Every(every)) => parts.push(format!("full every {}", human(every))),
            None => {}
        }
        if parts.is_empty() {
            "no scheduled syncs".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 3600 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s >= 60 && s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A kind of sync the server starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// `sync_incremental`.
    Incremental,
    /// `sync_all`.
    Full,
}

impl SyncKind {
    fn as_str(self) -> &'static str {
        match self {
            SyncKind::Incremental => "incremental",
            SyncKind::Full => "full",
        }
    }
}

#[derive(Debug, Clone)]
struct Current {
    kind: SyncKind,
    trigger: &'static str,
    since: DateTime<Utc>,
}

/// When the scheduler runs next.
#[derive(Debug, Clone, Copy, Default)]
struct NextRuns {
    incremental: Option<DateTime<Utc>>,
    full: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct LogLine {
    at: DateTime<Utc>,
    ok: bool,
    text: String,
}

/// What `serve` needs: the store, a client, the secrets and the schedule.
pub struct ServeConfig {
    /// The mirror.
    pub store: Arc<dyn Store>,
    /// Kaiten.
    pub client: KaitenClient,
    /// The webhook URL secret.
    pub webhook_secret: Secret,
    /// The header of a signing proxy's HMAC, if required.
    pub hmac_header: Option<String>,
    /// The admin token; `None` serves the admin routes to loopback clients only.
    pub admin_token: Option<Secret>,
    /// When syncs run.
    pub schedule: Schedule,
    /// How webhook deliveries are applied.
    pub webhook_options: WebhookOptions,
    /// How scheduled and button-started syncs run.
    pub sync_options: SyncOptions,
}

/// The server's shared state. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    engine: SyncEngine,
    webhooks: WebhookHandler,
    admin_token: Option<Secret>,
    schedule: Schedule,
    /// One sync at a time from this process (its runs share one lock holder id).
    slot: Arc<tokio::sync::Mutex<()>>,
    current: Mutex<Option<Current>>,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
    next: Mutex<NextRuns>,
    log: Mutex<VecDeque<LogLine>>,
    /// Refused webhook deliveries not logged yet.
    refused: Arc<RefusedDeliveries>,
}

impl AppState {
    /// The state for a configuration.
    pub fn new(config: ServeConfig) -> Self {
        let mut auth = WebhookAuth::new(config.webhook_secret);
        if let Some(header) = config.hmac_header.filter(|h| !h.trim().is_empty()) {
            auth = auth.with_hmac_header(header.trim());
        }
        let webhooks =
            WebhookHandler::with_options(config.client.clone(), config.store.clone(), auth, config.webhook_options);
        let engine = SyncEngine::new(config.client, config.store.clone()).with_options(config.sync_options);
        Self(Arc::new(Inner {
            store: config.store,
            engine,
            webhooks,
            admin_token: config.admin_token,
            schedule: config.schedule,
            slot: Arc::new(tokio::sync::Mutex::new(())),
            current: Mutex::new(None),
            abort: Mutex::new(None),
            next: Mutex::new(NextRuns::default()),
            log: Mutex::new(VecDeque::new()),
            refused: Arc::new(RefusedDeliveries::new(REFUSAL_LOG_INTERVAL)),
        }))
    }

    fn note(&self, ok: bool, text: String) {
        let at = Utc::now();
        if ok {
            println!("{} {text}", at.format("%Y-%m-%d %H:%M:%S"));
            tracing::info!("{text}");
        } else {
            tracing::warn!("{text}");
        }
        let mut log = self.0.log.lock().unwrap();
        log.push_front(LogLine { at, ok, text });
        log.truncate(LOG_LINES);
    }

    /// Starts a sync in the background unless this process is already running one (then the
    /// request is skipped and noted). Returns the run's task.
    pub fn start_sync(&self, kind: SyncKind, trigger: &'static str) -> Option<tokio::task::JoinHandle<()>> {
        let Ok(guard) = self.0.slot.clone().try_lock_owned() else {
            let busy = self.0.current.lock().unwrap().clone();
            let what = busy.map(|c| format!("{} ({})", c.kind.as_str(), c.trigger)).unwrap_or_else(|| "a sync".into());
            self.note(true, format!("{} sync ({trigger}) skipped: {what} is still running", kind.as_str()));
            return None;
        };
        *self.0.current.lock().unwrap() = Some(Current { kind, trigger, since: Utc::now() });
        let state = self.clone();
        let handle = tokio::spawn(async move {
            let result = match kind {
                SyncKind::Incremental => state.0.engine.sync_incremental().await,
                SyncKind::Full => state.0.engine.sync_all().await,
            };
            *state.0.current.lock().unwrap() = None;
            drop(guard);
            state.finished(kind, trigger, result);
        });
        *self.0.abort.lock().unwrap() = Some(handle.abort_handle());
        Some(handle)
    }

    fn finished(&self, kind: SyncKind, trigger: &str, result: Result<SyncReport, SyncError>) {
        let name = kind.as_str();
        match result {
            Ok(report) => {
                let run = &report.run;
                self.note(
                    true,
                    format!(
                        "run #{} ({name}, {trigger}) succeeded in {:.1?}: {} new, {} changed, {} deleted, {} requests",
                        run.id,
                        report.duration,
                        run.total(|s| s.inserted),
                        run.total(|s| s.updated),
                        run.total(|s| s.deleted),
                        run.api_requests
                    ),
                );
            }
            Err(SyncError::Locked { holder, .. }) => {
                self.note(true, format!("{name} sync ({trigger}) skipped: another sync holds the lock ({holder})"));
            }
            Err(e) => self.note(false, format!("{name} sync ({trigger}) failed: {e}")),
        }
    }

    /// Whether this process is running a sync.
    pub fn sync_running(&self) -> bool {
        self.0.slot.try_lock().is_err()
    }

    async fn wait_idle(&self) {
        let _ = self.0.slot.lock().await;
    }

    /// Stops the running sync at once (it resumes from its last committed page next time) and
    /// releases the lock it held.
    async fn abort_sync(&self) {
        if let Some(abort) = self.0.abort.lock().unwrap().take() {
            abort.abort();
        }
        if let Err(e) = self.0.store.release_lock(self.0.engine.holder()).await {
            tracing::warn!(error = %e, "could not release the sync lock; it goes stale on its own");
        }
    }

    fn set_next(&self, incremental: Option<DateTime<Utc>>, full: Option<DateTime<Utc>>) {
        *self.0.next.lock().unwrap() = NextRuns { incremental, full };
    }

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
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Refused webhook deliveries (401), logged at most once per interval with their count: a flood of
/// wrong secrets (a scanner, a space still posting to an old secret) must not flood the log.
struct RefusedDeliveries {
    interval_ms: AtomicU64,
    state: Mutex<RefusedState>,
}

#[derive(Default)]
struct RefusedState {
    /// Refusals not logged yet.
    pending: u64,
    /// When the last line was written.
    logged_at: Option<tokio::time::Instant>,
    /// Whether a task logs `pending` when the interval is over.
    flush_due: bool,
}

impl RefusedDeliveries {
    fn new(interval: Duration) -> Self {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        Self { interval_ms: AtomicU64::new(ms), state: Mutex::new(RefusedState::default()) }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    /// Counts one refusal: logged at once when no line was written within the interval, else by a
    /// task at the end of the interval, together with the others of the interval.
    fn record(self: &Arc<Self>) {
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
    fn flush(&self) {
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
enum Refusal {
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
struct AdminLink {
    token: Option<String>,
}

impl AdminLink {
    fn path(&self, path: &str) -> String {
        match &self.token {
            Some(token) => format!("{path}?token={}", percent_encode(token)),
            None => path.to_owned(),
        }
    }
}

fn query_token(uri: &Uri) -> Option<String> {
    let Query(params) = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    params.get("token").cloned()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `127.0.0.1:8080`, `localhost`, `[::1]:8080`, ... (DNS rebinding gets a foreign Host header).
fn is_loopback_host(host: &str) -> bool {
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
fn cross_site(headers: &HeaderMap) -> bool {
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

/// The app: webhooks, health, and the guarded admin routes.
pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route(ADMIN_PATH, get(admin_page))
        .route(&format!("{ADMIN_PATH}/status.json"), get(status_json))
        .route(&format!("{ADMIN_PATH}/incremental"), post(sync_incremental))
        .route(&format!("{ADMIN_PATH}/full"), post(sync_full))
        .route(&format!("{ADMIN_PATH}/inbox/retry"), post(retry_failed_deliveries))
        // Earlier paths, kept as aliases.
        .route("/", get(admin_page))
        .route("/status.json", get(status_json))
        .route("/sync/incremental", post(sync_incremental))
        .route("/sync/full", post(sync_full))
        .route_layer(middleware::from_fn_with_state(state.clone(), admin_guard))
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT));
    let webhooks = Router::new()
        .route(&format!("{WEBHOOK_PATH}/{{secret}}"), post(webhook))
        .route("/webhooks/kaiten/{secret}", post(webhook))
        .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT));
    Router::new()
        .merge(admin)
        .merge(webhooks)
        .route("/healthz", get(healthz))
        .layer(middleware::from_fn(request_limits))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

fn is_webhook_path(path: &str) -> bool {
    path.strip_prefix(WEBHOOK_PATH)
        .or_else(|| path.strip_prefix("/webhooks/kaiten"))
        .is_some_and(|r| r.starts_with('/'))
}

/// Refuses oversized requests before any handler: a long target (414), too many or too large
/// headers (431), a declared body above the route's limit (413). A body sent without a length is
/// cut at the same limit by the routes that read one (`DefaultBodyLimit`); the others never read it.
async fn request_limits(req: Request, next: Next) -> Response {
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

/// The `Content-Security-Policy` of every response: no scripts, no framing, no other origin; the
/// admin page's one `<style>` element allowed by its hash (the page has no script and no `style`
/// attribute); forms post to this origin only.
fn content_security_policy() -> &'static HeaderValue {
    static CSP: OnceLock<HeaderValue> = OnceLock::new();
    CSP.get_or_init(|| {
        let policy = format!(
            "default-src 'none'; style-src '{}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            style_hash(ADMIN_TEMPLATE)
        );
        HeaderValue::from_str(&policy).expect("the policy is ASCII")
    })
}

/// `sha256-<base64>` of the text of a page's first `<style>` element, as CSP hashes it.
fn style_hash(html: &str) -> String {
    use sha2::{Digest, Sha256};
    let style =
        html.split_once("<style>").and_then(|(_, rest)| rest.split_once("</style>")).map_or("", |(style, _)| style);
    format!("sha256-{}", base64(&Sha256::digest(style.as_bytes())))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
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

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, content_security_policy().clone());
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

async fn admin_guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match state.admit(&req) {
        Ok(link) => {
            req.extensions_mut().insert(link);
            next.run(req).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn webhook(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let handler = &state.0.webhooks;
    let signature = handler.hmac_header().and_then(|h| headers.get(h)).and_then(|v| v.to_str().ok());
    match handler.handle(&secret, signature, &body).await {
        Ok(outcome) => Json(json!({
            "ok": true,
            "event": outcome.event,
            "ignored": outcome.ignored(),
            "queued": outcome.queued.map(|n| json!({"kind": n.kind, "id": n.entity_id})),
        }))
        .into_response(),
        Err(error) => {
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status == StatusCode::UNAUTHORIZED {
                state.0.refused.record();
            }
            (status, Json(json!({"ok": false, "error": error.to_string()}))).into_response()
        }
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.0.store.recent_runs(1).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {e}\n")).into_response(),
    }
}

async fn sync_incremental(State(state): State<AppState>, Extension(link): Extension<AdminLink>) -> Redirect {
    state.start_sync(SyncKind::Incremental, "admin page");
    Redirect::to(&link.path(ADMIN_PATH))
}

async fn sync_full(State(state): State<AppState>, Extension(link): Extension<AdminLink>) -> Redirect {
    state.start_sync(SyncKind::Full, "admin page");
    Redirect::to(&link.path(ADMIN_PATH))
}

async fn retry_failed_deliveries(State(state): State<AppState>, Extension(link): Extension<AdminLink>) -> Response {
    match state.0.store.inbox_retry_failed(None, Utc::now()).await {
        Ok(n) => {
            state.note(true, format!("{n} failed webhook deliveries queued again (admin page)"));
            Redirect::to(&link.path(ADMIN_PATH)).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {e}\n")).into_response(),
    }
}

async fn status_json(State(state): State<AppState>) -> Response {
    let store = &state.0.store;
    let data = async {
        Ok::<_, kaiten_sync::StoreError>((
            store.counts().await?,
            store.entity_states().await?,
            store.recent_runs(STATUS_RUNS).await?,
            store.inbox_stats().await?,
            store.inbox_entries(true, PAGE_FAILED_ENTRIES).await?,
        ))
    }
    .await;
    match data {
        Ok((tables, entities, runs, inbox, failed)) => {
            let next = *state.0.next.lock().unwrap();
            let running = state.0.current.lock().unwrap().clone();
            Json(json!({
                "tables": tables,
                "entities": entities,
                "runs": runs,
                "webhook_inbox": {"pending": inbox.pending, "failed": inbox.failed,
                                  "oldest_pending": inbox.oldest_pending, "failed_entries": failed},
                "schedule": {
                    "description": state.0.schedule.describe(),
                    "next_incremental": next.incremental,
                    "next_full": next.full,
                    "running": running.map(|c| json!({"kind": c.kind.as_str(), "trigger": c.trigger, "since": c.since})),
                },
            }))
            .into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": format!("database unavailable: {e}")})))
            .into_response(),
    }
}

async fn admin_page(State(state): State<AppState>, Extension(link): Extension<AdminLink>) -> Response {
    let store = &state.0.store;
    let data = async {
        Ok::<_, kaiten_sync::StoreError>((
            store.counts().await?,
            store.entity_states().await?,
            store.recent_runs(PAGE_RUNS).await?,
            store.inbox_stats().await?,
            store.inbox_entries(true, PAGE_FAILED_ENTRIES).await?,
        ))
    }
    .await;
    match data {
        Ok((counts, states, runs, inbox, failed)) => {
            let page = Page {
                backend: store.backend(),
                counts,
                states,
                runs,
                inbox,
                failed,
                now: Utc::now(),
                current: state.0.current.lock().unwrap().clone(),
                next: *state.0.next.lock().unwrap(),
                schedule: state.0.schedule.describe(),
                log: state.0.log.lock().unwrap().iter().cloned().collect(),
                link,
                hmac_header: state.0.webhooks.hmac_header().map(str::to_owned),
            };
            Html(page.render()).into_response()
        }
        Err(e) => {
            let body = format!(
                "<header><h1>kaiten-sync</h1></header><main><section class=\"wide\"><h2>Database unavailable</h2>\
                 <p class=\"muted\">{}</p></section></main>",
                esc(&e.to_string())
            );
            (StatusCode::SERVICE_UNAVAILABLE, Html(ADMIN_TEMPLATE.replace("{{content}}", &body))).into_response()
        }
    }
}

/// HTML-escapes text for element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| "–".to_owned())
}

fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    let (amount, future) = (secs.unsigned_abs(), secs >= 0);
    let text = match amount {
        0..=59 => format!("{amount}s"),
        60..=3599 => format!("{}m", amount / 60),
        3600..=86_399 => format!("{}h {}m", amount / 3600, amount % 3600 / 60),
        _ => format!("{}d", amount / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

struct Page {
    backend: &'static str,
    counts: Vec<TableCount>,
    states: Vec<EntityState>,
    runs: Vec<RunRecord>,
    inbox: InboxStats,
    failed: Vec<InboxEntry>,
    now: DateTime<Utc>,
    current: Option<Current>,
    next: NextRuns,
    schedule: String,
    log: Vec<LogLine>,
    link: AdminLink,
    hmac_header: Option<String>,
}

impl Page {
    fn render(&self) -> String {
        let mut html = String::new();
        let _ = write!(
            html,
            "<header><h1>kaiten-sync</h1><span class=\"meta\">{} store · {} UTC</span></header>\n<main>\n",
            esc(self.backend),
            self.now.format("%Y-%m-%d %H:%M:%S")
        );
        self.sync_section(&mut html);
        self.tables_section(&mut html);
        self.entities_section(&mut html);
        self.inbox_section(&mut html);
        self.runs_section(&mut html);
        html.push_str("</main>\n");
        ADMIN_TEMPLATE.replace("{{content}}", &html)
    }

    fn sync_section(&self, html: &mut String) {
        html.push_str("<section><h2>Sync</h2>\n");
        let _ = write!(
            html,
            "<form method=\"post\" action=\"{}\"><button class=\"primary\" type=\"submit\">Run incremental sync</button></form>\
             <form method=\"post\" action=\"{}\"><button type=\"submit\">Run full sync</button></form>\n<dl>",
            esc(&self.link.path(&format!("{ADMIN_PATH}/incremental"))),
            esc(&self.link.path(&format!("{ADMIN_PATH}/full")))
        );
        match &self.current {
            Some(c) => {
                let _ = write!(
                    html,
                    "<dt>Now</dt><dd><span class=\"badge running\">running</span> {} ({}) since {}</dd>",
                    c.kind.as_str(),
                    esc(c.trigger),
                    relative(c.since, self.now).replace(" ago", "")
                );
            }
            None => html.push_str("<dt>Now</dt><dd>idle</dd>"),
        }
        let _ = write!(html, "<dt>Schedule</dt><dd>{}</dd>", esc(&self.schedule));
        let next = |t: Option<DateTime<Utc>>| match t {
            Some(t) if t <= self.now => format!("{} UTC (due now)", when(Some(t))),
            Some(t) => format!("{} UTC ({})", when(Some(t)), relative(t, self.now)),
            None => "–".to_owned(),
        };
        let _ = write!(html, "<dt>Next incremental</dt><dd>{}</dd>", next(self.next.incremental));
        let _ = write!(html, "<dt>Next full</dt><dd>{}</dd>", next(self.next.full));
        let _ = writeln!(
            html,
            "<dt>Webhooks</dt><dd><code>POST /webhooks/kaiten/&lt;KAITEN_WEBHOOK_SECRET&gt;</code>{}</dd></dl>",
            match &self.hmac_header {
                Some(h) => format!(" with an HMAC in <code>{}</code>", esc(h)),
                None => String::new(),
            }
        );
        if !self.log.is_empty() {
            html.push_str("<ul class=\"log\">");
            for line in &self.log {
                let _ = write!(
                    html,
                    "<li{}>{} {}</li>",
                    if line.ok { "" } else { " class=\"bad\"" },
                    line.at.format("%H:%M:%S"),
                    esc(&line.text)
                );
            }
            html.push_str("</ul>\n");
        }
        html.push_str("</section>\n");
    }

    fn tables_section(&self, html: &mut String) {
        html.push_str(
            "<section><h2>Tables</h2><table><thead><tr><th>table</th><th class=\"num\">rows</th>\
             <th class=\"num\">deleted</th></tr></thead><tbody>\n",
        );
        for c in &self.counts {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&c.table),
                c.live,
                c.deleted
            );
        }
        html.push_str("</tbody></table></section>\n");
    }

    fn entities_section(&self, html: &mut String) {
        html.push_str(
            "<section class=\"wide\"><h2>Entities</h2><table><thead><tr><th>entity</th><th>last full sync</th>\
             <th>last incremental</th><th>cursor</th><th class=\"num\">rows</th><th>unfinished</th></tr></thead><tbody>\n",
        );
        if self.states.is_empty() {
            html.push_str("<tr><td colspan=\"6\" class=\"muted\">nothing synced yet</td></tr>\n");
        }
        for s in &self.states {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(s.kind.as_str()),
                when(s.last_full_sync_at),
                when(s.last_incremental_sync_at),
                s.cursor.map(|c| c.format("%Y-%m-%d %H:%M:%S%.3f").to_string()).unwrap_or_else(|| "–".into()),
                s.row_count.map(|n| n.to_string()).unwrap_or_else(|| "–".into()),
                if s.resume.is_some() { "yes" } else { "–" }
            );
        }
        html.push_str("</tbody></table></section>\n");
    }

    /// The webhook inbox: what waits to be applied, and what gave up (with its error).
    fn inbox_section(&self, html: &mut String) {
        let oldest = self.inbox.oldest_pending.map(|t| relative(t, self.now)).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            html,
            "<section class=\"wide\"><h2>Webhook inbox</h2><p>{} pending (oldest received {}), {} failed</p>",
            self.inbox.pending,
            esc(&oldest),
            self.inbox.failed
        );
        if !self.failed.is_empty() {
            html.push_str(
                "<table><thead><tr><th>kind</th><th class=\"num\">id</th><th>last event</th>\
                 <th class=\"num\">deliveries</th><th class=\"num\">attempts</th><th>received</th><th>failed</th>\
                 <th>error</th></tr></thead><tbody>\n",
            );
            for e in &self.failed {
                let _ = writeln!(
                    html,
                    "<tr><td>{kind}</td><td class=\"num\">{id}</td><td>{event}</td><td class=\"num\">{deliveries}</td>\
                     <td class=\"num\">{attempts}</td><td>{received}</td><td>{failed}</td><td class=\"err\">{error}</td></tr>",
                    kind = esc(e.kind.as_str()),
                    id = e.entity_id,
                    event = esc(&e.event),
                    deliveries = e.deliveries,
                    attempts = e.attempts,
                    received = when(Some(e.received_at)),
                    failed = when(e.failed_at),
                    error = esc(e.last_error.as_deref().unwrap_or("")),
                );
            }
            let _ = writeln!(
                html,
                "</tbody></table><form method=\"post\" action=\"{}\"><button>Retry failed deliveries</button></form>",
                esc(&self.link.path(&format!("{ADMIN_PATH}/inbox/retry")))
            );
        }
        html.push_str("</section>\n");
    }

    fn runs_section(&self, html: &mut String) {
        html.push_str(
            "<section class=\"wide\"><h2>Recent runs</h2><table><thead><tr><th class=\"num\">run</th><th>kind</th>\
             <th>status</th><th>started</th><th class=\"num\">took</th><th class=\"num\">requests</th>\
             <th class=\"num\">new</th><th class=\"num\">changed</th><th class=\"num\">unchanged</th>\
             <th class=\"num\">deleted</th><th>scope</th><th>error</th></tr></thead><tbody>\n",
        );
        if self.runs.is_empty() {
            html.push_str("<tr><td colspan=\"12\" class=\"muted\">no runs yet</td></tr>\n");
        }
        for run in &self.runs {
            let took = run
                .finished_at
                .map(|f| format!("{:.1}s", (f - run.started_at).num_milliseconds() as f64 / 1000.0))
                .unwrap_or_else(|| "–".into());
            let status = run.status.as_str();
            let _ = writeln!(
                html,
                "<tr id=\"run-{id}\"><td class=\"num\">{id}</td><td>{kind}</td><td><span class=\"badge {status}\">{status}</span></td>\
                 <td>{started}</td><td class=\"num\">{took}</td><td class=\"num\">{requests}</td><td class=\"num\">{ins}</td>\
                 <td class=\"num\">{upd}</td><td class=\"num\">{unch}</td><td class=\"num\">{del}</td>\
                 <td class=\"scope\">{scope}</td><td class=\"err\">{error}</td></tr>",
                id = run.id,
                kind = esc(run.kind.as_str()),
                status = esc(status),
                started = when(Some(run.started_at)),
                requests = run.api_requests,
                ins = run.total(|s| s.inserted),
                upd = run.total(|s| s.updated),
                unch = run.total(|s| s.unchanged),
                del = run.total(|s| s.deleted),
                scope = esc(run.scope.as_deref().unwrap_or("")),
                error = esc(run.error.as_deref().unwrap_or("")),
            );
        }
        html.push_str("</tbody></table></section>\n");
    }
}

/// Runs the schedule until `stop` says so: an incremental sync at start and at its interval, full
/// syncs at theirs. A busy lock or an error is noted and the schedule goes on.
async fn scheduler(state: AppState, mut stop: watch::Receiver<bool>) {
    let schedule = state.0.schedule.clone();
    let mut next_incremental = schedule.incremental_every.map(|_| Utc::now());
    let mut next_full = schedule.next_full(Utc::now());
    loop {
        state.set_next(next_incremental, next_full);
        let Some(due) = [next_incremental, next_full].into_iter().flatten().min() else { return };
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let kind = if next_full.is_some_and(|f| f <= Utc::now()) { SyncKind::Full } else { SyncKind::Incremental };
        if let Some(run) = state.start_sync(kind, "scheduled") {
            tokio::select! {
                _ = run => {}
                _ = stop.changed() => return,
            }
        }
        let now = Utc::now();
        if kind == SyncKind::Full {
            next_full = schedule.next_full(now);
        }
        // A full sync also brings everything up to date: the next incremental counts from here.
        next_incremental =
            schedule.incremental_every.map(|every| now + chrono::Duration::from_std(every).unwrap_or_default());
    }
}

/// `kaiten-sync serve`.
pub async fn run(args: ServeArgs) -> Result<()> {
    let webhook_secret = webhook_secret(std::env::var(ENV_WEBHOOK_SECRET).ok())?;
    let admin_token = admin_token(args.listen, std::env::var(ENV_ADMIN_TOKEN).ok())?;
    let schedule = Schedule::from_args(&args);
    let client = args.kaiten.client()?;
    let store = crate::stores::open(&args.db).await?;
    store.migrate().await.context("migration failed")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    let protected = admin_token.is_some();
    let state = AppState::new(ServeConfig {
        store,
        client,
        webhook_secret,
        hmac_header: args.hmac_header.clone(),
        admin_token,
        schedule: schedule.clone(),
        webhook_options: WebhookOptions::default(),
        sync_options: SyncOptions::default().with_card_members_backfill(args.members),
    });

    println!("kaiten-sync serve on http://{addr} ({})", args.db.describe());
    println!("  webhooks:   POST http://{addr}{WEBHOOK_PATH}/<{ENV_WEBHOOK_SECRET}>");
    println!("              (in Kaiten: space settings → webhooks → https://your-host{WEBHOOK_PATH}/<secret>)");
    println!(
        "  admin page: http://{addr}{ADMIN_PATH} ({})",
        if protected { "requires KAITEN_ADMIN_TOKEN" } else { "this machine only" }
    );
    println!("  schedule:   {}", schedule.describe());
    println!("Ctrl-C stops.");

    let (stop_tx, stop_rx) = watch::channel(false);
    let scheduler = tokio::spawn(scheduler(state.clone(), stop_rx.clone()));
    let webhooks = state.0.webhooks.clone();
    let mut webhook_stop = stop_rx;
    let worker = tokio::spawn(async move {
        webhooks
            .run_worker(async move {
                let _ = webhook_stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down: finishing requests in flight");
            let _ = stop_tx.send(true);
        })
        .await
        .context("the HTTP server failed")?;
    let _ = scheduler.await;
    let _ = worker.await;
    state.0.refused.flush();
    if state.sync_running() {
        println!("waiting for the running sync to finish (Ctrl-C again stops it now; the next run resumes it)");
        tokio::select! {
            _ = state.wait_idle() => {}
            _ = tokio::signal::ctrl_c() => {
                state.abort_sync().await;
                println!("sync stopped");
            }
        }
    }
    println!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use kaiten_sim::{SimConfig, Simulator};
    use kaiten_sync::{EntityKind, MemoryStore, RunKind, RunStatus};
    use tower::ServiceExt;

    const SECRET: &str = "serve-test-secret-0123456789";
    const TOKEN: &str = "admin-token-0123456789abcdef";

    struct Fixture {
        sim: Simulator,
        store: Arc<dyn Store>,
        state: AppState,
    }

    async fn fixture(admin_token: Option<&str>) -> Fixture {
        let sim = Simulator::start(SimConfig::small()).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let client =
            crate::config::client(&sim.base_url(), &sim.token(), 0.0, Duration::from_secs(10)).expect("client");
        let state = AppState::new(ServeConfig {
            store: store.clone(),
            client,
            webhook_secret: Secret::new(SECRET),
            hmac_header: None,
            admin_token: admin_token.map(Secret::new),
            schedule: Schedule::default(),
            webhook_options: WebhookOptions::default().with_debounce(Duration::ZERO),
            sync_options: SyncOptions::default(),
        });
        Fixture { sim, store, state }
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:50000".parse().unwrap()
    }

    async fn send(
        state: &AppState,
        req: axum::http::Request<Body>,
        peer: SocketAddr,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = req;
        req.extensions_mut().insert(ConnectInfo(peer));
        let response = router(state.clone()).oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 10 * 1024 * 1024).await.unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn get_req(uri: &str) -> axum::http::Request<Body> {
        axum::http::Request::get(uri).header("host", "127.0.0.1:8080").body(Body::empty()).unwrap()
    }

    fn post_req(uri: &str, body: impl Into<Body>) -> axum::http::Request<Body> {
        axum::http::Request::post(uri)
            .header("host", "127.0.0.1:8080")
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap()
    }

    fn card_add(card: &serde_json::Value) -> String {
        json!({"event": "card:add", "data": card}).to_string()
    }

    #[tokio::test]
    async fn webhook_route_answers_200_401_400_413() {
        let f = fixture(None).await;
        let card = f.sim.create_card(f.sim.board_ids()[0], "Via the route");
        let id = card["id"].as_i64().unwrap();
        let uri = format!("{WEBHOOK_PATH}/{SECRET}");
        // The webhook route is not the admin page: any client may post (Kaiten is not loopback).
        let remote: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let (status, _, body) = send(&f.state, post_req(&uri, card_add(&card)), remote).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["queued"], json!({"kind": "cards", "id": id}));
        assert_eq!(answer["ignored"], false);
        assert!(f.store.get(EntityKind::Cards, id).await.unwrap().is_none(), "acknowledged before it is fetched");
        assert_eq!(f.state.0.webhooks.drain().await.unwrap().applied, 1);
        assert!(f.store.get(EntityKind::Cards, id).await.unwrap().is_some());
        // The earlier path is an alias.
        let (status, _, _) =
            send(&f.state, post_req(&format!("/webhooks/kaiten/{SECRET}"), card_add(&card)), remote).await;
        assert_eq!(status, StatusCode::OK);

        let (status, _, body) =
            send(&f.state, post_req("/webhooks/kaiten/wrong-secret-0123456789", card_add(&card)), remote).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!body.contains(SECRET));

        let (status, _, body) = send(&f.state, post_req(&uri, "<html>not json</html>"), remote).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("webhook body is not JSON"), "{body}");

        let (status, _, _) =
            send(&f.state, post_req(&uri, r#"{"event":"card:add","data":{"title":"no id"}}"#), remote).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let huge =
            format!(r#"{{"event":"card:add","data":{{"id":1,"title":"{}"}}}}"#, "x".repeat(WEBHOOK_BODY_LIMIT + 10));
        let (status, _, _) = send(&f.state, post_req(&uri, huge), remote).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

        let (status, _, body) =
            send(&f.state, post_req(&uri, r#"{"event":"automation:run","data":{"id":1}}"#), remote).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"ignored\":true"), "{body}");
    }

    #[tokio::test]
    async fn admin_page_shows_counts_runs_and_escapes_what_the_database_holds() {
        let f = fixture(None).await;
        let card = f.sim.create_card(f.sim.board_ids()[0], "<script>alert('card')</script>");
        let (status, _, _) =
            send(&f.state, post_req(&format!("{WEBHOOK_PATH}/{SECRET}"), card_add(&card)), loopback()).await;
        assert_eq!(status, StatusCode::OK);
        f.state.0.webhooks.drain().await.unwrap();
        let mut failed = RunRecord::start(RunKind::Incremental, vec![EntityKind::Cards], None, Utc::now());
        failed.id = f.store.start_run(&failed).await.unwrap();
        failed.status = RunStatus::Failed;
        failed.error = Some("<script>alert(\"error\")</script> & more".into());
        f.store.update_run(&failed).await.unwrap();

        let (status, headers, html) = send(&f.state, get_req(ADMIN_PATH), loopback()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        assert_eq!(send(&f.state, get_req("/"), loopback()).await.0, StatusCode::OK, "/ is an alias");
        assert!(!html.contains("<script"), "nothing from the database reaches the page unescaped");
        assert!(html.contains("&lt;script&gt;alert(&quot;error&quot;)&lt;/script&gt; &amp; more"), "{html}");
        // Counts: one card, its board, columns and lanes fetched as parents.
        assert!(html.contains("<tr><td>cards</td><td class=\"num\">1</td><td class=\"num\">0</td></tr>"), "{html}");
        assert!(html.contains(&format!("id=\"run-{}\"", failed.id)));
        assert!(html.contains("<span class=\"badge failed\">failed</span>"));
        assert!(html.contains("<span class=\"badge succeeded\">succeeded</span>"));
        assert!(html.contains("action=\"/admin/sync/incremental\"") && html.contains("action=\"/admin/sync/full\""));
        assert!(!html.contains(SECRET), "the webhook secret is never shown");

        let (status, _, json) = send(&f.state, get_req("/admin/sync/status.json"), loopback()).await;
        assert_eq!(status, StatusCode::OK);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(value["tables"].as_array().unwrap().iter().any(|t| t["table"] == "cards" && t["live"] == 1));
        assert_eq!(value["runs"][0]["id"], failed.id);
        assert!(value["entities"].is_array());
    }

    #[tokio::test]
    async fn sync_buttons_start_a_run_in_the_background_and_redirect() {
        let f = fixture(None).await;
        let (status, headers, _) = send(&f.state, post_req("/admin/sync/incremental", ""), loopback()).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], ADMIN_PATH);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let runs = f.store.recent_runs(5).await.unwrap();
            if runs.iter().any(|r| r.kind == RunKind::Incremental && r.status == RunStatus::Succeeded) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no incremental run appeared: {runs:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(f.store.ids(EntityKind::Cards, false).await.unwrap().len(), f.sim.card_ids().len());
        f.state.wait_idle().await;
        let log = f.state.0.log.lock().unwrap().clone();
        assert!(log[0].text.contains("(incremental, admin page) succeeded"), "{log:?}");

        // A second press while a run is going is skipped, not queued.
        f.sim.set_latency(Duration::from_millis(30));
        let (status, _, _) = send(&f.state, post_req("/sync/full", ""), loopback()).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "the earlier path is an alias");
        assert!(f.state.sync_running());
        send(&f.state, post_req("/sync/incremental", ""), loopback()).await;
        let log = f.state.0.log.lock().unwrap().clone();
        assert!(log[0].text.contains("skipped: full (admin page) is still running"), "{log:?}");
        let (_, _, html) = send(&f.state, get_req("/"), loopback()).await;
        assert!(html.contains("<span class=\"badge running\">running</span> full (admin page)"), "{html}");
        f.state.wait_idle().await;
    }

    #[tokio::test]
    async fn admin_routes_are_for_loopback_or_the_token() {
        let f = fixture(None).await;
        let remote: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        for uri in ["/", "/status.json", ADMIN_PATH, "/admin/sync/status.json"] {
            let (status, _, body) = send(&f.state, get_req(uri), remote).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
            assert!(body.contains(ENV_ADMIN_TOKEN));
        }
        let (status, _, _) = send(&f.state, post_req("/sync/full", ""), remote).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(!f.state.sync_running());
        // Through a reverse proxy every client looks like loopback: forwarded requests are refused.
        let mut proxied = get_req("/");
        proxied.headers_mut().insert("x-forwarded-for", "203.0.113.1".parse().unwrap());
        assert_eq!(send(&f.state, proxied, loopback()).await.0, StatusCode::FORBIDDEN);
        // DNS rebinding: a foreign Host header.
        let rebound = axum::http::Request::get("/").header("host", "evil.example:8080").body(Body::empty()).unwrap();
        assert_eq!(send(&f.state, rebound, loopback()).await.0, StatusCode::FORBIDDEN);
        // A form posted from another site.
        let mut csrf = post_req("/sync/full", "");
        csrf.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
        assert_eq!(send(&f.state, csrf, loopback()).await.0, StatusCode::FORBIDDEN);
        let mut same = get_req("/");
        same.headers_mut().insert("host", "localhost:8080".parse().unwrap());
        assert_eq!(send(&f.state, same, "[::1]:5000".parse().unwrap()).await.0, StatusCode::OK);

        let f = fixture(Some(TOKEN)).await;
        assert_eq!(send(&f.state, get_req("/"), remote).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            send(&f.state, get_req("/"), loopback()).await.0,
            StatusCode::UNAUTHORIZED,
            "a token binds everyone"
        );
        let mut bearer = get_req("/status.json");
        bearer.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        assert_eq!(send(&f.state, bearer, remote).await.0, StatusCode::OK);
        let mut wrong = get_req("/status.json");
        wrong.headers_mut().insert("authorization", "Bearer admin-token-0123456789abcdeX".parse().unwrap());
        assert_eq!(send(&f.state, wrong, remote).await.0, StatusCode::UNAUTHORIZED);
        let (status, _, html) = send(&f.state, get_req(&format!("/?token={TOKEN}")), remote).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains(&format!("action=\"/admin/sync/full?token={TOKEN}\"")), "the forms carry the token");
        let (status, headers, _) =
            send(&f.state, post_req(&format!("/admin/sync/incremental?token={TOKEN}"), ""), remote).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], format!("/admin/sync?token={TOKEN}"));
        f.state.wait_idle().await;
    }

    #[tokio::test]
    async fn failed_webhook_deliveries_are_shown_and_can_be_retried() {
        let f = fixture(None).await;
        let note = kaiten_sync::Notification {
            kind: EntityKind::Cards,
            entity_id: 4242,
            parent_id: None,
            event: "card:update".into(),
        };
        let now = Utc::now();
        f.store.inbox_push(&[note], now, now).await.unwrap();
        let entry = f.store.inbox_claim("test", 1, now, now + chrono::Duration::seconds(60)).await.unwrap().remove(0);
        let failed =
            kaiten_sync::InboxResult::Failed { id: entry.id, error: "<b>Kaiten 502</b>".into(), retry_at: None };
        f.store.inbox_finish(&[failed], now).await.unwrap();

        let (status, _, json) = send(&f.state, get_req("/admin/sync/status.json"), loopback()).await;
        assert_eq!(status, StatusCode::OK);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["webhook_inbox"]["failed"], 1);
        assert_eq!(value["webhook_inbox"]["failed_entries"][0]["entity_id"], 4242);
        let (_, _, html) = send(&f.state, get_req(ADMIN_PATH), loopback()).await;
        assert!(html.contains("0 pending (oldest received –), 1 failed"), "{html}");
        assert!(html.contains("&lt;b&gt;Kaiten 502&lt;/b&gt;") && !html.contains("<b>Kaiten"), "the error, escaped");
        assert!(html.contains("action=\"/admin/sync/inbox/retry\""), "{html}");

        let (status, headers, _) = send(&f.state, post_req("/admin/sync/inbox/retry", ""), loopback()).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], ADMIN_PATH);
        let stats = f.store.inbox_stats().await.unwrap();
        assert_eq!((stats.pending, stats.failed), (1, 0));
        let remote: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        assert_eq!(send(&f.state, post_req("/admin/sync/inbox/retry", ""), remote).await.0, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn healthz_says_ok_when_the_database_answers() {
        let f = fixture(Some(TOKEN)).await;
        let (status, _, body) = send(&f.state, get_req("/healthz"), "198.51.100.7:5000".parse().unwrap()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    }

    #[test]
    fn secrets_and_tokens_are_checked_at_startup() {
        let err = webhook_secret(None).unwrap_err().to_string();
        assert!(err.contains("KAITEN_WEBHOOK_SECRET is not set"), "{err}");
        let err = webhook_secret(Some("short".into())).unwrap_err().to_string();
        assert!(err.contains("5 characters long") && !err.contains("short\""), "{err}");
        assert!(webhook_secret(Some("has a space in it 0123".into())).is_err());
        assert!(webhook_secret(Some("0123456789abcdef".into())).is_ok());

        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let err = admin_token(public, None).unwrap_err().to_string();
        assert!(err.contains("KAITEN_ADMIN_TOKEN") && err.contains("0.0.0.0:8080"), "{err}");
        assert!(admin_token(public, Some("tiny".into())).is_err());
        assert!(admin_token(public, Some(TOKEN.into())).unwrap().is_some());
        assert!(admin_token("127.0.0.1:8080".parse().unwrap(), None).unwrap().is_none());
        assert!(admin_token("[::1]:8080".parse().unwrap(), None).unwrap().is_none());
    }

    #[test]
    fn schedule_times() {
        let now: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        let daily = |h, m| Schedule {
            incremental_every: None,
            full: Some(FullSchedule::DailyAt(NaiveTime::from_hms_opt(h, m, 0).unwrap())),
        };
        assert_eq!(daily(3, 0).next_full(now).unwrap(), "2026-03-02T03:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(daily(10, 30).next_full(now).unwrap(), "2026-03-01T10:30:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(daily(10, 0).next_full(now).unwrap(), "2026-03-02T10:00:00Z".parse::<DateTime<Utc>>().unwrap());
        let every = Schedule {
            incremental_every: Some(Duration::from_secs(300)),
            full: Some(FullSchedule::Every(Duration::from_secs(7200))),
        };
        assert_eq!(every.next_full(now).unwrap(), "2026-03-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(every.describe(), "incremental every 5m (first at start); full every 2h");
        assert_eq!(daily(3, 0).describe(), "full daily at 03:00 UTC");
        assert_eq!(Schedule::default().describe(), "no scheduled syncs");
        assert_eq!(parse_hhmm("03:00").unwrap(), NaiveTime::from_hms_opt(3, 0, 0).unwrap());
        assert!(parse_hhmm("25:00").unwrap_err().contains("HH:MM"));
    }

    #[test]
    fn hosts_and_origins() {
        for host in ["127.0.0.1", "127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "app.localhost"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["evil.example", "10.0.0.1:8080", "127.0.0.1.evil.example", "[2001:db8::1]:80"] {
            assert!(!is_loopback_host(host), "{host}");
        }
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:3000")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-site")])));
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-origin")])));
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[tokio::test]
    async fn every_response_carries_the_security_headers() {
        let f = fixture(None).await;
        let remote: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let (status, headers, html) = send(&f.state, get_req(ADMIN_PATH), loopback()).await;
        assert_eq!(status, StatusCode::OK);
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
        for directive in ["default-src 'none'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("script-src"), "{csp}");
        // The page's own style is allowed by its hash, computed here from the page as served.
        assert!(csp.contains(&format!("style-src '{}'", style_hash(&html))), "{csp}");
        assert!(
            !html.contains("<script") && !html.contains(" style=\""),
            "the policy allows no script and no style attribute"
        );
        let responses = [
            (ADMIN_PATH.to_owned(), send(&f.state, get_req(ADMIN_PATH), loopback()).await.1),
            ("refused admin".to_owned(), send(&f.state, get_req(ADMIN_PATH), remote).await.1),
            ("healthz".to_owned(), send(&f.state, get_req("/healthz"), remote).await.1),
            (
                "webhook".to_owned(),
                send(&f.state, post_req(&format!("{WEBHOOK_PATH}/wrong-0123456789"), "{}"), remote).await.1,
            ),
            ("404".to_owned(), send(&f.state, get_req("/nothing-here"), loopback()).await.1),
        ];
        for (what, headers) in responses {
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{what}");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{what}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], csp, "{what}");
        }
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[tokio::test]
    async fn the_bearer_scheme_is_case_insensitive() {
        let f = fixture(Some(TOKEN)).await;
        let remote: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        for value in [
            format!("Bearer {TOKEN}"),
            format!("bearer {TOKEN}"),
            format!("BEARER  {TOKEN} "),
            format!("bEaReR\t{TOKEN}"),
        ] {
            let mut req = get_req("/status.json");
            req.headers_mut().insert("authorization", value.parse().unwrap());
            assert_eq!(send(&f.state, req, remote).await.0, StatusCode::OK, "{value:?}");
        }
        for value in [format!("Basic {TOKEN}"), format!("Bearer{TOKEN}"), "bearer ".to_owned(), TOKEN.to_owned()] {
            let mut req = get_req("/status.json");
            req.headers_mut().insert("authorization", value.parse().unwrap());
            assert_eq!(send(&f.state, req, remote).await.0, StatusCode::UNAUTHORIZED, "{value:?}");
        }
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Token abc"), None);
    }

    #[tokio::test]
    async fn oversized_requests_are_refused_before_any_handler() {
        let f = fixture(None).await;
        // A declared body above the admin limit: 413 before the guard or the handler runs.
        let req = axum::http::Request::post("/admin/sync/full")
            .header("host", "127.0.0.1:8080")
            .header("content-length", (ADMIN_BODY_LIMIT + 1).to_string())
            .body(Body::from(vec![b'x'; ADMIN_BODY_LIMIT + 1]))
            .unwrap();
        assert_eq!(send(&f.state, req, loopback()).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!f.state.sync_running(), "nothing started");
        // A webhook body between the two limits is fine (the webhook route's own limit is 1 MiB).
        let card = f.sim.create_card(f.sim.board_ids()[0], &"long title ".repeat(2_000));
        let body = card_add(&card);
        assert!(body.len() > ADMIN_BODY_LIMIT);
        let (status, _, answer) = send(&f.state, post_req(&format!("{WEBHOOK_PATH}/{SECRET}"), body), loopback()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");

        let mut many = get_req(ADMIN_PATH);
        for i in 0..MAX_HEADERS {
            many.headers_mut()
                .insert(axum::http::HeaderName::try_from(format!("x-h{i}")).unwrap(), "1".parse().unwrap());
        }
        assert_eq!(send(&f.state, many, loopback()).await.0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let mut large = get_req(ADMIN_PATH);
        large.headers_mut().insert("cookie", "c".repeat(MAX_HEADER_BYTES).parse().unwrap());
        assert_eq!(send(&f.state, large, loopback()).await.0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let long = format!("{ADMIN_PATH}?token={}", "t".repeat(MAX_URI_BYTES));
        assert_eq!(send(&f.state, get_req(&long), loopback()).await.0, StatusCode::URI_TOO_LONG);
        assert_eq!(send(&f.state, get_req(ADMIN_PATH), loopback()).await.0, StatusCode::OK);
    }

    /// Captures what a `tracing` subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines_with(&self, needle: &str) -> Vec<String> {
            let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
            text.lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
        }
    }

    #[tokio::test]
    async fn refused_deliveries_are_logged_once_per_interval_with_their_count() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let captured = captured.clone();
                move || captured.clone()
            })
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let f = fixture(None).await;
        let interval = Duration::from_millis(400);
        f.state.0.refused.interval_ms.store(interval.as_millis() as u64, Ordering::Relaxed);
        let app = router(f.state.clone());
        let remote: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        for _ in 0..2_000 {
            let mut req =
                post_req("/api/webhooks/kaiten/wrong-secret-0123456789", r#"{"event":"card:add","data":{"id":1}}"#);
            req.extensions_mut().insert(ConnectInfo(remote));
            assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        }
        let lines = captured.lines_with("webhook deliver");
        assert_eq!(lines.len(), 1, "one line at the first refusal: {lines:#?}");
        assert!(lines[0].contains("refused a webhook delivery (401") && lines[0].contains("refused=1"), "{}", lines[0]);
        assert!(!lines[0].contains("wrong-secret-0123456789"), "the secret tried is never logged");
        tokio::time::sleep(interval + Duration::from_millis(300)).await;
        let lines = captured.lines_with("webhook deliver");
        assert_eq!(lines.len(), 2, "the rest at the end of the interval: {lines:#?}");
        assert!(
            lines[1].contains("refused 1999 more webhook deliveries") && lines[1].contains("refused=1999"),
            "{}",
            lines[1]
        );
        // A quiet interval, then one more: logged at once again.
        tokio::time::sleep(interval + Duration::from_millis(100)).await;
        let mut req = post_req("/webhooks/kaiten/wrong-secret-0123456789", "{}");
        req.extensions_mut().insert(ConnectInfo(remote));
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        assert_eq!(captured.lines_with("webhook deliver").len(), 3);
        // Accepted and malformed deliveries are not counted as refusals.
        let (status, _, _) = send(&f.state, post_req(&format!("{WEBHOOK_PATH}/{SECRET}"), "not json"), remote).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        tokio::time::sleep(interval + Duration::from_millis(300)).await;
        assert_eq!(captured.lines_with("webhook deliver").len(), 3);
    }
}
