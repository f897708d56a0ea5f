//! The webhook inbox push-latency benchmark every store's `inbox` bench runs, on a store the bench
//! opens (and cleans up after): [`run`], then [`InboxFigures::print`].
//!
//! [`TASKS`] tasks push one notification each per delivery, paced to [`RATE`] deliveries/s in
//! total, for [`seconds`], while a worker drains the inbox as `serve` does (claims due entries
//! every 50 ms and finishes them). Deliveries name 5,000 cards, so that some coalesce. Two passes:
//! the inbox alone, then with a sync writing pages of 100 changed cards back to back on the same
//! store. Prints p50/p99/max of `inbox_push` calls, and the p99 and max measured from the moment
//! each delivery was due to be sent (which adds the timer's lateness, up to a millisecond, and
//! counts the wait of a push that starts late because the previous one of its task was slow).
//! Target: p99 under [`TARGET_P99_MS`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kaiten_sync::{Batch, EntityKind, InboxResult, Notification, Page, Store};

use crate::fixtures;

/// Tasks pushing deliveries at once.
pub const TASKS: u64 = 16;
/// Deliveries per second, from all tasks together.
pub const RATE: u64 = 500;
/// The p99 a push should stay under, in milliseconds.
pub const TARGET_P99_MS: f64 = 20.0;

/// The whole number in the environment variable `name` (`_` allowed between digits), if any.
pub fn env_number(name: &str) -> Option<i64> {
    std::env::var(name).ok().and_then(|v| v.trim().replace('_', "").parse().ok())
}

/// How long each pass runs: `BENCH_SECONDS` (default 5; 1 in smoke mode: `BENCH_SMOKE=1`, or
/// `BENCH_CARDS` below 10,000 as CI sets for every benchmark).
pub fn seconds() -> u64 {
    let smoke = std::env::var_os("BENCH_SMOKE").is_some_and(|v| v != "0")
        || env_number("BENCH_CARDS").is_some_and(|n| n < 10_000);
    env_number("BENCH_SECONDS").map_or(if smoke { 1 } else { 5 }, |s| s.max(1) as u64)
}

/// The p99 of `inbox_push` calls of both passes, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct InboxFigures {
    /// The inbox alone.
    pub alone_p99_ms: f64,
    /// During a sync writing card pages on the same store.
    pub busy_p99_ms: f64,
}

impl InboxFigures {
    /// Prints the closing line of the benchmark (the two p99s and the target).
    pub fn print(&self) {
        println!(
            "inbox_push p99 {:.2} ms alone, {:.2} ms during a sync (target {TARGET_P99_MS:.0} ms)",
            self.alone_p99_ms, self.busy_p99_ms
        );
    }
}

/// Runs both passes for `seconds` each on `store` (migrated, empty), printing a line per pass and
/// what the worker removed; returns the figures, for the caller to print once it has cleaned up.
/// The sync's cards are of board 10, whose parents are written first (for foreign keys).
pub async fn run(store: Arc<dyn Store>, seconds: u64) -> InboxFigures {
    for page in fixtures::board_10_parent_pages() {
        store.apply_page(&page).await.expect("the cards' parents");
    }
    let duration = Duration::from_secs(seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = tokio::spawn(drain(store.clone(), stop.clone()));
    let latencies = push_paced(store.clone(), duration).await;
    let alone_p99_ms = report("inbox_push", latencies, seconds, "");

    let pages = Arc::new(AtomicU64::new(0));
    let syncer = tokio::spawn(sync(store.clone(), stop.clone(), pages.clone()));
    let latencies = push_paced(store.clone(), duration).await;
    let pages = pages.load(Ordering::Relaxed);
    let busy_p99_ms = report(
        "inbox_push during a sync",
        latencies,
        seconds,
        &format!("  ({pages} card pages of 100 written meanwhile)"),
    );
    stop.store(true, Ordering::Relaxed);
    syncer.await.expect("sync task");
    let removed = drainer.await.expect("drain task");
    let stats = store.inbox_stats().await.expect("stats");
    println!("(worker removed {removed} entries; {} pending at the end)", stats.pending);
    InboxFigures { alone_p99_ms, busy_p99_ms }
}

/// Pushes `RATE` deliveries/s from `TASKS` tasks for `duration`; returns each push's latency,
/// `(from the call, from when it was due)`.
async fn push_paced(store: Arc<dyn Store>, duration: Duration) -> Vec<(Duration, Duration)> {
    let total = RATE * duration.as_secs();
    let start = Instant::now() + Duration::from_millis(20);
    let interval = Duration::from_secs(1) / RATE as u32;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                // Delivery n is sent at start + n * interval, by task n % TASKS.
                for n in (task..total).step_by(TASKS as usize) {
                    let due = start + interval * n as u32;
                    tokio::time::sleep_until(due.into()).await;
                    let note = Notification {
                        kind: EntityKind::Cards,
                        entity_id: 1 + (n * 7_919 % 5_000) as i64,
                        parent_id: None,
                        event: "card:update".into(),
                    };
                    let called = Instant::now();
                    let now = Utc::now();
                    store.inbox_push(&[note], now, now + chrono::Duration::seconds(1)).await.expect("inbox_push");
                    latencies.push((called.elapsed(), due.elapsed()));
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total as usize);
    for task in tasks {
        all.extend(task.await.expect("a pushing task"));
    }
    all
}

/// Claims due entries every 50 ms and finishes them, until `stop`; returns how many it removed.
async fn drain(store: Arc<dyn Store>, stop: Arc<AtomicBool>) -> u64 {
    let mut removed = 0;
    while !stop.load(Ordering::Relaxed) {
        let now = Utc::now();
        let claimed = store.inbox_claim("bench", 200, now, now + chrono::Duration::seconds(60)).await.expect("claim");
        let done: Vec<InboxResult> =
            claimed.iter().map(|e| InboxResult::Done { id: e.id, seq: e.seq, again_at: now }).collect();
        if !done.is_empty() {
            removed += store.inbox_finish(&done, now).await.expect("finish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    removed
}

/// Writes pages of 100 changed cards back to back until `stop`; counts the pages.
async fn sync(store: Arc<dyn Store>, stop: Arc<AtomicBool>, pages: Arc<AtomicU64>) {
    let mut pass = 0;
    while !stop.load(Ordering::Relaxed) {
        pass += 1;
        for first in (1..=5_000).step_by(100) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let page = Page {
                batch: Batch::Cards(fixtures::cards(first, 100, 10, 100 + pass)),
                sweep: None,
                state: None,
                synced_at: Utc::now(),
            };
            store.apply_page(&page).await.expect("apply_page");
            pages.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q` quantile of sorted durations.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Prints p50/p99/max of the calls, and p99 from when each delivery was due; returns the call p99.
fn report(label: &str, latencies: Vec<(Duration, Duration)>, seconds: u64, extra: &str) -> f64 {
    let (mut calls, mut due): (Vec<Duration>, Vec<Duration>) = latencies.into_iter().unzip();
    calls.sort_unstable();
    due.sort_unstable();
    let p99 = ms(quantile(&calls, 0.99));
    println!(
        "{label:<26} {} pushes in {seconds} s: p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  (from due time: p99 \
         {:.2} ms, max {:.2} ms){extra}{}",
        calls.len(),
        ms(quantile(&calls, 0.50)),
        p99,
        ms(*calls.last().expect("pushes")),
        ms(quantile(&due, 0.99)),
        ms(*due.last().expect("pushes")),
        if p99 >= TARGET_P99_MS { "  ABOVE TARGET" } else { "" }
    );
    p99
}
