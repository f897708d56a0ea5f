//! One run in progress: the small kinds, structure, listings written whole and deletion sweeps.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kaiten_client::{Board, BoardId, CardId, Condition, KaitenClient, PropertyId, Space, SpaceId};
use tracing::{info, info_span, warn, Instrument};

use super::options::join_ids;
use super::prefetch::{take_or, Prefetched};
use super::{Mode, Selection, SyncEngine, DELETE_CHECK_SAMPLE};
use crate::error::{RefusedDeletion, SyncError};
use crate::parents::{flatten_columns, with_board, ParentCache, Parents};
use crate::progress::ProgressEvent;
use crate::schema::EntityKind;
use crate::store::{now_millis, Batch, EntityState, EntityStats, Page, RunRecord, Scope, Store};

/// A sweep id no listing uses: `Store::unseen` with it lists every live row in a scope.
pub(super) const NO_SWEEP: i64 = i64::MIN;

/// One run in progress.
pub(super) struct Run<'a> {
    pub(super) engine: &'a SyncEngine,
    pub(super) mode: Mode,
    pub(super) selection: &'a Selection,
    pub(super) record: RunRecord,
    /// Parents known, listed or refreshed in this run (see [`crate::parents`]).
    pub(super) parents: ParentCache,
    /// Boards new or changed in this run (incremental structure refresh).
    pub(super) changed_boards: Option<HashSet<BoardId>>,
    /// Boards listed in this run (in scope).
    pub(super) listed_boards: Option<Vec<BoardId>>,
    /// Select-type properties whose values this run lists.
    pub(super) select_properties: Option<Vec<PropertyId>>,
    /// Kinds an incremental run listed completely (every board's columns or lanes, every select
    /// property's values): their `last_full_sync_at` moves, which bounds their staleness.
    pub(super) complete: HashSet<EntityKind>,
    /// Set by the heartbeat when the lock is no longer this run's.
    pub(super) lost: Arc<AtomicBool>,
    /// Sweeps refused by the deletion guard ([`SyncOptions::max_delete_share`]).
    pub(super) refused: Vec<RefusedDeletion>,
    /// The card listing, planned (and its first pages requested) when the run starts.
    pub(super) cards: Option<super::cards::CardFeed>,
    /// Listings of small kinds requested when the run started.
    pub(super) prefetched: Prefetched,
}

