//! The read API: shapes, paging, filters, orders, auth, errors.

mod common;

use common::{all_cards, get, get_json, get_list, ids, updated_ms};
use kaiten_sim::{SimConfig, Simulator};
use serde_json::Value;

#[tokio::test]
async fn same_seed_same_company_other_seed_other_company() {
    let a = Simulator::start(SimConfig::small()).await.unwrap();
    let b = Simulator::start(SimConfig::small()).await.unwrap();
    let c = Simulator::start(SimConfig { seed: 43, ..SimConfig::small() }).await.unwrap();
    assert_eq!(a.spaces_json(), b.spaces_json());
    assert_eq!(a.boards_json(), b.boards_json());
    assert_eq!(a.users_json(), b.users_json());
    assert_eq!(a.custom_properties_json(), b.custom_properties_json());
    assert_eq!(a.cards_json(), b.cards_json());
    assert_ne!(a.cards_json(), c.cards_json());

    let page_a = get(&a, "/cards?order_by=updated").await.bytes().await.unwrap();
    let page_b = get(&b, "/cards?order_by=updated").await.bytes().await.unwrap();
    assert_eq!(page_a, page_b);
}

#[tokio::test]
async fn small_company_has_the_documented_shape() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    assert_eq!(sim.space_ids().len(), 2);
    assert_eq!(sim.board_ids().len(), 4);
    assert_eq!(sim.users_json().len(), 105);
    assert_eq!(sim.active_users_json().len(), 100);
    assert_eq!(sim.tags_json().len(), 4);
    assert_eq!(sim.card_types_json().len(), 3);
    assert_eq!(sim.card_ids().len(), 60);
    let props = sim.custom_properties_json();
    let mut types: Vec<&str> = props.iter().map(|p| p["type"].as_str().unwrap()).collect();
    types.sort_unstable();
    assert_eq!(types, ["checkbox", "date", "email", "number", "select", "string", "url", "user"]);
    let select = props.iter().find(|p| p["type"] == "select").unwrap();
    assert!(!sim.select_values_json(select["id"].as_i64().unwrap()).is_empty());

    let board = sim.board_ids()[0];
    let columns = sim.columns_json(board);
    assert_eq!(columns.len(), 3);
    let with_subs: Vec<&Value> = columns.iter().filter(|c| !c["subcolumns"].as_array().unwrap().is_empty()).collect();
    assert_eq!(with_subs.len(), 1);
    for sub in with_subs[0]["subcolumns"].as_array().unwrap() {
        assert_eq!(sub["column_id"], with_subs[0]["id"]);
    }
    assert_eq!(sim.column_ids(board).len(), 5);
    assert_eq!(sim.lane_ids(board).len(), 3, "two live lanes and an archived one");

    // Timestamps: ISO 8601 UTC with milliseconds, all in the past.
    for card in sim.cards_json() {
        let updated = card["updated"].as_str().unwrap();
        assert_eq!(updated.len(), 24, "{updated}");
        assert!(updated.ends_with('Z') && updated < "2026-01-01T00:00:00.000Z", "{updated}");
        assert!(card["created"].as_str().unwrap() <= updated);
    }
}

