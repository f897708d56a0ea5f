//! Configuration helpers: base URL normalisation and reading the environment.

use url::Url;

use crate::error::{Error, Result};
use crate::redact::redact_url;

/// The environment variable holding the base URL.
pub const ENV_API_URL: &str = "KAITEN_API_URL";
/// The environment variable holding the API token.
pub const ENV_API_TOKEN: &str = "KAITEN_API_TOKEN";

/// Normalises a Kaiten base URL.
///
/// `https://x.kaiten.ru`, `https://x.kaiten.ru/` and `https://x.kaiten.ru/api/latest/` all become
/// `https://x.kaiten.ru/api/latest`; a URL whose path already ends in `/api/latest` or `/api/v<N>` is
/// kept; any other path (a reverse proxy's prefix) gets `/api/latest` appended. Query and fragment are
/// dropped. The result has no trailing slash. Only `http` and `https` URLs with a host are accepted.
pub(crate) fn normalize_base_url(input: &str) -> Result<String> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(Error::InvalidConfig(
            "the base URL is empty: pass the URL of the Kaiten company, e.g. https://example.kaiten.ru".into(),
        ));
    }
    // Messages quote the URL without its password (`https://user:***@host`).
    let shown = redact_url(trimmed);
    let mut url = Url::parse(trimmed)
        .map_err(|err| Error::InvalidConfig(format!("the base URL {shown:?} is not a valid URL: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::InvalidConfig(format!(
            "the base URL {shown:?} must use http:// or https://, not {}://",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::InvalidConfig(format!("the base URL {shown:?} has no host")));
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_owned();
    let path = if is_api_root(&path) { path } else { format!("{path}/api/latest") };
    url.set_path(&path);
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn is_api_root(path: &str) -> bool {
    let Some((prefix, version)) = path.rsplit_once('/') else { return false };
    prefix.ends_with("/api")
        && (version == "latest"
            || version.strip_prefix('v').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

/// Reads a required, non-empty variable through `lookup`.
pub(crate) fn required_var(lookup: &impl Fn(&str) -> Option<String>, name: &str, hint: &str) -> Result<String> {
    match lookup(name) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        Some(_) => Err(Error::InvalidConfig(format!("{name} is set but empty: {hint}"))),
        None => Err(Error::InvalidConfig(format!("{name} is not set: {hint}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_roots() {
        assert!(is_api_root("/api/latest"));
        assert!(is_api_root("/api/v1"));
        assert!(is_api_root("/kaiten/api/v2"));
        assert!(!is_api_root("/api"));
        assert!(!is_api_root("/myapi/latest"));
        assert!(!is_api_root("/api/vx"));
        assert!(!is_api_root("/api/v"));
        assert!(!is_api_root(""));
    }

    #[test]
    fn errors_quote_the_base_url_without_its_password() {
        for url in ["ftp://user:Secret123@h", "http://user:Pw/Secret123@h:99999", "http://user:Secret123@"] {
            let err = normalize_base_url(url).unwrap_err().to_string();
            assert!(!err.contains("Secret123") && err.contains("user:***@"), "{err}");
        }
    }
}
