//! The `Store` trait: everything the engine asks of a database, and the types it speaks in.
//!
//! The contract, which the conformance suite (crate `kaiten-sync-testkit`) checks for every store:
//! - [`Store::apply_page`] writes a page of records of one kind **and** the entity state it advances
//!   in one transaction: either all of it is committed or none of it.
//! - Upserts are idempotent and order-safe: a record older than the stored one (by `updated`, then
//!   `version`) never overwrites it; an identical record is counted as unchanged and not rewritten.
//! - Nothing is ever dropped: deletion only sets `deleted_at`.
//! - One sync at a time: [`Store::try_lock`] grants the lock to one holder; a lock whose holder has
//!   not refreshed it for `stale_after` may be taken over.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kaiten_client::Card;
use serde::{Deserialize, Serialize};

use crate::inbox::{InboxEntry, InboxResult, InboxStats, Notification};
use crate::schema::{EntityKind, Row, SqlValue};

pub use crate::schema::Batch;

impl Batch {
    /// The records as rows, in page order. When the page holds the same id twice, only the last
    /// occurrence is returned (a store writes each id once per page).
    pub fn rows(&self) -> Vec<Row<'_>> {
        dedup_last(self.rows_in_page_order())
    }

    /// The ids, in page order.
    pub fn ids(&self) -> Vec<i64> {
        self.rows().iter().map(|r| r.id).collect()
    }

    /// For a page of cards: the `(card_id, tag_id)` links, one per tag of each card.
    pub fn card_tags(&self) -> Vec<(i64, i64)> {
        match self {
            Batch::Cards(cards) => {
                let mut last: BTreeMap<i64, &Card> = BTreeMap::new();
                for card in cards {
                    last.insert(card.id.get(), card);
                }
                last.values()
                    .flat_map(|c| {
                        let mut tags = c.tag_ids.clone();
                        tags.sort_unstable();
                        tags.dedup();
                        tags.into_iter().map(move |t| (c.id.get(), t.get()))
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// For a page of cards: the member lists the page knows. A card's list is known when its raw
    /// JSON has a `members` array, as `GET /cards/{id}` returns (the list shape of `GET /cards`
    /// has none): stores replace the `card_members` rows of those cards when they write the card,
    /// and leave the rows of every other card alone. See [`CardMembers`] for how members parse.
    pub fn card_members(&self) -> CardMembers {
        let Batch::Cards(cards) = self else { return CardMembers::default() };
        let mut last: BTreeMap<i64, &Card> = BTreeMap::new();
        for card in cards {
            last.insert(card.id.get(), card);
        }
        let mut members = CardMembers::default();
        for card in last.values() {
            let Some(list) = &card.members else { continue };
            members.cards.push(card.id.get());
            let mut by_user: BTreeMap<i64, i64> = BTreeMap::new();
            for member in list {
                let Some(user) = member.user_id.map(|u| u.get()).filter(|u| *u > 0) else { continue };
                let kind = member.member_type.unwrap_or(CardMembers::MEMBER);
                let entry = by_user.entry(user).or_insert(kind);
                *entry = (*entry).max(kind);
            }
            members.links.extend(by_user.into_iter().map(|(user, kind)| (card.id.get(), user, kind)));
        }
        members
    }
}

/// The card members a page of cards carries ([`Batch::card_members`]): what a store writes to its
/// `card_members` table (`card_id`, `user_id`, `type`; one row per card and user).
///
/// A member is an object of the card's `members` array; its user is `user_id` (else `id`, which
/// Kaiten sets to the user's id too), an integer; its `type` is 1 (member) or 2 (responsible),
/// 1 when absent. Entries without a positive integer user are skipped; a user listed twice on one
/// card keeps the higher type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardMembers {
    /// Cards whose member list is known (their `members` array was present, possibly empty),
    /// ascending: a store replaces their rows when it writes the card row.
    pub cards: Vec<i64>,
    /// `(card_id, user_id, type)` of every member of those cards, ascending.
    pub links: Vec<(i64, i64, i64)>,
}

impl CardMembers {
    /// `type` of an ordinary member.
    pub const MEMBER: i64 = 1;
    /// `type` of the member responsible for the card.
    pub const RESPONSIBLE: i64 = 2;
}

fn dedup_last(rows: Vec<Row<'_>>) -> Vec<Row<'_>> {
    let mut last_index = std::collections::HashMap::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        last_index.insert(row.id, i);
    }
    if last_index.len() == rows.len() {
        return rows;
    }
    rows.into_iter().enumerate().filter(|(i, r)| last_index[&r.id] == *i).map(|(_, r)| r).collect()
}

/// The "newer wins" rule every store applies: whether an incoming record may replace the stored
/// one. It may unless it is older by `updated`, or, at equal (or unknown) `updated`, by `version`.
pub fn incoming_is_not_older(
    stored_updated: Option<DateTime<Utc>>,
    stored_version: Option<i64>,
    updated: Option<DateTime<Utc>>,
    version: Option<i64>,
) -> bool {
    match (stored_updated, updated) {
        (Some(s), Some(i)) if i < s => return false,
        (Some(s), Some(i)) if i > s => return true,
        _ => {}
    }
    !matches!((stored_version, version), (Some(s), Some(i)) if i < s)
}

/// The current time at millisecond precision, as the engine stamps `synced_at` and run times, so
/// every backend stores and reads back the same value.
pub fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// Per-entity sync state (`sync_metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityState {
    /// The entity kind.
    pub kind: EntityKind,
    /// The greatest `updated` committed by a listing of this kind; incremental syncs start there
    /// (minus the overlap window).
    pub cursor: Option<DateTime<Utc>>,
    /// When the last complete full listing of this kind finished.
    pub last_full_sync_at: Option<DateTime<Utc>>,
    /// When the last incremental listing of this kind finished.
    pub last_incremental_sync_at: Option<DateTime<Utc>>,
    /// Where an unfinished run stopped (opaque JSON owned by the engine); `None` when no run is
    /// half-way.
    pub resume: Option<String>,
    /// Rows of this kind stored (live, not deleted) when the state was last written.
    pub row_count: Option<i64>,
}

impl EntityState {
    /// The state of a kind never synced.
    pub fn new(kind: EntityKind) -> Self {
        Self {
            kind,
            cursor: None,
            last_full_sync_at: None,
            last_incremental_sync_at: None,
            resume: None,
            row_count: None,
        }
    }
}

/// A page to commit: records, the deletion sweep that saw them, and the state they advance.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The records.
    pub batch: Batch,
    /// When set, every record of the page is marked as seen by this sweep (a full listing in
    /// progress), including records that are unchanged.
    pub sweep: Option<i64>,
    /// When set, this state is written in the same transaction as the records.
    pub state: Option<EntityState>,
    /// The time written to `synced_at` of inserted and updated rows.
    pub synced_at: DateTime<Utc>,
}

/// What a page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageOutcome {
    /// Rows that did not exist.
    pub inserted: u64,
    /// Rows that existed and changed (including a deleted row coming back).
    pub updated: u64,
    /// Rows identical to what was stored, or older than it (not written).
    pub unchanged: u64,
}

