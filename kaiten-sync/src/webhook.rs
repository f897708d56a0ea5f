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
//! card. Failures are retried with exponential backoff, and after [`WebhookOptions::max_attempts`]
//! kept in the inbox as failed ([`Store::inbox_entries`]) until a new delivery or an operator
//! ([`Store::inbox_retry_failed`]) revives them. Each drained batch is one run of kind
//! [`RunKind::Webhook`] in `sync_logs`; old runs are pruned ([`WebhookOptions::run_retention`]).
//!
//! Webhooks never take the sync lock: writes are order-safe, so a batch and a running sync
//! interleave safely. Whatever a webhook misses (Kaiten does not retry), the next sync repairs.
//!
//! The HTTP part is a thin adapter; with axum:
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::extract::{Path, State};
//! use axum::http::{HeaderMap, StatusCode};
//! use kaiten_sync::kaiten_client::KaitenClient;
//! use kaiten_sync::{MemoryStore, Store, WebhookAuth, WebhookHandler};
//!
//! async fn kaiten_webhook(
//!     State(handler): State<WebhookHandler>,
//!     Path(secret): Path<String>,
//!     headers: HeaderMap,
//!     body: axum::body::Bytes,
//! ) -> StatusCode {
//!     let signature = handler.hmac_header().and_then(|h| headers.get(h)).and_then(|v| v.to_str().ok());
//!     match handler.handle(&secret, signature, &body).await {
//!         Ok(_) => StatusCode::OK,
//!         Err(e) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let secret = std::env::var("KAITEN_WEBHOOK_SECRET")?;
//! let handler = WebhookHandler::new(KaitenClient::from_env()?, store, WebhookAuth::new(secret));
//! // Applies accepted deliveries in the background until the process ends.
//! let worker = handler.clone();
//! tokio::spawn(async move { worker.run_worker(std::future::pending()).await });
//! let app = axum::Router::new()
//!     .route("/api/webhooks/kaiten/{secret}", axum::routing::post(kaiten_webhook))
//!     .with_state(handler);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use kaiten_client::{Card, CardQuery, Condition, KaitenClient, OrderDirection, PageRequest, Secret};
use serde_json::{Map, Value};
use sha2::Sha256;
use tracing::{debug, info, warn};

use crate::engine::{next_position, WalkPos};
use crate::error::SyncError;
use crate::inbox::{InboxEntry, InboxResult, Notification};
use crate::parents::{ParentCache, Parents};
use crate::schema::EntityKind;
use crate::store::{now_millis, Batch, Page, RunKind, RunRecord, RunStatus, Store, StoreError};

/// Compares two byte strings in time that depends only on the length of `presented`, never on
/// where the contents differ: every byte is xor-folded into one accumulator, with no early exit.
/// Different lengths compare unequal (after the same loop).
///
/// Pass the value from the request as `presented` and the configured secret as `expected`.
pub fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, byte) in presented.iter().enumerate() {
        // Past the end of `expected` compare against 0: the length difference already decided.
        let other = expected.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(byte ^ other);
    }
    std::hint::black_box(diff) == 0
}

/// Hex HMAC-SHA256 of `body` under `key`: what a signing proxy puts in the header named by
/// [`WebhookAuth::with_hmac_header`] (optionally prefixed with `sha256=`).
pub fn hmac_sha256_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes().chunks(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

/// How deliveries are authenticated.
///
/// Kaiten signs nothing, so the operator puts a long random secret in the webhook URL
/// (`https://host/webhooks/kaiten/<secret>`). When a signing proxy sits in front, set
/// [`WebhookAuth::hmac_header`] as well: the delivery must then also carry that header with the hex
/// HMAC-SHA256 of the body, keyed with the same secret.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WebhookAuth {
    /// The secret of the delivery URL (and the HMAC key). An empty secret accepts nothing.
    pub secret: Secret,
    /// The header carrying the body's HMAC (e.g. `X-Signature`), when signatures are required.
    pub hmac_header: Option<String>,
}

