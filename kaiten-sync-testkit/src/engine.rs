//! End-to-end sync scenarios against the simulated Kaiten, run by every store's tests through
//! [`crate::engine_conformance_tests!`]. Each takes a fresh, migrated, empty store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kaiten_client::{
    Board, BoardId, Card, CardType, Column, KaitenClient, Lane, PropertyDefinition, RetryPolicy, SelectValue, Space,
    SpaceId, Tag, User,
};
use kaiten_sim::{SimConfig, Simulator};
use serde_json::{json, Value};

use kaiten_sync::error::chain;
use kaiten_sync::inbox::{InboxEntry, InboxResult, InboxStats, Notification};
use kaiten_sync::schema::{EntityKind, SqlValue, ToRow};
use kaiten_sync::store::{
    EntityState, LockAttempt, Page, PageOutcome, RunKind, RunRecord, RunStatus, Scope, Store, StoreError, StoredRecord,
    TableCount,
};
use kaiten_sync::{Mode, Selection, SyncEngine, SyncError, SyncOptions};

/// A client for the simulator: no client-side rate limit, quick retries.
pub fn sim_client(sim: &Simulator) -> KaitenClient {
    client_for(&sim.base_url(), &sim.token())
}

fn client_for(url: &str, token: &str) -> KaitenClient {
    KaitenClient::builder()
        .base_url(url)
        .token(token)
        .rate_limit(None)
        .timeout(Duration::from_secs(10))
        .retry_policy(RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_total_wait: Duration::from_secs(1),
        })
        .build()
        .expect("valid client")
}

async fn start_sim(config: SimConfig) -> Simulator {
    Simulator::start(config).await.expect("simulator starts")
}

fn engine(sim: &Simulator, store: &Arc<dyn Store>) -> SyncEngine {
    SyncEngine::new(sim_client(sim), store.clone())
}

async fn stored(store: &dyn Store, kind: EntityKind, id: i64) -> StoredRecord {
    store.get(kind, id).await.unwrap().unwrap_or_else(|| panic!("{kind} {id} is not stored"))
}

fn int(record: &StoredRecord, kind: EntityKind, column: &str) -> Option<i64> {
    match record.value(kind, column) {
        Some(SqlValue::Int(v)) => Some(*v),
        _ => None,
    }
}

fn ids_of(items: &[Value]) -> Vec<i64> {
    let mut ids: Vec<i64> = items.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids
}

/// Requests the simulator received whose path contains `part`.
fn requests_to(sim: &Simulator, part: &str) -> usize {
    sim.request_log().iter().filter(|r| r.contains(part)).count()
}

/// A full sync stores exactly what the API serves: every kind, field by field, raw JSON included.
pub async fn full_sync_mirrors_the_simulator(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let report = engine(&sim, &store).sync_all().await.expect("full sync succeeds");
    assert_eq!(report.run.kind, RunKind::Full);
    assert_eq!(report.run.status, RunStatus::Succeeded);

    let cards = sim.cards_json();
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), ids_of(&cards));
    assert_eq!(report.stats(EntityKind::Cards).inserted, cards.len() as u64);
    let board_space: BTreeMap<i64, i64> = sim
        .space_ids()
        .into_iter()
        .flat_map(|s| {
            sim.boards_json().into_iter().filter_map(move |b| {
                let in_space = b.get("space_id").and_then(Value::as_i64) == Some(s);
                in_space.then(|| (b["id"].as_i64().unwrap(), s))
            })
        })
        .collect();
    for card in &cards {
        let id = card["id"].as_i64().unwrap();
        let row = stored(&*store, EntityKind::Cards, id).await;
        assert_eq!(&row.raw, card, "card {id}: raw JSON as served");
        assert_eq!(int(&row, EntityKind::Cards, "board_id"), card["board_id"].as_i64());
        assert_eq!(int(&row, EntityKind::Cards, "column_id"), card["column_id"].as_i64());
        assert_eq!(int(&row, EntityKind::Cards, "lane_id"), card["lane_id"].as_i64());
        assert_eq!(int(&row, EntityKind::Cards, "version"), card["version"].as_i64());
        assert_eq!(
            row.value(EntityKind::Cards, "archived"),
            Some(&SqlValue::Bool(card["archived"].as_bool().unwrap_or(false)))
        );
        assert_eq!(
            row.value(EntityKind::Cards, "title"),
            Some(&SqlValue::Text(card["title"].as_str().unwrap().into()))
        );
        if let Some(space) = board_space.get(&card["board_id"].as_i64().unwrap()) {
            assert_eq!(int(&row, EntityKind::Cards, "space_id"), Some(*space), "card {id}: space from its board");
        }
        assert!(int(&row, EntityKind::Cards, "space_id").is_some(), "card {id}: space_id filled in");
        let mut tags: Vec<i64> = card["tag_ids"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(store.card_tag_ids(id).await.unwrap(), tags, "card {id}: tags");
    }
    assert!(cards.iter().any(|c| c["archived"] == json!(true)), "the company has archived cards, and they are synced");

    assert_eq!(store.ids(EntityKind::Spaces, false).await.unwrap(), ids_of(&sim.spaces_json()));
    for space in sim.spaces_json() {
        assert_eq!(stored(&*store, EntityKind::Spaces, space["id"].as_i64().unwrap()).await.raw, space);
    }
    assert_eq!(store.ids(EntityKind::Boards, false).await.unwrap(), ids_of(&sim.boards_json()));
    for board in sim.boards_json() {
        let id = board["id"].as_i64().unwrap();
        let row = stored(&*store, EntityKind::Boards, id).await;
        assert_eq!(row.raw, board);
        assert!(int(&row, EntityKind::Boards, "space_id").is_some(), "board {id} knows its space");
    }
    let mut column_ids = Vec::new();
    let mut lane_ids = Vec::new();
    for board in sim.board_ids() {
        column_ids.extend(sim.column_ids(board));
        lane_ids.extend(sim.lane_ids(board));
        for lane in sim.lanes_json(board) {
            assert_eq!(stored(&*store, EntityKind::Lanes, lane["id"].as_i64().unwrap()).await.raw, lane);
        }
        for column in sim.columns_json(board) {
            let row = stored(&*store, EntityKind::Columns, column["id"].as_i64().unwrap()).await;
            assert_eq!(row.raw, column);
            for sub in column["subcolumns"].as_array().into_iter().flatten() {
                let row = stored(&*store, EntityKind::Columns, sub["id"].as_i64().unwrap()).await;
                assert_eq!(row.raw, *sub);
                assert_eq!(int(&row, EntityKind::Columns, "parent_column_id"), column["id"].as_i64());
                assert_eq!(int(&row, EntityKind::Columns, "board_id"), Some(board));
            }
        }
    }
    column_ids.sort_unstable();
    lane_ids.sort_unstable();
    assert_eq!(store.ids(EntityKind::Columns, false).await.unwrap(), column_ids);
    assert_eq!(store.ids(EntityKind::Lanes, true).await.unwrap(), lane_ids);
    // Deactivated users too (cards name them), and every tag GET /tags lists (tags on no card it
    // leaves out).
    assert_eq!(store.ids(EntityKind::Users, false).await.unwrap(), ids_of(&sim.users_json()));
    assert!(sim.users_json().iter().any(|u| u["activated"] == false));
    assert_eq!(store.ids(EntityKind::Tags, false).await.unwrap(), ids_of(&sim.listed_tags_json()));
    assert_eq!(store.ids(EntityKind::CardTypes, false).await.unwrap(), ids_of(&sim.card_types_json()));
    let props = sim.custom_properties_json();
    assert_eq!(store.ids(EntityKind::PropertyDefinitions, false).await.unwrap(), ids_of(&props));
    let mut values = Vec::new();
    for prop in props.iter().filter(|p| p["type"] == "select") {
        values.extend(sim.select_values_json(prop["id"].as_i64().unwrap()));
    }
    assert!(!values.is_empty(), "the company has select values");
    assert_eq!(store.ids(EntityKind::SelectValues, true).await.unwrap(), ids_of(&values));

    let runs = store.recent_runs(5).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0], report.run, "the report is what sync_logs holds");
    assert!(runs[0].api_requests > 0);
    assert_eq!(runs[0].api_requests as usize, sim.request_log().len());
    for kind in EntityKind::ALL {
        let state = store.entity_state(kind).await.unwrap();
        assert!(state.last_full_sync_at.is_some(), "{kind}: last full sync recorded");
        assert_eq!(state.resume, None, "{kind}: nothing left to resume");
        assert!(state.row_count.unwrap_or(0) > 0, "{kind}: row count recorded");
    }
    let cards_state = store.entity_state(EntityKind::Cards).await.unwrap();
    let newest = cards.iter().filter_map(|c| c["updated"].as_str()).max().unwrap();
    assert_eq!(cards_state.cursor, Some(newest.parse::<DateTime<Utc>>().unwrap()), "cursor = greatest updated");
}

