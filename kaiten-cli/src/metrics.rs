//! `GET /metrics`: what `serve` knows, in the Prometheus text format (version 0.0.4).
//!
//! Two sources, said in each metric's help:
//!
//! - **The store, read at each scrape** (so every process sharing the database reports the same
//!   values): when each entity kind last completed a full and an incremental listing
//!   (`sync_metadata`), the newest finished run of each kind in the run log (`sync_logs`: when it
//!   succeeded last, whether the newest one failed, how long it took), rows per table, and the
//!   webhook inbox's depth. Timestamps are gauges of Unix seconds, so lag is
//!   `time() - kaiten_sync_last_success_timestamp_seconds{kind="incremental"}`.
//! - **This process, since it started**: runs that finished since then (counted from the run log
//!   as scrapes see them, whichever process ran them: a cron `sync` on the same database counts
//!   too) by kind and status, their durations as a histogram and the records they wrote; requests
//!   this process sent to Kaiten, its retries and the 429s it got; webhook deliveries this process
//!   answered, by outcome.
//!
//! No label carries a secret, a URL or an error text: kinds, statuses, entity and table names only.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use kaiten_client::ClientStats;
use kaiten_sync::{RunRecord, RunStatus, Store, StoreError, WebhookError, WebhookOutcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the exposition.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Runs of the run log each scrape reads: the newest successes and failures are looked for among
/// them, and runs finished since the last scrape are counted from them (more than this many
/// between two scrapes are not all counted).
pub const RUN_WINDOW: usize = 1000;

/// Upper bounds of the run-duration histogram's buckets, in seconds: a webhook batch takes well
/// under a second, an incremental run seconds, a full sync of 100,000 cards minutes at 50
/// requests/s and hours at Kaiten's documented 5.
pub const DURATION_BUCKETS: [f64; 12] =
    [0.05, 0.25, 1.0, 2.5, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0];

/// What became of one webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Recorded in the inbox (200).
    Accepted,
    /// Authenticated and well formed, but an event the mirror does not follow (200).
    Ignored,
    /// A wrong secret or signature (401).
    Unauthorized,
    /// A body that is not a delivery (400).
    Malformed,
    /// The database could not record it (503).
    StoreError,
}

