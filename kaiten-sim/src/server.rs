//! The HTTP side: accept loop, cross-cutting behaviour (log, latency, rate limit, auth, faults) and the
//! Kaiten routes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, patch};
use axum::Router;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

use crate::cards::{lock, CardFilter, CursorCache, OrderKey};
use crate::company::{Company, HookError};
use crate::config::{Faults, WebhookDenial};
use crate::webhook::Webhooks;

/// State shared by the server and every [`Simulator`](crate::Simulator) handle.
pub(crate) struct Shared {
    pub company: RwLock<Company>,
    pub cursors: Mutex<CursorCache>,
    pub token: String,
    pub limiter: Mutex<RateLimiter>,
    pub latency: Mutex<Duration>,
    pub faults: Mutex<Faults>,
    pub fault_rng: Mutex<StdRng>,
    pub request_count: AtomicU64,
    /// Requests still to answer 429 in an injected storm ([`Faults::rate_limited_burst`]).
    pub storm_left: std::sync::atomic::AtomicU32,
    pub request_log: Mutex<Vec<String>>,
    pub webhooks: Webhooks,
}

impl Shared {
    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, Company> {
        self.company.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, Company> {
        self.company.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limit

/// A sliding-window limiter over all requests.
pub(crate) struct RateLimiter {
    per_second: Option<f64>,
    hits: VecDeque<Instant>,
}

struct RateInfo {
    limit: usize,
    remaining: usize,
    reset: u64,
    allowed: bool,
}

impl RateLimiter {
    pub(crate) fn new(per_second: Option<f64>) -> RateLimiter {
        RateLimiter { per_second, hits: VecDeque::new() }
    }

    pub(crate) fn set(&mut self, per_second: Option<f64>) {
        self.per_second = per_second;
        self.hits.clear();
    }

    /// Counts a request if the window has room; `None` when there is no limit.
    fn check(&mut self) -> Option<RateInfo> {
        let rate = self.per_second?;
        // Below one request a second the window stretches so that one request fits in it.
        let (cap, window) = if rate >= 1.0 {
            (rate.floor() as usize, Duration::from_secs(1))
        } else if rate > 0.0 {
            (1, Duration::from_secs_f64(1.0 / rate))
        } else {
            (0, Duration::from_secs(1))
        };
        let now = Instant::now();
        while self.hits.front().is_some_and(|&t| now.duration_since(t) >= window) {
            self.hits.pop_front();
        }
        let allowed = self.hits.len() < cap;
        if allowed {
            self.hits.push_back(now);
        }
        let wait = self.hits.front().map_or(Duration::ZERO, |&t| (t + window).saturating_duration_since(now));
        let reset =
            (SystemTime::now() + wait).duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64().ceil() as u64;
        Some(RateInfo { limit: cap, remaining: cap.saturating_sub(self.hits.len()), reset, allowed })
    }
}

fn add_rate_headers(response: &mut Response<Body>, info: Option<&RateInfo>) {
    if let Some(info) = info {
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", HeaderValue::from(info.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(info.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(info.reset));
    }
}

// ---------------------------------------------------------------------------------------------
// Accept loop and cross-cutting behaviour

/// Serves connections until `shutdown` changes or its sender is dropped.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let router = router(shared.clone());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (router, shared, mut shutdown) = (router.clone(), shared.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let kill = Arc::new(Notify::new());
                    let service = {
                        let kill = kill.clone();
                        hyper::service::service_fn(move |req| handle(shared.clone(), router.clone(), kill.clone(), req))
                    };
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service);
                    // Dropping the connection future closes the socket without answering.
                    tokio::select! {
                        _ = connection => {}
                        _ = kill.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}

enum Fault {
    None,
    RateLimited(Duration),
    ServerError(u16),
    Drop,
    Truncate,
}

fn draw_fault(shared: &Shared) -> (Fault, Option<Duration>) {
    let faults = lock(&shared.faults).clone();
    if !faults.is_active() {
        return (Fault::None, None);
    }
    let mut rng = lock(&shared.fault_rng);
    let (a, b, c, d): (f64, f64, f64, f64) = (rng.random(), rng.random(), rng.random(), rng.random());
    let storm: f64 = rng.random();
    let code = [500, 502, 503][rng.random_range(0..3)];
    let storming =
        shared.storm_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)).is_ok();
    let fault = if storming {
        Fault::RateLimited(faults.rate_limited_retry_after)
    } else if storm < faults.rate_limited_rate {
        shared.storm_left.store(faults.rate_limited_burst, Ordering::SeqCst);
        Fault::RateLimited(faults.rate_limited_retry_after)
    } else if a < faults.server_error_rate {
        Fault::ServerError(code)
    } else if b < faults.drop_rate {
        Fault::Drop
    } else if c < faults.truncate_rate {
        Fault::Truncate
    } else {
        Fault::None
    };
    (fault, (d < faults.slow_rate).then_some(faults.slow_by))
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn server_error(code: u16) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    text(status, "text/html", body)
}

