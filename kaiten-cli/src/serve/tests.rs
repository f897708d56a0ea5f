//! Tests of the routes, the guard, the page and the schedule (in-process, against the simulator).

use super::guard::{
    base64, bearer_token, cross_site, is_loopback_host, percent_encode, style_hash, ADMIN_BODY_LIMIT, MAX_HEADERS,
    MAX_HEADER_BYTES, MAX_URI_BYTES, WEBHOOK_BODY_LIMIT,
};

use super::schedule::{parse_hhmm, FullSchedule};
use super::*;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, StatusCode};
use chrono::{DateTime, NaiveTime, Utc};
use kaiten_client::Secret;
use kaiten_sim::{SimConfig, Simulator};
use kaiten_sync::{EntityKind, MemoryStore, RunKind, RunStatus};
use kaiten_sync::{RunRecord, Store, SyncOptions, WebhookOptions};
use serde_json::json;
use tower::ServiceExt;

const SECRET: &str = "serve-test-secret-0123456789";
const TOKEN: &str = "admin-token-0123456789abcdef";

struct Fixture {
    sim: Simulator,
    store: Arc<dyn Store>,
    state: AppState,
}

async fn fixture(admin_token: Option<&str>) -> Fixture {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let client = crate::config::client(&sim.base_url(), &sim.token(), 0.0, Duration::from_secs(10)).expect("client");
    let state = AppState::new(ServeConfig {
        store: store.clone(),
        client,
        webhook_secret: Secret::new(SECRET),
        hmac_header: None,
        admin_token: admin_token.map(Secret::new),
        schedule: Schedule::default(),
        webhook_options: WebhookOptions::default().with_debounce(Duration::ZERO),
        sync_options: SyncOptions::default(),
    });
    Fixture { sim, store, state }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

async fn send(state: &AppState, req: axum::http::Request<Body>, peer: SocketAddr) -> (StatusCode, HeaderMap, String) {
    let mut req = req;
    req.extensions_mut().insert(ConnectInfo(peer));
    let response = router(state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 10 * 1024 * 1024).await.unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get_req(uri: &str) -> axum::http::Request<Body> {
    axum::http::Request::get(uri).header("host", "127.0.0.1:8080").body(Body::empty()).unwrap()
}

fn post_req(uri: &str, body: impl Into<Body>) -> axum::http::Request<Body> {
    axum::http::Request::post(uri)
        .header("host", "127.0.0.1:8080")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

fn card_add(card: &serde_json::Value) -> String {
    json!({"event": "card:add", "data": card}).to_string()
}

#[tokio::test]
async fn webhook_route_answers_200_401_400_413() {
    let f = fixture(None).await;
    let card = f.sim.create_card(f.sim.board_ids()[0], "Via the route");
    let id = card["id"].as_i64().unwrap();
    let uri = format!("{WEBHOOK_PATH}/{SECRET}");
    // The webhook route is not the admin page: any client may post (Kaiten is not loopback).
    let remote: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let (status, _, body) = send(&f.state, post_req(&uri, card_add(&card)), remote).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["queued"], json!({"kind": "cards", "id": id}));
    assert_eq!(answer["ignored"], false);
    assert!(f.store.get(EntityKind::Cards, id).await.unwrap().is_none(), "acknowledged before it is fetched");
    assert_eq!(f.state.0.webhooks.drain().await.unwrap().applied, 1);
    assert!(f.store.get(EntityKind::Cards, id).await.unwrap().is_some());
    // The earlier path is an alias.
    let (status, _, _) = send(&f.state, post_req(&format!("/webhooks/kaiten/{SECRET}"), card_add(&card)), remote).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, body) =
        send(&f.state, post_req("/webhooks/kaiten/wrong-secret-0123456789", card_add(&card)), remote).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!body.contains(SECRET));

    let (status, _, body) = send(&f.state, post_req(&uri, "<html>not json</html>"), remote).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("webhook body is not JSON"), "{body}");

    let (status, _, _) =
        send(&f.state, post_req(&uri, r#"{"event":"card:add","data":{"title":"no id"}}"#), remote).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let huge = format!(r#"{{"event":"card:add","data":{{"id":1,"title":"{}"}}}}"#, "x".repeat(WEBHOOK_BODY_LIMIT + 10));
    let (status, _, _) = send(&f.state, post_req(&uri, huge), remote).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, _, body) =
        send(&f.state, post_req(&uri, r#"{"event":"automation:run","data":{"id":1}}"#), remote).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"ignored\":true"), "{body}");
}

#[tokio::test]
async fn admin_page_shows_counts_runs_and_escapes_what_the_database_holds() {
    let f = fixture(None).await;
    // Titles from Kaiten (a space, a board) and a run's error and scope, each with markup, a quote
    // and an ampersand: every page section showing them shows them as text.
    let space = f.sim.space_ids()[0];
    f.sim.update_space(space, json!({"title": "<script>alert(\"space\")</script> & co"}));
    let board = f.sim.add_board(space, "<script>alert(\"board\")</script> & co");
    let card = f.sim.create_card(board, "<script>alert('card')</script>");
    let (status, _, _) =
        send(&f.state, post_req(&format!("{WEBHOOK_PATH}/{SECRET}"), card_add(&card)), loopback()).await;
    assert_eq!(status, StatusCode::OK);
    f.state.0.webhooks.drain().await.unwrap();
    let mut failed = RunRecord::start(RunKind::Incremental, vec![EntityKind::Cards], None, Utc::now());
    failed.id = f.store.start_run(&failed).await.unwrap();
    failed.status = RunStatus::Failed;
    failed.error = Some("<script>alert(\"error\")</script> & more".into());
    failed.scope = Some("<script>alert(\"scope\")</script> & more".into());
    f.store.update_run(&failed).await.unwrap();
    let error = "&lt;script&gt;alert(&quot;error&quot;)&lt;/script&gt; &amp; more";
    let scope = "&lt;script&gt;alert(&quot;scope&quot;)&lt;/script&gt; &amp; more";

    let (status, headers, html) = send(&f.state, get_req(ADMIN_PATH), loopback()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert_eq!(send(&f.state, get_req("/"), loopback()).await.0, StatusCode::OK, "/ is an alias");
    // The one script element is the page's own app.js: nothing from the database reaches the page unescaped.
    assert_eq!(html.matches("<script").count(), 1, "nothing from the database reaches the page unescaped");
    assert!(html.contains("<script src=\"/admin/sync/app.js\""));
    assert!(html.contains("&lt;script&gt;alert(&quot;error&quot;)&lt;/script&gt; &amp; more"), "{html}");
    assert!(html.contains(&format!("<td class=\"scope\">{scope}</td><td class=\"err\">{error}</td>")), "{html}");
    let board_option = format!(
        "<option value=\"{board}\">&lt;script&gt;alert(&quot;board&quot;)&lt;/script&gt; &amp; co · {board}</option>"
    );
    assert!(html.contains(&board_option), "the board select: {html}");
    let space_title = "&lt;script&gt;alert(&quot;space&quot;)&lt;/script&gt; &amp; co";
    assert!(html.contains(&format!("<option value=\"{space}\">{space_title} · {space}</option>")), "{html}");
    assert!(html.contains(&format!("<optgroup label=\"{space_title}\">")), "the board group, an attribute: {html}");
    // Counts: one card, its board, columns and lanes fetched as parents.
    assert!(html.contains("<tr><td>cards</td><td class=\"num\">1</td><td class=\"num\">0</td></tr>"), "{html}");
    assert!(html.contains(&format!("id=\"run-{}\"", failed.id)));
    assert!(html.contains("<span class=\"badge failed\">failed</span>"));
    assert!(html.contains("<span class=\"badge succeeded\">succeeded</span>"));
    assert!(html.contains("action=\"/admin/sync/incremental\"") && html.contains("action=\"/admin/sync/full\""));
    assert!(!html.contains(SECRET), "the webhook secret is never shown");

    // The runs page (the runs table), the run's own page (error in full, scope), the webhooks
    // page (the spaces' titles, read from Kaiten): no script element, the text escaped.
    let (status, _, html) = send(&f.state, get_req("/admin/sync/runs"), loopback()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches("<script").count(), 0, "{html}");
    assert!(html.contains(&format!("<td class=\"scope\">{scope}</td><td class=\"err\">{error}</td>")), "{html}");
    let (status, _, html) = send(&f.state, get_req(&format!("/admin/sync/runs/{}", failed.id)), loopback()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches("<script").count(), 0, "{html}");
    assert!(html.contains(&format!("<pre class=\"err\" id=\"run-error\">{error}</pre>")), "{html}");
    assert!(html.contains(&format!("<dt>Scope</dt><dd>{scope}</dd>")), "{html}");
    let (status, _, html) = send(&f.state, get_req("/admin/sync/webhooks"), loopback()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches("<script").count(), 0, "{html}");
    assert!(html.contains("<td>&lt;script&gt;alert(&quot;space&quot;)&lt;/script&gt; &amp; co</td>"), "{html}");

    let (status, _, json) = send(&f.state, get_req("/admin/sync/status.json"), loopback()).await;
    assert_eq!(status, StatusCode::OK);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(value["tables"].as_array().unwrap().iter().any(|t| t["table"] == "cards" && t["live"] == 1));
    assert_eq!(value["runs"][0]["id"], failed.id);
    assert!(value["entities"].is_array());
}

#[tokio::test]
async fn sync_buttons_start_a_run_in_the_background_and_redirect() {
    let f = fixture(None).await;
    let (status, headers, _) = send(&f.state, post_req("/admin/sync/incremental", ""), loopback()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], ADMIN_PATH);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let runs = f.store.recent_runs(5).await.unwrap();
        if runs.iter().any(|r| r.kind == RunKind::Incremental && r.status == RunStatus::Succeeded) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no incremental run appeared: {runs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.store.ids(EntityKind::Cards, false).await.unwrap().len(), f.sim.card_ids().len());
    f.state.wait_idle().await;
    let log = f.state.0.log.lock().unwrap().clone();
    assert!(log[0].text.contains("(incremental, admin page) succeeded"), "{log:?}");

    // A second press while a run is going is skipped, not queued.
    f.sim.set_latency(Duration::from_millis(30));
    let (status, _, _) = send(&f.state, post_req("/sync/full", ""), loopback()).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the earlier path is an alias");
    assert!(f.state.sync_running());
    send(&f.state, post_req("/sync/incremental", ""), loopback()).await;
    let log = f.state.0.log.lock().unwrap().clone();
    assert!(log[0].text.contains("skipped: full (admin page) is still running"), "{log:?}");
    let (_, _, html) = send(&f.state, get_req("/"), loopback()).await;
    assert!(html.contains("<span class=\"badge running\">running</span> full (admin page)"), "{html}");
    f.state.wait_idle().await;
}

#[tokio::test]
async fn admin_routes_are_for_loopback_or_the_token() {
    let f = fixture(None).await;
    let remote: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    for uri in ["/", "/status.json", ADMIN_PATH, "/admin/sync/status.json"] {
        let (status, _, body) = send(&f.state, get_req(uri), remote).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert!(body.contains(ENV_ADMIN_TOKEN));
    }
    let (status, _, _) = send(&f.state, post_req("/sync/full", ""), remote).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!f.state.sync_running());
    // Through a reverse proxy every client looks like loopback: forwarded requests are refused.
    let mut proxied = get_req("/");
    proxied.headers_mut().insert("x-forwarded-for", "203.0.113.1".parse().unwrap());
    assert_eq!(send(&f.state, proxied, loopback()).await.0, StatusCode::FORBIDDEN);
    // DNS rebinding: a foreign Host header.
    let rebound = axum::http::Request::get("/").header("host", "evil.example:8080").body(Body::empty()).unwrap();
    assert_eq!(send(&f.state, rebound, loopback()).await.0, StatusCode::FORBIDDEN);
    // A form posted from another site.
    let mut csrf = post_req("/sync/full", "");
    csrf.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    assert_eq!(send(&f.state, csrf, loopback()).await.0, StatusCode::FORBIDDEN);
    let mut same = get_req("/");
    same.headers_mut().insert("host", "localhost:8080".parse().unwrap());
    assert_eq!(send(&f.state, same, "[::1]:5000".parse().unwrap()).await.0, StatusCode::OK);

    let f = fixture(Some(TOKEN)).await;
    assert_eq!(send(&f.state, get_req("/"), remote).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&f.state, get_req("/"), loopback()).await.0, StatusCode::UNAUTHORIZED, "a token binds everyone");
    let mut bearer = get_req("/status.json");
    bearer.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    assert_eq!(send(&f.state, bearer, remote).await.0, StatusCode::OK);
    let mut wrong = get_req("/status.json");
    wrong.headers_mut().insert("authorization", "Bearer admin-token-0123456789abcdeX".parse().unwrap());
    assert_eq!(send(&f.state, wrong, remote).await.0, StatusCode::UNAUTHORIZED);
    let (status, _, html) = send(&f.state, get_req(&format!("/?token={TOKEN}")), remote).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&format!("action=\"/admin/sync/full?token={TOKEN}\"")), "the forms carry the token");
    let (status, headers, _) =
        send(&f.state, post_req(&format!("/admin/sync/incremental?token={TOKEN}"), ""), remote).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], format!("/admin/sync?token={TOKEN}"));
    f.state.wait_idle().await;
}