impl Delivery {
    /// The outcome of what the webhook handler answered.
    pub fn of(result: &Result<WebhookOutcome, WebhookError>) -> Self {
        match result {
            Ok(outcome) if outcome.ignored() => Delivery::Ignored,
            Ok(_) => Delivery::Accepted,
            Err(error) => match error.status() {
                401 | 403 | 404 => Delivery::Unauthorized,
                400..=499 => Delivery::Malformed,
                _ => Delivery::StoreError,
            },
        }
    }

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Accepted => "accepted",
            Delivery::Ignored => "ignored",
            Delivery::Unauthorized => "unauthorized",
            Delivery::Malformed => "malformed",
            Delivery::StoreError => "store_error",
        }
    }

    const ALL: [Delivery; 5] =
        [Delivery::Accepted, Delivery::Ignored, Delivery::Unauthorized, Delivery::Malformed, Delivery::StoreError];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindStatusLabels {
    kind: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntityModeLabels {
    entity: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntityOpLabels {
    entity: &'static str,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableStateLabels {
    table: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

type Seconds = Gauge<f64, std::sync::atomic::AtomicU64>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The process's metrics: counters kept since start, and the store's figures read at each scrape.
pub struct Metrics {
    started_at: DateTime<Utc>,
    deliveries: Family<OutcomeLabel, Counter>,
    runs: Family<KindStatusLabels, Counter>,
    durations: Family<KindLabel, Histogram, fn() -> Histogram>,
    written: Family<EntityOpLabels, Counter>,
    /// Finished runs of the last scrape's window already counted.
    counted: Mutex<HashSet<i64>>,
    /// The newest runs seen by any scrape.
    last: Mutex<LastRuns>,
    /// Runs read per scrape ([`RUN_WINDOW`]).
    window: usize,
}

/// The newest finished run of a kind.
#[derive(Debug, Clone, Copy)]
struct LastRun {
    id: i64,
    failed: bool,
    duration: f64,
}

/// What scrapes have seen of the newest runs, by kind.
#[derive(Debug, Default)]
struct LastRuns {
    newest: BTreeMap<&'static str, LastRun>,
    succeeded: BTreeMap<&'static str, DateTime<Utc>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("started_at", &self.started_at).finish_non_exhaustive()
    }
}

impl Metrics {
    /// Counters at zero; runs finished from now on are counted.
    pub fn new() -> Self {
        Self::since(Utc::now())
    }

    /// Counters at zero; runs finished from `started_at` on are counted.
    pub fn since(started_at: DateTime<Utc>) -> Self {
        let deliveries = Family::default();
        for outcome in Delivery::ALL {
            // Every outcome is exposed from the start, at 0, so a rate over it is defined.
            let _ = deliveries.get_or_create(&OutcomeLabel { outcome: outcome.as_str() });
        }
        Self {
            started_at,
            deliveries,
            runs: Family::default(),
            durations: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            written: Family::default(),
            counted: Mutex::new(HashSet::new()),
            last: Mutex::new(LastRuns::default()),
            window: RUN_WINDOW,
        }
    }

    /// Counts one webhook delivery.
    pub fn webhook_delivery(&self, result: &Result<WebhookOutcome, WebhookError>) {
        self.deliveries.get_or_create(&OutcomeLabel { outcome: Delivery::of(result).as_str() }).inc();
    }

    /// Counts the runs of `runs` (newest first) that finished since start and were not counted yet.
    fn count_finished(&self, runs: &[RunRecord]) {
        let mut counted = self.counted.lock().unwrap();
        let mut still_listed = HashSet::with_capacity(runs.len());
        for run in runs {
            let Some(finished) = run.finished_at else { continue };
            if run.status == RunStatus::Running || finished < self.started_at {
                continue;
            }
            still_listed.insert(run.id);
            if counted.contains(&run.id) {
                continue;
            }
            let kind = run.kind.as_str();
            self.runs.get_or_create(&KindStatusLabels { kind, status: run.status.as_str() }).inc();
            self.durations.get_or_create(&KindLabel { kind }).observe(seconds_between(run.started_at, finished));
            for (entity, stats) in &run.stats {
                for (op, n) in [("inserted", stats.inserted), ("updated", stats.updated), ("deleted", stats.deleted)] {
                    if n > 0 {
                        self.written.get_or_create(&EntityOpLabels { entity: entity.as_str(), op }).inc_by(n);
                    }
                }
            }
        }
        // A run that left the window never comes back into it.
        *counted = still_listed;
    }

    /// The exposition: reads the store, counts newly finished runs, and encodes everything.
    pub async fn render(&self, store: &dyn Store, api: ClientStats) -> Result<String, StoreError> {
        let states = store.entity_states().await?;
        let runs = store.recent_runs(self.window).await?;
        let counts = store.counts().await?;
        let inbox = store.inbox_stats().await?;
        let now = Utc::now();
        self.count_finished(&runs);

        let mut registry = Registry::with_prefix("kaiten_sync");

        let entity_last = Family::<EntityModeLabels, Seconds>::default();
        for state in &states {
            let entity = state.kind.as_str();
            for (mode, at) in [("full", state.last_full_sync_at), ("incremental", state.last_incremental_sync_at)] {
                if let Some(at) = at {
                    entity_last.get_or_create(&EntityModeLabels { entity, mode }).set(unix_seconds(at));
                }
            }
        }
        registry.register(
            "entity_last_sync_timestamp_seconds",
            "When each entity kind last completed a listing in a full or incremental run (sync_metadata), Unix seconds",
            entity_last,
        );

        // The newest finished run of each kind, and the newest successful one, in this window or
        // an earlier scrape's (a full sync a day old may have left the window, under webhook runs).
        let (newest, succeeded) = {
            let mut last = self.last.lock().unwrap();
            for run in &runs {
                let (Some(finished), kind) = (run.finished_at, run.kind.as_str()) else { continue };
                if run.status == RunStatus::Running {
                    continue;
                }
                let seen = LastRun {
                    id: run.id,
                    failed: run.status != RunStatus::Succeeded,
                    duration: seconds_between(run.started_at, finished),
                };
                let entry = last.newest.entry(kind).or_insert(seen);
                if run.id > entry.id {
                    *entry = seen;
                }
                if run.status == RunStatus::Succeeded {
                    let at = last.succeeded.entry(kind).or_insert(finished);
                    *at = (*at).max(finished);
                }
            }
            (last.newest.clone(), last.succeeded.clone())
        };
        let last_success = Family::<KindLabel, Seconds>::default();
        for (kind, at) in &succeeded {
            last_success.get_or_create(&KindLabel { kind }).set(unix_seconds(*at));
        }
        registry.register(
            "last_success_timestamp_seconds",
            format!(
                "End of the newest successful run of each kind (full, incremental, selective, webhook) in the run \
                 log: among its newest {RUN_WINDOW} runs, or seen there by an earlier scrape; Unix seconds"
            ),
            last_success,
        );
        let last_failed = Family::<KindLabel, Gauge>::default();
        let last_duration = Family::<KindLabel, Seconds>::default();
        for (kind, run) in &newest {
            last_failed.get_or_create(&KindLabel { kind }).set(i64::from(run.failed));
            last_duration.get_or_create(&KindLabel { kind }).set(run.duration);
        }
        registry.register(
            "last_run_failed",
            "1 when the newest finished run of this kind failed or was interrupted, else 0",
            last_failed,
        );
        registry.register(
            "last_run_duration_seconds",
            "How long the newest finished run of this kind took",
            last_duration,
        );

        registry.register(
            "runs",
            "Runs of the run log (by any process on this database) that finished since this process started, by \
             kind and status",
            self.runs.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Durations of the runs counted in kaiten_sync_runs_total",
            self.durations.clone(),
        );
        registry.register(
            "records_written",
            "Rows inserted, updated and marked deleted by the runs counted in kaiten_sync_runs_total",
            self.written.clone(),
        );

        let requests: Counter = Counter::default();
        requests.inc_by(api.requests);
        registry.register("api_requests", "HTTP requests this process sent to Kaiten (each attempt counts)", requests);
        let retries: Counter = Counter::default();
        retries.inc_by(api.retries);
        registry.register("api_retries", "Requests to Kaiten that were retries", retries);
        let rate_limited: Counter = Counter::default();
        rate_limited.inc_by(api.rate_limited);
        registry.register("api_rate_limited", "429 Too Many Requests answers from Kaiten", rate_limited);

        registry.register(
            "webhook_deliveries",
            "Webhook deliveries this process answered, by outcome (accepted, ignored, unauthorized, malformed, \
             store_error)",
            self.deliveries.clone(),
        );
        let depth = Family::<StateLabel, Gauge>::default();
        depth.get_or_create(&StateLabel { state: "pending" }).set(inbox.pending);
        depth.get_or_create(&StateLabel { state: "failed" }).set(inbox.failed);
        registry.register(
            "webhook_inbox_entries",
            "Webhook inbox entries waiting to be applied (pending) and given up (failed)",
            depth,
        );
        let oldest: Seconds = Gauge::default();
        oldest.set(inbox.oldest_pending.map_or(0.0, |at| seconds_between(at, now).max(0.0)));
        registry.register(
            "webhook_inbox_oldest_pending_age_seconds",
            "Age of the oldest pending webhook inbox entry (0 when none is pending)",
            oldest,
        );

        let rows = Family::<TableStateLabels, Gauge>::default();
        for count in &counts {
            rows.get_or_create(&TableStateLabels { table: count.table.clone(), state: "live" }).set(count.live);
            rows.get_or_create(&TableStateLabels { table: count.table.clone(), state: "deleted" }).set(count.deleted);
        }
        registry.register("table_rows", "Rows per mirror table: live, and marked deleted", rows);

        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("writing to a String never fails");
        Ok(text)
    }
}

fn unix_seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

/// The `/metrics` response: the exposition, or 503 naming the database error.
pub async fn respond(metrics: &Metrics, store: &dyn Store, api: ClientStats) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    match metrics.render(store, api).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {}\n", kaiten_sync::error::Chain(&e)))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{header, Request, StatusCode};
    use kaiten_client::Secret;
    use kaiten_sim::{SimConfig, Simulator};
    use kaiten_sync::{EntityKind, MemoryStore, RunKind, RunStatus, Store, SyncOptions, WebhookOptions};
    use tower::ServiceExt;

    use crate::serve::{router, AppState, Schedule, ServeConfig, SyncKind, WEBHOOK_PATH};

    const SECRET: &str = "metrics-test-secret-0123456789";
    const TOKEN: &str = "metrics-admin-token-0123456789";

    /// A sample's labels, sorted: `a="1",b="2"`.
    type Series = (String, String);

    /// Parses the Prometheus text exposition strictly: every line is `# HELP`, `# TYPE` or a
    /// sample of a family declared (HELP and TYPE) before it, names and labels well formed,
    /// values numbers. Returns the samples.
    fn parse(text: &str) -> BTreeMap<Series, f64> {
        fn is_name(name: &str) -> bool {
            let mut chars = name.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        }
        let mut helps = BTreeMap::new();
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = BTreeMap::new();
        assert!(text.ends_with('\n'), "the exposition ends with a newline");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                assert!(is_name(name) && !help.is_empty(), "{line}");
                assert!(helps.insert(name.to_owned(), help.to_owned()).is_none(), "one HELP per family: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name type");
                assert!(is_name(name), "{line}");
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
                assert!(helps.contains_key(name), "HELP before TYPE: {line}");
                assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "one TYPE per family: {line}");
                continue;
            }
            assert!(!line.starts_with('#') && !line.trim().is_empty(), "unexpected line {line:?}");
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("not a number in {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}').expect("labels end with }")),
                None => (series, ""),
            };
            assert!(is_name(name), "{line}");
            let family = types
                .iter()
                .find(|(family, kind)| {
                    name == family.as_str()
                        || (kind.as_str() == "histogram"
                            && ["_bucket", "_sum", "_count"].iter().any(|s| name == format!("{family}{s}")))
                })
                .unwrap_or_else(|| panic!("sample of an undeclared family: {line}"));
            let _ = family;
            let mut pairs: Vec<String> = Vec::new();
            if !labels.is_empty() {
                for pair in labels.split("\",") {
                    let pair = pair.trim_end_matches('"');
                    let (key, value) = pair.split_once("=\"").unwrap_or_else(|| panic!("label in {line}"));
                    assert!(is_name(key) && !value.contains('"'), "{line}");
                    pairs.push(format!("{key}=\"{value}\""));
                }
            }
            pairs.sort();
            assert!(samples.insert((name.to_owned(), pairs.join(",")), value).is_none(), "duplicate {line}");
        }
        assert!(!types.is_empty());
        samples
    }

    async fn state(sim: &Simulator, store: Arc<dyn Store>, token: Option<&str>) -> AppState {
        let client = crate::config::client(&sim.base_url(), &sim.token(), 0.0, Duration::from_secs(10)).unwrap();
        AppState::new(ServeConfig {
            store,
            client,
            webhook_secret: Secret::new(SECRET),
            hmac_header: None,
            admin_token: token.map(Secret::new),
            schedule: Schedule::default(),
            webhook_options: WebhookOptions::default().with_debounce(Duration::ZERO),
            sync_options: SyncOptions::default(),
        })
    }

    async fn send(state: &AppState, mut req: Request<Body>, peer: &str) -> (StatusCode, String, String) {
        req.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let response = router(state.clone()).oneshot(req).await.unwrap();
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 10 << 20).await.unwrap();
        (status, content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).header("host", "127.0.0.1:8080").body(Body::empty()).unwrap()
    }

    fn post(uri: &str, body: String) -> Request<Body> {
        Request::post(uri).header("host", "127.0.0.1:8080").body(Body::from(body)).unwrap()
    }

    fn value(samples: &BTreeMap<Series, f64>, name: &str, labels: &str) -> f64 {
        *samples.get(&(name.to_owned(), labels.to_owned())).unwrap_or_else(|| panic!("no {name}{{{labels}}}"))
    }

    #[tokio::test]
    async fn runs_are_counted_once_and_the_last_success_outlives_the_window() {
        use kaiten_sync::{EntityStats, RunRecord};
        let store = MemoryStore::new();
        let started = chrono::Utc::now();
        let mut metrics = super::Metrics::since(started);
        metrics.window = 2;
        let run = |kind: RunKind, status: RunStatus, secs: i64, inserted: u64| {
            let mut record = RunRecord::start(kind, vec![EntityKind::Cards], None, started);
            record.finished_at = Some(started + chrono::Duration::seconds(secs));
            record.status = status;
            record.stats.insert(EntityKind::Cards, EntityStats { inserted, ..EntityStats::default() });
            record
        };
        let before = {
            let mut r = run(RunKind::Full, RunStatus::Succeeded, 1, 5);
            r.started_at = started - chrono::Duration::seconds(60);
            r.finished_at = Some(started - chrono::Duration::seconds(30));
            r
        };
        for record in [before, run(RunKind::Full, RunStatus::Succeeded, 30, 10)] {
            let id = store.start_run(&record).await.unwrap();
            store.update_run(&RunRecord { id, ..record }).await.unwrap();
        }
        let api = kaiten_client::ClientStats::default();
        let first = parse(&metrics.render(&store, api).await.unwrap());
        assert_eq!(
            value(&first, "kaiten_sync_runs_total", "kind=\"full\",status=\"succeeded\""),
            1.0,
            "not the one before start"
        );
        assert_eq!(value(&first, "kaiten_sync_records_written_total", "entity=\"cards\",op=\"inserted\""), 10.0);
        let full_at = value(&first, "kaiten_sync_last_success_timestamp_seconds", "kind=\"full\"");
        // Two webhook runs push the full run out of the window: counted once, still the last success.
        for status in [RunStatus::Succeeded, RunStatus::Failed] {
            let record = run(RunKind::Webhook, status, 40, 1);
            let id = store.start_run(&record).await.unwrap();
            store.update_run(&RunRecord { id, ..record }).await.unwrap();
        }
        let second = parse(&metrics.render(&store, api).await.unwrap());
        assert_eq!(value(&second, "kaiten_sync_runs_total", "kind=\"full\",status=\"succeeded\""), 1.0);
        assert_eq!(value(&second, "kaiten_sync_runs_total", "kind=\"webhook\",status=\"failed\""), 1.0);
        assert_eq!(value(&second, "kaiten_sync_last_success_timestamp_seconds", "kind=\"full\""), full_at);
        assert_eq!(value(&second, "kaiten_sync_last_run_failed", "kind=\"webhook\""), 1.0);
        assert_eq!(value(&second, "kaiten_sync_last_run_failed", "kind=\"full\""), 0.0);
        assert_eq!(value(&second, "kaiten_sync_records_written_total", "entity=\"cards\",op=\"inserted\""), 12.0);
        assert_eq!(value(&second, "kaiten_sync_run_duration_seconds_count", "kind=\"webhook\""), 2.0);
        assert_eq!(value(&second, "kaiten_sync_run_duration_seconds_bucket", "kind=\"webhook\",le=\"60\""), 2.0);
        assert_eq!(value(&second, "kaiten_sync_run_duration_seconds_bucket", "kind=\"webhook\",le=\"30\""), 0.0);
    }

    #[tokio::test]
    async fn metrics_parse_as_prometheus_text_and_match_the_store() {
        let sim = Simulator::start(SimConfig::small()).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let state = state(&sim, store.clone(), None).await;
        state.start_sync(SyncKind::Full, "test").expect("started").await.unwrap();

        // Webhook deliveries of every outcome but a store error.
        let card = sim.create_card(sim.board_ids()[0], "Metrics");
        let hook = format!("{WEBHOOK_PATH}/{SECRET}");
        let remote = "203.0.113.9:4000";
        let add = serde_json::json!({"event": "card:add", "data": card}).to_string();
        assert_eq!(send(&state, post(&hook, add.clone()), remote).await.0, StatusCode::OK);
        assert_eq!(send(&state, post(&hook, add), remote).await.0, StatusCode::OK);
        let ignored = r#"{"event":"user:update","data":{"id":1}}"#.to_owned();
        assert_eq!(send(&state, post(&hook, ignored), remote).await.0, StatusCode::OK);
        let wrong = "/api/webhooks/kaiten/wrong-secret-0123456789";
        assert_eq!(send(&state, post(wrong, "{}".into()), remote).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(send(&state, post(&hook, "not json".into()), remote).await.0, StatusCode::BAD_REQUEST);

        let (status, content_type, text) = send(&state, get("/metrics"), "127.0.0.1:50000").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(content_type, super::CONTENT_TYPE);
        let samples = parse(&text);
        if std::env::var_os("SHOW_METRICS").is_some() {
            println!("{text}");
        }
        assert!(!text.contains(SECRET) && !text.contains(&sim.token()), "no secret in the metrics");

        // The store's figures.
        for count in store.counts().await.unwrap() {
            let live = format!("state=\"live\",table=\"{}\"", count.table);
            assert_eq!(value(&samples, "kaiten_sync_table_rows", &live), count.live as f64, "{}", count.table);
        }
        let cards = store.counts().await.unwrap().into_iter().find(|c| c.table == "cards").unwrap();
        assert!(cards.live > 0);
        let runs = store.recent_runs(10).await.unwrap();
        let full = runs.iter().find(|r| r.kind == RunKind::Full).unwrap();
        assert_eq!(full.status, RunStatus::Succeeded);
        let finished = full.finished_at.unwrap().timestamp_millis() as f64 / 1000.0;
        assert_eq!(value(&samples, "kaiten_sync_last_success_timestamp_seconds", "kind=\"full\""), finished);
        assert_eq!(value(&samples, "kaiten_sync_last_run_failed", "kind=\"full\""), 0.0);
        let duration = (full.finished_at.unwrap() - full.started_at).num_milliseconds() as f64 / 1000.0;
        assert_eq!(value(&samples, "kaiten_sync_last_run_duration_seconds", "kind=\"full\""), duration);
        let cards_state = store.entity_state(EntityKind::Cards).await.unwrap();
        assert_eq!(
            value(&samples, "kaiten_sync_entity_last_sync_timestamp_seconds", "entity=\"cards\",mode=\"full\""),
            cards_state.last_full_sync_at.unwrap().timestamp_millis() as f64 / 1000.0
        );
        assert_eq!(value(&samples, "kaiten_sync_runs_total", "kind=\"full\",status=\"succeeded\""), 1.0);
        assert_eq!(value(&samples, "kaiten_sync_run_duration_seconds_count", "kind=\"full\""), 1.0);
        assert_eq!(value(&samples, "kaiten_sync_run_duration_seconds_sum", "kind=\"full\""), duration);
        assert_eq!(value(&samples, "kaiten_sync_run_duration_seconds_bucket", "kind=\"full\",le=\"+Inf\""), 1.0);
        let inserted = full.stats[&EntityKind::Cards].inserted as f64;
        assert!(inserted > 0.0);
        assert_eq!(value(&samples, "kaiten_sync_records_written_total", "entity=\"cards\",op=\"inserted\""), inserted);
        let inbox = store.inbox_stats().await.unwrap();
        assert_eq!(inbox.pending, 1, "two deliveries for one card coalesce");
        assert_eq!(value(&samples, "kaiten_sync_webhook_inbox_entries", "state=\"pending\""), 1.0);
        assert_eq!(value(&samples, "kaiten_sync_webhook_inbox_entries", "state=\"failed\""), 0.0);
        // This process's counters.
        // The deliveries are not applied yet (no worker runs here): every request was the full run's.
        assert!(full.api_requests > 0);
        assert_eq!(value(&samples, "kaiten_sync_api_requests_total", ""), full.api_requests as f64);
        assert_eq!(value(&samples, "kaiten_sync_api_retries_total", ""), full.retries as f64);
        assert_eq!(value(&samples, "kaiten_sync_api_rate_limited_total", ""), 0.0);
        for (outcome, n) in
            [("accepted", 2.0), ("ignored", 1.0), ("unauthorized", 1.0), ("malformed", 1.0), ("store_error", 0.0)]
        {
            let labels = format!("outcome=\"{outcome}\"");
            assert_eq!(value(&samples, "kaiten_sync_webhook_deliveries_total", &labels), n, "{outcome}");
        }

        // A run is counted once, however often it is scraped.
        let again = parse(&send(&state, get("/admin/sync/metrics"), "127.0.0.1:50000").await.2);
        assert_eq!(value(&again, "kaiten_sync_runs_total", "kind=\"full\",status=\"succeeded\""), 1.0);
        assert_eq!(value(&again, "kaiten_sync_records_written_total", "entity=\"cards\",op=\"inserted\""), inserted);

        // Guarded like the admin page.
        assert_eq!(send(&state, get("/metrics"), remote).await.0, StatusCode::FORBIDDEN);
        let protected = self::state(&sim, store.clone(), Some(TOKEN)).await;
        assert_eq!(send(&protected, get("/metrics"), remote).await.0, StatusCode::UNAUTHORIZED);
        let mut req = get("/metrics");
        req.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
        let (status, _, text) = send(&protected, req, remote).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!text.contains(TOKEN));
    }
}
