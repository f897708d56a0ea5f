//! The client, its builder and the typed calls. (Contract: bodies are filled in by the implementation.)
#![allow(unused_variables, missing_docs, dead_code)]

use std::time::Duration;

use futures::stream::BoxStream;

use crate::error::Result;
use crate::models::*;
use crate::query::{CardQuery, PageRequest};
use crate::secret::Secret;

/// Retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Largest single wait.
    pub max_backoff: Duration,
    /// Cap on the total time spent waiting between attempts of one request.
    pub max_total_wait: Duration,
}

/// Counters shared by all clones of a client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent (each attempt counts).
    pub requests: u64,
    /// Attempts that were retries.
    pub retries: u64,
}

/// Builder.
#[derive(Debug, Default)]
pub struct KaitenClientBuilder {}

/// The client. Cheap to clone; clones share the rate limiter, the concurrency limit and the stats.
#[derive(Debug, Clone)]
pub struct KaitenClient {}

impl KaitenClientBuilder {
    pub fn base_url(self, url: impl Into<String>) -> Self { todo!() }
    pub fn token(self, token: impl Into<Secret>) -> Self { todo!() }
    pub fn timeout(self, timeout: Duration) -> Self { todo!() }
    pub fn connect_timeout(self, timeout: Duration) -> Self { todo!() }
    pub fn user_agent(self, ua: impl Into<String>) -> Self { todo!() }
    /// Requests per second; `None` = no client-side limit.
    pub fn rate_limit(self, per_second: Option<f64>) -> Self { todo!() }
    pub fn max_concurrent_requests(self, n: usize) -> Self { todo!() }
    pub fn retry_policy(self, policy: RetryPolicy) -> Self { todo!() }
    pub fn build(self) -> Result<KaitenClient> { todo!() }
}

impl KaitenClient {
    pub fn builder() -> KaitenClientBuilder { todo!() }
    pub fn from_env() -> Result<KaitenClient> { todo!() }
    pub fn base_url(&self) -> &str { todo!() }
    pub fn stats(&self) -> ClientStats { todo!() }

    pub async fn current_user(&self) -> Result<User> { todo!() }
    pub async fn spaces(&self) -> Result<Vec<Space>> { todo!() }
    pub async fn boards(&self, space_id: i64) -> Result<Vec<Board>> { todo!() }
    pub async fn columns(&self, board_id: i64) -> Result<Vec<Column>> { todo!() }
    pub async fn lanes(&self, board_id: i64) -> Result<Vec<Lane>> { todo!() }

    pub async fn users_page(&self, page: PageRequest) -> Result<Vec<User>> { todo!() }
    pub async fn users(&self) -> Result<Vec<User>> { todo!() }
    pub fn users_stream(&self) -> BoxStream<'static, Result<User>> { todo!() }
    pub async fn card_types_page(&self, page: PageRequest) -> Result<Vec<CardType>> { todo!() }
    pub async fn card_types(&self) -> Result<Vec<CardType>> { todo!() }
    pub async fn tags_page(&self, page: PageRequest) -> Result<Vec<Tag>> { todo!() }
    pub async fn tags(&self) -> Result<Vec<Tag>> { todo!() }
    pub async fn property_definitions_page(&self, page: PageRequest) -> Result<Vec<PropertyDefinition>> { todo!() }
    pub async fn property_definitions(&self) -> Result<Vec<PropertyDefinition>> { todo!() }
    pub async fn select_values(&self, property_id: i64) -> Result<Vec<SelectValue>> { todo!() }

    /// Max page size of `GET /cards` (100).
    pub const CARDS_PAGE_MAX: u32 = 100;
    pub async fn cards_page(&self, query: &CardQuery, page: PageRequest) -> Result<Vec<Card>> { todo!() }
    pub fn cards_stream(&self, query: CardQuery) -> BoxStream<'static, Result<Card>> { todo!() }
    pub async fn card(&self, id: i64) -> Result<Card> { todo!() }
}
