//! Removing secrets from URLs and connection strings before anything prints them.
//!
//! [`redact_url`] is the one redaction every kaiten-sync crate and the CLI use for a URL they print
//! (a database URL, a Kaiten base URL) or put in an error or a log line:
//!
//! - the password of the user-info, whatever characters it holds, percent-encoded or not:
//!   `postgres://u:Pw/Secret@h/db` → `postgres://u:***@h/db`;
//! - the values of query parameters that carry secrets, in any case: `password`, `sslpassword`,
//!   `token`, `api_key`, `secret`, ... (`?user=u&password=x` → `?user=u&password=***`);
//! - libpq key/value connection strings: `host=h password='a b' dbname=x` →
//!   `host=h password=*** dbname=x`.
//!
//! A URL parser alone cannot find a password holding an unencoded `/`, `?` or `#`: for it the
//! authority ends there (`postgres://u:Pw/Secret@h` is a host `u` with the port `Pw`, or the path
//! `/Secret@h`), so the secret would be printed as a path. The redaction therefore reads the raw text
//! as generously as any parser might: the password runs from the first `:` after the scheme to the
//! **last** `@`, and a secret parameter's value runs to the next `&name=` or the end. Where the
//! `url` crate parses the text back to itself, the ranges its parser finds are masked too, so a
//! secret is hidden under either reading. This sometimes hides more than the secret (an `@` in a
//! later query parameter hides the host), never less.

use std::ops::Range;

use url::{Position, Url};

/// What stands in for a removed secret.
pub const REDACTED: &str = "***";

/// The text with every secret replaced by [`REDACTED`] (see the [module](self) for what counts as
/// one). Text with no secret comes back unchanged.
///
/// ```
/// use kaiten_client::redact::redact_url;
///
/// assert_eq!(redact_url("postgres://u:Pw/Secret123@db:5432/x"), "postgres://u:***@db:5432/x");
/// assert_eq!(redact_url("postgres://db/x?user=u&Password=s3cret"), "postgres://db/x?user=u&Password=***");
/// assert_eq!(redact_url("host=db password='a b' dbname=x"), "host=db password=*** dbname=x");
/// assert_eq!(redact_url("https://acme.kaiten.ru/api/latest"), "https://acme.kaiten.ru/api/latest");
/// ```
pub fn redact_url(text: &str) -> String {
    let ranges = secret_ranges(text);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for range in ranges {
        out.push_str(&text[at..range.start]);
        out.push_str(REDACTED);
        at = range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// What stands in for the secret path segment of a webhook URL in [`mask_webhook_url`].
pub const WEBHOOK_SECRET_MASK: &str = "••••";

/// A webhook URL fit to print: its last path segment (where kaiten-sync's webhook URLs carry their
/// secret, `.../api/webhooks/kaiten/<secret>`) becomes [`WEBHOOK_SECRET_MASK`], the query and the
/// fragment are dropped and a user-info password is redacted as [`redact_url`] does.
///
/// ```
/// use kaiten_client::redact::mask_webhook_url;
///
/// assert_eq!(
///     mask_webhook_url("https://sync.example.com/api/webhooks/kaiten/s3cr3t"),
///     "https://sync.example.com/api/webhooks/kaiten/••••"
/// );
/// assert_eq!(mask_webhook_url("https://hooks.example.com/x/tok/?key=v#f"), "https://hooks.example.com/x/••••/");
/// assert_eq!(mask_webhook_url("https://example.com"), "https://example.com");
/// assert_eq!(mask_webhook_url("not-a-url-s3cr3t"), "••••");
/// ```
pub fn mask_webhook_url(url: &str) -> String {
    let url = redact_url(url.trim());
    let url = &url[..url.find(['?', '#']).unwrap_or(url.len())];
    // Not a URL: nothing in it is known to be harmless.
    let Some(start) = after_scheme(url) else {
        return WEBHOOK_SECRET_MASK.to_owned();
    };
    let path_start = url[start..].find('/').map_or(url.len(), |i| start + i);
    let (origin, path) = url.split_at(path_start);
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(slash) if slash + 1 < trimmed.len() => {
            format!("{origin}{}{WEBHOOK_SECRET_MASK}{}", &trimmed[..=slash], &path[trimmed.len()..])
        }
        _ => url.to_owned(),
    }
}

/// The secrets [`redact_url`] removes from `text`, each as written and as a driver decodes it
/// (percent-decoded, `+` as a space, unquoted): for scrubbing them from messages of code that saw
/// the URL (a database driver's error quoting the password it was given).
pub fn url_secrets(text: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    for range in secret_ranges(text) {
        let raw = &text[range];
        let unquoted = unquote(raw);
        for candidate in [raw.to_owned(), percent_decode(raw, false), percent_decode(raw, true), unquoted] {
            if !candidate.is_empty() && !secrets.contains(&candidate) {
                secrets.push(candidate);
            }
        }
    }
    secrets
}

/// Byte ranges of `text` holding secrets, sorted and merged.
fn secret_ranges(text: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    match after_scheme(text) {
        Some(rest_start) => {
            let rest = &text[rest_start..];
            // The password: from the first `:` to the last `@`, whatever lies between.
            if let Some(at) = rest.rfind('@') {
                if let Some(colon) = rest[..at].find(':') {
                    ranges.push(rest_start + colon + 1..rest_start + at);
                }
            }
            parameters(text, rest_start, Syntax::Url, &mut ranges);
            parser_ranges(text, &mut ranges);
        }
        None => parameters(text, 0, Syntax::KeyValue, &mut ranges),
    }
    merge(ranges)
}

/// Where what follows `scheme:` and its slashes starts, if `text` starts with a scheme.
fn after_scheme(text: &str) -> Option<usize> {
    let start = text.len() - text.trim_start().len();
    let bytes = text.as_bytes();
    let mut i = start;
    if !bytes.get(i).is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    while bytes.get(i).is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) {
        i += 1;
    }
    if bytes.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    while matches!(bytes.get(i), Some(b'/' | b'\\')) {
        i += 1;
    }
    Some(i)
}

