//! Schema version 2 (`users.role`): a mirror made by version 1 gets the column, filled from the
//! raw JSON of the users it already holds, and new writes fill it.

use kaiten_store_sqlite::{SqliteStore, MIGRATIONS};
use kaiten_sync::kaiten_client::{Record, User};
use kaiten_sync::{Batch, EntityKind, Page, SqlValue, Store};

#[tokio::test]
async fn version_2_adds_users_role_filled_from_raw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let store = SqliteStore::open(&path).unwrap();
    // A database as version 1 left it, with three users.
    let v1 = MIGRATIONS.iter().find(|m| m.version == 1).unwrap().sql;
    store
        .with_connection(move |c| {
            c.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")?;
            c.execute_batch(v1)?;
            c.execute("INSERT INTO schema_migrations VALUES (1, '2025-01-01T00:00:00.000Z')", [])?;
            for (id, raw) in [
                (1, r#"{"id": 1, "role": 1, "activated": true}"#),
                (2, r#"{"id": 2, "role": 3, "activated": false}"#),
                (3, r#"{"id": 3, "role": "admin"}"#),
                (4, r#"{"id": 4}"#),
            ] {
                c.execute(
                    "INSERT INTO users (id, raw, synced_at) VALUES (?1, ?2, '2025-01-01T00:00:00.000Z')",
                    (id, raw),
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    store.migrate().await.expect("migrate from version 1");
    let role = |id: i64| {
        let store = &store;
        async move { store.get(EntityKind::Users, id).await.unwrap().unwrap().value(EntityKind::Users, "role").cloned() }
    };
    assert_eq!(role(1).await, Some(SqlValue::Int(1)));
    assert_eq!(role(2).await, Some(SqlValue::Int(3)), "deactivated");
    assert_eq!(role(3).await, Some(SqlValue::Null), "not a number: left empty");
    assert_eq!(role(4).await, Some(SqlValue::Null));

    // Written from now on with the record.
    let user = User::from_value(serde_json::json!({"id": 5, "role": 2, "activated": true})).unwrap();
    let page = Page { batch: Batch::Users(vec![user]), sweep: None, state: None, synced_at: chrono::Utc::now() };
    store.apply_page(&page).await.unwrap();
    assert_eq!(role(5).await, Some(SqlValue::Int(2)));
    let typed: i64 = store
        .with_connection(|c| c.query_row("SELECT count(*) FROM users WHERE role = 3", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(typed, 1, "queryable as a column");
}