/// Which rows a deletion sweep may touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Every row of the kind.
    All,
    /// Rows whose parent (the table's [`crate::schema::TableDef::scope_column`]) is one of these
    /// (bare ids: the parent's kind depends on the table, see [`Store`]).
    Parents(Vec<i64>),
}

/// Kinds of sync run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Everything, with deletion detection.
    Full,
    /// Only what changed since the last run.
    Incremental,
    /// Chosen kinds, spaces or boards.
    Selective,
    /// A webhook delivery.
    Webhook,
}

impl RunKind {
    /// Name stored in the run log.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Full => "full",
            RunKind::Incremental => "incremental",
            RunKind::Selective => "selective",
            RunKind::Webhook => "webhook",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "full" => RunKind::Full,
            "incremental" => RunKind::Incremental,
            "selective" => RunKind::Selective,
            "webhook" => RunKind::Webhook,
            _ => return None,
        })
    }
}

/// Status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still going (or its process died; the next run marks it `interrupted`).
    Running,
    /// Finished without error.
    Succeeded,
    /// Stopped on an error, recorded in `error`.
    Failed,
    /// Its process stopped before it finished.
    Interrupted,
}

impl RunStatus {
    /// Name stored in the run log.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            _ => return None,
        })
    }
}

/// Counters of one entity kind in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityStats {
    /// Pages fetched.
    pub pages: u64,
    /// Records fetched from Kaiten.
    pub fetched: u64,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Records identical to what was stored.
    pub unchanged: u64,
    /// Rows marked deleted.
    pub deleted: u64,
}

