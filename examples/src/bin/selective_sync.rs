//! Selective sync of chosen kinds and boards: `cargo run -p kaiten-examples --bin selective_sync`
//! (`BOARD_IDS=1,2` picks boards; real Kaiten through `KAITEN_API_URL` and `KAITEN_API_TOKEN`, a
//! simulated one otherwise, where the first board is used).

use kaiten_client::BoardId;
use kaiten_sync::{EntityKind, Mode, Selection, SyncEngine};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (client, sim) = kaiten_examples::kaiten().await?;
    let mirror = kaiten_examples::mirror().await?;
    let store = mirror.store.clone();
    let engine = SyncEngine::new(client, store.clone());

    // Reference data only: users and tags.
    let report = engine.sync_specific(&[EntityKind::Users, EntityKind::Tags], true).await?;
    println!("users and tags: {} requests", report.run.api_requests);

    // One or more boards: the board, its columns and lanes, and its cards.
    // `BoardId` parses from a string like an integer (`FromStr`); the simulator speaks bare integers.
    let boards: Vec<BoardId> = match std::env::var("BOARD_IDS") {
        Ok(list) => list.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?,
        Err(_) => sim.as_ref().map(|s| vec![BoardId(s.board_ids()[0])]).unwrap_or_default(),
    };
    anyhow::ensure!(!boards.is_empty(), "set BOARD_IDS to the boards to sync, e.g. BOARD_IDS=12,34");
    let selection = Selection::kinds(&[EntityKind::Boards, EntityKind::Columns, EntityKind::Lanes, EntityKind::Cards])
        .in_boards(&boards);
    let report = engine.sync_selection(&selection, Mode::Full).await?;
    let board_list = boards.iter().map(BoardId::to_string).collect::<Vec<_>>().join(", ");
    println!(
        "boards [{board_list}]: {} cards fetched, {} requests",
        report.stats(EntityKind::Cards).fetched,
        report.run.api_requests
    );
    Ok(())
}
