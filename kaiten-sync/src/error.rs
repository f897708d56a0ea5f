//! Errors of the engine, and [`chain`], which renders an error with its causes.
//!
//! Each error says what failed at its own layer and keeps what caused it as its
//! [`source`](std::error::Error::source): [`SyncError::Store`] displays as `database error`, its
//! source is the [`StoreError`], whose source is the driver's error. Show an error to a person with
//! [`chain`] (or [`Chain`]), which joins every layer: `database error: the sqlite database is locked
//! or busy: ...: database is locked`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::schema::EntityKind;
use crate::store::StoreError;

/// Why a sync (or a webhook delivery) failed. Never contains the API token or a database password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Kaiten answered with an error, or could not be reached: the source says how.
    #[error("Kaiten API error")]
    Api(#[from] kaiten_client::Error),
    /// The database failed: the source says how.
    #[error("database error")]
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
    /// Kaiten's answers to a paged listing do not let the run tell where the listing ends (the
    /// route ignores `limit`, or `offset` and `updated_after`): the run stopped before any
    /// deletion sweep of that listing, so nothing was marked deleted because of it.
    #[error("the listing of {route} cannot be completed: {reason}. The run stopped; nothing was marked deleted")]
    IncompleteListing {
        /// The route, e.g. `GET /cards`.
        route: String,
        /// What Kaiten did.
        reason: String,
    },
    /// A sweep would have marked more than [`SyncOptions::max_delete_share`] of a kind deleted and
    /// Kaiten still has some of those records when asked by id (or in a second listing): its
    /// listing looked incomplete, so nothing of that kind was marked deleted. Everything else the
    /// run listed was stored. See [`RefusedDeletion`].
    ///
    /// [`SyncOptions::max_delete_share`]: crate::SyncOptions::max_delete_share
    #[error(
        "refused to mark records deleted: {} (more than {:.0}% of a kind disappeared from Kaiten's listing, and a \
         check by id found some still there). Nothing of {} was marked deleted; the rest of the run was stored. \
         If Kaiten really lost them, run again with a higher max_delete_share (CLI: --max-delete-share)",
        refused.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        max_share * 100.0,
        if refused.len() == 1 { "that kind" } else { "those kinds" }
    )]
    DeletionsRefused {
        /// One entry per kind whose sweep was refused.
        refused: Vec<RefusedDeletion>,
        /// The share of a kind a sweep may mark deleted without a check.
        max_share: f64,
    },
}

/// A sweep that was not done: see [`SyncError::DeletionsRefused`].
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedDeletion {
    /// The kind.
    pub kind: EntityKind,
    /// Live rows the listing did not return (what the sweep would have marked deleted).
    pub missing: usize,
    /// Live rows of the kind in the listing's scope before the sweep.
    pub live: usize,
    /// How many of the missing ones were checked.
    pub checked: usize,
    /// The checked ones Kaiten still has.
    pub still_there: Vec<i64>,
}

impl std::fmt::Display for RefusedDeletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<String> = self.still_there.iter().take(5).map(i64::to_string).collect();
        let more = if self.still_there.len() > shown.len() { ", ..." } else { "" };
        write!(
            f,
            "{} of {} {} missing from the listing, but Kaiten still has {} of {} checked ({}{more})",
            self.missing,
            self.live,
            self.kind,
            self.still_there.len(),
            self.checked,
            shown.join(", ")
        )
    }
}

/// What kind of failure an error is, for programs that branch on it without matching every
/// variant (and every layer) of [`SyncError`] and [`StoreError`]: [`SyncError::kind`],
/// [`StoreError::kind`]. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Kaiten could not be reached or did not answer in time (after the client's retries).
    Network,
    /// Kaiten refused the token (401) or the token's user may not see what was asked (403).
    Unauthorized,
    /// Kaiten does not have what was asked for (404).
    NotFound,
    /// Kaiten's rate limit held the request longer than the client waits (429).
    RateLimited,
    /// Kaiten answered with an error this client does not retry, or a body it cannot read.
    Api,
    /// The database cannot be reached, or refused the credentials.
    DatabaseUnavailable,
    /// The database was locked or busy for longer than the store waits.
    DatabaseBusy,
    /// The database has no schema yet, or one this version does not know: run `migrate`.
    Schema,
    /// The database refused an operation for lack of privileges.
    DatabasePermission,
    /// Any other database failure, or a record the store cannot write.
    Database,
    /// Another run holds the one-sync-at-a-time lock, or this run lost it.
    Locked,
    /// The run was cancelled before it finished.
    Cancelled,
    /// The run was asked for something that does not exist.
    InvalidSelection,
    /// Kaiten's listing could not be completed, or looked incomplete: nothing was marked deleted.
    IncompleteListing,
}

