//! The store's operations as synchronous functions on a connection; they run on the writer thread.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kaiten_sync::store::CardMembers;
use kaiten_sync::{
    EntityKind, EntityState, LockAttempt, LockInfo, Page, PageOutcome, RunRecord, Scope, StoreError, StoredRecord,
    TableCount,
};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{backend, corrupt, db_err};
use crate::sql::{
    compare_json, fmt_time, from_sqlite, id_list, parse_time, read_opt_time, read_time, table_sql, to_sqlite,
    update_sql, JsonMatch,
};

/// The name of the lock row in `sync_lock`.
const LOCK_NAME: &str = "sync";

/// A row of a page, converted to SQLite values (on the caller's task, before it is sent to the
/// writer thread).
#[derive(Debug)]
pub(crate) struct PreparedRow {
    id: i64,
    updated: Option<DateTime<Utc>>,
    version: Option<i64>,
    deleted: bool,
    values: Vec<Value>,
    raw: String,
}

/// A page, owned and converted.
#[derive(Debug)]
pub(crate) struct PreparedPage {
    kind: EntityKind,
    rows: Vec<PreparedRow>,
    card_tags: Vec<(i64, i64)>,
    card_members: CardMembers,
    sweep: Option<i64>,
    state: Option<EntityState>,
    synced_at: String,
}

impl PreparedPage {
    /// Converts a page; refuses records the memory store refuses (non-positive ids).
    pub(crate) fn new(page: &Page) -> Result<Self, StoreError> {
        let kind = page.batch.kind();
        let rows = page
            .batch
            .rows()
            .into_iter()
            .map(|row| {
                if row.id <= 0 {
                    return Err(StoreError::InvalidData {
                        kind,
                        message: format!("record id {} is not a positive integer", row.id),
                    });
                }
                Ok(PreparedRow {
                    id: row.id,
                    updated: row.updated,
                    version: row.version,
                    deleted: row.deleted,
                    values: row.values.into_iter().map(to_sqlite).collect(),
                    // The text as Kaiten sent it: no tree was built, none is serialised.
                    raw: row.raw.as_str().to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let card_tags = if kind == EntityKind::Cards { page.batch.card_tags() } else { Vec::new() };
        Ok(Self {
            kind,
            rows,
            card_tags,
            card_members: page.batch.card_members(),
            sweep: page.sweep,
            state: page.state.clone(),
            synced_at: fmt_time(&page.synced_at),
        })
    }
}

/// A full listing writing into an empty `cards` table (a first sync): its secondary indexes are
/// dropped, their definitions kept in `deferred_indexes` (migration 6), so that the listing's
/// inserts touch the table alone; [`restore_deferred_indexes`] builds each once afterwards. The
/// partial indexes (over deleted rows) stay: they take no entry for a live card.
fn defer_card_indexes_if_empty(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    let has_cards: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM cards)", [], |r| r.get(0)).map_err(db_err)?;
    if has_cards {
        return Ok(());
    }
    let indexes: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT name, sql FROM sqlite_master
                 WHERE type = 'index' AND tbl_name = 'cards' AND sql IS NOT NULL AND sql NOT LIKE '% WHERE %'
                   AND name NOT IN (SELECT name FROM deferred_indexes)",
            )
            .map_err(db_err)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)?
    };
    for (name, sql) in &indexes {
        tx.execute("INSERT INTO deferred_indexes (name, sql) VALUES (?1, ?2)", params![name, sql]).map_err(db_err)?;
        tx.execute_batch(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\""))).map_err(db_err)?;
    }
    if !indexes.is_empty() {
        tracing::debug!(indexes = indexes.len(), "first full listing into an empty cards table: indexes deferred");
    }
    Ok(())
}

/// Whether a first full listing is filling `cards` (its indexes are deferred).
fn deferring_indexes(tx: &rusqlite::Transaction<'_>) -> Result<bool, StoreError> {
    tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM deferred_indexes)")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db_err)
}

