//! `kaiten-sync webhooks status|install|uninstall --url https://<public host>`: Kaiten's webhooks
//! managed through its (undocumented) API, one per space, instead of a person clicking through
//! every space's settings. Shared with `serve`'s admin page (`/admin/sync/webhooks`).
//!
//! Every space gets the URL `<public url>/api/webhooks/kaiten/<KAITEN_WEBHOOK_SECRET>`, which
//! `serve` receives. A space whose plan lacks webhooks (402) or where the token's user is not a
//! space admin (403) is reported as such, never as a failure of the others. The URL holds the
//! secret, so it is printed masked (`.../api/webhooks/kaiten/••••`) everywhere.

use std::fmt;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kaiten_client::{
    mask_webhook_url, Error as ClientError, ExternalWebhook, KaitenClient, Secret, SpaceId, WebhookId,
};

use crate::config::KaitenArgs;
use crate::serve::{webhook_secret, ENV_WEBHOOK_SECRET, WEBHOOK_PATH};

/// Environment variable with the public base URL Kaiten reaches `serve` at.
pub const ENV_PUBLIC_URL: &str = "KAITEN_PUBLIC_URL";

/// `kaiten-sync webhooks ...`.
#[derive(Debug, Args)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List every space with the state of its webhook (none, installed here, points elsewhere,
    /// disabled, not in plan, no permission).
    Status(Target),
    /// Install (or repoint, or re-enable) one webhook per space pointing at this server.
    Install(Target),
    /// Disable the webhooks pointing at this server (Kaiten has no DELETE for them).
    Uninstall(Target),
}

/// Where the webhooks should point, and how to reach Kaiten.
#[derive(Debug, Args)]
struct Target {
    /// The public base URL Kaiten reaches `serve` at (`https://sync.example.com`); the webhook
    /// URL is `<url>/api/webhooks/kaiten/<KAITEN_WEBHOOK_SECRET>`. Must be https (http only for
    /// 127.0.0.1 and localhost).
    #[arg(long, env = ENV_PUBLIC_URL, value_name = "URL")]
    url: String,
    #[command(flatten)]
    kaiten: KaitenArgs,
}

/// The public base URL, checked and without a trailing slash: https, or http for a loopback host;
/// no user-info, query or fragment.
pub fn public_url(raw: &str) -> Result<String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let url = url::Url::parse(trimmed).with_context(|| format!("--url {trimmed:?} is not a URL"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => bail!(
            "--url must be https (Kaiten posts card data and the secret to it); http is allowed for 127.0.0.1 and \
             localhost only"
        ),
        other => bail!("--url must be an https URL, not {other}:"),
    }
    if host.is_empty() {
        bail!("--url has no host");
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        bail!("--url must be a plain base URL: no user name, password, query or fragment");
    }
    Ok(trimmed.to_owned())
}

/// The webhook URL every space gets: `<public>/api/webhooks/kaiten/<secret>`.
pub fn hook_url(public: &str, secret: &Secret) -> String {
    format!("{}{WEBHOOK_PATH}/{}", public.trim_end_matches('/'), secret.expose())
}

/// Which webhook URL counts as "this server": the full URL when the public URL is known, else any
/// URL ending in `/api/webhooks/kaiten/<secret>` (what `serve` shows without `--public-url`).
#[derive(Clone)]
pub struct HookTarget {
    url: Option<String>,
    suffix: String,
}

impl HookTarget {
    /// The target for a checked public URL (see [`public_url`]), if known, and the secret.
    pub fn new(public: Option<&str>, secret: &Secret) -> Self {
        HookTarget { url: public.map(|p| hook_url(p, secret)), suffix: format!("{WEBHOOK_PATH}/{}", secret.expose()) }
    }

    /// The full webhook URL, when the public URL is known. Holds the secret: never print it.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The URL with its secret masked, or the path alone when the public URL is unknown.
    pub fn masked(&self) -> String {
        match &self.url {
            Some(url) => mask_webhook_url(url),
            None => format!("<public URL>{WEBHOOK_PATH}/{}", kaiten_client::redact::WEBHOOK_SECRET_MASK),
        }
    }

    fn is_here(&self, url: &str) -> bool {
        let url = url.trim();
        match &self.url {
            Some(target) => url == target,
            None => url.ends_with(&self.suffix),
        }
    }
}

impl fmt::Debug for HookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HookTarget").field(&self.masked()).finish()
    }
}

