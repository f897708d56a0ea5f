//! A PostgreSQL [`Store`](kaiten_sync::Store) for kaiten-sync, on sqlx: tables in schema `kaiten`
//! by default, `jsonb` raw records, `timestamptz` times, migrations embedded in the crate.
//!
//! ```no_run
//! use kaiten_store_postgres::{LockMode, PgStore, PgStoreOptions};
//! use kaiten_sync::Store;
//!
//! # async fn run() -> Result<(), kaiten_sync::StoreError> {
//! // A direct connection, local or hosted (TLS with rustls: `sslmode=require`, or `verify-full`
//! // with `sslrootcert=/path/to/ca.pem` to check the server's certificate and name).
//! let store = PgStore::connect("postgres://kaiten:secret@db.example.com/mirror?sslmode=verify-full").await?;
//! store.migrate().await?;
//!
//! // Behind a transaction-mode pooler (Supabase port 6543, PgBouncer): keep the statement cache
//! // off (the default: no named prepared statements) and take the sync lock with a lock row,
//! // since a pooler cannot keep a session-level advisory lock.
//! let pooled = PgStore::connect_with(PgStoreOptions {
//!     lock_mode: LockMode::Table,
//!     ..PgStoreOptions::new("postgres://postgres.ref:secret@aws-0-eu-west-1.pooler.supabase.com:6543/postgres")
//! })
//! .await?;
//! # let _ = pooled; Ok(()) }
//! ```
//!
//! Queries like `SELECT id, title, synced_at FROM kaiten.cards ORDER BY synced_at DESC LIMIT 10;`
//! work as written. Each entity table has `id`, the typed columns of
//! [`kaiten_sync::schema::TABLES`] in order, then `raw` (`jsonb`), `synced_at`, `deleted_at`,
//! `seen_sweep` (deletion detection: the last full listing that wrote the row) and `raw_hash`
//! (recognises unchanged records cheaply). A full listing marks the rows it finds unchanged in
//! `sweep_marks` (one row per page: kind, sweep, ids) instead of rewriting them; a row is seen by a
//! sweep when its `seen_sweep` is that sweep or the sweep's marks hold its id.
//!
//! How it keeps the [`Store`](kaiten_sync::Store) contract:
//! - [`apply_page`](kaiten_sync::Store::apply_page) is one transaction holding one call of a
//!   PL/pgSQL function that `migrate` generates from `TABLES` (`kaiten.write_page_cards_<digest>`
//!   and one per table, the digest naming the function's definition): the page travels as typed
//!   arrays (`UNNEST`), records whose stored copy has the same hash are settled without parsing or
//!   locking them, the rest go through `INSERT ... ON CONFLICT DO UPDATE ... WHERE changed AND
//!   not older`; the same statement marks the sweep (rows it writes carry it in `seen_sweep`; the
//!   others get one `sweep_marks` row for the page, so an unchanged record is never rewritten: under
//!   MVCC that would write a new version of the whole row), replaces the tag links of the cards it
//!   wrote (and their members, for cards that carry their member list) and writes the entity
//!   state. The server plans the statement once per session and keeps the plan, even behind a
//!   pooler (planning it costs about as much as running it); the function
//!   plans with sequential scans and hash and merge joins off, so a plan cached while a table was
//!   small stays a primary-key lookup as the table grows. Page transactions commit asynchronously
//!   by default ([`PgStoreOptions::async_commit`]).
//! - Every operation on the pool runs in an explicit transaction and, with the statement cache
//!   off (default), every statement is unnamed, so a transaction-mode pooler keeps each
//!   statement's messages on one server connection (the suites run through PgBouncer in
//!   transaction mode). The startup parameter `extra_float_digits`, which PgBouncer refuses, is
//!   not sent.
//! - [`migrate`](kaiten_sync::Store::migrate) applies the embedded migrations ([`migrate`]) in one
//!   transaction under `pg_advisory_xact_lock`; a database migrated by a newer kaiten-sync is
//!   refused with [`StoreError::Schema`], and a schema never migrated makes every other method
//!   fail with [`StoreError::NotMigrated`]. It also creates this version's page functions when
//!   missing (or changed by hand), so run `migrate` after upgrading kaiten-sync: until then pages
//!   fail with [`StoreError::NotMigrated`]. Other versions' functions are left for processes of
//!   those versions still running.
//! - The sync lock ([`LockMode::Advisory`], default) is a session-level advisory lock on a
//!   dedicated connection: it disappears with the connection when a process dies, and a holder
//!   whose heartbeat is older than `stale_after` has its session ended and the lock taken over.
//!   The `sync_lock` row says who holds it. [`LockMode::Table`] makes that row the lock, for
//!   poolers.
//! - The webhook inbox (`webhook_inbox`): a push is one `INSERT ... ON CONFLICT DO UPDATE`
//!   committed synchronously (an acknowledged delivery survives a server crash); a claim is an
//!   `UPDATE` of rows picked `FOR UPDATE SKIP LOCKED`, so several processes share one inbox and
//!   never hold one entry at once.
//! - Relationships the engine always satisfies (card → board, column, lane; subcolumn → column)
//!   are foreign keys, `DEFERRABLE INITIALLY DEFERRED` ([`PgStoreOptions::foreign_keys`]).
//! - Errors name the problem (server unreachable, authentication, missing database, TLS,
//!   permissions, schema version) and never contain the password of the URL; `Debug` of the
//!   store and of its options hides it too.

