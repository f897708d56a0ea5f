//! The stop rules of a card walk: when a page of `GET /cards` ends a listing, when it calls for one
//! more request, and when the listing cannot be completed at all.
//!
//! The engine walks cards page by page itself (it commits each page with its resume point), so it
//! cannot use the client's [`kaiten_client::Pager`]; and its positions are keyset positions on
//! `updated` (see [`next_position`]) rather than offsets. These rules give it the same guards, and
//! they matter more here: the end of a full card listing is followed by a sweep that marks every
//! card the listing did not return as deleted, so ending a walk early would delete cards.
//!
//! For each page received at position `pos`, asked with `limit`:
//!
//! 1. **Longer than asked** (`len > limit`): the route ignores `limit`. Whether such a listing is
//!    complete cannot be told, so the walk fails ([`PagingError`]); nothing is swept.
//! 2. **The same page again after an offset step** (same ids in the same order as the previous
//!    page, for a request that differed only by a larger offset): the route ignores `offset`. The
//!    walk fails. (After a *keyset* step an identical page is legitimate: every card of the
//!    previous page shared one `updated`; the next step then moves by offset, and a route that
//!    ignores both `updated_after` and `offset` is caught there, on the third request.)
//! 3. **A full page** (`len == limit`): the route honours `limit` in this listing (remembered for
//!    the rest of the listing, every walk of it, and across a resume); go on.
//! 4. **A short page** (`len < limit`) ends the walk when it is empty, when the limit is confirmed
//!    (rule 3 happened, or a cap was learned), or when it has fewer than [`MIN_SUSPECTED_CAP`]
//!    cards. Otherwise it may be a page the server clamped to a smaller maximum than asked
//!    (Kaiten clamps `limit` silently): **one probe** fetches the walk's next position.
//!    - The probe returns a card the short page did not have: the server clamps `limit` to the
//!      short page's length. That length becomes the page size for the rest of the listing (the
//!      *cap*, confirmed), and the probe page is judged as an ordinary page.
//!    - The probe returns nothing new: the short page was the last one (a keyset probe asks for
//!      `updated` after the short page's newest card, so "nothing new" means nothing is newer).
//!      Unless the probe is itself as long as the suspected cap: then it may be one group of cards
//!      sharing a timestamp cut by the cap, and the probe goes on by offset (rule 2 applies).
//! 5. A walk of more than [`kaiten_client::DEFAULT_MAX_PAGES`] pages fails.
//!
//! Cost: a probe is one extra request, and only for a walk whose first pages are short (a small
//! company, a small board, the archived cards of a small company, an incremental run with 10 to 99
//! changed cards). A full sync of a company with at least a page of live cards confirms the limit
//! on its first page and probes nothing; an incremental run with fewer than 10 changes probes
//! nothing.
//!
//! What the rules cannot see: a server clamping to fewer than [`MIN_SUSPECTED_CAP`] cards a page.
//! The sweep's own guard ([`crate::SyncOptions::max_delete_share`]) is the second line there: a
//! listing that ended early would mark a large share deleted, which is checked by id first.

use kaiten_client::{Card, DEFAULT_MAX_PAGES};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::engine::{next_position, WalkPos};
use crate::error::SyncError;

/// A short page of at least this many cards, in a walk where the limit is not confirmed yet, is
/// checked with one more request (it may be a page the server clamped). Page-size maxima below
/// this are not suspected: no list API clamps that low, and checking shorter pages would cost a
/// request on most incremental runs.
pub(crate) const MIN_SUSPECTED_CAP: u32 = 10;

/// What comes after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Fetch the page at this position (with [`PageRules::limit`]).
    Next(WalkPos),
    /// The walk is complete.
    Done,
}

/// Why a walk cannot be completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PagingError(pub(crate) String);

impl From<PagingError> for SyncError {
    /// A card listing that cannot be completed: [`SyncError::IncompleteListing`] of `GET /cards`.
    fn from(e: PagingError) -> Self {
        SyncError::IncompleteListing { route: "GET /cards".to_owned(), reason: e.0 }
    }
}

