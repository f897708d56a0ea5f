//! Realistic records for tests and benchmarks, shaped like Kaiten's JSON.

use chrono::{DateTime, Duration, TimeZone, Utc};
use kaiten_client::{Board, Card, Column, Lane, Record, Space};
use serde_json::{json, Value};

use kaiten_sync::schema::{EntityKind, SqlValue};
use kaiten_sync::store::{Batch, Page};

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

/// Pages of the parents [`card`]s of board 10 sit in (space 1, board 10, column 1001, lane 1050),
/// parents first, synced at [`epoch`]: what a store with foreign keys on needs before such cards.
pub fn board_10_parent_pages() -> Vec<Page> {
    [
        Batch::Spaces(vec![space(1)]),
        Batch::Boards(vec![board(10, 1)]),
        Batch::Columns(vec![column(1001, 10, None)]),
        Batch::Lanes(vec![lane(1050, 10)]),
    ]
    .into_iter()
    .map(|batch| Page { batch, sweep: None, state: None, synced_at: epoch() })
    .collect()
}

/// Cards 1 to 6 of board 10 as `GET /cards/{id}` might return them, with `members` in every shape
/// the member parser ([`kaiten_sync::store::CardMembers`]) must handle: the usual one, `user_id` or `id`
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

/// One typed column of a [`ColumnProbe`]: the JSON field it is filled from, what the record
/// carries there, and what the column must then hold.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbedColumn {
    /// The column's name.
    pub column: &'static str,
    /// The field of Kaiten's JSON it comes from.
    pub field: &'static str,
    /// The field's value in the record.
    pub json: Value,
    /// The column's value.
    pub value: SqlValue,
}

/// A record of one kind whose fields all hold different values, with the value each typed column
/// must hold, by name. Written here by hand, apart from the declarations in
/// [`kaiten_sync::schema`], so that a value declared under the wrong column fails the tests that use
/// it. Boolean columns can only be told apart by records in which one of them differs from the
/// others: see [`column_probes`].
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnProbe {
    /// The kind.
    pub kind: EntityKind,
    /// The record's id.
    pub id: i64,
    /// Every typed column of the kind's table.
    pub columns: Vec<ProbedColumn>,
}

impl ColumnProbe {
    /// The record as Kaiten would send it.
    pub fn json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("id".into(), json!(self.id));
        for column in &self.columns {
            object.insert(column.field.into(), column.json.clone());
        }
        Value::Object(object)
    }

    /// The record as a page of one.
    pub fn batch(&self) -> Batch {
        Batch::from_json(self.kind, vec![self.json()]).expect("a probe parses")
    }
}

/// Builds the probe of one kind: every value it hands out differs from the others of the record.
struct Probe {
    kind: EntityKind,
    id: i64,
    next: i64,
    columns: Vec<ProbedColumn>,
}

impl Probe {
    fn new(kind: EntityKind, id: i64) -> Self {
        Self { kind, id, next: 0, columns: Vec::new() }
    }

    fn add(mut self, column: &'static str, field: &'static str, json: Value, value: SqlValue) -> Self {
        self.columns.push(ProbedColumn { column, field, json, value });
        self
    }

    fn fresh(&mut self) -> i64 {
        self.next += 1;
        self.id * 100 + self.next
    }

    fn text(self, column: &'static str) -> Self {
        self.text_from(column, column)
    }

    fn text_from(self, column: &'static str, field: &'static str) -> Self {
        let text = format!("{}.{column}", self.kind);
        self.add(column, field, json!(text), SqlValue::Text(text))
    }

    fn int(self, column: &'static str) -> Self {
        self.int_from(column, column)
    }

    fn int_from(mut self, column: &'static str, field: &'static str) -> Self {
        let n = self.fresh();
        self.add(column, field, json!(n), SqlValue::Int(n))
    }

    /// An integer that names another probe's record (a parent), so stores with foreign keys
    /// accept the row.
    fn reference(self, column: &'static str, id: i64) -> Self {
        self.add(column, column, json!(id), SqlValue::Int(id))
    }

    fn float(mut self, column: &'static str) -> Self {
        let x = self.fresh() as f64 + 0.25;
        self.add(column, column, json!(x), SqlValue::Float(x))
    }

    fn time(mut self, column: &'static str) -> Self {
        let seconds = self.fresh();
        self.add(column, column, json!(stamp(seconds)), SqlValue::Time(epoch() + Duration::seconds(seconds)))
    }

    fn flag(self, column: &'static str) -> Self {
        self.flag_from(column, column)
    }

    fn flag_from(self, column: &'static str, field: &'static str) -> Self {
        self.add(column, field, json!(true), SqlValue::Bool(true))
    }

