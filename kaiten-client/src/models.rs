//! Typed models of the Kaiten entities a sync needs.
//!
//! Every model is tolerant: unknown fields are ignored (and kept in [`Record::raw`]), missing or `null`
//! fields become `None`, enums have an `Unknown` fallback, and a timestamp that does not parse becomes
//! `None` rather than failing the whole page. Timestamps parse in every form Kaiten sends (see
//! [`parse_timestamp`]): ISO 8601 with an offset, without one, and date-only (`"2024-12-31"`, as some
//! clients write `due_date`). The JSON exactly as Kaiten sent it is always kept in
//! `raw`, so a store can persist everything, including fields this crate does not know yet.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::ids::{
    BoardId, CardId, CardTypeId, ColumnId, LaneId, PropertyId, SelectValueId, SpaceId, TagId, UserId, WebhookId,
};
pub use crate::raw::RawJson;

/// A Kaiten record: a typed view of one JSON object plus the object itself.
pub trait Record: DeserializeOwned + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// A short name of the entity, used in errors and logs (`"card"`, `"board"`, ...).
    const ENTITY: &'static str;

    /// The record's integer id: its typed `id` field (a [`CardId`], a [`BoardId`], ...) as the bare
    /// `i64`.
    ///
    /// Untyped on purpose: code generic over every kind of record (a [`Pager`](crate::Pager), a store
    /// that keeps each kind in a table keyed by the integer) needs one key type for all of them. Code
    /// that knows the kind reads the typed `id` field instead.
    fn id(&self) -> i64;

    /// The JSON object exactly as received.
    fn raw(&self) -> &RawJson;

    /// When the record was last updated in Kaiten, if it says.
    fn updated(&self) -> Option<DateTime<Utc>>;

    /// Parses a JSON object into the typed model, keeping the object as `raw`.
    ///
    /// Fails only when the value is not an object or lacks an integer `id`.
    fn from_value(raw: Value) -> Result<Self, serde_json::Error>;

    /// Parses the text of a JSON object into the typed model, keeping the text as `raw` (no
    /// [`Value`] tree is built). What the client does with every record of a page.
    ///
    /// Fails only when the text is not an object or lacks an integer `id`.
    fn from_raw(raw: Box<RawValue>) -> Result<Self, serde_json::Error>;
}

macro_rules! record {
    ($ty:ident, $entity:literal) => {
        impl Record for $ty {
            const ENTITY: &'static str = $entity;
            fn id(&self) -> i64 {
                self.id.get()
            }
            fn raw(&self) -> &RawJson {
                &self.raw
            }
            fn updated(&self) -> Option<DateTime<Utc>> {
                self.updated
            }
            fn from_value(raw: Value) -> Result<Self, serde_json::Error> {
                // serde would read a struct from an array too (`[7]` as id 7): only an object is a record.
                if !raw.is_object() {
                    return Err(<serde_json::Error as serde::de::Error>::custom(format!(
                        "expected a JSON object, got {}",
                        json_kind(&raw)
                    )));
                }
                let mut parsed = <$ty>::deserialize(&raw)?;
                parsed.raw = RawJson::from(raw);
                Ok(parsed)
            }
            fn from_raw(raw: Box<RawValue>) -> Result<Self, serde_json::Error> {
                if !raw.get().trim_start().starts_with('{') {
                    let value: Value = serde_json::from_str(raw.get())?;
                    return Err(<serde_json::Error as serde::de::Error>::custom(format!(
                        "expected a JSON object, got {}",
                        json_kind(&value)
                    )));
                }
                // A lone UTF-16 surrogate escape (half of an emoji cut by the sender) would fail
                // the typed parse and every later use of the text: it becomes U+FFFD.
                let raw = crate::raw::repair_surrogates(raw);
                let mut parsed: $ty = match serde_json::from_str(raw.get()) {
                    Ok(parsed) => parsed,
                    // A key given twice fails serde's derive ("duplicate field"), where a `Value`
                    // keeps the last one, as before: parse through the tree, keep the text.
                    Err(err) => match serde_json::from_str::<Value>(raw.get()) {
                        Ok(value) => <$ty>::deserialize(&value).map_err(|_| err)?,
                        Err(_) => return Err(err),
                    },
                };
                parsed.raw = RawJson::from_raw(raw);
                Ok(parsed)
            }
        }
    };
}

/// An integer-coded Kaiten enum with an `Unknown` fallback for codes this crate does not know.
macro_rules! int_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A code this version of the crate does not know.
            Unknown(i64),
        }

        impl $name {
            /// The integer code Kaiten uses.
            pub fn code(self) -> i64 {
                match self {
                    $(Self::$variant => $code,)+
                    Self::Unknown(code) => code,
                }
            }

            /// The variant for a code (`Unknown` for codes not listed).
            pub fn from_code(code: i64) -> Self {
                match code {
                    $($code => Self::$variant,)+
                    other => Self::Unknown(other),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_i64(self.code())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self::from_code(i64::deserialize(d)?))
            }
        }
    };
}

int_enum! {
    /// A card's workflow state.
    CardState { /// Not started (first column type).
        Queued = 1, /// In progress.
        InProgress = 2, /// Done.
        Done = 3 }
}

