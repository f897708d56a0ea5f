//! Webhook deliveries against a store, run by every store's tests through
//! [`crate::webhook_conformance_tests!`]: deliveries shaped like real Kaiten ones (partial `card:add`,
//! partial `card:update`, stale, for unknown ids, bursts), authentication, the durable inbox,
//! retries, the run log, and end to end with the simulator posting its webhooks over HTTP. Each
//! scenario takes a fresh, migrated, empty store.

use std::sync::Arc;
use std::time::Duration;

use kaiten_sim::{Faults, SimConfig, Simulator};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::engine::{sim_client, FlakyStore};
use kaiten_sync::inbox::InboxResult;
use kaiten_sync::schema::{EntityKind, SqlValue};
use kaiten_sync::store::{now_millis, RunKind, RunRecord, RunStatus, Store, StoredRecord};
use kaiten_sync::webhook::{
    hmac_sha256_hex, WebhookAuth, WebhookError, WebhookHandler, WebhookOptions, WebhookOutcome,
};
use kaiten_sync::SyncEngine;

/// The URL secret of the handlers these scenarios build.
pub const SECRET: &str = "wh-secret-0123456789abcdef";

async fn sim() -> Simulator {
    Simulator::start(SimConfig::small()).await.expect("simulator starts")
}

/// Options for tests: entries due at once, quick polling and retries.
pub fn test_options() -> WebhookOptions {
    WebhookOptions::default().with_debounce(Duration::ZERO).with_poll_every(Duration::from_millis(20)).with_retries(
        3,
        Duration::ZERO,
        Duration::ZERO,
    )
}

fn handler_with(sim: &Simulator, store: &Arc<dyn Store>, options: WebhookOptions) -> WebhookHandler {
    WebhookHandler::with_options(sim_client(sim), store.clone(), WebhookAuth::new(SECRET), options)
}

fn handler(sim: &Simulator, store: &Arc<dyn Store>) -> WebhookHandler {
    handler_with(sim, store, test_options())
}

/// A simulator, `store` holding a full sync of it, and a handler.
async fn synced(store: &Arc<dyn Store>) -> (Simulator, WebhookHandler) {
    let sim = sim().await;
    SyncEngine::new(sim_client(&sim), store.clone()).sync_all().await.expect("full sync");
    let handler = handler(&sim, store);
    (sim, handler)
}

async fn deliver(handler: &WebhookHandler, body: &Value) -> Result<WebhookOutcome, WebhookError> {
    handler.handle(SECRET, None, body.to_string().as_bytes()).await
}

async fn drain(handler: &WebhookHandler) -> kaiten_sync::DrainReport {
    handler.drain().await.expect("drain")
}

fn author() -> Value {
    json!({"id": 1, "full_name": "Webhook Author"})
}

/// `card:add` as Kaiten really sends it: a handful of fields, not the card.
fn card_add(card: &Value) -> Value {
    json!({"event": "card:add", "data": {
        "id": card["id"], "created": card["created"], "title": card["title"],
        "description": card["description"], "author": author(), "files": []
    }})
}

/// `card:update` as Kaiten sends it: the old values of the changed keys and the new ones, plus noise.
fn card_update(id: i64, old: Value, changes: Value) -> Value {
    let mut old = old;
    old["id"] = json!(id);
    let mut changes = changes;
    changes["updated"] = json!("2026-06-01T00:00:00.000Z");
    changes["counters_recalculated_at"] = json!("2026-06-01T00:00:00.000Z");
    json!({"event": "card:update", "data": {"old": old, "changes": changes, "author": author()}})
}

async fn stored(store: &Arc<dyn Store>, kind: EntityKind, id: i64) -> StoredRecord {
    store.get(kind, id).await.unwrap().unwrap_or_else(|| panic!("{kind} {id} is not stored"))
}

fn int(record: &StoredRecord, kind: EntityKind, column: &str) -> Option<i64> {
    match record.value(kind, column) {
        Some(SqlValue::Int(v)) => Some(*v),
        _ => None,
    }
}

fn text(record: &StoredRecord, kind: EntityKind, column: &str) -> Option<String> {
    match record.value(kind, column) {
        Some(SqlValue::Text(v)) => Some(v.clone()),
        _ => None,
    }
}

async fn webhook_runs(store: &Arc<dyn Store>) -> Vec<RunRecord> {
    store.recent_runs(1000).await.unwrap().into_iter().filter(|r| r.kind == RunKind::Webhook).collect()
}

fn requests_to(sim: &Simulator, part: &str) -> usize {
    sim.request_log().iter().filter(|r| r.contains(part)).count()
}

/// `GET /boards/{id}` returns every card of the board: a webhook never asks it.
fn assert_no_board_fetch(sim: &Simulator, board: i64) {
    let fetched = sim.request_log().into_iter().any(|r| {
        let path = r.split('?').next().unwrap_or_default().to_owned();
        path.ends_with(&format!("/boards/{board}"))
    });
    assert!(!fetched, "GET /boards/{board} was asked: {:?}", sim.request_log());
}

