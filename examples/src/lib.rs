//! Shared setup of the example programs: a Kaiten client from the environment, or a simulated
//! Kaiten when `KAITEN_API_URL` is not set, and a SQLite store.

use std::path::PathBuf;
use std::sync::Arc;

use kaiten_client::KaitenClient;
use kaiten_sim::{SimConfig, Simulator};
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::Store;

/// Whether the examples talk to a real Kaiten (`KAITEN_API_URL` is set) rather than a simulated one.
fn real_kaiten() -> bool {
    std::env::var_os("KAITEN_API_URL").is_some()
}

/// A client for the Kaiten named by `KAITEN_API_URL` / `KAITEN_API_TOKEN`, or, when
/// `KAITEN_API_URL` is not set, for a simulated Kaiten started here (returned too, so it lives as
/// long as the program needs it).
pub async fn kaiten() -> anyhow::Result<(KaitenClient, Option<Simulator>)> {
    if real_kaiten() {
        return Ok((KaitenClient::from_env()?, None));
    }
    let sim = Simulator::start(SimConfig::small()).await?;
    println!("KAITEN_API_URL is not set: using a simulated Kaiten at {}", sim.base_url());
    let client = KaitenClient::builder().base_url(sim.base_url()).token(sim.token()).rate_limit(None).build()?;
    Ok((client, Some(sim)))
}

/// The mirror an example writes: a migrated SQLite store and where it lives.
pub struct Mirror {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Its database file.
    pub path: PathBuf,
    /// The temporary directory of a simulated company's mirror, removed when the program ends.
    _temp: Option<tempfile::TempDir>,
}

/// A migrated SQLite mirror at `EXAMPLE_DATABASE`. Without it: `kaiten-example.db` in the current
/// directory for a real Kaiten, and a file in a fresh temporary directory (removed when the
/// program ends) for the simulated one, so that a made-up company never lands in a real mirror
/// or in the source tree.
pub async fn mirror() -> anyhow::Result<Mirror> {
    let (path, temp) = match std::env::var_os("EXAMPLE_DATABASE") {
        Some(path) => (PathBuf::from(path), None),
        None if real_kaiten() => (PathBuf::from("kaiten-example.db"), None),
        None => {
            let dir = tempfile::Builder::new().prefix("kaiten-example-").tempdir()?;
            (dir.path().join("kaiten-example.db"), Some(dir))
        }
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path)?);
    store.migrate().await?;
    println!("mirror: {}", path.display());
    Ok(Mirror { store, path, _temp: temp })
}
