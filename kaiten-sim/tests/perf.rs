//! Serving cost of `GET /cards` over 100,000 cards (ignored by default; run it in release):
//!
//! ```text
//! cargo test -p kaiten-sim --release --test perf -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use kaiten_sim::{SimConfig, Simulator};

/// Reads every page of one listing (raw bytes, no JSON parsing); returns (rows, pages, bytes, time).
async fn read_all(client: &reqwest::Client, sim: &Simulator, query: &str) -> (usize, usize, usize, Duration) {
    let started = Instant::now();
    let (mut rows, mut pages, mut bytes, mut offset) = (0, 0, 0, 0);
    loop {
        let body = client
            .get(format!("{}/cards?limit=100&offset={offset}&{query}", sim.base_url()))
            .bearer_auth(sim.token())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        // Count rows without parsing: every card object starts with `{"archived":` (keys are sorted).
        let n = body.windows(12).filter(|w| w == b"{\"archived\":").count();
        rows += n;
        pages += 1;
        bytes += body.len();
        if n < 100 {
            return (rows, pages, bytes, started.elapsed());
        }
        offset += n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
async fn serve_100k_cards_in_pages() {
    let started = Instant::now();
    let sim = Simulator::start(SimConfig::bench(100_000)).await.unwrap();
    println!("generated 100,000 cards on {} boards in {:?}", sim.board_ids().len(), started.elapsed());
    let client = reqwest::Client::new();
    let board = sim.board_ids()[17];
    for (label, query) in [
        ("order_by=id (default)", String::new()),
        ("order_by=updated asc", "order_by=updated&order_direction=asc".to_owned()),
        ("condition=1, order_by=updated", "condition=1&order_by=updated".to_owned()),
        ("condition=2 (10%)", "condition=2".to_owned()),
        ("updated_after window", "order_by=updated&updated_after=2025-09-01T00:00:00.000Z".to_owned()),
        ("one board, order_by=updated", format!("board_id={board}&order_by=updated")),
        ("description included", "additional_card_fields=description".to_owned()),
    ] {
        let (rows, pages, bytes, took) = read_all(&client, &sim, &query).await;
        println!(
            "{label:32} {rows:>7} rows {pages:>5} pages {:>6.1} MB in {:>8.1?}: {:>6.3} ms/page, {:>8.0} rows/s",
            bytes as f64 / 1e6,
            took,
            took.as_secs_f64() * 1e3 / pages as f64,
            rows as f64 / took.as_secs_f64()
        );
    }

    // Mutations re-index one card: they must stay cheap too.
    let ids = sim.card_ids();
    let started = Instant::now();
    for (i, id) in ids.iter().step_by(50).take(2_000).enumerate() {
        sim.update_card(*id, serde_json::json!({ "title": format!("renamed {i}") }));
    }
    let took = started.elapsed();
    println!("2,000 update_card calls in {took:.1?}: {:.3} ms each", took.as_secs_f64() * 1e3 / 2_000.0);
    let (rows, pages, _, took) =
        read_all(&client, &sim, "order_by=updated&updated_after=2025-12-31T23:59:59.999Z").await;
    println!("changed since the epoch: {rows} rows, {pages} pages in {took:.1?}");
    assert_eq!(rows, 2_000);
}