/// The card as stored equals what `GET /cards/{id}` answers, with its parents stored.
async fn assert_card_is_kaitens(sim: &Simulator, store: &Arc<dyn Store>, id: i64) {
    let detail = sim.card_detail_json(id).unwrap_or_else(|| panic!("card {id} exists in Kaiten"));
    let row = stored(store, EntityKind::Cards, id).await;
    assert_eq!(row.raw, detail, "card {id} is stored as Kaiten returns it");
    assert!(row.deleted_at.is_none(), "card {id} is live");
    let kind = EntityKind::Cards;
    for (column, parent) in
        [("board_id", EntityKind::Boards), ("column_id", EntityKind::Columns), ("lane_id", EntityKind::Lanes)]
    {
        let value = int(&row, kind, column).unwrap_or_else(|| panic!("card {id} has {column}"));
        assert_eq!(Some(value), detail[column].as_i64(), "card {id} {column}");
        stored(store, parent, value).await;
    }
    assert_eq!(int(&row, kind, "owner_id"), detail["owner_id"].as_i64());
    // The members Kaiten returned with the card (`members[]`, type 1 member / 2 responsible).
    let mut members: Vec<(i64, i64)> = detail["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["user_id"].as_i64().or(m["id"].as_i64())?, m["type"].as_i64().unwrap_or(1))))
        .collect();
    // A user listed twice counts once, with the higher type.
    members.sort_unstable_by_key(|(user, kind)| (*user, std::cmp::Reverse(*kind)));
    members.dedup_by_key(|m| m.0);
    assert_eq!(store.card_members(id).await.unwrap(), members, "card {id} members");
    assert_eq!(text(&row, kind, "title").as_deref(), detail["title"].as_str());
}

/// A real `card:add` carries a few fields: the card is fetched and stored whole, board, column,
/// lane and owner included, never the partial payload.
pub async fn a_partial_card_add_stores_the_card_as_kaiten_has_it(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
    let space = sim.space_ids()[0];
    // A new board too: the card's parents are fetched through the space's board list.
    let board = sim.add_board(space, "Born with a card");
    let card = sim.create_card(board, "Partial add");
    let id = card["id"].as_i64().unwrap();
    sim.reset_request_log();
    let out = deliver(&handler, &card_add(&card)).await.unwrap();
    assert_eq!(out.queued.as_ref().map(|n| (n.kind, n.entity_id)), Some((EntityKind::Cards, id)));
    assert!(store.get(EntityKind::Cards, id).await.unwrap().is_none(), "accepting fetches and stores nothing");
    assert!(sim.request_log().is_empty(), "accepting makes no request");
    let report = drain(&handler).await;
    assert_eq!((report.entries, report.applied, report.failed), (1, 1, 0));
    assert_card_is_kaitens(&sim, &store, id).await;
    assert_no_board_fetch(&sim, board);
    assert_eq!(requests_to(&sim, &format!("/boards/{board}/columns")), 1);
    assert!(store.inbox_entries(false, 10).await.unwrap().is_empty(), "the entry is done");
}

/// A delivery whose `changes` are older than what Kaiten has now stores what Kaiten has now.
pub async fn a_stale_card_update_stores_the_newest(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
    let id = sim.card_ids()[0];
    let before = sim.card_json(id).unwrap();
    sim.update_card(id, json!({"title": "First edit"}));
    sim.update_card(id, json!({"title": "Second edit"}));
    // The first edit's delivery arrives last.
    deliver(&handler, &card_update(id, json!({"title": before["title"]}), json!({"title": "First edit"})))
        .await
        .unwrap();
    drain(&handler).await;
    let row = stored(&store, EntityKind::Cards, id).await;
    assert_eq!(text(&row, EntityKind::Cards, "title").as_deref(), Some("Second edit"));
    assert_card_is_kaitens(&sim, &store, id).await;
}

/// A delivery for an id Kaiten does not have creates nothing; for a stored card Kaiten no longer
/// has (deleted cards vanish: 404), it marks the card deleted.
pub async fn a_delivery_for_an_unknown_or_deleted_card_creates_nothing(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
    deliver(&handler, &json!({"event": "card:update", "data": {"old": {"id": 987_654}, "changes": {"title": "x"}}}))
        .await
        .unwrap();
    let gone = sim.card_ids()[1];
    sim.delete_card(gone);
    deliver(&handler, &json!({"event": "comment:add", "data": {"id": 5, "card_id": gone, "text": "hi"}}))
        .await
        .unwrap();
    let report = drain(&handler).await;
    assert_eq!((report.applied, report.failed), (2, 0), "{report:?}");
    assert!(store.get(EntityKind::Cards, 987_654).await.unwrap().is_none(), "no row for an id Kaiten does not know");
    let row = stored(&store, EntityKind::Cards, gone).await;
    assert!(row.deleted_at.is_some(), "a card Kaiten answers 404 for is marked deleted");
    let run = &webhook_runs(&store).await[0];
    assert_eq!(run.stats.get(&EntityKind::Cards).map(|s| (s.inserted, s.deleted)), Some((0, 1)));
}

/// Twenty deliveries for one card cost one fetch when drained together, and a delivery arriving
/// during the fetch costs one more (so a burst within the coalescing window costs at most two).
pub async fn deliveries_for_one_card_coalesce(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
    let id = sim.card_ids()[2];
    for i in 0..20 {
        sim.update_card(id, json!({"title": format!("Burst {i}")}));
        deliver(&handler, &card_update(id, json!({}), json!({"title": format!("Burst {i}")}))).await.unwrap();
    }
    let entries = store.inbox_entries(false, 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].deliveries, 20);
    sim.reset_request_log();
    let report = drain(&handler).await;
    assert_eq!(report.entries, 1);
    assert_eq!(requests_to(&sim, &format!("/cards/{id}")), 1, "{:?}", sim.request_log());
    assert_card_is_kaitens(&sim, &store, id).await;

    // With the worker running and a one-second window, a burst spread over a second costs at
    // most two fetches.
    let windowed = handler_with(&sim, &store, test_options().with_debounce(Duration::from_millis(1000)));
    let (stop, task) = start_worker(&windowed);
    sim.reset_request_log();
    for i in 0..20 {
        sim.update_card(id, json!({"title": format!("Second burst {i}")}));
        deliver(&windowed, &card_update(id, json!({}), json!({"title": format!("Second burst {i}")}))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(45)).await;
    }
    wait_for_empty_inbox(&store, Duration::from_secs(15)).await;
    let fetches = requests_to(&sim, &format!("/cards/{id}"));
    assert!((1..=2).contains(&fetches), "{fetches} fetches for 20 deliveries within a second");
    let _ = stop.send(());
    task.await.unwrap();
    assert_card_is_kaitens(&sim, &store, id).await;
}

