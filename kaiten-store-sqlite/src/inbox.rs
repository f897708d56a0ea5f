//! The webhook inbox (`webhook_inbox`, migration 4) and the run-log upkeep of webhook processing,
//! as synchronous functions on the writer thread's connection. Semantics: those of
//! [`kaiten_sync::MemoryStore`].
//!
//! Every write runs in an `IMMEDIATE` transaction: it takes the database's write lock before it
//! reads, so another process sharing the file can neither slip in between (two workers never
//! claim one entry) nor make the transaction fail on upgrading a read snapshot.

use chrono::{DateTime, Utc};
use kaiten_sync::{EntityKind, InboxEntry, InboxResult, InboxStats, Notification, StoreError};
use rusqlite::{params, Connection, TransactionBehavior};

use crate::error::{clone_err, corrupt, db_err};
use crate::sql::{fmt_time_fixed, id_list, read_opt_time, read_time};

/// The columns of an entry, in the order [`read_entry`] reads them.
const COLUMNS: &str = "id, kind, entity_id, parent_id, event, deliveries, seq, received_at, next_attempt_at, \
                       attempts, last_error, failed_at, claimed_by, claimed_until";

/// `?1` kind, `?2` entity id, `?3` parent id, `?4` event, `?5` received at, `?6` due at. A
/// delivery for an entity already in the inbox bumps `seq` and `deliveries`, takes the event and a
/// non-null parent, and revives a failed entry (attempts reset, due at `?6`); otherwise its
/// `next_attempt_at` is kept. (In `DO UPDATE`, bare column names are the stored row's values.)
const PUSH: &str = "INSERT INTO webhook_inbox (kind, entity_id, parent_id, event, received_at, next_attempt_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (kind, entity_id) DO UPDATE SET seq = seq + 1, deliveries = deliveries + 1, \
       event = excluded.event, parent_id = COALESCE(excluded.parent_id, parent_id), \
       attempts = CASE WHEN failed_at IS NULL THEN attempts ELSE 0 END, \
       next_attempt_at = CASE WHEN failed_at IS NULL THEN next_attempt_at ELSE excluded.next_attempt_at END, \
       failed_at = NULL";

/// A run-log time (spelled by `fmt_time`: 3, 6 or 9 fraction digits) widened to nine digits
/// without the `Z`, so that comparing it with [`cut_off`] as text is exact.
fn fixed_width(column: &str) -> String {
    format!("substr(replace({column}, 'Z', '') || '000000', 1, 29)")
}