#[tokio::test]
async fn every_route_serves_its_list() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let me = get_json(&sim, "/users/current").await;
    assert_eq!(me["id"], sim.users_json()[0]["id"]);

    let spaces = get_list(&sim, "/spaces?limit=1&offset=1").await;
    assert_eq!(spaces, sim.spaces_json(), "spaces ignore paging");
    assert_eq!(spaces[0]["boards"].as_array().unwrap().len(), 2);
    assert!(spaces[0]["boards"][0]["title"].is_string());

    let space = sim.space_ids()[0];
    let boards = get_list(&sim, &format!("/spaces/{space}/boards")).await;
    assert_eq!(boards.len(), 2);
    assert!(boards.iter().all(|b| b["space_id"] == space && b.get("cards").is_none()));

    let board = sim.board_ids()[0];
    assert_eq!(get_list(&sim, &format!("/boards/{board}/columns")).await, sim.columns_json(board));
    assert_eq!(get_list(&sim, &format!("/boards/{board}/lanes")).await, sim.lanes_json(board));
    assert_eq!(get_list(&sim, "/users").await, sim.active_users_json()[..100].to_vec(), "limit defaults to 100");
    assert_eq!(get_list(&sim, "/users?limit=2&offset=99").await.len(), 1);
    assert_eq!(get_list(&sim, "/card-types").await, sim.card_types_json());
    assert_eq!(get_list(&sim, "/tags?limit=1000").await, sim.listed_tags_json());
    assert_eq!(get_list(&sim, "/company/custom-properties").await, sim.custom_properties_json());

    let select = sim.custom_properties_json().into_iter().find(|p| p["type"] == "select").unwrap();
    let values_path = format!("/company/custom-properties/{}/select-values", select["id"]);
    let all = get_list(&sim, &format!("{values_path}?limit=1")).await;
    assert!(all.len() > 1, "limit is ignored without v2_select_search");
    assert_eq!(
        get_list(&sim, &format!("{values_path}?v2_select_search=true&limit=1&offset=1")).await,
        vec![all[1].clone()]
    );

    // The v1 alias.
    let v1 = reqwest::Client::new()
        .get(format!("http://{}/api/v1/users/current", sim.addr()))
        .bearer_auth(sim.token())
        .send()
        .await
        .unwrap();
    assert_eq!(v1.status(), 200);
}

#[tokio::test]
async fn card_shapes() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let page = get_list(&sim, "/cards?limit=5").await;
    for card in &page {
        assert!(card.get("space_id").is_none(), "the list shape has no space_id");
        assert!(card.get("description").is_none(), "description only on request");
        for key in [
            "id",
            "uid",
            "title",
            "state",
            "condition",
            "archived",
            "board_id",
            "column_id",
            "lane_id",
            "sort_order",
            "version",
            "properties",
            "tag_ids",
            "created",
            "updated",
            "path_data",
        ] {
            assert!(card.get(key).is_some(), "missing {key}");
        }
        assert!(card["sort_order"].is_f64());
    }
    let with = get_list(&sim, "/cards?limit=5&additional_card_fields=description").await;
    assert!(with.iter().all(|c| c.get("description").is_some()));
    let snapshot = sim.cards_json();
    let live: Vec<Value> = snapshot.iter().filter(|c| c["condition"] == 1).cloned().collect();
    assert_eq!(with, live[..5].to_vec(), "cards_json is the list shape with description");

    // Property values are typed per property type.
    let props = sim.custom_properties_json();
    let mut seen = std::collections::HashSet::new();
    for card in &snapshot {
        for (key, value) in card["properties"].as_object().unwrap() {
            let id: i64 = key.strip_prefix("id_").unwrap().parse().unwrap();
            let kind = props.iter().find(|p| p["id"] == id).unwrap()["type"].as_str().unwrap();
            seen.insert(kind);
            match kind {
                "select" | "user" => assert!(value.as_array().is_some_and(|a| a.iter().all(Value::is_i64))),
                "date" => {
                    assert!(value["date"].is_string() && value.get("time").is_some() && value.get("tzOffset").is_some())
                }
                "checkbox" => assert!(value.is_boolean()),
                "number" => assert!(value.is_number()),
                _ => assert!(value.is_string()),
            }
        }
    }
    assert_eq!(seen.len(), 8);

    let id = snapshot[0]["id"].as_i64().unwrap();
    let detail = get_json(&sim, &format!("/cards/{id}")).await;
    assert_eq!(detail["id"], id);
    assert!(detail["owner"]["id"].is_i64() && detail["board"]["id"].is_i64() && detail["tags"].is_array());
    assert_eq!(get(&sim, "/cards/1").await.status(), 404);
}

#[tokio::test]
async fn paging_clamps_to_100_and_reaches_the_end() {
    let sim = Simulator::start(SimConfig { cards: 250, ..SimConfig::small() }).await.unwrap();
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = get_list(&sim, &format!("/cards?limit=1000&offset={offset}")).await;
        sizes.push(page.len());
        seen.extend(ids(&page));
        // A page shorter than the clamped size (100), not the asked size, is the last one.
        if page.len() < 100 {
            break;
        }
        offset += page.len();
    }
    // 250 cards, 25 of them archived: the default listing is the 225 live ones.
    assert_eq!(sizes, [100, 100, 25]);
    let live: Vec<i64> =
        sim.cards_json().iter().filter(|c| c["condition"] == 1).map(|c| c["id"].as_i64().unwrap()).collect();
    assert_eq!(seen, live, "default order is id asc, nothing skipped or repeated");
    assert_eq!(get_list(&sim, "/cards").await.len(), 100, "limit defaults to the maximum");
    assert!(get_list(&sim, "/cards?offset=5000").await.is_empty());
}