mod error;
mod inbox;
mod lock;
pub mod migrate;
mod sql;
mod store;
mod values;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kaiten_sync::StoreError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Transaction};

pub use error::redact_url;
use error::{connect_error, query_error, Ctx, Secrets, BACKEND};
use sql::Statements;

/// How [`PgStore`] takes the one-sync-at-a-time lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LockMode {
    /// A session-level `pg_try_advisory_lock` on a dedicated connection (default). Released by
    /// Postgres when the connection closes, so a killed process never leaves a stale lock. Needs a
    /// direct (or session-mode pooled) connection: a transaction-mode pooler cannot keep it.
    #[default]
    Advisory,
    /// A row in `sync_lock` with a heartbeat, taken over when its holder has not refreshed it for
    /// `stale_after`. Works through any pooler. Every process syncing into one schema must use
    /// the same mode.
    Table,
}

/// Connection settings of a [`PgStore`].
///
/// `Debug` never prints the password of `url`.
#[derive(Clone)]
pub struct PgStoreOptions {
    /// `postgres://user:password@host:port/database?sslmode=...` (`sslmode=require` or
    /// `verify-full` with `sslrootcert=...` for hosted Postgres; TLS is rustls).
    pub url: String,
    /// Schema holding the tables (default `kaiten`): lowercase letters, digits and `_`.
    pub schema: String,
    /// Pool size (default 5). The advisory lock uses one more, dedicated connection.
    pub max_connections: u32,
    /// Prepared statements cached per connection (default 0: unnamed statements only, which
    /// transaction-mode poolers such as PgBouncer or Supabase's port 6543 require). Raise it on a
    /// direct connection to save a round trip per statement.
    pub statement_cache_capacity: usize,
    /// How the sync lock is taken (default [`LockMode::Advisory`]).
    pub lock_mode: LockMode,
    /// How long to wait for the server when connecting (default 10 s).
    pub connect_timeout: Duration,
    /// Whether [`Store::migrate`](kaiten_sync::Store::migrate) makes the relationships real foreign
    /// keys (default `true`): card → board, column, lane; subcolumn → column (see [`migrate::FOREIGN_KEYS`]). They are `DEFERRABLE INITIALLY DEFERRED`, so the
    /// order of writes inside a transaction does not matter, but a page whose parent is stored
    /// neither before nor in the same transaction is refused. The kaiten-sync engine always
    /// stores parents first (placeholders when Kaiten does not list them); turn this off when
    /// other code writes children without parents. `migrate` adds or drops the constraints to match.
    pub foreign_keys: bool,
    /// Whether page transactions commit without waiting for the WAL flush (`SET LOCAL
    /// synchronous_commit TO off`, default `true`). A page and its state still commit together
    /// and in order; a crash of the *server* may lose the last fraction of a second of pages,
    /// which the next run fetches again (the cursor is lost with them). Every other write (run
    /// log, entity states, lock, migrations) is synchronous and flushes the pages before it, so a
    /// run recorded as finished has all its pages on disk. Turn off to make each page durable on
    /// its own (one WAL flush per page, a few milliseconds on typical disks).
    pub async_commit: bool,
    /// Whether [`Store::migrate`](kaiten_sync::Store::migrate) enables row-level security on every
    /// table of the schema (default [`RowLevelSecurity::Auto`]: when the database has Supabase's
    /// `anon` role). See [`RowLevelSecurity`].
    pub row_level_security: RowLevelSecurity,
}