    fn done(self) -> ColumnProbe {
        ColumnProbe { kind: self.kind, id: self.id, columns: self.columns }
    }
}

/// Ids of the probes' records (the parents the others reference).
const SPACE: i64 = 101;
const USER: i64 = 201;
const CARD_TYPE: i64 = 301;
const PROPERTY: i64 = 501;
const BOARD: i64 = 701;
const COLUMN: i64 = 801;
const LANE: i64 = 901;

/// One [`ColumnProbe`] of every kind, in [`EntityKind::ALL`] order, each followed by one probe per
/// boolean column of kinds with several (that column true, the others false). References between
/// them are real (a board's `space_id` is the space probe's id, ...), so they can be written in
/// order to a store that enforces foreign keys.
pub fn column_probes() -> Vec<ColumnProbe> {
    use EntityKind as K;
    let base = vec![
        Probe::new(K::Spaces, SPACE)
            .text("uid")
            .text("title")
            .flag("archived")
            .text("parent_entity_uid")
            .float("sort_order")
            .text("external_id")
            .time("created")
            .time("updated"),
        Probe::new(K::Users, USER)
            .text("uid")
            .text("full_name")
            .text("username")
            .text("email")
            .flag("activated")
            .flag_from("is_virtual", "virtual")
            .int("role")
            .time("created")
            .time("updated"),
        Probe::new(K::CardTypes, CARD_TYPE)
            .text("uid")
            .text("name")
            .text("letter")
            .int("color")
            .flag("archived")
            .time("created")
            .time("updated"),
        Probe::new(K::Tags, 401).text("uid").text("name").int("color").flag("archived").time("created").time("updated"),
        Probe::new(K::PropertyDefinitions, PROPERTY)
            .text("uid")
            .text("name")
            .text("type")
            .int("condition")
            .flag("multi_select")
            .text("external_id")
            .time("created")
            .time("updated"),
        Probe::new(K::SelectValues, 601)
            .text("uid")
            .reference("custom_property_id", PROPERTY)
            .text("value")
            .int("color")
            .int("condition")
            .float("sort_order")
            .time("created")
            .time("updated"),
        Probe::new(K::Boards, BOARD)
            .text("uid")
            .reference("space_id", SPACE)
            .text("title")
            .text("description")
            .text("external_id")
            .float("sort_order")
            .flag("archived")
            .time("created")
            .time("updated"),
        Probe::new(K::Columns, COLUMN)
            .text("uid")
            .reference("board_id", BOARD)
            .add("parent_column_id", "column_id", json!(COLUMN), SqlValue::Int(COLUMN))
            .text("title")
            .float("sort_order")
            .int("type")
            .int("wip_limit")
            .text("external_id")
            .time("created")
            .time("updated"),
        Probe::new(K::Lanes, LANE)
            .text("uid")
            .reference("board_id", BOARD)
            .text("title")
            .float("sort_order")
            .int("condition")
            .int("wip_limit")
            .text("external_id")
            .time("created")
            .time("updated"),
        Probe::new(K::Cards, 1001)
            .text("uid")
            .text("title")
            .text("description")
            .int("state")
            .int("condition")
            .flag("archived")
            .flag("asap")
            .flag("blocked")
            .reference("space_id", SPACE)
            .reference("board_id", BOARD)
            .reference("column_id", COLUMN)
            .reference("lane_id", LANE)
            .reference("owner_id", USER)
            .reference("type_id", CARD_TYPE)
            .float("sort_order")
            .int("version")
            .float("size")
            .time("due_date")
            .text("external_id")
            .add(
                "properties",
                "properties",
                json!({"id_7": "cards.properties"}),
                SqlValue::Json(json!({"id_7": "cards.properties"})),
            )
            .time("created")
            .time("updated")
            .time("last_moved_at")
            .time("completed_at"),
    ];
    let mut probes = Vec::new();
    for probe in base {
        let probe = probe.done();
        let flags: Vec<&'static str> =
            probe.columns.iter().filter(|c| c.value == SqlValue::Bool(true)).map(|c| c.column).collect();
        let mut variants = Vec::new();
        if flags.len() > 1 {
            for (i, on) in flags.iter().enumerate() {
                let mut variant = probe.clone();
                variant.id = probe.id + 1 + i as i64;
                for column in variant.columns.iter_mut().filter(|c| flags.contains(&c.column)) {
                    let set = column.column == *on;
                    column.json = json!(set);
                    column.value = SqlValue::Bool(set);
                }
                variants.push(variant);
            }
        }
        probes.push(probe);
        probes.extend(variants);
    }
    probes
}