/// The paging state of one card listing (all its walks). `cap` and `confirmed` are kept in the
/// listing's resume point; the rest lives only in memory (after a resume, the first page is judged
/// without a previous page, which can only cost a request, never end a walk early).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PageRules {
    /// A page size the server was seen to clamp `limit` to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cap: Option<u32>,
    /// A full page was seen in this listing (of the limit in force): short pages are last pages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) confirmed: bool,
    /// Set while checking a short page of this length.
    #[serde(skip)]
    probe: Option<u32>,
    /// The previous page of the walk: where it was asked, and its ids in order.
    #[serde(skip)]
    previous: Option<(WalkPos, Vec<i64>)>,
    /// Pages of the current walk.
    #[serde(skip)]
    pages: u64,
}

/// Whether every card of the page has the same `updated`.
fn one_instant(cards: &[Card]) -> bool {
    cards.windows(2).all(|w| w[0].updated == w[1].updated)
}

/// Whether `next` asks for the same cards as `prev` but further along by offset alone.
fn is_offset_step(prev: WalkPos, next: WalkPos) -> bool {
    prev.offset_only == next.offset_only && (next.offset_only || prev.after == next.after) && next.offset > prev.offset
}

impl PageRules {
    /// The rules for another walk of the same listing: what was learned of the route (its cap,
    /// whether the limit is confirmed) is kept; the walk's own state (previous page, probe, page
    /// count) starts afresh.
    pub(crate) fn next_walk(&self) -> PageRules {
        PageRules { cap: self.cap, confirmed: self.confirmed, ..PageRules::default() }
    }

    /// The page size to ask for: `page_size`, or the cap the server was seen to apply.
    pub(crate) fn limit(&self, page_size: u32) -> u32 {
        self.cap.map_or(page_size, |cap| cap.min(page_size)).max(1)
    }

