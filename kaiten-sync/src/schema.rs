//! The storage schema in one place: entity kinds, their tables, and the typed columns each record
//! provides. Stores generate their statements from these definitions, so the SQLite and Postgres
//! stores can never disagree on what a column holds.
//!
//! Every entity table has, besides the typed columns listed here: `id` (unique: the primary key,
//! except in SQLite's `cards`, which keeps a rowid of its own), `raw` (the JSON as Kaiten sent
//! it), `synced_at` (when this mirror last wrote the row), `deleted_at` (when the mirror learned
//! the record is gone; `NULL` while it exists) and `seen_sweep` (bookkeeping for deletion
//! detection: the full listing that last saw the row).
//!
//! Each kind is declared once, in the `entity_kinds!` invocation below: its name and aliases, its
//! model, its table, and one line per typed column (`"name": Type = expression`). That one
//! declaration yields [`EntityKind`] (variants, [`EntityKind::ALL`], names, parsing), [`TABLES`],
//! the [`ToRow`] impl of the model and [`Batch`]. A column's value is written next to its name, and
//! a value of the wrong Rust type for the column's [`ColumnType`] does not compile.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use kaiten_client::{
    Board, Card, CardState, CardType, Column, Condition, Lane, PropertyDefinition, Record, SelectValue, Space, Tag,
    User,
};
use serde::{Deserialize, Serialize};

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

/// Which Rust values a column of each [`ColumnType`] accepts: a column declared `Text` takes a
/// `&Option<String>`, `BigInt` an `Option<i64>` (or a typed id, or an integer-coded enum), and so on. The
/// declarations below go through [`typed::Encode`], so a value of the wrong type is a compile error.
mod typed {
    use super::*;

    /// Marker of [`ColumnType::BigInt`].
    pub(super) enum BigInt {}
    /// Marker of [`ColumnType::Float`].
    pub(super) enum Float {}
    /// Marker of [`ColumnType::Text`].
    pub(super) enum Text {}
    /// Marker of [`ColumnType::Bool`].
    pub(super) enum Bool {}
    /// Marker of [`ColumnType::Timestamp`].
    pub(super) enum Timestamp {}
    /// Marker of [`ColumnType::Json`].
    pub(super) enum Json {}

    /// A Rust value a column of type `T` stores.
    #[diagnostic::on_unimplemented(
        message = "a column declared `{T}` cannot hold a `{Self}`",
        label = "this value does not fit the column's type"
    )]
    pub(super) trait Encode<T> {
        fn encode(self) -> SqlValue;
    }

    impl Encode<BigInt> for Option<i64> {
        fn encode(self) -> SqlValue {
            self.into()
        }
    }
    impl Encode<BigInt> for Option<Condition> {
        fn encode(self) -> SqlValue {
            self.into()
        }
    }
    impl Encode<BigInt> for Option<CardState> {
        fn encode(self) -> SqlValue {
            self.map(CardState::code).into()
        }
    }
    /// Typed ids ([`kaiten_client::CardId`], ...) are stored as their integer.
    macro_rules! encode_ids {
        ($($id:ident),+) => {$(
            impl Encode<BigInt> for Option<kaiten_client::$id> {
                fn encode(self) -> SqlValue {
                    self.map(i64::from).into()
                }
            }
        )+};
    }
    encode_ids!(
        SpaceId,
        BoardId,
        ColumnId,
        LaneId,
        UserId,
        CardTypeId,
        TagId,
        PropertyId,
        SelectValueId,
        CardId,
        WebhookId
    );

    impl Encode<Float> for Option<f64> {
        fn encode(self) -> SqlValue {
            self.into()
        }
    }
    impl Encode<Text> for &Option<String> {
        fn encode(self) -> SqlValue {
            self.into()
        }
    }
    impl Encode<Bool> for Option<bool> {
        fn encode(self) -> SqlValue {
            self.into()
        }
    }
    impl Encode<Timestamp> for Option<DateTime<Utc>> {
        fn encode(self) -> SqlValue {
            self.into()
        }
    }
    impl Encode<Json> for Option<serde_json::Value> {
        fn encode(self) -> SqlValue {
            self.map_or(SqlValue::Null, SqlValue::Json)
        }
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
    /// The JSON as received: [`RawJson::as_str`](kaiten_client::RawJson::as_str) is the text to
    /// store.
    pub raw: &'a kaiten_client::RawJson,
}

