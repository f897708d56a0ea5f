//! Parsing a delivery's envelope into the entity it names ([`Notification`]).

use serde_json::{Map, Value};

use super::WebhookError;
use crate::inbox::Notification;
use crate::schema::EntityKind;

/// A parsed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// The event name as sent (`card:update`, or an alias such as `card.move`).
    pub name: String,
    /// The entity to refetch; `None` for events the mirror ignores (unknown entities, or an event
    /// about a card's comment, file, ... that does not say which card).
    pub notification: Option<Notification>,
}

/// Events about something attached to a card: they change the card (counters, members,
/// `blocked`), so the card is refetched.
const CARD_CHILDREN: &[&str] = &[
    "comment",
    "card_member",
    "member",
    "file",
    "card_file",
    "block",
    "blocker",
    "card_blocker",
    "card_time_log",
    "time_log",
    "checklist",
    "checklist_item",
    "card_tag",
    "card_property",
    "card_child",
    "card_parent",
];

impl WebhookEvent {
    /// Parses a delivery body. Fails with [`WebhookError::Malformed`] naming what is wrong.
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| WebhookError::Malformed(format!("webhook body is not JSON: {e}")))?;
        let Value::Object(mut top) = value else {
            return Err(WebhookError::Malformed(format!(
                "webhook body is {}, not a JSON object",
                kaiten_client::models::json_kind(&value)
            )));
        };
        let name = match top.get("event") {
            Some(Value::String(name)) if !name.trim().is_empty() => name.trim().to_owned(),
            Some(Value::String(_)) => return Err(WebhookError::Malformed("webhook \"event\" is empty".into())),
            Some(other) => {
                return Err(WebhookError::Malformed(format!(
                    "webhook \"event\" is {}, expected a string such as \"card:update\"",
                    kaiten_client::models::json_kind(other)
                )))
            }
            None => return Err(WebhookError::Malformed("webhook body has no \"event\" field".into())),
        };
        let data = match top.remove("data") {
            Some(Value::Null) | None => {
                return Err(WebhookError::Malformed(format!("{name} delivery has no \"data\" field")))
            }
            Some(Value::Object(data)) => data,
            Some(other) => {
                return Err(WebhookError::Malformed(format!(
                    "{name} \"data\" is {}, not a JSON object",
                    kaiten_client::models::json_kind(&other)
                )))
            }
        };
        let notification = notification(&name, &data).map_err(WebhookError::Malformed)?;
        Ok(Self { name, notification })
    }

    /// Whether the mirror ignores this event.
    pub fn is_ignored(&self) -> bool {
        self.notification.is_none()
    }
}

/// Where a field of the delivery is: the new value (`changes`), the record (`data`), or the old
/// value (`old`), in that order.
struct Fields<'a> {
    data: &'a Map<String, Value>,
    old: Option<&'a Map<String, Value>>,
    changes: Option<&'a Map<String, Value>>,
}

impl<'a> Fields<'a> {
    fn new(data: &'a Map<String, Value>) -> Self {
        Self {
            data,
            old: data.get("old").and_then(Value::as_object),
            changes: data.get("changes").and_then(Value::as_object),
        }
    }

    /// The value of `key` and the path it was found at.
    fn get(&self, key: &str) -> Option<(&'a Value, String)> {
        if let Some(v) = self.changes.and_then(|c| c.get(key)).filter(|v| !v.is_null()) {
            return Some((v, format!("data.changes.{key}")));
        }
        if let Some(v) = self.data.get(key).filter(|v| !v.is_null()) {
            return Some((v, format!("data.{key}")));
        }
        self.old.and_then(|o| o.get(key)).filter(|v| !v.is_null()).map(|v| (v, format!("data.old.{key}")))
    }

    /// A positive integer id at `key`; `Ok(None)` when absent, an error naming the path when it is
    /// there but not an id.
    fn id(&self, key: &str) -> Result<Option<i64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some((Value::Number(n), path)) => match n.as_i64() {
                Some(id) if id > 0 => Ok(Some(id)),
                _ => Err(format!("{path} is {n}, not a positive integer id")),
            },
            Some((other, path)) => {
                Err(format!("{path} is {}, not an integer id", kaiten_client::models::json_kind(other)))
            }
        }
    }

    /// Where the entity's own id should have been, for errors.
    fn id_path(&self) -> &'static str {
        if self.old.is_some() || self.changes.is_some() {
            "data.old.id"
        } else {
            "data.id"
        }
    }
}

