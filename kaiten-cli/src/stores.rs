//! Opening the store a database URL names.

use std::sync::Arc;

use anyhow::{bail, Result};
use kaiten_sync::Store;

use crate::config::DbArgs;

/// Opens the store for `--database-url`: `sqlite://...` or a path → SQLite, `postgres://...` →
/// Postgres.
pub async fn open(db: &DbArgs) -> Result<Arc<dyn Store>> {
    open_with(db, false).await
}

/// [`open`], with `enable_rls` (`migrate --enable-rls`): on Postgres, `migrate` enables row-level
/// security on every table even without Supabase's `anon` role. Ignored by SQLite.
pub async fn open_with(db: &DbArgs, enable_rls: bool) -> Result<Arc<dyn Store>> {
    let url = db.database_url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return open_postgres(db, enable_rls).await;
    }
    if url.contains("://") && !url.starts_with("sqlite:") {
        bail!(
            "unsupported DATABASE_URL {}: use sqlite://FILE, a file path, or postgres://USER:PASSWORD@HOST/DB",
            db.describe()
        );
    }
    open_sqlite(url)
}

#[cfg(feature = "sqlite")]
fn open_sqlite(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(kaiten_store_sqlite::SqliteStore::open(url)?))
}

#[cfg(not(feature = "sqlite"))]
fn open_sqlite(_url: &str) -> Result<Arc<dyn Store>> {
    bail!("this kaiten-sync was built without SQLite support (feature `sqlite`)")
}

#[cfg(feature = "postgres")]
async fn open_postgres(db: &DbArgs, enable_rls: bool) -> Result<Arc<dyn Store>> {
    use crate::config::DbLock;
    use anyhow::Context;
    use kaiten_store_postgres::{validate_schema_name, LockMode, PgStore, PgStoreOptions};
    validate_schema_name(&db.db_schema).context("KAITEN_DB_SCHEMA / --db-schema")?;
    let mut options = PgStoreOptions::new(db.database_url.trim());
    options.schema = db.db_schema.clone();
    options.lock_mode = match db.db_lock {
        DbLock::Advisory => LockMode::Advisory,
        DbLock::Table => LockMode::Table,
    };
    if enable_rls {
        options.row_level_security = kaiten_store_postgres::RowLevelSecurity::Enable;
    }
    options.check().context("DATABASE_URL / --database-url")?;
    Ok(Arc::new(PgStore::connect_with(options).await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_db: &DbArgs, _enable_rls: bool) -> Result<Arc<dyn Store>> {
    bail!("this kaiten-sync was built without Postgres support (feature `postgres`)")
}