/// An incremental run picks up created, updated, moved and archived cards, and only those. A
/// deleted card vanishes from Kaiten's listings (no `condition=3` listing to rely on): the
/// incremental run cannot see it, the next full sync marks it deleted.
pub async fn incremental_picks_up_exactly_the_changes(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let engine = engine(&sim, &store);
    engine.sync_all().await.expect("full sync");
    let boards = sim.board_ids();
    let ids = sim.card_ids();
    let created = sim.create_card(boards[0], "Fresh card")["id"].as_i64().unwrap();
    sim.update_card(ids[0], json!({"title": "Renamed"}));
    let target_column = *sim.column_ids(boards[1]).last().unwrap();
    sim.move_card(ids[1], target_column, None);
    sim.archive_card(ids[2]);
    sim.delete_card(ids[3]);
    sim.reset_request_log();

    let report = engine.sync_incremental().await.expect("incremental sync");
    assert_eq!(report.run.kind, RunKind::Incremental);
    let cards = report.stats(EntityKind::Cards);
    assert_eq!(cards.inserted, 1, "one card created: {cards:?}");
    assert_eq!(cards.updated, 3, "updated, moved, archived: {cards:?}");
    assert_eq!(cards.deleted, 0, "no sweep in an incremental run");
    for kind in EntityKind::ALL.into_iter().filter(|k| *k != EntityKind::Cards) {
        let s = report.stats(kind);
        assert_eq!((s.inserted, s.updated, s.deleted), (0, 0, 0), "{kind} unchanged: {s:?}");
    }
    assert_eq!(stored(&*store, EntityKind::Cards, created).await.raw, sim.card_json(created).unwrap());
    assert_eq!(stored(&*store, EntityKind::Cards, ids[0]).await.raw["title"], "Renamed");
    let moved = stored(&*store, EntityKind::Cards, ids[1]).await;
    assert_eq!(int(&moved, EntityKind::Cards, "column_id"), Some(target_column));
    assert_eq!(int(&moved, EntityKind::Cards, "board_id"), Some(boards[1]));
    let archived = stored(&*store, EntityKind::Cards, ids[2]).await;
    assert_eq!(archived.value(EntityKind::Cards, "archived"), Some(&SqlValue::Bool(true)));
    assert_eq!(archived.deleted_at, None);
    let deleted = stored(&*store, EntityKind::Cards, ids[3]).await;
    assert_eq!(deleted.deleted_at, None, "an incremental listing cannot see a deletion");
    // Two card listings (live, archived), each a single short page: no `condition=3` by default.
    assert_eq!(requests_to(&sim, "/cards?"), 2, "{:#?}", sim.request_log());
    assert_eq!(requests_to(&sim, "condition=3"), 0);
    let mut expected: Vec<i64> = sim.card_ids();
    expected.push(ids[3]);
    expected.sort_unstable();
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), expected);

    // The next full sync marks it deleted (and keeps the row).
    let report = engine.sync_all().await.expect("full sync");
    assert_eq!(report.stats(EntityKind::Cards).deleted, 1);
    assert!(stored(&*store, EntityKind::Cards, ids[3]).await.deleted_at.is_some(), "marked, not dropped");
    expected.retain(|id| *id != ids[3]);
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), expected);

    // With `incremental_deleted_cards` on, the run asks `condition=3` too; a real tenant (and the
    // simulator) lists nothing there, so it still finds nothing.
    let asking = SyncEngine::new(sim_client(&sim), store.clone())
        .with_options(SyncOptions::default().with_incremental_deleted_cards(true));
    sim.delete_card(ids[4]);
    sim.reset_request_log();
    let report = asking.sync_incremental().await.expect("incremental sync asking for deleted cards");
    assert_eq!(requests_to(&sim, "condition=3"), 1);
    assert_eq!(report.stats(EntityKind::Cards).deleted + report.stats(EntityKind::Cards).updated, 0);
    assert_eq!(stored(&*store, EntityKind::Cards, ids[4]).await.deleted_at, None);
}

/// An incremental run with nothing changed writes nothing but the run log, with the fewest
/// requests: one per page of each small list (users take two: 105 of them), one boards list per
/// space, two card listings (live, archived); no columns, lanes or select values within
/// `structure_max_age` of the full sync.
pub async fn incremental_with_nothing_changed_writes_nothing(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let engine = engine(&sim, &store);
    engine.sync_all().await.expect("full sync");
    let synced_before = stored(&*store, EntityKind::Cards, sim.card_ids()[0]).await.synced_at;
    sim.reset_request_log();
    let report = engine.sync_incremental().await.expect("incremental sync");
    for (kind, s) in &report.run.stats {
        assert_eq!((s.inserted, s.updated, s.deleted), (0, 0, 0), "{kind}: {s:?}");
    }
    let spaces = sim.space_ids().len();
    let users_pages = sim.users_json().len().div_ceil(100);
    assert_eq!(users_pages, 2);
    let expected = 4 + users_pages + spaces + 2;
    assert_eq!(sim.request_log().len(), expected, "requests: {:#?}", sim.request_log());
    assert_eq!(report.run.api_requests as usize, expected);
    assert_eq!(stored(&*store, EntityKind::Cards, sim.card_ids()[0]).await.synced_at, synced_before);
    assert_eq!(store.recent_runs(10).await.unwrap().len(), 2);
}

/// `GET /cards/{id}` requests the simulator received (not the `GET /cards?...` listings).
fn card_detail_requests(sim: &Simulator) -> Vec<String> {
    sim.request_log()
        .into_iter()
        .filter(|r| r.split_once("/cards/").is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit())))
        .collect()
}

/// The members `GET /cards/{id}` serves for a card, as `Store::card_members` returns them.
fn served_members(sim: &Simulator, id: i64) -> Vec<(i64, i64)> {
    let detail = sim.card_detail_json(id).unwrap_or_else(|| panic!("card {id} is served"));
    let mut members: Vec<(i64, i64)> = detail["members"]
        .as_array()
        .expect("a detail card has members")
        .iter()
        .map(|m| (m["user_id"].as_i64().unwrap(), m["type"].as_i64().unwrap()))
        .collect();
    members.sort_unstable();
    members
}

fn live_links(counts: &[TableCount], table: &str) -> i64 {
    counts.iter().find(|c| c.table == table).unwrap_or_else(|| panic!("counts() lacks {table}")).live
}

/// Card members: without the backfill an incremental run asks for no card by itself and stores no
/// members; with it, one `GET /cards/{id}` per changed card (none for unchanged or deleted cards,
/// none in a full sync) stores each changed card as that request returns it, members included,
/// and a later change of the card replaces them.
pub async fn incremental_backfill_stores_members_of_changed_cards(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let plain = engine(&sim, &store);
    let backfill = engine(&sim, &store).with_options(SyncOptions::default().with_card_members_backfill(true));
    backfill.sync_all().await.expect("full sync");
    assert_eq!(card_detail_requests(&sim), Vec::<String>::new(), "a full sync never fetches cards one by one");
    assert_eq!(live_links(&store.counts().await.unwrap(), "card_members"), 0);

    let boards = sim.board_ids();
    let ids = sim.card_ids();
    // Off (the default): the changes are stored from the listing, without members.
    sim.update_card(ids[0], json!({"title": "Renamed without members"}));
    sim.create_card(boards[0], "Created without members");
    sim.reset_request_log();
    let report = plain.sync_incremental().await.expect("incremental sync without the backfill");
    assert_eq!(report.stats(EntityKind::Cards).inserted + report.stats(EntityKind::Cards).updated, 2);
    assert_eq!(card_detail_requests(&sim), Vec::<String>::new(), "no card is fetched by itself when off");
    assert_eq!(live_links(&store.counts().await.unwrap(), "card_members"), 0);

    // On: created, edited, moved and archived cards are fetched one by one; a deleted one is not.
    let created = sim.create_card(boards[0], "Fresh card")["id"].as_i64().unwrap();
    sim.update_card(ids[1], json!({"title": "Renamed"}));
    let target_column = *sim.column_ids(boards[1]).last().unwrap();
    sim.move_card(ids[2], target_column, None);
    sim.archive_card(ids[3]);
    sim.delete_card(ids[4]);
    let changed = [created, ids[1], ids[2], ids[3]];
    sim.reset_request_log();
    let report = backfill.sync_incremental().await.expect("incremental sync with the backfill");
    let mut asked: Vec<i64> = card_detail_requests(&sim)
        .iter()
        .map(|r| r.rsplit_once("/cards/").unwrap().1.split(['?', '/']).next().unwrap().parse().unwrap())
        .collect();
    asked.sort_unstable();
    let mut expected = changed.to_vec();
    expected.sort_unstable();
    assert_eq!(asked, expected, "one request per changed card, none for the deleted one");
    assert!(report.run.api_requests as usize >= changed.len(), "the requests count in the run log");
    let mut links = 0;
    for id in changed {
        let row = stored(&*store, EntityKind::Cards, id).await;
        assert_eq!(row.raw, sim.card_detail_json(id).unwrap(), "card {id} is stored as GET /cards/{{id}} serves it");
        let members = served_members(&sim, id);
        assert!(members.contains(&(sim.card_json(id).unwrap()["owner_id"].as_i64().unwrap(), 2)), "{members:?}");
        assert_eq!(store.card_members(id).await.unwrap(), members, "card {id}: members");
        links += members.len() as i64;
    }
    assert!(store.card_members(ids[0]).await.unwrap().is_empty(), "a card unchanged since stays as it was");
    assert_eq!(live_links(&store.counts().await.unwrap(), "card_members"), links);

    // Nothing changed: the cards the listing's overlap returns again are not fetched again.
    sim.reset_request_log();
    backfill.sync_incremental().await.expect("incremental sync, nothing changed");
    assert_eq!(card_detail_requests(&sim), Vec::<String>::new(), "unchanged cards are not fetched again");
    assert_eq!(store.card_members(ids[1]).await.unwrap(), served_members(&sim, ids[1]), "listing keeps members");

    // A change that changes the members replaces them.
    let before = store.card_members(ids[1]).await.unwrap();
    let mut edits = 0;
    while served_members(&sim, ids[1]) == before {
        edits += 1;
        assert!(edits < 20, "the simulator's members of card {} never change", ids[1]);
        sim.update_card(ids[1], json!({"title": format!("Edit {edits}")}));
    }
    let now = served_members(&sim, ids[1]);
    assert!(before.len() > 1 || now.len() > 1, "ordinary members (type 1) too: {before:?}, then {now:?}");
    backfill.sync_incremental().await.expect("incremental sync after the members changed");
    assert_eq!(store.card_members(ids[1]).await.unwrap(), now);
}

