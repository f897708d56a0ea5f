//! End-to-end sync benchmark: a simulated Kaiten of `BENCH_CARDS` cards (default 100,000; no rate
//! limit, no latency) fully synced into SQLite and Postgres, then an incremental run with nothing
//! changed and one after 100 card changes. Prints wall time, cards/s, API requests and memory growth.
//!
//! Then webhook acknowledgement latency with the inbox on each store: 500 deliveries/s from 16
//! connections for `BENCH_WEBHOOK_SECONDS` (default 10; 2 in a smoke run), p50/p99 printed.
//!
//! `cargo run --release -p kaiten-bench` (`BENCH_CARDS=2000` for a smoke run; `BENCH_PG_URL` names
//! the Postgres server, default `postgres://postgres@127.0.0.1:5432/test`; `BENCH_SKIP_PG=1` skips it).

mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use kaiten_client::KaitenClient;
use kaiten_sim::{SimConfig, Simulator};
use kaiten_store_postgres::{PgStore, PgStoreOptions};
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::{EntityKind, Store, SyncEngine};

/// Resident memory of this process in KiB (`VmRSS`), and its peak (`VmHWM`).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn bench_store(name: &str, sim: &Simulator, store: Arc<dyn Store>) -> Result<()> {
    store.migrate().await?;
    let client = KaitenClient::builder().base_url(sim.base_url()).token(sim.token()).rate_limit(None).build()?;
    let engine = SyncEngine::new(client, store.clone());
    let (rss_before, _) = memory_kib();
    let started = Instant::now();
    let full = engine.sync_all().await.context("full sync")?;
    let secs = started.elapsed().as_secs_f64();
    let (_, peak) = memory_kib();
    let cards = full.stats(EntityKind::Cards).inserted;
    println!(
        "{name:>8} full sync:        {cards} cards in {secs:.2} s = {:.0} cards/s, {} requests, peak RSS +{} MiB over the start",
        cards as f64 / secs,
        full.run.api_requests,
        peak.saturating_sub(rss_before) / 1024
    );
    let started = Instant::now();
    let idle = engine.sync_incremental().await.context("incremental sync")?;
    println!(
        "{name:>8} incremental, nothing changed: {:.1} ms, {} requests, {} rows written",
        started.elapsed().as_secs_f64() * 1000.0,
        idle.run.api_requests,
        idle.run.total(|s| s.inserted + s.updated + s.deleted)
    );
    let ids = sim.card_ids();
    for id in ids.iter().take(100) {
        sim.update_card(*id, serde_json::json!({"title": format!("bench update {id}")}));
    }
    let started = Instant::now();
    let changed = engine.sync_incremental().await.context("incremental sync")?;
    println!(
        "{name:>8} incremental, 100 cards changed: {:.1} ms, {} requests, {} cards updated",
        started.elapsed().as_secs_f64() * 1000.0,
        changed.run.api_requests,
        changed.stats(EntityKind::Cards).updated
    );
    anyhow::ensure!(changed.stats(EntityKind::Cards).updated == 100, "the incremental run found every change");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cards: usize = std::env::var("BENCH_CARDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let started = Instant::now();
    let sim = Simulator::start(SimConfig::bench(cards)).await?;
    println!(
        "simulated Kaiten: {} cards on {} boards, generated in {:.1} s",
        sim.card_ids().len(),
        sim.board_ids().len(),
        started.elapsed().as_secs_f64()
    );

    let seconds = std::env::var("BENCH_WEBHOOK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cards < 10_000 { 2.0 } else { 10.0 });
    let load = webhooks::Load { rate: 500.0, connections: 16, duration: std::time::Duration::from_secs_f64(seconds) };

    let dir = tempfile::tempdir()?;
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("bench.db"))?);
    bench_store("sqlite", &sim, sqlite.clone()).await?;
    webhooks::bench_webhooks("sqlite", &sim, sqlite, &load).await?;

    if std::env::var("BENCH_SKIP_PG").is_ok() {
        return Ok(());
    }
    let url = std::env::var("BENCH_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("kaiten_bench_{}", std::process::id());
    let mut options = PgStoreOptions::new(url);
    options.schema = schema.clone();
    let pg = Arc::new(
        PgStore::connect_with(options).await.context("Postgres for the benchmark (BENCH_SKIP_PG=1 skips it)")?,
    );
    let mut result = bench_store("postgres", &sim, pg.clone()).await;
    if result.is_ok() {
        result = webhooks::bench_webhooks("postgres", &sim, pg.clone(), &load).await;
    }
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(pg.pool()).await?;
    result
}
