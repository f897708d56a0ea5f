//! The storage schema in one place: entity kinds, their tables, and the typed columns each record
//! provides. Stores generate their statements from these definitions, so the SQLite and Postgres
//! stores can never disagree on what a column holds.
//!
//! Every entity table has, besides the typed columns listed here: `id` (primary key), `raw` (the JSON
//! as Kaiten sent it), `synced_at` (when this mirror last wrote the row), `deleted_at` (when the
//! mirror learned the record is gone; `NULL` while it exists) and `seen_sweep` (bookkeeping for
//! deletion detection: the full listing that last saw the row).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use kaiten_client::{
    Board, Card, CardType, Column, Condition, Lane, PropertyDefinition, Record, SelectValue, Space, Tag, User,
};
use serde::{Deserialize, Serialize};

/// The kinds of entity the mirror holds, in the order a full sync visits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// Spaces.
    Spaces,
    /// Users.
    Users,
    /// Card types.
    CardTypes,
    /// Tags.
    Tags,
    /// Custom property definitions.
    PropertyDefinitions,
    /// Values of select-type custom properties.
    SelectValues,
    /// Boards.
    Boards,
    /// Columns and subcolumns.
    Columns,
    /// Lanes.
    Lanes,
    /// Cards (with their tag links in `card_tags`).
    Cards,
}

impl EntityKind {
    /// Every kind, in dependency order.
    pub const ALL: [EntityKind; 10] = [
        EntityKind::Spaces,
        EntityKind::Users,
        EntityKind::CardTypes,
        EntityKind::Tags,
        EntityKind::PropertyDefinitions,
        EntityKind::SelectValues,
        EntityKind::Boards,
        EntityKind::Columns,
        EntityKind::Lanes,
        EntityKind::Cards,
    ];

    /// The name used in configuration, the CLI and the run log (`cards`, `card_types`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Spaces => "spaces",
            EntityKind::Users => "users",
            EntityKind::CardTypes => "card_types",
            EntityKind::Tags => "tags",
            EntityKind::PropertyDefinitions => "property_definitions",
            EntityKind::SelectValues => "select_values",
            EntityKind::Boards => "boards",
            EntityKind::Columns => "columns",
            EntityKind::Lanes => "lanes",
            EntityKind::Cards => "cards",
        }
    }

    /// The table definition of this kind.
    pub fn table(self) -> &'static TableDef {
        &TABLES[self as usize]
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entity kind name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown entity kind {0:?}; expected one of: spaces, users, card_types, tags, property_definitions, select_values, boards, columns, lanes, cards")]
pub struct UnknownEntityKind(pub String);

impl FromStr for EntityKind {
    type Err = UnknownEntityKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        let kind = match norm.as_str() {
            "spaces" | "space" => EntityKind::Spaces,
            "users" | "user" => EntityKind::Users,
            "card_types" | "card_type" | "types" => EntityKind::CardTypes,
            "tags" | "tag" => EntityKind::Tags,
            "property_definitions" | "properties" | "custom_properties" => EntityKind::PropertyDefinitions,
            "select_values" => EntityKind::SelectValues,
            "boards" | "board" => EntityKind::Boards,
            "columns" | "column" => EntityKind::Columns,
            "lanes" | "lane" => EntityKind::Lanes,
            "cards" | "card" => EntityKind::Cards,
            _ => return Err(UnknownEntityKind(s.to_owned())),
        };
        Ok(kind)
    }
}

/// The SQL type of a typed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// 64-bit integer.
    BigInt,
    /// Double precision float.
    Float,
    /// Text.
    Text,
    /// Boolean (an integer 0/1 on SQLite).
    Bool,
    /// UTC timestamp (`timestamptz` on Postgres, RFC 3339 text on SQLite).
    Timestamp,
    /// JSON (`jsonb` on Postgres, text on SQLite).
    Json,
}

/// One typed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name.
    pub name: &'static str,
    /// Its type.
    pub ty: ColumnType,
}

/// One entity table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    /// Table name.
    pub name: &'static str,
    /// Typed columns besides `id`, `raw`, `synced_at`, `deleted_at`, `seen_sweep`. Always includes
    /// `updated`; `cards` also has `version`.
    pub columns: &'static [ColumnDef],
    /// The column that names the parent used to scope deletion detection (`board_id` for columns,
    /// lanes and cards; `space_id` for boards; `custom_property_id` for select values).
    pub scope_column: Option<&'static str>,
}

