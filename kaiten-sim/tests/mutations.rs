//! Mutations, webhooks and faults.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use common::{all_cards, get, get_json, get_list, ids, updated_ms};
use kaiten_sim::{Faults, SimConfig, Simulator};
use serde_json::{json, Value};

/// The newest `updated` the API serves.
async fn newest(sim: &Simulator) -> String {
    let top = get_list(sim, "/cards?order_by=updated&order_direction=desc&limit=1").await;
    top[0]["updated"].as_str().unwrap().to_owned()
}

/// Cards updated strictly after `stamp`, via the API.
async fn changed_after(sim: &Simulator, stamp: &str) -> Vec<Value> {
    all_cards(sim, &format!("updated_after={stamp}&order_by=updated&condition=1")).await
}

#[tokio::test]
async fn each_mutation_is_visible_with_a_newer_updated() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let board = sim.board_ids()[0];
    let other_board = sim.board_ids()[3];

    let mark = newest(&sim).await;
    let created = sim.create_card(board, "Brand new");
    let id = created["id"].as_i64().unwrap();
    let changed = changed_after(&sim, &mark).await;
    assert_eq!(ids(&changed), [id]);
    assert_eq!(changed[0]["title"], "Brand new");
    assert_eq!(changed[0]["board_id"], board);
    assert_eq!(changed[0]["version"], 1);
    assert_eq!(changed[0]["column_id"].as_i64(), sim.columns_json(board)[0]["id"].as_i64());
    assert!(changed[0]["updated"].as_str().unwrap() > mark.as_str());
    assert_eq!(get_json(&sim, &format!("/cards/{id}")).await["title"], "Brand new");

    let mark = newest(&sim).await;
    let updated = sim.update_card(id, json!({"title": "Renamed", "asap": true}));
    assert_eq!(updated["version"], 2);
    let changed = changed_after(&sim, &mark).await;
    assert_eq!(ids(&changed), [id]);
    assert_eq!((changed[0]["title"].as_str(), changed[0]["asap"].as_bool()), (Some("Renamed"), Some(true)));

    // Move to another board's last (done) column.
    let mark = newest(&sim).await;
    let target = sim.columns_json(other_board).last().unwrap()["id"].as_i64().unwrap();
    let moved = sim.move_card(id, target, None);
    assert_eq!((moved["board_id"].as_i64(), moved["column_id"].as_i64()), (Some(other_board), Some(target)));
    assert_eq!(moved["state"], 3);
    assert_eq!(moved["lane_id"].as_i64(), Some(sim.lane_ids(other_board)[0]));
    let changed = changed_after(&sim, &mark).await;
    assert_eq!(ids(&changed), [id]);
    assert_eq!(all_cards(&sim, &format!("board_id={other_board}&updated_after={mark}")).await.len(), 1);

    // Archive: leaves condition=1, shows in condition=2.
    let mark = newest(&sim).await;
    let archived = sim.archive_card(id);
    assert_eq!((archived["archived"].as_bool(), archived["condition"].as_i64()), (Some(true), Some(2)));
    assert!(changed_after(&sim, &mark).await.is_empty());
    let in_archive = all_cards(&sim, &format!("condition=2&updated_after={mark}")).await;
    assert_eq!(ids(&in_archive), [id]);

    // Delete: the card vanishes from every listing, condition=3 included, and from GET /cards/{id}.
    let before_delete = updated_ms(&sim.card_json(id).unwrap());
    sim.delete_card(id);
    for query in ["", "condition=1", "condition=2", "condition=3", "archived=true", "archived=false"] {
        assert!(!ids(&all_cards(&sim, query).await).contains(&id), "a deleted card is not listed by {query:?}");
    }
    assert!(all_cards(&sim, "condition=3").await.is_empty(), "condition=3 lists nothing");
    assert_eq!(get(&sim, &format!("/cards/{id}")).await.status(), 404);
    assert!(!sim.card_ids().contains(&id));
    assert_eq!(sim.deleted_card_ids(), [id]);
    let snapshot = sim.card_json(id).unwrap();
    assert_eq!(snapshot["condition"], 3);
    assert!(updated_ms(&snapshot) > before_delete);
}