/// Turns a record into its row. Implemented for every model the mirror stores, by the declaration
/// of its kind.
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

/// An entity kind name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown entity kind {:?}; expected one of: {}", .0, EntityKind::ALL.map(EntityKind::as_str).join(", "))]
pub struct UnknownEntityKind(pub String);

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntityKind {
    type Err = UnknownEntityKind;

    /// A kind's name or one of its aliases, in any case, with `-` for `_`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        EntityKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == norm || kind.aliases().contains(&norm.as_str()))
            .ok_or_else(|| UnknownEntityKind(s.to_owned()))
    }
}

/// Declares every entity kind once; see the module documentation. Per kind: its doc, its variant,
/// its model and the name the column expressions use for the record, then its name (configuration,
/// CLI, run log), the aliases [`FromStr`] accepts, its table, the scope column of deletion
/// detection, optionally when a record says it is deleted and its version, and its typed columns in
/// table order (stores and migrations depend on that order: append, never reorder).
macro_rules! entity_kinds {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident: $model:ident as $r:ident {
            name: $name:literal,
            aliases: [$($alias:literal),* $(,)?],
            table: $table:literal,
            scope: $scope:expr,
            $(deleted: $deleted:expr,)?
            $(version: $version:expr,)?
            columns: [$($column:literal: $ty:ident = $value:expr),+ $(,)?] $(,)?
        }
    )+) => {
        const KIND_COUNT: usize = [$($name),+].len();

        /// The kinds of entity the mirror holds, in the order a full sync visits them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum EntityKind {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant,)+
        }

        impl EntityKind {
            /// Every kind, in dependency order.
            pub const ALL: [EntityKind; KIND_COUNT] = [$(EntityKind::$variant),+];

            /// The name used in configuration, the CLI and the run log (`cards`, `card_types`, ...).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EntityKind::$variant => $name,)+
                }
            }

            /// Other names parsing accepts for this kind besides [`EntityKind::as_str`] (`card`,
            /// `types`, ...).
            pub fn aliases(self) -> &'static [&'static str] {
                match self {
                    $(EntityKind::$variant => &[$($alias),*],)+
                }
            }

            /// The table definition of this kind.
            pub fn table(self) -> &'static TableDef {
                &TABLES[self as usize]
            }
        }

        /// The entity tables, indexed by `EntityKind as usize`.
        pub static TABLES: [TableDef; KIND_COUNT] = [$(
            TableDef {
                name: $table,
                columns: &[$(ColumnDef { name: $column, ty: ColumnType::$ty }),+],
                scope_column: $scope,
            },
        )+];

        $(
            impl ToRow for $model {
                const KIND: EntityKind = EntityKind::$variant;

                fn values(&self) -> Vec<SqlValue> {
                    let $r = self;
                    vec![$(typed::Encode::<typed::$ty>::encode($value)),+]
                }

                $(
                    fn is_deleted(&self) -> bool {
                        let $r = self;
                        $deleted
                    }
                )?

                $(
                    fn version(&self) -> Option<i64> {
                        let $r = self;
                        $version
                    }
                )?
            }
        )+

        /// A page of records of one kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Batch {
            $($(#[doc = $doc])* $variant(Vec<$model>),)+
        }

        impl Batch {
            /// The kind of the records.
            pub fn kind(&self) -> EntityKind {
                match self {
                    $(Batch::$variant(_) => EntityKind::$variant,)+
                }
            }

            /// Number of records.
            pub fn len(&self) -> usize {
                match self {
                    $(Batch::$variant(items) => items.len(),)+
                }
            }

            /// Whether the page is empty.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Parses JSON objects as records of `kind`, each keeping its object as `raw`. Fails
            /// on the first value that is not an object with an integer `id`.
            pub fn from_json(kind: EntityKind, records: Vec<serde_json::Value>) -> Result<Batch, serde_json::Error> {
                Ok(match kind {
                    $(EntityKind::$variant => {
                        Batch::$variant(records.into_iter().map($model::from_value).collect::<Result<_, _>>()?)
                    })+
                })
            }

            /// Every record as a row, in page order, repeated ids included.
            pub(crate) fn rows_in_page_order(&self) -> Vec<Row<'_>> {
                match self {
                    $(Batch::$variant(items) => items.iter().map(ToRow::row).collect(),)+
                }
            }
        }
    };
}