/// Runs `handler`'s worker in a task until the returned sender is used (or dropped).
fn start_worker(handler: &WebhookHandler) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let worker = handler.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run_worker(async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, task)
}

async fn wait_for_empty_inbox(store: &Arc<dyn Store>, timeout: Duration) {
    // Empty, and the batch that emptied it has recorded its end (the inbox is settled first).
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let stats = store.inbox_stats().await.unwrap();
        let running = webhook_runs(store).await.iter().filter(|r| r.status == RunStatus::Running).count();
        if stats.pending == 0 && running == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the inbox did not settle: {stats:?}, {running} running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `tag:*` deliveries that name a card refetch the card (its tag links follow Kaiten); no
/// delivery deletes a tag.
pub async fn tag_deliveries_refetch_the_card_and_never_delete_a_tag(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
    let (id, tag) = sim
        .cards_json()
        .iter()
        .find_map(|c| {
            let tags = c["tag_ids"].as_array()?;
            Some((c["id"].as_i64()?, tags.first()?.as_i64()?))
        })
        .expect("a card with a tag");
    assert!(store.card_tag_ids(id).await.unwrap().contains(&tag));
    let remaining: Vec<i64> = sim.card_json(id).unwrap()["tag_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .filter(|t| *t != tag)
        .collect();
    sim.update_card(id, json!({"tag_ids": remaining}));
    deliver(&handler, &json!({"event": "tag:remove", "data": {"id": tag, "card_id": id, "author": author()}}))
        .await
        .unwrap();
    // A tag delivery without a card, for a tag on no card (so missing from /tags).
    let lonely = sim.add_tag("on no card");
    deliver(&handler, &json!({"event": "tag:add", "data": {"id": lonely, "name": "on no card"}})).await.unwrap();
    deliver(&handler, &json!({"event": "tag:remove", "data": {"id": tag}})).await.unwrap();
    let report = drain(&handler).await;
    assert_eq!(report.failed, 0, "{report:?}");
    let mut expected = remaining.clone();
    expected.sort_unstable();
    assert_eq!(store.card_tag_ids(id).await.unwrap(), expected, "the card's tag links follow Kaiten");
    assert!(stored(&store, EntityKind::Tags, tag).await.deleted_at.is_none(), "tag:remove never deletes the tag");
    assert!(store.get(EntityKind::Tags, lonely).await.unwrap().is_none(), "a tag Kaiten does not list is not made up");
}

/// `board:*` refetches the board through its space's listing, with its columns and lanes, never
/// through `GET /boards/{id}`; `space:*` refetches the spaces.
pub async fn board_and_space_deliveries_refresh_through_listings(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
    let space = sim.space_ids()[1];
    let board = sim.add_board(space, "Webhook board");
    sim.update_space(space, json!({"title": "Renamed space"}));
    sim.reset_request_log();
    deliver(
        &handler,
        &json!({"event": "board:add", "data": {"id": board, "title": "Webhook board", "author": author()}}),
    )
    .await
    .unwrap();
    deliver(
        &handler,
        &json!({"event": "space:update", "data": {"old": {"id": space}, "changes": {"title": "Renamed space"}}}),
    )
    .await
    .unwrap();
    let report = drain(&handler).await;
    assert_eq!((report.applied, report.failed), (2, 0));
    let expected = sim.boards_json().into_iter().find(|b| b["id"] == board).unwrap();
    assert_eq!(stored(&store, EntityKind::Boards, board).await.raw, expected);
    for column in sim.column_ids(board) {
        stored(&store, EntityKind::Columns, column).await;
    }
    for lane in sim.lane_ids(board) {
        stored(&store, EntityKind::Lanes, lane).await;
    }
    let space_row = stored(&store, EntityKind::Spaces, space).await;
    assert_eq!(text(&space_row, EntityKind::Spaces, "title").as_deref(), Some("Renamed space"));
    assert_no_board_fetch(&sim, board);
}

/// A wrong secret is 401 and a malformed body 400, naming the problem; neither reaches the inbox.
pub async fn bad_deliveries_are_refused_and_store_nothing(store: Arc<dyn Store>) {
    let sim = sim().await;
    let handler = handler(&sim, &store);
    let body = json!({"event": "card:add", "data": {"id": 1}}).to_string();
    for wrong in ["", "wrong", &SECRET[..SECRET.len() - 1], &format!("{SECRET}x")] {
        let err = handler.handle(wrong, None, body.as_bytes()).await.unwrap_err();
        assert!(matches!(err, WebhookError::Unauthorized), "{err:?}");
        assert_eq!(err.status(), 401);
        assert!(!err.to_string().contains(SECRET));
    }
    for (bad, says) in [
        (&b"<html>nope</html>"[..], "not JSON"),
        (br#"{"event":"card:add"}"#, "no \"data\""),
        (br#"{"event":"card:add","data":{"id":"x"}}"#, "not an integer id"),
        (br#"{"event":"card:update","data":{"old":{},"changes":{"title":"x"}}}"#, "data.old.id"),
    ] {
        let err = handler.handle(SECRET, None, bad).await.unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    // Events the mirror does not follow are accepted (2xx) and ignored.
    let out = deliver(&handler, &json!({"event": "automation:run", "data": {"id": 3}})).await.unwrap();
    assert!(out.ignored());
    assert!(store.inbox_entries(false, 10).await.unwrap().is_empty());
    assert!(store.recent_runs(10).await.unwrap().is_empty());
}

/// With an HMAC header configured, deliveries need both the URL secret and a valid signature.
pub async fn an_hmac_header_is_verified_when_configured(store: Arc<dyn Store>) {
    let sim = sim().await;
    let auth = WebhookAuth::new(SECRET).with_hmac_header("X-Signature");
    let handler = WebhookHandler::with_options(sim_client(&sim), store.clone(), auth, test_options());
    assert_eq!(handler.hmac_header(), Some("X-Signature"));
    let body = json!({"event": "card:add", "data": {"id": 7}}).to_string();
    let good = hmac_sha256_hex(SECRET.as_bytes(), body.as_bytes());
    assert!(matches!(handler.handle(SECRET, None, body.as_bytes()).await, Err(WebhookError::Unauthorized)));
    assert!(matches!(
        handler.handle(SECRET, Some(&hmac_sha256_hex(b"other", body.as_bytes())), body.as_bytes()).await,
        Err(WebhookError::Unauthorized)
    ));
    assert!(matches!(handler.handle("wrong", Some(&good), body.as_bytes()).await, Err(WebhookError::Unauthorized)));
    assert!(handler.handle(SECRET, Some(&format!("sha256={good}")), body.as_bytes()).await.is_ok());
    assert_eq!(store.inbox_entries(false, 10).await.unwrap().len(), 1);
}

/// Each drained batch is one webhook run in `sync_logs`, with counts and requests, not one run per
/// delivery.
pub async fn each_drained_batch_is_one_webhook_run(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
    let ids = sim.card_ids();
    for id in &ids[0..5] {
        sim.update_card(*id, json!({"size": 8}));
        for _ in 0..3 {
            deliver(&handler, &card_update(*id, json!({}), json!({"size": 8}))).await.unwrap();
        }
    }
    let report = drain(&handler).await;
    assert_eq!((report.batches, report.entries, report.applied), (1, 5, 5));
    let runs = webhook_runs(&store).await;
    assert_eq!(runs.len(), 1, "one run for 15 deliveries: {runs:?}");
    let run = &runs[0];
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.scope.as_deref(), Some("5 notifications: cards 5"));
    assert_eq!(run.stats[&EntityKind::Cards].fetched, 5);
    assert_eq!(run.stats[&EntityKind::Cards].updated, 5);
    assert_eq!(run.api_requests, 5);
    assert!(run.finished_at.is_some() && run.error.is_none());
    // Nothing due: a drain writes no run.
    assert_eq!(drain(&handler).await.batches, 0);
    assert_eq!(webhook_runs(&store).await.len(), 1);
}

/// The database failing while a batch is written: the entries stay in the inbox with the error,
/// the run is logged as failed; a database failing to record a delivery is a 503.
pub async fn a_database_failure_keeps_the_entry_and_is_logged(store: Arc<dyn Store>) {
    let (sim, _) = synced(&store).await;
    let flaky = Arc::new(FlakyStore::new(store.clone(), 0));
    let flaky_dyn: Arc<dyn Store> = flaky.clone();
    let handler = handler(&sim, &flaky_dyn);
    let card = sim.create_card(sim.board_ids()[0], "Doomed");
    let id = card["id"].as_i64().unwrap();
    deliver(&handler, &card_add(&card)).await.unwrap();
    let report = drain(&handler).await;
    assert_eq!((report.applied, report.failed), (0, 1));
    let run = &webhook_runs(&store).await[0];
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.as_deref().unwrap_or_default().contains("injected failure"), "{run:?}");
    let entry = &store.inbox_entries(false, 10).await.unwrap()[0];
    assert_eq!(entry.attempts, 1);
    assert!(entry.last_error.as_deref().unwrap_or_default().contains("injected failure"));
    assert!(store.get(EntityKind::Cards, id).await.unwrap().is_none());

    flaky.fail_inbox(true);
    let err = deliver(&handler, &card_add(&card)).await.unwrap_err();
    assert_eq!(err.status(), 503, "{err}");
}

/// Kaiten failing while entries are applied: they are retried with backoff, then kept as failed
/// and visible; a later delivery (or an operator) revives them.
pub async fn failing_fetches_are_retried_then_kept_as_failed(store: Arc<dyn Store>) {
    let sim = sim().await;
    let handler = handler(&sim, &store);
    let card = sim.create_card(sim.board_ids()[0], "Unreachable");
    let id = card["id"].as_i64().unwrap();
    deliver(&handler, &card_add(&card)).await.unwrap();
    sim.shutdown();
    for attempt in 1..=3 {
        // Zero backoff: a failed entry is due again a millisecond after its failure (never within
        // the drain that failed it).
        tokio::time::sleep(Duration::from_millis(2)).await;
        let report = drain(&handler).await;
        assert_eq!(report.failed, 1, "attempt {attempt}");
    }
    assert_eq!(drain(&handler).await.entries, 0, "given up after 3 attempts");
    let failed = store.inbox_entries(true, 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].entity_id, failed[0].attempts), (id, 3));
    assert!(failed[0].last_error.as_deref().unwrap_or_default().contains("Kaiten"), "{failed:?}");
    let stats = store.inbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed), (0, 1));
    assert!(store.get(EntityKind::Cards, id).await.unwrap().is_none());
    assert_eq!(store.inbox_retry_failed(None, now_millis()).await.unwrap(), 1);
    assert_eq!(store.inbox_stats().await.unwrap().pending, 1);
}

