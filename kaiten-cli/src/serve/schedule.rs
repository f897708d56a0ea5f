//! When syncs run: the schedule from the command line, and the loop that starts them.

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, NaiveTime, Utc};
use tokio::sync::watch;

use super::{AppState, ServeArgs, SyncKind};

pub(super) fn parse_hhmm(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| format!("expected a UTC time of day as HH:MM (e.g. 03:00), got {text:?}"))
}

/// When full syncs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullSchedule {
    /// Daily at this UTC time.
    DailyAt(NaiveTime),
    /// At this interval.
    Every(Duration),
}

/// When syncs run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Interval of incremental syncs (the first runs at start).
    pub incremental_every: Option<Duration>,
    /// Full syncs.
    pub full: Option<FullSchedule>,
}

impl Schedule {
    pub(super) fn from_args(args: &ServeArgs) -> Self {
        if args.no_schedule {
            return Self::default();
        }
        let incremental_every = (args.incremental_every > 0).then(|| Duration::from_secs(args.incremental_every));
        let full = match (args.full_at, args.full_every) {
            (Some(at), _) => Some(FullSchedule::DailyAt(at)),
            (None, Some(0)) => None,
            (None, Some(secs)) => Some(FullSchedule::Every(Duration::from_secs(secs))),
            (None, None) => Some(FullSchedule::DailyAt(NaiveTime::from_hms_opt(3, 0, 0).expect("valid time"))),
        };
        Self { incremental_every, full }
    }

    /// The first full sync after `now`.
    pub fn next_full(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.full? {
            FullSchedule::DailyAt(at) => {
                let today = now.date_naive().and_time(at).and_utc();
                Some(if today > now { today } else { today + chrono::Duration::days(1) })
            }
            FullSchedule::Every(every) => Some(now + chrono::Duration::from_std(every).unwrap_or_default()),
        }
    }

    /// The schedule in words.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(every) = self.incremental_every {
            parts.push(format!("incremental every {} (first at start)", human(every)));
        }
        match self.full {
            Some(FullSchedule::DailyAt(at)) => parts.push(format!("full daily at {} UTC", at.format("%H:%M"))),
            Some(FullSchedule::Every(every)) => parts.push(format!("full every {}", human(every))),
            None => {}
        }
        if parts.is_empty() {
            "no scheduled syncs".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 3600 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s >= 60 && s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Runs the schedule until `stop` says so: an incremental sync at start and at its interval, full
/// syncs at theirs. A busy lock or an error is noted and the schedule goes on.
pub(super) async fn scheduler(state: AppState, mut stop: watch::Receiver<bool>) {
    let schedule = state.0.schedule.clone();
    let mut next_incremental = schedule.incremental_every.map(|_| Utc::now());
    let mut next_full = schedule.next_full(Utc::now());
    loop {
        state.set_next(next_incremental, next_full);
        let Some(due) = [next_incremental, next_full].into_iter().flatten().min() else { return };
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let kind = if next_full.is_some_and(|f| f <= Utc::now()) { SyncKind::Full } else { SyncKind::Incremental };
        if let Some(run) = state.start_sync(kind, "scheduled") {
            tokio::select! {
                _ = run => {}
                _ = stop.changed() => return,
            }
        }
        let now = Utc::now();
        if kind == SyncKind::Full {
            next_full = schedule.next_full(now);
        }
        // A full sync also brings everything up to date: the next incremental counts from here.
        next_incremental =
            schedule.incremental_every.map(|every| now + chrono::Duration::from_std(every).unwrap_or_default());
    }
}
