//! What company to generate and how the server behaves.

use std::time::Duration;

/// Configuration of a [`Simulator`](crate::Simulator): the size of the generated company and the
/// behaviour of the HTTP server (token, rate limit, latency, faults).
///
/// Every field is public; start from one of the presets and change what you need:
///
/// ```
/// let config = kaiten_sim::SimConfig { cards: 500, seed: 7, ..kaiten_sim::SimConfig::small() };
/// assert_eq!(config.token, "sim-token");
/// ```
///
/// Sizes below the minimum that makes sense are raised when the company is generated: at least one
/// space, one board per space, one column and one lane per board and one user.
///
/// Every preset also carries what real tenants send and a forgiving simulator would hide (see
/// "Traps a faithful mirror must survive" in `kaiten-api.md`): deactivated users that cards still
/// name, archived lanes, select values that are no longer active but still on cards, a tag on no
/// card (so missing from `GET /tags`), and date-only `due_date`s (`"2025-03-01"`).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of every random choice: the same seed and sizes give the same company, byte for byte.
    pub seed: u64,
    /// Number of spaces (every third space from the third on is nested in an earlier one).
    pub spaces: usize,
    /// Boards in each space.
    pub boards_per_space: usize,
    /// Top-level columns of each generated board (first is a queue, last is done, the rest in progress).
    pub columns_per_board: usize,
    /// Subcolumns nested in one top-level column of each board (the second, or the only one);
    /// cards of that column live in its subcolumns. 0 = no subcolumns.
    pub subcolumns_per_column: usize,
    /// Live lanes (swimlanes) of each generated board.
    pub lanes_per_board: usize,
    /// Archived lanes (`condition` 2) of each generated board, after the live ones; no card lives
    /// in them.
    pub archived_lanes_per_board: usize,
    /// Users of the company; the first one owns the token (`GET /users/current`).
    pub users: usize,
    /// Of those users, how many (the last ones) are deactivated (`activated: false`, `role` 3):
    /// `GET /users` leaves them out unless asked `include_inactive=true`, yet every tenth card is
    /// owned by one and names one in its user-type property.
    pub deactivated_users: usize,
    /// Tags. With two or more, the last one is on no card, so `GET /tags` leaves it out.
    pub tags: usize,
    /// Card types.
    pub card_types: usize,
    /// Custom property definitions, cycling through every common type: string, number, date,
    /// checkbox, select (with select values), user, url, email. The last value of each select is
    /// inactive (`condition: "inactive"`): `select-values?v2_select_search=true` leaves it out unless
    /// `conditions` asks for it, yet cards still hold it.
    pub custom_properties: usize,
    /// Cards in all, spread over all boards.
    pub cards: usize,
    /// Fraction of the cards that are archived (`condition` 2, `archived` true).
    pub archived_ratio: f64,
    /// The bearer token the server expects.
    pub token: String,
    /// Requests per second over a sliding one-second window; `None` = unlimited.
    pub rate_limit: Option<f64>,
    /// Delay added before every response.
    pub latency: Duration,
    /// Injected failures.
    pub faults: Faults,
}

impl Default for SimConfig {
    /// [`SimConfig::small`].
    fn default() -> Self {
        Self::small()
    }
}

impl SimConfig {
    /// A small company for unit and integration tests: 2 spaces of 2 boards, 3 columns (one with 2
    /// subcolumns), 2 live lanes and 1 archived lane, 105 users (5 deactivated, so `GET /users`
    /// takes two pages), 4 tags, 3 card types, 8 custom properties (one of each type), 60 cards
    /// (6 archived); no rate limit, no latency, token `sim-token`.
    pub fn small() -> Self {
        SimConfig {
            seed: 42,
            spaces: 2,
            boards_per_space: 2,
            columns_per_board: 3,
            subcolumns_per_column: 2,
            lanes_per_board: 2,
            archived_lanes_per_board: 1,
            users: 105,
            deactivated_users: 5,
            tags: 4,
            card_types: 3,
            custom_properties: 8,
            cards: 60,
            archived_ratio: 0.1,
            token: "sim-token".to_owned(),
            rate_limit: None,
            latency: Duration::ZERO,
            faults: Faults::default(),
        }
    }