/// Builds the indexes [`defer_card_indexes_if_empty`] set aside (none: nothing to do), and moves
/// the first listing's tag links from `card_tags_pending` into `card_tags` in key order, in one
/// transaction. Called when the card state is saved (the end of a listing) and by `migrate`, so an
/// index is never missing for longer than a first listing, even one that was killed.
pub(crate) fn restore_deferred_indexes(conn: &mut Connection) -> Result<usize, StoreError> {
    let pending: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM deferred_indexes)", [], |r| r.get(0)).map_err(db_err)?;
    if !pending {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let indexes: Vec<(String, String)> = {
        let mut stmt = tx.prepare("SELECT name, sql FROM deferred_indexes ORDER BY name").map_err(db_err)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)?
    };
    for (_, sql) in &indexes {
        tx.execute_batch(sql).map_err(db_err)?;
    }
    tx.execute_batch(
        "INSERT OR IGNORE INTO card_tags (card_id, tag_id)
           SELECT card_id, tag_id FROM card_tags_pending ORDER BY card_id, tag_id;
         DELETE FROM card_tags_pending;",
    )
    .map_err(db_err)?;
    tx.execute("DELETE FROM deferred_indexes", []).map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    tracing::debug!(indexes = indexes.len(), "deferred indexes of cards built");
    Ok(indexes.len())
}

/// What `apply_page` needs of a stored row.
struct Existing {
    updated: Option<DateTime<Utc>>,
    version: Option<i64>,
    raw: String,
    deleted: bool,
    seen_sweep: Option<i64>,
}