/// Row-level security on the mirror's tables, for databases whose tables an HTTP API may expose
/// (Supabase's Data API serves the `anon` and `authenticated` roles whatever schema is exposed).
///
/// Enabled with **no policy**: roles subject to it (`anon`, `authenticated`, any other non-owner
/// without `BYPASSRLS`) read no row and write none, whatever they were granted; the tables' owner
/// (the role `migrate` runs as, which the sync uses) and roles with `BYPASSRLS` (Supabase's
/// `service_role`, superusers) keep full access. To open a table to the API, write a policy
/// (`CREATE POLICY ... ON kaiten.cards FOR SELECT TO authenticated USING (...)`).
///
/// `migrate` only ever enables it, idempotently, under its migration lock; it never disables it
/// (an operator's policies stay in force). It refuses to enable it on a table the migrating role
/// does not own (unless that role bypasses RLS): the sync, running as that role, could then no
/// longer write the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RowLevelSecurity {
    /// Enabled when a role named `anon` exists (a Supabase database); otherwise left as it is.
    #[default]
    Auto,
    /// Always enabled (`--enable-rls` in the CLI).
    Enable,
    /// Left as it is.
    Leave,
}

impl PgStoreOptions {
    /// Defaults for a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..Self::default() }
    }

    /// Checks the options without connecting, as [`PgStore::connect_with`] does first: the schema
    /// name, a connect timeout longer than zero, and a URL that parses, names a database (without
    /// one the server would pick a database named after the user) and names certificate files that
    /// exist. Errors quote the URL without its password.
    pub fn check(&self) -> Result<(), StoreError> {
        self.connect_options().map(|_| ())
    }

    /// The driver's options, and how many query parameters of the URL it does not support (left
    /// out: sqlx would log each with its value).
    fn connect_options(&self) -> Result<(PgConnectOptions, usize), StoreError> {
        validate_schema_name(&self.schema)?;
        let invalid = |message: String| StoreError::Unavailable { backend: BACKEND, message, source: None };
        if self.url.trim().is_empty() {
            return Err(invalid("no database URL given (expected postgres://user:password@host:port/database)".into()));
        }
        let target = redact_url(&self.url);
        if self.connect_timeout.is_zero() {
            return Err(invalid(format!("{target}: the connect timeout must be longer than zero")));
        }
        let (url, ignored) = without_unsupported_parameters(&self.url);
        let connect_options =
            PgConnectOptions::from_str(&url).map_err(|e| connect_error(e, &target, &Secrets::from_url(&self.url)))?;
        if connect_options.get_database().is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "invalid database URL {target}: it names no database (without one the server picks a database \
                 named after the user); add it after the host: postgres://user:password@host:5432/DATABASE"
            )));
        }
        check_tls_files(&url, &target)?;
        Ok((connect_options, ignored))
    }
}

impl Default for PgStoreOptions {
    /// Defaults with an empty URL (set `url` before connecting).
    fn default() -> Self {
        Self {
            url: String::new(),
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: 5,
            statement_cache_capacity: 0,
            lock_mode: LockMode::Advisory,
            connect_timeout: Duration::from_secs(10),
            foreign_keys: true,
            async_commit: true,
            row_level_security: RowLevelSecurity::Auto,
        }
    }
}

impl fmt::Debug for PgStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStoreOptions")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .field("lock_mode", &self.lock_mode)
            .field("connect_timeout", &self.connect_timeout)
            .field("foreign_keys", &self.foreign_keys)
            .field("async_commit", &self.async_commit)
            .field("row_level_security", &self.row_level_security)
            .finish()
    }
}

/// The default schema name.
pub const DEFAULT_SCHEMA: &str = "kaiten";

/// Checks a schema name: 1 to 63 characters, lowercase ASCII letters, digits and `_`, not
/// starting with a digit (so that users can write `kaiten.cards` without quotes).
pub fn validate_schema_name(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit()
        && !schema.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(StoreError::schema(format!(
            "invalid schema name {schema:?}: use 1 to 63 lowercase letters, digits and underscores, not starting \
             with a digit or `pg_`"
        )))
    }
}

