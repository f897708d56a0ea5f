//! Kaiten webhooks: authenticate a delivery, parse it, and apply it to the [`Store`].
//!
//! Kaiten posts `{"event": "card:update", "data": {...}}` to one URL per space, signs nothing,
//! retries nothing and promises no order (`kaiten-api.md`). So:
//!
//! - a delivery is authenticated by a secret in its URL (`/webhooks/kaiten/<secret>`), compared in
//!   constant time ([`constant_time_eq`]), and optionally by an HMAC-SHA256 header added by a
//!   signing proxy ([`WebhookAuth::with_hmac_header`]); anything else is
//!   [`WebhookError::Unauthorized`] and nothing is parsed or stored;
//! - applying is one order-safe upsert ([`Store::apply_page`]): a delivery older than what is
//!   stored (by `updated`, then `version`) changes nothing and is reported as
//!   [`WebhookOutcome::stale`]; a repeated delivery is a no-op;
//! - a card whose board, column or lane is not stored yet gets them first (listed from Kaiten, or
//!   stored as placeholders the next sync fills in), so no reference ever dangles;
//! - every applied delivery is a run of kind [`RunKind::Webhook`] in `sync_logs`; events about things
//!   the mirror does not store (comments, members, files, time logs, blockers) are accepted and
//!   ignored.
//!
//! Webhooks never take the sync lock: upserts are order-safe, so a delivery and a running sync
//! interleave safely. Whatever a webhook misses (Kaiten does not retry), the next incremental sync
//! repairs.
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
//! let app = axum::Router::new()
//!     .route("/webhooks/kaiten/{secret}", axum::routing::post(kaiten_webhook))
//!     .with_state(handler);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use kaiten_client::{Board, Card, Column, KaitenClient, Lane, Record, Secret, Space, Tag};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use tracing::{info, warn};

use crate::schema::{EntityKind, SqlValue};
use crate::store::{
    now_millis, Batch, EntityStats, Page, PageOutcome, RunKind, RunRecord, RunStatus, Store, StoreError,
};

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

/// What an event does to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventAction {
    /// `*:add` (aliases `*.create`, `*.created`).
    Add,
    /// `*:update` (aliases `*.update`, `*.move`, `*.updated`, `*.moved`).
    Update,
    /// `*:remove` (aliases `*.delete`, `*.deleted`, `*.removed`).
    Remove,
}

/// A parsed delivery.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// The event name as sent (`card:update`, or an alias such as `card.move`).
    pub name: String,
    /// The kind and action, for events about records the mirror stores; `None` for events it
    /// ignores (comments, card members, files, time logs, blockers, anything unknown).
    pub target: Option<(EntityKind, EventAction)>,
    /// The record as it is after the event (for an update: `data.old` with `data.changes` merged
    /// over its top-level keys; `author` removed). `Null` for ignored events.
    pub record: Value,
}

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
            Some(data) => data,
        };
        let Some(target) = classify(&name) else {
            return Ok(Self { name, target: None, record: Value::Null });
        };
        let Value::Object(data) = data else {
            return Err(WebhookError::Malformed(format!(
                "{name} \"data\" is {}, not a JSON object",
                kaiten_client::models::json_kind(&data)
            )));
        };
        let (record, id_path) = build_record(data);
        match record.get("id") {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|id| id > 0) => {}
            Some(Value::Number(n)) => {
                return Err(WebhookError::Malformed(format!("{name} has {id_path} {n}, not a positive integer id")))
            }
            Some(other) => {
                return Err(WebhookError::Malformed(format!(
                    "{name} has {id_path} as {}, not an integer",
                    kaiten_client::models::json_kind(other)
                )))
            }
            None => return Err(WebhookError::Malformed(format!("{name} without {id_path}"))),
        }
        Ok(Self { name, target: Some(target), record: Value::Object(record) })
    }

    /// The kind of record the event is about, unless ignored.
    pub fn kind(&self) -> Option<EntityKind> {
        self.target.map(|(kind, _)| kind)
    }

    /// What the event does, unless ignored.
    pub fn action(&self) -> Option<EventAction> {
        self.target.map(|(_, action)| action)
    }

    /// The record's id, unless ignored.
    pub fn id(&self) -> Option<i64> {
        self.record.get("id").and_then(Value::as_i64)
    }

    /// Whether the mirror ignores this event.
    pub fn is_ignored(&self) -> bool {
        self.target.is_none()
    }
}

