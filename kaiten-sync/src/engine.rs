//! The sync engine: full, incremental and selective runs over a [`KaitenClient`] and a [`Store`].

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kaiten_client::{Board, Card, CardQuery, Condition, KaitenClient, OrderDirection, PageRequest, Space};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::card_walk::{PageRules, Verdict};
use crate::error::{chain, Chain, RefusedDeletion, SyncError};
use crate::parents::{flatten_columns, with_board, ParentCache, Parents};
use crate::progress::{ProgressEvent, ProgressSink};
use crate::schema::EntityKind;
use crate::store::{
    incoming_is_not_older, now_millis, Batch, EntityState, EntityStats, LockAttempt, Page, RunKind, RunRecord,
    RunStatus, Scope, Store,
};

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
    pub spaces: Vec<i64>,
    /// Only these boards (their columns, lanes and cards); empty means all.
    pub boards: Vec<i64>,
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
    pub fn in_spaces(mut self, spaces: &[i64]) -> Self {
        self.spaces = spaces.to_vec();
        self
    }

    /// Limits the run to these boards.
    pub fn in_boards(mut self, boards: &[i64]) -> Self {
        self.boards = boards.to_vec();
        self
    }

    fn includes(&self, kind: EntityKind) -> bool {
        if self.kinds.is_empty() {
            return true;
        }
        // Select values are part of the property definitions they belong to.
        self.kinds.contains(&kind)
            || (kind == EntityKind::SelectValues && self.kinds.contains(&EntityKind::PropertyDefinitions))
    }

    fn is_everything(&self) -> bool {
        (self.kinds.is_empty() || EntityKind::ALL.iter().all(|k| self.includes(*k)))
            && self.spaces.is_empty()
            && self.boards.is_empty()
    }

    fn scope_text(&self) -> Option<String> {
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

fn join_ids(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
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
    /// Requests in flight at once for per-board listings (the client's limiter still applies).
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

/// A sweep id no listing uses: `Store::unseen` with it lists every live row in a scope.
const NO_SWEEP: i64 = i64::MIN;

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

/// Where a card listing stands: Kaiten is asked for cards with `updated` after `after`, ordered by
/// `updated`, skipping `offset` of them. Serialized into `sync_metadata.resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WalkPos {
    pub(crate) after: Option<DateTime<Utc>>,
    pub(crate) offset: u64,
    /// Set when Kaiten ignored `order_by=updated`: page by offset alone.
    #[serde(default)]
    pub(crate) offset_only: bool,
}

/// A resumable card listing in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CardResume {
    /// The deletion sweep of a full listing (none for incremental).
    sweep: Option<i64>,
    /// Where the walks started.
    start: Option<DateTime<Utc>>,
    /// Index of the walk in progress.
    walk: usize,
    /// Its position.
    pos: WalkPos,
    /// Greatest `updated` committed so far.
    max_updated: Option<DateTime<Utc>>,
    /// The scope the listing was for (a resume point is only used for the same scope).
    scope: String,
    /// When the listing began; a resume point older than [`SyncOptions::max_resume_age`] is dropped.
    #[serde(default)]
    began: Option<DateTime<Utc>>,
    /// What the listing learned of the route's paging (see [`crate::card_walk`]).
    #[serde(default)]
    rules: PageRules,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ResumeState {
    #[serde(skip_serializing_if = "Option::is_none")]
    full: Option<CardResume>,
    #[serde(skip_serializing_if = "Option::is_none")]
    incremental: Option<CardResume>,
}

impl ResumeState {
    fn parse(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default()
    }

    fn to_text(&self) -> Option<String> {
        (self.full.is_some() || self.incremental.is_some()).then(|| serde_json::to_string(self).expect("serializable"))
    }

    fn slot(&mut self, mode: Mode) -> &mut Option<CardResume> {
        match mode {
            Mode::Full => &mut self.full,
            Mode::Incremental => &mut self.incremental,
        }
    }
}

/// Mirrors a Kaiten company into a [`Store`].
///
/// Cheap to clone; clones share the client (and so its rate limiter) and the store.
#[derive(Clone)]
pub struct SyncEngine {
    client: KaitenClient,
    store: Arc<dyn Store>,
    options: SyncOptions,
    progress: ProgressSink,
    holder: String,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("client", &self.client)
            .field("store", &self.store)
            .field("options", &self.options)
            .field("holder", &self.holder)
            .finish()
    }
}

