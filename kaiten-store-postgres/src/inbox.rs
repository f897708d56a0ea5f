//! The webhook inbox (`webhook_inbox`, migration 4) and the run-log upkeep of webhook processing.
//! Semantics: those of [`kaiten_sync::MemoryStore`].
//!
//! - A push is one `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT DO UPDATE` in its own
//!   transaction, committed synchronously (an acknowledged delivery must survive a crash of the
//!   server too). Notifications for one entity within a push are counted together first (a
//!   statement may not update a row twice); entities are written in the order they first appear,
//!   so that new entries are numbered as the memory store numbers them (claims break ties of
//!   `next_attempt_at` by id). Two pushes naming the same entities in opposite orders can
//!   deadlock: the server ends one, which is tried again.
//! - A claim is one `UPDATE` of the rows a `SELECT ... FOR UPDATE SKIP LOCKED` picks: workers of
//!   several processes claiming at once each skip the rows the others are taking, so no row is
//!   held by two of them, and none waits for another.
//! - Like every operation of this store, each runs in an explicit transaction with unnamed
//!   statements (unless the store prepares them), so it works through a transaction-mode pooler.
//!   A deadlock or serialization failure is retried (the transaction rolled back whole).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kaiten_sync::{EntityKind, InboxEntry, InboxResult, InboxStats, Notification, StoreError};
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::{backend_message, sqlstate, Ctx};
use crate::PgStore;

/// How often an inbox operation is tried when it meets a deadlock or serialization failure.
const ATTEMPTS: usize = 3;

/// The columns of an entry, in the order [`entry_from_row`] reads them.
const COLUMNS: &str =
    "id, kind, entity_id, parent_id, event, deliveries, seq, received_at, next_attempt_at, attempts, \
                       last_error, failed_at, claimed_by, claimed_until";

/// The inbox's statements for one schema.
#[derive(Debug, Clone)]
pub(crate) struct InboxSql {
    /// `$1` kinds, `$2` entity ids, `$3` parent ids, `$4` events, `$5` delivery counts (arrays,
    /// one element per entity), `$6` received at, `$7` due at.
    push: String,
    /// `$1` worker, `$2` lease until, `$3` now, `$4` limit.
    claim: String,
    /// `$1` ids, `$2` seqs: removes the entries whose seq is unchanged; returns their ids.
    done_delete: String,
    /// `$1` ids, `$2` due again at: releases entries (those still there after `done_delete`).
    done_release: String,
    /// `$1` ids, `$2` errors, `$3` retry at (NULL: give up), `$4` now.
    failed: String,
    /// `$1` failed only, `$2` limit.
    entries: String,
    stats: String,
    /// `$1` ids (NULL: every failed entry), `$2` due at.
    retry_failed: String,
    /// `$1` started before, `$2` reason.
    interrupt_webhook_runs: String,
    /// `$1` before, `$2` keep.
    prune_runs: String,
}

