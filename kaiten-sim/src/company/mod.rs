//! The generated company: every entity as the JSON object the server sends, plus the mutations.

use std::collections::HashMap;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::cards::CardStore;
use crate::config::{SimConfig, WebhookDenial};
pub(crate) use crate::shape::{parse_ts_ms, ts, Obj};

/// 2026-01-01T00:00:00Z: every generated timestamp lies in the year before it.
pub(crate) const EPOCH_MS: i64 = 1_767_225_600_000;
const DAY_MS: i64 = 86_400_000;
const COMPANY_ID: i64 = 4242;

const USER_BASE: i64 = 1_000;
const SPACE_BASE: i64 = 100_000;
const BOARD_BASE: i64 = 200_000;
const COLUMN_BASE: i64 = 300_000;
const LANE_BASE: i64 = 400_000;
const TAG_BASE: i64 = 500_000;
const TYPE_BASE: i64 = 600_000;
const PROP_BASE: i64 = 700_000;
const SELECT_BASE: i64 = 800_000;
const CARD_BASE: i64 = 10_000_000;
const EXTERNAL_WEBHOOK_BASE: i64 = 900_000;

/// Longest URL an external webhook accepts, in characters (Kaiten's limit).
pub(crate) const EXTERNAL_WEBHOOK_URL_MAX: usize = 4096;

/// Builds a JSON object from `"key" => value` pairs (anything `Into<Value>`).
macro_rules! obj {
    ($($k:literal => $v:expr),* $(,)?) => {{
        let mut m = serde_json::Map::new();
        $( m.insert($k.to_owned(), serde_json::Value::from($v)); )*
        m
    }};
}

fn uid(rng: &mut StdRng) -> String {
    let mut a: u128 = rng.random();
    a = (a & !(0xF000u128 << 64)) | (0x4000u128 << 64);
    a = (a & !(0b11u128 << 62)) | (0b10u128 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 96,
        (a >> 80) & 0xffff,
        (a >> 64) & 0xffff,
        (a >> 48) & 0xffff,
        a & 0xffff_ffff_ffff
    )
}

fn int(obj: &Obj, key: &str) -> Option<i64> {
    obj.get(key).and_then(Value::as_i64)
}

