//! The webhook inbox and run-log upkeep part of the Store contract (run by
//! [`crate::store_conformance_tests!`] on every store).

use std::collections::BTreeSet;

use kaiten_sync::inbox::{InboxResult, Notification};
use kaiten_sync::schema::EntityKind;
use kaiten_sync::store::{RunKind, RunRecord, RunStatus, Store};

use crate::store::at;

fn note(kind: EntityKind, id: i64, event: &str) -> Notification {
    Notification { kind, entity_id: id, parent_id: None, event: event.to_owned() }
}

/// Deliveries for one entity coalesce into one entry; other entities get their own.
pub async fn inbox_coalesces_deliveries_per_entity(store: &dyn Store) {
    for i in 0..20 {
        let event = if i == 19 { "card:update" } else { "comment:add" };
        store.inbox_push(&[note(EntityKind::Cards, 7, event)], at(100 + i), at(101 + i)).await.unwrap();
    }
    let mut board = note(EntityKind::Boards, 7, "board:update");
    board.parent_id = Some(3);
    store.inbox_push(&[board, note(EntityKind::Cards, 8, "card:add")], at(200), at(201)).await.unwrap();
    let entries = store.inbox_entries(false, 100).await.unwrap();
    assert_eq!(entries.len(), 3, "{entries:?}");
    let card = entries.iter().find(|e| e.kind == EntityKind::Cards && e.entity_id == 7).unwrap();
    assert_eq!((card.deliveries, card.seq), (20, 20));
    assert_eq!(card.event, "card:update");
    assert_eq!(card.received_at, at(100), "the first delivery's time is kept");
    assert_eq!(card.next_attempt_at, at(101), "later deliveries do not postpone the entry");
    let board = entries.iter().find(|e| e.kind == EntityKind::Boards).unwrap();
    assert_eq!((board.entity_id, board.parent_id), (7, Some(3)));
    let stats = store.inbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed, stats.oldest_pending), (3, 0, Some(at(100))));
}

