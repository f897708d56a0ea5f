//! The database failing mid-run (issue 12): another writer holding SQLite's write lock beyond the
//! busy timeout, and a database that fills up. Each: a clear error, nothing half-written (every
//! stored card is a card of a committed page, exactly as Kaiten serves it), and the next run
//! completes with the mirror equal to the simulator and no run left `running`.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kaiten_sim::{SimConfig, Simulator};
use kaiten_store_sqlite::{SqliteOptions, SqliteStore};
use kaiten_sync::error::chain;
use kaiten_sync::{EntityKind, ProgressEvent, RunStatus, Store, SyncEngine, SyncOptions};
use kaiten_sync_testkit::engine::{assert_mirror_is_the_simulator, assert_no_run_running, sim_client};

/// Every stored card is one Kaiten serves, byte for byte (no row half-written), and the database
/// file is sound.
async fn assert_nothing_half_written(store: &SqliteStore, sim: &Simulator) {
    let served: std::collections::BTreeMap<i64, serde_json::Value> =
        sim.cards_json().into_iter().map(|c| (c["id"].as_i64().unwrap(), c)).collect();
    for id in store.ids(EntityKind::Cards, true).await.unwrap() {
        let row = store.get(EntityKind::Cards, id).await.unwrap().unwrap();
        assert_eq!(Some(&row.raw), served.get(&id), "card {id} is stored whole");
    }
    let check: String =
        store.with_connection(|conn| conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))).await.unwrap();
    assert_eq!(check, "ok");
}

fn open(path: &Path, busy: Duration) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open_with(path, SqliteOptions::default().busy_timeout(busy)).expect("open"))
}

/// Counts committed pages of cards.
fn counting(engine: SyncEngine, pages: &Arc<AtomicU32>) -> SyncEngine {
    let pages = pages.clone();
    engine.on_progress(move |e| {
        if let ProgressEvent::PageDone { kind: EntityKind::Cards, .. } = e {
            pages.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// Another process holds SQLite's write lock (an open `BEGIN IMMEDIATE`) from the second page of
/// cards until the sync gives up: the sync fails with "locked or busy" once its busy timeout
/// (300 ms here) is over, having committed whole pages only; the writer gone, the next run (its
/// lock row left behind by the failed run, which could not write, is taken over once stale)
/// completes and the mirror is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_beyond_the_busy_timeout_fails_the_run_cleanly() {
    let sim = Simulator::start(SimConfig { cards: 600, latency: Duration::from_millis(5), ..SimConfig::small() })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaiten.db");
    let store = open(&path, Duration::from_millis(300));
    store.migrate().await.unwrap();
    let pages = Arc::new(AtomicU32::new(0));
    let engine = counting(SyncEngine::new(sim_client(&sim), store.clone()), &pages);
    let run = tokio::spawn(async move { engine.sync_all().await });
    while pages.load(Ordering::SeqCst) < 1 {
        assert!(!run.is_finished(), "the run ended before its first page of cards");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The other writer: takes the write lock (waiting for the store's current transaction if
    // need be) and holds it until the sync has failed.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn({
        let path = path.clone();
        move || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(Duration::from_secs(30)).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked_tx.send(()).unwrap();
            done_rx.recv_timeout(Duration::from_secs(120)).ok();
            conn.execute_batch("ROLLBACK").unwrap();
        }
    });
    locked_rx.recv_timeout(Duration::from_secs(30)).expect("the other writer got the lock");
    let result = run.await.unwrap();
    done_tx.send(()).unwrap();
    writer.join().unwrap();
    let err = result.expect_err("the sync cannot write while another writer holds the lock");
    let text = chain(&err);
    assert!(text.contains("locked or busy") && text.contains("busy timeout"), "{text}");
    assert_nothing_half_written(&store, &sim).await;
    assert!(store.ids(EntityKind::Cards, true).await.unwrap().len() < sim.card_ids().len(), "the run stopped mid-way");

    let next = SyncEngine::new(sim_client(&sim), store.clone()).with_options(
        SyncOptions::default()
            .with_lock_stale_after(Duration::from_millis(100))
            .with_lock_wait(Duration::from_secs(10)),
    );
    next.sync_all().await.expect("the next run completes");
    assert_mirror_is_the_simulator(&sim, &*store, &[], &[]).await;
    assert_no_run_running(&*store).await;
    let runs = store.recent_runs(10).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert!(runs[1..].iter().all(|r| matches!(r.status, RunStatus::Failed | RunStatus::Interrupted)), "{runs:?}");
}

/// The database reaches its size limit (`PRAGMA max_page_count` on the store's connection, as a
/// full disk would stop it) during the card listing: the run fails saying the database is full,
/// the page being written is rolled back whole, and once there is room again the next run
/// resumes and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_fails_the_run_cleanly_and_the_next_run_completes() {
    let sim = Simulator::start(SimConfig { cards: 600, ..SimConfig::small() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaiten.db");
    let store = open(&path, Duration::from_secs(5));
    store.migrate().await.unwrap();
    let all_but_cards: Vec<EntityKind> = EntityKind::ALL.into_iter().filter(|k| *k != EntityKind::Cards).collect();
    SyncEngine::new(sim_client(&sim), store.clone()).sync_specific(&all_but_cards, true).await.unwrap();
    // Room for about two pages of cards (a page of 100 cards takes 160 to 240 KiB), whatever the
    // database's page size.
    let (used, page_size): (i64, i64) = store
        .with_connection(|conn| {
            let used = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            Ok((used, conn.query_row("PRAGMA page_size", [], |r| r.get(0))?))
        })
        .await
        .unwrap();
    let room = 480 * 1024 / page_size;
    store
        .with_connection(move |conn| {
            conn.query_row(&format!("PRAGMA max_page_count = {}", used + room), [], |_| Ok(()))
        })
        .await
        .unwrap();
    let err = SyncEngine::new(sim_client(&sim), store.clone()).sync_all().await.expect_err("the database fills up");
    let text = chain(&err);
    assert!(text.contains("the database is full"), "{text}");
    assert_nothing_half_written(&store, &sim).await;
    let stored = store.ids(EntityKind::Cards, true).await.unwrap().len();
    assert!(stored < sim.card_ids().len(), "the run stopped mid-way ({stored} cards stored)");

    // Room again: the next run completes.
    store.with_connection(|conn| conn.query_row("PRAGMA max_page_count = 1073741823", [], |_| Ok(()))).await.unwrap();
    SyncEngine::new(sim_client(&sim), store.clone())
        .with_options(
            SyncOptions::default()
                .with_lock_stale_after(Duration::from_millis(100))
                .with_lock_wait(Duration::from_secs(10)),
        )
        .sync_all()
        .await
        .expect("the next run completes");
    assert_mirror_is_the_simulator(&sim, &*store, &[], &[]).await;
    assert_no_run_running(&*store).await;
}
