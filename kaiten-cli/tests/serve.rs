//! `kaiten-sync serve` as a process: refusals at startup, and webhooks, the admin routes and a
//! graceful Ctrl-C against the simulator. Listens on 127.0.0.1 only.

mod common;

use std::time::Duration;

use common::{
    assert_fails_with, free_port, pg_store, run, send_signal, skip_postgres, stderr, stdout, test_database_url,
    wait_until, DropSchemas, Kaiten, Serve,
};
use kaiten_sim::SimConfig;
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::{EntityKind, Store};
use serde_json::{json, Value};

const SECRET: &str = "serve-e2e-secret-0123456789";

#[tokio::test]
async fn serve_refuses_to_start_without_a_good_webhook_secret() {
    let dir = tempfile::tempdir().unwrap();
    let base = [("KAITEN_API_URL", "http://127.0.0.1:9"), ("KAITEN_API_TOKEN", "t")];
    let out = run(dir.path(), &base, &["serve", "--no-schedule"]).await;
    assert_fails_with(&out, "KAITEN_WEBHOOK_SECRET is not set");
    let mut env = base.to_vec();
    env.push(("KAITEN_WEBHOOK_SECRET", "too-short"));
    let out = run(dir.path(), &env, &["serve", "--no-schedule"]).await;
    assert_fails_with(&out, "use at least 16");
    assert!(!stderr(&out).contains("too-short"), "the secret is not echoed");
}

#[tokio::test]
async fn serve_refuses_a_non_loopback_address_without_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("KAITEN_API_URL", "http://127.0.0.1:9"), ("KAITEN_API_TOKEN", "t"), ("KAITEN_WEBHOOK_SECRET", SECRET)];
    // Refused before anything is bound (192.0.2.1 is a documentation address no host has).
    let out = run(dir.path(), &env, &["serve", "--no-schedule", "--listen", "192.0.2.1:8080"]).await;
    assert_fails_with(&out, "set KAITEN_ADMIN_TOKEN");
    let out = run(dir.path(), &env, &["serve", "--full-at", "3am"]).await;
    assert_fails_with(&out, "HH:MM");
}

fn card_update(id: i64, title: &str) -> Value {
    json!({"event": "card:update", "data": {"old": {"id": id}, "changes": {"title": title}, "author": {"id": 1}}})
}

