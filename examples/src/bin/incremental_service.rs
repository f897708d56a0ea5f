//! Incremental sync on an interval inside a tokio service, stopping cleanly on Ctrl-C:
//! `cargo run -p kaiten-examples --bin incremental_service` (`SYNC_EVERY_SECS` sets the interval,
//! `SYNC_ROUNDS` stops after that many rounds; real Kaiten through `KAITEN_API_URL` and
//! `KAITEN_API_TOKEN`, a simulated one otherwise).

use std::time::Duration;

use kaiten_sync::SyncEngine;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let every = Duration::from_secs(std::env::var("SYNC_EVERY_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60));
    let rounds: Option<u32> = std::env::var("SYNC_ROUNDS").ok().and_then(|s| s.parse().ok());
    let (client, sim) = kaiten_examples::kaiten().await?;
    let mirror = kaiten_examples::mirror().await?;
    let store = mirror.store.clone();
    let engine = SyncEngine::new(client, store);

    // The first run lists everything; later runs fetch only what changed.
    let report = engine.sync_all().await?;
    println!("initial full sync: {} requests", report.run.api_requests);
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut round = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if let Some(sim) = &sim {
            // Something to find: the simulated company changes between rounds.
            let board = sim.board_ids()[0];
            sim.create_card(board, &format!("Created in round {round}"));
        }
        match engine.sync_incremental().await {
            Ok(report) => {
                let cards = report.stats(kaiten_sync::EntityKind::Cards);
                println!(
                    "incremental: {} new, {} changed cards, {} requests",
                    cards.inserted, cards.updated, report.run.api_requests
                );
            }
            // A failed run is in sync_logs; the next tick tries again (and resumes where it stopped).
            Err(e) if e.is_retryable() => {
                eprintln!("sync failed, retrying next round: {}", kaiten_sync::error::Chain(&e))
            }
            Err(e) => return Err(e.into()),
        }
        round += 1;
        if rounds.is_some_and(|r| round >= r) {
            break;
        }
    }
    Ok(())
}
