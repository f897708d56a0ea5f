//! Test support: databases as an earlier release of the store left them.

use kaiten_store_sqlite::{SqliteStore, MIGRATIONS};

/// A store on a new file at `path` as the first release (schema version 1) left it: its tables and
/// `schema_migrations` at 1, then `data` (SQL statements).
pub async fn version_1(path: &std::path::Path, data: String) -> SqliteStore {
    let store = SqliteStore::open(path).unwrap();
    let v1 = MIGRATIONS.iter().find(|m| m.version == 1).unwrap().sql;
    store
        .with_connection(move |c| {
            c.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")?;
            c.execute_batch(v1)?;
            c.execute("INSERT INTO schema_migrations VALUES (1, '2025-01-01T00:00:00.000Z')", [])?;
            c.execute_batch(&data)
        })
        .await
        .unwrap();
    assert_eq!(store.schema_version().await.unwrap(), Some(1));
    store
}
