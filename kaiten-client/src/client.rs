//! The client, its builder and the typed calls.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use futures::stream::{BoxStream, TryStreamExt};
use reqwest::header::HeaderValue;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::config::{normalize_base_url, required_var, ENV_API_TOKEN, ENV_API_URL};
use crate::error::{Error, Result};
use crate::ids::{BoardId, CardId, PropertyId, SpaceId, WebhookId};
use crate::models::{
    parse_list_text, Board, Card, CardType, Column, ExternalWebhook, Lane, PropertyDefinition, Record, SelectValue,
    Space, Tag, User,
};
use crate::pagination::{paged_stream, Pager};
use crate::query::{CardQuery, PageRequest};
use crate::rate_limit::RateLimiter;
pub use crate::retry::RetryPolicy;
use crate::secret::Secret;
use crate::transport::{BodyError, Inner, Method};

/// The default user agent: `kaiten-sync/<version>`.
pub const DEFAULT_USER_AGENT: &str = concat!("kaiten-sync/", env!("CARGO_PKG_VERSION"));
/// The default client-side rate limit, in requests per second (Kaiten's documented limit).
pub const DEFAULT_RATE_LIMIT: f64 = 5.0;
/// The default number of requests in flight at once.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 4;
/// The default timeout of a whole request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default timeout of establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests are spaced this much wider than the configured rate asks.
const RATE_MARGIN: f64 = 1.02;

/// The slowest accepted rate limit: one request an hour.
const MIN_RATE_LIMIT: f64 = 1.0 / 3600.0;

/// Counters shared by all clones of a client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent (each attempt counts).
    pub requests: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Responses that were `429 Too Many Requests` (Kaiten's rate limit).
    pub rate_limited: u64,
}

/// Configures and builds a [`KaitenClient`]. Its `Debug` output never shows the token.
///
/// ```
/// use std::time::Duration;
/// use kaiten_client::{KaitenClient, RetryPolicy};
///
/// let client = KaitenClient::builder()
///     .base_url("https://example.kaiten.ru")
///     .token("my-token")
///     .rate_limit(Some(10.0))
///     .max_concurrent_requests(2)
///     .timeout(Duration::from_secs(60))
///     .retry_policy(RetryPolicy { max_attempts: 3, ..RetryPolicy::default() })
///     .build()?;
/// assert_eq!(client.base_url(), "https://example.kaiten.ru/api/latest");
/// # Ok::<(), kaiten_client::Error>(())
/// ```
#[derive(Clone)]
pub struct KaitenClientBuilder {
    base_url: Option<String>,
    token: Option<Secret>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    user_agent: String,
    rate_limit: Option<f64>,
    max_concurrent_requests: usize,
    retry_policy: RetryPolicy,
}

impl fmt::Debug for KaitenClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KaitenClientBuilder")
            .field("base_url", &self.base_url.as_deref().map(crate::redact::redact_url))
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("user_agent", &self.user_agent)
            .field("rate_limit", &self.rate_limit)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("retry_policy", &self.retry_policy)
            .finish()
    }
}

impl Default for KaitenClientBuilder {
    fn default() -> Self {
        Self {
            base_url: None,
            token: None,
            timeout: Some(DEFAULT_TIMEOUT),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            rate_limit: Some(DEFAULT_RATE_LIMIT),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            retry_policy: RetryPolicy::default(),
        }
    }
}