/// A full sync marks cards, boards, columns and lanes that disappeared as deleted, and keeps them.
pub async fn full_sync_marks_missing_records_deleted(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let engine = engine(&sim, &store);
    engine.sync_all().await.expect("first full sync");
    let gone = sim.card_ids()[5];
    sim.delete_card(gone);
    let report = engine.sync_all().await.expect("second full sync");
    assert_eq!(report.stats(EntityKind::Cards).deleted, 1);
    let row = stored(&*store, EntityKind::Cards, gone).await;
    assert!(row.deleted_at.is_some());
    assert_eq!(row.raw["id"], json!(gone), "the row keeps its data");
    let counts = store.counts().await.unwrap();
    let cards = counts.iter().find(|c| c.table == "cards").unwrap();
    assert_eq!((cards.live as usize, cards.deleted), (sim.card_ids().len(), 1));
    // A third run finds nothing new to delete.
    let report = engine.sync_all().await.expect("third full sync");
    assert_eq!(report.stats(EntityKind::Cards).deleted, 0);
}

/// A selective run touches only what was chosen.
pub async fn selective_sync_touches_only_the_selection(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let engine = engine(&sim, &store);
    let report = engine.sync_specific(&[EntityKind::Tags, EntityKind::Users], true).await.expect("selective");
    assert_eq!(report.run.kind, RunKind::Selective);
    assert_eq!(report.run.entities, vec![EntityKind::Users, EntityKind::Tags]);
    let counts: BTreeMap<String, i64> = store.counts().await.unwrap().into_iter().map(|c| (c.table, c.live)).collect();
    assert_eq!(counts["tags"], sim.listed_tags_json().len() as i64);
    assert_eq!(counts["users"], sim.users_json().len() as i64);
    for table in ["spaces", "boards", "columns", "lanes", "cards", "card_types", "property_definitions"] {
        assert_eq!(counts[table], 0, "{table} untouched");
    }

    // One board: its cards and nothing of the others.
    let board = sim.board_ids()[1];
    let selection = Selection::kinds(&[EntityKind::Boards, EntityKind::Columns, EntityKind::Lanes, EntityKind::Cards])
        .in_boards(&[BoardId(board)]);
    engine.sync_selection(&selection, Mode::Full).await.expect("board selection");
    assert_eq!(store.ids(EntityKind::Boards, false).await.unwrap(), vec![board]);
    let mut expected: Vec<i64> =
        sim.cards_json().iter().filter(|c| c["board_id"] == json!(board)).map(|c| c["id"].as_i64().unwrap()).collect();
    expected.sort_unstable();
    assert!(!expected.is_empty());
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), expected);
    let mut columns = sim.column_ids(board);
    columns.sort_unstable();
    assert_eq!(store.ids(EntityKind::Columns, false).await.unwrap(), columns);

    // A full sync of the same board later marks deleted only that board's missing cards.
    let other_board_card = sim.cards_json().iter().find(|c| c["board_id"] != json!(board)).unwrap()["id"].as_i64();
    // A card moved to another board is missing from this board's listing too, but is not deleted.
    engine.sync_all().await.expect("full sync");
    sim.delete_card(expected[0]);
    let elsewhere = sim.board_ids()[0];
    let elsewhere_column = *sim.column_ids(elsewhere).last().unwrap();
    sim.move_card(expected[1], elsewhere_column, None);
    let report =
        engine.sync_selection(&Selection::kinds(&[EntityKind::Cards]).in_boards(&[BoardId(board)]), Mode::Full).await;
    assert_eq!(report.expect("board full sync").stats(EntityKind::Cards).deleted, 1);
    assert!(stored(&*store, EntityKind::Cards, expected[0]).await.deleted_at.is_some());
    let moved = stored(&*store, EntityKind::Cards, expected[1]).await;
    assert!(moved.deleted_at.is_none(), "a moved card is not deleted");
    assert_eq!(int(&moved, EntityKind::Cards, "board_id"), Some(elsewhere));
    assert!(stored(&*store, EntityKind::Cards, other_board_card.unwrap()).await.deleted_at.is_none());
}

/// A store that fails (or never finishes) every `apply_page` of cards after a number of
/// successful ones.
#[derive(Debug)]
pub struct FlakyStore {
    inner: Arc<dyn Store>,
    card_pages_left: AtomicUsize,
    inbox_fails: std::sync::atomic::AtomicBool,
    hang: bool,
}

impl FlakyStore {
    /// Wraps `inner`; card pages after the first `pages` fail.
    pub fn new(inner: Arc<dyn Store>, pages: usize) -> Self {
        Self { inner, card_pages_left: AtomicUsize::new(pages), inbox_fails: Default::default(), hang: false }
    }

    /// Wraps `inner`; writing a card page after the first `pages` never finishes (a process stuck
    /// there until it is killed: what a test aborting the run at that point needs to be exact).
    pub fn hanging(inner: Arc<dyn Store>, pages: usize) -> Self {
        Self { hang: true, ..Self::new(inner, pages) }
    }

    /// Makes recording webhook deliveries in the inbox fail (or work again).
    pub fn fail_inbox(&self, fail: bool) {
        self.inbox_fails.store(fail, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for FlakyStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn apply_page(&self, page: &Page) -> Result<PageOutcome, StoreError> {
        if page.batch.kind() == EntityKind::Cards && !page.batch.is_empty() {
            let left = self.card_pages_left.load(Ordering::SeqCst);
            if left == 0 && self.hang {
                std::future::pending::<()>().await;
            }
            if left == 0 {
                return Err(StoreError::Backend {
                    backend: "flaky",
                    message: "injected failure writing a page of cards".into(),
                    source: None,
                });
            }
            self.card_pages_left.store(left - 1, Ordering::SeqCst);
        }
        self.inner.apply_page(page).await
    }
    async fn unseen(&self, kind: EntityKind, sweep: i64, scope: &Scope) -> Result<Vec<i64>, StoreError> {
        self.inner.unseen(kind, sweep, scope).await
    }
    async fn mark_deleted(&self, kind: EntityKind, ids: &[i64], at: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.mark_deleted(kind, ids, at).await
    }
    async fn existing_ids(&self, kind: EntityKind, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        self.inner.existing_ids(kind, ids).await
    }
    async fn ids(&self, kind: EntityKind, include_deleted: bool) -> Result<Vec<i64>, StoreError> {
        self.inner.ids(kind, include_deleted).await
    }
    async fn get(&self, kind: EntityKind, id: i64) -> Result<Option<StoredRecord>, StoreError> {
        self.inner.get(kind, id).await
    }
    async fn card_tag_ids(&self, card_id: i64) -> Result<Vec<i64>, StoreError> {
        self.inner.card_tag_ids(card_id).await
    }
    async fn card_members(&self, card_id: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        self.inner.card_members(card_id).await
    }
    async fn entity_state(&self, kind: EntityKind) -> Result<EntityState, StoreError> {
        self.inner.entity_state(kind).await
    }
    async fn entity_states(&self) -> Result<Vec<EntityState>, StoreError> {
        self.inner.entity_states().await
    }
    async fn save_entity_state(&self, state: &EntityState) -> Result<(), StoreError> {
        self.inner.save_entity_state(state).await
    }
    async fn start_run(&self, run: &RunRecord) -> Result<i64, StoreError> {
        self.inner.start_run(run).await
    }
    async fn update_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.inner.update_run(run).await
    }
    async fn interrupt_running_runs(&self, keep: i64, reason: &str) -> Result<u64, StoreError> {
        self.inner.interrupt_running_runs(keep, reason).await
    }
    async fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.recent_runs(limit).await
    }
    async fn counts(&self) -> Result<Vec<TableCount>, StoreError> {
        self.inner.counts().await
    }
    async fn try_lock(&self, holder: &str, stale_after: Duration) -> Result<LockAttempt, StoreError> {
        self.inner.try_lock(holder, stale_after).await
    }
    async fn heartbeat_lock(&self, holder: &str) -> Result<bool, StoreError> {
        self.inner.heartbeat_lock(holder).await
    }
    async fn release_lock(&self, holder: &str) -> Result<(), StoreError> {
        self.inner.release_lock(holder).await
    }
    async fn interrupt_webhook_runs(&self, started_before: DateTime<Utc>, reason: &str) -> Result<u64, StoreError> {
        self.inner.interrupt_webhook_runs(started_before, reason).await
    }
    async fn prune_runs(&self, before: DateTime<Utc>, keep: usize) -> Result<u64, StoreError> {
        self.inner.prune_runs(before, keep).await
    }
    async fn inbox_push(
        &self,
        notes: &[Notification],
        now: DateTime<Utc>,
        due: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if self.inbox_fails.load(Ordering::SeqCst) {
            return Err(StoreError::Backend {
                backend: "flaky",
                message: "injected failure recording a webhook".into(),
                source: None,
            });
        }
        self.inner.inbox_push(notes, now, due).await
    }
    async fn inbox_claim(
        &self,
        worker: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        self.inner.inbox_claim(worker, limit, now, lease_until).await
    }
    async fn inbox_finish(&self, results: &[InboxResult], now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.inbox_finish(results, now).await
    }
    async fn inbox_entries(&self, failed_only: bool, limit: usize) -> Result<Vec<InboxEntry>, StoreError> {
        self.inner.inbox_entries(failed_only, limit).await
    }
    async fn inbox_stats(&self) -> Result<InboxStats, StoreError> {
        self.inner.inbox_stats().await
    }
    async fn inbox_retry_failed(&self, ids: Option<&[i64]>, due_at: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.inbox_retry_failed(ids, due_at).await
    }
}