int_enum! {
    /// Whether a record is live, archived or deleted (cards, lanes, select values).
    Condition { /// On the board.
        Live = 1, /// Archived.
        Archived = 2, /// Deleted (soft-deleted by Kaiten).
        Deleted = 3 }
}

/// Parses a timestamp in any form Kaiten sends: RFC 3339 / ISO 8601 with an offset
/// (`2024-10-14T10:48:16.594Z`, `...+03:00`), without one (`2024-10-14T10:48:16`, `2024-10-14 10:48`,
/// read as UTC), or a date alone (`2024-12-31`, midnight UTC). `None` for anything else.
///
/// ```
/// use kaiten_client::models::parse_timestamp;
/// assert_eq!(parse_timestamp("2024-12-31").unwrap().to_rfc3339(), "2024-12-31T00:00:00+00:00");
/// assert_eq!(parse_timestamp("2024-10-14T13:48:16.594+03:00").unwrap().timestamp_millis(), 1_728_902_896_594);
/// assert_eq!(parse_timestamp("yesterday"), None);
/// ```
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    // ISO 8601 offsets without a colon (`+0300`), and a space instead of `T`.
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let naive = text.strip_suffix('Z').unwrap_or(text);
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(naive, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
}

/// Lenient optional deserializers: a wrong type or an unparseable value becomes `None`.
pub(crate) mod lenient {
    use std::borrow::Cow;

    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::*;

    /// One JSON value as the lenient readers need it: a scalar, kept without building a [`Value`]
    /// (a string borrowed from the text when it has no escapes), or `Other` for arrays and objects,
    /// skipped.
    enum Scalar<'a> {
        Null,
        Bool(bool),
        Int(i64),
        Big(u64),
        Float(f64),
        Str(Cow<'a, str>),
        Other,
    }

    impl Scalar<'_> {
        /// An integer, as `Value::as_i64` reads one.
        fn as_i64(&self) -> Option<i64> {
            match *self {
                Scalar::Int(n) => Some(n),
                Scalar::Big(n) => i64::try_from(n).ok(),
                _ => None,
            }
        }

        /// A number as `f64`, as `Value::as_f64` reads one.
        fn as_f64(&self) -> Option<f64> {
            match *self {
                Scalar::Int(n) => Some(n as f64),
                Scalar::Big(n) => Some(n as f64),
                Scalar::Float(f) => Some(f),
                _ => None,
            }
        }
    }

    struct ScalarVisitor;

    impl<'de> Visitor<'de> for ScalarVisitor {
        type Value = Scalar<'de>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Scalar::Null)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Scalar::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(ScalarVisitor)
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Scalar::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Scalar::Int(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(i64::try_from(v).map_or(Scalar::Big(v), Scalar::Int))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Scalar::Float(v))
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Scalar::Str(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Scalar::Str(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Scalar::Str(Cow::Owned(v)))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Scalar::Other)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Scalar::Other)
        }
    }

    fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Scalar<'de>, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }

    pub(crate) fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(match scalar(d)? {
            Scalar::Str(s) => parse_timestamp(&s),
            _ => None,
        })
    }

    pub(crate) fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let value = scalar(d)?;
        Ok(match value {
            Scalar::Str(s) => s.parse().ok(),
            ref number => number.as_i64().or_else(|| number.as_f64().map(|f| f as i64)),
        })
    }

    pub(crate) fn float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let value = scalar(d)?;
        Ok(match value {
            Scalar::Str(s) => s.parse().ok(),
            ref number => number.as_f64(),
        })
    }

    pub(crate) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        let value = scalar(d)?;
        Ok(match value {
            Scalar::Bool(b) => Some(b),
            ref number => number.as_i64().map(|n| n != 0),
        })
    }

    /// A JSON boolean, nothing else.
    pub(crate) fn strict_boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        Ok(match scalar(d)? {
            Scalar::Bool(b) => Some(b),
            _ => None,
        })
    }

    pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(match scalar(d)? {
            Scalar::Str(s) => Some(s.into_owned()),
            Scalar::Int(n) => Some(n.to_string()),
            Scalar::Big(n) => Some(n.to_string()),
            // Spelled as serde_json spells the number.
            Scalar::Float(f) => serde_json::Number::from_f64(f).map(|n| n.to_string()),
            Scalar::Null | Scalar::Bool(_) | Scalar::Other => None,
        })
    }

    /// An optional typed id, read as leniently as [`int`].
    pub(crate) fn id<'de, D: Deserializer<'de>, T: From<i64>>(d: D) -> Result<Option<T>, D::Error> {
        Ok(int(d)?.map(T::from))
    }

    /// A list of typed ids: the integer items of an array (anything else is skipped).
    pub(crate) fn ids<'de, D: Deserializer<'de>, T: From<i64>>(d: D) -> Result<Vec<T>, D::Error> {
        struct Ids<T>(std::marker::PhantomData<T>);
        impl<'de, T: From<i64>> Visitor<'de> for Ids<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut ids = Vec::new();
                while let Some(item) = seq.next_element_seed(ScalarSeed)? {
                    ids.extend(item.as_i64().map(T::from));
                }
                Ok(ids)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Vec::new())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_unit<E>(self) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_none<E>(self) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_str<E>(self, _: &str) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
        }
        d.deserialize_any(Ids(std::marker::PhantomData))
    }

    /// Reads one element of a sequence as a [`Scalar`].
    struct ScalarSeed;

    impl<'de> serde::de::DeserializeSeed<'de> for ScalarSeed {
        type Value = Scalar<'de>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
            scalar(d)
        }
    }

    pub(crate) fn state<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CardState>, D::Error> {
        Ok(int(d)?.map(CardState::from_code))
    }

    /// An integer code, or the strings Kaiten uses for custom properties and select values
    /// (`active` / `inactive`, `archived`, `deleted`).
    pub(crate) fn condition<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Condition>, D::Error> {
        Ok(match scalar(d)? {
            Scalar::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "active" | "live" => Some(Condition::Live),
                "inactive" | "archived" => Some(Condition::Archived),
                "deleted" | "removed" => Some(Condition::Deleted),
                other => other.parse().ok().map(Condition::from_code),
            },
            number => number.as_i64().map(Condition::from_code),
        })
    }

    /// A card's `members`: `None` unless it is an array (the list shape of `GET /cards` has none).
    pub(crate) fn members<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<CardMember>>, D::Error> {
        Ok(match Option::<Value>::deserialize(d)? {
            Some(Value::Array(items)) => Some(items.iter().map(CardMember::from_json).collect()),
            _ => None,
        })
    }

    pub(crate) fn object<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Value>, D::Error> {
        Ok(match Option::<Value>::deserialize(d)? {
            Some(Value::Object(map)) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        })
    }
}