/// Writes a page in one IMMEDIATE transaction.
///
/// The stored rows of the page are read with one `SELECT ... WHERE id IN (...)`, the memory
/// store's rules are applied in Rust, and only rows that are new or changed (and not older) are
/// written. The transaction holds the write lock from its first statement, so nothing can change
/// between the read and the writes.
pub(crate) fn apply_page(conn: &mut Connection, page: PreparedPage) -> Result<PageOutcome, StoreError> {
    let sql = table_sql(page.kind);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let mut outcome = PageOutcome::default();
    if page.kind == EntityKind::Cards && page.sweep.is_some() && !page.rows.is_empty() {
        defer_card_indexes_if_empty(&tx)?;
    }

    let mut existing: HashMap<i64, Existing> = HashMap::with_capacity(page.rows.len());
    if !page.rows.is_empty() {
        let mut stmt = tx.prepare_cached(&sql.existing).map_err(db_err)?;
        let mut rows = stmt.query([id_list(page.rows.iter().map(|r| r.id))]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let id: i64 = row.get(0).map_err(db_err)?;
            let updated: Option<String> = row.get(1).map_err(db_err)?;
            existing.insert(
                id,
                Existing {
                    // A stored `updated` that is not a timestamp (edited by hand) counts as unknown.
                    updated: updated.as_deref().and_then(parse_time),
                    version: row.get(2).map_err(db_err)?,
                    raw: row.get(3).map_err(db_err)?,
                    deleted: row.get(4).map_err(db_err)?,
                    seen_sweep: row.get(5).map_err(db_err)?,
                },
            );
        }
    }

    // Decide, like the memory store: new rows are inserted; stored rows are rewritten only when
    // they changed and the incoming record is not older; every row of a sweep is marked seen.
    let mut inserts: Vec<&PreparedRow> = Vec::new();
    let mut updates: Vec<&PreparedRow> = Vec::new();
    let mut to_mark_seen: Vec<i64> = Vec::new();
    let mut respelled: Vec<&PreparedRow> = Vec::new();
    for row in &page.rows {
        match existing.get(&row.id) {
            None => inserts.push(row),
            Some(ex) => {
                let json = compare_json(&ex.raw, &row.raw);
                let changed = ex.deleted != row.deleted || json == JsonMatch::Different;
                if changed
                    && kaiten_sync::store::incoming_is_not_older(ex.updated, ex.version, row.updated, row.version)
                {
                    updates.push(row);
                    continue;
                }
                if page.sweep.is_some() && ex.seen_sweep != page.sweep {
                    to_mark_seen.push(row.id);
                }
                if !changed && json == JsonMatch::Respelled {
                    // Unchanged, but stored as another spelling: keep Kaiten's, so that the next
                    // listing compares texts only.
                    respelled.push(row);
                }
            }
        }
    }
    outcome.inserted = inserts.len() as u64;
    outcome.updated = updates.len() as u64;
    outcome.unchanged = (page.rows.len() - inserts.len() - updates.len()) as u64;

    let n = page.kind.table().columns.len();
    let sweep = page.sweep.map_or(Value::Null, Value::Integer);
    let synced_at = Value::Text(page.synced_at.clone());
    if !inserts.is_empty() {
        // The generic upsert; its ON CONFLICT branch never fires here (the rows were just looked
        // up under the write lock) but keeps the statement right on its own.
        let mut insert = tx.prepare_cached(&sql.upsert).map_err(db_err)?;
        for row in &inserts {
            insert.raw_bind_parameter(1, row.id).map_err(db_err)?;
            for (i, value) in row.values.iter().enumerate() {
                insert.raw_bind_parameter(i + 2, value).map_err(db_err)?;
            }
            insert.raw_bind_parameter(n + 2, &row.raw).map_err(db_err)?;
            insert.raw_bind_parameter(n + 3, &synced_at).map_err(db_err)?;
            insert.raw_bind_parameter(n + 4, if row.deleted { &synced_at } else { &Value::Null }).map_err(db_err)?;
            insert.raw_bind_parameter(n + 5, &sweep).map_err(db_err)?;
            insert.raw_execute().map_err(db_err)?;
        }
    }
    if !updates.is_empty() {
        // Set only the typed columns that changed (see `update_sql`): read the stored values first.
        let mut old: HashMap<i64, Vec<Value>> = HashMap::with_capacity(updates.len());
        {
            let mut stmt = tx.prepare_cached(&sql.old_values).map_err(db_err)?;
            let mut rows = stmt.query([id_list(updates.iter().map(|r| r.id))]).map_err(db_err)?;
            while let Some(row) = rows.next().map_err(db_err)? {
                let values = (1..=n).map(|i| row.get::<_, Value>(i)).collect::<Result<Vec<_>, _>>().map_err(db_err)?;
                old.insert(row.get(0).map_err(db_err)?, values);
            }
        }
        let mut statements: HashMap<Vec<usize>, String> = HashMap::new();
        for row in &updates {
            let changed: Vec<usize> = match old.get(&row.id) {
                Some(stored) => (0..n).filter(|&i| stored[i] != row.values[i]).collect(),
                None => (0..n).collect(),
            };
            if !statements.contains_key(&changed) {
                statements.insert(changed.clone(), update_sql(page.kind, &changed));
            }
            let mut update = tx.prepare_cached(&statements[&changed]).map_err(db_err)?;
            update.raw_bind_parameter(1, row.id).map_err(db_err)?;
            let mut p = 2;
            for &i in &changed {
                update.raw_bind_parameter(p, &row.values[i]).map_err(db_err)?;
                p += 1;
            }
            update.raw_bind_parameter(p, &row.raw).map_err(db_err)?;
            update.raw_bind_parameter(p + 1, &synced_at).map_err(db_err)?;
            update.raw_bind_parameter(p + 2, if row.deleted { &synced_at } else { &Value::Null }).map_err(db_err)?;
            update.raw_bind_parameter(p + 3, &sweep).map_err(db_err)?;
            update.raw_execute().map_err(db_err)?;
        }
    }

    if !respelled.is_empty() {
        let mut respell = tx.prepare_cached(&sql.respell).map_err(db_err)?;
        for row in &respelled {
            respell.execute(params![row.id, row.raw]).map_err(db_err)?;
        }
    }

    if let (Some(sweep), false) = (page.sweep, to_mark_seen.is_empty()) {
        // A side table rather than `seen_sweep` on the row: rewriting a whole unchanged record to
        // move one integer made a full re-sync write about twice the database.
        tx.prepare_cached(&sql.prune_marks).and_then(|mut s| s.execute([sweep])).map_err(db_err)?;
        tx.prepare_cached(&sql.mark_seen)
            .and_then(|mut s| s.execute(params![id_list(to_mark_seen), sweep]))
            .map_err(db_err)?;
    }

    let first_listing = page.kind == EntityKind::Cards && deferring_indexes(&tx)?;
    if first_listing && !(inserts.is_empty() && updates.is_empty()) {
        // A first full listing: links are appended to `card_tags_pending` (migration 8) and move
        // into `card_tags` with the deferred indexes. A card written again by this listing (windows
        // overlap) drops its pending links first.
        let written: HashSet<i64> = inserts.iter().chain(&updates).map(|r| r.id).collect();
        if !updates.is_empty() {
            tx.prepare_cached("DELETE FROM card_tags_pending WHERE card_id IN (SELECT value FROM json_each(?1))")
                .and_then(|mut s| s.execute([id_list(updates.iter().map(|r| r.id))]))
                .map_err(db_err)?;
        }
        let mut append =
            tx.prepare_cached("INSERT INTO card_tags_pending (card_id, tag_id) VALUES (?1, ?2)").map_err(db_err)?;
        let wanted: HashSet<(i64, i64)> =
            page.card_tags.iter().copied().filter(|(card, _)| written.contains(card)).collect();
        for (card, tag) in &wanted {
            append.execute([card, tag]).map_err(db_err)?;
        }
    } else if page.kind == EntityKind::Cards && !(inserts.is_empty() && updates.is_empty()) {
        // Links follow the card row: replaced only where the card itself was written. For updated
        // cards, only the difference is written (tags rarely change when a card is edited).
        let written: HashSet<i64> = inserts.iter().chain(&updates).map(|r| r.id).collect();
        let mut wanted: HashSet<(i64, i64)> =
            page.card_tags.iter().copied().filter(|(card, _)| written.contains(card)).collect();
        if !updates.is_empty() {
            let mut stale: Vec<(i64, i64)> = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT card_id, tag_id FROM card_tags WHERE card_id IN (SELECT value FROM json_each(?1))",
                    )
                    .map_err(db_err)?;
                let mut rows = stmt.query([id_list(updates.iter().map(|r| r.id))]).map_err(db_err)?;
                while let Some(row) = rows.next().map_err(db_err)? {
                    let link: (i64, i64) = (row.get(0).map_err(db_err)?, row.get(1).map_err(db_err)?);
                    if !wanted.remove(&link) {
                        stale.push(link);
                    }
                }
            }
            if !stale.is_empty() {
                let mut delete =
                    tx.prepare_cached("DELETE FROM card_tags WHERE card_id = ?1 AND tag_id = ?2").map_err(db_err)?;
                for (card, tag) in &stale {
                    delete.execute([card, tag]).map_err(db_err)?;
                }
            }
        }
        if !wanted.is_empty() {
            let mut wanted: Vec<(i64, i64)> = wanted.into_iter().collect();
            wanted.sort_unstable();
            let mut insert = tx
                .prepare_cached("INSERT OR IGNORE INTO card_tags (card_id, tag_id) VALUES (?1, ?2)")
                .map_err(db_err)?;
            for (card, tag) in &wanted {
                insert.execute([card, tag]).map_err(db_err)?;
            }
        }
    }

    let wrote_any = !inserts.is_empty() || !updates.is_empty();
    if wrote_any && !page.card_members.cards.is_empty() {
        // Members too, for the cards written that carry their member list (a handful of rows each:
        // deleted and inserted again rather than diffed).
        let written: HashSet<i64> = inserts.iter().chain(&updates).map(|r| r.id).collect();
        let replaced: Vec<i64> = page.card_members.cards.iter().copied().filter(|c| written.contains(c)).collect();
        if !replaced.is_empty() {
            tx.prepare_cached("DELETE FROM card_members WHERE card_id IN (SELECT value FROM json_each(?1))")
                .and_then(|mut s| s.execute([id_list(replaced.iter().copied())]))
                .map_err(db_err)?;
            let mut insert = tx
                .prepare_cached("INSERT INTO card_members (card_id, user_id, type) VALUES (?1, ?2, ?3)")
                .map_err(db_err)?;
            for (card, user, kind) in page.card_members.links.iter().filter(|(c, _, _)| written.contains(c)) {
                insert.execute([card, user, kind]).map_err(db_err)?;
            }
        }
    }

    if let Some(state) = &page.state {
        write_state(&tx, state)?;
    }
    tx.commit().map_err(db_err)?;
    Ok(outcome)
}