/// A store failing on page k, then a rerun: the same final content as a clean run, no duplicates,
/// nothing marked deleted by the failed run, and the rerun resumes rather than starting over.
pub async fn failed_run_resumes_and_loses_nothing(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig { cards: 450, ..SimConfig::small() }).await;
    // Cards already stored that the failed full sync never reaches must not be marked deleted.
    engine(&sim, &store).sync_all().await.expect("first full sync");
    let flaky: Arc<dyn Store> = Arc::new(FlakyStore::new(store.clone(), 6));
    // Pages of 10, one window at a time (pages that arrive together are committed together, one
    // page in the first commit, then up to 2, 4, 8 and 10): six writes hold 6 to 35 of the 45
    // live pages, so the seventh comes before the end of the listing.
    let paged = SyncOptions::default().with_page_size(10).with_concurrency(1);
    let err = SyncEngine::new(sim_client(&sim), flaky.clone())
        .with_options(paged.clone())
        .sync_all()
        .await
        .expect_err("the store fails on the seventh write of cards");
    assert!(chain(&err).contains("injected failure"), "{}", chain(&err));
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.iter().find(|c| c.table == "cards").unwrap().deleted, 0, "a failed full sync deletes nothing");
    let runs = store.recent_runs(1).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert!(runs[0].error.as_deref().unwrap_or_default().contains("injected failure"));
    let resume = store.entity_state(EntityKind::Cards).await.unwrap().resume;
    assert!(resume.is_some(), "the failed run left a resume point");

    sim.reset_request_log();
    let stored_before = store.ids(EntityKind::Cards, true).await.unwrap().len();
    let report = SyncEngine::new(sim_client(&sim), store.clone())
        .with_options(paged.clone())
        .sync_all()
        .await
        .expect("the rerun succeeds");
    // Resuming skips the committed pages (at least six): fewer card requests than a listing from
    // scratch with the same options.
    let card_requests = requests_to(&sim, "/cards?");
    assert_eq!(report.stats(EntityKind::Cards).deleted, 0);
    sim.reset_request_log();
    let scratch: Arc<dyn Store> = Arc::new(kaiten_sync::MemoryStore::new());
    SyncEngine::new(sim_client(&sim), scratch).with_options(paged).sync_all().await.expect("a run from scratch");
    let from_scratch = requests_to(&sim, "/cards?");
    assert!(
        card_requests + 6 <= from_scratch,
        "rerun resumed ({card_requests} card requests, {from_scratch} from scratch, {stored_before} stored)"
    );
    let mut expected = sim.card_ids();
    expected.sort_unstable();
    assert_eq!(store.ids(EntityKind::Cards, true).await.unwrap(), expected, "no duplicates, nothing missing");
    for card in sim.cards_json() {
        assert_eq!(stored(&*store, EntityKind::Cards, card["id"].as_i64().unwrap()).await.raw, card);
    }
    assert_eq!(store.entity_state(EntityKind::Cards).await.unwrap().resume, None);
}

/// A fresh store, a failure mid-way, then a rerun: the same content as one clean run.
pub async fn failed_first_run_then_rerun_equals_a_clean_run(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig { cards: 350, ..SimConfig::small() }).await;
    let flaky: Arc<dyn Store> = Arc::new(FlakyStore::new(store.clone(), 1));
    // Pages of 20, so that the listing takes more than one commit of (up to 10) pages.
    SyncEngine::new(sim_client(&sim), flaky.clone())
        .with_options(SyncOptions::default().with_page_size(20))
        .sync_all()
        .await
        .expect_err("fails on the second page of cards");
    engine(&sim, &store).sync_all().await.expect("rerun");
    let mut expected = sim.card_ids();
    expected.sort_unstable();
    assert_eq!(store.ids(EntityKind::Cards, true).await.unwrap(), expected);
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.iter().find(|c| c.table == "cards").unwrap().deleted, 0);
}

/// Two runs at once on one database: the second refuses with a clear error, or waits its turn.
pub async fn concurrent_runs_are_serialized(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig { latency: Duration::from_millis(30), ..SimConfig::small() }).await;
    let first = engine(&sim, &store);
    let second = engine(&sim, &store);
    let (a, b) = tokio::join!(first.sync_all(), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        second.sync_all().await
    });
    a.expect("the first run succeeds");
    match b {
        Err(SyncError::Locked { holder, .. }) => assert_eq!(holder, first.holder()),
        other => panic!("the second run must refuse while the first holds the lock, got {other:?}"),
    }
    let mut options = SyncOptions::default();
    options.lock_wait = Duration::from_secs(60);
    let waiting = engine(&sim, &store).with_options(options);
    let (a, b) = tokio::join!(first.sync_incremental(), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waiting.sync_incremental().await
    });
    a.expect("first");
    b.expect("the waiting run gets its turn");
}

/// A card on a board that appeared after the boards were listed: its board, columns and lanes are
/// fetched, and nothing fails on a missing parent.
pub async fn card_on_an_unknown_board_fetches_its_parents(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let engine = engine(&sim, &store);
    engine.sync_all().await.expect("full sync");
    let space = sim.space_ids()[0];
    let board = sim.add_board(space, "Brand new board");
    let card = sim.create_card(board, "On the new board")["id"].as_i64().unwrap();
    let column = sim.add_column(sim.board_ids()[0], "New column");
    let moved = sim.card_ids()[0];
    sim.move_card(moved, column, None);
    engine.sync_specific(&[EntityKind::Cards], false).await.expect("cards-only incremental sync");
    let row = stored(&*store, EntityKind::Cards, card).await;
    assert_eq!(int(&row, EntityKind::Cards, "board_id"), Some(board));
    assert_eq!(int(&row, EntityKind::Cards, "space_id"), Some(space));
    let board_row = stored(&*store, EntityKind::Boards, board).await;
    assert_eq!(board_row.raw["title"], "Brand new board");
    for column in sim.column_ids(board) {
        stored(&*store, EntityKind::Columns, column).await;
    }
    for lane in sim.lane_ids(board) {
        stored(&*store, EntityKind::Lanes, lane).await;
    }
    assert_eq!(stored(&*store, EntityKind::Columns, column).await.raw["title"], "New column");
    assert_eq!(int(&stored(&*store, EntityKind::Cards, moved).await, EntityKind::Cards, "column_id"), Some(column));
}

async fn assert_failed_run_logged(store: &dyn Store, needle: &str) {
    let runs = store.recent_runs(1).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Failed);
    let error = runs[0].error.clone().unwrap_or_default();
    assert!(error.contains(needle), "sync_logs error {error:?} should mention {needle:?}");
    assert!(runs[0].finished_at.is_some());
}

/// A bad token: a clear error, a failed row in `sync_logs`, nothing else written.
pub async fn bad_token_fails_clearly(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let engine = SyncEngine::new(client_for(&sim.base_url(), "wrong-token-value"), store.clone());
    let err = engine.sync_all().await.expect_err("a bad token fails");
    assert!(matches!(err, SyncError::Api(kaiten_client::Error::Unauthorized { .. })), "{err:?}");
    assert!(chain(&err).contains("401"), "{}", chain(&err));
    assert!(!chain(&err).contains("wrong-token-value"), "the token never appears in errors");
    assert!(!format!("{err:?}").contains("wrong-token-value"), "nor in their Debug form");
    assert_failed_run_logged(&*store, "401").await;
    let runs = store.recent_runs(1).await.unwrap();
    assert!(!runs[0].error.clone().unwrap_or_default().contains("wrong-token-value"));
    assert_eq!(store.ids(EntityKind::Spaces, true).await.unwrap(), Vec::<i64>::new());
    // The lock was released: the next run can start.
    assert_eq!(store.try_lock("someone-else", Duration::from_secs(60)).await.unwrap(), LockAttempt::Acquired);
    store.release_lock("someone-else").await.unwrap();
}

/// Kaiten unreachable: a connection error naming the URL, and a failed run.
pub async fn unreachable_kaiten_fails_clearly(store: Arc<dyn Store>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/api/latest");
    let engine = SyncEngine::new(client_for(&url, "token"), store.clone());
    let err = engine.sync_all().await.expect_err("nothing listens there");
    assert!(matches!(err, SyncError::Api(kaiten_client::Error::Connection { .. })), "{err:?}");
    assert!(chain(&err).contains(&addr.to_string()), "{}", chain(&err));
    assert_failed_run_logged(&*store, "cannot reach Kaiten").await;
}

/// HTML where JSON was expected: a decode error naming the route, and a failed run.
pub async fn html_instead_of_json_fails_clearly(store: Arc<dyn Store>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = "<html><body>Maintenance</body></html>";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    let engine = SyncEngine::new(client_for(&format!("http://{addr}"), "token"), store.clone());
    let err = engine.sync_all().await.expect_err("HTML is not a list of spaces");
    server.abort();
    assert!(matches!(err, SyncError::Api(kaiten_client::Error::Decode { .. })), "{err:?}");
    assert!(chain(&err).contains("GET /spaces"), "{}", chain(&err));
    assert_failed_run_logged(&*store, "Maintenance").await;
}

// ---- The mirror against the simulator's truth (issue 13) ----

/// Moves the last complete listing of columns, lanes and select values `age` into the past, as
/// if that much time had passed since (what [`SyncOptions::structure_max_age`] measures).
async fn age_structure_listings(store: &dyn Store, age: Duration) {
    let age = chrono::Duration::from_std(age).unwrap();
    for kind in [EntityKind::Columns, EntityKind::Lanes, EntityKind::SelectValues] {
        let mut state = store.entity_state(kind).await.unwrap();
        state.last_full_sync_at = Some(state.last_full_sync_at.expect("listed once") - age);
        store.save_entity_state(&state).await.unwrap();
    }
}

/// Asserts a stored row is `expected` (a record as Kaiten serves it): the raw JSON, every typed
/// column as the engine derives it from that JSON (`fill` sets what the engine adds, such as a
/// card's `space_id`), and not marked deleted.
async fn assert_row<T: ToRow>(store: &dyn Store, expected: &Value, fill: impl FnOnce(&mut T)) {
    let mut record = T::from_value(expected.clone()).expect("the simulator serves valid records");
    fill(&mut record);
    let kind = T::KIND;
    let row = stored(store, kind, record.id()).await;
    assert_eq!(row.raw, *expected, "{kind} {}: raw JSON", record.id());
    let want = record.values();
    for (i, column) in kind.table().columns.iter().enumerate() {
        assert_eq!(row.values.get(i), Some(&want[i]), "{kind} {}: column {}", record.id(), column.name);
    }
    assert_eq!(row.deleted_at, None, "{kind} {} is live", record.id());
}

