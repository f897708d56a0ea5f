//! What a run is asked to do: its mode, its selection and its options, and the report it ends with.

use std::collections::BTreeSet;
use std::time::Duration;

use kaiten_client::{BoardId, SpaceId};
use serde::{Deserialize, Serialize};

use crate::schema::EntityKind;
use crate::store::{EntityStats, RunRecord};
#[cfg(doc)]
use crate::SyncError;

/// How a run lists records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Everything, ending with deletion detection.
    Full,
    /// Only what changed since the last run (cards by `updated_after`; small kinds listed whole and
    /// only changed rows written).
    Incremental,
}

/// What a run covers: entity kinds, and optionally only some spaces or boards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Kinds to sync; empty means all.
    pub kinds: BTreeSet<EntityKind>,
    /// Only these spaces (their boards, columns, lanes and cards); empty means all.
    pub spaces: Vec<SpaceId>,
    /// Only these boards (their columns, lanes and cards); empty means all.
    pub boards: Vec<BoardId>,
}

impl Selection {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only these kinds.
    pub fn kinds(kinds: &[EntityKind]) -> Self {
        Self { kinds: kinds.iter().copied().collect(), ..Self::default() }
    }

    /// Limits the run to these spaces.
    pub fn in_spaces(mut self, spaces: &[SpaceId]) -> Self {
        self.spaces = spaces.to_vec();
        self
    }

    /// Limits the run to these boards.
    ///
    /// ```
    /// use kaiten_sync::kaiten_client::BoardId;
    /// use kaiten_sync::{EntityKind, Selection};
    ///
    /// let selection = Selection::kinds(&[EntityKind::Cards]).in_boards(&[BoardId(42)]);
    /// assert_eq!(selection.boards, [BoardId(42)]);
    /// ```
    pub fn in_boards(mut self, boards: &[BoardId]) -> Self {
        self.boards = boards.to_vec();
        self
    }

    pub(super) fn includes(&self, kind: EntityKind) -> bool {
        if self.kinds.is_empty() {
            return true;
        }
        // Select values are part of the property definitions they belong to.
        self.kinds.contains(&kind)
            || (kind == EntityKind::SelectValues && self.kinds.contains(&EntityKind::PropertyDefinitions))
    }

    pub(super) fn is_everything(&self) -> bool {
        (self.kinds.is_empty() || EntityKind::ALL.iter().all(|k| self.includes(*k)))
            && self.spaces.is_empty()
            && self.boards.is_empty()
    }

