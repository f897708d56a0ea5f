//! An in-memory [`Store`]: for embedding without a database, for unit tests, and as the reference
//! implementation of the contract.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::inbox::{InboxEntry, InboxResult, InboxStats, Notification};
use crate::schema::{EntityKind, SqlValue};
use crate::store::{
    incoming_is_not_older, EntityState, LockAttempt, LockInfo, Page, PageOutcome, RunKind, RunRecord, RunStatus, Scope,
    Store, StoreError, StoredRecord, TableCount,
};

#[derive(Debug, Clone)]
struct MemRow {
    record: StoredRecord,
    updated: Option<DateTime<Utc>>,
    version: Option<i64>,
    seen_sweep: Option<i64>,
    scope: Option<i64>,
}

#[derive(Debug, Default)]
struct Inner {
    tables: BTreeMap<EntityKind, BTreeMap<i64, MemRow>>,
    card_tags: BTreeSet<(i64, i64)>,
    /// `(card_id, user_id)` → member type.
    card_members: BTreeMap<(i64, i64), i64>,
    states: BTreeMap<EntityKind, EntityState>,
    runs: Vec<RunRecord>,
    lock: Option<LockInfo>,
    inbox: BTreeMap<i64, InboxEntry>,
    next_inbox_id: i64,
}