/// A [`kaiten_sync::Store`] on PostgreSQL. Cheap to clone (clones share the pool and the lock).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    schema: String,
    qschema: String,
    sql: Statements,
    /// The webhook inbox's statements.
    inbox: inbox::InboxSql,
    persistent: bool,
    lock_mode: LockMode,
    foreign_keys: bool,
    async_commit: bool,
    row_level_security: RowLevelSecurity,
    lock_key: i64,
    migrate_key: i64,
    /// Dedicated connections holding the advisory lock, by holder.
    lock_conns: tokio::sync::Mutex<HashMap<String, PgConnection>>,
    /// By kind: the sweep whose last page found none of its rows stored (a first listing into an
    /// empty table), so that the next pages of that sweep skip looking (see `apply_page_once`).
    sweeps_into_empty: std::sync::Mutex<HashMap<kaiten_sync::EntityKind, i64>>,
    url: Option<String>,
    secrets: Secrets,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.inner.url.as_deref().unwrap_or("(from pool)"))
            .field("schema", &self.inner.schema)
            .field("lock_mode", &self.inner.lock_mode)
            .field("prepared_statements", &self.inner.persistent)
            .field("foreign_keys", &self.inner.foreign_keys)
            .field("pool_size", &self.inner.pool.size())
            .finish()
    }
}

