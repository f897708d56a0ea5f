//! Building a client: base URL normalisation, required settings, the environment.

use std::collections::HashMap;

use kaiten_client::{Error, KaitenClient, KaitenClientBuilder};

fn build(url: &str) -> Result<KaitenClient, Error> {
    KaitenClient::builder().base_url(url).token("t").build()
}

#[test]
fn base_urls_are_normalised() {
    for (input, expected) in [
        ("https://x.kaiten.ru", "https://x.kaiten.ru/api/latest"),
        ("https://x.kaiten.ru/", "https://x.kaiten.ru/api/latest"),
        ("  https://x.kaiten.ru/  ", "https://x.kaiten.ru/api/latest"),
        ("https://x.kaiten.ru/api/latest", "https://x.kaiten.ru/api/latest"),
        ("https://x.kaiten.ru/api/latest/", "https://x.kaiten.ru/api/latest"),
        ("https://x.kaiten.ru/api/v1", "https://x.kaiten.ru/api/v1"),
        ("https://kaiten.example.com/", "https://kaiten.example.com/api/latest"),
        ("http://127.0.0.1:8080/api/latest", "http://127.0.0.1:8080/api/latest"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/api/latest"),
        ("http://localhost:3000/proxy/kaiten", "http://localhost:3000/proxy/kaiten/api/latest"),
        ("https://x.kaiten.ru/api/latest?foo=bar#frag", "https://x.kaiten.ru/api/latest"),
    ] {
        assert_eq!(build(input).unwrap().base_url(), expected, "{input}");
    }
}

#[test]
fn bad_base_urls_are_rejected_naming_the_value() {
    for bad in ["ftp://x.kaiten.ru", "x.kaiten.ru", "not a url", "https://", "file:///etc/passwd"] {
        let err = build(bad).unwrap_err();
        assert!(matches!(&err, Error::InvalidConfig(message) if message.contains(bad)), "{bad}: {err}");
    }
    assert!(matches!(build(""), Err(Error::InvalidConfig(m)) if m.contains("empty")));
}

#[test]
fn a_missing_token_or_url_is_an_invalid_config() {
    let err = KaitenClient::builder().base_url("https://x.kaiten.ru").build().unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig(m) if m.starts_with("the API token is not set")), "{err}");
    let err = KaitenClient::builder().base_url("https://x.kaiten.ru").token("  ").build().unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig(m) if m.contains("empty")), "{err}");
    let err = KaitenClient::builder().token("t").build().unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig(m) if m.contains("base URL is not set")), "{err}");
}

#[test]
fn out_of_range_limits_are_rejected() {
    let base = || KaitenClient::builder().base_url("https://x.kaiten.ru").token("t");
    assert!(matches!(base().rate_limit(Some(0.0)).build(), Err(Error::InvalidConfig(_))));
    assert!(matches!(base().rate_limit(Some(f64::NAN)).build(), Err(Error::InvalidConfig(_))));
    assert!(matches!(base().max_concurrent_requests(0).build(), Err(Error::InvalidConfig(_))));
    let no_attempts = kaiten_client::RetryPolicy { max_attempts: 0, ..Default::default() };
    assert!(matches!(base().retry_policy(no_attempts).build(), Err(Error::InvalidConfig(_))));
    assert!(base().rate_limit(None).build().is_ok());
    assert!(base().rate_limit(Some(50.0)).build().is_ok());
    let err = base().rate_limit(Some(1e-9)).build().unwrap_err().to_string();
    assert!(err.contains("rate_limit(None)"), "{err}");
}

#[test]
fn zero_timeouts_are_rejected() {
    let base = || KaitenClient::builder().base_url("https://x.kaiten.ru").token("t");
    let err = base().timeout(std::time::Duration::ZERO).build().unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig(m) if m.contains("timeout must be longer than zero")), "{err}");
    let err = base().connect_timeout(std::time::Duration::ZERO).build().unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig(m) if m.contains("connect_timeout")), "{err}");
    assert!(base().no_timeouts().build().is_ok());
    assert!(base().timeout(std::time::Duration::from_millis(1)).build().is_ok());
}

#[test]
fn a_password_in_the_base_url_is_never_shown() {
    let builder = KaitenClient::builder().base_url("http://user:Pw/Secret123@x.kaiten.ru").token("t");
    assert!(!format!("{builder:?}").contains("Secret123"), "{builder:?}");
    let err = builder.build().unwrap_err().to_string();
    assert!(!err.contains("Secret123") && err.contains("user:***@"), "{err}");
    let client = build("http://user:Secret123@x.kaiten.ru").unwrap();
    assert!(!format!("{client:?}").contains("Secret123"), "{client:?}");
}

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |name| map.get(name).cloned()
}

#[test]
fn from_env_names_the_missing_variable() {
    let err = KaitenClientBuilder::from_env_with(env(&[("KAITEN_API_URL", "https://x.kaiten.ru")])).unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig(m) if m.contains("KAITEN_API_TOKEN is not set")), "{err}");
    let err = KaitenClientBuilder::from_env_with(env(&[("KAITEN_API_TOKEN", "secret-value")])).unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig(m) if m.contains("KAITEN_API_URL is not set")), "{err}");
    assert!(!err.to_string().contains("secret-value"));
    let err =
        KaitenClientBuilder::from_env_with(env(&[("KAITEN_API_URL", "https://x.kaiten.ru"), ("KAITEN_API_TOKEN", "")]))
            .unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig(m) if m.contains("KAITEN_API_TOKEN is set but empty")), "{err}");
    let client = KaitenClientBuilder::from_env_with(env(&[
        ("KAITEN_API_URL", "https://x.kaiten.ru/"),
        ("KAITEN_API_TOKEN", "secret-value"),
    ]))
    .unwrap()
    .rate_limit(Some(50.0))
    .build()
    .unwrap();
    assert_eq!(client.base_url(), "https://x.kaiten.ru/api/latest");
    assert!(!format!("{client:?}").contains("secret-value"));
}

#[test]
fn clients_are_clone_send_sync_debug() {
    fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    assert_traits::<KaitenClient>();
    assert_traits::<KaitenClientBuilder>();
    fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<Error>();
}
