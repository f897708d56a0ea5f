//! Kaiten webhooks: a delivery is a notification that an entity changed, never data to store.
//!
//! Kaiten posts `{"event": "card:update", "data": {...}}` to one URL per space, signs nothing,
//! retries nothing, promises no order, and sends partial payloads (a `card:add` carries a handful
//! of fields; a `card:update` the changed keys only). So a delivery is handled in two steps:
//!
//! 1. **Accept** ([`WebhookHandler::handle`]): authenticate it by the secret in its URL
//!    (`/api/webhooks/kaiten/<secret>`, compared in constant time, [`constant_time_eq`]) and
//!    optionally an HMAC-SHA256 header from a signing proxy ([`WebhookAuth::with_hmac_header`]);
//!    parse the envelope into "entity X changed" ([`Notification`]); record it durably in the
//!    store's inbox ([`Store::inbox_push`]); answer. Nothing is fetched on this path, so it stays
//!    fast, and a delivery acknowledged is never lost, even if the process dies right after.
//! 2. **Apply** ([`WebhookHandler::drain`], or the loop of [`WebhookHandler::run_worker`]): claim due
//!    inbox entries, fetch each entity from Kaiten through the client's rate limit, and store what
//!    Kaiten returns through the engine's page path and parent handling (the same code a sync
//!    uses: a card's space, board, column and lane are made to exist first; newer wins). A fetch
//!    that answers 404 marks the entity deleted if it is stored, and creates nothing.
//!
//! What each event refetches:
//!
//! | event | refetch |
//! |---|---|
//! | `card:*` | the card, `GET /cards/{id}` (with its members) |
//! | `comment:*`, `card_member:*`, `file:*`, `block:*`, `card_time_log:*`, `checklist*:*`, and `tag:*` naming a `card_id` | that card |
//! | `board:*` (and `column:*`/`lane:*` aliases naming a `board_id`) | the board through its space's listing (`GET /spaces/{id}/boards`, never `GET /boards/{id}`, which returns every card), its columns and lanes |
//! | `space:*` | `GET /spaces` |
//! | `tag:*` without a card | `GET /tags`; a tag missing from it is left alone: no delivery deletes a tag |
//!
//! Deliveries for one entity coalesce: an entry becomes due [`WebhookOptions::debounce`] after its
//! first delivery, and everything delivered meanwhile costs one fetch (a delivery arriving while
//! the fetch runs costs one more). A batch naming at least [`WebhookOptions::bulk_listing_min`]
//! cards (a bulk move) is fetched with one incremental card listing instead of one request per
//! card, paged by the stop rules of a sync's card walks (a clamped page size is learned; a listing
//! whose end cannot be told fails the batch's card entries, with nothing marked deleted, rather
//! than ending early or looping). Failures are retried with exponential backoff, and after [`WebhookOptions::max_attempts`]
//! kept in the inbox as failed ([`Store::inbox_entries`]) until a new delivery or an operator
//! ([`Store::inbox_retry_failed`]) revives them. Each drained batch is one run of kind
//! [`RunKind::Webhook`] in `sync_logs`; old runs are pruned ([`WebhookOptions::run_retention`]).
//!
//! Webhooks never take the sync lock: writes are order-safe, so a batch and a running sync
//! interleave safely. Whatever a webhook misses (Kaiten does not retry), the next sync repairs.
//!
//! The HTTP part is a thin adapter: [`WebhookHandler::handle`] takes the secret from the URL, the
//! signature header if any, and the body, and says what to answer. With the `axum` feature,
//! `kaiten_sync::webhook::axum` is that adapter for axum (the route `kaiten-sync serve` mounts):
//! `axum::Router::new().merge(kaiten_sync::webhook::axum::router(handler))`.

mod apply;
mod auth;
#[cfg(feature = "axum")]
pub mod axum;
mod event;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kaiten_client::KaitenClient;
use tracing::{debug, info, warn, Instrument};

use crate::error::{chain, Chain, SyncError};
use crate::inbox::{InboxEntry, InboxResult, Notification};
use crate::parents::ParentCache;
use crate::schema::EntityKind;
use crate::store::{now_millis, RunKind, RunRecord, RunStatus, Store, StoreError};
use apply::{BatchDone, BatchRun};
pub use auth::{constant_time_eq, hmac_sha256_hex, WebhookAuth};
pub use event::WebhookEvent;

/// What the acceptance of a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookOutcome {
    /// The event name as sent.
    pub event: String,
    /// The entity recorded in the inbox, to be refetched; `None` when the event is ignored.
    pub queued: Option<Notification>,
}

