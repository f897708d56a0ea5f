//! The in-memory store passes the Store conformance suite and the end-to-end sync scenarios.

use std::sync::Arc;

use kaiten_sync::{MemoryStore, Store};

async fn make_store() -> Box<MemoryStore> {
    Box::new(MemoryStore::new())
}

async fn make_shared_store() -> (Arc<dyn Store>, ()) {
    (Arc::new(MemoryStore::new()), ())
}

kaiten_sync_testkit::store_conformance_tests!(make_store);

mod engine {
    use super::make_shared_store;
    kaiten_sync_testkit::engine_conformance_tests!(make_shared_store);
}