pub(crate) fn unseen(conn: &Connection, kind: EntityKind, sweep: i64, scope: &Scope) -> Result<Vec<i64>, StoreError> {
    let sql = table_sql(kind);
    match scope {
        Scope::All => query_ids(conn, &sql.unseen_all, params![Value::Null, sweep]),
        // Like the memory store: a table without a parent column has no row inside any parent.
        Scope::Parents(parents) => match &sql.unseen_scoped {
            Some(scoped) if !parents.is_empty() => {
                query_ids(conn, scoped, params![id_list(parents.iter().copied()), sweep])
            }
            _ => Ok(Vec::new()),
        },
    }
}

pub(crate) fn mark_deleted(
    conn: &Connection,
    kind: EntityKind,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let changed = conn
        .prepare_cached(&table_sql(kind).mark_deleted)
        .and_then(|mut s| s.execute(params![id_list(ids.iter().copied()), fmt_time(&at)]))
        .map_err(db_err)?;
    Ok(changed as u64)
}

pub(crate) fn existing_ids(conn: &Connection, kind: EntityKind, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    query_ids(conn, &table_sql(kind).existing_ids, [id_list(ids.iter().copied())])
}

pub(crate) fn ids(conn: &Connection, kind: EntityKind, include_deleted: bool) -> Result<Vec<i64>, StoreError> {
    let sql = table_sql(kind);
    query_ids(conn, if include_deleted { &sql.ids_all } else { &sql.ids_live }, [])
}