/// A cut-off compared with [`fixed_width`].
fn cut_off(t: &DateTime<Utc>) -> String {
    let mut s = fmt_time_fixed(t);
    s.pop();
    s
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Notifications converted for the writer thread (on the caller's task).
#[derive(Debug)]
pub(crate) struct PreparedPush {
    notes: Vec<(&'static str, i64, Option<i64>, String)>,
    now: String,
    due: String,
}

impl PreparedPush {
    pub(crate) fn new(notifications: &[Notification], now: DateTime<Utc>, due_at: DateTime<Utc>) -> Self {
        Self {
            notes: notifications.iter().map(|n| (n.kind.as_str(), n.entity_id, n.parent_id, n.event.clone())).collect(),
            now: fmt_time_fixed(&now),
            due: fmt_time_fixed(&due_at),
        }
    }

    /// Writes the notifications on `conn`, inside the caller's transaction.
    pub(crate) fn write(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut stmt = conn.prepare_cached(PUSH).map_err(db_err)?;
        for (kind, id, parent, event) in &self.notes {
            stmt.execute(params![kind, id, parent, event, self.now, self.due]).map_err(db_err)?;
        }
        Ok(())
    }
}

/// Records the notifications of several calls in one transaction (one commit for all), each call
/// under a savepoint so that a call that fails leaves the others' rows in. Returns each call's
/// result, in order; when the commit itself fails, every call fails.
pub(crate) fn push_group(conn: &mut Connection, pushes: &[&PreparedPush]) -> Vec<Result<(), StoreError>> {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = db_err(e);
            return pushes.iter().map(|_| Err(clone_err(&e))).collect();
        }
    };
    let mut results = Vec::with_capacity(pushes.len());
    for push in pushes {
        let result = tx.savepoint().map_err(db_err).and_then(|sp| {
            push.write(&sp)?;
            sp.commit().map_err(db_err)
        });
        results.push(result);
    }
    if let Err(e) = tx.commit() {
        let e = db_err(e);
        for result in &mut results {
            if result.is_ok() {
                *result = Err(clone_err(&e));
            }
        }
    }
    results
}

fn read_entry(row: &rusqlite::Row<'_>) -> Result<InboxEntry, StoreError> {
    let id: i64 = row.get(0).map_err(db_err)?;
    let what = |column: &str| format!("webhook_inbox.{column} of entry {id}");
    let kind: String = row.get(1).map_err(db_err)?;
    let time = |i: usize, column: &str| -> Result<DateTime<Utc>, StoreError> {
        read_time(&row.get::<_, String>(i).map_err(db_err)?, &what(column))
    };
    let opt_time = |i: usize, column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        read_opt_time(row.get(i).map_err(db_err)?, &what(column))
    };
    Ok(InboxEntry {
        id,
        kind: kind.parse::<EntityKind>().map_err(|e| corrupt(format!("{}: {e}", what("kind"))))?,
        entity_id: row.get(2).map_err(db_err)?,
        parent_id: row.get(3).map_err(db_err)?,
        event: row.get(4).map_err(db_err)?,
        deliveries: row.get(5).map_err(db_err)?,
        seq: row.get(6).map_err(db_err)?,
        received_at: time(7, "received_at")?,
        next_attempt_at: time(8, "next_attempt_at")?,
        attempts: row.get(9).map_err(db_err)?,
        last_error: row.get(10).map_err(db_err)?,
        failed_at: opt_time(11, "failed_at")?,
        claimed_by: row.get(12).map_err(db_err)?,
        claimed_until: opt_time(13, "claimed_until")?,
    })
}

fn read_entries(mut rows: rusqlite::Rows<'_>) -> Result<Vec<InboxEntry>, StoreError> {
    let mut entries = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        entries.push(read_entry(row)?);
    }
    Ok(entries)
}

/// Claims up to `n` due entries, oldest due first, in one IMMEDIATE transaction.
pub(crate) fn claim(
    conn: &mut Connection,
    worker: &str,
    n: usize,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Vec<InboxEntry>, StoreError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let mut entries = {
        let mut stmt = tx
            .prepare_cached(&format!(
                "UPDATE webhook_inbox SET claimed_by = ?1, claimed_until = ?2 \
                 WHERE id IN (SELECT id FROM webhook_inbox \
                   WHERE failed_at IS NULL AND next_attempt_at <= ?3 AND (claimed_until IS NULL OR claimed_until <= ?3) \
                   ORDER BY next_attempt_at, id LIMIT ?4) \
                 RETURNING {COLUMNS}"
            ))
            .map_err(db_err)?;
        let rows = stmt
            .query(params![worker, fmt_time_fixed(&lease_until), fmt_time_fixed(&now), limit(n)])
            .map_err(db_err)?;
        read_entries(rows)?
    };
    tx.commit().map_err(db_err)?;
    // RETURNING comes in no particular order.
    entries.sort_by_key(|e| (e.next_attempt_at, e.id));
    Ok(entries)
}

/// Records how claimed entries ended, in one IMMEDIATE transaction; returns how many were removed.
pub(crate) fn finish(conn: &mut Connection, results: &[InboxResult], now: DateTime<Utc>) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let mut removed = 0;
    for result in results {
        match result {
            InboxResult::Done { id, seq, again_at } => {
                let deleted = tx
                    .prepare_cached("DELETE FROM webhook_inbox WHERE id = ?1 AND seq = ?2")
                    .and_then(|mut s| s.execute(params![id, seq]))
                    .map_err(db_err)?;
                if deleted > 0 {
                    removed += deleted as u64;
                } else {
                    // Delivered again meanwhile (or gone): released, due again at `again_at`.
                    tx.prepare_cached(
                        "UPDATE webhook_inbox SET claimed_by = NULL, claimed_until = NULL, attempts = 0, \
                         next_attempt_at = ?2 WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![id, fmt_time_fixed(again_at)]))
                    .map_err(db_err)?;
                }
            }
            InboxResult::Failed { id, error, retry_at } => {
                tx.prepare_cached(
                    "UPDATE webhook_inbox SET attempts = attempts + 1, last_error = ?2, claimed_by = NULL, \
                     claimed_until = NULL, next_attempt_at = COALESCE(?3, next_attempt_at), \
                     failed_at = CASE WHEN ?3 IS NULL THEN ?4 ELSE failed_at END WHERE id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![id, error, retry_at.as_ref().map(fmt_time_fixed), fmt_time_fixed(&now)])
                })
                .map_err(db_err)?;
            }
        }
    }
    tx.commit().map_err(db_err)?;
    Ok(removed)
}

