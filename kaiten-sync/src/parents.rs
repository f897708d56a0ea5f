//! "Make sure what a card points to is stored": one implementation for syncs and for webhooks.
//!
//! Before a page of cards is written, every board, column and lane the cards name must be a row,
//! and every board's space too, so no reference ever dangles (and Postgres' foreign keys hold).
//! The policy, the same wherever cards come from:
//!
//! - a board not stored is looked up in its space's board list (`GET /spaces/{id}/boards`; the
//!   space found through `GET /spaces`, which embeds boards), never through `GET /boards/{id}`,
//!   which returns every card of the board; its columns and lanes are listed with it;
//! - a column or lane not stored makes its board's structure be listed again (once per run);
//! - a board's columns or lanes that Kaiten refuses to list (403, 404: the board went away or out
//!   of the token's reach) are skipped with a warning, not a failed run;
//! - whatever Kaiten still does not list gets a placeholder row (`{"id", "board_id",
//!   "placeholder": true}`) that the next listing fills in.

use std::collections::{BTreeSet, HashMap, HashSet};

use kaiten_client::{Board, BoardId, Card, Column, ColumnId, KaitenClient, Lane, LaneId, Record, Space, SpaceId};
use serde_json::json;
use tracing::{info, warn};

use crate::error::SyncError;
use crate::schema::{EntityKind, SqlValue};
use crate::store::{now_millis, Batch, Page, RunRecord, Store, StoreError};

/// What one run (a sync, or a drained batch of webhook notifications) learnt about parents.
#[derive(Debug, Default)]
pub(crate) struct ParentCache {
    /// Ids known to be stored, per kind (untyped: the kinds share the map, as the store's tables).
    pub(crate) known: HashMap<EntityKind, HashSet<i64>>,
    /// Board id → space id, for boards listed or read in this run.
    pub(crate) board_spaces: HashMap<BoardId, Option<SpaceId>>,
    /// Boards whose columns and lanes were listed in this run.
    pub(crate) refreshed: HashSet<BoardId>,
    /// `GET /spaces` of this run, asked at most once (unless a board is missing from it).
    pub(crate) spaces: Option<Vec<Space>>,
}

/// The resolver: a run's client, store, cache and run record (whose stats and request count it
/// updates).
pub(crate) struct Parents<'a> {
    pub(crate) client: &'a KaitenClient,
    pub(crate) store: &'a dyn Store,
    pub(crate) cache: &'a mut ParentCache,
    pub(crate) record: &'a mut RunRecord,
}

/// A placeholder row for a parent Kaiten does not list.
fn placeholder<T: Record>(kind: EntityKind, id: i64, board_id: Option<BoardId>) -> Result<T, SyncError> {
    let value = match board_id {
        Some(board) => json!({"id": id, "board_id": board, "placeholder": true}),
        None => json!({"id": id, "placeholder": true}),
    };
    T::from_value(value).map_err(|e| {
        SyncError::Store(StoreError::InvalidData { kind, message: format!("placeholder {id} does not parse: {e}") })
    })
}

/// Top-level columns followed by their subcolumns, each with `board_id` set.
pub(crate) fn flatten_columns(columns: Vec<Column>, board_id: BoardId) -> Vec<Column> {
    let mut out = Vec::with_capacity(columns.len() * 2);
    let mut subs = Vec::new();
    for mut column in columns {
        column.board_id = column.board_id.or(Some(board_id));
        subs.extend(column.subcolumns());
        out.push(column);
    }
    out.extend(subs);
    out
}

/// Lanes with `board_id` set.
pub(crate) fn with_board(lanes: Vec<Lane>, board_id: BoardId) -> Vec<Lane> {
    lanes
        .into_iter()
        .map(|mut l| {
            l.board_id = l.board_id.or(Some(board_id));
            l
        })
        .collect()
}

/// Typed ids as the bare integers, so logs print `{1, 2}` (not `{BoardId(1), BoardId(2)}`).
fn untyped<I: Copy + Into<i64>>(ids: &BTreeSet<I>) -> BTreeSet<i64> {
    ids.iter().map(|&id| id.into()).collect()
}

