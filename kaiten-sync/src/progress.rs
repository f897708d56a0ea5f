//! Progress events, for an app's logs or the CLI's progress bars.

use std::sync::Arc;

use crate::schema::EntityKind;
use crate::store::{EntityStats, RunKind, RunStatus};

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// A run took the lock and started.
    RunStarted {
        /// Its id in `sync_logs`.
        run_id: i64,
        /// Full, incremental, selective.
        kind: RunKind,
        /// The kinds it covers, in order.
        entities: Vec<EntityKind>,
    },
    /// A kind started.
    EntityStarted {
        /// The kind.
        kind: EntityKind,
    },
    /// A page of a kind was committed; `stats` are the kind's totals so far.
    PageDone {
        /// The kind.
        kind: EntityKind,
        /// Totals so far.
        stats: EntityStats,
    },
    /// A kind finished.
    EntityDone {
        /// The kind.
        kind: EntityKind,
        /// Its totals.
        stats: EntityStats,
    },
    /// The run ended.
    RunFinished {
        /// Its id.
        run_id: i64,
        /// How it ended.
        status: RunStatus,
        /// The error of a failed run.
        error: Option<String>,
    },
}

type Callback = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// Where events go.
#[derive(Clone, Default)]
pub(crate) struct ProgressSink(Option<Callback>);

impl ProgressSink {
    pub(crate) fn none() -> Self {
        Self(None)
    }

    pub(crate) fn callback(f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    pub(crate) fn emit(&self, event: &ProgressEvent) {
        if let Some(f) = &self.0 {
            f(event);
        }
    }
}
