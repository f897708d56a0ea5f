//! Upsert throughput: 100,000 cards in pages of 100 (first insert, re-upsert unchanged, re-upsert
//! unchanged with a deletion sweep), on a schema of its own that is dropped at the end.
//!
//! ```text
//! cargo bench -p kaiten-store-postgres --bench upsert
//! BENCH_CARDS=2000 cargo bench -p kaiten-store-postgres --bench upsert    # smoke run (CI)
//! ```
//!
//! The server comes from `KAITEN_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); `BENCH_STATEMENT_CACHE=100` measures with named
//! prepared statements instead of the pooler-safe default (0); `BENCH_FOREIGN_KEYS=0` measures
//! without foreign keys; `BENCH_KEEP=1` keeps the schema for inspection. Target: 30,000 rows/s.

use std::time::{Duration, Instant};

use kaiten_store_postgres::{PgStore, PgStoreOptions};
use kaiten_sync::conformance::fixtures::{self, board, column, lane, space};
use kaiten_sync::{Batch, EntityKind, Page, PageOutcome, Store};
use sqlx::{Connection, Executor, PgConnection};

const PAGE: i64 = 100;
const TARGET: f64 = 30_000.0;

fn env_number(name: &str, default: i64) -> i64 {
    std::env::var(name).ok().and_then(|v| v.trim().replace('_', "").parse().ok()).unwrap_or(default)
}

/// The pages, built before timing (parsing fixture JSON is not the store's work).
fn pages(total: i64) -> Vec<Batch> {
    (1..=total)
        .step_by(PAGE as usize)
        .map(|first| Batch::Cards(fixtures::cards(first, PAGE.min(total - first + 1), 10, 100)))
        .collect()
}

async fn pass(store: &PgStore, batches: &[Batch], sweep: Option<i64>, synced: i64) -> (Duration, PageOutcome) {
    let mut sum = PageOutcome::default();
    let mut pages: Vec<Page> = batches
        .iter()
        .map(|batch| Page {
            batch: batch.clone(),
            sweep,
            state: None,
            synced_at: fixtures::epoch() + chrono::Duration::seconds(synced),
        })
        .collect();
    // Each pass starts from a checkpoint, so that one pass does not pay for the previous one's
    // dirty pages (ignored without the privilege).
    let _ = sqlx::query("CHECKPOINT").execute(store.pool()).await;
    let started = Instant::now();
    for page in &mut pages {
        let outcome = store.apply_page(page).await.expect("apply_page");
        sum.inserted += outcome.inserted;
        sum.updated += outcome.updated;
        sum.unchanged += outcome.unchanged;
    }
    (started.elapsed(), sum)
}

fn report(label: &str, rows: i64, took: Duration, outcome: PageOutcome) -> f64 {
    let rate = rows as f64 / took.as_secs_f64();
    println!(
        "{label:<34} {rows:>7} rows in {:>7.2} s = {rate:>9.0} rows/s  (inserted {}, updated {}, unchanged {}){}",
        took.as_secs_f64(),
        outcome.inserted,
        outcome.updated,
        outcome.unchanged,
        if rate < TARGET { "  BELOW TARGET" } else { "" }
    );
    rate
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url =
        std::env::var("KAITEN_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let total = env_number("BENCH_CARDS", 100_000).max(1);
    let cache = env_number("BENCH_STATEMENT_CACHE", 0).max(0) as usize;
    let foreign_keys = env_number("BENCH_FOREIGN_KEYS", 1) != 0;
    let schema = format!("kaiten_bench_{}", std::process::id());
    let store = match PgStore::connect_with(PgStoreOptions {
        schema: schema.clone(),
        statement_cache_capacity: cache,
        foreign_keys,
        ..PgStoreOptions::new(&url)
    })
    .await
    {
        Ok(store) => store,
        Err(e) => {
            eprintln!("benchmark skipped: {e} (start PostgreSQL or set KAITEN_TEST_DATABASE_URL)");
            if std::env::var_os("CI").is_some() {
                std::process::exit(1);
            }
            return;
        }
    };
    store.migrate().await.expect("migrate");
    for batch in [
        Batch::Spaces(vec![space(1)]),
        Batch::Boards(vec![board(10, 1)]),
        Batch::Columns(vec![column(1001, 10, None)]),
        Batch::Lanes(vec![lane(1050, 10)]),
    ] {
        store.apply_page(&Page { batch, sweep: None, state: None, synced_at: fixtures::epoch() }).await.unwrap();
    }

    println!(
        "kaiten-store-postgres upsert benchmark: {total} cards in pages of {PAGE}, statement cache {cache}, foreign keys \
         {foreign_keys}, schema {schema}"
    );
    let built = Instant::now();
    let batches = pages(total);
    println!("(built {} pages in {:.2} s, not counted)", batches.len(), built.elapsed().as_secs_f64());
    let (took, outcome) = pass(&store, &batches, None, 1).await;
    assert_eq!(outcome.inserted, total as u64);
    let first = report("first insert", total, took, outcome);
    let (took, outcome) = pass(&store, &batches, None, 2).await;
    assert_eq!(outcome.unchanged, total as u64);
    let unchanged = report("re-upsert, unchanged", total, took, outcome);
    let (took, outcome) = pass(&store, &batches, Some(7), 3).await;
    assert_eq!(outcome.unchanged, total as u64);
    let swept = report("re-upsert, unchanged, with sweep", total, took, outcome);
    assert!(store.unseen(EntityKind::Cards, 7, &kaiten_sync::Scope::All).await.unwrap().is_empty());
    let counts = store.counts().await.unwrap();
    let cards = counts.iter().find(|c| c.table == "cards").unwrap();
    assert_eq!(cards.live, total);

    store.close().await;
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("kept schema {schema}");
        return;
    }
    let mut conn = PgConnection::connect(&url).await.expect("connect to drop the schema");
    conn.execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str()).await.expect("drop the benchmark schema");
    conn.close().await.ok();
    let worst = first.min(unchanged).min(swept);
    println!("slowest pass: {worst:.0} rows/s (target {TARGET:.0})");
}
