//! A [`Store`] on SQLite (rusqlite with a bundled SQLite): the embedded default of kaiten-sync.
//!
//! One file holds the whole mirror: a table per entity kind with typed columns (ids, titles,
//! parents, timestamps as RFC 3339 text) plus the raw JSON, `card_tags`, `card_members`, `sync_metadata`,
//! `sync_logs`, `sync_lock`, `webhook_inbox` and `sweep_marks` (which unchanged rows a full listing saw,
//! so that they are not rewritten to say so). A first full listing into an empty `cards` table builds
//! the card indexes once at its end (`deferred_indexes`) and appends its tag links to
//! `card_tags_pending`, moved into `card_tags` then. New databases get 16 KiB pages
//! ([`SqliteOptions::page_size`]). The database runs in WAL mode, so readers (a BI tool, the
//! `sqlite3` shell) never block the sync and the sync never blocks them.
//!
//! ```
//! use std::sync::Arc;
//!
//! use kaiten_store_sqlite::SqliteStore;
//! use kaiten_sync::{EntityKind, Store};
//!
//! # fn main() -> Result<(), kaiten_sync::StoreError> {
//! # let rt = tokio::runtime::Runtime::new().unwrap();
//! # rt.block_on(async {
//! // A file path, `sqlite://relative.db`, `sqlite:///abs/path.db` or `sqlite::memory:`.
//! let store = Arc::new(SqliteStore::open("sqlite::memory:")?);
//! store.migrate().await?;
//! let store: Arc<dyn Store> = store; // what the engine holds
//! assert!(store.ids(EntityKind::Cards, false).await?.is_empty());
//! # Ok(())
//! # })
//! # }
//! ```
//!
//! # How it runs
//! Every statement runs on one dedicated writer thread that owns the store's connection; async
//! methods send it a job and await the answer, so no tokio worker ever blocks on SQLite (SQLite
//! serializes writers anyway). Dropping the last handle ends the thread once the queued jobs are
//! done. A future that is dropped does not cancel its job: a page either commits whole or not at
//! all.
//!
//! Webhook inbox pushes ([`Store::inbox_push`]) answer a delivery that waits for them, so they
//! jump the queue: the writer takes every push queued at that moment before the next queued job
//! (a push waits for at most the job running and one more), and commits them in one transaction,
//! each under its own savepoint (one commit for a burst; a push that fails fails alone). A
//! committed push survives the process being killed; like every commit of this store
//! (`synchronous = NORMAL` in WAL mode), not necessarily a power loss or an operating system crash
//! right after it.
//!
//! # Schema
//! The tables mirror [`kaiten_sync::schema::TABLES`] and are created by embedded migrations
//! ([`MIGRATIONS`]) that [`Store::migrate`] applies in one transaction, recording them in
//! `schema_migrations`. No foreign keys are declared (and `foreign_keys` is off): the mirror must
//! never refuse a record whose parent is not stored yet, and rows are never removed, only marked
//! with `deleted_at`. Timestamps are stored as `2025-01-01T00:00:05.000Z`, so a query such as
//! `SELECT id, title, synced_at FROM cards ORDER BY synced_at DESC LIMIT 10` sorts by time (a value
//! with sub-millisecond precision, such as a `synced_at` taken from the clock, keeps 6 or 9
//! fraction digits so that it reads back exactly; SQLite's date functions accept both).
//!
//! # Writes
//! [`Store::apply_page`] reads what is stored for the page's ids with one statement, applies the
//! reference rules of [`kaiten_sync::MemoryStore`] (newer `updated`, then `version`, wins;
//! identical records are not rewritten), and writes only new and changed rows, setting only the
//! columns that changed so that unchanged indexed columns cost nothing; all in one `IMMEDIATE`
//! transaction together with the page's entity state. WAL checkpoints (copying committed pages
//! back into the database file, with two fsyncs) run on a second connection of the store's own,
//! on a thread of their own, every thousand or so changed rows, so that no commit waits for them.
//! [`SqliteStore::with_connection`] runs queries of your own on the store's connection.
//!
//! `cards` keeps rows in the order they are first written (a rowid of its own, `id` a unique
//! column: migration 7), so that a listing in `updated` order appends rows instead of splitting
//! pages all over the table; and a full listing into an empty `cards` table (a first sync) sets
//! its eight secondary indexes aside and builds each once when the listing ends (or at the next
//! [`Store::migrate`], should it be killed: migration 6). A first sync writes about 2.3–2.9× the
//! size of the database it leaves (the write-ahead log, then the database file: 2× is the floor
//! of WAL mode), where it wrote 7–15× before (`BENCHMARKS.md`).
//!
//! # Several processes
//! Two processes may share one file: the sync lock is a row of `sync_lock` taken in an
//! `IMMEDIATE` transaction, and a writer that finds the database locked waits up to the busy
//! timeout ([`SqliteOptions::busy_timeout`], 5 s by default) before failing with
//! [`StoreError::Busy`]. A lock row outlives a killed process: one whose holder names this host
//! and a process that no longer exists ([`kaiten_sync::holder::holder_is_gone`]) is taken over at
//! once, any other one when its heartbeat is older than the stale timeout.