impl Run<'_> {
    pub(super) fn store(&self) -> &dyn Store {
        &*self.engine.store
    }

    pub(super) fn client(&self) -> &KaitenClient {
        &self.engine.client
    }

    pub(super) fn stats(&mut self, kind: EntityKind) -> &mut EntityStats {
        self.record.stats.entry(kind).or_default()
    }

    pub(super) fn check_lock(&self) -> Result<(), SyncError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(SyncError::LockLost);
        }
        Ok(())
    }

    pub(super) async fn sync_entity(&mut self, kind: EntityKind) -> Result<(), SyncError> {
        self.check_lock()?;
        self.engine.progress.emit(&ProgressEvent::EntityStarted { kind });
        self.stats(kind);
        let span = info_span!("entity", kind = kind.as_str());
        match kind {
            EntityKind::Spaces => self.sync_spaces().instrument(span).await?,
            EntityKind::Users => {
                let client = self.client().clone();
                let users = take_or(&mut self.prefetched.users, client.users()).await?;
                self.write_listing(Batch::Users(users), Scope::All).instrument(span).await?
            }
            EntityKind::CardTypes => {
                let client = self.client().clone();
                let types = take_or(&mut self.prefetched.card_types, client.card_types()).await?;
                self.write_listing(Batch::CardTypes(types), Scope::All).instrument(span).await?
            }
            EntityKind::Tags => {
                // Kaiten leaves tags on no card out of `GET /tags`, and tags cannot be deleted
                // through the API: absence from the list is not a deletion, so no sweep.
                let client = self.client().clone();
                let tags = take_or(&mut self.prefetched.tags, client.tags()).await?;
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
    pub(super) fn lists_whole(&self, kind: EntityKind) -> bool {
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
    pub(super) fn new_state(&self, mut state: EntityState, cursor: Option<DateTime<Utc>>) -> EntityState {
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
    pub(super) async fn is_stale(&self, kind: EntityKind) -> Result<bool, SyncError> {
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
    pub(super) async fn validate_selection(&mut self) -> Result<(), SyncError> {
        if self.selection.spaces.is_empty() && self.selection.boards.is_empty() {
            return Ok(());
        }
        let spaces = self.list_spaces().await?;
        let space_ids: HashSet<SpaceId> = spaces.iter().map(|s| s.id).collect();
        let missing_spaces: Vec<SpaceId> =
            self.selection.spaces.iter().copied().filter(|s| !space_ids.contains(s)).collect();
        let mut board_ids: HashSet<BoardId> = spaces.iter().flat_map(|s| s.embedded_board_ids()).collect();
        let mut missing_boards: Vec<BoardId> =
            self.selection.boards.iter().copied().filter(|b| !board_ids.contains(b)).collect();
        if !missing_boards.is_empty() {
            // A space listed without its `boards[]`: ask for its boards before concluding.
            let bare: Vec<SpaceId> = spaces
                .iter()
                .filter(|s| s.raw.get("boards").and_then(serde_json::Value::as_array).is_none())
                .map(|s| s.id)
                .collect();
            for space in bare {
                board_ids.extend(self.client().boards(space).await?.iter().map(|b| b.id));
            }
            missing_boards.retain(|b| !board_ids.contains(b));
        }
        fn named<I: std::fmt::Display>(what: &str, ids: &[I]) -> String {
            match ids {
                [one] => format!("{what} {one}"),
                many => format!("{what}s {}", join_ids(many)),
            }
        }
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
    pub(super) async fn write_listing(&mut self, batch: Batch, scope: Scope) -> Result<(), SyncError> {
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
    pub(super) async fn record_row_counts(&self) -> Result<(), SyncError> {
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
    pub(super) async fn sweep_deleted(
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
    pub(super) async fn deletion_is_confirmed(
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
    pub(super) async fn still_in_kaiten(&mut self, kind: EntityKind, ids: &[i64]) -> Result<Vec<i64>, SyncError> {
        let gone = |e: &kaiten_client::Error| matches!(e, kaiten_client::Error::NotFound { .. });
        if kind == EntityKind::Cards {
            let mut there = Vec::new();
            for (id, card) in ids.iter().zip(self.cards_by_id(ids.iter().copied().map(CardId).collect()).await) {
                match card {
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
            EntityKind::Spaces => listed.extend(ids_of(&client.spaces().await?)),
            EntityKind::Users => listed.extend(ids_of(&client.users().await?)),
            EntityKind::CardTypes => listed.extend(ids_of(&client.card_types().await?)),
            EntityKind::PropertyDefinitions => listed.extend(ids_of(&client.property_definitions().await?)),
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
                    parents.extend(client.spaces().await?.iter().map(|s| s.id.get()));
                }
                for parent in parents {
                    // A parent Kaiten no longer has lists nothing.
                    let result = match kind {
                        EntityKind::SelectValues => client.select_values(PropertyId(parent)).await.map(|v| ids_of(&v)),
                        EntityKind::Boards => client.boards(SpaceId(parent)).await.map(|v| ids_of(&v)),
                        EntityKind::Columns => {
                            client.columns(BoardId(parent)).await.map(|v| ids_of(&flatten_columns(v, BoardId(parent))))
                        }
                        _ => client.lanes(BoardId(parent)).await.map(|v| ids_of(&v)),
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
    pub(super) fn parents(&mut self) -> Parents<'_> {
        Parents {
            client: &self.engine.client,
            store: &*self.engine.store,
            cache: &mut self.parents,
            record: &mut self.record,
        }
    }

    pub(super) async fn list_spaces(&mut self) -> Result<Vec<Space>, SyncError> {
        if let Some(task) = self.prefetched.spaces.take() {
            if self.parents.spaces.is_none() {
                self.parents.spaces = Some(task.join().await??);
            }
        }
        self.parents().list_spaces(false).await
    }

    pub(super) async fn sync_spaces(&mut self) -> Result<(), SyncError> {
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
    pub(super) async fn write_unswept(&mut self, batch: Batch) -> Result<(), SyncError> {
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

    pub(super) async fn sync_properties(&mut self) -> Result<(), SyncError> {
        let since = self.store().entity_state(EntityKind::PropertyDefinitions).await?.cursor;
        let client = self.client().clone();
        let props = take_or(&mut self.prefetched.properties, client.property_definitions()).await?;
        let ids: Vec<i64> = props.iter().map(|p| p.id.get()).collect();
        let stored: HashSet<PropertyId> = self
            .store()
            .existing_ids(EntityKind::PropertyDefinitions, &ids)
            .await?
            .into_iter()
            .map(PropertyId)
            .collect();
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

    pub(super) async fn sync_select_values(&mut self) -> Result<(), SyncError> {
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
        let select = select.into_iter().map(i64::from).collect();
        self.write_listing(Batch::SelectValues(values), Scope::Parents(select)).await
    }

    pub(super) fn since(&self, cursor: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        cursor.map(|c| c - chrono::Duration::from_std(self.engine.options.overlap).unwrap_or_default())
    }

    /// The spaces a run lists boards of.
    pub(super) async fn spaces_in_scope(&mut self) -> Result<Vec<SpaceId>, SyncError> {
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

    pub(super) async fn sync_boards(&mut self) -> Result<(), SyncError> {
        // Boards are listed whole, so "changed" is exact: newer than the newest board stored
        // before this run, or not stored at all.
        let since = self.store().entity_state(EntityKind::Boards).await?.cursor;
        let spaces = self.spaces_in_scope().await?;
        let prefetched = match self.prefetched.boards.take() {
            Some(task) => task.join().await?,
            None => None,
        };
        let lists: Vec<(SpaceId, Result<Vec<Board>, kaiten_client::Error>)> = match prefetched {
            // Requested for the same spaces when the run started.
            Some(lists) if lists.iter().map(|(id, _)| *id).eq(spaces.iter().copied()) => lists,
            _ => {
                let client = self.client().clone();
                futures::stream::iter(spaces.clone())
                    .map(|space_id| {
                        let client = client.clone();
                        async move { (space_id, client.boards(space_id).await) }
                    })
                    .buffered(self.engine.options.concurrency.max(1))
                    .collect()
                    .await
            }
        };
        let mut boards: Vec<Board> = Vec::new();
        for (space_id, list) in lists {
            boards.extend(list?.into_iter().map(|mut b| {
                b.space_id = b.space_id.or(Some(space_id));
                b
            }));
        }
        if !self.selection.boards.is_empty() {
            boards.retain(|b| self.selection.boards.contains(&b.id));
        }
        let ids: Vec<BoardId> = boards.iter().map(|b| b.id).collect();
        let raw_ids: Vec<i64> = ids.iter().map(|b| b.get()).collect();
        let stored: HashSet<BoardId> =
            self.store().existing_ids(EntityKind::Boards, &raw_ids).await?.into_iter().map(BoardId).collect();
        let changed: HashSet<BoardId> = boards
            .iter()
            .filter(|b| !stored.contains(&b.id) || since.is_none() || b.updated.is_none() || b.updated > since)
            .map(|b| b.id)
            .collect();
        for b in &boards {
            self.parents.board_spaces.insert(b.id, b.space_id);
        }
        self.parents.known.entry(EntityKind::Boards).or_default().extend(raw_ids);
        self.changed_boards = Some(changed);
        self.listed_boards = Some(ids);
        let board_spaces: Vec<SpaceId> = boards.iter().filter_map(|b| b.space_id).collect();
        self.ensure_spaces(board_spaces).await?;
        if self.selection.boards.is_empty() {
            let scope = if self.selection.spaces.is_empty() {
                Scope::All
            } else {
                Scope::Parents(spaces.into_iter().map(i64::from).collect())
            };
            self.write_listing(Batch::Boards(boards), scope).await
        } else {
            self.write_unswept(Batch::Boards(boards)).await
        }
    }

    /// The boards in scope: listed in this run, or read from the store.
    pub(super) async fn boards_in_scope(&mut self) -> Result<Vec<BoardId>, SyncError> {
        if let Some(listed) = &self.listed_boards {
            return Ok(listed.clone());
        }
        if !self.selection.boards.is_empty() {
            return Ok(self.selection.boards.clone());
        }
        let stored = self.store().ids(EntityKind::Boards, false).await?;
        let mut boards = Vec::new();
        for id in stored.into_iter().map(BoardId) {
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
    pub(super) async fn board_space(&mut self, board_id: BoardId) -> Result<Option<SpaceId>, SyncError> {
        self.parents().board_space(board_id).await
    }

    pub(super) async fn ensure_spaces(&mut self, ids: Vec<SpaceId>) -> Result<(), SyncError> {
        self.parents().ensure_spaces(ids).await
    }

    pub(super) async fn sync_structure(&mut self, kind: EntityKind) -> Result<(), SyncError> {
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
        let refresh: Vec<BoardId> = match (self.mode, &self.changed_boards) {
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
        let scope = if every_board && self.lists_whole(kind) {
            Scope::All
        } else {
            Scope::Parents(refresh.iter().copied().map(i64::from).collect())
        };
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
    use kaiten_client::{Card, Record};
    use serde_json::json;

    #[test]
    fn batches_split_into_pages() {
        let cards: Vec<Card> = (1..=1201).map(|id| Card::from_value(json!({"id": id})).unwrap()).collect();
        let parts = split_batch(Batch::Cards(cards), 500);
        assert_eq!(parts.iter().map(Batch::len).collect::<Vec<_>>(), vec![500, 500, 201]);
    }

    #[test]
    fn selection_scope_text_and_kinds() {
        let s = Selection::kinds(&[EntityKind::PropertyDefinitions]).in_boards(&[BoardId(5), BoardId(6)]);
        assert!(s.includes(EntityKind::SelectValues));
        assert!(!s.includes(EntityKind::Cards));
        assert_eq!(s.scope_text().unwrap(), "kinds property_definitions; boards 5,6");
        assert!(Selection::all().is_everything());
    }
}
