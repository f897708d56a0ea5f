//! The run history: runs paged and filtered by kind and status, a page per run (its error in full,
//! per-entity counts, requests), and the last 14 days as a chart drawn here (inline SVG).
//!
//! Filtering is done in memory over the newest [`HISTORY_RUNS`] runs (`Store::recent_runs`): the
//! run log keeps 30 days and at least the newest 1,000 runs, so this covers it in practice without a
//! store query per filter.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use kaiten_sync::{RunKind, RunRecord, RunStatus};
use maud::{html, Markup};

use super::guard::AdminLink;
use super::html::{page, run_row, status_badge, took, when};
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

fn header(title: &str, link: &AdminLink, now: DateTime<Utc>) -> Markup {
    html! {
        header {
            h1 { "kaiten-sync" }
            span.meta { (title) " · " (now.format("%Y-%m-%d %H:%M:%S")) " UTC" }
            a href=(link.path(ADMIN_PATH)) { "← admin page" }
        }
    }
}

/// `/admin/sync/runs`: the chart, the filters, one page of matching runs and the pager.
pub(super) fn runs_page(runs: &[RunRecord], filter: &RunFilter, link: &AdminLink, now: DateTime<Utc>) -> String {
    let matching: Vec<&RunRecord> = runs.iter().filter(|r| filter.matches(r)).collect();
    let pages = matching.len().div_ceil(RUNS_PER_PAGE).max(1);
    let page_no = filter.page.min(pages);
    let shown = matching.iter().skip((page_no - 1) * RUNS_PER_PAGE).take(RUNS_PER_PAGE);
    let plural = if matching.len() == 1 { "" } else { "s" };
    page(html! {
        (header("runs", link, now))
        main {
            section.wide {
                h2 { "The last 14 days" }
                (chart_svg(runs, now))
            }
            section.wide #runs {
                h2 { "Runs" }
                form method="get" class="quick" id="run-filter" action={ (ADMIN_PATH) "/runs" } {
                    (link.hidden_field())
                    label {
                        "Kind "
                        select name="kind" {
                            option value="" { "all kinds" }
                            @for kind in [RunKind::Full, RunKind::Incremental, RunKind::Selective, RunKind::Webhook] {
                                option value=(kind.as_str()) selected[filter.kind == Some(kind)] { (kind.as_str()) }
                            }
                        }
                    }
                    " "
                    label {
                        "Status "
                        select name="status" {
                            option value="" { "all statuses" }
                            @for status in
                                [RunStatus::Running, RunStatus::Succeeded, RunStatus::Failed, RunStatus::Interrupted]
                            {
                                option value=(status.as_str()) selected[filter.status == Some(status)] {
                                    (status.as_str())
                                }
                            }
                        }
                    }
                    " "
                    button type="submit" { "Filter" }
                }
                table {
                    thead {
                        tr {
                            th.num { "run" } th { "kind" } th { "status" } th { "started" } th.num { "took" }
                            th.num { "requests" } th.num { "new" } th.num { "changed" } th.num { "deleted" }
                            th { "scope" } th { "error" }
                        }
                    }
                    tbody {
                        @if matching.is_empty() {
                            tr { td colspan="11" class="muted" { "no run matches" } }
                        }
                        @for run in shown {
                            (run_row(run, &link.path(&format!("{ADMIN_PATH}/runs/{}", run.id)), false, &short_error(run)))
                        }
                    }
                }
                p.pager {
                    (matching.len()) " run" (plural) " · page " (page_no) " of " (pages)
                    @if page_no > 1 {
                        " · " a href=(filter.href(link, page_no - 1)) rel="prev" { "← newer" }
                    }
                    @if page_no < pages {
                        " · " a href=(filter.href(link, page_no + 1)) rel="next" { "older →" }
                    }
                }
                p.muted { "The newest " (HISTORY_RUNS) " runs of the run log are searched." }
            }
        }
    })
}

/// A run's error as the runs table shows it: at most 120 characters.
fn short_error(run: &RunRecord) -> String {
    let error = run.error.clone().unwrap_or_default();
    if error.chars().count() > 120 {
        error.chars().take(117).collect::<String>() + "..."
    } else {
        error
    }
}

