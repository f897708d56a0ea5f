//! The admin page's webhooks page: every Kaiten space with the state of its webhook
//! (`GET /admin/sync/webhooks`, read from Kaiten at most once a minute, `?refresh=1` to read again)
//! and a button installing one per space (`POST /admin/sync/webhooks/install`, guarded like the
//! other admin POSTs). Without `--public-url` / `KAITEN_PUBLIC_URL` the button is replaced by a hint.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use chrono::Utc;
use kaiten_client::Secret;

use super::guard::AdminLink;
use super::html::{esc, ADMIN_TEMPLATE};
use super::{AppState, ADMIN_PATH};
use crate::webhooks::{apply, summary, HookState, HookTarget, Plan, SpaceHook, ENV_PUBLIC_URL};

/// The webhooks page.
pub(super) const HOOKS_PATH: &str = "/admin/sync/webhooks";
/// How long the spaces' webhook states are reused before Kaiten is asked again.
pub(super) const HOOKS_TTL: Duration = Duration::from_secs(60);

/// What the webhooks page needs: the secret, the public URL, the last reading.
pub(super) struct HookAdmin {
    secret: Secret,
    public_url: Mutex<Option<String>>,
    cache: Mutex<Option<HookReading>>,
    /// One reading or install at a time.
    busy: tokio::sync::Mutex<()>,
}

/// The spaces' states as last read (or as an install left them).
#[derive(Clone)]
struct HookReading {
    at: Instant,
    rows: Result<Vec<SpaceHook>, String>,
    /// What the last install did, in words.
    note: Option<String>,
}

impl HookAdmin {
    pub(super) fn new(secret: &Secret) -> Self {
        HookAdmin {
            secret: secret.clone(),
            public_url: Mutex::new(None),
            cache: Mutex::new(None),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    fn target(&self) -> HookTarget {
        HookTarget::new(self.public_url.lock().unwrap().as_deref(), &self.secret)
    }

    fn fresh(&self) -> Option<HookReading> {
        self.cache.lock().unwrap().clone().filter(|r| r.at.elapsed() < HOOKS_TTL)
    }
}

impl AppState {
    /// Sets the public base URL Kaiten reaches this server at (checked with
    /// [`crate::webhooks::public_url`]); `None` hides the install button.
    pub fn set_public_url(&self, url: Option<String>) {
        *self.0.hooks.public_url.lock().unwrap() = url;
        *self.0.hooks.cache.lock().unwrap() = None;
    }

    /// The spaces' webhook states: the cached reading when younger than [`HOOKS_TTL`] (unless
    /// `refresh`), else read from Kaiten.
    async fn hook_states(&self, refresh: bool) -> HookReading {
        let hooks = &self.0.hooks;
        if !refresh {
            if let Some(reading) = hooks.fresh() {
                return reading;
            }
        }
        let _busy = hooks.busy.lock().await;
        if let Some(reading) = hooks.fresh().filter(|_| !refresh) {
            return reading;
        }
        let rows = apply(self.0.engine.client(), &hooks.target(), Plan::Status).await.map_err(|e| format!("{e:#}"));
        let reading = HookReading { at: Instant::now(), rows, note: None };
        *hooks.cache.lock().unwrap() = Some(reading.clone());
        reading
    }
}

/// `GET /admin/sync/webhooks[?refresh=1]`.
pub(super) async fn webhooks_page(
    State(state): State<AppState>,
    Extension(link): Extension<AdminLink>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let refresh = params.get("refresh").is_some_and(|v| v == "1");
    let reading = state.hook_states(refresh).await;
    let target = state.0.hooks.target();
    Html(render(&reading, &target, &link)).into_response()
}

/// `POST /admin/sync/webhooks/install`: one webhook per space pointing here (created, repointed or
/// re-enabled); spaces refused by the plan or the role are reported, not failed.
pub(super) async fn install_webhooks(State(state): State<AppState>, Extension(link): Extension<AdminLink>) -> Response {
    let hooks = &state.0.hooks;
    let target = hooks.target();
    if target.url().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            format!("the public URL is not set: start serve with --public-url or {ENV_PUBLIC_URL}\n"),
        )
            .into_response();
    }
    let _busy = hooks.busy.lock().await;
    let rows = apply(state.0.engine.client(), &target, Plan::Install).await.map_err(|e| format!("{e:#}"));
    let note = match &rows {
        Ok(rows) => {
            let failed = rows.iter().filter(|r| r.state.is_failure()).count();
            let text = format!("webhook install (admin page): {}", summary(rows));
            state.note(failed == 0, text.clone());
            text
        }
        Err(e) => {
            let text = format!("webhook install (admin page) failed: {e}");
            state.note(false, text.clone());
            text
        }
    };
    *hooks.cache.lock().unwrap() = Some(HookReading { at: Instant::now(), rows, note: Some(note) });
    Redirect::to(&link.path(HOOKS_PATH)).into_response()
}

