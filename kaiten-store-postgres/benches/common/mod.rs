//! What the Postgres benchmarks share: the server they run on, a store on a schema of their own,
//! and dropping that schema at the end.

use kaiten_store_postgres::{PgStore, PgStoreOptions};
use sqlx::{Connection, Executor, PgConnection};

/// The server: `KAITEN_TEST_DATABASE_URL`, or `postgres://postgres@127.0.0.1:5432/test`.
pub fn url() -> String {
    std::env::var("KAITEN_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A store with `options`; when the server cannot be reached, says the benchmark is skipped and
/// returns `None` (with `CI` set, exits with status 1 instead).
pub async fn connect(options: PgStoreOptions) -> Option<PgStore> {
    match PgStore::connect_with(options).await {
        Ok(store) => Some(store),
        Err(e) => {
            eprintln!("benchmark skipped: {e} (start PostgreSQL or set KAITEN_TEST_DATABASE_URL)");
            if std::env::var_os("CI").is_some() {
                std::process::exit(1);
            }
            None
        }
    }
}

/// Drops the benchmark's `schema` (with everything in it) on the server at `url`.
pub async fn drop_schema(url: &str, schema: &str) {
    let mut conn = PgConnection::connect(url).await.expect("connect to drop the schema");
    conn.execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str()).await.expect("drop the benchmark schema");
    conn.close().await.ok();
}