fn query_ids(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
    let ids = stmt.query_map(params, |r| r.get(0)).map_err(db_err)?.collect::<Result<Vec<i64>, _>>().map_err(db_err)?;
    Ok(ids)
}

pub(crate) fn get(conn: &Connection, kind: EntityKind, id: i64) -> Result<Option<StoredRecord>, StoreError> {
    let table = kind.table();
    let n = table.columns.len();
    let mut stmt = conn.prepare_cached(&table_sql(kind).get).map_err(db_err)?;
    let mut rows = stmt.query([id]).map_err(db_err)?;
    let Some(row) = rows.next().map_err(db_err)? else { return Ok(None) };
    let mut values = Vec::with_capacity(n);
    for (i, column) in table.columns.iter().enumerate() {
        values.push(from_sqlite(column.ty, row.get_ref(i).map_err(db_err)?));
    }
    let raw: String = row.get(n).map_err(db_err)?;
    let raw = serde_json::from_str(&raw)
        .map_err(|e| backend(format!("{}.raw of id {id} is not valid JSON", table.name), e))?;
    let synced_at: String = row.get(n + 1).map_err(db_err)?;
    let deleted_at: Option<String> = row.get(n + 2).map_err(db_err)?;
    Ok(Some(StoredRecord {
        id,
        values,
        raw,
        synced_at: read_time(&synced_at, &format!("{}.synced_at of id {id}", table.name))?,
        deleted_at: read_opt_time(deleted_at, &format!("{}.deleted_at of id {id}", table.name))?,
    }))
}

