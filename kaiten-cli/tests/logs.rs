//! `--log-format json` (`KAITEN_LOG_FORMAT=json`): every line on stderr is a JSON object, and the
//! lines of a run (a sync, a webhook batch) carry its run id.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use kaiten_sim::{SimConfig, Simulator};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs the binary in `dir` with only the given environment (plus PATH).
async fn kaiten_sync(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kaiten-sync"));
    cmd.current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("the binary runs")
}

/// Every line of `stderr`, parsed; fails on a line that is not a JSON object.
fn json_lines(stderr: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n\n{text}"));
            assert!(value.is_object() && value["level"].is_string() && value["timestamp"].is_string(), "{line}");
            value
        })
        .collect()
}

/// The run id a line carries: in one of its spans (`spans`, outermost first) or in its fields.
fn run_id(line: &Value) -> Option<i64> {
    let in_spans = line["spans"].as_array().and_then(|spans| spans.iter().find_map(|s| s["run_id"].as_i64()));
    in_spans.or_else(|| line["fields"]["run_id"].as_i64())
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_run_id_on_every_line_of_a_run() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, token) = (sim.base_url(), sim.token());
    let env = [("KAITEN_API_URL", url.as_str()), ("KAITEN_API_TOKEN", token.as_str()), ("KAITEN_RATE_LIMIT", "0")];
    let out = kaiten_sync(dir.path(), &env, &["--log-format", "json", "-v", "sync", "full"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stderr);
    let first = lines.iter().position(|l| run_id(l).is_some()).expect("lines of the run carry its id");
    let last = lines.iter().rposition(|l| run_id(l).is_some()).unwrap();
    let id = run_id(&lines[first]).unwrap();
    assert!(last - first >= 9, "a line per entity kind at least: {lines:#?}");
    for line in &lines[first..=last] {
        assert_eq!(run_id(line), Some(id), "every line of the run carries its id: {line}");
    }
    assert!(
        lines[first..=last].iter().any(|l| message(l).contains("cards") && l["spans"][0]["name"] == "sync"),
        "the engine's span is listed: {lines:#?}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&token), "the token is never logged");

    // The environment variable does the same, and the error that ends a command is a JSON line too.
    let env = [("KAITEN_API_URL", url.as_str()), ("KAITEN_API_TOKEN", "wrong-token"), ("KAITEN_LOG_FORMAT", "json")];
    let out = kaiten_sync(dir.path(), &env, &["sync", "incremental"]).await;
    assert!(!out.status.success());
    let lines = json_lines(&out.stderr);
    let last = lines.last().expect("the error");
    assert_eq!(last["level"], "ERROR");
    assert!(message(last).contains("401"), "{last}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("wrong-token"));

    // An unknown format is refused with the choices.
    let out = kaiten_sync(dir.path(), &[], &["--log-format", "yaml", "status"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("text") && err.contains("json"), "{err}");
}

#[tokio::test]
async fn webhook_batches_log_their_run_id_in_json() {
    let sim = Simulator::start(SimConfig::small()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let secret = "logs-test-secret-0123456789";
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kaiten-sync"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KAITEN_API_URL", sim.base_url())
        .env("KAITEN_API_TOKEN", sim.token())
        .env("KAITEN_RATE_LIMIT", "0")
        .env("KAITEN_WEBHOOK_SECRET", secret)
        .env("KAITEN_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .args(["serve", "--listen", &listen, "--no-schedule"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();

    let card = sim.create_card(sim.board_ids()[0], "Logged");
    let body = serde_json::json!({"event": "card:add", "data": card}).to_string();
    let http = reqwest::Client::new();
    let url = format!("http://{listen}/api/webhooks/kaiten/{secret}");
    let mut delivered = false;
    for _ in 0..100 {
        match http.post(&url).body(body.clone()).send().await {
            Ok(response) => {
                assert!(response.status().is_success(), "{}", response.status());
                delivered = true;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(delivered, "serve answered");

    let mut seen = Vec::new();
    let applied = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            let done = message(&value) == "webhook batch applied";
            seen.push(value);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(applied, Ok(true), "the batch was logged: {seen:#?}");
    let line = seen.last().unwrap();
    let id = run_id(line).expect("the batch's line carries its run id");
    assert_eq!(line["spans"][0]["name"], "webhook", "{line}");
    assert_eq!(line["spans"][0]["run_id"], id, "{line}");
    assert!(seen.iter().all(|l| !l.to_string().contains(secret)), "the secret is never logged");
    let _ = child.start_kill();
    let _ = child.wait().await;
}
