//! The admin page's HTML: the page shell and each section, as `maud` templates. `maud` escapes
//! every value spliced into a template (text and attribute alike); only the page's own fragments,
//! themselves `maud` markup, are composed unescaped.

use chrono::{DateTime, Utc};
use kaiten_sync::{EntityKind, EntityState, InboxEntry, InboxStats, RunRecord, TableCount};
use maud::{html, Markup};
use serde_json::Value;

use super::guard::AdminLink;
use super::{Current, LogLine, NextRuns, ADMIN_PATH};

/// The page shell (`<head>` with the one `<style>` element the CSP allows by its hash); the
/// content of `<body>` replaces `{{content}}`.
pub(super) const ADMIN_TEMPLATE: &str = include_str!("admin.html");

/// A whole page: the shell with `content` (markup rendered by `maud`, so escaped) as its body.
pub(super) fn page(content: Markup) -> String {
    ADMIN_TEMPLATE.replace("{{content}}", &content.into_string())
}

/// The body of a page saying the database cannot be read, with the error (escaped).
pub(super) fn database_unavailable_page(error: &str) -> String {
    page(html! {
        header { h1 { "kaiten-sync" } }
        main {
            section.wide {
                h2 { "Database unavailable" }
                p.muted { (error) }
            }
        }
    })
}

/// A row of a table of runs (the main page's recent runs, the runs page): the run's number linking
/// to `href`, kind, status, times, requests and counts (`unchanged` too when asked), scope and
/// `error` as the table shows it.
pub(super) fn run_row(run: &RunRecord, href: &str, unchanged: bool, error: &str) -> Markup {
    html! {
        tr id={ "run-" (run.id) } {
            td.num { a href=(href) { (run.id) } }
            td { (run.kind.as_str()) }
            td { (status_badge(run.status.as_str())) }
            td { (when(Some(run.started_at))) }
            td.num { (took(run)) }
            td.num { (run.api_requests) }
            td.num { (run.total(|s| s.inserted)) }
            td.num { (run.total(|s| s.updated)) }
            @if unchanged {
                td.num { (run.total(|s| s.unchanged)) }
            }
            td.num { (run.total(|s| s.deleted)) }
            td.scope { (run.scope.as_deref().unwrap_or("")) }
            td.err { (error) }
        }
    }
}

pub(super) fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| "–".to_owned())
}

pub(super) fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
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

pub(super) struct Page {
    pub(super) backend: &'static str,
    pub(super) counts: Vec<TableCount>,
    pub(super) states: Vec<EntityState>,
    pub(super) runs: Vec<RunRecord>,
    pub(super) inbox: InboxStats,
    pub(super) failed: Vec<InboxEntry>,
    pub(super) now: DateTime<Utc>,
    pub(super) current: Option<Current>,
    pub(super) next: NextRuns,
    pub(super) schedule: String,
    pub(super) log: Vec<LogLine>,
    pub(super) link: AdminLink,
    pub(super) hmac_header: Option<String>,
    /// The run this process runs (or ran last) as `status.json` shows it (`progress`).
    pub(super) progress: Option<Value>,
    /// Stored spaces (id, title) for the quick actions.
    pub(super) spaces: Vec<Named>,
    /// Stored boards for the quick actions.
    pub(super) boards: Vec<Named>,
}

/// A stored space or board offered in a select: id, title, and the board's space.
#[derive(Debug, Clone)]
pub(super) struct Named {
    pub(super) id: i64,
    pub(super) title: String,
    pub(super) space_id: Option<i64>,
}

impl Page {
    /// A path under the admin page, with the page's token.
    fn to(&self, rest: &str) -> String {
        self.link.path(&format!("{ADMIN_PATH}{rest}"))
    }

