//! `kaiten-sim`: serve a generated Kaiten company on 127.0.0.1 until Ctrl-C.
//!
//! ```text
//! kaiten-sim [--port N] [--cards N] [--seed N] [--rate-limit RPS] [--latency-ms N] [--token T]
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use kaiten_sim::{SimConfig, Simulator};

/// A simulated Kaiten server over a generated company (the demo company by default).
#[derive(Parser, Debug)]
#[command(name = "kaiten-sim", version, about)]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Number of cards (the boards grow with it, about 1,000 cards a board above the demo size).
    #[arg(long)]
    cards: Option<usize>,
    /// Seed of the generated company.
    #[arg(long)]
    seed: Option<u64>,
    /// Requests per second (sliding one-second window); 0 = unlimited. Default: 5.
    #[arg(long)]
    rate_limit: Option<f64>,
    /// Latency added to every response, in milliseconds. Default: 20.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Bearer token to accept.
    #[arg(long, default_value = "sim-token")]
    token: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut config = SimConfig::demo();
    if let Some(cards) = args.cards {
        if cards > config.cards {
            let bench = SimConfig::bench(cards);
            config.spaces = bench.spaces;
            config.boards_per_space = bench.boards_per_space;
        }
        config.cards = cards;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(rate) = args.rate_limit {
        config.rate_limit = (rate > 0.0).then_some(rate);
    }
    if let Some(ms) = args.latency_ms {
        config.latency = Duration::from_millis(ms);
    }
    config.token = args.token;

    let sim = Simulator::start_on(config.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, args.port))).await?;
    println!("kaiten-sim listening");
    println!("  base URL: {}", sim.base_url());
    println!("  token:    {}", sim.token());
    println!(
        "  company:  {} spaces, {} boards, {} cards; rate limit {}; latency {} ms",
        sim.space_ids().len(),
        sim.board_ids().len(),
        sim.card_ids().len(),
        config.rate_limit.map_or("none".to_owned(), |r| format!("{r}/s")),
        config.latency.as_millis()
    );
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    sim.shutdown();
    Ok(())
}