fn authorized<B>(req: &Request<B>, token: &str) -> bool {
    let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.trim().splitn(2, ' ');
    let scheme = parts.next().unwrap_or_default();
    let given = parts.next().unwrap_or_default().trim();
    scheme.eq_ignore_ascii_case("bearer") && given == token
}

async fn handle(
    shared: Arc<Shared>,
    router: Router,
    kill: Arc<Notify>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let line = format!("{} {}", req.method(), req.uri().path_and_query().map_or("/", |p| p.as_str()));
    {
        let mut log = lock(&shared.request_log);
        log.push(line);
        shared.request_count.fetch_add(1, Ordering::SeqCst);
    }

    let latency = *lock(&shared.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let rate = lock(&shared.limiter).check();
    if let Some(info) = rate.as_ref().filter(|i| !i.allowed) {
        let mut response =
            text(StatusCode::TOO_MANY_REQUESTS, "text/html", "Too many requests, please try again later.".to_owned());
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        add_rate_headers(&mut response, Some(info));
        return Ok(response);
    }

    if !authorized(&req, &shared.token) {
        let mut response = text(StatusCode::UNAUTHORIZED, "text/plain; charset=utf-8", "Invalid token".to_owned());
        add_rate_headers(&mut response, rate.as_ref());
        return Ok(response);
    }

    let (fault, slow) = draw_fault(&shared);
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    let mut response = match fault {
        Fault::RateLimited(wait) => {
            let mut response = text(
                StatusCode::TOO_MANY_REQUESTS,
                "text/html",
                "Too many requests, please try again later.".to_owned(),
            );
            let seconds = format!("{}", wait.as_secs_f64());
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_str(&seconds).expect("a number"));
            return Ok(response);
        }
        Fault::ServerError(code) => server_error(code),
        Fault::Drop => {
            kill.notify_one();
            std::future::pending::<()>().await;
            unreachable!("the connection is dropped with this future")
        }
        Fault::Truncate | Fault::None => {
            let response = router.oneshot(req.map(Body::new)).await.unwrap_or_else(|never| match never {});
            if matches!(fault, Fault::Truncate) && response.status() == StatusCode::OK {
                let (mut parts, body) = response.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
                parts.headers.remove(header::CONTENT_LENGTH);
                Response::from_parts(parts, Body::from(bytes.slice(..bytes.len() / 2)))
            } else {
                response
            }
        }
    };
    add_rate_headers(&mut response, rate.as_ref());
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// Routes

type AppState = State<Arc<Shared>>;
type Params = Query<Vec<(String, String)>>;

fn api() -> Router<Arc<Shared>> {
    Router::new()
        .route("/users/current", get(current_user))
        .route("/users", get(users))
        .route("/spaces", get(spaces))
        .route("/spaces/{id}/boards", get(space_boards))
        .route("/boards/{id}/columns", get(columns))
        .route("/boards/{id}/lanes", get(lanes))
        .route("/card-types", get(card_types))
        .route("/tags", get(tags))
        .route("/company/custom-properties", get(custom_properties))
        .route("/company/custom-properties/{id}/select-values", get(select_values))
        .route("/cards", get(cards))
        .route("/cards/{id}", get(card))
        .route("/spaces/{id}/external-webhooks", get(external_webhooks).post(create_external_webhook))
        .route(
            "/spaces/{id}/external-webhooks/{hook_id}",
            patch(update_external_webhook).get(method_not_allowed).delete(method_not_allowed),
        )
}

/// The Kaiten routes under both `/api/latest` and `/api/v1`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().nest("/api/latest", api()).nest("/api/v1", api()).with_state(shared)
}

