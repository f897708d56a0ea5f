//! Retries, status mapping, undecodable bodies, and the token never leaking into an error.

use std::time::Duration;

use kaiten_client::{CardId, Error, PageRequest, RetryPolicy, SpaceId};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

const PAGE: PageRequest = PageRequest { limit: 100, offset: 0 };

async fn mount(server: &MockServer, route: &str, response: ResponseTemplate, times: u64) {
    Mock::given(method("GET")).and(path(api(route))).respond_with(response).expect(times).mount(server).await;
}

fn assert_no_token(err: &Error) {
    for text in [err.to_string(), format!("{err:?}"), format!("{:#}", anyhow_like(err))] {
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
    }
}

/// The error with its whole source chain, as an application would print it.
fn anyhow_like(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause} / {cause:?}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn a_5xx_then_success_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/spaces")))
        .respond_with(ResponseTemplate::new(502).set_body_raw("<html>Bad Gateway</html>", "text/html"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    mount(&server, "/spaces", json_body(SPACES), 1).await;
    let client = client(&server);
    assert_eq!(client.spaces().await.unwrap().len(), 2);
    assert_eq!(client.stats(), kaiten_client::ClientStats { requests: 3, retries: 2, rate_limited: 0 });
}

#[tokio::test]
async fn exhausted_server_errors_report_status_and_attempts() {
    let server = MockServer::start().await;
    mount(&server, "/spaces", ResponseTemplate::new(503), 5).await;
    let err = client(&server).spaces().await.unwrap_err();
    assert!(matches!(&err, Error::Server { status: 503, attempts: 5, route } if route == "GET /spaces"), "{err:?}");
    assert!(err.is_retryable());
    assert_no_token(&err);
}

#[tokio::test]
async fn exhausted_rate_limits_report_attempts() {
    let server = MockServer::start().await;
    mount(&server, "/tags", too_many_requests().insert_header("Retry-After", "0"), 3).await;
    let client = builder(&server).retry_policy(RetryPolicy { max_attempts: 3, ..fast_retries() }).build().unwrap();
    let err = client.tags_page(PAGE).await.unwrap_err();
    assert!(matches!(err, Error::RateLimited { attempts: 3, retry_after: Some(d), .. } if d.is_zero()), "{err:?}");
    assert_eq!(client.stats().retries, 2);
    assert_no_token(&err);
}

#[tokio::test]
async fn a_wait_beyond_the_total_cap_gives_up_at_once() {
    let server = MockServer::start().await;
    mount(&server, "/tags", too_many_requests().insert_header("Retry-After", "3600"), 1).await;
    let err = client(&server).tags_page(PAGE).await.unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { attempts: 1, retry_after: Some(d), .. } if d == Duration::from_secs(3600)),
        "{err:?}"
    );
}

#[tokio::test]
async fn timeouts_are_retried_then_reported() {
    let server = MockServer::start().await;
    mount(&server, "/spaces", json_body("[]").set_delay(Duration::from_secs(2)), 2).await;
    let client = builder(&server)
        .timeout(Duration::from_millis(100))
        .retry_policy(RetryPolicy { max_attempts: 2, ..fast_retries() })
        .build()
        .unwrap();
    let err = client.spaces().await.unwrap_err();
    assert!(matches!(&err, Error::Timeout { attempts: 2, route } if route == "GET /spaces"), "{err:?}");
    assert_no_token(&err);
}

#[tokio::test]
async fn an_unreachable_server_is_a_connection_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // closed again: connections are refused
    let client = kaiten_client::KaitenClient::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .token(TOKEN)
        .rate_limit(None)
        .retry_policy(RetryPolicy { max_attempts: 2, ..fast_retries() })
        .build()
        .unwrap();
    let err = client.current_user().await.unwrap_err();
    assert!(matches!(&err, Error::Connection { attempts: 2, url, .. } if url.contains(&port.to_string())), "{err:?}");
    assert!(std::error::Error::source(&err).is_some(), "the transport error is kept as the source");
    assert!(err.is_retryable());
    assert_no_token(&err);
}

