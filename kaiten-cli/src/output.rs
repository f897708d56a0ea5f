//! What the CLI prints: progress, reports, status tables, errors.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use chrono::{DateTime, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kaiten_sync::{EntityKind, EntityStats, ProgressEvent, RunRecord, RunStatus, Store, SyncReport};

/// How log lines are written on stderr (`--log-format`, `KAITEN_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object a line (`timestamp`, `level`, `target`, `fields`, and the spans: `span` and
    /// `spans`, where a run's `run_id` is); progress and the final error are log lines too.
    Json,
}

/// The format chosen at start (progress lines follow it).
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The log format in use.
pub fn log_format() -> LogFormat {
    LOG_FORMAT.get().copied().unwrap_or_default()
}

/// Sets up `tracing` output on stderr: warnings by default, more with `-v`, or `RUST_LOG`.
pub fn init_tracing(verbose: u8, format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
}

/// Reports the error that ends the command on stderr: `error: ...`, or a JSON line in JSON mode
/// (written directly, so a filter that silences the log cannot hide it).
pub fn report_error(text: &str) {
    match log_format() {
        LogFormat::Text => eprintln!("error: {text}"),
        LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": "ERROR",
                "fields": {"message": text},
                "target": "kaiten_sync",
            })
        ),
    }
}

/// An error and its causes on one line, outermost first (`migration failed: database schema
/// problem: ...`): each layer says only its own part, so nothing repeats.
pub fn error_chain(error: &anyhow::Error) -> String {
    kaiten_sync::error::chain(error.as_ref())
}

fn describe(stats: &EntityStats) -> String {
    format!(
        "{} fetched, {} new, {} changed, {} unchanged, {} deleted",
        stats.fetched, stats.inserted, stats.updated, stats.unchanged, stats.deleted
    )
}

struct ProgressState {
    multi: Option<MultiProgress>,
    bars: Vec<(EntityKind, ProgressBar, Instant)>,
}

/// Progress bars on a terminal, plain lines otherwise.
#[derive(Clone)]
pub struct Progress(Arc<Mutex<ProgressState>>);

impl Progress {
    /// Bars when stderr is a terminal, lines when it is not.
    pub fn new() -> Self {
        let bars = std::io::stderr().is_terminal() && log_format() == LogFormat::Text;
        let multi = bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self(Arc::new(Mutex::new(ProgressState { multi, bars: Vec::new() })))
    }

    /// Shows one event.
    pub fn handle(&self, event: &ProgressEvent) {
        let mut state = self.0.lock().unwrap();
        match event {
            ProgressEvent::RunStarted { run_id, kind, entities } => {
                let names: Vec<&str> = entities.iter().map(|k| k.as_str()).collect();
                let line = format!("run #{run_id} ({}): {}", kind.as_str(), names.join(", "));
                match &state.multi {
                    Some(multi) => {
                        let _ = multi.println(line);
                    }
                    None if log_format() == LogFormat::Json => tracing::info!(run_id, "{line}"),
                    None => eprintln!("{line}"),
                }
            }
            ProgressEvent::EntityStarted { kind } => {
                if let Some(multi) = &state.multi {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:>20} {msg} ({elapsed})")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(kind.as_str());
                    bar.enable_steady_tick(std::time::Duration::from_millis(120));
                    state.bars.push((*kind, bar, Instant::now()));
                } else {
                    state.bars.push((*kind, ProgressBar::hidden(), Instant::now()));
                }
            }
            ProgressEvent::PageDone { kind, stats } => {
                if let Some((_, bar, _)) = state.bars.iter().find(|(k, _, _)| k == kind) {
                    bar.set_message(format!("{} pages, {}", stats.pages, describe(stats)));
                }
            }
            ProgressEvent::EntityDone { kind, stats } => {
                if let Some((_, bar, started)) = state.bars.iter().find(|(k, _, _)| k == kind) {
                    let line = format!("{:>20}: {} in {:.1?}", kind.as_str(), describe(stats), started.elapsed());
                    if state.multi.is_some() {
                        bar.finish_with_message(describe(stats));
                    } else if log_format() == LogFormat::Json {
                        tracing::info!(entity = kind.as_str(), "{}", line.trim_start());
                    } else {
                        eprintln!("{line}");
                    }
                }
            }
            ProgressEvent::RunFinished { .. } => {}
            _ => {}
        }
    }

    /// Stops the bars.
    pub fn finish(&self) {
        let state = self.0.lock().unwrap();
        for (_, bar, _) in &state.bars {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// A plain text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out
}

/// The summary of a finished run.
pub fn print_report(report: &SyncReport) {
    let run = &report.run;
    let rows: Vec<Vec<String>> = run
        .stats
        .iter()
        .map(|(kind, s)| {
            vec![
                kind.as_str().to_owned(),
                s.fetched.to_string(),
                s.inserted.to_string(),
                s.updated.to_string(),
                s.unchanged.to_string(),
                s.deleted.to_string(),
            ]
        })
        .collect();
    println!("{}", table(&["entity", "fetched", "inserted", "updated", "unchanged", "deleted"], &rows));
    println!(
        "run #{} ({}) {} in {:.1?}: {} API requests, {} retries",
        run.id,
        run.kind.as_str(),
        run.status.as_str(),
        report.duration,
        run.api_requests,
        run.retries
    );
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| "-".into())
}