/// Asserts the mirror holds exactly what the simulator's company holds, row by row (raw and typed
/// columns), apart from: cards deleted in Kaiten since the last full sync (`unreconciled`: still
/// live rows as last listed), and tags Kaiten never listed (`GET /tags` leaves out tags on no card;
/// the mirror keeps every tag it ever saw, `kept_tags`).
pub async fn assert_mirror_is_the_simulator(
    sim: &Simulator,
    store: &dyn Store,
    unreconciled: &[Value],
    kept_tags: &[i64],
) {
    let sorted = |mut ids: Vec<i64>| {
        ids.sort_unstable();
        ids
    };
    // Spaces, boards and their space.
    let spaces = sim.spaces_json();
    assert_eq!(store.ids(EntityKind::Spaces, false).await.unwrap(), ids_of(&spaces));
    for space in &spaces {
        assert_row::<Space>(store, space, |_| {}).await;
    }
    let boards = sim.boards_json();
    assert_eq!(store.ids(EntityKind::Boards, false).await.unwrap(), ids_of(&boards));
    let mut board_space = BTreeMap::new();
    for board in &boards {
        board_space.insert(board["id"].as_i64().unwrap(), board["space_id"].as_i64());
        assert_row::<Board>(store, board, |_| {}).await;
    }
    // Columns (with their subcolumns) and lanes, archived ones included.
    let (mut columns, mut lanes) = (Vec::new(), Vec::new());
    for board in sim.board_ids() {
        for column in sim.columns_json(board) {
            assert_row::<Column>(store, &column, |c| c.board_id = c.board_id.or(Some(BoardId(board)))).await;
            for sub in column["subcolumns"].as_array().unwrap() {
                assert_row::<Column>(store, sub, |_| {}).await;
                columns.push(sub["id"].as_i64().unwrap());
            }
            columns.push(column["id"].as_i64().unwrap());
        }
        for lane in sim.lanes_json(board) {
            assert_row::<Lane>(store, &lane, |_| {}).await;
            lanes.push(lane["id"].as_i64().unwrap());
        }
    }
    assert_eq!(store.ids(EntityKind::Columns, false).await.unwrap(), sorted(columns));
    assert_eq!(store.ids(EntityKind::Lanes, false).await.unwrap(), sorted(lanes));
    // Users, deactivated ones included.
    let users = sim.users_json();
    assert_eq!(store.ids(EntityKind::Users, false).await.unwrap(), ids_of(&users));
    for user in &users {
        assert_row::<User>(store, user, |_| {}).await;
    }
    // Card types, property definitions, select values in every condition.
    let types = sim.card_types_json();
    assert_eq!(store.ids(EntityKind::CardTypes, false).await.unwrap(), ids_of(&types));
    for card_type in &types {
        assert_row::<CardType>(store, card_type, |_| {}).await;
    }
    let props = sim.custom_properties_json();
    assert_eq!(store.ids(EntityKind::PropertyDefinitions, false).await.unwrap(), ids_of(&props));
    let mut values = Vec::new();
    for prop in &props {
        assert_row::<PropertyDefinition>(store, prop, |_| {}).await;
        for value in sim.select_values_json(prop["id"].as_i64().unwrap()) {
            assert_row::<SelectValue>(store, &value, |_| {}).await;
            values.push(value);
        }
    }
    assert_eq!(store.ids(EntityKind::SelectValues, false).await.unwrap(), ids_of(&values));
    // Tags: every tag Kaiten lists, as listed, plus the ones it stopped listing (kept, live).
    let listed = sim.listed_tags_json();
    for tag in &listed {
        assert_row::<Tag>(store, tag, |_| {}).await;
    }
    let tags: BTreeSet<i64> = ids_of(&listed).into_iter().chain(kept_tags.iter().copied()).collect();
    let tags: Vec<i64> = tags.into_iter().collect();
    assert_eq!(store.ids(EntityKind::Tags, false).await.unwrap(), tags, "no tag is deleted for missing from GET /tags");
    // Cards, live and archived, with their tag links; deleted ones not reconciled yet as last seen.
    let cards = sim.cards_json();
    let expected_cards: Vec<Value> = cards.iter().chain(unreconciled).cloned().collect();
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), ids_of(&expected_cards));
    for card in &expected_cards {
        let space = board_space.get(&card["board_id"].as_i64().unwrap()).copied().flatten();
        assert_row::<Card>(store, card, |c| c.space_id = space.map(SpaceId)).await;
        let mut tags: Vec<i64> = card["tag_ids"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(store.card_tag_ids(card["id"].as_i64().unwrap()).await.unwrap(), tags, "card {}: tags", card["id"]);
    }
}

/// The "done when": a full sync; changes of every kind in Kaiten (a card created, edited
/// with a date-only due date, moved to another board, archived, deleted; a user deactivated; a
/// select value removed; a column and a lane renamed; a tag taken off its last card); then one
/// incremental sync an hour later (the structure's staleness bound) leaves the mirror equal to the
/// simulator's truth, row by row, except for the deletion, which the next full sync reconciles.
pub async fn one_incremental_sync_mirrors_every_kind_of_change(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let engine = engine(&sim, &store);
    engine.sync_all().await.expect("full sync");
    let listed_at_first = ids_of(&sim.listed_tags_json());
    assert_mirror_is_the_simulator(&sim, &*store, &[], &[]).await;

    let boards = sim.board_ids();
    let cards = sim.cards_json();
    let live: Vec<i64> = cards.iter().filter(|c| c["condition"] == 1).map(|c| c["id"].as_i64().unwrap()).collect();
    // A card: created, edited (with a date-only due date), moved to another board, archived, deleted.
    let created = sim.create_card(boards[0], "Created after the full sync")["id"].as_i64().unwrap();
    sim.update_card(live[0], json!({"title": "Edited", "asap": true, "due_date": "2026-03-31"}));
    let target = *sim.column_ids(boards[3]).last().unwrap();
    let moved = *live[4..].iter().find(|id| sim.card_json(**id).unwrap()["board_id"] != boards[3]).unwrap();
    sim.move_card(moved, target, None);
    sim.archive_card(live[2]);
    let deleted = live[3];
    let deleted_as_listed = sim.card_json(deleted).unwrap();
    sim.delete_card(deleted);
    // A user who owns a card is deactivated.
    let owner = cards.iter().find_map(|c| {
        let owner = c["owner_id"].as_i64()?;
        sim.users_json().iter().any(|u| u["id"] == owner && u["activated"] == true && u["role"] == 2).then_some(owner)
    });
    sim.deactivate_user(owner.expect("a card owned by an active user"));
    // A select value a card holds is removed.
    let prop = sim.custom_properties_json().into_iter().find(|p| p["type"] == "select").unwrap();
    let prop_id = prop["id"].as_i64().unwrap();
    let key = format!("id_{prop_id}");
    let held = sim
        .select_values_json(prop_id)
        .iter()
        .filter(|v| v["condition"] == "active")
        .map(|v| v["id"].as_i64().unwrap())
        .find(|v| cards.iter().any(|c| c["properties"][&key] == json!([*v])))
        .expect("a card holds an active value");
    sim.remove_select_value(prop_id, held);
    // A column and a lane renamed (their board's `updated` does not move).
    sim.rename_column(sim.column_ids(boards[1])[0], "Renamed column");
    sim.rename_lane(sim.lane_ids(boards[2])[0], "Renamed lane");
    // A tag taken off its last card drops out of GET /tags.
    let tag = listed_at_first[0];
    for card in sim.cards_json() {
        let tags: Vec<i64> = card["tag_ids"].as_array().unwrap().iter().filter_map(Value::as_i64).collect();
        if tags.contains(&tag) {
            let rest: Vec<i64> = tags.into_iter().filter(|t| *t != tag).collect();
            sim.update_card(card["id"].as_i64().unwrap(), json!({"tag_ids": rest}));
        }
    }
    assert!(!ids_of(&sim.listed_tags_json()).contains(&tag));

    // An hour later (past the default `structure_max_age`), one incremental sync.
    age_structure_listings(&*store, Duration::from_secs(3600)).await;
    let report = engine.sync_incremental().await.expect("incremental sync");
    assert_eq!(report.stats(EntityKind::Cards).deleted, 0, "an incremental listing cannot see a deletion");
    assert_eq!(report.stats(EntityKind::Tags).deleted, 0);
    let still = stored(&*store, EntityKind::Cards, created).await;
    assert_eq!(still.value(EntityKind::Cards, "due_date"), Some(&SqlValue::Null), "created without a due date");
    let edited = stored(&*store, EntityKind::Cards, live[0]).await;
    assert_eq!(
        edited.value(EntityKind::Cards, "due_date"),
        Some(&SqlValue::Time("2026-03-31T00:00:00Z".parse().unwrap())),
        "a date-only due date is a date, not NULL"
    );
    let value = stored(&*store, EntityKind::SelectValues, held).await;
    assert_eq!(value.value(EntityKind::SelectValues, "condition"), Some(&SqlValue::Int(3)), "removed");
    assert_mirror_is_the_simulator(&sim, &*store, std::slice::from_ref(&deleted_as_listed), &[tag]).await;

    // The next full sync reconciles the deletion, and still deletes no tag.
    let report = engine.sync_all().await.expect("full sync");
    assert_eq!(report.stats(EntityKind::Cards).deleted, 1);
    assert_eq!(report.stats(EntityKind::Tags).deleted, 0);
    let row = stored(&*store, EntityKind::Cards, deleted).await;
    assert!(row.deleted_at.is_some(), "the deleted card is marked");
    assert_eq!(row.raw, deleted_as_listed, "and keeps what was last listed");
    assert_mirror_is_the_simulator(&sim, &*store, &[], &[tag]).await;
    let cards_state = store.entity_state(EntityKind::Cards).await.unwrap();
    assert!(cards_state.last_full_sync_at >= Some(row.deleted_at.unwrap()), "deletions reconciled then");
}

