//! Webhook inbox push latency of the SQLite store: `cargo bench -p kaiten-store-sqlite --bench inbox`.
//!
//! The benchmark of [`kaiten_sync_testkit::inbox_load`] (16 tasks pushing 500 deliveries/s in
//! total while a worker drains the inbox, alone and during a sync; `BENCH_SECONDS`, default 5; 1
//! in smoke mode: `BENCH_SMOKE=1`, or `BENCH_CARDS` below 10,000 as CI sets for every benchmark),
//! on a fresh file-backed store. Target: p99 under 20 ms.

use std::sync::Arc;

use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::Store;
use kaiten_sync_testkit::inbox_load::{self, RATE, TASKS};

fn main() {
    let seconds = inbox_load::seconds();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bench.db");
        let store = Arc::new(SqliteStore::open(&path).expect("open"));
        store.migrate().await.expect("migrate");
        println!(
            "SQLite webhook inbox benchmark: {RATE} deliveries/s from {TASKS} tasks for {seconds} s, a worker \
             draining every 50 ms, file {}",
            path.display()
        );
        inbox_load::run(store, seconds).await.print();
    });
}