impl PgStore {
    /// Connects with default options (schema `kaiten`). The password of `url` never appears in
    /// errors or `Debug` output.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        Self::connect_with(PgStoreOptions::new(url)).await
    }

    /// Connects with options. Opens one connection to check the server, the credentials and TLS,
    /// and fails with [`StoreError::Unavailable`] saying what is wrong.
    pub async fn connect_with(options: PgStoreOptions) -> Result<PgStore, StoreError> {
        let (mut connect_options, ignored) = options.connect_options()?;
        let secrets = Secrets::from_url(&options.url);
        let target = redact_url(&options.url);
        if ignored > 0 {
            tracing::warn!(
                ignored,
                "ignoring query parameters of the database URL that the Postgres driver does not support (it \
                 knows sslmode, sslrootcert, sslcert, sslkey, host, hostaddr, port, dbname, user, password, \
                 application_name, options)"
            );
        }
        connect_options = connect_options.statement_cache_capacity(options.statement_cache_capacity);
        // sqlx would send `extra_float_digits` at startup, which PgBouncer refuses ("unsupported
        // startup parameter") unless told to ignore it; the store reads no text-format floats.
        connect_options = connect_options.extra_float_digits(None);
        if connect_options.get_application_name().is_none() {
            connect_options = connect_options.application_name("kaiten-sync");
        }
        if options.lock_mode == LockMode::Advisory && connect_options.get_port() == 6543 {
            tracing::warn!(
                url = %target,
                "port 6543 is usually a transaction-mode pooler (Supabase): the advisory sync lock needs a session; \
                 use LockMode::Table there"
            );
        }
        let timeout = options.connect_timeout.max(Duration::from_millis(100));
        match tokio::time::timeout(timeout, PgConnection::connect_with(&connect_options)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(connect_error(e, &target, &secrets)),
            Err(_) => {
                return Err(StoreError::Unavailable {
                    backend: BACKEND,
                    message: format!(
                        "{target}: no answer within {timeout:?} (is the host reachable, and is this a PostgreSQL \
                         server?)"
                    ),
                    source: None,
                })
            }
        }
        // Connections are checked when they return to the pool; an idle one that broke since
        // (server restart) fails at BEGIN, which `begin` retries on another connection.
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(timeout.max(Duration::from_secs(30)))
            .test_before_acquire(false)
            .connect_lazy_with(connect_options);
        let settings = Settings {
            persistent: options.statement_cache_capacity > 0,
            lock_mode: options.lock_mode,
            foreign_keys: options.foreign_keys,
            async_commit: options.async_commit,
            row_level_security: options.row_level_security,
        };
        Ok(Self::build(pool, options.schema, settings, Some(target), secrets))
    }

    /// A store on an existing pool: unnamed statements only (safe behind poolers), the advisory
    /// lock and foreign keys; see [`PgStore::with_lock_mode`], [`PgStore::with_prepared_statements`]
    /// and [`PgStore::with_foreign_keys`].
    pub fn from_pool(pool: PgPool, schema: &str) -> Result<PgStore, StoreError> {
        validate_schema_name(schema)?;
        let settings = Settings {
            persistent: false,
            lock_mode: LockMode::Advisory,
            foreign_keys: true,
            async_commit: true,
            row_level_security: RowLevelSecurity::Auto,
        };
        Ok(Self::build(pool, schema.to_owned(), settings, None, Secrets::default()))
    }

    /// The same store with another lock mode (call before taking locks: locks held by `self`
    /// are not carried over).
    pub fn with_lock_mode(self, lock_mode: LockMode) -> PgStore {
        self.rebuild(|s| s.lock_mode = lock_mode)
    }

    /// The same store using named prepared statements (only when the pool's connections cache
    /// statements and no transaction-mode pooler is in between).
    pub fn with_prepared_statements(self, prepared: bool) -> PgStore {
        self.rebuild(|s| s.persistent = prepared)
    }

    /// The same store with foreign keys on or off (see [`PgStoreOptions::foreign_keys`]); applied
    /// by the next [`Store::migrate`](kaiten_sync::Store::migrate).
    pub fn with_foreign_keys(self, foreign_keys: bool) -> PgStore {
        self.rebuild(|s| s.foreign_keys = foreign_keys)
    }

    /// The same store with page commits waiting for the WAL flush or not (see
    /// [`PgStoreOptions::async_commit`]).
    pub fn with_async_commit(self, async_commit: bool) -> PgStore {
        self.rebuild(|s| s.async_commit = async_commit)
    }

    /// The same store with another row-level security setting (see [`RowLevelSecurity`]); applied
    /// by the next [`Store::migrate`](kaiten_sync::Store::migrate).
    pub fn with_row_level_security(self, row_level_security: RowLevelSecurity) -> PgStore {
        self.rebuild(|s| s.row_level_security = row_level_security)
    }

    fn rebuild(self, change: impl FnOnce(&mut Settings)) -> PgStore {
        let inner = &self.inner;
        let mut settings = Settings {
            persistent: inner.persistent,
            lock_mode: inner.lock_mode,
            foreign_keys: inner.foreign_keys,
            async_commit: inner.async_commit,
            row_level_security: inner.row_level_security,
        };
        change(&mut settings);
        Self::build(inner.pool.clone(), inner.schema.clone(), settings, inner.url.clone(), inner.secrets.clone())
    }

    fn build(pool: PgPool, schema: String, settings: Settings, url: Option<String>, secrets: Secrets) -> PgStore {
        let qschema = sql::ident(&schema);
        PgStore {
            inner: Arc::new(Inner {
                sql: Statements::new(&qschema),
                inbox: inbox::InboxSql::new(&qschema),
                lock_key: key(&format!("kaiten-sync:sync-lock:{schema}")),
                migrate_key: key(&format!("kaiten-sync:migrate:{schema}")),
                pool,
                schema,
                qschema,
                persistent: settings.persistent,
                lock_mode: settings.lock_mode,
                foreign_keys: settings.foreign_keys,
                async_commit: settings.async_commit,
                row_level_security: settings.row_level_security,
                lock_conns: tokio::sync::Mutex::new(HashMap::new()),
                sweeps_into_empty: std::sync::Mutex::new(HashMap::new()),
                url,
                secrets,
            }),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The lock mode.
    pub fn lock_mode(&self) -> LockMode {
        self.inner.lock_mode
    }

    /// The advisory lock key of the sync lock (derived from the schema name), for operators who
    /// look at `pg_locks`.
    pub fn advisory_lock_key(&self) -> i64 {
        self.inner.lock_key
    }

    /// The schema version the database is at (0 when not migrated).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let mut tx = self.begin("read the schema version").await?;
        let exists: bool = self
            .query("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{}.schema_migrations", self.inner.qschema))
            .fetch_one(&mut *tx)
            .await
            .map(|r| sqlx::Row::get(&r, 0))
            .map_err(|e| self.err(e, Ctx::new("read the schema version")))?;
        if !exists {
            return Ok(0);
        }
        let version: i64 = self
            .query(&format!("SELECT COALESCE(max(version), 0) FROM {}.schema_migrations", self.inner.qschema))
            .fetch_one(&mut *tx)
            .await
            .map(|r| sqlx::Row::get(&r, 0))
            .map_err(|e| self.err(e, Ctx::new("read the schema version")))?;
        tx.commit().await.map_err(|e| self.err(e, Ctx::new("read the schema version")))?;
        Ok(version)
    }

    /// Closes the pool and the lock connections (releasing advisory locks).
    pub async fn close(&self) {
        let conns: Vec<PgConnection> = self.inner.lock_conns.lock().await.drain().map(|(_, c)| c).collect();
        for conn in conns {
            let _ = conn.close().await;
        }
        self.inner.pool.close().await;
    }

    pub(crate) fn query<'q>(&self, sql: &'q str) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(sql).persistent(self.inner.persistent)
    }

    pub(crate) fn err(&self, e: sqlx::Error, ctx: Ctx<'_>) -> StoreError {
        query_error(e, ctx, &self.inner.secrets)
    }

    pub(crate) async fn begin(&self, what: &str) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.begin_with(None).await.map_err(|e| self.err(e, Ctx::new(what)))
    }

    /// A pooled connection known to be alive (pinged), for the advisory lock's session.
    pub(crate) async fn acquire_live(&self) -> Result<sqlx::pool::PoolConnection<Postgres>, sqlx::Error> {
        let attempts = self.inner.pool.options().get_max_connections() + 1;
        let mut attempt = 1;
        loop {
            let mut conn = self.inner.pool.acquire().await?;
            match conn.ping().await {
                Ok(()) => return Ok(conn),
                Err(e) if attempt < attempts && connection_lost(&e) => {
                    conn.close_on_drop();
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Begins a transaction (with a custom `BEGIN` statement), retrying on another connection when
    /// an idle pooled connection turns out to be broken: nothing has happened yet at that point.
    pub(crate) async fn begin_with(
        &self,
        statement: Option<&'static str>,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let attempts = self.inner.pool.options().get_max_connections() + 1;
        let mut attempt = 1;
        loop {
            let result = match statement {
                Some(statement) => self.inner.pool.begin_with(statement).await,
                None => self.inner.pool.begin().await,
            };
            match result {
                Err(e) if attempt < attempts && connection_lost(&e) => {
                    tracing::debug!(attempt, "a pooled connection was broken ({e}); trying another");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Query parameters of a connection URL that sqlx understands (it logs any other one with its
/// value, which may be a secret such as libpq's `sslpassword`).
const SUPPORTED_PARAMETERS: [&str; 18] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// The URL without the query parameters sqlx does not support (sqlx would log each with its value,
/// such as libpq's `sslpassword=...`), and how many were left out.
fn without_unsupported_parameters(url: &str) -> (String, usize) {
    let Ok(mut parsed) = url::Url::parse(url) else { return (url.to_owned(), 0) };
    let supported = |key: &str| SUPPORTED_PARAMETERS.contains(&key) || key.starts_with("options[");
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let ignored = pairs.iter().filter(|(k, _)| !supported(k)).count();
    if ignored == 0 {
        return (url.to_owned(), 0);
    }
    let kept: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| supported(k)).collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    (parsed.into(), ignored)
}

/// Fails clearly when a certificate or key file the URL names (`sslrootcert`, `sslcert`, `sslkey`)
/// does not exist, instead of the connection's bare "file not found".
fn check_tls_files(url: &str, target: &str) -> Result<(), StoreError> {
    let Ok(parsed) = url::Url::parse(url) else { return Ok(()) };
    for (key, value) in parsed.query_pairs() {
        let names_a_file = matches!(
            key.as_ref(),
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" | "sslcert" | "ssl-cert" | "sslkey" | "ssl-key"
        );
        if names_a_file && !value.starts_with("-----BEGIN") && std::fs::metadata(value.as_ref()).is_err() {
            return Err(StoreError::Unavailable {
                backend: BACKEND,
                message: format!("{target}: the {key} file {value} does not exist or cannot be read"),
                source: None,
            });
        }
    }
    Ok(())
}

/// Whether an error says the connection is gone (closed socket, or the server ended the session:
/// `57P01` admin shutdown, `57P02` crash, `08xxx` connection exceptions).
pub(crate) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        e => error::sqlstate(e).is_some_and(|c| c.starts_with("08") || c == "57P01" || c == "57P02"),
    }
}

/// What a store does besides where it connects.
struct Settings {
    persistent: bool,
    lock_mode: LockMode,
    foreign_keys: bool,
    async_commit: bool,
    row_level_security: RowLevelSecurity,
}

/// A stable 64-bit key for an advisory lock (FNV-1a).
fn key(text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        for good in ["kaiten", "kaiten_test_1", "_x"] {
            validate_schema_name(good).unwrap();
        }
        for bad in ["", "Kaiten", "1abc", "a-b", "a.b", "x\"; drop", "pg_kaiten", &"a".repeat(64)] {
            let err = validate_schema_name(bad).unwrap_err();
            assert!(err.to_string().contains("invalid schema name"), "{bad}: {err}");
        }
    }

    #[test]
    fn unsupported_parameters_are_dropped_before_the_driver_sees_them() {
        assert_eq!(
            without_unsupported_parameters("postgres://u:p@h/db?sslmode=require&sslpassword=s3cret&Password=x"),
            ("postgres://u:p@h/db?sslmode=require".to_owned(), 2)
        );
        assert_eq!(
            without_unsupported_parameters("postgres://u:p@h/db?sslpassword=s3cret"),
            ("postgres://u:p@h/db".to_owned(), 1)
        );
        let kept = "postgres://u:p@h/db?sslmode=require&options[search_path]=x&application_name=a";
        assert_eq!(without_unsupported_parameters(kept), (kept.to_owned(), 0));
        assert_eq!(without_unsupported_parameters("postgres://u:p/w@h/db"), ("postgres://u:p/w@h/db".to_owned(), 0));
    }

    #[test]
    fn options_that_make_no_sense_are_refused_without_connecting() {
        let check = |options: PgStoreOptions| options.check().unwrap_err().to_string();
        let err = check(PgStoreOptions { schema: "Bad-Name".into(), ..PgStoreOptions::new("postgres://h/db") });
        assert!(err.contains("invalid schema name"), "{err}");
        let err =
            check(PgStoreOptions { connect_timeout: Duration::ZERO, ..PgStoreOptions::new("postgres://u:pw1@h/db") });
        assert!(err.contains("connect timeout must be longer than zero") && !err.contains("pw1"), "{err}");
        let err = check(PgStoreOptions::new("postgres://postgres:Pw/Secret123@127.0.0.1:5432/x"));
        assert!(err.contains("invalid database URL postgres://postgres:***@127.0.0.1:5432/x"), "{err}");
        assert!(!err.contains("Secret123"), "{err}");
        assert!(check(PgStoreOptions::new("  ")).contains("no database URL given"));
        PgStoreOptions::new("postgres://u:pw@h:5432/db?sslmode=disable").check().unwrap();
        PgStoreOptions::new("postgres://u:pw@h:5432?dbname=db").check().unwrap();
    }

    #[tokio::test]
    async fn a_url_without_a_database_is_refused_before_connecting() {
        if std::env::var_os("PGDATABASE").is_some() {
            return; // the environment names a database for such URLs
        }
        for url in [
            "postgres://",
            "postgres://u:pw@127.0.0.1:1",
            "postgresql://u:pw@127.0.0.1:1/",
            "postgres://h?sslmode=disable",
        ] {
            let err = PgStore::connect(url).await.unwrap_err().to_string();
            assert!(err.contains("names no database") && err.contains("invalid database URL"), "{url}: {err}");
            assert!(PgStoreOptions::new(url).check().is_err(), "{url}");
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn options_debug_hides_the_password() {
        let options = PgStoreOptions::new("postgres://u:hunter22@h/db");
        let text = format!("{options:?}");
        assert!(!text.contains("hunter22") && text.contains("u:***@h"), "{text}");
    }

    #[test]
    fn lock_keys_differ_per_schema_and_purpose() {
        assert_ne!(key("kaiten-sync:sync-lock:kaiten"), key("kaiten-sync:sync-lock:other"));
        assert_ne!(key("kaiten-sync:sync-lock:kaiten"), key("kaiten-sync:migrate:kaiten"));
        assert_eq!(key("a"), key("a"));
    }
}
