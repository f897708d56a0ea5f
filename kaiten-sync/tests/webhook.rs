//! Webhook deliveries: authentication, parsing, order-safe application, parents fetched from
//! Kaiten, the run log, and end to end with the simulator posting to an axum app.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use kaiten_sim::{SimConfig, Simulator};
use kaiten_sync::conformance::engine::sim_client;
use kaiten_sync::webhook::hmac_sha256_hex;
use kaiten_sync::{
    constant_time_eq, EntityKind, MemoryStore, RunKind, RunStatus, SqlValue, Store, StoredRecord, SyncEngine,
    WebhookAuth, WebhookError, WebhookHandler, WebhookOutcome,
};
use serde_json::{json, Map, Value};

const SECRET: &str = "wh-secret-0123456789abcdef";

async fn sim() -> Simulator {
    Simulator::start(SimConfig::small()).await.expect("simulator starts")
}

fn handler(sim: &Simulator, store: &Arc<dyn Store>) -> WebhookHandler {
    WebhookHandler::new(sim_client(sim), store.clone(), WebhookAuth::new(SECRET))
}

/// A simulator, a memory store holding a full sync of it, and a handler.
async fn synced() -> (Simulator, Arc<dyn Store>, WebhookHandler) {
    let sim = sim().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    SyncEngine::new(sim_client(&sim), store.clone()).sync_all().await.expect("full sync");
    let handler = handler(&sim, &store);
    (sim, store, handler)
}

async fn deliver(handler: &WebhookHandler, body: &Value) -> Result<WebhookOutcome, WebhookError> {
    handler.handle(SECRET, None, body.to_string().as_bytes()).await
}

fn author() -> Value {
    json!({"id": 1, "full_name": "Webhook Author"})
}

fn event(name: &str, record: &Value) -> Value {
    let mut data = record.as_object().expect("an object").clone();
    data.insert("author".into(), author());
    json!({"event": name, "data": data})
}