#[tokio::test]
async fn mutation_stamps_strictly_increase() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let board = sim.board_ids()[0];
    let max_generated = sim.cards_json().iter().map(updated_ms).max().unwrap();
    let mut last = max_generated;
    for i in 0..50 {
        let card = sim.create_card(board, &format!("card {i}"));
        let stamp = updated_ms(&card);
        assert!(stamp > last);
        last = stamp;
        let stamp = updated_ms(&sim.update_card(card["id"].as_i64().unwrap(), json!({"title": "x"})));
        assert!(stamp > last);
        last = stamp;
    }
}

#[tokio::test]
async fn structure_mutations() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let space = sim.space_ids()[1];
    let board = sim.add_board(space, "Fresh board");
    assert!(sim.board_ids().contains(&board));
    assert_eq!(sim.column_ids(board).len(), 2);
    assert_eq!(sim.lane_ids(board).len(), 1);
    let boards = get_list(&sim, &format!("/spaces/{space}/boards")).await;
    assert!(boards.iter().any(|b| b["id"] == board && b["title"] == "Fresh board"));
    let spaces = get_list(&sim, "/spaces").await;
    let served = spaces.iter().find(|s| s["id"] == space).unwrap();
    assert!(served["boards"].as_array().unwrap().iter().any(|b| b["id"] == board));

    let column = sim.add_column(board, "Review");
    let lane = sim.add_lane(board, "Expedite");
    assert_eq!(sim.column_ids(board).len(), 3);
    assert_eq!(*sim.column_ids(board).last().unwrap(), column);
    assert_eq!(get_list(&sim, &format!("/boards/{board}/lanes")).await.len(), 2);

    let card = sim.create_card(board, "On the new board");
    let moved = sim.move_card(card["id"].as_i64().unwrap(), column, Some(lane));
    assert_eq!((moved["column_id"].as_i64(), moved["lane_id"].as_i64()), (Some(column), Some(lane)));
    assert_eq!(moved["path_data"]["lane"]["title"], "Expedite");

    let tag = sim.add_tag("fresh");
    assert!(!get_list(&sim, "/tags").await.iter().any(|t| t["id"] == tag), "a tag on no card is not listed");
    assert!(sim.tags_json().iter().any(|t| t["id"] == tag));
    sim.update_card(moved["id"].as_i64().unwrap(), json!({"tag_ids": [tag]}));
    assert!(
        get_list(&sim, "/tags").await.iter().any(|t| t["id"] == tag && t["name"] == "fresh"),
        "listed once on a card"
    );

    let before = sim.spaces_json().into_iter().find(|s| s["id"] == space).unwrap();
    sim.update_space(space, json!({"title": "Renamed space"}));
    let after = get_list(&sim, "/spaces").await.into_iter().find(|s| s["id"] == space).unwrap();
    assert_eq!(after["title"], "Renamed space");
    assert!(after["updated"].as_str() > before["updated"].as_str());
}

#[tokio::test]
async fn boards_columns_lanes_and_users_can_be_deleted() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let boards = sim.board_ids();
    let space = sim.space_ids()[0];
    let all_before = sim.card_ids();

    // A board: gone from its space's listings, its structure answers 404, its cards are deleted.
    let board = *boards.iter().find(|b| sim.cards_json().iter().any(|c| c["board_id"] == **b)).unwrap();
    let board_space = sim.boards_json().iter().find(|b| b["id"] == board).unwrap()["space_id"].as_i64().unwrap();
    let on_board: Vec<i64> = ids(&sim.cards_json().into_iter().filter(|c| c["board_id"] == board).collect::<Vec<_>>());
    sim.delete_board(board);
    assert!(!sim.board_ids().contains(&board));
    assert!(!ids(&get_list(&sim, &format!("/spaces/{board_space}/boards")).await).contains(&board));
    let spaces = get_list(&sim, "/spaces").await;
    assert!(spaces.iter().all(|s| s["boards"].as_array().unwrap().iter().all(|b| b["id"] != board)));
    for route in ["columns", "lanes"] {
        assert_eq!(get(&sim, &format!("/boards/{board}/{route}")).await.status(), 404, "{route}");
    }
    for card in &on_board {
        assert_eq!(get(&sim, &format!("/cards/{card}")).await.status(), 404, "card {card} went with its board");
    }
    let listed = ids(&all_cards(&sim, "archived=false").await);
    assert!(on_board.iter().all(|c| !listed.contains(c)));
    assert_eq!(sim.card_ids().len(), all_before.len() - on_board.len());

    // An empty column and lane; new ones never reuse an id.
    let other = sim.board_ids()[0];
    let column = sim.add_column(other, "Temporary");
    let lane = sim.add_lane(other, "Temporary");
    sim.delete_column(column);
    sim.delete_lane(lane);
    assert!(!ids(&get_list(&sim, &format!("/boards/{other}/columns")).await).contains(&column));
    assert!(!ids(&get_list(&sim, &format!("/boards/{other}/lanes")).await).contains(&lane));
    let again = sim.add_board(space, "After the deletions");
    assert!(!boards.contains(&again), "board ids are never reused");
    assert!(sim.add_column(other, "New") > column && sim.add_lane(other, "New") > lane);

    // A user: gone from every listing; cards keep naming them.
    let user = sim.users_json()[3]["id"].as_i64().unwrap();
    sim.delete_user(user);
    assert!(!ids(&get_list(&sim, "/users?include_inactive=true&limit=100").await).contains(&user));
    assert!(!ids(&sim.users_json()).contains(&user));
}

