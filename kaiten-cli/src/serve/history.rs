//! The run history: runs paged and filtered by kind and status, a page per run (its error in full,
//! per-entity counts, requests), and the last 14 days as a chart drawn here (inline SVG).
//!
//! Filtering is done in memory over the newest [`HISTORY_RUNS`] runs (`Store::recent_runs`): the
//! run log keeps 30 days and at least the newest 1,000 runs, so this covers it in practice without a
//! store query per filter.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use kaiten_sync::{RunKind, RunRecord, RunStatus};

use super::guard::AdminLink;
use super::html::{esc, when, ADMIN_TEMPLATE};
use super::ADMIN_PATH;

/// Runs read for the history pages and the chart (newest first).
pub(super) const HISTORY_RUNS: usize = 2_000;
/// Runs per page of `/admin/sync/runs`.
pub(super) const RUNS_PER_PAGE: usize = 25;
/// Days in the chart.
pub(super) const CHART_DAYS: i64 = 14;

/// The filters of `/admin/sync/runs?kind=&status=&page=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RunFilter {
    pub(super) kind: Option<RunKind>,
    pub(super) status: Option<RunStatus>,
    /// 1-based.
    pub(super) page: usize,
}

impl RunFilter {
    /// The filters of a query string; an unknown kind or status, or a page that is not a positive
    /// number, is an error naming it.
    pub(super) fn from_query(params: &HashMap<String, String>) -> Result<Self, String> {
        let get = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let kind = get("kind")
            .map(|k| {
                RunKind::parse(k)
                    .ok_or_else(|| format!("unknown run kind {k:?}: full, incremental, selective or webhook"))
            })
            .transpose()?;
        let status = get("status")
            .map(|s| {
                RunStatus::parse(s)
                    .ok_or_else(|| format!("unknown run status {s:?}: running, succeeded, failed or interrupted"))
            })
            .transpose()?;
        let page = match get("page") {
            None => 1,
            Some(p) => {
                p.parse::<usize>().ok().filter(|p| *p >= 1).ok_or_else(|| format!("page {p:?} is not 1 or more"))?
            }
        };
        Ok(Self { kind, status, page })
    }

    fn matches(&self, run: &RunRecord) -> bool {
        self.kind.is_none_or(|k| run.kind == k) && self.status.is_none_or(|s| run.status == s)
    }

    /// The query of this filter on another page.
    fn href(&self, link: &AdminLink, page: usize) -> String {
        link.query(
            &format!("{ADMIN_PATH}/runs"),
            &[
                ("kind", self.kind.map(|k| k.as_str().to_owned()).unwrap_or_default()),
                ("status", self.status.map(|s| s.as_str().to_owned()).unwrap_or_default()),
                ("page", if page > 1 { page.to_string() } else { String::new() }),
            ],
        )
    }
}

fn took(run: &RunRecord) -> String {
    run.finished_at
        .map(|f| format!("{:.1}s", (f - run.started_at).num_milliseconds() as f64 / 1000.0))
        .unwrap_or_else(|| "–".into())
}

fn header(html: &mut String, title: &str, link: &AdminLink, now: DateTime<Utc>) {
    let _ = write!(
        html,
        "<header><h1>kaiten-sync</h1><span class=\"meta\">{} · {} UTC</span><a href=\"{}\">← admin page</a></header>\n<main>\n",
        esc(title),
        now.format("%Y-%m-%d %H:%M:%S"),
        esc(&link.path(ADMIN_PATH)),
    );
}