/// `card:update`, `card.move`, ... → (kind, action); `None` for what the mirror does not store.
fn classify(name: &str) -> Option<(EntityKind, EventAction)> {
    let lower = name.to_ascii_lowercase();
    let (entity, verb) = lower.split_once([':', '.'])?;
    let kind = match entity {
        "card" => EntityKind::Cards,
        "board" => EntityKind::Boards,
        "space" => EntityKind::Spaces,
        "tag" => EntityKind::Tags,
        "column" => EntityKind::Columns,
        "lane" => EntityKind::Lanes,
        _ => return None,
    };
    let action = match verb {
        "add" | "create" | "created" | "added" => EventAction::Add,
        "update" | "updated" | "move" | "moved" | "change" | "changed" => EventAction::Update,
        "remove" | "removed" | "delete" | "deleted" => EventAction::Remove,
        _ => return None,
    };
    Some((kind, action))
}

/// The record of an event's data: `old` merged with `changes` when the data has `old` (an update),
/// else the data itself; `author` dropped. Also returns where the id should have been, for errors.
fn build_record(mut data: Map<String, Value>) -> (Map<String, Value>, &'static str) {
    data.remove("author");
    match data.remove("old") {
        Some(Value::Object(mut old)) => {
            if let Some(Value::Object(changes)) = data.remove("changes") {
                for (key, value) in changes {
                    old.insert(key, value);
                }
            }
            old.remove("author");
            (old, "data.old.id")
        }
        Some(other) => {
            // Not an update shape after all; keep what was sent and look for the id in data.
            data.insert("old".to_owned(), other);
            let path = if data.contains_key("id") { "data.id" } else { "data.old.id" };
            (data, path)
        }
        None if data.contains_key("changes") && !data.contains_key("id") => (data, "data.old.id"),
        None => (data, "data.id"),
    }
}

/// What a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookOutcome {
    /// The event name as sent.
    pub event: String,
    /// Whether the record was written (inserted, changed, or marked deleted).
    pub applied: bool,
    /// Whether the delivery was older than the stored record and so changed nothing.
    pub stale: bool,
    /// Whether the event is about something the mirror does not store.
    pub ignored: bool,
    /// The delivery's run in `sync_logs` (`None` for ignored events).
    pub run_id: Option<i64>,
}

/// Why a delivery was refused or failed. Never contains the secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL secret (or the signature) is wrong: nothing was parsed or stored.
    #[error("webhook delivery not authenticated: wrong secret in the URL, or a missing or invalid signature")]
    Unauthorized,
    /// The body is not a delivery the mirror understands: nothing was stored.
    #[error("{0}")]
    Malformed(String),
    /// The database failed.
    #[error("database error while applying a webhook: {0}")]
    Store(#[from] StoreError),
    /// Kaiten failed while fetching a record the delivery refers to (a card's board, columns, lanes).
    #[error("Kaiten API error while applying a webhook: {0}")]
    Api(#[from] kaiten_client::Error),
}

impl WebhookError {
    /// The HTTP status to answer with: 401, 400, 503 (database) or 502 (Kaiten).
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::Unauthorized => 401,
            WebhookError::Malformed(_) => 400,
            WebhookError::Store(_) => 503,
            WebhookError::Api(_) => 502,
        }
    }
}

/// Authenticates and applies webhook deliveries. Cheap to clone (clones share the client and the
/// store), so it can be an axum state directly.
#[derive(Clone)]
pub struct WebhookHandler {
    inner: Arc<Inner>,
}

struct Inner {
    client: KaitenClient,
    store: Arc<dyn Store>,
    auth: WebhookAuth,
}

impl fmt::Debug for WebhookHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookHandler")
            .field("client", &self.inner.client)
            .field("store", &self.inner.store)
            .field("auth", &self.inner.auth)
            .finish()
    }
}

impl WebhookHandler {
    /// A handler writing to `store`, fetching missing parents through `client`.
    pub fn new(client: KaitenClient, store: Arc<dyn Store>, auth: WebhookAuth) -> Self {
        if auth.secret.is_empty() {
            warn!("the webhook secret is empty: every delivery will be refused");
        }
        Self { inner: Arc::new(Inner { client, store, auth }) }
    }

