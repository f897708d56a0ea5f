//! `kaiten-sync`: mirror a Kaiten company into SQLite or Postgres from the command line.
//!
//! ```text
//! kaiten-sync demo                       # a simulated Kaiten synced into SQLite, no account needed
//! kaiten-sync migrate                    # create or upgrade the schema at DATABASE_URL
//! kaiten-sync sync full                  # everything, with deletion detection
//! kaiten-sync sync incremental           # what changed since the last run
//! kaiten-sync sync --only cards,boards --board 42 [--full]
//! kaiten-sync status [--json]
//! kaiten-sync serve                      # webhook endpoint + admin page + scheduled syncs
//! kaiten-sync webhooks install --url https://sync.example.com  # one Kaiten webhook per space
//! kaiten-sync sim --cards 5000           # run the simulator on its own
//! ```
//!
//! Configuration comes from flags, the environment, and `.env` / `.env.local` in the current
//! directory: `KAITEN_API_URL`, `KAITEN_API_TOKEN`, `KAITEN_WEBHOOK_SECRET`, `DATABASE_URL`,
//! `KAITEN_RATE_LIMIT`.

mod config;
mod demo;
mod metrics;
mod output;
mod serve;
mod stores;
mod webhooks;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kaiten_client::{BoardId, CardId, SpaceId};
use kaiten_sync::{EntityKind, Mode, Selection, SyncEngine, SyncOptions};

use crate::config::{DbArgs, KaitenArgs};

/// Mirror a Kaiten company into a database you own, and keep it current.
#[derive(Debug, Parser)]
#[command(name = "kaiten-sync", version, about, long_about = None)]
struct Cli {
    /// Log more (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Log format on stderr: `text`, or `json` (one JSON object a line, each line of a run
    /// carrying its `run_id`, for log collectors).
    #[arg(long, value_enum, env = "KAITEN_LOG_FORMAT", default_value_t = output::LogFormat::Text, global = true)]
    log_format: output::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the database schema.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
        /// Postgres: enable row-level security (no policies) on every table of the schema, so an
        /// HTTP API in front of the database (Supabase's Data API) serves none of its rows to
        /// roles that do not own them. Done anyway when the database has Supabase's `anon` role.
        #[arg(long)]
        enable_rls: bool,
    },
    /// Sync Kaiten into the database.
    Sync(SyncArgs),
    /// Show row counts, the last syncs and recent runs.
    Status {
        #[command(flatten)]
        db: DbArgs,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// How many recent runs to show.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Run a simulated Kaiten, sync it into SQLite, change it, sync again, and show the result.
    Demo(demo::DemoArgs),
    /// Run the simulated Kaiten on its own (for trying the CLI or your own code against it).
    Sim(SimArgs),
    /// Serve Kaiten webhooks, an admin page and scheduled syncs (needs KAITEN_WEBHOOK_SECRET).
    Serve(serve::ServeArgs),
    /// Show, install or uninstall the Kaiten webhook of every space, pointing at `serve`.
    Webhooks(webhooks::WebhooksArgs),
}

