//! `--log-format json` (`KAITEN_LOG_FORMAT=json`): every line on stderr is a JSON object, and the
//! lines of a run (a sync, a webhook batch) carry its run id.

mod common;

use std::time::Duration;

use common::{run as kaiten_sync, Kaiten, Serve};
use kaiten_sim::SimConfig;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

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
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let (url, token) = (sim.base_url(), sim.token());
    let env = kaiten.api_env();
    let out = kaiten_sync(dir, &env, &["--log-format", "json", "-v", "sync", "full"]).await;
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
    let out = kaiten_sync(dir, &env, &["sync", "incremental"]).await;
    assert!(!out.status.success());
    let lines = json_lines(&out.stderr);
    let last = lines.last().expect("the error");
    assert_eq!(last["level"], "ERROR");
    assert!(message(last).contains("401"), "{last}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("wrong-token"));

    // An unknown format is refused with the choices.
    let out = kaiten_sync(dir, &[], &["--log-format", "yaml", "status"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("text") && err.contains("json"), "{err}");
}

#[tokio::test]
async fn webhook_batches_log_their_run_id_in_json() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let sim = &kaiten.sim;
    let secret = "logs-test-secret-0123456789";
    let mut api = kaiten.api_env();
    api.extend([("KAITEN_WEBHOOK_SECRET", secret), ("KAITEN_LOG_FORMAT", "json"), ("RUST_LOG", "info")]);
    let mut serve = Serve::start_piped(kaiten.path(), &api).await;
    let mut stderr = BufReader::new(serve.child.stderr.take().unwrap()).lines();

    let card = sim.create_card(sim.board_ids()[0], "Logged");
    let body = serde_json::json!({"event": "card:add", "data": card}).to_string();
    let url = serve.url(&format!("/api/webhooks/kaiten/{secret}"));
    let response = serve.http.post(&url).body(body).send().await.expect("serve answered");
    assert!(response.status().is_success(), "{}", response.status());

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
    let _ = serve.child.start_kill();
    let _ = serve.child.wait().await;
}
