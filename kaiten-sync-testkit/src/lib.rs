//! The test kit of [`kaiten_sync`]: the conformance suites every [`Store`](kaiten_sync::Store)
//! passes, and the simulated Kaiten ([`kaiten_sim`]) they run against. `kaiten-sync` itself
//! depends on neither; its tests, and every store's, use this crate as a dev-dependency.
//!
//! - [`store`]: the `Store` contract (pages, versions, sweeps, runs, the lock, the webhook inbox),
//!   one public async fn per behaviour, generated as tests by [`store_conformance_tests!`].
//! - [`engine`]: end-to-end syncs against the simulator, by [`engine_conformance_tests!`]; also the
//!   helpers stores' own tests reuse ([`engine::sim_client`], [`engine::assert_mirror_is_the_simulator`],
//!   [`engine::api_faults`], [`engine::FlakyStore`]).
//! - [`webhook`]: webhook deliveries, end to end over HTTP included, by [`webhook_conformance_tests!`].
//! - [`inbox`]: a randomized model check of a store's inbox against the [`MemoryStore`](kaiten_sync::MemoryStore).
//! - [`inbox_load`]: the webhook inbox push-latency benchmark every store's `inbox` bench runs.
//! - [`upgrade`]: a mirror written by the first release's schema, upgraded with nothing lost.
//! - [`fixtures`]: records shaped like Kaiten's JSON, for tests and benchmarks.
//!
//! A store author adds this crate (and `tokio` with its `macros` feature) to the store's
//! dev-dependencies and makes one macro call per suite in a test file:
//!
//! ```ignore
//! use std::sync::Arc;
//! use kaiten_sync::Store;
//!
//! /// A fresh, migrated, empty store (anything whose `&*h` is a `&dyn Store`-able store).
//! async fn make_store() -> Arc<MyStore> { /* ... */ }
//!
//! /// The same, shared with the engine, plus whatever keeps it alive (a temp dir, a schema).
//! async fn make_shared_store() -> (Arc<dyn Store>, Guard) { /* ... */ }
//!
//! kaiten_sync_testkit::store_conformance_tests!(make_store);
//! kaiten_sync_testkit::engine_conformance_tests!(make_shared_store);
//! kaiten_sync_testkit::webhook_conformance_tests!(make_shared_store);
//! ```
//!
//! Each macro writes one `#[tokio::test]` per behaviour, named after it. A store whose server a
//! developer may opt out of uses the `optional` form (`store_conformance_tests!(optional make)`),
//! where the maker returns an `Option` and `None` ends the test at once.

pub mod engine;
pub mod fixtures;
pub mod inbox;
pub mod inbox_load;
pub mod store;
pub mod upgrade;
pub mod webhook;
