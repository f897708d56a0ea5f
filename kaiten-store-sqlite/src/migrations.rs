//! Embedded migrations and the `migrate` procedure.

use chrono::Utc;
use kaiten_sync::StoreError;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::db_err;
use crate::sql::fmt_time;

/// One embedded migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Version number, applied in ascending order.
    pub version: i64,
    /// File name under `migrations/`.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration this crate knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "0001_initial.sql", sql: include_str!("../migrations/0001_initial.sql") },
    Migration { version: 2, name: "0002_users_role.sql", sql: include_str!("../migrations/0002_users_role.sql") },
    Migration { version: 3, name: "0003_card_members.sql", sql: include_str!("../migrations/0003_card_members.sql") },
    Migration { version: 4, name: "0004_webhook_inbox.sql", sql: include_str!("../migrations/0004_webhook_inbox.sql") },
    Migration { version: 5, name: "0005_sweep_marks.sql", sql: include_str!("../migrations/0005_sweep_marks.sql") },
    Migration {
        version: 6,
        name: "0006_deferred_indexes.sql",
        sql: include_str!("../migrations/0006_deferred_indexes.sql"),
    },
    Migration {
        version: 7,
        name: "0007_cards_append_order.sql",
        sql: include_str!("../migrations/0007_cards_append_order.sql"),
    },
    Migration {
        version: 8,
        name: "0008_card_tags_pending.sql",
        sql: include_str!("../migrations/0008_card_tags_pending.sql"),
    },
];

/// The highest schema version this crate knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The highest applied version, `None` when the database was never migrated.
pub(crate) fn applied_version(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let has_table: Option<i64> = conn
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'", [], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    if has_table.is_none() {
        return Ok(None);
    }
    conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| r.get(0)).map_err(db_err)
}

/// Applies the missing migrations in one IMMEDIATE transaction (a second process migrating at the
/// same time waits for it, then finds nothing left to do).
///
/// A migration is missing when its version is not recorded, whatever the highest recorded one:
/// versions need not be contiguous, and one that arrives after a higher one was applied (branches
/// merged in another order) is still applied, in ascending order with the others.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TEXT NOT NULL
         )",
    )
    .map_err(db_err)?;
    let current: i64 =
        tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0)).map_err(db_err)?;
    let latest = latest_version();
    if current > latest {
        return Err(StoreError::Schema {
            message: format!(
                "database schema version {current} is newer than this kaiten-sync (knows up to {latest}): upgrade \
                 kaiten-sync"
            ),
            source: None,
        });
    }
    let applied: Vec<i64> = tx
        .prepare("SELECT version FROM schema_migrations")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(db_err)?;
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tx.execute_batch(migration.sql).map_err(|e| match db_err(e) {
            StoreError::Backend { source, .. } | StoreError::Unavailable { source, .. } => {
                StoreError::Schema { message: format!("migration {} failed", migration.name), source }
            }
            StoreError::NotMigrated => StoreError::Schema {
                message: format!("migration {} refers to a missing table", migration.name),
                source: None,
            },
            other => other,
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            (migration.version, fmt_time(&Utc::now())),
        )
        .map_err(db_err)?;
        tracing::info!(version = migration.version, name = migration.name, "applied SQLite migration");
    }
    tx.commit().map_err(db_err)
}
