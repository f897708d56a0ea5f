//! `kaiten-sync status` shows a run still running in another process kind by kind, from what the
//! engine persists after each entity kind (`RunRecord::stats` through `Store::update_run`).

mod common;

use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::{EntityKind, EntityStats, RunKind, RunRecord, Store};

#[tokio::test]
async fn status_prints_the_per_kind_counts_of_a_running_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let store = SqliteStore::open(&db).unwrap();
    store.migrate().await.unwrap();
    // What a full sync in another process has written after its first two kinds.
    let started = chrono::Utc::now() - chrono::Duration::seconds(42);
    let mut run =
        RunRecord::start(RunKind::Full, vec![EntityKind::Spaces, EntityKind::Users, EntityKind::Cards], None, started);
    run.id = store.start_run(&run).await.unwrap();
    run.stats.insert(EntityKind::Spaces, EntityStats { pages: 1, fetched: 3, inserted: 3, ..EntityStats::default() });
    run.stats.insert(
        EntityKind::Users,
        EntityStats { pages: 2, fetched: 105, inserted: 100, updated: 5, ..EntityStats::default() },
    );
    run.api_requests = 9;
    store.update_run(&run).await.unwrap();

    let db_url = format!("sqlite://{}", db.display());
    let out = common::run(dir.path(), &[("DATABASE_URL", &db_url)], &["status"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("run #{} (full) running for", run.id)), "{stdout}");
    assert!(stdout.contains("9 requests so far"), "{stdout}");
    // The running run's table comes last (the tables section has a `users` row too).
    let running = &stdout[stdout.find("running for").unwrap()..];
    let line = |kind: &str| running.lines().find(|l| l.trim_start().starts_with(kind)).map(str::to_owned);
    let users = line("users").expect("a users row");
    assert!(users.contains("done") && users.contains("105") && users.contains("100"), "{users}");
    assert!(line("cards").is_some_and(|l| l.contains("in progress")), "{stdout}");
}
