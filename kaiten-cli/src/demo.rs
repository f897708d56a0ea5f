//! `kaiten-sync demo`: a simulated Kaiten synced into SQLite, changed, and synced again.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use kaiten_sim::{SimConfig, Simulator};
use kaiten_sync::{EntityKind, Store, SyncEngine};
use serde_json::json;

use crate::config::{self, DbArgs, DbLock};
use crate::output;

/// Options of the demo.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the mirror. The default file is recreated on every demo run.
    #[arg(long, default_value = DEFAULT_DB)]
    database_url: String,
    /// Quick mode: no rate limit or latency, fewer cards (used by CI).
    #[arg(long)]
    quick: bool,
    /// Number of cards in the simulated company.
    #[arg(long)]
    cards: Option<usize>,
}

const DEFAULT_DB: &str = "sqlite://kaiten-demo.db";

fn remove_default_db() -> Result<()> {
    for file in ["kaiten-demo.db", "kaiten-demo.db-wal", "kaiten-demo.db-shm"] {
        match std::fs::remove_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove the previous demo database {file}")),
        }
    }
    Ok(())
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let mut sim_config = SimConfig::demo();
    if args.quick {
        sim_config.rate_limit = None;
        sim_config.latency = Duration::ZERO;
        sim_config.cards = 500;
    }
    if let Some(cards) = args.cards {
        sim_config.cards = cards;
    }
    let rate = sim_config.rate_limit;
    let sim = Simulator::start(sim_config).await.context("cannot start the simulated Kaiten")?;
    println!(
        "Simulated Kaiten at {}: {} spaces, {} boards, {} cards ({}).",
        sim.base_url(),
        sim.space_ids().len(),
        sim.board_ids().len(),
        sim.card_ids().len(),
        match rate {
            Some(r) => format!("rate limit {r} requests/s, like Kaiten's documented limit"),
            None => "no rate limit".to_owned(),
        }
    );
    if args.database_url == DEFAULT_DB {
        remove_default_db()?;
    }
    let db = DbArgs { database_url: args.database_url.clone(), db_schema: "kaiten".into(), db_lock: DbLock::Advisory };
    let store = crate::stores::open(&db).await?;
    store.migrate().await.context("migration failed")?;
    let client = config::client(&sim.base_url(), &sim.token(), rate.unwrap_or(0.0), Duration::from_secs(30))?;

    println!("\n1. Full sync into {}", db.describe());
    let progress = output::Progress::new();
    let engine = SyncEngine::new(client, store.clone()).on_progress({
        let progress = progress.clone();
        move |event| progress.handle(event)
    });
    let full = engine.sync_all().await;
    progress.finish();
    let full = full?;
    output::print_report(&full);
    check_mirror(&sim, &*store).await?;

    println!("\n2. Changing the simulated company");
    let boards = sim.board_ids();
    let ids = sim.card_ids();
    let mut changes = Vec::new();
    for i in 0..3 {
        let card = sim.create_card(boards[i % boards.len()], &format!("Demo card {}", i + 1));
        changes.push(format!("created card {} on board {}", card["id"], card["board_id"]));
    }
    for id in &ids[0..2] {
        sim.update_card(*id, json!({"title": format!("Renamed card {id}"), "asap": true}));
        changes.push(format!("renamed card {id}"));
    }
    for id in &ids[2..4] {
        let target_board = boards[boards.len() - 1];
        let column = *sim.column_ids(target_board).last().context("a board has columns")?;
        sim.move_card(*id, column, None);
        changes.push(format!("moved card {id} to column {column} of board {target_board}"));
    }
    sim.archive_card(ids[4]);
    changes.push(format!("archived card {}", ids[4]));
    sim.delete_card(ids[5]);
    changes.push(format!("deleted card {}", ids[5]));
    for change in &changes {
        println!("   - {change}");
    }

    println!("\n3. Incremental sync");
    let progress = output::Progress::new();
    let engine = engine.on_progress({
        let progress = progress.clone();
        move |event| progress.handle(event)
    });
    let incremental = engine.sync_incremental().await;
    progress.finish();
    let incremental = incremental?;
    output::print_report(&incremental);
    let cards = incremental.stats(EntityKind::Cards);
    println!(
        "   found {} new and {} changed cards (renamed, moved, archived) with {} requests instead of {}",
        cards.inserted, cards.updated, incremental.run.api_requests, full.run.api_requests
    );
    if cards.inserted != 3 || cards.updated != 5 {
        bail!("the incremental sync should find 3 new and 5 changed cards, found {cards:?}");
    }
    // Kaiten deletes without a trace in its listings: the deleted card is still live in the mirror.
    if store.get(EntityKind::Cards, ids[5]).await?.is_none_or(|row| row.deleted_at.is_some()) {
        bail!("an incremental sync cannot see the deletion of card {}, yet the mirror changed it", ids[5]);
    }
    println!(
        "   card {} was deleted in Kaiten, which lists deleted cards nowhere: an incremental sync cannot see it",
        ids[5]
    );

    println!("\n4. Full sync of cards: reconciles deletions");
    let progress = output::Progress::new();
    let engine = engine.on_progress({
        let progress = progress.clone();
        move |event| progress.handle(event)
    });
    let reconcile = engine.sync_specific(&[EntityKind::Cards], true).await;
    progress.finish();
    let reconcile = reconcile?;
    output::print_report(&reconcile);
    let deleted = reconcile.stats(EntityKind::Cards).deleted;
    println!("   marked {deleted} card deleted (kept, with deleted_at set)");
    if deleted != 1 {
        bail!("the full sync of cards should mark 1 card deleted, marked {deleted}");
    }
    check_mirror(&sim, &*store).await?;

    println!("\n5. Status");
    output::print_status(&*store, false, 5).await?;
    let path = args.database_url.trim_start_matches("sqlite://");
    println!("\nDemo finished in {:.1?}. Query the mirror:", started.elapsed());
    println!("  sqlite3 {path} \"SELECT id, title, synced_at FROM cards ORDER BY synced_at DESC LIMIT 10\"");
    Ok(())
}

/// Checks that the mirror holds every card the simulator serves.
async fn check_mirror(sim: &Simulator, store: &dyn Store) -> Result<()> {
    let mut expected = sim.card_ids();
    expected.sort_unstable();
    let stored = store.ids(EntityKind::Cards, false).await?;
    if stored != expected {
        bail!("the mirror has {} live cards, the simulated Kaiten {}", stored.len(), expected.len());
    }
    Ok(())
}