/// A [`Store`] that keeps everything in memory. Cheap, always available, gone when dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn scope_value(kind: EntityKind, values: &[SqlValue]) -> Option<i64> {
    let column = kind.table().scope_column?;
    let index = kind.table().columns.iter().position(|c| c.name == column)?;
    match values.get(index) {
        Some(SqlValue::Int(v)) => Some(*v),
        _ => None,
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn apply_page(&self, page: &Page) -> Result<PageOutcome, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let kind = page.batch.kind();
        let mut outcome = PageOutcome::default();
        // Work on a copy so that the page commits whole or not at all.
        let mut table = inner.tables.get(&kind).cloned().unwrap_or_default();
        let mut written = BTreeSet::new();
        for row in page.batch.rows() {
            if row.id <= 0 {
                return Err(StoreError::InvalidData {
                    kind,
                    message: format!("record id {} is not a positive integer", row.id),
                });
            }
            let deleted_at = row.deleted.then_some(page.synced_at);
            match table.get_mut(&row.id) {
                None => {
                    outcome.inserted += 1;
                    written.insert(row.id);
                    table.insert(
                        row.id,
                        MemRow {
                            scope: scope_value(kind, &row.values),
                            record: StoredRecord {
                                id: row.id,
                                values: row.values,
                                raw: row.raw.value().clone(),
                                synced_at: page.synced_at,
                                deleted_at,
                            },
                            updated: row.updated,
                            version: row.version,
                            seen_sweep: page.sweep,
                        },
                    );
                }
                Some(existing) => {
                    if page.sweep.is_some() {
                        existing.seen_sweep = page.sweep;
                    }
                    let changed =
                        existing.record.raw != *row.raw.value() || existing.record.deleted_at.is_some() != row.deleted;
                    if changed && incoming_is_not_older(existing.updated, existing.version, row.updated, row.version) {
                        outcome.updated += 1;
                        written.insert(row.id);
                        existing.scope = scope_value(kind, &row.values);
                        existing.record.values = row.values;
                        existing.record.raw = row.raw.value().clone();
                        existing.record.synced_at = page.synced_at;
                        existing.record.deleted_at =
                            if row.deleted { existing.record.deleted_at.or(deleted_at) } else { None };
                        existing.updated = row.updated;
                        existing.version = row.version;
                    } else {
                        outcome.unchanged += 1;
                    }
                }
            }
        }
        if kind == EntityKind::Cards {
            // Links follow the card row: replaced only where the card itself was written.
            inner.card_tags.retain(|(card, _)| !written.contains(card));
            inner.card_tags.extend(page.batch.card_tags().into_iter().filter(|(card, _)| written.contains(card)));
            // Members likewise, and only for cards that carry their member list.
            let members = page.batch.card_members();
            let replaced: BTreeSet<i64> = members.cards.into_iter().filter(|card| written.contains(card)).collect();
            inner.card_members.retain(|(card, _), _| !replaced.contains(card));
            inner.card_members.extend(
                members
                    .links
                    .into_iter()
                    .filter(|(card, _, _)| replaced.contains(card))
                    .map(|(card, user, kind)| ((card, user), kind)),
            );
        }
        inner.tables.insert(kind, table);
        if let Some(state) = &page.state {
            inner.states.insert(state.kind, state.clone());
        }
        Ok(outcome)
    }

    async fn unseen(&self, kind: EntityKind, sweep: i64, scope: &Scope) -> Result<Vec<i64>, StoreError> {
        let inner = self.inner.lock().unwrap();
        let Some(table) = inner.tables.get(&kind) else { return Ok(Vec::new()) };
        Ok(table
            .values()
            .filter(|r| r.record.deleted_at.is_none() && r.seen_sweep != Some(sweep))
            .filter(|r| match scope {
                Scope::All => true,
                Scope::Parents(parents) => r.scope.is_some_and(|p| parents.contains(&p)),
            })
            .map(|r| r.record.id)
            .collect())
    }

    async fn mark_deleted(&self, kind: EntityKind, ids: &[i64], at: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let Some(table) = inner.tables.get_mut(&kind) else { return Ok(0) };
        let mut changed = 0;
        for id in ids {
            if let Some(row) = table.get_mut(id) {
                if row.record.deleted_at.is_none() {
                    row.record.deleted_at = Some(at);
                    changed += 1;
                }
            }
        }
        Ok(changed)
    }

    async fn existing_ids(&self, kind: EntityKind, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let inner = self.inner.lock().unwrap();
        let table = inner.tables.get(&kind);
        let mut found: Vec<i64> = ids.iter().copied().filter(|id| table.is_some_and(|t| t.contains_key(id))).collect();
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    async fn ids(&self, kind: EntityKind, include_deleted: bool) -> Result<Vec<i64>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .tables
            .get(&kind)
            .map(|t| {
                t.values().filter(|r| include_deleted || r.record.deleted_at.is_none()).map(|r| r.record.id).collect()
            })
            .unwrap_or_default())
    }

    async fn get(&self, kind: EntityKind, id: i64) -> Result<Option<StoredRecord>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.tables.get(&kind).and_then(|t| t.get(&id)).map(|r| r.record.clone()))
    }

    async fn card_tag_ids(&self, card_id: i64) -> Result<Vec<i64>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.card_tags.range((card_id, i64::MIN)..=(card_id, i64::MAX)).map(|(_, t)| *t).collect())
    }

    async fn card_members(&self, card_id: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .card_members
            .range((card_id, i64::MIN)..=(card_id, i64::MAX))
            .map(|((_, user), kind)| (*user, *kind))
            .collect())
    }

    async fn entity_state(&self, kind: EntityKind) -> Result<EntityState, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.states.get(&kind).cloned().unwrap_or_else(|| EntityState::new(kind)))
    }

    async fn entity_states(&self) -> Result<Vec<EntityState>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.states.values().cloned().collect())
    }

    async fn save_entity_state(&self, state: &EntityState) -> Result<(), StoreError> {
        self.inner.lock().unwrap().states.insert(state.kind, state.clone());
        Ok(())
    }

    async fn start_run(&self, run: &RunRecord) -> Result<i64, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let id = inner.runs.len() as i64 + 1;
        let mut run = run.clone();
        run.id = id;
        inner.runs.push(run);
        Ok(id)
    }

    async fn update_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        match inner.runs.iter_mut().find(|r| r.id == run.id) {
            Some(stored) => {
                *stored = run.clone();
                Ok(())
            }
            None => Err(StoreError::Backend {
                backend: "memory",
                message: format!("no run with id {}", run.id),
                source: None,
            }),
        }
    }

    async fn interrupt_running_runs(&self, keep: i64, reason: &str) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let mut n = 0;
        let interrupted = |r: &RunRecord| r.id != keep && r.status == RunStatus::Running && r.kind != RunKind::Webhook;
        for run in inner.runs.iter_mut().filter(|r| interrupted(r)) {
            run.status = RunStatus::Interrupted;
            run.error = Some(reason.to_owned());
            n += 1;
        }
        Ok(n)
    }

    async fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.runs.iter().rev().take(limit).cloned().collect())
    }

    async fn counts(&self) -> Result<Vec<TableCount>, StoreError> {
        let inner = self.inner.lock().unwrap();
        let mut counts: Vec<TableCount> = EntityKind::ALL
            .iter()
            .map(|kind| {
                let rows = inner.tables.get(kind);
                let deleted = rows.map_or(0, |t| t.values().filter(|r| r.record.deleted_at.is_some()).count()) as i64;
                let all = rows.map_or(0, |t| t.len()) as i64;
                TableCount { table: kind.table().name.to_owned(), live: all - deleted, deleted }
            })
            .collect();
        counts.push(TableCount { table: "card_tags".into(), live: inner.card_tags.len() as i64, deleted: 0 });
        counts.push(TableCount { table: "card_members".into(), live: inner.card_members.len() as i64, deleted: 0 });
        Ok(counts)
    }

    async fn try_lock(&self, holder: &str, stale_after: Duration) -> Result<LockAttempt, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let now = Utc::now();
        let free = match &inner.lock {
            None => true,
            Some(info) if info.holder == holder => true,
            Some(info) => (now - info.heartbeat_at).to_std().is_ok_and(|age| age > stale_after),
        };
        if free {
            let acquired_at = match &inner.lock {
                Some(info) if info.holder == holder => info.acquired_at,
                _ => now,
            };
            inner.lock = Some(LockInfo { holder: holder.to_owned(), acquired_at, heartbeat_at: now });
            Ok(LockAttempt::Acquired)
        } else {
            Ok(LockAttempt::Held(inner.lock.clone().expect("lock is held")))
        }
    }

    async fn heartbeat_lock(&self, holder: &str) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        match inner.lock.as_mut().filter(|i| i.holder == holder) {
            Some(info) => {
                info.heartbeat_at = Utc::now();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn release_lock(&self, holder: &str) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        if inner.lock.as_ref().is_some_and(|i| i.holder == holder) {
            inner.lock = None;
        }
        Ok(())
    }

    async fn interrupt_webhook_runs(&self, started_before: DateTime<Utc>, reason: &str) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let mut n = 0;
        for run in inner
            .runs
            .iter_mut()
            .filter(|r| r.kind == RunKind::Webhook && r.status == RunStatus::Running && r.started_at < started_before)
        {
            run.status = RunStatus::Interrupted;
            run.error = Some(reason.to_owned());
            n += 1;
        }
        Ok(n)
    }

    async fn prune_runs(&self, before: DateTime<Utc>, keep: usize) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let newest_kept: Vec<i64> = inner.runs.iter().rev().take(keep).map(|r| r.id).collect();
        let len = inner.runs.len();
        inner.runs.retain(|r| r.status == RunStatus::Running || r.started_at >= before || newest_kept.contains(&r.id));
        Ok((len - inner.runs.len()) as u64)
    }

    async fn inbox_push(
        &self,
        notifications: &[Notification],
        now: DateTime<Utc>,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        for n in notifications {
            let existing = inner.inbox.values_mut().find(|e| e.kind == n.kind && e.entity_id == n.entity_id);
            match existing {
                Some(entry) => {
                    entry.seq += 1;
                    entry.deliveries += 1;
                    entry.event = n.event.clone();
                    entry.parent_id = n.parent_id.or(entry.parent_id);
                    if entry.failed_at.is_some() {
                        entry.failed_at = None;
                        entry.attempts = 0;
                        entry.next_attempt_at = due_at;
                    }
                }
                None => {
                    inner.next_inbox_id += 1;
                    let id = inner.next_inbox_id;
                    inner.inbox.insert(
                        id,
                        InboxEntry {
                            id,
                            kind: n.kind,
                            entity_id: n.entity_id,
                            parent_id: n.parent_id,
                            event: n.event.clone(),
                            deliveries: 1,
                            seq: 1,
                            received_at: now,
                            next_attempt_at: due_at,
                            attempts: 0,
                            last_error: None,
                            failed_at: None,
                            claimed_by: None,
                            claimed_until: None,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    async fn inbox_claim(
        &self,
        worker: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let mut due: Vec<(DateTime<Utc>, i64)> = inner
            .inbox
            .values()
            .filter(|e| e.failed_at.is_none() && e.next_attempt_at <= now && e.claimed_until.is_none_or(|c| c <= now))
            .map(|e| (e.next_attempt_at, e.id))
            .collect();
        due.sort();
        due.truncate(limit);
        let mut claimed = Vec::with_capacity(due.len());
        for (_, id) in due {
            if let Some(entry) = inner.inbox.get_mut(&id) {
                entry.claimed_by = Some(worker.to_owned());
                entry.claimed_until = Some(lease_until);
                claimed.push(entry.clone());
            }
        }
        Ok(claimed)
    }

    async fn inbox_finish(&self, results: &[InboxResult], now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let mut removed = 0;
        for result in results {
            match result {
                InboxResult::Done { id, seq, again_at } => {
                    let Some(entry) = inner.inbox.get_mut(id) else { continue };
                    if entry.seq == *seq {
                        inner.inbox.remove(id);
                        removed += 1;
                    } else {
                        entry.claimed_by = None;
                        entry.claimed_until = None;
                        entry.attempts = 0;
                        entry.next_attempt_at = *again_at;
                    }
                }
                InboxResult::Failed { id, error, retry_at } => {
                    let Some(entry) = inner.inbox.get_mut(id) else { continue };
                    entry.attempts += 1;
                    entry.last_error = Some(error.clone());
                    entry.claimed_by = None;
                    entry.claimed_until = None;
                    match retry_at {
                        Some(at) => entry.next_attempt_at = *at,
                        None => entry.failed_at = Some(now),
                    }
                }
            }
        }
        Ok(removed)
    }

    async fn inbox_entries(&self, failed_only: bool, limit: usize) -> Result<Vec<InboxEntry>, StoreError> {
        let inner = self.inner.lock().unwrap();
        let mut entries: Vec<InboxEntry> =
            inner.inbox.values().filter(|e| !failed_only || e.failed_at.is_some()).cloned().collect();
        entries.sort_by_key(|e| (e.received_at, e.id));
        entries.truncate(limit);
        Ok(entries)
    }

    async fn inbox_stats(&self) -> Result<InboxStats, StoreError> {
        let inner = self.inner.lock().unwrap();
        let pending = inner.inbox.values().filter(|e| e.failed_at.is_none());
        Ok(InboxStats {
            pending: pending.clone().count() as i64,
            failed: inner.inbox.values().filter(|e| e.failed_at.is_some()).count() as i64,
            oldest_pending: pending.map(|e| e.received_at).min(),
        })
    }

    async fn inbox_retry_failed(&self, ids: Option<&[i64]>, due_at: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let mut n = 0;
        for entry in inner.inbox.values_mut().filter(|e| e.failed_at.is_some()) {
            if ids.is_some_and(|ids| !ids.contains(&entry.id)) {
                continue;
            }
            entry.failed_at = None;
            entry.attempts = 0;
            entry.next_attempt_at = due_at;
            n += 1;
        }
        Ok(n)
    }
}