fn sort_f(obj: &Obj) -> f64 {
    obj.get("sort_order").and_then(Value::as_f64).unwrap_or(0.0)
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn named(names: &[&str], i: usize) -> String {
    let base = names[i % names.len()];
    match i / names.len() {
        0 => base.to_owned(),
        n => format!("{base} {}", n + 1),
    }
}

const FIRST_NAMES: [&str; 20] = [
    "Anna", "Boris", "Clara", "Dmitry", "Elena", "Fedor", "Galina", "Igor", "Julia", "Kirill", "Lidia", "Maxim",
    "Nina", "Oleg", "Polina", "Roman", "Sofia", "Timur", "Uliana", "Viktor",
];
const LAST_NAMES: [&str; 10] =
    ["Ivanova", "Petrov", "Smirnova", "Kuznetsov", "Popova", "Sokolov", "Lebedeva", "Kozlov", "Novikova", "Morozov"];
const TYPE_NAMES: [&str; 8] = ["Card", "Bug", "Feature", "Task", "Epic", "Request", "Incident", "Story"];
const TAG_NAMES: [&str; 12] = [
    "urgent",
    "backend",
    "frontend",
    "customer",
    "tech-debt",
    "design",
    "security",
    "ops",
    "research",
    "docs",
    "mobile",
    "billing",
];
const PROP_TYPES: [&str; 8] = ["string", "number", "date", "checkbox", "select", "user", "url", "email"];
const PROP_NAMES: [&str; 8] =
    ["Customer", "Story points", "Release date", "Approved", "Priority", "Reviewer", "Spec link", "Contact email"];
const SPACE_NAMES: [&str; 8] =
    ["Product", "Engineering", "Marketing", "Support", "Operations", "Sales", "Design", "Finance"];
const BOARD_NAMES: [&str; 10] =
    ["Roadmap", "Sprint", "Bugs", "Releases", "Requests", "Design review", "Ops", "Backlog", "Hiring", "Content"];
const PROGRESS_COLUMNS: [&str; 5] = ["In progress", "Review", "Testing", "Staging", "Waiting"];
const SUBCOLUMN_NAMES: [&str; 4] = ["Doing", "Blocked", "Ready", "Waiting"];
const LANE_NAMES: [&str; 5] = ["Default", "Expedite", "Team A", "Team B", "Maintenance"];
const VERBS: [&str; 12] = [
    "Fix",
    "Add",
    "Update",
    "Refactor",
    "Investigate",
    "Design",
    "Document",
    "Remove",
    "Migrate",
    "Test",
    "Review",
    "Optimize",
];
const OBJECTS: [&str; 15] = [
    "login page",
    "billing export",
    "search index",
    "onboarding flow",
    "API rate limiter",
    "mobile push",
    "report builder",
    "user settings",
    "invoice PDF",
    "webhook retries",
    "dashboard",
    "SSO integration",
    "audit log",
    "CSV import",
    "notification emails",
];
const QUALIFIERS: [&str; 8] = [
    "",
    " for enterprise customers",
    " on Android",
    " in Safari",
    " after release 4.2",
    " (customer request)",
    " before Q3",
    " - follow-up",
];

/// Where a card can live on a board: a column without subcolumns, or a subcolumn.
#[derive(Clone, Copy)]
struct Leaf {
    column_id: i64,
    column_type: i64,
}

/// Everything a card object is built from.
struct CardSeed {
    id: i64,
    uid: String,
    title: String,
    description: Option<String>,
    board_id: i64,
    column_id: i64,
    lane_id: Option<i64>,
    state: i64,
    owner_id: i64,
    type_id: Option<i64>,
    sort_order: f64,
    version: i64,
    size: Option<i64>,
    due_date: Option<i64>,
    /// `due_date` as a date only (`"2025-03-01"`) rather than a timestamp.
    due_date_only: bool,
    external_id: Option<String>,
    properties: Obj,
    tag_ids: Vec<i64>,
    parents_ids: Vec<i64>,
    children_ids: Vec<i64>,
    created: i64,
    updated: i64,
    last_moved_at: i64,
    archived: bool,
    asap: bool,
    blocked: bool,
    comments_total: i64,
}

fn card_object(s: CardSeed, path_data: Value) -> Obj {
    let done = s.state == 3;
    let description_filled = s.description.is_some();
    obj! {
        "id" => s.id,
        "uid" => s.uid,
        "description" => s.description,
        "state" => s.state,
        "condition" => if s.archived { 2 } else { 1 },
        "archived" => s.archived,
        "asap" => s.asap,
        "blocked" => s.blocked,
        "blocking_card" => false,
        "board_id" => s.board_id,
        "column_id" => s.column_id,
        "lane_id" => s.lane_id,
        "owner_id" => s.owner_id,
        "updater_id" => s.owner_id,
        "type_id" => s.type_id,
        "sort_order" => s.sort_order,
        "version" => s.version,
        "size" => s.size,
        "size_text" => s.size.map(|v| v.to_string()),
        "size_unit" => Value::Null,
        "due_date" => s.due_date.map(|d| if s.due_date_only { ts(d)[..10].to_owned() } else { ts(d) }),
        "due_date_time_present" => false,
        "expires_later" => false,
        "external_id" => s.external_id,
        "properties" => s.properties,
        "tag_ids" => s.tag_ids,
        "parents_count" => s.parents_ids.len(),
        "children_count" => s.children_ids.len(),
        "parents_ids" => s.parents_ids,
        "children_ids" => s.children_ids,
        "children_done" => 0,
        "has_blocked_children" => false,
        "comments_total" => s.comments_total,
        "comment_last_added_at" => (s.comments_total > 0).then(|| ts(s.last_moved_at)),
        "created" => ts(s.created),
        "updated" => ts(s.updated),
        "last_moved_at" => ts(s.last_moved_at),
        "lane_changed_at" => ts(s.created),
        "column_changed_at" => ts(s.last_moved_at),
        "first_moved_to_in_progress_at" => (s.state >= 2).then(|| ts(s.created + (s.last_moved_at - s.created) / 2)),
        "last_moved_to_done_at" => done.then(|| ts(s.last_moved_at)),
        "completed_at" => done.then(|| ts(s.last_moved_at)),
        "completed_on_time" => Value::Null,
        "public" => false,
        "share_id" => Value::Null,
        "service_id" => Value::Null,
        "sprint_id" => Value::Null,
        "source" => "app",
        "time_spent_sum" => 0,
        "time_blocked_sum" => 0,
        "estimate_workload" => 0,
        "description_filled" => description_filled,
        "fifo_order" => Value::Null,
        "title" => s.title,
        "locked" => Value::Null,
        "path_data" => path_data,
    }
}

/// The whole company.
pub(crate) struct Company {
    pub spaces: Vec<Obj>,
    pub boards: Vec<Obj>,
    /// All columns, top-level and subcolumns.
    pub columns: Vec<Obj>,
    pub lanes: Vec<Obj>,
    pub users: Vec<Obj>,
    pub tags: Vec<Obj>,
    pub card_types: Vec<Obj>,
    pub props: Vec<Obj>,
    pub select_values: Vec<Obj>,
    pub cards: CardStore,
    /// The greatest timestamp handed out so far (ms); mutations stamp strictly after it.
    last_stamp: i64,
    /// Boards, columns and lanes removed so far: new ones get ids after every id ever handed out
    /// (Kaiten never reuses an id).
    removed: Removed,
    rng: StdRng,
    /// External webhooks registered through the API (at most one per space), as served.
    pub external_webhooks: Vec<Obj>,
    /// Spaces whose external-webhook routes answer 402 or 403.
    pub webhook_denials: HashMap<i64, WebhookDenial>,
}

/// Webhook bodies produced by a mutation.
pub(crate) type Events = Vec<Value>;

/// How many entities of each kind were removed from the company.
#[derive(Default)]
struct Removed {
    boards: usize,
    columns: usize,
    lanes: usize,
}

mod generate;
mod hooks;
mod mutations;
mod views;

pub(crate) use hooks::HookError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_2026() {
        assert_eq!(ts(EPOCH_MS), "2026-01-01T00:00:00.000Z");
        assert_eq!(parse_ts_ms("2026-01-01T00:00:00.000Z"), Some(EPOCH_MS));
    }

    #[test]
    fn uids_look_like_v4() {
        let mut rng = StdRng::seed_from_u64(1);
        let u = uid(&mut rng);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
