//! `kaiten-sync serve`: Kaiten webhooks, an admin page and scheduled syncs in one process.
//!
//! - `POST /api/webhooks/kaiten/{secret}` (alias `/webhooks/kaiten/{secret}`): a delivery, recorded
//!   in the store's webhook inbox and answered at once (200); a background worker then fetches
//!   the entity it names from Kaiten and stores it. 401 for a wrong secret, 400 for a malformed
//!   body, 413 above 1 MiB, 503 when the database cannot record it.
//! - `GET /admin/sync` (alias `/`): the admin page (counts, per-entity state, recent runs,
//!   schedule, buttons); `GET /admin/sync/status.json`: what `kaiten-sync status --json` prints;
//!   `POST /admin/sync/incremental`, `POST /admin/sync/full`: start a run in the background;
//!   `POST /admin/sync/selective` (form fields `only`, `space`, `board`, `mode`): a selective run;
//!   `POST /admin/sync/refetch` (`cards`): cards refetched by id through the webhook path;
//!   `GET /admin/sync/runs?kind=&status=&page=`, `GET /admin/sync/runs/{id}`: the run history.
//!   `GET /admin/sync/webhooks[?refresh=1]`: every space's Kaiten webhook (read from Kaiten at most
//!   once a minute); `POST /admin/sync/webhooks/install`: one per space pointing here (needs
//!   `--public-url`).
//!   `GET /admin/sync/app.js` (static, unguarded): the page's script, polling `status.json` for
//!   the running run's progress (`progress`).
//!   Served to loopback clients only, unless `KAITEN_ADMIN_TOKEN` is set, which is then required
//!   from everyone (and required to listen on anything but loopback).
//! - `GET /healthz`: `ok` when the database answers.
//! - `GET /metrics` (alias `/admin/sync/metrics`): Prometheus metrics ([`crate::metrics`]),
//!   guarded like the admin routes.
//! - Every response carries `Content-Security-Policy` (the page's own style, scripts of this
//!   origin only, no framing, forms to this origin only), `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`
//!   and `X-Content-Type-Options: nosniff`. Requests are limited in size before any handler runs:
//!   1 MiB of webhook body, 16 KiB on every other route, 64 headers of 32 KiB in all, an 8 KiB
//!   request target (413, 431, 414); hyper itself stops at 100 headers and a ~400 KiB header buffer.
//! - Refused webhook deliveries (401) are logged at most once a minute, with their count.
//! - A scheduler: an incremental sync at start and every `--incremental-every` seconds, a full sync
//!   daily at `--full-at` (UTC) or every `--full-every` seconds.
//!
//! Where things are:
//!
//! | module | holds |
//! |---|---|
//! | `mod.rs` (here) | the command line ([`ServeArgs`]), [`ServeConfig`], the shared [`AppState`] (which run is going, the scheduler's log) and [`run`] |
//! | `schedule` | [`Schedule`] and the scheduler loop |
//! | `guard` | who may reach the admin routes (loopback or token, CSRF), secrets and tokens at startup, security headers, request size limits |
//! | `routes` | the router and its handlers |
//! | `html` | the admin page: template, escaping, sections (quick actions, progress) |
//! | `progress` | the running run's per-kind totals, rate and estimate, from the engine's events |
//! | `history` | the run history pages and the 14-day chart (inline SVG) |
//! | `hooks` | the webhooks page: each space's Kaiten webhook, the install button |
//! | `app.js` | the page's script: redraws the progress from `status.json` |

mod guard;
mod history;
mod hooks;
mod html;
mod progress;
mod routes;
mod schedule;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveTime, Utc};
use clap::Args;
use kaiten_client::{KaitenClient, Secret};
use kaiten_sync::{
    Mode, Selection, Store, SyncEngine, SyncError, SyncOptions, SyncReport, WebhookAuth, WebhookHandler, WebhookOptions,
};
use tokio::sync::watch;

use crate::config::{DbArgs, KaitenArgs};
use guard::RefusedDeliveries;
use progress::LiveProgress;
use schedule::{parse_hhmm, scheduler};

pub use guard::{admin_token, webhook_secret, REFUSAL_LOG_INTERVAL};
pub use routes::router;
pub use schedule::Schedule;

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

/// Scheduler messages kept for the admin page.
const LOG_LINES: usize = 12;

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
    /// The share (0 to 1) of a kind a scheduled sync may mark deleted without checking a sample
    /// with Kaiten first (see `sync --max-delete-share`). 1 = no check.
    #[arg(long, env = "KAITEN_MAX_DELETE_SHARE", default_value_t = 0.1, value_parser = crate::parse_share)]
    max_delete_share: f64,
    /// The public base URL Kaiten reaches this server at (`https://sync.example.com`; http only for
    /// 127.0.0.1 and localhost): enables the webhooks page's install button.
    #[arg(long, env = crate::webhooks::ENV_PUBLIC_URL, value_name = "URL")]
    public_url: Option<String>,
    #[command(flatten)]
    kaiten: KaitenArgs,
    #[command(flatten)]
    db: DbArgs,
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

/// What a run started by the server syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncJob {
    /// `sync_incremental` or `sync_all`.
    Kind(SyncKind),
    /// `sync_selection`: chosen kinds, spaces or boards, in a mode (the admin page's quick actions,
    /// as `kaiten-sync sync --only/--space/--board [--full]`).
    Selection(Selection, Mode),
}

impl From<SyncKind> for SyncJob {
    fn from(kind: SyncKind) -> Self {
        SyncJob::Kind(kind)
    }
}

