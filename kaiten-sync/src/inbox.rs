//! The webhook inbox: durable "entity X changed" notifications, written when a delivery is
//! accepted and drained by workers that fetch X from Kaiten.
//!
//! A delivery is acknowledged only after its notification is committed, so an acknowledged
//! delivery is never lost, even when the process dies before it is applied. Entries are keyed by
//! `(kind, entity_id)`: repeated deliveries for one entity coalesce into one entry whose
//! `seq` counts them. A worker claims due entries for a lease; when it finishes it removes each
//! entry only if no delivery arrived meanwhile (its `seq` is unchanged), otherwise the entry is
//! released and fetched once more. Failures are retried with backoff and, after a bounded number
//! of attempts, kept as `failed` until a new delivery for the same entity (or an operator) revives
//! them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schema::EntityKind;

/// "This entity changed": what a delivery leaves in the inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// What to refetch: [`EntityKind::Cards`], [`EntityKind::Boards`] (the board, its columns and
    /// lanes), [`EntityKind::Spaces`] or [`EntityKind::Tags`].
    pub kind: EntityKind,
    /// Kaiten's id of the entity.
    pub entity_id: i64,
    /// A hint about where to find it: a board's space id, when the delivery named one.
    pub parent_id: Option<i64>,
    /// The event name of the latest delivery (`card:update`, `comment:add`, ...).
    pub event: String,
}

/// One inbox entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEntry {
    /// The store's id of the entry.
    pub id: i64,
    /// What to refetch.
    pub kind: EntityKind,
    /// Kaiten's id of the entity.
    pub entity_id: i64,
    /// See [`Notification::parent_id`].
    pub parent_id: Option<i64>,
    /// The latest delivery's event name.
    pub event: String,
    /// Deliveries coalesced into this entry since it was created.
    pub deliveries: i64,
    /// Bumped by every delivery; a worker removes the entry only if it is unchanged.
    pub seq: i64,
    /// When the first delivery of this entry was accepted.
    pub received_at: DateTime<Utc>,
    /// Not claimed before this time (coalescing window, or retry backoff).
    pub next_attempt_at: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Set when the entry gave up after too many attempts.
    pub failed_at: Option<DateTime<Utc>>,
    /// The worker holding the entry, while claimed.
    pub claimed_by: Option<String>,
    /// Until when the claim holds (a worker that dies loses it then).
    pub claimed_until: Option<DateTime<Utc>>,
}

/// How a worker finished with one claimed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxResult {
    /// Applied: remove the entry unless a delivery arrived since the claim (its `seq` moved), in
    /// which case it is released and becomes due at `again_at`.
    Done {
        /// The entry id.
        id: i64,
        /// The `seq` the worker claimed.
        seq: i64,
        /// When a re-delivered entry becomes due again.
        again_at: DateTime<Utc>,
    },
    /// Failed: count an attempt, keep the error, release the claim. With `retry_at` the entry is
    /// due again then; without, it is marked failed.
    Failed {
        /// The entry id.
        id: i64,
        /// What went wrong.
        error: String,
        /// When to try again, or `None` to give up.
        retry_at: Option<DateTime<Utc>>,
    },
}

/// Counts of the inbox, for `status`, the admin page and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxStats {
    /// Entries waiting to be applied (claimed or not).
    pub pending: i64,
    /// Entries that gave up.
    pub failed: i64,
    /// When the oldest pending entry was received.
    pub oldest_pending: Option<DateTime<Utc>>,
}