    pub(super) fn scope_text(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.kinds.is_empty() {
            parts.push(format!("kinds {}", self.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")));
        }
        if !self.spaces.is_empty() {
            parts.push(format!("spaces {}", join_ids(&self.spaces)));
        }
        if !self.boards.is_empty() {
            parts.push(format!("boards {}", join_ids(&self.boards)));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

pub(super) fn join_ids<I: std::fmt::Display>(ids: &[I]) -> String {
    ids.iter().map(I::to_string).collect::<Vec<_>>().join(",")
}

/// Tuning of the engine. `Default` is what the CLI uses.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncOptions {
    /// Incremental card listings start this long before the stored cursor, so records written
    /// around the boundary (or with clock skew) are not missed. Overlapping records are upserted
    /// idempotently and counted as unchanged.
    pub overlap: Duration,
    /// Page size for cards (Kaiten's maximum is 100).
    pub page_size: u32,
    /// How long a run waits for another run to release the lock before failing with
    /// [`SyncError::Locked`]. Zero refuses at once.
    pub lock_wait: Duration,
    /// A lock whose holder has not said it is alive for this long is taken over (a killed process).
    pub lock_stale_after: Duration,
    /// How often a running sync says it is alive.
    pub heartbeat_every: Duration,
    /// Incremental runs also ask for cards with condition 3 (deleted) changed since the cursor.
    /// **Off by default**: Kaiten deletes cards without a trace in its listings (a real tenant's
    /// `condition=3` listing returns nothing, or is refused with 400, which the run tolerates), so
    /// the listing costs a request per run and finds nothing. Deletions are found by a full sync
    /// (ids missing from a complete listing) and by a refetch that answers 404. Turn on only for a
    /// tenant known to list deleted cards.
    pub incremental_deleted_cards: bool,
    /// Incremental runs re-list columns and lanes of every board (and the values of every select
    /// property) on every run, as if [`SyncOptions::structure_max_age`] were zero.
    pub incremental_refresh_all_structure: bool,
    /// The staleness bound of what Kaiten changes without telling: columns and lanes (renaming one
    /// does not move its board's `updated`, and no webhook exists for them) and select values
    /// (removing one does not move its property's `updated`). An incremental run re-lists the
    /// columns and lanes of the boards whose `updated` moved, and of **every** board in scope
    /// when their last complete listing is older than this (likewise the values of every select
    /// property). With the default (50 minutes) and the CLI's `serve` schedule (an incremental run
    /// every 5 minutes) a renamed column reaches the mirror within an hour. Cost: one request per
    /// board for columns, one for lanes and one per select property (per 100 values), once per
    /// this period.
    pub structure_max_age: Duration,
    /// Extra card fields asked for (`description` by default).
    pub additional_card_fields: Vec<String>,
    /// Requests kept in flight at once (the client's limiter still paces their starts): windows
    /// of the card listing walked together (a walk estimated to hold 4 or more pages is split in
    /// two by `updated` while fewer windows are open), and per-board or per-property listings.
    /// Enough hides each request's latency under the limiter's wait: about the rate times the
    /// latency (the default 4 covers 5 requests/s at up to 0.8 s). Default 4.
    pub concurrency: usize,
    /// A card listing interrupted longer ago than this starts over instead of resuming (its
    /// deletion sweep would rest on old observations).
    pub max_resume_age: Duration,
    /// After a full listing limited to some boards or spaces, cards missing from it are checked one
    /// by one (`GET /cards/{id}`) when there are at most this many, so a card moved to another board
    /// is not marked deleted.
    pub max_verified_deletions: usize,
    /// Finished runs older than this are deleted from `sync_logs` at the end of each run (`None`
    /// keeps them all).
    pub run_retention: Option<Duration>,
    /// The newest runs kept whatever their age.
    pub keep_runs: usize,
    /// Incremental runs fetch `GET /cards/{id}` for every card their listing returns as changed
    /// (not stored yet, or with a newer `updated` or `version` than the stored copy) and store
    /// that response instead of the list shape, so the card's members (`card_members`) are
    /// current: **one request per changed card**, on top of the listing. Off by default; full
    /// syncs never do it (a first sync of a large company would cost one request per card).
    /// Cards fetched one by one for other reasons (moved-card checks, webhooks) always store
    /// their members.
    pub card_members_backfill: bool,
    /// The share (0.0–1.0) of a kind's live rows in a listing's scope that one sweep may mark
    /// deleted without a check (like rsync's `--max-delete`; default 0.1, 10%). A sweep that would
    /// mark more first asks Kaiten about a sample of them ([`DELETE_CHECK_SAMPLE`]): cards by id
    /// (`GET /cards/{id}`), other kinds by listing their parent again (the board's columns and
    /// lanes, the space's boards, the property's values) or the whole kind (spaces, users, card
    /// types, property definitions). If Kaiten still has any of them its first listing was
    /// incomplete: nothing of that kind is marked deleted, the rest of the run is stored, and the
    /// run ends **failed** with [`SyncError::DeletionsRefused`] (in `sync_logs` and the log), so
    /// that monitoring sees it; the next run tries again. If every sampled record is gone the
    /// deletion is real and goes ahead, however large. `1.0` turns the check off. Tags are never
    /// swept (a tag on no card is missing from `GET /tags`), so the check never concerns them.
    pub max_delete_share: f64,
}

/// How many of the records a large sweep would mark deleted are checked with Kaiten first (see
/// [`SyncOptions::max_delete_share`]).
pub const DELETE_CHECK_SAMPLE: usize = 20;

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            overlap: Duration::from_secs(300),
            page_size: 100,
            lock_wait: Duration::ZERO,
            lock_stale_after: Duration::from_secs(600),
            heartbeat_every: Duration::from_secs(30),
            incremental_deleted_cards: false,
            incremental_refresh_all_structure: false,
            structure_max_age: Duration::from_secs(50 * 60),
            additional_card_fields: vec!["description".to_owned()],
            concurrency: 4,
            max_resume_age: Duration::from_secs(24 * 3600),
            max_verified_deletions: 100,
            run_retention: Some(Duration::from_secs(30 * 24 * 3600)),
            keep_runs: 1000,
            card_members_backfill: false,
            max_delete_share: 0.1,
        }
    }
}

impl SyncOptions {
    /// Sets [`SyncOptions::overlap`].
    pub fn with_overlap(mut self, overlap: Duration) -> Self {
        self.overlap = overlap;
        self
    }