#[test]
#[should_panic(expected = "holds cards")]
fn a_column_holding_cards_cannot_be_deleted() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sim = runtime.block_on(Simulator::start(SimConfig::small())).unwrap();
    let card = sim.cards_json()[0].clone();
    sim.delete_column(card["column_id"].as_i64().unwrap());
}

#[tokio::test]
async fn card_paging_knobs_clamp_and_ignore() {
    let sim = Simulator::start(SimConfig { cards: 250, ..SimConfig::small() }).await.unwrap();
    let first = get_list(&sim, "/cards?limit=100&offset=0&order_by=updated").await;
    let second = get_list(&sim, "/cards?limit=100&offset=100&order_by=updated").await;
    assert_eq!((first.len(), second.len()), (100, 100));

    sim.set_faults(Faults { cards_page_cap: Some(30), ..Faults::default() });
    let page = get_list(&sim, "/cards?limit=100&offset=0&order_by=updated").await;
    assert_eq!(ids(&page), ids(&first[..30]), "clamped silently to 30");
    assert_eq!(get_list(&sim, "/users?limit=100").await.len(), 100, "other routes are not clamped");

    sim.set_faults(Faults { cards_ignore_offset: true, ..Faults::default() });
    assert_eq!(ids(&get_list(&sim, "/cards?limit=100&offset=100&order_by=updated").await), ids(&first));
    let after = first[99]["updated"].as_str().unwrap();
    let keyset = get_list(&sim, &format!("/cards?limit=100&updated_after={after}&order_by=updated")).await;
    assert_eq!(ids(&keyset), ids(&second), "updated_after still works");

    sim.set_faults(Faults { cards_ignore_updated_after: true, ..Faults::default() });
    let ignored = get_list(&sim, &format!("/cards?limit=100&updated_after={after}&order_by=updated")).await;
    assert_eq!(ids(&ignored), ids(&first));
    sim.set_faults(Faults::default());
    assert_eq!(get_list(&sim, "/cards?limit=100&offset=100&order_by=updated").await, second);
}

#[test]
#[should_panic(expected = "unknown card id")]
fn mutations_panic_on_unknown_ids() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sim = runtime.block_on(Simulator::start(SimConfig::small())).unwrap();
    sim.archive_card(1);
}

type Received = Arc<Mutex<Vec<(Value, Option<String>)>>>;

/// A webhook receiver on 127.0.0.1:0 recording every body (and any signature-like header).
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    async fn hook(State(received): State<Received>, headers: axum::http::HeaderMap, Json(body): Json<Value>) {
        let signature = headers.keys().find(|k| k.as_str().contains("signature")).map(|k| k.to_string());
        received.lock().unwrap().push((body, signature));
    }
    let app = Router::new().route("/hook", post(hook)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test]
