//! The simulator is at least as strict as the real Kaiten: each trap of `kaiten-api.md` ("Traps a
//! faithful mirror must survive") is here, in the default preset and through the mutations.

mod common;

use std::collections::HashSet;

use common::{all_cards, get, get_list, ids};
use kaiten_sim::{SimConfig, Simulator};
use serde_json::{json, Value};

/// Pages through a list route with `limit=100` until a short page.
async fn all_pages(sim: &Simulator, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let page = get_list(sim, &format!("{path}{sep}limit=100&offset={}", out.len())).await;
        let n = page.len();
        out.extend(page);
        if n < 100 {
            return out;
        }
    }
}

fn id_set(items: &[Value]) -> HashSet<i64> {
    items.iter().map(|v| v["id"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn deactivated_users_are_hidden_unless_asked_for_yet_cards_name_them() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let all = sim.users_json();
    assert!(all.len() > 100, "more users than one page");
    let inactive: HashSet<i64> =
        all.iter().filter(|u| u["activated"] == false).map(|u| u["id"].as_i64().unwrap()).collect();
    assert_eq!(inactive.len(), 5);
    assert!(all.iter().filter(|u| u["activated"] == false).all(|u| u["role"] == 3), "role 3 = deactivated");

    let listed = all_pages(&sim, "/users").await;
    assert_eq!(listed.len(), all.len() - inactive.len());
    assert!(id_set(&listed).is_disjoint(&inactive), "plain GET /users leaves deactivated users out");
    let with_inactive = all_pages(&sim, "/users?include_inactive=true").await;
    assert_eq!(with_inactive, all, "include_inactive=true lists everyone, over two pages");
    assert_eq!(get(&sim, "/users?include_inactive=perhaps").await.status(), 400);

    // Cards still point at deactivated users: as owner and in user-type properties.
    let user_prop = sim.custom_properties_json().into_iter().find(|p| p["type"] == "user").unwrap();
    let key = format!("id_{}", user_prop["id"]);
    let cards = sim.cards_json();
    assert!(cards.iter().any(|c| inactive.contains(&c["owner_id"].as_i64().unwrap())));
    assert!(cards.iter().any(|c| c["properties"][&key][0].as_i64().is_some_and(|u| inactive.contains(&u))));

    // Deactivating one more: gone from the plain list, still an owner.
    let owner = cards
        .iter()
        .map(|c| c["owner_id"].as_i64().unwrap())
        .find(|u| !inactive.contains(u) && *u != all[0]["id"])
        .unwrap();
    sim.deactivate_user(owner);
    assert!(!id_set(&all_pages(&sim, "/users").await).contains(&owner));
    let user = sim.users_json().into_iter().find(|u| u["id"] == owner).unwrap();
    assert_eq!((user["activated"].as_bool(), user["role"].as_i64()), (Some(false), Some(3)));
    assert!(id_set(&all_pages(&sim, "/users?include_inactive=true").await).contains(&owner));
    assert!(sim.cards_json().iter().any(|c| c["owner_id"] == owner));
}

#[tokio::test]
async fn lanes_come_in_every_condition_unless_filtered() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let board = sim.board_ids()[0];
    let lanes = get_list(&sim, &format!("/boards/{board}/lanes")).await;
    assert_eq!(lanes, sim.lanes_json(board));
    let archived: Vec<&Value> = lanes.iter().filter(|l| l["condition"] == 2).collect();
    assert_eq!((lanes.len(), archived.len()), (3, 1));
    assert_eq!(get_list(&sim, &format!("/boards/{board}/lanes?condition=2")).await, [archived[0].clone()]);
    assert_eq!(get_list(&sim, &format!("/boards/{board}/lanes?condition=1")).await.len(), 2);
    assert!(get_list(&sim, &format!("/boards/{board}/lanes?condition=3")).await.is_empty());
    assert_eq!(get(&sim, &format!("/boards/{board}/lanes?condition=9")).await.status(), 400);
    // No card is put in an archived lane.
    let archived_ids: HashSet<i64> = sim
        .board_ids()
        .iter()
        .flat_map(|b| sim.lanes_json(*b))
        .filter(|l| l["condition"] == 2)
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert!(sim.cards_json().iter().all(|c| !archived_ids.contains(&c["lane_id"].as_i64().unwrap())));
    let created = sim.create_card(board, "new");
    assert!(!archived_ids.contains(&created["lane_id"].as_i64().unwrap()));
}

#[tokio::test]
async fn archived_and_deleted_cards_are_not_in_the_default_listing() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let live: Vec<i64> =
        sim.cards_json().iter().filter(|c| c["condition"] == 1).map(|c| c["id"].as_i64().unwrap()).collect();
    let archived: Vec<i64> =
        sim.cards_json().iter().filter(|c| c["condition"] == 2).map(|c| c["id"].as_i64().unwrap()).collect();
    assert_eq!((live.len(), archived.len()), (54, 6));
    assert_eq!(ids(&all_cards(&sim, "").await), live);
    assert_eq!(ids(&all_cards(&sim, "condition=2").await), archived);
    assert_eq!(ids(&all_cards(&sim, "archived=true").await), archived);
    sim.delete_card(live[0]);
    sim.delete_card(archived[0]);
    assert_eq!(ids(&all_cards(&sim, "").await), live[1..].to_vec());
    assert_eq!(ids(&all_cards(&sim, "condition=2").await), archived[1..].to_vec());
    assert!(all_cards(&sim, "condition=3").await.is_empty());
    assert_eq!(get(&sim, &format!("/cards/{}", archived[0])).await.status(), 404);
}

