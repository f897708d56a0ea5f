//! Settings from flags, the environment and `.env` files.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use kaiten_client::{redact_url, KaitenClient};

/// Environment variable with the Kaiten base URL.
pub const ENV_API_URL: &str = "KAITEN_API_URL";
/// Environment variable with the Kaiten API token.
pub const ENV_API_TOKEN: &str = "KAITEN_API_TOKEN";

/// Loads `.env.local` and `.env` from the current directory, if present. Variables already set in
/// the environment win over both, and `.env.local` wins over `.env`.
pub fn load_dotenv() {
    for file in [".env.local", ".env"] {
        match dotenvy::from_filename(file) {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => eprintln!("warning: ignoring {file}: {e}"),
        }
    }
}

/// Where the mirror lives.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://kaiten.db`, a file path, or `postgres://user:pass@host/db`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://kaiten.db", hide_env_values = true)]
    pub database_url: String,
    /// Postgres schema holding the tables.
    #[arg(long, env = "KAITEN_DB_SCHEMA", default_value = "kaiten")]
    pub db_schema: String,
    /// Postgres sync lock: `advisory` (default) or `table` (for transaction-mode poolers such as
    /// PgBouncer or Supabase's port 6543).
    #[arg(long, env = "KAITEN_DB_LOCK", default_value = "advisory", value_enum)]
    pub db_lock: DbLock,
}

/// `KAITEN_DB_LOCK` / `--db-lock`: how Postgres runs take the one-sync-at-a-time lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DbLock {
    /// A session advisory lock (a direct connection, or a session-mode pooler).
    Advisory,
    /// A lock row (transaction-mode poolers such as PgBouncer or Supabase's port 6543).
    Table,
}

impl DbArgs {
    /// The database in words, without a password.
    pub fn describe(&self) -> String {
        redact_url(&self.database_url)
    }
}

/// How to reach Kaiten. The token is read from `KAITEN_API_TOKEN` only (never a flag, which
/// other users of the machine could read in the process list).
#[derive(Debug, Clone, Args)]
pub struct KaitenArgs {
    /// Kaiten base URL: `https://yourcompany.kaiten.ru` (with or without `/api/latest`).
    #[arg(long, env = ENV_API_URL)]
    pub api_url: Option<String>,
    /// Client-side limit in requests per second (0 = none: for a tenant with a higher quota or a
    /// local simulator; otherwise at least 1/3600, one request an hour).
    #[arg(long, env = "KAITEN_RATE_LIMIT", default_value_t = 5.0, value_parser = parse_rate_limit,
        allow_negative_numbers = true)]
    pub rate_limit: f64,
    /// Seconds before a request times out (1 or more).
    #[arg(long, env = "KAITEN_TIMEOUT", default_value_t = 30, value_parser = parse_timeout,
        allow_negative_numbers = true)]
    pub timeout: u64,
    /// Requests a sync keeps in flight (1–64): card windows listed at once, boards' columns and
    /// lanes, select values. The rate limit still paces them; more hide more latency (about the
    /// rate times the latency: 4 covers 5 requests/s at up to 0.8 s).
    #[arg(long, env = "KAITEN_CONCURRENCY", default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
}

impl KaitenArgs {
    /// The client, or an error naming what is missing.
    pub fn client(&self) -> Result<KaitenClient> {
        let Some(url) = self.api_url.as_deref().filter(|u| !u.trim().is_empty()) else {
            bail!("{ENV_API_URL} is not set: put your company's Kaiten URL (e.g. https://yourcompany.kaiten.ru) in the environment or .env, or pass --api-url");
        };
        let token = std::env::var(ENV_API_TOKEN).unwrap_or_default();
        if token.trim().is_empty() {
            bail!("{ENV_API_TOKEN} is not set: create an API token in Kaiten (profile → API key) and put it in the environment or .env");
        }
        client(url, token.trim(), self.rate_limit, Duration::from_secs(self.timeout))
    }
}

/// The slowest rate limit accepted: one request an hour (the client's own floor).
const MIN_RATE_LIMIT: f64 = 1.0 / 3600.0;

/// `KAITEN_RATE_LIMIT` / `--rate-limit`: 0 (no limit) or at least one request an hour.
fn parse_rate_limit(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) => check_rate_limit(rate),
        Err(_) => check_rate_limit(f64::NAN).map_err(|e| format!("{e} (got {text:?})")),
    }
}

