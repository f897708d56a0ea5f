//! The Postgres store passes the Store conformance suite and the end-to-end sync scenarios, each
//! test on a fresh schema of the test server (dropped afterwards).
//!
//! The Store suite writes children without their parents (cards of a board it never stores), which
//! the contract allows, so it runs with foreign keys off. The engine scenarios run with the
//! defaults, foreign keys on: a real sync never trips them.

mod common;

use common::TestStore;

async fn make_store() -> TestStore {
    TestStore::new(|o| o.foreign_keys = false).await
}

kaiten_sync::store_conformance_tests!(make_store);

mod table_lock {
    //! The lock behaviours again with `LockMode::Table`.
    use super::common::TestStore;
    use kaiten_store_postgres::LockMode;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lock_excludes_other_holders() {
        let store = TestStore::new(|o| o.lock_mode = LockMode::Table).await;
        kaiten_sync::conformance::lock_excludes_other_holders(&*store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_is_idempotent() {
        let store = TestStore::new(|o| o.lock_mode = LockMode::Table).await;
        kaiten_sync::conformance::migrate_is_idempotent(&*store).await;
    }
}

mod engine {
    use std::sync::Arc;

    use super::common::{SchemaGuard, TestStore};
    use kaiten_sync::Store;

    async fn make_shared_store() -> (Arc<dyn Store>, Option<SchemaGuard>) {
        TestStore::new(|_| {}).await.shared()
    }

    kaiten_sync::engine_conformance_tests!(make_shared_store);

    mod webhook {
        //! Webhook deliveries applied to this store.
        use super::make_shared_store;
        kaiten_sync::webhook_conformance_tests!(make_shared_store);
    }
}
