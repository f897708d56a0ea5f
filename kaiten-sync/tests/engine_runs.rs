//! Engine behaviours beyond the store-generic scenarios: killed runs, stale locks, network faults,
//! progress events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaiten_sim::{Faults, SimConfig, Simulator};
use kaiten_sync::error::chain;
use kaiten_sync::{EntityKind, MemoryStore, ProgressEvent, RunStatus, Store, SyncEngine, SyncOptions};
use kaiten_sync_testkit::engine::{sim_client, FlakyStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_is_resumed_and_its_stale_lock_taken_over() {
    let sim = Simulator::start(SimConfig { cards: 600, latency: Duration::from_millis(15), ..SimConfig::small() })
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let pages = Arc::new(Mutex::new(0u32));
    // Pages of 50 walked one at a time; the store takes the first write of cards and never
    // finishes the second, where the process is "killed".
    let one_by_one = SyncOptions::default().with_page_size(50).with_concurrency(1);
    let stuck: Arc<dyn Store> = Arc::new(FlakyStore::hanging(store.clone(), 1));
    let killed = SyncEngine::new(sim_client(&sim), stuck).with_options(one_by_one).on_progress({
        let pages = pages.clone();
        move |e| {
            if let ProgressEvent::PageDone { kind: EntityKind::Cards, .. } = e {
                *pages.lock().unwrap() += 1;
            }
        }
    });
    let run = tokio::spawn(async move { killed.sync_all().await });
    while *pages.lock().unwrap() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Give the run time to reach the write it never finishes, then "kill" it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    run.abort();
    let _ = run.await;
    let stored_after_kill = store.ids(EntityKind::Cards, true).await.unwrap().len();
    assert!((50..600).contains(&stored_after_kill), "{stored_after_kill} cards stored before the kill");

    // The killed run still holds the lock: a new run refuses until it goes stale, then takes over.
    let refused = SyncEngine::new(sim_client(&sim), store.clone()).sync_all().await;
    assert!(matches!(refused, Err(kaiten_sync::SyncError::Locked { .. })), "{refused:?}");
    let options = SyncOptions::default()
        .with_page_size(50)
        .with_concurrency(1)
        .with_lock_stale_after(Duration::from_millis(200))
        .with_lock_wait(Duration::from_secs(10));
    sim.reset_request_log();
    let report = SyncEngine::new(sim_client(&sim), store.clone()).with_options(options).sync_all().await.unwrap();
    let card_requests = sim.request_log().iter().filter(|r| r.contains("/cards?")).count();
    let left = (600 - stored_after_kill).div_ceil(50);
    assert!(
        card_requests <= left + 3,
        "resumed after the committed pages ({card_requests} card requests, {left} pages left): {:#?}",
        sim.request_log()
    );
    assert_eq!(report.stats(EntityKind::Cards).deleted, 0);
    let mut expected = sim.card_ids();
    expected.sort_unstable();
    assert_eq!(store.ids(EntityKind::Cards, true).await.unwrap(), expected);
    let runs = store.recent_runs(10).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs.last().unwrap().status, RunStatus::Interrupted, "the killed run is marked interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_are_retried_and_a_lost_network_fails_then_resumes() {
    let sim = Simulator::start(SimConfig { cards: 300, ..SimConfig::small() }).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Some 5xx and dropped connections: retried, the run succeeds.
    sim.set_faults(Faults { server_error_rate: 0.15, drop_rate: 0.1, ..Faults::default() });
    let client = kaiten_sync::kaiten_client::KaitenClient::builder()
        .base_url(sim.base_url())
        .token(sim.token())
        .rate_limit(None)
        .retry_policy(kaiten_sync::kaiten_client::RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            max_total_wait: Duration::from_secs(5),
        })
        .build()
        .unwrap();
    let report = SyncEngine::new(client, store.clone()).sync_all().await.expect("faults are retried");
    assert!(report.run.retries > 0, "faults were injected and retried");
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap().len(), sim.card_ids().len());

    // Every request fails: the run fails clearly and marks nothing deleted.
    sim.set_faults(Faults { drop_rate: 1.0, ..Faults::default() });
    let err = SyncEngine::new(sim_client(&sim), store.clone()).sync_all().await.expect_err("network gone");
    assert!(chain(&err).contains("cannot reach Kaiten"), "{}", chain(&err));
    assert_eq!(store.recent_runs(1).await.unwrap()[0].status, RunStatus::Failed);
    for kind in EntityKind::ALL {
        let live = store.ids(kind, false).await.unwrap();
        assert_eq!(store.ids(kind, true).await.unwrap(), live, "{kind}: the failed run marked nothing deleted");
    }
    // The network back, the next full sync (which sweeps) completes: the one card deleted in
    // Kaiten meanwhile is marked deleted, nothing else is.
    sim.set_faults(Faults::default());
    let gone = sim.card_ids()[7];
    sim.delete_card(gone);
    let report = SyncEngine::new(sim_client(&sim), store.clone()).sync_all().await.unwrap();
    assert_eq!(report.stats(EntityKind::Cards).deleted, 1);
    let mut live = sim.card_ids();
    live.sort_unstable();
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), live);
    assert!(store.get(EntityKind::Cards, gone).await.unwrap().unwrap().deleted_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_events_come_in_order() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = SyncEngine::new(sim_client(&sim), store).progress_channel(tx).sync_all().await.unwrap();
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert!(matches!(events.first(), Some(ProgressEvent::RunStarted { run_id, .. }) if *run_id == report.run.id));
    assert!(matches!(events.last(), Some(ProgressEvent::RunFinished { status: RunStatus::Succeeded, .. })));
    let started: Vec<EntityKind> = events
        .iter()
        .filter_map(|e| if let ProgressEvent::EntityStarted { kind } = e { Some(*kind) } else { None })
        .collect();
    assert_eq!(started, EntityKind::ALL.to_vec(), "kinds in dependency order");
    let done = events.iter().find_map(|e| match e {
        ProgressEvent::EntityDone { kind: EntityKind::Cards, stats } => Some(*stats),
        _ => None,
    });
    assert_eq!(done, Some(report.stats(EntityKind::Cards)));
    assert!(events.iter().any(|e| matches!(e, ProgressEvent::PageDone { kind: EntityKind::Cards, .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_skewed_update_inside_the_overlap_window_is_not_missed() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = SyncEngine::new(sim_client(&sim), store.clone());
    engine.sync_all().await.unwrap();
    let cursor = store.entity_state(EntityKind::Cards).await.unwrap().cursor.unwrap();
    // A card whose `updated` lands 1 minute before the cursor (written late by a skewed server).
    let id = sim.card_ids()[3];
    let skewed = (cursor - chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    sim.update_card(id, serde_json::json!({"title": "late write", "updated": skewed}));
    let report = engine.sync_incremental().await.unwrap();
    assert_eq!(report.stats(EntityKind::Cards).updated, 1);
    assert_eq!(store.get(EntityKind::Cards, id).await.unwrap().unwrap().raw["title"], "late write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lock_is_taken_over_stops() {
    let sim = Simulator::start(SimConfig { cards: 800, latency: Duration::from_millis(20), ..SimConfig::small() })
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let options = SyncOptions::default().with_heartbeat_every(Duration::from_millis(30));
    let engine = SyncEngine::new(sim_client(&sim), store.clone()).with_options(options);
    let run = tokio::spawn(async move { engine.sync_all().await });
    // Another process decides the lock is stale and takes it.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.try_lock("impatient-process", Duration::ZERO).await.unwrap(), kaiten_sync::LockAttempt::Acquired);
    let result = run.await.unwrap();
    assert!(matches!(result, Err(kaiten_sync::SyncError::LockLost)), "{result:?}");
    let runs = store.recent_runs(1).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert!(runs[0].error.as_deref().unwrap().contains("lock was lost"));
    // The run did not release the lock it no longer holds.
    assert!(store.heartbeat_lock("impatient-process").await.unwrap());
}

/// A proxy in front of the simulator that refuses `condition=3`, like a tenant that does not list
/// deleted cards.
async fn refusing_proxy(sim: &Simulator) -> String {
    use axum::extract::State;
    use axum::http::Uri;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let upstream = format!("http://{}", sim.addr());
    let app = axum::Router::new()
        .fallback(|State(upstream): State<String>, uri: Uri, headers: HeaderMap| async move {
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
            if path.contains("condition=3") {
                return (
                    StatusCode::BAD_REQUEST,
                    [("content-type", "application/json")],
                    r#"{"message":"condition: invalid value"}"#.to_owned(),
                )
                    .into_response();
            }
            let mut request = reqwest::Client::new().get(format!("{upstream}{path}"));
            if let Some(auth) = headers.get("authorization") {
                request = request.header("authorization", auth.to_str().unwrap());
            }
            let response = request.send().await.unwrap();
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
            (status, [("content-type", "application/json")], response.text().await.unwrap()).into_response()
        })
        .with_state(upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/api/latest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_refusing_to_list_deleted_cards_still_syncs_incrementally() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let url = refusing_proxy(&sim).await;
    let client = kaiten_sync::kaiten_client::KaitenClient::builder()
        .base_url(url)
        .token(sim.token())
        .rate_limit(None)
        .build()
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Asking for deleted cards is opt-in (real tenants list nothing there): ask, and be refused.
    let options = SyncOptions::default().with_incremental_deleted_cards(true);
    let engine = SyncEngine::new(client, store.clone()).with_options(options);
    engine.sync_all().await.unwrap();
    let renamed = sim.card_ids()[0];
    sim.update_card(renamed, serde_json::json!({"title": "renamed behind a proxy"}));
    let deleted = sim.card_ids()[1];
    sim.delete_card(deleted);
    let report = engine.sync_incremental().await.expect("a refused condition=3 listing does not fail the run");
    assert_eq!(report.stats(EntityKind::Cards).updated, 1);
    assert_eq!(store.get(EntityKind::Cards, renamed).await.unwrap().unwrap().raw["title"], "renamed behind a proxy");
    // The deletion is found by the next full sync instead.
    assert!(store.get(EntityKind::Cards, deleted).await.unwrap().unwrap().deleted_at.is_none());
    let report = engine.sync_all().await.unwrap();
    assert_eq!(report.stats(EntityKind::Cards).deleted, 1);
}

/// `sync_logs` keeps what the retention setting says: older finished runs are pruned at the end of
/// each run, the newest `keep_runs` stay whatever their age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_runs_are_pruned_by_the_retention_setting() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let keep_all = SyncEngine::new(sim_client(&sim), store.clone())
        .with_options(SyncOptions::default().with_run_retention(None, 0));
    for _ in 0..3 {
        keep_all.sync_incremental().await.unwrap();
    }
    assert_eq!(store.recent_runs(100).await.unwrap().len(), 3, "no retention: every run is kept");
    let default = SyncEngine::new(sim_client(&sim), store.clone());
    default.sync_incremental().await.unwrap();
    assert_eq!(store.recent_runs(100).await.unwrap().len(), 4, "the default keeps 30 days");
    let pruning = SyncEngine::new(sim_client(&sim), store.clone())
        .with_options(SyncOptions::default().with_run_retention(Some(Duration::ZERO), 2));
    let last = pruning.sync_incremental().await.unwrap();
    let left: Vec<i64> = store.recent_runs(100).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(left[0], last.run.id, "the newest run is kept");
}

/// Fewest requests: a full sync asks Kaiten for nothing twice (the same path and query), neither the
/// first into an empty store nor a second over a populated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_requests_nothing_twice() {
    let sim = Simulator::start(SimConfig { cards: 450, ..SimConfig::small() }).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = SyncEngine::new(sim_client(&sim), store);
    for round in 0..2 {
        sim.reset_request_log();
        let report = engine.sync_all().await.unwrap();
        let log = sim.request_log();
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for line in &log {
            *counts.entry(line.as_str()).or_default() += 1;
        }
        let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "round {round}: requested more than once: {repeated:#?}");
        assert_eq!(report.run.api_requests as usize, log.len(), "round {round}");
    }
}

/// Card requests in the simulator's log, and how many of them carried an `updated_before` bound (a
/// window of a split walk).
fn card_requests(sim: &Simulator) -> (usize, usize) {
    let log = sim.request_log();
    let cards: Vec<&String> = log.iter().filter(|r| r.contains("/cards?")).collect();
    let bounded = cards.iter().filter(|r| r.contains("updated_before=")).count();
    (cards.len(), bounded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_card_walk_is_split_into_windows_listed_together_and_loses_nothing() {
    let sim = Simulator::start(SimConfig { cards: 3_000, latency: Duration::from_millis(5), ..SimConfig::small() })
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let options = SyncOptions::default().with_concurrency(4);
    let report =
        SyncEngine::new(sim_client(&sim), store.clone()).with_options(options.clone()).sync_all().await.unwrap();
    let mut expected = sim.card_ids();
    expected.sort_unstable();
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), expected);
    let (requests, bounded) = card_requests(&sim);
    assert!(bounded > 0, "the live walk was split into windows ({requests} card requests)");
    // 30 full pages plus a closing page per window (36-37 requests in practice; the simulator's
    // `updated` times are skewed, so some splits land in sparse ranges): splits cost a few
    // requests, never a request per page.
    let full_pages = expected.len().div_ceil(100);
    assert!(requests <= full_pages + 2 + full_pages / 3, "{requests} card requests for {full_pages} pages");
    assert!(report.stats(EntityKind::Cards).fetched as usize >= expected.len());

    // A change in every part of the time range and a deleted card: an incremental run finds the
    // changes, the next full sync (split again) finds the deletion and nothing else.
    let ids = sim.card_ids();
    for id in ids.iter().step_by(300) {
        sim.update_card(*id, serde_json::json!({"title": format!("changed {id}")}));
    }
    let gone = ids[1234];
    sim.delete_card(gone);
    let incremental = SyncEngine::new(sim_client(&sim), store.clone()).sync_incremental().await.unwrap();
    assert_eq!(incremental.stats(EntityKind::Cards).updated, 10);
    sim.reset_request_log();
    let full = SyncEngine::new(sim_client(&sim), store.clone()).with_options(options).sync_all().await.unwrap();
    assert_eq!(full.stats(EntityKind::Cards).deleted, 1);
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap().len(), expected.len() - 1);
    assert!(card_requests(&sim).1 > 0, "split again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_while_several_windows_are_open_resumes_each_of_them() {
    let sim = Simulator::start(SimConfig { cards: 3_000, latency: Duration::from_millis(10), ..SimConfig::small() })
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let killed =
        SyncEngine::new(sim_client(&sim), store.clone()).with_options(SyncOptions::default().with_concurrency(4));
    let run = tokio::spawn(async move { killed.sync_all().await });
    // "Kill" the run as soon as a committed resume point names several open windows.
    let open_windows = |resume: &str| -> usize {
        let point: serde_json::Value = serde_json::from_str(resume).unwrap();
        point["full"]["windows"].as_array().map_or(0, Vec::len)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let resume = loop {
        let state = store.entity_state(EntityKind::Cards).await.unwrap();
        if let Some(resume) = state.resume.filter(|r| open_windows(r) >= 2) {
            break resume;
        }
        assert!(std::time::Instant::now() < deadline, "never saw two windows open");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    run.abort();
    let _ = run.await;
    // The run may have committed one more page between the check and the abort.
    let resume = store.entity_state(EntityKind::Cards).await.unwrap().resume.unwrap_or(resume);
    let windows = open_windows(&resume);
    let stored_after_kill = store.ids(EntityKind::Cards, true).await.unwrap().len();
    assert!(stored_after_kill < 3_000, "{stored_after_kill} cards stored before the kill");

    let options = SyncOptions::default()
        .with_concurrency(4)
        .with_lock_stale_after(Duration::from_millis(200))
        .with_lock_wait(Duration::from_secs(10));
    sim.reset_request_log();
    let report = SyncEngine::new(sim_client(&sim), store.clone()).with_options(options).sync_all().await.unwrap();
    let (requests, _) = card_requests(&sim);
    let remaining_pages = (3_000 - stored_after_kill).div_ceil(100);
    assert!(
        requests <= remaining_pages + windows + 6,
        "resumed each window ({requests} card requests for {remaining_pages} pages left, {windows} windows)"
    );
    assert_eq!(report.stats(EntityKind::Cards).deleted, 0, "nothing missed, so nothing swept");
    let mut expected = sim.card_ids();
    expected.sort_unstable();
    assert_eq!(store.ids(EntityKind::Cards, true).await.unwrap(), expected);
}

/// A split card listing stays exact against a Kaiten that pages differently: one that ignores
/// `updated_before` (a window runs on past its bound, listing cards another window lists too) and
/// one that clamps the page size to 30. Each full sync after a deletion lists every card and marks
/// exactly the deleted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_listings_stay_exact_when_kaiten_ignores_the_window_bound_or_clamps_pages() {
    for faults in [
        Faults { cards_ignore_updated_before: true, ..Faults::default() },
        Faults { cards_page_cap: Some(30), ..Faults::default() },
    ] {
        let sim = Simulator::start(SimConfig { cards: 3_000, ..SimConfig::small() }).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let options = SyncOptions::default().with_concurrency(4);
        let engine = SyncEngine::new(sim_client(&sim), store.clone()).with_options(options);
        engine.sync_all().await.unwrap();
        let gone = sim.card_ids()[1500];
        sim.delete_card(gone);
        sim.set_faults(faults.clone());
        sim.reset_request_log();
        let report = engine.sync_all().await.unwrap_or_else(|e| panic!("{faults:?}: {}", chain(&e)));
        assert!(card_requests(&sim).1 > 0, "{faults:?}: the listing was split into windows");
        assert_eq!(report.stats(EntityKind::Cards).deleted, 1, "{faults:?}: only the deleted card");
        let mut expected = sim.card_ids();
        expected.sort_unstable();
        assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap(), expected, "{faults:?}");
    }
}
