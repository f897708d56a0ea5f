//! The webhook route for axum (feature `axum`): what `kaiten-sync serve`, the `webhook_axum`
//! example and an app of yours mount, so the adapter exists once.
//!
//! [`router`] is the whole route; [`receive`] and [`response`] are its two halves, for an app that
//! does something with each delivery's result in between (count it, log it), as `serve` does.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kaiten_sync::kaiten_client::KaitenClient;
//! use kaiten_sync::{MemoryStore, Store, WebhookAuth, WebhookHandler};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let secret = std::env::var("KAITEN_WEBHOOK_SECRET")?;
//! let handler = WebhookHandler::new(KaitenClient::from_env()?, store, WebhookAuth::new(secret));
//! // Applies accepted deliveries in the background until the process ends.
//! let worker = handler.clone();
//! tokio::spawn(async move { worker.run_worker(std::future::pending()).await });
//! // `POST /api/webhooks/kaiten/<secret>`, next to your own routes.
//! let app = axum::Router::new().merge(kaiten_sync::webhook::axum::router(handler));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use ::axum::body::Bytes;
use ::axum::extract::{DefaultBodyLimit, Path, State};
use ::axum::http::{HeaderMap, StatusCode};
use ::axum::response::{IntoResponse, Response};
use ::axum::routing::post;
use ::axum::{Json, Router};
use serde_json::json;

use super::{WebhookError, WebhookHandler, WebhookOutcome};

/// Where Kaiten posts: `POST {WEBHOOK_PATH}/<secret>`.
pub const WEBHOOK_PATH: &str = "/api/webhooks/kaiten";

/// The largest delivery accepted (Kaiten's are a few KiB; a card with a long description tens).
pub const MAX_BODY: usize = 1024 * 1024;

/// The route: `POST /api/webhooks/kaiten/{secret}` answered by [`deliver`], bodies up to
/// [`MAX_BODY`].
pub fn router(handler: WebhookHandler) -> Router {
    Router::new()
        .route(&format!("{WEBHOOK_PATH}/{{secret}}"), post(deliver))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(handler)
}

/// The handler of [`router`]: [`receive`], then [`response`].
pub async fn deliver(
    State(handler): State<WebhookHandler>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    response(&receive(&handler, &secret, &headers, &body).await)
}

/// Authenticates a delivery (the secret from the URL, and the signature header when the handler
/// has one: [`WebhookHandler::hmac_header`]) and records it in the inbox
/// ([`WebhookHandler::handle`]).
pub async fn receive(
    handler: &WebhookHandler,
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<WebhookOutcome, WebhookError> {
    let signature = handler.hmac_header().and_then(|h| headers.get(h)).and_then(|v| v.to_str().ok());
    handler.handle(secret, signature, body).await
}

/// The answer to a delivery: 200 with `{"ok": true, "event", "ignored", "queued": {"kind", "id"}}`,
/// or the error's status ([`WebhookError::status`]: 401 for a wrong secret, 400 for a body that
/// is not a delivery, 503 when the inbox cannot be written, so nothing is acknowledged that was not
/// stored) with `{"ok": false, "error"}`. The error names what was wrong, never the secret.
pub fn response(result: &Result<WebhookOutcome, WebhookError>) -> Response {
    match result {
        Ok(outcome) => Json(json!({
            "ok": true,
            "event": outcome.event,
            "ignored": outcome.ignored(),
            "queued": outcome.queued.as_ref().map(|n| json!({"kind": n.kind, "id": n.entity_id})),
        }))
        .into_response(),
        Err(error) => {
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(json!({"ok": false, "error": error.to_string()}))).into_response()
        }
    }
}
