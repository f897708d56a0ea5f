//! Shared helpers: clients pointed at a mock server, fixtures, and stateful responders.

use std::collections::HashMap;
use std::time::Duration;

use kaiten_client::{KaitenClient, KaitenClientBuilder, RetryPolicy};
use serde_json::{json, Value};
use wiremock::{MockServer, Request, Respond, ResponseTemplate};

/// The token every test client uses; no output may ever contain it.
pub const TOKEN: &str = "tok-3f9a1c-SUPER-SECRET-do-not-log";

/// The API root the client appends to a bare mock server URL.
pub const API: &str = "/api/latest";

pub const SPACES: &str = include_str!("../fixtures/spaces.json");
pub const BOARDS: &str = include_str!("../fixtures/boards.json");
pub const COLUMNS: &str = include_str!("../fixtures/columns.json");
pub const LANES: &str = include_str!("../fixtures/lanes.json");
pub const USERS: &str = include_str!("../fixtures/users.json");
pub const CURRENT_USER: &str = include_str!("../fixtures/current_user.json");
pub const CARD_TYPES: &str = include_str!("../fixtures/card_types.json");
pub const TAGS: &str = include_str!("../fixtures/tags.json");
pub const CUSTOM_PROPERTIES: &str = include_str!("../fixtures/custom_properties.json");
pub const SELECT_VALUES: &str = include_str!("../fixtures/select_values.json");
pub const CARDS: &str = include_str!("../fixtures/cards.json");
pub const CARD: &str = include_str!("../fixtures/card.json");

/// A retry policy with millisecond backoffs, so retry tests run fast on the real clock.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_total_wait: Duration::from_secs(5),
    }
}

/// A builder pointed at `server`, without a client-side rate limit and with fast retries.
pub fn builder(server: &MockServer) -> KaitenClientBuilder {
    KaitenClient::builder().base_url(server.uri()).token(TOKEN).rate_limit(None).retry_policy(fast_retries())
}

/// A client pointed at `server` (see [`builder`]).
pub fn client(server: &MockServer) -> KaitenClient {
    builder(server).build().unwrap()
}

/// `{API}{route}`.
pub fn api(route: &str) -> String {
    format!("{API}{route}")
}

/// A 200 with a JSON body, as Kaiten sends it.
pub fn json_body(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.to_owned(), "application/json; charset=utf-8")
}

/// Kaiten's 429: an HTML body.
pub fn too_many_requests() -> ResponseTemplate {
    ResponseTemplate::new(429)
        .set_body_raw("<html><body>Too many requests, please try again later.</body></html>", "text/html")
}

/// `n` generated records `{"id": first..first+n, ...}` of some entity.
pub fn records(first: i64, n: i64) -> Vec<Value> {
    (first..first + n)
        .map(|id| {
            json!({"id": id, "uid": format!("00000000-0000-4000-8000-{id:012}"), "title": format!("record {id}"),
                         "name": format!("record {id}"), "updated": "2024-10-14T10:48:16.594Z"})
        })
        .collect()
}

fn query(request: &Request) -> HashMap<String, String> {
    request.url.query_pairs().into_owned().collect()
}

/// A route that honours `limit` and `offset`, clamping `limit` to `max`.
pub struct Paged {
    pub items: Vec<Value>,
    pub max: usize,
}

impl Respond for Paged {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let query = query(request);
        let limit = query.get("limit").and_then(|v| v.parse().ok()).unwrap_or(self.max).min(self.max);
        let offset = query.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let page: Vec<Value> = self.items.iter().skip(offset).take(limit).cloned().collect();
        json_body(&Value::Array(page).to_string())
    }
}

/// A route that ignores paging: always the same list.
pub fn always(items: &[Value]) -> ResponseTemplate {
    json_body(&Value::Array(items.to_vec()).to_string())
}