impl KaitenClientBuilder {
    /// The company's base URL: `https://<company>.kaiten.ru` (`/api/latest` is appended), a URL already
    /// ending in `/api/latest` or `/api/v1`, or any other http(s) server such as a local simulator.
    /// Checked by [`build`](Self::build).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The API token (sent as `Authorization: Bearer <token>`, never logged).
    pub fn token(mut self, token: impl Into<Secret>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Timeout of a whole request, body included (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Timeout of establishing a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Removes both timeouts. Meant for tests on tokio's paused clock, where a pending timeout would be
    /// fired by the clock's auto-advance while a real socket is still answering.
    pub fn no_timeouts(mut self) -> Self {
        self.timeout = None;
        self.connect_timeout = None;
        self
    }

    /// The `User-Agent` header (default `kaiten-sync/<version>`).
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    /// Requests per second; `None` = no client-side limit (default 5, Kaiten's documented limit).
    /// Every attempt counts, and all clones of the client share the limit. Holds the server asks for
    /// (`X-RateLimit-Remaining: 0`, `Retry-After` on a 429) apply either way.
    pub fn rate_limit(mut self, per_second: Option<f64>) -> Self {
        self.rate_limit = per_second;
        self
    }

    /// Requests in flight at once, shared by all clones of the client (default 4).
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.max_concurrent_requests = n;
        self
    }

    /// How failed requests are retried (default [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// A builder with the base URL and token from `KAITEN_API_URL` and `KAITEN_API_TOKEN`.
    pub fn from_env() -> Result<Self> {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup` (for tests, or another
    /// source of configuration). Fails naming the missing variable, e.g. `KAITEN_API_TOKEN is not set`.
    pub fn from_env_with(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let url = required_var(&lookup, ENV_API_URL, "set it to the company's URL, e.g. https://example.kaiten.ru")?;
        let token = required_var(&lookup, ENV_API_TOKEN, "set it to an API token (Kaiten: profile → API key)")?;
        Ok(Self::default().base_url(url).token(token))
    }

    /// Checks the settings and builds the client.
    ///
    /// Fails with [`Error::InvalidConfig`] when the token or the base URL is missing, the URL is not an
    /// http(s) URL, a timeout is zero, or a limit is out of range. Error messages name a bad URL
    /// without its password, never the token.
    pub fn build(self) -> Result<KaitenClient> {
        let token = self.token.ok_or_else(|| {
            Error::InvalidConfig(format!("the API token is not set: call .token(...) or set {ENV_API_TOKEN}"))
        })?;
        if token.expose().trim().is_empty() {
            return Err(Error::InvalidConfig("the API token is empty".into()));
        }
        let base_url = self.base_url.ok_or_else(|| {
            Error::InvalidConfig(format!(
                "the base URL is not set: call .base_url(\"https://<company>.kaiten.ru\") or set {ENV_API_URL}"
            ))
        })?;
        let base_url = normalize_base_url(&base_url)?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.expose().trim())).map_err(|_| {
            Error::InvalidConfig("the API token contains characters that cannot be sent in an HTTP header".into())
        })?;
        authorization.set_sensitive(true);
        let interval = match self.rate_limit {
            None => None,
            // 2% of margin: a server counting over a sliding window sees arrival jitter, and a
            // client pacing at exactly its limit would draw an occasional 429.
            Some(rate) if rate.is_finite() && rate >= MIN_RATE_LIMIT => {
                Some(Duration::from_secs_f64(RATE_MARGIN / rate))
            }
            Some(rate) => {
                return Err(Error::InvalidConfig(format!(
                    "the rate limit must be a number of requests per second of at least 1/3600 (one an hour), got \
                     {rate}; pass rate_limit(None) for no limit"
                )))
            }
        };
        for (name, timeout) in [("timeout", self.timeout), ("connect_timeout", self.connect_timeout)] {
            if timeout.is_some_and(|t| t.is_zero()) {
                return Err(Error::InvalidConfig(format!(
                    "the {name} must be longer than zero (every request would time out); no_timeouts() removes both"
                )));
            }
        }
        if self.max_concurrent_requests == 0 || self.max_concurrent_requests > Semaphore::MAX_PERMITS {
            return Err(Error::InvalidConfig(format!(
                "max_concurrent_requests must be at least 1, got {}",
                self.max_concurrent_requests
            )));
        }
        if self.retry_policy.max_attempts == 0 {
            return Err(Error::InvalidConfig("the retry policy's max_attempts must be at least 1".into()));
        }
        let mut http = reqwest::Client::builder().user_agent(self.user_agent.clone());
        if let Some(timeout) = self.timeout {
            http = http.timeout(timeout);
        }
        if let Some(timeout) = self.connect_timeout {
            http = http.connect_timeout(timeout);
        }
        let http = http.build().map_err(|err| Error::InvalidConfig(format!("cannot build the HTTP client: {err}")))?;
        Ok(KaitenClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                authorization,
                user_agent: self.user_agent,
                timeout: self.timeout,
                connect_timeout: self.connect_timeout,
                rate_limit: self.rate_limit,
                limiter: RateLimiter::new(interval),
                max_concurrent: self.max_concurrent_requests,
                semaphore: Semaphore::new(self.max_concurrent_requests),
                retry: self.retry_policy,
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                rate_limited: AtomicU64::new(0),
            }),
        })
    }
}

/// A typed client of the Kaiten REST API.
///
/// Cheap to clone: clones share the HTTP connection pool, the rate limiter, the concurrency limit and
/// the [`ClientStats`]. Every call is rate-limited, retried per the [`RetryPolicy`] (a `POST` only when
/// Kaiten surely did not act on it, see [`KaitenClient::create_external_webhook`]), and
/// traced with a `kaiten_request` span (method, route, attempt, status, duration in ms; never the token).
///
/// Lists come three ways: `*_page(PageRequest)` fetches one page (the limit clamped to the route's
/// maximum), `*_stream()` yields every record, and the plain call (`users()`, `tags()`, ...) collects the
/// stream. Streams and whole lists page with the guards of [`Pager`].
#[derive(Clone)]
pub struct KaitenClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for KaitenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("KaitenClient")
            .field("base_url", &crate::redact::redact_url(&inner.base_url))
            .field("token", &"[redacted]")
            .field("user_agent", &inner.user_agent)
            .field("timeout", &inner.timeout)
            .field("connect_timeout", &inner.connect_timeout)
            .field("rate_limit", &inner.rate_limit)
            .field("max_concurrent_requests", &inner.max_concurrent)
            .field("retry_policy", &inner.retry)
            .field("stats", &self.stats())
            .finish()
    }
}

/// One record: the body's text kept as its `raw`.
fn parse_one<T: Record>(body: &[u8]) -> std::result::Result<T, BodyError> {
    let raw: Box<serde_json::value::RawValue> = serde_json::from_slice(body)?;
    T::from_raw(raw).map_err(|err| BodyError::shape(format!("a {} record did not parse: {err}", T::ENTITY)))
}

/// A list of records, each keeping its text as its `raw`.
fn parse_many<T: Record>(body: &[u8]) -> std::result::Result<Vec<T>, BodyError> {
    Ok(parse_list_text(body)?)
}

/// Any JSON.
fn parse_value(body: &[u8]) -> std::result::Result<Value, BodyError> {
    Ok(serde_json::from_slice(body)?)
}

/// `v2_select_search=true` and `conditions[]=` every condition (the bracket form: Kaiten ignores a
/// bare `conditions` on some list routes).
fn select_value_params() -> Vec<(&'static str, String)> {
    let mut params = vec![("v2_select_search", "true".to_owned())];
    params.extend(KaitenClient::SELECT_VALUE_CONDITIONS.iter().map(|c| ("conditions[]", (*c).to_owned())));
    params
}

fn page_params(page: PageRequest, max: u32) -> Vec<(&'static str, String)> {
    vec![("limit", page.limit.clamp(1, max).to_string()), ("offset", page.offset.to_string())]
}

/// The query string of `GET /cards` for `query` and `page` (always with `broken_api=false`).
pub(crate) fn card_params(query: &CardQuery, page: PageRequest) -> Vec<(&'static str, String)> {
    let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut params = Vec::new();
    if let Some(t) = &query.updated_after {
        params.push(("updated_after", time(t)));
    }
    if let Some(t) = &query.updated_before {
        params.push(("updated_before", time(t)));
    }
    for (name, value) in [
        ("space_id", query.space_id.map(i64::from)),
        ("board_id", query.board_id.map(i64::from)),
        ("column_id", query.column_id.map(i64::from)),
        ("lane_id", query.lane_id.map(i64::from)),
        ("condition", query.condition.map(|c| c.code())),
    ] {
        if let Some(value) = value {
            params.push((name, value.to_string()));
        }
    }
    if let Some(archived) = query.archived {
        params.push(("archived", archived.to_string()));
    }
    if let Some(order_by) = &query.order_by {
        params.push(("order_by", order_by.clone()));
    }
    if let Some(direction) = query.order_direction {
        params.push(("order_direction", direction.as_str().to_owned()));
    }
    if !query.additional_card_fields.is_empty() {
        params.push(("additional_card_fields", query.additional_card_fields.join(",")));
    }
    params.extend(page_params(page, KaitenClient::CARDS_PAGE_MAX));
    params.push(("broken_api", "false".to_owned()));
    params
}

impl KaitenClient {
    /// Max page size of `GET /cards` (100).
    pub const CARDS_PAGE_MAX: u32 = 100;
    /// Max page size of `GET /users` (100).
    pub const USERS_PAGE_MAX: u32 = 100;
    /// Max page size of `GET /card-types` (100).
    pub const CARD_TYPES_PAGE_MAX: u32 = 100;
    /// Max page size of `GET /tags` (100).
    pub const TAGS_PAGE_MAX: u32 = 100;
    /// Max page size of `GET /company/custom-properties` (500).
    pub const PROPERTY_DEFINITIONS_PAGE_MAX: u32 = 500;
    /// Max page size of `GET /company/custom-properties/{id}/select-values` (100).
    pub const SELECT_VALUES_PAGE_MAX: u32 = 100;
    /// The longest external webhook URL Kaiten accepts, in characters (4096).
    pub const EXTERNAL_WEBHOOK_URL_MAX: usize = 4096;
    /// The select value conditions Kaiten documents; the select value listings ask for all of them.
    pub const SELECT_VALUE_CONDITIONS: [&'static str; 2] = ["active", "inactive"];

    /// A builder with the defaults: 5 requests/s, 4 concurrent requests, 30 s / 10 s timeouts,
    /// [`RetryPolicy::default`], user agent `kaiten-sync/<version>`.
    pub fn builder() -> KaitenClientBuilder {
        KaitenClientBuilder::default()
    }

    /// A client with the defaults, its base URL from `KAITEN_API_URL` and its token from
    /// `KAITEN_API_TOKEN`. Fails naming a missing variable (`KAITEN_API_TOKEN is not set`).
    pub fn from_env() -> Result<KaitenClient> {
        KaitenClientBuilder::from_env()?.build()
    }

    /// The normalised base URL, without a trailing slash (e.g. `https://x.kaiten.ru/api/latest`).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Requests, retries and 429 answers so far, of this client and all its clones.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.inner.requests.load(Ordering::Relaxed),
            retries: self.inner.retries.load(Ordering::Relaxed),
            rate_limited: self.inner.rate_limited.load(Ordering::Relaxed),
        }
    }