/// `/admin/sync/runs`: the chart, the filters, one page of matching runs and the pager.
pub(super) fn runs_page(runs: &[RunRecord], filter: &RunFilter, link: &AdminLink, now: DateTime<Utc>) -> String {
    let mut html = String::new();
    header(&mut html, "runs", link, now);
    html.push_str("<section class=\"wide\"><h2>The last 14 days</h2>\n");
    html.push_str(&chart_svg(runs, now));
    html.push_str("</section>\n");

    let matching: Vec<&RunRecord> = runs.iter().filter(|r| filter.matches(r)).collect();
    let pages = matching.len().div_ceil(RUNS_PER_PAGE).max(1);
    let page = filter.page.min(pages);
    let _ = write!(
        html,
        "<section class=\"wide\" id=\"runs\"><h2>Runs</h2><form method=\"get\" class=\"quick\" id=\"run-filter\" action=\"{}/runs\">{}\
         <label>Kind <select name=\"kind\"><option value=\"\">all kinds</option>",
        ADMIN_PATH,
        link.hidden_field()
    );
    for kind in [RunKind::Full, RunKind::Incremental, RunKind::Selective, RunKind::Webhook] {
        let selected = if filter.kind == Some(kind) { " selected" } else { "" };
        let _ = write!(html, "<option value=\"{0}\"{selected}>{0}</option>", kind.as_str());
    }
    html.push_str("</select></label> <label>Status <select name=\"status\"><option value=\"\">all statuses</option>");
    for status in [RunStatus::Running, RunStatus::Succeeded, RunStatus::Failed, RunStatus::Interrupted] {
        let selected = if filter.status == Some(status) { " selected" } else { "" };
        let _ = write!(html, "<option value=\"{0}\"{selected}>{0}</option>", status.as_str());
    }
    html.push_str("</select></label> <button type=\"submit\">Filter</button></form>\n");
    html.push_str(
        "<table><thead><tr><th class=\"num\">run</th><th>kind</th><th>status</th><th>started</th>\
         <th class=\"num\">took</th><th class=\"num\">requests</th><th class=\"num\">new</th>\
         <th class=\"num\">changed</th><th class=\"num\">deleted</th><th>scope</th><th>error</th></tr></thead><tbody>\n",
    );
    let shown = matching.iter().skip((page - 1) * RUNS_PER_PAGE).take(RUNS_PER_PAGE);
    if matching.is_empty() {
        html.push_str("<tr><td colspan=\"11\" class=\"muted\">no run matches</td></tr>\n");
    }
    for run in shown {
        let mut error = run.error.clone().unwrap_or_default();
        if error.chars().count() > 120 {
            error = error.chars().take(117).collect::<String>() + "...";
        }
        let status = run.status.as_str();
        let _ = writeln!(
            html,
            "<tr id=\"run-{id}\"><td class=\"num\"><a href=\"{href}\">{id}</a></td><td>{kind}</td>\
             <td><span class=\"badge {status}\">{status}</span></td><td>{started}</td><td class=\"num\">{took}</td>\
             <td class=\"num\">{requests}</td><td class=\"num\">{ins}</td><td class=\"num\">{upd}</td>\
             <td class=\"num\">{del}</td><td class=\"scope\">{scope}</td><td class=\"err\">{error}</td></tr>",
            id = run.id,
            href = esc(&link.path(&format!("{ADMIN_PATH}/runs/{}", run.id))),
            kind = esc(run.kind.as_str()),
            started = when(Some(run.started_at)),
            took = took(run),
            requests = run.api_requests,
            ins = run.total(|s| s.inserted),
            upd = run.total(|s| s.updated),
            del = run.total(|s| s.deleted),
            scope = esc(run.scope.as_deref().unwrap_or("")),
            error = esc(&error),
        );
    }
    let plural = if matching.len() == 1 { "" } else { "s" };
    let _ = write!(html, "</tbody></table><p class=\"pager\">{} run{plural} · page {page} of {pages}", matching.len());
    if page > 1 {
        let _ = write!(html, " · <a href=\"{}\" rel=\"prev\">← newer</a>", esc(&filter.href(link, page - 1)));
    }
    if page < pages {
        let _ = write!(html, " · <a href=\"{}\" rel=\"next\">older →</a>", esc(&filter.href(link, page + 1)));
    }
    let _ = writeln!(
        html,
        "</p><p class=\"muted\">The newest {HISTORY_RUNS} runs of the run log are searched.</p></section>\n</main>"
    );
    ADMIN_TEMPLATE.replace("{{content}}", &html)
}

