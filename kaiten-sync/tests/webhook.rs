//! Webhook signatures and constant-time comparison; the delivery scenarios of
//! `kaiten_sync_testkit::webhook` run here on the memory store (and in the SQLite and
//! Postgres stores' tests on theirs).

use std::sync::Arc;

use kaiten_sync::{constant_time_eq, MemoryStore, Store};
use kaiten_sync_testkit::webhook::SECRET;

#[test]
fn constant_time_compare() {
    assert!(constant_time_eq(SECRET.as_bytes(), SECRET.as_bytes()));
    assert!(!constant_time_eq(b"wh-secret-0123456789abcdeF", SECRET.as_bytes()));
    assert!(!constant_time_eq(b"wh-secret", SECRET.as_bytes()));
    assert!(!constant_time_eq(format!("{SECRET}x").as_bytes(), SECRET.as_bytes()));
    assert!(!constant_time_eq(b"", SECRET.as_bytes()));
    assert!(constant_time_eq(b"", b""));
}

async fn make_shared_store() -> (Arc<dyn Store>, ()) {
    (Arc::new(MemoryStore::new()), ())
}

kaiten_sync_testkit::webhook_conformance_tests!(make_shared_store);
