//! The webhook inbox shared by several processes: separate stores (separate pools, as separate
//! `serve` processes have) on one schema claim from one inbox at once, and each entry is claimed
//! by exactly one of them (`FOR UPDATE SKIP LOCKED`).

mod common;

use std::sync::Arc;

use common::{claim_from_a_shared_inbox, server, SchemaGuard};
use kaiten_store_postgres::PgStore;
use kaiten_sync::{EntityKind, InboxResult, Notification, Store};

fn at(s: i64) -> chrono::DateTime<chrono::Utc> {
    kaiten_sync_testkit::fixtures::epoch() + chrono::Duration::seconds(s)
}

/// Two stores, as two processes would have, on one fresh schema (migrated by both).
async fn two_stores() -> Option<(PgStore, PgStore, SchemaGuard)> {
    let url = server().await?;
    let guard = SchemaGuard::new(&url);
    let a = PgStore::connect_with(guard.options()).await.unwrap();
    let b = PgStore::connect_with(guard.options()).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.unwrap();
    rb.unwrap();
    Some((a, b, guard))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_claim_every_entry_exactly_once() {
    let Some((a, b, _guard)) = two_stores().await else { return };
    let stores: Vec<Arc<dyn Store>> = vec![Arc::new(a.clone()), Arc::new(b.clone())];
    let per_store = claim_from_a_shared_inbox(stores, 3, 600).await;
    assert!(per_store.iter().all(|n| *n > 0), "both processes took part: {per_store:?}");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_to_another_process_finishes_nothing_twice() {
    let Some((a, b, _guard)) = two_stores().await else { return };
    let note = |id| Notification { kind: EntityKind::Cards, entity_id: id, parent_id: None, event: "card:add".into() };
    a.inbox_push(&[note(1)], at(0), at(0)).await.unwrap();
    // Process A claims and stalls past its lease; process B takes the entry over and applies it.
    let stalled = a.inbox_claim("a", 10, at(0), at(60)).await.unwrap().remove(0);
    assert!(b.inbox_claim("b", 10, at(30), at(90)).await.unwrap().is_empty(), "A's lease holds");
    let taken = b.inbox_claim("b", 10, at(61), at(121)).await.unwrap().remove(0);
    assert_eq!((taken.id, taken.claimed_by.as_deref()), (stalled.id, Some("b")));
    let done = |e: &kaiten_sync::InboxEntry| InboxResult::Done { id: e.id, seq: e.seq, again_at: at(70) };
    assert_eq!(b.inbox_finish(&[done(&taken)], at(62)).await.unwrap(), 1);
    // A new delivery for the same card makes a new entry with a new id, so A finishing late
    // removes nothing and the new entry waits for its fetch.
    a.inbox_push(&[note(1)], at(63), at(63)).await.unwrap();
    assert_eq!(a.inbox_finish(&[done(&stalled)], at(64)).await.unwrap(), 0);
    let left = b.inbox_entries(false, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_ne!(left[0].id, stalled.id, "ids are never reused");
    assert_eq!((left[0].seq, left[0].claimed_by.as_deref()), (1, None));
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn every_answer_matches_the_memory_store() {
    for seed in 1..=3 {
        let Some(store) = common::pg_store().await else { return };
        kaiten_sync_testkit::inbox::same_as_the_memory_store(&*store, seed).await;
        store.close().await;
    }
}