/// A delivery acknowledged but not applied when its process died (`kill -9`) is applied by the
/// next worker, and so is one a dead worker had claimed, once its lease expires.
pub async fn acknowledged_deliveries_survive_a_dead_worker(store: Arc<dyn Store>) {
    let (sim, first) = synced(&store).await;
    let ids = sim.card_ids();
    sim.update_card(ids[0], json!({"title": "Acknowledged, then the process died"}));
    sim.update_card(ids[1], json!({"title": "Claimed, then the process died"}));
    deliver(&first, &card_update(ids[0], json!({}), json!({"title": "x"}))).await.unwrap();
    deliver(&first, &card_update(ids[1], json!({}), json!({"title": "y"}))).await.unwrap();
    // The dead process had claimed one entry (its lease runs out in a second) and started a run.
    let now = now_millis();
    let claimed = store.inbox_claim("dead-worker", 1, now, now + chrono::Duration::seconds(1)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let mut dead_run = RunRecord::start(RunKind::Webhook, vec![EntityKind::Cards], None, now);
    dead_run.id = store.start_run(&dead_run).await.unwrap();
    drop(first);

    let second = handler_with(&sim, &store, test_options().with_lease(Duration::from_secs(1)));
    let report = drain(&second).await;
    assert_eq!(report.applied, 1, "the unclaimed entry is applied at once");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (stop, task) = start_worker(&second);
    wait_for_empty_inbox(&store, Duration::from_secs(10)).await;
    let _ = stop.send(());
    task.await.unwrap();
    for id in &ids[0..2] {
        assert_card_is_kaitens(&sim, &store, *id).await;
    }
    let run = store.recent_runs(100).await.unwrap().into_iter().find(|r| r.id == dead_run.id).unwrap();
    assert_eq!(run.status, RunStatus::Interrupted, "the dead process's run is marked interrupted");
    // A finished result for an entry another worker took over changes nothing.
    let stale = InboxResult::Done { id: claimed[0].id, seq: claimed[0].seq, again_at: now_millis() };
    assert_eq!(store.inbox_finish(&[stale], now_millis()).await.unwrap(), 0);
}

/// A full sync of a simulator of 400 cards into `store`, then `faults` on its card listing, and
/// a delivery for each of 150 cards Kaiten changed since: a batch the handler fetches with its
/// bulk listing. Returns the simulator (its request log reset), the handler and the changed ids.
async fn bulk_change(store: &Arc<dyn Store>, faults: Faults) -> (Simulator, WebhookHandler, Vec<i64>) {
    let sim = Simulator::start(SimConfig { cards: 400, ..SimConfig::small() }).await.expect("simulator");
    SyncEngine::new(sim_client(&sim), store.clone()).sync_all().await.expect("full sync");
    sim.set_faults(faults);
    let handler = handler(&sim, store);
    let moved: Vec<i64> = sim.card_ids().into_iter().take(150).collect();
    for id in &moved {
        sim.update_card(*id, json!({"size": 13}));
        deliver(&handler, &card_update(*id, json!({}), json!({"size": 13}))).await.unwrap();
    }
    sim.reset_request_log();
    (sim, handler, moved)
}

/// Drains a bulk change: every card applied from the listing (none fetched one by one, at most
/// `max_listing` listing requests), stored as Kaiten has it.
async fn assert_bulk_change_applied(
    sim: &Simulator,
    store: &Arc<dyn Store>,
    handler: &WebhookHandler,
    moved: &[i64],
    max_listing: usize,
) {
    let report = drain(handler).await;
    assert_eq!((report.entries, report.applied, report.failed), (150, 150, 0), "{report:?}");
    let single = requests_to(sim, "/cards/");
    let listing = requests_to(sim, "/cards?");
    assert_eq!(single, 0, "no card fetched one by one: {:?}", sim.request_log());
    assert!(listing <= max_listing, "{listing} listing requests for 150 cards: {:?}", sim.request_log());
    for id in moved {
        let row = stored(store, EntityKind::Cards, *id).await;
        assert_eq!(row.raw["size"], 13, "card {id}");
        assert_eq!(row.raw["version"], sim.card_json(*id).unwrap()["version"], "card {id}");
    }
}

/// A bulk change (more cards than a listing page holds) is fetched with one incremental listing,
/// not one request per card.
pub async fn a_bulk_change_is_fetched_by_one_listing(store: Arc<dyn Store>) {
    let (sim, handler, moved) = bulk_change(&store, Faults::default()).await;
    assert_bulk_change_applied(&sim, &store, &handler, &moved, 4).await;
}

/// A bulk change on a tenant that clamps the card page size (30 instead of the 100 asked) is still
/// fetched whole by the listing: the short first page is probed once, the cap learned, and the
/// listing pages by 30 to its end rather than stopping at the first short page.
pub async fn a_bulk_change_is_listed_whole_when_the_page_size_is_clamped(store: Arc<dyn Store>) {
    let (sim, handler, moved) = bulk_change(&store, Faults { cards_page_cap: Some(30), ..Faults::default() }).await;
    // 150 cards by 30: 5 full pages, the short (empty) last one, the archived walk's one page, and
    // a little slack for cards sharing a timestamp.
    assert_bulk_change_applied(&sim, &store, &handler, &moved, 10).await;
}

/// A bulk change on a route that ignores `offset` and `updated_after` (every page is the first):
/// the listing's end cannot be told, so the batch fails within a few requests, neither looping
/// nor applying a partial listing; its card entries stay in the inbox for a retry, nothing is
/// marked deleted, and the run says why. Once the route pages again, the retry applies them.
pub async fn a_bulk_listing_that_ignores_paging_fails_the_batch_for_a_retry(store: Arc<dyn Store>) {
    let faults = Faults { cards_ignore_offset: true, cards_ignore_updated_after: true, ..Faults::default() };
    let (sim, handler, moved) = bulk_change(&store, faults).await;
    let live_before = store.ids(EntityKind::Cards, false).await.unwrap();
    let mut rows_before = Vec::new();
    for id in &moved {
        rows_before.push(stored(&store, EntityKind::Cards, *id).await.raw);
    }
    let report = drain(&handler).await;
    assert_eq!((report.entries, report.applied, report.failed), (150, 0, 150), "{report:?}");
    let listing = requests_to(&sim, "/cards?");
    assert!(listing <= 5, "{listing} listing requests: the listing looped: {:?}", sim.request_log());
    assert_eq!(requests_to(&sim, "/cards/"), 0, "no card fetched one by one");
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), live_before, "nothing marked deleted");
    for (id, before) in moved.iter().zip(&rows_before) {
        assert_eq!(&stored(&store, EntityKind::Cards, *id).await.raw, before, "card {id} is as the sync stored it");
    }
    let run = &webhook_runs(&store).await[0];
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.as_deref().unwrap_or_default();
    assert!(error.contains("GET /cards cannot be completed") && error.contains("ignores `offset`"), "{error}");
    let entries = store.inbox_entries(false, 1000).await.unwrap();
    assert_eq!(entries.len(), 150, "every card entry is kept");
    for e in &entries {
        assert_eq!(e.attempts, 1, "{e:?}");
        assert!(e.last_error.as_deref().unwrap_or_default().contains("cannot be completed"), "{e:?}");
    }
    let stats = store.inbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed), (150, 0), "kept for a retry, not given up");

    sim.set_faults(Faults::default());
    sim.reset_request_log();
    assert_bulk_change_applied(&sim, &store, &handler, &moved, 4).await;
}

