//! Turning sqlx errors into [`StoreError`]s that say what went wrong, and keeping passwords out of
//! every message.

use std::fmt;

use kaiten_sync::{EntityKind, StoreError};
use sqlx::postgres::PgDatabaseError;

pub(crate) const BACKEND: &str = "postgres";

/// Removes the password from a connection URL (`postgres://user:secret@host/db` →
/// `postgres://user:***@host/db`), secret query parameters and libpq `password=` values: the one
/// redaction of the workspace, [`kaiten_sync::kaiten_client::redact::redact_url`].
pub use kaiten_sync::kaiten_client::redact::redact_url;

/// Secrets that must never appear in an error message: the password of the URL, raw and
/// percent-decoded.
#[derive(Clone, Default)]
pub(crate) struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl Secrets {
    pub(crate) fn from_url(url: &str) -> Self {
        let mut secrets = kaiten_sync::kaiten_client::redact::url_secrets(url);
        secrets.retain(|s| s.len() >= 3);
        // Longest first: a secret that contains another is replaced whole.
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self(secrets)
    }

    /// Replaces every secret in `text` by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

/// The driver's error as the `source` of a [`StoreError`]: sqlx's error described once (for a
/// database error: its message, detail, hint and SQLSTATE), with every secret of the URL removed.
/// sqlx's own errors repeat their cause's text in their message, so the description stands in
/// for them.
#[derive(Debug)]
struct DriverError(String);

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DriverError {}

type Source = Option<Box<dyn std::error::Error + Send + Sync>>;

fn source_of(err: &sqlx::Error, secrets: &Secrets) -> Source {
    let text = match err {
        sqlx::Error::Io(io) => io.to_string(),
        _ => describe_db_error(err),
    };
    Some(Box::new(DriverError(secrets.scrub(&text))))
}

/// The SQLSTATE of a database error.
pub(crate) fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
}

/// `message (detail; hint) [SQLSTATE xxxxx]`.
fn describe_db_error(err: &sqlx::Error) -> String {
    let Some(db) = err.as_database_error() else { return err.to_string() };
    let mut text = db.message().to_owned();
    if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
        if let Some(detail) = pg.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = pg.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
    }
    if let Some(code) = db.code() {
        text.push_str(&format!(" [SQLSTATE {code}]"));
    }
    text
}

/// What an I/O error of a connection attempt means, in words a user can act on.
fn io_hint(err: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::ConnectionRefused => {
            Some("connection refused: is PostgreSQL running, and are the host and port right?")
        }
        ErrorKind::TimedOut => Some("connection timed out: is the host reachable (firewall, network)?"),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof => {
            Some("the server closed the connection")
        }
        ErrorKind::NotFound => Some("not found (the host, or a file the URL names)"),
        ErrorKind::PermissionDenied => Some("the operating system denied the connection"),
        _ => None,
    }
}

/// rustls errors reach sqlx as I/O errors of the TLS stream.
fn looks_like_tls(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "ssl"].iter().any(|w| lower.contains(w))
}

/// Maps an error met while opening a connection (`target` is the redacted URL).
pub(crate) fn connect_error(err: sqlx::Error, target: &str, secrets: &Secrets) -> StoreError {
    let code = sqlstate(&err);
    let mut source = source_of(&err, secrets);
    let message = match (&err, code.as_deref()) {
        (_, Some("28P01")) | (_, Some("28000")) => {
            format!("{target}: authentication failed (check the user name and password of the database URL)")
        }
        (_, Some("3D000")) => format!("{target}: no such database (create the database first)"),
        (_, Some("53300")) => format!("{target}: too many connections"),
        (_, Some(_)) => target.to_owned(),
        (sqlx::Error::Io(io), _) if !looks_like_tls(&io.to_string()) => match io_hint(io) {
            Some(hint) => format!("{target}: {hint}"),
            None => target.to_owned(),
        },
        (sqlx::Error::Io(_) | sqlx::Error::Tls(_), _) => format!(
            "{target}: TLS failed (check sslmode, sslrootcert, and that the host name in the URL is one the server's \
             certificate names)"
        ),
        (sqlx::Error::Configuration(_), _) => format!("invalid database URL {target}"),
        (sqlx::Error::PoolTimedOut, _) => {
            source = None;
            format!("{target}: timed out waiting for a connection")
        }
        (_, _) => target.to_owned(),
    };
    StoreError::Unavailable { backend: BACKEND, message: secrets.scrub(&message), source }
}