/// A space: a folder of boards; spaces form a tree through `parent_entity_uid`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Space {
    /// Integer id.
    pub id: SpaceId,
    /// UUID.
    #[serde(default, deserialize_with = "lenient::string")]
    pub uid: Option<String>,
    /// Title.
    #[serde(default, deserialize_with = "lenient::string")]
    pub title: Option<String>,
    /// Whether the space is archived.
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub archived: Option<bool>,
    /// The parent space's uid, for nested spaces.
    #[serde(default, deserialize_with = "lenient::string")]
    pub parent_entity_uid: Option<String>,
    /// Position among siblings.
    #[serde(default, deserialize_with = "lenient::float")]
    pub sort_order: Option<f64>,
    /// External id set by integrations.
    #[serde(default, deserialize_with = "lenient::string")]
    pub external_id: Option<String>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub updated: Option<DateTime<Utc>>,
    /// The JSON object as received.
    #[serde(skip)]
    pub raw: RawJson,
}
record!(Space, "space");

impl Space {
    /// Ids of the boards embedded in the space object (`boards[].id`), if Kaiten sent them.
    pub fn embedded_board_ids(&self) -> Vec<BoardId> {
        self.raw
            .get("boards")
            .and_then(Value::as_array)
            .map(|boards| boards.iter().filter_map(|b| b.get("id").and_then(Value::as_i64)).map(BoardId).collect())
            .unwrap_or_default()
    }
}

/// A board of a space.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Board {
    /// Integer id.
    pub id: BoardId,
    /// UUID, when sent.
    #[serde(default, deserialize_with = "lenient::string")]
    pub uid: Option<String>,
    /// Title.
    #[serde(default, deserialize_with = "lenient::string")]
    pub title: Option<String>,
    /// The space the board belongs to. Kaiten does not always include it; the sync engine fills it in
    /// from the space the board was listed under.
    #[serde(default, deserialize_with = "lenient::id")]
    pub space_id: Option<SpaceId>,
    /// Description.
    #[serde(default, deserialize_with = "lenient::string")]
    pub description: Option<String>,
    /// External id.
    #[serde(default, deserialize_with = "lenient::string")]
    pub external_id: Option<String>,
    /// Position in the space.
    #[serde(default, deserialize_with = "lenient::float")]
    pub sort_order: Option<f64>,
    /// Whether the board is archived.
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub archived: Option<bool>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub updated: Option<DateTime<Utc>>,
    /// The JSON object as received.
    #[serde(skip)]
    pub raw: RawJson,
}
record!(Board, "board");

/// A column of a board. Subcolumns are columns too, with `column_id` naming their parent column.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Column {
    /// Integer id.
    pub id: ColumnId,
    /// UUID, when sent.
    #[serde(default, deserialize_with = "lenient::string")]
    pub uid: Option<String>,
    /// Title.
    #[serde(default, deserialize_with = "lenient::string")]
    pub title: Option<String>,
    /// The board.
    #[serde(default, deserialize_with = "lenient::id")]
    pub board_id: Option<BoardId>,
    /// The parent column, for a subcolumn.
    #[serde(default, deserialize_with = "lenient::id")]
    pub column_id: Option<ColumnId>,
    /// Position on the board.
    #[serde(default, deserialize_with = "lenient::float")]
    pub sort_order: Option<f64>,
    /// Column type: 1 queued, 2 in progress, 3 done.
    #[serde(default, rename = "type", deserialize_with = "lenient::int")]
    pub column_type: Option<i64>,
    /// WIP limit.
    #[serde(default, deserialize_with = "lenient::int")]
    pub wip_limit: Option<i64>,
    /// External id.
    #[serde(default, deserialize_with = "lenient::string")]
    pub external_id: Option<String>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub updated: Option<DateTime<Utc>>,
    /// The JSON object as received (for a top-level column, including its nested `subcolumns`).
    #[serde(skip)]
    pub raw: RawJson,
}
record!(Column, "column");

