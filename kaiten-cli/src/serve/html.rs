//! The admin page's HTML: the template, escaping, and each section's rendering.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use kaiten_sync::{EntityKind, EntityState, InboxEntry, InboxStats, RunRecord, TableCount};
use serde_json::Value;

use super::guard::AdminLink;
use super::{Current, LogLine, NextRuns, ADMIN_PATH};

pub(super) const ADMIN_TEMPLATE: &str = include_str!("admin.html");

/// HTML-escapes text for element content and attribute values.
pub(super) fn esc(text: &str) -> String {
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
    pub(super) fn render(&self) -> String {
        let mut html = String::new();
        let _ = write!(
            html,
            "<header><h1>kaiten-sync</h1><span class=\"meta\">{} store · {} UTC</span></header>\n<main>\n",
            esc(self.backend),
            self.now.format("%Y-%m-%d %H:%M:%S")
        );
        self.sync_section(&mut html);
        self.tables_section(&mut html);
        self.progress_section(&mut html);
        self.quick_actions_section(&mut html);
        self.entities_section(&mut html);
        self.inbox_section(&mut html);
        self.runs_section(&mut html);
        html.push_str("</main>\n");
        // The live progress: a script of this origin (the policy allows no inline script) polling
        // `status.json` (its URL, with the page's token, in a data attribute).
        let _ = writeln!(
            html,
            "<script src=\"{ADMIN_PATH}/app.js\" data-status=\"{}\" defer></script>",
            esc(&self.link.path(&format!("{ADMIN_PATH}/status.json")))
        );
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
                    "<dt>Now</dt><dd id=\"now\"><span class=\"badge running\">running</span> {} ({}) since {}</dd>",
                    esc(&c.what),
                    esc(c.trigger),
                    relative(c.since, self.now).replace(" ago", "")
                );
            }
            None => html.push_str("<dt>Now</dt><dd id=\"now\">idle</dd>"),
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
            "<dt>Webhooks</dt><dd><code>POST /api/webhooks/kaiten/&lt;KAITEN_WEBHOOK_SECRET&gt;</code>{}</dd></dl>",
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
            "<section class=\"wide\" id=\"recent-runs\"><h2>Recent runs</h2><table><thead><tr><th class=\"num\">run</th><th>kind</th>\
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
                "<tr id=\"run-{id}\"><td class=\"num\"><a href=\"{href}\">{id}</a></td><td>{kind}</td><td><span class=\"badge {status}\">{status}</span></td>\
                 <td>{started}</td><td class=\"num\">{took}</td><td class=\"num\">{requests}</td><td class=\"num\">{ins}</td>\
                 <td class=\"num\">{upd}</td><td class=\"num\">{unch}</td><td class=\"num\">{del}</td>\
                 <td class=\"scope\">{scope}</td><td class=\"err\">{error}</td></tr>",
                id = run.id,
                href = esc(&self.link.path(&format!("{ADMIN_PATH}/runs/{}", run.id))),
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
        let _ = writeln!(
            html,
            "</tbody></table><p><a href=\"{}\">All runs, filters and the last 14 days →</a> · \
             <a href=\"{}\">Kaiten webhooks of every space →</a></p></section>",
            esc(&self.link.path(&format!("{ADMIN_PATH}/runs"))),
            esc(&self.link.path(&format!("{ADMIN_PATH}/webhooks")))
        );
    }
}

impl Page {
    /// Kind by kind, what the running (or last) run of this process has done; `app.js` redraws
    /// it every second from `status.json`.
    fn progress_section(&self, html: &mut String) {
        html.push_str("<section class=\"wide\"><h2>Progress</h2><div id=\"progress\">");
        html.push_str(&progress_html(self.progress.as_ref(), self.current.is_some()));
        html.push_str("</div></section>\n");
    }