/// What a failed statement was doing, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) what: &'a str,
    pub(crate) kind: Option<EntityKind>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(what: &'a str) -> Self {
        Self { what, kind: None }
    }

    pub(crate) fn kind(what: &'a str, kind: EntityKind) -> Self {
        Self { what, kind: Some(kind) }
    }
}

/// Maps an error of a statement: the message says what the statement was doing (`ctx`) and what
/// to check, the source what the driver reported.
pub(crate) fn query_error(err: sqlx::Error, ctx: Ctx<'_>, secrets: &Secrets) -> StoreError {
    let what = ctx.what;
    let code = sqlstate(&err);
    let source = source_of(&err, secrets);
    let message = |text: String| secrets.scrub(&text);
    match code.as_deref() {
        // undefined_table, invalid_schema_name, undefined_column: the schema is not (fully) migrated.
        Some("42P01") | Some("3F000") | Some("42703") | Some("42883") => return StoreError::NotMigrated,
        Some("42501") => {
            return StoreError::Permission {
                backend: BACKEND,
                message: message(format!(
                    "{what} (the database user needs USAGE and CREATE on the schema, or to own it, and \
                     SELECT/INSERT/UPDATE/DELETE on its tables)"
                )),
                source,
            }
        }
        // serialization_failure, deadlock_detected, lock_not_available, query_canceled (statement_timeout)
        Some("40001") | Some("40P01") | Some("55P03") | Some("57014") => {
            return StoreError::Busy { backend: BACKEND, message: message(what.to_owned()), source }
        }
        Some(c) if c.starts_with("22") => {
            if let Some(kind) = ctx.kind {
                return StoreError::InvalidData {
                    kind,
                    message: message(format!("{what}: {}", describe_db_error(&err))),
                };
            }
        }
        Some("23503") => {
            return StoreError::Backend {
                backend: BACKEND,
                message: message(format!(
                    "{what} (a record references a parent that is not stored; the engine stores parents first, so \
                     this is a bug worth reporting)"
                )),
                source,
            }
        }
        // connection-level failures while running a statement
        Some(c) if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
            return StoreError::Unavailable { backend: BACKEND, message: message(what.to_owned()), source }
        }
        _ => {}
    }
    match &err {
        sqlx::Error::Io(io) => {
            let hint = io_hint(io).map(|h| format!(" ({h})")).unwrap_or_default();
            StoreError::Unavailable {
                backend: BACKEND,
                message: message(format!("{what}: lost the connection{hint}")),
                source,
            }
        }
        sqlx::Error::Tls(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable { backend: BACKEND, message: message(what.to_owned()), source }
        }
        sqlx::Error::PoolTimedOut => StoreError::Busy {
            backend: BACKEND,
            message: format!(
                "{what}: timed out waiting for a free connection of the pool (is the database reachable, and is \
                 max_connections large enough?)"
            ),
            source: None,
        },
        sqlx::Error::Encode(e) => match ctx.kind {
            Some(kind) => StoreError::InvalidData { kind, message: message(format!("{what}: {e}")) },
            None => StoreError::Backend { backend: BACKEND, message: message(what.to_owned()), source },
        },
        _ => StoreError::Backend { backend: BACKEND, message: message(what.to_owned()), source },
    }
}

/// A backend error without a driver error behind it.
pub(crate) fn backend_message(message: impl Into<String>) -> StoreError {
    StoreError::Backend { backend: BACKEND, message: message.into(), source: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgres://u:p%40ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u:a@b@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("not a url password=x"), "not a url password=***");
        assert_eq!(
            redact_url("postgres://postgres:Pw/Secret123@127.0.0.1:5432/x"),
            "postgres://postgres:***@127.0.0.1:5432/x"
        );
    }

    #[test]
    fn scrubs_raw_and_decoded_secrets() {
        let secrets = Secrets::from_url("postgres://u:p%40ssword@h/db?password=other1");
        let text = secrets.scrub("a p%40ssword b p@ssword c other1");
        assert_eq!(text, "a *** b *** c ***");
        assert!(!format!("{secrets:?}").contains("ssword"));
        let secrets = Secrets::from_url("postgres://u:Pw/Secret123@h/db");
        assert_eq!(secrets.scrub("password Pw/Secret123 rejected"), "password *** rejected");
    }
}