    /// The header the adapter should pass as `signature`, when signatures are required.
    pub fn hmac_header(&self) -> Option<&str> {
        self.inner.auth.hmac_header.as_deref()
    }

    /// The store deliveries are written to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Handles one delivery: `path_secret` is the last segment of the URL, `signature` the value of
    /// the [`WebhookHandler::hmac_header`] header if the request had one, `body` the raw body.
    pub async fn handle(
        &self,
        path_secret: &str,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<WebhookOutcome, WebhookError> {
        if !self.inner.auth.verify(path_secret, signature, body) {
            warn!(bytes = body.len(), "webhook delivery refused: not authenticated");
            return Err(WebhookError::Unauthorized);
        }
        let event = WebhookEvent::parse(body).inspect_err(|e| warn!(error = %e, "malformed webhook delivery"))?;
        self.apply(event).await
    }

    /// Applies an event that the caller has already authenticated.
    pub async fn apply(&self, event: WebhookEvent) -> Result<WebhookOutcome, WebhookError> {
        let Some((kind, action)) = event.target else {
            info!(event = %event.name, "webhook event ignored: the mirror does not store it");
            return Ok(WebhookOutcome { event: event.name, applied: false, stale: false, ignored: true, run_id: None });
        };
        let id = event.id().unwrap_or_default();
        let mut scope = format!("{} {} {id}", event.name, singular(kind));
        if let Some(title) = event.record.get("title").or_else(|| event.record.get("name")).and_then(Value::as_str) {
            let short: String = title.chars().take(80).collect();
            let ellipsis = if short.len() < title.len() { "…" } else { "" };
            scope.push_str(&format!(" \"{short}{ellipsis}\""));
        }
        let mut run = RunRecord::start(RunKind::Webhook, vec![kind], Some(scope), now_millis());
        run.id = self.inner.store.start_run(&run).await?;
        let mut apply =
            Apply { client: &self.inner.client, store: &*self.inner.store, run, refreshed: BTreeSet::new() };
        let result = apply.event(kind, action, event.record).await;
        let mut run = apply.run;
        run.finished_at = Some(now_millis());
        run.entities = run.stats.keys().copied().collect();
        if !run.entities.contains(&kind) {
            run.entities.push(kind);
        }
        run.status = if result.is_ok() { RunStatus::Succeeded } else { RunStatus::Failed };
        run.error = result.as_ref().err().map(ToString::to_string);
        if let Err(e) = self.inner.store.update_run(&run).await {
            warn!(run_id = run.id, error = %e, "could not record the end of a webhook run in sync_logs");
            if result.is_ok() {
                return Err(e.into());
            }
        }
        match result {
            Ok(written) => {
                info!(event = %event.name, id, run_id = run.id, applied = written.applied, stale = written.stale,
                      "webhook applied");
                Ok(WebhookOutcome {
                    event: event.name,
                    applied: written.applied,
                    stale: written.stale,
                    ignored: false,
                    run_id: Some(run.id),
                })
            }
            Err(e) => {
                warn!(event = %event.name, id, run_id = run.id, error = %e, "webhook delivery failed");
                Err(e)
            }
        }
    }
}

fn singular(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Spaces => "space",
        EntityKind::Users => "user",
        EntityKind::CardTypes => "card type",
        EntityKind::Tags => "tag",
        EntityKind::PropertyDefinitions => "property",
        EntityKind::SelectValues => "select value",
        EntityKind::Boards => "board",
        EntityKind::Columns => "column",
        EntityKind::Lanes => "lane",
        EntityKind::Cards => "card",
    }
}

struct Written {
    applied: bool,
    stale: bool,
}

/// One delivery being applied.
struct Apply<'a> {
    client: &'a KaitenClient,
    store: &'a dyn Store,
    run: RunRecord,
    /// Boards whose columns and lanes were listed for this delivery.
    refreshed: BTreeSet<i64>,
}