#[tokio::test]
async fn unauthorized_is_not_retried() {
    let server = MockServer::start().await;
    mount(&server, "/users/current", ResponseTemplate::new(401).set_body_string("Unauthorized"), 1).await;
    let err = client(&server).current_user().await.unwrap_err();
    assert!(matches!(&err, Error::Unauthorized { route } if route == "GET /users/current"), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(err.status(), Some(401));
    assert_no_token(&err);
}

#[tokio::test]
async fn payment_required_carries_kaitens_message_and_is_not_retried() {
    let server = MockServer::start().await;
    let body = r#"{"message": "Custom properties are not available in your plan"}"#;
    mount(&server, "/company/custom-properties", ResponseTemplate::new(402).set_body_raw(body, "application/json"), 1)
        .await;
    let err = client(&server).property_definitions().await.unwrap_err();
    assert!(
        matches!(&err, Error::PaymentRequired { message, .. } if message == "Custom properties are not available in your plan"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_no_token(&err);
}

#[tokio::test]
async fn forbidden_is_not_retried() {
    let server = MockServer::start().await;
    mount(&server, "/spaces/7/boards", ResponseTemplate::new(403), 1).await;
    let err = client(&server).boards(SpaceId(7)).await.unwrap_err();
    assert!(matches!(&err, Error::Forbidden { route } if route == "GET /spaces/7/boards"), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn not_found_is_not_retried() {
    let server = MockServer::start().await;
    mount(&server, "/cards/42", ResponseTemplate::new(404), 1).await;
    let err = client(&server).card(CardId(42)).await.unwrap_err();
    assert!(matches!(&err, Error::NotFound { route } if route == "GET /cards/42"), "{err:?}");
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn other_4xx_are_bad_requests_with_the_message() {
    let server = MockServer::start().await;
    let body = r#"{"message": "limit must be a number"}"#;
    mount(&server, "/users", ResponseTemplate::new(400).set_body_raw(body, "application/json"), 1).await;
    let err = client(&server).users_page(PAGE).await.unwrap_err();
    assert!(matches!(&err, Error::BadRequest { status: 400, message, .. } if message == "limit must be a number"));
}

#[tokio::test]
async fn a_truncated_body_is_retried_then_a_decode_error_naming_the_route() {
    let server = MockServer::start().await;
    // A body cut short is a transport failure: retried like a dropped connection (5 attempts).
    mount(&server, "/cards", json_body(r#"[{"id": 1, "title": "Login fails on Saf"#), 5).await;
    let err = client(&server).cards_page(&kaiten_client::CardQuery::new(), PAGE).await.unwrap_err();
    let Error::Decode { route, reason, body_snippet } = &err else { panic!("{err:?}") };
    assert_eq!(route, "GET /cards");
    assert!(reason.contains("truncated"), "{reason}");
    assert!(body_snippet.starts_with(r#"[{"id": 1"#));
    assert!(err.to_string().contains("GET /cards"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_html_200_is_a_decode_error_and_is_not_parsed() {
    let server = MockServer::start().await;
    let html =
        format!("<!DOCTYPE html><html><head><title>Sign in</title></head><body>{}</body></html>", "x".repeat(500));
    mount(&server, "/spaces", ResponseTemplate::new(200).set_body_raw(html, "text/html; charset=utf-8"), 1).await;
    let err = client(&server).spaces().await.unwrap_err();
    let Error::Decode { route, reason, body_snippet } = &err else { panic!("{err:?}") };
    assert_eq!(route, "GET /spaces");
    assert!(reason.contains("text/html"), "{reason}");
    assert!(body_snippet.starts_with("<!DOCTYPE html>"));
    assert!(body_snippet.chars().count() <= 200);
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_a_decode_error() {
    let server = MockServer::start().await;
    mount(&server, "/users", json_body(r#"{"users": []}"#), 1).await;
    let err = client(&server).users_page(PAGE).await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode { route, reason, .. } if route == "GET /users" && reason.contains("array")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_record_without_an_id_is_a_decode_error_naming_the_entity() {
    let server = MockServer::start().await;
    mount(&server, "/tags", json_body(r#"[{"id": 1, "name": "ok"}, {"name": "no id"}]"#), 1).await;
    let err = client(&server).tags_page(PAGE).await.unwrap_err();
    let Error::Decode { route, reason, .. } = &err else { panic!("{err:?}") };
    assert_eq!(route, "GET /tags");
    assert!(reason.contains("tag record #1") && reason.contains("id"), "{reason}");

    let server = MockServer::start().await;
    mount(&server, "/cards/7", json_body(r#"{"title": "no id"}"#), 1).await;
    let err = client(&server).card(CardId(7)).await.unwrap_err();
    assert!(matches!(&err, Error::Decode { reason, .. } if reason.contains("card")), "{err:?}");
}

#[tokio::test]
async fn the_token_never_appears_in_debug_output_or_errors() {
    let server = MockServer::start().await;
    mount(&server, "/users/current", ResponseTemplate::new(401).set_body_string(format!("bad token {TOKEN}")), 1).await;
    let builder = builder(&server);
    assert!(!format!("{builder:?}").contains(TOKEN), "{builder:?}");
    let client = builder.build().unwrap();
    let debug = format!("{client:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
    assert_no_token(&client.current_user().await.unwrap_err());
    // Configuration errors name the bad value, never the token.
    let err = kaiten_client::KaitenClient::builder().base_url("ftp://x.kaiten.ru").token(TOKEN).build().unwrap_err();
    assert_no_token(&err);
    let err = kaiten_client::KaitenClient::builder().base_url(server.uri()).token(format!("{TOKEN}\n")).build();
    assert!(err.is_ok(), "surrounding whitespace is trimmed");
    let err =
        kaiten_client::KaitenClient::builder().base_url(server.uri()).token("bad\u{7f}token").build().unwrap_err();
    assert!(!err.to_string().contains("bad\u{7f}token"), "{err}");
}

#[tokio::test]
async fn cannot_reach_kaiten_names_the_url_without_its_password() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = kaiten_client::KaitenClient::builder()
        .base_url(format!("http://user:Secret123@127.0.0.1:{port}"))
        .token(TOKEN)
        .rate_limit(None)
        .retry_policy(RetryPolicy { max_attempts: 1, ..RetryPolicy::default() })
        .build()
        .unwrap();
    let err = client.spaces().await.unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    for text in [err.to_string(), format!("{err:?}"), anyhow_like(&err)] {
        assert!(!text.contains("Secret123"), "the password leaked: {text}");
    }
    assert!(err.to_string().contains(&format!("cannot reach Kaiten at http://user:***@127.0.0.1:{port}")), "{err}");
    assert_no_token(&err);
}
