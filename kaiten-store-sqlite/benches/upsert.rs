//! Upsert throughput of the SQLite store: `cargo bench -p kaiten-store-sqlite --bench upsert`.
//!
//! Upserts `BENCH_CARDS` cards (default 100,000) in pages of 100 into a fresh file-backed store,
//! then re-upserts them unchanged, unchanged under a deletion sweep (what a full sync does), and
//! changed (a newer `updated`). Prints rows/s for each pass. Only `apply_page` is timed; building
//! the fixture records is not.

use std::time::{Duration, Instant};

use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::{Batch, Page, PageOutcome, Store};
use kaiten_sync_testkit::fixtures;

const PAGE: i64 = 100;

async fn pass(store: &SqliteStore, total: i64, updated_seconds: i64, sweep: Option<i64>) -> (Duration, PageOutcome) {
    let mut spent = Duration::ZERO;
    let mut sum = PageOutcome::default();
    let mut first = 1;
    while first <= total {
        let count = PAGE.min(total - first + 1);
        // 1,000 cards per board, like a large company.
        let board = 1 + (first - 1) / 1000;
        let page = Page {
            batch: Batch::Cards(fixtures::cards(first, count, board, updated_seconds)),
            sweep,
            state: None,
            synced_at: fixtures::epoch() + chrono::Duration::seconds(10_000 + updated_seconds),
        };
        let started = Instant::now();
        let outcome = store.apply_page(&page).await.expect("apply_page");
        spent += started.elapsed();
        sum.inserted += outcome.inserted;
        sum.updated += outcome.updated;
        sum.unchanged += outcome.unchanged;
        first += count;
    }
    (spent, sum)
}

fn report(name: &str, rows: i64, (spent, outcome): (Duration, PageOutcome)) {
    let rate = rows as f64 / spent.as_secs_f64();
    println!(
        "{name:<32} {rows:>8} rows in {:>7.3} s = {rate:>9.0} rows/s   (inserted {}, updated {}, unchanged {})",
        spent.as_secs_f64(),
        outcome.inserted,
        outcome.updated,
        outcome.unchanged
    );
}

fn main() {
    let total: i64 = std::env::var("BENCH_CARDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bench.db");
        let store = SqliteStore::open(&path).expect("open");
        store.migrate().await.expect("migrate");
        println!("SQLite upsert benchmark: {total} cards in pages of {PAGE}, file {}", path.display());

        let insert = pass(&store, total, 100, None).await;
        assert_eq!(insert.1.inserted, total as u64);
        report("insert", total, insert);

        let unchanged = pass(&store, total, 100, None).await;
        assert_eq!(unchanged.1.unchanged, total as u64);
        report("re-upsert unchanged", total, unchanged);

        let swept = pass(&store, total, 100, Some(1)).await;
        assert_eq!(swept.1.unchanged, total as u64);
        report("re-upsert unchanged, sweep set", total, swept);

        let changed = pass(&store, total, 200, Some(2)).await;
        assert_eq!(changed.1.updated, total as u64);
        report("re-upsert changed, sweep set", total, changed);

        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!("database file: {:.1} MiB (plus WAL)", size as f64 / (1024.0 * 1024.0));
    });
}