fn json_bytes(body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

fn json_value(value: &Value) -> Response<Body> {
    json_bytes(serde_json::to_vec(value).expect("a JSON value always serialises"))
}

fn json_list<'a>(items: impl IntoIterator<Item = &'a Value>) -> Response<Body> {
    let mut out = vec![b'['];
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, item).expect("a JSON value always serialises");
    }
    out.push(b']');
    json_bytes(out)
}

fn not_found() -> Response<Body> {
    StatusCode::NOT_FOUND.into_response()
}

fn bad_request(message: String) -> Response<Body> {
    let mut response = json_value(&serde_json::json!({ "message": message }));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

/// Query parameters with Kaiten's lenient reading: the last occurrence wins, empty means absent,
/// `name[]` is the same as `name`.
struct Q(Vec<(String, String)>);

impl Q {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.trim())
    }

    fn int(&self, name: &str) -> Result<Option<i64>, String> {
        self.get(name)
            .map(|v| v.parse::<i64>().map_err(|_| format!("{name} must be an integer, got {v:?}")))
            .transpose()
    }

    fn count(&self, name: &str) -> Result<Option<usize>, String> {
        self.get(name)
            .map(|v| v.parse::<usize>().map_err(|_| format!("{name} must be a non-negative integer, got {v:?}")))
            .transpose()
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, String> {
        self.get(name)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(format!("{name} must be true or false, got {v:?}")),
            })
            .transpose()
    }

    /// All ids given under any of `names` (each value may be a comma list); `None` when none given.
    fn ids(&self, names: &[&str]) -> Result<Option<Vec<i64>>, String> {
        let mut out = Vec::new();
        let mut any = false;
        for (k, v) in &self.0 {
            let k = k.strip_suffix("[]").unwrap_or(k);
            if !names.contains(&k) || v.trim().is_empty() {
                continue;
            }
            any = true;
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                out.push(part.parse::<i64>().map_err(|_| format!("{k} must be integers, got {v:?}"))?);
            }
        }
        Ok(any.then_some(out))
    }

    /// All values given under `name` or `name[]`, each possibly a comma list; `None` when none given.
    fn strings(&self, name: &str) -> Option<Vec<String>> {
        let values: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| k.strip_suffix("[]").unwrap_or(k) == name)
            .flat_map(|(_, v)| v.split(','))
            .map(|part| part.trim().to_ascii_lowercase())
            .filter(|part| !part.is_empty())
            .collect();
        (!values.is_empty()).then_some(values)
    }

    /// A timestamp as microseconds since the Unix epoch.
    fn time(&self, name: &str) -> Result<Option<i64>, String> {
        self.get(name)
            .map(|v| parse_time(v).ok_or_else(|| format!("{name} must be an ISO 8601 date, got {v:?}")))
            .transpose()
    }

    /// `limit` (default and maximum `max`, larger values clamped) and `offset` (default 0).
    fn page(&self, max: usize) -> Result<(usize, usize), String> {
        let limit = self.count("limit")?.unwrap_or(max).min(max);
        let offset = self.count("offset")?.unwrap_or(0);
        Ok((limit, offset))
    }
}

fn parse_time(s: &str) -> Option<i64> {
    let rfc = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_micros());
    // A '+' offset that was not percent-encoded arrives as a space.
    rfc(s)
        .or_else(|| rfc(&s.replace(' ', "+")))
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), f).ok())
                .map(|t| t.and_utc().timestamp_micros())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_micros())
        })
}

fn page_of<T>(items: &[T], limit: usize, offset: usize) -> &[T] {
    let start = offset.min(items.len());
    &items[start..(start + limit).min(items.len())]
}