impl EntityStats {
    /// Adds a page's outcome.
    pub fn add_page(&mut self, fetched: usize, outcome: PageOutcome) {
        self.pages += 1;
        self.fetched += fetched as u64;
        self.inserted += outcome.inserted;
        self.updated += outcome.updated;
        self.unchanged += outcome.unchanged;
    }
}

/// A run as stored in `sync_logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Id assigned by the store.
    pub id: i64,
    /// Kind of run.
    pub kind: RunKind,
    /// Kinds the run covers.
    pub entities: Vec<EntityKind>,
    /// Scope in words (`spaces 1,2; boards 7`), if the run was limited.
    pub scope: Option<String>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End, once finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Status.
    pub status: RunStatus,
    /// Counters per kind.
    pub stats: BTreeMap<EntityKind, EntityStats>,
    /// HTTP requests to Kaiten.
    pub api_requests: u64,
    /// Requests that were retries.
    pub retries: u64,
    /// Error text for a failed run.
    pub error: Option<String>,
}

impl RunRecord {
    /// A new running record (id 0 until the store assigns one).
    pub fn start(kind: RunKind, entities: Vec<EntityKind>, scope: Option<String>, started_at: DateTime<Utc>) -> Self {
        Self {
            id: 0,
            kind,
            entities,
            scope,
            started_at,
            finished_at: None,
            status: RunStatus::Running,
            stats: BTreeMap::new(),
            api_requests: 0,
            retries: 0,
            error: None,
        }
    }

    /// Sum of a counter over all kinds.
    pub fn total(&self, f: impl Fn(&EntityStats) -> u64) -> u64 {
        self.stats.values().map(f).sum()
    }

    /// The run as the columns of `sync_logs` hold it, in every store: kind, entities and status by
    /// name, counters as signed integers (saturating), the totals of the per-kind counters, and
    /// `stats` as JSON (`{"cards": {"pages": 3, ...}}`). See [`RunRecord::from_columns`].
    pub fn to_columns(&self) -> Result<RunColumns, serde_json::Error> {
        let count = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(RunColumns {
            kind: self.kind.as_str(),
            entities: self.entities.iter().map(|k| k.as_str()).collect(),
            scope: self.scope.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            status: self.status.as_str(),
            rows_inserted: count(self.total(|s| s.inserted)),
            rows_updated: count(self.total(|s| s.updated)),
            rows_deleted: count(self.total(|s| s.deleted)),
            api_requests: count(self.api_requests),
            retries: count(self.retries),
            error: self.error.clone(),
            stats: serde_json::to_value(&self.stats)?,
        })
    }

    /// A run read back from the columns of `sync_logs` ([`RunRecord::to_columns`]); the error names
    /// the column that holds something this version does not know (a store turns it into
    /// [`StoreError`]). The `rows_*` totals are not read: they follow from `stats`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_columns<'a>(
        id: i64,
        kind: &str,
        entities: impl IntoIterator<Item = &'a str>,
        scope: Option<String>,
        started_at: DateTime<Utc>,
        finished_at: Option<DateTime<Utc>>,
        status: &str,
        counters: (i64, i64),
        error: Option<String>,
        stats: serde_json::Value,
    ) -> Result<RunRecord, String> {
        let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(RunRecord {
            id,
            kind: RunKind::parse(kind).ok_or_else(|| format!("run {id} in sync_logs has an unknown kind {kind:?}"))?,
            entities: entities
                .into_iter()
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(|name| {
                    name.parse::<EntityKind>()
                        .map_err(|_| format!("run {id} in sync_logs has an unknown entity kind {name:?}"))
                })
                .collect::<Result<_, _>>()?,
            scope,
            started_at,
            finished_at,
            status: RunStatus::parse(status)
                .ok_or_else(|| format!("run {id} in sync_logs has an unknown status {status:?}"))?,
            stats: serde_json::from_value(stats)
                .map_err(|e| format!("run {id} in sync_logs has unreadable stats: {e}"))?,
            api_requests: unsigned(counters.0),
            retries: unsigned(counters.1),
            error,
        })
    }
}

