//! The card store: every card pre-serialised once, plus sorted indexes so that a page of `GET /cards`
//! (filter + order + offset/limit) costs a scan of the page, not of the whole set.
//!
//! - Each card is kept as its list-shape JSON bytes (without `description`, which is spliced in only when
//!   a request asks for it) and a small [`CardMeta`] with the fields filters and orders look at.
//! - For every order (`id`, `created`, `updated`, `sort_order`, `title`) in both directions there is a
//!   vector of slots sorted by (key, id asc); a mutation moves one slot in each (O(n) memmove, no sort).
//! - A range filter on the ordering key (`updated_after` with `order_by=updated`, ...) is a binary search.
//! - Offset paging resumes where the previous page of the same query stopped ([`CursorCache`]), so
//!   reading a whole filtered listing page by page is linear, not quadratic.

use std::cmp::Ordering;
use std::collections::HashMap;

use bytes::Bytes;
use serde_json::Value;

use crate::shape::{parse_ts_ms, Obj};

/// Sort keys of `GET /cards`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum OrderKey {
    Id,
    Created,
    Updated,
    SortOrder,
    Title,
}

impl OrderKey {
    const ALL: [OrderKey; 5] =
        [OrderKey::Id, OrderKey::Created, OrderKey::Updated, OrderKey::SortOrder, OrderKey::Title];

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "id" => OrderKey::Id,
            "created" => OrderKey::Created,
            "updated" => OrderKey::Updated,
            "sort_order" => OrderKey::SortOrder,
            "title" => OrderKey::Title,
            _ => return None,
        })
    }

    fn index(self, desc: bool) -> usize {
        let k = match self {
            OrderKey::Id => 0,
            OrderKey::Created => 1,
            OrderKey::Updated => 2,
            OrderKey::SortOrder => 3,
            OrderKey::Title => 4,
        };
        k * 2 + usize::from(desc)
    }
}

/// What filters and orders need of a card, kept apart from its JSON.
#[derive(Clone, Debug)]
pub(crate) struct CardMeta {
    pub id: i64,
    pub created: i64,
    pub updated: i64,
    pub board_id: i64,
    pub column_id: i64,
    pub lane_id: i64,
    pub type_id: i64,
    pub owner_id: i64,
    pub state: i64,
    pub condition: i64,
    pub archived: bool,
    pub sort_order: f64,
    pub title: Box<str>,
    pub tag_ids: Box<[i64]>,
}

impl CardMeta {
    fn from_obj(obj: &Obj) -> CardMeta {
        let int = |k: &str| obj.get(k).and_then(Value::as_i64).unwrap_or(0);
        CardMeta {
            id: int("id"),
            created: obj.get("created").and_then(Value::as_str).and_then(parse_ts_ms).unwrap_or(0),
            updated: obj.get("updated").and_then(Value::as_str).and_then(parse_ts_ms).unwrap_or(0),
            board_id: int("board_id"),
            column_id: int("column_id"),
            lane_id: int("lane_id"),
            type_id: int("type_id"),
            owner_id: int("owner_id"),
            state: int("state"),
            condition: obj.get("condition").and_then(Value::as_i64).unwrap_or(1),
            archived: obj.get("archived").and_then(Value::as_bool).unwrap_or(false),
            sort_order: obj.get("sort_order").and_then(Value::as_f64).unwrap_or(0.0),
            title: obj.get("title").and_then(Value::as_str).unwrap_or("").into(),
            tag_ids: obj
                .get("tag_ids")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default(),
        }
    }

    fn key_ms(&self, key: OrderKey) -> i64 {
        match key {
            OrderKey::Created => self.created,
            _ => self.updated,
        }
    }
}

fn compare(metas: &[CardMeta], key: OrderKey, desc: bool, a: u32, b: u32) -> Ordering {
    let (ma, mb) = (&metas[a as usize], &metas[b as usize]);
    let primary = match key {
        OrderKey::Id => ma.id.cmp(&mb.id),
        OrderKey::Created => ma.created.cmp(&mb.created),
        OrderKey::Updated => ma.updated.cmp(&mb.updated),
        OrderKey::SortOrder => ma.sort_order.total_cmp(&mb.sort_order),
        OrderKey::Title => ma.title.cmp(&mb.title),
    };
    let primary = if desc { primary.reverse() } else { primary };
    // Ties are broken by id ascending in both directions.
    primary.then(ma.id.cmp(&mb.id))
}

