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
//! without foreign keys; `BENCH_KEEP=1` keeps the schema for inspection; `BENCH_STREAMS=4`
//! writes pages concurrently on 4 connections (page i on stream i % 4) instead of one after the
//! other, as the engine does. Target: 30,000 rows/s.

use std::time::{Duration, Instant};

mod common;

use kaiten_store_postgres::{PgStore, PgStoreOptions};
use kaiten_sync::{Batch, EntityKind, Page, PageOutcome, Store};
use kaiten_sync_testkit::fixtures;
use sqlx::Executor;

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

/// How many connections write pages at once (`BENCH_STREAMS`, default 1).
fn streams() -> usize {
    env_number("BENCH_STREAMS", 1).max(1) as usize
}

/// Adds a page's outcome to a pass's.
fn add(sum: &mut PageOutcome, outcome: PageOutcome) {
    sum.inserted += outcome.inserted;
    sum.updated += outcome.updated;
    sum.unchanged += outcome.unchanged;
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
    // BENCH_STREAMS > 1 writes pages concurrently, page i on stream i % streams (one connection
    // each): what a writer could gain by overlapping pages.
    let streams = streams();
    let mut lanes: Vec<Vec<Page>> = (0..streams).map(|_| Vec::new()).collect();
    for (i, page) in pages.drain(..).enumerate() {
        lanes[i % streams].push(page);
    }
    let started = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut sum = PageOutcome::default();
                for page in &lane {
                    add(&mut sum, store.apply_page(page).await.expect("apply_page"));
                }
                sum
            })
        })
        .collect();
    for task in tasks {
        add(&mut sum, task.await.expect("a writer task"));
    }
    (started.elapsed(), sum)
}

/// Prints a pass; `target` marks the passes the 30,000 rows/s target is about.
fn report(label: &str, rows: i64, took: Duration, outcome: PageOutcome, target: bool) -> f64 {
    let rate = rows as f64 / took.as_secs_f64();
    println!(
        "{label:<34} {rows:>7} rows in {:>7.2} s = {rate:>9.0} rows/s  (inserted {}, updated {}, unchanged {}){}",
        took.as_secs_f64(),
        outcome.inserted,
        outcome.updated,
        outcome.unchanged,
        if target && rate < TARGET { "  BELOW TARGET" } else { "" }
    );
    rate
}

