//! The one-sync-at-a-time lock: a session-level advisory lock on a dedicated connection
//! ([`LockMode::Advisory`](crate::LockMode::Advisory)) or a heartbeat row
//! ([`LockMode::Table`](crate::LockMode::Table)).

use std::time::Duration;

use chrono::{DateTime, Utc};
use kaiten_sync::{LockAttempt, LockInfo, StoreError};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};

use crate::error::{Ctx, BACKEND};
use crate::PgStore;

/// What the `sync_lock` row and `pg_locks` say.
struct LockRow {
    info: Option<LockInfo>,
    row_pid: Option<i32>,
    stale: bool,
    lock_pid: Option<i32>,
}

fn lock_row(row: &PgRow) -> Result<LockRow, sqlx::Error> {
    let holder: Option<String> = row.try_get(0)?;
    let acquired_at: Option<DateTime<Utc>> = row.try_get(1)?;
    let heartbeat_at: Option<DateTime<Utc>> = row.try_get(2)?;
    let info = match (holder, acquired_at, heartbeat_at) {
        (Some(holder), Some(acquired_at), Some(heartbeat_at)) => Some(LockInfo { holder, acquired_at, heartbeat_at }),
        _ => None,
    };
    Ok(LockRow {
        info,
        row_pid: row.try_get(3)?,
        stale: row.try_get::<Option<bool>, _>(4)?.unwrap_or(false),
        lock_pid: row.try_get(5)?,
    })
}

/// How many times a lock attempt re-reads the situation when it changes under it.
const LOCK_ATTEMPTS: usize = 4;

impl PgStore {
    async fn read_lock_row(&self, conn: &mut PgConnection, stale_after: Duration) -> Result<LockRow, StoreError> {
        let ctx = Ctx::new("read the sync lock");
        let row = self
            .query(&self.inner.sql.lock_row)
            .bind(stale_after.as_secs_f64())
            .bind(self.inner.lock_key)
            .fetch_one(conn)
            .await
            .map_err(|e| self.err(e, ctx))?;
        lock_row(&row).map_err(|e| self.err(e, ctx))
    }

    /// Writes the `sync_lock` row from the connection that holds the advisory lock.
    async fn write_lock_row(&self, conn: &mut PgConnection, holder: &str) -> Result<(), sqlx::Error> {
        self.query(&self.inner.sql.lock_row_write).bind(holder).execute(conn).await.map(|_| ())
    }

