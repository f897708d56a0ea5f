//! The `kaiten-sync` binary end to end: configuration, errors a person understands, sync, status.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{
    assert_fails_with, command, run as kaiten_sync, send_signal, skip_postgres, stderr, stdout, test_database_url,
    Kaiten,
};
use kaiten_sim::SimConfig;
use kaiten_store_sqlite::SqliteStore;
use kaiten_sync::{LockAttempt, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server answering every request with one canned HTTP response.
async fn canned_server(status: &str, content_type: &str, body: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_missing_token_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = kaiten_sync(dir.path(), &[("KAITEN_API_URL", "https://example.kaiten.ru")], &["sync", "full"]).await;
    assert_fails_with(&out, "KAITEN_API_TOKEN is not set");
    let out = kaiten_sync(dir.path(), &[("KAITEN_API_TOKEN", "t")], &["sync", "full"]).await;
    assert_fails_with(&out, "KAITEN_API_URL is not set");
}

#[tokio::test]
async fn a_bad_url_is_named_and_the_token_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("KAITEN_API_URL", "ftp://example.kaiten.ru"), ("KAITEN_API_TOKEN", "super-secret-token")];
    let out = kaiten_sync(dir.path(), &env, &["sync", "full"]).await;
    assert_fails_with(&out, "ftp://example.kaiten.ru");
    assert!(!stderr(&out).contains("super-secret-token"));
}

#[tokio::test]
async fn unreachable_kaiten_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let env = [("KAITEN_API_URL", url.as_str()), ("KAITEN_API_TOKEN", "t"), ("KAITEN_TIMEOUT", "2")];
    let out = kaiten_sync(dir.path(), &env, &["sync", "full"]).await;
    assert_fails_with(&out, "cannot reach Kaiten");
}

#[tokio::test]
async fn a_rejected_token_says_so() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let url = sim.base_url();
    let env = [("KAITEN_API_URL", url.as_str()), ("KAITEN_API_TOKEN", "wrong-token"), ("KAITEN_RATE_LIMIT", "0")];
    let out = kaiten_sync(dir, &env, &["sync", "full"]).await;
    assert_fails_with(&out, "401");
    assert_fails_with(&out, "check KAITEN_API_TOKEN");
    assert!(!stderr(&out).contains("wrong-token"));
    // The failed run is in the run log.
    let out = kaiten_sync(dir, &[], &["status", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["runs"][0]["status"], "failed");
    assert!(status["runs"][0]["error"].as_str().unwrap().contains("401"));
}

#[tokio::test]
async fn a_feature_missing_from_the_plan_shows_kaitens_message() {
    let url = canned_server("402 Payment Required", "application/json", r#"{"message":"Upgrade your plan"}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("KAITEN_API_URL", url.as_str()), ("KAITEN_API_TOKEN", "t"), ("KAITEN_RATE_LIMIT", "0")];
    let out = kaiten_sync(dir.path(), &env, &["sync", "full"]).await;
    assert_fails_with(&out, "402");
    assert_fails_with(&out, "Upgrade your plan");
}

#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DATABASE_URL", "postgres://kaiten:hunter2@127.0.0.1:1/test")];
    let out = kaiten_sync(dir.path(), &env, &["migrate"]).await;
    assert_fails_with(&out, "127.0.0.1:1");
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    let env = [("DATABASE_URL", "sqlite:///no/such/dir/kaiten.db")];
    let out = kaiten_sync(dir.path(), &env, &["migrate"]).await;
    assert_fails_with(&out, "/no/such/dir");
    let env = [("DATABASE_URL", "mysql://x@y/z")];
    let out = kaiten_sync(dir.path(), &env, &["migrate"]).await;
    assert_fails_with(&out, "unsupported DATABASE_URL");
}

