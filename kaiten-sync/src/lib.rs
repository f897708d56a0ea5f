//! The kaiten-sync engine: mirrors a Kaiten company into a database through the [`Store`] trait.
//!
//! (Crate docs with a quickstart are written with the engine.)

pub mod engine;
pub mod error;
pub mod memory;
pub mod progress;
pub mod schema;
pub mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use engine::{Mode, Selection, SyncEngine, SyncOptions, SyncReport};
pub use error::SyncError;
pub use kaiten_client;
pub use memory::MemoryStore;
pub use progress::ProgressEvent;
pub use schema::{EntityKind, SqlValue};
pub use store::{
    Batch, EntityState, EntityStats, LockAttempt, LockInfo, Page, PageOutcome, RunKind, RunRecord, RunStatus, Scope,
    Store, StoreError, StoredRecord, TableCount,
};
