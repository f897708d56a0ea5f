//! Query parameters for paged lists and for `GET /cards`.

use chrono::{DateTime, Utc};

use crate::ids::{BoardId, ColumnId, LaneId, SpaceId};
use crate::models::Condition;

/// One page of a `limit` + `offset` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Page size asked for (the client clamps it to the route's maximum).
    pub limit: u32,
    /// Number of records to skip.
    pub offset: u64,
}

/// Sort direction for `GET /cards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderDirection {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

impl OrderDirection {
    /// The query-string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// Filters for `GET /cards`. `broken_api=false` is always sent by the client.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct CardQuery {
    /// Only cards updated after this instant (`updated_after`).
    pub updated_after: Option<DateTime<Utc>>,
    /// Only cards updated before this instant (`updated_before`).
    pub updated_before: Option<DateTime<Utc>>,
    /// Only cards of this space.
    pub space_id: Option<SpaceId>,
    /// Only cards of this board.
    pub board_id: Option<BoardId>,
    /// Only cards in this column.
    pub column_id: Option<ColumnId>,
    /// Only cards in this lane.
    pub lane_id: Option<LaneId>,
    /// Only cards in this condition (live / archived / deleted).
    pub condition: Option<Condition>,
    /// Only archived (or only not archived) cards.
    pub archived: Option<bool>,
    /// Sort field (e.g. `updated`, `created`, `id`).
    pub order_by: Option<String>,
    /// Sort direction.
    pub order_direction: Option<OrderDirection>,
    /// Extra fields the list leaves out by default (e.g. `description`).
    pub additional_card_fields: Vec<String>,
}

impl CardQuery {
    /// An empty query (every card the token sees, in Kaiten's default order).
    pub fn new() -> Self {
        Self::default()
    }
}
