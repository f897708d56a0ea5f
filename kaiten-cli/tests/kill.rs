//! `kill -9` of `kaiten-sync sync full` at random points (issue 12): ten processes killed each at a
//! random point and a random moment after it (seeded: `KAITEN_KILL_SEED`, printed), then one left
//! to finish. Three are killed at a random request early in their run (while the small kinds and
//! structure are listed, and the first card pages are fetched ahead); seven once they have written
//! a random number of cards (the card listing under way). The mirror
//! then equals the simulator, no run is left `running` (each killed one is marked interrupted by
//! the next process), and the card listing was resumed rather than restarted: the last run costs
//! fewer requests than a run from scratch, and all of them together list fewer card pages than
//! two runs from scratch would. On SQLite, and on Postgres (a throwaway schema, dropped at the end).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{command, pg_store, send_signal, skip_postgres, test_database_url, DropSchemas};
use kaiten_sim::{SimConfig, Simulator};
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::{RunStatus, Store};
use kaiten_sync_testkit::engine::{assert_mirror_is_the_simulator, assert_no_run_running};

const KILLS: usize = 10;

fn sync_full(dir: &Path, env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = command(dir, env, &["sync", "full"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

/// A small deterministic generator (SplitMix64): the delays are reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..high` milliseconds.
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

fn card_listings(sim: &Simulator) -> usize {
    sim.request_log().iter().filter(|r| r.contains("/cards?")).count()
}

/// The database the processes write to: their environment, and a store on it for the checks.
struct Target {
    env: Vec<(&'static str, String)>,
    fresh_env: Vec<(&'static str, String)>,
    store: Arc<dyn Store>,
}

/// Ten processes killed at random points, one left to finish, a run from scratch to compare with.
async fn killed_ten_times_then_resumed(make: impl AsyncFnOnce(&Path) -> Target) {
    let seed = std::env::var("KAITEN_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_260_312_u64);
    eprintln!("kill -9 points seeded with KAITEN_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    // 20,000 cards: about 200 pages, more than all ten killed runs can write (each is killed once
    // it wrote at most 500 cards, plus what its commit under way and the next one hold, at most
    // 20 pages), so every process is killed mid-run; 5 ms a request so that the kill lands anywhere.
    let sim = Simulator::start(SimConfig { cards: 20_000, latency: Duration::from_millis(5), ..SimConfig::small() })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = make(dir.path()).await;
    let url = sim.base_url();
    let api = [
        ("KAITEN_API_URL", url.clone()),
        ("KAITEN_API_TOKEN", "sim-token".to_owned()),
        ("KAITEN_RATE_LIMIT", "0".to_owned()),
    ];
    let env: Vec<(&str, String)> = api.iter().cloned().chain(target.env.iter().cloned()).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let mut killed = 0;
    for trial in 1..=KILLS {
        // A random point, and a random moment after it: early trials once the simulator has
        // received `after` requests of this process (the small kinds and structure take 17, and
        // card pages are fetched meanwhile); later ones once the store holds `after` more cards.
        let by_cards = trial > 3;
        let after = if by_cards { 100 + rng.next() % 401 } else { 8 + rng.next() % 24 };
        let extra = rng.millis(0, 15);
        let progress = async || {
            if by_cards {
                target.store.ids(kaiten_sync::EntityKind::Cards, true).await.map_or(0, |ids| ids.len() as u64)
            } else {
                sim.request_count() as u64
            }
        };
        let base = progress().await;
        let mut child = sync_full(dir.path(), &env).spawn().expect("the binary starts");
        while progress().await < base + after {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    stderr.read_to_string(&mut err).await.unwrap();
                }
                panic!("trial {trial}: the run ended by itself before its request {after} ({status}): {err}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(extra).await;
        send_signal(&child, "KILL");
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "trial {trial}: killed");
        killed += 1;
        let unit = if by_cards { "cards written" } else { "requests" };
        eprintln!("trial {trial}: killed {extra:?} after {after} {unit}");
    }
    let listings_before = card_listings(&sim);

    // The last process is left alone: it takes over the dead process's lock at once, marks the
    // killed runs interrupted, and resumes the listing.
    sim.reset_request_log();
    let out = sync_full(dir.path(), &env).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resumed_requests = sim.request_log().len();
    let resumed_listings = card_listings(&sim);

    let store = &*target.store;
    sim.set_latency(Duration::ZERO);
    assert_mirror_is_the_simulator(&sim, store, &[], &[]).await;
    assert_no_run_running(store).await;
    let runs = store.recent_runs(100).await.unwrap();
    // (a process killed before it recorded its run leaves none)
    assert!((2..=killed + 1).contains(&runs.len()), "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert!(runs[1..].iter().all(|r| r.status == RunStatus::Interrupted), "{runs:?}");

    // A run from scratch, into a fresh database, for comparison.
    let fresh: Vec<(&str, String)> = api.iter().cloned().chain(target.fresh_env.iter().cloned()).collect();
    let fresh: Vec<(&str, &str)> = fresh.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sim.reset_request_log();
    let out = sync_full(dir.path(), &fresh).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scratch_requests = sim.request_log().len();
    let scratch_listings = card_listings(&sim);
    eprintln!(
        "after {killed} kills: the last run sent {resumed_requests} requests ({resumed_listings} card pages), a run \
         from scratch {scratch_requests} ({scratch_listings}); all killed runs listed {listings_before} card pages"
    );
    assert!(resumed_requests < scratch_requests, "the last run resumed: {resumed_requests} < {scratch_requests}");
    assert!(
        listings_before + resumed_listings < 2 * scratch_listings,
        "the killed runs resumed each other: {} card pages in all, {scratch_listings} from scratch",
        listings_before + resumed_listings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_killed_at_ten_random_points_resumes_and_ends_exact_on_sqlite() {
    killed_ten_times_then_resumed(async |dir: &Path| {
        let db = dir.join("kaiten.db");
        let fresh = dir.join("fresh.db");
        let store = SqliteStore::open(&db).unwrap();
        Target {
            env: vec![("DATABASE_URL", format!("sqlite://{}", db.display()))],
            fresh_env: vec![("DATABASE_URL", format!("sqlite://{}", fresh.display()))],
            store: Arc::new(store),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_killed_at_ten_random_points_resumes_and_ends_exact_on_postgres() {
    if skip_postgres() {
        return;
    }
    let url = test_database_url();
    let name = format!("kaiten_test_kill_{}", std::process::id());
    let (schema, fresh) = (name.clone(), format!("{name}_fresh"));
    let _drop = DropSchemas(url.clone(), vec![schema.clone(), fresh.clone()]);
    killed_ten_times_then_resumed(async |_: &Path| {
        let store = pg_store(&url, &schema).await;
        store.migrate().await.unwrap();
        Target {
            env: vec![("DATABASE_URL", url.clone()), ("KAITEN_DB_SCHEMA", schema.clone())],
            fresh_env: vec![("DATABASE_URL", url.clone()), ("KAITEN_DB_SCHEMA", fresh.clone())],
            store: Arc::new(store),
        }
    })
    .await;
}