impl Apply<'_> {
    fn stats(&mut self, kind: EntityKind) -> &mut EntityStats {
        self.run.stats.entry(kind).or_default()
    }

    fn request(&mut self) {
        self.run.api_requests += 1;
    }

    async fn event(
        &mut self,
        kind: EntityKind,
        action: EventAction,
        mut record: Value,
    ) -> Result<Written, WebhookError> {
        let malformed =
            |e: serde_json::Error| WebhookError::Malformed(format!("{} record does not parse: {e}", singular(kind)));
        if action == EventAction::Remove && kind != EntityKind::Cards {
            return self.remove(kind, record).await;
        }
        if action == EventAction::Remove && record.get("updated").is_none_or(Value::is_null) {
            // A bare `{"id": ..}` cannot be ordered against what is stored: mark the stored card
            // deleted rather than overwrite it with the stub.
            let id = record.get("id").and_then(Value::as_i64).unwrap_or_default();
            if !self.store.existing_ids(kind, &[id]).await?.is_empty() {
                return self.remove(kind, record).await;
            }
        }
        let batch = match kind {
            EntityKind::Cards => {
                if action == EventAction::Remove {
                    // Kaiten soft-deletes cards: condition 3 makes the store set `deleted_at`, and the
                    // upsert stays order-safe (a later restore with a newer `updated` wins).
                    if let Some(fields) = record.as_object_mut() {
                        fields.insert("condition".to_owned(), json!(3));
                    }
                }
                let mut card = Card::from_value(record.clone()).map_err(malformed)?;
                self.prepare_card(&mut card).await?;
                Batch::Cards(vec![card])
            }
            EntityKind::Boards => {
                let mut board = Board::from_value(record.clone()).map_err(malformed)?;
                let known = !self.store.existing_ids(EntityKind::Boards, &[board.id]).await?.is_empty();
                if board.space_id.is_none() {
                    board.space_id = self.board_space(board.id).await?;
                }
                if let Some(space_id) = board.space_id {
                    self.ensure_space(space_id).await?;
                }
                if !known || action == EventAction::Add {
                    // A new board: no events exist for columns and lanes, so list them now (before
                    // the board is written, so a failure leaves nothing half-done).
                    let structure = self.list_structure(board.id).await?;
                    let outcome = self.write(Batch::Boards(vec![board])).await?;
                    self.write_structure(structure).await?;
                    return self.written(kind, outcome, &record).await;
                }
                Batch::Boards(vec![board])
            }
            EntityKind::Spaces => Batch::Spaces(vec![Space::from_value(record.clone()).map_err(malformed)?]),
            EntityKind::Tags => Batch::Tags(vec![Tag::from_value(record.clone()).map_err(malformed)?]),
            EntityKind::Columns => {
                let column = Column::from_value(record.clone()).map_err(malformed)?;
                let mut columns = vec![column.clone()];
                columns.extend(column.subcolumns());
                Batch::Columns(columns)
            }
            EntityKind::Lanes => Batch::Lanes(vec![Lane::from_value(record.clone()).map_err(malformed)?]),
            other => return Err(WebhookError::Malformed(format!("events about {other} are not supported"))),
        };
        let outcome = self.write(batch).await?;
        self.written(kind, outcome, &record).await
    }

    /// Writes the delivery's page and counts it as the kind's one fetched record.
    async fn write(&mut self, batch: Batch) -> Result<PageOutcome, WebhookError> {
        let kind = batch.kind();
        let page = Page { batch, sweep: None, state: None, synced_at: now_millis() };
        let outcome = self.store.apply_page(&page).await?;
        self.stats(kind).add_page(1, outcome);
        Ok(outcome)
    }

    /// Whether the page wrote the record; if it did not, whether the stored record is a different
    /// (newer) one, i.e. the delivery was stale rather than a duplicate.
    async fn written(
        &mut self,
        kind: EntityKind,
        outcome: PageOutcome,
        record: &Value,
    ) -> Result<Written, WebhookError> {
        if outcome.inserted + outcome.updated > 0 {
            return Ok(Written { applied: true, stale: false });
        }
        let id = record.get("id").and_then(Value::as_i64).unwrap_or_default();
        let stored = self.store.get(kind, id).await?;
        let stale = stored.is_some_and(|s| s.raw != *record);
        Ok(Written { applied: false, stale })
    }

    /// `tag:remove` and the like: the record is marked deleted (stored first if it never was).
    async fn remove(&mut self, kind: EntityKind, record: Value) -> Result<Written, WebhookError> {
        let id = record.get("id").and_then(Value::as_i64).unwrap_or_default();
        if self.store.existing_ids(kind, &[id]).await?.is_empty() {
            let batch = match kind {
                EntityKind::Cards => Card::from_value(record).map(|c| Batch::Cards(vec![c])),
                EntityKind::Boards => Board::from_value(record).map(|b| Batch::Boards(vec![b])),
                EntityKind::Spaces => Space::from_value(record).map(|s| Batch::Spaces(vec![s])),
                EntityKind::Tags => Tag::from_value(record).map(|t| Batch::Tags(vec![t])),
                EntityKind::Columns => Column::from_value(record).map(|c| Batch::Columns(vec![c])),
                _ => Lane::from_value(record).map(|l| Batch::Lanes(vec![l])),
            }
            .map_err(|e| WebhookError::Malformed(format!("{} record does not parse: {e}", singular(kind))))?;
            self.write(batch).await?;
        } else {
            self.stats(kind).fetched += 1;
        }
        let deleted = self.store.mark_deleted(kind, &[id], now_millis()).await?;
        self.stats(kind).deleted += deleted;
        Ok(Written { applied: deleted > 0, stale: false })
    }

    /// Makes sure the card's board, column and lane are stored, and fills `space_id` from its board.
    async fn prepare_card(&mut self, card: &mut Card) -> Result<(), WebhookError> {
        if let Some(board) = card.board_id {
            if self.store.existing_ids(EntityKind::Boards, &[board]).await?.is_empty() {
                self.fetch_board(board, card).await?;
            }
            if card.space_id.is_none() {
                card.space_id = self.stored_board_space(board).await?;
            }
        }
        let column_missing = match card.column_id {
            Some(c) => self.store.existing_ids(EntityKind::Columns, &[c]).await?.is_empty(),
            None => false,
        };
        let lane_missing = match card.lane_id {
            Some(l) => self.store.existing_ids(EntityKind::Lanes, &[l]).await?.is_empty(),
            None => false,
        };
        if !column_missing && !lane_missing {
            return Ok(());
        }
        if let Some(board) = card.board_id.filter(|b| !self.refreshed.contains(b)) {
            let structure = self.list_structure(board).await?;
            self.write_structure(structure).await?;
        }
        // Whatever Kaiten did not list gets a placeholder, so the card's references never dangle.
        if let Some(column) = card.column_id.filter(|_| column_missing) {
            if self.store.existing_ids(EntityKind::Columns, &[column]).await?.is_empty() {
                warn!(
                    column,
                    card = card.id,
                    "a webhook card points to a column Kaiten does not list; storing a placeholder"
                );
                let placeholder = Column::from_value(placeholder(column, card.board_id))
                    .map_err(|e| WebhookError::Malformed(format!("column placeholder does not parse: {e}")))?;
                self.write_parent(Batch::Columns(vec![placeholder])).await?;
            }
        }
        if let Some(lane) = card.lane_id.filter(|_| lane_missing) {
            if self.store.existing_ids(EntityKind::Lanes, &[lane]).await?.is_empty() {
                warn!(
                    lane,
                    card = card.id,
                    "a webhook card points to a lane Kaiten does not list; storing a placeholder"
                );
                let placeholder = Lane::from_value(placeholder(lane, card.board_id))
                    .map_err(|e| WebhookError::Malformed(format!("lane placeholder does not parse: {e}")))?;
                self.write_parent(Batch::Lanes(vec![placeholder])).await?;
            }
        }
        Ok(())
    }

    /// A board's space is not stored: store it from `GET /spaces` (a placeholder when Kaiten does
    /// not list it), so the board never points to a missing row.
    async fn ensure_space(&mut self, space_id: i64) -> Result<(), WebhookError> {
        if !self.store.existing_ids(EntityKind::Spaces, &[space_id]).await?.is_empty() {
            return Ok(());
        }
        self.request();
        let space = match self.client.spaces().await?.into_iter().find(|s| s.id == space_id) {
            Some(space) => space,
            None => {
                warn!(
                    space = space_id,
                    "a webhook board belongs to a space Kaiten does not list; storing a placeholder"
                );
                Space::from_value(json!({"id": space_id, "placeholder": true}))
                    .map_err(|e| WebhookError::Malformed(format!("space placeholder does not parse: {e}")))?
            }
        };
        self.write_parent(Batch::Spaces(vec![space])).await
    }

    /// A board a card points to is not stored: find it through `GET /spaces` and
    /// `GET /spaces/{id}/boards`, store its space, the board, its columns and lanes (a placeholder
    /// board when Kaiten does not list it).
    async fn fetch_board(&mut self, board_id: i64, card: &Card) -> Result<(), WebhookError> {
        info!(board = board_id, card = card.id, "a webhook card points to a board not stored yet; fetching it");
        self.request();
        let spaces = self.client.spaces().await?;
        // Spaces embedding the board first; if none does (Kaiten left `boards` out), every space.
        let mut candidates: Vec<&Space> =
            spaces.iter().filter(|s| s.embedded_board_ids().contains(&board_id)).collect();
        if candidates.is_empty() {
            candidates = spaces.iter().filter(|s| s.raw.get("boards").is_none()).collect();
        }
        let mut found: Option<(Space, Board)> = None;
        for space in candidates {
            self.request();
            let boards = self.client.boards(space.id).await?;
            if let Some(mut board) = boards.into_iter().find(|b| b.id == board_id) {
                board.space_id = board.space_id.or(Some(space.id));
                found = Some((space.clone(), board));
                break;
            }
        }
        match found {
            Some((space, board)) => {
                let structure = self.list_structure(board_id).await?;
                self.write_parent(Batch::Spaces(vec![space])).await?;
                self.write_parent(Batch::Boards(vec![board])).await?;
                self.write_structure(structure).await?;
            }
            None => {
                // Nothing to list under a board Kaiten does not know: its columns and lanes get
                // placeholders too.
                self.refreshed.insert(board_id);
                warn!(
                    board = board_id,
                    card = card.id,
                    "a webhook card points to a board Kaiten does not list; storing a placeholder"
                );
                let board = Board::from_value(json!({"id": board_id, "placeholder": true}))
                    .map_err(|e| WebhookError::Malformed(format!("board placeholder does not parse: {e}")))?;
                self.write_parent(Batch::Boards(vec![board])).await?;
            }
        }
        Ok(())
    }

    /// Lists a board's columns (top-level then subcolumns) and lanes.
    async fn list_structure(&mut self, board_id: i64) -> Result<(Vec<Column>, Vec<Lane>), WebhookError> {
        self.refreshed.insert(board_id);
        // A board gone (404) or out of the token's reach (403) has nothing to list: what cards
        // point to gets placeholders.
        let gone = |e: &kaiten_client::Error| matches!(e.status(), Some(403 | 404));
        self.request();
        let top = match self.client.columns(board_id).await {
            Err(e) if gone(&e) => {
                warn!(board = board_id, error = %e, "cannot list the columns of a board a webhook refers to");
                Vec::new()
            }
            other => other?,
        };
        self.request();
        let lanes = match self.client.lanes(board_id).await {
            Err(e) if gone(&e) => {
                warn!(board = board_id, error = %e, "cannot list the lanes of a board a webhook refers to");
                Vec::new()
            }
            other => other?,
        };
        let mut columns = Vec::with_capacity(top.len() * 2);
        let mut subcolumns = Vec::new();
        for mut column in top {
            column.board_id = column.board_id.or(Some(board_id));
            subcolumns.extend(column.subcolumns());
            columns.push(column);
        }
        columns.extend(subcolumns);
        let lanes = lanes
            .into_iter()
            .map(|mut lane| {
                lane.board_id = lane.board_id.or(Some(board_id));
                lane
            })
            .collect();
        Ok((columns, lanes))
    }

    async fn write_structure(&mut self, (columns, lanes): (Vec<Column>, Vec<Lane>)) -> Result<(), WebhookError> {
        if !columns.is_empty() {
            self.write_parent(Batch::Columns(columns)).await?;
        }
        if !lanes.is_empty() {
            self.write_parent(Batch::Lanes(lanes)).await?;
        }
        Ok(())
    }

    /// Writes records fetched (or made up) so that the delivery's record has its parents.
    async fn write_parent(&mut self, batch: Batch) -> Result<(), WebhookError> {
        let kind = batch.kind();
        let fetched = batch.len();
        let page = Page { batch, sweep: None, state: None, synced_at: now_millis() };
        let outcome = self.store.apply_page(&page).await?;
        self.stats(kind).add_page(fetched, outcome);
        Ok(())
    }

    /// The space of a board as stored.
    async fn stored_board_space(&self, board_id: i64) -> Result<Option<i64>, WebhookError> {
        Ok(self.store.get(EntityKind::Boards, board_id).await?.and_then(|b| {
            match b.value(EntityKind::Boards, "space_id") {
                Some(SqlValue::Int(space)) => Some(*space),
                _ => None,
            }
        }))
    }

    /// The space of a board event that did not say: as stored, else the space embedding it in
    /// `GET /spaces`.
    async fn board_space(&mut self, board_id: i64) -> Result<Option<i64>, WebhookError> {
        if let Some(space) = self.stored_board_space(board_id).await? {
            return Ok(Some(space));
        }
        self.request();
        let spaces = self.client.spaces().await?;
        Ok(spaces.iter().find(|s| s.embedded_board_ids().contains(&board_id)).map(|s| s.id))
    }
}