fn path_id(id: &str) -> Option<i64> {
    id.parse().ok()
}

async fn current_user(State(shared): AppState) -> Response<Body> {
    json_value(&shared.read().current_user())
}

/// `GET /users`: deactivated users only with `include_inactive=true`, like Kaiten.
async fn users(State(shared): AppState, Query(q): Params) -> Response<Body> {
    let q = Q(q);
    let (limit, offset, include_inactive) = match (q.page(100), q.boolean("include_inactive")) {
        (Ok((limit, offset)), Ok(inactive)) => (limit, offset, inactive.unwrap_or(false)),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    let company = shared.read();
    let users = company.users_listed(include_inactive);
    let page: Vec<Value> = page_of(&users, limit, offset).iter().map(|u| Value::Object((*u).clone())).collect();
    json_list(&page)
}

async fn spaces(State(shared): AppState) -> Response<Body> {
    json_list(&shared.read().spaces_json())
}

async fn space_boards(State(shared): AppState, Path(id): Path<String>) -> Response<Body> {
    let company = shared.read();
    match path_id(&id).filter(|id| company.space(*id).is_some()) {
        Some(id) => json_list(&company.boards_of_space(id)),
        None => not_found(),
    }
}

async fn columns(State(shared): AppState, Path(id): Path<String>) -> Response<Body> {
    let company = shared.read();
    match path_id(&id).filter(|id| company.board(*id).is_some()) {
        Some(id) => json_list(&company.columns_json(id)),
        None => not_found(),
    }
}

/// `GET /boards/{id}/lanes`. Without `condition` every lane comes back with its `condition` (live
/// and archived alike: what Kaiten's documentation implies, the filter being optional); with
/// `condition=1|2|3` only the lanes in that condition.
async fn lanes(State(shared): AppState, Path(id): Path<String>, Query(q): Params) -> Response<Body> {
    let condition = match Q(q).int("condition") {
        Ok(Some(c)) if !(1..=3).contains(&c) => return bad_request(format!("condition must be 1, 2 or 3, got {c}")),
        Ok(c) => c,
        Err(e) => return bad_request(e),
    };
    let company = shared.read();
    match path_id(&id).filter(|id| company.board(*id).is_some()) {
        Some(id) => {
            let lanes = company.lanes_json(id);
            json_list(lanes.iter().filter(|l| condition.is_none_or(|c| l["condition"].as_i64() == Some(c))))
        }
        None => not_found(),
    }
}

fn paged_objects(list: &[crate::shape::Obj], q: Vec<(String, String)>, max: usize) -> Response<Body> {
    match Q(q).page(max) {
        Ok((limit, offset)) => {
            let page: Vec<Value> = page_of(list, limit, offset).iter().cloned().map(Value::Object).collect();
            json_list(&page)
        }
        Err(e) => bad_request(e),
    }
}

async fn card_types(State(shared): AppState, Query(q): Params) -> Response<Body> {
    paged_objects(&shared.read().card_types, q, 100)
}

/// `GET /tags`: like Kaiten, a tag on no card is not in the list.
async fn tags(State(shared): AppState, Query(q): Params) -> Response<Body> {
    let company = shared.read();
    let listed: Vec<crate::shape::Obj> = company.tags_listed().into_iter().cloned().collect();
    paged_objects(&listed, q, 100)
}

async fn custom_properties(State(shared): AppState, Query(q): Params) -> Response<Body> {
    paged_objects(&shared.read().props, q, 500)
}

async fn select_values(State(shared): AppState, Path(id): Path<String>, Query(q): Params) -> Response<Body> {
    let company = shared.read();
    let Some(id) =
        path_id(&id).filter(|id| company.props.iter().any(|p| p.get("id").and_then(Value::as_i64) == Some(*id)))
    else {
        return not_found();
    };
    let values = company.select_values_of(id);
    let q = Q(q);
    let condition_of = |v: &Value| v["condition"].as_str().unwrap_or("active").to_owned();
    // Without v2_select_search Kaiten ignores limit, offset and filters: every active value.
    match q.boolean("v2_select_search") {
        Ok(Some(true)) => {
            // `conditions` (repeated, comma-separated or `conditions[]`) picks the conditions;
            // without it, only active values, like a real tenant.
            let wanted = q.strings("conditions").unwrap_or_else(|| vec!["active".to_owned()]);
            let values: Vec<Value> = values.into_iter().filter(|v| wanted.contains(&condition_of(v))).collect();
            match q.page(100) {
                Ok((limit, offset)) => json_list(page_of(&values, limit, offset)),
                Err(e) => bad_request(e),
            }
        }
        Ok(_) => json_list(values.iter().filter(|v| condition_of(v) == "active")),
        Err(e) => bad_request(e),
    }
}

async fn card(State(shared): AppState, Path(id): Path<String>) -> Response<Body> {
    match path_id(&id).and_then(|id| shared.read().card_detail(id)) {
        Some(card) => json_value(&card),
        None => not_found(),
    }
}

fn card_filter(q: &Q) -> Result<(CardFilter, Option<i64>, Option<i64>), String> {
    let (limit, offset) = q.page(100)?;
    let condition = q.int("condition")?;
    if let Some(c) = condition {
        if !(1..=3).contains(&c) {
            return Err(format!("condition must be 1, 2 or 3, got {c}"));
        }
    }
    let order = match q.get("order_by") {
        None => OrderKey::Id,
        Some(v) => OrderKey::parse(v)
            .ok_or_else(|| format!("order_by must be one of id, created, updated, sort_order, title; got {v:?}"))?,
    };
    let desc = match q.get("order_direction").map(str::to_ascii_lowercase).as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => return Err(format!("order_direction must be asc or desc, got {other:?}")),
    };
    let with_description =
        q.get("additional_card_fields").is_some_and(|v| v.split(',').any(|f| f.trim() == "description"));
    let filter = CardFilter {
        updated_after: q.time("updated_after")?,
        updated_before: q.time("updated_before")?,
        created_after: q.time("created_after")?,
        created_before: q.time("created_before")?,
        board_ids: None,
        column_ids: q.ids(&["column_id", "column_ids"])?,
        lane_ids: q.ids(&["lane_id", "lane_ids"])?,
        type_ids: q.ids(&["type_id", "type_ids"])?,
        owner_ids: q.ids(&["owner_id", "owner_ids"])?,
        tag_ids: q.ids(&["tag_ids"])?,
        states: q.ids(&["states"])?,
        condition,
        archived: q.boolean("archived")?,
        order,
        desc,
        limit,
        offset,
        with_description,
    };
    Ok((filter, q.int("board_id")?, q.int("space_id")?))
}

