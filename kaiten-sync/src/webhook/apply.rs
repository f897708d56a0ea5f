//! Applying a claimed batch of inbox entries: fetch each entity from Kaiten and store what it
//! returns, through the parent resolver the engine uses.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kaiten_client::{BoardId, Card, CardId, CardQuery, Condition, KaitenClient, OrderDirection, PageRequest, SpaceId};
use tracing::{info, warn};

use super::WebhookHandler;
use crate::card_walk::{PageRules, Verdict};
use crate::engine::WalkPos;
use crate::error::{chain, SyncError};
use crate::inbox::InboxEntry;
use crate::parents::{ParentCache, Parents};
use crate::schema::EntityKind;
use crate::store::{now_millis, Batch, Page, RunRecord, Store};

pub(super) struct BatchDone {
    pub(super) run_id: i64,
    pub(super) entries: u64,
    pub(super) applied: u64,
    pub(super) failed: u64,
    pub(super) requests: u64,
}

/// One batch being applied: its outcome per entity.
pub(super) struct BatchRun<'a> {
    pub(super) handler: &'a WebhookHandler,
    pub(super) cache: &'a mut ParentCache,
    pub(super) record: &'a mut RunRecord,
    pub(super) outcomes: HashMap<(EntityKind, i64), Result<(), String>>,
}