impl Column {
    /// The nested `subcolumns[]` of a full column, parsed, with `column_id` and `board_id` filled in
    /// from the parent when Kaiten left them out.
    pub fn subcolumns(&self) -> Vec<Column> {
        let Some(items) = self.raw.get("subcolumns").and_then(Value::as_array) else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| Column::from_value(item.clone()).ok())
            .map(|mut sub| {
                sub.column_id = sub.column_id.or(Some(self.id));
                sub.board_id = sub.board_id.or(self.board_id);
                sub
            })
            .collect()
    }
}

/// A lane (swimlane) of a board.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Lane {
    /// Integer id.
    pub id: LaneId,
    /// UUID, when sent.
    #[serde(default, deserialize_with = "lenient::string")]
    pub uid: Option<String>,
    /// Title.
    #[serde(default, deserialize_with = "lenient::string")]
    pub title: Option<String>,
    /// The board.
    #[serde(default, deserialize_with = "lenient::id")]
    pub board_id: Option<BoardId>,
    /// Position on the board.
    #[serde(default, deserialize_with = "lenient::float")]
    pub sort_order: Option<f64>,
    /// Live, archived or deleted.
    #[serde(default, deserialize_with = "lenient::condition")]
    pub condition: Option<Condition>,
    /// WIP limit.
    #[serde(default, deserialize_with = "lenient::int")]
    pub wip_limit: Option<i64>,
    /// External id.
    #[serde(default, deserialize_with = "lenient::string")]
    pub external_id: Option<String>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub updated: Option<DateTime<Utc>>,
    /// The JSON object as received.
    #[serde(skip)]
    pub raw: RawJson,
}
record!(Lane, "lane");

/// A user of the company, as visible to the token.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct User {
    /// Integer id.
    pub id: UserId,
    /// UUID.
    #[serde(default, deserialize_with = "lenient::string")]
    pub uid: Option<String>,
    /// Full name.
    #[serde(default, deserialize_with = "lenient::string")]
    pub full_name: Option<String>,
    /// Login name.
    #[serde(default, deserialize_with = "lenient::string")]
    pub username: Option<String>,
    /// E-mail address.
    #[serde(default, deserialize_with = "lenient::string")]
    pub email: Option<String>,
    /// Whether the account is activated.
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub activated: Option<bool>,
    /// Whether this is a virtual (non-login) user.
    #[serde(default, rename = "virtual", deserialize_with = "lenient::boolean")]
    pub is_virtual: Option<bool>,
    /// The user's role in the company: 1 owner, 2 user, 3 deactivated.
    #[serde(default, deserialize_with = "lenient::int")]
    pub role: Option<i64>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub updated: Option<DateTime<Utc>>,
    /// The JSON object as received.
    #[serde(skip)]
    pub raw: RawJson,
}
record!(User, "user");

/// A card type (e.g. "Bug", "Feature").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct CardType {
    /// Integer id.
    pub id: CardTypeId,
    /// UUID.
    #[serde(default, deserialize_with = "lenient::string")]
    pub uid: Option<String>,
    /// Name.
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    /// One-letter badge.
    #[serde(default, deserialize_with = "lenient::string")]
    pub letter: Option<String>,
    /// Colour code.
    #[serde(default, deserialize_with = "lenient::int")]
    pub color: Option<i64>,
    /// Whether the type is archived.
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub archived: Option<bool>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub updated: Option<DateTime<Utc>>,
    /// The JSON object as received.
    #[serde(skip)]
    pub raw: RawJson,
}
record!(CardType, "card type");

/// A tag.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Tag {
    /// Integer id.
    pub id: TagId,
    /// UUID.
    #[serde(default, deserialize_with = "lenient::string")]
    pub uid: Option<String>,
    /// Name.
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    /// Colour code.
    #[serde(default, deserialize_with = "lenient::int")]
    pub color: Option<i64>,
    /// Whether the tag is archived.
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub archived: Option<bool>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub updated: Option<DateTime<Utc>>,
    /// The JSON object as received.
    #[serde(skip)]
    pub raw: RawJson,
}
record!(Tag, "tag");

/// A company-wide custom property definition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct PropertyDefinition {
    /// Integer id. Card values live under `properties["id_<id>"]`.
    pub id: PropertyId,
    /// UUID.
    #[serde(default, deserialize_with = "lenient::string")]
    pub uid: Option<String>,
    /// Name.
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    /// Type: `string`, `number`, `date`, `email`, `checkbox`, `select`, `user`, `url`, ...
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    pub property_type: Option<String>,
    /// Live or archived.
    #[serde(default, deserialize_with = "lenient::condition")]
    pub condition: Option<Condition>,
    /// For a select: whether several values may be chosen.
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub multi_select: Option<bool>,
    /// External id.
    #[serde(default, deserialize_with = "lenient::string")]
    pub external_id: Option<String>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub updated: Option<DateTime<Utc>>,
    /// The JSON object as received.
    #[serde(skip)]
    pub raw: RawJson,
}
record!(PropertyDefinition, "custom property");