/// Whether two versions of a card sort the same under `key`.
fn same_key(a: &CardMeta, b: &CardMeta, key: OrderKey) -> bool {
    match key {
        OrderKey::Id => a.id == b.id,
        OrderKey::Created => a.created == b.created,
        OrderKey::Updated => a.updated == b.updated,
        OrderKey::SortOrder => a.sort_order.total_cmp(&b.sort_order) == Ordering::Equal,
        OrderKey::Title => a.title == b.title,
    }
}

/// One stored card.
struct CardRec {
    /// List-shape JSON object without `description`.
    json: Bytes,
    /// The description (a string or null), spliced in on request.
    description: Value,
}

/// A parsed `GET /cards` request.
#[derive(Debug, Clone)]
pub(crate) struct CardFilter {
    /// Microseconds since the epoch; strict bounds.
    pub updated_after: Option<i64>,
    pub updated_before: Option<i64>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    /// Allowed boards (from `board_id` and `space_id`); `Some(empty)` matches nothing.
    pub board_ids: Option<Vec<i64>>,
    pub column_ids: Option<Vec<i64>>,
    pub lane_ids: Option<Vec<i64>>,
    pub type_ids: Option<Vec<i64>>,
    pub owner_ids: Option<Vec<i64>>,
    pub tag_ids: Option<Vec<i64>>,
    pub states: Option<Vec<i64>>,
    pub condition: Option<i64>,
    pub archived: Option<bool>,
    pub order: OrderKey,
    pub desc: bool,
    pub limit: usize,
    pub offset: usize,
    pub with_description: bool,
}

impl CardFilter {
    fn matches(&self, m: &CardMeta) -> bool {
        fn within(list: &Option<Vec<i64>>, v: i64) -> bool {
            list.as_ref().is_none_or(|l| l.contains(&v))
        }
        let us = |ms: i64| ms.saturating_mul(1000);
        if self.updated_after.is_some_and(|a| us(m.updated) <= a)
            || self.updated_before.is_some_and(|b| us(m.updated) >= b)
            || self.created_after.is_some_and(|a| us(m.created) <= a)
            || self.created_before.is_some_and(|b| us(m.created) >= b)
        {
            return false;
        }
        // Deleted cards vanish from every listing, `condition=3` included (which lists nothing, as
        // on tenants where it is not refused). Without `condition` or `archived`, only live cards.
        if m.condition == 3 {
            return false;
        }
        match (self.condition, self.archived) {
            (Some(c), _) if m.condition != c => return false,
            (None, None) if m.condition != 1 => return false,
            _ => {}
        }
        if self.archived.is_some_and(|a| a != m.archived) {
            return false;
        }
        within(&self.board_ids, m.board_id)
            && within(&self.column_ids, m.column_id)
            && within(&self.lane_ids, m.lane_id)
            && within(&self.type_ids, m.type_id)
            && within(&self.owner_ids, m.owner_id)
            && within(&self.states, m.state)
            && self.tag_ids.as_ref().is_none_or(|t| m.tag_ids.iter().any(|id| t.contains(id)))
    }

    /// Everything but limit and offset: the identity of a listing for the cursor cache.
    fn cursor_key(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            self.updated_after,
            self.updated_before,
            self.created_after,
            self.created_before,
            self.board_ids,
            self.column_ids,
            self.lane_ids,
            self.type_ids,
            self.owner_ids,
            self.tag_ids,
            self.states,
            self.condition,
            self.archived,
            self.order,
            self.desc
        )
    }
}

/// Where the previous page of a listing stopped: (store generation, rows matched so far, index position).
#[derive(Default)]
pub(crate) struct CursorCache {
    entries: HashMap<String, (u64, usize, usize)>,
}

impl CursorCache {
    const MAX_ENTRIES: usize = 4096;
}

/// All cards, ordered and indexed.
pub(crate) struct CardStore {
    first_id: i64,
    metas: Vec<CardMeta>,
    recs: Vec<CardRec>,
    /// `OrderKey::index(key, desc)` → slots sorted by that order.
    indexes: Vec<Vec<u32>>,
    /// Bumped by every change, invalidating saved cursors.
    generation: u64,
}