/// Cards refetched on demand (`sync --card`) go through the same path: a new card is stored with
/// its parents, a card Kaiten no longer has is marked deleted, an unknown id creates nothing.
pub async fn cards_are_refetched_on_demand(store: Arc<dyn Store>) {
    let (sim, _) = synced(&store).await;
    let applier = WebhookHandler::applier(sim_client(&sim), store.clone(), test_options());
    let board = sim.add_board(sim.space_ids()[0], "On demand");
    let new = sim.create_card(board, "Refetched on demand")["id"].as_i64().unwrap();
    let gone = sim.card_ids()[0];
    sim.delete_card(gone);
    let report = applier.refetch(EntityKind::Cards, &[new, gone, 987_654]).await.expect("refetch");
    assert_eq!((report.entries, report.applied, report.failed), (3, 3, 0), "{report:?}");
    assert_card_is_kaitens(&sim, &store, new).await;
    assert!(stored(&store, EntityKind::Cards, gone).await.deleted_at.is_some());
    assert!(store.get(EntityKind::Cards, 987_654).await.unwrap().is_none());
    let err = applier.refetch(EntityKind::Columns, &[1]).await.unwrap_err();
    assert!(err.to_string().contains("cannot be refetched"), "{err}");
    assert!(applier.refetch(EntityKind::Cards, &[0]).await.is_err());
}