mod error;
mod inbox;
mod migrations;
mod ops;
mod sql;

use std::collections::VecDeque;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kaiten_sync::{
    EntityKind, EntityState, InboxEntry, InboxResult, InboxStats, LockAttempt, Notification, Page, PageOutcome,
    RunRecord, Scope, Store, StoreError, StoredRecord, TableCount,
};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::error::{db_err, open_err, BACKEND};
use crate::inbox::PreparedPush;
pub use crate::migrations::{latest_version, Migration, MIGRATIONS};
use crate::ops::PreparedPage;

/// The rusqlite crate this store is built on (for [`SqliteStore::with_connection`]).
pub use rusqlite;

/// How a [`SqliteStore`] opens its database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// How long a statement waits for another connection's lock before failing with
    /// [`StoreError::Busy`]. Default 5 s.
    pub busy_timeout: Duration,
    /// Size of SQLite's page cache in KiB. Default 16 MiB.
    pub cache_size_kib: u32,
    /// The page size of a database this store creates, in bytes: a power of two from 512 to 65536.
    /// Default 16384. An existing database keeps the page size it was created with.
    ///
    /// A card row is about 2 KB (its JSON and typed columns). With SQLite's default of 4096, a page
    /// holds one such row and half of it stays empty: 100,000 cards took 377 MB, and a full sync
    /// spent a fifth of its time reading the table back to build the card indexes. With 16 KiB
    /// pages, seven rows share a page: 230 MB, and the same sync runs about a third faster
    /// (`BENCHMARKS.md`).
    pub page_size: u32,
}

/// [`SqliteOptions::page_size`] by default.
pub const DEFAULT_PAGE_SIZE: u32 = 16 * 1024;

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { busy_timeout: Duration::from_secs(5), cache_size_kib: 16 * 1024, page_size: DEFAULT_PAGE_SIZE }
    }
}

impl SqliteOptions {
    /// Sets the busy timeout.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Sets the page cache size in KiB.
    pub fn cache_size_kib(mut self, kib: u32) -> Self {
        self.cache_size_kib = kib;
        self
    }

    /// Sets the page size of a database this store creates (see [`SqliteOptions::page_size`]).
    pub fn page_size(mut self, bytes: u32) -> Self {
        self.page_size = bytes;
        self
    }
}

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Memory,
    File(PathBuf),
}

impl Location {
    /// Parses a file path or a `sqlite:` URL.
    fn parse(target: &Path) -> Result<Self, StoreError> {
        let Some(text) = target.to_str() else { return Ok(Location::File(target.to_path_buf())) };
        let rest = match text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
            // `sqlite://file.db?mode=rwc`: the query part is for other drivers; ignore it.
            Some(rest) => rest.split_once('?').map_or(rest, |(path, _)| path),
            None => text,
        };
        match rest {
            ":memory:" => Ok(Location::Memory),
            "" => Err(StoreError::Unavailable {
                backend: BACKEND,
                message: format!(
                    "{:?} names no SQLite database file (expected a path, sqlite://file.db or sqlite::memory:)",
                    kaiten_sync::kaiten_client::redact_url(text)
                ),
                source: None,
            }),
            path => Ok(Location::File(PathBuf::from(path))),
        }
    }

    fn display(&self) -> String {
        match self {
            Location::Memory => ":memory:".to_owned(),
            Location::File(path) => path.display().to_string(),
        }
    }
}

