//! Realistic records for tests and benchmarks, shaped like Kaiten's JSON.

use chrono::{DateTime, Duration, TimeZone, Utc};
use kaiten_client::{Board, Card, Column, Lane, Record, Space};
use serde_json::{json, Value};

/// A fixed instant the fixtures count from (2025-01-01T00:00:00Z).
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

/// `epoch() + seconds`, formatted like Kaiten (`2025-01-01T00:00:05.000Z`).
pub fn stamp(seconds: i64) -> String {
    (epoch() + Duration::seconds(seconds)).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The JSON of a card as `GET /cards` returns it.
pub fn card_json(id: i64, board_id: i64, updated_seconds: i64, version: i64) -> Value {
    json!({
        "id": id,
        "uid": format!("00000000-0000-4000-8000-{id:012}"),
        "title": format!("Card {id}"),
        "state": 1 + id % 3,
        "condition": 1,
        "archived": false,
        "asap": id % 7 == 0,
        "blocked": false,
        "board_id": board_id,
        "column_id": board_id * 100 + 1,
        "lane_id": board_id * 100 + 50,
        "owner_id": 1 + id % 5,
        "type_id": 1,
        "sort_order": id as f64 * 1.5,
        "version": version,
        "size": 3,
        "due_date": null,
        "external_id": null,
        "properties": {"id_1": "text value", "id_2": [11, 12], "id_3": {"date": "2025-02-01", "time": null, "tzOffset": 180}},
        "tag_ids": [1 + id % 4, 5],
        "parents_ids": [],
        "children_ids": [],
        "comments_total": id % 11,
        "path_data": {"space": {"id": 1, "title": "Space"}, "board": {"id": board_id}},
        "created": stamp(0),
        "updated": stamp(updated_seconds),
        "last_moved_at": stamp(updated_seconds),
        "completed_at": null,
    })
}

/// A parsed card from [`card_json`].
pub fn card(id: i64, board_id: i64, updated_seconds: i64, version: i64) -> Card {
    Card::from_value(card_json(id, board_id, updated_seconds, version)).unwrap()
}

/// `count` cards with ids `first..first+count` on `board_id`, all updated at `updated_seconds`.
pub fn cards(first: i64, count: i64, board_id: i64, updated_seconds: i64) -> Vec<Card> {
    (first..first + count).map(|id| card(id, board_id, updated_seconds, 1)).collect()
}

/// A space.
pub fn space(id: i64) -> Space {
    Space::from_value(json!({"id": id, "uid": format!("space-{id}"), "title": format!("Space {id}"), "archived": false,
        "created": stamp(0), "updated": stamp(1), "boards": [{"id": id * 10, "title": "B"}]}))
    .unwrap()
}

/// A board of a space.
pub fn board(id: i64, space_id: i64) -> Board {
    Board::from_value(json!({"id": id, "title": format!("Board {id}"), "space_id": space_id,
        "created": stamp(0), "updated": stamp(1)}))
    .unwrap()
}

/// A column of a board.
pub fn column(id: i64, board_id: i64, parent: Option<i64>) -> Column {
    Column::from_value(json!({"id": id, "title": format!("Column {id}"), "board_id": board_id, "column_id": parent,
        "type": 1, "sort_order": 1.0, "created": stamp(0), "updated": stamp(1)}))
    .unwrap()
}

/// A lane of a board.
pub fn lane(id: i64, board_id: i64) -> Lane {
    Lane::from_value(json!({"id": id, "title": format!("Lane {id}"), "board_id": board_id, "condition": 1,
        "sort_order": 1.0, "created": stamp(0), "updated": stamp(1)}))
    .unwrap()
}

/// Cards 1 to 6 of board 10 as `GET /cards/{id}` might return them, with `members` in every shape
/// the member parser ([`crate::store::CardMembers`]) must handle: the usual one, `user_id` or `id`
/// alone, a missing or non-integer `type`, a user listed twice, entries without a usable user, an
/// empty list, a list that is not an array, scalars in the list, and a card of the list shape
/// (no `members`). For checking that what a store derives elsewhere (a migration) agrees.
pub fn cards_with_member_shapes() -> Vec<Card> {
    let members = [
        json!([
            {"id": 11, "user_id": 11, "card_id": 1, "type": 2, "full_name": "Responsible"},
            {"id": 12, "type": 1},
            {"user_id": 13},
            {"id": 11, "user_id": 11, "type": 1},
            {"full_name": "no id"},
            {"user_id": "14", "type": 1},
            {"user_id": -3, "id": 15, "type": 1},
            {"user_id": null, "id": 16, "type": 2.0},
            {"user_id": 17, "type": "2"}
        ]),
        json!([]),
        json!({"a": {"user_id": 21, "type": 1}}),
        json!([5, "x", null, [22], {"user_id": 23, "type": 2}]),
        json!(null),
    ];
    let mut cards: Vec<Card> = members
        .into_iter()
        .enumerate()
        .map(|(i, members)| {
            let mut j = card_json(i as i64 + 1, 10, 100, 1);
            j["members"] = members;
            Card::from_value(j).unwrap()
        })
        .collect();
    cards.push(card(6, 10, 100, 1));
    cards
}