fn placeholder(id: i64, board_id: Option<i64>) -> Value {
    json!({"id": id, "board_id": board_id, "placeholder": true})
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

    #[test]
    fn event_names_and_aliases() {
        assert_eq!(classify("card:add"), Some((EntityKind::Cards, EventAction::Add)));
        assert_eq!(classify("card.create"), Some((EntityKind::Cards, EventAction::Add)));
        assert_eq!(classify("card.move"), Some((EntityKind::Cards, EventAction::Update)));
        assert_eq!(classify("card.delete"), Some((EntityKind::Cards, EventAction::Remove)));
        assert_eq!(classify("Tag:Remove"), Some((EntityKind::Tags, EventAction::Remove)));
        assert_eq!(classify("space:update"), Some((EntityKind::Spaces, EventAction::Update)));
        assert_eq!(classify("comment:add"), None);
        assert_eq!(classify("card_member:add"), None);
        assert_eq!(classify("card"), None);
    }

    #[test]
    fn update_merges_old_and_changes_without_author() {
        let body = br#"{"event":"card:update","data":{"old":{"id":5,"title":"a","version":1},
            "changes":{"title":"b","version":2},"author":{"id":1}}}"#;
        let event = WebhookEvent::parse(body).unwrap();
        assert_eq!(event.record, json!({"id": 5, "title": "b", "version": 2}));
        assert_eq!(event.target, Some((EntityKind::Cards, EventAction::Update)));
        let add = WebhookEvent::parse(br#"{"event":"card:add","data":{"id":6,"author":{"id":1}}}"#).unwrap();
        assert_eq!(add.record, json!({"id": 6}));
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
            "card:update without data.old.id"
        );
        assert_eq!(msg(br#"{"event":"card:update","data":{"changes":{}}}"#), "card:update without data.old.id");
        assert_eq!(msg(br#"{"event":"card:add","data":{"title":"x"}}"#), "card:add without data.id");
        assert_eq!(
            msg(br#"{"event":"card:add","data":{"id":"7"}}"#),
            "card:add has data.id as a string, not an integer"
        );
        assert_eq!(msg(br#"{"event":"tag:add","data":[1]}"#), "tag:add \"data\" is an array, not a JSON object");
        assert_eq!(msg(b"[1]"), "webhook body is an array, not a JSON object");
        assert_eq!(
            msg(br#"{"event":7,"data":{}}"#),
            "webhook \"event\" is a number, expected a string such as \"card:update\""
        );
    }

    #[test]
    fn errors_map_to_statuses_and_hide_the_secret() {
        assert_eq!(WebhookError::Unauthorized.status(), 401);
        assert_eq!(WebhookError::Malformed("x".into()).status(), 400);
        assert_eq!(WebhookError::Store(StoreError::NotMigrated).status(), 503);
        let auth = WebhookAuth::new("very-secret-value-123");
        assert!(!format!("{auth:?}").contains("very-secret"));
    }
}
