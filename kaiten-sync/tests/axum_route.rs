//! The webhook route for axum (feature `axum`): what it answers and what it records.
#![cfg(feature = "axum")]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kaiten_sync::webhook::axum::{router, MAX_BODY, WEBHOOK_PATH};
use kaiten_sync::{EntityKind, MemoryStore, Store, WebhookAuth, WebhookHandler};
use serde_json::{json, Value};
use tower::ServiceExt;

const SECRET: &str = "route-test-secret-0123456789abcdef";

async fn post(app: &axum::Router, secret: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let request = Request::post(format!("{WEBHOOK_PATH}/{secret}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 2 * MAX_BODY).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_route_records_a_delivery_and_refuses_a_wrong_secret_or_a_bad_body() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // The client is never called: accepting a delivery only records it in the inbox.
    let client = kaiten_sync::kaiten_client::KaitenClient::builder()
        .base_url("http://127.0.0.1:9/api/latest")
        .token("t")
        .build()
        .unwrap();
    let handler = WebhookHandler::new(client, store.clone(), WebhookAuth::new(SECRET));
    let app = router(handler);
    let delivery =
        json!({"event": "card:update", "data": {"old": {"id": 42, "title": "a"}, "changes": {"title": "b"}}});

    let (status, body) = post(&app, "not-the-secret-at-all-0123456789", delivery.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["ok"], false);
    assert!(!body.to_string().contains(SECRET), "{body}");
    assert_eq!(store.inbox_stats().await.unwrap().pending, 0, "a refused delivery records nothing");

    let (status, body) = post(&app, SECRET, b"{\"no event\": true".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(store.inbox_stats().await.unwrap().pending, 0);

    let (status, _) = post(&app, SECRET, vec![b' '; MAX_BODY + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, body) = post(&app, SECRET, delivery.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"ok": true, "event": "card:update", "ignored": false, "queued": {"kind": "cards", "id": 42}})
    );
    let entries = store.inbox_entries(false, 10).await.unwrap();
    assert_eq!(entries.iter().map(|e| (e.kind, e.entity_id)).collect::<Vec<_>>(), vec![(EntityKind::Cards, 42)]);
}