#[tokio::test]
async fn failed_webhook_deliveries_are_shown_and_can_be_retried() {
    let f = fixture(None).await;
    let note = kaiten_sync::Notification {
        kind: EntityKind::Cards,
        entity_id: 4242,
        parent_id: None,
        event: "card:update".into(),
    };
    let now = Utc::now();
    f.store.inbox_push(&[note], now, now).await.unwrap();
    let entry = f.store.inbox_claim("test", 1, now, now + chrono::Duration::seconds(60)).await.unwrap().remove(0);
    let failed = kaiten_sync::InboxResult::Failed { id: entry.id, error: "<b>Kaiten 502</b>".into(), retry_at: None };
    f.store.inbox_finish(&[failed], now).await.unwrap();

    let (status, _, json) = send(&f.state, get_req("/admin/sync/status.json"), loopback()).await;
    assert_eq!(status, StatusCode::OK);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["webhook_inbox"]["failed"], 1);
    assert_eq!(value["webhook_inbox"]["failed_entries"][0]["entity_id"], 4242);
    let (_, _, html) = send(&f.state, get_req(ADMIN_PATH), loopback()).await;
    assert!(html.contains("0 pending (oldest received –), 1 failed"), "{html}");
    assert!(html.contains("&lt;b&gt;Kaiten 502&lt;/b&gt;") && !html.contains("<b>Kaiten"), "the error, escaped");
    assert!(html.contains("action=\"/admin/sync/inbox/retry\""), "{html}");

    let (status, headers, _) = send(&f.state, post_req("/admin/sync/inbox/retry", ""), loopback()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], ADMIN_PATH);
    let stats = f.store.inbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed), (1, 0));
    let remote: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    assert_eq!(send(&f.state, post_req("/admin/sync/inbox/retry", ""), remote).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn healthz_says_ok_when_the_database_answers() {
    let f = fixture(Some(TOKEN)).await;
    let (status, _, body) = send(&f.state, get_req("/healthz"), "198.51.100.7:5000".parse().unwrap()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
}

#[test]
fn secrets_and_tokens_are_checked_at_startup() {
    let err = webhook_secret(None).unwrap_err().to_string();
    assert!(err.contains("KAITEN_WEBHOOK_SECRET is not set"), "{err}");
    let err = webhook_secret(Some("short".into())).unwrap_err().to_string();
    assert!(err.contains("5 characters long") && !err.contains("short\""), "{err}");
    assert!(webhook_secret(Some("has a space in it 0123".into())).is_err());
    assert!(webhook_secret(Some("0123456789abcdef".into())).is_ok());

    let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let err = admin_token(public, None).unwrap_err().to_string();
    assert!(err.contains("KAITEN_ADMIN_TOKEN") && err.contains("0.0.0.0:8080"), "{err}");
    assert!(admin_token(public, Some("tiny".into())).is_err());
    assert!(admin_token(public, Some(TOKEN.into())).unwrap().is_some());
    assert!(admin_token("127.0.0.1:8080".parse().unwrap(), None).unwrap().is_none());
    assert!(admin_token("[::1]:8080".parse().unwrap(), None).unwrap().is_none());
}

#[test]
fn schedule_times() {
    let now: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
    let daily = |h, m| Schedule {
        incremental_every: None,
        full: Some(FullSchedule::DailyAt(NaiveTime::from_hms_opt(h, m, 0).unwrap())),
    };
    assert_eq!(daily(3, 0).next_full(now).unwrap(), "2026-03-02T03:00:00Z".parse::<DateTime<Utc>>().unwrap());
    assert_eq!(daily(10, 30).next_full(now).unwrap(), "2026-03-01T10:30:00Z".parse::<DateTime<Utc>>().unwrap());
    assert_eq!(daily(10, 0).next_full(now).unwrap(), "2026-03-02T10:00:00Z".parse::<DateTime<Utc>>().unwrap());
    let every = Schedule {
        incremental_every: Some(Duration::from_secs(300)),
        full: Some(FullSchedule::Every(Duration::from_secs(7200))),
    };
    assert_eq!(every.next_full(now).unwrap(), "2026-03-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap());
    assert_eq!(every.describe(), "incremental every 5m (first at start); full every 2h");
    assert_eq!(daily(3, 0).describe(), "full daily at 03:00 UTC");
    assert_eq!(Schedule::default().describe(), "no scheduled syncs");
    assert_eq!(parse_hhmm("03:00").unwrap(), NaiveTime::from_hms_opt(3, 0, 0).unwrap());
    assert!(parse_hhmm("25:00").unwrap_err().contains("HH:MM"));
}

#[test]
fn hosts_and_origins() {
    for host in ["127.0.0.1", "127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "app.localhost"] {
        assert!(is_loopback_host(host), "{host}");
    }
    for host in ["evil.example", "10.0.0.1:8080", "127.0.0.1.evil.example", "[2001:db8::1]:80"] {
        assert!(!is_loopback_host(host), "{host}");
    }
    let headers = |pairs: &[(&'static str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    };
    assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080")])));
    assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])));
    assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:3000")])));
    assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])));
    assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-site")])));
    assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-origin")])));
    assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    // The templates escape what they splice, in text and in (always double-quoted) attributes.
    let text = "<a href=\"x\">'&'</a>";
    assert_eq!(
        maud::html! { p title=(text) { (text) } }.into_string(),
        "<p title=\"&lt;a href=&quot;x&quot;&gt;'&amp;'&lt;/a&gt;\">&lt;a href=&quot;x&quot;&gt;'&amp;'&lt;/a&gt;</p>"
    );
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let f = fixture(None).await;
    let remote: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let (status, headers, html) = send(&f.state, get_req(ADMIN_PATH), loopback()).await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
    for directive in ["default-src 'none'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    // Scripts of this origin only (the page's app.js), which may fetch status.json from it.
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
    // The page's own style is allowed by its hash, computed here from the page as served.
    assert!(csp.contains(&format!("style-src '{}'", style_hash(&html))), "{csp}");
    assert!(!html.contains(" style=\""), "the policy allows no style attribute");
    let scripts: Vec<&str> = html.split("<script").skip(1).collect();
    assert_eq!(scripts.len(), 1, "{html}");
    assert!(
        scripts[0].starts_with(" src=\"/admin/sync/app.js\"") && scripts[0].contains("></script>"),
        "no inline script: {}",
        scripts[0]
    );
    let (status, headers, js) = send(&f.state, get_req("/admin/sync/app.js"), loopback()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript"));
    assert!(js.contains("data-status"), "{js}");
    assert!(!js.contains("innerHTML"), "the script writes text, never HTML");
    let responses = [
        (ADMIN_PATH.to_owned(), send(&f.state, get_req(ADMIN_PATH), loopback()).await.1),
        ("refused admin".to_owned(), send(&f.state, get_req(ADMIN_PATH), remote).await.1),
        ("healthz".to_owned(), send(&f.state, get_req("/healthz"), remote).await.1),
        (
            "webhook".to_owned(),
            send(&f.state, post_req(&format!("{WEBHOOK_PATH}/wrong-0123456789"), "{}"), remote).await.1,
        ),
        ("404".to_owned(), send(&f.state, get_req("/nothing-here"), loopback()).await.1),
    ];
    for (what, headers) in responses {
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{what}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{what}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], csp, "{what}");
    }
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let f = fixture(Some(TOKEN)).await;
    let remote: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    for value in
        [format!("Bearer {TOKEN}"), format!("bearer {TOKEN}"), format!("BEARER  {TOKEN} "), format!("bEaReR\t{TOKEN}")]
    {
        let mut req = get_req("/status.json");
        req.headers_mut().insert("authorization", value.parse().unwrap());
        assert_eq!(send(&f.state, req, remote).await.0, StatusCode::OK, "{value:?}");
    }
    for value in [format!("Basic {TOKEN}"), format!("Bearer{TOKEN}"), "bearer ".to_owned(), TOKEN.to_owned()] {
        let mut req = get_req("/status.json");
        req.headers_mut().insert("authorization", value.parse().unwrap());
        assert_eq!(send(&f.state, req, remote).await.0, StatusCode::UNAUTHORIZED, "{value:?}");
    }
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("Token abc"), None);
}

