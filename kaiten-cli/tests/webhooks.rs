//! `kaiten-sync webhooks status|install|uninstall` as a process against the simulator, then a
//! change in an installed space delivered by the simulator to a running `serve` and applied.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{free_port, wait_until, Kaiten, Serve};
use kaiten_sim::{SimConfig, WebhookDenial};
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::{EntityKind, Store};
use serde_json::json;

const SECRET: &str = "hooks-e2e-secret-0123456789";

/// Runs the binary; checks the secret is in neither of its outputs.
async fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (Output, String, String) {
    let out = common::run(dir, env, args).await;
    let (stdout, stderr) = (common::stdout(&out), common::stderr(&out));
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET), "the secret is never printed:\n{stdout}\n{stderr}");
    (out, stdout, stderr)
}

/// The line of a space in the `webhooks` table.
fn line_of(stdout: &str, space: i64) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with(&space.to_string()))
        .unwrap_or_else(|| panic!("no line for {space}:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_reports_plan_and_role_refusals_and_serve_receives_the_installed_space() {
    let kaiten = Kaiten::start(SimConfig { spaces: 3, ..SimConfig::small() }).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let spaces = sim.space_ids();
    sim.set_external_webhook_denial(spaces[1], Some(WebhookDenial::NotInPlan));
    sim.set_external_webhook_denial(spaces[2], Some(WebhookDenial::NotAdmin));
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let env = kaiten.env(&[("KAITEN_WEBHOOK_SECRET", SECRET)]);

    let (out, stdout, stderr) = run(dir, &env, &["webhooks", "status", "--url", &public]).await;
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(line_of(&stdout, spaces[0]).contains("no webhook"), "{stdout}");
    assert!(line_of(&stdout, spaces[1]).contains("not in plan (402)"), "{stdout}");
    assert!(line_of(&stdout, spaces[2]).contains("no permission (403)"), "{stdout}");
    assert!(stdout.contains(&format!("webhook URL: {public}/api/webhooks/kaiten/••••")), "{stdout}");

    // Install: the refused spaces are reported, not failures; exit 0.
    let (out, stdout, stderr) = run(dir, &env, &["webhooks", "install", "--url", &public]).await;
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(line_of(&stdout, spaces[0]).contains("installed here, enabled (created)"), "{stdout}");
    assert!(line_of(&stdout, spaces[1]).contains("not in plan (402)"), "{stdout}");
    assert!(line_of(&stdout, spaces[2]).contains("no permission (403)"), "{stdout}");
    assert!(stdout.contains("3 space(s): 1 installed, 1 not in plan, 1 no permission"), "{stdout}");
    let hooks = sim.external_webhooks_json();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["space_id"], spaces[0]);
    assert_eq!(hooks[0]["url"], format!("{public}/api/webhooks/kaiten/{SECRET}"));

    // Status shows it; installing again changes nothing.
    let (out, stdout, _) = run(dir, &env, &["webhooks", "status", "--url", &public]).await;
    assert!(out.status.success());
    assert!(line_of(&stdout, spaces[0]).contains("installed here, enabled"), "{stdout}");
    let (out, stdout, _) = run(dir, &env, &["webhooks", "install", "--url", &public]).await;
    assert!(out.status.success() && !stdout.contains("(created)"), "{stdout}");
    assert_eq!(sim.external_webhooks_json(), hooks);

    // Seen from another public URL, the webhook points elsewhere; install repoints it.
    let other = format!("http://localhost:{port}");
    let (_, stdout, _) = run(dir, &env, &["webhooks", "status", "--url", &other]).await;
    assert!(
        line_of(&stdout, spaces[0]).contains(&format!("points elsewhere: {public}/api/webhooks/kaiten/••••")),
        "{stdout}"
    );

    // A mirror, then `serve` where the webhook points: a card change in the installed space arrives.
    let (out, _, stderr) = run(dir, &env, &["sync", "full"]).await;
    assert!(out.status.success(), "{stderr}");
    let listen = format!("127.0.0.1:{port}");
    let serve = Serve::start_on(dir, &env, &listen, &["--public-url", &public], false).await;
    let board = sim.boards_json().iter().find(|b| b["space_id"] == spaces[0]).unwrap()["id"].as_i64().unwrap();
    let card = sim.card_ids().into_iter().find(|id| sim.card_json(*id).unwrap()["board_id"] == board).unwrap();
    sim.update_card(card, json!({"title": "Delivered through the installed webhook"}));
    assert!(sim.flush_webhooks(Duration::from_secs(10)).await);
    let store = SqliteStore::open(&kaiten.db).unwrap();
    wait_until("the change applied", || async {
        store
            .get(EntityKind::Cards, card)
            .await
            .unwrap()
            .is_some_and(|row| row.raw["title"] == "Delivered through the installed webhook")
    })
    .await;

    // serve's webhooks page shows the same states.
    let html = serve.http.get(format!("{public}/admin/sync/webhooks")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains(&format!("data-space=\"{}\" data-state=\"installed\"", spaces[0])), "{html}");
    assert!(html.contains(&format!("data-space=\"{}\" data-state=\"not in plan\"", spaces[1])), "{html}");
    assert!(html.contains("Install on every space") && !html.contains(SECRET), "{html}");

    // Uninstall disables it (Kaiten has no DELETE).
    let (out, stdout, _) = run(dir, &env, &["webhooks", "uninstall", "--url", &public]).await;
    assert!(out.status.success(), "{stdout}");
    assert!(line_of(&stdout, spaces[0]).contains("points here, disabled (disabled)"), "{stdout}");
    assert_eq!(sim.external_webhooks_json()[0]["enabled"], false);
}

#[tokio::test]
async fn webhooks_refuse_plain_http_a_missing_secret_and_report_failures() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let base = kaiten.api_env();
    let (out, _, stderr) = run(dir, &base, &["webhooks", "install", "--url", "https://sync.example.com"]).await;
    assert!(!out.status.success());
    assert!(stderr.contains("KAITEN_WEBHOOK_SECRET is not set"), "{stderr}");

    let mut env = base.to_vec();
    env.push(("KAITEN_WEBHOOK_SECRET", SECRET));
    let (out, _, stderr) = run(dir, &env, &["webhooks", "install", "--url", "http://sync.example.com"]).await;
    assert!(!out.status.success());
    assert!(stderr.contains("must be https"), "{stderr}");
    assert!(sim.external_webhooks_json().is_empty());

    // Kaiten failing for another reason is a failure: exit non-zero.
    sim.set_faults(kaiten_sim::Faults { server_error_rate: 1.0, ..Default::default() });
    let (out, _, stderr) = run(dir, &env, &["webhooks", "status", "--url", "https://sync.example.com"]).await;
    assert!(!out.status.success());
    assert!(stderr.contains("cannot list the spaces"), "{stderr}");
}