/// An update event as Kaiten sends it: the old record and the top-level keys that changed.
fn update_event(name: &str, old: &Value, new: &Value) -> Value {
    let changes: Map<String, Value> = new
        .as_object()
        .expect("an object")
        .iter()
        .filter(|(k, v)| old.get(k.as_str()) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    json!({"event": name, "data": {"old": old, "changes": changes, "author": author()}})
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

async fn webhook_runs(store: &Arc<dyn Store>) -> Vec<kaiten_sync::RunRecord> {
    store.recent_runs(1000).await.unwrap().into_iter().filter(|r| r.kind == RunKind::Webhook).collect()
}

async fn nothing_stored(store: &Arc<dyn Store>) {
    let counts = store.counts().await.unwrap();
    assert!(counts.iter().all(|c| c.live == 0 && c.deleted == 0), "{counts:?}");
    assert!(store.recent_runs(10).await.unwrap().is_empty(), "no run is logged");
}

fn board_json(sim: &Simulator, id: i64) -> Value {
    sim.boards_json().into_iter().find(|b| b["id"] == id).expect("board exists")
}

fn later(timestamp: &Value) -> Value {
    let t = chrono::DateTime::parse_from_rfc3339(timestamp.as_str().expect("a timestamp")).unwrap();
    json!((t + chrono::Duration::seconds(1)).to_utc().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

#[test]
fn constant_time_compare() {
    assert!(constant_time_eq(SECRET.as_bytes(), SECRET.as_bytes()));
    assert!(!constant_time_eq(b"wh-secret-0123456789abcdeF", SECRET.as_bytes()));
    assert!(!constant_time_eq(b"wh-secret", SECRET.as_bytes()));
    assert!(!constant_time_eq(format!("{SECRET}x").as_bytes(), SECRET.as_bytes()));
    assert!(!constant_time_eq(b"", SECRET.as_bytes()));
    assert!(constant_time_eq(b"", b""));
}

#[tokio::test]
async fn every_event_kind_is_applied() {
    let (sim, store, handler) = synced().await;
    let boards = sim.board_ids();

    // card:add
    let card = sim.create_card(boards[0], "Added by a webhook");
    let out = deliver(&handler, &event("card:add", &card)).await.unwrap();
    assert!(out.applied && !out.stale && !out.ignored, "{out:?}");
    let id = card["id"].as_i64().unwrap();
    let row = stored(&store, EntityKind::Cards, id).await;
    assert_eq!(row.raw, card, "author is not part of the record");
    assert!(int(&row, EntityKind::Cards, "space_id").is_some(), "space_id is filled from the board");

    // card:update
    let old = sim.card_json(id).unwrap();
    let new = sim.update_card(id, json!({"title": "Renamed by a webhook", "asap": true}));
    let out = deliver(&handler, &update_event("card:update", &old, &new)).await.unwrap();
    assert!(out.applied, "{out:?}");
    assert_eq!(stored(&store, EntityKind::Cards, id).await.raw, new);

    // card.move (alias) to another board
    let old = new;
    let target_column = sim.column_ids(boards[1])[0];
    let new = sim.move_card(id, target_column, None);
    deliver(&handler, &update_event("card.move", &old, &new)).await.unwrap();
    let row = stored(&store, EntityKind::Cards, id).await;
    assert_eq!(row.raw, new);
    assert_eq!(int(&row, EntityKind::Cards, "board_id"), Some(boards[1]));

    // archive is an update
    let old = new;
    let new = sim.archive_card(id);
    deliver(&handler, &update_event("card:update", &old, &new)).await.unwrap();
    assert_eq!(
        stored(&store, EntityKind::Cards, id).await.value(EntityKind::Cards, "archived"),
        Some(&SqlValue::Bool(true))
    );

    // card:remove
    sim.delete_card(id);
    let removed = sim.card_json(id).unwrap();
    let out = deliver(&handler, &json!({"event": "card:remove", "data": removed})).await.unwrap();
    assert!(out.applied);
    assert!(stored(&store, EntityKind::Cards, id).await.deleted_at.is_some());

    // card.create and card.delete (aliases)
    let other = sim.create_card(boards[2], "Alias");
    let other_id = other["id"].as_i64().unwrap();
    assert!(deliver(&handler, &event("card.create", &other)).await.unwrap().applied);
    assert!(stored(&store, EntityKind::Cards, other_id).await.deleted_at.is_none());
    let out = deliver(&handler, &json!({"event": "card.delete", "data": {"id": other_id}})).await.unwrap();
    assert!(out.applied, "{out:?}");
    let row = stored(&store, EntityKind::Cards, other_id).await;
    assert!(row.deleted_at.is_some());
    assert_eq!(row.raw["title"], "Alias", "a bare id marks the card deleted without wiping it");

    // board:add: the board, its columns and lanes
    let space = sim.space_ids()[0];
    let board_id = sim.add_board(space, "Added board");
    let board = board_json(&sim, board_id);
    assert!(deliver(&handler, &event("board:add", &board)).await.unwrap().applied);
    assert_eq!(stored(&store, EntityKind::Boards, board_id).await.raw, board);
    for column in sim.column_ids(board_id) {
        stored(&store, EntityKind::Columns, column).await;
    }
    for lane in sim.lane_ids(board_id) {
        stored(&store, EntityKind::Lanes, lane).await;
    }

    // board:update
    let mut renamed = board.clone();
    renamed["title"] = json!("Renamed board");
    renamed["updated"] = later(&board["updated"]);
    assert!(deliver(&handler, &update_event("board:update", &board, &renamed)).await.unwrap().applied);
    let row = stored(&store, EntityKind::Boards, board_id).await;
    assert_eq!(row.raw, renamed);
    assert_eq!(int(&row, EntityKind::Boards, "space_id"), Some(space));

    // space:update
    let old_space = sim.spaces_json().into_iter().find(|s| s["id"] == space).unwrap();
    sim.update_space(space, json!({"title": "Renamed space"}));
    let new_space = sim.spaces_json().into_iter().find(|s| s["id"] == space).unwrap();
    assert!(deliver(&handler, &update_event("space:update", &old_space, &new_space)).await.unwrap().applied);
    assert_eq!(stored(&store, EntityKind::Spaces, space).await.raw, new_space);

    // tag:add, tag:update, tag:remove
    let tag_id = sim.add_tag("webhooks");
    let tag = sim.tags_json().into_iter().find(|t| t["id"] == tag_id).unwrap();
    assert!(deliver(&handler, &event("tag:add", &tag)).await.unwrap().applied);
    let mut recoloured = tag.clone();
    recoloured["color"] = json!(7);
    recoloured["updated"] = later(&tag["updated"]);
    assert!(deliver(&handler, &update_event("tag:update", &tag, &recoloured)).await.unwrap().applied);
    assert_eq!(stored(&store, EntityKind::Tags, tag_id).await.raw, recoloured);
    assert!(deliver(&handler, &event("tag:remove", &recoloured)).await.unwrap().applied);
    assert!(stored(&store, EntityKind::Tags, tag_id).await.deleted_at.is_some());
    let again = deliver(&handler, &event("tag:remove", &recoloured)).await.unwrap();
    assert!(!again.applied && !again.stale, "removing twice is a no-op: {again:?}");

    // Events about what the mirror does not store are accepted and ignored.
    let before = store.counts().await.unwrap();
    let runs_before = webhook_runs(&store).await.len();
    for name in ["comment:add", "card_member:add", "file:update", "card_time_log:remove", "block:add", "user:update"] {
        let out = deliver(&handler, &json!({"event": name, "data": {"id": 1, "card_id": id}})).await.unwrap();
        assert!(out.ignored && !out.applied && out.run_id.is_none(), "{name}: {out:?}");
    }
    assert_eq!(store.counts().await.unwrap(), before);
    assert_eq!(webhook_runs(&store).await.len(), runs_before);
}

#[tokio::test]
async fn an_older_update_after_a_newer_one_changes_nothing() {
    let (sim, store, handler) = synced().await;
    let id = sim.card_ids()[0];
    let v0 = sim.card_json(id).unwrap();
    let v1 = sim.update_card(id, json!({"title": "first"}));
    let v2 = sim.update_card(id, json!({"title": "second"}));
    let newer = update_event("card:update", &v1, &v2);
    let older = update_event("card:update", &v0, &v1);

    assert!(deliver(&handler, &newer).await.unwrap().applied);
    let out = deliver(&handler, &older).await.unwrap();
    assert!(!out.applied && out.stale, "{out:?}");
    assert_eq!(stored(&store, EntityKind::Cards, id).await.raw, v2);
    let run = &webhook_runs(&store).await[0];
    assert_eq!(run.stats[&EntityKind::Cards].unchanged, 1, "{run:?}");
    assert_eq!(run.status, RunStatus::Succeeded);

    // Same `updated`, lower `version`: still older.
    let mut same_time = v1.clone();
    same_time["updated"] = v2["updated"].clone();
    let out = deliver(&handler, &event("card:update", &same_time)).await.unwrap();
    assert!(out.stale, "{out:?}");
    assert_eq!(stored(&store, EntityKind::Cards, id).await.raw, v2);

    // A late update after the card was removed does not bring it back.
    sim.delete_card(id);
    let removed = sim.card_json(id).unwrap();
    deliver(&handler, &json!({"event": "card:remove", "data": removed})).await.unwrap();
    let out = deliver(&handler, &newer).await.unwrap();
    assert!(out.stale && !out.applied);
    assert!(stored(&store, EntityKind::Cards, id).await.deleted_at.is_some());
}

#[tokio::test]
async fn a_duplicate_delivery_is_idempotent() {
    let (sim, store, handler) = synced().await;
    let card = sim.create_card(sim.board_ids()[0], "Twice");
    let body = event("card:add", &card);
    let first = deliver(&handler, &body).await.unwrap();
    let counts = store.counts().await.unwrap();
    let second = deliver(&handler, &body).await.unwrap();
    assert!(first.applied);
    assert!(!second.applied && !second.stale && !second.ignored, "{second:?}");
    assert_eq!(store.counts().await.unwrap(), counts);
    let runs = webhook_runs(&store).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].stats[&EntityKind::Cards].unchanged, 1);
    assert_eq!(runs[1].stats[&EntityKind::Cards].inserted, 1);
}

#[tokio::test]
async fn unknown_parents_are_fetched_or_stored_as_placeholders() {
    let sim = sim().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let handler = handler(&sim, &store);

    // A comment for a card not stored yet: accepted, ignored, nothing stored.
    let comment = json!({"event": "comment:add", "data": {"id": 77, "card_id": 999_999, "text": "first!"}});
    let out = deliver(&handler, &comment).await.unwrap();
    assert!(out.ignored);
    nothing_stored(&store).await;

    // An update of a card whose board the empty mirror does not know: the board, its space,
    // columns and lanes are fetched from Kaiten first.
    let id = sim.card_ids()[0];
    let old = sim.card_json(id).unwrap();
    let new = sim.update_card(id, json!({"title": "Updated before any sync"}));
    sim.reset_request_log();
    let out = deliver(&handler, &update_event("card:update", &old, &new)).await.unwrap();
    assert!(out.applied);
    let board = new["board_id"].as_i64().unwrap();
    let row = stored(&store, EntityKind::Cards, id).await;
    assert_eq!(row.raw, new);
    let board_row = stored(&store, EntityKind::Boards, board).await;
    assert_eq!(board_row.raw, board_json(&sim, board));
    let space = int(&board_row, EntityKind::Boards, "space_id").expect("the board has its space");
    stored(&store, EntityKind::Spaces, space).await;
    assert_eq!(int(&row, EntityKind::Cards, "space_id"), Some(space));
    for column in sim.column_ids(board) {
        stored(&store, EntityKind::Columns, column).await;
    }
    for lane in sim.lane_ids(board) {
        stored(&store, EntityKind::Lanes, lane).await;
    }
    let log = sim.request_log();
    assert!(log.iter().any(|r| r.contains("/spaces")) && log.iter().any(|r| r.contains("/columns")), "{log:?}");
    let run = &webhook_runs(&store).await[0];
    assert_eq!(run.api_requests as usize, log.len());
    assert!(run.entities.contains(&EntityKind::Boards) && run.entities.contains(&EntityKind::Cards), "{run:?}");

    // A card on a board, column and lane Kaiten does not list: placeholders, nothing dangles.
    let ghost = json!({"id": 9_000_001, "title": "Ghost", "board_id": 424_242, "column_id": 5_555, "lane_id": 6_666,
                       "updated": "2025-06-01T00:00:00.000Z", "version": 1});
    assert!(deliver(&handler, &event("card:add", &ghost)).await.unwrap().applied);
    assert_eq!(stored(&store, EntityKind::Boards, 424_242).await.raw["placeholder"], true);
    let column = stored(&store, EntityKind::Columns, 5_555).await;
    assert_eq!(column.raw, json!({"id": 5_555, "board_id": 424_242, "placeholder": true}));
    assert_eq!(int(&stored(&store, EntityKind::Lanes, 6_666).await, EntityKind::Lanes, "board_id"), Some(424_242));

    // A new lane on a stored board is listed from Kaiten rather than made up.
    let lane = sim.add_lane(board, "New lane");
    let old = sim.card_json(id).unwrap();
    let moved = sim.move_card(id, sim.column_ids(board)[0], Some(lane));
    deliver(&handler, &update_event("card:update", &old, &moved)).await.unwrap();
    assert_eq!(
        stored(&store, EntityKind::Lanes, lane).await.raw,
        sim.lanes_json(board).into_iter().find(|l| l["id"] == lane).unwrap()
    );
}

#[tokio::test]
async fn a_wrong_secret_is_unauthorized_and_stores_nothing() {
    let sim = sim().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let handler = handler(&sim, &store);
    let card = sim.create_card(sim.board_ids()[0], "Sneaky");
    let body = event("card:add", &card).to_string();
    for wrong in ["", "wh-secret", "wh-secret-0123456789abcdeF", "wh-secret-0123456789abcdef0", "not even close"] {
        let err = handler.handle(wrong, None, body.as_bytes()).await.unwrap_err();
        assert!(matches!(err, WebhookError::Unauthorized), "{wrong:?}: {err:?}");
        assert_eq!(err.status(), 401);
        assert!(!err.to_string().contains(SECRET) && !format!("{err:?}").contains(SECRET));
    }
    // Unauthenticated garbage is refused before it is parsed.
    let err = handler.handle("wrong", None, b"not json").await.unwrap_err();
    assert!(matches!(err, WebhookError::Unauthorized));
    nothing_stored(&store).await;
    assert!(!format!("{handler:?}").contains(SECRET));
}

#[tokio::test]
async fn malformed_bodies_are_named_and_store_nothing() {
    let sim = sim().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let handler = handler(&sim, &store);
    let card = sim.create_card(sim.board_ids()[0], "Whole").to_string();
    let truncated = format!(r#"{{"event":"card:add","data":{}"#, &card[..card.len() / 2]);
    let cases: [(&[u8], &str); 6] = [
        (b"<html>502 Bad Gateway</html>", "webhook body is not JSON: expected value at line 1 column 1"),
        (br#"{"data": {"id": 1}}"#, "webhook body has no \"event\" field"),
        (br#"{"event": "card:add"}"#, "card:add delivery has no \"data\" field"),
        (br#"{"event": "card:add", "data": {"title": "no id"}}"#, "card:add without data.id"),
        (
            br#"{"event": "card:update", "data": {"old": {"title": "x"}, "changes": {"title": "y"}}}"#,
            "card:update without data.old.id",
        ),
        (truncated.as_bytes(), "webhook body is not JSON: EOF while parsing"),
    ];
    for (body, expected) in cases {
        let err = handler.handle(SECRET, None, body).await.unwrap_err();
        assert!(matches!(err, WebhookError::Malformed(_)), "{err:?}");
        assert_eq!(err.status(), 400);
        assert!(err.to_string().starts_with(expected), "{err} should start with {expected}");
    }
    nothing_stored(&store).await;
}

#[tokio::test]
async fn an_hmac_header_is_verified_when_configured() {
    let sim = sim().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let auth = WebhookAuth::new(SECRET).with_hmac_header("X-Signature");
    let handler = WebhookHandler::new(sim_client(&sim), store.clone(), auth);
    assert_eq!(handler.hmac_header(), Some("X-Signature"));
    let tag_id = sim.add_tag("signed");
    let tag = sim.tags_json().into_iter().find(|t| t["id"] == tag_id).unwrap();
    let body = event("tag:add", &tag).to_string();
    let signature = hmac_sha256_hex(SECRET.as_bytes(), body.as_bytes());

    for bad in [None, Some("deadbeef"), Some("not hex"), Some(hmac_sha256_hex(b"other key", body.as_bytes()).as_str())]
    {
        let err = handler.handle(SECRET, bad, body.as_bytes()).await.unwrap_err();
        assert!(matches!(err, WebhookError::Unauthorized), "{bad:?}");
    }
    // A good signature with a wrong URL secret is still refused.
    assert!(handler.handle("wrong", Some(&signature), body.as_bytes()).await.is_err());
    nothing_stored(&store).await;

    let out = handler.handle(SECRET, Some(&signature), body.as_bytes()).await.unwrap();
    assert!(out.applied);
    let prefixed = format!("sha256={signature}");
    assert!(handler.handle(SECRET, Some(&prefixed), body.as_bytes()).await.is_ok());
}

#[tokio::test]
async fn each_applied_delivery_is_a_webhook_run() {
    let (sim, store, handler) = synced().await;
    let card = sim.create_card(sim.board_ids()[0], "Logged");
    let out = deliver(&handler, &event("card:add", &card)).await.unwrap();
    let runs = webhook_runs(&store).await;
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(Some(run.id), out.run_id);
    assert_eq!(run.status, RunStatus::Succeeded);
    assert!(run.finished_at.is_some());
    assert_eq!(run.stats[&EntityKind::Cards].inserted, 1);
    assert_eq!(run.entities, vec![EntityKind::Cards]);
    assert_eq!(run.api_requests, 0, "the parents were stored: no request to Kaiten");
    assert_eq!(run.scope.as_deref(), Some(format!("card:add card {} \"Logged\"", card["id"]).as_str()));
    assert!(run.error.is_none());
}

#[tokio::test]
async fn a_database_failure_is_503_and_logged() {
    let sim = sim().await;
    let memory = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> = memory.clone();
    let handler = handler(&sim, &store);
    let tag_id = sim.add_tag("doomed");
    let tag = sim.tags_json().into_iter().find(|t| t["id"] == tag_id).unwrap();
    memory.fail_after_pages(Some(0));
    let err = deliver(&handler, &event("tag:add", &tag)).await.unwrap_err();
    assert_eq!(err.status(), 503, "{err}");
    let run = &webhook_runs(&store).await[0];
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.as_deref().unwrap_or_default().contains("injected failure"), "{run:?}");
    assert!(store.get(EntityKind::Tags, tag_id).await.unwrap().is_none());
}

#[tokio::test]
async fn kaiten_down_while_fetching_a_parent_is_502_and_stores_nothing() {
    let sim = sim().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let handler = handler(&sim, &store);
    let card = sim.create_card(sim.board_ids()[0], "Orphan");
    sim.shutdown();
    let err = deliver(&handler, &event("card:add", &card)).await.unwrap_err();
    assert!(matches!(err, WebhookError::Api(_)), "{err:?}");
    assert_eq!(err.status(), 502);
    let counts = store.counts().await.unwrap();
    assert!(counts.iter().all(|c| c.live == 0), "{counts:?}");
    assert_eq!(webhook_runs(&store).await[0].status, RunStatus::Failed);
}

// ---- end to end: the simulator posts to an axum app ----

async fn receive(
    State(handler): State<WebhookHandler>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = handler.hmac_header().and_then(|h| headers.get(h)).and_then(|v| v.to_str().ok());
    match handler.handle(&secret, signature, &body).await {
        Ok(_) => StatusCode::OK,
        Err(e) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// Serves the handler on 127.0.0.1 and points the simulator's webhooks at it.
async fn serve_webhooks(sim: &Simulator, handler: WebhookHandler) {
    let app = axum::Router::new().route("/webhooks/kaiten/{secret}", axum::routing::post(receive)).with_state(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    sim.set_webhook_url(Some(format!("http://{addr}/webhooks/kaiten/{SECRET}")));
}

/// The mirror holds exactly the simulator's cards: the same live ids and, for `changed`, the same
/// raw JSON.
async fn assert_mirror_matches(sim: &Simulator, store: &Arc<dyn Store>, changed: &[i64]) {
    let mut expected = sim.card_ids();
    expected.sort_unstable();
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), expected, "live card ids");
    for card in sim.cards_json() {
        let id = card["id"].as_i64().unwrap();
        if changed.contains(&id) {
            assert_eq!(stored(store, EntityKind::Cards, id).await.raw, card, "card {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_webhooks_keep_the_mirror_current_without_a_sync() {
    let (sim, store, handler) = synced().await;
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
    sim.delete_card(ids[5]);
    let tag = sim.add_tag("from a webhook");
    sim.update_space(space, json!({"title": "Renamed by webhook"}));

    assert!(sim.flush_webhooks(Duration::from_secs(20)).await, "webhooks delivered");
    assert_mirror_matches(&sim, &store, &changed).await;
    let deleted = stored(&store, EntityKind::Cards, ids[5]).await;
    assert!(deleted.deleted_at.is_some());
    assert_eq!(stored(&store, EntityKind::Boards, new_board).await.raw, board_json(&sim, new_board));
    for column in sim.column_ids(new_board) {
        stored(&store, EntityKind::Columns, column).await;
    }
    stored(&store, EntityKind::Tags, tag).await;
    let space_json = sim.spaces_json().into_iter().find(|s| s["id"] == space).unwrap();
    assert_eq!(stored(&store, EntityKind::Spaces, space).await.raw, space_json);

    let runs = store.recent_runs(100).await.unwrap();
    assert_eq!(runs.iter().filter(|r| r.kind != RunKind::Webhook).count(), 1, "only the first full sync ran");
    assert_eq!(runs.iter().filter(|r| r.kind == RunKind::Webhook).count(), 12, "one run per delivery");
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_shuffled_deliveries_end_at_the_newest_version() {
    let (sim, store, handler) = synced().await;
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
    sim.delete_card(ids[3]);
    for i in 0..5 {
        changed.push(sim.create_card(boards[i % boards.len()], &format!("Burst {i}"))["id"].as_i64().unwrap());
    }

    assert!(sim.flush_webhooks(Duration::from_secs(20)).await, "webhooks delivered");
    assert_mirror_matches(&sim, &store, &changed).await;
    assert!(stored(&store, EntityKind::Cards, ids[3]).await.deleted_at.is_some());
    let runs = webhook_runs(&store).await;
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded), "{runs:?}");
}
