//! Settings from flags, the environment and `.env` files.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use kaiten_client::KaitenClient;

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
    #[arg(long, env = "KAITEN_DB_LOCK", default_value = "advisory", value_parser = ["advisory", "table"])]
    pub db_lock: String,
}

impl DbArgs {
    /// The database in words, without a password.
    pub fn describe(&self) -> String {
        redact(&self.database_url)
    }
}

/// Removes the password from a URL (`postgres://user:secret@host` → `postgres://user:***@host`).
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &userinfo[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
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
    /// local simulator).
    #[arg(long, env = "KAITEN_RATE_LIMIT", default_value_t = 5.0)]
    pub rate_limit: f64,
    /// Seconds before a request times out.
    #[arg(long, env = "KAITEN_TIMEOUT", default_value_t = 30)]
    pub timeout: u64,
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

/// A client for `url` with `token`.
pub fn client(url: &str, token: &str, rate_limit: f64, timeout: Duration) -> Result<KaitenClient> {
    if !rate_limit.is_finite() || rate_limit < 0.0 {
        bail!("--rate-limit / KAITEN_RATE_LIMIT must be a number of requests per second, 0 or more (got {rate_limit})");
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
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://kaiten.db"), "sqlite://kaiten.db");
        assert_eq!(redact("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
    }
}
