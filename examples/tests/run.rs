//! Every example program runs against the simulated Kaiten (no `KAITEN_API_URL`), does what it
//! says, exits 0, and writes its mirror into a temporary directory: nothing in the directory it
//! runs from (the source tree, under `cargo run`).

use std::path::Path;
use std::time::Duration;

/// Runs an example binary in `dir` with only `PATH` and `env` set; returns its stdout, after
/// checking that it exited 0 within two minutes and left no file in `dir`.
async fn run(binary: &str, dir: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{binary} did not exit within two minutes"))
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{binary} failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("using a simulated Kaiten"), "{binary}: {stdout}");
    let left: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.is_empty(), "{binary} wrote into the directory it ran in: {left:?}");
    let mirror = stdout.lines().find_map(|l| l.strip_prefix("mirror: ")).expect("the example names its mirror");
    assert!(Path::new(mirror).starts_with(std::env::temp_dir()), "{binary}: mirror at {mirror}");
    assert!(!Path::new(mirror).exists(), "{binary}: the temporary mirror is removed at exit");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_stores_the_company() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(env!("CARGO_BIN_EXE_full_sync"), dir.path(), &[]).await;
    let cards = out.lines().find(|l| l.trim_start().starts_with("cards:")).unwrap_or_else(|| panic!("{out}"));
    assert!(cards.contains(", 60 new, 0 changed"), "{cards}");
    assert!(out.contains("; 60 cards stored"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_service_finds_the_card_created_between_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SYNC_EVERY_SECS", "1"), ("SYNC_ROUNDS", "2")];
    let out = run(env!("CARGO_BIN_EXE_incremental_service"), dir.path(), &env).await;
    assert!(out.contains("initial full sync:"), "{out}");
    assert_eq!(out.matches("incremental: 1 new, 0 changed cards").count(), 2, "one new card a round: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_sync_stores_one_board() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(env!("CARGO_BIN_EXE_selective_sync"), dir.path(), &[]).await;
    assert!(out.contains("users and tags:"), "{out}");
    let line = out.lines().find(|l| l.starts_with("boards [")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(" cards fetched") && !line.contains(": 0 cards fetched"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_axum_applies_a_delivery_without_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(env!("CARGO_BIN_EXE_webhook_axum"), dir.path(), &[]).await;
    assert!(out.contains("receiving webhooks at http://127.0.0.1:"), "{out}");
    assert!(out.contains("queued for a refetch"), "{out}");
    let line =
        out.lines().find(|l| l.contains("in the mirror, without another sync")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("title \"Renamed in Kaiten\""), "{line}");
}