#[tokio::test]
async fn a_database_locked_by_another_run_is_reported() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let dir = kaiten.path();
    let other = SqliteStore::open(&kaiten.db).unwrap();
    other.migrate().await.unwrap();
    assert_eq!(other.try_lock("other-process", Duration::from_secs(600)).await.unwrap(), LockAttempt::Acquired);
    let env = kaiten.env(&[]);
    let out = kaiten_sync(dir, &env, &["sync", "incremental"]).await;
    assert_fails_with(&out, "another sync is running");
    assert_fails_with(&out, "other-process");
    other.release_lock("other-process").await.unwrap();
    let out = kaiten_sync(dir, &env, &["sync", "incremental"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn dotenv_configures_a_sync_and_status_reports_it() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    std::fs::write(
        dir.join(".env"),
        format!("KAITEN_API_URL={}\nKAITEN_API_TOKEN=wrong\nKAITEN_RATE_LIMIT=0\n", sim.base_url()),
    )
    .unwrap();
    // .env.local wins over .env.
    std::fs::write(dir.join(".env.local"), "KAITEN_API_TOKEN=sim-token\nDATABASE_URL=sqlite://mirror.db\n").unwrap();
    let out = kaiten_sync(dir, &[], &["sync", "full"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("succeeded"), "{}", stdout(&out));
    assert!(kaiten.db.exists());

    sim.create_card(sim.board_ids()[0], "new");
    let out = kaiten_sync(dir, &[], &["sync", "--only", "cards"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kaiten_sync(dir, &[], &["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cards = status["tables"].as_array().unwrap().iter().find(|t| t["table"] == "cards").unwrap();
    assert_eq!(cards["live"].as_u64().unwrap() as usize, sim.card_ids().len());
    assert_eq!(status["runs"][0]["kind"], "selective");
    assert_eq!(status["runs"][0]["stats"]["cards"]["inserted"], 1);
    assert_eq!(status["runs"][1]["kind"], "full");
    let out = kaiten_sync(dir, &[], &["status"]).await;
    assert!(stdout(&out).contains("card_tags"), "{}", stdout(&out));
}

#[tokio::test]
async fn a_wrong_kind_name_lists_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = kaiten_sync(dir.path(), &[], &["sync", "--only", "kards"]).await;
    assert_fails_with(&out, "unknown entity kind \"kards\"");
    let out = kaiten_sync(dir.path(), &[], &["sync"]).await;
    assert_fails_with(&out, "say what to sync");
}

#[tokio::test]
async fn the_quick_demo_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("demo.db").display());
    let out = kaiten_sync(dir.path(), &[], &["demo", "--quick", "--database-url", &db]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("found 3 new and 5 changed cards"), "{}", stdout(&out));
    assert!(stdout(&out).contains("marked 1 card deleted"), "{}", stdout(&out));
    assert!(stdout(&out).contains("deleted cards last reconciled: 2"), "{}", stdout(&out));
    assert!(stdout(&out).contains("webhook inbox: 0 pending, 0 failed"), "{}", stdout(&out));
}

/// `--board` or `--space` naming something Kaiten does not have: a clear error naming the id, a
/// non-zero exit, and nothing stored (no placeholder board, no lanes).
#[tokio::test]
async fn an_unknown_board_or_space_is_an_error_and_stores_nothing() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let env = kaiten.env(&[]);
    let out = kaiten_sync(dir, &env, &["sync", "--only", "lanes", "--board", "424242", "--full"]).await;
    assert_fails_with(&out, "Kaiten has no board 424242");
    let board = sim.board_ids()[0].to_string();
    let out = kaiten_sync(dir, &env, &["sync", "--only", "cards", "--board", &board, "--board", "7"]).await;
    assert_fails_with(&out, "Kaiten has no board 7");
    let out = kaiten_sync(dir, &env, &["sync", "full", "--space", "5", "--space", "6"]).await;
    assert_fails_with(&out, "Kaiten has no spaces 5,6");
    let store = SqliteStore::open(&kaiten.db).unwrap();
    for table in store.counts().await.unwrap() {
        assert_eq!((table.live, table.deleted), (0, 0), "{} holds nothing", table.table);
    }
    // A known board works.
    let out = kaiten_sync(dir, &env, &["sync", "--only", "lanes", "--board", &board, "--full"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `status` says when deletions were last reconciled: never before a full sync, then its time.
#[tokio::test]
async fn status_shows_when_deletions_were_last_reconciled() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let env = kaiten.api_env();
    let out =
        kaiten_sync(dir, &env, &["sync", "--only", "cards", "--board", &sim.board_ids()[0].to_string(), "--full"])
            .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kaiten_sync(dir, &env, &["status"]).await;
    assert!(
        stdout(&out).contains("deleted cards last reconciled: never"),
        "a board's full sync is not all cards: {}",
        stdout(&out)
    );
    let out = kaiten_sync(dir, &env, &["sync", "full"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kaiten_sync(dir, &env, &["status"]).await;
    assert!(stdout(&out).contains("deleted cards last reconciled: 2"), "{}", stdout(&out));
    assert!(stdout(&out).contains("webhook inbox: 0 pending, 0 failed"), "{}", stdout(&out));
    let out = kaiten_sync(dir, &env, &["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cards = status["entities"].as_array().unwrap().iter().find(|e| e["kind"] == "cards").unwrap();
    assert_eq!(status["deletions_reconciled_at"], cards["last_full_sync_at"]);
    assert!(status["deletions_reconciled_at"].is_string());
    assert_eq!(status["webhook_inbox"]["pending"], 0);
}

/// `sync incremental --members` (or `KAITEN_CARD_MEMBERS=1`) stores the members of the cards that
/// changed; without it, the incremental run stores none.
#[tokio::test]
async fn members_flag_stores_the_members_of_changed_cards() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let env = kaiten.env(&[]);
    let out = kaiten_sync(dir, &env, &["sync", "full", "--members"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let served = |id: i64| {
        let mut members: Vec<(i64, i64)> = sim.card_detail_json(id).unwrap()["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["user_id"].as_i64().unwrap(), m["type"].as_i64().unwrap()))
            .collect();
        members.sort_unstable();
        members
    };
    let stored = |id: i64| {
        let path = kaiten.db.clone();
        async move { SqliteStore::open(&path).unwrap().card_members(id).await.unwrap() }
    };
    let board = sim.board_ids()[0];

    let plain = sim.create_card(board, "without members")["id"].as_i64().unwrap();
    let out = kaiten_sync(dir, &env, &["sync", "incremental"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stored(plain).await.is_empty(), "off by default");

    let flagged = sim.create_card(board, "with --members")["id"].as_i64().unwrap();
    let out = kaiten_sync(dir, &env, &["sync", "incremental", "--members"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stored(flagged).await, served(flagged));
    assert!(!served(flagged).is_empty());

    let by_env = sim.create_card(board, "with KAITEN_CARD_MEMBERS")["id"].as_i64().unwrap();
    let mut with_env = env.to_vec();
    with_env.push(("KAITEN_CARD_MEMBERS", "1"));
    let out = kaiten_sync(dir, &with_env, &["sync", "incremental"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stored(by_env).await, served(by_env));
    assert!(stored(plain).await.is_empty(), "an unchanged card is not fetched");
}

/// Everything a run printed, both streams.
fn printed(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// Passwords of database URLs never reach the output, whatever characters they hold and wherever
/// the URL puts them (issue 12: an unencoded `/` used to cut the redaction short).
#[tokio::test]
async fn database_passwords_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let urls = [
        "postgres://postgres:Pw/Secret123@127.0.0.1:5432/x",
        "postgres://postgres:Pw?Secret123@127.0.0.1:5432/x",
        "postgres://postgres:Pw#Secret123@127.0.0.1:5432/x",
        "postgresql://postgres:Secret123@127.0.0.1:1/x",
        "postgres://postgres:Secret%2F123@127.0.0.1:1/x",
        "postgres://postgres@127.0.0.1:1/x?sslmode=disable&password=Secret123",
        "postgres://postgres@127.0.0.1:1/x?PASSWORD=Secret123&sslpassword=Secret123",
        "mysql://root:Pw/Secret123@127.0.0.1/x",
    ];
    for url in urls {
        for args in [&["status"][..], &["status", "--json"], &["migrate"], &["-vv", "migrate"]] {
            let out = kaiten_sync(dir.path(), &[("DATABASE_URL", url)], args).await;
            assert!(!out.status.success(), "{url} {args:?}: {}", stdout(&out));
            let text = printed(&out);
            assert!(!text.contains("Secret123") && !text.contains("Secret%2F123"), "{url} {args:?} printed:\n{text}");
        }
    }
    let out = kaiten_sync(dir.path(), &[("DATABASE_URL", urls[0])], &["status"]).await;
    assert_fails_with(&out, "postgres://postgres:***@127.0.0.1:5432/x");
}

/// `migrate` prints the database it migrated, without a `password=` parameter's value.
#[tokio::test]
async fn migrate_names_the_database_without_its_password() {
    if skip_postgres() {
        return;
    }
    let url = test_database_url();
    let url_with_password = format!("{url}{}password=Secret123", if url.contains('?') { '&' } else { '?' });
    let schema = format!("kaiten_test_cli_redact_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let env = [("DATABASE_URL", url_with_password.as_str()), ("KAITEN_DB_SCHEMA", schema.as_str())];
    let out = kaiten_sync(dir.path(), &env, &["migrate"]).await;
    assert!(
        out.status.success() || !stderr(&out).contains("cannot connect"),
        "PostgreSQL at {} is unreachable: start it, set KAITEN_TEST_DATABASE_URL, or set KAITEN_SKIP_POSTGRES=1 \
         to skip the PostgreSQL tests\n{}",
        kaiten_client::redact_url(&url),
        stderr(&out)
    );
    let text = printed(&out);
    let store = kaiten_store_postgres::PgStore::connect(&url).await.unwrap();
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(store.pool()).await;
    assert!(out.status.success(), "{text}");
    assert!(text.contains("password=***") && !text.contains("Secret123"), "{text}");
}

/// A password in `KAITEN_API_URL` is not printed when Kaiten cannot be reached.
#[tokio::test]
async fn a_password_in_the_kaiten_url_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://user:Pw/Secret123@127.0.0.1:{port}");
    let env = [("KAITEN_API_URL", url.as_str()), ("KAITEN_API_TOKEN", "t"), ("KAITEN_TIMEOUT", "2")];
    let out = kaiten_sync(dir.path(), &env, &["sync", "full"]).await;
    assert!(!out.status.success());
    assert!(!printed(&out).contains("Secret123"), "{}", printed(&out));
    let url = format!("http://user:Secret123@127.0.0.1:{port}");
    let env = [("KAITEN_API_URL", url.as_str()), ("KAITEN_API_TOKEN", "t"), ("KAITEN_TIMEOUT", "2")];
    let out = kaiten_sync(dir.path(), &env, &["-vv", "sync", "full"]).await;
    assert_fails_with(&out, &format!("cannot reach Kaiten at http://user:***@127.0.0.1:{port}"));
    assert!(!printed(&out).contains("Secret123"), "{}", printed(&out));
}

/// Settings that make no sense are refused with one line naming the setting, before anything runs.
#[tokio::test]
async fn settings_that_make_no_sense_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let first_line = |out: &Output| stderr(out).lines().next().unwrap_or_default().to_owned();
    for url in ["postgres://", "postgres://postgres@127.0.0.1:5432", "postgresql://postgres:pw@127.0.0.1:5432/"] {
        let out = kaiten_sync(dir.path(), &[("DATABASE_URL", url)], &["status"]).await;
        assert_fails_with(&out, "names no database");
        let line = first_line(&out);
        assert!(line.contains("DATABASE_URL") && line.contains("names no database"), "{url}: {line}");
    }
    let env = [("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x"), ("KAITEN_DB_SCHEMA", "Bad-Name")];
    let out = kaiten_sync(dir.path(), &env, &["migrate"]).await;
    let line = first_line(&out);
    assert!(
        !out.status.success() && line.contains("KAITEN_DB_SCHEMA") && line.contains("invalid schema name"),
        "{line}"
    );

    let kaiten =
        [("KAITEN_API_URL", "http://127.0.0.1:9"), ("KAITEN_API_TOKEN", "t"), ("DATABASE_URL", "sqlite://x.db")];
    let with = |name: &'static str, value: &'static str| {
        let mut env = kaiten.to_vec();
        env.push((name, value));
        env
    };
    for timeout in ["0", "-5", "soon"] {
        let out = kaiten_sync(dir.path(), &with("KAITEN_TIMEOUT", timeout), &["sync", "full"]).await;
        let line = first_line(&out);
        assert!(!out.status.success() && line.contains("KAITEN_TIMEOUT") && line.contains("1 or more"), "{line}");
    }
    let out = kaiten_sync(dir.path(), &kaiten, &["sync", "full", "--timeout", "-5"]).await;
    assert!(!out.status.success() && first_line(&out).contains("KAITEN_TIMEOUT / --timeout"), "{}", stderr(&out));
    for rate in ["1e-9", "-1", "NaN", "fast"] {
        let out = kaiten_sync(dir.path(), &with("KAITEN_RATE_LIMIT", rate), &["sync", "full"]).await;
        let line = first_line(&out);
        assert!(
            !out.status.success() && line.contains("KAITEN_RATE_LIMIT") && line.contains("0 for no limit"),
            "{line}"
        );
        assert!(!stderr(&out).contains("None"), "the CLI spells no limit 0: {}", stderr(&out));
    }
    for concurrency in ["0", "65", "many"] {
        let out = kaiten_sync(dir.path(), &with("KAITEN_CONCURRENCY", concurrency), &["sync", "full"]).await;
        let all = stderr(&out);
        assert!(!out.status.success() && all.contains("--concurrency") && all.contains(concurrency), "{all}");
    }
    assert!(!dir.path().join("x.db").exists(), "nothing was written");
}

/// `kill -9` of a SQLite sync leaves its lock row behind; the next run on this host sees the holder's
/// process is gone and takes the lock at once instead of waiting 10 minutes for it to go stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_with_kill_9_does_not_block_the_next_one() {
    use std::os::unix::process::ExitStatusExt;
    let kaiten = Kaiten::start(SimConfig { cards: 1000, ..SimConfig::small() }).await;
    kaiten.sim.set_latency(Duration::from_millis(50));
    let (dir, db) = (kaiten.path(), &kaiten.db);
    let env = kaiten.env(&[]);
    let mut cmd = command(dir, &env, &["sync", "full"]);
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = cmd.kill_on_drop(true).spawn().expect("sync starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let running = match SqliteStore::open(db) {
            Ok(store) => store
                .recent_runs(1)
                .await
                .is_ok_and(|runs| runs.first().is_some_and(|r| r.status == kaiten_sync::RunStatus::Running)),
            Err(_) => false,
        };
        if running {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the sync never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_signal(&child, "KILL");
    let status = child.wait().await.unwrap();
    assert_eq!(status.signal(), Some(9), "killed mid-run, not finished: {status:?}");
    // The next run, started at once: no "another sync is running", no waiting.
    let started = std::time::Instant::now();
    let out = kaiten_sync(dir, &env, &["sync", "full"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("another sync is running"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("took over the sync lock of a process of this host that is gone"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// `sync --card ID,...` refetches just those cards: a new one is stored, one Kaiten no longer has
/// is marked deleted; `--card` with a listing option is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_card_refetches_just_those_cards() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let env = kaiten.api_env();
    let out = kaiten_sync(dir, &env, &["sync", "full"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let new = sim.create_card(sim.board_ids()[0], "Asked for by id")["id"].as_i64().unwrap();
    let gone = sim.card_ids()[0];
    sim.delete_card(gone);
    sim.reset_request_log();
    let ids = format!("{new},{gone}");
    let out = kaiten_sync(dir, &env, &["sync", "--card", &ids]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("refetched 2 card(s): 2 applied, 0 failed; 2 request(s)"), "{}", stdout(&out));
    let store = SqliteStore::open(dir.join("kaiten.db")).unwrap();
    let row = store.get(kaiten_sync::EntityKind::Cards, new).await.unwrap().expect("the new card is stored");
    assert_eq!(row.raw["title"], "Asked for by id");
    let deleted = store.get(kaiten_sync::EntityKind::Cards, gone).await.unwrap().unwrap();
    assert!(deleted.deleted_at.is_some(), "a card Kaiten answers 404 for is marked deleted");
    assert_eq!(sim.request_log().len(), 2, "one request per card: {:?}", sim.request_log());
    let out = kaiten_sync(dir, &env, &["sync", "--card", "5", "--full"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--card") && stderr(&out).contains("--full"), "{}", stderr(&out));
}

/// The API token never reaches the output, however verbose: `-vvv` (trace: every request, span
/// and retry) in text and JSON, through a full and an incremental sync, and through retried
/// faults (429s and 5xx put the request and its response into the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_trace_logs() {
    const TOKEN: &str = "tok-3c9f1e-never-printed-7d2a";
    let kaiten = Kaiten::start(SimConfig { token: TOKEN.to_owned(), ..SimConfig::small() }).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let env = kaiten.api_env();
    let runs: [&[&str]; 3] = [
        &["-vvv", "sync", "full"],
        &["-vvv", "--log-format", "json", "sync", "incremental"],
        &["-vvv", "sync", "full"],
    ];
    for (i, args) in runs.iter().enumerate() {
        if i == 2 {
            // Faults: the retries log the failed attempts too.
            sim.set_faults(kaiten_sim::Faults { server_error_rate: 0.2, ..kaiten_sim::Faults::default() });
        }
        let out = kaiten_sync(dir, &env, args).await;
        let (out_text, err_text) = (stdout(&out), stderr(&out));
        assert!(out.status.success(), "{args:?}: {err_text}");
        assert!(err_text.lines().count() > 50, "{args:?}: trace logging is on: {err_text}");
        assert!(err_text.contains("TRACE") || err_text.contains(r#""level":"TRACE""#), "{args:?}: {err_text}");
        for text in [&out_text, &err_text] {
            assert!(!text.contains(TOKEN), "{args:?}: the token was printed:\n{text}");
            assert!(!text.contains(&TOKEN[4..20]), "{args:?}: part of the token was printed:\n{text}");
        }
    }
}

/// `--max-delete-share` (`KAITEN_MAX_DELETE_SHARE`) takes a share from 0 to 1 or a percentage;
/// anything else is refused, naming the setting, before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_delete_share_is_a_share_or_a_percentage() {
    let kaiten = Kaiten::start(SimConfig::small()).await;
    let (sim, dir) = (&kaiten.sim, kaiten.path());
    let env = kaiten.api_env();
    for bad in ["2", "-0.1", "150%", "lots"] {
        let flag = format!("--max-delete-share={bad}");
        let out = kaiten_sync(dir, &env, &["sync", "full", &flag]).await;
        assert_fails_with(&out, "--max-delete-share");
        assert_fails_with(&out, "a share from 0 to 1");
    }
    assert_eq!(sim.request_count(), 0, "nothing ran");
    let out = kaiten_sync(dir, &env, &["sync", "full", "--max-delete-share", "25%"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let with_env: Vec<(&str, &str)> = env.iter().copied().chain([("KAITEN_MAX_DELETE_SHARE", "0.5")]).collect();
    let out = kaiten_sync(dir, &with_env, &["sync", "full"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}
