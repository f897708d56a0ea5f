//! The client-side rate limiter: a GCRA with a burst of one over tokio's clock, plus holds the server
//! imposes through `X-RateLimit-*` and `Retry-After`.
//!
//! Written by hand rather than with `governor` so that it runs on [`tokio::time::Instant`]: tests can use
//! tokio's paused clock and measure the limiter without waiting for real time.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Spaces requests at least `interval` apart and holds all of them while the server asked to wait.
///
/// One limiter is shared (through the client's `Arc`) by every clone of a client, and every attempt of
/// every request passes through [`RateLimiter::acquire`] before it is sent.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Time between two requests; `None` = no client-side limit (server holds still apply).
    interval: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The earliest instant the next request may start (GCRA's theoretical arrival time).
    next_slot: Option<Instant>,
    /// No request may start before this instant (the server said so).
    hold_until: Option<Instant>,
}

impl RateLimiter {
    /// A limiter of `interval` between requests (`None`: unlimited).
    pub(crate) fn new(interval: Option<Duration>) -> Self {
        Self { interval, state: Mutex::new(State::default()) }
    }

    /// Waits until this caller may send one request. Slots are reserved in call order, so concurrent
    /// callers are spaced `interval` apart and never exceed the rate.
    pub(crate) async fn acquire(&self) {
        if let Some(at) = self.reserve(Instant::now()) {
            tokio::time::sleep_until(at).await;
        }
    }

    /// Reserves the next slot at or after `now`; returns the instant to wait for, or `None` to go now.
    pub(crate) fn reserve(&self, now: Instant) -> Option<Instant> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut at = now;
        if let Some(hold) = state.hold_until {
            at = at.max(hold);
        }
        if let Some(interval) = self.interval {
            if let Some(next) = state.next_slot {
                at = at.max(next);
            }
            state.next_slot = Some(at + interval);
        }
        (at > now).then_some(at)
    }

    /// Holds every request (of every clone of the client) until `until`.
    pub(crate) fn hold_until(&self, until: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.hold_until = Some(state.hold_until.map_or(until, |held| held.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_by_the_interval() {
        let limiter = RateLimiter::new(Some(Duration::from_millis(200)));
        let start = Instant::now();
        let mut stamps = Vec::new();
        for _ in 0..20 {
            limiter.acquire().await;
            stamps.push(start.elapsed());
        }
        assert_eq!(stamps[0], Duration::ZERO, "the first request goes at once (burst 1)");
        for pair in stamps.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(200), "{stamps:?}");
        }
        assert!(start.elapsed() >= Duration::from_millis(3800));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_rate() {
        let limiter = std::sync::Arc::new(RateLimiter::new(Some(Duration::from_millis(100))));
        let start = Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire().await;
                    start.elapsed()
                })
            })
            .collect();
        let mut stamps = Vec::new();
        for task in tasks {
            stamps.push(task.await.unwrap());
        }
        stamps.sort();
        for pair in stamps.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{stamps:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_delays_everyone_even_without_a_rate() {
        let limiter = RateLimiter::new(None);
        let start = Instant::now();
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.hold_until(start + Duration::from_secs(2));
        limiter.hold_until(start + Duration::from_secs(1)); // an earlier hold never shortens a longer one
        limiter.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[test]
    fn an_idle_limiter_does_not_bank_a_burst() {
        let limiter = RateLimiter::new(Some(Duration::from_millis(200)));
        let now = Instant::now();
        assert_eq!(limiter.reserve(now), None);
        let later = now + Duration::from_secs(10);
        assert_eq!(limiter.reserve(later), None);
        assert_eq!(limiter.reserve(later), Some(later + Duration::from_millis(200)));
    }
}
