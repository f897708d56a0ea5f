use std::time::{Duration, Instant};
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::conformance::fixtures;
use kaiten_sync::{Batch, Page, Store};

fn main() {
    let total: i64 = std::env::var("BENCH_CARDS").ok().and_then(|v| v.parse().ok()).unwrap_or(30_000);
    let pragmas = std::env::var("PRAGMAS").unwrap_or_default();
    let drop_idx = std::env::var("DROP_IDX").is_ok();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("b.db")).unwrap();
        store.migrate().await.unwrap();
        let p2 = pragmas.clone();
        store.with_connection(move |c| c.execute_batch(&p2)).await.unwrap();
        if drop_idx {
            store.with_connection(|c| c.execute_batch("DROP INDEX cards_column_id; DROP INDEX cards_lane_id; DROP INDEX cards_space_id; DROP INDEX cards_owner_id; DROP INDEX cards_type_id; DROP INDEX cards_updated; DROP INDEX cards_synced_at;")).await.unwrap();
        }
        for (label, upd) in [("insert", 100), ("unchanged", 100), ("changed", 200)] {
            let (mut gen, mut prep, mut apply) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
            let mut first = 1;
            while first <= total {
                let t = Instant::now();
                let batch = Batch::Cards(fixtures::cards(first, 100, 1 + first / 1000, upd));
                gen += t.elapsed();
                let t = Instant::now();
                let rows = batch.rows();
                let n: usize = rows.iter().map(|r| r.raw.to_string().len()).sum();
                std::hint::black_box(n);
                drop(rows);
                prep += t.elapsed();
                let page = Page { batch, sweep: None, state: None, synced_at: fixtures::epoch() };
                let t = Instant::now();
                store.apply_page(&page).await.unwrap();
                apply += t.elapsed();
                first += 100;
            }
            println!("{label:10} gen {:?} prep {:?} apply {:?} => {:.0} rows/s", gen, prep, apply, total as f64 / apply.as_secs_f64());
        }
    });
}