impl InboxSql {
    /// The statements for a schema whose name was validated (`s` is quoted).
    pub(crate) fn new(s: &str) -> Self {
        let w = format!("{s}.webhook_inbox");
        Self {
            push: format!(
                "INSERT INTO {w} AS w (kind, entity_id, parent_id, event, deliveries, seq, received_at, \
                 next_attempt_at) \
                 SELECT n.kind, n.entity_id, n.parent_id, n.event, n.count, n.count, $6::timestamptz, $7::timestamptz \
                 FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[]) \
                   AS n(kind, entity_id, parent_id, event, count) \
                 ON CONFLICT (kind, entity_id) DO UPDATE SET seq = w.seq + EXCLUDED.seq, \
                   deliveries = w.deliveries + EXCLUDED.deliveries, event = EXCLUDED.event, \
                   parent_id = COALESCE(EXCLUDED.parent_id, w.parent_id), \
                   attempts = CASE WHEN w.failed_at IS NULL THEN w.attempts ELSE 0 END, \
                   next_attempt_at = CASE WHEN w.failed_at IS NULL THEN w.next_attempt_at \
                     ELSE EXCLUDED.next_attempt_at END, \
                   failed_at = NULL"
            ),
            claim: format!(
                "WITH due AS (SELECT id FROM {w} \
                   WHERE failed_at IS NULL AND next_attempt_at <= $3::timestamptz \
                     AND (claimed_until IS NULL OR claimed_until <= $3::timestamptz) \
                   ORDER BY next_attempt_at, id LIMIT $4::bigint FOR UPDATE SKIP LOCKED) \
                 UPDATE {w} AS w SET claimed_by = $1::text, claimed_until = $2::timestamptz \
                 FROM due WHERE w.id = due.id RETURNING {}",
                qualified("w")
            ),
            done_delete: format!(
                "DELETE FROM {w} AS w USING UNNEST($1::bigint[], $2::bigint[]) AS d(id, seq) \
                 WHERE w.id = d.id AND w.seq = d.seq RETURNING w.id"
            ),
            done_release: format!(
                "UPDATE {w} AS w SET claimed_by = NULL, claimed_until = NULL, attempts = 0, \
                 next_attempt_at = d.again_at \
                 FROM UNNEST($1::bigint[], $2::timestamptz[]) AS d(id, again_at) WHERE w.id = d.id"
            ),
            failed: format!(
                "UPDATE {w} AS w SET attempts = w.attempts + 1, last_error = f.error, claimed_by = NULL, \
                 claimed_until = NULL, next_attempt_at = COALESCE(f.retry_at, w.next_attempt_at), \
                 failed_at = CASE WHEN f.retry_at IS NULL THEN $4::timestamptz ELSE w.failed_at END \
                 FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[]) AS f(id, error, retry_at) WHERE w.id = f.id"
            ),
            entries: format!(
                "SELECT {COLUMNS} FROM {w} WHERE (NOT $1::boolean OR failed_at IS NOT NULL) \
                 ORDER BY received_at, id LIMIT $2::bigint"
            ),
            stats: format!(
                "SELECT count(*) FILTER (WHERE failed_at IS NULL), count(*) FILTER (WHERE failed_at IS NOT NULL), \
                 min(received_at) FILTER (WHERE failed_at IS NULL) FROM {w}"
            ),
            retry_failed: format!(
                "UPDATE {w} SET failed_at = NULL, attempts = 0, next_attempt_at = $2::timestamptz \
                 WHERE failed_at IS NOT NULL AND ($1::bigint[] IS NULL OR id = ANY ($1::bigint[]))"
            ),
            interrupt_webhook_runs: format!(
                "UPDATE {s}.sync_logs SET status = 'interrupted', error = $2::text \
                 WHERE status = 'running' AND kind = 'webhook' AND started_at < $1::timestamptz"
            ),
            prune_runs: format!(
                "DELETE FROM {s}.sync_logs WHERE status <> 'running' AND started_at < $1::timestamptz \
                 AND id NOT IN (SELECT id FROM {s}.sync_logs ORDER BY id DESC LIMIT $2::bigint)"
            ),
        }
    }
}

/// [`COLUMNS`] qualified by a table alias.
fn qualified(alias: &str) -> String {
    COLUMNS.split(", ").map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", ")
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn entry_from_row(row: &PgRow) -> Result<InboxEntry, StoreError> {
    let read = || -> Result<InboxEntry, sqlx::Error> {
        let kind: String = row.try_get(1)?;
        let id: i64 = row.try_get(0)?;
        let kind = kind.parse::<EntityKind>().map_err(|_| {
            sqlx::Error::Decode(format!("webhook_inbox entry {id} has an unknown kind {kind:?}").into())
        })?;
        Ok(InboxEntry {
            id,
            kind,
            entity_id: row.try_get(2)?,
            parent_id: row.try_get(3)?,
            event: row.try_get(4)?,
            deliveries: row.try_get(5)?,
            seq: row.try_get(6)?,
            received_at: row.try_get(7)?,
            next_attempt_at: row.try_get(8)?,
            attempts: row.try_get(9)?,
            last_error: row.try_get(10)?,
            failed_at: row.try_get(11)?,
            claimed_by: row.try_get(12)?,
            claimed_until: row.try_get(13)?,
        })
    };
    read().map_err(|e| backend_message(format!("read the webhook inbox: {e}")))
}

/// A push's notifications, one element per entity, in the order entities first appear.
#[derive(Debug, Default)]
struct PushArrays {
    kinds: Vec<&'static str>,
    ids: Vec<i64>,
    parents: Vec<Option<i64>>,
    events: Vec<String>,
    counts: Vec<i64>,
}

impl PushArrays {
    /// Folds the notifications for one entity into one element, as applying them one after the
    /// other would: the count of them, the last event, the last non-null parent.
    fn new(notifications: &[Notification]) -> Self {
        let mut arrays = Self::default();
        let mut index: HashMap<(EntityKind, i64), usize> = HashMap::new();
        for n in notifications {
            let i = *index.entry((n.kind, n.entity_id)).or_insert_with(|| {
                arrays.kinds.push(n.kind.as_str());
                arrays.ids.push(n.entity_id);
                arrays.parents.push(None);
                arrays.events.push(String::new());
                arrays.counts.push(0);
                arrays.ids.len() - 1
            });
            arrays.parents[i] = n.parent_id.or(arrays.parents[i]);
            arrays.events[i].clone_from(&n.event);
            arrays.counts[i] += 1;
        }
        arrays
    }
}