impl SyncEngine {
    /// An engine with default options.
    pub fn new(client: KaitenClient, store: Arc<dyn Store>) -> Self {
        Self {
            client,
            store,
            options: SyncOptions::default(),
            progress: ProgressSink::none(),
            holder: lock_holder_id(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: SyncOptions) -> Self {
        self.options = options;
        self
    }

    /// Calls `f` for every progress event (keep it quick; it runs on the sync task).
    pub fn on_progress(mut self, f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        self.progress = ProgressSink::callback(f);
        self
    }

    /// Sends every progress event to a channel (events are dropped if the receiver is gone).
    pub fn progress_channel(self, sender: tokio::sync::mpsc::UnboundedSender<ProgressEvent>) -> Self {
        self.on_progress(move |event| {
            let _ = sender.send(event.clone());
        })
    }

    /// The options in force.
    pub fn options(&self) -> &SyncOptions {
        &self.options
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The client.
    pub fn client(&self) -> &KaitenClient {
        &self.client
    }

    /// The id this engine's runs hold the lock under.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Full sync of everything, in dependency order, ending with deletion detection.
    pub async fn sync_all(&self) -> Result<SyncReport, SyncError> {
        self.run(RunKind::Full, Mode::Full, &Selection::all()).await
    }

    /// Incremental sync of everything: cards changed since the last run, small kinds listed whole.
    pub async fn sync_incremental(&self) -> Result<SyncReport, SyncError> {
        self.run(RunKind::Incremental, Mode::Incremental, &Selection::all()).await
    }

    /// Selective sync of the chosen kinds, full or incremental.
    pub async fn sync_specific(&self, kinds: &[EntityKind], full: bool) -> Result<SyncReport, SyncError> {
        let mode = if full { Mode::Full } else { Mode::Incremental };
        self.sync_selection(&Selection::kinds(kinds), mode).await
    }

    /// Sync of any selection (kinds, spaces, boards) in either mode. A selection of everything is
    /// logged as a full or incremental run, anything narrower as selective.
    pub async fn sync_selection(&self, selection: &Selection, mode: Mode) -> Result<SyncReport, SyncError> {
        let kind = match (selection.is_everything(), mode) {
            (true, Mode::Full) => RunKind::Full,
            (true, Mode::Incremental) => RunKind::Incremental,
            (false, _) => RunKind::Selective,
        };
        self.run(kind, mode, selection).await
    }

    async fn acquire_lock(&self) -> Result<(), SyncError> {
        let deadline = Instant::now() + self.options.lock_wait;
        loop {
            match self.store.try_lock(&self.holder, self.options.lock_stale_after).await? {
                LockAttempt::Acquired => return Ok(()),
                LockAttempt::Held(info) => {
                    if Instant::now() >= deadline {
                        return Err(SyncError::Locked {
                            holder: info.holder,
                            since: info.acquired_at,
                            waited: self.options.lock_wait,
                        });
                    }
                    debug!(holder = %info.holder, "sync lock held by another run; waiting");
                    tokio::time::sleep(Duration::from_millis(250).min(self.options.lock_wait)).await;
                }
            }
        }
    }

    async fn run(&self, kind: RunKind, mode: Mode, selection: &Selection) -> Result<SyncReport, SyncError> {
        let entities: Vec<EntityKind> = EntityKind::ALL.into_iter().filter(|k| selection.includes(*k)).collect();
        if entities.is_empty() {
            return Err(SyncError::InvalidSelection("no entity kind selected".into()));
        }
        let started = Instant::now();
        self.acquire_lock().await?;
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = self.spawn_heartbeat(lost.clone());
        let result = self.run_locked(kind, mode, selection, entities, started, lost).await;
        heartbeat.abort();
        if let Err(e) = self.store.release_lock(&self.holder).await {
            warn!(error = %Chain(&e), "could not release the sync lock; it goes stale on its own");
        }
        result
    }

    fn spawn_heartbeat(&self, lost: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let holder = self.holder.clone();
        let every = self.options.heartbeat_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.heartbeat_lock(&holder).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!("the sync lock was lost; stopping the run at the next page");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => warn!(error = %Chain(&e), "sync lock heartbeat failed"),
                }
            }
        })
    }

    async fn run_locked(
        &self,
        kind: RunKind,
        mode: Mode,
        selection: &Selection,
        entities: Vec<EntityKind>,
        started: Instant,
        lost: Arc<AtomicBool>,
    ) -> Result<SyncReport, SyncError> {
        let stats_before = self.client.stats();
        let mut record = RunRecord::start(kind, entities.clone(), selection.scope_text(), now_millis());
        record.id = self.store.start_run(&record).await?;
        let interrupted = self
            .store
            .interrupt_running_runs(record.id, "interrupted: the process running it stopped before it finished")
            .await?;
        if interrupted > 0 {
            info!(interrupted, "marked runs left behind by a stopped process as interrupted");
        }
        self.progress.emit(&ProgressEvent::RunStarted { run_id: record.id, kind, entities: entities.clone() });
        let span = info_span!("sync", run_id = record.id, kind = kind.as_str());
        let mut run = Run {
            engine: self,
            mode,
            selection,
            record,
            parents: ParentCache::default(),
            changed_boards: None,
            listed_boards: None,
            select_properties: None,
            complete: HashSet::new(),
            lost,
            refused: Vec::new(),
        };
        let outcome = async {
            run.validate_selection().await?;
            for entity in &entities {
                run.sync_entity(*entity).await?;
                run.record.api_requests = self.client.stats().requests - stats_before.requests;
                run.record.retries = self.client.stats().retries - stats_before.retries;
                self.store.update_run(&run.record).await?;
            }
            run.record_row_counts().await?;
            if !run.refused.is_empty() {
                return Err(SyncError::DeletionsRefused {
                    refused: std::mem::take(&mut run.refused),
                    max_share: self.options.max_delete_share,
                });
            }
            Ok::<(), SyncError>(())
        }
        .instrument(span)
        .await;
        let mut record = run.record;
        record.api_requests = self.client.stats().requests - stats_before.requests;
        record.retries = self.client.stats().retries - stats_before.retries;
        record.finished_at = Some(now_millis());
        record.status = if outcome.is_ok() { RunStatus::Succeeded } else { RunStatus::Failed };
        record.error = outcome.as_ref().err().map(|e| chain(e));
        if let Err(e) = self.store.update_run(&record).await {
            warn!(error = %Chain(&e), "could not record the end of the run in sync_logs");
            if outcome.is_ok() {
                return Err(e.into());
            }
        }
        self.progress.emit(&ProgressEvent::RunFinished {
            run_id: record.id,
            status: record.status,
            error: record.error.clone(),
        });
        if let Some(retention) = self.options.run_retention {
            let before = now_millis() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
            match self.store.prune_runs(before, self.options.keep_runs).await {
                Ok(0) => {}
                Ok(pruned) => info!(pruned, "pruned old runs from sync_logs"),
                Err(e) => warn!(error = %Chain(&e), "could not prune old runs from sync_logs"),
            }
        }
        outcome?;
        info!(run_id = record.id, requests = record.api_requests, "sync finished");
        Ok(SyncReport { run: record, duration: started.elapsed() })
    }
}

fn lock_holder_id() -> String {
    crate::holder::new_holder_id()
}

/// One run in progress.
struct Run<'a> {
    engine: &'a SyncEngine,
    mode: Mode,
    selection: &'a Selection,
    record: RunRecord,
    /// Parents known, listed or refreshed in this run (see [`crate::parents`]).
    parents: ParentCache,
    /// Boards new or changed in this run (incremental structure refresh).
    changed_boards: Option<HashSet<i64>>,
    /// Boards listed in this run (in scope).
    listed_boards: Option<Vec<i64>>,
    /// Select-type properties whose values this run lists.
    select_properties: Option<Vec<i64>>,
    /// Kinds an incremental run listed completely (every board's columns or lanes, every select
    /// property's values): their `last_full_sync_at` moves, which bounds their staleness.
    complete: HashSet<EntityKind>,
    /// Set by the heartbeat when the lock is no longer this run's.
    lost: Arc<AtomicBool>,
    /// Sweeps refused by the deletion guard ([`SyncOptions::max_delete_share`]).
    refused: Vec<RefusedDeletion>,
}