    /// Sets [`SyncOptions::page_size`].
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size;
        self
    }

    /// Sets [`SyncOptions::lock_wait`].
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Sets [`SyncOptions::lock_stale_after`].
    pub fn with_lock_stale_after(mut self, stale_after: Duration) -> Self {
        self.lock_stale_after = stale_after;
        self
    }

    /// Sets [`SyncOptions::heartbeat_every`].
    pub fn with_heartbeat_every(mut self, every: Duration) -> Self {
        self.heartbeat_every = every;
        self
    }

    /// Sets [`SyncOptions::incremental_deleted_cards`].
    pub fn with_incremental_deleted_cards(mut self, on: bool) -> Self {
        self.incremental_deleted_cards = on;
        self
    }

    /// Sets [`SyncOptions::incremental_refresh_all_structure`].
    pub fn with_incremental_refresh_all_structure(mut self, on: bool) -> Self {
        self.incremental_refresh_all_structure = on;
        self
    }

    /// Sets [`SyncOptions::structure_max_age`].
    pub fn with_structure_max_age(mut self, max_age: Duration) -> Self {
        self.structure_max_age = max_age;
        self
    }

    /// Sets [`SyncOptions::additional_card_fields`].
    pub fn with_additional_card_fields(mut self, fields: Vec<String>) -> Self {
        self.additional_card_fields = fields;
        self
    }

    /// Sets [`SyncOptions::concurrency`].
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`SyncOptions::run_retention`] and [`SyncOptions::keep_runs`].
    pub fn with_run_retention(mut self, retention: Option<Duration>, keep_runs: usize) -> Self {
        self.run_retention = retention;
        self.keep_runs = keep_runs;
        self
    }

    /// Sets [`SyncOptions::card_members_backfill`].
    pub fn with_card_members_backfill(mut self, on: bool) -> Self {
        self.card_members_backfill = on;
        self
    }

    /// Sets [`SyncOptions::max_delete_share`] (clamped to 0.0–1.0; not a number means 0.0, so
    /// every sweep is checked).
    pub fn with_max_delete_share(mut self, share: f64) -> Self {
        self.max_delete_share = if share.is_nan() { 0.0 } else { share.clamp(0.0, 1.0) };
        self
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncReport {
    /// The run as recorded in `sync_logs` (id, kind, counters per entity, requests, retries).
    pub run: RunRecord,
    /// Wall time of the run.
    pub duration: Duration,
}

impl SyncReport {
    /// Counters of one kind (zero when the kind was not synced).
    pub fn stats(&self, kind: EntityKind) -> EntityStats {
        self.run.stats.get(&kind).copied().unwrap_or_default()
    }
}