/// `kill -9` right after `serve` acknowledged a delivery and before it applied it: the delivery is
/// in the inbox, and the next `serve` applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_acknowledged_before_kill_9_is_applied_after_restart() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let env = kaiten.env(&[("KAITEN_WEBHOOK_SECRET", SECRET)]);
    let out = run(dir, &env, &["sync", "full"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let card = sim.create_card(sim.board_ids()[0], "Acknowledged, then killed");
    let id = card["id"].as_i64().unwrap();

    let first = Serve::start(dir, &env).await;
    let add =
        json!({"event": "card:add", "data": {"id": id, "title": "Acknowledged, then killed", "author": {"id": 1}}});
    assert_eq!(first.deliver(SECRET, &add).await, 200);
    // Applying waits for the coalescing window (1 s): the process dies before.
    first.kill_hard();
    let store = SqliteStore::open(&kaiten.db).unwrap();
    assert!(store.get(EntityKind::Cards, id).await.unwrap().is_none(), "killed before applying");
    let pending = store.inbox_entries(false, 10).await.unwrap();
    assert_eq!(pending.iter().map(|e| e.entity_id).collect::<Vec<_>>(), vec![id], "the acknowledged delivery is kept");
    drop(first);

    let _second = Serve::start(dir, &env).await;
    wait_until("the delivery applied after the restart", || async {
        store.get(EntityKind::Cards, id).await.unwrap().is_some()
    })
    .await;
    assert_eq!(store.get(EntityKind::Cards, id).await.unwrap().unwrap().raw, sim.card_detail_json(id).unwrap());
    wait_until("the inbox emptied", || async { store.inbox_stats().await.unwrap().pending == 0 }).await;
}

/// Two `serve` processes sharing one Postgres database share its inbox: every delivery is applied
/// once, whichever process took it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_share_a_postgres_inbox() {
    if skip_postgres() {
        return;
    }
    let url = test_database_url();
    let schema = format!("kaiten_test_serve_{}_{}", std::process::id(), free_port());
    let _drop = DropSchemas(url.clone(), vec![schema.clone()]);
    let store = pg_store(&url, &schema).await;
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let mut env = kaiten.api_env();
    env.extend([
        ("DATABASE_URL", url.as_str()),
        ("KAITEN_DB_SCHEMA", schema.as_str()),
        ("KAITEN_WEBHOOK_SECRET", SECRET),
    ]);
    {
        let out = run(dir, &env, &["sync", "full"]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let a = Serve::start(dir, &env).await;
        let b = Serve::start(dir, &env).await;
        let ids: Vec<i64> = sim.card_ids().into_iter().take(60).collect();
        for id in &ids {
            sim.update_card(*id, json!({"title": format!("Shared inbox {id}")}));
        }
        sim.reset_request_log();
        // Every card is delivered to both processes (two spaces' webhooks, say).
        for id in &ids {
            let body = card_update(*id, "x");
            assert_eq!(a.deliver(SECRET, &body).await, 200);
            assert_eq!(b.deliver(SECRET, &body).await, 200);
        }
        wait_until("both processes drained the inbox", || async { store.inbox_stats().await.unwrap().pending == 0 })
            .await;
        let log = sim.request_log();
        for id in &ids {
            let fetches = log
                .iter()
                .filter(|r| r.split('?').next().unwrap_or_default().ends_with(&format!("/cards/{id}")))
                .count();
            assert_eq!(fetches, 1, "card {id} was fetched {fetches} times");
            let row = store.get(EntityKind::Cards, *id).await.unwrap().unwrap();
            assert_eq!(row.raw["title"], format!("Shared inbox {id}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_applies_webhooks_runs_syncs_and_stops_on_ctrl_c() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let sim = &kaiten.sim;
    let env = kaiten.env(&[("KAITEN_WEBHOOK_SECRET", SECRET)]);
    let Serve { child, base, http } = Serve::start_piped(kaiten.path(), &env).await;

    // The button: a full sync in the background, 303 back to the page.
    let response = http.post(format!("{base}/admin/sync/full")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/admin/sync");
    wait_until("the full sync", || async {
        let status: Value =
            http.get(format!("{base}/admin/sync/status.json")).send().await.unwrap().json().await.unwrap();
        status["runs"].as_array().unwrap().iter().any(|r| r["kind"] == "full" && r["status"] == "succeeded")
    })
    .await;

    // Webhooks from the simulator.
    sim.set_webhook_url(Some(format!("{base}/api/webhooks/kaiten/{SECRET}")));
    let card = sim.create_card(sim.board_ids()[0], "Delivered to serve");
    let id = card["id"].as_i64().unwrap();
    sim.update_card(id, json!({"title": "Updated through serve"}));
    assert!(sim.flush_webhooks(Duration::from_secs(10)).await);
    let store = SqliteStore::open(&kaiten.db).unwrap();
    let detail = sim.card_detail_json(id).unwrap();
    wait_until("the deliveries applied", || async {
        store.get(EntityKind::Cards, id).await.unwrap().is_some_and(|row| row.raw == detail)
    })
    .await;
    let wrong = http.post(format!("{base}/webhooks/kaiten/not-the-secret-0123456")).body("{}").send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    // The admin page from this machine.
    let page = http.get(format!("{base}/admin/sync")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("1 notification: cards 1"), "one webhook run for both deliveries: {html}");

    // Ctrl-C: finishes and exits 0.
    send_signal(&child, "INT");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.expect("exits").unwrap();
    let stdout = stdout(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", stderr(&out));
    assert!(stdout.contains("kaiten-sync serve on http://127.0.0.1:") && stdout.contains("stopped"), "{stdout}");
    assert!(stdout.contains("(full, admin page) succeeded"), "{stdout}");
    assert!(!stdout.contains(SECRET), "the secret is never printed");
}