/// `/admin/sync/runs/{id}`: one run, its error in full, its counts per entity kind.
pub(super) fn run_page(run: &RunRecord, link: &AdminLink, now: DateTime<Utc>) -> String {
    let total = |value: fn(&kaiten_sync::EntityStats) -> u64| run.total(value);
    page(html! {
        (header(&format!("run {}", run.id), link, now))
        main {
            section.wide #run {
                h2 { "Run #" (run.id) " " (status_badge(run.status.as_str())) }
                dl {
                    dt { "Kind" } dd { (run.kind.as_str()) }
                    dt { "Started" } dd { (when(Some(run.started_at))) " UTC" }
                    dt { "Finished" }
                    dd { (run.finished_at.map(|f| format!("{} UTC", when(Some(f)))).unwrap_or_else(|| "–".into())) }
                    dt { "Took" } dd { (took(run)) }
                    dt { "Entities" } dd { (run.entities.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")) }
                    dt { "Scope" } dd { (run.scope.as_deref().unwrap_or("everything")) }
                    dt { "Requests to Kaiten" } dd { (run.api_requests) " (" (run.retries) " retries)" }
                }
                @match &run.error {
                    Some(error) => {
                        h2 { "Error" }
                        pre.err #run-error { (error) }
                    },
                    None => p.muted { "No error." },
                }
            }
            section.wide {
                h2 { "Per entity" }
                table #run-entities {
                    thead {
                        tr {
                            th { "entity" } th.num { "pages" } th.num { "fetched" } th.num { "new" }
                            th.num { "changed" } th.num { "unchanged" } th.num { "deleted" }
                        }
                    }
                    tbody {
                        @if run.stats.is_empty() {
                            tr { td colspan="7" class="muted" { "no entity finished in this run" } }
                        }
                        @for (kind, s) in &run.stats {
                            tr {
                                td { (kind.as_str()) }
                                td.num { (s.pages) }
                                td.num { (s.fetched) }
                                td.num { (s.inserted) }
                                td.num { (s.updated) }
                                td.num { (s.unchanged) }
                                td.num { (s.deleted) }
                            }
                        }
                    }
                    tfoot {
                        tr {
                            th { "total" }
                            th.num { (total(|s| s.pages)) }
                            th.num { (total(|s| s.fetched)) }
                            th.num { (total(|s| s.inserted)) }
                            th.num { (total(|s| s.updated)) }
                            th.num { (total(|s| s.unchanged)) }
                            th.num { (total(|s| s.deleted)) }
                        }
                    }
                }
                p { a href=(link.path(&format!("{ADMIN_PATH}/runs"))) { "All runs →" } }
            }
        }
    })
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
pub(super) fn chart_svg(runs: &[RunRecord], now: DateTime<Utc>) -> Markup {
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
    let one = |v: f64| format!("{v:.1}");
    html! {
        svg #chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (height) } width="100%"
            role="img" aria-labelledby="chart-title" font-family="system-ui, sans-serif" font-size="11" {
            title #chart-title {
                "Runs per day over the last " (CHART_DAYS) " days: time spent, records changed, failures"
            }
            @for (i, ChartRow { label, color, value, format }) in rows.iter().enumerate() {
                @let top = i as f64 * ROW;
                @let baseline = top + 8.0 + BAR_MAX;
                @let max = days.iter().map(|(_, d)| value(d)).fold(0.0, f64::max);
                text x="0" y=(one(top + 30.0)) fill="#1d2430" font-weight="600" { (label) }
                text x="0" y=(one(top + 45.0)) fill="#667085" { "max " (format(max)) }
                line x1=(LEFT) y1=(one(baseline)) x2=(WIDTH) y2=(one(baseline)) stroke="#e4e7ec" {}
                @for (j, (date, day)) in days.iter().enumerate() {
                    @let v = value(day);
                    @let h = if max > 0.0 { (v / max * BAR_MAX).max(if v > 0.0 { 2.0 } else { 0.0 }) } else { 0.0 };
                    @let x = LEFT + j as f64 * column + column * 0.15;
                    rect class="bar" x=(one(x)) y=(one(baseline - h)) width=(one(column * 0.7)) height=(one(h))
                        fill=(color) {
                        title { (date.format("%Y-%m-%d")) " · " (label) ": " (format(v)) " (" (day.runs) " runs)" }
                    }
                }
            }
            @for (j, (date, _)) in days.iter().enumerate() {
                @let x = LEFT + j as f64 * column + column / 2.0;
                text x=(one(x)) y=(one(height - 6.0)) text-anchor="middle" fill="#667085" {
                    (date.format("%m-%d"))
                }
            }
        }
    }
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
        let svg = chart_svg(&runs, now).into_string();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 42, "14 days × 3 rows");
        assert!(svg.contains("2026-03-15 · failed runs: 1 (2 runs)"), "{svg}");
    }
}