#[tokio::test]
async fn select_values_list_only_active_ones_unless_conditions_ask() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let prop = sim.custom_properties_json().into_iter().find(|p| p["type"] == "select").unwrap();
    let prop_id = prop["id"].as_i64().unwrap();
    let all = sim.select_values_json(prop_id);
    let active: Vec<Value> = all.iter().filter(|v| v["condition"] == "active").cloned().collect();
    let inactive: Vec<Value> = all.iter().filter(|v| v["condition"] == "inactive").cloned().collect();
    assert_eq!((active.len(), inactive.len()), (3, 1));
    let path = format!("/company/custom-properties/{prop_id}/select-values");

    assert_eq!(get_list(&sim, &format!("{path}?v2_select_search=true")).await, active);
    assert_eq!(get_list(&sim, &path).await, active, "without v2 search: active values, filters ignored");
    assert_eq!(get_list(&sim, &format!("{path}?conditions=inactive")).await, active, "conditions need v2 search");
    for query in [
        "conditions[]=active&conditions[]=inactive",
        "conditions=active&conditions=inactive",
        "conditions=active,inactive",
        "conditions[]=inactive,active",
    ] {
        assert_eq!(get_list(&sim, &format!("{path}?v2_select_search=true&{query}")).await, all, "{query}");
    }
    assert_eq!(get_list(&sim, &format!("{path}?v2_select_search=true&conditions[]=inactive")).await, inactive);

    // Cards still hold the inactive value.
    let key = format!("id_{prop_id}");
    let inactive_id = inactive[0]["id"].as_i64().unwrap();
    assert!(sim.cards_json().iter().any(|c| c["properties"][&key] == json!([inactive_id])));

    // Removing a value: it leaves the default listing, stays in the inactive one, cards keep it,
    // and the property's `updated` does not move.
    let held = active
        .iter()
        .map(|v| v["id"].as_i64().unwrap())
        .find(|v| sim.cards_json().iter().any(|c| c["properties"][&key] == json!([*v])))
        .expect("a card holds an active value");
    sim.remove_select_value(prop_id, held);
    let listed = get_list(&sim, &format!("{path}?v2_select_search=true")).await;
    assert!(!id_set(&listed).contains(&held));
    let removed = get_list(&sim, &format!("{path}?v2_select_search=true&conditions[]=inactive")).await;
    let removed = removed.iter().find(|v| v["id"] == held).expect("listed as inactive");
    assert_eq!(removed["deleted"], true);
    assert!(sim.cards_json().iter().any(|c| c["properties"][&key] == json!([held])));
    let prop_after = sim.custom_properties_json().into_iter().find(|p| p["id"] == prop_id).unwrap();
    assert_eq!(prop_after["updated"], prop["updated"]);
}

