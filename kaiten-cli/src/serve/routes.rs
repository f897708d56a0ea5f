//! The routes: webhooks, health, and the admin page's handlers.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use kaiten_client::{BoardId, SpaceId};
use kaiten_sync::error::{chain, Chain};
use kaiten_sync::{EntityKind, Mode, Selection, Store, StoreError};
use serde_json::{json, Value};

use super::guard::{admin_guard, request_limits, security_headers, AdminLink, ADMIN_BODY_LIMIT, WEBHOOK_BODY_LIMIT};
use super::history::{self, RunFilter, HISTORY_RUNS};
use super::html::{database_unavailable_page, Named, Page};
use super::{hooks, progress, AppState, SyncJob, SyncKind, ADMIN_PATH, WEBHOOK_PATH};

/// Runs shown on the admin page.
pub(super) const PAGE_RUNS: usize = 20;
/// Runs in `/status.json` (as `kaiten-sync status --json`).
pub(super) const STATUS_RUNS: usize = 10;

/// Failed webhook inbox entries shown on the admin page and in `status.json`.
pub(super) const PAGE_FAILED_ENTRIES: usize = 50;

/// The app: webhooks, health, and the guarded admin routes.
pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route(ADMIN_PATH, get(admin_page))
        .route(&format!("{ADMIN_PATH}/status.json"), get(status_json))
        .route(&format!("{ADMIN_PATH}/incremental"), post(sync_incremental))
        .route(&format!("{ADMIN_PATH}/full"), post(sync_full))
        .route(&format!("{ADMIN_PATH}/inbox/retry"), post(retry_failed_deliveries))
        .route(&format!("{ADMIN_PATH}/selective"), post(sync_selection))
        .route(&format!("{ADMIN_PATH}/refetch"), post(refetch_cards))
        .route(&format!("{ADMIN_PATH}/runs"), get(runs_page))
        .route(&format!("{ADMIN_PATH}/runs/{{id}}"), get(run_page))
        .route(hooks::HOOKS_PATH, get(hooks::webhooks_page))
        .route(&format!("{}/install", hooks::HOOKS_PATH), post(hooks::install_webhooks))
        .route("/metrics", get(metrics))
        .route(&format!("{ADMIN_PATH}/metrics"), get(metrics))
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
        // The page's script: static, no data, so not behind the guard.
        .route(&format!("{ADMIN_PATH}/app.js"), get(app_js))
        .layer(middleware::from_fn(request_limits))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

pub(super) async fn webhook(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = kaiten_sync::webhook::axum::receive(&state.0.webhooks, &secret, &headers, &body).await;
    state.0.metrics.webhook_delivery(&result);
    if matches!(&result, Err(error) if error.status() == StatusCode::UNAUTHORIZED.as_u16()) {
        state.0.refused.record();
    }
    kaiten_sync::webhook::axum::response(&result)
}

/// `GET /metrics` (and `/admin/sync/metrics`): see [`crate::metrics`].
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    crate::metrics::respond(&state.0.metrics, &*state.0.store, state.0.engine.client().stats()).await
}

pub(super) async fn healthz(State(state): State<AppState>) -> Response {
    match state.0.store.recent_runs(1).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {}\n", Chain(&e))).into_response(),
    }
}

pub(super) async fn sync_incremental(State(state): State<AppState>, Extension(link): Extension<AdminLink>) -> Redirect {
    state.start_sync(SyncKind::Incremental, "admin page");
    Redirect::to(&link.path(ADMIN_PATH))
}

pub(super) async fn sync_full(State(state): State<AppState>, Extension(link): Extension<AdminLink>) -> Redirect {
    state.start_sync(SyncKind::Full, "admin page");
    Redirect::to(&link.path(ADMIN_PATH))
}

pub(super) async fn retry_failed_deliveries(
    State(state): State<AppState>,
    Extension(link): Extension<AdminLink>,
) -> Response {
    match state.0.store.inbox_retry_failed(None, Utc::now()).await {
        Ok(n) => {
            state.note(true, format!("{n} failed webhook deliveries queued again (admin page)"));
            Redirect::to(&link.path(ADMIN_PATH)).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {}\n", Chain(&e))).into_response(),
    }
}

pub(super) async fn status_json(State(state): State<AppState>) -> Response {
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
            let expected = entities.iter().filter_map(|s| Some((s.kind, s.row_count?))).collect();
            let progress = state.live_progress(&expected);
            Json(json!({
                "progress": progress,
                "tables": tables,
                "entities": entities,
                "runs": runs,
                "webhook_inbox": {"pending": inbox.pending, "failed": inbox.failed,
                                  "oldest_pending": inbox.oldest_pending, "failed_entries": failed},
                "schedule": {
                    "description": state.0.schedule.describe(),
                    "next_incremental": next.incremental,
                    "next_full": next.full,
                    "running": running.map(|c| json!({"kind": c.what, "trigger": c.trigger, "since": c.since})),
                },
            }))
            .into_response()
        }
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": format!("database unavailable: {}", Chain(&e))})))
                .into_response()
        }
    }
}