/// Entries (all, or the failed ones), oldest received first.
pub(crate) fn entries(conn: &Connection, failed_only: bool, n: usize) -> Result<Vec<InboxEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM webhook_inbox WHERE (?1 = 0 OR failed_at IS NOT NULL) \
             ORDER BY received_at, id LIMIT ?2"
        ))
        .map_err(db_err)?;
    let rows = stmt.query(params![failed_only, limit(n)]).map_err(db_err)?;
    read_entries(rows)
}

pub(crate) fn stats(conn: &Connection) -> Result<InboxStats, StoreError> {
    let (pending, failed, oldest): (i64, i64, Option<String>) = conn
        .prepare_cached(
            "SELECT count(*) FILTER (WHERE failed_at IS NULL), count(*) FILTER (WHERE failed_at IS NOT NULL), \
             min(received_at) FILTER (WHERE failed_at IS NULL) FROM webhook_inbox",
        )
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
        .map_err(db_err)?;
    Ok(InboxStats {
        pending,
        failed,
        oldest_pending: read_opt_time(oldest, "webhook_inbox.received_at of the oldest pending entry")?,
    })
}

/// Makes failed entries (`ids`, or all) due again at `due_at`.
pub(crate) fn retry_failed(
    conn: &mut Connection,
    ids: Option<&[i64]>,
    due_at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let n = tx
        .prepare_cached(
            "UPDATE webhook_inbox SET failed_at = NULL, attempts = 0, next_attempt_at = ?2 \
             WHERE failed_at IS NOT NULL AND (?1 IS NULL OR id IN (SELECT value FROM json_each(?1)))",
        )
        .and_then(|mut s| s.execute(params![ids.map(|ids| id_list(ids.iter().copied())), fmt_time_fixed(&due_at)]))
        .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(n as u64)
}

/// Marks running webhook runs started before the cut-off interrupted.
pub(crate) fn interrupt_webhook_runs(
    conn: &mut Connection,
    started_before: DateTime<Utc>,
    reason: &str,
) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let n = tx
        .prepare_cached(&format!(
            "UPDATE sync_logs SET status = 'interrupted', error = ?2 \
             WHERE status = 'running' AND kind = 'webhook' AND {} < ?1",
            fixed_width("started_at")
        ))
        .and_then(|mut s| s.execute(params![cut_off(&started_before), reason]))
        .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(n as u64)
}

/// Deletes finished runs started before `before`, except the newest `keep` runs.
pub(crate) fn prune_runs(conn: &mut Connection, before: DateTime<Utc>, keep: usize) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let n = tx
        .prepare_cached(&format!(
            "DELETE FROM sync_logs WHERE status <> 'running' AND {} < ?1 \
             AND id NOT IN (SELECT id FROM sync_logs ORDER BY id DESC LIMIT ?2)",
            fixed_width("started_at")
        ))
        .and_then(|mut s| s.execute(params![cut_off(&before), limit(keep)]))
        .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::fmt_time;
    use chrono::TimeZone;

    #[test]
    fn run_log_times_compare_exactly_with_a_cut_off() {
        let conn = Connection::open_in_memory().unwrap();
        let t = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 5).unwrap();
        let instants = [
            t,
            t + chrono::Duration::microseconds(500),
            t + chrono::Duration::nanoseconds(1),
            t - chrono::Duration::nanoseconds(1),
            t + chrono::Duration::milliseconds(1),
        ];
        for stored in &instants {
            for cut in &instants {
                let below: bool = conn
                    .query_row(
                        &format!("SELECT {} < ?2", fixed_width("?1")),
                        params![fmt_time(stored), cut_off(cut)],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(below, stored < cut, "{stored} < {cut}");
            }
        }
    }
}
