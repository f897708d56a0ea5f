//! Kaiten webhooks in your own axum app: `cargo run -p kaiten-examples --bin webhook_axum`
//! (without `KAITEN_API_URL` it uses a simulated Kaiten, changes a card, shows the webhook arriving
//! and exits; with `KAITEN_API_URL`, `KAITEN_API_TOKEN` and `KAITEN_WEBHOOK_SECRET` it serves
//! `POST /api/webhooks/kaiten/<secret>` on `WEBHOOK_LISTEN` (default 127.0.0.1:3000) until Ctrl-C).
//!
//! A delivery is only a notification: the handler records "card 42 changed" in the store's inbox
//! and answers at once; the worker fetches card 42 from Kaiten and stores that.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use kaiten_sync::webhook::axum::{receive, response, MAX_BODY, WEBHOOK_PATH};
use kaiten_sync::{EntityKind, SyncEngine, WebhookAuth, WebhookHandler};

/// The route, printing what each delivery asked for. Without the printing it is
/// `kaiten_sync::webhook::axum::router(handler)`. Kaiten does not retry, so answer fast (accepting
/// is one insert into the inbox; the worker applies it) and let the scheduled sync repair
/// whatever a delivery missed.
async fn kaiten_webhook(
    State(handler): State<WebhookHandler>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = receive(&handler, &secret, &headers, &body).await;
    match &result {
        Ok(outcome) => match &outcome.queued {
            Some(n) => println!("webhook {}: {} {} queued for a refetch", outcome.event, n.kind, n.entity_id),
            None => println!("webhook {}: ignored", outcome.event),
        },
        Err(e) => eprintln!("webhook refused: {}", kaiten_sync::error::Chain(e)),
    }
    response(&result)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (client, sim) = kaiten_examples::kaiten().await?;
    let mirror = kaiten_examples::mirror().await?;
    let store = mirror.store.clone();
    let secret = match (std::env::var("KAITEN_WEBHOOK_SECRET"), &sim) {
        (Ok(secret), _) => secret,
        (Err(_), Some(_)) => "example-webhook-secret-0123456789".to_owned(),
        (Err(_), None) => {
            anyhow::bail!("set KAITEN_WEBHOOK_SECRET to a long random string (e.g. `openssl rand -hex 24`)")
        }
    };

    // Webhooks keep a mirror current; the first sync fills it (an incremental run on an empty
    // mirror lists everything).
    let report = SyncEngine::new(client.clone(), store.clone()).sync_incremental().await?;
    println!("mirror up to date: {} cards", report.stats(EntityKind::Cards).fetched);

    let handler = WebhookHandler::new(client, store.clone(), WebhookAuth::new(secret.clone()));
    // The worker applies what the route accepted, until the process ends.
    let worker = handler.clone();
    tokio::spawn(async move { worker.run_worker(std::future::pending()).await });
    let app = Router::new()
        .route(&format!("{WEBHOOK_PATH}/{{secret}}"), post(kaiten_webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(handler);
    let default_listen = if sim.is_some() { "127.0.0.1:0" } else { "127.0.0.1:3000" };
    let listen = std::env::var("WEBHOOK_LISTEN").unwrap_or_else(|_| default_listen.to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut stop = Some(stop);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = stopped => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            })
            .await
    });
    println!("receiving webhooks at http://{addr}/api/webhooks/kaiten/<KAITEN_WEBHOOK_SECRET>");

    match sim {
        Some(sim) => {
            // Point the simulated Kaiten's webhooks here, change a card, and watch it arrive.
            sim.set_webhook_url(Some(format!("http://{addr}/api/webhooks/kaiten/{secret}")));
            let card = sim.card_ids()[0];
            let board = sim.card_json(card).and_then(|c| c["board_id"].as_i64()).unwrap_or_default();
            let column = *sim.column_ids(board).last().expect("a board has columns");
            sim.update_card(card, serde_json::json!({"title": "Renamed in Kaiten"}));
            sim.move_card(card, column, None);
            sim.flush_webhooks(Duration::from_secs(10)).await;
            // The worker applies a delivery a second after it arrives (bursts coalesce).
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while store.inbox_stats().await?.pending > 0 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let stored = store.get(EntityKind::Cards, card).await?.expect("the card is mirrored");
            println!(
                "card {card} in the mirror, without another sync: title {}, column {}",
                stored.raw["title"], stored.raw["column_id"]
            );
            if let Some(stop) = stop.take() {
                let _ = stop.send(());
            }
        }
        None => {
            println!(
                "Ctrl-C stops. In Kaiten: space settings → webhooks → https://your-host/api/webhooks/kaiten/<secret>"
            );
        }
    }
    server.await??;
    Ok(())
}