entity_kinds! {
    /// Spaces.
    Spaces: Space as space {
        name: "spaces",
        aliases: ["space"],
        table: "spaces",
        scope: None,
        columns: [
            "uid": Text = &space.uid,
            "title": Text = &space.title,
            "archived": Bool = space.archived,
            "parent_entity_uid": Text = &space.parent_entity_uid,
            "sort_order": Float = space.sort_order,
            "external_id": Text = &space.external_id,
            "created": Timestamp = space.created,
            "updated": Timestamp = space.updated,
        ],
    }

    /// Users.
    Users: User as user {
        name: "users",
        aliases: ["user"],
        table: "users",
        scope: None,
        columns: [
            "uid": Text = &user.uid,
            "full_name": Text = &user.full_name,
            "username": Text = &user.username,
            "email": Text = &user.email,
            "activated": Bool = user.activated,
            "is_virtual": Bool = user.is_virtual,
            "role": BigInt = user.role,
            "created": Timestamp = user.created,
            "updated": Timestamp = user.updated,
        ],
    }

    /// Card types.
    CardTypes: CardType as card_type {
        name: "card_types",
        aliases: ["card_type", "types"],
        table: "card_types",
        scope: None,
        columns: [
            "uid": Text = &card_type.uid,
            "name": Text = &card_type.name,
            "letter": Text = &card_type.letter,
            "color": BigInt = card_type.color,
            "archived": Bool = card_type.archived,
            "created": Timestamp = card_type.created,
            "updated": Timestamp = card_type.updated,
        ],
    }

    /// Tags.
    Tags: Tag as tag {
        name: "tags",
        aliases: ["tag"],
        table: "tags",
        scope: None,
        columns: [
            "uid": Text = &tag.uid,
            "name": Text = &tag.name,
            "color": BigInt = tag.color,
            "archived": Bool = tag.archived,
            "created": Timestamp = tag.created,
            "updated": Timestamp = tag.updated,
        ],
    }

    /// Custom property definitions.
    PropertyDefinitions: PropertyDefinition as property {
        name: "property_definitions",
        aliases: ["properties", "custom_properties"],
        table: "property_definitions",
        scope: None,
        columns: [
            "uid": Text = &property.uid,
            "name": Text = &property.name,
            "type": Text = &property.property_type,
            "condition": BigInt = property.condition,
            "multi_select": Bool = property.multi_select,
            "external_id": Text = &property.external_id,
            "created": Timestamp = property.created,
            "updated": Timestamp = property.updated,
        ],
    }

    /// Values of select-type custom properties.
    SelectValues: SelectValue as value {
        name: "select_values",
        aliases: [],
        table: "property_select_values",
        scope: Some("custom_property_id"),
        columns: [
            "uid": Text = &value.uid,
            "custom_property_id": BigInt = value.custom_property_id,
            "value": Text = &value.value,
            "color": BigInt = value.color,
            "condition": BigInt = select_value_condition(value),
            "sort_order": Float = value.sort_order,
            "created": Timestamp = value.created,
            "updated": Timestamp = value.updated,
        ],
    }

    /// Boards.
    Boards: Board as board {
        name: "boards",
        aliases: ["board"],
        table: "boards",
        scope: Some("space_id"),
        columns: [
            "uid": Text = &board.uid,
            "space_id": BigInt = board.space_id,
            "title": Text = &board.title,
            "description": Text = &board.description,
            "external_id": Text = &board.external_id,
            "sort_order": Float = board.sort_order,
            "archived": Bool = board.archived,
            "created": Timestamp = board.created,
            "updated": Timestamp = board.updated,
        ],
    }

    /// Columns and subcolumns.
    Columns: Column as column {
        name: "columns",
        aliases: ["column"],
        table: "columns",
        scope: Some("board_id"),
        columns: [
            "uid": Text = &column.uid,
            "board_id": BigInt = column.board_id,
            "parent_column_id": BigInt = column.column_id,
            "title": Text = &column.title,
            "sort_order": Float = column.sort_order,
            "type": BigInt = column.column_type,
            "wip_limit": BigInt = column.wip_limit,
            "external_id": Text = &column.external_id,
            "created": Timestamp = column.created,
            "updated": Timestamp = column.updated,
        ],
    }

    /// Lanes.
    Lanes: Lane as lane {
        name: "lanes",
        aliases: ["lane"],
        table: "lanes",
        scope: Some("board_id"),
        deleted: lane.condition == Some(Condition::Deleted),
        columns: [
            "uid": Text = &lane.uid,
            "board_id": BigInt = lane.board_id,
            "title": Text = &lane.title,
            "sort_order": Float = lane.sort_order,
            "condition": BigInt = lane.condition,
            "wip_limit": BigInt = lane.wip_limit,
            "external_id": Text = &lane.external_id,
            "created": Timestamp = lane.created,
            "updated": Timestamp = lane.updated,
        ],
    }

    /// Cards (with their tag links in `card_tags`).
    Cards: Card as card {
        name: "cards",
        aliases: ["card"],
        table: "cards",
        scope: Some("board_id"),
        deleted: card.condition == Some(Condition::Deleted),
        version: card.version,
        columns: [
            "uid": Text = &card.uid,
            "title": Text = &card.title,
            "description": Text = &card.description,
            "state": BigInt = card.state,
            "condition": BigInt = card.condition,
            "archived": Bool = Some(card.is_archived()),
            "asap": Bool = card.asap,
            "blocked": Bool = card.blocked,
            "space_id": BigInt = card.space_id,
            "board_id": BigInt = card.board_id,
            "column_id": BigInt = card.column_id,
            "lane_id": BigInt = card.lane_id,
            "owner_id": BigInt = card.owner_id,
            "type_id": BigInt = card.type_id,
            "sort_order": Float = card.sort_order,
            "version": BigInt = card.version,
            "size": Float = card.size,
            "due_date": Timestamp = card.due_date,
            "external_id": Text = &card.external_id,
            "properties": Json = card_properties(card),
            "created": Timestamp = card.created,
            "updated": Timestamp = card.updated,
            "last_moved_at": Timestamp = card.last_moved_at,
            "completed_at": Timestamp = card.completed_at,
        ],
    }
}