impl CardStore {
    /// A store of `cards` (ids must be `first_id`, `first_id + 1`, ... in this order).
    pub(crate) fn new(first_id: i64, cards: Vec<Obj>) -> CardStore {
        let mut store = CardStore::with_capacity(first_id, cards.len());
        for obj in cards {
            store.push_unindexed(obj);
        }
        store.rebuild_indexes();
        store
    }

    /// An empty store for bulk loading with [`CardStore::push_unindexed`] then
    /// [`CardStore::rebuild_indexes`].
    pub(crate) fn with_capacity(first_id: i64, n: usize) -> CardStore {
        CardStore {
            first_id,
            metas: Vec::with_capacity(n),
            recs: Vec::with_capacity(n),
            indexes: Vec::new(),
            generation: 0,
        }
    }

    /// Appends a card (its id must be [`CardStore::next_id`]) without maintaining the indexes.
    pub(crate) fn push_unindexed(&mut self, obj: Obj) {
        let meta = CardMeta::from_obj(&obj);
        assert_eq!(meta.id, self.next_id(), "card ids must be dense");
        self.metas.push(meta);
        self.recs.push(Self::encode(obj));
    }

    /// Sorts every index from scratch.
    pub(crate) fn rebuild_indexes(&mut self) {
        let n = self.metas.len() as u32;
        self.indexes = vec![Vec::new(); OrderKey::ALL.len() * 2];
        for key in OrderKey::ALL {
            for desc in [false, true] {
                let mut slots: Vec<u32> = (0..n).collect();
                if key != OrderKey::Id || desc {
                    slots.sort_unstable_by(|&a, &b| compare(&self.metas, key, desc, a, b));
                }
                self.indexes[key.index(desc)] = slots;
            }
        }
    }

    fn encode(mut obj: Obj) -> CardRec {
        let description = obj.remove("description").unwrap_or(Value::Null);
        let json = serde_json::to_vec(&obj).expect("a JSON object always serialises");
        CardRec { json: Bytes::from(json), description }
    }

    fn slot(&self, id: i64) -> Option<usize> {
        let slot = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        (slot < self.metas.len()).then_some(slot)
    }

    /// The id the next new card gets.
    pub(crate) fn next_id(&self) -> i64 {
        self.first_id + self.metas.len() as i64
    }

    /// Number of stored cards, deleted included.
    pub(crate) fn len(&self) -> usize {
        self.metas.len()
    }

    /// The card with this id (deleted included), with `description`, as a JSON object.
    pub(crate) fn get(&self, id: i64) -> Option<Obj> {
        self.slot(id).map(|slot| self.decode(slot))
    }

    fn decode(&self, slot: usize) -> Obj {
        let rec = &self.recs[slot];
        let mut obj: Obj = serde_json::from_slice(&rec.json).expect("stored card JSON is valid");
        obj.insert("description".to_owned(), rec.description.clone());
        obj
    }

    /// Ids of cards not deleted, ascending.
    pub(crate) fn ids(&self, include_deleted: bool) -> Vec<i64> {
        self.metas.iter().filter(|m| include_deleted || m.condition != 3).map(|m| m.id).collect()
    }

    /// Cards not deleted, by id, as JSON objects with `description`.
    pub(crate) fn all(&self) -> Vec<Obj> {
        (0..self.metas.len()).filter(|&s| self.metas[s].condition != 3).map(|s| self.decode(s)).collect()
    }

    /// Tags on at least one card that is not deleted.
    pub(crate) fn used_tag_ids(&self) -> std::collections::HashSet<i64> {
        self.metas.iter().filter(|m| m.condition != 3).flat_map(|m| m.tag_ids.iter().copied()).collect()
    }

    /// The greatest `updated` of any card (ms).
    pub(crate) fn max_updated(&self) -> i64 {
        self.metas.iter().map(|m| m.updated).max().unwrap_or(0)
    }