/// The ranges the `url` crate's parser finds (password, secret query values), when it reads the
/// text back to itself so that its positions are positions in `text`.
fn parser_ranges(text: &str, ranges: &mut Vec<Range<usize>>) {
    let Ok(url) = Url::parse(text) else { return };
    if url.as_str() != text {
        return;
    }
    if url.password().is_some() {
        ranges.push(url[..Position::BeforePassword].len()..url[..Position::AfterPassword].len());
    }
    if let Some(query) = url.query() {
        let mut offset = url[..Position::BeforeQuery].len();
        for pair in query.split('&') {
            if let Some((key, _)) = pair.split_once('=') {
                if is_secret_key(key) {
                    ranges.push(offset + key.len() + 1..offset + pair.len());
                }
            }
            offset += pair.len() + 1;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// A URL's query: `name=value` separated by `&`.
    Url,
    /// libpq's `name = value` separated by white space, values optionally in quotes.
    KeyValue,
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'%' | b'[' | b']')
}

fn is_boundary(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'?' | b'&' | b';' | b',')
}

/// Whether a parameter name names a secret: any case, `-` or `_`, percent-encoded or not.
fn is_secret_key(key: &str) -> bool {
    let key = percent_decode(key, true).to_ascii_lowercase().replace('-', "_");
    const PARTS: [&str; 7] = ["pass", "pwd", "secret", "token", "apikey", "api_key", "credential"];
    const WHOLE: [&str; 6] = ["key", "auth", "authorization", "sig", "signature", "access_key"];
    PARTS.iter().any(|p| key.contains(p)) || WHOLE.contains(&key.as_str())
}

/// Finds `name=value` pairs with a secret name at or after `from` and records their values.
fn parameters(text: &str, from: usize, syntax: Syntax, ranges: &mut Vec<Range<usize>>) {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        let at_boundary = (i == from && syntax == Syntax::KeyValue) || (i > 0 && is_boundary(bytes[i - 1]));
        if !at_boundary || !is_key_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let key_start = i;
        while i < bytes.len() && is_key_byte(bytes[i]) {
            i += 1;
        }
        let key = &text[key_start..i];
        let mut j = i;
        if syntax == Syntax::KeyValue {
            while j < bytes.len() && bytes[j].is_ascii_whitespace() && bytes[j] != b'\n' {
                j += 1;
            }
        }
        if bytes.get(j) != Some(&b'=') {
            continue;
        }
        j += 1;
        if syntax == Syntax::KeyValue {
            while j < bytes.len() && bytes[j].is_ascii_whitespace() && bytes[j] != b'\n' {
                j += 1;
            }
        }
        let end = match syntax {
            Syntax::Url => url_value_end(bytes, j),
            Syntax::KeyValue => key_value_end(bytes, j),
        };
        if is_secret_key(key) && end > j {
            ranges.push(j..end);
        }
        i = end.max(j);
    }
}

/// A URL parameter's value ends before the next `&name=` (or `;name=`), else at the end: an `&`,
/// `#` or white space not followed by another parameter may be part of a secret written unencoded.
fn url_value_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < bytes.len() {
        if matches!(bytes[i], b'&' | b';') {
            let mut k = i + 1;
            while k < bytes.len() && is_key_byte(bytes[k]) {
                k += 1;
            }
            if k > i + 1 && bytes.get(k) == Some(&b'=') {
                return i;
            }
        }
        i += 1;
    }
    bytes.len()
}

