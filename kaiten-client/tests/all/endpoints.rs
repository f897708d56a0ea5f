//! Every endpoint parses its real-shaped response.

use kaiten_client::{
    BoardId, CardId, CardQuery, CardState, ColumnId, Condition, PageRequest, PropertyId, Record, SpaceId,
};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer};

use crate::support::*;

async fn serve(server: &MockServer, route: &str, body: &str) {
    Mock::given(method("GET")).and(path(api(route))).respond_with(json_body(body)).expect(1).mount(server).await;
}

#[tokio::test]
async fn current_user_parses_and_sends_auth_accept_and_user_agent() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/users/current")))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("accept", "application/json"))
        .and(header("user-agent", concat!("kaiten-sync/", env!("CARGO_PKG_VERSION"))))
        .respond_with(json_body(CURRENT_USER))
        .expect(1)
        .mount(&server)
        .await;
    let me = client(&server).current_user().await.unwrap();
    assert_eq!(me.id, 11);
    assert_eq!(me.full_name.as_deref(), Some("Anna Petrova"));
    assert_eq!(me.activated, Some(true));
    assert_eq!(me.raw["work_time_settings"]["hours_per_day"], 8, "unknown fields survive in raw");
}

#[tokio::test]
async fn spaces_parse_with_embedded_boards_and_the_tree() {
    let server = MockServer::start().await;
    serve(&server, "/spaces", SPACES).await;
    let spaces = client(&server).spaces().await.unwrap();
    assert_eq!(spaces.len(), 2);
    assert_eq!(spaces[0].embedded_board_ids(), vec![201, 202]);
    assert_eq!(spaces[0].sort_order, Some(1.5));
    assert_eq!(spaces[0].parent_entity_uid, None);
    assert_eq!(spaces[1].parent_entity_uid, spaces[0].uid);
    assert_eq!(spaces[1].external_id.as_deref(), Some("MOB"));
    assert_eq!(spaces[0].raw["access"], "by_invite");
}

#[tokio::test]
async fn boards_of_a_space_parse() {
    let server = MockServer::start().await;
    serve(&server, "/spaces/101/boards", BOARDS).await;
    let boards = client(&server).boards(SpaceId(101)).await.unwrap();
    assert_eq!(boards.iter().map(|b| b.id).collect::<Vec<_>>(), vec![201, 202]);
    assert_eq!(boards[0].space_id, Some(SpaceId(101)));
    assert_eq!(boards[0].description.as_deref(), Some("Where the code happens"));
    assert_eq!(boards[1].sort_order, Some(2.25));
    assert_eq!(boards[1].external_id.as_deref(), Some("DSGN"));
}

#[tokio::test]
async fn columns_parse_with_subcolumns() {
    let server = MockServer::start().await;
    serve(&server, "/boards/201/columns", COLUMNS).await;
    let columns = client(&server).columns(BoardId(201)).await.unwrap();
    assert_eq!(columns.iter().map(|c| c.id).collect::<Vec<_>>(), vec![301, 302, 303]);
    assert_eq!(columns[1].column_type, Some(2));
    assert_eq!(columns[1].wip_limit, Some(5));
    assert_eq!(columns[0].column_id, None);
    let subs = columns[1].subcolumns();
    assert_eq!(
        subs.iter().map(|c| (c.id, c.column_id, c.board_id)).collect::<Vec<_>>(),
        vec![
            (ColumnId(311), Some(ColumnId(302)), Some(BoardId(201))),
            (ColumnId(312), Some(ColumnId(302)), Some(BoardId(201)))
        ]
    );
    assert!(columns[0].subcolumns().is_empty());
}

#[tokio::test]
async fn lanes_parse_in_every_condition() {
    let server = MockServer::start().await;
    serve(&server, "/boards/201/lanes", LANES).await;
    let lanes = client(&server).lanes(BoardId(201)).await.unwrap();
    let conditions: Vec<_> = lanes.iter().map(|l| l.condition).collect();
    assert_eq!(conditions, vec![Some(Condition::Live), Some(Condition::Archived), Some(Condition::Deleted)]);
    assert_eq!(lanes[1].wip_limit, Some(2));
    assert_eq!(lanes[2].external_id.as_deref(), Some("legacy"));
}

#[tokio::test]
async fn users_parse_and_include_deactivated_ones() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/users")))
        .and(query_param("include_inactive", "true"))
        .respond_with(json_body(USERS))
        .expect(1)
        .mount(&server)
        .await;
    let users = client(&server).users_page(PageRequest { limit: 100, offset: 0 }).await.unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0].email.as_deref(), Some("anna@example.com"));
    assert_eq!(users[0].role, Some(1));
    assert_eq!(users[1].is_virtual, Some(true));
    assert_eq!(users[1].activated, Some(false));
    assert_eq!(users[1].role, Some(3), "3 = deactivated");
}

