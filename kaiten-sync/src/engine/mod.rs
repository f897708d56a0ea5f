//! The sync engine: full, incremental and selective runs over a [`KaitenClient`] and a [`Store`].
//!
//! - `options`: what a run is asked to do ([`Mode`], [`Selection`], [`SyncOptions`]) and its
//!   [`SyncReport`];
//! - `lock`: the run lock and its heartbeat;
//! - `run`: one run in progress, the small kinds, structure and deletion sweeps;
//! - `cards`: the card listing, its pages and resume points (`resume`);
//! - `prefetch`: listings requested as soon as a run starts.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use kaiten_client::KaitenClient;
use tracing::{info, info_span, warn, Instrument};

use crate::error::{chain, Chain, SyncError};
use crate::parents::ParentCache;
use crate::progress::{ProgressEvent, ProgressSink};
use crate::schema::EntityKind;
use crate::store::{now_millis, RunKind, RunRecord, RunStatus, Store};

mod cards;
mod lock;
mod options;
mod prefetch;
mod resume;
mod run;

use lock::lock_holder_id;
pub use options::{Mode, Selection, SyncOptions, SyncReport, DELETE_CHECK_SAMPLE};
pub(crate) use resume::{next_position, WalkPos};
use run::Run;

/// Mirrors a Kaiten company into a [`Store`].
///
/// Cheap to clone; clones share the client (and so its rate limiter) and the store.
#[derive(Clone)]
pub struct SyncEngine {
    client: KaitenClient,
    store: Arc<dyn Store>,
    options: SyncOptions,
    progress: ProgressSink,
    holder: String,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("client", &self.client)
            .field("store", &self.store)
            .field("options", &self.options)
            .field("holder", &self.holder)
            .finish()
    }
}