#[tokio::test]
async fn filters_and_orders() {
    let sim = Simulator::start(SimConfig { cards: 300, ..SimConfig::small() }).await.unwrap();
    // Without `condition` or `archived`, the listing holds live cards only.
    let cards: Vec<Value> = sim.cards_json().into_iter().filter(|c| c["condition"] == 1).collect();
    assert_eq!(cards.len(), 270);

    // updated_after is strict.
    let mut stamps: Vec<i64> = cards.iter().map(updated_ms).collect();
    stamps.sort_unstable();
    let pivot = &cards.iter().find(|c| updated_ms(c) == stamps[150]).unwrap()["updated"];
    let pivot = pivot.as_str().unwrap();
    let after = all_cards(&sim, &format!("updated_after={pivot}&order_by=updated")).await;
    assert_eq!(after.len(), stamps.iter().filter(|&&s| s > stamps[150]).count());
    assert!(after.iter().all(|c| c["updated"].as_str().unwrap() > pivot));
    let before = all_cards(&sim, &format!("updated_before={pivot}")).await;
    assert_eq!(before.len(), stamps.iter().filter(|&&s| s < stamps[150]).count());

    // order_by=updated asc / desc, ties by id.
    let asc = all_cards(&sim, "order_by=updated&order_direction=asc").await;
    assert_eq!(asc.len(), 270);
    assert!(asc
        .windows(2)
        .all(|w| (updated_ms(&w[0]), w[0]["id"].as_i64()) < (updated_ms(&w[1]), w[1]["id"].as_i64())));
    let desc = all_cards(&sim, "order_by=updated&order_direction=desc").await;
    assert!(desc.windows(2).all(|w| updated_ms(&w[0]) >= updated_ms(&w[1])));
    let by_title = all_cards(&sim, "order_by=title").await;
    assert!(by_title.windows(2).all(|w| w[0]["title"].as_str() <= w[1]["title"].as_str()));

    // board_id, space_id, column_id, lane_id.
    let board = sim.board_ids()[1];
    let on_board = all_cards(&sim, &format!("board_id={board}")).await;
    assert_eq!(on_board.len(), cards.iter().filter(|c| c["board_id"] == board).count());
    assert!(!on_board.is_empty() && on_board.iter().all(|c| c["board_id"] == board));
    let space = sim.space_ids()[0];
    let space_boards: Vec<i64> =
        sim.boards_json().iter().filter(|b| b["space_id"] == space).map(|b| b["id"].as_i64().unwrap()).collect();
    let in_space = all_cards(&sim, &format!("space_id={space}")).await;
    assert_eq!(
        in_space.len(),
        cards.iter().filter(|c| space_boards.contains(&c["board_id"].as_i64().unwrap())).count()
    );
    let column = on_board[0]["column_id"].as_i64().unwrap();
    let lane = on_board[0]["lane_id"].as_i64().unwrap();
    let cell = all_cards(&sim, &format!("column_id={column}&lane_id={lane}")).await;
    assert_eq!(cell.len(), cards.iter().filter(|c| c["column_id"] == column && c["lane_id"] == lane).count());

    // condition / archived.
    let archived = all_cards(&sim, "condition=2").await;
    assert_eq!(archived.len(), 30);
    assert!(archived.iter().all(|c| c["archived"] == true && c["condition"] == 2));
    assert_eq!(all_cards(&sim, "archived=true").await, archived);
    assert_eq!(all_cards(&sim, "condition=1").await.len(), 270);
    assert_eq!(all_cards(&sim, "archived=false").await.len(), 270);
    assert!(all_cards(&sim, "condition=3").await.is_empty());

    // states.
    let done = all_cards(&sim, "states=3").await;
    assert!(done.iter().all(|c| c["state"] == 3));
    assert_eq!(all_cards(&sim, "states=1,2,3").await.len(), 270);
    assert_eq!(all_cards(&sim, "states=1,2,3&condition=2").await.len(), 30);
    assert_eq!(all_cards(&sim, "").await.len(), 270);
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_message() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    for query in [
        "updated_after=garbage",
        "limit=-1",
        "offset=x",
        "board_id=abc",
        "order_by=color",
        "order_direction=up",
        "condition=7",
        "archived=maybe",
    ] {
        let response = get(&sim, &format!("/cards?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{query}");
    }
    // Lenient date forms are accepted.
    for query in [
        "updated_after=2025-06-01",
        "updated_after=2025-06-01T00:00:00%2B03:00",
        "updated_after=2025-06-01T00:00:00.000Z",
    ] {
        assert_eq!(get(&sim, &format!("/cards?{query}")).await.status(), 200, "{query}");
    }
}

#[tokio::test]
async fn auth_errors_and_missing_things() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let client = reqwest::Client::new();
    for token in [Some("wrong"), None] {
        let mut request = client.get(format!("{}/cards", sim.base_url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let body = response.text().await.unwrap();
        assert!(!body.is_empty() && serde_json::from_str::<Value>(&body).is_err(), "a plain string body: {body}");
    }

    let empty = |response: reqwest::Response| async move {
        let status = response.status();
        (status, response.bytes().await.unwrap().len())
    };
    assert_eq!(empty(get(&sim, "/boards/1/columns").await).await, (reqwest::StatusCode::NOT_FOUND, 0));
    assert_eq!(empty(get(&sim, "/spaces/1/boards").await).await, (reqwest::StatusCode::NOT_FOUND, 0));
    assert_eq!(empty(get(&sim, "/cards/999").await).await, (reqwest::StatusCode::NOT_FOUND, 0));
    assert_eq!(get(&sim, "/no-such-route").await.status(), 404);
    let post = client.post(format!("{}/cards", sim.base_url())).bearer_auth(sim.token()).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(sim.request_count(), 7);
}

#[tokio::test]
async fn request_log_records_everything_in_order() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    get(&sim, "/cards?limit=10&offset=0").await;
    reqwest::get(format!("{}/users", sim.base_url())).await.unwrap();
    assert_eq!(sim.request_log(), ["GET /api/latest/cards?limit=10&offset=0", "GET /api/latest/users"]);
    assert_eq!(sim.request_count(), 2);
    sim.reset_request_log();
    assert_eq!(sim.request_count(), 0);
    assert!(sim.request_log().is_empty());
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers() {
    let sim = Simulator::start(SimConfig { rate_limit: Some(3.0), ..SimConfig::small() }).await.unwrap();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let response = get(&sim, "/users/current").await;
        let headers = response.headers().clone();
        assert_eq!(headers["x-ratelimit-limit"], "3");
        assert!(headers.contains_key("x-ratelimit-remaining"));
        let reset: u64 = headers["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(reset >= now && reset <= now + 2, "reset is unix seconds");
        statuses.push(response.status().as_u16());
        if response.status() == 429 && limited.is_none() {
            limited = Some((headers, response.text().await.unwrap()));
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let (headers, body) = limited.unwrap();
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(body, "Too many requests, please try again later.");
    assert_eq!(sim.request_count(), 6);

    tokio::time::sleep(std::time::Duration::from_millis(1_050)).await;
    assert_eq!(get(&sim, "/users/current").await.status(), 200, "the window slides");

    sim.set_rate_limit(None);
    for _ in 0..10 {
        let response = get(&sim, "/users/current").await;
        assert_eq!(response.status(), 200);
        assert!(!response.headers().contains_key("x-ratelimit-limit"));
    }
}

#[tokio::test]
async fn latency_delays_every_response() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    sim.set_latency(std::time::Duration::from_millis(150));
    let started = std::time::Instant::now();
    get(&sim, "/users/current").await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let url = format!("{}/users/current", sim.base_url());
    let clone = sim.clone();
    drop(sim);
    assert_eq!(get(&clone, "/users/current").await.status(), 200, "a clone keeps it running");
    drop(clone);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    assert!(client.get(&url).send().await.is_err());

    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let url = format!("{}/users/current", sim.base_url());
    sim.shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(client.get(&url).send().await.is_err());
}
