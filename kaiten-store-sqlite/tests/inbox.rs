//! The webhook inbox on SQLite beyond the Store contract: pushes jump the writer's queue and are
//! committed in groups (one push failing alone), and two stores on one file (two processes)
//! claim each entry once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::error::chain;
use kaiten_sync::{EntityKind, InboxResult, Notification, Store, StoreError};
use kaiten_sync_testkit::fixtures::epoch;

fn at(s: i64) -> DateTime<Utc> {
    epoch() + chrono::Duration::seconds(s)
}

fn note(id: i64, event: &str) -> Notification {
    Notification { kind: EntityKind::Cards, entity_id: id, parent_id: None, event: event.to_owned() }
}

async fn migrated(path: &std::path::Path) -> Arc<SqliteStore> {
    let store = SqliteStore::open(path).expect("open");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

async fn inbox_rows(store: &SqliteStore) -> i64 {
    store.with_connection(|c| c.query_row("SELECT count(*) FROM webhook_inbox", [], |r| r.get(0))).await.unwrap()
}

/// A push waits for the job running and not for the jobs queued behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_goes_before_queued_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated(&dir.path().join("k.db")).await;
    // A job that holds the writer until released.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let running = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .with_connection(move |c| {
                    let _ = released.recv();
                    c.query_row("SELECT count(*) FROM webhook_inbox", [], |r| r.get::<_, i64>(0))
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Jobs queued behind it, each seeing how many pushes ran before it.
    let mut queued = Vec::new();
    for _ in 0..3 {
        let store = store.clone();
        queued.push(tokio::spawn(async move {
            store
                .with_connection(|c| c.query_row("SELECT count(*) FROM webhook_inbox", [], |r| r.get::<_, i64>(0)))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pushed = tokio::spawn({
        let store = store.clone();
        async move { store.inbox_push(&[note(1, "card:add")], at(0), at(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();
    assert_eq!(running.await.unwrap().unwrap(), 0);
    pushed.await.unwrap().unwrap();
    for job in queued {
        assert_eq!(job.await.unwrap().unwrap(), 1, "the push was committed before the jobs queued before it");
    }
}

/// Pushes queued together commit together, each under its own savepoint: concurrent pushes all
/// land and coalesce, and one that fails leaves the others in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_all_land_and_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated(&dir.path().join("k.db")).await;
    store
        .with_connection(|c| {
            c.execute_batch(
                "CREATE TRIGGER refuse_13 BEFORE INSERT ON webhook_inbox WHEN NEW.entity_id = 13 \
                 BEGIN SELECT RAISE(ABORT, 'entity 13 is refused'); END",
            )
        })
        .await
        .unwrap();
    let pushes = (0..400).map(|i| {
        let store = store.clone();
        // Cards 1..=40, ten deliveries each.
        async move { (i % 40 + 1, store.inbox_push(&[note(i % 40 + 1, "card:update")], at(0), at(1)).await) }
    });
    let results = futures_join_all(pushes).await;
    for (id, result) in &results {
        match result {
            Err(e @ StoreError::Backend { .. }) if *id == 13 => assert!(chain(e).contains("refused"), "{}", chain(e)),
            other => assert!(*id != 13 && other.is_ok(), "card {id}: {other:?}"),
        }
    }
    let entries = store.inbox_entries(false, 100).await.unwrap();
    assert_eq!(entries.len(), 39);
    assert!(entries.iter().all(|e| e.entity_id != 13 && e.deliveries == 10 && e.seq == 10), "{entries:?}");
}

/// Runs futures concurrently on the runtime (spawned, so that they really overlap).
async fn futures_join_all<T: Send + 'static>(
    futures: impl IntoIterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// Two stores on one file, as two processes: claims from both at once never share an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_claim_every_entry_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let a = migrated(&path).await;
    let b = migrated(&path).await;
    let notes: Vec<Notification> = (1..=300).map(|id| note(id, "card:update")).collect();
    a.inbox_push(&notes, at(0), at(0)).await.unwrap();
    assert_eq!(inbox_rows(&b).await, 300);
    let workers = [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate().map(|(w, store)| async move {
        let mut claimed = Vec::new();
        loop {
            let batch = store.inbox_claim(&format!("w{w}"), 7, at(1), at(1_000_000)).await.unwrap();
            if batch.is_empty() {
                break;
            }
            claimed.extend(batch.iter().map(|e| e.entity_id));
            let done: Vec<InboxResult> =
                batch.iter().map(|e| InboxResult::Done { id: e.id, seq: e.seq, again_at: at(2) }).collect();
            assert_eq!(store.inbox_finish(&done, at(2)).await.unwrap(), batch.len() as u64);
        }
        claimed
    });
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for claimed in futures_join_all(workers).await {
        for id in claimed {
            *seen.entry(id).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 300);
    assert!(
        seen.values().all(|n| *n == 1),
        "claimed twice: {:?}",
        seen.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert_eq!(inbox_rows(&a).await, 0);
}

/// Ids are never reused (AUTOINCREMENT): a worker that lost its lease and finishes late cannot
/// remove a newer entry.
#[tokio::test]
async fn ids_are_never_reused() {
    let store = SqliteStore::in_memory().unwrap();
    store.migrate().await.unwrap();
    store.inbox_push(&[note(1, "card:add")], at(0), at(0)).await.unwrap();
    let stale = store.inbox_claim("a", 1, at(0), at(60)).await.unwrap().remove(0);
    let taken = store.inbox_claim("b", 1, at(61), at(121)).await.unwrap().remove(0);
    let done = |e: &kaiten_sync::InboxEntry| InboxResult::Done { id: e.id, seq: e.seq, again_at: at(70) };
    assert_eq!(store.inbox_finish(&[done(&taken)], at(62)).await.unwrap(), 1);
    store.inbox_push(&[note(2, "card:add")], at(63), at(63)).await.unwrap();
    assert_eq!(store.inbox_finish(&[done(&stale)], at(64)).await.unwrap(), 0);
    let left = store.inbox_entries(false, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].id > stale.id, "{left:?}");
}

#[tokio::test]
async fn every_answer_matches_the_memory_store() {
    for seed in 1..=6 {
        let store = SqliteStore::in_memory().unwrap();
        store.migrate().await.unwrap();
        kaiten_sync_testkit::inbox::same_as_the_memory_store(&store, seed).await;
    }
}