async fn webhooks_are_kaiten_shaped_and_in_order() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let (url, received) = receiver().await;
    let board = sim.board_ids()[0];

    sim.create_card(board, "before the URL is set"); // not delivered
    sim.set_webhook_url(Some(url));
    let card = sim.create_card(board, "Hooked");
    let id = card["id"].as_i64().unwrap();
    sim.update_card(id, json!({"title": "Hooked again"}));
    let target = sim.column_ids(sim.board_ids()[2])[0];
    let before_move = sim.card_json(id).unwrap();
    let moved = sim.move_card(id, target, None);
    sim.archive_card(id);
    sim.delete_card(id); // Kaiten sends no card:remove
    let new_board = sim.add_board(sim.space_ids()[0], "Hooked board");
    let tag = sim.add_tag("hooked");
    sim.update_space(sim.space_ids()[0], json!({"title": "Hooked space"}));
    // Nor anything for users, select values, columns or lanes.
    sim.deactivate_user(sim.users_json()[3]["id"].as_i64().unwrap());
    sim.rename_column(target, "Renamed column");
    sim.rename_lane(sim.lane_ids(board)[0], "Renamed lane");
    assert!(sim.flush_webhooks(Duration::from_secs(5)).await);

    let events = received.lock().unwrap().clone();
    assert!(events.iter().all(|(_, signature)| signature.is_none()), "Kaiten signs nothing");
    let events: Vec<Value> = events.into_iter().map(|(body, _)| body).collect();
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["card:add", "card:update", "card:update", "card:update", "board:add", "tag:add", "space:update"]
    );
    let keys = |v: &Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };

    // card:add carries a few fields, not the card.
    let add = &events[0]["data"];
    assert_eq!(keys(add), ["author", "created", "description", "files", "id", "title"]);
    assert_eq!(add["id"], id);
    assert_eq!(add["title"], "Hooked");
    assert_eq!(add["author"]["id"], sim.users_json()[0]["id"]);
    assert!(add.get("board_id").is_none() && add.get("column_id").is_none());

    // card:update: partial old and changes, with noise.
    let update = &events[1]["data"];
    assert_eq!(keys(update), ["author", "changes", "old"]);
    assert_eq!(update["old"]["title"], "Hooked");
    assert_eq!(update["old"]["id"], id);
    assert_eq!(update["changes"]["title"], "Hooked again");
    assert_eq!(keys(&update["changes"]), ["counters_recalculated_at", "title", "updated", "version"]);
    assert_eq!(keys(&update["old"]), ["id", "title", "updated", "version"]);
    assert!(update["author"]["id"].is_i64());

    let mv = &events[2]["data"];
    assert_eq!(mv["changes"]["column_id"], moved["column_id"]);
    assert_eq!(mv["changes"]["board_id"], moved["board_id"]);
    assert!(mv["changes"].get("lane_id").is_some());
    assert_eq!(mv["old"]["column_id"], before_move["column_id"]);
    assert!(mv["old"].get("title").is_none(), "old holds only the changed keys");
    assert!(mv["changes"].get("title").is_none(), "changes hold only the changed keys");

    let archive = &events[3]["data"]["changes"];
    assert_eq!((archive["archived"].as_bool(), archive["condition"].as_i64()), (Some(true), Some(2)));
    assert_eq!(events[3]["data"]["old"]["condition"], 1);

    assert_eq!(events[4]["data"]["id"], new_board);
    assert!(events[4]["data"].get("space_id").is_none(), "board:add is a notification too");
    assert_eq!(events[5]["data"]["id"], tag);
    let space = &events[6]["data"];
    assert_eq!(space["changes"]["title"], "Hooked space");
    assert!(space["old"]["title"].is_string());
    assert_eq!(keys(&space["changes"]), ["title", "updated"]);
    assert_eq!(keys(&space["old"]), ["id", "title", "updated"]);
}

