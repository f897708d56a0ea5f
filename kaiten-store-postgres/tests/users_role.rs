//! Schema version 2 (`users.role`): a mirror made by version 1 gets the column, filled from the
//! raw JSON of the users it already holds, and new writes fill it (the checks of
//! [`kaiten_sync_testkit::upgrade::version_2_fills_users_role_from_raw`]); the column is queryable.

mod common;

use common::{server, SchemaGuard};
use kaiten_store_postgres::{migrate, PgStore};
use kaiten_sync_testkit::upgrade;
use sqlx::Row;

#[tokio::test]
async fn version_2_adds_users_role_filled_from_raw() {
    let Some(url) = server().await else { return };
    let guard = SchemaGuard::new(&url);
    // A schema as version 1 left it, with four users.
    let q = guard.quoted();
    guard.create_version_1(&upgrade::v1_users(&q)).await;
    let store = PgStore::connect_with(guard.options()).await.unwrap();
    upgrade::version_2_fills_users_role_from_raw(&store).await;
    assert_eq!(store.schema_version().await.unwrap(), migrate::latest_version());
    let deactivated: i64 = sqlx::query(&format!("SELECT count(*) FROM {q}.users WHERE role = 3"))
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(deactivated, 1, "queryable as a column");
    store.close().await;
}
