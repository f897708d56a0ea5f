//! Schema version 2 (`users.role`): a mirror made by version 1 gets the column, filled from the
//! raw JSON of the users it already holds, and new writes fill it.

mod common;

use common::{server, SchemaGuard};
use kaiten_store_postgres::{migrate, PgStore};
use kaiten_sync::kaiten_client::{Record, User};
use kaiten_sync::{Batch, EntityKind, Page, SqlValue, Store};
use sqlx::{Connection, Executor, PgConnection, Row};

#[tokio::test]
async fn version_2_adds_users_role_filled_from_raw() {
    let Some(url) = server().await else { return };
    let guard = SchemaGuard::new(&url);
    let q = format!("\"{}\"", guard.schema);
    // A schema as version 1 left it, with four users.
    {
        let mut conn = PgConnection::connect(&guard.store_url()).await.unwrap();
        let v1 = migrate::MIGRATIONS.iter().find(|m| m.version == 1).unwrap().sql.replace("{schema}", &q);
        conn.execute(format!("CREATE SCHEMA {q}").as_str()).await.unwrap();
        conn.execute(v1.as_str()).await.unwrap();
        conn.execute(
            format!(
                "CREATE TABLE {q}.schema_migrations (version bigint PRIMARY KEY, description text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now()); \
                 INSERT INTO {q}.schema_migrations (version, description) VALUES (1, 'initial schema'); \
                 INSERT INTO {q}.users (id, raw, synced_at) VALUES \
                   (1, '{{\"id\": 1, \"role\": 1}}', now()), (2, '{{\"id\": 2, \"role\": 3}}', now()), \
                   (3, '{{\"id\": 3, \"role\": \"admin\"}}', now()), (4, '{{\"id\": 4}}', now())"
            )
            .as_str(),
        )
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let store = PgStore::connect_with(guard.options()).await.unwrap();
    store.migrate().await.expect("migrate from version 1");
    assert_eq!(store.schema_version().await.unwrap(), migrate::latest_version());
    let role = |id: i64| {
        let store = &store;
        async move { store.get(EntityKind::Users, id).await.unwrap().unwrap().value(EntityKind::Users, "role").cloned() }
    };
    assert_eq!(role(1).await, Some(SqlValue::Int(1)));
    assert_eq!(role(2).await, Some(SqlValue::Int(3)), "deactivated");
    assert_eq!(role(3).await, Some(SqlValue::Null), "not a number: left empty");
    assert_eq!(role(4).await, Some(SqlValue::Null));

    // Written from now on with the record, by the page function.
    let user = User::from_value(serde_json::json!({"id": 5, "role": 2, "activated": true})).unwrap();
    let page = Page { batch: Batch::Users(vec![user]), sweep: None, state: None, synced_at: chrono::Utc::now() };
    store.apply_page(&page).await.unwrap();
    assert_eq!(role(5).await, Some(SqlValue::Int(2)));
    let deactivated: i64 = sqlx::query(&format!("SELECT count(*) FROM {q}.users WHERE role = 3"))
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(deactivated, 1, "queryable as a column");
    store.close().await;
}