#[tokio::test]
async fn oversized_requests_are_refused_before_any_handler() {
    let f = fixture(None).await;
    // A declared body above the admin limit: 413 before the guard or the handler runs.
    let req = axum::http::Request::post("/admin/sync/full")
        .header("host", "127.0.0.1:8080")
        .header("content-length", (ADMIN_BODY_LIMIT + 1).to_string())
        .body(Body::from(vec![b'x'; ADMIN_BODY_LIMIT + 1]))
        .unwrap();
    assert_eq!(send(&f.state, req, loopback()).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!f.state.sync_running(), "nothing started");
    // A webhook body between the two limits is fine (the webhook route's own limit is 1 MiB).
    let card = f.sim.create_card(f.sim.board_ids()[0], &"long title ".repeat(2_000));
    let body = card_add(&card);
    assert!(body.len() > ADMIN_BODY_LIMIT);
    let (status, _, answer) = send(&f.state, post_req(&format!("{WEBHOOK_PATH}/{SECRET}"), body), loopback()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let mut many = get_req(ADMIN_PATH);
    for i in 0..MAX_HEADERS {
        many.headers_mut().insert(axum::http::HeaderName::try_from(format!("x-h{i}")).unwrap(), "1".parse().unwrap());
    }
    assert_eq!(send(&f.state, many, loopback()).await.0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let mut large = get_req(ADMIN_PATH);
    large.headers_mut().insert("cookie", "c".repeat(MAX_HEADER_BYTES).parse().unwrap());
    assert_eq!(send(&f.state, large, loopback()).await.0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let long = format!("{ADMIN_PATH}?token={}", "t".repeat(MAX_URI_BYTES));
    assert_eq!(send(&f.state, get_req(&long), loopback()).await.0, StatusCode::URI_TOO_LONG);
    assert_eq!(send(&f.state, get_req(ADMIN_PATH), loopback()).await.0, StatusCode::OK);
}

/// Captures what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
    }
}

#[tokio::test]
async fn refused_deliveries_are_logged_once_per_interval_with_their_count() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let f = fixture(None).await;
    let interval = Duration::from_millis(400);
    f.state.0.refused.interval_ms.store(interval.as_millis() as u64, Ordering::Relaxed);
    let app = router(f.state.clone());
    let remote: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    for _ in 0..2_000 {
        let mut req =
            post_req("/api/webhooks/kaiten/wrong-secret-0123456789", r#"{"event":"card:add","data":{"id":1}}"#);
        req.extensions_mut().insert(ConnectInfo(remote));
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let lines = captured.lines_with("webhook deliver");
    assert_eq!(lines.len(), 1, "one line at the first refusal: {lines:#?}");
    assert!(lines[0].contains("refused a webhook delivery (401") && lines[0].contains("refused=1"), "{}", lines[0]);
    assert!(!lines[0].contains("wrong-secret-0123456789"), "the secret tried is never logged");
    tokio::time::sleep(interval + Duration::from_millis(300)).await;
    let lines = captured.lines_with("webhook deliver");
    assert_eq!(lines.len(), 2, "the rest at the end of the interval: {lines:#?}");
    assert!(
        lines[1].contains("refused 1999 more webhook deliveries") && lines[1].contains("refused=1999"),
        "{}",
        lines[1]
    );
    // A quiet interval, then one more: logged at once again.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let mut req = post_req("/webhooks/kaiten/wrong-secret-0123456789", "{}");
    req.extensions_mut().insert(ConnectInfo(remote));
    assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(captured.lines_with("webhook deliver").len(), 3);
    // Accepted and malformed deliveries are not counted as refusals.
    let (status, _, _) = send(&f.state, post_req(&format!("{WEBHOOK_PATH}/{SECRET}"), "not json"), remote).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    tokio::time::sleep(interval + Duration::from_millis(300)).await;
    assert_eq!(captured.lines_with("webhook deliver").len(), 3);
}

#[tokio::test]
async fn quick_actions_start_a_selective_sync_behind_the_same_guard() {
    let f = fixture(None).await;
    let (_, _, html) = send(&f.state, get_req(ADMIN_PATH), loopback()).await;
    assert!(html.contains("action=\"/admin/sync/selective\"") && html.contains("action=\"/admin/sync/refetch\""));
    for kind in EntityKind::ALL {
        assert!(html.contains(&format!("name=\"only\" value=\"{}\"", kind.as_str())), "{kind:?}");
    }
    let form = |body: &str| {
        let mut req = post_req("/admin/sync/selective", body.to_owned());
        req.headers_mut().insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        req
    };
    let (status, _, body) = send(&f.state, form("only=nope&mode=full"), loopback()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown entity kind"), "{body}");
    assert_eq!(send(&f.state, form("board=x"), loopback()).await.0, StatusCode::BAD_REQUEST);
    let mut csrf = form("only=cards");
    csrf.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    assert_eq!(send(&f.state, csrf, loopback()).await.0, StatusCode::FORBIDDEN);
    let remote: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    assert_eq!(send(&f.state, form("only=cards"), remote).await.0, StatusCode::FORBIDDEN);
    assert!(!f.state.sync_running());

    // Spaces first (boards need them), then a space's boards in full.
    let (status, headers, _) = send(&f.state, form("only=spaces&only=boards&mode=incremental"), loopback()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], ADMIN_PATH);
    f.state.wait_idle().await;
    let log = f.state.0.log.lock().unwrap().clone();
    assert!(log[0].text.contains("(selective incremental (kinds spaces,boards), admin page) succeeded"), "{log:?}");
    assert!(!f.store.ids(EntityKind::Boards, false).await.unwrap().is_empty());
    let (_, _, html) = send(&f.state, get_req(ADMIN_PATH), loopback()).await;
    let board = f.sim.board_ids()[0];
    assert!(html.contains(&format!("<option value=\"{board}\">")), "the stored boards are offered: {html}");
    let value: serde_json::Value =
        serde_json::from_str(&send(&f.state, get_req("/admin/sync/status.json"), loopback()).await.2).unwrap();
    assert_eq!(value["progress"]["finished"], "succeeded", "{value}");
    assert_eq!(value["progress"]["kinds"][1]["kind"], "boards");
    assert_eq!(value["progress"]["kinds"][1]["state"], "done");
    assert!(value["progress"]["kinds"][1]["fetched"].as_u64().unwrap() > 0);
    assert!(html.contains("<tr data-kind=\"boards\"><td>boards</td><td><span class=\"badge done\">done</span>"));

    let (status, _, _) = send(&f.state, form(&format!("only=cards&board={board}&mode=full")), loopback()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    f.state.wait_idle().await;
    let runs = f.store.recent_runs(1).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{runs:?}");
    assert_eq!(runs[0].scope.as_deref(), Some(format!("kinds cards; boards {board}").as_str()));

    // Tokens ride along: the forms carry ?token= and the redirect keeps it.
    let f = fixture(Some(TOKEN)).await;
    assert_eq!(send(&f.state, form("only=spaces"), remote).await.0, StatusCode::UNAUTHORIZED);
    let (_, _, html) = send(&f.state, get_req(&format!("{ADMIN_PATH}?token={TOKEN}")), remote).await;
    assert!(html.contains(&format!("action=\"/admin/sync/selective?token={TOKEN}\"")), "{html}");
    assert!(html.contains(&format!("data-status=\"/admin/sync/status.json?token={TOKEN}\"")), "{html}");
    let mut with_token = post_req(&format!("/admin/sync/selective?token={TOKEN}"), "only=spaces");
    with_token.headers_mut().insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
    let (status, headers, _) = send(&f.state, with_token, remote).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], format!("/admin/sync?token={TOKEN}"));
    f.state.wait_idle().await;
}

#[tokio::test]
async fn cards_are_refetched_by_id_from_the_admin_page() {
    let f = fixture(None).await;
    let card = f.sim.create_card(f.sim.board_ids()[0], "Refetch <me>");
    let id = card["id"].as_i64().unwrap();
    let form = |body: String| {
        let mut req = post_req("/admin/sync/refetch", body);
        req.headers_mut().insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        req
    };
    assert_eq!(send(&f.state, form("cards=12%2Cabc".into()), loopback()).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(send(&f.state, form("cards=".into()), loopback()).await.0, StatusCode::BAD_REQUEST);
    let remote: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    assert_eq!(send(&f.state, form(format!("cards={id}")), remote).await.0, StatusCode::FORBIDDEN);
    let (status, headers, _) = send(&f.state, form(format!("cards={id}%2C+{id}")), loopback()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], ADMIN_PATH);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while f.store.get(EntityKind::Cards, id).await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the card was not refetched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = f.state.0.log.lock().unwrap().clone();
        if log.iter().any(|l| l.text.contains(&format!("refetched card(s) {id}: 1 applied"))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn run_history_is_paged_filtered_and_each_run_has_a_page() {
    let f = fixture(None).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let kind = if i % 3 == 0 { RunKind::Webhook } else { RunKind::Incremental };
        let mut run = RunRecord::start(kind, vec![EntityKind::Cards], None, Utc::now());
        run.id = f.store.start_run(&run).await.unwrap();
        run.status = if i % 2 == 0 { RunStatus::Failed } else { RunStatus::Succeeded };
        run.finished_at = Some(Utc::now());
        run.api_requests = 7;
        run.stats.insert(
            EntityKind::Cards,
            kaiten_sync::EntityStats { pages: 2, fetched: 150, updated: 3, ..Default::default() },
        );
        if run.status == RunStatus::Failed {
            run.error = Some(format!("run {i}: <script>alert(1)</script> {}", "and a long tail ".repeat(20)));
        }
        f.store.update_run(&run).await.unwrap();
        ids.push(run.id);
    }
    let (status, _, html) = send(&f.state, get_req("/admin/sync/runs"), loopback()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<svg id=\"chart\"") && html.contains("records changed"), "the chart is inline");
    assert!(html.contains("30 runs · page 1 of 2"), "{html}");
    assert!(html.contains("href=\"/admin/sync/runs?page=2\""), "{html}");
    assert!(!html.contains("<script>alert"), "errors are escaped");
    let (_, _, html) = send(&f.state, get_req("/admin/sync/runs?kind=webhook&status=failed"), loopback()).await;
    // i = 0, 6, 12, 18, 24: webhook and failed.
    assert!(html.contains("5 runs · page 1 of 1"), "{html}");
    assert!(html.contains(&format!("id=\"run-{}\"", ids[6])) && !html.contains(&format!("id=\"run-{}\"", ids[3])));
    assert!(html.contains("<option value=\"webhook\" selected>"));
    let (_, _, html) = send(&f.state, get_req("/admin/sync/runs?page=2"), loopback()).await;
    assert!(html.contains("page 2 of 2") && html.contains(&format!("id=\"run-{}\"", ids[0])), "oldest last");
    assert_eq!(send(&f.state, get_req("/admin/sync/runs?kind=%3Cx%3E"), loopback()).await.0, StatusCode::BAD_REQUEST);
    let remote: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    assert_eq!(send(&f.state, get_req("/admin/sync/runs"), remote).await.0, StatusCode::FORBIDDEN);

    let (status, _, html) = send(&f.state, get_req(&format!("/admin/sync/runs/{}", ids[0])), loopback()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && html.contains(&"and a long tail ".repeat(20)));
    assert!(html.contains("<tr><td>cards</td><td class=\"num\">2</td><td class=\"num\">150</td>"), "{html}");
    assert!(html.contains("7 (0 retries)"));
    assert_eq!(send(&f.state, get_req("/admin/sync/runs/999999"), loopback()).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&f.state, get_req("/admin/sync/runs/x"), loopback()).await.0, StatusCode::NOT_FOUND);
    let (_, _, html) = send(&f.state, get_req(ADMIN_PATH), loopback()).await;
    assert!(
        html.contains(&format!("href=\"/admin/sync/runs/{}\"", ids[29])) && html.contains("href=\"/admin/sync/runs\"")
    );
}

