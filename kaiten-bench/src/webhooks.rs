//! Webhook acknowledgement latency: deliveries posted over HTTP to an axum route backed by
//! [`WebhookHandler`] (what `kaiten-sync serve` runs), at a fixed rate from several keep-alive
//! connections, while the worker drains the inbox and refetches the cards from the simulator.
//!
//! Latency is measured from when each delivery was due to be sent, so a server that falls behind
//! shows it (no coordinated omission).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use kaiten_client::KaitenClient;
use kaiten_sim::Simulator;
use kaiten_sync::{Store, WebhookAuth, WebhookHandler};

const SECRET: &str = "bench-webhook-secret-0123456789";

async fn route(State(handler): State<WebhookHandler>, Path(secret): Path<String>, body: Bytes) -> StatusCode {
    match handler.handle(&secret, None, &body).await {
        Ok(_) => StatusCode::OK,
        Err(e) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// What the load looks like.
pub struct Load {
    /// Deliveries per second, all connections together.
    pub rate: f64,
    /// Keep-alive connections posting at once.
    pub connections: usize,
    /// How long to post.
    pub duration: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Posts `card:update` deliveries for the simulator's cards at `load.rate` and prints the
/// acknowledgement latency, then how long the worker took to apply them all.
pub async fn bench_webhooks(name: &str, sim: &Simulator, store: Arc<dyn Store>, load: &Load) -> Result<()> {
    let client = KaitenClient::builder().base_url(sim.base_url()).token(sim.token()).rate_limit(None).build()?;
    let handler = WebhookHandler::new(client, store.clone(), WebhookAuth::new(SECRET));
    let worker = handler.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        worker
            .run_worker(async {
                let _ = stopped.await;
            })
            .await
    });
    let app = Router::new().route("/api/webhooks/kaiten/{secret}", post(route)).with_state(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/webhooks/kaiten/{SECRET}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let ids = Arc::new(sim.card_ids());
    let interval = Duration::from_secs_f64(load.connections as f64 / load.rate);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + load.duration;
    let connections = load.connections;
    let mut tasks = Vec::new();
    for c in 0..load.connections {
        let (url, ids) = (url.clone(), ids.clone());
        // One keep-alive connection per task, like a proxy's upstream pool.
        let http = reqwest::Client::builder().pool_max_idle_per_host(1).no_proxy().build()?;
        let offset = interval.mul_f64(c as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut due = start + offset;
            let mut i = c;
            while due < end {
                tokio::time::sleep_until(due.into()).await;
                let id = ids[(i * 7919) % ids.len()];
                let body = format!(
                    r#"{{"event":"card:update","data":{{"old":{{"id":{id}}},"changes":{{"title":"bench {i}"}},"author":{{"id":1}}}}}}"#
                );
                match http.post(&url).header("content-type", "application/json").body(body).send().await {
                    Ok(r) if r.status() == 200 => latencies.push(due.elapsed()),
                    _ => errors += 1,
                }
                i += connections;
                due += interval;
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let posted_for = start.elapsed();
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:>8} webhook acks: {} deliveries at {:.0}/s from {} connections: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {errors} errors",
        latencies.len(),
        latencies.len() as f64 / posted_for.as_secs_f64().max(1e-9),
        load.connections,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    let drain_started = Instant::now();
    let deadline = drain_started + Duration::from_secs(120);
    while store.inbox_stats().await?.pending > 0 {
        anyhow::ensure!(Instant::now() < deadline, "the webhook inbox did not drain within 2 minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs = store.recent_runs(10_000).await?;
    let webhook_runs: Vec<_> = runs.iter().filter(|r| r.kind == kaiten_sync::RunKind::Webhook).collect();
    let fetched: u64 = webhook_runs.iter().map(|r| r.api_requests).sum();
    println!(
        "{name:>8} webhook apply: inbox empty {:.2} s after the last delivery; {} batches, {fetched} requests to Kaiten for {} deliveries (coalesced per card)",
        drain_started.elapsed().as_secs_f64(),
        webhook_runs.len(),
        latencies.len(),
    );
    anyhow::ensure!(errors == 0, "{errors} deliveries were not acknowledged with 200");
    let _ = stop.send(());
    worker.await.context("webhook worker")?;
    server.abort();
    Ok(())
}
