//! Live progress of the run this process is running: the engine's [`ProgressEvent`]s folded into
//! per-kind totals, with a rate and, where one can be made, an estimate of the time left.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kaiten_sync::{EntityKind, EntityStats, ProgressEvent, RunKind, RunStatus};
use serde_json::{json, Value};

/// Where a kind of the running run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KindState {
    /// Not started yet.
    Pending,
    /// Fetching pages.
    Running,
    /// Finished.
    Done,
}

impl KindState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            KindState::Pending => "pending",
            KindState::Running => "running",
            KindState::Done => "done",
        }
    }
}

/// One kind of the running run.
#[derive(Debug, Clone)]
pub(super) struct KindProgress {
    pub(super) kind: EntityKind,
    pub(super) state: KindState,
    pub(super) stats: EntityStats,
    pub(super) started: Option<DateTime<Utc>>,
    pub(super) finished: Option<DateTime<Utc>>,
    /// The client's request counter when the kind started.
    requests_at_start: u64,
    /// Requests made while the kind ran (a webhook refetch at the same time counts too: the client
    /// is shared).
    pub(super) requests: u64,
}

/// The last run the engine reported on.
#[derive(Debug, Clone)]
pub(super) struct LiveRun {
    pub(super) run_id: i64,
    pub(super) kind: RunKind,
    pub(super) started: DateTime<Utc>,
    requests_at_start: u64,
    /// Requests since the run started.
    pub(super) requests: u64,
    /// How it ended, once it did.
    pub(super) finished: Option<RunStatus>,
    /// When it ended.
    pub(super) finished_at: Option<DateTime<Utc>>,
    pub(super) kinds: Vec<KindProgress>,
}

/// The latest per-kind totals of the run this process runs (or ran last).
#[derive(Debug, Default)]
pub(super) struct LiveProgress {
    pub(super) run: Option<LiveRun>,
}

impl LiveProgress {
    /// Folds in one event; `requests` is the client's request counter now.
    pub(super) fn apply(&mut self, event: &ProgressEvent, requests: u64, now: DateTime<Utc>) {
        if let ProgressEvent::RunStarted { run_id, kind, entities } = event {
            self.run = Some(LiveRun {
                run_id: *run_id,
                kind: *kind,
                started: now,
                requests_at_start: requests,
                requests: 0,
                finished: None,
                finished_at: None,
                kinds: entities
                    .iter()
                    .map(|kind| KindProgress {
                        kind: *kind,
                        state: KindState::Pending,
                        stats: EntityStats::default(),
                        started: None,
                        finished: None,
                        requests_at_start: requests,
                        requests: 0,
                    })
                    .collect(),
            });
            return;
        }
        let Some(run) = self.run.as_mut() else { return };
        run.requests = requests.saturating_sub(run.requests_at_start);
        let entry = |run: &mut LiveRun, kind: EntityKind| -> usize {
            match run.kinds.iter().position(|k| k.kind == kind) {
                Some(i) => i,
                None => {
                    run.kinds.push(KindProgress {
                        kind,
                        state: KindState::Pending,
                        stats: EntityStats::default(),
                        started: None,
                        finished: None,
                        requests_at_start: requests,
                        requests: 0,
                    });
                    run.kinds.len() - 1
                }
            }
        };
        match event {
            ProgressEvent::EntityStarted { kind } => {
                let i = entry(run, *kind);
                let k = &mut run.kinds[i];
                k.state = KindState::Running;
                k.started = Some(now);
                k.requests_at_start = requests;
            }
            ProgressEvent::PageDone { kind, stats } => {
                let i = entry(run, *kind);
                let k = &mut run.kinds[i];
                if k.state == KindState::Pending {
                    k.state = KindState::Running;
                    k.started = Some(now);
                }
                k.stats = *stats;
                k.requests = requests.saturating_sub(k.requests_at_start);
            }
            ProgressEvent::EntityDone { kind, stats } => {
                let i = entry(run, *kind);
                let k = &mut run.kinds[i];
                k.state = KindState::Done;
                k.stats = *stats;
                k.finished = Some(now);
                k.requests = requests.saturating_sub(k.requests_at_start);
            }
            ProgressEvent::RunFinished { status, .. } => {
                run.finished = Some(*status);
                run.finished_at = Some(now);
            }
            _ => {}
        }
    }
}

/// Records fetched per second while a kind ran.
pub(super) fn rate(k: &KindProgress, now: DateTime<Utc>) -> Option<f64> {
    let start = k.started?;
    let secs = (k.finished.unwrap_or(now) - start).num_milliseconds() as f64 / 1000.0;
    (secs >= 0.5 && k.stats.fetched > 0).then(|| k.stats.fetched as f64 / secs)
}