/// Columns, lanes and select values change without moving their parent's `updated` and without
/// webhooks: an incremental run re-lists them all once their last complete listing is older than
/// `structure_max_age` (and only then: otherwise just the boards whose `updated` moved), which
/// bounds how stale they get.
pub async fn structure_is_repolled_within_its_max_age(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let engine = engine(&sim, &store);
    engine.sync_all().await.expect("full sync");
    let board = sim.board_ids()[1];
    let column = sim.column_ids(board)[0];
    let lane = sim.lane_ids(board)[0];
    let prop =
        sim.custom_properties_json().into_iter().find(|p| p["type"] == "select").unwrap()["id"].as_i64().unwrap();
    let value = sim.select_values_json(prop)[0]["id"].as_i64().unwrap();
    let old_title = stored(&*store, EntityKind::Columns, column).await.raw["title"].clone();
    sim.rename_column(column, "Renamed column");
    sim.rename_lane(lane, "Renamed lane");
    sim.remove_select_value(prop, value);
    let title = |kind, id| {
        let store = store.clone();
        async move { stored(&*store, kind, id).await.raw["title"].clone() }
    };

    // Within the bound: nothing re-listed, nothing asked.
    sim.reset_request_log();
    engine.sync_incremental().await.expect("incremental sync");
    assert_eq!(requests_to(&sim, "/columns") + requests_to(&sim, "/lanes") + requests_to(&sim, "/select-values"), 0);
    assert_eq!(title(EntityKind::Columns, column).await, old_title, "not re-listed yet");

    // Past it: every board's columns and lanes and every select property's values, once.
    age_structure_listings(&*store, SyncOptions::default().structure_max_age).await;
    sim.reset_request_log();
    let report = engine.sync_incremental().await.expect("incremental sync past the bound");
    let boards = sim.board_ids().len();
    let selects = sim.custom_properties_json().iter().filter(|p| p["type"] == "select").count();
    assert_eq!(
        (requests_to(&sim, "/columns"), requests_to(&sim, "/lanes")),
        (boards, boards),
        "one request each per board"
    );
    assert_eq!(requests_to(&sim, "/select-values"), selects);
    assert_eq!(title(EntityKind::Columns, column).await, "Renamed column");
    assert_eq!(title(EntityKind::Lanes, lane).await, "Renamed lane");
    let row = stored(&*store, EntityKind::SelectValues, value).await;
    assert_eq!(row.value(EntityKind::SelectValues, "condition"), Some(&SqlValue::Int(3)));
    assert_eq!(row.deleted_at, None, "a removed value Kaiten still lists is not a deleted row");
    assert_eq!((report.stats(EntityKind::Columns).updated, report.stats(EntityKind::Lanes).updated), (1, 1));
    for kind in [EntityKind::Columns, EntityKind::Lanes, EntityKind::SelectValues] {
        let state = store.entity_state(kind).await.unwrap();
        assert!(state.last_full_sync_at >= Some(report.run.started_at), "{kind}: a complete listing again");
    }

    // The clock restarted: the next run asks nothing again.
    sim.reset_request_log();
    engine.sync_incremental().await.expect("incremental sync");
    assert_eq!(requests_to(&sim, "/columns") + requests_to(&sim, "/select-values"), 0);

    // With a zero bound, every incremental run re-lists.
    let always = SyncEngine::new(sim_client(&sim), store.clone())
        .with_options(SyncOptions::default().with_structure_max_age(Duration::ZERO));
    sim.rename_column(column, "Renamed again");
    always.sync_incremental().await.expect("incremental sync");
    assert_eq!(title(EntityKind::Columns, column).await, "Renamed again");
}

/// `--board`/`--space` naming something Kaiten does not have: an invalid selection naming the
/// ids, a failed run in the log, and nothing stored (no placeholder board).
pub async fn an_unknown_board_or_space_is_refused_before_anything_is_written(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let engine = engine(&sim, &store);
    let lanes = Selection::kinds(&[EntityKind::Lanes]).in_boards(&[BoardId(424_242)]);
    let err = engine.sync_selection(&lanes, Mode::Full).await.expect_err("no such board");
    assert!(matches!(err, SyncError::InvalidSelection(_)), "{err:?}");
    assert!(err.to_string().contains("Kaiten has no board 424242"), "{err}");
    let known = sim.board_ids()[0];
    let some = Selection::kinds(&[EntityKind::Cards]).in_boards(&[BoardId(known), BoardId(7), BoardId(8)]);
    let err = engine.sync_selection(&some, Mode::Incremental).await.expect_err("two unknown boards");
    assert!(err.to_string().contains("boards 7,8"), "{err}");
    assert!(!err.to_string().contains(&known.to_string()), "only the unknown ones are named: {err}");
    let spaces = Selection::all().in_spaces(&[SpaceId(5)]);
    let err = engine.sync_selection(&spaces, Mode::Full).await.expect_err("no such space");
    assert!(err.to_string().contains("Kaiten has no space 5"), "{err}");
    for table in store.counts().await.unwrap() {
        assert_eq!((table.live, table.deleted), (0, 0), "{} holds nothing", table.table);
    }
    let runs = store.recent_runs(3).await.unwrap();
    assert!(runs
        .iter()
        .all(|r| r.status == RunStatus::Failed && r.error.as_deref().unwrap_or("").contains("Kaiten has no")));
    assert_eq!(requests_to(&sim, "/lanes") + requests_to(&sim, "/cards"), 0, "nothing listed past GET /spaces");
    // A board Kaiten has works.
    engine
        .sync_selection(&Selection::kinds(&[EntityKind::Lanes]).in_boards(&[BoardId(known)]), Mode::Full)
        .await
        .expect("known board");
    assert_eq!(store.ids(EntityKind::Lanes, false).await.unwrap(), {
        let mut lanes = sim.lane_ids(known);
        lanes.sort_unstable();
        lanes
    });
}

/// Rows of `kind` marked deleted, ascending.
async fn deleted_ids(store: &dyn Store, kind: EntityKind) -> Vec<i64> {
    let live: BTreeSet<i64> = store.ids(kind, false).await.unwrap().into_iter().collect();
    store.ids(kind, true).await.unwrap().into_iter().filter(|id| !live.contains(id)).collect()
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

/// Ids of the cards the simulator serves on `board`, ascending.
fn cards_on_board(sim: &Simulator, board: i64) -> Vec<i64> {
    sorted(
        sim.cards_json().iter().filter(|c| c["board_id"] == json!(board)).map(|c| c["id"].as_i64().unwrap()).collect(),
    )
}

/// A board (with its columns, lanes and cards), a column, a lane and a user that disappear from
/// Kaiten are marked deleted by the next full sync: exactly those rows, in every kind. A tag taken
/// off its last card drops out of `GET /tags` and is not deleted. The board's cards are a quarter
/// of the company, beyond the default `max_delete_share`: the sweep checks a sample by id first,
/// finds them all gone and goes ahead.
pub async fn full_sync_marks_vanished_structure_deleted(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let boards = sim.board_ids();
    // Kaiten deletes only empty columns and lanes: add empty ones to delete.
    let column = sim.add_column(boards[0], "Doomed column");
    let lane = sim.add_lane(boards[1], "Doomed lane");
    let engine = engine(&sim, &store);
    engine.sync_all().await.expect("first full sync");
    for kind in EntityKind::ALL {
        assert_eq!(deleted_ids(&*store, kind).await, Vec::<i64>::new(), "{kind}: nothing deleted yet");
    }

    let board = boards[2];
    let gone_columns = sorted(sim.column_ids(board).into_iter().chain([column]).collect());
    let gone_lanes = sorted(sim.lane_ids(board).into_iter().chain([lane]).collect());
    let gone_cards = cards_on_board(&sim, board);
    assert!(gone_cards.len() * 10 > sim.card_ids().len(), "more than 10% of the cards go with the board");
    let user = sim.users_json()[7]["id"].as_i64().unwrap();
    let tag = ids_of(&sim.listed_tags_json())[0];
    sim.delete_board(board);
    sim.delete_column(column);
    sim.delete_lane(lane);
    sim.delete_user(user);
    for card in sim.cards_json() {
        let tags: Vec<i64> = card["tag_ids"].as_array().unwrap().iter().filter_map(Value::as_i64).collect();
        if tags.contains(&tag) {
            let rest: Vec<i64> = tags.into_iter().filter(|t| *t != tag).collect();
            sim.update_card(card["id"].as_i64().unwrap(), json!({"tag_ids": rest}));
        }
    }
    assert!(!ids_of(&sim.listed_tags_json()).contains(&tag), "the tag is no longer listed");

    sim.reset_request_log();
    let report = engine.sync_all().await.expect("second full sync");
    assert_eq!(report.run.status, RunStatus::Succeeded);
    let expected: [(EntityKind, Vec<i64>); 6] = [
        (EntityKind::Boards, vec![board]),
        (EntityKind::Columns, gone_columns),
        (EntityKind::Lanes, gone_lanes),
        (EntityKind::Users, vec![user]),
        (EntityKind::Cards, gone_cards.clone()),
        (EntityKind::Tags, vec![]),
    ];
    for (kind, ids) in &expected {
        assert_eq!(&deleted_ids(&*store, *kind).await, ids, "{kind}: exactly the vanished rows are marked deleted");
        assert_eq!(report.stats(*kind).deleted, ids.len() as u64, "{kind}: counted in the run");
    }
    for kind in [EntityKind::Spaces, EntityKind::CardTypes, EntityKind::PropertyDefinitions, EntityKind::SelectValues] {
        assert_eq!(deleted_ids(&*store, kind).await, Vec::<i64>::new(), "{kind}: nothing vanished");
    }
    // What is left live is what Kaiten has.
    assert_eq!(store.ids(EntityKind::Boards, false).await.unwrap(), ids_of(&sim.boards_json()));
    let columns: Vec<i64> = sim.board_ids().into_iter().flat_map(|b| sim.column_ids(b)).collect();
    assert_eq!(store.ids(EntityKind::Columns, false).await.unwrap(), sorted(columns));
    let lanes: Vec<i64> = sim.board_ids().into_iter().flat_map(|b| sim.lane_ids(b)).collect();
    assert_eq!(store.ids(EntityKind::Lanes, false).await.unwrap(), sorted(lanes));
    assert_eq!(store.ids(EntityKind::Users, false).await.unwrap(), ids_of(&sim.users_json()));
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), sorted(sim.card_ids()));
    assert!(store.ids(EntityKind::Tags, false).await.unwrap().contains(&tag), "the unlisted tag stays live");
    // The large card deletion was checked by id first (a sample, all 404), the rest were not.
    let checked = card_detail_requests(&sim).len();
    assert_eq!(checked, gone_cards.len().min(kaiten_sync::DELETE_CHECK_SAMPLE), "{:#?}", card_detail_requests(&sim));
    let row = stored(&*store, EntityKind::Boards, board).await;
    assert_eq!(row.raw["id"], json!(board), "a deleted board keeps its data");
    // Nothing more disappears: the next full sync marks nothing.
    let report = engine.sync_all().await.expect("third full sync");
    for kind in EntityKind::ALL {
        assert_eq!(report.stats(kind).deleted, 0, "{kind}");
    }
}