impl WebhookOutcome {
    /// Whether the mirror ignores this event (nothing was queued).
    pub fn ignored(&self) -> bool {
        self.queued.is_none()
    }
}

/// Why a delivery was refused, or a batch failed. Never contains the secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL secret (or the signature) is wrong: nothing was parsed or stored.
    #[error("webhook delivery not authenticated: wrong secret in the URL, or a missing or invalid signature")]
    Unauthorized,
    /// The body is not a delivery the mirror understands: nothing was stored.
    #[error("{0}")]
    Malformed(String),
    /// The database failed: the delivery was not recorded (Kaiten does not retry; the next sync
    /// repairs what it missed).
    #[error("database error while handling a webhook")]
    Store(#[source] StoreError),
}

impl From<StoreError> for WebhookError {
    fn from(e: StoreError) -> Self {
        WebhookError::Store(e)
    }
}

impl WebhookError {
    /// The HTTP status to answer with: 401, 400 or 503 (database).
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::Unauthorized => 401,
            WebhookError::Malformed(_) => 400,
            WebhookError::Store(_) => 503,
        }
    }
}

/// Tuning of webhook processing. `Default` is what `serve` uses.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebhookOptions {
    /// An entry becomes due this long after its first delivery, so a burst for one entity costs
    /// one fetch.
    pub debounce: Duration,
    /// Entries claimed (and logged as one run) at a time.
    pub batch_size: usize,
    /// How long a claim holds: a worker that dies loses its entries after this, and a webhook run
    /// still `running` after this is marked interrupted.
    pub lease: Duration,
    /// Attempts before an entry is kept as failed.
    pub max_attempts: u32,
    /// Backoff after the first failure, doubled at each next one.
    pub retry_base: Duration,
    /// Longest backoff.
    pub retry_max: Duration,
    /// A batch naming at least this many cards fetches them with one incremental listing
    /// (100 cards a request) instead of one request per card.
    pub bulk_listing_min: usize,
    /// The incremental listing of a bulk batch starts this long before its first delivery.
    pub listing_overlap: Duration,
    /// Requests in flight at once for single-card fetches (the client's limiter still applies).
    pub concurrency: usize,
    /// How often an idle worker looks at the inbox (deliveries accepted by other processes, due
    /// retries).
    pub poll_every: Duration,
    /// Finished runs older than this are deleted from `sync_logs` (`None` keeps them all).
    pub run_retention: Option<Duration>,
    /// The newest runs kept whatever their age.
    pub keep_runs: usize,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_secs(1),
            batch_size: 200,
            lease: Duration::from_secs(300),
            max_attempts: 8,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            bulk_listing_min: 100,
            listing_overlap: Duration::from_secs(60),
            concurrency: 4,
            poll_every: Duration::from_secs(2),
            run_retention: Some(Duration::from_secs(30 * 24 * 3600)),
            keep_runs: 1000,
        }
    }
}

impl WebhookOptions {
    /// Sets [`WebhookOptions::debounce`].
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Sets [`WebhookOptions::lease`].
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets [`WebhookOptions::max_attempts`] and the backoff.
    pub fn with_retries(mut self, max_attempts: u32, base: Duration, max: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.retry_base = base;
        self.retry_max = max;
        self
    }

    /// Sets [`WebhookOptions::bulk_listing_min`].
    pub fn with_bulk_listing_min(mut self, cards: usize) -> Self {
        self.bulk_listing_min = cards.max(1);
        self
    }

    /// Sets [`WebhookOptions::poll_every`].
    pub fn with_poll_every(mut self, every: Duration) -> Self {
        self.poll_every = every;
        self
    }

    /// Sets [`WebhookOptions::run_retention`] and [`WebhookOptions::keep_runs`].
    pub fn with_run_retention(mut self, retention: Option<Duration>, keep_runs: usize) -> Self {
        self.run_retention = retention;
        self.keep_runs = keep_runs;
        self
    }

    /// The backoff before attempt `attempts + 1`.
    fn backoff(&self, attempts: i64) -> Duration {
        let factor = 2u32.saturating_pow(attempts.clamp(0, 30) as u32);
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }
}

/// What [`WebhookHandler::drain`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Batches drained (runs written to `sync_logs`).
    pub batches: u64,
    /// Entries claimed.
    pub entries: u64,
    /// Entries applied and removed from the inbox.
    pub applied: u64,
    /// Entries that failed (to be retried, or given up).
    pub failed: u64,
    /// Requests to Kaiten.
    pub requests: u64,
    /// The runs, oldest first.
    pub run_ids: Vec<i64>,
}

