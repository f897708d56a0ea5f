//! The Store conformance suite: one public async fn per behaviour of the [`Store`] contract, run by
//! the tests of every store (memory, SQLite, Postgres) through [`crate::store_conformance_tests!`].
//!
//! A store's test file holds one line:
//! ```ignore
//! kaiten_sync_testkit::store_conformance_tests!(make_store);
//! ```
//! where `async fn make_store() -> H` returns a fresh, migrated, empty store `H` such that `&*h`
//! is a `&S` with `S: Store` (an `Arc<S>`, a `Box<dyn Store>`, or a guard that derefs to the store
//! and cleans up its database when dropped).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use kaiten_client::{BoardId, CardType, PropertyDefinition, Record, SelectValue, Tag, User};
use serde_json::json;

use crate::fixtures::{self, board, card, card_json, cards, column, epoch, lane, space};
pub use crate::inbox::{
    inbox_claims_due_entries_under_a_lease, inbox_coalesces_deliveries_per_entity,
    inbox_concurrent_claims_are_disjoint, inbox_failures_back_off_then_stay_failed,
    inbox_finish_removes_unless_redelivered, webhook_runs_are_interrupted_and_old_runs_pruned,
};
use kaiten_sync::schema::{EntityKind, SqlValue};
use kaiten_sync::store::{
    Batch, EntityState, EntityStats, LockAttempt, Page, PageOutcome, RunKind, RunRecord, RunStatus, Scope, Store,
    StoreError,
};

pub(crate) fn at(seconds: i64) -> DateTime<Utc> {
    epoch() + chrono::Duration::seconds(seconds)
}

fn page(batch: Batch, synced_at: i64) -> Page {
    Page { batch, sweep: None, state: None, synced_at: at(synced_at) }
}

async fn apply(store: &dyn Store, page: Page) -> PageOutcome {
    store.apply_page(&page).await.unwrap_or_else(|e| panic!("apply_page failed on {}: {e}", store.backend()))
}

fn outcome(inserted: u64, updated: u64, unchanged: u64) -> PageOutcome {
    PageOutcome { inserted, updated, unchanged }
}

fn count_of(counts: &[kaiten_sync::store::TableCount], table: &str) -> (i64, i64) {
    let c = counts.iter().find(|c| c.table == table).unwrap_or_else(|| panic!("counts() lacks table {table}"));
    (c.live, c.deleted)
}

/// A card's links: its id, tag ids and members (`(user_id, type)`).
type CardLinks = (i64, Vec<i64>, Vec<(i64, i64)>);

/// Everything a store holds that `migrate` must leave alone: every row of every kind, card links,
/// per-kind states, the run log and the webhook inbox.
#[derive(Debug, PartialEq)]
struct Snapshot {
    counts: Vec<kaiten_sync::store::TableCount>,
    rows: Vec<kaiten_sync::store::StoredRecord>,
    links: Vec<CardLinks>,
    states: Vec<EntityState>,
    runs: Vec<RunRecord>,
    inbox: Vec<kaiten_sync::inbox::InboxEntry>,
}

async fn snapshot(store: &dyn Store) -> Snapshot {
    let mut rows = Vec::new();
    for kind in EntityKind::ALL {
        for id in store.ids(kind, true).await.unwrap() {
            rows.push(store.get(kind, id).await.unwrap().expect("a listed id is stored"));
        }
    }
    let mut links = Vec::new();
    for id in store.ids(EntityKind::Cards, true).await.unwrap() {
        links.push((id, store.card_tag_ids(id).await.unwrap(), store.card_members(id).await.unwrap()));
    }
    Snapshot {
        counts: store.counts().await.unwrap(),
        rows,
        links,
        states: store.entity_states().await.unwrap(),
        runs: store.recent_runs(100).await.unwrap(),
        inbox: store.inbox_entries(false, 100).await.unwrap(),
    }
}

