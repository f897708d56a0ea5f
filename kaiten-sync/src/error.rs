//! Errors of the engine.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::StoreError;

/// Why a sync (or a webhook delivery) failed. Never contains the API token or a database password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Kaiten answered with an error, or could not be reached.
    #[error("Kaiten API error: {0}")]
    Api(#[from] kaiten_client::Error),
    /// The database failed.
    #[error("database error: {0}")]
    Store(#[from] StoreError),
    /// Another run holds the one-sync-at-a-time lock.
    #[error("another sync is running on this database (lock held by {holder} since {since}); waited {waited:?}. Try again when it finishes, or raise the lock wait")]
    Locked {
        /// Who holds the lock.
        holder: String,
        /// Since when.
        since: DateTime<Utc>,
        /// How long this run waited.
        waited: Duration,
    },
    /// This run's lock was taken over (it did not say it was alive for too long) or lost with its
    /// database session: the run stopped so two runs never write at once.
    #[error("the sync lock was lost (taken over after it went stale, or its database session ended); the run stopped. The next run resumes where it left off")]
    LockLost,
    /// The run's task was cancelled (its runtime shut down) before it finished.
    #[error("the sync was cancelled before it finished; the next run resumes where it left off")]
    Cancelled,
    /// The selection asked for nothing, or for something that does not exist.
    #[error("invalid selection: {0}")]
    InvalidSelection(String),
}

impl SyncError {
    /// Whether running again later may succeed (network trouble, rate limits, a busy database,
    /// another run holding the lock).
    pub fn is_retryable(&self) -> bool {
        match self {
            SyncError::Api(e) => e.is_retryable(),
            SyncError::Store(StoreError::Busy { .. } | StoreError::Unavailable { .. }) => true,
            SyncError::Locked { .. } => true,
            _ => false,
        }
    }
}