// ---- end to end: the simulator posts to a small HTTP server on 127.0.0.1 ----

/// Serves `POST /api/webhooks/kaiten/{secret}` with the handler on 127.0.0.1 (one request per
/// connection, the status of the handler's answer), runs its worker, and points the simulator's
/// webhooks at it.
async fn serve_webhooks(sim: &Simulator, handler: WebhookHandler) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let worker = handler.clone();
    tokio::spawn(async move { worker.run_worker(std::future::pending()).await });
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move { answer(socket, &handler).await });
        }
    });
    sim.set_webhook_url(Some(format!("http://{addr}/api/webhooks/kaiten/{SECRET}")));
}

/// Reads one HTTP/1.1 request and answers it with the handler's status.
async fn answer(mut socket: tokio::net::TcpStream, handler: &WebhookHandler) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = &buf[head_end..head_end + length];
    let status = match path.strip_prefix("/api/webhooks/kaiten/") {
        Some(secret) => match handler.handle(secret, None, body).await {
            Ok(_) => 200,
            Err(e) => e.status(),
        },
        None => 404,
    };
    let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = socket.write_all(response.as_bytes()).await;
}

/// Every card in `changed` is stored as Kaiten has it now.
async fn assert_cards_are_kaitens(sim: &Simulator, store: &Arc<dyn Store>, changed: &[i64]) {
    for id in changed {
        assert_card_is_kaitens(sim, store, *id).await;
    }
}