/// `migrate` may run again, any number of times, on a migrated store that holds data (one
/// record of every kind with its parents, card tags and members, a card marked deleted, a state
/// with a resume point, a finished run, an inbox entry): everything survives unchanged, and the
/// store keeps working afterwards.
pub async fn migrate_is_idempotent(store: &dyn Store) {
    let user =
        User::from_value(json!({"id": 3, "full_name": "Ann Lee", "role": 2, "updated": fixtures::stamp(5)})).unwrap();
    let card_type = CardType::from_value(json!({"id": 4, "name": "Bug", "updated": fixtures::stamp(5)})).unwrap();
    let tag = Tag::from_value(json!({"id": 5, "name": "urgent", "updated": fixtures::stamp(5)})).unwrap();
    let prop = PropertyDefinition::from_value(json!({"id": 6, "name": "Priority", "type": "select",
        "updated": fixtures::stamp(5)}))
    .unwrap();
    let value = SelectValue::from_value(json!({"id": 7, "custom_property_id": 6, "value": "High",
        "updated": fixtures::stamp(5)}))
    .unwrap();
    // Cards of board 10 sit in column 1001 and lane 1050 (see `fixtures::card_json`): parents
    // first, so the data is valid with foreign keys on.
    let batches = vec![
        Batch::Spaces(vec![space(1)]),
        Batch::Users(vec![user]),
        Batch::CardTypes(vec![card_type]),
        Batch::Tags(vec![tag]),
        Batch::PropertyDefinitions(vec![prop]),
        Batch::SelectValues(vec![value]),
        Batch::Boards(vec![board(10, 1)]),
        Batch::Columns(vec![column(1001, 10, None)]),
        Batch::Lanes(vec![lane(1050, 10)]),
        Batch::Cards(vec![detail_card(1, 100, 1, &[(3, 2), (12, 1)]), card(2, 10, 100, 1), card(3, 10, 100, 1)]),
    ];
    for batch in batches {
        apply(store, page(batch, 1000)).await;
    }
    assert_eq!(store.mark_deleted(EntityKind::Cards, &[3], at(2000)).await.unwrap(), 1);
    let mut state = EntityState::new(EntityKind::Cards);
    state.cursor = Some(at(100));
    state.last_full_sync_at = Some(at(1000));
    state.resume = Some(r#"{"full":{"walk":1}}"#.to_owned());
    state.row_count = Some(2);
    store.save_entity_state(&state).await.unwrap();
    let mut run = RunRecord::start(RunKind::Full, EntityKind::ALL.to_vec(), None, at(900));
    run.id = store.start_run(&run).await.unwrap();
    run.status = RunStatus::Succeeded;
    run.finished_at = Some(at(1000));
    run.stats.insert(EntityKind::Cards, EntityStats { pages: 1, fetched: 3, inserted: 3, ..EntityStats::default() });
    store.update_run(&run).await.unwrap();
    let note = kaiten_sync::inbox::Notification {
        kind: EntityKind::Cards,
        entity_id: 2,
        parent_id: Some(10),
        event: "card:update".into(),
    };
    store.inbox_push(&[note], at(1500), at(1501)).await.unwrap();
    let before = snapshot(store).await;
    assert_eq!(count_of(&before.counts, "cards"), (2, 1));
    assert_eq!(count_of(&before.counts, "card_members"), (2, 0));
    assert_eq!(before.inbox.len(), 1);

    store.migrate().await.expect("second migrate succeeds");
    store.migrate().await.expect("third migrate succeeds");
    assert_eq!(snapshot(store).await, before, "migrate changed the data it found");

    // And the store still takes writes.
    apply(store, page(Batch::Cards(vec![card(2, 10, 200, 2)]), 3000)).await;
    assert_eq!(
        store.get(EntityKind::Cards, 2).await.unwrap().unwrap().value(EntityKind::Cards, "version"),
        Some(&SqlValue::Int(2))
    );
}

/// A new store has no rows, no runs, and fresh states.
pub async fn empty_store_is_empty(store: &dyn Store) {
    let counts = store.counts().await.unwrap();
    for kind in EntityKind::ALL {
        assert_eq!(count_of(&counts, kind.table().name), (0, 0), "{kind}");
    }
    assert_eq!(count_of(&counts, "card_tags"), (0, 0));
    assert!(store.recent_runs(10).await.unwrap().is_empty());
    assert_eq!(store.entity_state(EntityKind::Cards).await.unwrap(), EntityState::new(EntityKind::Cards));
    assert_eq!(store.get(EntityKind::Cards, 1).await.unwrap(), None);
    assert!(store.ids(EntityKind::Cards, true).await.unwrap().is_empty());
}

/// Applying the same page twice inserts once and then reports everything unchanged.
pub async fn upsert_is_idempotent(store: &dyn Store) {
    let batch = Batch::Cards(cards(1, 50, 10, 100));
    assert_eq!(apply(store, page(batch.clone(), 1000)).await, outcome(50, 0, 0));
    assert_eq!(apply(store, page(batch.clone(), 2000)).await, outcome(0, 0, 50));
    let stored = store.get(EntityKind::Cards, 7).await.unwrap().expect("card 7 stored");
    assert_eq!(stored.synced_at, at(1000), "an unchanged row keeps its synced_at");
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), (1..=50).collect::<Vec<_>>());
    assert_eq!(count_of(&store.counts().await.unwrap(), "cards"), (50, 0));
}