impl BatchRun<'_> {
    fn client(&self) -> &KaitenClient {
        &self.handler.inner.client
    }

    fn store(&self) -> &dyn Store {
        &*self.handler.inner.store
    }

    fn parents(&mut self) -> Parents<'_> {
        Parents {
            client: &self.handler.inner.client,
            store: &*self.handler.inner.store,
            cache: self.cache,
            record: self.record,
        }
    }

    fn settle(&mut self, kind: EntityKind, ids: impl IntoIterator<Item = i64>, outcome: &Result<(), SyncError>) {
        for id in ids {
            self.outcomes.insert((kind, id), outcome.as_ref().map(|_| ()).map_err(|e| chain(e)));
        }
    }

    pub(super) async fn apply(&mut self, entries: &[InboxEntry]) -> Result<(), SyncError> {
        let ids = |kind: EntityKind| -> BTreeSet<i64> {
            entries.iter().filter(|e| e.kind == kind).map(|e| e.entity_id).collect()
        };
        let spaces = ids(EntityKind::Spaces);
        if !spaces.is_empty() {
            let outcome = self.refresh_spaces(&spaces).await;
            self.settle(EntityKind::Spaces, spaces, &outcome);
        }
        let boards = ids(EntityKind::Boards);
        if !boards.is_empty() {
            let hints: HashMap<BoardId, SpaceId> = entries
                .iter()
                .filter(|e| e.kind == EntityKind::Boards)
                .filter_map(|e| e.parent_id.map(|p| (BoardId(e.entity_id), SpaceId(p))))
                .collect();
            let outcome = self.refresh_boards(&boards, &hints).await;
            self.settle(EntityKind::Boards, boards, &outcome);
        }
        let tags = ids(EntityKind::Tags);
        if !tags.is_empty() {
            let outcome = self.refresh_tags(&tags).await;
            self.settle(EntityKind::Tags, tags, &outcome);
        }
        let cards: Vec<&InboxEntry> = entries.iter().filter(|e| e.kind == EntityKind::Cards).collect();
        if !cards.is_empty() {
            self.refresh_cards(&cards).await?;
        }
        Ok(())
    }

    async fn refresh_spaces(&mut self, wanted: &BTreeSet<i64>) -> Result<(), SyncError> {
        let listed = self.parents().list_spaces(true).await?;
        let found: Vec<_> = listed.into_iter().filter(|s| wanted.contains(&s.id.get())).collect();
        let gone: Vec<i64> = wanted.iter().copied().filter(|id| !found.iter().any(|s| s.id == *id)).collect();
        self.write(Batch::Spaces(found)).await?;
        self.mark_gone(EntityKind::Spaces, &gone).await
    }

    async fn refresh_boards(
        &mut self,
        wanted: &BTreeSet<i64>,
        hints: &HashMap<BoardId, SpaceId>,
    ) -> Result<(), SyncError> {
        let wanted: BTreeSet<BoardId> = wanted.iter().copied().map(BoardId).collect();
        let gone: Vec<i64> = self.parents().refresh_boards(&wanted, hints).await?.into_iter().map(i64::from).collect();
        self.mark_gone(EntityKind::Boards, &gone).await
    }

    /// Tags are listed whole; a tag missing from `/tags` is left alone (a tag on no card is not
    /// listed, and tags cannot be deleted through the API).
    async fn refresh_tags(&mut self, wanted: &BTreeSet<i64>) -> Result<(), SyncError> {
        let before = self.client().stats().requests;
        let tags = self.client().tags().await;
        self.record.api_requests += self.client().stats().requests.saturating_sub(before).max(1);
        let found: Vec<_> = tags?.into_iter().filter(|t| wanted.contains(&t.id.get())).collect();
        self.write(Batch::Tags(found)).await
    }

    /// Writes records of the batch's own kinds (not parents), counting them as fetched.
    async fn write(&mut self, batch: Batch) -> Result<(), SyncError> {
        if batch.is_empty() {
            return Ok(());
        }
        let kind = batch.kind();
        let fetched = batch.len();
        let page = Page { batch, sweep: None, state: None, synced_at: now_millis() };
        let outcome = self.store().apply_page(&page).await?;
        self.record.stats.entry(kind).or_default().add_page(fetched, outcome);
        Ok(())
    }

    /// Kaiten no longer has these: mark the stored ones deleted (creating nothing).
    async fn mark_gone(&mut self, kind: EntityKind, ids: &[i64]) -> Result<(), SyncError> {
        if ids.is_empty() {
            return Ok(());
        }
        let deleted = self.store().mark_deleted(kind, ids, now_millis()).await?;
        if deleted > 0 {
            info!(kind = kind.as_str(), ids = ?ids, deleted, "webhook: Kaiten no longer has these; marked deleted");
        }
        self.record.stats.entry(kind).or_default().deleted += deleted;
        Ok(())
    }

    /// Fetches the cards: one incremental listing for a bulk batch, then one request per card not
    /// covered; writes them through the parent resolver; marks those Kaiten answers 404 for deleted.
    async fn refresh_cards(&mut self, entries: &[&InboxEntry]) -> Result<(), SyncError> {
        let options = self.handler.inner.options.clone();
        let wanted: BTreeSet<i64> = entries.iter().map(|e| e.entity_id).collect();
        let mut fetched: Vec<Card> = Vec::new();
        let mut covered: BTreeSet<i64> = BTreeSet::new();
        if wanted.len() >= options.bulk_listing_min {
            let since = entries.iter().map(|e| e.received_at).min().unwrap_or_else(now_millis)
                - chrono::Duration::from_std(options.listing_overlap).unwrap_or_default();
            // Never spend more requests on the listing than fetching each card would cost.
            let budget = wanted.len() as u64;
            let listed = self.list_changed_cards(since, budget).await?;
            for card in listed {
                covered.insert(card.id.get());
                fetched.push(card);
            }
            info!(
                cards = wanted.len(),
                listed = fetched.len(),
                "webhook: bulk change fetched with an incremental listing"
            );
        }
        let single: Vec<i64> = wanted.iter().copied().filter(|id| !covered.contains(id)).collect();
        let client = self.client().clone();
        let mut results = futures::stream::iter(single)
            .map(|id| {
                let client = client.clone();
                async move { (id, client.card(CardId(id)).await) }
            })
            .buffer_unordered(options.concurrency.max(1));
        let mut gone = Vec::new();
        let mut failed: Vec<(i64, SyncError)> = Vec::new();
        while let Some((id, result)) = results.next().await {
            self.record.api_requests += 1;
            match result {
                Ok(card) => fetched.push(card),
                Err(kaiten_client::Error::NotFound { .. }) => gone.push(id),
                Err(e) => failed.push((id, e.into())),
            }
        }
        drop(results);
        for (id, e) in failed {
            self.settle(EntityKind::Cards, [id], &Err(e));
        }
        // A fetched card may be deleted (`condition` 3): the store marks it so.
        let ids: Vec<i64> = fetched.iter().map(|c| c.id.get()).collect();
        let written = async {
            let cards = self.parents().prepare_cards(fetched).await?;
            for chunk in cards.chunks(KaitenClient::CARDS_PAGE_MAX as usize) {
                self.write(Batch::Cards(chunk.to_vec())).await?;
            }
            self.mark_gone(EntityKind::Cards, &gone).await
        }
        .await;
        let settled: Vec<i64> = ids.into_iter().chain(gone).filter(|id| wanted.contains(id)).collect();
        self.settle(EntityKind::Cards, settled, &written);
        written
    }

    /// Cards changed since `since`, live and archived, ordered by `updated`, paged by the stop rules
    /// of [`crate::card_walk`]: a page size Kaiten clamps is learned (one probe), and a listing whose
    /// end cannot be told (a page longer than asked, the same page again after an offset step, too
    /// many pages) fails with [`SyncError::IncompleteListing`], so the batch's card entries are
    /// retried rather than applied from a partial listing. Stops (returning what it has, the rest
    /// fetched one by one) after `budget` requests.
    async fn list_changed_cards(&mut self, since: DateTime<Utc>, budget: u64) -> Result<Vec<Card>, SyncError> {
        let page_size = KaitenClient::CARDS_PAGE_MAX;
        let mut out = Vec::new();
        let mut spent = 0;
        let mut rules = PageRules::default();
        for condition in [Condition::Live, Condition::Archived] {
            let mut query = CardQuery::new();
            query.condition = Some(condition);
            query.order_by = Some("updated".to_owned());
            query.order_direction = Some(OrderDirection::Asc);
            query.additional_card_fields = vec!["description".to_owned()];
            // What the live walk learned of the route holds for the archived one.
            rules = rules.next_walk();
            let mut pos = WalkPos { after: Some(since), offset: 0, offset_only: false };
            loop {
                if spent >= budget {
                    warn!(budget, "webhook: the bulk listing reached its request budget; fetching the rest one by one");
                    return Ok(out);
                }
                let mut q = query.clone();
                if !pos.offset_only {
                    q.updated_after = pos.after;
                }
                let asked = rules.limit(page_size);
                spent += 1;
                self.record.api_requests += 1;
                let page = self.client().cards_page(&q, PageRequest { limit: asked, offset: pos.offset }).await?;
                let verdict = rules.judge(page_size, pos, asked, &page)?;
                out.extend(page);
                match verdict {
                    Verdict::Next(next) => pos = next,
                    Verdict::Done => break,
                }
            }
        }
        Ok(out)
    }
}