/// End to end: the simulator posts its (partial, real-shaped) webhooks over HTTP and the mirror
/// follows without a sync.
pub async fn end_to_end_webhooks_keep_the_mirror_current_without_a_sync(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
    serve_webhooks(&sim, handler).await;
    let boards = sim.board_ids();
    let ids = sim.card_ids();
    let mut changed = Vec::new();

    let space = sim.space_ids()[1];
    let new_board = sim.add_board(space, "Webhook board");
    for (i, board) in [boards[0], boards[3], new_board].into_iter().enumerate() {
        changed.push(sim.create_card(board, &format!("Webhook card {i}"))["id"].as_i64().unwrap());
    }
    for id in &ids[0..2] {
        sim.update_card(*id, json!({"title": format!("Renamed {id}"), "size": 3}));
        changed.push(*id);
    }
    sim.move_card(ids[2], sim.column_ids(boards[1])[1], None);
    sim.move_card(ids[3], *sim.column_ids(new_board).last().unwrap(), None);
    sim.archive_card(ids[4]);
    changed.extend(&ids[2..5]);
    sim.update_space(space, json!({"title": "Renamed by webhook"}));

    assert!(sim.flush_webhooks(Duration::from_secs(20)).await, "webhooks delivered");
    wait_for_empty_inbox(&store, Duration::from_secs(20)).await;
    assert_cards_are_kaitens(&sim, &store, &changed).await;
    let archived = stored(&store, EntityKind::Cards, ids[4]).await;
    assert_eq!(int(&archived, EntityKind::Cards, "condition"), Some(2));
    let board = sim.boards_json().into_iter().find(|b| b["id"] == new_board).unwrap();
    assert_eq!(stored(&store, EntityKind::Boards, new_board).await.raw, board);
    for column in sim.column_ids(new_board) {
        stored(&store, EntityKind::Columns, column).await;
    }
    let space_json = sim.spaces_json().into_iter().find(|s| s["id"] == space).unwrap();
    assert_eq!(stored(&store, EntityKind::Spaces, space).await.raw, space_json);

    let runs = store.recent_runs(100).await.unwrap();
    assert_eq!(runs.iter().filter(|r| r.kind != RunKind::Webhook).count(), 1, "only the first full sync ran");
    let webhook = runs.iter().filter(|r| r.kind == RunKind::Webhook).count();
    assert!((1..12).contains(&webhook), "runs per drained batch, not per delivery: {webhook}");
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded), "{runs:?}");
}

