//! Helpers shared by the integration tests.
#![allow(dead_code)]

use kaiten_sim::Simulator;
use serde_json::Value;

/// A GET against the simulator with its token.
pub async fn get(sim: &Simulator, path_and_query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{}", sim.base_url(), path_and_query))
        .bearer_auth(sim.token())
        .send()
        .await
        .expect("request reaches the simulator")
}

/// A GET that must succeed with JSON.
pub async fn get_json(sim: &Simulator, path_and_query: &str) -> Value {
    let response = get(sim, path_and_query).await;
    assert_eq!(response.status(), 200, "GET {path_and_query}");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    response.json().await.expect("valid JSON")
}

/// A GET of a list that must succeed.
pub async fn get_list(sim: &Simulator, path_and_query: &str) -> Vec<Value> {
    match get_json(sim, path_and_query).await {
        Value::Array(items) => items,
        other => panic!("expected an array from {path_and_query}, got {other}"),
    }
}

/// Pages through `GET /cards` with `query` (may be empty) until a short page; returns all rows.
pub async fn all_cards(sim: &Simulator, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = get_list(sim, &format!("/cards?limit=100&offset={offset}&{query}")).await;
        let n = page.len();
        out.extend(page);
        if n < 100 {
            return out;
        }
        offset += n;
    }
}

/// Ids of a list of JSON objects.
pub fn ids(items: &[Value]) -> Vec<i64> {
    items.iter().map(|v| v["id"].as_i64().expect("an integer id")).collect()
}

/// `updated` of a card as milliseconds since the epoch.
pub fn updated_ms(card: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(card["updated"].as_str().expect("updated is a string"))
        .expect("updated is RFC 3339")
        .timestamp_millis()
}
