//! Changes tests and the demo make, each returning the webhook events Kaiten would send.

use super::*;

impl Company {
    pub(super) fn author(&self) -> Value {
        self.current_user()
    }

    pub(super) fn with_author(&self, mut data: Obj) -> Value {
        data.insert("author".to_owned(), self.author());
        Value::Object(data)
    }

    pub(super) fn card_or_panic(&self, id: i64) -> Obj {
        self.cards.get(id).unwrap_or_else(|| panic!("kaiten-sim: unknown card id {id}"))
    }

    pub(super) fn diff(old: &Obj, new: &Obj) -> Obj {
        new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// An `<entity>:update` event as Kaiten sends it: `old` holds the id and the previous values of
    /// the changed keys only, `changes` the new values only (plus whatever noise the caller added).
    pub(super) fn update_event(&self, event: &str, id: i64, old: &Obj, changes: Obj) -> Value {
        let mut before = Obj::new();
        before.insert("id".to_owned(), json!(id));
        for key in changes.keys() {
            if let Some(value) = old.get(key) {
                before.insert(key.clone(), value.clone());
            }
        }
        let mut data = Obj::new();
        data.insert("old".to_owned(), Value::Object(before));
        data.insert("changes".to_owned(), Value::Object(changes));
        json!({"event": event, "data": self.with_author(data)})
    }

    /// Picks `keys` out of an object (those it has), for the few fields a notification carries.
    pub(super) fn only(obj: &Obj, keys: &[&str]) -> Obj {
        keys.iter().filter_map(|k| obj.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect()
    }

    /// Stamps `updated`, bumps `version`, stores the card and returns the `card:update` event.
    pub(super) fn commit_update(&mut self, old: Obj, mut new: Obj, stamp: i64, force: &[&str]) -> (Obj, Events) {
        new.insert("updated".to_owned(), json!(ts(stamp)));
        let version = old.get("version").and_then(Value::as_i64).unwrap_or(0) + 1;
        new.insert("version".to_owned(), json!(version));
        self.cards.put(new.clone());
        let mut changes = Self::diff(&old, &new);
        for key in force {
            if let Some(v) = new.get(*key) {
                changes.insert((*key).to_owned(), v.clone());
            }
        }
        // Noise Kaiten adds to every card update.
        changes.insert("counters_recalculated_at".to_owned(), json!(ts(stamp)));
        let id = int(&new, "id").unwrap_or(0);
        let event = self.update_event("card:update", id, &old, changes);
        (new, vec![event])
    }

    /// The first place a new card goes on a board: first column (its first subcolumn if it has any).
    pub(super) fn first_leaf(&self, board_id: i64) -> (i64, i64) {
        let top = self.columns_json(board_id);
        let first = top.first().unwrap_or_else(|| panic!("kaiten-sim: board {board_id} has no columns"));
        let leaf = first["subcolumns"].as_array().and_then(|s| s.first()).unwrap_or(first);
        (leaf["id"].as_i64().unwrap_or(0), leaf["type"].as_i64().unwrap_or(1))
    }

    pub(crate) fn create_card(&mut self, board_id: i64, title: &str) -> (Obj, Events) {
        if self.board(board_id).is_none() {
            panic!("kaiten-sim: unknown board id {board_id}");
        }
        let (column_id, state) = self.first_leaf(board_id);
        let lane_id = self.live_lane_ids(board_id).first().copied();
        let stamp = self.stamp();
        let id = self.cards.next_id();
        let seed = CardSeed {
            id,
            uid: uid(&mut self.rng),
            title: title.to_owned(),
            description: None,
            board_id,
            column_id,
            lane_id,
            state,
            owner_id: int(&self.users[0], "id").unwrap_or(0),
            type_id: self.board(board_id).and_then(|b| int(b, "default_card_type_id")),
            sort_order: (self.rng.random_range(1.0..10_000.0f64) * 1000.0).round() / 1000.0,
            version: 1,
            size: None,
            due_date: None,
            due_date_only: false,
            external_id: None,
            properties: Obj::new(),
            tag_ids: Vec::new(),
            parents_ids: Vec::new(),
            children_ids: Vec::new(),
            created: stamp,
            updated: stamp,
            last_moved_at: stamp,
            archived: false,
            asap: false,
            blocked: false,
            comments_total: 0,
        };
        let path = self.path_data(board_id, column_id, lane_id);
        let card = card_object(seed, path);
        self.cards.put(card.clone());
        // A card:add delivery carries a few fields, not the card.
        let mut data = Self::only(&card, &["id", "created", "title", "description"]);
        data.insert("files".to_owned(), json!([]));
        let event = json!({"event": "card:add", "data": self.with_author(data)});
        (card, vec![event])
    }

    pub(crate) fn update_card(&mut self, id: i64, changes: Value) -> (Obj, Events) {
        let old = self.card_or_panic(id);
        let Value::Object(changes) = changes else {
            panic!("kaiten-sim: update_card changes must be a JSON object");
        };
        let mut new = old.clone();
        new.extend(changes);
        // The id is the card's identity in the store: it cannot change.
        new.insert("id".to_owned(), json!(id));
        let stamp = self.stamp();
        self.commit_update(old, new, stamp, &[])
    }

    pub(crate) fn move_card(&mut self, id: i64, column_id: i64, lane_id: Option<i64>) -> (Obj, Events) {
        let old = self.card_or_panic(id);
        let column =
            self.column(column_id).unwrap_or_else(|| panic!("kaiten-sim: unknown column id {column_id}")).clone();
        let board_id = int(&column, "board_id").unwrap_or(0);
        // A column with subcolumns holds no cards itself: use its first subcolumn.
        let leaf = self
            .columns_json(board_id)
            .into_iter()
            .find(|c| c["id"].as_i64() == Some(column_id))
            .and_then(|c| c["subcolumns"].as_array().and_then(|s| s.first().cloned()))
            .and_then(|s| s.as_object().cloned())
            .unwrap_or(column);
        let column_id = int(&leaf, "id").unwrap_or(column_id);
        let state = int(&leaf, "type").unwrap_or(1);
        let board_lanes = self.live_lane_ids(board_id);
        let lane_id = match lane_id {
            Some(l) => {
                assert!(self.lanes.iter().any(|x| int(x, "id") == Some(l)), "kaiten-sim: unknown lane id {l}");
                Some(l)
            }
            None => int(&old, "lane_id").filter(|l| board_lanes.contains(l)).or_else(|| board_lanes.first().copied()),
        };
        let stamp = self.stamp();
        let now = json!(ts(stamp));
        let mut new = old.clone();
        let old_state = int(&old, "state").unwrap_or(0);
        new.insert("board_id".to_owned(), json!(board_id));
        new.insert("column_id".to_owned(), json!(column_id));
        new.insert("lane_id".to_owned(), json!(lane_id));
        new.insert("state".to_owned(), json!(state));
        new.insert("last_moved_at".to_owned(), now.clone());
        if int(&old, "column_id") != Some(column_id) {
            new.insert("column_changed_at".to_owned(), now.clone());
        }
        if int(&old, "lane_id") != lane_id {
            new.insert("lane_changed_at".to_owned(), now.clone());
        }
        if state == 3 && old_state != 3 {
            new.insert("completed_at".to_owned(), now.clone());
            new.insert("last_moved_to_done_at".to_owned(), now.clone());
        } else if state != 3 {
            new.insert("completed_at".to_owned(), Value::Null);
        }
        if state >= 2 && new.get("first_moved_to_in_progress_at").is_none_or(Value::is_null) {
            new.insert("first_moved_to_in_progress_at".to_owned(), now);
        }
        new.insert("path_data".to_owned(), self.path_data(board_id, column_id, lane_id));
        self.commit_update(old, new, stamp, &["board_id", "column_id", "lane_id"])
    }

    pub(crate) fn archive_card(&mut self, id: i64) -> (Obj, Events) {
        let old = self.card_or_panic(id);
        let mut new = old.clone();
        new.insert("archived".to_owned(), json!(true));
        new.insert("condition".to_owned(), json!(2));
        let stamp = self.stamp();
        self.commit_update(old, new, stamp, &["archived", "condition"])
    }

    /// Kaiten sends no `card:remove`: a deleted card just vanishes (no event).
    pub(crate) fn delete_card(&mut self, id: i64) -> Events {
        let mut card = self.card_or_panic(id);
        let stamp = self.stamp();
        card.insert("condition".to_owned(), json!(3));
        card.insert("updated".to_owned(), json!(ts(stamp)));
        let version = card.get("version").and_then(Value::as_i64).unwrap_or(0) + 1;
        card.insert("version".to_owned(), json!(version));
        self.cards.put(card);
        Vec::new()
    }

    pub(crate) fn add_board(&mut self, space_id: i64, title: &str) -> (i64, Events) {
        if self.space(space_id).is_none() {
            panic!("kaiten-sim: unknown space id {space_id}");
        }
        let stamp = self.stamp();
        let id = BOARD_BASE + 1 + (self.boards.len() + self.removed.boards) as i64;
        let position = self.boards.iter().filter(|b| int(b, "space_id") == Some(space_id)).count();
        let board = self.board_object(id, space_id, title, position, stamp, stamp);
        self.boards.push(board.clone());
        self.push_column(id, "Queue", 1, None, 1.0, stamp);
        self.push_column(id, "Done", 3, None, 2.0, stamp);
        self.push_lane(id, "Default", 1.0, stamp);
        let data = Self::only(&board, &["id", "created", "title", "description"]);
        let event = json!({"event": "board:add", "data": self.with_author(data)});
        (id, vec![event])
    }

    pub(crate) fn add_column(&mut self, board_id: i64, title: &str) -> i64 {
        if self.board(board_id).is_none() {
            panic!("kaiten-sim: unknown board id {board_id}");
        }
        let stamp = self.stamp();
        let last = self
            .columns
            .iter()
            .filter(|c| int(c, "board_id") == Some(board_id) && int(c, "column_id").is_none())
            .map(sort_f)
            .fold(0.0, f64::max);
        self.push_column(board_id, title, 2, None, last + 1.0, stamp)
    }

    pub(crate) fn add_lane(&mut self, board_id: i64, title: &str) -> i64 {
        if self.board(board_id).is_none() {
            panic!("kaiten-sim: unknown board id {board_id}");
        }
        let stamp = self.stamp();
        let last = self.lanes.iter().filter(|l| int(l, "board_id") == Some(board_id)).map(sort_f).fold(0.0, f64::max);
        self.push_lane(board_id, title, last + 1.0, stamp)
    }

    pub(crate) fn add_tag(&mut self, name: &str) -> (i64, Events) {
        let stamp = self.stamp();
        let id = TAG_BASE + 1 + self.tags.len() as i64;
        let uid = uid(&mut self.rng);
        let tag = Self::tag_object(id, uid, name, self.tags.len(), stamp, stamp);
        self.tags.push(tag.clone());
        let event = json!({"event": "tag:add", "data": self.with_author(tag)});
        (id, vec![event])
    }

    pub(crate) fn update_space(&mut self, id: i64, changes: Value) -> Events {
        let index = self
            .spaces
            .iter()
            .position(|s| int(s, "id") == Some(id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown space id {id}"));
        let Value::Object(changes) = changes else {
            panic!("kaiten-sim: update_space changes must be a JSON object");
        };
        let old = self.space_json(&self.spaces[index]);
        let stamp = self.stamp();
        let space = &mut self.spaces[index];
        space.extend(changes);
        space.insert("id".to_owned(), json!(id));
        space.insert("updated".to_owned(), json!(ts(stamp)));
        let new = self.space_json(&self.spaces[index]);
        let (Value::Object(old), Value::Object(new)) = (old, new) else { unreachable!("space_json returns an object") };
        let changes = Self::diff(&old, &new);
        vec![self.update_event("space:update", id, &old, changes)]
    }

    /// Deactivates a user (`activated` false, `role` 3); cards keep naming them. No event.
    pub(crate) fn deactivate_user(&mut self, id: i64) {
        let stamp = self.stamp();
        let user = self
            .users
            .iter_mut()
            .find(|u| int(u, "id") == Some(id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown user id {id}"));
        user.insert("activated".to_owned(), json!(false));
        user.insert("role".to_owned(), json!(3));
        user.insert("updated".to_owned(), json!(ts(stamp)));
    }

    /// Removes a select value the way Kaiten does: it stays, `deleted` and no longer active, and
    /// cards keep holding it. The property's `updated` does not move. No event.
    pub(crate) fn remove_select_value(&mut self, property_id: i64, value_id: i64) {
        let stamp = self.stamp();
        let value = self
            .select_values
            .iter_mut()
            .find(|v| int(v, "id") == Some(value_id) && int(v, "custom_property_id") == Some(property_id))
            .unwrap_or_else(|| panic!("kaiten-sim: property {property_id} has no select value {value_id}"));
        value.insert("condition".to_owned(), json!("inactive"));
        value.insert("deleted".to_owned(), json!(true));
        value.insert("updated".to_owned(), json!(ts(stamp)));
    }

    /// Renames a column or subcolumn. Its board's `updated` does not move; no event.
    pub(crate) fn rename_column(&mut self, column_id: i64, title: &str) {
        let stamp = self.stamp();
        let column = self
            .columns
            .iter_mut()
            .find(|c| int(c, "id") == Some(column_id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown column id {column_id}"));
        column.insert("title".to_owned(), json!(title));
        column.insert("updated".to_owned(), json!(ts(stamp)));
    }

    /// Renames a lane. Its board's `updated` does not move; no event.
    pub(crate) fn rename_lane(&mut self, lane_id: i64, title: &str) {
        let stamp = self.stamp();
        let lane = self.lane_mut(lane_id);
        lane.insert("title".to_owned(), json!(title));
        lane.insert("updated".to_owned(), json!(ts(stamp)));
    }

    /// Ids of the live and archived cards whose `key` (`board_id`, `column_id`, `lane_id`) is one
    /// of `ids`.
    pub(super) fn cards_on(&self, key: &str, ids: &[i64]) -> Vec<i64> {
        self.cards
            .all()
            .iter()
            .filter(|c| int(c, key).is_some_and(|v| ids.contains(&v)))
            .filter_map(|c| int(c, "id"))
            .collect()
    }

    /// Removes a board with its columns and lanes; its cards are deleted (they vanish like any
    /// deleted card). No event.
    pub(crate) fn delete_board(&mut self, board_id: i64) {
        let index = self
            .boards
            .iter()
            .position(|b| int(b, "id") == Some(board_id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown board id {board_id}"));
        for card in self.cards_on("board_id", &[board_id]) {
            self.delete_card(card);
        }
        self.boards.remove(index);
        self.removed.boards += 1;
        let before = (self.columns.len(), self.lanes.len());
        self.columns.retain(|c| int(c, "board_id") != Some(board_id));
        self.lanes.retain(|l| int(l, "board_id") != Some(board_id));
        self.removed.columns += before.0 - self.columns.len();
        self.removed.lanes += before.1 - self.lanes.len();
    }

    /// Removes an empty column (a top-level one with its subcolumns). Panics when a card is in it.
    pub(crate) fn delete_column(&mut self, column_id: i64) {
        if self.column(column_id).is_none() {
            panic!("kaiten-sim: unknown column id {column_id}");
        }
        let doomed: Vec<i64> = self
            .columns
            .iter()
            .filter(|c| int(c, "id") == Some(column_id) || int(c, "column_id") == Some(column_id))
            .filter_map(|c| int(c, "id"))
            .collect();
        let cards = self.cards_on("column_id", &doomed);
        assert!(cards.is_empty(), "kaiten-sim: column {column_id} holds cards {cards:?}: move them first");
        self.columns.retain(|c| !int(c, "id").is_some_and(|id| doomed.contains(&id)));
        self.removed.columns += doomed.len();
    }

    /// Removes an empty lane. Panics when a card is in it.
    pub(crate) fn delete_lane(&mut self, lane_id: i64) {
        self.lane_mut(lane_id);
        let cards = self.cards_on("lane_id", &[lane_id]);
        assert!(cards.is_empty(), "kaiten-sim: lane {lane_id} holds cards {cards:?}: move them first");
        self.lanes.retain(|l| int(l, "id") != Some(lane_id));
        self.removed.lanes += 1;
    }

    /// Removes a user from the company (every listing); cards keep naming them. The token's own
    /// user cannot be removed.
    pub(crate) fn delete_user(&mut self, id: i64) {
        let index = self
            .users
            .iter()
            .position(|u| int(u, "id") == Some(id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown user id {id}"));
        assert!(index > 0, "kaiten-sim: user {id} owns the token and cannot be removed");
        self.users.remove(index);
    }
}