/// The `limit` values of the card listings the simulator received.
fn card_listing_limits(sim: &Simulator) -> Vec<u32> {
    sim.request_log()
        .iter()
        .filter(|r| r.contains("/cards?"))
        .filter_map(|r| r.split(['?', '&']).find_map(|p| p.strip_prefix("limit=")).and_then(|l| l.parse().ok()))
        .collect()
}

/// A Kaiten that clamps the card page size below what the engine asks for (30 for 100): a short
/// page is not the end of the listing. The walk notices the clamp with one more request, pages
/// with the server's size, lists every card, and the sweep marks exactly the deleted one.
pub async fn a_clamped_card_page_size_loses_nothing(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig { cards: 250, ..SimConfig::small() }).await;
    let engine = engine(&sim, &store);
    engine.sync_all().await.expect("first full sync");
    let gone = sim.card_ids()[17];
    sim.delete_card(gone);
    sim.set_faults(kaiten_sim::Faults { cards_page_cap: Some(30), ..kaiten_sim::Faults::default() });
    sim.reset_request_log();
    let report = engine.sync_all().await.expect("full sync through a clamped listing");
    assert_eq!(deleted_ids(&*store, EntityKind::Cards).await, vec![gone], "only the deleted card");
    assert_eq!(report.stats(EntityKind::Cards).deleted, 1);
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), sorted(sim.card_ids()));
    // The live and archived walks start together, each asking 100; a short page of 30 is checked
    // once more (asking 100); from the answer on, every page is asked with the server's size.
    let limits = card_listing_limits(&sim);
    let asked_100 = limits.iter().filter(|l| **l == 100).count();
    assert!((2..=4).contains(&asked_100), "a first page per walk and at most one check each: {limits:?}");
    assert!(limits.iter().all(|l| *l == 100 || *l == 30), "then pages of the server's size: {limits:?}");
    assert!(limits.iter().filter(|l| **l == 30).count() >= 250 / 30, "{limits:?}");
    // From scratch too (no stored cards to keep), and an incremental run after it.
    let fresh: Arc<dyn Store> = Arc::new(kaiten_sync::MemoryStore::new());
    SyncEngine::new(sim_client(&sim), fresh.clone()).sync_all().await.expect("first full sync, clamped");
    assert_eq!(fresh.ids(EntityKind::Cards, false).await.unwrap(), sorted(sim.card_ids()));
    let changed: Vec<i64> = sim.card_ids().into_iter().take(45).collect();
    for id in &changed {
        sim.update_card(*id, json!({"size": 21}));
    }
    let report = engine.sync_incremental().await.expect("incremental sync, clamped");
    assert_eq!(report.stats(EntityKind::Cards).updated, changed.len() as u64, "every change, past the first page");
    for id in &changed {
        assert_eq!(stored(&*store, EntityKind::Cards, *id).await.raw["size"], 21, "card {id}");
    }
}

/// A Kaiten whose card listing ignores `offset` but honours `updated_after`: the walk pages by
/// `updated` and lists everything; the sweep marks only the deleted card.
pub async fn a_card_listing_ignoring_offset_is_walked_by_updated(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig { cards: 250, ..SimConfig::small() }).await;
    let engine = engine(&sim, &store);
    engine.sync_all().await.expect("first full sync");
    let gone = sim.card_ids()[3];
    sim.delete_card(gone);
    sim.set_faults(kaiten_sim::Faults { cards_ignore_offset: true, ..kaiten_sim::Faults::default() });
    let report = engine.sync_all().await.expect("full sync, offset ignored");
    assert_eq!(deleted_ids(&*store, EntityKind::Cards).await, vec![gone]);
    assert_eq!(report.stats(EntityKind::Cards).deleted, 1);
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), sorted(sim.card_ids()));
}

/// A Kaiten whose card listing ignores both `offset` and `updated_after` answers the first page
/// to every request: the walk cannot reach the rest, so the run fails saying so (after four
/// requests per walk, not forever: the page repeated for `updated_after` sends the walk back to offset 0,
/// where the page repeated for `offset` ends it) and marks nothing deleted; the next run on a
/// normal listing completes.
pub async fn a_card_listing_ignoring_paging_fails_and_deletes_nothing(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig { cards: 250, ..SimConfig::small() }).await;
    let engine = engine(&sim, &store);
    engine.sync_all().await.expect("first full sync");
    let reconciled = store.entity_state(EntityKind::Cards).await.unwrap().last_full_sync_at;
    let gone = sim.card_ids()[3];
    sim.delete_card(gone);
    sim.set_faults(kaiten_sim::Faults {
        cards_ignore_offset: true,
        cards_ignore_updated_after: true,
        ..kaiten_sim::Faults::default()
    });
    sim.reset_request_log();
    let err = engine.sync_all().await.expect_err("the card listing cannot be completed");
    assert!(matches!(err, SyncError::IncompleteListing { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("GET /cards") && text.contains("ignores `offset`"), "{text}");
    assert!(text.contains("nothing was marked deleted"), "{text}");
    // Four requests per walk at most (the live and archived walks run at once; the first to fail
    // ends the run).
    let card_requests = requests_to(&sim, "/cards?");
    assert!((4..=8).contains(&card_requests), "{:#?}", sim.request_log());
    for kind in EntityKind::ALL {
        assert_eq!(deleted_ids(&*store, kind).await, Vec::<i64>::new(), "{kind}: nothing marked deleted");
    }
    let runs = store.recent_runs(1).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[0].error.as_deref(), Some(text.as_str()));
    let state = store.entity_state(EntityKind::Cards).await.unwrap();
    assert_eq!(state.last_full_sync_at, reconciled, "deletions were not reconciled");
    assert_eq!(state.resume, None, "no resume point at positions made of answers that ignored paging");

    sim.set_faults(kaiten_sim::Faults::default());
    engine.sync_all().await.expect("full sync on a normal listing");
    assert_eq!(deleted_ids(&*store, EntityKind::Cards).await, vec![gone]);
}

/// The sweep guard (`SyncOptions::max_delete_share`): a Kaiten whose card listing ends early
/// without any sign the rules can see (it clamps pages to 7 cards, fewer than a clamp is ever
/// suspected) would have most of the company marked deleted. The sweep checks a sample by id,
/// finds the cards still there, marks nothing deleted, and the run fails saying why. Once the
/// listing is whole again, a real deletion of a third of the cards (all 404 when checked) goes
/// ahead.
pub async fn a_sweep_beyond_the_delete_share_is_checked_by_id(store: Arc<dyn Store>) {
    let sim = start_sim(SimConfig::small()).await;
    let engine = engine(&sim, &store);
    engine.sync_all().await.expect("first full sync");
    let reconciled = store.entity_state(EntityKind::Cards).await.unwrap().last_full_sync_at;
    sim.set_faults(kaiten_sim::Faults { cards_page_cap: Some(7), ..kaiten_sim::Faults::default() });
    sim.reset_request_log();
    let err = engine.sync_all().await.expect_err("the sweep is refused");
    let SyncError::DeletionsRefused { refused, max_share } = &err else { panic!("{err:?}") };
    assert_eq!(*max_share, 0.1);
    assert_eq!(refused.len(), 1, "{refused:?}");
    let refusal = &refused[0];
    assert_eq!(refusal.kind, EntityKind::Cards);
    assert_eq!(refusal.live, sim.card_ids().len());
    assert_eq!(refusal.missing, sim.card_ids().len() - 7 - 6, "7 live and 6 archived cards listed: {refusal:?}");
    assert_eq!(
        (refusal.checked, refusal.still_there.len()),
        (kaiten_sync::DELETE_CHECK_SAMPLE, kaiten_sync::DELETE_CHECK_SAMPLE)
    );
    assert_eq!(card_detail_requests(&sim).len(), kaiten_sync::DELETE_CHECK_SAMPLE, "a sample, asked by id");
    let text = err.to_string();
    assert!(text.contains("refused to mark records deleted") && text.contains("cards"), "{text}");
    for kind in EntityKind::ALL {
        assert_eq!(deleted_ids(&*store, kind).await, Vec::<i64>::new(), "{kind}: nothing marked deleted");
    }
    let runs = store.recent_runs(1).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed, "a refused sweep fails the run");
    assert_eq!(runs[0].error.as_deref(), Some(text.as_str()));
    assert_eq!(store.entity_state(EntityKind::Cards).await.unwrap().last_full_sync_at, reconciled);
    // The rest of the run was stored: every other kind was reconciled.
    let users = store.entity_state(EntityKind::Users).await.unwrap();
    assert!(users.last_full_sync_at > reconciled, "users were listed and reconciled");

    // A real deletion of a third of the cards: checked by id, all gone, marked.
    sim.set_faults(kaiten_sim::Faults::default());
    let gone: Vec<i64> = sim.card_ids().into_iter().step_by(3).collect();
    for id in &gone {
        sim.delete_card(*id);
    }
    let report = engine.sync_all().await.expect("a confirmed large deletion goes ahead");
    assert_eq!(deleted_ids(&*store, EntityKind::Cards).await, gone);
    assert_eq!(report.stats(EntityKind::Cards).deleted, gone.len() as u64);
    // With the check off (1.0), nothing is asked by id.
    let unchecked = SyncEngine::new(sim_client(&sim), store.clone())
        .with_options(SyncOptions::default().with_max_delete_share(1.0));
    let more: Vec<i64> = sim.card_ids().into_iter().take(10).collect();
    for id in &more {
        sim.delete_card(*id);
    }
    sim.reset_request_log();
    let report = unchecked.sync_all().await.expect("unchecked sweep");
    assert_eq!(report.stats(EntityKind::Cards).deleted, more.len() as u64);
    assert_eq!(card_detail_requests(&sim), Vec::<String>::new());
}

