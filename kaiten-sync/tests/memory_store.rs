//! The in-memory store passes the Store conformance suite.

use kaiten_sync::MemoryStore;

async fn make_store() -> Box<MemoryStore> {
    Box::new(MemoryStore::new())
}

kaiten_sync::store_conformance_tests!(make_store);
