//! The SQLite store passes the Store conformance suite (a fresh migrated file per test).

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

kaiten_sync::store_conformance_tests!(make_store);
