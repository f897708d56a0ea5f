//! Paging through Kaiten's `limit` + `offset` lists, with the guards that keep a listing finite.
//!
//! Kaiten's lists are bare JSON arrays with no total and no cursor: a page shorter than `limit` is the
//! last one. Some routes clamp `limit` to a smaller maximum without saying so, and some ignore
//! `limit`/`offset` entirely (returning everything, or the same page again). [`Pager`] decides, page by
//! page, what to ask for next and which records are new, so that no listing loops forever or yields a
//! record twice.

use std::collections::HashSet;
use std::future::Future;

use futures::stream::{self, BoxStream, StreamExt};

use crate::error::{Error, Result};
use crate::models::Record;
use crate::query::PageRequest;

/// The default hard cap of pages in one listing (10 million records at 100 a page).
pub const DEFAULT_MAX_PAGES: u64 = 100_000;

/// The paging state of one listing: what to ask for next, and what of each page to keep.
///
/// The rules, applied to every page received:
/// - a page with the same ids, in the same order, as the previous one ends the listing (the route
///   ignores `offset`); its records are not yielded again;
/// - a page larger than the limit asked for ends the listing (the route ignores paging: the page is taken
///   as the whole list);
/// - an empty page, or a page shorter than the limit, ends the listing, except that when the **first**
///   page is short and its length is a round number (a multiple of 25, as every page-size maximum
///   Kaiten uses is) one more page is asked for at the next offset: if it has rows, the server clamps
///   `limit` to the length of that first page, and paging goes on with that page size. A short first
///   page of any other length is the whole list, so small lists cost one request;
/// - a record whose id was already yielded in this listing is not yielded again;
/// - after `max_pages` pages [`Pager::next_page`] fails with [`Error::TooManyPages`].
///
/// The client's `*_stream()` calls and whole-list calls use it; it is public so that code paging with
/// the single-page calls (e.g. to checkpoint between pages) can apply the same guards.
///
/// ```
/// use kaiten_client::{Pager, PageRequest, Record, Tag};
///
/// let mut pager = Pager::new("GET /tags", 2);
/// let page = |ids: &[i64]| -> Vec<Tag> {
///     ids.iter().map(|id| Tag::from_value(serde_json::json!({"id": id})).unwrap()).collect()
/// };
/// assert_eq!(pager.next_page().unwrap(), Some(PageRequest { limit: 2, offset: 0 }));
/// assert_eq!(pager.accept(page(&[1, 2])).len(), 2);
/// assert_eq!(pager.next_page().unwrap(), Some(PageRequest { limit: 2, offset: 2 }));
/// assert_eq!(pager.accept(page(&[3])).len(), 1); // shorter than the limit: the last page
/// assert_eq!(pager.next_page().unwrap(), None);
/// ```
#[derive(Debug, Clone)]
pub struct Pager {
    route: String,
    limit: u32,
    offset: u64,
    pages: u64,
    max_pages: u64,
    /// Ids of the previous page, in order.
    previous: Vec<i64>,
    /// Ids yielded so far.
    seen: HashSet<i64>,
    /// Whether the server honoured our limit (a page of exactly `limit` rows was seen).
    limit_confirmed: bool,
    /// The current request checks whether a short first page was really the last one.
    probing: bool,
    done: bool,
}

impl Pager {
    /// A pager for `route` (named in errors and logs, e.g. `GET /users`) asking `limit` records a page.
    /// A `limit` of zero is raised to one.
    pub fn new(route: impl Into<String>, limit: u32) -> Self {
        Self {
            route: route.into(),
            limit: limit.max(1),
            offset: 0,
            pages: 0,
            max_pages: DEFAULT_MAX_PAGES,
            previous: Vec::new(),
            seen: HashSet::new(),
            limit_confirmed: false,
            probing: false,
            done: false,
        }
    }

    /// Sets the hard cap of pages (default [`DEFAULT_MAX_PAGES`]).
    pub fn with_max_pages(mut self, max_pages: u64) -> Self {
        self.max_pages = max_pages.max(1);
        self
    }