/// A space's webhook, as seen from this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookState {
    /// No webhook.
    None,
    /// Points at this server and is enabled.
    Installed,
    /// Points at this server but is disabled.
    Disabled,
    /// Points somewhere else (the URL masked).
    Elsewhere {
        /// The other URL, its secret masked.
        masked_url: String,
        /// Whether Kaiten delivers to it.
        enabled: bool,
    },
    /// 402: webhooks are not in the plan (Kaiten's message).
    NotInPlan(String),
    /// 403: the token's user is not an admin of the space.
    NoPermission,
    /// Anything else that went wrong (the error, without the URL).
    Failed(String),
}

impl HookState {
    /// Whether this is a failure (not a plan or permission refusal).
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// A short label for tables and CSS classes.
    pub fn label(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Installed => "installed",
            Self::Disabled => "disabled",
            Self::Elsewhere { .. } => "elsewhere",
            Self::NotInPlan(_) => "not in plan",
            Self::NoPermission => "no permission",
            Self::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for HookState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("no webhook"),
            Self::Installed => f.write_str("installed here, enabled"),
            Self::Disabled => f.write_str("points here, disabled"),
            Self::Elsewhere { masked_url, enabled: true } => write!(f, "points elsewhere: {masked_url}"),
            Self::Elsewhere { masked_url, enabled: false } => {
                write!(f, "points elsewhere, disabled: {masked_url}")
            }
            Self::NotInPlan(message) => write!(f, "not in plan (402): {message}"),
            Self::NoPermission => f.write_str("no permission (403): the token's user is not an admin of this space"),
            Self::Failed(error) => write!(f, "failed: {error}"),
        }
    }
}

/// One space's row: its state (after the action, for install and uninstall) and what was done.
#[derive(Debug, Clone)]
pub struct SpaceHook {
    /// Space id.
    pub space_id: SpaceId,
    /// Space title.
    pub title: String,
    /// The webhook's state.
    pub state: HookState,
    /// What install or uninstall did (`created`, `repointed`, `re-enabled`, `disabled`), if anything.
    pub action: Option<&'static str>,
}

/// The state of a space's webhook from its listing.
fn classify(hooks: &[ExternalWebhook], target: &HookTarget) -> (HookState, Option<WebhookId>) {
    let Some(hook) = hooks.first() else { return (HookState::None, None) };
    let here = hook.url.as_deref().is_some_and(|url| target.is_here(url));
    let state = match (here, hook.is_enabled()) {
        (true, true) => HookState::Installed,
        (true, false) => HookState::Disabled,
        (false, enabled) => HookState::Elsewhere { masked_url: hook.masked_url().unwrap_or_default(), enabled },
    };
    (state, Some(hook.id))
}

/// A refusal of the plan or the role as a state; any other error as a failure.
fn refusal(error: &ClientError) -> HookState {
    match error {
        ClientError::PaymentRequired { message, .. } => HookState::NotInPlan(message.clone()),
        ClientError::Forbidden { .. } => HookState::NoPermission,
        other => HookState::Failed(other.to_string()),
    }
}

/// What to do to each space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Only look.
    Status,
    /// Point every space's webhook here, enabled.
    Install,
    /// Disable the webhooks that point here.
    Uninstall,
}

/// Every space (`GET /spaces`) with its webhook's state, after doing `plan` to it. Fails only when
/// the spaces cannot be listed (or `plan` installs without a public URL); a space's own failure is
/// in its row.
pub async fn apply(client: &KaitenClient, target: &HookTarget, plan: Plan) -> Result<Vec<SpaceHook>> {
    if plan == Plan::Install && target.url().is_none() {
        bail!("installing needs the public URL (--url, or --public-url / {ENV_PUBLIC_URL} for serve)");
    }
    let spaces = client.spaces().await.context("cannot list the spaces")?;
    let mut rows = Vec::with_capacity(spaces.len());
    for space in spaces {
        let (state, action) = one_space(client, space.id, target, plan).await;
        rows.push(SpaceHook { space_id: space.id, title: space.title.unwrap_or_default(), state, action });
    }
    Ok(rows)
}

