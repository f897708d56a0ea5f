//! The admin page's webhooks page: every Kaiten space with the state of its webhook
//! (`GET /admin/sync/webhooks`, read from Kaiten at most once a minute, `?refresh=1` to read again)
//! and a button installing one per space (`POST /admin/sync/webhooks/install`, guarded like the
//! other admin POSTs). Without `--public-url` / `KAITEN_PUBLIC_URL` the button is replaced by a hint.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use chrono::Utc;
use kaiten_client::Secret;
use maud::html;

use super::guard::AdminLink;
use super::html::page;
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
    page(html! {
        header {
            h1 { "kaiten-sync" }
            span.meta { "webhooks · " (Utc::now().format("%Y-%m-%d %H:%M:%S")) " UTC" }
            a href=(link.path(ADMIN_PATH)) { "← admin page" }
        }
        main {
            section.wide #webhooks {
                h2 { "Kaiten webhooks" }
                dl {
                    dt { "Webhook URL" }
                    dd { code { (target.masked()) } }
                    dt { "Checked" }
                    dd {
                        (reading.at.elapsed().as_secs()) " s ago (kept for " (HOOKS_TTL.as_secs()) " s) · "
                        a href=(link.path(&format!("{HOOKS_PATH}?refresh=1"))) { "check again" }
                    }
                }
                @if let Some(note) = &reading.note {
                    p #hooks-note { (note) }
                }
                @match &reading.rows {
                    Ok(rows) => {
                        table {
                            thead { tr { th.num { "Space" } th { "Title" } th { "Webhook" } } }
                            tbody {
                                @for row in rows {
                                    tr data-space=(row.space_id) data-state=(row.state.label()) {
                                        td.num { (row.space_id) }
                                        td { (row.title) }
                                        td.scope {
                                            span class={ "badge " (badge(&row.state)) } { (row.state.label()) }
                                            " " (row.state.to_string())
                                            @if let Some(action) = row.action { " (" (action) ")" }
                                        }
                                    }
                                }
                            }
                        }
                        p.muted { (summary(rows)) }
                    },
                    Err(error) => p.failed { "Cannot read the spaces from Kaiten: " (error) },
                }
                @match target.url() {
                    Some(_) => {
                        form method="post" action=(link.path(&format!("{HOOKS_PATH}/install"))) {
                            button.primary type="submit" { "Install on every space" }
                        }
                        p.muted {
                            "Creates the webhook where a space has none, repoints one that points elsewhere \
                             and re-enables a disabled one. Spaces whose plan lacks webhooks (402) or where the \
                             token's user is not a space admin (403) are left as they are."
                        }
                    },
                    None => p.muted #hooks-hint {
                        "To install webhooks from here, start " code { "serve" } " with "
                        code { "--public-url https://your-host" } " (or set " code { (ENV_PUBLIC_URL) } "): \
                         the address Kaiten reaches this server at. Or run "
                        code { "kaiten-sync webhooks install --url https://your-host" } "."
                    },
                }
            }
        }
    })
}