/// A select value's `condition` column: 1 active, 2 inactive (no longer offered), 3 removed
/// (`deleted: true`). Removed values stay live rows (no `deleted_at`) while Kaiten still lists them,
/// because cards keep holding them; `deleted_at` is set only when a complete listing of every
/// condition no longer has the value.
fn select_value_condition(value: &SelectValue) -> Option<Condition> {
    if value.is_removed() {
        Some(Condition::Deleted)
    } else {
        value.condition
    }
}

/// A card's `properties` column: the custom property values as one JSON object, `NULL` when none.
fn card_properties(card: &Card) -> Option<serde_json::Value> {
    (!card.properties.is_empty()).then(|| serde_json::Value::Object(card.properties.clone().into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_table_and_values_match_columns() {
        for (i, kind) in EntityKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
            let table = kind.table();
            assert!(table.columns.iter().any(|c| c.name == "updated"), "{kind}");
            assert_eq!(kind.as_str().parse::<EntityKind>().unwrap(), *kind);
            for alias in kind.aliases() {
                assert_eq!(alias.parse::<EntityKind>().unwrap(), *kind, "{alias}");
            }
            assert_eq!(serde_json::to_value(kind).unwrap(), serde_json::json!(kind.as_str()));
            if let Some(scope) = table.scope_column {
                let column = table.columns.iter().find(|c| c.name == scope).unwrap_or_else(|| panic!("{kind}"));
                assert_eq!(column.ty, ColumnType::BigInt, "{kind}.{scope}");
            }
            let mut names: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), table.columns.len(), "{kind} declares a column twice");
            let batch = Batch::from_json(*kind, vec![serde_json::json!({"id": 1})]).unwrap();
            assert_eq!(batch.kind(), *kind);
            for row in batch.rows() {
                assert_eq!(row.values.len(), table.columns.len(), "{kind}");
            }
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
        assert_eq!(
            err.to_string(),
            "unknown entity kind \"kards\"; expected one of: spaces, users, card_types, tags, property_definitions, \
             select_values, boards, columns, lanes, cards"
        );
        assert_eq!(" Card-Types ".parse::<EntityKind>().unwrap(), EntityKind::CardTypes);
    }
}