impl SyncError {
    /// What kind of failure this is (see [`ErrorKind`]). Database errors give the store's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SyncError::Api(e) => api_kind(e),
            SyncError::Store(e) => e.kind(),
            SyncError::Locked { .. } | SyncError::LockLost => ErrorKind::Locked,
            SyncError::Cancelled => ErrorKind::Cancelled,
            SyncError::InvalidSelection(_) => ErrorKind::InvalidSelection,
            SyncError::IncompleteListing { .. } | SyncError::DeletionsRefused { .. } => ErrorKind::IncompleteListing,
        }
    }

    /// Whether running again later may succeed (network trouble, rate limits, a busy database,
    /// another run holding the lock).
    pub fn is_retryable(&self) -> bool {
        match self {
            SyncError::Api(e) => e.is_retryable(),
            SyncError::Store(StoreError::Busy { .. } | StoreError::Unavailable { .. }) => true,
            SyncError::Locked { .. } => true,
            // Kaiten's listing may be whole again next time.
            SyncError::DeletionsRefused { .. } => true,
            _ => false,
        }
    }
}

/// An error and every cause behind it on one line, outermost first, joined by `: ` (`database
/// error: the postgres database is locked or busy: write a page of cards: canceling statement due
/// to statement timeout [SQLSTATE 57014]`). The text a person sees, a log line or the run log
/// holds: an error's own `Display` says only its own layer.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    Chain(error).to_string()
}

/// Displays an error with its causes, as [`chain`] renders them, without allocating: for log
/// fields (`warn!(error = %Chain(&e), ...)`) and `format!`.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl std::fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The kind of a client error, by the status Kaiten answered (or none: the network).
fn api_kind(error: &kaiten_client::Error) -> ErrorKind {
    use kaiten_client::Error;
    match error {
        Error::Timeout { .. } | Error::Connection { .. } => ErrorKind::Network,
        Error::Unauthorized { .. } | Error::Forbidden { .. } => ErrorKind::Unauthorized,
        Error::NotFound { .. } => ErrorKind::NotFound,
        Error::RateLimited { .. } => ErrorKind::RateLimited,
        Error::TooManyPages { .. } => ErrorKind::IncompleteListing,
        _ => ErrorKind::Api,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_renders_each_layer_once() {
        let store = StoreError::Busy {
            backend: "sqlite",
            message: "write a page of cards".into(),
            source: Some("database is locked".into()),
        };
        let err = SyncError::from(store);
        assert_eq!(err.to_string(), "database error");
        assert_eq!(
            chain(&err),
            "database error: the sqlite database is locked or busy: write a page of cards: database is locked"
        );
        assert_eq!(format!("{}", Chain(&err)), chain(&err));
        assert!(err.is_retryable());
    }

    #[test]
    fn kinds_name_the_failure_through_every_layer() {
        let busy = StoreError::Busy { backend: "sqlite", message: "m".into(), source: None };
        assert_eq!(SyncError::from(busy).kind(), ErrorKind::DatabaseBusy);
        assert_eq!(SyncError::from(StoreError::NotMigrated).kind(), ErrorKind::Schema);
        let not_found = kaiten_client::Error::NotFound { route: "GET /cards/7".into() };
        assert_eq!(SyncError::from(not_found).kind(), ErrorKind::NotFound);
        let endless = kaiten_client::Error::TooManyPages { route: "GET /tags".into(), pages: 9 };
        assert_eq!(SyncError::from(endless).kind(), ErrorKind::IncompleteListing);
        assert_eq!(SyncError::LockLost.kind(), ErrorKind::Locked);
        assert_eq!(SyncError::InvalidSelection("x".into()).kind(), ErrorKind::InvalidSelection);
        assert_eq!(
            SyncError::DeletionsRefused { refused: Vec::new(), max_share: 0.1 }.kind(),
            ErrorKind::IncompleteListing
        );
    }
}