/// End to end with deliveries shuffled and concurrent: the mirror ends at the newest version.
pub async fn end_to_end_shuffled_deliveries_end_at_the_newest_version(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
    serve_webhooks(&sim, handler).await;
    sim.set_webhook_shuffle(true);
    let boards = sim.board_ids();
    let ids = sim.card_ids();
    let new_board = sim.add_board(sim.space_ids()[0], "Shuffled board");
    let created = sim.create_card(new_board, "Born on a new board")["id"].as_i64().unwrap();
    let mut changed = vec![created, ids[0], ids[1], ids[2]];
    for round in 0..8 {
        sim.update_card(created, json!({"title": format!("Created, then edited {round}")}));
        sim.update_card(ids[0], json!({"title": format!("Edited {round}"), "size": round}));
        let board = boards[round % boards.len()];
        let columns = sim.column_ids(board);
        sim.move_card(ids[1], columns[round % columns.len()], None);
    }
    sim.archive_card(ids[2]);
    for i in 0..5 {
        changed.push(sim.create_card(boards[i % boards.len()], &format!("Burst {i}"))["id"].as_i64().unwrap());
    }

    assert!(sim.flush_webhooks(Duration::from_secs(20)).await, "webhooks delivered");
    wait_for_empty_inbox(&store, Duration::from_secs(20)).await;
    assert_cards_are_kaitens(&sim, &store, &changed).await;
    let runs = webhook_runs(&store).await;
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded), "{runs:?}");
}

/// Generates one `#[tokio::test]` per webhook scenario. `$make` is an async fn returning
/// `(Arc<dyn Store>, guard)`: a fresh, migrated, empty store and whatever keeps it alive (the same
/// function [`crate::engine_conformance_tests!`] takes, `optional` included).
#[macro_export]
macro_rules! webhook_conformance_tests {
    (optional $make:path) => {
        $crate::webhook_conformance_tests!(@names [optional $make]);
    };
    ($make:path) => {
        $crate::webhook_conformance_tests!(@names [required $make]);
    };
    (@names $how:tt) => {
        $crate::webhook_conformance_tests!(@tests $how;
            a_partial_card_add_stores_the_card_as_kaiten_has_it,
            a_stale_card_update_stores_the_newest,
            a_delivery_for_an_unknown_or_deleted_card_creates_nothing,
            deliveries_for_one_card_coalesce,
            tag_deliveries_refetch_the_card_and_never_delete_a_tag,
            board_and_space_deliveries_refresh_through_listings,
            bad_deliveries_are_refused_and_store_nothing,
            an_hmac_header_is_verified_when_configured,
            each_drained_batch_is_one_webhook_run,
            a_database_failure_keeps_the_entry_and_is_logged,
            failing_fetches_are_retried_then_kept_as_failed,
            acknowledged_deliveries_survive_a_dead_worker,
            a_bulk_change_is_fetched_by_one_listing,
            a_bulk_change_is_listed_whole_when_the_page_size_is_clamped,
            a_bulk_listing_that_ignores_paging_fails_the_batch_for_a_retry,
            cards_are_refetched_on_demand,
            end_to_end_webhooks_keep_the_mirror_current_without_a_sync,
            end_to_end_shuffled_deliveries_end_at_the_newest_version,
        );
    };
    (@tests [required $make:path]; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make().await;
                $crate::webhook::$name(store).await;
            }
        )*
    };
    (@tests [optional $make:path]; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((store, _guard)) = $make().await else { return };
                $crate::webhook::$name(store).await;
            }
        )*
    };
}