impl PropertyDefinition {
    /// Whether the property is a select (its values live at `.../select-values`).
    pub fn is_select(&self) -> bool {
        matches!(self.property_type.as_deref(), Some("select") | Some("multi_select"))
    }
}

/// One value of a select-type custom property.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SelectValue {
    /// Integer id.
    pub id: SelectValueId,
    /// UUID.
    #[serde(default, deserialize_with = "lenient::string")]
    pub uid: Option<String>,
    /// The property this value belongs to.
    #[serde(default, deserialize_with = "lenient::id")]
    pub custom_property_id: Option<PropertyId>,
    /// The displayed value.
    #[serde(default, deserialize_with = "lenient::string")]
    pub value: Option<String>,
    /// Colour code.
    #[serde(default, deserialize_with = "lenient::int")]
    pub color: Option<i64>,
    /// Kaiten sends a string: `"active"` ([`Condition::Live`]) or `"inactive"` (no longer offered:
    /// [`Condition::Archived`]); integer codes are read as such. A removed value also says
    /// `deleted: true` (see [`SelectValue::is_removed`]).
    #[serde(default, deserialize_with = "lenient::condition")]
    pub condition: Option<Condition>,
    /// Position in the list.
    #[serde(default, deserialize_with = "lenient::float")]
    pub sort_order: Option<f64>,
    /// `deleted: true` when Kaiten removed the value (see [`SelectValue::is_removed`]). Only a JSON
    /// boolean counts.
    #[serde(default, deserialize_with = "lenient::strict_boolean")]
    pub deleted: Option<bool>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub updated: Option<DateTime<Utc>>,
    /// The JSON object as received.
    #[serde(skip)]
    pub raw: RawJson,
}
record!(SelectValue, "select value");

impl SelectValue {
    /// Whether Kaiten says the value was removed (`deleted: true`, or a `deleted`/`removed`
    /// condition). Cards may still hold a removed value.
    pub fn is_removed(&self) -> bool {
        self.condition == Some(Condition::Deleted) || self.deleted == Some(true)
    }
}

/// A card (list shape of `GET /cards`; `GET /cards/{id}` parses into the same type).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Card {
    /// Integer id.
    pub id: CardId,
    /// UUID.
    #[serde(default, deserialize_with = "lenient::string")]
    pub uid: Option<String>,
    /// Title.
    #[serde(default, deserialize_with = "lenient::string")]
    pub title: Option<String>,
    /// Description (only when requested with `additional_card_fields=description`).
    #[serde(default, deserialize_with = "lenient::string")]
    pub description: Option<String>,
    /// Workflow state.
    #[serde(default, deserialize_with = "lenient::state")]
    pub state: Option<CardState>,
    /// Live, archived or deleted.
    #[serde(default, deserialize_with = "lenient::condition")]
    pub condition: Option<Condition>,
    /// Whether the card is archived.
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub archived: Option<bool>,
    /// Marked urgent.
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub asap: Option<bool>,
    /// Blocked by something.
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub blocked: Option<bool>,
    /// Board.
    #[serde(default, deserialize_with = "lenient::id")]
    pub board_id: Option<BoardId>,
    /// Column.
    #[serde(default, deserialize_with = "lenient::id")]
    pub column_id: Option<ColumnId>,
    /// Lane.
    #[serde(default, deserialize_with = "lenient::id")]
    pub lane_id: Option<LaneId>,
    /// Space (not always sent; the engine fills it from the board when it can).
    #[serde(default, deserialize_with = "lenient::id")]
    pub space_id: Option<SpaceId>,
    /// Owner user.
    #[serde(default, deserialize_with = "lenient::id")]
    pub owner_id: Option<UserId>,
    /// Card type.
    #[serde(default, deserialize_with = "lenient::id")]
    pub type_id: Option<CardTypeId>,
    /// Position in its cell.
    #[serde(default, deserialize_with = "lenient::float")]
    pub sort_order: Option<f64>,
    /// Bumped by Kaiten on every write.
    #[serde(default, deserialize_with = "lenient::int")]
    pub version: Option<i64>,
    /// Size (estimate).
    #[serde(default, deserialize_with = "lenient::float")]
    pub size: Option<f64>,
    /// Due date.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub due_date: Option<DateTime<Utc>>,
    /// External id.
    #[serde(default, deserialize_with = "lenient::string")]
    pub external_id: Option<String>,
    /// Custom property values, keyed `id_<property id>`.
    #[serde(default, deserialize_with = "lenient::object")]
    pub properties: BTreeMap<String, Value>,
    /// Tag ids.
    #[serde(default, deserialize_with = "lenient::ids")]
    pub tag_ids: Vec<TagId>,
    /// Parent card ids.
    #[serde(default, deserialize_with = "lenient::ids")]
    pub parents_ids: Vec<CardId>,
    /// Child card ids.
    #[serde(default, deserialize_with = "lenient::ids")]
    pub children_ids: Vec<CardId>,
    /// The card's members, when Kaiten sent the list (`GET /cards/{id}` does, the list shape of
    /// `GET /cards` does not): `None` means unknown, `Some(empty)` means no members.
    #[serde(default, deserialize_with = "lenient::members")]
    pub members: Option<Vec<CardMember>>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub updated: Option<DateTime<Utc>>,
    /// Last time the card moved.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub last_moved_at: Option<DateTime<Utc>>,
    /// When the card was completed.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub completed_at: Option<DateTime<Utc>>,
    /// The JSON object as received.
    #[serde(skip)]
    pub raw: RawJson,
}
record!(Card, "card");

