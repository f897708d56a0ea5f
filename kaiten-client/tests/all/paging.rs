//! Paging to the end, and the guards that keep misbehaving routes finite and duplicate-free.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use kaiten_client::{CardQuery, Error, PropertyId, Record, SpaceId};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

fn assert_unique<T: Record>(records: &[T]) {
    let ids: HashSet<i64> = records.iter().map(Record::id).collect();
    assert_eq!(ids.len(), records.len(), "no record is yielded twice");
}

#[tokio::test]
async fn users_page_to_the_end() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/users")))
        .respond_with(Paged { items: records(1, 250), max: 100 })
        .expect(3) // offsets 0, 100, 200 (50 rows: the last page)
        .mount(&server)
        .await;
    let users = client(&server).users().await.unwrap();
    assert_eq!(users.iter().map(|u| u.id).collect::<Vec<_>>(), (1..=250).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_exact_multiple_ends_on_an_empty_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/tags")))
        .respond_with(Paged { items: records(1, 200), max: 100 })
        .expect(3) // 100, 100, 0
        .mount(&server)
        .await;
    assert_eq!(client(&server).tags().await.unwrap().len(), 200);
}

#[tokio::test]
async fn cards_stream_pages_through_cards_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/cards")))
        .and(query_param("broken_api", "false"))
        .and(query_param("space_id", "101"))
        .and(query_param("limit", "100"))
        .respond_with(Paged { items: records(1000, 230), max: 100 })
        .expect(3)
        .mount(&server)
        .await;
    let mut query = CardQuery::new();
    query.space_id = Some(SpaceId(101));
    let client = client(&server);
    let cards: Vec<_> = client.cards_stream(query).try_collect().await.unwrap();
    assert_eq!(cards.len(), 230);
    assert_unique(&cards);
    assert_eq!(client.stats().requests, 3);
}

#[tokio::test]
async fn a_clamped_limit_still_pages_to_the_end() {
    // We ask 500 custom properties a page; this server silently clamps to 100.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/company/custom-properties")))
        .respond_with(Paged { items: records(1, 250), max: 100 })
        .expect(3)
        .mount(&server)
        .await;
    let defs = client(&server).property_definitions().await.unwrap();
    assert_eq!(defs.iter().map(|d| d.id).collect::<Vec<_>>(), (1..=250).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_route_that_ignores_paging_is_listed_once() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/card-types")))
        .respond_with(always(&records(1, 150)))
        .expect(1) // 150 rows for limit 100: the whole list
        .mount(&server)
        .await;
    let types = client(&server).card_types().await.unwrap();
    assert_eq!(types.len(), 150);
    assert_unique(&types);
}

#[tokio::test]
async fn a_short_list_from_a_route_that_ignores_offset_terminates() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/tags")))
        .respond_with(always(&records(1, 7)))
        .expect(1) // a short first page of odd length is the whole list
        .mount(&server)
        .await;
    let tags = client(&server).tags().await.unwrap();
    assert_eq!(tags.len(), 7);
    assert_unique(&tags);
}

#[tokio::test]
async fn a_repeated_identical_page_terminates_without_duplicates() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/users")))
        .respond_with(always(&records(1, 100)))
        .expect(2)
        .mount(&server)
        .await;
    let users: Vec<_> = client(&server).users_stream().try_collect().await.unwrap();
    assert_eq!(users.len(), 100);
    assert_unique(&users);
}

#[tokio::test]
async fn select_values_page_to_the_end() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/company/custom-properties/501/select-values")))
        .and(query_param("v2_select_search", "true"))
        .respond_with(Paged { items: records(1, 120), max: 100 })
        .expect(2)
        .mount(&server)
        .await;
    assert_eq!(client(&server).select_values(PropertyId(501)).await.unwrap().len(), 120);
}

#[tokio::test]
async fn an_error_mid_stream_is_yielded_once_and_ends_the_stream() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/users")))
        .and(query_param("offset", "0"))
        .respond_with(always(&records(1, 100)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("/users")))
        .and(query_param("offset", "100"))
        .respond_with(ResponseTemplate::new(403))
        .expect(1)
        .mount(&server)
        .await;
    let items: Vec<_> = client(&server).users_stream().collect().await;
    assert_eq!(items.len(), 101);
    assert!(items[..100].iter().all(Result::is_ok));
    assert!(matches!(&items[100], Err(Error::Forbidden { route }) if route == "GET /users"));
}