async fn one_space(
    client: &KaitenClient,
    space_id: SpaceId,
    target: &HookTarget,
    plan: Plan,
) -> (HookState, Option<&'static str>) {
    let (state, id) = match client.external_webhooks(space_id).await {
        Ok(hooks) => classify(&hooks, target),
        Err(error) => return (refusal(&error), None),
    };
    let done = match (plan, &state, id, target.url()) {
        (Plan::Install, HookState::None, _, Some(url)) => {
            client.create_external_webhook(space_id, url).await.map(|_| (HookState::Installed, "created"))
        }
        (Plan::Install, HookState::Elsewhere { .. }, Some(id), Some(url)) => client
            .update_external_webhook(space_id, id, Some(url), Some(true))
            .await
            .map(|_| (HookState::Installed, "repointed")),
        (Plan::Install, HookState::Disabled, Some(id), _) => client
            .update_external_webhook(space_id, id, None, Some(true))
            .await
            .map(|_| (HookState::Installed, "re-enabled")),
        (Plan::Uninstall, HookState::Installed, Some(id), _) => client
            .update_external_webhook(space_id, id, None, Some(false))
            .await
            .map(|_| (HookState::Disabled, "disabled")),
        _ => return (state, None),
    };
    match done {
        Ok((state, action)) => (state, Some(action)),
        Err(error) => (refusal(&error), None),
    }
}

/// One line per state, e.g. `3 spaces: 1 installed here, 1 not in plan, 1 no permission`.
pub fn summary(rows: &[SpaceHook]) -> String {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for row in rows {
        match counts.iter_mut().find(|(label, _)| *label == row.state.label()) {
            Some((_, n)) => *n += 1,
            None => counts.push((row.state.label(), 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(label, n)| format!("{n} {label}")).collect();
    format!("{} space(s): {}", rows.len(), parts.join(", "))
}

/// `kaiten-sync webhooks ...`.
pub async fn run(args: WebhooksArgs) -> Result<()> {
    let (plan, target) = match args.action {
        Action::Status(target) => (Plan::Status, target),
        Action::Install(target) => (Plan::Install, target),
        Action::Uninstall(target) => (Plan::Uninstall, target),
    };
    let secret = webhook_secret(std::env::var(ENV_WEBHOOK_SECRET).ok())?;
    let hook = HookTarget::new(Some(&public_url(&target.url)?), &secret);
    let client = target.kaiten.client()?;
    let rows = apply(&client, &hook, plan).await?;
    println!("webhook URL: {}", hook.masked());
    let width = rows.iter().map(|r| r.title.chars().count()).max().unwrap_or(0).clamp(5, 40);
    println!("{:<10} {:<width$} WEBHOOK", "SPACE", "TITLE");
    for row in &rows {
        let title: String = row.title.chars().take(width).collect();
        let action = row.action.map(|a| format!(" ({a})")).unwrap_or_default();
        println!("{:<10} {:<width$} {}{action}", row.space_id, title, row.state);
    }
    println!("{}", summary(&rows));
    let failed = rows.iter().filter(|r| r.state.is_failure()).count();
    if failed > 0 {
        bail!(
            "{failed} space(s) failed (see above); spaces refused by the plan (402) or the role (403) are not failures"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_https_or_loopback_http() {
        assert_eq!(public_url("https://sync.example.com/").unwrap(), "https://sync.example.com");
        assert_eq!(public_url(" https://example.com/base ").unwrap(), "https://example.com/base");
        assert_eq!(public_url("http://127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(public_url("http://localhost:8080/").unwrap(), "http://localhost:8080");
        for bad in [
            "http://sync.example.com",
            "ftp://example.com",
            "sync.example.com",
            "https://u:p@example.com",
            "https://example.com/?a=b",
        ] {
            assert!(public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_hook_url_carries_the_secret_and_prints_masked() {
        let secret = Secret::new("s3cret-0123456789abcdef");
        let url = hook_url("https://sync.example.com", &secret);
        assert_eq!(url, "https://sync.example.com/api/webhooks/kaiten/s3cret-0123456789abcdef");
        assert_eq!(mask_webhook_url(&url), "https://sync.example.com/api/webhooks/kaiten/••••");
    }

    #[test]
    fn states_read_well_and_only_other_errors_fail() {
        assert_eq!(HookState::Installed.to_string(), "installed here, enabled");
        assert!(HookState::Failed("x".into()).is_failure());
        assert!(!HookState::NotInPlan("x".into()).is_failure() && !HookState::NoPermission.is_failure());
        let rows = [HookState::Installed, HookState::NoPermission, HookState::Installed]
            .into_iter()
            .enumerate()
            .map(|(i, state)| SpaceHook { space_id: SpaceId(i as i64), title: String::new(), state, action: None })
            .collect::<Vec<_>>();
        assert_eq!(summary(&rows), "3 space(s): 2 installed, 1 no permission");
    }
}
