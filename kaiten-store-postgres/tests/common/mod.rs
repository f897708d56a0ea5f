//! Test support: the server URL, uniquely named schemas and databases that drop themselves.
//!
//! Tests read the server from `KAITEN_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When the server is unreachable a test **fails**,
//! saying how to start one. A developer without PostgreSQL opts out explicitly with
//! `KAITEN_SKIP_POSTGRES=1`: then each test returns at once and prints
//! `SKIPPED <test>: <why>` straight to stderr, where `cargo test` shows it next to the test's
//! `ok` (the harness captures `eprintln!` of passing tests; it does not capture this). Nothing runs
//! against another store in their place. With `CI` set the opt-out is refused.

#![allow(dead_code)]

use std::hash::{BuildHasher, Hasher};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kaiten_store_postgres::{PgStore, PgStoreOptions};
use kaiten_sync::Store;
use sqlx::{Connection, Executor, PgConnection, Row};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server URL tests use.
pub fn test_url() -> String {
    std::env::var("KAITEN_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.into())
}

/// `url` with a query parameter added.
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// `url` pointing at another database.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    format!("{}/{database}{query}", &base[..path_start])
}

/// Says that the running test is skipped, and why, where `cargo test` shows it: one line
/// `SKIPPED <test name>: <why>` written straight to the process's stderr (past the harness's
/// capture, which would hide an `eprintln!` of a passing test).
pub fn skip(why: &str) {
    use std::io::Write;
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// Whether the developer opted out of the PostgreSQL tests (`KAITEN_SKIP_POSTGRES` set to anything
/// but empty, `0`, `false`, `no` or `off`).
pub fn postgres_opted_out() -> bool {
    std::env::var("KAITEN_SKIP_POSTGRES")
        .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false" | "no" | "off"))
        .unwrap_or(false)
}

/// The test server's URL when it answers. `None` (after [`skip`] says so) when the developer
/// opted out with `KAITEN_SKIP_POSTGRES`. Panics, saying what to do, when the server does not
/// answer, and when the opt-out is set in CI.
pub async fn server() -> Option<String> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    if postgres_opted_out() {
        assert!(
            std::env::var_os("CI").is_none(),
            "KAITEN_SKIP_POSTGRES is set, but so is CI: CI never skips the PostgreSQL tests"
        );
        skip("KAITEN_SKIP_POSTGRES is set; unset it to run the PostgreSQL tests");
        return None;
    }
    let url = test_url();
    let result = match CHECK.get() {
        Some(r) => r.clone(),
        None => {
            let r = match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    Ok(())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within 5 s".into()),
            };
            CHECK.get_or_init(|| r).clone()
        }
    };
    match result {
        Ok(()) => {
            cleanup_leftovers(&url).await;
            Some(url)
        }
        Err(e) => panic!(
            "PostgreSQL at {} is unreachable ({e}): start it (see CONTRIBUTING.md), point KAITEN_TEST_DATABASE_URL \
             at a server, or set KAITEN_SKIP_POSTGRES=1 to skip the PostgreSQL tests (each then says so)",
            kaiten_store_postgres::redact_url(&url)
        ),
    }
}

fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos());
    h.finish()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A unique lowercase name: `<prefix>_<unix seconds>_<pid>_<counter>_<random>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{}_{n}_{:x}", unix_now(), std::process::id(), random() & 0xffff_ffff)
}

/// Drops test schemas and databases left by crashed runs (older than an hour), once per process.
async fn cleanup_leftovers(url: &str) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let Ok(mut conn) = PgConnection::connect(url).await else { return };
        let cutoff = unix_now().saturating_sub(3600);
        let old = |name: &str| name.split('_').nth(2).and_then(|s| s.parse::<u64>().ok()).is_some_and(|t| t < cutoff);
        if let Ok(rows) = sqlx::query("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'kaiten\\_test\\_%'")
            .fetch_all(&mut conn)
            .await
        {
            for row in rows {
                let name: String = row.get(0);
                if old(&name) {
                    let _ = conn.execute(format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE").as_str()).await;
                }
            }
        }
        if let Ok(rows) = sqlx::query("SELECT datname::text FROM pg_database WHERE datname LIKE 'kaiten\\_testdb\\_%'")
            .fetch_all(&mut conn)
            .await
        {
            for row in rows {
                let name: String = row.get(0);
                if old(&name) {
                    let _ = conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await;
                }
            }
        }
        let _ = conn.close().await;
    })
    .await;
}

/// Runs async cleanup to completion from `Drop`, on a thread with its own runtime (the test's
/// runtime may be shutting down).
fn block_on_fresh_runtime<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(f);
    });
    let _ = handle.join();
}

/// Ends the sessions a test opened (by application name) so that nothing blocks a drop.
async fn end_sessions(conn: &mut PgConnection, application_name: &str) {
    let _ = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(application_name)
    .execute(&mut *conn)
    .await;
}

/// A schema that is dropped (with everything in it) when the guard is dropped.
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
    /// The application name of the connections opened for this schema.
    pub app: String,
}

impl SchemaGuard {
    /// A fresh, not yet created schema name on the test server.
    pub fn new(url: &str) -> Self {
        let schema = unique_name("kaiten_test");
        Self { url: url.to_owned(), app: schema.clone(), schema }
    }

    /// The URL tagged with this guard's application name.
    pub fn store_url(&self) -> String {
        with_param(&self.url, "application_name", &self.app)
    }

    /// Options for a store on this schema.
    pub fn options(&self) -> PgStoreOptions {
        PgStoreOptions { schema: self.schema.clone(), ..PgStoreOptions::new(self.store_url()) }
    }

    /// The schema's name quoted for SQL.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.schema)
    }

    /// Creates the schema as the first release (schema version 1) left it: its tables and
    /// `schema_migrations` at 1; then runs `data` (SQL naming the tables in [`Self::quoted`]).
    pub async fn create_version_1(&self, data: &str) {
        let q = self.quoted();
        let mut conn = PgConnection::connect(&self.store_url()).await.unwrap();
        let v1 = kaiten_store_postgres::migrate::MIGRATIONS
            .iter()
            .find(|m| m.version == 1)
            .unwrap()
            .sql
            .replace("{schema}", &q);
        conn.execute(format!("CREATE SCHEMA {q}").as_str()).await.unwrap();
        conn.execute(v1.as_str()).await.unwrap();
        conn.execute(
            format!(
                "CREATE TABLE {q}.schema_migrations (version bigint PRIMARY KEY, description text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now()); \
                 INSERT INTO {q}.schema_migrations (version, description) VALUES (1, 'initial schema')"
            )
            .as_str(),
        )
        .await
        .unwrap();
        conn.execute(data).await.unwrap();
        conn.close().await.unwrap();
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.schema.clone();
        let app = self.app.clone();
        block_on_fresh_runtime(async move {
            let Ok(mut conn) = PgConnection::connect(&url).await else { return };
            end_sessions(&mut conn, &app).await;
            if let Err(e) = conn.execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str()).await {
                eprintln!("could not drop test schema {schema}: {e}");
            }
            let _ = conn.close().await;
        });
    }
}

/// A database that is dropped when the guard is dropped.
pub struct DatabaseGuard {
    pub admin_url: String,
    pub name: String,
    pub url: String,
}

impl DatabaseGuard {
    /// Creates a fresh database on the test server.
    pub async fn create(admin_url: &str) -> Self {
        let name = unique_name("kaiten_testdb");
        let mut conn = PgConnection::connect(admin_url).await.expect("connect to create a database");
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await.expect("create database");
        let _ = conn.close().await;
        let url = with_param(&with_database(admin_url, &name), "application_name", &name);
        Self { admin_url: admin_url.to_owned(), name, url }
    }
}

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        let url = self.admin_url.clone();
        let name = self.name.clone();
        block_on_fresh_runtime(async move {
            let Ok(mut conn) = PgConnection::connect(&url).await else { return };
            if let Err(e) = conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await {
                eprintln!("could not drop test database {name}: {e}");
            }
            let _ = conn.close().await;
        });
    }
}

/// A migrated store on its own schema. Fields drop in order: the store (its pool) first.
pub struct PgTestStore {
    pub store: PgStore,
    pub guard: SchemaGuard,
}

impl Deref for PgTestStore {
    type Target = PgStore;
    fn deref(&self) -> &PgStore {
        &self.store
    }
}

/// A fresh, migrated store on its own schema, or `None` when the PostgreSQL tests are skipped
/// (see [`server`]).
pub async fn pg_store_with(change: impl FnOnce(&mut PgStoreOptions)) -> Option<PgTestStore> {
    let url = server().await?;
    let guard = SchemaGuard::new(&url);
    let mut options = guard.options();
    change(&mut options);
    let store = PgStore::connect_with(options).await.expect("connect to the test server");
    store.migrate().await.expect("migrate");
    Some(PgTestStore { store, guard })
}

/// A fresh, migrated store with default options on its own schema.
pub async fn pg_store() -> Option<PgTestStore> {
    pg_store_with(|_| {}).await
}

/// What the conformance suites run against: a fresh schema on the test server.
pub struct TestStore(PgTestStore);

impl Deref for TestStore {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        &self.0.store
    }
}

impl TestStore {
    /// A fresh, migrated store with `change` applied to its options; `None` when the PostgreSQL
    /// tests are skipped (see [`server`]).
    pub async fn new(change: impl FnOnce(&mut PgStoreOptions)) -> Option<Self> {
        pg_store_with(change).await.map(TestStore)
    }

    /// For the engine suite: a shared handle and the guard keeping the schema alive.
    pub fn shared(self) -> (Arc<dyn Store>, SchemaGuard) {
        let PgTestStore { store, guard } = self.0;
        (Arc::new(store), guard)
    }
}

/// Whether this process runs as root (PgBouncer and PostgreSQL refuse to; they are then run as
/// the `postgres` user).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Whether the store's connection is encrypted; closes the store.
pub async fn uses_tls(store: PgStore) -> bool {
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    store.close().await;
    ssl
}

/// `name` in a directory of `PATH`.
pub fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Several `serve` processes sharing one inbox: `stores` (each with its own pool, as separate
/// processes have) run `workers` claim loops each, claiming a few due entries at a time and
/// finishing them, until no claim returns anything. Pushes `entries` notifications first. Panics
/// unless every entry was claimed exactly once and the inbox ends empty; returns how many entries
/// each store claimed.
pub async fn claim_from_a_shared_inbox(stores: Vec<Arc<dyn Store>>, workers: usize, entries: i64) -> Vec<usize> {
    use kaiten_sync::{EntityKind, InboxResult, Notification};

    let at = |s: i64| kaiten_sync_testkit::fixtures::epoch() + chrono::Duration::seconds(s);
    let notes: Vec<Notification> = (1..=entries)
        .map(|id| Notification { kind: EntityKind::Cards, entity_id: id, parent_id: None, event: "card:update".into() })
        .collect();
    for chunk in notes.chunks(100) {
        stores[0].inbox_push(chunk, at(0), at(0)).await.unwrap();
    }
    let start = Arc::new(tokio::sync::Barrier::new(stores.len() * workers));
    let mut tasks = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for w in 0..workers {
            let (store, start) = (store.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                let worker = format!("store{s}-worker{w}");
                let mut claimed = Vec::new();
                start.wait().await;
                loop {
                    // The lease outlives the test: an entry is never offered twice.
                    let batch = store.inbox_claim(&worker, 5, at(1), at(1_000_000)).await.unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    for e in &batch {
                        assert_eq!(e.claimed_by.as_deref(), Some(worker.as_str()));
                        claimed.push(e.entity_id);
                    }
                    let done: Vec<InboxResult> =
                        batch.iter().map(|e| InboxResult::Done { id: e.id, seq: e.seq, again_at: at(2) }).collect();
                    assert_eq!(store.inbox_finish(&done, at(2)).await.unwrap(), batch.len() as u64);
                }
                (s, claimed)
            }));
        }
    }
    let mut per_store = vec![0; stores.len()];
    let mut seen = std::collections::BTreeMap::new();
    for task in tasks {
        let (s, claimed) = task.await.unwrap();
        per_store[s] += claimed.len();
        for id in claimed {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    let twice: Vec<i64> = seen.iter().filter(|(_, n)| **n > 1).map(|(id, _)| *id).collect();
    assert!(twice.is_empty(), "entries claimed more than once: {twice:?}");
    assert_eq!(seen.len() as i64, entries, "every entry claimed");
    let stats = stores[1].inbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed), (0, 0), "the inbox ends empty");
    per_store
}