/// Every kind round-trips: typed columns read back equal to what was written, raw JSON too.
pub async fn every_kind_round_trips(store: &dyn Store) {
    let user = User::from_value(json!({"id": 3, "uid": "u3", "full_name": "Ann Lee", "username": "ann",
        "email": "ann@example.com", "activated": true, "virtual": false, "created": fixtures::stamp(0),
        "updated": fixtures::stamp(5), "lng": "en", "unknown_field": [1, {"a": null}]}))
    .unwrap();
    let card_type = CardType::from_value(json!({"id": 4, "name": "Bug", "letter": "B", "color": 3, "archived": false,
        "updated": fixtures::stamp(5)}))
    .unwrap();
    let tag = Tag::from_value(json!({"id": 5, "name": "urgent", "color": 2, "updated": fixtures::stamp(5)})).unwrap();
    let prop = PropertyDefinition::from_value(json!({"id": 6, "name": "Priority", "type": "select", "condition": 1,
        "multi_select": false, "updated": fixtures::stamp(5)}))
    .unwrap();
    let value = SelectValue::from_value(json!({"id": 7, "custom_property_id": 6, "value": "High", "color": 1,
        "condition": 1, "sort_order": 2.5, "updated": fixtures::stamp(5)}))
    .unwrap();
    let mut sub = column(102, 10, Some(101));
    sub.board_id = Some(BoardId(10));
    let batches = vec![
        Batch::Spaces(vec![space(1)]),
        Batch::Users(vec![user]),
        Batch::CardTypes(vec![card_type]),
        Batch::Tags(vec![tag]),
        Batch::PropertyDefinitions(vec![prop]),
        Batch::SelectValues(vec![value]),
        Batch::Boards(vec![board(10, 1)]),
        Batch::Columns(vec![column(101, 10, None), sub]),
        Batch::Lanes(vec![lane(150, 10)]),
        Batch::Cards(vec![card(1, 10, 100, 3)]),
    ];
    for batch in batches {
        let kind = batch.kind();
        let n = batch.len() as u64;
        assert_eq!(apply(store, page(batch.clone(), 1000)).await, outcome(n, 0, 0), "{kind}");
        for row in batch.rows() {
            let stored = store.get(kind, row.id).await.unwrap().unwrap_or_else(|| panic!("{kind} {} missing", row.id));
            assert_eq!(stored.id, row.id);
            assert_eq!(&stored.raw, row.raw, "{kind} raw JSON");
            assert_eq!(stored.values.len(), kind.table().columns.len(), "{kind} column count");
            for (i, (got, want)) in stored.values.iter().zip(&row.values).enumerate() {
                assert_eq!(got, want, "{kind}.{}", kind.table().columns[i].name);
            }
            assert_eq!(stored.synced_at, at(1000));
            assert_eq!(stored.deleted_at, None);
        }
    }
    let stored = store.get(EntityKind::Cards, 1).await.unwrap().unwrap();
    assert_eq!(stored.value(EntityKind::Cards, "board_id"), Some(&SqlValue::Int(10)));
    assert_eq!(stored.value(EntityKind::Cards, "version"), Some(&SqlValue::Int(3)));
    assert_eq!(
        stored.value(EntityKind::Cards, "updated"),
        Some(&SqlValue::Time(Utc.with_ymd_and_hms(2025, 1, 1, 0, 1, 40).unwrap()))
    );
}

/// Every typed column of every kind reads back, by name, the value of the field it is named after:
/// records with a different value in each field ([`fixtures::column_probes`]) are written in
/// dependency order and each column is compared with the value the probe expects, so a value
/// written to (or read from) the wrong column fails.
pub async fn every_column_round_trips_by_name(store: &dyn Store) {
    for probe in fixtures::column_probes() {
        let kind = probe.kind;
        apply(store, page(probe.batch(), 1000)).await;
        let stored = store.get(kind, probe.id).await.unwrap().unwrap_or_else(|| panic!("{kind} {} missing", probe.id));
        assert_eq!(stored.raw, probe.json(), "{kind} raw JSON");
        for column in &probe.columns {
            assert_eq!(
                stored.value(kind, column.column),
                Some(&column.value),
                "{kind} {}: {}",
                probe.id,
                column.column
            );
        }
    }
}

/// A record with a later `updated` replaces the stored one; an earlier one never does.
pub async fn newer_wins_and_older_never_overwrites(store: &dyn Store) {
    apply(store, page(Batch::Cards(vec![card(1, 10, 100, 1)]), 1000)).await;
    let mut newer = card_json(1, 10, 200, 2);
    newer["title"] = json!("renamed");
    let newer = kaiten_client::Card::from_value(newer).unwrap();
    assert_eq!(apply(store, page(Batch::Cards(vec![newer]), 2000)).await, outcome(0, 1, 0));
    let stored = store.get(EntityKind::Cards, 1).await.unwrap().unwrap();
    assert_eq!(stored.raw["title"], "renamed");
    assert_eq!(stored.synced_at, at(2000));

    let mut older = card_json(1, 10, 150, 5);
    older["title"] = json!("stale");
    let older = kaiten_client::Card::from_value(older).unwrap();
    assert_eq!(apply(store, page(Batch::Cards(vec![older]), 3000)).await, outcome(0, 0, 1));
    let stored = store.get(EntityKind::Cards, 1).await.unwrap().unwrap();
    assert_eq!(stored.raw["title"], "renamed", "an older record must not overwrite a newer one");
    assert_eq!(stored.synced_at, at(2000));
}

/// At equal `updated`, a higher `version` wins and a lower one loses; with no version, a changed
/// record at the same `updated` is written.
pub async fn version_breaks_ties(store: &dyn Store) {
    apply(store, page(Batch::Cards(vec![card(1, 10, 100, 5)]), 1000)).await;
    let mut lower = card_json(1, 10, 100, 4);
    lower["title"] = json!("lower version");
    let lower = kaiten_client::Card::from_value(lower).unwrap();
    assert_eq!(apply(store, page(Batch::Cards(vec![lower]), 2000)).await, outcome(0, 0, 1));
    let mut higher = card_json(1, 10, 100, 6);
    higher["title"] = json!("higher version");
    let higher = kaiten_client::Card::from_value(higher).unwrap();
    assert_eq!(apply(store, page(Batch::Cards(vec![higher]), 2000)).await, outcome(0, 1, 0));
    assert_eq!(store.get(EntityKind::Cards, 1).await.unwrap().unwrap().raw["title"], "higher version");

    let tag = |name: &str| Tag::from_value(json!({"id": 9, "name": name, "updated": fixtures::stamp(5)})).unwrap();
    apply(store, page(Batch::Tags(vec![tag("a")]), 1000)).await;
    assert_eq!(apply(store, page(Batch::Tags(vec![tag("b")]), 2000)).await, outcome(0, 1, 0));
    assert_eq!(store.get(EntityKind::Tags, 9).await.unwrap().unwrap().raw["name"], "b");
}