/// Kaiten leaves deactivated users out of `GET /users` unless `include_inactive=true`: every page
/// of the whole listing asks for them.
#[tokio::test]
async fn every_page_of_users_asks_for_deactivated_ones() {
    let server = MockServer::start().await;
    let users: Vec<Value> = (1..=150)
        .map(|id| json!({"id": id, "activated": id % 10 != 0, "role": if id % 10 == 0 { 3 } else { 2 }}))
        .collect();
    let active: Vec<Value> = users.iter().filter(|u| u["activated"] == true).cloned().collect();
    Mock::given(method("GET"))
        .and(path(api("/users")))
        .and(query_param("include_inactive", "true"))
        .respond_with(Paged { items: users, max: 100 })
        .expect(2)
        .mount(&server)
        .await;
    // A request without the flag would see only active users.
    Mock::given(method("GET"))
        .and(path(api("/users")))
        .respond_with(Paged { items: active, max: 100 })
        .mount(&server)
        .await;
    let listed = client(&server).users().await.unwrap();
    assert_eq!(listed.len(), 150);
    assert_eq!(listed.iter().filter(|u| u.activated == Some(false)).count(), 15);
}

#[tokio::test]
async fn card_types_parse() {
    let server = MockServer::start().await;
    serve(&server, "/card-types", CARD_TYPES).await;
    let types = client(&server).card_types_page(PageRequest { limit: 100, offset: 0 }).await.unwrap();
    assert_eq!(types.iter().map(|t| t.letter.as_deref()).collect::<Vec<_>>(), vec![Some("C"), Some("B"), Some("E")]);
    assert_eq!(types[2].archived, Some(true));
    assert_eq!(types[1].color, Some(3));
}

#[tokio::test]
async fn tags_parse() {
    let server = MockServer::start().await;
    serve(&server, "/tags", TAGS).await;
    let tags = client(&server).tags_page(PageRequest { limit: 100, offset: 0 }).await.unwrap();
    assert_eq!(tags.iter().map(|t| t.name.as_deref()).collect::<Vec<_>>(), vec![Some("backend"), Some("urgent")]);
    assert_eq!(tags[1].archived, Some(true));
}

#[tokio::test]
async fn custom_property_definitions_parse() {
    let server = MockServer::start().await;
    serve(&server, "/company/custom-properties", CUSTOM_PROPERTIES).await;
    let defs = client(&server).property_definitions_page(PageRequest { limit: 500, offset: 0 }).await.unwrap();
    assert_eq!(defs.len(), 4);
    assert!(defs[0].is_select());
    assert_eq!(defs[0].condition, Some(Condition::Live), "Kaiten sends the condition as \"active\"");
    assert_eq!(defs[2].condition, Some(Condition::Archived));
    assert_eq!(defs[2].property_type.as_deref(), Some("user"));
    assert_eq!(defs[2].multi_select, Some(true));
}

#[tokio::test]
async fn select_values_parse_and_ask_for_every_condition() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/company/custom-properties/501/select-values")))
        .and(query_param("v2_select_search", "true"))
        .and(query_param("conditions[]", "active"))
        .and(query_param("conditions[]", "inactive"))
        .and(query_param("limit", "100"))
        .and(query_param("offset", "0"))
        .respond_with(json_body(SELECT_VALUES))
        .expect(1)
        .mount(&server)
        .await;
    // A short first page of three values is the whole list: no second request.
    let values = client(&server).select_values(PropertyId(501)).await.unwrap();
    assert_eq!(values.iter().map(|v| v.id).collect::<Vec<_>>(), vec![701, 702, 703]);
    assert_eq!(values[0].custom_property_id, Some(PropertyId(501)));
    assert_eq!(values[2].condition, Some(Condition::Archived), "\"inactive\"");
    assert!(values[2].is_removed(), "deleted: true");
    assert!(!values[0].is_removed());
    assert_eq!(values[2].sort_order, Some(3.5));
}

#[tokio::test]
async fn one_page_of_select_values_asks_for_every_condition_too() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/company/custom-properties/501/select-values")))
        .and(query_param("v2_select_search", "true"))
        .and(query_param("conditions[]", "active"))
        .and(query_param("conditions[]", "inactive"))
        .and(query_param("limit", "100"))
        .respond_with(json_body(SELECT_VALUES))
        .expect(1)
        .mount(&server)
        .await;
    let values =
        client(&server).select_values_page(PropertyId(501), PageRequest { limit: 500, offset: 0 }).await.unwrap();
    assert_eq!(values.len(), 3);
}

/// Date-only dates (`due_date` as some clients write it) parse as midnight UTC instead of `None`.
#[tokio::test]
async fn date_only_dates_parse() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/cards/7",
        r#"{"id": 7, "due_date": "2024-12-31", "created": "2024-10-14T10:48:16.594Z", "updated": "2024-10-14T13:48:16+03:00", "completed_at": "2024-11-01 09:30:00"}"#,
    )
    .await;
    let card = client(&server).card(CardId(7)).await.unwrap();
    assert_eq!(card.due_date.unwrap().to_rfc3339(), "2024-12-31T00:00:00+00:00");
    assert_eq!(card.updated.unwrap().to_rfc3339(), "2024-10-14T10:48:16+00:00");
    assert_eq!(card.completed_at.unwrap().to_rfc3339(), "2024-11-01T09:30:00+00:00");
    assert_eq!(card.created.unwrap().timestamp_millis(), 1_728_902_896_594);
}

