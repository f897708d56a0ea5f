//! Property tests ("fuzzing" on stable Rust) of webhook envelopes: whatever a delivery's body is,
//! [`WebhookEvent::parse`] never panics, and either refuses it with a message or names an entity
//! with a positive id. The card walk's stop rules are fuzzed in `src/card_walk.rs`
//! (`fuzz_card_walk_*`), models and the client's pager in `kaiten-client/tests/fuzz.rs`.
//!
//! ```sh
//! cargo test -p kaiten-sync --test fuzz                                             # 256 cases each (CI)
//! PROPTEST_CASES=250000 cargo test --release -p kaiten-client -p kaiten-sync fuzz_  # the long run
//! ```

use kaiten_sync::{EntityKind, WebhookEvent};
use proptest::prelude::*;
use serde_json::{json, Map, Number, Value};

fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..100).prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        "[0-9]{1,4}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Keys a delivery's `data` has, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["id", "card_id", "board_id", "space_id", "card", "old", "changes", "title"])
            .prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
    ]
}

/// Event names: Kaiten's `entity:verb`, aliases, odd cases and garbage.
fn event_name() -> impl Strategy<Value = String> {
    let entity = prop::sample::select(vec![
        "card",
        "Card",
        "board",
        "space",
        "tag",
        "column",
        "subcolumn",
        "lane",
        "comment",
        "card_member",
        "file",
        "block",
        "checklist_item",
        "automation",
        "",
    ]);
    let verb = prop::sample::select(vec!["add", "update", "remove", "move", ""]);
    let sep = prop::sample::select(vec![":", ".", "", "::"]);
    prop_oneof![
        4 => (entity, sep, verb).prop_map(|(e, s, v)| format!("{e}{s}{v}")),
        1 => any::<String>(),
    ]
}

/// A `data` object shaped like a delivery's (the id at the top, or in `old`/`changes`, a card
/// named by `card_id` or `card.id`), with any values.
fn data() -> impl Strategy<Value = Value> {
    let field = prop_oneof![json_leaf(), json_value()];
    (
        prop::collection::btree_map(key(), field, 0..6),
        prop::option::of(prop::collection::btree_map(key(), json_leaf(), 0..4)),
        prop::option::of(prop::collection::btree_map(key(), json_leaf(), 0..4)),
    )
        .prop_map(|(top, old, changes)| {
            let mut data: Map<String, Value> = top.into_iter().collect();
            if let Some(old) = old {
                data.insert("old".into(), Value::Object(old.into_iter().collect()));
            }
            if let Some(changes) = changes {
                data.insert("changes".into(), Value::Object(changes.into_iter().collect()));
            }
            Value::Object(data)
        })
}

/// A delivery body: mostly an envelope (with its parts sometimes of the wrong type or missing),
/// sometimes any JSON value, sometimes bytes that are not JSON at all (cut envelopes included).
fn body() -> impl Strategy<Value = Vec<u8>> {
    let envelope = (
        prop::option::of(prop_oneof![4 => event_name().prop_map(Value::String), 1 => json_leaf()]),
        prop::option::of(prop_oneof![4 => data(), 1 => json_value()]),
    )
        .prop_map(|(event, data)| {
            let mut top = Map::new();
            if let Some(event) = event {
                top.insert("event".into(), event);
            }
            if let Some(data) = data {
                top.insert("data".into(), data);
            }
            Value::Object(top)
        });
    prop_oneof![
        6 => envelope.clone().prop_map(|v| v.to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (envelope, any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            let at = cut.index(text.len() + 1);
            text[..at].to_vec()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any body: an error with a message, or an event naming an entity with a positive id (or
    /// nothing the mirror follows).
    #[test]
    fn fuzz_webhook_envelope_parses_or_says_why(body in body()) {
        match WebhookEvent::parse(&body) {
            Ok(event) => {
                prop_assert!(!event.name.trim().is_empty());
                if let Some(note) = &event.notification {
                    prop_assert!(note.entity_id > 0, "{body:?} gave {note:?}");
                    prop_assert!(note.parent_id.is_none_or(|p| p > 0), "{note:?}");
                    prop_assert!(matches!(
                        note.kind,
                        EntityKind::Cards | EntityKind::Boards | EntityKind::Spaces | EntityKind::Tags
                    ));
                    prop_assert_eq!(&note.event, &event.name);
                }
            }
            Err(e) => prop_assert!(!e.to_string().trim().is_empty(), "an error says what is wrong"),
        }
    }

    /// A well-formed card delivery always names its card, wherever the id is.
    #[test]
    fn fuzz_webhook_card_delivery_names_its_card(
        id in 1i64.., verb in "[a-z_]{1,10}", place in 0..3usize, extra in data(),
    ) {
        let mut data = extra.as_object().cloned().unwrap_or_default();
        data.remove("id");
        data.remove("changes");
        match place {
            0 => { data.insert("id".into(), json!(id)); }
            1 => { data.insert("old".into(), json!({"id": id})); }
            _ => { data.insert("changes".into(), json!({"id": id})); }
        }
        let body = json!({"event": format!("card:{verb}"), "data": data}).to_string();
        let event = WebhookEvent::parse(body.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let note = event.notification.expect("a card event is followed");
        prop_assert_eq!((note.kind, note.entity_id), (EntityKind::Cards, id));
    }
}
