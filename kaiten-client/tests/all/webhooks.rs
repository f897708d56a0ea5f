//! Kaiten's external-webhook routes: typed calls, errors, and which writes are retried.

use std::time::Duration;

use kaiten_client::{Error, SpaceId, WebhookId};
use serde_json::{json, Value};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{api, builder, client, json_body, too_many_requests, TOKEN};

const SECRET: &str = "hook-secret-7f3e9a-never-print";

fn hook_url() -> String {
    format!("https://sync.example.com/api/webhooks/kaiten/{SECRET}")
}

fn hook(id: i64, enabled: bool) -> Value {
    json!({"id": id, "space_id": 7, "url": hook_url(), "enabled": enabled,
           "created": "2026-01-02T03:04:05.678Z", "updated": "2026-01-02T03:04:05.678Z", "author_id": 1})
}

#[tokio::test]
async fn lists_a_space_webhook_and_never_shows_its_secret() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/spaces/7/external-webhooks")))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(json_body(&json!([hook(11, true)]).to_string()))
        .expect(1)
        .mount(&server)
        .await;
    let hooks = client(&server).external_webhooks(SpaceId(7)).await.unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!((hook.id, hook.space_id, hook.enabled), (WebhookId(11), Some(SpaceId(7)), Some(true)));
    assert!(hook.is_enabled());
    assert_eq!(hook.url.as_deref(), Some(hook_url().as_str()));
    assert_eq!(hook.masked_url().unwrap(), "https://sync.example.com/api/webhooks/kaiten/••••");
    let debug = format!("{hook:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("••••"), "{debug}");
}

#[tokio::test]
async fn creates_with_a_post_and_updates_with_a_patch_of_the_given_fields() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("/spaces/7/external-webhooks")))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"url": hook_url()})))
        .respond_with(json_body(&hook(11, true).to_string()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(api("/spaces/7/external-webhooks/11")))
        .and(body_json(json!({"enabled": false})))
        .respond_with(json_body(&hook(11, false).to_string()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(api("/spaces/7/external-webhooks/11")))
        .and(body_json(json!({"url": hook_url(), "enabled": true})))
        .respond_with(json_body(&hook(11, true).to_string()))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let created = client.create_external_webhook(SpaceId(7), &hook_url()).await.unwrap();
    assert_eq!(created.id, 11);
    let disabled = client.update_external_webhook(SpaceId(7), WebhookId(11), None, Some(false)).await.unwrap();
    assert!(!disabled.is_enabled());
    let repointed =
        client.update_external_webhook(SpaceId(7), WebhookId(11), Some(&hook_url()), Some(true)).await.unwrap();
    assert!(repointed.is_enabled());
}

#[tokio::test]
async fn plan_and_role_refusals_are_their_own_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/spaces/1/external-webhooks")))
        .respond_with(
            ResponseTemplate::new(402)
                .set_body_raw(r#"{"message":"Not available on your plan"}"#, "application/json; charset=utf-8"),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("/spaces/2/external-webhooks")))
        .respond_with(ResponseTemplate::new(403))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let error = client.external_webhooks(SpaceId(1)).await.unwrap_err();
    assert!(
        matches!(&error, Error::PaymentRequired { message, .. } if message == "Not available on your plan"),
        "{error:?}"
    );
    let error = client.create_external_webhook(SpaceId(2), &hook_url()).await.unwrap_err();
    assert!(matches!(error, Error::Forbidden { .. }), "{error:?}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_duplicate_is_a_bad_request_whose_message_never_quotes_the_secret() {
    let server = MockServer::start().await;
    let message = format!("External webhook for this space already exists: {}", hook_url());
    Mock::given(method("POST"))
        .and(path(api("/spaces/7/external-webhooks")))
        .respond_with(
            ResponseTemplate::new(400).set_body_raw(json!({ "message": message }).to_string(), "application/json"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let error = client(&server).create_external_webhook(SpaceId(7), &hook_url()).await.unwrap_err();
    assert!(matches!(&error, Error::BadRequest { status: 400, message, .. } if message.contains("already exists")));
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
}

#[tokio::test]
async fn a_post_is_not_repeated_after_a_server_error_but_is_after_a_429() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("/spaces/7/external-webhooks")))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let error = client.create_external_webhook(SpaceId(7), &hook_url()).await.unwrap_err();
    assert!(matches!(error, Error::Server { status: 503, attempts: 1, .. }), "{error:?}");

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("/spaces/7/external-webhooks")))
        .respond_with(too_many_requests().insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("/spaces/7/external-webhooks")))
        .respond_with(json_body(&hook(11, true).to_string()))
        .expect(1)
        .mount(&server)
        .await;
    let created = crate::support::client(&server).create_external_webhook(SpaceId(7), &hook_url()).await.unwrap();
    assert_eq!(created.id, 11);
}

#[tokio::test]
async fn a_post_is_not_repeated_after_a_timeout_while_a_patch_is() {
    let server = MockServer::start().await;
    let slow = ResponseTemplate::new(200).set_delay(Duration::from_millis(500));
    Mock::given(method("POST"))
        .and(path(api("/spaces/7/external-webhooks")))
        .respond_with(slow.clone().set_body_raw(hook(11, true).to_string(), "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(api("/spaces/7/external-webhooks/11")))
        .respond_with(slow.set_body_raw(hook(11, false).to_string(), "application/json"))
        .expect(2)
        .mount(&server)
        .await;
    let mut retries = crate::support::fast_retries();
    retries.max_attempts = 2;
    let client = builder(&server).timeout(Duration::from_millis(100)).retry_policy(retries).build().unwrap();
    let error = client.create_external_webhook(SpaceId(7), &hook_url()).await.unwrap_err();
    assert!(matches!(error, Error::Timeout { attempts: 1, .. }), "{error:?}");
    let error = client.update_external_webhook(SpaceId(7), WebhookId(11), None, Some(false)).await.unwrap_err();
    assert!(matches!(error, Error::Timeout { attempts: 2, .. }), "{error:?}");
}

#[tokio::test]
async fn an_overlong_url_is_refused_before_any_request() {
    let server = MockServer::start().await;
    let url = format!("https://example.com/{}", "a".repeat(5000));
    let error = client(&server).create_external_webhook(SpaceId(7), &url).await.unwrap_err();
    assert!(matches!(error, Error::InvalidConfig(_)), "{error:?}");
    assert!(!error.to_string().contains("aaaa"));
    assert!(server.received_requests().await.unwrap().is_empty());
}
