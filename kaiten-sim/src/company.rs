//! The generated company: every entity as the JSON object the server sends, plus the mutations.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use crate::cards::CardStore;
use crate::config::{SimConfig, WebhookDenial};

/// A JSON object.
pub(crate) type Obj = Map<String, Value>;

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

/// Formats milliseconds since the Unix epoch as Kaiten does: `2024-10-14T10:48:16.594Z`.
pub(crate) fn ts(ms: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis()
    )
}

/// Parses an RFC 3339 timestamp into milliseconds since the Unix epoch.
pub(crate) fn parse_ts_ms(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
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

impl Company {
    /// Generates the company `config` describes; deterministic in the seed.
    pub(crate) fn generate(config: &SimConfig) -> Company {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let t0 = EPOCH_MS - 365 * DAY_MS;
        let times = |rng: &mut StdRng| {
            let created = t0 + rng.random_range(0..20 * DAY_MS);
            (created, created + rng.random_range(0..10 * DAY_MS))
        };
        let mut c = Company {
            spaces: Vec::new(),
            boards: Vec::new(),
            columns: Vec::new(),
            lanes: Vec::new(),
            users: Vec::new(),
            tags: Vec::new(),
            card_types: Vec::new(),
            props: Vec::new(),
            select_values: Vec::new(),
            cards: CardStore::new(CARD_BASE + 1, Vec::new()),
            last_stamp: 0,
            removed: Removed::default(),
            rng: StdRng::seed_from_u64(config.seed ^ 0x5EED_0F51),
            external_webhooks: Vec::new(),
            webhook_denials: HashMap::new(),
        };

        let user_count = config.users.max(1);
        // The token's own user (the first) is never deactivated.
        let first_deactivated = user_count - config.deactivated_users.min(user_count - 1);
        for i in 0..user_count {
            let (created, updated) = times(&mut rng);
            let active = i < first_deactivated;
            let first = FIRST_NAMES[i % FIRST_NAMES.len()];
            let last = LAST_NAMES[(i + i / FIRST_NAMES.len()) % LAST_NAMES.len()];
            let suffix = if i >= FIRST_NAMES.len() { i.to_string() } else { String::new() };
            let username = format!("{}.{}{suffix}", first.to_lowercase(), last.to_lowercase());
            let initials = format!("{}{}", &first[..1], &last[..1]);
            let id = USER_BASE + 1 + i as i64;
            c.users.push(obj! {
                "id" => id,
                "uid" => uid(&mut rng),
                "full_name" => format!("{first} {last}"),
                "username" => username.as_str(),
                "email" => format!("{username}@example.com"),
                "activated" => active,
                "avatar_initials_url" => format!("https://sim.kaiten.ru/avatars/initials/{initials}.png"),
                "avatar_uploaded_url" => Value::Null,
                "initials" => initials,
                "avatar_type" => 2,
                "lng" => "en",
                "timezone" => "Europe/Moscow",
                "theme" => "light",
                "ui_version" => 2,
                "virtual" => false,
                "email_blocked" => Value::Null,
                "email_blocked_reason" => Value::Null,
                "delete_requested_at" => Value::Null,
                "created" => ts(created),
                "updated" => ts(updated),
                // 1 owner, 2 user, 3 deactivated.
                "role" => if i == 0 { 1 } else if active { 2 } else { 3 },
                "company_id" => COMPANY_ID,
                "user_id" => id,
                "external" => false,
                "last_request_date" => Value::Null,
            });
        }
        let owner = USER_BASE + 1;

        for i in 0..config.card_types {
            let (created, updated) = times(&mut rng);
            let name = named(&TYPE_NAMES, i);
            c.card_types.push(obj! {
                "id" => TYPE_BASE + 1 + i as i64,
                "uid" => uid(&mut rng),
                "name" => name.as_str(),
                "letter" => &name[..1],
                "color" => (i % 16 + 1) as i64,
                "description_template" => Value::Null,
                "company_id" => COMPANY_ID,
                "properties" => Obj::new(),
                "archived" => false,
                "suggest_fields" => false,
                "card_properties" => Vec::<Value>::new(),
                "locked" => Value::Null,
                "created" => ts(created),
                "updated" => ts(updated),
            });
        }

        for i in 0..config.tags {
            let (created, updated) = times(&mut rng);
            c.tags.push(Self::tag_object(
                TAG_BASE + 1 + i as i64,
                uid(&mut rng),
                &named(&TAG_NAMES, i),
                i,
                created,
                updated,
            ));
        }

        let mut select_id = SELECT_BASE;
        for i in 0..config.custom_properties {
            let (created, updated) = times(&mut rng);
            let kind = PROP_TYPES[i % PROP_TYPES.len()];
            let id = PROP_BASE + 1 + i as i64;
            let is_select = kind == "select";
            c.props.push(obj! {
                "id" => id,
                "uid" => uid(&mut rng),
                "name" => named(&PROP_NAMES, i),
                "type" => kind,
                "show_on_facade" => true,
                "multiline" => false,
                "fields_settings" => Value::Null,
                "author_id" => owner,
                "company_id" => COMPANY_ID,
                "created" => ts(created),
                "updated" => ts(updated),
                "condition" => "active",
                "colorful" => is_select,
                "multi_select" => is_select && (i / PROP_TYPES.len()) % 2 == 1,
                "values_creatable_by_users" => false,
                "data" => Value::Null,
                "values_type" => Value::Null,
                "vote_variant" => Value::Null,
                "protected" => false,
                "color" => Value::Null,
                "external_id" => Value::Null,
                "import_uid" => Value::Null,
                "is_used_as_progress" => false,
                "calculation_method" => Value::Null,
            });
            if is_select {
                let values: &[&str] = if i < PROP_TYPES.len() {
                    &["Low", "Medium", "High", "Critical"]
                } else {
                    &["Option A", "Option B", "Option C"]
                };
                for (k, value) in values.iter().enumerate() {
                    select_id += 1;
                    // The last value is no longer offered (inactive), but cards still hold it.
                    let condition = if k + 1 == values.len() { "inactive" } else { "active" };
                    c.select_values.push(obj! {
                        "id" => select_id,
                        "uid" => uid(&mut rng),
                        "custom_property_id" => id,
                        "value" => *value,
                        "color" => (k + 1) as i64,
                        "deleted" => false,
                        "condition" => condition,
                        "sort_order" => (k + 1) as f64,
                        "external_id" => Value::Null,
                        "created" => ts(created),
                        "updated" => ts(updated),
                        "author_id" => owner,
                        "company_id" => COMPANY_ID,
                    });
                }
            }
        }

        // Spaces, boards, columns, lanes.
        let mut layouts: Vec<(i64, Vec<Leaf>, Vec<i64>)> = Vec::new();
        for s in 0..config.spaces.max(1) {
            let (created, updated) = times(&mut rng);
            let id = SPACE_BASE + 1 + s as i64;
            let space_uid = uid(&mut rng);
            let parent = (s >= 2 && s % 3 == 2).then(|| c.spaces[s - 2].clone());
            let path = match &parent {
                Some(p) => format!("{}.{id}", p["path"].as_str().unwrap_or_default()),
                None => id.to_string(),
            };
            let space_title = named(&SPACE_NAMES, s);
            c.spaces.push(obj! {
                "id" => id,
                "uid" => space_uid.as_str(),
                "title" => space_title.as_str(),
                "created" => ts(created),
                "updated" => ts(updated),
                "archived" => false,
                "access" => "for_everyone",
                "for_everyone_access_role_id" => "b4a5a4c9-0d4f-4f5e-9d5e-0000000000a1",
                "entity_type" => "space",
                "path" => path,
                "sort_order" => (s + 1) as f64,
                "parent_entity_uid" => parent.as_ref().and_then(|p| p["uid"].as_str().map(str::to_owned)),
                "company_id" => COMPANY_ID,
                "allowed_card_type_ids" => Value::Null,
                "external_id" => Value::Null,
                "settings" => Obj::new(),
                "entity_uid" => space_uid.as_str(),
                "user_id" => owner,
                "access_mod" => "for_everyone",
            });
            for b in 0..config.boards_per_space.max(1) {
                let (created, updated) = times(&mut rng);
                let board_id = BOARD_BASE + 1 + c.boards.len() as i64;
                let title = format!("{space_title}: {}", named(&BOARD_NAMES, b));
                let board = c.board_object(board_id, id, &title, b, created, updated);
                c.boards.push(board);
                let ncols = config.columns_per_board.max(1);
                let with_subs = if ncols >= 2 { 1 } else { 0 };
                let mut leaves = Vec::new();
                for k in 0..ncols {
                    let kind = if k == 0 {
                        1
                    } else if k == ncols - 1 {
                        3
                    } else {
                        2
                    };
                    let title = match kind {
                        1 => "Queue".to_owned(),
                        3 => "Done".to_owned(),
                        _ => named(&PROGRESS_COLUMNS, k - 1),
                    };
                    let col_id = c.push_column(board_id, &title, kind, None, (k + 1) as f64, created);
                    if k == with_subs && config.subcolumns_per_column > 0 {
                        for j in 0..config.subcolumns_per_column {
                            let sub = c.push_column(
                                board_id,
                                &named(&SUBCOLUMN_NAMES, j),
                                kind,
                                Some(col_id),
                                (j + 1) as f64,
                                created,
                            );
                            leaves.push(Leaf { column_id: sub, column_type: kind });
                        }
                    } else {
                        leaves.push(Leaf { column_id: col_id, column_type: kind });
                    }
                }
                let live_lanes = config.lanes_per_board.max(1);
                let lanes = (0..live_lanes)
                    .map(|k| c.push_lane(board_id, &named(&LANE_NAMES, k), (k + 1) as f64, created))
                    .collect();
                for k in 0..config.archived_lanes_per_board {
                    let title = format!("Archived {}", k + 1);
                    let lane = c.push_lane(board_id, &title, (live_lanes + k + 1) as f64, created);
                    c.lane_mut(lane).insert("condition".to_owned(), json!(2));
                }
                layouts.push((board_id, leaves, lanes));
            }
        }

        c.generate_cards(config, &mut rng, &layouts);
        c.last_stamp = c.max_stamp();
        c
    }

    fn generate_cards(&mut self, config: &SimConfig, rng: &mut StdRng, layouts: &[(i64, Vec<Leaf>, Vec<i64>)]) {
        let n = config.cards;
        let span = (EPOCH_MS - 335 * DAY_MS)..(EPOCH_MS - 30 * DAY_MS);
        let mut created: Vec<i64> = (0..n).map(|_| rng.random_range(span.clone())).collect();
        created.sort_unstable();

        let archived_count = ((n as f64) * config.archived_ratio.clamp(0.0, 1.0)).round() as usize;
        let mut order: Vec<usize> = (0..n).collect();
        for i in 0..archived_count.min(n) {
            let j = rng.random_range(i..n);
            order.swap(i, j);
        }
        let mut archived = vec![false; n];
        for &i in &order[..archived_count.min(n)] {
            archived[i] = true;
        }

        let mut parents: Vec<Option<usize>> = vec![None; n];
        let mut children: Vec<Vec<i64>> = vec![Vec::new(); n];
        for (i, parent) in parents.iter_mut().enumerate().skip(1) {
            if rng.random_bool(0.08) {
                let p = rng.random_range(0..i);
                *parent = Some(p);
                children[p].push(CARD_BASE + 1 + i as i64);
            }
        }

        let user_ids: Vec<i64> = self.users.iter().filter_map(|u| int(u, "id")).collect();
        let deactivated: Vec<i64> = self
            .users
            .iter()
            .filter(|u| u.get("activated") == Some(&Value::Bool(false)))
            .filter_map(|u| int(u, "id"))
            .collect();
        let type_ids: Vec<i64> = self.card_types.iter().filter_map(|t| int(t, "id")).collect();
        let mut tag_ids: Vec<i64> = self.tags.iter().filter_map(|t| int(t, "id")).collect();
        if tag_ids.len() >= 2 {
            // The last tag stays on no card: `GET /tags` leaves it out.
            tag_ids.pop();
        }
        let mut select_by_prop: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut inactive_by_prop: HashMap<i64, i64> = HashMap::new();
        for v in &self.select_values {
            let prop = int(v, "custom_property_id").unwrap_or(0);
            let id = int(v, "id").unwrap_or(0);
            select_by_prop.entry(prop).or_default().push(id);
            if v.get("condition").and_then(Value::as_str) != Some("active") {
                inactive_by_prop.insert(prop, id);
            }
        }
        let props: Vec<(i64, String)> = self
            .props
            .iter()
            .map(|p| (int(p, "id").unwrap_or(0), p["type"].as_str().unwrap_or("string").to_owned()))
            .collect();

        let mut path_cache: HashMap<(i64, i64, i64), Value> = HashMap::new();
        let mut cards = CardStore::with_capacity(CARD_BASE + 1, n);
        for i in 0..n {
            let id = CARD_BASE + 1 + i as i64;
            let (board_id, leaves, lanes) = pick(rng, layouts);
            let leaf = *pick(rng, leaves);
            let lane_id = *pick(rng, lanes);
            let created = created[i];
            let updated = created + rng.random_range(0..(EPOCH_MS - created));
            let last_moved_at = created + rng.random_range(0..=(updated - created));
            let title = format!("{} {}{}", pick(rng, &VERBS), pick(rng, &OBJECTS), pick(rng, &QUALIFIERS));
            // Every tenth card (from the sixth) belongs to a deactivated user and names one in its
            // user-type properties; every tenth (from the eighth) holds inactive select values.
            let deactivated_user =
                (i % 10 == 5 && !deactivated.is_empty()).then(|| deactivated[(i / 10) % deactivated.len()]);
            let inactive_values = i % 10 == 7;
            let owner_id = *pick(rng, &user_ids);
            let owner_id = deactivated_user.unwrap_or(owner_id);
            let description = rng.random_bool(0.7).then(|| {
                format!(
                    "## Context\n\n{title}.\n\n- [ ] acceptance criteria #{}\n- [ ] tests\n\nReported by user {owner_id}.",
                    rng.random_range(1..100)
                )
            });
            let mut properties = Obj::new();
            for (pid, kind) in &props {
                let forced = match kind.as_str() {
                    "select" => inactive_values && inactive_by_prop.contains_key(pid),
                    "user" => deactivated_user.is_some(),
                    _ => false,
                };
                if !rng.random_bool(0.4) && !forced {
                    continue;
                }
                let value = match kind.as_str() {
                    "string" => json!(format!(
                        "{} {}",
                        pick(rng, &["Acme", "Globex", "Initech", "Umbrella"]),
                        pick(rng, &["Ltd", "LLC", "Inc"])
                    )),
                    "number" => json!(rng.random_range(1..100)),
                    "date" => {
                        let day = ts(created + rng.random_range(0..90) * DAY_MS);
                        if rng.random_bool(0.5) {
                            json!({"date": &day[..10], "time": "14:30", "tzOffset": 180})
                        } else {
                            json!({"date": &day[..10], "time": null, "tzOffset": null})
                        }
                    }
                    "checkbox" => json!(rng.random_bool(0.5)),
                    "select" => match (select_by_prop.get(pid), inactive_by_prop.get(pid)) {
                        (Some(_), Some(inactive)) if inactive_values => json!([*inactive]),
                        (Some(values), _) if !values.is_empty() => json!([*pick(rng, values)]),
                        _ => continue,
                    },
                    "user" => json!([deactivated_user.unwrap_or_else(|| *pick(rng, &user_ids))]),
                    "url" => json!(format!("https://wiki.example.com/specs/{}", rng.random_range(100..999))),
                    "email" => json!(format!("contact{}@example.com", rng.random_range(1..500))),
                    _ => continue,
                };
                properties.insert(format!("id_{pid}"), value);
            }
            let mut tags = Vec::new();
            if !tag_ids.is_empty() {
                for _ in 0..rng.random_range(0..=3) {
                    let t = *pick(rng, &tag_ids);
                    if !tags.contains(&t) {
                        tags.push(t);
                    }
                }
            }
            let seed = CardSeed {
                id,
                uid: uid(rng),
                title,
                description,
                board_id: *board_id,
                column_id: leaf.column_id,
                lane_id: Some(lane_id),
                state: leaf.column_type,
                owner_id,
                type_id: (!type_ids.is_empty()).then(|| *pick(rng, &type_ids)),
                sort_order: (rng.random_range(1.0..10_000.0f64) * 1000.0).round() / 1000.0,
                version: rng.random_range(1..=30),
                size: rng.random_bool(0.5).then(|| rng.random_range(1..=13)),
                due_date: rng.random_bool(0.3).then(|| created + rng.random_range(1..60) * DAY_MS),
                // Some clients write a date without a time: every third card's due date is one.
                due_date_only: i % 3 == 0,
                external_id: rng.random_bool(0.1).then(|| format!("EXT-{id}")),
                properties,
                tag_ids: tags,
                parents_ids: parents[i].map(|p| vec![CARD_BASE + 1 + p as i64]).unwrap_or_default(),
                children_ids: std::mem::take(&mut children[i]),
                created,
                updated,
                last_moved_at,
                archived: archived[i],
                asap: rng.random_bool(0.05),
                blocked: rng.random_bool(0.05),
                comments_total: rng.random_range(0..10),
            };
            let path = path_cache
                .entry((seed.board_id, seed.column_id, lane_id))
                .or_insert_with(|| self.path_data(seed.board_id, seed.column_id, Some(lane_id)))
                .clone();
            cards.push_unindexed(card_object(seed, path));
        }
        cards.rebuild_indexes();
        self.cards = cards;
    }

    fn max_stamp(&self) -> i64 {
        let entity_max = [
            &self.spaces,
            &self.boards,
            &self.columns,
            &self.lanes,
            &self.users,
            &self.tags,
            &self.card_types,
            &self.props,
            &self.select_values,
        ]
        .iter()
        .flat_map(|list| list.iter())
        .filter_map(|o| o.get("updated").and_then(Value::as_str).and_then(parse_ts_ms))
        .max()
        .unwrap_or(0);
        entity_max.max(self.cards.max_updated())
    }

    /// A new timestamp: the wall clock, but strictly after every timestamp handed out before.
    fn stamp(&mut self) -> i64 {
        let now = Utc::now().timestamp_millis();
        self.last_stamp = now.max(self.last_stamp + 1);
        self.last_stamp
    }

    fn tag_object(id: i64, uid: String, name: &str, i: usize, created: i64, updated: i64) -> Obj {
        obj! {
            "id" => id,
            "uid" => uid,
            "name" => name,
            "company_id" => COMPANY_ID,
            "color" => (i % 17 + 1) as i64,
            "archived" => false,
            "created" => ts(created),
            "updated" => ts(updated),
            "locked" => Value::Null,
        }
    }

    fn board_object(
        &mut self,
        id: i64,
        space_id: i64,
        title: &str,
        position: usize,
        created: i64,
        updated: i64,
    ) -> Obj {
        obj! {
            "id" => id,
            "uid" => uid(&mut self.rng),
            "title" => title,
            "description" => format!("Board {title}"),
            "external_id" => Value::Null,
            "default_card_type_id" => self.card_types.first().and_then(|t| int(t, "id")),
            "email_key" => format!("board{id}"),
            "move_parents_to_done" => false,
            "default_tags" => Value::Null,
            "first_image_is_cover" => false,
            "reset_lane_spent_time" => false,
            "backward_moves_enabled" => false,
            "hide_done_policies" => false,
            "hide_done_policies_in_done_column" => false,
            "automove_cards" => false,
            "auto_assign_enabled" => false,
            "card_properties" => Value::Null,
            "import_uid" => Value::Null,
            "locked" => Value::Null,
            "settings" => Value::Null,
            "cell_wip_limits" => Value::Null,
            "top" => (position * 10) as i64,
            "left" => 0,
            "sort_order" => (position + 1) as f64,
            "space_id" => space_id,
            "board_id" => id,
            "primary_path" => true,
            "created" => ts(created),
            "updated" => ts(updated),
        }
    }

    fn push_column(
        &mut self,
        board_id: i64,
        title: &str,
        kind: i64,
        parent: Option<i64>,
        sort_order: f64,
        at: i64,
    ) -> i64 {
        let id = COLUMN_BASE + 1 + (self.columns.len() + self.removed.columns) as i64;
        self.columns.push(obj! {
            "id" => id,
            "uid" => uid(&mut self.rng),
            "title" => title,
            "sort_order" => sort_order,
            "col_count" => 1,
            "wip_limit" => Value::Null,
            "type" => kind,
            "rules" => 0,
            "board_id" => board_id,
            "column_id" => parent,
            "archive_after_days" => Value::Null,
            "wip_limit_type" => 1,
            "external_id" => Value::Null,
            "default_tags" => Value::Null,
            "last_moved_warning_after_days" => 0,
            "last_moved_warning_after_hours" => 0,
            "last_moved_warning_after_minutes" => 0,
            "months_to_hide_cards" => Value::Null,
            "card_hide_after_days" => Value::Null,
            "pause_sla" => false,
            "locked" => Value::Null,
            "created" => ts(at),
            "updated" => ts(at),
        });
        id
    }

    fn push_lane(&mut self, board_id: i64, title: &str, sort_order: f64, at: i64) -> i64 {
        let id = LANE_BASE + 1 + (self.lanes.len() + self.removed.lanes) as i64;
        self.lanes.push(obj! {
            "id" => id,
            "uid" => uid(&mut self.rng),
            "title" => title,
            "sort_order" => sort_order,
            "row_count" => 1,
            "wip_limit" => Value::Null,
            "board_id" => board_id,
            "default_card_type_id" => Value::Null,
            "wip_limit_type" => 1,
            "external_id" => Value::Null,
            "default_tags" => Value::Null,
            "last_moved_warning_after_days" => 0,
            "last_moved_warning_after_hours" => 0,
            "last_moved_warning_after_minutes" => 0,
            "condition" => 1,
            "locked" => Value::Null,
            "created" => ts(at),
            "updated" => ts(at),
        });
        id
    }

    fn short(obj: &Obj) -> Value {
        json!({"id": obj.get("id"), "title": obj.get("title")})
    }

    fn path_data(&self, board_id: i64, column_id: i64, lane_id: Option<i64>) -> Value {
        let mut path = Obj::new();
        if let Some(board) = self.board(board_id) {
            path.insert("board".to_owned(), Self::short(board));
        }
        if let Some(column) = self.column(column_id) {
            match int(column, "column_id").and_then(|parent| self.column(parent)) {
                Some(parent) => {
                    path.insert("column".to_owned(), Self::short(parent));
                    path.insert("subcolumn".to_owned(), Self::short(column));
                }
                None => {
                    path.insert("column".to_owned(), Self::short(column));
                }
            }
        }
        if let Some(lane) = lane_id.and_then(|id| self.lanes.iter().find(|l| int(l, "id") == Some(id))) {
            path.insert("lane".to_owned(), Self::short(lane));
        }
        Value::Object(path)
    }

    // ---- lookups and served shapes ----

    pub(crate) fn board(&self, id: i64) -> Option<&Obj> {
        self.boards.iter().find(|b| int(b, "id") == Some(id))
    }

    pub(crate) fn space(&self, id: i64) -> Option<&Obj> {
        self.spaces.iter().find(|s| int(s, "id") == Some(id))
    }

    fn column(&self, id: i64) -> Option<&Obj> {
        self.columns.iter().find(|c| int(c, "id") == Some(id))
    }

    fn lane_mut(&mut self, id: i64) -> &mut Obj {
        self.lanes
            .iter_mut()
            .find(|l| int(l, "id") == Some(id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown lane id {id}"))
    }

    /// Ids of a board's live lanes (where cards go), by position.
    fn live_lane_ids(&self, board_id: i64) -> Vec<i64> {
        self.lanes_json(board_id)
            .iter()
            .filter(|l| l["condition"].as_i64().unwrap_or(1) == 1)
            .filter_map(|l| l["id"].as_i64())
            .collect()
    }

    /// Users as `GET /users` serves them: without deactivated ones unless `include_inactive`.
    pub(crate) fn users_listed(&self, include_inactive: bool) -> Vec<&Obj> {
        self.users.iter().filter(|u| include_inactive || u.get("activated") != Some(&Value::Bool(false))).collect()
    }

    /// Tags as `GET /tags` serves them: only those on at least one card (live or archived).
    pub(crate) fn tags_listed(&self) -> Vec<&Obj> {
        let used = self.cards.used_tag_ids();
        self.tags.iter().filter(|t| int(t, "id").is_some_and(|id| used.contains(&id))).collect()
    }

    /// The token's own user.
    pub(crate) fn current_user(&self) -> Value {
        Value::Object(self.users[0].clone())
    }

    /// A space as `GET /spaces` serves it, with its short `boards[]`.
    pub(crate) fn space_json(&self, space: &Obj) -> Value {
        let id = int(space, "id");
        let mut out = space.clone();
        let boards: Vec<Value> = self
            .boards
            .iter()
            .filter(|b| int(b, "space_id") == id)
            .map(|b| json!({"id": b.get("id"), "uid": b.get("uid"), "title": b.get("title")}))
            .collect();
        out.insert("boards".to_owned(), Value::Array(boards));
        Value::Object(out)
    }

    pub(crate) fn spaces_json(&self) -> Vec<Value> {
        self.spaces.iter().map(|s| self.space_json(s)).collect()
    }

    pub(crate) fn boards_of_space(&self, space_id: i64) -> Vec<Value> {
        self.boards.iter().filter(|b| int(b, "space_id") == Some(space_id)).cloned().map(Value::Object).collect()
    }

    /// Top-level columns of a board, by position, each with its `subcolumns[]`.
    pub(crate) fn columns_json(&self, board_id: i64) -> Vec<Value> {
        let mut top: Vec<&Obj> = self
            .columns
            .iter()
            .filter(|c| int(c, "board_id") == Some(board_id) && int(c, "column_id").is_none())
            .collect();
        top.sort_by(|a, b| sort_f(a).total_cmp(&sort_f(b)));
        top.into_iter()
            .map(|col| {
                let mut subs: Vec<&Obj> =
                    self.columns.iter().filter(|c| int(c, "column_id") == int(col, "id")).collect();
                subs.sort_by(|a, b| sort_f(a).total_cmp(&sort_f(b)));
                let mut out = col.clone();
                out.insert(
                    "subcolumns".to_owned(),
                    Value::Array(subs.into_iter().cloned().map(Value::Object).collect()),
                );
                Value::Object(out)
            })
            .collect()
    }

    pub(crate) fn lanes_json(&self, board_id: i64) -> Vec<Value> {
        let mut lanes: Vec<&Obj> = self.lanes.iter().filter(|l| int(l, "board_id") == Some(board_id)).collect();
        lanes.sort_by(|a, b| sort_f(a).total_cmp(&sort_f(b)));
        lanes.into_iter().cloned().map(Value::Object).collect()
    }

    /// Column ids of a board: each top-level column followed by its subcolumns.
    pub(crate) fn column_ids(&self, board_id: i64) -> Vec<i64> {
        let mut ids = Vec::new();
        for col in self.columns_json(board_id) {
            ids.extend(col["id"].as_i64());
            for sub in col["subcolumns"].as_array().into_iter().flatten() {
                ids.extend(sub["id"].as_i64());
            }
        }
        ids
    }

    pub(crate) fn select_values_of(&self, prop_id: i64) -> Vec<Value> {
        let mut values: Vec<&Obj> =
            self.select_values.iter().filter(|v| int(v, "custom_property_id") == Some(prop_id)).collect();
        values.sort_by(|a, b| sort_f(a).total_cmp(&sort_f(b)));
        values.into_iter().cloned().map(Value::Object).collect()
    }

    /// `GET /cards/{id}`: the list shape with `description` and the expanded objects.
    pub(crate) fn card_detail(&self, id: i64) -> Option<Value> {
        let mut card = self.cards.get(id)?;
        if card.get("condition").and_then(Value::as_i64) == Some(3) {
            return None;
        }
        let find = |list: &[Obj], key: &str| {
            card.get(key).and_then(Value::as_i64).and_then(|id| list.iter().find(|o| int(o, "id") == Some(id))).cloned()
        };
        let owner = find(&self.users, "owner_id");
        let kind = find(&self.card_types, "type_id");
        let board = find(&self.boards, "board_id");
        let column = find(&self.columns, "column_id");
        let lane = find(&self.lanes, "lane_id");
        let tags: Vec<Value> = card
            .get("tag_ids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_i64().and_then(|t| self.tags.iter().find(|o| int(o, "id") == Some(t))))
            .cloned()
            .map(Value::Object)
            .collect();
        // The owner is responsible (type 2). About two cards in three also have one or two
        // ordinary members (type 1), picked from the card's id and version: an edit of the card
        // may change them, as adding or removing a member changes the card in Kaiten.
        let version = card.get("version").and_then(Value::as_i64).unwrap_or(0);
        let pick = id.wrapping_mul(31).wrapping_add(version.wrapping_mul(17)).unsigned_abs() as usize;
        let mut listed: Vec<(&Obj, i64)> = owner.iter().map(|o| (o, 2)).collect();
        for k in 0..pick % 3 {
            let Some(user) = self.users.get((pick / 3 + k * 7) % self.users.len().max(1)) else { break };
            if !listed.iter().any(|(u, _)| int(u, "id") == int(user, "id")) {
                listed.push((user, 1));
            }
        }
        let members: Vec<Value> = listed
            .into_iter()
            .map(|(o, kind)| {
                let mut m = o.clone();
                m.insert("user_id".to_owned(), json!(o.get("id")));
                m.insert("card_id".to_owned(), json!(id));
                m.insert("type".to_owned(), json!(kind));
                Value::Object(m)
            })
            .collect();
        card.insert("owner".to_owned(), owner.map_or(Value::Null, Value::Object));
        card.insert("type".to_owned(), kind.map_or(Value::Null, Value::Object));
        card.insert("board".to_owned(), board.map_or(Value::Null, Value::Object));
        card.insert("column".to_owned(), column.map_or(Value::Null, Value::Object));
        card.insert("lane".to_owned(), lane.map_or(Value::Null, Value::Object));
        card.insert("tags".to_owned(), Value::Array(tags));
        card.insert("members".to_owned(), Value::Array(members));
        card.insert("checklists".to_owned(), json!([]));
        card.insert("files".to_owned(), json!([]));
        Some(Value::Object(card))
    }

    // ---- mutations ----

    fn author(&self) -> Value {
        self.current_user()
    }

    fn with_author(&self, mut data: Obj) -> Value {
        data.insert("author".to_owned(), self.author());
        Value::Object(data)
    }

    fn card_or_panic(&self, id: i64) -> Obj {
        self.cards.get(id).unwrap_or_else(|| panic!("kaiten-sim: unknown card id {id}"))
    }

    fn diff(old: &Obj, new: &Obj) -> Obj {
        new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// An `<entity>:update` event as Kaiten sends it: `old` holds the id and the previous values of
    /// the changed keys only, `changes` the new values only (plus whatever noise the caller added).
    fn update_event(&self, event: &str, id: i64, old: &Obj, changes: Obj) -> Value {
        let mut before = Obj::new();
        before.insert("id".to_owned(), json!(id));
        for key in changes.keys() {
            if let Some(value) = old.get(key) {
                before.insert(key.clone(), value.clone());
            }
        }
        let mut data = Obj::new();
        data.insert("old".to_owned(), Value::Object(before));
        data.insert("changes".to_owned(), Value::Object(changes));
        json!({"event": event, "data": self.with_author(data)})
    }

    /// Picks `keys` out of an object (those it has), for the few fields a notification carries.
    fn only(obj: &Obj, keys: &[&str]) -> Obj {
        keys.iter().filter_map(|k| obj.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect()
    }

    /// Stamps `updated`, bumps `version`, stores the card and returns the `card:update` event.
    fn commit_update(&mut self, old: Obj, mut new: Obj, stamp: i64, force: &[&str]) -> (Obj, Events) {
        new.insert("updated".to_owned(), json!(ts(stamp)));
        let version = old.get("version").and_then(Value::as_i64).unwrap_or(0) + 1;
        new.insert("version".to_owned(), json!(version));
        self.cards.put(new.clone());
        let mut changes = Self::diff(&old, &new);
        for key in force {
            if let Some(v) = new.get(*key) {
                changes.insert((*key).to_owned(), v.clone());
            }
        }
        // Noise Kaiten adds to every card update.
        changes.insert("counters_recalculated_at".to_owned(), json!(ts(stamp)));
        let id = int(&new, "id").unwrap_or(0);
        let event = self.update_event("card:update", id, &old, changes);
        (new, vec![event])
    }

    /// The first place a new card goes on a board: first column (its first subcolumn if it has any).
    fn first_leaf(&self, board_id: i64) -> (i64, i64) {
        let top = self.columns_json(board_id);
        let first = top.first().unwrap_or_else(|| panic!("kaiten-sim: board {board_id} has no columns"));
        let leaf = first["subcolumns"].as_array().and_then(|s| s.first()).unwrap_or(first);
        (leaf["id"].as_i64().unwrap_or(0), leaf["type"].as_i64().unwrap_or(1))
    }

    pub(crate) fn create_card(&mut self, board_id: i64, title: &str) -> (Obj, Events) {
        if self.board(board_id).is_none() {
            panic!("kaiten-sim: unknown board id {board_id}");
        }
        let (column_id, state) = self.first_leaf(board_id);
        let lane_id = self.live_lane_ids(board_id).first().copied();
        let stamp = self.stamp();
        let id = self.cards.next_id();
        let seed = CardSeed {
            id,
            uid: uid(&mut self.rng),
            title: title.to_owned(),
            description: None,
            board_id,
            column_id,
            lane_id,
            state,
            owner_id: int(&self.users[0], "id").unwrap_or(0),
            type_id: self.board(board_id).and_then(|b| int(b, "default_card_type_id")),
            sort_order: (self.rng.random_range(1.0..10_000.0f64) * 1000.0).round() / 1000.0,
            version: 1,
            size: None,
            due_date: None,
            due_date_only: false,
            external_id: None,
            properties: Obj::new(),
            tag_ids: Vec::new(),
            parents_ids: Vec::new(),
            children_ids: Vec::new(),
            created: stamp,
            updated: stamp,
            last_moved_at: stamp,
            archived: false,
            asap: false,
            blocked: false,
            comments_total: 0,
        };
        let path = self.path_data(board_id, column_id, lane_id);
        let card = card_object(seed, path);
        self.cards.put(card.clone());
        // A card:add delivery carries a few fields, not the card.
        let mut data = Self::only(&card, &["id", "created", "title", "description"]);
        data.insert("files".to_owned(), json!([]));
        let event = json!({"event": "card:add", "data": self.with_author(data)});
        (card, vec![event])
    }

    pub(crate) fn update_card(&mut self, id: i64, changes: Value) -> (Obj, Events) {
        let old = self.card_or_panic(id);
        let Value::Object(changes) = changes else {
            panic!("kaiten-sim: update_card changes must be a JSON object");
        };
        let mut new = old.clone();
        new.extend(changes);
        // The id is the card's identity in the store: it cannot change.
        new.insert("id".to_owned(), json!(id));
        let stamp = self.stamp();
        self.commit_update(old, new, stamp, &[])
    }

    pub(crate) fn move_card(&mut self, id: i64, column_id: i64, lane_id: Option<i64>) -> (Obj, Events) {
        let old = self.card_or_panic(id);
        let column =
            self.column(column_id).unwrap_or_else(|| panic!("kaiten-sim: unknown column id {column_id}")).clone();
        let board_id = int(&column, "board_id").unwrap_or(0);
        // A column with subcolumns holds no cards itself: use its first subcolumn.
        let leaf = self
            .columns_json(board_id)
            .into_iter()
            .find(|c| c["id"].as_i64() == Some(column_id))
            .and_then(|c| c["subcolumns"].as_array().and_then(|s| s.first().cloned()))
            .and_then(|s| s.as_object().cloned())
            .unwrap_or(column);
        let column_id = int(&leaf, "id").unwrap_or(column_id);
        let state = int(&leaf, "type").unwrap_or(1);
        let board_lanes = self.live_lane_ids(board_id);
        let lane_id = match lane_id {
            Some(l) => {
                assert!(self.lanes.iter().any(|x| int(x, "id") == Some(l)), "kaiten-sim: unknown lane id {l}");
                Some(l)
            }
            None => int(&old, "lane_id").filter(|l| board_lanes.contains(l)).or_else(|| board_lanes.first().copied()),
        };
        let stamp = self.stamp();
        let now = json!(ts(stamp));
        let mut new = old.clone();
        let old_state = int(&old, "state").unwrap_or(0);
        new.insert("board_id".to_owned(), json!(board_id));
        new.insert("column_id".to_owned(), json!(column_id));
        new.insert("lane_id".to_owned(), json!(lane_id));
        new.insert("state".to_owned(), json!(state));
        new.insert("last_moved_at".to_owned(), now.clone());
        if int(&old, "column_id") != Some(column_id) {
            new.insert("column_changed_at".to_owned(), now.clone());
        }
        if int(&old, "lane_id") != lane_id {
            new.insert("lane_changed_at".to_owned(), now.clone());
        }
        if state == 3 && old_state != 3 {
            new.insert("completed_at".to_owned(), now.clone());
            new.insert("last_moved_to_done_at".to_owned(), now.clone());
        } else if state != 3 {
            new.insert("completed_at".to_owned(), Value::Null);
        }
        if state >= 2 && new.get("first_moved_to_in_progress_at").is_none_or(Value::is_null) {
            new.insert("first_moved_to_in_progress_at".to_owned(), now);
        }
        new.insert("path_data".to_owned(), self.path_data(board_id, column_id, lane_id));
        self.commit_update(old, new, stamp, &["board_id", "column_id", "lane_id"])
    }

    pub(crate) fn archive_card(&mut self, id: i64) -> (Obj, Events) {
        let old = self.card_or_panic(id);
        let mut new = old.clone();
        new.insert("archived".to_owned(), json!(true));
        new.insert("condition".to_owned(), json!(2));
        let stamp = self.stamp();
        self.commit_update(old, new, stamp, &["archived", "condition"])
    }

    /// Kaiten sends no `card:remove`: a deleted card just vanishes (no event).
    pub(crate) fn delete_card(&mut self, id: i64) -> Events {
        let mut card = self.card_or_panic(id);
        let stamp = self.stamp();
        card.insert("condition".to_owned(), json!(3));
        card.insert("updated".to_owned(), json!(ts(stamp)));
        let version = card.get("version").and_then(Value::as_i64).unwrap_or(0) + 1;
        card.insert("version".to_owned(), json!(version));
        self.cards.put(card);
        Vec::new()
    }

    pub(crate) fn add_board(&mut self, space_id: i64, title: &str) -> (i64, Events) {
        if self.space(space_id).is_none() {
            panic!("kaiten-sim: unknown space id {space_id}");
        }
        let stamp = self.stamp();
        let id = BOARD_BASE + 1 + (self.boards.len() + self.removed.boards) as i64;
        let position = self.boards.iter().filter(|b| int(b, "space_id") == Some(space_id)).count();
        let board = self.board_object(id, space_id, title, position, stamp, stamp);
        self.boards.push(board.clone());
        self.push_column(id, "Queue", 1, None, 1.0, stamp);
        self.push_column(id, "Done", 3, None, 2.0, stamp);
        self.push_lane(id, "Default", 1.0, stamp);
        let data = Self::only(&board, &["id", "created", "title", "description"]);
        let event = json!({"event": "board:add", "data": self.with_author(data)});
        (id, vec![event])
    }

    pub(crate) fn add_column(&mut self, board_id: i64, title: &str) -> i64 {
        if self.board(board_id).is_none() {
            panic!("kaiten-sim: unknown board id {board_id}");
        }
        let stamp = self.stamp();
        let last = self
            .columns
            .iter()
            .filter(|c| int(c, "board_id") == Some(board_id) && int(c, "column_id").is_none())
            .map(sort_f)
            .fold(0.0, f64::max);
        self.push_column(board_id, title, 2, None, last + 1.0, stamp)
    }

    pub(crate) fn add_lane(&mut self, board_id: i64, title: &str) -> i64 {
        if self.board(board_id).is_none() {
            panic!("kaiten-sim: unknown board id {board_id}");
        }
        let stamp = self.stamp();
        let last = self.lanes.iter().filter(|l| int(l, "board_id") == Some(board_id)).map(sort_f).fold(0.0, f64::max);
        self.push_lane(board_id, title, last + 1.0, stamp)
    }

    pub(crate) fn add_tag(&mut self, name: &str) -> (i64, Events) {
        let stamp = self.stamp();
        let id = TAG_BASE + 1 + self.tags.len() as i64;
        let uid = uid(&mut self.rng);
        let tag = Self::tag_object(id, uid, name, self.tags.len(), stamp, stamp);
        self.tags.push(tag.clone());
        let event = json!({"event": "tag:add", "data": self.with_author(tag)});
        (id, vec![event])
    }

    pub(crate) fn update_space(&mut self, id: i64, changes: Value) -> Events {
        let index = self
            .spaces
            .iter()
            .position(|s| int(s, "id") == Some(id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown space id {id}"));
        let Value::Object(changes) = changes else {
            panic!("kaiten-sim: update_space changes must be a JSON object");
        };
        let old = self.space_json(&self.spaces[index]);
        let stamp = self.stamp();
        let space = &mut self.spaces[index];
        space.extend(changes);
        space.insert("id".to_owned(), json!(id));
        space.insert("updated".to_owned(), json!(ts(stamp)));
        let new = self.space_json(&self.spaces[index]);
        let (Value::Object(old), Value::Object(new)) = (old, new) else { unreachable!("space_json returns an object") };
        let changes = Self::diff(&old, &new);
        vec![self.update_event("space:update", id, &old, changes)]
    }

    /// Deactivates a user (`activated` false, `role` 3); cards keep naming them. No event.
    pub(crate) fn deactivate_user(&mut self, id: i64) {
        let stamp = self.stamp();
        let user = self
            .users
            .iter_mut()
            .find(|u| int(u, "id") == Some(id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown user id {id}"));
        user.insert("activated".to_owned(), json!(false));
        user.insert("role".to_owned(), json!(3));
        user.insert("updated".to_owned(), json!(ts(stamp)));
    }

    /// Removes a select value the way Kaiten does: it stays, `deleted` and no longer active, and
    /// cards keep holding it. The property's `updated` does not move. No event.
    pub(crate) fn remove_select_value(&mut self, property_id: i64, value_id: i64) {
        let stamp = self.stamp();
        let value = self
            .select_values
            .iter_mut()
            .find(|v| int(v, "id") == Some(value_id) && int(v, "custom_property_id") == Some(property_id))
            .unwrap_or_else(|| panic!("kaiten-sim: property {property_id} has no select value {value_id}"));
        value.insert("condition".to_owned(), json!("inactive"));
        value.insert("deleted".to_owned(), json!(true));
        value.insert("updated".to_owned(), json!(ts(stamp)));
    }

    /// Renames a column or subcolumn. Its board's `updated` does not move; no event.
    pub(crate) fn rename_column(&mut self, column_id: i64, title: &str) {
        let stamp = self.stamp();
        let column = self
            .columns
            .iter_mut()
            .find(|c| int(c, "id") == Some(column_id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown column id {column_id}"));
        column.insert("title".to_owned(), json!(title));
        column.insert("updated".to_owned(), json!(ts(stamp)));
    }

    /// Renames a lane. Its board's `updated` does not move; no event.
    pub(crate) fn rename_lane(&mut self, lane_id: i64, title: &str) {
        let stamp = self.stamp();
        let lane = self.lane_mut(lane_id);
        lane.insert("title".to_owned(), json!(title));
        lane.insert("updated".to_owned(), json!(ts(stamp)));
    }

    /// Ids of the live and archived cards whose `key` (`board_id`, `column_id`, `lane_id`) is one
    /// of `ids`.
    fn cards_on(&self, key: &str, ids: &[i64]) -> Vec<i64> {
        self.cards
            .all()
            .iter()
            .filter(|c| int(c, key).is_some_and(|v| ids.contains(&v)))
            .filter_map(|c| int(c, "id"))
            .collect()
    }

    /// Removes a board with its columns and lanes; its cards are deleted (they vanish like any
    /// deleted card). No event.
    pub(crate) fn delete_board(&mut self, board_id: i64) {
        let index = self
            .boards
            .iter()
            .position(|b| int(b, "id") == Some(board_id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown board id {board_id}"));
        for card in self.cards_on("board_id", &[board_id]) {
            self.delete_card(card);
        }
        self.boards.remove(index);
        self.removed.boards += 1;
        let before = (self.columns.len(), self.lanes.len());
        self.columns.retain(|c| int(c, "board_id") != Some(board_id));
        self.lanes.retain(|l| int(l, "board_id") != Some(board_id));
        self.removed.columns += before.0 - self.columns.len();
        self.removed.lanes += before.1 - self.lanes.len();
    }

    /// Removes an empty column (a top-level one with its subcolumns). Panics when a card is in it.
    pub(crate) fn delete_column(&mut self, column_id: i64) {
        if self.column(column_id).is_none() {
            panic!("kaiten-sim: unknown column id {column_id}");
        }
        let doomed: Vec<i64> = self
            .columns
            .iter()
            .filter(|c| int(c, "id") == Some(column_id) || int(c, "column_id") == Some(column_id))
            .filter_map(|c| int(c, "id"))
            .collect();
        let cards = self.cards_on("column_id", &doomed);
        assert!(cards.is_empty(), "kaiten-sim: column {column_id} holds cards {cards:?}: move them first");
        self.columns.retain(|c| !int(c, "id").is_some_and(|id| doomed.contains(&id)));
        self.removed.columns += doomed.len();
    }

    /// Removes an empty lane. Panics when a card is in it.
    pub(crate) fn delete_lane(&mut self, lane_id: i64) {
        self.lane_mut(lane_id);
        let cards = self.cards_on("lane_id", &[lane_id]);
        assert!(cards.is_empty(), "kaiten-sim: lane {lane_id} holds cards {cards:?}: move them first");
        self.lanes.retain(|l| int(l, "id") != Some(lane_id));
        self.removed.lanes += 1;
    }

    /// Removes a user from the company (every listing); cards keep naming them. The token's own
    /// user cannot be removed.
    pub(crate) fn delete_user(&mut self, id: i64) {
        let index = self
            .users
            .iter()
            .position(|u| int(u, "id") == Some(id))
            .unwrap_or_else(|| panic!("kaiten-sim: unknown user id {id}"));
        assert!(index > 0, "kaiten-sim: user {id} owns the token and cannot be removed");
        self.users.remove(index);
    }
}

/// Why an external-webhook route was refused.
#[derive(Debug)]
pub(crate) enum HookError {
    /// No such webhook in this space: 404.
    NotFound,
    /// 400 with this message.
    BadRequest(String),
    /// 402: the plan lacks external webhooks.
    NotInPlan,
    /// 403: the token's user is not an admin of the space.
    NotAdmin,
}

impl Company {
    /// The external webhooks of a space (zero or one), as `GET /spaces/{id}/external-webhooks`
    /// serves them.
    pub(crate) fn external_webhooks_of(&self, space_id: i64) -> Vec<Value> {
        self.external_webhooks
            .iter()
            .filter(|h| int(h, "space_id") == Some(space_id))
            .cloned()
            .map(Value::Object)
            .collect()
    }

    /// Checks a webhook URL as Kaiten does: present, `http(s)://`, at most 4096 characters.
    fn check_hook_url(url: &str) -> Result<(), HookError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(HookError::BadRequest("url is required".to_owned()));
        }
        if url.chars().count() > EXTERNAL_WEBHOOK_URL_MAX {
            return Err(HookError::BadRequest(format!(
                "url must be at most {EXTERNAL_WEBHOOK_URL_MAX} characters long"
            )));
        }
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(HookError::BadRequest("url must be a valid http or https URL".to_owned()));
        }
        Ok(())
    }

    /// Registers the space's external webhook (enabled); a space holds at most one.
    pub(crate) fn create_external_webhook(&mut self, space_id: i64, url: &str) -> Result<Value, HookError> {
        Self::check_hook_url(url)?;
        if self.external_webhooks.iter().any(|h| int(h, "space_id") == Some(space_id)) {
            return Err(HookError::BadRequest("External webhook for this space already exists".to_owned()));
        }
        let stamp = self.stamp();
        let id = EXTERNAL_WEBHOOK_BASE + 1 + self.external_webhooks.len() as i64;
        let author_id = self.current_user().get("id").cloned().unwrap_or(Value::Null);
        let hook = obj! {
            "id" => id,
            "space_id" => space_id,
            "url" => url.trim(),
            "enabled" => true,
            "author_id" => author_id,
            "created" => ts(stamp),
            "updated" => ts(stamp),
        };
        self.external_webhooks.push(hook.clone());
        Ok(Value::Object(hook))
    }

    /// Changes the URL and/or the `enabled` flag of a space's external webhook.
    pub(crate) fn update_external_webhook(
        &mut self,
        space_id: i64,
        id: i64,
        url: Option<&str>,
        enabled: Option<bool>,
    ) -> Result<Value, HookError> {
        if let Some(url) = url {
            Self::check_hook_url(url)?;
        }
        let index = self
            .external_webhooks
            .iter()
            .position(|h| int(h, "id") == Some(id) && int(h, "space_id") == Some(space_id))
            .ok_or(HookError::NotFound)?;
        let stamp = self.stamp();
        let hook = &mut self.external_webhooks[index];
        if let Some(url) = url {
            hook.insert("url".to_owned(), json!(url.trim()));
        }
        if let Some(enabled) = enabled {
            hook.insert("enabled".to_owned(), json!(enabled));
        }
        hook.insert("updated".to_owned(), json!(ts(stamp)));
        Ok(Value::Object(hook.clone()))
    }

    /// The URL a space's events go to: its registered external webhook, when enabled.
    pub(crate) fn webhook_target(&self, space_id: i64) -> Option<String> {
        self.external_webhooks
            .iter()
            .find(|h| int(h, "space_id") == Some(space_id))
            .filter(|h| h.get("enabled").and_then(Value::as_bool) == Some(true))
            .and_then(|h| h.get("url").and_then(Value::as_str))
            .map(str::to_owned)
    }

    /// The space an event belongs to: the card's (through its board), the board's, or the space
    /// itself; `None` for company-wide events (tags).
    pub(crate) fn event_space(&self, event: &Value) -> Option<i64> {
        let name = event.get("event").and_then(Value::as_str)?;
        let data = event.get("data")?;
        let id = data.get("id").or_else(|| data.get("old").and_then(|o| o.get("id"))).and_then(Value::as_i64)?;
        let board_space = |board_id: i64| self.board(board_id).and_then(|b| int(b, "space_id"));
        match name.split(':').next()? {
            "card" => self.cards.get(id).and_then(|c| int(&c, "board_id")).and_then(board_space),
            "board" => board_space(id),
            "space" => Some(id),
            _ => None,
        }
    }
}

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