/// Whether an error means "this board's structure cannot be listed" rather than "Kaiten failed".
fn board_gone(e: &kaiten_client::Error) -> bool {
    matches!(e.status(), Some(403 | 404))
}

impl Parents<'_> {
    fn request(&mut self) {
        self.record.api_requests += 1;
    }

    /// `GET /spaces`, once per run (`fresh` asks again: a board may be newer than the first listing).
    pub(crate) async fn list_spaces(&mut self, fresh: bool) -> Result<Vec<Space>, SyncError> {
        if !fresh {
            if let Some(spaces) = &self.cache.spaces {
                return Ok(spaces.clone());
            }
        }
        self.request();
        let spaces = self.client.spaces().await?;
        self.cache.spaces = Some(spaces.clone());
        Ok(spaces)
    }

    /// The ids not known to be stored (asking the store once for those not seen in this run).
    /// `I` is the kind's typed id ([`BoardId`], ...), or a bare `i64`.
    pub(crate) async fn unknown<I>(&mut self, kind: EntityKind, ids: Vec<I>) -> Result<BTreeSet<I>, SyncError>
    where
        I: Copy + Ord + Into<i64> + From<i64>,
    {
        let known = self.cache.known.entry(kind).or_default();
        let ask: Vec<i64> = ids
            .into_iter()
            .map(Into::into)
            .filter(|id| !known.contains(id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if ask.is_empty() {
            return Ok(BTreeSet::new());
        }
        let stored = self.store.existing_ids(kind, &ask).await?;
        let known = self.cache.known.entry(kind).or_default();
        known.extend(stored.iter().copied());
        Ok(ask.into_iter().filter(|id| !known.contains(id)).map(I::from).collect())
    }

    /// Writes parent records (listed, or placeholders) without a sweep, and remembers them as
    /// stored.
    pub(crate) async fn write_parents(&mut self, batch: Batch) -> Result<(), SyncError> {
        if batch.is_empty() {
            return Ok(());
        }
        let kind = batch.kind();
        self.cache.known.entry(kind).or_default().extend(batch.ids());
        let page = Page { batch, sweep: None, state: None, synced_at: now_millis() };
        let outcome = self.store.apply_page(&page).await?;
        // Parents are counted as written, not as fetched: the kind's own listing counts those.
        let stats = self.record.stats.entry(kind).or_default();
        stats.inserted += outcome.inserted;
        stats.updated += outcome.updated;
        Ok(())
    }

    /// The space of a board: as listed in this run, else as stored.
    pub(crate) async fn board_space(&mut self, board_id: BoardId) -> Result<Option<SpaceId>, SyncError> {
        if let Some(space) = self.cache.board_spaces.get(&board_id) {
            return Ok(*space);
        }
        let space = match self.store.get(EntityKind::Boards, board_id.get()).await? {
            Some(stored) => match stored.value(EntityKind::Boards, "space_id") {
                Some(SqlValue::Int(s)) => Some(SpaceId(*s)),
                _ => None,
            },
            None => None,
        };
        self.cache.board_spaces.insert(board_id, space);
        Ok(space)
    }

    /// Makes sure these spaces are stored: written from `GET /spaces`, or as placeholders.
    pub(crate) async fn ensure_spaces(&mut self, ids: Vec<SpaceId>) -> Result<(), SyncError> {
        let missing = self.unknown(EntityKind::Spaces, ids).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let listed = self.list_spaces(false).await?;
        let mut spaces: Vec<Space> = listed.into_iter().filter(|s| missing.contains(&s.id)).collect();
        let found: HashSet<SpaceId> = spaces.iter().map(|s| s.id).collect();
        for id in missing.iter().filter(|id| !found.contains(id)) {
            warn!(space = id.get(), "a board belongs to a space Kaiten does not list; storing a placeholder");
            spaces.push(placeholder(EntityKind::Spaces, id.get(), None)?);
        }
        self.write_parents(Batch::Spaces(spaces)).await
    }

    /// Looks boards up in their spaces' board lists and writes those found (their spaces first,
    /// then the boards, then their columns and lanes). `hints` name a space to look in first.
    /// Returns the boards Kaiten does not list anywhere.
    pub(crate) async fn refresh_boards(
        &mut self,
        wanted: &BTreeSet<BoardId>,
        hints: &HashMap<BoardId, SpaceId>,
    ) -> Result<BTreeSet<BoardId>, SyncError> {
        if wanted.is_empty() {
            return Ok(BTreeSet::new());
        }
        let spaces = self.list_spaces(true).await?;
        // Spaces to look in: hinted or embedding a wanted board; if some board is in none of them,
        // every space that did not embed its boards (Kaiten left `boards` out).
        let mut candidates: Vec<&Space> = spaces
            .iter()
            .filter(|s| hints.values().any(|h| *h == s.id) || s.embedded_board_ids().iter().any(|b| wanted.contains(b)))
            .collect();
        let covered: HashSet<BoardId> = candidates.iter().flat_map(|s| s.embedded_board_ids()).collect();
        if wanted.iter().any(|b| !covered.contains(b)) {
            candidates.extend(spaces.iter().filter(|s| s.raw.get("boards").is_none()));
        }
        let mut found: Vec<Board> = Vec::new();
        let mut found_spaces: Vec<Space> = Vec::new();
        let mut listed = HashSet::new();
        for space in candidates {
            if !listed.insert(space.id) {
                continue;
            }
            if found.len() == wanted.len() {
                break;
            }
            self.request();
            let boards = match self.client.boards(space.id).await {
                Err(e) if board_gone(&e) => {
                    warn!(space = space.id.get(), error = %e, "cannot list the boards of a space");
                    continue;
                }
                other => other?,
            };
            let mut any = false;
            for mut board in boards {
                if wanted.contains(&board.id) && !found.iter().any(|b| b.id == board.id) {
                    board.space_id = board.space_id.or(Some(space.id));
                    found.push(board);
                    any = true;
                }
            }
            if any {
                found_spaces.push(space.clone());
            }
        }
        self.write_parents(Batch::Spaces(found_spaces)).await?;
        for b in &found {
            self.cache.board_spaces.insert(b.id, b.space_id);
        }
        let found_ids: BTreeSet<BoardId> = found.iter().map(|b| b.id).collect();
        self.write_parents(Batch::Boards(found)).await?;
        for id in &found_ids {
            self.cache.refreshed.remove(id);
            self.refresh_board_structure(*id).await?;
        }
        Ok(wanted.difference(&found_ids).copied().collect())
    }

    /// Finds boards that cards point to but were not stored; a board Kaiten does not list gets a
    /// placeholder row (and so do, later, its columns and lanes).
    pub(crate) async fn fetch_missing_boards(&mut self, missing: &BTreeSet<BoardId>) -> Result<(), SyncError> {
        info!(boards = ?untyped(missing), "cards point to boards not stored yet; fetching them");
        let not_listed = self.refresh_boards(missing, &HashMap::new()).await?;
        let mut placeholders = Vec::new();
        for id in not_listed {
            warn!(board = id.get(), "a card points to a board Kaiten does not list; storing a placeholder");
            self.cache.board_spaces.insert(id, None);
            // Nothing to list under a board Kaiten does not know.
            self.cache.refreshed.insert(id);
            placeholders.push(placeholder(EntityKind::Boards, id.get(), None)?);
        }
        self.write_parents(Batch::Boards(placeholders)).await
    }

    /// Lists and writes the columns and lanes of one board (once per run). A board whose
    /// structure Kaiten refuses to list (403/404) is skipped with a warning.
    pub(crate) async fn refresh_board_structure(&mut self, board_id: BoardId) -> Result<(), SyncError> {
        if !self.cache.refreshed.insert(board_id) {
            return Ok(());
        }
        self.request();
        let columns = match self.client.columns(board_id).await {
            Err(e) if board_gone(&e) => {
                warn!(board = board_id.get(), error = %e, "cannot list the columns of a board");
                Vec::new()
            }
            other => flatten_columns(other?, board_id),
        };
        self.request();
        let lanes = match self.client.lanes(board_id).await {
            Err(e) if board_gone(&e) => {
                warn!(board = board_id.get(), error = %e, "cannot list the lanes of a board");
                Vec::new()
            }
            other => with_board(other?, board_id),
        };
        self.write_parents(Batch::Columns(columns)).await?;
        self.write_parents(Batch::Lanes(lanes)).await
    }

    /// Fills `space_id` from the board and makes sure every board, column and lane the cards
    /// point to is stored (fetching it, or storing a placeholder that the next listing fills in).
    pub(crate) async fn prepare_cards(&mut self, mut cards: Vec<Card>) -> Result<Vec<Card>, SyncError> {
        let boards: BTreeSet<BoardId> = cards.iter().filter_map(|c| c.board_id).collect();
        let missing_boards = self.unknown(EntityKind::Boards, boards.iter().copied().collect()).await?;
        if !missing_boards.is_empty() {
            self.fetch_missing_boards(&missing_boards).await?;
        }
        for card in &mut cards {
            if card.space_id.is_none() {
                if let Some(board) = card.board_id {
                    card.space_id = self.board_space(board).await?;
                }
            }
        }
        let spaces: Vec<SpaceId> = cards.iter().filter_map(|c| c.space_id).collect();
        self.ensure_spaces(spaces).await?;
        let columns: Vec<ColumnId> = cards.iter().filter_map(|c| c.column_id).collect();
        let lanes: Vec<LaneId> = cards.iter().filter_map(|c| c.lane_id).collect();
        let missing_columns = self.unknown(EntityKind::Columns, columns).await?;
        let missing_lanes = self.unknown(EntityKind::Lanes, lanes).await?;
        if missing_columns.is_empty() && missing_lanes.is_empty() {
            return Ok(cards);
        }
        let mut boards_to_refresh = BTreeSet::new();
        for card in &cards {
            let col_missing = card.column_id.is_some_and(|c| missing_columns.contains(&c));
            let lane_missing = card.lane_id.is_some_and(|l| missing_lanes.contains(&l));
            if col_missing || lane_missing {
                if let Some(board) = card.board_id {
                    boards_to_refresh.insert(board);
                }
            }
        }
        for board in boards_to_refresh {
            self.refresh_board_structure(board).await?;
        }
        // Whatever is still unknown gets a placeholder so no reference dangles.
        let still_columns = self.unknown(EntityKind::Columns, missing_columns.into_iter().collect()).await?;
        let still_lanes = self.unknown(EntityKind::Lanes, missing_lanes.into_iter().collect()).await?;
        let board_of = |id: i64, pick: fn(&Card) -> Option<i64>| {
            cards.iter().find(|c| pick(c) == Some(id)).and_then(|c| c.board_id)
        };
        let mut placeholder_columns: Vec<Column> = Vec::new();
        for id in still_columns.iter().map(|c| c.get()) {
            placeholder_columns.push(placeholder(
                EntityKind::Columns,
                id,
                board_of(id, |c| c.column_id.map(i64::from)),
            )?);
        }
        let mut placeholder_lanes: Vec<Lane> = Vec::new();
        for id in still_lanes.iter().map(|l| l.get()) {
            placeholder_lanes.push(placeholder(EntityKind::Lanes, id, board_of(id, |c| c.lane_id.map(i64::from)))?);
        }
        if !placeholder_columns.is_empty() {
            warn!(ids = ?untyped(&still_columns), "cards point to columns Kaiten did not list; storing placeholders");
            self.write_parents(Batch::Columns(placeholder_columns)).await?;
        }
        if !placeholder_lanes.is_empty() {
            warn!(ids = ?untyped(&still_lanes), "cards point to lanes Kaiten did not list; storing placeholders");
            self.write_parents(Batch::Lanes(placeholder_lanes)).await?;
        }
        Ok(cards)
    }
}
