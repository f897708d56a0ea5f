//! End-to-end sync benchmark: a simulated Kaiten of `BENCH_CARDS` cards (default 100,000; no rate
//! limit, no latency) fully synced into SQLite and Postgres, then an incremental run with nothing
//! changed, one after 100 card changes, and a second full sync of the unchanged company. Prints wall
//! time, cards/s, API requests and memory growth.
//!
//! Then webhook acknowledgement latency with the inbox on each store: 500 deliveries/s from 16
//! connections for `BENCH_WEBHOOK_SECONDS` (default 10; 2 in a smoke run), p50/p99 printed.
//!
//! For the full sync it also prints the sync's CPU time per card (the simulator runs on a runtime of
//! its own, whose threads' CPU time is subtracted), the process's peak RSS and, into SQLite, the bytes
//! written to storage (`/proc/self/io`) against the database's final size.
//!
//! `cargo run --release -p kaiten-bench` (`BENCH_CARDS=2000` for a smoke run; `BENCH_PG_URL` names
//! the Postgres server, default `postgres://postgres@127.0.0.1:5432/test`; `BENCH_SKIP_PG=1` skips it).
//! `BENCH_CONCURRENCY` sets [`kaiten_sync::SyncOptions::concurrency`] (default 4).
//! `BENCH_RATE_LIMITED=1` (or `=full`) first runs the rate-limited benchmark of [`rate_limited`]
//! (`BENCH_RATE_LIMITED_ONLY=1`: only that).

mod rate_limited;
mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use kaiten_client::KaitenClient;
use kaiten_sim::{SimConfig, Simulator};
use kaiten_store_postgres::{PgStore, PgStoreOptions};
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::{EntityKind, Store, SyncEngine};

/// CPU time (user + system) of this whole process so far, in seconds (`/proc/self/stat`, clock ticks of
/// 10 ms).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces): utime is the
    // 14th field of the line, stime the 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU time of the simulator's threads so far, in seconds (their `/proc/self/task/TID/schedstat`), so
/// that the sync's own CPU time is the process's minus this.
fn sim_cpu_secs() -> f64 {
    let tids = SIM_THREADS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    tids.iter()
        .filter_map(|tid| std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()))
        .sum::<u64>() as f64
        / 1e9
}

/// Thread ids of the simulator's runtime (recorded as its threads start).
static SIM_THREADS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Bytes this process caused to be written to storage so far (`write_bytes` of `/proc/self/io`).
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Size of a file in bytes (0 when it does not exist).
fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Starts the simulator on a runtime of its own, so that its CPU time can be told apart from the
/// sync's. The runtime lives as long as the process.
async fn start_sim(config: SimConfig) -> Result<Simulator> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kaiten-sim")
        .on_thread_start(|| {
            if let Ok(link) = std::fs::read_link("/proc/thread-self") {
                if let Some(tid) = link.file_name().and_then(|t| t.to_str()) {
                    SIM_THREADS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(tid.to_owned());
                }
            }
        })
        .enable_all()
        .build()?;
    let sim = runtime.spawn(Simulator::start(config)).await??;
    // Never dropped: a runtime may not be dropped inside another one, and the simulator runs until exit.
    std::mem::forget(runtime);
    Ok(sim)
}

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

/// The SQLite database file of a benchmark (its size is printed next to the bytes written).
struct DbFile(Option<std::path::PathBuf>);

async fn bench_store(name: &str, sim: &Simulator, store: Arc<dyn Store>, db: DbFile) -> Result<()> {
    store.migrate().await?;
    let client = KaitenClient::builder().base_url(sim.base_url()).token(sim.token()).rate_limit(None).build()?;
    let mut options = kaiten_sync::SyncOptions::default();
    if let Some(concurrency) = std::env::var("BENCH_CONCURRENCY").ok().and_then(|v| v.parse().ok()) {
        options = options.with_concurrency(concurrency);
    }
    let engine = SyncEngine::new(client, store.clone()).with_options(options);
    let (rss_before, _) = memory_kib();
    let (cpu_before, sim_cpu_before, written_before) = (process_cpu_secs(), sim_cpu_secs(), written_bytes());
    let started = Instant::now();
    let full = engine.sync_all().await.context("full sync")?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = (process_cpu_secs() - cpu_before) - (sim_cpu_secs() - sim_cpu_before);
    let written = written_bytes().saturating_sub(written_before);
    let (_, peak) = memory_kib();
    let cards = full.stats(EntityKind::Cards).inserted;
    println!(
        "{name:>8} full sync:        {cards} cards in {secs:.2} s = {:.0} cards/s, {} requests, peak RSS +{} MiB over the start",
        cards as f64 / secs,
        full.run.api_requests,
        peak.saturating_sub(rss_before) / 1024
    );
    println!(
        "{name:>8} full sync CPU:    {:.1} µs per card (sync's threads: {cpu:.2} s, the simulator's excluded), peak RSS of the process {} MiB",
        cpu * 1e6 / cards.max(1) as f64,
        peak / 1024
    );
    if let DbFile(Some(path)) = &db {
        let wal = path.with_extension("db-wal");
        let (size, wal_size) = (file_size(path), file_size(&wal));
        println!(
            "{name:>8} full sync writes: {:.1} MiB written to storage, database {:.1} MiB (+ WAL {:.1} MiB), {:.2}x the database",
            written as f64 / 1048576.0,
            size as f64 / 1048576.0,
            wal_size as f64 / 1048576.0,
            written as f64 / size.max(1) as f64
        );
    }
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
    // A full sync over an unchanged mirror: every row is listed again and marked seen by the sweep.
    let written_before = written_bytes();
    let (cpu_before, sim_cpu_before) = (process_cpu_secs(), sim_cpu_secs());
    let started = Instant::now();
    let again = engine.sync_all().await.context("second full sync")?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = (process_cpu_secs() - cpu_before) - (sim_cpu_secs() - sim_cpu_before);
    let written = match &db {
        DbFile(Some(_)) => {
            format!(", {:.1} MiB written to storage", written_bytes().saturating_sub(written_before) as f64 / 1048576.0)
        }
        DbFile(None) => String::new(),
    };
    println!(
        "{name:>8} full re-sync, nothing changed: {secs:.2} s ({:.1} µs of the sync's CPU per card), {} requests, \
         {} rows written{written}",
        cpu * 1e6 / cards.max(1) as f64,
        again.run.api_requests,
        again.run.total(|s| s.inserted + s.updated + s.deleted)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    // `RUST_LOG=kaiten_client=debug` shows every request with its timing.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .init();
    }
    for (cards, latency) in rate_limited::matrix() {
        rate_limited::bench(cards, latency).await?;
    }
    if std::env::var("BENCH_RATE_LIMITED_ONLY").is_ok() {
        return Ok(());
    }
    let cards: usize = std::env::var("BENCH_CARDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let started = Instant::now();
    let sim = start_sim(SimConfig::bench(cards)).await?;
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
    bench_store("sqlite", &sim, sqlite.clone(), DbFile(Some(dir.path().join("bench.db")))).await?;
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
    let mut result = bench_store("postgres", &sim, pg.clone(), DbFile(None)).await;
    if result.is_ok() {
        result = webhooks::bench_webhooks("postgres", &sim, pg.clone(), &load).await;
    }
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(pg.pool()).await?;
    result
}
