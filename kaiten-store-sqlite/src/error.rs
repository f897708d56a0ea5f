//! Mapping of rusqlite errors onto [`StoreError`]. The message says what failed in the store's
//! words; the rusqlite error is the source, so it is shown once, after the message.

use std::fmt;

use kaiten_sync::StoreError;
use rusqlite::ffi::ErrorCode;

pub(crate) const BACKEND: &str = "sqlite";

type Source = Option<Box<dyn std::error::Error + Send + Sync>>;

/// Maps an error of a statement to the store's error kinds: busy/locked → `Busy`, cannot open →
/// `Unavailable`, no such table → `NotMigrated`, permission/read-only → `Permission`, disk full →
/// `Backend` saying so, the rest → `Backend`; the driver's error is the source of each.
pub(crate) fn db_err(err: rusqlite::Error) -> StoreError {
    let message = |text: &str| text.to_owned();
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
            backend: BACKEND,
            message: message("another connection kept the database locked longer than the busy timeout"),
            source: Some(Box::new(err)),
        },
        Some(ErrorCode::CannotOpen) => StoreError::Unavailable {
            backend: BACKEND,
            message: message("the database file cannot be opened"),
            source: Some(Box::new(err)),
        },
        Some(ErrorCode::NotADatabase) => StoreError::Unavailable {
            backend: BACKEND,
            message: message("the file is not a SQLite database"),
            source: Some(Box::new(err)),
        },
        Some(ErrorCode::PermissionDenied | ErrorCode::ReadOnly | ErrorCode::AuthorizationForStatementDenied) => {
            StoreError::Permission {
                backend: BACKEND,
                message: message("the database (or its directory) may not be written by this user"),
                source: Some(Box::new(err)),
            }
        }
        Some(ErrorCode::DiskFull) => backend(
            "the database is full (no space left on its disk, or its size limit reached): the transaction was \
             rolled back; free space and run again"
                .to_owned(),
            err,
        ),
        _ if is_no_such_table(&err) => StoreError::NotMigrated,
        _ => backend("a statement failed".to_owned(), err),
    }
}

/// Whether the error says a table is missing (a database that was never migrated).
pub(crate) fn is_no_such_table(err: &rusqlite::Error) -> bool {
    match err {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.starts_with("no such table"),
        rusqlite::Error::SqlInputError { msg, .. } => msg.starts_with("no such table"),
        _ => false,
    }
}

/// Maps an error met while opening or configuring the database at `location`: the message names
/// the file.
pub(crate) fn open_err(location: &str, err: rusqlite::Error) -> StoreError {
    let opening = |message: String| format!("opening SQLite database {location}: {message}");
    match db_err(err) {
        StoreError::Busy { backend, message, source } => {
            StoreError::Busy { backend, message: opening(message), source }
        }
        StoreError::Permission { backend, message, source } => {
            StoreError::Permission { backend, message: opening(message), source }
        }
        StoreError::Unavailable { message, source, .. } => {
            StoreError::Unavailable { backend: BACKEND, message: format!("{location}: {message}"), source }
        }
        StoreError::Backend { source, .. } => {
            StoreError::Unavailable { backend: BACKEND, message: format!("cannot open {location}"), source }
        }
        other => other,
    }
}

/// A `Backend` error with a source.
pub(crate) fn backend(message: String, source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend { backend: BACKEND, message, source: Some(Box::new(source)) }
}

/// A `Backend` error about data found in the database that this crate cannot read.
pub(crate) fn corrupt(message: String) -> StoreError {
    StoreError::Backend { backend: BACKEND, message, source: None }
}

/// The same error for each call of a group (a [`StoreError`] is not `Clone`): the source becomes
/// its text, causes included.
pub(crate) fn clone_err(e: &StoreError) -> StoreError {
    let source = |source: &Source| -> Source {
        source.as_deref().map(|s| Box::new(SourceText(kaiten_sync::error::chain(s))) as _)
    };
    match e {
        StoreError::Busy { backend, message, source: s } => {
            StoreError::Busy { backend, message: message.clone(), source: source(s) }
        }
        StoreError::Unavailable { backend, message, source: s } => {
            StoreError::Unavailable { backend, message: message.clone(), source: source(s) }
        }
        StoreError::Permission { backend, message, source: s } => {
            StoreError::Permission { backend, message: message.clone(), source: source(s) }
        }
        StoreError::NotMigrated => StoreError::NotMigrated,
        StoreError::Schema { message, source: s } => StoreError::Schema { message: message.clone(), source: source(s) },
        StoreError::InvalidData { kind, message } => StoreError::InvalidData { kind: *kind, message: message.clone() },
        StoreError::Backend { backend, message, source: s } => {
            StoreError::Backend { backend, message: message.clone(), source: source(s) }
        }
        other => corrupt(kaiten_sync::error::chain(other)),
    }
}

/// The text of an error that could not be kept itself.
#[derive(Debug)]
struct SourceText(String);

impl fmt::Display for SourceText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceText {}
