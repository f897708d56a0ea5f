//! A mirror written by the first release (schema version 1) upgrades to the latest schema with
//! nothing lost, and takes a full sync: the checks of [`kaiten_sync_testkit::upgrade`], on a file
//! whose version 1 tables this test creates from the store's own first migration.

mod common;

use std::sync::Arc;

use kaiten_store_sqlite::MIGRATIONS;
use kaiten_sync_testkit::upgrade;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_mirror_upgrades_with_nothing_lost_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let data = upgrade::v1_data("main", "'spaces,cards'");
    let store = Arc::new(common::version_1(&dir.path().join("v1.db"), data).await);
    let version = {
        let store = store.clone();
        move || {
            let store = store.clone();
            async move { store.schema_version().await.unwrap().expect("a schema version") }
        }
    };
    let latest = MIGRATIONS.last().map(|m| m.version).unwrap();
    upgrade::version_1_mirror_upgrades_with_nothing_lost_and_syncs(store, version, latest).await;
}