#[derive(Debug, Args)]
struct SyncArgs {
    /// `full` (everything, with deletion detection) or `incremental` (what changed since the last
    /// run). Without it, `--only` picks kinds and `--full` picks the mode.
    #[arg(value_enum)]
    mode: Option<SyncMode>,
    /// Only these kinds, comma-separated (singular names such as `card` work too).
    #[arg(long, value_delimiter = ',', value_name = "KINDS", value_parser = KindParser)]
    only: Vec<EntityKind>,
    /// With --only: a full listing (with deletion detection) instead of incremental.
    #[arg(long)]
    full: bool,
    /// Only this space (repeatable).
    #[arg(long = "space")]
    spaces: Vec<SpaceId>,
    /// Only this board (repeatable).
    #[arg(long = "board")]
    boards: Vec<BoardId>,
    /// Refetch just these cards (comma-separated ids, repeatable) and any parent they miss, through
    /// the same path as webhook deliveries: a card Kaiten no longer has is marked deleted.
    #[arg(long = "card", value_delimiter = ',', conflicts_with_all = ["mode", "only", "full", "spaces", "boards"])]
    cards: Vec<CardId>,
    /// Seconds to wait for another sync on the same database to finish (0 = fail at once).
    #[arg(long, default_value_t = 0)]
    lock_wait: u64,
    /// Incremental runs: fetch every changed card on its own (`GET /cards/{id}`, one request per
    /// changed card) to store its members in `card_members`. No effect on full listings.
    /// `KAITEN_CARD_MEMBERS` takes `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`.
    #[arg(long, env = "KAITEN_CARD_MEMBERS", value_parser = clap::builder::BoolishValueParser::new())]
    members: bool,
    /// The share (0 to 1) of a kind one sync may mark deleted without checking with Kaiten first;
    /// beyond it a sample is asked for by id, and if Kaiten still has any, nothing of that kind is
    /// marked deleted and the run fails saying so (like rsync's --max-delete). 1 = no check.
    #[arg(long, env = "KAITEN_MAX_DELETE_SHARE", default_value_t = 0.1, value_parser = parse_share)]
    max_delete_share: f64,
    #[command(flatten)]
    kaiten: KaitenArgs,
    #[command(flatten)]
    db: DbArgs,
}

/// The mode argument of `sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SyncMode {
    /// Everything, with deletion detection.
    Full,
    /// What changed since the last run.
    Incremental,
}

/// Parses `--only` values with [`EntityKind`]'s own parser (names, singular aliases, any case, `-`
/// for `_`) and lists the kinds in `--help`.
#[derive(Debug, Clone, Copy)]
struct KindParser;

impl clap::builder::TypedValueParser for KindParser {
    type Value = EntityKind;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<EntityKind, clap::Error> {
        let text = clap::builder::StringValueParser::new().parse_ref(cmd, arg, value)?;
        text.parse::<EntityKind>().map_err(|e| {
            let arg = arg.map_or_else(|| "--only".to_owned(), ToString::to_string);
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("invalid value '{text}' for '{arg}': {e}\n"))
                .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            EntityKind::ALL
                .into_iter()
                .map(|kind| clap::builder::PossibleValue::new(kind.as_str()).aliases(kind.aliases().iter().copied())),
        ))
    }
}

/// A share from 0 to 1 (`0.1`, or `10%`).
fn parse_share(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let (number, scale) = match trimmed.strip_suffix('%') {
        Some(percent) => (percent.trim(), 100.0),
        None => (trimmed, 1.0),
    };
    match number.parse::<f64>() {
        Ok(value) if value.is_finite() && (0.0..=scale).contains(&value) => Ok(value / scale),
        _ => Err(format!("expected a share from 0 to 1 (or a percentage such as 10%), got {text:?}")),
    }
}

#[derive(Debug, Args)]
struct SimArgs {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Number of cards.
    #[arg(long, default_value_t = 2000)]
    cards: usize,
    /// Seed of the generated company.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Requests per second the simulator allows (0 = unlimited).
    #[arg(long, default_value_t = 5.0)]
    rate_limit: f64,
    /// Latency added to every response, in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
}

