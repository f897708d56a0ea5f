//! API-bound runs: a simulated Kaiten with its documented rate limit (5 requests/s) and a fixed
//! latency, synced by a client paced at the same rate. The floor of a run is its requests ÷ the rate;
//! the figure printed is how far above that floor the run's wall time is, and how many 429s it provoked
//! (the goal: ratio ≤ 1.05, no 429).
//!
//! `BENCH_RATE_LIMITED=1` runs it after the other benchmarks with 1,000 cards and 50 ms of latency
//! (quick enough for CI); `BENCH_RATE_LIMITED=full` runs 1,000 and 10,000 cards at 50 and 300 ms.
//! `BENCH_RL_CARDS` and `BENCH_RL_LATENCIES_MS` (comma-separated) override the matrix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kaiten_client::KaitenClient;
use kaiten_sim::{SimConfig, Simulator};
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::{Store, SyncEngine, SyncReport};

/// Kaiten's documented rate limit, the one both the simulator and the client use here.
const RATE: f64 = 5.0;

/// The cards and latencies to run, from the environment; empty when the mode is off.
pub fn matrix() -> Vec<(usize, Duration)> {
    let mode = std::env::var("BENCH_RATE_LIMITED").unwrap_or_default();
    if mode.is_empty() || mode == "0" {
        return Vec::new();
    }
    let full = mode == "full";
    let list = |name: &str, default: &[u64]| -> Vec<u64> {
        std::env::var(name)
            .ok()
            .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
            .unwrap_or_else(|| default.to_vec())
    };
    let cards = list("BENCH_RL_CARDS", if full { &[1_000, 10_000] } else { &[1_000] });
    let latencies = list("BENCH_RL_LATENCIES_MS", if full { &[50, 300] } else { &[50] });
    let mut runs = Vec::new();
    for c in &cards {
        for l in &latencies {
            runs.push((*c as usize, Duration::from_millis(*l)));
        }
    }
    runs
}

fn line(what: &str, cards: usize, latency: Duration, report: &SyncReport, wall: f64, limited: u64) {
    let requests = report.run.api_requests;
    let floor = requests as f64 / RATE;
    println!(
        "rate-limited {what:<11} {cards:>6} cards, {:>3} ms latency: {requests:>4} requests, {wall:>6.2} s wall, \
         floor {floor:>6.2} s, ratio {:.3}, 429s provoked {limited}",
        latency.as_millis(),
        wall / floor.max(f64::MIN_POSITIVE)
    );
}

/// One full and one incremental sync (after 1% of the cards changed) at [`RATE`] with `latency`.
pub async fn bench(cards: usize, latency: Duration) -> Result<()> {
    let mut config = SimConfig::bench(cards);
    // At least two spaces, as a company has.
    if config.spaces < 2 {
        config.spaces = 2;
        config.boards_per_space = config.boards_per_space.div_ceil(2).max(1);
    }
    config.rate_limit = Some(RATE);
    config.latency = latency;
    let sim = Simulator::start(config).await?;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("rate-limited.db"))?);
    store.migrate().await?;
    let client = KaitenClient::builder().base_url(sim.base_url()).token(sim.token()).rate_limit(Some(RATE)).build()?;
    let engine = SyncEngine::new(client.clone(), store);

    let limited = client.stats().rate_limited;
    let started = Instant::now();
    let full = engine.sync_all().await.context("rate-limited full sync")?;
    let wall = started.elapsed().as_secs_f64();
    line("full", cards, latency, &full, wall, client.stats().rate_limited - limited);

    for id in sim.card_ids().iter().take((cards / 100).max(1)) {
        sim.update_card(*id, serde_json::json!({"title": format!("rate-limited bench update {id}")}));
    }
    let limited = client.stats().rate_limited;
    let started = Instant::now();
    let incremental = engine.sync_incremental().await.context("rate-limited incremental sync")?;
    let wall = started.elapsed().as_secs_f64();
    line("incremental", cards, latency, &incremental, wall, client.stats().rate_limited - limited);
    sim.shutdown();
    Ok(())
}