fn badge(state: &HookState) -> &'static str {
    match state {
        HookState::Installed => "succeeded",
        HookState::Failed(_) => "failed",
        HookState::NotInPlan(_) | HookState::NoPermission => "skipped",
        HookState::None | HookState::Disabled | HookState::Elsewhere { .. } => "",
    }
}

fn render(reading: &HookReading, target: &HookTarget, link: &AdminLink) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<header><h1>kaiten-sync</h1><span class=\"meta\">webhooks · {} UTC</span><a href=\"{}\">← admin page</a></header>\n<main>\n\
         <section class=\"wide\" id=\"webhooks\"><h2>Kaiten webhooks</h2>\n<dl><dt>Webhook URL</dt><dd><code>{}</code></dd>\
         <dt>Checked</dt><dd>{} s ago (kept for {} s) · <a href=\"{}\">check again</a></dd></dl>\n",
        Utc::now().format("%Y-%m-%d %H:%M:%S"),
        esc(&link.path(ADMIN_PATH)),
        esc(&target.masked()),
        reading.at.elapsed().as_secs(),
        HOOKS_TTL.as_secs(),
        esc(&link.path(&format!("{HOOKS_PATH}?refresh=1"))),
    );
    if let Some(note) = &reading.note {
        let _ = writeln!(html, "<p id=\"hooks-note\">{}</p>", esc(note));
    }
    match &reading.rows {
        Ok(rows) => {
            html.push_str(
                "<table><thead><tr><th class=\"num\">Space</th><th>Title</th><th>Webhook</th></tr></thead><tbody>\n",
            );
            for row in rows {
                let action = row.action.map(|a| format!(" ({a})")).unwrap_or_default();
                let _ = writeln!(
                    html,
                    "<tr data-space=\"{id}\" data-state=\"{label}\"><td class=\"num\">{id}</td><td>{title}</td>\
                     <td class=\"scope\"><span class=\"badge {class}\">{label}</span> {text}{action}</td></tr>",
                    id = row.space_id,
                    label = esc(row.state.label()),
                    title = esc(&row.title),
                    class = badge(&row.state),
                    text = esc(&row.state.to_string()),
                    action = esc(&action),
                );
            }
            let _ = writeln!(html, "</tbody></table><p class=\"muted\">{}</p>", esc(&summary(rows)));
        }
        Err(error) => {
            let _ = writeln!(html, "<p class=\"failed\">Cannot read the spaces from Kaiten: {}</p>", esc(error));
        }
    }
    match target.url() {
        Some(_) => {
            let _ = writeln!(
                html,
                "<form method=\"post\" action=\"{}\"><button class=\"primary\" type=\"submit\">Install on every space</button></form>\
                 <p class=\"muted\">Creates the webhook where a space has none, repoints one that points elsewhere and \
                 re-enables a disabled one. Spaces whose plan lacks webhooks (402) or where the token's user is not a \
                 space admin (403) are left as they are.</p>",
                esc(&link.path(&format!("{HOOKS_PATH}/install")))
            );
        }
        None => {
            let _ = writeln!(
                html,
                "<p class=\"muted\" id=\"hooks-hint\">To install webhooks from here, start <code>serve</code> with \
                 <code>--public-url https://your-host</code> (or set <code>{ENV_PUBLIC_URL}</code>): the address Kaiten \
                 reaches this server at. Or run <code>kaiten-sync webhooks install --url https://your-host</code>.</p>"
            );
        }
    }
    html.push_str("</section>\n</main>\n");
    ADMIN_TEMPLATE.replace("{{content}}", &html)
}