/// An operation on the writer thread's connection.
type RunJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// What the writer thread runs.
enum Job {
    /// Any operation, in the order sent.
    Run(RunJob),
    /// A webhook inbox push: before queued `Run` jobs, grouped with the pushes queued with it.
    Push(PreparedPush, oneshot::Sender<Result<(), StoreError>>),
}

/// A [`Store`] on one SQLite database file (or an in-memory database).
///
/// `Send + Sync`; share it as `Arc<SqliteStore>` or `Arc<dyn Store>`.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    location: String,
    options: SqliteOptions,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .field("busy_timeout", &self.options.busy_timeout)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating the file if needed, but not its directory) the database at a file path,
    /// `sqlite://relative.db`, `sqlite:///abs/path.db`, or `sqlite::memory:`, with default
    /// [`SqliteOptions`]. Call [`Store::migrate`] before anything else on a new database.
    ///
    /// Fails with [`StoreError::Unavailable`] naming the path when the file cannot be opened (its
    /// directory does not exist, it is not a SQLite database, ...).
    pub fn open(target: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(target, SqliteOptions::default())
    }

    /// A fresh private in-memory database (gone when the store is dropped).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::open(":memory:")
    }

    /// Like [`SqliteStore::open`], with options.
    pub fn open_with(target: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let location = Location::parse(target.as_ref())?;
        let shown = location.display();
        if !(512..=65536).contains(&options.page_size) || !options.page_size.is_power_of_two() {
            return Err(StoreError::Unavailable {
                backend: BACKEND,
                message: format!(
                    "cannot open SQLite database {shown}: page size {} is not a power of two from 512 to 65536",
                    options.page_size
                ),
                source: None,
            });
        }
        let conn = match &location {
            Location::Memory => Connection::open_in_memory().map_err(|e| open_err(&shown, e))?,
            Location::File(path) => {
                let unavailable = |message: String| StoreError::Unavailable {
                    backend: BACKEND,
                    message: format!("cannot open SQLite database {shown}: {message}"),
                    source: None,
                };
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if !dir.is_dir() {
                        return Err(unavailable(format!("directory {} does not exist", dir.display())));
                    }
                }
                if path.is_dir() {
                    return Err(unavailable("it is a directory".into()));
                }
                let flags =
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                Connection::open_with_flags(path, flags).map_err(|e| open_err(&shown, e))?
            }
        };
        configure(&conn, &location, &options).map_err(|e| open_err(&shown, e))?;
        let no_thread = |what: &str, e: std::io::Error| StoreError::Unavailable {
            backend: BACKEND,
            message: format!("cannot start the SQLite {what} thread for {shown}"),
            source: Some(Box::new(e)),
        };
        // A file in WAL mode gets a checkpointer: a second connection, on a thread of its own.
        let checkpoints = match &location {
            Location::File(path) => {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let second = Connection::open_with_flags(path, flags).map_err(|e| open_err(&shown, e))?;
                second.busy_timeout(options.busy_timeout).map_err(|e| open_err(&shown, e))?;
                let (signal, signals) = mpsc::sync_channel::<()>(1);
                std::thread::Builder::new()
                    .name("kaiten-sqlite-checkpoint".into())
                    .spawn(move || checkpointer(second, signals))
                    .map_err(|e| no_thread("checkpoint", e))?;
                Some(signal)
            }
            Location::Memory => None,
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kaiten-sqlite".into())
            .spawn(move || writer(conn, queue, checkpoints))
            .map_err(|e| no_thread("writer", e))?;
        tracing::debug!(location = %shown, "opened SQLite store");
        Ok(Self { jobs, location: shown, options })
    }

    /// The database file (`:memory:` for an in-memory database).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.options
    }

    /// The highest applied migration, `None` for a database that was never migrated.
    pub async fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        self.call(|conn| migrations::applied_version(conn)).await
    }

    /// Runs `f` with the store's connection on its writer thread: for queries of your own
    /// (reports, checks) without opening a second connection. Errors map like the store's own.
    pub async fn with_connection<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.call(move |conn| f(conn).map_err(db_err)).await
    }

    /// Sends a job to the writer thread and awaits its answer.
    async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job::Run(Box::new(move |conn| {
            let _ = reply.send(f(conn));
        }));
        let lost = || StoreError::Backend {
            backend: BACKEND,
            message: format!("a SQLite operation on {} panicked; nothing of it was committed", self.location),
            source: None,
        };
        self.jobs.send(job).map_err(|_| lost())?;
        answer.await.map_err(|_| lost())?
    }

    /// Sends a webhook inbox push to the writer thread (ahead of queued jobs) and awaits its commit.
    async fn push(&self, push: PreparedPush) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let lost = || StoreError::Backend {
            backend: BACKEND,
            message: format!("a SQLite inbox push on {} panicked; nothing of it was committed", self.location),
            source: None,
        };
        self.jobs.send(Job::Push(push, reply)).map_err(|_| lost())?;
        answer.await.map_err(|_| lost())?
    }
}

