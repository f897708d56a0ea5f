//! Where an interrupted card listing resumes: positions kept in `sync_metadata.resume`.

use chrono::{DateTime, Utc};
use kaiten_client::Card;
use serde::{Deserialize, Serialize};

use super::Mode;
use crate::card_walk::PageRules;

/// Where a card listing stands: Kaiten is asked for cards with `updated` after `after`, ordered by
/// `updated`, skipping `offset` of them. Serialized into `sync_metadata.resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WalkPos {
    pub(crate) after: Option<DateTime<Utc>>,
    pub(crate) offset: u64,
    /// Set when Kaiten ignored `order_by=updated`: page by offset alone.
    #[serde(default)]
    pub(crate) offset_only: bool,
}

/// One window of a card walk: the walk's cards with `updated` after `pos` and, when `before` is
/// set, before it. A walk starts as one open window; a window whose span is long is split in two
/// by time, so several windows of one walk are listed at once (see `super::cards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Window {
    /// Index of the walk (a condition, for a space or board in scope).
    pub(super) walk: usize,
    /// Where the window's next page starts.
    pub(super) pos: WalkPos,
    /// The window's upper bound (`updated_before`); none for the walk's last window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) before: Option<DateTime<Utc>>,
}

/// A resumable card listing in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CardResume {
    /// The deletion sweep of a full listing (none for incremental).
    pub(super) sweep: Option<i64>,
    /// Where the walks started.
    pub(super) start: Option<DateTime<Utc>>,
    /// The windows not finished yet, each at the position after its last committed page.
    #[serde(default)]
    pub(super) windows: Vec<Window>,
    /// The first walk not started yet (walks before it are finished or in `windows`).
    #[serde(default)]
    pub(super) next_walk: usize,
    /// A resume point written before windows (one walk at a time): the walk in progress.
    #[serde(default, skip_serializing)]
    pub(super) walk: Option<usize>,
    /// Its position.
    #[serde(default, skip_serializing)]
    pub(super) pos: Option<WalkPos>,
    /// Greatest `updated` committed so far.
    pub(super) max_updated: Option<DateTime<Utc>>,
    /// The scope the listing was for (a resume point is only used for the same scope).
    pub(super) scope: String,
    /// When the listing began; a resume point older than [`super::SyncOptions::max_resume_age`] is
    /// dropped.
    #[serde(default)]
    pub(super) began: Option<DateTime<Utc>>,
    /// What the listing learned of the route's paging (see [`crate::card_walk`]).
    #[serde(default)]
    pub(super) rules: PageRules,
}

impl CardResume {
    /// A resume point of the one-walk-at-a-time format, as windows.
    pub(super) fn upgrade(mut self) -> Self {
        if let (Some(walk), Some(pos)) = (self.walk.take(), self.pos.take()) {
            if self.windows.is_empty() {
                self.windows.push(Window { walk, pos, before: None });
                self.next_walk = self.next_walk.max(walk + 1);
            }
        }
        self
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ResumeState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) full: Option<CardResume>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) incremental: Option<CardResume>,
}

impl ResumeState {
    pub(super) fn parse(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default()
    }

    pub(super) fn to_text(&self) -> Option<String> {
        (self.full.is_some() || self.incremental.is_some()).then(|| serde_json::to_string(self).expect("serializable"))
    }

    pub(super) fn slot(&mut self, mode: Mode) -> &mut Option<CardResume> {
        match mode {
            Mode::Full => &mut self.full,
            Mode::Incremental => &mut self.incremental,
        }
    }
}

/// The position after a full page: keyset on `updated` when Kaiten honoured the order, else offset.
pub(crate) fn next_position(pos: WalkPos, cards: &[Card]) -> WalkPos {
    let sorted = cards.windows(2).all(|w| match (w[0].updated, w[1].updated) {
        (Some(a), Some(b)) => a <= b,
        _ => true,
    });
    if pos.offset_only || !sorted {
        return WalkPos { after: pos.after, offset: pos.offset + cards.len() as u64, offset_only: true };
    }
    match cards.iter().filter_map(|c| c.updated).max() {
        // Ask again from just before the last timestamp seen: cards sharing it are listed again
        // (upserted idempotently) rather than skipped, whatever Kaiten's inclusivity.
        Some(max) if Some(max - chrono::Duration::milliseconds(1)) > pos.after => {
            WalkPos { after: Some(max - chrono::Duration::milliseconds(1)), offset: 0, offset_only: false }
        }
        _ => WalkPos { after: pos.after, offset: pos.offset + cards.len() as u64, offset_only: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaiten_client::Record;
    use serde_json::json;

    fn card(id: i64, updated_ms: Option<i64>) -> Card {
        let updated = updated_ms.map(|ms| {
            (DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms))
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        });
        Card::from_value(json!({"id": id, "updated": updated})).unwrap()
    }

    #[test]
    fn keyset_moves_past_the_last_timestamp_or_falls_back_to_offset() {
        let start = WalkPos { after: None, offset: 0, offset_only: false };
        let next = next_position(start, &[card(1, Some(10)), card(2, Some(20))]);
        assert_eq!(next.after.unwrap().timestamp_millis(), 19);
        assert_eq!(next.offset, 0);
        // Same timestamp again: no progress by time, so skip by offset.
        let same = next_position(next, &[card(2, Some(20)), card(3, Some(20))]);
        assert_eq!((same.after, same.offset), (next.after, 2));
        // Unsorted page: the API ignored order_by.
        let unsorted = next_position(start, &[card(1, Some(30)), card(2, Some(20))]);
        assert!(unsorted.offset_only);
        assert_eq!(unsorted.offset, 2);
    }

    #[test]
    fn a_resume_point_of_one_walk_at_a_time_becomes_windows() {
        // Written by the release before windows: the walk in progress and its position.
        let old = r#"{"full":{"sweep":7,"start":null,"walk":1,"pos":{"after":"2025-01-01T00:00:00.000Z","offset":0},
            "max_updated":null,"scope":"","began":"2026-11-29T10:00:00.000Z","rules":{"confirmed":true}}}"#;
        let mut state = ResumeState::parse(Some(old));
        let point = state.slot(Mode::Full).take().expect("parsed").upgrade();
        assert_eq!(point.windows.len(), 1);
        assert_eq!(point.windows[0].walk, 1);
        assert_eq!(point.windows[0].before, None);
        assert_eq!(point.windows[0].pos.after.unwrap().timestamp_millis(), 1_735_689_600_000);
        assert_eq!(point.next_walk, 2, "the walks before it are done, the ones after it not started");
        assert_eq!(point.sweep, Some(7));
        assert!(point.rules.confirmed);
        // Written again, it has the new form only.
        let written = serde_json::to_value(&point).unwrap();
        assert!(written.get("walk").is_none() && written.get("pos").is_none(), "{written}");
        assert_eq!(written["windows"][0]["walk"], 1, "{written}");
    }
}
