//! The client-side rate limiter: a GCRA with a burst of one over tokio's clock, plus holds the server
//! imposes through `X-RateLimit-*` and `Retry-After`.
//!
//! It paces request **starts**: requests overlap freely (up to the client's concurrency limit), so a
//! caller that keeps a few requests in flight hides their latency under the wait for the next slot.
//! (The client paces 2% below the configured rate, so that the jitter of arrival times at a server
//! counting over a sliding window does not draw a 429.)
//!
//! At that pace `X-RateLimit-Remaining: 0` is the steady state, not a warning: when the window is full
//! of this client's own requests, the limiter knows when its oldest one leaves and holds until then
//! (plus the margin) instead of the whole-second `X-RateLimit-Reset`, which would cost up to a second
//! each window. When the window holds requests of others (sharing the token), the reset is honoured.
//!
//! Written by hand rather than with `governor` so that it runs on [`tokio::time::Instant`]: tests can use
//! tokio's paused clock and measure the limiter without waiting for real time.

use std::collections::VecDeque;
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

/// Kaiten's rate-limit window.
const SERVER_WINDOW: Duration = Duration::from_secs(1);

/// Slack added to the instant the server's window frees, absorbing the jitter of arrival times.
pub(crate) const WINDOW_MARGIN: Duration = Duration::from_millis(20);

/// Starts remembered (enough for Kaiten's measured limit of 50 a second).
const HISTORY: usize = 128;

#[derive(Debug, Default)]
struct State {
    /// The earliest instant the next request may start (GCRA's theoretical arrival time).
    next_slot: Option<Instant>,
    /// No request may start before this instant (the server said so).
    hold_until: Option<Instant>,
    /// The instants of the latest starts, oldest first (at most [`HISTORY`]).
    starts: VecDeque<Instant>,
}

impl State {
    /// The start `n` starts back from the latest (`n = 1`: the latest), if remembered.
    fn start_back(&self, n: usize) -> Option<Instant> {
        (n >= 1 && n <= self.starts.len()).then(|| self.starts[self.starts.len() - n])
    }
}

impl RateLimiter {
    /// A limiter of `interval` between requests (`None`: unlimited).
    pub(crate) fn new(interval: Option<Duration>) -> Self {
        Self { interval, state: Mutex::new(State::default()) }
    }

    /// Waits until this caller may send one request. Slots are reserved in call order, so concurrent
    /// callers are spaced `interval` apart and never exceed the rate.
    ///
    /// Returns the instant the request starts (for [`RateLimiter::window_used_up`]).
    pub(crate) async fn acquire(&self) -> Instant {
        let now = Instant::now();
        match self.reserve(now) {
            Some(at) => {
                tokio::time::sleep_until(at).await;
                at
            }
            None => now,
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
        if state.starts.len() >= HISTORY {
            state.starts.pop_front();
        }
        state.starts.push_back(at);
        (at > now).then_some(at)
    }

    /// The server said its window is used up (`X-RateLimit-Remaining: 0`) in its answer to the
    /// request that started at `sent`, allowing `limit` requests a window (`X-RateLimit-Limit`, if
    /// sent), and that it resets at `reset`. When this client's own last `limit` starts up to `sent`
    /// all lie within one window, the window the server counted was full of them: hold until the
    /// oldest leaves it (plus the margin; no hold if it left already, which an answer arriving
    /// after a long latency often finds), never later than `reset`. Otherwise (others share the
    /// token, or the limit is unknown) hold until `reset`.
    ///
    /// Starts are counted up to `sent`, not up to the answer: with several requests in flight,
    /// those started after `sent` were not in the window the server counted.
    pub(crate) fn window_used_up(&self, limit: Option<usize>, reset: Instant, sent: Instant) {
        let own = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let later = state.starts.iter().rev().take_while(|&&start| start > sent).count();
            limit
                .filter(|limit| *limit <= HISTORY)
                .and_then(|limit| state.start_back(limit + later))
                .filter(|&oldest| sent.saturating_duration_since(oldest) < SERVER_WINDOW)
                .map(|oldest| oldest + SERVER_WINDOW + WINDOW_MARGIN)
        };
        self.hold_until(own.map_or(reset, |free| free.min(reset)));
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

    #[tokio::test(start_paused = true)]
    async fn a_window_full_of_own_requests_holds_only_until_the_oldest_leaves() {
        let limiter = RateLimiter::new(Some(Duration::from_millis(200)));
        let start = Instant::now();
        let mut sent = start;
        for _ in 0..5 {
            sent = limiter.acquire().await;
        }
        // The server's reset is a whole second later than the window frees.
        limiter.window_used_up(Some(5), start + Duration::from_secs(3), sent);
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1) + WINDOW_MARGIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_full_of_others_requests_holds_until_the_reset() {
        let limiter = RateLimiter::new(Some(Duration::from_millis(200)));
        let start = Instant::now();
        let sent = limiter.acquire().await;
        // One start of ours, a limit of 5: the other 4 are someone else's.
        limiter.window_used_up(Some(5), start + Duration::from_secs(2), sent);
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // The limit unknown: the reset too.
        limiter.window_used_up(None, start + Duration::from_secs(4), sent);
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(4));
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

    #[tokio::test(start_paused = true)]
    async fn an_answer_counts_only_the_starts_before_its_request() {
        let limiter = std::sync::Arc::new(RateLimiter::new(Some(Duration::from_millis(200))));
        let start = Instant::now();
        // Five requests 200 ms apart; the fifth (sent at 800 ms) is answered "window used up" after
        // 300 ms of latency, when three more have started (1.0, 1.2 and 1.4 s).
        let mut starts = Vec::new();
        for _ in 0..8 {
            starts.push(limiter.acquire().await);
        }
        let fifth = starts[4];
        assert_eq!(fifth - start, Duration::from_millis(800));
        limiter.window_used_up(Some(5), start + Duration::from_secs(3), fifth);
        // The server counted the starts at 0..800 ms: free at 1 s (+ margin), long past the reset
        // of 3 s; the next slot (1.6 s) is not delayed.
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(1600));
    }
}