async fn cards(State(shared): AppState, Query(q): Params) -> Response<Body> {
    let (mut filter, board_id, space_id) = match card_filter(&Q(q)) {
        Ok(parsed) => parsed,
        Err(e) => return bad_request(e),
    };
    {
        // A tenant that pages differently from Kaiten's documentation (see `Faults`).
        let faults = lock(&shared.faults);
        if let Some(cap) = faults.cards_page_cap {
            filter.limit = filter.limit.min(cap);
        }
        if faults.cards_ignore_offset {
            filter.offset = 0;
        }
        if faults.cards_ignore_updated_after {
            filter.updated_after = None;
        }
        if faults.cards_ignore_updated_before {
            filter.updated_before = None;
        }
    }
    let company = shared.read();
    if board_id.is_some() || space_id.is_some() {
        let boards = company
            .boards
            .iter()
            .filter_map(|b| {
                let id = b.get("id").and_then(Value::as_i64)?;
                let space = b.get("space_id").and_then(Value::as_i64);
                (board_id.is_none_or(|want| want == id) && space_id.is_none_or(|want| Some(want) == space))
                    .then_some(id)
            })
            .collect();
        filter.board_ids = Some(boards);
    }
    json_bytes(company.cards.query(&filter, &shared.cursors))
}

// ---------------------------------------------------------------------------------------------
// External webhooks (undocumented in Kaiten's docs, seen in public clients)

/// What Kaiten says when the plan lacks external webhooks.
const NOT_IN_PLAN: &str = "External webhooks are not available on your current plan";

