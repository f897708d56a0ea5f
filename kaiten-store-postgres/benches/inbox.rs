//! Webhook inbox push latency of the Postgres store, on a schema of its own that is dropped at the
//! end.
//!
//! ```text
//! cargo bench -p kaiten-store-postgres --bench inbox
//! BENCH_SMOKE=1 cargo bench -p kaiten-store-postgres --bench inbox    # one second per pass (CI)
//! ```
//!
//! The benchmark of [`kaiten_sync_testkit::inbox_load`] (16 tasks pushing 500 deliveries/s in
//! total while a worker drains the inbox, alone and during a sync; `BENCH_SECONDS`, default 5; 1
//! in smoke mode: `BENCH_SMOKE=1`, or `BENCH_CARDS` below 10,000 as CI sets for every benchmark),
//! through one store with the default pool (5 connections). Each push commits synchronously
//! (durable when acknowledged). Target: p99 under 20 ms.
//!
//! The server comes from `KAITEN_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); `BENCH_STATEMENT_CACHE=100` measures with named
//! prepared statements instead of the pooler-safe default (0); `BENCH_POOL=10` with a larger pool.

use std::sync::Arc;

mod common;

use kaiten_store_postgres::PgStoreOptions;
use kaiten_sync::Store;
use kaiten_sync_testkit::inbox_load::{self, env_number, RATE, TASKS};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = common::url();
    let seconds = inbox_load::seconds();
    let cache = env_number("BENCH_STATEMENT_CACHE").unwrap_or(0).max(0) as usize;
    let pool = env_number("BENCH_POOL").unwrap_or(5).max(1) as u32;
    let schema = format!("kaiten_bench_inbox_{}", std::process::id());
    let options = PgStoreOptions {
        schema: schema.clone(),
        statement_cache_capacity: cache,
        max_connections: pool,
        ..PgStoreOptions::new(&url)
    };
    let Some(store) = common::connect(options).await else { return };
    store.migrate().await.expect("migrate");
    println!(
        "kaiten-store-postgres webhook inbox benchmark: {RATE} deliveries/s from {TASKS} tasks for {seconds} s, a \
         worker draining every 50 ms, pool of {pool}, statement cache {cache}, schema {schema}"
    );

    let figures = inbox_load::run(Arc::new(store.clone()), seconds).await;

    store.close().await;
    common::drop_schema(&url, &schema).await;
    figures.print();
}
