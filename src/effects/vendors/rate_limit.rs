//! Client-side rate limit for one vendor API key.
//!
//! Vendors limit per key (ClickHouse: 10 requests per 10-second window), and a 429 costs
//! a whole retry cycle of the work queue, so we pace ourselves instead of discovering
//! the limit. The limiter is a sliding window: at most `max` requests in any `window`.
//!
//! A request's slot is stamped when its *response* arrives, not when it is sent. The
//! server saw the request before we saw its answer, so "next send ≥ stamp + window"
//! guarantees the server also sees at least `window` between the two, whatever the
//! network latency was. That makes the limiter safe against a fixed *or* sliding window
//! on the vendor side without a guessed safety margin.
//!
//! A 429's `Retry-After` is shared through [`RateLimiter::hold_for`]: every caller of the
//! same key waits, not only the one that was refused.
//!
//! Time is `tokio::time::Instant`, so tests can run under `tokio::time::pause`.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Sliding-window limiter shared by all requests made with one credential.
#[derive(Debug)]
pub struct RateLimiter {
    max: usize,
    window: Duration,
    state: Mutex<State>,
    /// Wakes waiters when an in-flight request finishes (its slot gets a timestamp).
    released: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Completion times of the requests inside the current window, oldest first.
    done: VecDeque<Instant>,
    /// Requests sent whose answer has not arrived yet; they occupy a slot too.
    in_flight: usize,
    /// Set from a server's Retry-After: nobody sends before this instant.
    hold_until: Option<Instant>,
}

/// One granted slot. Dropping it (after the response arrived, or on error) stamps the slot.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a RateLimiter,
}

impl RateLimiter {
    /// At most `max` requests per `window` (a `max` of 0 is treated as 1, a zero window
    /// disables the limit).
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max: (max as usize).max(1), window, state: Mutex::new(State::default()), released: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few counters that every critical section leaves consistent, so a
        // poisoned lock (a panic elsewhere while holding it) is safe to keep using.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a free slot and takes it.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            // Register interest before looking at the state so a release between the
            // check and the wait is not missed.
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let mut st = self.lock();
                let now = Instant::now();
                if st.hold_until.is_some_and(|until| until <= now) {
                    st.hold_until = None;
                }
                while st.done.front().is_some_and(|t| *t + self.window <= now) {
                    st.done.pop_front();
                }
                if let Some(until) = st.hold_until {
                    Some(until - now)
                } else if self.window.is_zero() || st.done.len() + st.in_flight < self.max {
                    st.in_flight += 1;
                    return Permit { limiter: self };
                } else {
                    // Full: the oldest completed slot frees first; if every slot is still
                    // in flight, wait for one to complete (it then gets a timestamp).
                    st.done.front().map(|oldest| *oldest + self.window - now)
                }
            };
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => notified.await,
            }
        }
    }

    /// Makes every caller wait `d` from now (a server's Retry-After), on top of the window.
    pub fn hold_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut st = self.lock();
        if st.hold_until.is_none_or(|cur| cur < until) {
            st.hold_until = Some(until);
        }
    }

    fn release(&self) {
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        st.done.push_back(Instant::now());
        drop(st);
        self.released.notify_waiters();
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_max_in_a_window() {
        let limiter = RateLimiter::new(3, Duration::from_secs(10));
        let start = Instant::now();
        let mut stamps = Vec::new();
        for _ in 0..7 {
            let permit = limiter.acquire().await;
            stamps.push(Instant::now() - start);
            drop(permit);
        }
        // 3 at t=0, 3 at t=10, 1 at t=20.
        assert_eq!(stamps[2], Duration::ZERO);
        assert_eq!(stamps[3], Duration::from_secs(10));
        assert_eq!(stamps[6], Duration::from_secs(20));
        for i in 3..stamps.len() {
            assert!(stamps[i] - stamps[i - 3] >= Duration::from_secs(10), "window broken at {i}: {stamps:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slot_is_stamped_when_the_answer_arrives() {
        let limiter = RateLimiter::new(1, Duration::from_secs(1));
        let start = Instant::now();
        let permit = limiter.acquire().await;
        tokio::time::sleep(Duration::from_millis(500)).await; // a slow response
        drop(permit);
        let _next = limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_everyone() {
        let limiter = RateLimiter::new(100, Duration::from_secs(1));
        limiter.hold_for(Duration::from_secs(7));
        let start = Instant::now();
        drop(limiter.acquire().await);
        assert_eq!(Instant::now() - start, Duration::from_secs(7));
    }
}