pub(crate) fn card_tag_ids(conn: &Connection, card_id: i64) -> Result<Vec<i64>, StoreError> {
    // During a first full listing, links wait in `card_tags_pending`.
    query_ids(
        conn,
        "SELECT tag_id FROM card_tags WHERE card_id = ?1
         UNION SELECT tag_id FROM card_tags_pending WHERE card_id = ?1 ORDER BY tag_id",
        [card_id],
    )
}

pub(crate) fn card_members(conn: &Connection, card_id: i64) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT user_id, type FROM card_members WHERE card_id = ?1 ORDER BY user_id")
        .map_err(db_err)?;
    let members = stmt
        .query_map([card_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db_err)?
        .collect::<Result<Vec<(i64, i64)>, _>>()
        .map_err(db_err)?;
    Ok(members)
}

const STATE_COLUMNS: &str = "entity, cursor, last_full_sync_at, last_incremental_sync_at, resume, row_count";

fn read_state(row: &rusqlite::Row<'_>) -> Result<Option<EntityState>, StoreError> {
    let entity: String = row.get(0).map_err(db_err)?;
    let Ok(kind) = entity.parse::<EntityKind>() else {
        tracing::warn!(entity, "ignoring sync_metadata row of an unknown entity kind");
        return Ok(None);
    };
    let what = |column: &str| format!("sync_metadata.{column} of {entity}");
    Ok(Some(EntityState {
        kind,
        cursor: read_opt_time(row.get(1).map_err(db_err)?, &what("cursor"))?,
        last_full_sync_at: read_opt_time(row.get(2).map_err(db_err)?, &what("last_full_sync_at"))?,
        last_incremental_sync_at: read_opt_time(row.get(3).map_err(db_err)?, &what("last_incremental_sync_at"))?,
        resume: row.get(4).map_err(db_err)?,
        row_count: row.get(5).map_err(db_err)?,
    }))
}

pub(crate) fn entity_state(conn: &Connection, kind: EntityKind) -> Result<EntityState, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {STATE_COLUMNS} FROM sync_metadata WHERE entity = ?1")).map_err(db_err)?;
    let mut rows = stmt.query([kind.as_str()]).map_err(db_err)?;
    match rows.next().map_err(db_err)? {
        Some(row) => Ok(read_state(row)?.unwrap_or_else(|| EntityState::new(kind))),
        None => Ok(EntityState::new(kind)),
    }
}

pub(crate) fn entity_states(conn: &Connection) -> Result<Vec<EntityState>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {STATE_COLUMNS} FROM sync_metadata")).map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    let mut states = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        states.extend(read_state(row)?);
    }
    states.sort_by_key(|s| s.kind);
    Ok(states)
}

pub(crate) fn write_state(conn: &Connection, state: &EntityState) -> Result<(), StoreError> {
    let time = |t: &Option<DateTime<Utc>>| t.as_ref().map(fmt_time);
    conn.prepare_cached(
        "INSERT INTO sync_metadata (entity, cursor, last_full_sync_at, last_incremental_sync_at, resume, row_count, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(entity) DO UPDATE SET cursor = excluded.cursor, last_full_sync_at = excluded.last_full_sync_at,
             last_incremental_sync_at = excluded.last_incremental_sync_at, resume = excluded.resume,
             row_count = excluded.row_count, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            state.kind.as_str(),
            time(&state.cursor),
            time(&state.last_full_sync_at),
            time(&state.last_incremental_sync_at),
            state.resume,
            state.row_count,
            fmt_time(&Utc::now()),
        ])
    })
    .map_err(db_err)?;
    Ok(())
}

