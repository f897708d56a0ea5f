//! Shared setup of the example programs: a Kaiten client from the environment, or a simulated
//! Kaiten when `KAITEN_API_URL` is not set, and a SQLite store.

use std::sync::Arc;

use kaiten_client::KaitenClient;
use kaiten_sim::{SimConfig, Simulator};
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::Store;

/// A client for the Kaiten named by `KAITEN_API_URL` / `KAITEN_API_TOKEN`, or, when
/// `KAITEN_API_URL` is not set, for a simulated Kaiten started here (returned too, so it lives as
/// long as the program needs it).
pub async fn kaiten() -> anyhow::Result<(KaitenClient, Option<Simulator>)> {
    if std::env::var("KAITEN_API_URL").is_ok() {
        return Ok((KaitenClient::from_env()?, None));
    }
    let sim = Simulator::start(SimConfig::small()).await?;
    println!("KAITEN_API_URL is not set: using a simulated Kaiten at {}", sim.base_url());
    let client = KaitenClient::builder().base_url(sim.base_url()).token(sim.token()).rate_limit(None).build()?;
    Ok((client, Some(sim)))
}

/// A migrated SQLite store at `EXAMPLE_DATABASE` (default `kaiten-example.db`).
pub async fn store() -> anyhow::Result<Arc<dyn Store>> {
    let path = std::env::var("EXAMPLE_DATABASE").unwrap_or_else(|_| "kaiten-example.db".to_owned());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path)?);
    store.migrate().await?;
    println!("mirror: {path}");
    Ok(store)
}
