//! Upgrades from the first release's schema (version 1), for every SQL store: the data that
//! release wrote ([`v1_data`]) and the checks that, migrated, it lost nothing and takes a full sync
//! ([`version_1_mirror_upgrades_with_nothing_lost_and_syncs`]); users as it wrote them
//! ([`v1_users`]) and the role version 2 derives ([`version_2_fills_users_role_from_raw`]). A
//! store's test keeps only what is its own: creating the version 1 tables (from the store's first
//! migration, `schema_migrations` at 1), running the SQL given here on them, and opening the store:
//!
//! ```ignore
//! let store = Arc::new(my_store_at_version_1(&upgrade::v1_data("main", "'spaces,cards'")).await);
//! let version = { let s = store.clone(); move || { let s = s.clone(); async move { s.version().await } } };
//! upgrade::version_1_mirror_upgrades_with_nothing_lost_and_syncs(store, version, LATEST).await;
//! ```

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kaiten_client::{Record, User};
use kaiten_sim::{SimConfig, Simulator};
use kaiten_sync::{Batch, EntityKind, Page, RunKind, RunStatus, SqlValue, Store, SyncEngine};

use crate::engine::sim_client;

/// What version 1 of the stores wrote, as their own SQL would have written it: one row of every
/// kind (a card with members in its raw JSON, as `GET /cards/{id}` returns them, and a card marked
/// deleted), card tags, the cards' sync state with a resume point, and a finished run. `{s}` is
/// the schema the tables are in; `{entities}` the run's entity list (`spaces`, `cards`) as the
/// store's SQL literal. Booleans are `true`/`false` (SQLite reads them as 1/0).
const V1_DATA_TEMPLATE: &str = r#"
INSERT INTO {s}.spaces VALUES (1, 'space-1', 'Space one', false, NULL, 1.0, NULL, '2025-01-01T00:00:00.000Z',
  '2025-01-01T00:00:01.000Z', '{"id":1,"uid":"space-1","title":"Space one","archived":false}',
  '2025-01-02T00:00:00.000Z', NULL, 7);
INSERT INTO {s}.users VALUES (3, 'user-3', 'Ann Lee', 'ann', 'ann@example.com', true, false, '2025-01-01T00:00:00.000Z',
  '2025-01-01T00:00:05.000Z', '{"id":3,"full_name":"Ann Lee","role":3,"activated":true}',
  '2025-01-02T00:00:00.000Z', NULL, 7);
INSERT INTO {s}.card_types VALUES (4, 'type-4', 'Bug', 'B', 3, false, NULL, '2025-01-01T00:00:05.000Z',
  '{"id":4,"name":"Bug","letter":"B","color":3}', '2025-01-02T00:00:00.000Z', NULL, 7);
INSERT INTO {s}.tags VALUES (5, 'tag-5', 'urgent', 2, false, NULL, '2025-01-01T00:00:05.000Z',
  '{"id":5,"name":"urgent","color":2}', '2025-01-02T00:00:00.000Z', NULL, 7);
INSERT INTO {s}.property_definitions VALUES (6, 'prop-6', 'Priority', 'select', 1, false, NULL, NULL,
  '2025-01-01T00:00:05.000Z', '{"id":6,"name":"Priority","type":"select"}', '2025-01-02T00:00:00.000Z', NULL, 7);
INSERT INTO {s}.property_select_values VALUES (7, 'value-7', 6, 'High', 1, 1, 2.5, NULL, '2025-01-01T00:00:05.000Z',
  '{"id":7,"custom_property_id":6,"value":"High"}', '2025-01-02T00:00:00.000Z', NULL, 7);
INSERT INTO {s}.boards VALUES (10, 'board-10', 1, 'Board ten', 'About', NULL, 1.0, false, NULL,
  '2025-01-01T00:00:05.000Z', '{"id":10,"title":"Board ten","space_id":1}', '2025-01-02T00:00:00.000Z', NULL, 7);
INSERT INTO {s}.columns VALUES (1001, 'column-1001', 10, NULL, 'Queue', 1.0, 1, NULL, NULL, NULL,
  '2025-01-01T00:00:05.000Z', '{"id":1001,"title":"Queue","board_id":10}', '2025-01-02T00:00:00.000Z', NULL, 7);
INSERT INTO {s}.lanes VALUES (1050, 'lane-1050', 10, 'Default', 1.0, 1, NULL, NULL, NULL, '2025-01-01T00:00:05.000Z',
  '{"id":1050,"title":"Default","board_id":10}', '2025-01-02T00:00:00.000Z', NULL, 7);
