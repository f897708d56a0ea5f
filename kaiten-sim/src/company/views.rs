//! Lookups and the shapes the routes serve.

use super::*;

impl Company {
    pub(crate) fn board(&self, id: i64) -> Option<&Obj> {
        self.boards.iter().find(|b| int(b, "id") == Some(id))
    }

    pub(crate) fn space(&self, id: i64) -> Option<&Obj> {
        self.spaces.iter().find(|s| int(s, "id") == Some(id))
    }

    pub(super) fn column(&self, id: i64) -> Option<&Obj> {
        self.columns.iter().find(|c| int(c, "id") == Some(id))
    }

    pub(super) fn lane_mut(&mut self, id: i64) -> &mut Obj {
        self.lanes
            .iter_mut()
            .find(|l| int(l, "id") == Some(id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown lane id {id}"))
    }

    /// Ids of a board's live lanes (where cards go), by position.
    pub(super) fn live_lane_ids(&self, board_id: i64) -> Vec<i64> {
        self.lanes_json(board_id)
            .iter()
            .filter(|l| l["condition"].as_i64().unwrap_or(1) == 1)
            .filter_map(|l| l["id"].as_i64())
            .collect()
    }

    /// Users as `GET /users` serves them: without deactivated ones unless `include_inactive`.
    pub(crate) fn users_listed(&self, include_inactive: bool) -> Vec<&Obj> {
        self.users.iter().filter(|u| include_inactive || u.get("activated") != Some(&Value::Bool(false))).collect()
    }

    /// Tags as `GET /tags` serves them: only those on at least one card (live or archived).
    pub(crate) fn tags_listed(&self) -> Vec<&Obj> {
        let used = self.cards.used_tag_ids();
        self.tags.iter().filter(|t| int(t, "id").is_some_and(|id| used.contains(&id))).collect()
    }

    /// The token's own user.
    pub(crate) fn current_user(&self) -> Value {
        Value::Object(self.users[0].clone())
    }

    /// A space as `GET /spaces` serves it, with its short `boards[]`.
    pub(crate) fn space_json(&self, space: &Obj) -> Value {
        let id = int(space, "id");
        let mut out = space.clone();
        let boards: Vec<Value> = self
            .boards
            .iter()
            .filter(|b| int(b, "space_id") == id)
            .map(|b| json!({"id": b.get("id"), "uid": b.get("uid"), "title": b.get("title")}))
            .collect();
        out.insert("boards".to_owned(), Value::Array(boards));
        Value::Object(out)
    }

    pub(crate) fn spaces_json(&self) -> Vec<Value> {
        self.spaces.iter().map(|s| self.space_json(s)).collect()
    }

    pub(crate) fn boards_of_space(&self, space_id: i64) -> Vec<Value> {
        self.boards.iter().filter(|b| int(b, "space_id") == Some(space_id)).cloned().map(Value::Object).collect()
    }

    /// Top-level columns of a board, by position, each with its `subcolumns[]`.
    pub(crate) fn columns_json(&self, board_id: i64) -> Vec<Value> {
        let mut top: Vec<&Obj> = self
            .columns
            .iter()
            .filter(|c| int(c, "board_id") == Some(board_id) && int(c, "column_id").is_none())
            .collect();
        top.sort_by(|a, b| sort_f(a).total_cmp(&sort_f(b)));
        top.into_iter()
            .map(|col| {
                let mut subs: Vec<&Obj> =
                    self.columns.iter().filter(|c| int(c, "column_id") == int(col, "id")).collect();
                subs.sort_by(|a, b| sort_f(a).total_cmp(&sort_f(b)));
                let mut out = col.clone();
                out.insert(
                    "subcolumns".to_owned(),
                    Value::Array(subs.into_iter().cloned().map(Value::Object).collect()),
                );
                Value::Object(out)
            })
            .collect()
    }

    pub(crate) fn lanes_json(&self, board_id: i64) -> Vec<Value> {
        let mut lanes: Vec<&Obj> = self.lanes.iter().filter(|l| int(l, "board_id") == Some(board_id)).collect();
        lanes.sort_by(|a, b| sort_f(a).total_cmp(&sort_f(b)));
        lanes.into_iter().cloned().map(Value::Object).collect()
    }

    /// Column ids of a board: each top-level column followed by its subcolumns.
    pub(crate) fn column_ids(&self, board_id: i64) -> Vec<i64> {
        let mut ids = Vec::new();
        for col in self.columns_json(board_id) {
            ids.extend(col["id"].as_i64());
            for sub in col["subcolumns"].as_array().into_iter().flatten() {
                ids.extend(sub["id"].as_i64());
            }
        }
        ids
    }

    pub(crate) fn select_values_of(&self, prop_id: i64) -> Vec<Value> {
        let mut values: Vec<&Obj> =
            self.select_values.iter().filter(|v| int(v, "custom_property_id") == Some(prop_id)).collect();
        values.sort_by(|a, b| sort_f(a).total_cmp(&sort_f(b)));
        values.into_iter().cloned().map(Value::Object).collect()
    }

    /// `GET /cards/{id}`: the list shape with `description` and the expanded objects.
    pub(crate) fn card_detail(&self, id: i64) -> Option<Value> {
        let mut card = self.cards.get(id)?;
        if card.get("condition").and_then(Value::as_i64) == Some(3) {
            return None;
        }
        let find = |list: &[Obj], key: &str| {
            card.get(key).and_then(Value::as_i64).and_then(|id| list.iter().find(|o| int(o, "id") == Some(id))).cloned()
        };
        let owner = find(&self.users, "owner_id");
        let kind = find(&self.card_types, "type_id");
        let board = find(&self.boards, "board_id");
        let column = find(&self.columns, "column_id");
        let lane = find(&self.lanes, "lane_id");
        let tags: Vec<Value> = card
            .get("tag_ids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_i64().and_then(|t| self.tags.iter().find(|o| int(o, "id") == Some(t))))
            .cloned()
            .map(Value::Object)
            .collect();
        // The owner is responsible (type 2). About two cards in three also have one or two
        // ordinary members (type 1), picked from the card's id and version: an edit of the card
        // may change them, as adding or removing a member changes the card in Kaiten.
        let version = card.get("version").and_then(Value::as_i64).unwrap_or(0);
        let pick = id.wrapping_mul(31).wrapping_add(version.wrapping_mul(17)).unsigned_abs() as usize;
        let mut listed: Vec<(&Obj, i64)> = owner.iter().map(|o| (o, 2)).collect();
        for k in 0..pick % 3 {
            let Some(user) = self.users.get((pick / 3 + k * 7) % self.users.len().max(1)) else { break };
            if !listed.iter().any(|(u, _)| int(u, "id") == int(user, "id")) {
                listed.push((user, 1));
            }
        }
        let members: Vec<Value> = listed
            .into_iter()
            .map(|(o, kind)| {
                let mut m = o.clone();
                m.insert("user_id".to_owned(), json!(o.get("id")));
                m.insert("card_id".to_owned(), json!(id));
                m.insert("type".to_owned(), json!(kind));
                Value::Object(m)
            })
            .collect();
        card.insert("owner".to_owned(), owner.map_or(Value::Null, Value::Object));
        card.insert("type".to_owned(), kind.map_or(Value::Null, Value::Object));
        card.insert("board".to_owned(), board.map_or(Value::Null, Value::Object));
        card.insert("column".to_owned(), column.map_or(Value::Null, Value::Object));
        card.insert("lane".to_owned(), lane.map_or(Value::Null, Value::Object));
        card.insert("tags".to_owned(), Value::Array(tags));
        card.insert("members".to_owned(), Value::Array(members));
        card.insert("checklists".to_owned(), json!([]));
        card.insert("files".to_owned(), json!([]));
        Some(Value::Object(card))
    }
}