/// Only due entries are claimed; a claim excludes other workers until its lease expires.
pub async fn inbox_claims_due_entries_under_a_lease(store: &dyn Store) {
    store.inbox_push(&[note(EntityKind::Cards, 1, "card:add")], at(0), at(10)).await.unwrap();
    store.inbox_push(&[note(EntityKind::Cards, 2, "card:add")], at(0), at(20)).await.unwrap();
    assert!(store.inbox_claim("a", 10, at(5), at(65)).await.unwrap().is_empty(), "nothing is due yet");
    let claimed = store.inbox_claim("a", 10, at(10), at(70)).await.unwrap();
    assert_eq!(claimed.iter().map(|e| e.entity_id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(claimed[0].claimed_by.as_deref(), Some("a"));
    assert_eq!(claimed[0].claimed_until, Some(at(70)));
    let b = store.inbox_claim("b", 10, at(30), at(90)).await.unwrap();
    assert_eq!(b.iter().map(|e| e.entity_id).collect::<Vec<_>>(), vec![2], "a claimed entry is not claimed twice");
    // Worker "a" died: after its lease, another worker takes its entry.
    let c = store.inbox_claim("c", 10, at(71), at(131)).await.unwrap();
    assert_eq!(c.iter().map(|e| e.entity_id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(c[0].claimed_by.as_deref(), Some("c"));
    let done = [
        InboxResult::Done { id: c[0].id, seq: c[0].seq, again_at: at(72) },
        InboxResult::Done { id: b[0].id, seq: b[0].seq, again_at: at(72) },
    ];
    assert_eq!(store.inbox_finish(&done, at(72)).await.unwrap(), 2);
    // The limit holds, oldest due first.
    for id in 10..15 {
        store.inbox_push(&[note(EntityKind::Cards, id, "card:add")], at(0), at(id)).await.unwrap();
    }
    let limited = store.inbox_claim("d", 2, at(200), at(260)).await.unwrap();
    assert_eq!(limited.iter().map(|e| e.entity_id).collect::<Vec<_>>(), vec![10, 11]);
}

/// A finished entry is removed, unless a delivery arrived while it was being applied: then it is
/// released and applied once more.
pub async fn inbox_finish_removes_unless_redelivered(store: &dyn Store) {
    store.inbox_push(&[note(EntityKind::Cards, 5, "card:add")], at(0), at(1)).await.unwrap();
    let claimed = store.inbox_claim("w", 10, at(1), at(61)).await.unwrap();
    let (id, seq) = (claimed[0].id, claimed[0].seq);
    store.inbox_push(&[note(EntityKind::Cards, 5, "card:update")], at(2), at(3)).await.unwrap();
    let removed = store.inbox_finish(&[InboxResult::Done { id, seq, again_at: at(4) }], at(3)).await.unwrap();
    assert_eq!(removed, 0, "a delivery arrived during the fetch: the entity must be fetched again");
    let entries = store.inbox_entries(false, 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].claimed_by.clone(), entries[0].next_attempt_at), (None, at(4)));
    assert!(store.inbox_claim("w", 10, at(3), at(63)).await.unwrap().is_empty(), "due at again_at, not before");
    let again = store.inbox_claim("w", 10, at(4), at(64)).await.unwrap();
    assert_eq!(again.len(), 1);
    let removed = store
        .inbox_finish(&[InboxResult::Done { id: again[0].id, seq: again[0].seq, again_at: at(5) }], at(4))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(store.inbox_entries(false, 10).await.unwrap().is_empty());
    assert_eq!(store.inbox_stats().await.unwrap().pending, 0);
}

/// Failures count attempts and back off; giving up keeps the entry visible as failed until a new
/// delivery or an operator revives it.
pub async fn inbox_failures_back_off_then_stay_failed(store: &dyn Store) {
    store.inbox_push(&[note(EntityKind::Cards, 9, "card:update")], at(0), at(0)).await.unwrap();
    let e = store.inbox_claim("w", 1, at(0), at(60)).await.unwrap().remove(0);
    let failed = InboxResult::Failed { id: e.id, error: "Kaiten answered 502".into(), retry_at: Some(at(30)) };
    assert_eq!(store.inbox_finish(&[failed], at(1)).await.unwrap(), 0);
    let e = store.inbox_entries(false, 1).await.unwrap().remove(0);
    assert_eq!((e.attempts, e.last_error.as_deref(), e.next_attempt_at), (1, Some("Kaiten answered 502"), at(30)));
    assert!(e.claimed_by.is_none() && e.failed_at.is_none());
    assert!(store.inbox_claim("w", 1, at(29), at(89)).await.unwrap().is_empty(), "backing off");
    let e = store.inbox_claim("w", 1, at(30), at(90)).await.unwrap().remove(0);
    let give_up = InboxResult::Failed { id: e.id, error: "still 502".into(), retry_at: None };
    store.inbox_finish(&[give_up], at(31)).await.unwrap();
    let failed = store.inbox_entries(true, 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].attempts, failed[0].failed_at), (2, Some(at(31))));
    assert!(store.inbox_claim("w", 10, at(1000), at(1060)).await.unwrap().is_empty(), "failed entries wait");
    let stats = store.inbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed), (0, 1));
    // A new delivery for the entity revives it.
    store.inbox_push(&[note(EntityKind::Cards, 9, "comment:add")], at(2000), at(2001)).await.unwrap();
    let e = store.inbox_entries(false, 1).await.unwrap().remove(0);
    assert_eq!((e.failed_at, e.attempts, e.next_attempt_at), (None, 0, at(2001)));
    // So does an operator's retry.
    let e = store.inbox_claim("w", 1, at(2001), at(2061)).await.unwrap().remove(0);
    store.inbox_finish(&[InboxResult::Failed { id: e.id, error: "x".into(), retry_at: None }], at(2002)).await.unwrap();
    store.inbox_push(&[note(EntityKind::Spaces, 4, "space:update")], at(2003), at(2003)).await.unwrap();
    assert_eq!(store.inbox_retry_failed(Some(&[e.id + 1000]), at(3000)).await.unwrap(), 0, "unknown id");
    assert_eq!(store.inbox_retry_failed(None, at(3000)).await.unwrap(), 1);
    let due: BTreeSet<i64> =
        store.inbox_claim("w", 10, at(3000), at(3060)).await.unwrap().iter().map(|e| e.entity_id).collect();
    assert_eq!(due, BTreeSet::from([9, 4]));
}