#[test]
fn forms_are_decoded() {
    let fields = super::routes::parse_form(b"only=cards&only=boards&board=&q=a+b%2Cc%zz%4");
    assert_eq!(fields[0], ("only".into(), "cards".into()));
    assert_eq!(fields[2], ("board".into(), "".into()));
    assert_eq!(fields[3].1, "a b,c%zz%4");
    let (selection, mode) = super::routes::quick_selection(&fields).unwrap();
    assert_eq!(selection.kinds.len(), 2);
    assert_eq!(mode, kaiten_sync::Mode::Incremental);
    assert_eq!(super::routes::refetch_ids(&[("cards".into(), "3, 4,4 5".into())]).unwrap(), vec![3, 4, 5]);
}

/// The webhooks page (`/admin/sync/webhooks`) and its install button.
mod webhooks_page {
    use super::*;
    use kaiten_sim::WebhookDenial;

    const HOOKS: &str = "/admin/sync/webhooks";

    /// A fixture with three spaces: the second not in the plan (402), the third not administered
    /// by the token's user (403).
    async fn three_spaces() -> (Simulator, AppState) {
        let sim = Simulator::start(SimConfig { spaces: 3, ..SimConfig::small() }).await.unwrap();
        let spaces = sim.space_ids();
        sim.set_external_webhook_denial(spaces[1], Some(WebhookDenial::NotInPlan));
        sim.set_external_webhook_denial(spaces[2], Some(WebhookDenial::NotAdmin));
        let client =
            crate::config::client(&sim.base_url(), &sim.token(), 0.0, Duration::from_secs(10)).expect("client");
        let state = AppState::new(ServeConfig {
            store: Arc::new(MemoryStore::new()),
            client,
            webhook_secret: Secret::new(SECRET),
            hmac_header: None,
            admin_token: None,
            schedule: Schedule::default(),
            webhook_options: WebhookOptions::default(),
            sync_options: SyncOptions::default(),
        });
        (sim, state)
    }

