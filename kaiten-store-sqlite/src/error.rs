//! Mapping of rusqlite errors onto [`StoreError`].

use kaiten_sync::StoreError;
use rusqlite::ffi::ErrorCode;

pub(crate) const BACKEND: &str = "sqlite";

/// Maps an error of a statement to the store's error kinds: busy/locked → `Busy`, cannot open →
/// `Unavailable`, no such table → `NotMigrated`, permission/read-only → `Permission`, the rest
/// → `Backend` with the driver's error kept as the source.
pub(crate) fn db_err(err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
            backend: BACKEND,
            message: format!("{err} (another connection kept the database locked longer than the busy timeout)"),
        },
        Some(ErrorCode::CannotOpen | ErrorCode::NotADatabase) => {
            StoreError::Unavailable { backend: BACKEND, message: err.to_string(), source: Some(Box::new(err)) }
        }
        Some(ErrorCode::PermissionDenied | ErrorCode::ReadOnly | ErrorCode::AuthorizationForStatementDenied) => {
            StoreError::Permission { backend: BACKEND, message: err.to_string() }
        }
        _ if is_no_such_table(&err) => StoreError::NotMigrated,
        _ => backend(err.to_string(), err),
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
    match db_err(err) {
        StoreError::Busy { backend, message } => {
            StoreError::Busy { backend, message: format!("opening SQLite database {location}: {message}") }
        }
        StoreError::Permission { backend, message } => {
            StoreError::Permission { backend, message: format!("opening SQLite database {location}: {message}") }
        }
        StoreError::Unavailable { message, source, .. } | StoreError::Backend { message, source, .. } => {
            StoreError::Unavailable {
                backend: BACKEND,
                message: format!("cannot open SQLite database {location}: {message}"),
                source,
            }
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