pub(super) async fn admin_page(State(state): State<AppState>, Extension(link): Extension<AdminLink>) -> Response {
    let store = &state.0.store;
    let data = async {
        Ok::<_, kaiten_sync::StoreError>((
            store.counts().await?,
            store.entity_states().await?,
            store.recent_runs(PAGE_RUNS).await?,
            store.inbox_stats().await?,
            store.inbox_entries(true, PAGE_FAILED_ENTRIES).await?,
            state.named().await?,
        ))
    }
    .await;
    match data {
        Ok((counts, states, runs, inbox, failed, (spaces, boards))) => {
            let expected = states.iter().filter_map(|s| Some((s.kind, s.row_count?))).collect();
            let progress = state.live_progress(&expected);
            let page = Page {
                progress,
                spaces,
                boards,
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
        Err(e) => database_unavailable(&e),
    }
}

/// Most stored spaces or boards offered in a quick action's select.
const MAX_NAMED: usize = 500;

/// Stored spaces or boards (live ones, at most [`MAX_NAMED`]) with their titles, for the selects.
async fn named(store: &dyn Store, kind: EntityKind) -> Result<Vec<Named>, StoreError> {
    let mut ids = store.ids(kind, false).await?;
    ids.sort_unstable();
    ids.truncate(MAX_NAMED);
    let mut named = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(record) = store.get(kind, id).await? else { continue };
        let title = record.raw.get("title").and_then(Value::as_str).unwrap_or_default().to_owned();
        let space_id = record.raw.get("space_id").and_then(Value::as_i64);
        named.push(Named { id, title, space_id });
    }
    Ok(named)
}

/// The stored spaces and boards of the quick actions, and when they were read.
#[derive(Debug, Clone)]
pub(super) struct NamedCache {
    read_at: std::time::Instant,
    spaces: Vec<Named>,
    boards: Vec<Named>,
}

/// How long the quick actions' spaces and boards are reused (a run's end drops them at once).
const NAMED_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl AppState {
    /// The stored spaces and boards for the quick actions: read again after a run or a minute.
    async fn named(&self) -> Result<(Vec<Named>, Vec<Named>), StoreError> {
        if let Some(cache) = self.0.named.lock().unwrap().as_ref().filter(|c| c.read_at.elapsed() < NAMED_TTL) {
            return Ok((cache.spaces.clone(), cache.boards.clone()));
        }
        let store = &*self.0.store;
        let cache = NamedCache {
            read_at: std::time::Instant::now(),
            spaces: named(store, EntityKind::Spaces).await?,
            boards: named(store, EntityKind::Boards).await?,
        };
        let result = (cache.spaces.clone(), cache.boards.clone());
        *self.0.named.lock().unwrap() = Some(cache);
        Ok(result)
    }

    /// The run this process runs (or ran last), as `status.json`'s `progress`.
    fn live_progress(&self, expected: &HashMap<EntityKind, i64>) -> Option<Value> {
        let live = self.0.live.lock().unwrap();
        live.run.as_ref().map(|run| progress::to_json(run, expected, Utc::now()))
    }
}

/// The fields of an `application/x-www-form-urlencoded` body, in order (a name may repeat).
pub(super) fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit() => {
                    let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                    out.push(hex(bytes[i + 1]) << 4 | hex(bytes[i + 2]));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// The selection of the quick actions form: `only` (repeatable kind names; none: all), `space`,
/// `board` (an id or empty), `mode` (`incremental`, the default, or `full`).
pub(super) fn quick_selection(fields: &[(String, String)]) -> Result<(Selection, Mode), String> {
    let mut kinds = Vec::new();
    let (mut spaces, mut boards, mut mode) = (Vec::new(), Vec::new(), Mode::Incremental);
    fn id<I: std::str::FromStr + Into<i64> + Copy>(what: &str, value: &str) -> Result<I, String> {
        value
            .trim()
            .parse::<I>()
            .ok()
            .filter(|id| (*id).into() > 0)
            .ok_or_else(|| format!("{what} {value:?} is not an id"))
    }
    for (name, value) in fields {
        match (name.as_str(), value.trim()) {
            (_, "") => {}
            ("only", kind) => kinds.push(kind.parse::<EntityKind>().map_err(|e| e.to_string())?),
            ("space", space) => spaces.push(id::<SpaceId>("space", space)?),
            ("board", board) => boards.push(id::<BoardId>("board", board)?),
            ("mode", "full") => mode = Mode::Full,
            ("mode", "incremental") => mode = Mode::Incremental,
            ("mode", other) => return Err(format!("mode {other:?}: expected incremental or full")),
            _ => {}
        }
    }
    Ok((Selection::kinds(&kinds).in_spaces(&spaces).in_boards(&boards), mode))
}

/// Most card ids one refetch takes.
pub(super) const MAX_REFETCH_IDS: usize = 100;

/// The card ids of the refetch form (`cards`: ids separated by commas or spaces).
pub(super) fn refetch_ids(fields: &[(String, String)]) -> Result<Vec<i64>, String> {
    let mut ids = Vec::new();
    for (_, value) in fields.iter().filter(|(name, _)| name == "cards") {
        for part in value.split([',', ' ', '\t', '\n', '\r']).filter(|p| !p.is_empty()) {
            let id =
                part.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| format!("{part:?} is not a card id"))?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        return Err("no card id given".to_owned());
    }
    if ids.len() > MAX_REFETCH_IDS {
        return Err(format!("{} card ids: at most {MAX_REFETCH_IDS} at a time", ids.len()));
    }
    Ok(ids)
}

fn bad_request(text: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{text}\n")).into_response()
}

/// `POST /admin/sync/selective`: the quick actions' selective sync, in the background.
pub(super) async fn sync_selection(
    State(state): State<AppState>,
    Extension(link): Extension<AdminLink>,
    body: Bytes,
) -> Response {
    match quick_selection(&parse_form(&body)) {
        Ok((selection, mode)) => {
            state.start_sync(SyncJob::Selection(selection, mode), "admin page");
            Redirect::to(&link.path(ADMIN_PATH)).into_response()
        }
        Err(e) => bad_request(e),
    }
}

/// `POST /admin/sync/refetch`: these cards refetched through the webhook path, in the background.
pub(super) async fn refetch_cards(
    State(state): State<AppState>,
    Extension(link): Extension<AdminLink>,
    body: Bytes,
) -> Response {
    let ids = match refetch_ids(&parse_form(&body)) {
        Ok(ids) => ids,
        Err(e) => return bad_request(e),
    };
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    state.note(true, format!("refetching card(s) {list} (admin page)"));
    let background = state.clone();
    tokio::spawn(async move {
        match background.0.webhooks.refetch(EntityKind::Cards, &ids).await {
            Ok(report) if report.failed == 0 => background.note(
                true,
                format!("refetched card(s) {list}: {} applied, {} requests", report.applied, report.requests),
            ),
            Ok(report) => background.note(
                false,
                format!(
                    "refetch of card(s) {list}: {} failed (kept in the webhook inbox for a retry), {} applied",
                    report.failed, report.applied
                ),
            ),
            Err(e) => background.note(false, format!("refetch of card(s) {list} failed: {}", Chain(&e))),
        }
    });
    Redirect::to(&link.path(ADMIN_PATH)).into_response()
}

fn database_unavailable(e: &StoreError) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Html(database_unavailable_page(&chain(e)))).into_response()
}

