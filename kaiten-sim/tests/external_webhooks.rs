//! Kaiten's webhook management routes (`/spaces/{id}/external-webhooks`) and per-space delivery.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use common::{get, get_list};
use kaiten_sim::{SimConfig, Simulator, WebhookDenial};
use serde_json::{json, Value};

async fn send(sim: &Simulator, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request =
        reqwest::Client::new().request(method, format!("{}{path}", sim.base_url())).bearer_auth(sim.token());
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn post_hook(sim: &Simulator, space: i64, url: &str) -> reqwest::Response {
    send(sim, reqwest::Method::POST, &format!("/spaces/{space}/external-webhooks"), Some(json!({ "url": url }))).await
}

#[tokio::test]
async fn one_webhook_per_space_created_listed_and_patched() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let space = sim.space_ids()[0];
    assert!(get_list(&sim, &format!("/spaces/{space}/external-webhooks")).await.is_empty());

    let response = post_hook(&sim, space, "https://example.com/hook/one").await;
    assert_eq!(response.status(), 200);
    let hook: Value = response.json().await.unwrap();
    assert_eq!(hook["url"], "https://example.com/hook/one");
    assert_eq!(hook["enabled"], true);
    assert_eq!(hook["space_id"], space);
    let id = hook["id"].as_i64().unwrap();
    assert_eq!(get_list(&sim, &format!("/spaces/{space}/external-webhooks")).await, std::slice::from_ref(&hook));

    // A second one in the same space is refused with Kaiten's JSON message.
    let second = post_hook(&sim, space, "https://example.com/hook/two").await;
    assert_eq!(second.status(), 400);
    assert!(second.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let message: Value = second.json().await.unwrap();
    assert!(message["message"].as_str().unwrap().contains("already exists"), "{message}");

    // PATCH repoints and disables; each field is optional.
    let path = format!("/spaces/{space}/external-webhooks/{id}");
    let patched: Value =
        send(&sim, reqwest::Method::PATCH, &path, Some(json!({"url": "https://example.com/hook/new"})))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(
        (patched["url"].as_str(), patched["enabled"].as_bool()),
        (Some("https://example.com/hook/new"), Some(true))
    );
    let patched: Value =
        send(&sim, reqwest::Method::PATCH, &path, Some(json!({"enabled": false}))).await.json().await.unwrap();
    assert_eq!(
        (patched["url"].as_str(), patched["enabled"].as_bool()),
        (Some("https://example.com/hook/new"), Some(false))
    );
    assert_eq!(sim.external_webhooks_json(), [patched]);

    // GET by id and DELETE: the path exists, the method does not.
    assert_eq!(get(&sim, &path).await.status(), 405);
    assert_eq!(send(&sim, reqwest::Method::DELETE, &path, None).await.status(), 405);
    // Unknown webhook, or another space's: 404.
    let other = sim.space_ids()[1];
    let elsewhere = format!("/spaces/{other}/external-webhooks/{id}");
    assert_eq!(send(&sim, reqwest::Method::PATCH, &elsewhere, Some(json!({"enabled": true}))).await.status(), 404);
    assert_eq!(get(&sim, "/spaces/999999/external-webhooks").await.status(), 404);
}

#[tokio::test]
async fn urls_are_checked_and_limited_to_4096_characters() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let space = sim.space_ids()[0];
    let base = "https://example.com/";
    let longest = format!("{base}{}", "a".repeat(4096 - base.len()));
    let too_long = format!("{longest}a");
    let response = post_hook(&sim, space, &too_long).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("4096"), "{body}");
    for bad in ["", "not a url", "ftp://example.com/x"] {
        assert_eq!(post_hook(&sim, space, bad).await.status(), 400, "{bad:?}");
    }
    let list = format!("/spaces/{space}/external-webhooks");
    assert_eq!(send(&sim, reqwest::Method::POST, &list, Some(json!({}))).await.status(), 400);
    assert_eq!(post_hook(&sim, space, &longest).await.status(), 200);
    let id = sim.external_webhooks_json()[0]["id"].as_i64().unwrap();
    let path = format!("/spaces/{space}/external-webhooks/{id}");
    assert_eq!(send(&sim, reqwest::Method::PATCH, &path, Some(json!({"url": too_long}))).await.status(), 400);
    assert_eq!(send(&sim, reqwest::Method::PATCH, &path, Some(json!({"enabled": "yes"}))).await.status(), 400);
}