fn main() -> ExitCode {
    config::load_dotenv();
    let cli = Cli::parse();
    output::init_tracing(cli.verbose, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::report_error(&output::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Migrate { db, enable_rls } => {
            let store = stores::open_with(&db, enable_rls).await?;
            store.migrate().await.context("migration failed")?;
            println!("database schema is up to date ({})", db.describe());
            Ok(())
        }
        Command::Sync(args) => sync(args).await,
        Command::Status { db, json, runs } => {
            let store = stores::open(&db).await?;
            output::print_status(&*store, json, runs).await
        }
        Command::Demo(args) => demo::run(args).await,
        Command::Sim(args) => sim(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Webhooks(args) => webhooks::run(args).await,
    }
}

fn selection(args: &SyncArgs) -> Result<(Selection, Mode)> {
    let kinds = &args.only;
    let mode = match (args.mode, args.full) {
        (Some(SyncMode::Full), _) | (None, true) => Mode::Full,
        (Some(SyncMode::Incremental), true) => bail!("`sync incremental --full` contradicts itself: pick one"),
        (Some(SyncMode::Incremental), false) => Mode::Incremental,
        (None, false) if kinds.is_empty() && args.spaces.is_empty() && args.boards.is_empty() => {
            bail!("say what to sync: `sync full`, `sync incremental`, or `sync --only KINDS [--full]`")
        }
        (None, false) => Mode::Incremental,
    };
    let selection = Selection::kinds(kinds).in_spaces(&args.spaces).in_boards(&args.boards);
    Ok((selection, mode))
}

async fn sync(args: SyncArgs) -> Result<()> {
    if !args.cards.is_empty() {
        return refetch_cards(&args).await;
    }
    let (selection, mode) = selection(&args)?;
    let client = args.kaiten.client()?;
    let store = stores::open(&args.db).await?;
    store.migrate().await.context("migration failed")?;
    let options = SyncOptions::default()
        .with_concurrency(usize::from(args.kaiten.concurrency))
        .with_lock_wait(Duration::from_secs(args.lock_wait))
        .with_card_members_backfill(args.members)
        .with_max_delete_share(args.max_delete_share);
    if args.members && mode == Mode::Full {
        tracing::warn!("--members fetches card members in incremental runs only; this full listing ignores it");
    }
    let progress = output::Progress::new();
    let engine = SyncEngine::new(client, store.clone()).with_options(options).on_progress({
        let progress = progress.clone();
        move |event| progress.handle(event)
    });
    let report = engine.sync_selection(&selection, mode).await;
    progress.finish();
    let report = report?;
    output::print_report(&report);
    Ok(())
}

/// `sync --card ID,...`: the cards refetched through the webhook apply path.
async fn refetch_cards(args: &SyncArgs) -> Result<()> {
    let client = args.kaiten.client()?;
    let store = stores::open(&args.db).await?;
    store.migrate().await.context("migration failed")?;
    let applier = kaiten_sync::WebhookHandler::applier(client, store, kaiten_sync::WebhookOptions::default());
    let ids: Vec<i64> = args.cards.iter().map(|card| card.get()).collect();
    let report = applier.refetch(kaiten_sync::EntityKind::Cards, &ids).await?;
    println!(
        "refetched {} card(s): {} applied, {} failed; {} request(s) to Kaiten (runs {:?})",
        args.cards.len(),
        report.applied,
        report.failed,
        report.requests,
        report.run_ids
    );
    anyhow::ensure!(
        report.failed == 0,
        "{} refetch(es) failed; they stay in the webhook inbox for `serve` to retry (see `kaiten-sync status`)",
        report.failed
    );
    Ok(())
}

async fn sim(args: SimArgs) -> Result<()> {
    let config = kaiten_sim::SimConfig {
        cards: args.cards,
        seed: args.seed,
        rate_limit: (args.rate_limit > 0.0).then_some(args.rate_limit),
        latency: Duration::from_millis(args.latency_ms),
        ..kaiten_sim::SimConfig::demo()
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let sim = kaiten_sim::Simulator::start_on(config, addr).await.context("cannot start the simulator")?;
    println!("simulated Kaiten listening; try:");
    println!("  export KAITEN_API_URL={}", sim.base_url());
    println!("  export KAITEN_API_TOKEN={}", sim.token());
    println!("  kaiten-sync sync full");
    println!("Ctrl-C stops it.");
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    sim.shutdown();
    Ok(())
}