/// `GET /admin/sync/runs?kind=&status=&page=`: the run history.
pub(super) async fn runs_page(
    State(state): State<AppState>,
    Extension(link): Extension<AdminLink>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let filter = match RunFilter::from_query(&params) {
        Ok(filter) => filter,
        Err(e) => return bad_request(e),
    };
    match state.0.store.recent_runs(HISTORY_RUNS).await {
        Ok(runs) => Html(history::runs_page(&runs, &filter, &link, Utc::now())).into_response(),
        Err(e) => database_unavailable(&e),
    }
}

/// `GET /admin/sync/runs/{id}`: one run.
pub(super) async fn run_page(
    State(state): State<AppState>,
    Extension(link): Extension<AdminLink>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else { return (StatusCode::NOT_FOUND, "no such run\n").into_response() };
    match state.0.store.recent_runs(HISTORY_RUNS).await {
        Ok(runs) => match runs.iter().find(|r| r.id == id) {
            Some(run) => Html(history::run_page(run, &link, Utc::now())).into_response(),
            None => (StatusCode::NOT_FOUND, format!("no run {id} among the newest {HISTORY_RUNS}\n")).into_response(),
        },
        Err(e) => database_unavailable(&e),
    }
}

/// The admin page's script (live progress).
pub(super) const APP_JS: &str = include_str!("app.js");

/// `GET /admin/sync/app.js`.
pub(super) async fn app_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], APP_JS)
        .into_response()
}
