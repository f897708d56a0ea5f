//! The client-side rate limiter and the server's rate-limit headers, measured on tokio's paused clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kaiten_client::KaitenClient;
use tokio::time::Instant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

async fn tags_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET")).and(path(api("/tags"))).respond_with(json_body("[]")).mount(&server).await;
    server
}

fn limited(server: &MockServer, per_second: f64) -> KaitenClient {
    builder(server).rate_limit(Some(per_second)).no_timeouts().build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn sequential_requests_never_exceed_the_rate() {
    let server = tags_server().await;
    let client = limited(&server, 5.0);
    let start = Instant::now();
    let mut done_at = Vec::new();
    for _ in 0..20 {
        client.tags_page(kaiten_client::PageRequest { limit: 100, offset: 0 }).await.unwrap();
        done_at.push(start.elapsed());
    }
    // 20 requests at 5/s: the first at once, the 20th no earlier than 19 × 200 ms.
    assert!(start.elapsed() >= Duration::from_millis(3800), "{:?}", start.elapsed());
    for (k, at) in done_at.iter().enumerate() {
        assert!(*at >= Duration::from_millis(200) * u32::try_from(k).unwrap(), "request {k} done at {at:?}");
    }
    assert_eq!(client.stats().requests, 20);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_limiter() {
    let server = tags_server().await;
    let client = builder(&server).rate_limit(Some(10.0)).max_concurrent_requests(8).no_timeouts().build().unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client.tags_page(kaiten_client::PageRequest { limit: 100, offset: 0 }).await.unwrap();
                start.elapsed()
            })
        })
        .collect();
    let mut done_at = Vec::new();
    for task in tasks {
        done_at.push(task.await.unwrap());
    }
    done_at.sort();
    // However the 16 concurrent requests interleave, the k-th to finish was sent no earlier than slot k.
    for (k, at) in done_at.iter().enumerate() {
        assert!(*at >= Duration::from_millis(100) * u32::try_from(k).unwrap(), "request {k} done at {at:?}");
    }
    assert_eq!(client.stats().requests, 16, "the stats are shared by the clones too");
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_window_holds_the_next_request_until_the_reset() {
    let server = MockServer::start().await;
    let reset = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3;
    Mock::given(method("GET"))
        .and(path(api("/tags")))
        .respond_with(
            json_body("[]")
                .insert_header("X-RateLimit-Remaining", "0")
                .insert_header("X-RateLimit-Reset", reset.to_string().as_str()),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path(api("/tags"))).respond_with(json_body("[]")).mount(&server).await;
    let client = builder(&server).no_timeouts().build().unwrap();
    let page = kaiten_client::PageRequest { limit: 100, offset: 0 };
    client.tags_page(page).await.unwrap();
    let held = Instant::now();
    client.tags_page(page).await.unwrap();
    // The reset is 2-3 s away in whole seconds of the real clock; the hold is on tokio's clock.
    assert!(held.elapsed() >= Duration::from_secs(1), "{:?}", held.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_waits_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/tags")))
        .respond_with(too_many_requests().insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path(api("/tags"))).respond_with(json_body(TAGS)).expect(1).mount(&server).await;
    let client = builder(&server).no_timeouts().build().unwrap();
    let start = Instant::now();
    let tags = client.tags_page(kaiten_client::PageRequest { limit: 100, offset: 0 }).await.unwrap();
    assert_eq!(tags.len(), 2);
    assert!(start.elapsed() >= Duration::from_secs(1), "{:?}", start.elapsed());
    assert_eq!(client.stats(), kaiten_client::ClientStats { requests: 2, retries: 1, rate_limited: 1 });
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_falls_back_to_the_reset_header() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/tags")))
        .respond_with(too_many_requests().insert_header("X-RateLimit-Reset", "2"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path(api("/tags"))).respond_with(json_body("[]")).expect(1).mount(&server).await;
    let client = builder(&server).no_timeouts().build().unwrap();
    let start = Instant::now();
    client.tags_page(kaiten_client::PageRequest { limit: 100, offset: 0 }).await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(2), "{:?}", start.elapsed());
}

#[tokio::test]
async fn the_concurrency_limit_bounds_requests_in_flight() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/tags")))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("[]", "application/json").set_delay(Duration::from_millis(100)),
        )
        .expect(4)
        .mount(&server)
        .await;
    let client = builder(&server).max_concurrent_requests(1).build().unwrap();
    let start = std::time::Instant::now();
    let page = kaiten_client::PageRequest { limit: 100, offset: 0 };
    let results = futures::future::join_all((0..4).map(|_| client.tags_page(page))).await;
    assert!(results.iter().all(Result::is_ok));
    // One at a time: four 100 ms answers take at least 400 ms (a lower bound, never flaky).
    assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
}
