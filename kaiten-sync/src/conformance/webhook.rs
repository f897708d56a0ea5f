//! Webhook deliveries against a store, run by every store's tests through
//! [`crate::webhook_conformance_tests!`]: authentication, parsing, order-safe and idempotent
//! application, parents fetched from Kaiten, the run log, and end to end with the simulator
//! posting its webhooks over HTTP. Each scenario takes a fresh, migrated, empty store.

use std::sync::Arc;
use std::time::Duration;

use kaiten_sim::{SimConfig, Simulator};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::engine::{sim_client, FlakyStore};
use crate::schema::{EntityKind, SqlValue};
use crate::store::{RunKind, RunRecord, RunStatus, Store, StoredRecord};
use crate::webhook::{hmac_sha256_hex, WebhookAuth, WebhookError, WebhookHandler, WebhookOutcome};
use crate::SyncEngine;

/// The URL secret of the handlers these scenarios build.
pub const SECRET: &str = "wh-secret-0123456789abcdef";

async fn sim() -> Simulator {
    Simulator::start(SimConfig::small()).await.expect("simulator starts")
}

fn handler(sim: &Simulator, store: &Arc<dyn Store>) -> WebhookHandler {
    WebhookHandler::new(sim_client(sim), store.clone(), WebhookAuth::new(SECRET))
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

async fn webhook_runs(store: &Arc<dyn Store>) -> Vec<RunRecord> {
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

/// Every kind of event the mirror stores is applied (cards, boards with their columns and lanes,
/// spaces, tags, aliases); events about what it does not store are ignored.
pub async fn every_event_kind_is_applied(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
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

/// Deliveries out of order: an older record never overwrites a newer one, nor revives a removed card.
pub async fn an_older_update_after_a_newer_one_changes_nothing(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
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

/// The same delivery twice changes nothing the second time.
pub async fn a_duplicate_delivery_is_idempotent(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
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

/// A record whose parents are not stored gets them fetched from Kaiten, or placeholders.
pub async fn unknown_parents_are_fetched_or_stored_as_placeholders(store: Arc<dyn Store>) {
    let sim = sim().await;
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

/// A wrong URL secret is 401 and stores nothing; the secret never shows in errors or `Debug`.
pub async fn a_wrong_secret_is_unauthorized_and_stores_nothing(store: Arc<dyn Store>) {
    let sim = sim().await;
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

/// Malformed bodies are 400 with an error naming the problem, and store nothing.
pub async fn malformed_bodies_are_named_and_store_nothing(store: Arc<dyn Store>) {
    let sim = sim().await;
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

/// With an HMAC header configured, a missing or wrong signature is refused.
pub async fn an_hmac_header_is_verified_when_configured(store: Arc<dyn Store>) {
    let sim = sim().await;
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

/// An applied delivery is logged as a `webhook` run with its stats.
pub async fn each_applied_delivery_is_a_webhook_run(store: Arc<dyn Store>) {
    let (sim, handler) = synced(&store).await;
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

/// A store failure is 503, logged as a failed run, and leaves the record unstored.
pub async fn a_database_failure_is_503_and_logged(store: Arc<dyn Store>) {
    let sim = sim().await;
    SyncEngine::new(sim_client(&sim), store.clone()).sync_all().await.expect("full sync");
    // Every page of cards fails to be written.
    let flaky: Arc<dyn Store> = Arc::new(FlakyStore::new(store.clone(), 0));
    let handler = handler(&sim, &flaky);
    let card = sim.create_card(sim.board_ids()[0], "Doomed");
    let id = card["id"].as_i64().unwrap();
    let err = deliver(&handler, &event("card:add", &card)).await.unwrap_err();
    assert_eq!(err.status(), 503, "{err}");
    let run = &webhook_runs(&store).await[0];
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.as_deref().unwrap_or_default().contains("injected failure"), "{run:?}");
    assert!(store.get(EntityKind::Cards, id).await.unwrap().is_none());
}

/// Kaiten unreachable while a parent is fetched is 502 and stores nothing.
pub async fn kaiten_down_while_fetching_a_parent_is_502_and_stores_nothing(store: Arc<dyn Store>) {
    let sim = sim().await;
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

// ---- end to end: the simulator posts to a small HTTP server on 127.0.0.1 ----

/// Serves `POST /webhooks/kaiten/{secret}` with the handler on 127.0.0.1 (one request per
/// connection, the status of the handler's answer) and points the simulator's webhooks at it.
async fn serve_webhooks(sim: &Simulator, handler: WebhookHandler) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move { answer(socket, &handler).await });
        }
    });
    sim.set_webhook_url(Some(format!("http://{addr}/webhooks/kaiten/{SECRET}")));
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
    let status = match path.strip_prefix("/webhooks/kaiten/") {
        Some(secret) => match handler.handle(secret, None, body).await {
            Ok(_) => 200,
            Err(e) => e.status(),
        },
        None => 404,
    };
    let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = socket.write_all(response.as_bytes()).await;
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

/// End to end: the simulator posts its webhooks over HTTP and the mirror follows without a sync.
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

/// Generates one `#[tokio::test]` per webhook scenario. `$make` is an async fn returning
/// `(Arc<dyn Store>, guard)`: a fresh, migrated, empty store and whatever keeps it alive (the same
/// function [`crate::engine_conformance_tests!`] takes).
#[macro_export]
macro_rules! webhook_conformance_tests {
    ($make:path) => {
        $crate::webhook_conformance_tests!(@tests $make;
            every_event_kind_is_applied,
            an_older_update_after_a_newer_one_changes_nothing,
            a_duplicate_delivery_is_idempotent,
            unknown_parents_are_fetched_or_stored_as_placeholders,
            a_wrong_secret_is_unauthorized_and_stores_nothing,
            malformed_bodies_are_named_and_store_nothing,
            an_hmac_header_is_verified_when_configured,
            each_applied_delivery_is_a_webhook_run,
            a_database_failure_is_503_and_logged,
            kaiten_down_while_fetching_a_parent_is_502_and_stores_nothing,
            end_to_end_webhooks_keep_the_mirror_current_without_a_sync,
            end_to_end_shuffled_deliveries_end_at_the_newest_version,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make().await;
                $crate::conformance::webhook::$name(store).await;
            }
        )*
    };
}