    /// A company that feels like a real one in a demo: 3 spaces of 7 boards (21 boards), 2,000
    /// cards, 20 users (2 deactivated); Kaiten's documented 5 requests per second and 20 ms of latency.
    pub fn demo() -> Self {
        SimConfig {
            seed: 2026,
            spaces: 3,
            boards_per_space: 7,
            columns_per_board: 4,
            subcolumns_per_column: 2,
            lanes_per_board: 3,
            archived_lanes_per_board: 1,
            users: 20,
            deactivated_users: 2,
            tags: 12,
            card_types: 4,
            custom_properties: 16,
            cards: 2_000,
            archived_ratio: 0.1,
            token: "sim-token".to_owned(),
            rate_limit: Some(5.0),
            latency: Duration::from_millis(20),
            faults: Faults::default(),
        }
    }

    /// A company for benchmarks: `cards` cards on about 1,000 cards a board (boards spread over
    /// spaces of at most 10 boards); no rate limit, no latency, no faults.
    pub fn bench(cards: usize) -> Self {
        let boards = cards.div_ceil(1_000).max(1);
        let spaces = boards.div_ceil(10).max(1);
        let boards_per_space = boards.div_ceil(spaces);
        SimConfig {
            seed: 7,
            spaces,
            boards_per_space,
            columns_per_board: 4,
            subcolumns_per_column: 2,
            lanes_per_board: 2,
            archived_lanes_per_board: 1,
            users: 50,
            deactivated_users: 5,
            tags: 20,
            card_types: 5,
            custom_properties: 16,
            cards,
            archived_ratio: 0.1,
            token: "sim-token".to_owned(),
            rate_limit: None,
            latency: Duration::ZERO,
            faults: Faults::default(),
        }
    }
}

/// Failures injected into responses. Each rate is a probability (0.0..=1.0) drawn per request, after
/// authentication, from an RNG seeded with [`SimConfig::seed`].
///
/// At most one of 429 (a storm in progress, or a new one), server error, dropped connection and
/// truncated body applies to a request (checked in that order); a slow response can combine with
/// any of them.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// A 500, 502 or 503 with a small HTML body (`content-type: text/html`).
    pub server_error_rate: f64,
    /// The connection is closed without any response: the client sees a connection error.
    pub drop_rate: f64,
    /// A successful (200) response whose JSON body is cut in half; the content-type stays
    /// `application/json` and `content-length` matches the cut body.
    pub truncate_rate: f64,
    /// A 429 with `Retry-After` of [`Faults::rate_limited_retry_after`] (in fractional seconds),
    /// as Kaiten answers a token over its rate limit. Each one
    /// starts a storm: the next [`Faults::rate_limited_burst`] requests get a 429 too.
    pub rate_limited_rate: f64,
    /// Further requests answered 429 after each drawn one (0: single 429s).
    pub rate_limited_burst: u32,
    /// The `Retry-After` of an injected 429 (zero is sent as `0`).
    pub rate_limited_retry_after: Duration,
    /// The response is delayed by an extra [`Faults::slow_by`].
    pub slow_rate: f64,
    /// Extra delay of a slow response.
    pub slow_by: Duration,
    /// `GET /cards` clamps `limit` to this many cards instead of Kaiten's 100: a tenant whose
    /// page-size maximum is smaller than what a client asks for (the clamp is silent, as Kaiten's
    /// is). `None` (the default): 100. Not a random fault: every card listing is clamped.
    pub cards_page_cap: Option<usize>,
    /// `GET /cards` ignores `offset`: every request is answered from the first matching card.
    pub cards_ignore_offset: bool,
    /// `GET /cards` ignores `updated_after`.
    pub cards_ignore_updated_after: bool,
    /// `GET /cards` ignores `updated_before` (a listing asked for a window of time runs on past it).
    pub cards_ignore_updated_before: bool,
}

impl Faults {
    /// No faults (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether any random fault can happen (the `cards_*` paging behaviours are not random and
    /// not counted here).
    pub fn is_active(&self) -> bool {
        self.server_error_rate > 0.0
            || self.drop_rate > 0.0
            || self.truncate_rate > 0.0
            || self.slow_rate > 0.0
            || self.rate_limited_rate > 0.0
    }
}

/// Why a space refuses its external-webhook routes (`/spaces/{id}/external-webhooks`), as a real
/// tenant can: set per space with
/// [`Simulator::set_external_webhook_denial`](crate::Simulator::set_external_webhook_denial).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WebhookDenial {
    /// The feature is not in the customer's plan: every route answers 402 with a JSON `message`.
    NotInPlan,
    /// The token's user is not an admin of the space: every route answers 403 with no body.
    NotAdmin,
}