#[tokio::test]
async fn denied_spaces_answer_402_with_a_message_or_403_without_a_body() {
    let sim = Simulator::start(SimConfig { spaces: 3, ..SimConfig::small() }).await.unwrap();
    let spaces = sim.space_ids();
    sim.set_external_webhook_denial(spaces[1], Some(WebhookDenial::NotInPlan));
    sim.set_external_webhook_denial(spaces[2], Some(WebhookDenial::NotAdmin));

    let listed = get(&sim, &format!("/spaces/{}/external-webhooks", spaces[1])).await;
    assert_eq!(listed.status(), 402);
    let body: Value = listed.json().await.unwrap();
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(post_hook(&sim, spaces[1], "https://example.com/x").await.status(), 402);

    let listed = get(&sim, &format!("/spaces/{}/external-webhooks", spaces[2])).await;
    assert_eq!(listed.status(), 403);
    assert!(listed.bytes().await.unwrap().is_empty(), "403 carries no body");
    assert_eq!(post_hook(&sim, spaces[2], "https://example.com/x").await.status(), 403);

    // The others are untouched, and lifting a denial restores the routes.
    assert_eq!(post_hook(&sim, spaces[0], "https://example.com/x").await.status(), 200);
    sim.set_external_webhook_denial(spaces[1], None);
    assert_eq!(post_hook(&sim, spaces[1], "https://example.com/x").await.status(), 200);
}

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A receiver with two paths, `/a` and `/b`, recording which one each event reached.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app =
        Router::new()
            .route(
                "/a",
                post(|State(r): State<Received>, Json(b): Json<Value>| async move {
                    r.lock().unwrap().push(("a".into(), b))
                }),
            )
            .route(
                "/b",
                post(|State(r): State<Received>, Json(b): Json<Value>| async move {
                    r.lock().unwrap().push(("b".into(), b))
                }),
            )
            .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, received)
}

#[tokio::test]
async fn a_space_with_an_enabled_webhook_gets_its_events_there() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let (base, received) = receiver().await;
    sim.set_webhook_url(Some(format!("{base}/a")));
    let spaces = sim.space_ids();
    let hooked_board = sim.boards_json().iter().find(|b| b["space_id"] == spaces[0]).unwrap()["id"].as_i64().unwrap();
    let other_board = sim.boards_json().iter().find(|b| b["space_id"] == spaces[1]).unwrap()["id"].as_i64().unwrap();
    let hook: Value = post_hook(&sim, spaces[0], &format!("{base}/b")).await.json().await.unwrap();

    let in_hooked = sim.create_card(hooked_board, "to b")["id"].as_i64().unwrap();
    sim.update_card(in_hooked, json!({"title": "to b again"}));
    sim.create_card(other_board, "to a");
    sim.add_tag("company-wide, to a");
    sim.update_space(spaces[0], json!({"title": "renamed, to b"}));
    assert!(sim.flush_webhooks(Duration::from_secs(5)).await);
    let got: Vec<(String, String)> = received
        .lock()
        .unwrap()
        .drain(..)
        .map(|(path, body)| (path, body["event"].as_str().unwrap().to_owned()))
        .collect();
    let expected =
        [("b", "card:add"), ("b", "card:update"), ("a", "card:add"), ("a", "tag:add"), ("b", "space:update")];
    assert_eq!(got, expected.map(|(p, e)| (p.to_owned(), e.to_owned())));

    // Disabled: back to the global URL; without one, nothing.
    let path = format!("/spaces/{}/external-webhooks/{}", spaces[0], hook["id"]);
    send(&sim, reqwest::Method::PATCH, &path, Some(json!({"enabled": false}))).await;
    sim.update_card(in_hooked, json!({"title": "to a now"}));
    sim.set_webhook_url(None);
    sim.update_card(in_hooked, json!({"title": "nowhere"}));
    send(&sim, reqwest::Method::PATCH, &path, Some(json!({"enabled": true}))).await;
    sim.update_card(in_hooked, json!({"title": "to b, global URL unset"}));
    assert!(sim.flush_webhooks(Duration::from_secs(5)).await);
    let got: Vec<(String, String)> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(path, body)| (path.clone(), body["data"]["changes"]["title"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(got, [("a".to_owned(), "to a now".to_owned()), ("b".to_owned(), "to b, global URL unset".to_owned())]);
}