/// Accepts webhook deliveries into the inbox and applies them. Cheap to clone (clones share the
/// client, the store and the worker's wake-up signal), so it can be an axum state directly.
#[derive(Clone)]
pub struct WebhookHandler {
    inner: Arc<Inner>,
}

struct Inner {
    client: KaitenClient,
    store: Arc<dyn Store>,
    auth: WebhookAuth,
    options: WebhookOptions,
    worker_id: String,
    wake: tokio::sync::Notify,
}

impl fmt::Debug for WebhookHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookHandler")
            .field("client", &self.inner.client)
            .field("store", &self.inner.store)
            .field("auth", &self.inner.auth)
            .field("options", &self.inner.options)
            .field("worker_id", &self.inner.worker_id)
            .finish()
    }
}

fn worker_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("webhooks:{}:{:08x}", std::process::id(), hasher.finish() as u32)
}

fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl WebhookHandler {
    /// A handler with default options, writing to `store`, fetching through `client`.
    pub fn new(client: KaitenClient, store: Arc<dyn Store>, auth: WebhookAuth) -> Self {
        Self::with_options(client, store, auth, WebhookOptions::default())
    }

    /// A handler with these options.
    pub fn with_options(
        client: KaitenClient,
        store: Arc<dyn Store>,
        auth: WebhookAuth,
        options: WebhookOptions,
    ) -> Self {
        if auth.secret.is_empty() {
            warn!("the webhook secret is empty: every delivery will be refused");
        }
        let inner = Inner { client, store, auth, options, worker_id: worker_id(), wake: tokio::sync::Notify::new() };
        Self { inner: Arc::new(inner) }
    }

    /// Refetches these entities now, through the same inbox and apply path as webhook deliveries
    /// (`kind` is [`EntityKind::Cards`], [`EntityKind::Boards`], [`EntityKind::Spaces`] or
    /// [`EntityKind::Tags`]): each is recorded in the inbox as due, then the inbox is drained (so any
    /// other due delivery is applied too). A card Kaiten answers 404 for is marked deleted if
    /// stored, and nothing is created for it. What cannot be fetched stays in the inbox for the next
    /// drain, and is counted in [`DrainReport::failed`]. The ids are bare integers (a
    /// [`CardId`](kaiten_client::CardId) as `.get()`, ...) since their kind is `kind`, given at run
    /// time, as in the inbox.
    pub async fn refetch(&self, kind: EntityKind, ids: &[i64]) -> Result<DrainReport, SyncError> {
        if !matches!(kind, EntityKind::Cards | EntityKind::Boards | EntityKind::Spaces | EntityKind::Tags) {
            return Err(SyncError::InvalidSelection(format!("{kind} cannot be refetched by id")));
        }
        if let Some(bad) = ids.iter().find(|id| **id <= 0) {
            return Err(SyncError::InvalidSelection(format!("{bad} is not a Kaiten id")));
        }
        let notes: Vec<Notification> = ids
            .iter()
            .map(|id| Notification { kind, entity_id: *id, parent_id: None, event: "refetch".to_owned() })
            .collect();
        let now = now_millis();
        self.inner.store.inbox_push(&notes, now, now).await?;
        self.drain().await
    }

    /// A handler that only applies (no deliveries are authenticated with it): for
    /// [`WebhookHandler::refetch`] and [`WebhookHandler::drain`] outside `serve`.
    pub fn applier(client: KaitenClient, store: Arc<dyn Store>, options: WebhookOptions) -> Self {
        let inner = Inner {
            client,
            store,
            auth: WebhookAuth::new(""),
            options,
            worker_id: worker_id(),
            wake: tokio::sync::Notify::new(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The header the adapter should pass as `signature`, when signatures are required.
    pub fn hmac_header(&self) -> Option<&str> {
        self.inner.auth.hmac_header.as_deref()
    }

    /// The store deliveries are recorded in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The options in force.
    pub fn options(&self) -> &WebhookOptions {
        &self.inner.options
    }

    /// Accepts one delivery: `path_secret` is the last segment of the URL, `signature` the value
    /// of the [`WebhookHandler::hmac_header`] header if the request had one, `body` the raw body.
    /// On `Ok` the entity it names is recorded in the inbox (or the event is ignored), and the
    /// caller should answer 2xx; nothing is fetched here.
    pub async fn handle(
        &self,
        path_secret: &str,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<WebhookOutcome, WebhookError> {
        if !self.inner.auth.verify(path_secret, signature, body) {
            debug!(bytes = body.len(), "webhook delivery refused: not authenticated");
            return Err(WebhookError::Unauthorized);
        }
        let event = WebhookEvent::parse(body).inspect_err(|e| debug!(error = %e, "malformed webhook delivery"))?;
        self.accept(event).await
    }

    /// Records an event that the caller has already authenticated.
    pub async fn accept(&self, event: WebhookEvent) -> Result<WebhookOutcome, WebhookError> {
        let Some(note) = event.notification else {
            debug!(event = %event.name, "webhook event ignored: it names nothing the mirror follows");
            return Ok(WebhookOutcome { event: event.name, queued: None });
        };
        let now = now_millis();
        self.inner.store.inbox_push(std::slice::from_ref(&note), now, after(now, self.inner.options.debounce)).await?;
        debug!(event = %event.name, kind = note.kind.as_str(), id = note.entity_id, "webhook delivery queued");
        self.inner.wake.notify_one();
        Ok(WebhookOutcome { event: event.name, queued: Some(note) })
    }

    /// Applies every due inbox entry now, batch after batch, and returns what it did. A batch that
    /// fails as a whole (the database is down) stops the drain with the error; entries that fail
    /// on their own are retried later.
    pub async fn drain(&self) -> Result<DrainReport, SyncError> {
        let mut report = DrainReport::default();
        // Entries due when the drain started: one that fails is not retried within the same drain.
        let started = now_millis();
        loop {
            let options = &self.inner.options;
            let lease_until = after(now_millis(), options.lease);
            let entries = self
                .inner
                .store
                .inbox_claim(&self.inner.worker_id, options.batch_size.max(1), started, lease_until)
                .await?;
            if entries.is_empty() {
                return Ok(report);
            }
            let batch = self.apply_batch(entries).await?;
            report.batches += 1;
            report.entries += batch.entries;
            report.applied += batch.applied;
            report.failed += batch.failed;
            report.requests += batch.requests;
            report.run_ids.push(batch.run_id);
        }
    }

    /// Applies deliveries until `shutdown` completes: drains the inbox when a delivery arrives
    /// (after [`WebhookOptions::debounce`]) and every [`WebhookOptions::poll_every`]; marks webhook
    /// runs of dead processes interrupted and prunes old runs. Several workers (in one process
    /// or several sharing a database) may run at once.
    pub async fn run_worker(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let options = self.inner.options.clone();
        let mut last_upkeep: Option<std::time::Instant> = None;
        loop {
            if last_upkeep.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                self.upkeep().await;
                last_upkeep = Some(std::time::Instant::now());
            }
            match self.drain().await {
                Ok(report) if report.entries > 0 => {
                    debug!(
                        entries = report.entries,
                        applied = report.applied,
                        failed = report.failed,
                        "webhook inbox drained"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(error = %Chain(&e), "webhook inbox: applying deliveries failed; retrying"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.inner.wake.notified() => {
                    // Let the burst this delivery belongs to gather (its entry is due then).
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(options.debounce) => {}
                    }
                }
                () = tokio::time::sleep(options.poll_every) => {}
            }
        }
    }

    /// Marks webhook runs left `running` by dead processes interrupted, and prunes old runs.
    async fn upkeep(&self) {
        let store = &self.inner.store;
        let options = &self.inner.options;
        let cutoff = now_millis() - chrono::Duration::from_std(options.lease).unwrap_or(chrono::Duration::MAX);
        match store.interrupt_webhook_runs(cutoff, "interrupted: the process applying these webhooks stopped").await {
            Ok(0) => {}
            Ok(n) => info!(runs = n, "marked webhook runs of a stopped process as interrupted"),
            Err(e) => warn!(error = %Chain(&e), "could not mark stale webhook runs interrupted"),
        }
        if let Some(retention) = options.run_retention {
            let before = now_millis() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
            match store.prune_runs(before, options.keep_runs).await {
                Ok(0) => {}
                Ok(n) => info!(runs = n, "pruned old runs from sync_logs"),
                Err(e) => warn!(error = %Chain(&e), "could not prune old runs from sync_logs"),
            }
        }
    }

    /// Applies one claimed batch as one webhook run.
    async fn apply_batch(&self, entries: Vec<InboxEntry>) -> Result<BatchDone, SyncError> {
        let store = &*self.inner.store;
        let mut kinds: BTreeMap<EntityKind, u64> = BTreeMap::new();
        for e in &entries {
            *kinds.entry(e.kind).or_default() += 1;
        }
        let scope = format!(
            "{} notification{}: {}",
            entries.len(),
            if entries.len() == 1 { "" } else { "s" },
            kinds.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        );
        let mut record = RunRecord::start(RunKind::Webhook, kinds.keys().copied().collect(), Some(scope), now_millis());
        record.id = store.start_run(&record).await?;
        // Every line logged while the batch runs carries its run id, as a sync's do.
        let span = tracing::info_span!("webhook", run_id = record.id);
        self.apply_started(entries, record).instrument(span).await
    }

    /// [`Self::apply_batch`] once its run is recorded.
    async fn apply_started(&self, entries: Vec<InboxEntry>, mut record: RunRecord) -> Result<BatchDone, SyncError> {
        let store = &*self.inner.store;
        let mut cache = ParentCache::default();
        let mut batch = BatchRun { handler: self, cache: &mut cache, record: &mut record, outcomes: HashMap::new() };
        let result = batch.apply(&entries).await;
        let outcomes = std::mem::take(&mut batch.outcomes);
        // Entries without an outcome (the batch failed before reaching them) fail with its error.
        let batch_error = result.as_ref().err().map(|e| chain(e));
        let now = now_millis();
        let options = &self.inner.options;
        let mut results = Vec::with_capacity(entries.len());
        let (mut applied, mut failed) = (0, 0);
        let mut errors = Vec::new();
        for e in &entries {
            let outcome = match outcomes.get(&(e.kind, e.entity_id)) {
                Some(outcome) => outcome.clone(),
                None => Err(batch_error.clone().unwrap_or_else(|| "not applied".to_owned())),
            };
            match outcome {
                Ok(()) => {
                    applied += 1;
                    results.push(InboxResult::Done { id: e.id, seq: e.seq, again_at: after(now, options.debounce) })
                }
                Err(error) => {
                    failed += 1;
                    let give_up = e.attempts + 1 >= i64::from(options.max_attempts);
                    // At least a millisecond on: the drain claims only entries due by its start
                    // (times are milliseconds), and must not take a failed one again (a zero
                    // backoff did, when the failure fell in the drain's first millisecond).
                    let wait = options.backoff(e.attempts).max(Duration::from_millis(1));
                    let retry_at = (!give_up).then(|| after(now, wait));
                    warn!(kind = e.kind.as_str(), id = e.entity_id, attempts = e.attempts + 1, give_up, %error,
                          "webhook entry failed");
                    errors.push(format!("{} {}: {error}", e.kind, e.entity_id));
                    results.push(InboxResult::Failed { id: e.id, error, retry_at });
                }
            }
        }
        let finished = store.inbox_finish(&results, now).await;
        record.finished_at = Some(now_millis());
        record.status = if failed == 0 && finished.is_ok() { RunStatus::Succeeded } else { RunStatus::Failed };
        if let Err(e) = &finished {
            errors.push(format!("recording the outcome in the inbox failed: {}", Chain(e)));
        }
        record.error = (!errors.is_empty()).then(|| {
            let shown: Vec<&str> = errors.iter().take(10).map(String::as_str).collect();
            let more = errors.len().saturating_sub(shown.len());
            let tail = if more > 0 { format!("; and {more} more") } else { String::new() };
            format!("{}{tail}", shown.join("; "))
        });
        if let Err(e) = store.update_run(&record).await {
            warn!(run_id = record.id, error = %Chain(&e), "could not record the end of a webhook run in sync_logs");
        }
        finished?;
        info!(
            run_id = record.id,
            entries = entries.len(),
            applied,
            failed,
            requests = record.api_requests,
            "webhook batch applied"
        );
        Ok(BatchDone {
            run_id: record.id,
            entries: entries.len() as u64,
            applied,
            failed,
            requests: record.api_requests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let o = WebhookOptions::default().with_retries(5, Duration::from_secs(2), Duration::from_secs(20));
        let got: Vec<u64> = (0..6).map(|a| o.backoff(a).as_secs()).collect();
        assert_eq!(got, vec![2, 4, 8, 16, 20, 20]);
    }

    #[test]
    fn errors_map_to_statuses_and_hide_the_secret() {
        assert_eq!(WebhookError::Unauthorized.status(), 401);
        assert_eq!(WebhookError::Malformed("x".into()).status(), 400);
        assert_eq!(WebhookError::Store(StoreError::NotMigrated).status(), 503);
        let err = WebhookError::Store(StoreError::NotMigrated);
        assert!(std::error::Error::source(&err).is_some(), "the store error is kept as the source, not printed twice");
        let auth = WebhookAuth::new("very-secret-value-123");
        assert!(!format!("{auth:?}").contains("very-secret"));
    }
}
