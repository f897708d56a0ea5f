//! What the binary's integration tests share: `kaiten-sync` run with only the environment a test
//! gives it, a simulated Kaiten with a SQLite mirror in a temporary directory, `serve` as a process
//! on a free port, and the PostgreSQL test server. Each test binary uses its own part of it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use kaiten_sim::{SimConfig, Simulator};
use kaiten_store_postgres::{PgStore, PgStoreOptions};
use serde_json::Value;

/// The binary in `dir` with only `env` (plus `PATH`), never the caller's environment or `.env`.
pub fn command(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kaiten-sync"));
    cmd.current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the binary (see [`command`]) to its end.
pub async fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    command(dir, env, args).output().await.expect("the binary runs")
}

/// What the binary printed on stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the binary printed on stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The binary failed, saying `needle` on stderr.
pub fn assert_fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure; stdout: {}", stdout(out));
    let err = stderr(out);
    assert!(err.contains(needle), "stderr should mention {needle:?}:\n{err}");
}

/// A port nothing listens on at the moment.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` every 50 ms until it holds; fails after 30 s, naming `what`.
pub async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `signal` (`KILL`, `INT`) to a running child process.
pub fn send_signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("running").to_string();
    assert!(std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
}

/// A simulated Kaiten, and a temporary directory (the binary's working directory) holding the
/// SQLite mirror `mirror.db`.
pub struct Kaiten {
    /// The simulator.
    pub sim: Simulator,
    /// The working directory.
    pub dir: tempfile::TempDir,
    /// `mirror.db` in it.
    pub db: PathBuf,
    url: String,
    token: String,
    db_url: String,
}

impl Kaiten {
    /// A simulator with `config` and an empty directory.
    pub async fn start(config: SimConfig) -> Kaiten {
        let sim = Simulator::start(config).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mirror.db");
        let db_url = format!("sqlite://{}", db.display());
        let (url, token) = (sim.base_url(), sim.token());
        Kaiten { sim, dir, db, url, token, db_url }
    }

    /// The working directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `KAITEN_API_URL` and `KAITEN_API_TOKEN` of the simulator, `KAITEN_RATE_LIMIT=0`.
    pub fn api_env(&self) -> Vec<(&'static str, &str)> {
        vec![("KAITEN_API_URL", &self.url), ("KAITEN_API_TOKEN", &self.token), ("KAITEN_RATE_LIMIT", "0")]
    }

    /// [`Kaiten::api_env`], `DATABASE_URL` of the mirror, then `extra`.
    pub fn env<'a>(&'a self, extra: &[(&'static str, &'a str)]) -> Vec<(&'static str, &'a str)> {
        let mut env = self.api_env();
        env.push(("DATABASE_URL", &self.db_url));
        env.extend_from_slice(extra);
        env
    }
}

/// A running `serve` process, killed when dropped.
pub struct Serve {
    /// The process.
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:{port}`.
    pub base: String,
    /// A client that does not follow redirects.
    pub http: reqwest::Client,
}

impl Serve {
    /// `serve --no-schedule` on a free port, its output discarded; returns once `/healthz` answers.
    pub async fn start(dir: &Path, env: &[(&str, &str)]) -> Serve {
        Serve::start_on(dir, env, &format!("127.0.0.1:{}", free_port()), &[], false).await
    }

    /// [`Serve::start`] with stdout and stderr piped, for the test to read.
    pub async fn start_piped(dir: &Path, env: &[(&str, &str)]) -> Serve {
        Serve::start_on(dir, env, &format!("127.0.0.1:{}", free_port()), &[], true).await
    }

    /// `serve --listen {listen} --no-schedule {args}`; returns once `/healthz` answers.
    pub async fn start_on(dir: &Path, env: &[(&str, &str)], listen: &str, args: &[&str], piped: bool) -> Serve {
        let output = || if piped { Stdio::piped() } else { Stdio::null() };
        let serve_args: Vec<&str> =
            ["serve", "--listen", listen, "--no-schedule"].into_iter().chain(args.iter().copied()).collect();
        let child = command(dir, env, &serve_args)
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true)
            .spawn()
            .expect("serve starts");
        let base = format!("http://{listen}");
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap();
        let serve = Serve { child, base, http };
        wait_until("/healthz", || async {
            matches!(serve.http.get(serve.url("/healthz")).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        serve
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts a delivery to the webhook path of `secret`; returns the status.
    pub async fn deliver(&self, secret: &str, body: &Value) -> u16 {
        let url = self.url(&format!("/api/webhooks/kaiten/{secret}"));
        self.http.post(url).json(body).send().await.expect("delivery posted").status().as_u16()
    }

    /// Posts a form as the admin page's browser does (same origin, url-encoded).
    pub async fn submit(&self, action: &str, fields: &[(&str, &str)]) -> reqwest::StatusCode {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(',', "%2C").replace(' ', "+")))
            .collect::<Vec<_>>()
            .join("&");
        self.http
            .post(self.url(action))
            .header("origin", &self.base)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("form posted")
            .status()
    }

    /// `/admin/sync/status.json`.
    pub async fn status(&self) -> Value {
        self.http.get(self.url("/admin/sync/status.json")).send().await.unwrap().json().await.unwrap()
    }

    /// Waits (up to 120 s) until no run is running; returns the status then.
    pub async fn wait_idle(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.status().await;
            if status["schedule"]["running"].is_null() {
                return status;
            }
            assert!(Instant::now() < deadline, "the run did not finish: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9`.
    pub fn kill_hard(&self) {
        send_signal(&self.child, "KILL");
    }
}

/// Whether the developer opted out of the PostgreSQL tests with `KAITEN_SKIP_POSTGRES` (refused in
/// CI); if so, says that the running test is skipped where `cargo test` shows it (straight to
/// stderr: the harness hides an `eprintln!` of a passing test). Without the opt-out a PostgreSQL
/// test fails when the server is unreachable.
pub fn skip_postgres() -> bool {
    use std::io::Write;
    let opted_out = std::env::var("KAITEN_SKIP_POSTGRES")
        .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false" | "no" | "off"));
    if !opted_out {
        return false;
    }
    assert!(std::env::var_os("CI").is_none(), "KAITEN_SKIP_POSTGRES is set, but so is CI: CI never skips");
    let current = std::thread::current();
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {}: KAITEN_SKIP_POSTGRES is set; unset it to run the PostgreSQL tests",
        current.name().unwrap_or("a test")
    );
    true
}

/// `KAITEN_TEST_DATABASE_URL`, by default `postgres://postgres@127.0.0.1:5432/test`.
pub fn test_database_url() -> String {
    std::env::var("KAITEN_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A store on `schema` of the test server at `url`; fails saying what to do when it is unreachable.
pub async fn pg_store(url: &str, schema: &str) -> PgStore {
    let mut options = PgStoreOptions::new(url.to_owned());
    options.schema = schema.to_owned();
    PgStore::connect_with(options).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {} is unreachable ({e}): start it, set KAITEN_TEST_DATABASE_URL, or set \
             KAITEN_SKIP_POSTGRES=1 to skip the PostgreSQL tests",
            kaiten_client::redact_url(url)
        )
    })
}

/// Drops the test's schemas (on the server at `.0`) when the test ends, however it ends.
pub struct DropSchemas(pub String, pub Vec<String>);

impl Drop for DropSchemas {
    fn drop(&mut self) {
        let (url, schemas) = (self.0.clone(), self.1.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else { return };
                for schema in schemas {
                    let _ =
                        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}