    /// The next page to fetch, `None` when the listing is complete, or [`Error::TooManyPages`] when the
    /// hard cap of pages was reached without the listing ending.
    pub fn next_page(&self) -> Result<Option<PageRequest>> {
        if self.done {
            return Ok(None);
        }
        if self.pages >= self.max_pages {
            return Err(Error::TooManyPages { route: self.route.clone(), pages: self.pages });
        }
        Ok(Some(PageRequest { limit: self.limit, offset: self.offset }))
    }

    /// Takes the page fetched for the last [`Pager::next_page`] request and returns its records that were
    /// not yielded before, in order.
    pub fn accept<T: Record>(&mut self, page: Vec<T>) -> Vec<T> {
        self.pages += 1;
        let ids: Vec<i64> = page.iter().map(Record::id).collect();
        if !ids.is_empty() && ids == self.previous {
            tracing::debug!(route = %self.route, offset = self.offset, "page identical to the previous one: the route ignores offset; listing ends");
            self.done = true;
            return Vec::new();
        }
        let len = u32::try_from(page.len()).unwrap_or(u32::MAX);
        if std::mem::take(&mut self.probing) {
            if len == 0 {
                self.done = true;
            } else {
                // The short first page was not the last one: the server clamps `limit` to its length.
                let clamp = u32::try_from(self.offset).unwrap_or(u32::MAX).max(1);
                tracing::debug!(route = %self.route, asked = self.limit, clamp, "the server clamps the page size");
                self.limit = clamp;
                self.limit_confirmed = true;
            }
        }
        if !self.done {
            if len > self.limit {
                tracing::debug!(route = %self.route, len, limit = self.limit, "page larger than the limit: the route ignores paging; listing ends");
                self.done = true;
            } else if len == self.limit {
                self.limit_confirmed = true;
                self.offset += u64::from(len);
            } else if len > 0 && len.is_multiple_of(25) && !self.limit_confirmed && self.offset == 0 {
                self.probing = true;
                self.offset += u64::from(len);
            } else {
                self.done = true;
            }
        }
        self.previous = ids;
        page.into_iter().filter(|record| self.seen.insert(record.id())).collect()
    }

    /// Whether the listing is complete.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Pages accepted so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Distinct records yielded so far.
    pub fn records(&self) -> usize {
        self.seen.len()
    }
}

