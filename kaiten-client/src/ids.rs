//! Typed ids of Kaiten entities.
//!
//! Kaiten identifies every entity by an integer, and an integer of one kind fits wherever another is
//! expected: a board id passed where a card id belongs compiles and fetches the wrong thing. Each kind
//! of id here is its own type ([`CardId`], [`BoardId`], ...), in the manner of octocrab's id types, so
//! the compiler catches a swapped id:
//!
//! ```compile_fail,E0308
//! use kaiten_client::{BoardId, CardId};
//!
//! fn card_url(card: CardId) -> String {
//!     format!("/cards/{card}")
//! }
//!
//! let board = BoardId::new(5);
//! card_url(board); // error[E0308]: mismatched types: expected `CardId`, found `BoardId`
//! ```
//!
//! The same call with a card id compiles:
//!
//! ```
//! use kaiten_client::{BoardId, CardId};
//!
//! fn card_url(card: CardId) -> String {
//!     format!("/cards/{card}")
//! }
//!
//! assert_eq!(card_url(CardId::new(5)), "/cards/5");
//! let board: BoardId = "7".parse().unwrap(); // as a command line gives it
//! assert_eq!(board.get(), 7);
//! assert_eq!(i64::from(board), 7);
//! ```
//!
//! Every id is a plain number on the wire: serde reads and writes it as the bare integer
//! (`#[serde(transparent)]`), `Display` prints the number alone, and [`FromStr`] parses one. The
//! [models](crate::models) read optional references (`board_id`, `owner_id`, ...) as leniently as
//! before: a numeric string or a float is read as the integer, and anything else as `None`.
//!
//! An id compares equal to the `i64` it wraps (`card.id == 7`), which keeps tests and lookups short;
//! two ids of different kinds never compare, since no such `PartialEq` exists.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! ids {
    ($($(#[$meta:meta])* $name:ident;)+) => {$(
        $(#[$meta])*
        ///
        /// A bare integer in JSON (`#[serde(transparent)]`) and in `Display`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// The id with this integer value.
            pub const fn new(id: i64) -> Self {
                Self(id)
            }

            /// The integer value.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<i64> for $name {
            fn from(id: i64) -> Self {
                Self(id)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = ParseIntError;

            /// Parses the decimal integer (surrounding whitespace is not allowed, as for `i64`).
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.parse().map(Self)
            }
        }

        impl PartialEq<i64> for $name {
            fn eq(&self, other: &i64) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for i64 {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    )+};
}

ids! {
    /// The id of a space ([`Space`](crate::Space)).
    SpaceId;
    /// The id of a board ([`Board`](crate::Board)).
    BoardId;
    /// The id of a column or subcolumn ([`Column`](crate::Column)).
    ColumnId;
    /// The id of a lane ([`Lane`](crate::Lane)).
    LaneId;
    /// The id of a user ([`User`](crate::User)).
    UserId;
    /// The id of a card type ([`CardType`](crate::CardType)).
    CardTypeId;
    /// The id of a tag ([`Tag`](crate::Tag)).
    TagId;
    /// The id of a custom property definition ([`PropertyDefinition`](crate::PropertyDefinition)).
    PropertyId;
    /// The id of a value of a select-type custom property ([`SelectValue`](crate::SelectValue)).
    SelectValueId;
    /// The id of a card ([`Card`](crate::Card)).
    CardId;
    /// The id of a space's external webhook ([`ExternalWebhook`](crate::ExternalWebhook)).
    WebhookId;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Card, Record};
    use serde_json::json;

    #[test]
    fn serde_round_trips_as_a_bare_number() {
        assert_eq!(serde_json::to_value(CardId::new(42)).unwrap(), json!(42));
        assert_eq!(serde_json::from_value::<CardId>(json!(42)).unwrap(), CardId(42));
        assert_eq!(serde_json::to_string(&[BoardId(1), BoardId(-2)]).unwrap(), "[1,-2]");
        let back: Vec<BoardId> = serde_json::from_str("[1,-2]").unwrap();
        assert_eq!(back, [BoardId(1), BoardId(-2)]);
        // As strict as an `i64` on its own: a string or a float is no id.
        assert!(serde_json::from_value::<CardId>(json!("42")).is_err());
        assert!(serde_json::from_value::<CardId>(json!(4.5)).is_err());
    }

    #[test]
    fn display_from_str_and_conversions() {
        assert_eq!(SpaceId(7).to_string(), "7");
        assert_eq!(format!("/boards/{}/lanes", BoardId(-3)), "/boards/-3/lanes");
        assert_eq!("12".parse::<LaneId>(), Ok(LaneId(12)));
        assert!("12x".parse::<LaneId>().is_err());
        assert!(" 12".parse::<LaneId>().is_err());
        assert_eq!(i64::from(TagId::from(9)), 9);
        assert_eq!(UserId::new(4).get(), 4);
        assert!(CardId(3) == 3 && 3 == CardId(3));
        assert!(CardId(1) < CardId(2));
    }

    #[test]
    fn models_parse_references_as_leniently_as_before() {
        let card = Card::from_value(json!({
            "id": 7, "board_id": "5", "column_id": 6.0, "lane_id": "x", "space_id": null, "owner_id": 11,
            "type_id": [1], "tag_ids": [1, "2", 3.5, 4], "parents_ids": [8], "children_ids": "nine",
        }))
        .unwrap();
        assert_eq!(card.id, CardId(7));
        assert_eq!(card.board_id, Some(BoardId(5)));
        assert_eq!(card.column_id, Some(ColumnId(6)));
        assert_eq!(card.lane_id, None);
        assert_eq!(card.space_id, None);
        assert_eq!(card.owner_id, Some(UserId(11)));
        assert_eq!(card.type_id, None);
        // Lists keep the integers alone, as before.
        assert_eq!(card.tag_ids, [TagId(1), TagId(4)]);
        assert_eq!(card.parents_ids, [CardId(8)]);
        assert!(card.children_ids.is_empty());
        assert_eq!(Record::id(&card), 7_i64);
        // The record's own id stays strict: a string id is no record.
        assert!(Card::from_value(json!({"id": "7"})).is_err());
    }
}
