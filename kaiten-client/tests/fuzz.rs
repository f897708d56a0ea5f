//! Property tests ("fuzzing" on stable Rust) of what Kaiten sends: every model's deserialization
//! and the pager's stop rules. Each test is named `fuzz_*` so one command runs them all:
//!
//! ```sh
//! cargo test -p kaiten-client --test fuzz                                       # 256 cases each (CI)
//! PROPTEST_CASES=250000 cargo test --release -p kaiten-client -p kaiten-sync fuzz_  # the long run
//! ```
//!
//! (see RELIABILITY.md). No regression files: a failure prints its minimal input, which a unit
//! test then keeps.

use std::collections::BTreeSet;

use kaiten_client::{
    Board, Card, CardType, Column, ExternalWebhook, Lane, PageRequest, Pager, PropertyDefinition, Record, SelectValue,
    Space, Tag, User,
};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// The case count: `PROPTEST_CASES` (default 256), no persistence.
fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
}

/// Strings Kaiten's fields may hold: timestamps of every shape (valid or not), numbers as text,
/// anything at all.
fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,12})?)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?",
        "-?[0-9]{1,25}(\\.[0-9]{0,5})?",
        prop::sample::select(vec!["active", "inactive", "archived", "deleted", "removed", "live", "", " 2 "])
            .prop_map(str::to_owned),
        any::<String>(),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (-5i64..5).prop_map(Value::from),
        json_string().prop_map(Value::String),
    ]
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Every field name of every model (as Kaiten spells it), so each model meets its own fields and
/// the others' as unknown ones.
const FIELDS: &[&str] = &[
    "activated",
    "archived",
    "asap",
    "blocked",
    "board_id",
    "children_ids",
    "color",
    "column_id",
    "completed_at",
    "condition",
    "created",
    "custom_property_id",
    "deleted",
    "description",
    "due_date",
    "email",
    "enabled",
    "external_id",
    "full_name",
    "lane_id",
    "last_moved_at",
    "letter",
    "multi_select",
    "name",
    "owner_id",
    "parent_column_id",
    "parent_entity_uid",
    "parents_ids",
    "properties",
    "role",
    "size",
    "sort_order",
    "space_id",
    "state",
    "subcolumns",
    "tag_ids",
    "title",
    "type",
    "type_id",
    "uid",
    "updated",
    "url",
    "username",
    "value",
    "version",
    "virtual",
    "wip_limit",
];

/// What `id` holds: a valid id most of the time, else anything (missing included).
#[derive(Debug, Clone)]
enum Id {
    Missing,
    Value(Value),
}

fn id() -> impl Strategy<Value = Id> {
    prop_oneof![
        6 => any::<i64>().prop_map(|i| Id::Value(Value::from(i))),
        1 => Just(Id::Missing),
        2 => json_leaf().prop_map(Id::Value),
    ]
}

/// A JSON object with an id (or not), some of the models' fields set to anything (null
/// included), and the rest missing.
fn record_object() -> impl Strategy<Value = Value> {
    let fields = prop::collection::btree_map(prop::sample::select(FIELDS), json_value(), 0..FIELDS.len());
    (id(), fields).prop_map(|(id, fields)| {
        let mut object: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if let Id::Value(id) = id {
            object.insert("id".to_owned(), id);
        }
        Value::Object(object)
    })
}

/// `T::from_value` never panics, keeps `raw` equal to the input and fails only when `id` is
/// missing or not an integer that fits in i64.
fn check_model<T: Record>(input: &Value) -> Result<(), TestCaseError> {
    let expected_id = input.get("id").and_then(Value::as_i64);
    match T::from_value(input.clone()) {
        Ok(record) => {
            prop_assert_eq!(Some(record.id()), expected_id, "{} parsed with id {}", T::ENTITY, record.id());
            prop_assert_eq!(record.raw(), input, "{}: raw is the input", T::ENTITY);
            let _ = record.updated();
        }
        Err(e) => {
            prop_assert!(expected_id.is_none(), "{} refused an object whose id is {:?}: {}", T::ENTITY, expected_id, e);
            prop_assert!(!e.to_string().is_empty());
        }
    }
    Ok(())
}

