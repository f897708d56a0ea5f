//! Full sync of a whole company into SQLite: `cargo run -p kaiten-examples --bin full_sync`
//! (set `KAITEN_API_URL` and `KAITEN_API_TOKEN` for a real Kaiten; a simulated one is used otherwise).

use kaiten_sync::{EntityKind, ProgressEvent, SyncEngine};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (client, _sim) = kaiten_examples::kaiten().await?;
    let mirror = kaiten_examples::mirror().await?;
    let store = mirror.store.clone();
    let engine = SyncEngine::new(client, store.clone()).on_progress(|event| {
        if let ProgressEvent::EntityDone { kind, stats } = event {
            println!("{kind:>20}: {} fetched, {} new, {} changed", stats.fetched, stats.inserted, stats.updated);
        }
    });
    let report = engine.sync_all().await?;
    println!(
        "run #{} finished in {:.1?} with {} API requests; {} cards stored",
        report.run.id,
        report.duration,
        report.run.api_requests,
        store.ids(EntityKind::Cards, false).await?.len()
    );
    Ok(())
}
