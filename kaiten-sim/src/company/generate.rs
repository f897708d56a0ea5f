//! Generating the company from a configuration: users, spaces, boards, columns, lanes, tags,
//! card types, properties and cards, and the building blocks later mutations reuse.

use super::*;

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

    pub(super) fn generate_cards(
        &mut self,
        config: &SimConfig,
        rng: &mut StdRng,
        layouts: &[(i64, Vec<Leaf>, Vec<i64>)],
    ) {
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

    pub(super) fn max_stamp(&self) -> i64 {
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
    pub(super) fn stamp(&mut self) -> i64 {
        let now = Utc::now().timestamp_millis();
        self.last_stamp = now.max(self.last_stamp + 1);
        self.last_stamp
    }

    pub(super) fn tag_object(id: i64, uid: String, name: &str, i: usize, created: i64, updated: i64) -> Obj {
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

    pub(super) fn board_object(
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

    pub(super) fn push_column(
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

    pub(super) fn push_lane(&mut self, board_id: i64, title: &str, sort_order: f64, at: i64) -> i64 {
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

    pub(super) fn short(obj: &Obj) -> Value {
        json!({"id": obj.get("id"), "title": obj.get("title")})
    }

    pub(super) fn path_data(&self, board_id: i64, column_id: i64, lane_id: Option<i64>) -> Value {
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
}
