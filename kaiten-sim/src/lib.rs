//! A simulated Kaiten server over a generated company, for tests, demos and benchmarks.
//!
//! [`Simulator::start`] generates a company from a [`SimConfig`] (deterministic in its seed), binds an
//! HTTP server to `127.0.0.1` on a free port and serves the read API the sync uses, shaped like the real
//! Kaiten API: bare JSON arrays, `limit`/`offset` paging with silently clamped limits, the `GET /cards`
//! filters and orders, bearer auth with a plain-text 401, a sliding-window rate limit with a text/html
//! 429 and `X-RateLimit-*` headers, optional latency and injected faults (5xx, dropped connections,
//! truncated bodies, 429 storms, slow responses). Both `/api/latest` and `/api/v1` prefixes work.
//!
//! It is at least as strict as the real Kaiten (the traps of `kaiten-api.md`): deleted cards vanish
//! from every listing (`condition=3` lists nothing) and `GET /cards/{id}` answers 404; `GET /cards`
//! without `condition` or `archived` lists only live cards; `GET /users` leaves deactivated users out
//! unless `include_inactive=true`; `GET /tags` leaves out tags on no card; `select-values` with
//! `v2_select_search=true` lists only active values unless `conditions` asks for others; lanes come
//! in every condition unless `condition` filters them; some `due_date`s are date-only.
//!
//! The handle also mutates the company (create, update, move, archive, delete cards; add and delete
//! boards, columns, lanes; add tags; update spaces; deactivate and remove users, remove select
//! values, rename columns and lanes). Every
//! mutation stamps a strictly newer `updated` on what it changes (never on a parent: renaming a column
//! does not move its board's `updated`) and, when a webhook URL is set, posts the event Kaiten would
//! send, shaped as Kaiten sends it: `card:add` with only `id, created, title, description, author,
//! files`; `card:update` with partial `old` (the id and the previous values of the changed keys) and
//! `changes` (the new values plus noise: `updated`, `version`, `counters_recalculated_at`), archiving
//! included (`{"archived": true, "condition": 2}`); `board:add` with a few fields; `tag:add`;
//! partial `space:update`. Deleting a card or a board, deactivating or removing a user, removing a
//! select value and column or lane changes send nothing (Kaiten documents no such events). The
//! paging knobs of [`Faults`] make `GET /cards` clamp its page size lower than Kaiten's 100 or
//! ignore `offset` and `updated_after`, like tenants the documentation does not describe.
//!
//! Kaiten's undocumented webhook management is served too: `GET/POST /spaces/{id}/external-webhooks`
//! and `PATCH /spaces/{id}/external-webhooks/{hook_id}` (`{"url", "enabled"}`), with their quirks: one
//! webhook per space (a second `POST` answers 400 with a JSON `message`), URLs of at most 4096
//! characters (400 above), GET by id and DELETE answer 405, and per space a paid feature (402) or an
//! admin-only one (403) as [`Simulator::set_external_webhook_denial`] chooses. Once a space has an
//! enabled external webhook, its events (cards, boards, the space) are delivered there instead of
//! to the handle's [`Simulator::set_webhook_url`].
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kaiten_sim::{SimConfig, Simulator};
//!
//! let sim = Simulator::start(SimConfig::small()).await?;
//! let cards: serde_json::Value = reqwest::Client::new()
//!     .get(format!("{}/cards?limit=100&order_by=updated", sim.base_url()))
//!     .bearer_auth(sim.token())
//!     .send()
//!     .await
//!     .unwrap()
//!     .json()
//!     .await
//!     .unwrap();
//! assert_eq!(cards.as_array().unwrap().len(), 54, "live cards only: 6 of the 60 are archived");
//!
//! let board = sim.board_ids()[0];
//! let card = sim.create_card(board, "Write the release notes");
//! assert_eq!(card["board_id"], board);
//! # Ok(()) }
//! ```
//!
//! Served shapes, for tests that compare field by field:
//! - the `*_json` snapshots are the company's truth, which can be more than a default listing
//!   shows: all users (deactivated too), all tags (on no card too), all select values (inactive
//!   too), all lanes (archived too);
//! - cards carry no `space_id` (the real list does not); `path_data` holds the board, column (and
//!   subcolumn) and lane; `description` is in the list only with `additional_card_fields=description`;
//! - `GET /cards/{id}` adds expanded `owner`, `type`, `board`, `column`, `lane`, `tags`, `members`
//!   (the owner as responsible, `type` 2, and on about two cards in three one or two members of
//!   `type` 1, which may change whenever the card's `version` does);
//! - generated timestamps lie in 2025 (before 2026-01-01T00:00:00Z); mutation timestamps use the wall
//!   clock but are always strictly greater than every timestamp handed out before.

