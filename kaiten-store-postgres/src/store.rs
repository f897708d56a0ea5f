//! The [`Store`] implementation.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kaiten_sync::schema::EntityKind;
use kaiten_sync::{
    EntityState, LockAttempt, Page, PageOutcome, RunRecord, Scope, Store, StoreError, StoredRecord, TableCount,
};
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::{backend_message, sqlstate, Ctx, BACKEND};
use crate::values::{raw_hash, raw_text, read_value, PageArrays};
use crate::{LockMode, PgStore};

/// Runs `$work` (an expression on `$conn`, a connection in a transaction) and commits, giving a
/// `Result<_, sqlx::Error>`. An idle pooled connection may have broken since it was last used (a
/// server restart): the work is then tried on another one, up to once per connection of the pool,
/// plus one. The work must be safe to repeat.
macro_rules! on_live_connection {
    ($store:expr, |$conn:ident| $work:expr) => {{
        let attempts = $store.inner.pool.options().get_max_connections() + 1;
        let mut attempt = 1;
        loop {
            let result = async {
                let mut tx = $store.inner.pool.begin().await?;
                let $conn = &mut *tx;
                let value = $work.await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(value)
            }
            .await;
            match result {
                Err(e) if attempt < attempts && crate::connection_lost(&e) => {
                    tracing::debug!(attempt, "a pooled connection was broken ({e}); trying another");
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}

/// How often a page is retried after a deadlock or serialization failure.
const PAGE_ATTEMPTS: usize = 3;

/// Turns `synchronous_commit` off for the current transaction only.
const ASYNC_COMMIT: &str = "SELECT pg_catalog.set_config('synchronous_commit', 'off', true)";

impl PgStore {
    async fn apply_page_once(&self, page: &Page) -> Result<PageOutcome, Failure> {
        let kind = page.batch.kind();
        let what = format!("write a page of {kind}");
        let ctx = Ctx::kind(&what, kind);
        let fail = |e: sqlx::Error| Failure { retry: is_retryable(&e), error: self.err(e, ctx) };
        let mut rows = page.batch.rows();
        // A stable order: concurrent writers of overlapping pages lock rows in the same order.
        rows.sort_unstable_by_key(|r| r.id);
        let total = rows.len() as u64;
        if rows.is_empty() {
            if let Some(state) = &page.state {
                let mut tx = self.begin_with(None).await.map_err(fail)?;
                if self.inner.async_commit {
                    self.query(ASYNC_COMMIT).execute(&mut *tx).await.map_err(fail)?;
                }
                self.write_state(&mut tx, state).await.map_err(fail)?;
                tx.commit().await.map_err(fail)?;
            }
            return Ok(PageOutcome::default());
        }
        // A full listing's page is mostly rows stored unchanged (every re-sync lists them all): their
        // stored hashes are read first, and they are passed as ids to mark rather than as rows
        // (about 2 KB of JSON each) to compare on the server. The page statement still decides
        // "changed and not older" for the rows it gets, under the row lock. The lookup is a
        // separate read: a row another writer marks deleted between it and the page statement
        // stays deleted (its live copy here is only marked seen) until the next listing, where
        // the page statement would have brought it back at once.
        let mut seen: Vec<i64> = Vec::new();
        let mut unchanged = 0u64;
        let into_empty =
            |sweep: i64| self.inner.sweeps_into_empty.lock().map(|m| m.get(&kind) == Some(&sweep)).unwrap_or(false);
        if let Some(sweep) = page.sweep.filter(|&sweep| !into_empty(sweep)) {
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let lookup = &self.inner.sql.table(kind).stored;
            let stored: Vec<(i64, Option<i64>, bool, Option<i64>)> = on_live_connection!(self, |conn| {
                sqlx::query_as(lookup).persistent(self.inner.persistent).bind(ids.as_slice()).fetch_all(conn)
            })
            .map_err(fail)?;
            if stored.is_empty()
                && self.table_is_empty(kind, ctx).await.map_err(|error| Failure { retry: false, error })?
            {
                // A first listing into an empty table: the next pages of this sweep go straight to
                // the page statement (which is right for stored rows too). Only an empty table: a
                // re-sync's page of new cards must not turn the lookup off for the pages after it.
                if let Ok(mut sweeps) = self.inner.sweeps_into_empty.lock() {
                    sweeps.insert(kind, sweep);
                }
            }
            let stored: std::collections::HashMap<i64, (Option<i64>, bool, Option<i64>)> =
                stored.into_iter().map(|(id, hash, deleted, sweep)| (id, (hash, deleted, sweep))).collect();
            rows.retain(|row| match stored.get(&row.id) {
                Some(&(Some(hash), deleted, stored_sweep))
                    if deleted == row.deleted && hash == raw_hash(&raw_text(row.raw)) =>
                {
                    unchanged += 1;
                    if stored_sweep != Some(sweep) {
                        seen.push(row.id);
                    }
                    false
                }
                _ => true,
            });
        }
        let arrays = PageArrays::build(kind, kind.table().columns, rows)?;
        let written: std::collections::HashSet<i64> = arrays.ids.iter().copied().collect();
        let links: (Vec<i64>, Vec<i64>) = if kind == EntityKind::Cards {
            page.batch.card_tags().into_iter().filter(|(card, _)| written.contains(card)).unzip()
        } else {
            Default::default()
        };
        let mut members = page.batch.card_members();
        members.cards.retain(|card| written.contains(card));
        members.links.retain(|(card, _, _)| written.contains(card));
        let (mut member_cards, mut member_users, mut member_types) = (Vec::new(), Vec::new(), Vec::new());
        for (card, user, member_type) in &members.links {
            member_cards.push(*card);
            member_users.push(*user);
            member_types.push(*member_type);
        }
        let state = page.state.as_ref();

        // One statement inside an explicit transaction: the table's page function writes the rows,
        // their tag links and members, the sweep's marks and the entity state, which commit together. The
        // explicit transaction keeps the statement's protocol messages on one server connection
        // behind a transaction-mode pooler (an implicit one ends at each Sync, where the pooler may
        // switch connections between the statement's parse and its execution).
        let call = || {
            let mut query = self.query(&self.inner.sql.table(kind).write_page).bind(arrays.ids.as_slice());
            for column in &arrays.columns {
                query = column.bind(query);
            }
            query = query
                .bind(arrays.raw.as_slice())
                .bind(arrays.raw_hash.as_slice())
                .bind(arrays.deleted.as_slice())
                .bind(page.synced_at)
                .bind(page.sweep)
                .bind(state.map(|s| s.kind.as_str()))
                .bind(state.and_then(|s| s.cursor))
                .bind(state.and_then(|s| s.last_full_sync_at))
                .bind(state.and_then(|s| s.last_incremental_sync_at))
                .bind(state.and_then(|s| s.resume.as_deref()))
                .bind(state.and_then(|s| s.row_count))
                .bind(self.inner.async_commit)
                .bind(seen.as_slice());
            if kind == EntityKind::Cards {
                query = query
                    .bind(links.0.as_slice())
                    .bind(links.1.as_slice())
                    .bind(members.cards.as_slice())
                    .bind(member_cards.as_slice())
                    .bind(member_users.as_slice())
                    .bind(member_types.as_slice());
            }
            query
        };
        // A page is idempotent, so even a call whose commit's answer was lost is safe to repeat on
        // another connection (its rows then count as unchanged).
        let returned = on_live_connection!(self, |conn| call().fetch_all(conn)).map_err(fail)?;
        let mut outcome = PageOutcome::default();
        for row in &returned {
            match row.try_get::<Option<bool>, _>(1).map_err(fail)? {
                Some(true) => outcome.inserted += 1,
                Some(false) => outcome.updated += 1,
                None => {}
            }
        }
        outcome.unchanged = total - outcome.inserted - outcome.updated;
        debug_assert!(outcome.unchanged >= unchanged);
        Ok(outcome)
    }

    /// Whether the kind's table holds no row at all.
    async fn table_is_empty(&self, kind: EntityKind, ctx: Ctx<'_>) -> Result<bool, StoreError> {
        let sql = format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {}.{})",
            self.inner.qschema,
            crate::sql::ident(kind.table().name)
        );
        self.in_transaction(ctx, async |conn| {
            sqlx::query_scalar::<_, bool>(&sql).persistent(self.inner.persistent).fetch_one(conn).await
        })
        .await
    }

    async fn write_state(&self, conn: &mut sqlx::PgConnection, state: &EntityState) -> Result<(), sqlx::Error> {
        self.query(&self.inner.sql.state_upsert)
            .bind(state.kind.as_str())
            .bind(state.cursor)
            .bind(state.last_full_sync_at)
            .bind(state.last_incremental_sync_at)
            .bind(state.resume.as_deref())
            .bind(state.row_count)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Runs `work` in a transaction and commits it; an error of any step is mapped with `ctx`.
    /// Reads go through a transaction too, so that a transaction-mode pooler keeps their
    /// statements on one server connection.
    pub(crate) async fn in_transaction<T>(
        &self,
        ctx: Ctx<'_>,
        work: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, StoreError> {
        let mut tx = self.begin(ctx.what).await?;
        let value = work(&mut tx).await.map_err(|e| self.err(e, ctx))?;
        tx.commit().await.map_err(|e| self.err(e, ctx))?;
        Ok(value)
    }

    /// Runs one read-only statement that returns ids, in a transaction (for poolers).
    async fn fetch_ids<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        ctx: Ctx<'_>,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = self.in_transaction(ctx, async |conn| query.fetch_all(conn).await).await?;
        rows.iter().map(|r| r.try_get::<i64, _>(0).map_err(|e| self.err(e, ctx))).collect()
    }
}

fn state_from_row(row: &PgRow) -> Result<Option<EntityState>, sqlx::Error> {
    let entity: String = row.try_get(0)?;
    let Ok(kind) = entity.parse::<EntityKind>() else {
        tracing::warn!(entity, "ignoring sync_metadata of an unknown entity kind");
        return Ok(None);
    };
    Ok(Some(EntityState {
        kind,
        cursor: row.try_get(1)?,
        last_full_sync_at: row.try_get(2)?,
        last_incremental_sync_at: row.try_get(3)?,
        resume: row.try_get(4)?,
        row_count: row.try_get(5)?,
    }))
}

fn run_from_row(row: &PgRow) -> Result<RunRecord, StoreError> {
    let get_err = |e: sqlx::Error| backend_message(format!("read the run log: {e}"));
    let id: i64 = row.try_get("id").map_err(get_err)?;
    let kind: String = row.try_get("kind").map_err(get_err)?;
    let status: String = row.try_get("status").map_err(get_err)?;
    let entities: Vec<String> = row.try_get("entities").map_err(get_err)?;
    RunRecord::from_columns(
        id,
        &kind,
        entities.iter().map(String::as_str),
        row.try_get("scope").map_err(get_err)?,
        row.try_get("started_at").map_err(get_err)?,
        row.try_get("finished_at").map_err(get_err)?,
        &status,
        (row.try_get("api_requests").map_err(get_err)?, row.try_get("retries").map_err(get_err)?),
        row.try_get("error").map_err(get_err)?,
        row.try_get("stats").map_err(get_err)?,
    )
    .map_err(backend_message)
}

/// Binds a run's fields in the order of `run_insert` (`$1..`) and `run_update` (`$2..`, after the
/// id), from the encoding every store shares ([`RunRecord::to_columns`]).
fn bind_run<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    run: &RunRecord,
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    let c = run.to_columns().map_err(|e| backend_message(format!("serialize the run's stats: {e}")))?;
    Ok(query
        .bind(c.kind)
        .bind(c.entities)
        .bind(c.scope)
        .bind(c.started_at)
        .bind(c.finished_at)
        .bind(c.status)
        .bind(c.rows_inserted)
        .bind(c.rows_updated)
        .bind(c.rows_deleted)
        .bind(c.api_requests)
        .bind(c.retries)
        .bind(c.error)
        .bind(c.stats))
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let tx = self.begin("begin the migration transaction").await?;
        let target = crate::migrate::Target {
            schema: &inner.schema,
            qschema: &inner.qschema,
            lock_key: inner.migrate_key,
            persistent: inner.persistent,
            foreign_keys: inner.foreign_keys,
            row_level_security: inner.row_level_security,
            functions: inner.sql.tables.iter().map(|t| (t.function_name.as_str(), t.function_ddl.as_str())).collect(),
            secrets: &inner.secrets,
        };
        crate::migrate::run(tx, target).await
    }

    async fn apply_page(&self, page: &Page) -> Result<PageOutcome, StoreError> {
        let mut attempt = 1;
        loop {
            match self.apply_page_once(page).await {
                Ok(outcome) => return Ok(outcome),
                Err(Failure { retry: true, error }) if attempt < PAGE_ATTEMPTS => {
                    tracing::debug!(attempt, "retrying a page after: {error}");
                    tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
                    attempt += 1;
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }

    async fn unseen(&self, kind: EntityKind, sweep: i64, scope: &Scope) -> Result<Vec<i64>, StoreError> {
        let table = self.inner.sql.table(kind);
        let ctx = Ctx::kind("list rows not seen by the sweep", kind);
        match scope {
            Scope::All => self.fetch_ids(self.query(&table.unseen_all).bind(sweep), ctx).await,
            Scope::Parents(parents) => match &table.unseen_scoped {
                Some(sql) => self.fetch_ids(self.query(sql).bind(sweep).bind(parents.as_slice()), ctx).await,
                None => Ok(Vec::new()),
            },
        }
    }

    async fn mark_deleted(&self, kind: EntityKind, ids: &[i64], at: DateTime<Utc>) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ctx = Ctx::kind("mark rows deleted", kind);
        let statement = self.query(&self.inner.sql.table(kind).mark_deleted).bind(ids).bind(at);
        let done = self.in_transaction(ctx, async |conn| statement.execute(conn).await).await?;
        Ok(done.rows_affected())
    }

    async fn existing_ids(&self, kind: EntityKind, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ctx = Ctx::kind("look up stored ids", kind);
        self.fetch_ids(self.query(&self.inner.sql.table(kind).existing).bind(ids), ctx).await
    }

    async fn ids(&self, kind: EntityKind, include_deleted: bool) -> Result<Vec<i64>, StoreError> {
        let table = self.inner.sql.table(kind);
        let sql = if include_deleted { &table.ids_all } else { &table.ids_live };
        self.fetch_ids(self.query(sql), Ctx::kind("list stored ids", kind)).await
    }

    async fn get(&self, kind: EntityKind, id: i64) -> Result<Option<StoredRecord>, StoreError> {
        let ctx = Ctx::kind("read a row", kind);
        let statement = self.query(&self.inner.sql.table(kind).get).bind(id);
        let row = self.in_transaction(ctx, async |conn| statement.fetch_optional(conn).await).await?;
        let Some(row) = row else { return Ok(None) };
        let columns = kind.table().columns;
        let read = || -> Result<StoredRecord, sqlx::Error> {
            let values =
                columns.iter().enumerate().map(|(i, c)| read_value(&row, i + 1, c.ty)).collect::<Result<_, _>>()?;
            let n = columns.len();
            Ok(StoredRecord {
                id: row.try_get(0)?,
                values,
                raw: row.try_get(n + 1)?,
                synced_at: row.try_get(n + 2)?,
                deleted_at: row.try_get(n + 3)?,
            })
        };
        read().map(Some).map_err(|e| self.err(e, ctx))
    }

    async fn card_tag_ids(&self, card_id: i64) -> Result<Vec<i64>, StoreError> {
        let ctx = Ctx::kind("read card tags", EntityKind::Cards);
        self.fetch_ids(self.query(&self.inner.sql.card_tag_ids).bind(card_id), ctx).await
    }

    async fn card_members(&self, card_id: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        let ctx = Ctx::kind("read card members", EntityKind::Cards);
        let statement = self.query(&self.inner.sql.card_members).bind(card_id);
        let rows = self.in_transaction(ctx, async |conn| statement.fetch_all(conn).await).await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e, ctx))
    }

    async fn entity_state(&self, kind: EntityKind) -> Result<EntityState, StoreError> {
        let ctx = Ctx::kind("read the entity state", kind);
        let statement = self.query(&self.inner.sql.state_get).bind(kind.as_str());
        let row = self.in_transaction(ctx, async |conn| statement.fetch_optional(conn).await).await?;
        match row {
            Some(row) => {
                Ok(state_from_row(&row).map_err(|e| self.err(e, ctx))?.unwrap_or_else(|| EntityState::new(kind)))
            }
            None => Ok(EntityState::new(kind)),
        }
    }

    async fn entity_states(&self) -> Result<Vec<EntityState>, StoreError> {
        let ctx = Ctx::new("read the entity states");
        let statement = self.query(&self.inner.sql.states_all);
        let rows = self.in_transaction(ctx, async |conn| statement.fetch_all(conn).await).await?;
        let mut states = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(state) = state_from_row(row).map_err(|e| self.err(e, ctx))? {
                states.push(state);
            }
        }
        states.sort_by_key(|s| s.kind);
        Ok(states)
    }

    async fn save_entity_state(&self, state: &EntityState) -> Result<(), StoreError> {
        let ctx = Ctx::kind("write the entity state", state.kind);
        self.in_transaction(ctx, async |conn| self.write_state(conn, state).await).await
    }

    async fn start_run(&self, run: &RunRecord) -> Result<i64, StoreError> {
        let ctx = Ctx::new("add a run to the log");
        let statement = bind_run(self.query(&self.inner.sql.run_insert), run)?;
        let row = self.in_transaction(ctx, async |conn| statement.fetch_one(conn).await).await?;
        row.try_get(0).map_err(|e| self.err(e, ctx))
    }

    async fn update_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let ctx = Ctx::new("update a run in the log");
        let statement = bind_run(self.query(&self.inner.sql.run_update).bind(run.id), run)?;
        let done = self.in_transaction(ctx, async |conn| statement.execute(conn).await).await?;
        if done.rows_affected() == 0 {
            return Err(backend_message(format!("no run with id {} in the run log", run.id)));
        }
        Ok(())
    }

    async fn interrupt_running_runs(&self, keep: i64, reason: &str) -> Result<u64, StoreError> {
        let ctx = Ctx::new("mark interrupted runs");
        let statement = self.query(&self.inner.sql.runs_interrupt).bind(keep).bind(reason);
        let done = self.in_transaction(ctx, async |conn| statement.execute(conn).await).await?;
        Ok(done.rows_affected())
    }

    async fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let ctx = Ctx::new("read the run log");
        let statement = self.query(&self.inner.sql.runs_recent).bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.in_transaction(ctx, async |conn| statement.fetch_all(conn).await).await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn counts(&self) -> Result<Vec<TableCount>, StoreError> {
        let ctx = Ctx::new("count rows");
        let statement = self.query(&self.inner.sql.counts);
        let rows = self.in_transaction(ctx, async |conn| statement.fetch_all(conn).await).await?;
        rows.iter()
            .map(|r| Ok(TableCount { table: r.try_get(0)?, live: r.try_get(1)?, deleted: r.try_get(2)? }))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e, ctx))
    }

    async fn try_lock(&self, holder: &str, stale_after: Duration) -> Result<LockAttempt, StoreError> {
        match self.inner.lock_mode {
            LockMode::Advisory => self.try_lock_advisory(holder, stale_after).await,
            LockMode::Table => self.try_lock_table(holder, stale_after).await,
        }
    }

    async fn heartbeat_lock(&self, holder: &str) -> Result<bool, StoreError> {
        match self.inner.lock_mode {
            LockMode::Advisory => self.heartbeat_advisory(holder).await,
            LockMode::Table => self.heartbeat_table(holder).await,
        }
    }

    async fn release_lock(&self, holder: &str) -> Result<(), StoreError> {
        match self.inner.lock_mode {
            LockMode::Advisory => self.release_advisory(holder).await,
            LockMode::Table => self.release_table(holder).await,
        }
    }

    // The webhook inbox and the run log's upkeep: see `inbox.rs`.

    async fn interrupt_webhook_runs(&self, started_before: DateTime<Utc>, reason: &str) -> Result<u64, StoreError> {
        self.interrupt_webhook_runs_impl(started_before, reason).await
    }

    async fn prune_runs(&self, before: DateTime<Utc>, keep: usize) -> Result<u64, StoreError> {
        self.prune_runs_impl(before, keep).await
    }

    async fn inbox_push(
        &self,
        notifications: &[kaiten_sync::Notification],
        now: DateTime<Utc>,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inbox_push_impl(notifications, now, due_at).await
    }

    async fn inbox_claim(
        &self,
        worker: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<kaiten_sync::InboxEntry>, StoreError> {
        self.inbox_claim_impl(worker, limit, now, lease_until).await
    }

    async fn inbox_finish(&self, results: &[kaiten_sync::InboxResult], now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inbox_finish_impl(results, now).await
    }

    async fn inbox_entries(&self, failed_only: bool, limit: usize) -> Result<Vec<kaiten_sync::InboxEntry>, StoreError> {
        self.inbox_entries_impl(failed_only, limit).await
    }

    async fn inbox_stats(&self) -> Result<kaiten_sync::InboxStats, StoreError> {
        self.inbox_stats_impl().await
    }

    async fn inbox_retry_failed(&self, ids: Option<&[i64]>, due_at: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inbox_retry_failed_impl(ids, due_at).await
    }
}

/// Whether an error is a deadlock or serialization failure worth retrying.
fn is_retryable(e: &sqlx::Error) -> bool {
    matches!(sqlstate(e).as_deref(), Some("40001") | Some("40P01"))
}

/// A failed page attempt: the error, and whether a new attempt may succeed.
struct Failure {
    error: StoreError,
    retry: bool,
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure { error, retry: false }
    }
}
