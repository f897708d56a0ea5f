//! The store behind a real PgBouncer in transaction mode (what Supabase's port 6543 and most
//! hosted poolers are): unnamed statements, the table lock, and a pooler that hands each
//! transaction to whichever server connection is free. The whole engine and webhook suites run
//! through it, plus concurrent page writers on more clients than the pooler has server connections.
//!
//! PgBouncer is found at `$PGBOUNCER`, on `PATH` or at `/usr/sbin/pgbouncer`. Without it a test
//! says so where `cargo test` shows it (`SKIPPED <test>: ...`) and returns, unless
//! `KAITEN_REQUIRE_PGBOUNCER` is set: then it fails. Nothing runs against another store instead.
//! PostgreSQL itself is required as in every test of this crate (see `common`).

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::str::FromStr;

use common::{find_on_path, running_as_root, server, skip, SchemaGuard};
use kaiten_store_postgres::{LockMode, PgStore, PgStoreOptions};
use kaiten_sync::Store;
use sqlx::postgres::PgConnectOptions;

/// The PgBouncer binary, or `None` (after saying so) when there is none and it is not required.
fn pgbouncer_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PGBOUNCER")
        .map(PathBuf::from)
        .or_else(|| find_on_path("pgbouncer"))
        .or_else(|| Some(PathBuf::from("/usr/sbin/pgbouncer")))
        .filter(|p| p.is_file());
    if found.is_some() {
        return found;
    }
    if std::env::var_os("KAITEN_REQUIRE_PGBOUNCER").is_some() {
        panic!("KAITEN_REQUIRE_PGBOUNCER is set but no pgbouncer binary was found (install Debian's pgbouncer)");
    }
    skip("no pgbouncer binary; install it (apt-get install pgbouncer), set PGBOUNCER, or set KAITEN_REQUIRE_PGBOUNCER to fail instead");
    None
}

/// A PgBouncer process in transaction mode in front of the test server, killed on drop.
struct Bouncer {
    child: Child,
    port: u16,
    dir: PathBuf,
    user: String,
    database: String,
}

