//! Typed async client for the Kaiten REST API.
//!
//! - [`KaitenClient`], built with [`KaitenClient::builder`] or [`KaitenClient::from_env`]
//!   (`KAITEN_API_URL`, `KAITEN_API_TOKEN`); the token is a [`Secret`] that never reaches a log, a
//!   `Debug` output or an error message.
//! - [Typed models](models) of every entity a sync needs, tolerant of unknown and missing fields, each
//!   keeping the JSON exactly as Kaiten sent it ([`Record::raw`]).
//! - Paged lists as single pages (`*_page`), as streams (`*_stream`) and as whole lists, with guards
//!   against routes that clamp or ignore `limit`/`offset` ([`Pager`]).
//! - A client-side rate limiter (default 5 requests/s) shared by all clones of a client and adapted from
//!   `X-RateLimit-*`, bounded concurrency, and retries of 429 / 5xx / timeouts / connection errors that
//!   honour `Retry-After`, capped in attempts and total wait ([`RetryPolicy`]).
//! - Kaiten's undocumented webhook management: [`KaitenClient::external_webhooks`],
//!   [`KaitenClient::create_external_webhook`] (a `POST`, never repeated blindly) and
//!   [`KaitenClient::update_external_webhook`]; [`mask_webhook_url`] prints a webhook URL without its
//!   secret.
//! - [Typed ids](ids) ([`CardId`], [`BoardId`], ...): serde-transparent integers the compiler tells
//!   apart, so a board id never passes where a card id belongs.
//! - One [`Error`] enum saying what went wrong and whether it is worth retrying.
//! - [`redact_url`]: the one redaction of passwords and tokens in URLs and connection strings that
//!   every kaiten-sync crate uses before printing one.
//!
//! # Quickstart
//!
//! ```no_run
//! use futures::TryStreamExt;
//! use kaiten_client::{CardQuery, KaitenClient, OrderDirection, PageRequest};
//!
//! # async fn run() -> kaiten_client::Result<()> {
//! let client = KaitenClient::builder()
//!     .base_url("https://example.kaiten.ru") // `/api/latest` is appended
//!     .token(std::env::var("KAITEN_API_TOKEN").unwrap_or_default())
//!     .rate_limit(Some(5.0))
//!     .build()?;
//!
//! let me = client.current_user().await?;
//! println!("signed in as {:?}", me.full_name);
//!
//! for space in client.spaces().await? {
//!     for board in client.boards(space.id).await? {
//!         println!("{:?} / {:?}", space.title, board.title);
//!     }
//! }
//!
//! // Every card updated in the last day, oldest first, as a stream.
//! let mut query = CardQuery::new();
//! query.updated_after = Some(chrono::Utc::now() - chrono::Duration::days(1));
//! query.order_by = Some("updated".into());
//! query.order_direction = Some(OrderDirection::Asc);
//! let mut cards = client.cards_stream(query.clone());
//! while let Some(card) = cards.try_next().await? {
//!     println!("#{} {:?} (updated {:?})", card.id, card.title, card.updated);
//! }
//!
//! // Or one page at a time, to checkpoint between pages.
//! let page = client.cards_page(&query, PageRequest { limit: 100, offset: 0 }).await?;
//! println!("{} cards on the first page; {} requests so far", page.len(), client.stats().requests);
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod error;
pub mod ids;
pub mod models;
mod pagination;
mod query;
mod rate_limit;
mod raw;
pub mod redact;
mod retry;
mod secret;
mod transport;

pub use client::{
    ClientStats, KaitenClient, KaitenClientBuilder, RetryPolicy, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_RATE_LIMIT, DEFAULT_TIMEOUT, DEFAULT_USER_AGENT,
};
pub use config::{ENV_API_TOKEN, ENV_API_URL};
pub use error::{Error, Result};
pub use ids::{
    BoardId, CardId, CardTypeId, ColumnId, LaneId, PropertyId, SelectValueId, SpaceId, TagId, UserId, WebhookId,
};
pub use models::{
    Board, Card, CardMember, CardState, CardType, Column, Condition, ExternalWebhook, Lane, PropertyDefinition, Record,
    SelectValue, Space, Tag, User,
};
pub use pagination::{Pager, DEFAULT_MAX_PAGES};
pub use query::{CardQuery, OrderDirection, PageRequest};
pub use raw::RawJson;
pub use redact::{mask_webhook_url, redact_url};
pub use secret::Secret;