fn run_row(run: &RunRecord) -> Vec<String> {
    let duration = run
        .finished_at
        .map(|f| format!("{:.1}s", (f - run.started_at).num_milliseconds() as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    let mut error = run.error.clone().unwrap_or_default();
    if error.chars().count() > 80 {
        error = error.chars().take(77).collect::<String>() + "...";
    }
    vec![
        run.id.to_string(),
        run.kind.as_str().to_owned(),
        run.status.as_str().to_owned(),
        when(Some(run.started_at)),
        duration,
        run.api_requests.to_string(),
        run.total(|s| s.inserted).to_string(),
        run.total(|s| s.updated).to_string(),
        run.total(|s| s.deleted).to_string(),
        error,
    ]
}

/// A run still `running` (here or in another process), kind by kind as far as the run log has it:
/// the engine writes a run's counts after each entity kind, so finished kinds are listed with
/// their totals and the kind after them is the one in progress.
fn print_running(run: &RunRecord, now: DateTime<Utc>) {
    let secs = (now - run.started_at).num_seconds().max(0);
    println!(
        "\nrun #{} ({}) running for {}s, {} requests so far (a run whose process died shows as running until the next run \
         marks it interrupted):",
        run.id,
        run.kind.as_str(),
        secs,
        run.api_requests
    );
    let mut in_progress = true;
    let rows: Vec<Vec<String>> = run
        .entities
        .iter()
        .map(|kind| {
            let state = match run.stats.get(kind) {
                Some(_) => "done",
                None if in_progress => {
                    in_progress = false;
                    "in progress"
                }
                None => "pending",
            };
            let stats = run.stats.get(kind).copied().unwrap_or_default();
            let count = |n: u64| if state == "done" { n.to_string() } else { "-".into() };
            vec![
                kind.as_str().to_owned(),
                state.to_owned(),
                count(stats.pages),
                count(stats.fetched),
                count(stats.inserted),
                count(stats.updated),
                count(stats.deleted),
            ]
        })
        .collect();
    println!("{}", table(&["entity", "state", "pages", "fetched", "ins", "upd", "del"], &rows));
}

/// `status`: counts, per-entity state, when deletions were last reconciled, and recent runs.
pub async fn print_status(store: &dyn Store, json: bool, runs: usize) -> Result<()> {
    let counts = store.counts().await?;
    let states = store.entity_states().await?;
    let recent = store.recent_runs(runs).await?;
    let inbox = store.inbox_stats().await?;
    // Deleted cards vanish from Kaiten's listings: only a complete listing of every card (a full
    // sync) marks them deleted, so the end of the last one bounds how stale `deleted_at` is.
    let reconciled = states.iter().find(|s| s.kind == EntityKind::Cards).and_then(|s| s.last_full_sync_at);
    if json {
        let value = serde_json::json!({
            "tables": counts,
            "entities": states,
            "deletions_reconciled_at": reconciled,
            "webhook_inbox": inbox,
            "runs": recent,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> =
        counts.iter().map(|c| vec![c.table.clone(), c.live.to_string(), c.deleted.to_string()]).collect();
    println!("{}\n", table(&["table", "rows", "deleted"], &rows));
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|s| {
            vec![
                s.kind.as_str().to_owned(),
                when(s.last_full_sync_at),
                when(s.last_incremental_sync_at),
                s.cursor.map(|c| c.format("%Y-%m-%d %H:%M:%S%.3f").to_string()).unwrap_or_else(|| "-".into()),
                if s.resume.is_some() { "yes".into() } else { "-".into() },
            ]
        })
        .collect();
    println!("{}\n", table(&["entity", "last full sync", "last incremental", "cursor", "unfinished"], &rows));
    match reconciled {
        Some(at) => println!(
            "deleted cards last reconciled: {} UTC, by the last complete full sync of cards (between full syncs, only a webhook refetch that answers 404 marks a card deleted)\n",
            when(Some(at))
        ),
        None => println!(
            "deleted cards last reconciled: never (run `sync full`: only a complete listing of every card finds deletions)\n"
        ),
    }
    println!(
        "webhook inbox: {} pending{}, {} failed{}\n",
        inbox.pending,
        inbox.oldest_pending.map(|t| format!(" (oldest received {} UTC)", when(Some(t)))).unwrap_or_default(),
        inbox.failed,
        if inbox.failed > 0 { " (see the admin page for their errors, and retry them there)" } else { "" }
    );
    let rows: Vec<Vec<String>> = recent.iter().map(run_row).collect();
    println!(
        "{}",
        table(&["run", "kind", "status", "started", "took", "requests", "ins", "upd", "del", "error"], &rows)
    );
    for run in recent.iter().filter(|r| r.status == RunStatus::Running) {
        print_running(run, Utc::now());
    }
    Ok(())
}