/// What the server alone needs to store the same rows: the cards just written are copied, page by
/// page and one (asynchronously committed) transaction per page, into a table with the same indexes and foreign keys (the
/// JSON parsed again from text, as a client's page is), with their tag links. No client, no
/// protocol, no upsert logic: the ceiling any store could reach on this server.
async fn server_floor(store: &PgStore, schema: &str, total: i64, foreign_keys: bool) -> Duration {
    let s = format!("\"{schema}\"");
    let columns: Vec<String> =
        EntityKind::Cards.table().columns.iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>();
    let select: Vec<String> = EntityKind::Cards
        .table()
        .columns
        .iter()
        .map(|c| if c.name == "properties" { "properties::text::jsonb".to_owned() } else { format!("\"{}\"", c.name) })
        .collect();
    let mut setup = format!(
        "CREATE TABLE {s}.floor_source AS SELECT c.*, c.raw::text AS raw_text FROM {s}.cards c; \
         CREATE INDEX ON {s}.floor_source (id); \
         CREATE TABLE {s}.floor_cards (LIKE {s}.cards INCLUDING ALL); \
         CREATE TABLE {s}.floor_card_tags (LIKE {s}.card_tags INCLUDING ALL);"
    );
    if foreign_keys {
        for (column, parent) in [("board_id", "boards"), ("column_id", "columns"), ("lane_id", "lanes")] {
            setup.push_str(&format!(
                "ALTER TABLE {s}.floor_cards ADD FOREIGN KEY ({column}) REFERENCES {s}.{parent} (id) \
                 DEFERRABLE INITIALLY DEFERRED;"
            ));
        }
    }
    let pool = store.pool();
    pool.execute(setup.as_str()).await.expect("set up the floor tables");
    let _ = sqlx::query("CHECKPOINT").execute(pool).await;
    let copy = format!(
        "DO $$ BEGIN FOR i IN 0..{last} LOOP \
           INSERT INTO {s}.floor_cards (id, {columns}, raw, synced_at, deleted_at, seen_sweep, raw_hash) \
             SELECT id, {select}, raw_text::jsonb, synced_at, deleted_at, seen_sweep, raw_hash FROM {s}.floor_source \
             WHERE id > i * {PAGE} AND id <= (i + 1) * {PAGE}; \
           INSERT INTO {s}.floor_card_tags SELECT * FROM {s}.card_tags \
             WHERE card_id > i * {PAGE} AND card_id <= (i + 1) * {PAGE} ON CONFLICT DO NOTHING; \
           COMMIT; \
         END LOOP; END $$",
        last = (total - 1) / PAGE,
        columns = columns.join(", "),
        select = select.join(", "),
    );
    // Commits without waiting for the WAL flush, as the store's pages do by default.
    let mut conn = pool.acquire().await.expect("a connection");
    conn.execute("SET synchronous_commit TO off").await.expect("set synchronous_commit");
    let started = Instant::now();
    conn.execute(copy.as_str()).await.expect("copy the cards inside the server");
    let took = started.elapsed();
    conn.execute("RESET synchronous_commit").await.expect("reset synchronous_commit");
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = common::url();
    let total = env_number("BENCH_CARDS", 100_000).max(1);
    let cache = env_number("BENCH_STATEMENT_CACHE", 0).max(0) as usize;
    let foreign_keys = env_number("BENCH_FOREIGN_KEYS", 1) != 0;
    let schema = format!("kaiten_bench_{}", std::process::id());
    let options = PgStoreOptions {
        schema: schema.clone(),
        statement_cache_capacity: cache,
        foreign_keys,
        ..PgStoreOptions::new(&url)
    };
    let Some(store) = common::connect(options).await else { return };
    store.migrate().await.expect("migrate");
    for page in fixtures::board_10_parent_pages() {
        store.apply_page(&page).await.unwrap();
    }

    println!(
        "kaiten-store-postgres upsert benchmark: {total} cards in pages of {PAGE}, statement cache {cache}, foreign keys \
         {foreign_keys}, {streams} writer(s), schema {schema}",
        streams = streams(),
    );
    let built = Instant::now();
    let batches = pages(total);
    println!("(built {} pages in {:.2} s, not counted)", batches.len(), built.elapsed().as_secs_f64());
    let (took, outcome) = pass(&store, &batches, None, 1).await;
    assert_eq!(outcome.inserted, total as u64);
    let first = report("first insert", total, took, outcome, true);
    let (took, outcome) = pass(&store, &batches, None, 2).await;
    assert_eq!(outcome.unchanged, total as u64);
    let unchanged = report("re-upsert, unchanged", total, took, outcome, true);
    let (took, outcome) = pass(&store, &batches, Some(7), 3).await;
    assert_eq!(outcome.unchanged, total as u64);
    report("re-upsert, unchanged, with sweep", total, took, outcome, false);
    assert!(store.unseen(EntityKind::Cards, 7, &kaiten_sync::Scope::All).await.unwrap().is_empty());
    let counts = store.counts().await.unwrap();
    let cards = counts.iter().find(|c| c.table == "cards").unwrap();
    assert_eq!(cards.live, total);

    let floor = server_floor(&store, &schema, total, foreign_keys).await;
    println!(
        "{:<34} {total:>7} rows in {:>7.2} s = {:>9.0} rows/s  (plain INSERT ... SELECT inside the server, one \
         session, pages of {PAGE}, same indexes{}, tag links included: no client, no protocol)",
        "server floor",
        floor.as_secs_f64(),
        total as f64 / floor.as_secs_f64(),
        if foreign_keys { " and foreign keys" } else { "" },
    );

    store.close().await;
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("kept schema {schema}");
        return;
    }
    common::drop_schema(&url, &schema).await;
    println!("first insert {first:.0} rows/s, unchanged re-upsert {unchanged:.0} rows/s (target {TARGET:.0} each)");
}