/// What a finish does, as arrays for its statements.
#[derive(Debug, Default)]
struct FinishArrays {
    done_ids: Vec<i64>,
    done_seqs: Vec<i64>,
    done_again: Vec<DateTime<Utc>>,
    failed_ids: Vec<i64>,
    failed_errors: Vec<String>,
    failed_retry: Vec<Option<DateTime<Utc>>>,
}

impl FinishArrays {
    fn new(results: &[InboxResult]) -> Self {
        let mut arrays = Self::default();
        for result in results {
            match result {
                InboxResult::Done { id, seq, again_at } => {
                    arrays.done_ids.push(*id);
                    arrays.done_seqs.push(*seq);
                    arrays.done_again.push(*again_at);
                }
                InboxResult::Failed { id, error, retry_at } => {
                    arrays.failed_ids.push(*id);
                    arrays.failed_errors.push(error.clone());
                    arrays.failed_retry.push(*retry_at);
                }
            }
        }
        arrays
    }
}

fn is_retryable(e: &sqlx::Error) -> bool {
    matches!(sqlstate(e).as_deref(), Some("40001") | Some("40P01"))
}

impl PgStore {
    /// Runs `attempt` (one transaction) again after a deadlock or serialization failure, which
    /// rolled it back whole.
    async fn inbox_retrying<T, F, Fut>(&self, ctx: Ctx<'_>, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let mut n = 1;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) if n < ATTEMPTS && is_retryable(&e) => {
                    tracing::debug!(attempt = n, "retrying ({}) after: {e}", ctx.what);
                    tokio::time::sleep(Duration::from_millis(5 * n as u64)).await;
                    n += 1;
                }
                Err(e) => return Err(self.err(e, ctx)),
            }
        }
    }

    pub(crate) async fn inbox_push_impl(
        &self,
        notifications: &[Notification],
        now: DateTime<Utc>,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if notifications.is_empty() {
            return Ok(());
        }
        let arrays = &PushArrays::new(notifications);
        let sql = &self.inner.inbox.push;
        self.inbox_retrying(Ctx::new("record webhook notifications"), move || async move {
            let mut tx = self.begin_with(None).await?;
            self.query(sql)
                .bind(arrays.kinds.as_slice())
                .bind(arrays.ids.as_slice())
                .bind(arrays.parents.as_slice())
                .bind(arrays.events.as_slice())
                .bind(arrays.counts.as_slice())
                .bind(now)
                .bind(due_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
        .await
    }

    pub(crate) async fn inbox_claim_impl(
        &self,
        worker: &str,
        n: usize,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let sql = &self.inner.inbox.claim;
        let rows = self
            .inbox_retrying(Ctx::new("claim webhook inbox entries"), move || async move {
                let mut tx = self.begin_with(None).await?;
                let rows =
                    self.query(sql).bind(worker).bind(lease_until).bind(now).bind(limit(n)).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                Ok(rows)
            })
            .await?;
        let mut entries = rows.iter().map(entry_from_row).collect::<Result<Vec<_>, _>>()?;
        // RETURNING comes in no particular order.
        entries.sort_by_key(|e| (e.next_attempt_at, e.id));
        Ok(entries)
    }

    pub(crate) async fn inbox_finish_impl(
        &self,
        results: &[InboxResult],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if results.is_empty() {
            return Ok(0);
        }
        let distinct = results.iter().map(result_id).collect::<BTreeSet<_>>().len() == results.len();
        // Results for distinct entries are independent: one set of statements for all of them.
        // An entry named twice is finished result by result, in order, like the memory store.
        let batches: &[FinishArrays] = &if distinct {
            vec![FinishArrays::new(results)]
        } else {
            results.chunks(1).map(FinishArrays::new).collect::<Vec<_>>()
        };
        let inbox = &self.inner.inbox;
        self.inbox_retrying(Ctx::new("finish webhook inbox entries"), move || async move {
            let mut tx = self.begin_with(None).await?;
            let mut removed = 0u64;
            for batch in batches {
                if !batch.done_ids.is_empty() {
                    let deleted = self
                        .query(&inbox.done_delete)
                        .bind(batch.done_ids.as_slice())
                        .bind(batch.done_seqs.as_slice())
                        .fetch_all(&mut *tx)
                        .await?
                        .len();
                    removed += deleted as u64;
                    // Entries delivered again meanwhile are still there: released, due again.
                    if deleted < batch.done_ids.len() {
                        self.query(&inbox.done_release)
                            .bind(batch.done_ids.as_slice())
                            .bind(batch.done_again.as_slice())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                if !batch.failed_ids.is_empty() {
                    self.query(&inbox.failed)
                        .bind(batch.failed_ids.as_slice())
                        .bind(batch.failed_errors.as_slice())
                        .bind(batch.failed_retry.as_slice())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(removed)
        })
        .await
    }

    pub(crate) async fn inbox_entries_impl(&self, failed_only: bool, n: usize) -> Result<Vec<InboxEntry>, StoreError> {
        let ctx = Ctx::new("list webhook inbox entries");
        let statement = self.query(&self.inner.inbox.entries).bind(failed_only).bind(limit(n));
        let rows = self.in_transaction(ctx, async |conn| statement.fetch_all(conn).await).await?;
        rows.iter().map(entry_from_row).collect()
    }

    pub(crate) async fn inbox_stats_impl(&self) -> Result<InboxStats, StoreError> {
        let ctx = Ctx::new("count webhook inbox entries");
        let statement = self.query(&self.inner.inbox.stats);
        let row = self.in_transaction(ctx, async |conn| statement.fetch_one(conn).await).await?;
        let read = || -> Result<InboxStats, sqlx::Error> {
            Ok(InboxStats { pending: row.try_get(0)?, failed: row.try_get(1)?, oldest_pending: row.try_get(2)? })
        };
        read().map_err(|e| self.err(e, ctx))
    }

    pub(crate) async fn inbox_retry_failed_impl(
        &self,
        ids: Option<&[i64]>,
        due_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.execute_counting(Ctx::new("retry failed webhook inbox entries"), &self.inner.inbox.retry_failed, |q| {
            q.bind(ids).bind(due_at)
        })
        .await
    }

    pub(crate) async fn interrupt_webhook_runs_impl(
        &self,
        started_before: DateTime<Utc>,
        reason: &str,
    ) -> Result<u64, StoreError> {
        self.execute_counting(
            Ctx::new("mark interrupted webhook runs"),
            &self.inner.inbox.interrupt_webhook_runs,
            |q| q.bind(started_before).bind(reason),
        )
        .await
    }

    pub(crate) async fn prune_runs_impl(&self, before: DateTime<Utc>, keep: usize) -> Result<u64, StoreError> {
        self.execute_counting(Ctx::new("prune the run log"), &self.inner.inbox.prune_runs, |q| {
            q.bind(before).bind(limit(keep))
        })
        .await
    }

    /// Runs one statement in a transaction; returns the rows it affected.
    async fn execute_counting<'q>(
        &self,
        ctx: Ctx<'_>,
        sql: &'q str,
        bind: impl FnOnce(
            sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<u64, StoreError> {
        let statement = bind(self.query(sql));
        let done = self.in_transaction(ctx, async |conn| statement.execute(conn).await).await?;
        Ok(done.rows_affected())
    }
}

fn result_id(result: &InboxResult) -> i64 {
    match result {
        InboxResult::Done { id, .. } | InboxResult::Failed { id, .. } => *id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: EntityKind, id: i64, parent: Option<i64>, event: &str) -> Notification {
        Notification { kind, entity_id: id, parent_id: parent, event: event.to_owned() }
    }

    #[test]
    fn a_push_folds_notifications_per_entity_in_order_of_appearance() {
        let arrays = PushArrays::new(&[
            note(EntityKind::Cards, 7, None, "card:add"),
            note(EntityKind::Boards, 3, Some(1), "board:update"),
            note(EntityKind::Cards, 2, None, "card:update"),
            note(EntityKind::Cards, 7, Some(9), "comment:add"),
            note(EntityKind::Cards, 7, None, "card:update"),
        ]);
        assert_eq!(arrays.kinds, vec!["cards", "boards", "cards"]);
        assert_eq!(arrays.ids, vec![7, 3, 2]);
        assert_eq!(arrays.parents, vec![Some(9), Some(1), None]);
        assert_eq!(arrays.events, vec!["card:update", "board:update", "card:update"]);
        assert_eq!(arrays.counts, vec![3, 1, 1]);
    }

    #[test]
    fn statements_name_the_schema() {
        let sql = InboxSql::new("\"kaiten\"");
        assert!(sql.claim.contains("FOR UPDATE SKIP LOCKED"));
        assert!(sql.claim.contains("RETURNING w.id, w.kind, w.entity_id"));
        for statement in [&sql.push, &sql.claim, &sql.entries, &sql.prune_runs] {
            assert!(statement.contains("\"kaiten\"."), "{statement}");
        }
    }
}