/// A stream of the records of a paged listing, fetching each page with `fetch`. The stream ends after
/// the first error it yields.
pub(crate) fn paged_stream<T, F, Fut>(pager: Pager, fetch: F) -> BoxStream<'static, Result<T>>
where
    T: Record,
    F: FnMut(PageRequest) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<T>>> + Send + 'static,
{
    struct State<T, F> {
        pager: Pager,
        fetch: F,
        buffer: std::vec::IntoIter<T>,
        failed: bool,
    }

    let state = State { pager, fetch, buffer: Vec::new().into_iter(), failed: false };
    stream::unfold(state, |mut state| async move {
        loop {
            if let Some(record) = state.buffer.next() {
                return Some((Ok(record), state));
            }
            if state.failed {
                return None;
            }
            let request = match state.pager.next_page() {
                Ok(Some(request)) => request,
                Ok(None) => return None,
                Err(err) => {
                    state.failed = true;
                    return Some((Err(err), state));
                }
            };
            match (state.fetch)(request).await {
                Ok(page) => state.buffer = state.pager.accept(page).into_iter(),
                Err(err) => {
                    state.failed = true;
                    return Some((Err(err), state));
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::User;
    use serde_json::json;

    fn page(ids: impl IntoIterator<Item = i64>) -> Vec<User> {
        ids.into_iter().map(|id| User::from_value(json!({"id": id})).unwrap()).collect()
    }

    fn ids(records: &[User]) -> Vec<i64> {
        records.iter().map(|r| r.id.get()).collect()
    }

    /// Runs a pager against a fake server `serve(limit, offset) -> ids`; returns (ids yielded, requests).
    fn drive(limit: u32, serve: impl Fn(u32, u64) -> Vec<i64>) -> (Vec<i64>, Vec<PageRequest>) {
        let mut pager = Pager::new("GET /users", limit).with_max_pages(50);
        let (mut out, mut requests) = (Vec::new(), Vec::new());
        while let Some(request) = pager.next_page().unwrap() {
            requests.push(request);
            out.extend(ids(&pager.accept(page(serve(request.limit, request.offset)))));
        }
        (out, requests)
    }

    fn honest(total: i64, max: u32) -> impl Fn(u32, u64) -> Vec<i64> {
        move |limit, offset| {
            let limit = i64::from(limit.min(max));
            let offset = i64::try_from(offset).unwrap();
            (offset..(offset + limit).min(total)).map(|i| i + 1).collect()
        }
    }

    #[test]
    fn pages_to_a_short_last_page() {
        let (out, requests) = drive(10, honest(25, 10));
        assert_eq!(out, (1..=25).collect::<Vec<_>>());
        assert_eq!(requests.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 10, 20]);
    }

    #[test]
    fn an_exact_multiple_ends_on_an_empty_page() {
        let (out, requests) = drive(10, honest(20, 10));
        assert_eq!(out.len(), 20);
        assert_eq!(requests.len(), 3);
    }

    #[test]
    fn a_short_first_page_is_the_whole_list_unless_it_looks_clamped() {
        let (out, requests) = drive(10, honest(4, 10));
        assert_eq!(out, vec![1, 2, 3, 4]);
        assert_eq!(requests.len(), 1, "a short odd-sized page is the last one");
        let (out, requests) = drive(100, honest(70, 50));
        assert_eq!(out, (1..=70).collect::<Vec<_>>(), "a round short page is checked with one more request");
        assert_eq!(requests.len(), 2);
        let (out, requests) = drive(10, honest(0, 10));
        assert!(out.is_empty());
        assert_eq!(requests.len(), 1);
    }

    #[test]
    fn a_clamped_limit_still_pages_to_the_end() {
        let (out, requests) = drive(500, honest(250, 100));
        assert_eq!(out, (1..=250).collect::<Vec<_>>());
        assert_eq!(
            requests.iter().map(|r| (r.limit, r.offset)).collect::<Vec<_>>(),
            vec![(500, 0), (500, 100), (100, 200)]
        );
    }

    #[test]
    fn a_route_that_ignores_paging_is_listed_once() {
        let everything = |_: u32, _: u64| (1..=150).collect::<Vec<_>>();
        let (out, requests) = drive(100, everything);
        assert_eq!(out, (1..=150).collect::<Vec<_>>());
        assert_eq!(requests.len(), 1);
        let few = |_: u32, _: u64| vec![1, 2, 3];
        let (out, requests) = drive(100, few);
        assert_eq!((out, requests.len()), (vec![1, 2, 3], 1));
        let fifty = |_: u32, _: u64| (1..=50).collect::<Vec<_>>();
        let (out, requests) = drive(100, fifty);
        assert_eq!((out.len(), requests.len()), (50, 2), "the repeat of a round page ends the listing");
        let forty = |_: u32, _: u64| (1..=40).collect::<Vec<_>>();
        let (out, requests) = drive(100, forty);
        assert_eq!((out.len(), requests.len()), (40, 1), "40 is no page-size maximum: the whole list");
    }

    #[test]
    fn a_repeated_full_page_ends_the_listing() {
        let same = |limit: u32, _: u64| (1..=i64::from(limit)).collect::<Vec<_>>();
        let (out, requests) = drive(10, same);
        assert_eq!(out, (1..=10).collect::<Vec<_>>());
        assert_eq!(requests.len(), 2);
    }

    #[test]
    fn records_are_never_yielded_twice() {
        // Overlapping pages (a row inserted before the cursor shifts the next page by one).
        let shifted = |limit: u32, offset: u64| {
            let start = i64::try_from(offset).unwrap().saturating_sub(1).max(0);
            (start..(start + i64::from(limit)).min(25)).map(|i| i + 1).collect::<Vec<_>>()
        };
        let (out, _) = drive(10, shifted);
        let unique: HashSet<_> = out.iter().collect();
        assert_eq!(unique.len(), out.len());
    }

    #[test]
    fn the_hard_cap_is_an_error() {
        let mut pager = Pager::new("GET /cards", 1).with_max_pages(3);
        for id in 0..3 {
            assert!(pager.next_page().unwrap().is_some());
            pager.accept(page([id]));
        }
        let err = pager.next_page().unwrap_err();
        assert!(matches!(err, Error::TooManyPages { pages: 3, .. }), "{err}");
        assert!(err.to_string().contains("GET /cards"), "{err}");
    }
}