    /// `GET {path}` (relative to the base URL, e.g. `/spaces/7`) as raw JSON, with the same rate limit,
    /// retries and errors as the typed calls. For routes this crate has no typed call for.
    pub async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        let query: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self.inner.get(&path, &query, parse_value).await
    }

    async fn get_one<T: Record>(&self, path: &str) -> Result<T> {
        self.inner.get(path, &[], parse_one::<T>).await
    }

    async fn get_list<T: Record>(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<T>> {
        self.inner.get(path, query, parse_many::<T>).await
    }

    /// A stream over a paged route `path` with `max` records a page and `extra` query parameters.
    fn paged<T: Record>(
        &self,
        path: String,
        max: u32,
        extra: Vec<(&'static str, String)>,
    ) -> BoxStream<'static, Result<T>> {
        let client = self.clone();
        let pager = Pager::new(format!("GET {path}"), max);
        paged_stream(pager, move |page| {
            let (client, path) = (client.clone(), path.clone());
            let mut query = extra.clone();
            query.extend(page_params(page, max));
            async move { client.get_list(&path, &query).await }
        })
    }

    /// `GET /users/current`: the token's own user.
    pub async fn current_user(&self) -> Result<User> {
        self.get_one("/users/current").await
    }

    /// `GET /spaces`: every space the token sees (the route does not page), each with its embedded
    /// `boards[]` in `raw` (see [`Space::embedded_board_ids`]).
    pub async fn spaces(&self) -> Result<Vec<Space>> {
        self.get_list("/spaces", &[]).await
    }

    /// `GET /spaces/{space_id}/boards`: the boards of a space, without cards.
    pub async fn boards(&self, space_id: SpaceId) -> Result<Vec<Board>> {
        self.get_list(&format!("/spaces/{space_id}/boards"), &[]).await
    }

    /// `GET /boards/{board_id}/columns`: the board's columns, each with its `subcolumns` in `raw`
    /// (see [`Column::subcolumns`]).
    pub async fn columns(&self, board_id: BoardId) -> Result<Vec<Column>> {
        self.get_list(&format!("/boards/{board_id}/columns"), &[]).await
    }

    /// `GET /boards/{board_id}/lanes`: the board's lanes, in every condition Kaiten returns.
    pub async fn lanes(&self, board_id: BoardId) -> Result<Vec<Lane>> {
        self.get_list(&format!("/boards/{board_id}/lanes"), &[]).await
    }

    /// One page of `GET /users?include_inactive=true` (limit clamped to 100): deactivated users
    /// included, since cards keep naming them.
    pub async fn users_page(&self, page: PageRequest) -> Result<Vec<User>> {
        let mut query = vec![("include_inactive", "true".to_owned())];
        query.extend(page_params(page, Self::USERS_PAGE_MAX));
        self.get_list("/users", &query).await
    }

    /// Every user the token sees, deactivated ones included (`include_inactive=true`; without it
    /// Kaiten leaves them out while cards still name them as owner, member or property value).
    pub async fn users(&self) -> Result<Vec<User>> {
        self.users_stream().try_collect().await
    }

    /// Every user the token sees, deactivated ones included, page by page.
    pub fn users_stream(&self) -> BoxStream<'static, Result<User>> {
        self.paged("/users".into(), Self::USERS_PAGE_MAX, vec![("include_inactive", "true".to_owned())])
    }

    /// One page of `GET /card-types` (limit clamped to 100).
    pub async fn card_types_page(&self, page: PageRequest) -> Result<Vec<CardType>> {
        self.get_list("/card-types", &page_params(page, Self::CARD_TYPES_PAGE_MAX)).await
    }

    /// Every card type.
    pub async fn card_types(&self) -> Result<Vec<CardType>> {
        self.card_types_stream().try_collect().await
    }

    /// Every card type, page by page.
    pub fn card_types_stream(&self) -> BoxStream<'static, Result<CardType>> {
        self.paged("/card-types".into(), Self::CARD_TYPES_PAGE_MAX, Vec::new())
    }

    /// One page of `GET /tags` (limit clamped to 100).
    pub async fn tags_page(&self, page: PageRequest) -> Result<Vec<Tag>> {
        self.get_list("/tags", &page_params(page, Self::TAGS_PAGE_MAX)).await
    }

    /// Every tag (Kaiten may leave out tags that are on no card).
    pub async fn tags(&self) -> Result<Vec<Tag>> {
        self.tags_stream().try_collect().await
    }

    /// Every tag, page by page.
    pub fn tags_stream(&self) -> BoxStream<'static, Result<Tag>> {
        self.paged("/tags".into(), Self::TAGS_PAGE_MAX, Vec::new())
    }

    /// One page of `GET /company/custom-properties` (limit clamped to 500).
    pub async fn property_definitions_page(&self, page: PageRequest) -> Result<Vec<PropertyDefinition>> {
        self.get_list("/company/custom-properties", &page_params(page, Self::PROPERTY_DEFINITIONS_PAGE_MAX)).await
    }

    /// Every custom property definition of the company.
    pub async fn property_definitions(&self) -> Result<Vec<PropertyDefinition>> {
        self.property_definitions_stream().try_collect().await
    }

    /// Every custom property definition, page by page.
    pub fn property_definitions_stream(&self) -> BoxStream<'static, Result<PropertyDefinition>> {
        self.paged("/company/custom-properties".into(), Self::PROPERTY_DEFINITIONS_PAGE_MAX, Vec::new())
    }

    /// One page of `GET /company/custom-properties/{property_id}/select-values` in every condition
    /// (with `v2_select_search=true`, without which Kaiten ignores the limit and filters, and
    /// `conditions[]` for each of [`SELECT_VALUE_CONDITIONS`](Self::SELECT_VALUE_CONDITIONS),
    /// without which only active values come back; limit clamped to 100).
    pub async fn select_values_page(&self, property_id: PropertyId, page: PageRequest) -> Result<Vec<SelectValue>> {
        let mut query = select_value_params();
        query.extend(page_params(page, Self::SELECT_VALUES_PAGE_MAX));
        self.get_list(&format!("/company/custom-properties/{property_id}/select-values"), &query).await
    }

    /// Every value of a select-type custom property, inactive and removed ones included, since
    /// cards keep holding them (all pages).
    pub async fn select_values(&self, property_id: PropertyId) -> Result<Vec<SelectValue>> {
        self.select_values_stream(property_id).try_collect().await
    }

    /// Every value of a select-type custom property in every condition, page by page.
    pub fn select_values_stream(&self, property_id: PropertyId) -> BoxStream<'static, Result<SelectValue>> {
        self.paged(
            format!("/company/custom-properties/{property_id}/select-values"),
            Self::SELECT_VALUES_PAGE_MAX,
            select_value_params(),
        )
    }

    /// One page of `GET /cards` with the filters of `query` (limit clamped to 100, `broken_api=false`).
    pub async fn cards_page(&self, query: &CardQuery, page: PageRequest) -> Result<Vec<Card>> {
        self.get_list("/cards", &card_params(query, page)).await
    }

    /// Every card matching `query`, page by page through [`cards_page`](Self::cards_page), with the
    /// guards of [`Pager`] (no card is yielded twice in one stream).
    pub fn cards_stream(&self, query: CardQuery) -> BoxStream<'static, Result<Card>> {
        let client = self.clone();
        let query = Arc::new(query);
        paged_stream(Pager::new("GET /cards", Self::CARDS_PAGE_MAX), move |page| {
            let (client, query) = (client.clone(), query.clone());
            async move { client.cards_page(&query, page).await }
        })
    }

    /// `GET /cards/{id}`: one card with its expanded relations (members, tags, checklists, ...) in `raw`.
    pub async fn card(&self, id: CardId) -> Result<Card> {
        self.get_one(&format!("/cards/{id}")).await
    }

    /// `GET /spaces/{space_id}/external-webhooks`: the space's external webhook (Kaiten holds at most
    /// one per space), an undocumented route. Errors worth telling apart: [`Error::PaymentRequired`]
    /// (402, webhooks are not in the plan) and [`Error::Forbidden`] (403, the token's user is not an
    /// admin of the space).
    pub async fn external_webhooks(&self, space_id: SpaceId) -> Result<Vec<ExternalWebhook>> {
        let path = format!("/spaces/{space_id}/external-webhooks");
        let result = self.inner.request(Method::Get, &path, &[], None, parse_many::<ExternalWebhook>).await;
        withhold_webhook_urls(result, None)
    }

    /// `POST /spaces/{space_id}/external-webhooks` with `{"url": url}`: registers the space's webhook
    /// (enabled). A space that already has one answers 400 ([`Error::BadRequest`]): repoint it with
    /// [`KaitenClient::update_external_webhook`]. URLs longer than
    /// [`KaitenClient::EXTERNAL_WEBHOOK_URL_MAX`] characters are refused without a request.
    ///
    /// Not idempotent, so never repeated after a timeout, a dropped connection or a 5xx (the webhook
    /// may exist by then): only after a 429 or a connection that could not be made. After such an
    /// error, list the space's webhooks before trying again. The URL holds a secret: it appears in no
    /// error and no log (errors and `Debug` show it masked).
    pub async fn create_external_webhook(&self, space_id: SpaceId, url: &str) -> Result<ExternalWebhook> {
        check_webhook_url(url)?;
        let path = format!("/spaces/{space_id}/external-webhooks");
        let body = serde_json::json!({ "url": url });
        let result = self.inner.request(Method::Post, &path, &[], Some(&body), parse_one::<ExternalWebhook>).await;
        withhold_webhook_urls(result, Some(url))
    }

    /// `PATCH /spaces/{space_id}/external-webhooks/{id}`: repoints (`url`) and/or enables or disables
    /// (`enabled`) the space's webhook; `None` leaves a field as it is. Kaiten has no working DELETE
    /// (405): disabling is how a webhook is removed. Setting fields to given values is idempotent, so
    /// this is retried like a `GET`.
    pub async fn update_external_webhook(
        &self,
        space_id: SpaceId,
        id: WebhookId,
        url: Option<&str>,
        enabled: Option<bool>,
    ) -> Result<ExternalWebhook> {
        let mut body = serde_json::Map::new();
        if let Some(url) = url {
            check_webhook_url(url)?;
            body.insert("url".to_owned(), Value::from(url));
        }
        if let Some(enabled) = enabled {
            body.insert("enabled".to_owned(), Value::from(enabled));
        }
        let path = format!("/spaces/{space_id}/external-webhooks/{id}");
        let body = Value::Object(body);
        let result = self.inner.request(Method::Patch, &path, &[], Some(&body), parse_one::<ExternalWebhook>).await;
        withhold_webhook_urls(result, url)
    }
}