    /// Selective syncs (kinds, a space or a board, incremental or full) and cards refetched by id.
    fn quick_actions_section(&self, html: &mut String) {
        let _ = write!(
            html,
            "<section class=\"wide\" id=\"quick-actions\"><h2>Quick actions</h2>\
             <form method=\"post\" class=\"quick\" id=\"selective\" action=\"{}\"><fieldset><legend>Kinds (none: all)</legend>",
            esc(&self.link.path(&format!("{ADMIN_PATH}/selective")))
        );
        for kind in EntityKind::ALL {
            let name = esc(kind.as_str());
            let _ = write!(html, "<label><input type=\"checkbox\" name=\"only\" value=\"{name}\"> {name}</label> ");
        }
        html.push_str(
            "</fieldset><fieldset><legend>Scope</legend><label>Space <select name=\"space\">\
             <option value=\"\">all spaces</option>",
        );
        for space in &self.spaces {
            let _ = write!(html, "<option value=\"{}\">{} · {}</option>", space.id, esc(&space.title), space.id);
        }
        html.push_str("</select></label> <label>Board <select name=\"board\"><option value=\"\">all boards</option>");
        let mut boards: Vec<&Named> = self.boards.iter().collect();
        boards.sort_by_key(|b| (b.space_id, b.title.to_lowercase(), b.id));
        let mut group: Option<Option<i64>> = None;
        for board in boards {
            if group != Some(board.space_id) {
                if group.is_some() {
                    html.push_str("</optgroup>");
                }
                let space = board.space_id.and_then(|id| self.spaces.iter().find(|s| s.id == id));
                let label = match (space, board.space_id) {
                    (Some(space), _) => space.title.clone(),
                    (None, Some(id)) => format!("space {id}"),
                    (None, None) => "no space".to_owned(),
                };
                let _ = write!(html, "<optgroup label=\"{}\">", esc(&label));
                group = Some(board.space_id);
            }
            let _ = write!(html, "<option value=\"{}\">{} · {}</option>", board.id, esc(&board.title), board.id);
        }
        if group.is_some() {
            html.push_str("</optgroup>");
        }
        html.push_str(
            "</select></label></fieldset><fieldset><legend>Mode</legend>\
             <label><input type=\"radio\" name=\"mode\" value=\"incremental\" checked> incremental</label> \
             <label><input type=\"radio\" name=\"mode\" value=\"full\"> full (marks what a complete listing misses as deleted)</label>\
             </fieldset><button class=\"primary\" type=\"submit\">Sync selection</button></form>\n",
        );
        let _ = writeln!(
            html,
            "<form method=\"post\" class=\"quick\" id=\"refetch\" action=\"{}\"><fieldset><legend>Refetch cards by id</legend>\
             <label>Card ids <input type=\"text\" name=\"cards\" placeholder=\"1234, 5678\" required \
             pattern=\"[0-9, ]+\" inputmode=\"numeric\"></label></fieldset>\
             <button type=\"submit\">Refetch cards</button></form>\
             <p class=\"muted\">Refetching goes through the webhook path: a card Kaiten no longer has is marked deleted.</p></section>",
            esc(&self.link.path(&format!("{ADMIN_PATH}/refetch")))
        );
    }
}

/// The progress table of `status.json`'s `progress` (the same markup `app.js` draws).
pub(super) fn progress_html(progress: Option<&Value>, running: bool) -> String {
    let Some(p) = progress else {
        return "<p class=\"muted\" id=\"progress-summary\">No run of this process yet.</p>".to_owned();
    };
    let num = |v: &Value| v.as_u64().map(|n| n.to_string()).unwrap_or_else(|| "–".into());
    let mut html = String::new();
    let state = match p["finished"].as_str() {
        Some(status) => format!("finished: {status}"),
        None if running => "running".to_owned(),
        None => "stopped".to_owned(),
    };
    let _ = write!(
        html,
        "<p id=\"progress-summary\">Run #{} ({}) {} · {} of {} kinds done · {} requests · {}s elapsed</p>",
        num(&p["run_id"]),
        esc(p["kind"].as_str().unwrap_or("")),
        esc(&state),
        num(&p["kinds_done"]),
        num(&p["kinds_total"]),
        num(&p["requests"]),
        p["elapsed_secs"].as_i64().unwrap_or(0),
    );
    html.push_str(
        "<table><thead><tr><th>kind</th><th>state</th><th class=\"num\">pages</th><th class=\"num\">records</th>\
         <th class=\"num\">new</th><th class=\"num\">changed</th><th class=\"num\">deleted</th>\
         <th class=\"num\">requests</th><th class=\"num\">rate</th><th class=\"num\">estimate</th></tr></thead><tbody>",
    );
    for k in p["kinds"].as_array().into_iter().flatten() {
        let state = k["state"].as_str().unwrap_or("");
        let rate = k["rate_per_sec"].as_f64().map(|r| format!("{r:.1}/s")).unwrap_or_else(|| "–".into());
        let eta = k["eta_secs"].as_f64().map(|s| format!("~{}s left", s as u64)).unwrap_or_else(|| "–".into());
        let _ = write!(
            html,
            "<tr data-kind=\"{kind}\"><td>{kind}</td><td><span class=\"badge {state}\">{state}</span></td>\
             <td class=\"num\">{pages}</td><td class=\"num\">{fetched}</td><td class=\"num\">{ins}</td>\
             <td class=\"num\">{upd}</td><td class=\"num\">{del}</td><td class=\"num\">{req}</td>\
             <td class=\"num\">{rate}</td><td class=\"num\">{eta}</td></tr>",
            kind = esc(k["kind"].as_str().unwrap_or("")),
            state = esc(state),
            pages = num(&k["pages"]),
            fetched = num(&k["fetched"]),
            ins = num(&k["inserted"]),
            upd = num(&k["updated"]),
            del = num(&k["deleted"]),
            req = num(&k["requests"]),
        );
    }
    html.push_str("</tbody></table>");
    html
}