macro_rules! cols {
    ($($name:literal : $ty:ident),* $(,)?) => {
        &[$(ColumnDef { name: $name, ty: ColumnType::$ty }),*]
    };
}

/// The entity tables, indexed by `EntityKind as usize`.
pub static TABLES: [TableDef; 10] = [
    TableDef {
        name: "spaces",
        columns: cols!["uid": Text, "title": Text, "archived": Bool, "parent_entity_uid": Text, "sort_order": Float,
                       "external_id": Text, "created": Timestamp, "updated": Timestamp],
        scope_column: None,
    },
    TableDef {
        name: "users",
        columns: cols!["uid": Text, "full_name": Text, "username": Text, "email": Text, "activated": Bool,
                       "is_virtual": Bool, "role": BigInt, "created": Timestamp, "updated": Timestamp],
        scope_column: None,
    },
    TableDef {
        name: "card_types",
        columns: cols!["uid": Text, "name": Text, "letter": Text, "color": BigInt, "archived": Bool,
                       "created": Timestamp, "updated": Timestamp],
        scope_column: None,
    },
    TableDef {
        name: "tags",
        columns: cols!["uid": Text, "name": Text, "color": BigInt, "archived": Bool, "created": Timestamp,
                       "updated": Timestamp],
        scope_column: None,
    },
    TableDef {
        name: "property_definitions",
        columns: cols!["uid": Text, "name": Text, "type": Text, "condition": BigInt, "multi_select": Bool,
                       "external_id": Text, "created": Timestamp, "updated": Timestamp],
        scope_column: None,
    },
    TableDef {
        name: "property_select_values",
        columns: cols!["uid": Text, "custom_property_id": BigInt, "value": Text, "color": BigInt, "condition": BigInt,
                       "sort_order": Float, "created": Timestamp, "updated": Timestamp],
        scope_column: Some("custom_property_id"),
    },
    TableDef {
        name: "boards",
        columns: cols!["uid": Text, "space_id": BigInt, "title": Text, "description": Text, "external_id": Text,
                       "sort_order": Float, "archived": Bool, "created": Timestamp, "updated": Timestamp],
        scope_column: Some("space_id"),
    },
    TableDef {
        name: "columns",
        columns: cols!["uid": Text, "board_id": BigInt, "parent_column_id": BigInt, "title": Text, "sort_order": Float,
                       "type": BigInt, "wip_limit": BigInt, "external_id": Text, "created": Timestamp,
                       "updated": Timestamp],
        scope_column: Some("board_id"),
    },
    TableDef {
        name: "lanes",
        columns: cols!["uid": Text, "board_id": BigInt, "title": Text, "sort_order": Float, "condition": BigInt,
                       "wip_limit": BigInt, "external_id": Text, "created": Timestamp, "updated": Timestamp],
        scope_column: Some("board_id"),
    },
    TableDef {
        name: "cards",
        columns: cols!["uid": Text, "title": Text, "description": Text, "state": BigInt, "condition": BigInt,
                       "archived": Bool, "asap": Bool, "blocked": Bool, "space_id": BigInt, "board_id": BigInt,
                       "column_id": BigInt, "lane_id": BigInt, "owner_id": BigInt, "type_id": BigInt,
                       "sort_order": Float, "version": BigInt, "size": Float, "due_date": Timestamp,
                       "external_id": Text, "properties": Json, "created": Timestamp, "updated": Timestamp,
                       "last_moved_at": Timestamp, "completed_at": Timestamp],
        scope_column: Some("board_id"),
    },
];

/// A typed column value.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Text.
    Text(String),
    /// Boolean.
    Bool(bool),
    /// Timestamp.
    Time(DateTime<Utc>),
    /// JSON.
    Json(serde_json::Value),
}

impl From<Option<i64>> for SqlValue {
    fn from(v: Option<i64>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Int)
    }
}
impl From<Option<f64>> for SqlValue {
    fn from(v: Option<f64>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Float)
    }
}
impl From<Option<bool>> for SqlValue {
    fn from(v: Option<bool>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Bool)
    }
}
impl From<Option<DateTime<Utc>>> for SqlValue {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Time)
    }
}
impl From<&Option<String>> for SqlValue {
    fn from(v: &Option<String>) -> Self {
        v.as_ref().map_or(SqlValue::Null, |s| SqlValue::Text(s.clone()))
    }
}
impl From<Option<Condition>> for SqlValue {
    fn from(v: Option<Condition>) -> Self {
        v.map_or(SqlValue::Null, |c| SqlValue::Int(c.code()))
    }
}