impl SyncEngine {
    /// An engine with default options.
    pub fn new(client: KaitenClient, store: Arc<dyn Store>) -> Self {
        Self {
            client,
            store,
            options: SyncOptions::default(),
            progress: ProgressSink::none(),
            holder: lock_holder_id(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: SyncOptions) -> Self {
        self.options = options;
        self
    }

    /// Calls `f` for every progress event (keep it quick; it runs on the sync task).
    pub fn on_progress(mut self, f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        self.progress = ProgressSink::callback(f);
        self
    }

    /// Sends every progress event to a channel (events are dropped if the receiver is gone).
    pub fn progress_channel(self, sender: tokio::sync::mpsc::UnboundedSender<ProgressEvent>) -> Self {
        self.on_progress(move |event| {
            let _ = sender.send(event.clone());
        })
    }

    /// The options in force.
    pub fn options(&self) -> &SyncOptions {
        &self.options
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The client.
    pub fn client(&self) -> &KaitenClient {
        &self.client
    }

    /// The id this engine's runs hold the lock under.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Full sync of everything, in dependency order, ending with deletion detection.
    pub async fn sync_all(&self) -> Result<SyncReport, SyncError> {
        self.run(RunKind::Full, Mode::Full, &Selection::all()).await
    }

    /// Incremental sync of everything: cards changed since the last run, small kinds listed whole.
    pub async fn sync_incremental(&self) -> Result<SyncReport, SyncError> {
        self.run(RunKind::Incremental, Mode::Incremental, &Selection::all()).await
    }

    /// Selective sync of the chosen kinds, full or incremental.
    pub async fn sync_specific(&self, kinds: &[EntityKind], full: bool) -> Result<SyncReport, SyncError> {
        let mode = if full { Mode::Full } else { Mode::Incremental };
        self.sync_selection(&Selection::kinds(kinds), mode).await
    }

    /// Sync of any selection (kinds, spaces, boards) in either mode. A selection of everything is
    /// logged as a full or incremental run, anything narrower as selective.
    pub async fn sync_selection(&self, selection: &Selection, mode: Mode) -> Result<SyncReport, SyncError> {
        let kind = match (selection.is_everything(), mode) {
            (true, Mode::Full) => RunKind::Full,
            (true, Mode::Incremental) => RunKind::Incremental,
            (false, _) => RunKind::Selective,
        };
        self.run(kind, mode, selection).await
    }

    async fn run(&self, kind: RunKind, mode: Mode, selection: &Selection) -> Result<SyncReport, SyncError> {
        let entities: Vec<EntityKind> = EntityKind::ALL.into_iter().filter(|k| selection.includes(*k)).collect();
        if entities.is_empty() {
            return Err(SyncError::InvalidSelection("no entity kind selected".into()));
        }
        let started = Instant::now();
        self.acquire_lock().await?;
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = self.spawn_heartbeat(lost.clone());
        let result = self.run_locked(kind, mode, selection, entities, started, lost).await;
        heartbeat.abort();
        if let Err(e) = self.store.release_lock(&self.holder).await {
            warn!(error = %Chain(&e), "could not release the sync lock; it goes stale on its own");
        }
        result
    }

    async fn run_locked(
        &self,
        kind: RunKind,
        mode: Mode,
        selection: &Selection,
        entities: Vec<EntityKind>,
        started: Instant,
        lost: Arc<AtomicBool>,
    ) -> Result<SyncReport, SyncError> {
        let stats_before = self.client.stats();
        let mut record = RunRecord::start(kind, entities.clone(), selection.scope_text(), now_millis());
        record.id = self.store.start_run(&record).await?;
        let interrupted = self
            .store
            .interrupt_running_runs(record.id, "interrupted: the process running it stopped before it finished")
            .await?;
        if interrupted > 0 {
            info!(interrupted, "marked runs left behind by a stopped process as interrupted");
        }
        self.progress.emit(&ProgressEvent::RunStarted { run_id: record.id, kind, entities: entities.clone() });
        let span = info_span!("sync", run_id = record.id, kind = kind.as_str());
        let mut run = Run {
            engine: self,
            mode,
            selection,
            record,
            parents: ParentCache::default(),
            changed_boards: None,
            listed_boards: None,
            select_properties: None,
            complete: HashSet::new(),
            lost,
            refused: Vec::new(),
            cards: None,
            prefetched: prefetch::Prefetched::default(),
        };
        let outcome = async {
            // Small kinds are requested together, the first card pages with them.
            let every_space = selection.spaces.is_empty() && selection.boards.is_empty();
            run.prefetched =
                prefetch::Prefetched::start(&self.client, &entities, every_space, self.options.concurrency);
            run.validate_selection().await?;
            if entities.contains(&EntityKind::Cards) {
                // The first card pages are fetched while the other kinds are listed.
                run.cards = Some(run.plan_cards().await?);
            }
            for entity in &entities {
                run.sync_entity(*entity).await?;
                run.record.api_requests = self.client.stats().requests - stats_before.requests;
                run.record.retries = self.client.stats().retries - stats_before.retries;
                self.store.update_run(&run.record).await?;
            }
            run.record_row_counts().await?;
            if !run.refused.is_empty() {
                return Err(SyncError::DeletionsRefused {
                    refused: std::mem::take(&mut run.refused),
                    max_share: self.options.max_delete_share,
                });
            }
            Ok::<(), SyncError>(())
        }
        .instrument(span)
        .await;
        let mut record = run.record;
        record.api_requests = self.client.stats().requests - stats_before.requests;
        record.retries = self.client.stats().retries - stats_before.retries;
        record.finished_at = Some(now_millis());
        record.status = if outcome.is_ok() { RunStatus::Succeeded } else { RunStatus::Failed };
        record.error = outcome.as_ref().err().map(|e| chain(e));
        if let Err(e) = self.store.update_run(&record).await {
            warn!(error = %Chain(&e), "could not record the end of the run in sync_logs");
            if outcome.is_ok() {
                return Err(e.into());
            }
        }
        self.progress.emit(&ProgressEvent::RunFinished {
            run_id: record.id,
            status: record.status,
            error: record.error.clone(),
        });
        if let Some(retention) = self.options.run_retention {
            let before = now_millis() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
            match self.store.prune_runs(before, self.options.keep_runs).await {
                Ok(0) => {}
                Ok(pruned) => info!(pruned, "pruned old runs from sync_logs"),
                Err(e) => warn!(error = %Chain(&e), "could not prune old runs from sync_logs"),
            }
        }
        outcome?;
        info!(run_id = record.id, requests = record.api_requests, "sync finished");
        Ok(SyncReport { run: record, duration: started.elapsed() })
    }
}
