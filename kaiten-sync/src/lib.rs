//! The kaiten-sync engine: mirrors a Kaiten company into a database through the [`Store`] trait.
//!
//! - [`SyncEngine`] runs full ([`SyncEngine::sync_all`]), incremental
//!   ([`SyncEngine::sync_incremental`]) and selective ([`SyncEngine::sync_specific`],
//!   [`SyncEngine::sync_selection`]) syncs, one at a time per database, resumable page by page,
//!   reporting [`ProgressEvent`]s and logging every run in `sync_logs`.
//! - [`Store`] is what a database must do; [`MemoryStore`] is always here, `kaiten-store-sqlite`
//!   and `kaiten-store-postgres` are the real ones. The `kaiten-sync-testkit` crate holds the suite
//!   every store passes (`store_conformance_tests!`, `engine_conformance_tests!`, `webhook_conformance_tests!`).
//! - [`webhook`] takes Kaiten webhook deliveries as notifications ([`WebhookHandler`]): recorded
//!   durably in the store's inbox, then each entity is fetched from Kaiten and stored through the
//!   same page path and parent handling as a sync; logged in `sync_logs` per drained batch.
//! - [`schema`] defines the tables and typed columns once for every store.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kaiten_sync::kaiten_client::KaitenClient;
//! use kaiten_sync::{EntityKind, MemoryStore, Store, SyncEngine};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = KaitenClient::from_env()?; // KAITEN_API_URL, KAITEN_API_TOKEN
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new()); // or SqliteStore, PgStore
//! store.migrate().await?;
//! let engine = SyncEngine::new(client, store.clone())
//!     .on_progress(|event| println!("{event:?}"));
//!
//! let report = engine.sync_all().await?; // everything, then deletion detection
//! println!("{} cards, {} requests", report.stats(EntityKind::Cards).fetched, report.run.api_requests);
//! engine.sync_incremental().await?; // only what changed since
//! engine.sync_specific(&[EntityKind::Users, EntityKind::Tags], true).await?; // selective
//! # Ok(()) }
//! ```

mod card_walk;
pub mod engine;
pub mod error;
pub mod holder;
pub mod inbox;
pub mod memory;
mod parents;
pub mod progress;
pub mod schema;
pub mod store;
pub mod webhook;

pub use engine::{Mode, Selection, SyncEngine, SyncOptions, SyncReport, DELETE_CHECK_SAMPLE};
pub use error::{ErrorKind, RefusedDeletion, SyncError};
pub use inbox::{InboxEntry, InboxResult, InboxStats, Notification};
pub use kaiten_client;
pub use memory::MemoryStore;
pub use progress::ProgressEvent;
pub use schema::{EntityKind, SqlValue};
pub use store::{
    Batch, EntityState, EntityStats, LockAttempt, LockInfo, Page, PageOutcome, RunColumns, RunKind, RunRecord,
    RunStatus, Scope, Store, StoreError, StoredRecord, TableCount,
};
pub use webhook::{
    constant_time_eq, DrainReport, WebhookAuth, WebhookError, WebhookEvent, WebhookHandler, WebhookOptions,
    WebhookOutcome,
};