/// Workers claiming at the same time get disjoint entries, and together get them all.
pub async fn inbox_concurrent_claims_are_disjoint(store: &dyn Store) {
    let notes: Vec<Notification> = (1..=60).map(|id| note(EntityKind::Cards, id, "card:update")).collect();
    store.inbox_push(&notes, at(0), at(0)).await.unwrap();
    let claims = futures::future::join_all(
        (0..6).map(|w| async move { store.inbox_claim(&format!("w{w}"), 15, at(1), at(61)).await.unwrap() }),
    )
    .await;
    let mut seen = BTreeSet::new();
    for claim in &claims {
        for e in claim {
            assert!(seen.insert(e.entity_id), "entry {} claimed twice", e.entity_id);
        }
    }
    assert_eq!(seen.len(), 60);
}

/// Webhook runs left `running` by a dead process are marked interrupted; old runs are pruned.
pub async fn webhook_runs_are_interrupted_and_old_runs_pruned(store: &dyn Store) {
    let mut ids = Vec::new();
    for (i, kind) in [RunKind::Webhook, RunKind::Webhook, RunKind::Full, RunKind::Webhook].into_iter().enumerate() {
        let run = RunRecord::start(kind, vec![EntityKind::Cards], None, at(i as i64 * 100));
        ids.push(store.start_run(&run).await.unwrap());
    }
    // Run 1 finished; runs 0, 2 (a full sync) and 3 are running.
    let mut done = RunRecord::start(RunKind::Webhook, vec![EntityKind::Cards], None, at(100));
    done.id = ids[1];
    done.status = RunStatus::Succeeded;
    done.finished_at = Some(at(101));
    store.update_run(&done).await.unwrap();
    let n = store.interrupt_webhook_runs(at(250), "interrupted: serve stopped").await.unwrap();
    assert_eq!(n, 1, "only the running webhook run started before the cut-off");
    let runs = store.recent_runs(10).await.unwrap();
    let status = |id: i64| runs.iter().find(|r| r.id == id).map(|r| r.status).unwrap();
    assert_eq!(status(ids[0]), RunStatus::Interrupted);
    assert_eq!(runs.iter().find(|r| r.id == ids[0]).unwrap().error.as_deref(), Some("interrupted: serve stopped"));
    assert_eq!(status(ids[1]), RunStatus::Succeeded);
    assert_eq!(status(ids[2]), RunStatus::Running, "sync runs are the lock holder's business");
    assert_eq!(status(ids[3]), RunStatus::Running, "started after the cut-off: may be in flight");
    // Prune: runs 0 and 1 are finished and old; running ones stay whatever their age.
    assert_eq!(store.prune_runs(at(10_000), 0).await.unwrap(), 2);
    let left: Vec<i64> = store.recent_runs(10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(left, vec![ids[3], ids[2]]);
    // `keep` protects the newest runs.
    for id in [ids[2], ids[3]] {
        let mut r = RunRecord::start(RunKind::Full, vec![EntityKind::Cards], None, at(200));
        r.id = id;
        r.status = RunStatus::Failed;
        store.update_run(&r).await.unwrap();
    }
    assert_eq!(store.prune_runs(at(10_000), 1).await.unwrap(), 1);
    assert_eq!(store.recent_runs(10).await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[3]]);
}

/// Runs one scripted sequence of inbox operations (pushes with repeats, parents and revivals,
/// claims, finishes with re-deliveries, failures, give-ups and duplicate results, operator
/// retries) on `store` and on the reference [`MemoryStore`](kaiten_sync::MemoryStore), and asserts that every answer and
/// the whole inbox after every step are the same (ids aside: a store numbers entries its own way,
/// in the same order).
pub async fn same_as_the_memory_store(store: &dyn Store, seed: u64) {
    use kaiten_sync::inbox::InboxEntry;
    use kaiten_sync::MemoryStore;

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