/// Seconds left for a running kind of a full run: the rows stored by the last complete listing
/// (`expected`) still to fetch, at the rate so far. `None` for an incremental run (how much changed
/// is unknown) and before the first page.
pub(super) fn estimate(run: &LiveRun, k: &KindProgress, expected: Option<i64>, now: DateTime<Utc>) -> Option<f64> {
    if k.state != KindState::Running || !matches!(run.kind, RunKind::Full | RunKind::Selective) {
        return None;
    }
    let expected = u64::try_from(expected?).ok()?;
    let left = expected.saturating_sub(k.stats.fetched);
    let rate = rate(k, now)?;
    Some(left as f64 / rate)
}

/// The run as `status.json` shows it (`progress`); `expected` holds each kind's stored row count.
pub(super) fn to_json(run: &LiveRun, expected: &HashMap<EntityKind, i64>, now: DateTime<Utc>) -> Value {
    let kinds: Vec<Value> = run
        .kinds
        .iter()
        .map(|k| {
            json!({
                "kind": k.kind.as_str(),
                "state": k.state.as_str(),
                "pages": k.stats.pages,
                "fetched": k.stats.fetched,
                "inserted": k.stats.inserted,
                "updated": k.stats.updated,
                "unchanged": k.stats.unchanged,
                "deleted": k.stats.deleted,
                "requests": k.requests,
                "rate_per_sec": rate(k, now).map(|r| (r * 10.0).round() / 10.0),
                "expected": expected.get(&k.kind),
                "eta_secs": estimate(run, k, expected.get(&k.kind).copied(), now).map(f64::round),
            })
        })
        .collect();
    json!({
        "run_id": run.run_id,
        "kind": run.kind.as_str(),
        "started": run.started,
        "elapsed_secs": (run.finished_at.unwrap_or(now) - run.started).num_seconds(),
        "requests": run.requests,
        "finished": run.finished.map(RunStatus::as_str),
        "kinds_done": run.kinds.iter().filter(|k| k.state == KindState::Done).count(),
        "kinds_total": run.kinds.len(),
        "kinds": kinds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fold_into_per_kind_totals_with_a_rate_and_an_estimate() {
        let t0: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let mut live = LiveProgress::default();
        let entities = vec![EntityKind::Boards, EntityKind::Cards];
        live.apply(&ProgressEvent::RunStarted { run_id: 7, kind: RunKind::Full, entities }, 100, at(0));
        live.apply(&ProgressEvent::EntityStarted { kind: EntityKind::Boards }, 101, at(0));
        let stats = EntityStats { pages: 1, fetched: 20, inserted: 20, ..EntityStats::default() };
        live.apply(&ProgressEvent::EntityDone { kind: EntityKind::Boards, stats }, 103, at(1));
        live.apply(&ProgressEvent::EntityStarted { kind: EntityKind::Cards }, 103, at(1));
        let stats = EntityStats { pages: 2, fetched: 200, updated: 5, unchanged: 195, ..EntityStats::default() };
        live.apply(&ProgressEvent::PageDone { kind: EntityKind::Cards, stats }, 105, at(3));
        let run = live.run.clone().unwrap();
        assert_eq!((run.run_id, run.requests), (7, 5));
        assert_eq!(run.kinds[0].state, KindState::Done);
        assert_eq!(
            (run.kinds[1].state, run.kinds[1].requests, run.kinds[1].stats.fetched),
            (KindState::Running, 2, 200)
        );
        let expected = HashMap::from([(EntityKind::Cards, 1_000)]);
        let value = to_json(&run, &expected, at(3));
        assert_eq!(value["kinds"][1]["rate_per_sec"], 100.0);
        assert_eq!(value["kinds"][1]["eta_secs"], 8.0, "800 cards left at 100/s");
        assert_eq!(value["kinds"][0]["eta_secs"], Value::Null, "a finished kind has no estimate");
        assert_eq!((value["kinds_done"].clone(), value["kinds_total"].clone()), (json!(1), json!(2)));
        live.apply(&ProgressEvent::RunFinished { run_id: 7, status: RunStatus::Succeeded, error: None }, 105, at(4));
        let run = live.run.unwrap();
        assert_eq!(run.finished, Some(RunStatus::Succeeded));
        assert_eq!(to_json(&run, &expected, at(60))["elapsed_secs"], 4, "a finished run's time stops");
    }
}
