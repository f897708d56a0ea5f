//! The admin pages in a real browser: `serve` against the simulator, headless Chromium loading
//! `/admin/sync` (while a sync runs: the page's script polls `status.json` and redraws the progress
//! kind by kind), the run history with its chart, and a run's own page; the forms' fields are then
//! posted as the browser posts them (same origin). Screenshots are kept in
//! `target/admin-screenshots/`.
//!
//! Needs `chromium` (`/usr/bin/chromium`, or `CHROMIUM=/path`): skipped with a note when it is
//! missing, except in CI (`CI` set), where it is a failure.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{wait_until, Kaiten, Serve};
use kaiten_sim::SimConfig;
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::{EntityKind, Store};

const SECRET: &str = "browser-e2e-secret-0123456789";

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let names = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];
    let dirs: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    names.iter().flat_map(|name| dirs.iter().map(move |dir| dir.join(name))).find(|path| path.is_file())
}

fn screenshots_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("admin-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium on a URL: `--dump-dom` (the DOM after the page's script ran for
/// `budget_ms` of virtual time) and, with `screenshot`, a PNG of a 1280×2000 window.
async fn chromium_run(browser: &Path, url: &str, budget_ms: u32, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={budget_ms}"))
    .arg("--window-size=1280,2000");
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    cmd.arg(url).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed on {url}: {}", String::from_utf8_lossy(&out.stderr));
    if let Some(path) = screenshot {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "a screenshot of {url} at {} ({size} bytes)", path.display());
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `attr="..."` on the element with `id="{id}"` in a DOM dump.
fn attr_of(dom: &str, id: &str, attr: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let tag_start = dom[..start].rfind('<')?;
    let tag_end = start + dom[start..].find('>')?;
    let tag = &dom[tag_start..tag_end];
    let at = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(tag[at..].split('"').next()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (apt-get install chromium, or set CHROMIUM=/path/to/chrome)"
        );
        // Straight to stderr, past the harness's capture, where `cargo test` shows it.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED admin_pages_in_headless_chromium: no chromium on PATH (apt-get install chromium, or set CHROMIUM)"
        );
        return;
    };
    let shots = screenshots_dir();
    let kaiten = Kaiten::start(SimConfig { cards: 1_000, ..SimConfig::small() }).await;
    let sim = &kaiten.sim;
    let serve = Serve::start(kaiten.path(), &kaiten.env(&[("KAITEN_WEBHOOK_SECRET", SECRET)])).await;
    let admin = serve.url("/admin/sync");

    // The quick actions' selective sync: spaces and boards first, then one that fails (a board
    // Kaiten does not have), so the history has an error to show in full.
    assert_eq!(serve.submit("/admin/sync/selective", &[("only", "spaces"), ("only", "boards")]).await, 303);
    serve.wait_idle().await;
    let dom = chromium_run(&browser, &admin, 1_500, None).await;
    let board = sim.board_ids()[0];
    assert!(dom.contains(&format!("<option value=\"{board}\">")), "the board select is filled: {dom}");
    for action in ["/admin/sync/selective", "/admin/sync/refetch", "/admin/sync/incremental", "/admin/sync/full"] {
        assert!(dom.contains(&format!("action=\"{action}\"")), "a form posting to {action}");
    }
    assert!(dom.contains("name=\"only\" value=\"property_definitions\""));
    let board_text = board.to_string();
    assert_eq!(
        serve.submit("/admin/sync/selective", &[("only", "cards"), ("board", "424242"), ("mode", "full")]).await,
        303
    );
    serve.wait_idle().await;
    assert_eq!(
        serve.submit("/admin/sync/selective", &[("only", "cards"), ("board", &board_text), ("mode", "full")]).await,
        303
    );
    serve.wait_idle().await;

    // A slow full sync: the page's script redraws the progress while it runs.
    sim.set_latency(Duration::from_millis(300));
    assert_eq!(serve.submit("/admin/sync/full", &[]).await, 303);
    wait_until("the full run to make progress", || async {
        serve.status().await["progress"]["kinds_done"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let dom = chromium_run(&browser, &admin, 3_000, None).await;
    let polls: u32 = attr_of(&dom, "progress", "data-polls").and_then(|p| p.parse().ok()).unwrap_or(0);
    assert!(polls >= 1, "the script polled status.json and redrew the progress: {dom}");
    assert!(attr_of(&dom, "progress", "data-error").is_none(), "{dom}");
    assert!(
        dom.contains("<tr data-kind=\"spaces\"><td>spaces</td><td><span class=\"badge done\">done</span>"),
        "{dom}"
    );
    assert!(dom.contains("kinds done"), "{dom}");
    assert!(dom.contains("<span class=\"badge running\">running</span> full (admin page)"), "{dom}");
    chromium_run(&browser, &admin, 3_000, Some(&shots.join("admin-sync-running.png"))).await;
    sim.set_latency(Duration::ZERO);
    let status = serve.wait_idle().await;
    assert_eq!(status["progress"]["finished"], "succeeded", "{status}");

    // Refetch a card by id: the form's field, posted.
    let card = sim.create_card(board, "Fetched from the admin page");
    let id = card["id"].as_i64().unwrap();
    assert_eq!(serve.submit("/admin/sync/refetch", &[("cards", &id.to_string())]).await, 303);
    let store = SqliteStore::open(&kaiten.db).unwrap();
    wait_until("the card to be refetched", || async { store.get(EntityKind::Cards, id).await.unwrap().is_some() })
        .await;
    // A cross-site post of the same form is refused.
    let refused = serve
        .http
        .post(serve.url("/admin/sync/refetch"))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("cards={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    let dom = chromium_run(&browser, &admin, 2_000, None).await;
    assert!(dom.contains("finished: succeeded"), "{dom}");
    assert!(dom.contains(&format!("refetched card(s) {id}: 1 applied")), "{dom}");
    chromium_run(&browser, &admin, 2_000, Some(&shots.join("admin-sync.png"))).await;

    // The history, filtered, and a run's own page.
    let runs_url = serve.url("/admin/sync/runs");
    let dom = chromium_run(&browser, &runs_url, 500, None).await;
    assert!(dom.contains("<svg id=\"chart\"") && dom.contains("records changed"), "{dom}");
    chromium_run(&browser, &runs_url, 500, Some(&shots.join("runs.png"))).await;
    let failed_url = format!("{runs_url}?kind=selective&status=failed");
    let dom = chromium_run(&browser, &failed_url, 500, None).await;
    assert!(dom.contains("1 run · page 1 of 1"), "{dom}");
    let runs = store.recent_runs(50).await.unwrap();
    let failed = runs.iter().find(|r| r.error.is_some()).expect("the run of board 424242 failed");
    assert!(dom.contains(&format!("id=\"run-{}\"", failed.id)));
    chromium_run(&browser, &failed_url, 500, Some(&shots.join("runs-failed.png"))).await;
    let run_url = format!("{runs_url}/{}", failed.id);
    let dom = chromium_run(&browser, &run_url, 500, None).await;
    assert!(dom.contains("id=\"run-error\"") && dom.contains("424242"), "{dom}");
    chromium_run(&browser, &run_url, 500, Some(&shots.join("run-failed.png"))).await;
    let full = runs.iter().find(|r| r.kind == kaiten_sync::RunKind::Full).expect("the full run");
    let dom = chromium_run(&browser, &format!("{runs_url}/{}", full.id), 500, None).await;
    assert!(dom.contains("<tr><td>cards</td>"), "per-entity counts: {dom}");
    chromium_run(&browser, &format!("{runs_url}/{}", full.id), 500, Some(&shots.join("run-full.png"))).await;
    println!("screenshots in {}", shots.display());
}

/// The webhooks page (`/admin/sync/webhooks`) in Chromium: three spaces, one whose plan lacks
/// webhooks (402) and one the token's user does not administer (403); the install button posted as
/// the browser posts it; the page again with the outcome. Screenshots `webhooks.png` and
/// `webhooks-installed.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_page_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "chromium is required in CI");
        let _ = writeln!(std::io::stderr(), "SKIPPED webhooks_page_in_headless_chromium: no chromium on PATH");
        return;
    };
    let shots = screenshots_dir();
    let kaiten = Kaiten::start(SimConfig { spaces: 3, ..SimConfig::small() }).await;
    let sim = &kaiten.sim;
    let spaces = sim.space_ids();
    sim.set_external_webhook_denial(spaces[1], Some(kaiten_sim::WebhookDenial::NotInPlan));
    sim.set_external_webhook_denial(spaces[2], Some(kaiten_sim::WebhookDenial::NotAdmin));
    let env = kaiten.env(&[("KAITEN_WEBHOOK_SECRET", SECRET), ("KAITEN_PUBLIC_URL", "https://sync.example.com")]);
    let serve = Serve::start(kaiten.path(), &env).await;
    let page = serve.url("/admin/sync/webhooks");

    let dom = chromium_run(&browser, &page, 500, None).await;
    let row =
        |dom: &str, space: i64, state: &str| dom.contains(&format!("data-space=\"{space}\" data-state=\"{state}\""));
    assert!(row(&dom, spaces[0], "none") && row(&dom, spaces[1], "not in plan"), "{dom}");
    assert!(row(&dom, spaces[2], "no permission"), "{dom}");
    assert!(dom.contains("action=\"/admin/sync/webhooks/install\""), "{dom}");
    assert!(dom.contains("https://sync.example.com/api/webhooks/kaiten/••••") && !dom.contains(SECRET), "{dom}");
    chromium_run(&browser, &page, 500, Some(&shots.join("webhooks.png"))).await;

    assert_eq!(serve.submit("/admin/sync/webhooks/install", &[]).await, 303);
    assert_eq!(sim.external_webhooks_json().len(), 1);
    let dom = chromium_run(&browser, &page, 500, None).await;
    assert!(row(&dom, spaces[0], "installed") && dom.contains("(created)"), "{dom}");
    assert!(dom.contains("3 space(s): 1 installed, 1 not in plan, 1 no permission"), "{dom}");
    chromium_run(&browser, &page, 500, Some(&shots.join("webhooks-installed.png"))).await;
    // The main page links to it.
    let dom = chromium_run(&browser, &serve.url("/admin/sync"), 500, None).await;
    assert!(dom.contains("href=\"/admin/sync/webhooks\""), "{dom}");
}