/// A run's fields in the order of the log's columns (`?1..?13` of both statements below), from the
/// encoding every store shares ([`RunRecord::to_columns`]).
fn run_values(run: &RunRecord) -> Result<Vec<rusqlite::types::Value>, StoreError> {
    let c = run.to_columns().map_err(|e| backend(format!("cannot encode the stats of run {}", run.id), e))?;
    Ok(vec![
        c.kind.to_owned().into(),
        c.entities.join(",").into(),
        c.scope.into(),
        fmt_time(&c.started_at).into(),
        c.finished_at.as_ref().map(fmt_time).into(),
        c.status.to_owned().into(),
        c.rows_inserted.into(),
        c.rows_updated.into(),
        c.rows_deleted.into(),
        c.api_requests.into(),
        c.retries.into(),
        c.error.into(),
        c.stats.to_string().into(),
    ])
}

pub(crate) fn start_run(conn: &Connection, run: &RunRecord) -> Result<i64, StoreError> {
    let values = run_values(run)?;
    conn.prepare_cached(
        "INSERT INTO sync_logs (kind, entities, scope, started_at, finished_at, status, rows_inserted, rows_updated,
             rows_deleted, api_requests, retries, error, stats)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
    .map_err(db_err)?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn update_run(conn: &Connection, run: &RunRecord) -> Result<(), StoreError> {
    let mut values = run_values(run)?;
    values.push(run.id.into());
    let changed = conn
        .prepare_cached(
            "UPDATE sync_logs SET kind = ?1, entities = ?2, scope = ?3, started_at = ?4, finished_at = ?5, status = ?6,
                 rows_inserted = ?7, rows_updated = ?8, rows_deleted = ?9, api_requests = ?10, retries = ?11,
                 error = ?12, stats = ?13
             WHERE id = ?14",
        )
        .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
        .map_err(db_err)?;
    if changed == 0 {
        return Err(corrupt(format!("no run with id {} in sync_logs", run.id)));
    }
    Ok(())
}

pub(crate) fn interrupt_running_runs(conn: &Connection, keep: i64, reason: &str) -> Result<u64, StoreError> {
    let n = conn
        // Webhook runs do not take the lock and may be in flight: they are left alone.
        .prepare_cached(
            "UPDATE sync_logs SET status = 'interrupted', error = ?2
             WHERE status = 'running' AND id <> ?1 AND kind <> 'webhook'",
        )
        .and_then(|mut s| s.execute(params![keep, reason]))
        .map_err(db_err)?;
    Ok(n as u64)
}

pub(crate) fn recent_runs(conn: &Connection, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, kind, entities, scope, started_at, finished_at, status, api_requests, retries, error, stats
             FROM sync_logs ORDER BY id DESC LIMIT ?1",
        )
        .map_err(db_err)?;
    let mut rows = stmt.query([i64::try_from(limit).unwrap_or(i64::MAX)]).map_err(db_err)?;
    let mut runs = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let id: i64 = row.get(0).map_err(db_err)?;
        let what = |column: &str| format!("sync_logs.{column} of run {id}");
        let kind: String = row.get(1).map_err(db_err)?;
        let entities: String = row.get(2).map_err(db_err)?;
        let status: String = row.get(6).map_err(db_err)?;
        let stats: String = row.get(10).map_err(db_err)?;
        let stats: serde_json::Value =
            serde_json::from_str(&stats).map_err(|e| backend(format!("{} is not valid JSON", what("stats")), e))?;
        let run = RunRecord::from_columns(
            id,
            &kind,
            entities.split(','),
            row.get(3).map_err(db_err)?,
            read_time(&row.get::<_, String>(4).map_err(db_err)?, &what("started_at"))?,
            read_opt_time(row.get(5).map_err(db_err)?, &what("finished_at"))?,
            &status,
            (row.get(7).map_err(db_err)?, row.get(8).map_err(db_err)?),
            row.get(9).map_err(db_err)?,
            stats,
        )
        .map_err(corrupt)?;
        runs.push(run);
    }
    Ok(runs)
}