/// A libpq value ends at white space that is neither escaped (`\ `) nor quoted (`'a b'`).
fn key_value_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    let mut quote = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            _ if b == b'\\' => i += 2,
            Some(q) if b == q => {
                quote = None;
                i += 1;
            }
            None if b == b'\'' || b == b'"' => {
                quote = Some(b);
                i += 1;
            }
            None if b.is_ascii_whitespace() => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

fn merge(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// A libpq value as libpq reads it: quotes removed, backslash escapes applied (`'a\'b'` → `a'b`).
fn unquote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c if Some(c) == quote => quote = None,
            '\'' | '"' if quote.is_none() => quote = Some(c),
            c => out.push(c),
        }
    }
    out
}

/// Percent-decoding (and `+` as a space for form encoding), lossy on invalid UTF-8.
fn percent_decode(text: &str, plus_as_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_passwords_of_any_characters() {
        let cases = [
            ("postgres://u:secret@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://postgres:Pw/Secret123@127.0.0.1:5432/x", "postgres://postgres:***@127.0.0.1:5432/x"),
            ("postgres://u:Pw?Secret123@h/x", "postgres://u:***@h/x"),
            ("postgres://u:Pw#Secret123@h/x", "postgres://u:***@h/x"),
            ("postgres://u:12/Secret123@h/x", "postgres://u:***@h/x"),
            ("postgres://u:p%40ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:a@b@h/db", "postgres://u:***@h/db"),
            ("postgres://u:a:b@h/db", "postgres://u:***@h/db"),
            ("postgresql://u:pw@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
            ("postgres://postgres:postgres@localhost/db", "postgres://postgres:***@localhost/db"),
            ("http://user:pass@kaiten.local:8080/api/latest", "http://user:***@kaiten.local:8080/api/latest"),
            ("HTTPS://user:p%2Fss@host", "HTTPS://user:***@host"),
            ("postgres://u:@h/db", "postgres://u:@h/db"),
            ("https://acme.kaiten.ru/api/latest", "https://acme.kaiten.ru/api/latest"),
            ("sqlite://kaiten.db", "sqlite://kaiten.db"),
            ("kaiten.db", "kaiten.db"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "{input}");
        }
    }

    #[test]
    fn secret_query_parameters_in_any_case() {
        let cases = [
            (
                "postgres://h/db?user=u&password=secret&sslmode=require",
                "postgres://h/db?user=u&password=***&sslmode=require",
            ),
            ("postgres://h/db?PASSWORD=secret", "postgres://h/db?PASSWORD=***"),
            ("postgres://h/db?sslmode=require&sslpassword=k3y", "postgres://h/db?sslmode=require&sslpassword=***"),
            (
                "https://h/x?token=t0k&api_key=k&Api-Key=k2&limit=5",
                "https://h/x?token=***&api_key=***&Api-Key=***&limit=5",
            ),
            ("postgres://h/db?pass%77ord=x", "postgres://h/db?pass%77ord=***"),
            // Written unencoded, `#`, `&` and `@` stay in the value unless a parameter follows.
            ("postgres://h/db?password=a#b", "postgres://h/db?password=***"),
            ("postgres://h/db?password=a&b&sslmode=require", "postgres://h/db?password=***&sslmode=require"),
            ("postgres://h/db?password=abc@def", "postgres://h/db?password=***"),
            ("postgres://h/db?sslmode=require", "postgres://h/db?sslmode=require"),
            ("postgres://h/db?passwordless=", "postgres://h/db?passwordless="),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "{input}");
        }
        // Both readings of an `@` after the authority are hidden.
        let out = redact_url("postgres://u@h:5432/db?password=abc@def");
        assert!(!out.contains("abc") && !out.contains("def"), "{out}");
    }

    #[test]
    fn libpq_key_value_strings() {
        let cases = [
            ("host=h password=secret dbname=x", "host=h password=*** dbname=x"),
            ("host=h password = secret dbname=x", "host=h password = *** dbname=x"),
            ("host=h password='se cr\\'et' dbname=x", "host=h password=*** dbname=x"),
            ("password=secret", "password=***"),
            ("host=h sslpassword=k3y user=u", "host=h sslpassword=*** user=u"),
            ("not a url password=x", "not a url password=***"),
            ("host=h dbname=x user=u", "host=h dbname=x user=u"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "{input}");
        }
    }

    #[test]
    fn secrets_are_listed_raw_and_decoded() {
        let secrets = url_secrets("postgres://u:p%40ss/w@h/db?password=a+b%21");
        for expected in ["p%40ss/w", "p@ss/w", "a+b%21", "a b!"] {
            assert!(secrets.iter().any(|s| s == expected), "{expected} in {secrets:?}");
        }
        assert_eq!(url_secrets("host=h password='a\\'b'"), vec!["'a\\'b'".to_owned(), "a'b".to_owned()]);
        assert!(url_secrets("postgres://u@h/db").is_empty());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Secrets of any characters, often those with a meaning in URLs and connection strings,
        /// long enough that they cannot appear by chance elsewhere.
        fn secret() -> impl Strategy<Value = String> {
            let special: Vec<char> = "/?#@:&;=% +'\"\\\t\n[]".chars().collect();
            let char = prop_oneof![
                3 => prop::sample::select(special),
                2 => prop::char::range('a', 'z'),
                1 => any::<char>(),
            ];
            proptest::collection::vec(char, 6..24).prop_map(|chars| chars.into_iter().collect())
        }

        fn name() -> impl Strategy<Value = String> {
            "[a-z][a-z0-9_]{0,8}"
        }

        fn encode(text: &str) -> String {
            text.bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect()
        }

        /// Neither the secret nor a part of it that the rest of the text does not hold survives.
        fn assert_hidden(out: &str, secret: &str, rest: &str) -> Result<(), TestCaseError> {
            prop_assert!(!out.contains(secret), "{secret:?} survives in {out:?}");
            let chars: Vec<char> = secret.chars().collect();
            for window in chars.windows(4) {
                let part: String = window.iter().collect();
                if !rest.contains(&part) && !REDACTED.contains(&part) {
                    prop_assert!(!out.contains(&part), "{part:?} of {secret:?} survives in {out:?}");
                }
            }
            Ok(())
        }

        proptest! {
            // No regression files: a failure prints its minimal input, which a unit test keeps.
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn user_info_passwords_never_survive(
                scheme in prop::sample::select(vec!["postgres", "postgresql", "http", "https"]),
                user in name(), host in name(), db in name(), secret in secret(), encoded in any::<bool>(),
                port in prop::option::of(1u16..),
                query in prop::option::of((name(), name())),
            ) {
                let password = if encoded { encode(&secret) } else { secret.clone() };
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                let query = query.map(|(k, v)| format!("?{k}={v}")).unwrap_or_default();
                let url = format!("{scheme}://{user}:{password}@{host}{port}/{db}{query}");
                let out = redact_url(&url);
                let rest = format!("{scheme}://{user}:@{host}{port}/{db}{query}");
                assert_hidden(&out, &password, &rest)?;
                assert_hidden(&out, &secret, &rest)?;
                if !secret.contains('=') {
                    prop_assert!(out.contains(&format!("@{host}")), "the host is kept: {out}");
                }
            }

            #[test]
            fn query_secrets_never_survive(
                user in prop::option::of(name()), host in name(), db in name(), secret in secret(),
                key in prop::sample::select(vec!["password", "PassWord", "sslpassword", "token", "api_key", "apikey"]),
                before in prop::option::of((name(), name())), after in prop::option::of((name(), name())),
                raw in any::<bool>(),
            ) {
                // Unencoded, a secret ends at `&name=`: the generator keeps `&` and `;` out of it.
                let value = if raw { secret.replace(['&', ';'], "") } else { encode(&secret) };
                prop_assume!(value.chars().count() >= 6);
                let user = user.map(|u| format!("{u}@")).unwrap_or_default();
                let mut params = Vec::new();
                if let Some((k, v)) = &before { params.push(format!("{k}={v}")); }
                params.push(format!("{key}={value}"));
                if let Some((k, v)) = &after { params.push(format!("x{k}={v}")); }
                let url = format!("postgres://{user}{host}/{db}?{}", params.join("&"));
                let out = redact_url(&url);
                let rest = url.replace(&value, "");
                assert_hidden(&out, &value, &rest)?;
                if !raw {
                    assert_hidden(&out, &secret, &rest)?;
                }
            }

            #[test]
            fn libpq_passwords_never_survive(
                host in name(), db in name(), secret in secret(), quoted in any::<bool>(),
                key in prop::sample::select(vec!["password", "PASSWORD", "sslpassword"]),
            ) {
                let value = if quoted {
                    format!("'{}'", secret.replace('\\', "\\\\").replace('\'', "\\'"))
                } else {
                    secret.chars().filter(|c| !c.is_whitespace() && !matches!(c, '\\' | '\'' | '"')).collect()
                };
                prop_assume!(value.chars().count() >= 6);
                let text = format!("host={host} {key}={value} dbname={db}");
                let out = redact_url(&text);
                let rest = format!("host={host} {key}= dbname={db}");
                assert_hidden(&out, &value, &rest)?;
                prop_assert!(out.ends_with(&format!(" dbname={db}")), "{out}");
                let secrets = url_secrets(&text);
                let plain = if quoted { secret.clone() } else { value.clone() };
                prop_assert!(secrets.contains(&plain), "{plain:?} not in {secrets:?}");
            }
        }
    }
}