INSERT INTO {s}.cards VALUES (1, 'card-1', 'Card one', 'Text', 2, 1, false, true, false, 1, 10, 1001, 1050, 3, 4, 1.5, 9, 3.0,
  '2025-02-01T00:00:00.000Z', 'EXT-1', '{"id_6":[7]}', '2025-01-01T00:00:00.000Z', '2025-01-01T00:01:40.000Z',
  '2025-01-01T00:01:40.000Z', NULL,
  '{"id":1,"title":"Card one","board_id":10,"column_id":1001,"lane_id":1050,"version":9,"tag_ids":[5],
    "updated":"2025-01-01T00:01:40.000Z","members":[{"id":3,"user_id":3,"type":2},{"id":12,"user_id":12,"type":1}]}',
  '2025-01-02T00:00:00.000Z', NULL, 7);
INSERT INTO {s}.cards VALUES (2, 'card-2', 'Card two', NULL, 1, 1, false, false, false, 1, 10, 1001, 1050, 3, 4, 2.5, 1, NULL,
  NULL, NULL, '{}', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:50.000Z', NULL, NULL,
  '{"id":2,"title":"Card two","board_id":10,"version":1,"updated":"2025-01-01T00:00:50.000Z"}',
  '2025-01-02T00:00:00.000Z', '2025-01-03T00:00:00.000Z', 6);
INSERT INTO {s}.card_tags VALUES (1, 5);
INSERT INTO {s}.sync_metadata VALUES ('cards', '2025-01-01T00:01:40.000Z', '2025-01-02T00:00:00.000Z', NULL,
  '{"full":{"walk":1}}', 1, '2025-01-02T00:00:00.000Z');
INSERT INTO {s}.sync_logs (kind, entities, scope, started_at, finished_at, status, rows_inserted, rows_updated,
  rows_deleted, api_requests, retries, error, stats)
VALUES ('full', {entities}, NULL, '2025-01-02T00:00:00.000Z', '2025-01-02T00:00:09.000Z', 'succeeded', 2, 0, 1,
  12, 1, NULL, '{"cards":{"pages":1,"fetched":2,"inserted":2,"updated":0,"unchanged":0,"deleted":1}}');
"#;

/// The rows version 1 wrote (see the template above), as SQL statements for tables in `schema`
/// (already quoted where it must be), the run's entity list written as `entities` (the SQL literal
/// of `spaces`, `cards` in the store's version 1 type for it).
pub fn v1_data(schema: &str, entities: &str) -> String {
    V1_DATA_TEMPLATE.replace("{s}", schema).replace("{entities}", entities)
}

fn text(value: &str) -> SqlValue {
    SqlValue::Text(value.into())
}

fn time(value: &str) -> DateTime<Utc> {
    value.parse().expect("an RFC 3339 time")
}

/// A store opened on a database holding the tables of version 1 and [`v1_data`] migrates to
/// `latest` (what `schema_version` then reads) with nothing lost: rows of every kind with their
/// typed columns and raw JSON, card tags, per-kind state, the run log; what later versions derive
/// from stored data (users' `role`, card members) is filled in; migrating the populated database
/// again changes nothing; and the upgraded mirror takes a full sync of the simulator.
pub async fn version_1_mirror_upgrades_with_nothing_lost_and_syncs<V, F>(
    store: Arc<dyn Store>,
    schema_version: V,
    latest: i64,
) where
    V: Fn() -> F,
    F: Future<Output = i64>,
{
    store.migrate().await.expect("migrate from version 1");
    assert_eq!(schema_version().await, latest);
    holds_the_version_1_data(&*store).await;

    // Migrating the populated, upgraded mirror again is a no-op.
    store.migrate().await.expect("migrate the upgraded mirror again");
    assert_eq!(schema_version().await, latest, "the second migration");
    holds_the_version_1_data(&*store).await;

    // The upgraded mirror takes a full sync: the company is stored, and what the old mirror held
    // that Kaiten does not have is marked deleted, not dropped.
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let report = SyncEngine::new(sim_client(&sim), store.clone()).sync_all().await.expect("full sync after upgrade");
    assert_eq!(report.run.status, RunStatus::Succeeded);
    let mut expected = sim.card_ids();
    expected.sort_unstable();
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), expected);
    assert!(store.get(EntityKind::Cards, 1).await.unwrap().unwrap().deleted_at.is_some(), "the old card is marked");
    assert_eq!(store.recent_runs(5).await.unwrap().len(), 2, "the old run is kept");
}

