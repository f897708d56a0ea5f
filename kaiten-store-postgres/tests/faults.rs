//! The database failing mid-run (issue 12): every connection of the store cut from a second
//! connection (`pg_terminate_backend`, as a server restart or a failover does) while a full sync
//! runs. The run ends (failed with a clear error, or through reconnections), nothing is
//! half-written, and the next run completes with the mirror equal to the simulator and no run left
//! `running`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{server, SchemaGuard};
use kaiten_sim::{SimConfig, Simulator};
use kaiten_store_postgres::PgStore;
use kaiten_sync::error::chain;
use kaiten_sync::{EntityKind, ProgressEvent, RunStatus, Store, SyncEngine, SyncError, SyncOptions};
use kaiten_sync_testkit::engine::{assert_mirror_is_the_simulator, assert_no_run_running, sim_client};
use sqlx::{Connection, PgConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_run_lose_nothing_and_the_next_run_completes() {
    let Some(url) = server().await else { return };
    let guard = SchemaGuard::new(&url);
    let pg = PgStore::connect_with(guard.options()).await.expect("connect");
    pg.migrate().await.expect("migrate");
    let store: Arc<dyn Store> = Arc::new(pg);
    let sim = Simulator::start(SimConfig { cards: 600, latency: Duration::from_millis(5), ..SimConfig::small() })
        .await
        .unwrap();
    let pages = Arc::new(AtomicU32::new(0));
    let engine = SyncEngine::new(sim_client(&sim), store.clone())
        .with_options(SyncOptions::default().with_heartbeat_every(Duration::from_millis(50)))
        .on_progress({
            let pages = pages.clone();
            move |e| {
                if let ProgressEvent::PageDone { kind: EntityKind::Cards, .. } = e {
                    pages.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    let run = tokio::spawn(async move { engine.sync_all().await });
    while pages.load(Ordering::SeqCst) < 1 {
        assert!(!run.is_finished(), "the run ended before its first page of cards");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // From a second connection, cut every connection of the store, again and again until the
    // run has ended.
    let stop = Arc::new(AtomicBool::new(false));
    let cutter = tokio::spawn({
        let (url, app, stop) = (url.clone(), guard.app.clone(), stop.clone());
        async move {
            let mut admin = PgConnection::connect(&url).await.expect("admin connection");
            let mut cut = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&app)
                .fetch_one(&mut admin)
                .await
                .expect("terminate");
                cut += n as u64;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = admin.close().await;
            cut
        }
    });
    let result = run.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let cut = cutter.await.unwrap();
    assert!(cut > 0, "connections were cut");
    match &result {
        Ok(report) => eprintln!("the run survived {cut} cut connections by reconnecting: {:?}", report.run.status),
        Err(e) => {
            let text = chain(e);
            assert!(matches!(e, SyncError::Store(_) | SyncError::LockLost), "{e:?}");
            assert!(!text.trim().is_empty());
            eprintln!("the run failed after {cut} cut connections: {text}");
        }
    }
    // Nothing half-written: every stored card is one Kaiten serves, whole.
    let served: std::collections::BTreeMap<i64, serde_json::Value> =
        sim.cards_json().into_iter().map(|c| (c["id"].as_i64().unwrap(), c)).collect();
    for id in store.ids(EntityKind::Cards, true).await.unwrap() {
        let row = store.get(EntityKind::Cards, id).await.unwrap().unwrap();
        assert_eq!(Some(&row.raw), served.get(&id), "card {id} is stored whole");
    }

    // The next run (a new process would find the advisory lock gone with the cut sessions)
    // completes and marks the cut run interrupted if it could not record its end.
    let next = SyncEngine::new(sim_client(&sim), store.clone())
        .with_options(SyncOptions::default().with_lock_wait(Duration::from_secs(30)));
    next.sync_all().await.unwrap_or_else(|e| panic!("the next run completes: {}", chain(&e)));
    assert_mirror_is_the_simulator(&sim, &*store, &[], &[]).await;
    assert_no_run_running(&*store).await;
    assert_eq!(store.recent_runs(1).await.unwrap()[0].status, RunStatus::Succeeded);
    drop(store);
    drop(guard);
}