/// Refuses a webhook URL Kaiten would refuse anyway (too long), without echoing it.
fn check_webhook_url(url: &str) -> Result<()> {
    let length = url.chars().count();
    if length > KaitenClient::EXTERNAL_WEBHOOK_URL_MAX {
        return Err(Error::InvalidConfig(format!(
            "a webhook URL may hold at most {} characters; this one has {length}",
            KaitenClient::EXTERNAL_WEBHOOK_URL_MAX
        )));
    }
    Ok(())
}

/// Keeps webhook URLs (which hold secrets) out of errors: a body snippet is withheld (it may quote a
/// URL) and the URL sent, if Kaiten's message quotes it, is masked.
fn withhold_webhook_urls<T>(result: Result<T>, sent: Option<&str>) -> Result<T> {
    result.map_err(|error| match error {
        Error::Decode { route, reason, .. } => {
            Error::Decode { route, reason, body_snippet: "[withheld: the body holds webhook URLs]".to_owned() }
        }
        Error::BadRequest { route, status, message } => {
            let message = match sent.map(str::trim).filter(|url| !url.is_empty()) {
                Some(url) => message.replace(url, &crate::redact::mask_webhook_url(url)),
                None => message,
            };
            Error::BadRequest { route, status, message }
        }
        Error::PaymentRequired { route, message } => {
            let message = match sent.map(str::trim).filter(|url| !url.is_empty()) {
                Some(url) => message.replace(url, &crate::redact::mask_webhook_url(url)),
                None => message,
            };
            Error::PaymentRequired { route, message }
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BoardId, ColumnId, LaneId, SpaceId};
    use crate::models::Condition;
    use crate::query::OrderDirection;
    use chrono::TimeZone;

    #[test]
    fn card_params_cover_every_filter() {
        let mut query = CardQuery::new();
        query.updated_after = Some(chrono::Utc.timestamp_millis_opt(1_728_902_896_594).unwrap());
        query.updated_before = Some(chrono::Utc.timestamp_millis_opt(1_728_902_900_000).unwrap());
        query.space_id = Some(SpaceId(1));
        query.board_id = Some(BoardId(2));
        query.column_id = Some(ColumnId(3));
        query.lane_id = Some(LaneId(4));
        query.condition = Some(Condition::Archived);
        query.archived = Some(true);
        query.order_by = Some("updated".into());
        query.order_direction = Some(OrderDirection::Asc);
        query.additional_card_fields = vec!["description".into(), "checklists".into()];
        let params = card_params(&query, PageRequest { limit: 500, offset: 200 });
        let get = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("updated_after"), Some("2024-10-14T10:48:16.594Z"));
        assert_eq!(get("updated_before"), Some("2024-10-14T10:48:20.000Z"));
        assert_eq!(get("space_id"), Some("1"));
        assert_eq!(get("board_id"), Some("2"));
        assert_eq!(get("column_id"), Some("3"));
        assert_eq!(get("lane_id"), Some("4"));
        assert_eq!(get("condition"), Some("2"));
        assert_eq!(get("archived"), Some("true"));
        assert_eq!(get("order_by"), Some("updated"));
        assert_eq!(get("order_direction"), Some("asc"));
        assert_eq!(get("additional_card_fields"), Some("description,checklists"));
        assert_eq!(get("limit"), Some("100"));
        assert_eq!(get("offset"), Some("200"));
        assert_eq!(get("broken_api"), Some("false"));
        let empty = card_params(&CardQuery::new(), PageRequest { limit: 0, offset: 0 });
        assert_eq!(empty, vec![("limit", "1".into()), ("offset", "0".into()), ("broken_api", "false".into())]);
    }
}