// ---- API faults (issue 12) ----

/// Every kind of API fault the simulator injects, `rate` in all: 5xx, dropped connections, JSON
/// bodies cut short and 429 storms (each 429 followed by two more), a quarter each.
pub fn api_faults(rate: f64) -> kaiten_sim::Faults {
    kaiten_sim::Faults {
        server_error_rate: rate / 4.0,
        drop_rate: rate / 4.0,
        truncate_rate: rate / 4.0,
        rate_limited_rate: rate / 4.0 / 3.0,
        rate_limited_burst: 2,
        rate_limited_retry_after: Duration::from_millis(5),
        ..kaiten_sim::Faults::default()
    }
}

/// A client that outlasts [`api_faults`] at 30%: 20 attempts a request, millisecond backoffs (a
/// request failing 20 times in a row at 30% faults: about 1 in 10^9).
pub fn patient_client(sim: &Simulator) -> KaitenClient {
    KaitenClient::builder()
        .base_url(sim.base_url())
        .token(sim.token())
        .rate_limit(None)
        .timeout(Duration::from_secs(10))
        .retry_policy(RetryPolicy {
            max_attempts: 20,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_total_wait: Duration::from_secs(5),
        })
        .build()
        .expect("valid client")
}

/// Asserts no run of the run log is still `running`.
pub async fn assert_no_run_running(store: &dyn Store) {
    let runs = store.recent_runs(1000).await.unwrap();
    let running: Vec<i64> = runs.iter().filter(|r| r.status == RunStatus::Running).map(|r| r.id).collect();
    assert_eq!(running, Vec::<i64>::new(), "no run is left running");
}

/// Applies the inbox until it is empty (failed entries are retried after their backoff); panics
/// if that takes more than 500 drains.
pub async fn drain_until_empty(handler: &kaiten_sync::WebhookHandler) -> u64 {
    let mut failed = 0;
    for _ in 0..500 {
        failed += handler.drain().await.expect("a drain fails only when the database does").failed;
        let stats = handler.store().inbox_stats().await.unwrap();
        assert_eq!(stats.failed, 0, "no entry gave up");
        if stats.pending == 0 {
            return failed;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    panic!("the inbox did not empty in 500 drains");
}

/// API faults at 10% and then 30% of requests (every kind: 5xx, dropped connections, truncated
/// bodies, 429 storms) during a full sync, an incremental sync and webhook processing: each run
/// succeeds through retries, and after each the mirror is exactly the simulator's company; no run
/// is left `running`. Webhook fetches go through a client with 2 attempts: entries that fail
/// (all of them in one drain while Kaiten answers only 5xx) are retried by the inbox's backoff.
pub async fn api_faults_leave_the_mirror_exact(store: Arc<dyn Store>) {
    use kaiten_sync::{WebhookEvent, WebhookHandler, WebhookOptions};
    let sim = start_sim(SimConfig::small()).await;
    let engine = SyncEngine::new(patient_client(&sim), store.clone());
    let webhook_client = KaitenClient::builder()
        .base_url(sim.base_url())
        .token(sim.token())
        .rate_limit(None)
        .retry_policy(RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_total_wait: Duration::from_secs(1),
        })
        .build()
        .unwrap();
    let options = WebhookOptions::default().with_debounce(Duration::ZERO).with_retries(
        40,
        Duration::from_millis(1),
        Duration::from_millis(4),
    );
    let handler = WebhookHandler::applier(webhook_client, store.clone(), options);
    let (mut retries, mut webhook_failures) = (0, 0);
    for (round, rate) in [0.1, 0.3].into_iter().enumerate() {
        sim.set_faults(api_faults(rate));
        let report = engine.sync_all().await.unwrap_or_else(|e| panic!("full sync at {rate}: {}", chain(&e)));
        retries += report.run.retries;
        assert_mirror_is_the_simulator(&sim, &*store, &[], &[]).await;

        // Cards created, renamed, moved and archived: found by an incremental run.
        let boards = sim.board_ids();
        let ids = sim.card_ids();
        sim.create_card(boards[round], &format!("created under {rate} faults"));
        sim.update_card(ids[round], json!({"title": format!("renamed under {rate} faults")}));
        let column = *sim.column_ids(boards[1]).last().unwrap();
        sim.move_card(ids[10 + round], column, None);
        sim.archive_card(ids[20 + round]);
        let report = engine.sync_incremental().await.unwrap_or_else(|e| panic!("incremental at {rate}: {}", chain(&e)));
        retries += report.run.retries;
        assert_mirror_is_the_simulator(&sim, &*store, &[], &[]).await;

        // Webhook deliveries: cards changed and one deleted, refetched through the faults.
        let changed: Vec<i64> = ids[30..36].to_vec();
        for id in &changed {
            sim.update_card(*id, json!({"title": format!("hooked {id} under {rate} faults")}));
        }
        let deleted = ids[40 + round];
        sim.delete_card(deleted);
        for id in changed.iter().chain([&deleted]) {
            let body = json!({"event": "card:update", "data": {"old": {"id": id}, "changes": {"title": "x"}}});
            handler.accept(WebhookEvent::parse(body.to_string().as_bytes()).unwrap()).await.unwrap();
        }
        // Kaiten down for one drain: every entry fails and is kept for a retry.
        sim.set_faults(kaiten_sim::Faults { server_error_rate: 1.0, ..kaiten_sim::Faults::default() });
        let failed = handler.drain().await.expect("entries fail, the drain does not").failed;
        assert_eq!(failed, changed.len() as u64 + 1, "every entry failed");
        webhook_failures += failed;
        sim.set_faults(api_faults(rate));
        drain_until_empty(&handler).await;
        for id in &changed {
            let detail = sim.card_detail_json(*id).unwrap();
            assert_eq!(
                stored(&*store, EntityKind::Cards, *id).await.raw,
                detail,
                "card {id} as GET /cards/{id} serves it"
            );
        }
        assert!(stored(&*store, EntityKind::Cards, deleted).await.deleted_at.is_some(), "a 404 marks the card deleted");

        // Changed again, the incremental run stores them in the listing's shape: all exact.
        for id in &changed {
            sim.update_card(*id, json!({"title": format!("listed {id} under {rate} faults")}));
        }
        let report = engine.sync_incremental().await.unwrap_or_else(|e| panic!("incremental at {rate}: {}", chain(&e)));
        retries += report.run.retries;
        assert_mirror_is_the_simulator(&sim, &*store, &[], &[]).await;
        assert_no_run_running(&*store).await;
    }
    assert!(retries > 0, "faults were injected and retried");
    assert!(webhook_failures > 0, "webhook fetches failed and were retried by the inbox");
    let runs = store.recent_runs(1000).await.unwrap();
    assert!(runs.iter().all(|r| r.status != RunStatus::Running));
    assert!(runs.iter().filter(|r| r.kind != RunKind::Webhook).all(|r| r.status == RunStatus::Succeeded));
}

/// Generates one `#[tokio::test]` per end-to-end scenario. `$make` is an async fn returning
/// `(Arc<dyn Store>, guard)`: a fresh, migrated, empty store and whatever keeps it alive. With
/// `engine_conformance_tests!(optional make)`, `$make` returns `Option<(Arc<dyn Store>, guard)>`
/// and `None` ends the test at once (a skip the maker reports itself).
#[macro_export]
macro_rules! engine_conformance_tests {
    (optional $make:path) => {
        $crate::engine_conformance_tests!(@names [optional $make]);
    };
    ($make:path) => {
        $crate::engine_conformance_tests!(@names [required $make]);
    };
    (@names $how:tt) => {
        $crate::engine_conformance_tests!(@tests $how;
            full_sync_mirrors_the_simulator,
            incremental_picks_up_exactly_the_changes,
            incremental_with_nothing_changed_writes_nothing,
            incremental_backfill_stores_members_of_changed_cards,
            full_sync_marks_missing_records_deleted,
            selective_sync_touches_only_the_selection,
            failed_run_resumes_and_loses_nothing,
            failed_first_run_then_rerun_equals_a_clean_run,
            concurrent_runs_are_serialized,
            card_on_an_unknown_board_fetches_its_parents,
            bad_token_fails_clearly,
            unreachable_kaiten_fails_clearly,
            html_instead_of_json_fails_clearly,
            one_incremental_sync_mirrors_every_kind_of_change,
            structure_is_repolled_within_its_max_age,
            an_unknown_board_or_space_is_refused_before_anything_is_written,
            full_sync_marks_vanished_structure_deleted,
            a_clamped_card_page_size_loses_nothing,
            a_card_listing_ignoring_offset_is_walked_by_updated,
            a_card_listing_ignoring_paging_fails_and_deletes_nothing,
            a_sweep_beyond_the_delete_share_is_checked_by_id,
            api_faults_leave_the_mirror_exact,
        );
    };
    (@tests [required $make:path]; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make().await;
                $crate::engine::$name(store).await;
            }
        )*
    };
    (@tests [optional $make:path]; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((store, _guard)) = $make().await else { return };
                $crate::engine::$name(store).await;
            }
        )*
    };
}