fn json_status(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = json_value(value);
    *response.status_mut() = status;
    response
}

/// The space id of an external-webhook route after the checks every such route shares: the space
/// exists (else 404), the plan has the feature (else 402), the token's user is a space admin (else 403).
fn hook_space(company: &Company, id: &str) -> Result<i64, HookError> {
    let space_id = path_id(id).filter(|id| company.space(*id).is_some()).ok_or(HookError::NotFound)?;
    match company.webhook_denials.get(&space_id) {
        Some(WebhookDenial::NotInPlan) => Err(HookError::NotInPlan),
        Some(WebhookDenial::NotAdmin) => Err(HookError::NotAdmin),
        None => Ok(space_id),
    }
}

fn hook_error(error: HookError) -> Response<Body> {
    match error {
        HookError::NotFound => not_found(),
        HookError::BadRequest(message) => bad_request(message),
        HookError::NotInPlan => {
            json_status(StatusCode::PAYMENT_REQUIRED, &serde_json::json!({ "message": NOT_IN_PLAN }))
        }
        HookError::NotAdmin => StatusCode::FORBIDDEN.into_response(),
    }
}

/// The JSON object of a write's body; a body that is not one is a 400.
fn body_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, HookError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(HookError::BadRequest("the body must be a JSON object".to_owned())),
    }
}

async fn external_webhooks(State(shared): AppState, Path(id): Path<String>) -> Response<Body> {
    let company = shared.read();
    match hook_space(&company, &id) {
        Ok(space_id) => json_list(&company.external_webhooks_of(space_id)),
        Err(error) => hook_error(error),
    }
}

async fn create_external_webhook(State(shared): AppState, Path(id): Path<String>, body: Bytes) -> Response<Body> {
    let mut company = shared.write();
    let space_id = match hook_space(&company, &id) {
        Ok(space_id) => space_id,
        Err(error) => return hook_error(error),
    };
    let url = match body_object(&body) {
        Ok(map) => match map.get("url") {
            Some(Value::String(url)) => url.clone(),
            _ => return bad_request("url is required".to_owned()),
        },
        Err(error) => return hook_error(error),
    };
    match company.create_external_webhook(space_id, &url) {
        Ok(hook) => json_value(&hook),
        Err(error) => hook_error(error),
    }
}

async fn update_external_webhook(
    State(shared): AppState,
    Path((id, hook_id)): Path<(String, String)>,
    body: Bytes,
) -> Response<Body> {
    let mut company = shared.write();
    let space_id = match hook_space(&company, &id) {
        Ok(space_id) => space_id,
        Err(error) => return hook_error(error),
    };
    let Some(hook_id) = path_id(&hook_id) else {
        return not_found();
    };
    let map = match body_object(&body) {
        Ok(map) => map,
        Err(error) => return hook_error(error),
    };
    let url = match map.get("url") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => Some(url.clone()),
        Some(_) => return bad_request("url must be a string".to_owned()),
    };
    let enabled = match map.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(enabled)) => Some(*enabled),
        Some(_) => return bad_request("enabled must be a boolean".to_owned()),
    };
    match company.update_external_webhook(space_id, hook_id, url.as_deref(), enabled) {
        Ok(hook) => json_value(&hook),
        Err(error) => hook_error(error),
    }
}

/// GET by id and DELETE of an external webhook: the path exists, the method does not.
async fn method_not_allowed() -> Response<Body> {
    StatusCode::METHOD_NOT_ALLOWED.into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn parses_kaiten_timestamps() {
        let z = parse_time("2025-03-01T10:00:00.000Z").unwrap();
        assert_eq!(parse_time("2025-03-01T10:00:00Z"), Some(z));
        assert_eq!(parse_time("2025-03-01T13:00:00+03:00"), Some(z));
        assert_eq!(parse_time("2025-03-01T13:00:00 03:00"), Some(z));
        assert_eq!(parse_time("2025-03-01T10:00:00"), Some(z));
        assert!(parse_time("2025-03-01").is_some());
        assert_eq!(parse_time("garbage"), None);
    }
}