/// Sets up a new connection: busy timeout, WAL, synchronous=NORMAL, no foreign keys.
fn configure(conn: &Connection, location: &Location, options: &SqliteOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(options.busy_timeout)?;
    // Ten tables × a handful of statements, plus one UPDATE per set of changed columns.
    conn.set_prepared_statement_cache_capacity(256);
    // Takes effect only when this connection creates the database file; an existing one keeps its
    // page size.
    conn.execute_batch(&format!("PRAGMA page_size = {}", options.page_size))?;
    // Reads the header: a file that is not a database fails here, with its path.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
    if let Location::File(path) = location {
        // Switching to WAL takes an exclusive lock for a moment and does not wait on the busy
        // handler; retry while another process holds the file, up to the busy timeout.
        let started = Instant::now();
        let mode: String = loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Err(e) if is_busy(&e) && started.elapsed() < options.busy_timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "SQLite did not switch to WAL mode");
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}"
        ))?;
    }
    // Declared decision: no foreign keys (see the crate docs and migrations/0001_initial.sql).
    conn.execute_batch("PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY")?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{}", options.cache_size_kib))?;
    Ok(())
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Rows changed since the last checkpoint after which the writer asks for the next one.
const CHECKPOINT_CHANGES: u64 = 1_000;
/// WAL size (in pages) at which a commit checkpoints by itself (a backstop: the checkpointer keeps
/// the WAL well below it unless one transaction writes more).
const AUTOCHECKPOINT_PAGES: u32 = 4_000;

/// The writer thread: runs jobs until every handle of the store is dropped and the queue is empty.
///
/// `Run` jobs run in the order sent. Pushes jump the queue: each time the writer takes a job, it
/// first moves everything sent meanwhile into its own queues, and runs all the pushes waiting then
/// as one group, unless it ran a group last and a `Run` job waits (which then goes first: pushes
/// cannot starve the other jobs). Jobs of one caller keep their order, since a caller awaits each
/// job before it sends the next.
///
/// Every [`CHECKPOINT_CHANGES`] changed rows, it signals the checkpointer (without waiting).
fn writer(mut conn: Connection, queue: mpsc::Receiver<Job>, checkpoints: Option<mpsc::SyncSender<()>>) {
    let mut runs: VecDeque<RunJob> = VecDeque::new();
    let mut pushes: Vec<(PreparedPush, oneshot::Sender<Result<(), StoreError>>)> = Vec::new();
    let sort = |job: Job, runs: &mut VecDeque<_>, pushes: &mut Vec<_>| match job {
        Job::Run(job) => runs.push_back(job),
        Job::Push(push, reply) => pushes.push((push, reply)),
    };
    let mut pushed_last = false;
    let mut checkpointed_at = conn.total_changes();
    loop {
        if pushes.is_empty() && runs.is_empty() {
            match queue.recv() {
                Ok(job) => sort(job, &mut runs, &mut pushes),
                // Every handle is gone and every job done.
                Err(_) => break,
            }
        }
        while let Ok(job) = queue.try_recv() {
            sort(job, &mut runs, &mut pushes);
        }
        if !pushes.is_empty() && (!pushed_last || runs.is_empty()) {
            pushed_last = true;
            let group = std::mem::take(&mut pushes);
            guarded(&mut conn, move |conn| {
                let (group, replies): (Vec<PreparedPush>, Vec<_>) = group.into_iter().unzip();
                let results = inbox::push_group(conn, &group.iter().collect::<Vec<_>>());
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            });
        } else if let Some(job) = runs.pop_front() {
            pushed_last = false;
            guarded(&mut conn, job);
        }
        if let Some(signal) = &checkpoints {
            if conn.total_changes().saturating_sub(checkpointed_at) >= CHECKPOINT_CHANGES {
                // Full: a checkpoint is already asked for.
                let _ = signal.try_send(());
                checkpointed_at = conn.total_changes();
            }
        }
    }
}