/// One entry of a card's `members` array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CardMember {
    /// The user: the entry's `user_id`, else its `id` (Kaiten sets both to the user's id), when it
    /// is an integer.
    pub user_id: Option<UserId>,
    /// 1 member, 2 responsible; `None` when the entry does not say.
    pub member_type: Option<i64>,
}

impl CardMember {
    /// The `type` of a member.
    pub const MEMBER: i64 = 1;
    /// The `type` of the card's responsible.
    pub const RESPONSIBLE: i64 = 2;

    fn from_json(entry: &Value) -> Self {
        let int = |key: &str| entry.get(key).and_then(Value::as_i64);
        Self { user_id: int("user_id").or_else(|| int("id")).map(UserId), member_type: int("type") }
    }
}

impl Card {
    /// Whether the card is archived, from `archived` or `condition`.
    pub fn is_archived(&self) -> bool {
        self.archived.unwrap_or(false) || self.condition == Some(Condition::Archived)
    }
}

/// A space's external webhook (Kaiten's undocumented `/spaces/{id}/external-webhooks`): the URL
/// Kaiten posts the space's events to.
///
/// The URL carries the receiver's secret, so `Debug` masks it (see
/// [`mask_webhook_url`](crate::redact::mask_webhook_url)) and leaves `raw` out; print
/// [`ExternalWebhook::masked_url`], never `url`.
#[derive(Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ExternalWebhook {
    /// Integer id.
    pub id: WebhookId,
    /// The space it belongs to, when Kaiten says.
    #[serde(default, deserialize_with = "lenient::id")]
    pub space_id: Option<SpaceId>,
    /// Where Kaiten posts the events: holds a secret, never print it.
    #[serde(default, deserialize_with = "lenient::string")]
    pub url: Option<String>,
    /// Whether Kaiten delivers to it (`None`: not said, which Kaiten means as enabled).
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub enabled: Option<bool>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub updated: Option<DateTime<Utc>>,
    /// The JSON object as received (the URL included).
    #[serde(skip)]
    pub raw: RawJson,
}
record!(ExternalWebhook, "external webhook");

impl ExternalWebhook {
    /// Whether Kaiten delivers to it: `enabled` unless it says `false`.
    pub fn is_enabled(&self) -> bool {
        self.enabled != Some(false)
    }

    /// The URL with its secret masked, fit for a log or a page.
    pub fn masked_url(&self) -> Option<String> {
        self.url.as_deref().map(crate::redact::mask_webhook_url)
    }
}

impl std::fmt::Debug for ExternalWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalWebhook")
            .field("id", &self.id)
            .field("space_id", &self.space_id)
            .field("url", &self.masked_url())
            .field("enabled", &self.enabled)
            .field("created", &self.created)
            .field("updated", &self.updated)
            .finish_non_exhaustive()
    }
}

/// Parses a JSON array of objects into records, keeping each object as its `raw`.
pub fn parse_list<T: Record>(value: Value) -> Result<Vec<T>, serde_json::Error> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                T::from_value(item).map_err(|err| {
                    serde::de::Error::custom(format!("{} record #{index} of the list did not parse: {err}", T::ENTITY))
                })
            })
            .collect(),
        other => Err(serde::de::Error::custom(format!(
            "expected a JSON array of {} objects, got {}",
            T::ENTITY,
            json_kind(&other)
        ))),
    }
}

/// Parses the text of a JSON array of objects into records, keeping each object's text as its `raw`:
/// what the client does with a page. Same errors as [`parse_list`].
pub fn parse_list_text<T: Record>(json: &[u8]) -> Result<Vec<T>, serde_json::Error> {
    let items: Vec<Box<RawValue>> = match serde_json::from_slice(json) {
        Ok(items) => items,
        // Not an array (or not JSON): the `Value` path names what it got.
        Err(err) => return serde_json::from_slice::<Value>(json).map_or(Err(err), parse_list),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            T::from_raw(item).map_err(|err| {
                serde::de::Error::custom(format!("{} record #{index} of the list did not parse: {err}", T::ENTITY))
            })
        })
        .collect()
}

