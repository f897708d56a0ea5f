//! Schema version 2 (`users.role`): a mirror made by version 1 gets the column, filled from the
//! raw JSON of the users it already holds, and new writes fill it (the checks of
//! [`kaiten_sync_testkit::upgrade::version_2_fills_users_role_from_raw`]); the column is queryable.

mod common;

use kaiten_sync_testkit::upgrade;

#[tokio::test]
async fn version_2_adds_users_role_filled_from_raw() {
    let dir = tempfile::tempdir().unwrap();
    // A database as version 1 left it, with four users.
    let store = common::version_1(&dir.path().join("v1.db"), upgrade::v1_users("main")).await;
    upgrade::version_2_fills_users_role_from_raw(&store).await;
    let typed: i64 = store
        .with_connection(|c| c.query_row("SELECT count(*) FROM users WHERE role = 3", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(typed, 1, "queryable as a column");
}