impl WebhookAuth {
    /// Authentication by the URL secret alone.
    pub fn new(secret: impl Into<Secret>) -> Self {
        Self { secret: secret.into(), hmac_header: None }
    }

    /// Also requires the header `name` to hold the hex HMAC-SHA256 of the body (`sha256=` prefix
    /// allowed).
    pub fn with_hmac_header(mut self, name: impl Into<String>) -> Self {
        self.hmac_header = Some(name.into());
        self
    }

    /// Whether a delivery with this URL secret, signature header value and body is authentic.
    pub fn verify(&self, path_secret: &str, signature: Option<&str>, body: &[u8]) -> bool {
        let expected = self.secret.expose().as_bytes();
        // Evaluate both checks whatever the first one says (no shortcut on the URL secret).
        let secret_ok = !expected.is_empty() & constant_time_eq(path_secret.as_bytes(), expected);
        let signature_ok = match &self.hmac_header {
            None => true,
            Some(_) => signature.is_some_and(|sig| self.signature_matches(sig, body)),
        };
        secret_ok & signature_ok
    }

    fn signature_matches(&self, signature: &str, body: &[u8]) -> bool {
        let hex = signature.trim();
        let hex = hex.strip_prefix("sha256=").unwrap_or(hex);
        let Some(bytes) = decode_hex(hex) else { return false };
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.expose().as_bytes()) else {
            return false;
        };
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&bytes).is_ok()
    }
}

/// A parsed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// The event name as sent (`card:update`, or an alias such as `card.move`).
    pub name: String,
    /// The entity to refetch; `None` for events the mirror ignores (unknown entities, or an event
    /// about a card's comment, file, ... that does not say which card).
    pub notification: Option<Notification>,
}

/// Events about something attached to a card: they change the card (counters, members,
/// `blocked`), so the card is refetched.
const CARD_CHILDREN: &[&str] = &[
    "comment",
    "card_member",
    "member",
    "file",
    "card_file",
    "block",
    "blocker",
    "card_blocker",
    "card_time_log",
    "time_log",
    "checklist",
    "checklist_item",
    "card_tag",
    "card_property",
    "card_child",
    "card_parent",
];

impl WebhookEvent {
    /// Parses a delivery body. Fails with [`WebhookError::Malformed`] naming what is wrong.
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| WebhookError::Malformed(format!("webhook body is not JSON: {e}")))?;
        let Value::Object(mut top) = value else {
            return Err(WebhookError::Malformed(format!(
                "webhook body is {}, not a JSON object",
                kaiten_client::models::json_kind(&value)
            )));
        };
        let name = match top.get("event") {
            Some(Value::String(name)) if !name.trim().is_empty() => name.trim().to_owned(),
            Some(Value::String(_)) => return Err(WebhookError::Malformed("webhook \"event\" is empty".into())),
            Some(other) => {
                return Err(WebhookError::Malformed(format!(
                    "webhook \"event\" is {}, expected a string such as \"card:update\"",
                    kaiten_client::models::json_kind(other)
                )))
            }
            None => return Err(WebhookError::Malformed("webhook body has no \"event\" field".into())),
        };
        let data = match top.remove("data") {
            Some(Value::Null) | None => {
                return Err(WebhookError::Malformed(format!("{name} delivery has no \"data\" field")))
            }
            Some(Value::Object(data)) => data,
            Some(other) => {
                return Err(WebhookError::Malformed(format!(
                    "{name} \"data\" is {}, not a JSON object",
                    kaiten_client::models::json_kind(&other)
                )))
            }
        };
        let notification = notification(&name, &data).map_err(WebhookError::Malformed)?;
        Ok(Self { name, notification })
    }

    /// Whether the mirror ignores this event.
    pub fn is_ignored(&self) -> bool {
        self.notification.is_none()
    }
}

/// Where a field of the delivery is: the new value (`changes`), the record (`data`), or the old
/// value (`old`), in that order.
struct Fields<'a> {
    data: &'a Map<String, Value>,
    old: Option<&'a Map<String, Value>>,
    changes: Option<&'a Map<String, Value>>,
}