#[tokio::test]
async fn cards_parse_with_properties_and_send_broken_api_false() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/cards")))
        .and(query_param("broken_api", "false"))
        .and(query_param("board_id", "201"))
        .and(query_param("updated_after", "2024-10-01T00:00:00.000Z"))
        .and(query_param("order_by", "updated"))
        .and(query_param("order_direction", "asc"))
        .and(query_param("additional_card_fields", "description"))
        .and(query_param("limit", "100"))
        .and(query_param("offset", "0"))
        .respond_with(json_body(CARDS))
        .expect(1)
        .mount(&server)
        .await;
    let mut query = CardQuery::new();
    query.board_id = Some(BoardId(201));
    query.updated_after = Some("2024-10-01T00:00:00Z".parse().unwrap());
    query.order_by = Some("updated".into());
    query.order_direction = Some(kaiten_client::OrderDirection::Asc);
    query.additional_card_fields = vec!["description".into()];
    let cards = client(&server).cards_page(&query, PageRequest { limit: 100, offset: 0 }).await.unwrap();
    assert_eq!(cards.len(), 3);
    let card = &cards[0];
    assert_eq!(card.state, Some(CardState::InProgress));
    assert_eq!(card.properties["id_501"], json!([701]));
    assert_eq!(card.properties["id_502"]["tzOffset"], 180);
    assert_eq!(card.properties["id_503"], json!([11, 12]));
    assert_eq!(card.properties["id_505"], json!(true));
    assert_eq!(card.tag_ids, vec![601, 602]);
    assert_eq!(card.version, Some(17));
    assert_eq!(card.sort_order, Some(12.75));
    assert_eq!(card.updated.unwrap().timestamp_millis(), 1_728_902_896_594);
    assert!(cards[1].is_archived());
    assert!(cards[1].properties.is_empty(), "null properties become an empty map");
    assert_eq!(cards[1].type_id, None);
}

#[tokio::test]
async fn one_card_parses_with_its_expanded_relations_in_raw() {
    let server = MockServer::start().await;
    serve(&server, "/cards/9001", CARD).await;
    let card = client(&server).card(CardId(9001)).await.unwrap();
    assert_eq!(card.id, 9001);
    assert_eq!(card.children_ids, vec![9003]);
    assert_eq!(card.raw["members"].as_array().unwrap().len(), 2);
    assert_eq!(card.raw["checklists"][0]["items"][0]["text"], "Safari 17");
}

#[tokio::test]
async fn unknown_fields_survive_in_raw() {
    let server = MockServer::start().await;
    serve(&server, "/cards", CARDS).await;
    let cards = client(&server).cards_page(&CardQuery::new(), PageRequest { limit: 10, offset: 0 }).await.unwrap();
    let fixture: Value = serde_json::from_str(CARDS).unwrap();
    for (card, original) in cards.iter().zip(fixture.as_array().unwrap()) {
        assert_eq!(card.raw(), original, "raw is the object exactly as sent");
    }
    assert_eq!(cards[0].raw["path_data"]["board"]["title"], "Development");
    assert_eq!(cards[0].raw["comments_total"], 4);
}

#[tokio::test]
async fn missing_optional_fields_parse_as_none() {
    let server = MockServer::start().await;
    serve(&server, "/tags", r#"[{"id": 1}, {"id": 2, "name": null, "color": "not a number", "updated": "yesterday"}]"#)
        .await;
    let tags = client(&server).tags_page(PageRequest { limit: 100, offset: 0 }).await.unwrap();
    assert_eq!(tags.len(), 2);
    assert_eq!((tags[0].name.clone(), tags[0].color, tags[0].updated), (None, None, None));
    assert_eq!((tags[1].name.clone(), tags[1].color, tags[1].updated), (None, None, None));
    let server = MockServer::start().await;
    serve(&server, "/cards/5", r#"{"id": 5}"#).await;
    let card = client(&server).card(CardId(5)).await.unwrap();
    assert_eq!((card.title, card.board_id, card.state), (None, None, None));
    assert!(card.tag_ids.is_empty());
}

#[tokio::test]
async fn a_custom_base_path_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).and(path("/api/v1/spaces")).respond_with(json_body("[]")).expect(1).mount(&server).await;
    let client = builder(&server).base_url(format!("{}/api/v1/", server.uri())).build().unwrap();
    assert!(client.spaces().await.unwrap().is_empty());
}

#[tokio::test]
async fn get_json_reaches_untyped_routes() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/spaces/101")))
        .and(query_param("x", "1"))
        .respond_with(json_body(r#"{"id": 101}"#))
        .expect(1)
        .mount(&server)
        .await;
    let value = client(&server).get_json("spaces/101", &[("x", "1")]).await.unwrap();
    assert_eq!(value, json!({"id": 101}));
}