/// The rate limit in the CLI's words: 0 means none.
fn check_rate_limit(rate: f64) -> Result<f64, String> {
    if rate == 0.0 || (rate.is_finite() && rate >= MIN_RATE_LIMIT) {
        Ok(rate)
    } else if rate.is_finite() && rate > 0.0 {
        Err(format!(
            "KAITEN_RATE_LIMIT / --rate-limit {rate} is slower than one request an hour: use 0 for no limit, or at \
             least 0.0003 requests per second"
        ))
    } else if rate.is_nan() {
        Err("KAITEN_RATE_LIMIT / --rate-limit must be a number of requests per second: 0 for no limit, or a \
             positive number such as 5"
            .to_owned())
    } else {
        Err(format!(
            "KAITEN_RATE_LIMIT / --rate-limit must be 0 for no limit or a positive number of requests per second \
             such as 5 (got {rate})"
        ))
    }
}

/// `KAITEN_TIMEOUT` / `--timeout`: whole seconds, 1 or more.
fn parse_timeout(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(secs),
        _ => Err(format!(
            "KAITEN_TIMEOUT / --timeout must be a whole number of seconds, 1 or more (got {text:?}; 0 would make \
             every request time out)"
        )),
    }
}

/// A client for `url` with `token`.
pub fn client(url: &str, token: &str, rate_limit: f64, timeout: Duration) -> Result<KaitenClient> {
    if let Err(message) = check_rate_limit(rate_limit) {
        bail!("{message}");
    }
    if timeout.is_zero() {
        bail!("KAITEN_TIMEOUT / --timeout must be 1 second or more (got 0: every request would time out)");
    }
    Ok(KaitenClient::builder()
        .base_url(url)
        .token(token)
        .rate_limit((rate_limit > 0.0).then_some(rate_limit))
        .timeout(timeout)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_described_without_passwords() {
        let db = |url: &str| DbArgs { database_url: url.into(), db_schema: "kaiten".into(), db_lock: DbLock::Advisory };
        assert_eq!(db("postgres://u:secret@h:5432/db").describe(), "postgres://u:***@h:5432/db");
        assert_eq!(db("postgres://u@h/db").describe(), "postgres://u@h/db");
        assert_eq!(db("sqlite://kaiten.db").describe(), "sqlite://kaiten.db");
        assert_eq!(db("postgres://u:p@ss@h/db").describe(), "postgres://u:***@h/db");
        assert_eq!(
            db("postgres://postgres:Pw/Secret123@127.0.0.1:5432/x").describe(),
            "postgres://postgres:***@127.0.0.1:5432/x"
        );
        assert_eq!(
            db("postgres://h/x?sslmode=require&password=Secret123").describe(),
            "postgres://h/x?sslmode=require&password=***"
        );
    }

    #[test]
    fn rate_limits_and_timeouts_that_make_no_sense_are_refused() {
        assert_eq!(parse_rate_limit("0"), Ok(0.0));
        assert_eq!(parse_rate_limit("5"), Ok(5.0));
        assert_eq!(parse_rate_limit(" 0.5 "), Ok(0.5));
        let err = parse_rate_limit("1e-9").unwrap_err();
        assert!(
            err.contains("KAITEN_RATE_LIMIT") && err.contains("use 0 for no limit") && !err.contains("None"),
            "{err}"
        );
        for bad in ["-1", "NaN", "inf", "fast", ""] {
            let err = parse_rate_limit(bad).unwrap_err();
            assert!(err.contains("KAITEN_RATE_LIMIT") && err.contains("0 for no limit"), "{bad}: {err}");
            assert!(!err.contains("None"), "{err}");
        }
        assert_eq!(parse_timeout("30"), Ok(30));
        for bad in ["0", "-1", "1.5", "soon"] {
            let err = parse_timeout(bad).unwrap_err();
            assert!(err.contains("KAITEN_TIMEOUT") && err.contains("1 or more"), "{bad}: {err}");
        }
        assert!(client("http://127.0.0.1:1", "t", 1e-9, Duration::from_secs(1)).is_err());
        let err = client("http://127.0.0.1:1", "t", 1.0, Duration::ZERO).unwrap_err().to_string();
        assert!(err.contains("KAITEN_TIMEOUT"), "{err}");
    }
}