impl<'a> Fields<'a> {
    fn new(data: &'a Map<String, Value>) -> Self {
        Self {
            data,
            old: data.get("old").and_then(Value::as_object),
            changes: data.get("changes").and_then(Value::as_object),
        }
    }

    /// The value of `key` and the path it was found at.
    fn get(&self, key: &str) -> Option<(&'a Value, String)> {
        if let Some(v) = self.changes.and_then(|c| c.get(key)).filter(|v| !v.is_null()) {
            return Some((v, format!("data.changes.{key}")));
        }
        if let Some(v) = self.data.get(key).filter(|v| !v.is_null()) {
            return Some((v, format!("data.{key}")));
        }
        self.old.and_then(|o| o.get(key)).filter(|v| !v.is_null()).map(|v| (v, format!("data.old.{key}")))
    }

    /// A positive integer id at `key`; `Ok(None)` when absent, an error naming the path when it is
    /// there but not an id.
    fn id(&self, key: &str) -> Result<Option<i64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some((Value::Number(n), path)) => match n.as_i64() {
                Some(id) if id > 0 => Ok(Some(id)),
                _ => Err(format!("{path} is {n}, not a positive integer id")),
            },
            Some((other, path)) => {
                Err(format!("{path} is {}, not an integer id", kaiten_client::models::json_kind(other)))
            }
        }
    }

    /// Where the entity's own id should have been, for errors.
    fn id_path(&self) -> &'static str {
        if self.old.is_some() || self.changes.is_some() {
            "data.old.id"
        } else {
            "data.id"
        }
    }
}