/// Runs a job; a job that panics has its transaction rolled back.
fn guarded(conn: &mut Connection, job: impl FnOnce(&mut Connection)) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| job(conn))).is_err() {
        tracing::error!("a SQLite store operation panicked; its transaction was rolled back");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

/// The checkpointer thread: a `PASSIVE` checkpoint on its own connection each time the writer
/// asks, until the writer ends. Checkpoints in WAL mode run beside the writer's transactions (they
/// copy what was committed before they started), so the writer never waits for their fsyncs.
fn checkpointer(conn: Connection, signals: mpsc::Receiver<()>) {
    while signals.recv().is_ok() {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "WAL checkpoint failed; the next one or SQLite's own will catch up");
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.call(|conn| {
            migrations::migrate(conn)?;
            ops::restore_deferred_indexes(conn).map(|_| ())
        })
        .await
    }

    async fn apply_page(&self, page: &Page) -> Result<PageOutcome, StoreError> {
        let page = PreparedPage::new(page)?;
        self.call(move |conn| ops::apply_page(conn, page)).await
    }

    async fn unseen(&self, kind: EntityKind, sweep: i64, scope: &Scope) -> Result<Vec<i64>, StoreError> {
        let scope = scope.clone();
        self.call(move |conn| ops::unseen(conn, kind, sweep, &scope)).await
    }

    async fn mark_deleted(&self, kind: EntityKind, ids: &[i64], at: DateTime<Utc>) -> Result<u64, StoreError> {
        let ids = ids.to_vec();
        self.call(move |conn| ops::mark_deleted(conn, kind, &ids, at)).await
    }

    async fn existing_ids(&self, kind: EntityKind, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let ids = ids.to_vec();
        self.call(move |conn| ops::existing_ids(conn, kind, &ids)).await
    }

    async fn ids(&self, kind: EntityKind, include_deleted: bool) -> Result<Vec<i64>, StoreError> {
        self.call(move |conn| ops::ids(conn, kind, include_deleted)).await
    }

    async fn get(&self, kind: EntityKind, id: i64) -> Result<Option<StoredRecord>, StoreError> {
        self.call(move |conn| ops::get(conn, kind, id)).await
    }

    async fn card_tag_ids(&self, card_id: i64) -> Result<Vec<i64>, StoreError> {
        self.call(move |conn| ops::card_tag_ids(conn, card_id)).await
    }

    async fn card_members(&self, card_id: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        self.call(move |conn| ops::card_members(conn, card_id)).await
    }

    async fn entity_state(&self, kind: EntityKind) -> Result<EntityState, StoreError> {
        self.call(move |conn| ops::entity_state(conn, kind)).await
    }

    async fn entity_states(&self) -> Result<Vec<EntityState>, StoreError> {
        self.call(|conn| ops::entity_states(conn)).await
    }

    async fn save_entity_state(&self, state: &EntityState) -> Result<(), StoreError> {
        let state = state.clone();
        self.call(move |conn| {
            ops::write_state(conn, &state)?;
            if state.kind == EntityKind::Cards {
                ops::restore_deferred_indexes(conn)?;
            }
            Ok(())
        })
        .await
    }

    async fn start_run(&self, run: &RunRecord) -> Result<i64, StoreError> {
        let run = run.clone();
        self.call(move |conn| ops::start_run(conn, &run)).await
    }

    async fn update_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let run = run.clone();
        self.call(move |conn| ops::update_run(conn, &run)).await
    }

    async fn interrupt_running_runs(&self, keep: i64, reason: &str) -> Result<u64, StoreError> {
        let reason = reason.to_owned();
        self.call(move |conn| ops::interrupt_running_runs(conn, keep, &reason)).await
    }

    async fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.call(move |conn| ops::recent_runs(conn, limit)).await
    }

    async fn counts(&self) -> Result<Vec<TableCount>, StoreError> {
        self.call(|conn| ops::counts(conn)).await
    }

    async fn try_lock(&self, holder: &str, stale_after: Duration) -> Result<LockAttempt, StoreError> {
        let holder = holder.to_owned();
        self.call(move |conn| ops::try_lock(conn, &holder, stale_after)).await
    }

    async fn heartbeat_lock(&self, holder: &str) -> Result<bool, StoreError> {
        let holder = holder.to_owned();
        self.call(move |conn| ops::heartbeat_lock(conn, &holder)).await
    }

    async fn release_lock(&self, holder: &str) -> Result<(), StoreError> {
        let holder = holder.to_owned();
        self.call(move |conn| ops::release_lock(conn, &holder)).await
    }

    async fn interrupt_webhook_runs(&self, started_before: DateTime<Utc>, reason: &str) -> Result<u64, StoreError> {
        let reason = reason.to_owned();
        self.call(move |conn| inbox::interrupt_webhook_runs(conn, started_before, &reason)).await
    }

    async fn prune_runs(&self, before: DateTime<Utc>, keep: usize) -> Result<u64, StoreError> {
        self.call(move |conn| inbox::prune_runs(conn, before, keep)).await
    }

    async fn inbox_push(
        &self,
        notifications: &[Notification],
        now: DateTime<Utc>,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if notifications.is_empty() {
            return Ok(());
        }
        self.push(PreparedPush::new(notifications, now, due_at)).await
    }

    async fn inbox_claim(
        &self,
        worker: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let worker = worker.to_owned();
        self.call(move |conn| inbox::claim(conn, &worker, limit, now, lease_until)).await
    }

    async fn inbox_finish(&self, results: &[InboxResult], now: DateTime<Utc>) -> Result<u64, StoreError> {
        if results.is_empty() {
            return Ok(0);
        }
        let results = results.to_vec();
        self.call(move |conn| inbox::finish(conn, &results, now)).await
    }

    async fn inbox_entries(&self, failed_only: bool, limit: usize) -> Result<Vec<InboxEntry>, StoreError> {
        self.call(move |conn| inbox::entries(conn, failed_only, limit)).await
    }

    async fn inbox_stats(&self) -> Result<InboxStats, StoreError> {
        self.call(|conn| inbox::stats(conn)).await
    }

    async fn inbox_retry_failed(&self, ids: Option<&[i64]>, due_at: DateTime<Utc>) -> Result<u64, StoreError> {
        let ids = ids.map(<[i64]>::to_vec);
        self.call(move |conn| inbox::retry_failed(conn, ids.as_deref(), due_at)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        let parse = |s: &str| Location::parse(Path::new(s)).unwrap();
        assert_eq!(parse("sqlite::memory:"), Location::Memory);
        assert_eq!(parse(":memory:"), Location::Memory);
        assert_eq!(parse("sqlite://relative.db"), Location::File("relative.db".into()));
        assert_eq!(parse("sqlite:///abs/path.db"), Location::File("/abs/path.db".into()));
        assert_eq!(parse("sqlite://data/k.db?mode=rwc"), Location::File("data/k.db".into()));
        assert_eq!(parse("sqlite:k.db"), Location::File("k.db".into()));
        assert_eq!(parse("./k.db"), Location::File("./k.db".into()));
        assert!(Location::parse(Path::new("sqlite://")).is_err());
    }

    #[test]
    fn store_is_send_sync_debug() {
        fn check<T: Send + Sync + fmt::Debug + 'static>() {}
        check::<SqliteStore>();
        let _: Option<std::sync::Arc<dyn Store>> = None::<std::sync::Arc<SqliteStore>>.map(|s| s as _);
    }
}