/// `/admin/sync/runs/{id}`: one run, its error in full, its counts per entity kind.
pub(super) fn run_page(run: &RunRecord, link: &AdminLink, now: DateTime<Utc>) -> String {
    let mut html = String::new();
    header(&mut html, &format!("run {}", run.id), link, now);
    let status = run.status.as_str();
    let _ = write!(
        html,
        "<section class=\"wide\" id=\"run\"><h2>Run #{id} <span class=\"badge {status}\">{status}</span></h2><dl>\
         <dt>Kind</dt><dd>{kind}</dd><dt>Started</dt><dd>{started} UTC</dd><dt>Finished</dt><dd>{finished}</dd>\
         <dt>Took</dt><dd>{took}</dd><dt>Entities</dt><dd>{entities}</dd><dt>Scope</dt><dd>{scope}</dd>\
         <dt>Requests to Kaiten</dt><dd>{requests} ({retries} retries)</dd></dl>",
        id = run.id,
        kind = esc(run.kind.as_str()),
        started = when(Some(run.started_at)),
        finished = run.finished_at.map(|f| format!("{} UTC", when(Some(f)))).unwrap_or_else(|| "–".into()),
        took = took(run),
        entities = esc(&run.entities.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")),
        scope = esc(run.scope.as_deref().unwrap_or("everything")),
        requests = run.api_requests,
        retries = run.retries,
    );
    match &run.error {
        Some(error) => {
            let _ = write!(html, "<h2>Error</h2><pre class=\"err\" id=\"run-error\">{}</pre>", esc(error));
        }
        None => html.push_str("<p class=\"muted\">No error.</p>"),
    }
    html.push_str(
        "</section>\n<section class=\"wide\"><h2>Per entity</h2><table id=\"run-entities\"><thead><tr><th>entity</th>\
         <th class=\"num\">pages</th><th class=\"num\">fetched</th><th class=\"num\">new</th><th class=\"num\">changed</th>\
         <th class=\"num\">unchanged</th><th class=\"num\">deleted</th></tr></thead><tbody>\n",
    );
    if run.stats.is_empty() {
        html.push_str("<tr><td colspan=\"7\" class=\"muted\">no entity finished in this run</td></tr>\n");
    }
    for (kind, s) in &run.stats {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(kind.as_str()),
            s.pages,
            s.fetched,
            s.inserted,
            s.updated,
            s.unchanged,
            s.deleted
        );
    }
    let _ = writeln!(
        html,
        "</tbody><tfoot><tr><th>total</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th>\
         <th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th></tr></tfoot></table>\
         <p><a href=\"{}\">All runs →</a></p></section>\n</main>",
        run.total(|s| s.pages),
        run.total(|s| s.fetched),
        run.total(|s| s.inserted),
        run.total(|s| s.updated),
        run.total(|s| s.unchanged),
        run.total(|s| s.deleted),
        esc(&link.path(&format!("{ADMIN_PATH}/runs"))),
    );
    ADMIN_TEMPLATE.replace("{{content}}", &html)
}

/// One day of the chart.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Day {
    pub(super) runs: u64,
    /// Seconds spent in finished runs.
    pub(super) seconds: f64,
    /// Rows inserted, updated or marked deleted.
    pub(super) changed: u64,
    /// Runs that failed or were interrupted.
    pub(super) failures: u64,
}

/// The last [`CHART_DAYS`] days (UTC, oldest first, today last) from runs started in them.
pub(super) fn days(runs: &[RunRecord], now: DateTime<Utc>) -> Vec<(NaiveDate, Day)> {
    let today = now.date_naive();
    let mut days: Vec<(NaiveDate, Day)> =
        (0..CHART_DAYS).rev().map(|back| (today - Duration::days(back), Day::default())).collect();
    for run in runs {
        let date = run.started_at.date_naive();
        let Some((_, day)) = days.iter_mut().find(|(d, _)| *d == date) else { continue };
        day.runs += 1;
        if let Some(finished) = run.finished_at {
            day.seconds += (finished - run.started_at).num_milliseconds().max(0) as f64 / 1000.0;
        }
        day.changed += run.total(|s| s.inserted + s.updated + s.deleted);
        if matches!(run.status, RunStatus::Failed | RunStatus::Interrupted) {
            day.failures += 1;
        }
    }
    days
}

/// One row of the chart: what it shows and how.
struct ChartRow {
    label: &'static str,
    color: &'static str,
    value: fn(&Day) -> f64,
    format: fn(f64) -> String,
}