impl Run<'_> {
    fn store(&self) -> &dyn Store {
        &*self.engine.store
    }

    fn client(&self) -> &KaitenClient {
        &self.engine.client
    }

    fn stats(&mut self, kind: EntityKind) -> &mut EntityStats {
        self.record.stats.entry(kind).or_default()
    }

    fn check_lock(&self) -> Result<(), SyncError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(SyncError::LockLost);
        }
        Ok(())
    }

    async fn sync_entity(&mut self, kind: EntityKind) -> Result<(), SyncError> {
        self.check_lock()?;
        self.engine.progress.emit(&ProgressEvent::EntityStarted { kind });
        self.stats(kind);
        let span = info_span!("entity", kind = kind.as_str());
        match kind {
            EntityKind::Spaces => self.sync_spaces().instrument(span).await?,
            EntityKind::Users => {
                let users = self.client().users().await?;
                self.write_listing(Batch::Users(users), Scope::All).instrument(span).await?
            }
            EntityKind::CardTypes => {
                let types = self.client().card_types().await?;
                self.write_listing(Batch::CardTypes(types), Scope::All).instrument(span).await?
            }
            EntityKind::Tags => {
                // Kaiten leaves tags on no card out of `GET /tags`, and tags cannot be deleted
                // through the API: absence from the list is not a deletion, so no sweep.
                let tags = self.client().tags().await?;
                self.write_unswept(Batch::Tags(tags)).instrument(span).await?
            }
            EntityKind::PropertyDefinitions => self.sync_properties().instrument(span).await?,
            EntityKind::SelectValues => self.sync_select_values().instrument(span).await?,
            EntityKind::Boards => self.sync_boards().instrument(span).await?,
            EntityKind::Columns | EntityKind::Lanes => self.sync_structure(kind).instrument(span).await?,
            EntityKind::Cards => self.sync_cards().instrument(span).await?,
        }
        let stats = self.record.stats[&kind];
        self.engine.progress.emit(&ProgressEvent::EntityDone { kind, stats });
        Ok(())
    }

    /// Whether this run lists `kind` whole, not a few spaces' or boards' share of it.
    fn lists_whole(&self, kind: EntityKind) -> bool {
        let narrowed = !self.selection.spaces.is_empty() || !self.selection.boards.is_empty();
        !narrowed
            || !matches!(
                kind,
                EntityKind::Spaces | EntityKind::Boards | EntityKind::Columns | EntityKind::Lanes | EntityKind::Cards
            )
    }

    /// The state after a listing of `state.kind`. `last_full_sync_at` is the end of the last
    /// *complete* listing (a full run, or an incremental one that re-listed everything in scope)
    /// of the whole kind: for cards, when deletions were last reconciled. A listing narrowed to
    /// some spaces or boards moves neither it nor the cursor (the cursor is shared by every
    /// listing: moving it past changes outside the scope would make the next run skip them).
    fn new_state(&self, mut state: EntityState, cursor: Option<DateTime<Utc>>) -> EntityState {
        let now = now_millis();
        let whole = self.lists_whole(state.kind);
        if whole {
            state.cursor = state.cursor.max(cursor);
        }
        match self.mode {
            Mode::Full if whole => state.last_full_sync_at = Some(now),
            Mode::Full => {}
            Mode::Incremental => {
                state.last_incremental_sync_at = Some(now);
                if whole && self.complete.contains(&state.kind) {
                    state.last_full_sync_at = Some(now);
                }
            }
        }
        state
    }

    /// Whether an incremental run must re-list `kind` (columns, lanes, select values) whole: its
    /// last complete listing is older than [`SyncOptions::structure_max_age`], or never happened.
    async fn is_stale(&self, kind: EntityKind) -> Result<bool, SyncError> {
        let options = &self.engine.options;
        if self.mode == Mode::Full || options.incremental_refresh_all_structure {
            return Ok(true);
        }
        let max_age = chrono::Duration::from_std(options.structure_max_age).unwrap_or(chrono::Duration::MAX);
        let last = self.store().entity_state(kind).await?.last_full_sync_at;
        Ok(last.is_none_or(|at| now_millis() - at >= max_age))
    }

    /// A run limited to spaces or boards Kaiten does not have (or this token cannot see) fails
    /// before anything is written, naming them. Checked against `GET /spaces`, which embeds each
    /// space's boards (the listing the run needs anyway).
    async fn validate_selection(&mut self) -> Result<(), SyncError> {
        if self.selection.spaces.is_empty() && self.selection.boards.is_empty() {
            return Ok(());
        }
        let spaces = self.list_spaces().await?;
        let space_ids: HashSet<i64> = spaces.iter().map(|s| s.id).collect();
        let missing_spaces: Vec<i64> =
            self.selection.spaces.iter().copied().filter(|s| !space_ids.contains(s)).collect();
        let mut board_ids: HashSet<i64> = spaces.iter().flat_map(|s| s.embedded_board_ids()).collect();
        let mut missing_boards: Vec<i64> =
            self.selection.boards.iter().copied().filter(|b| !board_ids.contains(b)).collect();
        if !missing_boards.is_empty() {
            // A space listed without its `boards[]`: ask for its boards before concluding.
            let bare: Vec<i64> = spaces
                .iter()
                .filter(|s| s.raw.get("boards").and_then(serde_json::Value::as_array).is_none())
                .map(|s| s.id)
                .collect();
            for space in bare {
                board_ids.extend(self.client().boards(space).await?.iter().map(|b| b.id));
            }
            missing_boards.retain(|b| !board_ids.contains(b));
        }
        let named = |what: &str, ids: &[i64]| match ids {
            [one] => format!("{what} {one}"),
            many => format!("{what}s {}", join_ids(many)),
        };
        let mut unknown = Vec::new();
        if !missing_spaces.is_empty() {
            unknown.push(named("space", &missing_spaces));
        }
        if !missing_boards.is_empty() {
            unknown.push(named("board", &missing_boards));
        }
        if unknown.is_empty() {
            return Ok(());
        }
        Err(SyncError::InvalidSelection(format!(
            "Kaiten has no {} (none in GET /spaces as this token sees it); nothing was synced",
            unknown.join(" and ")
        )))
    }

    /// Writes a complete listing of a small kind in pages, then marks what it did not contain as
    /// deleted within `scope`, and writes the kind's state.
    async fn write_listing(&mut self, batch: Batch, scope: Scope) -> Result<(), SyncError> {
        let kind = batch.kind();
        let cursor = batch.rows().iter().filter_map(|r| r.updated).max();
        let listed: HashSet<i64> = batch.ids().into_iter().collect();
        let fetched = batch.len();
        for chunk in split_batch(batch, 500) {
            let page = Page { sweep: None, state: None, synced_at: now_millis(), batch: chunk };
            let outcome = self.store().apply_page(&page).await?;
            self.stats(kind).add_page(page.batch.len(), outcome);
        }
        if fetched == 0 {
            self.stats(kind).pages += 1;
        }
        // The listing is small and complete: what the store holds in scope and the listing lacks is
        // gone. (No sweep marks, so a listing with nothing new writes no data row at all.)
        let mut refused = false;
        if !matches!(&scope, Scope::Parents(p) if p.is_empty()) {
            let stored = self.store().unseen(kind, NO_SWEEP, &scope).await?;
            let live = stored.len();
            let gone: Vec<i64> = stored.into_iter().filter(|id| !listed.contains(id)).collect();
            if !gone.is_empty() {
                if self.deletion_is_confirmed(kind, &gone, live).await? {
                    let deleted = self.store().mark_deleted(kind, &gone, now_millis()).await?;
                    info!(kind = kind.as_str(), deleted, "marked records missing from a complete listing as deleted");
                    self.stats(kind).deleted += deleted;
                } else {
                    refused = true;
                }
            }
        }
        let state = self.store().entity_state(kind).await?;
        let reconciled = state.last_full_sync_at;
        let mut state = self.new_state(state, cursor);
        if refused {
            // Deletions were not reconciled: the last complete listing stays the previous one.
            state.last_full_sync_at = reconciled;
        }
        self.store().save_entity_state(&state).await?;
        let stats = self.record.stats[&kind];
        self.engine.progress.emit(&ProgressEvent::PageDone { kind, stats });
        Ok(())
    }

    /// Writes the row count of every kind this run synced into its state (one count query).
    async fn record_row_counts(&self) -> Result<(), SyncError> {
        let counts = self.store().counts().await?;
        for kind in self.record.stats.keys() {
            let mut state = self.store().entity_state(*kind).await?;
            state.row_count = counts.iter().find(|c| c.table == kind.table().name).map(|c| c.live);
            self.store().save_entity_state(&state).await?;
        }
        Ok(())
    }

    /// Marks the rows of `kind` in `scope` that the listing `sweep` did not see as deleted, unless
    /// the deletion guard refuses (then returns `false`). `checked`: every one of them was already
    /// asked for by id and is gone.
    async fn sweep_deleted(
        &mut self,
        kind: EntityKind,
        sweep: i64,
        scope: &Scope,
        checked: bool,
    ) -> Result<bool, SyncError> {
        if matches!(scope, Scope::Parents(p) if p.is_empty()) {
            return Ok(true);
        }
        let unseen = self.store().unseen(kind, sweep, scope).await?;
        if unseen.is_empty() {
            return Ok(true);
        }
        if !checked {
            let live = match scope {
                Scope::All => self
                    .store()
                    .counts()
                    .await?
                    .iter()
                    .find(|c| c.table == kind.table().name)
                    .map_or(unseen.len(), |c| usize::try_from(c.live).unwrap_or(usize::MAX)),
                Scope::Parents(_) => self.store().unseen(kind, NO_SWEEP, scope).await?.len(),
            };
            if !self.deletion_is_confirmed(kind, &unseen, live).await? {
                return Ok(false);
            }
        }
        let deleted = self.store().mark_deleted(kind, &unseen, now_millis()).await?;
        info!(kind = kind.as_str(), deleted, "marked records missing from a complete listing as deleted");
        self.stats(kind).deleted += deleted;
        Ok(true)
    }

    /// The deletion guard ([`SyncOptions::max_delete_share`]): whether `missing`, the live rows of
    /// `kind` a listing did not return out of `live` in its scope, may be marked deleted. Within
    /// the share: yes. Beyond it: yes if Kaiten no longer has any of a sample of them; otherwise
    /// the refusal is recorded for the run's error and the answer is no.
    async fn deletion_is_confirmed(
        &mut self,
        kind: EntityKind,
        missing: &[i64],
        live: usize,
    ) -> Result<bool, SyncError> {
        let max_share = self.engine.options.max_delete_share;
        if max_share >= 1.0 || missing.len() as f64 <= max_share * live.max(missing.len()) as f64 {
            return Ok(true);
        }
        let sample = spread_sample(missing, DELETE_CHECK_SAMPLE);
        let still_there = self.still_in_kaiten(kind, &sample).await?;
        if still_there.is_empty() {
            info!(
                kind = kind.as_str(),
                missing = missing.len(),
                live,
                checked = sample.len(),
                "a large deletion, confirmed: Kaiten has none of the records checked"
            );
            return Ok(true);
        }
        let refusal = RefusedDeletion { kind, missing: missing.len(), live, checked: sample.len(), still_there };
        warn!(
            kind = kind.as_str(),
            missing = refusal.missing,
            live,
            still_there = refusal.still_there.len(),
            checked = refusal.checked,
            "refusing to mark records deleted: Kaiten's listing looked incomplete ({refusal})"
        );
        self.refused.push(refusal);
        Ok(false)
    }

    /// Which of `ids` (rows of `kind`) Kaiten still has: cards asked for one by one, other kinds
    /// found in a new listing of their parents (or of the whole kind).
    async fn still_in_kaiten(&mut self, kind: EntityKind, ids: &[i64]) -> Result<Vec<i64>, SyncError> {
        let gone = |e: &kaiten_client::Error| matches!(e, kaiten_client::Error::NotFound { .. });
        if kind == EntityKind::Cards {
            let mut there = Vec::new();
            for id in ids {
                match self.client().card(*id).await {
                    Ok(card) if card.condition != Some(Condition::Deleted) => there.push(*id),
                    Ok(_) => {}
                    Err(e) if gone(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(there);
        }
        let client = self.client().clone();
        let mut listed: HashSet<i64> = HashSet::new();
        match kind {
            EntityKind::Spaces => listed.extend(client.spaces().await?.iter().map(|s| s.id)),
            EntityKind::Users => listed.extend(client.users().await?.iter().map(|u| u.id)),
            EntityKind::CardTypes => listed.extend(client.card_types().await?.iter().map(|t| t.id)),
            EntityKind::PropertyDefinitions => listed.extend(client.property_definitions().await?.iter().map(|p| p.id)),
            // Never swept; nothing to check.
            EntityKind::Tags | EntityKind::Cards => {}
            EntityKind::SelectValues | EntityKind::Boards | EntityKind::Columns | EntityKind::Lanes => {
                let column = kind.table().scope_column.unwrap_or("id");
                let mut parents = BTreeSet::new();
                let mut orphans = false;
                for id in ids {
                    let parent = self.store().get(kind, *id).await?.and_then(|row| match row.value(kind, column) {
                        Some(crate::schema::SqlValue::Int(p)) => Some(*p),
                        _ => None,
                    });
                    match parent {
                        Some(p) => {
                            parents.insert(p);
                        }
                        None => orphans = true,
                    }
                }
                if kind == EntityKind::Boards && orphans {
                    parents.extend(client.spaces().await?.iter().map(|s| s.id));
                }
                for parent in parents {
                    // A parent Kaiten no longer has lists nothing.
                    let result = match kind {
                        EntityKind::SelectValues => client.select_values(parent).await.map(|v| ids_of(&v)),
                        EntityKind::Boards => client.boards(parent).await.map(|v| ids_of(&v)),
                        EntityKind::Columns => {
                            client.columns(parent).await.map(|v| ids_of(&flatten_columns(v, parent)))
                        }
                        _ => client.lanes(parent).await.map(|v| ids_of(&v)),
                    };
                    match result {
                        Ok(found) => listed.extend(found),
                        Err(e) if gone(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(ids.iter().copied().filter(|id| listed.contains(id)).collect())
    }
    /// The resolver of card parents, over this run's cache (see [`crate::parents`]).
    fn parents(&mut self) -> Parents<'_> {
        Parents {
            client: &self.engine.client,
            store: &*self.engine.store,
            cache: &mut self.parents,
            record: &mut self.record,
        }
    }

    async fn list_spaces(&mut self) -> Result<Vec<Space>, SyncError> {
        self.parents().list_spaces(false).await
    }

    async fn sync_spaces(&mut self) -> Result<(), SyncError> {
        let spaces = self.list_spaces().await?;
        if self.selection.spaces.is_empty() && self.selection.boards.is_empty() {
            return self.write_listing(Batch::Spaces(spaces), Scope::All).await;
        }
        // A narrowed run writes only the spaces in scope and never sweeps the others.
        let wanted: Vec<Space> = spaces
            .into_iter()
            .filter(|s| {
                self.selection.spaces.contains(&s.id)
                    || s.embedded_board_ids().iter().any(|b| self.selection.boards.contains(b))
            })
            .collect();
        self.write_unswept(Batch::Spaces(wanted)).await
    }

    /// Writes records without a sweep (a listing that is not complete for its kind, or one whose
    /// gaps are not deletions, like tags).
    async fn write_unswept(&mut self, batch: Batch) -> Result<(), SyncError> {
        let kind = batch.kind();
        let cursor = batch.rows().iter().filter_map(|r| r.updated).max();
        let fetched = batch.len();
        let page = Page { sweep: None, state: None, synced_at: now_millis(), batch };
        let outcome = self.store().apply_page(&page).await?;
        self.stats(kind).add_page(fetched, outcome);
        let state = self.store().entity_state(kind).await?;
        let state = self.new_state(state, cursor);
        self.store().save_entity_state(&state).await?;
        let stats = self.record.stats[&kind];
        self.engine.progress.emit(&ProgressEvent::PageDone { kind, stats });
        Ok(())
    }

    async fn sync_properties(&mut self) -> Result<(), SyncError> {
        let since = self.store().entity_state(EntityKind::PropertyDefinitions).await?.cursor;
        let props = self.client().property_definitions().await?;
        let ids: Vec<i64> = props.iter().map(|p| p.id).collect();
        let stored: HashSet<i64> =
            self.store().existing_ids(EntityKind::PropertyDefinitions, &ids).await?.into_iter().collect();
        // Select values are listed for select properties that are new or changed, and for all of
        // them in a full run or when their last complete listing is older than
        // `structure_max_age` (removing a value does not move its property's `updated`).
        let all = self.is_stale(EntityKind::SelectValues).await?;
        if all {
            self.complete.insert(EntityKind::SelectValues);
        }
        self.select_properties = Some(
            props
                .iter()
                .filter(|p| p.is_select())
                .filter(|p| {
                    all || !stored.contains(&p.id) || since.is_none() || p.updated.is_none() || p.updated > since
                })
                .map(|p| p.id)
                .collect(),
        );
        self.write_listing(Batch::PropertyDefinitions(props), Scope::All).await
    }

    async fn sync_select_values(&mut self) -> Result<(), SyncError> {
        let select = match self.select_properties.take() {
            Some(select) => select,
            None => {
                // Property definitions were not part of this run: store them, as the values'
                // parents, without touching their state, and list the values of every select.
                let props = self.client().property_definitions().await?;
                let select = props.iter().filter(|p| p.is_select()).map(|p| p.id).collect();
                self.write_placeholders(Batch::PropertyDefinitions(props)).await?;
                self.complete.insert(EntityKind::SelectValues);
                select
            }
        };
        let client = self.client().clone();
        let mut lists = futures::stream::iter(select.clone())
            .map(|id| {
                let client = client.clone();
                async move { client.select_values(id).await.map(|v| (id, v)) }
            })
            .buffered(self.engine.options.concurrency.max(1));
        let mut values = Vec::new();
        while let Some(list) = lists.next().await {
            let (id, list) = list?;
            values.extend(list.into_iter().map(|mut v| {
                v.custom_property_id = v.custom_property_id.or(Some(id));
                v
            }));
        }
        self.write_listing(Batch::SelectValues(values), Scope::Parents(select)).await
    }

    fn since(&self, cursor: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        cursor.map(|c| c - chrono::Duration::from_std(self.engine.options.overlap).unwrap_or_default())
    }

    /// The spaces a run lists boards of.
    async fn spaces_in_scope(&mut self) -> Result<Vec<i64>, SyncError> {
        if !self.selection.spaces.is_empty() {
            return Ok(self.selection.spaces.clone());
        }
        let spaces = self.list_spaces().await?;
        if self.selection.boards.is_empty() {
            return Ok(spaces.iter().map(|s| s.id).collect());
        }
        Ok(spaces
            .iter()
            .filter(|s| s.embedded_board_ids().iter().any(|b| self.selection.boards.contains(b)))
            .map(|s| s.id)
            .collect())
    }

    async fn sync_boards(&mut self) -> Result<(), SyncError> {
        // Boards are listed whole, so "changed" is exact: newer than the newest board stored
        // before this run, or not stored at all.
        let since = self.store().entity_state(EntityKind::Boards).await?.cursor;
        let spaces = self.spaces_in_scope().await?;
        let client = self.client().clone();
        let mut lists = futures::stream::iter(spaces.clone())
            .map(|space_id| {
                let client = client.clone();
                async move { client.boards(space_id).await.map(|b| (space_id, b)) }
            })
            .buffered(self.engine.options.concurrency.max(1));
        let mut boards: Vec<Board> = Vec::new();
        while let Some(list) = lists.next().await {
            let (space_id, list) = list?;
            boards.extend(list.into_iter().map(|mut b| {
                b.space_id = b.space_id.or(Some(space_id));
                b
            }));
        }
        if !self.selection.boards.is_empty() {
            boards.retain(|b| self.selection.boards.contains(&b.id));
        }
        let ids: Vec<i64> = boards.iter().map(|b| b.id).collect();
        let stored: HashSet<i64> = self.store().existing_ids(EntityKind::Boards, &ids).await?.into_iter().collect();
        let changed: HashSet<i64> = boards
            .iter()
            .filter(|b| !stored.contains(&b.id) || since.is_none() || b.updated.is_none() || b.updated > since)
            .map(|b| b.id)
            .collect();
        for b in &boards {
            self.parents.board_spaces.insert(b.id, b.space_id);
        }
        self.parents.known.entry(EntityKind::Boards).or_default().extend(ids.iter().copied());
        self.changed_boards = Some(changed);
        self.listed_boards = Some(ids);
        let board_spaces: Vec<i64> = boards.iter().filter_map(|b| b.space_id).collect();
        self.ensure_spaces(board_spaces).await?;
        if self.selection.boards.is_empty() {
            let scope = if self.selection.spaces.is_empty() { Scope::All } else { Scope::Parents(spaces) };
            self.write_listing(Batch::Boards(boards), scope).await
        } else {
            self.write_unswept(Batch::Boards(boards)).await
        }
    }

    /// The boards in scope: listed in this run, or read from the store.
    async fn boards_in_scope(&mut self) -> Result<Vec<i64>, SyncError> {
        if let Some(listed) = &self.listed_boards {
            return Ok(listed.clone());
        }
        if !self.selection.boards.is_empty() {
            return Ok(self.selection.boards.clone());
        }
        let stored = self.store().ids(EntityKind::Boards, false).await?;
        let mut boards = Vec::new();
        for id in stored {
            let space = self.board_space(id).await?;
            if self.selection.spaces.is_empty() || space.is_some_and(|s| self.selection.spaces.contains(&s)) {
                boards.push(id);
            }
        }
        if boards.is_empty() && self.selection.spaces.is_empty() {
            // Nothing stored yet: list the boards (without writing them) to know where to look.
            let spaces = self.spaces_in_scope().await?;
            for space_id in spaces {
                boards.extend(self.client().boards(space_id).await?.iter().map(|b| b.id));
            }
        }
        Ok(boards)
    }
    async fn board_space(&mut self, board_id: i64) -> Result<Option<i64>, SyncError> {
        self.parents().board_space(board_id).await
    }

    async fn ensure_spaces(&mut self, ids: Vec<i64>) -> Result<(), SyncError> {
        self.parents().ensure_spaces(ids).await
    }

    async fn sync_structure(&mut self, kind: EntityKind) -> Result<(), SyncError> {
        let boards = self.boards_in_scope().await?;
        // Columns and lanes need their board stored first.
        let missing = self.unknown(EntityKind::Boards, boards.clone()).await?;
        if !missing.is_empty() {
            self.fetch_missing_boards(&missing).await?;
        }
        // Incremental: the boards whose `updated` moved, or every board when this kind's last
        // complete listing is older than `structure_max_age` (a renamed column or lane moves
        // nothing else, and Kaiten sends no event for it).
        let stale = self.is_stale(kind).await?;
        let mut every_board = false;
        let refresh: Vec<i64> = match (self.mode, &self.changed_boards) {
            (Mode::Incremental, Some(changed)) if !stale => {
                boards.iter().copied().filter(|b| changed.contains(b)).collect()
            }
            _ => {
                self.complete.insert(kind);
                every_board = true;
                boards
            }
        };
        // Every board of an unnarrowed run: the columns (lanes) of every board Kaiten has. Those
        // of a board that is gone (not listed) are gone with it, so the sweep covers every row.
        let scope = if every_board && self.lists_whole(kind) { Scope::All } else { Scope::Parents(refresh.clone()) };
        let client = self.client().clone();
        let mut lists = futures::stream::iter(refresh.clone())
            .map(|board_id| {
                let client = client.clone();
                async move {
                    let batch = match kind {
                        EntityKind::Columns => {
                            Batch::Columns(flatten_columns(client.columns(board_id).await?, board_id))
                        }
                        _ => Batch::Lanes(with_board(client.lanes(board_id).await?, board_id)),
                    };
                    Ok::<_, kaiten_client::Error>(batch)
                }
            })
            .buffered(self.engine.options.concurrency.max(1));
        let mut merged = Vec::new();
        while let Some(batch) = lists.next().await {
            merged.push(batch?);
        }
        let batch = match kind {
            EntityKind::Columns => Batch::Columns(
                merged.into_iter().flat_map(|b| if let Batch::Columns(c) = b { c } else { Vec::new() }).collect(),
            ),
            _ => Batch::Lanes(
                merged.into_iter().flat_map(|b| if let Batch::Lanes(l) = b { l } else { Vec::new() }).collect(),
            ),
        };
        self.parents.known.entry(kind).or_default().extend(batch.ids());
        if kind == EntityKind::Lanes {
            self.parents.refreshed.extend(refresh.iter().copied());
        }
        self.write_listing(batch, scope).await
    }

    /// The card listings of this run: one per condition, for each space or board in scope.
    async fn card_walks(&mut self) -> Result<Vec<CardQuery>, SyncError> {
        let mut conditions = vec![Condition::Live, Condition::Archived];
        if self.mode == Mode::Incremental && self.engine.options.incremental_deleted_cards {
            conditions.push(Condition::Deleted);
        }
        let filters: Vec<(Option<i64>, Option<i64>)> = if !self.selection.boards.is_empty() {
            self.selection.boards.iter().map(|b| (None, Some(*b))).collect()
        } else if !self.selection.spaces.is_empty() {
            self.selection.spaces.iter().map(|s| (Some(*s), None)).collect()
        } else {
            vec![(None, None)]
        };
        let mut walks = Vec::new();
        for (space_id, board_id) in filters {
            for condition in &conditions {
                let mut q = CardQuery::new();
                q.space_id = space_id;
                q.board_id = board_id;
                q.condition = Some(*condition);
                q.order_by = Some("updated".to_owned());
                q.order_direction = Some(OrderDirection::Asc);
                q.additional_card_fields = self.engine.options.additional_card_fields.clone();
                walks.push(q);
            }
        }
        Ok(walks)
    }

    async fn sync_cards(&mut self) -> Result<(), SyncError> {
        let kind = EntityKind::Cards;
        let mut state = self.store().entity_state(kind).await?;
        let mut resume = ResumeState::parse(state.resume.as_deref());
        let scope_key = self.selection.scope_text().unwrap_or_default();
        let walks = self.card_walks().await?;
        let since = match self.mode {
            Mode::Full => None,
            Mode::Incremental => self.since(state.cursor),
        };
        let max_age = chrono::Duration::from_std(self.engine.options.max_resume_age).unwrap_or(chrono::Duration::MAX);
        let fresh = |r: &CardResume| r.began.is_some_and(|b| now_millis() - b <= max_age);
        let mut current = match resume.slot(self.mode).take() {
            Some(r) if r.scope == scope_key && r.walk < walks.len() && fresh(&r) => {
                info!(walk = r.walk, offset = r.pos.offset, "resuming the card listing where the last run stopped");
                r
            }
            _ => CardResume {
                sweep: (self.mode == Mode::Full).then_some(self.record.id),
                start: since,
                walk: 0,
                pos: WalkPos { after: since, offset: 0, offset_only: false },
                max_updated: None,
                scope: scope_key,
                began: Some(now_millis()),
                rules: PageRules::default(),
            },
        };
        let page_size = self.engine.options.page_size.clamp(1, KaitenClient::CARDS_PAGE_MAX);
        let limit = current.rules.limit(page_size);
        let mut next = Some(Prefetch::spawn(self.fetch_cards(&walks[current.walk], current.pos, limit)));
        while let Some(fetch) = next.take() {
            self.check_lock()?;
            let cards = match fetch.result().await {
                Ok(cards) => cards,
                // A tenant that refuses to list deleted cards (`condition=3`): skip that listing;
                // deletions then show up in the next full sync.
                Err(SyncError::Api(kaiten_client::Error::BadRequest { status: 400, message, .. }))
                    if walks[current.walk].condition == Some(Condition::Deleted) =>
                {
                    warn!(%message, "Kaiten refused to list deleted cards; deletions will be found by the next full sync");
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            let fetched = cards.len();
            let mut after = current.clone();
            after.max_updated = after.max_updated.max(cards.iter().filter_map(|c| c.updated).max());
            // The stop rules of `card_walk`: a short page ends the walk only when it is the last
            // one, and a listing whose end cannot be told fails here, before any sweep.
            let asked = current.rules.limit(page_size);
            let verdict = match after.rules.judge(page_size, current.pos, asked, &cards) {
                Ok(verdict) => verdict,
                Err(e) => {
                    // The positions this listing reached rest on answers that ignored paging:
                    // the next run must not resume from them (it would skip cards), but start over.
                    *resume.slot(self.mode) = None;
                    state.resume = resume.to_text();
                    self.store().save_entity_state(&state).await?;
                    return Err(SyncError::IncompleteListing { route: "GET /cards".to_owned(), reason: e.0 });
                }
            };
            match verdict {
                Verdict::Done => {
                    after.walk += 1;
                    after.pos = WalkPos { after: after.start, offset: 0, offset_only: false };
                    after.rules.start_walk();
                }
                Verdict::Next(pos) => {
                    after.pos = pos;
                    if after.pos.offset_only && !current.pos.offset_only {
                        warn!("Kaiten did not order cards by `updated`; paging by offset for the rest of this listing");
                    }
                }
            }
            let cards = if self.mode == Mode::Incremental
                && self.engine.options.card_members_backfill
                && walks[current.walk].condition != Some(Condition::Deleted)
            {
                self.fetch_changed_card_details(cards).await?
            } else {
                cards
            };
            let cards = self.prepare_cards(cards).await?;
            let finished = after.walk >= walks.len();
            let mut page_state = state.clone();
            if finished {
                *resume.slot(self.mode) = None;
            } else {
                *resume.slot(self.mode) = Some(after.clone());
            }
            page_state.resume = resume.to_text();
            let page = Page {
                batch: Batch::Cards(cards),
                sweep: current.sweep,
                state: Some(page_state.clone()),
                synced_at: now_millis(),
            };
            // Fetch the next page while this one is written (dropped, so aborted, if the write fails).
            let following = (!finished).then(|| {
                Prefetch::spawn(self.fetch_cards(&walks[after.walk], after.pos, after.rules.limit(page_size)))
            });
            let outcome = self.store().apply_page(&page).await?;
            state = page_state;
            self.stats(kind).add_page(fetched, outcome);
            let stats = self.record.stats[&kind];
            self.engine.progress.emit(&ProgressEvent::PageDone { kind, stats });
            current = after;
            next = following;
        }
        let mut swept = true;
        if let Some(sweep) = current.sweep {
            let scope = self.card_scope().await?;
            let checked =
                if matches!(scope, Scope::Parents(_)) { self.verify_moved_cards(sweep, &scope).await? } else { false };
            swept = self.sweep_deleted(kind, sweep, &scope, checked).await?;
        }
        let reconciled = state.last_full_sync_at;
        let mut state = self.new_state(state, current.max_updated);
        if !swept {
            // Deletions were not reconciled: the last complete listing stays the previous one.
            state.last_full_sync_at = reconciled;
        }
        self.store().save_entity_state(&state).await?;
        Ok(())
    }

    /// In a listing limited to some boards, a card missing from it may have moved to another board
    /// rather than been deleted: ask Kaiten for each (up to [`SyncOptions::max_verified_deletions`]),
    /// store the ones that still exist, and leave the rest to the sweep. Returns whether every
    /// missing card was asked for (the rest are then known to be gone).
    async fn verify_moved_cards(&mut self, sweep: i64, scope: &Scope) -> Result<bool, SyncError> {
        let kind = EntityKind::Cards;
        let unseen = self.store().unseen(kind, sweep, scope).await?;
        let limit = self.engine.options.max_verified_deletions;
        if unseen.len() > limit {
            warn!(candidates = unseen.len(), limit, "too many cards missing from a scoped listing to check one by one");
            return Ok(false);
        }
        let mut found = Vec::new();
        for id in unseen {
            match self.client().card(id).await {
                Ok(card) => found.push(card),
                Err(kaiten_client::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if found.is_empty() {
            return Ok(true);
        }
        debug!(cards = found.len(), "cards missing from the scoped listing still exist (moved); storing them");
        let fetched = found.len();
        let cards = self.prepare_cards(found).await?;
        let page = Page { batch: Batch::Cards(cards), sweep: Some(sweep), state: None, synced_at: now_millis() };
        let outcome = self.store().apply_page(&page).await?;
        self.stats(kind).add_page(fetched, outcome);
        Ok(true)
    }

    /// [`SyncOptions::card_members_backfill`]: replaces each card of a listed page that changed
    /// since the mirror stored it (or is not stored) by what `GET /cards/{id}` returns, members
    /// included. A card Kaiten no longer has (404) keeps its list shape; the next full sync
    /// reconciles it.
    async fn fetch_changed_card_details(&mut self, mut cards: Vec<Card>) -> Result<Vec<Card>, SyncError> {
        let mut changed = Vec::new();
        for (index, card) in cards.iter().enumerate() {
            if card.condition == Some(Condition::Deleted) {
                continue;
            }
            let newer = match self.store().get(EntityKind::Cards, card.id).await? {
                None => true,
                Some(stored) => {
                    let updated = match stored.value(EntityKind::Cards, "updated") {
                        Some(crate::schema::SqlValue::Time(t)) => Some(*t),
                        _ => None,
                    };
                    let version = match stored.value(EntityKind::Cards, "version") {
                        Some(crate::schema::SqlValue::Int(v)) => Some(*v),
                        _ => None,
                    };
                    // Strictly newer than the stored copy: the stored one would not replace it.
                    stored.deleted_at.is_some() || !incoming_is_not_older(card.updated, card.version, updated, version)
                }
            };
            if newer {
                changed.push(index);
            }
        }
        if changed.is_empty() {
            return Ok(cards);
        }
        let client = self.client().clone();
        let ids: Vec<i64> = changed.iter().map(|i| cards[*i].id).collect();
        let details: Vec<Result<Card, kaiten_client::Error>> = futures::stream::iter(ids)
            .map(|id| {
                let client = client.clone();
                async move { client.card(id).await }
            })
            .buffered(self.engine.options.concurrency.max(1))
            .collect()
            .await;
        let mut fetched = 0;
        for (index, detail) in changed.into_iter().zip(details) {
            match detail {
                Ok(detail) if detail.id == cards[index].id => {
                    cards[index] = detail;
                    fetched += 1;
                }
                Ok(detail) => {
                    warn!(
                        asked = cards[index].id,
                        got = detail.id,
                        "GET /cards/{{id}} answered another card; keeping the listed one"
                    );
                }
                Err(kaiten_client::Error::NotFound { .. }) => {
                    debug!(card = cards[index].id, "a changed card is gone already; keeping its listed copy");
                }
                Err(e) => return Err(e.into()),
            }
        }
        debug!(cards = fetched, "fetched changed cards one by one for their members");
        Ok(cards)
    }

    async fn card_scope(&mut self) -> Result<Scope, SyncError> {
        if !self.selection.boards.is_empty() {
            return Ok(Scope::Parents(self.selection.boards.clone()));
        }
        if !self.selection.spaces.is_empty() {
            return Ok(Scope::Parents(self.boards_in_scope().await?));
        }
        Ok(Scope::All)
    }

    fn fetch_cards(
        &self,
        query: &CardQuery,
        pos: WalkPos,
        limit: u32,
    ) -> futures::future::BoxFuture<'static, Result<Vec<Card>, kaiten_client::Error>> {
        let client = self.client().clone();
        let mut query = query.clone();
        if !pos.offset_only {
            query.updated_after = pos.after;
        }
        Box::pin(async move { client.cards_page(&query, PageRequest { limit, offset: pos.offset }).await })
    }

    async fn prepare_cards(&mut self, cards: Vec<Card>) -> Result<Vec<Card>, SyncError> {
        self.parents().prepare_cards(cards).await
    }

    async fn unknown(&mut self, kind: EntityKind, ids: Vec<i64>) -> Result<BTreeSet<i64>, SyncError> {
        self.parents().unknown(kind, ids).await
    }

    async fn write_placeholders(&mut self, batch: Batch) -> Result<(), SyncError> {
        self.parents().write_parents(batch).await
    }

    async fn fetch_missing_boards(&mut self, missing: &BTreeSet<i64>) -> Result<(), SyncError> {
        self.parents().fetch_missing_boards(missing).await
    }
}

/// A page request running on its own task, so it proceeds while the previous page is written.
/// Dropping it aborts the request.
struct Prefetch(tokio::task::JoinHandle<Result<Vec<Card>, kaiten_client::Error>>);

impl Prefetch {
    fn spawn(fetch: futures::future::BoxFuture<'static, Result<Vec<Card>, kaiten_client::Error>>) -> Self {
        Self(tokio::spawn(fetch))
    }

    async fn result(mut self) -> Result<Vec<Card>, SyncError> {
        match (&mut self.0).await {
            Ok(result) => Ok(result?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(SyncError::Cancelled),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The position after a full page: keyset on `updated` when Kaiten honoured the order, else offset.
pub(crate) fn next_position(pos: WalkPos, cards: &[Card]) -> WalkPos {
    let sorted = cards.windows(2).all(|w| match (w[0].updated, w[1].updated) {
        (Some(a), Some(b)) => a <= b,
        _ => true,
    });
    if pos.offset_only || !sorted {
        return WalkPos { after: pos.after, offset: pos.offset + cards.len() as u64, offset_only: true };
    }
    match cards.iter().filter_map(|c| c.updated).max() {
        // Ask again from just before the last timestamp seen: cards sharing it are listed again
        // (upserted idempotently) rather than skipped, whatever Kaiten's inclusivity.
        Some(max) if Some(max - chrono::Duration::milliseconds(1)) > pos.after => {
            WalkPos { after: Some(max - chrono::Duration::milliseconds(1)), offset: 0, offset_only: false }
        }
        _ => WalkPos { after: pos.after, offset: pos.offset + cards.len() as u64, offset_only: false },
    }
}

/// Ids of listed records.
fn ids_of<T: kaiten_client::Record>(records: &[T]) -> Vec<i64> {
    records.iter().map(kaiten_client::Record::id).collect()
}

/// At most `n` of `ids`, spread evenly over them (all of them when there are no more than `n`).
fn spread_sample(ids: &[i64], n: usize) -> Vec<i64> {
    if ids.len() <= n {
        return ids.to_vec();
    }
    (0..n).map(|i| ids[i * ids.len() / n]).collect()
}

fn split_batch(batch: Batch, size: usize) -> Vec<Batch> {
    macro_rules! split {
        ($variant:ident, $items:expr) => {{
            let mut items = $items;
            let mut out = Vec::new();
            while items.len() > size {
                let rest = items.split_off(size);
                out.push(Batch::$variant(items));
                items = rest;
            }
            out.push(Batch::$variant(items));
            out
        }};
    }
    match batch {
        Batch::Spaces(v) => split!(Spaces, v),
        Batch::Users(v) => split!(Users, v),
        Batch::CardTypes(v) => split!(CardTypes, v),
        Batch::Tags(v) => split!(Tags, v),
        Batch::PropertyDefinitions(v) => split!(PropertyDefinitions, v),
        Batch::SelectValues(v) => split!(SelectValues, v),
        Batch::Boards(v) => split!(Boards, v),
        Batch::Columns(v) => split!(Columns, v),
        Batch::Lanes(v) => split!(Lanes, v),
        Batch::Cards(v) => split!(Cards, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaiten_client::Record;
    use serde_json::json;

    fn card(id: i64, updated_ms: Option<i64>) -> Card {
        let updated = updated_ms.map(|ms| {
            (DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms))
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        });
        Card::from_value(json!({"id": id, "updated": updated})).unwrap()
    }

    #[test]
    fn keyset_moves_past_the_last_timestamp_or_falls_back_to_offset() {
        let start = WalkPos { after: None, offset: 0, offset_only: false };
        let next = next_position(start, &[card(1, Some(10)), card(2, Some(20))]);
        assert_eq!(next.after.unwrap().timestamp_millis(), 19);
        assert_eq!(next.offset, 0);
        // Same timestamp again: no progress by time, so skip by offset.
        let same = next_position(next, &[card(2, Some(20)), card(3, Some(20))]);
        assert_eq!((same.after, same.offset), (next.after, 2));
        // Unsorted page: the API ignored order_by.
        let unsorted = next_position(start, &[card(1, Some(30)), card(2, Some(20))]);
        assert!(unsorted.offset_only);
        assert_eq!(unsorted.offset, 2);
    }

    #[test]
    fn batches_split_into_pages() {
        let cards: Vec<Card> = (1..=1201).map(|id| card(id, None)).collect();
        let parts = split_batch(Batch::Cards(cards), 500);
        assert_eq!(parts.iter().map(Batch::len).collect::<Vec<_>>(), vec![500, 500, 201]);
    }

    #[test]
    fn selection_scope_text_and_kinds() {
        let s = Selection::kinds(&[EntityKind::PropertyDefinitions]).in_boards(&[5, 6]);
        assert!(s.includes(EntityKind::SelectValues));
        assert!(!s.includes(EntityKind::Cards));
        assert_eq!(s.scope_text().unwrap(), "kinds property_definitions; boards 5,6");
        assert!(Selection::all().is_everything());
    }
}