#[tokio::test]
async fn tags_on_no_card_are_not_listed() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let all = sim.tags_json();
    let listed = get_list(&sim, "/tags").await;
    assert_eq!(listed, sim.listed_tags_json());
    assert_eq!(listed.len(), all.len() - 1, "the last tag is on no card");
    let unused = all.last().unwrap()["id"].as_i64().unwrap();
    assert!(sim.cards_json().iter().all(|c| !c["tag_ids"].as_array().unwrap().contains(&json!(unused))));
    // Taking a tag off its last card drops it from the list; it still exists.
    let tag = listed[0]["id"].as_i64().unwrap();
    for card in sim.cards_json() {
        let tags: Vec<i64> = card["tag_ids"].as_array().unwrap().iter().filter_map(Value::as_i64).collect();
        if tags.contains(&tag) {
            let rest: Vec<i64> = tags.into_iter().filter(|t| *t != tag).collect();
            sim.update_card(card["id"].as_i64().unwrap(), json!({"tag_ids": rest}));
        }
    }
    assert!(!id_set(&get_list(&sim, "/tags").await).contains(&tag));
    assert!(id_set(&sim.tags_json()).contains(&tag));
}

#[tokio::test]
async fn some_due_dates_are_date_only() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let dates: Vec<String> =
        sim.cards_json().iter().filter_map(|c| c["due_date"].as_str().map(str::to_owned)).collect();
    let date_only = dates.iter().filter(|d| d.len() == 10).count();
    assert!(date_only > 0 && date_only < dates.len(), "{dates:?}");
    for d in dates.iter().filter(|d| d.len() == 10) {
        assert!(chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok(), "{d}");
    }
}

#[tokio::test]
async fn renaming_columns_and_lanes_leaves_the_board_alone() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let board = sim.board_ids()[1];
    let before = sim.boards_json().into_iter().find(|b| b["id"] == board).unwrap();
    let columns = sim.column_ids(board);
    let sub = columns[2]; // the second top-level column's first subcolumn
    sim.rename_column(columns[0], "Intake");
    sim.rename_column(sub, "Pairing");
    let lane = sim.lane_ids(board)[0];
    sim.rename_lane(lane, "Fast track");
    let served = get_list(&sim, &format!("/boards/{board}/columns")).await;
    assert_eq!(served[0]["title"], "Intake");
    assert!(served
        .iter()
        .flat_map(|c| c["subcolumns"].as_array().unwrap())
        .any(|s| s["id"] == sub && s["title"] == "Pairing"));
    let lanes = get_list(&sim, &format!("/boards/{board}/lanes")).await;
    assert_eq!(lanes.iter().find(|l| l["id"] == lane).unwrap()["title"], "Fast track");
    assert!(lanes.iter().find(|l| l["id"] == lane).unwrap()["updated"].as_str() > before["updated"].as_str());
    let after = get_list(&sim, &format!("/spaces/{}/boards", before["space_id"])).await;
    assert_eq!(after.into_iter().find(|b| b["id"] == board).unwrap(), before, "the board's updated does not move");
}

#[test]
#[should_panic(expected = "unknown user id")]
fn deactivating_an_unknown_user_panics() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sim = runtime.block_on(Simulator::start(SimConfig::small())).unwrap();
    sim.deactivate_user(1);
}

#[test]
#[should_panic(expected = "has no select value")]
fn removing_an_unknown_select_value_panics() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sim = runtime.block_on(Simulator::start(SimConfig::small())).unwrap();
    sim.remove_select_value(1, 2);
}