    /// Stores a card: replaces the card with the same id, or appends a new one (its id must be
    /// [`CardStore::next_id`]).
    pub(crate) fn put(&mut self, obj: Obj) {
        let meta = CardMeta::from_obj(&obj);
        let rec = Self::encode(obj);
        self.generation += 1;
        match self.slot(meta.id) {
            Some(slot) => {
                self.recs[slot] = rec;
                let slot32 = slot as u32;
                // Only the orders whose key changed move (usually just `updated`). Find the old
                // positions while the old meta is still in place (the indexes are sorted by it).
                let changed: Vec<(usize, usize)> = OrderKey::ALL
                    .into_iter()
                    .filter(|&key| !same_key(&self.metas[slot], &meta, key))
                    .flat_map(|key| [false, true].map(|desc| (key, desc)))
                    .map(|(key, desc)| {
                        let i = key.index(desc);
                        let pos = self.indexes[i]
                            .partition_point(|&s| compare(&self.metas, key, desc, s, slot32) == Ordering::Less);
                        debug_assert_eq!(self.indexes[i][pos], slot32);
                        (i, pos)
                    })
                    .collect();
                self.metas[slot] = meta;
                for (i, pos) in changed {
                    let (key, desc) = (OrderKey::ALL[i / 2], i % 2 == 1);
                    let index = &mut self.indexes[i];
                    index.remove(pos);
                    let at = index.partition_point(|&s| compare(&self.metas, key, desc, s, slot32) == Ordering::Less);
                    index.insert(at, slot32);
                }
            }
            None => {
                assert_eq!(meta.id, self.next_id(), "new card ids must be dense");
                let slot = self.metas.len() as u32;
                self.metas.push(meta);
                self.recs.push(rec);
                for key in OrderKey::ALL {
                    for desc in [false, true] {
                        let index = &mut self.indexes[key.index(desc)];
                        let at = index.partition_point(|&s| compare(&self.metas, key, desc, s, slot) == Ordering::Less);
                        index.insert(at, slot);
                    }
                }
            }
        }
    }

    /// The window of the index that a range filter on the ordering key allows.
    fn range(&self, filter: &CardFilter, index: &[u32]) -> (usize, usize) {
        let (after, before) = match filter.order {
            OrderKey::Updated => (filter.updated_after, filter.updated_before),
            OrderKey::Created => (filter.created_after, filter.created_before),
            _ => return (0, index.len()),
        };
        let key = |s: u32| self.metas[s as usize].key_ms(filter.order).saturating_mul(1000);
        if filter.desc {
            let start = before.map_or(0, |b| index.partition_point(|&s| key(s) >= b));
            let end = after.map_or(index.len(), |a| index.partition_point(|&s| key(s) > a));
            (start, end.max(start))
        } else {
            let start = after.map_or(0, |a| index.partition_point(|&s| key(s) <= a));
            let end = before.map_or(index.len(), |b| index.partition_point(|&s| key(s) < b));
            (start, end.max(start))
        }
    }

