//! The webhook inbox shared by several processes: separate stores (separate pools, as separate
//! `serve` processes have) on one schema claim from one inbox at once, and each entry is claimed
//! by exactly one of them (`FOR UPDATE SKIP LOCKED`).

mod common;

use std::sync::Arc;

use common::{claim_from_a_shared_inbox, server, SchemaGuard};
use kaiten_store_postgres::PgStore;
use kaiten_sync::{EntityKind, InboxResult, Notification, Store};

fn at(s: i64) -> chrono::DateTime<chrono::Utc> {
    kaiten_sync::conformance::fixtures::epoch() + chrono::Duration::seconds(s)
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

/// Runs one scripted sequence of inbox operations (pushes with repeats, parents and revivals,
/// claims, finishes with re-deliveries, failures, give-ups and duplicate results, operator
/// retries) on `store` and on the reference [`MemoryStore`], and asserts that every answer and
/// the whole inbox after every step are the same (ids aside: a store numbers entries its own way,
/// in the same order).
async fn same_as_the_memory_store(store: &dyn Store, seed: u64) {
    use kaiten_sync::{InboxEntry, MemoryStore};

    let memory = MemoryStore::new();
    let stores: [&dyn Store; 2] = [store, &memory];
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) % n
    };
    let key = |e: &InboxEntry| (e.kind, e.entity_id);
    let strip = |mut e: InboxEntry| {
        e.id = 0;
        e
    };
    // What each store's workers hold: (worker, entries as claimed).
    let mut held: [Vec<InboxEntry>; 2] = [Vec::new(), Vec::new()];
    // How much of the contract the script met: claimed, removed, released, failed, retried.
    let mut met = [0u64; 5];
    for step in 0..400i64 {
        let now = at(step);
        match next(10) {
            0..=3 => {
                let notes: Vec<Notification> = (0..1 + next(3))
                    .map(|_| Notification {
                        kind: if next(5) == 0 { EntityKind::Boards } else { EntityKind::Cards },
                        entity_id: 1 + next(12) as i64,
                        parent_id: (next(3) == 0).then(|| next(4) as i64),
                        event: format!("event:{}", next(4)),
                    })
                    .collect();
                let due = at(step + next(3) as i64);
                for s in stores {
                    s.inbox_push(&notes, now, due).await.unwrap();
                }
            }
            4..=5 => {
                let (n, lease) = (next(5) as usize, at(step + 1 + next(20) as i64));
                let mut answers = Vec::new();
                for (i, s) in stores.iter().enumerate() {
                    let claimed = s.inbox_claim("w", n, now, lease).await.unwrap();
                    held[i].extend(claimed.iter().cloned());
                    answers.push(claimed.into_iter().map(strip).collect::<Vec<_>>());
                }
                assert_eq!(answers[0], answers[1], "step {step}: claim {n}");
                met[0] += answers[0].len() as u64;
            }
            6..=8 => {
                // Finish some held entries (the same entities in both stores), sometimes one twice.
                let picks: Vec<usize> = (0..1 + next(3)).map(|_| next(1000) as usize).collect();
                let outcomes: Vec<u64> = (0..picks.len()).map(|_| next(4)).collect();
                let mut removed = Vec::new();
                for (i, s) in stores.iter().enumerate() {
                    if held[i].is_empty() {
                        removed.push(None);
                        continue;
                    }
                    let results: Vec<InboxResult> = picks
                        .iter()
                        .zip(&outcomes)
                        .map(|(p, o)| {
                            let e = &held[i][p % held[i].len()];
                            match o {
                                0 | 1 => InboxResult::Done { id: e.id, seq: e.seq, again_at: at(step + 2) },
                                2 => InboxResult::Failed {
                                    id: e.id,
                                    error: format!("e{step}"),
                                    retry_at: Some(at(step + 5)),
                                },
                                _ => InboxResult::Failed { id: e.id, error: format!("gave up {step}"), retry_at: None },
                            }
                        })
                        .collect();
                    removed.push(Some(s.inbox_finish(&results, now).await.unwrap()));
                }
                assert_eq!(removed[0], removed[1], "step {step}: finish");
                met[1] += removed[0].unwrap_or(0);
                for h in &mut held {
                    let keys: Vec<_> = picks.iter().filter(|_| !h.is_empty()).map(|p| key(&h[p % h.len()])).collect();
                    h.retain(|e| !keys.contains(&key(e)));
                }
            }
            _ => {
                let all = next(2) == 0;
                let mut counts = Vec::new();
                for s in stores {
                    let failed = s.inbox_entries(true, 100).await.unwrap();
                    let ids: Vec<i64> = failed.iter().filter(|e| e.entity_id % 2 == 0).map(|e| e.id).collect();
                    let ids = (!all).then_some(ids);
                    counts.push(s.inbox_retry_failed(ids.as_deref(), at(step + 1)).await.unwrap());
                }
                assert_eq!(counts[0], counts[1], "step {step}: retry failed");
                met[4] += counts[0];
            }
        }
        let mut states = Vec::new();
        for s in stores {
            let entries: Vec<InboxEntry> = s.inbox_entries(false, 1000).await.unwrap().into_iter().map(strip).collect();
            states.push((entries, s.inbox_stats().await.unwrap()));
        }
        assert_eq!(states[0], states[1], "step {step}: the inbox differs from the memory store's");
        let entries = &states[0].0;
        met[2] += entries.iter().filter(|e| e.claimed_by.is_none() && e.seq > 1 && e.attempts == 0).count() as u64;
        met[3] += states[0].1.failed as u64;
    }
    assert!(met.iter().all(|n| *n > 0), "seed {seed} left a part of the contract untried: {met:?}");
}

#[tokio::test]
async fn every_answer_matches_the_memory_store() {
    for seed in 1..=3 {
        let Some(store) = common::pg_store().await else { return };
        same_as_the_memory_store(&*store, seed).await;
        store.close().await;
    }
}