/// Records without `updated` are compared by content alone.
pub async fn records_without_timestamps_update_on_change(store: &dyn Store) {
    let tag = |name: &str| Tag::from_value(json!({"id": 4, "name": name})).unwrap();
    assert_eq!(apply(store, page(Batch::Tags(vec![tag("a")]), 1000)).await, outcome(1, 0, 0));
    assert_eq!(apply(store, page(Batch::Tags(vec![tag("a")]), 1000)).await, outcome(0, 0, 1));
    assert_eq!(apply(store, page(Batch::Tags(vec![tag("b")]), 1000)).await, outcome(0, 1, 0));
}

/// A page with the same id twice writes the last occurrence once.
pub async fn duplicate_ids_in_a_page_write_once(store: &dyn Store) {
    let mut second = card_json(1, 10, 100, 1);
    second["title"] = json!("second");
    let batch = Batch::Cards(vec![card(1, 10, 100, 1), kaiten_client::Card::from_value(second).unwrap()]);
    assert_eq!(apply(store, page(batch, 1000)).await, outcome(1, 0, 0));
    assert_eq!(store.get(EntityKind::Cards, 1).await.unwrap().unwrap().raw["title"], "second");
}

/// The page's entity state is written with the page.
pub async fn page_and_state_commit_together(store: &dyn Store) {
    let mut state = EntityState::new(EntityKind::Cards);
    state.cursor = Some(at(100));
    state.resume = Some(r#"{"mode":"full","offset":100}"#.into());
    let mut p = page(Batch::Cards(cards(1, 100, 10, 100)), 1000);
    p.state = Some(state.clone());
    apply(store, p).await;
    assert_eq!(store.entity_state(EntityKind::Cards).await.unwrap(), state);
    // An empty page may carry state alone.
    let mut done = state.clone();
    done.resume = None;
    done.last_full_sync_at = Some(at(1001));
    let mut p = page(Batch::Cards(Vec::new()), 1001);
    p.state = Some(done.clone());
    assert_eq!(apply(store, p).await, outcome(0, 0, 0));
    assert_eq!(store.entity_state(EntityKind::Cards).await.unwrap(), done);
}

/// A page the store refuses leaves nothing behind: no rows of it, no state.
pub async fn rejected_page_leaves_nothing(store: &dyn Store) {
    let mut bad = card_json(2, 10, 100, 1);
    bad["id"] = json!(-5);
    let bad = kaiten_client::Card::from_value(bad).unwrap();
    let mut state = EntityState::new(EntityKind::Cards);
    state.cursor = Some(at(100));
    let mut p = page(Batch::Cards(vec![card(1, 10, 100, 1), bad]), 1000);
    p.state = Some(state);
    let err = store.apply_page(&p).await.expect_err("a record with a non-positive id is refused");
    assert!(matches!(err, StoreError::InvalidData { kind: EntityKind::Cards, .. }), "got {err:?}");
    assert_eq!(store.get(EntityKind::Cards, 1).await.unwrap(), None, "nothing of a refused page is written");
    assert_eq!(store.entity_state(EntityKind::Cards).await.unwrap(), EntityState::new(EntityKind::Cards));
    assert_eq!(store.card_tag_ids(1).await.unwrap(), Vec::<i64>::new());
}

/// A record that says it is deleted (condition 3) gets `deleted_at`; when it comes back live,
/// `deleted_at` is cleared.
pub async fn deleted_condition_sets_and_clears_deleted_at(store: &dyn Store) {
    apply(store, page(Batch::Cards(vec![card(1, 10, 100, 1)]), 1000)).await;
    let mut gone = card_json(1, 10, 200, 2);
    gone["condition"] = json!(3);
    let gone = kaiten_client::Card::from_value(gone).unwrap();
    assert_eq!(apply(store, page(Batch::Cards(vec![gone]), 2000)).await, outcome(0, 1, 0));
    let stored = store.get(EntityKind::Cards, 1).await.unwrap().unwrap();
    assert_eq!(stored.deleted_at, Some(at(2000)));
    assert_eq!(count_of(&store.counts().await.unwrap(), "cards"), (0, 1));
    assert!(store.ids(EntityKind::Cards, false).await.unwrap().is_empty());
    assert_eq!(store.ids(EntityKind::Cards, true).await.unwrap(), vec![1]);

    let back = card(1, 10, 300, 3);
    assert_eq!(apply(store, page(Batch::Cards(vec![back]), 3000)).await, outcome(0, 1, 0));
    assert_eq!(store.get(EntityKind::Cards, 1).await.unwrap().unwrap().deleted_at, None);
}

/// A full listing marks what it saw; `unseen` lists the rest; `mark_deleted` marks them once.
pub async fn sweep_finds_unseen_rows_and_marks_them_deleted(store: &dyn Store) {
    apply(store, page(Batch::Cards(cards(1, 5, 10, 100)), 1000)).await;
    let mut p = page(Batch::Cards(cards(1, 3, 10, 100)), 2000);
    p.sweep = Some(42);
    assert_eq!(apply(store, p).await, outcome(0, 0, 3), "unchanged rows are still marked seen");
    let mut unseen = store.unseen(EntityKind::Cards, 42, &Scope::All).await.unwrap();
    unseen.sort_unstable();
    assert_eq!(unseen, vec![4, 5]);
    assert_eq!(store.mark_deleted(EntityKind::Cards, &unseen, at(3000)).await.unwrap(), 2);
    assert_eq!(store.mark_deleted(EntityKind::Cards, &unseen, at(4000)).await.unwrap(), 0, "marked once");
    let stored = store.get(EntityKind::Cards, 4).await.unwrap().unwrap();
    assert_eq!(stored.deleted_at, Some(at(3000)), "the first deleted_at is kept");
    assert_eq!(stored.raw, card_json(4, 10, 100, 1), "a deleted row keeps its data");
    assert!(store.unseen(EntityKind::Cards, 42, &Scope::All).await.unwrap().is_empty(), "deleted rows are not unseen");
    assert_eq!(count_of(&store.counts().await.unwrap(), "cards"), (3, 2));
    assert_eq!(store.mark_deleted(EntityKind::Cards, &[999], at(3000)).await.unwrap(), 0, "unknown ids are ignored");
}

/// `unseen` stays inside its scope (the parent column of the table).
pub async fn unseen_respects_scope(store: &dyn Store) {
    apply(store, page(Batch::Cards(cards(1, 3, 10, 100)), 1000)).await;
    apply(store, page(Batch::Cards(cards(11, 3, 20, 100)), 1000)).await;
    apply(store, page(Batch::Boards(vec![board(10, 1), board(20, 2)]), 1000)).await;
    let mut p = page(Batch::Cards(cards(1, 2, 10, 100)), 2000);
    p.sweep = Some(7);
    apply(store, p).await;
    let mut in_board = store.unseen(EntityKind::Cards, 7, &Scope::Parents(vec![10])).await.unwrap();
    in_board.sort_unstable();
    assert_eq!(in_board, vec![3]);
    let mut everywhere = store.unseen(EntityKind::Cards, 7, &Scope::All).await.unwrap();
    everywhere.sort_unstable();
    assert_eq!(everywhere, vec![3, 11, 12, 13]);
    assert!(store.unseen(EntityKind::Cards, 7, &Scope::Parents(vec![])).await.unwrap().is_empty());
    let boards = store.unseen(EntityKind::Boards, 7, &Scope::Parents(vec![2])).await.unwrap();
    assert_eq!(boards, vec![20]);
    // A sweep that marked nothing lists every live row in scope (rows never swept included).
    let mut all = store.unseen(EntityKind::Cards, i64::MIN, &Scope::Parents(vec![20, 10])).await.unwrap();
    all.sort_unstable();
    assert_eq!(all, vec![1, 2, 3, 11, 12, 13]);
}

/// A card's tag links follow the card: replaced when the card is written, untouched otherwise.
pub async fn card_tags_follow_the_card(store: &dyn Store) {
    let with_tags = |updated: i64, tags: serde_json::Value| {
        let mut j = card_json(1, 10, updated, 1);
        j["tag_ids"] = tags;
        kaiten_client::Card::from_value(j).unwrap()
    };
    apply(store, page(Batch::Cards(vec![with_tags(100, json!([3, 1, 2]))]), 1000)).await;
    assert_eq!(store.card_tag_ids(1).await.unwrap(), vec![1, 2, 3]);
    apply(store, page(Batch::Cards(vec![with_tags(200, json!([4]))]), 2000)).await;
    assert_eq!(store.card_tag_ids(1).await.unwrap(), vec![4]);
    apply(store, page(Batch::Cards(vec![with_tags(150, json!([9]))]), 3000)).await;
    assert_eq!(store.card_tag_ids(1).await.unwrap(), vec![4], "an older card does not replace the links");
    apply(store, page(Batch::Cards(vec![with_tags(300, json!([]))]), 4000)).await;
    assert!(store.card_tag_ids(1).await.unwrap().is_empty());
    apply(store, page(Batch::Cards(cards(2, 2, 10, 100)), 5000)).await;
    assert_eq!(count_of(&store.counts().await.unwrap(), "card_tags"), (4, 0));
}

/// A card as `GET /cards/{id}` returns it: the list shape plus `members` (`(user, type)` pairs,
/// each member shaped like Kaiten's: the user's fields, `user_id`, `card_id`, `type`).
fn detail_card(id: i64, updated: i64, version: i64, members: &[(i64, i64)]) -> kaiten_client::Card {
    let mut j = card_json(id, 10, updated, version);
    j["members"] = members
        .iter()
        .map(|(user, kind)| json!({"id": user, "full_name": format!("User {user}"), "user_id": user, "card_id": id, "type": kind}))
        .collect();
    kaiten_client::Card::from_value(j).unwrap()
}

/// A card's members follow the card when it carries its member list (`GET /cards/{id}`):
/// replaced when the card row is written, never by an older card, and left alone by a card of the
/// list shape (no `members`) and by the card being marked deleted. `counts()` includes them.
pub async fn card_members_follow_detail_cards(store: &dyn Store) {
    assert_eq!(count_of(&store.counts().await.unwrap(), "card_members"), (0, 0));
    let p = page(Batch::Cards(vec![detail_card(1, 100, 1, &[(12, 1), (11, 2)]), detail_card(2, 100, 1, &[])]), 1000);
    assert_eq!(apply(store, p).await, outcome(2, 0, 0));
    assert_eq!(store.card_members(1).await.unwrap(), vec![(11, 2), (12, 1)]);
    assert!(store.card_members(2).await.unwrap().is_empty());
    assert!(store.card_members(3).await.unwrap().is_empty(), "an unknown card has no members");

    // The list shape (no `members`), newer: the card is rewritten, its members stay.
    assert_eq!(apply(store, page(Batch::Cards(vec![card(1, 10, 200, 2)]), 2000)).await, outcome(0, 1, 0));
    assert_eq!(store.card_members(1).await.unwrap(), vec![(11, 2), (12, 1)], "a list-shape card keeps the members");

    // A newer detail replaces them: added, removed and changed type.
    let newer = detail_card(1, 300, 3, &[(12, 2), (13, 1)]);
    assert_eq!(apply(store, page(Batch::Cards(vec![newer.clone()]), 3000)).await, outcome(0, 1, 0));
    assert_eq!(store.card_members(1).await.unwrap(), vec![(12, 2), (13, 1)]);

    // A stale detail (older `updated`, or the same `updated` with a lower version) changes nothing.
    let stale = detail_card(1, 250, 9, &[(14, 1)]);
    assert_eq!(apply(store, page(Batch::Cards(vec![stale]), 4000)).await, outcome(0, 0, 1));
    let lower = detail_card(1, 300, 2, &[(15, 1)]);
    assert_eq!(apply(store, page(Batch::Cards(vec![lower]), 4000)).await, outcome(0, 0, 1));
    assert_eq!(store.card_members(1).await.unwrap(), vec![(12, 2), (13, 1)], "an older card never replaces members");
    assert_eq!(store.get(EntityKind::Cards, 1).await.unwrap().unwrap().raw, newer.raw);

    // The same detail again is unchanged; members stay as they are.
    assert_eq!(apply(store, page(Batch::Cards(vec![newer]), 5000)).await, outcome(0, 0, 1));
    assert_eq!(store.card_members(1).await.unwrap(), vec![(12, 2), (13, 1)]);
    assert_eq!(count_of(&store.counts().await.unwrap(), "card_members"), (2, 0));

    // Marked deleted: the rows stay (like tag links); a join on `cards.deleted_at` hides them.
    store.mark_deleted(EntityKind::Cards, &[1], at(6000)).await.unwrap();
    assert_eq!(store.card_members(1).await.unwrap(), vec![(12, 2), (13, 1)]);

    // An empty member list empties them.
    assert_eq!(apply(store, page(Batch::Cards(vec![detail_card(1, 400, 4, &[])]), 7000)).await, outcome(0, 1, 0));
    assert!(store.card_members(1).await.unwrap().is_empty());
    assert_eq!(count_of(&store.counts().await.unwrap(), "card_members"), (0, 0));

    // A sweep page of detail cards writes members too, and a refused page writes none.
    let mut p = page(Batch::Cards(vec![detail_card(5, 100, 1, &[(21, 2), (22, 1), (23, 1)])]), 8000);
    p.sweep = Some(3);
    assert_eq!(apply(store, p).await, outcome(1, 0, 0));
    assert_eq!(store.card_members(5).await.unwrap(), vec![(21, 2), (22, 1), (23, 1)]);
    let mut bad = card_json(7, 10, 100, 1);
    bad["id"] = json!(-7);
    let p = page(
        Batch::Cards(vec![detail_card(6, 100, 1, &[(31, 2)]), kaiten_client::Card::from_value(bad).unwrap()]),
        9000,
    );
    store.apply_page(&p).await.expect_err("a record with a non-positive id is refused");
    assert!(store.card_members(6).await.unwrap().is_empty(), "nothing of a refused page is written");
    assert_eq!(count_of(&store.counts().await.unwrap(), "card_members"), (3, 0));
}

/// A record whose JSON arrives spelled differently (another key order, other spacing) but holds the
/// same value is unchanged: not counted as an update, however often it is listed. (A mirror written
/// by a release that stored re-serialised JSON sees exactly this on its next listing.)
pub async fn a_respelled_record_is_unchanged(store: &dyn Store) {
    use kaiten_client::Card;
    let from_text = |text: &str| Card::from_raw(serde_json::value::RawValue::from_string(text.to_owned()).unwrap());
    let sorted =
        from_text(r#"{"board_id":10,"id":1,"title":"T","updated":"2025-01-01T00:00:00Z","version":1}"#).unwrap();
    let kaitens = from_text(
        "{\"id\": 1, \"title\": \"T\", \"version\": 1, \"updated\": \"2025-01-01T00:00:00Z\", \"board_id\": 10}",
    )
    .unwrap();
    assert_eq!(sorted.raw, kaitens.raw, "the two texts hold one value");
    assert_eq!(apply(store, page(Batch::Cards(vec![sorted]), 1000)).await, outcome(1, 0, 0));
    for synced_at in [2000, 3000] {
        assert_eq!(apply(store, page(Batch::Cards(vec![kaitens.clone()]), synced_at)).await, outcome(0, 0, 1));
    }
    let stored = store.get(EntityKind::Cards, 1).await.unwrap().unwrap();
    assert_eq!(stored.raw, kaitens.raw);
    assert_eq!(stored.synced_at, at(1000), "an unchanged record keeps its synced_at");
    // A real change in the new spelling is an update.
    let changed =
        from_text("{\"id\": 1, \"title\": \"U\", \"version\": 2, \"updated\": \"2025-01-01T00:00:01Z\"}").unwrap();
    assert_eq!(apply(store, page(Batch::Cards(vec![changed]), 4000)).await, outcome(0, 1, 0));
    assert_eq!(store.get(EntityKind::Cards, 1).await.unwrap().unwrap().raw["title"], "U");
}

/// `existing_ids` answers which ids are stored, deleted ones included.
pub async fn existing_ids_include_deleted_rows(store: &dyn Store) {
    apply(store, page(Batch::Boards(vec![board(10, 1), board(20, 1)]), 1000)).await;
    store.mark_deleted(EntityKind::Boards, &[20], at(2000)).await.unwrap();
    let mut found = store.existing_ids(EntityKind::Boards, &[30, 20, 10, 10]).await.unwrap();
    found.sort_unstable();
    found.dedup();
    assert_eq!(found, vec![10, 20]);
    assert!(store.existing_ids(EntityKind::Boards, &[]).await.unwrap().is_empty());
    assert!(store.existing_ids(EntityKind::Lanes, &[10]).await.unwrap().is_empty());
}

/// Entity states round-trip, alone and all together.
pub async fn entity_states_round_trip(store: &dyn Store) {
    let mut cards_state = EntityState::new(EntityKind::Cards);
    cards_state.cursor = Some(Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap() + chrono::Duration::milliseconds(891));
    cards_state.last_full_sync_at = Some(at(10));
    cards_state.last_incremental_sync_at = Some(at(20));
    cards_state.row_count = Some(12345);
    cards_state.resume = Some("{\"walk\":2}".into());
    let mut spaces_state = EntityState::new(EntityKind::Spaces);
    spaces_state.last_full_sync_at = Some(at(5));
    store.save_entity_state(&cards_state).await.unwrap();
    store.save_entity_state(&spaces_state).await.unwrap();
    assert_eq!(store.entity_state(EntityKind::Cards).await.unwrap(), cards_state);
    assert_eq!(store.entity_states().await.unwrap(), vec![spaces_state.clone(), cards_state.clone()]);
    cards_state.resume = None;
    store.save_entity_state(&cards_state).await.unwrap();
    assert_eq!(store.entity_state(EntityKind::Cards).await.unwrap(), cards_state);
}

/// The run log keeps every field of a run; `recent_runs` is newest first.
pub async fn run_log_round_trips(store: &dyn Store) {
    let mut first = RunRecord::start(RunKind::Full, EntityKind::ALL.to_vec(), None, at(0));
    first.id = store.start_run(&first).await.unwrap();
    let mut second =
        RunRecord::start(RunKind::Selective, vec![EntityKind::Cards], Some("boards 10, 20".into()), at(100));
    second.id = store.start_run(&second).await.unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(store.recent_runs(10).await.unwrap(), vec![second.clone(), first.clone()]);

    let mut stats = BTreeMap::new();
    stats.insert(
        EntityKind::Cards,
        EntityStats { pages: 3, fetched: 250, inserted: 200, updated: 40, unchanged: 10, deleted: 2 },
    );
    stats.insert(EntityKind::Boards, EntityStats { pages: 1, fetched: 2, inserted: 2, ..Default::default() });
    first.stats = stats;
    first.status = RunStatus::Failed;
    first.finished_at = Some(at(60));
    first.api_requests = 17;
    first.retries = 2;
    first.error = Some("Kaiten rejected the API token (401 Unauthorized) on GET /cards".into());
    store.update_run(&first).await.unwrap();
    let runs = store.recent_runs(10).await.unwrap();
    assert_eq!(runs, vec![second.clone(), first.clone()]);
    assert_eq!(store.recent_runs(1).await.unwrap(), vec![second]);
}

/// A run that took the lock marks the runs its dead predecessors left `running` as interrupted.
pub async fn interrupted_runs_are_marked(store: &dyn Store) {
    let mut dead = RunRecord::start(RunKind::Full, vec![EntityKind::Cards], None, at(0));
    dead.id = store.start_run(&dead).await.unwrap();
    let mut done = RunRecord::start(RunKind::Incremental, vec![EntityKind::Cards], None, at(1));
    done.id = store.start_run(&done).await.unwrap();
    done.status = RunStatus::Succeeded;
    done.finished_at = Some(at(2));
    store.update_run(&done).await.unwrap();
    let mut webhook = RunRecord::start(RunKind::Webhook, vec![EntityKind::Cards], None, at(3));
    webhook.id = store.start_run(&webhook).await.unwrap();
    let mut live = RunRecord::start(RunKind::Full, vec![EntityKind::Cards], None, at(3));
    live.id = store.start_run(&live).await.unwrap();
    assert_eq!(store.interrupt_running_runs(live.id, "interrupted: process stopped").await.unwrap(), 1);
    let runs = store.recent_runs(10).await.unwrap();
    let by_id = |id: i64| runs.iter().find(|r| r.id == id).unwrap().clone();
    assert_eq!(by_id(dead.id).status, RunStatus::Interrupted);
    assert_eq!(by_id(dead.id).error.as_deref(), Some("interrupted: process stopped"));
    assert_eq!(by_id(done.id).status, RunStatus::Succeeded);
    assert_eq!(by_id(live.id).status, RunStatus::Running);
    assert_eq!(by_id(webhook.id).status, RunStatus::Running, "a webhook run in flight is not a dead sync");
}

/// One holder at a time; the holder may take it again; release frees it.
pub async fn lock_excludes_other_holders(store: &dyn Store) {
    let stale = Duration::from_secs(600);
    assert_eq!(store.try_lock("holder-a", stale).await.unwrap(), LockAttempt::Acquired);
    match store.try_lock("holder-b", stale).await.unwrap() {
        LockAttempt::Held(info) => assert_eq!(info.holder, "holder-a"),
        LockAttempt::Acquired => panic!("two holders got the lock"),
    }
    assert_eq!(store.try_lock("holder-a", stale).await.unwrap(), LockAttempt::Acquired, "re-entrant for its holder");
    assert!(store.heartbeat_lock("holder-a").await.unwrap(), "the holder still holds it");
    assert!(!store.heartbeat_lock("holder-b").await.unwrap(), "a non-holder learns it holds nothing");
    store.release_lock("holder-b").await.unwrap();
    assert!(
        matches!(store.try_lock("holder-b", stale).await.unwrap(), LockAttempt::Held(_)),
        "only the holder releases"
    );
    store.release_lock("holder-a").await.unwrap();
    assert!(!store.heartbeat_lock("holder-a").await.unwrap(), "a released lock is not held");
    assert_eq!(store.try_lock("holder-b", stale).await.unwrap(), LockAttempt::Acquired);
    store.release_lock("holder-b").await.unwrap();
}

/// Counts cover every entity table and `card_tags`, split live / deleted.
pub async fn counts_cover_every_table(store: &dyn Store) {
    apply(store, page(Batch::Spaces(vec![space(1), space(2)]), 1000)).await;
    apply(store, page(Batch::Cards(cards(1, 4, 10, 100)), 1000)).await;
    store.mark_deleted(EntityKind::Cards, &[2], at(2000)).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(count_of(&counts, "spaces"), (2, 0));
    assert_eq!(count_of(&counts, "cards"), (3, 1));
    assert_eq!(count_of(&counts, "card_tags"), (8, 0));
    for kind in EntityKind::ALL {
        count_of(&counts, kind.table().name);
    }
}

/// Large pages work (a full page of 100 cards many times over, and one page of 1,000).
pub async fn large_pages_work(store: &dyn Store) {
    for first in (1..=1000).step_by(100) {
        apply(store, page(Batch::Cards(cards(first, 100, 10, 100)), 1000)).await;
    }
    assert_eq!(apply(store, page(Batch::Cards(cards(1, 1000, 10, 200)), 2000)).await, outcome(0, 1000, 0));
    assert_eq!(count_of(&store.counts().await.unwrap(), "cards"), (1000, 0));
}

/// Generates one `#[tokio::test]` per conformance behaviour (see the module docs for `$make`).
///
/// `store_conformance_tests!(optional make_store)` takes a `$make` returning `Option<H>`: `None`
/// ends the test at once, for a store whose server a developer explicitly chose not to run (the
/// maker says so where `cargo test` shows it; see the Postgres store's tests).
#[macro_export]
macro_rules! store_conformance_tests {
    (optional $make:path) => {
        $crate::store_conformance_tests!(@names [optional $make]);
    };
    ($make:path) => {
        $crate::store_conformance_tests!(@names [required $make]);
    };
    (@names $how:tt) => {
        $crate::store_conformance_tests!(@tests $how;
            migrate_is_idempotent,
            empty_store_is_empty,
            upsert_is_idempotent,
            every_kind_round_trips,
            every_column_round_trips_by_name,
            newer_wins_and_older_never_overwrites,
            version_breaks_ties,
            records_without_timestamps_update_on_change,
            duplicate_ids_in_a_page_write_once,
            page_and_state_commit_together,
            rejected_page_leaves_nothing,
            deleted_condition_sets_and_clears_deleted_at,
            sweep_finds_unseen_rows_and_marks_them_deleted,
            unseen_respects_scope,
            card_tags_follow_the_card,
            card_members_follow_detail_cards,
            a_respelled_record_is_unchanged,
            existing_ids_include_deleted_rows,
            entity_states_round_trip,
            run_log_round_trips,
            interrupted_runs_are_marked,
            lock_excludes_other_holders,
            counts_cover_every_table,
            large_pages_work,
            inbox_coalesces_deliveries_per_entity,
            inbox_claims_due_entries_under_a_lease,
            inbox_finish_removes_unless_redelivered,
            inbox_failures_back_off_then_stay_failed,
            inbox_concurrent_claims_are_disjoint,
            webhook_runs_are_interrupted_and_old_runs_pruned,
        );
    };
    (@tests [required $make:path]; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = $make().await;
                $crate::store::$name(&*store).await;
            }
        )*
    };
    (@tests [optional $make:path]; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(store) = $make().await else { return };
                $crate::store::$name(&*store).await;
            }
        )*
    };
}
