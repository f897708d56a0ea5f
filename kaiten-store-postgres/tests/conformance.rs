//! The Postgres store passes the Store conformance suite and the end-to-end sync scenarios, each
//! test on a fresh schema of the test server (dropped afterwards).
//!
//! The Store suite writes children without their parents (cards of a board it never stores), which
//! the contract allows, so it runs with foreign keys off. The engine scenarios run with the
//! defaults, foreign keys on: a real sync never trips them.

mod common;

use common::TestStore;

async fn make_store() -> Option<TestStore> {
    TestStore::new(|o| o.foreign_keys = false).await
}

kaiten_sync_testkit::store_conformance_tests!(optional make_store);

mod table_lock {
    //! The lock behaviours again with `LockMode::Table`.
    use super::common::TestStore;
    use kaiten_store_postgres::LockMode;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lock_excludes_other_holders() {
        let Some(store) = TestStore::new(|o| o.lock_mode = LockMode::Table).await else { return };
        kaiten_sync_testkit::store::lock_excludes_other_holders(&*store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_is_idempotent() {
        let Some(store) = TestStore::new(|o| o.lock_mode = LockMode::Table).await else { return };
        kaiten_sync_testkit::store::migrate_is_idempotent(&*store).await;
    }
}

mod foreign_keys {
    //! The probes of every column reference their parents, so they pass with foreign keys on.
    use super::common::TestStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_column_round_trips_by_name() {
        let Some(store) = TestStore::new(|_| {}).await else { return };
        kaiten_sync_testkit::store::every_column_round_trips_by_name(&*store).await;
    }
}

mod engine {
    use std::sync::Arc;

    use super::common::{SchemaGuard, TestStore};
    use kaiten_sync::Store;

    async fn make_shared_store() -> Option<(Arc<dyn Store>, SchemaGuard)> {
        Some(TestStore::new(|_| {}).await?.shared())
    }

    kaiten_sync_testkit::engine_conformance_tests!(optional make_shared_store);

    mod webhook {
        //! Webhook deliveries applied to this store.
        use super::make_shared_store;
        kaiten_sync_testkit::webhook_conformance_tests!(optional make_shared_store);
    }
}