    /// Judges `cards`, the page fetched at `pos` with `asked` cards at most, in a listing whose
    /// configured page size is `page_size`.
    pub(crate) fn judge(
        &mut self,
        page_size: u32,
        pos: WalkPos,
        asked: u32,
        cards: &[Card],
    ) -> Result<Verdict, PagingError> {
        self.pages += 1;
        if self.pages > DEFAULT_MAX_PAGES {
            return Err(PagingError(format!(
                "more than {DEFAULT_MAX_PAGES} pages in one walk without reaching its end (the route never \
                 answers a short page)"
            )));
        }
        let len = u32::try_from(cards.len()).unwrap_or(u32::MAX);
        if len > asked {
            return Err(PagingError(format!(
                "Kaiten answered {len} cards to a request for at most {asked} (offset {}): the route ignores \
                 `limit`, so whether the listing is complete cannot be told",
                pos.offset
            )));
        }
        let ids: Vec<i64> = cards.iter().map(|c| c.id.get()).collect();
        let previous = self.previous.replace((pos, ids.clone()));
        if let Some((prev_pos, prev_ids)) = &previous {
            if !ids.is_empty() && ids == *prev_ids && is_offset_step(*prev_pos, pos) {
                return Err(PagingError(format!(
                    "Kaiten answered the same {len} cards at offset {} as at offset {}: the route ignores `offset` \
                     (and `updated_after`), so the cards after them cannot be reached",
                    pos.offset, prev_pos.offset
                )));
            }
        }
        let brings_new = match &previous {
            Some((_, prev_ids)) => ids.iter().any(|id| !prev_ids.contains(id)),
            None => !ids.is_empty(),
        };
        // A keyset request (`updated_after` = the previous page's newest card less 1 ms) answered
        // with nothing new can be legitimate only when every card of the page shares one
        // `updated` (a group of cards at one instant). Cards of several instants mean the answer is
        // not one to this request (the route ignored `updated_after`, or repeated a page): stepping
        // on by offset from it would skip cards. Walk the listing again by offset alone, from the
        // start (no `updated_after`: a superset, upserted idempotently).
        let keyset_step = previous.as_ref().is_some_and(|(prev_pos, _)| !is_offset_step(*prev_pos, pos));
        if keyset_step && !brings_new && !pos.offset_only && !ids.is_empty() && !one_instant(cards) {
            warn!(
                offset = pos.offset,
                "Kaiten answered a card page older than the `updated_after` asked; listing the cards again by offset"
            );
            self.probe = None;
            self.previous = None;
            return Ok(Verdict::Next(WalkPos { after: None, offset: 0, offset_only: true }));
        }
        if let Some(short) = self.probe.take() {
            if !brings_new {
                if len == short {
                    // As long as the suspected cap and nothing new: cards sharing one timestamp,
                    // possibly more than the cap. Go on by offset.
                    self.probe = Some(short);
                    return Ok(Verdict::Next(next_position(pos, cards)));
                }
                debug!(short, "the short page of cards was the last one");
                return Ok(Verdict::Done);
            }
            if len <= short {
                warn!(
                    asked = page_size,
                    cap = short,
                    "Kaiten clamps the card page size below what was asked; paging with its size"
                );
                self.cap = Some(short);
                self.confirmed = true;
            }
        }
        if len >= self.limit(page_size) {
            self.confirmed = true;
            return Ok(Verdict::Next(next_position(pos, cards)));
        }
        if len == 0 || self.confirmed || len < MIN_SUSPECTED_CAP {
            return Ok(Verdict::Done);
        }
        debug!(len, asked, "a short page of cards: asking once more in case the server clamped the page size");
        self.probe = Some(len);
        Ok(Verdict::Next(next_position(pos, cards)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use kaiten_client::Record;
    use serde_json::json;

    fn card(id: i64, updated_ms: i64) -> Card {
        let updated = (DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(updated_ms))
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        Card::from_value(json!({"id": id, "updated": updated})).unwrap()
    }

    /// A fake `GET /cards` over cards `1..=total` (card `i` updated at `stamp(i)` ms), sorted by
    /// `updated` then id, with the server's maximum page size and which parameters it ignores.
    struct Server {
        total: i64,
        max: u32,
        ignore_offset: bool,
        ignore_after: bool,
        stamp: fn(i64) -> i64,
    }

    impl Server {
        fn honest(total: i64, max: u32) -> Self {
            Server { total, max, ignore_offset: false, ignore_after: false, stamp: |i| i * 10 }
        }

        fn page(&self, pos: WalkPos, limit: u32) -> Vec<Card> {
            let after = if pos.offset_only || self.ignore_after { None } else { pos.after };
            let offset = if self.ignore_offset { 0 } else { pos.offset as usize };
            let limit = limit.min(self.max) as usize;
            let mut all: Vec<Card> = (1..=self.total).map(|i| card(i, (self.stamp)(i))).collect();
            all.sort_by_key(|c| (c.updated, c.id));
            all.into_iter().filter(|c| after.is_none_or(|a| c.updated > Some(a))).skip(offset).take(limit).collect()
        }
    }

    /// Walks `server` with the rules: the ids seen (deduplicated, sorted), the requests made and
    /// the limits asked, or the error.
    fn walk(server: &Server, page_size: u32) -> Result<(Vec<i64>, usize, Vec<u32>), String> {
        let mut rules = PageRules::default();
        let mut pos = WalkPos { after: None, offset: 0, offset_only: false };
        let (mut seen, mut limits) = (Vec::new(), Vec::new());
        loop {
            assert!(limits.len() < 1000, "the walk does not end");
            let limit = rules.limit(page_size);
            limits.push(limit);
            let page = server.page(pos, limit);
            seen.extend(page.iter().map(|c| c.id.get()));
            match rules.judge(page_size, pos, limit, &page).map_err(|e| e.0)? {
                Verdict::Next(next) => pos = next,
                Verdict::Done => break,
            }
        }
        seen.sort_unstable();
        seen.dedup();
        Ok((seen, limits.len(), limits))
    }

    fn all(n: i64) -> Vec<i64> {
        (1..=n).collect()
    }

    #[test]
    fn an_honest_server_is_listed_to_its_short_last_page() {
        let (ids, requests, _) = walk(&Server::honest(250, 100), 100).unwrap();
        assert_eq!((ids, requests), (all(250), 3), "full pages confirm the limit: no probe");
        let (ids, requests, _) = walk(&Server::honest(5, 100), 100).unwrap();
        assert_eq!((ids, requests), (all(5), 1), "fewer cards than a cap could be: no probe");
        let (ids, requests, _) = walk(&Server::honest(0, 100), 100).unwrap();
        assert_eq!((ids, requests), (vec![], 1));
        let (ids, requests, _) = walk(&Server::honest(54, 100), 100).unwrap();
        assert_eq!((ids, requests), (all(54), 2), "a short page that could be clamped is checked once");
    }

    #[test]
    fn a_server_clamping_below_the_page_size_is_listed_completely() {
        for (total, cap) in [(250, 50), (54, 25), (300, 30), (61, 30), (60, 30), (30, 30), (31, 10)] {
            let (ids, _, limits) = walk(&Server::honest(total, cap), 100).unwrap();
            assert_eq!(ids, all(total), "{total} cards, clamped to {cap}");
            if total > i64::from(cap) {
                assert_eq!(limits.last(), Some(&cap), "pages with the server's size once learned");
            }
        }
    }

    #[test]
    fn a_clamped_group_of_cards_sharing_a_timestamp_is_listed_completely() {
        // 80 cards updated at the same millisecond, then 20 later ones; the server pages by 50.
        let server = Server { stamp: |i| if i <= 80 { 1000 } else { 1000 + i }, ..Server::honest(100, 50) };
        let (ids, _, _) = walk(&server, 100).unwrap();
        assert_eq!(ids, all(100));
        // All 100 at once, pages of 100 (the keyset cannot move: offsets do).
        let server = Server { stamp: |_| 1000, ..Server::honest(250, 100) };
        assert_eq!(walk(&server, 100).unwrap().0, all(250));
    }

    #[test]
    fn a_server_ignoring_offset_alone_is_listed_by_keyset() {
        let server = Server { ignore_offset: true, ..Server::honest(250, 100) };
        assert_eq!(walk(&server, 100).unwrap().0, all(250));
        let server = Server { ignore_offset: true, ..Server::honest(70, 100) };
        assert_eq!(walk(&server, 100).unwrap().0, all(70));
    }

    #[test]
    fn a_server_ignoring_offset_and_updated_after_fails_the_walk() {
        let server = Server { ignore_offset: true, ignore_after: true, ..Server::honest(250, 100) };
        let err = walk(&server, 100).unwrap_err();
        assert!(err.contains("ignores `offset`"), "{err}");
        // Clamped too: the probe's repeat is caught the same way.
        let server = Server { ignore_offset: true, ignore_after: true, ..Server::honest(250, 50) };
        let err = walk(&server, 100).unwrap_err();
        assert!(err.contains("ignores `offset`"), "{err}");
        // Everything fits in one short page: that page is the whole list.
        let server = Server { ignore_offset: true, ignore_after: true, ..Server::honest(7, 100) };
        assert_eq!(walk(&server, 100).unwrap().0, all(7));
    }

    #[test]
    fn a_page_longer_than_asked_fails_the_walk() {
        let mut rules = PageRules::default();
        let pos = WalkPos { after: None, offset: 0, offset_only: false };
        let page: Vec<Card> = (1..=150).map(|i| card(i, i)).collect();
        let err = rules.judge(100, pos, 100, &page).unwrap_err();
        assert!(err.0.contains("150 cards to a request for at most 100"), "{}", err.0);
    }

    #[test]
    fn the_learned_cap_survives_a_resume_point() {
        let mut rules = PageRules::default();
        let pos = WalkPos { after: None, offset: 0, offset_only: false };
        let short: Vec<Card> = (1..=25).map(|i| card(i, i)).collect();
        let Verdict::Next(probe_pos) = rules.judge(100, pos, 100, &short).unwrap() else { panic!("probes") };
        let more: Vec<Card> = (25..=49).map(|i| card(i, i)).collect();
        assert!(matches!(rules.judge(100, probe_pos, 100, &more).unwrap(), Verdict::Next(_)));
        assert_eq!((rules.cap, rules.confirmed, rules.limit(100)), (Some(25), true, 25));
        let text = serde_json::to_string(&rules).unwrap();
        let resumed: PageRules = serde_json::from_str(&text).unwrap();
        assert_eq!((resumed.cap, resumed.confirmed), (Some(25), true));
        assert_eq!(serde_json::from_str::<PageRules>("{}").unwrap(), PageRules::default());
    }

    /// Property tests of the stop rules (`PROPTEST_CASES` sets the count; see RELIABILITY.md):
    /// against any generated `GET /cards` (a page-size maximum of at least [`MIN_SUSPECTED_CAP`],
    /// cards sharing timestamps, `offset` or `updated_after` ignored, pages repeated at random), a
    /// walk always ends within a bound, and it never reports done without having seen every card.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        struct Route {
            total: i64,
            max: u32,
            ignore_offset: bool,
            ignore_after: bool,
            /// Cards per shared timestamp (1 = every card its own).
            group: i64,
            /// Request `k` is answered with the previous response when `repeats[k % len]`.
            repeats: Vec<bool>,
        }

        fn route() -> impl Strategy<Value = Route> {
            (
                0i64..320,
                MIN_SUSPECTED_CAP..=150,
                prop::bool::weighted(0.2),
                prop::bool::weighted(0.2),
                prop_oneof![4 => Just(1i64), 1 => 1i64..120],
                prop_oneof![3 => Just(vec![false]), 1 => prop::collection::vec(prop::bool::weighted(0.2), 1..6)],
            )
                .prop_map(|(total, max, ignore_offset, ignore_after, group, repeats)| Route {
                    total,
                    max,
                    ignore_offset,
                    ignore_after,
                    group,
                    repeats,
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn fuzz_card_walk_ends_and_never_reports_an_incomplete_listing_done(
                route in route(),
                page_size in prop_oneof![3 => Just(100u32), 1 => MIN_SUSPECTED_CAP..=120],
            ) {
                let group = route.group;
                let mut all: Vec<Card> = (1..=route.total).map(|i| card(i, 1_000 + (i - 1) / group * 10)).collect();
                all.sort_by_key(|c| (c.updated, c.id));
                let serve = |pos: WalkPos, limit: u32| -> Vec<Card> {
                    let after = if pos.offset_only || route.ignore_after { None } else { pos.after };
                    let offset = if route.ignore_offset { 0 } else { pos.offset as usize };
                    all.iter()
                        .filter(|c| after.is_none_or(|a| c.updated > Some(a)))
                        .skip(offset)
                        .take(limit.min(route.max) as usize)
                        .cloned()
                        .collect()
                };
                // Each page costs at most a probe; keyset steps on shared timestamps re-list a group.
                let bound = 2 * (route.total as usize + 2) + 8;
                let mut rules = PageRules::default();
                let mut pos = WalkPos { after: None, offset: 0, offset_only: false };
                let (mut seen, mut previous, mut requests) = (std::collections::BTreeSet::new(), None::<Vec<Card>>, 0usize);
                let verdict = loop {
                    prop_assert!(requests < bound, "{route:?}: more than {bound} requests");
                    let limit = rules.limit(page_size);
                    let repeat = route.repeats[requests % route.repeats.len()];
                    let page = match (&previous, repeat) {
                        (Some(previous), true) => previous.clone(),
                        _ => serve(pos, limit),
                    };
                    requests += 1;
                    seen.extend(page.iter().map(|c| c.id.get()));
                    previous = Some(page.clone());
                    match rules.judge(page_size, pos, limit, &page) {
                        Ok(Verdict::Next(next)) => pos = next,
                        Ok(Verdict::Done) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                match verdict {
                    Ok(()) => prop_assert_eq!(
                        seen.len() as i64, route.total,
                        "{:?}, page size {}: the walk ended after {} requests without every card", route, page_size, requests
                    ),
                    Err(e) => prop_assert!(!e.0.is_empty()),
                }
                let honest = !route.ignore_offset && !route.ignore_after && route.repeats.iter().all(|r| !r);
                if honest {
                    prop_assert_eq!(seen.len() as i64, route.total, "an honest route is always listed completely");
                }
            }
        }
    }
}