pub(crate) fn counts(conn: &Connection) -> Result<Vec<TableCount>, StoreError> {
    let mut counts = Vec::with_capacity(EntityKind::ALL.len() + 2);
    for kind in EntityKind::ALL {
        let (all, deleted): (i64, i64) = conn
            .prepare_cached(&table_sql(kind).counts)
            .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(db_err)?;
        counts.push(TableCount { table: kind.table().name.to_owned(), live: all - deleted, deleted });
    }
    let links: i64 = conn
        .query_row("SELECT (SELECT count(*) FROM card_tags) + (SELECT count(*) FROM card_tags_pending)", [], |r| {
            r.get(0)
        })
        .map_err(db_err)?;
    counts.push(TableCount { table: "card_tags".into(), live: links, deleted: 0 });
    let members: i64 = conn.query_row("SELECT count(*) FROM card_members", [], |r| r.get(0)).map_err(db_err)?;
    counts.push(TableCount { table: "card_members".into(), live: members, deleted: 0 });
    Ok(counts)
}

fn read_lock(conn: &Connection) -> Result<Option<LockInfo>, StoreError> {
    let row: Option<(String, String, String)> = conn
        .query_row("SELECT holder, acquired_at, heartbeat_at FROM sync_lock WHERE name = ?1", [LOCK_NAME], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(db_err)?;
    row.map(|(holder, acquired_at, heartbeat_at)| {
        Ok(LockInfo {
            holder,
            acquired_at: read_time(&acquired_at, "sync_lock.acquired_at")?,
            heartbeat_at: read_time(&heartbeat_at, "sync_lock.heartbeat_at")?,
        })
    })
    .transpose()
}

/// Takes the lock in one IMMEDIATE transaction: two processes cannot both see it free.
pub(crate) fn try_lock(conn: &mut Connection, holder: &str, stale_after: Duration) -> Result<LockAttempt, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let now = Utc::now();
    let current = read_lock(&tx)?;
    // A holder whose process on this host is gone cannot be syncing: its lock is free at once
    // (one on another host, or that cannot be judged, waits for its heartbeat to go stale).
    let mut gone = false;
    let free = match &current {
        None => true,
        Some(info) if info.holder == holder => true,
        Some(info) if (now - info.heartbeat_at).to_std().is_ok_and(|age| age > stale_after) => true,
        Some(info) => {
            gone = kaiten_sync::holder::holder_is_gone(&info.holder);
            gone
        }
    };
    if !free {
        return Ok(LockAttempt::Held(current.expect("a held lock has a row")));
    }
    let acquired_at = match &current {
        Some(info) if info.holder == holder => info.acquired_at,
        _ => now,
    };
    tx.execute(
        "INSERT INTO sync_lock (name, holder, acquired_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, acquired_at = excluded.acquired_at,
             heartbeat_at = excluded.heartbeat_at",
        params![LOCK_NAME, holder, fmt_time(&acquired_at), fmt_time(&now)],
    )
    .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    if let Some(previous) = current.filter(|p| p.holder != holder) {
        if gone {
            tracing::warn!(
                previous = previous.holder,
                holder,
                "took over the sync lock of a process of this host that is gone (killed?); its run resumes from its \
                 last committed page"
            );
        } else {
            tracing::warn!(previous = previous.holder, holder, "took over a stale sync lock");
        }
    }
    Ok(LockAttempt::Acquired)
}

pub(crate) fn heartbeat_lock(conn: &Connection, holder: &str) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE sync_lock SET heartbeat_at = ?3 WHERE name = ?1 AND holder = ?2",
            params![LOCK_NAME, holder, fmt_time(&Utc::now())],
        )
        .map_err(db_err)?;
    Ok(changed == 1)
}

pub(crate) fn release_lock(conn: &Connection, holder: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM sync_lock WHERE name = ?1 AND holder = ?2", params![LOCK_NAME, holder])
        .map_err(db_err)?;
    Ok(())
}