/// A run as the columns of `sync_logs` hold it in every store ([`RunRecord::to_columns`]). A store
/// maps each field to its column type (SQLite keeps `entities` as comma-separated text and `stats`
/// as JSON text, Postgres as `text[]` and `jsonb`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunColumns {
    /// [`RunKind::as_str`].
    pub kind: &'static str,
    /// [`EntityKind::as_str`] of each kind, in order.
    pub entities: Vec<&'static str>,
    /// The scope in words.
    pub scope: Option<String>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
    /// [`RunStatus::as_str`].
    pub status: &'static str,
    /// Total of the per-kind `inserted`.
    pub rows_inserted: i64,
    /// Total of the per-kind `updated`.
    pub rows_updated: i64,
    /// Total of the per-kind `deleted`.
    pub rows_deleted: i64,
    /// HTTP requests to Kaiten.
    pub api_requests: i64,
    /// Requests that were retries.
    pub retries: i64,
    /// Error text.
    pub error: Option<String>,
    /// The per-kind counters as JSON.
    pub stats: serde_json::Value,
}

/// Row counts of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    /// Table name (`cards`, `card_tags`, ...).
    pub table: String,
    /// Rows not marked deleted.
    pub live: i64,
    /// Rows marked deleted.
    pub deleted: i64,
}

/// A stored row read back (for tests, webhooks and tools).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// Primary key.
    pub id: i64,
    /// Typed column values in [`crate::schema::TableDef::columns`] order.
    pub values: Vec<SqlValue>,
    /// The JSON as received.
    pub raw: serde_json::Value,
    /// When the mirror last wrote the row.
    pub synced_at: DateTime<Utc>,
    /// When the mirror learned the record is gone.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl StoredRecord {
    /// The value of a typed column by name.
    pub fn value(&self, kind: EntityKind, column: &str) -> Option<&SqlValue> {
        let index = kind.table().columns.iter().position(|c| c.name == column)?;
        self.values.get(index)
    }
}

/// Who holds the sync lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Holder id (host, process, random suffix).
    pub holder: String,
    /// When it was taken.
    pub acquired_at: DateTime<Utc>,
    /// When the holder last said it is alive.
    pub heartbeat_at: DateTime<Utc>,
}

/// The answer to [`Store::try_lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAttempt {
    /// The caller holds the lock now.
    Acquired,
    /// Someone else does.
    Held(LockInfo),
}

/// Errors of a store.
///
/// `message` says what the store was doing (and what to check), never the driver's text: that is
/// the `source`, so [`crate::error::chain`] shows each once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached or opened.
    #[error("cannot connect to the {backend} database: {message}")]
    Unavailable {
        /// `sqlite`, `postgres`, `memory`.
        backend: &'static str,
        /// What failed, without passwords.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The database is busy or locked by another writer beyond the configured wait.
    #[error("the {backend} database is locked or busy: {message}")]
    Busy {
        /// Backend name.
        backend: &'static str,
        /// What was waiting.
        message: String,
        /// The driver's error, when one reported the wait.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Migrations could not be applied, or the database was migrated by a newer version.
    #[error("database schema problem: {message}")]
    Schema {
        /// What is wrong, or which step failed.
        message: String,
        /// The error of the failed step, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The schema has not been created yet, or lacks something this version needs (a table, a
    /// column, a function): `migrate` creates or completes it.
    #[error(
        "the database has no kaiten-sync schema yet, or one missing what this version needs: run `kaiten-sync \
         migrate` (or call `Store::migrate`)"
    )]
    NotMigrated,
    /// The database user may not do what is needed.
    #[error("permission denied in the {backend} database: {message}")]
    Permission {
        /// Backend name.
        backend: &'static str,
        /// What was refused, and what the user needs.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Data the store cannot write (e.g. a value out of range).
    #[error("invalid data for {kind}: {message}")]
    InvalidData {
        /// The kind.
        kind: EntityKind,
        /// Details.
        message: String,
    },
    /// Any other database error.
    #[error("{backend} error: {message}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// What failed.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// What kind of failure this is (see [`crate::error::ErrorKind`]).
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            StoreError::Unavailable { .. } => ErrorKind::DatabaseUnavailable,
            StoreError::Busy { .. } => ErrorKind::DatabaseBusy,
            StoreError::Schema { .. } | StoreError::NotMigrated => ErrorKind::Schema,
            StoreError::Permission { .. } => ErrorKind::DatabasePermission,
            StoreError::InvalidData { .. } | StoreError::Backend { .. } => ErrorKind::Database,
        }
    }

    /// A [`StoreError::Schema`] with no error behind it (a version mismatch, an invalid name).
    pub fn schema(message: impl Into<String>) -> Self {
        StoreError::Schema { message: message.into(), source: None }
    }
}