mod cards;
mod company;
mod config;
mod server;
mod shape;
mod webhook;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use tokio::sync::watch;

pub use config::{Faults, SimConfig, WebhookDenial};

use cards::{lock, CursorCache};
use company::Company;
use server::{RateLimiter, Shared};
use webhook::Webhooks;

/// A running simulated Kaiten server and a handle on its company.
///
/// Cheap to clone; clones share the server. The server stops on [`Simulator::shutdown`] or when the
/// last clone is dropped.
///
/// The mutation helpers are meant for tests: they **panic on an unknown id** (card, board, column,
/// lane, space) rather than return an error.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Simulator {
    /// Generates the company and serves it on `127.0.0.1` on a free port.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        Self::start_on(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Generates the company and serves it on `addr`.
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> std::io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let company = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || Company::generate(&config)).await.map_err(std::io::Error::other)?
        };
        let shared = Arc::new(Shared {
            company: RwLock::new(company),
            cursors: Mutex::new(CursorCache::default()),
            token: config.token.clone(),
            limiter: Mutex::new(RateLimiter::new(config.rate_limit)),
            latency: Mutex::new(config.latency),
            faults: Mutex::new(config.faults.clone()),
            fault_rng: Mutex::new(StdRng::seed_from_u64(config.seed ^ 0xFA17)),
            request_count: Default::default(),
            storm_left: Default::default(),
            request_log: Mutex::new(Vec::new()),
            webhooks: Webhooks::new(config.seed),
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(server::serve(listener, shared.clone(), stopped));
        Ok(Simulator { shared, stop: Arc::new(stop), addr })
    }

    /// Stops the server: no new connections are accepted and open ones are closed. Other clones of
    /// the handle keep working as a snapshot of the company.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// The API base URL, `http://127.0.0.1:PORT/api/latest`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/latest", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token the server accepts.
    pub fn token(&self) -> String {
        self.shared.token.clone()
    }

    /// Requests received since the start or the last [`Simulator::reset_request_log`], including the
    /// ones answered 401 or 429 and the ones hit by a fault.
    pub fn request_count(&self) -> u64 {
        self.shared.request_count.load(Ordering::SeqCst)
    }

    /// Every request received, as `"GET /api/latest/cards?limit=100&..."`, in arrival order.
    pub fn request_log(&self) -> Vec<String> {
        lock(&self.shared.request_log).clone()
    }

    /// Clears the request log and resets [`Simulator::request_count`].
    pub fn reset_request_log(&self) {
        let mut log = lock(&self.shared.request_log);
        log.clear();
        self.shared.request_count.store(0, Ordering::SeqCst);
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// Sets (or removes, with `None`) the rate limit, in requests per second; the window restarts empty.
    pub fn set_rate_limit(&self, per_second: Option<f64>) {
        lock(&self.shared.limiter).set(per_second);
    }

    /// Sets the delay added before every response.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.latency) = latency;
    }

    /// Sets (or removes) the URL that mutation events are posted to. A space with an enabled
    /// external webhook (registered through `POST /spaces/{id}/external-webhooks`) gets its events
    /// there instead; events of other spaces and company-wide ones (tags) still come here.
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.shared.webhooks.set_url(url);
    }

    /// Makes a space's external-webhook routes refuse every request (`Some`): 402 with a JSON
    /// `message` for [`WebhookDenial::NotInPlan`], 403 without a body for
    /// [`WebhookDenial::NotAdmin`]; `None` lifts the denial. Panics on an unknown space.
    pub fn set_external_webhook_denial(&self, space_id: i64, denial: Option<WebhookDenial>) {
        let mut company = self.shared.write();
        if company.space(space_id).is_none() {
            panic!("kaiten-sim: unknown space id {space_id}");
        }
        match denial {
            Some(denial) => company.webhook_denials.insert(space_id, denial),
            None => company.webhook_denials.remove(&space_id),
        };
    }

    /// Every external webhook registered through the API, as `GET /spaces/{id}/external-webhooks`
    /// serves them (`id`, `space_id`, `url`, `enabled`, `author_id`, `created`, `updated`).
    pub fn external_webhooks_json(&self) -> Vec<Value> {
        self.shared.read().external_webhooks.iter().cloned().map(Value::Object).collect()
    }

    /// With shuffle on, each delivery waits a random 0–50 ms first, so events may arrive out of order;
    /// off (the default), events are delivered one at a time in mutation order.
    pub fn set_webhook_shuffle(&self, shuffle: bool) {
        self.shared.webhooks.set_shuffle(shuffle);
    }

    /// Webhook deliveries queued and not yet attempted to the end.
    pub fn webhooks_pending(&self) -> u64 {
        self.shared.webhooks.pending()
    }

    /// Waits until every queued webhook delivery has been attempted (at most `timeout`); returns
    /// whether the queue drained.
    pub async fn flush_webhooks(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.webhooks_pending() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    // ---- snapshots ----

    /// All spaces, as `GET /spaces` serves them (with their short `boards[]`).
    pub fn spaces_json(&self) -> Vec<Value> {
        self.shared.read().spaces_json()
    }

    /// All boards of all spaces, as `GET /spaces/{id}/boards` serves them.
    pub fn boards_json(&self) -> Vec<Value> {
        self.shared.read().boards.iter().cloned().map(Value::Object).collect()
    }

    /// The top-level columns of a board with nested `subcolumns[]`, as `GET /boards/{id}/columns`
    /// serves them (empty for an unknown board).
    pub fn columns_json(&self, board_id: i64) -> Vec<Value> {
        self.shared.read().columns_json(board_id)
    }

    /// The lanes of a board, archived ones included, as `GET /boards/{id}/lanes` serves them
    /// without a `condition` filter.
    pub fn lanes_json(&self, board_id: i64) -> Vec<Value> {
        self.shared.read().lanes_json(board_id)
    }

    /// Live and archived cards (not deleted), sorted by id, in the list shape with `description`
    /// (what `GET /cards?additional_card_fields=description` serves).
    pub fn cards_json(&self) -> Vec<Value> {
        self.shared.read().cards.all().into_iter().map(Value::Object).collect()
    }

    /// One card in the list shape with `description`, deleted cards included (with `condition` 3;
    /// the API serves them nowhere).
    pub fn card_json(&self, id: i64) -> Option<Value> {
        self.shared.read().cards.get(id).map(Value::Object)
    }

    /// Ids of deleted cards, ascending.
    pub fn deleted_card_ids(&self) -> Vec<i64> {
        let company = self.shared.read();
        let live: std::collections::HashSet<i64> = company.cards.ids(false).into_iter().collect();
        company.cards.ids(true).into_iter().filter(|id| !live.contains(id)).collect()
    }

    /// One card as `GET /cards/{id}` serves it (expanded objects); `None` when unknown or deleted.
    pub fn card_detail_json(&self, id: i64) -> Option<Value> {
        self.shared.read().card_detail(id)
    }

    /// All users, deactivated ones included, as `GET /users?include_inactive=true` serves them
    /// (plain `GET /users` leaves deactivated ones out: see [`Simulator::active_users_json`]).
    pub fn users_json(&self) -> Vec<Value> {
        self.shared.read().users.iter().cloned().map(Value::Object).collect()
    }

    /// The users plain `GET /users` serves: activated ones only.
    pub fn active_users_json(&self) -> Vec<Value> {
        self.shared.read().users_listed(false).into_iter().cloned().map(Value::Object).collect()
    }

    /// The token's own user, as `GET /users/current` serves it.
    pub fn current_user_json(&self) -> Value {
        self.shared.read().current_user()
    }

    /// All tags, those on no card included (which `GET /tags` leaves out: see
    /// [`Simulator::listed_tags_json`]).
    pub fn tags_json(&self) -> Vec<Value> {
        self.shared.read().tags.iter().cloned().map(Value::Object).collect()
    }

    /// The tags `GET /tags` serves: those on at least one card that is not deleted.
    pub fn listed_tags_json(&self) -> Vec<Value> {
        self.shared.read().tags_listed().into_iter().cloned().map(Value::Object).collect()
    }

    /// All card types, as `GET /card-types` serves them.
    pub fn card_types_json(&self) -> Vec<Value> {
        self.shared.read().card_types.iter().cloned().map(Value::Object).collect()
    }

    /// All custom property definitions, as `GET /company/custom-properties` serves them.
    pub fn custom_properties_json(&self) -> Vec<Value> {
        self.shared.read().props.iter().cloned().map(Value::Object).collect()
    }

    /// Every select value of a custom property, inactive and removed ones included, as
    /// `.../select-values?v2_select_search=true&conditions[]=active&conditions[]=inactive` serves
    /// them (empty for a property that is not a select). Without `conditions` only the values with
    /// `condition` `"active"` are served.
    pub fn select_values_json(&self, property_id: i64) -> Vec<Value> {
        self.shared.read().select_values_of(property_id)
    }

    /// Ids of all boards.
    pub fn board_ids(&self) -> Vec<i64> {
        self.shared.read().boards.iter().filter_map(|b| b.get("id").and_then(Value::as_i64)).collect()
    }

    /// Ids of all spaces.
    pub fn space_ids(&self) -> Vec<i64> {
        self.shared.read().spaces.iter().filter_map(|s| s.get("id").and_then(Value::as_i64)).collect()
    }

    /// Ids of all columns of a board, top-level and sub: each top-level column (by position) followed
    /// by its subcolumns. Cards live only in columns without subcolumns and in subcolumns.
    pub fn column_ids(&self, board_id: i64) -> Vec<i64> {
        self.shared.read().column_ids(board_id)
    }

    /// Ids of the lanes of a board (archived ones included), by position.
    pub fn lane_ids(&self, board_id: i64) -> Vec<i64> {
        self.lanes_json(board_id).iter().filter_map(|l| l["id"].as_i64()).collect()
    }

    /// Ids of live and archived cards (not deleted), ascending.
    pub fn card_ids(&self) -> Vec<i64> {
        self.shared.read().cards.ids(false)
    }

    /// Number of cards ever generated or created, deleted ones included.
    pub fn card_count_including_deleted(&self) -> usize {
        self.shared.read().cards.len()
    }

    // ---- mutations ----

    fn mutate<T>(&self, f: impl FnOnce(&mut Company) -> (T, Vec<Value>)) -> T {
        let (result, events) = {
            let mut company = self.shared.write();
            let (result, events) = f(&mut company);
            let routed: Vec<(Option<String>, Value)> = events
                .into_iter()
                .map(|event| (company.event_space(&event).and_then(|space| company.webhook_target(space)), event))
                .collect();
            (result, routed)
        };
        self.shared.webhooks.send(events);
        result
    }

    /// Creates a live card on a board, in its first column (first subcolumn if it has any) and first
    /// live lane, owned by the token's user; sends `card:add` (a few fields, not the card). Returns
    /// the card (list shape with `description`). Panics on an unknown board.
    pub fn create_card(&self, board_id: i64, title: &str) -> Value {
        Value::Object(self.mutate(|c| c.create_card(board_id, title)))
    }

    /// Merges `changes` (a JSON object) into the card's top-level fields, then stamps `updated` and bumps
    /// `version`; sends `card:update` with the previous and new values of the changed fields only. Fields are stored as
    /// given, except `id`, `updated` and `version` (use [`Simulator::move_card`] to move, so that
    /// `board_id`, `state` and `path_data` follow). Panics on an unknown card or a non-object.
    pub fn update_card(&self, id: i64, changes: Value) -> Value {
        Value::Object(self.mutate(|c| c.update_card(id, changes)))
    }

    /// Moves a card to a column (its first subcolumn if it has subcolumns), possibly on another board:
    /// `board_id` and `state` follow the column. With `lane_id` `None` the card keeps its lane when it
    /// stays on the board, else goes to the board's first live lane. Sends `card:update` whose `changes`
    /// carry `board_id`, `column_id` and `lane_id`. Panics on an unknown card, column or lane.
    pub fn move_card(&self, id: i64, column_id: i64, lane_id: Option<i64>) -> Value {
        Value::Object(self.mutate(|c| c.move_card(id, column_id, lane_id)))
    }

    /// Archives a card (`archived` true, `condition` 2); sends `card:update`. Panics on an unknown card.
    pub fn archive_card(&self, id: i64) -> Value {
        Value::Object(self.mutate(|c| c.archive_card(id)))
    }

    /// Deletes a card: it vanishes from every listing (`condition=3` included) and `GET /cards/{id}`
    /// answers 404. Like Kaiten, sends no event. [`Simulator::card_json`] still shows it (with
    /// `condition` 3). Panics on an unknown card.
    pub fn delete_card(&self, id: i64) {
        self.mutate(|c| ((), c.delete_card(id)));
    }

    /// Deactivates a user (`activated` false, `role` 3): plain `GET /users` leaves them out, cards
    /// keep naming them. No event (Kaiten has none for users). Panics on an unknown user.
    pub fn deactivate_user(&self, id: i64) {
        self.mutate(|c| (c.deactivate_user(id), Vec::new()));
    }

    /// Removes a select value as Kaiten does: it stays, with `deleted` true and `condition`
    /// `"inactive"` (listed only when `conditions` asks for inactive values), and cards keep holding
    /// it; the property's `updated` does not move. No event. Panics when the property has no such value.
    pub fn remove_select_value(&self, property_id: i64, value_id: i64) {
        self.mutate(|c| (c.remove_select_value(property_id, value_id), Vec::new()));
    }

    /// Renames a column or subcolumn (its own `updated` moves, its board's does not; cards'
    /// `path_data` keep the title they were last written with). No event. Panics on an unknown column.
    pub fn rename_column(&self, column_id: i64, title: &str) {
        self.mutate(|c| (c.rename_column(column_id, title), Vec::new()));
    }

    /// Renames a lane, like [`Simulator::rename_column`]. No event. Panics on an unknown lane.
    pub fn rename_lane(&self, lane_id: i64, title: &str) {
        self.mutate(|c| (c.rename_lane(lane_id, title), Vec::new()));
    }

    /// Adds a board to a space with two columns (Queue, Done) and one lane; sends `board:add` (its
    /// `id`, `created`, `title`, `description` and the author). Returns
    /// its id. Panics on an unknown space.
    pub fn add_board(&self, space_id: i64, title: &str) -> i64 {
        self.mutate(|c| c.add_board(space_id, title))
    }

    /// Adds a top-level (in progress) column at the end of a board; returns its id. Kaiten sends no
    /// event for columns. Panics on an unknown board.
    pub fn add_column(&self, board_id: i64, title: &str) -> i64 {
        self.mutate(|c| (c.add_column(board_id, title), Vec::new()))
    }

    /// Adds a live lane at the end of a board; returns its id. No event. Panics on an unknown board.
    pub fn add_lane(&self, board_id: i64, title: &str) -> i64 {
        self.mutate(|c| (c.add_lane(board_id, title), Vec::new()))
    }

    /// Adds a tag; sends `tag:add`. Returns its id.
    pub fn add_tag(&self, name: &str) -> i64 {
        self.mutate(|c| c.add_tag(name))
    }

    /// Deletes a board: it vanishes from `GET /spaces` and `GET /spaces/{id}/boards`, its columns
    /// and lanes go with it (`GET /boards/{id}/columns` and `/lanes` answer 404), and its cards are
    /// deleted like [`Simulator::delete_card`] does. No event (Kaiten documents none). Panics on an
    /// unknown board.
    pub fn delete_board(&self, id: i64) {
        self.mutate(|c| (c.delete_board(id), Vec::new()));
    }

    /// Deletes a column that holds no card (a top-level column goes with its subcolumns): it
    /// vanishes from its board's `GET /boards/{id}/columns`. No event. Panics on an unknown column
    /// or one holding a card (move them first, as Kaiten asks).
    pub fn delete_column(&self, id: i64) {
        self.mutate(|c| (c.delete_column(id), Vec::new()));
    }

    /// Deletes a lane that holds no card: it vanishes from `GET /boards/{id}/lanes`. No event.
    /// Panics on an unknown lane or one holding a card.
    pub fn delete_lane(&self, id: i64) {
        self.mutate(|c| (c.delete_lane(id), Vec::new()));
    }

    /// Removes a user from the company: `GET /users` no longer lists them, not even with
    /// `include_inactive=true`, while cards keep naming them. (Kaiten's own API deactivates users,
    /// see [`Simulator::deactivate_user`]; removal is here to exercise deletion detection.) No
    /// event. Panics on an unknown user or the token's own user.
    pub fn delete_user(&self, id: i64) {
        self.mutate(|c| (c.delete_user(id), Vec::new()));
    }

    /// Merges `changes` (a JSON object) into a space and stamps its `updated`; sends `space:update`
    /// with partial `old` and `changes` (only the changed keys).
    /// Panics on an unknown space or a non-object.
    pub fn update_space(&self, id: i64, changes: Value) {
        self.mutate(|c| ((), c.update_space(id, changes)));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn handle_is_send_sync_clone() {
        fn assert<T: Send + Sync + Clone + 'static>() {}
        assert::<super::Simulator>();
        assert::<super::SimConfig>();
        assert::<super::Faults>();
    }
}