fn check_every_model(input: &Value) -> Result<(), TestCaseError> {
    check_model::<Space>(input)?;
    check_model::<Board>(input)?;
    check_model::<Column>(input)?;
    check_model::<Lane>(input)?;
    check_model::<User>(input)?;
    check_model::<CardType>(input)?;
    check_model::<Tag>(input)?;
    check_model::<PropertyDefinition>(input)?;
    check_model::<SelectValue>(input)?;
    check_model::<Card>(input)?;
    check_model::<ExternalWebhook>(input)?;
    Ok(())
}

/// A fake list route over records `1..=total`: its page-size maximum, and which paging parameters
/// it ignores or repeats.
#[derive(Debug, Clone)]
struct FakeRoute {
    total: i64,
    max: u32,
    ignore_offset: bool,
    ignore_limit: bool,
    /// Request `k` is answered with the previous response when `repeats[k % len]`.
    repeats: Vec<bool>,
}

impl FakeRoute {
    fn honest(&self) -> bool {
        !self.ignore_offset && !self.ignore_limit && !self.repeats.iter().any(|r| *r)
    }

    fn page(&self, request: PageRequest) -> Vec<Tag> {
        let offset = if self.ignore_offset { 0 } else { request.offset };
        let limit = if self.ignore_limit { u64::MAX } else { u64::from(request.limit.min(self.max)) };
        (1..=self.total)
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|id| Tag::from_value(serde_json::json!({"id": id, "name": format!("tag {id}")})).unwrap())
            .collect()
    }
}

fn fake_route() -> impl Strategy<Value = FakeRoute> {
    (
        0i64..400,
        prop_oneof![1u32..=150, prop::sample::select(vec![25u32, 50, 75, 100])],
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
        prop::collection::vec(prop::bool::weighted(0.1), 1..8),
    )
        .prop_map(|(total, max, ignore_offset, ignore_limit, repeats)| FakeRoute {
            total,
            max,
            ignore_offset,
            ignore_limit,
            repeats,
        })
}

proptest! {
    #![proptest_config(config())]

    /// Every model parses any JSON object Kaiten may send (fields added, nulled, of another type)
    /// as long as it has an integer id, keeping the object as `raw`.
    #[test]
    fn fuzz_models_parse_any_object_with_an_integer_id(input in record_object()) {
        check_every_model(&input)?;
    }

    /// What is not an object is refused, never a panic.
    #[test]
    fn fuzz_models_refuse_what_is_not_an_object(input in json_value()) {
        if !input.is_object() {
            prop_assert!(Card::from_value(input.clone()).is_err());
            prop_assert!(User::from_value(input.clone()).is_err());
            prop_assert!(Board::from_value(input).is_err());
        } else {
            check_every_model(&input)?;
        }
    }

    /// The pager's stop rules against any route: the listing always ends (within one page per
    /// record plus three), never yields a record twice or one the route does not have, and lists
    /// an honest route (one whose page-size maximum is at least the limit, or a multiple of 25)
    /// completely, in order.
    #[test]
    fn fuzz_pager_always_ends_and_lists_honest_routes_completely(route in fake_route(), limit in 1u32..=120) {
        let mut pager = Pager::new("GET /tags", limit);
        let bound = u64::try_from(route.total).unwrap() + 3;
        let (mut yielded, mut previous, mut requests) = (Vec::new(), None::<Vec<Tag>>, 0usize);
        while let Some(request) = pager.next_page().unwrap() {
            prop_assert!(pager.pages() < bound, "{route:?}: more than {bound} pages");
            let repeat = route.repeats[requests % route.repeats.len()];
            let page = match (&previous, repeat) {
                (Some(previous), true) => previous.clone(),
                _ => route.page(request),
            };
            previous = Some(page.clone());
            requests += 1;
            yielded.extend(pager.accept(page).iter().map(Record::id));
        }
        prop_assert!(pager.is_done());
        let distinct: BTreeSet<i64> = yielded.iter().copied().collect();
        prop_assert_eq!(distinct.len(), yielded.len(), "no record twice");
        prop_assert!(yielded.iter().all(|id| (1..=route.total).contains(id)));
        prop_assert_eq!(pager.records(), yielded.len());
        let clamp_is_seen = route.max >= limit || route.max % 25 == 0;
        if route.honest() && clamp_is_seen {
            prop_assert_eq!(yielded, (1..=route.total).collect::<Vec<_>>(), "{:?}, limit {}", route, limit);
        }
        if route.ignore_limit && !route.ignore_offset && route.repeats.iter().all(|r| !r) {
            prop_assert_eq!(distinct.len() as i64, route.total, "a route ignoring limit is taken whole");
        }
    }
}
