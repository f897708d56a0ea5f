//! The retry policy, backoff with full jitter, and the server's wait hints (`Retry-After`,
//! `X-RateLimit-Reset`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::header::HeaderMap;

/// How a request that failed in a retryable way (429, 5xx, timeout, connection error, a JSON body cut
/// short) is repeated.
///
/// A 429 waits what the server asked (`Retry-After`, else `X-RateLimit-Reset`), anything else waits an
/// exponential backoff with full jitter: a random time between zero and
/// `min(max_backoff, initial_backoff * 2^(retry - 1))`. The request gives up, returning the last error,
/// after `max_attempts` attempts or as soon as the next wait would take the total time spent waiting
/// beyond `max_total_wait`. Other 4xx errors and undecodable bodies (HTML, the wrong shape) are never
/// retried.
///
/// ```
/// use std::time::Duration;
/// use kaiten_client::RetryPolicy;
///
/// let patient = RetryPolicy { max_attempts: 10, max_total_wait: Duration::from_secs(600), ..RetryPolicy::default() };
/// assert_eq!(patient.initial_backoff, Duration::from_millis(500));
/// assert_eq!(RetryPolicy::no_retries().max_attempts, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 5; `1` = never retry).
    pub max_attempts: u32,
    /// Ceiling of the first backoff (default 500 ms); it doubles with every retry.
    pub initial_backoff: Duration,
    /// Largest backoff ceiling (default 30 s). Does not cut a wait the server asked for.
    pub max_backoff: Duration,
    /// Cap on the total time spent waiting between attempts of one request (default 120 s).
    pub max_total_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_total_wait: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// A policy that sends every request once and returns its first error.
    pub fn no_retries() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// The upper bound of the backoff before retry number `retry` (1 = the first retry).
    pub(crate) fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// A random backoff in `0..=backoff_ceiling(retry)` (full jitter).
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Unix timestamps below this are read as a number of seconds from now rather than an instant (some
/// servers send the seconds left in `X-RateLimit-Reset`).
const UNIX_TIME_FLOOR: u64 = 1_000_000_000;

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// `Retry-After` as a wait: delta seconds (fractions accepted) or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = header_str(headers, "retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds.max(0.0)).ok();
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(date.timestamp()).ok()?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `X-RateLimit-Reset` (unix seconds, or seconds from now when small) as a wait from `now`.
pub(crate) fn rate_limit_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = header_str(headers, "x-ratelimit-reset")?.parse::<f64>().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    if value < UNIX_TIME_FLOOR as f64 {
        return Duration::try_from_secs_f64(value).ok();
    }
    let at = UNIX_EPOCH + Duration::try_from_secs_f64(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The requests a window allows (`X-RateLimit-Limit`), if the server said.
pub(crate) fn rate_limit_limit(headers: &HeaderMap) -> Option<usize> {
    header_str(headers, "x-ratelimit-limit")?.parse::<usize>().ok().filter(|l| *l > 0)
}

/// Whether the server said no request is left in the current window (`X-RateLimit-Remaining: 0`).
pub(crate) fn rate_limit_exhausted(headers: &HeaderMap) -> bool {
    header_str(headers, "x-ratelimit-remaining").and_then(|v| v.parse::<f64>().ok()) == Some(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff_ceiling(1), Duration::from_millis(500));
        assert_eq!(policy.backoff_ceiling(2), Duration::from_secs(1));
        assert_eq!(policy.backoff_ceiling(4), Duration::from_secs(4));
        assert_eq!(policy.backoff_ceiling(10), Duration::from_secs(30));
        assert_eq!(policy.backoff_ceiling(u32::MAX), Duration::from_secs(30));
        for retry in 1..8 {
            assert!(policy.backoff(retry) <= policy.backoff_ceiling(retry));
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after(&headers(&[("retry-after", "1")]), now), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(&headers(&[("retry-after", " 2.5 ")]), now), Some(Duration::from_millis(2500)));
        let date = chrono::DateTime::from_timestamp(1_700_000_007, 0).unwrap().to_rfc2822();
        assert_eq!(retry_after(&headers(&[("retry-after", &date)]), now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn rate_limit_reset_as_unix_time_or_delta() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = headers(&[("x-ratelimit-reset", "1700000003")]);
        assert_eq!(rate_limit_reset(&at, now), Some(Duration::from_secs(3)));
        let past = headers(&[("x-ratelimit-reset", "1600000000")]);
        assert_eq!(rate_limit_reset(&past, now), Some(Duration::ZERO));
        let delta = headers(&[("x-ratelimit-reset", "2")]);
        assert_eq!(rate_limit_reset(&delta, now), Some(Duration::from_secs(2)));
        assert!(rate_limit_exhausted(&headers(&[("x-ratelimit-remaining", "0")])));
        assert!(!rate_limit_exhausted(&headers(&[("x-ratelimit-remaining", "3")])));
        assert!(!rate_limit_exhausted(&HeaderMap::new()));
    }
}
