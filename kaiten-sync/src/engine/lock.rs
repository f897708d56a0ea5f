//! The run lock: taking it (waiting up to `lock_wait`) and keeping it alive with a heartbeat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::SyncEngine;
use crate::error::{Chain, SyncError};
use crate::store::LockAttempt;

impl SyncEngine {
    pub(super) async fn acquire_lock(&self) -> Result<(), SyncError> {
        let deadline = Instant::now() + self.options.lock_wait;
        loop {
            match self.store.try_lock(&self.holder, self.options.lock_stale_after).await? {
                LockAttempt::Acquired => return Ok(()),
                LockAttempt::Held(info) => {
                    if Instant::now() >= deadline {
                        return Err(SyncError::Locked {
                            holder: info.holder,
                            since: info.acquired_at,
                            waited: self.options.lock_wait,
                        });
                    }
                    debug!(holder = %info.holder, "sync lock held by another run; waiting");
                    tokio::time::sleep(Duration::from_millis(250).min(self.options.lock_wait)).await;
                }
            }
        }
    }

    pub(super) fn spawn_heartbeat(&self, lost: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let holder = self.holder.clone();
        let every = self.options.heartbeat_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.heartbeat_lock(&holder).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!("the sync lock was lost; stopping the run at the next page");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => warn!(error = %Chain(&e), "sync lock heartbeat failed"),
                }
            }
        })
    }
}

/// The id this process's runs hold the lock under.
pub(super) fn lock_holder_id() -> String {
    crate::holder::new_holder_id()
}