    pub(super) fn render(&self) -> String {
        page(html! {
            header {
                h1 { "kaiten-sync" }
                span.meta { (self.backend) " store · " (self.now.format("%Y-%m-%d %H:%M:%S")) " UTC" }
            }
            main {
                (self.sync_section())
                (self.tables_section())
                (self.progress_section())
                (self.quick_actions_section())
                (self.entities_section())
                (self.inbox_section())
                (self.runs_section())
            }
            // The live progress: a script of this origin (the policy allows no inline script)
            // polling `status.json` (its URL, with the page's token, in a data attribute).
            script src={ (ADMIN_PATH) "/app.js" } data-status=(self.to("/status.json")) defer {}
        })
    }

    fn sync_section(&self) -> Markup {
        let next = |t: Option<DateTime<Utc>>| match t {
            Some(t) if t <= self.now => format!("{} UTC (due now)", when(Some(t))),
            Some(t) => format!("{} UTC ({})", when(Some(t)), relative(t, self.now)),
            None => "–".to_owned(),
        };
        html! {
            section {
                h2 { "Sync" }
                form method="post" action=(self.to("/incremental")) {
                    button.primary type="submit" { "Run incremental sync" }
                }
                form method="post" action=(self.to("/full")) {
                    button type="submit" { "Run full sync" }
                }
                dl {
                    dt { "Now" }
                    @match &self.current {
                        Some(c) => dd #now {
                            span class="badge running" { "running" }
                            " " (c.what) " (" (c.trigger) ") since " (relative(c.since, self.now).replace(" ago", ""))
                        },
                        None => dd #now { "idle" },
                    }
                    dt { "Schedule" }
                    dd { (self.schedule) }
                    dt { "Next incremental" }
                    dd { (next(self.next.incremental)) }
                    dt { "Next full" }
                    dd { (next(self.next.full)) }
                    dt { "Webhooks" }
                    dd {
                        code { "POST /api/webhooks/kaiten/<KAITEN_WEBHOOK_SECRET>" }
                        @if let Some(h) = &self.hmac_header {
                            " with an HMAC in " code { (h) }
                        }
                    }
                }
                @if !self.log.is_empty() {
                    ul.log {
                        @for line in &self.log {
                            li class=[(!line.ok).then_some("bad")] { (line.at.format("%H:%M:%S")) " " (line.text) }
                        }
                    }
                }
            }
        }
    }

    fn tables_section(&self) -> Markup {
        html! {
            section {
                h2 { "Tables" }
                table {
                    thead { tr { th { "table" } th.num { "rows" } th.num { "deleted" } } }
                    tbody {
                        @for c in &self.counts {
                            tr { td { (c.table) } td.num { (c.live) } td.num { (c.deleted) } }
                        }
                    }
                }
            }
        }
    }

    fn entities_section(&self) -> Markup {
        html! {
            section.wide {
                h2 { "Entities" }
                table {
                    thead {
                        tr {
                            th { "entity" } th { "last full sync" } th { "last incremental" } th { "cursor" }
                            th.num { "rows" } th { "unfinished" }
                        }
                    }
                    tbody {
                        @if self.states.is_empty() {
                            tr { td colspan="6" class="muted" { "nothing synced yet" } }
                        }
                        @for s in &self.states {
                            tr {
                                td { (s.kind.as_str()) }
                                td { (when(s.last_full_sync_at)) }
                                td { (when(s.last_incremental_sync_at)) }
                                td {
                                    @match s.cursor {
                                        Some(c) => (c.format("%Y-%m-%d %H:%M:%S%.3f")),
                                        None => "–",
                                    }
                                }
                                td.num { (s.row_count.map(|n| n.to_string()).unwrap_or_else(|| "–".into())) }
                                td { (if s.resume.is_some() { "yes" } else { "–" }) }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The webhook inbox: what waits to be applied, and what gave up (with its error).
    fn inbox_section(&self) -> Markup {
        let oldest = self.inbox.oldest_pending.map(|t| relative(t, self.now)).unwrap_or_else(|| "–".into());
        html! {
            section.wide {
                h2 { "Webhook inbox" }
                p { (self.inbox.pending) " pending (oldest received " (oldest) "), " (self.inbox.failed) " failed" }
                @if !self.failed.is_empty() {
                    table {
                        thead {
                            tr {
                                th { "kind" } th.num { "id" } th { "last event" } th.num { "deliveries" }
                                th.num { "attempts" } th { "received" } th { "failed" } th { "error" }
                            }
                        }
                        tbody {
                            @for e in &self.failed {
                                tr {
                                    td { (e.kind.as_str()) }
                                    td.num { (e.entity_id) }
                                    td { (e.event) }
                                    td.num { (e.deliveries) }
                                    td.num { (e.attempts) }
                                    td { (when(Some(e.received_at))) }
                                    td { (when(e.failed_at)) }
                                    td.err { (e.last_error.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                    form method="post" action=(self.to("/inbox/retry")) {
                        button { "Retry failed deliveries" }
                    }
                }
            }
        }
    }

    fn runs_section(&self) -> Markup {
        html! {
            section.wide #recent-runs {
                h2 { "Recent runs" }
                table {
                    thead {
                        tr {
                            th.num { "run" } th { "kind" } th { "status" } th { "started" } th.num { "took" }
                            th.num { "requests" } th.num { "new" } th.num { "changed" } th.num { "unchanged" }
                            th.num { "deleted" } th { "scope" } th { "error" }
                        }
                    }
                    tbody {
                        @if self.runs.is_empty() {
                            tr { td colspan="12" class="muted" { "no runs yet" } }
                        }
                        @for run in &self.runs {
                            (run_row(run, &self.to(&format!("/runs/{}", run.id)), true, run.error.as_deref().unwrap_or("")))
                        }
                    }
                }
                p {
                    a href=(self.to("/runs")) { "All runs, filters and the last 14 days →" }
                    " · "
                    a href=(self.to("/webhooks")) { "Kaiten webhooks of every space →" }
                }
            }
        }
    }
}

/// `<span class="badge {class}">{text}</span>`: a run's or an entity kind's state.
pub(super) fn badge(class: &str, text: &str) -> Markup {
    html! { span class={ "badge " (class) } { (text) } }
}

/// A status shown as a badge of its own class.
pub(super) fn status_badge(status: &str) -> Markup {
    badge(status, status)
}

/// How long a run took (`–` while it runs).
pub(super) fn took(run: &RunRecord) -> String {
    run.finished_at
        .map(|f| format!("{:.1}s", (f - run.started_at).num_milliseconds() as f64 / 1000.0))
        .unwrap_or_else(|| "–".into())
}

impl Page {
    /// Kind by kind, what the running (or last) run of this process has done; `app.js` redraws
    /// it every second from `status.json`.
    fn progress_section(&self) -> Markup {
        html! {
            section.wide {
                h2 { "Progress" }
                div #progress { (progress_html(self.progress.as_ref(), self.current.is_some())) }
            }
        }
    }

    /// Selective syncs (kinds, a space or a board, incremental or full) and cards refetched by id.
    fn quick_actions_section(&self) -> Markup {
        let mut boards: Vec<&Named> = self.boards.iter().collect();
        boards.sort_by_key(|b| (b.space_id, b.title.to_lowercase(), b.id));
        // The boards grouped by space (in the order sorted above), each group labelled.
        let mut groups: Vec<(String, Vec<&Named>)> = Vec::new();
        let mut group: Option<Option<i64>> = None;
        for board in boards {
            if group != Some(board.space_id) {
                let space = board.space_id.and_then(|id| self.spaces.iter().find(|s| s.id == id));
                let label = match (space, board.space_id) {
                    (Some(space), _) => space.title.clone(),
                    (None, Some(id)) => format!("space {id}"),
                    (None, None) => "no space".to_owned(),
                };
                groups.push((label, Vec::new()));
                group = Some(board.space_id);
            }
            if let Some((_, members)) = groups.last_mut() {
                members.push(board);
            }
        }
        html! {
            section.wide #quick-actions {
                h2 { "Quick actions" }
                form method="post" class="quick" id="selective" action=(self.to("/selective")) {
                    fieldset {
                        legend { "Kinds (none: all)" }
                        @for kind in EntityKind::ALL {
                            label { input type="checkbox" name="only" value=(kind.as_str()); " " (kind.as_str()) } " "
                        }
                    }
                    fieldset {
                        legend { "Scope" }
                        label {
                            "Space "
                            select name="space" {
                                option value="" { "all spaces" }
                                @for space in &self.spaces {
                                    option value=(space.id) { (space.title) " · " (space.id) }
                                }
                            }
                        }
                        " "
                        label {
                            "Board "
                            select name="board" {
                                option value="" { "all boards" }
                                @for (label, members) in &groups {
                                    optgroup label=(label) {
                                        @for board in members {
                                            option value=(board.id) { (board.title) " · " (board.id) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    fieldset {
                        legend { "Mode" }
                        label { input type="radio" name="mode" value="incremental" checked; " incremental" }
                        " "
                        label {
                            input type="radio" name="mode" value="full";
                            " full (marks what a complete listing misses as deleted)"
                        }
                    }
                    button.primary type="submit" { "Sync selection" }
                }
                form method="post" class="quick" id="refetch" action=(self.to("/refetch")) {
                    fieldset {
                        legend { "Refetch cards by id" }
                        label {
                            "Card ids "
                            input type="text" name="cards" placeholder="1234, 5678" required pattern="[0-9, ]+"
                                inputmode="numeric";
                        }
                    }
                    button type="submit" { "Refetch cards" }
                }
                p.muted { "Refetching goes through the webhook path: a card Kaiten no longer has is marked deleted." }
            }
        }
    }
}

/// The progress table of `status.json`'s `progress` (the same markup `app.js` draws).
pub(super) fn progress_html(progress: Option<&Value>, running: bool) -> Markup {
    let Some(p) = progress else {
        return html! { p.muted #progress-summary { "No run of this process yet." } };
    };
    let num = |v: &Value| v.as_u64().map(|n| n.to_string()).unwrap_or_else(|| "–".into());
    let rate = |v: &Value| v.as_f64().map(|r| format!("{r:.1}/s")).unwrap_or_else(|| "–".into());
    let eta = |v: &Value| v.as_f64().map(|s| format!("~{}s left", s as u64)).unwrap_or_else(|| "–".into());
    let state = match p["finished"].as_str() {
        Some(status) => format!("finished: {status}"),
        None if running => "running".to_owned(),
        None => "stopped".to_owned(),
    };
    html! {
        p #progress-summary {
            "Run #" (num(&p["run_id"])) " (" (p["kind"].as_str().unwrap_or("")) ") " (state) " · "
            (num(&p["kinds_done"])) " of " (num(&p["kinds_total"])) " kinds done · "
            (num(&p["requests"])) " requests · " (p["elapsed_secs"].as_i64().unwrap_or(0)) "s elapsed"
        }
        table {
            thead {
                tr {
                    th { "kind" } th { "state" } th.num { "pages" } th.num { "records" } th.num { "new" }
                    th.num { "changed" } th.num { "deleted" } th.num { "requests" } th.num { "rate" }
                    th.num { "estimate" }
                }
            }
            tbody {
                @for k in p["kinds"].as_array().into_iter().flatten() {
                    @let kind = k["kind"].as_str().unwrap_or("");
                    tr data-kind=(kind) {
                        td { (kind) }
                        td { (status_badge(k["state"].as_str().unwrap_or(""))) }
                        td.num { (num(&k["pages"])) }
                        td.num { (num(&k["fetched"])) }
                        td.num { (num(&k["inserted"])) }
                        td.num { (num(&k["updated"])) }
                        td.num { (num(&k["deleted"])) }
                        td.num { (num(&k["requests"])) }
                        td.num { (rate(&k["rate_per_sec"])) }
                        td.num { (eta(&k["eta_secs"])) }
                    }
                }
            }
        }
    }
}