    pub(crate) async fn try_lock_advisory(
        &self,
        holder: &str,
        stale_after: Duration,
    ) -> Result<LockAttempt, StoreError> {
        let ctx = Ctx::new("take the sync lock");
        let mut held = self.inner.lock_conns.lock().await;
        if let Some(conn) = held.get_mut(holder) {
            match self.write_lock_row(conn, holder).await {
                Ok(()) => return Ok(LockAttempt::Acquired),
                Err(e) => {
                    tracing::warn!(holder, "the connection holding the sync lock is gone ({e}); taking the lock again");
                    held.remove(holder);
                }
            }
        }
        let mut last_info = None;
        for _ in 0..LOCK_ATTEMPTS {
            let mut conn = self.acquire_live().await.map_err(|e| self.err(e, ctx))?;
            let got: bool = self
                .query("SELECT pg_try_advisory_lock($1)")
                .bind(self.inner.lock_key)
                .fetch_one(&mut *conn)
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| self.err(e, ctx))?;
            if got {
                // The lock lives as long as this session: take the connection out of the pool.
                let mut conn = conn.detach();
                if let Err(e) = self.write_lock_row(&mut conn, holder).await {
                    let _ = conn.close().await; // closing the session releases the lock
                    return Err(self.err(e, ctx));
                }
                held.insert(holder.to_owned(), conn);
                return Ok(LockAttempt::Acquired);
            }
            let state = self.read_lock_row(&mut conn, stale_after).await?;
            drop(conn);
            let Some(lock_pid) = state.lock_pid else {
                continue; // released meanwhile: try again
            };
            let recorded = state.row_pid == Some(lock_pid);
            match state.info {
                Some(info) if recorded && info.holder == holder => {
                    // This holder holds it through another store or connection.
                    let mut tx = self.begin(ctx.what).await?;
                    self.query(&self.inner.sql.lock_heartbeat)
                        .bind(holder)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.err(e, ctx))?;
                    tx.commit().await.map_err(|e| self.err(e, ctx))?;
                    return Ok(LockAttempt::Acquired);
                }
                Some(info) if recorded && state.stale => {
                    tracing::warn!(
                        holder = info.holder,
                        heartbeat_at = %info.heartbeat_at,
                        backend_pid = lock_pid,
                        "the sync lock's holder stopped its heartbeat: ending its session to take the lock over"
                    );
                    if !self.terminate_backend(lock_pid).await? {
                        return Ok(LockAttempt::Held(info));
                    }
                    last_info = Some(info);
                }
                Some(info) if recorded => return Ok(LockAttempt::Held(info)),
                _ => {
                    // Someone took the lock a moment ago and has not written the row yet.
                    let now = Utc::now();
                    last_info = Some(LockInfo {
                        holder: format!("another session (PostgreSQL backend pid {lock_pid})"),
                        acquired_at: now,
                        heartbeat_at: now,
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        match last_info {
            Some(info) => Ok(LockAttempt::Held(info)),
            None => Err(StoreError::Busy {
                backend: BACKEND,
                message: "the sync lock kept changing hands; try again".into(),
                source: None,
            }),
        }
    }

    /// Ends the session of a stale lock holder and waits until it is gone. `false` when not
    /// allowed (another role's session).
    async fn terminate_backend(&self, pid: i32) -> Result<bool, StoreError> {
        let ctx = Ctx::new("end the stale sync lock holder's session");
        let mut tx = self.begin(ctx.what).await?;
        let terminated = self.query("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&mut *tx).await;
        let _ = tx.commit().await;
        match terminated.and_then(|r| r.try_get::<bool, _>(0)) {
            Ok(true) => {}
            Ok(false) => return Ok(true), // already gone
            Err(e) if crate::error::sqlstate(&e).as_deref() == Some("42501") => {
                tracing::warn!(pid, "not allowed to end the stale lock holder's session: {e}");
                return Ok(false);
            }
            Err(e) => return Err(self.err(e, ctx)),
        }
        for _ in 0..100 {
            let mut tx = self.begin(ctx.what).await?;
            let alive: bool = self
                .query("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                .bind(pid)
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| self.err(e, ctx))?;
            let _ = tx.commit().await;
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(true)
    }

    pub(crate) async fn heartbeat_advisory(&self, holder: &str) -> Result<bool, StoreError> {
        let mut held = self.inner.lock_conns.lock().await;
        let Some(conn) = held.get_mut(holder) else {
            return Ok(false); // not held here
        };
        let result = self.query(&self.inner.sql.lock_heartbeat).bind(holder).execute(&mut *conn).await;
        match result {
            Ok(done) if done.rows_affected() == 1 => Ok(true),
            // The row was removed by hand: we still hold the advisory lock, so write it again.
            Ok(_) => match self.write_lock_row(conn, holder).await {
                Ok(()) => Ok(true),
                Err(e) => {
                    tracing::warn!(holder, "lost the sync lock: its connection failed ({e})");
                    held.remove(holder);
                    Ok(false)
                }
            },
            Err(e) => {
                tracing::warn!(holder, "lost the sync lock: its connection failed ({e})");
                held.remove(holder);
                Ok(false)
            }
        }
    }

    pub(crate) async fn release_advisory(&self, holder: &str) -> Result<(), StoreError> {
        let Some(mut conn) = self.inner.lock_conns.lock().await.remove(holder) else {
            return Ok(());
        };
        if let Err(e) = self.query(&self.inner.sql.lock_delete).bind(holder).execute(&mut conn).await {
            tracing::debug!(holder, "could not remove the sync_lock row: {e}");
        }
        if let Err(e) = self.query("SELECT pg_advisory_unlock($1)").bind(self.inner.lock_key).execute(&mut conn).await {
            tracing::debug!(holder, "could not unlock (the session ends anyway): {e}");
        }
        // Closing the session releases anything left.
        let _ = conn.close().await;
        Ok(())
    }

    pub(crate) async fn try_lock_table(&self, holder: &str, stale_after: Duration) -> Result<LockAttempt, StoreError> {
        let ctx = Ctx::new("take the sync lock");
        for _ in 0..LOCK_ATTEMPTS {
            let mut tx = self.begin(ctx.what).await?;
            let taken = self
                .query(&self.inner.sql.lock_table_take)
                .bind(holder)
                .bind(stale_after.as_secs_f64())
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.err(e, ctx))?;
            if taken.is_some() {
                tx.commit().await.map_err(|e| self.err(e, ctx))?;
                return Ok(LockAttempt::Acquired);
            }
            let state = self.read_lock_row(&mut tx, stale_after).await?;
            if let Some(info) = state.info.as_ref().filter(|i| kaiten_sync::holder::holder_is_gone(&i.holder)) {
                // A process of this host that no longer exists (killed): its lock is free now.
                self.query(&self.inner.sql.lock_delete)
                    .bind(&info.holder)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e, ctx))?;
                tx.commit().await.map_err(|e| self.err(e, ctx))?;
                tracing::warn!(holder = %info.holder, "took over the sync lock of a process of this host that is gone");
                continue;
            }
            tx.commit().await.map_err(|e| self.err(e, ctx))?;
            if let Some(info) = state.info {
                return Ok(LockAttempt::Held(info));
            }
        }
        Err(StoreError::Busy {
            backend: BACKEND,
            message: "the sync lock kept changing hands; try again".into(),
            source: None,
        })
    }

    pub(crate) async fn heartbeat_table(&self, holder: &str) -> Result<bool, StoreError> {
        let ctx = Ctx::new("refresh the sync lock");
        let statement = self.query(&self.inner.sql.lock_heartbeat).bind(holder);
        let done = self.in_transaction(ctx, async |conn| statement.execute(conn).await).await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn release_table(&self, holder: &str) -> Result<(), StoreError> {
        let ctx = Ctx::new("release the sync lock");
        let statement = self.query(&self.inner.sql.lock_delete).bind(holder);
        self.in_transaction(ctx, async |conn| statement.execute(conn).await.map(drop)).await
    }
}