    fn form_post(uri: &str) -> axum::http::Request<Body> {
        axum::http::Request::post(uri)
            .header("host", "127.0.0.1:8080")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body(Body::empty())
            .unwrap()
    }

    fn state_of(html: &str, space: i64) -> String {
        let at = html.find(&format!("<tr data-space=\"{space}\" data-state=\"")).expect("the space's row");
        let rest = &html[at..];
        let start = rest.find("data-state=\"").unwrap() + "data-state=\"".len();
        rest[start..start + rest[start..].find('"').unwrap()].to_owned()
    }

    #[tokio::test]
    async fn without_a_public_url_the_page_shows_states_and_a_hint_instead_of_the_button() {
        let (sim, state) = three_spaces().await;
        let spaces = sim.space_ids();
        let (status, _, html) = send(&state, get_req(HOOKS), loopback()).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert_eq!(state_of(&html, spaces[0]), "none");
        assert_eq!(state_of(&html, spaces[1]), "not in plan");
        assert_eq!(state_of(&html, spaces[2]), "no permission");
        assert!(html.contains("id=\"hooks-hint\""), "{html}");
        assert!(!html.contains("/install"), "no install button without a public URL");
        let (status, _, _) = send(&state, form_post(&format!("{HOOKS}/install")), loopback()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(sim.external_webhooks_json().is_empty());
        // A webhook registered elsewhere with this server's secret counts as "here" even so.
        let url = format!("https://anywhere.example.com{WEBHOOK_PATH}/{SECRET}");
        let client = crate::config::client(&sim.base_url(), &sim.token(), 0.0, Duration::from_secs(10)).unwrap();
        client.create_external_webhook(kaiten_client::SpaceId(spaces[0]), &url).await.unwrap();
        let (_, _, html) = send(&state, get_req(&format!("{HOOKS}?refresh=1")), loopback()).await;
        assert_eq!(state_of(&html, spaces[0]), "installed");
        assert!(!html.contains(SECRET), "the secret is never shown");
    }

    #[tokio::test]
    async fn states_are_read_once_a_minute_unless_refreshed() {
        let (sim, state) = three_spaces().await;
        send(&state, get_req(HOOKS), loopback()).await;
        let after_first = sim.request_count();
        assert_eq!(after_first, 4, "GET /spaces and one listing per space");
        let (_, _, html) = send(&state, get_req(HOOKS), loopback()).await;
        assert_eq!(sim.request_count(), after_first, "the second view is served from the cache");
        assert!(html.contains("data-state=\"none\""));
        send(&state, get_req(&format!("{HOOKS}?refresh=1")), loopback()).await;
        assert_eq!(sim.request_count(), after_first + 4);
    }

    #[tokio::test]
    async fn the_install_button_installs_where_allowed_and_reports_the_rest() {
        let (sim, state) = three_spaces().await;
        state.set_public_url(Some("https://sync.example.com".to_owned()));
        let spaces = sim.space_ids();
        let (_, _, html) = send(&state, get_req(HOOKS), loopback()).await;
        assert!(html.contains(&format!("action=\"{HOOKS}/install\"")), "{html}");
        assert!(html.contains("https://sync.example.com/api/webhooks/kaiten/••••"), "{html}");

        // Like every admin POST: refused from another site.
        let mut cross = form_post(&format!("{HOOKS}/install"));
        cross.headers_mut().insert("sec-fetch-site", "cross-site".parse().unwrap());
        let (status, _, _) = send(&state, cross, loopback()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(sim.external_webhooks_json().is_empty());
        // And from a non-loopback client without a token.
        let remote: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let (status, _, _) = send(&state, form_post(&format!("{HOOKS}/install")), remote).await;
        assert_ne!(status, StatusCode::SEE_OTHER);
        assert!(sim.external_webhooks_json().is_empty());

        let (status, headers, _) = send(&state, form_post(&format!("{HOOKS}/install")), loopback()).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers["location"], HOOKS);
        let hooks = sim.external_webhooks_json();
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0]["space_id"], spaces[0]);
        assert_eq!(hooks[0]["url"], format!("https://sync.example.com{WEBHOOK_PATH}/{SECRET}"));

        let (_, _, html) = send(&state, get_req(HOOKS), loopback()).await;
        assert_eq!(state_of(&html, spaces[0]), "installed");
        assert_eq!(state_of(&html, spaces[1]), "not in plan");
        assert_eq!(state_of(&html, spaces[2]), "no permission");
        assert!(html.contains("(created)"), "{html}");
        assert!(html.contains("3 space(s): 1 installed, 1 not in plan, 1 no permission"), "{html}");
        assert!(!html.contains(SECRET));

        // Installing again changes nothing.
        send(&state, form_post(&format!("{HOOKS}/install")), loopback()).await;
        assert_eq!(sim.external_webhooks_json(), hooks);
    }

    #[tokio::test]
    async fn the_admin_page_links_to_the_webhooks_page() {
        let (_sim, state) = three_spaces().await;
        let (_, _, html) = send(&state, get_req(ADMIN_PATH), loopback()).await;
        assert!(html.contains(&format!("href=\"{HOOKS}\"")), "{html}");
    }
}