/// A database the engine mirrors Kaiten into. Object safe: `Arc<dyn Store>` is what the engine holds.
///
/// Ids are bare `i64` here, not the typed ids of [`kaiten_client::ids`]: every method is generic over
/// the [`EntityKind`] it is given at run time, and every table is keyed by the integer, so one key type
/// serves all kinds. The engine converts at this boundary ([`Record::id`](kaiten_client::Record::id),
/// `CardId::get`, `BoardId::from`); code that knows the kind works with the typed ids.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A short backend name for logs (`sqlite`, `postgres`, `memory`).
    fn backend(&self) -> &'static str;

    /// Creates or upgrades the schema. Idempotent; safe when two processes migrate at once. Fails
    /// with [`StoreError::Schema`] when the database was migrated by a newer version.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Writes a page: upserts the records (newer wins; identical records untouched), records their
    /// links (cards: the card's `card_tags` rows are replaced by the page's, and so are its
    /// `card_members` rows when the card carries a member list, see [`Batch::card_members`]; links
    /// change only for cards whose row is inserted or updated), marks them seen by `page.sweep`,
    /// sets `deleted_at` for records that say they are deleted (and clears it for those that say
    /// they are not), and writes `page.state`, all in one transaction.
    async fn apply_page(&self, page: &Page) -> Result<PageOutcome, StoreError>;

    /// Ids of live rows (not marked deleted) within `scope` that `sweep` did not see.
    async fn unseen(&self, kind: EntityKind, sweep: i64, scope: &Scope) -> Result<Vec<i64>, StoreError>;

    /// Marks these rows deleted at `at` (rows already marked keep their first `deleted_at`).
    /// Returns how many rows changed.
    async fn mark_deleted(&self, kind: EntityKind, ids: &[i64], at: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Which of these ids are stored (deleted or not).
    async fn existing_ids(&self, kind: EntityKind, ids: &[i64]) -> Result<Vec<i64>, StoreError>;

    /// Every stored id of a kind, ascending; with `include_deleted` false only live rows.
    async fn ids(&self, kind: EntityKind, include_deleted: bool) -> Result<Vec<i64>, StoreError>;

    /// One stored row.
    async fn get(&self, kind: EntityKind, id: i64) -> Result<Option<StoredRecord>, StoreError>;

    /// Tag ids linked to a card, ascending.
    async fn card_tag_ids(&self, card_id: i64) -> Result<Vec<i64>, StoreError>;

    /// Members of a card as `(user_id, type)` (1 member, 2 responsible), ascending by user. Rows
    /// are kept when the card is marked deleted, like its tag links.
    async fn card_members(&self, card_id: i64) -> Result<Vec<(i64, i64)>, StoreError>;

    /// The state of a kind (a fresh [`EntityState::new`] when none is stored).
    async fn entity_state(&self, kind: EntityKind) -> Result<EntityState, StoreError>;

    /// Every stored state, in [`EntityKind::ALL`] order.
    async fn entity_states(&self) -> Result<Vec<EntityState>, StoreError>;

    /// Writes a state on its own (outside a page).
    async fn save_entity_state(&self, state: &EntityState) -> Result<(), StoreError>;

    /// Adds a run to the log and returns its id.
    async fn start_run(&self, run: &RunRecord) -> Result<i64, StoreError>;

    /// Rewrites a run's status, counters, end and error (by `run.id`).
    async fn update_run(&self, run: &RunRecord) -> Result<(), StoreError>;

    /// Marks every `running` sync run except `keep` as `interrupted` with this error text;
    /// returns how many. Runs of kind `webhook` are left alone (they do not take the lock and may
    /// be in flight). Called by a run that took the lock, since no other sync can still be running.
    async fn interrupt_running_runs(&self, keep: i64, reason: &str) -> Result<u64, StoreError>;

    /// The most recent runs, newest first.
    async fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError>;

    /// Row counts of every table the mirror writes (the entity tables, `card_tags` and
    /// `card_members`; links count as live).
    async fn counts(&self) -> Result<Vec<TableCount>, StoreError>;

    /// Takes the one-sync-at-a-time lock for `holder` if it is free, already held by `holder`, or
    /// held by someone whose last heartbeat is older than `stale_after`. A store whose lock can
    /// outlive its holder's process may also take over at once a lock whose holder is known to be
    /// gone ([`crate::holder::holder_is_gone`]).
    async fn try_lock(&self, holder: &str, stale_after: Duration) -> Result<LockAttempt, StoreError>;

    /// Says the holder is alive (keeps the lock from going stale). Returns whether `holder` still
    /// holds the lock: `false` when it was taken over (it went stale) or its session was lost, in
    /// which case the run must stop.
    async fn heartbeat_lock(&self, holder: &str) -> Result<bool, StoreError>;

    /// Releases the lock if `holder` holds it.
    async fn release_lock(&self, holder: &str) -> Result<(), StoreError>;

    /// Marks `running` runs of kind `webhook` started before `started_before` as `interrupted`
    /// with this error text (their process died: a webhook batch never runs longer than its
    /// inbox lease). Returns how many.
    async fn interrupt_webhook_runs(&self, started_before: DateTime<Utc>, reason: &str) -> Result<u64, StoreError>;

    /// Deletes finished runs (any status but `running`) that started before `before`, keeping
    /// the newest `keep` runs whatever their age. Returns how many were deleted.
    async fn prune_runs(&self, before: DateTime<Utc>, keep: usize) -> Result<u64, StoreError>;

    /// Records notifications in the webhook inbox, durably, in one transaction: when this returns
    /// `Ok` they survive a crash. A notification for an entity already in the inbox coalesces into
    /// its entry (`seq` and `deliveries` bumped, `event` and a non-null `parent_id` replaced,
    /// `next_attempt_at` kept); a failed entry is revived (attempts reset, due at `due_at`). A new
    /// entry is received `now` and due at `due_at`.
    async fn inbox_push(
        &self,
        notifications: &[Notification],
        now: DateTime<Utc>,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Claims up to `limit` due entries (not failed, `next_attempt_at <= now`, unclaimed or with
    /// an expired claim) for `worker` until `lease_until`, oldest due first. Two workers, in one
    /// process or several sharing the database, never hold the same entry at once.
    async fn inbox_claim(
        &self,
        worker: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<InboxEntry>, StoreError>;

    /// Records how claimed entries ended (see [`InboxResult`]), in one transaction. Returns how
    /// many entries were removed.
    async fn inbox_finish(&self, results: &[InboxResult], now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Inbox entries, oldest first: all of them, or only the failed ones.
    async fn inbox_entries(&self, failed_only: bool, limit: usize) -> Result<Vec<InboxEntry>, StoreError>;

    /// Pending and failed counts and the oldest pending delivery.
    async fn inbox_stats(&self) -> Result<InboxStats, StoreError>;

    /// Makes failed entries due again at `due_at` (attempts reset): `ids`, or every failed entry
    /// when `ids` is `None`. Returns how many.
    async fn inbox_retry_failed(&self, ids: Option<&[i64]>, due_at: DateTime<Utc>) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaiten_client::Record;
    use serde_json::json;

    #[test]
    fn rows_keep_the_last_duplicate_and_card_tags_dedup() {
        let a = Card::from_value(json!({"id": 1, "title": "old", "tag_ids": [3, 3, 2]})).unwrap();
        let b = Card::from_value(json!({"id": 1, "title": "new", "tag_ids": [5]})).unwrap();
        let c = Card::from_value(json!({"id": 2, "tag_ids": [2]})).unwrap();
        let batch = Batch::Cards(vec![a, b, c]);
        let rows = batch.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].raw["title"], "new");
        assert_eq!(batch.card_tags(), vec![(1, 5), (2, 2)]);
    }

    #[test]
    fn card_members_come_only_from_cards_with_a_member_list() {
        let detail = Card::from_value(json!({"id": 7, "members": [
            {"id": 11, "user_id": 11, "type": 2},
            {"id": 12, "type": 1},
            {"user_id": 13},
            {"id": 11, "user_id": 11, "type": 1},
            {"full_name": "no id"},
            {"user_id": "14", "type": 1},
            {"user_id": -3, "type": 1}
        ]}))
        .unwrap();
        let listed = Card::from_value(json!({"id": 8, "tag_ids": [1]})).unwrap();
        let emptied = Card::from_value(json!({"id": 9, "members": []})).unwrap();
        let nulled = Card::from_value(json!({"id": 10, "members": null})).unwrap();
        let members = Batch::Cards(vec![detail, listed, emptied, nulled]).card_members();
        assert_eq!(members.cards, vec![7, 9], "a list-shape card (no members array) is not known");
        assert_eq!(members.links, vec![(7, 11, 2), (7, 12, 1), (7, 13, 1)]);
        assert_eq!(Batch::Tags(Vec::new()).card_members(), CardMembers::default());
    }

    #[test]
    fn runs_round_trip_through_their_columns_and_bad_columns_are_named() {
        let mut run = RunRecord::start(
            RunKind::Selective,
            vec![EntityKind::Boards, EntityKind::Cards],
            Some("boards 7".into()),
            Utc::now(),
        );
        run.id = 9;
        run.status = RunStatus::Failed;
        run.api_requests = u64::MAX;
        run.retries = 3;
        run.error = Some("boom".into());
        run.stats
            .entry(EntityKind::Cards)
            .or_default()
            .add_page(100, PageOutcome { inserted: 60, updated: 30, unchanged: 10 });
        let c = run.to_columns().unwrap();
        assert_eq!((c.kind, c.status, c.entities.clone()), ("selective", "failed", vec!["boards", "cards"]));
        assert_eq!((c.rows_inserted, c.rows_updated, c.api_requests), (60, 30, i64::MAX), "saturating counters");
        let back = RunRecord::from_columns(
            9,
            c.kind,
            ["boards", " cards", ""],
            c.scope.clone(),
            c.started_at,
            c.finished_at,
            c.status,
            (c.api_requests, c.retries),
            c.error.clone(),
            c.stats.clone(),
        )
        .unwrap();
        assert_eq!(back.stats, run.stats);
        assert_eq!((back.kind, back.status, back.entities.clone()), (run.kind, run.status, run.entities.clone()));
        assert_eq!(back.api_requests, i64::MAX as u64);

        let read = |kind: &str, entity: &str, status: &str, stats: serde_json::Value| {
            RunRecord::from_columns(9, kind, [entity], None, c.started_at, None, status, (0, 0), None, stats)
                .unwrap_err()
        };
        let ok_stats = c.stats.clone();
        assert!(read("weekly", "cards", "failed", ok_stats.clone()).contains("unknown kind \"weekly\""));
        assert!(read("full", "kards", "failed", ok_stats.clone()).contains("unknown entity kind \"kards\""));
        assert!(read("full", "cards", "exploded", ok_stats).contains("unknown status \"exploded\""));
        assert!(read("full", "cards", "failed", serde_json::json!({"cards": 1})).contains("unreadable stats"));
    }
}
