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

/// A libpq value ends at white space, or at its closing quote (`'...'` with `\'` escapes).
fn key_value_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(&quote @ (b'\'' | b'"')) => {
            let mut i = start + 1;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b if b == quote => return i + 1,
                    _ => i += 1,
                }
            }
            bytes.len()
        }
        _ => {
            let mut i = start;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            i
        }
    }
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

/// `'a\'b'` → `a'b`; anything else as it is.
fn unquote(text: &str) -> String {
    let Some(quote) = text.chars().next().filter(|c| matches!(c, '\'' | '"')) else { return text.to_owned() };
    let inner = text[1..].strip_suffix(quote).unwrap_or(&text[1..]);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
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