/// The entity a delivery names, by Kaiten's `entity:verb` event names (dot-style aliases such as
/// `card.move` accepted); `Ok(None)` for what the mirror does not follow.
fn notification(name: &str, data: &Map<String, Value>) -> Result<Option<Notification>, String> {
    let lower = name.to_ascii_lowercase();
    let Some((entity, _verb)) = lower.split_once([':', '.']) else {
        return Ok(None);
    };
    let fields = Fields::new(data);
    let own_id = |what: &str| -> Result<i64, String> {
        fields.id("id")?.ok_or_else(|| format!("{name} without {} (the {what}'s id)", fields.id_path()))
    };
    let note = |kind: EntityKind, entity_id: i64, parent_id: Option<i64>| {
        Some(Notification { kind, entity_id, parent_id, event: name.to_owned() })
    };
    let card_of_child = || -> Result<Option<i64>, String> {
        if let Some(card) = fields.id("card_id")? {
            return Ok(Some(card));
        }
        match data.get("card").and_then(|c| c.get("id")) {
            Some(Value::Number(n)) => Ok(n.as_i64().filter(|id| *id > 0)),
            _ => Ok(None),
        }
    };
    Ok(match entity {
        "card" => note(EntityKind::Cards, own_id("card")?, None),
        "board" => note(EntityKind::Boards, own_id("board")?, fields.id("space_id")?),
        "space" => note(EntityKind::Spaces, own_id("space")?, None),
        "tag" => match card_of_child()? {
            Some(card) => note(EntityKind::Cards, card, None),
            None => note(EntityKind::Tags, own_id("tag")?, None),
        },
        "column" | "subcolumn" | "lane" => {
            fields.id("board_id")?.and_then(|board| note(EntityKind::Boards, board, None))
        }
        child if CARD_CHILDREN.contains(&child) => {
            card_of_child()?.and_then(|card| note(EntityKind::Cards, card, None))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: serde_json::Value) -> Option<(EntityKind, i64, Option<i64>)> {
        let event = WebhookEvent::parse(body.to_string().as_bytes()).unwrap();
        event.notification.map(|n| (n.kind, n.entity_id, n.parent_id))
    }

    #[test]
    fn events_name_the_entity_to_refetch() {
        use serde_json::json;
        let author = json!({"id": 1});
        // card:add carries a few fields; card:update partial old/changes.
        assert_eq!(
            parsed(json!({"event": "card:add", "data": {"id": 6, "title": "t", "author": author}})),
            Some((EntityKind::Cards, 6, None))
        );
        assert_eq!(
            parsed(
                json!({"event": "card:update", "data": {"old": {"id": 5, "title": "a"}, "changes": {"title": "b"}}})
            ),
            Some((EntityKind::Cards, 5, None))
        );
        assert_eq!(parsed(json!({"event": "card.move", "data": {"id": 5}})), Some((EntityKind::Cards, 5, None)));
        // Board: the space named in the delivery is a hint where to look it up.
        assert_eq!(
            parsed(
                json!({"event": "board:update", "data": {"old": {"id": 9, "space_id": 2}, "changes": {"title": "x"}}})
            ),
            Some((EntityKind::Boards, 9, Some(2)))
        );
        assert_eq!(
            parsed(json!({"event": "space:update", "data": {"old": {"id": 3}}})),
            Some((EntityKind::Spaces, 3, None))
        );
        // A tag put on or taken off a card refetches the card; a tag on its own the tag.
        assert_eq!(
            parsed(json!({"event": "tag:remove", "data": {"id": 40, "card_id": 77}})),
            Some((EntityKind::Cards, 77, None))
        );
        assert_eq!(
            parsed(json!({"event": "Tag:Add", "data": {"id": 40, "name": "x"}})),
            Some((EntityKind::Tags, 40, None))
        );
        // Things attached to a card refetch the card.
        for name in ["comment:add", "card_member:remove", "file:add", "block:update", "card_time_log:add"] {
            assert_eq!(
                parsed(json!({"event": name, "data": {"id": 1, "card_id": 12}})),
                Some((EntityKind::Cards, 12, None))
            );
        }
        assert_eq!(
            parsed(
                json!({"event": "comment:update", "data": {"old": {"id": 1, "card_id": 13}, "changes": {"text": "x"}}})
            ),
            Some((EntityKind::Cards, 13, None))
        );
        // Columns and lanes have no events in Kaiten; aliases refresh their board.
        assert_eq!(
            parsed(json!({"event": "column:update", "data": {"id": 1, "board_id": 9}})),
            Some((EntityKind::Boards, 9, None))
        );
        // Ignored: unknown entities, a comment that names no card, names without a verb.
        assert_eq!(parsed(json!({"event": "automation:run", "data": {"id": 1}})), None);
        assert_eq!(parsed(json!({"event": "comment:add", "data": {"id": 1}})), None);
        assert_eq!(parsed(json!({"event": "card", "data": {"id": 1}})), None);
    }

    #[test]
    fn malformed_bodies_name_the_problem() {
        let msg = |body: &[u8]| WebhookEvent::parse(body).unwrap_err().to_string();
        assert_eq!(msg(b"<html>oops</html>"), "webhook body is not JSON: expected value at line 1 column 1");
        assert!(msg(br#"{"event":"card:add","data":{"id":1"#).starts_with("webhook body is not JSON: EOF"));
        assert_eq!(msg(br#"{"data":{}}"#), "webhook body has no \"event\" field");
        assert_eq!(msg(br#"{"event":"card:add"}"#), "card:add delivery has no \"data\" field");
        assert_eq!(
            msg(br#"{"event":"card:update","data":{"old":{"title":"x"},"changes":{}}}"#),
            "card:update without data.old.id (the card's id)"
        );
        assert_eq!(msg(br#"{"event":"card:add","data":{"title":"x"}}"#), "card:add without data.id (the card's id)");
        assert_eq!(msg(br#"{"event":"card:add","data":{"id":"7"}}"#), "data.id is a string, not an integer id");
        assert_eq!(msg(br#"{"event":"card:add","data":{"id":-3}}"#), "data.id is -3, not a positive integer id");
        assert_eq!(
            msg(br#"{"event":"comment:add","data":{"id":1,"card_id":true}}"#),
            "data.card_id is a boolean, not an integer id"
        );
        assert_eq!(msg(br#"{"event":"tag:add","data":[1]}"#), "tag:add \"data\" is an array, not a JSON object");
        assert_eq!(msg(b"[1]"), "webhook body is an array, not a JSON object");
        assert_eq!(
            msg(br#"{"event":7,"data":{}}"#),
            "webhook \"event\" is a number, expected a string such as \"card:update\""
        );
    }
}