/// A record as a row: what a store writes for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    /// Primary key.
    pub id: i64,
    /// `updated` from Kaiten, used for "newer wins".
    pub updated: Option<DateTime<Utc>>,
    /// `version` (cards only), used for "newer wins" at equal `updated`.
    pub version: Option<i64>,
    /// Whether the record says it is deleted (`condition` 3): the store sets `deleted_at`.
    pub deleted: bool,
    /// Values of the table's typed columns, in [`TableDef::columns`] order.
    pub values: Vec<SqlValue>,
    /// The JSON as received.
    pub raw: &'a serde_json::Value,
}

/// Turns a record into its row. Implemented for every model the mirror stores.
pub trait ToRow: Record {
    /// The entity kind this record is stored as.
    const KIND: EntityKind;
    /// The typed column values, in the table's column order.
    fn values(&self) -> Vec<SqlValue>;
    /// Whether the record itself says it is deleted.
    fn is_deleted(&self) -> bool {
        false
    }
    /// Kaiten's write counter, where the entity has one.
    fn version(&self) -> Option<i64> {
        None
    }
    /// The row.
    fn row(&self) -> Row<'_> {
        Row {
            id: self.id(),
            updated: self.updated(),
            version: self.version(),
            deleted: self.is_deleted(),
            values: self.values(),
            raw: self.raw(),
        }
    }
}

impl ToRow for Space {
    const KIND: EntityKind = EntityKind::Spaces;
    fn values(&self) -> Vec<SqlValue> {
        vec![
            (&self.uid).into(),
            (&self.title).into(),
            self.archived.into(),
            (&self.parent_entity_uid).into(),
            self.sort_order.into(),
            (&self.external_id).into(),
            self.created.into(),
            self.updated.into(),
        ]
    }
}

impl ToRow for User {
    const KIND: EntityKind = EntityKind::Users;
    fn values(&self) -> Vec<SqlValue> {
        vec![
            (&self.uid).into(),
            (&self.full_name).into(),
            (&self.username).into(),
            (&self.email).into(),
            self.activated.into(),
            self.is_virtual.into(),
            self.role.into(),
            self.created.into(),
            self.updated.into(),
        ]
    }
}

impl ToRow for CardType {
    const KIND: EntityKind = EntityKind::CardTypes;
    fn values(&self) -> Vec<SqlValue> {
        vec![
            (&self.uid).into(),
            (&self.name).into(),
            (&self.letter).into(),
            self.color.into(),
            self.archived.into(),
            self.created.into(),
            self.updated.into(),
        ]
    }
}

impl ToRow for Tag {
    const KIND: EntityKind = EntityKind::Tags;
    fn values(&self) -> Vec<SqlValue> {
        vec![
            (&self.uid).into(),
            (&self.name).into(),
            self.color.into(),
            self.archived.into(),
            self.created.into(),
            self.updated.into(),
        ]
    }
}

impl ToRow for PropertyDefinition {
    const KIND: EntityKind = EntityKind::PropertyDefinitions;
    fn values(&self) -> Vec<SqlValue> {
        vec![
            (&self.uid).into(),
            (&self.name).into(),
            (&self.property_type).into(),
            self.condition.into(),
            self.multi_select.into(),
            (&self.external_id).into(),
            self.created.into(),
            self.updated.into(),
        ]
    }
}

/// A select value's `condition` column: 1 active, 2 inactive (no longer offered), 3 removed
/// (`deleted: true`). Removed values stay live rows (no `deleted_at`) while Kaiten still lists them,
/// because cards keep holding them; `deleted_at` is set only when a complete listing of every
/// condition no longer has the value.
fn select_value_condition(value: &SelectValue) -> SqlValue {
    if value.is_removed() {
        SqlValue::Int(Condition::Deleted.code())
    } else {
        value.condition.into()
    }
}

impl ToRow for SelectValue {
    const KIND: EntityKind = EntityKind::SelectValues;
    fn values(&self) -> Vec<SqlValue> {
        vec![
            (&self.uid).into(),
            self.custom_property_id.into(),
            (&self.value).into(),
            self.color.into(),
            select_value_condition(self),
            self.sort_order.into(),
            self.created.into(),
            self.updated.into(),
        ]
    }
}