/// Three bar rows (time spent, records changed, failures), one bar per day, with the day's figures
/// in each bar's tooltip. Only numbers and dates reach the markup.
pub(super) fn chart_svg(runs: &[RunRecord], now: DateTime<Utc>) -> String {
    const WIDTH: f64 = 760.0;
    const LEFT: f64 = 150.0;
    const ROW: f64 = 70.0;
    const BAR_MAX: f64 = 50.0;
    let days = days(runs, now);
    let column = (WIDTH - LEFT) / days.len() as f64;
    let rows: [ChartRow; 3] = [
        ChartRow { label: "time in runs", color: "#175cd3", value: |d| d.seconds, format: |v| format!("{v:.1} s") },
        ChartRow {
            label: "records changed",
            color: "#067647",
            value: |d| d.changed as f64,
            format: |v| format!("{v:.0}"),
        },
        ChartRow {
            label: "failed runs",
            color: "#b42318",
            value: |d| d.failures as f64,
            format: |v| format!("{v:.0}"),
        },
    ];
    let height = ROW * rows.len() as f64 + 24.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" \
         role=\"img\" aria-labelledby=\"chart-title\" font-family=\"system-ui, sans-serif\" font-size=\"11\">\
         <title id=\"chart-title\">Runs per day over the last {CHART_DAYS} days: time spent, records changed, failures</title>"
    );
    for (i, ChartRow { label, color, value, format }) in rows.iter().enumerate() {
        let top = i as f64 * ROW;
        let baseline = top + 8.0 + BAR_MAX;
        let max = days.iter().map(|(_, d)| value(d)).fold(0.0, f64::max);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\" fill=\"#1d2430\" font-weight=\"600\">{label}</text>\
             <text x=\"0\" y=\"{:.1}\" fill=\"#667085\">max {}</text>\
             <line x1=\"{LEFT}\" y1=\"{baseline:.1}\" x2=\"{WIDTH}\" y2=\"{baseline:.1}\" stroke=\"#e4e7ec\"/>",
            top + 30.0,
            top + 45.0,
            format(max),
        );
        for (j, (date, day)) in days.iter().enumerate() {
            let v = value(day);
            let h = if max > 0.0 { (v / max * BAR_MAX).max(if v > 0.0 { 2.0 } else { 0.0 }) } else { 0.0 };
            let x = LEFT + j as f64 * column + column * 0.15;
            let _ = write!(
                svg,
                "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{color}\">\
                 <title>{} · {label}: {} ({} runs)</title></rect>",
                baseline - h,
                column * 0.7,
                date.format("%Y-%m-%d"),
                format(v),
                day.runs,
            );
        }
    }
    for (j, (date, _)) in days.iter().enumerate() {
        let x = LEFT + j as f64 * column + column / 2.0;
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#667085\">{}</text>",
            height - 6.0,
            date.format("%m-%d")
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaiten_sync::{EntityKind, EntityStats};

    fn run(id: i64, kind: RunKind, status: RunStatus, started: DateTime<Utc>, secs: i64, changed: u64) -> RunRecord {
        let mut run = RunRecord::start(kind, vec![EntityKind::Cards], None, started);
        run.id = id;
        run.status = status;
        run.finished_at = Some(started + Duration::seconds(secs));
        run.stats.insert(EntityKind::Cards, EntityStats { updated: changed, ..EntityStats::default() });
        run
    }

    #[test]
    fn filters_parse_and_match() {
        let q = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let f = RunFilter::from_query(&q(&[("kind", "webhook"), ("status", "failed"), ("page", "2")])).unwrap();
        assert_eq!(f, RunFilter { kind: Some(RunKind::Webhook), status: Some(RunStatus::Failed), page: 2 });
        assert_eq!(RunFilter::from_query(&q(&[("kind", "")])).unwrap().kind, None);
        assert!(RunFilter::from_query(&q(&[("kind", "<b>")])).unwrap_err().contains("unknown run kind"));
        assert!(RunFilter::from_query(&q(&[("page", "0")])).is_err());
        let link = AdminLink::default();
        assert_eq!(f.href(&link, 3), "/admin/sync/runs?kind=webhook&status=failed&page=3");
    }

    #[test]
    fn the_chart_sums_runs_per_day() {
        let now: DateTime<Utc> = "2026-03-15T12:00:00Z".parse().unwrap();
        let runs = vec![
            run(1, RunKind::Full, RunStatus::Succeeded, now - Duration::hours(1), 30, 100),
            run(2, RunKind::Webhook, RunStatus::Failed, now - Duration::hours(2), 2, 1),
            run(3, RunKind::Incremental, RunStatus::Succeeded, now - Duration::days(3), 4, 7),
            run(4, RunKind::Incremental, RunStatus::Succeeded, now - Duration::days(20), 4, 7),
        ];
        let days = days(&runs, now);
        assert_eq!(days.len(), 14);
        assert_eq!(days[13].0, now.date_naive());
        assert_eq!(days[13].1, Day { runs: 2, seconds: 32.0, changed: 101, failures: 1 });
        assert_eq!(days[10].1.changed, 7);
        assert_eq!(days.iter().map(|(_, d)| d.runs).sum::<u64>(), 3, "a run older than 14 days is left out");
        let svg = chart_svg(&runs, now);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 42, "14 days × 3 rows");
        assert!(svg.contains("2026-03-15 · failed runs: 1 (2 runs)"), "{svg}");
    }
}