/// The entity a delivery names, by Kaiten's `entity:verb` event names (dot-style aliases such as
/// `card.move` accepted); `Ok(None)` for what the mirror does not follow.
fn notification(name: &str, data: &Map<String, Value>) -> Result<Option<Notification>, String> {
    let lower = name.to_ascii_lowercase();
    let Some((entity, _verb)) = lower.split_once([':', '.']) else {
        return Ok(None);
    };
    let fields = Fields::new(data);
    let own_id = |what: &str| -> Result<i64, String> {
        fields.id("id")?.ok_or_else(|| format!("{name} without {} (the {what}'s id)", fields.id_path()))
    };
    let note = |kind: EntityKind, entity_id: i64, parent_id: Option<i64>| {
        Some(Notification { kind, entity_id, parent_id, event: name.to_owned() })
    };
    let card_of_child = || -> Result<Option<i64>, String> {
        if let Some(card) = fields.id("card_id")? {
            return Ok(Some(card));
        }
        match data.get("card").and_then(|c| c.get("id")) {
            Some(Value::Number(n)) => Ok(n.as_i64().filter(|id| *id > 0)),
            _ => Ok(None),
        }
    };
    Ok(match entity {
        "card" => note(EntityKind::Cards, own_id("card")?, None),
        "board" => note(EntityKind::Boards, own_id("board")?, fields.id("space_id")?),
        "space" => note(EntityKind::Spaces, own_id("space")?, None),
        "tag" => match card_of_child()? {
            Some(card) => note(EntityKind::Cards, card, None),
            None => note(EntityKind::Tags, own_id("tag")?, None),
        },
        "column" | "subcolumn" | "lane" => {
            fields.id("board_id")?.and_then(|board| note(EntityKind::Boards, board, None))
        }
        child if CARD_CHILDREN.contains(&child) => {
            card_of_child()?.and_then(|card| note(EntityKind::Cards, card, None))
        }
        _ => None,
    })
}

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
                Err(e) => warn!(error = %e, "webhook inbox: applying deliveries failed; retrying"),
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
            Err(e) => warn!(error = %e, "could not mark stale webhook runs interrupted"),
        }
        if let Some(retention) = options.run_retention {
            let before = now_millis() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
            match store.prune_runs(before, options.keep_runs).await {
                Ok(0) => {}
                Ok(n) => info!(runs = n, "pruned old runs from sync_logs"),
                Err(e) => warn!(error = %e, "could not prune old runs from sync_logs"),
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
        let mut cache = ParentCache::default();
        let mut batch = Batch_ { handler: self, cache: &mut cache, record: &mut record, outcomes: HashMap::new() };
        let result = batch.apply(&entries).await;
        let outcomes = std::mem::take(&mut batch.outcomes);
        // Entries without an outcome (the batch failed before reaching them) fail with its error.
        let batch_error = result.as_ref().err().map(ToString::to_string);
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
                    let retry_at = (!give_up).then(|| after(now, options.backoff(e.attempts)));
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
            errors.push(format!("recording the outcome in the inbox failed: {e}"));
        }
        record.error = (!errors.is_empty()).then(|| {
            let shown: Vec<&str> = errors.iter().take(10).map(String::as_str).collect();
            let more = errors.len().saturating_sub(shown.len());
            let tail = if more > 0 { format!("; and {more} more") } else { String::new() };
            format!("{}{tail}", shown.join("; "))
        });
        if let Err(e) = store.update_run(&record).await {
            warn!(run_id = record.id, error = %e, "could not record the end of a webhook run in sync_logs");
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

struct BatchDone {
    run_id: i64,
    entries: u64,
    applied: u64,
    failed: u64,
    requests: u64,
}

/// One batch being applied: its outcome per entity.
#[allow(non_camel_case_types)]
struct Batch_<'a> {
    handler: &'a WebhookHandler,
    cache: &'a mut ParentCache,
    record: &'a mut RunRecord,
    outcomes: HashMap<(EntityKind, i64), Result<(), String>>,
}

impl Batch_<'_> {
    fn client(&self) -> &KaitenClient {
        &self.handler.inner.client
    }

    fn store(&self) -> &dyn Store {
        &*self.handler.inner.store
    }

    fn parents(&mut self) -> Parents<'_> {
        Parents {
            client: &self.handler.inner.client,
            store: &*self.handler.inner.store,
            cache: self.cache,
            record: self.record,
        }
    }

    fn settle(&mut self, kind: EntityKind, ids: impl IntoIterator<Item = i64>, outcome: &Result<(), SyncError>) {
        for id in ids {
            self.outcomes.insert((kind, id), outcome.as_ref().map(|_| ()).map_err(ToString::to_string));
        }
    }

    async fn apply(&mut self, entries: &[InboxEntry]) -> Result<(), SyncError> {
        let ids = |kind: EntityKind| -> BTreeSet<i64> {
            entries.iter().filter(|e| e.kind == kind).map(|e| e.entity_id).collect()
        };
        let spaces = ids(EntityKind::Spaces);
        if !spaces.is_empty() {
            let outcome = self.refresh_spaces(&spaces).await;
            self.settle(EntityKind::Spaces, spaces, &outcome);
        }
        let boards = ids(EntityKind::Boards);
        if !boards.is_empty() {
            let hints: HashMap<i64, i64> = entries
                .iter()
                .filter(|e| e.kind == EntityKind::Boards)
                .filter_map(|e| e.parent_id.map(|p| (e.entity_id, p)))
                .collect();
            let outcome = self.refresh_boards(&boards, &hints).await;
            self.settle(EntityKind::Boards, boards, &outcome);
        }
        let tags = ids(EntityKind::Tags);
        if !tags.is_empty() {
            let outcome = self.refresh_tags(&tags).await;
            self.settle(EntityKind::Tags, tags, &outcome);
        }
        let cards: Vec<&InboxEntry> = entries.iter().filter(|e| e.kind == EntityKind::Cards).collect();
        if !cards.is_empty() {
            self.refresh_cards(&cards).await?;
        }
        Ok(())
    }

    async fn refresh_spaces(&mut self, wanted: &BTreeSet<i64>) -> Result<(), SyncError> {
        let listed = self.parents().list_spaces(true).await?;
        let found: Vec<_> = listed.into_iter().filter(|s| wanted.contains(&s.id)).collect();
        let gone: Vec<i64> = wanted.iter().copied().filter(|id| !found.iter().any(|s| s.id == *id)).collect();
        self.write(Batch::Spaces(found)).await?;
        self.mark_gone(EntityKind::Spaces, &gone).await
    }

    async fn refresh_boards(&mut self, wanted: &BTreeSet<i64>, hints: &HashMap<i64, i64>) -> Result<(), SyncError> {
        let gone: Vec<i64> = self.parents().refresh_boards(wanted, hints).await?.into_iter().collect();
        self.mark_gone(EntityKind::Boards, &gone).await
    }

    /// Tags are listed whole; a tag missing from `/tags` is left alone (a tag on no card is not
    /// listed, and tags cannot be deleted through the API).
    async fn refresh_tags(&mut self, wanted: &BTreeSet<i64>) -> Result<(), SyncError> {
        let before = self.client().stats().requests;
        let tags = self.client().tags().await;
        self.record.api_requests += self.client().stats().requests.saturating_sub(before).max(1);
        let found: Vec<_> = tags?.into_iter().filter(|t| wanted.contains(&t.id)).collect();
        self.write(Batch::Tags(found)).await
    }

    /// Writes records of the batch's own kinds (not parents), counting them as fetched.
    async fn write(&mut self, batch: Batch) -> Result<(), SyncError> {
        if batch.is_empty() {
            return Ok(());
        }
        let kind = batch.kind();
        let fetched = batch.len();
        let page = Page { batch, sweep: None, state: None, synced_at: now_millis() };
        let outcome = self.store().apply_page(&page).await?;
        self.record.stats.entry(kind).or_default().add_page(fetched, outcome);
        Ok(())
    }

    /// Kaiten no longer has these: mark the stored ones deleted (creating nothing).
    async fn mark_gone(&mut self, kind: EntityKind, ids: &[i64]) -> Result<(), SyncError> {
        if ids.is_empty() {
            return Ok(());
        }
        let deleted = self.store().mark_deleted(kind, ids, now_millis()).await?;
        if deleted > 0 {
            info!(kind = kind.as_str(), ids = ?ids, deleted, "webhook: Kaiten no longer has these; marked deleted");
        }
        self.record.stats.entry(kind).or_default().deleted += deleted;
        Ok(())
    }

    /// Fetches the cards: one incremental listing for a bulk batch, then one request per card not
    /// covered; writes them through the parent resolver; marks those Kaiten answers 404 for deleted.
    async fn refresh_cards(&mut self, entries: &[&InboxEntry]) -> Result<(), SyncError> {
        let options = self.handler.inner.options.clone();
        let wanted: BTreeSet<i64> = entries.iter().map(|e| e.entity_id).collect();
        let mut fetched: Vec<Card> = Vec::new();
        let mut covered: BTreeSet<i64> = BTreeSet::new();
        if wanted.len() >= options.bulk_listing_min {
            let since = entries.iter().map(|e| e.received_at).min().unwrap_or_else(now_millis)
                - chrono::Duration::from_std(options.listing_overlap).unwrap_or_default();
            // Never spend more requests on the listing than fetching each card would cost.
            let budget = wanted.len() as u64;
            let listed = self.list_changed_cards(since, budget).await?;
            for card in listed {
                covered.insert(card.id);
                fetched.push(card);
            }
            info!(
                cards = wanted.len(),
                listed = fetched.len(),
                "webhook: bulk change fetched with an incremental listing"
            );
        }
        let single: Vec<i64> = wanted.iter().copied().filter(|id| !covered.contains(id)).collect();
        let client = self.client().clone();
        let mut results = futures::stream::iter(single)
            .map(|id| {
                let client = client.clone();
                async move { (id, client.card(id).await) }
            })
            .buffer_unordered(options.concurrency.max(1));
        let mut gone = Vec::new();
        let mut failed: Vec<(i64, SyncError)> = Vec::new();
        while let Some((id, result)) = results.next().await {
            self.record.api_requests += 1;
            match result {
                Ok(card) => fetched.push(card),
                Err(kaiten_client::Error::NotFound { .. }) => gone.push(id),
                Err(e) => failed.push((id, e.into())),
            }
        }
        drop(results);
        for (id, e) in failed {
            self.settle(EntityKind::Cards, [id], &Err(e));
        }
        // A fetched card may be deleted (`condition` 3): the store marks it so.
        let ids: Vec<i64> = fetched.iter().map(|c| c.id).collect();
        let written = async {
            let cards = self.parents().prepare_cards(fetched).await?;
            for chunk in cards.chunks(KaitenClient::CARDS_PAGE_MAX as usize) {
                self.write(Batch::Cards(chunk.to_vec())).await?;
            }
            self.mark_gone(EntityKind::Cards, &gone).await
        }
        .await;
        let settled: Vec<i64> = ids.into_iter().chain(gone).filter(|id| wanted.contains(id)).collect();
        self.settle(EntityKind::Cards, settled, &written);
        written
    }

    /// Cards changed since `since`, live and archived, ordered by `updated`; stops (returning what
    /// it has) after `budget` requests.
    async fn list_changed_cards(&mut self, since: DateTime<Utc>, budget: u64) -> Result<Vec<Card>, SyncError> {
        let page_size = KaitenClient::CARDS_PAGE_MAX;
        let mut out = Vec::new();
        let mut spent = 0;
        for condition in [Condition::Live, Condition::Archived] {
            let mut query = CardQuery::new();
            query.condition = Some(condition);
            query.order_by = Some("updated".to_owned());
            query.order_direction = Some(OrderDirection::Asc);
            query.additional_card_fields = vec!["description".to_owned()];
            let mut pos = WalkPos { after: Some(since), offset: 0, offset_only: false };
            loop {
                if spent >= budget {
                    warn!(budget, "webhook: the bulk listing reached its request budget; fetching the rest one by one");
                    return Ok(out);
                }
                let mut q = query.clone();
                if !pos.offset_only {
                    q.updated_after = pos.after;
                }
                spent += 1;
                self.record.api_requests += 1;
                let page = self.client().cards_page(&q, PageRequest { limit: page_size, offset: pos.offset }).await?;
                let full = page.len() >= page_size as usize;
                let next = next_position(pos, &page);
                out.extend(page);
                if !full || next == pos {
                    break;
                }
                pos = next;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_equal_unequal_and_lengths() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"s3cret-s3cret-s3cret", b"s3cret-s3cret-s3cret"));
        assert!(!constant_time_eq(b"s3cret-s3cret-s3creT", b"s3cret-s3cret-s3cret"));
        assert!(!constant_time_eq(b"X3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cret\0", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b""));
        // Lengths differing by a multiple of 256 are still different lengths.
        assert!(!constant_time_eq(&[0u8; 256], &[]));
    }

    #[test]
    fn hex_and_hmac() {
        assert_eq!(decode_hex("00ff10Ab"), Some(vec![0, 255, 16, 171]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let auth = WebhookAuth::new("Jefe").with_hmac_header("X-Signature");
        let body = b"what do ya want for nothing?";
        let sig = hmac_sha256_hex(b"Jefe", body);
        assert!(auth.verify("Jefe", Some(&sig), body));
        assert!(auth.verify("Jefe", Some(&format!("sha256={}", sig.to_uppercase())), body));
        assert!(!auth.verify("Jefe", None, body));
        assert!(!auth.verify("Jefe", Some(&sig), b"another body"));
        assert!(!auth.verify("nope", Some(&sig), body));
    }

    #[test]
    fn empty_secret_accepts_nothing() {
        assert!(!WebhookAuth::new("").verify("", None, b"{}"));
    }

    fn parsed(body: serde_json::Value) -> Option<(EntityKind, i64, Option<i64>)> {
        let event = WebhookEvent::parse(body.to_string().as_bytes()).unwrap();
        event.notification.map(|n| (n.kind, n.entity_id, n.parent_id))
    }

    #[test]
    fn events_name_the_entity_to_refetch() {
        use serde_json::json;
        let author = json!({"id": 1});
        // card:add carries a few fields; card:update partial old/changes.
        assert_eq!(
            parsed(json!({"event": "card:add", "data": {"id": 6, "title": "t", "author": author}})),
            Some((EntityKind::Cards, 6, None))
        );
        assert_eq!(
            parsed(
                json!({"event": "card:update", "data": {"old": {"id": 5, "title": "a"}, "changes": {"title": "b"}}})
            ),
            Some((EntityKind::Cards, 5, None))
        );
        assert_eq!(parsed(json!({"event": "card.move", "data": {"id": 5}})), Some((EntityKind::Cards, 5, None)));
        // Board: the space named in the delivery is a hint where to look it up.
        assert_eq!(
            parsed(
                json!({"event": "board:update", "data": {"old": {"id": 9, "space_id": 2}, "changes": {"title": "x"}}})
            ),
            Some((EntityKind::Boards, 9, Some(2)))
        );
        assert_eq!(
            parsed(json!({"event": "space:update", "data": {"old": {"id": 3}}})),
            Some((EntityKind::Spaces, 3, None))
        );
        // A tag put on or taken off a card refetches the card; a tag on its own the tag.
        assert_eq!(
            parsed(json!({"event": "tag:remove", "data": {"id": 40, "card_id": 77}})),
            Some((EntityKind::Cards, 77, None))
        );
        assert_eq!(
            parsed(json!({"event": "Tag:Add", "data": {"id": 40, "name": "x"}})),
            Some((EntityKind::Tags, 40, None))
        );
        // Things attached to a card refetch the card.
        for name in ["comment:add", "card_member:remove", "file:add", "block:update", "card_time_log:add"] {
            assert_eq!(
                parsed(json!({"event": name, "data": {"id": 1, "card_id": 12}})),
                Some((EntityKind::Cards, 12, None))
            );
        }
        assert_eq!(
            parsed(
                json!({"event": "comment:update", "data": {"old": {"id": 1, "card_id": 13}, "changes": {"text": "x"}}})
            ),
            Some((EntityKind::Cards, 13, None))
        );
        // Columns and lanes have no events in Kaiten; aliases refresh their board.
        assert_eq!(
            parsed(json!({"event": "column:update", "data": {"id": 1, "board_id": 9}})),
            Some((EntityKind::Boards, 9, None))
        );
        // Ignored: unknown entities, a comment that names no card, names without a verb.
        assert_eq!(parsed(json!({"event": "automation:run", "data": {"id": 1}})), None);
        assert_eq!(parsed(json!({"event": "comment:add", "data": {"id": 1}})), None);
        assert_eq!(parsed(json!({"event": "card", "data": {"id": 1}})), None);
    }

    #[test]
    fn malformed_bodies_name_the_problem() {
        let msg = |body: &[u8]| WebhookEvent::parse(body).unwrap_err().to_string();
        assert_eq!(msg(b"<html>oops</html>"), "webhook body is not JSON: expected value at line 1 column 1");
        assert!(msg(br#"{"event":"card:add","data":{"id":1"#).starts_with("webhook body is not JSON: EOF"));
        assert_eq!(msg(br#"{"data":{}}"#), "webhook body has no \"event\" field");
        assert_eq!(msg(br#"{"event":"card:add"}"#), "card:add delivery has no \"data\" field");
        assert_eq!(
            msg(br#"{"event":"card:update","data":{"old":{"title":"x"},"changes":{}}}"#),
            "card:update without data.old.id (the card's id)"
        );
        assert_eq!(msg(br#"{"event":"card:add","data":{"title":"x"}}"#), "card:add without data.id (the card's id)");
        assert_eq!(msg(br#"{"event":"card:add","data":{"id":"7"}}"#), "data.id is a string, not an integer id");
        assert_eq!(msg(br#"{"event":"card:add","data":{"id":-3}}"#), "data.id is -3, not a positive integer id");
        assert_eq!(
            msg(br#"{"event":"comment:add","data":{"id":1,"card_id":true}}"#),
            "data.card_id is a boolean, not an integer id"
        );
        assert_eq!(msg(br#"{"event":"tag:add","data":[1]}"#), "tag:add \"data\" is an array, not a JSON object");
        assert_eq!(msg(b"[1]"), "webhook body is an array, not a JSON object");
        assert_eq!(
            msg(br#"{"event":7,"data":{}}"#),
            "webhook \"event\" is a number, expected a string such as \"card:update\""
        );
    }

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