    /// One page of `GET /cards`, as the JSON array bytes to send.
    pub(crate) fn query(&self, filter: &CardFilter, cursors: &std::sync::Mutex<CursorCache>) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + filter.limit.min(100) * 1_400);
        out.push(b'[');
        if filter.limit == 0 || filter.board_ids.as_ref().is_some_and(Vec::is_empty) {
            out.push(b']');
            return out;
        }
        let index = &self.indexes[filter.order.index(filter.desc)];
        let (lo, hi) = self.range(filter, index);
        let cursor_key = filter.cursor_key();
        let (mut pos, mut matched) = (lo, 0usize);
        if let Some(&(generation, seen, at)) = lock(cursors).entries.get(&cursor_key) {
            if generation == self.generation && seen <= filter.offset && at >= lo && at <= hi {
                (pos, matched) = (at, seen);
            }
        }
        let mut taken = 0usize;
        while pos < hi && taken < filter.limit {
            let slot = index[pos] as usize;
            pos += 1;
            if !filter.matches(&self.metas[slot]) {
                continue;
            }
            matched += 1;
            if matched <= filter.offset {
                continue;
            }
            if taken > 0 {
                out.push(b',');
            }
            self.write_card(&mut out, slot, filter.with_description);
            taken += 1;
        }
        out.push(b']');
        let mut cache = lock(cursors);
        if cache.entries.len() >= CursorCache::MAX_ENTRIES {
            cache.entries.clear();
        }
        cache.entries.insert(cursor_key, (self.generation, matched, pos));
        out
    }

    fn write_card(&self, out: &mut Vec<u8>, slot: usize, with_description: bool) {
        let rec = &self.recs[slot];
        if with_description {
            out.extend_from_slice(&rec.json[..rec.json.len() - 1]);
            out.extend_from_slice(b",\"description\":");
            serde_json::to_writer(&mut *out, &rec.description).expect("writing to a Vec never fails");
            out.push(b'}');
        } else {
            out.extend_from_slice(&rec.json);
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test helper must not wedge the server).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::company::Company;
    use crate::config::SimConfig;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::sync::Mutex;

    /// The reference: filter everything, sort, skip, take.
    fn naive(store: &CardStore, f: &CardFilter) -> Vec<i64> {
        let mut slots: Vec<u32> =
            (0..store.metas.len() as u32).filter(|&s| f.matches(&store.metas[s as usize])).collect();
        slots.sort_by(|&a, &b| compare(&store.metas, f.order, f.desc, a, b));
        slots.iter().skip(f.offset).take(f.limit).map(|&s| store.metas[s as usize].id).collect()
    }

    fn served(store: &CardStore, f: &CardFilter, cursors: &Mutex<CursorCache>) -> Vec<i64> {
        let page: Vec<Value> = serde_json::from_slice(&store.query(f, cursors)).unwrap();
        page.iter().map(|c| c["id"].as_i64().unwrap()).collect()
    }

    fn random_filter(rng: &mut StdRng, store: &CardStore) -> CardFilter {
        let some = |rng: &mut StdRng| {
            let m = &store.metas[rng.random_range(0..store.metas.len())];
            m.clone()
        };
        let pivot = some(rng);
        CardFilter {
            updated_after: rng.random_bool(0.3).then(|| pivot.updated * 1000),
            updated_before: rng.random_bool(0.2).then(|| some(rng).updated * 1000 + 1),
            created_after: rng.random_bool(0.1).then(|| pivot.created * 1000),
            created_before: None,
            board_ids: rng.random_bool(0.3).then(|| vec![pivot.board_id]),
            column_ids: rng.random_bool(0.1).then(|| vec![pivot.column_id]),
            lane_ids: rng.random_bool(0.1).then(|| vec![pivot.lane_id]),
            type_ids: None,
            owner_ids: rng.random_bool(0.1).then(|| vec![pivot.owner_id]),
            tag_ids: None,
            states: rng.random_bool(0.2).then(|| vec![pivot.state]),
            condition: [None, None, Some(1), Some(2), Some(3)][rng.random_range(0..5)],
            archived: [None, None, Some(true), Some(false)][rng.random_range(0..4)],
            order: OrderKey::ALL[rng.random_range(0..5)],
            desc: rng.random_bool(0.5),
            limit: [1, 7, 100][rng.random_range(0..3)],
            offset: 0,
            with_description: false,
        }
    }

    #[test]
    fn indexed_paging_matches_a_naive_scan_through_mutations() {
        let mut company = Company::generate(&SimConfig { cards: 1_500, ..SimConfig::small() });
        let cursors = Mutex::new(CursorCache::default());
        let mut rng = StdRng::seed_from_u64(9);
        let board = company.boards[0]["id"].as_i64().unwrap();
        for round in 0..60 {
            // Page a random listing to its end, interleaving mutations every few rounds.
            let mut filter = random_filter(&mut rng, &company.cards);
            loop {
                let expected = naive(&company.cards, &filter);
                assert_eq!(served(&company.cards, &filter, &cursors), expected, "round {round}: {filter:?}");
                if expected.len() < filter.limit {
                    break;
                }
                filter.offset += filter.limit;
            }
            // A repeated or random offset must not be confused by the saved cursor.
            filter.offset = rng.random_range(0..200);
            assert_eq!(served(&company.cards, &filter, &cursors), naive(&company.cards, &filter));
            if round % 3 == 0 {
                let id = company.cards.first_id + rng.random_range(0..company.cards.len() as i64);
                match round % 4 {
                    0 => drop(company.update_card(id, serde_json::json!({"title": format!("zz {round}")}))),
                    1 => drop(company.archive_card(id)),
                    2 => drop(company.delete_card(id)),
                    _ => drop(company.create_card(board, "new")),
                }
            }
        }
    }
}