impl SyncJob {
    /// The job in words: `incremental`, `full`, `selective full (kinds cards; boards 42)`.
    pub fn describe(&self) -> String {
        match self {
            SyncJob::Kind(kind) => kind.as_str().to_owned(),
            SyncJob::Selection(selection, mode) => {
                let mode = if *mode == Mode::Full { "full" } else { "incremental" };
                let mut parts = Vec::new();
                if !selection.kinds.is_empty() {
                    parts.push(format!(
                        "kinds {}",
                        selection.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")
                    ));
                }
                fn ids<I: std::fmt::Display>(ids: &[I]) -> String {
                    ids.iter().map(I::to_string).collect::<Vec<_>>().join(",")
                }
                if !selection.spaces.is_empty() {
                    parts.push(format!("spaces {}", ids(&selection.spaces)));
                }
                if !selection.boards.is_empty() {
                    parts.push(format!("boards {}", ids(&selection.boards)));
                }
                if parts.is_empty() {
                    format!("selective {mode} (everything)")
                } else {
                    format!("selective {mode} ({})", parts.join("; "))
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Current {
    what: String,
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
    /// Per-kind totals of the run this process runs (or ran last), from the engine's events.
    live: Arc<Mutex<LiveProgress>>,
    /// The stored spaces and boards offered by the quick actions, read at most once a minute and
    /// after each run.
    named: Mutex<Option<routes::NamedCache>>,
    /// What `/metrics` counts.
    metrics: crate::metrics::Metrics,
    /// The webhooks page: the public URL and the spaces' webhook states, read once a minute.
    hooks: hooks::HookAdmin,
}

impl AppState {
    /// The state for a configuration.
    pub fn new(config: ServeConfig) -> Self {
        let hooks = hooks::HookAdmin::new(&config.webhook_secret);
        let mut auth = WebhookAuth::new(config.webhook_secret);
        if let Some(header) = config.hmac_header.filter(|h| !h.trim().is_empty()) {
            auth = auth.with_hmac_header(header.trim());
        }
        let webhooks =
            WebhookHandler::with_options(config.client.clone(), config.store.clone(), auth, config.webhook_options);
        let live = Arc::new(Mutex::new(LiveProgress::default()));
        let engine = {
            let (live, client) = (live.clone(), config.client.clone());
            SyncEngine::new(config.client, config.store.clone()).with_options(config.sync_options).on_progress(
                move |event| {
                    let requests = client.stats().requests;
                    live.lock().unwrap().apply(event, requests, Utc::now());
                },
            )
        };
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
            live,
            named: Mutex::new(None),
            metrics: crate::metrics::Metrics::new(),
            hooks,
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
    pub fn start_sync(&self, job: impl Into<SyncJob>, trigger: &'static str) -> Option<tokio::task::JoinHandle<()>> {
        let job = job.into();
        let name = job.describe();
        let Ok(guard) = self.0.slot.clone().try_lock_owned() else {
            let busy = self.0.current.lock().unwrap().clone();
            let what = busy.map(|c| format!("{} ({})", c.what, c.trigger)).unwrap_or_else(|| "a sync".into());
            self.note(true, format!("{name} sync ({trigger}) skipped: {what} is still running"));
            return None;
        };
        *self.0.current.lock().unwrap() = Some(Current { what: name.clone(), trigger, since: Utc::now() });
        let state = self.clone();
        let handle = tokio::spawn(async move {
            let engine = &state.0.engine;
            let result = match &job {
                SyncJob::Kind(SyncKind::Incremental) => engine.sync_incremental().await,
                SyncJob::Kind(SyncKind::Full) => engine.sync_all().await,
                SyncJob::Selection(selection, mode) => engine.sync_selection(selection, *mode).await,
            };
            *state.0.current.lock().unwrap() = None;
            // The spaces and boards the run stored are offered by the quick actions at once.
            *state.0.named.lock().unwrap() = None;
            drop(guard);
            state.finished(&name, trigger, result);
        });
        *self.0.abort.lock().unwrap() = Some(handle.abort_handle());
        Some(handle)
    }

    fn finished(&self, name: &str, trigger: &str, result: Result<SyncReport, SyncError>) {
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
            Err(e) => self.note(false, format!("{name} sync ({trigger}) failed: {}", kaiten_sync::error::Chain(&e))),
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
            tracing::warn!(error = %kaiten_sync::error::Chain(&e), "could not release the sync lock; it goes stale on its own");
        }
    }

    fn set_next(&self, incremental: Option<DateTime<Utc>>, full: Option<DateTime<Utc>>) {
        *self.0.next.lock().unwrap() = NextRuns { incremental, full };
    }
}

/// `kaiten-sync serve`.
pub async fn run(args: ServeArgs) -> Result<()> {
    let webhook_secret = webhook_secret(std::env::var(ENV_WEBHOOK_SECRET).ok())?;
    let admin_token = admin_token(args.listen, std::env::var(ENV_ADMIN_TOKEN).ok())?;
    let schedule = Schedule::from_args(&args);
    let public_url =
        args.public_url.as_deref().filter(|u| !u.trim().is_empty()).map(crate::webhooks::public_url).transpose()?;
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
        sync_options: SyncOptions::default()
            .with_concurrency(usize::from(args.kaiten.concurrency))
            .with_card_members_backfill(args.members)
            .with_max_delete_share(args.max_delete_share),
    });
    state.set_public_url(public_url);

    println!("kaiten-sync serve on http://{addr} ({})", args.db.describe());
    println!("  webhooks:   POST http://{addr}{WEBHOOK_PATH}/<{ENV_WEBHOOK_SECRET}>");
    println!(
        "              (`kaiten-sync webhooks install --url https://your-host` registers it on every space; \
         state at {ADMIN_PATH}/webhooks)"
    );
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