/// Everything [`v1_data`] wrote, read back through the store, and what later versions derive.
async fn holds_the_version_1_data(store: &dyn Store) {
    // Every row, with its typed columns and raw JSON.
    for (kind, id) in [
        (EntityKind::Spaces, 1),
        (EntityKind::Users, 3),
        (EntityKind::CardTypes, 4),
        (EntityKind::Tags, 5),
        (EntityKind::PropertyDefinitions, 6),
        (EntityKind::SelectValues, 7),
        (EntityKind::Boards, 10),
        (EntityKind::Columns, 1001),
        (EntityKind::Lanes, 1050),
        (EntityKind::Cards, 1),
    ] {
        let row = store.get(kind, id).await.unwrap().unwrap_or_else(|| panic!("{kind} {id} survived"));
        assert_eq!(row.raw["id"], id, "{kind}: raw JSON");
        assert_eq!(row.deleted_at, None, "{kind}");
        assert_eq!(row.synced_at, time("2025-01-02T00:00:00Z"));
    }
    let card = store.get(EntityKind::Cards, 1).await.unwrap().unwrap();
    assert_eq!(card.value(EntityKind::Cards, "title"), Some(&text("Card one")));
    assert_eq!(card.value(EntityKind::Cards, "board_id"), Some(&SqlValue::Int(10)));
    assert_eq!(card.value(EntityKind::Cards, "version"), Some(&SqlValue::Int(9)));
    assert_eq!(card.value(EntityKind::Cards, "asap"), Some(&SqlValue::Bool(true)));
    assert_eq!(card.value(EntityKind::Cards, "external_id"), Some(&text("EXT-1")));
    assert_eq!(card.value(EntityKind::Cards, "due_date"), Some(&SqlValue::Time(time("2025-02-01T00:00:00Z"))));
    assert_eq!(card.raw["members"][1]["user_id"], 12);
    let deleted = store.get(EntityKind::Cards, 2).await.unwrap().unwrap();
    assert_eq!(deleted.deleted_at, Some(time("2025-01-03T00:00:00Z")), "still marked deleted");
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), vec![1]);
    assert_eq!(store.card_tag_ids(1).await.unwrap(), vec![5]);
    // What later versions derive from stored data.
    let user = store.get(EntityKind::Users, 3).await.unwrap().unwrap();
    assert_eq!(user.value(EntityKind::Users, "role"), Some(&SqlValue::Int(3)), "version 2: role from raw");
    assert_eq!(store.card_members(1).await.unwrap(), vec![(3, 2), (12, 1)], "version 3: members from raw");
    assert_eq!(store.inbox_stats().await.unwrap().pending, 0, "version 4: an empty inbox");
    // State and run log.
    let state = store.entity_state(EntityKind::Cards).await.unwrap();
    assert_eq!(state.cursor, Some(time("2025-01-01T00:01:40Z")));
    assert_eq!(state.last_full_sync_at, Some(time("2025-01-02T00:00:00Z")));
    assert_eq!((state.resume.as_deref(), state.row_count), (Some(r#"{"full":{"walk":1}}"#), Some(1)));
    let runs = store.recent_runs(5).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].kind, runs[0].status), (RunKind::Full, RunStatus::Succeeded));
    assert_eq!(runs[0].entities, vec![EntityKind::Spaces, EntityKind::Cards]);
    assert_eq!((runs[0].api_requests, runs[0].retries), (12, 1));
    assert_eq!(runs[0].stats[&EntityKind::Cards].deleted, 1);
    let counts = store.counts().await.unwrap();
    let cards = counts.iter().find(|c| c.table == "cards").unwrap();
    assert_eq!((cards.live, cards.deleted), (1, 1));
}

/// Four users as version 1 wrote them (no `role` column; the role only in the raw JSON: 1, 3 for
/// a deactivated user, one not a number, none), as SQL for tables in `schema`.
pub fn v1_users(schema: &str) -> String {
    format!(
        r#"INSERT INTO {schema}.users (id, raw, synced_at) VALUES
  (1, '{{"id": 1, "role": 1, "activated": true}}', '2025-01-01T00:00:00.000Z'),
  (2, '{{"id": 2, "role": 3, "activated": false}}', '2025-01-01T00:00:00.000Z'),
  (3, '{{"id": 3, "role": "admin"}}', '2025-01-01T00:00:00.000Z'),
  (4, '{{"id": 4}}', '2025-01-01T00:00:00.000Z');"#
    )
}

/// Schema version 2 (`users.role`): a store opened on a database holding the tables of version 1
/// and [`v1_users`] migrates, the column is filled from the raw JSON of the users it already held
/// (a role that is not a number, or none, left empty), and new writes fill it: user 5 is written
/// with role 2. Afterwards exactly one user (2) has role 3, which the store's test checks with its
/// own SQL (the column is queryable).
pub async fn version_2_fills_users_role_from_raw(store: &dyn Store) {
    store.migrate().await.expect("migrate from version 1");
    let role = |id: i64| async move {
        store.get(EntityKind::Users, id).await.unwrap().unwrap().value(EntityKind::Users, "role").cloned()
    };
    assert_eq!(role(1).await, Some(SqlValue::Int(1)));
    assert_eq!(role(2).await, Some(SqlValue::Int(3)), "deactivated");
    assert_eq!(role(3).await, Some(SqlValue::Null), "not a number: left empty");
    assert_eq!(role(4).await, Some(SqlValue::Null));

    // Written from now on with the record.
    let user = User::from_value(serde_json::json!({"id": 5, "role": 2, "activated": true})).unwrap();
    let page = Page { batch: Batch::Users(vec![user]), sweep: None, state: None, synced_at: Utc::now() };
    store.apply_page(&page).await.unwrap();
    assert_eq!(role(5).await, Some(SqlValue::Int(2)));
}