impl Bouncer {
    /// Starts PgBouncer with `server_connections` server connections per database and user.
    fn start(binary: &PathBuf, upstream: &str, server_connections: usize) -> Bouncer {
        let options = PgConnectOptions::from_str(upstream).expect("test server URL");
        let (host, port, user) = (options.get_host(), options.get_port(), options.get_username());
        let database = options.get_database().unwrap_or(user);
        // The port is picked free, then bound by PgBouncer: another process may take it in
        // between, so a PgBouncer that exits at start is tried again on another port.
        for _ in 0..5 {
            let dir = std::env::temp_dir().join(common::unique_name("kaiten_pgbouncer"));
            std::fs::create_dir_all(&dir).unwrap();
            let listen_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let switch_user = if running_as_root() { "user = postgres\n" } else { "" };
            let ini = format!(
                "[databases]\n\
                 * = host={host} port={port} dbname={database} user={user}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {listen_port}\n\
                 unix_socket_dir =\n\
                 auth_type = any\n\
                 pool_mode = transaction\n\
                 default_pool_size = {server_connections}\n\
                 max_client_conn = 200\n\
                 logfile =\n\
                 pidfile =\n\
                 {switch_user}"
            );
            std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
            set_readable(&dir);
            let child = Command::new(binary)
                .arg(dir.join("pgbouncer.ini"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("pgbouncer.log")).unwrap())
                .spawn()
                .expect("start pgbouncer");
            let mut bouncer =
                Bouncer { child, port: listen_port, dir, user: user.to_owned(), database: database.to_owned() };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                // Its own log line, not a connection: the port may be another test's pooler.
                if bouncer.log().contains(&format!("listening on 127.0.0.1:{listen_port}")) {
                    return bouncer;
                }
                if let Ok(Some(status)) = bouncer.child.try_wait() {
                    eprintln!("pgbouncer exited at start ({status}), trying another port: {}", bouncer.log());
                    break;
                }
                assert!(Instant::now() < deadline, "pgbouncer did not listen within 10 s: {}", bouncer.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("pgbouncer did not start on any of 5 ports");
    }

    /// The test database's URL through the pooler.
    fn url(&self, application_name: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}?application_name={application_name}",
            self.user, self.port, self.database
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lets the `postgres` user PgBouncer switches to (when started as root) read the configuration.
/// It holds no secret: the test server trusts loopback connections.
fn set_readable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    let _ = std::fs::set_permissions(dir.join("pgbouncer.ini"), std::fs::Permissions::from_mode(0o644));
}

/// What keeps a store behind the pooler alive: the pooler goes first, then the schema.
type Guard = (Bouncer, SchemaGuard);

/// A fresh store on its own schema, reached through a new PgBouncer with `server_connections`,
/// configured as the README says for poolers. `None` when there is no server or no PgBouncer.
async fn pooled_store(max_connections: u32, server_connections: usize) -> Option<(PgStore, Bouncer, SchemaGuard)> {
    let upstream = server().await?;
    let binary = pgbouncer_binary()?;
    let bouncer = Bouncer::start(&binary, &upstream, server_connections);
    let guard = SchemaGuard::new(&upstream);
    let options = PgStoreOptions {
        schema: guard.schema.clone(),
        lock_mode: LockMode::Table,
        max_connections,
        ..PgStoreOptions::new(bouncer.url(&guard.app))
    };
    assert_eq!(options.statement_cache_capacity, 0, "the default keeps statements unnamed");
    let store = match PgStore::connect_with(options).await {
        Ok(store) => store,
        Err(e) => panic!("connect through pgbouncer: {e}\n{}", bouncer.log()),
    };
    if let Err(e) = store.migrate().await {
        panic!("migrate through pgbouncer: {e}\n{}", bouncer.log());
    }
    Some((store, bouncer, guard))
}

/// A store behind a fresh pooler, or `None` when the test is skipped (no pgbouncer, or the
/// PostgreSQL tests opted out), which `pooled_store` has said.
async fn make_shared_store() -> Option<(Arc<dyn Store>, Guard)> {
    let (store, bouncer, guard) = pooled_store(6, 2).await?;
    Some((Arc::new(store), (bouncer, guard)))
}

mod engine {
    //! The end-to-end sync scenarios through the pooler.
    use super::make_shared_store;
    kaiten_sync_testkit::engine_conformance_tests!(optional make_shared_store);
}

mod webhook {
    //! Webhook deliveries through the pooler.
    use super::make_shared_store;
    kaiten_sync_testkit::webhook_conformance_tests!(optional make_shared_store);
}

/// Many clients writing pages of two tables at once over one server connection, so that their
/// statements interleave there: every statement of a page must reach the server connection its
/// transaction runs on, or a page would bind another client's statement (an error, or worse, a
/// page written by the wrong statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pages_through_the_pooler_all_land() {
    use kaiten_sync::{Batch, EntityKind, Page};
    use kaiten_sync_testkit::fixtures::{board, epoch, space};

    let Some((store, bouncer, _guard)) = pooled_store(12, 1).await else { return };
    let store = Arc::new(store);
    let page = |batch| Page { batch, sweep: None, state: None, synced_at: epoch() };
    store.apply_page(&page(Batch::Spaces(vec![space(1)]))).await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..12i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..20i64 {
                let first = 10_000 + writer * 1000 + n * 10;
                let ids = first..first + 10;
                let batch = if writer % 2 == 0 {
                    Batch::Spaces(ids.map(space).collect())
                } else {
                    Batch::Boards(ids.map(|id| board(id, 1)).collect())
                };
                let outcome = store.apply_page(&page(batch)).await?;
                assert_eq!(outcome.inserted, 10);
            }
            Ok::<_, kaiten_sync::StoreError>(())
        }));
    }
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            panic!("a page failed through pgbouncer: {e}\n{}", bouncer.log());
        }
    }
    assert_eq!(store.ids(EntityKind::Spaces, false).await.unwrap().len(), 1 + 6 * 20 * 10);
    assert_eq!(store.ids(EntityKind::Boards, false).await.unwrap().len(), 6 * 20 * 10);
}

/// The webhook inbox through the pooler: the Store suite's inbox cases, and two stores (two
/// `serve` processes) claiming from one inbox through a pooler with fewer server connections than
/// they have clients, so that their `FOR UPDATE SKIP LOCKED` claims share server connections.
mod inbox {
    use super::*;

    macro_rules! through_the_pooler {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((store, _bouncer, _guard)) = pooled_store(6, 2).await else { return };
                kaiten_sync_testkit::store::$name(&store).await;
                store.close().await;
            }
        )*};
    }

    through_the_pooler!(
        inbox_coalesces_deliveries_per_entity,
        inbox_claims_due_entries_under_a_lease,
        inbox_finish_removes_unless_redelivered,
        inbox_failures_back_off_then_stay_failed,
        inbox_concurrent_claims_are_disjoint,
        webhook_runs_are_interrupted_and_old_runs_pruned,
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_claim_every_entry_exactly_once() {
        let Some((a, bouncer, guard)) = pooled_store(4, 2).await else { return };
        let b = PgStore::connect_with(PgStoreOptions {
            schema: guard.schema.clone(),
            lock_mode: LockMode::Table,
            max_connections: 4,
            ..PgStoreOptions::new(bouncer.url(&guard.app))
        })
        .await
        .unwrap();
        let stores: Vec<Arc<dyn Store>> = vec![Arc::new(a.clone()), Arc::new(b.clone())];
        let per_store = common::claim_from_a_shared_inbox(stores, 3, 300).await;
        assert!(per_store.iter().all(|n| *n > 0), "both processes took part: {per_store:?}");
        a.close().await;
        b.close().await;
    }
}
