//! The card listing of a run: its walks, pages, resume points and deletion sweep.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kaiten_client::{BoardId, Card, CardId, CardQuery, Condition, KaitenClient, OrderDirection, PageRequest, SpaceId};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

use super::prefetch::Task;
use super::resume::{CardResume, ResumeState, WalkPos, Window};
use super::run::Run;
use super::Mode;
use crate::card_walk::{PageRules, PagingError, Verdict};
use crate::error::SyncError;
use crate::progress::ProgressEvent;
use crate::schema::EntityKind;
use crate::store::{incoming_is_not_older, now_millis, Batch, EntityState, Page, Scope};

impl Run<'_> {
    /// The card listings of this run: one per condition, for each space or board in scope.
    pub(super) async fn card_walks(&mut self) -> Result<Vec<CardQuery>, SyncError> {
        let mut conditions = vec![Condition::Live, Condition::Archived];
        if self.mode == Mode::Incremental && self.engine.options.incremental_deleted_cards {
            conditions.push(Condition::Deleted);
        }
        let filters: Vec<(Option<SpaceId>, Option<BoardId>)> = if !self.selection.boards.is_empty() {
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

    /// Plans this run's card listing: reads the state and resume point, and starts fetching the
    /// first page of each window at once (they proceed while the run lists other kinds).
    pub(super) async fn plan_cards(&mut self) -> Result<CardFeed, SyncError> {
        let state = self.store().entity_state(EntityKind::Cards).await?;
        let mut resume = ResumeState::parse(state.resume.as_deref());
        let scope_key = self.selection.scope_text().unwrap_or_default();
        let walks = self.card_walks().await?;
        let since = match self.mode {
            Mode::Full => None,
            Mode::Incremental => self.since(state.cursor),
        };
        let max_age = chrono::Duration::from_std(self.engine.options.max_resume_age).unwrap_or(chrono::Duration::MAX);
        let fresh = |r: &CardResume| r.began.is_some_and(|b| now_millis() - b <= max_age);
        let current = match resume.slot(self.mode).take().map(CardResume::upgrade) {
            Some(r)
                if r.scope == scope_key
                    && r.next_walk <= walks.len()
                    && r.windows.iter().all(|w| w.walk < walks.len())
                    && fresh(&r) =>
            {
                info!(
                    windows = r.windows.len(),
                    next_walk = r.next_walk,
                    "resuming the card listing where the last run stopped"
                );
                r
            }
            _ => CardResume {
                sweep: (self.mode == Mode::Full).then_some(self.record.id),
                start: since,
                windows: Vec::new(),
                next_walk: 0,
                walk: None,
                pos: None,
                max_updated: None,
                scope: scope_key,
                began: Some(now_millis()),
                rules: PageRules::default(),
            },
        };
        let mut listing = CardListing {
            client: self.client().clone(),
            walks,
            windows: BTreeMap::new(),
            next_id: 0,
            tasks: JoinSet::new(),
            page_size: self.engine.options.page_size.clamp(1, KaitenClient::CARDS_PAGE_MAX),
            target: self.engine.options.concurrency.max(1),
            split_until: now_millis(),
            current,
        };
        for window in std::mem::take(&mut listing.current.windows) {
            listing.open(window);
        }
        let sweep = listing.current.sweep;
        // Unbounded: what bounds the pages held is the walk's permits (`PAGES_AHEAD`).
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Task::spawn(listing.drive(tx));
        Ok(CardFeed { rx, driver, state, resume, sweep, max_updated: None })
    }

    pub(super) async fn sync_cards(&mut self) -> Result<(), SyncError> {
        let kind = EntityKind::Cards;
        let mut feed = match self.cards.take() {
            Some(feed) => feed,
            None => self.plan_cards().await?,
        };
        let mut finished = false;
        // Pages committed by this run: a commit holds at most as many more (doubling from one page
        // to `MAX_PAGES_PER_COMMIT`), so that a run killed early keeps what it listed so far even
        // though pages were fetched ahead while it listed the other kinds.
        let mut committed = 0usize;
        while let Some(first) = feed.rx.recv().await {
            self.check_lock()?;
            // Every batch of pages judged by now is written in one transaction, with the resume
            // point after the last of them; the walk goes on fetching meanwhile.
            let mut judged = vec![first];
            let mut batched = judged[0].as_ref().map_or(0, |b| b.pages);
            while batched < MAX_PAGES_PER_COMMIT.min(committed.max(1)) {
                let Ok(more) = feed.rx.try_recv() else { break };
                batched += more.as_ref().map_or(0, |b| b.pages);
                judged.push(more);
            }
            let mut cards: Vec<Card> = Vec::new();
            let (mut pages, mut deleted_walk) = (0usize, false);
            let mut point = None;
            let mut permits = Vec::new();
            for batch in judged {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(FeedError::Api(e)) => return Err(e.into()),
                    Err(FeedError::Paging(e)) => {
                        // The positions this listing reached rest on answers that ignored paging:
                        // the next run must not resume from them (it would skip cards), but start over.
                        *feed.resume.slot(self.mode) = None;
                        feed.state.resume = feed.resume.to_text();
                        self.store().save_entity_state(&feed.state).await?;
                        return Err(SyncError::IncompleteListing { route: "GET /cards".to_owned(), reason: e.0 });
                    }
                };
                cards.extend(batch.cards);
                permits.extend(batch.permit);
                pages += batch.pages;
                deleted_walk |= batch.deleted_walk;
                point = Some(batch.point);
            }
            let Some(point) = point else { continue };
            feed.max_updated = feed.max_updated.max(cards.iter().filter_map(|c| c.updated).max());
            finished = point.is_none();
            let fetched = cards.len();
            let cards = newest_of_each(cards);
            let cards = if self.mode == Mode::Incremental && self.engine.options.card_members_backfill && !deleted_walk
            {
                self.fetch_changed_card_details(cards).await?
            } else {
                cards
            };
            let cards = self.prepare_cards(cards).await?;
            let mut page_state = feed.state.clone();
            *feed.resume.slot(self.mode) = point;
            page_state.resume = feed.resume.to_text();
            let page = Page {
                batch: Batch::Cards(cards),
                sweep: feed.sweep,
                state: Some(page_state.clone()),
                synced_at: now_millis(),
            };
            let outcome = self.store().apply_page(&page).await?;
            feed.state = page_state;
            let stats = self.stats(kind);
            stats.add_page(fetched, outcome);
            stats.pages += pages.saturating_sub(1) as u64;
            committed += pages;
            let stats = self.record.stats[&kind];
            self.engine.progress.emit(&ProgressEvent::PageDone { kind, stats });
        }
        if !finished {
            // The walk stopped without finishing: it panicked, or was cancelled.
            feed.driver.join().await?;
            return Err(SyncError::Cancelled);
        }
        let listing = &mut feed;
        let mut swept = true;
        if let Some(sweep) = listing.sweep {
            let scope = self.card_scope().await?;
            let checked =
                if matches!(scope, Scope::Parents(_)) { self.verify_moved_cards(sweep, &scope).await? } else { false };
            swept = self.sweep_deleted(kind, sweep, &scope, checked).await?;
        }
        let reconciled = listing.state.last_full_sync_at;
        let mut state = self.new_state(listing.state.clone(), listing.max_updated);
        if !swept {
            // Deletions were not reconciled: the last complete listing stays the previous one.
            state.last_full_sync_at = reconciled;
        }
        self.store().save_entity_state(&state).await?;
        Ok(())
    }

    /// `GET /cards/{id}` for each of `ids`, up to [`super::SyncOptions::concurrency`] at once (the
    /// client's limiter paces them), answers in the order of `ids`.
    pub(super) async fn cards_by_id(&self, ids: Vec<CardId>) -> Vec<Result<Card, kaiten_client::Error>> {
        let client = self.client().clone();
        futures::stream::iter(ids)
            .map(|id| {
                let client = client.clone();
                async move { client.card(id).await }
            })
            .buffered(self.engine.options.concurrency.max(1))
            .collect()
            .await
    }

    /// In a listing limited to some boards, a card missing from it may have moved to another board
    /// rather than been deleted: ask Kaiten for each (up to [`SyncOptions::max_verified_deletions`]),
    /// store the ones that still exist, and leave the rest to the sweep. Returns whether every
    /// missing card was asked for (the rest are then known to be gone).
    pub(super) async fn verify_moved_cards(&mut self, sweep: i64, scope: &Scope) -> Result<bool, SyncError> {
        let kind = EntityKind::Cards;
        let unseen = self.store().unseen(kind, sweep, scope).await?;
        let limit = self.engine.options.max_verified_deletions;
        if unseen.len() > limit {
            warn!(candidates = unseen.len(), limit, "too many cards missing from a scoped listing to check one by one");
            return Ok(false);
        }
        let mut found = Vec::new();
        for card in self.cards_by_id(unseen.into_iter().map(CardId).collect()).await {
            match card {
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
    pub(super) async fn fetch_changed_card_details(&mut self, mut cards: Vec<Card>) -> Result<Vec<Card>, SyncError> {
        let mut changed = Vec::new();
        for (index, card) in cards.iter().enumerate() {
            if card.condition == Some(Condition::Deleted) {
                continue;
            }
            let newer = match self.store().get(EntityKind::Cards, card.id.get()).await? {
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
        let details = self.cards_by_id(changed.iter().map(|i| cards[*i].id).collect()).await;
        let mut fetched = 0;
        for (index, detail) in changed.into_iter().zip(details) {
            match detail {
                Ok(detail) if detail.id == cards[index].id => {
                    cards[index] = detail;
                    fetched += 1;
                }
                Ok(detail) => {
                    warn!(
                        asked = cards[index].id.get(),
                        got = detail.id.get(),
                        "GET /cards/{{id}} answered another card; keeping the listed one"
                    );
                }
                Err(kaiten_client::Error::NotFound { .. }) => {
                    debug!(card = cards[index].id.get(), "a changed card is gone already; keeping its listed copy");
                }
                Err(e) => return Err(e.into()),
            }
        }
        debug!(cards = fetched, "fetched changed cards one by one for their members");
        Ok(cards)
    }

    pub(super) async fn card_scope(&mut self) -> Result<Scope, SyncError> {
        if !self.selection.boards.is_empty() {
            return Ok(Scope::Parents(self.selection.boards.iter().copied().map(i64::from).collect()));
        }
        if !self.selection.spaces.is_empty() {
            return Ok(Scope::Parents(self.boards_in_scope().await?.into_iter().map(i64::from).collect()));
        }
        Ok(Scope::All)
    }

    pub(super) async fn prepare_cards(&mut self, cards: Vec<Card>) -> Result<Vec<Card>, SyncError> {
        self.parents().prepare_cards(cards).await
    }

    pub(super) async fn unknown<I>(&mut self, kind: EntityKind, ids: Vec<I>) -> Result<BTreeSet<I>, SyncError>
    where
        I: Copy + Ord + Into<i64> + From<i64>,
    {
        self.parents().unknown(kind, ids).await
    }

    pub(super) async fn write_placeholders(&mut self, batch: Batch) -> Result<(), SyncError> {
        self.parents().write_parents(batch).await
    }

    pub(super) async fn fetch_missing_boards(&mut self, missing: &BTreeSet<BoardId>) -> Result<(), SyncError> {
        self.parents().fetch_missing_boards(missing).await
    }
}

/// Keeps one copy of each card of pages listed together (windows overlap by a millisecond at
/// their bounds): the newest by `updated`, then `version`.
fn newest_of_each(cards: Vec<Card>) -> Vec<Card> {
    let mut at: HashMap<CardId, usize> = HashMap::with_capacity(cards.len());
    let mut out: Vec<Card> = Vec::with_capacity(cards.len());
    for card in cards {
        match at.get(&card.id) {
            Some(&i) => {
                if incoming_is_not_older(card.updated, card.version, out[i].updated, out[i].version) {
                    out[i] = card;
                }
            }
            None => {
                at.insert(card.id, out.len());
                out.push(card);
            }
        }
    }
    out
}

/// A window being listed.
struct OpenWindow {
    window: Window,
    /// The paging rules of this window's walk so far (the listing-wide part lives in
    /// `CardResume::rules`).
    rules: PageRules,
    /// Cards per millisecond of `updated` in this window's last full page: only a window
    /// estimated to hold many more pages is split.
    density: Option<f64>,
    /// Its page request in flight.
    task: Option<AbortHandle>,
}

/// A page of cards fetched for a window.
pub(super) struct Fetched {
    id: u64,
    pos: WalkPos,
    asked: u32,
    result: Result<Vec<Card>, kaiten_client::Error>,
}

/// The card listing of a run: its walks, the windows being listed (each with one page request in
/// flight on its own task), and the resume point as committed.
///
/// Walks are listed by keyset on `updated`, so one window's pages follow one another. To keep up
/// to [`super::SyncOptions::concurrency`] requests in flight (what hides each request's latency
/// under the rate limiter's pacing), walks are started together, and a window that returned a
/// full page is split in two by time when fewer windows than that are open. Dropping the listing
/// aborts its requests.
struct CardListing {
    client: KaitenClient,
    walks: Vec<CardQuery>,
    /// Positions after the pages judged so far (its `windows` are filled in by [`Self::point`]).
    current: CardResume,
    windows: BTreeMap<u64, OpenWindow>,
    next_id: u64,
    tasks: JoinSet<Fetched>,
    page_size: u32,
    target: usize,
    /// Splits of the walks' last (open) windows divide the time up to here.
    split_until: DateTime<Utc>,
}

/// At most this many pages (of the walk's page size) are written in one transaction: pages that
/// arrive together are committed together (fewer, larger transactions write less), within a
/// bound on what a transaction holds in memory and what a killed run loses.
const MAX_PAGES_PER_COMMIT: usize = 10;

/// Pages the walk may hold before they are written (while the run lists structure, or while a
/// transaction commits): enough to keep requests going through the rate limiter meanwhile,
/// bounded so that memory stays flat. The walk takes a permit per judged page and the consumer
/// gives them back once the pages are written.
const PAGES_AHEAD: usize = 16;

/// A window is split only when it is estimated to hold at least this many more pages, so that
/// each half has several: every window ends with a page that is not full, so a split costs about
/// one request, which a split of a short window would not win back.
const MIN_PAGES_TO_SPLIT: f64 = 4.0;

impl CardListing {
    /// Opens a window.
    fn open(&mut self, window: Window) {
        let mut rules = PageRules::default();
        rules.cap = self.current.rules.cap;
        rules.confirmed = self.current.rules.confirmed;
        self.windows.insert(self.next_id, OpenWindow { window, rules, density: None, task: None });
        self.next_id += 1;
    }

    /// Starts walks and splits windows until [`Self::target`] windows are open (or nothing is left
    /// to start or split), and fetches the next page of every window that has none in flight.
    fn fill(&mut self) {
        while self.windows.len() < self.target && self.current.next_walk < self.walks.len() {
            let start = self.current.start;
            let walk = self.current.next_walk;
            self.current.next_walk += 1;
            self.open(Window { walk, pos: WalkPos { after: start, offset: 0, offset_only: false }, before: None });
        }
        while self.windows.len() < self.target && self.split_one() {}
        let idle: Vec<u64> = self.windows.iter().filter(|(_, w)| w.task.is_none()).map(|(id, _)| *id).collect();
        for id in idle {
            self.spawn(id);
        }
    }

    /// Splits the longest splittable window in two by time; whether one was.
    fn split_one(&mut self) -> bool {
        let until = self.split_until;
        let page = f64::from(self.current.rules.limit(self.page_size));
        let span = |w: &OpenWindow| -> Option<i64> {
            let after = w.window.pos.after?;
            if w.window.pos.offset_only || w.window.pos.offset > 0 {
                return None;
            }
            let span = (w.window.before.unwrap_or(until) - after).num_milliseconds();
            let pages = w.density? * span as f64 / page;
            (span >= 2 && pages >= MIN_PAGES_TO_SPLIT).then_some(span)
        };
        let Some((id, span)) =
            self.windows.iter().filter_map(|(id, w)| span(w).map(|s| (*id, s))).max_by_key(|(_, s)| *s)
        else {
            return false;
        };
        let window = &mut self.windows.get_mut(&id).expect("chosen above").window;
        let after = window.pos.after.expect("splittable windows have a start");
        let mid = after + chrono::Duration::milliseconds(span / 2);
        let upper = Window {
            walk: window.walk,
            // From just before `mid`: whatever Kaiten's inclusivity of `updated_after` and
            // `updated_before`, no card falls between the two windows.
            pos: WalkPos { after: Some(mid - chrono::Duration::milliseconds(1)), offset: 0, offset_only: false },
            before: window.before,
        };
        window.before = Some(mid);
        debug!(walk = upper.walk, %mid, "splitting a card window in two");
        self.open(upper);
        true
    }

    /// Fetches the next page of window `id` on a task of its own.
    fn spawn(&mut self, id: u64) {
        let Some(open) = self.windows.get_mut(&id) else { return };
        let Window { walk, pos, before } = open.window;
        let asked = open.rules.limit(self.page_size);
        let mut query = self.walks[walk].clone();
        if !pos.offset_only {
            query.updated_after = pos.after;
            query.updated_before = before;
        }
        let client = self.client.clone();
        open.task = Some(self.tasks.spawn(async move {
            let result = client.cards_page(&query, PageRequest { limit: asked, offset: pos.offset }).await;
            Fetched { id, pos, asked, result }
        }));
    }

    /// Judges a page of window `id` by the stop rules of [`crate::card_walk`] and moves the window
    /// on (or closes it).
    fn advance(&mut self, id: u64, pos: WalkPos, asked: u32, cards: &[Card]) -> Result<(), PagingError> {
        self.current.max_updated = self.current.max_updated.max(cards.iter().filter_map(|c| c.updated).max());
        let open = self.windows.get_mut(&id).expect("a window with a page in flight is open");
        open.task = None;
        let verdict = open.rules.judge(self.page_size, pos, asked, cards);
        let learned = (open.rules.cap, open.rules.confirmed);
        if learned != (self.current.rules.cap, self.current.rules.confirmed) {
            // What one window learned of the route holds for every window of the listing.
            self.current.rules.cap = self.current.rules.cap.or(learned.0);
            self.current.rules.confirmed |= learned.1;
            for other in self.windows.values_mut() {
                other.rules.cap = other.rules.cap.or(self.current.rules.cap);
                other.rules.confirmed |= self.current.rules.confirmed;
            }
        }
        let open = self.windows.get_mut(&id).expect("a window with a page in flight is open");
        match verdict? {
            Verdict::Done => {
                self.windows.remove(&id);
            }
            Verdict::Next(next) => {
                let times = (cards.first().and_then(|c| c.updated), cards.last().and_then(|c| c.updated));
                open.density = match times {
                    (Some(first), Some(last)) if u32::try_from(cards.len()).unwrap_or(u32::MAX) >= asked => {
                        Some(cards.len() as f64 / (last - first).num_milliseconds().max(1) as f64)
                    }
                    _ => None,
                };
                if next.offset_only && !pos.offset_only {
                    // Kaiten did not honour the order (or `updated_after`): this window lists its
                    // whole walk by offset, so the walk's other windows are not needed.
                    warn!("Kaiten did not order cards by `updated`; paging by offset for the rest of this listing");
                    open.window.before = None;
                    let walk = open.window.walk;
                    let siblings: Vec<u64> = self
                        .windows
                        .iter()
                        .filter(|(other, w)| **other != id && w.window.walk == walk)
                        .map(|(other, _)| *other)
                        .collect();
                    for other in siblings {
                        if let Some(task) = self.windows.remove(&other).and_then(|w| w.task) {
                            task.abort();
                        }
                    }
                }
                if let Some(open) = self.windows.get_mut(&id) {
                    open.window.pos = next;
                }
            }
        }
        Ok(())
    }

    /// The resume point after the pages judged so far: every open window at its position after
    /// them (none once every walk is done).
    fn point(&self) -> Option<CardResume> {
        let finished = self.windows.is_empty() && self.current.next_walk >= self.walks.len();
        (!finished).then(|| {
            let mut point = self.current.clone();
            point.windows = self.windows.values().map(|w| w.window).collect();
            point
        })
    }

    /// Runs the listing on a task of its own: fetches, judges and moves the windows on, and sends
    /// each batch of judged pages with the resume point after them. The consumer writes batches in
    /// the order sent, so the point sent with a batch only names positions whose pages are written
    /// by the time it is committed. Ends after the last page, at the first error, or when the
    /// consumer is gone (dropping the task set aborts the requests in flight).
    async fn drive(mut self, tx: mpsc::UnboundedSender<Result<Judged, FeedError>>) {
        let permits = Arc::new(Semaphore::new(PAGES_AHEAD));
        self.fill();
        while let Some(first) = self.tasks.join_next().await {
            let mut arrived = vec![first];
            while let Some(more) = self.tasks.try_join_next() {
                arrived.push(more);
            }
            let mut judged = Judged { cards: Vec::new(), pages: 0, deleted_walk: false, point: None, permit: None };
            for joined in arrived {
                let fetched = match joined {
                    Ok(fetched) => fetched,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => continue,
                };
                // A page of a window closed meanwhile (its walk went over to offset paging).
                let Some(walk) = self.windows.get(&fetched.id).map(|w| w.window.walk) else { continue };
                let deleted = self.walks[walk].condition == Some(Condition::Deleted);
                let page = match fetched.result {
                    Ok(page) => page,
                    // A tenant that refuses to list deleted cards (`condition=3`): skip that listing;
                    // deletions then show up in the next full sync.
                    Err(kaiten_client::Error::BadRequest { status: 400, message, .. }) if deleted => {
                        warn!(%message, "Kaiten refused to list deleted cards; deletions will be found by the next full sync");
                        Vec::new()
                    }
                    Err(e) => {
                        let _ = tx.send(Err(FeedError::Api(e)));
                        return;
                    }
                };
                if let Err(e) = self.advance(fetched.id, fetched.pos, fetched.asked, &page) {
                    let _ = tx.send(Err(FeedError::Paging(e)));
                    return;
                }
                judged.pages += 1;
                judged.deleted_walk |= deleted;
                judged.cards.extend(page);
            }
            if judged.pages == 0 {
                continue;
            }
            self.fill();
            judged.point = self.point();
            // Held until the consumer has written these pages; waiting for them holds the next
            // fetches too (the windows' requests in flight finish meanwhile).
            let wanted = u32::try_from(judged.pages.min(PAGES_AHEAD)).unwrap_or(1);
            let Ok(permit) = permits.clone().acquire_many_owned(wanted).await else { return };
            judged.permit = Some(permit);
            if tx.send(Ok(judged)).is_err() {
                return;
            }
        }
    }
}

/// Pages judged together, and the resume point after them (`None`: the listing is complete).
pub(super) struct Judged {
    cards: Vec<Card>,
    pages: usize,
    /// Some of them come from the listing of deleted cards.
    deleted_walk: bool,
    point: Option<CardResume>,
    /// The walk's permits for these pages, given back when they are written.
    permit: Option<OwnedSemaphorePermit>,
}

/// Why a card listing stopped.
pub(super) enum FeedError {
    /// Kaiten failed (after the client's retries).
    Api(kaiten_client::Error),
    /// The listing's end cannot be told (see [`crate::card_walk`]).
    Paging(PagingError),
}

/// A run's card listing as its consumer sees it: batches of judged pages from the task that walks
/// it, and the state they are committed with.
pub(super) struct CardFeed {
    rx: mpsc::UnboundedReceiver<Result<Judged, FeedError>>,
    driver: Task<()>,
    /// The cards' entity state as last committed.
    state: EntityState,
    resume: ResumeState,
    sweep: Option<i64>,
    /// Greatest `updated` listed so far.
    max_updated: Option<DateTime<Utc>>,
}
