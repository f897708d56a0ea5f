//! A mirror written by the first release (schema version 1) upgrades to the latest schema with
//! nothing lost, and takes a full sync: the checks of [`kaiten_sync_testkit::upgrade`], on a fresh
//! schema of the test server whose version 1 tables this test creates from the store's own first
//! migration, with the default options (foreign keys on: the upgrade adds them over the old rows).

mod common;

use std::sync::Arc;

use common::{server, SchemaGuard};
use kaiten_store_postgres::{migrate, PgStore};
use kaiten_sync_testkit::upgrade;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_mirror_upgrades_with_nothing_lost_and_syncs() {
    let Some(url) = server().await else { return };
    let guard = SchemaGuard::new(&url);
    guard.create_version_1(&upgrade::v1_data(&guard.quoted(), "ARRAY['spaces', 'cards']")).await;
    let store = Arc::new(PgStore::connect_with(guard.options()).await.unwrap());
    assert_eq!(store.schema_version().await.unwrap(), 1);

    let version = {
        let store = store.clone();
        move || {
            let store = store.clone();
            async move { store.schema_version().await.unwrap() }
        }
    };
    upgrade::version_1_mirror_upgrades_with_nothing_lost_and_syncs(store.clone(), version, migrate::latest_version())
        .await;
    store.close().await;
}