/// What kind of JSON value this is, for error messages (`"an array"`, `"null"`, ...).
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn card_keeps_unknown_fields_and_tolerates_missing_ones() {
        let raw = json!({"id": 7, "title": "T", "state": 9, "condition": 2, "brand_new_field": {"x": 1},
                         "updated": "2024-10-14T10:48:16.594Z", "tag_ids": [1, 2], "properties": {"id_5": [3]}});
        let card = Card::from_value(raw.clone()).unwrap();
        assert_eq!(card.id, 7);
        assert_eq!(card.state, Some(CardState::Unknown(9)));
        assert_eq!(card.condition, Some(Condition::Archived));
        assert!(card.is_archived());
        assert_eq!(card.raw, raw);
        assert_eq!(card.tag_ids, vec![1, 2]);
        assert_eq!(card.properties["id_5"], json!([3]));
        assert_eq!(card.updated.unwrap().timestamp_millis(), 1_728_902_896_594);
        assert_eq!(card.board_id, None);
    }

    #[test]
    fn a_record_without_an_id_is_an_error() {
        let err = parse_list::<Tag>(json!([{"name": "x"}])).unwrap_err();
        assert!(err.to_string().contains("id"), "{err}");
        let err = parse_list::<Tag>(json!({"name": "x"})).unwrap_err();
        assert!(err.to_string().contains("expected a JSON array of tag objects"), "{err}");
    }

    #[test]
    fn a_page_parsed_from_text_keeps_each_records_text_and_names_what_is_wrong() {
        let body = br#"[{"id": 1, "title": "A", "members": [{"user_id": 5, "type": 2}, {"id": 6}, "x"]},
                        {"id":2,"title":"B\u00e9"}]"#;
        let cards = parse_list_text::<Card>(body).unwrap();
        assert_eq!(
            cards[0].raw.as_str(),
            r#"{"id": 1, "title": "A", "members": [{"user_id": 5, "type": 2}, {"id": 6}, "x"]}"#
        );
        assert_eq!(cards[1].raw.as_str(), r#"{"id":2,"title":"B\u00e9"}"#);
        assert_eq!(cards[1].title.as_deref(), Some("B\u{e9}"));
        let members = cards[0].members.as_ref().unwrap();
        assert_eq!(members[0], CardMember { user_id: Some(UserId(5)), member_type: Some(2) });
        assert_eq!(members[1], CardMember { user_id: Some(UserId(6)), member_type: None });
        assert_eq!(members[2], CardMember { user_id: None, member_type: None });
        assert_eq!(cards[1].members, None, "the list shape has no members");
        // The same records as the tree path gives.
        let tree = parse_list::<Card>(serde_json::from_slice(body).unwrap()).unwrap();
        assert_eq!(tree, cards);

        let err = |body: &[u8]| parse_list_text::<Tag>(body).unwrap_err().to_string();
        assert!(
            err(br#"[{"name": "x"}]"#).contains("tag record #0 of the list did not parse"),
            "{}",
            err(br#"[{"name": "x"}]"#)
        );
        assert!(err(br#"{"name": "x"}"#).contains("expected a JSON array of tag objects, got an object"));
        assert!(err(br#"[{"id": 1}, 7]"#)
            .contains("record #1 of the list did not parse: expected a JSON object, got a number"));
        assert!(err(br#"[{"id": 1}"#).contains("EOF"), "{}", err(br#"[{"id": 1}"#));
    }

    #[test]
    fn fields_of_the_wrong_type_read_leniently_from_text_and_from_a_tree_alike() {
        let text = r#"{"id": 9, "uid": 123, "title": "T\u00e9", "state": "2", "condition": 2.0, "archived": 1,
            "asap": "yes", "blocked": [true], "board_id": "12", "column_id": 3.9, "lane_id": {"id": 1},
            "owner_id": 18446744073709551615, "sort_order": "1.5", "version": null, "size": 2,
            "due_date": "2024-12-31", "external_id": 1.25, "tag_ids": [1, "2", 3.0, null, 4, [5]],
            "parents_ids": {"a": 1}, "children_ids": 7, "created": 5, "updated": "2024-10-14T10:48:16.594Z",
            "members": [{"user_id": "14"}, {"user_id": -3, "id": 15}, {"id": 16, "type": 2}]}"#;
        let from_text = Card::from_raw(RawValue::from_string(text.to_owned()).unwrap()).unwrap();
        let from_tree = Card::from_value(serde_json::from_str(text).unwrap()).unwrap();
        assert_eq!(from_text, from_tree);
        let c = from_text;
        assert_eq!((c.uid.as_deref(), c.title.as_deref()), (Some("123"), Some("T\u{e9}")));
        assert_eq!((c.state, c.condition), (Some(CardState::InProgress), None));
        assert_eq!((c.archived, c.asap, c.blocked), (Some(true), None, None));
        assert_eq!((c.board_id, c.column_id, c.lane_id), (Some(BoardId(12)), Some(ColumnId(3)), None));
        assert_eq!(c.owner_id, Some(UserId(i64::MAX)), "a number beyond i64 saturates, as before");
        assert_eq!((c.sort_order, c.version, c.size), (Some(1.5), None, Some(2.0)));
        assert_eq!(c.external_id.as_deref(), Some("1.25"));
        assert_eq!(c.tag_ids, vec![TagId(1), TagId(4)]);
        assert!(c.parents_ids.is_empty() && c.children_ids.is_empty());
        assert_eq!((c.created, c.due_date.map(|d| d.to_rfc3339())), (None, Some("2024-12-31T00:00:00+00:00".into())));
        let users: Vec<Option<UserId>> = c.members.unwrap().iter().map(|m| m.user_id).collect();
        assert_eq!(users, vec![None, Some(UserId(-3)), Some(UserId(16))]);
    }

    #[test]
    fn a_repeated_key_or_half_an_emoji_does_not_fail_a_page() {
        // A key given twice: the last one wins, as through a `Value`; the text is kept.
        let body = br#"[{"id": 1, "title": "first", "title": "second"},
                        {"id": 2, "title": "cut \ud83d", "description": "\ude00 and \ud83d\ude00"}]"#;
        let cards = parse_list_text::<Card>(body).unwrap();
        assert_eq!(cards[0].title.as_deref(), Some("second"));
        assert_eq!(cards[0].raw.as_str(), r#"{"id": 1, "title": "first", "title": "second"}"#);
        // A lone surrogate escape becomes U+FFFD in the typed field and in the text kept.
        assert_eq!(cards[1].title.as_deref(), Some("cut \u{fffd}"));
        assert_eq!(cards[1].description.as_deref(), Some("\u{fffd} and \u{1f600}"));
        assert_eq!(cards[1].raw["title"], "cut \u{fffd}");
        assert!(cards[1].raw.as_str().contains(r#""cut \ufffd""#), "{}", cards[1].raw.as_str());
    }

    #[test]
    fn string_conditions_of_properties_and_select_values() {
        let def = PropertyDefinition::from_value(json!({"id": 1, "condition": "active"})).unwrap();
        assert_eq!(def.condition, Some(Condition::Live));
        let value = SelectValue::from_value(json!({"id": 2, "condition": "inactive"})).unwrap();
        assert_eq!(value.condition, Some(Condition::Archived));
        let value = SelectValue::from_value(json!({"id": 3, "condition": "something-new"})).unwrap();
        assert_eq!(value.condition, None);
        let lane = Lane::from_value(json!({"id": 4, "condition": 3})).unwrap();
        assert_eq!(lane.condition, Some(Condition::Deleted));
    }

    #[test]
    fn timestamps_parse_in_every_form_kaiten_sends() {
        let ms = |s: &str| parse_timestamp(s).map(|t| t.timestamp_millis());
        let z = Some(1_728_902_896_594);
        assert_eq!(ms("2024-10-14T10:48:16.594Z"), z);
        assert_eq!(ms("2024-10-14T13:48:16.594+03:00"), z);
        assert_eq!(ms("2024-10-14T13:48:16.594+0300"), z);
        assert_eq!(ms("2024-10-14T10:48:16.594"), z);
        assert_eq!(ms("2024-10-14 10:48:16.594"), z);
        assert_eq!(ms(" 2024-10-14T10:48:16.594Z "), z);
        assert_eq!(ms("2024-10-14T10:48"), Some(1_728_902_880_000));
        assert_eq!(parse_timestamp("2024-12-31").unwrap().to_rfc3339(), "2024-12-31T00:00:00+00:00");
        for bad in ["", "yesterday", "2024-13-01", "2024-12-31T25:00:00Z", "31.12.2024"] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
        // In a model: a date-only due date is a date, not NULL.
        let card = Card::from_value(json!({"id": 1, "due_date": "2024-12-31", "created": "2024-01-02"})).unwrap();
        assert_eq!(card.due_date.unwrap().to_rfc3339(), "2024-12-31T00:00:00+00:00");
        assert_eq!(card.created.unwrap().to_rfc3339(), "2024-01-02T00:00:00+00:00");
    }

    #[test]
    fn users_keep_their_role_and_select_values_say_when_removed() {
        let user = User::from_value(json!({"id": 1, "role": 3, "activated": false})).unwrap();
        assert_eq!((user.role, user.activated), (Some(3), Some(false)));
        let removed = SelectValue::from_value(json!({"id": 2, "condition": "inactive", "deleted": true})).unwrap();
        assert!(removed.is_removed());
        assert_eq!(removed.condition, Some(Condition::Archived));
        let inactive = SelectValue::from_value(json!({"id": 3, "condition": "inactive", "deleted": false})).unwrap();
        assert!(!inactive.is_removed());
        let one = SelectValue::from_value(json!({"id": 4, "condition": "inactive", "deleted": 1})).unwrap();
        assert!(!one.is_removed(), "only `deleted: true` says removed");
    }

    #[test]
    fn subcolumns_inherit_their_parent() {
        let col = Column::from_value(json!({"id": 1, "board_id": 9, "subcolumns": [{"id": 2, "title": "a"}]})).unwrap();
        let subs = col.subcolumns();
        assert_eq!(subs.len(), 1);
        assert_eq!(
            (subs[0].id, subs[0].column_id, subs[0].board_id),
            (ColumnId(2), Some(ColumnId(1)), Some(BoardId(9)))
        );
    }
}