impl ToRow for Board {
    const KIND: EntityKind = EntityKind::Boards;
    fn values(&self) -> Vec<SqlValue> {
        vec![
            (&self.uid).into(),
            self.space_id.into(),
            (&self.title).into(),
            (&self.description).into(),
            (&self.external_id).into(),
            self.sort_order.into(),
            self.archived.into(),
            self.created.into(),
            self.updated.into(),
        ]
    }
}

impl ToRow for Column {
    const KIND: EntityKind = EntityKind::Columns;
    fn values(&self) -> Vec<SqlValue> {
        vec![
            (&self.uid).into(),
            self.board_id.into(),
            self.column_id.into(),
            (&self.title).into(),
            self.sort_order.into(),
            self.column_type.into(),
            self.wip_limit.into(),
            (&self.external_id).into(),
            self.created.into(),
            self.updated.into(),
        ]
    }
}

impl ToRow for Lane {
    const KIND: EntityKind = EntityKind::Lanes;
    fn values(&self) -> Vec<SqlValue> {
        vec![
            (&self.uid).into(),
            self.board_id.into(),
            (&self.title).into(),
            self.sort_order.into(),
            self.condition.into(),
            self.wip_limit.into(),
            (&self.external_id).into(),
            self.created.into(),
            self.updated.into(),
        ]
    }
    fn is_deleted(&self) -> bool {
        self.condition == Some(Condition::Deleted)
    }
}

impl ToRow for Card {
    const KIND: EntityKind = EntityKind::Cards;
    fn values(&self) -> Vec<SqlValue> {
        let properties = if self.properties.is_empty() {
            SqlValue::Null
        } else {
            SqlValue::Json(serde_json::Value::Object(self.properties.clone().into_iter().collect()))
        };
        vec![
            (&self.uid).into(),
            (&self.title).into(),
            (&self.description).into(),
            self.state.map(|s| s.code()).into(),
            self.condition.into(),
            Some(self.is_archived()).into(),
            self.asap.into(),
            self.blocked.into(),
            self.space_id.into(),
            self.board_id.into(),
            self.column_id.into(),
            self.lane_id.into(),
            self.owner_id.into(),
            self.type_id.into(),
            self.sort_order.into(),
            self.version.into(),
            self.size.into(),
            self.due_date.into(),
            (&self.external_id).into(),
            properties,
            self.created.into(),
            self.updated.into(),
            self.last_moved_at.into(),
            self.completed_at.into(),
        ]
    }
    fn is_deleted(&self) -> bool {
        self.condition == Some(Condition::Deleted)
    }
    fn version(&self) -> Option<i64> {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_table_and_values_match_columns() {
        for (i, kind) in EntityKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
            assert!(kind.table().columns.iter().any(|c| c.name == "updated"), "{kind}");
            assert_eq!(kind.as_str().parse::<EntityKind>().unwrap(), *kind);
        }
        let card = Card::from_value(serde_json::json!({"id": 1})).unwrap();
        assert_eq!(card.values().len(), EntityKind::Cards.table().columns.len());
        let space = Space::from_value(serde_json::json!({"id": 1})).unwrap();
        assert_eq!(space.values().len(), EntityKind::Spaces.table().columns.len());
    }

    #[test]
    fn select_value_conditions_and_user_roles_are_typed() {
        let condition = |raw: serde_json::Value| {
            let value = SelectValue::from_value(raw).unwrap();
            assert!(!value.is_deleted(), "a value Kaiten lists is never a deleted row");
            value.values()[4].clone()
        };
        assert_eq!(condition(serde_json::json!({"id": 1, "condition": "active"})), SqlValue::Int(1));
        assert_eq!(condition(serde_json::json!({"id": 1, "condition": "inactive"})), SqlValue::Int(2));
        assert_eq!(condition(serde_json::json!({"id": 1, "condition": "inactive", "deleted": true})), SqlValue::Int(3));
        assert_eq!(condition(serde_json::json!({"id": 1})), SqlValue::Null);
        let user = User::from_value(serde_json::json!({"id": 1, "role": 3, "activated": false})).unwrap();
        let columns = EntityKind::Users.table().columns;
        let at = |name: &str| columns.iter().position(|c| c.name == name).unwrap();
        assert_eq!(user.values()[at("role")], SqlValue::Int(3));
        assert_eq!(user.values()[at("activated")], SqlValue::Bool(false));
        assert_eq!(user.values().len(), columns.len());
    }

    #[test]
    fn unknown_kind_names_the_choices() {
        let err = "kards".parse::<EntityKind>().unwrap_err();
        assert!(err.to_string().contains("\"kards\"") && err.to_string().contains("cards"));
    }
}
