//! The SQLite store passes the Store conformance suite and the engine scenarios (a fresh migrated
//! file per test).

use std::ops::Deref;
use std::sync::Arc;

use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::Store;

/// A store on a file in a temporary directory that lives as long as the store.
struct TestStore {
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

impl Deref for TestStore {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

async fn make_store() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open(dir.path().join("kaiten.db")).expect("open"));
    store.migrate().await.expect("migrate");
    TestStore { store, _dir: dir }
}

kaiten_sync_testkit::store_conformance_tests!(make_store);

/// A shared store for the engine scenarios, and the directory that keeps its file.
async fn make_shared_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let TestStore { store, _dir } = make_store().await;
    (store, _dir)
}

/// The engine's end-to-end scenarios against the simulator, on SQLite.
mod engine {
    use super::make_shared_store;
    kaiten_sync_testkit::engine_conformance_tests!(make_shared_store);

    mod webhook {
        //! Webhook deliveries applied to this store.
        use super::make_shared_store;
        kaiten_sync_testkit::webhook_conformance_tests!(make_shared_store);
    }
}