#[tokio::test]
async fn shuffled_webhooks_all_arrive() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let (url, received) = receiver().await;
    sim.set_webhook_url(Some(url));
    sim.set_webhook_shuffle(true);
    let board = sim.board_ids()[0];
    for i in 0..20 {
        sim.create_card(board, &format!("shuffled {i}"));
    }
    assert!(sim.flush_webhooks(Duration::from_secs(5)).await);
    let titles: Vec<String> =
        received.lock().unwrap().iter().map(|(b, _)| b["data"]["title"].as_str().unwrap().to_owned()).collect();
    assert_eq!(titles.len(), 20);
    let created: Vec<String> = (0..20).map(|i| format!("shuffled {i}")).collect();
    // Shuffled: not in the order of the mutations (each delivery waits a random 0-50 ms, so the
    // chance that 20 of them still arrive in order is negligible).
    assert_ne!(titles, created, "shuffled deliveries arrived in mutation order");
    let mut sorted = titles.clone();
    sorted.sort();
    let mut expected = created.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every delivery arrived, once");

    // Without the shuffle, the same mutations arrive in order.
    received.lock().unwrap().clear();
    sim.set_webhook_shuffle(false);
    for i in 0..20 {
        sim.create_card(board, &format!("in order {i}"));
    }
    assert!(sim.flush_webhooks(Duration::from_secs(5)).await);
    let titles: Vec<String> =
        received.lock().unwrap().iter().map(|(b, _)| b["data"]["title"].as_str().unwrap().to_owned()).collect();
    assert_eq!(titles, (0..20).map(|i| format!("in order {i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn server_errors_are_html_5xx() {
    let sim = Simulator::start(SimConfig {
        faults: Faults { server_error_rate: 1.0, ..Faults::default() },
        ..SimConfig::small()
    })
    .await
    .unwrap();
    for _ in 0..10 {
        let response = get(&sim, "/cards").await;
        assert!([500, 502, 503].contains(&response.status().as_u16()));
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(response.text().await.unwrap().contains("<html>"));
    }
    // Faults come after auth: a bad token is still a 401.
    let response =
        reqwest::Client::new().get(format!("{}/cards", sim.base_url())).bearer_auth("bad").send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn dropped_connections_are_connection_errors() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    sim.set_faults(Faults { drop_rate: 1.0, ..Faults::default() });
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for _ in 0..3 {
        let error = client.get(format!("{}/cards", sim.base_url())).bearer_auth(sim.token()).send().await.unwrap_err();
        assert!(!error.is_timeout(), "closed, not hung: {error:?}");
        assert!(error.is_request() || error.is_connect(), "{error:?}");
    }
    sim.set_faults(Faults::none());
    assert_eq!(get(&sim, "/cards").await.status(), 200);
    assert_eq!(sim.request_count(), 4);
}

#[tokio::test]
async fn truncated_bodies_are_invalid_json_with_a_json_content_type() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let full = get(&sim, "/cards?limit=10").await.bytes().await.unwrap();
    sim.set_faults(Faults { truncate_rate: 1.0, ..Faults::default() });
    let response = get(&sim, "/cards?limit=10").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), full.len() / 2);
    assert_eq!(&body[..], &full[..full.len() / 2]);
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

#[tokio::test]
async fn rate_limit_storms_answer_429_with_retry_after() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    sim.set_faults(Faults {
        rate_limited_rate: 1.0,
        rate_limited_retry_after: Duration::from_millis(250),
        ..Faults::default()
    });
    let response = get(&sim, "/users/current").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "0.25");
    // A storm: one drawn 429 makes the next `rate_limited_burst` requests 429 too.
    sim.set_faults(Faults { rate_limited_rate: 0.0, ..Faults::default() });
    assert_eq!(get(&sim, "/users/current").await.status(), 200);
    sim.set_faults(Faults { rate_limited_rate: 1.0, rate_limited_burst: 3, ..Faults::default() });
    assert_eq!(get(&sim, "/users/current").await.status(), 429, "starts the storm");
    sim.set_faults(Faults { rate_limited_rate: f64::MIN_POSITIVE, rate_limited_burst: 3, ..Faults::default() });
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(get(&sim, "/users/current").await.status().as_u16());
        }
        out
    };
    assert_eq!(statuses, vec![429, 429, 429, 200], "three more 429s, then the storm is over");
}

#[tokio::test]
async fn slow_responses_and_fault_rates() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    sim.set_faults(Faults { slow_rate: 1.0, slow_by: Duration::from_millis(200), ..Faults::default() });
    let started = Instant::now();
    assert_eq!(get(&sim, "/users/current").await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));

    // A partial rate hits roughly that share of requests.
    sim.set_faults(Faults { server_error_rate: 0.3, ..Faults::default() });
    let mut errors = 0;
    for _ in 0..200 {
        if get(&sim, "/users/current").await.status().is_server_error() {
            errors += 1;
        }
    }
    assert!((30..=90).contains(&errors), "{errors} of 200");
}

#[tokio::test]
async fn fault_sequence_is_deterministic_in_the_seed() {
    async fn pattern() -> Vec<u16> {
        let sim = Simulator::start(SimConfig {
            faults: Faults { server_error_rate: 0.5, ..Faults::default() },
            ..SimConfig::small()
        })
        .await
        .unwrap();
        let mut out = Vec::new();
        for _ in 0..30 {
            out.push(get(&sim, "/users/current").await.status().as_u16());
        }
        out
    }
    assert_eq!(pattern().await, pattern().await);
}
